"""Helpers (grad, value_and_grad, jvp, vjp, jacobian, hvp, hessian) keep the
derivatives that flow through arrays the kernel writes and reads back.

Found by the random-program run (issue 9, F3): the helpers passed every
argument they do not differentiate as Const, and Enzyme drops what flows
through Const memory, so a kernel summing a scratch buffer of cubes had
gradient 0 (and the Jacobian of one squaring through scratch gave x^2
instead of 3x^2). Oracle: analytic derivatives.
"""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import Forward, Reverse

SOURCE = r"""
double cubes(const double *x, double *tmp, int n) {
    for (int i = 0; i < n; i++) tmp[i] = x[i] * x[i] * x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += tmp[i];
    return s;
}
void through(const double *x, double *tmp, double *y, int n) {
    for (int i = 0; i < n; i++) tmp[i] = x[i] * x[i];
    for (int i = 0; i < n; i++) y[i] = tmp[i] * x[i];
}
float cubes_f(const float *x, float *tmp, int n) {
    for (int i = 0; i < n; i++) tmp[i] = x[i] * x[i] * x[i];
    float s = 0;
    for (int i = 0; i < n; i++) s += tmp[i];
    return s;
}
/* legacy style: a read-only weight array not declared const */
double weighted(double *x, double *w, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += w[i] * x[i] * x[i];
    return s;
}
"""

X = np.array([1.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


def test_gradients_through_a_scratch_array(mod):
    tmp = np.zeros(3)
    np.testing.assert_allclose(enzyme.grad(mod.cubes)(X, tmp, 3), 3 * X**2)
    value, g = enzyme.value_and_grad(mod.cubes)(X, tmp, 3)
    assert value == pytest.approx(36.0)
    np.testing.assert_allclose(g, 3 * X**2)
    value, g = enzyme.vjp(mod.cubes, wrt=0)(X, tmp, 3, 2.0)
    np.testing.assert_allclose(g, 6 * X**2)
    value, t = enzyme.jvp(mod.cubes, wrt=0)(X, tmp, 3, np.array([1.0, 0.5, -1.0]))
    assert t == pytest.approx(3 * 1 + 12 * 0.5 - 27)


def test_float32_scratch(mod):
    x = X.astype(np.float32)
    np.testing.assert_allclose(enzyme.grad(mod.cubes_f)(x, np.zeros(3, np.float32), 3), 3 * X**2,
                               rtol=1e-6)


def test_second_derivatives_through_a_scratch_array(mod):
    tmp = np.zeros(3)
    v = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(enzyme.hvp(mod.cubes)(X, tmp, 3, v), 6 * X * v)
    # chunk 2 over 3 columns: batched lanes, the last chunk with a padding lane
    np.testing.assert_allclose(enzyme.hessian(mod.cubes, chunk=2)(X, tmp, 3), np.diag(6 * X))
    np.testing.assert_allclose(enzyme.hessian(mod.cubes, chunk=1)(X, tmp, 3), np.diag(6 * X))


@pytest.mark.parametrize("mode", [Forward, Reverse])
@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_jacobian_through_a_scratch_array(mod, mode, chunk):
    J = enzyme.jacobian(mod.through, wrt=0, out=2, mode=mode, chunk=chunk)(X, np.zeros(3), np.zeros(3), 3)
    np.testing.assert_allclose(J, np.diag(3 * X**2))


def test_output_tangents_through_a_scratch_array(mod):
    y, t = enzyme.jvp(mod.through, wrt=0, out=2)(X, np.zeros(3), np.zeros(3), 3, np.ones(3))
    np.testing.assert_allclose(y, X**3)
    np.testing.assert_allclose(t, 3 * X**2)
    _, u = enzyme.vjp(mod.through, wrt=0, out=2)(X, np.zeros(3), np.zeros(3), 3, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(u, 3 * X**2 * [1.0, 2.0, 3.0])


def test_non_const_read_only_array_still_gives_right_derivatives(mod):
    w = np.array([0.5, 2.0, -1.0])
    before = w.copy()
    np.testing.assert_allclose(enzyme.grad(mod.weighted)(X, w, 3), 2 * w * X)
    np.testing.assert_allclose(enzyme.grad(mod.weighted, argnums=1)(X, w, 3), X**2)
    np.testing.assert_allclose(enzyme.hessian(mod.weighted)(X, w, 3), np.diag(2 * w))
    np.testing.assert_array_equal(w, before)
