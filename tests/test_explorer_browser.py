"""The explorer in a real browser: `fedland explore` starts JupyterLab, and with --app Voilà, on loopback over a store
of two small runs (one with client values); Playwright drives each in the system's Chromium (no browser download).

Each test switches run and view, checks that every figure redraws (its title changes to the new run and view), that
the values view shows every client, and that the browser console has no errors; then it stops the command with
SIGTERM, as a user's Ctrl-C would, and checks that the server has gone.

    FEDLAND_SCREENSHOTS=nbs/images pytest tests/test_explorer_browser.py   # also writes the docs' screenshots
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
SHOTS = os.environ.get('FEDLAND_SCREENSHOTS')
FEDLAND = Path(sys.executable).parent / 'fedland'   # the command the README's install puts in the venv
# (view, what its title says after the run's name): each view must redraw to its own title
VIEW_TITLES = [('client metrics', 'train_loss per round'), ('landscape', 'loss (log10)'),
               ('rounds', 'the rounds on the landscape: round 3'), ('values', 'client values'),
               ('value matrix', 'reconstruction_shapley gained per round'),
               ('curvature', 'curvature share against data share')]
K = 4


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    "A store of two runs: Dirichlet clients with exact and reconstruction values, IID clients without values."
    from fedland.experiment import Experiment, run_experiment
    db = tmp_path_factory.mktemp('explore') / 'fedland.db'
    small = dict(model='mlp', n_clients=K, rounds=3, landscape_steps=7, curvature_probes=2, store=str(db))
    valued = run_experiment(Experiment(**small, valuation='exact', valuation_seeds=2, valuation_every=1),
                            progress=False)
    plain = run_experiment(Experiment(**small, partition='iid', valuation='none'), progress=False)
    return db, valued.experiment.name, plain.experiment.name


@pytest.fixture(scope='module')
def browser():
    "The system's Chromium under Playwright; without one the tests skip (and fail under CI=true, which installs it)."
    if CHROMIUM is None:
        if os.environ.get('CI'): pytest.fail('Chromium is not installed; .ci/run installs it')
        pytest.skip('no Chromium here (Debian: apt install chromium)')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=['--no-sandbox', '--disable-gpu', '--disable-background-networking'])
        yield b
        b.close()


def answers(port: int) -> bool:
    "Whether something accepts connections on 127.0.0.1:port."
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(('127.0.0.1', port)) == 0


def start(db: Path, *args) -> tuple:
    "Run `fedland explore DB --port 0 ARGS` as a user would; return (process, url, port) once the server answers."
    log = open(db.parent / f"server{'-app' if args else ''}.log", 'w')
    p = subprocess.Popen([str(FEDLAND), 'explore', str(db), '--port', '0', *args], stdout=subprocess.PIPE,
                         stderr=log, text=True, start_new_session=True)
    said = ''
    for line in p.stdout:
        said += line
        if 'Ctrl-C' in line: break
    m = re.search(r'open (http://127\.0\.0\.1:(\d+)/\S*token=(\S+))', said)
    assert m, f'fedland explore did not say where it listens:\n{said}'
    url, port, token = m.group(1), int(m.group(2)), m.group(3)
    assert f'listening on 127.0.0.1 port {port} only, token {token}' in said, said
    for _ in range(240):
        if answers(port): return p, url, port
        assert p.poll() is None, f'the server exited ({p.returncode}); its log: {(db.parent / log.name).read_text()}'
        time.sleep(0.25)
    raise AssertionError(f'nothing answers on port {port} after 60 s')


def stop(p: subprocess.Popen, port: int):
    "SIGTERM to the command (as Ctrl-C): it stops its server, and nothing answers on the port afterwards."
    try:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
        for _ in range(40):
            if not answers(port): break
            time.sleep(0.25)
        assert not answers(port), f'port {port} still answers after the command stopped'
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)   # whatever is left of its process group
        except ProcessLookupError: pass


def watch(page) -> dict:
    "Record the page's console errors, uncaught exceptions and failed requests."
    seen = {'console': [], 'exceptions': [], 'failed': []}
    page.on('console', lambda m: seen['console'].append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: seen['exceptions'].append(str(e)))
    page.on('requestfailed', lambda r: seen['failed'].append(r.url))
    return seen


def assert_clean(seen: dict):
    ("No uncaught exception, no failed request to the server, and no console error but those of requests to other "
     "hosts (Voilà's template links Font Awesome from a CDN, which a machine without internet cannot reach).")
    assert not seen['exceptions'], seen['exceptions']
    local = [u for u in seen['failed'] if u.startswith('http://127.0.0.1')]
    assert not local, f'requests to the server failed: {local}'
    external = [u for u in seen['failed'] if not u.startswith('http://127.0.0.1')]
    errors = [t for t in seen['console'] if not (external and t.startswith('Failed to load resource'))]
    assert not errors, f'console errors: {errors}'


def control(page, name: str):
    "The <select> of the widget control labelled `name`."
    return page.locator('.widget-dropdown', has=page.locator('label', has_text=name)).locator('select')


def wait_title(page, text: str, timeout: float = 90_000):
    "Wait until a figure's title contains `text` (a figure redrawn for the new choice)."
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.includes(t))",
        arg=text, timeout=timeout)


def check_views(page, valued: str, plain: str, shot: str | None = None):
    "Switch run and every view; each figure must redraw to its own title; the values view shows every client."
    wait_title(page, 'test accuracy')   # the notebook ran: the explorer shows its first figure
    labels = control(page, 'run').locator('option').all_text_contents()
    control(page, 'run').select_option(label=next(x for x in labels if x.startswith(valued)))
    wait_title(page, f'{valued}: test accuracy')
    for view, title in VIEW_TITLES:
        control(page, 'view').select_option(view)
        wait_title(page, f'{valued}: {title}')
        if view == 'values':
            ticks = page.locator('.js-plotly-plot .xtick text').all_text_contents()
            assert sorted(set(ticks)) == [f'client {k}' for k in range(K)], ticks
            if shot: page.screenshot(path=shot)
    control(page, 'view').select_option('accuracy')
    control(page, 'run').select_option(label=next(x for x in labels if x.startswith(plain)))
    wait_title(page, f'{plain}: test accuracy')
    control(page, 'view').select_option('compare')
    wait_title(page, 'test accuracy of 2 runs')
    wait_title(page, 'global landscapes of 2 runs')
    table = page.locator('table.dataframe').first.text_content()
    assert valued in table and plain in table, table


@contextlib.contextmanager
def served(browser, db: Path, *args, height: int = 820):
    ("`fedland explore DB ARGS` and a browser page open on it, with what the page logs; on a failure a screenshot "
     "beside the store shows what the browser showed; the command is stopped after.")
    p, url, port = start(db, *args)
    page = browser.new_page(viewport={'width': 1200, 'height': height})
    seen = watch(page)
    try:
        page.goto(url)
        yield page, seen
    except Exception:
        page.screenshot(path=str(db.parent / f"failed{'-app' if args else ''}.png"))
        raise
    finally: stop(p, port)


def test_jupyterlab(store, browser):
    "`fedland explore STORE`: JupyterLab opens the generated notebook; running it shows the explorer."
    db, valued, plain = store
    with served(browser, db) as (page, seen):
        page.get_by_text('Python 3 (ipykernel) | Idle').wait_for(timeout=90_000)   # the notebook's kernel is up
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.locator('.lm-Menu-itemLabel', has_text='Run All Cells').first.click()
        check_views(page, valued, plain, shot=str(Path(SHOTS) / 'explorer-values.png') if SHOTS else None)
        assert_clean(seen)


def test_voila_app(store, browser):
    "`fedland explore STORE --app`: a Voilà app with the controls and figures and no code, following the store."
    db, valued, plain = store
    with served(browser, db, '--app', height=1000) as (page, seen):
        wait_title(page, 'test accuracy')
        assert not page.get_by_text('from fedland.explorer import Explorer').is_visible()   # no code shown
        check_views(page, valued, plain)
        if SHOTS: page.screenshot(path=str(Path(SHOTS) / 'explorer-compare.png'))
        # a run written while the app is open appears without a reload (the widget looks every 5 s)
        from fedland.experiment import Experiment, run_experiment
        run_experiment(Experiment(model='mlp', n_clients=K, rounds=1, seed=1, valuation='none', landscape=False,
                                  curvature=False, centralized=False, store=str(db)), progress=False)
        for _ in range(120):
            if control(page, 'run').locator('option').count() == 3: break
            time.sleep(0.5)
        assert control(page, 'run').locator('option').count() == 3, 'the new run did not appear'
        assert_clean(seen)


def test_bad_input_is_named(store, tmp_path):
    "A missing store, an empty store and a busy port: exit status 2 and a message, and no server started."
    from fedland.store import Store
    Store(tmp_path / 'empty.db').close()
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        busy = s.getsockname()[1]
        cases = {(str(tmp_path / 'missing.db'),): 'does not exist',
                 (str(tmp_path / 'empty.db'),): 'holds no experiments',
                 (str(store[0]), '--port', str(busy)): f'port {busy} on 127.0.0.1 is busy'}
        for args, says in cases.items():
            r = subprocess.run([str(FEDLAND), 'explore', *args], capture_output=True, text=True, timeout=120)
            assert r.returncode == 2 and says in r.stderr, (args, r.returncode, r.stderr)
    assert not (tmp_path / 'missing.db').exists()
