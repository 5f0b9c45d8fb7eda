"""Property tests of fedland.partition: disjointness, coverage, seed stability, exact #C=k, Dirichlet→IID, bad input."""
import warnings

import numpy as np
import pytest

from fedland.partition import PartitionWarning, partition, split_counts, tv_distance

SCHEMES = [
    ("iid", {}),
    ("iid", {"sigma": 1.5}),
    ("iid", {"beta": 0.5}),
    ("dirichlet", {"alpha": 0.1}),
    ("dirichlet", {"alpha": 1.0, "sigma": 0.5}),
    ("pathological", {"k": 1}),
    ("pathological", {"k": 3}),
    ("pathological", {"k": 2, "sigma": 1.0}),
    ("shards", {"shards_per_client": 2}),
    ("ratios", {"ratios": "eye", "fractions": [1, 0.5, 0.5, 0.2, 1]}),
]


def _all(p):
    return np.concatenate(list(p) + p.holdout)


@pytest.mark.parametrize("scheme,params", SCHEMES)
@pytest.mark.parametrize("K", [5, 10])
def test_disjoint_and_stable(mnist1d_labels, scheme, params, K):
    if scheme == "ratios":  # client k prefers class k mod 10; fractions cycle
        params = {"ratios": np.eye(10)[np.arange(K) % 10] + 0.1, "fractions": (params["fractions"] * 2)[:K]}
    y = mnist1d_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartitionWarning)
        p = partition(y, K, scheme, seed=7, **params)
        q = partition(y, K, scheme, seed=7, **params)
        r = partition(y, K, scheme, seed=8, **params)
    a = _all(p)
    assert len(a) == len(np.unique(a)), "clients overlap"
    assert a.min() >= 0 and a.max() < len(y)
    assert len(p) == K and all(len(t) > 0 for t in p)
    for k in range(K):
        np.testing.assert_array_equal(p[k], q[k])
        np.testing.assert_array_equal(p.holdout[k], q.holdout[k])
        assert not np.intersect1d(p[k], p.holdout[k]).size
    assert any(not np.array_equal(p[k], r[k]) for k in range(K)), "seed does not matter"
    np.testing.assert_allclose(p.weights, p.sizes / p.sizes.sum())
    np.testing.assert_array_equal(p.counts.sum(1), p.sizes)
    if scheme in ("iid", "dirichlet", "shards") or (scheme == "pathological" and K >= 10):
        assert len(a) == len(y), "scheme promises full coverage"


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_pathological_exact_classes(mnist1d_labels, k):
    p = partition(mnist1d_labels, 10, "pathological", k=k, seed=1, holdout=0)
    assert ((p.counts > 0).sum(1) == k).all()
    assert [k_ for k_ in range(10) if p.counts[k_, k_ % 10] == 0] == []  # client i holds class i mod C
    # each class split equally (±1) among its holders
    for c in range(10):
        held = p.counts[:, c][p.counts[:, c] > 0]
        assert held.max() - held.min() <= 1


def test_dirichlet_large_alpha_is_iid(mnist1d_labels):
    p = partition(mnist1d_labels, 10, "dirichlet", alpha=1e4, seed=0)
    tv = tv_distance(p.counts, np.bincount(mnist1d_labels))
    assert tv.max() < 0.05, tv


def test_dirichlet_small_alpha_is_skewed(mnist1d_labels):
    p = partition(mnist1d_labels, 10, "dirichlet", alpha=0.1, seed=0)
    assert p.report()["tv_to_global"].mean() > 0.4
    assert p.sizes.min() >= 10


def test_quantity_skew(mnist1d_labels):
    bal = partition(mnist1d_labels, 10, "iid", seed=0, holdout=0)
    unb = partition(mnist1d_labels, 10, "iid", sigma=1.0, seed=0, holdout=0)
    assert bal.sizes.max() - bal.sizes.min() <= 1
    assert unb.sizes.max() > 2 * unb.sizes.min()
    # labels stay IID under quantity skew (sampling noise shrinks with client size)
    r = unb.report()
    assert r.loc[r.n_train >= 200, "tv_to_global"].max() < 0.15


def test_ratio_shortfall_warns_not_resamples(mnist1d_labels):
    y = mnist1d_labels
    with pytest.warns(PartitionWarning, match="short"):
        p = partition(y, 2, "ratios", ratios=[[1] + [0] * 9] * 2, holdout=0)
    assert p.counts[:, 0].sum() == (y == 0).sum()
    assert len(np.unique(_all(p))) == len(_all(p))


def test_ratio_rows_normalised(mnist1d_labels):
    a = partition(mnist1d_labels, 2, "ratios", ratios=[[1] * 10, [2, 1] + [0] * 8], fractions=[0.2, 0.2], seed=0)
    b = partition(
        mnist1d_labels, 2, "ratios", ratios=[[0.1] * 10, [2 / 3, 1 / 3] + [0] * 8], fractions=[0.2, 0.2], seed=0
    )
    for k in range(2):
        np.testing.assert_array_equal(a[k], b[k])


def test_holdout_from_own_distribution(mnist1d_labels):
    p = partition(mnist1d_labels, 5, "pathological", k=2, seed=0, holdout=0.3)
    for k in range(5):
        assert set(np.flatnonzero(p.holdout_counts[k])) <= set(np.flatnonzero(p.counts[k]))
        assert abs(len(p.holdout[k]) / (len(p.holdout[k]) + len(p[k])) - 0.3) < 0.01


def test_split_counts_sum():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 1000))
        w = rng.random(int(rng.integers(1, 20))) + 1e-3
        c = split_counts(n, w)
        assert c.sum() == n and (c >= 0).all()


BAD = [
    (dict(n_clients=0), ValueError, "n_clients"),
    (dict(n_clients=4001), ValueError, "n_clients"),
    (dict(n_clients=2.5), TypeError, "n_clients"),
    (dict(n_clients=10, scheme="dirichlet", alpha=0), ValueError, "alpha"),
    (dict(n_clients=10, scheme="dirichlet", alpha=-1.0), ValueError, "alpha"),
    (dict(n_clients=10, scheme="dirichlet", alpha=float("nan")), ValueError, "alpha"),
    (dict(n_clients=10, scheme="dirichlet", alpha=0.01, min_size=399, max_tries=2), ValueError, "min_size=399"),
    (dict(n_clients=10, scheme="dirichlet", min_size=401), ValueError, "min_size"),
    (dict(n_clients=10, scheme="pathological", k=0), ValueError, "k=0"),
    (dict(n_clients=10, scheme="pathological", k=11), ValueError, "k=11"),
    (dict(n_clients=10, scheme="shards", shards_per_client=0), ValueError, "shards_per_client"),
    (dict(n_clients=2, scheme="ratios"), ValueError, "ratios"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 9, [1] * 9]), ValueError, "shape"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 10, [-0.1] * 10]), ValueError, "negative"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 10, [float("nan")] * 10]), ValueError, "NaN"),
    (dict(n_clients=2, scheme="ratios", ratios=[[0] * 10, [1] * 10]), ValueError, "row 0"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 10] * 2, fractions=[0, 1]), ValueError, "fractions[0]"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 10] * 2, fractions=[1, 1.01]), ValueError, "fractions[1]"),
    (dict(n_clients=2, scheme="ratios", ratios=[[1] * 10] * 2, fractions=[1]), ValueError, "fractions"),
    (dict(n_clients=10, sigma=-1.0), ValueError, "sigma"),
    (dict(n_clients=10, sigma=1.0, beta=1.0), ValueError, "sigma"),
    (dict(n_clients=10, holdout=1.0), ValueError, "holdout"),
    (dict(n_clients=10, seed=-1), ValueError, "seed"),
    (dict(n_clients=10, scheme="zipf"), ValueError, "valid schemes"),
    (dict(n_clients=10, scheme="shards", sigma=1.0), TypeError, "sigma"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
def test_bad_input(mnist1d_labels, kw, exc, match):
    with pytest.raises(exc) as e:
        partition(mnist1d_labels, **kw)
    assert match in str(e.value)


def test_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        partition(np.array([0.5, 1.5]), 1)
    with pytest.raises(ValueError, match="labels"):
        partition(np.array([], dtype=int), 1)
    with pytest.raises(ValueError, match="n_classes"):
        partition(np.array([0, 5]), 1, n_classes=3)
