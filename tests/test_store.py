"""The experiment store on SQLite and a real PostgreSQL server: same schema, same rows, concurrent writers."""
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from fedland.experiment import Experiment, run_experiment
from fedland.store import TABLES, Store, StoreError, load_runs

QUICK = dict(model='mlp', rounds=2, landscape_steps=5, curvature_probes=2)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run each test (and the writers it starts) in its tmp_path: a PostgreSQL store keeps its artifacts in
    ./runs/artifacts, and a run finding another session's artifacts there would reuse them instead of training."""
    monkeypatch.chdir(tmp_path)


def _schema(st):
    return {t: list(st.table(t).columns) for t in TABLES}


def test_same_schema_and_rows_sqlite_and_postgres(tmp_path, postgres):
    # values with intervals in the valuations table
    sampled = dict(n_clients=4, valuation='sampled', valuation_budget=1)
    a = run_experiment(Experiment(**QUICK, **sampled, store=str(tmp_path / 'a.db')), progress=False)
    b = run_experiment(Experiment(**QUICK, **sampled, store=postgres.url), progress=False)
    assert a.experiment.id == b.experiment.id
    sa, sb = Store(tmp_path / 'a.db'), Store(postgres.url)
    assert _schema(sa) == _schema(sb)
    for t in ('rounds', 'client_rounds', 'curvature', 'contributions', 'valuations'):
        x, y = sa.table(t), sb.table(t)
        assert len(x) == len(y) > 0, t
        num = x.select_dtypes('number').columns
        pd.testing.assert_frame_equal(
            x[num].reset_index(drop=True), y[num].reset_index(drop=True), check_dtype=False, atol=1e-9
        )
    assert load_runs(postgres.url)['experiments'].status.tolist() == ['finished']
    v = sb.table('valuations')
    tot = v[(v.method == 'sampled_shapley') & v['round'].isna()]
    assert len(tot) == 4 and (tot.lo < tot.value).all() and (tot.value < tot.hi).all()
    # the explorer reads both alike: every view of the run draws the same figure from either store
    from fedland.explorer import VIEWS, Explorer
    ea, eb = Explorer(sa), Explorer(sb)
    for view in VIEWS:
        if view == 'compare': continue
        fa, fb = ea.figure(a.experiment.id, view), eb.figure(a.experiment.id, view)
        assert fa.layout.title.text == fb.layout.title.text and len(fa.data) == len(fb.data), view
    assert len(eb.compare([b.experiment.id])[1]) == 1
    sa.close()
    sb.close()


def test_old_store_gains_the_interval_columns(tmp_path):
    import sqlite3
    path = tmp_path / 'old.db'
    con = sqlite3.connect(path)   # a valuations table as fedland wrote it before values had intervals
    con.execute('CREATE TABLE valuations (experiment_id TEXT, method TEXT, metric TEXT, round INTEGER, client INTEGER, '
                'value DOUBLE PRECISION, se DOUBLE PRECISION, UNIQUE (experiment_id, method, metric, round, client))')
    con.execute("INSERT INTO valuations VALUES ('e', 'exact_shapley', 'accuracy', NULL, 0, 0.25, 0.01)")
    con.commit()
    con.close()
    st = Store(path)
    v = st.table('valuations')
    assert list(v.columns) == TABLES['valuations']
    assert v.value.tolist() == [0.25] and v.se.tolist() == [0.01] and v.lo.isna().all()
    st.put('valuations', [dict(experiment_id='e', method='sampled_shapley', metric='accuracy', round=None, client=0,
                               value=0.2, se=0.01, lo=0.18, hi=0.22)])
    assert st.table('valuations').hi.max() == 0.22
    st.close()


def test_bad_store_urls(tmp_path):
    with pytest.raises(StoreError, match='cannot be opened'):
        Store('postgresql://nobody@127.0.0.1:1/none')
    with pytest.raises(ValueError, match='sqlite:///'):
        Store('mysql://x/y')
    (tmp_path / 'f').write_text('x')
    with pytest.raises(StoreError, match='cannot be opened'):
        Store(tmp_path / 'f' / 'sub' / 'fedland.db')


WRITER = textwrap.dedent("""
    import sys
    from fedland.experiment import Experiment, run_experiment
    store, seed = sys.argv[1], int(sys.argv[2])
    run_experiment(Experiment(model='mlp', rounds=3, seed=seed, landscape=False, curvature=False, centralized=False,
                              store=store), progress=False)
""")


def _parallel_runs(tmp_path, store, n=8):
    w = tmp_path / 'w.py'
    w.write_text(WRITER)
    env = {'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'}
    import os
    env = {**os.environ, **env}
    procs = [
        subprocess.Popen(
            [sys.executable, str(w), store, str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for s in range(n)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
        assert 'locked' not in e
    st = Store(store)
    c = st.counts()
    runs = st.table('experiments')
    st.close()
    return c, runs


def test_eight_parallel_runs_sqlite(tmp_path):
    c, runs = _parallel_runs(tmp_path, str(tmp_path / 'shared.db'))
    assert c['experiments'] == 8 and (runs.status == 'finished').all()
    assert c['rounds'] == 8 * 4 and c['client_rounds'] == 8 * 3 * 10


def test_eight_parallel_runs_postgres(tmp_path, postgres):
    st = Store(postgres.url)
    before = st.counts()
    st.close()
    c, runs = _parallel_runs(tmp_path, postgres.url)
    assert c['experiments'] - before['experiments'] == 8
    assert c['rounds'] - before['rounds'] == 8 * 4 and c['client_rounds'] - before['client_rounds'] == 8 * 3 * 10
