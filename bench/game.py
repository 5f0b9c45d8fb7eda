"""Seconds of one exact coalition game (fedland alone), to compare two versions of the library on one host.

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python bench/game.py 8 20 1     # the old tree's fedland
    PYTHONPATH=. python bench/game.py 8 20 1            # this tree's
    # alternate the two lines three times or more: a shared machine drifts between runs

The game is `bench_exact`'s (bench/run.py): every coalition of K clients (mnist1d, Dirichlet 0.5, MLP, momentum 0.9,
one seed), R rounds of E local epochs, in one call of `coalition_values` after the allocator tuning that
`run_experiment` does. It prints the seconds and the grand coalition's final test accuracy (equal accuracies: the
versions trained the same models).
"""
import argparse
import time


def game_seconds(k: int, rounds: int, epochs: int) -> tuple:
    "Seconds of the exact game of K clients, and the grand coalition's test accuracy."
    from fedland.data import load_dataset
    from fedland.federated import FedConfig
    from fedland.models import build_model
    from fedland.partition import partition
    from fedland.valuation import coalition_values
    ds = load_dataset('mnist1d')
    part = partition(ds.y_train, k, 'dirichlet', alpha=0.5, seed=0)
    net = build_model('mlp', ds.input_shape, 10, seed=0)
    cfg = FedConfig(rounds=rounds, local_epochs=epochs, lr=0.05, momentum=0.9)
    t = time.perf_counter()
    game = coalition_values(net, ds, part, cfg, progress=False)
    return time.perf_counter() - t, float(game.acc[:, -1].mean())   # bitmask 2^K − 1: every client


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('clients', type=int)
    ap.add_argument('rounds', type=int)
    ap.add_argument('epochs', type=int)
    a = ap.parse_args()
    from fedland.models import tune_allocator
    tune_allocator()   # as run_experiment does
    s, acc = game_seconds(a.clients, a.rounds, a.epochs)
    print(f'exact game, K = {a.clients}, {a.rounds} × {a.epochs}: {s:.2f} s, grand coalition test accuracy {acc:.4f}')
