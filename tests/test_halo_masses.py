"""Every halo's mass given the hyperparameters: the tabulated sampler against the dense one,
and the one function that fit, extend and mass maps draw with."""

import jax
import numpy as np
import pytest

import bigmali
from bigmali.halo_masses import ConditionalMassSampler, draw_halo_masses, sample_conditional_ln_mass
from bigmali.relation import HYPER_NAMES, HYPERSEED, Hyper


@pytest.fixture(scope="module")
def mock(prior):
    return bigmali.simulate(prior, n_halos=2000, seed=8)


def test_fast_conditional_sampler_matches_the_dense_one(mock, prior):
    """Quantiles of 600 draws of six halos (faintest and brightest included): two-sample KS
    test against the dense per-halo sampler, each at p > 0.001 (a 1-in-1000 false alarm)."""
    from scipy.stats import ks_2samp

    hypers = [HYPERSEED, Hyper(10.74, 0.361, 1.15, 0.156)]
    sampler = ConditionalMassSampler(prior, mock.z, mock.lum_obs, hypers)
    idx = np.array([0, 1, 2, 3, int(np.argmin(mock.lum_obs)), int(np.argmax(mock.lum_obs))])
    key = jax.random.PRNGKey(0)
    fast = np.array([np.asarray(sampler(jax.random.fold_in(key, i), hypers[1]))[idx] for i in range(600)])
    dense = np.array(
        [
            np.asarray(
                sample_conditional_ln_mass(
                    jax.random.fold_in(key, 10_000 + i), hypers[1], mock.z[idx], mock.lum_obs[idx], prior, chunk=8
                )
            )
            for i in range(600)
        ]
    )
    for j in range(idx.size):
        assert ks_2samp(fast[:, j], dense[:, j]).pvalue > 1e-3, j
        assert abs(np.median(fast[:, j]) - np.median(dense[:, j])) < 0.05


@pytest.mark.parametrize("mode", ["bins", "linear"])
def test_draw_halo_masses_keeps_the_asked_draws_in_either_prior_mode(mode, prior, prior_linear, mock):
    """Evenly spaced draws of each chain; the tabulated sampler in bins mode, the dense one in
    linear mode; masses near the ones the luminosities point at; the same seed, the same masses."""
    the_prior = prior if mode == "bins" else prior_linear
    catalog = bigmali.Catalog(mock.table[:300])
    samples = {name: np.full((2, 10), float(getattr(HYPERSEED, name))) for name in HYPER_NAMES}
    ln_m, picks = draw_halo_masses(samples, catalog, the_prior, mass_draws=4, seed=5)
    assert ln_m.shape == (2, 2, len(catalog)) and picks.tolist() == [0, 9]
    assert np.all(np.isfinite(ln_m))
    assert abs(np.mean(ln_m) - np.mean(np.log(catalog.mass))) < 0.1
    again, _ = draw_halo_masses(samples, catalog, the_prior, mass_draws=4, seed=5)
    np.testing.assert_array_equal(ln_m, again)


def test_fast_sampler_with_per_halo_errors_matches_the_dense_one(prior):
    """Per-halo errors from 0.02 to 0.3 widen each halo's conditional by its own amount: the
    tabulated sampler (widths spanning every halo's) against the dense one, as above."""
    from scipy.stats import ks_2samp

    mock = bigmali.simulate(prior, n_halos=2000, seed=9, lum_obs_err=(0.02, 0.3))
    err = np.asarray(mock.lum_obs_err)
    hypers = [HYPERSEED, Hyper(10.74, 0.361, 1.15, 0.156)]
    sampler = ConditionalMassSampler(prior, mock.z, mock.lum_obs, hypers, err)
    idx = np.array(
        [int(np.argmin(err)), int(np.argmax(err)), int(np.argmin(mock.lum_obs)), int(np.argmax(mock.lum_obs))]
    )
    key = jax.random.PRNGKey(1)
    fast = np.array([np.asarray(sampler(jax.random.fold_in(key, i), hypers[1]))[idx] for i in range(600)])
    dense = np.array(
        [
            np.asarray(
                sample_conditional_ln_mass(
                    jax.random.fold_in(key, 10_000 + i),
                    hypers[1],
                    mock.z[idx],
                    mock.lum_obs[idx],
                    prior,
                    chunk=8,
                    lum_obs_err=err[idx],
                )
            )
            for i in range(600)
        ]
    )
    for j in range(idx.size):
        assert ks_2samp(fast[:, j], dense[:, j]).pvalue > 1e-3, j
        assert abs(np.median(fast[:, j]) - np.median(dense[:, j])) < 0.05
    # The noisiest halo's conditional is wider than the quietest's would be at its own centre.
    assert dense[:, 1].std() > dense[:, 0].std()
