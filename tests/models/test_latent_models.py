"""The latent-mass and full models: the data-centred maps are exact changes of variables,
and the models give the same posterior as the collapsed model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import bigmali
from bigmali.mass_prior import tabulated_ln_mass_range
from bigmali.models import latent_mass
from bigmali.models.centering import TruncatedLogisticQuantile
from bigmali.models.common import LnMassPrior
from bigmali.relation import HYPERSEED


@pytest.mark.parametrize("loc", [20.0, 23.3, 27.0, 32.5, 40.0])
def test_truncated_logistic_quantile_is_a_bijection_with_the_right_jacobian(loc):
    low, high, scale = 23.25, 32.67, 0.45
    t = TruncatedLogisticQuantile(jnp.float64(loc), scale, low, high)
    u = jnp.linspace(-6.0, 6.0, 61)
    x = t(u)
    assert np.all(np.isfinite(x)) and np.all(x >= low) and np.all(x <= high)
    assert np.all(np.diff(np.asarray(x)) > 0), "the map must be increasing"
    np.testing.assert_allclose(t.inv(x), u, atol=1e-7)
    autodiff = jax.vmap(jax.grad(lambda v: t(v)))(u)
    np.testing.assert_allclose(t.log_abs_det_jacobian(u, x), np.log(autodiff), rtol=1e-8, atol=1e-8)


def test_truncated_logistic_quantile_makes_truncated_logistic_draws_standard_logistic():
    """If ln M really is the truncated logistic, u is exactly standard logistic (KS, p > 0.01)."""
    from scipy import stats

    low, high, loc, scale = 23.25, 32.67, 23.4, 0.45
    x = stats.logistic(loc=loc, scale=scale).rvs(size=60000, random_state=np.random.default_rng(3))
    x = x[(x >= low) & (x <= high)]
    u = TruncatedLogisticQuantile(jnp.float64(loc), scale, low, high).inv(jnp.asarray(x))
    assert x.size > 20000
    assert stats.kstest(np.asarray(u), "logistic").pvalue > 0.01
    assert stats.kstest(np.asarray(u), "norm").pvalue < 1e-6  # the test can tell a wrong map


def _log_joint(model, params, args):
    return float(log_density(model, args, {}, params)[0])


def test_centring_is_an_exact_change_of_variables(prior):
    """log p(u) - log|d lnM/du| equals the literal model's log density at lnM(u)."""
    cat = bigmali.simulate(prior, n_halos=300, seed=4)
    z, lum = jnp.asarray(cat.z), jnp.asarray(cat.lum_obs)
    hyper_params = {f"{k}_decentered": jnp.float64(0.3) for k in HYPERSEED._fields}
    u = jax.random.normal(jax.random.PRNGKey(0), (300,))
    from numpyro.handlers import seed, substitute, trace

    tr = trace(substitute(seed(latent_mass.model, 0), {**hyper_params, "ln_mass_u": u})).get_trace(z, lum, prior)
    ln_mass = tr["ln_mass"]["value"]
    centred = _log_joint(latent_mass.model, {**hyper_params, "ln_mass_u": u}, (z, lum, prior, None, None, "data"))
    literal = _log_joint(latent_mass.model, {**hyper_params, "ln_mass": ln_mass}, (z, lum, prior, None, None, "none"))

    def ln_mass_of(v):  # the map is elementwise, so a JVP with ones gives its diagonal Jacobian
        trv = trace(substitute(seed(latent_mass.model, 0), {**hyper_params, "ln_mass_u": v})).get_trace(z, lum, prior)
        return trv["ln_mass"]["value"]

    _, jac = jax.jvp(ln_mass_of, (u,), (jnp.ones_like(u),))
    assert centred == pytest.approx(literal + float(jnp.sum(jnp.log(jac))), rel=1e-10)


def test_mass_prior_distribution_matches_the_prior(prior):
    low, high = tabulated_ln_mass_range(prior)
    d = LnMassPrior(prior, jnp.array([0.1, 1.0, 3.0]))
    x = d.sample(jax.random.PRNGKey(0), (2000,))
    assert np.all((x >= low) & (x <= high))
    z = jnp.array([0.1, 1.0, 3.0, 3.4])
    grid = jnp.linspace(low - 0.5, high + 0.5, 5001)
    for prior_ in (prior, bigmali.load_mass_prior(z_interp="linear")):
        fast = LnMassPrior(prior_, z[:, None]).log_prob(grid[None, :])
        slow = bigmali.mass_prior.log_prob_ln_mass(prior_, grid[None, :], z[:, None])
        inside = (grid >= low) & (grid <= high)
        np.testing.assert_allclose(fast[:, inside], slow[:, inside], rtol=1e-12, atol=1e-12)
        assert np.all(np.isneginf(fast[:, ~inside]))


@pytest.mark.parametrize("model,method", [("latent_mass", "nuts"), ("full", "nuts"), ("latent_mass", "nuts_gibbs")])
def test_latent_models_agree_with_collapsed(model, method, small_mock, nuts_run, prior):
    """Posterior means within 0.25 collapsed sd (Monte Carlo error of the difference ~0.07 sd
    at these ESS), sds within 25%, R-hat <= 1.05 on 2 x 300 draws, and no divergences."""
    run = bigmali.fit(
        small_mock,
        model=model,
        method=method,
        prior=prior,
        chains=2,
        warmup=300,
        draws=300,
        progress=False,
        mass_draws=4,
        seed=3,
    )
    got, ref = bigmali.summary(run), bigmali.summary(nuts_run)
    assert got["divergences"] == 0
    for name in HYPERSEED._fields:
        p, r = got["parameters"][name], ref["parameters"][name]
        assert abs(p["mean"] - r["mean"]) <= 0.25 * r["sd"], (name, p, r)
        assert abs(p["sd"] / r["sd"] - 1.0) <= 0.25, (name, p, r)
        assert p["r_hat"] <= 1.05
    # The sampled masses themselves are kept for a few draws and follow the true masses.
    ln_mass = np.asarray(run["halo_mass"]["ln_mass"])
    assert ln_mass.shape == (2, 2, 1500)
    low, high = tabulated_ln_mass_range(prior)
    assert np.all((ln_mass >= float(low) - 1e-6) & (ln_mass <= float(high) + 1e-6))
    resid = ln_mass.mean(axis=(0, 1)) - np.log(small_mock.mass)
    assert abs(resid.mean()) < 0.1 and resid.std() < 0.6


def test_latent_models_are_fitted_with_nuts_only(small_mock, prior):
    with pytest.raises(ValueError, match="method 'svi': the latent_mass model is fitted with nuts or nuts_gibbs"):
        bigmali.fit(small_mock, model="latent_mass", method="svi", prior=prior, progress=False)
    with pytest.raises(ValueError, match="method 'nuts_gibbs': the full model is fitted with nuts"):
        bigmali.fit(small_mock, model="full", method="nuts_gibbs", prior=prior, progress=False)
    with pytest.raises(ValueError, match="use it with model='latent_mass'"):
        bigmali.fit(small_mock, model="collapsed", method="nuts_gibbs", prior=prior, progress=False)


@pytest.mark.parametrize("model", ["collapsed", "latent_mass"])
def test_extreme_halos_fit_without_divergences(model, small_mock, prior):
    """Four halos 100x brighter or fainter than anything in the mock: finite draws, no
    divergences, chains that agree. (They do pull the relation: the bright pair sits beyond
    even the prior's 1e-30 background, so the model must explain it with the relation.)
    They replace four of the mock's halos, so the catalog keeps the mock's size and the
    fits share the compiled programs of the shared run and of tests/test_reproducibility.py."""
    from bigmali.catalog import Catalog

    lum, z = small_mock.lum_obs.copy(), small_mock.z.copy()
    lum[-4:] = [lum.max() * 100, lum.max() * 100, lum.min() / 100, lum.min() / 100]
    z[-4:] = [0.5, 3.0, 0.5, 0.05]
    catalog = Catalog.from_arrays(z=z, lum_obs=lum)
    run = bigmali.fit(
        catalog,
        model=model,
        prior=prior,
        chains=2,
        warmup=200,
        draws=200,
        progress=False,
        mass_draws=0,
        log_likelihood=0,
        seed=3,
    )
    result = bigmali.summary(run)
    assert result["divergences"] == 0
    for name in HYPERSEED._fields:
        assert np.all(np.isfinite(np.asarray(run["posterior"][name])))
        assert result["parameters"][name]["r_hat"] <= 1.05


@pytest.mark.parametrize("model_name", ["latent_mass", "full"])
def test_latent_models_give_each_halo_its_own_measurement_error(prior, model_name):
    """With the masses (and for the full model the true luminosities) given, the log density is
    the hyperprior, the mass prior and the lognormal of L_obs at each halo's own error."""
    from bigmali import relation
    from bigmali.models import MODELS

    cat = bigmali.simulate(prior, n_halos=50, seed=5, lum_obs_err=(0.02, 0.3))
    z, lum, err = jnp.asarray(cat.z), jnp.asarray(cat.lum_obs), jnp.asarray(cat.lum_obs_err)
    ln_mass, ln_lum = jnp.log(jnp.asarray(cat.mass)), jnp.log(jnp.asarray(cat.lum))
    params = {f"{k}_decentered": jnp.float64(0.0) for k in HYPERSEED._fields}
    params["ln_mass"] = ln_mass
    hyper = relation.HYPERPRIOR_MEAN
    ln_mu = relation.ln_mu_L(ln_mass, z, hyper)
    expected = float(jnp.sum(LnMassPrior(prior, z).log_prob(ln_mass)))
    if model_name == "full":
        params["ln_lum"] = ln_lum
        expected += float(jnp.sum(relation.lognormal_logpdf(ln_lum, ln_mu, hyper.S) + ln_lum))
        expected += float(jnp.sum(relation.lognormal_logpdf(jnp.log(lum), ln_lum, err)))
    else:
        expected += float(jnp.sum(relation.lognormal_logpdf(jnp.log(lum), ln_mu, relation.sigma_total(hyper.S, err))))
    got = _log_joint(MODELS[model_name].model, params, (z, lum, prior, err, None, "none"))
    hyperprior = -4 * 0.5 * np.log(2 * np.pi)  # the standardised sites at 0
    assert got == pytest.approx(expected + hyperprior, rel=1e-12)
    # sigma_obs for every halo gives another number.
    assert _log_joint(MODELS[model_name].model, params, (z, lum, prior, None, None, "none")) != pytest.approx(
        got, rel=1e-6
    )


@pytest.mark.parametrize("model_name", ["latent_mass", "full"])
def test_latent_models_divide_each_halo_by_its_detection_probability(prior, model_name):
    from bigmali.likelihood import quadrature as Q
    from bigmali.models import MODELS

    cat = bigmali.simulate(prior, n_halos=50, seed=5, lum_obs_err=(0.02, 0.3))
    z, lum, err = jnp.asarray(cat.z), jnp.asarray(cat.lum_obs), jnp.asarray(cat.lum_obs_err)
    selection = Q.prepare(z, lum, prior, lum_obs_err=err, lum_lim=np.asarray(lum) * 0.9)
    params = {f"{k}_decentered": jnp.float64(0.2) for k in HYPERSEED._fields}
    params["ln_mass"] = jnp.log(jnp.asarray(cat.mass))
    if model_name == "full":
        params["ln_lum"] = jnp.log(jnp.asarray(cat.lum))
    model = MODELS[model_name].model
    with_cut = _log_joint(model, params, (z, lum, prior, err, selection, "none"))
    without = _log_joint(model, params, (z, lum, prior, err, None, "none"))
    hyper = bigmali.Hyper(
        *(m + 0.2 * s for m, s in zip(bigmali.relation.HYPERPRIOR_MEAN, bigmali.relation.HYPERPRIOR_SD))
    )
    expected = -float(jnp.sum(Q.log_detection_probability(hyper, selection)))
    assert expected > 1.0  # the cut matters at this limit
    assert with_cut - without == pytest.approx(expected, rel=1e-10)
    # The extended likelihood: the halos keep their complete-catalog densities and the
    # expected count of detected halos enters once.
    from bigmali.likelihood.extended import expected_count, prepare_count
    from bigmali.selection import FluxLimit, Survey

    count = prepare_count(prior, FluxLimit.constant(2e3), Survey.from_area(0.01), cat.lum_obs_err, cat.meta)
    extended = Q.prepare(z, lum, prior, lum_obs_err=err)._replace(count=count)
    with_count = _log_joint(model, params, (z, lum, prior, err, extended, "none"))
    assert with_count - without == pytest.approx(-float(expected_count(hyper, count)), rel=1e-10)
