"""Likelihoods of a halo's observed luminosity with its mass (and true luminosity) integrated out.

* :mod:`.quadrature`: the exact collapsed likelihood, fast and differentiable;
* :mod:`.single_halo`: the 2017 single-halo estimators (numerical integration, simple Monte
  Carlo, importance sampling, Laplace) and the reference integration;
* :mod:`.catalog_is`: a catalog's importance-sampled log-likelihood, in bounded memory.

Each is written in terms of :mod:`bigmali.relation` and :mod:`bigmali.mass_prior` only.
"""
