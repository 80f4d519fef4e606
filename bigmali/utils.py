"""Small utilities shared by every layer: block maps, progress bars, bound models and
JAX's persistent compilation cache.

:func:`map_blocks` evaluates a vectorised function over many inputs in fixed-size blocks. It is used wherever a quantity is needed at thousands of hyperparameter draws (exact
likelihoods, posterior densities, per-halo log-likelihoods, replicated catalogs): one
block at a time bounds the memory, and padding the last block (repeating its final
input) keeps one array shape, so the function compiles once.
"""

from __future__ import annotations

import os
from functools import lru_cache, partial
from pathlib import Path

import jax
import numpy as np

__all__ = ["map_blocks", "progress_bar", "bind", "kept", "use_compilation_cache", "CACHE_ENV"]


def kept(cache: dict, key, make, size: int = 8):
    """``cache[key]``, made by ``make()`` if absent; at most ``size`` entries are kept, the
    least recently used dropped first (objects holding compiled code: JAX keeps every
    executable they made, so an unbounded cache would grow without end)."""
    if key in cache:
        cache[key] = cache.pop(key)  # most recent last
    else:
        cache[key] = make()
        while len(cache) > size:
            del cache[next(iter(cache))]
    return cache[key]


CACHE_ENV = "BIGMALI_JAX_CACHE"
"""Environment variable naming the compilation cache's directory (``off`` turns it off)."""


def use_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep XLA's compiled programs on disk, so that the next process running the same
    programs loads them instead of compiling (JAX's persistent compilation cache).

    A fit compiles its Laplace step, sampling loop and post-processing afresh in every new
    process, seconds each; the CLI turns the cache on so that a second ``bigmali fit`` of a
    catalog of the same size skips that. The directory is ``path``, else ``$BIGMALI_JAX_CACHE``,
    else ``$XDG_CACHE_HOME/bigmali/jax`` (``~/.cache/bigmali/jax``). ``off`` turns it off, and
    so does a directory that cannot be made or written. Returns the directory used, or None.
    """
    import jax

    where = path or os.environ.get(CACHE_ENV)
    if where is None:
        where = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bigmali" / "jax"
    if str(where).lower() == "off":
        return None
    where = Path(where)
    try:  # a directory that cannot be made or written is no cache (JAX would warn at every compile)
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(where, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return where


@lru_cache(maxsize=64)
def _bind(func, items: tuple):
    return partial(func, **dict(items))


def bind(func, **static):
    """``func`` with keyword arguments fixed (hashable settings such as a quadrature config),
    as the same object every time it is asked for: compiled samplers are kept per model
    function (:func:`bigmali.inference.nuts.run_nuts`), so equal bindings must be one object."""
    return _bind(func, tuple(sorted(static.items())))


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar of ``total`` steps (disabled when not ``enabled``), cleared when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def map_blocks(f, batch, block: int, bar=None, out=None):
    """``f`` applied to ``batch`` (a pytree whose leaves share a leading axis of size n) in
    blocks of ``block`` inputs; returns ``f``'s outputs for all n inputs as NumPy arrays.

    ``f`` takes and returns pytrees with that leading axis (``jax.jit(jax.vmap(g))``, say).
    ``bar`` (optional) is advanced by the number of real inputs in each block. ``out``
    (optional, for an ``f`` that returns one array): the array the outputs are written into
    block by block, and returned, instead of joined at the end (no second copy).
    """
    n = int(np.shape(jax.tree.leaves(batch)[0])[0])
    block = max(1, min(block, n))
    pieces = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        idx = np.arange(start, start + block).clip(max=n - 1)
        result = f(jax.tree.map(lambda leaf: leaf[idx], batch))
        if out is None:
            pieces.append(jax.tree.map(lambda leaf: np.asarray(leaf)[: stop - start], result))
        else:
            out[start:stop] = np.asarray(result)[: stop - start]
        if bar is not None:
            bar.update(stop - start)
    return out if out is not None else jax.tree.map(lambda *leaves: np.concatenate(leaves), *pieces)
