"""Every method's result as one ArviZ DataTree, saved to and loaded from netCDF.

Groups: ``posterior`` (alpha1, alpha2, alpha4, S), ``sample_stats``, ``observed_data``
(lum_obs per halo), ``constant_data`` (z, and ra, dec, true mass and luminosity when the
catalog has them), ``prior`` (hyperprior draws), ``halo_mass`` (ln M per halo for a
thinned set of posterior draws), ``log_likelihood`` (each halo's collapsed log-likelihood, for
LOO; evenly thinned draws on large catalogs), and for NUTS ``sampler_state`` (what extending a run
needs). The root's attrs hold the model, the method, the number of halos, the wall time,
the run's configuration and the mass-prior options, as JSON where they are structured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from bigmali.relation import HYPER_NAMES

__all__ = ["build_datatree", "save_run", "load_run", "attr_json"]


def build_datatree(*, posterior: dict, sample_stats: dict, catalog, prior_draws: dict | None, attrs: dict,
                   halo_ln_mass: np.ndarray | None = None, halo_mass_draw: np.ndarray | None = None,
                   sampler_state: dict | None = None, log_likelihood: tuple | None = None) -> xr.DataTree:
    import arviz_base as az

    constant = {"z": catalog.z}
    for name, column in (("ra", "ra"), ("dec", "dec"), ("mass_true", "mass"), ("lum_true", "lum")):
        values = getattr(catalog, column)
        if values is not None:
            constant[name] = values
    groups = {
        "posterior": {k: posterior[k] for k in HYPER_NAMES},
        "sample_stats": sample_stats,
        "observed_data": {"lum_obs": catalog.lum_obs},
        "constant_data": constant,
    }
    if prior_draws is not None:
        groups["prior"] = prior_draws
    dims = {"lum_obs": ["halo"], **{k: ["halo"] for k in constant}}
    tree = az.from_dict(groups, dims=dims)
    if halo_ln_mass is not None:
        tree["halo_mass"] = xr.DataTree(xr.Dataset(
            {"ln_mass": (("chain", "draw", "halo"), halo_ln_mass.astype(np.float32))},
            coords={"draw": halo_mass_draw},
            attrs={"doc": "ln M (Msun) per halo for thinned posterior draws; `draw` indexes the posterior's draws"},
        ))
    if log_likelihood is not None:
        values, draw = log_likelihood
        tree["log_likelihood"] = xr.DataTree(xr.Dataset(
            {"lum_obs": (("chain", "draw", "halo"), values)}, coords={"chain": tree["posterior"]["chain"].values, "draw": draw},
            attrs={"doc": "ln P(L_obs | alpha) per halo, its mass integrated out; `draw` indexes the posterior's draws"},
        ))
    if sampler_state is not None:
        tree["sampler_state"] = xr.DataTree(xr.Dataset({
            "position": (("chain", "latent"), sampler_state["position"]),
            "step_size": (("chain",), sampler_state["step_size"]),
            "inverse_mass_matrix": (("chain",) + (("latent", "latent2") if sampler_state["inverse_mass_matrix"].ndim == 3 else ("latent",)),
                                    sampler_state["inverse_mass_matrix"]),
        }))
    tree.attrs.update({k: (json.dumps(v) if v is None or isinstance(v, (dict, list, tuple)) else v) for k, v in attrs.items()})
    return tree


def save_run(tree: xr.DataTree, path) -> Path:
    """Write a run to netCDF (one file, every group)."""
    path = Path(path)
    tree.to_netcdf(path)
    return path


def load_run(path) -> xr.DataTree:
    """Read a run written by :func:`save_run`, fully into memory."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read run {str(path)!r}: no such file")
    try:
        with xr.open_datatree(path) as tree:
            return tree.load()
    except Exception as exc:  # netCDF libraries raise many kinds
        raise ValueError(f"cannot read run {str(path)!r}: {exc}") from None


def attr_json(tree: xr.DataTree, name: str, default=None):
    """A structured attribute of the run (stored as JSON)."""
    value = tree.attrs.get(name)
    return default if value is None else json.loads(value)
