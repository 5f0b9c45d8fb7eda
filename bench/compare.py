"""Does a second run of `bench/run.py` reproduce the first? Every ratio of both runs side by side.

    python bench/compare.py bench/results/latest.json bench/results/rerun.json

A ratio is any spread (median, min, max over repetitions) stored under a key that names a ratio: `speedup…`,
`vs_floor…`, `overhead`. A ratio reproduces when each run's median lies inside the other run's min–max. Seconds are
not compared: they move with the host's clock, the ratios are the claims. `--strict` exits 1 when a ratio does not
reproduce.

Even two runs whose repetitions all come from one distribution (no drift at all) fail that test often: with 3
repetitions a side, a ratio reproduces one way with probability 0.60 and both ways 0.40 (`chance`), so the script
prints, beside the count, how many ratios would reproduce by that chance alone.
"""
import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

RATIO_KEYS = ('speedup', 'vs_floor', 'overhead')


def spreads(tree, path: str = '') -> dict:
    "Every ratio spread in a results tree, by dotted path."
    out = {}
    if not isinstance(tree, dict): return out
    if {'median', 'min', 'max'} <= set(tree):
        if path.rsplit('.', 1)[-1].startswith(RATIO_KEYS): out[path] = tree
        return out
    for k, v in tree.items(): out |= spreads(v, f'{path}.{k}' if path else k)
    return out


def inside(v: float, s: dict) -> bool:
    "Whether a median lies in a spread's min–max (to float rounding)."
    return s['min'] * (1 - 1e-9) <= v <= s['max'] * (1 + 1e-9)


def compare(a: dict, b: dict) -> list:
    "Rows (path, run A, run B, B's median in A's range, A's median in B's range) for the ratios both runs hold."
    sa, sb = spreads(a), spreads(b)
    return [(p, sa[p], sb[p], inside(sb[p]['median'], sa[p]), inside(sa[p]['median'], sb[p])) for p in sa if p in sb]


@functools.cache
def chance(n_a: int, n_b: int, draws: int = 200_000, seed: int = 0) -> tuple:
    ("Probability that a ratio reproduces one way (run B's median inside run A's min–max) and both ways when every "
     "repetition of both runs is an independent draw from one continuous distribution (which, by ranks, does not "
     "matter): Monte Carlo over `draws` pairs of runs of n_a and n_b repetitions.")
    rng = np.random.default_rng(seed)
    a, b = rng.random((draws, n_a)), rng.random((draws, n_b))
    ma, mb = np.median(a, 1), np.median(b, 1)
    one = (a.min(1) <= mb) & (mb <= a.max(1))
    return float(one.mean()), float((one & (b.min(1) <= ma) & (ma <= b.max(1))).mean())


def expected(rows: list) -> tuple:
    "Expected counts of ratios reproducing one way and both ways by chance alone, for rows of `compare`."
    ps = [chance(len(s1.get('reps', [0] * 3)), len(s2.get('reps', [0] * 3))) for _, s1, s2, *_ in rows]
    return sum(p for p, _ in ps), sum(q for _, q in ps)


def fmt(s: dict) -> str:
    "A spread as median [min–max]."
    return f"{s['median']:.3g} [{s['min']:.3g}–{s['max']:.3g}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('first')
    ap.add_argument('second')
    ap.add_argument('--strict', action='store_true', help='exit 1 when a ratio does not reproduce')
    a = ap.parse_args()
    runs = [json.loads(Path(f).read_text()) for f in (a.first, a.second)]
    for f, r in zip((a.first, a.second), runs):
        m = r.get('machine', {})
        print(f"{f}: {m.get('host', '?')}, {m.get('cpu', '?')}, {m.get('date', '?')}, "
              f"matmul {m.get('matmul_gflops', float('nan')):.0f} GFLOP/s")
    rows = compare(*runs)
    w = max((len(p) for p, *_ in rows), default=10)
    print(f"{'ratio':<{w}}  {'first':>24}  {'second':>24}  2nd in 1st  1st in 2nd")
    for p, s1, s2, in1, in2 in rows:
        print(f"{p:<{w}}  {fmt(s1):>24}  {fmt(s2):>24}  {'yes' if in1 else 'NO':>10}  {'yes' if in2 else 'NO':>10}")
    bad = [p for p, _, _, in1, in2 in rows if not (in1 and in2)]
    print(f'{len(rows) - len(bad)} of {len(rows)} ratios reproduce' + (f"; not: {', '.join(bad)}" if bad else ''))
    one, both = expected(rows)
    print(f'by chance alone (both runs drawn from one distribution): {both:.1f} of {len(rows)} would reproduce both '
          f'ways, {one:.1f} one way; here {sum(i1 and i2 for *_, i1, i2 in rows)} and {sum(i1 for *_, i1, _ in rows)}')
    if a.strict and bad: sys.exit(1)


if __name__ == '__main__':
    main()
