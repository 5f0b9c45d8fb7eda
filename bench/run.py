"""fedland against the tools researchers would otherwise use, measured side by side in one run.

Prints a table and writes one JSON object (--json FILE) with the keys named in issue 7. Ratios, not absolute times.
Sections: machine (dense matmul GFLOP/s), fedavg (fedland's simulator vs Flower's Simulation Engine with Ray, same
experiment; and vs the compute floor), landscape (vs loss-landscapes on identical directions), curvature (vs PyHessian),
main (papermill main job), scale (1000 clients x 100 rounds). Needs the dev and distributed extras.

    python bench/run.py --quick --json bench/results/latest.json
"""
import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def matmul_gflops(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(ts)) / 1e9


def _mlp_macs(model):
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


FEDAVG = dict(model="mlp", partition="dirichlet", alpha=0.5, local_epochs=1, lr=0.05, momentum=0.9, batch_size=32, seed=0, valuation="none",
              centralized=False, landscape=False, curvature=False, contributions=False)


def _round_flops(exp):
    "FLOPs of one federated round: forward+backward of every trained sample, forward of every evaluation (torch's flop counter)."
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
    n_eval = sum(len(ix) for ix in part) + sum(len(h) for h in part.holdout) + ds.n_test   # θ_g on client data, θ_k on held-out, θ_g on test
    return train1 * n_train + fwd1 * n_eval


def bench_fedavg(n_clients, rounds, matmul):
    "Seconds per round (rounds 2..R; round 1 includes Flower's node discovery) of the same experiment, in-process and on Flower's Simulation Engine."
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
    from fedland.experiment import Experiment, run_experiment
    from fedland.flower import FlowerClients, make_client_app
    d = tempfile.mkdtemp()
    local = Experiment(**FEDAVG, n_clients=n_clients, rounds=rounds, store=f"{d}/local.db")
    t = time.perf_counter(); ours = run_experiment(local, progress=False); wall_ours = time.perf_counter() - t
    fl = Experiment(**FEDAVG, n_clients=n_clients, rounds=rounds, engine="flower", store=f"{d}/flower.db")
    box = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        box["res"] = run_experiment(fl, progress=False, clients=FlowerClients(grid, fl))

    from flwr.supercore.logger import update_console_handler
    import logging
    update_console_handler(level=logging.WARNING)
    t = time.perf_counter()
    run_simulation(app, make_client_app(fl), num_supernodes=n_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count(), "logging_level": "ERROR", "log_to_driver": False}})
    wall_fl = time.perf_counter() - t
    if "res" not in box: raise RuntimeError("the Flower simulation did not finish the experiment")
    theirs = box["res"]
    s_ours = float(ours.history.rounds.seconds.iloc[2:].mean())
    s_fl = float(theirs.history.rounds.seconds.iloc[2:].mean())
    floor = _round_flops(local) / (matmul * 1e9)
    return dict(clients=n_clients, rounds=rounds, seconds_per_round_fedland=s_ours, seconds_per_round_flower=s_fl, speedup=s_fl / s_ours,
                acc_fedland=float(ours.history.rounds.test_acc.iloc[-1]), acc_flower=float(theirs.history.rounds.test_acc.iloc[-1]),
                floor_seconds_per_round=floor, vs_floor=s_ours / floor, wall_fedland=wall_ours, wall_flower=wall_fl)


def bench_landscape(steps):
    import loss_landscapes
    import loss_landscapes.metrics
    from fedland.data import load_dataset
    from fedland.federated import FedConfig, client_ids, run_federated
    from fedland.landscape import evaluate_grid, random_plane
    from fedland.models import build_model, get_flat, set_flat
    from fedland.partition import partition
    ds = load_dataset("mnist1d")
    part = partition(ds.y_train, 10, "dirichlet", alpha=0.5, seed=0)
    net = build_model("mlp", ds.input_shape, 10)
    h = run_federated(net, ds, part, FedConfig(rounds=5, lr=0.05, momentum=0.9), progress=False)
    set_flat(net, h.global_params[-1])
    plane = random_plane(net, seed=0)
    owner = client_ids(part, ds.n_train)
    S = 1.0
    t = time.perf_counter()
    ours = evaluate_grid(net, plane, ds.x_train, ds.y_train, owner, steps=steps + 1, xrange=(0, S), yrange=(0, S), progress=False)
    t_ours = time.perf_counter() - t
    # loss-landscapes: one planar_interpolation per dataset (global + every client), same directions
    theta = get_flat(net)
    e1, e2 = copy.deepcopy(net), copy.deepcopy(net)
    set_flat(e1, theta + S * plane.d1); set_flat(e2, theta + S * plane.d2)
    sets = [owner >= 0] + [owner == k for k in range(10)]
    t = time.perf_counter()
    theirs = [loss_landscapes.planar_interpolation(copy.deepcopy(net), e1, e2, loss_landscapes.metrics.Loss(F.cross_entropy, ds.x_train[m], ds.y_train[m]), steps=steps)
              for m in sets]
    t_theirs = time.perf_counter() - t
    n = steps
    aligned = np.array([[ours.loss[j + 1 if i % 2 == 0 else j, i] for j in range(n)] for i in range(n)])
    diff = float(np.abs(aligned - theirs[0]).max())
    points = (steps + 1) ** 2
    flops = 2 * _mlp_macs(net) * points * int((owner >= 0).sum())
    return dict(seconds_fedland=t_ours, seconds_loss_landscapes=t_theirs, speedup=t_theirs / t_ours, max_abs_diff=diff,
                gflops=flops / t_ours / 1e9, points=points)


def bench_curvature(n_probes):
    import pyhessian
    from fedland.curvature import HessianOperator, hutchinson, top_eigenvalues, trace
    from fedland.data import load_dataset
    from fedland.models import build_model, param_dict
    from fedland.train import LocalConfig, train_centralized
    ds = load_dataset("mnist1d")
    net = build_model("mlp", ds.input_shape, 10)
    r = train_centralized(net, ds, LocalConfig(lr=0.05, momentum=0.9, epochs=5), progress=False)
    with torch.no_grad():
        for k, v in param_dict(net, detach=False).items():
            v.copy_(r.params[k])
    net.eval()
    X, Y = ds.x_train[:2000], ds.y_train[:2000]

    def theirs():
        torch.manual_seed(0)
        hc = pyhessian.hessian(net, torch.nn.CrossEntropyLoss(), data=(X, Y), cuda=False)
        samples = hc.trace(maxIter=n_probes, tol=0.0)
        return hc.eigenvalues(top_n=1)[0][0], float(np.mean(samples)), float(np.std(samples, ddof=1) / np.sqrt(len(samples)))

    def ours():
        op = HessianOperator(net, param_dict(net), X, Y)
        e = top_eigenvalues(op, k=1, m=20, tol=1e-3)      # PyHessian's power iteration also stops at tol 1e-3 (ours: residual bound, stricter)
        return float(e.values[0]), trace(net, param_dict(net), X, Y, n_probes=n_probes, seed=0).trace, e.n_hvp   # exact for this ReLU MLP

    theirs(); ours()                                   # warm-up: first calls pay one-off costs
    tp, tf = [], []
    for _ in range(7):                                 # alternate, keep the median
        t = time.perf_counter(); lam_p, tr_p, se_p = theirs(); tp.append(time.perf_counter() - t)
        t = time.perf_counter(); lam, tr, n_lanczos = ours(); tf.append(time.perf_counter() - t)
    t_p, t_f = float(np.median(tp)), float(np.median(tf))
    tr_h = hutchinson(net, param_dict(net), X, Y, n_probes=n_probes, seed=0).trace   # fedland's Hutchinson with the same probes as PyHessian's
    return dict(seconds_fedland=t_f, seconds_pyhessian=t_p, speedup=t_p / t_f, lambda_rel_diff=abs(lam - lam_p) / abs(lam_p),
                trace_rel_diff=abs(tr - tr_p) / abs(tr_p), trace_rel_se_pyhessian=se_p / abs(tr_p),
                hutchinson_rel_diff=abs(tr_h - tr_p) / abs(tr_p), hvp_lambda_fedland=n_lanczos, lambda_fedland=lam, lambda_pyhessian=lam_p, trace_fedland=tr, trace_pyhessian=tr_p)


def _child_peak_rss(cmd, env=None):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def bench_main():
    d = tempfile.mkdtemp()
    secs, rss = _child_peak_rss([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "run.ipynb"), f"{d}/out.ipynb",
                                 "-p", "alpha", "0.5", "-p", "store", f"{d}/fedland.db", "--no-progress-bar"])
    return dict(seconds=secs, peak_rss_mb=rss)


SCALE = ("import sys; from fedland.experiment import Experiment, run_experiment; "
         "run_experiment(Experiment(name='scale', model='mlp', partition='iid', n_clients=1000, rounds=100, local_epochs=1, curvature=False, valuation='none', "
         "contributions=False, landscape_steps=11, store=sys.argv[1]), progress=False)")


def bench_scale():
    d = tempfile.mkdtemp()
    secs, rss = _child_peak_rss([sys.executable, "-c", SCALE, f"{d}/fedland.db"])
    disk = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / 2**20
    return dict(seconds=secs, peak_rss_mb=rss, disk_mb=disk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller grids and fewer probes (finishes in about 5 minutes)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip: fedavg landscape curvature main scale")
    a = ap.parse_args()
    out = {"machine": {"matmul_gflops": matmul_gflops(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu": _cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "python": sys.version.split()[0], "quick": a.quick}}
    rows = [("machine", "matmul GFLOP/s (2048² float32, median of 5)", f"{out['machine']['matmul_gflops']:.1f}")]
    if "fedavg" not in a.skip:
        R = 6 if a.quick else 20
        F10, F100 = (bench_fedavg(k, R, out["machine"]["matmul_gflops"]) for k in (10, 100))
        out["fedavg"] = {"speedup_vs_flower_10": F10["speedup"], "speedup_vs_flower_100": F100["speedup"],
                         "acc_fedland": F10["acc_fedland"], "acc_flower": F10["acc_flower"],
                         "acc_fedland_100": F100["acc_fedland"], "acc_flower_100": F100["acc_flower"],
                         "vs_floor": F10["vs_floor"], "vs_floor_100": F100["vs_floor"], "k10": F10, "k100": F100}
        for F in (F10, F100):
            rows += [("fedavg", f"{F['clients']} clients, MLP, Dir(0.5), {R} rounds: s/round fedland vs Flower simulation",
                      f"{F['seconds_per_round_fedland']:.3f} vs {F['seconds_per_round_flower']:.3f} s: {F['speedup']:.1f}× faster"),
                     ("fedavg", f"{F['clients']} clients: final test accuracy fedland / Flower", f"{F['acc_fedland']:.3f} / {F['acc_flower']:.3f}"),
                     ("fedavg", f"{F['clients']} clients: s/round ÷ compute floor (round FLOPs ÷ matmul GFLOP/s)", f"{F['vs_floor']:.1f}×")]
    if "landscape" not in a.skip:
        L = bench_landscape(25 if a.quick else 50)
        out["landscape"] = {"speedup_vs_loss_landscapes": L["speedup"], "max_abs_diff": L["max_abs_diff"],
                            "gflops_fraction": L["gflops"] / out["machine"]["matmul_gflops"], **L}
        rows += [("landscape", f"{L['points']} points, global + 10 clients: fedland vs loss-landscapes ×11", f"{L['speedup']:.1f}× faster"),
                 ("landscape", "max |difference| of the global landscape", f"{L['max_abs_diff']:.1e}"),
                 ("landscape", "achieved GFLOP/s / matmul GFLOP/s", f"{out['landscape']['gflops_fraction']:.0%}")]
    if "curvature" not in a.skip:
        C = bench_curvature(50 if a.quick else 200)
        out["curvature"] = {"speedup_vs_pyhessian": C["speedup"], "lambda_rel_diff": C["lambda_rel_diff"], "trace_rel_diff": C["trace_rel_diff"], **C}
        rows += [("curvature", "λmax (tol 1e-3 both) + trace: fedland vs PyHessian", f"{C['speedup']:.2f}× faster"),
                 ("curvature", "relative difference λmax / trace (exact) vs PyHessian", f"{C['lambda_rel_diff']:.1e} / {C['trace_rel_diff']:.1e} "
                  f"(PyHessian's trace standard error {C['trace_rel_se_pyhessian']:.1e}; fedland Hutchinson, same probes: {C['hutchinson_rel_diff']:.1e})")]
    if "main" not in a.skip:
        M = bench_main()
        out["main"] = M
        rows += [("main", "papermill nbs/run.ipynb -p alpha 0.5", f"{M['seconds']:.0f} s, peak RSS {M['peak_rss_mb']:.0f} MB")]
    if "scale" not in a.skip:
        S = bench_scale()
        out["scale"] = S
        rows += [("scale", "1000 clients × 100 rounds (default history policy)", f"{S['seconds']:.0f} s, peak RSS {S['peak_rss_mb']:.0f} MB, disk {S['disk_mb']:.0f} MB")]
    out["table"] = [list(r) for r in rows]
    w = max(len(r[1]) for r in rows)
    for s, what, val in rows:
        print(f"{s:<10} {what:<{w}}  {val}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if isinstance(vv, (int, float))} for k, v in out.items() if isinstance(v, dict)}))


if __name__ == "__main__":
    main()
