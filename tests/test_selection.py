"""Flux limits: how a limit is given, checked against a catalog, recorded and read back,
and mocks cut by one."""

import math

import numpy as np
import pytest
from astropy.table import Table

import bigmali
from bigmali.catalog import Catalog
from bigmali.selection import META_KEY, FluxLimit, check_detected, resolve_flux_limit


def test_a_limit_is_a_constant_a_table_file_or_the_column(tmp_path):
    assert FluxLimit.parse("5e3") == FluxLimit.constant(5000.0)
    assert FluxLimit.parse("column").kind == "column"
    for suffix, fmt in ((".ecsv", "ascii.ecsv"), (".txt", "ascii.commented_header"), (".fits", "fits")):
        path = tmp_path / f"limit{suffix}"
        Table({"z": [0.0, 1.0, 3.5], "lum_lim": [1e3, 4e3, 2e4]}).write(path, format=fmt)
        limit = FluxLimit.parse(str(path))
        assert limit.kind == "table" and limit.z == (0.0, 1.0, 3.5) and limit.source == str(path)
    catalog = Catalog.from_arrays(z=[0.0, 0.5, 1.0, 2.25], lum_obs=[1e5] * 4)
    # Linear in ln L_lim between rows: halfway in z is the geometric mean.
    np.testing.assert_allclose(np.exp(limit.ln_limit(catalog)), [1e3, math.sqrt(1e3 * 4e3), 4e3, math.sqrt(4e3 * 2e4)])
    assert FluxLimit.from_meta({META_KEY: limit.to_meta()}) == limit
    assert FluxLimit.from_meta({}) is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("0", "flux limit 0.0: must be a finite luminosity > 0"),
        ("-3", "must be a finite luminosity > 0"),
        ("nan", "must be a finite luminosity > 0"),
        ("no/such/file.ecsv", "neither a number, 'column', nor an existing table file"),
    ],
)
def test_bad_limits_are_refused_with_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        FluxLimit.parse(text)


def test_bad_tables_name_the_column_and_row(tmp_path):
    with pytest.raises(ValueError, match=r"column 'z', row 2: value 0.5 does not increase from 1.0"):
        FluxLimit.table([0.0, 1.0, 0.5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"column 'lum_lim', row 1: value -2.0 must be finite and > 0"):
        FluxLimit.table([0.0, 1.0], [1.0, -2.0])
    path = tmp_path / "bad.ecsv"
    Table({"z": [0.0, 1.0], "flux": [1.0, 2.0]}).write(path)
    with pytest.raises(ValueError, match="no column 'lum_lim'"):
        FluxLimit.parse(str(path))


def test_a_table_that_does_not_cover_the_catalog_and_a_halo_below_its_limit_are_errors():
    limit = FluxLimit.table([0.1, 1.0], [1e3, 4e3])
    catalog = Catalog.from_arrays(z=[0.5, 0.05, 2.0], lum_obs=[1e5, 1e5, 1e5])
    with pytest.raises(ValueError, match=r"column 'z', row 1: value 0.05 is outside the flux-limit table's redshifts"):
        limit.ln_limit(catalog)
    below = Catalog.from_arrays(z=[0.5, 0.6, 0.7], lum_obs=[1e5, 10.0, 1e5])
    with pytest.raises(ValueError, match=r"column 'lum_obs', row 1: value 10.0 is below its flux limit 1000,"):
        check_detected(below, FluxLimit.constant(1e3).ln_limit(below))
    with pytest.raises(ValueError, match="the catalog has no column 'lum_lim'"):
        FluxLimit.column().ln_limit(below)
    own = Catalog.from_arrays(z=[0.5, 0.6], lum_obs=[1e5, 2e5], lum_lim=[1e4, 3e5])
    with pytest.raises(ValueError, match="row 1: value 200000.0 is below its flux limit 300000,"):
        check_detected(own, FluxLimit.column().ln_limit(own))
    with pytest.raises(ValueError, match="column 'lum_lim', row 0: value 0.0"):
        Catalog.from_arrays(z=[0.5], lum_obs=[1.0], lum_lim=[0.0])


def test_a_fit_uses_the_given_limit_else_the_recorded_one():
    catalog = Catalog.from_arrays(z=[0.5], lum_obs=[1e5], meta={META_KEY: FluxLimit.constant(10.0).to_meta()})
    assert resolve_flux_limit(None, catalog)[0] == FluxLimit.constant(10.0)
    assert "recorded in the catalog's metadata" in resolve_flux_limit(None, catalog)[1]
    assert resolve_flux_limit("20", catalog)[0] == FluxLimit.constant(20.0)
    assert resolve_flux_limit("none", catalog)[0] is None
    assert resolve_flux_limit(None, Catalog.from_arrays(z=[0.5], lum_obs=[1.0]))[0] is None


def test_a_flux_limited_mock_keeps_the_detected_halos_and_records_the_cut(prior):
    whole = bigmali.simulate(prior, n_halos=5000, seed=7)
    limit = FluxLimit.table([0.0, 1.0, 3.5], [2e3, 1e4, 5e4])
    mock = bigmali.simulate(prior, n_halos=5000, seed=7, flux_limit=limit)
    detected = np.log(whole.lum_obs) > limit.ln_limit(whole)
    np.testing.assert_array_equal(mock.lum_obs, whole.lum_obs[detected])
    assert 0 < len(mock) < len(whole) and mock.meta["N_DRAWN"] == 5000
    assert FluxLimit.from_meta(mock.meta) == limit
    with pytest.raises(ValueError, match="must be a constant or a table"):
        bigmali.simulate(prior, n_halos=10, flux_limit=FluxLimit.column())
    with pytest.raises(ValueError, match="no halo of the 10 drawn is detected"):
        bigmali.simulate(prior, n_halos=10, flux_limit=FluxLimit.constant(1e30))
