"""Laplace approximation of a low-dimensional posterior, used to start NUTS well.

The collapsed posterior has four parameters that 10^5 halos pin down tightly and
correlate strongly (alpha1 and alpha2 trade off through the pivot mass). Started from
the hyperprior with a unit mass matrix, NUTS spends its first warmup windows at large
tree depth. The mode and the inverse Hessian of the potential give the mass matrix and
dispersed starting points (one draw of the Laplace approximation per chain) instead.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.infer.util import constrain_fn, potential_energy

from bigmali.utils import kept, map_blocks

__all__ = [
    "Laplace",
    "laplace",
    "mode_and_cov",
    "value_grad_hessian",
    "FD_STEP",
    "Whitener",
    "NotWhitenable",
    "whitener",
    "whitened_model",
    "whitening",
    "WHITENED_SITE",
    "LAPLACE_MAX_DIM",
]

LAPLACE_MAX_DIM = 50
"""Above this many latent variables the Hessian is not formed (the latent-mass models)."""


class Laplace(NamedTuple):
    """Mode and covariance of the potential in NumPyro's unconstrained coordinates.

    Attributes:
        mode: flat unconstrained mode.
        chol: Cholesky factor of the inverse Hessian of the potential at the mode.
        unravel: maps a flat vector back to the dict of sites.
    """

    mode: jax.Array
    chol: jax.Array
    unravel: object

    @property
    def cov(self) -> jax.Array:
        """The inverse Hessian of the potential at the mode."""
        return self.chol @ self.chol.T


MODE_MAX_ITER = 100
"""At most this many evaluations of the potential, its gradient and Hessian by :func:`mode_and_cov`."""
_TRUST_RADIUS = 2.0  # longest Newton step, in unconstrained units (the hyperprior's sd is ~1)
_ARMIJO = 1e-4
_DECREMENT_TOL = 1e-13  # stop when a Newton step would lower the potential by less than this


def _newton_step(g, hessian):
    """A descent step: Newton's, with the Hessian's eigenvalues taken in absolute value (so
    a saddle or a concave region is left, not approached) and no longer than the trust radius."""
    eig, vec = jnp.linalg.eigh(0.5 * (hessian + hessian.T))
    step = -vec @ ((vec.T @ g) / jnp.maximum(jnp.abs(eig), 1e-8))
    length = jnp.linalg.norm(step)
    return step * jnp.minimum(1.0, _TRUST_RADIUS / jnp.maximum(length, 1e-300))


FD_STEP = 1e-4
"""Step of the Hessian's central differences, in the potential's coordinates. bigmali's
potentials are in hyperprior-standardised coordinates, where a posterior sd is 1 (few
halos) to 0.01 (10^5 halos). Against the exact Hessian (forward over reverse): 2e-11
relative at 1,500 halos, 1e-6 at 10^5 halos (the likelihood's interpolation is only
piecewise smooth); the covariance within 1e-4 of a posterior sd. The Hessian only shapes
starting points, mass matrices and importance proposals, which need far less; the exact one
(linearize and vmap) took twice as long to compile (7.1 s against 3.1 s for the 1,500-halo
collapsed model's value, gradient and Hessian) and ran about as fast (34 ms against 38 ms)."""


def value_grad_hessian(f, x):
    """``f(x)``, its exact gradient, and its symmetrised Hessian by central differences of
    the gradient (``FD_STEP``): the value and gradient at ``2 d + 1`` points, one after the
    other (``lax.map``; on CPU about twice as fast as ``vmap`` for the collapsed likelihood)."""
    d = x.shape[0]
    shift = FD_STEP * jnp.eye(d, dtype=x.dtype)
    values, grads = jax.lax.map(jax.value_and_grad(f), jnp.concatenate([x[None], x + shift, x - shift]))
    hessian = (grads[1 : d + 1] - grads[d + 1 :]) / (2.0 * FD_STEP)
    return values[0], grads[0], 0.5 * (hessian + hessian.T)


def mode_and_cov(f, x0, max_iter: int = MODE_MAX_ITER):
    """Mode of ``f`` (a potential of a flat vector) from ``x0`` by damped Newton, and the
    inverse of the symmetrised Hessian there.

    Every iteration evaluates ``f``, its gradient and its Hessian once, at one trial point,
    inside one ``lax.while_loop``: the compiled program holds a single copy of the potential
    and its gradient (BFGS with a line search, then Newton steps, held about five and took
    about three times as long to compile). The Hessian is the central difference of the
    exact gradient over ``FD_STEP`` along each axis, the ``2d + 1`` gradients one ``lax.map``
    call (:func:`value_grad_hessian`). A trial point is accepted when it lowers
    ``f`` enough (Armijo), otherwise the step is quartered. It stops when the
    Newton decrement falls below 1e-13, or after ``max_iter`` evaluations. Traceable: it can
    sit inside a function that is jitted once for many datasets."""

    def body(carry):
        x, value, grad, hessian, step, scale, it, _ = carry
        trial = x + scale * step
        v_t, g_t, h_t = value_grad_hessian(f, trial)
        ok = jnp.isfinite(v_t) & jnp.all(jnp.isfinite(g_t)) & jnp.all(jnp.isfinite(h_t))
        # Near the mode a Newton step's gain is below the rounding of a large potential: a
        # trial within that rounding is accepted too.
        slack = 8.0 * jnp.finfo(x.dtype).eps * jnp.abs(value)
        accept = ok & (
            v_t <= value + _ARMIJO * scale * jnp.dot(grad, step) + jnp.where(jnp.isfinite(slack), slack, 0.0)
        )
        x, value, grad, hessian = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old), (trial, v_t, g_t, h_t), (x, value, grad, hessian)
        )
        step = _newton_step(grad, hessian)
        done = (accept & (-jnp.dot(grad, step) < _DECREMENT_TOL)) | (~accept & (scale < 1e-6))
        return x, value, grad, hessian, step, jnp.where(accept, 1.0, 0.25 * scale), it + 1, done

    def cond(carry):
        return ~carry[-1] & (carry[-2] < max_iter)

    d = x0.shape[0]
    # The first trial is x0 itself (a zero step), accepted against an infinite value: so the
    # potential appears in the loop body only.
    dtype = x0.dtype
    zero, one, inf = jnp.zeros(d, dtype), jnp.asarray(1.0, dtype), jnp.asarray(jnp.inf, dtype)
    init = (x0, inf, zero, jnp.eye(d, dtype=dtype), zero, one, jnp.asarray(0), jnp.asarray(False))
    x, _, _, hessian, *_ = jax.lax.while_loop(cond, body, init)
    return x, jnp.linalg.inv(0.5 * (hessian + hessian.T))


def laplace(model, model_args=()) -> Laplace | None:
    """The mode of ``model``'s potential (damped Newton, :func:`mode_and_cov`) and the inverse Hessian
    there, by the model's compiled :class:`Whitener`. None for a model with more than
    ``LAPLACE_MAX_DIM`` latent variables or with sites that are not real-valued."""
    try:
        w = whitener(model, model_args)
    except NotWhitenable:
        return None
    center, chol = w.start(model_args)
    return Laplace(center, chol, w.unravel)


WHITENED_SITE = "whitened"
"""The one sample site of a :func:`whitened_model`."""


def whitened_model(model, unravel, dim: int):
    """``model`` in coordinates ``w`` with ``x = center + chol w``: a model of
    ``(center, chol, *args)``.

    ``x`` is the flat vector of ``model``'s sample sites (``unravel`` maps it to them); every
    site must be real-valued, so that these are NumPyro's unconstrained coordinates. The sites
    are conditioned on the values ``w`` maps to, so the density is the model's own (hyperprior
    plus likelihood; the map is affine, its Jacobian a constant). With a Laplace approximation's
    mode and Cholesky factor as ``center`` and ``chol`` the posterior of ``w`` is close to
    N(0, I): samplers start at 0 with a unit scale. ``center`` and ``chol`` are arguments, so
    one compiled sampler serves every catalog (:func:`bigmali.inference.nuts.run_nuts`).
    """

    def whitened(center, chol, *args, **kwargs):
        w = numpyro.sample(WHITENED_SITE, dist.ImproperUniform(constraints.real_vector, (), (dim,)))
        return numpyro.handlers.condition(model, data=unravel(center + chol @ w))(*args, **kwargs)

    return whitened


def whitening(model, unravel, x0, args):
    """The Laplace mode and Cholesky factor of ``model``'s posterior given ``args``, for
    :func:`whitened_model`; traceable (jit it once per model). Where the Hessian is not
    positive definite the factor is not finite and the caller falls back to the identity."""

    def f(x):
        return potential_energy(model, args, {}, unravel(x))

    x, cov = mode_and_cov(f, x0)
    return x, jnp.linalg.cholesky(cov)


class NotWhitenable(ValueError):
    """A model with too many latent variables, or sites that are not real-valued."""


class Whitener:
    """A low-dimensional model's latent sites as one flat vector ``x``, with its Laplace
    whitening and its log density over many ``x`` compiled once for every catalog of the same
    shape (the catalog is an argument, not a constant; get one with :func:`whitener`).

    Attributes:
        model: the model (static settings bound); every site real-valued.
        dim, x0, unravel: the flat vector's size, zeros, and its map back to the sites.
    """

    def __init__(self, model, model_args):
        def sites(*args):
            tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(*args)
            latent = {k: v for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
            for name, site in latent.items():
                if site["fn"].support not in (constraints.real, constraints.real_vector):
                    raise NotWhitenable(f"site {name!r} is not real-valued: whitening needs real sites")
            return {k: v["value"] for k, v in latent.items()}

        shapes = jax.eval_shape(sites, *model_args)
        flat0, self.unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))
        self.model, self.dim, self.x0 = model, flat0.shape[0], jnp.zeros_like(flat0)
        if self.dim > LAPLACE_MAX_DIM:
            raise NotWhitenable(f"{self.dim} latent variables: too many to whiten (at most {LAPLACE_MAX_DIM})")
        self._start = jax.jit(partial(whitening, model, self.unravel))

        def log_density(x, args):
            return -potential_energy(model, args, {}, self.unravel(x))

        def constrained(x, args):
            return constrain_fn(model, args, {}, self.unravel(x), return_deterministic=True)

        self.log_density = jax.jit(jax.vmap(log_density, in_axes=(0, None)))
        """``(K, dim)`` flat points and the model's arguments to the log posterior density at each."""
        self.constrained = jax.jit(jax.vmap(constrained, in_axes=(0, None)))
        """``(K, dim)`` flat points to every site's value there, deterministic sites included."""

    def start(self, model_args):
        """The Laplace mode and Cholesky factor of the posterior given ``model_args``; the
        origin and the identity where the Hessian is not positive definite."""
        center, chol = self._start(self.x0, model_args)
        if not bool(jnp.all(jnp.isfinite(chol))):
            return self.x0, jnp.eye(self.dim)
        return center, chol

    def evaluate(self, x, model_args, bar=None, block: int = 64):
        """The log posterior density and every site's value at ``(K, dim)`` flat points, in
        blocks of ``block`` points (``bar`` advanced by each); NumPy arrays."""

        def f(xb):
            return self.log_density(xb, model_args), self.constrained(xb, model_args)

        return map_blocks(f, x, block, bar)

    def sites(self, x):
        """Flat points with any leading shape to the model's sites."""
        lead = x.shape[:-1]
        flat = jax.vmap(self.unravel)(x.reshape(-1, self.dim))
        return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), flat)


_WHITENERS: dict = {}  # compiled whiteners kept per process (bigmali.utils.kept)


def whitener(model, model_args) -> Whitener:
    """The :class:`Whitener` of ``model`` for arguments of these shapes, made once per process."""
    shapes = tuple((jnp.shape(a), str(getattr(a, "dtype", type(a)))) for a in jax.tree.leaves(model_args))
    return kept(_WHITENERS, (model, jax.tree.structure(model_args), shapes), lambda: Whitener(model, model_args))
