"""Simulation-based calibration (Talts et al. 2018; Sailynoja et al. 2022).

For dataset d: draw hyperparameters from the hyperprior, simulate a mock of ``n_halos``
halos from them, fit it, and record the rank of each true value among ``L`` thinned
posterior draws. If the model, the likelihood and the sampler are right, every rank is
uniform on {0, ..., L}; a biased likelihood, a wrong noise level or a sampler that
under- or over-disperses makes the ranks pile up at the ends or in the middle.

Results are appended to a JSON Lines file as each dataset finishes (a header line holds
the settings), so a run can be stopped and resumed; a resumed run draws exactly the
datasets a single uninterrupted run would have drawn.

The ranks are turned into PIT values ``(rank + u) / (L + 1)`` with ``u ~ U(0, 1)``, which
are exactly uniform under calibration; ArviZ tests them (``uniformity_test``, the
``pot_c`` test of Tesso & Vehtari) and draws their ECDF difference with simultaneous
bands (``plot_ecdf_pit``). A chi-square test of the rank histogram is reported beside it.

The collapsed model with NUTS reuses one compiled sampler for every dataset (all datasets
have the same number of halos); other models and methods go through :func:`bigmali.fit`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import arviz_stats  # noqa: F401  (registers the .azstats accessor)
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from bigmali import lightcone
from bigmali.files import atomic_write_text
from bigmali.inference.nuts import default_target_accept
from bigmali.mass_prior import MassPrior, load_mass_prior
from bigmali.relation import HYPER_NAMES, Hyper, sample_hyperprior

__all__ = ["SbcSettings", "SbcResult", "run_sbc", "read_sbc", "plot_sbc", "format_sbc"]

FORMAT = "bigmali-sbc-1"
REJECT_P = 0.01
CLEAR_CACHES_EVERY = 10
WARMUP = {"collapsed": 100, "latent": 300}
"""Default warmup per fit by kind of model. Collapsed NUTS starts at the Laplace fit with its
covariance as the mass matrix (as a fit to a target ESS does, ``nuts.TARGET_ESS_WARMUP``):
200 datasets of 10^4 halos with 100 + 400 draws took 236 s (1.10 s median) and no parameter
was rejected, against 348 s (1.70 s) with 300 + 400. The latent models keep 300."""


class SbcSettings(NamedTuple):
    """What an SBC file was made with; a resumed run must ask for the same."""

    n_halos: int
    model: str = "collapsed"
    method: str = "nuts"
    warmup: int = 100
    draws: int = 400
    thin: int = 4
    seed: int = 0
    prior: dict | None = None  # the prior options (load_mass_prior keywords); None: the default prior
    lum_obs_err: list | None = None  # [low, high]: per-halo errors drawn log-uniformly; None: sigma_obs
    flux_limit: str | None = None  # the FluxLimit's JSON (FluxLimit.to_meta); None: complete mocks

    @property
    def n_ranked(self) -> int:
        """Posterior draws each truth is ranked among."""
        return len(range(0, self.draws, self.thin))


class SbcResult(NamedTuple):
    """One row per finished dataset (in dataset order)."""

    settings: SbcSettings
    dataset: np.ndarray  # (K,)
    truths: np.ndarray  # (K, 4)
    ranks: np.ndarray  # (K, 4) in 0..L; NaN for weighted methods, which give a PIT directly
    pit: np.ndarray  # (K, 4) in (0, 1)
    divergences: np.ndarray  # (K,)
    seconds: np.ndarray  # (K,) per dataset: simulation and fit

    def uniformity(self) -> dict:
        """Per parameter: ArviZ's ``pot_c`` uniformity p-value of the PITs, the chi-square
        p-value of the rank histogram (20 bins, or fewer with few datasets), and whether
        either rejects at p < 0.01."""
        import xarray as xr

        out = {}
        n = self.pit.shape[0]
        n_bins = int(max(2, min(20, n // 5)))
        for i, name in enumerate(HYPER_NAMES):
            da = xr.DataArray(self.pit[:, i], dims=["sbc"])
            p_pot = float(da.azstats.uniformity_test(dim="sbc", method="pot_c")[0])
            counts = np.histogram(self.pit[:, i], bins=n_bins, range=(0.0, 1.0))[0]
            p_chi2 = float(stats.chisquare(counts).pvalue)
            out[name] = {"p_pot_c": p_pot, "p_chi2": p_chi2, "rejected": bool(min(p_pot, p_chi2) < REJECT_P)}
        return out

    def to_datatree(self):
        """The PITs as an ArviZ DataTree, group ``prior_sbc`` with dims (chain=1, draw=K)."""
        import xarray as xr

        data = {name: (("chain", "draw"), self.pit[None, :, i]) for i, name in enumerate(HYPER_NAMES)}
        return xr.DataTree.from_dict({"prior_sbc": xr.Dataset(data, coords={"draw": self.dataset})})


def _dataset_truth(seed: int, d: int) -> Hyper:
    return Hyper(*(float(v) for v in sample_hyperprior(jax.random.fold_in(jax.random.PRNGKey(seed), d))))


def _mock_seed(seed: int, d: int) -> int:
    return (seed * 1_000_003 + d) % (2**31 - 1)


def _fit_seed(key) -> int:
    return int(jax.random.randint(key, (), 0, 2**30))


def _collapsed_nuts_fitter(settings: SbcSettings, prior: MassPrior):
    """Collapsed NUTS through the NUTS engine, whose one compiled sampler serves every
    dataset (all have ``n_halos`` halos, and one prior, so one theta-free table)."""
    from bigmali.inference.nuts import NutsConfig, run_nuts
    from bigmali.likelihood import quadrature
    from bigmali.models import collapsed
    from bigmali.utils import bind

    model = bind(collapsed.model, config=quadrature.QuadratureConfig.for_prior(prior))
    limit = _flux_limit(settings)
    config = NutsConfig(
        chains=1,
        warmup=settings.warmup,
        draws=settings.draws,
        target_accept=default_target_accept("collapsed"),
        progress=False,
    )

    def fit(mock, key):
        z, lum = jnp.asarray(mock.z), jnp.asarray(mock.lum_obs)
        lum_lim = None if limit is None else np.exp(limit.ln_limit(mock))
        args = (z, lum, prior, collapsed.prepare_data(z, lum, prior, mock.lum_obs_err, lum_lim, limit))
        out = run_nuts(model, args, config._replace(seed=_fit_seed(key)))
        draws = np.stack([out.samples[name][0] for name in HYPER_NAMES], axis=1)
        return draws, None, int(out.stats["diverging"].sum())

    return fit


def _flux_limit(settings: SbcSettings):
    from bigmali.selection import META_KEY, FluxLimit

    return None if settings.flux_limit is None else FluxLimit.from_meta({META_KEY: settings.flux_limit})


def _mock(settings: SbcSettings, prior: MassPrior, truth: Hyper, d: int):
    """Dataset d's mock: ``n_halos`` halos, all of them detected if there is a flux limit
    (redshifts from the parent dN/dz, each halo from its truncated predictive; see
    :func:`bigmali.lightcone.simulate_detected`, the model the truncated likelihood describes)."""
    seed = _mock_seed(settings.seed, d)
    err = settings.lum_obs_err
    limit = _flux_limit(settings)
    if limit is None:
        return lightcone.simulate(prior, truth, n_halos=settings.n_halos, seed=seed, lum_obs_err=err)
    return lightcone.simulate_detected(
        prior, truth, n_halos=settings.n_halos, flux_limit=limit, seed=seed, lum_obs_err=err
    )


def _generic_fitter(settings: SbcSettings, prior: MassPrior):
    from bigmali.fit import fit as fit_catalog
    from bigmali.inference.engines import ENGINES

    wanted = {"chains": 1, "warmup": settings.warmup, "draws": settings.draws, "svi_draws": settings.draws}
    options = {name: value for name, value in wanted.items() if name in ENGINES[settings.method].config._fields}

    def fit(mock, key):
        seed = _fit_seed(key)
        run = fit_catalog(
            mock,
            settings.model,
            settings.method,
            prior,
            seed=seed,
            progress=False,
            mass_draws=0,
            log_likelihood=0,
            **options,
        )
        draws = np.stack([np.asarray(run["posterior"][name]).ravel() for name in HYPER_NAMES], axis=1)
        stats_ = run["sample_stats"]
        log_w = np.asarray(stats_["log_weight"]).ravel() if "log_weight" in stats_ else None
        div = int(np.asarray(stats_["diverging"]).sum()) if "diverging" in stats_ else 0
        return draws, log_w, div

    return fit


def _rank_row(draws: np.ndarray, log_w, truth: Hyper, settings: SbcSettings, rng) -> tuple[list, list]:
    truth = np.asarray(truth)
    u = rng.uniform(size=truth.size)
    if log_w is None:
        kept = draws[:: settings.thin]
        ranks = np.sum(kept < truth, axis=0)
        return ranks.tolist(), ((ranks + u) / (kept.shape[0] + 1)).tolist()
    w = np.exp(log_w - np.logaddexp.reduce(log_w))
    below = np.array([w[draws[:, i] < truth[i]].sum() for i in range(truth.size)])
    at = np.array([w[draws[:, i] == truth[i]].sum() for i in range(truth.size)])
    return [None] * truth.size, np.clip(below + u * at, 1e-12, 1 - 1e-12).tolist()


def _settings_dict(settings: SbcSettings) -> dict:
    return {k: v for k, v in settings._asdict().items()}


def _read_lines(path: Path) -> tuple[dict | None, list[dict]]:
    text = path.read_text()
    if not text.strip():
        return None, []
    lines = text.splitlines()
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise ValueError(f"SBC file {str(path)!r}, line 1: not a bigmali SBC header") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"SBC file {str(path)!r}, line 1: format {header.get('format')!r}, expected {FORMAT!r}")
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) and not text.endswith("\n"):
                break  # a line cut short by an interruption: that dataset is redone
            raise ValueError(f"SBC file {str(path)!r}, line {i}: not valid JSON") from None
    return header, rows


def read_sbc(path) -> SbcResult:
    """An SBC file's finished datasets."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"SBC file {str(path)!r} does not exist")
    header, rows = _read_lines(path)
    if header is None:
        raise ValueError(f"SBC file {str(path)!r} is empty")
    settings = SbcSettings(**header["settings"])
    rows = sorted({r["dataset"]: r for r in rows}.values(), key=lambda r: r["dataset"])

    def table(key, names=HYPER_NAMES):
        return np.array(
            [[np.nan if r[key][n] is None else r[key][n] for n in names] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(names))

    return SbcResult(
        settings,
        np.array([r["dataset"] for r in rows], dtype=np.int64),
        table("truth"),
        table("rank"),
        table("pit"),
        np.array([r["divergences"] for r in rows], dtype=np.int64),
        np.array([r["seconds"] for r in rows], dtype=np.float64),
    )


def run_sbc(
    out,
    n_datasets: int,
    n_halos: int,
    *,
    model: str = "collapsed",
    method: str = "nuts",
    warmup: int | None = None,
    draws: int = 400,
    thin: int = 4,
    seed: int = 0,
    prior_options: dict | None = None,
    prior: MassPrior | None = None,
    progress: bool = True,
    lum_obs_err: tuple[float, float] | None = None,
    flux_limit=None,
) -> SbcResult:
    """Run (or resume) SBC into the JSON Lines file ``out`` until it holds ``n_datasets`` datasets.

    Args:
        out: the results file; created if absent, resumed if it holds the same settings.
        n_datasets, n_halos: K mocks of N halos each (hyperparameters from the hyperprior).
        model, method: as for :func:`bigmali.fit` (one chain of ``warmup`` + ``draws``;
            ``warmup`` None: :data:`WARMUP` for the model).
        thin: each truth is ranked among every ``thin``-th draw, so that the ranked draws
            are nearly independent (collapsed NUTS has ESS close to the number of draws).
        seed: dataset d uses hyperparameters, mock and sampler keys derived from (seed, d).
        prior_options: keywords of :func:`~bigmali.mass_prior.load_mass_prior` (recorded);
            ``prior`` instead passes a prior object (not recorded: resume with the same one).
        lum_obs_err: ``(low, high)``: every mock gives each halo its own measurement error,
            log-uniform in that range (:func:`bigmali.simulate`), and every fit uses them.
        flux_limit: a :class:`bigmali.selection.FluxLimit` (constant or table): every mock
            holds ``n_halos`` detected halos and every fit models the limit (the truncated
            likelihood). Mocks are conditional on their redshifts: see :func:`_mock`.
    """
    if n_datasets < 1 or n_halos < 1:
        raise ValueError(f"n_datasets = {n_datasets}, n_halos = {n_halos}: both must be at least 1")
    if not 1 <= thin <= draws:
        raise ValueError(f"thin = {thin}: must lie between 1 and draws = {draws}")
    if warmup is None:
        warmup = WARMUP["collapsed" if model == "collapsed" else "latent"]
    err_range = None if lum_obs_err is None else [float(v) for v in lum_obs_err]
    limit_json = None if flux_limit is None else flux_limit.to_meta()
    settings = SbcSettings(n_halos, model, method, warmup, draws, thin, seed, prior_options, err_range, limit_json)
    path = Path(out)
    header, rows = _read_lines(path) if path.exists() else (None, [])
    if header is not None:
        recorded = header["settings"]
        wanted = json.loads(json.dumps(_settings_dict(settings)))
        differ = [k for k in wanted if recorded.get(k) != wanted[k]]
        if differ:
            k = differ[0]
            raise ValueError(
                f"SBC file {str(path)!r} was made with {k} = {recorded.get(k)!r}, not {wanted[k]!r}: "
                "use another --out file or the same settings"
            )
        if not path.read_text().endswith("\n"):  # drop a line cut short by an interruption
            text = path.read_text()
            atomic_write_text(path, text[: text.rfind("\n") + 1])
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": FORMAT, "settings": _settings_dict(settings)}) + "\n")
    done = {r["dataset"] for r in rows}
    todo = [d for d in range(n_datasets) if d not in done]
    if todo:
        if prior is None:
            prior = load_mass_prior(**(prior_options or {}))
        compiled_once = (model, method) == ("collapsed", "nuts")
        fitter = (_collapsed_nuts_fitter if compiled_once else _generic_fitter)(settings, prior)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_datasets, initial=n_datasets - len(todo), desc="SBC datasets", unit="dataset")
        with path.open("a") as handle:
            for d in todo:
                start = time.perf_counter()
                truth = _dataset_truth(seed, d)
                mock = _mock(settings, prior, truth, d)
                fit_draws, log_w, div = fitter(mock, jax.random.fold_in(jax.random.PRNGKey(seed + 1), d))
                ranks, pit = _rank_row(fit_draws, log_w, truth, settings, np.random.default_rng([seed, d]))
                row = {
                    "dataset": d,
                    "truth": dict(zip(HYPER_NAMES, map(float, truth))),
                    "rank": dict(zip(HYPER_NAMES, ranks)),
                    "pit": dict(zip(HYPER_NAMES, pit)),
                    "divergences": div,
                    "seconds": time.perf_counter() - start,
                }
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                if bar is not None:
                    bar.update(1)
                if not compiled_once and (d + 1) % CLEAR_CACHES_EVERY == 0:
                    # Other methods compile afresh on every fit (fresh closures), and JAX
                    # keeps every executable: without this, ~75 fits of 10^4 halos exhausted
                    # LLVM's memory ("Cannot allocate memory").
                    jax.clear_caches()
        if bar is not None:
            bar.close()
    result = read_sbc(path)
    keep = result.dataset < n_datasets
    return result._replace(**{f: getattr(result, f)[keep] for f in SbcResult._fields if f != "settings"})


def format_sbc(result: SbcResult) -> str:
    """A readable table of the uniformity tests."""
    s = result.settings
    k = result.dataset.size
    lines = [
        f"SBC: {k} datasets of {s.n_halos} halos, {s.model}/{s.method}, {s.warmup}+{s.draws} draws, "
        f"ranks among {s.n_ranked}; {result.seconds.sum():.0f} s in all ({np.median(result.seconds):.1f} s median), "
        f"{int(result.divergences.sum())} divergences",
        f"{'param':<8}{'p (pot_c)':>11}{'p (chi2)':>10}  verdict (reject at p < {REJECT_P})",
    ]
    for name, u in result.uniformity().items():
        lines.append(
            f"{name:<8}{u['p_pot_c']:>11.4f}{u['p_chi2']:>10.4f}  {'REJECTED' if u['rejected'] else 'uniform'}"
        )
    return "\n".join(lines)


def plot_sbc(result: SbcResult, path, band_prob: float = 0.99) -> Path:
    """ECDF-difference plots of the PITs, one panel per parameter.

    ArviZ's ``plot_ecdf_pit`` draws each ECDF minus the uniform CDF with its ``pot_c``
    p-value and the points that contribute most to it; the grey band is ArviZ's simulated
    simultaneous ``band_prob`` band for that many independent PITs (``ecdf_pit``): under
    calibration the whole curve stays inside it with probability ``band_prob``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots as azp
    from arviz_stats.ecdf_utils import ecdf_pit

    from bigmali.plotting import figure_of, save_figure

    n = result.dataset.size
    pc = azp.plot_ecdf_pit(
        result.to_datatree(), group="prior_sbc", backend="matplotlib", col_wrap=4, figure_kwargs={"figsize": (15, 3.6)}
    )
    fig = figure_of(pc)
    x, _, lower, upper = ecdf_pit(np.linspace(0.0, 1.0, n), band_prob, 1000, rng=np.random.default_rng(0))
    for ax in fig.axes:
        ax.fill_between(
            x, lower - x, upper - x, color="0.85", zorder=0, step="post", label=f"{band_prob:.0%} simultaneous band"
        )
    fig.axes[0].legend(loc="lower left", fontsize=8)
    s = result.settings
    fig.suptitle(
        f"SBC: {n} datasets of {s.n_halos} halos ({s.model}/{s.method}); ECDF of the PIT minus uniform", y=1.04
    )
    return save_figure(fig, path, dpi=110, bbox_inches="tight")
