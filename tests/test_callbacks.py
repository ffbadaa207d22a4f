"""Function-pointer parameters (issue 11): another kernel of the same module
is passed for them, in primal calls and in derivatives, which differentiate
through the call (the generated code calls the chosen kernel directly).

Oracles: a hand-inlined C version of the same integrator (its own Enzyme
gradient and its primal), central differences, and forward mode against
reverse mode.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracles import central_difference as _fd

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, ReverseSplit, autodiff

SRC = r"""
typedef void (*rhs_fn)(const double *y, const double *p, double *dydt);
void lotka(const double *y, const double *p, double *dydt) {
    dydt[0] = p[0] * y[0] - p[1] * y[0] * y[1];
    dydt[1] = p[2] * y[0] * y[1] - p[3] * y[1];
}
void decay(const double *y, const double *p, double *dydt) {
    dydt[0] = -p[0] * y[0];
    dydt[1] = -p[1] * y[1] * y[1];
}
double not_a_rhs(double x) { return x; }

static void rk4(rhs_fn f, const double *p, double *y, int steps, double h) {
    double k1[2], k2[2], k3[2], k4[2], t[2];
    for (int s = 0; s < steps; s++) {
        f(y, p, k1);
        for (int i = 0; i < 2; i++) t[i] = y[i] + 0.5 * h * k1[i];
        f(t, p, k2);
        for (int i = 0; i < 2; i++) t[i] = y[i] + 0.5 * h * k2[i];
        f(t, p, k3);
        for (int i = 0; i < 2; i++) t[i] = y[i] + h * k3[i];
        f(t, p, k4);
        for (int i = 0; i < 2; i++) y[i] += h / 6 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
    }
}
/* an integrator taking the right-hand side as a pointer */
double integrate(rhs_fn f, const double *p, const double *y0, int steps, double h) {
    double y[2] = {y0[0], y0[1]};
    rk4(f, p, y, steps, h);
    return y[0] + 2 * y[1];
}
/* the same, hand-inlined with the Lotka-Volterra right-hand side */
double integrate_lotka(const double *p, const double *y0, int steps, double h) {
    double y[2] = {y0[0], y0[1]};
    rk4(lotka, p, y, steps, h);
    return y[0] + 2 * y[1];
}
/* two callbacks at once */
double both(rhs_fn f, rhs_fn g, const double *p, const double *y0) {
    double a[2], b[2];
    f(y0, p, a);
    g(y0, p, b);
    return a[0] * b[1] + a[1] * b[0];
}
"""

P = np.array([1.1, 0.4, 0.1, 0.4])
Y0 = np.array([10.0, 5.0])


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC)




def test_the_parameter_is_a_callback_of_its_function_type(mod):
    ctype = mod.integrate.signature.params[0].ctype
    assert ctype.is_function and ctype.base == "void (const double *, const double *, double *)"
    assert mod.lotka.signature.fn_type == ctype.base


def test_primal_calls_take_a_kernel_for_the_pointer(mod):
    assert mod.integrate(mod.lotka, P, Y0, 50, 0.01) == mod.integrate_lotka(P, Y0, 50, 0.01)
    decayed = mod.integrate(mod.decay, P, Y0, 50, 0.01)
    assert decayed != mod.integrate(mod.lotka, P, Y0, 50, 0.01)
    # decay: y0' = -p0 y0 (exact: 10 e^{-0.55}); y1' = -p1 y1^2 (exact: 5 / (1 + 5 p1 t))
    assert decayed == pytest.approx(10 * np.exp(-0.55) + 2 * 5 / (1 + 5 * 0.4 * 0.5), rel=1e-8)


@pytest.mark.parametrize("rhs", ["lotka", "decay"])
def test_reverse_gradient_through_the_callback(mod, rhs):
    g = enzyme.grad(mod.integrate, argnums=1)(mod[rhs], P, Y0, 100, 0.01)
    np.testing.assert_allclose(g, _fd(lambda q: mod.integrate(mod[rhs], q, Y0, 100, 0.01), P),
                               rtol=1e-6, atol=1e-9)
    if rhs == "lotka":  # the hand-inlined integrator's own Enzyme gradient
        inlined = enzyme.grad(mod.integrate_lotka)(P, Y0, 100, 0.01)
        np.testing.assert_allclose(g, inlined, rtol=1e-12)


def test_forward_mode_and_the_step_size(mod):
    v = np.array([0.3, -0.2, 0.5, 0.1])
    tangent = autodiff(Forward, mod.integrate, Const(mod.lotka), Duplicated(P, v), Const(Y0),
                       Const(100), Const(0.01)).tangent
    g = enzyme.grad(mod.integrate_lotka)(P, Y0, 100, 0.01)
    assert tangent == pytest.approx(g @ v, rel=1e-11)
    res = autodiff(Reverse, mod.integrate, Const(mod.lotka), Const(P), Const(Y0), Const(100),
                   Active(0.01))
    dh = (mod.integrate_lotka(P, Y0, 100, 0.01 + 1e-7) - mod.integrate_lotka(P, Y0, 100, 0.01 - 1e-7)) / 2e-7
    assert res.derivs[4] == pytest.approx(dh, rel=1e-5)


def test_split_mode_and_the_hessian(mod):
    fw, rv = enzyme.autodiff_thunk(ReverseSplit, mod.integrate, Const, Duplicated, Const, Const,
                                   Const)
    dp = np.zeros(4)
    tape = fw(mod.decay, P, dp, Y0, 60, 0.01)
    rv(tape, 1.0)
    np.testing.assert_allclose(dp, enzyme.grad(mod.integrate, argnums=1)(mod.decay, P, Y0, 60, 0.01),
                               rtol=1e-12)
    H = enzyme.hessian(mod.integrate, wrt=1)(mod.lotka, P, Y0, 40, 0.01)
    H_inlined = enzyme.hessian(mod.integrate_lotka, wrt=0)(P, Y0, 40, 0.01)
    np.testing.assert_allclose(H, H_inlined, rtol=1e-10, atol=1e-12)


def test_two_callback_parameters(mod):
    def both(f, g, p):
        a, b = f(p), g(p)
        return a[0] * b[1] + a[1] * b[0]

    def rhs(name, p, y=Y0):
        if name == "lotka":
            return np.array([p[0] * y[0] - p[1] * y[0] * y[1], p[2] * y[0] * y[1] - p[3] * y[1]])
        return np.array([-p[0] * y[0], -p[1] * y[1] ** 2])

    for f, g in (("lotka", "decay"), ("decay", "lotka"), ("lotka", "lotka")):
        value = mod.both(mod[f], mod[g], P, Y0)
        want = both(lambda p, f=f: rhs(f, p), lambda p, g=g: rhs(g, p), P)
        assert value == pytest.approx(want, rel=1e-13)
        grad = enzyme.grad(mod.both, argnums=2)(mod[f], mod[g], P, Y0)
        np.testing.assert_allclose(grad, _fd(lambda q, f=f, g=g: mod.both(mod[f], mod[g], q, Y0), P),
                                   rtol=1e-6, atol=1e-8)


def test_what_cannot_be_passed(mod, cc):
    with pytest.raises(enzyme.ArgumentTypeError, match="function pointer.*kernel of the same module"):
        mod.integrate(lambda y, p, d: None, P, Y0, 10, 0.01)
    with pytest.raises(enzyme.ArgumentTypeError, match="must be a function of type"):
        mod.integrate(mod.not_a_rhs, P, Y0, 10, 0.01)
    with pytest.raises(enzyme.ArgumentTypeError, match="must be a function of type"):
        enzyme.grad(mod.integrate, argnums=1)(mod.not_a_rhs, P, Y0, 10, 0.01)
    other = cc(SRC + "\n/* another module */\n")
    with pytest.raises(enzyme.ArgumentValueError, match="another module"):
        mod.integrate(other.lotka, P, Y0, 10, 0.01)
    with pytest.raises(enzyme.ArgumentValueError, match="another module"):
        enzyme.grad(mod.integrate, argnums=1)(other.lotka, P, Y0, 10, 0.01)
    with pytest.raises(enzyme.ActivityError, match="function pointer"):
        autodiff(Reverse, mod.integrate, Duplicated(mod.lotka, mod.lotka), Const(P), Const(Y0),
                 Const(10), Active(0.01))


def test_isolate_refuses_callbacks_clearly(tc):
    mod = enzyme.compile(SRC, isolate=True, toolchain=tc)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="isolate=True"):
        mod.integrate(mod.lotka, P, Y0, 10, 0.01)
