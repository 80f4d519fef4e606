"""The command line: simulate, validate and prior, through the installed console script."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bigmali import cli
from bigmali.catalog import read_catalog


def run(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "bigmali.cli", *args], capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_simulate_then_validate_a_2017_sized_mock(tmp_path):
    out = tmp_path / "mock.fits"
    done = run("simulate", "--out", str(out), "--n-halos", "115919", "--seed", "0")  # timed by benchmarks/foundation.py
    assert "halos:    115919" in done.stdout and "the 2017 mock had 115919" in done.stdout
    assert len(read_catalog(out)) == 115_919
    val = run("validate", str(out))
    assert "valid catalog" in val.stdout and "115919" in val.stdout


@pytest.mark.parametrize("suffix", [".fits", ".txt", ".ecsv", ".csv"])
def test_cli_files_round_trip_without_changing_a_value(tmp_path, suffix):
    first = tmp_path / f"a{suffix}"
    cli.main(["simulate", "--out", str(first), "--n-halos", "300", "--seed", "4"])
    original = read_catalog(first)
    # Re-simulating from its redshifts and positions keeps them bit for bit.
    second = tmp_path / f"b{suffix}"
    assert cli.main(["simulate", "--out", str(second), "--redshifts-from", str(first), "--seed", "4"]) == 0
    copy = read_catalog(second)
    for name in ("z", "ra", "dec"):
        np.testing.assert_array_equal(copy.table[name], original.table[name])


def test_text_and_fits_agree_value_for_value(tmp_path):
    cli.main(["simulate", "--out", str(tmp_path / "m.fits"), "--n-halos", "1000", "--seed", "8"])
    cli.main(["simulate", "--out", str(tmp_path / "m.txt"), "--n-halos", "1000", "--seed", "8"])
    fits, text = read_catalog(tmp_path / "m.fits"), read_catalog(tmp_path / "m.txt")
    for name in text.table.colnames:
        np.testing.assert_array_equal(text.table[name], fits.table[name])


def test_hyper_flag(tmp_path):
    out = tmp_path / "h.ecsv"
    assert cli.main(["simulate", "--out", str(out), "--n-halos", "50", "--hyper", "alpha1=11,S=0.2"]) == 0
    meta = read_catalog(out).meta
    assert meta["ALPHA1"] == 11.0 and meta["S"] == 0.2 and meta["ALPHA2"] == 0.36260141487530501


def test_simulate_with_per_halo_errors_writes_the_column(tmp_path, capsys):
    out = tmp_path / "e.fits"
    assert cli.main(["simulate", "--out", str(out), "--n-halos", "200", "--lum-obs-err", "0.02,0.3"]) == 0
    catalog = read_catalog(out)
    assert catalog.lum_obs_err.min() >= 0.02 and catalog.lum_obs_err.max() <= 0.3
    assert "optional: " in capsys.readouterr().out
    for bad in ("0.3", "0,0.3", "0.3,0.02", "a,b"):
        with pytest.raises(SystemExit):
            cli.main(["simulate", "--out", str(tmp_path / "x.fits"), "--lum-obs-err", bad])
        assert "--lum-obs-err" in capsys.readouterr().err


def test_bad_hyper_flag_fails_clearly_when_parsed(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", "--out", str(tmp_path / "x.fits"), "--hyper", "alpha9=1"])
    assert exit_.value.code == 2
    assert "argument --hyper" in (err := capsys.readouterr().err) and "alpha9=1" in err


def test_prior_plot(tmp_path):
    png = tmp_path / "prior.png"
    done = run("prior", "--plot", str(png))
    assert "20 at z" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_prior_flags_are_shared(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIGMALI_CACHE_DIR", str(tmp_path))
    for command in (
        ["prior"],
        ["validate", "nothing.fits"],
        ["simulate", "--out", str(tmp_path / "s.fits"), "--n-halos", "5"],
    ):
        args = cli.build_parser().parse_args(
            command
            + ["--mass-convention", "physical", "--z-interp", "linear", "--hmf-model", "ST", "--cosmology", "Planck18"]
        )
        assert (args.mass_convention, args.z_interp, args.hmf_model, args.cosmology) == (
            "physical",
            "linear",
            "ST",
            "Planck18",
        )
    assert cli.main(["prior", "--mass-convention", "physical", "--z-interp", "linear"]) == 0
    assert "physical mass convention, z linear" in capsys.readouterr().out


def test_prior_table_file_needs_the_density_flag(tmp_path, capsys):
    from astropy.table import Table

    Table({"z": [0.0, 0.0], "mass": [1e10, 1e12], "density": [1.0, 0.1]}).write(tmp_path / "t.ecsv")
    assert cli.main(["prior", "--mass-prior", str(tmp_path / "t.ecsv")]) == 1
    assert "--prior-density-per" in capsys.readouterr().err
    assert cli.main(["prior", "--mass-prior", str(tmp_path / "t.ecsv"), "--prior-density-per", "lnM"]) == 0


def test_validate_uses_the_prior_redshift_range(tmp_path, capsys):
    from astropy.table import Table

    path = tmp_path / "cat.txt"
    path.write_text("0.5 1e4\n1.5 1e4\n")
    table = tmp_path / "t.ecsv"
    Table({"z": [0.0, 0.0, 1.0, 1.0], "mass": [1e10, 1e12] * 2, "density": [1.0, 0.1] * 2}).write(table)
    assert cli.main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["validate", str(path), "--mass-prior", str(table), "--prior-density-per", "M"]) == 1
    assert "row 1: value 1.5 is beyond the mass prior's redshift range [0, 1]" in capsys.readouterr().err


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("bigmali") or str(__import__("pathlib").Path(sys.executable).with_name("bigmali"))
    done = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "simulate" in done.stdout


def test_fit_command_writes_a_run_that_summary_reads(tmp_path, capsys):
    """``bigmali fit`` from start to finish, as a user types it, on a small mock (made and
    summarised in this process; the fit runs as a command). The mock has the shared mock's
    size (conftest.py), so the command can load the programs the suite compiled."""
    catalog, out = tmp_path / "mock.fits", tmp_path / "run.nc"
    assert cli.main(["simulate", "--out", str(catalog), "--n-halos", "1500", "--seed", "2"]) == 0
    done = run(
        "fit",
        str(catalog),
        "--out",
        str(out),
        "--chains",
        "1",
        "--warmup",
        "40",
        "--draws",
        "40",
        "--mass-draws",
        "2",
        "--seed",
        "1",
        "--quiet",
    )
    assert out.exists(), done.stdout
    import bigmali

    fitted = bigmali.load_run(out)
    assert fitted["posterior"]["alpha1"].shape == (1, 40)
    assert fitted["halo_mass"]["ln_mass"].shape[-1] == 1500
    config = json.loads(fitted.attrs["config"])
    assert config["target_accept"] == 0.65 and config["warmup"] == 40  # the engine's default, the user's setting
    capsys.readouterr()
    assert cli.main(["summary", str(out), "--json", "--no-ppc", "--no-conflict"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["parameters"]) == {"alpha1", "alpha2", "alpha4", "S"}


def test_fit_command_refuses_an_option_its_method_lacks(tmp_path, capsys):
    catalog = tmp_path / "mock.fits"
    assert cli.main(["simulate", "--out", str(catalog), "--n-halos", "50", "--seed", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["fit", str(catalog), "--out", str(tmp_path / "run.nc"), "--steps", "100"]) == 1
    assert "option 'steps' does not apply to method 'nuts'" in capsys.readouterr().err
    assert not (tmp_path / "run.nc").exists()


def test_demo_command_prints_the_recovery_table(tmp_path):
    """The README's main job, at a small size (the shared mock's, as above)."""
    done = run(
        "demo",
        "--n-halos",
        "1500",
        "--chains",
        "1",
        "--warmup",
        "40",
        "--draws",
        "40",
        "--mass-draws",
        "0",
        "--seed",
        "3",
        "--json",
        "--quiet",
    )
    table = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert set(table["parameters"]) == {"alpha1", "alpha2", "alpha4", "S"}
    assert all(0.0 <= entry["quantile"] <= 1.0 for entry in table["parameters"].values())
    assert "total" in done.stdout
