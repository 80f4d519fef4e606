"""Bad input and faults: each is refused with a clear error before work starts, converted
correctly, or warned about; no file is ever left half-written (issue 15's cases)."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

import bigmali
from bigmali import cli
from bigmali.files import atomic_path, atomic_write_text, check_output_dir, check_output_file


@pytest.fixture(scope="module")
def tiny():
    return bigmali.simulate(n_halos=60, seed=5)


@pytest.fixture()
def no_fit(monkeypatch):
    """Any fit started is a failure of the test: errors must come before the work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the fit started")

    monkeypatch.setattr(sys.modules["bigmali.fit"], "fit", refuse)  # `bigmali.fit` is also the function's name
    monkeypatch.setattr(sys.modules["bigmali.lightcone"], "simulate", refuse)


@contextmanager
def unwritable_directory(tmp_path):
    """A directory this process cannot write in, root included (chattr +i), else /sys."""
    d = tmp_path / "locked"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0:
        try:
            yield d
        finally:
            subprocess.run(["chattr", "-i", str(d)], check=True)
        return
    yield __import__("pathlib").Path("/sys")  # read-only for root in containers


# -- 1. atomic writes: an interrupted write leaves the previous file intact ----------------


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "run.nc"
    target.write_bytes(b"old good run")
    for exc in (RuntimeError("disk full"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(exc)):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half a ru")
                raise exc
        assert target.read_bytes() == b"old good run"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]  # no temporary left behind
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_run_killed_mid_write_leaves_the_previous_run(tmp_path, nuts_run):
    """A real SIGTERM while save_run is writing (the netCDF writer is held mid-file)."""
    target = tmp_path / "run.nc"
    bigmali.save_run(nuts_run, target)
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time, xarray as xr
        from bigmali import cli, load_run, save_run
        run = load_run({str(target)!r})
        real = xr.DataTree.to_netcdf
        def slow(self, path, **kw):
            real(self, path, **kw)              # the temporary file is complete ...
            open(path, "r+b").truncate(96)      # ... cut as the issue saw it, and the writer hangs
            print("writing", flush=True)
            time.sleep(60)
        xr.DataTree.to_netcdf = slow
        import signal
        signal.signal(signal.SIGTERM, cli._terminate)  # what `bigmali fit` installs
        save_run(run, {str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert target.read_bytes() == before  # the previous good run, every byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]
    assert bigmali.load_run(target)["posterior"]["alpha1"].shape == nuts_run["posterior"]["alpha1"].shape


def test_every_writer_goes_through_atomic_path(tmp_path, tiny, monkeypatch):
    """Catalogs (every format), SBC state and plots are written through atomic_path."""
    import bigmali.files as files

    seen = []
    real = files.atomic_path

    @contextmanager
    def spy(path):
        seen.append(os.path.basename(str(path)))
        with real(path) as tmp:
            yield tmp

    monkeypatch.setattr(files, "atomic_path", spy)
    for suffix in (".fits", ".ecsv", ".csv", ".txt"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the text format leaves `lum` out, and says so
            bigmali.write_catalog(tiny, tmp_path / f"c{suffix}")
    from bigmali.plotting import plot_mass_prior

    plot_mass_prior(bigmali.load_mass_prior(), tmp_path / "prior.png")
    assert seen == ["c.fits", "c.ecsv", "c.csv", "c.txt", "prior.png"]


# -- 2. output paths checked before any work ------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "{cat}", "--out", "{missing}/run.nc"],
        ["demo", "--n-halos", "50", "--out", "{missing}/run.nc"],
        ["simulate", "--n-halos", "50", "--out", "{missing}/mock.fits"],
    ],
)
def test_missing_output_directory_fails_before_work(tmp_path, tiny, no_fit, capsys, command):
    cat = tmp_path / "cat.fits"
    bigmali.write_catalog(tiny, cat)
    args = [a.format(cat=cat, missing=tmp_path / "no" / "such") for a in command]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "error: --out" in err and "does not exist" in err and "Traceback" not in err


def test_unwritable_directory_fails_before_work(tmp_path, tiny, no_fit, capsys):
    cat = tmp_path / "cat.fits"
    bigmali.write_catalog(tiny, cat)
    with unwritable_directory(tmp_path) as locked:
        assert cli.main(["fit", str(cat), "--out", str(locked / "run.nc")]) == 1
        err = capsys.readouterr().err
        assert "cannot write in directory" in err and str(locked) in err
        assert cli.main(["simulate", "--n-halos", "5", "--out", str(locked / "m.fits")]) == 1
        assert "cannot write in directory" in capsys.readouterr().err
        with pytest.raises(ValueError, match="cannot write in directory"):
            check_output_dir(locked / "report", flag="-o")


def test_existing_output_is_refused_without_overwrite(tmp_path, tiny, no_fit, capsys):
    cat = tmp_path / "cat.fits"
    bigmali.write_catalog(tiny, cat)
    existing = tmp_path / "run.nc"
    existing.write_bytes(b"a previous run")
    assert cli.main(["fit", str(cat), "--out", str(existing)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["simulate", "--out", str(cat)]) == 1
    assert existing.read_bytes() == b"a previous run"
    with pytest.raises(ValueError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        check_output_file(cat / "run.nc")


def test_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    def fail(**options):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr("bigmali.mass_prior.load_mass_prior", fail)
    assert cli.main(["prior"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"bigmali prior: error: Permission denied: {str(tmp_path / 'x')!r}"


# -- 3. flags checked when parsed, with their names ---------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["fit", "c.fits", "--out", "r.nc", "--chains", "0"], "--chains"),
        (["fit", "c.fits", "--out", "r.nc", "--draws", "-5"], "--draws"),
        (["fit", "c.fits", "--out", "r.nc", "--warmup", "-1"], "--warmup"),
        (["fit", "c.fits", "--out", "r.nc", "--seed", "1.5"], "--seed"),
        (["fit", "c.fits", "--out", "r.nc", "--seed", "-3"], "--seed"),
        (["fit", "c.fits", "--out", "r.nc", "--target-accept", "1.2"], "--target-accept"),
        (["fit", "c.fits", "--out", "r.nc", "--target-accept", "nan"], "--target-accept"),
        (["fit", "c.fits", "--out", "r.nc", "--learning-rate", "0"], "--learning-rate"),
        (["fit", "c.fits", "--out", "r.nc", "--steps", "0"], "--steps"),
        (["fit", "c.fits", "--out", "r.nc", "--is-samples", "0"], "--is-samples"),
        (["fit", "c.fits", "--out", "r.nc", "--n-hyper", "0"], "--n-hyper"),
        (["fit", "c.fits", "--out", "r.nc", "--mass-draws", "-1"], "--mass-draws"),
        (["simulate", "--out", "m.fits", "--n-halos", "0"], "--n-halos"),
        (["simulate", "--out", "m.fits", "--field-arcmin", "-40"], "--field-arcmin"),
        (["simulate", "--out", "m.fits", "--hyper", "S=-1"], "--hyper"),
        (["demo", "--n-halos", "ten"], "--n-halos"),
        (["summary", "r.nc", "--ppc-draws", "0"], "--ppc-draws"),
        (["massmap", "r.nc", "c.fits", "-o", "d", "--draws", "1"], "--draws"),
        (["massmap", "r.nc", "c.fits", "-o", "d", "--field", "10,100,1"], "--field"),
        (["massmap", "r.nc", "c.fits", "-o", "d", "--zbins", "0.5"], "--zbins"),
        (["massmap", "r.nc", "c.fits", "-o", "d", "--pixels", "0"], "--pixels"),
        (["sbc", "--n-datasets", "0", "--n-halos", "10", "--out", "s.jsonl"], "--n-datasets"),
        (["sbc", "--n-datasets", "2", "--n-halos", "10", "--out", "s.jsonl", "--thin", "0"], "--thin"),
        (["report", "r.nc", "-o", "d", "--ppc-draws", "-2"], "--ppc-draws"),
    ],
)
def test_bad_flags_fail_when_parsed_naming_the_flag(args, flag, capsys, no_fit):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err


def test_fit_checks_counts_by_name(tiny):
    for kwargs, name in (({"chains": 0}, "chains"), ({"draws": -5}, "draws"), ({"warmup": 2.5}, "warmup")):
        with pytest.raises(ValueError, match=f"^{name} = .*must be an integer"):
            bigmali.fit(tiny, **kwargs)


# -- 4. a run is bound to its catalog -----------------------------------------------------
# (the CLI's refusal of another catalog of the same size is in tests/test_massmap.py)


def test_run_records_its_fingerprint_and_checks_catalog_and_prior(nuts_run, small_mock, prior):
    from bigmali.datatree import attr_json, check_run_data
    from bigmali.mass_prior import prior_fingerprint

    recorded = attr_json(nuts_run, "fingerprint")
    assert recorded == {
        "n_halos": len(small_mock),
        "catalog_sha256": small_mock.fingerprint(),
        "prior_sha256": prior_fingerprint(prior),
    }
    assert check_run_data(nuts_run, small_mock, prior) == []
    z = small_mock.z.copy()
    z[11] += 1e-9
    moved = bigmali.Catalog.from_arrays(z=z, lum_obs=small_mock.lum_obs)
    with pytest.raises(ValueError, match=r"column 'z' differs in 1 of 1500 rows, first at row 11"):
        check_run_data(nuts_run, moved, prior)
    other_prior = bigmali.load_mass_prior(z_interp="linear")
    with pytest.raises(ValueError, match="the mass prior differs from the run's"):
        check_run_data(nuts_run, small_mock, other_prior)
    with pytest.warns(UserWarning, match="going on because of force"):
        assert len(check_run_data(nuts_run, moved, prior, force=True)) == 1
    with pytest.raises(ValueError, match="not those the run was fitted to"):
        bigmali.extend(nuts_run, moved, draws=5, prior=prior)


def test_prior_flags_that_contradict_the_run_are_refused(tmp_path, nuts_run, capsys):
    import json

    from bigmali.fit import DEFAULT_PRIOR_OPTIONS

    run = nuts_run.copy()  # the fixture passed the default prior as an object; record it as options
    run.attrs["prior_options"] = json.dumps(DEFAULT_PRIOR_OPTIONS)
    path = bigmali.save_run(run, tmp_path / "run.nc")
    assert cli.main(["summary", str(path), "--no-ppc", "--hmf-model", "ST"]) == 1
    assert "--hmf-model 'ST': the run was fitted with 'Tinker10'" in capsys.readouterr().err


# -- 5. units -----------------------------------------------------------------------------


def test_radian_coordinates_are_converted_to_degrees(tmp_path, tiny):
    ra, dec = np.deg2rad(tiny.ra), np.deg2rad(tiny.dec)
    for suffix in (".ecsv", ".fits"):
        path = tmp_path / f"rad{suffix}"
        Table({"z": tiny.z, "lum_obs": tiny.lum_obs, "ra": ra * u.rad, "dec": dec * u.rad}).write(path)
        catalog = bigmali.read_catalog(path)
        np.testing.assert_allclose(catalog.ra, tiny.ra, rtol=1e-13)
        np.testing.assert_allclose(catalog.dec, tiny.dec, rtol=1e-13, atol=1e-13)
        assert catalog.table["ra"].unit == u.deg
    hours = bigmali.Catalog.from_arrays(z=[0.1], lum_obs=[1e4], ra=[1.0] * u.hourangle, dec=[10.0] * u.arcmin)
    assert hours.ra[0] == pytest.approx(15.0) and hours.dec[0] == pytest.approx(10 / 60)
    with pytest.raises(ValueError, match="column 'ra' has unit 'm', which is not an angle"):
        bigmali.Catalog.from_arrays(z=[0.1], lum_obs=[1e4], ra=[1.0] * u.m, dec=[1.0] * u.deg)
    with pytest.raises(ValueError, match=r"column 'ra', row 0: value 401.07.* must lie in \[0, 360\)"):
        bigmali.Catalog.from_arrays(z=[0.1], lum_obs=[1e4], ra=[7.0] * u.rad, dec=[1.0] * u.deg)


@pytest.mark.parametrize(
    "unit, message",
    [
        (u.erg / u.s, "no conversion from 'erg / s' is defined"),
        (u.Lsun, "no conversion from 'solLum' is defined"),
        (u.W, "no conversion from 'W' is defined"),
        (u.Jy, "which is not a luminosity"),
        (u.mag, "which is not a luminosity"),
    ],
)
def test_luminosity_units_without_a_conversion_are_refused(tmp_path, tiny, unit, message):
    path = tmp_path / "lum.fits"
    Table({"z": tiny.z, "lum_obs": tiny.lum_obs * unit}).write(path)
    with pytest.raises(ValueError, match=f"column 'lum_obs' has unit .*{message}"):
        bigmali.read_catalog(path)


def test_dimensionless_luminosities_and_masses_are_converted(tiny):
    scaled = bigmali.Catalog.from_arrays(
        z=tiny.z, lum_obs=tiny.lum_obs / 1e3 * u.Unit(1e3), mass=tiny.mass / 1e12 * u.Unit("1e12 solMass")
    )
    np.testing.assert_allclose(scaled.lum_obs, tiny.lum_obs, rtol=1e-14)
    np.testing.assert_allclose(scaled.mass, tiny.mass, rtol=1e-14)
    with pytest.raises(ValueError, match="masses per h"):
        from astropy.cosmology import units as cu

        bigmali.Catalog.from_arrays(z=[0.1], lum_obs=[1e4], mass=[1e12] * u.Msun / cu.littleh)
    with pytest.raises(ValueError, match="a redshift has no unit"):
        bigmali.Catalog.from_arrays(z=[0.1] * u.km / u.s, lum_obs=[1e4])


# -- 6. duplicate and ambiguous column names -----------------------------------------------


@pytest.mark.parametrize(
    "header, message",
    [
        ("z,lum_obs,z", r"column 'z' appears twice \(columns 1 and 3\)"),
        ("z,lum_obs,lum_obs", r"column 'lum_obs' appears twice \(columns 2 and 3\)"),
        ("z,lum_obs,Z", "columns 'z' and 'Z' differ only in case or spaces"),
        ("Z,lum_obs", "column 'Z' looks like the catalog column 'z'"),
        ("z,lum_obs,RA,DEC", "column 'RA' looks like the catalog column 'ra'"),
    ],
)
def test_duplicate_and_ambiguous_columns_are_errors(tmp_path, header, message):
    path = tmp_path / "dup.csv"
    n = header.count(",") + 1
    path.write_text(header + "\n" + ",".join(["0.5", "1e4"] + ["1.0"] * (n - 2)) + "\n")
    with pytest.raises(ValueError, match=message):
        bigmali.read_catalog(path)


def test_duplicate_columns_in_ecsv_and_fits(tmp_path):
    from astropy.io import fits

    ecsv = tmp_path / "dup.ecsv"
    ecsv.write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: z, datatype: float64}\n# - {name: lum_obs, datatype: float64}\n"
        "# - {name: z, datatype: float64}\n# schema: astropy-2.0\nz lum_obs z\n0.1 1e4 0.2\n"
    )
    with pytest.raises(ValueError, match="column 'z' appears twice"):
        bigmali.read_catalog(ecsv)
    path = tmp_path / "dup.fits"
    cols = [fits.Column(name=name, format="D", array=np.array([0.1])) for name in ("z", "lum_obs", "zz")]
    fits.BinTableHDU.from_columns(cols).writeto(path)
    with fits.open(path, mode="update") as hdus:
        hdus[1].header["TTYPE3"] = "z"
    with pytest.raises(ValueError, match="column 'z' appears twice"):
        bigmali.read_catalog(path)


# -- 7. smaller things ---------------------------------------------------------------------


def test_comments_before_a_csv_header_are_skipped(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("# written by a survey pipeline\n# units: none\nz,lum_obs\n0.5,1e4\n1.0,2e4\n")
    catalog = bigmali.read_catalog(path)
    assert catalog.table.colnames == ["z", "lum_obs"] and len(catalog) == 2


def test_a_directory_is_not_a_catalog_nor_a_run(tmp_path, capsys):
    with pytest.raises(ValueError, match="it is a directory; give a catalog file"):
        bigmali.read_catalog(tmp_path)
    with pytest.raises(ValueError, match="it is a directory, not a run file"):
        bigmali.load_run(tmp_path)


def test_summary_of_a_file_that_is_not_netcdf(tmp_path, capsys):
    path = tmp_path / "run.nc"
    path.write_text("z,lum_obs\n0.5,1e4\n")
    assert cli.main(["summary", str(path)]) == 1
    err = capsys.readouterr().err
    assert "it is not a netCDF file" in err and "IO backend" not in err


def test_a_dominating_halo_is_named_in_the_summary(nuts_run, small_mock, prior):
    """One halo 10^8 times brighter than its mock value takes over the 1,500 halos of the
    shared mock: it is named; the shared run of the same mock without it flags nothing. (The
    fit shares that run's compiled programs. A halo 10^300 times brighter is named too, but its
    fit takes ten times as many leapfrog steps; the extreme-halo tests of the models cover such
    halos.)"""
    lum = small_mock.lum_obs.copy()
    lum[17] *= 1e8
    bright_mock = bigmali.Catalog.from_arrays(z=small_mock.z, lum_obs=lum)
    run = bigmali.fit(bright_mock, prior=prior, chains=1, warmup=200, draws=300, progress=False, mass_draws=0, seed=1)
    results = {"clean": bigmali.summary(nuts_run)["influence"], "bright": bigmali.summary(run)["influence"]}
    assert results["clean"]["n_flagged"] == 0 and results["clean"]["warning"] is None
    assert results["clean"]["largest"][0]["max_shift_sd"] < 0.5
    bright = results["bright"]
    assert bright["n_flagged"] == 1 and bright["flagged"][0]["halo"] == 17
    assert bright["flagged"][0]["max_shift_sd"] > 1.0 and bright["flagged"][0]["pareto_k"] > 0.7
    assert "halo 17 (z " in bright["warning"]
    from bigmali.diagnostics.recovery import format_summary

    assert "WARNING: 1 halo dominates the fit" in format_summary(
        {**bigmali.summary(run, influence=False), "influence": bright}
    )
