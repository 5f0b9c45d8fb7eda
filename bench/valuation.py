"""Client valuation measured against the ground truth: exact retraining Shapley values over training seeds, and how well
every estimator agrees with them, per setting; timings of the exact game (K = 4…10) and of the reconstruction's
overhead on training.

    # agreement table + timings (~90 min on 2 cores)
    python bench/valuation.py --json bench/results/valuation.json
    # 2 settings, K = 4…8 timings
    python bench/valuation.py --quick --json /tmp/v.json
    # one setting's rows replaced in F
    python bench/valuation.py --json F --merge --settings planted-s1 --skip samples exact overhead
    # noise or bias (~10 min)
    python bench/valuation.py --json bench/results/valuation.json --merge --skip validate samples exact overhead

Settings (MNIST-1D, MLP, K = 8 clients, FedAvg at the Experiment defaults — 30 rounds × 5 local epochs, lr 0.03,
momentum 0.9, weight decay 5e-4, batch 32 — or `--local-epochs/--rounds/--lr` as given): IID and Dirichlet(0.5), each
balanced and with quantity skew (lognormal σ = 1), and a Dirichlet(0.5) split with two planted clients (client 2's
training labels random, client 5 a free rider); then three held-out settings — Dirichlet, Dirichlet unbalanced and
planted drawn with partition seed 1 (`-s1`) — scored only after the window games had been chosen on the first five
(their lengths, 5 and 10 rounds, were the best of 1, 2, 3, 5, 10 and 30 there). The truth is the exact Shapley value of
final test accuracy, averaged over training seeds 0 and 1; its ceiling is the Spearman ρ between the two seeds' exact
values. Each estimator comes from one ordinary training run (seeds 0 and 1: two users' runs) and is scored by Spearman ρ
and Pearson r against the truth (median and min–max over the two runs). A second ceiling: the agreement of the exact
values measured on two random halves of the test set (500 samples each, about the size of the reconstruction's
validation sample) — the seeds share one test set, so their agreement leaves out the evaluation sample's own noise.

`sampled` scores the retraining-backed estimator (`fedland.valuation.sampled_values`) against the exact game: one real
call per setting at the default budget (3 join orders, both training seeds), timed, and the curve of agreement, interval
coverage and cost against the budget (1–8 join orders × 10 draws) from the exact game's own table. Beyond the settings
above it takes a 10-client Dirichlet split (the 5 % cost target) and two splits on the default model, cnn1d:

    python bench/valuation.py --rounds 20 --local-epochs 1 --cache /tmp/vcache \\
        --json bench/results/valuation_sampled_r20e1.json --skip validate diagnose samples exact overhead

`diagnose` asks what limits the agreement, noise or bias: each reconstruction game (the whole run's game, the early game
over the first 5 to 20 rounds, and windows of 3 to 30 rounds) from the same two training runs, measured on three samples
— the default 512 validation samples, the whole held-out pool, and the test set the truth itself is measured on (which
removes the evaluation sample's noise from the comparison). The agreement of the two runs with each other tells how much
noise is left; the agreement with the truth, what the game's bias leaves. It reuses the exact values stored in the
--json file (no exact games are trained)."""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from fedland.contribution import contribution_table
from fedland.curvature import curvature_table
from fedland.data import load_dataset
from fedland.experiment import Experiment, prepare
from fedland.federated import FedConfig, client_ids, run_federated
from fedland.models import build_model, tune_allocator
from fedland.partition import partition
from fedland.valuation import (CoalitionGame, Reconstruction, Valuation, agreement, coalition_values, plant_label_noise,
                               reconstruction_values, run_estimators, validation_sample)

K, SEEDS = 8, (0, 1)
SETTINGS = {
    'iid': dict(scheme='iid'),
    'iid-unbalanced': dict(scheme='iid', sigma=1.0),
    'dirichlet': dict(scheme='dirichlet', alpha=0.5),
    'dirichlet-unbalanced': dict(scheme='dirichlet', alpha=0.5, sigma=1.0),
    'planted': dict(scheme='dirichlet', alpha=0.5),
    # held out: the same kinds of split drawn with another partition seed, scored after the estimators were chosen on
    # the five above
    'dirichlet-s1': dict(scheme='dirichlet', alpha=0.5, partition_seed=1),
    'dirichlet-unbalanced-s1': dict(scheme='dirichlet', alpha=0.5, sigma=1.0, partition_seed=1),
    'planted-s1': dict(scheme='dirichlet', alpha=0.5, partition_seed=1),
    # held out a second time: drawn with partition seed 2 after the early game's horizon had been chosen on the eight
    # above
    'dirichlet-s2': dict(scheme='dirichlet', alpha=0.5, partition_seed=2),
    'dirichlet-unbalanced-s2': dict(scheme='dirichlet', alpha=0.5, sigma=1.0, partition_seed=2),
    'planted-s2': dict(scheme='dirichlet', alpha=0.5, partition_seed=2),
}
# the sampled section only: its cost target at 10 clients (5 % of the exact game's), and the default model
SCALE_SETTINGS = {
    'dirichlet-k10': dict(scheme='dirichlet', alpha=0.5, n_clients=10),
    'cnn1d-dirichlet': dict(scheme='dirichlet', alpha=0.5, model='cnn1d'),
    'cnn1d-dirichlet-unbalanced': dict(scheme='dirichlet', alpha=0.5, sigma=1.0, model='cnn1d'),
}
# the Experiment default (valuation_game='run', valuation_horizon=10)
DEFAULT = 'reconstruction_shapley (early game, 10 rounds)'
NOISY, RIDER = [2], [5]
_E = Experiment()
CFG = dict(
    rounds=_E.rounds,
    lr=_E.lr,
    momentum=_E.momentum,
    local_epochs=_E.local_epochs,
    batch_size=_E.batch_size,
    weight_decay=_E.weight_decay,
)
VAL_SAMPLES = 512
# the early game's horizon: chosen with the diagnose section on the eight settings above, before the -s2 splits were
# drawn
EARLY = 10


class StoredGame:
    ("A setting's exact values as an earlier run of this script stored them (--reuse-truth): what `validate` reads, "
     "without retraining 2 × 255 coalitions.")

    def __init__(self, d):
        self.d, self.seconds, self.acc, self.hits = d, d['exact_seconds'], np.asarray(d['v_full'])[:, None], ()
    def values(self, method='shapley'):
        return Valuation(
            'exact_shapley',
            'accuracy',
            np.asarray(self.d['truth']),
            np.asarray(self.d['truth_se']),
            per_seed=np.asarray(self.d['truth_per_seed']),
        )
    def seed_agreement(self): return self.d['ceiling']
    def split_agreement(self): return self.d['ceiling_split']


class Several:
    "Several valuers on one training run: each round's record holds each one's record under its name."
    def __init__(self, **valuers): self.v = valuers
    def __call__(self, hist, r, *a):
        out = {}
        for name, v in self.v.items():
            h = SimpleNamespace(
                valuations={q: d.get(name, {}) for q, d in hist.valuations.items()},
                n_clients=hist.n_clients,
                global_params=hist.global_params,
            )
            out[name] = v(h, r, *a)
        return out


def _values(est) -> np.ndarray:
    "An estimator's values (a Valuation's, or an array's)."
    return np.asarray(est.values if hasattr(est, 'values') else est)


def _one(hist, name):
    return SimpleNamespace(valuations={r: d[name] for r, d in hist.valuations.items()}, n_clients=hist.n_clients)


def is_planted(name): return name.startswith('planted')


def setting_model(name) -> str:
    "The model a setting trains (the MLP unless it names another)."
    return {**SETTINGS, **SCALE_SETTINGS}[name].get('model', 'mlp')


def setting_data(name, ds0):
    spec = dict({**SETTINGS, **SCALE_SETTINGS}[name])
    pseed = spec.pop('partition_seed', 0)
    spec.pop('model', None)
    part = partition(ds0.y_train, spec.pop('n_clients', K), seed=pseed, **spec)
    ds = plant_label_noise(ds0, part, NOISY, 1.0) if is_planted(name) else ds0
    cfg = FedConfig(**CFG, free_riders=RIDER if is_planted(name) else [])
    return ds, part, cfg


class Recorder:
    "Keeps every round's received model and client models (for estimators tried offline on the same run)."
    def __init__(self): self.rounds = {}
    def __call__(self, hist, r, clients, g0, flats, n, buffers=None):
        self.rounds[r] = (g0.detach().cpu().clone(), flats.detach().cpu().clone(), np.asarray(n))
        return {}
    def save(self, path):
        rs = sorted(self.rounds)
        torch.save(
            {
                'g0': torch.stack([self.rounds[r][0] for r in rs]),
                'flats': torch.stack([self.rounds[r][1] for r in rs]),
                'n': torch.as_tensor(np.stack([self.rounds[r][2] for r in rs])),
            },
            path,
        )


def estimators(net, ds, part, cfg, seed, record=None, light=False):
    ("Every estimator from one training run with this seed (with `record`, that run's updates are saved there; "
     "`light`: the default's early game only).")
    vi = torch.as_tensor(validation_sample(part, VAL_SAMPLES, seed))
    X, Y = ds.x_train[vi], ds.y_train[vi]
    # the Experiment default (valuation_every=5, valuation_horizon=10)
    early = Reconstruction(net, X, Y, every=5, horizon=EARLY, last_round=cfg.rounds)
    early_rows = lambda h: {
        f'reconstruction_shapley (early game, {EARLY} rounds)': reconstruction_values(_one(h, 'early10')),
        f'reconstruction_loo (early game, {EARLY} rounds)': reconstruction_values(_one(h, 'early10'), 'loo'),
    }
    if light:
        h = run_federated(net, ds, part, cfg, seed=seed, valuer=Several(early10=early), progress=False)
        return early_rows(h), h
    several = Several(
        run=Reconstruction(net, X, Y, every=10, last_round=cfg.rounds),
        run_renormalized=Reconstruction(net, X, Y, weighting='renormalized', every=10, last_round=cfg.rounds),
        round_renormalized=Reconstruction(net, X, Y, game='round', weighting='renormalized'),
        round_aggregate=Reconstruction(net, X, Y, game='round', weighting='aggregate'),
        window10=Reconstruction(net, X, Y, game='window', every=10, last_round=cfg.rounds),
        window5=Reconstruction(net, X, Y, game='window', every=5, last_round=cfg.rounds),
        early10=early,
        record=Recorder(),
    )
    h = run_federated(net, ds, part, cfg, seed=seed, valuer=several, progress=False)
    if record is not None: several.v['record'].save(record)
    out = {
        'reconstruction_shapley (run game)': reconstruction_values(_one(h, 'run')),
        'reconstruction_loo (run game)': reconstruction_values(_one(h, 'run'), 'loo'),
        'reconstruction_shapley (run game, loss)': reconstruction_values(_one(h, 'run'), metric='loss'),
        'reconstruction_shapley (run game, renormalized)': reconstruction_values(_one(h, 'run_renormalized')),
        'reconstruction_shapley (round games, renormalized)': reconstruction_values(_one(h, 'round_renormalized')),
        'reconstruction_loo (round games, renormalized)': reconstruction_values(_one(h, 'round_renormalized'), 'loo'),
        'reconstruction_shapley (round games, aggregate)': reconstruction_values(_one(h, 'round_aggregate')),
        'reconstruction_shapley (window game, 10 rounds)': reconstruction_values(_one(h, 'window10')),
        'reconstruction_loo (window game, 10 rounds)': reconstruction_values(_one(h, 'window10'), 'loo'),
        'reconstruction_shapley (window game, 5 rounds)': reconstruction_values(_one(h, 'window5')),
        **early_rows(h),
    }
    owner = client_ids(part, ds.n_train)
    cur = curvature_table(
        net,
        {'global': h.global_model(), **{f'client:{k}': h.client_model(cfg.rounds, k) for k in range(K)}},
        ds.x_train,
        ds.y_train,
        owner,
        lambda_on='own',
        n_probes=10,
        m=15,
        progress=False,
    )
    table = run_estimators(_one(h, 'run'), contribution_table(net, h, ds, part, curvature=cur))
    out.update({k: v for k, v in table.items() if k.startswith('table: ')})
    return out, h


def scores(truth, runs) -> dict:
    "Spearman ρ and Pearson r of every run's estimate against the truth: median and min–max over the runs."
    ag = [agreement(truth, r) for r in runs]
    sp, pe = [a['spearman'] for a in ag], [a['pearson'] for a in ag]
    return dict(spearman=float(np.median(sp)), spearman_min=float(np.min(sp)), spearman_max=float(np.max(sp)),
                pearson=float(np.median(pe)), pearson_min=float(np.min(pe)), pearson_max=float(np.max(pe)))


def merge_validation(old: dict, out: dict) -> dict:
    ("Merge the validation sections of `out` into those of `old` (in `out`): an estimator's row for a setting run now "
     "replaces its old row; the others stay.")
    new = {(r['setting'], r['estimator']) for r in out['agreement']}
    out['agreement'] = [r for r in old.get('agreement', []) if (r['setting'], r['estimator']) not in new] + out[
        'agreement'
    ]
    # older files: one planted setting
    if 'exact_per_seed' in old.get('planted', {}): old['planted'] = {'planted': old['planted']}
    for key, sub in (('per_setting', 'estimates'), ('planted', 'per_estimator')):
        for n, d in out[key].items():
            if n in old.get(key, {}): d[sub] = {**old[key][n].get(sub, {}), **d[sub]}
        out[key] = {**old.get(key, {}), **out[key]}
    if not out['iid_spread']: out['iid_spread'] = old.get('iid_spread', {})
    return out


def validate(names, cache: Path, stored: dict | None = None, light: bool = False):
    ds0 = load_dataset('mnist1d')
    rows, planted, spread, per_setting = [], {}, {}, {}
    for name in names:
        ds, part, cfg = setting_data(name, ds0)
        net = build_model('mlp', ds.input_shape, 10, seed=0)
        gpath = cache / f'game-{name}.npz'
        if gpath.exists(): game = CoalitionGame.load(gpath)
        elif stored and name in stored: game = StoredGame(stored[name])
        else:
            game = coalition_values(
                net, ds, part, cfg, seeds=list(SEEDS), checkpoint_dir=cache / f'ck-{name}', progress=False
            )
            game.save(gpath)
        truth = game.values('shapley')
        ceiling = game.seed_agreement()
        split = game.split_agreement() if game.hits is not None else float('nan')
        runs = [
            estimators(net, ds, part, cfg, s, record=None if light else cache / f'updates-{name}-s{s}.pt', light=light)
            for s in SEEDS
        ]
        print(f'{name}: exact game {game.seconds:.0f} s, v(N) {game.acc[:, -1].round(3)}, ceiling ρ {ceiling:.2f} '
              f'(seeds), {split:.2f} (test-set halves)', flush=True)
        for est in runs[0][0]:
            rows.append(
                dict(
                    setting=name,
                    estimator=est,
                    **scores(truth, [r[0][est] for r in runs]),
                    ceiling=ceiling,
                    ceiling_split=split,
                )
            )
        rec = [r[0][DEFAULT] for r in runs]
        per_setting[name] = dict(
            truth=truth.values.tolist(),
            truth_se=truth.se.tolist(),
            truth_per_seed=truth.per_seed.tolist(),
            sizes=part.sizes.tolist(),
            ceiling=ceiling,
            ceiling_split=split,
            v_full=game.acc[:, -1].tolist(),
            exact_seconds=game.seconds,
            estimates={e: [_values(r[0][e]).tolist() for r in runs] for e in runs[0][0]},
            heatmap=rec[0].per_round.tolist(),
            heatmap_rounds=rec[0].rounds,
        )
        if is_planted(name):
            last = lambda v: sorted(np.argsort(np.asarray(v))[:2].tolist())
            planted[name] = dict(
                exact_per_seed=[last(v) for v in truth.per_seed],
                reconstruction_per_run=[last(_values(r)) for r in rec],
                planted=sorted(NOISY + RIDER),
                estimator=DEFAULT,
                per_estimator={e: [last(_values(r[0][e])) for r in runs] for e in runs[0][0]},
            )
        if name == 'iid':
            spread = dict(reconstruction_std_across_clients=[float(np.std(r.values)) for r in rec],
                          truth_seed_spread=float(np.mean(np.std(truth.per_seed, axis=0, ddof=1))),
                          truth_std_across_clients=float(np.std(truth.values)))
    return rows, planted, spread, per_setting


DIAG_WINDOWS = (3, 5, 10, 15, 30)
DIAG_HORIZONS = (5, 10, 15, 20)


def diagnose(names, per_setting):
    ("Noise or bias: every reconstruction game measured on the validation sample, the held-out pool and the test set, "
     "from the same two runs, against the stored exact values.")
    ds0 = load_dataset('mnist1d')
    rows = []
    for name in names:
        ds, part, cfg = setting_data(name, ds0)
        truth = np.asarray(per_setting[name]['truth'])
        net = build_model('mlp', ds.input_shape, 10, seed=0)
        est = {}
        for s in SEEDS:
            vi, pool = (torch.as_tensor(validation_sample(part, n, s)) for n in (VAL_SAMPLES, None))
            samples = {
                f'validation ({len(vi)})': (ds.x_train[vi], ds.y_train[vi]),
                f'held-out pool ({len(pool)})': (ds.x_train[pool], ds.y_train[pool]),
                f'test set ({ds.n_test})': (ds.x_test, ds.y_test),
            }
            valuers = {}
            for sn, (X, Y) in samples.items():
                valuers[f'run|{sn}'] = Reconstruction(net, X, Y, every=cfg.rounds, last_round=cfg.rounds, bootstrap=0)
                for w in DIAG_WINDOWS:
                    valuers[f'window {w}|{sn}'] = Reconstruction(
                        net, X, Y, game='window', every=w, last_round=cfg.rounds, bootstrap=0
                    )
                for hz in DIAG_HORIZONS:
                    valuers[f'early {hz}|{sn}'] = Reconstruction(
                        net, X, Y, every=hz, horizon=hz, last_round=cfg.rounds, bootstrap=0
                    )
            h = run_federated(net, ds, part, cfg, seed=s, valuer=Several(**valuers), progress=False)
            for k in valuers: est.setdefault(k, []).append(reconstruction_values(_one(h, k)).values)
        for k, runs in est.items():
            game, sample = k.split('|')  # two runs: the median is their mean
            rows.append(
                dict(
                    setting=name,
                    game=game,
                    sample=sample,
                    **scores(truth, runs),
                    runs_agreement=agreement(runs[0], runs[1])['spearman'],
                )
            )
        best = max((r for r in rows if r['setting'] == name), key=lambda r: r['spearman'])
        print(f"{name}: best game {best['game']} on the {best['sample']}: ρ {best['spearman']:.2f}", flush=True)
    return rows


def sample_size(names, cache: Path, sizes=(128, 256, 512, 800), boots=200):
    ("Standard error of the run-game Shapley values that the validation sample's size leaves (bootstrap), and their "
     "agreement with the exact values.")
    from fedland.landscape import evaluate_span
    from fedland.valuation import membership, shapley
    ds0 = load_dataset('mnist1d')
    out = {}
    for name in names:
        ds, part, cfg = setting_data(name, ds0)
        net = build_model('mlp', ds.input_shape, 10, seed=0)
        truth = CoalitionGame.load(cache / f'game-{name}.npz').values('shapley')
        pool = validation_sample(part)                              # every held-out sample
        X, Y = ds.x_train[pool], ds.y_train[pool]
        rec = Reconstruction(net, X, Y, every=cfg.rounds, last_round=cfg.rounds)
        h = run_federated(net, ds, part, cfg, seed=0, valuer=rec, progress=False)
        _, acc = evaluate_span(
            net,
            h.global_params[0],
            torch.as_tensor(h.valuations[cfg.rounds]['contrib']),
            membership(K),
            X,
            Y,
            # correctness of every corner on every sample: (2^K, n)
            owner=torch.arange(len(Y)),
        )
        acc = acc.numpy()
        rng = np.random.default_rng(0)
        res = {}
        for n in sizes:
            n = min(n, len(Y))
            boot = np.stack([shapley(acc[:, rng.integers(0, len(Y), n)].mean(1)) for _ in range(boots)])
            sub = [
                agreement(truth, shapley(acc[:, rng.choice(len(Y), n, replace=False)].mean(1)))['spearman']
                for _ in range(50)
            ]
            res[str(n)] = dict(shapley_se=float(boot.std(0, ddof=1).mean()), spearman_median=float(np.median(sub)),
                               spearman_q10=float(np.quantile(sub, 0.1)), spearman_q90=float(np.quantile(sub, 0.9)))
            print(f"{name} n={n}: SE of a Shapley value {100 * res[str(n)]['shapley_se']:.2f} points, Spearman median "
                  f"{res[str(n)]['spearman_median']:.2f}", flush=True)
        out[name] = dict(pool=int(len(Y)), truth_spread_points=float(100 * np.std(truth.values)), sizes=res)
    return out


BUDGETS = (1, 2, 3, 4, 6, 8)   # join orders of retrained coalitions: the budget curve
DEFAULT_BUDGET = 3            # Experiment.valuation_budget
DRAWS = 10                    # sampling seeds per budget (the join orders drawn)


def sampled(names, cache: Path):
    ("The retraining-backed estimator against the exact game, per setting: one real `sampled_values` call at the "
     "default budget (timed), and the budget curve from the exact game's own table (the same training, shown equal to "
     "the real call).")
    from fedland.valuation import budget_coalitions, learned_shapley, run_game_control, sampled_values, shapley
    ds0 = load_dataset('mnist1d')
    rows, curve = [], []
    for name in names:
        ds, part, cfg = setting_data(name, ds0)
        K = len(part)
        net = build_model(setting_model(name), ds.input_shape, 10, seed=0)
        gpath = cache / f'game-{name}.npz'
        if gpath.exists(): game = CoalitionGame.load(gpath)
        else:
            game = coalition_values(
                net, ds, part, cfg, seeds=list(SEEDS), checkpoint_dir=cache / f'ck-{name}', progress=False
            )
            game.save(gpath)
        truth = game.values('shapley')
        vi = torch.as_tensor(validation_sample(part, VAL_SAMPLES, 0))
        early = Reconstruction(net, ds.x_train[vi], ds.y_train[vi], every=5, horizon=EARLY, last_round=cfg.rounds)
        h = run_federated(net, ds, part, cfg, seed=0, valuer=early, progress=False)     # the user's run (seed 0)
        rec = reconstruction_values(h)
        t0 = time.perf_counter()
        sv = sampled_values(net, ds, part, h, cfg, n_permutations=DEFAULT_BUDGET, seeds=list(SEEDS), progress=False)
        seconds = time.perf_counter() - t0
        ctrl = run_game_control(net, h, ds.x_test, ds.y_test)(range(2 ** K))[:, 0]
        masks = budget_coalitions(K, DEFAULT_BUDGET)
        sim = learned_shapley(K, masks, game.acc[:, masks], ctrl[masks], shapley(ctrl))
        assert np.abs(sim['values'] - sv.values).max() < 1e-5, (
            "the budget curve's tables must be the real estimator's training"
        )
        others = []   # the other users' runs (training seeds): the same retrained coalitions, another control
        for s in SEEDS[1:]:
            hs = run_federated(net, ds, part, cfg, seed=s, valuer=early, progress=False)
            others.append(
                sampled_values(
                    net, ds, part, hs, cfg, n_permutations=DEFAULT_BUDGET, seeds=list(SEEDS), progress=False, reuse=sv
                )
            )
        cover = (sv.lo <= truth.values) & (truth.values <= sv.hi)
        lowest2 = lambda v: sorted(np.argsort(v.values)[:2].tolist())
        rows.append(
            dict(
                setting=name,
                model=setting_model(name),
                clients=K,
                spearman=agreement(truth, sv)['spearman'],
                pearson=agreement(truth, sv)['pearson'],
                reconstruction_spearman=agreement(truth, rec)['spearman'],
                ceiling=game.seed_agreement(),
                coverage=float(cover.mean()),
                half_width_points=float(100 * np.mean((sv.hi - sv.lo) / 2)),
                spread_ratio=float(np.std(sv.values) / np.std(truth.values)),
                seconds=seconds,
                exact_seconds=game.seconds,
                exact_fraction=sv.info['exact_fraction'],
                coalitions=sv.info['coalitions'],
                planted_last=lowest2(sv) if is_planted(name) else None,
                planted_last_per_run=[lowest2(v) for v in (sv, *others)] if is_planted(name) else None,
                spearman_per_run=[agreement(truth, v)['spearman'] for v in (sv, *others)],
                coverage_per_run=[
                    float(((v.lo <= truth.values) & (truth.values <= v.hi)).mean()) for v in (sv, *others)
                ],
                truth=truth.values.tolist(),
                values=sv.values.tolist(),
                lo=sv.lo.tolist(),
                hi=sv.hi.tolist(),
                groups=sv.groups(),
            )
        )
        r = rows[-1]
        print(f"{name}: sampled ρ {r['spearman']:.2f} (reconstruction {r['reconstruction_spearman']:.2f}, ceiling "
              f"{r['ceiling']:.2f}), "
              f"coverage {r['coverage']:.2f}, {100 * r['exact_fraction']:.1f} % of the exact game's client-rounds, "
              f"{seconds:.1f} s", flush=True)
        for P in BUDGETS:
            for draw in range(DRAWS):
                ms = budget_coalitions(K, P, seed=draw)
                est = learned_shapley(K, ms, game.acc[:, ms], ctrl[ms], shapley(ctrl))
                inside = (est['lo'] <= truth.values) & (truth.values <= est['hi'])
                curve.append(
                    dict(
                        setting=name,
                        budget=P,
                        draw=draw,
                        spearman=agreement(truth, est['values'])['spearman'],
                        coverage=float(inside.mean()),
                        half_width_points=float(100 * np.mean(est['hi'] - est['values'])),
                        exact_fraction=sum(bin(m).count('1') for m in ms) / (K * 2 ** (K - 1)),
                    )
                )
    return rows, curve


MANY = (20, 50, 100)           # clients of the many-clients checks
MANY_NOISY = 10                # planted clients with random labels: they must be the lowest
MANY_CFG = dict(rounds=20, local_epochs=1)   # MLP, 20 rounds x 1 epoch
DOUBLE_UP_TO = 100             # the doubled-budget check runs up to this many clients


def many_clients(sizes=MANY, budget=DEFAULT_BUDGET):
    ("No exact truth at 20-100 clients: the checks that must hold. Ten clients with random labels are the ten lowest; "
     "two clients holding identical data get overlapping intervals; doubling the budget keeps every value in its "
     "earlier interval; the values add up to v(N) − v(∅). Reconstruction (sampled) is scored against the estimator.")
    from fedland.partition import Partition
    from fedland.valuation import sampled_values
    out = []
    for K in sizes:
        ds = load_dataset('mnist1d', n_samples=max(5000, 125 * K))   # 100 training samples a client
        base = partition(ds.y_train, K, 'iid', seed=0)
        train, hold = list(base.train), list(base.holdout)
        train[K - 1], hold[K - 1] = train[0].copy(), hold[0].copy()          # client K−1 holds client 0's data
        part = Partition(train, hold, base.labels, base.n_classes, scheme='iid+duplicate', seed=0)
        noisy = list(range(1, 1 + MANY_NOISY))
        ds = plant_label_noise(ds, part, noisy, 1.0)
        cfg = FedConfig(**{**CFG, **MANY_CFG})
        net = build_model('mlp', ds.input_shape, 10, seed=0)
        vi = torch.as_tensor(validation_sample(part, VAL_SAMPLES, 0))
        rec = Reconstruction(net, ds.x_train[vi], ds.y_train[vi], every=5, horizon=EARLY, last_round=cfg.rounds)
        t0 = time.perf_counter()
        h = run_federated(net, ds, part, cfg, seed=0, valuer=rec, progress=False)
        run_seconds = time.perf_counter() - t0
        runs = {}
        for P in (budget, 2 * budget) if K <= DOUBLE_UP_TO else (budget,):   # doubling retrains only the new coalitions
            t0 = time.perf_counter()
            runs[P] = sampled_values(
                net, ds, part, h, cfg, n_permutations=P, seeds=list(SEEDS), progress=False, reuse=runs.get(budget)
            )
            runs[P].info['wall_seconds'] = time.perf_counter() - t0
        a, b = runs[budget], runs.get(2 * budget, runs[budget])
        inside = (b.values >= a.lo) & (b.values <= a.hi)
        lowest = sorted(np.argsort(a.values)[:MANY_NOISY].tolist())
        rv = reconstruction_values(h)
        row = dict(
            K=K,
            n_train=ds.n_train,
            run_seconds=run_seconds,
            seconds=a.info['wall_seconds'],
            seconds_doubled=a.info['wall_seconds'] + b.info['wall_seconds'] if b is not a else None,
            coalitions=a.info['coalitions'],
            coalitions_doubled=b.info['coalitions'],
            client_rounds=a.info['client_rounds'],
            half_width_points=float(100 * np.mean((a.hi - a.lo) / 2)),
            half_width_points_max=float(100 * np.max((a.hi - a.lo) / 2)),
            half_width_points_doubled=float(100 * np.mean((b.hi - b.lo) / 2)),
            mean_value_points=float(100 * np.mean(a.values)),
            noisy_lowest=lowest == noisy,
            lowest=lowest,
            noisy_in_lowest=len(set(lowest) & set(noisy)),
            noisy_lowest_up_to_ties=bool(all(a.hi[c] >= a.lo[n] for c in range(K) if c not in noisy for n in noisy)),
            duplicates_overlap=bool(a.lo[0] <= a.hi[K - 1] and a.lo[K - 1] <= a.hi[0]),
            duplicate_values_points=[float(100 * a.values[0]), float(100 * a.values[K - 1])],
            doubled_inside=float(inside.mean()) if b is not a else None,
            efficiency_gap=float(a.values.sum() - (a.per_seed.sum(1).mean())),
            reconstruction_spearman=agreement(a, rv)['spearman'],
            values=a.values.tolist(),
            lo=a.lo.tolist(),
            hi=a.hi.tolist(),
            values_doubled=b.values.tolist(),
        )
        out.append(row)
        print(
            f"K={K}: {row['seconds']:.0f} s (doubled budget: {row['seconds_doubled']} s), half-width "
            f"{row['half_width_points']:.2f} points "
            f"(max {row['half_width_points_max']:.2f}), noisy lowest {row['noisy_lowest']} "
            f"({row['noisy_in_lowest']}/10, "
            f"up to ties {row['noisy_lowest_up_to_ties']}), duplicates overlap {row['duplicates_overlap']}, "
            f"doubled inside {row['doubled_inside']}, reconstruction ρ {row['reconstruction_spearman']:.2f}",
            flush=True,
        )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--json', default=None)
    ap.add_argument('--cache', default=None, help='folder for the exact games (reused when present)')
    ap.add_argument('--skip', nargs='*', default=[], help='sections to skip: validate diagnose samples exact overhead '
                                                          'sampled many')
    ap.add_argument(
        '--local-epochs',
        type=int,
        default=CFG['local_epochs'],
        help=f"local epochs per round of every run (default {CFG['local_epochs']})",
    )
    ap.add_argument('--rounds', type=int, default=CFG['rounds'], help=f"rounds of every run (default {CFG['rounds']})")
    ap.add_argument('--settings', nargs='*', default=None,
                    help=f"settings to validate (default all: {' '.join(SETTINGS)}; the sampled section also takes "
                         f"{' '.join(SCALE_SETTINGS)})")
    ap.add_argument(
        '--merge', action='store_true', help='update the sections run in an existing --json file, keep the others'
    )
    ap.add_argument('--light', action='store_true', help="validate recomputes the default estimator (the early game) "
                                                         "only; with --merge the other estimators' rows stay")
    ap.add_argument(
        '--reuse-truth',
        action='store_true',
        help='settings without an exact game in --cache take their exact '
             'values from the --json file (re-scores the estimators in minutes)',
    )
    a = ap.parse_args()
    tune_allocator()   # as run_experiment does: reused evaluation tensors are not faulted in again
    CFG['local_epochs'], CFG['rounds'] = a.local_epochs, a.rounds
    cache = (
        Path(a.cache or tempfile.mkdtemp()) / f"r{a.rounds}e{a.local_epochs}lr{CFG['lr']:g}wd{CFG['weight_decay']:g}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    out = {'command': 'python bench/valuation.py ' + ' '.join(sys.argv[1:]),
           'machine': {'cpus': os.cpu_count(), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                       'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'quick': a.quick},
           'settings': dict(K=K, seeds=list(SEEDS), model='mlp', validation_samples=VAL_SAMPLES, **CFG)}
    # the results so far (--merge, --reuse-truth, diagnose)
    old = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    if 'validate' not in a.skip:
        names = a.settings or (['dirichlet-unbalanced', 'planted'] if a.quick else list(SETTINGS))
        rows, planted, spread, per = validate(
            names, cache, old.get('per_setting', {}) if a.reuse_truth else None, a.light
        )
        out.update(agreement=rows, planted=planted, iid_spread=spread, per_setting=per)
    if 'diagnose' not in a.skip:
        per = out.get('per_setting') or old.get('per_setting', {})
        if not per: raise SystemExit('diagnose needs the exact values: run the validate section, or pass the --json '
                                     'file that holds them')
        out['diagnose'] = diagnose([n for n in (a.settings or list(SETTINGS)) if n in per], per)
    if 'sampled' not in a.skip:
        names = a.settings or (['dirichlet-unbalanced', 'planted'] if a.quick else [*SETTINGS, *SCALE_SETTINGS])
        out['sampled'], out['sampled_curve'] = sampled(names, cache)
    if 'many' not in a.skip and not a.settings:   # --settings names the per-setting sections only
        out['many'] = many_clients((20,) if a.quick else MANY)
    if 'samples' not in a.skip:
        out['validation_samples'] = sample_size(
            ['dirichlet', 'dirichlet-unbalanced'] if not a.quick else ['dirichlet-unbalanced'], cache
        )
    # rows run now replace theirs, the others stay
    if a.merge and old and 'validate' not in a.skip: merge_validation(old, out)
    # bench/run.py's timings (median and min–max of alternated repetitions)
    from run import bench_exact, bench_overhead
    if 'exact' not in a.skip: out['exact_seconds'] = bench_exact(range(4, 9) if a.quick else range(4, 11), 3)
    if 'overhead' not in a.skip:
        out['reconstruction_overhead'] = [
            bench_overhead(5),
            bench_overhead(5, model='mlp'),
            bench_overhead(5, valuation_horizon=None, valuation_every=10),
            bench_overhead(5, local_epochs=1),
        ]
    if a.json:
        if a.merge and old:
            # the agreement table's machine stays
            if 'validate' in a.skip and 'machine' in old: out['machine_merged'] = out.pop('machine')
            out = {**old, **out}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    if 'agreement' in out:
        import pandas as pd
        df = pd.DataFrame(out['agreement'])
        with pd.option_context('display.width', 250, 'display.max_rows', 500):
            print(df.pivot(index='estimator', columns='setting', values='spearman').round(2).to_string())


if __name__ == '__main__':
    main()
