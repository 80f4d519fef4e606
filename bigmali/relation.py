"""The mass-luminosity relation, the observation noise and the hyperprior.

This module is the single statement of the science shared by every model and every
likelihood method in bigmali:

.. math::

    \\ln \\mu_L = \\alpha_1 + \\alpha_2 \\ln(M / \\alpha_3) + \\alpha_4 \\ln(1 + z)

    L \\mid M \\sim \\mathrm{LogNormal}(\\ln \\mu_L, S), \\qquad
    L_{obs} \\mid L \\sim \\mathrm{LogNormal}(\\ln L, \\sigma_{obs})

so that, with ``L`` integrated out, ``L_obs | M ~ LogNormal(ln mu_L, sqrt(S^2 + sigma_obs^2))``.
``sigma_obs`` is :data:`SIGMA_OBS` for every halo, or each halo's own where the catalog has a
``lum_obs_err`` column (:func:`sigma_obs_of`).

The constants are those of the 2017 code: the hyperprior is from Reddick et al. (2013),
the hyperseed is one draw of that hyperprior (numpy seed 0) and generated the 2017 mocks.
Luminosities are in the units of the 2017 catalogs; masses in Msun (see ``mass_prior``
for the mass convention).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

__all__ = [
    "ALPHA3",
    "SIGMA_OBS",
    "Hyper",
    "HYPERSEED",
    "HYPERPRIOR_MEAN",
    "HYPERPRIOR_SD",
    "HYPER_NAMES",
    "ln_mu_L",
    "ln_mu_L_ln1pz",
    "reduced_observable",
    "reduced_observable_affine",
    "ln_mass_pointed",
    "lognormal_logpdf",
    "sigma_total",
    "sigma_obs_of",
    "hyperprior_logpdf",
    "sample_hyperprior",
    "parse_hyper",
    "hyper_to_meta",
    "hyper_from_meta",
]

ALPHA3 = 2.35e14
"""Pivot mass of the relation (Msun, fixed)."""

SIGMA_OBS = 0.05
"""Lognormal scatter of the observed luminosity about the true one."""

_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Hyper(NamedTuple):
    """The four free hyperparameters of the relation.

    Attributes:
        alpha1: log-luminosity at the pivot mass ``alpha3`` and z = 0.
        alpha2: slope of ln L against ln M.
        alpha4: redshift evolution, the power of (1 + z).
        S: intrinsic lognormal scatter of L at fixed M.
    """

    alpha1: float
    alpha2: float
    alpha4: float
    S: float


HYPER_NAMES: tuple[str, ...] = Hyper._fields

HYPERSEED = Hyper(
    alpha1=10.747809151611289,
    alpha2=0.36260141487530501,
    alpha4=1.1587242790463443,
    S=0.1570168038792813,
)
"""The hyperparameters that generated the 2017 mock catalogs."""

HYPERPRIOR_MEAN = Hyper(alpha1=10.709, alpha2=0.359, alpha4=1.10, S=0.155)
HYPERPRIOR_SD = Hyper(alpha1=0.022, alpha2=0.009, alpha4=0.06, S=0.0009)
"""Independent normal hyperprior of Reddick et al. (2013): mean and standard deviation."""


def ln_mu_L(ln_mass, z, hyper: Hyper, alpha3: float = ALPHA3):
    """Log of the median luminosity at mass ``exp(ln_mass)`` (Msun) and redshift ``z``.

    .. math:: \\ln \\mu_L = \\alpha_1 + \\alpha_2 (\\ln M - \\ln \\alpha_3) + \\alpha_4 \\ln(1+z)
    """
    return ln_mu_L_ln1pz(ln_mass, jnp.log1p(z), hyper, alpha3)


def ln_mu_L_ln1pz(ln_mass, ln1pz, hyper: Hyper, alpha3: float = ALPHA3):
    """:func:`ln_mu_L` with ``ln(1 + z)`` given, for loops that precompute it."""
    return hyper.alpha1 + hyper.alpha2 * (ln_mass - math.log(alpha3)) + hyper.alpha4 * ln1pz


def reduced_observable(ln_lum, ln1pz, hyper: Hyper):
    """``r = ln L - ln mu_L(M = 1 Msun, z)``, so that ``r = alpha2 ln M + noise``.

    A halo's likelihood depends on its luminosity and redshift only through ``r`` (and its
    prior table): the exact quadrature, the mass conditional and the estimators all use it.
    """
    return ln_lum - ln_mu_L_ln1pz(0.0, ln1pz, hyper)


def reduced_observable_affine(hyper: Hyper):
    """``(c0, c1)`` with :func:`reduced_observable` ``= ln L + c0 + c1 ln(1 + z)``.

    ``ln mu_L`` is affine in ``ln(1 + z)``, so a loop over halos can take the two numbers
    once per theta and its derivatives in theta from them alone (the exact quadrature's
    fixed-noise read does).
    """
    c0 = -ln_mu_L_ln1pz(0.0, 0.0, hyper)
    return c0, -ln_mu_L_ln1pz(0.0, 1.0, hyper) - c0


def ln_mass_pointed(ln_lum, ln1pz, hyper: Hyper):
    """The relation inverted: the ln M (Msun) whose median luminosity is ``exp(ln_lum)``.

    .. math:: \\ln M = \\ln\\alpha_3 + (\\ln L - \\alpha_1 - \\alpha_4 \\ln(1+z)) / \\alpha_2 = r / \\alpha_2

    (Evaluated in the first form, the one every caller used before it was written once.)
    """
    return math.log(ALPHA3) + (ln_lum - hyper.alpha1 - hyper.alpha4 * ln1pz) / hyper.alpha2


def lognormal_logpdf(ln_x, ln_mu, sigma):
    """Log-density, per unit x, of ``LogNormal(ln_mu, sigma)`` evaluated at ``x = exp(ln_x)``.

    .. math:: \\ln p(x) = -\\ln x - \\ln \\sigma - \\tfrac12 \\ln 2\\pi - \\frac{(\\ln x - \\ln\\mu)^2}{2\\sigma^2}

    Arguments are in log space so that no tiny or huge luminosity is ever formed.
    """
    r = (ln_x - ln_mu) / sigma
    return -ln_x - jnp.log(sigma) - _LN_SQRT_2PI - 0.5 * r * r


def sigma_obs_of(lum_obs_err, shape=None):
    """The measurement noise of each halo: the catalog's ``lum_obs_err`` where it has one (as
    a float64 array), :data:`SIGMA_OBS` for every halo where it does not (``lum_obs_err``
    None); broadcast to ``shape`` if given."""
    sigma_obs = SIGMA_OBS if lum_obs_err is None else jnp.asarray(lum_obs_err, dtype=jnp.float64)
    return sigma_obs if shape is None else jnp.broadcast_to(jnp.asarray(sigma_obs, dtype=jnp.float64), shape)


def sigma_total(S, sigma_obs=SIGMA_OBS):
    """Scatter of ``L_obs`` at fixed mass once ``L`` is integrated out: sqrt(S^2 + sigma_obs^2)
    (``sigma_obs`` a number, or one per halo: the catalog's ``lum_obs_err``)."""
    return jnp.sqrt(S * S + sigma_obs * sigma_obs)


def hyperprior_logpdf(hyper: Hyper):
    """Log-density of the independent normal hyperprior at ``hyper``."""
    total = 0.0
    for value, mean, sd in zip(hyper, HYPERPRIOR_MEAN, HYPERPRIOR_SD):
        r = (value - mean) / sd
        total = total - 0.5 * r * r - math.log(sd) - _LN_SQRT_2PI
    return total


def sample_hyperprior(key, shape=()) -> Hyper:
    """Draw hyperparameters from the hyperprior with a JAX PRNG key."""
    import jax

    draws = jax.random.normal(key, (4, *shape))
    return Hyper(*(m + s * d for m, s, d in zip(HYPERPRIOR_MEAN, HYPERPRIOR_SD, draws)))


def hyper_to_meta(hyper: Hyper) -> dict:
    """Catalog metadata recording generating hyperparameters (FITS-friendly upper-case keys)."""
    return {name.upper(): float(value) for name, value in hyper._asdict().items()}


def hyper_from_meta(meta) -> Hyper | None:
    """The hyperparameters recorded by :func:`hyper_to_meta`, or None if any is missing."""
    if not all(name.upper() in meta for name in HYPER_NAMES):
        return None
    return Hyper(*(float(meta[name.upper()]) for name in HYPER_NAMES))


def parse_hyper(text: str | None, default: Hyper = HYPERSEED) -> Hyper:
    """Parse ``"alpha1=10.7,S=0.16"`` into a :class:`Hyper`; names left out keep ``default``.

    Raises ``ValueError`` naming the offending entry for unknown names, bad numbers,
    non-finite values or a non-positive ``S``.
    """
    values = default._asdict()
    if text:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, number = item.partition("=")
            name = name.strip()
            if not sep or name not in values:
                raise ValueError(
                    f"hyperparameter entry {item!r}: expected NAME=VALUE with NAME one of {', '.join(HYPER_NAMES)}"
                )
            try:
                values[name] = float(number)
            except ValueError:
                raise ValueError(f"hyperparameter {name}: {number.strip()!r} is not a number") from None
            if not math.isfinite(values[name]):
                raise ValueError(f"hyperparameter {name}: {values[name]} is not finite")
    if values["S"] <= 0:
        raise ValueError(f"hyperparameter S: {values['S']} must be positive")
    return Hyper(**values)
