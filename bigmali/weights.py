"""Diagnostics of importance weights: Pareto k-hat (ArviZ's PSIS), weight ESS, largest share.

A weighted posterior is only as good as its weights. The effective sample size
``(sum w)^2 / sum w^2`` says how many equally weighted draws they are worth; the share of
the largest weight says whether one draw decides everything (the 2017 Failure Mode 2);
Pareto k-hat, from ArviZ's Pareto-smoothed importance sampling, says whether the weights'
tail is too heavy for any estimate to be trusted (k > 0.7: not reliable).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import logsumexp

__all__ = ["psis", "weight_diagnostics", "K_HAT_THRESHOLD", "normalise_log_weights", "normalised_weights", "weight_ess"]

K_HAT_THRESHOLD = 0.7
"""Above this Pareto k-hat, importance-sampling estimates are unreliable (Vehtari et al. 2024)."""


MIN_PSIS_DRAWS = 25
"""Below this many non-zero weights ArviZ cannot fit a Pareto tail (it needs a tail of 5 = 20%): k-hat
is NaN and the weights stay raw."""


def normalise_log_weights(log_w) -> np.ndarray:
    """Log weights shifted so that the weights sum to one (non-finite entries weigh nothing)."""
    log_w = np.where(np.isfinite(log_w), np.asarray(log_w, dtype=np.float64), -np.inf)
    return log_w - logsumexp(log_w)


def normalised_weights(log_w) -> np.ndarray:
    """The weights themselves, summing to one."""
    return np.exp(normalise_log_weights(log_w))


def weight_ess(log_w) -> float:
    """Kish's effective sample size of importance weights, ``(sum w)^2 / sum w^2``."""
    return float(np.exp(-logsumexp(2.0 * normalise_log_weights(np.ravel(log_w)))))


def psis(log_w) -> tuple[np.ndarray, float]:
    """ArviZ's Pareto smoothing of raw log weights (any shape, all entries one sample).

    Returns the smoothed, normalised log weights in the input's shape and k-hat.
    """
    import arviz_stats  # noqa: F401  (registers the .azstats accessor)

    log_w = normalise_log_weights(log_w)  # ArviZ exponentiates: bring the largest to ~0 first
    finite = np.isfinite(log_w)
    out = np.full(log_w.shape, -np.inf)
    if not finite.any() or np.ptp(log_w[finite]) == 0.0:  # equal weights (or none): nothing to smooth
        out[finite] = 0.0
        return normalise_log_weights(out), float("-inf")
    if finite.sum() < MIN_PSIS_DRAWS:  # too few weights to fit a tail to: no smoothing, no k-hat
        return normalise_log_weights(log_w), float("nan")
    # ArviZ's psislw takes what LOO passes it, the log-likelihood: it smooths exp(-input).
    da = xr.DataArray(-log_w[finite].reshape(1, -1), dims=("chain", "draw"))
    smoothed, k_hat = da.azstats.psislw(dim=["chain", "draw"])
    out[finite] = np.asarray(smoothed).ravel()  # weights of zero stay zero
    k_hat = float(k_hat)
    if not np.isfinite(k_hat):
        # The generalized Pareto fit fails when all but a few of the tail's weights are
        # below 1e-308 of the largest (the 2017 case: log-likelihoods 10^4 apart). No tail
        # could be heavier: k-hat is infinite, and the raw weights are returned unsmoothed.
        return normalise_log_weights(log_w), float("inf")
    return normalise_log_weights(out), k_hat


def weight_diagnostics(log_w) -> dict:
    """``{"ess", "pareto_k", "max_share"}`` of raw (unsmoothed) log weights."""
    norm = normalise_log_weights(np.ravel(log_w))
    _, k_hat = psis(np.ravel(log_w))
    return {"ess": weight_ess(norm), "pareto_k": k_hat, "max_share": float(np.exp(norm.max()))}


def weighted_mean_sd(values, w) -> tuple[float, float]:
    """Mean and sd of ``values`` under normalised weights ``w``."""
    mean = float(np.sum(w * values))
    return mean, float(np.sqrt(np.sum(w * (values - mean) ** 2)))
