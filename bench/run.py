"""fedland against the tools researchers would otherwise use, measured side by side in one run.

Prints a table and writes one JSON object (--json FILE). Ratios, not absolute times: every ratio is the median of
`--reps` (default 3) alternated repetitions — ours, theirs, ours, theirs, … after one warm-up of each — with its
min–max.
Sections (the default model, cnn1d, first):
  machine    dense matmul GFLOP/s (the compute ceiling at the start; every floor comparison measures it again beside
             each of its timed repetitions, since this rate drifts with the host's load)
  fedavg     seconds per round of the same Experiment (the defaults: 30 rounds × 5 local epochs in full, 6 rounds with
             --quick) in-process vs on Flower's Simulation Engine (Ray), cnn1d and the digits CNN with 10 clients, the
             MLP with 10 and 100; and the round's compute floor (its FLOPs ÷ matmul GFLOP/s)
  compiled   the same in-process rounds eager vs compile=True (torch.compile of the batched local step), cnn1d and
             the MLP
  sequential one client's local_update (the path Flower and FEDn clients and centralized training run): the flat-vector
             update vs the per-tensor dict update it replaced, cnn1d and the MLP, with the results compared bit for bit
  landscape  a filter-normalised plane with the global and 10 client landscapes: evaluate_grid (one pass) vs
             loss-landscapes (one run per data set, identical directions) and vs a plain per-point loop
             (functional_call, per-sample losses reduced per client); MLP, cnn1d, digits CNN, NIID-Bench CNN (on
             random MNIST-sized images)
  curvature  λmax and trace: fedland (Lanczos to PyHessian's tolerance, exact traces) vs PyHessian (power iteration,
             Hutchinson) on the MLP, cnn1d and the digits CNN
  valuation  the exact coalition game (K = 8, MLP, 20 rounds × 1 epoch; K = 4…10 in full) and the reconstruction's
             overhead on the default experiment's training (K = 8)
  main       papermill nbs/run.ipynb -p alpha 0.5 (wall time, peak RSS)
  scale      1000 clients × 100 rounds (peak RSS, disk)

    python bench/run.py --quick --json bench/results/latest.json
    python bench/run.py --quick --merge --json bench/results/latest.json \
        --skip fedavg landscape curvature valuation main scale   # one section again

Threads are the script's business, side by side: it refuses to start when a thread variable (OMP_NUM_THREADS and the
like) is set in its environment — such a variable reaches every Flower actor, and with it two 1-CPU actors on 2 cores
ran 2 threads each, which made Flower 5-7x slower than its own default. fedland's side runs torch with one thread per
core; Flower runs in each configuration of FLOWER_CONFIGS (CPUs reserved per actor, threads per actor, set in the
environment its Ray actors inherit, for that run only), and its fastest configuration is the one compared. Every
configuration's time is kept
(the sensitivity table), and the JSON records the host, the thread settings of both sides and the environment.
Every repetition lasts at least MIN_REP_SECONDS: a shorter timed call is repeated inside the repetition.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMEXPR_NUM_THREADS',
               'VECLIB_MAXIMUM_THREADS')
FLOWER_CONFIGS = {   # name -> (CPUs reserved per Ray actor, torch threads per actor)
    "1 CPU, 1 thread per actor (Flower's default)": (1, 1),
    '2 CPUs, 2 threads per actor': (2, 2),
    '1 CPU, 2 threads per actor (oversubscribed)': (1, 2),
}
FLWR_RUN = "flwr run on a local simulation SuperLink (Flower's defaults)"
MIN_REP_SECONDS = 1.0   # a repetition shorter than this repeats its call until it is this long
QUIET_BUSY = 0.1        # settle() waits until under this share of the cores is busy


def thread_policy() -> dict:
    "Refuse inherited thread variables (they would oversubscribe Flower's actors); fedland runs one thread per core."
    inherited = {v: os.environ[v] for v in THREAD_VARS if v in os.environ}
    if inherited:
        raise SystemExit(f"bench/run.py sets the threads of each side itself; unset {', '.join(inherited)} "
                         "(a thread variable reaches every Flower actor and oversubscribes the cores)")
    torch.set_num_threads(os.cpu_count())
    flower = {n: dict(cpus=c, threads=t) for n, (c, t) in FLOWER_CONFIGS.items()}
    flower[FLWR_RUN] = dict(cpus="Flower's default", threads="torch's default (no thread variable in its environment)")
    return {'fedland_torch_threads': torch.get_num_threads(), 'flower': flower,
            'environment': {v: os.environ.get(v) for v in THREAD_VARS}}


def cpu_model() -> str:
    try:
        return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def matmul_gflops(n=2048, reps=20):
    ("The machine's dense matmul rate (2048² float32): the best of `reps` products. The floor is what the cores can do "
     "at best, and the best of many is stable where a median of five moved with the host's load.")
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts) / 1e9


CEILING_PRODUCTS = 5   # matmul products in the ceiling probe beside each timed repetition


def ceiling_now() -> float:
    ("The matmul rate now (the best of CEILING_PRODUCTS products), measured beside every timed repetition that is "
     "compared with the floor: on a shared 2-core VM one probe at the start of a run read 239 and, five hours later, "
     "332 GFLOP/s, so a floor from it did not reproduce between runs.")
    return matmul_gflops(reps=CEILING_PRODUCTS)


def vs_floor(seconds: list, ceilings: list, flops: float) -> dict:
    "Each repetition's seconds ÷ its floor (the FLOPs at the ceiling measured beside it): median and min–max."
    return spread([s * c * 1e9 / flops for s, c in zip(seconds, ceilings)])


def spread(xs) -> dict:
    "Median and min–max of repetitions."
    xs = [float(x) for x in xs]
    return dict(median=float(np.median(xs)), min=min(xs), max=max(xs), reps=xs)


def calls_per_rep(f, min_seconds: float = MIN_REP_SECONDS) -> int:
    "How many calls of f make one repetition of at least `min_seconds` (from one timed call)."
    t = time.perf_counter()
    f()
    return max(1, int(np.ceil(min_seconds / max(time.perf_counter() - t, 1e-6))))


def busy_fraction(window: float = 0.5) -> float:
    "The share of all cores busy (outside this sleeping process) over `window` seconds, from /proc/stat."
    def ticks():
        v = [int(x) for x in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
        return v[3] + v[4], sum(v)   # idle + iowait, all
    (i0, t0), _, (i1, t1) = ticks(), time.sleep(window), ticks()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


SETTLED = []   # seconds each settle() waited, recorded in the JSON


def settle(busy: float = QUIET_BUSY, timeout: float = 60.0) -> float:
    ("Wait until the machine is quiet (under `busy` of its cores busy over half a second) before a timed side, at most "
     "`timeout` seconds; returns the wait. A Flower run's Ray actors and `flwr run`'s simulation process take seconds "
     "to exit after it returns: fedland's MLP round timed straight after one took 0.065–0.12 s against 0.044 s quiet.")
    if not Path('/proc/stat').exists(): return 0.0
    t = time.perf_counter()
    while busy_fraction() > busy and time.perf_counter() - t < timeout: pass
    SETTLED.append(time.perf_counter() - t)
    return SETTLED[-1]


def steady_rounds(run, min_seconds: float = MIN_REP_SECONDS) -> tuple:
    ("One repetition of a federated run: `run()` (a Result) again until its steady rounds (2..R: round 1 includes "
     "Flower's node discovery; row 0 is round 0, the initial evaluation) add up to `min_seconds`; the mean seconds "
     "per steady round and the last Result.")
    settle()
    total, n = 0.0, 0
    while total < min_seconds:
        res = run()
        steady = res.history.rounds.seconds.iloc[2:]
        total, n = total + float(steady.sum()), n + len(steady)
    return total / n, res


def alternate(fns: dict, reps: int, warm: bool = True, ceiling: bool = False) -> dict:
    ("Seconds per call of each function over `reps` alternated repetitions of ≥ MIN_REP_SECONDS (after a warm-up); "
     "with `ceiling`, also the matmul rate after each repetition (key 'ceiling').")
    if warm:
        for f in fns.values(): f()
    n = {k: calls_per_rep(f) for k, f in fns.items()}
    out = {k: [] for k in fns} | ({'ceiling': []} if ceiling else {})
    for _ in range(reps):
        settle()
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(n[k]): f()
            out[k].append((time.perf_counter() - t) / n[k])
        if ceiling: out['ceiling'].append(ceiling_now())
    return out


def ratio(theirs, ours) -> dict:
    "Per-repetition ratios theirs/ours (paired by repetition), median and min–max."
    return spread([b / a for a, b in zip(ours, theirs)])


def _fmt(r, unit='×') -> str:
    return f"{r['median']:.2f}{unit} [{r['min']:.2f}–{r['max']:.2f}]"


# ---------------------------------------------------------------- fedavg
def round_flops(exp):
    ("FLOPs of one federated round: forward+backward of every trained sample, forward of every evaluation (torch's "
     "flop counter).")
    from torch.utils.flop_counter import FlopCounterMode
    from fedland.experiment import prepare
    ds, part, net = prepare(exp)
    x = ds.x_train[:1]
    with FlopCounterMode(display=False) as fc:
        net(x).sum().backward()
    train1 = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    fwd1 = fc.get_total_flops()
    n_train = sum(len(ix) for ix in part) * exp.local_epochs
    # θ_g on client data, θ_k on held-out, θ_g on test
    n_eval = sum(len(ix) for ix in part) + sum(len(h) for h in part.holdout) + ds.n_test
    return train1 * n_train + fwd1 * n_eval


def fedavg_experiment(model, n_clients, rounds, store, engine='local'):
    "The benchmark's FedAvg experiment: the default settings, no analysis, `rounds` rounds of `n_clients` clients."
    from fedland.experiment import Experiment
    return Experiment(
        model=model,
        dataset='digits' if model == 'cnn' else 'mnist1d',
        n_clients=n_clients,
        rounds=rounds,
        seed=0,
        valuation='none',
        centralized=False,
        landscape=False,
        curvature=False,
        contributions=False,
        engine=engine,
        store=store,
    )


def _flower_run(exp, cpus: int = 1, threads: int = 1):
    ("The experiment's rounds on Flower's Simulation Engine (fedland's "
     "ClientApp on every virtual SuperNode); returns its Result.")
    import logging
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
    from flwr.supercore.logger import update_console_handler
    from fedland.experiment import run_experiment
    from fedland.flower import FlowerClients, make_client_app
    box, app = {}, ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        box['res'] = run_experiment(exp, progress=False, clients=FlowerClients(grid, exp))

    update_console_handler(level=logging.WARNING)
    os.environ.update({v: str(threads) for v in THREAD_VARS})   # Ray's actors inherit the driver's environment
    try:                                                         # (Flower sets Ray's runtime_env itself)
        run_simulation(app, make_client_app(exp), num_supernodes=exp.n_clients,
                       backend_config={'client_resources': {'num_cpus': cpus, 'num_gpus': 0.0},
                                       'init_args': {'num_cpus': os.cpu_count(), 'logging_level': 'ERROR',
                                                     'log_to_driver': False}})
    finally:
        for v in THREAD_VARS: os.environ.pop(v, None)
    if 'res' not in box: raise RuntimeError('the Flower simulation did not finish the experiment')
    return box['res']


def _toml(v) -> str:
    "A run-config value as TOML (None as the empty string the app reads as None)."
    if v is None: return '""'
    if isinstance(v, bool): return str(v).lower()
    if isinstance(v, (list, tuple)): return json.dumps(json.dumps(v))
    return json.dumps(v) if isinstance(v, str) else repr(v)


def _flwr_run(exp):
    "The experiment's rounds through `flwr run` on a local simulation SuperLink (Flower's CLI path: its own SuperLink, "
    "simulation process and Ray actors with Flower's default resources); returns the stored Result."
    import tomllib
    from fedland.experiment import run_experiment
    from fedland.flower import experiment_from_config
    app = ROOT / 'flower_app'
    keys = tomllib.loads((app / 'pyproject.toml').read_text())['tool']['flwr']['app']['config']
    cfg = {k: getattr(exp, k.replace('-', '_')) for k in keys if hasattr(exp, k.replace('-', '_'))}
    home = tempfile.mkdtemp()   # a Flower home of its own: its local SuperLink is this run's, and is stopped after
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS} | {'FLWR_HOME': home}
    bindir = Path(sys.executable).parent
    env['PATH'] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    try:
        r = subprocess.run([str(bindir / 'flwr'), 'run', str(app), 'local', '--stream',
                            '--federation-config', f'num-supernodes={exp.n_clients}',
                            '--run-config', ' '.join(f'{k}={_toml(v)}' for k, v in cfg.items())],
                           capture_output=True, text=True, env=env, timeout=3600)
    finally:
        for pid in (d.name for d in Path('/proc').iterdir() if d.name.isdigit()):
            try: cmd = (Path('/proc') / pid / 'cmdline').read_bytes().decode(errors='replace')
            except OSError: continue
            if home in cmd:   # the local SuperLink (its superexec exits with its parent)
                try: os.kill(int(pid), 15)
                except ProcessLookupError: pass
    if r.returncode != 0: raise RuntimeError(f'flwr run failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}')
    return run_experiment(experiment_from_config(cfg), progress=False)   # reloads the stored run


def bench_fedavg(model, n_clients, rounds, reps):
    ("Steady-state seconds per round (rounds 2..R; round 1 includes Flower's node discovery), alternated repetitions "
     "of whole runs, each side's repetition ≥ MIN_REP_SECONDS of steady rounds (a short run is repeated).")
    from fedland.experiment import run_experiment
    configs = [*FLOWER_CONFIGS, FLWR_RUN]
    per = {'fedland': [], **{c: [] for c in configs}}
    accs, ceilings = {}, []
    exp = lambda engine: fedavg_experiment(model, n_clients, rounds, f'{tempfile.mkdtemp()}/{engine}.db', engine)
    for i in range(reps + 1):                     # repetition 0 is the warm-up of every side
        # a store (and artifacts folder) for every run: nothing is reloaded
        ours, res = steady_rounds(lambda: run_experiment(exp('local'), progress=False))
        ceiling = ceiling_now()
        theirs = {c: steady_rounds(lambda: _flower_run(exp('flower'), *FLOWER_CONFIGS[c])) for c in FLOWER_CONFIGS}
        if i == 0: continue  # (`flwr run` starts fresh processes every time: no warm-up to discard)
        theirs[FLWR_RUN] = steady_rounds(lambda: _flwr_run(exp('flower')))
        per['fedland'].append(ours)
        ceilings.append(ceiling)
        for c, (s, _) in theirs.items(): per[c].append(s)
        accs = dict(acc_fedland=float(res.history.rounds.test_acc.iloc[-1]),
                    acc_flower=float(next(iter(theirs.values()))[1].history.rounds.test_acc.iloc[-1]))
    best = min(configs, key=lambda c: np.median(per[c]))
    flops = round_flops(fedavg_experiment(model, n_clients, rounds, 'unused.db'))
    return dict(
        model=model,
        clients=n_clients,
        rounds=rounds,
        seconds_per_round_fedland=spread(per['fedland']),
        seconds_per_round_flower=spread(per[best]),
        flower_config=best,
        speedup=ratio(per[best], per['fedland']),
        **accs,
        flower_configs={
            c: dict(seconds_per_round=spread(per[c]), speedup=ratio(per[c], per['fedland'])) for c in configs
        },
        ceiling_gflops=spread(ceilings),
        floor_seconds_per_round=flops / (float(np.median(ceilings)) * 1e9),
        vs_floor=vs_floor(per['fedland'], ceilings, flops),
    )


def bench_compiled(model, n_clients, rounds, reps):
    ("The same rounds in-process, eager vs `compile=True` (torch.compile of each batched step; compiled once before "
     "timing), seconds per round 2..R.")
    from fedland.experiment import prepare
    from fedland.federated import run_federated
    exp = fedavg_experiment(model, n_clients, rounds, 'unused.db')
    ds, part, net = prepare(exp)
    res = {}
    def go(c):
        h = run_federated(net, ds, part, exp.fed_config(), compile=c, progress=False)
        res[c] = h
    T = alternate({False: lambda: go(False), True: lambda: go(True)}, reps, ceiling=True)   # the warm-up compiles
    per_rep = {c: [t / rounds for t in T[c]] for c in (False, True)}
    flops = round_flops(exp)
    diff = float((torch.stack(res[True].global_params) - torch.stack(res[False].global_params)).abs().max())
    return dict(
        model=model,
        clients=n_clients,
        rounds=rounds,
        seconds_per_round_eager=spread(per_rep[False]),
        seconds_per_round_compiled=spread(per_rep[True]),
        speedup=ratio(per_rep[False], per_rep[True]),
        vs_floor_eager=vs_floor(per_rep[False], T['ceiling'], flops),
        vs_floor_compiled=vs_floor(per_rep[True], T['ceiling'], flops),
        ceiling_gflops=spread(T['ceiling']),
        floor_seconds_per_round=flops / (float(np.median(T['ceiling'])) * 1e9),
        max_abs_diff=diff,
    )


def bench_sequential(model, reps):
    ("One client's local update (3,200 samples, one epoch, momentum and weight decay): the flat-vector path vs the "
     "dict path it replaced (kept as the fallback), with their results compared bit for bit.")
    from fedland.data import load_dataset
    from fedland.models import build_model, param_dict
    from fedland.train import LocalConfig, local_update
    ds = load_dataset('mnist1d')
    X, Y = ds.x_train, ds.y_train
    net = build_model(model, ds.input_shape, 10, seed=0)
    th = param_dict(net)
    idx = np.arange(3200)
    cfg = LocalConfig(lr=0.03, momentum=0.9, weight_decay=5e-4, epochs=1)
    res = {}
    def flat(): res['flat'] = local_update(net, th, X, Y, idx, cfg, seed=0)
    def dicts(): res['dicts'] = local_update(net, th, X, Y, idx, cfg, seed=0, flat=False)
    T = alternate(dict(flat=flat, dicts=dicts), reps)
    steps = res['flat'].steps
    same = all(torch.equal(res['flat'].params[k], res['dicts'].params[k]) for k in th)
    return dict(
        model=model,
        steps=steps,
        ms_per_step_flat=spread([1e3 * t / steps for t in T['flat']]),
        ms_per_step_dicts=spread([1e3 * t / steps for t in T['dicts']]),
        speedup=ratio(T['dicts'], T['flat']),
        bitwise_equal=same,
    )


# ---------------------------------------------------------------- landscape
def _landscape_data(name):
    from fedland.data import load_dataset
    if name in ('mlp', 'cnn1d'):
        ds = load_dataset('mnist1d')
        return ds.x_train, ds.y_train, ds.input_shape, 'MNIST-1D'
    if name == 'cnn':
        ds = load_dataset('digits')
        return ds.x_train, ds.y_train, ds.input_shape, 'digits'
    # NIID-Bench's CNN needs 28×28 images: random ones (offline), the same for every tool
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(4000, 1, 28, 28, generator=g),
        torch.randint(0, 10, (4000,), generator=g),
        (1, 28, 28),
        ('random 1×28×28'),
    )


def bench_landscape(name, steps, reps):
    ("One plane, the global and 10 client landscapes: evaluate_grid "
     "vs loss-landscapes (11 runs) vs a plain per-point loop.")
    import loss_landscapes
    import loss_landscapes.metrics
    from torch.func import functional_call
    from fedland.federated import client_ids
    from fedland.landscape import evaluate_grid, random_plane
    from fedland.models import build_model, param_dict, set_flat, unflatten
    from fedland.partition import partition
    X, Y, shape, data = _landscape_data(name)
    K = 10
    net = build_model(name, shape, 10, seed=0).eval()
    pl = random_plane(net, seed=0)
    like = param_dict(net)
    owner = client_ids(partition(Y, K, 'dirichlet', alpha=0.5, seed=0, holdout=0.2), len(Y))
    xs = np.linspace(-1, 1, steps)
    ours = lambda: evaluate_grid(net, pl, X, Y, owner, steps=steps, progress=False)
    keep = owner >= 0

    def plain():
        L = np.zeros((steps * steps, K))
        with torch.no_grad():
            for i, (b, a) in enumerate((b, a) for b in xs for a in xs):
                p = dict(unflatten(pl.origin + float(a) * pl.d1 + float(b) * pl.d2, like))
                l = F.cross_entropy(functional_call(net, p, (X[keep],)), Y[keep], reduction='none')
                L[i] = torch.zeros(K, dtype=torch.float64).index_add_(0, owner[keep], l.double()).numpy()
        return L

    sets = [keep] + [owner == k for k in range(K)]

    def theirs():
        s0 = copy.deepcopy(net)
        set_flat(s0, pl.origin - pl.d1 - pl.d2)
        e1 = copy.deepcopy(net)
        set_flat(e1, pl.origin + pl.d1 - pl.d2)
        e2 = copy.deepcopy(net)
        set_flat(e2, pl.origin - pl.d1 + pl.d2)
        with torch.no_grad():   # its best configuration: without autograd graphs (its own default builds one per point)
            return [
                loss_landscapes.planar_interpolation(
                    copy.deepcopy(s0), e1, e2, loss_landscapes.metrics.Loss(F.cross_entropy, X[m], Y[m]), steps=steps
                )
                for m in sets
            ]

    from fedland.landscape import ENGINE_CHOICES
    ENGINE_CHOICES.clear()
    # the warm-up call makes auto's choice
    T = alternate(dict(fedland=ours, plain=plain, loss_landscapes=theirs), reps, ceiling=True)
    (engine, probe), = ENGINE_CHOICES.values()
    got, ref, ll = ours(), plain(), theirs()
    nk = np.bincount(owner[keep].numpy(), minlength=K)
    diff_plain = float(np.abs(got.client_loss.reshape(K, -1).T - ref / nk).max())
    # loss-landscapes' point (i, j) is start + i·d1/steps + (j + 1 if i is even else j)·d2/steps (its in-place walk),
    # start = θ − d1 − d2: on our (steps + 1)-point grid over [−1, 1] that is loss[j + 1 if i % 2 == 0 else j, i]
    on_ll = evaluate_grid(net, pl, X, Y, owner, steps=steps + 1, progress=False).loss
    g = np.asarray(ll[0])
    diff_ll = float(
        max(abs(g[i, j] - on_ll[j + 1 if i % 2 == 0 else j, i]) for i in range(steps) for j in range(steps))
    )
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(X[:1])
    flops = fc.get_total_flops() * steps * steps * int(keep.sum())
    return dict(
        model=name,
        data=data,
        points=steps * steps,
        clients=K,
        seconds_fedland=spread(T['fedland']),
        seconds_loss_landscapes=spread(T['loss_landscapes']),
        seconds_plain=spread(T['plain']),
        speedup=ratio(T['loss_landscapes'], T['fedland']),
        speedup_vs_plain=ratio(T['plain'], T['fedland']),
        max_abs_diff=diff_plain,
        max_abs_diff_loss_landscapes=diff_ll,
        engine=engine,
        engine_probe_seconds=probe,
        gflops_fraction=float(np.median([flops / t / 1e9 / c for t, c in zip(T['fedland'], T['ceiling'])])),
        ceiling_gflops=spread(T['ceiling']),
    )


# ---------------------------------------------------------------- curvature
def bench_curvature(name, n_probes, reps):
    "λmax and trace of a trained model on 2000 samples: fedland vs PyHessian, alternated, median of `reps`."
    import pyhessian
    from fedland.curvature import HessianOperator, hutchinson, top_eigenvalues, trace
    from fedland.models import build_model, param_dict
    from fedland.train import LocalConfig, train_centralized
    from fedland.data import load_dataset
    ds = load_dataset('digits' if name == 'cnn' else 'mnist1d')
    net = build_model(name, ds.input_shape, 10)
    r = train_centralized(net, ds, LocalConfig(lr=0.03, momentum=0.9, epochs=5), progress=False)
    with torch.no_grad():
        for k, v in param_dict(net, detach=False).items(): v.copy_(r.params[k])
    net.eval()
    X, Y = ds.x_train[:2000], ds.y_train[:2000]

    def theirs():
        torch.manual_seed(0)
        hc = pyhessian.hessian(net, torch.nn.CrossEntropyLoss(), data=(X, Y), cuda=False)
        samples = hc.trace(maxIter=n_probes, tol=0.0)
        return (
            hc.eigenvalues(top_n=1)[0][0],
            float(np.mean(samples)),
            float(np.std(samples, ddof=1) / np.sqrt(len(samples))),
        )

    def ours():
        op = HessianOperator(net, param_dict(net), X, Y)
        # PyHessian's power iteration also stops at tol 1e-3 (ours: the residual bound, stricter)
        e = top_eigenvalues(op, k=1, m=20, tol=1e-3)
        # exact for piecewise-linear networks
        return float(e.values[0]), trace(net, param_dict(net), X, Y, n_probes=n_probes, seed=0).trace, e.n_hvp

    res = {}
    T = alternate(
        dict(fedland=lambda: res.__setitem__('ours', ours()), pyhessian=lambda: res.__setitem__('theirs', theirs())),
        reps,
    )
    lam, tr, n_hvp = res['ours']
    lam_p, tr_p, se_p = res['theirs']
    # fedland's Hutchinson with as many probes
    tr_h = hutchinson(net, param_dict(net), X, Y, n_probes=n_probes, seed=0).trace
    return dict(
        model=name,
        seconds_fedland=spread(T['fedland']),
        seconds_pyhessian=spread(T['pyhessian']),
        speedup=ratio(T['pyhessian'], T['fedland']),
        lambda_rel_diff=abs(lam - lam_p) / abs(lam_p),
        trace_rel_diff=abs(tr - tr_p) / abs(tr_p),
        trace_rel_se_pyhessian=se_p / abs(tr_p),
        trace_diff_in_pyhessian_se=abs(tr - tr_p) / se_p,
        hutchinson_rel_diff=abs(tr_h - tr_p) / abs(tr_p),
        hvp_lambda_fedland=n_hvp,
        lambda_fedland=lam,
        lambda_pyhessian=lam_p,
        trace_fedland=tr,
        trace_pyhessian=tr_p,
    )


# ---------------------------------------------------------------- valuation
def _train_flops(model, shape) -> tuple:
    "FLOPs of one sample's forward + backward, and of its forward alone (torch's flop counter)."
    from torch.utils.flop_counter import FlopCounterMode
    from fedland.models import build_model
    net, x = build_model(model, shape, 10, seed=0), torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as fc:
        net(x).sum().backward()
    train1 = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    return train1, fc.get_total_flops()


def exact_game(k: int, rounds: int, local_epochs: int, model: str = 'mlp'):
    ("The benchmark's exact coalition game (mnist1d, Dirichlet 0.5 over K clients, momentum 0.9, one seed): "
     "`game(**kwargs)` trains every coalition (kwargs go to `coalition_values`); returns it, the data and the "
     "partition.")
    from fedland.data import load_dataset
    from fedland.federated import FedConfig
    from fedland.models import build_model
    from fedland.partition import partition
    from fedland.valuation import coalition_values
    ds = load_dataset('mnist1d')
    part = partition(ds.y_train, k, 'dirichlet', alpha=0.5, seed=0)
    net = build_model(model, ds.input_shape, 10, seed=0)
    cfg = FedConfig(rounds=rounds, local_epochs=local_epochs, lr=0.05, momentum=0.9)
    return lambda **kw: coalition_values(net, ds, part, cfg, progress=False, **kw), ds, part


def bench_exact(ks, reps, rounds=20, local_epochs=1):
    ("Seconds to train every coalition of K clients (Dirichlet 0.5, MLP, one seed), client-epochs per second and the "
     "time against the compute floor (training FLOPs of every member's local epochs + one test evaluation per "
     "coalition).")
    out = {}
    for i, k in enumerate(ks):
        game, ds, part = exact_game(k, rounds, local_epochs)
        if i == 0: train1, fwd1 = _train_flops('mlp', ds.input_shape)   # one network for every K
        if k == min(ks): game()   # one warm-up for all K (the same code paths): K = 4's first game took twice its time
        ts, ceilings = [], []
        for _ in range(reps):
            settle()
            t, calls = time.perf_counter(), 0
            while calls == 0 or time.perf_counter() - t < MIN_REP_SECONDS:
                game()
                calls += 1
            ts.append((time.perf_counter() - t) / calls)
            ceilings.append(ceiling_now())
        members = 2 ** (k - 1)   # coalitions each client belongs to
        flops = train1 * local_epochs * rounds * members * int(part.sizes.sum()) + fwd1 * ds.n_test * (2 ** k - 1)
        client_epochs = k * members * rounds * local_epochs
        out[str(k)] = dict(coalitions=2 ** k - 1, rounds=rounds, local_epochs=local_epochs, seconds=spread(ts),
                           client_epochs_per_second=client_epochs / float(np.median(ts)),
                           ceiling_gflops=spread(ceilings), floor_seconds=flops / (float(np.median(ceilings)) * 1e9),
                           vs_floor=vs_floor(ts, ceilings, flops))
    return out


def bench_chunk(reps):
    ("The exact K = 8 game (Dirichlet 0.5, one seed) in stacked calls of `COALITION_CHUNK` jobs against one call of "
     "all 1024 jobs, alternated: seconds of each, their ratio, and whether the two give the same values (MLP 3 rounds "
     "× 5 epochs, cnn1d 1 × 1).")
    from fedland.valuation import COALITION_CHUNK
    out = {}
    for model, rounds, epochs in (('mlp', 3, 5), ('cnn1d', 1, 1)):
        play = exact_game(8, rounds, epochs, model)[0]
        game = lambda c, play=play: play(chunk=c)
        every = 8 * 2 ** 7   # the (coalition, member) jobs of K = 8: one call
        one, chunked = game(every), game(COALITION_CHUNK)   # the warm-up, and the values of each
        T = alternate({'one_call': lambda: game(every), 'chunked': lambda: game(COALITION_CHUNK)}, reps, warm=False)
        out[model] = dict(rounds=rounds, local_epochs=epochs, chunk=COALITION_CHUNK, one_call=spread(T['one_call']),
                          chunked=spread(T['chunked']), speedup=ratio(T['one_call'], T['chunked']),
                          same_bits=bool((one.loss == chunked.loss).all()),
                          max_acc_diff=float(abs(one.acc - chunked.acc).max()))
    return out


def bench_overhead(reps, **fields):
    ("The default experiment with K = 8 (or these Experiment fields): training with the default reconstruction "
     "valuation vs without (alternated).")
    from fedland.experiment import Experiment, prepare
    from fedland.federated import run_federated
    from fedland.valuation import Reconstruction, validation_sample
    exp = Experiment(**{'n_clients': 8, **fields, 'store': str(Path(tempfile.mkdtemp()) / 'x.db')})
    ds, part, net = prepare(exp)
    vi = torch.as_tensor(validation_sample(part, exp.valuation_samples, exp.seed))
    plain = lambda: run_federated(net, ds, part, exp.fed_config(), progress=False)
    valued = lambda: run_federated(
        net,
        ds,
        part,
        exp.fed_config(),
        progress=False,
        valuer=Reconstruction(
            net,
            ds.x_train[vi],
            ds.y_train[vi],
            every=exp.valuation_every,
            last_round=exp.rounds,
            horizon=exp.valuation_horizon,
        ),
    )
    T = alternate(dict(plain=plain, valued=valued), reps, warm=False)
    return dict(
        model=exp.model,
        clients=8,
        rounds=exp.rounds,
        local_epochs=exp.local_epochs,
        every=exp.valuation_every,
        horizon=exp.valuation_horizon,
        samples=exp.valuation_samples,
        plain_seconds=spread(T['plain']),
        valued_seconds=spread(T['valued']),
        overhead=spread([(v - p) / p for p, v in zip(T['plain'], T['valued'])]),
    )


# ---------------------------------------------------------------- main job, scale
# A child's ru_maxrss starts at its parent's resident set at the fork (Linux carries it across exec), and this process
# is large by now: the command runs under a small launcher, whose children (the command and its descendants) start from
# the launcher's size.
_LAUNCH = ('import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); '
           'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)')


def _child_peak_rss(cmd, env=None):
    "Wall seconds and peak resident set (MB) of the largest process of the command's tree."
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', _LAUNCH, *cmd], check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, float(r.stdout.split()[-1])


def bench_main():
    d = tempfile.mkdtemp()
    secs, rss = _child_peak_rss([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'run.ipynb'), f'{d}/out.ipynb',
                                 '-p', 'alpha', '0.5', '-p', 'store', f'{d}/fedland.db', '--no-progress-bar'])
    return dict(seconds=secs, peak_rss_mb=rss)


SCALE = ("import sys; from fedland.experiment import Experiment, run_experiment; "
         "run_experiment(Experiment(name='scale', model='mlp', partition='iid', n_clients=1000, rounds=100, "
         "local_epochs=1, curvature=False, valuation='none', "
         "contributions=False, landscape_steps=11, store=sys.argv[1]), progress=False)")


def bench_scale():
    d = tempfile.mkdtemp()
    secs, rss = _child_peak_rss([sys.executable, '-c', SCALE, f'{d}/fedland.db'])
    disk = sum(f.stat().st_size for f in Path(d).rglob('*') if f.is_file()) / 2**20
    return dict(seconds=secs, peak_rss_mb=rss, disk_mb=disk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='fewer rounds, a smaller MLP grid, fewer probes and K = 4…8 '
                                                         '(about 80 minutes on 2 cores)')
    ap.add_argument('--reps', type=int, default=3, help='alternated repetitions of every comparison (default 3)')
    ap.add_argument('--json', default=None)
    ap.add_argument('--skip', nargs='*', default=[], help='sections to skip: fedavg compiled sequential landscape '
                                                          'curvature valuation main scale')
    ap.add_argument('--long-game', action='store_true',
                    help='with --quick: add the exact K = 8 game at 30 rounds × 5 epochs (--reps repetitions, about '
                         '6 minutes on 2 cores)')
    ap.add_argument('--merge', action='store_true', help='update the sections run in an existing --json file and keep '
                                                         'the others (and their table rows)')
    a = ap.parse_args()
    from fedland.models import tune_allocator
    tune_allocator()   # as run_experiment does: reused evaluation tensors are not faulted in again
    threads = thread_policy()
    old = json.loads(Path(a.json).read_text()) if a.merge and a.json and Path(a.json).exists() else None
    out = {
        'machine': {
            'matmul_gflops': matmul_gflops(),
            'cpus': os.cpu_count(),
            'torch': torch.__version__,
            'reps': a.reps,
            'threads': torch.get_num_threads(),
            'cpu': cpu_model(),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'python': sys.version.split()[0],
            'quick': a.quick,
            'host': os.uname().nodename,
            'command': 'python bench/run.py ' + ' '.join(sys.argv[1:]),
            'thread_settings': threads,
            'min_rep_seconds': MIN_REP_SECONDS,
        }
    }
    mm = out['machine']['matmul_gflops']
    rows = [('machine', 'matmul GFLOP/s (2048² float32, best of 20)', f'{mm:.1f}')]
    done = lambda key: print(f'  {key} done', file=sys.stderr, flush=True)
    if 'fedavg' not in a.skip:
        R = 6 if a.quick else 30
        runs = [('cnn1d', 10), ('cnn', 10), ('mlp', 10), ('mlp', 100)]
        F_ = {f'{m}_{k}': bench_fedavg(m, k, R, a.reps) for m, k in runs}
        done('fedavg')
        out['fedavg'] = {
            'speedup_vs_flower_10': F_['mlp_10']['speedup']['median'],
            'speedup_vs_flower_100': F_['mlp_100']['speedup']['median'],
            'speedup_vs_flower_cnn1d': F_['cnn1d_10']['speedup']['median'],
            'speedup_vs_flower_cnn': F_['cnn_10']['speedup']['median'],
            'vs_floor': F_['mlp_10']['vs_floor']['median'],
            'vs_floor_cnn1d': F_['cnn1d_10']['vs_floor']['median'],
            **F_,
        }
        for key, f in F_.items():
            rows += [('fedavg', f"{f['model']}, {f['clients']} clients, {R} rounds × 5 epochs: s/round fedland vs "
                      f"Flower simulation at its fastest ({f['flower_config']})",
                      f"{f['seconds_per_round_fedland']['median']:.3f} vs "
                      f"{f['seconds_per_round_flower']['median']:.3f} s: {_fmt(f['speedup'])}"),
                     *[('fedavg', f"{f['model']}, {f['clients']} clients, sensitivity: Flower with {c}",
                        f"{g['seconds_per_round']['median']:.3f} s/round: {_fmt(g['speedup'])}")
                       for c, g in f['flower_configs'].items()],
                     ('fedavg', f"{f['model']}, {f['clients']} clients: final test accuracy fedland / Flower; s/round "
                                f"÷ compute floor",
                      f"{f['acc_fedland']:.3f} / {f['acc_flower']:.3f}; {_fmt(f['vs_floor'])}")]
    if 'compiled' not in a.skip:
        R = 6 if a.quick else 30
        Cp = {f'{m}_{k}': bench_compiled(m, k, R, a.reps) for m, k in (('cnn1d', 10), ('mlp', 10))}
        done('compiled')
        out.setdefault('fedavg', {}).update(compiled=Cp, vs_floor_compiled=Cp['mlp_10']['vs_floor_compiled']['median'])
        for key, c in Cp.items():
            rows += [('compiled', f"{c['model']}, {c['clients']} clients: s/round eager vs compile=True (whole runs "
                                  f"incl. evaluation); ÷ compute floor",
                      f"{c['seconds_per_round_eager']['median']:.3f} vs "
                      f"{c['seconds_per_round_compiled']['median']:.3f} s: {_fmt(c['speedup'])}; "
                      f"floor ×{c['vs_floor_eager']['median']:.1f} → ×{c['vs_floor_compiled']['median']:.1f}")]
    if 'sequential' not in a.skip:
        Sq = {m: bench_sequential(m, max(a.reps, 5)) for m in ('cnn1d', 'mlp')}
        done('sequential')
        out['sequential'] = {
            'speedup_cnn1d': Sq['cnn1d']['speedup']['median'],
            'speedup_mlp': Sq['mlp']['speedup']['median'],
            **Sq,
        }
        for m, q in Sq.items():
            rows += [('sequential', f"{m}: local_update ms/step, flat parameter vector vs per-tensor dicts (bitwise "
                                    f"equal: {q['bitwise_equal']})",
                      f"{q['ms_per_step_flat']['median']:.2f} vs {q['ms_per_step_dicts']['median']:.2f} ms: "
                      f"{_fmt(q['speedup'])}")]
    if 'landscape' not in a.skip:
        L = {
            m: bench_landscape(m, (26 if a.quick else 51) if m == 'mlp' else 11, a.reps)
            for m in ('cnn1d', 'cnn', 'niid_cnn', 'mlp')
        }
        done('landscape')
        out['landscape'] = {
            'speedup_vs_loss_landscapes': L['mlp']['speedup']['median'],
            'speedup_vs_loss_landscapes_cnn1d': L['cnn1d']['speedup']['median'],
            'speedup_vs_loss_landscapes_cnn': L['cnn']['speedup']['median'],
            'speedup_vs_loss_landscapes_niid_cnn': L['niid_cnn']['speedup']['median'],
            'speedup_vs_plain_min': min(l['speedup_vs_plain']['median'] for l in L.values()),
            'max_abs_diff': max(l['max_abs_diff'] for l in L.values()),
            'gflops_fraction': L['mlp']['gflops_fraction'],
            **L,
        }
        for m, l in L.items():
            rows += [
                (
                    'landscape',
                    f"{m} ({l['data']}), {l['points']} points, global + 10 clients (engine "
                    f"{l['engine']}): "
                    "vs loss-landscapes ×11; vs a plain per-point loop",
                    f"{_fmt(l['speedup'])}; {_fmt(l['speedup_vs_plain'])}",
                ),
                (
                    'landscape',
                    f'{m}: max |difference| from the plain loop (client losses); achieved GFLOP/s ÷ matmul',
                    f"{l['max_abs_diff']:.1e}; {l['gflops_fraction']:.0%}",
                ),
            ]
    if 'curvature' not in a.skip:
        C = {m: bench_curvature(m, 50 if a.quick else 200, max(a.reps, 5)) for m in ('cnn1d', 'cnn', 'mlp')}
        done('curvature')
        out['curvature'] = {
            'speedup_vs_pyhessian': C['mlp']['speedup']['median'],
            'speedup_vs_pyhessian_cnn1d': C['cnn1d']['speedup']['median'],
            'speedup_vs_pyhessian_cnn': C['cnn']['speedup']['median'],
            'lambda_rel_diff': max(c['lambda_rel_diff'] for c in C.values()),
            'trace_rel_diff': max(c['trace_rel_diff'] for c in C.values()),
            **C,
        }
        for m, c in C.items():
            rows += [
                (
                    'curvature',
                    f'{m}: λmax (tol 1e-3 both) + trace: fedland (exact trace) vs PyHessian',
                    _fmt(c['speedup']),
                ),
                (
                    'curvature',
                    f'{m}: relative difference λmax / trace vs PyHessian',
                    f"{c['lambda_rel_diff']:.1e} / {c['trace_rel_diff']:.1e} ({c['trace_diff_in_pyhessian_se']:.1f} "
                    f"of PyHessian's standard errors; fedland Hutchinson, same probes: {c['hutchinson_rel_diff']:.1e})",
                ),
            ]
    if 'valuation' not in a.skip:
        E = bench_exact(range(4, 9) if a.quick else range(4, 11), a.reps)
        long_game = a.long_game or not a.quick
        E30 = bench_exact([8], a.reps, rounds=30, local_epochs=5)['8'] if long_game else None
        Ch = bench_chunk(a.reps)
        O = bench_overhead(a.reps)
        done('valuation')
        out['valuation'] = {
            'exact_seconds_k8': E['8']['seconds']['median'],
            'reconstruction_overhead': O['overhead']['median'],
            'exact_vs_floor_k8': E['8']['vs_floor']['median'],
            'exact': E,
            'exact_30x5': E30,
            'chunk': Ch,
            'overhead': O,
        }
        rows += [
            (
                'valuation',
                'exact game, K = 8 (255 coalitions, MLP, 20 rounds × 1 epoch, one seed)',
                f"{_fmt(E['8']['seconds'], ' s')}",
            ),
            (
                'valuation',
                'exact game, K = 8, 20 × 1: client-epochs per second; time ÷ compute floor',
                f"{E['8']['client_epochs_per_second']:.0f}; {_fmt(E['8']['vs_floor'])}",
            ),
            *(
                [
                    (
                        'valuation',
                        'exact game, K = 8, 30 rounds × 5 epochs: seconds; client-epochs per second; ÷ floor',
                        f"{_fmt(E30['seconds'], ' s')}; {E30['client_epochs_per_second']:.0f}; {_fmt(E30['vs_floor'])}",
                    )
                ]
                if E30
                else []
            ),
            *[
                (
                    'valuation',
                    f"exact game, K = 8, {m}, {c['rounds']} × {c['local_epochs']}: calls of {c['chunk']} jobs vs one "
                    "call of 1024 (same bits; max |Δ accuracy|)",
                    f"{_fmt(c['speedup'])} ({c['same_bits']}; {c['max_acc_diff']:.3f})",
                )
                for m, c in Ch.items()
            ],
            (
                'valuation',
                'exact game, K = ' + '/'.join(E),
                ' / '.join(f"{e['seconds']['median']:.0f}" for e in E.values()) + ' s',
            ),
            (
                'valuation',
                f"reconstruction (every {O['every']} rounds, {O['samples']} samples) on {O['model']} training, "
                f"K = 8, {O['rounds']} × {O['local_epochs']}",
                f"+{100 * O['overhead']['median']:.0f} % "
                f"[{100 * O['overhead']['min']:.0f}–{100 * O['overhead']['max']:.0f} %]",
            ),
        ]
    if 'main' not in a.skip:
        M = bench_main()
        done('main')
        out['main'] = M
        rows += [
            (
                'main',
                'papermill nbs/run.ipynb -p alpha 0.5',
                f"{M['seconds']:.0f} s, peak RSS {M['peak_rss_mb']:.0f} MB",
            )
        ]
    if 'scale' not in a.skip:
        S = bench_scale()
        done('scale')
        out['scale'] = S
        rows += [
            (
                'scale',
                '1000 clients × 100 rounds (default history policy)',
                f"{S['seconds']:.0f} s, peak RSS {S['peak_rss_mb']:.0f} MB, disk {S['disk_mb']:.0f} MB",
            )
        ]
    if old is not None:   # the machine line of this run, every other section as it was unless run again
        ran = {r[0] for r in rows} - {'machine'}
        fed = {**old.get('fedavg', {}), **out.get('fedavg', {})}
        out = {**old, **out, **({'fedavg': fed} if fed else {})}
        order = ['machine', 'fedavg', 'compiled', 'sequential', 'landscape', 'curvature', 'valuation', 'main', 'scale']
        rows = sorted(
            [r for r in rows] + [tuple(r) for r in old['table'] if r[0] not in ran and r[0] != 'machine'],
            key=lambda r: order.index(r[0]),
        )
        out['machine']['merged_from'] = old['machine']['date']
        # the machine of the sections kept (their start-of-run matmul probe, command, date), and of theirs before
        out['machine']['merged_machines'] = [*old['machine'].get('merged_machines', []),
                                             {k: v for k, v in old['machine'].items() if k != 'merged_machines'}]
    if SETTLED:   # how long the timed sides waited for a quiet machine, and how often the wait timed out
        out['machine']['settle'] = dict(seconds=spread(SETTLED), waits=len(SETTLED), busy_below=QUIET_BUSY,
                                        timed_out=sum(t >= 60 for t in SETTLED))
    out['table'] = [list(r) for r in rows]
    w = max(len(r[1]) for r in rows)
    for s, what, val in rows:
        print(f'{s:<10} {what:<{w}}  {val}')
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
