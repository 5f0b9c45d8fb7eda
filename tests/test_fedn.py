"""The FEDn compute package in `fedn_package/`, run by FEDn's own offline runner
(`fedn run build/startup/train/validate`)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

pytest.importorskip('fedn', reason="fedn is not installed (pip install -e '.[distributed]')")

import numpy as np
import torch

from fedland.experiment import Experiment, prepare
from fedland.federated import aggregate, client_step
from fedland.models import param_dict
from fedland.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXP = dict(model='mlp', partition='dirichlet', alpha=1.0, n_clients=3, seed=2, lr=0.05, local_epochs=1)


# the subprocesses run single-threaded: so do the references (conftest)
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture()
def package(tmp_path):
    pkg = tmp_path / 'pkg'
    shutil.copytree(ROOT / 'fedn_package', pkg)
    (pkg / 'experiment.json').write_text(json.dumps(EXP))
    return pkg


def fedn(*args, k=0, check=True):
    env = {
        **os.environ,
        'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        'FEDLAND_PARTITION_ID': str(k),
        'OMP_NUM_THREADS': '1',
    }
    r = subprocess.run([str(BIN / 'fedn'), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def load(path):
    a = np.load(path)
    return [a[str(i)] for i in range(len(a.files))]


def test_fedn_run_build_train_validate(package, tmp_path):
    exp = Experiment(**EXP)
    ds, part, net = prepare(exp)
    seed = tmp_path / 'seed.npz'
    fedn('run', 'build', '-p', package)
    shutil.move(package / 'seed.npz', seed)
    theta0 = [v.numpy() for v in param_dict(net).values()]
    for a, b in zip(load(seed), theta0): np.testing.assert_array_equal(a, b)
    fedn('run', 'startup', '-p', package, k=1)

    outs, metas = [], []
    for k in range(3):
        out = tmp_path / f'client{k}.npz'
        fedn('run', 'train', '-p', package, '-i', seed, '-o', out, k=k)
        outs.append(load(out))
        metas.append(json.loads(Path(f'{out}-metadata').read_text()))
    assert [m['num_examples'] for m in metas] == [len(part[k]) for k in range(3)]
    res, _ = client_step(
        net,
        param_dict(net),
        {},
        ds.x_train,
        ds.y_train,
        part[2],
        part.holdout[2],
        exp.fed_config().local,
        (exp.seed, zlib.crc32(seed.read_bytes()), 2),
    )
    # the package trains with client_step
    for a, b in zip(outs[2], res.params.values()): np.testing.assert_array_equal(a, b.numpy())

    # FEDn's combiner: FedAvg weighted by num_examples
    g = aggregate([{i: torch.as_tensor(a) for i, a in enumerate(o)} for o in outs], [m['num_examples'] for m in metas])
    gpath = tmp_path / 'global.npz'
    np.savez_compressed(gpath, **{str(i): v.numpy() for i, v in g.items()})
    val = tmp_path / 'validation.json'
    fedn('run', 'validate', '-p', package, '-i', gpath, '-o', val, k=1)
    metrics = json.loads(val.read_text())
    params = {n: g[i] for i, n in enumerate(param_dict(net))}
    tl, ta = evaluate(net, ds.x_test, ds.y_test, params)
    assert abs(metrics['test_loss'] - tl) < 1e-6 and abs(metrics['test_accuracy'] - ta) < 1e-6
    assert {'training_loss', 'training_accuracy', 'local_test_loss', 'local_test_accuracy'} <= set(metrics)
    print(f'\nFEDn offline round, 3 clients: global test acc {ta:.3f} (θ₀: '
          f'{evaluate(net, ds.x_test, ds.y_test)[1]:.3f})')


def test_fedn_bad_client_and_model_fail_cleanly(package, tmp_path):
    fedn('run', 'build', '-p', package)
    r = fedn('run', 'train', '-p', package, '-i', package / 'seed.npz', '-o', tmp_path / 'x.npz', k=7, check=False)
    assert r.returncode != 0 and 'FEDLAND_PARTITION_ID=7' in r.stdout + r.stderr
    assert not (tmp_path / 'x.npz').exists()
    bad = tmp_path / 'bad.npz'
    np.savez_compressed(bad, **{'0': np.zeros((3, 3), np.float32)})
    r = fedn('run', 'validate', '-p', package, '-i', bad, '-o', tmp_path / 'v.json', check=False)
    assert r.returncode != 0 and 'arrays' in r.stdout + r.stderr
    assert not (tmp_path / 'v.json').exists()


def test_fedn_package_create(package, tmp_path):
    fedn('package', 'create', '--path', package, '--name', 'fedland.tgz', '--output', tmp_path)
    with tarfile.open(tmp_path / 'fedland.tgz') as t:
        names = {Path(n).name for n in t.getnames()}
    assert {'fedn.yaml', 'train.py', 'validate.py', 'build.py', 'startup.py', 'experiment.json'} <= names
