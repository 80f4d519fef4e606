"""Which mass prior does the catalog prefer? Evidence and LOO, one row per prior.

For each named mass prior, :func:`compare_priors` computes

* the evidence ``ln Z`` with its standard error and Pareto k-hat
  (:func:`bigmali.inference.evidence.log_evidence`); differences of ``ln Z`` are log Bayes
  factors;
* the fitted hyperparameters (means and sds under the PSIS-smoothed importance weights of the
  same draws);
* ArviZ's PSIS-LOO ``elpd`` with its standard error, from ``loo_draws`` draws resampled by
  weight and each halo's exact collapsed log-likelihood (``loo_subsample`` beyond 20,000
  halos), and ArviZ's ``compare`` of the priors: ``elpd_diff`` (this prior's elpd minus the best's, <= 0) and its ``dse``.

Evidence weighs the whole prior, hyperprior included; LOO asks only how well each fitted model
predicts a held-out halo. Both are on the same scale (nats) for the same catalog.
"""

from __future__ import annotations

import numpy as np

from bigmali.relation import HYPER_NAMES

__all__ = ["compare_priors", "format_prior_comparison"]


def _resample(log_weight: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Systematic resampling: ``n`` indices in proportion to the weights."""
    w = np.exp(log_weight - np.logaddexp.reduce(log_weight))
    u = (np.random.default_rng(seed).random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), u), w.size - 1)


def _loo_tree(samples: dict, catalog, prior, picks: np.ndarray):
    import xarray as xr

    from bigmali.fit import pointwise_log_likelihood
    from bigmali.selection import resolve_flux_limit

    draws = {name: samples[name][picks][None, :] for name in HYPER_NAMES}
    limit = resolve_flux_limit(None, catalog)[0]  # as the evidence uses it
    size = draws["alpha1"].size * len(catalog)
    values, _ = pointwise_log_likelihood(draws, catalog, prior, max_values=size, flux_limit=limit)
    return xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({k: (("chain", "draw"), v) for k, v in draws.items()}),
            "log_likelihood": xr.Dataset({"lum_obs": (("chain", "draw", "halo"), values)}),
        }
    )


def compare_priors(
    catalog, priors: dict, *, n_draws: int = 4000, loo_draws: int = 256, seed: int = 0, progress: bool = False
) -> dict:
    """Evidence, LOO and fitted hyperparameters of ``catalog`` under each of ``priors``
    (``{name: MassPrior}``). Returns ``{"priors": {name: {...}}, "best_evidence": name,
    "best_elpd": name}``; each entry holds ``log_evidence``, ``error``, ``pareto_k``, ``ess``,
    ``hyper`` (``{name: {"mean", "sd"}}``), ``elpd``, ``elpd_se``, ``p_loo``,
    ``elpd_diff``, ``elpd_dse``, ``delta_log_evidence`` (against the best) and ``seconds``.
    """
    import arviz_stats as azs

    from bigmali.diagnostics.loo import loo_elpd
    from bigmali.inference.evidence import log_evidence
    from bigmali.weights import weighted_mean_sd

    if not priors:
        raise ValueError("compare_priors needs at least one mass prior")
    rows, elpds = {}, {}
    for i, (name, prior) in enumerate(priors.items()):
        ev = log_evidence(catalog, prior, n_draws=n_draws, seed=seed, progress=progress)
        w = np.exp(ev.log_weight - np.logaddexp.reduce(ev.log_weight))
        hyper = {k: dict(zip(("mean", "sd"), weighted_mean_sd(ev.samples[k], w))) for k in HYPER_NAMES}
        loo = loo_elpd(_loo_tree(ev.samples, catalog, prior, _resample(ev.log_weight, loo_draws, seed + i)))
        elpds[name] = loo
        rows[name] = {
            "log_evidence": ev.log_evidence,
            "error": ev.error,
            "pareto_k": ev.pareto_k,
            "ess": ev.ess,
            "hyper": hyper,
            "elpd": float(loo.elpd),
            "elpd_se": float(loo.se),
            "p_loo": float(loo.p),
            "seconds": ev.seconds,
        }
    best_z = max(rows, key=lambda n: rows[n]["log_evidence"])
    for row in rows.values():
        row["delta_log_evidence"] = row["log_evidence"] - rows[best_z]["log_evidence"]
    if len(elpds) > 1:
        table = azs.compare(elpds, round_to="none")
        for name in rows:
            rows[name]["elpd_diff"] = float(table.loc[name, "elpd_diff"])
            rows[name]["elpd_dse"] = float(table.loc[name, "dse"])
        best_elpd = str(table.index[0])
    else:
        (name,) = rows
        rows[name]["elpd_diff"], rows[name]["elpd_dse"] = 0.0, 0.0
        best_elpd = name
    return {"priors": rows, "best_evidence": best_z, "best_elpd": best_elpd, "n_halos": len(catalog)}


def format_prior_comparison(result: dict) -> str:
    """The comparison as a table, best evidence first."""
    head = (
        f"{'mass prior':<28}{'ln Z':>16}{'+-':>7}{'k-hat':>7}{'dlnZ':>11}{'elpd_loo':>15}{'+-':>8}"
        f"{'elpd_diff':>11}{'+-':>8}  " + "".join(f"{n + ' (sd)':>22}" for n in HYPER_NAMES)
    )
    lines = [
        f"{result['n_halos']} halos; ln Z: evidence (per unit L_obs), dlnZ: against the best (a log Bayes factor); "
        "elpd: ArviZ PSIS-LOO",
        head,
    ]
    order = sorted(result["priors"], key=lambda n: -result["priors"][n]["log_evidence"])
    for name in order:
        r = result["priors"][name]
        hyper = "".join(f"{r['hyper'][k]['mean']:.5f} ({r['hyper'][k]['sd']:.1e})".rjust(22) for k in HYPER_NAMES)
        lines.append(
            f"{name[:27]:<28}{r['log_evidence']:>16.3f}{r['error']:>7.3f}{r['pareto_k']:>7.2f}"
            f"{r['delta_log_evidence']:>11.2f}{r['elpd']:>15.2f}{r['elpd_se']:>8.2f}{r['elpd_diff']:>11.2f}"
            f"{r['elpd_dse']:>8.2f}  {hyper}"
        )
    return "\n".join(lines)
