"""NUTS with NumPyro: chains, warmup, draws, target acceptance, mass matrix, seed, progress.

For models with a handful of latent variables (the collapsed model) the chains start from
draws of a Laplace approximation and the dense mass matrix starts at its covariance
(:mod:`bigmali.inference.laplace`); warmup then only refines them. Such a model's sampler
is compiled once and reused for every catalog of the same shape (:func:`run_nuts`). NumPyro's
kernels sample and adapt; their iterations run through bigmali's compiled loop
(:class:`_Loop`), not ``MCMC.run``, which compiles afresh on every call. A finished run keeps
each chain's last state, step size and mass matrix so that :func:`extend_nuts` can add draws.
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial
from operator import attrgetter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS, HMCGibbs, init_to_value
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from bigmali.inference.laplace import WHITENED_SITE, Whitener, mode_and_cov, whitened_model, whitener
from bigmali.inference.nuts_gibbs import halo_mh_update
from bigmali.utils import kept, progress_bar

__all__ = [
    "NutsConfig",
    "NutsOutput",
    "run_nuts",
    "run_nuts_latent",
    "extend_nuts",
    "default_target_accept",
    "TARGET_ACCEPT",
    "R_HAT_MAX",
    "TARGET_ESS_WARMUP",
    "MIN_ROUND",
    "SHARED_BURN_IN",
    "ess_shortfall",
    "enough_draws",
    "next_round",
]

EXTRA_FIELDS = ("diverging", "num_steps", "energy", "accept_prob", "potential_energy", "adapt_state.step_size")


TARGET_ACCEPT = {"collapsed": 0.65, "latent": 0.8}
"""NUTS's target acceptance by kind of model. The collapsed posterior is four nearly Gaussian
parameters: on the 115,919-halo mock, 0.65 gave 3.1 leapfrog steps per draw and bulk ESS
~6900 in 169 s, against 4.9 steps and ESS ~4200 in 215 s at 0.8 (no divergences either way).
The latent models keep NumPyro's 0.8."""


def default_target_accept(model: str) -> float:
    """The target acceptance for ``model`` (a name of :data:`bigmali.models.MODELS`)."""
    return TARGET_ACCEPT["collapsed" if model == "collapsed" else "latent"]


TARGET_ESS_WARMUP = 100
"""Warmup per chain when drawing to a target ESS and no warmup is given. The chains start at
draws of the Laplace fit with its covariance as the mass matrix, so the warmup only tunes the
step size and refines that matrix: at 115,919 halos, warmups of 60, 100 and 200 all passed
every convergence check with ESS >= 400 (R-hat at most 1.006, 1.010, 1.003; ``bigmali fit
--target-ess 400`` 28.7, 34.6 and 38.6 s wall with fixed rounds of 100 draws, which drew 200
per chain; with rounds sized by the shortfall, :func:`next_round`, warmup 100 took 24.6 s
and drew 142 per chain)."""

SHARED_BURN_IN = 25
"""Iterations each chain after the first runs and discards in a fit to a target ESS (sequential
chains): the first chain warms up for the whole warmup, and the others, which start at their
own draws of the Laplace fit, take its step size and mass matrix and burn in for this many.
The whitened posterior has one geometry for every chain, so tuning it once suffices; at
115,919 halos this cut the warmup from 4 x 100 iterations to 175."""

MIN_ROUND = 25
"""The fewest draws per chain a round of a fit to a target ESS adds (:func:`next_round`)."""

R_HAT_MAX = 1.01
"""Rank-normalised split R-hat at most this (Vehtari et al. 2021): the ``target_ess`` stopping
rule's and the convergence diagnostics' threshold."""


def ess_shortfall(samples: dict, target_ess: int) -> float:
    """How far draws ``{site: (chain, draw)}`` are from the stopping rule: 0 when every site
    has bulk and tail ESS of at least ``target_ess`` and (with several chains) R-hat at most
    :data:`R_HAT_MAX`, as ArviZ computes them; otherwise ``target_ess`` over the smallest of
    those ESS (at least 1: R-hat alone failing), the factor by which the draws fall short."""
    import arviz_stats  # noqa: F401  (registers the .azstats accessor)
    import xarray as xr

    chains = next(iter(samples.values())).shape[0]
    post = xr.Dataset({name: (("chain", "draw"), np.asarray(v)) for name, v in samples.items()})
    ess = min(float(post.azstats.ess(method=kind).to_array().min()) for kind in ("bulk", "tail"))
    r_hat_ok = chains == 1 or bool((post.azstats.rhat() <= R_HAT_MAX).to_array().all())
    if ess >= target_ess and r_hat_ok:
        return 0.0
    return max(1.0, target_ess / max(ess, 1.0))


def enough_draws(samples: dict, target_ess: int) -> bool:
    """Whether draws ``{site: (chain, draw)}`` meet the stopping rule (:func:`ess_shortfall`)."""
    return ess_shortfall(samples, target_ess) == 0.0


def next_round(done: int, shortfall: float) -> int:
    """Draws per chain to add after ``done`` that fall ``shortfall`` short (:func:`ess_shortfall`):
    ESS grows about in proportion to the draws, so ``done * shortfall`` plus a tenth, at least
    :data:`MIN_ROUND` and at most ``_BLOCK``."""
    return int(min(_BLOCK, max(MIN_ROUND, math.ceil(1.1 * done * shortfall) - done)))


class NutsConfig(NamedTuple):
    """Settings of a NUTS run (recorded in the DataTree's attrs). ``target_accept`` None: the
    model's default, :func:`default_target_accept`. ``target_ess`` (models with a few latent
    variables): after warmup, draw ``_BLOCK`` per chain, then rounds sized by the ESS still
    missing (:func:`next_round`) until every parameter has bulk and tail ESS >= ``target_ess``
    and R-hat <= :data:`R_HAT_MAX` (:func:`enough_draws`), ``draws`` per chain at most; None
    or 0 draws ``draws``."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float | None = None
    dense_mass: bool = True
    max_tree_depth: int = 10
    seed: int = 0
    chain_method: str = "sequential"
    progress: bool = True
    target_ess: int | None = None


class NutsOutput(NamedTuple):
    """Draws and sampler statistics with a leading (chain, draw) shape, plus the end state."""

    samples: dict
    stats: dict
    last_state: dict | None  # flat unconstrained position, step size, inverse mass matrix per chain
    seconds: float
    halo: dict | None = None  # per-halo sites at a few draws: {site: (chain, n_kept, halo)}
    halo_draw: np.ndarray | None = None  # which draws those are


def _mcmc_stats(mcmc: MCMC, prefix: str = "") -> dict:
    return _stats({k[len(prefix) :]: v for k, v in mcmc.get_extra_fields(group_by_chain=True).items()})


def _stats(extra: dict) -> dict:
    """Sampler statistics from NumPyro's fields (``EXTRA_FIELDS``), each (chain, draw)."""
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
    z = jax.tree.map(
        lambda a: np.asarray(a).reshape(chains, *np.shape(a)[1:]) if chains > 1 else np.asarray(a)[None], state.z
    )
    flat = np.stack([np.asarray(ravel_pytree(jax.tree.map(lambda a: a[c], z))[0]) for c in range(chains)])
    imm = _inverse_mass(state.adapt_state.inverse_mass_matrix)
    dim = flat.shape[1]
    imm = imm.reshape(chains, dim, dim) if imm.size == chains * dim * dim else imm.reshape(chains, dim)
    return {
        "position": flat,
        "step_size": np.asarray(state.adapt_state.step_size).reshape(chains),
        "inverse_mass_matrix": imm,
    }


def _check_target(config: NutsConfig) -> None:
    if config.target_accept is None:
        raise ValueError(
            "NutsConfig.target_accept is None: set it (default_target_accept(model) gives bigmali's choice)"
        )


_BLOCK = 100
"""Iterations per call of a compiled sampling block (the progress bar moves between calls)."""


def _advance(kernel, fields, drop, state, model_args, n):
    """``n`` (traced, at most ``_BLOCK``) iterations of ``kernel`` from ``state``; each
    iteration's sites (deterministic ones included, ``drop`` left out) and ``fields`` of its
    state, in buffers of ``_BLOCK`` rows."""
    postprocess = kernel.postprocess_fn(model_args, {})

    def collect(s):
        sites = {k: v for k, v in postprocess(s.z).items() if k not in drop}
        return sites, {f: attrgetter(f)(s) for f in fields}

    buffers = jax.tree.map(lambda a: jnp.zeros((_BLOCK, *jnp.shape(a)), jnp.result_type(a)), collect(state))

    def body(i, carry):
        s, out = carry
        s = kernel.sample(s, model_args, {})
        return s, jax.tree.map(lambda buf, v: buf.at[i].set(v), out, collect(s))

    return jax.lax.fori_loop(0, n, body, (state, buffers))


def _adopt(state, tuned, warmup: int):
    """A chain's initial HMC ``state`` with the step size and mass matrix of ``tuned`` (another
    chain's state at the end of a warmup of ``warmup`` iterations), itself past its warmup."""
    return state._replace(
        i=jnp.full_like(state.i, warmup), adapt_state=tuned.adapt_state._replace(rng_key=state.adapt_state.rng_key)
    )


def _chain(tree, c: int):
    """Chain ``c`` of a pytree with a leading chain axis."""
    return jax.tree.map(lambda a: a[c], tree)


class _Loop:
    """A NumPyro kernel's warmup and draws, for every chain, through one compiled init and one
    compiled block of ``_BLOCK`` iterations.

    NumPyro's kernel does the sampling and the warmup adaptation. ``MCMC.run`` would trace and
    compile its loop afresh on every call (for every chain, the warmup and each batch of
    draws), and JAX keeps every executable: about 75 fits in one process ran LLVM out of
    memory. Here the catalog is an argument of both compiled functions, so one loop serves
    every chain and every catalog of the same shape that the kernel's constants allow.

    ``chain_method``: ``sequential`` runs the chains one after the other, ``vectorized``
    together (vmap), ``parallel`` one per device (pmap; sequential, with a warning, when
    there are fewer devices than chains). ``drop``: sites never collected (per-halo ones);
    ``prefix``: where the kernel's HMC state sits in its state (``hmc_state.`` for HMCGibbs).
    """

    def __init__(self, kernel, warmup: int, chains: int, chain_method: str, drop=(), prefix: str = ""):
        self.kernel, self.warmup, self.prefix = kernel, warmup, prefix
        self.method = chain_method
        if chain_method == "parallel" and jax.local_device_count() < chains:
            warnings.warn(
                f"chain_method='parallel': {chains} chains but {jax.local_device_count()} devices; "
                "running them sequentially",
                stacklevel=4,
            )
            self.method = "sequential"
        # The kernel's initial state (potential and gradient at the start), compiled once too.
        self._init = jax.jit(lambda key, params, args: kernel.init(key, warmup, params, args, {}))
        block = partial(_advance, kernel, tuple(prefix + f for f in EXTRA_FIELDS), tuple(drop))
        if self.method == "vectorized":
            self._block = jax.jit(jax.vmap(block, in_axes=(0, None, None)))
        elif self.method == "parallel":
            self._block = jax.pmap(block, in_axes=(0, None, None))
        else:
            self._block = jax.jit(block)

    def _start(self, keys, params, model_args):
        """Every chain's initial state (a key and initial ``params`` each): one state per chain
        (sequential) or one state with a chain axis; and the batch size (1, or the chains)."""
        states = [self._init(k, p, model_args) for k, p in zip(keys, params)]
        if self.method == "sequential":
            return states, 1
        return [jax.tree.map(lambda *a: jnp.stack(a), *states)], len(states)

    def _fields(self, extra: dict) -> dict:
        return {k[len(self.prefix) :]: v for k, v in extra.items()}

    def run(self, keys, params, model_args, draws: int, progress: bool, marks=(), at_mark=None):
        """Warmup and ``draws`` for every chain (a key and initial ``params`` each): the draws'
        sites and fields, each (chain, draw, ...), every chain's last state, and
        ``at_mark(state)`` of every chain after each draw index in ``marks`` (chain, mark)."""
        total = self.warmup + draws
        stops = sorted({self.warmup + m + 1 for m in marks})
        states, batch = self._start(keys, params, model_args)
        chains = len(keys)
        bar = progress_bar(total * chains, progress, "NUTS")
        if batch == 1:
            runs = [self._run_chain(s, model_args, total, bar, stops, at_mark) for s in states]
            ends, marked = [r[0] for r in runs], [r[2] for r in runs]
            out = jax.tree.map(lambda *a: np.stack(a), *[r[1] for r in runs])
        else:
            end, out, marked = self._run_chain(states[0], model_args, total, bar, stops, at_mark, batch)
            ends = [_chain(end, c) for c in range(chains)]
            marked = [[m[c] for m in marked] for c in range(chains)]
        bar.close()
        sites, extra = jax.tree.map(lambda a: a[:, self.warmup :], out)
        return sites, self._fields(extra), ends, marked

    def run_until(self, keys, params, model_args, max_draws: int, progress: bool, shortfall):
        """Warmup, then rounds of draws for every chain until ``shortfall(sites)`` (the draws
        so far, each (chain, draw, ...); :func:`ess_shortfall`) is 0 or ``max_draws`` are drawn:
        ``_BLOCK`` first, then :func:`next_round`. Sites and fields as :meth:`run`, and every
        chain's last state."""
        states, batch = self._start(keys, params, model_args)
        chains = len(keys)
        shared = batch == 1 and chains > 1 and self.warmup > 0 and not self.prefix
        bar = progress_bar(
            self.warmup + (chains - 1) * SHARED_BURN_IN if shared else self.warmup * chains, progress, "NUTS warmup"
        )
        if shared:  # one chain tunes; the others take its tuning and burn in
            first = self._run_chain(states[0], model_args, self.warmup, bar)[0]
            states = [first] + [
                self._run_chain(_adopt(s, first, self.warmup), model_args, SHARED_BURN_IN, bar)[0] for s in states[1:]
            ]
        else:
            states = [self._run_chain(s, model_args, self.warmup, bar, (), None, batch)[0] for s in states]
        bar.close()
        bar = progress_bar(max_draws * chains, progress, "NUTS draws (until the target ESS)")
        pieces, done, n = [], 0, _BLOCK
        while done < max_draws:
            n = min(n, max_draws - done)
            runs = [self._run_chain(s, model_args, n, bar, (), None, batch) for s in states]
            states = [r[0] for r in runs]
            pieces.append(runs[0][1] if batch > 1 else jax.tree.map(lambda *a: np.stack(a), *[r[1] for r in runs]))
            done += n
            sites, extra = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *pieces)
            short = shortfall(sites)
            if short == 0.0:
                break
            n = next_round(done, short)
        bar.close()
        ends = [_chain(states[0], c) for c in range(chains)] if batch > 1 else states
        return sites, self._fields(extra), ends

    def _run_chain(self, state, model_args, total, bar, stops=(), at_mark=None, batch=1):
        pieces, marked, done = [], [], 0
        while done < total:
            n = int(min(_BLOCK, total - done, *(s - done for s in stops if s > done)))
            state, out = self._block(state, model_args, n)
            # Rows past n were not written; a batched block has the chain axis first.
            pieces.append(jax.tree.map(lambda a, n=n: np.asarray(a)[:n] if batch == 1 else np.asarray(a)[:, :n], out))
            done += n
            bar.update(n * batch)
            if done in stops:
                if batch == 1:
                    marked.append(at_mark(state))
                else:
                    marked.append([at_mark(_chain(state, c)) for c in range(batch)])
        axis = 0 if batch == 1 else 1
        return state, jax.tree.map(lambda *a: np.concatenate(a, axis=axis), *pieces), marked


class _Sampler:
    """NUTS for one low-dimensional model and one set of static settings, compiled once.

    The model runs whitened by each catalog's Laplace approximation
    (:class:`bigmali.inference.laplace.Whitener`): the mode and Cholesky factor are
    arguments of the model, not constants of the kernel, and so is the catalog; the iterations
    run through one :class:`_Loop`. So every catalog of the same shape reuses one compiled
    Laplace step, one compiled init and one compiled sampling block, for every chain. In the
    whitened coordinates NUTS starts with a unit mass matrix, which is the Laplace covariance
    in the model's own.
    """

    def __init__(self, whiten: Whitener, config: NutsConfig):
        self.whiten = whiten
        kernel = NUTS(
            whitened_model(whiten.model, whiten.unravel, whiten.dim),
            dense_mass=config.dense_mass,
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
        )
        self.loop = _Loop(kernel, config.warmup, config.chains, config.chain_method)


_SAMPLERS: dict = {}  # compiled samplers kept per process (bigmali.utils.kept)


def _sampler(model, model_args, config: NutsConfig) -> _Sampler:
    whiten = whitener(model, model_args)
    key = config._replace(seed=0, progress=False, draws=0, target_ess=None)  # what the compiled code depends on
    return kept(_SAMPLERS, (whiten, key), lambda: _Sampler(whiten, config))


def run_nuts(model, model_args=(), config: NutsConfig = NutsConfig()) -> NutsOutput:
    """NUTS on a model with a few real latent variables (the collapsed model, nuts_is's).

    Each chain starts at a draw of the Laplace approximation, and the mass matrix starts at
    its covariance (the model runs whitened by it; :class:`_Sampler`). Static settings (model
    function, counts, target, mass matrix) select one compiled sampler for every catalog of
    the same shape; ``model`` must take every catalog-dependent value in ``model_args`` and
    have every static setting bound (:func:`bigmali.utils.bind`). Draws are grouped by chain.
    """
    _check_target(config)
    start = time.perf_counter()
    key_init, key_run = jax.random.split(jax.random.PRNGKey(config.seed))
    sampler = _sampler(model, model_args, config)
    center, chol = sampler.whiten.start(model_args)
    init = jax.random.normal(key_init, (config.chains, sampler.whiten.dim))
    keys = jax.random.split(key_run, config.chains)
    params = [{WHITENED_SITE: x} for x in init]
    args = (center, chol, *model_args)
    if config.target_ess:

        def shortfall(draws):
            sites = sampler.whiten.sites(center + jnp.asarray(draws[WHITENED_SITE]) @ chol.T)
            return ess_shortfall({k: v for k, v in sites.items() if np.ndim(v) == 2}, config.target_ess)

        draws, extra, ends = sampler.loop.run_until(keys, params, args, config.draws, config.progress, shortfall)
    else:
        draws, extra, ends, _ = sampler.loop.run(keys, params, args, config.draws, config.progress)
    sites = sampler.whiten.sites(center + jnp.asarray(draws.pop(WHITENED_SITE)) @ chol.T)
    samples = jax.tree.map(np.asarray, {**sites, **draws})
    c, L = np.asarray(center), np.asarray(chol)
    imm = [_inverse_mass(e.adapt_state.inverse_mass_matrix) for e in ends]
    state = {
        "position": c + np.stack([np.asarray(e.z[WHITENED_SITE]) for e in ends]) @ L.T,
        "step_size": np.array([float(e.adapt_state.step_size) for e in ends]),
        "inverse_mass_matrix": np.stack([L @ (m if m.ndim == 2 else np.diag(m)) @ L.T for m in imm]),
    }
    return NutsOutput(samples, _stats(extra), state, time.perf_counter() - start)


def _inverse_mass(imm) -> np.ndarray:
    if isinstance(imm, dict):  # one block over all sites, in ravel_pytree's order
        (imm,) = imm.values()
    return np.asarray(imm)


def _chunks(draws: int, kept: int) -> int:
    """The number of equal chunks (at most ``kept``, dividing ``draws``) whose last draws keep
    the per-halo sites."""
    return max(c for c in range(1, max(1, min(kept, draws)) + 1) if draws % c == 0)


@partial(jax.jit, static_argnums=(0, 1))
def _conditional_laplace(model, hyper_sites: tuple, model_args):
    """The hyperparameters' conditional mode and inverse Hessian with every other latent site
    at 0 (unconstrained), and those zeros; one compiled program per model and catalog shape."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(*model_args)
    zeros = {
        name: jnp.zeros_like(biject_to(site["fn"].support).inv(site["value"]))
        for name, site in tr.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    latent = {k: v for k, v in zeros.items() if k not in hyper_sites}
    flat0, unravel = ravel_pytree({k: zeros[k] for k in hyper_sites})
    x, cov = mode_and_cov(lambda x: potential_energy(model, model_args, {}, {**unravel(x), **latent}), flat0)
    return x, cov, zeros


def _latent_start(model, model_args, hyper_sites, key, chains: int):
    """Starting points (each site with a leading chain axis) and a starting mass matrix for a
    model with per-halo latents.

    The per-halo latents are data-centred, so their conditional posteriors sit near 0 for
    any hyperparameters. With them at 0, the hyperparameters' conditional mode and Hessian
    (four dimensions: damped Newton, :func:`~bigmali.inference.laplace.mode_and_cov`) give
    the chains' starts, drawn from that normal with its sd doubled, and the starting dense
    block of the mass matrix. Each chain's per-halo latents start uniformly in (-1, 1).
    Without this, warmup from the hyperprior spends its first windows at the maximum tree depth.
    """
    x, cov, zeros = _conditional_laplace(model, tuple(hyper_sites), model_args)
    if not bool(jnp.all(jnp.isfinite(cov))) or not bool(jnp.all(jnp.linalg.eigvalsh(cov) > 0)):
        return None, None
    _, unravel = ravel_pytree({k: zeros[k] for k in hyper_sites})
    latent = {k: v for k, v in zeros.items() if k not in hyper_sites}
    key_h, key_u = jax.random.split(key)
    flat = x + 2.0 * (jnp.linalg.cholesky(cov) @ jax.random.normal(key_h, (x.shape[0], chains))).T
    init = jax.vmap(unravel)(flat)
    for i, (name, value) in enumerate(latent.items()):
        init[name] = jax.random.uniform(jax.random.fold_in(key_u, i), (chains, *value.shape), minval=-1.0, maxval=1.0)
    inverse_mass = {tuple(hyper_sites): cov}
    return init, inverse_mass


def run_nuts_latent(
    model,
    model_args,
    hyper_sites,
    halo_sites,
    drop_sites,
    config: NutsConfig = NutsConfig(),
    halo_draws: int = 20,
    gibbs_site: str | None = None,
) -> NutsOutput:
    """NUTS for models with per-halo latents: memory stays bounded at 10^5 halos.

    The mass matrix is dense over ``hyper_sites`` (if ``config.dense_mass``) and diagonal
    over the per-halo latents. Every draw of the hyperparameters is kept, the per-halo
    ``halo_sites`` only at the last draw of each of equal chunks of the draws (``halo_draws``
    draws in all, about), and ``drop_sites`` never. Every chain, the warmup and the draws run
    through one compiled :class:`_Loop`.
    """
    _check_target(config)
    start = time.perf_counter()
    _, key_run = jax.random.split(jax.random.PRNGKey(config.seed))
    dense = [tuple(hyper_sites)] if config.dense_mass else False
    init_params, inverse_mass = _latent_start(
        model, model_args, hyper_sites, jax.random.PRNGKey(config.seed + 1), config.chains
    )
    if inverse_mass is not None and not config.dense_mass:
        inverse_mass = None
    per_chain = max(1, int(np.ceil(halo_draws / config.chains)))
    n_chunks = _chunks(config.draws, per_chain)
    chunk = config.draws // n_chunks
    prefix = ""
    if gibbs_site is None:
        kernel = NUTS(
            model,
            dense_mass=dense,
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
            inverse_mass_matrix=inverse_mass,
        )
    else:
        inner = NUTS(
            model,
            dense_mass=config.dense_mass,
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
            inverse_mass_matrix=None if inverse_mass is None else inverse_mass[tuple(hyper_sites)],
        )
        kernel = HMCGibbs(inner, gibbs_fn=halo_mh_update(model, model_args, gibbs_site), gibbs_sites=[gibbs_site])
        prefix = "hmc_state."
    # Per-halo sites are never collected draw by draw (4 chains x 1000 draws x 10^5 halos
    # is 3.7 GB per site); the kept ones are computed from the state at each chunk's end.
    loop = _Loop(kernel, config.warmup, config.chains, config.chain_method, (*drop_sites, *halo_sites), prefix)
    constrained = jax.jit(lambda z: constrain_fn(model, model_args, {}, z, return_deterministic=True))

    def at_mark(state):
        values = constrained(state.z)
        return {site: np.asarray(values[site], dtype=np.float32) for site in halo_sites}

    keys = jax.random.split(key_run, config.chains)
    params = [None] * config.chains if init_params is None else [_chain(init_params, c) for c in range(config.chains)]
    picks = np.arange(1, n_chunks + 1) * chunk - 1
    samples, extra, _, marked = loop.run(keys, params, model_args, config.draws, config.progress, picks, at_mark)
    halo = {site: np.stack([np.stack([m[site] for m in chain]) for chain in marked]) for site in halo_sites}
    return NutsOutput(samples, _stats(extra), None, time.perf_counter() - start, halo, picks)


def extend_nuts(
    model, model_args, model_kwargs, last_state: dict, draws: int, seed: int, progress: bool = True
) -> NutsOutput:
    """Continue every chain from its saved state with its adapted step size and mass matrix."""
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
        mcmc.run(
            jax.random.PRNGKey(seed + 7919 * (chain + 1)),
            *model_args,
            extra_fields=EXTRA_FIELDS,
            init_params=unravel(jnp.asarray(position)),
            **(model_kwargs or {}),
        )
        outputs.append(
            (jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True)), _mcmc_stats(mcmc), _last_state(mcmc, 1))
        )
    cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # noqa: E731
    return NutsOutput(
        cat([o[0] for o in outputs]),
        cat([o[1] for o in outputs]),
        cat([o[2] for o in outputs]),
        time.perf_counter() - start,
    )
