"""The halo mass prior ``P(M | z)``: tabulated, normalised, differentiable and sampleable in JAX.

By default the prior is built exactly as the 2017 code built it:

* hmf ``Tinker10`` ``dn/dm`` in ``WMAP5`` at 20 redshifts ``linspace(0, 3.5, 20)``, 410
  masses per table (:mod:`bigmali.mass_function`);
* hmf's masses (Msun/h) multiplied by ``h = 0.73``, giving 1.26e10 to 1.55e14. This is
  the wrong direction for a Msun/h to Msun conversion; it is kept as the default
  (``mass_convention="2017"``) so results compare with 2017. ``mass_convention="physical"``
  divides by the cosmology's ``h`` instead;
* a halo at redshift z uses the table at the smallest grid redshift >= z (``z_interp="bins"``),
  or a linear interpolation between the two neighbouring tables (``z_interp="linear"``);
* between table masses the density is linear in M;
* four knots of density 1e-30 at ``1``, ``M_0 - 1``, ``M_n + 1`` and ``100 (M_n + 1)`` keep
  log-densities finite beyond the table, then each table is renormalised to unit integral.

With density linear in M between knots, the trapezoid rule integrates each table exactly and
the CDF is piecewise quadratic, so :func:`sample_ln_mass` inverts it exactly.

``source="2017-sampler"`` is not a mass function: it is the distribution the 2017 code's
sampler (``MassPrior.rvs`` of June 2017) actually drew masses from, and so the distribution
of the masses in the 2017 catalog ``mock_data_prior.txt``. That sampler built its inverse CDF
from the cumulative sum of the *density values* at the knots, not of density x interval
width: the interval ``(M_{i-1}, M_i]`` received probability ``p_i / sum p`` (uniform inside
it) and the 1-Msun interval ``(M_0 - 1, M_0]`` received ``p_0 / sum p``. On the
log-spaced grid that tilts the mass function by ``1 / M`` (per unit ln M the draws follow
``p(M)`` instead of ``M p(M)``) and puts 4.2% (z = 0) to 4.8% (z = 3.5) of the halos at the
table's lowest mass.
:func:`sampler_2017_table` builds that step density exactly (knot pairs 1e-9 apart in M);
use it to fit the 2017 catalog, not a survey (see the README, "Why the 2017 inference
failed").

Masses are in Msun (in the chosen convention). Every function takes arrays of halos, each
at its own redshift, and works under ``jit`` and ``grad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bigmali import mass_function
from bigmali.mass_function import TableSpec

__all__ = [
    "H_2017",
    "BACKGROUND_2017",
    "MassPrior",
    "build_mass_prior",
    "load_mass_prior",
    "read_prior_table",
    "tabulated_knots",
    "tabulated_ln_mass_range",
    "bin_index",
    "table_rows",
    "knot_interval",
    "density_between_knots",
    "log_density_between_knots",
    "density_mass",
    "cdf_mass",
    "log_prob_ln_mass",
    "sample_ln_mass",
    "prior_fingerprint",
    "sampler_2017_table",
    "SOURCES",
]

H_2017 = 0.73
"""The factor the 2017 code multiplied hmf's masses by (see the module docstring)."""

BACKGROUND_2017 = 1e-30
"""Density of the 2017 background knots, per unit M, before renormalisation."""

MASS_CONVENTIONS = ("2017", "physical")
SOURCES = ("tinker10", "hmf", "2017-sampler")
"""Named prior sources (anything else is a table file): an hmf mass function, or the
distribution the 2017 sampler drew the 2017 catalog's masses from (module docstring)."""
Z_INTERPOLATIONS = ("bins", "linear")


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["z_grid", "mass", "density", "cdf", "abundance"],
    meta_fields=["z_interp", "background", "cosmology", "description", "ln_step"],
)
@dataclass(frozen=True)
class MassPrior:
    """A tabulated mass prior on one mass grid shared by all redshift tables.

    Attributes:
        z_grid: table redshifts, increasing, shape (nz,).
        mass: mass knots in Msun, increasing, shape (nm,).
        density: ``P(M | z_i)`` per unit M at the knots, shape (nz, nm); each row integrates to 1.
        cdf: the CDF at the knots, shape (nz, nm).
        abundance: comoving number density of halos in the table's mass range at each table
            redshift, in Mpc^-3, or None when unknown (user tables). The lightcone needs it.
        z_interp: ``"bins"`` or ``"linear"``.
        background: density of the background knots before renormalisation (1e-30 in 2017),
            or None when the table has none. With a background, the first and last knot
            intervals, [1, M_0 - 1] and [M_n + 1, 100 (M_n + 1)], have constant density.
        cosmology: astropy realization name the tables were computed in, or None.
        description: one line saying where the prior came from.
        ln_step: the ln M spacing of the tabulated knots when it is even (hmf's grids are),
            so that a mass's knot interval is found by arithmetic; None (search) otherwise.
    """

    z_grid: jax.Array
    mass: jax.Array
    density: jax.Array
    cdf: jax.Array
    abundance: jax.Array | None
    z_interp: str = "bins"
    background: float | None = None
    cosmology: str | None = None
    description: str = ""
    ln_step: float | None = None

    @property
    def z_max(self) -> float:
        """Largest redshift the prior covers (redshifts run from 0 to this)."""
        return float(self.z_grid[-1])

    @property
    def ln_mass_bounds(self) -> tuple[float, float]:
        """ln M at the first and last knot: the support of the prior."""
        return math.log(float(self.mass[0])), math.log(float(self.mass[-1]))

    def log_prob(self, ln_mass, z):
        """Log-density of ln M; see :func:`log_prob_ln_mass`."""
        return log_prob_ln_mass(self, ln_mass, z)

    def sample(self, key, z):
        """One ln M draw per redshift; see :func:`sample_ln_mass`."""
        return sample_ln_mass(self, key, z)


def prior_fingerprint(prior: MassPrior) -> str:
    """SHA-256 of what the prior is: its table redshifts, mass knots, densities and
    redshift interpolation. Two priors with the same fingerprint give the same numbers,
    whichever options or files built them. A run records it (see ``bigmali.fit``)."""
    import hashlib

    digest = hashlib.sha256(prior.z_interp.encode())
    for values in (prior.z_grid, prior.mass, prior.density):
        digest.update(np.ascontiguousarray(np.asarray(values), dtype="<f8").tobytes())
    return digest.hexdigest()


def sampler_2017_table(mass: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distribution the 2017 sampler drew from, as knots and densities per unit M.

    Args:
        mass: (nm,) increasing table masses in Msun.
        density: (nz, nm) the mass function's density per unit M at those masses.

    Returns ``(knots, densities)``: a step density, constant ``p_i / (sum p * (M_i - M_{i-1}))``
    on each interval and ``p_0 / sum p`` on the 1-Msun interval below ``M_0`` (the step
    edges are knot pairs a relative 1e-9 apart, so linear interpolation reproduces it).
    """
    mass = np.asarray(mass, dtype=np.float64)
    p = np.atleast_2d(np.asarray(density, dtype=np.float64))
    share = p / p.sum(axis=1, keepdims=True)
    step = np.hstack([share[:, :1] / 0.99, share[:, 1:] / np.diff(mass)])  # first: the spike below M_0
    # Each step is a knot pair; the spike rises from ~0 at M_0 - 1 so that the ramp from the
    # background knot below it carries nothing (its two 0.01-Msun ramps hold 1% of it).
    left = np.concatenate([[mass[0] - 0.99], mass[:-1]])
    right = np.concatenate([[mass[0] - 0.01], mass[1:] * (1.0 - 1e-9)])
    right[-1] = mass[-1]
    knots = np.concatenate([[mass[0] - 1.0], np.column_stack([left, right]).ravel()])
    floor = np.full((p.shape[0], 1), BACKGROUND_2017)
    return knots, np.hstack([floor, np.repeat(step, 2, axis=1)])


def _with_background(mass: np.ndarray, density: np.ndarray, background: float | None):
    if background is None:
        return mass, density
    if mass[0] <= 2.0:
        raise ValueError(
            f"prior table column 'mass', row 0: value {float(mass[0])!r} is too small for the 2017 background "
            "knots at 1 and M_0 - 1 (masses must be in Msun, not log10)"
        )
    mass = np.concatenate([[1.0, mass[0] - 1.0], mass, [mass[-1] + 1.0, 100.0 * (mass[-1] + 1.0)]])
    pad = np.full((density.shape[0], 2), background)
    return mass, np.hstack([pad, density, pad])


def build_mass_prior(
    z_grid,
    mass,
    density,
    *,
    abundance=None,
    z_interp: str = "bins",
    background: float | None = BACKGROUND_2017,
    cosmology: str | None = None,
    description: str = "",
) -> MassPrior:
    """Build a prior from unnormalised densities per unit M on a shared mass grid.

    Args:
        z_grid: (nz,) increasing redshifts.
        mass: (nm,) increasing masses in Msun.
        density: (nz, nm) non-negative densities per unit M (any normalisation).
        abundance: optional (nz,) comoving number densities in Mpc^-3.
        z_interp: ``"bins"`` (2017) or ``"linear"``.
        background: density of the 2017 background knots, or None for none.
    """
    if z_interp not in Z_INTERPOLATIONS:
        raise ValueError(f"z_interp {z_interp!r}: choose one of {', '.join(Z_INTERPOLATIONS)}")
    z_grid = np.asarray(z_grid, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    density = np.atleast_2d(np.asarray(density, dtype=np.float64))
    if density.shape != (z_grid.size, mass.size):
        raise ValueError(f"prior density has shape {density.shape}, expected {(z_grid.size, mass.size)}")
    if z_interp == "linear" and z_grid.size < 2:
        raise ValueError("z_interp 'linear' needs at least two redshift tables")
    norm = np.trapezoid(density, mass, axis=1)
    for i, value in enumerate(norm):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(
                f"prior table at z = {float(z_grid[i])!r}: density integrates to {float(value)!r}, not a positive number"
            )
    # As in 2017: normalise the table, add the background knots, renormalise.
    mass, density = _with_background(mass, density / norm[:, None], background)
    density = density / np.trapezoid(density, mass, axis=1)[:, None]
    steps = 0.5 * (density[:, 1:] + density[:, :-1]) * np.diff(mass)
    cdf = np.hstack([np.zeros((density.shape[0], 1)), np.cumsum(steps, axis=1)])
    ln_steps = np.diff(np.log(mass[2:-2] if background is not None else mass))
    even = ln_steps.size > 0 and np.allclose(ln_steps, ln_steps.mean(), rtol=1e-9, atol=0)
    return MassPrior(
        z_grid=jnp.asarray(z_grid),
        mass=jnp.asarray(mass),
        density=jnp.asarray(density),
        cdf=jnp.asarray(cdf),
        abundance=None if abundance is None else jnp.asarray(abundance, dtype=jnp.float64),
        z_interp=z_interp,
        background=background,
        cosmology=cosmology,
        description=description,
        ln_step=float(ln_steps.mean()) if even else None,
    )


def read_prior_table(path, density_per: str):
    """Read a user prior table with columns ``z``, ``mass`` (Msun) and ``density``.

    ``density_per`` says whether ``density`` is per unit M (``"M"``) or per unit ln M
    (``"lnM"``); per-ln M values are divided by M at the knots. Every redshift must use the
    same mass grid. Returns ``(z_grid, mass, density_per_M)``.
    """
    from astropy.table import Table

    if density_per not in ("M", "lnM"):
        raise ValueError(f"density_per {density_per!r}: choose 'M' or 'lnM'")
    path = Path(path)
    try:
        fmt = "ascii" if path.suffix.lower() in (".txt", ".dat", "") else None
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many kinds; all mean the same to the user
        raise ValueError(f"cannot read prior table {str(path)!r}: {exc}") from None
    for name in ("z", "mass", "density"):
        if name not in table.colnames:
            raise ValueError(
                f"prior table {str(path)!r} is missing column {name!r} (found: {', '.join(table.colnames)})"
            )
    cols = {}
    for name in ("z", "mass", "density"):
        values = np.asarray(np.ma.filled(table[name], np.nan), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"prior table column {name!r}, row {bad[0]}: value {float(values[bad[0]])!r} is not finite"
            )
        cols[name] = values
    for name in ("mass", "density"):
        sign_bad = np.flatnonzero(cols[name] <= 0) if name == "mass" else np.flatnonzero(cols[name] < 0)
        if sign_bad.size:
            i = sign_bad[0]
            raise ValueError(
                f"prior table column {name!r}, row {i}: value {float(cols[name][i])!r} must be {'positive' if name == 'mass' else 'non-negative'}"
            )
    z_grid = np.unique(cols["z"])
    rows = [np.flatnonzero(cols["z"] == z) for z in z_grid]
    first = rows[0][np.argsort(cols["mass"][rows[0]])]
    mass = cols["mass"][first]
    if np.any(np.diff(mass) <= 0):
        raise ValueError(f"prior table {str(path)!r}: masses at z = {float(z_grid[0])!r} repeat a value")
    density = np.empty((z_grid.size, mass.size))
    for i, idx in enumerate(rows):
        idx = idx[np.argsort(cols["mass"][idx])]
        if idx.size != mass.size or not np.array_equal(cols["mass"][idx], mass):
            raise ValueError(
                f"prior table {str(path)!r}: the masses at z = {float(z_grid[i])!r} differ from those at "
                f"z = {float(z_grid[0])!r}; every redshift must use one mass grid"
            )
        density[i] = cols["density"][idx]
    if density_per == "lnM":
        density = density / mass
    return z_grid, mass, density


def load_mass_prior(
    source: str = "tinker10",
    *,
    hmf_model: str = "Tinker10",
    cosmology: str = "WMAP5",
    mass_convention: str = "2017",
    z_interp: str = "bins",
    density_per: str | None = None,
    background: float | None = BACKGROUND_2017,
) -> MassPrior:
    """The mass prior a run asks for, by the same names as the CLI's prior flags.

    Args:
        source: ``"tinker10"`` (or ``"hmf"``) for an hmf mass function, ``"2017-sampler"``
            for the distribution the 2017 sampler drew the 2017 catalog's masses from (the
            same hmf table, tilted as that sampler tilted it: see the module docstring),
            else the path of a table file with columns z, mass (Msun), density.
        hmf_model: hmf fitting function name (``Tinker10``, ``Tinker08``, ``ST``, ...).
        cosmology: astropy realization name for hmf and for lightcone volumes.
        mass_convention: ``"2017"`` (hmf masses times 0.73) or ``"physical"`` (divided by h).
        z_interp: ``"bins"`` or ``"linear"``.
        density_per: for a table file, ``"M"`` or ``"lnM"``; required there, refused for hmf.
    """
    if source.lower() in SOURCES:
        if density_per is not None:
            raise ValueError("--prior-density-per applies to a prior table file, not to an hmf mass function")
        if mass_convention not in MASS_CONVENTIONS:
            raise ValueError(f"mass convention {mass_convention!r}: choose one of {', '.join(MASS_CONVENTIONS)}")
        table = mass_function.load_table(TableSpec(hmf_model=hmf_model, cosmology=cosmology))
        factor = H_2017 if mass_convention == "2017" else 1.0 / table.h
        mass, density, what = table.m * factor, table.dndm, f"hmf {hmf_model}"
        if source.lower() == "2017-sampler":
            mass, density = sampler_2017_table(mass, density)
            what = f"the 2017 sampler's draws from hmf {hmf_model} (density values used as probabilities)"
        return build_mass_prior(
            table.z,
            mass,
            density,
            abundance=table.number_density(),
            z_interp=z_interp,
            background=background,
            cosmology=cosmology,
            description=f"{what} in {cosmology}, {mass_convention} mass convention, z {z_interp}",
        )
    if density_per is None:
        raise ValueError(
            f"prior table {source!r}: say whether its density is per unit M or per unit ln M (--prior-density-per M|lnM)"
        )
    z_grid, mass, density = read_prior_table(source, density_per)
    return build_mass_prior(
        z_grid,
        mass,
        density,
        z_interp=z_interp,
        background=background,
        description=f"table {Path(source).name} (density per {density_per}), z {z_interp}",
    )


# ---------------------------------------------------------------- evaluation (JAX)
# The public functions below are jitted: called on arrays outside a jitted function (the
# simulator, tests, notebooks) each runs as one compiled program per shape instead of
# twenty-odd operations compiled one by one; inside a traced function they are inlined.


def expected_dndz(prior: MassPrior, solid_angle: float, z) -> np.ndarray:
    """Expected halos per unit redshift in ``solid_angle`` steradians, in the prior's mass
    range: ``Omega dV_c/(dz dOmega)(z) n(z)``, with ``n(z)`` the prior's abundance (its hmf
    tables' number densities, a cubic spline in ln n between table redshifts) and the
    comoving volume in the prior's cosmology (astropy)."""
    from scipy.interpolate import CubicSpline

    from bigmali.mass_function import resolve_cosmology

    if prior.abundance is None:
        raise ValueError(
            f"the mass prior ({prior.description}) carries no halo abundance, so the expected number of "
            "halos in a field is unknown"
        )
    if prior.cosmology is None:
        raise ValueError("the mass prior names no cosmology, so comoving volumes are unknown")
    z = np.asarray(z, dtype=np.float64)
    ln_n = CubicSpline(np.asarray(prior.z_grid), np.log(np.asarray(prior.abundance)))
    dv = resolve_cosmology(prior.cosmology).differential_comoving_volume(z).to_value("Mpc3 / sr")
    return solid_angle * dv * np.exp(ln_n(z))


def tabulated_knots(prior: MassPrior) -> slice:
    """The knots of the mass-function table itself: background knots and their ramps left out."""
    n = prior.mass.shape[0]
    return slice(2, n - 2) if prior.background is not None else slice(0, n)


def tabulated_ln_mass_range(prior: MassPrior) -> tuple[float, float]:
    """ln M at the first and last tabulated knot (background knots excluded)."""
    knots = tabulated_knots(prior)
    return jnp.log(prior.mass[knots.start]), jnp.log(prior.mass[knots.stop - 1])


def bin_index(prior: MassPrior, z):
    """Index of the table a halo at ``z`` uses in ``"bins"`` mode: the smallest grid z >= z."""
    return jnp.clip(jnp.searchsorted(prior.z_grid, z, side="left"), 0, prior.z_grid.shape[0] - 1)


@jax.jit
def table_rows(prior: MassPrior, z):
    """The two tables mixed at ``z`` and the weight of the second: P = (1 - w) P_lo + w P_hi."""
    if prior.z_interp == "bins":
        row = bin_index(prior, z)
        return row, row, jnp.zeros_like(jnp.asarray(z, dtype=prior.z_grid.dtype))
    nz = prior.z_grid.shape[0]
    lo = jnp.clip(jnp.searchsorted(prior.z_grid, z, side="right") - 1, 0, nz - 2)
    z0, z1 = prior.z_grid[lo], prior.z_grid[lo + 1]
    return lo, lo + 1, jnp.clip((z - z0) / (z1 - z0), 0.0, 1.0)


def _segment(prior: MassPrior, mass):
    """Knot interval [k-1, k] holding ``mass``, the offset into it and its width."""
    nm = prior.mass.shape[0]
    k = jnp.clip(jnp.searchsorted(prior.mass, mass, side="right"), 1, nm - 1)
    lo = prior.mass[k - 1]
    return k, mass - lo, prior.mass[k] - lo


def _row_cdf(prior: MassPrior, row, k, t, width):
    a = prior.density[row, k - 1]
    slope = (prior.density[row, k] - a) / width
    return prior.cdf[row, k - 1] + t * (a + 0.5 * slope * t)


@jax.jit
def knot_interval(prior: MassPrior, ln_mass):
    """The knot interval ``[M_k, M_k+1]`` holding ``exp(ln_mass)``: k, clipped to [0, nm - 2].

    Found by arithmetic on an evenly spaced table (``prior.ln_step``) with a short search
    over the background knots, and by a search over all knots otherwise.
    """
    n = prior.mass.shape[0]
    ln_knots = jnp.log(prior.mass)
    if prior.ln_step is None:
        return jnp.clip(jnp.searchsorted(ln_knots, ln_mass, side="right") - 1, 0, n - 2)
    knots = tabulated_knots(prior)
    first, last = knots.start, knots.stop - 1
    k = jnp.clip(jnp.floor((ln_mass - ln_knots[first]) / prior.ln_step).astype(jnp.int32) + first, first, last - 1)
    if first > 0:
        below = jnp.clip(jnp.searchsorted(ln_knots[: first + 1], ln_mass, side="right") - 1, 0, first - 1)
        k = jnp.where(ln_mass < ln_knots[first], below, k)
    if last < n - 1:
        above = jnp.clip(jnp.searchsorted(ln_knots[last:], ln_mass, side="right") - 1 + last, last, n - 2)
        k = jnp.where(ln_mass >= ln_knots[last], above, k)
    return k


@jax.jit
def density_between_knots(prior: MassPrior, ln_mass, row_lo, row_hi, w_hi):
    """``P(M | z)`` per unit M at ``M = exp(ln_mass)``: the one statement of the prior's density.

    Each table is linear in M between its knots; the two tables ``row_lo`` and ``row_hi``
    (from :func:`table_rows`) are mixed with weight ``w_hi``. Masses beyond the knots are
    clamped to them (:func:`log_density_between_knots` masks them). Every model, likelihood
    and estimator reads the prior through this function.
    """
    x = jnp.clip(ln_mass, jnp.log(prior.mass[0]), jnp.log(prior.mass[-1]))
    k = knot_interval(prior, x)
    m0 = prior.mass[k]
    t = jnp.clip((jnp.exp(x) - m0) / (prior.mass[k + 1] - m0), 0.0, 1.0)

    def row_density(row):
        d0 = prior.density[row, k]
        return d0 + (prior.density[row, k + 1] - d0) * t

    return (1.0 - w_hi) * row_density(row_lo) + w_hi * row_density(row_hi)


@jax.jit
def log_density_between_knots(prior: MassPrior, ln_mass, row_lo, row_hi, w_hi):
    """``ln P(M | z)`` per unit M (:func:`density_between_knots`); ``-inf`` outside the knots or
    where the density is zero, with finite gradients everywhere."""
    p = density_between_knots(prior, ln_mass, row_lo, row_hi, w_hi)
    ok = (ln_mass >= jnp.log(prior.mass[0])) & (ln_mass <= jnp.log(prior.mass[-1])) & (p > 0)
    return jnp.where(ok, jnp.log(jnp.where(ok, p, 1.0)), -jnp.inf)


@jax.jit
def density_mass(prior: MassPrior, mass, z):
    """``P(M | z)`` per unit M (Msun^-1), zero outside the knots."""
    mass, z = jnp.broadcast_arrays(jnp.asarray(mass, dtype=prior.mass.dtype), jnp.asarray(z, dtype=prior.z_grid.dtype))
    inside = (mass >= prior.mass[0]) & (mass <= prior.mass[-1])
    return jnp.where(inside, density_between_knots(prior, jnp.log(mass), *table_rows(prior, z)), 0.0)


@jax.jit
def cdf_mass(prior: MassPrior, mass, z):
    """Exact CDF of ``P(M | z)`` at ``mass`` (piecewise quadratic in M)."""
    mass, z = jnp.broadcast_arrays(jnp.asarray(mass, dtype=prior.mass.dtype), jnp.asarray(z, dtype=prior.z_grid.dtype))
    lo, hi, w = table_rows(prior, z)
    clipped = jnp.clip(mass, prior.mass[0], prior.mass[-1])
    k, t, width = _segment(prior, clipped)
    return (1.0 - w) * _row_cdf(prior, lo, k, t, width) + w * _row_cdf(prior, hi, k, t, width)


@jax.jit
def log_prob_ln_mass(prior: MassPrior, ln_mass, z):
    """Log-density of ln M: ``ln P(M | z) + ln M``; ``-inf`` outside the prior's support.

    Differentiable in ``ln_mass`` everywhere inside the support (piecewise smooth), with
    finite gradients also outside it.
    """
    ln_mass, z = jnp.broadcast_arrays(
        jnp.asarray(ln_mass, dtype=prior.mass.dtype), jnp.asarray(z, dtype=prior.z_grid.dtype)
    )
    return log_density_between_knots(prior, ln_mass, *table_rows(prior, z)) + ln_mass


@jax.jit
def sample_ln_mass(prior: MassPrior, key, z):
    """Draw one ln M per entry of ``z`` from ``P(M | z)`` by exact inverse-CDF sampling.

    In ``"linear"`` mode the density is a mixture of two tables, so a table is first
    chosen with the mixture weight, then its piecewise-quadratic CDF is inverted.
    """
    z = jnp.asarray(z, dtype=prior.z_grid.dtype)
    key_u, key_mix = jax.random.split(key)
    lo, hi, w = table_rows(prior, z)
    row = jnp.where(jax.random.uniform(key_mix, z.shape) < w, hi, lo)
    u = jax.random.uniform(key_u, z.shape, dtype=prior.cdf.dtype)
    nz, nm = prior.cdf.shape
    # One search over all tables at once: row i's CDF is shifted into [i, i + 1].
    flat = (jnp.arange(nz, dtype=prior.cdf.dtype)[:, None] + prior.cdf).ravel()
    j = jnp.searchsorted(flat, row + u, side="right")
    k = jnp.clip(j - row * nm, 1, nm - 1)
    m_lo = prior.mass[k - 1]
    width = prior.mass[k] - m_lo
    a = prior.density[row, k - 1]
    slope = (prior.density[row, k] - a) / width
    r = jnp.maximum(u - prior.cdf[row, k - 1], 0.0)
    # Root of a t + slope t^2 / 2 = r in the cancellation-free form.
    den = a + jnp.sqrt(jnp.maximum(a * a + 2.0 * slope * r, 0.0))
    t = jnp.where(den > 0, 2.0 * r / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.log(m_lo + jnp.clip(t, 0.0, width))
