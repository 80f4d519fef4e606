"""Calibration smoke test: 20 mocks of 1,000 halos, hyperparameters from the hyperprior."""

import numpy as np
import pytest

from bigmali.diagnostics import Calibration, calibrate
from bigmali.relation import HYPER_NAMES


@pytest.fixture(scope="module")
def calibration(prior):
    return calibrate(n_datasets=20, n_halos=1000, warmup=300, draws=300, seed=0, prior=prior)


def test_truth_quantiles_are_uniform(calibration):
    """KS tests of uniformity: all 80 quantiles pooled at p > 0.01, and each parameter's 20
    at p > 0.01 / 4 (Bonferroni over the four parameters, so the test as a whole keeps a
    ~1-2% false alarm rate)."""
    p = calibration.ks_pvalues()
    assert set(p) == set(HYPER_NAMES) | {"pooled"}
    assert p["pooled"] > 0.01, p
    assert all(p[name] > 0.01 / 4 for name in HYPER_NAMES), p
    # The z-scores of the truths have unit spread if the posterior widths are right.
    z = (calibration.truths - calibration.draws.mean(axis=1)) / calibration.draws.std(axis=1)
    assert np.all(np.abs(z) < 4.5), z


def test_the_check_rejects_a_biased_posterior(calibration):
    """Power: moving every truth by one posterior sd makes the same test reject (p < 0.01)."""
    sd = calibration.draws.std(axis=1)
    shifted = Calibration(calibration.truths + sd, calibration.draws, 0.0)
    assert shifted.ks_pvalues()["pooled"] < 0.01
    too_narrow = calibration.draws.mean(axis=1, keepdims=True) + 0.3 * (
        calibration.draws - calibration.draws.mean(axis=1, keepdims=True))
    assert Calibration(calibration.truths, too_narrow, 0.0).ks_pvalues()["pooled"] < 0.01
    assert np.all(np.isfinite(calibration.draws))
