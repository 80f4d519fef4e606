"""Halo masses and mass maps from a fitted run: per-halo posteriors, realisations, sky maps.

Each halo's mass posterior marginalised over the hyperposterior,

.. math:: P(M_k \\mid \\text{data}) = \\frac1D \\sum_{d=1}^{D} P(M_k \\mid L_{obs,k}, z_k, \\theta_d),

is represented by realisations: for each of D hyperposterior draws ``theta_d``, every halo's
ln M is drawn from its conditional given ``theta_d``, discretised on the prior's knots
(:class:`~bigmali.halo_masses.ConditionalMassSampler`, ~10 ms per draw for 10^5
halos; the dense :func:`~bigmali.halo_masses.sample_conditional_ln_mass` for priors in
``"linear"`` redshift mode). Realisation d is therefore one
joint draw of every mass (the halos share ``theta_d``), which is what a map needs: the
hyperparameters' uncertainty moves all masses together and does not average out over a
pixel.

The D realisations are processed in chunks, so memory stays bounded whatever D:

* per halo, a histogram of ln M on a fixed grid (0.01 dex bins over the tabulated range)
  gives the median and the 16/84 and 2.5/97.5 percentiles of log10 M; running sums give
  the mean of log10 M and the lognormal fit (mean and sd of ln M);
* per realisation, the total mass in each pixel of a RA/Dec grid (optionally in redshift
  slices) gives the maps: mean, std, signal-to-noise;
* the first ``keep`` realisations are kept as a probabilistic catalog.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from bigmali.catalog import Catalog
from bigmali.datatree import draws_and_weights, select_hypers
from bigmali.mass_prior import MassPrior
from bigmali.relation import HYPER_NAMES, Hyper, ln_mass_pointed

__all__ = [
    "PixelGrid",
    "check_z_edges",
    "HaloMassPosterior",
    "MassMaps",
    "mass_posterior",
    "sampled_mass_posterior",
    "write_massmap",
    "massmap",
]

LN10 = math.log(10.0)


class PixelGrid(NamedTuple):
    """A square-pixel grid over RA/Dec (degrees), tangent-plane projected about its centre."""

    ra_center: float
    dec_center: float
    pixel_deg: float
    n_pixels: int

    @classmethod
    def field(cls, ra_center: float, dec_center: float, width_deg: float, n_pixels: int = 64) -> PixelGrid:
        """A square field ``width_deg`` on a side centred on (``ra_center``, ``dec_center``)."""
        if not (0 < width_deg <= 180 and n_pixels >= 1 and -90 <= dec_center <= 90 and math.isfinite(ra_center)):
            raise ValueError(
                f"field centre ({ra_center}, {dec_center}), width {width_deg} deg, {n_pixels} pixels: "
                "need a width in (0, 180] degrees, at least one pixel, a finite ra and -90 <= dec <= 90"
            )
        return cls(float(ra_center) % 360.0, float(dec_center), float(width_deg) / n_pixels, int(n_pixels))

    @classmethod
    def covering(cls, ra, dec, n_pixels: int = 64, margin: float = 1e-6) -> PixelGrid:
        """The smallest square grid of ``n_pixels`` x ``n_pixels`` holding every position."""
        ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
        if n_pixels < 1:
            raise ValueError(f"pixels = {n_pixels}: need at least one")
        # RA wraps at 360: centre on the circular mean.
        ra_c = math.degrees(math.atan2(np.mean(np.sin(np.radians(ra))), np.mean(np.cos(np.radians(ra))))) % 360.0
        dec_c = 0.5 * (dec.min() + dec.max())
        grid = cls(ra_c, dec_c, 1.0, n_pixels)
        x, y = grid.project(ra, dec)
        half = max(np.abs(x).max(), np.abs(y).max(), 1e-9) * (1.0 + margin)
        return cls(ra_c, dec_c, 2.0 * half / n_pixels, n_pixels)

    def wcs(self):
        """The astropy WCS of the grid (gnomonic projection, RA increasing to the left)."""
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra_center, self.dec_center]
        w.wcs.crpix = [0.5 * self.n_pixels + 0.5, 0.5 * self.n_pixels + 0.5]
        w.wcs.cdelt = [-self.pixel_deg, self.pixel_deg]
        w.wcs.cunit = ["deg", "deg"]
        return w

    def project(self, ra, dec):
        """Gnomonic (tangent-plane) offsets in degrees, x towards decreasing RA... as the WCS."""
        ra0, dec0 = math.radians(self.ra_center), math.radians(self.dec_center)
        ra, dec = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
        cos_c = math.sin(dec0) * np.sin(dec) + math.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
        x = np.cos(dec) * np.sin(ra - ra0) / cos_c
        y = (math.cos(dec0) * np.sin(dec) - math.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c
        return -np.degrees(x), np.degrees(y)

    def pixel_index(self, ra, dec) -> np.ndarray:
        """Flat pixel index (row-major, [dec, ra] as in the FITS image) of each position; -1 outside."""
        x, y = self.project(ra, dec)
        # Column i runs along -x (the image's first axis is RA, increasing to the left).
        col = np.floor(x / self.pixel_deg + 0.5 * self.n_pixels).astype(np.int64)
        row = np.floor(y / self.pixel_deg + 0.5 * self.n_pixels).astype(np.int64)
        inside = (col >= 0) & (col < self.n_pixels) & (row >= 0) & (row < self.n_pixels)
        return np.where(inside, row * self.n_pixels + col, -1)


class HaloMassPosterior(NamedTuple):
    """Per-halo summaries of log10 M (Msun) under the hyperposterior-marginalised posterior."""

    mean: np.ndarray
    median: np.ndarray
    p16: np.ndarray
    p84: np.ndarray
    p2_5: np.ndarray
    p97_5: np.ndarray
    lognormal_mu: np.ndarray  # mean of ln M
    lognormal_sigma: np.ndarray  # sd of ln M
    lognormal_error: np.ndarray  # per halo: max |lognormal percentile - percentile| over the four, dex


class MassMaps(NamedTuple):
    """Maps of total mass per pixel (Msun), shape (n_zbins, n, n); realisations (D, n_zbins, n, n)."""

    grid: PixelGrid
    z_edges: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    realisations_kept: np.ndarray
    truth: np.ndarray | None

    @property
    def snr(self) -> np.ndarray:
        return np.divide(self.mean, self.std, out=np.zeros_like(self.mean), where=self.std > 0)


PERCENTILES = (0.5, 0.16, 0.84, 0.025, 0.975)


def _halo_posterior(mean_log10, pct: dict, mu, sigma) -> HaloMassPosterior:
    """The summaries, with the lognormal fit's largest percentile error (dex) per halo."""
    from scipy.stats import norm

    errors = np.max([np.abs((mu + norm.ppf(q) * sigma) / LN10 - pct[q]) for q in (0.16, 0.84, 0.025, 0.975)], axis=0)
    return HaloMassPosterior(
        mean=mean_log10,
        median=pct[0.5],
        p16=pct[0.16],
        p84=pct[0.84],
        p2_5=pct[0.025],
        p97_5=pct[0.975],
        lognormal_mu=mu,
        lognormal_sigma=sigma,
        lognormal_error=errors,
    )


def _summarise_samples(ln_mass: np.ndarray) -> HaloMassPosterior:
    """Per-halo summaries from samples of ln M, shape (n_samples, n_halos)."""
    log10 = ln_mass / LN10
    pct = {q: np.percentile(log10, 100 * q, axis=0) for q in PERCENTILES}
    return _halo_posterior(log10.mean(axis=0), pct, ln_mass.mean(axis=0), ln_mass.std(axis=0, ddof=1))


def sampled_mass_posterior(run) -> HaloMassPosterior:
    """Per-halo summaries straight from the masses a run kept (its ``halo_mass`` group): the
    latent models' own sampled masses, or the collapsed model's conditional draws."""
    if "halo_mass" not in run.children:
        raise ValueError("this run kept no per-halo masses (fit it with mass_draws > 0)")
    ln_mass = np.asarray(run["halo_mass"]["ln_mass"], dtype=np.float64)
    ln_mass = ln_mass.reshape(-1, ln_mass.shape[-1])
    if ln_mass.shape[0] < 2:
        raise ValueError("this run kept masses for one draw only: a spread needs at least two")
    return _summarise_samples(ln_mass)


def _quantile_from_histogram(counts: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Per-row quantile of binned samples, linear within the bin."""
    cum = np.cumsum(counts, axis=1, dtype=np.float64)
    total = cum[:, -1:]
    target = q * total
    j = np.argmax(cum >= target, axis=1)
    rows = np.arange(counts.shape[0])
    below = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
    inside = counts[rows, j].astype(np.float64)
    frac = np.divide(target[:, 0] - below, inside, out=np.full(inside.shape, 0.5), where=inside > 0)
    width = edges[1] - edges[0]
    return edges[j] + np.clip(frac, 0.0, 1.0) * width


def check_z_edges(edges) -> np.ndarray:
    """Redshift slice edges as an array: at least two, increasing, the first >= 0."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or not edges[0] >= 0:
        raise ValueError(f"redshift edges {edges.tolist()}: give at least two increasing redshift edges >= 0")
    return edges


def mass_posterior(
    run,
    catalog: Catalog,
    prior: MassPrior,
    *,
    n_draws: int = 1000,
    grid: PixelGrid | None = None,
    n_pixels: int = 64,
    z_edges=None,
    keep: int = 100,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    shard_halos: bool | None = None,
):
    """Per-halo mass posteriors and mass maps from ``n_draws`` hyperposterior draws of ``run``.
    ``shard_halos``: draw the masses with the halos split across every JAX device (None: as
    the run was fitted, its ``halo_devices``; the same draws, see
    :class:`~bigmali.halo_masses.ConditionalMassSampler`).

    Returns ``(HaloMassPosterior, MassMaps or None, kept ln M realisations (keep, n_halos))``;
    maps need the catalog's ``ra`` and ``dec``. The catalog and prior must be the run's own
    (:func:`~bigmali.datatree.check_run_data`; ``force=True`` only warns).
    """
    from bigmali.datatree import check_run_data
    from bigmali.halo_masses import mass_sampler
    from bigmali.mass_prior import tabulated_ln_mass_range
    from bigmali.utils import progress_bar

    if n_draws < 2:
        raise ValueError(f"n_draws = {n_draws}: need at least 2 realisations for a spread")
    check_run_data(run, catalog, prior, force=force)
    hypers = select_hypers(run, n_draws, seed)
    n = len(catalog)
    low, high = (float(v) for v in tabulated_ln_mass_range(prior))
    n_bins = int(math.ceil((high - low) / (0.01 * LN10)))
    edges = low + 0.01 * LN10 * np.arange(n_bins + 1)
    counts = np.zeros((n, n_bins), dtype=np.uint16 if n_draws < 65535 else np.uint32)
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    has_sky = catalog.ra is not None and catalog.dec is not None
    maps = None
    if has_sky:
        grid = grid or PixelGrid.covering(catalog.ra, catalog.dec, n_pixels)
        z_edges = check_z_edges(z_edges if z_edges is not None else [0.0, np.inf])
        pix = grid.pixel_index(catalog.ra, catalog.dec)
        zbin = np.searchsorted(z_edges, catalog.z, side="right") - 1
        ok = (pix >= 0) & (zbin >= 0) & (zbin < len(z_edges) - 1)
        flat = np.where(ok, zbin * grid.n_pixels**2 + pix, 0)
        n_cells = (len(z_edges) - 1) * grid.n_pixels**2
        map_sum = np.zeros(n_cells)
        map_sq = np.zeros(n_cells)
        kept_maps = []
    kept = []
    key = jax.random.PRNGKey(seed + 2718281)
    rows = np.arange(n)
    split = run.attrs.get("halo_devices", 1) > 1 if shard_halos is None else shard_halos
    sampler = mass_sampler(prior, catalog.z, catalog.lum_obs, hypers, catalog.lum_obs_err, split)

    with progress_bar(n_draws, progress, "halo mass realisations") as bar:
        for d, hyper in enumerate(hypers):
            ln_m = np.asarray(sampler(jax.random.fold_in(key, d), hyper))
            b = np.clip(((ln_m - low) / (0.01 * LN10)).astype(np.int64), 0, n_bins - 1)
            counts[rows, b] += 1
            s1 += ln_m
            s2 += ln_m * ln_m
            if len(kept) < keep:
                kept.append(ln_m.astype(np.float32))
            if has_sky:
                cell = np.bincount(flat[ok], weights=np.exp(ln_m[ok]), minlength=n_cells)
                map_sum += cell
                map_sq += cell * cell
                if len(kept_maps) < keep:
                    kept_maps.append(cell.astype(np.float32))
            bar.update()
    mean_ln = s1 / n_draws
    sd_ln = np.sqrt(np.maximum(s2 / n_draws - mean_ln**2, 0.0) * n_draws / (n_draws - 1))
    pct = {q: _quantile_from_histogram(counts, edges, q) / LN10 for q in PERCENTILES}
    posterior = _halo_posterior(mean_ln / LN10, pct, mean_ln, sd_ln)
    if has_sky:
        shape = (len(z_edges) - 1, grid.n_pixels, grid.n_pixels)
        mean_map = map_sum / n_draws
        std_map = np.sqrt(np.maximum(map_sq / n_draws - mean_map**2, 0.0) * n_draws / (n_draws - 1))
        truth = None
        if catalog.mass is not None:
            truth = np.bincount(flat[ok], weights=np.asarray(catalog.mass)[ok], minlength=n_cells).reshape(shape)
        maps = MassMaps(
            grid,
            z_edges,
            mean_map.reshape(shape),
            std_map.reshape(shape),
            np.asarray(kept_maps).reshape((-1,) + shape),
            truth,
        )
    return posterior, maps, np.asarray(kept)


def accuracy(posterior: HaloMassPosterior, maps: MassMaps | None, catalog: Catalog, prior: MassPrior, run) -> dict:
    """Coverage and errors against the true masses of a mock (empty without them)."""
    if catalog.mass is None:
        return {}
    truth = np.log10(np.asarray(catalog.mass, dtype=np.float64))
    out = {
        "coverage_68": float(np.mean((truth >= posterior.p16) & (truth <= posterior.p84))),
        "coverage_95": float(np.mean((truth >= posterior.p2_5) & (truth <= posterior.p97_5))),
        "rmse_log10M": float(np.sqrt(np.mean((posterior.mean - truth) ** 2))),
    }
    # Two baselines: the prior's mean log10 M at each halo's redshift (no luminosity), and
    # the relation inverted at the posterior-mean hyperparameters (no prior).
    draws, w = draws_and_weights(run)  # weighted runs carry their weights
    mean_hyper = Hyper(*(float(np.sum(w * draws[name])) for name in HYPER_NAMES))
    naive = ln_mass_pointed(np.log(catalog.lum_obs), np.log1p(catalog.z), mean_hyper) / LN10
    out["rmse_log10M_naive"] = float(np.sqrt(np.mean((naive - truth) ** 2)))
    out["rmse_log10M_prior_only"] = float(np.sqrt(np.mean((_prior_mean_log10(prior, catalog.z) - truth) ** 2)))
    out["lognormal_max_error_dex_median"] = float(np.median(posterior.lognormal_error))
    out["lognormal_max_error_dex_p95"] = float(np.percentile(posterior.lognormal_error, 95))
    if maps is not None and maps.truth is not None:
        t, m = maps.truth.ravel(), maps.mean.ravel()
        occupied = t > 0
        out["pixel_corr"] = float(np.corrcoef(m[occupied], t[occupied])[0, 1]) if occupied.sum() > 2 else float("nan")
        lo = np.percentile(maps.realisations_kept.reshape(maps.realisations_kept.shape[0], -1), 16, axis=0)
        hi = np.percentile(maps.realisations_kept.reshape(maps.realisations_kept.shape[0], -1), 84, axis=0)
        out["pixel_coverage_68"] = float(np.mean((t[occupied] >= lo[occupied]) & (t[occupied] <= hi[occupied])))
    return out


def _prior_mean_log10(prior: MassPrior, z) -> np.ndarray:
    """E[log10 M | z] under the prior alone, per halo: each table's mean, mixed as the halo's
    density mixes its tables (the density is linear in M between knots; the tabulated
    range, 20,000 points in ln M)."""
    import jax.numpy as jnp

    from bigmali.mass_prior import table_rows, tabulated_ln_mass_range

    low, high = (float(v) for v in tabulated_ln_mass_range(prior))
    x = np.linspace(low, high, 20_000)
    mass = np.asarray(prior.mass)
    per_table = np.empty(np.asarray(prior.density).shape[0])
    for b, row in enumerate(np.asarray(prior.density)):
        p = np.interp(np.exp(x), mass, row) * np.exp(x)  # per unit ln M
        per_table[b] = np.sum(p * x) / np.sum(p) / LN10
    lo, hi, w = (np.asarray(v) for v in table_rows(prior, jnp.asarray(z, dtype=jnp.float64)))
    return (1.0 - w) * per_table[lo] + w * per_table[hi]


def write_massmap(
    out_dir, posterior: HaloMassPosterior, maps: MassMaps | None, kept: np.ndarray, catalog: Catalog, summary: dict
) -> Path:
    """FITS images with WCS and PNGs of the maps, the per-halo table and ``summary.json``."""
    from astropy.io import fits
    from astropy.table import Table

    from bigmali.files import atomic_path, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = Table(
        {
            "log10_mass_mean": posterior.mean,
            "log10_mass_median": posterior.median,
            "log10_mass_p16": posterior.p16,
            "log10_mass_p84": posterior.p84,
            "log10_mass_p2_5": posterior.p2_5,
            "log10_mass_p97_5": posterior.p97_5,
            "ln_mass_lognormal_mu": posterior.lognormal_mu,
            "ln_mass_lognormal_sigma": posterior.lognormal_sigma,
            "ln_mass_realisations": kept.T.astype(np.float32),
        }
    )
    for name in ("z", "lum_obs", "ra", "dec", "mass"):
        values = getattr(catalog, name)
        if values is not None:
            table[name if name != "mass" else "mass_true"] = values
    table.meta["COMMENT"] = (
        "bigmali per-halo mass posteriors; ln_mass_realisations are joint draws (one column per draw)"
    )
    with atomic_path(out / "halo_masses.fits") as tmp:
        table.write(tmp, format="fits", overwrite=True)
    if maps is not None:
        header = maps.grid.wcs().to_header()
        for name, image in (("mean", maps.mean), ("std", maps.std), ("snr", maps.snr), ("truth", maps.truth)):
            if image is None:
                continue
            hdus = [fits.PrimaryHDU()]
            for k in range(image.shape[0]):
                h = header.copy()
                h["BUNIT"] = "Msun" if name != "snr" else ""
                h["ZLO"], h["ZHI"] = float(maps.z_edges[k]), float(min(maps.z_edges[k + 1], 1e30))
                hdus.append(fits.ImageHDU(image[k].astype(np.float32), header=h, name=f"ZBIN{k}"))
            with atomic_path(out / f"massmap_{name}.fits") as tmp:
                fits.HDUList(hdus).writeto(tmp, overwrite=True)
        _plot_maps(maps, out / "massmap.png")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return out


def _plot_maps(maps: MassMaps, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigmali.plotting import save_figure

    panels = [("posterior mean", maps.mean), ("posterior std", maps.std), ("signal / noise", maps.snr)]
    if maps.truth is not None:
        panels.append(("true mass", maps.truth))
    nz = maps.mean.shape[0]
    fig, axes = plt.subplots(
        nz,
        len(panels),
        figsize=(4.2 * len(panels), 3.8 * nz),
        squeeze=False,
        subplot_kw={"projection": maps.grid.wcs()},
    )
    from matplotlib.colors import LogNorm

    # Mass maps span decades (a few clusters dominate): a log scale shared by the mean and
    # the truth, from the 5th percentile of the occupied pixels.
    positive = maps.mean[maps.mean > 0]
    mass_norm = (
        LogNorm(vmin=max(float(np.percentile(positive, 5)), 1.0), vmax=float(positive.max())) if positive.size else None
    )
    for k in range(nz):
        for j, (title, image) in enumerate(panels):
            ax = axes[k, j]
            if title in ("posterior mean", "true mass"):
                im = ax.imshow(np.where(image[k] > 0, image[k], np.nan), origin="lower", cmap="magma", norm=mass_norm)
            else:
                im = ax.imshow(image[k], origin="lower", cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046, label="Msun" if title != "signal / noise" else "")
            zhi = maps.z_edges[k + 1]
            ax.set_title(f"{title}" + (f", {maps.z_edges[k]:g} <= z < {zhi:g}" if nz > 1 else ""), fontsize=9)
            ax.coords[0].set_axislabel("RA")
            ax.coords[1].set_axislabel("Dec")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def massmap(
    run,
    catalog: Catalog,
    prior: MassPrior,
    out_dir,
    *,
    n_draws: int = 1000,
    n_pixels: int = 64,
    z_edges=None,
    grid: PixelGrid | None = None,
    keep: int = 100,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """The whole pipeline: posteriors, maps, accuracy (for mocks), files. Returns the summary.

    The grid covers the catalog unless ``grid`` (e.g. :meth:`PixelGrid.field`) is given;
    halos off the grid are left out of the maps only.
    """
    start = time.perf_counter()
    posterior, maps, kept = mass_posterior(
        run,
        catalog,
        prior,
        n_draws=n_draws,
        grid=grid,
        n_pixels=n_pixels,
        z_edges=z_edges,
        keep=keep,
        seed=seed,
        progress=progress,
        force=force,
    )
    summary = {
        "n_halos": len(catalog),
        "n_draws": n_draws,
        "pixels": n_pixels if grid is None else grid.n_pixels,
        "z_edges": None if maps is None else [float(v) for v in maps.z_edges],
    }
    summary.update(accuracy(posterior, maps, catalog, prior, run))
    summary["seconds"] = time.perf_counter() - start
    write_massmap(out_dir, posterior, maps, kept, catalog, summary)
    return summary
