"""The mass prior: the 2017 construction, normalisation, gradients, exact sampling, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bigmali import mass_function
from bigmali.mass_prior import (
    H_2017,
    bin_index,
    build_mass_prior,
    cdf_mass,
    density_mass,
    load_mass_prior,
    log_prob_ln_mass,
    sample_ln_mass,
)

KS_BINS = (0, 4, 9, 14, 19)
N_DRAWS = 100_000


def integral_over_mass(prior, z):
    """Integrate the public density function over M with 8 points per knot interval.

    The density is linear in M between knots, so the trapezoid rule on any refinement of
    the knots is exact; this checks the evaluation code, not the stored normalisation.
    """
    mass = np.asarray(prior.mass)
    fine = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in zip(mass[:-1], mass[1:])] + [mass[-1:]])
    return np.trapezoid(np.asarray(density_mass(prior, fine, z)), fine)


def test_2017_construction(prior):
    table = mass_function.load_table()
    mass = np.asarray(prior.mass)
    # 410 hmf masses times 0.73, plus the four 2017 background knots.
    np.testing.assert_allclose(mass[2:-2], table.m * H_2017, rtol=1e-15)
    assert mass[0] == 1.0 and mass[1] == mass[2] - 1 and mass[-2] == mass[-3] + 1 and mass[-1] == 100 * mass[-2]
    assert mass[2] == pytest.approx(1.2566e10, rel=1e-4) and mass[-3] == pytest.approx(1.5459e14, rel=1e-4)
    density = np.asarray(prior.density)
    # Density proportional to hmf's dn/dm in every bin (the 2017 code normalised dn/dm over M).
    ratio = density[:, 2:-2] / table.dndm
    np.testing.assert_allclose(ratio / ratio[:, :1], 1.0, rtol=1e-12)
    # The background knots: 1e-30 before renormalisation.
    # The background knots: 1e-30 before the last renormalisation (which moves it by ~4e-11).
    np.testing.assert_allclose(density[:, [0, 1, -2, -1]], 1e-30, rtol=1e-9)


@pytest.mark.parametrize("z_interp", ["bins", "linear"])
def test_every_bin_integrates_to_one(z_interp, prior, prior_linear):
    p = prior if z_interp == "bins" else prior_linear
    zs = np.asarray(p.z_grid) if z_interp == "bins" else np.linspace(0.0, 3.5, 23)
    for z in zs:
        assert abs(integral_over_mass(p, z) - 1) < 1e-6, f"z = {z}"


def test_bins_follow_the_2017_rule(prior):
    grid = np.linspace(0, 3.5, 20)
    z = np.array([0.0, 1e-9, 0.18, grid[1], grid[1] + 1e-12, 1.7, 3.4999, 3.5])
    np.testing.assert_array_equal(bin_index(prior, z), np.searchsorted(grid, z))
    # A halo between two grid redshifts uses the upper table.
    np.testing.assert_allclose(density_mass(prior, 1e12, 0.1), density_mass(prior, 1e12, grid[1]), rtol=1e-15)


def test_linear_interpolation_mixes_neighbouring_tables(prior, prior_linear):
    grid = np.asarray(prior.z_grid)
    z = grid[3] + 0.25 * (grid[4] - grid[3])
    expected = 0.75 * density_mass(prior, 3e11, grid[3]) + 0.25 * density_mass(prior, 3e11, grid[4])
    assert float(density_mass(prior_linear, 3e11, z)) == pytest.approx(float(expected), rel=1e-12)


def test_log_density_of_ln_mass(prior):
    ln_m = jnp.log(jnp.array([2e10, 5e11, 1e14]))
    z = jnp.array([0.3, 1.0, 2.0])
    expected = jnp.log(density_mass(prior, jnp.exp(ln_m), z)) + ln_m
    np.testing.assert_allclose(log_prob_ln_mass(prior, ln_m, z), expected, rtol=1e-13)
    assert np.isneginf(log_prob_ln_mass(prior, jnp.log(0.5), 0.0))
    assert np.isneginf(log_prob_ln_mass(prior, jnp.log(1e17), 0.0))
    assert np.isfinite(log_prob_ln_mass(prior, jnp.log(1e5), 0.0))  # the background keeps it finite


def test_gradient_matches_finite_differences(prior):
    f = jax.jit(lambda x, z: log_prob_ln_mass(prior, x, z).sum())
    x = jnp.log(jnp.array([3.3e10, 7.7e11, 4.1e13, 1.2e14]))
    z = jnp.array([0.05, 0.9, 1.9, 3.3])
    grad = jax.grad(f)(x, z)
    h = 1e-6  # stays inside one knot interval (log10 spacing 0.01)
    for i in range(4):
        e = jnp.zeros(4).at[i].set(h)
        fd = (f(x + e, z) - f(x - e, z)) / (2 * h)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
    # Finite gradients everywhere, also outside the support.
    outside = jax.grad(f)(jnp.log(jnp.array([0.5, 1e20, 1e12, 1e12])), z)
    assert np.all(np.isfinite(outside))


def test_cdf_is_the_integral_of_the_density(prior):
    z = 1.2
    knots = np.asarray(prior.mass)
    for m in np.geomspace(1.3e10, 1.5e14, 7):
        below = np.append(knots[knots < m], m)
        fine = np.concatenate([np.linspace(a, b, 4, endpoint=False) for a, b in zip(below[:-1], below[1:])] + [[m]])
        integral = np.trapezoid(np.asarray(density_mass(prior, fine, z)), fine)  # exact: linear pieces
        assert float(cdf_mass(prior, m, z)) == pytest.approx(integral, rel=1e-10, abs=1e-14)
    assert float(cdf_mass(prior, 1e17, z)) == pytest.approx(1.0, abs=1e-12)


def ks_pvalue(prior, ln_mass, z):
    return stats.kstest(np.exp(np.asarray(ln_mass)), lambda m: np.asarray(cdf_mass(prior, m, z))).pvalue


@pytest.mark.parametrize("b", KS_BINS)
def test_sampler_draws_from_the_density(prior, b):
    z = float(prior.z_grid[b])
    draws = sample_ln_mass(prior, jax.random.PRNGKey(100 + b), jnp.full(N_DRAWS, z))
    assert ks_pvalue(prior, draws, z) > 0.01


def test_sampler_handles_many_redshifts_at_once(prior):
    # Halos at different redshifts in one call: each bin's draws must follow that bin's density.
    zs = np.repeat(np.asarray(prior.z_grid)[[2, 17]], N_DRAWS // 2)
    draws = np.asarray(sample_ln_mass(prior, jax.random.PRNGKey(7), jnp.asarray(zs)))
    for z in np.unique(zs):
        assert ks_pvalue(prior, draws[zs == z], z) > 0.01


def test_linear_mode_sampler_draws_from_the_mixture(prior_linear):
    z = 1.0  # between tables
    draws = sample_ln_mass(prior_linear, jax.random.PRNGKey(3), jnp.full(N_DRAWS, z))
    assert ks_pvalue(prior_linear, draws, z) > 0.01


def sampler_2017_python(prior, key, z, n):
    """The 2017 Python sampler: inverse of cumsum(prob) against mass, ignoring the mass spacing."""
    b = int(bin_index(prior, z))
    mass = np.asarray(prior.mass)[2:-2]
    prob = np.asarray(prior.density)[b, 2:-2]
    cumsum = np.concatenate([[0.0], np.cumsum(prob / prob.sum()), [1.0]])
    masses = np.concatenate([[mass[0] - 1], mass, [mass[-1] + 1]])
    return np.log(np.interp(np.asarray(jax.random.uniform(key, (n,))), cumsum, masses))


def sampler_off_by_one_bin(prior, key, z, n):
    """A plausible bug: the table one redshift bin too high (searchsorted side='right' at a grid z)."""
    return sample_ln_mass(prior, key, jnp.full(n, float(prior.z_grid[int(bin_index(prior, z)) + 1])))


@pytest.mark.parametrize("wrong", [sampler_2017_python, sampler_off_by_one_bin])
def test_the_ks_test_rejects_a_wrong_sampler(prior, wrong):
    z = float(prior.z_grid[9])
    draws = wrong(prior, jax.random.PRNGKey(5), z, N_DRAWS)
    # Rejected at the very threshold the right sampler passes (p > 0.01).
    assert ks_pvalue(prior, draws, z) < 0.01


def test_sampling_is_reproducible(prior):
    z = jnp.linspace(0, 3.5, 1000)
    a = sample_ln_mass(prior, jax.random.PRNGKey(11), z)
    b = sample_ln_mass(prior, jax.random.PRNGKey(11), z)
    np.testing.assert_array_equal(a, b)


def test_physical_convention_divides_by_h():
    physical = load_mass_prior(mass_convention="physical")
    table = mass_function.load_table()
    np.testing.assert_allclose(np.asarray(physical.mass)[2:-2], table.m / table.h, rtol=1e-15)


def test_other_hmf_model_and_cosmology(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGMALI_CACHE_DIR", str(tmp_path))
    other = load_mass_prior(hmf_model="ST", cosmology="Planck18")
    assert "ST" in other.description and other.cosmology == "Planck18"
    assert abs(integral_over_mass(other, float(other.z_grid[7])) - 1) < 1e-6


def write_user_table(path, prior, per):
    from astropy.table import Table

    mass = np.asarray(prior.mass)[2:-2]
    rows = {"z": [], "mass": [], "density": []}
    for z, row in zip(np.asarray(prior.z_grid), np.asarray(prior.density)[:, 2:-2]):
        rows["z"] += [z] * mass.size
        rows["mass"] += list(mass)
        rows["density"] += list(3.7 * (row * mass if per == "lnM" else row))  # any normalisation
    Table(rows).write(path, format="ascii.ecsv", overwrite=True)
    return path


@pytest.mark.parametrize("per", ["M", "lnM"])
def test_user_table_reproduces_the_prior(tmp_path, prior, per):
    path = write_user_table(tmp_path / "table.ecsv", prior, per)
    user = load_mass_prior(str(path), density_per=per)
    np.testing.assert_allclose(user.density, prior.density, rtol=1e-12)
    assert user.abundance is None


def test_user_table_needs_the_density_flag(tmp_path, prior):
    path = write_user_table(tmp_path / "table.ecsv", prior, "M")
    with pytest.raises(ValueError, match="per unit M or per unit ln M"):
        load_mass_prior(str(path))
    with pytest.raises(ValueError, match="prior table file"):
        load_mass_prior("tinker10", density_per="M")


def test_user_table_errors_name_the_problem(tmp_path):
    from astropy.table import Table

    Table({"z": [0.0, 0.0], "mass": [1e10, 1e11]}).write(tmp_path / "a.ecsv")
    with pytest.raises(ValueError, match="missing column 'density'"):
        load_mass_prior(str(tmp_path / "a.ecsv"), density_per="M")
    Table({"z": [0.0, 0.0, 1.0, 1.0], "mass": [1e10, 1e11, 1e10, 2e11], "density": [1.0, 0.5, 1.0, 0.5]}).write(
        tmp_path / "b.ecsv"
    )
    with pytest.raises(ValueError, match="one mass grid"):
        load_mass_prior(str(tmp_path / "b.ecsv"), density_per="M")
    Table({"z": [0.0, 0.0], "mass": [1e10, 1e11], "density": [1.0, -0.5]}).write(tmp_path / "c.ecsv")
    with pytest.raises(ValueError, match="'density', row 1"):
        load_mass_prior(str(tmp_path / "c.ecsv"), density_per="M")
    with pytest.raises(ValueError, match="cannot read prior table"):
        load_mass_prior(str(tmp_path / "missing.ecsv"), density_per="M")


def test_prior_is_a_pytree_usable_under_jit(prior):
    f = jax.jit(lambda p, x, z: log_prob_ln_mass(p, x, z))
    np.testing.assert_allclose(f(prior, jnp.log(1e12), 0.5), log_prob_ln_mass(prior, jnp.log(1e12), 0.5))


def test_build_rejects_a_density_that_does_not_integrate():
    with pytest.raises(ValueError, match="integrates to"):
        build_mass_prior([0.0], [1e10, 1e11], [[0.0, 0.0]], background=None)


def test_the_2017_sampler_prior_is_the_distribution_the_2017_sampler_drew_from(prior):
    # The prior named "2017-sampler" must be what the 2017 sampler (above) draws: KS at the
    # same threshold at which the mass function itself is rejected against those draws.
    tilted = load_mass_prior("2017-sampler")
    for b in (0, 9, 19):
        z = float(prior.z_grid[b])
        draws = sampler_2017_python(prior, jax.random.PRNGKey(40 + b), z, N_DRAWS)
        assert ks_pvalue(tilted, draws, z) > 0.01, b
        assert ks_pvalue(prior, draws, z) < 0.01, b
    # About 4.5% of the draws sit in the 1-Msun interval below the table's lowest mass, and
    # bigmali's own sampler of the tilted prior puts them there too.
    z = float(prior.z_grid[9])
    m0 = float(np.asarray(prior.mass)[2])
    own = np.exp(np.asarray(sample_ln_mass(tilted, jax.random.PRNGKey(3), jnp.full(N_DRAWS, z))))
    spike = float(cdf_mass(tilted, m0, z))
    assert 0.04 < spike < 0.08
    assert abs(np.mean(own <= m0) - spike) < 5 * np.sqrt(spike * (1 - spike) / N_DRAWS)
    assert "2017 sampler" in tilted.description
