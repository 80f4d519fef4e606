"""Reports: one self-contained HTML page per run (or per comparison), images embedded.

``write_report(run, out_dir, truth=...)`` writes ``report.html`` and every figure as a PNG:

- the recovery table (mean, sd, R-hat, ESS, and given a truth its quantile, z-score and
  68%/95% HDI inclusion) and the convergence checks with their thresholds;
- trace and rank plots (ArviZ) for MCMC runs;
- a pair plot (ArviZ) with the truth drawn as lines;
- the posterior predictive check of ln L_obs per redshift bin, with p-values;
- PSIS-LOO over halos (k-hat plot and the most surprising halos) when the run has a
  ``log_likelihood`` group;
- for weighted runs (the importance-sampling methods) the weight diagnostics and the
  sorted weights; their pair plot shows draws resampled by weight.

``write_comparison(runs, out_dir)`` overlays several runs: a table of shifts in the first
run's sd, overlaid (weighted) marginals with the truth, and each run's checks.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import numpy as np

from bigmali.files import atomic_write_text
from bigmali.relation import HYPER_NAMES
from bigmali.weights import K_HAT_THRESHOLD

__all__ = ["write_report", "write_comparison"]

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #1b1b1b; background: #fff; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2a6f97; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2a6f97; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: right; }
th { background: #eef3f7; } td.l, th.l { text-align: left; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #c62828; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { font-size: .88em; color: #555; }
.meta { color: #555; font-size: .92em; } .note { background: #fff8e1; padding: .5em .8em; border-left: 4px solid #f0b400; }
"""


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return "&ndash;" if np.isnan(value) else ("&infin;" if value > 0 else "&minus;&infin;")
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(passed: bool) -> str:
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


class _Page:
    """Sections of HTML and the PNGs they embed."""

    def __init__(self, out_dir: Path, title: str):
        self.out_dir, self.title = out_dir, title
        self.parts: list[str] = []
        self.images: list[Path] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig, name: str, caption: str, dpi: int = 90) -> None:

        from bigmali.plotting import save_figure

        path = save_figure(fig, self.out_dir / f"{name}.png", dpi=dpi, bbox_inches="tight", facecolor="white")
        self.images.append(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.add(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def write(self, name: str = "report.html") -> Path:
        path = self.out_dir / name
        atomic_write_text(
            path,
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n",
        )
        return path


def _posterior_tree(run, n_draws: int = 4000, seed: int = 0):
    """The run's posterior as ArviZ plots should see it: itself, or for weighted runs
    ``n_draws`` draws in one chain, resampled by weight."""
    import xarray as xr

    from bigmali.datatree import is_weighted, select_hypers

    if not is_weighted(run):
        return run
    hypers = select_hypers(run, n_draws, seed)
    data = {name: (("chain", "draw"), np.array([[getattr(h, name) for h in hypers]])) for name in HYPER_NAMES}
    return xr.DataTree.from_dict({"posterior": xr.Dataset(data)})


def _pair_figure(tree, truth: dict | None):
    import arviz_plots as azp

    from bigmali.plotting import figure_of

    pc = azp.plot_pair(
        tree, var_names=list(HYPER_NAMES), backend="matplotlib", marginal=True, figure_kwargs={"figsize": (10, 10)}
    )
    if truth is not None:
        grid = pc.viz["plot"]
        for i, y_name in enumerate(grid["var_name_y"].values):
            for j, x_name in enumerate(grid["var_name_x"].values):
                ax = grid.values[i, j]
                if ax is None or not ax.get_visible() or j > i:
                    continue
                ax.axvline(truth[str(x_name)], color="crimson", lw=1.2)
                if j < i:
                    ax.axhline(truth[str(y_name)], color="crimson", lw=1.2)
    return figure_of(pc)


def _recovery_section(page: _Page, result: dict) -> None:
    has_truth = any(p["truth"] is not None for p in result["parameters"].values())
    header = ["parameter", "mean", "sd", "R-hat", "bulk ESS", "tail ESS"]
    if has_truth:
        header += ["truth", "quantile", "z-score", "in 68% HDI", "in 95% HDI"]
    rows = []
    for name, p in result["parameters"].items():
        row = [
            name,
            _fmt(p["mean"], 6),
            _fmt(p["sd"], 4),
            _fmt(p["r_hat"], 4),
            _fmt(p["ess_bulk"], 5),
            _fmt(p["ess_tail"], 5),
        ]
        if has_truth:
            row += [
                _fmt(p["truth"], 6),
                _fmt(p["quantile"], 3),
                _fmt(p["z_score"], 3),
                _fmt(p["in_hdi_68"]),
                _fmt(p["in_hdi_95"]),
            ]
        rows.append(row)
    page.add("<h2>Posterior and recovery of the truth</h2>" + _table(header, rows))


def _influence_section(page: _Page, influence: dict) -> None:
    from bigmali.diagnostics.influence import CANDIDATES

    if influence["warning"]:
        verdict = f'<p class="note"><span class="fail">WARNING</span> {html.escape(influence["warning"])}</p>'
    else:
        verdict = '<p><span class="pass">No halo dominates the fit.</span></p>'
    rows = [
        [str(e["halo"]), _fmt(e["z"], 4), _fmt(e["lum_obs"], 5)]
        + [_fmt(e["shift_sd"][name], 3) for name in HYPER_NAMES]
        + [_fmt(e["max_shift_sd"], 3), _fmt(e["pareto_k"], 3)]
        for e in influence["largest"]
    ]
    page.add(
        "<h2>Halos that dominate the fit</h2>"
        + verdict
        + f"<p>The change in each hyperparameter's posterior mean, in posterior sds, when one halo is left out "
        f"(ArviZ <code>loo_influence</code>, PSIS), for the {influence['evaluated']} of {influence['n_halos']} halos "
        f"with the largest first-order shift (at most {CANDIDATES}). A halo is flagged at &ge; "
        f"{influence['threshold_sd']:g} sd, or &ge; {influence['threshold_sd_high_k']:g} sd where k&#770; &gt; 0.7 "
        "(its shift is then a lower bound). The halos that move the posterior most:</p>"
        + _table(["halo", "z", "L_obs"] + [f"shift of {name}" for name in HYPER_NAMES] + ["largest", "k-hat"], rows)
    )


def _convergence_section(page: _Page, conv: dict) -> None:
    rows = [
        [c["name"], _verdict(c["passed"]), _fmt(c["value"]), _fmt(c["threshold"]), html.escape(c["detail"])]
        for c in conv["checks"]
    ]
    page.add(
        f"<h2>Convergence: {_verdict(conv['passed'])}</h2>"
        + _table(["check", "verdict", "value", "threshold", "detail"], rows)
    )


def _selection_section(page: _Page, run) -> None:
    """The run's flux limit (if any) over its catalog in the (z, L_obs) plane."""
    import matplotlib.pyplot as plt

    from bigmali.datatree import run_catalog, run_flux_limit

    limit = run_flux_limit(run)
    source = run.attrs.get("selection_source", "none recorded")
    if limit is None:
        page.add(f"<h2>Selection</h2><p>No flux limit: the catalog was taken as complete ({html.escape(source)}).</p>")
        return
    catalog = run_catalog(run)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(catalog.z, catalog.lum_obs, s=2, alpha=0.3, color="tab:blue", label="detected halos", rasterized=True)
    if limit.kind == "column":
        ax.scatter(catalog.z, catalog.lum_lim, s=2, alpha=0.3, color="tab:red", label="each halo's limit")
    else:
        z = np.linspace(catalog.z.min(), catalog.z.max(), 200)
        ax.plot(z, np.exp(limit.ln_limit_at(z)), color="tab:red", lw=2, label="flux limit")
    ax.set(xlabel="z", ylabel="L_obs", yscale="log")
    ax.legend(loc="lower right")
    if run.attrs.get("selection_likelihood") == "extended":
        how = (
            "Extended likelihood: the halos and their number, Poisson in the survey's window "
            f"({html.escape(run.attrs.get('survey_source', ''))})"
        )
    else:
        how = "Each halo was conditioned on its detection"
    page.add(
        f"<h2>Selection</h2><p>{how}; the limit: {html.escape(source)}. The posterior predictive check "
        "replicates each halo with the same limit.</p>"
    )
    page.figure(fig, "selection", "The catalog in the (z, L_obs) plane and the flux limit it was fitted with.")
    plt.close(fig)


def _ppc_section(page: _Page, ppc) -> None:
    from bigmali.diagnostics.ppc import plot_ppc

    path = page.out_dir / "ppc.png"
    plot_ppc(ppc, path)
    page.images.append(path)
    rows = [
        [
            f"{ppc.z_bins[b, 0]:.3f} &ndash; {ppc.z_bins[b, 1]:.3f}",
            str(ppc.n_halos_by_bin[b]),
            _fmt(ppc.t_obs[b], 4),
            _fmt(float(np.median(ppc.t_rep[:, b])), 4),
            _fmt(ppc.p_value_by_bin[b], 3),
        ]
        for b in range(len(ppc.n_halos_by_bin))
    ]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    verdict = (
        "no evidence against the model"
        if ppc.p_value >= 0.05
        else ("the model does not reproduce the luminosity distribution" if ppc.p_value < 0.01 else "marginal")
    )
    page.add(
        f"<h2>Posterior predictive check of L<sub>obs</sub></h2><p>Chi-square distance of each redshift bin's "
        f"ln L<sub>obs</sub> histogram from the posterior predictive one, {ppc.replicates.shape[0]} replicated catalogs. "
        f"Catalog-wide p = <b>{ppc.p_value:.3f}</b> ({verdict}).</p>"
        f'<figure><img alt="posterior predictive check" src="data:image/png;base64,{data}"><figcaption>ArviZ PPC: '
        "catalog (dark) and replicated ln L_obs in redshift bins, with each bin's p-value.</figcaption></figure>"
        + _table(["redshift bin", "halos", "T(catalog)", "median T(replicate)", "p-value"], rows)
    )
    from bigmali.diagnostics.ppc import plot_by_luminosity

    path = plot_by_luminosity(ppc, page.out_dir / "ppc_luminosity.png")
    page.images.append(path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    page.add(
        f'<figure><img alt="PPC by luminosity" src="data:image/png;base64,{data}"><figcaption>Where in '
        "L<sub>obs</sub> the replicated catalogs depart from the data: per bin of ln L<sub>obs</sub> (the catalog's "
        "quantiles), the quantile residual of the observed count among the replicated counts (top) and the "
        "standardised residual (bottom). A model that describes the catalog stays within about &plusmn;2; a run of "
        "one sign at the faint or bright end marks a wrong mass function.</figcaption></figure>"
    )


def _conflict_section(page: _Page, conflict: dict) -> None:
    psense = conflict["psense"]
    rows = []
    for name, d in conflict["distance"].items():
        row = [name, _fmt(d, 3)]
        if psense:
            e = psense[name]
            row += [_fmt(e["prior"], 3), _fmt(e["likelihood"], 3), html.escape(e["diagnosis"] or "-")]
        rows.append(row)
    header = ["parameter", "posterior mean - hyperprior mean (hyperprior sds)"]
    if psense:
        header += ["prior sensitivity", "likelihood sensitivity", "ArviZ diagnosis"]
    verdict = (
        f'<p class="fail">{html.escape(conflict["warning"])}.</p>'
        if conflict["warning"]
        else "<p>No prior-data conflict.</p>"
    )
    page.add(
        "<h2>Prior-data conflict</h2><p>Distance of the posterior mean from the hyperprior mean, and ArviZ's "
        f"power-scaling sensitivity (psense; {conflict['psense_draws']} draws) to the hyperprior and to the "
        "likelihood: both &ge; 0.05 is a prior-data conflict.</p>" + verdict + _table(header, rows)
    )


def _loo_section(page: _Page, run) -> None:
    import arviz_plots as azp

    from bigmali.diagnostics.loo import CANDIDATES, SUBSAMPLE, halo_loo, loo_elpd
    from bigmali.plotting import figure_of

    elpd = loo_elpd(run)
    result = halo_loo(run, elpd=elpd)
    pc = azp.plot_khat(elpd, backend="matplotlib", figure_kwargs={"figsize": (10, 3.2)})
    how = (
        ""
        if result["method"] == "exact"
        else f" (ArviZ's subsampling estimate from {SUBSAMPLE} random halos; the worst halos below come "
        f"from exact PSIS on the {CANDIDATES} halos of lowest lpd)"
    )
    page.add(
        f"<h2>Leave-one-halo-out (PSIS-LOO)</h2><p>elpd<sub>loo</sub> = {result['elpd_loo']:.1f} &plusmn; "
        f"{result['se']:.1f}, p<sub>loo</sub> = {result['p_loo']:.2f} over {result['n_halos']} halos and "
        f"{result['n_draws']} draws{how}; {result['n_pareto_k_above_0.7']} of the {result['exact_halos']} halos with "
        f"exact PSIS have k&#770; &gt; 0.7 (largest {result['max_pareto_k']:.2f}). The halos the model finds most "
        "surprising:</p>"
        + (
            '<p class="note">Pareto k-hat from fewer than 1,000 draws is noisy (its tail fit uses a few dozen '
            "weights): refit with a larger <code>log_likelihood</code> budget before acting on high k-hat.</p>"
            if result["n_draws"] < 1000
            else ""
        )
        + _table(
            ["halo", "z", "L_obs", "elpd_i", "k-hat"],
            [
                [str(w["halo"]), _fmt(w["z"], 4), _fmt(w["lum_obs"], 5), _fmt(w["elpd_i"], 4), _fmt(w["pareto_k"], 3)]
                for w in result["worst"]
            ],
        )
    )
    page.figure(figure_of(pc), "loo_khat", "Pareto k-hat of each halo's leave-one-out importance weights.")


def _weights_section(page: _Page, run, result: dict) -> None:
    import matplotlib.pyplot as plt

    w = result["weights"]
    log_w = np.sort(np.asarray(run["sample_stats"]["log_weight_raw"], dtype=np.float64).ravel())[::-1]
    norm = np.exp(log_w - np.logaddexp.reduce(log_w))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.semilogy(np.arange(1, norm.size + 1), np.maximum(norm, 1e-300), drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("draw, by decreasing weight")
    ax.set_ylabel("normalised raw weight")
    ax.set_ylim(max(norm.min(), 1e-30), 1.5)
    verdict = "reliable" if w["pareto_k"] <= K_HAT_THRESHOLD else "unreliable: the estimates rest on a few draws"
    page.add(
        f"<h2>Importance weights</h2><p>Weight ESS {w['ess']:.1f} of {norm.size} draws, largest share "
        f"{w['max_share']:.3g}, PSIS k&#770; = {_fmt(w['pareto_k'], 3)} ({verdict}).</p>"
    )
    page.figure(fig, "weights", "Raw importance weights sorted from the largest (log-log).")


def write_report(run, out_dir, *, truth=None, prior=None, ppc_draws: int = 200, source: str | None = None) -> dict:
    """Write ``report.html`` and its PNGs for one run into ``out_dir``.

    ``run`` is a DataTree or the path of a saved run; ``truth`` is ``"hyperseed"``, a dict,
    a JSON file or a mock catalog (default: the generating hyperparameters the run's
    catalog recorded, if any). The mass prior for the PPC is rebuilt from the run's options
    unless ``prior`` is given. Returns ``{"html": path, "images": [paths], "seconds": s}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots as azp

    from bigmali.datatree import attr_json, is_weighted, load_run
    from bigmali.diagnostics.convergence import convergence
    from bigmali.diagnostics.ppc import posterior_predictive_check
    from bigmali.diagnostics.recovery import resolve_truth, summary
    from bigmali.plotting import figure_of

    start = time.perf_counter()
    if not hasattr(run, "children"):
        source = str(run)
        run = load_run(run)
    if truth is None and "catalog_hyper" in run.attrs:
        truth = attr_json(run, "catalog_hyper")
    truth = resolve_truth(truth)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weighted = is_weighted(run)
    result = summary(run, truth=truth)
    try:
        from bigmali.diagnostics.conflict import prior_data_conflict

        result["prior_conflict"] = prior_data_conflict(run, prior=prior)
    except ValueError as exc:  # a run fitted with a caller's own prior, none given here
        conflict_note = str(exc)
    conv = convergence(run)
    title = f"bigmali report: {run.attrs.get('model')} / {run.attrs.get('method')}, {run.attrs.get('n_halos')} halos"
    page = _Page(out_dir, title)
    config = attr_json(run, "config", {}) or {}
    page.add(
        f'<p class="meta">Run {html.escape(source or "(in memory)")}; fitted in {_fmt(result["seconds"], 4)} s; '
        f"mass prior: {html.escape(str(run.attrs.get('prior_description', 'unknown')))}; settings: "
        f"{html.escape(json.dumps(config))}; bigmali {html.escape(str(run.attrs.get('bigmali_version', '?')))}.</p>"
    )
    _recovery_section(page, result)
    if "observed_data" in run.children:
        _selection_section(page, run)
    if "influence" in result:
        _influence_section(page, result["influence"])
    if "prior_conflict" in result:
        _conflict_section(page, result["prior_conflict"])
    else:
        page.add(f'<h2>Prior-data conflict</h2><p class="note">Not run: {html.escape(conflict_note)}</p>')
    _convergence_section(page, conv)
    if weighted:
        _weights_section(page, run, result)
    else:
        pc = azp.plot_trace_dist(
            run, var_names=list(HYPER_NAMES), backend="matplotlib", figure_kwargs={"figsize": (12, 9)}
        )
        page.figure(figure_of(pc), "trace", "Trace and marginal density of each hyperparameter, per chain (ArviZ).")
        if conv["chains"] > 1:
            pc = azp.plot_rank(
                run, var_names=list(HYPER_NAMES), backend="matplotlib", figure_kwargs={"figsize": (14, 3.4)}
            )
            page.figure(
                figure_of(pc),
                "rank",
                "Rank ECDF difference per chain with its simultaneous band (ArviZ): "
                "chains that sample the same distribution stay inside.",
            )
    page.figure(
        _pair_figure(_posterior_tree(run), truth),
        "pair",
        "Pair plot of the hyperparameters (ArviZ)"
        + ("; the truth in red." if truth else ".")
        + (" Draws resampled by weight." if weighted else ""),
    )
    try:
        ppc = posterior_predictive_check(run, prior=prior, n_draws=ppc_draws)
    except ValueError as exc:
        page.add(f'<h2>Posterior predictive check</h2><p class="note">Not run: {html.escape(str(exc))}</p>')
    else:
        _ppc_section(page, ppc)
        result.update(ppc.as_dict())
    if "log_likelihood" in run.children:
        _loo_section(page, run)
    elif not weighted:
        page.add(
            '<h2>Leave-one-halo-out</h2><p class="note">The run has no log_likelihood group (fitted with '
            "log_likelihood=0): no LOO.</p>"
        )
    seconds = time.perf_counter() - start
    page.add(f'<p class="meta">Report written in {seconds:.1f} s.</p>')
    path = page.write()
    atomic_write_text(out_dir / "summary.json", json.dumps(result, default=float, indent=1))
    return {"html": path, "images": page.images, "seconds": seconds}


def write_comparison(runs, out_dir, *, labels=None, truth=None, prior=None, ppc_draws: int = 200) -> dict:
    """Write ``report.html`` comparing several runs (paths or DataTrees), the first the reference."""
    import matplotlib

    matplotlib.use("Agg")

    from bigmali.datatree import load_run
    from bigmali.diagnostics.compare import compare, plot_comparison
    from bigmali.diagnostics.convergence import convergence
    from bigmali.diagnostics.ppc import posterior_predictive_check
    from bigmali.diagnostics.recovery import resolve_truth

    start = time.perf_counter()
    if len(runs) < 2:
        raise ValueError("a comparison needs at least two runs")
    names = [str(r) if not hasattr(r, "children") else f"run {i}" for i, r in enumerate(runs)]
    runs = [r if hasattr(r, "children") else load_run(r) for r in runs]
    labels = (
        list(labels)
        if labels is not None
        else [f"{n} ({r.attrs.get('model')}/{r.attrs.get('method')})" for n, r in zip(names, runs)]
    )
    truth = resolve_truth(truth)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = _Page(out_dir, f"bigmali comparison of {len(runs)} runs")
    result = compare(runs, labels)
    rows = []
    for name, entries in result["parameters"].items():
        for label, e in zip(labels, entries):
            rows.append(
                [
                    name,
                    html.escape(label),
                    _fmt(e["mean"], 6),
                    _fmt(e["sd"], 4),
                    _fmt(e["diff_sd"], 3),
                    _fmt(e["sd_ratio"], 3),
                ]
                + ([_fmt((truth[name] - e["mean"]) / e["sd"] if e["sd"] > 0 else None, 3)] if truth else [])
            )
    header = ["parameter", "run", "mean", "sd", "shift / ref sd", "sd / ref sd"] + (
        ["z-score of truth"] if truth else []
    )
    page.add(f"<h2>Hyperparameters</h2><p>Reference: {html.escape(labels[0])}.</p>" + _table(header, rows, left=2))
    checks = []
    for label, run in zip(labels, runs):
        conv = convergence(run)
        try:
            p = f"{posterior_predictive_check(run, prior=prior, n_draws=ppc_draws).p_value:.3f}"
        except ValueError as exc:
            p = html.escape(f"not run ({exc})")
        failed = [c["name"] for c in conv["checks"] if not c["passed"]]
        checks.append(
            [
                html.escape(label),
                _fmt(run.attrs.get("seconds"), 4),
                _verdict(conv["passed"]),
                html.escape(", ".join(failed) or "none"),
                p,
            ]
        )
    page.add(
        "<h2>Checks per run</h2>" + _table(["run", "seconds", "convergence", "failed checks", "PPC p-value"], checks)
    )
    path = plot_comparison(runs, out_dir / "marginals.png", labels, truth=truth)
    page.images.append(path)
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    page.add(
        f'<figure><img alt="overlaid marginals" src="data:image/png;base64,{data}"><figcaption>Overlaid '
        "marginal densities (weighted kernel density estimates)"
        + ("; the truth in black." if truth else ".")
        + "</figcaption></figure>"
    )
    seconds = time.perf_counter() - start
    page.add(f'<p class="meta">Report written in {seconds:.1f} s.</p>')
    return {"html": page.write(), "images": page.images, "seconds": seconds}
