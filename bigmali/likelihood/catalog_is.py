"""The 2017 full-catalog log-likelihood by importance sampling, in bounded memory.

.. math:: \\ln \\hat L(\\theta) = \\sum_k \\ln \\frac1n \\sum_{i=1}^n w_{ki}(\\theta)

with the 2017 proposal of :func:`bigmali.likelihood.single_halo.is_log_weights`.
Halos are processed in blocks and samples in chunks, so that at most ``max_elements``
weights exist at once whatever ``n`` and the catalog size; per halo, ``logsumexp`` of the
weights and of their squares are accumulated across chunks (the latter gives the weights'
effective sample size).

The standard-normal draws of block ``b`` and chunk ``c`` come from
``fold_in(fold_in(key, b), c)``: the same key gives the same draws for every ``theta``
(common random numbers), and fresh keys give independent estimates
(:mod:`bigmali.inference.pmmh`). With the proposal also held at fixed hyperparameters
(``proposal=``), ``theta -> ln L_hat(theta)`` is a smooth function that NUTS can follow
(:mod:`bigmali.models.is_estimate`).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from bigmali.likelihood.single_halo import HaloData, HaloEstimate, is_log_weights
from bigmali.mass_prior import MassPrior
from bigmali.relation import Hyper

__all__ = ["is_log_likelihood", "is_log_likelihood_halos", "MAX_ELEMENTS"]

MAX_ELEMENTS = 1 << 21
"""Importance weights held at once (2M float64 = 16 MB per array; a few arrays live)."""


def _layout(n_halos: int, n: int, max_elements: int):
    chunk = min(n, max_elements)
    n_chunks = -(-n // chunk)
    block = max(1, min(n_halos, max_elements // chunk))
    n_blocks = -(-n_halos // block)
    return chunk, n_chunks, block, n_blocks


def _in_blocks(data: HaloData, n_blocks: int, block: int) -> HaloData:
    """The halos as (n_blocks, block) arrays; padding repeats the last halo (its results are
    cut off or weighted 0 by the caller)."""
    pad = n_blocks * block - data.ln_lobs.shape[0]
    return HaloData(*(jnp.concatenate([v, jnp.repeat(v[-1:], pad)]).reshape(n_blocks, block) for v in data))


def _block_sums(key, hyper: Hyper, blocks: HaloData, block_ids, prior, n, clip, chunk, n_chunks, proposal):
    """Per halo of each block, ``logsumexp`` of its ``n`` weights and of their squares:
    (len(block_ids), block) each. Block ``b`` (its index in the whole catalog's layout) draws
    its normals from ``fold_in(key, b)``, so a halo's estimate does not depend on which
    device or process holds its block (:mod:`bigmali.likelihood.sharding`)."""
    block = blocks.ln_lobs.shape[1]

    @jax.checkpoint
    def one_block(args):
        b, halos = args
        block_key = jax.random.fold_in(key, b)

        def one_chunk(carry, c):
            k1, k2 = jax.random.split(jax.random.fold_in(block_key, c))
            eps_l = jax.random.normal(k1, (chunk, block))
            eps_m = jax.random.normal(k2, (chunk, block))
            log_w = is_log_weights(eps_l, eps_m, hyper, halos, prior, clip, proposal)
            if n % chunk:  # the last chunk is partly beyond n
                keep = (c * chunk + jnp.arange(chunk))[:, None] < n
                log_w = jnp.where(keep, log_w, -jnp.inf)
            lse, lse2 = carry
            return (
                jnp.logaddexp(lse, logsumexp(log_w, axis=0)),
                jnp.logaddexp(lse2, logsumexp(2.0 * log_w, axis=0)),
            ), None

        start = (jnp.full(block, -jnp.inf), jnp.full(block, -jnp.inf))
        (lse, lse2), _ = jax.lax.scan(one_chunk, start, jnp.arange(n_chunks))
        return lse, lse2

    return jax.lax.map(one_block, (block_ids, blocks))


@partial(jax.jit, static_argnames=("n", "clip", "max_elements"))
def is_log_likelihood_halos(
    key,
    hyper: Hyper,
    data: HaloData,
    prior: MassPrior,
    n: int = 100,
    clip: bool = True,
    max_elements: int = MAX_ELEMENTS,
    proposal: Hyper | None = None,
) -> HaloEstimate:
    """Each halo's importance-sampling estimate ``ln (1/n) sum_i w_i`` and the ESS of its weights.

    ``proposal``: build the 2017 proposal at these hyperparameters instead of at ``hyper``
    (see :func:`~bigmali.likelihood.single_halo.is_log_weights`).
    """
    n_halos = data.ln_lobs.shape[0]
    chunk, n_chunks, block, n_blocks = _layout(n_halos, n, max_elements)
    blocks = _in_blocks(data, n_blocks, block)
    lse, lse2 = _block_sums(key, hyper, blocks, jnp.arange(n_blocks), prior, n, clip, chunk, n_chunks, proposal)
    lse, lse2 = lse.reshape(-1)[:n_halos], lse2.reshape(-1)[:n_halos]
    n_eff = jnp.where(jnp.isfinite(lse), jnp.exp(2.0 * lse - lse2), 0.0)
    return HaloEstimate(lse - math.log(n), n_eff)


def is_log_likelihood(
    key,
    hyper: Hyper,
    data: HaloData,
    prior: MassPrior,
    n: int = 100,
    clip: bool = True,
    max_elements: int = MAX_ELEMENTS,
    proposal: Hyper | None = None,
    mesh=None,
):
    """The catalog's total importance-sampling log-likelihood (differentiable in ``hyper``).

    ``mesh``: a one-axis device mesh (:func:`bigmali.likelihood.sharding.halo_mesh`) to split
    the blocks of halos across (:func:`bigmali.likelihood.sharding.is_log_likelihood`): each
    halo's estimate is the one-device one, only the order of the sum differs."""
    if mesh is not None:
        from bigmali.likelihood import sharding

        return sharding.is_log_likelihood(key, hyper, data, prior, n, clip, max_elements, proposal, mesh)
    return jnp.sum(is_log_likelihood_halos(key, hyper, data, prior, n, clip, max_elements, proposal).log_like)
