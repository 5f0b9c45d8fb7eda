"""The main job end to end through papermill, its documented parameters, and the `fedland sweep` command."""
import json
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from fedland.experiment import Experiment
from fedland.store import Store

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / 'run.ipynb'
PM = [sys.executable, '-m', 'papermill']


def _outputs(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    return [o for c in nb['cells'] for o in c.get('outputs', [])]


def test_parameters_mirror_experiment_and_are_documented():
    r = subprocess.run(PM + [str(NB), '/tmp/x.ipynb', '--help-notebook'], capture_output=True, text=True, check=True)
    out = r.stdout + r.stderr
    assert 'Unable to parse' not in out
    import re
    blocks = dict(re.findall(r'^  (\w+): (.*?)(?=^  \w+: |\Z)', out, flags=re.S | re.M))
    for f in fields(Experiment):
        assert f.name in blocks, f'{f.name} is not a documented parameter of run.ipynb'
        help_text = blocks[f.name].split(')', 1)[-1].strip()
        assert '(default' in blocks[f.name] and len(help_text) > 5, f'{f.name} has no help: {blocks[f.name]!r}'


def test_main_job_end_to_end(tmp_path):
    out = tmp_path / 'out.ipynb'
    store = tmp_path / 'fedland.db'
    t0 = time.perf_counter()
    subprocess.run(
        PM + [str(NB), str(out), '-p', 'alpha', '0.5', '-p', 'store', str(store), '--no-progress-bar'],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
    )
    seconds = time.perf_counter() - t0
    outs = _outputs(out)
    html = ''.join(''.join(o.get('data', {}).get('text/html', '')) for o in outs)
    plots = html.count('Plotly.newPlot')
    print(f'papermill nbs/run.ipynb -p alpha 0.5: {seconds:.1f} s, {plots} plotly figures, notebook '
          f'{out.stat().st_size/1e3:.0f} kB')
    assert plots >= 6, plots        # partition, accuracy, landscape, per-client landscapes, loss share, curvature share
    assert 'cdn.plot.ly' in html or 'plotly-' in html       # notebook_connected: plotly.js from its CDN, not embedded
    assert out.stat().st_size < 2_000_000
    assert not any(o.get('output_type') == 'error' for o in outs)
    warned = [o['text'] for o in outs if o.get('output_type') == 'stream' and 'Warning' in ''.join(o['text'])]
    assert not warned, warned                                   # no warnings in the saved outputs
    assert 'addFrames' in html                                   # the round-by-round figure with its frames
    st = Store(store)
    c = st.counts()
    # federated rounds 0..30, centralized epochs 0..150
    assert (
        c['experiments'] == 1
        and c['rounds'] == (30 + 1) + (30 * 5 + 1)
        and c['client_rounds'] == 30 * 10
        and c['landscapes'] == 1
    )
    assert st.table('experiments').status.iloc[0] == 'finished'
    st.close()


def test_sweep_cli_skips_finished_and_survives_divergence(tmp_path):
    store, outdir = tmp_path / 's.db', tmp_path / 'nb'
    common = ['--set', 'rounds=2', '--set', 'model=mlp', '--set', 'landscape=false', '--set', 'curvature=false',
              '--store', str(store), '--out', str(outdir), '--notebook', str(NB), '--jobs', '2']
    fedland = [sys.executable, '-c', 'import sys; from fedland.cli import main; sys.exit(main())']
    r = subprocess.run(fedland + ['sweep', 'lr=0.05,80.0'] + common, capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stdout + r.stderr          # one run failed
    assert '1 finished, 0 skipped, 1 failed' in r.stdout
    st = Store(store)
    ex = st.table('experiments').set_index('name')
    st.close()
    assert sorted(ex.status) == ['failed', 'finished']
    assert 'diverged' in ex[ex.status == 'failed'].error.iloc[0]
    assert len(list(outdir.glob('*.ipynb'))) == 2
    r2 = subprocess.run(fedland + ['sweep', 'lr=0.05,0.1'] + common, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0 and '1 finished, 1 skipped, 0 failed' in r2.stdout, r2.stdout + r2.stderr


@pytest.mark.parametrize(
    'args,msg',
    [
        (['sweep', 'alpha=0,0.5'], 'alpha=0'),
        (['sweep', 'alpah=0.5'], 'unknown parameter'),
        (['sweep', 'rounds=-1'], 'rounds=-1'),
        (['sweep', 'n_clients=ten'], 'n_clients must be an int'),
        (['sweep', 'lr=0.1', '--jobs', '0'], 'jobs=0'),
        (['sweep', 'lr=0.1', '--store', 'postgresql://x@127.0.0.1:1/none'], 'cannot be opened'),
    ],
)
def test_sweep_bad_input(tmp_path, args, msg):
    from fedland.cli import main
    import io, contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            args
            + ['--out', str(tmp_path), '--notebook', str(NB)]
            + ([] if '--store' in args else ['--store', str(tmp_path / 's.db')])
        )
    assert code == 2 and msg in err.getvalue(), err.getvalue()


STUDY = ROOT / 'nbs' / 'study.ipynb'


def test_study_notebook_small(tmp_path):
    """The 2×2 study through papermill at a small size: four runs into one store, every figure drawn, the rounds figure
    with one frame per round, no warnings; a second run reloads them."""
    out, store = tmp_path / 'study.ipynb', tmp_path / 'fedland.db'
    args = dict(
        model='mlp',
        n_clients=5,
        rounds=3,
        local_epochs=1,
        landscape_steps=7,
        valuation_every=1,
        progress=False,
        store=str(store),
    )
    cmd = PM + [str(STUDY), str(out), '--no-progress-bar']
    for k, v in args.items(): cmd += ['-p', k, str(v)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    first = time.perf_counter() - t0
    outs = _outputs(out)
    html = ''.join(''.join(o.get('data', {}).get('text/html', '')) for o in outs)
    assert not any(o.get('output_type') == 'error' for o in outs)
    assert not [o for o in outs if o.get('output_type') == 'stream' and 'Warning' in ''.join(o['text'])]
    # accuracy, 4 landscapes (1 figure), 4 client figures, curvature shares, values, 4 value bars, rounds
    assert html.count('Plotly.newPlot') >= 12, html.count('Plotly.newPlot')
    nb = json.loads(out.read_text())
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert 'non-IID, unbalanced: test accuracy' in text and 'IID, balanced: test accuracy' in text
    st = Store(store)
    ex = st.table('experiments')
    assert len(ex) == 4 and set(ex.status) == {'finished'}
    cfgs = [json.loads(c) for c in ex.config]
    assert sorted(c.get('partition', 'dirichlet') for c in cfgs) == ['dirichlet', 'dirichlet', 'iid', 'iid']
    st.close()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    again = time.perf_counter() - t0
    print(f'study (small): {first:.1f} s from an empty store, {again:.1f} s reloading')
