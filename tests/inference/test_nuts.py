"""Collapsed NUTS: one compiled sampler for every catalog of a shape, and chain methods that agree."""

import numpy as np
import pytest

import bigmali
from bigmali.inference import nuts
from bigmali.inference.engines import fit_data
from bigmali.relation import HYPER_NAMES

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


def test_target_ess_draws_rounds_until_every_parameter_reaches_it(catalogs):
    data = catalogs[0]
    config = CONFIG._replace(draws=1000, target_ess=150)
    out = nuts.run_nuts(data.model_fn, data.model_args, config)
    # The fixed-count runs' compiled sampler serves this one too.
    assert nuts._sampler(data.model_fn, data.model_args, config) is nuts._sampler(
        data.model_fn, data.model_args, CONFIG
    )
    draws = {name: out.samples[name] for name in HYPER_NAMES}
    n = draws["alpha1"].shape[1]
    assert nuts._BLOCK <= n < config.draws  # a first round, then stopped before the maximum
    assert out.stats["diverging"].shape == (2, n)
    assert nuts.enough_draws(draws, config.target_ess)
    # The first chain tuned the step size and mass matrix; the second took them (and burned in
    # from its own start), so its draws are its own but its tuning is the first chain's.
    state = out.last_state
    assert state["step_size"][1] == state["step_size"][0]
    np.testing.assert_array_equal(state["inverse_mass_matrix"][1], state["inverse_mass_matrix"][0])
    assert not np.allclose(draws["alpha1"][1], draws["alpha1"][0])
    if n > nuts._BLOCK:  # the first round was not enough, and the next was sized by the shortfall
        first = {k: v[:, : nuts._BLOCK] for k, v in draws.items()}
        short = nuts.ess_shortfall(first, config.target_ess)
        assert short >= 1.0
        assert n - nuts._BLOCK >= nuts.next_round(nuts._BLOCK, short)


def test_each_round_is_sized_by_the_ess_still_missing():
    # ESS grows with the draws: 100 draws at 0.8 of the target ask for 100 * 1.25 * 1.1 - 100.
    assert nuts.next_round(100, 1.25) == 38
    assert nuts.next_round(100, 1.01) == nuts.MIN_ROUND  # R-hat alone, or nearly there
    assert nuts.next_round(100, 5.0) == nuts._BLOCK  # far off: one block at most


def test_the_stopping_rule_asks_for_ess_and_r_hat():
    rng = np.random.default_rng(1)
    iid = {"a": rng.standard_normal((4, 400)), "b": rng.standard_normal((4, 400))}
    # ArviZ gives these 1,456-1,652 bulk and tail ESS and R-hat 0.999-1.003.
    assert nuts.enough_draws(iid, 1200) and not nuts.enough_draws(iid, 2400)
    assert nuts.ess_shortfall(iid, 1200) == 0.0 and 1.4 < nuts.ess_shortfall(iid, 2400) < 1.7
    # One chain shifted by 0.5 sd: ESS still >= 161 but R-hat 1.028.
    stuck = {**iid, "b": iid["b"] + np.array([0.0, 0.0, 0.0, 0.5])[:, None]}
    assert not nuts.enough_draws(stuck, 100)
    assert nuts.ess_shortfall(stuck, 100) == 1.0  # the ESS is there: R-hat alone fails
    assert nuts.enough_draws({k: v[3:] for k, v in stuck.items()}, 100)  # one chain: no R-hat
