"""fedland.partition on the full MNIST-1D label set, every scheme and client count: disjointness, coverage, seed
stability, exact #C=k, Dirichlet→IID, ratio shortfalls (bad inputs and their messages are tested in the notebook)."""
import warnings

import numpy as np
import pytest

from fedland.partition import PartitionWarning, partition, tv_distance

SCHEMES = [
    ('iid', {}),
    ('iid', {'sigma': 1.5}),
    ('iid', {'beta': 0.5}),
    ('dirichlet', {'alpha': 0.1}),
    ('dirichlet', {'alpha': 1.0, 'sigma': 0.5}),
    ('pathological', {'k': 1}),
    ('pathological', {'k': 3}),
    ('pathological', {'k': 2, 'sigma': 1.0}),
    ('shards', {'shards_per_client': 2}),
    ('ratios', {'ratios': 'eye', 'fractions': [1, 0.5, 0.5, 0.2, 1]}),
]


def _all(p):
    return np.concatenate(list(p) + p.holdout)


@pytest.mark.parametrize('scheme,params', SCHEMES)
@pytest.mark.parametrize('K', [5, 10])
def test_disjoint_and_stable(mnist1d_labels, scheme, params, K):
    if scheme == 'ratios':  # client k prefers class k mod 10; fractions cycle
        params = {'ratios': np.eye(10)[np.arange(K) % 10] + 0.1, 'fractions': (params['fractions'] * 2)[:K]}
    y = mnist1d_labels
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', PartitionWarning)
        p = partition(y, K, scheme, seed=7, **params)
        q = partition(y, K, scheme, seed=7, **params)
        r = partition(y, K, scheme, seed=8, **params)
    a = _all(p)
    assert len(a) == len(np.unique(a)), 'clients overlap'
    assert a.min() >= 0 and a.max() < len(y)
    assert len(p) == K and all(len(t) > 0 for t in p)
    for k in range(K):
        np.testing.assert_array_equal(p[k], q[k])
        np.testing.assert_array_equal(p.holdout[k], q.holdout[k])
        assert not np.intersect1d(p[k], p.holdout[k]).size
    assert any(not np.array_equal(p[k], r[k]) for k in range(K)), 'seed does not matter'
    np.testing.assert_allclose(p.weights, p.sizes / p.sizes.sum())
    np.testing.assert_array_equal(p.counts.sum(1), p.sizes)
    if scheme in ('iid', 'dirichlet', 'shards') or (scheme == 'pathological' and K >= 10):
        assert len(a) == len(y), 'scheme promises full coverage'


@pytest.mark.parametrize('k', [1, 2, 3, 5, 10])
def test_pathological_exact_classes(mnist1d_labels, k):
    p = partition(mnist1d_labels, 10, 'pathological', k=k, seed=1, holdout=0)
    assert ((p.counts > 0).sum(1) == k).all()
    assert [k_ for k_ in range(10) if p.counts[k_, k_ % 10] == 0] == []  # client i holds class i mod C
    # each class split equally (±1) among its holders
    for c in range(10):
        held = p.counts[:, c][p.counts[:, c] > 0]
        assert held.max() - held.min() <= 1


def test_dirichlet_large_alpha_is_iid(mnist1d_labels):
    p = partition(mnist1d_labels, 10, 'dirichlet', alpha=1e4, seed=0)
    tv = tv_distance(p.counts, np.bincount(mnist1d_labels))
    assert tv.max() < 0.05, tv


def test_dirichlet_small_alpha_is_skewed(mnist1d_labels):
    p = partition(mnist1d_labels, 10, 'dirichlet', alpha=0.1, seed=0)
    assert p.report()['tv_to_global'].mean() > 0.4
    assert p.sizes.min() >= 10


def test_quantity_skew(mnist1d_labels):
    bal = partition(mnist1d_labels, 10, 'iid', seed=0, holdout=0)
    unb = partition(mnist1d_labels, 10, 'iid', sigma=1.0, seed=0, holdout=0)
    assert bal.sizes.max() - bal.sizes.min() <= 1
    assert unb.sizes.max() > 2 * unb.sizes.min()
    # labels stay IID under quantity skew (sampling noise shrinks with client size)
    r = unb.report()
    assert r.loc[r.n_train >= 200, 'tv_to_global'].max() < 0.15


def test_ratio_shortfall_warns_not_resamples(mnist1d_labels):
    y = mnist1d_labels
    with pytest.warns(PartitionWarning, match='short'):
        p = partition(y, 2, 'ratios', ratios=[[1] + [0] * 9] * 2, holdout=0)
    assert p.counts[:, 0].sum() == (y == 0).sum()
    assert len(np.unique(_all(p))) == len(_all(p))


def test_ratio_rows_normalised(mnist1d_labels):
    a = partition(mnist1d_labels, 2, 'ratios', ratios=[[1] * 10, [2, 1] + [0] * 8], fractions=[0.2, 0.2], seed=0)
    b = partition(
        mnist1d_labels, 2, 'ratios', ratios=[[0.1] * 10, [2 / 3, 1 / 3] + [0] * 8], fractions=[0.2, 0.2], seed=0
    )
    for k in range(2):
        np.testing.assert_array_equal(a[k], b[k])


def test_holdout_from_own_distribution(mnist1d_labels):
    p = partition(mnist1d_labels, 5, 'pathological', k=2, seed=0, holdout=0.3)
    for k in range(5):
        assert set(np.flatnonzero(p.holdout_counts[k])) <= set(np.flatnonzero(p.counts[k]))
        assert abs(len(p.holdout[k]) / (len(p.holdout[k]) + len(p[k])) - 0.3) < 0.01
