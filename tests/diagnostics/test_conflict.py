"""Prior-data conflict (ArviZ power-scaling, distance from the hyperprior) and the PPC by luminosity."""

import numpy as np
import pytest

import bigmali
from bigmali.diagnostics.conflict import SENSITIVITY_THRESHOLD, prior_data_conflict
from bigmali.diagnostics.ppc import by_luminosity, posterior_predictive_check
from bigmali.relation import HYPERPRIOR_MEAN, HYPERPRIOR_SD, Hyper


@pytest.fixture(scope="module")
def conflicting_run(prior):
    """A catalog made with alpha4 twenty hyperprior sds above the hyperprior mean: data and
    hyperprior disagree (the relation's evolution with redshift is far steeper)."""
    hyper = Hyper(
        HYPERPRIOR_MEAN[0], HYPERPRIOR_MEAN[1], HYPERPRIOR_MEAN[2] + 20 * HYPERPRIOR_SD[2], HYPERPRIOR_MEAN[3]
    )
    mock = bigmali.simulate(prior, hyper, n_halos=1500, seed=4)
    return bigmali.fit(
        mock, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=0, seed=2, log_likelihood=0
    )


def test_psense_flags_a_constructed_prior_data_conflict(conflicting_run, prior):
    result = prior_data_conflict(conflicting_run, prior=prior)
    alpha4 = result["psense"]["alpha4"]
    assert alpha4["prior"] >= SENSITIVITY_THRESHOLD and alpha4["likelihood"] >= SENSITIVITY_THRESHOLD
    assert alpha4["diagnosis"] == "prior-data conflict" and alpha4["prior"] >= 0.5
    assert result["conflict"] and "alpha4 (prior sensitivity" in result["warning"]
    assert result["distance"]["alpha4"] > 3.0
    assert result["psense_draws"] == 400


def test_psense_stays_quiet_on_a_matched_catalog(nuts_run, prior):
    result = prior_data_conflict(nuts_run, prior=prior)
    assert not result["conflict"] and result["warning"] is None, (result["psense"], result["warning"])
    # ArviZ's rule alone fires here (alpha2: prior 0.087, likelihood 0.061 on 1,500 halos, where
    # hyperprior and likelihood are about equally informative): far below bigmali's 0.5.
    assert result["max_abs_distance"] < 3.0
    assert max(e["prior"] for e in result["psense"].values()) < 0.25


def test_summary_carries_the_conflict(conflicting_run, prior):
    result = bigmali.summary(conflicting_run, conflict=True, prior=prior)
    assert result["prior_conflict"]["conflict"]
    from bigmali.diagnostics.recovery import format_summary

    assert "prior-data conflict" in format_summary(result)


def test_ppc_by_luminosity_finds_where_the_model_departs(nuts_run, prior):
    matched = by_luminosity(posterior_predictive_check(nuts_run, prior=prior, n_draws=100))
    assert len(matched["n_obs"]) == 20 and sum(matched["n_obs"]) == 1500
    assert matched["max_abs_standardised"] < 3.5
    # A mass prior with too few low-mass halos (the table cut at 3 M_min): the faintest
    # luminosities are missing from the replicates, the brightest over-produced.
    from bigmali.mass_prior import build_mass_prior

    mass = np.asarray(prior.mass)[2:-2]
    keep = mass >= 3.0 * mass[0]
    cut = build_mass_prior(np.asarray(prior.z_grid), mass[keep], np.asarray(prior.density)[:, 2:-2][:, keep])
    wrong = by_luminosity(posterior_predictive_check(nuts_run, prior=cut, n_draws=100))
    z = np.asarray(wrong["standardised_residual"])
    assert wrong["max_abs_standardised"] > 5.0
    assert z[0] > 3.0  # the faintest bin: more halos observed than replicated
    q = np.asarray(wrong["quantile_residual"])
    assert q[0] > 2.0 and np.all(np.abs(q) <= 2.6)  # bounded by the 100 replicates


def test_ppc_replicates_give_each_halo_its_own_error(prior):
    """A replicate of a halo with error 1.0 scatters by sqrt(S^2 + 1) around the relation; a
    halo with error 0.001 by S: replicate the same halo many times and compare the spreads."""
    import jax.numpy as jnp
    import numpy as np

    from bigmali.diagnostics.ppc import replicate_ln_lum_obs
    from bigmali.relation import HYPERSEED

    z = np.full(2, 0.5)
    reps = replicate_ln_lum_obs([HYPERSEED] * 4000, z, prior, seed=1, lum_obs_err=jnp.array([0.001, 1.0]))
    same_mass = replicate_ln_lum_obs([HYPERSEED] * 4000, z, prior, seed=1)
    # The mass prior's spread is common to both; the extra variance is the error's.
    extra = reps[:, 1].var() - same_mass[:, 1].var()
    assert abs(extra - (1.0 - 0.05**2)) < 0.1
    assert abs(reps[:, 0].var() - same_mass[:, 0].var()) < 0.05 * same_mass[:, 0].var()
