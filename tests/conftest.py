import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist1d_labels(tmp_path_factory):
    from fedland.data import load_dataset
    return load_dataset("mnist1d", root=tmp_path_factory.mktemp("data")).y_train.numpy()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
