"""Derivatives that check themselves (issue 16): ``enzyme.check`` and the
first-use check.

Oracles: analytic derivatives, central differences, and a derivative the
pinned Enzyme is known to get wrong (random program 66 with the primal
result also needed: the reference chain gets it wrong too, see
test_pipeline_regressions.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

# RK_STAGES: issue 16's embedded Runge-Kutta stage loop, wrong (44.45) with the
# old pipeline's --disable-loop-unrolling, right (40.67) now
from test_pipeline_regressions import _X, RK_STAGES, STRIDED_SELECT

import enzyme
from enzyme import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseSplitWithPrimal,
    ReverseWithPrimal,
    autodiff,
)

SMOOTH = r"""
double energy(const double *x, double a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a * x[i] * x[i] * x[i] + x[i] * x[(i + 1) % n];
    return s;
}
void model(const double *p, double *y, int n) {
    for (int i = 0; i < n; i++) y[i] = p[0] * y[i] * y[i] + p[1] * i;
}
"""

WRONG_RULE = r"""
#include <enzyme/enzyme.h>
static void square_(const double *src, double *dest) { *dest = *src * *src; }
/* not the derivative of square_: the check must say so */
static void square_tangent(const double *src, const double *d_src, const double *dest, double *d_dest) {
    (void)dest; *d_dest = 3.0 * *src * *d_src;
}
void *__enzyme_register_derivative_square[] = {(void *)square_, (void *)square_tangent};
double square(double x) { double y; square_(&x, &y); return y; }
"""

# rand()'s state lives in libc, out of the check's reach (a static variable
# would not do: each derivative library has its own copy)
HIDDEN_STATE = r"""
#include <stdlib.h>
double noisy(double x) { return x * x * (1 + rand() % 1000); }
"""

GLOBAL_STATE = r"""
double total = 1.0;
double accumulate(double x) { total += x; return total * x; }
"""

CRASHES_FORWARD = r"""
#include <stdlib.h>
struct alloc_table { int count; void *(*get)(size_t); };
struct alloc_table table = {0, malloc};
__attribute__((noinline)) void *meta_alloc(size_t bytes) { return table.get(bytes); }
__attribute__((noinline)) void square_in_place(double *p) { *p = *p * *p; }
double alldiv(double x) {
    double *cell = (double *)meta_alloc(sizeof(double));
    *cell = x;
    square_in_place(cell);
    double r = cell[0];
    free(cell);
    return r;
}
"""

# Issue 16: two malloc'ed buffers swapped every time step.
SWAPPED_BUFFERS = r"""
#include <stdlib.h>
double swapped(const double *p, int steps) {
    double *a = malloc(2 * sizeof(double)), *b = malloc(2 * sizeof(double));
    a[0] = p[0]; a[1] = p[1];
    for (int t = 0; t < steps; t++) {
        b[0] = 0.9 * a[0] + 0.1 * a[1] * a[1];
        b[1] = 0.8 * a[1] - 0.2 * a[0] * a[1];
        double *tmp = a; a = b; b = tmp;
    }
    double r = a[0] * a[1];
    free(a); free(b);
    return r;
}
"""


@pytest.fixture(scope="module")
def smooth(cc):
    return cc(SMOOTH)


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_check_report_on_a_right_derivative(smooth):
    x = np.array([0.5, -1.2, 2.0])
    report = enzyme.check(smooth.energy, Duplicated(x, None), Active(1.5), 3)
    assert report.ok, str(report)
    assert [a.name for a in report.arguments] == ["x", "a"]
    for arg in report.arguments:
        assert arg.verdict == "ok"
        assert arg.forward == pytest.approx(arg.reverse, rel=1e-10)
        assert arg.finite_difference == pytest.approx(arg.forward, rel=1e-6)
    text = str(report)
    assert "energy" in text and "x" in text and "verdict" in text
    np.testing.assert_array_equal(x, [0.5, -1.2, 2.0])


@pytest.mark.parametrize("mode", [Reverse, ReverseWithPrimal, Forward, ForwardWithPrimal,
                                  ReverseSplitWithPrimal])
def test_check_every_mode_of_an_in_place_kernel(smooth, mode):
    p, y = np.array([0.3, -0.7]), np.array([1.0, 2.0, -0.5, 0.25])
    report = enzyme.check(smooth.model, Duplicated(p, None), Duplicated(y, None), 4, mode=mode)
    assert report.ok, str(report)
    np.testing.assert_array_equal(y, [1.0, 2.0, -0.5, 0.25])   # on copies


@pytest.mark.parametrize("mode", [Forward, Reverse])
def test_check_batched(smooth, mode):
    x = np.array([0.5, -1.2, 2.0])
    report = enzyme.check(smooth.energy, BatchDuplicated(x, np.zeros((3, 3))), Const(1.5), 3,
                          mode=mode, width=3)
    assert report.ok, str(report)
    assert len(report.arguments) == 3   # one row per lane


def test_check_finds_a_wrong_custom_rule(cc):
    mod = cc(WRONG_RULE, verify=False)
    report = enzyme.check(mod.square, Active(1.5), mode=Forward)
    assert not report.ok
    (arg,) = report.arguments
    # forward mode uses the rule (3x), reverse mode differentiates x*x (2x)
    assert arg.verdict.startswith("forward mode is wrong")
    assert arg.finite_difference == pytest.approx(arg.reverse, rel=1e-6)
    assert arg.forward == pytest.approx(1.5 * arg.reverse, rel=1e-12)


def test_first_use_raises_on_a_wrong_custom_rule(cc):
    mod = cc(WRONG_RULE)
    with pytest.raises(enzyme.DerivativeMismatchError, match="forward mode is wrong") as info:
        autodiff(Forward, mod.square, Duplicated(1.5, 1.0))
    assert isinstance(info.value, enzyme.EnzymeError)
    assert not info.value.report.ok
    with pytest.raises(enzyme.DerivativeMismatchError):   # and every later call
        autodiff(Forward, mod.square, Duplicated(1.5, 1.0))
    # reverse mode, which does not use the forward rule, is right
    assert autodiff(Reverse, mod.square, Active(1.5)).derivs[0] == pytest.approx(3.0)
    off = cc(WRONG_RULE, verify=False)
    assert autodiff(Forward, off.square, Duplicated(1.5, 1.0)).tangent == pytest.approx(4.5)


@pytest.mark.parametrize("bad_call", ["string", "shadow shape", "arity"])
def test_a_refused_first_call_leaves_the_check_armed(cc, bad_call):
    """A first call whose arguments the call itself refuses raises that
    error, and the next good call is still checked: the fuzz suite's first
    calls left derivatives unchecked for good ("could not be checked on its
    first call: ValueError: operands could not be broadcast")."""
    # (a module of its own per case: a refused derivative stays refused)
    mod = cc(WRONG_RULE + "\nvoid sq_all(const double *x, double *y, int n) "
             f"{{ for (int i = 0; i < n; i++) y[i] = square(x[i]); }} /* {bad_call} */\n")
    x, y = np.array([1.5, 2.0]), np.zeros(2)
    bad = {"string": (Duplicated(x, np.ones(2)), Duplicated(y, np.zeros(2)), Const("z")),
           "shadow shape": (Duplicated(x, np.ones(6)), Duplicated(y, np.zeros(2)), Const(2)),
           "arity": (Duplicated(x, np.ones(2)), Duplicated(y, np.zeros(2)))}[bad_call]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not be checked" warning
        with pytest.raises(enzyme.EnzymeError) as info:
            autodiff(Forward, mod.sq_all, *bad)
    assert not isinstance(info.value, enzyme.DerivativeMismatchError)
    # the wrong forward rule is still caught on the first good call
    with pytest.raises(enzyme.DerivativeMismatchError, match="forward mode is wrong"):
        autodiff(Forward, mod.sq_all, Duplicated(x, np.ones(2)), Duplicated(y, np.zeros(2)), Const(2))


LEAKING_GLOBAL = r"""
/* a leap-second table reached through a static pointer, as ERFA's eraDat
   does: Enzyme v0.0.289's forward mode takes the table as its own shadow */
typedef struct { int iyear, month; double delat; } leap;
static const leap table[] = {{1972, 1, 10.0}, {2017, 1, 37.0}};
static leap *changes;
static int count = -1;
static int leaps(leap **out) {
    if (count < 0) { changes = (leap *)table; count = 2; }
    *out = changes;
    return count;
}
void shift(double x, double *out) { leap *l; int k = leaps(&l); *out = x + l[k - 1].delat / 86400.0; }
"""


def test_a_tangent_that_does_not_come_from_the_arguments_is_refused(cc):
    """Zero tangents must give zero derivatives: here they gave 37/86400
    (the table's value), which the dot-product test's tolerance let through
    at ERFA's Julian dates (eraUtctai, eraTaiutc, eraApco13, ...)."""
    unchecked = cc(LEAKING_GLOBAL, verify=False)
    out = np.zeros(1)
    autodiff(Forward, unchecked.shift, Duplicated(2451545.0, 0.0), Duplicated(np.zeros(1), out))
    assert out[0] == pytest.approx(37 / 86400)  # the defect this guards against
    mod = cc(LEAKING_GLOBAL + "\n/* checked */\n")
    with pytest.raises(enzyme.DerivativeMismatchError, match="not linear: zero tangents"):
        autodiff(Forward, mod.shift, Duplicated(2451545.0, 1.0), Duplicated(np.zeros(1), np.zeros(1)))


def test_first_use_catches_an_enzyme_defect_and_leaves_the_arrays_alone(cc):
    mod = cc(STRIDED_SELECT)
    x, n = _X.copy(), _X.size
    right = _fd_grad(lambda v: mod.k66(v, n), x)
    np.testing.assert_allclose(enzyme.grad(mod.k66)(x, n), right, rtol=1e-6, atol=1e-8)
    dx = np.full(n, 7.0)
    with pytest.raises(enzyme.DerivativeMismatchError, match="reverse mode is wrong") as info:
        autodiff(ReverseWithPrimal, mod.k66, Duplicated(x, dx), Const(n))
    np.testing.assert_array_equal(dx, 7.0)        # nothing was written
    np.testing.assert_array_equal(x, _X)
    assert "x" in str(info.value) and "verify=False" in str(info.value)
    with pytest.raises(enzyme.DerivativeMismatchError):
        enzyme.value_and_grad(mod.k66)(x, n)


def test_verify_off_by_environment(cc, monkeypatch):
    monkeypatch.setenv("ENZYME_VERIFY", "0")
    mod = cc(STRIDED_SELECT)
    assert not mod.verify
    # the known wrong number comes back unchecked
    value, g = enzyme.value_and_grad(mod.k66)(_X.copy(), _X.size)
    assert not np.allclose(g, enzyme.grad(mod.k66)(_X.copy(), _X.size), rtol=1e-6)
    monkeypatch.delenv("ENZYME_VERIFY")
    assert cc(STRIDED_SELECT).verify


def test_first_use_with_hidden_state_warns(cc):
    mod = cc(HIDDEN_STATE)
    with pytest.warns(enzyme.EnzymeWarning, match="change between identical calls"):
        d = autodiff(Reverse, mod.noisy, Active(2.0)).derivs[0]
    assert d / 4.0 == int(d / 4.0)      # 2x times the factor drawn
    report = enzyme.check(mod.noisy, Active(2.0))
    assert not report.ok and not report.repeatable
    assert "change between identical calls" in str(report)


def test_first_use_leaves_globals_as_the_call_does(cc):
    mod = cc(GLOBAL_STATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = autodiff(ReverseWithPrimal, mod.accumulate, Active(2.0))
    # one call: total = 1 + 2, result 3 * 2, d/dx (total + x) x = total + 2x
    assert float(mod.globals["total"]) == pytest.approx(3.0)
    assert r.primal == pytest.approx(6.0)
    assert r.derivs[0] == pytest.approx(5.0)


def test_first_use_survives_the_other_mode_crashing(cc):
    """Forward mode of this kernel crashes inside Enzyme: the reverse
    derivative is checked against central differences instead (no warning:
    it was checked, and it is right)."""
    from enzyme import verify
    mod = cc(CRASHES_FORWARD)
    passed = verify.stats["passed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", enzyme.EnzymeWarning)
        d = autodiff(Reverse, mod.alldiv, Active(3.0)).derivs[0]
    assert d == pytest.approx(6.0)
    assert verify.stats["passed"] == passed + 1


def test_runge_kutta_stages_are_right_and_check(cc):
    mod = cc(RK_STAGES)
    p = np.array([1.27, 0.525])
    g = enzyme.grad(mod.loss)(p, 2)      # first use: checked
    assert g[1] == pytest.approx(40.6667, rel=1e-5)
    np.testing.assert_allclose(g, _fd_grad(lambda v: mod.loss(v, 2), p), rtol=1e-6)
    assert enzyme.check(mod.loss, Duplicated(p, None), 2).ok


def test_swapped_buffers_are_right_and_check(cc):
    mod = cc(SWAPPED_BUFFERS)
    p = np.array([0.6, 1.1])
    g = enzyme.grad(mod.swapped)(p, 5)
    np.testing.assert_allclose(g, _fd_grad(lambda v: mod.swapped(v, 5), p), rtol=1e-6)
    assert enzyme.check(mod.swapped, Duplicated(p, None), 5).ok


def test_check_rejects_what_it_cannot_test(smooth):
    with pytest.raises(enzyme.ActivityError, match="at least one"):
        enzyme.check(smooth.energy, np.ones(3), 1.0, 3)
    with pytest.raises(enzyme.ActivityError, match="carries no derivative"):
        enzyme.check(smooth.energy, np.ones(3), 1.0, Active(3))
    with pytest.raises(enzyme.ActivityError, match="takes 3"):
        enzyme.check(smooth.energy, np.ones(3))


C_SIDE = r"""
#include <enzyme/enzyme.h>
double cube_sum(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i] * x[i] * x[i] + x[i] * x[(i + 1) % n];
    return s;
}
void my_grad(const double *x, double *dx, int n) {
    __enzyme_autodiff((void *)cube_sum, enzyme_dup, x, dx, enzyme_const, n);
}
double my_tangent(const double *x, const double *v, int n) {
    return __enzyme_fwddiff((void *)cube_sum, enzyme_dup, x, v, enzyme_const, n);
}
/* a hand-written gradient that forgets the coupling term */
void hand_grad(const double *x, double *dx, int n) {
    for (int i = 0; i < n; i++) dx[i] += 3 * x[i] * x[i];
}
"""


def test_check_functions_on_c_side_derivatives(cc):
    mod = cc(C_SIDE)
    x, n = np.array([0.5, -1.0, 2.0, 0.25]), 4

    def vjp_of(fn):
        def vjp(x, w):
            dx = np.zeros_like(x)
            fn(x, dx, n)
            return w * dx
        return vjp

    def jvp(x, v):
        return mod.my_tangent(x, np.ascontiguousarray(v), n)

    f = lambda x: mod.cube_sum(x, n)  # noqa: E731
    good = enzyme.check_functions(f, x, jvp=jvp, vjp=vjp_of(mod.my_grad))
    assert good.ok, str(good)
    (arg,) = good.arguments
    assert arg.forward == pytest.approx(arg.reverse, rel=1e-12)
    assert arg.finite_difference == pytest.approx(arg.reverse, rel=1e-6)
    bad = enzyme.check_functions(f, x, jvp=jvp, vjp=vjp_of(mod.hand_grad))
    assert not bad.ok and bad.arguments[0].verdict.startswith("vjp is wrong")
    alone = enzyme.check_functions(f, x, vjp=vjp_of(mod.hand_grad))   # against differences only
    assert not alone.ok and "finite differences" in alone.arguments[0].verdict
    assert enzyme.check_functions(f, x, jvp=jvp).ok


HESSIAN_KERNELS = r"""
#include <math.h>
double smooth3(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i] * x[i] * x[(i + 1) % n] + sin(x[i]);
    return s;
}
double kinked(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += fabs(x[i]) + x[i] * x[i];
    return s;
}
"""


def test_hessian_first_use_passes_on_a_right_hessian(cc):
    mod = cc(HESSIAN_KERNELS)
    x = np.array([0.3, -1.1, 0.8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = enzyme.hessian(mod.smooth3)(x, 3)
    gradient = enzyme.grad(mod.smooth3)
    fd = np.array([_fd_grad(lambda v, i=i: gradient(v, 3)[i], x, 1e-5) for i in range(3)])
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-8)


def test_hvp_first_use_at_a_kink_warns(cc):
    mod = cc(HESSIAN_KERNELS)
    x = np.array([0.0, -1.1, 0.8])    # fabs has a kink at x[0] = 0
    with pytest.warns(enzyme.EnzymeWarning, match="not smooth"):
        hv = enzyme.hvp(mod.kinked)(x, 3, np.ones(3))
    np.testing.assert_allclose(hv, 2.0)


def _quadratic(H):
    return (lambda dirs: [H @ d for d in dirs]), (lambda x: H @ x)


def test_hvp_test_verdicts():
    """The verdict logic on known matrices (numpy stands in for the
    derivatives; the real-Enzyme cases are above)."""
    from enzyme.verify import NOT_SMOOTH, hvp_test

    A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 4.0]])
    x = np.array([0.2, -0.4, 1.0])
    hvp, gradient = _quadratic(A)
    assert hvp_test(x, hvp, gradient, 2, "float64", 1, "k", "x").ok
    assert hvp_test(x, hvp, gradient, 1, "float64", 1, "k", "x").ok
    skew = A + np.array([[0, 0.1, 0], [0, 0, 0], [0, 0, 0]])          # not symmetric
    report = hvp_test(x, lambda dirs: [skew @ d for d in dirs], gradient, 2, "float64", 1, "k", "x")
    assert report.arguments[0].verdict.startswith("hvp is wrong (w.Hv and v.Hw differ")
    wrong = 1.5 * A                                                   # symmetric, wrong
    report = hvp_test(x, lambda dirs: [wrong @ d for d in dirs], gradient, 2, "float64", 1, "k", "x")
    assert report.arguments[0].verdict.startswith("hvp is wrong (central differences")
    report = hvp_test(x, hvp, lambda y: A @ y + np.sign(y - x + 1e-9), 2, "float64", 1, "k", "x")
    assert report.arguments[0].verdict == NOT_SMOOTH


def test_split_first_use_passes_and_leaves_the_shadows_to_the_call(smooth):
    from enzyme import ReverseSplit, autodiff_thunk

    x, dx = np.array([0.5, -1.2, 2.0]), np.zeros(3)
    forward, reverse = autodiff_thunk(ReverseSplit, smooth.energy, Duplicated, Active, Const)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tape = forward(x, dx, 1.5, 3)
    np.testing.assert_array_equal(dx, 0.0)        # the check wrote nothing here
    result = reverse(tape, seed=2.0)
    want = 2.0 * (3 * 1.5 * x**2 + np.roll(x, -1) + np.roll(x, 1))
    np.testing.assert_allclose(dx, want, rtol=1e-13)
    assert result.derivs[1] == pytest.approx(2.0 * np.sum(x**3))


# Random program 190's pattern: a load through a select between a const
# array and an active one; Enzyme v0.0.289 adds adjoints into the const one.
SELECT_INTO_CONST = r"""
double sel(const double *x, const double *w, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        const double *p = (x[i] > 0.2 * i) ? &w[i] : &x[i];
        s += *p * x[(i + 1) % n];
    }
    return s;
}
/* legacy code that casts const away: its derivatives may write there too */
double casts(const double *x, const double *w, int n) {
    ((double *)w)[0] = 1.0;
    double s = 0;
    for (int i = 0; i < n; i++) s += w[i] * x[i] * x[i];
    return s;
}
"""


def test_first_use_refuses_a_derivative_that_writes_into_a_const_argument(cc):
    mod = cc(SELECT_INTO_CONST)
    x, w = np.array([0.5, -0.3, 0.9, 0.1]), np.array([2.0, 3.0, 4.0, 5.0])
    raw = cc(SELECT_INTO_CONST, verify=False)
    w_raw = w.copy()
    enzyme.grad(raw.sel)(x, w_raw, 4)
    if np.array_equal(w_raw, w):
        pytest.skip("this Enzyme does not write into w here")  # the defect this test is about is gone
    report = enzyme.check(mod.sel, Duplicated(x, None), Const(w), Const(4))
    assert any("writes into 'w'" in a.verdict for a in report.arguments), str(report)
    w_user = w.copy()
    with pytest.raises(enzyme.DerivativeMismatchError, match="writes into 'w'"):
        enzyme.grad(mod.sel)(x, w_user, 4)
    np.testing.assert_array_equal(w_user, w)       # refused before anything was written


def test_a_kernel_that_casts_const_away_is_not_flagged(cc):
    mod = cc(SELECT_INTO_CONST)
    x, w = np.array([0.5, -0.3, 0.9, 0.1]), np.array([2.0, 3.0, 4.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = enzyme.grad(mod.casts)(x, w.copy(), 4)
    np.testing.assert_allclose(g, 2 * np.array([1.0, 3.0, 4.0, 5.0]) * x)


# Random programs 418/612/980 (a load through a select between a static const
# table, in read-only memory, and active memory): reverse mode segfaults.
CRASHING_REVERSE = r"""
static const double tab[8] = {0.066, 0.299, -0.374, 0.671, -0.983, 0.717, -0.149, 0.952};
double tabsel(const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (x[i] > 0.3 ? tab[i] : x[0]) * x[i];
    return s;
}
"""

# Random program 510: reverse writes into the const w; forward is wrong too.
REFUSED_COUNTERPART = r"""
#include <math.h>
void sweep(const double *x, double *y, const double *w, int m) {
    for (int j = 1; j < m; j++)
        y[j] = 0.5 * y[j] + 0.5 * tanh(y[j - 1] * x[j] * (0.1 * j >= y[j / 2] ? w[j] : y[m - 1 - j]));
}
"""


def test_a_crashing_derivative_stays_refused(cc):
    mod = cc(CRASHING_REVERSE)
    x = np.array([0.35, -0.2, 0.8, 0.5, 0.1])
    gradient = enzyme.grad(mod.tabsel)
    for _ in range(2):   # the second call used to run the crashing code
        with pytest.raises(enzyme.DifferentiationError, match="crashed"):
            gradient(x, 5)


def test_a_refused_counterpart_still_checks_the_other_mode(cc):
    mod = cc(REFUSED_COUNTERPART)
    rng = np.random.default_rng(3)
    x, y0, w, v = (rng.uniform(-1, 1, 6) for _ in range(4))
    raw = cc(REFUSED_COUNTERPART, verify=False)
    _, t_raw = enzyme.jvp(raw.sweep, wrt=0, out=1)(x, y0.copy(), w.copy(), 6, v)
    h = 1e-6
    fd = (_sweep(raw, x + h * v, y0, w) - _sweep(raw, x - h * v, y0, w)) / (2 * h)
    if np.allclose(t_raw, fd, rtol=1e-5, atol=1e-8):
        pytest.skip("forward mode is right for this kernel with this Enzyme")
    with pytest.raises(enzyme.DerivativeMismatchError):
        enzyme.vjp(mod.sweep, wrt=0, out=1)(x, y0.copy(), w.copy(), 6, v)
    with pytest.raises(enzyme.DerivativeMismatchError):      # used to be a warning and the wrong tangent
        enzyme.jvp(mod.sweep, wrt=0, out=1)(x, y0.copy(), w.copy(), 6, v)


def _sweep(mod, x, y0, w):
    y = y0.copy()
    mod.sweep(x, y, w.copy(), 6)
    return y


def _ext_square_library(tc, tmp_path) -> None:
    lib_src = tmp_path / "libextsq.c"
    lib_src.write_text("void ext_square(const double *x, double *y) { y[0] = x[0] * x[0]; }\n")
    import subprocess
    subprocess.run([tc.clang, "-O2", "-fPIC", "-shared", str(lib_src), "-o",
                    str(tmp_path / "libextsq.so")], check=True)


@pytest.mark.parametrize("factor, right", [(2.0, True), (3.0, False)])
def test_a_rule_without_the_other_mode_is_held_against_finite_differences(cc, tc, tmp_path,
                                                                          factor, right):
    """A forward rule for a library function and no reverse rule: reverse mode
    cannot be built, so the forward derivative is held against central
    differences. A rule may differ from them by design, so a disagreement is
    a warning with the numbers, not a refusal."""
    _ext_square_library(tc, tmp_path)
    source = f"""
    void ext_square(const double *x, double *y);
    void sq_fwd(const double *x, const double *dx, double *y, double *dy) {{
        ext_square(x, y); dy[0] = {factor} * x[0] * dx[0];
    }}
    double quartic(const double *x) {{ double y; ext_square(x, &y); return y * y; }}
    /* {factor} */
    """
    mod = cc(source, libraries=["extsq"], library_dirs=[tmp_path],
             forward_rules={"ext_square": "sq_fwd"}, verify=True)
    x = np.array([1.5])
    with pytest.raises(enzyme.DifferentiationError):
        autodiff(Reverse, mod.quartic, Duplicated(x.copy(), np.zeros(1)))  # really no reverse mode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tangent = autodiff(Forward, mod.quartic, Duplicated(x, np.ones(1))).tangent
    assert tangent == pytest.approx(4 * 1.5 ** 3 * factor / 2.0)  # what the rule says
    messages = [str(w.message) for w in caught if issubclass(w.category, enzyme.EnzymeWarning)]
    if right:
        assert messages == []  # checked against the differences, and they agree
    else:
        assert len(messages) == 1 and "central differences" in messages[0]


def test_without_the_other_mode_finite_differences_catch_enzyme(cc, monkeypatch):
    """No rules: when the other mode does not build, central differences
    alone refuse a wrong derivative (the known wrong ReverseWithPrimal of
    random program 66; its forward counterpart made unbuildable here)."""
    mod = cc(STRIDED_SELECT)

    def unbuildable(self, spec):
        raise enzyme.DifferentiationError("the other mode does not build (simulated)")
    monkeypatch.setattr(enzyme.Kernel, "_counterpart", unbuildable)
    x, n = _X.copy(), _X.size
    with pytest.raises(enzyme.DerivativeMismatchError, match="central differences"):
        autodiff(ReverseWithPrimal, mod.k66, Duplicated(x, np.zeros(n)), Const(n))
    np.testing.assert_allclose(enzyme.grad(mod.k66)(x, n), _fd_grad(lambda v: mod.k66(v, n), x),
                               rtol=1e-6, atol=1e-8)
