"""Shared fixtures: the default prior, a small mock and a short collapsed NUTS fit of it, once per session.

Every test process of one run (pytest-xdist's workers and the CLI subprocesses they start)
shares one fresh JAX compilation cache, so a program compiled by one is loaded by the others;
a new run starts empty, as CI does. The shared NUTS run is made once per run too: under
pytest-xdist a process started beside the workers fits and saves it while they run other
tests (a worker that needs it first waits for it); without xdist the first test to ask fits it.
"""

import fcntl
import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

import bigmali
from bigmali.utils import CACHE_ENV, use_compilation_cache

# The controller names the run; its workers inherit the name through the environment.
_run = os.environ.setdefault("BIGMALI_TEST_RUN", uuid.uuid4().hex[:12])
os.environ[CACHE_ENV] = os.path.join(tempfile.gettempdir(), f"bigmali-test-jax-cache-{_run}")
use_compilation_cache()

SHARED_FIT = {"n_halos": 1500, "mock_seed": 21, "chains": 2, "warmup": 200, "draws": 300, "mass_draws": 4, "seed": 1}
"""The shared NUTS run's settings (the ``small_mock`` and the fit of ``nuts_run``)."""


def _fit_shared(path: Path, mock=None, prior=None) -> None:
    """Fit the shared NUTS run (SHARED_FIT) and save it to ``path``."""
    s = SHARED_FIT
    prior = bigmali.load_mass_prior() if prior is None else prior
    mock = bigmali.simulate(prior, n_halos=s["n_halos"], seed=s["mock_seed"]) if mock is None else mock
    run = bigmali.fit(
        mock,
        prior=prior,
        chains=s["chains"],
        warmup=s["warmup"],
        draws=s["draws"],
        progress=False,
        mass_draws=s["mass_draws"],
        seed=s["seed"],
    )
    bigmali.save_run(run, path)


# The controller's child imports this file (with the run's environment) and calls _fit_shared.
_FIT_SHARED = "import sys; sys.path.insert(0, sys.argv[2]); import conftest; conftest._fit_shared(sys.argv[1])"


def _shared_run_path() -> Path:
    return Path(os.environ[CACHE_ENV] + "-nuts-run.nc")


def pytest_configure(config):
    """Under pytest-xdist, the controller starts the shared fit in a process of its own,
    holding the run's lock until it has saved the run (the lock's file description passes
    to the child, so no worker can take the lock first)."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    lock = open(_shared_run_path().with_suffix(".lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    log = open(_shared_run_path().with_suffix(".log"), "w")
    config._bigmali_shared_fit = subprocess.Popen(
        [sys.executable, "-c", _FIT_SHARED, str(_shared_run_path()), str(Path(__file__).parent)],
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=(lock.fileno(),),
    )
    lock.close()  # the child holds the lock until it exits
    log.close()


def pytest_unconfigure(config):
    child = getattr(config, "_bigmali_shared_fit", None)
    if child is not None and child.poll() is None:  # a run that never needed it (a subset)
        child.kill()
        child.wait()


@pytest.fixture(scope="session")
def prior():
    return bigmali.load_mass_prior()


@pytest.fixture(scope="session")
def prior_linear():
    return bigmali.load_mass_prior(z_interp="linear")


@pytest.fixture(scope="session")
def small_mock(prior):
    """1,500 halos from the hyperseed."""
    return bigmali.simulate(prior, n_halos=SHARED_FIT["n_halos"], seed=SHARED_FIT["mock_seed"])


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
    """Collapsed NUTS, 2 x (200 + 300), with per-halo masses at 4 draws and the log_likelihood
    group: fitted once per run (by the controller's child under xdist, else here) and saved;
    every worker loads the saved run, so all see the same object (tests/test_fit.py checks
    that a run loads as it was saved). Should the child fail, the worker fits it itself."""
    shared = _shared_run_path()
    with _locked(shared.with_suffix(".lock")):
        if not shared.exists():
            _fit_shared(shared, small_mock, prior)
    return bigmali.load_run(shared)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """JAX keeps every executable it compiles; after each test file, drop them. One process
    running the whole suite segfaulted in XLA inside the SBC tests once the fault tests'
    fits were added (the same memory exhaustion SBC itself guards against)."""
    yield
    import jax

    jax.clear_caches()
