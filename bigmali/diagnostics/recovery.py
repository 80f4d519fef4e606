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


def summary(run, truth=None) -> dict:
    """The recovery summary of a run as a plain dict (the CLI's ``--json`` object)."""
    import arviz_stats as azs

    table = azs.summary(run, var_names=list(HYPER_NAMES), round_to="none")
    truth = resolve_truth(truth)
    post = run["posterior"]
    weights = None
    params = {}
    for name in HYPER_NAMES:
        draws = np.asarray(post[name]).ravel()
        row = table.loc[name]
        entry = {"truth": None, "mean": float(row["mean"]), "sd": float(row["sd"]), "quantile": None,
                 "in_hdi_68": None, "in_hdi_95": None,
                 "r_hat": float(row["r_hat"]), "ess_bulk": float(row["ess_bulk"]), "ess_tail": float(row["ess_tail"])}
        if truth is not None:
            value = truth[name]
            entry["truth"] = value
            entry["quantile"] = float(np.mean(draws < value)) if weights is None else None
            for prob in (0.68, 0.95):
                lo, hi = np.asarray(azs.hdi(post[name], prob=prob)).ravel()[:2]
                entry[f"in_hdi_{round(prob * 100)}"] = bool(lo <= value <= hi)
        params[name] = entry
    stats = run["sample_stats"] if "sample_stats" in run.children else None
    divergences = int(np.asarray(stats["diverging"]).sum()) if stats is not None and "diverging" in stats else 0
    return {
        "parameters": params,
        "divergences": divergences,
        "n_halos": int(run.attrs.get("n_halos", 0)),
        "model": run.attrs.get("model"),
        "method": run.attrs.get("method"),
        "seconds": float(run.attrs.get("seconds", float("nan"))),
    }


def format_summary(result: dict) -> str:
    """A readable table of :func:`summary`'s result."""
    has_truth = any(p["truth"] is not None for p in result["parameters"].values())
    head = f"{'param':<7}{'mean':>12}{'sd':>11}{'r_hat':>8}{'ess_bulk':>10}{'ess_tail':>10}"
    if has_truth:
        head += f"{'truth':>12}{'quantile':>10}{'HDI68':>7}{'HDI95':>7}"
    lines = [f"{result['model']} / {result['method']}: {result['n_halos']} halos, {result['seconds']:.1f} s, "
             f"{result['divergences']} divergences", head]
    for name, p in result["parameters"].items():
        line = f"{name:<7}{p['mean']:>12.6f}{p['sd']:>11.6f}{p['r_hat']:>8.3f}{p['ess_bulk']:>10.0f}{p['ess_tail']:>10.0f}"
        if has_truth:
            line += f"{p['truth']:>12.6f}{p['quantile']:>10.3f}{'yes' if p['in_hdi_68'] else 'no':>7}{'yes' if p['in_hdi_95'] else 'no':>7}"
        lines.append(line)
    return "\n".join(lines)
