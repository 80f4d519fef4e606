"""Numerical precision for bigmali, set in exactly one place.

Per-halo likelihoods are tiny numbers and the collapsed likelihood sums 10^5 terms or more,
so bigmali runs JAX with float64 enabled, always. Setting the environment variable
``BIGMALI_FLOAT32=1`` before importing bigmali selects the mixed-precision mode for
accelerators (whose float64 runs at a fraction of their float32 speed): the collapsed
likelihood's per-halo interpolation runs in float32 (``QuadratureConfig.halo_float32``),
while every position, hyperparameter and sum stays float64. Each halo's value is its
stencil's base node in float64 plus a float32 correction of order one, so the float32
rounding enters at ~1e-7 of that correction, not of the value.

Measured on the 115,919-halo mock (``python benchmarks/precision.py``), at the hyperseed and
off it: the total log-likelihood within 1.5e-5 of float64, every halo within 1.2e-7, the
gradient within 4e-6 relative, on the fixed-sigma path, the per-halo path and with per-halo
errors. A collapsed NUTS fit to ESS 400 moved its posterior means by 0.001 to 0.04 posterior
sds (another seed in float64: 0.005 to 0.09), which is Monte Carlo noise. So the mode is safe
wherever float64 is, for the total, its gradient and the posterior. Plain float32 throughout
(JAX's default, x64 off) put the total 168 away at that size and is not offered. On this
project's CPU the mode is no faster (value + gradient 0.9 to 1.15 times float64's: fixed sigma
1.18 against 1.29 ms and 1.15 against 1.00 ms, per-halo errors 5.0 against 4.4 ms), so it is
off by default; it is meant for GPUs, where it has not been measured.
"""

import os

import jax

__all__ = ["HALO_FLOAT32", "configure"]

HALO_FLOAT32 = os.environ.get("BIGMALI_FLOAT32", "0") in ("1", "true", "yes")


def configure() -> None:
    """Apply bigmali's precision choice to JAX (idempotent): float64 enabled."""
    jax.config.update("jax_enable_x64", True)
