"""Figures for the latent-mass and full models against the collapsed model.

Usage:
    python benchmarks/latent.py --model latent_mass [--method nuts|nuts_gibbs] [--n-halos 115919]
        [--chains 2 --warmup 250 --draws 250]
        [--chain-method sequential|parallel] [--reference collapsed_run.nc] [--save-reference collapsed_run.nc]
    python benchmarks/latent.py --model full --n-halos 2000 --chains 4 --warmup 500 --draws 500

On a mock from the hyperseed (seed 0) it prints: the cost of one value-and-gradient of the
model in its data-centred and literal coordinates; the NUTS run's wall time (compilation
included), leapfrog steps per draw, divergences, R-hat, bulk ESS and ESS per second; and
the largest |posterior mean - collapsed mean| / collapsed sd. The collapsed reference is
4 chains x 1000 draws after 1000 warmup, fitted here unless a saved run is given. With
``--chain-method parallel`` the chains run on forced host devices, one per chain. Peak
resident memory of the process is printed last.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--chain-method" in sys.argv and sys.argv[sys.argv.index("--chain-method") + 1] == "parallel":
    chains = sys.argv[sys.argv.index("--chains") + 1] if "--chains" in sys.argv else "2"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={chains}"

import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import bigmali  # noqa: E402
from bigmali.diagnostics import summary  # noqa: E402
from bigmali.models import MODELS  # noqa: E402
from bigmali.relation import HYPER_NAMES  # noqa: E402


def gradient_ms(model, catalog, prior, centring, repeats=20):
    args = (jax.numpy.asarray(catalog.z), jax.numpy.asarray(catalog.lum_obs), prior, None, None, centring)
    info, potential_fn, *_ = initialize_model(jax.random.PRNGKey(0), model, model_args=args)
    value_and_grad = jax.jit(jax.value_and_grad(potential_fn))
    jax.block_until_ready(value_and_grad(info.z))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(value_and_grad(info.z))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("latent_mass", "full"), default="latent_mass")
    parser.add_argument("--n-halos", type=int, default=115919)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=250)
    parser.add_argument("--draws", type=int, default=250)
    parser.add_argument("--chain-method", default="sequential")
    parser.add_argument("--method", choices=("nuts", "nuts_gibbs"), default="nuts")
    parser.add_argument("--reference", help="a saved collapsed NUTS run of the same mock")
    parser.add_argument("--save-reference", help="save the collapsed run fitted here")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, jax {jax.__version__}, "
        f"devices {len(jax.devices())}"
    )
    prior = bigmali.load_mass_prior()
    catalog = bigmali.simulate(prior, n_halos=args.n_halos, seed=0)
    model = MODELS[args.model].model
    for centring in ("data", "none"):
        print(
            f"{args.model} value+gradient, {centring}-centred, {args.n_halos} halos: "
            f"{gradient_ms(model, catalog, prior, centring):.2f} ms (median)"
        )
    if args.reference:
        reference = bigmali.load_run(args.reference)
    else:
        reference = bigmali.fit(catalog, prior=prior, progress=False, mass_draws=0)
        print(f"collapsed NUTS 4 x (1000 + 1000): {reference.attrs['seconds']:.1f} s")
        if args.save_reference:
            bigmali.save_run(reference, args.save_reference)
    ref = summary(reference)["parameters"]
    run = bigmali.fit(
        catalog,
        model=args.model,
        method=args.method,
        prior=prior,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        chain_method=args.chain_method,
        progress=False,
        mass_draws=4,
    )
    got = summary(run, truth="hyperseed")
    seconds = float(run.attrs["seconds"])
    steps = np.asarray(run["sample_stats"]["n_steps"])
    print(
        f"{args.model} {args.method} {args.chains} x ({args.warmup} + {args.draws}), {args.chain_method}: {seconds:.1f} s, "
        f"{steps.mean():.1f} leapfrog steps per draw, divergences {got['divergences']}"
    )
    worst = 0.0
    for name in HYPER_NAMES:
        p, r = got["parameters"][name], ref[name]
        shift = abs(p["mean"] - r["mean"]) / r["sd"]
        worst = max(worst, shift)
        print(
            f"  {name:6s} mean {p['mean']:.5f} sd {p['sd']:.5f} | collapsed {r['mean']:.5f} sd {r['sd']:.5f} | "
            f"shift {shift:.3f} sd | R-hat {p['r_hat']:.3f} ESS bulk {p['ess_bulk']:.0f} "
            f"({p['ess_bulk'] / seconds:.3f}/s) | hyperseed quantile {p['quantile']:.3f}"
        )
    print(f"largest |mean - collapsed mean| / collapsed sd: {worst:.3f} (target <= 0.25)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
