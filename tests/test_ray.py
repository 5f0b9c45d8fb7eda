"""The coalition games sharded over a real Ray cluster (a head and a second node, on loopback, in a private network
namespace): the same values as one process, bit for bit."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLUSTER = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    import numpy as np
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)          # the namespace's only interface: loopback
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        head = [ray_cli, "start", "--head", "--port=6391", "--include-dashboard=false", *common]
        subprocess.run(head, env=env, check=True, capture_output=True)
        node = [ray_cli, "start", "--address=127.0.0.1:6391", *common]
        subprocess.run(node, env=env, check=True, capture_output=True)
        from fedland.data import load_dataset
        from fedland.federated import FedConfig, run_federated
        from fedland.models import build_model
        from fedland.partition import partition
        from fedland.valuation import Reconstruction, coalition_values, sampled_values, validation_sample
        import ray
        ds = load_dataset("mnist1d")
        part = partition(ds.y_train, 4, "dirichlet", alpha=0.5, seed=0)
        net = build_model("mlp", ds.input_shape, 10, seed=0)
        cfg = FedConfig(rounds=2, lr=0.05, momentum=0.9)
        here = coalition_values(net, ds, part, cfg, seeds=[0, 1], progress=False)
        there = coalition_values(net, ds, part, cfg, seeds=[0, 1], progress=False,
                                 ray_address="127.0.0.1:6391")
        alive = [n for n in ray.nodes() if n["Alive"]]
        print("nodes", len(alive), sorted({n["NodeManagerAddress"] for n in ray.nodes()}))
        print("exact equal", np.array_equal(here.acc, there.acc) and np.array_equal(here.loss, there.loss)
              and np.array_equal(here.hits, there.hits))
        vi = validation_sample(part, 256, 0)
        valuer = Reconstruction(net, ds.x_train[vi], ds.y_train[vi])
        h = run_federated(net, ds, part, cfg, valuer=valuer, progress=False)
        a = sampled_values(net, ds, part, h, cfg, n_permutations=1, progress=False)
        b = sampled_values(net, ds, part, h, cfg, n_permutations=1, progress=False, ray_address="127.0.0.1:6391")
        print("sampled equal", np.array_equal(a.values, b.values) and np.array_equal(a.lo, b.lo)
              and np.array_equal(a.hi, b.hi))
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
""")


def test_ray_cluster_gives_the_single_process_values(tmp_path):
    if shutil.which('unshare') is None or shutil.which('ip') is None:
        pytest.skip('needs unshare and ip (util-linux, iproute2) for a private loopback network')
    if subprocess.run(['unshare', '-n', 'true'], capture_output=True).returncode != 0:
        pytest.skip('unshare -n is not permitted here (needs root or user namespaces)')
    if not Path(sys.executable).with_name('ray').exists():
        pytest.skip("Ray is not installed (fedland's [distributed] extra)")
    script = tmp_path / 'cluster.py'
    script.write_text(CLUSTER)
    out = subprocess.run(['unshare', '-n', sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nodes 2 ['127.0.0.1']" in out.stdout, out.stdout
    assert 'exact equal True' in out.stdout, out.stdout
    assert 'sampled equal True' in out.stdout, out.stdout
    left = subprocess.run(['pgrep', '-f', 'gcs_server.*6391'], capture_output=True, text=True).stdout.strip()
    assert not left, f'Ray processes left running: {left}'
