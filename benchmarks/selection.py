"""Figures for real survey catalogs (issue 16): per-halo measurement errors.

Usage: python benchmarks/selection.py [--n-halos N] [--repeats R] [--skip-reference] [--skip-fit]

Prints, for a mock of N halos (115,919 by default, the 2017 catalog's size) drawn at the
hyperseed with per-halo errors log-uniform in [0.02, 0.3] (``bigmali simulate --lum-obs-err
0.02,0.3``):

* the collapsed likelihood with those errors against brute force (Simpson with 10^4 masses
  at each halo's own sigma_k): the difference of the totals and the worst halo;
* its value and gradient (median of R calls, after compilation) next to the fixed-sigma
  likelihood of the same catalog without its errors, the two alternating call by call in
  one process so that both see the same load; and their ratio (target: at most 2);
* collapsed NUTS (4 chains, to bulk and tail ESS 400) with and without the errors: where
  each puts the hyperseed, in posterior sds. The fit that ignores the errors gives every
  halo sigma_obs = 0.05 where most are larger.

Flux limits, the Malmquist-bias figures, the extended likelihood and SBC with selection are
not built yet (see the closing notes of issue 16).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import bigmali
from bigmali.catalog import Catalog
from bigmali.diagnostics import format_summary, summary
from bigmali.likelihood import quadrature as Q
from bigmali.relation import HYPERSEED, Hyper


def alternating_medians_ms(functions: dict, repeats: int) -> dict:
    """Median ms of each function's call, the functions called in turn, ``repeats`` rounds."""
    for f in functions.values():
        jax.block_until_ready(f())
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(f())
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-halos", type=int, default=115_919)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {jax.device_count()} JAX device(s), jax {jax.__version__}")
    prior = bigmali.load_mass_prior()
    catalog = bigmali.simulate(prior, n_halos=args.n_halos, seed=0, lum_obs_err=(0.02, 0.3))
    err = np.asarray(catalog.lum_obs_err)
    print(f"mock: {len(catalog)} halos, lum_obs_err log-uniform in [0.02, 0.3] (median {np.median(err):.3f})")

    start = time.perf_counter()
    data = Q.prepare(catalog.z, catalog.lum_obs, prior, lum_obs_err=err)
    print(f"prepare (theta-free table refined to ln w step 0.015): {time.perf_counter() - start:.2f} s")
    fixed = Q.prepare(catalog.z, catalog.lum_obs, prior)
    values = np.asarray(Q.log_likelihood_halos(HYPERSEED, data))
    if not args.skip_reference:
        start = time.perf_counter()
        ref = Q.reference_log_likelihood_halos(HYPERSEED, catalog.z, catalog.lum_obs, prior, lum_obs_err=err)
        diff = values - ref
        print(
            f"against brute-force Simpson (1e4 masses, each halo's sigma_k; {time.perf_counter() - start:.0f} s): "
            f"total {values.sum():.4f}, fast - reference = {diff.sum():+.2e} (target |.| <= 1e-3 at 1e5 halos), "
            f"worst halo {np.abs(diff).max():.2e} (target <= 1e-6)"
        )

    theta = jnp.array(HYPERSEED)
    value_grad = jax.jit(jax.value_and_grad(lambda th, d: Q.log_likelihood(Hyper(*th), d)))
    ms = alternating_medians_ms(
        {"per-halo": lambda: value_grad(theta, data), "fixed": lambda: value_grad(theta, fixed)}, args.repeats
    )
    print(
        f"value + gradient at {len(catalog)} halos, median of {args.repeats}, alternating: per-halo errors "
        f"{ms['per-halo']:.2f} ms, fixed sigma {ms['fixed']:.2f} ms, ratio {ms['per-halo'] / ms['fixed']:.2f} "
        "(target <= 2)"
    )

    if not args.skip_fit:
        plain = Catalog.from_arrays(z=catalog.z, lum_obs=catalog.lum_obs, meta=catalog.meta)
        for label, cat in (("with its errors", catalog), ("ignoring its errors (sigma_obs = 0.05)", plain)):
            start = time.perf_counter()
            run = bigmali.fit(cat, prior=prior, target_ess=400, progress=False, mass_draws=0, log_likelihood=0)
            result = summary(run, truth="hyperseed")
            print(f"\ncollapsed NUTS to ESS 400, {label}: {time.perf_counter() - start:.1f} s")
            print(format_summary(result))
            print(
                "hyperseed in posterior sds: "
                + ", ".join(
                    f"{k} {(HYPERSEED._asdict()[k] - p['mean']) / p['sd']:+.2f}"
                    for k, p in result["parameters"].items()
                )
            )
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
