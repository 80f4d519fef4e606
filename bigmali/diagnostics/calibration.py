"""Calibration across many mocks (simulation-based calibration, a smoke-test size).

Draw hyperparameters from the hyperprior, simulate a mock from each, fit it, and record
the rank of the truth among the posterior draws. If the model, the likelihood and the
sampler are right, those quantiles are uniform; a biased likelihood, a wrong noise level or
a sampler that under-disperses shows up as a non-uniform histogram.

All datasets have the same number of halos, so NumPyro compiles the sampler once
(``jit_model_args``) and every further dataset costs only its sampling.
"""

from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS
from scipy import stats

from bigmali import lightcone
from bigmali.mass_prior import MassPrior, load_mass_prior
from bigmali.models import collapsed, quadrature
from bigmali.models.quadrature import QuadratureConfig
from bigmali.relation import HYPER_NAMES, Hyper, sample_hyperprior

__all__ = ["Calibration", "calibrate"]


class Calibration(NamedTuple):
    """Truths and their posterior quantiles, one row per dataset, one column per parameter."""

    truths: np.ndarray  # (n_datasets, 4)
    draws: np.ndarray  # (n_datasets, n_draws, 4)
    seconds: float

    @property
    def quantiles(self) -> np.ndarray:
        """Fraction of each dataset's posterior draws below its truth: (n_datasets, 4)."""
        return np.mean(self.draws < self.truths[:, None, :], axis=1)

    def ks_pvalues(self) -> dict:
        """KS p-value of uniformity per parameter, and for all quantiles pooled."""
        out = {name: float(stats.kstest(self.quantiles[:, i], "uniform").pvalue) for i, name in enumerate(HYPER_NAMES)}
        out["pooled"] = float(stats.kstest(self.quantiles.ravel(), "uniform").pvalue)
        return out


def calibrate(n_datasets: int = 20, n_halos: int = 1000, *, warmup: int = 300, draws: int = 300,
              seed: int = 0, prior: MassPrior | None = None, n_grid: int = 160) -> Calibration:
    """Fit ``n_datasets`` mocks of ``n_halos`` halos, hyperparameters from the hyperprior.

    Each fit is one NUTS chain on the collapsed model. ``n_grid`` and 2-point Gauss-Legendre
    per knot interval set the quadrature: each halo's log-likelihood stays within ~1e-6 of
    the exact value, far below what 10^3 halos can resolve, at a third of the default cost.
    """
    prior = load_mass_prior() if prior is None else prior
    start = time.perf_counter()
    config = QuadratureConfig(n_grid=n_grid, linear=prior.z_interp == "linear")
    mcmc = MCMC(NUTS(partial(collapsed.model, config=config), dense_mass=True), num_warmup=warmup,
                num_samples=draws, num_chains=1, progress_bar=False, jit_model_args=True)
    truths = np.asarray(jnp.stack(sample_hyperprior(jax.random.PRNGKey(seed), (n_datasets,)), axis=1))
    out = np.empty((n_datasets, draws, len(HYPER_NAMES)))
    # NumPyro caches initial states under the ids of the run's arrays; keeping every
    # dataset's arrays alive guarantees that no id is reused for another dataset.
    keep_alive = []
    for d in range(n_datasets):
        mock = lightcone.simulate(prior, Hyper(*truths[d]), n_halos=n_halos, seed=seed * 100003 + d)
        z, lum = jnp.asarray(mock.z), jnp.asarray(mock.lum_obs)
        args = (jax.random.PRNGKey(seed * 7919 + d), z, lum, prior, quadrature.prepare(z, lum, prior, gl_order=2))
        keep_alive.append(args)
        mcmc.run(*args)
        samples = mcmc.get_samples()
        out[d] = np.stack([np.asarray(samples[name]) for name in HYPER_NAMES], axis=1)
    return Calibration(truths, out, time.perf_counter() - start)
