"""fit, summary, save/load and extend on a small mock (collapsed model)."""

import json

import numpy as np
import pytest

import bigmali
from bigmali import cli
from bigmali.relation import HYPER_NAMES

SUMMARY_KEYS = {"truth", "mean", "sd", "quantile", "z_score", "in_hdi_68", "in_hdi_95", "r_hat", "ess_bulk", "ess_tail"}


def test_nuts_run_has_the_arviz_groups(nuts_run):
    for group in (
        "posterior",
        "sample_stats",
        "observed_data",
        "constant_data",
        "prior",
        "halo_mass",
        "sampler_state",
        "log_likelihood",
    ):
        assert group in nuts_run.children, group
    assert set(HYPER_NAMES) <= set(nuts_run["posterior"].data_vars)
    assert nuts_run["posterior"]["alpha1"].shape == (2, 300)
    assert nuts_run["halo_mass"]["ln_mass"].shape == (2, 2, 1500)
    assert nuts_run.attrs["model"] == "collapsed" and nuts_run.attrs["n_halos"] == 1500


def test_summary_json_has_the_promised_shape(nuts_run):
    result = bigmali.summary(nuts_run, truth="hyperseed")
    assert set(result) >= {"parameters", "divergences", "n_halos", "model", "method", "seconds"}
    assert set(result["parameters"]) == set(HYPER_NAMES)
    for entry in result["parameters"].values():
        assert set(entry) == SUMMARY_KEYS
        assert 0.0 <= entry["quantile"] <= 1.0 and entry["r_hat"] < 1.05
    assert result["divergences"] == 0
    json.dumps(result)


def test_small_mock_posterior_is_consistent_with_the_truth(nuts_run):
    # 1,500 halos: a weak constraint; the truth must sit inside the central 99.8% of every marginal.
    for name, entry in bigmali.summary(nuts_run, truth="hyperseed")["parameters"].items():
        assert 0.001 < entry["quantile"] < 0.999, name


def test_halo_masses_track_the_true_masses(nuts_run, small_mock):
    ln_mass = np.asarray(nuts_run["halo_mass"]["ln_mass"]).reshape(-1, 1500).mean(axis=0)
    truth = np.log(small_mock.mass)
    assert np.corrcoef(ln_mass, truth)[0, 1] > 0.7
    assert abs(np.mean(ln_mass - truth)) < 0.1


def test_log_likelihood_group_is_the_collapsed_likelihood_and_serves_loo(nuts_run, small_mock, prior):
    import arviz_stats as azs
    import jax.numpy as jnp

    from bigmali.likelihood.quadrature import log_likelihood
    from bigmali.models import collapsed

    values = nuts_run["log_likelihood"]["lum_obs"]
    assert values.shape == (2, 300, 1500)
    post = nuts_run["posterior"]
    hyper = bigmali.Hyper(*(float(post[name][1, 37]) for name in HYPER_NAMES))
    data = collapsed.prepare_data(jnp.asarray(small_mock.z), jnp.asarray(small_mock.lum_obs), prior)
    assert float(values[1, 37].sum()) == pytest.approx(float(log_likelihood(hyper, data)), abs=1e-6)
    loo = azs.loo(nuts_run)
    assert np.isfinite(loo.elpd) and 0.5 < loo.p < 8  # about the four hyperparameters
    # A budget below chains x draws x halos keeps evenly spaced draws, and says which.
    thinned, picks = bigmali.pointwise_log_likelihood(
        {k: np.asarray(post[k]) for k in HYPER_NAMES}, small_mock, prior, max_values=2 * 10 * 1500
    )
    assert thinned.shape == (2, 10, 1500) and picks[0] == 0 and picks[-1] == 299
    np.testing.assert_allclose(thinned[:, 3], np.asarray(values[:, picks[3]]), rtol=1e-12)


def test_save_load_round_trip_and_extend(nuts_run, small_mock, prior, tmp_path):
    path = bigmali.save_run(nuts_run, tmp_path / "run.nc")
    back = bigmali.load_run(path)
    np.testing.assert_array_equal(back["posterior"]["alpha1"], nuts_run["posterior"]["alpha1"])
    # Fitted with a prior object and no options: extend must be given the prior, not guess it.
    with pytest.raises(ValueError, match="pass it as prior="):
        bigmali.extend(back, small_mock, draws=5, progress=False, mass_draws=0)
    longer = bigmali.extend(back, small_mock, draws=50, prior=prior, progress=False, mass_draws=0)
    assert longer["posterior"]["alpha1"].shape == (2, 350)
    assert longer["log_likelihood"]["lum_obs"].shape == (2, 350, 1500)
    np.testing.assert_array_equal(
        np.asarray(longer["posterior"]["alpha1"])[:, :300], np.asarray(nuts_run["posterior"]["alpha1"])
    )


def test_same_seed_same_numbers(small_mock, prior):
    a = bigmali.fit(
        small_mock, prior=prior, method="svi", steps=300, svi_draws=200, progress=False, mass_draws=0, seed=4
    )
    b = bigmali.fit(
        small_mock, prior=prior, method="svi", steps=300, svi_draws=200, progress=False, mass_draws=0, seed=4
    )
    np.testing.assert_array_equal(a["posterior"]["alpha2"], b["posterior"]["alpha2"])


def test_svi_agrees_with_nuts(nuts_run, small_mock, prior):
    svi = bigmali.fit(small_mock, prior=prior, method="svi", steps=2000, progress=False, mass_draws=0, seed=2)
    assert "svi_loss" in svi.children
    nuts = bigmali.summary(nuts_run)["parameters"]
    for name, entry in bigmali.summary(svi)["parameters"].items():
        # 400 NUTS draws: allow 0.35 sd for the means and 35% for the sds.
        assert abs(entry["mean"] - nuts[name]["mean"]) < 0.35 * nuts[name]["sd"], name
        assert entry["sd"] == pytest.approx(nuts[name]["sd"], rel=0.35), name


def test_cli_summary_json(nuts_run, tmp_path, capsys):
    path = bigmali.save_run(nuts_run, tmp_path / "run.nc")
    assert cli.main(["summary", str(path), "--truth", "hyperseed", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["parameters"]["S"]) == SUMMARY_KEYS


def test_bad_run_file_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    assert cli.main(["summary", str(bad)]) == 1
    assert "cannot read run" in capsys.readouterr().err


def test_unknown_model_is_refused(small_mock):
    with pytest.raises(ValueError, match="model 'nonsense': choose one of collapsed, latent_mass, full"):
        bigmali.fit(small_mock, model="nonsense")


def test_sharding_the_halos_is_refused_where_it_does_not_apply(small_mock):
    # The 4-device fit itself is tests/likelihood/test_sharding.py's (forced host devices).
    with pytest.raises(ValueError, match="split for the collapsed model, not latent_mass"):
        bigmali.fit(small_mock, model="latent_mass", shard_halos=True, progress=False)


def test_a_flux_limited_fit_records_its_limit_and_replicates_with_it(prior, tmp_path, capsys):
    """bigmali simulate --flux-limit, then bigmali fit reads the recorded limit and says so;
    the run records it (extend rebuilds the fit's data from it, datatree.run_flux_limit), its
    log-likelihood is conditioned on detection, and the PPC replicates with the same cut."""
    import numpy as np

    from bigmali import cli
    from bigmali.datatree import load_run
    from bigmali.likelihood import quadrature as Q
    from bigmali.selection import FluxLimit

    mock = tmp_path / "cut.fits"
    assert cli.main(["simulate", "--out", str(mock), "--n-halos", "600", "--seed", "2", "--flux-limit", "3000"]) == 0
    assert "selection: L_lim = 3000 at every z: kept " in capsys.readouterr().out
    out = tmp_path / "run.nc"
    argv = ["fit", str(mock), "--out", str(out), "--chains", "1", "--warmup", "100", "--draws", "40", "--quiet"]
    assert cli.main(argv + ["--mass-draws", "2"]) == 0
    assert "selection: L_lim = 3000 at every z (recorded in the catalog's metadata)" in capsys.readouterr().out
    run = load_run(out)
    assert FluxLimit.from_meta({"FLUXLIM": run.attrs["selection"]}) == FluxLimit.constant(3000.0)
    catalog = bigmali.read_catalog(mock)
    draw = bigmali.Hyper(*(float(run["posterior"][k][0, 0]) for k in bigmali.Hyper._fields))
    conditioned = Q.log_likelihood_halos(
        draw, Q.prepare(catalog.z, catalog.lum_obs, prior, lum_lim=np.full(len(catalog), 3000.0))
    )
    np.testing.assert_allclose(run["log_likelihood"]["lum_obs"][0, 0], conditioned, rtol=1e-10)
    # The PPC replicates with the same selection: every replicated halo is above the limit,
    # and the catalog is not flagged for being cut (without the cut, p would be 0).
    ppc = bigmali.posterior_predictive_check(run, prior=prior, n_draws=40)
    assert np.all(ppc.replicates > np.log(3000.0) - 1e-5) and ppc.p_value > 0.01
    # The report shows the limit over the data.
    bigmali.write_report(run, tmp_path / "report", prior=prior, ppc_draws=20)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Selection</h2>" in page and "recorded in the catalog&#x27;s metadata" in page
    assert (tmp_path / "report" / "selection.png").exists()
    # A limit given on the command line wins (tests/test_selection.py checks "none"); one
    # above a halo is refused, naming it.
    assert cli.main(argv + ["--flux-limit", "1e9", "--overwrite"]) == 1
    assert "column 'lum_obs', row 0" in capsys.readouterr().err


def test_an_extended_fit_reads_the_mocks_field_and_records_it(prior, tmp_path, capsys):
    """bigmali fit --selection extended on a Poisson lightcone mock: the survey window comes
    from the mock's metadata and is recorded; --survey-area overrides it."""
    from bigmali import cli
    from bigmali.datatree import load_run, run_survey
    from bigmali.selection import Survey

    mock = tmp_path / "lightcone.fits"
    assert cli.main(["simulate", "--out", str(mock), "--field-arcmin", "1.2", "--flux-limit", "3000"]) == 0
    out = tmp_path / "ext.nc"
    argv = ["fit", str(mock), "--out", str(out), "--chains", "1", "--warmup", "100", "--draws", "40", "--quiet"]
    assert cli.main(argv + ["--selection", "extended", "--mass-draws", "0"]) == 0
    printed = capsys.readouterr().out
    assert "extended likelihood: survey 0.0004" in printed and "(recorded in the catalog's metadata)" in printed
    run = load_run(out)
    assert run.attrs["selection_likelihood"] == "extended"
    assert run_survey(run) == Survey.from_meta(bigmali.read_catalog(mock).meta)
    assert cli.main(argv + ["--survey-area", "2", "--overwrite"]) == 1  # without --selection extended
    assert "--survey-area is for --selection extended" in capsys.readouterr().err
