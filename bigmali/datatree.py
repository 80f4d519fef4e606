"""Every method's result as one ArviZ DataTree, saved to and loaded from netCDF.

Groups: ``posterior`` (alpha1, alpha2, alpha4, S), ``sample_stats``, ``observed_data``
(lum_obs per halo), ``constant_data`` (z, and ra, dec, true mass and luminosity when the
catalog has them), ``prior`` (hyperprior draws), ``halo_mass`` (ln M per halo for a
thinned set of posterior draws), ``log_likelihood`` (each halo's collapsed log-likelihood, for
LOO; evenly thinned draws on large catalogs), and for NUTS ``sampler_state`` (what extending a run
needs). The root's attrs hold the model, the method, the number of halos, the wall time,
the run's configuration and the mass-prior options, as JSON where they are structured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from bigmali.relation import HYPER_NAMES
from bigmali.weights import normalised_weights

__all__ = [
    "build_datatree",
    "save_run",
    "load_run",
    "attr_json",
    "draws_and_weights",
    "select_hypers",
    "run_catalog",
    "run_prior",
    "check_run_data",
]


def build_datatree(
    *,
    posterior: dict,
    sample_stats: dict,
    catalog,
    prior_draws: dict | None,
    attrs: dict,
    halo_ln_mass: np.ndarray | None = None,
    halo_mass_draw: np.ndarray | None = None,
    sampler_state: dict | None = None,
    log_likelihood: tuple | None = None,
) -> xr.DataTree:
    import arviz_base as az

    groups = {"posterior": {k: posterior[k] for k in HYPER_NAMES}, "sample_stats": sample_stats}
    constant = {}
    if catalog is not None:  # None: a run read back without its catalog (bigmali.read_2017_run)
        constant["z"] = catalog.z
        columns = (
            ("ra", "ra"),
            ("dec", "dec"),
            ("mass_true", "mass"),
            ("lum_true", "lum"),
            ("lum_obs_err",) * 2,
            ("lum_lim",) * 2,
        )
        for name, column in columns:
            values = getattr(catalog, column)
            if values is not None:
                constant[name] = values
        groups.update(observed_data={"lum_obs": catalog.lum_obs}, constant_data=constant)
    if prior_draws is not None:
        groups["prior"] = prior_draws
    dims = {"lum_obs": ["halo"], **{k: ["halo"] for k in constant}}
    tree = az.from_dict(groups, dims=dims)
    if halo_ln_mass is not None:
        tree["halo_mass"] = xr.DataTree(
            xr.Dataset(
                {"ln_mass": (("chain", "draw", "halo"), halo_ln_mass.astype(np.float32))},
                coords={"draw": halo_mass_draw},
                attrs={"doc": "ln M (Msun) per halo for thinned posterior draws; `draw` indexes the posterior's draws"},
            )
        )
    if log_likelihood is not None:
        values, draw = log_likelihood
        tree["log_likelihood"] = xr.DataTree(
            xr.Dataset(
                {"lum_obs": (("chain", "draw", "halo"), values)},
                coords={"chain": tree["posterior"]["chain"].values, "draw": draw},
                attrs={
                    "doc": "ln P(L_obs | alpha) per halo, its mass integrated out; `draw` indexes the posterior's draws"
                },
            )
        )
    if sampler_state is not None:
        tree["sampler_state"] = xr.DataTree(
            xr.Dataset(
                {
                    "position": (("chain", "latent"), sampler_state["position"]),
                    "step_size": (("chain",), sampler_state["step_size"]),
                    "inverse_mass_matrix": (
                        ("chain",)
                        + (("latent", "latent2") if sampler_state["inverse_mass_matrix"].ndim == 3 else ("latent",)),
                        sampler_state["inverse_mass_matrix"],
                    ),
                }
            )
        )
    tree.attrs.update(
        {k: (json.dumps(v) if v is None or isinstance(v, (dict, list, tuple)) else v) for k, v in attrs.items()}
    )
    return tree


def save_run(tree: xr.DataTree, path) -> Path:
    """Write a run to netCDF (one file, every group), atomically: an existing file at ``path``
    is replaced only once the new one is complete (see :mod:`bigmali.files`)."""
    from bigmali.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tree.to_netcdf(tmp, engine="h5netcdf")
    return path


_NETCDF_MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02", b"CDF\x05")


def load_run(path) -> xr.DataTree:
    """Read a run written by :func:`save_run`, fully into memory."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot read run {str(path)!r}: it is a directory, not a run file")
    if not path.is_file():
        raise ValueError(f"cannot read run {str(path)!r}: no such file")
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head.startswith(_NETCDF_MAGIC):
        raise ValueError(
            f"cannot read run {str(path)!r}: it is not a netCDF file (a run is what "
            "`bigmali fit --out run.nc` or bigmali.save_run writes)"
        )
    try:
        with xr.open_datatree(path) as tree:
            return tree.load()
    except Exception as exc:  # netCDF libraries raise many kinds
        raise ValueError(f"cannot read run {str(path)!r}: {exc}") from None


def attr_json(tree: xr.DataTree, name: str, default=None):
    """A structured attribute of the run (stored as JSON)."""
    value = tree.attrs.get(name)
    return default if value is None else json.loads(value)


def draws_and_weights(run):
    """A run's hyperparameter draws, flattened, and their normalised weights (equal if unweighted)."""
    post = run["posterior"]
    draws = {name: np.asarray(post[name], dtype=np.float64).ravel() for name in HYPER_NAMES}
    stats = run["sample_stats"] if "sample_stats" in run.children else None
    if stats is not None and "log_weight" in stats:
        log_w = np.asarray(stats["log_weight"], dtype=np.float64).ravel()
        w = normalised_weights(log_w)
    else:
        w = np.full(draws["alpha1"].size, 1.0 / draws["alpha1"].size)
    return draws, w


def is_weighted(run) -> bool:
    """Whether the run's draws carry importance weights (the importance-sampling methods)."""
    return "sample_stats" in run.children and "log_weight" in run["sample_stats"]


def select_hypers(run, n_draws: int, seed: int = 0):
    """``n_draws`` hyperparameter draws standing for the posterior, as a list of ``Hyper``:
    evenly spaced draws (cycled if more are asked for than the run has), or for weighted
    runs draws resampled in proportion to their weights."""
    from bigmali.relation import Hyper

    values, w = draws_and_weights(run)
    total = w.size
    if is_weighted(run):
        picks = np.random.default_rng(seed).choice(total, size=n_draws, p=w)
    else:
        picks = np.resize(np.linspace(0, total - 1, min(n_draws, total)).round().astype(int), n_draws)
    return [Hyper(*(float(values[name][i]) for name in HYPER_NAMES)) for i in picks]


def run_catalog(run):
    """The catalog a run was fitted to, rebuilt from its ``observed_data`` and ``constant_data``."""
    from bigmali.catalog import Catalog

    const = run["constant_data"]

    def column(name):
        return np.asarray(const[name]) if name in const else None

    return Catalog.from_arrays(
        z=np.asarray(const["z"]),
        lum_obs=np.asarray(run["observed_data"]["lum_obs"]),
        ra=column("ra"),
        dec=column("dec"),
        mass=column("mass_true"),
        lum=column("lum_true"),
        lum_obs_err=column("lum_obs_err"),
        lum_lim=column("lum_lim"),
        z_max=None,
    )


def run_flux_limit(run):
    """The flux limit a run was fitted with (its ``selection`` attribute), or None."""
    from bigmali.selection import META_KEY, FluxLimit

    recorded = run.attrs.get("selection", "none")
    return None if recorded == "none" else FluxLimit.from_meta({META_KEY: recorded})


def run_survey(run):
    """The survey window of a run fitted with the extended likelihood, or None."""
    from bigmali.selection import Survey

    recorded = run.attrs.get("survey", "none")
    return None if recorded == "none" else Survey.from_json(recorded)


def run_prior(run, prior=None):
    """The run's mass prior: ``prior`` if given, else rebuilt from the options the run recorded."""
    if prior is not None:
        return prior
    options = attr_json(run, "prior_options")
    if options is None:
        raise ValueError("this run was fitted with a caller's own mass prior: pass that prior")
    from bigmali.mass_prior import load_mass_prior

    return load_mass_prior(**options)


def _first_difference(name: str, run_values: np.ndarray, values: np.ndarray) -> str | None:
    differ = np.flatnonzero(run_values != values)
    if not differ.size:
        return None
    row = int(differ[0])
    return (
        f"column {name!r} differs in {differ.size} of {values.size} rows, first at row {row} "
        f"(run {run_values[row]!r}, catalog {values[row]!r})"
    )


def check_run_data(run, catalog, prior=None, *, force: bool = False) -> list[str]:
    """Check that ``catalog`` (and ``prior``, if given) are the ones ``run`` was fitted to.

    The run's recorded fingerprint (SHA-256 of the catalog's ``z`` and ``lum_obs`` and of the
    prior's tables, see :func:`bigmali.fit.fingerprint`) is compared with theirs; where they
    differ, the run's own copy of the data says which column and row. Runs saved before
    fingerprints existed are checked against that copy alone. Raises ``ValueError`` saying
    what differs, or with ``force=True`` warns and returns the differences.
    """
    import warnings

    from bigmali.mass_prior import prior_fingerprint

    recorded = attr_json(run, "fingerprint") or {}
    problems = []
    n_run = int(run.attrs.get("n_halos", run["observed_data"]["lum_obs"].size))
    if len(catalog) != n_run:
        problems.append(f"the run was fitted to {n_run} halos, the catalog has {len(catalog)}")
    elif recorded.get("catalog_sha256") != catalog.fingerprint():
        pairs = [
            ("z", run["constant_data"]["z"], catalog.z),
            ("lum_obs", run["observed_data"]["lum_obs"], catalog.lum_obs),
        ]
        if "lum_obs_err" in run["constant_data"] and catalog.lum_obs_err is not None:
            pairs.append(("lum_obs_err", run["constant_data"]["lum_obs_err"], catalog.lum_obs_err))
        elif ("lum_obs_err" in run["constant_data"]) != (catalog.lum_obs_err is not None):
            with_it = "the run" if "lum_obs_err" in run["constant_data"] else "the catalog"
            problems.append(f"column 'lum_obs_err': only {with_it} has per-halo measurement errors")
        for name, run_values, values in pairs:
            difference = _first_difference(name, np.asarray(run_values, dtype=np.float64), values)
            if difference:
                problems.append(difference)
        if not problems and recorded.get("catalog_sha256"):
            problems.append("the catalog's z and lum_obs do not match the fingerprint the run recorded")
    if prior is not None and recorded.get("prior_sha256") and recorded["prior_sha256"] != prior_fingerprint(prior):
        problems.append(
            f"the mass prior differs from the run's (run: {run.attrs.get('prior_description', 'unknown')}; "
            f"given: {prior.description})"
        )
    if problems:
        message = "the catalog and prior are not those the run was fitted to: " + "; ".join(problems)
        if not force:
            raise ValueError(message + " (--force / force=True goes on anyway)")
        warnings.warn(message + "; going on because of force", stacklevel=2)
    return problems
