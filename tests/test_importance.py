"""The 2017 importance-sampling methods: per-halo estimators, the catalog IS likelihood,
weight diagnostics, and the hyper-level schemes beside NUTS."""

import json

import jax
import numpy as np
import pytest

import bigmali
from bigmali import cli
from bigmali.diagnostics.weights import psis, weight_diagnostics
from bigmali.inference import halo_likelihood as H
from bigmali.inference.is_likelihood import is_log_likelihood, is_log_likelihood_halos
from bigmali.models import quadrature as Q
from bigmali.relation import HYPER_NAMES, HYPERPRIOR_MEAN, HYPERSEED


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


def test_importance_sampling_without_clipping_is_unbiased_and_the_2017_clipping_is_not(halos, prior):
    z, lum = halos
    z, lum = z[:3], lum[:3]
    data = H.halo_data(z, lum, prior)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(z, lum, prior)))
    ratios = np.array([np.exp(np.asarray(H.importance_sampling(jax.random.PRNGKey(s), HYPERSEED, data, prior, n=4000,
                                                                 clip=False).log_like) - exact) for s in range(12)])
    # The mean of 12 unbiased estimates: within 4 standard errors of 1 (and of 3% at most).
    se = ratios.std(axis=0, ddof=1) / np.sqrt(12)
    assert np.all(np.abs(ratios.mean(axis=0) - 1.0) < np.maximum(4 * se, 1e-3)), (ratios.mean(0), se)
    assert np.all(np.abs(ratios.mean(axis=0) - 1.0) < 0.03)
    # Clipping masses into the table while keeping the unclipped proposal density overweights
    # the lowest mass: the typical halo comes out ~45% high, the faintest many times over.
    clipped = np.exp(np.asarray(H.importance_sampling(jax.random.PRNGKey(0), HYPERSEED, data, prior, n=4000).log_like) - exact)
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
    assert float(is_log_likelihood(jax.random.PRNGKey(4), HYPERPRIOR_MEAN, data, prior, n, False, max_elements)) != float(again)


def test_fixed_proposal_gives_the_gradient_of_the_likelihood(mock, prior):
    """With the proposal held at fixed hyperparameters the simulated likelihood is smooth and
    its gradient converges to the exact one (the 2017 proposal rebuilt at each theta does not)."""
    z, lum = mock.z[:500], mock.lum_obs[:500]
    data = H.halo_data(z, lum, prior)
    theta = jax.numpy.asarray(HYPERSEED)
    exact = np.asarray(jax.grad(lambda t: Q.log_likelihood(bigmali.Hyper(*t), Q.prepare(z, lum, prior)))(theta))
    fixed = np.asarray(jax.grad(lambda t: is_log_likelihood(jax.random.PRNGKey(0), bigmali.Hyper(*t), data, prior, 4000,
                                                            False, proposal=HYPERPRIOR_MEAN))(theta))
    moving = np.asarray(jax.grad(lambda t: is_log_likelihood(jax.random.PRNGKey(0), bigmali.Hyper(*t), data, prior, 4000,
                                                             False))(theta))
    scale = np.abs(exact) + 50.0  # Monte Carlo error of the gradient is a few tens here
    assert np.all(np.abs(fixed - exact) < 0.5 * scale), (fixed, exact)
    assert np.any(np.abs(moving - exact) > 5 * scale), (moving, exact)


def test_weight_diagnostics():
    rng = np.random.default_rng(0)
    equal = weight_diagnostics(np.zeros(500))
    assert equal["ess"] == pytest.approx(500) and equal["max_share"] == pytest.approx(1 / 500)
    mild = weight_diagnostics(0.3 * rng.normal(size=4000))
    assert mild["pareto_k"] < 0.5 and mild["ess"] > 3000
    # One weight 10^4 log-units above the rest: the 2017 picture.
    lw = -20.0 - 1e4 * rng.random(10_000)
    lw[17] = 0.0
    degenerate = weight_diagnostics(lw)
    assert degenerate["ess"] < 1.01 and degenerate["max_share"] > 0.99 and degenerate["pareto_k"] > 0.7
    smoothed, k = psis(0.3 * rng.normal(size=4000) + 12345.0)  # any offset
    assert np.exp(smoothed).sum() == pytest.approx(1.0) and k < 0.5


@pytest.fixture(scope="module")
def nuts_ref(mock, prior):
    return bigmali.fit(mock, prior=prior, chains=2, warmup=300, draws=500, progress=False, mass_draws=0, log_likelihood=0,
                       seed=4)


def test_is_proposal_agrees_with_nuts(mock, prior, nuts_ref):
    run = bigmali.fit(mock, prior=prior, method="is_proposal", n_hyper=3000, progress=False, mass_draws=4)
    got, ref = bigmali.summary(run), bigmali.summary(nuts_ref)
    # Per-halo masses at draws resampled by weight; no LOO group for weighted draws.
    assert run["halo_mass"]["ln_mass"].shape == (1, 4, 1500) and "log_likelihood" not in run.children
    assert got["weights"]["pareto_k"] < 0.7
    for name in HYPER_NAMES:
        # NUTS's own Monte Carlo error at ESS ~800 is ~0.035 sd; 0.1 sd is the bound.
        assert abs(got["parameters"][name]["mean"] - ref["parameters"][name]["mean"]) < 0.1 * ref["parameters"][name]["sd"]
        assert 0.85 < got["parameters"][name]["sd"] / ref["parameters"][name]["sd"] < 1.15


def test_is_prior_pmmh_and_nuts_is_run_and_report(mock, prior, tmp_path, capsys):
    prior_run = bigmali.fit(mock, prior=prior, method="is_prior", n_hyper=300, is_likelihood="exact", progress=False,
                            mass_draws=0, log_likelihood=0)
    result = bigmali.summary(prior_run, truth="hyperseed")
    assert set(result["weights"]) == {"ess", "pareto_k", "max_share"}
    assert 1.0 <= result["weights"]["ess"] < 300
    assert np.asarray(prior_run["sample_stats"]["log_weight"]).shape == (1, 300)
    pm = bigmali.fit(mock, prior=prior, method="pmmh", chains=1, warmup=0, draws=15, is_samples=50, progress=False,
                     mass_draws=0, log_likelihood=0)
    assert 0.0 <= bigmali.summary(pm)["acceptance_rate"] <= 1.0
    assert np.asarray(pm["posterior"]["alpha1"]).shape == (1, 15)
    ni = bigmali.fit(mock, prior=prior, method="nuts_is", is_samples=30, is_clip=False, chains=1, warmup=60, draws=60,
                     progress=False, mass_draws=0, log_likelihood=0)
    assert all(np.all(np.isfinite(np.asarray(ni["posterior"][n]))) for n in HYPER_NAMES)
    # The CLI: summary --json carries the weights; compare prints shifts and writes the PNG.
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    bigmali.save_run(prior_run, a)
    bigmali.save_run(pm, b)
    assert cli.main(["summary", str(a), "--json"]) == 0
    assert "weights" in json.loads(capsys.readouterr().out)
    png = tmp_path / "cmp.png"
    assert cli.main(["compare", str(a), str(b), "--png", str(png), "--truth", "hyperseed"]) == 0
    out = capsys.readouterr().out
    assert "diff" in out and png.stat().st_size > 10_000


def test_importance_methods_need_the_collapsed_model(mock, prior):
    with pytest.raises(ValueError, match="the latent_mass model is fitted with nuts or nuts_gibbs"):
        bigmali.fit(mock, model="latent_mass", method="is_prior", prior=prior, progress=False)
    with pytest.raises(ValueError, match="is_samples = 0"):
        bigmali.fit(mock, method="pmmh", is_samples=0, prior=prior, progress=False)
    with pytest.raises(ValueError, match="n_hyper = 0"):
        bigmali.fit(mock, method="is_prior", n_hyper=0, prior=prior, progress=False)
