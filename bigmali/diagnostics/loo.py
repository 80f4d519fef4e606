"""Leave-one-halo-out cross-validation (PSIS-LOO, ArviZ) to find outlying halos.

A run's ``log_likelihood`` group holds every halo's collapsed ``ln P(L_obs | alpha)`` per
posterior draw (the mass integrated out), which is what leaving a halo out means for every
model. ``arviz_stats.loo`` gives the expected log predictive density of each halo under
the posterior fitted without it (``elpd_i``) and its Pareto k-hat: a halo with a very low
``elpd_i`` is one the model finds surprising (a luminosity far from any mass at its
redshift); k-hat > 0.7 marks a halo that alone moves the posterior.
"""

from __future__ import annotations

import numpy as np

from bigmali.weights import K_HAT_THRESHOLD as K_BAD

__all__ = ["loo_elpd", "halo_loo", "format_loo"]


EXACT_MAX_HALOS = 20_000  # beyond this, ArviZ's per-observation PSIS loop takes > 10 s
SUBSAMPLE = 4_000
CANDIDATES = 500


def _check(run) -> None:
    if "log_likelihood" not in run.children:
        raise ValueError(
            "the run has no log_likelihood group (fitted with log_likelihood=0, or a weighted method): "
            "no LOO over halos"
        )


def loo_elpd(run, seed: int = 315):
    """ArviZ's PSIS-LOO over the run's halos: exact (``arviz_stats.loo``) up to
    ``EXACT_MAX_HALOS`` halos, else ``arviz_stats.loo_subsample`` (the difference estimator
    on ``SUBSAMPLE`` random halos, the rest approximated by their lpd; its SE includes the
    subsampling error)."""
    import arviz_stats as azs

    _check(run)
    n = run["log_likelihood"]["lum_obs"].sizes["halo"]
    if n <= EXACT_MAX_HALOS:
        return azs.loo(run, pointwise=True, var_name="lum_obs")
    return azs.loo_subsample(run, observations=SUBSAMPLE, var_name="lum_obs", pointwise=True, seed=seed)


def _exact_on(run, halos: np.ndarray):
    """Exact PSIS-LOO on some halos only (a run restricted to them)."""
    import arviz_stats as azs
    import xarray as xr

    sub = run.copy()
    sub["log_likelihood"] = xr.DataTree(run["log_likelihood"].to_dataset().isel(halo=halos))
    return azs.loo(sub, pointwise=True, var_name="lum_obs")


def halo_loo(run, n_worst: int = 10, elpd=None) -> dict:
    """PSIS-LOO over halos; the ``n_worst`` halos with the lowest ``elpd_i``, with their data.

    On large catalogs (see :func:`loo_elpd`) the total is the subsampling estimate, and the
    worst halos are found by exact PSIS-LOO on the ``CANDIDATES`` halos of lowest lpd_i
    (elpd_i <= lpd_i, and a halo the model cannot explain has a low lpd_i): their elpd_i and
    k-hat are exact. ``"exact_halos"`` says how many halos had exact PSIS.
    """
    from scipy.special import logsumexp

    result = loo_elpd(run) if elpd is None else elpd
    ll = run["log_likelihood"]["lum_obs"].transpose("halo", ...)
    n = ll.sizes["halo"]
    z = np.asarray(run["constant_data"]["z"])
    lum = np.asarray(run["observed_data"]["lum_obs"])
    k_all = np.asarray(result.pareto_k, dtype=np.float64).ravel()
    if n <= EXACT_MAX_HALOS:
        elpd_i, k, halos = np.asarray(result.elpd_i, dtype=np.float64).ravel(), k_all, np.arange(n)
        median = float(np.median(elpd_i))
    else:
        values = np.asarray(ll).reshape(n, -1)
        lpd = logsumexp(values, axis=1) - np.log(values.shape[1])
        halos = np.sort(np.argsort(lpd)[:CANDIDATES])
        exact = _exact_on(run, halos)
        elpd_i, k = (
            np.asarray(exact.elpd_i, dtype=np.float64).ravel(),
            np.asarray(exact.pareto_k, dtype=np.float64).ravel(),
        )
        median = float(np.median(np.asarray(result.elpd_i, dtype=np.float64)))  # subsample estimate: exact or lpd
        sampled = np.isfinite(k_all)
        k = np.concatenate([k, k_all[sampled]])  # k-hat of every halo evaluated exactly
        halos_k = np.concatenate([halos, np.flatnonzero(sampled)])
    order = np.argsort(elpd_i)[:n_worst]
    k_unique = k if n <= EXACT_MAX_HALOS else k[np.unique(halos_k, return_index=True)[1]]
    return {
        "elpd_loo": float(result.elpd),
        "se": float(result.se),
        "p_loo": float(result.p),
        "n_halos": int(n),
        "n_draws": int(result.n_samples),
        "method": "exact" if n <= EXACT_MAX_HALOS else "subsample",
        "exact_halos": int(k_unique.size),
        "n_pareto_k_above_0.7": int(np.sum(k_unique > K_BAD)),
        "max_pareto_k": float(np.max(k_unique)),
        "worst": [
            {
                "halo": int(halos[i]),
                "z": float(z[halos[i]]),
                "lum_obs": float(lum[halos[i]]),
                "elpd_i": float(elpd_i[i]),
                "pareto_k": float(k[i]),
            }
            for i in order
        ],
        "elpd_i_median": median,
    }


def format_loo(result: dict) -> str:
    lines = [
        f"PSIS-LOO over {result['n_halos']} halos ({result['n_draws']} draws, {result['method']}): elpd_loo "
        f"{result['elpd_loo']:.1f} +- {result['se']:.1f}, p_loo {result['p_loo']:.2f}; {result['n_pareto_k_above_0.7']} of "
        f"the {result['exact_halos']} halos with exact PSIS have k-hat > 0.7 (largest {result['max_pareto_k']:.2f}); "
        f"median elpd_i {result['elpd_i_median']:.2f}",
        f"{'halo':>8}{'z':>8}{'lum_obs':>12}{'elpd_i':>10}{'k-hat':>8}",
    ]
    for w in result["worst"]:
        lines.append(f"{w['halo']:>8}{w['z']:>8.3f}{w['lum_obs']:>12.4g}{w['elpd_i']:>10.2f}{w['pareto_k']:>8.2f}")
    return "\n".join(lines)
