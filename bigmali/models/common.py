"""Pieces every NumPyro model shares: the hyperprior sites and the catalog's halo plate."""

from __future__ import annotations

import numpyro
import numpyro.distributions as dist
from numpyro.infer.reparam import LocScaleReparam

from bigmali.relation import HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD, Hyper

__all__ = ["sample_hyper", "HYPER_REPARAM"]

HYPER_REPARAM = {name: LocScaleReparam(centered=0.0) for name in HYPER_NAMES}
"""Each hyperparameter is sampled as a standard normal ``<name>_decentered`` and scaled by
the hyperprior. The hyperprior is narrow (alpha2's sd is 0.009), so this puts every latent
on unit scale from the first step; the dense mass matrix then learns the correlations."""


def sample_hyper() -> Hyper:
    """Sample alpha1, alpha2, alpha4 and S from the independent normal hyperprior."""
    with numpyro.handlers.reparam(config=HYPER_REPARAM):
        values = [numpyro.sample(name, dist.Normal(mean, sd)) for name, mean, sd in zip(HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD)]
    return Hyper(*values)
