"""Does the posterior predictive check flag a catalog drawn from another mass prior?

    python benchmarks/misspecification.py [--n-halos 100000]

Each case simulates a catalog at the hyperseed from a generating mass prior, fits it with
collapsed NUTS under the default prior (hmf Tinker10, WMAP5) and runs the PPC of the
observed-luminosity distribution per redshift bin (200 replicates). The matched case
should give p > 0.05; a mismatched fitting function or cosmology p < 0.01.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import bigmali
from bigmali.datatree import load_run, run_catalog, save_run
from bigmali.diagnostics.ppc import posterior_predictive_check
from bigmali.mass_prior import load_mass_prior


def _tinker10(frozen: bool = False, log10_mmin: float | None = None):
    """The default prior's hmf table, optionally reaching lower masses or frozen at z = 0."""
    from dataclasses import replace

    from bigmali.mass_function import TableSpec, load_table
    from bigmali.mass_prior import H_2017, build_mass_prior

    spec = TableSpec() if log10_mmin is None else replace(TableSpec(), log10_mmin=log10_mmin)
    table = load_table(spec)
    dndm, abundance = table.dndm, table.number_density()
    if frozen:
        dndm, abundance = np.repeat(dndm[:1], len(table.z), axis=0), np.repeat(abundance[:1], len(table.z))
    return build_mass_prior(
        table.z,
        table.m * H_2017,
        dndm,
        abundance=abundance,
        cosmology=spec.cosmology,
        description=f"Tinker10 WMAP5{' frozen at z=0' if frozen else ''} from 10^{spec.log10_mmin:.2f}",
    )


CASES = {
    "matched (Tinker10, WMAP5)": {},
    "Sheth-Tormen, WMAP5": {"hmf_model": "ST"},
    "Tinker08, WMAP5": {"hmf_model": "Tinker08"},
    "Tinker10, Planck18": {"cosmology": "Planck18"},
    "Press-Schechter, WMAP5": {"hmf_model": "PS"},
    "Tinker10, WMAP1": {"cosmology": "WMAP1"},
    "Tinker10 without evolution (z=0 table)": lambda: _tinker10(frozen=True),
    "Tinker10 down to 10^9.7 Msun": lambda: _tinker10(log10_mmin=9.7358590918),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-halos", type=int, default=100_000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--statistic", default="ad", choices=("ad", "chi2"))
    parser.add_argument("--reuse", action="store_true", help="reuse the fits saved in --save-dir")
    parser.add_argument("--save-dir", default=None, help="keep each case's catalog and run here")
    parser.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))), help="indices into CASES")
    args = parser.parse_args()
    fit_prior = load_mass_prior()
    names = list(CASES)
    results = {}
    for i in (int(c) for c in args.cases.split(",")):
        name = names[i]
        saved = Path(args.save_dir or ".") / f"case{i}.nc"
        start = time.perf_counter()
        if args.reuse and saved.exists():  # a fit this script saved before: only the PPC is redone
            run = load_run(saved)
            catalog = run_catalog(run)
        else:
            generating = CASES[name]() if callable(CASES[name]) else load_mass_prior(**CASES[name])
            catalog = bigmali.simulate(n_halos=args.n_halos, seed=args.seed, prior=generating)
            run = bigmali.fit(
                catalog,
                prior=fit_prior,
                chains=args.chains,
                warmup=args.warmup,
                draws=args.draws,
                seed=args.seed,
                progress=False,
                mass_draws=0,
                log_likelihood=0,
            )
        fit_s = time.perf_counter() - start
        if args.save_dir and not (args.reuse and saved.exists()):
            from bigmali.catalog import write_catalog

            Path(args.save_dir).mkdir(parents=True, exist_ok=True)
            write_catalog(catalog, Path(args.save_dir) / f"case{i}.fits")
            save_run(run, Path(args.save_dir) / f"case{i}.nc")
        start = time.perf_counter()
        ppc = posterior_predictive_check(run, catalog, fit_prior, n_draws=200, seed=args.seed, statistic=args.statistic)
        ppc_s = time.perf_counter() - start
        s = bigmali.summary(run, truth="hyperseed")
        shifts = {k: round((v["mean"] - v["truth"]) / v["sd"], 2) for k, v in s["parameters"].items()}
        small = sum(p < 0.01 for p in ppc.p_value_by_bin)
        print(
            f"{name:<28} p = {ppc.p_value:.3f}; bins with p < 0.01: {small} of {len(ppc.p_value_by_bin)}; "
            f"min bin p {min(ppc.p_value_by_bin):.3f}; (mean - truth)/sd {shifts}; fit {fit_s:.0f} s, PPC {ppc_s:.1f} s",
            flush=True,
        )
        results[name] = {"p_value": ppc.p_value, "p_value_by_bin": ppc.p_value_by_bin, "shift_sd": shifts}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
