"""Seconds per round of the two client-update paths of the in-process engine (torch.func batched vs sequential),
measured side by side on MNIST-1D, with the final test accuracies (equal to float tolerance).

    python bench/federated_paths.py
"""
import time

from fedland.data import load_dataset
from fedland.federated import FedConfig, run_federated
from fedland.models import build_model, tune_allocator
from fedland.partition import partition

tune_allocator()   # as run_experiment does
ds = load_dataset('mnist1d')
print(
    f"{'clients':>7} {'model':>6} {'batched s/round':>16} "
    f"{'sequential s/round':>19} {'ratio':>6}  acc (batched, sequential)"
)
for K in (10, 100):
    part = partition(ds.y_train, K, 'iid', seed=0)
    for name in ('mlp', 'cnn1d'):
        net = build_model(name, ds.input_shape, 10)
        run_federated(net, ds, part, FedConfig(rounds=1), batched=True, progress=False)   # warm-up
        res = {}
        for b in (True, False):
            t = time.perf_counter()
            h = run_federated(net, ds, part, FedConfig(rounds=5, lr=0.05, momentum=0.9), batched=b, progress=False)
            res[b] = ((time.perf_counter() - t) / 5, h.rounds.test_acc.iloc[-1])
        print(f'{K:>7} {name:>6} {res[True][0]:>16.3f} {res[False][0]:>19.3f} {res[False][0] / res[True][0]:>5.1f}×  '
              f'({res[True][1]:.3f}, {res[False][1]:.3f})')
