"""The collapsed likelihood: agreement with brute-force quadrature, gradients, outliers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigmali
from bigmali.likelihood import quadrature as Q
from bigmali.relation import HYPERSEED, Hyper


@pytest.fixture(scope="module")
def mock(prior):
    return bigmali.simulate(prior, n_halos=3000, seed=11)


def test_matches_an_exact_reference_per_halo(prior, mock):
    """Against a table with 8-point Gauss-Legendre per knot interval, half the rho step and
    levels of ln w 0.005 apart around the hyperseed's w (exact to ~1e-11)."""
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z, mock.lum_obs, prior)))
    fine = Q.TableGrid(gl_order=8, rho_step=0.025, w_min=0.44, w_max=0.48, ln_w_step=0.005)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z, mock.lum_obs, prior, fine)))
    assert np.abs(fast - exact).max() < 1e-7
    # Scaled to 115,919 halos the total error stays far below the 0.01 target.
    assert abs(np.mean(fast - exact)) * 115_919 < 1e-3


def test_matches_brute_force_simpson_with_1e4_masses(prior, mock):
    """The brute-force reference shares only the prior density and the lognormal with the fast path."""
    sub = slice(0, 500)
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z[sub], mock.lum_obs[sub], prior)))
    ref = Q.reference_log_likelihood_halos(HYPERSEED, mock.z[sub], mock.lum_obs[sub], prior)
    # Simpson with 1e4 points is itself good to ~1e-7 per halo (kinks at the knots).
    assert np.abs(fast - ref).max() < 2e-7


def test_linear_z_mode_matches_its_reference(prior_linear, mock):
    sub = slice(0, 300)
    data = Q.prepare(mock.z[sub], mock.lum_obs[sub], prior_linear)
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, data, Q.QuadratureConfig(linear=True)))
    ref = Q.reference_log_likelihood_halos(HYPERSEED, mock.z[sub], mock.lum_obs[sub], prior_linear)
    assert np.abs(fast - ref).max() < 2e-7


def test_gradient_matches_finite_differences(prior, mock):
    data = Q.prepare(mock.z, mock.lum_obs, prior)
    f = jax.jit(lambda th: Q.log_likelihood(Hyper(*th), data))
    theta = jnp.array(HYPERSEED)
    grad = jax.grad(f)(theta)
    for i, h in enumerate((1e-6, 1e-7, 1e-6, 1e-7)):
        e = jnp.zeros(4).at[i].set(h)
        fd = (f(theta + e) - f(theta - e)) / (2 * h)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-2)


def test_extreme_halos_give_finite_values_and_gradients(prior, mock):
    """Halos 100x brighter or fainter than anything in the mock: finite, and the background explains them."""
    lum = np.concatenate([mock.lum_obs[:200], [mock.lum_obs.max() * 100, mock.lum_obs.min() / 100, 1e-3, 1e12]])
    z = np.concatenate([mock.z[:200], [0.5, 0.5, 3.0, 0.01]])
    data = Q.prepare(z, lum, prior)
    values = Q.log_likelihood_halos(HYPERSEED, data)
    grad = jax.grad(lambda th: Q.log_likelihood(Hyper(*th), data))(jnp.array(HYPERSEED))
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
    # Far outside the tabulated masses the 1e-30 background carries the halo: its ln-likelihood
    # is far below the typical halo's but finite, and grows with distance only like ln M.
    assert np.all(values[-4:] < values[:200].min())


def test_without_background_is_still_finite(mock):
    bare = bigmali.load_mass_prior(background=None)
    lum = np.concatenate([mock.lum_obs[:50], [mock.lum_obs.max() * 100]])
    values = Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z[:51], lum, bare))
    assert np.all(np.isfinite(values))


def test_more_outliers_than_the_exact_tail_handles_stay_finite_and_close(prior, mock):
    """Halos beyond the rho grid (here 10^4 times brighter than the brightest, 40 sigma beyond
    the background's top) get the edge continued as a Gaussian tail, the first
    Q._MAX_BEYOND of them; the rest are held at the grid's edge value: finite, with finite
    gradients."""
    from bigmali.likelihood import single_halo as H

    n_out = Q._MAX_BEYOND + 20
    lum = np.concatenate([mock.lum_obs[:100], np.full(n_out, mock.lum_obs.max() * 1e4)])
    z = np.concatenate([mock.z[:100], np.full(n_out, 0.5)])
    data = Q.prepare(z, lum, prior)
    values = np.asarray(Q.log_likelihood_halos(HYPERSEED, data))
    grad = jax.grad(lambda th: Q.log_likelihood(Hyper(*th), data))(jnp.array(HYPERSEED))
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
    key = float(H.numerical_integration(HYPERSEED, H.halo_data(z[-1:], lum[-1:], prior), prior).log_like[0])
    assert abs(values[100] / key - 1) < 0.01  # among the first Q._MAX_BEYOND: the continuation, within 1%
    assert np.isfinite(values[-1]) and values[-1] < values[:100].min()  # beyond them: the edge value
