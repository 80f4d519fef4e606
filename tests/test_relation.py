"""The relation, the noise model and the hyperparameter constants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bigmali import relation
from bigmali.relation import ALPHA3, HYPERSEED, Hyper


def test_constants_are_the_2017_ones():
    assert ALPHA3 == 2.35e14
    assert relation.SIGMA_OBS == 0.05
    assert HYPERSEED == Hyper(10.747809151611289, 0.36260141487530501, 1.1587242790463443, 0.1570168038792813)
    assert relation.HYPERPRIOR_MEAN == Hyper(10.709, 0.359, 1.10, 0.155)
    assert relation.HYPERPRIOR_SD == Hyper(0.022, 0.009, 0.06, 0.0009)


def test_hyperseed_is_numpy_seed_0_draw_of_the_hyperprior():
    # The 2017 hyperseed: one draw of the hyperprior with numpy seed 0, in order alpha1, alpha2, alpha4, S.
    np.random.seed(0)
    draws = [np.random.normal(m, s) for m, s in zip(relation.HYPERPRIOR_MEAN, relation.HYPERPRIOR_SD)]
    np.testing.assert_allclose(draws[:3], HYPERSEED[:3], rtol=1e-12)


def test_ln_mu_L_matches_the_power_law():
    mass, z = 3e12, 0.7
    expected = math.exp(HYPERSEED.alpha1) * (mass / ALPHA3) ** HYPERSEED.alpha2 * (1 + z) ** HYPERSEED.alpha4
    assert float(relation.ln_mu_L(math.log(mass), z, HYPERSEED)) == pytest.approx(math.log(expected), rel=1e-13)


def test_reduced_observable_is_the_affine_form_its_coefficients_give():
    """The fixed-noise likelihood places halos with (c0, c1) alone: they must reproduce r."""
    rng = np.random.default_rng(3)
    ln_lum, ln1pz = rng.normal(24.0, 2.0, 50), np.log1p(rng.uniform(0.0, 3.0, 50))
    hyper = HYPERSEED._replace(alpha2=0.41, alpha4=0.7)
    c0, c1 = relation.reduced_observable_affine(hyper)
    np.testing.assert_allclose(ln_lum + c0 + c1 * ln1pz, relation.reduced_observable(ln_lum, ln1pz, hyper), atol=1e-12)


def test_lognormal_logpdf_matches_scipy():
    x = np.array([0.3, 1.0, 7.5, 2e4])
    got = relation.lognormal_logpdf(jnp.log(x), math.log(2.0), 0.4)
    np.testing.assert_allclose(got, stats.lognorm(0.4, scale=2.0).logpdf(x), rtol=1e-12)


def test_sigma_total_adds_in_quadrature():
    assert float(relation.sigma_total(0.155)) == pytest.approx(math.hypot(0.155, 0.05), rel=1e-14)


def test_hyperprior_logpdf_matches_scipy():
    expected = sum(
        stats.norm(m, s).logpdf(v) for v, m, s in zip(HYPERSEED, relation.HYPERPRIOR_MEAN, relation.HYPERPRIOR_SD)
    )
    assert float(relation.hyperprior_logpdf(HYPERSEED)) == pytest.approx(expected, rel=1e-12)


def test_sample_hyperprior_has_the_hyperprior_moments():
    draws = relation.sample_hyperprior(jax.random.PRNGKey(1), (20_000,))
    for name, values in draws._asdict().items():
        mean, sd = getattr(relation.HYPERPRIOR_MEAN, name), getattr(relation.HYPERPRIOR_SD, name)
        # 4 standard errors on the mean; 5% on the sd (its standard error is 0.5%).
        assert abs(float(values.mean()) - mean) < 4 * sd / math.sqrt(20_000)
        assert float(values.std()) == pytest.approx(sd, rel=0.05)


def test_parse_hyper_overrides_named_values_only():
    hyper = relation.parse_hyper("alpha1=10.5, S=0.2")
    assert hyper == HYPERSEED._replace(alpha1=10.5, S=0.2)
    assert relation.parse_hyper(None) == HYPERSEED


@pytest.mark.parametrize(
    "text, message",
    [("beta=1", "beta=1"), ("alpha1", "alpha1"), ("alpha2=abc", "alpha2"), ("S=-0.1", "S"), ("alpha4=nan", "alpha4")],
)
def test_parse_hyper_names_the_bad_entry(text, message):
    with pytest.raises(ValueError, match=message):
        relation.parse_hyper(text)
