"""Seconds of one exact coalition game (fedland alone), to compare two versions of the library on one host.

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python bench/game.py 8 20 1     # the old tree's fedland
    PYTHONPATH=. python bench/game.py 8 20 1            # this tree's
    # alternate the two lines three times or more: a shared machine drifts between runs

The game is `bench_exact`'s (bench/run.py's `exact_game`: every coalition of K clients, mnist1d, Dirichlet 0.5, MLP,
momentum 0.9, one seed), R rounds of E local epochs, in one call after the allocator tuning that `run_experiment`
does. It prints the seconds and the grand coalition's final test accuracy (equal accuracies: the versions trained the
same models).
"""
import argparse
import time

from run import exact_game


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('clients', type=int)
    ap.add_argument('rounds', type=int)
    ap.add_argument('epochs', type=int)
    a = ap.parse_args()
    from fedland.models import tune_allocator
    tune_allocator()   # as run_experiment does
    play = exact_game(a.clients, a.rounds, a.epochs)[0]
    t = time.perf_counter()
    game = play()
    s = time.perf_counter() - t
    acc = float(game.acc[:, -1].mean())   # bitmask 2^K − 1: every client
    print(f'exact game, K = {a.clients}, {a.rounds} × {a.epochs}: {s:.2f} s, grand coalition test accuracy {acc:.4f}')
