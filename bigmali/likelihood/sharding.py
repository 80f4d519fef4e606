"""The collapsed likelihood, and the 2017 importance-sampling one, with the halo axis split
across JAX devices (and, for the collapsed one, processes).

The per-halo arrays of :class:`~bigmali.likelihood.quadrature.CollapsedData` (``y``,
``ln1pz``, the table rows and weights) are placed on a one-axis :class:`jax.sharding.Mesh`
named ``"halos"`` with a ``NamedSharding``; the prior's quadrature tables are replicated.
The total is a ``jax.shard_map``: each device interpolates the prior's table to theta itself (it does not
depend on the halos) and its own halos' terms, and one ``psum`` adds the devices' sums.
Nothing here is home-made communication: the devices are JAX's, and beyond one
machine the processes are joined by :func:`jax.distributed.initialize`.

The halo axis is padded to a multiple of the device count with copies of the last halo,
which carry weight 0: :func:`log_likelihood` is the weighted sum, so padding changes nothing.

On one machine (any number of devices)::

    data, weight = shard_halos(prepare(z, lum_obs, prior))
    log_likelihood(hyper, data, weight)

Across processes (one per host, or per accelerator), each process holds only its own rows
of the catalog::

    jax.distributed.initialize(coordinator_address="10.0.0.1:1234", num_processes=P, process_id=i)
    rows = process_rows(n_total)            # this process's contiguous block of halos
    data, weight = shard_halos(prepare(z[rows], lum_obs[rows], prior), n_total=n_total)
    log_likelihood(hyper, data, weight)     # the whole catalog's value, in every process

The 2017 importance-sampling likelihood (:func:`is_log_likelihood`, one process) splits the
catalog's blocks of halos across the devices; each block draws the normals it draws on one
device, so only the order of the final sum differs. The halo-mass draws (mass maps, the
fit's masses) and the PPC's replicated catalogs take their per-halo arrays from
:func:`split_halo_arrays` and draw exactly the one-device numbers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bigmali.likelihood.catalog_is import MAX_ELEMENTS, _block_sums, _in_blocks, _layout
from bigmali.likelihood.quadrature import CollapsedData, QuadratureConfig, log_likelihood_halos
from bigmali.likelihood.single_halo import HaloData
from bigmali.mass_prior import MassPrior
from bigmali.relation import Hyper

__all__ = [
    "HALO_AXIS",
    "HALO_FIELDS",
    "halo_mesh",
    "process_rows",
    "shard_halos",
    "log_likelihood",
    "is_log_likelihood",
    "split_halo_arrays",
]

HALO_AXIS = "halos"
"""The mesh axis the halos are split along."""

HALO_FIELDS = ("y", "ln1pz", "row_lo", "row_hi", "w_hi", "obs_err", "y_lim")
"""The fields of :class:`CollapsedData` with one entry per halo (``obs_err`` and ``y_lim``
where the catalog has them, None otherwise); the rest are the prior's."""


def halo_mesh(devices=None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (HALO_AXIS,))


def process_rows(n_total: int) -> slice:
    """The rows of an ``n_total``-halo catalog this process holds: equal contiguous blocks
    in process order (the last may be shorter)."""
    per = -(-n_total // jax.process_count())
    start = min(n_total, jax.process_index() * per)
    return slice(start, min(n_total, start + per))


def shard_halos(data: CollapsedData, n_total: int | None = None, mesh: Mesh | None = None):
    """``data`` placed on ``mesh`` (default :func:`halo_mesh`), split along the halo axis, and
    the weight of each halo (1, or 0 for padding), split the same way.

    In one process ``data`` holds every halo. Under :func:`jax.distributed.initialize` it holds
    this process's rows (:func:`process_rows` of ``n_total``), and the arrays returned are
    global: each process contributes its block.
    """
    mesh = halo_mesh() if mesh is None else mesh
    if data.count is not None:
        raise ValueError("the extended likelihood's expected count is not sharded: shard the truncated one")
    data = data._replace(detection_sum=None)  # each device reads its own halos' detection terms
    n_local = int(np.shape(data.y)[0])
    n_total = n_local if n_total is None else int(n_total)
    n_proc = jax.process_count()
    if n_local < 1:
        raise ValueError(f"process {jax.process_index()} holds no halos: use fewer processes than halos")
    rows = process_rows(n_total)
    if n_local != rows.stop - rows.start:
        raise ValueError(
            f"process {jax.process_index()} holds {n_local} halos, but its block of {n_total} is "
            f"{rows}: give each process its rows from process_rows(n_total)"
        )
    local_devices = mesh.size // n_proc
    per_process = -(-n_total // n_proc)
    local_len = -(-per_process // local_devices) * local_devices  # the same in every process
    pad = local_len - n_local
    split, whole = NamedSharding(mesh, P(HALO_AXIS)), NamedSharding(mesh, P())

    def halo_array(values):
        values = np.asarray(values)
        values = np.concatenate([values, np.repeat(values[-1:], pad, axis=0)])
        return jax.make_array_from_process_local_data(split, values, (local_len * n_proc,))

    def prior_array(values):
        values = np.asarray(values)
        return jax.make_array_from_process_local_data(whole, values, values.shape)

    placed = {
        f: None if getattr(data, f) is None else (halo_array if f in HALO_FIELDS else prior_array)(getattr(data, f))
        for f in data._fields
    }
    weight = np.zeros(n_local + pad)
    weight[:n_local] = 1.0
    return CollapsedData(**placed), jax.make_array_from_process_local_data(split, weight, (local_len * n_proc,))


def split_halo_arrays(arrays, mesh: Mesh | None = None):
    """Per-halo arrays (halo axis first; None passes through) in one process, padded to a
    multiple of ``mesh``'s devices (default :func:`halo_mesh`) by repeating the last halo and
    placed with the halo axis split across them (a :class:`~jax.sharding.NamedSharding`).

    Jitted elementwise work on them (halo-mass draws, replicated catalogs) is split across
    the devices by XLA. One-dimensional ``jax.random`` draws over the padded axis begin with
    the unpadded draws (JAX's threefry is partitionable, its default), so a caller that cuts the results
    back to the catalog's halos gets the one-device numbers exactly."""
    mesh = halo_mesh() if mesh is None else mesh
    split = NamedSharding(mesh, P(HALO_AXIS))

    def place(values):
        values = jnp.asarray(values)
        pad = -values.shape[0] % mesh.size
        return jax.device_put(jnp.concatenate([values, jnp.repeat(values[-1:], pad, axis=0)]), split)

    return [None if a is None else place(a) for a in arrays]


def log_likelihood(
    hyper: Hyper, data: CollapsedData, weight, mesh: Mesh | None = None, config: QuadratureConfig = QuadratureConfig()
):
    """The total collapsed log-likelihood of sharded ``data`` (:func:`shard_halos`, on
    ``mesh``, default :func:`halo_mesh`): each halo's term times its weight, summed;
    differentiable in ``hyper``. Traceable (jit it, or take its gradient, as a whole)."""
    return _sharded_total(halo_mesh() if mesh is None else mesh, config)(hyper, data, weight)


@lru_cache(maxsize=16)
def _sharded_total(mesh: Mesh, config: QuadratureConfig):
    """Each device interpolates the prior's table to theta (it does not depend on the halos) and its own
    halos' weighted sum, by :func:`~bigmali.likelihood.quadrature.log_likelihood_halos`
    unchanged; one all-reduce adds the sums. (Left to GSPMD, the partitioned per-halo gather
    and tail correction ran 80x slower than one device.)"""
    specs = CollapsedData(*(P(HALO_AXIS) if f in HALO_FIELDS else P() for f in CollapsedData._fields))

    def local(hyper, data, weight):
        return jax.lax.psum(jnp.sum(weight * log_likelihood_halos(hyper, data, config)), HALO_AXIS)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), specs, P(HALO_AXIS)), out_specs=P()))


def is_log_likelihood(
    key,
    hyper: Hyper,
    data: HaloData,
    prior: MassPrior,
    n: int = 100,
    clip: bool = True,
    max_elements: int = MAX_ELEMENTS,
    proposal: Hyper | None = None,
    mesh: Mesh | None = None,
):
    """:func:`bigmali.likelihood.catalog_is.is_log_likelihood` with the halos' blocks split
    across ``mesh``'s devices (default :func:`halo_mesh`; one process, ``data`` holds every
    halo). The blocks are the one-device layout's, padded with whole blocks to a multiple of
    the device count; block ``b`` draws from ``fold_in(key, b)`` wherever it runs, so each
    halo's estimate is the one-device estimate and only the sum's order differs.
    Differentiable in ``hyper``."""
    mesh = halo_mesh() if mesh is None else mesh
    n_halos = int(data.ln_lobs.shape[0])
    chunk, n_chunks, block, n_blocks = _layout(n_halos, n, max_elements)
    per_device = -(-n_blocks // mesh.size)
    blocks = _in_blocks(data, per_device * mesh.size, block)
    real = (np.arange(per_device * mesh.size * block) < n_halos).reshape(-1, block)
    total = _sharded_is_total(mesh, n, clip, chunk, n_chunks, per_device)
    return total(key, hyper, blocks, jnp.asarray(real), prior, proposal)


@lru_cache(maxsize=16)
def _sharded_is_total(mesh: Mesh, n: int, clip: bool, chunk: int, n_chunks: int, per_device: int):
    """Each device its ``per_device`` consecutive blocks (global indices from its position on
    the mesh), the real halos' estimates summed; one all-reduce adds the sums."""

    def local(key, hyper, blocks, real, prior, proposal):
        ids = jax.lax.axis_index(HALO_AXIS) * per_device + jnp.arange(per_device)
        lse, _ = _block_sums(key, hyper, blocks, ids, prior, n, clip, chunk, n_chunks, proposal)
        return jax.lax.psum(jnp.sum(jnp.where(real, lse - math.log(n), 0.0)), HALO_AXIS)

    split = P(HALO_AXIS)
    return jax.jit(
        # check_vma off: the per-block scans start from unvarying carries.
        jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), split, split, P(), P()), out_specs=P(), check_vma=False)
    )
