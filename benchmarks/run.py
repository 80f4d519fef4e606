"""One benchmark command: the cost of the collapsed likelihood against the number of halos,
its peak memory and its time on 1, 2 and 4 devices; the time a user waits for a fit, start
to finish; and SBC's time per dataset.

Usage: python benchmarks/run.py [--quick] [--json FILE] [--only SECTION ...]

Sections (``--only``): ``loglik`` (likelihood against N, peak memory), ``sharded``, ``is``
(the 2017 importance-sampling likelihood), ``fit`` and ``sbc``; all by default. Each figure is measured in a fresh process (so that peak memory
is the figure's own). The likelihood's times are medians over repeats of one
value-and-gradient of the total collapsed log-likelihood at the hyperseed, after
compilation. The fit's are wall-clock times of the ``bigmali`` commands a user types, from
start to finish (start-up, compilation, sampling, post-processing and writing the run).

JSON keys (``--json FILE``):

* ``machine``: host, processor count, JAX version.
* ``loglik_grad_seconds``: ``{"<N halos>": seconds}`` for one value and gradient, N from
  10^3 to 10^7 (10^3 to 10^5 with ``--quick``), and 115,919 (the 2017 catalog's size).
* ``peak_rss_gb``: ``{"<N halos>": GB}``, the peak resident memory of the process that made
  and measured that catalog (the mock, its tables, the compiled program and one evaluation).
* ``sharded_time_ratio``: ``{"1": 1.0, "2": t2 / t1, "4": t4 / t1}``, the sharded
  value-and-gradient (``bigmali.likelihood.sharding``) on that many forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count``) at 10^6 halos (10^5 with
  ``--quick``), each against one device; ``sharded_seconds`` holds the times themselves.

* ``is_seconds``: one evaluation of the 2017 importance-sampling log-likelihood
  (:func:`bigmali.likelihood.catalog_is.is_log_likelihood`, 100 samples per halo, clipped as
  in 2017) of a 115,919-halo mock (10^4 with ``--quick``), median; ``is_weights_per_second``:
  halos x samples / that time.

* ``fit_halos``: the mock the fit figures use (``bigmali simulate --n-halos N --seed 0``;
  115,919 halos, the 2017 catalog's size, or 10^4 with ``--quick``).
* ``time_to_ess400_seconds``: median wall time of ``bigmali fit MOCK --target-ess 400``
  (collapsed NUTS, 4 chains, until every hyperparameter has bulk and tail ESS >= 400 and
  R-hat <= 1.01), each repeat with an empty JAX compilation cache: what a new user waits.
  ``time_to_ess400_warm_seconds``: the same with the cache the first repeat filled (a
  second fit of a catalog of that size).
* ``default_fit_seconds``: ``bigmali fit MOCK`` at its defaults (4 x (1000 + 1000) draws),
  one run, empty cache, measured in the same invocation.
* ``svi_seconds``: ``bigmali fit MOCK --method svi`` at its defaults, one run, empty cache.
* ``fit_runs``: per command: wall seconds, peak RSS (GB), draws per chain, the smallest
  bulk and tail ESS over the hyperparameters, the largest R-hat, and ``ess_per_second``
  (smallest bulk ESS / wall time) for the NUTS runs.
* ``sbc_seconds_per_dataset``: median seconds per dataset of ``run_sbc`` (collapsed NUTS,
  its defaults) over K mocks of 10^4 halos (K = 10, 3 with ``--quick``), in one fresh
  process with an empty cache; ``sbc_wall_seconds`` is that process's wall time (the first
  dataset's compilation included).

ESS per second of the latent models is measured by ``benchmarks/latent.py`` (at the sizes
they can be fitted at), not here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [1_000, 10_000, 100_000, 115_919, 1_000_000, 10_000_000]  # 115,919: the 2017 catalog's size
QUICK_SIZES = [1_000, 10_000, 100_000, 115_919]
DEVICES = [1, 2, 4]
SECTIONS = ["loglik", "sharded", "is", "fit", "sbc"]
IS_SAMPLES = 100
FIT_HALOS, QUICK_FIT_HALOS = 115_919, 10_000
FIT_REPEATS, QUICK_FIT_REPEATS = 3, 1
SBC_DATASETS, QUICK_SBC_DATASETS, SBC_HALOS = 10, 3, 10_000
BIGMALI = str(Path(sys.executable).with_name("bigmali"))  # the console script beside this Python


def _worker(kind: str, n: int) -> dict:
    """In a fresh process: make an n-halo mock, time one value and gradient (median); or
    (``sbc``) run SBC over n datasets of ``SBC_HALOS`` halos."""
    if kind == "sbc":
        return _sbc_worker(n)
    if kind == "is":
        return _is_worker(n)
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

    seconds = median_ms(f, *args, repeats=10 if n >= 1_000_000 else 100) / 1e3
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


def _is_worker(n: int) -> dict:
    """One evaluation of the catalog IS log-likelihood of an n-halo mock, median over repeats."""
    import jax

    import bigmali
    from bigmali.likelihood.catalog_is import is_log_likelihood
    from bigmali.likelihood.single_halo import halo_data
    from bigmali.relation import HYPERSEED

    prior = bigmali.load_mass_prior()
    mock = bigmali.simulate(prior, n_halos=n, seed=0)
    data = halo_data(mock.z, mock.lum_obs, prior)
    f = jax.jit(lambda key, hyper, data: is_log_likelihood(key, hyper, data, prior, IS_SAMPLES))
    from collapsed import median_ms  # benchmarks/collapsed.py, beside this script

    seconds = median_ms(f, jax.random.PRNGKey(0), HYPERSEED, data, repeats=5) / 1e3
    return {"seconds": seconds, "weights_per_second": n * IS_SAMPLES / seconds}


def _sbc_worker(n_datasets: int) -> dict:
    import numpy as np

    from bigmali.diagnostics.sbc import run_sbc

    with tempfile.TemporaryDirectory() as work:
        result = run_sbc(Path(work) / "sbc.jsonl", n_datasets, SBC_HALOS, seed=0, progress=False)
    uniformity = result.uniformity()
    return {
        "median_seconds": float(np.median(result.seconds)),
        "datasets": int(result.dataset.size),
        "rejected": [name for name, u in uniformity.items() if u["rejected"]],
    }


def _command(argv: list[str], cache: Path) -> dict:
    """Run a bigmali command with ``cache`` as its JAX compilation cache: wall seconds and
    the command's own peak RSS (GB)."""
    env = {**os.environ, "BIGMALI_JAX_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{stderr[-3000:]}")
    return {"seconds": wall, "peak_rss_gb": usage.ru_maxrss / 1e6}


def _fit_run(argv: list[str], cache: Path, out: Path) -> dict:
    """One timed ``bigmali fit``, and what its run holds: draws, smallest ESS, largest R-hat."""
    import bigmali
    from bigmali.datatree import attr_json

    figures = _command([*argv, "--out", str(out), "--quiet", "--overwrite"], cache)
    run = bigmali.load_run(out)
    params = bigmali.summary(run, influence=False)["parameters"]
    figures["draws_per_chain"] = int(run["posterior"].sizes["draw"])
    figures["chains"] = int(run["posterior"].sizes["chain"])
    figures["max_draws"] = attr_json(run, "config").get("max_draws")
    for key in ("ess_bulk", "ess_tail"):
        figures[f"min_{key}"] = min(p[key] for p in params.values())
    figures["max_r_hat"] = max(p["r_hat"] for p in params.values())
    if "svi_loss" not in run.children:
        figures["ess_per_second"] = figures["min_ess_bulk"] / figures["seconds"]
    return figures


def _fit_figures(quick: bool) -> dict:
    n = QUICK_FIT_HALOS if quick else FIT_HALOS
    repeats = QUICK_FIT_REPEATS if quick else FIT_REPEATS
    work = Path(tempfile.mkdtemp(prefix="bigmali-bench-"))
    try:
        mock = work / "mock.fits"
        _command([BIGMALI, "simulate", "--out", str(mock), "--n-halos", str(n), "--seed", "0"], work / "cache-sim")
        fit = [BIGMALI, "fit", str(mock)]
        runs = {}
        for r in range(repeats):
            runs[f"target_ess_400_cold_{r}"] = _fit_run(
                [*fit, "--target-ess", "400"], work / f"cache-{r}", work / "r.nc"
            )
        for r in range(repeats):
            runs[f"target_ess_400_warm_{r}"] = _fit_run([*fit, "--target-ess", "400"], work / "cache-0", work / "r.nc")
        runs["default"] = _fit_run(fit, work / "cache-default", work / "r.nc")
        runs["svi"] = _fit_run([*fit, "--method", "svi"], work / "cache-svi", work / "r.nc")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(prefix):
        return statistics.median(v["seconds"] for k, v in runs.items() if k.startswith(prefix))

    return {
        "fit_halos": n,
        "time_to_ess400_seconds": median("target_ess_400_cold"),
        "time_to_ess400_warm_seconds": median("target_ess_400_warm"),
        "default_fit_seconds": runs["default"]["seconds"],
        "svi_seconds": runs["svi"]["seconds"],
        "fit_runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 10^5; sharding at 10^5")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections only")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return
    import jax

    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "jax": jax.__version__}}
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, jax {jax.__version__}")
    if "loglik" in args.only:
        out["loglik_grad_seconds"], out["peak_rss_gb"] = {}, {}
        print(f"{'halos':>10} {'value+grad':>12} {'per halo':>10} {'peak RSS':>9}")
        for n in QUICK_SIZES if args.quick else SIZES:
            r = _measure("plain", n)
            out["loglik_grad_seconds"][str(n)], out["peak_rss_gb"][str(n)] = r["seconds"], r["peak_rss_gb"]
            print(
                f"{n:>10} {r['seconds'] * 1e3:>9.2f} ms {r['seconds'] / n * 1e9:>7.1f} ns {r['peak_rss_gb']:>6.2f} GB"
            )
    if "sharded" in args.only:
        n_sharded = 100_000 if args.quick else 1_000_000
        times = {str(d): _measure("sharded", n_sharded, d)["seconds"] for d in DEVICES}
        out["sharded_seconds"] = times
        out["sharded_time_ratio"] = {d: t / times["1"] for d, t in times.items()}
        print(f"sharded value+grad at {n_sharded} halos (forced host devices):")
        for d, t in times.items():
            print(f"  {d} device(s): {t * 1e3:.1f} ms, ratio {out['sharded_time_ratio'][d]:.2f}")
    if "is" in args.only:
        n_is = QUICK_FIT_HALOS if args.quick else FIT_HALOS
        r = _measure("is", n_is)
        out["is_seconds"], out["is_weights_per_second"] = r["seconds"], r["weights_per_second"]
        print(
            f"2017 IS likelihood, {n_is} halos x {IS_SAMPLES} samples: {r['seconds'] * 1e3:.0f} ms "
            f"({r['weights_per_second'] / 1e6:.1f} million weights per second)"
        )
    if "fit" in args.only:
        out.update(_fit_figures(args.quick))
        print(f"bigmali fit on a {out['fit_halos']}-halo mock (wall, start to finish):")
        print(f"{'run':<24}{'wall':>9}{'RSS':>8}{'draws':>7}{'ESS bulk':>10}{'ESS tail':>10}{'R-hat':>7}{'ESS/s':>8}")
        for name, r in out["fit_runs"].items():
            print(
                f"{name:<24}{r['seconds']:>7.1f} s{r['peak_rss_gb']:>6.2f}GB{r['draws_per_chain']:>7}"
                f"{r['min_ess_bulk']:>10.0f}{r['min_ess_tail']:>10.0f}{r['max_r_hat']:>7.3f}"
                f"{r.get('ess_per_second', float('nan')):>8.1f}"
            )
        print(
            f"time to ESS 400: {out['time_to_ess400_seconds']:.1f} s (empty cache, median), "
            f"{out['time_to_ess400_warm_seconds']:.1f} s (warm); defaults (4 x 1000): "
            f"{out['default_fit_seconds']:.1f} s; SVI: {out['svi_seconds']:.1f} s"
        )
    if "sbc" in args.only:
        k = QUICK_SBC_DATASETS if args.quick else SBC_DATASETS
        start = time.perf_counter()
        r = _measure("sbc", k)
        out["sbc_seconds_per_dataset"], out["sbc_wall_seconds"] = r["median_seconds"], time.perf_counter() - start
        print(
            f"SBC, {k} x {SBC_HALOS} halos (collapsed NUTS): {r['median_seconds']:.2f} s per dataset (median), "
            f"{out['sbc_wall_seconds']:.1f} s wall; rejected: {r['rejected'] or 'none'}"
        )
    if args.json:
        from bigmali.files import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w") as handle:
            json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
