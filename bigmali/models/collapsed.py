"""The collapsed model: both L and M integrated out, only the four hyperparameters sampled.

.. math:: p(\\theta \\mid L_{obs}) \\propto p(\\theta) \\prod_k \\int P(M \\mid z_k)\\,
    \\mathrm{LogNormal}(L_{obs,k};\\ \\ln\\mu_L(M, z_k), \\sqrt{S^2+\\sigma_{obs,k}^2})\\, dM

The per-halo integral is the exact quadrature of :mod:`bigmali.likelihood.quadrature`.
``lum_obs`` is an observed sample site with a per-halo ``log_prob``, so NumPyro's
``log_likelihood`` and ArviZ's ``log_likelihood`` group (and LOO) see one term per halo.
Each halo's mass is recovered afterwards from its exact conditional given the hyperparameters
(:mod:`bigmali.halo_masses`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from bigmali import relation
from bigmali.likelihood.detection import prepare_detection_sum
from bigmali.likelihood.quadrature import CollapsedData, QuadratureConfig, log_likelihood_halos, log_selection, prepare
from bigmali.mass_prior import MassPrior, sample_ln_mass
from bigmali.models.common import sample_hyper
from bigmali.relation import Hyper

__all__ = ["CollapsedLumObs", "model", "sharded_model", "prepare_data"]


class CollapsedLumObs(dist.Distribution):
    """``P(L_obs | theta, z)`` per halo with the mass integrated out over the prior.

    ``log_prob`` is the exact collapsed likelihood of the observed values that were
    prepared into ``data``; ``sample`` draws a mass from the prior, then ``L_obs``.
    """

    support = constraints.positive

    def __init__(self, hyper: Hyper, data: CollapsedData, prior: MassPrior, z, config: QuadratureConfig):
        self.hyper, self.data, self.prior, self.z, self.config = hyper, data, prior, z, config
        super().__init__(batch_shape=jnp.shape(z), event_shape=())

    def log_prob(self, value):
        # The observed values were prepared (as ln L_obs) into self.data for speed.
        return log_likelihood_halos(self.hyper, self.data._replace(y=jnp.log(value)), self.config)

    def sample(self, key, sample_shape=()):
        key_m, key_l = jax.random.split(key)
        z = jnp.broadcast_to(self.z, sample_shape + self.batch_shape)
        ln_mass = sample_ln_mass(self.prior, key_m, z)
        ln_mu = relation.ln_mu_L(ln_mass, z, self.hyper)
        sigma = relation.sigma_total(self.hyper.S, relation.sigma_obs_of(self.data.obs_err))
        return jnp.exp(ln_mu + sigma * jax.random.normal(key_l, z.shape))


def prepare_data(z, lum_obs, prior: MassPrior, lum_obs_err=None, lum_lim=None, flux_limit=None) -> CollapsedData:
    """The collapsed likelihood's precomputed constants for this catalog and prior (and the
    halos' own measurement errors and flux limits, if it has them). ``flux_limit`` (the
    :class:`~bigmali.selection.FluxLimit` that gave ``lum_lim``): a constant or a table also
    gets the detection term's interpolation nodes (:mod:`bigmali.likelihood.detection`)."""
    data = prepare(z, lum_obs, prior, lum_obs_err=lum_obs_err, lum_lim=lum_lim)
    if lum_lim is None or flux_limit is None:
        return data
    return data._replace(detection_sum=prepare_detection_sum(z, lum_obs_err, flux_limit, prior))


def model(z, lum_obs, prior: MassPrior, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """Hyperprior, then one observed ``lum_obs`` per halo with the mass integrated out."""
    hyper = sample_hyper()
    with numpyro.plate("halos", jnp.shape(z)[0]):  # each halo's undivided term ...
        numpyro.sample("lum_obs", CollapsedLumObs(hyper, data._replace(y_lim=None), prior, z, config), obs=lum_obs)
    if data.y_lim is not None or data.count is not None:  # ... and the selection's, once
        numpyro.factor("selection", log_selection(hyper, data, config))


def sharded_model(data: CollapsedData, weight, mesh, config: QuadratureConfig = QuadratureConfig()):
    """The collapsed model with the halo axis split across JAX devices (``data`` and ``weight``
    from :func:`bigmali.likelihood.sharding.shard_halos` on ``mesh``): the same density as
    :func:`model`, the halos' terms summed by each device and added across them. It has no
    per-halo site; a fit's per-halo log-likelihoods come from the unsharded tables. A
    flux-limited catalog is conditioned halo by halo (the sharded tables carry no detection
    nodes), and the extended count is not sharded (``shard_halos`` refuses it)."""
    from bigmali.likelihood import sharding

    hyper = sample_hyper()
    numpyro.factor("halos", sharding.log_likelihood(hyper, data, weight, mesh, config))
