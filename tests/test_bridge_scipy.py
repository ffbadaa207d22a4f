"""enzyme.scipy adapters: checked against analytic derivatives and central
differences, used by the real solvers, strided points and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

import enzyme
import enzyme.scipy

SRC = """
#include <math.h>
double rosen(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n - 1; i++) s += 100 * (x[i+1] - x[i]*x[i]) * (x[i+1] - x[i]*x[i]) + (1 - x[i]) * (1 - x[i]);
    return s; }
void res(const double *p, const double *t, const double *y, double *r, int m) {
    for (int i = 0; i < m; i++) r[i] = p[0] * exp(-p[1] * t[i]) - y[i]; }
void vdp(double t, const double *y, double *dy, const double *mu) {
    dy[0] = y[1]; dy[1] = mu[0] * (1 - y[0] * y[0]) * y[1] - y[0] + 0 * t; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"res": {"r": "m"}})


def central(f, x, h=1e-6):
    x = np.asarray(x, dtype=float)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def test_minimize_adapter(mod):
    f = enzyme.scipy.minimize(mod.rosen, wrt="x")
    x = np.array([-1.2, 1.0, 0.5, 2.0])
    np.testing.assert_allclose(f.jac(x, 4), central(lambda z: f.fun(z, 4), x), rtol=1e-6)
    np.testing.assert_allclose(f.hess(x, 4), central(lambda z: f.jac(z, 4), x), rtol=1e-6, atol=1e-6)
    p = np.array([1.0, -1.0, 2.0, 0.5])
    np.testing.assert_allclose(f.hessp(x, p, 4), f.hess(x, 4) @ p, rtol=1e-13)
    value, gradient = f.fun_and_jac(x, 4)
    assert value == f.fun(x, 4)
    np.testing.assert_array_equal(gradient, f.jac(x, 4))
    # a strided point (a column of a matrix) and a list are converted
    grid = np.stack([x, 2 * x], axis=1)
    np.testing.assert_array_equal(f.jac(grid[:, 0], 4), f.jac(list(x), 4))
    for method, kwargs in [("trust-ncg", {"jac": f.jac, "hessp": f.hessp}),
                           ("Newton-CG", {"jac": f.jac, "hess": f.hess}),
                           ("BFGS", {"jac": True})]:
        fun = f.fun_and_jac if kwargs.get("jac") is True else f.fun
        result = scipy.optimize.minimize(fun, np.zeros(4), args=(4,), method=method, tol=1e-10, **kwargs)
        np.testing.assert_allclose(result.x, np.ones(4), atol=1e-4)
    with pytest.raises(enzyme.ArgumentTypeError, match="args="):
        f.fun(x)


def test_least_squares_adapter(mod):
    t = np.linspace(0, 1, 20)
    y = 2 * np.exp(-3 * t)
    f = enzyme.scipy.least_squares(mod.res, wrt="p", out="r")
    p = np.array([1.5, 2.0])
    expected = np.stack([np.exp(-p[1] * t), -p[0] * t * np.exp(-p[1] * t)], axis=1)
    np.testing.assert_allclose(f.jac(p, t, y, 20), expected, rtol=1e-14)
    fit = scipy.optimize.least_squares(f.fun, [1.0, 1.0], jac=f.jac, args=(t, y, 20))
    np.testing.assert_allclose(fit.x, [2.0, 3.0], rtol=1e-9)
    again = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(again.jac(p, t, y, 20), f.jac(p, t, y, 20))


def test_ode_adapter_with_a_stiff_solver(mod):
    rhs = enzyme.scipy.ode(mod.vdp, t="t", y="y", out="dy", params="mu")
    mu = np.array([1000.0])
    y = np.array([2.0, -0.5])
    np.testing.assert_allclose(rhs.jac(0.0, y, mu), [[0, 1], [-2 * mu[0] * y[0] * y[1] - 1, mu[0] * (1 - y[0] ** 2)]],
                               rtol=1e-14)
    np.testing.assert_allclose(rhs.jac_params(0.0, y, mu), [[0.0], [(1 - y[0] ** 2) * y[1]]], rtol=1e-14)
    exact = scipy.integrate.solve_ivp(rhs.fun, (0, 10), [2.0, 0.0], method="Radau", jac=rhs.jac, args=(mu,),
                                      rtol=1e-8, atol=1e-10)
    differences = scipy.integrate.solve_ivp(rhs.fun, (0, 10), [2.0, 0.0], method="Radau", args=(mu,),
                                            rtol=1e-8, atol=1e-10)
    assert exact.success and differences.success
    np.testing.assert_allclose(exact.y[:, -1], differences.y[:, -1], rtol=1e-5)
    assert exact.njev > 0
    again = pickle.loads(pickle.dumps(rhs))
    np.testing.assert_array_equal(again.jac(0.0, y, mu), rhs.jac(0.0, y, mu))


def test_the_stiff_calibration_example_recovers_the_rates(tc, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "calibrate_robertson.py"
    spec = importlib.util.spec_from_file_location("calibrate_robertson", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    k = example.main()
    np.testing.assert_allclose(k, example.TRUE_K, rtol=1e-6)
    rhs = example.model()
    y = np.array([0.9, 2e-5, 0.1])
    jac = rhs.jac(0.0, y, example.TRUE_K)
    np.testing.assert_allclose(jac, central(lambda z: rhs.fun(0.0, z, example.TRUE_K), y, h=1e-9),
                               rtol=1e-5, atol=1e-3)


def test_vectorized_right_hand_sides_and_points_the_kernel_writes(cc):
    mod = cc("""void decay(double t, const double *y, double *dy, const double *k) {
        dy[0] = -k[0] * y[0]; dy[1] = k[0] * y[0] - k[1] * y[1]; }
        double sqnorm(double *x, int n) { double s = 0; for (int i = 0; i < n; i++) { s += x[i] * x[i]; x[i] = 0; }
            return s; }""")
    rhs = enzyme.scipy.ode(mod.decay, t="t", y="y", out="dy")
    k = np.array([1.0, 2.0])
    np.testing.assert_array_equal(rhs.fun(0.0, np.array([[1.0, 2.0], [0.0, 0.0]]), k), [[-1.0, -2.0], [1.0, 2.0]])
    sol = scipy.integrate.solve_ivp(rhs.fun, (0, 1), [1.0, 0.0], args=(k,), vectorized=True, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.y[0, -1], np.exp(-1.0), rtol=1e-8)
    with pytest.raises(enzyme.ArgumentTypeError, match="t must be a number"):
        rhs.fun(np.array([0.0, 1.0]), [1.0, 0.0], k)
    f = enzyme.scipy.minimize(mod.sqnorm, wrt="x")
    x = np.array([1.0, 2.0])
    assert f.fun(x, 2) == 5.0
    np.testing.assert_array_equal(f.jac(x, 2), [2.0, 4.0])
    np.testing.assert_array_equal(x, [1.0, 2.0])  # the solver's point is not written
    with pytest.raises(enzyme.ArgumentValueError, match="one-dimensional"):
        f.fun(np.ones((2, 2)), 2)
