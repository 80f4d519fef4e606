"""The 2017 single-halo likelihood methods, vectorised over halos.

Each estimates, for every halo k, the likelihood of its observed luminosity with its mass
and true luminosity integrated out,

.. math:: P(L_{obs,k} \\mid \\theta) = \\iint P(L_{obs,k} \\mid L)\\, P(L \\mid M, \\theta)\\,
    P(M \\mid z_k)\\, dL\\, dM,

per unit ``L_obs`` (the same units as the collapsed model's exact value,
:func:`bigmali.likelihood.quadrature.log_likelihood_halos`, which is the reference). Each returns
a :class:`HaloEstimate` of log-values; the sampling methods also give the effective sample
size of their weights, ``(sum w)^2 / sum w^2``.

* :func:`numerical_integration` — the 2017 answer key: a grid in ln M and ln L (trapezoid
  over the prior's whole support in ln M, Simpson over ln L within 10 sigma_obs of ln L_obs).
* :func:`simple_monte_carlo` — masses from the prior, ``L`` from the relation, averaging
  ``P(L_obs | L)``.
* :func:`importance_sampling` — the 2017 proposal: ``L ~ LogNormal(ln L_obs, sigma_obs)``
  (each halo's own ``sigma_obs`` where the catalog has ``lum_obs_err``),
  then ``M ~ LogNormal(ln mu_M(L), S_Q)`` with ``S_Q = 5.6578015811698101 S`` and ``mu_M``
  the relation inverted; masses clipped into the tabulated range as in 2017 (``clip=False``
  turns that off).
* :func:`laplace` — a Gaussian approximation of the integrand in ``(ln M, ln L)`` about its
  mode (Newton's method per halo).

All are seeded through a JAX key; the same key gives the same numbers. Work is in log space
and float64 throughout.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from bigmali.mass_prior import MassPrior, log_density_between_knots, table_rows, tabulated_ln_mass_range
from bigmali.relation import Hyper, ln_mass_pointed, ln_mu_L_ln1pz, lognormal_logpdf, sigma_obs_of

__all__ = [
    "HaloEstimate",
    "HaloData",
    "S_Q_FACTOR",
    "halo_data",
    "numerical_integration",
    "simple_monte_carlo",
    "importance_sampling",
    "is_log_weights",
    "laplace",
    "weight_summary",
]

S_Q_FACTOR = 5.6578015811698101
"""The 2017 proposal's mass scatter in units of S."""


class HaloEstimate(NamedTuple):
    """Per-halo estimates: ``log_like`` (ln P(L_obs | theta) per unit L_obs) and ``n_eff``
    (effective sample size of the weights; NaN for the deterministic methods)."""

    log_like: jax.Array
    n_eff: jax.Array


class HaloData(NamedTuple):
    """What every estimator needs of each halo, computed once per catalog (float64)."""

    ln_lobs: jax.Array
    ln1pz: jax.Array
    z: jax.Array
    row_lo: jax.Array
    row_hi: jax.Array
    w_hi: jax.Array
    sigma_obs: jax.Array  # each halo's measurement error (sd of ln L_obs)


def halo_data(z, lum_obs, prior: MassPrior, lum_obs_err=None) -> HaloData:
    """The per-halo constants; ``lum_obs_err`` the halos' own errors (None: ``sigma_obs``)."""
    z = jnp.asarray(z, dtype=jnp.float64)
    lo, hi, w = table_rows(prior, z)
    sigma_obs = sigma_obs_of(lum_obs_err, z.shape)
    return HaloData(jnp.log(jnp.asarray(lum_obs, dtype=jnp.float64)), jnp.log1p(z), z, lo, hi, w, sigma_obs)


def log_density_mass(prior: MassPrior, ln_mass, data: HaloData):
    """``ln P(M | z)`` per unit M at ``M = exp(ln_mass)`` for each halo (halos on the last axis)."""
    return log_density_between_knots(prior, ln_mass, data.row_lo, data.row_hi, data.w_hi)


def weight_summary(log_w, axis: int = 0) -> HaloEstimate:
    """``ln mean(w)`` and ``(sum w)^2 / sum w^2`` along ``axis``, in log space."""
    n = log_w.shape[axis]
    lse = logsumexp(log_w, axis=axis)
    n_eff = jnp.exp(2.0 * lse - logsumexp(2.0 * log_w, axis=axis))
    return HaloEstimate(lse - math.log(n), jnp.where(jnp.isfinite(lse), n_eff, 0.0))


def is_log_weights(
    eps_lum, eps_mass, hyper: Hyper, data: HaloData, prior: MassPrior, clip: bool = True, proposal: Hyper | None = None
):
    """Log importance weights of the 2017 proposal for standard-normal draws ``eps``.

    ``eps_lum`` and ``eps_mass`` have the halos on their last axis. The weight is
    ``P(L_obs|L) P(L|M) P(M|z) / (Q(L) Q(M|L))``; ``P(L_obs|L) / Q(L)`` is ``L / L_obs``
    exactly (the same lognormal read both ways), which is what is computed.

    The proposal is built from ``proposal`` (default: ``hyper`` itself, as in 2017). With a
    fixed ``proposal`` the draws do not move with ``hyper`` and the weights are smooth in it:
    only ``P(L | M, hyper)`` changes. (When the draws move with ``hyper``, the prior's cliff at
    the lowest tabulated mass makes the estimate jump, and its pathwise gradient is wrong.)
    """
    proposal = hyper if proposal is None else proposal
    ln_lum = data.ln_lobs + data.sigma_obs * eps_lum
    ln_mu_m = ln_mass_pointed(ln_lum, data.ln1pz, proposal)
    s_q = S_Q_FACTOR * proposal.S
    ln_mass = ln_mu_m + s_q * eps_mass
    if clip:
        low, high = tabulated_ln_mass_range(prior)
        ln_mass = jnp.clip(ln_mass, low, high)
    return (
        (ln_lum - data.ln_lobs)
        + lognormal_logpdf(ln_lum, ln_mu_L_ln1pz(ln_mass, data.ln1pz, hyper), hyper.S)
        + log_density_mass(prior, ln_mass, data)
        - lognormal_logpdf(ln_mass, ln_mu_m, s_q)
    )


@partial(jax.jit, static_argnames=("n", "clip"))
def importance_sampling(
    key, hyper: Hyper, data: HaloData, prior: MassPrior, n: int = 1000, clip: bool = True
) -> HaloEstimate:
    """The 2017 importance sampler with ``n`` samples per halo (all halos at once)."""
    k1, k2 = jax.random.split(key)
    shape = (n,) + data.ln_lobs.shape
    log_w = is_log_weights(jax.random.normal(k1, shape), jax.random.normal(k2, shape), hyper, data, prior, clip)
    return weight_summary(log_w)


@partial(jax.jit, static_argnames="n")
def simple_monte_carlo(key, hyper: Hyper, data: HaloData, prior: MassPrior, n: int = 1000) -> HaloEstimate:
    """Masses from the prior and luminosities from the relation; the weight is ``P(L_obs | L)``."""
    from bigmali.mass_prior import sample_ln_mass

    k1, k2 = jax.random.split(key)
    shape = (n,) + data.ln_lobs.shape
    ln_mass = sample_ln_mass(prior, k1, jnp.broadcast_to(data.z, shape))
    ln_lum = ln_mu_L_ln1pz(ln_mass, data.ln1pz, hyper) + hyper.S * jax.random.normal(k2, shape)
    return weight_summary(lognormal_logpdf(data.ln_lobs, ln_lum, data.sigma_obs))


def _log_integrand(ln_mass, ln_lum, hyper: Hyper, data: HaloData, prior: MassPrior):
    """ln of the integrand per unit ln M and per unit ln L (halos on the last axis)."""
    return (
        lognormal_logpdf(data.ln_lobs, ln_lum, data.sigma_obs)
        + lognormal_logpdf(ln_lum, ln_mu_L_ln1pz(ln_mass, data.ln1pz, hyper), hyper.S)
        + ln_lum
        + log_density_mass(prior, ln_mass, data)
        + ln_mass
    )


@partial(jax.jit, static_argnames=("n_mass", "n_lum"))
def numerical_integration(
    hyper: Hyper, data: HaloData, prior: MassPrior, n_mass: int = 20001, n_lum: int = 81
) -> HaloEstimate:
    """The answer key: trapezoid over ``n_mass`` points evenly spaced in ln M across the
    prior's whole support (the background included), Simpson over ``n_lum`` points in ln L
    within 10 sigma_obs of ln L_obs. Memory is ``n_mass x n_lum`` per halo: pass a few
    halos at a time (``jax.lax.map`` over halos is used inside)."""
    lo, hi = jnp.log(prior.mass[0]), jnp.log(prior.mass[-1])
    x = jnp.linspace(lo, hi, n_mass)
    dx = x[1] - x[0]
    wx = jnp.full(n_mass, dx).at[0].set(0.5 * dx).at[-1].set(0.5 * dx)
    if n_lum % 2 == 0:
        raise ValueError(f"n_lum = {n_lum}: Simpson's rule needs an odd number of points")
    u = jnp.linspace(-10.0, 10.0, n_lum)  # ln L - ln L_obs in units of the halo's sigma_obs
    du = u[1] - u[0]
    wu = jnp.where(jnp.arange(n_lum) % 2 == 1, 4.0, 2.0).at[0].set(1.0).at[-1].set(1.0) * du / 3.0
    log_wxy = jnp.log(wx)[:, None] + jnp.log(wu)[None, :]

    def one(halo):
        d = HaloData(*(jnp.asarray(v)[None] for v in halo))
        t = u * d.sigma_obs
        f = _log_integrand(x[:, None, None], d.ln_lobs + t[None, :, None], hyper, d, prior)[..., 0]
        return logsumexp(f + log_wxy + jnp.log(d.sigma_obs))

    values = jax.lax.map(one, tuple(data))
    return HaloEstimate(values, jnp.full_like(values, jnp.nan))


@partial(jax.jit, static_argnames="iterations")
def laplace(hyper: Hyper, data: HaloData, prior: MassPrior, iterations: int = 60) -> HaloEstimate:
    """Laplace's approximation of the integrand in ``(ln M, ln L)``: its value at the mode
    times ``2 pi / sqrt(det H)``. The mode is found per halo by damped Newton steps from the
    mass the luminosity points at (clipped into the table) and ``ln L = ln L_obs``."""
    low, high = tabulated_ln_mass_range(prior)

    def f(p, d):
        return _log_integrand(p[0], p[1], hyper, d, prior)

    grad = jax.grad(f)
    hess = jax.hessian(f)

    def one(halo):
        d = HaloData(*halo)
        start = jnp.array([jnp.clip(ln_mass_pointed(d.ln_lobs, d.ln1pz, hyper), low, high), d.ln_lobs])

        def step(_, p):
            g, h = grad(p, d), hess(p, d)
            # Newton where the Hessian is negative definite, a gradient step otherwise;
            # halving the step until the integrand does not fall.
            det = h[0, 0] * h[1, 1] - h[0, 1] * h[1, 0]
            ok = (h[0, 0] < 0) & (det > 0)
            newton = -jnp.linalg.solve(jnp.where(ok, h, -jnp.eye(2)), g)
            direction = jnp.where(ok, newton, 0.01 * g)
            fp = f(p, d)
            scales = 0.5 ** jnp.arange(12.0)
            trial = jax.vmap(lambda a: f(p + a * direction, d))(scales)
            better = trial >= fp
            a = jnp.where(better.any(), scales[jnp.argmax(better)], 0.0)
            return p + a * direction

        mode = jax.lax.fori_loop(0, iterations, step, start)
        h = hess(mode, d)
        det = h[0, 0] * h[1, 1] - h[0, 1] * h[1, 0]
        return f(mode, d) + math.log(2.0 * math.pi) - 0.5 * jnp.log(det)

    values = jax.lax.map(one, tuple(data))
    return HaloEstimate(values, jnp.full_like(values, jnp.nan))
