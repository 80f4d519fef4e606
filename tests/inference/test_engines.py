"""The engine interface: the registry, configs as the one home of defaults, and the CLI built from them."""

import json

import pytest

import bigmali
from bigmali import cli
from bigmali.inference import nuts
from bigmali.inference.engines import ENGINES, MINIMUM, engine_for, make_config
from bigmali.models import MODELS


def test_every_method_is_an_engine_with_a_config_models_and_a_run():
    assert set(ENGINES) == {"nuts", "nuts_gibbs", "svi", "is_prior", "is_proposal", "pmmh", "nuts_is"}
    for name, engine in ENGINES.items():
        assert engine.name == name and callable(engine.run) and engine.summary
        assert set(engine.models) <= set(MODELS) and engine.models
        defaults = engine.config._field_defaults
        assert set(defaults) == set(engine.config._fields), f"{name}: every option has a default"
        assert {"seed", "progress"} <= set(defaults)
        assert engine.config() == engine.config(**defaults)


def test_make_config_checks_options_before_any_work():
    engine = engine_for("nuts", "collapsed")
    with pytest.raises(ValueError, match="option 'steps' does not apply to method 'nuts'"):
        make_config(engine, "collapsed", {"steps": 10})
    for name, least in MINIMUM.items():
        owner = next(e for e in ENGINES.values() if name in e.config._fields)
        with pytest.raises(ValueError, match=f"{name} = {least - 1}: must be an integer >= {least}"):
            make_config(owner, "collapsed", {name: least - 1})
        with pytest.raises(ValueError, match=f"{name} = True"):
            make_config(owner, "collapsed", {name: True})
    # target_accept: the model's default unless given.
    assert make_config(engine, "collapsed", {}).target_accept == nuts.TARGET_ACCEPT["collapsed"]
    assert make_config(engine, "full", {}).target_accept == nuts.TARGET_ACCEPT["latent"]
    assert make_config(engine, "full", {"target_accept": 0.9}).target_accept == 0.9
    # warmup: the short one when drawing to a target ESS, unless given; the fixed count's otherwise.
    assert make_config(engine, "collapsed", {"target_ess": 400}).warmup == nuts.TARGET_ESS_WARMUP
    assert make_config(engine, "collapsed", {"target_ess": 400, "warmup": 50}).warmup == 50
    assert make_config(engine, "collapsed", {}).warmup == nuts.NutsConfig().warmup == 1000
    assert make_config(engine, "collapsed", {"target_ess": 0}).warmup == 1000


def test_a_run_to_a_target_ess_records_the_draws_it_made(small_mock, prior):
    run = bigmali.fit(small_mock, prior=prior, chains=2, draws=1000, target_ess=150, mass_draws=0, progress=False)
    config = json.loads(run.attrs["config"])
    drawn = run["posterior"].sizes["draw"]
    assert drawn < 1000 and config["draws"] == drawn and config["max_draws"] == 1000 and config["target_ess"] == 150
    assert config["warmup"] == nuts.TARGET_ESS_WARMUP
    result = bigmali.summary(run, influence=False)
    assert all(min(p["ess_bulk"], p["ess_tail"]) >= 150 for p in result["parameters"].values())


def test_target_ess_is_refused_for_models_with_per_halo_latents(prior):
    catalog = bigmali.simulate(prior, n_halos=50, seed=1)
    for method in ("nuts", "nuts_gibbs"):
        with pytest.raises(ValueError, match="target_ess = 100: drawing until a target ESS is for the collapsed model"):
            bigmali.fit(catalog, "latent_mass", method, prior=prior, target_ess=100, progress=False)


def test_engine_for_refuses_unknown_names_and_models_it_cannot_fit():
    with pytest.raises(ValueError, match="method 'hmc': choose one of nuts"):
        engine_for("hmc", "collapsed")
    with pytest.raises(
        ValueError, match="method 'svi': the full model is fitted with nuts; use it with model='collapsed'"
    ):
        engine_for("svi", "full")


def test_cli_flags_are_the_engines_options_with_their_defaults():
    parser = cli.build_parser()
    args = parser.parse_args(["fit", "cat.fits", "--out", "run.nc"])
    options = {name for engine in ENGINES.values() for name in engine.config._fields} - set(cli.CLI_OWNED)
    assert set(args.engine_options) == options
    assert all(getattr(args, name) is None for name in options)  # left out: the engine's default applies
    assert cli._fit_kwargs(args) == {"seed": 0, "progress": True, "mass_draws": 20}
    given = parser.parse_args(["fit", "cat.fits", "--out", "r.nc", "--method", "pmmh", "--draws", "7", "--no-is-clip"])
    assert cli._fit_kwargs(given) == {"seed": 0, "progress": True, "mass_draws": 20, "draws": 7, "is_clip": False}
    # Each default shown in the help is the config's.
    text = parser._subparsers._group_actions[0].choices["fit"].format_help()
    assert "SVI steps (default: 3000; svi)" in " ".join(text.split())
    # demo fits with NUTS: it offers NUTS's options only.
    demo = parser.parse_args(["demo"])
    assert set(demo.engine_options) == set(ENGINES["nuts"].config._fields) - set(cli.CLI_OWNED)
    # ... and draws until a usable posterior unless told otherwise.
    assert cli._fit_kwargs(demo)["target_ess"] == cli.DEMO_DEFAULTS["target_ess"]
    assert cli._fit_kwargs(parser.parse_args(["demo", "--target-ess", "0"]))["target_ess"] == 0


def test_a_catalog_with_per_halo_errors_is_fitted_with_them_and_the_run_keeps_them(prior, tmp_path):
    """The collapsed tables and the latent models' arguments carry the column; the DataTree
    records it (the rebuilt catalog has it, and its fingerprint covers it), the pointwise
    log-likelihood is computed with it, and a catalog whose errors differ is told apart."""
    import numpy as np

    from bigmali.catalog import Catalog
    from bigmali.datatree import attr_json, check_run_data, load_run, run_catalog, save_run
    from bigmali.inference.engines import fit_data
    from bigmali.likelihood import quadrature as Q

    catalog = bigmali.simulate(prior, n_halos=300, seed=6, lum_obs_err=(0.02, 0.3))
    err = np.asarray(catalog.lum_obs_err)
    np.testing.assert_array_equal(np.asarray(fit_data(catalog, prior, "collapsed").collapsed.obs_err), err)
    np.testing.assert_array_equal(np.asarray(fit_data(catalog, prior, "latent_mass").model_args[3]), err)
    run = bigmali.fit(catalog, prior=prior, chains=1, warmup=100, draws=30, progress=False, mass_draws=2)
    back = run_catalog(load_run(save_run(run, tmp_path / "run.nc")))
    np.testing.assert_array_equal(back.lum_obs_err, err)
    assert back.fingerprint() == catalog.fingerprint() == attr_json(run, "fingerprint")["catalog_sha256"]
    draw = {name: float(run["posterior"][name][0, 0]) for name in bigmali.Hyper._fields}
    exact = Q.log_likelihood_halos(bigmali.Hyper(**draw), Q.prepare(catalog.z, catalog.lum_obs, prior, lum_obs_err=err))
    np.testing.assert_allclose(run["log_likelihood"]["lum_obs"][0, 0], exact, rtol=1e-10)
    other = Catalog.from_arrays(z=catalog.z, lum_obs=catalog.lum_obs, lum_obs_err=err * 1.1)
    with pytest.raises(ValueError, match="column 'lum_obs_err' differs in 300 of 300 rows, first at row 0"):
        check_run_data(run, other)
    with pytest.raises(ValueError, match="column 'lum_obs_err': only the run has per-halo measurement errors"):
        check_run_data(run, Catalog.from_arrays(z=catalog.z, lum_obs=catalog.lum_obs))


@pytest.mark.parametrize("method,options", [("pmmh", {}), ("nuts_is", {}), ("is_prior", {"is_likelihood": "is"})])
def test_the_2017_is_likelihood_refuses_a_flux_limited_catalog(prior, method, options):
    """It knows no flux limit: fitting with it would treat the selected catalog as complete."""
    catalog = bigmali.Catalog.from_arrays(z=[0.1, 0.2, 0.3], lum_obs=[1e4, 2e4, 3e4])
    with pytest.raises(ValueError, match=f"method '{method}': the 2017 importance-sampling likelihood does not model"):
        bigmali.fit(catalog, method=method, prior=prior, flux_limit="1e3", progress=False, **options)
