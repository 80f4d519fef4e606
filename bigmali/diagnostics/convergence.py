"""Has the sampler converged? ArviZ's diagnostics, each against a stated threshold.

Per hyperparameter: rank-normalised split R-hat, bulk and tail ESS and the Monte Carlo
standard errors of the mean and sd (arviz-stats). For NUTS runs: divergent transitions,
draws that hit the maximum tree depth and the E-BFMI of every chain. For weighted runs
(the importance-sampling methods): the weights' Pareto k-hat and ESS.

Thresholds follow Vehtari et al. (2021) and Stan's ``diagnose``: R-hat <= 1.01, bulk and
tail ESS >= 100 per chain, MCSE of the mean <= 10% of the posterior sd, no divergences, no
saturated trees, E-BFMI >= 0.3; for weights k-hat <= 0.7 and ESS >= 100.
"""

from __future__ import annotations

import numpy as np

from bigmali.inference.nuts import R_HAT_MAX
from bigmali.relation import HYPER_NAMES
from bigmali.weights import K_HAT_THRESHOLD

__all__ = ["THRESHOLDS", "convergence", "format_convergence"]

THRESHOLDS = {
    "r_hat_max": R_HAT_MAX,
    "ess_per_chain_min": 100,
    "mcse_over_sd_max": 0.1,
    "divergences_max": 0,
    "tree_depth_saturated_max": 0,
    "e_bfmi_min": 0.3,
    "pareto_k_max": K_HAT_THRESHOLD,
    "weight_ess_min": 100,
}


def _check(name: str, value, threshold, passed: bool, detail: str = "") -> dict:
    return {"name": name, "value": value, "threshold": threshold, "passed": bool(passed), "detail": detail}


def convergence(run, thresholds: dict | None = None) -> dict:
    """Diagnostics of a run as a plain dict.

    Returns ``{"parameters": {name: {r_hat, ess_bulk, ess_tail, mcse_mean, mcse_sd}},
    "checks": [{name, value, threshold, passed, detail}], "passed": all checks passed}``.
    Checks that do not apply to the run's method (E-BFMI for SVI, R-hat for weighted draws)
    are left out rather than passed.
    """
    import arviz_stats as azs

    from bigmali.datatree import attr_json, is_weighted
    from bigmali.weights import weight_diagnostics

    t = {**THRESHOLDS, **(thresholds or {})}
    post = run["posterior"].to_dataset()[list(HYPER_NAMES)]
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    stats = run["sample_stats"] if "sample_stats" in run.children else None
    checks = []
    params = {}
    if is_weighted(run):
        w = weight_diagnostics(np.asarray(stats["log_weight_raw"]).ravel())
        checks.append(
            _check(
                "pareto_k",
                w["pareto_k"],
                t["pareto_k_max"],
                w["pareto_k"] <= t["pareto_k_max"],
                "PSIS k-hat of the importance weights",
            )
        )
        checks.append(
            _check(
                "weight_ess",
                w["ess"],
                t["weight_ess_min"],
                w["ess"] >= t["weight_ess_min"],
                f"weights' effective sample size; largest share {w['max_share']:.3g}",
            )
        )
        return {
            "parameters": {},
            "checks": checks,
            "passed": all(c["passed"] for c in checks),
            "chains": chains,
            "draws": draws,
        }
    r_hat = post.azstats.rhat() if chains > 1 else None
    ess_bulk = post.azstats.ess(method="bulk")
    ess_tail = post.azstats.ess(method="tail")
    mcse_mean = post.azstats.mcse(method="mean")
    mcse_sd = post.azstats.mcse(method="sd")
    sd = post.std(dim=("chain", "draw"))
    for name in HYPER_NAMES:
        params[name] = {
            "r_hat": float(r_hat[name]) if r_hat is not None else float("nan"),
            "ess_bulk": float(ess_bulk[name]),
            "ess_tail": float(ess_tail[name]),
            "mcse_mean": float(mcse_mean[name]),
            "mcse_sd": float(mcse_sd[name]),
            "sd": float(sd[name]),
        }
    if r_hat is not None:
        worst = max(HYPER_NAMES, key=lambda n: params[n]["r_hat"])
        value = params[worst]["r_hat"]
        checks.append(_check("r_hat", value, t["r_hat_max"], value <= t["r_hat_max"], f"largest, {worst}"))
    ess_min = t["ess_per_chain_min"] * chains
    for kind in ("ess_bulk", "ess_tail"):
        worst = min(HYPER_NAMES, key=lambda n: params[n][kind])
        value = params[worst][kind]
        checks.append(_check(kind, value, ess_min, value >= ess_min, f"smallest, {worst}"))
    ratio = {n: params[n]["mcse_mean"] / params[n]["sd"] if params[n]["sd"] > 0 else float("inf") for n in HYPER_NAMES}
    worst = max(HYPER_NAMES, key=ratio.get)
    checks.append(
        _check(
            "mcse_mean_over_sd",
            ratio[worst],
            t["mcse_over_sd_max"],
            ratio[worst] <= t["mcse_over_sd_max"],
            f"largest, {worst}",
        )
    )
    if stats is not None and "diverging" in stats:
        n_div = int(np.asarray(stats["diverging"]).sum())
        checks.append(
            _check(
                "divergences",
                n_div,
                t["divergences_max"],
                n_div <= t["divergences_max"],
                f"{n_div} of {chains * draws} draws",
            )
        )
    if stats is not None and "tree_depth" in stats:
        max_depth = int((attr_json(run, "config", {}) or {}).get("max_tree_depth", 10))
        n_sat = int(np.sum(np.asarray(stats["tree_depth"]) >= max_depth))
        checks.append(
            _check(
                "tree_depth_saturated",
                n_sat,
                t["tree_depth_saturated_max"],
                n_sat <= t["tree_depth_saturated_max"],
                f"draws at the maximum depth {max_depth}",
            )
        )
    if stats is not None and "energy" in stats:
        bfmi = np.atleast_1d(np.asarray(azs.bfmi(run)["energy"]))
        value = float(np.min(bfmi))
        checks.append(
            _check(
                "e_bfmi",
                value,
                t["e_bfmi_min"],
                value >= t["e_bfmi_min"],
                "smallest over chains: " + ", ".join(f"{b:.2f}" for b in bfmi),
            )
        )
    return {
        "parameters": params,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
        "chains": chains,
        "draws": draws,
    }


def format_convergence(result: dict) -> str:
    """A readable list of the checks."""
    lines = [
        f"convergence ({result['chains']} chains x {result['draws']} draws): "
        + ("all checks passed" if result["passed"] else "SOME CHECKS FAILED")
    ]
    for c in result["checks"]:
        value = c["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(
            f"  {'pass' if c['passed'] else 'FAIL':<5}{c['name']:<22}{shown:>10}  (threshold {c['threshold']}; {c['detail']})"
        )
    return "\n".join(lines)
