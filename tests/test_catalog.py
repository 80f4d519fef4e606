"""Catalogs: exact round trips in every format, and one clear error per kind of bad input,
through the API and through `bigmali validate`."""

import warnings

import numpy as np
import pytest
from astropy.table import Table

import bigmali
from bigmali import cli
from bigmali.catalog import Catalog, read_catalog, write_catalog


@pytest.fixture(scope="module")
def mock(prior):
    return bigmali.simulate(prior, n_halos=500, seed=3)


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".csv"])
def test_astropy_formats_round_trip_every_column_exactly(tmp_path, mock, suffix):
    path = write_catalog(mock, tmp_path / f"cat{suffix}")
    back = read_catalog(path)
    assert back.table.colnames == mock.table.colnames
    for name in mock.table.colnames:
        np.testing.assert_array_equal(back.table[name], mock.table[name])


def test_fits_keeps_the_mock_metadata(tmp_path, mock):
    back = read_catalog(write_catalog(mock, tmp_path / "cat.fits"))
    assert back.meta["SEED"] == 3 and back.meta["ALPHA1"] == mock.meta["ALPHA1"]


def test_2017_text_five_columns_round_trip_exactly(tmp_path, mock):
    with pytest.warns(UserWarning, match="lum"):
        path = write_catalog(mock, tmp_path / "cat.txt")
    back = read_catalog(path)
    assert back.table.colnames == ["z", "lum_obs", "mass", "ra", "dec"]
    for name in back.table.colnames:
        np.testing.assert_array_equal(back.table[name], mock.table[name])


def test_2017_text_two_columns(tmp_path):
    path = tmp_path / "two.dat"
    path.write_text("0.1 12000.5\n0.25 3.0e4\n# a comment\n\n3.5 1e3\n")
    cat = read_catalog(path)
    np.testing.assert_array_equal(cat.z, [0.1, 0.25, 3.5])
    np.testing.assert_array_equal(cat.lum_obs, [12000.5, 3.0e4, 1e3])
    assert cat.mass is None and cat.ra is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to leave out: no warning
        again = read_catalog(write_catalog(cat, tmp_path / "again.txt"))
    np.testing.assert_array_equal(again.lum_obs, cat.lum_obs)


def test_extra_columns_are_kept(tmp_path):
    cat = Catalog.from_arrays(z=[0.1, 0.2], lum_obs=[1e4, 2e4], galaxy_id=[17, 18])
    back = read_catalog(write_catalog(cat, tmp_path / "x.ecsv"))
    np.testing.assert_array_equal(back.table["galaxy_id"], [17, 18])


# ------------------------------------------------------------------ bad input
# Each case: the file content writer, and what the error must name.


def _ecsv(path, **cols):
    Table(cols).write(path, format="ascii.ecsv", overwrite=True)


BAD_FILES = {
    "non-finite": (
        lambda p: _ecsv(p, z=[0.1, 0.2, 0.3], lum_obs=[1e4, np.nan, 2e4]),
        "cat.ecsv",
        ["'lum_obs'", "row 1", "nan", "not finite"],
    ),
    "infinite-z": (lambda p: _ecsv(p, z=[0.1, np.inf], lum_obs=[1e4, 2e4]), "cat.ecsv", ["'z'", "row 1", "inf"]),
    "lum_obs<=0": (
        lambda p: _ecsv(p, z=[0.1, 0.2, 0.3], lum_obs=[1e4, 2e4, -5.0]),
        "cat.ecsv",
        ["'lum_obs'", "row 2", "-5.0", "> 0"],
    ),
    "lum_obs=0": (lambda p: _ecsv(p, z=[0.1, 0.2], lum_obs=[0.0, 2e4]), "cat.ecsv", ["'lum_obs'", "row 0", "0.0"]),
    "z<0": (lambda p: _ecsv(p, z=[0.1, -0.2], lum_obs=[1e4, 2e4]), "cat.ecsv", ["'z'", "row 1", "-0.2", ">= 0"]),
    "z>prior": (
        lambda p: _ecsv(p, z=[0.1, 3.6, 4.0], lum_obs=[1e4, 2e4, 3e4]),
        "cat.ecsv",
        ["'z'", "row 1", "3.6", "redshift range", "1 more row"],
    ),
    "missing column": (lambda p: _ecsv(p, z=[0.1], lobs=[1e4]), "cat.ecsv", ["missing column 'lum_obs'", "lobs"]),
    "empty catalog": (lambda p: _ecsv(p, z=np.array([], float), lum_obs=np.array([], float)), "cat.ecsv", ["empty"]),
    "empty file": (lambda p: p.write_text(""), "cat.txt", ["empty"]),
    "different lengths": (
        lambda p: p.write_text("0.1 1e4\n0.2 2e4\n0.3\n"),
        "cat.txt",
        ["row 2", "line 3", "1 values", "different lengths"],
    ),
    "not a number": (lambda p: p.write_text("0.1 1e4\n0.2 abc\n"), "cat.txt", ["'lum_obs'", "row 1", "'abc'"]),
    "unreadable": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage"), "cat.fits", ["cannot read"]),
    "no such file": (None, "absent.fits", ["cannot read", "no such file"]),
    "csv text value": (
        lambda p: p.write_text("z,lum_obs\n0.1,1e4\n0.2,oops\n"),
        "cat.csv",
        ["'lum_obs'", "row 1", "'oops'"],
    ),
    "csv missing value": (lambda p: p.write_text("z,lum_obs\n0.1,1e4\n,2e4\n"), "cat.csv", ["'z'", "row 1", "missing"]),
}


def _make(tmp_path, case):
    writer, name, expected = BAD_FILES[case]
    path = tmp_path / name
    if writer is not None:
        writer(path)
    return path, expected


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_a_clear_error(tmp_path, case):
    path, expected = _make(tmp_path, case)
    with pytest.raises(ValueError) as info:
        read_catalog(path)
    for fragment in expected:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bigmali_validate_reports_the_error_and_fails(tmp_path, capsys, case):
    path, expected = _make(tmp_path, case)
    assert cli.main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bigmali validate: error:")
    for fragment in expected:
        assert fragment in err


def test_columns_of_different_lengths_through_the_api():
    with pytest.raises(ValueError, match="column 'lum_obs' has 2 rows but column 'z' has 3"):
        Catalog.from_arrays(z=[0.1, 0.2, 0.3], lum_obs=[1e4, 2e4])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(z=[0.1, np.nan], lum_obs=[1.0, 2.0]), "column 'z', row 1: value nan is not finite"),
        (dict(z=[0.1, 0.2], lum_obs=[1.0, -2.0]), "column 'lum_obs', row 1: value -2.0 must be > 0"),
        (dict(z=[-0.1, 0.2], lum_obs=[1.0, 2.0]), "column 'z', row 0: value -0.1 must be >= 0"),
        (dict(z=[0.1, 9.0], lum_obs=[1.0, 2.0]), "column 'z', row 1: value 9.0 is beyond"),
        (dict(z=[], lum_obs=[]), "empty"),
        (dict(z=[0.1], lum_obs=[1.0], mass=[0.0]), "column 'mass', row 0"),
        (dict(z=[0.1], lum_obs=[1.0], ra=[361.0], dec=[0.0]), "column 'ra', row 0: value 361.0"),
        (dict(z=[0.1], lum_obs=[1.0], ra=[1.0]), "'dec' is missing"),
        (dict(z=[0.1, 0.2], lum_obs=[1.0, 2.0], lum_obs_err=[0.1, 0.0]), "column 'lum_obs_err', row 1: value 0.0"),
        (dict(z=[0.1, 0.2], lum_obs=[1.0, 2.0], lum_obs_err=[np.inf, 0.1]), "column 'lum_obs_err', row 0: value inf"),
    ],
)
def test_api_errors_name_column_row_and_value(kwargs, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        Catalog.from_arrays(**kwargs)


def test_missing_column_through_the_api():
    with pytest.raises(ValueError, match="missing column 'z'"):
        Catalog(Table({"lum_obs": [1.0]}))


def test_z_range_follows_the_prior():
    # A prior that reaches z = 5 accepts z = 4; the check can also be switched off.
    Catalog.from_arrays(z=[4.0], lum_obs=[1.0], z_max=5.0)
    Catalog.from_arrays(z=[40.0], lum_obs=[1.0], z_max=None)


def test_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "cat.xyz"
    path.write_text("0.1 1\n")
    with pytest.raises(ValueError, match="suffix '.xyz'"):
        read_catalog(path)


def test_a_bad_row_is_never_dropped(tmp_path):
    # One bad row among 10^4 good ones still fails the whole read.
    z = np.full(10_000, 0.5)
    lum = np.full(10_000, 1e4)
    lum[7777] = -1
    path = tmp_path / "big.txt"
    np.savetxt(path, np.column_stack([z, lum]))
    with pytest.raises(ValueError, match="row 7777"):
        read_catalog(path)


def test_per_halo_errors_round_trip_and_refuse_a_unit(tmp_path):
    catalog = Catalog.from_arrays(z=[0.1, 0.2, 0.3], lum_obs=[1e4, 2e4, 3e4], lum_obs_err=[0.02, 0.1, 0.3])
    assert "lum_obs_err" in catalog.summary()
    back = read_catalog(write_catalog(catalog, tmp_path / "errors.fits"))
    np.testing.assert_array_equal(back.lum_obs_err, [0.02, 0.1, 0.3])
    table = Table({"z": [0.1], "lum_obs": [1e4], "lum_obs_err": [0.1]})
    table["lum_obs_err"].unit = "mag"
    with pytest.raises(ValueError, match="column 'lum_obs_err' has unit 'mag': it is the sd of ln L_obs"):
        Catalog(table)
