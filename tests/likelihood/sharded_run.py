"""Run by test_sharding.py in fresh processes: the collapsed log-likelihood and its gradient
of one mock, on one device, on every device of this process, or under jax.distributed.

    python sharded_run.py local                 # prints {"one": ..., "all": ..., "devices": n,
                                                #         "is_one": ..., "is_all": ...,
                                                #         "mass_diff": ..., "ppc_diff": ...,
                                                #         "fit_one": draws, "fit_all": draws,
                                                #         "is_fits_one": {...}, "is_fits_all": {...}}
    python sharded_run.py process I N PORT      # process I of N; process 0 prints {"all": ...}
"""

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

N_HALOS = 3001  # not a multiple of 2 or 4: the padding is exercised
POINTS = [(10.709, 0.359, 1.10, 0.155), (10.75, 0.35, 1.3, 0.2)]


def values(f, data, *extra):
    import numpy as np

    from bigmali.relation import Hyper

    out = []
    for point in POINTS:
        value, grad = jax.value_and_grad(f)(Hyper(*point), data, *extra)
        out.append([float(value), *map(float, np.asarray(list(grad)))])
    return out


def main(argv):
    import bigmali
    from bigmali.likelihood import quadrature, sharding

    if argv[0] == "process":
        index, count, port = map(int, argv[1:4])
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=index)
    import numpy as np

    prior = bigmali.load_mass_prior()
    # Halos spread over the prior's redshifts and the luminosities its masses give (drawn with
    # numpy, not simulated: every process would compile the mock's draw).
    rng = np.random.default_rng(5)
    z = rng.uniform(0.01, 3.4, N_HALOS)
    lum_obs = np.exp(rng.normal(8.0, 0.8, N_HALOS) + 1.1 * np.log1p(z))
    # The second catalog has per-halo errors and a flux limit below every halo.
    err = np.exp(rng.uniform(np.log(0.02), np.log(0.3), N_HALOS))
    lum_lim = lum_obs * np.exp(-rng.uniform(0.0, 2.0, N_HALOS))
    rows = sharding.process_rows(N_HALOS)
    result = {"devices": jax.device_count(), "processes": jax.process_count()}
    # Halos read in blocks of 256 (751 to 3,001 halos per device: 3 to 12 blocks, the last one
    # overlapping), as a catalog of 10^5 halos per device is; the one-noise catalog read per
    # halo (below PER_HALO_BELOW) and as one noise.
    quadrature._BLOCK = 256
    variants = (
        ("", {}),
        ("_selected", {"lum_obs_err": err[rows], "lum_lim": lum_lim[rows]}),
        ("_fixed", {"per_halo": False}),
    )
    for name, extra in variants:
        data = quadrature.prepare(z[rows], lum_obs[rows], prior, **extra)
        if argv[0] == "local":
            result["one" + name] = values(quadrature.log_likelihood, data)
        sharded, weight = sharding.shard_halos(data, n_total=N_HALOS)
        result["all" + name] = values(sharding.log_likelihood, sharded, weight)
        result["shards"] = len(sharded.y.sharding.device_set)
    if argv[0] == "local":  # the 2017 IS likelihood: blocks of 300 halos, 11 of them on 4 devices
        from bigmali.likelihood import catalog_is, single_halo

        halos, key = single_halo.halo_data(z, lum_obs, prior), jax.random.PRNGKey(2)
        small = {"n": 100, "max_elements": 30_000}
        result["is_one"] = values(lambda h, d: catalog_is.is_log_likelihood(key, h, d, prior, **small), halos)
        result["is_all"] = values(lambda h, d: sharding.is_log_likelihood(key, h, d, prior, **small), halos)
        # Halo-mass draws (with per-halo errors) and PPC replicates, the halos on every device:
        # the largest difference from one device's draws, and how many devices held the halos.
        from bigmali.diagnostics import ppc
        from bigmali.halo_masses import ConditionalMassSampler
        from bigmali.relation import Hyper

        hypers = [Hyper(*point) for point in POINTS]
        keys, stacked = jax.random.split(jax.random.PRNGKey(4), 2), Hyper(*np.asarray(POINTS).T)
        one, split = (ConditionalMassSampler(prior, z, lum_obs, hypers, err, shard_halos=s) for s in (False, True))
        result["mass_shards"] = len(split.ln_lobs.sharding.device_set)
        result["mass_diff"] = float(np.abs(np.asarray(split.draws(keys, stacked)) - one.draws(keys, stacked)).max())
        reps = [ppc.replicate_ln_lum_obs(hypers, z, prior, lum_obs_err=err, shard_halos=s) for s in (False, True)]
        result["ppc_diff"] = float(np.abs(reps[1] - reps[0]).max())
        result["ppc_shape"] = list(reps[1].shape)
        # a short NUTS fit, unsharded and with the halos on every device, and the IS methods
        mock = bigmali.simulate(prior, n_halos=1001, seed=3)
        result["fit_one"], result["fit_all"] = (fit_draws(mock, prior, shard) for shard in (False, True))
        result["is_fits_one"], result["is_fits_all"] = (is_fits(mock, prior, shard) for shard in (False, True))
    if jax.process_index() == 0:
        print(json.dumps(result), flush=True)


def fit_draws(mock, prior, shard: bool, **options):
    """A short fit (default: two chains of collapsed NUTS): (parameter, chain, draw)."""
    import numpy as np

    import bigmali
    from bigmali.relation import HYPER_NAMES

    options = {"chains": 2, "warmup": 20, "draws": 30, **options}
    run = bigmali.fit(mock, prior=prior, shard_halos=shard, seed=3, progress=False, mass_draws=0, **options)
    assert run.attrs["halo_devices"] == (jax.device_count() if shard else 1)
    return np.stack([np.asarray(run["posterior"][name]) for name in HYPER_NAMES]).tolist()


def is_fits(mock, prior, shard: bool):
    """The 2017 IS likelihood's methods: is_prior's estimates at 8 hyperprior draws, and the
    draws of short pmmh and nuts_is chains."""
    import numpy as np

    import bigmali

    run = bigmali.fit(
        mock, prior=prior, method="is_prior", n_hyper=8, is_samples=20, shard_halos=shard, seed=3, progress=False
    )
    estimates = np.asarray(run["sample_stats"]["log_likelihood_estimate"]).ravel().tolist()
    short = {"chains": 1, "is_samples": 20}
    return {
        "is_prior": estimates,
        "pmmh": fit_draws(mock, prior, shard, method="pmmh", warmup=5, draws=10, **short),
        "nuts_is": fit_draws(mock, prior, shard, method="nuts_is", warmup=50, draws=30, **short),  # after 20 it stuck
    }


if __name__ == "__main__":
    main(sys.argv[1:])
