"""The hyper-level importance-sampling methods (is_prior, is_proposal, pmmh, nuts_is) beside NUTS."""

import json

import numpy as np
import pytest

import bigmali
from bigmali import cli
from bigmali.relation import HYPER_NAMES


@pytest.fixture(scope="module")
def mock(small_mock):
    return small_mock


@pytest.fixture(scope="module")
def nuts_ref(mock, prior):
    return bigmali.fit(
        mock, prior=prior, chains=2, warmup=200, draws=500, progress=False, mass_draws=0, log_likelihood=0, seed=4
    )


def test_is_proposal_agrees_with_nuts(mock, prior, nuts_ref):
    run = bigmali.fit(mock, prior=prior, method="is_proposal", n_hyper=3000, progress=False, mass_draws=4)
    got, ref = bigmali.summary(run), bigmali.summary(nuts_ref)
    # Per-halo masses at draws resampled by weight; no LOO group for weighted draws.
    assert run["halo_mass"]["ln_mass"].shape == (1, 4, 1500) and "log_likelihood" not in run.children
    assert got["weights"]["pareto_k"] < 0.7
    for name in HYPER_NAMES:
        # NUTS's own Monte Carlo error at ESS ~800 is ~0.035 sd; 0.1 sd is the bound.
        assert (
            abs(got["parameters"][name]["mean"] - ref["parameters"][name]["mean"]) < 0.1 * ref["parameters"][name]["sd"]
        )
        assert 0.85 < got["parameters"][name]["sd"] / ref["parameters"][name]["sd"] < 1.15


def test_is_prior_pmmh_and_nuts_is_run_and_report(mock, prior, tmp_path, capsys):
    prior_run = bigmali.fit(
        mock,
        prior=prior,
        method="is_prior",
        n_hyper=300,
        is_likelihood="exact",
        progress=False,
        mass_draws=0,
        log_likelihood=0,
    )
    result = bigmali.summary(prior_run, truth="hyperseed")
    assert set(result["weights"]) == {"ess", "pareto_k", "max_share"}
    assert 1.0 <= result["weights"]["ess"] < 300
    assert np.asarray(prior_run["sample_stats"]["log_weight"]).shape == (1, 300)
    pm = bigmali.fit(
        mock,
        prior=prior,
        method="pmmh",
        chains=1,
        warmup=0,
        draws=15,
        is_samples=50,
        progress=False,
        mass_draws=0,
        log_likelihood=0,
    )
    assert 0.0 <= bigmali.summary(pm)["acceptance_rate"] <= 1.0
    assert np.asarray(pm["posterior"]["alpha1"]).shape == (1, 15)
    ni = bigmali.fit(
        mock,
        prior=prior,
        method="nuts_is",
        is_samples=30,
        is_clip=False,
        chains=1,
        warmup=60,
        draws=60,
        progress=False,
        mass_draws=0,
        log_likelihood=0,
    )
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
