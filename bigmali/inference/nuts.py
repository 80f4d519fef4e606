"""NUTS with NumPyro: chains, warmup, draws, target acceptance, mass matrix, seed, progress.

For models with a handful of latent variables (the collapsed model) the chains start from
draws of a Laplace approximation and the dense mass matrix starts at its covariance
(:mod:`bigmali.inference.laplace`); warmup then only refines them. A finished run keeps
each chain's last state, step size and mass matrix so that :func:`extend_nuts` can add draws.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, init_to_value

from bigmali.inference.laplace import laplace

__all__ = ["NutsConfig", "NutsOutput", "run_nuts", "extend_nuts"]

EXTRA_FIELDS = ("diverging", "num_steps", "energy", "accept_prob", "potential_energy", "adapt_state.step_size")


class NutsConfig(NamedTuple):
    """Settings of a NUTS run (recorded in the DataTree's attrs)."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float = 0.8
    dense_mass: bool = True
    max_tree_depth: int = 10
    seed: int = 0
    chain_method: str = "sequential"
    progress: bool = True


class NutsOutput(NamedTuple):
    """Draws and sampler statistics with a leading (chain, draw) shape, plus the end state."""

    samples: dict
    stats: dict
    last_state: dict  # flat unconstrained position, step size, inverse mass matrix per chain
    seconds: float


def _stats(mcmc: MCMC) -> dict:
    extra = mcmc.get_extra_fields(group_by_chain=True)
    n_steps = np.asarray(extra["num_steps"])
    return {
        "diverging": np.asarray(extra["diverging"]),
        "n_steps": n_steps,
        "tree_depth": np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1,
        "energy": np.asarray(extra["energy"]),
        "acceptance_rate": np.asarray(extra["accept_prob"]),
        "lp": -np.asarray(extra["potential_energy"]),
        "step_size": np.asarray(extra["adapt_state.step_size"]),
    }


def _last_state(mcmc: MCMC, chains: int) -> dict:
    state = mcmc.last_state
    z = jax.tree.map(lambda a: np.asarray(a).reshape(chains, *np.shape(a)[1:]) if chains > 1 else np.asarray(a)[None], state.z)
    flat = np.stack([np.asarray(ravel_pytree(jax.tree.map(lambda a: a[c], z))[0]) for c in range(chains)])
    imm = state.adapt_state.inverse_mass_matrix
    if isinstance(imm, dict):  # one block over all sites, in ravel_pytree's order
        (imm,) = imm.values()
    imm = np.asarray(imm)
    dim = flat.shape[1]
    imm = imm.reshape(chains, dim, dim) if imm.size == chains * dim * dim else imm.reshape(chains, dim)
    return {"position": flat, "step_size": np.asarray(state.adapt_state.step_size).reshape(chains), "inverse_mass_matrix": imm}


def run_nuts(model, model_args=(), model_kwargs=None, config: NutsConfig = NutsConfig()) -> NutsOutput:
    """Run NUTS and return draws grouped by chain."""
    model_kwargs = model_kwargs or {}
    start = time.perf_counter()
    key_init, key_run = jax.random.split(jax.random.PRNGKey(config.seed))
    kernel_kwargs = {"dense_mass": config.dense_mass, "target_accept_prob": config.target_accept, "max_tree_depth": config.max_tree_depth}
    init_params = None
    approx = laplace(model, model_args, model_kwargs, key_init)
    if approx is not None:
        kernel_kwargs["inverse_mass_matrix"] = approx.cov if config.dense_mass else jnp.diag(approx.cov)
        init_params = approx.draws(key_init, config.chains)
        if config.chains == 1:
            init_params = jax.tree.map(lambda a: a[0], init_params)
    mcmc = MCMC(
        NUTS(model, **kernel_kwargs),
        num_warmup=config.warmup,
        num_samples=config.draws,
        num_chains=config.chains,
        chain_method=config.chain_method,
        progress_bar=config.progress,
    )
    mcmc.run(key_run, *model_args, extra_fields=EXTRA_FIELDS, init_params=init_params, **model_kwargs)
    samples = jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True))
    return NutsOutput(samples, _stats(mcmc), _last_state(mcmc, config.chains), time.perf_counter() - start)


def extend_nuts(model, model_args, model_kwargs, last_state: dict, draws: int, seed: int, progress: bool = True) -> NutsOutput:
    """Continue every chain from its saved state with its adapted step size and mass matrix."""
    from numpyro.infer.util import initialize_model

    start = time.perf_counter()
    info, *_ = initialize_model(jax.random.PRNGKey(0), model, model_args=model_args, model_kwargs=model_kwargs or {})
    _, unravel = ravel_pytree(info.z)
    outputs = []
    for chain, position in enumerate(last_state["position"]):
        kernel = NUTS(
            model,
            step_size=float(last_state["step_size"][chain]),
            inverse_mass_matrix=jnp.asarray(last_state["inverse_mass_matrix"][chain]),
            adapt_step_size=False,
            adapt_mass_matrix=False,
            dense_mass=np.ndim(last_state["inverse_mass_matrix"][chain]) == 2,
            init_strategy=init_to_value(values=unravel(jnp.asarray(position))),
        )
        mcmc = MCMC(kernel, num_warmup=0, num_samples=draws, num_chains=1, progress_bar=progress)
        mcmc.run(jax.random.PRNGKey(seed + 7919 * (chain + 1)), *model_args, extra_fields=EXTRA_FIELDS,
                 init_params=unravel(jnp.asarray(position)), **(model_kwargs or {}))
        outputs.append((jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True)), _stats(mcmc), _last_state(mcmc, 1)))
    cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # noqa: E731
    return NutsOutput(cat([o[0] for o in outputs]), cat([o[1] for o in outputs]), cat([o[2] for o in outputs]),
                      time.perf_counter() - start)
