"""fedland.landscape against the `loss-landscapes` package (3.0.6) on identical directions, and the package's defects
that the landscape notebook documents."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ll = pytest.importorskip('loss_landscapes')
import loss_landscapes.metrics  # noqa: E402

from fedland.data import load_dataset  # noqa: E402
from fedland.federated import client_ids  # noqa: E402
from fedland.landscape import evaluate_grid, random_plane  # noqa: E402
from fedland.models import build_model, get_flat, param_dict, set_flat  # noqa: E402
from fedland.partition import partition  # noqa: E402
from fedland.train import LocalConfig, train_centralized  # noqa: E402


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    ds = load_dataset('mnist1d', root=tmp_path_factory.mktemp('d'))
    net = build_model('mlp', ds.input_shape, 10, seed=0)
    r = train_centralized(net, ds, LocalConfig(lr=0.05, momentum=0.9, epochs=3), progress=False)
    for k, v in param_dict(net, detach=False).items():
        v.data.copy_(r.params[k])
    part = partition(ds.y_train, 10, 'dirichlet', alpha=0.5, seed=0)
    return ds, net, part


def test_identical_directions_match_loss_landscapes(setup):
    ds, net, part = setup
    n, S = 8, 0.8
    plane = random_plane(net, seed=3)
    theta0 = get_flat(net)
    e1, e2 = copy.deepcopy(net), copy.deepcopy(net)
    set_flat(e1, theta0 + S * plane.d1)
    set_flat(e2, theta0 + S * plane.d2)
    owner = client_ids(part, ds.n_train)
    own = owner >= 0
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, ds.x_train[own], ds.y_train[own])
    start = copy.deepcopy(net)
    theirs = ll.planar_interpolation(start, e1, e2, metric, steps=n)  # [i along d1, j along d2]
    ours = evaluate_grid(
        net, plane, ds.x_train, ds.y_train, owner, steps=n + 1, xrange=(0, S), yrange=(0, S), progress=False
    )
    # ours.loss is [b index, a index] on the grid k*S/n, k = 0..n
    aligned = np.array([[ours.loss[j + 1 if i % 2 == 0 else j, i] for j in range(n)] for i in range(n)])
    diff = np.abs(aligned - theirs).max()
    print(f'max |fedland - loss-landscapes| on identical directions: {diff:.2e}')
    assert diff < 1e-4
    # the documented off-by-one: read naively (same j for every column), even columns are one step off
    naive = ours.loss[:n, :n].T
    assert np.abs(naive[0::2] - theirs[0::2]).max() > 100 * diff + 1e-3
    assert np.abs(naive[1::2] - theirs[1::2]).max() < 1e-4
    # and the decomposition holds on the same grid
    np.testing.assert_allclose(ours.loss, (ours.weights[:, None, None] * ours.client_loss).sum(0), atol=1e-5)


def test_loss_landscapes_mutates_model_and_inverts_distance(setup):
    ds, net, _ = setup
    m = copy.deepcopy(net)
    before = get_flat(m).clone()
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, ds.x_train[:500], ds.y_train[:500])
    torch.manual_seed(0)
    near = ll.random_plane(m, metric, distance=1, steps=6, normalization='filter')
    allp = lambda mod: torch.cat([q.detach().flatten() for q in mod.parameters()])
    assert not torch.equal(allp(m), before), "loss-landscapes left the caller's model untouched?"
    assert not any(p.requires_grad for p in m.parameters())
    m2 = copy.deepcopy(net)
    torch.manual_seed(0)
    far = ll.random_plane(m2, metric, distance=10, steps=6, normalization='filter')
    assert np.ptp(far) < np.ptp(near), 'a larger distance should span more, but loss-landscapes shrinks it'
    # fedland leaves the model alone
    m3 = copy.deepcopy(net)
    b3 = get_flat(m3).clone()
    evaluate_grid(m3, random_plane(m3), ds.x_train[:200], ds.y_train[:200], steps=3, progress=False)
    assert torch.equal(get_flat(m3), b3) and all(p.requires_grad for p in m3.parameters())


def test_loss_landscapes_no_eval_mode_changes_batchnorm():
    torch.manual_seed(0)
    dg = load_dataset('digits')
    rn = build_model('resnet', dg.input_shape, 10, widths=(4, 8, 8))
    rm = rn.stem[1].running_mean.clone()
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, dg.x_train[:64], dg.y_train[:64])
    # its filter normalisation divides by each entry of a 1-D tensor: a zero entry (a fresh BatchNorm bias) crashes it
    with pytest.raises(ZeroDivisionError):
        ll.random_plane(copy.deepcopy(rn), metric, steps=3)
    with torch.no_grad():
        for mod in rn.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.bias.add_(0.01)
    m = copy.deepcopy(rn)
    ll.random_plane(m, metric, steps=3)
    assert not torch.equal(m.stem[1].running_mean, rm), 'BatchNorm statistics should have drifted in train mode'
    m2 = copy.deepcopy(rn)
    evaluate_grid(m2, random_plane(m2), dg.x_train[:64], dg.y_train[:64], steps=3, progress=False)
    assert torch.equal(m2.stem[1].running_mean, rm)
