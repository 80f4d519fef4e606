"""Stochastic variational inference with NumPyro's autoguides.

Guides: ``normal`` (AutoNormal), ``mvn`` (AutoMultivariateNormal) and ``lowrank``
(AutoLowRankMultivariateNormal). The ELBO trace is kept; the fit counts as converged when
the mean loss over the last tenth of the steps moved by less than ``tol`` (relative, and
in absolute units of the loss's own noise) from the tenth before it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import SVI, Trace_ELBO, autoguide

from bigmali.inference.laplace import WHITENED_SITE, NotWhitenable, Whitener, whitened_model, whitener
from bigmali.relation import HYPER_NAMES
from bigmali.utils import kept, progress_bar

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


_STEPS = 500
"""Optimisation steps per call of the compiled SVI block (the progress bar moves between calls)."""


class _Fitter:
    """SVI of one whitenable model and one set of static settings, compiled once.

    The guide is fitted to the model whitened by the Laplace approximation
    (:func:`~bigmali.inference.laplace.whitened_model`), whose mode and Cholesky factor are
    arguments like the catalog: the init, a block of ``_STEPS`` steps and the draws from the
    guide are compiled once for every catalog of the same shape (``SVI.run`` compiles its
    loop afresh on every call; SBC with ``svi`` fits many catalogs).
    """

    def __init__(self, whiten: Whitener, config: SviConfig):
        self.whiten = whiten
        model = whitened_model(whiten.model, whiten.unravel, whiten.dim)
        init = numpyro.infer.init_to_value(values={WHITENED_SITE: jnp.zeros(whiten.dim)})
        self.guide = GUIDES[config.guide](model, init_loc_fn=init, init_scale=1.0)
        self.svi = SVI(model, self.guide, numpyro.optim.Adam(config.learning_rate), Trace_ELBO(config.num_particles))
        self.init = jax.jit(lambda key, args: self.svi.init(key, *args))

        def block(state, args, n):
            def body(i, carry):
                state, losses = carry
                state, loss = self.svi.update(state, *args)
                return state, losses.at[i].set(loss)

            return jax.lax.fori_loop(0, n, body, (state, jnp.zeros(_STEPS)))

        self.block = jax.jit(block)
        n_draws = config.svi_draws
        self.draw = jax.jit(
            lambda key, params, args: numpyro.infer.Predictive(self.guide, params=params, num_samples=n_draws)(
                key, *args
            )
        )
        sites = list(HYPER_NAMES)
        self.sites = jax.jit(
            lambda key, draws, args: numpyro.infer.Predictive(whiten.model, draws, return_sites=sites)(key, *args)
        )


_FITTERS: dict = {}  # compiled SVI kept per process (bigmali.utils.kept)


def _fitter(whiten: Whitener, config: SviConfig) -> _Fitter:
    static = config._replace(seed=0, progress=False, tol=0.0, init_scale=0.0)
    return kept(_FITTERS, (whiten, static), lambda: _Fitter(whiten, config))


def run_svi(model, model_args=(), config: SviConfig = SviConfig()) -> SviOutput:
    """Fit an autoguide, then draw ``config.svi_draws`` samples from it.

    For low-dimensional models (the collapsed model) the guide is fitted in coordinates
    whitened by the Laplace approximation, where the posterior is close to N(0, I): the
    guide starts at location 0 and unit scale, and every one of its parameters is of order
    one. In the model's own coordinates the alpha1-alpha2 ridge has scales differing by
    100x; Adam's per-parameter steps then left the guide's sds at half the posterior's.
    Such a fit is compiled once per model and catalog shape (:class:`_Fitter`).
    """
    if config.guide not in GUIDES:
        raise ValueError(f"guide {config.guide!r}: choose one of {', '.join(GUIDES)}")
    start = time.perf_counter()
    try:
        whiten = whitener(model, model_args)
    except NotWhitenable:
        return _run_svi_unwhitened(model, model_args, config, start)
    fitter = _fitter(whiten, config)
    center, chol = whiten.start(model_args)
    args = (center, chol, *model_args)
    key_fit, key_draw = jax.random.split(jax.random.PRNGKey(config.seed))
    state, losses, done = fitter.init(key_fit, args), [], 0
    bar = progress_bar(config.steps, config.progress, "SVI")
    while done < config.steps:
        n = min(_STEPS, config.steps - done)
        state, block_losses = fitter.block(state, args, n)
        losses.append(np.asarray(block_losses)[:n])
        done += n
        bar.update(n)
    bar.close()
    losses = np.concatenate(losses)
    draws = fitter.draw(key_draw, fitter.svi.get_params(state), args)
    # Back to the model's unconstrained sites; the hyperparameters themselves come from the model.
    draws = jax.vmap(whiten.unravel)(center + draws[WHITENED_SITE] @ chol.T)
    full = fitter.sites(key_draw, draws, model_args)
    samples = {k: np.asarray(v)[None] for k, v in {**draws, **full}.items() if not k.startswith("_")}
    return SviOutput(samples, losses, converged(losses, config.tol), time.perf_counter() - start)


def _run_svi_unwhitened(model, model_args, config: SviConfig, start: float) -> SviOutput:
    """SVI in the model's own coordinates (a model that cannot be whitened), by ``SVI.run``."""
    guide = GUIDES[config.guide](model, init_loc_fn=numpyro.infer.init_to_median, init_scale=config.init_scale)
    svi = SVI(model, guide, numpyro.optim.Adam(config.learning_rate), Trace_ELBO(num_particles=config.num_particles))
    key_fit, key_draw = jax.random.split(jax.random.PRNGKey(config.seed))
    result = svi.run(key_fit, config.steps, *model_args, progress_bar=config.progress)
    losses = np.asarray(result.losses)
    draws = numpyro.infer.Predictive(guide, params=result.params, num_samples=config.svi_draws)(key_draw, *model_args)
    full = numpyro.infer.Predictive(model, posterior_samples=draws, return_sites=list(HYPER_NAMES))(
        key_draw, *model_args
    )
    samples = {k: np.asarray(v)[None] for k, v in {**draws, **full}.items() if not k.startswith("_")}
    return SviOutput(samples, losses, converged(losses, config.tol), time.perf_counter() - start)
