"""Figures for the mass maps (issue 6) on the 115,919-halo mock from the hyperseed.

Usage:
    python benchmarks/massmap.py [--reference collapsed_run.nc] [--draws 1000] [--pixels 64] [--zbins 0,1,2,3.5]

Fits collapsed NUTS (4 x 1000 after 1000 warmup) unless a saved run of the same mock (seed 0)
is given, then runs the whole mass-map pipeline (``bigmali.massmap.massmap``: per-halo
posteriors from one realisation per hyperposterior draw, maps, FITS, PNG, summary) and prints
its accuracy against the true masses, its wall time and the peak memory of the process.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time

import jax

import bigmali
from bigmali.massmap import massmap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", default=None)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--pixels", type=int, default=64)
    parser.add_argument("--zbins", default=None)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}"
    )
    prior = bigmali.load_mass_prior()
    catalog = bigmali.simulate(prior, n_halos=115_919, seed=0)
    run = (
        bigmali.load_run(args.reference)
        if args.reference
        else bigmali.fit(catalog, prior=prior, progress=False, mass_draws=0, log_likelihood=0)
    )
    z_edges = [float(v) for v in args.zbins.split(",")] if args.zbins else None
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = massmap(
            run, catalog, prior, out, n_draws=args.draws, n_pixels=args.pixels, z_edges=z_edges, progress=False
        )
        wall = time.perf_counter() - start
    print(json.dumps(summary, indent=2))
    print(
        f"per-halo coverage: 68% interval {100 * summary['coverage_68']:.2f}% (nominal 68), "
        f"95% interval {100 * summary['coverage_95']:.2f}% (nominal 95)"
    )
    print(
        f"RMSE of the posterior-mean log10 M: {summary['rmse_log10M']:.4f} dex; relation inverted "
        f"{summary['rmse_log10M_naive']:.4f}; prior only {summary['rmse_log10M_prior_only']:.4f}"
    )
    print(
        f"lognormal fit: largest percentile error per halo, median {summary['lognormal_max_error_dex_median']:.4f} dex, "
        f"95th percentile {summary['lognormal_max_error_dex_p95']:.4f} dex"
    )
    print(
        f"maps: pixel correlation of mean and truth {summary['pixel_corr']:.4f}; "
        f"pixels whose true mass lies in their 68% band {100 * summary['pixel_coverage_68']:.1f}%"
    )
    print(
        f"pipeline wall time {wall:.1f} s for {args.draws} draws; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"
    )


if __name__ == "__main__":
    main()
