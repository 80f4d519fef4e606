"""Pieces every NumPyro model shares: the hyperprior sites and the catalog's halo plate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.reparam import LocScaleReparam

from bigmali.mass_prior import MassPrior, log_prob_ln_mass, sample_ln_mass, table_rows, tabulated_knots
from bigmali.relation import HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD, Hyper

__all__ = ["sample_hyper", "HYPER_REPARAM", "HYPER_SITES", "LnMassPrior", "tabulated_ln_mass_range"]

HYPER_REPARAM = {name: LocScaleReparam(centered=0.0) for name in HYPER_NAMES}
"""Each hyperparameter is sampled as a standard normal ``<name>_decentered`` and scaled by
the hyperprior. The hyperprior is narrow (alpha2's sd is 0.009), so this puts every latent
on unit scale from the first step; the dense mass matrix then learns the correlations."""

HYPER_SITES = tuple(f"{name}_decentered" for name in HYPER_NAMES)
"""The unconstrained sample sites of the hyperparameters (one dense mass-matrix block)."""


def sample_hyper() -> Hyper:
    """Sample alpha1, alpha2, alpha4 and S from the independent normal hyperprior."""
    with numpyro.handlers.reparam(config=HYPER_REPARAM):
        values = [numpyro.sample(name, dist.Normal(mean, sd)) for name, mean, sd in zip(HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD)]
    return Hyper(*values)


class LnMassPrior(dist.Distribution):
    """``ln M`` of a halo at redshift ``z`` under the tabulated mass prior.

    The support is the tabulated mass range: the 2017 background knots beyond it carry a
    probability of ~1e-14 per halo and are left out of the latent models (the collapsed model
    keeps them; the difference in any log-likelihood is below 1e-12 for halos the table can
    explain). Inside the range this is exactly :func:`bigmali.mass_prior.log_prob_ln_mass`.
    """

    def __init__(self, prior: MassPrior, z):
        self.prior, self.z = prior, z
        self.low, self.high = tabulated_ln_mass_range(prior)
        super().__init__(batch_shape=jnp.shape(z), event_shape=())

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def log_prob(self, value):
        step = _uniform_ln_step(self.prior)
        if step is None:
            return log_prob_ln_mass(self.prior, value, self.z)
        # The tables' masses are evenly spaced in ln M: find the interval by arithmetic.
        prior, knots = self.prior, tabulated_knots(self.prior)
        x = jnp.clip(value, self.low, self.high)
        k = jnp.clip(jnp.floor((x - self.low) / step).astype(jnp.int32) + knots.start, knots.start, knots.stop - 2)
        lo, hi, w = table_rows(prior, self.z)
        m0 = prior.mass[k]
        frac = (jnp.exp(x) - m0) / (prior.mass[k + 1] - m0)
        d_lo = prior.density[lo, k] + (prior.density[lo, k + 1] - prior.density[lo, k]) * frac
        d_hi = prior.density[hi, k] + (prior.density[hi, k + 1] - prior.density[hi, k]) * frac
        inside = (value >= self.low) & (value <= self.high)
        return jnp.where(inside, jnp.log((1.0 - w) * d_lo + w * d_hi) + x, -jnp.inf)

    def sample(self, key, sample_shape=()):
        z = jnp.broadcast_to(self.z, sample_shape + self.batch_shape)
        return jnp.clip(sample_ln_mass(self.prior, key, z), self.low, self.high)


def _uniform_ln_step(prior: MassPrior) -> float | None:
    """The ln M spacing of the tabulated knots if it is uniform (hmf's grids are) and known."""
    try:
        ln_mass = np.log(np.asarray(prior.mass[tabulated_knots(prior)], dtype=np.float64))
    except jax.errors.TracerArrayConversionError:  # prior passed as a traced argument
        return None
    steps = np.diff(ln_mass)
    return float(steps.mean()) if np.allclose(steps, steps.mean(), rtol=1e-9, atol=0) else None


def tabulated_ln_mass_range(prior: MassPrior) -> tuple[float, float]:
    """ln M at the first and last tabulated knot (background knots excluded)."""
    knots = tabulated_knots(prior)
    return jnp.log(prior.mass[knots.start]), jnp.log(prior.mass[knots.stop - 1])
