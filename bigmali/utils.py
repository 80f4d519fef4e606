"""Small utilities shared by every layer: block maps and progress bars.

:func:`map_blocks` evaluates a vectorised function over many inputs in fixed-size blocks. It is used wherever a quantity is needed at thousands of hyperparameter draws (exact
likelihoods, posterior densities, per-halo log-likelihoods, replicated catalogs): one
block at a time bounds the memory, and padding the last block (repeating its final
input) keeps one array shape, so the function compiles once.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["map_blocks", "progress_bar"]


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar of ``total`` steps (disabled when not ``enabled``), cleared when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def map_blocks(f, batch, block: int, bar=None):
    """``f`` applied to ``batch`` (a pytree whose leaves share a leading axis of size n) in
    blocks of ``block`` inputs; returns ``f``'s outputs for all n inputs as NumPy arrays.

    ``f`` takes and returns pytrees with that leading axis (``jax.jit(jax.vmap(g))``, say).
    ``bar`` (optional) is advanced by the number of real inputs in each block.
    """
    n = int(np.shape(jax.tree.leaves(batch)[0])[0])
    block = max(1, min(block, n))
    pieces = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        idx = np.arange(start, start + block).clip(max=n - 1)
        out = f(jax.tree.map(lambda leaf: leaf[idx], batch))
        pieces.append(jax.tree.map(lambda leaf: np.asarray(leaf)[: stop - start], out))
        if bar is not None:
            bar.update(stop - start)
    return jax.tree.map(lambda *leaves: np.concatenate(leaves), *pieces)
