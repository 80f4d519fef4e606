"""Posterior predictive checks of the observed-luminosity distribution, per redshift bin.

For S posterior draws theta_s, a replicated catalog keeps every halo's redshift and draws
``ln M ~ P(M | z)`` (the mass prior), ``ln L_obs ~ N(ln mu_L(M, z), S^2 + sigma_obs^2)``, each
replicated halo at the redshift, and with the measurement error, of the catalog's halo. A run
fitted with a flux limit replicates with the same selection: each replicated halo is drawn,
then cut, and drawn again until it is above its limit, so the replicates follow the truncated
predictive ``P(L_obs | z, theta, detected)`` that the fit describes.

Discrepancy. Per redshift bin b (the halos that use one of the mass prior's redshift
tables), ``T_b`` is the Anderson-Darling distance of the bin's ln L_obs from the posterior
predictive distribution, estimated by the pooled replicates (``statistic="ad"``, the
default; it weights the tails, where a wrong mass function shows first), or a chi-square
distance of histograms in equiprobable intervals (``statistic="chi2"``). The posterior
predictive p-value is ``p_b = P(T_b(y_rep) >= T_b(y))`` over the replicates, each replicate
judged against the others; the catalog-wide p-value uses ``T = sum_b T_b``. A model that
describes the catalog gives p-values that are not small (posterior predictive p-values
concentrate towards 0.5 rather than being uniform); a luminosity distribution the model
cannot reproduce at any hyperparameters drives p towards 0.

What it cannot see: a mass function whose difference the relation absorbs. On 10^5 halos,
Press-Schechter masses fitted with the Tinker10 prior move alpha1 and alpha2 by ~7 sd and
leave every bin's luminosity histogram reproduced (p = 0.145); masses from the z = 0 table
at every redshift are flagged (p < 0.005) (``benchmarks/misspecification.py``).

Where in L_obs. :func:`by_luminosity` bins the catalog's ln L_obs at its own quantiles and,
bin by bin, compares the observed count with the replicated counts: the quantile residual
``Phi^-1(mid-p rank of the observed count among the replicates)`` (bounded by the number of
replicates: +-2.8 for 200) and the standardised residual ``(n_obs - mean n_rep) / sd n_rep``.
A model that describes the catalog leaves both within about +-2 everywhere; a wrong mass
function shows as a run of residuals of one sign at the faint or bright end.
:func:`plot_by_luminosity` draws them.

Weighted runs (the importance-sampling methods) use draws resampled by weight.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigmali.mass_prior import MassPrior, sample_ln_mass
from bigmali.relation import HYPER_NAMES, Hyper, ln_mu_L, sigma_obs_of, sigma_total

__all__ = [
    "Ppc",
    "replicate_ln_lum_obs",
    "posterior_predictive_check",
    "ppc_datatree",
    "plot_ppc",
    "by_luminosity",
    "plot_by_luminosity",
]

MIN_PER_INTERVAL = 25  # halos per luminosity interval (J = n_b // 25, between 2 and 20)


class Ppc(NamedTuple):
    """A posterior predictive check of one catalog."""

    p_value: float
    p_value_by_bin: list  # one per redshift bin that holds halos
    z_bins: np.ndarray  # (B, 2) each bin's lower and upper redshift
    n_halos_by_bin: list
    t_obs: np.ndarray  # (B,) T_b of the catalog
    t_rep: np.ndarray  # (S, B) T_b of each replicate
    ln_lum_obs: np.ndarray  # (n,) the catalog
    replicates: np.ndarray  # (S, n) float32 replicated ln L_obs
    bin_of_halo: np.ndarray  # (n,) index into the bins above

    def as_dict(self) -> dict:
        return {
            "ppc_p_value": self.p_value,
            "ppc_p_value_by_bin": self.p_value_by_bin,
            "ppc_z_bins": self.z_bins.tolist(),
            "ppc_n_halos_by_bin": self.n_halos_by_bin,
            "ppc_replicates": int(self.replicates.shape[0]),
            "ppc_by_luminosity": by_luminosity(self),
        }


@jax.jit
def _replicate_block(keys, hyper: Hyper, z, sigma_obs, prior: MassPrior):
    def one(key, h):
        key_m, key_l = jax.random.split(key)
        ln_mass = sample_ln_mass(prior, key_m, z)
        return ln_mu_L(ln_mass, z, h) + sigma_total(h.S, sigma_obs) * jax.random.normal(key_l, z.shape)

    return jax.vmap(one)(keys, hyper)


def replicate_ln_lum_obs(
    hypers: list[Hyper],
    z,
    prior: MassPrior,
    seed: int = 0,
    block: int = 8,
    lum_obs_err=None,
    ln_lim=None,
    shard_halos: bool = False,
) -> np.ndarray:
    """One replicated catalog's ln L_obs per hyperparameter draw: (len(hypers), len(z)), float32.
    Each replicated halo keeps the redshift and the measurement error (``lum_obs_err``, or
    ``sigma_obs`` for all) of the catalog's halo. With ``ln_lim`` (each halo's ln L_lim, a
    flux-limited catalog) each replicated halo is drawn from the truncated predictive at its
    redshift: replicated, then cut, until it is detected (:func:`bigmali.lightcone.draw_detected`).
    ``shard_halos``: the halos split across every JAX device
    (:func:`bigmali.likelihood.sharding.split_halo_arrays`; the same replicates; not for a
    flux-limited catalog, whose redraws run on one device)."""
    from bigmali.utils import map_blocks

    z = jnp.asarray(z, dtype=jnp.float64)
    sigma_obs = sigma_obs_of(lum_obs_err, z.shape)
    if ln_lim is not None:
        from bigmali.lightcone import draw_detected

        root = jax.random.PRNGKey(seed)
        return np.stack(
            [
                draw_detected(prior, h, jax.random.fold_in(root, i), z, sigma_obs, ln_lim)[2].astype(np.float32)
                for i, h in enumerate(hypers)
            ]
        )
    n = z.shape[0]
    if shard_halos:
        from bigmali.likelihood.sharding import split_halo_arrays

        z, sigma_obs = split_halo_arrays([z, sigma_obs])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(len(hypers)))
    batch = (keys, Hyper(*(jnp.asarray([getattr(h, name) for h in hypers], dtype=jnp.float64) for name in HYPER_NAMES)))
    return map_blocks(
        lambda b: _replicate_block(b[0], b[1], z, sigma_obs, prior)[:, :n].astype(jnp.float32), batch, block
    )


def _redshift_bins(prior: MassPrior, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prior's redshift tables as bins: (z_{i-1}, z_i] holds the halos that use table i
    in "bins" mode (and those between tables i-1 and i in "linear" mode); empty bins are
    left out. Returns each bin's (lower, upper) redshift and each halo's bin."""
    edges = np.asarray(prior.z_grid, dtype=np.float64).copy()
    edges[0], edges[-1] = min(edges[0], z.min()), max(edges[-1], z.max())
    idx = np.clip(np.searchsorted(edges, z, side="left") - 1, 0, edges.size - 2)
    used = np.unique(idx)
    return np.stack([edges[used], edges[used + 1]], axis=1), np.searchsorted(used, idx)


def _chi2(pooled_sorted: np.ndarray, y: np.ndarray, reps: np.ndarray) -> tuple[float, np.ndarray]:
    """Chi-square distance of the histograms of ``y`` and of each replicate (rows of ``reps``)
    from the replicates' mean histogram, in J equiprobable intervals of the pooled replicates."""
    n = y.size
    n_int = int(np.clip(n // MIN_PER_INTERVAL, 2, 20))
    cuts = pooled_sorted[np.minimum((np.arange(1, n_int) * pooled_sorted.size) // n_int, pooled_sorted.size - 1)]
    j = np.searchsorted(cuts, reps, side="right")
    counts = np.stack([np.bincount(row, minlength=n_int) for row in j])
    expected = np.maximum(counts.mean(axis=0), 1e-9)
    t_rep = np.sum((counts - expected) ** 2 / expected, axis=1)
    obs = np.bincount(np.searchsorted(cuts, y, side="right"), minlength=n_int)
    return float(np.sum((obs - expected) ** 2 / expected)), t_rep


def _anderson_darling(pooled_sorted: np.ndarray, y: np.ndarray, reps: np.ndarray) -> tuple[float, np.ndarray]:
    """Anderson-Darling distance of ``y`` and of each replicate from the posterior predictive
    CDF, estimated by the pooled replicates (for a replicate, the pooled replicates without
    itself, so that catalog and replicates are judged alike). Its tail weighting sees a
    bright or faint tail that the relation cannot reproduce."""
    n, total = y.size, pooled_sorted.size
    weights = 2.0 * np.arange(1, n + 1) - 1.0

    def stat(cdf_sorted):
        cdf_sorted = np.clip(cdf_sorted, 0.5 / (total + 1), 1.0 - 0.5 / (total + 1))
        return -n - np.sum(weights * (np.log(cdf_sorted) + np.log1p(-cdf_sorted[..., ::-1])), axis=-1) / n

    t_obs = stat((np.searchsorted(pooled_sorted, np.sort(y)) + 0.5) / (total + 1))
    reps_sorted = np.sort(reps, axis=1)
    below = np.searchsorted(pooled_sorted, reps_sorted.ravel()).reshape(reps_sorted.shape) - np.arange(n)
    return float(t_obs), stat((below + 0.5) / (total - n + 1))


STATISTICS = {"ad": _anderson_darling, "chi2": _chi2}


def posterior_predictive_check(
    run,
    catalog=None,
    prior: MassPrior | None = None,
    *,
    n_draws: int = 200,
    seed: int = 0,
    statistic: str = "ad",
    shard_halos: bool | None = None,
) -> Ppc:
    """The PPC of a run (its own catalog and mass prior unless given).

    ``statistic`` is ``"ad"`` (Anderson-Darling, the default) or ``"chi2"`` (histogram).
    ``shard_halos``: replicate with the halos split across every JAX device (None: as the
    run was fitted, its ``halo_devices``; see :func:`replicate_ln_lum_obs`).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: choose one of {', '.join(STATISTICS)}")
    from bigmali.datatree import run_catalog, run_flux_limit, run_prior, select_hypers

    catalog = run_catalog(run) if catalog is None else catalog
    limit = run_flux_limit(run)
    prior = run_prior(run, prior)
    if n_draws < 20:
        raise ValueError(f"n_draws = {n_draws}: a posterior predictive p-value needs at least 20 replicates")
    z = np.asarray(catalog.z, dtype=np.float64)
    y = np.log(np.asarray(catalog.lum_obs, dtype=np.float64))
    reps = replicate_ln_lum_obs(
        select_hypers(run, n_draws, seed),
        z,
        prior,
        seed=seed + 7,
        lum_obs_err=catalog.lum_obs_err,
        ln_lim=None if limit is None else limit.ln_limit(catalog),
        shard_halos=run.attrs.get("halo_devices", 1) > 1 if shard_halos is None else shard_halos,
    )
    z_bins, bin_of = _redshift_bins(prior, z)
    n_bins = len(z_bins)
    t_obs = np.empty(n_bins)
    t_rep = np.empty((n_draws, n_bins))
    counts = []
    for b in range(n_bins):
        members = np.flatnonzero(bin_of == b)
        counts.append(int(members.size))
        pooled = reps[:, members].astype(np.float64)
        t_obs[b], t_rep[:, b] = STATISTICS[statistic](np.sort(pooled.ravel()), y[members], pooled)
    p_by_bin = [float(np.mean(t_rep[:, b] >= t_obs[b])) for b in range(n_bins)]
    p = float(np.mean(t_rep.sum(axis=1) >= t_obs.sum()))
    return Ppc(p, p_by_bin, z_bins, counts, t_obs, t_rep, y, reps, bin_of)


def ppc_datatree(ppc: Ppc, n_draws: int = 50, max_bins: int = 8):
    """Observed and replicated ln L_obs as an ArviZ DataTree, one variable per redshift bin
    (at most ``max_bins`` bins, evenly chosen), for ``arviz_plots.plot_ppc_dist``."""
    import xarray as xr

    n_bins = len(ppc.z_bins)
    chosen = np.unique(np.linspace(0, n_bins - 1, min(max_bins, n_bins)).round().astype(int))
    pp, obs = {}, {}
    for b in chosen:
        members = np.flatnonzero(ppc.bin_of_halo == b)
        name = f"lnL_obs z{ppc.z_bins[b, 0]:.2f}-{ppc.z_bins[b, 1]:.2f} (p={ppc.p_value_by_bin[b]:.2f})"
        dim = f"halo_{b}"
        pp[name] = xr.DataArray(ppc.replicates[None, :n_draws, members].astype(np.float64), dims=("chain", "draw", dim))
        obs[name] = xr.DataArray(ppc.ln_lum_obs[members], dims=(dim,))
    return xr.DataTree.from_dict({"posterior_predictive": xr.Dataset(pp), "observed_data": xr.Dataset(obs)})


def plot_ppc(ppc: Ppc, path, n_draws: int = 50, max_bins: int = 8):
    """ArviZ's PPC plot of ln L_obs in up to ``max_bins`` redshift bins, with each bin's p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots as azp

    from bigmali.plotting import figure_of, save_figure

    n_draws = min(n_draws, ppc.replicates.shape[0])
    dt = ppc_datatree(ppc, n_draws, max_bins)
    pc = azp.plot_ppc_dist(
        dt,
        kind="kde",
        num_samples=n_draws,
        backend="matplotlib",
        col_wrap=4,
        figure_kwargs={"figsize": (15, 3.2 * int(np.ceil(len(dt["observed_data"].data_vars) / 4)))},
    )
    fig = figure_of(pc)
    fig.suptitle(
        f"Posterior predictive ln L_obs per redshift bin: catalog (dark) and {n_draws} replicates; "
        f"catalog-wide p = {ppc.p_value:.3f}",
        y=1.02,
    )
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def by_luminosity(ppc: Ppc, n_bins: int = 20) -> dict:
    """Observed against replicated halo counts in ``n_bins`` bins of ln L_obs (the catalog's
    own quantiles; the outer bins are open-ended), as lists ready for JSON.

    Returns ``{"edges", "n_obs", "n_rep_mean", "n_rep_sd", "quantile_residual",
    "standardised_residual", "max_abs_standardised"}``; ``edges`` has ``n_bins + 1`` values of ln
    L_obs, the first and last the catalog's extremes.
    """
    y, reps = ppc.ln_lum_obs, ppc.replicates
    edges = np.quantile(y, np.linspace(0.0, 1.0, n_bins + 1))
    inner = edges[1:-1]
    n_obs = np.bincount(np.searchsorted(inner, y, side="right"), minlength=n_bins)
    n_rep = np.stack([np.bincount(np.searchsorted(inner, r, side="right"), minlength=n_bins) for r in reps])
    mean, sd = n_rep.mean(axis=0), n_rep.std(axis=0, ddof=1)
    below = (n_rep < n_obs).sum(axis=0) + 0.5 * (n_rep == n_obs).sum(axis=0)
    from scipy.special import ndtri

    quantile = ndtri((below + 0.5) / (reps.shape[0] + 1))
    z = (n_obs - mean) / np.where(sd > 0, sd, np.nan)
    return {
        "edges": edges.tolist(),
        "n_obs": n_obs.tolist(),
        "n_rep_mean": mean.tolist(),
        "n_rep_sd": sd.tolist(),
        "quantile_residual": quantile.tolist(),
        "standardised_residual": z.tolist(),
        "max_abs_standardised": float(np.nanmax(np.abs(z))),
    }


def plot_by_luminosity(ppc: Ppc, path, n_bins: int = 20):
    """Quantile and standardised residuals of the halo counts per bin of ln L_obs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigmali.plotting import save_figure

    res = by_luminosity(ppc, n_bins)
    edges = np.asarray(res["edges"])
    centre = 0.5 * (edges[1:] + edges[:-1])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    top.plot(centre, res["quantile_residual"], "o", color="C0")
    bound = float(ndtri_bound(ppc.replicates.shape[0]))
    bounded = f"quantile residual\n(|q| <= {bound:.1f}: {ppc.replicates.shape[0]} replicates)"
    for ax, values, label in (
        (top, None, bounded),
        (bottom, res["standardised_residual"], "standardised residual\n(n_obs - mean n_rep) / sd n_rep"),
    ):
        if values is not None:
            ax.bar(centre, values, width=np.diff(edges) * 0.9, color="C1")
        ax.axhline(0.0, color="k", lw=0.8)
        for level in (-2.0, 2.0):
            ax.axhline(level, color="0.5", ls="--", lw=0.8)
        ax.set_ylabel(label, fontsize=8)
    bottom.set_xlabel("ln L_obs (bins at the catalog's quantiles)")
    top.set_title(
        f"Posterior predictive check by luminosity: catalog-wide p = {ppc.p_value:.3f},\n"
        f"largest |standardised residual| = {res['max_abs_standardised']:.1f}",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=100)


def ndtri_bound(n_replicates: int) -> float:
    """The largest quantile residual ``n_replicates`` replicates can give."""
    from scipy.special import ndtri

    return float(ndtri((n_replicates + 0.5) / (n_replicates + 1)))
