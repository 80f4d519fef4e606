"""Shared fixtures: the default prior, a small mock and a short collapsed NUTS fit of it, once per session.

Every test process of one run (pytest-xdist's workers and the CLI subprocesses they start)
shares one fresh JAX compilation cache, so a program compiled by one is loaded by the others;
a new run starts empty, as CI does. The shared NUTS run is made once per run too: the first
worker to ask fits and saves it, the others load it.
"""

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

import bigmali
from bigmali.utils import CACHE_ENV, use_compilation_cache

_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ[CACHE_ENV] = os.path.join(tempfile.gettempdir(), f"bigmali-test-jax-cache-{_run}")
use_compilation_cache()


@pytest.fixture(scope="session")
def prior():
    return bigmali.load_mass_prior()


@pytest.fixture(scope="session")
def prior_linear():
    return bigmali.load_mass_prior(z_interp="linear")


@pytest.fixture(scope="session")
def small_mock(prior):
    """1,500 halos from the hyperseed."""
    return bigmali.simulate(prior, n_halos=1500, seed=21)


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (made if absent) across this run's processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def nuts_run(small_mock, prior):
    """Collapsed NUTS, 2 x (200 + 200), with per-halo masses at 4 draws and the log_likelihood
    group: fitted by the first worker that asks and saved; every worker loads the saved run, so
    all see the same object (tests/test_fit.py checks that a run loads as it was saved)."""
    shared = Path(os.environ[CACHE_ENV] + "-nuts-run.nc")
    with _locked(shared.with_suffix(".lock")):
        if not shared.exists():
            run = bigmali.fit(
                small_mock, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=4, seed=1
            )
            bigmali.save_run(run, shared)
    return bigmali.load_run(shared)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """JAX keeps every executable it compiles; after each test file, drop them. One process
    running the whole suite segfaulted in XLA inside the SBC tests once the fault tests'
    fits were added (the same memory exhaustion SBC itself guards against)."""
    yield
    import jax

    jax.clear_caches()
