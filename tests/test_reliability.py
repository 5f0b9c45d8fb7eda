"""Reliability with real processes: bad input leaves the store untouched, SIGKILL + rerun resumes bit-identically,
divergence is recorded, corrupt files are named, nothing is unpickled, and a 1000-client x 100-round run stays
bounded."""
import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedland.experiment import Experiment, run_experiment, run_experiments
from fedland.store import Store, StoreError
from fedland.train import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(model='mlp', rounds=3, landscape_steps=5, curvature_probes=2)


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """A store that already holds one finished run (which bad input must never disturb)."""
    p = str(tmp_path_factory.mktemp('s') / 'fedland.db')
    run_experiment(Experiment(**QUICK, store=p), progress=False)
    return p


BAD = [  # (Experiment kwargs, exception, text naming the parameter)
    (dict(alpha=0), ValueError, 'alpha=0'),
    (dict(alpha=-1.0), ValueError, 'alpha=-1.0'),
    (dict(alpha='x'), TypeError, 'alpha'),
    (dict(lr=0), ValueError, 'lr=0'),
    (dict(lr=-0.5), ValueError, 'lr=-0.5'),
    (dict(rounds=0), ValueError, 'rounds=0'),
    (dict(rounds=2.5), TypeError, 'rounds'),
    (dict(fraction=0), ValueError, 'fraction=0'),
    (dict(fraction=1.5), ValueError, 'fraction=1.5'),
    (dict(n_clients=0), ValueError, 'n_clients=0'),
    (dict(n_clients=5000), ValueError, 'n_clients=5000'),
    (dict(partition='pathological', k=0), ValueError, 'k=0'),
    (dict(partition='pathological', k=11), ValueError, 'k=11'),
    (dict(dataset='imagenet'), ValueError, 'dataset='),
    (dict(model='vgg'), ValueError, 'model='),
    (dict(algorithm='fedsgd'), ValueError, 'algorithm='),
    (dict(partition='zipf'), ValueError, 'partition='),
    (dict(partition='ratios', n_clients=3, ratios=[[1] * 10] * 2), ValueError, 'ratios has shape'),
    (dict(partition='ratios', n_clients=2, ratios=[[1] * 10, [-1] * 10]), ValueError, 'negative'),
    (dict(partition='ratios', n_clients=2, ratios=[[1] * 10] * 2, fractions=[1, 2]), ValueError, 'fractions[1]'),
    (dict(unbalance=-1.0), ValueError, 'unbalance'),
    (dict(holdout=1.0), ValueError, 'holdout'),
    (dict(batch_size=0), ValueError, 'batch_size'),
    (dict(momentum=1.0), ValueError, 'momentum'),
    (dict(landscape_steps=1), ValueError, 'landscape_steps'),
    (dict(curvature_probes=1), ValueError, 'curvature_probes'),
    (dict(landscape_plane='circle'), ValueError, 'landscape_plane'),
    (dict(seed=-1), ValueError, 'seed'),
    (dict(model='cnn'), ValueError, 'image inputs'),
    (dict(noisy_clients=[10]), ValueError, 'noisy_clients'),
    (dict(free_riders=[-1]), ValueError, 'free_riders'),
    (dict(noisy_clients='two'), ValueError, "noisy_clients='two'"),
    (dict(label_noise=1.5), ValueError, 'label_noise=1.5'),
    (dict(valuation='magic'), ValueError, 'valuation='),
    (dict(valuation_metric='f1'), ValueError, 'valuation_metric='),
    (dict(valuation='exact'), ValueError, 'valuation_max_clients'),
    (dict(holdout=0.0), ValueError, 'holdout'),
    (dict(valuation='sampled', valuation_budget=0), ValueError, 'valuation_budget'),
    (dict(valuation_samples=0), ValueError, 'valuation_samples'),
    (dict(valuation_every=0), ValueError, 'valuation_every'),
    (dict(valuation_horizon=0), ValueError, 'valuation_horizon'),
    (dict(valuation_game='epoch'), ValueError, 'valuation_game='),
]


@pytest.mark.parametrize('kw,exc,msg', BAD, ids=[f'{i}-{list(b[0])[0]}' for i, b in enumerate(BAD)])
def test_bad_input_names_parameter_and_writes_nothing(store, kw, exc, msg):
    st = Store(store)
    before = st.counts()
    with pytest.raises(exc) as e:
        run_experiment(Experiment(**{**QUICK, **kw, 'store': store}), progress=False)
    assert msg in str(e.value), str(e.value)
    assert st.counts() == before
    st.close()


@pytest.mark.parametrize(
    'url,msg', [('mysql://x/y', 'sqlite:///'), ('postgresql://nobody@127.0.0.1:1/none', 'cannot be opened')]
)
def test_bad_store_url(store, url, msg):
    st = Store(store)
    before = st.counts()
    with pytest.raises((ValueError, StoreError), match=re.escape(msg)):
        run_experiment(Experiment(**QUICK, store=url), progress=False)
    assert st.counts() == before
    st.close()


def test_bad_papermill_parameter_writes_nothing(store, tmp_path):
    st = Store(store)
    before = st.counts()
    r = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'run.ipynb'), str(tmp_path / 'o.ipynb'),
                        '-p', 'alpha', '-2', '-p', 'store', store], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'alpha=-2' in r.stdout + r.stderr
    assert st.counts() == before
    st.close()


WORKER = textwrap.dedent("""
    import sys
    from fedland.experiment import Experiment, run_experiment
    run_experiment(Experiment(model='mlp', rounds=12, algorithm='fedadam', fraction=0.7, landscape_steps=7,
                              curvature_probes=3, seed=4, store=sys.argv[1]), progress=False)
""")


def _tables(store):
    st = Store(store)
    out = {
        t: st.table(t).drop(
            columns=[c for c in ('experiment_id', 'created_at', 'finished_at', 'path') if c in st.table(t).columns]
        )
        for t in ('rounds', 'client_rounds', 'curvature', 'contributions', 'landscapes', 'valuations')
    }
    out['status'] = st.table('experiments').status.tolist()
    st.close()
    return out


def kill_after(cmd: list, env: dict, progress, kill_at: int, poll: float = 0.02) -> int:
    ("Start `cmd`, SIGKILL it once `progress()` (read from what it has written; errors count as no progress) reaches "
     "`kill_at`, and return the progress it was killed at.")
    p = subprocess.Popen(cmd, env=env)
    deadline, seen = time.time() + 300, 0
    while time.time() < deadline and p.poll() is None:
        try:
            seen = progress()
        except Exception:
            pass
        if seen >= kill_at:
            break
        time.sleep(poll)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, 'the process ended before it could be killed'
    return seen


def federated_rounds(store: str) -> int:
    "Federated rounds a store holds (0 before it exists)."
    if not Path(store).exists(): return 0
    st = Store(store)
    try:
        return int(st.query("SELECT COUNT(*) AS n FROM rounds WHERE setting = 'federated'").n.iloc[0]) - 1
    finally:
        st.close()


def test_sigkill_and_rerun_resumes_bit_identical(tmp_path):
    w = tmp_path / 'w.py'
    w.write_text(WORKER)
    # the landscape engines the first run measures are the ones every later run takes (05: choices outlive a process)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'FEDLAND_CACHE_DIR': str(tmp_path / 'cache')}
    ref, crash = str(tmp_path / 'ref' / 'fedland.db'), str(tmp_path / 'crash' / 'fedland.db')
    subprocess.run([sys.executable, str(w), ref], check=True, timeout=600, env=env)
    kill_at = int(np.random.default_rng(int(time.time())).integers(2, 10))
    seen = kill_after([sys.executable, str(w), crash], env, lambda: federated_rounds(crash), kill_at)
    assert _tables(crash)['status'] == ['running']
    subprocess.run([sys.executable, str(w), crash], check=True, timeout=600, env=env)
    a, b = _tables(ref), _tables(crash)
    assert b['status'] == ['finished']
    assert len(a['valuations']) > 0
    for t in ('rounds', 'client_rounds', 'curvature', 'contributions', 'landscapes', 'valuations'):
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=True, obj=t)
    import torch

    ga = torch.load(next(Path(ref).parent.glob('artifacts/*/checkpoint/checkpoint.pt')), weights_only=True)[
        'global_params'
    ]
    gb = torch.load(next(Path(crash).parent.glob('artifacts/*/checkpoint/checkpoint.pt')), weights_only=True)[
        'global_params'
    ]
    assert torch.equal(ga, gb)
    print(f'killed after federated round {seen} (target {kill_at}); rerun ended bit-identical')


GAME_WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from fedland.data import load_dataset
    from fedland.federated import FedConfig
    from fedland.models import build_model
    from fedland.partition import partition
    from fedland.valuation import coalition_values
    ds = load_dataset('mnist1d')
    part = partition(ds.y_train, 5, 'dirichlet', alpha=0.5, seed=0)
    net = build_model('mlp', ds.input_shape, 10, seed=0)
    cfg = FedConfig(rounds=8, local_epochs=1, lr=0.05, momentum=0.9, algorithm='fedadam', server_lr=0.01)
    g = coalition_values(net, ds, part, cfg, seeds=[0, 1], checkpoint_dir=sys.argv[1], progress=False)
    np.save(sys.argv[2], np.stack([g.acc, g.loss]))
""")


def test_sigkill_during_the_exact_game_resumes_bit_identical(tmp_path):
    import torch
    w = tmp_path / 'game.py'
    w.write_text(GAME_WORKER)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, str(w), str(tmp_path / 'ref'), str(tmp_path / 'ref.npy')], check=True,
                   timeout=600, env=env)
    ck = tmp_path / 'crash' / 'coalitions.pt'
    kill_at = int(np.random.default_rng(int(time.time())).integers(2, 12))    # rounds done over both seeds
    def rounds_done() -> int:   # over both seeds, from the game's checkpoint
        st = torch.load(ck, weights_only=True)
        return 8 * max(st['seed_index'], 0) + st['round']
    done = kill_after([sys.executable, str(w), str(ck.parent), str(tmp_path / 'crash.npy')], env, rounds_done, kill_at,
                      poll=0.01)
    assert not (tmp_path / 'crash.npy').exists()
    subprocess.run([sys.executable, str(w), str(ck.parent), str(tmp_path / 'crash.npy')], check=True, timeout=600,
                   env=env)
    assert np.array_equal(np.load(tmp_path / 'ref.npy'), np.load(tmp_path / 'crash.npy'))
    print(f'killed after {done} coalition rounds (target {kill_at}); the resumed game is bit-identical')


def test_divergence_is_recorded_and_the_list_goes_on(tmp_path):
    s = str(tmp_path / 'fedland.db')
    out = run_experiments([Experiment(**QUICK, lr=80.0, store=s), Experiment(**QUICK, store=s)], progress=False)
    assert isinstance(out[0], TrainingDiverged) and not isinstance(out[1], Exception)
    ex = Store(s).table('experiments').set_index('id')
    assert ex.loc[out[1].experiment.id, 'status'] == 'finished'
    failed = ex[ex.status == 'failed']
    assert len(failed) == 1 and re.search(
        r'diverged (at epoch \d+|in round \d+ at client \d+)', failed.error.iloc[0]
    ), failed.error.iloc[0]


def test_corrupt_artifacts_are_named(tmp_path):
    s = str(tmp_path / 'fedland.db')
    e = Experiment(**QUICK, store=s)
    run_experiment(e, progress=False)
    d = tmp_path / 'artifacts' / e.id
    ls = next(d.glob('landscape_*.npz'))
    ls.write_bytes(ls.read_bytes()[:300])
    with pytest.raises(RuntimeError, match=re.escape(str(ls))):
        run_experiment(e, progress=False)
    ls.unlink()
    cen = d / 'centralized.pt'
    cen.write_bytes(cen.read_bytes()[:500])
    with pytest.raises(RuntimeError, match=re.escape(str(cen))):
        run_experiment(e, progress=False)
    assert Store(s).table('experiments').status.iloc[0] == 'failed'
    cen.unlink()
    assert run_experiment(e, progress=False).status == 'finished'      # deleting the damaged file recovers
    assert Store(s).table('experiments').status.iloc[0] == 'finished'


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    src = {p: p.read_text() for p in (ROOT / 'fedland').glob('*.py')}
    loads = 0
    for p, text in src.items():
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, 'attr', '') == 'load'
                and getattr(node.func.value, 'id', '') == 'torch'
            ):
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert 'weights_only' in kw and getattr(kw['weights_only'], 'value', None) is True, (
                    f'{p.name}: torch.load without weights_only=True'
                )
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, 'attr', '') == 'load'
                and getattr(node.func.value, 'id', '') == 'np'
            ):
                kw = {k.arg: k.value for k in node.keywords}
                assert getattr(kw.get('allow_pickle'), 'value', False) is False, f'{p.name}: np.load with pickles'
        assert not re.search(r'^\s*import pickle|pickle\.loads?\(', text, re.M), f'{p.name} unpickles'
    assert loads >= 2      # checkpoints and the centralized baseline


SCALE = textwrap.dedent("""
    import sys, time, resource, json
    from fedland.experiment import Experiment, run_experiment
    # this process's own peak (VmHWM): ru_maxrss also counts the parent's resident set at the fork (pytest's, hundreds
    # of MB to GB)
    def peak_mb():
        try: return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
        except (OSError, StopIteration): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    r = run_experiment(Experiment(name='scale', model='mlp', partition='iid', n_clients=1000, rounds=100,
                                  local_epochs=1, curvature=False, contributions=False, valuation='none',
                                  landscape_steps=11, store=sys.argv[1]), progress=False)
    print(json.dumps(dict(seconds=time.perf_counter() - t, acc=r.history.rounds.test_acc.iloc[-1],
                          kept=len(r.history.client_models), cos_rounds=len(r.history.update_cos),
                          peak_rss_mb=peak_mb())))
""")
MEMORY_BOUND_MB, DISK_BOUND_MB = 2048, 150   # documented in nbs/04_federated.ipynb and the closing note


def test_1000_clients_100_rounds_bounded(tmp_path):
    w = tmp_path / 'scale.py'
    w.write_text(SCALE)
    r = subprocess.run(
        [sys.executable, str(w), str(tmp_path / 'fedland.db')], capture_output=True, text=True, timeout=1200, check=True
    )
    m = json.loads(r.stdout.strip().splitlines()[-1])
    disk = sum(f.stat().st_size for f in tmp_path.rglob('*') if f.is_file()) / 2**20
    print(f"1000 clients x 100 rounds: {m['seconds']:.0f} s, peak RSS {m['peak_rss_mb']:.0f} MB, disk {disk:.0f} MB, "
          f"acc {m['acc']:.3f}")
    assert m['kept'] == 1000 and m['cos_rounds'] == 1            # client models and cosines for the last round only
    assert m['peak_rss_mb'] < MEMORY_BOUND_MB
    assert disk < DISK_BOUND_MB
    st = Store(tmp_path / 'fedland.db')
    assert st.counts()['client_rounds'] == 100 * 1000
    st.close()
