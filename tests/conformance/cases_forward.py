"""Ported from enzyme/test/Integration/ForwardMode and enzyme/test/Integration/BatchMode.

The C below is written here; the functions' math, the inputs and the checked
values come from the upstream tests. Where an upstream test gates a value with
its own tolerance (several per file), the C stores the normalised deviation
``|got - want| / tol`` (expected 0, case atol 1, rtol 0): it fails exactly when
the upstream assertion fails. An exact-zero gate (tol 0) stores 0 or +inf.
"""

from __future__ import annotations

import numpy as np
from harness import Case, assert_fd

from enzyme import (
    Active,
    Const,
    Duplicated,
    Forward,
    Reverse,
    autodiff,
    jacobian,
)

FWD = "enzyme/test/Integration/ForwardMode/"
BATCH = "enzyme/test/Integration/BatchMode/"


def _tangent(kernel, *args):
    """Forward-mode tangent of a scalar-returning kernel."""
    return autodiff(Forward, kernel, *args).tangent


def _gate(dev, tol):
    """The Python side of the C ``gate``: deviation over the upstream tolerance."""
    if tol > 0:
        return abs(dev) / tol
    return 0.0 if dev == 0.0 else np.inf


def _flag(ok):
    """An upstream inequality check (abort when it fails): 0 when it holds."""
    return 0.0 if ok else np.inf


def _fd_float32(f, x, derivative, direction, scale):
    """Central differences of a float32 kernel: the step is ``scale`` times the
    default, so float32 rounding of the primal stays far below the change."""
    assert_fd(f, x, np.asarray(derivative) * scale, direction=np.asarray(direction, float) * scale, rtol=1e-3)


# ---------------------------------------------------------------- binops.c

BINOPS = r"""
#include <enzyme/enzyme.h>

double fun(double x1, double x2) {
    double prod = x1 * x2;
    double recip = 1.0 / x1;
    return prod + recip;
}

void conformance_c_side(double *out) {
    for (int k = 1; k <= 4; k++) {
        double x = k;
        out[k - 1] = __enzyme_fwddiff((void *)fun, x, 1.0, x * x, 0.0);
    }
}
"""


def _binops_api(mod):
    values = []
    for k in range(1, 5):
        x = float(k)
        t = _tangent(mod.fun, Duplicated(x, 1.0), Duplicated(x * x, 0.0))
        assert_fd(lambda v, y=x * x: mod.fun(v[0], y), [x], t, direction=[1.0])
        values.append(t)
    return values


# ---------------------------------------------------------------- loops.c, loopsdouble.c, loopstriple.c

LOOPS = r"""
void compute_loops(float *a, float *b, float *ret) {
    double acc = 0.0;
    for (int i = 0; i < 100; i++) acc += *a + *b;
    *ret = acc;
}

void __enzyme_fwddiff_loops(void *, float *, float *, float *, float *, float *, float *);

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 1.0f, db = 1.0f, r = 0.0f, dr = 1.0f;
    __enzyme_fwddiff_loops((void *)compute_loops, &a, &da, &b, &db, &r, &dr);
    out[0] = dr;
}
"""

LOOPSDOUBLE = r"""
void compute_loops(float *a, float *b, float *ret) {
    double outer = 0.0;
    for (int i = 0; i < 100; i++) {
        double inner = 0.0;
        for (int j = 0; j < 100; j++) inner += *a + *b;
        outer += inner;
    }
    *ret = outer;
}

void __enzyme_fwddiff_loops(void *, float *, float *, float *, float *, float *, float *);

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 1.0f, db = 1.0f, r = 0.0f, dr = 1.0f;
    __enzyme_fwddiff_loops((void *)compute_loops, &a, &da, &b, &db, &r, &dr);
    out[0] = dr;
}
"""

LOOPSTRIPLE = r"""
void compute_loops(float *a, float *b, float *ret) {
    double s0 = 0.0;
    for (int i = 0; i < 100; i++) {
        double s1 = 0.0;
        for (int j = 0; j < 100; j++) {
            double s2 = 0.0;
            for (int k = 0; k < 100; k++) s2 += *a + *b;
            s1 += s2;
        }
        s0 += s1;
    }
    *ret = s0;
}

void __enzyme_fwddiff_loops(void *, float *, float *, float *, float *, float *, float *);

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 1.0f, db = 1.0f, r = 0.0f, dr = 1.0f;
    __enzyme_fwddiff_loops((void *)compute_loops, &a, &da, &b, &db, &r, &dr);
    out[0] = dr;
}
"""


def _loops_api(scale):
    def api(mod):
        a, b = np.array([2.0], np.float32), np.array([3.0], np.float32)
        da, db = np.ones(1, np.float32), np.ones(1, np.float32)
        r, dr = np.zeros(1, np.float32), np.ones(1, np.float32)
        autodiff(Forward, mod.compute_loops, Duplicated(a, da), Duplicated(b, db), Duplicated(r, dr))

        def primal(v):
            out = np.zeros(1, np.float32)
            mod.compute_loops(np.array(v[:1], np.float32), np.array(v[1:], np.float32), out)
            return float(out[0])

        _fd_float32(primal, [2.0, 3.0], float(dr[0]), [1.0, 1.0], scale)
        return [float(dr[0])]

    return api


# ---------------------------------------------------------------- sumtil.c, sumtil2.c

SUMTIL = r"""
double sumtil(double *vec, int size) {
    double acc = 0.0;
    for (int i = 0; i < size; i++) {
        double sq = vec[i] * vec[i];
        acc += sq;
        if (acc > 30) break;
        acc += sq;
        vec[i] = 0;
    }
    return acc;
}

double __enzyme_fwddiff_sumtil(void *, double *, double *, int);

void conformance_c_side(double *out) {
    double v[5] = {1, 2, 3, 4, 5};
    double dv[5] = {2, 0, 1, 9, 8};
    out[0] = __enzyme_fwddiff_sumtil((void *)sumtil, v, dv, 5);
    for (int i = 0; i < 5; i++) out[1 + i] = dv[i];
}
"""

SUMTIL2 = r"""
double sumtil(double *vec, int size) {
    double acc = 0.0;
    for (int i = 0; i < size; i++) {
        acc += vec[i];
        if (acc > 15) break;
        acc += vec[i];
    }
    return acc;
}

double __enzyme_fwddiff_sumtil(void *, double *, double *, int);

void conformance_c_side(double *out) {
    double v[5] = {1, 2, 3, 4, 5};
    double dv[5] = {2, 0, 1, 9, 8};
    out[0] = __enzyme_fwddiff_sumtil((void *)sumtil, v, dv, 5);
}
"""


def _sumtil_api(with_shadow):
    def api(mod):
        v0, dv0 = np.arange(1.0, 6.0), np.array([2.0, 0.0, 1.0, 9.0, 8.0])
        v, dv = v0.copy(), dv0.copy()
        t = _tangent(mod.sumtil, Duplicated(v, dv), Const(5))
        assert_fd(lambda x: mod.sumtil(x.copy(), 5), v0, t, direction=dv0)
        return [t, *dv] if with_shadow else [t]

    return api


# ---------------------------------------------------------------- rwrloop.c

RWRLOOP = r"""
#include <enzyme/enzyme.h>

double alldiv(double *restrict a, int *restrict N) {
    double acc = 0;
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < *N; j++) {
            acc += a[10 * i + j] * a[10 * i + j];
            a[10 * i + j] = 0;
        }
    *N = 7;
    return acc;
}

void conformance_c_side(double *out) {
    double a[100], da[100];
    int n = 10;
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 10; j++) {
            a[10 * i + j] = 100 * i + j;
            da[10 * i + j] = 1;
        }
    out[0] = __enzyme_fwddiff((void *)alldiv, enzyme_dup, a, da, enzyme_const, &n);
}
"""


def _rwrloop_api(mod):
    a0 = (100.0 * np.arange(10)[:, None] + np.arange(10)[None, :]).ravel()
    a, da = a0.copy(), np.ones(100)
    n = np.array([10], np.int32)
    t = _tangent(mod.alldiv, Duplicated(a, da), Const(n))
    assert int(n[0]) == 7
    assert_fd(lambda x: mod.alldiv(x.copy(), np.array([10], np.int32)), a0, t, direction=np.ones(100))
    return [t]


# ---------------------------------------------------------------- activity.c

ACTIVITY = r"""
#include <math.h>
#include <enzyme/enzyme.h>

__attribute__((noinline)) double mysin(double x) { return sin(x); }
__attribute__((noinline)) double mycos(double x) { return cos(x); }

double f(double x) { return mysin(x) * mycos(x); }

void conformance_c_side(double *out) {
    const double xs[5] = {0.0, 0.5, 1.0, 2.0, 3.0};
    for (int i = 0; i < 5; i++) out[i] = __enzyme_fwddiff((void *)f, xs[i], 1.0);
}
"""

_ACTIVITY_XS = (0.0, 0.5, 1.0, 2.0, 3.0)


def _activity_api(mod):
    values = []
    for x in _ACTIVITY_XS:
        t = _tangent(mod.f, Duplicated(x, 1.0))
        assert_fd(lambda v: mod.f(v[0]), [x], t, direction=[1.0])
        values.append(t)
    return values


# ---------------------------------------------------------------- pow_zero.c

POW_ZERO = r"""
float f(float x, float y) { return __builtin_powf(x, y); }

float __enzyme_fwddiff_powf(float (*)(float, float), float, float, float, float);

void conformance_c_side(double *out) {
    float x = 0.0f, y = 1.0f;
    out[0] = f(x, y);
    out[1] = __enzyme_fwddiff_powf(f, x, 1.0f, y, 0.0f);
    out[2] = __enzyme_fwddiff_powf(f, x, 0.0f, y, 1.0f);
}
"""


def _pow_zero_api(mod):
    dx = _tangent(mod.f, Duplicated(0.0, 1.0), Duplicated(1.0, 0.0))
    dy = _tangent(mod.f, Duplicated(0.0, 0.0), Duplicated(1.0, 1.0))
    assert_fd(lambda v: mod.f(v[0], v[1]), [0.0, 1.0], dx, direction=[1.0, 0.0], rtol=1e-4, atol=1e-6)
    assert_fd(lambda v: mod.f(v[0], v[1]), [0.0, 1.0], dy, direction=[0.0, 1.0], rtol=1e-4, atol=1e-6)
    return [mod.f(0.0, 1.0), dx, dy]


# ---------------------------------------------------------------- customfwd.c

CUSTOMFWD = r"""
#include <enzyme/enzyme.h>

static void square_(const double *src, double *dest) { *dest = *src * *src; }

int rule_calls = 0;

/* the registered tangent is deliberately wrong (100), to tell it from Enzyme's own */
static void square_tangent(const double *src, const double *d_src, const double *dest, double *d_dest) {
    (void)src; (void)d_src; (void)dest;
    rule_calls++;
    *d_dest = 100;
}

void *__enzyme_register_derivative_square[] = {(void *)square_, (void *)square_tangent};

double square(double x) {
    double y;
    square_(&x, &y);
    return y;
}

void conformance_c_side(double *out) {
    int before = rule_calls;
    out[0] = __enzyme_fwddiff((void *)square, 3.0, 1.0);
    out[1] = rule_calls - before;
}
"""


def _customfwd_api(mod):
    calls = mod.globals["rule_calls"]
    before = int(calls)
    t = _tangent(mod.square, Duplicated(3.0, 1.0))
    # The rule is deliberately wrong, so t is not a derivative of the primal;
    # central differences check that the primal is x*x (true slope 6 != 100).
    assert_fd(lambda v: mod.square(v[0]), [3.0], 6.0, direction=[1.0])
    return [t, int(calls) - before]


# ---------------------------------------------------------------- div_range.c

DIV_RANGE = r"""
#include <enzyme/enzyme.h>

double f(double x, double y) { return x / y; }

double dfdx(double x, double y) { return __enzyme_fwddiff((void *)f, x, 1.0, y, 0.0); }
double dfdy(double x, double y) { return __enzyme_fwddiff((void *)f, x, 0.0, y, 1.0); }
/* 2 x / y^3 */
double d2fdy2(double x, double y) { return __enzyme_fwddiff((void *)dfdy, x, 0.0, y, 1.0); }
/* -1 / y^2 */
double d2fdxdy(double x, double y) { return __enzyme_fwddiff((void *)dfdx, x, 0.0, y, 1.0); }

void conformance_c_side(double *out) {
    double big = 1e160, tiny = 1e-160, mid = 1e80;
    out[0] = dfdx(2.0, big) * big;
    out[1] = dfdy(big, big) * big;
    out[2] = dfdx(2.0, tiny) * tiny;
    out[3] = d2fdy2(1.0, mid) * (mid * mid) * mid;
    out[4] = d2fdxdy(1.0, mid) * mid * mid;
}
"""


def _div_range_api(mod):
    big, tiny, mid = 1e160, 1e-160, 1e80
    fwd = _tangent
    v0 = fwd(mod.f, Duplicated(2.0, 1.0), Duplicated(big, 0.0))
    assert_fd(lambda v: mod.f(v[0], big) * big, [2.0], v0 * big, direction=[1.0])
    v1 = fwd(mod.f, Duplicated(big, 0.0), Duplicated(big, 1.0))
    assert_fd(lambda v: mod.f(big, v[0]) * big, [big], v1 * big, direction=[1.0])
    v2 = fwd(mod.f, Duplicated(2.0, 1.0), Duplicated(tiny, 0.0))
    assert_fd(lambda v: mod.f(v[0], tiny) * tiny, [2.0], v2 * tiny, direction=[1.0])
    v3 = fwd(mod.dfdy, Duplicated(1.0, 0.0), Duplicated(mid, 1.0))
    assert_fd(lambda v: mod.dfdy(1.0, v[0]) * mid ** 3, [mid], v3 * mid ** 3, direction=[1.0])
    v4 = fwd(mod.dfdx, Duplicated(1.0, 0.0), Duplicated(mid, 1.0))
    assert_fd(lambda v: mod.dfdx(1.0, v[0]) * mid ** 2, [mid], v4 * mid ** 2, direction=[1.0])
    return [v0 * big, v1 * big, v2 * tiny, v3 * (mid * mid) * mid, v4 * mid * mid]


# ---------------------------------------------------------------- fabs_signed_zero.c

FABS_SIGNED_ZERO = r"""
#include <enzyme/enzyme.h>

double absf(double x) { return __builtin_fabs(x); }
double f(double x) { return __builtin_fabs(-x * x); }

double df(double x) { return __enzyme_fwddiff((void *)f, x, 1.0); }
double gf(double x) { return __enzyme_autodiff((void *)f, x); }

void conformance_c_side(double *out) {
    int k = 0;
    out[k++] = __enzyme_fwddiff((void *)absf, 0.0, 1.0);
    out[k++] = __enzyme_fwddiff((void *)absf, -0.0, 1.0);
    out[k++] = __enzyme_fwddiff((void *)absf, 2.0, 1.0);
    out[k++] = __enzyme_fwddiff((void *)absf, -2.0, 1.0);
    out[k++] = __enzyme_autodiff((void *)absf, 0.0);
    out[k++] = __enzyme_autodiff((void *)absf, -0.0);
    out[k++] = df(0.0);
    out[k++] = gf(0.0);
    out[k++] = __enzyme_fwddiff((void *)df, 0.0, 1.0);
    out[k++] = __enzyme_autodiff((void *)df, 0.0);
    out[k++] = __enzyme_fwddiff((void *)gf, 0.0, 1.0);
    out[k++] = __enzyme_autodiff((void *)gf, 0.0);
    out[k++] = __enzyme_fwddiff((void *)df, 1.5, 1.0);
    out[k++] = __enzyme_fwddiff((void *)df, -1.5, 1.0);
}
"""


def _fabs_signed_zero_api(mod):
    def fwd(kernel, x):
        return _tangent(kernel, Duplicated(x, 1.0))

    def rev(kernel, x):
        return autodiff(Reverse, kernel, Active(x)).derivs[0]

    # fabs at a signed zero is a kink: central differences do not apply there
    # (the value is the sign convention), so only the smooth points are checked.
    values = [fwd(mod.absf, 0.0), fwd(mod.absf, -0.0), fwd(mod.absf, 2.0), fwd(mod.absf, -2.0),
              rev(mod.absf, 0.0), rev(mod.absf, -0.0)]
    for x, d in ((2.0, values[2]), (-2.0, values[3])):
        assert_fd(lambda v: mod.absf(v[0]), [x], d, direction=[1.0])
    first = [mod.df(0.0), mod.gf(0.0)]
    for d in first:  # fabs(-x*x) = x*x is smooth
        assert_fd(lambda v: mod.f(v[0]), [0.0], d, direction=[1.0])
    second = [fwd(mod.df, 0.0), rev(mod.df, 0.0), fwd(mod.gf, 0.0), rev(mod.gf, 0.0),
              fwd(mod.df, 1.5), fwd(mod.df, -1.5)]
    for x, d in zip((0.0, 0.0, 0.0, 0.0, 1.5, -1.5), second):
        assert_fd(lambda v: mod.df(v[0]), [x], d, direction=[1.0])
    return values + first + second


# ---------------------------------------------------------------- enzyme-ffi issue, item 1

FMIN_BRANCH = r"""
#include <math.h>
#include <enzyme/enzyme.h>

void g(const double *a, const double *b, double *F) {
    double Fa[5], Fb[5];
    for (int i = 0; i < 5; i++) {
        Fa[i] = a[i] * a[i];
        Fb[i] = b[i] * b[i];
    }
    if (fmin(a[0], b[0]) >= 0.0) {
        for (int i = 0; i < 5; i++) F[i] = Fa[i];
    } else {
        for (int i = 0; i < 5; i++) F[i] = Fb[i];
    }
}

void conformance_c_side(double *out) {
    double a[5], b[5], ones[5], F[5], dF[5];
    for (int i = 0; i < 5; i++) { a[i] = b[i] = i + 1; ones[i] = 1.0; dF[i] = 0.0; }
    __enzyme_fwddiff((void *)g, enzyme_const, a, enzyme_dup, b, ones, enzyme_dup, F, dF);
    for (int i = 0; i < 5; i++) { out[i] = dF[i]; dF[i] = 0.0; }
    __enzyme_fwddiff((void *)g, enzyme_dup, a, ones, enzyme_const, b, enzyme_dup, F, dF);
    for (int i = 0; i < 5; i++) out[5 + i] = dF[i];
}
"""


def _fmin_branch_api(mod):
    a, b = np.arange(1.0, 6.0), np.arange(1.0, 6.0)
    F, dF = np.zeros(5), np.zeros(5)
    autodiff(Forward, mod.g, Const(a), Duplicated(b, np.ones(5)), Duplicated(F, dF))
    db_tangent = dF.copy()
    F, dF = np.zeros(5), np.zeros(5)
    autodiff(Forward, mod.g, Duplicated(a, np.ones(5)), Const(b), Duplicated(F, dF))
    da_tangent = dF.copy()

    def via_b(v):
        out = np.zeros(5)
        mod.g(a, v, out)
        return out

    def via_a(v):
        out = np.zeros(5)
        mod.g(v, b, out)
        return out

    assert_fd(via_b, b, db_tangent, direction=np.ones(5))
    assert_fd(via_a, a, da_tangent, direction=np.ones(5))
    return [*db_tangent, *da_tangent]


# ---------------------------------------------------------------- rosenbrock.cpp (as C)

ROSENBROCK = r"""
#include <enzyme/enzyme.h>

/* the pairwise Rosenbrock sum over (x[i], x[i+1]), i even */
double rosenbrock2(const double *x, int n) {
    double acc = 0.0;
    for (int i = 0; i < n; i += 2) {
        double c1 = x[i + 1] - x[i] * x[i];
        double c2 = 1.0 - x[i];
        acc += 100 * c1 * c1 + c2 * c2;
    }
    return acc;
}

void conformance_c_side(double *out) {
    double x[4] = {1.5, 2.5, 3.5, 4.5};
    for (int i = 0; i < 4; i++) {
        double dx[4] = {0, 0, 0, 0};
        dx[i] = 1.0;
        out[i] = __enzyme_fwddiff((void *)rosenbrock2, enzyme_dup, x, dx, enzyme_const, 4);
    }
}
"""


def _rosenbrock_api(mod):
    x = np.array([1.5, 2.5, 3.5, 4.5])
    values = []
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1.0
        t = _tangent(mod.rosenbrock2, Duplicated(x, e), Const(4))
        assert_fd(lambda v: mod.rosenbrock2(v, 4), x, t, direction=e)
        values.append(t)
    return values


# ---------------------------------------------------------------- sugar.cpp (as C)

# Upstream exercises the C++ header's enzyme::autodiff<Forward, RetActivity>;
# the C spelling of each return activity is a marker on __enzyme_fwddiff.
SUGAR = r"""
#include <enzyme/enzyme.h>

typedef struct { double primal, tangent; } with_primal;
with_primal __enzyme_fwddiff_both(void *, int, double, double);

double square(double x) { return x * x; }

void conformance_c_side(double *out) {
    /* Duplicated return: primal and tangent */
    with_primal both = __enzyme_fwddiff_both((void *)square, enzyme_primal_return, 3.1, 1.0);
    out[0] = both.tangent;
    out[1] = both.primal;
    /* DuplicatedNoNeed return, and the default: the tangent only */
    out[2] = __enzyme_fwddiff((void *)square, enzyme_dup, 3.1, 1.0);
    out[3] = __enzyme_fwddiff((void *)square, 3.1, 1.0);
    /* Const return: the primal only */
    out[4] = __enzyme_fwddiff((void *)square, enzyme_primal_return, enzyme_const_return, 3.1, 1.0);
}
"""


def _sugar_api(mod):
    from enzyme import DuplicatedNoNeed, ForwardWithPrimal

    both = autodiff(ForwardWithPrimal, mod.square, Duplicated(3.1, 1.0))
    assert_fd(lambda v: mod.square(v[0]), [3.1], both.tangent, direction=[1.0])
    noneed = autodiff(Forward, mod.square, Duplicated(3.1, 1.0), ret=DuplicatedNoNeed).tangent
    default = autodiff(Forward, mod.square, Duplicated(3.1, 1.0)).tangent
    const = autodiff(ForwardWithPrimal, mod.square, Duplicated(3.1, 1.0), ret=Const)
    assert const.tangent is None
    return [both.tangent, both.primal, noneed, default, const.primal]


# ---------------------------------------------------------------- BatchMode/sqaure.cpp (as C)

BATCH_SQUARE = r"""
typedef struct { double x1, x2, x3, x4; } lanes4;

extern int enzyme_width, enzyme_vector, enzyme_scalar;
lanes4 __enzyme_batch_sq(double (*)(double), int, int, int, double, double, double, double);

double square(double x) { return x * x; }

static lanes4 vecsquare(double a, double b, double c, double d) {
    return __enzyme_batch_sq(square, enzyme_width, 4, enzyme_vector, a, b, c, d);
}

void conformance_c_side(double *out) {
    lanes4 r = vecsquare(23.1, 10.0, 100.0, 3.14);
    out[0] = r.x1; out[1] = r.x2; out[2] = r.x3; out[3] = r.x4;
}
"""

_SQUARE_VALS = (23.1, 10.0, 100.0, 3.14)


def _batch_square_api(mod):
    # __enzyme_batch vectorises the primal itself; the Python API has no such
    # call, so the same lanes come from calling the kernel once per lane.
    return [mod.square(v) for v in _SQUARE_VALS]


# ---------------------------------------------------------------- BatchMode/char-ptr.cpp (as C)

BATCH_CHAR_PTR = r"""
#pragma pack(push, 1)
struct Foo {
    int arr[3];
    double x;
    float y;
    double res;
};
#pragma pack(pop)

extern int enzyme_width;
void __enzyme_batch_f(void *, int, int, char *, char *, char *, char *);

/* reads x and y from their byte offsets, writes res = x * y */
void f(char *foo) {
    double x = *(double *)(foo + sizeof(int[3]));
    float y = *(float *)(foo + sizeof(int[3]) + sizeof(double));
    *(double *)(foo + sizeof(int[3]) + sizeof(double) + sizeof(float)) = x * y;
}

static void df(char *p1, char *p2, char *p3, char *p4) {
    __enzyme_batch_f((void *)f, enzyme_width, 4, p1, p2, p3, p4);
}

void conformance_c_side(double *out) {
    struct Foo foo[4];
    const double xs[4] = {10, 99.0, 1.1, 3.14};
    const float ys[4] = {9.0f, 7.0f, 9.0f, 0.1f};
    for (int i = 0; i < 4; i++) { foo[i].x = xs[i]; foo[i].y = ys[i]; foo[i].res = 0; }
    df((char *)&foo[0], (char *)&foo[1], (char *)&foo[2], (char *)&foo[3]);
    for (int i = 0; i < 4; i++) out[i] = foo[i].res;
}
"""

_FOO = np.dtype([("arr", "<i4", (3,)), ("x", "<f8"), ("y", "<f4"), ("res", "<f8")])  # packed: 32 bytes


def _batch_char_ptr_api(mod):
    # no Python counterpart of __enzyme_batch: one call per lane of the kernel
    values = []
    for x, y in ((10.0, 9.0), (99.0, 7.0), (1.1, 9.0), (3.14, 0.1)):
        foo = np.zeros(1, _FOO)
        foo["x"], foo["y"] = x, np.float32(y)
        raw = foo.view(np.int8).copy()
        mod.f(raw)
        values.append(float(raw.view(_FOO)["res"][0]))
    return values


# ---------------------------------------------------------------- BatchMode/fwddiff-call.cpp (as C)

BATCH_FWDDIFF_CALL = r"""
#include <enzyme/enzyme.h>

typedef struct { double a, b; } lanes2;

extern int enzyme_vector, enzyme_scalar;
lanes2 __enzyme_batch_2(void *, int, int, ...);

double f(double g, double x) { return g * x * x * x; }

/* 3 g x^2 */
double dfdx(double g, double x) { return __enzyme_fwddiff((void *)f, g, 0.0, x, 1.0); }

void conformance_c_side(double *out) {
    const double g = 2.0, x0 = 1.0, x1 = 3.0;
    lanes2 p = __enzyme_batch_2((void *)f, enzyme_width, 2, enzyme_scalar, g, enzyme_vector, x0, x1);
    lanes2 dv = __enzyme_batch_2((void *)dfdx, enzyme_width, 2, enzyme_vector, g, g, enzyme_vector, x0, x1);
    lanes2 ds = __enzyme_batch_2((void *)dfdx, enzyme_width, 2, enzyme_scalar, g, enzyme_vector, x0, x1);
    out[0] = p.a; out[1] = p.b;
    out[2] = dv.a; out[3] = dv.b;
    out[4] = ds.a; out[5] = ds.b;
}
"""


def _batch_fwddiff_call_api(mod):
    # no Python counterpart of __enzyme_batch: the lanes one by one, the
    # derivative lanes through forward mode on f with dfdx's activities
    g, xs = 2.0, (1.0, 3.0)
    primal = [mod.f(g, x) for x in xs]
    tangents = []
    for x in xs:
        t = _tangent(mod.f, Duplicated(g, 0.0), Duplicated(x, 1.0))
        assert_fd(lambda v: mod.f(g, v[0]), [x], t, direction=[1.0])
        tangents.append(t)
    scalar_g = [_tangent(mod.f, Const(g), Duplicated(x, 1.0)) for x in xs]
    return primal + tangents + scalar_g


# ---------------------------------------------------------------- shared by the CFD-derived tests

GATE_C = r"""
/* |deviation| over the upstream tolerance; an exact-zero gate gives 0 or +inf */
static double gate(double dev, double tol) {
    dev = __builtin_fabs(dev);
    if (tol > 0) return dev / tol;
    return dev == 0.0 ? 0.0 : __builtin_inf();
}
/* an upstream abort-unless check: 0 when it holds */
static double flag(int ok) { return ok ? 0.0 : __builtin_inf(); }
/* largest deviation of a from b, relative to the largest |b| (1 if b == 0) */
static double rel_error(const double *a, const double *b, int m) {
    double scale = 0.0, worst = 0.0;
    for (int i = 0; i < m; i++) scale = __builtin_fmax(scale, __builtin_fabs(b[i]));
    if (scale == 0.0) scale = 1.0;
    for (int i = 0; i < m; i++) {
        double d = __builtin_fabs(a[i] - b[i]) / scale;
        if (!(d <= worst)) worst = d;   /* a NaN sticks */
    }
    return worst;
}
"""


def _rel_error(a, b):
    a, b = np.ravel(a), np.ravel(b)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    scale = scale or 1.0
    return float(np.max(np.abs(a - b)) / scale)


# Compressible Euler flux with a stiffened-gas closure
#   p = (gamma - 1) (rhoE - |rho u|^2 / (2 rho)) - gamma p_inf
# (ideal gas for p_inf = 0), as in upstream's euler.h.
EULER_C = r"""
#include <math.h>
#include <enzyme/enzyme.h>

enum { RHO, MX, MY, MZ, EN, NV };
struct eos { double gamma; double p_inf; };

static double pressure(const double *U, const struct eos *e) {
    double inv_rho = 1.0 / U[RHO];
    double kinetic = 0.5 * inv_rho * (U[MX] * U[MX] + U[MY] * U[MY] + U[MZ] * U[MZ]);
    return (e->gamma - 1.0) * (U[EN] - kinetic) - e->gamma * e->p_inf;
}

double sound_speed(const double *U, const struct eos *e) {
    return sqrt(e->gamma * (pressure(U, e) + e->p_inf) / U[RHO]);
}

double normal_velocity(const double *U, const double *n) {
    return (U[MX] * n[0] + U[MY] * n[1] + U[MZ] * n[2]) / U[RHO];
}

void euler_flux(const double *U, const double *n, const struct eos *e, double *F) {
    double un = normal_velocity(U, n);
    double p = pressure(U, e);
    F[RHO] = U[RHO] * un;
    for (int k = 0; k < 3; k++) F[MX + k] = U[MX + k] * un + p * n[k];
    F[EN] = (U[EN] + p) * un;
}

/* conserved state from the primitives q = (rho, u, v, w, p) */
void from_primitive(const double *q, const struct eos *e, double *U) {
    U[RHO] = q[0];
    U[MX] = q[0] * q[1];
    U[MY] = q[0] * q[2];
    U[MZ] = q[0] * q[3];
    U[EN] = (q[4] + e->gamma * e->p_inf) / (e->gamma - 1.0)
            + 0.5 * q[0] * (q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
}

/* sea level, Mach 8 at 30 km, post-shock, near vacuum: (rho, u, v, w, p) */
static const double STATES[4][5] = {
    {1.225, 50.0, 10.0, -5.0, 101325.0},
    {0.0184, 2400.0, 60.0, 0.0, 1197.0},
    {0.1400, 300.0, -120.0, 45.0, 1.6e5},
    {1.0e-3, 1500.0, 0.0, -200.0, 25.0},
};
static const double NORMALS[3][3] = {
    {1.0, 0.0, 0.0},
    {0.6, -0.8, 0.0},
    {0.4242640687119285, 0.5656854249492380, -0.7071067811865476},
};

/* A[r][c] = dF_r / dU_c, one forward tangent per column */
static void flux_jacobian(const double *U, const double *n, const struct eos *e, double *A) {
    for (int c = 0; c < NV; c++) {
        double dU[NV] = {0}, F[NV], dF[NV] = {0};
        dU[c] = 1.0;
        __enzyme_fwddiff((void *)euler_flux, enzyme_dup, U, dU, enzyme_const, n, enzyme_const, e,
                         enzyme_dup, F, dF);
        for (int r = 0; r < NV; r++) A[r * NV + c] = dF[r];
    }
}
"""

_EULER_STATES = np.array([[1.225, 50.0, 10.0, -5.0, 101325.0],
                          [0.0184, 2400.0, 60.0, 0.0, 1197.0],
                          [0.1400, 300.0, -120.0, 45.0, 1.6e5],
                          [1.0e-3, 1500.0, 0.0, -200.0, 25.0]])
_EULER_NORMALS = np.array([[1.0, 0.0, 0.0], [0.6, -0.8, 0.0],
                           [0.4242640687119285, 0.5656854249492380, -0.7071067811865476]])


def _eos(mod, gamma, p_inf):
    e = np.zeros(1, mod.euler_flux.dtype("e"))
    e["gamma"], e["p_inf"] = gamma, p_inf
    return e


def _state(mod, q, eos):
    U = np.zeros(5)
    mod.from_primitive(np.asarray(q, float), eos, U)
    return U


def _flux(mod, U, n, eos):
    F = np.zeros(5)
    mod.euler_flux(np.asarray(U, float), n, eos, F)
    return F


def _probe_directions(U):
    """Directions scaled per variable (the state spans many decades)."""
    scale = np.where(U == 0.0, 1.0, np.abs(U)) / np.max(np.abs(U))
    return [U / np.max(np.abs(U)), scale * np.array([0.3, -0.7, 0.5, 0.2, -0.4])]


# ---------------------------------------------------------------- euler_homogeneity.c

EULER_HOMOGENEITY = EULER_C + GATE_C + r"""
void conformance_c_side(double *out) {
    int k = 0;
    for (int s = 0; s < 4; s++)
        for (int f = 0; f < 3; f++) {
            double n[3] = {NORMALS[f][0], NORMALS[f][1], NORMALS[f][2]};
            for (int stiff = 0; stiff < 2; stiff++) {
                struct eos e = {1.4, stiff ? 0.5 * STATES[s][4] : 0.0};
                double U[NV], F[NV], A[NV * NV], AU[NV], want[NV];
                from_primitive(STATES[s], &e, U);
                euler_flux(U, n, &e, F);
                flux_jacobian(U, n, &e, A);
                for (int r = 0; r < NV; r++) {
                    AU[r] = 0.0;
                    for (int c = 0; c < NV; c++) AU[r] += A[r * NV + c] * U[c];
                }
                if (!stiff) {   /* ideal gas: degree-one homogeneous, A U = F */
                    out[k++] = rel_error(AU, F, NV);
                    continue;
                }
                /* stiffened gas: A U - F = (0, gamma p_inf n, gamma p_inf u.n) exactly */
                double gp = e.gamma * e.p_inf;
                want[RHO] = 0.0;
                for (int d = 0; d < 3; d++) want[MX + d] = gp * n[d];
                want[EN] = gp * normal_velocity(U, n);
                for (int r = 0; r < NV; r++) AU[r] -= F[r];
                out[k++] = rel_error(AU, want, NV);
            }
        }
}
"""




def _flux_jacobian(mod, U, n, eos):
    """dF/dU through enzyme.jacobian (batched forward mode), checked against
    central differences along per-variable-scaled directions."""
    A = jacobian(mod.euler_flux, wrt=0, out=3)(U, n, eos, np.zeros(5))
    for d in _probe_directions(U):
        assert_fd(lambda u: _flux(mod, u, n, eos), U, A @ d, direction=d)
    return A


def _euler_homogeneity_api(mod):
    values = []
    for q in _EULER_STATES:
        for n in _EULER_NORMALS:
            for stiff in (False, True):
                eos = _eos(mod, 1.4, 0.5 * q[4] if stiff else 0.0)
                U = _state(mod, q, eos)
                F = _flux(mod, U, n, eos)
                AU = _flux_jacobian(mod, U, n, eos) @ U
                if not stiff:
                    values.append(_rel_error(AU, F))
                    continue
                gp = 1.4 * float(eos["p_inf"][0])
                want = np.array([0.0, *(gp * n), gp * mod.normal_velocity(U, n)])
                values.append(_rel_error(AU - F, want))
    return values


# ---------------------------------------------------------------- flux_consistency.c

FLUX_CONSISTENCY = EULER_C + GATE_C + r"""
/* Rusanov (local Lax-Friedrichs) */
void rusanov_flux(const double *UL, const double *UR, const double *n, const struct eos *e, double *F) {
    double FL[NV], FR[NV];
    euler_flux(UL, n, e, FL);
    euler_flux(UR, n, e, FR);
    double speed_l = fabs(normal_velocity(UL, n)) + sound_speed(UL, e);
    double speed_r = fabs(normal_velocity(UR, n)) + sound_speed(UR, e);
    double lam = fmax(speed_l, speed_r);
    for (int i = 0; i < NV; i++) F[i] = 0.5 * (FL[i] + FR[i]) - 0.5 * lam * (UR[i] - UL[i]);
}

/* HLL with Davis wave-speed estimates */
void hll_flux(const double *UL, const double *UR, const double *n, const struct eos *e, double *F) {
    double FL[NV], FR[NV];
    euler_flux(UL, n, e, FL);
    euler_flux(UR, n, e, FR);
    double unl = normal_velocity(UL, n), unr = normal_velocity(UR, n);
    double cl = sound_speed(UL, e), cr = sound_speed(UR, e);
    double sl = fmin(unl - cl, unr - cr);
    double sr = fmax(unl + cl, unr + cr);
    if (sl >= 0.0) {
        for (int i = 0; i < NV; i++) F[i] = FL[i];
    } else if (sr <= 0.0) {
        for (int i = 0; i < NV; i++) F[i] = FR[i];
    } else {
        double inv = 1.0 / (sr - sl);
        for (int i = 0; i < NV; i++) F[i] = (sr * FL[i] - sl * FR[i] + sl * sr * (UR[i] - UL[i])) * inv;
    }
}

/* the left and right face blocks (dF* by dUL and by dUR), one side seeded at a time */
static void face_blocks(int hll, const double *UL, const double *UR, const double *n, const struct eos *e,
                        double *AL, double *AR) {
    for (int side = 0; side < 2; side++)
        for (int c = 0; c < NV; c++) {
            double dUL[NV] = {0}, dUR[NV] = {0}, F[NV], dF[NV] = {0};
            (side ? dUR : dUL)[c] = 1.0;
            if (hll)
                __enzyme_fwddiff((void *)hll_flux, enzyme_dup, UL, dUL, enzyme_dup, UR, dUR,
                                 enzyme_const, n, enzyme_const, e, enzyme_dup, F, dF);
            else
                __enzyme_fwddiff((void *)rusanov_flux, enzyme_dup, UL, dUL, enzyme_dup, UR, dUR,
                                 enzyme_const, n, enzyme_const, e, enzyme_dup, F, dF);
            for (int r = 0; r < NV; r++) (side ? AR : AL)[r * NV + c] = dF[r];
        }
}

void conformance_c_side(double *out) {
    struct eos e = {1.4, 0.0};
    int k = 0;
    for (int s = 0; s < 4; s++)
        for (int f = 0; f < 3; f++) {
            double n[3] = {NORMALS[f][0], NORMALS[f][1], NORMALS[f][2]};
            double U[NV], F[NV], Fstar[NV], A[NV * NV], AL[NV * NV], AR[NV * NV], sum[NV * NV];
            from_primitive(STATES[s], &e, U);
            euler_flux(U, n, &e, F);
            flux_jacobian(U, n, &e, A);
            /* consistency of the primal: F*(U, U) = F(U) */
            rusanov_flux(U, U, n, &e, Fstar);
            out[k++] = gate(rel_error(Fstar, F, NV), 1e-14);
            hll_flux(U, U, n, &e, Fstar);
            out[k++] = gate(rel_error(Fstar, F, NV), 1e-14);
            /* and of its derivative: AL + AR = A at UL = UR */
            for (int hll = 0; hll < 2; hll++) {
                face_blocks(hll, U, U, n, &e, AL, AR);
                for (int i = 0; i < NV * NV; i++) sum[i] = AL[i] + AR[i];
                out[k++] = gate(rel_error(sum, A, NV * NV), 1e-13);
            }
            /* a supersonic face is fully upwind: HLL's right block is exactly zero */
            if (normal_velocity(U, n) - sound_speed(U, &e) > 0.0)
                for (int i = 0; i < NV * NV; i++) out[k++] = gate(AR[i], 0.0);
        }
}
"""


def _face(kernel, UL, UR, n, eos):
    Fs = np.zeros(5)
    kernel(UL, UR, n, eos, Fs)
    return Fs


def _flux_consistency_api(mod):
    values = []
    for q in _EULER_STATES:
        for n in _EULER_NORMALS:
            eos = _eos(mod, 1.4, 0.0)
            U = _state(mod, q, eos)
            F = _flux(mod, U, n, eos)
            A = _flux_jacobian(mod, U, n, eos)
            for kernel in (mod.rusanov_flux, mod.hll_flux):
                Fstar = np.zeros(5)
                kernel(U, U.copy(), n, eos, Fstar)
                values.append(_gate(_rel_error(Fstar, F), 1e-14))
            for kernel in (mod.rusanov_flux, mod.hll_flux):
                AL = jacobian(kernel, wrt=0, out=4)(U, U.copy(), n, eos, np.zeros(5))
                AR = jacobian(kernel, wrt=1, out=4)(U, U.copy(), n, eos, np.zeros(5))
                def left(u, kernel=kernel, U=U, n=n, eos=eos):
                    return _face(kernel, u, U.copy(), n, eos)

                def right(u, kernel=kernel, U=U, n=n, eos=eos):
                    return _face(kernel, U.copy(), u, n, eos)

                def both(u, kernel=kernel, n=n, eos=eos):
                    return _face(kernel, u, u.copy(), n, eos)

                for d in _probe_directions(U):
                    # the wave speeds tie at UL = UR (a kink of fmax/fmin): one-sided
                    # central differences are only O(h) accurate there ...
                    assert_fd(left, U, AL @ d, direction=d, rtol=1e-3)
                    assert_fd(right, U, AR @ d, direction=d, rtol=1e-3)
                    # ... while moving both sides together is smooth (F*(u, u) = F(u))
                    assert_fd(both, U, (AL + AR) @ d, direction=d)
                values.append(_gate(_rel_error(AL + AR, A), 1e-13))
            if mod.normal_velocity(U, n) - mod.sound_speed(U, eos) > 0.0:
                values += [_gate(v, 0.0) for v in AR.ravel()]
    return values


# Supersonic faces (|u.n| > c): all three normals of states 1 and 3.
_FLUX_CONSISTENCY_N = 12 * 4 + 6 * 25


# ---------------------------------------------------------------- guarded_normalize.c

GUARDED_NORMALIZE = r"""
#include <math.h>
#include <enzyme/enzyme.h>
""" + GATE_C + r"""
#define GUARD 1.0e-12

/* v / |v|, three ways of guarding |v| = 0 */
void normalize_after(const double *v, double *n) {        /* test after the sqrt */
    double len = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (len <= GUARD) { n[0] = 1.0; n[1] = 0.0; n[2] = 0.0; return; }
    double inv = 1.0 / len;
    for (int i = 0; i < 3; i++) n[i] = v[i] * inv;
}

void normalize_before(const double *v, double *n) {       /* test before the sqrt */
    double sq = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (sq <= GUARD * GUARD) { n[0] = 1.0; n[1] = 0.0; n[2] = 0.0; return; }
    double inv = 1.0 / sqrt(sq);
    for (int i = 0; i < 3; i++) n[i] = v[i] * inv;
}

void normalize_floor(const double *v, double *n) {        /* branchless floor on |v| */
    double len = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    double inv = 1.0 / fmax(len, GUARD);
    for (int i = 0; i < 3; i++) n[i] = v[i] * inv;
}

static void jacobian3(int which, const double *v, double *J) {
    for (int c = 0; c < 3; c++) {
        double dv[3] = {0, 0, 0}, n[3], dn[3] = {0, 0, 0};
        dv[c] = 1.0;
        if (which == 0)
            __enzyme_fwddiff((void *)normalize_after, enzyme_dup, v, dv, enzyme_dup, n, dn);
        else if (which == 1)
            __enzyme_fwddiff((void *)normalize_before, enzyme_dup, v, dv, enzyme_dup, n, dn);
        else
            __enzyme_fwddiff((void *)normalize_floor, enzyme_dup, v, dv, enzyme_dup, n, dn);
        for (int r = 0; r < 3; r++) J[3 * r + c] = dn[r];
    }
}

/* (I - n n^T) / |v| */
static void projector(const double *v, double *P) {
    double len = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) P[3 * r + c] = ((r == c) - (v[r] / len) * (v[c] / len)) / len;
}

/* the rotated frame of Nishikawa and Kitamura: x = (uL, uR), nf the face normal;
   out = (n1, n2, alpha1, alpha2), with guarded normalisations and a sign flip */
void rotated_frame(const double *x, const double *nf, double *out) {
    double dq[3] = {x[3] - x[0], x[4] - x[1], x[5] - x[2]};
    double len = sqrt(dq[0] * dq[0] + dq[1] * dq[1] + dq[2] * dq[2]);
    if (len <= GUARD) {                         /* no velocity jump: grid-aligned frame */
        for (int i = 0; i < 3; i++) out[i] = out[3 + i] = nf[i];
        out[6] = 0.0;
        out[7] = 1.0;
        return;
    }
    double n1[3], a1 = 0.0;
    for (int i = 0; i < 3; i++) { n1[i] = dq[i] / len; a1 += nf[i] * n1[i]; }
    if (a1 < 0.0) {                             /* keep the principal weight non-negative */
        for (int i = 0; i < 3; i++) n1[i] = -n1[i];
        a1 = -a1;
    }
    double t[3];
    for (int i = 0; i < 3; i++) t[i] = nf[i] - a1 * n1[i];
    double tlen = sqrt(t[0] * t[0] + t[1] * t[1] + t[2] * t[2]);
    if (tlen <= GUARD) {                        /* jump parallel to the normal */
        for (int i = 0; i < 3; i++) { out[i] = n1[i]; out[3 + i] = nf[i]; }
        out[6] = 1.0;
        out[7] = 0.0;
        return;
    }
    for (int i = 0; i < 3; i++) { out[i] = n1[i]; out[3 + i] = t[i] / tlen; }
    out[6] = a1;
    out[7] = nf[0] * out[3] + nf[1] * out[4] + nf[2] * out[5];
}

/* three identities of the frame, for every input: |n1|^2 = 1, n1.n2 = 0, |alpha|^2 = 1 */
double frame_n1_normsq(const double *x, const double *nf) {
    double o[8];
    rotated_frame(x, nf, o);
    return o[0] * o[0] + o[1] * o[1] + o[2] * o[2];
}
double frame_n1_dot_n2(const double *x, const double *nf) {
    double o[8];
    rotated_frame(x, nf, o);
    return o[0] * o[3] + o[1] * o[4] + o[2] * o[5];
}
double frame_alpha_normsq(const double *x, const double *nf) {
    double o[8];
    rotated_frame(x, nf, o);
    return o[6] * o[6] + o[7] * o[7];
}

/* one forward tangent per input: the gradient of each identity */
#define IDENTITY_GRADIENT(NAME, FN)                                                 \
    void NAME(const double *x, const double *nf, double *g) {                       \
        for (int c = 0; c < 6; c++) {                                               \
            double dx[6] = {0};                                                     \
            dx[c] = 1.0;                                                            \
            g[c] = __enzyme_fwddiff((void *)FN, enzyme_dup, x, dx, enzyme_const, nf); \
        }                                                                           \
    }
IDENTITY_GRADIENT(grad_n1_normsq, frame_n1_normsq)
IDENTITY_GRADIENT(grad_n1_dot_n2, frame_n1_dot_n2)
IDENTITY_GRADIENT(grad_alpha_normsq, frame_alpha_normsq)

void conformance_c_side(double *out) {
    int k = 0;
    double J[9], P[9];
    /* away from the degeneracy every idiom gives the projector, which is
       symmetric and annihilates n from both sides */
    const double vs[3][3] = {{3.0, -4.0, 12.0}, {1.0, 0.0, 0.0}, {-0.02, 0.005, 0.031}};
    for (int i = 0; i < 3; i++) {
        const double *v = vs[i];
        projector(v, P);
        for (int which = 0; which < 3; which++) {
            jacobian3(which, v, J);
            out[k++] = gate(rel_error(J, P, 9), 1e-14);
        }
        double len = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), scale = 1.0 / len;
        for (int r = 0; r < 3; r++) {
            double row = 0.0, col = 0.0;
            for (int c = 0; c < 3; c++) {
                out[k++] = gate(J[3 * r + c] - J[3 * c + r], 1e-15 * scale);
                row += J[3 * r + c] * (v[c] / len);
                col += J[3 * c + r] * (v[c] / len);
            }
            out[k++] = gate(row, 1e-14 * scale);
            out[k++] = gate(col, 1e-14 * scale);
        }
    }
    /* at the origin: both branch idioms give an exactly zero tangent (which
       also rules out NaN), the floor gives I / GUARD */
    double origin[3] = {0.0, 0.0, 0.0};
    for (int which = 0; which < 3; which++) {
        jacobian3(which, origin, J);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++)
                out[k++] = which < 2 ? gate(J[3 * r + c], 0.0)
                                     : gate(J[3 * r + c] - (r == c ? 1.0 / GUARD : 0.0), 1e-3);
    }
    /* just inside the guard zero, just outside the full (stiff) projector */
    double inside[3] = {0.5 * GUARD, 0.0, 0.0}, outside[3] = {2.0 * GUARD, 0.0, 0.0};
    jacobian3(0, inside, J);
    for (int i = 0; i < 9; i++) out[k++] = gate(J[i], 0.0);
    jacobian3(0, outside, J);
    projector(outside, P);
    out[k++] = gate(rel_error(J, P, 9), 1e-14);
    out[k++] = flag(fabs(J[4]) > 1e11);
    /* the frame's identities have vanishing gradients on every branch */
    const double nf[3] = {0.6, -0.8, 0.0};
    const double xs[4][6] = {
        {10.0, 3.0, -2.0, 40.0, -9.0, 5.0},          /* generic */
        {10.0, 3.0, -2.0, 10.0, 3.0, -2.0},          /* no velocity jump */
        {0.0, 0.0, 0.0, 0.6, -0.8, 0.0},             /* jump parallel to the normal */
        {1.0, 1.0, 1.0, 1.0 - 0.6, 1.0 + 0.8, 1.0},  /* antiparallel: flips the sign */
    };
    for (int c = 0; c < 4; c++) {
        double g[6];
        out[k++] = gate(frame_n1_normsq(xs[c], nf) - 1.0, 1e-14);
        out[k++] = gate(frame_alpha_normsq(xs[c], nf) - 1.0, 1e-14);
        grad_n1_normsq(xs[c], nf, g);
        for (int i = 0; i < 6; i++) out[k++] = gate(g[i], 1e-13);
        grad_n1_dot_n2(xs[c], nf, g);
        for (int i = 0; i < 6; i++) out[k++] = gate(g[i], 1e-13);
        grad_alpha_normsq(xs[c], nf, g);
        for (int i = 0; i < 6; i++) out[k++] = gate(g[i], 1e-13);
    }
}
"""

_GN_N = 3 * 18 + 27 + 11 + 4 * 20


def _guarded_normalize_api(mod):
    kernels = (mod.normalize_after, mod.normalize_before, mod.normalize_floor)

    def jac(kernel, v):
        return jacobian(kernel, wrt=0, out=1)(np.asarray(v, float), np.zeros(3))

    def proj(v):
        v = np.asarray(v, float)
        length = np.sqrt(v @ v)
        return (np.eye(3) - np.outer(v / length, v / length)) / length

    values = []
    for v in ([3.0, -4.0, 12.0], [1.0, 0.0, 0.0], [-0.02, 0.005, 0.031]):
        v = np.array(v)
        P = proj(v)
        for kernel in kernels:
            J = jac(kernel, v)
            for d in (np.ones(3), np.array([0.5, -1.0, 0.25])):
                assert_fd(lambda u, kernel=kernel: _out3(kernel, u), v, J @ d, direction=d)
            values.append(_gate(_rel_error(J, P), 1e-14))
        length = np.sqrt(v @ v)
        n = v / length
        for r in range(3):
            values += [_gate(J[r, c] - J[c, r], 1e-15 / length) for c in range(3)]
            values += [_gate(J[r] @ n, 1e-14 / length), _gate(J[:, r] @ n, 1e-14 / length)]
    # at and around the origin |v| is a kink (and the guards are at 1e-12):
    # central differences do not apply; the gates are exact values
    for which, kernel in enumerate(kernels):
        J = jac(kernel, np.zeros(3))
        if which < 2:
            values += [_gate(x, 0.0) for x in J.ravel()]
        else:
            values += [_gate(x, 1e-3) for x in (J - np.eye(3) / 1e-12).ravel()]
    values += [_gate(x, 0.0) for x in jac(kernels[0], [0.5e-12, 0.0, 0.0]).ravel()]
    J = jac(kernels[0], [2e-12, 0.0, 0.0])
    values += [_gate(_rel_error(J, proj([2e-12, 0.0, 0.0])), 1e-14), _flag(abs(J[1, 1]) > 1e11)]
    nf = np.array([0.6, -0.8, 0.0])
    identities = (mod.frame_n1_normsq, mod.frame_n1_dot_n2, mod.frame_alpha_normsq)
    for x in ([10.0, 3.0, -2.0, 40.0, -9.0, 5.0], [10.0, 3.0, -2.0, 10.0, 3.0, -2.0],
              [0.0, 0.0, 0.0, 0.6, -0.8, 0.0], [1.0, 1.0, 1.0, 1.0 - 0.6, 1.0 + 0.8, 1.0]):
        x = np.array(x)
        values += [_gate(mod.frame_n1_normsq(x, nf) - 1.0, 1e-14),
                   _gate(mod.frame_alpha_normsq(x, nf) - 1.0, 1e-14)]
        for kernel in identities:
            g = [_tangent(kernel, Duplicated(x, e), Const(nf)) for e in np.eye(6)]
            # identities hold for every input, so differences vanish on every branch
            assert_fd(lambda u, kernel=kernel: kernel(u, nf), x, float(np.dot(g, np.ones(6))),
                      direction=np.ones(6))
            values += [_gate(t, 1e-13) for t in g]
    return values


def _out3(kernel, v):
    n = np.zeros(3)
    kernel(np.asarray(v, float), n)
    return n


# ---------------------------------------------------------------- newton_inversion.c

NEWTON_INVERSION = r"""
#include <math.h>
#include <enzyme/enzyme.h>
""" + GATE_C + r"""
/* two species (N2, O2), each a rigid rotor plus one harmonic vibrational mode:
   e_s(T) = R_s (5/2 T + theta_s / (exp(theta_s / T) - 1)) */
#define NSPECIES 2
#define T_MIN 50.0
#define T_MAX 50000.0
#define MAX_ITER 50
#define STEP_TOL 1.0e-6
#define CV_FLOOR 1.0e-8
static const double GAS_R[NSPECIES] = {296.8035, 259.8367};
static const double THETA[NSPECIES] = {3395.0, 2239.0};

double species_energy(int s, double T) {
    return GAS_R[s] * (2.5 * T + THETA[s] / (exp(THETA[s] / T) - 1.0));
}

static double species_cv(int s, double T) {
    double x = THETA[s] / T, ex = exp(x), den = ex - 1.0;
    return GAS_R[s] * (2.5 + x * x * ex / (den * den));
}

double mixture_energy(double T, const double *Y) {
    double e = 0.0;
    for (int s = 0; s < NSPECIES; s++) e += Y[s] * species_energy(s, T);
    return e;
}

double mixture_cv(double T, const double *Y) {
    double cv = 0.0;
    for (int s = 0; s < NSPECIES; s++) cv += Y[s] * species_cv(s, T);
    return cv;
}

/* Newton solve of mixture_energy(T, Y) = e for T, clamped to [T_MIN, T_MAX],
   with the step test before or after the update and an optional extra step */
double temperature(double e, const double *Y, double T_guess, int test_before, int polish) {
    double T = fmax(T_guess, 100.0);
    for (int it = 0; it < MAX_ITER; it++) {
        double cv = mixture_cv(T, Y);
        if (cv < CV_FLOOR) break;
        double step = (mixture_energy(T, Y) - e) / cv;
        if (test_before && fabs(step) < STEP_TOL * T) break;
        T = fmin(fmax(T - step, T_MIN), T_MAX);
        if (!test_before && fabs(step) < STEP_TOL * T) break;
    }
    if (polish) {
        double cv = mixture_cv(T, Y);
        if (cv >= CV_FLOOR) T = fmin(fmax(T - (mixture_energy(T, Y) - e) / cv, T_MIN), T_MAX);
    }
    return T;
}

static double dT_de(double e, const double *Y, double Tg, int before, int polish) {
    return __enzyme_fwddiff((void *)temperature, e, 1.0, enzyme_const, Y, enzyme_const, Tg,
                            enzyme_const, before, enzyme_const, polish);
}

static double dT_dY(double e, const double *Y, double Tg, int s) {
    double dY[NSPECIES] = {0.0, 0.0};
    dY[s] = 1.0;
    return __enzyme_fwddiff((void *)temperature, e, 0.0, enzyme_dup, Y, dY, enzyme_const, Tg,
                            enzyme_const, 0, enzyme_const, 0);
}

static double dT_dguess(double e, const double *Y, double Tg) {
    return __enzyme_fwddiff((void *)temperature, e, 0.0, enzyme_const, Y, Tg, 1.0,
                            enzyme_const, 0, enzyme_const, 0);
}

static double rel(double got, double want) { return fabs(got - want) / fabs(want); }

void conformance_c_side(double *out) {
    const double mixes[2][NSPECIES] = {{0.767, 0.233}, {0.5, 0.5}};
    const double temps[6] = {200.0, 300.0, 1000.0, 3000.0, 8000.0, 15000.0};
    const double Tg = 500.0;     /* a poor guess, so that the loop iterates */
    double worst_stale = 0.0;
    int k = 0;
    for (int m = 0; m < 2; m++)
        for (int t = 0; t < 6; t++) {
            const double *Y = mixes[m];
            double e = mixture_energy(temps[t], Y);
            double T = temperature(e, Y, Tg, 0, 0);
            out[k++] = gate(rel(T, temps[t]), 1e-12);
            double cv = mixture_cv(T, Y);
            /* implicit function theorem: dT/de = 1/cv */
            out[k++] = gate(rel(dT_de(e, Y, Tg, 0, 0), 1.0 / cv), 1e-13);
            out[k++] = gate(rel(dT_de(e, Y, Tg, 1, 1), 1.0 / cv), 1e-13);
            double stale = rel(dT_de(e, Y, Tg, 1, 0), 1.0 / cv);
            if (stale > worst_stale) worst_stale = stale;
            out[k++] = gate(rel(temperature(e, Y, Tg, 1, 0), temps[t]), 1e-7);
            /* dT/dY_s = -e_s(T) / cv */
            for (int s = 0; s < NSPECIES; s++)
                out[k++] = gate(rel(dT_dY(e, Y, Tg, s), -species_energy(s, T) / cv), 1e-11);
            /* the root does not depend on the starting guess */
            out[k++] = gate(dT_dguess(e, Y, Tg), 1e-13);
        }
    /* testing before the update leaves a measurably stale tangent somewhere */
    out[k++] = flag(worst_stale >= 1.0e-9);
    /* on the clamps the derivative is exactly zero */
    for (int hi = 0; hi < 2; hi++) {
        double e = hi ? 1.0e12 : -1.0e5;
        out[k++] = gate(temperature(e, mixes[0], Tg, 0, 1) - (hi ? T_MAX : T_MIN), 0.0);
        out[k++] = gate(dT_de(e, mixes[0], Tg, 0, 1), 0.0);
    }
}
"""


def _newton_inversion_api(mod):
    T_fn, Tg = mod.temperature, 500.0
    mixes = (np.array([0.767, 0.233]), np.array([0.5, 0.5]))

    def d_de(e, Y, before, polish):
        return _tangent(T_fn, Duplicated(e, 1.0), Const(Y), Const(Tg), Const(before), Const(polish))

    def rel(got, want):
        return abs(got - want) / abs(want)

    values, worst_stale = [], 0.0
    for Y in mixes:
        for T_ref in (200.0, 300.0, 1000.0, 3000.0, 8000.0, 15000.0):
            e = mod.mixture_energy(T_ref, Y)
            T = T_fn(e, Y, Tg, 0, 0)
            values.append(_gate(rel(T, T_ref), 1e-12))
            cv = mod.mixture_cv(T, Y)
            after = d_de(e, Y, 0, 0)
            assert_fd(lambda v, Y=Y: T_fn(v[0], Y, Tg, 0, 0), [e], after, direction=[1.0])
            values.append(_gate(rel(after, 1.0 / cv), 1e-13))
            values.append(_gate(rel(d_de(e, Y, 1, 1), 1.0 / cv), 1e-13))
            worst_stale = max(worst_stale, rel(d_de(e, Y, 1, 0), 1.0 / cv))
            values.append(_gate(rel(T_fn(e, Y, Tg, 1, 0), T_ref), 1e-7))
            for s in range(2):
                dY = np.zeros(2)
                dY[s] = 1.0
                t = _tangent(T_fn, Duplicated(e, 0.0), Duplicated(Y, dY), Const(Tg), Const(0), Const(0))
                assert_fd(lambda v, e=e: T_fn(e, v, Tg, 0, 0), Y, t, direction=dY)
                values.append(_gate(rel(t, -mod.species_energy(s, T) / cv), 1e-11))
            t = _tangent(T_fn, Duplicated(e, 0.0), Const(Y), Duplicated(Tg, 1.0), Const(0), Const(0))
            # the converged root moves by rounding only: differences are ulps / h
            assert_fd(lambda v, Y=Y, e=e: T_fn(e, Y, v[0], 0, 0), [Tg], t, direction=[1.0], atol=1e-6)
            values.append(_gate(t, 1e-13))
    values.append(_flag(worst_stale >= 1e-9))
    for e, bound in ((-1.0e5, 50.0), (1.0e12, 50000.0)):
        values.append(_gate(T_fn(e, mixes[0], Tg, 0, 1) - bound, 0.0))
        t = d_de(e, mixes[0], 0, 1)
        assert_fd(lambda v: T_fn(v[0], mixes[0], Tg, 0, 1), [e], t, direction=[1.0])
        values.append(_gate(t, 0.0))
    return values


# ---------------------------------------------------------------- substencil_weights.c

SUBSTENCIL_WEIGHTS = r"""
#include <math.h>
#include <enzyme/enzyme.h>
""" + GATE_C + r"""
/* fifth-order reconstruction at a face from five values, through three
   nonlinear weightings of the same three third-order candidates */
#define NS 5
#define TENO_CT 1.0e-5
#define EPS_TENO 1.0e-40
#define EPS_Z 1.0e-40
#define EPS_JS 1.0e-6

static const double D_OPT[3] = {0.1, 0.6, 0.3};
static const double COEF[9] = {
    1.0 / 3.0, -7.0 / 6.0, 11.0 / 6.0,     /* candidate 0 on v0 v1 v2 */
    -1.0 / 6.0, 5.0 / 6.0, 1.0 / 3.0,      /* candidate 1 on v1 v2 v3 */
    1.0 / 3.0, 5.0 / 6.0, -1.0 / 6.0,      /* candidate 2 on v2 v3 v4 */
};
static const double OPTIMAL[NS] = {1.0 / 30.0, -13.0 / 60.0, 47.0 / 60.0, 9.0 / 20.0, -1.0 / 20.0};

/* Jiang-Shu smoothness indicators */
void smoothness(const double *v, double *beta) {
    for (int k = 0; k < 3; k++) {
        const double *w = v + k;
        double curv = w[0] - 2.0 * w[1] + w[2];
        double slope = k == 0 ? w[0] - 4.0 * w[1] + 3.0 * w[2]
                     : k == 1 ? w[0] - w[2]
                              : 3.0 * w[0] - 4.0 * w[1] + w[2];
        beta[k] = (13.0 / 12.0) * curv * curv + 0.25 * slope * slope;
    }
}

static void candidates(const double *v, double *f) {
    for (int k = 0; k < 3; k++) f[k] = COEF[3 * k] * v[k] + COEF[3 * k + 1] * v[k + 1] + COEF[3 * k + 2] * v[k + 2];
}

static double blend(const double *w, const double *f) {
    return (w[0] * f[0] + w[1] * f[1] + w[2] * f[2]) / (w[0] + w[1] + w[2]);
}

double weno5js(const double *v) {            /* d_k / (beta_k + eps)^2 */
    double beta[3], f[3], w[3];
    smoothness(v, beta);
    candidates(v, f);
    for (int k = 0; k < 3; k++) w[k] = D_OPT[k] / ((beta[k] + EPS_JS) * (beta[k] + EPS_JS));
    return blend(w, f);
}

/* WENO5-Z with tau5 = sign (beta0 - beta2): either smooth side of |beta0 - beta2| */
double weno5z_branch(const double *v, double sign) {
    double beta[3], f[3], w[3];
    smoothness(v, beta);
    candidates(v, f);
    double tau5 = sign * (beta[0] - beta[2]);
    for (int k = 0; k < 3; k++) w[k] = D_OPT[k] * (1.0 + tau5 / (beta[k] + EPS_Z));
    return blend(w, f);
}

double weno5z(const double *v) {
    double beta[3], f[3], w[3];
    smoothness(v, beta);
    candidates(v, f);
    double tau5 = fabs(beta[0] - beta[2]);
    for (int k = 0; k < 3; k++) w[k] = D_OPT[k] * (1.0 + tau5 / (beta[k] + EPS_Z));
    return blend(w, f);
}

/* TENO5's sharp cutoff: delta_k in {0, 1} */
void teno5_cutoff(const double *v, double *delta) {
    double beta[3], g[3], total = 0.0;
    smoothness(v, beta);
    double tau5 = fabs(beta[0] - beta[2]);
    for (int k = 0; k < 3; k++) {
        double x = 1.0 + tau5 / (beta[k] + EPS_TENO);
        g[k] = x * x * x * x * x * x;
        total += g[k];
    }
    for (int k = 0; k < 3; k++) delta[k] = g[k] / total < TENO_CT ? 0.0 : 1.0;
}

double teno5(const double *v) {
    double delta[3], f[3], w[3];
    teno5_cutoff(v, delta);
    candidates(v, f);
    for (int k = 0; k < 3; k++) w[k] = delta[k] * D_OPT[k];
    if (w[0] + w[1] + w[2] < EPS_TENO) return f[1];   /* all cut off: the central candidate */
    return blend(w, f);
}

/* gradients, one forward tangent per stencil value */
#define GRADIENT(NAME, FN)                                                \
    void NAME(const double *v, double *g) {                               \
        for (int c = 0; c < NS; c++) {                                    \
            double dv[NS] = {0};                                          \
            dv[c] = 1.0;                                                  \
            g[c] = __enzyme_fwddiff((void *)FN, enzyme_dup, v, dv);       \
        }                                                                 \
    }
GRADIENT(weno5js_gradient, weno5js)
GRADIENT(weno5z_gradient, weno5z)
GRADIENT(teno5_gradient, teno5)

void weno5z_branch_gradient(const double *v, double sign, double *g) {
    for (int c = 0; c < NS; c++) {
        double dv[NS] = {0};
        dv[c] = 1.0;
        g[c] = __enzyme_fwddiff((void *)weno5z_branch, enzyme_dup, v, dv, enzyme_const, sign);
    }
}

static void fd_gradient(double (*q)(const double *), const double *v, double h, double *g) {
    for (int c = 0; c < NS; c++) {
        double vp[NS], vm[NS];
        for (int i = 0; i < NS; i++) vp[i] = vm[i] = v[i];
        vp[c] += h;
        vm[c] -= h;
        g[c] = (q(vp) - q(vm)) / (2.0 * h);
    }
}

/* inside a TENO branch the weights are constant, so the scheme is linear in v */
void teno5_frozen_gradient(const double *v, double *g) {
    double delta[3], w[3], total = 0.0;
    teno5_cutoff(v, delta);
    for (int k = 0; k < 3; k++) { w[k] = delta[k] * D_OPT[k]; total += w[k]; }
    for (int j = 0; j < NS; j++) g[j] = 0.0;
    if (total < EPS_TENO) {
        for (int c = 0; c < 3; c++) g[1 + c] = COEF[3 + c];
        return;
    }
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 3; c++) g[k + c] += (w[k] / total) * COEF[3 * k + c];
}

/* a smooth base with a step of height s across the face */
static void step_profile(double s, double *v) {
    for (int j = 0; j < NS; j++) v[j] = sin(0.7 * j) + (j >= 3 ? s : 0.0);
}

void conformance_c_side(double *out) {
    double g[NS], g2[NS], fd[NS], v[NS];
    int k = 0;
    /* a linear profile: every scheme reduces to the optimal stencil */
    for (int j = 0; j < NS; j++) v[j] = 3.0 + 2.0 * j;
    weno5js_gradient(v, g);
    out[k++] = gate(rel_error(g, OPTIMAL, NS), 1e-14);
    weno5z_gradient(v, g);
    out[k++] = gate(rel_error(g, OPTIMAL, NS), 1e-14);
    teno5_gradient(v, g);
    out[k++] = gate(rel_error(g, OPTIMAL, NS), 1e-14);
    /* WENO5-JS is smooth: AD and central differences agree */
    for (int j = 0; j < NS; j++) v[j] = sin(0.7 * j);
    weno5js_gradient(v, g);
    fd_gradient(weno5js, v, 1e-6, fd);
    out[k++] = gate(rel_error(fd, g, NS), 1e-8);
    /* WENO5-Z on a symmetric stencil sits on the |beta0 - beta2| kink */
    {
        double sym[NS] = {1.0, 0.0, 1.0, 0.0, 1.0}, beta[3], plus[NS], minus[NS], mean[NS], jump = 0.0;
        smoothness(sym, beta);
        out[k++] = gate(beta[0] - beta[2], 0.0);
        weno5z_gradient(sym, g);
        weno5z_branch_gradient(sym, 1.0, plus);
        weno5z_branch_gradient(sym, -1.0, minus);
        for (int j = 0; j < NS; j++) {
            mean[j] = 0.5 * (plus[j] + minus[j]);
            jump = fmax(jump, fabs(plus[j] - minus[j]));
        }
        out[k++] = flag(jump >= 1e-3);                        /* the kink is real */
        out[k++] = gate(fmin(rel_error(g, plus, NS), rel_error(g, minus, NS)), 1e-14);  /* AD: one side */
        fd_gradient(weno5z, sym, 1e-6, fd);
        out[k++] = gate(rel_error(fd, mean, NS), 1e-5);       /* differences: the mean */
        out[k++] = flag(rel_error(fd, g, NS) >= 1e-3);
    }
    /* TENO5 is piecewise linear: AD gives the frozen-weight stencil */
    const double heights[6] = {0.0, 0.2, 0.35, 0.8, 1.5, 3.0};
    for (int i = 0; i < 6; i++) {
        step_profile(heights[i], v);
        teno5_gradient(v, g);
        teno5_frozen_gradient(v, g2);
        out[k++] = gate(rel_error(g, g2, NS), 1e-14);
    }
    /* bisect to the step height where delta_2 flips */
    {
        double lo = 0.20, hi = 1.00, delta[3], vlo[NS], vhi[NS];
        step_profile(lo, v);
        teno5_cutoff(v, delta);
        double at_lo = delta[2];
        step_profile(hi, v);
        teno5_cutoff(v, delta);
        out[k++] = flag(at_lo != delta[2]);
        for (int it = 0; it < 200; it++) {
            double mid = 0.5 * (lo + hi);
            step_profile(mid, v);
            teno5_cutoff(v, delta);
            if (delta[2] == at_lo) lo = mid; else hi = mid;
        }
        step_profile(lo, vlo);
        step_profile(hi, vhi);
        out[k++] = flag(fabs(teno5(vhi) - teno5(vlo)) >= 1e-3);   /* the primal jumps */
        teno5_gradient(vlo, g);
        teno5_frozen_gradient(vlo, g2);
        out[k++] = gate(rel_error(g, g2, NS), 1e-14);
        fd_gradient(teno5, vlo, 0.05, fd);                        /* straddles the jump */
        out[k++] = flag(rel_error(fd, g, NS) >= 0.1);
    }
}
"""


def _substencil_weights_api(mod):
    def grad(kernel, v, *extra):
        return np.array([_tangent(kernel, Duplicated(v, e), *extra) for e in np.eye(5)])

    def fd_grad(kernel, v, h):
        g = np.zeros(5)
        for c in range(5):
            vp, vm = v.copy(), v.copy()
            vp[c] += h
            vm[c] -= h
            g[c] = (kernel(vp) - kernel(vm)) / (2.0 * h)
        return g

    def frozen(v):
        g = np.zeros(5)
        mod.teno5_frozen_gradient(v, g)
        return g

    def cutoff(v):
        delta = np.zeros(3)
        mod.teno5_cutoff(v, delta)
        return delta

    def step(s):
        return np.sin(0.7 * np.arange(5.0)) + np.where(np.arange(5) >= 3, s, 0.0)

    optimal = np.array([1 / 30, -13 / 60, 47 / 60, 9 / 20, -1 / 20])
    linear = 3.0 + 2.0 * np.arange(5.0)
    values = [_gate(_rel_error(grad(k, linear), optimal), 1e-14) for k in (mod.weno5js, mod.weno5z, mod.teno5)]
    smooth = np.sin(0.7 * np.arange(5.0))
    g = grad(mod.weno5js, smooth)
    for d in np.eye(5):
        assert_fd(mod.weno5js, smooth, g @ d, direction=d)
    values.append(_gate(_rel_error(fd_grad(mod.weno5js, smooth, 1e-6), g), 1e-8))
    sym = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    beta = np.zeros(3)
    mod.smoothness(sym, beta)
    values.append(_gate(beta[0] - beta[2], 0.0))
    g = grad(mod.weno5z, sym)
    plus, minus = grad(mod.weno5z_branch, sym, Const(1.0)), grad(mod.weno5z_branch, sym, Const(-1.0))
    for side, sign in ((plus, 1.0), (minus, -1.0)):   # each side is smooth
        for d in np.eye(5):
            assert_fd(lambda u, sign=sign: mod.weno5z_branch(u, sign), sym, side @ d, direction=d)
    values.append(_flag(np.max(np.abs(plus - minus)) >= 1e-3))
    values.append(_gate(min(_rel_error(g, plus), _rel_error(g, minus)), 1e-14))
    fd = fd_grad(mod.weno5z, sym, 1e-6)
    values += [_gate(_rel_error(fd, 0.5 * (plus + minus)), 1e-5), _flag(_rel_error(fd, g) >= 1e-3)]
    for s in (0.0, 0.2, 0.35, 0.8, 1.5, 3.0):
        v = step(s)
        values.append(_gate(_rel_error(grad(mod.teno5, v), frozen(v)), 1e-14))
    lo, hi = 0.20, 1.00
    at_lo = cutoff(step(lo))[2]
    values.append(_flag(at_lo != cutoff(step(hi))[2]))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cutoff(step(mid))[2] == at_lo:
            lo = mid
        else:
            hi = mid
    vlo, vhi = step(lo), step(hi)
    values.append(_flag(abs(mod.teno5(vhi) - mod.teno5(vlo)) >= 1e-3))
    g = grad(mod.teno5, vlo)
    values.append(_gate(_rel_error(g, frozen(vlo)), 1e-14))
    values.append(_flag(_rel_error(fd_grad(mod.teno5, vlo, 0.05), g) >= 0.1))
    return values


_DIV_RANGE_KNOWN = ("Enzyme v0.0.289's tangent of x / y divides by y*y, which overflows at |y| = 1e160 "
                    "(tangents 0 and -0 instead of 1e-160 and -1e-160), underflows at 1e-160 (1.0000111 instead "
                    "of 1) and overflows in the nested second derivatives at 1e80 (0 instead of 2 and -1)")
_FABS_KNOWN = ("Enzyme v0.0.289 takes fabs'(-0.0) = +1 (forward and reverse), so fabs(-x*x) has second "
               "derivative -2 at x = 0 (fwd/rev over df and gf) instead of 2")
_FWDDIFF_CALL_KNOWN = ("Enzyme v0.0.289: __enzyme_batch of a function that calls __enzyme_fwddiff (dfdx) returns "
                       "NaN in every lane (4 values); the batched primal of f is right")

CASES = [
    Case(name="forward/binops", upstream=FWD + "binops.c", source=BINOPS,
         expected=(0.0, 3.75, 8.8888888888888893, 15.9375), api=_binops_api),
    Case(name="forward/loops", upstream=FWD + "loops.c", source=LOOPS,
         expected=(200.0,), api=_loops_api(1e3)),
    Case(name="forward/loopsdouble", upstream=FWD + "loopsdouble.c", source=LOOPSDOUBLE,
         expected=(100 * 100 * 2.0,), api=_loops_api(1e3)),
    Case(name="forward/loopstriple", upstream=FWD + "loopstriple.c", source=LOOPSTRIPLE,
         expected=(100 * 100 * 100 * 2.0,), api=_loops_api(1e3)),
    # upstream tolerance 1e-7
    Case(name="forward/sumtil", upstream=FWD + "sumtil.c", source=SUMTIL,
         expected=(92.0, 0, 0, 0, 9, 8), api=_sumtil_api(True), rtol=1e-7, atol=1e-7,
         compile_kwargs={"flags": ["-ffast-math"]}),
    Case(name="forward/sumtil2", upstream=FWD + "sumtil2.c", source=SUMTIL2,
         expected=(15.0,), api=_sumtil_api(False), compile_kwargs={"flags": ["-ffast-math"]}),
    Case(name="forward/rwrloop", upstream=FWD + "rwrloop.c", source=RWRLOOP,
         expected=(90900.0,), api=_rwrloop_api),
    # upstream prints cos^2 - sin^2 next to the tangent: expected = cos(2x), computed here
    Case(name="forward/activity", upstream=FWD + "activity.c", source=ACTIVITY,
         expected=tuple(float(np.cos(2 * x)) for x in _ACTIVITY_XS), api=_activity_api,
         compile_kwargs={"flags": ["-ffast-math"]}),
    # float kernel: upstream tolerance 1e-7
    Case(name="forward/pow_zero", upstream=FWD + "pow_zero.c", source=POW_ZERO,
         expected=(0.0, 1.0, 0.0), api=_pow_zero_api, rtol=1e-7, atol=1e-7,
         compile_kwargs={"flags": ["-ffast-math"]}),
    # the rule is deliberately not the derivative, which the first-use check
    # would report (tests/test_verify.py checks that it does): off here
    Case(name="forward/customfwd", upstream=FWD + "customfwd.c", source=CUSTOMFWD,
         expected=(100.0, 1.0), api=_customfwd_api, compile_kwargs={"verify": False}),
    # upstream tolerance 1e-12 (absolute, on values of order 1)
    Case(name="forward/div_range", upstream=FWD + "div_range.c", source=DIV_RANGE,
         expected=(1.0, -1.0, 1.0, 2.0, -1.0), api=_div_range_api, rtol=0.0, atol=1e-12,
         known={way: _DIV_RANGE_KNOWN for way in ("c_side", "api", "plain")}),
    Case(name="forward/fabs_signed_zero", upstream=FWD + "fabs_signed_zero.c", source=FABS_SIGNED_ZERO,
         expected=(1, -1, 1, -1, 1, -1, 0, 0, 2, 2, 2, 2, 2, 2), api=_fabs_signed_zero_api,
         known={way: _FABS_KNOWN for way in ("c_side", "api", "plain")}),
    Case(name="forward/fmin_branch_local_arrays", upstream="enzyme-ffi issue, item 1", source=FMIN_BRANCH,
         expected=(0, 0, 0, 0, 0, 2, 4, 6, 8, 10), api=_fmin_branch_api),
    # upstream is C++ (std::vector<double>); the same function on a pointer and a length
    Case(name="forward/rosenbrock", upstream=FWD + "rosenbrock.cpp", source=ROSENBROCK,
         expected=(-149.0, 50.0, 10855.0, -1550.0), api=_rosenbrock_api),
    # upstream is C++ (the enzyme::autodiff sugar); upstream checks the tangent (three
    # times) and the Const-return primal; the primal of the first call is also stored
    Case(name="forward/sugar", upstream=FWD + "sugar.cpp", source=SUGAR,
         expected=(3.1 * 2, 3.1 * 3.1, 3.1 * 2, 3.1 * 2, 3.1 * 3.1), api=_sugar_api),
    # upstream tolerance 1e-13 on relative errors that are 0 exactly
    Case(name="forward/euler_homogeneity", upstream=FWD + "euler_homogeneity.c", source=EULER_HOMOGENEITY,
         expected=(0.0,) * 24, api=_euler_homogeneity_api, rtol=0.0, atol=1e-13),
    Case(name="forward/flux_consistency", upstream=FWD + "flux_consistency.c", source=FLUX_CONSISTENCY,
         expected=(0.0,) * _FLUX_CONSISTENCY_N, api=_flux_consistency_api, rtol=0.0, atol=1.0),
    Case(name="forward/guarded_normalize", upstream=FWD + "guarded_normalize.c", source=GUARDED_NORMALIZE,
         expected=(0.0,) * _GN_N, api=_guarded_normalize_api, rtol=0.0, atol=1.0),
    Case(name="forward/newton_inversion", upstream=FWD + "newton_inversion.c", source=NEWTON_INVERSION,
         expected=(0.0,) * (12 * 7 + 1 + 4), api=_newton_inversion_api, rtol=0.0, atol=1.0),
    Case(name="forward/substencil_weights", upstream=FWD + "substencil_weights.c", source=SUBSTENCIL_WEIGHTS,
         expected=(0.0,) * 19, api=_substencil_weights_api, rtol=0.0, atol=1.0),
    # BatchMode's tests are .cpp files written in C apart from their declarations
    Case(name="batch/sqaure", upstream=BATCH + "sqaure.cpp", source=BATCH_SQUARE,
         expected=tuple(v * v for v in _SQUARE_VALS), api=_batch_square_api),
    # upstream tolerances 1e-9 (lanes 1-3) and 1e-8 (lane 4: y = 0.1f is a float)
    Case(name="batch/char-ptr", upstream=BATCH + "char-ptr.cpp", source=BATCH_CHAR_PTR,
         expected=(90.0, 693.0, 9.9, 0.314), api=_batch_char_ptr_api, rtol=0.0, atol=1e-8),
    Case(name="batch/fwddiff-call", upstream=BATCH + "fwddiff-call.cpp", source=BATCH_FWDDIFF_CALL,
         expected=(2.0, 54.0, 6.0, 54.0, 6.0, 54.0), api=_batch_fwddiff_call_api,
         known={way: _FWDDIFF_CALL_KNOWN for way in ("c_side", "plain")}),
]
