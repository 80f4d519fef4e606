"""The extended likelihood: the expected count of detected halos, and how the collapsed
model uses it."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import bigmali
from bigmali.likelihood import extended as E
from bigmali.likelihood import quadrature as Q
from bigmali.models import collapsed
from bigmali.relation import HYPERSEED
from bigmali.selection import FluxLimit, Survey

LIMIT = FluxLimit.table([0.0, 1.0, 3.5], [8e2, 3e3, 2e4])  # keeps about half


@pytest.mark.parametrize("errors", [None, (0.02, 0.3)])
def test_the_expected_count_is_the_mean_number_a_lightcone_detects(prior, errors):
    """Lambda at the hyperseed against the number a Poisson lightcone of the same field keeps:
    summed over 4 mocks (~9,000 halos detected) it lies within 4 Poisson sds."""
    mocks = [bigmali.simulate(prior, field_arcmin=3.0, seed=s, lum_obs_err=errors, flux_limit=LIMIT) for s in range(4)]
    survey = Survey.from_meta(mocks[0].meta)
    assert survey is not None and survey.z_max == pytest.approx(3.5)
    count = E.prepare_count(prior, LIMIT, survey, mocks[0].lum_obs_err, mocks[0].meta)
    expected = float(E.expected_count(HYPERSEED, count, Q.QuadratureConfig.for_prior(prior)))
    assert count.n_parent == pytest.approx(mocks[0].meta["N_EXPECT"], rel=1e-6)
    detected = sum(len(m) for m in mocks)
    assert 0.2 < detected / (4 * count.n_parent) < 0.8  # the limit matters
    assert abs(detected - 4 * expected) < 4 * math.sqrt(4 * expected)


def test_the_expected_count_quadrature_has_converged(prior):
    mock = bigmali.simulate(prior, field_arcmin=2.0, seed=1, lum_obs_err=(0.02, 0.3), flux_limit=LIMIT)
    survey = Survey.from_meta(mock.meta)
    values = []
    for z_nodes, err_nodes in ((E.Z_NODES, E.ERROR_NODES), (4 * E.Z_NODES, 4 * E.ERROR_NODES)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(E, "Z_NODES", z_nodes)
            mp.setattr(E, "ERROR_NODES", err_nodes)
            values.append(
                float(E.expected_count(HYPERSEED, E.prepare_count(prior, LIMIT, survey, mock.lum_obs_err, mock.meta)))
            )
    assert values[0] == pytest.approx(values[1], rel=1e-7)


def test_the_collapsed_model_adds_minus_the_expected_count_to_undivided_halos(prior):
    """log p(extended) - log p(complete) = -Lambda(theta), and log p(truncated) - log
    p(complete) = -sum ln P_det: the wiring of both selections, at a theta off the hyperseed."""
    mock = bigmali.simulate(prior, field_arcmin=1.0, seed=2, lum_obs_err=(0.02, 0.3), flux_limit=LIMIT)
    z, lum, err = jnp.asarray(mock.z), jnp.asarray(mock.lum_obs), np.asarray(mock.lum_obs_err)
    lum_lim = np.exp(LIMIT.ln_limit(mock))
    config = Q.QuadratureConfig.for_prior(prior)
    complete = Q.prepare(z, lum, prior, lum_obs_err=err)
    truncated = Q.prepare(z, lum, prior, lum_obs_err=err, lum_lim=lum_lim)
    count = E.prepare_count(prior, LIMIT, Survey.from_meta(mock.meta), err, mock.meta)
    params = {f"{k}_decentered": jnp.float64(0.4) for k in HYPERSEED._fields}

    def log_p(data):
        return float(log_density(collapsed.model, (z, lum, prior, data, config), {}, params)[0])

    hyper = bigmali.Hyper(
        *(m + 0.4 * s for m, s in zip(bigmali.relation.HYPERPRIOR_MEAN, bigmali.relation.HYPERPRIOR_SD))
    )
    lam = float(E.expected_count(hyper, count, config))
    assert log_p(complete._replace(count=count)) - log_p(complete) == pytest.approx(-lam, rel=1e-10)
    ln_det = float(jnp.sum(Q.log_detection_probability(hyper, truncated, config)))
    assert log_p(truncated) - log_p(complete) == pytest.approx(-ln_det, rel=1e-10)
    # The total that the importance-sampling methods use carries the same selection terms.
    total = float(Q.log_likelihood(hyper, complete, config))
    assert float(Q.log_likelihood(hyper, complete._replace(count=count), config)) == pytest.approx(
        total - lam, rel=1e-12
    )
    assert float(Q.log_likelihood(hyper, truncated, config)) == pytest.approx(total - ln_det, rel=1e-12)


def test_what_the_extended_likelihood_refuses(prior):
    from bigmali.catalog import Catalog
    from bigmali.selection import check_in_survey

    with pytest.raises(ValueError, match="not the catalog's column lum_lim"):
        E.prepare_count(prior, FluxLimit.column(), Survey.from_area(1.0))
    with pytest.raises(ValueError, match="beyond the mass prior's last table"):
        E.prepare_count(prior, LIMIT, Survey.from_area(1.0, 0.0, 5.0))
    with pytest.raises(ValueError, match=r"column 'z', row 1: value 2.5 is outside the survey's redshifts \[0, 2\]"):
        check_in_survey(Catalog.from_arrays(z=[0.5, 2.5], lum_obs=[1e5, 1e5]), Survey.from_area(1.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="survey area"):
        Survey.from_area(0.0)
    catalog = bigmali.simulate(prior, n_halos=50, seed=1, flux_limit=FluxLimit.constant(2e3))
    with pytest.raises(ValueError, match="needs the survey's area"):
        bigmali.fit(catalog, prior=prior, selection="extended", progress=False)  # a fixed number: no window
    with pytest.raises(ValueError, match="selection 'extended' needs a flux limit"):
        bigmali.fit(bigmali.simulate(prior, n_halos=50, seed=1), prior=prior, selection="extended")
    with pytest.raises(ValueError, match="selection 'both'"):
        bigmali.fit(catalog, prior=prior, selection="both")
