"""The 2017 catalog itself: why the exact fit misses there, shown with numbers.

    python benchmarks/catalog_2017.py [--quick] [--json FILE] [--figures DIR]

On ``data/2017/mock_data_prior.txt`` (115,919 halos, always the whole catalog; ``--quick``
uses fewer draws only) it prints and writes (``--json``):

* ``default``: collapsed NUTS under the default mass prior (hmf Tinker10): the seed's
  z-scores, the PPC p-value, the PPC by luminosity and the prior-data conflict measures;
* ``matched``: the same on a bigmali mock of the same redshifts and size drawn from the
  default prior at the hyperseed (the diagnostics must stay quiet there);
* ``candidates``: each candidate cause of the miss tested by the Laplace fit under the
  prior it implies (the mass convention, the redshift interpolation, the mass range, the
  2017 sampler) and by the methods that exclude importance-sampling noise and clipping;
* ``explained``: collapsed NUTS under ``--mass-prior 2017-sampler``, the distribution the
  2017 notebook drew the catalog's masses from;
* ``evidence``: ln Z with its error under both priors, LOO elpd, the spread over repeated
  runs, and a check against dense Gauss-Hermite quadrature on a 2,000-halo mock;
* ``runs_2017``: every 2017 output file read back (weight ESS, k-hat, largest share, the
  heaviest draw) with the heaviest draw placed in the new posteriors, the 2017 draws
  rescored with the exact likelihood under both priors, and the S-only runs explained;
* ``likelihood_variance_2017``: sd and mean of the 2017 log-likelihood at 100, 1,000 and
  10,000 samples per halo;
* ``methods``: the catalog fitted with every method under the default prior, side by side.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import bigmali
from bigmali.diagnostics.recovery import summary
from bigmali.relation import HYPER_NAMES, HYPERSEED

DATA = Path(__file__).resolve().parent.parent / "data" / "2017"
CATALOG = DATA / "mock_data_prior.txt"
RUNS = ["bigmaliprior.out", "bigmaliorig.out", "fullexp10000.txt", "justStest.txt", "simpletest10000.txt"]
VARIANCE = {
    100: "likelihoodvariancetest.txt",
    1000: "likelihoodvariancetest1000samples.txt",
    10000: "likelihoodvariancetest10000samples.txt",
}
SEED = HYPERSEED._asdict()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else (None if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _nuts(catalog, prior, name, quick):
    draws, warmup = (500, 300) if quick else (1000, 500)
    start = time.perf_counter()
    run = bigmali.fit(
        catalog,
        "collapsed",
        "nuts",
        prior=prior,
        prior_options={"source": name},
        chains=2,
        draws=draws,
        warmup=warmup,
        seed=0,
        progress=False,
        mass_draws=0,
        log_likelihood=0,
    )
    return run, time.perf_counter() - start


def _diagnosed(run, prior, figures: Path | None, tag: str) -> dict:
    res = summary(run, truth="hyperseed", ppc=True, prior=prior, conflict=True, influence=False)
    params = res["parameters"]
    out = {
        "z_scores": {n: params[n]["z_score"] for n in HYPER_NAMES},
        "quantiles": {n: params[n]["quantile"] for n in HYPER_NAMES},
        "means": {n: params[n]["mean"] for n in HYPER_NAMES},
        "sds": {n: params[n]["sd"] for n in HYPER_NAMES},
        "ppc_p_value": res["ppc_p_value"],
        "ppc_p_value_by_bin_min": min(res["ppc_p_value_by_bin"]),
        "ppc_by_luminosity": {
            k: res["ppc_by_luminosity"][k] for k in ("edges", "standardised_residual", "max_abs_standardised")
        },
        "prior_conflict": res["prior_conflict"],
        "r_hat_max": max(params[n]["r_hat"] for n in HYPER_NAMES),
        "ess_bulk_min": min(params[n]["ess_bulk"] for n in HYPER_NAMES),
        "ess_tail_min": min(params[n]["ess_tail"] for n in HYPER_NAMES),
    }
    if figures is not None:
        from bigmali.diagnostics.ppc import plot_by_luminosity, posterior_predictive_check

        plot_by_luminosity(posterior_predictive_check(run, prior=prior), figures / f"ppc_luminosity_{tag}.png")
    return out


def _laplace_z(catalog, prior) -> dict:
    """The seed's z-scores under the Laplace fit of the collapsed posterior (mode, Hessian)."""
    ev = bigmali.log_evidence(catalog, prior, n_draws=400, seed=0)
    w = np.exp(ev.log_weight - np.logaddexp.reduce(ev.log_weight))
    out = {}
    for n in HYPER_NAMES:
        mean = float(np.sum(w * ev.samples[n]))
        sd = float(np.sqrt(np.sum(w * (ev.samples[n] - mean) ** 2)))
        out[n] = (SEED[n] - mean) / sd
    return {"z_scores": out, "max_abs_z": max(abs(v) for v in out.values()), "log_evidence": ev.log_evidence}


def _candidates(catalog) -> dict:
    """Each candidate cause: the seed's z-scores under the prior it implies."""
    from dataclasses import replace

    from bigmali.mass_function import TableSpec, load_table
    from bigmali.mass_prior import H_2017, build_mass_prior, load_mass_prior

    table = load_table(TableSpec())
    m = table.m * H_2017
    cut = m >= 2.0 * m[0]
    wider = load_table(replace(TableSpec(), log10_mmin=9.5))
    cases = {
        "default (hmf Tinker10, 2017 convention, z bins)": load_mass_prior(),
        "mass convention: physical (divided by h)": load_mass_prior(mass_convention="physical"),
        "redshift binning: linear interpolation between tables": load_mass_prior(z_interp="linear"),
        "mass range: table starts at 2 M_min": build_mass_prior(table.z, m[cut], table.dndm[:, cut]),
        "mass range: table reaches 10^9.5 Msun/h": build_mass_prior(wider.z, wider.m * H_2017, wider.dndm),
        "mass function: Tinker08": load_mass_prior(hmf_model="Tinker08"),
        "generation: the 2017 sampler's draws (2017-sampler)": load_mass_prior("2017-sampler"),
    }
    return {name: _laplace_z(catalog, prior) for name, prior in cases.items()}


def _place(point: dict, fit: dict) -> dict:
    return {n: (point[n] - fit["means"][n]) / fit["sds"][n] for n in HYPER_NAMES}


def _runs_2017(catalog, priors: dict, fits: dict, quick: bool) -> dict:
    from bigmali.datatree import draws_and_weights
    from bigmali.inference.importance import exact_log_likelihoods
    from bigmali.likelihood.quadrature import QuadratureConfig, prepare
    from bigmali.relation import Hyper
    from bigmali.runs_2017 import read_2017_run, read_2017_table

    out = {}
    for name in RUNS:
        run = read_2017_run(DATA / name)
        values, _ = draws_and_weights(run)
        raw = np.asarray(run["sample_stats"]["log_weight_raw"]).ravel()
        top = int(np.argmax(raw))
        heaviest = {n: float(values[n][top]) for n in HYPER_NAMES}
        weights = json.loads(run.attrs["weights"])
        out[Path(name).stem] = {
            "n_draws": int(raw.size),
            "ess": weights["ess"],
            "pareto_k": weights["pareto_k"],
            "max_share": weights["max_share"],
            "heaviest": heaviest,
            "heaviest_in_hyperprior_sds": {
                n: (heaviest[n] - m) / s for n, m, s in zip(HYPER_NAMES, bigmali.HYPERPRIOR_MEAN, bigmali.HYPERPRIOR_SD)
            },
            "heaviest_in_posterior_sds": {k: _place(heaviest, f) for k, f in fits.items()},
        }
    # Rescore the hyper-level 2017 draws with the exact likelihood under both priors.
    table = read_2017_table(DATA / "bigmaliprior.out")
    rng = np.random.default_rng(0)
    keep = np.arange(table["loglik"].size)
    if quick:
        keep = np.union1d(rng.choice(keep, 2000, replace=False), [int(np.argmax(table["loglik"]))])
    hypers = Hyper(*(table[n][keep] for n in HYPER_NAMES))
    rescored = {"draws": int(keep.size)}
    for label, prior in priors.items():
        data = prepare(catalog.z, catalog.lum_obs, prior)
        exact = exact_log_likelihoods(hypers, data, QuadratureConfig())
        best = int(np.argmax(exact))
        from scipy.stats import spearmanr

        rescored[label] = {
            "spearman_with_2017": float(spearmanr(exact, table["loglik"][keep]).statistic),
            "same_heaviest_as_2017": bool(keep[best] == int(np.argmax(table["loglik"]))),
            "heaviest": {n: float(table[n][keep][best]) for n in HYPER_NAMES},
            "weight_ess": float(np.exp(2 * np.logaddexp.reduce(exact) - np.logaddexp.reduce(2 * exact))),
            "mean_2017_minus_exact": float(np.mean(table["loglik"][keep] - exact)),
        }
    explained = {"rescored_bigmaliprior": rescored}
    # The S-only runs: the exact S-likelihood at the seed's alphas, times the hyperprior.
    s_grid = np.linspace(0.150, 0.160, 201)
    s_only = {}
    for label, prior in priors.items():
        data = prepare(catalog.z, catalog.lum_obs, prior)
        fixed = Hyper(*(np.full(s_grid.size, SEED[n]) for n in ("alpha1", "alpha2", "alpha4")), s_grid)
        ll = exact_log_likelihoods(fixed, data, QuadratureConfig())
        logp = ll - 0.5 * ((s_grid - 0.155) / 0.0009) ** 2
        p = np.exp(logp - logp.max())
        p /= p.sum()
        mean = float(np.sum(p * s_grid))
        s_only[label] = {
            "likelihood_peak_S": float(s_grid[np.argmax(ll)]),
            "posterior_peak_S": float(s_grid[np.argmax(logp)]),
            "posterior_mean_S": mean,
            "posterior_sd_S": float(np.sqrt(np.sum(p * (s_grid - mean) ** 2))),
            "seed_quantile": float(np.sum(p[s_grid < SEED["S"]])),
            "loglik_seed_minus_peak": float(np.interp(SEED["S"], s_grid, ll) - ll.max()),
        }
    for name in ("justStest.txt", "simpletest10000.txt"):
        t = read_2017_table(DATA / name)
        order = np.argsort(t["S"])
        s_only[Path(name).stem] = {
            "heaviest_S": float(t["S"][np.argmax(t["loglik"])]),
            "weighted_mean_S": float(np.sum(np.exp(t["loglik"] - np.logaddexp.reduce(t["loglik"])) * t["S"])),
            "S_range": [float(t["S"][order[0]]), float(t["S"][order[-1]])],
        }
    s_only["seed_S"] = SEED["S"]
    explained["s_only"] = s_only
    return out, explained


def _variance() -> dict:
    from bigmali.runs_2017 import read_2017_table

    return {
        str(n): {
            "sd": float(np.std(t["loglik"], ddof=1)),
            "mean": float(np.mean(t["loglik"])),
            "runs": int(t["loglik"].size),
        }
        for n, t in ((n, read_2017_table(DATA / f)) for n, f in VARIANCE.items())
    }


def _evidence(catalog, priors: dict, quick: bool) -> dict:
    from bigmali.diagnostics.model_comparison import compare_priors
    from bigmali.inference.evidence import log_evidence, quadrature_log_evidence

    n_draws = 1000 if quick else 4000
    table = compare_priors(catalog, priors, n_draws=n_draws, loo_draws=128 if quick else 256, seed=0)
    out = {
        name: {
            k: row[k]
            for k in (
                "log_evidence",
                "error",
                "pareto_k",
                "ess",
                "elpd",
                "elpd_se",
                "elpd_diff",
                "elpd_dse",
                "delta_log_evidence",
            )
        }
        for name, row in table["priors"].items()
    }
    repeats = [
        log_evidence(catalog, priors["2017-sampler"], n_draws=n_draws, seed=s).log_evidence
        for s in range(1, 4 if quick else 6)
    ]
    checks = {"repeat_sd_2017-sampler": float(np.std(repeats, ddof=1)), "repeats_2017-sampler": repeats}
    mock = bigmali.simulate(priors["tinker10"], HYPERSEED, redshifts=catalog.z, n_halos=2000, seed=11)
    ref = quadrature_log_evidence(mock, priors["tinker10"], n_nodes=6)
    est = log_evidence(mock, priors["tinker10"], n_draws=n_draws, seed=0)
    checks["check_2000_halos"] = {
        "gauss_hermite_6": ref,
        "importance": est.log_evidence,
        "error": est.error,
        "pareto_k": est.pareto_k,
        "difference_in_errors": (est.log_evidence - ref) / est.error,
    }
    return out, checks


def _methods(catalog, prior, default_fit: dict, quick: bool, latent: bool, save, out: dict) -> dict:
    cases = {
        "collapsed svi": dict(model="collapsed", method="svi"),
        "is_proposal": dict(method="is_proposal"),
        "is_prior (exact likelihood)": dict(method="is_prior", n_hyper=2400 if quick else 9600, is_likelihood="exact"),
        "is_prior (2017 IS likelihood)": dict(method="is_prior", n_hyper=100 if quick else 500, is_likelihood="is"),
    }
    if latent:  # one latent ln M per halo: 115,923 dimensions; ~30 min for 1 x (100 + 100) here
        cases["latent_mass nuts"] = dict(model="latent_mass", method="nuts", chains=1, warmup=100, draws=100)
    out["collapsed nuts"] = {
        "z_scores": default_fit["z_scores"],
        "means": default_fit["means"],
        "sds": default_fit["sds"],
    }
    for name, kwargs in cases.items():
        start = time.perf_counter()
        run = bigmali.fit(catalog, prior=prior, seed=0, progress=False, mass_draws=0, log_likelihood=0, **kwargs)
        res = summary(run, truth="hyperseed", influence=False)
        p = res["parameters"]
        out[name] = {
            "z_scores": {n: p[n]["z_score"] for n in HYPER_NAMES},
            "means": {n: p[n]["mean"] for n in HYPER_NAMES},
            "sds": {n: p[n]["sd"] for n in HYPER_NAMES},
            "weights": res.get("weights"),
            "seconds": time.perf_counter() - start,
        }
        save()
    return out


def _print(result: dict) -> None:
    def zline(z):
        return "  ".join(f"{n} {z[n]:+8.2f}" for n in HYPER_NAMES)

    d, e, m = result["default"], result["explained"], result["matched"]
    print("\n== the seed's z-scores ((seed - mean) / sd), PPC and prior-data conflict")
    for label, f in (("default prior (Tinker10)", d), ("matched bigmali mock", m), ("explained (2017-sampler)", e)):
        pc = f["prior_conflict"]
        print(
            f"{label:<28}{zline(f['z_scores'])}  PPC p {f['ppc_p_value']:.3f}  by-L max|res| "
            f"{f['ppc_by_luminosity']['max_abs_standardised']:.1f}  conflict {pc['conflict']} "
            f"(max psense prior {max(v['prior'] for v in pc['psense'].values()):.3f}, "
            f"max hyperprior distance {pc['max_abs_distance']:.1f})"
        )
    print(
        f"explained: quantiles {e['quantiles']}, R-hat max {e['r_hat_max']:.4f}, bulk ESS min {e['ess_bulk_min']:.0f}"
    )
    print("\n== candidate causes (Laplace fit: the seed's z-scores)")
    for name, c in result["candidates"].items():
        print(f"{name:<55}{zline(c['z_scores'])}  ln Z {c['log_evidence']:.1f}")
    print("\n== evidence")
    for name, row in result["evidence"].items():
        print(
            f"{name:<16} ln Z {row['log_evidence']:.3f} +- {row['error']:.3f} (k-hat {row['pareto_k']:.2f}), "
            f"elpd {row['elpd']:.1f} +- {row['elpd_se']:.1f}, elpd_diff {row['elpd_diff']:.1f} +- {row['elpd_dse']:.1f}"
        )
    checks = result["evidence_checks"]
    print(
        f"repeat sd (2017-sampler): {checks['repeat_sd_2017-sampler']:.3f}; 2,000-halo check: {checks['check_2000_halos']}"
    )
    print("\n== 2017 runs read back")
    for name, r in result["runs_2017"].items():
        print(
            f"{name:<22} draws {r['n_draws']:>5}  ESS {r['ess']:.2f}  k-hat {r['pareto_k']:.1f}  max share "
            f"{r['max_share']:.3f}  heaviest {r['heaviest']}"
        )
        for k, v in r["heaviest_in_posterior_sds"].items():
            print(f"{'':<24}heaviest in the {k} posterior: {zline(v)}")
    print("rescored:", json.dumps(_jsonable(result["runs_2017_explained"]["rescored_bigmaliprior"])))
    print("S-only:", json.dumps(_jsonable(result["runs_2017_explained"]["s_only"])))
    print("\n== 2017 likelihood variance:", json.dumps(result["likelihood_variance_2017"]))
    print("\n== every method, default prior (the seed's z-scores)")
    for name, r in result["methods"].items():
        if r.get("weights") and r["weights"]["ess"] < 10:  # one draw holds the weight: no sd, no z-score
            means = "  ".join(f"{n} {r['means'][n]:.4f}" for n in HYPER_NAMES)
            print(f"{name:<32}weight ESS {r['weights']['ess']:.1f}: the heaviest draw {means}")
            continue
        extra = f"  weight ESS {r['weights']['ess']:.1f}" if r.get("weights") else ""
        print(f"{name:<32}{zline(r['z_scores'])}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws (never a smaller catalog)")
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument("--figures", default=None, metavar="DIR", help="write the PPC-by-luminosity figures here")
    parser.add_argument(
        "--latent",
        action="store_true",
        help="also fit latent_mass NUTS on the whole catalog (1 chain x (100 + 100); about 30 min)",
    )
    args = parser.parse_args()
    figures = Path(args.figures) if args.figures else None
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    catalog = bigmali.read_catalog(CATALOG)
    priors = {"tinker10": bigmali.load_mass_prior(), "2017-sampler": bigmali.load_mass_prior("2017-sampler")}
    result = {"n_halos": len(catalog), "quick": args.quick}

    def save():  # after every stage, so that a long run leaves what it has measured
        if args.json:
            from bigmali.files import atomic_write_text

            atomic_write_text(Path(args.json), json.dumps(_jsonable(result), indent=1))

    run, seconds = _nuts(catalog, priors["tinker10"], "tinker10", args.quick)
    result["default"] = {**_diagnosed(run, priors["tinker10"], figures, "default"), "seconds": seconds}
    mock = bigmali.simulate(priors["tinker10"], HYPERSEED, redshifts=catalog.z, seed=2017)
    run_m, seconds = _nuts(mock, priors["tinker10"], "tinker10", args.quick)
    result["matched"] = {**_diagnosed(run_m, priors["tinker10"], figures, "matched"), "seconds": seconds}
    run_e, seconds = _nuts(catalog, priors["2017-sampler"], "2017-sampler", args.quick)
    result["explained"] = {
        "mass_prior": "2017-sampler: the distribution the 2017 sampler drew the catalog's masses "
        "from (hmf Tinker10 with each knot's density used as its probability)",
        **_diagnosed(run_e, priors["2017-sampler"], figures, "explained"),
        "seconds": seconds,
    }
    save()
    print(f"[{time.perf_counter() - start:.0f} s] fits done", flush=True)
    result["candidates"] = _candidates(catalog)
    save()
    print(f"[{time.perf_counter() - start:.0f} s] candidates done", flush=True)
    result["evidence"], result["evidence_checks"] = _evidence(catalog, priors, args.quick)
    save()
    print(f"[{time.perf_counter() - start:.0f} s] evidence done", flush=True)
    result["runs_2017"], result["runs_2017_explained"] = _runs_2017(
        catalog, priors, {"default": result["default"], "explained": result["explained"]}, args.quick
    )
    result["likelihood_variance_2017"] = _variance()
    save()
    print(f"[{time.perf_counter() - start:.0f} s] 2017 runs done", flush=True)
    result["methods"] = {}
    _methods(catalog, priors["tinker10"], result["default"], args.quick, args.latent, save, result["methods"])
    result["seconds"] = time.perf_counter() - start
    _print(result)
    print(f"\ntotal {result['seconds']:.0f} s")
    if args.json:
        save()
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
