"""Figures for the 2017 importance-sampling methods beside collapsed NUTS (issue 4).

Usage:
    python benchmarks/importance_sampling.py [--sections halo,speed,noise,prior,proposal,pmmh,nuts_is]
        [--reference collapsed_run.nc] [--noise-seeds 10] [--noise-seeds-10k 4] [--k-is 500]
        [--pmmh-iterations 300] [--nuts-is-halos 5000]

On the 115,919-halo mock from the hyperseed (seed 0) it prints, section by section:

* halo: per-halo likelihoods of four test halos (typical, faintest, the peak of the
  luminosity distribution, brightest) by numerical integration (the answer key), importance
  sampling with and without the 2017 clipping, simple Monte Carlo and Laplace: ratio to the
  answer key and n_eff, as in the 2017 table;
* speed: the full-catalog IS log-likelihood at 100 samples per halo (median of 7), its
  throughput, and the same algorithm in plain NumPy timed in the same run;
* noise: the total IS log-likelihood at the hyperprior mean for n = 100, 1,000, 10,000:
  its sd across seeds and its mean minus the exact collapsed value, clipped and unclipped;
* prior: scheme (a), K = 10,000 hyperprior draws weighted by the exact likelihood, and
  K = --k-is draws weighted by the 2017 IS estimate (n = 100, clipped);
* proposal: scheme (b), 4,000 Laplace draws reweighted by the exact posterior (PSIS);
* pmmh: scheme (c) on the full catalog at n = 100;
* nuts_is: scheme (d) on a smaller mock at several n, against collapsed NUTS on it.

Collapsed NUTS (4 x 1000 after 1000 warmup) is the reference; pass a saved run with
``--reference`` to skip refitting it.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import bigmali
from bigmali.likelihood import quadrature as Q
from bigmali.likelihood import single_halo as H
from bigmali.likelihood.catalog_is import is_log_likelihood
from bigmali.relation import ALPHA3, HYPER_NAMES, HYPERPRIOR_MEAN, HYPERSEED, SIGMA_OBS, Hyper

SECTIONS = ("halo", "speed", "noise", "prior", "proposal", "pmmh", "nuts_is")


def test_halos(catalog):
    """Typical (median luminosity), faintest, the luminosity distribution's peak, brightest."""
    r = np.log(catalog.lum_obs)
    counts, edges = np.histogram(r, 200)
    peak = 0.5 * (edges[counts.argmax()] + edges[counts.argmax() + 1])
    return {
        "typical": int(np.argmin(abs(r - np.median(r)))),
        "low outlier": int(np.argmin(r)),
        "peak": int(np.argmin(abs(r - peak))),
        "high outlier": int(np.argmax(r)),
    }


def section_halo(catalog, prior):
    print("\n== single halos at the hyperseed: estimate / numerical integration, and n_eff ==")
    picks = test_halos(catalog)
    idx = np.array(list(picks.values()))
    data = H.halo_data(catalog.z[idx], catalog.lum_obs[idx], prior)
    key = jax.random.PRNGKey(0)
    answer = np.asarray(H.numerical_integration(HYPERSEED, data, prior).log_like)
    exact = np.asarray(Q.log_likelihood_halos(HYPERSEED, Q.prepare(catalog.z[idx], catalog.lum_obs[idx], prior)))
    methods = {
        "IS 1e4 (2017 clip)": H.importance_sampling(key, HYPERSEED, data, prior, n=10_000, clip=True),
        "IS 1e4 (no clip)": H.importance_sampling(key, HYPERSEED, data, prior, n=10_000, clip=False),
        "IS 1e3 (2017 clip)": H.importance_sampling(key, HYPERSEED, data, prior, n=1000, clip=True),
        "IS 1e3 (no clip)": H.importance_sampling(key, HYPERSEED, data, prior, n=1000, clip=False),
        "simple MC 1e4": H.simple_monte_carlo(key, HYPERSEED, data, prior, n=10_000),
        "simple MC 1e3": H.simple_monte_carlo(key, HYPERSEED, data, prior, n=1000),
        "Laplace": H.laplace(HYPERSEED, data, prior),
    }
    print(f"{'halo':<14}{'L_obs':>11}{'z':>6}{'ln P (answer key)':>19}{'exact - key':>13}")
    for j, (name, i) in enumerate(picks.items()):
        print(
            f"{name:<14}{catalog.lum_obs[i]:>11.4g}{catalog.z[i]:>6.2f}{answer[j]:>19.5f}{exact[j] - answer[j]:>13.2e}"
        )
    print(f"{'method':<22}" + "".join(f"{name:>26}" for name in picks))
    for label, est in methods.items():
        ratio = np.exp(np.asarray(est.log_like) - answer)
        n_eff = np.asarray(est.n_eff)
        cells = "".join(
            f"{f'{ratio[j]:.4f}' + ('' if np.isnan(n_eff[j]) else f' (n_eff {n_eff[j]:.0f})'):>26}"
            for j in range(len(picks))
        )
        print(f"{label:<22}{cells}")
    seeds = 20
    print(f"IS 1e4 without clipping over {seeds} seeds: mean and sd of the ratio to the answer key")
    ratios = np.array(
        [
            np.exp(
                np.asarray(
                    H.importance_sampling(jax.random.PRNGKey(s), HYPERSEED, data, prior, n=10_000, clip=False).log_like
                )
                - answer
            )
            for s in range(seeds)
        ]
    )
    print("  " + ", ".join(f"{name}: {m:.4f} +- {s:.4f}" for name, m, s in zip(picks, ratios.mean(0), ratios.std(0))))


def numpy_2017(catalog, prior, hyper: Hyper, n: int, rng) -> float:
    """The 2017 algorithm in plain NumPy (vectorised over halos, chunked), for timing."""
    mass = np.asarray(prior.mass)
    density = np.asarray(prior.density)
    z_grid = np.asarray(prior.z_grid)
    rows = np.clip(np.searchsorted(z_grid, catalog.z, side="left"), 0, len(z_grid) - 1)
    knots = slice(2, len(mass) - 2)
    m_lo, m_hi = mass[knots.start], mass[knots.stop - 1]
    a1, a2, a4, s = hyper
    s_q = H.S_Q_FACTOR * s
    total = 0.0
    chunk = max(1, 2_000_000 // n)
    for start in range(0, len(catalog), chunk):
        sl = slice(start, start + chunk)
        lobs, z, row = catalog.lum_obs[sl], catalog.z[sl], rows[sl]
        lum = np.exp(np.log(lobs) + SIGMA_OBS * rng.standard_normal((n, lobs.size)))
        mu_m = ALPHA3 * (lum / (np.exp(a1) * (1 + z) ** a4)) ** (1 / a2)
        m = np.clip(np.exp(np.log(mu_m) + s_q * rng.standard_normal(lum.shape)), m_lo, m_hi)
        mu_l = np.exp(a1) * (m / ALPHA3) ** a2 * (1 + z) ** a4
        p_m = np.empty_like(m)
        for b in np.unique(row):
            cols = row == b
            p_m[:, cols] = np.interp(m[:, cols], mass, density[b])

        def lognormal(x, mu, sigma):
            return np.exp(-0.5 * (np.log(x / mu) / sigma) ** 2) / (x * sigma * math.sqrt(2 * math.pi))

        w = (
            lognormal(lobs, lum, SIGMA_OBS)
            * lognormal(lum, mu_l, s)
            * p_m
            / (lognormal(lum, lobs, SIGMA_OBS) * lognormal(m, mu_m, s_q))
        )
        total += float(np.sum(np.log(np.mean(w, axis=0))))
    return total


def section_speed(catalog, prior):
    print("\n== full-catalog IS log-likelihood, 100 samples per halo (2017 clipping), at the hyperprior mean ==")
    data = H.halo_data(catalog.z, catalog.lum_obs, prior)
    f = jax.jit(lambda k: is_log_likelihood(k, HYPERPRIOR_MEAN, data, prior, 100, True))
    jax.block_until_ready(f(jax.random.PRNGKey(0)))
    times = []
    for s in range(7):
        t = time.perf_counter()
        jax.block_until_ready(f(jax.random.PRNGKey(s + 1)))
        times.append(time.perf_counter() - t)
    jax_s = statistics.median(times)
    rng = np.random.default_rng(0)
    numpy_times = []
    values = []
    for _ in range(3):
        t = time.perf_counter()
        values.append(numpy_2017(catalog, prior, HYPERPRIOR_MEAN, 100, rng))
        numpy_times.append(time.perf_counter() - t)
    numpy_s = statistics.median(numpy_times)
    n_terms = len(catalog) * 100
    print(
        f"bigmali (JAX, float64): median {jax_s:.3f} s over 7 ({min(times):.3f}-{max(times):.3f}); "
        f"{n_terms / jax_s / 1e6:.1f} M halo-samples/s"
    )
    print(
        f"plain NumPy 2017 algorithm: median {numpy_s:.3f} s over 3; {n_terms / numpy_s / 1e6:.2f} M halo-samples/s; "
        f"its value {statistics.mean(values):.1f}"
    )
    print(f"speed-up over NumPy: {numpy_s / jax_s:.1f}x; the 2017 C++ took ~7 s on a 2.4 GHz laptop")


def section_noise(catalog, prior, seeds: int, seeds_10k: int):
    print("\n== noise and bias of the total IS log-likelihood at the hyperprior mean ==")
    data = H.halo_data(catalog.z, catalog.lum_obs, prior)
    exact = float(Q.log_likelihood(HYPERPRIOR_MEAN, Q.prepare(catalog.z, catalog.lum_obs, prior)))
    print(f"exact collapsed ln L = {exact:.3f}; 2017 sd across runs: 51.1 (n=100), 13.8 (1,000), 3.9 (10,000)")
    print(f"{'n':>7}{'clip':>6}{'seeds':>7}{'sd':>10}{'mean - exact':>15}{'s per eval':>12}")
    for n in (100, 1000, 10_000):
        for clip in (True, False):
            f = jax.jit(lambda k, n=n, clip=clip: is_log_likelihood(k, HYPERPRIOR_MEAN, data, prior, n, clip))
            k = seeds if n < 10_000 else seeds_10k
            values, times = [], []
            for s in range(k):
                t = time.perf_counter()
                values.append(float(f(jax.random.PRNGKey(1000 + s))))
                times.append(time.perf_counter() - t)
            print(
                f"{n:>7}{str(clip):>6}{k:>7}{np.std(values, ddof=1):>10.2f}{np.mean(values) - exact:>15.2f}"
                f"{statistics.median(times):>12.2f}",
                flush=True,
            )


def reference_run(catalog, prior, path):
    if path:
        return bigmali.load_run(path)
    print("\n(fitting the collapsed NUTS reference, 4 x (1000 + 1000))", flush=True)
    return bigmali.fit(catalog, prior=prior, progress=False, mass_draws=0, log_likelihood=0)


def shifts(run, ref) -> str:
    got, base = bigmali.summary(run), bigmali.summary(ref)
    return ", ".join(
        f"{n} {(got['parameters'][n]['mean'] - base['parameters'][n]['mean']) / base['parameters'][n]['sd']:+.2f}"
        for n in HYPER_NAMES
    )


def section_prior(catalog, prior, ref, k_is: int):
    print("\n== scheme (a), the 2017 scheme: hyperprior draws weighted by the likelihood ==")
    for likelihood, k, extra in (("exact", 10_000, {}), ("is", k_is, {"is_samples": 100, "is_clip": True})):
        run = bigmali.fit(
            catalog,
            prior=prior,
            method="is_prior",
            n_hyper=k,
            is_likelihood=likelihood,
            progress=False,
            mass_draws=0,
            log_likelihood=0,
            **extra,
        )
        w = bigmali.summary(run)["weights"]
        lw = np.asarray(run["sample_stats"]["log_weight_raw"]).ravel()
        best = int(np.argmax(lw))
        ref_s = bigmali.summary(ref)["parameters"]
        dist = ", ".join(
            f"{n} {(float(np.ravel(run['posterior'][n])[best]) - ref_s[n]['mean']) / ref_s[n]['sd']:+.1f}"
            for n in HYPER_NAMES
        )
        ll = np.asarray(run["sample_stats"]["log_likelihood_estimate"]).ravel()
        print(
            f"K = {k}, likelihood {likelihood}{' (n=100, clipped)' if extra else ''}: {run.attrs['seconds']:.1f} s; "
            f"weight ESS {w['ess']:.2f}, largest share {w['max_share']:.4f}, Pareto k-hat {w['pareto_k']:.2f}"
        )
        print(f"  heaviest draw, in collapsed-NUTS posterior sds from its mean: {dist}")
        print(
            f"  its ln L {ll[best]:.1f}; the two largest ln L differ by {np.sort(ll)[-1] - np.sort(ll)[-2]:.1f}; "
            f"spread of ln L over the draws (sd) {np.std(ll):.1f}"
        )
    data = Q.prepare(catalog.z, catalog.lum_obs, prior)
    at_seed = float(Q.log_likelihood(HYPERSEED, data))
    print(
        f"exact ln L at the hyperseed {at_seed:.1f}; at the collapsed posterior mean "
        f"{float(Q.log_likelihood(Hyper(*(bigmali.summary(ref)['parameters'][n]['mean'] for n in HYPER_NAMES)), data)):.1f}"
    )
    print(
        "collapsed NUTS on the same catalog: "
        + ", ".join(
            f"{n} quantile {p['quantile']:.3f}"
            for n, p in bigmali.summary(ref, truth="hyperseed")["parameters"].items()
        )
    )


def section_proposal(catalog, prior, ref):
    print("\n== scheme (b): 4,000 Laplace draws reweighted by the exact posterior, PSIS ==")
    run = bigmali.fit(catalog, prior=prior, method="is_proposal", progress=False, mass_draws=0, log_likelihood=0)
    s = bigmali.summary(run, truth="hyperseed")
    w = s["weights"]
    print(
        f"{run.attrs['seconds']:.1f} s; weight ESS {w['ess']:.1f}, largest share {w['max_share']:.5f}, Pareto k-hat {w['pareto_k']:.3f}"
    )
    print(f"mean - NUTS mean, in NUTS sd: {shifts(run, ref)}")
    print(
        "sd / NUTS sd: "
        + ", ".join(
            f"{n} {s['parameters'][n]['sd'] / bigmali.summary(ref)['parameters'][n]['sd']:.3f}" for n in HYPER_NAMES
        )
    )


def section_pmmh(catalog, prior, ref, iterations: int):
    print(
        f"\n== scheme (c): pseudo-marginal MH on the IS likelihood (n=100), 1 chain x {iterations}, from the Laplace mode =="
    )
    for clip in (True, False):
        run = bigmali.fit(
            catalog,
            prior=prior,
            method="pmmh",
            chains=1,
            warmup=0,
            draws=iterations,
            is_samples=100,
            is_clip=clip,
            progress=False,
            mass_draws=0,
            log_likelihood=0,
        )
        s = bigmali.summary(run)
        print(
            f"clip {clip}: {run.attrs['seconds']:.1f} s ({run.attrs['seconds'] / iterations:.2f} s per iteration); "
            f"acceptance rate {s['acceptance_rate']:.3f}; mean - NUTS mean in NUTS sd: {shifts(run, ref)}"
        )


def section_nuts_is(prior, n_halos: int):
    print(f"\n== scheme (d): NUTS on the IS likelihood with fixed random numbers, {n_halos}-halo mock ==")
    catalog = bigmali.simulate(prior, n_halos=n_halos, seed=5)
    ref = bigmali.fit(
        catalog, prior=prior, chains=2, warmup=500, draws=1000, progress=False, mass_draws=0, log_likelihood=0
    )
    print("reference: collapsed NUTS 2 x (500 + 1000)")
    # Without the 2017 clip at several n, then the 2017 clip at n = 100.
    for n, clip in ((10, False), (30, False), (100, False), (300, False), (100, True)):
        run = bigmali.fit(
            catalog,
            prior=prior,
            method="nuts_is",
            is_samples=n,
            is_clip=clip,
            chains=1,
            warmup=150,
            draws=300,
            progress=False,
            mass_draws=0,
            log_likelihood=0,
        )
        s = bigmali.summary(run)
        steps = float(np.mean(np.asarray(run["sample_stats"]["n_steps"])))
        print(
            f"n = {n:>4} ({'2017 clip' if clip else 'no clip'}): {run.attrs['seconds']:.1f} s, "
            f"{steps:.1f} steps/draw, {s['divergences']} divergences; "
            f"mean - collapsed mean in collapsed sd: {shifts(run, ref)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--reference", default=None, help="a saved collapsed NUTS run on the hyperseed mock (seed 0)")
    parser.add_argument("--noise-seeds", type=int, default=10)
    parser.add_argument("--noise-seeds-10k", type=int, default=4)
    parser.add_argument("--k-is", type=int, default=500, help="scheme (a) hyper-samples with the IS likelihood")
    parser.add_argument("--pmmh-iterations", type=int, default=300)
    parser.add_argument("--nuts-is-halos", type=int, default=5000)
    args = parser.parse_args()
    sections = args.sections.split(",")
    print(
        f"machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"python {platform.python_version()}, jax {jax.__version__}, float64 {jnp.zeros(1).dtype == jnp.float64}"
    )
    prior = bigmali.load_mass_prior()
    catalog = bigmali.simulate(prior, n_halos=115_919, seed=0)
    start = time.perf_counter()
    if "halo" in sections:
        section_halo(catalog, prior)
    if "speed" in sections:
        section_speed(catalog, prior)
    if "noise" in sections:
        section_noise(catalog, prior, args.noise_seeds, args.noise_seeds_10k)
    ref = None
    if any(s in sections for s in ("prior", "proposal", "pmmh")):
        ref = reference_run(catalog, prior, args.reference)
    if "prior" in sections:
        section_prior(catalog, prior, ref, args.k_is)
    if "proposal" in sections:
        section_proposal(catalog, prior, ref)
    if "pmmh" in sections:
        section_pmmh(catalog, prior, ref, args.pmmh_iterations)
    if "nuts_is" in sections:
        section_nuts_is(prior, args.nuts_is_halos)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\ntotal {time.perf_counter() - start:.0f} s; peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
