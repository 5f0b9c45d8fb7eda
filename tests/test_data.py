"""fedland.data: offline datasets, and the torchvision-format readers on tiny files written here."""
import gzip

import numpy as np
import pytest
import torch

from fedland.data import (DATASETS, DatasetFileError, load_dataset, write_cifar_bin, write_idx)


def test_mnist1d_identical_and_shaped(tmp_path):
    a = load_dataset('mnist1d', root=tmp_path)
    b = load_dataset('mnist1d', root=tmp_path)  # from the cache
    c = load_dataset('mnist1d', root=tmp_path / 'other')  # regenerated
    assert a.x_train.shape == (4000, 40) and a.x_test.shape == (1000, 40)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    for d in (b, c):
        assert torch.equal(a.x_train, d.x_train) and torch.equal(a.y_test, d.y_test)


def test_mnist1d_corrupt_cache_names_file(tmp_path):
    load_dataset('mnist1d', root=tmp_path)
    f = tmp_path / 'mnist1d' / 'mnist1d.npz'
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(DatasetFileError, match=str(f)):
        load_dataset('mnist1d', root=tmp_path)


def test_digits():
    d = load_dataset('digits')
    assert (d.n_train, d.n_test, d.input_shape) == (1437, 360, (1, 8, 8))
    assert set(d.y_test.tolist()) == set(range(10))


def _write_mnist(root, folder, n_train=20, n_test=10, gz=False):
    rng = np.random.default_rng(0)
    raw = root / folder / 'raw'
    files = {'train-images-idx3-ubyte': rng.integers(0, 256, (n_train, 28, 28)),
             'train-labels-idx1-ubyte': rng.integers(0, 10, n_train),
             't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test, 28, 28)),
             't10k-labels-idx1-ubyte': rng.integers(0, 10, n_test)}
    for name, a in files.items():
        write_idx(raw / name, a)
        if gz:
            p = raw / name
            (raw / (name + '.gz')).write_bytes(gzip.compress(p.read_bytes()))
            p.unlink()
    return files


@pytest.mark.parametrize('name,folder', [('mnist', 'MNIST'), ('fashion_mnist', 'FashionMNIST')])
@pytest.mark.parametrize('gz', [False, True])
def test_idx_datasets(tmp_path, name, folder, gz):
    files = _write_mnist(tmp_path, folder, gz=gz)
    d = load_dataset(name, root=tmp_path, download=False)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.y_train.tolist() == files['train-labels-idx1-ubyte'].tolist()
    # normalised pixels: the raw uint8 values are recoverable
    mean, std = {'mnist': (0.1307, 0.3081), 'fashion_mnist': (0.2860, 0.3530)}[name]
    back = torch.round((d.x_train[:, 0] * std + mean) * 255).to(torch.int64).numpy()
    np.testing.assert_array_equal(back, files['train-images-idx3-ubyte'])


def test_idx_truncated_and_mismatched(tmp_path):
    _write_mnist(tmp_path, 'MNIST')
    f = tmp_path / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte'
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DatasetFileError, match='t10k-images-idx3-ubyte'):
        load_dataset('mnist', root=tmp_path, download=False)
    _write_mnist(tmp_path, 'MNIST')
    write_idx(tmp_path / 'MNIST' / 'raw' / 'train-labels-idx1-ubyte', np.zeros(19))
    with pytest.raises(DatasetFileError, match='do not match'):
        load_dataset('mnist', root=tmp_path, download=False)


def test_missing_without_download_names_file(tmp_path):
    with pytest.raises(DatasetFileError, match='train-images-idx3-ubyte'):
        load_dataset('mnist', root=tmp_path, download=False)
    with pytest.raises(DatasetFileError, match='data_batch_1.bin'):
        load_dataset('cifar10', root=tmp_path, download=False)


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'cifar-10-batches-bin'
    xs = {}
    for f in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
        x, y = rng.integers(0, 256, (4, 3, 32, 32)), rng.integers(0, 10, 4)
        write_cifar_bin(folder / f, x, y)
        xs[f] = (x, y)
    d = load_dataset('cifar10', root=tmp_path, download=False)
    assert d.x_train.shape == (20, 3, 32, 32) and d.n_test == 4 and d.input_shape == (3, 32, 32)
    assert d.y_test.tolist() == xs['test_batch.bin'][1].tolist()
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    back = np.round((d.x_test.numpy() * std[:, None, None] + mean[:, None, None]) * 255)
    np.testing.assert_array_equal(back, xs['test_batch.bin'][0])
    (folder / 'data_batch_3.bin').write_bytes(b'\x00' * 3000)
    with pytest.raises(DatasetFileError, match='data_batch_3.bin'):
        load_dataset('cifar10', root=tmp_path, download=False)


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError) as e:
        load_dataset('svhn')
    for n in DATASETS:
        assert n in str(e.value)
