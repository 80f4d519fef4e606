"""Fast draws of every halo's ln M from its conditional given the hyperparameters.

Given ``theta``, halo k's mass has the density (per unit x = ln M)

.. math:: p(x \\mid \\theta) \\propto q_{b_k}(x)\\, \\exp\\Bigl(-\\frac{(x - c_k)^2}{2 w^2}\\Bigr),
    \\quad c_k = r_k / \\alpha_2, \\quad w = \\sigma / \\alpha_2,

(``q_b`` the prior per unit ln M, ``r_k`` the reduced observable of
:mod:`bigmali.likelihood.quadrature`, ``sigma = sqrt(S^2 + sigma_obs^2)``): it depends on the halo
only through its prior table ``b_k`` and the centre ``c_k``, and on ``theta`` only through
``c_k`` and the width ``w``. :class:`ConditionalMassSampler` therefore tabulates the inverse
CDF once per table on a grid of centres, of a few widths spanning the draws' and of
probability levels; each draw of each halo is then a trilinear interpolation: a few
milliseconds per draw for 10^5 halos, against ~3 s for the dense per-halo sampler
:func:`bigmali.models.collapsed.sample_conditional_ln_mass`.

The conditional is discretised as the dense sampler does it: on the prior's tabulated
knots, trapezoid cell weights and a density linear inside a cell. The probability levels
are evenly spaced in logit(u) from -12 to 12, so that the tails are resolved (a uniform u
grid would smear the outermost 1/U of every halo's mass across the table). The test suite
compares the draws with the dense sampler's quantile by quantile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bigmali import relation
from bigmali.mass_prior import MassPrior, table_rows, tabulated_knots
from bigmali.relation import Hyper

__all__ = ["ConditionalMassSampler", "N_CENTRES", "N_LEVELS"]

N_CENTRES = 384
N_LEVELS = 257
T_MAX = 12.0


def _inverse_cdf_table(width, prior: MassPrior, centres, t_levels):
    """x = ln M at each probability level, for each table and centre: shape (nz, n_c, n_levels)."""
    knots = tabulated_knots(prior)
    x = jnp.log(prior.mass[knots])
    log_q = jnp.log(prior.density[:, knots]) + x[None, :]  # per unit ln M
    resid = (centres[:, None] - x[None, :]) / width
    log_p = log_q[:, None, :] - 0.5 * (resid * resid)[None, :, :]  # (nz, n_c, J)
    dx = jnp.diff(x)
    log_cell = jnp.logaddexp(log_p[..., 1:], log_p[..., :-1]) + jnp.log(dx)  # trapezoid, times 2
    peak = jnp.max(log_cell, axis=-1, keepdims=True)
    cdf = jnp.cumsum(jnp.exp(log_cell - peak), axis=-1)
    cdf = cdf / cdf[..., -1:]
    u = jax.nn.sigmoid(t_levels)
    cell = jax.vmap(jax.vmap(lambda c: jnp.searchsorted(c, u, side="left")))(cdf)  # (nz, n_c, L)
    cell = jnp.clip(cell, 0, dx.shape[0] - 1)
    below = jnp.where(cell > 0, jnp.take_along_axis(cdf, jnp.maximum(cell - 1, 0), axis=-1), 0.0)
    mass_in = jnp.take_along_axis(cdf, cell, axis=-1) - below
    v = jnp.clip((u - below) / jnp.where(mass_in > 0, mass_in, 1.0), 0.0, 1.0)  # fraction of the cell's mass
    # Inside the cell the density is linear in s from a to b: invert its quadratic CDF.
    p_rel = jnp.exp(log_p - peak)
    a = jnp.take_along_axis(p_rel, cell, axis=-1)
    b = jnp.take_along_axis(p_rel, cell + 1, axis=-1)
    s = jnp.where(jnp.abs(b - a) > 1e-12 * (a + b), (jnp.sqrt(a * a + (b * b - a * a) * v) - a) / (b - a), v)
    return x[cell] + s * dx[cell]


def _centre_and_width(hyper: Hyper, ln_lobs, ln1pz):
    return relation.ln_mass_pointed(ln_lobs, ln1pz, hyper), relation.sigma_total(hyper.S) / hyper.alpha2


class ConditionalMassSampler:
    """Draws of every halo's ln M given hyperparameters, for one catalog and a set of draws.

    Args:
        prior: the mass prior (``"bins"`` redshift mode).
        z, lum_obs: the catalog.
        hypers: every hyperparameter draw that will be sampled from (they set the ranges of
            the centre and width grids).
    """

    def __init__(
        self,
        prior: MassPrior,
        z,
        lum_obs,
        hypers,
        n_centres: int = N_CENTRES,
        n_widths: int = 4,
        n_levels: int = N_LEVELS,
    ):
        if prior.z_interp != "bins":
            raise ValueError("the fast conditional sampler needs the prior's 'bins' redshift mode")
        self.prior = prior
        self.z = jnp.asarray(z, dtype=jnp.float64)
        self.ln_lobs = jnp.log(jnp.asarray(lum_obs, dtype=jnp.float64))
        self.ln1pz = jnp.log1p(self.z)
        self.rows = table_rows(prior, self.z)[0]
        # Grid ranges over every draw: the centres' extremes are linear in the halos' values.
        lo, hi, widths = [], [], []
        for h in hypers:
            c, w = _centre_and_width(Hyper(*(jnp.float64(v) for v in h)), self.ln_lobs, self.ln1pz)
            lo.append(float(jnp.min(c)))
            hi.append(float(jnp.max(c)))
            widths.append(float(w))
        c0, c1 = min(lo), max(hi)
        self.c0, self.dc = c0, max(c1 - c0, 1e-6) / (n_centres - 1)
        w0, w1 = min(widths), max(widths)
        w1 = max(w1, w0 * (1 + 1e-9))
        self.w0, self.dw = w0, (w1 - w0) / (n_widths - 1)
        self.n_centres, self.n_widths, self.n_levels = n_centres, n_widths, n_levels
        centres = c0 + self.dc * jnp.arange(n_centres, dtype=jnp.float64)
        t_levels = jnp.linspace(-T_MAX, T_MAX, n_levels)
        build = jax.jit(lambda w: _inverse_cdf_table(w, prior, centres, t_levels))
        self.table = jnp.stack([build(w0 + self.dw * k) for k in range(n_widths)], axis=2)  # (nz, n_c, n_w, L)
        self._sample = jax.jit(self._draw)

    def _draw(self, key, hyper: Hyper, table):
        c, w = _centre_and_width(hyper, self.ln_lobs, self.ln1pz)
        u = jax.random.uniform(key, self.z.shape, minval=1e-12, maxval=1.0 - 1e-12)
        t = jnp.log(u) - jnp.log1p(-u)

        def split(value, n):
            f = jnp.clip(value, 0.0, n - 1.000001)
            i = jnp.floor(f).astype(jnp.int32)
            return i, f - i

        i, fc = split((c - self.c0) / self.dc, self.n_centres)
        k, fw = split((w - self.w0) / self.dw, self.n_widths)
        m, ft = split((t + T_MAX) / (2 * T_MAX) * (self.n_levels - 1), self.n_levels)
        out = 0.0
        for di, wi in ((0, 1 - fc), (1, fc)):
            for dk, wk in ((0, 1 - fw), (1, fw)):
                for dm, wm in ((0, 1 - ft), (1, ft)):
                    out = out + wi * wk * wm * table[self.rows, i + di, k + dk, m + dm]
        return out

    def __call__(self, key, hyper: Hyper):
        """One draw of every halo's ln M given ``hyper`` (one of the draws given at construction)."""
        return self._sample(key, Hyper(*(jnp.float64(v) for v in hyper)), self.table)
