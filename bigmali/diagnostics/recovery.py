"""Does the posterior recover the hyperparameters that generated a mock?

For each hyperparameter: ArviZ's mean, sd, R-hat and bulk/tail ESS; and, given a truth,
the truth's posterior quantile (the fraction of draws below it) and whether it lies
inside the 68% and 95% highest-density intervals (ArviZ ``hdi``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bigmali.relation import HYPER_NAMES, HYPERSEED, hyper_from_meta
from bigmali.weights import K_HAT_THRESHOLD

__all__ = ["summary", "resolve_truth", "format_summary"]


def resolve_truth(truth) -> dict | None:
    """A truth from ``"hyperseed"``, a dict, a JSON file, or a catalog file whose metadata holds it."""
    if truth is None:
        return None
    if isinstance(truth, dict):
        return {name: float(truth[name]) for name in HYPER_NAMES}
    if hasattr(truth, "_asdict"):
        return {name: float(v) for name, v in truth._asdict().items()}
    if str(truth).lower() == "hyperseed":
        return {name: float(v) for name, v in HYPERSEED._asdict().items()}
    path = Path(truth)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read truth file {str(path)!r}: {exc}") from None
        missing = [n for n in HYPER_NAMES if n not in data]
        if missing:
            raise ValueError(f"truth file {str(path)!r} is missing {', '.join(missing)}")
        return {name: float(data[name]) for name in HYPER_NAMES}
    from bigmali.catalog import read_catalog

    hyper = hyper_from_meta(read_catalog(path, z_max=None).meta)
    if hyper is None:
        raise ValueError(f"catalog {str(path)!r} records no generating hyperparameters")
    return {name: float(v) for name, v in hyper._asdict().items()}


def weighted_hdi(values, weights, prob: float) -> tuple[float, float]:
    """The shortest interval holding ``prob`` of the weight (weights sum to one)."""
    order = np.argsort(values)
    x, cum = values[order], np.cumsum(weights[order])
    starts = np.concatenate([[0.0], cum[:-1]])  # weight below each candidate lower end
    complete = starts + prob <= cum[-1] + 1e-12  # intervals that can still gather prob
    ends = np.searchsorted(cum, starts + prob - 1e-12).clip(max=x.size - 1)
    i = int(np.argmin(np.where(complete, x[ends] - x, np.inf)))
    return float(x[i]), float(x[ends[i]])


def _weighted_entry(draws, w, weight_ess: float) -> dict:
    from bigmali.weights import weighted_mean_sd

    mean, sd = weighted_mean_sd(draws, w)
    return {"mean": mean, "sd": sd, "r_hat": float("nan"), "ess_bulk": weight_ess, "ess_tail": weight_ess}


def summary(
    run,
    truth=None,
    *,
    ppc: bool = False,
    prior=None,
    ppc_draws: int = 200,
    influence: bool = True,
    conflict: bool = False,
) -> dict:
    """The recovery summary of a run as a plain dict (the CLI's ``--json`` object).

    Per hyperparameter: mean, sd, R-hat, bulk/tail ESS and, given a truth, the truth's
    posterior quantile, its z-score ``(truth - mean) / sd`` and whether it lies in the 68%
    and 95% HDIs. ``"convergence"`` holds the pass/fail checks of
    :func:`~bigmali.diagnostics.convergence.convergence`. With ``ppc=True`` the posterior
    predictive check of the luminosity distribution adds ``"ppc_p_value"`` and
    ``"ppc_p_value_by_bin"`` (the run's mass prior is rebuilt from its recorded options
    unless ``prior`` is given). With ``influence=True`` (the default) and a
    ``log_likelihood`` group, ``"influence"`` names the halos that dominate the fit
    (:func:`~bigmali.diagnostics.influence.influential_halos`; its ``"warning"`` is None
    when none does). With ``conflict=True``, ``"prior_conflict"`` holds the prior-data conflict
    measures (:func:`~bigmali.diagnostics.conflict.prior_data_conflict`). The PPC and the
    power-scaling need the run's catalog: a run read back without one gets neither.

    For weighted draws (the importance-sampling methods) the mean, sd, quantile and HDIs
    are weighted, R-hat is NaN, the ESS is the weights' ESS, and a ``"weights"`` entry
    holds ``{"ess", "pareto_k", "max_share"}`` of the raw weights.
    """
    import arviz_stats as azs

    truth = resolve_truth(truth)
    post = run["posterior"]
    stats = run["sample_stats"] if "sample_stats" in run.children else None
    weights = None
    if stats is not None and "log_weight" in stats:
        from bigmali.weights import weight_diagnostics

        log_w = np.asarray(stats["log_weight"]).ravel()
        weights = np.exp(log_w - np.logaddexp.reduce(log_w))
        diagnostics = weight_diagnostics(np.asarray(stats["log_weight_raw"]).ravel())
    else:
        table = azs.summary(run, var_names=list(HYPER_NAMES), round_to="none")
    params = {}
    for name in HYPER_NAMES:
        draws = np.asarray(post[name]).ravel()
        if weights is None:
            row = table.loc[name]
            moments = {
                "mean": float(row["mean"]),
                "sd": float(row["sd"]),
                "r_hat": float(row["r_hat"]),
                "ess_bulk": float(row["ess_bulk"]),
                "ess_tail": float(row["ess_tail"]),
            }
        else:
            moments = _weighted_entry(draws, weights, diagnostics["ess"])
        entry = {
            "truth": None,
            "mean": moments["mean"],
            "sd": moments["sd"],
            "quantile": None,
            "z_score": None,
            "in_hdi_68": None,
            "in_hdi_95": None,
            "r_hat": moments["r_hat"],
            "ess_bulk": moments["ess_bulk"],
            "ess_tail": moments["ess_tail"],
        }
        if truth is not None:
            value = truth[name]
            entry["truth"] = value
            entry["z_score"] = (value - moments["mean"]) / moments["sd"] if moments["sd"] > 0 else float("nan")
            if weights is None:
                entry["quantile"] = float(np.mean(draws < value))
            else:
                entry["quantile"] = float(np.sum(weights[draws < value]))
            for prob in (0.68, 0.95):
                if weights is None:
                    lo, hi = np.asarray(azs.hdi(post[name], prob=prob)).ravel()[:2]
                else:
                    lo, hi = weighted_hdi(draws, weights, prob)
                entry[f"in_hdi_{round(prob * 100)}"] = bool(lo <= value <= hi)
        params[name] = entry
    divergences = int(np.asarray(stats["diverging"]).sum()) if stats is not None and "diverging" in stats else 0
    result = {
        "parameters": params,
        "divergences": divergences,
        "n_halos": int(run.attrs.get("n_halos", 0)),
        "model": run.attrs.get("model"),
        "method": run.attrs.get("method"),
        "seconds": float(run.attrs.get("seconds", float("nan"))),
    }
    if weights is not None:
        result["weights"] = diagnostics
    if stats is not None and "accepted" in stats:  # Metropolis-Hastings (pmmh)
        result["acceptance_rate"] = float(np.mean(np.asarray(stats["accepted"])))
    from bigmali.diagnostics.convergence import convergence

    checks = convergence(run)
    result["convergence"] = {"passed": checks["passed"], "checks": checks["checks"]}
    if influence and "log_likelihood" in run.children:
        from bigmali.diagnostics.influence import influential_halos

        result["influence"] = influential_halos(run)
    if conflict:
        from bigmali.diagnostics.conflict import prior_data_conflict

        result["prior_conflict"] = prior_data_conflict(run, prior=prior)
    if ppc and "observed_data" in run.children:
        from bigmali.diagnostics.ppc import posterior_predictive_check

        try:
            result.update(posterior_predictive_check(run, prior=prior, n_draws=ppc_draws).as_dict())
        except ValueError as exc:  # e.g. a flux-limited run: said, not hidden
            result["ppc_not_run"] = str(exc)
    return result


def format_summary(result: dict) -> str:
    """A readable table of :func:`summary`'s result."""
    has_truth = any(p["truth"] is not None for p in result["parameters"].values())
    head = f"{'param':<7}{'mean':>12}{'sd':>11}{'r_hat':>8}{'ess_bulk':>10}{'ess_tail':>10}"
    if has_truth:
        head += f"{'truth':>12}{'quantile':>10}{'HDI68':>7}{'HDI95':>7}"
    lines = [
        f"{result['model']} / {result['method']}: {result['n_halos']} halos, {result['seconds']:.1f} s, "
        f"{result['divergences']} divergences",
        head,
    ]
    for name, p in result["parameters"].items():
        line = (
            f"{name:<7}{p['mean']:>12.6f}{p['sd']:>11.6f}{p['r_hat']:>8.3f}{p['ess_bulk']:>10.0f}{p['ess_tail']:>10.0f}"
        )
        if has_truth:
            line += f"{p['truth']:>12.6f}{p['quantile']:>10.3f}{'yes' if p['in_hdi_68'] else 'no':>7}{'yes' if p['in_hdi_95'] else 'no':>7}"
        lines.append(line)
    if "weights" in result:
        w = result["weights"]
        verdict = "unreliable" if not w["pareto_k"] <= K_HAT_THRESHOLD else "reliable"
        lines.append(
            f"weights: ESS {w['ess']:.1f}, largest share {w['max_share']:.3g}, Pareto k-hat {w['pareto_k']:.2f} ({verdict})"
        )
    if "acceptance_rate" in result:
        lines.append(f"Metropolis-Hastings acceptance rate {result['acceptance_rate']:.3f}")
    if "convergence" in result:
        failed = [c["name"] for c in result["convergence"]["checks"] if not c["passed"]]
        lines.append("convergence checks: " + ("all passed" if not failed else "FAILED: " + ", ".join(failed)))
    if "influence" in result:
        from bigmali.diagnostics.influence import format_influence

        lines.append(format_influence(result["influence"]))
    if result.get("ppc_p_value") is not None:
        by_bin = result["ppc_p_value_by_bin"]
        lines.append(
            f"posterior predictive check of L_obs: p = {result['ppc_p_value']:.3f}; per redshift bin "
            f"min {min(by_bin):.3f}, {sum(p < 0.01 for p in by_bin)} of {len(by_bin)} below 0.01"
        )
        lum = result.get("ppc_by_luminosity")
        if lum:
            worst = int(np.nanargmax(np.abs(lum["standardised_residual"])))
            lines.append(
                f"  by luminosity ({len(lum['n_obs'])} bins of ln L_obs): largest |standardised residual| "
                f"{lum['max_abs_standardised']:.1f} in ln L_obs {lum['edges'][worst]:.2f}..{lum['edges'][worst + 1]:.2f} "
                f"({lum['n_obs'][worst]} halos, {lum['n_rep_mean'][worst]:.0f} expected)"
            )
    if "prior_conflict" in result:
        from bigmali.diagnostics.conflict import format_conflict

        lines.append(format_conflict(result["prior_conflict"]))
    return "\n".join(lines)
