"""fedland.train / fedland.federated: reference accuracies, determinism, batched = sequential, SIGKILL resume, bad
input."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fedland.data import load_dataset
from fedland.federated import FedConfig, run_federated
from fedland.models import build_model
from fedland.partition import partition
from fedland.train import LocalConfig, TrainingDiverged, train_centralized


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return load_dataset('mnist1d', root=tmp_path_factory.mktemp('data'))


def test_reference_centralized_accuracy(ds):
    """MNIST-1D paper: MLP 68%, CNN 94%. fedland's centralized baseline must land near them."""
    cfg = LocalConfig(lr=0.05, momentum=0.9, batch_size=64, epochs=60)
    mlp = train_centralized(build_model('mlp', ds.input_shape, 10), ds, cfg, progress=False).history.test_acc.iloc[-1]
    cnn = train_centralized(build_model('cnn1d', ds.input_shape, 10), ds, cfg, progress=False).history.test_acc.iloc[-1]
    print(f'centralized MNIST-1D: MLP {mlp:.3f}, CNN {cnn:.3f}')
    assert mlp >= 0.66 and cnn >= 0.92


def test_niid_bench_ordering(ds):
    """NIID-Bench trend: IID >= Dir(0.5) >= #C=2 >= #C=1 under FedAvg with 10 clients."""
    acc = {}
    for name, kw in [('iid', dict(scheme='iid')), ('dir0.5', dict(scheme='dirichlet', alpha=0.5)),
                     ('#C=2', dict(scheme='pathological', k=2)), ('#C=1', dict(scheme='pathological', k=1))]:
        part = partition(ds.y_train, 10, seed=0, **kw)
        h = run_federated(build_model('cnn1d', ds.input_shape, 10), ds, part,
                          FedConfig(rounds=30, lr=0.05, momentum=0.9, local_epochs=2, batch_size=32), progress=False)
        acc[name] = h.rounds.test_acc.iloc[-1]
    print('FedAvg MNIST-1D CNN, 10 clients, 30 rounds:', {k: round(v, 3) for k, v in acc.items()})
    assert acc['iid'] >= acc['dir0.5'] >= acc['#C=2'] >= acc['#C=1']
    assert acc['iid'] > 0.8 and acc['#C=1'] < 0.5


def test_batched_equals_sequential_many_clients(ds):
    part = partition(ds.y_train, 60, 'dirichlet', alpha=0.3, min_size=5, seed=2)
    m = build_model('mlp', ds.input_shape, 10, seed=4)
    cfg = FedConfig(
        rounds=2, lr=0.05, momentum=0.9, weight_decay=1e-4, algorithm='scaffold', fraction=0.7, keep_clients='all'
    )
    a = run_federated(m, ds, part, cfg, batched=True, progress=False)
    b = run_federated(m, ds, part, cfg, batched=False, progress=False)
    torch.testing.assert_close(torch.stack(a.global_params), torch.stack(b.global_params), atol=1e-5, rtol=1e-5)
    pd.testing.assert_frame_equal(a.clients, b.clients, atol=1e-4, rtol=1e-4)


def test_same_seed_identical_other_seed_differs(ds):
    part = partition(ds.y_train, 10, 'iid', seed=0)
    m = build_model('cnn1d', ds.input_shape, 10)
    cfg = FedConfig(rounds=2, lr=0.05, fraction=0.5, seed=5)
    a, b = (run_federated(m, ds, part, cfg, progress=False) for _ in range(2))
    c = run_federated(m, ds, part, cfg, seed=6, progress=False)
    assert torch.equal(torch.stack(a.global_params), torch.stack(b.global_params))
    pd.testing.assert_frame_equal(a.clients, b.clients)
    assert not torch.equal(a.global_params[-1], c.global_params[-1])


WORKER = textwrap.dedent("""
    import sys, json, torch
    from fedland.data import load_dataset
    from fedland.models import build_model
    from fedland.partition import partition
    from fedland.federated import FedConfig, run_federated
    root, ckdir, out, progress_file = sys.argv[1:5]
    ds = load_dataset('mnist1d', root=root)
    part = partition(ds.y_train, 10, 'dirichlet', alpha=0.5, seed=0)
    cfg = FedConfig(rounds=8, lr=0.05, momentum=0.9, algorithm='fedadam', fraction=0.6, keep_clients='all', seed=11)
    def cb(h, r):
        open(progress_file, 'a').write(f'{r}\\n')
    h = run_federated(build_model('mlp', ds.input_shape, 10), ds, part, cfg,
                      checkpoint_dir=ckdir if ckdir != '-' else None, callback=cb, progress=False)
    torch.save({'g': torch.stack(h.global_params), 'clients': h.clients.to_json(),
                'rounds': h.rounds.drop(columns='seconds').to_json(),
                'c': torch.stack([h.client_models.get(r, k) for r, k in h.client_models.keys()])}, out)
""")


def test_sigkill_resume_bit_identical(tmp_path, ds):
    root = tmp_path / 'data'
    load_dataset('mnist1d', root=root)
    (tmp_path / 'w.py').write_text(WORKER)
    run = lambda ck, out, prog: [sys.executable, str(tmp_path / 'w.py'), str(root), ck, str(out), str(prog)]
    subprocess.run(run('-', tmp_path / 'ref.pt', tmp_path / 'p0'), check=True, timeout=300)
    kill_after = int(np.random.default_rng(int(time.time())).integers(1, 6))
    prog = tmp_path / 'p1'
    p = subprocess.Popen(run(str(tmp_path / 'ck'), tmp_path / 'x.pt', prog))
    deadline = time.time() + 120
    while time.time() < deadline:
        if prog.exists() and len(prog.read_text().split()) >= kill_after:
            break
        if p.poll() is not None:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / 'x.pt').exists(), 'the run finished before it could be killed'
    done = len(prog.read_text().split())
    subprocess.run(run(str(tmp_path / 'ck'), tmp_path / 'resumed.pt', tmp_path / 'p2'), check=True, timeout=300)
    rounds_after = [int(x) for x in (tmp_path / 'p2').read_text().split()]
    assert rounds_after and rounds_after[0] >= 2 and rounds_after[0] <= done + 1 and rounds_after[-1] == 8
    ref = torch.load(tmp_path / 'ref.pt', weights_only=True)
    res = torch.load(tmp_path / 'resumed.pt', weights_only=True)
    assert torch.equal(ref['g'], res['g']) and torch.equal(ref['c'], res['c'])
    assert ref['clients'] == res['clients'] and ref['rounds'] == res['rounds']
    print(f'killed after round {done}, resumed at round {rounds_after[0]}: bit-identical')


def test_corrupt_checkpoint_names_file(tmp_path, ds):
    part = partition(ds.y_train, 5, 'iid', seed=0)
    m = build_model('mlp', ds.input_shape, 10)
    run_federated(m, ds, part, FedConfig(rounds=1), checkpoint_dir=tmp_path, progress=False)
    f = tmp_path / 'checkpoint.pt'
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(RuntimeError, match=str(f)):
        run_federated(m, ds, part, FedConfig(rounds=1), checkpoint_dir=tmp_path, progress=False)


def test_divergence_keeps_history(ds):
    part = partition(ds.y_train, 5, 'iid', seed=0)
    with pytest.raises(TrainingDiverged, match=r'round \d+ at client \d+') as e:
        run_federated(
            build_model('mlp', ds.input_shape, 10),
            ds,
            part,
            FedConfig(rounds=10, lr=80.0, momentum=0.9),
            progress=False,
        )
    h = e.value.history
    assert h.status == 'failed' and 'round' in h.error and h.rounds['round'].iloc[0] == 0


@pytest.mark.parametrize(
    'kw,match',
    [
        (dict(lr=0), 'lr=0'),
        (dict(lr=-0.1), 'lr=-0.1'),
        (dict(rounds=0), 'rounds=0'),
        (dict(fraction=0), 'fraction=0'),
        (dict(fraction=1.2), 'fraction=1.2'),
        (dict(algorithm='fedsgd'), 'valid algorithms'),
        (dict(batch_size=0), 'batch_size'),
        (dict(local_epochs=0), 'local_epochs|epochs'),
        (dict(momentum=1.0), 'momentum'),
        (dict(bn='none'), 'bn='),
    ],
)
def test_bad_settings(ds, kw, match):
    part = partition(ds.y_train, 5, 'iid', seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        run_federated(build_model('mlp', ds.input_shape, 10), ds, part, progress=False, **kw)


def test_model_must_fit(ds):
    part = partition(ds.y_train, 5, 'iid', seed=0)
    with pytest.raises(ValueError, match='does not fit'):
        run_federated(build_model('mlp', (41,), 10), ds, part, rounds=1, progress=False)
    with pytest.raises(ValueError, match='classes'):
        run_federated(build_model('mlp', (40,), 3), ds, part, rounds=1, progress=False)
    with pytest.raises(ValueError, match='valid models'):
        build_model('transformer', (40,), 10)
    with pytest.raises(ValueError, match='1-D inputs'):
        build_model('cnn1d', (3, 32, 32), 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_cuda_matches_cpu(ds):
    part = partition(ds.y_train, 5, 'iid', seed=0)
    m = build_model('mlp', ds.input_shape, 10)
    a = run_federated(m, ds, part, FedConfig(rounds=2), progress=False)
    b = run_federated(m, ds, part, FedConfig(rounds=2), device='cuda', progress=False)
    torch.testing.assert_close(a.global_params[-1], b.global_params[-1], atol=1e-4, rtol=1e-4)
