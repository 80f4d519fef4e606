"""Figures for real survey catalogs (issue 16): per-halo measurement errors and flux limits.

Usage: python benchmarks/selection.py [--n-halos N] [--repeats R] [--skip-reference] [--skip-fit]
       [--skip-malmquist] [--skip-latent] [--sbc-datasets K] [--sbc-halos N] [--sbc-out FILE]

Prints, for a mock of N halos (115,919 by default, the 2017 catalog's size) drawn at the
hyperseed with per-halo errors log-uniform in [0.02, 0.3] (``bigmali simulate --lum-obs-err
0.02,0.3``):

* the collapsed likelihood with those errors against brute force (Simpson with 10^4 masses
  at each halo's own sigma_k): the difference of the totals and the worst halo;
* the same with a flux limit as well (each halo divided by its detection probability,
  against Simpson of the prior times the normal CDF);
* the detection term summed from interpolation nodes against the per-halo sum, on N halos
  above a rising limit table (bigmali.likelihood.detection), value and gradient;
* value and gradient (median of R calls, after compilation) with errors, with errors and
  that limit (as a fit computes it, and with the per-halo read that a per-halo limit
  needs), and of the fixed-sigma likelihood of the complete catalog, all at N halos and
  called in turn so that all see the same load; and the ratios to the fixed-sigma figure
  (target: at most 2);
* collapsed NUTS (4 chains, to bulk and tail ESS 400) with and without the errors;
* Malmquist bias, per seed (1 and 2): a Poisson lightcone expecting 200,000 halos at the
  hyperseed with errors in [0.02, 0.3], cut by a limit L_lim(z) = L0 (1 + z)^2 with L0 set
  to keep half of them; collapsed NUTS to ESS 400 ignoring both (no limit, sigma_obs =
  0.05), modelling both with the truncated likelihood, and with the extended likelihood:
  the hyperseed's distance in posterior sds, its posterior quantile and the posterior sds;
* latent_mass against collapsed on 2,000 halos of such a mock (4 x 500 draws each): the
  difference of the posterior means in collapsed sds (target: within 0.1);
* SBC: K datasets (100) of N detected halos (10^4) with errors and the same rising limit,
  collapsed NUTS, resumable through ``--sbc-out``: the uniformity tests and the time.
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
from bigmali.catalog import Catalog
from bigmali.diagnostics import format_summary, summary
from bigmali.likelihood import detection as D
from bigmali.likelihood import quadrature as Q
from bigmali.models import collapsed
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


def reference_log_detection(hyper, z, lum_lim, prior, err, chunk: int = 1024, n: int = 10_000):
    """Brute force ln P(L_obs > L_lim | z): Simpson over the tabulated masses of the prior
    density times the normal CDF (sharing only the prior density and the relation)."""
    import math

    from jax.scipy.special import log_ndtr

    from bigmali import relation
    from bigmali.mass_prior import log_prob_ln_mass, tabulated_knots

    knots = tabulated_knots(prior)
    x = jnp.linspace(math.log(float(prior.mass[knots.start])), math.log(float(prior.mass[knots.stop - 1])), n + 1)
    log_w = jnp.log(jnp.ones(n + 1).at[1:-1:2].set(4.0).at[2:-1:2].set(2.0) * (x[1] - x[0]) / 3.0)

    @jax.jit
    def block(zb, lb, sb):
        mu = relation.ln_mu_L(x[None, :], zb[:, None], hyper)
        terms = log_prob_ln_mass(prior, x[None, :], zb[:, None]) + log_ndtr((mu - lb[:, None]) / sb[:, None])
        return jax.nn.logsumexp(terms + log_w[None, :], axis=1)

    sigma = np.asarray(relation.sigma_total(hyper.S, err))
    columns = (np.asarray(z), np.log(lum_lim), sigma)
    out = []
    for start in range(0, len(z), chunk):
        parts = [
            np.pad(c[start : start + chunk], (0, max(0, chunk - len(c[start : start + chunk]))), mode="edge")
            for c in columns
        ]
        out.append(np.asarray(block(*map(jnp.asarray, parts)))[: min(chunk, len(z) - start)])
    return np.concatenate(out)


def rising_limit(catalog, keep: float = 0.5):
    """L_lim(z) = L0 (1 + z)^2 with L0 such that a fraction ``keep`` of ``catalog`` is above it."""
    from bigmali.selection import FluxLimit

    ln_l0 = np.quantile(np.log(catalog.lum_obs) - 2 * np.log1p(catalog.z), 1 - keep)
    z = np.linspace(0.0, 3.6, 73)
    return FluxLimit.table(z, np.exp(ln_l0) * (1 + z) ** 2)


def _distance(result) -> str:
    return ", ".join(
        f"{k} {(HYPERSEED._asdict()[k] - p['mean']) / p['sd']:+.1f} sd (quantile {p['quantile']:.3f})"
        for k, p in result["parameters"].items()
    )


MALMQUIST_FIELD_ARCMIN = 40.0 * math.sqrt(200_000 / 662_056.09)
"""A square field whose Poisson lightcone expects 200,000 halos (the 40 arcmin field of the
default prior expects 662,056)."""


def malmquist(prior, seeds=(1,)) -> None:
    """Per seed: a Poisson lightcone expecting 200,000 halos, with errors in [0.02, 0.3], cut
    by the rising limit that keeps half of them; collapsed NUTS to ESS 400 ignoring both,
    with the truncated likelihood, and with the extended one (the lightcone is the Poisson
    process that the extended likelihood describes)."""
    whole = bigmali.simulate(prior, n_halos=200_000, seed=1, lum_obs_err=(0.02, 0.3))
    limit = rising_limit(whole)
    for seed in seeds:
        mock = bigmali.simulate(
            prior, field_arcmin=MALMQUIST_FIELD_ARCMIN, seed=seed, lum_obs_err=(0.02, 0.3), flux_limit=limit
        )
        drawn = mock.meta["N_DRAWN"]
        print(
            f"\nMalmquist, seed {seed}: {limit.describe()}; kept {len(mock)} of {drawn} halos drawn "
            f"({len(mock) / drawn:.1%}) in a {MALMQUIST_FIELD_ARCMIN:.2f} arcmin field"
        )
        naive = Catalog.from_arrays(z=mock.z, lum_obs=mock.lum_obs, meta=mock.meta)
        for label, cat, flux_limit, selection in (
            ("ignoring the limit and the errors", naive, "none", "truncated"),
            ("modelling both, truncated likelihood", mock, None, "truncated"),
            ("modelling both, extended likelihood", mock, None, "extended"),
        ):
            start = time.perf_counter()
            run = bigmali.fit(
                cat,
                prior=prior,
                target_ess=400,
                progress=False,
                mass_draws=0,
                log_likelihood=0,
                flux_limit=flux_limit,
                selection=selection,
            )
            result = summary(run, truth="hyperseed")
            print(
                f"collapsed NUTS to ESS 400, {label}: {time.perf_counter() - start:.1f} s; hyperseed: {_distance(result)}"
            )
            print("  posterior sd: " + ", ".join(f"{k} {p['sd']:.3g}" for k, p in result["parameters"].items()))


def latent_against_collapsed(prior) -> None:
    whole = bigmali.simulate(prior, n_halos=4000, seed=2, lum_obs_err=(0.02, 0.3))
    limit = rising_limit(whole)
    mock = bigmali.simulate(prior, n_halos=4000, seed=2, lum_obs_err=(0.02, 0.3), flux_limit=limit)
    runs = {}
    for model in ("collapsed", "latent_mass"):
        start = time.perf_counter()
        run = bigmali.fit(mock, model=model, prior=prior, warmup=500, draws=500, progress=False, mass_draws=0)
        runs[model] = summary(run)["parameters"]
        print(
            f"\n{model} on {len(mock)} flux-limited halos with errors, 4 x 500 draws: {time.perf_counter() - start:.1f} s"
        )
    ref = runs["collapsed"]
    print(
        "latent_mass - collapsed posterior means, in collapsed sds (target within 0.1): "
        + ", ".join(f"{k} {(runs['latent_mass'][k]['mean'] - p['mean']) / p['sd']:+.3f}" for k, p in ref.items())
    )


def sbc_with_selection(prior, n_datasets: int, n_halos: int, out: str) -> None:
    """SBC of collapsed NUTS on mocks of ``n_halos`` detected halos with per-halo errors in
    [0.02, 0.3] and the rising limit of the Malmquist mock (resumable: the same ``out`` file
    continues where it stopped)."""
    from bigmali.diagnostics.sbc import format_sbc, run_sbc

    whole = bigmali.simulate(prior, n_halos=200_000, seed=1, lum_obs_err=(0.02, 0.3))
    limit = rising_limit(whole)
    start = time.perf_counter()
    result = run_sbc(out, n_datasets, n_halos, prior=prior, lum_obs_err=(0.02, 0.3), flux_limit=limit, progress=False)
    print(
        f"\nSBC with {limit.describe()} and errors in [0.02, 0.3] ({out}; this call {time.perf_counter() - start:.0f} s):"
    )
    print(format_sbc(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-halos", type=int, default=115_919)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-malmquist", action="store_true")
    parser.add_argument("--malmquist-seeds", default="1,2", help="comma-separated mock seeds")
    parser.add_argument("--skip-latent", action="store_true")
    parser.add_argument("--sbc-datasets", type=int, default=100, help="0 skips SBC")
    parser.add_argument("--sbc-halos", type=int, default=10_000)
    parser.add_argument("--sbc-out", default="sbc_selection.jsonl", help="resumed if it exists")
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
    lum_lim = catalog.lum_obs * np.exp(-np.random.default_rng(1).exponential(1.0, len(catalog)))
    start = time.perf_counter()
    limited = Q.prepare(catalog.z, catalog.lum_obs, prior, lum_obs_err=err, lum_lim=lum_lim)
    print(f"prepare with a flux limit (the detection table too): {time.perf_counter() - start:.2f} s")
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
        start = time.perf_counter()
        ln_det = values - np.asarray(Q.log_likelihood_halos(HYPERSEED, limited))
        ref_det = reference_log_detection(HYPERSEED, catalog.z, lum_lim, prior, err)
        diff = (values - ln_det) - (ref - ref_det)
        print(
            f"with a flux limit (each limit e^-Exp(1) below its halo), against brute force "
            f"({time.perf_counter() - start:.0f} s): fast - reference = {diff.sum():+.2e}, worst halo "
            f"{np.abs(diff).max():.2e}; ln P(detected) alone: worst {np.abs(ln_det - ref_det).max():.2e}"
        )

    # A flux-limited catalog of the same size: N halos above the rising limit, each drawn from
    # its truncated predictive (redshifts from the lightcone). A fit reads its detection term
    # from interpolation nodes (bigmali.likelihood.detection); the per-halo read is what a
    # per-halo limit (the lum_lim column) needs.
    limit = rising_limit(catalog)
    detected = bigmali.lightcone.simulate_detected(
        prior, n_halos=args.n_halos, flux_limit=limit, seed=5, lum_obs_err=(0.02, 0.3)
    )
    cut = collapsed.prepare_data(
        detected.z, detected.lum_obs, prior, detected.lum_obs_err, np.exp(limit.ln_limit(detected)), limit
    )
    nodes = cut.detection_sum
    theta = jnp.array(HYPERSEED)
    for th in (theta, theta + jnp.array([0.03, 0.01, -0.05, 0.002])):
        d_nodes, g_nodes = jax.value_and_grad(lambda t: D.log_detection_sum(Hyper(*t), nodes))(th)
        d_ref, g_ref = jax.value_and_grad(lambda t: jnp.sum(Q.log_detection_probability(Hyper(*t), cut)))(th)
        print(
            f"detection term from {nodes.weight.size} nodes against the per-halo sum over {len(detected)} halos "
            f"({limit.describe()}): {float(d_nodes - d_ref):+.2e} of {float(d_ref):.1f}, gradient within "
            f"{float(jnp.max(jnp.abs((g_nodes - g_ref) / g_ref))):.1e} relative"
        )
    value_grad = jax.jit(jax.value_and_grad(lambda th, d: Q.log_likelihood(Hyper(*th), d)))
    per_halo_read = cut._replace(detection_sum=None)
    ms = alternating_medians_ms(
        {
            "fixed sigma": lambda: value_grad(theta, fixed),
            "per-halo errors": lambda: value_grad(theta, data),
            "per-halo errors and a flux limit (a fit's path: nodes)": lambda: value_grad(theta, cut),
            "per-halo errors and a flux limit (per-halo read)": lambda: value_grad(theta, per_halo_read),
        },
        args.repeats,
    )
    print(f"value + gradient at {len(catalog)} halos, median of {args.repeats}, called in turn:")
    for name, t in ms.items():
        print(f"  {name}: {t:.2f} ms (ratio to fixed sigma {t / ms['fixed sigma']:.2f}; target <= 2)")

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
    if not args.skip_malmquist:
        malmquist(prior, [int(v) for v in args.malmquist_seeds.split(",")])
    if not args.skip_latent:
        latent_against_collapsed(prior)
    if args.sbc_datasets:
        sbc_with_selection(prior, args.sbc_datasets, args.sbc_halos, args.sbc_out)
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
