"""Diagnostics of a fit: convergence (ArviZ) and recovery of a known truth."""

from bigmali.diagnostics.recovery import format_summary, resolve_truth, summary

__all__ = ["summary", "format_summary", "resolve_truth"]
