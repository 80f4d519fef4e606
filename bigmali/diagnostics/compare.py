"""Several runs side by side: means, sds and shifts per hyperparameter, overlaid marginals.

Weighted runs (the importance-sampling methods) enter with their weights. Differences are
in units of the first run's posterior sd, the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bigmali.datatree import draws_and_weights
from bigmali.relation import HYPER_NAMES
from bigmali.weights import weighted_mean_sd

__all__ = ["compare", "format_comparison", "plot_comparison"]


def _label(run, fallback: str) -> str:
    model, method = run.attrs.get("model"), run.attrs.get("method")
    return f"{model}/{method}" if model and method else fallback


def compare(runs, labels=None) -> dict:
    """``{"runs": [labels], "parameters": {name: [{"mean", "sd", "diff_sd"}, ...]}}``, the first run the reference."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    labels = list(labels) if labels is not None else [_label(r, f"run {i}") for i, r in enumerate(runs)]
    moments = []
    for run in runs:
        draws, w = draws_and_weights(run)
        entry = {}
        for name in HYPER_NAMES:
            entry[name] = weighted_mean_sd(draws[name], w)
        moments.append(entry)
    params = {}
    for name in HYPER_NAMES:
        ref_mean, ref_sd = moments[0][name]
        params[name] = [
            {
                "mean": m[name][0],
                "sd": m[name][1],
                "diff_sd": (m[name][0] - ref_mean) / ref_sd if ref_sd > 0 else float("nan"),
                "sd_ratio": m[name][1] / ref_sd if ref_sd > 0 else float("nan"),
            }
            for m in moments
        ]
    return {"runs": labels, "parameters": params}


def format_comparison(result: dict) -> str:
    lines = ["reference: " + result["runs"][0] + "; diff = (mean - reference mean) / reference sd"]
    for name, rows in result["parameters"].items():
        lines.append(f"{name}")
        for label, row in zip(result["runs"], rows):
            lines.append(
                f"  {label:<28}{row['mean']:>14.6f}{row['sd']:>12.6f}  diff {row['diff_sd']:>+9.3f} sd  sd ratio {row['sd_ratio']:.3f}"
            )
    return "\n".join(lines)


def plot_comparison(runs, path, labels=None, truth: dict | None = None) -> Path:
    """One panel per hyperparameter with each run's (weighted) marginal density overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    labels = list(labels) if labels is not None else [_label(r, f"run {i}") for i, r in enumerate(runs)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    data = [draws_and_weights(r) for r in runs]
    for ax, name in zip(axes, HYPER_NAMES):
        ref_draws, ref_w = data[0]
        ref_mean, ref_sd = weighted_mean_sd(ref_draws[name], ref_w)
        lo, hi = ref_mean - 6 * ref_sd, ref_mean + 6 * ref_sd
        for draws, w in data:
            x = draws[name]
            lo, hi = min(lo, np.min(x[w > 1e-6])), max(hi, np.max(x[w > 1e-6]))
        grid = np.linspace(lo, hi, 400)
        for (draws, w), label in zip(data, labels):
            x = draws[name]
            ess = 1.0 / np.sum(w * w)
            if ess < 2 or np.ptp(x[w > 0]) == 0:  # a single draw carries the weight: mark it
                ax.axvline(x[np.argmax(w)], ls="--", label=f"{label} (one draw)")
            else:
                ax.plot(grid, gaussian_kde(x, weights=w)(grid), label=label)
        if truth is not None:
            ax.axvline(truth[name], color="k", lw=1.5, label="truth")
        ax.set_xlabel(name)
        ax.set_yticks([])
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    from bigmali.plotting import save_figure

    return save_figure(fig, path, dpi=110)
