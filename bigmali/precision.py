"""Numerical precision for bigmali, set in exactly one place.

Per-halo likelihoods are tiny numbers and the collapsed likelihood sums 10^5 terms,
so bigmali runs JAX in float64 by default. Set the environment variable
``BIGMALI_FLOAT32=1`` before importing bigmali to keep JAX's float32 default
(for accelerators), once a test has shown float32 accurate enough for the job.
"""

import os

import jax

__all__ = ["FLOAT64", "configure"]

FLOAT64 = os.environ.get("BIGMALI_FLOAT32", "0") not in ("1", "true", "yes")


def configure() -> None:
    """Apply bigmali's precision choice to JAX (idempotent)."""
    jax.config.update("jax_enable_x64", FLOAT64)
