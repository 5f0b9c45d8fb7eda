"""Client valuation end to end: planted clients through the papermill main job (exact and reconstruction values in the
store, both planted clients last), and the reconstruction's agreement with exact retraining Shapley values."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fedland.store import Store
from fedland.valuation import CoalitionGame, Valuation

ROOT = Path(__file__).resolve().parents[1]


def test_planted_clients_come_last_in_the_main_job(tmp_path):
    out, store = tmp_path / 'out.ipynb', tmp_path / 'fedland.db'
    args = dict(
        model='mlp',
        partition='iid',
        n_clients=5,
        rounds=8,
        local_epochs=2,
        valuation='exact',
        noisy_clients='[1]',
        free_riders='[3]',
        landscape_steps=5,
        curvature_probes=2,
        store=str(store),
    )
    cmd = [sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'run.ipynb'), str(out), '--no-progress-bar']
    for k, v in args.items(): cmd += ['-p', k, str(v)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    st = Store(store)
    v = st.table('valuations')
    e = st.table('experiments')
    assert e.status.iloc[0] == 'finished' and json.loads(e.config.iloc[0])['noisy_clients'] == [1]
    assert set(v.method) == {
        'exact_shapley',
        'exact_loo',
        'exact_banzhaf',
        'reconstruction_shapley',
        'reconstruction_loo',
    }
    for m in ('exact_shapley', 'exact_loo', 'reconstruction_shapley'):
        val = Valuation.from_rows(v[v.method == m])
        # the noisy client and the free rider are last
        assert set(val.ranking()[-2:]) == {1, 3}, (m, val.values)
    game = CoalitionGame.load(next(Path(st.artifacts).glob('*/coalition_game.npz')))
    ex = Valuation.from_rows(v[v.method == 'exact_shapley'])
    # efficiency, averaged over the seeds
    assert abs(ex.values.sum() - (game.acc[:, -1] - game.acc[:, 0]).mean()) < 1e-9
    nb = json.loads(out.read_text())
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert 'Client 1' in text and 'points of test accuracy' in text and 'reconstruction vs exact Shapley' in text
    assert not any(o.get('output_type') == 'error' for c in nb['cells'] for o in c.get('outputs', []))
    st.close()


def test_reconstruction_agrees_with_exact_shapley_where_clients_differ():
    """The agreement target at one setting (the rest are in bench/valuation.py): 8 IID clients with quantity skew, MLP,
    FedAvg 20 rounds × 1 epoch. Exact Shapley over two training seeds (2 × 255 FedAvg runs); the reconstruction of one
    ordinary run must reach Spearman ρ ≥ 0.9 or come within 0.05 of the two seeds' own agreement."""
    import torch
    from fedland.data import load_dataset
    from fedland.federated import FedConfig, run_federated
    from fedland.models import build_model
    from fedland.partition import partition
    from fedland.valuation import Reconstruction, agreement, coalition_values, reconstruction_values, validation_sample
    ds = load_dataset('mnist1d')
    part = partition(ds.y_train, 8, 'iid', sigma=1.0, seed=0)
    net = build_model('mlp', ds.input_shape, 10, seed=0)
    cfg = FedConfig(rounds=20, lr=0.05, momentum=0.9, local_epochs=1)
    game = coalition_values(net, ds, part, cfg, seeds=[0, 1], progress=False)
    truth, ceiling = game.values('shapley'), game.seed_agreement()
    vi = torch.as_tensor(validation_sample(part, 512, 0))
    h = run_federated(
        net,
        ds,
        part,
        cfg,
        valuer=Reconstruction(net, ds.x_train[vi], ds.y_train[vi], every=10, last_round=20),
        progress=False,
    )
    a = agreement(truth, reconstruction_values(h))
    print(f"exact game {game.seconds:.0f} s; reconstruction vs exact Shapley: Spearman {a['spearman']:.2f}, Pearson "
          f"{a['pearson']:.2f}; ceiling {ceiling:.2f}")
    assert a['spearman'] >= min(0.9, ceiling - 0.05) and a['pearson'] >= 0.9
    # the largest client is worth most
    assert np.argmax(reconstruction_values(h).values) == np.argmax(truth.values) == np.argmax(part.sizes)


def test_valuation_horizon_values_the_opening_rounds(tmp_path):
    "valuation_horizon=h: the stored reconstruction values are the run game of the same run stopped at round h."
    from fedland.experiment import Experiment, run_experiment

    small = dict(
        model='mlp',
        partition='dirichlet',
        alpha=0.5,
        n_clients=4,
        rounds=4,
        local_epochs=1,
        valuation_every=1,
        centralized=False,
        landscape=False,
        curvature=False,
        contributions=False,
        store=str(tmp_path / 'fedland.db'),
    )
    early = run_experiment(Experiment(valuation_horizon=2, **small), progress=False)
    short = run_experiment(Experiment(**{**small, 'rounds': 2, 'valuation_horizon': None}), progress=False)
    whole = run_experiment(Experiment(**{**small, 'valuation_horizon': None}), progress=False)
    assert whole.valuations['reconstruction_shapley'].rounds == [1, 2, 3, 4]
    e, s = early.valuations['reconstruction_shapley'], short.valuations['reconstruction_shapley']
    assert (
        e.rounds == [1, 2]
        and np.allclose(e.values, s.values, atol=1e-9)
        and np.allclose(e.per_round, s.per_round, atol=1e-9)
    )
    assert Experiment(valuation_horizon=2, **small).id != Experiment(**small).id      # a different study, stored apart
    # the default: the early game of 10 rounds
    assert Experiment(**small).id == Experiment(valuation_horizon=10, **small).id
    st = Store(tmp_path / 'fedland.db')
    v = st.table('valuations')
    assert set(v[v.experiment_id == early.experiment.id]['round'].dropna().astype(int)) == {1, 2}
    st.close()
