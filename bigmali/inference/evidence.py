"""The evidence (marginal likelihood) of the collapsed model for a catalog under a mass prior.

.. math:: Z = p(L_{obs} \\mid \\text{mass prior}) = \\int p(\\theta)\\, \\prod_k P(L_{obs,k} \\mid \\theta)\\, d\\theta

over the four hyperparameters, each halo's term the exact collapsed likelihood. The integral
is computed by importance sampling from a multivariate Student-t (``df`` degrees of freedom)
centred on the Laplace approximation of the posterior, in the model's standardised
coordinates (where the hyperprior is a unit normal and the posterior nearly Gaussian):

.. math:: \\hat Z = \\frac1K \\sum_s w_s,\\qquad w_s = \\frac{p(\\theta_s) P(L_{obs}\\mid\\theta_s)}{q(\\theta_s)}.

The t's heavier tails keep the weights bounded where the posterior is slightly wider than
its Laplace fit. The error is the delta-method standard error of ``ln Z_hat``,
``sqrt(1/ESS - 1/K)`` with ESS the weights' effective sample size, trusted while ArviZ's
Pareto k-hat of the weights is below 0.7 (reported beside it). ``ln Z`` is per unit
``L_obs`` of every halo, like the likelihood, so two priors' values compare directly on the
same catalog: their difference is the log Bayes factor.

The same weighted draws are the posterior under that prior (PSIS-smoothed weights):
:mod:`bigmali.diagnostics.model_comparison` uses them for LOO and the fitted values.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bigmali.catalog import Catalog
from bigmali.mass_prior import MassPrior
from bigmali.relation import HYPER_NAMES
from bigmali.utils import progress_bar
from bigmali.weights import psis, weight_ess

__all__ = ["Evidence", "log_evidence", "quadrature_log_evidence"]


class Evidence(NamedTuple):
    """The evidence of one catalog under one mass prior.

    Attributes:
        log_evidence: ln Z (per unit L_obs of every halo).
        error: standard error of ``log_evidence`` (delta method, ``sqrt(1/ESS - 1/K)``).
        pareto_k: ArviZ's k-hat of the importance weights (> 0.7: the error is not reliable).
        ess: the weights' effective sample size.
        samples: ``{name: (K,)}`` hyperparameter draws from the proposal.
        log_weight: (K,) PSIS-smoothed normalised log weights: the posterior.
        seconds: wall time.
    """

    log_evidence: float
    error: float
    pareto_k: float
    ess: float
    samples: dict
    log_weight: np.ndarray
    seconds: float


def _whitened(catalog: Catalog, prior: MassPrior):
    """The collapsed model's compiled :class:`~bigmali.inference.laplace.Whitener` (one per
    catalog size and prior), its arguments, and the Laplace mode and Cholesky factor."""
    from bigmali.inference.engines import fit_data
    from bigmali.inference.laplace import whitener
    from bigmali.selection import resolve_flux_limit

    data = fit_data(catalog, prior, "collapsed", flux_limit=resolve_flux_limit(None, catalog)[0])
    model, args = data.model_fn, data.model_args
    w = whitener(model, args)
    return w, args, *w.start(args)


@partial(jax.jit, static_argnums=(0, 4))
def _proposal_draws(df: float, center, chol, key, n: int):
    """``n`` draws of the multivariate Student-t proposal and its log density at each."""
    import numpyro.distributions as dist

    proposal = dist.MultivariateStudentT(df, center, chol)
    flat = proposal.sample(key, (n,))
    return flat, proposal.log_prob(flat)


def log_evidence(
    catalog: Catalog, prior: MassPrior, *, n_draws: int = 4000, df: float = 7.0, seed: int = 0, progress: bool = False
) -> Evidence:
    """ln Z of the collapsed model for ``catalog`` under ``prior`` (module docstring)."""
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 100:
        raise ValueError(f"n_draws = {n_draws!r}: the evidence needs an integer >= 100 of importance draws")
    if not df > 2:
        raise ValueError(f"df = {df!r}: the proposal's degrees of freedom must exceed 2 (finite variance)")
    start = time.perf_counter()
    key = jax.random.PRNGKey(seed)
    w, args, center, chol = _whitened(catalog, prior)
    flat, log_q = _proposal_draws(float(df), center, chol, jax.random.fold_in(key, 2), n_draws)
    with progress_bar(n_draws, progress, "evidence: exact posterior at the proposal's draws") as bar:
        log_post, constrained = w.evaluate(flat, args, bar)
    log_w = np.asarray(log_post) - np.asarray(log_q)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    log_z = float(logsumexp(log_w) - math.log(n_draws))
    ess = weight_ess(log_w)
    smoothed, k_hat = psis(log_w)
    return Evidence(
        log_evidence=log_z,
        error=float(math.sqrt(max(1.0 / ess - 1.0 / n_draws, 0.0))),
        pareto_k=k_hat,
        ess=ess,
        samples={name: np.asarray(constrained[name], dtype=np.float64) for name in HYPER_NAMES},
        log_weight=smoothed,
        seconds=time.perf_counter() - start,
    )


def quadrature_log_evidence(catalog: Catalog, prior: MassPrior, n_nodes: int = 8) -> float:
    """A reference ln Z by dense 4-D Gauss-Hermite quadrature (``n_nodes``^4 exact
    posterior evaluations) in the Laplace-whitened coordinates: exact for a posterior that is
    a Gaussian times a polynomial of degree < 2 ``n_nodes``. For tests and benchmarks."""
    import itertools

    w, args, center, chol = _whitened(catalog, prior)
    t1, w1 = np.polynomial.hermite_e.hermegauss(n_nodes)
    log_w1 = np.log(w1 / math.sqrt(2.0 * math.pi))
    t = np.array(list(itertools.product(t1, repeat=w.dim)))
    log_w = np.array(list(itertools.product(log_w1, repeat=w.dim))).sum(axis=1)
    chol = np.asarray(chol)
    x = jnp.asarray(np.asarray(center) + t @ chol.T)
    log_post, _ = w.evaluate(x, args)
    log_phi = -0.5 * np.sum(t * t, axis=1) - 0.5 * w.dim * math.log(2.0 * math.pi)
    log_det = float(np.sum(np.log(np.diag(chol))))
    return float(log_det + logsumexp(log_post + log_w - log_phi))
