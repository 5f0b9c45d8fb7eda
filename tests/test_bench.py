"""The benchmark's timing rules (bench/run.py, bench/compare.py), on fake runs: no timing of real work here."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
import compare  # noqa: E402
import run as bench  # noqa: E402


def fake_result(seconds: list):
    "A Result-like object whose History holds these seconds per round (round 0 first)."
    return SimpleNamespace(history=SimpleNamespace(rounds=pd.DataFrame({'seconds': seconds})))


def test_steady_rounds_repeats_short_runs():
    calls = []
    run = lambda: calls.append(1) or fake_result([0.0, 9.0, 0.1, 0.1, 0.1])   # 0.3 s of steady rounds a run
    per_round, res = bench.steady_rounds(run, min_seconds=1.0)
    assert len(calls) == 4                        # 4 runs = 1.2 s ≥ 1 s; 3 runs (0.9 s) would not do
    assert per_round == pytest.approx(0.1)        # rounds 1 (Flower's node discovery) and 0 are not timed
    assert res.history.rounds.seconds.iloc[1] == 9.0


def test_steady_rounds_one_long_run():
    calls = []
    run = lambda: calls.append(1) or fake_result([0.0, 5.0, 0.5, 0.7])
    assert bench.steady_rounds(run, min_seconds=1.0)[0] == pytest.approx(0.6)
    assert len(calls) == 1


def test_ratio_pairs_repetitions():
    r = bench.ratio([4.0, 9.0, 2.0], [1.0, 3.0, 2.0])
    assert r['reps'] == [4.0, 3.0, 1.0]
    assert (r['median'], r['min'], r['max']) == (3.0, 1.0, 4.0)


def test_compare_reproduces_both_ways():
    a = {'fedavg': {'x': {'speedup': bench.spread([5.0, 5.2, 5.4])}}}
    b = {'fedavg': {'x': {'speedup': bench.spread([5.1, 5.3, 5.6])}}}
    c = {'fedavg': {'x': {'speedup': bench.spread([5.5, 5.6, 5.7])}}}
    assert compare.compare(a, b) == [('fedavg.x.speedup', a['fedavg']['x']['speedup'], b['fedavg']['x']['speedup'],
                                      True, True)]
    assert compare.compare(a, c)[0][3:] == (False, False)   # 5.6 outside 5.0–5.4, 5.2 outside 5.5–5.7


def test_chance_of_reproducing():
    # 3 repetitions a side: of the 20 equally likely rank orders of 6 draws, 12 put B's median inside A's range, 8 do
    # both ways
    one, both = compare.chance(3, 3)
    assert one == pytest.approx(12 / 20, abs=0.005) and both == pytest.approx(8 / 20, abs=0.005)
    assert compare.chance(15, 15)[1] > 0.99 > compare.chance(5, 5)[1]   # more repetitions: wider ranges
    assert compare.chance(1, 1) == (0.0, 0.0)                             # one repetition: a point never holds another
    a = {'x': {'speedup': bench.spread([1.0, 2.0, 3.0])}, 'y': {'vs_floor': bench.spread([1.0])}}
    one, both = compare.expected(compare.compare(a, a))
    assert one == pytest.approx(0.6, abs=0.005) and both == pytest.approx(0.4, abs=0.005)


def test_round_parts_products_and_timers():
    import torch
    import fedland.train as tr
    import round_parts
    with round_parts.Products() as p:
        torch.bmm(torch.ones(2, 3, 4), torch.ones(2, 4, 5)) + 1   # one product, one addition
    assert dict(p.calls) == {'bmm': 1} and p.seconds['bmm'] > 0
    original = tr.batch_order
    with round_parts.timers() as spent:
        assert tr.batch_order is not original
        tr.batch_order(10, 4, seed=0)
    assert tr.batch_order is original                  # the library is left as it was
    assert list(spent) == ['batch orders (one seeded generator a client)']


def test_round_parts_small_run(monkeypatch):
    import round_parts
    monkeypatch.setattr(round_parts, 'settle', lambda: 0.0)   # no wait for a quiet machine: nothing is compared here
    r = round_parts.parts('mlp', 10, 1)
    ms = {k: v['median'] for k, v in r['ms'].items()}
    # nested parts inside the round (the products are timed in a run of their own: the round's, not the gradients')
    assert ms['gradients (the MLP closed form)'] <= ms['local updates'] < ms['round'] and ms['products'] < ms['round']
    assert ms[round_parts.SERVER] < ms['round'] and r['floor_ms']['median'] < ms['round']
    assert set(r['product_calls_per_round']) >= {'bmm', 'baddbmm', 'addmm'}
