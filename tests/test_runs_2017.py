"""The 2017 data shipped in data/2017: every file loads, the 2017 runs read back as weighted
runs with the 2017 figures, malformed files are refused clearly, and the CLI imports them."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import bigmali
from bigmali import cli
from bigmali.runs_2017 import read_2017_run, read_2017_table

DATA = Path(__file__).resolve().parent.parent / "data" / "2017"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "2017"
RUN_ROWS = {
    "bigmaliprior.out": 9600,
    "bigmaliorig.out": 9600,
    "fullexp10000.txt": 2560,
    "justStest.txt": 960,
    "simpletest10000.txt": 320,
    "likelihoodvariancetest.txt": 800,
    "likelihoodvariancetest1000samples.txt": 400,
    "likelihoodvariancetest10000samples.txt": 80,
}


def test_the_copies_are_the_2017_files():
    sums = dict(line.split()[::-1] for line in (DATA / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(RUN_ROWS) | {"mock_data_prior.txt", "regenerate-mock-data-with-prior.txt"}
    for name, digest in sums.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
        if SHARED.is_dir():  # the project's own copy, where this checkout sits beside it
            assert (SHARED / name).read_bytes() == (DATA / name).read_bytes(), name


def test_every_2017_file_loads():
    catalog = bigmali.read_catalog(DATA / "mock_data_prior.txt")
    assert len(catalog) == 115_919 and catalog.z.max() <= 3.5
    for name, rows in RUN_ROWS.items():
        run = read_2017_run(DATA / name)
        assert run["posterior"].sizes == {"chain": 1, "draw": rows}, name
        assert np.isfinite(np.asarray(run["sample_stats"]["log_likelihood_estimate"])).all(), name
    assert "alpha1 = norm(10.709, 0.022).rvs()" in (DATA / "regenerate-mock-data-with-prior.txt").read_text()


def test_the_2017_hyper_level_run_reproduces_the_2017_failure():
    run = read_2017_run(DATA / "bigmaliprior.out")
    weights = json.loads(run.attrs["weights"])
    assert weights["ess"] == pytest.approx(1.0, abs=1e-6)  # Failure Mode 2: one draw takes all the weight
    assert weights["max_share"] > 0.999999 and weights["pareto_k"] > 0.7
    table = read_2017_table(DATA / "bigmaliprior.out")
    top = int(np.argmax(table["loglik"]))
    result = bigmali.summary(run, truth="hyperseed")
    assert result["parameters"]["alpha1"]["mean"] == pytest.approx(table["alpha1"][top], rel=1e-12)
    assert result["method"] == "2017" and result["weights"]["ess"] == pytest.approx(1.0, abs=1e-6)


def test_s_only_runs_fix_the_alphas_at_the_hyperseed():
    run = read_2017_run(DATA / "justStest.txt")
    for name in ("alpha1", "alpha2", "alpha4"):
        assert np.all(np.asarray(run["posterior"][name]) == getattr(bigmali.HYPERSEED, name))
    s = np.asarray(run["posterior"]["S"]).ravel()
    assert s.size == 960 and 0.14 < s.min() < s.max() < 0.17
    assert json.loads(run.attrs["config"])["fixed_at_hyperseed"] == ["alpha1", "alpha2", "alpha4"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.7 0.36 1.1 0.155 -9.8e5\n10.7 0.36 1.1 -9.8e5\n", "line 2: 4 values where the file's first line has 5"),
        ("10.7 0.36 1.1\n", "line 1: 3 values"),
        (
            "10.7 0.36 1.1 0.155 -9.8e5\n10.7 abc 1.1 0.155 -9.8e5\n",
            "line 2, column 'alpha2': value 'abc' is not a number",
        ),
        ("0.155 -9.8e5\n-0.1 -9.8e5\n", "line 2, column 'S': value '-0.1' must be a positive number"),
        ("0.155 nan\n", "line 1, column 'loglik': value 'nan' must be a number or -inf"),
        ("10.7 0.36 inf 0.155 -9.8e5\n", "column 'alpha4': value 'inf' must be a finite number"),
        ("\n\n", "holds no hyper-samples"),
    ],
)
def test_a_malformed_2017_file_names_its_line_column_and_value(tmp_path, text, message):
    path = tmp_path / "bad.out"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_2017_run(path)
    assert "bad.out" in str(info.value)
    with pytest.raises(ValueError, match="no such file"):
        read_2017_run(tmp_path / "missing.out")
    with pytest.raises(ValueError, match="directory"):
        read_2017_run(tmp_path)


def test_minus_infinity_is_a_weight_of_zero(tmp_path):
    path = tmp_path / "run.out"
    rows = [f"10.7 0.36 1.1 0.155 {-100 - 0.1 * i}" for i in range(30)]
    rows[1] = "10.71 0.36 1.1 0.155 -inf"
    path.write_text("\n".join(rows) + "\n")
    run = read_2017_run(path)
    for group in ("log_weight_raw", "log_weight"):
        w = np.exp(np.asarray(run["sample_stats"][group]).ravel())
        assert w[1] == 0.0 and w.sum() == pytest.approx(1.0) and np.all(w[np.arange(30) != 1] > 0), group
    # Three weights are too few for a Pareto tail: no smoothing and no k-hat, not a crash.
    path.write_text("10.7 0.36 1.1 0.155 -100\n10.71 0.36 1.1 0.155 -inf\n10.72 0.36 1.1 0.155 -101\n")
    assert np.isnan(json.loads(read_2017_run(path).attrs["weights"])["pareto_k"])


def test_cli_imports_a_2017_run_and_summary_json_writes_infinite_k_hat_as_infinity(tmp_path, capsys):
    # Log-likelihoods 10^4 apart: no usable tail, an infinite Pareto k-hat (the 2017 case in miniature).
    rng = np.random.default_rng(0)
    rows = [
        f"{10.709 + 0.022 * a} {0.359 + 0.009 * b} {1.1 + 0.06 * c} {0.155 + 0.0009 * d} {-1e6 + 1e4 * e}"
        for a, b, c, d, e in rng.standard_normal((200, 5))
    ]
    source = tmp_path / "tiny.out"
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run.nc"
    assert cli.main(["import-2017", str(source), "--out", str(out)]) == 0
    assert cli.main(["import-2017", str(source), "--out", str(out)]) == 1  # exists: --overwrite needed
    capsys.readouterr()
    assert cli.main(["summary", str(out), "--json", "--truth", "hyperseed"]) == 0
    result = json.loads(
        capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")
    )
    assert result["weights"]["pareto_k"] == "Infinity" and float(result["weights"]["pareto_k"]) == float("inf")
    assert result["parameters"]["alpha1"]["r_hat"] is None  # NaN stays null: it does not exist for weighted draws
    assert "ppc_p_value" not in result  # no catalog attached: no PPC
    assert result["prior_conflict"]["psense"] is None and result["prior_conflict"]["distance"]["alpha1"] is not None


def test_a_2017_run_with_its_catalog_gets_the_catalog_checks(tmp_path):
    catalog = bigmali.read_catalog(DATA / "mock_data_prior.txt")
    run = read_2017_run(DATA / "simpletest10000.txt", catalog)
    assert int(run.attrs["n_halos"]) == 115_919
    assert np.array_equal(np.asarray(run["constant_data"]["z"]), catalog.z)
    path = bigmali.save_run(run, tmp_path / "run.nc")
    back = bigmali.load_run(path)
    from bigmali.datatree import check_run_data

    assert check_run_data(back, catalog) == []
    other = bigmali.Catalog.from_arrays(z=catalog.z, lum_obs=catalog.lum_obs * 1.01)
    with pytest.raises(ValueError, match="lum_obs"):
        check_run_data(back, other)
    # compare works on 2017 runs unchanged
    result = bigmali.compare([back, read_2017_run(DATA / "justStest.txt")])
    s_rows = result["parameters"]["S"]
    assert len(s_rows) == 2 and 0.15 < s_rows[0]["mean"] < 0.16 and np.isfinite(s_rows[1]["diff_sd"])
