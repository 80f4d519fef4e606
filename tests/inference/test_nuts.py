"""Collapsed NUTS: one compiled sampler for every catalog of a shape, and chain methods that agree."""

import numpy as np
import pytest

import bigmali
from bigmali.inference import nuts
from bigmali.inference.engines import fit_data

N_HALOS = 300
CONFIG = nuts.NutsConfig(chains=2, warmup=60, draws=60, progress=False, target_accept=0.65, seed=4)


@pytest.fixture(scope="module")
def catalogs(prior):
    return [fit_data(bigmali.simulate(prior, n_halos=N_HALOS, seed=s), prior, "collapsed") for s in (1, 2)]


def test_catalogs_of_one_shape_share_one_compiled_sampler(catalogs):
    first = nuts.run_nuts(catalogs[0].model_fn, catalogs[0].model_args, CONFIG)
    sampler = nuts._sampler(catalogs[0].model_fn, catalogs[0].model_args, CONFIG)
    second = nuts.run_nuts(catalogs[1].model_fn, catalogs[1].model_args, CONFIG._replace(seed=9))
    assert nuts._sampler(catalogs[1].model_fn, catalogs[1].model_args, CONFIG) is sampler
    # One trace of the init and of the block for both catalogs, both chains and every block.
    assert sampler.loop._init._cache_size() == 1 and sampler.loop._block._cache_size() == 1
    assert first.samples["alpha1"].shape == second.samples["alpha1"].shape == (2, 60)
    assert not np.allclose(first.samples["alpha1"], second.samples["alpha1"])
    again = nuts.run_nuts(catalogs[0].model_fn, catalogs[0].model_args, CONFIG)
    for name, value in first.samples.items():  # the same seed gives the same draws
        np.testing.assert_array_equal(again.samples[name], value)


def test_vectorized_chains_give_the_sequential_draws(catalogs):
    data = catalogs[0]
    sequential = nuts.run_nuts(data.model_fn, data.model_args, CONFIG)
    vectorized = nuts.run_nuts(data.model_fn, data.model_args, CONFIG._replace(chain_method="vectorized"))
    # The same trajectories: vmapped arithmetic rounds differently (7e-8 at most here, far
    # below any posterior sd), so the draws agree to 1e-5 and the tree sizes exactly.
    for name, value in sequential.samples.items():
        np.testing.assert_allclose(vectorized.samples[name], value, rtol=0, atol=1e-5, err_msg=name)
    for name in ("n_steps", "diverging"):
        np.testing.assert_array_equal(vectorized.stats[name], sequential.stats[name], err_msg=name)
    np.testing.assert_allclose(vectorized.stats["step_size"], sequential.stats["step_size"], rtol=1e-5)
    # The warmup adapted each chain's own step size and mass matrix, and the draws moved.
    assert np.all(np.std(sequential.samples["alpha1"], axis=1) > 0)
    assert sequential.last_state["inverse_mass_matrix"].shape == (2, 4, 4)
