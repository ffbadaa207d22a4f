"""Global variables: one copy shared by the primal and every derivative
library, viewable from Python, and Enzyme shadows for active globals."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import Active, BatchDuplicated, Const, Duplicated, Forward, Reverse, autodiff

SOURCE = r"""
#include <math.h>
double stiffness = 3.0;                 /* active state: gets a shadow */
double weights[4] = {1.0, 0.5, 0.25, 0.125};
const double table[2] = {10.0, 20.0};   /* read-only */
int calls;                              /* integer state, no shadow */
struct params { double rate; int order; } model = {0.5, 2};
static double hidden = 1.0;             /* file-static: private to each library */

double energy(const double *x, int n) {
    double e = 0.0;
    calls++;
    for (int i = 0; i < n; i++) e += 0.5 * stiffness * weights[i % 4] * x[i] * x[i];
    return e + model.rate * table[0] * hidden;
}
void set_stiffness(double k) { stiffness = k; }
"""


@pytest.fixture
def mod(cc):
    return cc(SOURCE)


def test_views_and_shared_state(mod):
    assert set(mod.globals) == {"stiffness", "weights", "table", "calls", "model"}
    assert set(mod.shadows) == {"stiffness", "weights", "model"}
    assert float(mod.globals["stiffness"]) == 3.0
    np.testing.assert_array_equal(mod.globals["weights"], [1.0, 0.5, 0.25, 0.125])
    assert mod.globals["model"]["order"] == 2
    mod.set_stiffness(5.0)          # written by C ...
    assert float(mod.globals["stiffness"]) == 5.0   # ... seen from Python
    mod.globals["stiffness"][...] = 2.0              # written from Python ...
    x = np.array([1.0, 2.0])
    # ... seen by a derivative library, which shares the primal library's globals
    r = autodiff(enzyme.ReverseWithPrimal, mod.energy, Duplicated(x, np.zeros(2)), Const(2))
    assert r.primal == pytest.approx(0.5 * 2.0 * (1.0 + 0.5 * 4.0) + 0.5 * 10.0)
    calls_before = int(mod.globals["calls"])
    autodiff(Reverse, mod.energy, Duplicated(x, np.zeros(2)), Const(2))
    mod.energy(x, 2)
    assert int(mod.globals["calls"]) == calls_before + 2   # one counter for all libraries


def test_shadow_of_an_active_global(mod):
    x = np.array([1.0, 2.0, 3.0])
    # globals and their shadows are process-wide state: set them explicitly
    mod.globals["stiffness"][...] = 3.0
    for name in mod.shadows:
        mod.shadows[name][...] = 0
    shadow = mod.shadows["stiffness"]
    autodiff(Reverse, mod.energy, Duplicated(x, np.zeros(3)), Const(3))
    expected = 0.5 * (1.0 * 1 + 0.5 * 4 + 0.25 * 9)   # d energy / d stiffness
    assert float(shadow) == pytest.approx(expected)
    weights_shadow = mod.shadows["weights"]
    np.testing.assert_allclose(weights_shadow[:3], 0.5 * 3.0 * x ** 2)
    assert float(mod.shadows["model"]["rate"]) == pytest.approx(10.0)
    # forward mode: the shadow is the global's tangent
    shadow[...] = 1.0
    weights_shadow[...] = 0.0
    mod.shadows["model"]["rate"] = 0.0
    t = autodiff(Forward, mod.energy, Duplicated(x, np.zeros(3)), Const(3))
    assert t.tangent == pytest.approx(expected)


def test_global_shadow_against_finite_differences(cc):
    mod = cc("""
    #include <math.h>
    double omega = 1.3;
    double phase(double t) { return sin(omega * t) * exp(-0.1 * omega); }
    """)
    mod.shadows["omega"][...] = 0.0
    autodiff(Reverse, mod.phase, Active(0.7))
    h = 1e-6
    values = []
    for delta in (h, -h):
        mod.globals["omega"][...] = 1.3 + delta
        values.append(mod.phase(0.7))
    mod.globals["omega"][...] = 1.3
    assert float(mod.shadows["omega"]) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)


def test_misuse(mod):
    with pytest.raises(ValueError, match="read-only"):
        mod.globals["table"][0] = 1.0          # a Python error, never a write to .rodata
    with pytest.raises(enzyme.GlobalNotFoundError, match="static"):
        mod.globals["hidden"]
    with pytest.raises(KeyError):
        mod.shadows["calls"]                   # integers carry no derivative


HELPER_SOURCE = r"""
double g = 1.1;
double scale = 2.0;
const double w[4] = {1.0, 2.0, 3.0, 4.0};
double reads_g(const double *x, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += g * x[i] * x[i]; return s;
}
void reads_g_out(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = g * x[i] * x[i]; }
double cubic_scaled(const double *x, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += scale * x[i] * x[i] * x[(i + 1) % n]; return s;
}
double cubic_table(const double *x, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += w[i] * x[i] * x[i] * x[(i + 1) % n]; return s;
}
"""


def _cubic_hessian(weights, x):
    """Analytic Hessian of sum_i w_i x_i^2 x_{i+1} (indices mod n)."""
    n = x.size
    hess = np.zeros((n, n))
    for i in range(n):
        j = (i + 1) % n
        hess[i, i] += 2 * weights[i] * x[j]
        hess[i, j] += 2 * weights[i] * x[i]
        hess[j, i] += 2 * weights[i] * x[i]
    return hess


def test_helpers_differentiate_their_arguments_only(cc):
    """A global's shadow neither enters nor is changed by grad, jvp, vjp,
    jacobian (it used to: a reverse call left its adjoint there, and the
    next jvp read it as the global's tangent, off by a constant)."""
    mod = cc(HELPER_SOURCE)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mod.globals["g"][...] = 1.1
    mod.shadows["g"][...] = 5.0    # whatever a user's earlier autodiff left there
    want = 2 * 1.1 * x
    for _ in range(2):
        np.testing.assert_allclose(enzyme.grad(mod.reads_g)(x, 4), want, rtol=1e-15)
        value, g = enzyme.value_and_grad(mod.reads_g)(x, 4)
        np.testing.assert_allclose(g, want, rtol=1e-15)
        for i, e in enumerate(np.eye(4)):
            assert enzyme.jvp(mod.reads_g, wrt=0)(x, 4, e)[1] == pytest.approx(want[i], rel=1e-15)
        np.testing.assert_allclose(enzyme.vjp(mod.reads_g, wrt=0)(x, 4, 2.0)[1], 2 * want, rtol=1e-15)
        jac = 2 * 1.1 * np.diag(x)
        for mode in (enzyme.Forward, enzyme.Reverse):
            np.testing.assert_allclose(
                enzyme.jacobian(mod.reads_g_out, wrt=0, out=1, mode=mode)(x, np.zeros(4), 4), jac, rtol=1e-15)
        np.testing.assert_allclose(enzyme.jvp(mod.reads_g_out, wrt=0, out=1)(x, np.zeros(4), 4, np.ones(4))[1],
                                   2 * 1.1 * x, rtol=1e-15)
        np.testing.assert_allclose(
            enzyme.vjp(mod.reads_g_out, wrt=0, out=1)(x, np.zeros(4), 4, np.ones(4))[1], 2 * 1.1 * x, rtol=1e-15)
        assert float(mod.shadows["g"]) == 5.0
    # autodiff keeps Enzyme's semantics: the shadow accumulates d f / d g
    autodiff(Reverse, mod.reads_g, Duplicated(x, np.zeros(4)), Const(4))
    assert float(mod.shadows["g"]) == pytest.approx(5.0 + (x * x).sum(), rel=1e-15)
    mod.shadows["g"][...] = 0.0


def test_second_order_helpers_and_globals(cc):
    """hvp/hessian of a kernel using a global that carries derivatives are
    refused (they came out wrong, with reads of uninitialised memory);
    with the global inactive or const they are right, for every chunk."""
    mod = cc(HELPER_SOURCE)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(enzyme.DifferentiationError, match="inactive_globals") as info:
        enzyme.hessian(mod.cubic_scaled)(x, 4)
    assert info.value.code == "global-second-order" and "scale" in str(info.value)
    with pytest.raises(enzyme.DifferentiationError, match="scale"):
        enzyme.hvp(mod.cubic_scaled)(x, 4, np.ones(4))
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    for chunk in (1, 2, 3, 8):
        np.testing.assert_allclose(enzyme.hessian(mod.cubic_table, chunk=chunk)(x, 4),
                                   _cubic_hessian(weights, x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(enzyme.hvp(mod.cubic_table)(x, 4, np.ones(4)),
                               _cubic_hessian(weights, x) @ np.ones(4), rtol=1e-15)
    inactive = cc(HELPER_SOURCE, inactive_globals=["scale", "g"])
    for chunk in (1, 2, 8):
        np.testing.assert_allclose(enzyme.hessian(inactive.cubic_scaled, chunk=chunk)(x, 4),
                                   _cubic_hessian(np.full(4, 2.0), x), rtol=1e-15, atol=0)


def test_batched_derivatives_and_globals(cc):
    """Batched lanes of a derivative involving a global's shadow read (and in
    reverse mode would write) past that shadow: refused, with a fix; the
    same kernel unbatched is right, and so are batches of kernels that do
    not involve the global."""
    mod = cc(HELPER_SOURCE)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    for mode in (Forward, Reverse):
        with pytest.raises(enzyme.DifferentiationError, match="one call per direction") as info:
            autodiff(mode, mod.reads_g_out, BatchDuplicated(x, np.eye(4)[:2].copy()),
                     BatchDuplicated(np.zeros(4), np.zeros((2, 4))), Const(4))
        assert info.value.code == "global-batch"
    lanes = np.zeros((2, 4))
    autodiff(Reverse, mod.cubic_table, BatchDuplicated(x, lanes), Const(4), seed=(1.0, 2.0))
    # homogeneous of degree 3: H x = 2 grad (Euler)
    grad = _cubic_hessian(np.array([1.0, 2.0, 3.0, 4.0]), x) @ x / 2
    np.testing.assert_allclose(lanes, np.outer([1.0, 2.0], grad), rtol=1e-14)
