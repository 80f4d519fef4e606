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
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z, mock.lum_obs, prior, per_halo=False)))
    fine = Q.TableGrid(gl_order=8, rho_step=0.025, w_min=0.44, w_max=0.48, ln_w_step=0.005)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z, mock.lum_obs, prior, fine, per_halo=False)))
    assert np.abs(fast - exact).max() < 1e-7
    # Scaled to 115,919 halos the total error stays far below the 0.01 target.
    assert abs(np.mean(fast - exact)) * 115_919 < 1e-3


def test_matches_brute_force_simpson_with_1e4_masses(prior, mock):
    """The brute-force reference shares only the prior density and the lognormal with the fast path."""
    sub = slice(0, 500)
    fast = np.asarray(
        Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z[sub], mock.lum_obs[sub], prior, per_halo=False))
    )
    ref = Q.reference_log_likelihood_halos(HYPERSEED, mock.z[sub], mock.lum_obs[sub], prior)
    # Simpson with 1e4 points is itself good to ~1e-7 per halo (kinks at the knots).
    assert np.abs(fast - ref).max() < 2e-7


def test_linear_z_mode_matches_its_reference(prior_linear, mock):
    sub = slice(0, 300)
    data = Q.prepare(mock.z[sub], mock.lum_obs[sub], prior_linear, per_halo=False)
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, data, Q.QuadratureConfig(linear=True)))
    ref = Q.reference_log_likelihood_halos(HYPERSEED, mock.z[sub], mock.lum_obs[sub], prior_linear)
    assert np.abs(fast - ref).max() < 2e-7


def test_gradient_matches_finite_differences(prior, mock):
    assert_gradient_matches_finite_differences(Q.prepare(mock.z, mock.lum_obs, prior, per_halo=False))


def assert_gradient_matches_finite_differences(data):
    """The total's gradient at the hyperseed against central differences (steps 1e-6 and
    1e-7), within 1e-4 relative or 1e-2 absolute; value and gradient finite."""
    value_and_grad = jax.jit(jax.value_and_grad(lambda th: Q.log_likelihood(Hyper(*th), data)))
    theta = jnp.array(HYPERSEED)
    value, grad = value_and_grad(theta)
    assert np.all(np.isfinite(np.asarray(grad))) and np.isfinite(float(value))
    for i, h in enumerate((1e-6, 1e-7, 1e-6, 1e-7)):  # one compiled program for both
        e = jnp.zeros(4).at[i].set(h)
        fd = (value_and_grad(theta + e)[0] - value_and_grad(theta - e)[0]) / (2 * h)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-2)


def test_second_derivatives_are_those_of_the_gradient(prior, mock):
    """jax.hessian (forward over the hand-written reverse rule) against central differences
    of the gradient: within 1e-5 of each column's largest entry (measured 1e-6). The rule
    computes the table's plane itself, so nothing of its dependence on theta is cut."""
    data = Q.prepare(mock.z[:1000], mock.lum_obs[:1000], prior, per_halo=False)

    def f(th):
        return Q.log_likelihood(Hyper(*th), data)

    theta = jnp.array(HYPERSEED)
    hessian = np.asarray(jax.jit(jax.hessian(f))(theta))
    grad = jax.jit(jax.grad(f))
    steps = [jnp.zeros(4).at[i].set(1e-6) for i in range(4)]
    fd = np.stack([(np.asarray(grad(theta + e)) - np.asarray(grad(theta - e))) / 2e-6 for e in steps], axis=1)
    assert np.all(np.abs(hessian - fd).max(axis=0) <= 1e-5 * np.abs(fd).max(axis=0))


def test_halos_read_in_blocks_give_the_one_piece_numbers(prior, mock, monkeypatch):
    """Above Q._BLOCK halos both reads (one noise, per-halo errors) go block by block, the
    last block overlapping the one before it: the same per-halo values and the same gradient
    (1,000 halos in blocks of 300 here: four blocks, the last starting at halo 700)."""
    fixed = Q.prepare(mock.z[:1000], mock.lum_obs[:1000], prior, per_halo=False)
    errors = Q.prepare(mock.z[:1000], mock.lum_obs[:1000], prior, lum_obs_err=np.linspace(0.02, 0.3, 1000))
    for data in (fixed, errors):
        assert_the_same_in_blocks(data, monkeypatch)


def assert_the_same_in_blocks(data, monkeypatch):
    def evaluate():
        total = jax.jit(jax.value_and_grad(lambda th: Q.log_likelihood(Hyper(*th), data)))
        return np.asarray(Q.log_likelihood_halos(HYPERSEED, data)), np.asarray(total(jnp.array(HYPERSEED))[1])

    whole, grad = evaluate()
    monkeypatch.setattr(Q, "_BLOCK", 300)
    jax.clear_caches()  # the jitted functions read _BLOCK when traced
    blocked, blocked_grad = evaluate()
    monkeypatch.undo()
    jax.clear_caches()
    np.testing.assert_allclose(blocked, whole, rtol=1e-14)
    np.testing.assert_allclose(blocked_grad, grad, rtol=1e-12)


def test_extreme_halos_give_finite_values_and_gradients(prior, mock):
    """Halos 100x brighter or fainter than anything in the mock: finite, and the background explains them."""
    lum = np.concatenate([mock.lum_obs[:200], [mock.lum_obs.max() * 100, mock.lum_obs.min() / 100, 1e-3, 1e12]])
    z = np.concatenate([mock.z[:200], [0.5, 0.5, 3.0, 0.01]])
    data = Q.prepare(z, lum, prior, per_halo=False)
    values = Q.log_likelihood_halos(HYPERSEED, data)
    grad = jax.grad(lambda th: Q.log_likelihood(Hyper(*th), data))(jnp.array(HYPERSEED))
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
    # Far outside the tabulated masses the 1e-30 background carries the halo: its ln-likelihood
    # is far below the typical halo's but finite, and grows with distance only like ln M.
    assert np.all(values[-4:] < values[:200].min())


def test_without_background_is_still_finite(mock):
    bare = bigmali.load_mass_prior(background=None)
    lum = np.concatenate([mock.lum_obs[:50], [mock.lum_obs.max() * 100]])
    values = Q.log_likelihood_halos(HYPERSEED, Q.prepare(mock.z[:51], lum, bare, per_halo=False))
    assert np.all(np.isfinite(values))


def test_every_halo_beyond_the_grid_is_continued_with_a_gradient_of_the_right_size(prior, mock):
    """2,000 halos beyond the rho grid (10^4 times brighter than the brightest, 40 sigma beyond
    the background's top): every one gets the grid's edge continued as a Gaussian tail, within
    1% of the answer key; its gradient (the heat equation's) within 2% of central differences
    of the continuation."""
    from bigmali.likelihood import single_halo as H

    n_out = 2000
    lum = np.concatenate([mock.lum_obs[:100], np.full(n_out, mock.lum_obs.max() * 1e4)])
    z = np.concatenate([mock.z[:100], np.full(n_out, 0.5)])
    data = Q.prepare(z, lum, prior, per_halo=False)
    values = np.asarray(Q.log_likelihood_halos(HYPERSEED, data))
    key = float(H.numerical_integration(HYPERSEED, H.halo_data(z[-1:], lum[-1:], prior), prior).log_like[0])
    assert np.all(np.abs(values[100:] / key - 1) < 0.01)
    outliers = data._replace(**{f: getattr(data, f)[100:] for f in ("y", "ln1pz", "row_lo", "row_hi", "w_hi")})
    value_and_grad = jax.jit(jax.value_and_grad(lambda th: Q.log_likelihood(Hyper(*th), outliers)))
    theta = jnp.array(HYPERSEED)
    grad = np.asarray(value_and_grad(theta)[1])
    for i in range(4):
        e = jnp.zeros(4).at[i].set(1e-6)
        fd = float(value_and_grad(theta + e)[0] - value_and_grad(theta - e)[0]) / 2e-6
        assert grad[i] == pytest.approx(fd, rel=0.02)


def test_gradient_matches_central_differences_of_the_brute_force_quadrature(prior, mock):
    """The hand-written gradient against the truth: central differences (steps 1e-5 relative)
    of Simpson with 4e4 masses, which shares nothing with the table, at the hyperseed and at a
    narrow kernel (w = 0.13). Within 1e-5 relative (measured: 2e-8 to 3e-6)."""
    sub = slice(0, 400)
    z, lum = mock.z[sub], mock.lum_obs[sub]
    data = Q.prepare(z, lum, prior, per_halo=False)
    grad = jax.jit(jax.grad(lambda th: Q.log_likelihood(Hyper(*th), data)))
    for hyper in (HYPERSEED, HYPERSEED._replace(alpha2=0.5, S=0.04)):
        theta = np.array(hyper, dtype=float)
        fast = np.asarray(grad(jnp.array(theta)))

        def total(th):
            return float(np.sum(Q.reference_log_likelihood_halos(Hyper(*th), z, lum, prior, n_points=40_000)))

        for i in range(4):
            e = np.zeros(4)
            e[i] = 1e-5 * abs(theta[i])
            fd = (total(theta + e) - total(theta - e)) / (2 * e[i])
            assert fast[i] == pytest.approx(fd, rel=1e-5)


# ---------------------------------------------------------------- per-halo measurement errors


@pytest.fixture(scope="module")
def noisy(prior):
    """A mock whose halos have their own errors, log-uniform in [0.02, 0.3], and a few extreme ones."""
    mock = bigmali.simulate(prior, n_halos=400, seed=12, lum_obs_err=(0.02, 0.3))
    err = np.asarray(mock.lum_obs_err).copy()
    err[:4] = [0.001, 0.5, 1.0, 2.0]
    return np.asarray(mock.z), np.asarray(mock.lum_obs), err


def test_per_halo_errors_match_brute_force_simpson(prior, noisy):
    """Each halo's own sigma_k = sqrt(S^2 + err_k^2), read from the 2-D table, against Simpson
    with 1e4 masses at that sigma_k (itself good to ~1e-7 per halo)."""
    z, lum, err = noisy
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, lum_obs_err=err)))
    ref = Q.reference_log_likelihood_halos(HYPERSEED, z, lum, prior, lum_obs_err=err)
    assert np.abs(fast - ref).max() < 2e-7
    # The errors matter: with sigma_obs for every halo the values differ by far more.
    fixed = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, per_halo=False)))
    assert np.abs(fixed - ref).max() > 0.1


def test_per_halo_errors_all_equal_to_sigma_obs_give_the_fixed_noise_likelihood(prior, noisy):
    z, lum, _ = noisy
    same = np.full(z.size, bigmali.relation.SIGMA_OBS)
    per_halo = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, lum_obs_err=same)))
    fixed = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, per_halo=False)))
    assert np.abs(per_halo - fixed).max() < 2e-7
    # Below PER_HALO_BELOW halos a catalog without errors takes the per-halo path by itself.
    automatic = Q.prepare(z, lum, prior)
    assert z.size < Q.PER_HALO_BELOW and automatic.obs_err is not None
    np.testing.assert_array_equal(np.asarray(Q.log_likelihood_halos(HYPERSEED, automatic)), per_halo)


def test_per_halo_errors_in_linear_z_mode_match_the_reference(prior_linear, noisy):
    z, lum, err = (v[:200] for v in noisy)
    data = Q.prepare(z, lum, prior_linear, lum_obs_err=err)
    fast = np.asarray(Q.log_likelihood_halos(HYPERSEED, data, Q.QuadratureConfig(linear=True)))
    ref = Q.reference_log_likelihood_halos(HYPERSEED, z, lum, prior_linear, lum_obs_err=err)
    assert np.abs(fast - ref).max() < 2e-7


def test_per_halo_gradient_matches_finite_differences_with_an_outlier_beyond_the_grid(prior, noisy):
    """The gradient is written by hand (value and partials from one read of each block):
    check it, for halos on the grid and for one continued beyond it (10^4 x the brightest)."""
    z, lum, err = noisy
    lum = np.concatenate([lum, [lum.max() * 1e4]])
    data = Q.prepare(np.append(z, 0.5), lum, prior, lum_obs_err=np.append(err, 0.1))
    for sub in (slice(None, -1), slice(-1, None)):
        part = data._replace(
            **{f: getattr(data, f)[sub] for f in ("y", "ln1pz", "row_lo", "row_hi", "w_hi", "obs_err")}
        )
        assert_gradient_matches_finite_differences(part)


def test_per_halo_outliers_beyond_the_grid_are_continued_as_the_fixed_noise_path_does(prior, noisy):
    """Halos 10^4 x brighter than the brightest, each with sigma_obs as its own error: the same
    Gaussian continuation of the grid's edge as the fixed-noise path (whose value is checked
    against the answer key above), 1,030 of them."""
    n_out = 1030
    z, lum = np.full(n_out, 0.5), np.full(n_out, noisy[1].max() * 1e4)
    err = np.full(n_out, bigmali.relation.SIGMA_OBS)
    per_halo = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior, lum_obs_err=err)))
    fixed = float(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z[:1], lum[:1], prior, per_halo=False))[0])
    assert np.all(np.abs(per_halo / fixed - 1) < 1e-3)


def test_a_theta_that_puts_a_halo_outside_the_tables_levels_gives_it_minus_infinity(prior, noisy):
    z, lum, err = noisy
    data = Q.prepare(z, lum, prior, lum_obs_err=err)
    w_max = float(np.exp(data.ln_w0 + data.ln_w_step * (data.log_g.shape[1] - 1)))
    sigma = np.sqrt(HYPERSEED.S**2 + err**2)
    alpha2 = float(sigma.max() / w_max) * 0.9  # the noisiest halo's w is beyond the top level
    values = np.asarray(Q.log_likelihood_halos(HYPERSEED._replace(alpha2=alpha2), data))
    outside = sigma / alpha2 > w_max
    assert outside.any() and np.all(values[outside] == -np.inf) and np.all(np.isfinite(values[~outside]))


# ---------------------------------------------------------------- flux limits


def _reference_log_detection(hyper, z, lim, prior, err=None, n=10_000):
    """ln int p(M | z) Phi((ln mu_L(M) - ln L_lim) / sigma) dM by Simpson over the tabulated masses
    (with 1e4 masses good to ~1e-8: the integrand is smoother than the density's)."""
    import math

    from jax.scipy.special import log_ndtr

    from bigmali import relation
    from bigmali.mass_prior import log_prob_ln_mass, tabulated_knots

    knots = tabulated_knots(prior)
    x = jnp.linspace(math.log(float(prior.mass[knots.start])), math.log(float(prior.mass[knots.stop - 1])), n + 1)
    weights = jnp.ones(n + 1).at[1:-1:2].set(4.0).at[2:-1:2].set(2.0) * (x[1] - x[0]) / 3.0
    sigma = jnp.broadcast_to(relation.sigma_total(hyper.S, relation.sigma_obs_of(err)), z.shape)
    mu = relation.ln_mu_L(x[None, :], jnp.asarray(z)[:, None], hyper)
    terms = log_prob_ln_mass(prior, x[None, :], jnp.asarray(z)[:, None]) + log_ndtr(
        (mu - jnp.log(jnp.asarray(lim))[:, None]) / sigma[:, None]
    )
    return np.asarray(jax.nn.logsumexp(terms + jnp.log(weights)[None, :], axis=1))


@pytest.mark.parametrize("with_errors", [False, True])
def test_a_flux_limit_divides_each_halo_by_its_exact_detection_probability(prior, noisy, with_errors):
    """ln P(detected) from the theta-free CDF table, against Simpson with 2e4 masses, for
    limits from far below the halo to just below it; and the gradient against finite
    differences."""
    z, lum, err = (v[:200] for v in noisy)
    err = err if with_errors else None
    lim = lum * np.exp(-np.linspace(0.0, 6.0, z.size))
    lim[:3] = lum[:3] * np.exp(-np.array([40.0, 1e-3, 15.0]))
    limited = Q.prepare(z, lum, prior, lum_obs_err=err, lum_lim=lim)
    complete = Q.prepare(z, lum, prior, lum_obs_err=err)
    ln_p = np.asarray(Q.log_likelihood_halos(HYPERSEED, complete) - Q.log_likelihood_halos(HYPERSEED, limited))
    ref = _reference_log_detection(HYPERSEED, z, lim, prior, err)
    assert np.abs(ln_p - ref).max() < 1e-7
    np.testing.assert_allclose(ln_p, np.asarray(Q.log_detection_probability(HYPERSEED, limited)), rtol=0, atol=1e-13)
    assert ln_p.min() < -0.5 and abs(ln_p[0]) < 1e-8  # the limits matter, and far below one it is 1
    assert_gradient_matches_finite_differences(limited)


def test_a_limit_far_above_every_halo_is_finite_and_held_far_below_is_one(prior, noisy):
    z, lum, _ = (v[:50] for v in noisy)
    data = Q.prepare(z, lum, prior, lum_lim=lum * 1e-30, per_halo=False)
    np.testing.assert_allclose(np.asarray(Q.log_detection_probability(HYPERSEED, data)), 0.0, atol=1e-8)
    high = Q.prepare(z, lum, prior, lum_lim=np.full(z.size, lum.max() * 1e6), per_halo=False)
    values = np.asarray(Q.log_detection_probability(HYPERSEED, high))
    assert np.all(np.isfinite(values)) and np.all(values < -100)


# ---------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("path", ["fixed sigma", "per halo", "per-halo errors"])
def test_float32_halo_reads_match_float64(prior, mock, noisy, path):
    """QuadratureConfig.halo_float32 (BIGMALI_FLOAT32=1): each halo within 3e-7 of float64, the
    total of 3,000 halos within 1e-4 and the gradient within 2e-5 relative, at the hyperseed
    and off it (benchmarks/precision.py measures 115,919 halos: 1.5e-5, 1.2e-7, 4e-6)."""
    if path == "per-halo errors":
        z, lum, err = noisy
        data = Q.prepare(z[4:], lum[4:], prior, lum_obs_err=err[4:])  # the extreme errors left out
    else:
        data = Q.prepare(mock.z, mock.lum_obs, prior, per_halo=path == "per halo")
    f64, f32 = Q.QuadratureConfig(), Q.QuadratureConfig(halo_float32=True)
    for point in (HYPERSEED, Hyper(10.70, 0.37, 1.30, 0.18)):
        halos = [np.asarray(Q.log_likelihood_halos(point, data, c)) for c in (f64, f32)]
        assert np.abs(halos[1] - halos[0]).max() < 3e-7
        (v64, g64), (v32, g32) = (jax.value_and_grad(Q.log_likelihood)(point, data, c) for c in (f64, f32))
        assert abs(float(v32 - v64)) < 1e-4
        g64, g32 = np.asarray(list(g64)), np.asarray(list(g32))
        assert np.max(np.abs(g32 - g64) / np.abs(g64)) < 2e-5
    # The float32 read is not the float64 one (the flag does something).
    assert np.abs(halos[1] - halos[0]).max() > 0
