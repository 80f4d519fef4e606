"""Mock lightcones: the relation's residuals, the number counts, positions, reproducibility."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import bigmali
from bigmali import lightcone, relation
from bigmali.relation import HYPERSEED, SIGMA_OBS


@pytest.fixture(scope="module")
def big_mock(prior):
    return bigmali.simulate(prior, n_halos=100_000, seed=1)


def test_luminosity_residuals_follow_the_relation(big_mock):
    """ln L_obs - ln mu_L(M) has mean 0 and std sqrt(S^2 + sigma_obs^2), within 3 standard errors."""
    resid = np.log(big_mock.lum_obs) - np.asarray(relation.ln_mu_L(jnp.log(big_mock.mass), big_mock.z, HYPERSEED))
    n = resid.size
    sigma = math.hypot(HYPERSEED.S, SIGMA_OBS)
    assert abs(resid.mean()) < 3 * sigma / math.sqrt(n)
    assert abs(resid.std(ddof=1) - sigma) < 3 * sigma / math.sqrt(2 * (n - 1))


def test_observation_noise_is_sigma_obs(big_mock):
    resid = np.log(big_mock.lum_obs) - np.log(big_mock.lum)
    n = resid.size
    assert abs(resid.mean()) < 3 * SIGMA_OBS / math.sqrt(n)
    assert abs(resid.std(ddof=1) - SIGMA_OBS) < 3 * SIGMA_OBS / math.sqrt(2 * (n - 1))


def test_masses_follow_the_prior_of_their_bin(big_mock, prior):
    from bigmali.mass_prior import bin_index, cdf_mass

    bins = np.asarray(bin_index(prior, big_mock.z))
    for b in (1, 10, 19):
        m = big_mock.mass[bins == b]
        z = float(prior.z_grid[b])
        assert stats.kstest(m, lambda x: np.asarray(cdf_mass(prior, x, z))).pvalue > 0.01


def test_redshifts_follow_the_number_counts(big_mock, prior):
    z_grid, dndz, expected = lightcone.redshift_distribution(prior, lightcone.square_field(40))
    cum = np.concatenate([[0], np.cumsum(0.5 * (dndz[1:] + dndz[:-1]) * np.diff(z_grid))])
    assert stats.kstest(big_mock.z, lambda z: np.interp(z, z_grid, cum / cum[-1])).pvalue > 0.01


def test_expected_count_matches_an_independent_volume_integral(prior):
    """N = Omega * integral dV/dz/dOmega n(z) dz, recomputed with astropy's comoving volume."""
    from astropy.cosmology import WMAP5

    field = lightcone.square_field(40)
    _, _, expected = lightcone.redshift_distribution(prior, field)
    edges = np.asarray(prior.z_grid)
    shells = np.diff(WMAP5.comoving_volume(edges).to_value("Mpc3")) * field.solid_angle / (4 * math.pi)
    n = np.asarray(prior.abundance)
    # Trapezoid in n over each shell: good to a fraction of a percent.
    assert expected == pytest.approx(np.sum(shells * 0.5 * (n[1:] + n[:-1])), rel=5e-3)
    assert field.solid_angle == pytest.approx(math.radians(40 / 60) * 2 * math.sin(math.radians(20 / 60)), rel=1e-12)


def test_default_lightcone_is_poisson_around_the_expectation(prior):
    mock = bigmali.simulate(prior, field_arcmin=5, seed=4)
    expected = mock.meta["N_EXPECT"]
    assert abs(len(mock) - expected) < 4 * math.sqrt(expected)


def test_positions_are_inside_the_field_and_uniform(big_mock):
    field = lightcone.square_field(40)
    assert big_mock.ra.min() >= field.ra_min and big_mock.ra.max() <= field.ra_max
    assert big_mock.dec.min() >= field.dec_min and big_mock.dec.max() <= field.dec_max
    u = (big_mock.ra - field.ra_min) / (field.ra_max - field.ra_min)
    assert stats.kstest(u, "uniform").pvalue > 0.01


def test_same_seed_same_catalog(prior):
    a = bigmali.simulate(prior, n_halos=2000, seed=9)
    b = bigmali.simulate(prior, n_halos=2000, seed=9)
    c = bigmali.simulate(prior, n_halos=2000, seed=10)
    for name in ("z", "lum_obs", "mass", "ra", "dec"):
        np.testing.assert_array_equal(a.table[name], b.table[name])
    assert not np.array_equal(a.lum_obs, c.lum_obs)


def test_user_redshifts_and_positions_are_kept(prior):
    z = np.array([0.0, 0.5, 1.0, 3.5])
    mock = bigmali.simulate(prior, redshifts=z, ra=[1.0, 2.0, 3.0, 4.0], dec=[0.0, 1.0, -1.0, 0.5], seed=2)
    np.testing.assert_array_equal(mock.z, z)
    np.testing.assert_array_equal(mock.ra, [1.0, 2.0, 3.0, 4.0])


def test_n_halos_subsamples_user_redshifts(prior):
    z = np.linspace(0.01, 3.4, 1000)
    mock = bigmali.simulate(prior, redshifts=z, n_halos=100, seed=2)
    assert len(mock) == 100 and np.all(np.isin(mock.z, z)) and np.unique(mock.z).size == 100


def test_hyperparameters_are_used_and_recorded(prior):
    hyper = HYPERSEED._replace(alpha1=11.5)
    mock = bigmali.simulate(prior, hyper, n_halos=20_000, seed=5)
    resid = np.log(mock.lum_obs) - np.asarray(relation.ln_mu_L(jnp.log(mock.mass), mock.z, hyper))
    assert abs(resid.mean()) < 0.01
    assert mock.meta["ALPHA1"] == 11.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(redshifts=[0.1, 4.0]), "column 'z', row 1: value 4.0"),
        (dict(redshifts=[0.1, 0.2], n_halos=3), "more than the 2"),
        (dict(redshifts=[0.1, 0.2], ra=[1.0]), "give both ra and dec"),
        (dict(redshifts=[0.1, 0.2], ra=[1.0], dec=[1.0]), "column 'ra' has 1 rows"),
        (dict(n_halos=0), "at least 1"),
        (dict(field_arcmin=-1), "positive"),
    ],
)
def test_bad_simulation_requests(prior, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bigmali.simulate(prior, **kwargs)


def test_user_table_prior_needs_redshifts(tmp_path, prior):
    from astropy.table import Table

    Table({"z": [0.0, 0.0, 1.0, 1.0], "mass": [1e10, 1e12] * 2, "density": [1.0, 0.1] * 2}).write(tmp_path / "t.ecsv")
    user = bigmali.load_mass_prior(str(tmp_path / "t.ecsv"), density_per="M")
    with pytest.raises(ValueError, match="give the halos' redshifts"):
        bigmali.simulate(user, n_halos=10)
    assert len(bigmali.simulate(user, redshifts=[0.2, 0.9])) == 2


def test_per_halo_errors_are_log_uniform_and_are_the_observation_noise(prior):
    """--lum-obs-err a,b: ln err uniform on [ln a, ln b] (KS at p > 0.001), and each halo's
    ln L_obs - ln L divided by its own error is standard normal (KS at p > 0.001)."""
    mock = bigmali.simulate(prior, n_halos=20_000, seed=2, lum_obs_err=(0.02, 0.3))
    err = np.asarray(mock.lum_obs_err)
    assert err.min() >= 0.02 and err.max() <= 0.3
    u = (np.log(err) - math.log(0.02)) / (math.log(0.3) - math.log(0.02))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest((np.log(mock.lum_obs) - np.log(mock.lum)) / err, "norm").pvalue > 1e-3
    assert (mock.meta["ERR_LO"], mock.meta["ERR_HI"]) == (0.02, 0.3)
    # The same seed without errors draws the same masses and true luminosities.
    plain = bigmali.simulate(prior, n_halos=20_000, seed=2)
    np.testing.assert_array_equal(plain.mass, mock.mass)
    assert plain.lum_obs_err is None


@pytest.mark.parametrize("low,high", [(0.0, 0.3), (0.3, 0.02), (0.02, math.inf)])
def test_a_bad_error_range_is_refused(prior, low, high):
    with pytest.raises(ValueError, match="lum_obs_err range"):
        bigmali.simulate(prior, n_halos=10, lum_obs_err=(low, high))


def test_detected_halos_follow_the_truncated_predictive(prior):
    """draw_detected (replicate, then cut, until detected) against an independent sample of
    the same truncated distribution: halos drawn without a limit, then cut. Both are exact,
    so a two-sample KS test of ln L_obs and ln M at one redshift passes (p > 1e-3) unless the
    sampler is biased (redrawing only ln L_obs for a kept mass, say, fails the mass test)."""
    n, z = 20_000, 1.2
    ln_lim = 9.0  # keeps ~10% at the hyperseed
    mass, _, kept = lightcone.draw_detected(
        prior, HYPERSEED, jax.random.PRNGKey(0), np.full(n, z), SIGMA_OBS, np.full(n, ln_lim), block=4096
    )
    assert np.all(kept > ln_lim)
    free = lightcone._draw_halos(
        prior, HYPERSEED, *jax.random.split(jax.random.PRNGKey(1)), jnp.full(200_000, z), SIGMA_OBS
    )
    cut = np.asarray(free[2]) > ln_lim
    assert 0.05 < cut.mean() < 0.2
    assert stats.ks_2samp(kept, np.asarray(free[2])[cut]).pvalue > 1e-3
    assert stats.ks_2samp(mass, np.asarray(free[0])[cut]).pvalue > 1e-3


def test_a_mock_of_detected_halos_has_exactly_n_and_records_its_limit(prior):
    from bigmali.selection import META_KEY, FluxLimit, Survey

    limit = FluxLimit.table([0.0, 3.5], [3e3, 3e4])
    mock = lightcone.simulate_detected(prior, n_halos=300, flux_limit=limit, seed=3, lum_obs_err=(0.02, 0.3))
    assert len(mock) == 300 and np.all(np.log(mock.lum_obs) > limit.ln_limit(mock))
    assert FluxLimit.from_meta(mock.meta) == limit and mock.meta["SELECTED"] == "truncated"
    assert Survey.from_meta(mock.meta) is None  # its redshifts are not a thinned lightcone
    again = lightcone.simulate_detected(prior, n_halos=300, flux_limit=limit, seed=3, lum_obs_err=(0.02, 0.3))
    np.testing.assert_array_equal(mock.lum_obs, again.lum_obs)
    with pytest.raises(ValueError, match=r"row 0 \(z = .*\): not detected in 1000000 draws"):
        lightcone.simulate_detected(prior, n_halos=2, flux_limit=FluxLimit.constant(1e30), seed=3)
    assert META_KEY in mock.meta
