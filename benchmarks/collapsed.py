"""Figures for the collapsed model on a 2017-sized mock (115,919 halos from the hyperseed).

Usage: python benchmarks/collapsed.py [--skip-nuts] [--skip-reference]
Prints: likelihood accuracy against a brute-force Simpson reference with 10^4 masses and
against an exact (8-point Gauss-Legendre, finer table) evaluation; the cost of one log-likelihood and
of one value-and-gradient (medians over repeats); SVI (AutoMultivariateNormal) time and
recovery; collapsed NUTS (4 chains x 1000 draws after 1000 warmup): wall time, R-hat,
ESS, divergences, steps per draw, the hyperseed's quantiles; and peak memory.
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
from bigmali.diagnostics import format_summary, summary
from bigmali.likelihood import quadrature as Q
from bigmali.relation import HYPERSEED, Hyper


def median_ms(f, *args, repeats=50):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-nuts", action="store_true")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {jax.device_count()} JAX device(s), jax {jax.__version__}")
    prior = bigmali.load_mass_prior()
    catalog = bigmali.simulate(prior, n_halos=115_919, seed=0)
    data = Q.prepare(catalog.z, catalog.lum_obs, prior)
    total = float(Q.log_likelihood(HYPERSEED, data))
    print(f"collapsed ln L at the hyperseed, 115919 halos: {total:.4f}")
    if not args.skip_reference:
        start = time.perf_counter()
        ref = Q.reference_log_likelihood_halos(HYPERSEED, catalog.z, catalog.lum_obs, prior, n_points=10_000)
        print(
            f"brute-force Simpson, 1e4 masses: {ref.sum():.4f} ({time.perf_counter() - start:.0f} s); "
            f"fast - reference = {total - ref.sum():+.5f} (target |.| <= 0.01)"
        )
    fine = Q.TableGrid(gl_order=8, rho_step=0.025, w_min=0.44, w_max=0.48, ln_w_step=0.005)
    exact = float(jnp.sum(Q.log_likelihood_halos(HYPERSEED, Q.prepare(catalog.z, catalog.lum_obs, prior, fine))))
    print(f"exact (GL-8 per knot interval, rho step 0.025, ln w step 0.005): fast - exact = {total - exact:+.2e}")

    theta = jnp.array(HYPERSEED)
    value = jax.jit(lambda th: Q.log_likelihood(Hyper(*th), data))
    value_grad = jax.jit(jax.value_and_grad(lambda th: Q.log_likelihood(Hyper(*th), data)))
    print(
        f"log-likelihood: median {median_ms(value, theta):.2f} ms; value + gradient: median "
        f"{median_ms(value_grad, theta):.2f} ms (target <= 10 ms, float64)"
    )

    start = time.perf_counter()
    svi = bigmali.fit(catalog, prior=prior, method="svi", steps=3000, progress=False, mass_draws=0)
    print(
        f"\nSVI AutoMultivariateNormal, 3000 steps: {time.perf_counter() - start:.1f} s (target <= 60 s); "
        f"converged: {svi.attrs['config']}"
    )
    print(format_summary(summary(svi, truth="hyperseed")))

    if not args.skip_nuts:
        start = time.perf_counter()
        run = bigmali.fit(
            catalog, prior=prior, method="nuts", chains=4, warmup=1000, draws=1000, progress=False, mass_draws=0
        )
        wall = time.perf_counter() - start
        result = summary(run, truth="hyperseed")
        steps = np.asarray(run["sample_stats"]["n_steps"])
        print(
            f"\ncollapsed NUTS 4 x (1000 warmup + 1000 draws): {wall:.1f} s wall including compilation (target <= 180 s); "
            f"{steps.mean():.2f} leapfrog steps per draw; {result['divergences']} divergences"
        )
        print(format_summary(result))
        nuts = result["parameters"]
        print(
            "SVI vs NUTS: mean difference in NUTS sd, sd ratio: "
            + ", ".join(
                f"{k} {(e['mean'] - nuts[k]['mean']) / nuts[k]['sd']:+.3f}, {e['sd'] / nuts[k]['sd']:.3f}"
                for k, e in summary(svi)["parameters"].items()
            )
        )
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
