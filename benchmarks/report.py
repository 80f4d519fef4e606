"""Time the HTML report of a 115,919-halo fit (target: under 60 s).

    python benchmarks/report.py [--run run.nc] [--out report_dir]

Without --run, simulates the 2017-sized mock from the hyperseed and fits it with collapsed
NUTS (4 x (1000 + 1000)), keeping the log_likelihood group (25 M values) so that the
report includes LOO over halos; the fit is saved as report_run.nc. Then it writes the
report three times and prints the median, the time of each section and the PPC p-value.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

import bigmali
from bigmali.datatree import load_run, save_run
from bigmali.diagnostics.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", default="report_bench")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.run is None:
        catalog = bigmali.simulate(n_halos=115_919, seed=0)
        run = bigmali.fit(catalog, progress=True)
        save_run(run, "report_run.nc")
        args.run = "report_run.nc"
    start = time.perf_counter()
    run = load_run(args.run)
    print(f"{run.attrs['n_halos']} halos, groups {sorted(run.children)}; loaded in {time.perf_counter() - start:.1f} s")
    seconds = []
    for i in range(args.repeats):
        profile = cProfile.Profile() if i == args.repeats - 1 else None
        start = time.perf_counter()
        if profile:
            profile.enable()
        out = write_report(args.run, args.out)  # from the file, as `bigmali report run.nc` does
        if profile:
            profile.disable()
        seconds.append(time.perf_counter() - start)
        print(
            f"report {i + 1}: {seconds[-1]:.1f} s, {len(out['images'])} images, {out['html'].stat().st_size / 1e6:.1f} MB html",
            flush=True,
        )
    print(f"median {np.median(seconds):.1f} s over {len(seconds)} (target 60 s)")
    stats = pstats.Stats(profile)
    for name in (
        "posterior_predictive_check",
        "_loo_section",
        "plot_ppc",
        "plot_trace_dist",
        "plot_rank",
        "_pair_figure",
        "convergence",
        "summary",
        "figure",
    ):
        hits = [(k, v) for k, v in stats.stats.items() if k[2] == name]
        if hits:
            print(f"  {name:<28} {max(v[3] for _, v in hits):6.1f} s (cumulative, last run)")


if __name__ == "__main__":
    main()
