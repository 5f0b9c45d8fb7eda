"""The default regime measured: FedAvg at the Experiment defaults (cnn1d on MNIST-1D, 10 clients) in six partitions,
next to the centralized baseline trained for as many passes over the data (rounds × local epochs), over three seeds;
and the previous default (20 rounds × 1 local epoch, lr 0.05, no weight decay) for comparison.

    # about 8 minutes on 2 cores
    python bench/regime.py --json bench/results/regime.json
    # adds the IID sweep (lr, rounds, lr schedules; ~20 minutes)
    python bench/regime.py --sweep --json bench/results/regime.json
    # adds IID FedAvg with 1, 2, 5 and 10 clients (~7 minutes)
    python bench/regime.py --clients --json bench/results/regime.json

The sweep asks why FedAvg IID stays several points below the baseline: it reports, next to each test accuracy, the
training loss of the final model on the clients' union. Its learning-rate schedules are a measurement device of this
script (it wraps the local-update functions; fedland has no schedule option): the rate is scaled per round for FedAvg
and per epoch for the baseline, by ½(1 + cos πt) ('cosine') or by 0.1 from t = 0.75 on ('step'), t = fraction of the run
done. The client-count section splits the same IID training data into 1, 2, 5 and 10 clients at the default settings: it
asks whether the gap is the regime's (rounds, epochs, rate) or the split's."""
import argparse
import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from fedland.data import load_dataset
from fedland.experiment import Experiment
from fedland.federated import run_federated
from fedland.models import build_model
from fedland.partition import partition
import fedland.federated as _fed
import fedland.train as _train
from fedland.train import LocalConfig, evaluate, train_centralized

SETTINGS = {
    "iid": dict(scheme="iid"),
    "iid, unbalanced (σ=1)": dict(scheme="iid", sigma=1.0),
    "dirichlet 0.5": dict(scheme="dirichlet", alpha=0.5),
    "dirichlet 0.5, unbalanced": dict(scheme="dirichlet", alpha=0.5, sigma=1.0),
    "dirichlet 0.1": dict(scheme="dirichlet", alpha=0.1),
    "#C=2": dict(scheme="pathological", k=2),
}
OLD = dict(rounds=20, local_epochs=1, lr=0.05, weight_decay=0.0)


def centralized(exp: Experiment, net, ds, part, seed):
    "The baseline: the clients' union, the experiment's optimizer, as many passes as the federated run."
    return train_centralized(
        net,
        ds,
        LocalConfig(
            lr=exp.lr,
            momentum=exp.momentum,
            weight_decay=exp.weight_decay,
            batch_size=exp.batch_size,
            epochs=exp.centralized_passes,
        ),
        seed=seed,
        progress=False,
        train_idx=np.concatenate(list(part)),
    )


def measure(exp: Experiment, seeds, ds):
    out = {}
    for name, kw in SETTINGS.items():
        accs, secs = [], []
        for s in seeds:
            part = partition(ds.y_train, exp.n_clients, seed=s, holdout=exp.holdout, n_classes=ds.n_classes, **kw)
            net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
            t = time.perf_counter()
            h = run_federated(net, ds, part, exp.fed_config(), seed=s, progress=False)
            secs.append(time.perf_counter() - t)
            accs.append(float(h.round_rows[-1]["test_acc"]))
        out[name] = dict(
            acc=accs, mean=float(np.mean(accs)), sd=float(np.std(accs, ddof=1)), seconds=float(np.mean(secs))
        )
        print(f"  {name:28s} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  ({np.mean(secs):.1f} s)", flush=True)
    accs, secs = [], []
    for s in seeds:
        part = partition(ds.y_train, exp.n_clients, "iid", seed=s, holdout=exp.holdout)
        net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
        t = time.perf_counter()
        c = centralized(exp, net, ds, part, s)
        secs.append(time.perf_counter() - t)
        accs.append(float(c.history.test_acc.iloc[-1]))
    out["centralized"] = dict(
        acc=accs,
        mean=float(np.mean(accs)),
        sd=float(np.std(accs, ddof=1)),
        seconds=float(np.mean(secs)),
        epochs=exp.centralized_passes,
    )
    print(f"  {'centralized':28s} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  ({np.mean(secs):.1f} s, "
          f"{exp.centralized_passes} epochs)", flush=True)
    return out


SWEEP = [
    ("default", {}, None),
    ("lr 0.06", dict(lr=0.06), None),
    ("lr 0.1", dict(lr=0.1), None),
    ("60 rounds", dict(rounds=60), None),
    ("cosine, lr 0.03", {}, "cosine"),
    ("cosine, lr 0.06", dict(lr=0.06), "cosine"),
    ("cosine, lr 0.1", dict(lr=0.1), "cosine"),
    ("step at 75 %, lr 0.06", dict(lr=0.06), "step"),
    ("step at 75 %, lr 0.1", dict(lr=0.1), "step"),
]


def _factor(kind, t):
    return (
        0.5 * (1 + math.cos(math.pi * t))
        if kind == "cosine"
        else (0.1 if t >= 0.75 else 1.0)
        if kind == "step"
        else 1.0
    )


@contextlib.contextmanager
def lr_schedule(kind, rounds, epochs):
    ("Scale the local rate per round (FedAvg: batch-order seeds are (seed, round, client)) and per epoch (baseline: "
     "(seed, epoch)).")
    fb, fl = _fed.local_update_batched, _train.local_update
    def batched(model, params, X, Y, idxs, cfg, seeds, **kw):
        return fb(
            model,
            params,
            X,
            Y,
            idxs,
            dataclasses.replace(cfg, lr=cfg.lr * _factor(kind, (seeds[0][1] - 1) / rounds)),
            seeds,
            **kw,
        )
    def single(model, params, X, Y, idx, cfg, seed=0, **kw):
        return fl(
            model,
            params,
            X,
            Y,
            idx,
            dataclasses.replace(cfg, lr=cfg.lr * _factor(kind, (seed[1] - 1) / epochs)),
            seed=seed,
            **kw,
        )
    if kind: _fed.local_update_batched, _train.local_update = batched, single
    try: yield
    finally: _fed.local_update_batched, _train.local_update = fb, fl


def sweep(seeds, ds):
    ("IID FedAvg and its baseline under each variant: test accuracy "
     "and training loss (clients' union) of the final models.")
    out = {}
    for name, kw, kind in SWEEP:
        exp = Experiment(**kw)
        r = dict(fedavg=[], fedavg_train_loss=[], centralized=[], centralized_train_loss=[])
        for s in seeds:
            part = partition(ds.y_train, exp.n_clients, "iid", seed=s, holdout=exp.holdout)
            net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
            idx = np.concatenate(list(part))
            Xu, Yu = ds.x_train[idx], ds.y_train[idx]
            with lr_schedule(kind, exp.rounds, exp.centralized_passes):
                h = run_federated(
                    net, ds, part, dataclasses.replace(exp.fed_config(), keep_clients="none"), seed=s, progress=False
                )
                c = centralized(exp, net, ds, part, s)
            r["fedavg"].append(float(h.round_rows[-1]["test_acc"]))
            r["fedavg_train_loss"].append(evaluate(net, Xu, Yu, h.global_model())[0])
            r["centralized"].append(float(c.history.test_acc.iloc[-1]))
            r["centralized_train_loss"].append(evaluate(net, Xu, Yu, c.params)[0])
        out[name] = dict(
            settings=dict(rounds=exp.rounds, local_epochs=exp.local_epochs, lr=exp.lr, schedule=kind or "constant"),
            **r,
            gap=float(np.mean(r["centralized"]) - np.mean(r["fedavg"])),
        )
        f = lambda v: f"{np.mean(v):.3f} [{', '.join(f'{x:.3f}' for x in v)}]"
        print(f"  {name:24s} FedAvg {f(r['fedavg'])} (train loss {f(r['fedavg_train_loss'])})   centralized "
              f"{f(r['centralized'])} "
              f"(train loss {f(r['centralized_train_loss'])})", flush=True)
    return out


CLIENTS = (1, 2, 5, 10)


def clients(seeds, ds):
    ("IID FedAvg at the defaults with the data split into 1, 2, 5 and 10 clients, against the baseline (the union, as "
     "many passes): the gap per client count.")
    exp = Experiment()
    cen = []
    for s in seeds:
        part = partition(ds.y_train, exp.n_clients, "iid", seed=s, holdout=exp.holdout)
        cen.append(
            float(
                centralized(
                    exp, build_model(exp.model, ds.input_shape, ds.n_classes, seed=s), ds, part, s
                ).history.test_acc.iloc[-1]
            )
        )
    out = {"centralized": cen}
    for k in CLIENTS:
        e = Experiment(n_clients=k)
        accs, secs = [], []
        for s in seeds:
            part = partition(ds.y_train, k, "iid", seed=s, holdout=e.holdout)
            net = build_model(e.model, ds.input_shape, ds.n_classes, seed=s)
            t = time.perf_counter()
            h = run_federated(
                net, ds, part, dataclasses.replace(e.fed_config(), keep_clients="none"), seed=s, progress=False
            )
            secs.append(time.perf_counter() - t)
            accs.append(float(h.round_rows[-1]["test_acc"]))
        out[str(k)] = dict(fedavg=accs, gap=float(np.mean(cen) - np.mean(accs)), seconds=float(np.mean(secs)))
        print(f"  {k:2d} clients: FedAvg {np.mean(accs):.3f} [{', '.join(f'{x:.3f}' for x in accs)}], centralized "
              f"{np.mean(cen):.3f}, gap {out[str(k)]['gap']:.3f}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="only the IID sweep, merged into --json's file")
    ap.add_argument("--clients", action="store_true", help="only the client-count section, merged into --json's file")
    a = ap.parse_args()
    ds = load_dataset("mnist1d")
    seeds = list(range(a.seeds))
    old = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    if a.sweep or a.clients:   # the other sections of the file are kept
        if a.sweep: old["iid sweep"] = sweep(seeds, ds)
        if a.clients: old["iid clients"] = clients(seeds, ds)
        if a.json: Path(a.json).write_text(json.dumps(old, indent=1))
        return
    res = {}
    for label, kw in (("default", {}), ("previous default", OLD)):
        exp = Experiment(**kw)
        print(f"{label}: {exp.model}, {exp.n_clients} clients, {exp.rounds} rounds × {exp.local_epochs} local epochs, "
              f"lr {exp.lr}, momentum {exp.momentum}, "
              f"weight decay {exp.weight_decay}, batch {exp.batch_size}", flush=True)
        res[label] = dict(
            settings=dict(
                rounds=exp.rounds,
                local_epochs=exp.local_epochs,
                lr=exp.lr,
                momentum=exp.momentum,
                weight_decay=exp.weight_decay,
                batch_size=exp.batch_size,
                n_clients=exp.n_clients,
                model=exp.model,
                centralized_epochs=exp.centralized_passes,
            ),
            results=measure(exp, seeds, ds),
        )
    for key in ("iid sweep", "iid clients"):   # sections measured before are kept
        if key in old: res[key] = old[key]
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
