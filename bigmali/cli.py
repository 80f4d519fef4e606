"""The ``bigmali`` command line: it parses arguments and calls the library, nothing more.

Every flag is checked when the arguments are parsed, with the flag's name in the message,
and every output path is checked before any work starts. Files are written atomically.
``fit``, ``demo`` and ``simulate`` refuse to replace an existing ``--out`` file without
``--overwrite``; ``report``, ``massmap``, ``compare --png``, ``prior --plot`` and
``sbc --plot`` replace their outputs (they are remade from a run); ``sbc --out`` resumes an
existing file. Errors print one line (``bigmali CMD: error: ...``) and exit 1; SIGTERM and
Ctrl-C stop a command without leaving a half-written file.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import warnings

__all__ = ["main"]


def _integer(least: int):
    """An argparse type: an integer >= ``least``, refused with the reason."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= {least}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def _real(low: float, high: float | None = None, *, closed_low: bool = False):
    """An argparse type: a finite number in (low, high), or [low, high) with ``closed_low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value >= low if closed_low else value > low
        if not (math.isfinite(value) and above and (high is None or value < high)):
            interval = f"{'[' if closed_low else '('}{low:g}, {'inf' if high is None else f'{high:g}'})"
            raise argparse.ArgumentTypeError(f"{text!r}: must lie in {interval}")
        return value

    parse.__name__ = "number"
    return parse


COUNT = _integer(1)
NONNEGATIVE = _integer(0)
SEED = _integer(0)
POSITIVE = _real(0.0)
FRACTION = _real(0.0, 1.0)


def _z_edges(text: str) -> list[float]:
    from bigmali.massmap import check_z_edges

    try:
        return check_z_edges([float(v) for v in text.split(",")]).tolist()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _field(text: str) -> tuple[float, float, float]:
    from bigmali.massmap import PixelGrid

    try:
        ra, dec, width = (float(v) for v in text.split(","))
        PixelGrid.field(ra, dec, width)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give ra_center,dec_center,width in degrees ({exc})") from None
    return ra, dec, width


def _error_range(text: str) -> tuple[float, float]:
    from bigmali.lightcone import check_error_range

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give low,high (the sd of ln L_obs), e.g. 0.02,0.3") from None
    try:
        check_error_range(low, high)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return low, high


def _hyper(text: str):
    from bigmali.relation import parse_hyper

    try:
        return parse_hyper(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flux_limit(text: str):
    from bigmali.selection import FluxLimit

    try:
        return FluxLimit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _redshift_window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two redshifts LO,HI") from None
    return low, high  # Survey.from_area checks the range


def _survey(args):
    """The extended likelihood's survey window from --survey-area and --survey-z, or None."""
    from bigmali.selection import Survey

    if args.survey_area is None:
        if args.survey_z is not None:
            raise ValueError("--survey-z needs --survey-area")
        return None
    if args.selection != "extended":
        raise ValueError("--survey-area is for --selection extended")
    low, high = args.survey_z or (0.0, None)
    return Survey.from_area(args.survey_area, low, high)


def add_error_range_argument(parser: argparse.ArgumentParser) -> None:
    """``--lum-obs-err LOW,HIGH``: mocks with per-halo measurement errors."""
    parser.add_argument(
        "--lum-obs-err",
        type=_error_range,
        default=None,
        metavar="LOW,HIGH",
        help="give each halo its own measurement error (sd of ln L_obs), log-uniform in [LOW, HIGH], "
        "written as the lum_obs_err column (default: 0.05 for every halo, no column)",
    )


def add_prior_arguments(parser: argparse.ArgumentParser) -> None:
    """The mass-prior flags shared by every command that uses the prior."""
    group = parser.add_argument_group("mass prior")
    group.add_argument(
        "--mass-prior",
        default="tinker10",
        metavar="tinker10|2017-sampler|FILE",
        help="hmf mass function (default); 2017-sampler: the distribution the 2017 sampler drew "
        "the 2017 catalog's masses from (for that catalog, not a survey); or a table file "
        "with columns z, mass, density",
    )
    group.add_argument(
        "--prior-density-per",
        choices=("M", "lnM"),
        default=None,
        help="for a table file: its density is per unit M or per unit ln M (required)",
    )
    group.add_argument(
        "--hmf-model", default="Tinker10", metavar="NAME", help="hmf fitting function (default Tinker10)"
    )
    group.add_argument(
        "--cosmology", default="WMAP5", metavar="NAME", help="astropy cosmology realization (default WMAP5)"
    )
    group.add_argument(
        "--mass-convention",
        choices=("2017", "physical"),
        default="2017",
        help="2017: hmf masses x 0.73 as in 2017 (default); physical: divided by h",
    )
    group.add_argument(
        "--z-interp",
        choices=("bins", "linear"),
        default="bins",
        help="bins: the 2017 redshift tables (default); linear: interpolate between tables",
    )


def prior_from_args(args):
    from bigmali.mass_prior import load_mass_prior

    return load_mass_prior(**_prior_options(args))


def _cmd_simulate(args) -> int:
    from bigmali.catalog import read_catalog, write_catalog
    from bigmali.files import check_output_file
    from bigmali.lightcone import N_HALOS_2017, simulate
    from bigmali.relation import parse_hyper

    check_output_file(args.out, overwrite=args.overwrite)
    start = time.perf_counter()
    prior = prior_from_args(args)
    hyper = args.hyper if args.hyper is not None else parse_hyper(None)
    redshifts = ra = dec = None
    if args.redshifts_from:
        source = read_catalog(args.redshifts_from, z_max=prior.z_max)
        redshifts, ra, dec = source.z, source.ra, source.dec
    catalog = simulate(
        prior,
        hyper,
        field_arcmin=args.field_arcmin,
        n_halos=args.n_halos,
        redshifts=redshifts,
        ra=ra,
        dec=dec,
        seed=args.seed,
        lum_obs_err=args.lum_obs_err,
        flux_limit=args.flux_limit,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_catalog(catalog, args.out)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(catalog.summary())
    if "N_EXPECT" in catalog.meta:
        expected = catalog.meta["N_EXPECT"]
        print(
            f"expected: {expected:.1f} halos in the {args.field_arcmin:g} x {args.field_arcmin:g} arcmin field "
            f"(the 2017 mock had {N_HALOS_2017}; ratio {expected / N_HALOS_2017:.2f})"
        )
    print(f"hyper:    {', '.join(f'{k}={v!r}' for k, v in hyper._asdict().items())}")
    if args.flux_limit is not None:
        drawn = int(catalog.meta["N_DRAWN"])
        print(
            f"selection: {args.flux_limit.describe()}: kept {len(catalog)} of the {drawn} halos drawn "
            f"({len(catalog) / drawn:.1%})"
        )
    print(f"wrote {args.out} in {time.perf_counter() - start:.2f} s")
    return 0


def _cmd_validate(args) -> int:
    from bigmali.catalog import read_catalog

    prior = prior_from_args(args)
    catalog = read_catalog(args.file, z_max=prior.z_max)
    print(f"{args.file}: valid catalog")
    print(catalog.summary())
    return 0


def _cmd_prior(args) -> int:
    import numpy as np

    from bigmali.files import check_output_file

    if args.plot:
        check_output_file(args.plot, flag="--plot")
    prior = prior_from_args(args)
    mass = np.asarray(prior.mass)
    print(f"mass prior: {prior.description}")
    print(f"tables:     {len(prior.z_grid)} at z = {', '.join(f'{z:.3f}' for z in np.asarray(prior.z_grid))}")
    print(f"masses:     {len(mass)} knots, {mass[0]:.6g} .. {mass[-1]:.6g} Msun (with background knots)")
    if args.plot:
        from bigmali.plotting import plot_mass_prior

        plot_mass_prior(prior, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _prior_options(args) -> dict:
    return {
        "source": args.mass_prior,
        "hmf_model": args.hmf_model,
        "cosmology": args.cosmology,
        "mass_convention": args.mass_convention,
        "z_interp": args.z_interp,
        "density_per": args.prior_density_per,
    }


def _fit_kwargs(args) -> dict:
    """The engine options the user gave (the rest keep their engines' defaults), seed and progress."""
    given = {name: getattr(args, name) for name in args.engine_options if getattr(args, name) is not None}
    return dict(seed=args.seed, progress=not args.quiet, mass_draws=args.mass_draws, **given)


def _strict_json(value):
    """``value`` as strict JSON that any parser reads: NaN (a value that does not exist) as
    null, and +-infinity (a Pareto k-hat of weights with no usable tail, say) as the strings
    "Infinity" and "-Infinity", so that an infinite value is never mistaken for a missing one
    (Python's ``float("Infinity")`` reads them back)."""

    import numpy as np

    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def _print_summary(
    run, truth, as_json: bool, ppc: bool = False, prior=None, ppc_draws: int = 200, conflict: bool = False
) -> None:
    import json

    from bigmali.diagnostics import format_summary, summary

    result = summary(run, truth=truth, ppc=ppc, prior=prior, ppc_draws=ppc_draws, conflict=conflict)
    if as_json:
        print(json.dumps(_strict_json(result)))
        return
    import arviz_stats as azs

    from bigmali.relation import HYPER_NAMES

    if "weights" in result:  # weighted draws: ArviZ's unweighted table would mislead
        print(format_summary(result))
        return
    # ArviZ rounds to the Monte Carlo error by default, which prints the interval bounds of
    # alpha1 (sd 0.01) as "11": six significant figures read better.
    table = azs.summary(run, var_names=list(HYPER_NAMES), round_to="none")
    print(table.to_string(float_format=lambda v: f"{v:.6g}"))
    print()
    print(format_summary(result))


def _cmd_fit(args) -> int:
    from bigmali.catalog import read_catalog
    from bigmali.datatree import save_run
    from bigmali.files import check_output_file
    from bigmali.fit import fit

    check_output_file(args.out, overwrite=args.overwrite)
    prior = prior_from_args(args)
    catalog = read_catalog(args.catalog, z_max=prior.z_max)
    run = fit(
        catalog,
        model=args.model,
        method=args.method,
        prior=prior,
        prior_options=_prior_options(args),
        flux_limit=args.flux_limit,
        selection=args.selection,
        survey=_survey(args),
        shard_halos=args.shard_halos,
        **_fit_kwargs(args),
    )
    print(f"selection: {run.attrs['selection_source']}")
    if run.attrs["selection_likelihood"] == "extended":
        print(f"extended likelihood: survey {run.attrs['survey_source']}")
    save_run(run, args.out)
    _print_summary(run, "hyperseed" if args.truth is None and "catalog_hyper" in run.attrs else args.truth, False)
    print(f"wrote {args.out}")
    return 0


_PRIOR_FLAGS = {
    "source": "--mass-prior",
    "hmf_model": "--hmf-model",
    "cosmology": "--cosmology",
    "mass_convention": "--mass-convention",
    "z_interp": "--z-interp",
    "density_per": "--prior-density-per",
}


def _run_prior(run, args, build: bool = True):
    """The prior flags' mass prior for a run that did not record its options; None (the
    recorded prior) otherwise. Prior flags that contradict the recorded options are an
    error, or with ``--force`` a warning and the flags' prior."""
    from bigmali.datatree import attr_json
    from bigmali.fit import DEFAULT_PRIOR_OPTIONS

    recorded = attr_json(run, "prior_options")
    if not recorded:
        return prior_from_args(args) if build else None
    given = _prior_options(args)
    differ = [k for k in given if given[k] != recorded.get(k)]
    if given == DEFAULT_PRIOR_OPTIONS or not differ:
        return None
    k = differ[0]
    message = f"{_PRIOR_FLAGS[k]} {given[k]!r}: the run was fitted with {recorded.get(k)!r}"
    if not getattr(args, "force", False):
        raise ValueError(message + " (leave the prior flags out to use the run's prior, or --force to override)")
    warnings.warn(message + "; using the given prior because of --force", stacklevel=2)
    return prior_from_args(args) if build else None


def _cmd_summary(args) -> int:
    from bigmali.datatree import load_run

    run = load_run(args.run)
    has_catalog = "observed_data" in run.children
    ppc, conflict = not args.no_ppc and has_catalog, not args.no_conflict
    _print_summary(
        run,
        args.truth,
        args.json,
        ppc=ppc,
        prior=_run_prior(run, args, build=ppc or conflict),
        ppc_draws=args.ppc_draws,
        conflict=conflict,
    )
    return 0


def _cmd_compare(args) -> int:
    import json

    from bigmali.datatree import load_run
    from bigmali.diagnostics.compare import compare, format_comparison, plot_comparison
    from bigmali.diagnostics.recovery import resolve_truth
    from bigmali.files import check_output_file

    check_output_file(args.png, flag="--png")
    runs = [load_run(path) for path in args.runs]
    labels = [f"{path} ({r.attrs.get('method')})" for path, r in zip(args.runs, runs)]
    result = compare(runs, labels)
    print(json.dumps(result) if args.json else format_comparison(result))
    plot_comparison(runs, args.png, labels, truth=resolve_truth(args.truth))
    if not args.json:
        print(f"wrote {args.png}")
    return 0


def _cmd_massmap(args) -> int:
    import json

    from bigmali.catalog import read_catalog
    from bigmali.datatree import load_run, run_prior
    from bigmali.files import check_output_dir
    from bigmali.massmap import PixelGrid, massmap

    check_output_dir(args.out, flag="--out")
    run = load_run(args.run)
    prior = run_prior(run, _run_prior(run, args))
    catalog = read_catalog(args.catalog, z_max=prior.z_max)
    grid = PixelGrid.field(*args.field, args.pixels) if args.field else None
    summary = massmap(
        run,
        catalog,
        prior,
        args.out,
        n_draws=args.draws,
        n_pixels=args.pixels,
        z_edges=args.zbins,
        grid=grid,
        keep=args.keep,
        seed=args.seed,
        progress=not args.quiet,
        force=args.force,
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/: massmap_*.fits, massmap.png, halo_masses.fits, summary.json")
    return 0


def _cmd_demo(args) -> int:
    from bigmali.datatree import save_run
    from bigmali.files import check_output_file
    from bigmali.fit import fit
    from bigmali.lightcone import N_HALOS_2017, simulate

    if args.out:
        check_output_file(args.out, overwrite=args.overwrite)
    prior = prior_from_args(args)
    start = time.perf_counter()
    catalog = simulate(prior, n_halos=args.n_halos or N_HALOS_2017, seed=args.seed)
    print(
        f"simulated {len(catalog)} halos from the hyperseed in {time.perf_counter() - start:.1f} s; fitting with collapsed NUTS"
    )
    run = fit(
        catalog, model="collapsed", method="nuts", prior=prior, prior_options=_prior_options(args), **_fit_kwargs(args)
    )
    if args.out:
        save_run(run, args.out)
    _print_summary(run, "hyperseed", args.json)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_sbc(args) -> int:
    import json
    from pathlib import Path

    from bigmali.diagnostics.sbc import format_sbc, plot_sbc, run_sbc
    from bigmali.files import check_output_file

    if args.thin > args.draws:
        raise ValueError(f"--thin {args.thin}: must not exceed --draws {args.draws}")
    check_output_file(args.out)  # an existing file is resumed, not replaced
    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    check_output_file(plot, flag="--plot")
    result = run_sbc(
        args.out,
        args.n_datasets,
        args.n_halos,
        model=args.model,
        method=args.method,
        warmup=args.warmup,
        draws=args.draws,
        thin=args.thin,
        seed=args.seed,
        prior_options=_prior_options(args),
        progress=not args.quiet,
        lum_obs_err=args.lum_obs_err,
        flux_limit=args.flux_limit,
    )
    plot_sbc(result, plot)
    if args.json:
        print(
            json.dumps(
                {
                    "n_datasets": int(result.dataset.size),
                    "seconds": float(result.seconds.sum()),
                    "uniformity": result.uniformity(),
                }
            )
        )
    else:
        print(format_sbc(result))
        print(f"wrote {args.out} and {plot}")
    return 0


def _cmd_report(args) -> int:
    from bigmali.diagnostics.report import write_comparison, write_report
    from bigmali.files import check_output_dir

    if (args.run is None) == (args.compare is None):
        raise ValueError("give one run (bigmali report run.nc -o DIR) or --compare with two or more runs")
    if args.compare is not None and len(args.compare) < 2:
        raise ValueError("--compare needs at least two runs")
    check_output_dir(args.out, flag="--out")
    if args.compare is not None:
        out = write_comparison(args.compare, args.out, truth=args.truth, ppc_draws=args.ppc_draws)
    else:
        from bigmali.datatree import load_run

        run = load_run(args.run)
        out = write_report(
            run, args.out, truth=args.truth, prior=_run_prior(run, args), ppc_draws=args.ppc_draws, source=args.run
        )
    print(f"wrote {out['html']} and {len(out['images'])} PNGs in {out['seconds']:.1f} s")
    return 0


def _cmd_import_2017(args) -> int:
    from bigmali.catalog import read_catalog
    from bigmali.datatree import save_run
    from bigmali.diagnostics import format_summary, summary
    from bigmali.files import check_output_file
    from bigmali.runs_2017 import read_2017_run

    check_output_file(args.out, overwrite=args.overwrite)
    catalog = read_catalog(args.catalog) if args.catalog else None
    run = read_2017_run(args.file, catalog)
    save_run(run, args.out)
    print(format_summary(summary(run, truth="hyperseed")))
    print(f"wrote {args.out}")
    return 0


class _PriorEntry(argparse.Action):
    """compare-priors: ``--mass-prior`` starts an entry; the other prior flags set the latest
    entry's option, or every entry's when they come before the first ``--mass-prior``."""

    def __call__(self, parser, namespace, values, option_string=None):
        entries = getattr(namespace, "entries", None) or []
        common = dict(getattr(namespace, "common", None) or {})
        if self.dest == "source":
            entries = [*entries, {"source": values}]
        elif entries:
            entries = [*entries[:-1], {**entries[-1], self.dest: values}]
        else:
            common[self.dest] = values
        namespace.entries, namespace.common = entries, common


def _cmd_compare_priors(args) -> int:
    import json

    from bigmali.catalog import read_catalog
    from bigmali.diagnostics.model_comparison import compare_priors, format_prior_comparison
    from bigmali.fit import DEFAULT_PRIOR_OPTIONS
    from bigmali.mass_prior import load_mass_prior

    entries = args.entries or []
    if len(entries) < 1:
        raise ValueError("give at least one --mass-prior (tinker10, 2017-sampler or a table file)")
    priors = {}
    for entry in entries:
        options = {**DEFAULT_PRIOR_OPTIONS, **(args.common or {}), **entry}
        label = ", ".join(f"{k}={v}" for k, v in options.items() if k != "source" and v != DEFAULT_PRIOR_OPTIONS[k])
        name = options["source"] + (f" ({label})" if label else "")
        if name in priors:
            raise ValueError(f"--mass-prior {name!r} is given twice")
        priors[name] = load_mass_prior(**options)
    catalog = read_catalog(args.catalog, z_max=min(p.z_max for p in priors.values()))
    result = compare_priors(
        catalog, priors, n_draws=args.n_draws, loo_draws=args.loo_draws, seed=args.seed, progress=not args.quiet
    )
    print(json.dumps(_strict_json(result)) if args.json else format_prior_comparison(result))
    return 0


ENGINE_FLAGS = {
    "chains": (COUNT, "chains"),
    "warmup": (NONNEGATIVE, "warmup iterations per chain (100 with --target-ess)"),
    "draws": (COUNT, "draws per chain (with --target-ess: at most)"),
    "target_ess": (
        NONNEGATIVE,
        "NUTS on the collapsed model: after warmup, draw until every hyperparameter has bulk and tail ESS "
        ">= this and R-hat within the convergence threshold (0: draw --draws)",
    ),
    "target_accept": (FRACTION, "NUTS target acceptance in (0, 1)"),
    "dense_mass": (bool, "use a dense mass matrix over the hyperparameters"),
    "max_tree_depth": (COUNT, "NUTS's largest tree depth"),
    "chain_method": (("sequential", "parallel", "vectorized"), "how NumPyro runs the chains"),
    "guide": (("mvn", "normal", "lowrank"), "SVI guide"),
    "steps": (COUNT, "SVI steps"),
    "learning_rate": (POSITIVE, "SVI Adam learning rate"),
    "num_particles": (COUNT, "SVI ELBO particles"),
    "svi_draws": (COUNT, "draws from the fitted SVI guide"),
    "tol": (POSITIVE, "SVI convergence tolerance on the loss"),
    "init_scale": (POSITIVE, "SVI guide's initial scale"),
    "n_hyper": (COUNT, "hyper-samples K of is_prior and is_proposal"),
    "is_samples": (COUNT, "importance samples per halo"),
    "is_clip": (bool, "clip proposed masses into the table, as in 2017"),
    "is_likelihood": (("is", "exact"), "is_prior: weight by the 2017 IS estimate or the exact collapsed likelihood"),
}
"""How the CLI shows each engine option (argparse type or choices, help). The defaults are not
here: they are the engines' configs' (``bigmali.inference.engines``), shown in the help."""
DEMO_DEFAULTS = {"target_ess": 400}
"""The demo draws until a usable posterior, not a fixed count (with the short warmup of
``bigmali.inference.nuts.TARGET_ESS_WARMUP``, as every fit to a target ESS)."""
CLI_OWNED = ("seed", "progress")  # --seed and --quiet, for every method


def _add_fit_arguments(parser: argparse.ArgumentParser, methods=None, defaults_here=None) -> None:
    """The flags of every option of ``methods``' engines (default: all), each defaulting to
    its engine's config: a flag left out is not passed, a flag the method lacks is refused.
    ``defaults_here``: options this command sets otherwise (``{name: value}``)."""
    from bigmali.inference.engines import option_defaults

    group = parser.add_argument_group("inference")
    group.add_argument("--seed", type=SEED, default=0)
    group.add_argument(
        "--mass-draws",
        type=NONNEGATIVE,
        default=20,
        help=(
            "posterior draws with per-halo masses (0: none; ~10 ms a draw at 10^5 halos with the "
            "prior's z bins, 1-3 s with --z-interp linear)"
        ),
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (once the new one is complete)"
    )
    defaults = option_defaults(methods)
    for name, by_method in defaults.items():
        if name in CLI_OWNED:
            continue
        kind, text = ENGINE_FLAGS[name]
        values = sorted({repr(v) for v in by_method.values()})
        shown = (
            "; ".join(f"{v} for {', '.join(m for m, d in by_method.items() if repr(d) == v)}" for v in values)
            if len(values) > 1
            else f"{values[0]}; {', '.join(by_method)}"
        )
        flag = "--" + name.replace("_", "-")
        if name == "target_accept":
            from bigmali.inference.nuts import TARGET_ACCEPT

            shown = "; ".join(f"{value} for {kind_} models" for kind_, value in TARGET_ACCEPT.items())
        default = (defaults_here or {}).get(name)
        if default is not None:
            shown = f"{default} here"
        if kind is bool:
            on = all(by_method.values())
            group.add_argument(
                ("--no-" if on else "--") + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const=not on,
                default=None,
                help=f"{'do not ' if on else ''}{text} (default: {'on' if on else 'off'}; {', '.join(by_method)})",
            )
        elif isinstance(kind, tuple):
            group.add_argument(flag, choices=kind, default=None, help=f"{text} (default: {shown})")
        else:
            group.add_argument(flag, type=kind, default=default, help=f"{text} (default: {shown})")
    parser.set_defaults(engine_options=tuple(name for name in defaults if name not in CLI_OWNED))


def build_parser() -> argparse.ArgumentParser:
    from bigmali.inference.engines import ENGINES
    from bigmali.models import MODELS

    parser = argparse.ArgumentParser(prog="bigmali", description="Big halo Mass And Luminosity Inference")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="draw a mock lightcone catalog")
    sim.add_argument("--out", required=True, metavar="FILE", help="output catalog (.fits, .ecsv, .csv, .txt)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sim.add_argument("--field-arcmin", type=POSITIVE, default=40.0, help="side of the square field (default 40)")
    sim.add_argument("--n-halos", type=COUNT, default=None, help="exactly this many halos (default: Poisson)")
    sim.add_argument("--seed", type=SEED, default=0)
    sim.add_argument(
        "--hyper",
        type=_hyper,
        default=None,
        metavar="alpha1=..,alpha2=..,alpha4=..,S=..",
        help="hyperparameters (unnamed ones keep the 2017 hyperseed)",
    )
    sim.add_argument(
        "--redshifts-from",
        default=None,
        metavar="CATALOG",
        help="take redshifts (and ra, dec) from this catalog instead of drawing a lightcone",
    )
    add_error_range_argument(sim)
    sim.add_argument(
        "--flux-limit",
        type=_flux_limit,
        default=None,
        metavar="VALUE|FILE",
        help="keep only the halos above this limit on lum_obs: a constant, or a table file with columns z "
        "and lum_lim (interpolated in ln lum_lim); recorded in the catalog's metadata",
    )
    add_prior_arguments(sim)
    sim.set_defaults(func=_cmd_simulate)

    val = sub.add_parser("validate", help="check a catalog and summarise it")
    val.add_argument("file", metavar="FILE")
    add_prior_arguments(val)
    val.set_defaults(func=_cmd_validate)

    pri = sub.add_parser("prior", help="describe the mass prior and plot it")
    pri.add_argument("--plot", default=None, metavar="FILE.png", help="plot every redshift table on one figure")
    add_prior_arguments(pri)
    pri.set_defaults(func=_cmd_prior)

    fit_p = sub.add_parser("fit", help="fit the relation to a catalog; writes a netCDF DataTree")
    fit_p.add_argument("catalog", metavar="CATALOG")
    fit_p.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="collapsed",
        help="collapsed: masses integrated out exactly; latent_mass: one latent ln M per halo; "
        "full: latent ln M and ln L per halo (latent models: nuts only)",
    )
    fit_p.add_argument(
        "--method",
        choices=tuple(ENGINES),
        default="nuts",
        help="; ".join(f"{e.name}: {e.summary} ({', '.join(e.models)})" for e in ENGINES.values()),
    )
    fit_p.add_argument("--out", required=True, metavar="run.nc")
    fit_p.add_argument("--truth", default=None, metavar="hyperseed|FILE", help="add a recovery table")
    fit_p.add_argument(
        "--flux-limit",
        type=lambda text: "none" if text.strip() == "none" else _flux_limit(text),
        default=None,
        metavar="VALUE|FILE|column|none",
        help="the survey's flux limit on lum_obs: a constant, a table file (columns z, lum_lim), the catalog's "
        "column lum_lim, or none (a complete catalog); default: the limit the catalog's metadata records, if any. "
        "Each halo's likelihood is then conditioned on its detection",
    )
    fit_p.add_argument(
        "--selection",
        choices=("truncated", "extended"),
        default="truncated",
        help="with a flux limit: truncated (each halo conditioned on its detection; right whatever the field) or "
        "extended (the number of detected halos counts too, Poisson in the survey's field; needs --survey-area "
        "unless the catalog is a lightcone mock)",
    )
    fit_p.add_argument(
        "--survey-area", type=float, default=None, metavar="DEG2", help="the survey's sky area (extended likelihood)"
    )
    fit_p.add_argument(
        "--survey-z",
        type=_redshift_window,
        default=None,
        metavar="LO,HI",
        help="the survey's redshift window (extended likelihood; default 0 to the mass prior's last table)",
    )
    fit_p.add_argument(
        "--shard-halos",
        action="store_true",
        help="split the halos across every JAX device (collapsed model, any method): each device sums its own "
        "halos' terms. With jax.distributed, across hosts (see the README)",
    )
    _add_fit_arguments(fit_p)
    add_prior_arguments(fit_p)
    fit_p.set_defaults(func=_cmd_fit)

    summ = sub.add_parser("summary", help="ArviZ summary of a run, with a recovery table given a truth")
    summ.add_argument("run", metavar="run.nc")
    summ.add_argument(
        "--truth", default=None, metavar="hyperseed|FILE", help="hyperseed, a JSON file or a mock catalog"
    )
    summ.add_argument(
        "--json",
        action="store_true",
        help='print the summary as one JSON object (NaN as null, infinities as "Infinity")',
    )
    summ.add_argument("--no-ppc", action="store_true", help="skip the posterior predictive check")
    summ.add_argument(
        "--no-conflict",
        action="store_true",
        help="skip the prior-data conflict checks (ArviZ power-scaling; ~10 s at 10^5 halos)",
    )
    summ.add_argument("--ppc-draws", type=COUNT, default=200, help="replicated catalogs for the PPC (default 200)")
    summ.add_argument("--force", action="store_true", help="use prior flags that contradict the run's recorded prior")
    add_prior_arguments(summ)
    summ.set_defaults(func=_cmd_summary)

    comp = sub.add_parser("compare", help="compare runs: means, sds, shifts in the first run's sd; overlaid marginals")
    comp.add_argument("runs", nargs="+", metavar="run.nc")
    comp.add_argument(
        "--png", default="compare.png", metavar="FILE", help="overlaid marginal densities (default compare.png)"
    )
    comp.add_argument("--truth", default=None, metavar="hyperseed|FILE", help="draw the truth on the plot")
    comp.add_argument("--json", action="store_true")
    comp.set_defaults(func=_cmd_compare)

    mm = sub.add_parser("massmap", help="per-halo mass posteriors and mass maps on the sky from a fitted run")
    mm.add_argument("run", metavar="run.nc")
    mm.add_argument("catalog", metavar="CATALOG", help="the catalog the run was fitted to (with ra, dec for maps)")
    mm.add_argument("-o", "--out", required=True, metavar="DIR")
    mm.add_argument("--pixels", type=COUNT, default=64, help="pixels per side of the RA/Dec grid (default 64)")
    mm.add_argument(
        "--field",
        type=_field,
        default=None,
        metavar="RA,DEC,WIDTH",
        help="map a square field (degrees) instead of the catalog's extent",
    )
    mm.add_argument(
        "--zbins", type=_z_edges, default=None, metavar="z0,z1,...", help="redshift slice edges (default: one slice)"
    )
    mm.add_argument(
        "--draws", type=_integer(2), default=1000, help="hyperposterior draws, one realisation each (default 1000)"
    )
    mm.add_argument("--keep", type=NONNEGATIVE, default=100, help="realisations kept in halo_masses.fits (default 100)")
    mm.add_argument("--seed", type=SEED, default=0)
    mm.add_argument(
        "--force",
        action="store_true",
        help="go on (with a warning) when the catalog or prior differ from the run's recorded fingerprint",
    )
    mm.add_argument("--quiet", action="store_true")
    add_prior_arguments(mm)
    mm.set_defaults(func=_cmd_massmap)

    sbc = sub.add_parser(
        "sbc", help="simulation-based calibration: fit mocks drawn from the hyperprior, test rank uniformity"
    )
    sbc.add_argument("--n-datasets", type=COUNT, required=True, metavar="K", help="mocks to fit")
    sbc.add_argument("--n-halos", type=COUNT, required=True, metavar="N", help="halos per mock")
    sbc.add_argument(
        "--out",
        required=True,
        metavar="FILE.jsonl",
        help="results, appended as each dataset finishes; an existing file is resumed",
    )
    sbc.add_argument("--model", choices=tuple(MODELS), default="collapsed")
    sbc.add_argument("--method", choices=tuple(ENGINES), default="nuts")
    sbc.add_argument(
        "--warmup", type=NONNEGATIVE, default=None, help="per fit (default 100 for the collapsed model, 300 otherwise)"
    )
    sbc.add_argument("--draws", type=COUNT, default=400)
    sbc.add_argument("--thin", type=COUNT, default=4, help="rank each truth among every THIN-th draw (default 4)")
    sbc.add_argument("--seed", type=SEED, default=0)
    sbc.add_argument("--plot", default=None, metavar="FILE.png", help="ECDF-difference plot (default: FILE with .png)")
    sbc.add_argument("--json", action="store_true", help="print the uniformity tests as JSON")
    sbc.add_argument("--quiet", action="store_true")
    add_error_range_argument(sbc)
    sbc.add_argument(
        "--flux-limit",
        type=_flux_limit,
        default=None,
        metavar="VALUE|FILE",
        help="every mock holds N halos above this limit on lum_obs (a constant, or a table file with columns z "
        "and lum_lim), each drawn from its truncated predictive at its redshift; every fit models the limit",
    )
    add_prior_arguments(sbc)
    sbc.set_defaults(func=_cmd_sbc)

    rep = sub.add_parser("report", help="a self-contained HTML report of a run (or --compare several runs)")
    rep.add_argument("run", nargs="?", default=None, metavar="run.nc")
    rep.add_argument("--compare", nargs="+", default=None, metavar="run.nc", help="overlay several runs instead")
    rep.add_argument("-o", "--out", required=True, metavar="DIR", help="writes DIR/report.html and the PNGs")
    rep.add_argument(
        "--truth",
        default=None,
        metavar="hyperseed|FILE",
        help="draw and score this truth (default: what the run's mock recorded)",
    )
    rep.add_argument("--ppc-draws", type=COUNT, default=200, help="replicated catalogs for the PPC (default 200)")
    rep.add_argument("--force", action="store_true", help="use prior flags that contradict the run's recorded prior")
    add_prior_arguments(rep)
    rep.set_defaults(func=_cmd_report)

    imp = sub.add_parser(
        "import-2017",
        help="read a 2017 output file (hyperprior draws and their 2017 log-likelihoods) into a weighted run",
    )
    imp.add_argument(
        "file", metavar="FILE", help="a 2017 output file: 5 columns (alpha1 alpha2 alpha4 S loglik) or 2 (S loglik)"
    )
    imp.add_argument(
        "--catalog", default=None, metavar="CATALOG", help="the catalog the 2017 run used (for PPC and report)"
    )
    imp.add_argument("--out", required=True, metavar="run.nc")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    imp.set_defaults(func=_cmd_import_2017)

    cp = sub.add_parser(
        "compare-priors",
        help="evidence (with its error), LOO elpd and the fitted hyperparameters of "
        "a catalog under each of several mass priors",
    )
    cp.add_argument("catalog", metavar="CATALOG")
    group = cp.add_argument_group(
        "mass priors (each --mass-prior starts an entry; the flags after it apply to it, "
        "flags before the first apply to all)"
    )
    group.add_argument("--mass-prior", dest="source", action=_PriorEntry, metavar="tinker10|2017-sampler|FILE")
    group.add_argument("--prior-density-per", dest="density_per", action=_PriorEntry, choices=("M", "lnM"))
    group.add_argument("--hmf-model", dest="hmf_model", action=_PriorEntry, metavar="NAME")
    group.add_argument("--cosmology", dest="cosmology", action=_PriorEntry, metavar="NAME")
    group.add_argument("--mass-convention", dest="mass_convention", action=_PriorEntry, choices=("2017", "physical"))
    group.add_argument("--z-interp", dest="z_interp", action=_PriorEntry, choices=("bins", "linear"))
    cp.add_argument("--n-draws", type=_integer(100), default=4000, help="importance draws per prior (default 4000)")
    cp.add_argument("--loo-draws", type=_integer(20), default=256, help="posterior draws for LOO (default 256)")
    cp.add_argument("--seed", type=SEED, default=0)
    cp.add_argument("--json", action="store_true", help='one JSON object (NaN as null, infinities as "Infinity")')
    cp.add_argument("--quiet", action="store_true", help="no progress bars")
    cp.set_defaults(func=_cmd_compare_priors, entries=None, common=None)

    demo = sub.add_parser("demo", help="simulate the 2017-sized mock, fit it with collapsed NUTS, show the recovery")
    demo.add_argument("--n-halos", type=COUNT, default=None, help="default 115919, the 2017 count")
    demo.add_argument("--out", default=None, metavar="run.nc")
    demo.add_argument("--json", action="store_true")
    _add_fit_arguments(demo, methods=("nuts",), defaults_here=DEMO_DEFAULTS)
    add_prior_arguments(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _terminate(signum, frame):
    # SIGTERM's default kills the process where it stands; as an exception it unwinds, and
    # every atomic write in progress removes its temporary file (the target is untouched).
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    """Run one command; a clear one-line error (exit 1) for bad input and failed file access.
    Unexpected exceptions keep their traceback."""
    import threading

    from bigmali.utils import use_compilation_cache

    args = build_parser().parse_args(argv)
    use_compilation_cache()
    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"bigmali {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename!r}" if exc.filename else ""
        print(f"bigmali {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bigmali {args.command}: interrupted; no output was left half-written", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
