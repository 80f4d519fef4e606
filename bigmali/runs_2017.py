"""The 2017 results read back as weighted runs, so that ArviZ and every bigmali command see them.

The 2017 hyper-level inference drew hyperparameters from the hyperprior and weighted each by
its importance-sampled log-likelihood (100 or 10,000 samples per halo). Its output files are
whitespace text without a header, one hyper-sample per line:

* 5 columns ``alpha1 alpha2 alpha4 S loglik`` (``bigmaliprior.out``, ``bigmaliorig.out``,
  ``fullexp10000.txt``, the ``likelihoodvariancetest*`` files);
* 2 columns ``S loglik`` (``justStest.txt``, ``simpletest10000.txt``): the "simpler model", with
  alpha1, alpha2 and alpha4 fixed at the hyperseed.

:func:`read_2017_run` turns one into the DataTree of a weighted run, exactly as bigmali's own
``is_prior`` method writes one: the draws as one chain, the 2017 log-likelihood as the raw log
weight (ArviZ's PSIS-smoothed weights beside it), their diagnostics in the attrs, and the
observed catalog when one is given. ``summary``, ``report`` and ``compare`` then work on it
unchanged. The copies of the files in ``data/2017/`` carry their provenance.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np

from bigmali.relation import HYPER_NAMES, HYPERSEED

__all__ = ["read_2017_run", "read_2017_table", "COLUMNS_2017"]

COLUMNS_2017 = {5: ("alpha1", "alpha2", "alpha4", "S", "loglik"), 2: ("S", "loglik")}
"""The columns of the 2017 output files, by their number."""


def read_2017_table(path) -> dict:
    """The columns of a 2017 output file as ``{name: (K,) array}``, checked line by line.

    Every error names the file, the line, the column and the value: a line with another
    number of values than the first, a value that is not a number, a non-finite
    hyperparameter, ``S <= 0``, or a log-likelihood that is NaN or +inf (-inf is a weight of
    zero and is kept).
    """
    path = Path(path)
    source = repr(str(path))
    if path.is_dir():
        raise ValueError(f"cannot read 2017 run {source}: it is a directory, not a 2017 output file")
    if not path.is_file():
        raise ValueError(f"cannot read 2017 run {source}: no such file")
    rows, names = [], None
    try:
        with path.open() as handle:
            for lineno, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    continue
                if names is None:
                    if len(fields) not in COLUMNS_2017:
                        raise ValueError(
                            f"2017 run {source}, line {lineno}: {len(fields)} values; 2017 output files have "
                            "5 (alpha1 alpha2 alpha4 S loglik) or 2 (S loglik)"
                        )
                    names = COLUMNS_2017[len(fields)]
                elif len(fields) != len(names):
                    raise ValueError(
                        f"2017 run {source}, line {lineno}: {len(fields)} values where the file's first line "
                        f"has {len(names)} ({' '.join(names)})"
                    )
                row = []
                for name, text in zip(names, fields):
                    try:
                        value = float(text)
                    except ValueError:
                        raise ValueError(
                            f"2017 run {source}, line {lineno}, column {name!r}: value {text!r} is not a number"
                        ) from None
                    bad = (math.isnan(value) or value == math.inf) if name == "loglik" else not math.isfinite(value)
                    if bad or (name == "S" and value <= 0):
                        need = (
                            "a number or -inf"
                            if name == "loglik"
                            else ("a positive number" if name == "S" else "a finite number")
                        )
                        raise ValueError(
                            f"2017 run {source}, line {lineno}, column {name!r}: value {text!r} must be {need}"
                        )
                    row.append(value)
                rows.append(row)
    except UnicodeDecodeError:
        raise ValueError(f"cannot read 2017 run {source}: it is not a text file") from None
    if not rows:
        raise ValueError(f"2017 run {source}: the file holds no hyper-samples")
    values = np.asarray(rows, dtype=np.float64)
    return {name: values[:, i] for i, name in enumerate(names)}


def read_2017_run(path, catalog=None):
    """A 2017 output file as a weighted run (module docstring).

    Args:
        path: a 2017 output file (5 or 2 columns).
        catalog: the :class:`~bigmali.catalog.Catalog` the 2017 run was computed on (for the
            2017 files, ``data/2017/mock_data_prior.txt``), attached as ``observed_data`` and
            ``constant_data`` so that the PPC and the report's checks can run; optional.

    For the 2-column files the fixed hyperparameters are the hyperseed, constant over the draws.
    The mass prior recorded is the 2017 default (Tinker10, WMAP5, 2017 convention, z bins), the
    prior the 2017 likelihood used.
    """
    from bigmali import __version__
    from bigmali.datatree import build_datatree
    from bigmali.fit import DEFAULT_PRIOR_OPTIONS, fingerprint
    from bigmali.inference.importance import weighted_output
    from bigmali.mass_prior import load_mass_prior

    path = Path(path)
    table = read_2017_table(path)
    k = table["loglik"].size
    samples = {
        name: (table[name] if name in table else np.full(k, float(getattr(HYPERSEED, name)))).reshape(1, k)
        for name in HYPER_NAMES
    }
    log_like = table["loglik"]
    out = weighted_output(
        {name: samples[name].ravel() for name in HYPER_NAMES}, log_like, log_like, time.perf_counter()
    )
    stats = {
        "log_weight": out.log_weight,
        "log_weight_raw": out.log_weight_raw,
        "log_likelihood_estimate": out.log_likelihood,
    }
    fixed = [name for name in HYPER_NAMES if name not in table]
    attrs = {
        "model": "collapsed",
        "method": "2017",
        "n_halos": len(catalog) if catalog is not None else 0,
        "seconds": float("nan"),
        "config": {
            "source": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "columns": list(COLUMNS_2017[len(table)]),
            "fixed_at_hyperseed": fixed,
            "weights": "the 2017 importance-sampled log-likelihood",
        },
        "prior_options": DEFAULT_PRIOR_OPTIONS,
        "prior_description": "the 2017 default (hmf Tinker10 in WMAP5, 2017 mass convention, z bins)",
        "weights": out.diagnostics,
        "bigmali_version": __version__,
    }
    if catalog is not None:
        attrs["fingerprint"] = fingerprint(catalog, load_mass_prior(**DEFAULT_PRIOR_OPTIONS))
    # The 2017 draws are hyperprior draws: they are the prior group too.
    prior_draws = {name: samples[name].copy() for name in HYPER_NAMES}
    return build_datatree(posterior=samples, sample_stats=stats, catalog=catalog, prior_draws=prior_draws, attrs=attrs)
