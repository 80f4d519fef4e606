"""Mock lightcone catalogs: halos in a square field, drawn from the mass function.

A mock is drawn in four steps:

1. the expected number of halos per unit redshift in a field of solid angle Omega,

   .. math:: \\frac{dN}{dz} = \\Omega \\, \\frac{dV_c}{dz\\, d\\Omega}(z) \\; n(z),

   with ``n(z)`` the comoving number density of halos in the prior's mass range (from the
   same hmf tables as the prior, interpolated in ln n with a cubic spline) and ``dV_c`` the
   comoving volume in the same cosmology; the number of halos is Poisson, the redshifts
   follow ``dN/dz``;
2. positions uniform on the sphere inside the field (uniform in ra and in sin(dec));
3. masses from the mass prior ``P(M | z)``;
4. ``ln L = ln mu_L(M, z) + S e1`` and ``ln L_obs = ln L + sigma_obs e2`` with standard normal
   e1, e2 (:mod:`bigmali.relation`).

The default field is 40 x 40 arcmin out to z = 3.5, the window of the 2017 mock.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigmali import relation
from bigmali.catalog import Catalog
from bigmali.mass_prior import MassPrior, expected_dndz, load_mass_prior
from bigmali.relation import HYPERSEED, Hyper

__all__ = ["Field", "square_field", "redshift_distribution", "simulate", "simulate_detected", "draw_detected"]

N_HALOS_2017 = 115_919
"""Halos in the 2017 mock (Millennium Simulation lightcone, 40 x 40 arcmin, z <= 3.5)."""


class Field(NamedTuple):
    """A field bounded by two meridians and two parallels, in degrees."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    @property
    def solid_angle(self) -> float:
        """Solid angle in steradians: (ra_max - ra_min) (sin dec_max - sin dec_min)."""
        return math.radians(self.ra_max - self.ra_min) * (
            math.sin(math.radians(self.dec_max)) - math.sin(math.radians(self.dec_min))
        )


def square_field(side_arcmin: float = 40.0, ra_center: float | None = None, dec_center: float = 0.0) -> Field:
    """A square field of the given side; by default its lower ra edge sits at ra = 0."""
    if not side_arcmin > 0:
        raise ValueError(f"field side {side_arcmin!r} arcmin must be positive")
    half = side_arcmin / 120.0
    ra_center = half if ra_center is None else ra_center
    if not (0 <= ra_center - half and ra_center + half < 360 and -90 <= dec_center - half and dec_center + half <= 90):
        raise ValueError(f"a {side_arcmin} arcmin field centred at ra={ra_center}, dec={dec_center} leaves the sky")
    return Field(ra_center - half, ra_center + half, dec_center - half, dec_center + half)


def redshift_distribution(prior: MassPrior, field: Field, n_grid: int = 4001):
    """``dN/dz`` on a fine grid from 0 to the prior's largest redshift, and its integral.

    Returns ``(z, dN/dz, N_expected)``.
    """
    if prior.abundance is None:
        raise ValueError(
            f"the mass prior ({prior.description}) carries no halo abundance, so a lightcone cannot be "
            "drawn from it; give the halos' redshifts instead"
        )
    z = np.linspace(0.0, float(prior.z_grid[-1]), n_grid)
    dndz = expected_dndz(prior, field.solid_angle, z)
    return z, dndz, float(np.trapezoid(dndz, z))


def _draw_redshifts(key, prior: MassPrior, field: Field, n_halos: int | None):
    z_grid, dndz, expected = redshift_distribution(prior, field)
    key_n, key_z = jax.random.split(key)
    n = int(jax.random.poisson(key_n, expected)) if n_halos is None else n_halos
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dndz[1:] + dndz[:-1]) * np.diff(z_grid))])
    u = np.asarray(jax.random.uniform(key_z, (n,)))
    return np.interp(u * cum[-1], cum, z_grid), expected


def _draw_positions(key, field: Field, n: int):
    key_ra, key_dec = jax.random.split(key)
    ra = field.ra_min + (field.ra_max - field.ra_min) * np.asarray(jax.random.uniform(key_ra, (n,)))
    s0, s1 = math.sin(math.radians(field.dec_min)), math.sin(math.radians(field.dec_max))
    dec = np.degrees(np.arcsin(s0 + (s1 - s0) * np.asarray(jax.random.uniform(key_dec, (n,)))))
    return ra, dec


@jax.jit
def _draw_halos(prior: MassPrior, hyper: Hyper, key_m, key_l, z, sigma_obs=relation.SIGMA_OBS):
    """ln M from the prior, then ln L from the relation and its scatter, then ln L_obs with the
    measurement noise ``sigma_obs`` (one number, or one per halo), for halos at ``z`` (one
    compiled program per catalog size)."""
    ln_mass = prior.sample(key_m, z)
    e1, e2 = jax.random.normal(key_l, (2, z.shape[0]))
    ln_lum = relation.ln_mu_L(ln_mass, z, hyper) + hyper.S * e1
    return ln_mass, ln_lum, ln_lum + sigma_obs * e2


DETECT_BLOCK = 2**16
"""Halo draws per call of the truncated sampler's compiled step (:func:`draw_detected`)."""
MAX_TRIES = 10**6
"""Draws a halo gets before :func:`draw_detected` refuses it: its detection probability at
the hyperparameters is then below ~1e-6, a limit that excludes it rather than a halo."""


def draw_detected(prior: MassPrior, hyper: Hyper, key, z, sigma_obs, ln_lim, block: int = DETECT_BLOCK):
    """Halos at ``z`` drawn from the truncated predictive: ln M from the prior, ln L from the
    relation and its scatter, ln L_obs with the measurement noise (``sigma_obs``, one number or
    one per halo), the three redrawn together until ``ln L_obs > ln_lim`` (replicate, then cut,
    until each halo is detected). Exact: what is kept is distributed as
    ``P(M, L, L_obs | z, theta, detected)``, the model the truncated likelihood describes.

    Each step draws ``block`` halos (at most four times the catalog, rounded up to a power of
    two, and at least 1,024): the halos not yet detected, repeated to fill the block,
    so that a rarely detected halo gets many tries at once; the first detected try of each is
    kept. The cost is about the sum of the halos' 1 / P(detected), not the halo count times
    the largest. Returns ``(ln_mass, ln_lum, ln_lum_obs)`` as numpy arrays; a halo not
    detected in :data:`MAX_TRIES` draws is an error naming its row.
    """
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    n = z.size
    sigma_obs = np.broadcast_to(np.asarray(sigma_obs, dtype=np.float64), (n,))
    ln_lim = np.broadcast_to(np.asarray(ln_lim, dtype=np.float64), (n,))
    hyper = Hyper(*(jnp.asarray(v, dtype=jnp.float64) for v in hyper))
    block = min(block, max(1024, 1 << (4 * n - 1).bit_length()))  # a small catalog: a small block
    out = np.zeros((3, n))
    remaining = np.arange(n)
    tries = np.zeros(n, dtype=np.int64)
    step = 0
    while remaining.size:
        idx = remaining[:block] if remaining.size >= block else np.resize(remaining, block)
        drawn = np.asarray(
            _draw_halos(
                prior, hyper, *jax.random.split(jax.random.fold_in(key, step)), jnp.asarray(z[idx]), sigma_obs[idx]
            )
        )
        step += 1
        np.add.at(tries, idx, 1)
        hit = np.flatnonzero(drawn[2] > ln_lim[idx])
        halos, first = np.unique(idx[hit], return_index=True)
        out[:, halos] = drawn[:, hit[first]]
        remaining = np.setdiff1d(remaining, halos, assume_unique=True)
        stuck = remaining[tries[remaining] >= MAX_TRIES]
        if stuck.size:
            row = int(stuck[0])
            raise ValueError(
                f"row {row} (z = {z[row]:.4g}, ln L_lim = {ln_lim[row]:.4g}): not detected in {MAX_TRIES} draws at "
                f"{dict(zip(relation.HYPER_NAMES, map(float, hyper)))}; its detection probability there is "
                f"below ~{1.0 / MAX_TRIES:.0e} ({stuck.size} halo(s))"
            )
    return out[0], out[1], out[2]


def check_error_range(low: float, high: float) -> None:
    """Refuse a range of measurement errors that is not ``0 < low <= high``, both finite."""
    if not 0 < low <= high or not math.isfinite(high):
        raise ValueError(f"lum_obs_err range ({low!r}, {high!r}): needs 0 < low <= high, both finite")


def draw_lum_obs_err(key, n: int, low: float, high: float) -> np.ndarray:
    """``n`` measurement errors drawn log-uniformly in [low, high] (0 < low <= high)."""
    check_error_range(low, high)
    u = np.asarray(jax.random.uniform(key, (n,), dtype=jnp.float64))
    return np.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def simulate(
    prior: MassPrior | None = None,
    hyper: Hyper = HYPERSEED,
    *,
    field_arcmin: float = 40.0,
    n_halos: int | None = None,
    redshifts=None,
    ra=None,
    dec=None,
    seed: int = 0,
    lum_obs_err: tuple[float, float] | None = None,
    flux_limit=None,
) -> Catalog:
    """Draw a mock catalog with true masses and luminosities.

    Args:
        prior: the mass prior (default: the 2017 Tinker10 prior).
        hyper: hyperparameters of the relation (default: the 2017 hyperseed).
        field_arcmin: side of the square field.
        n_halos: without ``redshifts``, draw exactly this many halos from ``dN/dz`` instead
            of a Poisson number; with ``redshifts``, keep a random subsample of this size.
        redshifts: use these halo redshifts instead of drawing a lightcone.
        ra, dec: positions (degrees) to go with ``redshifts``; drawn in the field if absent.
        seed: the same seed gives the same catalog.
        lum_obs_err: ``(low, high)``: give each halo its own measurement error, drawn
            log-uniformly in that range, written as the ``lum_obs_err`` column and used to
            draw ``lum_obs``; None for ``sigma_obs`` for every halo (and no column).
        flux_limit: a :class:`bigmali.selection.FluxLimit` (a constant or a table): keep only
            the halos it detects (``lum_obs`` above the limit at their redshift) and record
            it in the metadata (``FLUXLIM``), with the number drawn (``N_DRAWN``).

    The catalog's metadata records the seed, the hyperparameters, the field and the
    expected number of halos ``N_EXPECT`` (and the error range, ``ERR_LO``/``ERR_HI``). A
    lightcone with a Poisson number of halos (no ``n_halos``, no ``redshifts``) also records
    its window (``SURVEY``), which the extended likelihood reads.
    """
    prior = load_mass_prior() if prior is None else prior
    if n_halos is not None and n_halos < 1:
        raise ValueError(f"n_halos {n_halos!r} must be at least 1")
    if (ra is None) != (dec is None):
        raise ValueError("give both ra and dec, or neither")
    field = square_field(field_arcmin)
    key_z, key_sub, key_pos, key_m, key_l = jax.random.split(jax.random.PRNGKey(seed), 5)
    meta = {"GENERATOR": "bigmali.simulate", "SEED": seed, "FIELD_AM": field_arcmin}
    if redshifts is None:
        if ra is not None:
            raise ValueError("ra and dec can only be given together with redshifts")
        z, expected = _draw_redshifts(key_z, prior, field, n_halos)
        meta["N_EXPECT"] = expected
        if n_halos is None:  # a Poisson number in the field: the extended likelihood's window
            from bigmali.selection import SURVEY_KEY, Survey

            meta[SURVEY_KEY] = Survey(field.solid_angle, 0.0, float(prior.z_grid[-1])).to_json()
        ra, dec = _draw_positions(key_pos, field, z.size)
    else:
        z = np.atleast_1d(np.asarray(redshifts, dtype=np.float64))
        if ra is not None:
            ra, dec = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (ra, dec))
            for name, values in (("ra", ra), ("dec", dec)):
                if values.size != z.size:
                    raise ValueError(f"column {name!r} has {values.size} rows but column 'z' has {z.size}")
        if n_halos is not None:
            if n_halos > z.size:
                raise ValueError(f"n_halos {n_halos} is more than the {z.size} redshifts given")
            keep = np.sort(np.asarray(jax.random.choice(key_sub, z.size, (n_halos,), replace=False)))
            z = z[keep]
            ra, dec = (None, None) if ra is None else (ra[keep], dec[keep])
        if ra is None:
            ra, dec = _draw_positions(key_pos, field, z.size)
        bad = np.flatnonzero(~np.isfinite(z) | (z < 0) | (z > prior.z_max))
        if bad.size:
            raise ValueError(
                f"column 'z', row {bad[0]}: value {float(z[bad[0]])!r} is outside the mass prior's redshift range [0, {prior.z_max:g}]"
            )
    err = _errors(seed, z.size, lum_obs_err, meta)
    sigma_obs = relation.sigma_obs_of(err)
    halos = _draw_halos(prior, Hyper(*map(float, hyper)), key_m, key_l, jnp.asarray(z), sigma_obs)
    catalog = _mock_catalog(prior, hyper, z, ra, dec, halos, err, meta)
    return catalog if flux_limit is None else _detected(catalog, flux_limit)


def _errors(seed: int, n: int, lum_obs_err, meta: dict):
    """Each halo's measurement error (log-uniform in ``lum_obs_err``, recorded), or None."""
    if lum_obs_err is None:
        return None
    low, high = (float(v) for v in lum_obs_err)
    meta.update(ERR_LO=low, ERR_HI=high)
    return draw_lum_obs_err(jax.random.fold_in(jax.random.PRNGKey(seed), 1), n, low, high)


def _mock_catalog(prior: MassPrior, hyper: Hyper, z, ra, dec, halos, err, meta: dict) -> Catalog:
    """A mock's catalog from its drawn ``(ln M, ln L, ln L_obs)``, with the hyperparameters and
    the prior recorded in its metadata."""
    ln_mass, ln_lum, ln_lum_obs = (np.asarray(v) for v in halos)
    meta.update(relation.hyper_to_meta(hyper))
    meta["PRIOR"] = prior.description
    return Catalog.from_arrays(
        z=z,
        lum_obs=np.exp(ln_lum_obs),
        ra=ra,
        dec=dec,
        mass=np.exp(ln_mass),
        lum=np.exp(ln_lum),
        lum_obs_err=err,
        meta=meta,
        z_max=prior.z_max,
    )


def simulate_detected(
    prior: MassPrior | None = None,
    hyper: Hyper = HYPERSEED,
    *,
    n_halos: int,
    flux_limit,
    field_arcmin: float = 40.0,
    seed: int = 0,
    lum_obs_err: tuple[float, float] | None = None,
) -> Catalog:
    """A mock of exactly ``n_halos`` detected halos, conditional on their redshifts.

    The redshifts follow the parent ``dN/dz`` of the field; each halo's mass, luminosity and
    observed luminosity are then drawn from the truncated predictive at its redshift
    (:func:`draw_detected`). That is the model the truncated likelihood describes (it takes
    the detected halos' redshifts as given), so a fit of such mocks is exactly calibrated,
    and every mock has the same number of halos (SBC compiles once). A survey's own detected
    redshifts are instead thinned by the detection probability (:func:`simulate` with
    ``flux_limit``). The limit is recorded as :func:`simulate` records it, with
    ``SELECTED = "truncated"``.
    """
    from bigmali.selection import META_KEY

    prior = load_mass_prior() if prior is None else prior
    if n_halos < 1:
        raise ValueError(f"n_halos {n_halos!r} must be at least 1")
    if flux_limit.kind == "column":
        raise ValueError("a mock's flux limit must be a constant or a table, not the catalog's column")
    field = square_field(field_arcmin)
    key_z, key_pos, key_draw = jax.random.split(jax.random.PRNGKey(seed), 3)
    z, expected = _draw_redshifts(key_z, prior, field, n_halos)
    ra, dec = _draw_positions(key_pos, field, z.size)
    meta = {"GENERATOR": "bigmali.simulate_detected", "SEED": seed, "FIELD_AM": field_arcmin, "N_EXPECT": expected}
    err = _errors(seed, z.size, lum_obs_err, meta)
    ln_lim = flux_limit.ln_limit_at(z)
    hyper = Hyper(*map(float, hyper))
    halos = draw_detected(prior, hyper, key_draw, z, relation.sigma_obs_of(err), ln_lim)
    meta.update({META_KEY: flux_limit.to_meta(), "SELECTED": "truncated"})
    return _mock_catalog(prior, hyper, z, ra, dec, halos, err, meta)


def _detected(catalog: Catalog, flux_limit) -> Catalog:
    """The halos of a mock that ``flux_limit`` detects, with the limit recorded."""
    from bigmali.selection import META_KEY

    if flux_limit.kind == "column":
        raise ValueError("a mock's flux limit must be a constant or a table, not the catalog's column")
    keep = np.log(catalog.lum_obs) > flux_limit.ln_limit(catalog)
    if not keep.any():
        raise ValueError(f"flux limit ({flux_limit.describe()}): no halo of the {len(catalog)} drawn is detected")
    table = catalog.table[keep]
    table.meta.update({META_KEY: flux_limit.to_meta(), "N_DRAWN": len(catalog)})
    return Catalog(table, z_max=None)
