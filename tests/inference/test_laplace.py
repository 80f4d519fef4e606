"""The Laplace step: damped Newton's mode and the finite-difference Hessian it uses."""

import jax
import jax.numpy as jnp
import numpy as np

from bigmali.inference.laplace import mode_and_cov, value_grad_hessian

MODE = jnp.array([0.3, -1.2, 2.0, 0.5])
A = jnp.array([[4.0, 1.0, 0.0, 0.5], [1.0, 3.0, 0.2, 0.0], [0.0, 0.2, 2.0, 0.3], [0.5, 0.0, 0.3, 1.0]])


def potential(x):
    """Not quadratic (quartic and exponential terms), with its mode at MODE and Hessian A there."""
    d = x - MODE
    return 0.5 * d @ A @ d + 0.25 * jnp.sum(d**4) + jnp.sum(jnp.exp(d) - 1.0 - d - 0.5 * d**2)


def test_finite_difference_hessian_matches_the_exact_one():
    x = MODE + jnp.array([0.4, -0.3, 0.2, 0.7])
    value, grad, hessian = jax.jit(lambda y: value_grad_hessian(potential, y))(x)
    assert float(value) == float(potential(x))
    np.testing.assert_allclose(grad, jax.grad(potential)(x), rtol=1e-14)
    exact = jax.hessian(potential)(x)
    np.testing.assert_allclose(hessian, exact, rtol=1e-7, atol=1e-7 * float(jnp.max(jnp.abs(exact))))
    np.testing.assert_array_equal(hessian, hessian.T)


def test_newton_finds_the_mode_and_its_inverse_hessian_from_far_away():
    x, cov = jax.jit(lambda x0: mode_and_cov(potential, x0))(jnp.array([5.0, 4.0, -6.0, 3.0]))
    # It stops at a Newton decrement below 1e-13: within sqrt(1e-13) ~ 3e-7 of the mode in
    # the potential's own units (A's eigenvalues are about 1).
    np.testing.assert_allclose(x, MODE, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cov, np.linalg.inv(np.asarray(A)), rtol=1e-7, atol=1e-9)
