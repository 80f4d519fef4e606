"""Stochastic variational inference with NumPyro's autoguides.

Guides: ``normal`` (AutoNormal), ``mvn`` (AutoMultivariateNormal) and ``lowrank``
(AutoLowRankMultivariateNormal). The ELBO trace is kept; the fit counts as converged when
the mean loss over the last tenth of the steps moved by less than ``tol`` (relative, and
in absolute units of the loss's own noise) from the tenth before it.
"""

from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import SVI, Trace_ELBO, autoguide

from bigmali.inference.laplace import WHITENED_SITE, laplace, whitened_model
from bigmali.relation import HYPER_NAMES

__all__ = ["SviConfig", "SviOutput", "run_svi", "GUIDES"]

GUIDES = {
    "normal": autoguide.AutoNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
}


class SviConfig(NamedTuple):
    """Settings of an SVI run (recorded in the DataTree's attrs)."""

    guide: str = "mvn"
    steps: int = 3000
    learning_rate: float = 0.01
    num_particles: int = 1
    svi_draws: int = 4000
    seed: int = 0
    progress: bool = True
    tol: float = 1e-4
    init_scale: float = 0.05


class SviOutput(NamedTuple):
    samples: dict  # with a leading (chain=1, draw) shape
    losses: np.ndarray
    converged: bool
    seconds: float


def converged(losses: np.ndarray, tol: float) -> bool:
    """Did the loss settle? Compare the mean of the last tenth with the tenth before it."""
    n = max(len(losses) // 10, 1)
    last, before = losses[-n:], losses[-2 * n : -n]
    if len(before) == 0:
        return False
    change = abs(last.mean() - before.mean())
    noise = last.std() / np.sqrt(n) + before.std() / np.sqrt(n)
    return bool(change <= max(tol * abs(last.mean()), 3 * noise))


def run_svi(model, model_args=(), config: SviConfig = SviConfig()) -> SviOutput:
    """Fit an autoguide, then draw ``config.svi_draws`` samples from it.

    For low-dimensional models (the collapsed model) the guide is fitted in coordinates
    whitened by the Laplace approximation, where the posterior is close to N(0, I): the
    guide starts at location 0 and unit scale, and every one of its parameters is of order
    one. In the model's own coordinates the alpha1-alpha2 ridge has scales differing by
    100x; Adam's per-parameter steps then left the guide's sds at half the posterior's.
    """
    if config.guide not in GUIDES:
        raise ValueError(f"guide {config.guide!r}: choose one of {', '.join(GUIDES)}")
    start = time.perf_counter()
    approx = laplace(model, model_args)
    if approx is None:
        fit_model = model
    else:
        fit_model = partial(whitened_model(model, approx.unravel, approx.mode.shape[0]), approx.mode, approx.chol)
    init = (
        numpyro.infer.init_to_median
        if approx is None
        else numpyro.infer.init_to_value(values={WHITENED_SITE: jnp.zeros_like(approx.mode)})
    )
    init_scale = config.init_scale if approx is None else 1.0
    guide = GUIDES[config.guide](fit_model, init_loc_fn=init, init_scale=init_scale)
    svi = SVI(
        fit_model, guide, numpyro.optim.Adam(config.learning_rate), Trace_ELBO(num_particles=config.num_particles)
    )
    key_fit, key_draw = jax.random.split(jax.random.PRNGKey(config.seed))
    result = svi.run(key_fit, config.steps, *model_args, progress_bar=config.progress)
    losses = np.asarray(result.losses)
    predictive = numpyro.infer.Predictive(guide, params=result.params, num_samples=config.svi_draws)
    draws = predictive(key_draw, *model_args)
    if approx is not None:  # back to the model's unconstrained sites
        draws = jax.vmap(approx.unravel)(approx.mode + draws[WHITENED_SITE] @ approx.chol.T)
    # Deterministic sites (the hyperparameters themselves) come from the model.
    model_pred = numpyro.infer.Predictive(model, posterior_samples=draws, return_sites=list(HYPER_NAMES))
    full = model_pred(key_draw, *model_args)
    samples = {k: np.asarray(v)[None] for k, v in {**draws, **full}.items() if not k.startswith("_")}
    return SviOutput(samples, losses, converged(losses, config.tol), time.perf_counter() - start)
