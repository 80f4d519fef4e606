"""Pieces every NumPyro model shares: the hyperprior sites and the catalog's halo plate."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.reparam import LocScaleReparam

from bigmali.mass_prior import MassPrior, log_prob_ln_mass, sample_ln_mass, tabulated_ln_mass_range
from bigmali.relation import HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD, Hyper

__all__ = ["sample_hyper", "HYPER_REPARAM", "HYPER_SITES", "LnMassPrior"]

HYPER_REPARAM = {name: LocScaleReparam(centered=0.0) for name in HYPER_NAMES}
"""Each hyperparameter is sampled as a standard normal ``<name>_decentered`` and scaled by
the hyperprior. The hyperprior is narrow (alpha2's sd is 0.009), so this puts every latent
on unit scale from the first step; the dense mass matrix then learns the correlations."""

HYPER_SITES = tuple(f"{name}_decentered" for name in HYPER_NAMES)
"""The unconstrained sample sites of the hyperparameters (one dense mass-matrix block)."""


def sample_hyper() -> Hyper:
    """Sample alpha1, alpha2, alpha4 and S from the independent normal hyperprior."""
    with numpyro.handlers.reparam(config=HYPER_REPARAM):
        values = [
            numpyro.sample(name, dist.Normal(mean, sd))
            for name, mean, sd in zip(HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD)
        ]
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
        inside = (value >= self.low) & (value <= self.high)
        return jnp.where(inside, log_prob_ln_mass(self.prior, value, self.z), -jnp.inf)

    def sample(self, key, sample_shape=()):
        z = jnp.broadcast_to(self.z, sample_shape + self.batch_shape)
        return jnp.clip(sample_ln_mass(self.prior, key, z), self.low, self.high)
