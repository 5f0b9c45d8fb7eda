import numpy as np
import pytest


@pytest.fixture(scope='session')
def mnist1d_labels(tmp_path_factory):
    from fedland.data import load_dataset
    return load_dataset('mnist1d', root=tmp_path_factory.mktemp('data')).y_train.numpy()


@pytest.fixture(scope='session')
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope='session')
def postgres():
    """A PostgreSQL server on loopback for the session (CI installs it; elsewhere the tests skip without it)."""
    import os
    from tests.pg import PostgresServer, available
    if not available():
        if os.environ.get('CI'):
            pytest.fail('PostgreSQL is not installed; .ci/run installs it')
        pytest.skip('PostgreSQL server binaries not installed (apt-get install postgresql)')
    srv = PostgresServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope='module')
def one_thread():
    """For tests that compare a subprocess started with OMP_NUM_THREADS=1 (FEDn runs, Flower SuperNodes) bit for bit
    with an in-process reference: compute the reference with one thread too. A float32 reduction split over two threads
    rounds differently on some CPUs (3e-8 apart on the session-3 machine)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
