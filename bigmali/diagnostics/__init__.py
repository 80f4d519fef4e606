"""Diagnostics of a fit, on ArviZ: convergence checks, recovery of a known truth, posterior
predictive checks, LOO over halos, importance weights, simulation-based calibration, reports.

- :mod:`~bigmali.diagnostics.convergence`: R-hat, ESS, MCSE, divergences, tree depth, E-BFMI
- :mod:`~bigmali.diagnostics.recovery`: the summary and the truth's quantile, z-score, HDIs
- :mod:`~bigmali.diagnostics.ppc`: posterior predictive checks of L_obs per redshift bin
- :mod:`~bigmali.diagnostics.loo`: PSIS-LOO over halos
- :mod:`~bigmali.weights`: PSIS k-hat and ESS of importance weights
- :mod:`~bigmali.diagnostics.sbc`: simulation-based calibration across many mocks
- :mod:`~bigmali.diagnostics.compare` and :mod:`~bigmali.diagnostics.report`: several runs, HTML reports
"""

from bigmali.diagnostics.convergence import convergence, format_convergence
from bigmali.diagnostics.recovery import format_summary, resolve_truth, summary

__all__ = ["summary", "format_summary", "resolve_truth", "convergence", "format_convergence"]
