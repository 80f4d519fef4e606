"""Simulation-based calibration of collapsed NUTS: K mocks of N halos from the hyperprior.

    python benchmarks/sbc.py --n-datasets 200 --n-halos 10000 --out sbc.jsonl

Prints the runtime (all datasets, median per dataset) and the uniformity p-values per
parameter (ArviZ pot_c and a rank-histogram chi-square), and writes the ECDF-difference
plot beside the results. The file is resumed if it exists (same settings), so the
runtime printed covers the datasets this file holds, whenever they were run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bigmali.diagnostics.sbc import format_sbc, plot_sbc, run_sbc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-datasets", type=int, default=200)
    parser.add_argument("--n-halos", type=int, default=10_000)
    parser.add_argument("--out", default="sbc.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    result = run_sbc(args.out, args.n_datasets, args.n_halos, seed=args.seed)
    wall = time.perf_counter() - start
    plot = plot_sbc(result, args.out.rsplit(".", 1)[0] + ".png")
    print(format_sbc(result))
    print(
        f"wall clock of this invocation: {wall:.1f} s; per dataset: median {np.median(result.seconds):.2f} s, "
        f"total {result.seconds.sum():.1f} s over {result.dataset.size} datasets"
    )
    uniformity = result.uniformity()
    print(json.dumps({"rejected": [k for k, v in uniformity.items() if v["rejected"]], "uniformity": uniformity}))
    print(f"wrote {plot}")


if __name__ == "__main__":
    main()
