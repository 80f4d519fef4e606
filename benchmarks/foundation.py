"""Figures for the foundation issue: prior normalisation and sampling, mock residuals, timings.

Usage: python benchmarks/foundation.py [--repeats 5]
Prints every figure; timings are medians over repeated runs on this machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import bigmali
from bigmali import lightcone, mass_function, relation
from bigmali.mass_prior import cdf_mass, density_mass, sample_ln_mass


def bin_integral(prior, z):
    mass = np.asarray(prior.mass)
    fine = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in zip(mass[:-1], mass[1:])] + [mass[-1:]])
    return np.trapezoid(np.asarray(density_mass(prior, fine, z)), fine)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {jax.device_count()} JAX device(s), Python {platform.python_version()}, "
        f"jax {jax.__version__}"
    )

    prior = bigmali.load_mass_prior()
    linear = bigmali.load_mass_prior(z_interp="linear")
    dev = max(abs(bin_integral(prior, z) - 1) for z in np.asarray(prior.z_grid))
    dev_lin = max(abs(bin_integral(linear, z) - 1) for z in np.linspace(0, 3.5, 36))
    print(f"prior normalisation: max |integral - 1| over 20 bins = {dev:.2e}; linear mode over 36 z = {dev_lin:.2e}")

    shipped = mass_function.read_table(mass_function.shipped_path(mass_function.TableSpec()))
    fresh = mass_function.compute_table()
    print(
        f"shipped table vs fresh hmf {fresh.meta['hmf_version']}: max relative difference {np.abs(shipped.dndm / fresh.dndm - 1).max():.2e}"
    )

    pvals = []
    for b, z in enumerate(np.asarray(prior.z_grid)):
        draws = np.exp(np.asarray(sample_ln_mass(prior, jax.random.PRNGKey(1000 + b), jnp.full(100_000, z))))
        pvals.append(stats.kstest(draws, lambda m: np.asarray(cdf_mass(prior, m, z))).pvalue)
    print("KS p-values, 1e5 draws per bin: " + " ".join(f"{p:.3f}" for p in pvals))
    print(f"  min {min(pvals):.3f}; bins with p <= 0.01: {sum(p <= 0.01 for p in pvals)} of 20")
    z9 = float(prior.z_grid[9])
    u = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), (100_000,)))
    mass = np.asarray(prior.mass)[2:-2]
    prob = np.asarray(prior.density)[9, 2:-2]
    wrong = np.interp(
        u,
        np.concatenate([[0], np.cumsum(prob / prob.sum()), [1]]),
        np.concatenate([[mass[0] - 1], mass, [mass[-1] + 1]]),
    )
    off = np.exp(np.asarray(sample_ln_mass(prior, jax.random.PRNGKey(5), jnp.full(100_000, float(prior.z_grid[10])))))
    cdf9 = lambda m: np.asarray(cdf_mass(prior, m, z9))  # noqa: E731
    print(
        f"wrong samplers at bin 9: 2017 cumsum sampler p = {stats.kstest(wrong, cdf9).pvalue:.2e}; "
        f"off-by-one bin p = {stats.kstest(off, cdf9).pvalue:.2e}"
    )

    mock = bigmali.simulate(prior, n_halos=100_000, seed=1)
    resid = np.log(mock.lum_obs) - np.asarray(relation.ln_mu_L(jnp.log(mock.mass), mock.z, relation.HYPERSEED))
    sigma = math.hypot(relation.HYPERSEED.S, relation.SIGMA_OBS)
    n = resid.size
    print(
        f"1e5-halo mock residuals ln L_obs - ln mu_L: mean {resid.mean():+.5f} ({resid.mean() / (sigma / math.sqrt(n)):+.2f} SE), "
        f"std {resid.std(ddof=1):.5f} vs {sigma:.5f} ({(resid.std(ddof=1) - sigma) / (sigma / math.sqrt(2 * n)):+.2f} SE)"
    )

    _, _, expected = lightcone.redshift_distribution(prior, lightcone.square_field(40))
    print(
        f"40 x 40 arcmin lightcone to z = 3.5: {expected:.0f} halos expected vs 115919 in 2017 (ratio {expected / 115919:.2f})"
    )

    times_api = []
    for seed in range(args.repeats):
        start = time.perf_counter()
        bigmali.simulate(prior, n_halos=115_919, seed=seed)
        times_api.append(time.perf_counter() - start)
    times_cli = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(sys.executable).with_name("bigmali"))
        for seed in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(
                [exe, "simulate", "--out", f"{tmp}/m{seed}.fits", "--n-halos", "115919", "--seed", str(seed)],
                check=True,
                capture_output=True,
            )
            times_cli.append(time.perf_counter() - start)
        fits = bigmali.read_catalog(f"{tmp}/m0.fits")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bigmali.write_catalog(fits, f"{tmp}/m0.txt")
        text = bigmali.read_catalog(f"{tmp}/m0.txt")
        same = all(np.array_equal(text.table[c], fits.table[c]) for c in text.table.colnames)
    print(
        f"simulate 115919 halos: API median {statistics.median(times_api):.2f} s, "
        f"`bigmali simulate` (process start, import, write FITS) median {statistics.median(times_cli):.2f} s "
        f"over {args.repeats} runs (target < 10 s)"
    )
    print(f"FITS -> 2017 text -> read: every value identical: {same}")


if __name__ == "__main__":
    main()
