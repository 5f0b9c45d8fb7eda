"""Where a FedAvg round's time goes: the benchmark's round (`bench/run.py`'s experiment) split into its parts.

    python bench/round_parts.py mlp 100 --json bench/results/round_parts.json
    python bench/round_parts.py mlp 10 cnn1d 10 --json ...   # several (model, clients) pairs

Each repetition runs the experiment's 6 rounds twice, alternately:
- with timers around the library's public functions (the clients' batch orders, their local updates, the MLP's
  closed-form gradients, θ_g on every client's data, the hold-outs, the test set, the server's round) — a wrapper costs
  about a microsecond a call;
- under a torch dispatch mode that times the products (batched and plain matrix products, convolutions and their
  backward): the time the BLAS and oneDNN kernels take, whatever the Python around them.
It prints each part's milliseconds per round (median of the repetitions, min–max) and its share of the round, with
the round's compute floor (its FLOPs at the matmul rate measured beside each repetition); the JSON keeps every
repetition, so that shares and ratios can be taken repetition by repetition.
"""
import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fedland.federated as fd
import fedland.train as tr
from run import ceiling_now, cpu_model, fedavg_experiment, round_flops, settle, spread, thread_policy

# (module, function, part): what each timer wraps; parts nest (a local update contains its batch orders)
TIMED = [
    (tr, 'batch_order', 'batch orders (one seeded generator a client)'),
    (tr, 'dense_chain_grads', 'gradients (the MLP closed form)'),
    (tr, 'local_update_stacked', 'local updates'),
    (fd, 'local_update_batched', 'local updates and per-client results'),
    (fd, 'per_sample_losses', 'θ_g on every client\'s data'),
    (fd, 'evaluate_stacked', 'θ_k on its hold-out'),
    (fd, 'evaluate', 'θ_g+1 on the test set'),
]
SERVER = 'server: aggregation, geometry, test set, History rows'
PRODUCTS = {'bmm', 'baddbmm', 'mm', 'addmm', 'convolution', 'convolution_backward', 'mkldnn_convolution'}


class Products(TorchDispatchMode):
    "Seconds spent inside matrix products and convolutions (forward and backward), by op."
    def __init__(self):
        super().__init__()
        self.seconds, self.calls = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in PRODUCTS: return func(*args, **(kwargs or {}))
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[name] += time.perf_counter() - t
        self.calls[name] += 1
        return out


@contextmanager
def timers():
    "Every TIMED function (and the server's round) wrapped with a timer while inside; yields the seconds by part."
    spent, saved = Counter(), [(mod, name, getattr(mod, name)) for mod, name, _ in TIMED]
    saved.append((fd.Server, 'finish_round', fd.Server.finish_round))
    def wrap(f, part):
        def timed(*a, **k):
            t = time.perf_counter()
            try: return f(*a, **k)
            finally: spent[part] += time.perf_counter() - t
        return timed
    for mod, name, part in TIMED: setattr(mod, name, wrap(getattr(mod, name), part))
    fd.Server.finish_round = wrap(fd.Server.finish_round, SERVER)
    try: yield spent
    finally:
        for mod, name, f in saved: setattr(mod, name, f)


def parts(model: str, n_clients: int, reps: int) -> dict:
    "Milliseconds per round of each part and of the products, `reps` alternated repetitions, with the floor."
    from fedland.experiment import prepare
    exp = fedavg_experiment(model, n_clients, 6, 'unused.db')
    ds, part, net = prepare(exp)
    cfg = exp.fed_config()
    fd.run_federated(net, ds, part, cfg, progress=False)   # warm-up
    flops, R = round_flops(exp), cfg.rounds
    per = {'round': [], 'products': [], 'ceiling': []}
    for _ in range(reps):
        settle()
        with timers() as spent: h = fd.run_federated(net, ds, part, cfg, progress=False)
        per['round'].append(float(h.rounds.seconds.iloc[1:].sum()) / R * 1e3)
        for k, v in spent.items(): per.setdefault(k, []).append(v / R * 1e3)
        with Products() as p: fd.run_federated(net, ds, part, cfg, progress=False)
        per['products'].append(sum(p.seconds.values()) / R * 1e3)
        per['ceiling'].append(ceiling_now())
    floor = [flops / (c * 1e9) * 1e3 for c in per['ceiling']]
    return dict(model=model, clients=n_clients, rounds=R, flops_per_round=flops,
                ms={k: spread(v) for k, v in per.items() if k != 'ceiling'},
                ceiling_gflops=spread(per['ceiling']), floor_ms=spread(floor),
                product_calls_per_round={k: v / R for k, v in p.calls.items()})


def show(r: dict):
    "Print one pair's parts."
    m = r['ms']
    print(f"{r['model']}, {r['clients']} clients: {m['round']['median']:.1f} ms a round "
          f"[{m['round']['min']:.1f}–{m['round']['max']:.1f}], floor {r['floor_ms']['median']:.1f} ms "
          f"({r['ceiling_gflops']['median']:.0f} GFLOP/s)")
    for k, v in m.items():
        if k == 'round': continue
        print(f"  {k:58s} {v['median']:7.2f} ms [{v['min']:.2f}–{v['max']:.2f}]  "
              f"{v['median'] / m['round']['median']:6.1%}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('pairs', nargs='+', help='model clients [model clients ...], e.g. mlp 100 cnn1d 10')
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    from fedland.models import tune_allocator
    tune_allocator()   # as run_experiment does
    policy = thread_policy()
    out = {'cpu': cpu_model(), 'host': os.uname().nodename, 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
           'torch': torch.__version__, 'command': 'python bench/round_parts.py ' + ' '.join(sys.argv[1:]),
           'torch_threads': policy['fedland_torch_threads'], 'environment': policy['environment'], 'results': []}
    for model, k in zip(a.pairs[::2], a.pairs[1::2]):
        out['results'].append(parts(model, int(k), a.reps))
        show(out['results'][-1])
    if a.json:
        with open(a.json, 'w') as f: json.dump(out, f, indent=1)
