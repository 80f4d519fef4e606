"""hmf tables: the shipped 2017 table, caching, other fitting functions."""

import numpy as np
import pytest

from bigmali import mass_function
from bigmali.mass_function import TableSpec


def test_default_spec_is_the_2017_one():
    spec = TableSpec()
    assert (spec.hmf_model, spec.cosmology) == ("Tinker10", "WMAP5")
    assert len(spec.z_grid) == 20 and spec.z_grid[0] == 0.0 and spec.z_grid[-1] == 3.5
    table = mass_function.load_table(spec)
    assert table.dndm.shape == (20, 410)
    np.testing.assert_allclose(np.log10(table.m), 10.2358590918 + 0.01 * np.arange(410), rtol=1e-12)
    assert np.log10(table.m[-1]) < 14.3277327776


def test_shipped_table_matches_a_fresh_hmf_computation():
    shipped = mass_function.read_table(mass_function.shipped_path(TableSpec()))
    fresh = mass_function.compute_table(TableSpec())
    np.testing.assert_allclose(shipped.z, fresh.z, rtol=0, atol=0)
    np.testing.assert_allclose(shipped.m, fresh.m, rtol=1e-12)
    # The acceptance figure: within 1e-6 relative, everywhere.
    rel = np.abs(shipped.dndm / fresh.dndm - 1)
    assert rel.max() < 1e-6, f"max relative difference {rel.max():.3g}"
    assert shipped.h == fresh.h


def test_number_density_is_the_integral_of_dndm():
    table = mass_function.load_table(TableSpec())
    n = table.number_density()
    # Independent check: integrate dn/dlog10m with Simpson's rule, in (Mpc/h)^-3, then convert.
    from scipy.integrate import simpson

    n_simpson = simpson(table.dndm * table.m * np.log(10), x=np.log10(table.m), axis=1) * table.h**3
    np.testing.assert_allclose(n, n_simpson, rtol=1e-3)
    assert np.all(np.diff(n[5:]) < 0)  # fewer halos above the mass cut at high redshift


def test_other_settings_are_computed_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGMALI_CACHE_DIR", str(tmp_path))
    spec = TableSpec(hmf_model="Tinker08", z_grid=(0.0, 1.0))
    calls = []
    real = mass_function.compute_table
    monkeypatch.setattr(mass_function, "compute_table", lambda s: calls.append(s) or real(s))
    first = mass_function.load_table(spec)
    second = mass_function.load_table(spec)
    assert len(calls) == 1
    assert (tmp_path / f"{spec.key()}.ecsv").exists()
    np.testing.assert_array_equal(first.dndm, second.dndm)
    default = mass_function.load_table(TableSpec(z_grid=(0.0, 1.0)))
    assert np.abs(first.dndm / default.dndm - 1).max() > 0.01  # Tinker08 is not Tinker10


def test_unknown_model_and_cosmology_are_refused():
    with pytest.raises(ValueError, match="NoSuchFit"):
        mass_function.compute_table(TableSpec(hmf_model="NoSuchFit"))
    with pytest.raises(ValueError, match="WMAP99"):
        mass_function.resolve_cosmology("WMAP99")
