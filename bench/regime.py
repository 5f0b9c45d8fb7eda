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
script (a `clients` engine passed to run_federated, and the baseline's epoch loop written out with local_update;
fedland has no schedule option): the rate is scaled per round for FedAvg
and per epoch for the baseline, by ½(1 + cos πt) ('cosine') or by 0.1 from t = 0.75 on ('step'), t = fraction of the run
done. The client-count section splits the same IID training data into 1, 2, 5 and 10 clients at the default settings: it
asks whether the gap is the regime's (rounds, epochs, rate) or the split's."""
import argparse
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
from fedland.federated import client_step
from fedland.models import buffer_dict, param_dict, tune_allocator
from fedland.train import LocalConfig, evaluate, local_update, train_centralized

SETTINGS = {
    'iid': dict(scheme='iid'),
    'iid, unbalanced (σ=1)': dict(scheme='iid', sigma=1.0),
    'dirichlet 0.5': dict(scheme='dirichlet', alpha=0.5),
    'dirichlet 0.5, unbalanced': dict(scheme='dirichlet', alpha=0.5, sigma=1.0),
    'dirichlet 0.1': dict(scheme='dirichlet', alpha=0.1),
    '#C=2': dict(scheme='pathological', k=2),
}
OLD = dict(rounds=20, local_epochs=1, lr=0.05, weight_decay=0.0)


def centralized(exp: Experiment, net, ds, part, seed):
    "The baseline: the clients' union, the experiment's optimizer, as many passes as the federated run."
    return train_centralized(net, ds, exp.centralized_config(), seed=seed, progress=False,
                             train_idx=np.concatenate(list(part)))


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
            accs.append(float(h.round_rows[-1]['test_acc']))
        out[name] = dict(
            acc=accs, mean=float(np.mean(accs)), sd=float(np.std(accs, ddof=1)), seconds=float(np.mean(secs))
        )
        print(f'  {name:28s} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  ({np.mean(secs):.1f} s)', flush=True)
    accs, secs = [], []
    for s in seeds:
        part = partition(ds.y_train, exp.n_clients, 'iid', seed=s, holdout=exp.holdout)
        net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
        t = time.perf_counter()
        c = centralized(exp, net, ds, part, s)
        secs.append(time.perf_counter() - t)
        accs.append(float(c.history.test_acc.iloc[-1]))
    out['centralized'] = dict(
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
    ('default', {}, None),
    ('lr 0.06', dict(lr=0.06), None),
    ('lr 0.1', dict(lr=0.1), None),
    ('60 rounds', dict(rounds=60), None),
    ('cosine, lr 0.03', {}, 'cosine'),
    ('cosine, lr 0.06', dict(lr=0.06), 'cosine'),
    ('cosine, lr 0.1', dict(lr=0.1), 'cosine'),
    ('step at 75 %, lr 0.06', dict(lr=0.06), 'step'),
    ('step at 75 %, lr 0.1', dict(lr=0.1), 'step'),
]


def _factor(kind, t):
    return (
        0.5 * (1 + math.cos(math.pi * t))
        if kind == 'cosine'
        else (0.1 if t >= 0.75 else 1.0)
        if kind == 'step'
        else 1.0
    )


def scheduled_clients(exp: Experiment, net, ds, part, kind):
    ("A `clients` engine for `run_federated` (its public hook for another client side): every sampled client's "
     "`client_step` at the rate scaled for round r, t = (r − 1)/rounds; batch-order seeds are run_federated's.")
    local = exp.fed_config().local
    idx, hold = list(part), list(part.holdout)
    def engine(r, sampled, srv, seeds, corrs):
        lcfg = dataclasses.replace(local, lr=local.lr * _factor(kind, (r - 1) / exp.rounds))
        out = [
            client_step(net, srv.params, srv.client_buffers(k), ds.x_train, ds.y_train, idx[k], hold[k], lcfg, s,
                        None if corrs is None else corrs[i])
            for i, (k, s) in enumerate(zip(sampled, seeds))
        ]
        return [o[0] for o in out], [o[1] for o in out]
    return engine


def scheduled_centralized(exp: Experiment, net, ds, part, seed, kind):
    ("The baseline with the rate scaled per epoch (t = (e − 1)/epochs): `train_centralized`'s loop, one epoch of "
     "`local_update` at a time with the momentum carried over; returns the final test accuracy and parameters.")
    params, buffers, mom = param_dict(net), buffer_dict(net), None
    idx = np.sort(np.concatenate(list(part)))
    E = exp.centralized_passes
    for e in range(1, E + 1):
        one = LocalConfig(lr=exp.lr * _factor(kind, (e - 1) / E), momentum=exp.momentum,
                          weight_decay=exp.weight_decay, batch_size=exp.batch_size, epochs=1)
        r = local_update(net, params, ds.x_train, ds.y_train, idx, one, seed=(seed, e), buffers=buffers, momentum=mom)
        params, buffers, mom = r.params, r.buffers, r.momentum
    return evaluate(net, ds.x_test, ds.y_test, params, buffers)[1], params


def sweep(seeds, ds):
    ("IID FedAvg and its baseline under each variant: test accuracy "
     "and training loss (clients' union) of the final models.")
    out = {}
    for name, kw, kind in SWEEP:
        exp = Experiment(**kw)
        r = dict(fedavg=[], fedavg_train_loss=[], centralized=[], centralized_train_loss=[])
        for s in seeds:
            part = partition(ds.y_train, exp.n_clients, 'iid', seed=s, holdout=exp.holdout)
            net = build_model(exp.model, ds.input_shape, ds.n_classes, seed=s)
            idx = np.concatenate(list(part))
            Xu, Yu = ds.x_train[idx], ds.y_train[idx]
            engine = scheduled_clients(exp, net, ds, part, kind) if kind else None
            h = run_federated(
                net, ds, part, dataclasses.replace(exp.fed_config(), keep_clients='none'), seed=s, progress=False,
                clients=engine,
            )
            if kind: acc, cp = scheduled_centralized(exp, net, ds, part, s, kind)
            else:
                c = centralized(exp, net, ds, part, s)
                acc, cp = c.history.test_acc.iloc[-1], c.params
            r['fedavg'].append(float(h.round_rows[-1]['test_acc']))
            r['fedavg_train_loss'].append(evaluate(net, Xu, Yu, h.global_model())[0])
            r['centralized'].append(float(acc))
            r['centralized_train_loss'].append(evaluate(net, Xu, Yu, cp)[0])
        out[name] = dict(
            settings=dict(rounds=exp.rounds, local_epochs=exp.local_epochs, lr=exp.lr, schedule=kind or 'constant'),
            **r,
            gap=float(np.mean(r['centralized']) - np.mean(r['fedavg'])),
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
        part = partition(ds.y_train, exp.n_clients, 'iid', seed=s, holdout=exp.holdout)
        cen.append(
            float(
                centralized(
                    exp, build_model(exp.model, ds.input_shape, ds.n_classes, seed=s), ds, part, s
                ).history.test_acc.iloc[-1]
            )
        )
    out = {'centralized': cen}
    for k in CLIENTS:
        e = Experiment(n_clients=k)
        accs, secs = [], []
        for s in seeds:
            part = partition(ds.y_train, k, 'iid', seed=s, holdout=e.holdout)
            net = build_model(e.model, ds.input_shape, ds.n_classes, seed=s)
            t = time.perf_counter()
            h = run_federated(
                net, ds, part, dataclasses.replace(e.fed_config(), keep_clients='none'), seed=s, progress=False
            )
            secs.append(time.perf_counter() - t)
            accs.append(float(h.round_rows[-1]['test_acc']))
        out[str(k)] = dict(fedavg=accs, gap=float(np.mean(cen) - np.mean(accs)), seconds=float(np.mean(secs)))
        print(f"  {k:2d} clients: FedAvg {np.mean(accs):.3f} [{', '.join(f'{x:.3f}' for x in accs)}], centralized "
              f"{np.mean(cen):.3f}, gap {out[str(k)]['gap']:.3f}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--json', default=None)
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--sweep', action='store_true', help="only the IID sweep, merged into --json's file")
    ap.add_argument('--clients', action='store_true', help="only the client-count section, merged into --json's file")
    a = ap.parse_args()
    tune_allocator()   # as run_experiment does: reused evaluation tensors are not faulted in again
    ds = load_dataset('mnist1d')
    seeds = list(range(a.seeds))
    old = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    if a.sweep or a.clients:   # the other sections of the file are kept
        if a.sweep: old['iid sweep'] = sweep(seeds, ds)
        if a.clients: old['iid clients'] = clients(seeds, ds)
        if a.json: Path(a.json).write_text(json.dumps(old, indent=1))
        return
    res = {}
    for label, kw in (('default', {}), ('previous default', OLD)):
        exp = Experiment(**kw)
        print(f'{label}: {exp.model}, {exp.n_clients} clients, {exp.rounds} rounds × {exp.local_epochs} local epochs, '
              f'lr {exp.lr}, momentum {exp.momentum}, '
              f'weight decay {exp.weight_decay}, batch {exp.batch_size}', flush=True)
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
    for key in ('iid sweep', 'iid clients'):   # sections measured before are kept
        if key in old: res[key] = old[key]
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
