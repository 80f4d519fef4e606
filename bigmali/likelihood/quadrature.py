"""Exact marginal likelihood of each halo's observed luminosity, its mass integrated out.

With ``L`` integrated out analytically, a halo's likelihood is a one-dimensional integral
over ``x = ln M``:

.. math::

    P(L_{obs,k} \\mid \\theta) = \\frac{1}{L_{obs,k}} \\int q_{b_k}(x)\\,
        \\varphi_\\sigma\\bigl(r_k - \\alpha_2 x\\bigr)\\, dx,
    \\qquad r_k = \\ln L_{obs,k} - \\alpha_1 - \\alpha_4 \\ln(1+z_k) + \\alpha_2 \\ln\\alpha_3,

where ``q_b(x) = M P(M | z_b)`` is the prior per unit ln M, ``phi_sigma`` the normal
density and ``sigma = sqrt(S^2 + sigma_obs^2)``. With ``rho = r / alpha2`` (the ln M the
halo's luminosity points at) and ``w = sigma / alpha2`` (the noise in ln M),

.. math::

    \\int q_b(x)\\, \\varphi_\\sigma(r - \\alpha_2 x)\\, dx = \\frac{g_b(\\rho, w)}{\\alpha_2},
    \\qquad g_b(\\rho, w) = (q_b * \\varphi_w)(\\rho),

and ``g_b`` depends on the prior alone. So it is tabulated once, when the data are prepared:

1. **The theta-free table** (:func:`prepare`, numpy, float64): ``ln g_b`` on a uniform grid
   of rho (step 0.05 in ln M, the prior's support, background included, +- 16) and on
   uniform levels of ln w (step 0.045 over w in [0.1, 4]). The prior is integrated with
   2-point Gauss-Legendre on every knot interval (0.023 in ln M, against kernels at least
   0.1 wide), each grid point's kernel shifted by its distance to the prior's support so
   that the far tails keep their digits in log space. The 2017 background (constant
   density per unit M on [1, M_0 - 1] and [M_n + 1, 100 (M_n + 1)]) is added in closed form
   (``log_ndtr``). The table is cached per prior, gl order and grid.
2. **Per theta**, ``ln g_b`` is interpolated along ln w to this theta's w (6-point Lagrange
   on six planes of the table, a few hundred thousand multiply-adds), and put in monomial
   form: on each rho interval the 6-point Lagrange polynomial's coefficients, and
3. **per halo**, its grid position is affine in (ln L_obs, ln(1+z)) with coefficients set
   by theta, so each halo costs one gather of six coefficients and a Horner evaluation. The
   halos go in blocks of 32,768, one after the other, so that a block's intermediates stay
   in cache: the cost per halo stays flat from 10^5 to 10^7 halos.

Nothing is exponentiated at run time. The gradient is written by hand (a custom JVP) and
costs about what the value does: in rho it is the polynomial's derivative; in ln w it is
the heat equation's. ``g_b`` is the prior convolved with a normal of width w, so
``dg/dw = w d^2g/drho^2``, and ``d ln g / d ln w`` comes from the same six coefficients
(within ~1e-5 relative of differentiating the interpolation across the levels, which would
read or scatter into six planes per halo; within ~2e-6 of the brute-force quadrature's
central differences). Against a brute-force quadrature each halo is within ~1e-7
(``benchmarks/collapsed.py`` checks the total at 115,919 halos).

Theta whose w falls outside the table's levels gets ln-likelihood -inf (zero density): for
sigma ~ 0.165 that is alpha2 outside [0.04, 1.6], hundreds of hyperprior sds away. A halo
beyond the rho grid (more than 16 in ln M beyond the prior's support: 35 sigma at the
hyperseed, a data error rather than a halo) continues the grid's edge as a Gaussian tail
of width w: finite, with gradients of the right sign and size (the heat equation's, which
a Gaussian tail solves; within ~1% of the continuation's own), but not exact. Every such
halo gets it: the tails are two more rows of coefficients per table.

**Per-halo measurement errors.** A catalog with ``lum_obs_err`` gives each halo its own
``sigma_k = sqrt(S^2 + lum_obs_err_k^2)``, so each halo has its own ``w_k`` and there is no
common plane to interpolate to per theta. Then every halo reads the theta-free table
directly in two dimensions: a 4-point Lagrange stencil in ln w (on levels refined three
times, to a step of 0.015, by the same 6-point Lagrange interpolation in numpy when the data
are prepared) times the 6-point stencil in rho: one gather of a 4 x 6 block per halo and
no per-theta step. The table is a constant, so the value and its partial derivatives in
(rho_k, ln w_k) are computed together from one read of each block (a custom JVP; letting
reverse mode differentiate the stencil read each block several times and cost 2-3x more),
in blocks of halos as above (value + gradient at 115,919 / 10^6 halos: 4.2 / 57 ms, against
19.6 / 169 ms in one piece).
Every halo beyond the rho grid gets the Gaussian continuation, with its own w_k. A theta
at which some halo's ``w_k`` falls outside the levels gives that halo -inf. (The levels
are extended above w = 4 when the errors need it, so that alpha2 down to 0.1 stays
inside.) Against brute force each halo is within ~1e-7, as with one sigma.

**Flux limits.** A flux-limited catalog (``lum_lim``) divides each halo's likelihood by
its detection probability ``P(L_obs > L_lim,k | z_k, theta) = G_b(rho_lim,k, w_k)`` with
``rho_lim = r(L_lim) / alpha2`` and ``G_b = int q_b(x) Phi((x - rho) / w) dx``, the prior
convolved with the normal CDF. ``ln G_b`` is a second theta-free table on the same grid
(built in JAX, a few seconds), read with the same stencils; beyond the grid's upper end it
is continued as the density is, below its lower end it is held (``P = 1`` there). Against
Simpson of the prior times ``log_ndtr`` each ``ln P`` is within ~1e-7. A fit with a limit
that is a function of z sums this term from interpolation nodes instead of halo by halo
(:mod:`bigmali.likelihood.detection`); the extended likelihood integrates it over the
survey (:mod:`bigmali.likelihood.extended`).

Everything is in log space and float64. Both paths' gradients are hand-written JVPs (above);
JAX's reverse mode transposes them.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_ndtr

from bigmali import relation
from bigmali.mass_prior import MassPrior, density_between_knots, prior_fingerprint, table_rows
from bigmali.relation import Hyper
from bigmali.utils import kept

__all__ = [
    "CollapsedData",
    "QuadratureConfig",
    "TableGrid",
    "grid_for_errors",
    "prepare",
    "log_likelihood_halos",
    "log_likelihood",
    "log_detection_probability",
    "log_detection_sum",
    "expected_count",
    "log_selection",
    "log_likelihood_halos_batch",
    "log_likelihood_batch",
    "reference_log_likelihood_halos",
]

_LN_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_STENCIL = np.arange(-2, 4)  # 6-point Lagrange stencil around the interval [i, i + 1]
_ORDER = len(_STENCIL)
_W_STENCIL = np.arange(-1, 3)  # 4-point Lagrange stencil in ln w, per halo (per-halo errors)
_REFINE = 3  # the per-halo table's ln w levels are the prepared table's, three times finer
PER_HALO_BELOW = 4_000
"""A catalog with fewer halos and one ``sigma_obs`` is read per halo all the same (each halo
given ``sigma_obs``): below ~4e3 halos the per-theta plane of the fixed-sigma path costs more
than the halos (value + gradient at 10^3 / 3e3 / 5e3 / 10^4 / 3e4 halos, interleaved in one
process: 0.35 / 0.34 / 0.36 / 0.37 / 0.48 ms fixed-sigma, 0.16 / 0.23 / 0.41 / 0.44 / 0.99 ms
per halo; the two agree to 3e-10 per halo)."""
_ALPHA2_FLOOR = 0.1  # the per-halo table's levels reach w = sqrt(0.2^2 + err^2) / 0.1


class QuadratureConfig(NamedTuple):
    """Static settings of the likelihood (hashable, so they can be jit-static).

    Attributes:
        linear: mix two tables per halo (the prior's ``z_interp="linear"``).
        halo_float32: the per-halo interpolation in float32 (for accelerators, whose float64
            is slow): each halo's value is its stencil's base node in float64 plus the
            interpolation's correction, computed in float32 from differences to that node
            (the fixed-sigma path: the monomial coefficients beyond the constant one). The
            positions, the hyperparameters and every sum stay float64. See
            :mod:`bigmali.precision` for the measured error.
    """

    linear: bool = False
    halo_float32: bool = False

    @classmethod
    def for_prior(cls, prior: MassPrior) -> QuadratureConfig:
        """The settings a prior asks for (``linear`` in its ``z_interp="linear"`` mode), in the
        process's precision mode (:data:`bigmali.precision.HALO_FLOAT32`)."""
        from bigmali.precision import HALO_FLOAT32

        return cls(linear=prior.z_interp == "linear", halo_float32=HALO_FLOAT32)


class TableGrid(NamedTuple):
    """Where the theta-free table is tabulated (see the module docstring).

    Attributes:
        gl_order: Gauss-Legendre nodes per knot interval of the prior.
        rho_step: step of the rho grid, in ln M.
        reach: the rho grid reaches this far (ln M) beyond the prior's support.
        w_min, w_max: the range of w = sigma / alpha2 tabulated.
        ln_w_step: step of the ln w levels.
    """

    gl_order: int = 2
    rho_step: float = 0.05
    reach: float = 16.0
    w_min: float = 0.1
    w_max: float = 4.0
    ln_w_step: float = 0.045


class CollapsedData(NamedTuple):
    """What the collapsed likelihood needs from a catalog and a prior, computed once.

    Attributes:
        y: ln L_obs per halo.
        ln1pz: ln(1 + z) per halo.
        row_lo, row_hi, w_hi: the prior tables each halo mixes, ``(1 - w) P_lo + w P_hi``.
        log_g: (nz, n_levels, n_rho) the theta-free table ``ln g_b(rho_i, w_j)``.
        rho0, rho_step: the rho grid, ``rho_i = rho0 + i rho_step``.
        ln_w0, ln_w_step: the ln w levels, ``ln w_j = ln_w0 + j ln_w_step``.
        obs_err: per-halo ``lum_obs_err`` (then the levels are the refined ones), or None
            for the catalog-wide ``sigma_obs``.
        y_lim: ln L_lim per halo (a flux-limited catalog), or None.
        log_p_det: (nz, n_levels, n_rho) ``ln G_b(rho_i, w_j)``, the detection probability's
            table on the same grid (see :func:`_build_table`), or None.
        count: for the extended likelihood, the expected count's quadrature (the halos are
            then not divided by their detection probability; the models add ``-Lambda``).
        detection_sum: for a limit that is a function of z, the interpolation nodes of the
            summed detection term, which the models use in place of the per-halo read
            (:mod:`bigmali.likelihood.detection`); per-halo values still divide by each
            halo's own ``P_det``.
    """

    y: jax.Array
    ln1pz: jax.Array
    row_lo: jax.Array
    row_hi: jax.Array
    w_hi: jax.Array
    log_g: jax.Array
    rho0: jax.Array
    rho_step: jax.Array
    ln_w0: jax.Array
    ln_w_step: jax.Array
    obs_err: jax.Array | None = None
    y_lim: jax.Array | None = None
    log_p_det: jax.Array | None = None
    count: object = None  # the extended likelihood's expected count (bigmali.likelihood.extended.CountData)
    detection_sum: object = None  # sum_k ln P_det,k from nodes (bigmali.likelihood.detection.DetectionSum)


def _prior_nodes(prior: MassPrior, gl_order: int):
    """Gauss-Legendre nodes in ln M over the tabulated (non-background) knot intervals and
    the prior probability each carries, per table: (n_nodes,), (nz, n_nodes)."""
    mass = np.asarray(prior.mass, dtype=np.float64)
    density = np.asarray(prior.density, dtype=np.float64)
    lo_knot, hi_knot = (1, mass.size - 2) if prior.background is not None else (0, mass.size - 1)
    m0, m1 = mass[lo_knot:hi_knot], mass[lo_knot + 1 : hi_knot + 1]
    x0 = np.log(m0)
    width = np.log1p((m1 - m0) / m0)  # accurate for the 1-Msun ramps next to the background
    t, w = np.polynomial.legendre.leggauss(gl_order)
    node_x = (x0[:, None] + 0.5 * width[:, None] * (t + 1)).ravel()
    node_w = (0.5 * width[:, None] * w).ravel()
    rows = np.arange(density.shape[0])[:, None]
    p_node = np.asarray(density_between_knots(prior, jnp.asarray(node_x)[None, :], rows, rows, 0.0))
    return node_x, node_w * np.exp(node_x) * p_node


def _np_log_diff_ndtr(lo, hi):
    """ln(Phi(hi) - Phi(lo)) for lo < hi, stable in both tails (numpy)."""
    flip = hi + lo > 0  # reflect to the side where Phi is small
    upper, lower = np.where(flip, -lo, hi), np.where(flip, -hi, lo)
    a, b = log_ndtr(upper), log_ndtr(lower)
    return a + np.log1p(-np.exp(np.minimum(b - a, -1e-300)))


def _background_nodes(prior: MassPrior, panel: float = 0.05):
    """Gauss-Legendre nodes (2 per panel) over the upper background interval and the prior
    probability each carries, per table (its density is a constant c per unit M)."""
    mass = np.asarray(prior.mass, dtype=np.float64)
    a, b = math.log(mass[-2]), math.log(mass[-1])
    n = int(math.ceil((b - a) / panel))
    edges = np.linspace(a, b, n + 1)
    t, w = np.polynomial.legendre.leggauss(2)
    half = 0.5 * (edges[1:] - edges[:-1])[:, None]
    node_x = (0.5 * (edges[1:] + edges[:-1])[:, None] + half * t).ravel()
    node_w = (half * w).ravel()
    c = np.asarray(prior.density, dtype=np.float64)[:, :1]
    return node_x, c * (node_w * np.exp(node_x))[None, :]


@jax.jit
def _log_detection_level(node_x, node_q, rho, w):
    """ln sum_n q_n Phi((x_n - rho) / w) on the rho grid, per table (one level of the
    detection table; in JAX, whose log_ndtr is some 20 times faster than scipy's here)."""
    # Phi((x - rho) / w) is largest at the top node: shift by its log.
    shift = jax.scipy.special.log_ndtr((node_x.max() - rho) / w)
    log_phi = jax.scipy.special.log_ndtr((node_x[:, None] - rho[None, :]) / w) - shift[None, :]
    kernel = jnp.exp(jnp.maximum(log_phi, -700.0))
    return jnp.maximum(jnp.log(node_q @ kernel) + shift[None, :], -1e300)


def _build_table(prior: MassPrior, grid: TableGrid, detection: bool = False):
    """ln g_b(rho_i, w_j) for every prior table b (numpy): the table, rho0 and the levels' ln w0.

    ``detection``: tabulate instead ``ln G_b(rho, w) = ln int q_b(x) Phi((x - rho) / w) dx``,
    the probability that a halo's ``ln L_obs`` exceeds a limit whose reduced observable is
    ``alpha2 rho`` (the prior convolved with the normal CDF). The upper background (from
    the top of the table to 100 times it) is integrated with Gauss-Legendre nodes; the lower
    one, which adds ~1e-20 of probability where it adds any, is left out.
    """
    node_x, node_q = _prior_nodes(prior, grid.gl_order)
    mass = np.asarray(prior.mass, dtype=np.float64)
    if prior.background is not None:
        bg_log_c = np.log(np.asarray(prior.density, dtype=np.float64)[:, 0])
        bg_edges = np.log(mass[[0, 1, -2, -1]])
        bottom, top = bg_edges[0], bg_edges[3]
        if detection:
            bg_x, bg_q = _background_nodes(prior)
            node_x, node_q = np.concatenate([node_x, bg_x]), np.concatenate([node_q, bg_q], axis=1)
    else:
        bottom, top = math.log(mass[0]), math.log(mass[-1])
    rho0 = bottom - grid.reach
    rho = rho0 + grid.rho_step * np.arange(int(math.ceil((top - bottom + 2 * grid.reach) / grid.rho_step)) + 1)
    ln_w = np.arange(math.log(grid.w_min), math.log(grid.w_max) + grid.ln_w_step, grid.ln_w_step)
    # Each grid point's kernel is shifted by its (squared, scaled) distance to the nodes'
    # range, so that the largest kernel entry is about 1 and far tails keep their digits.
    gap = np.maximum(np.maximum(node_x.min() - rho, rho - node_x.max()), 0.0)
    table = np.empty((node_q.shape[0], ln_w.size, rho.size))
    for j, lw in enumerate(ln_w):
        w = math.exp(lw)
        if detection:
            table[:, j, :] = np.asarray(_log_detection_level(jnp.asarray(node_x), jnp.asarray(node_q), rho, w))
            continue
        u = (rho[None, :] - node_x[:, None]) / w
        shift = 0.5 * (gap / w) ** 2
        kernel = np.exp(np.maximum(shift[None, :] - 0.5 * u * u, -700.0))
        with np.errstate(divide="ignore"):
            main = np.log(node_q @ kernel) - shift[None, :] - lw - _LN_SQRT_2PI
        if prior.background is not None:
            # The background's integral over each interval [x_a, x_b] of c e^x phi_w(rho - x):
            # c e^(rho + w^2/2) [Phi((x_b - rho - w^2)/w) - Phi((x_a - rho - w^2)/w)].
            def piece(xa, xb, w=w):
                return _np_log_diff_ndtr((xa - rho - w * w) / w, (xb - rho - w * w) / w)

            bg = bg_log_c[:, None] + (rho + 0.5 * w * w)[None, :]
            bg = bg + np.logaddexp(piece(bg_edges[0], bg_edges[1]), piece(bg_edges[2], bg_edges[3]))[None, :]
            main = np.logaddexp(main, bg)
        table[:, j, :] = np.maximum(main, -1e300)  # a table row with no prior mass stays finite
    return jnp.asarray(table), rho0, ln_w[0]  # one device array, shared by every catalog


_TABLES: dict = {}  # theta-free tables kept per process (bigmali.utils.kept)


def _refined(table: jax.Array, ln_w0: float, grid: TableGrid):
    """The table on ln w levels ``_REFINE`` times finer, by 6-point Lagrange across the
    levels (numpy): what each halo's 4-point stencil in ln w reads."""
    coarse = np.asarray(table)
    n_levels = coarse.shape[1]
    u = np.arange(_REFINE * (n_levels - 1) + 1) / _REFINE
    first, last = -int(_STENCIL[0]), n_levels - 1 - int(_STENCIL[-1])
    j = np.clip(np.floor(u), first, last).astype(int)
    weights = np.stack([(u - j) ** p for p in range(_ORDER)], axis=1) @ _MONOMIAL.T  # (fine, 6)
    fine = np.zeros((coarse.shape[0], u.size, coarse.shape[2]))
    for a, offset in enumerate(_STENCIL):
        fine += weights[None, :, a, None] * coarse[:, j + offset, :]
    return jnp.asarray(fine), ln_w0, grid.ln_w_step / _REFINE


def grid_for_errors(grid: TableGrid, lum_obs_err) -> TableGrid:
    """The grid whose levels reach the w of the largest error at alpha2 = 0.1 (per-halo errors):
    halos of one catalog prepared apart (interpolation nodes) pass it to share its table."""
    if lum_obs_err is None:
        return grid
    w_top = math.sqrt(0.2**2 + float(np.max(lum_obs_err)) ** 2) / _ALPHA2_FLOOR
    return grid._replace(w_max=max(grid.w_max, w_top))


def prepare(
    z, lum_obs, prior: MassPrior, grid: TableGrid = TableGrid(), lum_obs_err=None, lum_lim=None, per_halo=None
) -> CollapsedData:
    """The halo constants and the prior's theta-free table (built once per prior and grid).

    ``lum_obs_err``: the per-halo sd of ln L_obs (the catalog column), or None for the
    catalog-wide :data:`bigmali.relation.SIGMA_OBS` (read per halo below
    :data:`PER_HALO_BELOW` halos, where that is faster; ``per_halo=False`` or True forces
    the fixed-sigma or the per-halo path). ``lum_lim``: each halo's flux limit
    (:mod:`bigmali.selection`), or None for a complete catalog; with it each halo's
    likelihood is conditioned on its detection.
    """
    obs_err = None
    if per_halo is None:
        per_halo = np.size(lum_obs) < PER_HALO_BELOW
    if lum_obs_err is None and per_halo:  # one sigma_obs, read per halo (faster at this size)
        lum_obs_err = np.full(np.size(lum_obs), relation.SIGMA_OBS)
    if lum_obs_err is not None:
        obs_err = np.asarray(lum_obs_err, dtype=np.float64)
        grid = grid_for_errors(grid, obs_err)
        obs_err = jnp.asarray(obs_err)
    key = (prior_fingerprint(prior), grid)

    def built(detection: bool):
        coarse, rho0, ln_w0 = kept(_TABLES, (*key, detection), lambda: _build_table(prior, grid, detection), size=8)
        if obs_err is None:
            return coarse, rho0, ln_w0, grid.ln_w_step
        fine = kept(_TABLES, (*key, detection, "per-halo"), partial(_refined, coarse, ln_w0, grid), size=8)
        return fine[0], rho0, fine[1], fine[2]

    table, rho0, ln_w0, ln_w_step = built(False)
    y_lim = log_p_det = None
    if lum_lim is not None:
        y_lim = jnp.log(jnp.asarray(lum_lim, dtype=jnp.float64))
        log_p_det = built(True)[0]
    z = jnp.asarray(z, dtype=jnp.float64)
    row_lo, row_hi, w_hi = table_rows(prior, z)
    scalar = partial(jnp.asarray, dtype=jnp.float64)
    return CollapsedData(
        y=jnp.log(jnp.asarray(lum_obs, dtype=jnp.float64)),
        ln1pz=jnp.log1p(z),
        row_lo=row_lo,
        row_hi=row_hi,
        w_hi=w_hi,
        log_g=table,
        rho0=scalar(rho0),
        rho_step=scalar(grid.rho_step),
        ln_w0=scalar(ln_w0),
        ln_w_step=scalar(ln_w_step),
        obs_err=obs_err,
        y_lim=y_lim,
        log_p_det=log_p_det,
    )


def _monomial_matrix(stencil: np.ndarray) -> np.ndarray:
    """C such that, on [i, i + 1], the Lagrange interpolant on ``stencil`` (offsets from i)
    is sum_p (values @ C)_p t^p."""
    nodes = stencil.astype(np.float64)
    vander = np.vander(nodes, len(nodes), increasing=True)  # vander[j, p] = node_j^p
    return np.linalg.inv(vander).T  # coefficients = values @ inv(V).T


_MONOMIAL = _monomial_matrix(_STENCIL)
_W_MONOMIAL = _monomial_matrix(_W_STENCIL)


def _level(n_levels: int, ln_w0, ln_w_step, ln_w):
    """ln w's position u among a table's levels ``ln w0 + j ln_w_step`` (j = 0 ... n_levels - 1),
    and whether it lies within them."""
    u = (ln_w - ln_w0) / ln_w_step
    return u, (u >= 0) & (u <= n_levels - 1)


def _at_w(log_g, ln_w0, ln_w_step, ln_w):
    """The table ``log_g`` on the rho grid at this ln w (6-point Lagrange across its levels)."""
    n_levels = log_g.shape[1]
    u, _ = _level(n_levels, ln_w0, ln_w_step, ln_w)
    first, last = -int(_STENCIL[0]), n_levels - 1 - int(_STENCIL[-1])
    j = jnp.clip(jnp.floor(u), first, last).astype(jnp.int32)
    weights = jnp.stack([(u - j) ** p for p in range(_ORDER)]) @ _MONOMIAL.T
    planes = jax.lax.dynamic_slice_in_dim(log_g, j + int(_STENCIL[0]), _ORDER, axis=1)
    return jnp.einsum("a,bar->br", weights, planes)


def _coefficients(log_g, levels, ln_w, rho_step, hold_below: bool):
    """The table ``log_g`` at this theta's w (its plane at ln w, ``levels = (ln_w0,
    ln_w_step)``: :func:`_at_w`) in the per-halo form: (nz * (n_int + 2), 6) rows of monomial
    coefficients in t, per table: the tail below the rho grid, its n_int intervals (the
    6-point Lagrange interpolant), the tail above it; and n_int.

    A tail continues the grid's edge value e and one-sided slope s as a Gaussian of width w,
    ``e + s d - d^2 / (2 w^2)`` with d the distance beyond the edge (below the grid, held at
    e if ``hold_below``): a quadratic in t, its last three coefficients zero."""
    plane = _at_w(log_g, *levels, ln_w)
    nz, n_rho = plane.shape
    n_int = n_rho - _ORDER + 1  # intervals [i + 2, i + 3] with the whole stencil on the grid
    windows = jnp.stack([plane[:, s : s + n_int] for s in range(_ORDER)], axis=-1)
    inner = windows @ _MONOMIAL  # (nz, n_int, 6)
    # The covered range's end points (the stencil needs two grid points below, three above).
    lo, hi = -int(_STENCIL[0]), n_int - int(_STENCIL[0])
    e_lo, s_lo = plane[:, lo], plane[:, lo + 1] - plane[:, lo]
    e_hi, s_hi = plane[:, hi], plane[:, hi] - plane[:, hi - 1]
    k = jnp.broadcast_to(0.5 * rho_step**2 * jnp.exp(-2.0 * ln_w), (nz,))  # d^2 / (2 w^2) = k t^2
    zero = jnp.zeros((nz,))
    above = [e_hi, s_hi, -k]  # t = d / rho_step >= 0 in the row after the last interval
    # t = 1 + d / rho_step < 1 in the row before the first: e + s (t - 1) - k (t - 1)^2
    below = [e_lo, zero, zero] if hold_below else [e_lo - s_lo - k, s_lo + 2.0 * k, -k]
    below, above = (jnp.stack(c + [zero] * (_ORDER - 3), axis=1)[:, None] for c in (below, above))
    return jnp.concatenate([below, inner, above], axis=1).reshape(-1, _ORDER), n_int


def _locate(y, ln1pz, rows, affine, n_int: int):
    """Each halo's row of the coefficients and its t: the rho grid position is
    ``v = a y + b ln(1+z) + c`` (in steps), affine in the halo's constants."""
    a, b, c = affine
    v = a * y + b * ln1pz + c
    i = jnp.clip(jnp.floor(v), -1, n_int).astype(jnp.int32)
    return rows * (n_int + 2) + i + 1, v - i


def _evaluate(coef, t, f32: bool, derivatives: bool = False):
    """Each halo's polynomial at t, and with ``derivatives`` its first and second derivatives
    in t. ``f32``: the terms beyond the constant one in float32
    (``QuadratureConfig.halo_float32``)."""
    constant = coef[:, 0]
    if f32:
        coef, t = coef.astype(jnp.float32), t.astype(jnp.float32)
    c = [coef[:, p] for p in range(_ORDER)]
    value = (t * (c[1] + t * (c[2] + t * (c[3] + t * (c[4] + t * c[5]))))).astype(jnp.float64) + constant
    if not derivatives:
        return value
    p1 = c[1] + t * (2.0 * c[2] + t * (3.0 * c[3] + t * (4.0 * c[4] + 5.0 * t * c[5])))
    p2 = 2.0 * c[2] + t * (6.0 * c[3] + t * (12.0 * c[4] + 20.0 * t * c[5]))
    return value, p1.astype(jnp.float64), p2.astype(jnp.float64)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _log_g(hold_below, f32, log_g, levels, rho_step, y, ln1pz, rows, ln_w, affine):
    """ln g_rows at each halo's rho by Lagrange interpolation of the table ``log_g`` at this
    theta's w, continued beyond the grid as Gaussian tails (:func:`_coefficients`);
    ``affine = (a, b, c)`` places each halo on the grid (:func:`_locate`). ``hold_below``:
    below the grid hold the edge value (the detection probability, 1 there). ``f32``: see
    :func:`_evaluate`.

    Differentiable in ``ln_w`` and ``affine``; the table, the step and the halos' constants
    are data. The derivative in rho is the interpolant's. The one in ln w comes from the heat
    equation: g is the prior convolved with a normal (or its CDF) of width w, so
    ``dg/dw = w d^2g/drho^2`` and ``d ln g / d ln w = w^2 ((ln g)'' + (ln g)'^2)``, from
    the same six coefficients. (Differentiating the interpolation across the table's levels
    instead would read six planes per halo, or scatter into them; the two agree within ~1e-5
    relative at the hyperseed, and each is within ~2e-6 of the brute-force quadrature's
    central differences.) A Gaussian tail, ``ln`` of a normal of width w, solves the same
    equation, so the tails get it too. The rule is itself differentiable (the plane is
    computed inside it), so second derivatives (``jax.hessian``) are those of this gradient."""
    coef, n_int = _coefficients(log_g, levels, ln_w, rho_step, hold_below)

    def block(y, ln1pz, rows):
        k, t = _locate(y, ln1pz, rows, affine, n_int)
        # Materialised: a sum over the halos would otherwise take the six gathered columns
        # as six arrays (XLA's YNNPACK reductions do not fuse slices, openxla/xla#46351).
        return (jax.lax.optimization_barrier(_evaluate(coef[k], t, f32)),)

    return _blockwise(block, 1, y, ln1pz, rows)[0]


@_log_g.defjvp
def _log_g_jvp(hold_below, f32, primals, tangents):
    log_g, levels, rho_step, y, ln1pz, rows, ln_w, affine = primals
    d_ln_w, (d_a, d_b, d_c) = tangents[-2:]
    coef, n_int = _coefficients(log_g, levels, ln_w, rho_step, hold_below)
    scale = jnp.exp(2.0 * ln_w) / rho_step**2

    def block(y, ln1pz, rows):
        k, t = _locate(y, ln1pz, rows, affine, n_int)
        value, p1, p2 = _evaluate(coef[k], t, f32, derivatives=True)
        # Materialised once: otherwise XLA recomputes the polynomials in each of the
        # reductions the transpose makes (one per hyperparameter), 0.3-0.4 ms more at 115,919 halos.
        return jax.lax.optimization_barrier((value, p1, scale * (p2 + p1 * p1)))

    value, p1, f_ln_w = _blockwise(block, 3, y, ln1pz, rows)
    return value, p1 * (y * d_a + ln1pz * d_b + d_c) + f_ln_w * d_ln_w


_BLOCK = 32_768
"""Halos per block of both per-halo reads (:func:`_blockwise`). Fixed noise, value + gradient
at 10^6 / 10^7 halos in blocks of 2^15 / 2^16 / 2^17 / 2^18: 7.2 / 7.8 / 15.5 / 19.6 ms and
115 / 120 / 117 / 140 ms, against 23-24 ms and 266 ms in one piece; at 115,919 halos 0.9-1.0
ms either way. Per-halo errors at 115,919 / 10^6 halos: 3.7-4.2 / 57-68 ms in blocks of 2^13
to 2^15, against 19.6 / 169 ms in one piece (this machine, one process per figure)."""


def _blockwise(fn, n_out: int, *arrays):
    """``fn`` of the per-halo ``arrays`` in blocks of ``_BLOCK`` halos (one after the other, so
    that each block's intermediates stay in cache), its ``n_out`` per-halo outputs assembled.
    The last block ends at the last halo and overlaps the one before it, which it rewrites
    with the same values: no padding, no copy of the inputs."""
    n = arrays[0].shape[0]
    if n <= _BLOCK:
        return fn(*arrays)

    def body(b, outs):
        start = jnp.minimum(b * _BLOCK, n - _BLOCK)
        part = fn(*(jax.lax.dynamic_slice_in_dim(a, start, _BLOCK) for a in arrays))
        return tuple(jax.lax.dynamic_update_slice_in_dim(o, r, start, 0) for o, r in zip(outs, part))

    # The outputs start as zeros_like a per-halo input, so that inside a shard_map they are
    # typed as varying over the halo axis, as the blocks' results are.
    start = tuple(jnp.zeros_like(arrays[0], dtype=jnp.float64) for _ in range(n_out))
    return jax.lax.fori_loop(0, -(-n // _BLOCK), body, start)


def _basis(t, monomial, derivative: bool = False):
    """The Lagrange basis polynomials at t (or their derivatives), one array per stencil point."""
    n = monomial.shape[0]
    powers = [jnp.ones_like(t)]
    for _ in range(n - 1):
        powers.append(powers[-1] * t)
    if derivative:
        return [sum(p * float(monomial[b, p]) * powers[p - 1] for p in range(1, n)) for b in range(n)]
    return [sum(float(monomial[b, p]) * powers[p] for p in range(n)) for b in range(n)]


def _blocks(log_g, rows, j, i):
    """The 4 x 6 block of the table at (row, level j, rho point i) for each halo."""
    size = (1, len(_W_STENCIL), _ORDER)
    return jax.vmap(lambda b, jj, ii: jax.lax.dynamic_slice(log_g, (b, jj, ii), size)[0])(rows, j, i)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _stencil(hold_below, f32, log_g, rows, j, i, rho_step, t, s, w):
    """ln g at (t, s) within each halo's 4 x 6 block, continued beyond the rho grid's ends as
    a Gaussian tail of width w (see :func:`_log_g_per_halo`)."""
    return _stencil_in_blocks(hold_below, f32, log_g, rows, j, i, rho_step, t, s, w, 1)[0]


def _stencil_in_blocks(hold_below, f32, log_g, rows, j, i, rho_step, t, s, w, n_out: int):
    """The first ``n_out`` of :func:`_stencil_with_partials`, halo block by halo block
    (:func:`_blockwise`)."""

    def block(rows, j, i, t, s, w):
        return _stencil_with_partials(hold_below, f32, log_g, rows, j, i, rho_step, t, s, w)[:n_out]

    return _blockwise(block, n_out, rows, j, i, t, s, w)


def _stencil_with_partials(hold_below, f32, log_g, rows, j, i, rho_step, t, s, w):
    """The value and its partial derivatives in t, s and w, from one read of each block.

    With V(t, s) the Lagrange interpolant, tc = clip(t, 0, 1) and d = (t - tc) rho_step:
    f = V(tc, s) + V_t(tc, s) d / rho_step - d^2 / (2 w^2), with d = 0 below the grid if
    ``hold_below``. ``f32``: V is the block's base node (float64) plus the interpolant of the
    block's differences to it, in float32 (the basis sums to 1, its derivatives to 0).
    """
    block = _blocks(log_g, rows, j, i)
    tc = jnp.clip(t, 0.0, 1.0)
    base = block[:, -_W_STENCIL[0], -_STENCIL[0]]  # the node at (j + 1, i + 2): the stencil's origin
    tb, sb = tc, s
    if f32:
        block = (block - base[:, None, None]).astype(jnp.float32)
        tb, sb = tc.astype(jnp.float32), s.astype(jnp.float32)
    wr, dwr = _basis(tb, _MONOMIAL), _basis(tb, _MONOMIAL, derivative=True)
    ww, dww = _basis(sb, _W_MONOMIAL), _basis(sb, _W_MONOMIAL, derivative=True)
    n_w = len(_W_STENCIL)
    row = [sum(ww[a] * block[:, a, b] for a in range(n_w)) for b in range(_ORDER)]
    d_row = [sum(dww[a] * block[:, a, b] for a in range(n_w)) for b in range(_ORDER)]
    v = sum(wr[b] * row[b] for b in range(_ORDER))
    v_t = sum(dwr[b] * row[b] for b in range(_ORDER))
    v_s = sum(wr[b] * d_row[b] for b in range(_ORDER))
    v_ts = sum(dwr[b] * d_row[b] for b in range(_ORDER))
    if f32:
        v, v_t, v_s, v_ts = (x.astype(jnp.float64) for x in (v, v_t, v_s, v_ts))
        v = v + base
    beyond = (t < 0.0) | (t > 1.0)
    d = (t - tc) * rho_step
    if hold_below:
        d = jnp.where(t < 0.0, 0.0, d)
    inv_w2 = 1.0 / (w * w)
    value = v + v_t * (d / rho_step) - 0.5 * d * d * inv_w2
    # Within the grid d = 0: f_t = V_t. Beyond it tc is fixed: f_t = V_t(tc) - d rho_step / w^2.
    f_t = jnp.where(beyond, v_t - d * rho_step * inv_w2, v_t)
    if hold_below:
        f_t = jnp.where(t < 0.0, 0.0, f_t)
    f_s = v_s + v_ts * (d / rho_step)
    f_w = d * d * inv_w2 / w
    return value, f_t, f_s, f_w


@_stencil.defjvp
def _stencil_jvp(hold_below, f32, primals, tangents):
    # The table, the indices and the step are constants of the data: only (t, s, w) move.
    value, f_t, f_s, f_w = _stencil_in_blocks(hold_below, f32, *primals, 4)
    dt, ds, dw = tangents[-3:]
    return value, f_t * dt + f_s * ds + f_w * dw


def _log_g_per_halo(data: CollapsedData, log_g, rho, ln_w, w, rows, hold_below: bool = False, f32: bool = False):
    """ln g_rows(rho_k, w_k) with each halo's own w: a 4 x 6 Lagrange stencil in (ln w, rho)
    on the refined table ``log_g``; beyond the rho grid, the edge continued as a Gaussian tail of width
    w_k (held below it if ``hold_below``). Also whether each ln w_k lies within the levels. The table is a constant: the
    gradient flows through (rho_k, w_k) alone, computed with the value (one read per block)."""
    n_levels, n_rho = log_g.shape[1:]
    n_int = n_rho - _ORDER + 1
    v = (rho - data.rho0) / data.rho_step + _STENCIL[0]
    i = jnp.clip(jnp.floor(v), 0, n_int - 1).astype(jnp.int32)
    level, inside = _level(n_levels, data.ln_w0, data.ln_w_step, ln_w)
    u = level + _W_STENCIL[0]
    j = jnp.clip(jnp.floor(u), 0, n_levels - len(_W_STENCIL)).astype(jnp.int32)
    return _stencil(hold_below, f32, log_g, rows, j, i, data.rho_step, v - i, u - j, w), inside


def _mix(lower, upper, mix):
    """ln((1 - mix) e^lower + mix e^upper), with mix = 0 exact."""
    return jnp.logaddexp(
        jnp.log1p(-mix) + lower, jnp.where(mix > 0, jnp.log(jnp.where(mix > 0, mix, 1.0)) + upper, -jnp.inf)
    )


def _read(hyper: Hyper, data: CollapsedData, config: QuadratureConfig, log_g, y, hold_below: bool = False):
    """A theta-free table (``log_g`` is data.log_g or data.log_p_det) at each halo's
    (rho, w) for the ln luminosity ``y`` (ln L_obs or ln L_lim): ln g (or ln G), and whether
    each halo's w lies within the table's levels."""
    a2 = hyper.alpha2
    if data.obs_err is not None:  # each halo its own w: the 2-D stencil
        w = relation.sigma_total(hyper.S, data.obs_err) / a2
        ln_w = jnp.log(w)
        rho = relation.reduced_observable(y, data.ln1pz, hyper) / a2
        f32 = config.halo_float32
        value, inside = _log_g_per_halo(data, log_g, rho, ln_w, w, data.row_lo, hold_below, f32)
        if config.linear:
            upper, _ = _log_g_per_halo(data, log_g, rho, ln_w, w, data.row_hi, hold_below, f32)
            value = _mix(value, upper, data.w_hi)
        return value, inside
    ln_w = jnp.log(relation.sigma_total(hyper.S) / a2)  # one w: the table's plane at it, then 1-D per halo
    levels = (data.ln_w0, data.ln_w_step)
    inside = _level(log_g.shape[1], *levels, ln_w)[1]
    c0, c1 = relation.reduced_observable_affine(hyper)  # rho = (y + c0 + c1 ln(1+z)) / alpha2, in steps:
    per_step = 1.0 / (a2 * data.rho_step)
    affine = (per_step, c1 * per_step, (c0 / a2 - data.rho0) / data.rho_step + _STENCIL[0])
    f32 = config.halo_float32
    value = _log_g(hold_below, f32, log_g, levels, data.rho_step, y, data.ln1pz, data.row_lo, ln_w, affine)
    if config.linear:
        upper = _log_g(hold_below, f32, log_g, levels, data.rho_step, y, data.ln1pz, data.row_hi, ln_w, affine)
        value = _mix(value, upper, data.w_hi)
    return value, inside


@partial(jax.jit, static_argnames="config")
def log_likelihood_halos(hyper: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """``ln P(L_obs,k | theta)`` for every halo (per unit L_obs), mass integrated out; for a
    flux-limited catalog (``data.y_lim``) conditioned on detection, ``ln P(L_obs,k | theta,
    detected) = ln P(L_obs,k | theta) - ln P(L_obs > L_lim,k | theta)``."""
    hyper = Hyper(*(jnp.asarray(v, dtype=jnp.float64) for v in hyper))
    value, inside = _read(hyper, data, config, data.log_g, data.y)
    if data.y_lim is not None:
        value = value - log_detection_probability(hyper, data, config)
    return value - data.y + jnp.where(inside, -jnp.log(hyper.alpha2), -jnp.inf)


def log_detection_probability(hyper: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """``ln P(L_obs > L_lim,k | theta, z_k)`` for every halo of a flux-limited catalog, the
    mass integrated out over the prior (what the latent models divide each halo by)."""
    hyper = Hyper(*(jnp.asarray(v, dtype=jnp.float64) for v in hyper))
    value, inside = _read(hyper, data, config, data.log_p_det, data.y_lim, hold_below=True)
    # Where w is outside the levels the halo has zero likelihood: +inf here says so to the
    # latent models (their factor is -sum ln P). (Reading the mask also keeps XLA from
    # compiling the stencil's gradient three times slower.)
    return jnp.where(inside, value, jnp.inf)


def log_detection_sum(hyper: Hyper, detection, config: QuadratureConfig = QuadratureConfig()):
    """``D(theta) = sum_k ln P_det,k`` from interpolation nodes and their weights
    (:class:`bigmali.likelihood.detection.DetectionSum`; +inf where a node's w is outside the
    table, as :func:`log_detection_probability` gives)."""
    return jnp.sum(detection.weight * log_detection_probability(hyper, detection.nodes, config))


def expected_count(hyper: Hyper, count, config: QuadratureConfig = QuadratureConfig()):
    """``Lambda(theta)``, the expected number of detected halos in the survey window, from the
    quadrature of :class:`bigmali.likelihood.extended.CountData`."""
    log_p = log_detection_probability(hyper, count.nodes, config)
    return jnp.exp(jax.nn.logsumexp(count.log_weight + jnp.where(jnp.isfinite(log_p), log_p, -jnp.inf)))


def log_selection(hyper: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """The selection's term of the total log-likelihood, which every model and the total add
    to the halos' undivided terms: ``-Lambda(theta)`` (the extended likelihood, ``data.count``),
    ``-sum_k ln P_det,k`` (the truncated one: from interpolation nodes if
    ``data.detection_sum``, else halo by halo), or 0 for a complete catalog."""
    if data.count is not None:
        return -expected_count(hyper, data.count, config)
    if data.detection_sum is not None:
        return -log_detection_sum(hyper, data.detection_sum, config)
    if data.y_lim is not None:
        return -jnp.sum(log_detection_probability(hyper, data, config))
    return jnp.zeros(())


def log_likelihood(hyper: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """Total collapsed log-likelihood, differentiable in ``hyper``: the halos' terms and the
    selection's (:func:`log_selection`)."""
    hyper = Hyper(*(jnp.asarray(v, dtype=jnp.float64) for v in hyper))
    halos = log_likelihood_halos(hyper, data._replace(y_lim=None), config)
    return jnp.sum(halos) + log_selection(hyper, data, config)


@partial(jax.jit, static_argnames="config")
def log_likelihood_halos_batch(hypers: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """:func:`log_likelihood_halos` at a batch of hyperparameters (leading axis): (batch, halo).
    Compiled once per batch size, catalog size and config; the catalog is an argument. The
    draws run one after the other (``lax.map``): on CPU 2-3x faster per draw than ``vmap``,
    whose batched table reads XLA does not fuse as well, and with one draw's memory."""
    return jax.lax.map(lambda h: log_likelihood_halos(h, data, config), hypers)


@partial(jax.jit, static_argnames="config")
def log_likelihood_batch(hypers: Hyper, data: CollapsedData, config: QuadratureConfig = QuadratureConfig()):
    """:func:`log_likelihood` at a batch of hyperparameters (leading axis), one after the
    other as :func:`log_likelihood_halos_batch`."""
    return jax.lax.map(lambda h: log_likelihood(h, data, config), hypers)


def reference_log_likelihood_halos(
    hyper: Hyper, z, lum_obs, prior: MassPrior, n_points: int = 10_000, chunk: int = 1024, lum_obs_err=None
):
    """Brute-force reference: Simpson's rule with ``n_points`` masses over the tabulated range.

    The prior comes from :func:`bigmali.mass_prior.log_prob_ln_mass`, the likelihood from
    :func:`bigmali.relation.lognormal_logpdf`; nothing is shared with the fast path but
    those two. The background intervals (1e-30 per unit M) are left out: for halos within
    the tabulated masses they contribute less than 1e-9 relative.
    """
    from bigmali.mass_prior import log_prob_ln_mass, tabulated_knots

    n = n_points + (n_points % 2 == 1)  # Simpson needs an even number of intervals
    knots = tabulated_knots(prior)
    x = jnp.linspace(math.log(float(prior.mass[knots.start])), math.log(float(prior.mass[knots.stop - 1])), n + 1)
    simpson = jnp.ones(n + 1).at[1:-1:2].set(4.0).at[2:-1:2].set(2.0) * (x[1] - x[0]) / 3.0

    @jax.jit
    def block(zb, yb, sb):
        log_prior = log_prob_ln_mass(prior, x[None, :], zb[:, None])
        ln_mu = relation.ln_mu_L(x[None, :], zb[:, None], hyper)
        log_like = relation.lognormal_logpdf(yb[:, None], ln_mu, sb[:, None])
        return jax.nn.logsumexp(log_prior + log_like + jnp.log(simpson)[None, :], axis=1)

    z = np.asarray(z, dtype=np.float64)
    y = np.log(np.asarray(lum_obs, dtype=np.float64))
    sigma_obs = relation.SIGMA_OBS if lum_obs_err is None else np.asarray(lum_obs_err, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(relation.sigma_total(float(hyper.S), sigma_obs)), z.shape)
    out = []
    for start in range(0, z.size, chunk):
        zb, yb, sb = (v[start : start + chunk] for v in (z, y, sigma))
        pad = chunk - zb.size
        res = block(*(jnp.asarray(np.pad(v, (0, pad), mode="edge")) for v in (zb, yb, sb)))
        out.append(np.asarray(res)[: zb.size])
    return np.concatenate(out)
