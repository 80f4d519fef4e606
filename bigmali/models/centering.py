"""Data-centred parameterisations of the per-halo latents, so that NUTS can mix.

In the latent models every halo's ``ln M`` is pinned by its own luminosity to within
``sigma / alpha2 ~ 0.45`` while alpha1 moves every mass at once: in the literal (centred)
coordinates the hyperparameters and 10^5 masses form a long, thin, curved valley. Here each
latent is instead sampled as a standardised variable ``u`` whose conditional posterior
barely depends on the hyperparameters:

* ``ln M = F^-1(sigmoid(u))`` where ``F`` is the CDF of a logistic of location ``m`` and
  scale ``s`` truncated to the prior's mass range, ``m = (ln L_obs - alpha1 - alpha4 ln(1+z)) / alpha2 + ln alpha3`` (the
  mass the halo's luminosity points at) and ``s = sqrt(S^2 + sigma_obs^2) / alpha2`` (the
  likelihood's width in ln M). When alpha1 moves, every mass moves with it at fixed ``u``.
  The truncation handles the hard edges of the mass function: the many halos against its
  lower edge get a smooth map onto the real line instead of a cliff. (The logistic, not the
  normal, because its CDF and quantile are cheap; a halo's conditional is close to either.)
* ``ln L = m_L + s_L u`` with the exact conditional posterior of ``ln L`` given ``M`` and
  ``L_obs`` (a product of two normals), for the full model.

The change of variables is exact whatever ``m`` and ``s`` are: the density sampled is the
model's density at ``ln M(u)`` times the Jacobian, so a poor centre costs mixing, never
correctness. :class:`CentredReparam` applies any such transform to a NumPyro sample site.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform
from numpyro.infer.reparam import Reparam

__all__ = ["TruncatedLogisticQuantile", "CentredReparam", "CLAMP_SD"]

CLAMP_SD = 5.0
"""Centres are kept within this many ``s`` of the mass range (extreme outliers only)."""


class TruncatedLogisticQuantile(Transform):
    """``u -> x``: the quantile, at ``sigmoid(u)``, of a logistic of location ``loc`` and
    scale ``scale`` truncated to [low, high].

    If ``x`` follows that truncated logistic, ``u`` is exactly standard logistic. The logistic
    stands in for the normal because its CDF and quantile are one ``exp`` and one ``log``:
    the same map through the normal CDF cost 65 ms per gradient at 115,919 halos.
    """

    domain = constraints.real
    codomain = constraints.real

    def __init__(self, loc, scale, low, high):
        self.loc = jnp.clip(loc, low - CLAMP_SD * scale, high + CLAMP_SD * scale)
        self.scale = scale
        self.a = (low - self.loc) / scale  # <= CLAMP_SD, so e^a is small
        self.b = (high - self.loc) / scale  # >= -CLAMP_SD; at most ~30 for the range of ln M
        self._ea, self._eb = jnp.exp(self.a), jnp.exp(self.b)

    def _odds(self, u):
        # sigmoid(w) = sigmoid(a) + sigmoid(u) (sigmoid(b) - sigmoid(a)); clearing the
        # denominators, e^w = num / den with every term positive (no cancellation):
        eu = jnp.exp(jnp.clip(u, -300.0, 300.0))
        num = self._ea * (1.0 + self._eb) + eu * self._eb * (1.0 + self._ea)
        den = (1.0 + self._eb) + eu * (1.0 + self._ea)
        return jnp.log(num), jnp.log(den)

    def __call__(self, u):
        log_num, log_den = self._odds(u)
        return self.loc + self.scale * jnp.clip(log_num - log_den, self.a, self.b)

    def _inverse(self, x):
        w = jnp.clip((x - self.loc) / self.scale, self.a, self.b)
        # sigmoid(u) = (sigmoid(w) - sigmoid(a)) / Z, 1 - sigmoid(u) = (sigmoid(b) - sigmoid(w)) / Z
        log_below = -jax.nn.softplus(-w) - jax.nn.softplus(self.a) + jnp.log1p(-jnp.exp(self.a - w))
        log_above = -jax.nn.softplus(-self.b) - jax.nn.softplus(w) + jnp.log1p(-jnp.exp(w - self.b))
        return log_below - log_above

    def log_abs_det_jacobian(self, u, x, intermediates=None):
        # dw/du = e^u (1 + e^a)(1 + e^b)(e^b - e^a) / (num den)
        log_num, log_den = self._odds(u)
        log_gap = self.b + jnp.log1p(-jnp.exp(self.a - self.b))
        return (
            jnp.log(self.scale)
            + jnp.clip(u, -300.0, 300.0)
            + jnp.log1p(self._ea)
            + jnp.log1p(self._eb)
            + log_gap
            - log_num
            - log_den
        )


class CentredReparam(Reparam):
    """Sample a site through a bijection ``transform: u -> value`` of the real line.

    The new site ``<name>_u`` has density ``p(value(u)) |d value / d u|``; the original site
    becomes a deterministic with the value. Observed sites are left alone.
    """

    def __init__(self, transform: Transform):
        self.transform = transform

    def __call__(self, name, fn, obs):
        if obs is not None:
            return fn, obs
        u = numpyro.sample(f"{name}_u", dist.TransformedDistribution(fn, self.transform.inv))
        return None, self.transform(u)
