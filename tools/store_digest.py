"""Digest of the stores that fixed seeds produce: the check that a refactor left behaviour bit-identical.

    python tools/store_digest.py before.json          # run the jobs into a fresh store, write their digest
    python tools/store_digest.py after.json --compare before.json
    python tools/store_digest.py d.json --store runs/fedland.db   # digest an existing store instead
    python tools/store_digest.py d.json --keep DIR                # run the jobs into DIR/fedland.db and keep it

Three jobs: the main job (`papermill nbs/run.ipynb -p alpha 0.5`: Experiment() with its defaults, reconstruction
values included), an exact valuation run and a small reconstruction run with a 'window' game. Each table's rows are
hashed with every float written out exactly (`float.hex`), and every artifact (.npz arrays, torch checkpoints) by its
content. Left out are only the columns that record when and where a run happened (created_at, finished_at, git_rev,
fedland_version) and the wall-clock times that artifacts keep (`seconds`).
"""
import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from fedland.experiment import Experiment, run_experiment
from fedland.store import TABLES, Store

WHEN_AND_WHERE = {'created_at', 'finished_at', 'git_rev', 'fedland_version'}
SMALL = dict(n_clients=4, rounds=4, local_epochs=1, centralized=False, landscape_steps=5, curvature=False)
JOBS = {
    'main job': {},
    'exact valuation': dict(SMALL, valuation='exact', valuation_seeds=1, valuation_horizon=None, landscape=False),
    'reconstruction, window game': dict(SMALL, valuation_game='window', valuation_every=2, valuation_horizon=None),
}


def exact(v) -> str:
    "A cell written out exactly: floats in hex, everything else as its repr."
    if isinstance(v, (float, np.floating)): return float(v).hex()
    if isinstance(v, np.integer): return repr(int(v))
    return repr(v)


def table_digest(st: Store, table: str) -> tuple:
    "Row count and sha256 of one table's rows (sorted), without the when-and-where columns."
    df = st.table(table)
    cols = [c for c in TABLES[table] if c not in WHEN_AND_WHERE]
    rows = sorted('\t'.join(exact(v) for v in r) for r in df[cols].itertuples(index=False, name=None))
    return len(rows), hashlib.sha256('\n'.join(rows).encode()).hexdigest()


WALL_TIME = 'seconds'   # arrays and fields that hold wall-clock time, not results


def feed(h, obj):
    "Feed one loaded object into the hash: containers in order, tensors and arrays by their bytes, floats exactly."
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if k != WALL_TIME:
                h.update(f'<{k}>'.encode())
                feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f'[{len(obj)}'.encode())
        for v in obj: feed(h, v)
    elif isinstance(obj, (torch.Tensor, np.ndarray)):
        a = np.ascontiguousarray(obj.numpy() if isinstance(obj, torch.Tensor) else obj)
        h.update(f'{a.dtype.str}|{a.shape}'.encode())
        h.update(a.tobytes())
    elif isinstance(obj, str) and obj[:1] in '[{' and json_or_none(obj) is not None:
        feed(h, json_or_none(obj))   # a JSON field (a checkpoint's history rows, with their wall-clock seconds)
    else: h.update(exact(obj).encode())


def json_or_none(s: str):
    "The value a JSON text holds, or None when the text is not JSON."
    try: return json.loads(s)
    except json.JSONDecodeError: return None


def artifact_digest(path: Path) -> str:
    "sha256 of an artifact's content: an .npz's arrays, a torch file's tensors and fields (no zip timestamps or times)."
    h = hashlib.sha256()
    if path.suffix == '.npz':
        with np.load(path, allow_pickle=False) as z: feed(h, {k: z[k] for k in z.files})
    elif path.suffix == '.pt': feed(h, torch.load(path, map_location='cpu', weights_only=True))
    else: h.update(path.read_bytes())
    return h.hexdigest()


def digest(store: Path) -> dict:
    "Every table's digest and every artifact's, keyed by name and path relative to the artifact directory."
    with Store(store) as st:
        out = {f'table {t}': list(table_digest(st, t)) for t in TABLES}
        for p in sorted(q for q in st.artifacts.rglob('*') if q.is_file()):
            out[f'artifact {p.relative_to(st.artifacts)}'] = artifact_digest(p)
    return out


def run_jobs(store: Path):
    "Run the three jobs into `store`."
    for name, fields in JOBS.items():
        print(f"{name}: {fields or 'Experiment() defaults'}", flush=True)
        run_experiment(Experiment(store=str(store), **fields), progress=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', help='where to write the digest (JSON)')
    ap.add_argument('--compare', help='an earlier digest: exit 1 unless every entry is identical')
    ap.add_argument('--store', help='digest this existing store instead of running the jobs')
    ap.add_argument('--keep', help='run the jobs into this folder (kept) instead of a temporary one')
    args = ap.parse_args(argv)
    if args.store: d = digest(Path(args.store))
    elif args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run_jobs(Path(args.keep) / 'fedland.db')
        d = digest(Path(args.keep) / 'fedland.db')
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / 'fedland.db'
            run_jobs(store)
            d = digest(store)
    Path(args.out).write_text(json.dumps(d, indent=1) + '\n')
    print(f'{len(d)} entries written to {args.out}')
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        differ = sorted(k for k in set(ref) | set(d) if ref.get(k) != d.get(k))
        for k in differ: print(f'differs: {k}: {ref.get(k)} -> {d.get(k)}')
        print(f'{len(d) - len(differ)} of {len(set(ref) | set(d))} entries identical')
        if differ: sys.exit(1)


if __name__ == '__main__': main()
