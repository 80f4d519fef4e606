"""Simulation-based calibration: ranks, uniformity tests, resuming, the CLI and its plot."""

import json

import numpy as np
import pytest

from bigmali import cli
from bigmali.diagnostics.sbc import SbcResult, SbcSettings, format_sbc, plot_sbc, read_sbc, run_sbc
from bigmali.relation import HYPER_NAMES

# Collapsed NUTS is compiled once for 500-halo datasets at these settings; the fixture, the
# resumed run and the CLI run all reuse that sampler (pytest-xdist runs a file in one worker).
N_HALOS, WARMUP, DRAWS = 500, 100, 150


@pytest.fixture(scope="module")
def sbc(tmp_path_factory, prior):
    # CI's small version of benchmarks/sbc.py (200 mocks of 10^4 halos): 30 mocks of 500
    # halos, collapsed NUTS, 100 + 150 draws, each truth ranked among every other draw.
    path = tmp_path_factory.mktemp("sbc") / "sbc.jsonl"
    return run_sbc(path, 30, N_HALOS, prior=prior, warmup=WARMUP, draws=DRAWS, thin=2, seed=1, progress=False), path


def test_ranks_of_collapsed_nuts_are_uniform(sbc):
    result, _ = sbc
    assert result.dataset.tolist() == list(range(30))
    assert np.all((result.ranks >= 0) & (result.ranks <= result.settings.n_ranked))
    assert np.all((result.pit > 0) & (result.pit < 1))
    uniformity = result.uniformity()
    for name in HYPER_NAMES:  # each test has a 1% false-alarm rate; the seed is fixed
        assert not uniformity[name]["rejected"], (name, uniformity[name])
    # The truths are hyperprior draws, not one point: their spread is the hyperprior's.
    assert np.all(result.truths.std(axis=0) > 0)
    assert result.divergences.sum() == 0
    assert "uniform" in format_sbc(result)


def test_the_tests_reject_miscalibrated_ranks(sbc):
    result, _ = sbc
    rng = np.random.default_rng(0)
    n = 200
    biased = SbcResult(
        result.settings,
        np.arange(n),
        np.zeros((n, 4)),
        np.full((n, 4), np.nan),
        np.clip(rng.beta(2.0, 1.0, (n, 4)), 1e-6, 1 - 1e-6),
        np.zeros(n, int),
        np.zeros(n),
    )
    assert all(u["rejected"] for u in biased.uniformity().values())  # truths too often above the draws
    narrow = biased._replace(pit=np.clip(0.5 + 1.6 * (rng.uniform(size=(n, 4)) - 0.5), 1e-6, 1 - 1e-6))
    assert all(u["rejected"] for u in narrow.uniformity().values())  # posteriors too narrow: ranks at the ends


def test_resuming_gives_the_datasets_an_uninterrupted_run_gives(tmp_path, prior):
    whole = run_sbc(
        tmp_path / "whole.jsonl", 3, N_HALOS, prior=prior, warmup=WARMUP, draws=DRAWS, thin=2, progress=False
    )
    part = tmp_path / "part.jsonl"
    run_sbc(part, 2, N_HALOS, prior=prior, warmup=WARMUP, draws=DRAWS, thin=2, progress=False)
    with part.open("a") as handle:
        handle.write('{"dataset": 2, "tru')  # an interrupted write
    resumed = run_sbc(part, 3, N_HALOS, prior=prior, warmup=WARMUP, draws=DRAWS, thin=2, progress=False)
    np.testing.assert_array_equal(resumed.truths, whole.truths)
    np.testing.assert_array_equal(resumed.ranks, whole.ranks)
    assert len(part.read_text().splitlines()) == 4  # header and three datasets
    with pytest.raises(ValueError, match="thin"):
        run_sbc(part, 4, N_HALOS, prior=prior, warmup=WARMUP, draws=DRAWS, thin=5, progress=False)


def test_mocks_with_per_halo_errors_and_a_flux_limit_are_recorded_and_fitted_with_them(tmp_path, prior):
    """Every mock holds N detected halos (each from its truncated predictive) with its own
    errors, and the settings record both; the uniformity itself is measured by
    benchmarks/selection.py (100 datasets of 10^4 halos)."""
    from bigmali.selection import FluxLimit

    path = tmp_path / "err.jsonl"
    options = dict(prior=prior, warmup=WARMUP, draws=DRAWS, thin=2, progress=False)
    limit = FluxLimit.table([0.0, 3.5], [3e3, 3e4])
    result = run_sbc(path, 2, N_HALOS, lum_obs_err=(0.02, 0.3), flux_limit=limit, **options)
    assert result.settings.lum_obs_err == [0.02, 0.3] and result.divergences.sum() == 0
    assert FluxLimit.from_meta({"FLUXLIM": result.settings.flux_limit}) == limit
    with pytest.raises(ValueError, match=r"lum_obs_err = \[0.02, 0.3\], not None"):
        run_sbc(path, 3, N_HALOS, **options)
    with pytest.raises(ValueError, match="flux_limit = "):
        run_sbc(path, 3, N_HALOS, lum_obs_err=(0.02, 0.3), **options)


def test_other_methods_go_through_fit(tmp_path, prior):
    result = run_sbc(tmp_path / "svi.jsonl", 2, 300, method="svi", draws=200, thin=2, prior=prior, progress=False)
    assert result.settings.method == "svi" and result.dataset.tolist() == [0, 1]
    assert np.all((result.ranks >= 0) & (result.ranks <= 100)) and np.all((result.pit > 0) & (result.pit < 1))


def test_bad_files_and_settings_fail_clearly(tmp_path, prior):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    with pytest.raises(ValueError, match="format"):
        read_sbc(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_sbc(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="at least 1"):
        run_sbc(tmp_path / "x.jsonl", 0, 100, prior=prior)


def test_cli_sbc_writes_results_and_the_ecdf_plot(sbc, tmp_path, capsys):
    _, path = sbc
    settings = read_sbc(path).settings
    assert settings == SbcSettings(N_HALOS, warmup=WARMUP, draws=DRAWS, thin=2, seed=1, prior=None)
    plot = tmp_path / "ecdf.png"
    plot_sbc(read_sbc(path), plot)
    assert plot.stat().st_size > 10_000
    out = tmp_path / "cli.jsonl"
    assert (
        cli.main(
            [
                "sbc",
                "--n-datasets",
                "2",
                "--n-halos",
                str(N_HALOS),
                "--warmup",
                str(WARMUP),
                "--draws",
                str(DRAWS),
                "--thin",
                "3",
                "--out",
                str(out),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_datasets"] == 2 and set(printed["uniformity"]) == set(HYPER_NAMES)
    assert out.with_suffix(".png").exists()
    header = json.loads(out.read_text().splitlines()[0])
    assert header["settings"]["prior"]["hmf_model"] == "Tinker10"
