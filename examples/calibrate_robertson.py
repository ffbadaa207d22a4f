"""Calibrate a stiff ODE model written in C with SciPy: solve_ivp(method="BDF")
with the exact Jacobian of the C right-hand side from Enzyme, inside
least_squares.

Run: python examples/calibrate_robertson.py
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import scipy.integrate
import scipy.optimize

import enzyme
import enzyme.scipy

HERE = pathlib.Path(__file__).parent
TRUE_K = np.array([0.04, 3.0e7, 1.0e4])
T_OBS = np.logspace(-3, 3, 25)
Y0 = np.array([1.0, 0.0, 0.0])
SCALE = np.array([1.0, 1.0e4, 1.0])  # y2 stays near 1e-5: weigh it like the others


def model():
    """The C right-hand side as solve_ivp wants it: rhs.fun(t, y, k), rhs.jac(t, y, k)."""
    mod = enzyme.compile(path=HERE / "robertson.c")
    return enzyme.scipy.ode(mod.robertson, t="t", y="y", out="dydt")


def simulate(rhs, k, exact_jacobian=True):
    """The species at T_OBS; BDF's Newton iterations use Enzyme's exact
    Jacobian (or, with exact_jacobian=False, SciPy's finite differences)."""
    sol = scipy.integrate.solve_ivp(rhs.fun, (0.0, T_OBS[-1]), Y0, method="BDF",
                                    jac=rhs.jac if exact_jacobian else None, args=(k,),
                                    t_eval=T_OBS, rtol=1e-8, atol=1e-12)
    if not sol.success:
        raise RuntimeError(sol.message)
    return sol.y.T, sol.njev, sol.nfev


def calibrate(rhs, observed, start):
    """Fit log(k) to the observations (least_squares, its Jacobian by
    differences of whole simulations)."""

    def residuals(log_k):
        return ((simulate(rhs, np.exp(log_k))[0] - observed) * SCALE).ravel()

    return scipy.optimize.least_squares(residuals, start, x_scale=1.0, diff_step=1e-7,
                                        xtol=1e-10, ftol=1e-10)


def main():
    rhs = model()
    observed, _, _ = simulate(rhs, TRUE_K)
    for exact in (True, False):
        began = time.perf_counter()
        _, njev, nfev = simulate(rhs, TRUE_K, exact_jacobian=exact)
        print(f"one BDF solve, {'Enzyme Jacobian      ' if exact else 'finite-difference one'}: "
              f"{1e3 * (time.perf_counter() - began):6.1f} ms, {nfev} right-hand sides, {njev} Jacobians")
    start = np.log(TRUE_K) + np.array([0.5, -0.7, 0.6])  # every rate off by a factor of about 2
    began = time.perf_counter()
    fit = calibrate(rhs, observed, start)
    k = np.exp(fit.x)
    print(f"started from k = {np.exp(start)}")
    print(f"fitted       k = {k}  ({fit.nfev} residual evaluations, {time.perf_counter() - began:.1f} s)")
    print(f"true         k = {TRUE_K}")
    print(f"largest relative error of k: {np.max(np.abs(k / TRUE_K - 1)):.1e}")
    return k


if __name__ == "__main__":
    main()
