"""One benchmark command: the cost of the collapsed likelihood against the number of halos,
its peak memory, and its time on 1, 2 and 4 devices.

Usage: python benchmarks/run.py [--quick] [--json FILE]

Each figure is measured in a fresh process (so that peak memory is the figure's own), and
each time is the median over repeats of one value-and-gradient of the total collapsed
log-likelihood at the hyperseed, after compilation.

JSON keys (``--json FILE``):

* ``machine``: host, processor count, JAX version.
* ``loglik_grad_seconds``: ``{"<N halos>": seconds}`` for one value and gradient, N from
  10^3 to 10^7 (10^3 to 10^5 with ``--quick``).
* ``peak_rss_gb``: ``{"<N halos>": GB}``, the peak resident memory of the process that made
  and measured that catalog (the mock, its tables, the compiled program and one evaluation).
* ``sharded_time_ratio``: ``{"1": 1.0, "2": t2 / t1, "4": t4 / t1}``, the sharded
  value-and-gradient (``bigmali.likelihood.sharding``) on that many forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count``) at 10^6 halos (10^5 with
  ``--quick``), each against one device; ``sharded_seconds`` holds the times themselves.

Not measured here yet (issue 17): time to ESS 400, ESS per second per model and method, SVI
time and SBC time per dataset (``benchmarks/collapsed.py``, ``benchmarks/latent.py`` and
``benchmarks/sbc.py`` measure them today).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

SIZES = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
QUICK_SIZES = [1_000, 10_000, 100_000]
DEVICES = [1, 2, 4]


def _worker(kind: str, n: int) -> dict:
    """In a fresh process: make an n-halo mock, time one value and gradient (median)."""
    import jax

    import bigmali
    from bigmali.likelihood import quadrature, sharding
    from bigmali.relation import HYPERSEED

    prior = bigmali.load_mass_prior()
    mock = bigmali.simulate(prior, n_halos=n, seed=0)
    data = quadrature.prepare(mock.z, mock.lum_obs, prior)
    if kind == "sharded":
        data, weight = sharding.shard_halos(data)
        f = jax.jit(jax.value_and_grad(sharding.log_likelihood))
        args = (HYPERSEED, data, weight)
    else:
        f = jax.jit(jax.value_and_grad(quadrature.log_likelihood))
        args = (HYPERSEED, data)
    from collapsed import median_ms  # benchmarks/collapsed.py, beside this script

    seconds = median_ms(f, *args, repeats=5 if n >= 1_000_000 else 20) / 1e3
    return {
        "seconds": seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,  # KiB on Linux
        "devices": jax.device_count(),
    }


def _measure(kind: str, n: int, devices: int = 1) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind, str(n)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} at {n} halos on {devices} device(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 10^5; sharding at 10^5")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return
    import jax

    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "jax": jax.__version__}}
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, jax {jax.__version__}")
    out["loglik_grad_seconds"], out["peak_rss_gb"] = {}, {}
    print(f"{'halos':>10} {'value+grad':>12} {'per halo':>10} {'peak RSS':>9}")
    for n in QUICK_SIZES if args.quick else SIZES:
        r = _measure("plain", n)
        out["loglik_grad_seconds"][str(n)], out["peak_rss_gb"][str(n)] = r["seconds"], r["peak_rss_gb"]
        print(f"{n:>10} {r['seconds'] * 1e3:>9.2f} ms {r['seconds'] / n * 1e9:>7.1f} ns {r['peak_rss_gb']:>6.2f} GB")
    n_sharded = 100_000 if args.quick else 1_000_000
    times = {str(d): _measure("sharded", n_sharded, d)["seconds"] for d in DEVICES}
    out["sharded_seconds"] = times
    out["sharded_time_ratio"] = {d: t / times["1"] for d, t in times.items()}
    print(f"sharded value+grad at {n_sharded} halos (forced host devices):")
    for d, t in times.items():
        print(f"  {d} device(s): {t * 1e3:.1f} ms, ratio {out['sharded_time_ratio'][d]:.2f}")
    if args.json:
        from bigmali.files import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w") as handle:
            json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
