"""The default regime measured: FedAvg at the Experiment defaults (cnn1d on MNIST-1D, 10 clients) in six partitions,
next to the centralized baseline trained for as many passes over the data (rounds × local epochs), over three seeds;
and the previous default (20 rounds × 1 local epoch, lr 0.05, no weight decay) for comparison.

    python bench/regime.py --json bench/results/regime.json        # about 8 minutes on 2 cores
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedland.data import load_dataset
from fedland.experiment import Experiment
from fedland.federated import run_federated
from fedland.models import build_model
from fedland.partition import partition
from fedland.train import LocalConfig, train_centralized

SETTINGS = {"iid": dict(scheme="iid"), "iid, unbalanced (σ=1)": dict(scheme="iid", sigma=1.0),
            "dirichlet 0.5": dict(scheme="dirichlet", alpha=0.5), "dirichlet 0.5, unbalanced": dict(scheme="dirichlet", alpha=0.5, sigma=1.0),
            "dirichlet 0.1": dict(scheme="dirichlet", alpha=0.1), "#C=2": dict(scheme="pathological", k=2)}
OLD = dict(rounds=20, local_epochs=1, lr=0.05, weight_decay=0.0)


def measure(exp: Experiment, seeds, ds):
    out = {}
    for name, kw in SETTINGS.items():
        accs, secs = [], []
        for s in seeds:
            part = partition(ds.y_train, exp.n_clients, seed=s, holdout=exp.holdout, n_classes=ds.n_classes, **kw)
            net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
            t = time.perf_counter(); h = run_federated(net, ds, part, exp.fed_config(), seed=s, progress=False); secs.append(time.perf_counter() - t)
            accs.append(float(h.round_rows[-1]["test_acc"]))
        out[name] = dict(acc=accs, mean=float(np.mean(accs)), sd=float(np.std(accs, ddof=1)), seconds=float(np.mean(secs)))
        print(f"  {name:28s} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  ({np.mean(secs):.1f} s)", flush=True)
    accs, secs = [], []
    for s in seeds:
        part = partition(ds.y_train, exp.n_clients, "iid", seed=s, holdout=exp.holdout)
        net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
        t = time.perf_counter()
        c = train_centralized(net, ds, LocalConfig(lr=exp.lr, momentum=exp.momentum, weight_decay=exp.weight_decay, batch_size=exp.batch_size,
                                                   epochs=exp.centralized_passes), seed=s, progress=False, train_idx=np.concatenate(list(part)))
        secs.append(time.perf_counter() - t); accs.append(float(c.history.test_acc.iloc[-1]))
    out["centralized"] = dict(acc=accs, mean=float(np.mean(accs)), sd=float(np.std(accs, ddof=1)), seconds=float(np.mean(secs)), epochs=exp.centralized_passes)
    print(f"  {'centralized':28s} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  ({np.mean(secs):.1f} s, {exp.centralized_passes} epochs)", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    ds = load_dataset("mnist1d"); seeds = list(range(a.seeds))
    res = {}
    for label, kw in (("default", {}), ("previous default", OLD)):
        exp = Experiment(**kw)
        print(f"{label}: {exp.model}, {exp.n_clients} clients, {exp.rounds} rounds × {exp.local_epochs} local epochs, lr {exp.lr}, momentum {exp.momentum}, "
              f"weight decay {exp.weight_decay}, batch {exp.batch_size}", flush=True)
        res[label] = dict(settings=dict(rounds=exp.rounds, local_epochs=exp.local_epochs, lr=exp.lr, momentum=exp.momentum, weight_decay=exp.weight_decay,
                                        batch_size=exp.batch_size, n_clients=exp.n_clients, model=exp.model, centralized_epochs=exp.centralized_passes),
                          results=measure(exp, seeds, ds))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
