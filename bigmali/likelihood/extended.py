"""The extended likelihood of a flux-limited survey: the number of detected halos counts too.

When the survey's sky area and redshift range are known, the detected halos are a Poisson
process in (z, L_obs) with intensity ``dN/dz(z) P(L_obs | z, theta)`` above the limit, where
``dN/dz`` is the expected number of halos per unit redshift in the field
(:func:`bigmali.mass_prior.expected_dndz`: the prior's abundance times the comoving volume).
Its likelihood is

.. math:: \\mathcal{L}(\\theta) = e^{-\\Lambda(\\theta)} \\prod_k \\frac{dN}{dz}(z_k)\\,
    P(L_{obs,k} \\mid z_k, \\theta), \\qquad
    \\Lambda(\\theta) = \\int_{z_{min}}^{z_{max}} \\frac{dN}{dz}(z)\\,
    P(L_{obs} > L_{lim}(z) \\mid z, \\theta)\\, dz,

so each halo keeps its complete-catalog likelihood (not divided by its detection
probability), and the expected count ``Lambda`` enters once. ``dN/dz(z_k)`` does not depend on
theta and is dropped. Against the truncated likelihood it also uses the number of detected
halos and their redshift distribution, both of which depend on theta through the detection
probability; so it is tighter, above all on the normalisation alpha1 and on S. It is right
only when the field, the redshift window and the mass function's abundance are right: a
catalog cut in ways the limit does not describe (masks, incompleteness) biases it, where the
truncated likelihood does not care.

``Lambda`` is a quadrature: Gauss-Legendre in z on every interval between the prior's table
redshifts and the limit table's rows (where ``P_det`` has kinks or jumps), and, for catalogs
with per-halo errors, a quadrature over the error distribution of the parent halos, which a
survey does not observe for the halos it missed: log-uniform over ``(ERR_LO, ERR_HI)`` when the
catalog's metadata records the range it was drawn from (``bigmali simulate --lum-obs-err``),
else the detected halos' own errors (their quantiles), which assumes the error does not
depend on detection. Each node's ``P_det`` is the exact detection probability of
:func:`bigmali.likelihood.quadrature.log_detection_probability`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigmali.likelihood.detection import nodes_at_limit, segment_edges
from bigmali.likelihood.quadrature import CollapsedData, expected_count
from bigmali.mass_prior import MassPrior, expected_dndz

__all__ = ["CountData", "prepare_count", "expected_count", "ERROR_NODES", "Z_NODES"]

Z_NODES = 8  # Gauss-Legendre nodes per redshift interval
ERROR_NODES = 8  # nodes of the parent halos' error distribution


class CountData(NamedTuple):
    """The expected count's quadrature: its nodes as halos at their flux limits, and the
    log of each node's weight (``dN/dz dz`` times the error distribution's weight)."""

    nodes: CollapsedData
    log_weight: jax.Array
    n_parent: float  # expected parent halos in the window (the weights' sum)


def _z_nodes(prior: MassPrior, flux_limit, z_min: float, z_max: float):
    edges = segment_edges(prior, flux_limit, z_min, z_max)
    x, w = np.polynomial.legendre.leggauss(Z_NODES)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    z = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    return z, (half[:, None] * w[None, :]).ravel()


def _error_nodes(lum_obs_err, meta):
    """The parent halos' errors and their weights (see the module docstring), or (None, [1])."""
    if lum_obs_err is None:
        return None, np.ones(1)
    if "ERR_LO" in meta and "ERR_HI" in meta:
        lo, hi = math.log(float(meta["ERR_LO"])), math.log(float(meta["ERR_HI"]))
        if hi > lo:
            x, w = np.polynomial.legendre.leggauss(ERROR_NODES)
            return np.exp(0.5 * (lo + hi) + 0.5 * (hi - lo) * x), 0.5 * w
        return np.array([math.exp(lo)]), np.ones(1)
    q = (np.arange(ERROR_NODES) + 0.5) / ERROR_NODES
    return np.quantile(np.asarray(lum_obs_err, dtype=np.float64), q), np.full(ERROR_NODES, 1.0 / ERROR_NODES)


def prepare_count(prior: MassPrior, flux_limit, survey, lum_obs_err=None, meta=None) -> CountData:
    """The expected count's nodes for a limit (constant or table) and a survey window
    (:class:`bigmali.selection.Survey`); ``lum_obs_err`` and ``meta`` are the catalog's
    errors and metadata (for the parent halos' error distribution)."""
    if flux_limit.kind == "column":
        raise ValueError(
            "the extended likelihood needs the limit at every redshift, also where no halo was detected: "
            "give a constant or a table, not the catalog's column lum_lim"
        )
    z_max = float(prior.z_grid[-1]) if survey.z_max is None else survey.z_max
    if z_max > float(prior.z_grid[-1]):
        raise ValueError(f"survey z_max {z_max:g} is beyond the mass prior's last table ({float(prior.z_grid[-1]):g})")
    z, dz_weight = _z_nodes(prior, flux_limit, survey.z_min, z_max)
    z_weight = expected_dndz(prior, survey.solid_angle, z) * dz_weight
    err, err_weight = _error_nodes(lum_obs_err, meta or {})
    ln_lim = flux_limit.ln_limit_at(z)
    n_err = err_weight.size
    z_all, lim_all = np.repeat(z, n_err), np.repeat(ln_lim, n_err)
    weight = np.repeat(z_weight, n_err) * np.tile(err_weight, z.size)
    err_all = None if err is None else np.tile(err, z.size)
    nodes = nodes_at_limit(z_all, lim_all, prior, err_all, lum_obs_err)
    return CountData(nodes, jnp.log(jnp.asarray(weight)), float(weight.sum()))
