"""Figures of bigmali's inputs (the plotting layer; no science is computed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bigmali.mass_prior import BACKGROUND_2017, MassPrior

__all__ = ["plot_mass_prior"]


def plot_mass_prior(prior: MassPrior, path) -> Path:
    """Plot ``M P(M | z)`` (the density per ln M) of every redshift table on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    mass = np.asarray(prior.mass)
    density = np.asarray(prior.density)
    z_grid = np.asarray(prior.z_grid)
    # The 2017 background knots carry 1e-30 per unit M; show the tabulated mass function only.
    main = density.min(axis=0) > 10 * BACKGROUND_2017
    norm = colors.Normalize(z_grid.min(), z_grid.max())
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for z, row in zip(z_grid, density):
        ax.plot(np.log10(mass[main]), (mass * row)[main], color=cm.viridis(norm(z)), lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel(r"$\log_{10}\,M\ [M_\odot]$")
    ax.set_ylabel(r"$M\,P(M\mid z)$ (per unit $\ln M$)")
    ax.set_title(f"Mass prior: {prior.description}", fontsize=9)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="table redshift z")
    return save_figure(fig, path, dpi=120)


def save_figure(fig, path, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (the format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    from bigmali.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    plt.close(fig)
    return path


def figure_of(plot_collection):
    """The matplotlib figure behind an arviz-plots ``PlotCollection``."""
    return plot_collection.viz["figure"].item()
