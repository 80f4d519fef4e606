"""The evidence of the collapsed model and the comparison of mass priors (compare-priors)."""

import json

import numpy as np
import pytest

import bigmali
from bigmali import cli
from bigmali.inference.evidence import log_evidence, quadrature_log_evidence
from bigmali.mass_function import load_table
from bigmali.mass_prior import H_2017, build_mass_prior, sampler_2017_table


@pytest.fixture(scope="module")
def low_z():
    """Two redshift tables (z <= 0.18) and 300 halos among them: a cheap likelihood."""
    table = load_table()
    mass = table.m * H_2017
    prior = build_mass_prior(table.z[:2], mass, table.dndm[:2], description="Tinker10, two tables")
    knots, density = sampler_2017_table(mass, table.dndm[:2])
    tilted = build_mass_prior(table.z[:2], knots, density, description="2017 sampler, two tables")
    z = np.random.default_rng(1).uniform(0.0, 0.18, 300)
    return prior, tilted, bigmali.simulate(prior, bigmali.HYPERSEED, redshifts=z, seed=3)


def test_evidence_matches_dense_quadrature_within_its_stated_error(low_z):
    prior, _, mock = low_z
    reference = quadrature_log_evidence(mock, prior, n_nodes=5)
    # Gauss-Hermite is converged: 5 and 6 nodes per dimension agree far inside the IS error.
    assert quadrature_log_evidence(mock, prior, n_nodes=4) == pytest.approx(reference, abs=1e-3)
    ev = log_evidence(mock, prior, n_draws=400, seed=0)
    assert ev.pareto_k < 0.7 and ev.ess > 200
    assert 0.0 < ev.error < 0.1
    assert abs(ev.log_evidence - reference) < 4.0 * ev.error, (ev.log_evidence, reference, ev.error)
    # Same seed, same numbers.
    assert log_evidence(mock, prior, n_draws=400, seed=0).log_evidence == ev.log_evidence


def test_evidence_prefers_the_prior_that_made_the_catalog(low_z):
    prior, tilted, mock = low_z
    right = log_evidence(mock, prior, n_draws=150, seed=1)
    wrong = log_evidence(mock, tilted, n_draws=150, seed=1)
    assert right.log_evidence - wrong.log_evidence > 10.0 * np.hypot(right.error, wrong.error)


def test_evidence_refuses_too_few_draws(low_z):
    prior, _, mock = low_z
    with pytest.raises(ValueError, match="n_draws"):
        log_evidence(mock, prior, n_draws=10)


def test_cli_compare_priors_applies_each_entrys_flags():
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "compare-priors",
            "c.fits",
            "--z-interp",
            "linear",
            "--mass-prior",
            "tinker10",
            "--mass-prior",
            "tinker10",
            "--mass-convention",
            "physical",
            "--mass-prior",
            "2017-sampler",
        ]
    )
    assert args.common == {"z_interp": "linear"}
    assert args.entries == [
        {"source": "tinker10"},
        {"source": "tinker10", "mass_convention": "physical"},
        {"source": "2017-sampler"},
    ]


def test_cli_compare_priors_table(tmp_path, capsys):
    prior = bigmali.load_mass_prior()
    mock = bigmali.simulate(prior, bigmali.HYPERSEED, n_halos=400, seed=5)
    path = bigmali.write_catalog(mock, tmp_path / "mock.fits") or tmp_path / "mock.fits"
    argv = [
        "compare-priors",
        str(path),
        "--mass-prior",
        "tinker10",
        "--mass-prior",
        "2017-sampler",
        "--n-draws",
        "200",
        "--loo-draws",
        "40",
        "--quiet",
    ]
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["priors"]
    assert set(rows) == {"tinker10", "2017-sampler"} and result["best_evidence"] == "tinker10"
    assert rows["2017-sampler"]["delta_log_evidence"] < -5.0 and rows["tinker10"]["delta_log_evidence"] == 0.0
    # ArviZ 1.x: elpd_diff = elpd - elpd of the best (<= 0), dse its standard error
    assert (
        rows["2017-sampler"]["elpd_diff"] < 0.0
        and rows["2017-sampler"]["elpd_dse"] > 0.0
        and rows["tinker10"]["elpd_diff"] == 0.0
    )
    for row in rows.values():
        assert (
            row["error"] > 0
            and np.isfinite(row["log_evidence"])
            and set(row["hyper"]) == {"alpha1", "alpha2", "alpha4", "S"}
        )
    with pytest.raises(SystemExit):
        cli.main(["compare-priors", str(path), "--n-draws", "5"])
    assert cli.main(["compare-priors", str(path)]) == 1  # no --mass-prior given
