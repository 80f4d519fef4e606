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

__all__ = ["loo_elpd", "halo_loo", "format_loo"]

K_BAD = 0.7


def loo_elpd(run):
    """ArviZ's PSIS-LOO (pointwise) over the run's halos."""
    import arviz_stats as azs

    if "log_likelihood" not in run.children:
        raise ValueError("the run has no log_likelihood group (fitted with log_likelihood=0, or a weighted method): "
                         "no LOO over halos")
    return azs.loo(run, pointwise=True, var_name="lum_obs")


def halo_loo(run, n_worst: int = 10, elpd=None) -> dict:
    """PSIS-LOO over halos; the ``n_worst`` halos with the lowest ``elpd_i``, with their data."""
    result = loo_elpd(run) if elpd is None else elpd
    elpd_i = np.asarray(result.elpd_i, dtype=np.float64).ravel()
    k = np.asarray(result.pareto_k, dtype=np.float64).ravel()
    z = np.asarray(run["constant_data"]["z"])
    lum = np.asarray(run["observed_data"]["lum_obs"])
    worst = np.argsort(elpd_i)[:n_worst]
    return {
        "elpd_loo": float(result.elpd), "se": float(result.se), "p_loo": float(result.p),
        "n_halos": int(elpd_i.size), "n_draws": int(result.n_samples),
        "n_pareto_k_above_0.7": int(np.sum(k > K_BAD)), "max_pareto_k": float(np.max(k)),
        "worst": [{"halo": int(i), "z": float(z[i]), "lum_obs": float(lum[i]), "elpd_i": float(elpd_i[i]),
                   "pareto_k": float(k[i])} for i in worst],
        "elpd_i_median": float(np.median(elpd_i)),
    }


def format_loo(result: dict) -> str:
    lines = [f"PSIS-LOO over {result['n_halos']} halos ({result['n_draws']} draws): elpd_loo {result['elpd_loo']:.1f} "
             f"+- {result['se']:.1f}, p_loo {result['p_loo']:.2f}, {result['n_pareto_k_above_0.7']} halos with k-hat > 0.7 "
             f"(largest {result['max_pareto_k']:.2f}); median elpd_i {result['elpd_i_median']:.2f}",
             f"{'halo':>8}{'z':>8}{'lum_obs':>12}{'elpd_i':>10}{'k-hat':>8}"]
    for w in result["worst"]:
        lines.append(f"{w['halo']:>8}{w['z']:>8.3f}{w['lum_obs']:>12.4g}{w['elpd_i']:>10.2f}{w['pareto_k']:>8.2f}")
    return "\n".join(lines)
