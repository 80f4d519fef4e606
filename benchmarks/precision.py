"""The mixed-precision mode (``BIGMALI_FLOAT32=1``, ``QuadratureConfig.halo_float32``) against
float64: the collapsed total log-likelihood and its gradient, on the fixed-sigma path, the
per-halo path and with per-halo errors; their speed on this machine; and the shift of a
collapsed NUTS fit's posterior means, in posterior sds, beside the shift another seed gives.

    python benchmarks/precision.py [--n-halos 115919] [--skip-fit]
"""

from __future__ import annotations

import argparse
import platform

import jax
import numpy as np

import bigmali
from bigmali import precision
from bigmali.likelihood import quadrature as Q
from bigmali.relation import HYPER_NAMES, HYPERSEED, Hyper

OFF = Hyper(10.70, 0.37, 1.30, 0.18)  # away from the hyperseed, where a sampler also goes


def likelihood_table(n_halos: int) -> None:
    from collapsed import median_ms  # benchmarks/collapsed.py, beside this script

    prior = bigmali.load_mass_prior()
    plain = bigmali.simulate(prior, n_halos=n_halos, seed=0)
    errs = bigmali.simulate(prior, n_halos=n_halos, seed=1, lum_obs_err=(0.02, 0.3))
    cases = {
        "fixed sigma": Q.prepare(plain.z, plain.lum_obs, prior, per_halo=False),
        "per halo": Q.prepare(plain.z, plain.lum_obs, prior, per_halo=True),
        "per-halo errors": Q.prepare(errs.z, errs.lum_obs, prior, lum_obs_err=errs.lum_obs_err),
    }
    print(f"{n_halos} halos; float32 - float64 (halo_float32) at the hyperseed and off it:")
    print(f"{'path':<18}{'total':>12}{'worst halo':>12}{'grad (rel)':>12}{'v+g f64':>10}{'v+g f32':>10}")
    for name, data in cases.items():
        configs = [Q.QuadratureConfig(), Q.QuadratureConfig(halo_float32=True)]
        fns = [jax.jit(jax.value_and_grad(Q.log_likelihood), static_argnums=2) for _ in configs]
        for point in (HYPERSEED, OFF):
            (v64, g64), (v32, g32) = (f(point, data, c) for f, c in zip(fns, configs))
            halos = [np.asarray(Q.log_likelihood_halos(point, data, c)) for c in configs]
            g64, g32 = np.asarray(list(g64)), np.asarray(list(g32))
            times = [median_ms(f, point, data, c, repeats=20) for f, c in zip(fns, configs)]
            print(
                f"{name:<18}{float(v32 - v64):>12.2e}{np.max(np.abs(halos[1] - halos[0])):>12.2e}"
                f"{np.max(np.abs(g32 - g64) / np.abs(g64)):>12.2e}{times[0]:>8.2f}ms{times[1]:>8.2f}ms"
            )


def posterior_shift(n_halos: int) -> None:
    prior = bigmali.load_mass_prior()
    mock = bigmali.simulate(prior, n_halos=n_halos, seed=0)

    def means(seed: int, f32: bool):
        precision.HALO_FLOAT32 = f32  # read by QuadratureConfig.for_prior when the fit is set up
        try:
            run = bigmali.fit(mock, prior=prior, target_ess=400, seed=seed, progress=False, mass_draws=0)
        finally:
            precision.HALO_FLOAT32 = False
        post = run["posterior"]
        return np.array([float(post[n].mean()) for n in HYPER_NAMES]), np.array(
            [float(post[n].std()) for n in HYPER_NAMES]
        )

    m64, sd = means(0, False)
    m32, _ = means(0, True)
    other, _ = means(1, False)
    print(f"collapsed NUTS to ESS 400, {n_halos} halos: posterior mean shift in posterior sds")
    print(f"{'':<22}" + "".join(f"{n:>10}" for n in HYPER_NAMES))
    print(f"{'float32, same seed':<22}" + "".join(f"{x:>10.3f}" for x in (m32 - m64) / sd))
    print(f"{'float64, seed 1':<22}" + "".join(f"{x:>10.3f}" for x in (other - m64) / sd))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-halos", type=int, default=115_919)
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    likelihood_table(args.n_halos)
    if not args.skip_fit:
        posterior_shift(args.n_halos)


if __name__ == "__main__":
    main()
