"""NUTS on the importance-sampling likelihood with fixed common random numbers.

The proposal's draws are fixed once for the whole run: one key, and the 2017 proposal
built at fixed hyperparameters (the hyperprior mean) rather than at each ``theta``. Then
the estimate ``ln L_hat(theta)`` is a smooth deterministic function of ``theta`` — a
simulated likelihood — and NUTS can follow its gradient. (With the proposal rebuilt at
every ``theta`` as in 2017, the draws move with ``theta``; a draw crossing the prior's cliff
at the lowest tabulated mass changes its weight by ~20 orders of magnitude, and the
pathwise gradient misses those jumps: on a 2,000-halo mock it was +5,549 in alpha1
against the exact -26, at any n.) It is not the likelihood: each
halo's term is the log of an n-sample average, biased low by about ``var(w) / (2 n mean(w)^2)``,
and that bias depends on ``theta``, so the posterior it gives is shifted by an amount that
shrinks like ``1 / n``. Running it at several ``n`` and comparing with collapsed NUTS shows
the shift (``benchmarks/importance_sampling.py``).
"""

from __future__ import annotations

import jax
import numpyro

from bigmali.likelihood.catalog_is import is_log_likelihood
from bigmali.likelihood.single_halo import HaloData
from bigmali.mass_prior import MassPrior
from bigmali.models.common import sample_hyper
from bigmali.relation import HYPERPRIOR_MEAN

__all__ = ["model", "fixed_key"]


def model(halo_data: HaloData, prior: MassPrior, key, is_samples: int = 100, clip: bool = False, mesh=None):
    """Hyperprior, plus the importance-sampling log-likelihood with the fixed draws of ``key``
    (``mesh``: the halos split across this device mesh, the same estimate)."""
    hyper = sample_hyper()
    estimate = is_log_likelihood(key, hyper, halo_data, prior, is_samples, clip, proposal=HYPERPRIOR_MEAN, mesh=mesh)
    numpyro.factor("is_log_likelihood", estimate)


def fixed_key(seed: int):
    """The common random numbers' key of a run with this seed."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 7919)
