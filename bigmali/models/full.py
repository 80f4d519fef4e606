"""The full model: the literal graphical model, latent ``ln M`` and ``ln L`` for every halo.

.. math:: \\theta \\sim p(\\theta), \\quad \\ln M_k \\sim P(M \\mid z_k), \\quad
    \\ln L_k \\sim N(\\ln\\mu_L(M_k, z_k), S), \\quad L_{obs,k} \\sim \\mathrm{LogNormal}(\\ln L_k, \\sigma_{obs,k})

With ``centring="data"`` ``ln M`` is data-centred as in the latent-mass model (on the total
scatter ``sqrt(S^2 + sigma_obs^2)``), and ``ln L`` is sampled relative to its exact
conditional posterior given ``M`` and ``L_obs``: a normal with precision ``1/S^2 +
1/sigma_obs^2``, so the standardised ``ln_lum_u`` is exactly standard normal given the rest.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import AffineTransform

from bigmali import relation
from bigmali.mass_prior import MassPrior
from bigmali.models.centering import CentredReparam
from bigmali.models.common import sample_hyper
from bigmali.models.latent_mass import CENTRINGS, sample_ln_mass, select

__all__ = ["model"]


def model(z, lum_obs, prior: MassPrior, lum_obs_err=None, selection=None, centring: str = "data"):
    """Hyperprior, then per halo latent ``ln_mass`` and ``ln_lum`` and the observed ``lum_obs``
    (``lum_obs_err``: each halo's measurement error, or None for ``sigma_obs``; ``selection``:
    a flux-limited catalog's tables, see :func:`bigmali.models.latent_mass.select`)."""
    if centring not in CENTRINGS:
        raise ValueError(f"centring {centring!r}: choose one of {', '.join(CENTRINGS)}")
    hyper = sample_hyper()
    y = jnp.log(lum_obs)
    sigma_obs = relation.sigma_obs_of(lum_obs_err)
    with numpyro.plate("halos", jnp.shape(z)[0]):
        ln_mass = sample_ln_mass(hyper, prior, z, y, relation.sigma_total(hyper.S, sigma_obs), centring)
        ln_mu = relation.ln_mu_L(ln_mass, z, hyper)
        lum_dist = dist.Normal(ln_mu, hyper.S)
        if centring == "none":
            ln_lum = numpyro.sample("ln_lum", lum_dist)
        else:
            precision = 1.0 / hyper.S**2 + 1.0 / sigma_obs**2
            loc = (ln_mu / hyper.S**2 + y / sigma_obs**2) / precision
            reparam = CentredReparam(AffineTransform(loc, 1.0 / jnp.sqrt(precision)))
            with numpyro.handlers.reparam(config={"ln_lum": reparam}):
                ln_lum = numpyro.sample("ln_lum", lum_dist)
        numpyro.sample("lum_obs", dist.LogNormal(ln_lum, sigma_obs), obs=lum_obs)
    select(hyper, prior, selection)
