"""The inference engines behind one interface, and the registry that names them.

An :class:`Engine` is a method of fitting: a config NamedTuple (the one home of each of its
defaults), the models it accepts and one ``run(data, config) -> Posterior``. ``fit`` builds a
catalog's :class:`FitData` once, looks the method up in :data:`ENGINES`, runs it and turns the
:class:`Posterior` into a DataTree; the CLI builds its flags from the same configs. In the
manner of BlackJAX's ``SamplingAlgorithm`` and NumPyro's ``MCMCKernel``/``MCMC`` split: the
engines know nothing of DataTrees, files or the CLI.

To add a method: write its config and run function here (or in its own module under
``inference/``) and :func:`register` it.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bigmali.catalog import Catalog
from bigmali.inference import nuts as nuts_engine
from bigmali.inference import svi as svi_engine
from bigmali.likelihood.quadrature import QuadratureConfig
from bigmali.mass_prior import MassPrior
from bigmali.models import LATENT_SITES, MODELS, collapsed
from bigmali.models.common import HYPER_SITES
from bigmali.relation import HYPERPRIOR_MEAN, HYPERPRIOR_SD
from bigmali.utils import bind

__all__ = [
    "Engine",
    "Posterior",
    "FitData",
    "ENGINES",
    "MINIMUM",
    "register",
    "engine_for",
    "make_config",
    "option_defaults",
    "check_counts",
]

MINIMUM = {
    "chains": 1,
    "draws": 1,
    "warmup": 0,
    "max_tree_depth": 1,
    "steps": 1,
    "svi_draws": 1,
    "num_particles": 1,
    "is_samples": 1,
    "n_hyper": 1,
    "target_ess": 0,
}
"""The least value of each count option (every engine's config is checked against it)."""


class FitData(NamedTuple):
    """What every engine needs of one catalog, built once per fit."""

    catalog: Catalog
    prior: MassPrior
    model: str
    model_fn: Callable  # static settings bound (bigmali.utils.bind)
    model_args: tuple  # arrays only: the catalog's data and tables
    halo_draws: int  # per-halo draws a latent-model engine keeps
    collapsed: collapsed.CollapsedData | None = None  # the collapsed likelihood's tables (collapsed model)
    quadrature: QuadratureConfig | None = None
    mesh: Mesh | None = None  # the devices the halos are split across (shard_halos)


def fit_data(
    catalog: Catalog,
    prior: MassPrior,
    model: str,
    halo_draws: int = 0,
    flux_limit=None,
    survey=None,
    shard_halos: bool = False,
) -> FitData:
    """The model function and its arguments (the collapsed likelihood's tables built once).
    A catalog's ``lum_obs_err`` column gives each halo its own measurement error; a
    ``flux_limit`` (:class:`bigmali.selection.FluxLimit`) conditions each halo on its
    detection (a halo below its limit is refused), or, with a ``survey`` window
    (:class:`bigmali.selection.Survey`), enters through the extended likelihood
    (:mod:`bigmali.likelihood.extended`). ``shard_halos`` (the collapsed model): the halo
    axis split across every JAX device (:func:`bigmali.likelihood.sharding.shard_halos`,
    :func:`bigmali.models.collapsed.sharded_model`), and the 2017 IS likelihood's blocks of
    halos too (``FitData.mesh``, :func:`bigmali.likelihood.sharding.is_log_likelihood`)."""
    from bigmali.likelihood.extended import prepare_count
    from bigmali.selection import check_detected, check_in_survey

    if shard_halos and model != "collapsed":
        raise ValueError(f"shard_halos: the halo axis is split for the collapsed model, not {model}")
    z, lum = jnp.asarray(catalog.z), jnp.asarray(catalog.lum_obs)
    err = None if catalog.lum_obs_err is None else jnp.asarray(catalog.lum_obs_err)
    lum_lim = None
    if flux_limit is not None:
        ln_lim = flux_limit.ln_limit(catalog)
        check_detected(catalog, ln_lim)
        lum_lim = np.exp(ln_lim)
    if survey is None:
        tables = collapsed.prepare_data(z, lum, prior, err, lum_lim, flux_limit)
    else:
        if flux_limit is None:
            raise ValueError("the extended likelihood is for a flux-limited catalog: give its flux limit")
        check_in_survey(catalog, survey)
        count = prepare_count(prior, flux_limit, survey, catalog.lum_obs_err, catalog.meta)
        tables = collapsed.prepare_data(z, lum, prior, err)._replace(count=count)
    if model in LATENT_SITES:
        selection = tables if (lum_lim is not None or survey is not None) else None
        args = (z, lum, prior, err, selection)
        return FitData(
            catalog, prior, model, MODELS[model].model, args, halo_draws, tables, QuadratureConfig.for_prior(prior)
        )
    quadrature = QuadratureConfig.for_prior(prior)
    if shard_halos:
        from bigmali.likelihood import sharding

        mesh = sharding.halo_mesh()
        model_fn = bind(collapsed.sharded_model, mesh=mesh, config=quadrature)
        args = sharding.shard_halos(tables, mesh=mesh)
        return FitData(catalog, prior, model, model_fn, args, halo_draws, tables, quadrature, mesh)
    model_fn = bind(MODELS[model].model, config=quadrature)
    return FitData(catalog, prior, model, model_fn, (z, lum, prior, tables), halo_draws, tables, quadrature)


class Posterior(NamedTuple):
    """What every engine returns: draws and statistics with a leading (chain, draw) shape.

    ``log_weight`` is None for draws from the posterior and the normalised log weights of
    weighted draws; ``config`` is what the run used (recorded in the DataTree); ``extras`` holds
    what only some engines make: ``halo_ln_mass`` and ``halo_mass_draw`` (latent models),
    ``sampler_state`` (NUTS, to extend a run), ``weights`` (weight diagnostics), ``groups``
    (further DataTree groups, e.g. the SVI loss).
    """

    samples: dict
    stats: dict
    config: dict
    log_weight: np.ndarray | None = None
    extras: dict = {}


class Engine(NamedTuple):
    """A method of fitting: its config, the models it accepts and its run function."""

    name: str
    config: type
    models: tuple[str, ...]
    run: Callable[[FitData, NamedTuple], Posterior]
    summary: str


ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    ENGINES[engine.name] = engine
    return engine


def engine_for(method: str, model: str) -> Engine:
    """The engine of ``method``, refusing a model it cannot fit."""
    if model not in MODELS:
        raise ValueError(f"model {model!r}: choose one of {', '.join(MODELS)}")
    if method not in ENGINES:
        raise ValueError(f"method {method!r}: choose one of {', '.join(ENGINES)}")
    engine = ENGINES[method]
    if model not in engine.models:
        fits = [name for name, e in ENGINES.items() if model in e.models]
        raise ValueError(
            f"method {method!r}: the {model} model is fitted with {' or '.join(fits)}; "
            f"use it with model={' or model='.join(repr(m) for m in engine.models)}"
        )
    return engine


def option_defaults(methods=None) -> dict[str, dict[str, object]]:
    """Every option of ``methods``' engines (default: all): ``{option: {method: default}}``, for the CLI's flags."""
    out: dict[str, dict[str, object]] = {}
    for name in methods or ENGINES:
        for field, default in ENGINES[name].config._field_defaults.items():
            out.setdefault(field, {})[name] = default
    return out


def check_counts(counts: dict) -> None:
    """Refuse, before any work, a count (``{name: (value, least)}``) that is not an integer or is below its least value."""
    for name, (value, least) in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} = {value!r}: must be an integer >= {least}")


def make_config(engine: Engine, model: str, options: dict):
    """The engine's config from ``options`` (names of its fields), checked before any work.
    Drawing to a target ESS without a warmup given warms up for ``TARGET_ESS_WARMUP``."""
    fields = engine.config._fields
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"option {unknown[0]!r} does not apply to method {engine.name!r} (its options: {', '.join(fields)})"
        )
    check_counts({name: (value, MINIMUM[name]) for name, value in options.items() if name in MINIMUM})
    config = engine.config(**options)
    if getattr(config, "target_ess", None) and "warmup" not in options:
        config = config._replace(warmup=nuts_engine.TARGET_ESS_WARMUP)
    if "target_accept" in fields and config.target_accept is None:
        config = config._replace(target_accept=nuts_engine.default_target_accept(model))
    return config


# ---------------------------------------------------------------- NUTS, NUTS within Gibbs


def _run_nuts(data: FitData, config: nuts_engine.NutsConfig) -> Posterior:
    if data.model in LATENT_SITES:
        return _run_nuts_latent(data, config, gibbs_site=None)
    out = nuts_engine.run_nuts(data.model_fn, data.model_args, config=config)
    return Posterior(out.samples, out.stats, _drawn(config, out), extras={"sampler_state": out.last_state})


def _drawn(config, out) -> dict:
    """The config as recorded: with a target ESS, ``draws`` is the number drawn and
    ``max_draws`` the most that were allowed."""
    recorded = config._asdict()
    if config.target_ess:
        recorded.update(draws=int(np.shape(out.stats["diverging"])[1]), max_draws=config.draws)
    return recorded


def _refuse_target_ess(model: str, config) -> None:
    if config.target_ess:
        raise ValueError(
            f"target_ess = {config.target_ess}: drawing until a target ESS is for the collapsed model; "
            f"give the {model} model a number of draws"
        )


def _run_nuts_latent(data: FitData, config: nuts_engine.NutsConfig, gibbs_site: str | None) -> Posterior:
    _refuse_target_ess(data.model, config)
    out = nuts_engine.run_nuts_latent(
        data.model_fn,
        data.model_args,
        HYPER_SITES,
        ("ln_mass",),
        LATENT_SITES[data.model],
        config,
        halo_draws=max(data.halo_draws, 1),
        gibbs_site=gibbs_site,
    )
    extras = {"halo_ln_mass": out.halo["ln_mass"], "halo_mass_draw": out.halo_draw} if data.halo_draws > 0 else {}
    return Posterior(out.samples, out.stats, config._asdict(), extras=extras)


register(Engine("nuts", nuts_engine.NutsConfig, ("collapsed", "latent_mass", "full"), _run_nuts, "NUTS on any model"))
register(
    Engine(
        "nuts_gibbs",
        nuts_engine.NutsConfig,
        ("latent_mass",),
        lambda data, config: _run_nuts_latent(data, config, gibbs_site="ln_mass_u"),
        "NUTS on the hyperparameters within Metropolis-Hastings Gibbs over the masses",
    )
)

# ---------------------------------------------------------------- SVI


def _run_svi(data: FitData, config: svi_engine.SviConfig) -> Posterior:
    import xarray as xr

    out = svi_engine.run_svi(data.model_fn, data.model_args, config=config)
    stats = {"converged": np.full(np.shape(out.samples["alpha1"]), out.converged)}
    run_config = {**config._asdict(), "converged": out.converged, "final_loss": float(out.losses[-1])}
    loss = xr.DataTree(xr.Dataset({"loss": (("step",), out.losses)}))
    return Posterior(out.samples, stats, run_config, extras={"groups": {"svi_loss": loss}})


register(Engine("svi", svi_engine.SviConfig, ("collapsed",), _run_svi, "stochastic variational inference"))

# ---------------------------------------------------------------- the 2017 importance-sampling methods


class IsPriorConfig(NamedTuple):
    """``is_prior``: K hyperprior draws weighted by the 2017 IS log-likelihood (``is_samples``
    per halo, masses clipped into the table if ``is_clip``) or the exact one."""

    n_hyper: int = 10_000
    is_samples: int = 100
    is_clip: bool = True
    is_likelihood: str = "is"
    seed: int = 0
    progress: bool = True


class IsProposalConfig(NamedTuple):
    """``is_proposal``: K Laplace draws reweighted by the exact posterior and Pareto-smoothed."""

    n_hyper: int = 4000
    seed: int = 0
    progress: bool = True


class PmmhConfig(NamedTuple):
    """``pmmh``: pseudo-marginal Metropolis-Hastings on the IS estimate."""

    chains: int = nuts_engine.NutsConfig._field_defaults["chains"]
    warmup: int = nuts_engine.NutsConfig._field_defaults["warmup"]
    draws: int = nuts_engine.NutsConfig._field_defaults["draws"]
    is_samples: int = IsPriorConfig._field_defaults["is_samples"]
    is_clip: bool = IsPriorConfig._field_defaults["is_clip"]
    seed: int = 0
    progress: bool = True


NutsIsConfig = namedtuple(
    "NutsIsConfig",
    [*nuts_engine.NutsConfig._fields, "is_samples", "is_clip"],
    defaults=(
        *nuts_engine.NutsConfig._field_defaults.values(),
        IsPriorConfig._field_defaults["is_samples"],
        IsPriorConfig._field_defaults["is_clip"],
    ),
)
NutsIsConfig.__doc__ = (
    "``nuts_is``: NUTS on the IS estimate with fixed random numbers (the NUTS options and the IS ones)."
)


def _halos(data: FitData, method: str | None = None):
    """The single-halo estimators' per-halo tables. ``method``: the engine that will use the
    2017 importance-sampling likelihood, which knows no flux limit: refused for a
    flux-limited catalog rather than fitted as if it were complete."""
    from bigmali.likelihood.single_halo import halo_data

    selected = data.collapsed is not None and (data.collapsed.y_lim is not None or data.collapsed.count is not None)
    if method is not None and selected:
        raise ValueError(
            f"method {method!r}: the 2017 importance-sampling likelihood does not model a flux limit; fit a "
            "flux-limited catalog with nuts, svi, is_proposal or is_prior with is_likelihood='exact'"
        )

    return halo_data(data.catalog.z, data.catalog.lum_obs, data.prior, data.catalog.lum_obs_err)


def _weighted(out, config: dict) -> Posterior:
    stats = {
        "log_weight": out.log_weight,
        "log_weight_raw": out.log_weight_raw,
        "log_likelihood_estimate": out.log_likelihood,
    }
    return Posterior(out.samples, stats, config, log_weight=out.log_weight, extras={"weights": out.diagnostics})


def _run_is_prior(data: FitData, config: IsPriorConfig) -> Posterior:
    from bigmali.inference import importance

    out = importance.is_prior(
        _halos(data, "is_prior" if config.is_likelihood == "is" else None),
        data.collapsed,
        data.prior,
        data.quadrature,
        n_hyper=config.n_hyper,
        is_samples=config.is_samples,
        clip=config.is_clip,
        likelihood=config.is_likelihood,
        seed=config.seed,
        progress=config.progress,
        mesh=data.mesh,
    )
    return _weighted(out, config._asdict())


def _run_is_proposal(data: FitData, config: IsProposalConfig) -> Posterior:
    from bigmali.inference import importance

    out = importance.is_proposal(
        data.model_fn, data.model_args, n_hyper=config.n_hyper, seed=config.seed, progress=config.progress
    )
    return _weighted(out, {**config._asdict(), "proposal": "laplace", "likelihood": "exact"})


def _run_pmmh(data: FitData, config: PmmhConfig) -> Posterior:
    from bigmali.inference import pmmh
    from bigmali.inference.laplace import laplace

    halos = _halos(data, "pmmh")  # refused before any work if it cannot apply
    approx = laplace(data.model_fn, data.model_args)
    # The Laplace mode and covariance of the standardised sites, whose flat vector is in
    # NumPyro's sorted-name order, mapped to alpha1, alpha2, alpha4, S.
    order = [sorted(HYPER_SITES).index(site) for site in HYPER_SITES]
    sd = np.asarray(HYPERPRIOR_SD)
    start = np.asarray(HYPERPRIOR_MEAN) + sd * np.asarray(approx.mode)[order]
    cov = np.asarray(approx.cov)[np.ix_(order, order)] * np.outer(sd, sd)
    out = pmmh.run_pmmh(
        halos,
        data.prior,
        start,
        cov,
        chains=config.chains,
        warmup=config.warmup,
        draws=config.draws,
        is_samples=config.is_samples,
        clip=config.is_clip,
        seed=config.seed,
        progress=config.progress,
        mesh=data.mesh,
    )
    return Posterior(out.samples, out.stats, config._asdict())


def _run_nuts_is(data: FitData, config) -> Posterior:
    from bigmali.models import is_estimate

    nuts_config = nuts_engine.NutsConfig(*config[: len(nuts_engine.NutsConfig._fields)])
    model = bind(is_estimate.model, is_samples=config.is_samples, clip=config.is_clip, mesh=data.mesh)
    out = nuts_engine.run_nuts(
        model, (_halos(data, "nuts_is"), data.prior, is_estimate.fixed_key(config.seed)), config=nuts_config
    )
    return Posterior(out.samples, out.stats, _drawn(config, out))


register(
    Engine(
        "is_prior", IsPriorConfig, ("collapsed",), _run_is_prior, "2017: hyperprior draws weighted by the IS likelihood"
    )
)
register(
    Engine(
        "is_proposal",
        IsProposalConfig,
        ("collapsed",),
        _run_is_proposal,
        "Laplace draws reweighted by the exact posterior, PSIS",
    )
)
register(
    Engine("pmmh", PmmhConfig, ("collapsed",), _run_pmmh, "pseudo-marginal Metropolis-Hastings on the IS likelihood")
)
register(
    Engine("nuts_is", NutsIsConfig, ("collapsed",), _run_nuts_is, "NUTS on the IS likelihood, fixed random numbers")
)
