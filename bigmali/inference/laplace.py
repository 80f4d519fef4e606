"""Laplace approximation of a low-dimensional posterior, used to start NUTS well.

The collapsed posterior has four parameters that 10^5 halos pin down tightly and
correlate strongly (alpha1 and alpha2 trade off through the pivot mass). Started from
the hyperprior with a unit mass matrix, NUTS spends its first warmup windows at large
tree depth. The mode and the inverse Hessian of the potential give the mass matrix and
dispersed starting points (one draw of the Laplace approximation per chain) instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.optimize as jso
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import initialize_model

__all__ = ["Laplace", "laplace", "mode_and_cov", "LAPLACE_MAX_DIM"]

LAPLACE_MAX_DIM = 50
"""Above this many latent variables the Hessian is not formed (the latent-mass models)."""


class Laplace(NamedTuple):
    """Mode and covariance of the potential in NumPyro's unconstrained coordinates.

    Attributes:
        mode: flat unconstrained mode.
        cov: inverse Hessian of the potential at the mode.
        unravel: maps a flat vector back to the dict of sites.
        converged: whether BFGS met its tolerance.
    """

    mode: jax.Array
    cov: jax.Array
    unravel: object
    converged: bool

    def draws(self, key, n: int):
        """``n`` draws from N(mode, cov), as a dict of sites with a leading axis of size n."""
        chol = jnp.linalg.cholesky(self.cov)
        flat = self.mode + (chol @ jax.random.normal(key, (self.mode.shape[0], n))).T
        return jax.vmap(self.unravel)(flat)


def mode_and_cov(f, x0, newton_steps: int = 0):
    """Mode of ``f`` (a potential of a flat vector) by BFGS from ``x0``, then ``newton_steps``
    Newton steps, and the inverse of the symmetrised Hessian there. Traceable: it can sit
    inside a function that is jitted once for many datasets."""
    x = jso.minimize(f, x0, method="BFGS").x
    hess, grad = jax.hessian(f), jax.grad(f)
    for _ in range(newton_steps):
        step = jnp.linalg.solve(hess(x), grad(x))
        x = jnp.where(jnp.all(jnp.isfinite(step)), x - step, x)
    hessian = hess(x)
    return x, jnp.linalg.inv(0.5 * (hessian + hessian.T))


def laplace(model, model_args=(), model_kwargs=None, key=None) -> Laplace | None:
    """Find the mode of ``model``'s potential with BFGS and take the Hessian there.

    Returns None for models with more than ``LAPLACE_MAX_DIM`` latent variables.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    info, potential, _, _ = initialize_model(key, model, model_args=model_args, model_kwargs=model_kwargs or {})
    flat0, unravel = ravel_pytree(info.z)
    if flat0.shape[0] > LAPLACE_MAX_DIM:
        return None
    f = jax.jit(lambda x: potential(unravel(x)))
    # BFGS stops on a gradient tolerance that a potential of size 1e6 rarely meets;
    # two Newton steps finish the job on this near-quadratic surface.
    x, cov = mode_and_cov(f, jnp.zeros_like(flat0), newton_steps=2)
    g = jax.grad(f)(x)
    gnorm = float(jnp.linalg.norm(g @ cov @ g))
    return Laplace(x, cov, unravel, bool(gnorm < 1e-6))
