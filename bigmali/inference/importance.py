"""Importance sampling at the hyper level: the 2017 scheme and a proposal that works.

* :func:`is_prior` — the 2017 scheme: ``K`` hyper-samples from the hyperprior, each
  weighted by its log-likelihood, estimated by importance sampling per halo
  (:mod:`bigmali.likelihood.catalog_is`, fresh random numbers per hyper-sample, as in 2017)
  or computed exactly (the collapsed quadrature), which separates the scheme's own failure
  from the noise and bias of its likelihood.
* :func:`is_proposal` — hyper-samples from the Laplace approximation of the collapsed
  posterior, reweighted by the exact collapsed posterior and Pareto-smoothed (ArviZ).

Both return a :class:`WeightedOutput`; ``bigmali.fit`` turns it into the usual DataTree with
the weights in ``sample_stats`` and their diagnostics in the attrs.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigmali.likelihood.catalog_is import is_log_likelihood
from bigmali.likelihood.quadrature import CollapsedData, QuadratureConfig, log_likelihood_batch
from bigmali.likelihood.single_halo import HaloData
from bigmali.mass_prior import MassPrior
from bigmali.relation import HYPER_NAMES, Hyper, sample_hyperprior
from bigmali.utils import map_blocks, progress_bar
from bigmali.weights import normalise_log_weights, psis, weight_diagnostics

__all__ = ["WeightedOutput", "is_prior", "is_proposal", "weighted_output"]


class WeightedOutput(NamedTuple):
    """Weighted hyper-samples, shaped (1, K) like one chain.

    Attributes:
        samples: ``{name: (1, K)}`` for alpha1, alpha2, alpha4, S.
        log_weight: normalised log weights to use (PSIS-smoothed where k-hat allows).
        log_weight_raw: normalised log weights before smoothing.
        log_likelihood: each sample's log-likelihood (estimate or exact).
        diagnostics: ``{"ess", "pareto_k", "max_share"}`` of the raw weights.
        seconds: wall time.
    """

    samples: dict
    log_weight: np.ndarray
    log_weight_raw: np.ndarray
    log_likelihood: np.ndarray
    diagnostics: dict
    seconds: float


def weighted_output(samples: dict, log_w, log_like, start: float) -> WeightedOutput:
    log_w = np.asarray(log_w, dtype=np.float64)
    smoothed, _ = psis(log_w)
    return WeightedOutput(
        samples={k: np.asarray(v, dtype=np.float64).reshape(1, -1) for k, v in samples.items()},
        log_weight=smoothed.reshape(1, -1),
        log_weight_raw=normalise_log_weights(log_w).reshape(1, -1),
        log_likelihood=np.asarray(log_like, dtype=np.float64).reshape(1, -1),
        diagnostics=weight_diagnostics(log_w),
        seconds=time.perf_counter() - start,
    )


def exact_log_likelihoods(
    hypers: Hyper, data: CollapsedData, config: QuadratureConfig, block: int = 64, progress: bool = False
) -> np.ndarray:
    """The collapsed log-likelihood at each of a batch of hyperparameters (leading axis)."""
    batch = Hyper(*(jnp.asarray(np.asarray(v)) for v in hypers))
    with progress_bar(np.shape(hypers[0])[0], progress, "exact log-likelihoods") as bar:
        return map_blocks(lambda h: log_likelihood_batch(h, data, config), batch, block, bar)


def is_prior(
    halo_data: HaloData,
    collapsed_data: CollapsedData,
    prior: MassPrior,
    config: QuadratureConfig,
    *,
    n_hyper: int = 10_000,
    is_samples: int = 100,
    clip: bool = True,
    likelihood: str = "is",
    seed: int = 0,
    progress: bool = True,
    mesh=None,
) -> WeightedOutput:
    """The 2017 scheme: hyperprior draws weighted by their likelihood.

    Args:
        n_hyper: K, the number of hyper-samples.
        is_samples, clip: the per-halo importance sampler (``likelihood="is"``).
        likelihood: ``"is"`` (the 2017 estimate, fresh random numbers per hyper-sample) or
            ``"exact"`` (the collapsed quadrature).
        mesh: split the IS likelihood's halos across this device mesh
            (:func:`bigmali.likelihood.sharding.halo_mesh`; the same estimates).
    """
    if likelihood not in ("is", "exact"):
        raise ValueError(f"likelihood {likelihood!r}: choose 'is' or 'exact'")
    start = time.perf_counter()
    key = jax.random.PRNGKey(seed)
    hypers = sample_hyperprior(jax.random.fold_in(key, 1), (n_hyper,))
    hypers = Hyper(*(np.asarray(v, dtype=np.float64) for v in hypers))
    if likelihood == "exact":
        log_like = exact_log_likelihoods(hypers, collapsed_data, config, progress=progress)
    else:
        f = jax.jit(lambda k, h: is_log_likelihood(k, h, halo_data, prior, is_samples, clip, mesh=mesh))
        log_like = np.empty(n_hyper)
        is_key = jax.random.fold_in(key, 2)
        with progress_bar(n_hyper, progress, f"IS log-likelihoods (n={is_samples})") as bar:
            for i in range(n_hyper):
                log_like[i] = float(f(jax.random.fold_in(is_key, i), Hyper(*(float(v[i]) for v in hypers))))
                bar.update()
    return weighted_output(hypers._asdict(), log_like, log_like, start)


def is_proposal(model, model_args, *, n_hyper: int = 4000, seed: int = 0, progress: bool = True) -> WeightedOutput:
    """Draws from the Laplace approximation of the collapsed posterior, weighted by the exact
    posterior over the proposal and Pareto-smoothed.

    The proposal lives in NumPyro's unconstrained coordinates (the standardised
    hyperparameters), where the potential is nearly quadratic.
    """
    from bigmali.inference.laplace import NotWhitenable, whitener

    start = time.perf_counter()
    key = jax.random.PRNGKey(seed)
    try:
        w = whitener(model, model_args)
    except NotWhitenable as exc:
        raise ValueError(
            f"is_proposal needs a model with a handful of parameters ({exc}): use model='collapsed'"
        ) from None
    center, chol = w.start(model_args)
    eps = jax.random.normal(jax.random.fold_in(key, 2), (n_hyper, w.dim))
    flat = center + eps @ chol.T
    log_q = -0.5 * jnp.sum(eps * eps, axis=1) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * w.dim * jnp.log(2 * jnp.pi)
    with progress_bar(n_hyper, progress, "exact posterior at the proposal's draws") as bar:
        log_post, constrained = w.evaluate(flat, model_args, bar)
    values = {name: np.asarray(constrained[name], dtype=np.float64) for name in HYPER_NAMES}
    log_w = log_post - np.asarray(log_q)
    return weighted_output(values, log_w, log_post, start)
