"""The Flower Deployment Engine end to end: a real SuperLink and 3 SuperNodes on loopback, `flwr run` of the app in
`flower_app/`, the store it writes, agreement with the in-process engine, and the analysis on the distributed run."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

flwr = pytest.importorskip('flwr', reason="flwr is not installed (pip install -e '.[distributed]')")

import numpy as np
import torch

from fedland.experiment import Experiment, prepare, run_experiment
from fedland.federated import client_ids, run_federated
from fedland.flower import experiment_from_config
from fedland.landscape import evaluate_grid, random_plane
from fedland.store import Store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
K, ROUNDS = 3, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, log: Path, timeout: float = 60):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f'process exited with {proc.returncode}: {log.read_text()[-2000:]}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f'nothing listens on {port} after {timeout} s: {log.read_text()[-2000:]}')


class Federation:
    """SuperLink + SuperNodes as process groups on 127.0.0.1; `stop()` kills every process they started."""

    def __init__(self, tmp: Path, n_nodes: int, n_partitions: int | None = None):
        self.tmp, self.procs = tmp, []
        self.env = {
            **os.environ,
            'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            'FLWR_HOME': str(tmp / 'flwr'),
            'OMP_NUM_THREADS': '1',
            'MKL_NUM_THREADS': '1',
            'PYTHONUNBUFFERED': '1',
        }
        self.port = _free_port()
        (tmp / 'flwr').mkdir()
        (tmp / 'flwr' / 'config.toml').write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        link = self._start(
            'superlink',
            [
                str(BIN / 'flower-superlink'),
                '--insecure',
                '--host',
                '127.0.0.1',
                '--port',
                str(self.port),
                '--database',
                str(tmp / 'superlink.db'),
                '--disable-runtime-dependency-installation',
            ],
        )
        _wait_port(self.port, link, tmp / 'superlink.log')
        for k in range(n_nodes):
            p = _free_port()
            node = self._start(
                f'supernode{k}',
                [
                    str(BIN / 'flower-supernode'),
                    '--insecure',
                    '--superlink',
                    f'127.0.0.1:{self.port}',
                    '--host',
                    '127.0.0.1',
                    '--port',
                    str(p),
                    '--node-config',
                    f'partition-id={k} num-partitions={n_partitions or n_nodes}',
                ],
            )
            _wait_port(p, node, tmp / f'supernode{k}.log')

    def _start(self, name, cmd):
        log = open(self.tmp / f'{name}.log', 'w')
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(p)
        return p

    def run(self, app: Path, config: str, timeout: float):
        return subprocess.run([str(BIN / 'flwr'), 'run', str(app), 'test', '--run-config', config, '--stream'],
                              capture_output=True, text=True, env=self.env, timeout=timeout)

    def logs(self) -> str:
        return '\n'.join(f'--- {f.name}\n{f.read_text()[-3000:]}' for f in sorted(self.tmp.glob('*.log')))

    def stop(self):
        for p in self.procs:                         # each process group: the server/node and the apps it spawned
            try: os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError: pass
        t_end = time.monotonic() + 10
        for p in self.procs:
            try: p.wait(max(0.1, t_end - time.monotonic()))
            except subprocess.TimeoutExpired: pass
            try: os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError: pass
            p.wait()


# one local epoch: the batched path stays within float reassociation of the sequential one (over 5 epochs × 3 rounds a
# chaotic trajectory amplifies it to ~1e-2)
SETTINGS = dict(
    n_clients=K,
    rounds=ROUNDS,
    local_epochs=1,
    model='mlp',
    partition='dirichlet',
    alpha=0.5,
    seed=3,
    centralized=False,
    landscape=True,
    landscape_steps=5,
    curvature=False,
    contributions=True,
)


# the subprocesses run single-threaded: so do the references (conftest)
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def flower_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('flower')
    store = tmp / 'fedland.db'
    cfg = ' '.join(
        f'{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}'
        for k, v in SETTINGS.items()
    )
    cfg += f' store={json.dumps(str(store))} node-timeout=120.0 round-timeout=300.0'
    fed = Federation(tmp, K)
    try:
        t0 = time.perf_counter()
        r = fed.run(ROOT / 'flower_app', cfg, timeout=600)
        seconds = time.perf_counter() - t0
        logs = fed.logs()
    finally:
        fed.stop()
    assert all(p.poll() is not None for p in fed.procs), 'a Flower process survived stop()'
    assert r.returncode == 0 and 'finished' in r.stdout, (
        f'flwr run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n{logs}'
    )
    exp = experiment_from_config({**SETTINGS, 'store': str(store)})
    print(f'\nFlower deployment ({K} SuperNodes, {ROUNDS} rounds): flwr run took {seconds:.1f} s')
    return exp, r.stdout


def test_app_config_defaults_are_the_experiment_defaults():
    "Every Experiment field the Flower app's pyproject lists has the Experiment's default ('' is none or empty)."
    import tomllib
    from dataclasses import fields
    from fedland.experiment import Experiment
    cfg = tomllib.loads((ROOT / 'flower_app' / 'pyproject.toml').read_text())['tool']['flwr']['app']['config']
    d = Experiment()
    for f in fields(Experiment):
        if f.name not in cfg or f.name in ('store',): continue
        want = getattr(d, f.name)
        got = cfg[f.name]
        if got == '': assert want in (None, [], ''), f.name
        else: assert got == want, (f.name, got, want)


def test_store_holds_every_round_and_client(flower_run):
    exp, _ = flower_run
    st = Store(exp.store)
    try:
        row = st.table('experiments', exp.id)
        assert row.status.tolist() == ['finished'] and json.loads(row.config.iloc[0])['engine'] == 'flower'
        cr = st.table('client_rounds', exp.id)
        assert len(cr) == ROUNDS * K
        assert sorted(zip(cr['round'], cr.client)) == [(r, k) for r in range(1, ROUNDS + 1) for k in range(K)]
        rr = st.query("SELECT round FROM rounds WHERE experiment_id = ? AND setting = 'federated'", (exp.id,))
        assert sorted(rr['round']) == list(range(ROUNDS + 1))
        assert st.counts()['landscapes'] == 1 and st.counts()['contributions'] > 0
    finally:
        st.close()


def test_final_global_model_matches_in_process_engine(flower_run):
    exp, _ = flower_run
    res = run_experiment(exp, progress=False)          # engine='flower': reloads the distributed run from the store
    ds, part, net = prepare(exp)
    seq = run_federated(net, ds, part, exp.fed_config(), batched=False, progress=False)
    dist, ref = torch.stack(res.history.global_params), torch.stack(seq.global_params)
    diff = (dist - ref).abs().max().item()
    print(f'\nmax |θ_flower − θ_in-process| over all rounds: {diff:.3g} (sequential client updates)')
    # same code, same seeds, bytes on the wire: bit-identical
    assert torch.equal(dist, ref), f'global models differ by {diff}'
    local = run_experiment(
        Experiment(**{**SETTINGS, 'engine': 'local', 'store': str(Path(exp.store).with_name('local.db'))}),
        progress=False,
    )
    bdiff = (torch.stack(local.history.global_params) - dist).abs().max().item()
    print(f'max |θ_flower − θ_local(batched)|: {bdiff:.3g}')
    assert bdiff < 1e-4                                # the batched in-process path differs only by float reassociation
    assert abs(local.history.rounds.test_acc.iloc[-1] - res.history.rounds.test_acc.iloc[-1]) < 0.01


def test_landscape_analysis_runs_on_the_distributed_run(flower_run):
    exp, _ = flower_run
    res = run_experiment(exp, progress=False)
    ls = res.landscape
    assert ls.client_loss.shape == (K, 5, 5)
    total = np.tensordot(res.partition.weights, ls.client_loss, axes=1)
    np.testing.assert_allclose(total, ls.loss, rtol=1e-5, atol=1e-6)    # global = Σ p_k L_k
    g = res.history.global_model()
    ds, part = res.dataset, res.partition
    fresh = evaluate_grid(
        prepare(exp)[2],
        random_plane(g, seed=0),
        ds.x_train,
        ds.y_train,
        client_ids(part, ds.n_train),
        ds.x_test,
        ds.y_test,
        steps=3,
        span=0.5,
        progress=False,
    )
    assert np.isfinite(fresh.loss).all() and fresh.client_loss.shape == (K, 3, 3)
    assert {f'client {k}' for k in range(K)} <= set(ls.points)


def test_run_notebook_analyses_the_distributed_run(flower_run, tmp_path):
    exp, _ = flower_run
    params = {**SETTINGS, 'engine': 'flower', 'store': exp.store}
    pf = tmp_path / 'params.json'
    pf.write_text(json.dumps(params))
    out = tmp_path / 'out.ipynb'
    r = subprocess.run(
        [
            sys.executable,
            '-m',
            'papermill',
            str(ROOT / 'nbs' / 'run.ipynb'),
            str(out),
            '-f',
            str(pf),
            '--no-progress-bar',
        ],
        capture_output=True,
        text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert exp.id in text and f'{exp.name}' in text and exp.name.endswith('-flower')


def test_missing_supernode_times_out_with_the_missing_client(tmp_path):
    store = tmp_path / 'fedland.db'
    fed = Federation(tmp_path, 2, n_partitions=3)      # 2 of 3 clients
    try:
        cfg = ("n_clients=3 rounds=1 model='mlp' centralized=false landscape=false curvature=false contributions=false "
               f"store={json.dumps(str(store))} node-timeout=40.0")
        r = fed.run(ROOT / 'flower_app', cfg, timeout=300)
    finally:
        fed.stop()
    st = Store(str(store))
    try:
        rows = st.table('experiments')
        assert rows.status.tolist() == ['failed'] and 'no SuperNode serves clients [2]' in rows.error.iloc[0], (
            r.stdout[-2000:],
            fed.logs(),
        )
        assert st.counts()['client_rounds'] == 0
    finally:
        st.close()
