"""A catalog's importance-sampled likelihood: bounded memory, and its gradient with a fixed proposal."""

import jax
import numpy as np
import pytest

import bigmali
from bigmali.likelihood import quadrature as Q
from bigmali.likelihood import single_halo as H
from bigmali.likelihood.catalog_is import is_log_likelihood, is_log_likelihood_halos
from bigmali.relation import HYPERPRIOR_MEAN, HYPERSEED


@pytest.fixture(scope="module")
def mock(small_mock):
    return small_mock


@pytest.mark.parametrize("n,max_elements", [(3000, 1000), (2500, 1000), (200, 1 << 21)])
def test_catalog_is_likelihood_in_bounded_chunks(mock, prior, n, max_elements):
    # 200 halos; chunks of samples (the last one partial when n = 2500) or whole blocks.
    z, lum = mock.z[:200], mock.lum_obs[:200]
    data = H.halo_data(z, lum, prior)
    exact = float(Q.log_likelihood(HYPERPRIOR_MEAN, Q.prepare(z, lum, prior)))
    est = is_log_likelihood_halos(jax.random.PRNGKey(3), HYPERPRIOR_MEAN, data, prior, n, False, max_elements)
    assert est.log_like.shape == (200,) and np.all((np.asarray(est.n_eff) > 0) & (np.asarray(est.n_eff) <= n + 1e-6))
    # Per-halo relative sd ~ 1/sqrt(n_eff); summed over 200 halos the sd is ~0.3 at n = 2500
    # and ~1.3 at n = 200 (and the log's bias ~ -200 / (2 n_eff)): 6 sd bounds.
    tolerance = 6 * np.sqrt(np.sum(1.0 / np.asarray(est.n_eff))) + np.sum(0.5 / np.asarray(est.n_eff))
    assert abs(float(est.log_like.sum()) - exact) < tolerance
    # The same key gives the same numbers (common random numbers); another key does not.
    again = is_log_likelihood(jax.random.PRNGKey(3), HYPERPRIOR_MEAN, data, prior, n, False, max_elements)
    assert float(again) == float(est.log_like.sum())
    assert float(
        is_log_likelihood(jax.random.PRNGKey(4), HYPERPRIOR_MEAN, data, prior, n, False, max_elements)
    ) != float(again)


def test_fixed_proposal_gives_the_gradient_of_the_likelihood(mock, prior):
    """With the proposal held at fixed hyperparameters the simulated likelihood is smooth and
    its gradient converges to the exact one (the 2017 proposal rebuilt at each theta does not)."""
    z, lum = mock.z[:500], mock.lum_obs[:500]
    data = H.halo_data(z, lum, prior)
    theta = jax.numpy.asarray(HYPERSEED)
    exact = np.asarray(jax.grad(lambda t: Q.log_likelihood(bigmali.Hyper(*t), Q.prepare(z, lum, prior)))(theta))
    fixed = np.asarray(
        jax.grad(
            lambda t: is_log_likelihood(
                jax.random.PRNGKey(0), bigmali.Hyper(*t), data, prior, 4000, False, proposal=HYPERPRIOR_MEAN
            )
        )(theta)
    )
    moving = np.asarray(
        jax.grad(lambda t: is_log_likelihood(jax.random.PRNGKey(0), bigmali.Hyper(*t), data, prior, 4000, False))(theta)
    )
    scale = np.abs(exact) + 50.0  # Monte Carlo error of the gradient is a few tens here
    assert np.all(np.abs(fixed - exact) < 0.5 * scale), (fixed, exact)
    assert np.any(np.abs(moving - exact) > 5 * scale), (moving, exact)
