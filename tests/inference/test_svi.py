"""SVI: one compiled fit for every catalog of a shape."""

import numpy as np

import bigmali
from bigmali.inference import svi
from bigmali.inference.engines import fit_data
from bigmali.inference.laplace import whitener


def test_catalogs_of_one_shape_share_one_compiled_fit(prior):
    config = svi.SviConfig(steps=700, svi_draws=300, progress=False, seed=2)
    data = [fit_data(bigmali.simulate(prior, n_halos=300, seed=s), prior, "collapsed") for s in (1, 2)]
    first = svi.run_svi(data[0].model_fn, data[0].model_args, config)
    second = svi.run_svi(data[1].model_fn, data[1].model_args, config._replace(seed=5, tol=1e-2))
    fitter = svi._fitter(whitener(data[0].model_fn, data[0].model_args), config)
    assert svi._fitter(whitener(data[1].model_fn, data[1].model_args), config) is fitter
    # One trace each of the init, the block of steps (700 = 500 + 200 steps) and the draws.
    assert fitter.init._cache_size() == fitter.block._cache_size() == fitter.draw._cache_size() == 1
    assert first.losses.shape == second.losses.shape == (700,) and np.all(np.isfinite(first.losses))
    assert first.samples["alpha1"].shape == (1, 300)
    assert not np.allclose(first.samples["alpha1"], second.samples["alpha1"])
    again = svi.run_svi(data[0].model_fn, data[0].model_args, config)
    for name, value in first.samples.items():  # the same seed gives the same draws
        np.testing.assert_array_equal(again.samples[name], value)
    np.testing.assert_array_equal(again.losses, first.losses)
