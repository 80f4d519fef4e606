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
from bigmali.datatree import attr_json, build_datatree, run_flux_limit, run_survey
from bigmali.halo_masses import draw_halo_masses
from bigmali.inference import nuts as nuts_engine
from bigmali.inference.engines import ENGINES, Posterior, check_counts, engine_for, fit_data, make_config
from bigmali.likelihood.quadrature import log_likelihood_halos_batch
from bigmali.mass_prior import MassPrior, load_mass_prior, prior_fingerprint
from bigmali.relation import HYPER_NAMES, Hyper, hyper_from_meta, sample_hyperprior
from bigmali.selection import LIKELIHOODS, resolve_flux_limit, resolve_survey
from bigmali.utils import map_blocks

__all__ = ["fit", "extend", "pointwise_log_likelihood", "METHODS"]

METHODS = tuple(ENGINES)
LOG_LIK_MAX_VALUES = 25_000_000  # 200 MB of float64 in the log_likelihood group
LOG_LIK_BLOCK = 4_000_000  # halo-draw terms returned per compiled call (bounded memory)
DEFAULT_PRIOR_OPTIONS = {
    "source": "tinker10",
    "hmf_model": "Tinker10",
    "cosmology": "WMAP5",
    "mass_convention": "2017",
    "z_interp": "bins",
    "density_per": None,
}


def pointwise_log_likelihood(
    samples: dict,
    catalog: Catalog,
    prior: MassPrior,
    max_values: int = LOG_LIK_MAX_VALUES,
    data=None,
    flux_limit=None,
):
    """Each halo's collapsed ``ln P(L_obs,k | theta)`` for the posterior draws, for ArviZ's LOO.

    It is the same quantity for every model: the latent models' masses are nuisance
    parameters, and leaving a halo out means integrating its mass out. At most ``max_values``
    numbers are kept (float64, 8 bytes each): when chains x draws x halos exceeds it, evenly
    spaced draws are kept and the returned ``draw`` indices say which. ``data``: the fit's
    :class:`~bigmali.inference.engines.FitData`, whose collapsed tables are used if it has them
    (otherwise they are built, with ``flux_limit`` if the run had one).

    Returns ``(values (chain, draw, halo), draw_indices)``.
    """
    chains, draws = np.shape(samples["alpha1"])
    n = len(catalog)
    keep = max(1, min(draws, max_values // max(1, chains * n)))
    picks = np.unique(np.linspace(0, draws - 1, keep).round().astype(int))
    if data is None or data.collapsed is None:
        data = fit_data(catalog, prior, "collapsed", flux_limit=flux_limit)
    tables, config = data.collapsed, data.quadrature

    block = max(1, LOG_LIK_BLOCK // n)  # draws per compiled call (they run one after the other)
    out = np.empty((chains, picks.size, n))
    for c in range(chains):
        hyper = Hyper(*(jnp.asarray(np.asarray(samples[name])[c, picks], dtype=jnp.float64) for name in HYPER_NAMES))
        map_blocks(lambda h: log_likelihood_halos_batch(h, tables, config), hyper, block, out=out[c])
    return out, picks


def _prior_draws(seed: int, n: int = 1000) -> dict:
    draws = sample_hyperprior(jax.random.PRNGKey(seed + 15485863), (1, n))
    return {name: np.asarray(v) for name, v in draws._asdict().items()}


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
    mass_draws: int = 20,
    log_likelihood: int | None = LOG_LIK_MAX_VALUES,
    flux_limit=None,
    selection: str = "truncated",
    survey=None,
    shard_halos: bool = False,
    **options,
):
    """Fit the mass-luminosity relation to a catalog and return an ArviZ DataTree.

    Args:
        catalog: a validated :class:`~bigmali.catalog.Catalog`.
        model: ``"collapsed"`` (masses integrated out exactly), ``"latent_mass"`` (a latent ln M
            per halo) or ``"full"`` (latent ln M and ln L per halo); see :mod:`bigmali.models`.
        method: an engine of :data:`bigmali.inference.engines.ENGINES`: ``nuts``, ``nuts_gibbs``
            (latent_mass), ``svi``, or the importance-sampling methods ``is_prior``,
            ``is_proposal``, ``pmmh``, ``nuts_is`` (collapsed).
        prior: the mass prior; by default built from ``prior_options`` (keyword names of
            :func:`~bigmali.mass_prior.load_mass_prior`, plus ``source``), which are recorded so
            that the run can be extended later.
        mass_draws: per-halo masses are kept for this many posterior draws in all (0 for none).
        log_likelihood: keep at most this many values of each halo's collapsed log-likelihood
            (for LOO), thinning draws evenly; 0 or None for none. Weighted runs have none.
        flux_limit: the survey's flux limit (:class:`bigmali.selection.FluxLimit`, or text:
            a number, a table file, ``"column"``, or ``"none"`` for a complete catalog). By
            default the limit the catalog's metadata records, if any. Each halo is then
            conditioned on its detection; the run records the limit (attribute ``selection``).
        selection: with a flux limit, ``"truncated"`` (each halo conditioned on its detection)
            or ``"extended"`` (the number of detected halos counts too, Poisson: see
            :mod:`bigmali.likelihood.extended`), recorded as ``selection_likelihood``.
        survey: the extended likelihood's sky area and redshift window
            (:class:`bigmali.selection.Survey`); by default a lightcone mock's own field.
        shard_halos: split the halo axis across every JAX device (collapsed model, every
            method; :mod:`bigmali.likelihood.sharding`): the same posterior, each device
            summing its own halos' terms, of the exact likelihood or of the 2017 IS one
            (``is_prior``'s ``is_likelihood='exact'`` stays on one device). The run records
            the device count (``halo_devices``).
        **options: the method's settings, the fields of its engine's config (``chains``,
            ``warmup``, ``draws``, ``target_accept``, ... for NUTS; ``steps``, ``svi_draws``, ...
            for SVI; ``seed`` and ``progress`` for all); a setting the method lacks is refused.
            The same seed gives the same numbers.
    """
    engine = engine_for(method, model)
    config = make_config(engine, model, {name: value for name, value in options.items() if value is not None})
    check_counts({"mass_draws": (mass_draws, 0)})
    # The options are recorded only when they describe the prior used (extend rebuilds it).
    recorded_options = {**DEFAULT_PRIOR_OPTIONS, **(prior_options or {})} if prior is None or prior_options else None
    prior = load_mass_prior(**recorded_options) if prior is None else prior
    if catalog.z.max() > prior.z_max:
        raise ValueError(
            f"column 'z': the catalog reaches z = {catalog.z.max():g}, beyond the mass prior's {prior.z_max:g}"
        )
    limit, limit_source = resolve_flux_limit(flux_limit, catalog)
    if selection not in LIKELIHOODS:
        raise ValueError(f"selection {selection!r}: choose one of {', '.join(LIKELIHOODS)}")
    survey_source = None
    if selection == "extended":
        if limit is None:
            raise ValueError("selection 'extended' needs a flux limit: the catalog records none and none was given")
        survey, survey_source = resolve_survey(survey, catalog)
    else:
        survey = None
    start = time.perf_counter()
    data = fit_data(catalog, prior, model, mass_draws, limit, survey, shard_halos)
    post = engine.run(data, config)
    attrs = {
        "model": model,
        "method": method,
        "prior_options": recorded_options,
        "selection": "none" if limit is None else limit.to_meta(),  # read back by datatree.run_flux_limit
        "selection_source": limit_source,
        "selection_likelihood": "none" if limit is None else selection,
        "survey": "none" if survey is None else survey.to_json(),  # read back by datatree.run_survey
        "survey_source": survey_source or "none",
        "halo_devices": jax.device_count() if shard_halos else 1,
    }
    return _datatree(post, data, config.seed, attrs, mass_draws, log_likelihood, start)


def _datatree(
    post, data, seed: int, attrs: dict, mass_draws: int, log_likelihood: int | None, start: float, prior_seed=None
):
    """The run's DataTree: the engine's draws, then per-halo masses and the pointwise
    log-likelihood where asked, and what binds the run to its catalog and prior. The prior
    group is drawn with ``prior_seed`` (default ``seed``), the masses with ``seed``."""
    catalog, prior = data.catalog, data.prior
    halo_ln_mass, picks = post.extras.get("halo_ln_mass"), post.extras.get("halo_mass_draw")
    if mass_draws > 0 and halo_ln_mass is None:
        split = attrs.get("halo_devices", 1) > 1  # a sharded fit draws its masses sharded too
        halo_ln_mass, picks = draw_halo_masses(post.samples, catalog, prior, mass_draws, seed, post.log_weight, split)
    log_lik = None
    if log_likelihood and post.log_weight is None:  # LOO needs draws from the posterior, not weighted ones
        log_lik = pointwise_log_likelihood(post.samples, catalog, prior, log_likelihood, data)
    attrs = {
        **attrs,
        "n_halos": len(catalog),
        "seconds": time.perf_counter() - start,
        "config": post.config,
        "prior_description": prior.description,
        "fingerprint": fingerprint(catalog, prior),
        "bigmali_version": _version,
    }
    if "weights" in post.extras:
        attrs["weights"] = post.extras["weights"]
    truth = hyper_from_meta(catalog.meta)
    if truth is not None:
        attrs["catalog_hyper"] = truth._asdict()
    tree = build_datatree(
        posterior=post.samples,
        sample_stats=post.stats,
        catalog=catalog,
        prior_draws=_prior_draws(seed if prior_seed is None else prior_seed),
        attrs=attrs,
        halo_ln_mass=halo_ln_mass,
        halo_mass_draw=picks,
        sampler_state=post.extras.get("sampler_state"),
        log_likelihood=log_lik,
    )
    for name, group in post.extras.get("groups", {}).items():
        tree[name] = group
    return tree


def extend(
    run,
    catalog: Catalog,
    draws: int = 1000,
    *,
    prior: MassPrior | None = None,
    progress: bool = True,
    mass_draws: int | None = None,
):
    """Add ``draws`` draws to every chain of a finished NUTS run; returns the longer run.

    The mass prior is rebuilt from the options the run recorded; a run fitted with a prior
    object of the caller's own needs that prior passed again.
    """
    from bigmali.datatree import check_run_data

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
    data = fit_data(catalog, prior, run.attrs["model"], flux_limit=run_flux_limit(run), survey=run_survey(run))
    state = {k: np.asarray(run["sampler_state"][k]) for k in ("position", "step_size", "inverse_mass_matrix")}
    seed = int(config["seed"]) + int(np.asarray(run["posterior"]["draw"]).size)
    out = nuts_engine.extend_nuts(data.model_fn, data.model_args, None, state, draws, seed, progress)
    old_samples = {k: np.asarray(run["posterior"][k]) for k in HYPER_NAMES}
    old_stats = {k: np.asarray(run["sample_stats"][k]) for k in out.stats}
    samples = {k: np.concatenate([old_samples[k], out.samples[k]], axis=1) for k in HYPER_NAMES}
    stats = {k: np.concatenate([old_stats[k], out.stats[k]], axis=1) for k in out.stats}
    config["draws"] = int(np.shape(samples["alpha1"])[1])
    if mass_draws is None:  # as many as the run had
        mass_draws = int(np.prod(run["halo_mass"]["ln_mass"].shape[:2])) if "halo_mass" in run.children else 0
    budget = 0
    if "log_likelihood" in run.children:  # the same budget as the run had
        budget = max(LOG_LIK_MAX_VALUES, int(np.asarray(run["log_likelihood"]["lum_obs"]).size))
    post = Posterior(samples, stats, config, extras={"sampler_state": out.last_state})
    # The run's attrs (structured entries are JSON text already; build_datatree keeps strings
    # as they are); its seconds and this extension's add up.
    earlier = start - float(run.attrs["seconds"])
    return _datatree(post, data, seed, dict(run.attrs), mass_draws, budget, earlier, prior_seed=int(config["seed"]))
