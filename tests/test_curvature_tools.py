"""fedland.curvature against PyHessian (0.1) on the same MLP and data, and against the exact Hessian."""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

pyhessian = pytest.importorskip('pyhessian')

from fedland.curvature import HessianOperator, hutchinson, top_eigenvalues  # noqa: E402
from fedland.data import load_dataset  # noqa: E402
from fedland.models import build_model, flatten, param_dict, unflatten  # noqa: E402
from fedland.train import LocalConfig, train_centralized  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    ds = load_dataset('mnist1d', root=tmp_path_factory.mktemp('d'))
    net = build_model('mlp', ds.input_shape, 10, hidden=(32,), seed=0)
    r = train_centralized(net, ds, LocalConfig(lr=0.05, momentum=0.9, epochs=5), progress=False)
    with torch.no_grad():
        for k, v in param_dict(net, detach=False).items():
            v.copy_(r.params[k])
    X, Y = ds.x_train[:1000], ds.y_train[:1000]
    p = param_dict(net)
    f = lambda flat: F.cross_entropy(functional_call(net, dict(unflatten(flat, p)), (X,)), Y)
    H = hessian(f)(flatten(p)).double()
    return net.eval(), X, Y, H


def test_exact_hessian(trained):
    net, X, Y, H = trained
    ev = torch.linalg.eigvalsh(H)
    e = top_eigenvalues(HessianOperator(net, param_dict(net), X, Y), k=2, m=40)
    np.testing.assert_allclose(e.values, ev.flip(0)[:2].numpy(), rtol=1e-3)
    assert e.residuals.max() < 1e-3 * e.values[0]
    tr = hutchinson(net, param_dict(net), X, Y, n_probes=300, seed=0)
    assert abs(tr.trace - float(H.trace())) < 4 * tr.se


def test_against_pyhessian(trained):
    net, X, Y, H = trained
    exact_lam, exact_tr = float(torch.linalg.eigvalsh(H)[-1]), float(H.trace())
    torch.manual_seed(0)
    t0 = time.perf_counter()
    hc = pyhessian.hessian(net, torch.nn.CrossEntropyLoss(), data=(X, Y), cuda=False)
    ph_lam = hc.eigenvalues(top_n=1)[0][0]
    ph_tr = float(np.mean(hc.trace(maxIter=200, tol=0.0)))
    t_ph = time.perf_counter() - t0
    t0 = time.perf_counter()
    op = HessianOperator(net, param_dict(net), X, Y)
    lam = top_eigenvalues(op, k=1, m=30).values[0]
    tr = hutchinson(net, param_dict(net), X, Y, n_probes=200, seed=1)
    t_fl = time.perf_counter() - t0
    print(f'lambda_max fedland {lam:.5f} pyhessian {ph_lam:.5f} exact {exact_lam:.5f}; '
          f'trace fedland {tr.trace:.4f}±{tr.se:.4f} pyhessian {ph_tr:.4f} exact {exact_tr:.4f}; '
          f'time fedland {t_fl:.2f}s pyhessian {t_ph:.2f}s')
    assert abs(lam - ph_lam) / abs(ph_lam) < 0.02
    assert abs(tr.trace - ph_tr) / abs(ph_tr) < 0.05
    assert abs(lam - exact_lam) / exact_lam < 1e-3   # Lanczos converges where power iteration stops at tol 1e-3


def test_no_torch_warnings_in_fresh_process():
    ("The first forward-mode product of a process (HVP without the kept graph, per-sample quadratic forms) raises no "
     "FutureWarning from torch's own jvp decompositions.")
    import subprocess
    import sys

    code = ('import torch; from torch import nn; from fedland.curvature import HessianOperator, '
            'per_sample_quadratic; from fedland.models import param_dict\nm = nn.Sequential(nn.Linear(6, 3)); X, '
            'Y = torch.randn(20, 6), torch.randint(0, 3, (20,)); v = torch.randn(21)\nHessianOperator(m, '
            'param_dict(m), X, Y, reuse_graph=False) @ v; per_sample_quadratic(m, param_dict(m), X, Y, v)')
    r = subprocess.run(
        [sys.executable, '-W', 'error::FutureWarning', '-c', code], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
