"""Shared fixtures: the default prior, a small mock and a short collapsed NUTS fit of it, once per session.

Every test process of one run (pytest-xdist's workers and the CLI subprocesses they start)
shares one fresh JAX compilation cache, so a program compiled by one is loaded by the others;
a new run starts empty, as CI does.
"""

import os
import tempfile

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


@pytest.fixture(scope="session")
def nuts_run(small_mock, prior):
    """Collapsed NUTS, 2 x (200 + 200), with per-halo masses at 4 draws and the log_likelihood group."""
    return bigmali.fit(small_mock, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=4, seed=1)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """JAX keeps every executable it compiles; after each test file, drop them. One process
    running the whole suite segfaulted in XLA inside the SBC tests once the fault tests'
    fits were added (the same memory exhaustion SBC itself guards against)."""
    yield
    import jax

    jax.clear_caches()
