"""Diagnostics of a fit: convergence (ArviZ), recovery of a known truth, calibration."""

from bigmali.diagnostics.calibration import Calibration, calibrate
from bigmali.diagnostics.recovery import format_summary, resolve_truth, summary

__all__ = ["summary", "format_summary", "resolve_truth", "calibrate", "Calibration"]
