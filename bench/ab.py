"""Seconds per FedAvg round of fedland alone, to compare two versions of the library on one host.

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python bench/ab.py mlp 10     # the old tree's fedland
    PYTHONPATH=. python bench/ab.py mlp 10            # this tree's
    # alternate the two lines three times or more: a shared machine drifts between runs

The benchmark's FedAvg experiment (`bench/run.py`'s settings, 6 rounds) runs once to warm up, then `--reps` times; it
prints the median of the runs' mean History seconds of rounds 3–6, each run's value, and the final test accuracy
(equal accuracies: the versions train the same model).
"""
import argparse

import numpy as np
import torch

from run import fedavg_experiment


def seconds_per_round(model: str, n_clients: int, reps: int = 3, threads: int | None = None) -> tuple:
    "Each run's mean seconds per round (rounds 3–6, after a warm-up run) and the last run's final test accuracy."
    from fedland.experiment import prepare
    from fedland.federated import run_federated
    if threads: torch.set_num_threads(threads)
    exp = fedavg_experiment(model, n_clients, 6, 'unused.db')
    ds, part, net = prepare(exp)
    cfg = exp.fed_config()
    run_federated(net, ds, part, cfg, progress=False)
    runs = [run_federated(net, ds, part, cfg, progress=False) for _ in range(reps)]
    return [float(h.rounds.seconds.iloc[2:].mean()) for h in runs], float(runs[-1].rounds.test_acc.iloc[-1])


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model', help='mlp, cnn1d, cnn, ...')
    ap.add_argument('clients', type=int)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch chooses)')
    a = ap.parse_args()
    from fedland.models import tune_allocator
    tune_allocator()   # as run_experiment does
    ts, acc = seconds_per_round(a.model, a.clients, a.reps, a.threads)
    print(f'{a.model} {a.clients} clients: {np.median(ts):.4f} s/round (median of {[round(t, 4) for t in ts]}), '
          f'test accuracy {acc:.4f}')
