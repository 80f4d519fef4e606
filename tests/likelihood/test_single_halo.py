"""The 2017 single-halo estimators against the exact collapsed likelihood."""

import jax
import numpy as np
import pytest

from bigmali.likelihood import quadrature as Q
from bigmali.likelihood import single_halo as H
from bigmali.relation import HYPERSEED


@pytest.fixture(scope="module")
def mock(small_mock):
    return small_mock


@pytest.fixture(scope="module")
def halos(mock):
    """Typical, faintest and brightest halo of the mock, and two 100x beyond its extremes."""
    r = np.log(mock.lum_obs)
    idx = [int(np.argmin(abs(r - np.median(r)))), int(np.argmin(r)), int(np.argmax(r))]
    z = np.concatenate([mock.z[idx], [0.5, 0.5]])
    lum = np.concatenate([mock.lum_obs[idx], [mock.lum_obs.max() * 100, mock.lum_obs.min() / 100]])
    return z, lum


def test_numerical_integration_matches_the_exact_collapsed_likelihood(halos, prior):
    # Two independent computations: a 2-D grid in (ln M, ln L) against the collapsed model's
    # quadrature with its closed-form background (the extreme pair lives on the background).
    z, lum = halos
    grid = np.asarray(H.numerical_integration(HYPERSEED, H.halo_data(z, lum, prior), prior).log_like)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior)))
    np.testing.assert_allclose(grid[:3], exact[:3], atol=2e-3)
    np.testing.assert_allclose(grid[3:], exact[3:], atol=1e-2)


def _unbiased_is_ratios(data, exact, prior):
    """The mean over 12 keys of the unclipped IS estimate over the exact value, per halo,
    asserted within 4 standard errors of 1 (an unbiased estimator); returned."""
    ratios = np.array(
        [
            np.exp(
                np.asarray(
                    H.importance_sampling(jax.random.PRNGKey(s), HYPERSEED, data, prior, n=4000, clip=False).log_like
                )
                - exact
            )
            for s in range(12)
        ]
    )
    se = ratios.std(axis=0, ddof=1) / np.sqrt(12)
    assert np.all(np.abs(ratios.mean(axis=0) - 1.0) < np.maximum(4 * se, 1e-3)), (ratios.mean(0), se)
    return ratios.mean(axis=0)


def test_importance_sampling_without_clipping_is_unbiased_and_the_2017_clipping_is_not(halos, prior):
    z, lum = halos
    z, lum = z[:3], lum[:3]
    data = H.halo_data(z, lum, prior)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior)))
    assert np.all(np.abs(_unbiased_is_ratios(data, exact, prior) - 1.0) < 0.03)
    # Clipping masses into the table while keeping the unclipped proposal density overweights
    # the lowest mass: the typical halo comes out ~45% high, the faintest many times over.
    clipped = np.exp(
        np.asarray(H.importance_sampling(jax.random.PRNGKey(0), HYPERSEED, data, prior, n=4000).log_like) - exact
    )
    assert clipped[0] > 1.2 and clipped[1] > 3.0


def test_simple_monte_carlo_fails_on_the_bright_halo_and_laplace_is_finite(halos, prior):
    z, lum = halos
    data = H.halo_data(z[:3], lum[:3], prior)
    mc = H.simple_monte_carlo(jax.random.PRNGKey(0), HYPERSEED, data, prior, n=1000)
    assert float(mc.n_eff[2]) < 5 and float(mc.n_eff[0]) > 100
    lap = np.asarray(H.laplace(HYPERSEED, data, prior).log_like)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z[:3], lum[:3], prior)))
    assert np.all(np.isfinite(lap))
    assert 0.5 < np.exp(lap[0] - exact[0]) < 2.0  # a typical halo: right to a factor of 2


def test_the_2017_estimators_use_each_halos_own_error(halos, prior):
    """With per-halo errors, the answer key and the unclipped importance sampler agree with
    the exact collapsed likelihood at those errors (as above without them)."""
    z, lum = (v[:3] for v in halos)
    err = np.array([0.02, 0.1, 0.3])
    data = H.halo_data(z, lum, prior, err)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, lum_obs_err=err)))
    grid = np.asarray(H.numerical_integration(HYPERSEED, data, prior).log_like)
    np.testing.assert_allclose(grid, exact, atol=2e-3)
    _unbiased_is_ratios(data, exact, prior)
    # ... and the errors matter: with sigma_obs for all the exact values differ.
    fixed = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior)))
    assert np.abs(fixed - exact).max() > 0.05
