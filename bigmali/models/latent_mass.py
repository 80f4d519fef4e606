"""The latent-mass model: one ``ln M`` per halo, ``L`` integrated out analytically.

.. math:: \\theta \\sim p(\\theta), \\quad \\ln M_k \\sim P(M \\mid z_k), \\quad
    L_{obs,k} \\mid M_k \\sim \\mathrm{LogNormal}(\\ln\\mu_L(M_k, z_k), \\sqrt{S^2+\\sigma_{obs,k}^2})

Written literally, NUTS cannot mix it at 10^5 halos: alpha1 moves every mass at once. With
``centring="data"`` (the default) every ``ln M`` is sampled through the data-centred map of
:mod:`bigmali.models.centering`; ``centring="none"`` keeps NumPyro's default map of the
bounded mass range (a logistic of ``ln M`` itself), for comparison. Both sample the same
posterior; the posterior has ``ln_mass`` per halo either way.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bigmali import relation
from bigmali.mass_prior import MassPrior
from bigmali.models.centering import CentredReparam, TruncatedLogisticQuantile
from bigmali.models.common import LnMassPrior, sample_hyper
from bigmali.relation import Hyper

__all__ = ["model", "CENTRINGS", "mass_centre"]

CENTRINGS = ("data", "none")


def mass_centre(hyper: Hyper, ln_lum, ln1pz, sigma):
    """The ln M a luminosity points at, and the likelihood's width in ln M."""
    return relation.ln_mass_pointed(ln_lum, ln1pz, hyper), sigma / hyper.alpha2


def sample_ln_mass(hyper: Hyper, prior: MassPrior, z, ln_lum, sigma, centring: str):
    """The ``ln_mass`` site, data-centred on ``ln_lum`` (with scatter ``sigma``) if asked."""
    mass_prior = LnMassPrior(prior, z)
    if centring == "none":
        return numpyro.sample("ln_mass", mass_prior)
    loc, scale = mass_centre(hyper, ln_lum, jnp.log1p(z), sigma)
    transform = TruncatedLogisticQuantile(loc, scale, mass_prior.low, mass_prior.high)
    with numpyro.handlers.reparam(config={"ln_mass": CentredReparam(transform)}):
        return numpyro.sample("ln_mass", mass_prior)


def model(z, lum_obs, prior: MassPrior, lum_obs_err=None, selection=None, centring: str = "data"):
    """Hyperprior, then per halo a latent ``ln_mass`` and the observed ``lum_obs``
    (``lum_obs_err``: each halo's measurement error, or None for ``sigma_obs``;
    ``selection``: a flux-limited catalog's prepared tables, see :func:`select`)."""
    if centring not in CENTRINGS:
        raise ValueError(f"centring {centring!r}: choose one of {', '.join(CENTRINGS)}")
    hyper = sample_hyper()
    sigma = relation.sigma_total(hyper.S, relation.sigma_obs_of(lum_obs_err))
    with numpyro.plate("halos", jnp.shape(z)[0]):
        ln_mass = sample_ln_mass(hyper, prior, z, jnp.log(lum_obs), sigma, centring)
        numpyro.sample("lum_obs", dist.LogNormal(relation.ln_mu_L(ln_mass, z, hyper), sigma), obs=lum_obs)
    select(hyper, prior, selection)


def select(hyper: Hyper, prior: MassPrior, selection) -> None:
    """Condition every halo on its detection: the factor ``-sum_k ln P(L_obs > L_lim,k | theta, z_k)``.

    A flux-limited catalog's halos are draws of ``p(M) p(L_obs | M) 1[L_obs > L_lim] / P_det``:
    the latent mass keeps its prior and its observation density, and each halo is divided by
    its detection probability, the mass integrated out (the collapsed model's exact
    :func:`~bigmali.likelihood.quadrature.log_detection_probability`). Equivalently, the
    observation density truncated at the limit, with the mass prior reweighted by the
    probability of detection at that mass.

    With the extended likelihood (``selection.count``) the halos keep their complete-catalog
    densities and the factor is ``-Lambda(theta)``, the expected number of detected halos.
    """
    if selection is None:
        return
    from bigmali.likelihood.quadrature import QuadratureConfig, log_selection

    numpyro.factor("selection", log_selection(hyper, selection, QuadratureConfig.for_prior(prior)))
