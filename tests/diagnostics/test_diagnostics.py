"""Convergence checks, recovery z-scores, the posterior predictive check and LOO over halos."""

import json

import numpy as np
import pytest
import xarray as xr

import bigmali
from bigmali import cli
from bigmali.diagnostics.convergence import THRESHOLDS, convergence, format_convergence
from bigmali.diagnostics.loo import format_loo, halo_loo
from bigmali.diagnostics.ppc import posterior_predictive_check
from bigmali.relation import HYPER_NAMES


def _with_posterior(run, **changes):
    """A copy of ``run`` whose posterior/sample_stats variables are replaced."""
    out = run.copy(deep=True)
    for name, value in changes.items():
        group = "sample_stats" if name in ("diverging", "tree_depth", "energy") else "posterior"
        out[group] = xr.DataTree(out[group].to_dataset().assign({name: (("chain", "draw"), value)}))
    return out


def check(result, name):
    (entry,) = [c for c in result["checks"] if c["name"] == name]
    return entry


def test_a_converged_run_passes_every_check(nuts_run):
    result = convergence(nuts_run)
    names = {c["name"] for c in result["checks"]}
    assert names == {
        "r_hat",
        "ess_bulk",
        "ess_tail",
        "mcse_mean_over_sd",
        "divergences",
        "tree_depth_saturated",
        "e_bfmi",
    }
    assert result["passed"], format_convergence(result)
    for name in HYPER_NAMES:
        p = result["parameters"][name]
        assert p["r_hat"] < THRESHOLDS["r_hat_max"] and p["mcse_mean"] < THRESHOLDS["mcse_over_sd_max"] * p["sd"]


def test_each_check_fails_when_its_property_breaks(nuts_run):
    alpha1 = np.asarray(nuts_run["posterior"]["alpha1"]).copy()
    alpha1[1] += 5 * alpha1.std()  # the second chain elsewhere
    assert not check(convergence(_with_posterior(nuts_run, alpha1=alpha1)), "r_hat")["passed"]
    stuck = (
        np.repeat(alpha1[:, :1], alpha1.shape[1], axis=1)
        + np.cumsum(np.random.default_rng(0).normal(size=alpha1.shape), axis=1) * 1e-4
    )
    broken = convergence(_with_posterior(nuts_run, alpha1=stuck))
    assert not check(broken, "ess_bulk")["passed"] and not check(broken, "mcse_mean_over_sd")["passed"]
    diverging = np.zeros(alpha1.shape, dtype=bool)
    diverging[0, 5] = True
    assert check(convergence(_with_posterior(nuts_run, diverging=diverging)), "divergences")["value"] == 1
    depth = np.asarray(nuts_run["sample_stats"]["tree_depth"]).copy()
    depth[1, 3] = 10
    assert not check(convergence(_with_posterior(nuts_run, tree_depth=depth)), "tree_depth_saturated")["passed"]
    # A slowly drifting energy (random walk) has E-BFMI far below 0.3.
    energy = np.cumsum(np.random.default_rng(1).normal(size=alpha1.shape), axis=1)
    assert not check(convergence(_with_posterior(nuts_run, energy=energy)), "e_bfmi")["passed"]


def test_weighted_runs_are_judged_by_their_weights(nuts_run):
    run = nuts_run.copy(deep=True)
    shape = np.shape(run["posterior"]["alpha1"])
    log_w = np.zeros(shape)
    log_w[0, 0] = 50.0  # one draw takes all the weight
    run["sample_stats"] = xr.DataTree(
        run["sample_stats"]
        .to_dataset()
        .assign(log_weight=(("chain", "draw"), log_w), log_weight_raw=(("chain", "draw"), log_w))
    )
    result = convergence(run)
    assert {c["name"] for c in result["checks"]} == {"pareto_k", "weight_ess"}
    assert not result["passed"] and check(result, "weight_ess")["value"] < 1.01


def test_z_score_is_the_truth_in_posterior_sd(nuts_run):
    result = bigmali.summary(nuts_run, truth="hyperseed")
    for name, entry in result["parameters"].items():
        draws = np.asarray(nuts_run["posterior"][name]).ravel()
        assert entry["z_score"] == pytest.approx((entry["truth"] - draws.mean()) / draws.std(ddof=1), rel=1e-3)
    assert result["convergence"]["passed"]


@pytest.fixture(scope="module")
def matched_ppc(nuts_run, prior):
    return posterior_predictive_check(nuts_run, prior=prior, n_draws=200, seed=0)


def test_ppc_is_quiet_for_the_model_that_made_the_catalog(matched_ppc, small_mock):
    assert matched_ppc.p_value > 0.05
    assert sum(matched_ppc.n_halos_by_bin) == len(small_mock)  # every halo is in one bin
    assert len(matched_ppc.p_value_by_bin) == len(matched_ppc.n_halos_by_bin) == len(matched_ppc.z_bins)
    assert np.all(matched_ppc.z_bins[:, 1] > matched_ppc.z_bins[:, 0]) and np.all(
        matched_ppc.z_bins[1:, 0] >= matched_ppc.z_bins[:-1, 1]
    )
    for b, (lo, hi) in enumerate(matched_ppc.z_bins):  # each halo's redshift lies in its bin
        z = small_mock.z[matched_ppc.bin_of_halo == b]
        assert np.all((z >= lo) & (z <= hi)), b


def test_ppc_flags_a_posterior_that_cannot_have_made_the_catalog(nuts_run, prior):
    # The same fit with a scatter three times too large: luminosity histograms far too wide.
    s = 3.0 * np.asarray(nuts_run["posterior"]["S"])
    wrong = _with_posterior(nuts_run, S=s)
    for statistic in ("ad", "chi2"):
        assert posterior_predictive_check(wrong, prior=prior, n_draws=100, statistic=statistic).p_value < 0.01, (
            statistic
        )


def test_ppc_replicates_follow_the_model(matched_ppc):
    # A replicate's mean ln L_obs per bin sits as close to the catalog's as replicates sit to each other.
    for b in range(len(matched_ppc.n_halos_by_bin)):
        members = matched_ppc.bin_of_halo == b
        if members.sum() < 100:
            continue
        rep_means = matched_ppc.replicates[:, members].mean(axis=1)
        assert abs(matched_ppc.ln_lum_obs[members].mean() - rep_means.mean()) < 4 * rep_means.std() + 1e-9, b


def test_ppc_refuses_too_few_replicates_and_unknown_statistics(nuts_run, prior):
    with pytest.raises(ValueError, match="n_draws"):
        posterior_predictive_check(nuts_run, prior=prior, n_draws=5)
    with pytest.raises(ValueError, match="statistic"):
        posterior_predictive_check(nuts_run, prior=prior, statistic="ks")


def test_cli_summary_json_reports_ppc_p_values(nuts_run, tmp_path, capsys):
    path = bigmali.save_run(nuts_run, tmp_path / "run.nc")
    assert cli.main(["summary", str(path), "--json", "--ppc-draws", "50"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert 0.0 <= result["ppc_p_value"] <= 1.0
    assert len(result["ppc_p_value_by_bin"]) == len(result["ppc_n_halos_by_bin"]) and result["ppc_replicates"] == 50


@pytest.fixture(scope="module")
def outlier_run(small_mock, prior):
    lum = small_mock.lum_obs.copy()
    lum[7] *= 30.0  # a halo far brighter than its redshift's masses allow
    catalog = bigmali.Catalog.from_arrays(z=small_mock.z, lum_obs=lum)
    return bigmali.fit(catalog, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=0, seed=3)


def test_loo_points_at_an_injected_outlier(outlier_run):
    result = halo_loo(outlier_run, n_worst=3)
    assert result["method"] == "exact" and result["exact_halos"] == 1500
    assert result["worst"][0]["halo"] == 7
    assert result["worst"][0]["elpd_i"] < result["elpd_i_median"] - 5
    assert result["n_halos"] == 1500 and "halo" in format_loo(result)


def test_large_catalog_loo_subsamples_and_still_finds_the_outlier(outlier_run, monkeypatch):
    from bigmali.diagnostics import loo

    exact = halo_loo(outlier_run, n_worst=3)
    monkeypatch.setattr(loo, "EXACT_MAX_HALOS", 1000)
    monkeypatch.setattr(loo, "SUBSAMPLE", 600)
    monkeypatch.setattr(loo, "CANDIDATES", 50)
    result = halo_loo(outlier_run, n_worst=3)
    assert result["method"] == "subsample" and 600 <= result["exact_halos"] <= 650
    assert result["worst"][0]["halo"] == 7  # exact PSIS on the lowest-lpd candidates
    assert result["worst"][0]["elpd_i"] == pytest.approx(exact["worst"][0]["elpd_i"], abs=1e-6)
    # The difference estimator with lpd as the approximation: elpd_i - lpd_i is tiny for all
    # but the outlier, so the estimate of the total is close to the exact one.
    assert abs(result["elpd_loo"] - exact["elpd_loo"]) < 2.0, (result["elpd_loo"], exact["elpd_loo"])


def test_loo_needs_the_log_likelihood_group(small_mock, prior):
    run = bigmali.fit(small_mock, prior=prior, method="svi", steps=300, progress=False, mass_draws=0, log_likelihood=0)
    with pytest.raises(ValueError, match="log_likelihood"):
        halo_loo(run)
