"""Importance-weight normalisation, PSIS and diagnostics."""

import numpy as np
import pytest

from bigmali.weights import psis, weight_diagnostics


def test_weight_diagnostics():
    rng = np.random.default_rng(0)
    equal = weight_diagnostics(np.zeros(500))
    assert equal["ess"] == pytest.approx(500) and equal["max_share"] == pytest.approx(1 / 500)
    mild = weight_diagnostics(0.3 * rng.normal(size=4000))
    assert mild["pareto_k"] < 0.5 and mild["ess"] > 3000
    # One weight 10^4 log-units above the rest: the 2017 picture.
    lw = -20.0 - 1e4 * rng.random(10_000)
    lw[17] = 0.0
    degenerate = weight_diagnostics(lw)
    assert degenerate["ess"] < 1.01 and degenerate["max_share"] > 0.99 and degenerate["pareto_k"] > 0.7
    smoothed, k = psis(0.3 * rng.normal(size=4000) + 12345.0)  # any offset
    assert np.exp(smoothed).sum() == pytest.approx(1.0) and k < 0.5
