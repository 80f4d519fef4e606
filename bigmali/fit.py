"""``bigmali.fit``: one call from a catalog to a posterior DataTree, for notebooks and the CLI.

Data flow: catalog -> mass prior -> model data -> inference -> DataTree.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from bigmali import __version__ as _version
from bigmali.catalog import Catalog
from bigmali.inference import nuts as nuts_engine
from bigmali.inference import svi as svi_engine
from bigmali.inference.results import attr_json, build_datatree
from bigmali.mass_prior import MassPrior, load_mass_prior, prior_fingerprint
from bigmali.models import LATENT_SITES, MODELS, collapsed
from bigmali.models.common import HYPER_SITES
from bigmali.models.quadrature import QuadratureConfig, log_likelihood_halos
from bigmali.relation import HYPER_NAMES, HYPERPRIOR_MEAN, HYPERPRIOR_SD, Hyper, hyper_from_meta, sample_hyperprior

__all__ = ["fit", "extend", "pointwise_log_likelihood", "METHODS"]

METHODS = ("nuts", "svi", "nuts_gibbs", "is_prior", "is_proposal", "pmmh", "nuts_is")
IS_METHODS = ("is_prior", "is_proposal", "pmmh", "nuts_is")
"""The 2017 importance-sampling methods and their successors (issue 4); collapsed model only."""
LOG_LIK_MAX_VALUES = 25_000_000  # 200 MB of float64 in the log_likelihood group
LOG_LIK_BLOCK = 4_000_000  # halo-draw terms evaluated per compiled call (bounded memory)
DEFAULT_PRIOR_OPTIONS = {"source": "tinker10", "hmf_model": "Tinker10", "cosmology": "WMAP5",
                         "mass_convention": "2017", "z_interp": "bins", "density_per": None}


def _model_inputs(model: str, catalog: Catalog, prior: MassPrior):
    if model not in MODELS:
        raise ValueError(f"model {model!r}: choose one of {', '.join(MODELS)}")
    z, lum = jnp.asarray(catalog.z), jnp.asarray(catalog.lum_obs)
    if model in LATENT_SITES:
        return MODELS[model].model, (z, lum, prior, "data")
    data = collapsed.prepare_data(z, lum, prior)
    config = QuadratureConfig(linear=prior.z_interp == "linear")
    return MODELS[model].model, (z, lum, prior, data, config)


def _halo_masses(samples: dict, catalog: Catalog, prior: MassPrior, mass_draws: int, seed: int,
                 log_weight: np.ndarray | None = None):
    """Each halo's ln M from its exact conditional, for ``mass_draws`` posterior draws in all.

    Unweighted runs use evenly spaced draws of every chain. Weighted runs (one chain of
    importance-weighted draws) resample draws in proportion to their weights, with
    replacement, so a draw may appear more than once (each time with its own masses).
    """
    chains, draws = np.shape(samples["alpha1"])
    if log_weight is None:
        per_chain = max(1, min(draws, int(np.ceil(mass_draws / chains))))
        picks = np.unique(np.linspace(0, draws - 1, per_chain).round().astype(int))
    else:
        w = np.exp(np.ravel(log_weight) - np.logaddexp.reduce(np.ravel(log_weight)))
        picks = np.sort(np.random.default_rng(seed + 104729).choice(draws, size=mass_draws, p=w / w.sum()))
    key = jax.random.PRNGKey(seed + 104729)
    out = np.empty((chains, picks.size, len(catalog)), dtype=np.float32)
    for c in range(chains):
        for j, d in enumerate(picks):
            hyper = Hyper(*(float(samples[name][c, d]) for name in HYPER_NAMES))
            out[c, j] = np.asarray(collapsed.sample_conditional_ln_mass(
                jax.random.fold_in(key, (c * draws + d) * mass_draws + j), hyper, catalog.z, catalog.lum_obs, prior))
    return out, picks


def pointwise_log_likelihood(samples: dict, catalog: Catalog, prior: MassPrior, max_values: int = LOG_LIK_MAX_VALUES):
    """Each halo's collapsed ``ln P(L_obs,k | theta)`` for the posterior draws, for ArviZ's LOO.

    It is the same quantity for every model: the latent models' masses are nuisance
    parameters, and leaving a halo out means integrating its mass out. At most ``max_values``
    numbers are kept (float64, 8 bytes each): when chains x draws x halos exceeds it, evenly
    spaced draws are kept and the returned ``draw`` indices say which.

    Returns ``(values (chain, draw, halo), draw_indices)``.
    """
    chains, draws = np.shape(samples["alpha1"])
    n = len(catalog)
    keep = max(1, min(draws, max_values // max(1, chains * n)))
    picks = np.unique(np.linspace(0, draws - 1, keep).round().astype(int))
    data = collapsed.prepare_data(jnp.asarray(catalog.z), jnp.asarray(catalog.lum_obs), prior)
    config = QuadratureConfig(linear=prior.z_interp == "linear")
    per_draw = jax.jit(jax.vmap(lambda h: log_likelihood_halos(h, data, config)))
    from bigmali.inference.blocks import map_blocks

    out = np.empty((chains, picks.size, n))
    for c in range(chains):
        hyper = Hyper(*(jnp.asarray(np.asarray(samples[name])[c, picks], dtype=jnp.float64) for name in HYPER_NAMES))
        out[c] = map_blocks(per_draw, hyper, max(1, LOG_LIK_BLOCK // n))
    return out, picks


def _fit_importance(method: str, catalog: Catalog, prior: MassPrior, model_fn, args, nuts_config, *, is_samples: int,
                    n_hyper: int | None, clip: bool, likelihood: str):
    """Run one of the importance-sampling methods: (samples, stats, config, weight diagnostics or None)."""
    from bigmali.inference import importance, nuts_is, pmmh
    from bigmali.inference.halo_likelihood import halo_data

    if is_samples < 1:
        raise ValueError(f"is_samples = {is_samples}: need at least one importance sample per halo")
    if n_hyper is not None and n_hyper < 1:
        raise ValueError(f"n_hyper = {n_hyper}: need at least one hyper-sample")
    halos = halo_data(catalog.z, catalog.lum_obs, prior)
    collapsed_data, quad_config = args[3], args[4]
    seed, progress = nuts_config.seed, nuts_config.progress
    run_config = {"is_samples": is_samples, "is_clip": clip, "seed": seed}
    if method in ("is_prior", "is_proposal"):
        if method == "is_prior":
            k = n_hyper or 10_000
            out = importance.is_prior(halos, collapsed_data, prior, quad_config, n_hyper=k, is_samples=is_samples,
                                      clip=clip, likelihood=likelihood, seed=seed, progress=progress)
            run_config.update(n_hyper=k, likelihood=likelihood)
        else:
            k = n_hyper or 4000
            out = importance.is_proposal(model_fn, args, n_hyper=k, seed=seed, progress=progress)
            run_config = {"n_hyper": k, "proposal": "laplace", "likelihood": "exact", "seed": seed}
        stats = {"log_weight": out.log_weight, "log_weight_raw": out.log_weight_raw,
                 "log_likelihood_estimate": out.log_likelihood}
        return out.samples, stats, run_config, out.diagnostics
    from bigmali.inference.laplace import laplace

    if method == "pmmh":
        approx = laplace(model_fn, args, key=jax.random.PRNGKey(seed))
        # The Laplace mode and covariance of the standardised sites (flattened in sorted-key
        # order), mapped to alpha1, alpha2, alpha4, S.
        order = [sorted(HYPER_SITES).index(site) for site in HYPER_SITES]
        sd = np.asarray(HYPERPRIOR_SD)
        start = np.asarray(HYPERPRIOR_MEAN) + sd * np.asarray(approx.mode)[order]
        cov = np.asarray(approx.cov)[np.ix_(order, order)] * np.outer(sd, sd)
        out = pmmh.run_pmmh(halos, prior, start, cov, chains=nuts_config.chains, warmup=nuts_config.warmup,
                            draws=nuts_config.draws, is_samples=is_samples, clip=clip, seed=seed, progress=progress)
        run_config.update(chains=nuts_config.chains, warmup=nuts_config.warmup, draws=nuts_config.draws)
        return out.samples, out.stats, run_config, None
    out = nuts_engine.run_nuts(nuts_is.model, (halos, prior, nuts_is.fixed_key(seed), is_samples, clip), config=nuts_config)
    run_config.update(nuts_config._asdict())
    return out.samples, out.stats, run_config, None


def _prior_draws(seed: int, n: int = 1000) -> dict:
    draws = sample_hyperprior(jax.random.PRNGKey(seed + 15485863), (1, n))
    return {name: np.asarray(v) for name, v in draws._asdict().items()}


def _check_counts(**counts) -> None:
    """Refuse, before any work, a count that is not an integer or is below its least value."""
    for name, (value, least) in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} = {value!r}: must be an integer >= {least}")


def fingerprint(catalog: Catalog, prior: MassPrior) -> dict:
    """What binds a run to its data: the catalog's and the prior's SHA-256 and the halo count."""
    return {"n_halos": len(catalog), "catalog_sha256": catalog.fingerprint(), "prior_sha256": prior_fingerprint(prior)}


def fit(
    catalog: Catalog,
    model: str = "collapsed",
    method: str = "nuts",
    prior: MassPrior | None = None,
    *,
    prior_options: dict | None = None,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float | None = None,
    dense_mass: bool = True,
    seed: int = 0,
    progress: bool = True,
    chain_method: str = "sequential",
    guide: str = "mvn",
    steps: int = 3000,
    learning_rate: float = 0.01,
    svi_draws: int = 4000,
    mass_draws: int = 20,
    log_likelihood: int | None = LOG_LIK_MAX_VALUES,
    is_samples: int = 100,
    n_hyper: int | None = None,
    is_clip: bool = True,
    is_likelihood: str = "is",
):
    """Fit the mass-luminosity relation to a catalog and return an ArviZ DataTree.

    Args:
        catalog: a validated :class:`~bigmali.catalog.Catalog`.
        model: ``"collapsed"`` (masses integrated out exactly), ``"latent_mass"`` (one latent
            ln M per halo) or ``"full"`` (latent ln M and ln L per halo); the latter two with NUTS.
        method: ``"nuts"``, ``"svi"`` (collapsed model) or ``"nuts_gibbs"`` (latent_mass model:
            NUTS on the hyperparameters within Metropolis-Hastings Gibbs over the masses); or
            one of the importance-sampling methods on the collapsed model, ``"is_prior"``,
            ``"is_proposal"``, ``"pmmh"``, ``"nuts_is"`` (see ``is_samples`` below).
        prior: the mass prior; by default built from ``prior_options`` (the CLI's prior
            flags as keyword names of :func:`~bigmali.mass_prior.load_mass_prior`, plus
            ``source``), which are recorded so that the run can be extended later.
        chains, warmup, draws, target_accept, dense_mass, chain_method: NUTS settings.
            ``target_accept`` defaults to 0.65 for the collapsed model and 0.8 for the latent
            models. The collapsed posterior is four nearly Gaussian parameters: on the
            115,919-halo mock, 0.65 gave 3.1 leapfrog steps per draw and bulk ESS ~6900 in
            169 s, against 4.9 steps and ESS ~4200 in 215 s at 0.8 (no divergences either way).
        guide, steps, learning_rate, svi_draws: SVI settings (guide ``mvn``, ``normal``, ``lowrank``).
        mass_draws: per-halo masses are kept for this many posterior draws in all (0 for none),
            in the ``halo_mass`` group: drawn from their exact conditional for the collapsed
            model, the sampled masses themselves for the latent models.
        is_samples, n_hyper, is_clip, is_likelihood: the importance-sampling methods
            (``is_prior``: K = ``n_hyper`` hyperprior draws weighted by the 2017 IS
            log-likelihood with ``is_samples`` per halo, or the exact one with
            ``is_likelihood="exact"``; ``is_proposal``: K Laplace draws reweighted by the exact
            posterior and Pareto-smoothed; ``pmmh``: pseudo-marginal Metropolis-Hastings on the
            IS estimate; ``nuts_is``: NUTS on the IS estimate with fixed random numbers).
            ``is_clip`` clips proposed masses into the table as in 2017. K defaults to
            10,000 (``is_prior``) and 4,000 (``is_proposal``).
        log_likelihood: the ``log_likelihood`` group (each halo's collapsed log-likelihood, for
            LOO) keeps at most this many values, thinning draws evenly beyond it; 0 or None
            for no group. All 4 x 1000 draws of a 115,919-halo catalog would take 3.7 GB.
        seed: the same seed gives the same numbers.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    _check_counts(chains=(chains, 1), draws=(draws, 1), warmup=(warmup, 0), steps=(steps, 1), svi_draws=(svi_draws, 1),
                  mass_draws=(mass_draws, 0))
    # The options are recorded only when they describe the prior used (extend rebuilds it).
    options = {**DEFAULT_PRIOR_OPTIONS, **(prior_options or {})} if prior is None or prior_options else None
    if prior is None:
        prior = load_mass_prior(**options)
    if catalog.z.max() > prior.z_max:
        raise ValueError(f"column 'z': the catalog reaches z = {catalog.z.max():g}, beyond the mass prior's {prior.z_max:g}")
    if target_accept is None:
        target_accept = 0.65 if model == "collapsed" else 0.8
    start = time.perf_counter()
    model_fn, args = _model_inputs(model, catalog, prior)
    sampler_state = halo_ln_mass = picks = weights = None
    if model in LATENT_SITES:
        allowed = ("nuts", "nuts_gibbs") if model == "latent_mass" else ("nuts",)
        if method not in allowed:
            raise ValueError(f"method {method!r}: the {model} model is fitted with {' or '.join(allowed)}")
    elif method == "nuts_gibbs":
        raise ValueError("method 'nuts_gibbs' updates per-halo latents: use it with model='latent_mass'")
    if method in IS_METHODS and model != "collapsed":
        raise ValueError(f"method {method!r} works on the hyperparameters alone: use it with model='collapsed'")
    nuts_config = nuts_engine.NutsConfig(chains=chains, warmup=warmup, draws=draws, target_accept=target_accept,
                                         dense_mass=dense_mass, seed=seed, chain_method=chain_method, progress=progress)
    if model in LATENT_SITES:
        config = nuts_config
        out = nuts_engine.run_nuts_latent(model_fn, args, HYPER_SITES, ("ln_mass",), LATENT_SITES[model], config,
                                          halo_draws=max(mass_draws, 1),
                                          gibbs_site="ln_mass_u" if method == "nuts_gibbs" else None)
        samples, stats, run_config = out.samples, out.stats, config._asdict()
        if mass_draws > 0:
            halo_ln_mass, picks = out.halo["ln_mass"], out.halo_draw
    elif method in IS_METHODS:
        samples, stats, run_config, weights = _fit_importance(method, catalog, prior, model_fn, args, nuts_config,
                                                              is_samples=is_samples, n_hyper=n_hyper, clip=is_clip,
                                                              likelihood=is_likelihood)
    elif method == "nuts":
        config = nuts_config
        out = nuts_engine.run_nuts(model_fn, args, config=config)
        samples, stats, sampler_state = out.samples, out.stats, out.last_state
        run_config = config._asdict()
    else:
        config = svi_engine.SviConfig(guide=guide, steps=steps, learning_rate=learning_rate, draws=svi_draws,
                                      seed=seed, progress=progress)
        out = svi_engine.run_svi(model_fn, args, config=config)
        samples = out.samples
        stats = {"converged": np.full(np.shape(samples["alpha1"]), out.converged)}
        run_config = {**config._asdict(), "converged": out.converged, "final_loss": float(out.losses[-1])}
    if mass_draws > 0 and model not in LATENT_SITES:
        halo_ln_mass, picks = _halo_masses(samples, catalog, prior, mass_draws, seed,
                                           stats.get("log_weight") if weights is not None else None)
    attrs = {
        "model": model,
        "method": method,
        "n_halos": len(catalog),
        "seconds": time.perf_counter() - start,
        "config": run_config,
        "prior_options": options,
        "prior_description": prior.description,
        "fingerprint": fingerprint(catalog, prior),
        "bigmali_version": _version,
    }
    if weights is not None:
        attrs["weights"] = weights
    truth = hyper_from_meta(catalog.meta)
    if truth is not None:
        attrs["catalog_hyper"] = truth._asdict()
    log_lik = None
    if log_likelihood and weights is None:  # LOO needs draws from the posterior, not weighted ones
        log_lik = pointwise_log_likelihood(samples, catalog, prior, log_likelihood)
    tree = build_datatree(posterior=samples, sample_stats=stats, catalog=catalog, prior_draws=_prior_draws(seed),
                          attrs=attrs, halo_ln_mass=halo_ln_mass, halo_mass_draw=picks, sampler_state=sampler_state,
                          log_likelihood=log_lik)
    if method == "svi":
        import xarray as xr

        tree["svi_loss"] = xr.DataTree(xr.Dataset({"loss": (("step",), out.losses)}))
    return tree


def extend(run, catalog: Catalog, draws: int = 1000, *, prior: MassPrior | None = None, progress: bool = True,
           mass_draws: int | None = None):
    """Add ``draws`` draws to every chain of a finished NUTS run; returns the longer run.

    The mass prior is rebuilt from the options the run recorded; a run fitted with a prior
    object of the caller's own needs that prior passed again.
    """
    from bigmali.inference.results import check_run_data

    if run.attrs.get("method") != "nuts" or "sampler_state" not in run.children:
        raise ValueError("only a NUTS run with a saved sampler state can be extended")
    if prior is None:
        options = attr_json(run, "prior_options")
        if options is None:
            raise ValueError("this run was fitted with a caller's own mass prior: pass it as prior=")
        prior = load_mass_prior(**options)
    check_run_data(run, catalog, prior)
    config = attr_json(run, "config")
    start = time.perf_counter()
    model_fn, args = _model_inputs(run.attrs["model"], catalog, prior)
    state = {k: np.asarray(run["sampler_state"][k]) for k in ("position", "step_size", "inverse_mass_matrix")}
    seed = int(config["seed"]) + int(np.asarray(run["posterior"]["draw"]).size)
    out = nuts_engine.extend_nuts(model_fn, args, None, state, draws, seed, progress)
    old_samples = {k: np.asarray(run["posterior"][k]) for k in HYPER_NAMES}
    old_stats = {k: np.asarray(run["sample_stats"][k]) for k in out.stats}
    samples = {k: np.concatenate([old_samples[k], out.samples[k]], axis=1) for k in HYPER_NAMES}
    stats = {k: np.concatenate([old_stats[k], out.stats[k]], axis=1) for k in out.stats}
    config["draws"] = int(np.shape(samples["alpha1"])[1])
    if mass_draws is None:  # as many as the run had
        mass_draws = int(np.prod(run["halo_mass"]["ln_mass"].shape[:2])) if "halo_mass" in run.children else 0
    halo_ln_mass = picks = None
    if mass_draws > 0:
        halo_ln_mass, picks = _halo_masses(samples, catalog, prior, mass_draws, seed)
    log_lik = None
    if "log_likelihood" in run.children:  # the same budget as the run had
        budget = max(LOG_LIK_MAX_VALUES, int(np.asarray(run["log_likelihood"]["lum_obs"]).size))
        log_lik = pointwise_log_likelihood(samples, catalog, prior, budget)
    attrs = dict(run.attrs)  # structured entries are JSON text already; build_datatree keeps strings as they are
    attrs.update({"seconds": float(run.attrs["seconds"]) + time.perf_counter() - start, "config": config})
    prior_draws = {k: np.asarray(run["prior"][k]) for k in HYPER_NAMES} if "prior" in run.children else None
    return build_datatree(posterior=samples, sample_stats=stats, catalog=catalog, prior_draws=prior_draws, attrs=attrs,
                          halo_ln_mass=halo_ln_mass, halo_mass_draw=picks, sampler_state=out.last_state,
                          log_likelihood=log_lik)
