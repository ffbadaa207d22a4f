"""Ported from enzyme/test/Integration/ReverseMode (part a)."""

from __future__ import annotations

import math

import numpy as np
from harness import Case, assert_fd

from enzyme import Active, Const, Duplicated, Reverse, ReverseSplit, autodiff, autodiff_thunk, grad, hessian, jacobian

MANYMAX = r"""
#include <enzyme/enzyme.h>

/* a running maximum that starts at a scalar */
double alldiv(double *a, int N, double start) {
    for (int i = 0; i < N; i++)
        if (a[i] > start) start = a[i];
    return start;
}

double alldiv2(double *a, int N) {
    double start = 0.0;
    for (int i = 0; i < N; i++)
        if (a[i] > start) start = a[i];
    return start;
}

static void fill(double *a, double *d_a, int big_at) {
    for (int i = 0; i < 5; i++) { a[i] = i + 1; d_a[i] = 0.0; }
    if (big_at >= 0) a[big_at] = 102.0;
}

void conformance_c_side(double *out) {
    double a[5], d_a[5];
    fill(a, d_a, 3);
    out[5] = __enzyme_autodiff((void *)alldiv, a, d_a, 5, 3.14);
    for (int i = 0; i < 5; i++) out[i] = d_a[i];
    fill(a, d_a, 4);
    __enzyme_autodiff((void *)alldiv2, a, d_a, 5);
    for (int i = 0; i < 5; i++) out[6 + i] = d_a[i];
    fill(a, d_a, -1);
    out[16] = __enzyme_autodiff((void *)alldiv, a, d_a, 5, 102.0);
    for (int i = 0; i < 5; i++) out[11 + i] = d_a[i];
}
"""


def _manymax_api(mod):
    values = []
    for big_at, start in ((3, 3.14), (4, None), (None, 102.0)):
        a = np.arange(1.0, 6.0)
        if big_at is not None:
            a[big_at] = 102.0
        da = np.zeros(5)
        if start is None:
            autodiff(Reverse, mod.alldiv2, Duplicated(a, da), Const(5))
            assert_fd(lambda v: mod.alldiv2(v, 5), a, da)
            values += list(da)
        else:
            r = autodiff(Reverse, mod.alldiv, Duplicated(a, da), Const(5), Active(start))
            assert_fd(lambda v, s=start: mod.alldiv(v, 5, s), a, da)
            values += list(da) + ([r.derivs[2]] if big_at == 3 else [])
            last = r.derivs[2]
    return values + [last]


CASES = [
    Case(name="reverse/manymax", upstream="enzyme/test/Integration/ReverseMode/manymax.c",
         source=MANYMAX,
         expected=(0, 0, 0, 1, 0, 0,   # alldiv, max at a[3]; d start
                   0, 0, 0, 0, 1,      # alldiv2, max at a[4]
                   0, 0, 0, 0, 0, 1),  # alldiv with start = 102; d start
         api=_manymax_api),
]


# ---------------------------------------------------------------------------
# Helpers shared by the cases below.

def _fd32(f, x, derivative, *, rtol=1e-3, stretch=1e4):
    """Central differences for a float (binary32) kernel. Steps of 1e-6 would be
    swamped by float rounding, so the check runs on g(t) = f(x + stretch*(t - x)),
    whose 1e-6 steps are 1e-2 steps of f; g'(x) = stretch * f'(x)."""
    x = np.asarray(x, dtype=float)
    assert_fd(lambda t: f(x + stretch * (t - x)), x, stretch * np.asarray(derivative, dtype=float),
              rtol=rtol, atol=rtol * stretch)


def _weighted(kernel_out, seed):
    """The scalar <seed, output> whose gradient a reverse pass with an output
    shadow seeded by ``seed`` computes."""
    return lambda v: float(np.dot(np.ravel(kernel_out(v)), np.ravel(seed)))


def _goto_walk(x0, x1):
    """An independent value-and-Jacobian of the A/B goto loop of
    controlflow.c and loopsnested.c (dual numbers, in Python)."""
    def step_a(u, du, v, dv):
        return (3 * np.sin(2 * u + v), 3 * np.cos(2 * u + v) * (2 * du + dv),
                4 * np.cos(u + v), -4 * np.sin(u + v) * (du + dv))

    def step_b(u, du, v, dv):
        return (4 * np.cos(u + 2 * v), -4 * np.sin(u + 2 * v) * (du + 2 * dv),
                4 * np.sin(2 * u + v), 4 * np.cos(2 * u + v) * (2 * du + dv))

    jac = np.zeros((2, 2))
    for col in range(2):
        u, du, v, dv = x0, float(col == 0), x1, float(col == 1)
        step = step_a
        while True:
            u, du, v, dv = step(u, du, v, dv)
            if u * u < v:
                break
            step = step_a if u > 0 else step_b
        jac[:, col] = (du, dv)
    return np.array([u, v]), jac


# ---------------------------------------------------------------------------
# allocatedtape.c: split reverse mode with a caller-provided tape buffer.

ALLOCATEDTAPE = r"""
extern int enzyme_dup, enzyme_allocated, enzyme_tape;
void *__enzyme_augmentfwd(void *, ...);
void __enzyme_reverse(void *, ...);

/* in place: (x0, x1) -> (x0 + x1^2, -x1); its Jacobian is [[1, 2 x1], [0, -1]] */
void f(double *x) {
    double second = x[1];
    x[0] = x[0] + second * second;
    x[1] = -second;
}

#define TAPE_BYTES 104  /* more than the pinned Enzyme asks for */

static void forward_part(double *x, double *x_b, void *tape) {
    __enzyme_augmentfwd((void *)f, enzyme_dup, x, x_b, enzyme_allocated, TAPE_BYTES, enzyme_tape, tape);
}

static void reverse_part(double *x, double *x_b, void *tape) {
    __enzyme_reverse((void *)f, enzyme_dup, x, x_b, enzyme_allocated, TAPE_BYTES, enzyme_tape, tape);
}

void conformance_c_side(double *out) {
    double x[2] = {1.2, 3.4}, x_b[2] = {5.6, 7.8};
    double tape[TAPE_BYTES / sizeof(double)];
    forward_part(x, x_b, tape);
    reverse_part(x, x_b, tape);
    out[0] = x[0];
    out[1] = x[1];
    out[2] = x_b[0];
    out[3] = x_b[1];
}
"""


def _allocatedtape_api(mod):
    x0, seed = np.array([1.2, 3.4]), np.array([5.6, 7.8])
    x, xb = x0.copy(), seed.copy()
    forward, reverse = autodiff_thunk(ReverseSplit, mod.f, Duplicated)
    tape = forward(x, xb)
    reverse(tape)

    def run(v):
        v = v.copy()
        mod.f(v)
        return v

    assert_fd(_weighted(run, seed), x0, xb)
    return [x[0], x[1], xb[0], xb[1]]


# ---------------------------------------------------------------------------
# attributor2.c: upstream is a FileCheck of the IR attributes of two callers
# of __enzyme_autodiff; here the same calls are run and their results kept.

ATTRIBUTOR2 = r"""
double __enzyme_autodiff(void *, double, double *, double *);

/* the stress is the strain: sigma = du_dx */
void stress_calculation(double du_dx, double *sigma) { *sigma = du_dx; }

double func1(double *sigma, double *dir) {
    return __enzyme_autodiff((void *)stress_calculation, 2.0, sigma, dir);
}

double func2(double *sigma, double *dir) {
    return __enzyme_autodiff((void *)stress_calculation, 2.0, sigma, dir);
}

void conformance_c_side(double *out) {
    double sigma = 0.0, dir = 3.0;
    out[0] = func1(&sigma, &dir);
    out[1] = sigma;
    out[2] = dir;
    sigma = 0.0;
    dir = -1.5;
    out[3] = func2(&sigma, &dir);
    out[4] = sigma;
    out[5] = dir;
}
"""


def _attributor2_api(mod):
    values = []
    for seed in (3.0, -1.5):
        sigma, dsigma = np.zeros(1), np.array([seed])
        r = autodiff(Reverse, mod.stress_calculation, Active(2.0), Duplicated(sigma, dsigma))

        def run(v):
            s = np.zeros(1)
            mod.stress_calculation(float(v[0]), s)
            return s

        assert_fd(_weighted(run, [seed]), [2.0], [r.derivs[0]])
        values += [r.derivs[0], sigma[0], dsigma[0]]
    return values


# ---------------------------------------------------------------------------
# boundissue.c: an inclusive loop bound, including empty and null arrays.

BOUNDISSUE = r"""
void __enzyme_autodiff(void *, ...);

/* squares a[0] .. a[N] in place (the bound is inclusive) */
void alldiv(double *a, int N) {
    for (int i = 0; i <= N; i++) a[i] = a[i] * a[i];
}

void conformance_c_side(double *out) {
    double one[1] = {3.14}, d_one[1] = {1.0};
    double ten[10], d_ten[10];
    __enzyme_autodiff((void *)alldiv, (double *)0, (double *)0, -1);
    __enzyme_autodiff((void *)alldiv, (double *)0, (double *)0, -10);
    __enzyme_autodiff((void *)alldiv, one, d_one, 0);
    out[0] = one[0];
    out[1] = d_one[0];
    for (int i = 0; i < 10; i++) { ten[i] = i + 1; d_ten[i] = 1.0; }
    __enzyme_autodiff((void *)alldiv, ten, d_ten, 9);
    for (int i = 0; i < 10; i++) out[2 + i] = d_ten[i];
}
"""


def _alldiv_run(mod, n):
    def run(v):
        v = v.copy()
        mod.alldiv(v, n)
        return v
    return run


def _boundissue_api(mod):
    for n in (-1, -10):  # nothing is read or written: empty arrays stand for the null pointers
        autodiff(Reverse, mod.alldiv, Duplicated(np.zeros(0), np.zeros(0)), Const(n))
    one, d_one = np.array([3.14]), np.array([1.0])
    autodiff(Reverse, mod.alldiv, Duplicated(one, d_one), Const(0))
    assert_fd(_weighted(_alldiv_run(mod, 0), [1.0]), [3.14], d_one)
    ten0 = np.arange(1.0, 11.0)
    ten, d_ten = ten0.copy(), np.ones(10)
    autodiff(Reverse, mod.alldiv, Duplicated(ten, d_ten), Const(9))
    assert_fd(_weighted(_alldiv_run(mod, 9), np.ones(10)), ten0, d_ten)
    return [one[0], d_one[0], *d_ten]


# ---------------------------------------------------------------------------
# cachefwd.c: a local scratch array rewritten every iteration (-ffast-math).

CACHEFWD = r"""
extern void __enzyme_autodiff(void *, double *, double *, int);

double sumtil(double *vec, int size) {
    double total = 0.0;
    double scratch[4];
    for (int i = 0; i < size; i++) {
        for (int j = 0; j < 4; j++) scratch[j] = i * j * j;
        for (int j = 0; j < 4; j++) total += scratch[j] * vec[i];
    }
    return total;
}

void conformance_c_side(double *out) {
    double vec[5] = {1.0, 2.0, 3.0, 4.0, 5.0};
    double d_vec[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
    __enzyme_autodiff((void *)sumtil, vec, d_vec, 5);
    for (int i = 0; i < 5; i++) out[i] = d_vec[i];
}
"""


def _cachefwd_api(mod):
    vec = np.arange(1.0, 6.0)
    g = grad(mod.sumtil, argnums=0)(vec, 5)
    assert_fd(lambda v: mod.sumtil(v, 5), vec, g)
    return list(g)


# ---------------------------------------------------------------------------
# controlflow.c: split reverse mode through goto-driven control flow.

CONTROLFLOW = r"""
extern void *__enzyme_augmentfwd(void *, double *, double *);
extern void __enzyme_reverse(void *, double *, double *, void *);

/* two maps A and B applied in an order the state itself decides */
void f(double x[2]) {
    double t;
step_a:
    t = 4 * __builtin_cos(x[0] + x[1]);
    x[0] = 3 * __builtin_sin(2 * x[0] + x[1]);
    x[1] = t;
    goto decide;
step_b:
    t = 4 * __builtin_sin(2 * x[0] + x[1]);
    x[0] = 4 * __builtin_cos(x[0] + 2 * x[1]);
    x[1] = t;
decide:
    if (x[0] * x[0] < x[1]) return;
    if (x[0] > 0) goto step_a;
    goto step_b;
}

void conformance_c_side(double *out) {
    double x[2] = {0.9, 0.7}, x_b[2] = {1.0, 2.0};
    void *tape = __enzyme_augmentfwd((void *)f, x, x_b);
    __enzyme_reverse((void *)f, x, x_b, tape);
    out[0] = x[0];
    out[1] = x[1];
    out[2] = x_b[0];
    out[3] = x_b[1];
}
"""

# upstream asserts nothing (it only runs); the values are those of _goto_walk
_GOTO_VALUE, _GOTO_JAC = _goto_walk(0.9, 0.7)
_GOTO_EXPECTED = (*_GOTO_VALUE, *(_GOTO_JAC.T @ np.array([1.0, 2.0])))


def _inplace_run(kernel):
    def run(v):
        v = v.copy()
        kernel(v)
        return v
    return run


def _controlflow_api(mod):
    x0, seed = np.array([0.9, 0.7]), np.array([1.0, 2.0])
    x, xb = x0.copy(), seed.copy()
    forward, reverse = autodiff_thunk(ReverseSplit, mod.f, Duplicated)
    reverse(forward(x, xb))
    # six steps of sin/cos with gains of ~1e3: the differences' truncation error is ~5e-6
    assert_fd(_weighted(_inplace_run(mod.f), seed), x0, xb, rtol=3e-5)
    return [*x, *xb]


# ---------------------------------------------------------------------------
# customalloc.c: a bump allocator declared to Enzyme as allocation-like.

CUSTOMALLOC = r"""
#include <enzyme/enzyme.h>

char buffer[1024];
int offset = 0;

/* hands out `size` bytes of `pool` at *off (wrapping when the pool is used
   up, so that repeated calls from Python stay inside it) */
void *myallocator(void *pool, int size, int *off) {
    if (*off + size > 1024) *off = 0;
    char *base = (char *)pool;
    int at = *off;
    *off = at + size;
    return base + at;
}

/* "frees" with the offset counter and the pointer (arguments 2 and -1) */
static void myfree(int *off, void *ptr) { (void)off; (void)ptr; }

__attribute__((noinline)) double *set(double x) {
    double *slot = (double *)myallocator(buffer, sizeof(double), &offset);
    *slot = x;
    return slot;
}

double test(double a) { return *set(a); }

void *__enzyme_allocation_like[4] = {(void *)myallocator, (void *)1, (void *)"2,-1", (void *)myfree};

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff((void *)test, 2.0);
}
"""


def _customalloc_api(mod):
    r = autodiff(Reverse, mod.test, Active(2.0))
    assert_fd(lambda v: mod.test(float(v[0])), [2.0], [r.derivs[0]])
    return [r.derivs[0]]


# ---------------------------------------------------------------------------
# customcombined.c: a registered (deliberately wrong) gradient of a callee.

CUSTOMCOMBINED = r"""
#include <stddef.h>

double __enzyme_autodiff(void *, double);

__attribute__((noinline)) void square_(const double *src, double *dest) { *dest = *src * *src; }

int augment = 0;
int gradient = 0;

/* wrong on purpose, so that the result shows the rule was used */
static void *augment_square_(const double *src, const double *d_src, double *dest, double *d_dest) {
    (void)src; (void)d_src;
    augment++;
    *dest = 7.0;
    *d_dest = 11.0;
    return NULL;
}

static void gradient_square_(const double *src, double *d_src, const double *dest, const double *d_dest,
                             void *tape) {
    (void)src; (void)dest; (void)d_dest; (void)tape;
    gradient++;
    *d_src = 13.0;
}

void *__enzyme_register_gradient_square[] = {
    (void *)square_, (void *)augment_square_, (void *)gradient_square_,
};

double square(double x) {
    double y;
    square_(&x, &y);
    return y;
}

void conformance_c_side(double *out) {
    augment = 0;
    gradient = 0;
    out[0] = __enzyme_autodiff((void *)square, 3.0);
    out[1] = augment;
    out[2] = gradient;
}
"""


# ---------------------------------------------------------------------------
# customlog1p.c: a function Enzyme differentiates as if it were log1p.

CUSTOMLOG1P = r"""
#include <enzyme/enzyme.h>

double log1p_like_function(double a) { return 2 * a; }

double test(double a) { return log1p_like_function(a); }

void *__enzyme_function_like[2] = {(void *)log1p_like_function, (void *)"log1p"};

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff((void *)test, 2.0);
}
"""


def _customlog1p_api(mod):
    r = autodiff(Reverse, mod.test, Active(2.0))
    # the rule says "differentiate as log1p": check against differences of log1p itself
    assert_fd(lambda v: float(np.log1p(v[0])), [2.0], [r.derivs[0]])
    return [r.derivs[0]]


# ---------------------------------------------------------------------------
# dbginfo.c: a long power series, compiled with -g -ffast-math.

DBGINFO = r"""
double __enzyme_autodiff(void *, double, unsigned);

/* sum of x^i for i = 1 .. terms; its derivative at 0.5 is 1/(1-x)^2 = 4 */
double taylorlog(double x, unsigned terms) {
    double total = 0;
    for (int i = 1; i <= terms; i++) total += __builtin_pow(x, i);
    return total;
}

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff((void *)taylorlog, 0.5, 10000);
}
"""


def _dbginfo_api(mod):
    r = autodiff(Reverse, mod.taylorlog, Active(0.5), Const(10000))
    assert_fd(lambda v: mod.taylorlog(float(v[0]), 10000), [0.5], [r.derivs[0]])
    return [r.derivs[0]]


# ---------------------------------------------------------------------------
# dbginfo2.c: a heap struct written by a callee, compiled with -g.

DBGINFO2 = r"""
#include <stdlib.h>

extern double __enzyme_autodiff(void *, double);

struct Data {
    double x1;
    double x2;
    double res;
};

void foo(double x, struct Data *data) {
    data->x1 = 2 * x;
    data->x2 = x + 3;
    data->res = data->x1 * data->x2;
}

/* 2x(x + 3), whose derivative at 24.5 is 4x + 6 = 104 */
double call(double x) {
    struct Data *data = malloc(sizeof *data);
    foo(x, data);
    double res = data->res;
    free(data);
    return res;
}

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff((void *)call, 24.5);
}
"""


def _dbginfo2_api(mod):
    g = grad(mod.call)(24.5)
    assert_fd(lambda v: mod.call(float(v[0])), [24.5], [g])
    return [g]


# ---------------------------------------------------------------------------
# differential_pointer_return.c: a callee returning the pointer it wrote through.

DIFFERENTIAL_POINTER_RETURN = r"""
double __enzyme_autodiff(void *, ...);

static double f_read(double *x) { return (*x) * (*x); }

static double *g_write(double *x, double product) {
    *x = (*x) * product;
    return x;
}

static double h_read(double *x) { return *x; }

static double readwriteread_helper(double *x) {
    double product = f_read(x);
    double *same = g_write(x, product);
    return h_read(same);
}

/* *ret = x^3 (and x is cubed in place) */
void readwriteread(double *__restrict x, double *__restrict ret) { *ret = readwriteread_helper(x); }

void conformance_c_side(double *out) {
    double x = 2.0, dx = 0.0, ret = 0.0, dret = 1.0;
    __enzyme_autodiff((void *)readwriteread, &x, &dx, &ret, &dret);
    out[0] = dx;
}
"""


def _differential_pointer_return_api(mod):
    x, dx, ret, dret = np.array([2.0]), np.zeros(1), np.zeros(1), np.ones(1)
    autodiff(Reverse, mod.readwriteread, Duplicated(x, dx), Duplicated(ret, dret))

    def run(v):
        r = np.zeros(1)
        mod.readwriteread(v.copy(), r)
        return r[0]

    assert_fd(run, [2.0], dx)
    return [dx[0]]


# ---------------------------------------------------------------------------
# entropy_hessian.c: forward over reverse on the entropy of the Euler
# equations. Upstream checks (for four gas states) that the gradient equals
# the entropy variables, that the Hessian is symmetric and positive definite,
# and that it equals the forward-mode Jacobian of the entropy variables.

ENTROPY_HESSIAN = r"""
#include <math.h>

extern int enzyme_dup, enzyme_const;
extern double __enzyme_autodiff(void *, ...);
extern void __enzyme_fwddiff(void *, ...);

enum { RHO = 0, RHOU = 1, RHOV = 2, RHOW = 3, RHOE = 4, NVARS = 5 };

typedef struct {
    double gamma;
    double p_inf;
} EulerEos;

/* stiffened-gas pressure of the conserved state U = (rho, rho u, rho v, rho w, rho E) */
static double pressure(const double *U, const EulerEos *eos) {
    double momentum2 = U[RHOU] * U[RHOU] + U[RHOV] * U[RHOV] + U[RHOW] * U[RHOW];
    double kinetic = 0.5 * momentum2 / U[RHO];
    return (eos->gamma - 1.0) * (U[RHOE] - kinetic) - eos->gamma * eos->p_inf;
}

/* eta = -rho s / (gamma - 1), s = log p - gamma log rho */
double mathematical_entropy(const double *U, const EulerEos *eos) {
    double s = log(pressure(U, eos)) - eos->gamma * log(U[RHO]);
    return -U[RHO] * s / (eos->gamma - 1.0);
}

/* the closed form of d eta / d U */
void entropy_variables(const double *U, const EulerEos *eos, double *w) {
    double rho = U[RHO];
    double u = U[RHOU] / rho, v = U[RHOV] / rho, z = U[RHOW] / rho;
    double p = pressure(U, eos);
    double beta = rho / (2.0 * p);
    double s = log(p) - eos->gamma * log(rho);
    w[RHO] = (eos->gamma - s) / (eos->gamma - 1.0) - beta * (u * u + v * v + z * z);
    w[RHOU] = 2.0 * beta * u;
    w[RHOV] = 2.0 * beta * v;
    w[RHOW] = 2.0 * beta * z;
    w[RHOE] = -2.0 * beta;
}

void entropy_gradient(const double *U, const EulerEos *eos, double *g) {
    for (int i = 0; i < NVARS; i++) g[i] = 0.0;
    __enzyme_autodiff((void *)mathematical_entropy, enzyme_dup, U, g, enzyme_const, eos);
}

/* column c of the Hessian: the tangent of the gradient along e_c */
static void hessian_by_columns(const double *U, const EulerEos *eos, double *H) {
    for (int c = 0; c < NVARS; c++) {
        double dU[NVARS] = {0}, g[NVARS], dg[NVARS] = {0};
        dU[c] = 1.0;
        __enzyme_fwddiff((void *)entropy_gradient, enzyme_dup, U, dU, enzyme_const, eos, enzyme_dup, g, dg);
        for (int r = 0; r < NVARS; r++) H[r * NVARS + c] = dg[r];
    }
}

static void variables_jacobian(const double *U, const EulerEos *eos, double *J) {
    for (int c = 0; c < NVARS; c++) {
        double dU[NVARS] = {0}, w[NVARS], dw[NVARS] = {0};
        dU[c] = 1.0;
        __enzyme_fwddiff((void *)entropy_variables, enzyme_dup, U, dU, enzyme_const, eos, enzyme_dup, w, dw);
        for (int r = 0; r < NVARS; r++) J[r * NVARS + c] = dw[r];
    }
}

/* max |a - b| relative to max |b| */
static double rel_error(const double *a, const double *b, int m) {
    double scale = 0.0, err = 0.0;
    for (int i = 0; i < m; i++) scale = fmax(scale, fabs(b[i]));
    if (scale == 0.0) scale = 1.0;
    for (int i = 0; i < m; i++) err = fmax(err, fabs(a[i] - b[i]) / scale);
    return err;
}

/* 1 when an unpivoted Cholesky factorisation of A completes, else 0 */
static double cholesky_completes(const double *A) {
    double L[NVARS * NVARS] = {0};
    for (int i = 0; i < NVARS; i++)
        for (int j = 0; j <= i; j++) {
            double acc = A[i * NVARS + j];
            for (int k = 0; k < j; k++) acc -= L[i * NVARS + k] * L[j * NVARS + k];
            if (i == j) {
                if (acc <= 0.0) return 0.0;
                L[i * NVARS + i] = sqrt(acc);
            } else {
                L[i * NVARS + j] = acc / L[j * NVARS + j];
            }
        }
    return 1.0;
}

/* (rho, u, v, w, p): sea level, Mach 8 at 30 km, post-shock, near vacuum */
static const double primitives[4][5] = {
    {1.225, 50.0, 10.0, -5.0, 101325.0},
    {0.0184, 2400.0, 60.0, 0.0, 1197.0},
    {0.1400, 300.0, -120.0, 45.0, 1.6e5},
    {1.0e-3, 1500.0, 0.0, -200.0, 25.0},
};

static void conserved(const double *q, const EulerEos *eos, double *U) {
    U[RHO] = q[0];
    U[RHOU] = q[0] * q[1];
    U[RHOV] = q[0] * q[2];
    U[RHOW] = q[0] * q[3];
    U[RHOE] = (q[4] + eos->gamma * eos->p_inf) / (eos->gamma - 1.0)
              + 0.5 * q[0] * (q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
}

void conformance_c_side(double *out) {
    EulerEos eos = {1.4, 0.0};
    for (int s = 0; s < 4; s++) {
        double U[NVARS], w[NVARS], g[NVARS], H[NVARS * NVARS], J[NVARS * NVARS];
        conserved(primitives[s], &eos, U);
        entropy_variables(U, &eos, w);
        entropy_gradient(U, &eos, g);
        hessian_by_columns(U, &eos, H);
        variables_jacobian(U, &eos, J);
        double scale = 0.0, asym = 0.0;
        for (int i = 0; i < NVARS * NVARS; i++) scale = fmax(scale, fabs(H[i]));
        for (int r = 0; r < NVARS; r++)
            for (int c = 0; c < NVARS; c++)
                asym = fmax(asym, fabs(H[r * NVARS + c] - H[c * NVARS + r]));
        out[4 * s + 0] = rel_error(g, w, NVARS);
        out[4 * s + 1] = asym / scale;
        out[4 * s + 2] = cholesky_completes(H);
        out[4 * s + 3] = rel_error(H, J, NVARS * NVARS);
    }
}
"""

_EULER_PRIMITIVES = ((1.225, 50.0, 10.0, -5.0, 101325.0), (0.0184, 2400.0, 60.0, 0.0, 1197.0),
                     (0.1400, 300.0, -120.0, 45.0, 1.6e5), (1.0e-3, 1500.0, 0.0, -200.0, 25.0))


def _rel_error(a, b):
    a, b = np.ravel(a), np.ravel(b)
    scale = np.max(np.abs(b)) or 1.0
    return float(np.max(np.abs(a - b)) / scale)


def _entropy_hessian_api(mod):
    eos = np.zeros(1, dtype=mod.mathematical_entropy.dtype("eos"))
    eos["gamma"], eos["p_inf"] = 1.4, 0.0
    values = []
    for rho, u, v, z, p in _EULER_PRIMITIVES:
        U = np.array([rho, rho * u, rho * v, rho * z, p / 0.4 + 0.5 * rho * (u * u + v * v + z * z)])
        w = np.zeros(5)
        mod.entropy_variables(U, eos, w)
        g = grad(mod.mathematical_entropy, argnums=0)(U, eos)
        H = hessian(mod.mathematical_entropy, wrt=0)(U, eos)
        J = jacobian(mod.entropy_variables, wrt="U", out="w")(U, eos, np.zeros(5))
        # central differences along directions scaled to each variable (the
        # state spans 1e-3 .. 1e5); H and J against differences of the primal
        # entropy_variables
        scale = np.where(U != 0, np.abs(U), np.abs(U[0])) / max(1.0, float(np.max(np.abs(U))))
        for d in (scale, scale * np.array([1.0, -0.5, 0.7, -0.3, 0.9])):
            assert_fd(lambda x: mod.mathematical_entropy(x, eos), U, g @ d, direction=d, rtol=1e-5)

            def variables(x):
                out = np.zeros(5)
                mod.entropy_variables(x, eos, out)
                return out

            fd_scale = float(np.max(np.abs(H @ d)))
            assert_fd(variables, U, H @ d, direction=d, rtol=1e-5, atol=1e-6 * fd_scale)
            assert_fd(variables, U, J @ d, direction=d, rtol=1e-5, atol=1e-6 * fd_scale)
        try:
            np.linalg.cholesky(H)
            definite = 1.0
        except np.linalg.LinAlgError:
            definite = 0.0
        values += [_rel_error(g, w), float(np.max(np.abs(H - H.T)) / np.max(np.abs(H))), definite,
                   _rel_error(H, J)]
    return values


# ---------------------------------------------------------------------------
# forrealloc.c: a float recurrence in a buffer grown by realloc each step.

FORREALLOC = r"""
#include <stdlib.h>

float __enzyme_autodiff_float(void *, float, int);

/* x[0] = inp, x[i] = x[i-1] + inp: returns n * inp */
float foo(float inp, int n) {
    float *x = NULL;
    for (int i = 0; i < n; i++) {
        x = (float *)realloc(x, (i + 1) * sizeof(float));
        x[i] = (i == 0) ? inp : x[i - 1] + inp;
    }
    float res = x[n - 1];
    free(x);
    return res;
}

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff_float((void *)foo, 3.0f, 32);
}
"""


def _forrealloc_api(mod):
    r = autodiff(Reverse, mod.foo, Active(3.0), Const(32))
    _fd32(lambda v: mod.foo(float(v[0]), 32), [3.0], [r.derivs[0]])
    return [r.derivs[0]]


# ---------------------------------------------------------------------------
# frexp.c: the mantissa of frexp, whose derivative is 2^-exponent.

FREXP = r"""
#include <math.h>

double __enzyme_autodiff(void *, ...);

double f(double x) {
    int exponent;
    return frexp(x, &exponent);
}

static const double data[16] = {0.9, 1.0, 1.2, 2.0, 2.3, 32.0, 33.0, 0.25,
                                0.26, -0.9, -1.0, -1.2, -2.0, -2.3, 32.0, -33.0};

void conformance_c_side(double *out) {
    for (int i = 0; i < 16; i++) out[i] = __enzyme_autodiff((void *)f, data[i]);
}
"""

_FREXP_DATA = (0.9, 1.0, 1.2, 2.0, 2.3, 32.0, 33.0, 0.25, 0.26, -0.9, -1.0, -1.2, -2.0, -2.3, 32.0, -33.0)


def _frexp_api(mod):
    values = []
    for x in _FREXP_DATA:
        r = autodiff(Reverse, mod.f, Active(x))
        if math.frexp(x)[0] not in (0.5, -0.5):  # at powers of two f jumps: no central difference
            assert_fd(lambda v: mod.f(float(v[0])), [x], [r.derivs[0]])
        values.append(r.derivs[0])
    return values


# ---------------------------------------------------------------------------
# fwdsolve.c: forward substitution (unit diagonal), adjoints of L and b.

FWDSOLVE = r"""
#include <stddef.h>

void __enzyme_autodiff(void *, ...);

/* out solves L out = b for a unit lower-triangular L, except that (as
   upstream) row i only subtracts the columns j < i - 1 */
__attribute__((noinline)) void forward_sub(int N, double *__restrict__ L, double *__restrict__ b,
                                           double *__restrict__ out) {
    for (size_t i = 0; i < (size_t)N; i++) {
        double acc = b[i];
        for (size_t j = 0; j + 1 < i; j++) acc -= L[i * N + j] * out[j];
        out[i] = acc;
    }
}

void conformance_c_side(double *out_values) {
    double L[9], dL[9], b[3], db[3], out[3], dout[3];
    for (int i = 0; i < 9; i++) { L[i] = i + 1; dL[i] = 0.0; }
    for (int i = 0; i < 3; i++) { b[i] = (i + 1) / 10.0; db[i] = 0.0; dout[i] = 10000.0 * (i + 1); }
    forward_sub(3, L, b, out);
    for (int i = 0; i < 9; i++) L[i] = i;
    __enzyme_autodiff((void *)forward_sub, 3, L, dL, b, db, out, dout);
    for (int i = 0; i < 9; i++) out_values[i] = dL[i];
    for (int i = 0; i < 3; i++) out_values[9 + i] = db[i];
}
"""


def _fwdsolve_api(mod):
    L0, b0 = np.arange(9.0), np.arange(1.0, 4.0) / 10.0
    seed = 10000.0 * np.arange(1.0, 4.0)
    L, dL, b, db, out, dout = L0.copy(), np.zeros(9), b0.copy(), np.zeros(3), np.zeros(3), seed.copy()
    autodiff(Reverse, mod.forward_sub, Const(3), Duplicated(L, dL), Duplicated(b, db), Duplicated(out, dout))

    def run(v):
        o = np.zeros(3)
        mod.forward_sub(3, v[:9].copy(), v[9:].copy(), o)
        return o

    assert_fd(_weighted(run, seed), np.concatenate([L0, b0]), np.concatenate([dL, db]))
    return [*dL, *db]


# ---------------------------------------------------------------------------
# global_shadow_other_function.c: a static global written by one callee and
# read by another (upstream also passes -enzyme-global-activity=1 to Enzyme).

GLOBAL_SHADOW_OTHER_FUNCTION = r"""
void __enzyme_autodiff(void *, ...);

static double g[2] = {0};

__attribute__((noinline)) static void fill(double *x) {
    for (int i = 0; i < 2; i++) g[i] = x[i] * x[i];
}

__attribute__((noinline)) static double loss(double *x) {
    (void)x;
    double s = 0;
    for (int i = 0; i < 2; i++) s += g[i];
    return s;
}

/* x0^2 + x1^2 through the global */
double h(double *x) {
    fill(x);
    return loss(x);
}

void conformance_c_side(double *out) {
    double x[2] = {3.0, 4.0}, dx[2] = {0.0, 0.0};
    __enzyme_autodiff((void *)h, x, dx);
    out[0] = dx[0];
    out[1] = dx[1];
}
"""


def _global_other_api(mod):
    x = np.array([3.0, 4.0])
    g = grad(mod.h)(x)
    assert_fd(lambda v: mod.h(v.copy()), x, g)
    return list(g)


# ---------------------------------------------------------------------------
# global_written_in_callee.c: a static global written by a callee, read after.

GLOBAL_WRITTEN_IN_CALLEE = r"""
void __enzyme_autodiff(void *, ...);

static double g = 1.0;

__attribute__((noinline)) static void f(double *x) { g = x[0] * x[0]; }

double h(double *x) {
    f(x);
    return g;
}

void conformance_c_side(double *out) {
    double x = 3.0, dx = 0.0;
    __enzyme_autodiff((void *)h, &x, &dx);
    out[0] = dx;
}
"""


def _global_written_api(mod):
    x = np.array([3.0])
    g = grad(mod.h)(x)
    assert_fd(lambda v: mod.h(v.copy()), x, g)
    return list(g)


# ---------------------------------------------------------------------------
# gradient-struct-return.c: two active arguments, adjoints returned as a struct.

GRADIENT_STRUCT_RETURN = r"""
typedef struct {
    double dx, dy;
} Gradients;

extern Gradients __enzyme_autodiff(void *, ...);

double mul(double x, double y) { return x * y; }

static Gradients dmul(double x, double y) { return __enzyme_autodiff((void *)mul, x, y); }

void conformance_c_side(double *out) {
    Gradients g = dmul(1.0, 2.0);
    out[0] = g.dx;
    out[1] = g.dy;
}
"""


def _gradient_struct_return_api(mod):
    r = autodiff(Reverse, mod.mul, Active(1.0), Active(2.0))
    assert_fd(lambda v: mod.mul(float(v[0]), float(v[1])), [1.0, 2.0], list(r.derivs))
    return list(r.derivs)


# ---------------------------------------------------------------------------
# headerremat.c: integer values derived from a float in a loop header.

HEADERREMAT = r"""
void __enzyme_autodiff(double (*)(double, double *), ...);

__attribute__((noinline)) int evaluate_integrand(const int nr, const int dtheta) { return nr * dtheta; }

double integrate_image(double dr, double *out) {
    double dtheta = 1;
    double estimate = 0;
    for (int k = 0; k < 10; k++) {
        int nr = (int)dr;
        int ntheta = (int)dtheta;
        double sum = evaluate_integrand(nr, ntheta);
        out[k] *= nr * ntheta;
        estimate = sum * dr;
        dr /= 0.8;          /* refine */
        dtheta = dr / 4.0;
    }
    return estimate;
}

void conformance_c_side(double *values) {
    double out[10], d_out[10];
    for (int i = 0; i < 10; i++) { out[i] = 1.0; d_out[i] = 1.0; }
    __enzyme_autodiff(integrate_image, 200.0, out, d_out);
    for (int i = 0; i < 10; i++) values[i] = d_out[i];
}
"""


def _headerremat_api(mod):
    out, d_out = np.ones(10), np.ones(10)
    autodiff(Reverse, mod.integrate_image, Active(200.0), Duplicated(out, d_out))

    def run(v):
        # every out[k] is seeded with 1; the returned estimate (seed 1) does not read out
        v = v.copy()
        mod.integrate_image(200.0, v)
        return float(np.sum(v))

    assert_fd(run, np.ones(10), d_out)
    return list(d_out)


# ---------------------------------------------------------------------------
# inactivefn.c / inactivefn_noblock.c: a function marked inactive. Upstream
# spells it __attribute__((enzyme_inactive)) / ((enzyme_inactive_noblock)),
# attributes of Enzyme's clang plugin, which the plain clang front end used here
# does not know. The plugin lowers them to annotations, written here directly:
# "enzyme_inactive" (what the pinned Enzyme's preserve-nvvm pass reads; today's
# plugin writes "enzyme_inactivefn") and "enzyme_inactivenoblockfn" (today's
# plugin; the pinned Enzyme has no noblock marker).

INACTIVEFN = r"""
double __enzyme_autodiff(void *, ...);

__attribute__((annotate("enzyme_inactive"))) double log1p_like_function(double a) { return 2 * a; }

double test(double a) { return log1p_like_function(a); }

void conformance_c_side(double *out) {
    out[0] = __enzyme_autodiff((void *)test, 2.0);
}
"""

INACTIVEFN_NOBLOCK = INACTIVEFN.replace('"enzyme_inactive"', '"enzyme_inactivenoblockfn"')


# ---------------------------------------------------------------------------
# insertsort_sum*.c: sum of the larger half of a float array, sorted in place
# by insertion sort (three variants: inline, a noinline inner sort, 64-bit
# indices).

INSERTSORT_SUM = r"""
#include <stdlib.h>

double __enzyme_autodiff(void *, ...);

/* 0, 1, 0, 1, ... */
static float *unsorted_array_init(int N) {
    float *arr = (float *)malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) arr[i] = 1.0 * (i % 2);
    return arr;
}

/* sorts descending, then sums the first half */
void insertsort_sum(float *__restrict array, int N, float *__restrict ret) {
    for (int i = 1; i < N; i++) {
        int j = i;
        while (j > 0 && array[j - 1] < array[j]) {
            float moved = array[j];
            array[j] = array[j - 1];
            array[j - 1] = moved;
            j--;
        }
    }
    float sum = 0;
    for (int i = 0; i < N / 2; i++) sum += array[i];
    *ret = sum;
}

void conformance_c_side(double *out) {
    int N = 10;
    float ret = 0, dret = 1.0f;
    float *array = unsorted_array_init(N);
    float *d_array = (float *)calloc(N, sizeof(float));
    __enzyme_autodiff((void *)insertsort_sum, array, d_array, N, &ret, &dret);
    for (int i = 0; i < N; i++) out[i] = d_array[i];
    free(array);
    free(d_array);
}
"""

INSERTSORT_SUM_ALT = r"""
#include <stdlib.h>

double __enzyme_autodiff(void *, ...);

static float *unsorted_array_init(int N) {
    float *arr = (float *)malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) arr[i] = 1.0 * (i % 2);
    return arr;
}

/* moves array[i] down to its place in the (descending) prefix */
__attribute__((noinline)) static void insertion_sort_inner(float *array, int i) {
    for (int j = i; j > 0 && array[j - 1] < array[j]; j--) {
        float moved = array[j];
        array[j] = array[j - 1];
        array[j - 1] = moved;
    }
}

void insertsort_sum(float *__restrict array, int N, float *__restrict ret) {
    float sum = 0;
    for (int i = 1; i < N; i++) insertion_sort_inner(array, i);
    for (int i = 0; i < N / 2; i++) sum += array[i];
    *ret = sum;
}

void conformance_c_side(double *out) {
    int N = 10;
    float ret = 0, dret = 1.0f;
    float *array = unsorted_array_init(N);
    float *d_array = (float *)calloc(N, sizeof(float));
    __enzyme_autodiff((void *)insertsort_sum, array, d_array, N, &ret, &dret);
    for (int i = 0; i < N; i++) out[i] = d_array[i];
    free(array);
    free(d_array);
}
"""

INSERTSORT_SUM_MIN = r"""
#include <stdlib.h>

double __enzyme_autodiff(void *, ...);

static float *unsorted_array_init(int N) {
    float *arr = (float *)malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) arr[i] = 1.0 * (i % 2);
    return arr;
}

/* no restrict, 64-bit counters */
void insertsort_sum(float *array, long long N, float *ret) {
    for (long long i = 1; i < N; i++) {
        long long j = i;
        while (j > 0 && array[j - 1] < array[j]) {
            float moved = array[j];
            array[j] = array[j - 1];
            array[j - 1] = moved;
            j -= 1;
        }
    }
    float sum = 0;
    for (int i = 0; i < N / 2; i++) sum += array[i];
    *ret = sum;
}

void conformance_c_side(double *out) {
    long long N = 10;
    float ret = 0, dret = 1.0f;
    float *array = unsorted_array_init(N);
    float *d_array = (float *)calloc(N, sizeof(float));
    __enzyme_autodiff((void *)insertsort_sum, array, d_array, N, &ret, &dret);
    for (int i = 0; i < N; i++) out[i] = d_array[i];
    free(array);
    free(d_array);
}
"""


def _insertsort_api(mod):
    array0 = (np.arange(10) % 2).astype(np.float32)
    array, d_array = array0.copy(), np.zeros(10, np.float32)
    ret, dret = np.zeros(1, np.float32), np.ones(1, np.float32)
    autodiff(Reverse, mod.insertsort_sum, Duplicated(array, d_array), Const(10), Duplicated(ret, dret))

    def run(v):
        r = np.zeros(1, np.float32)
        mod.insertsort_sum(v.astype(np.float32), 10, r)
        return float(r[0])

    _fd32(run, array0, d_array)
    return list(d_array)


_INSERTSORT_EXPECTED = tuple(float(i % 2) for i in range(10))


# ---------------------------------------------------------------------------
# invsqrt.c: the fast inverse square root (integer bit tricks Enzyme cannot
# differentiate) given a registered reverse rule.

INVSQRT = r"""
#include <stdint.h>

void __enzyme_autodiff(void *, ...);

float Q_rsqrt(float number) {
    const float threehalfs = 1.5F;
    float half = number * 0.5F;
    float y = number;
    int32_t bits = *(int32_t *)&y;
    bits = 0x5f3759df - (bits >> 1);
    y = *(float *)&bits;
    return y * (threehalfs - (half * y * y));   /* one Newton step */
}

/* 1 / |A| */
double invmag(double *__restrict__ A, int n) {
    double sumsq = 0;
    for (int i = 0; i < n; i++) sumsq += A[i] * A[i];
    return Q_rsqrt(sumsq);
}

static void aug_rsqrt(float x) { (void)x; }

/* d x^(-1/2) = -1/2 x^(-3/2) */
static float rev_rsqrt(float x, float grad_out) { return -grad_out * Q_rsqrt(x) / (2 * x); }

void *__enzyme_register_gradient_rsqrt[3] = {(void *)Q_rsqrt, (void *)aug_rsqrt, (void *)rev_rsqrt};

void conformance_c_side(double *out) {
    double A[3] = {1.0, 2.0, 3.0}, grad_A[3] = {0.0, 0.0, 0.0};
    __enzyme_autodiff((void *)invmag, A, grad_A, 3);
    for (int i = 0; i < 3; i++) out[i] = grad_A[i];
}
"""


def _q_rsqrt(value):
    """The same bit trick in numpy (binary32), for the upstream's expected values."""
    y = np.array([value], np.float32)
    half = np.float32(value) * np.float32(0.5)
    bits = np.int32(0x5F3759DF) - (y.view(np.int32) >> 1)
    y = bits.view(np.float32)[0]
    return float(y * (np.float32(1.5) - half * y * y))


# upstream: grad_A[i] == -A[i] * invmag(A)^3 within 1e-3, with invmag the bit-trick primal
_INVSQRT_EXPECTED = tuple(-a * _q_rsqrt(14.0) ** 3 for a in (1.0, 2.0, 3.0))


def _invsqrt_api(mod):
    A, dA = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    autodiff(Reverse, mod.invmag, Duplicated(A, dA), Const(3))
    # the primal is itself a 0.2%-accurate float approximation of 1/|A|
    _fd32(lambda v: mod.invmag(v.copy(), 3), A, dA, rtol=1e-2)
    return list(dA)


# ---------------------------------------------------------------------------
# loops.c, loopsdouble.c, loopstriple.c: a float sum in one, two and three
# nested counted loops (double accumulators).

LOOPS = r"""
double __enzyme_autodiff(void *, ...);

/* 100 (a + b) */
void compute_loops(float *a, float *b, float *ret) {
    double sum0 = 0.0;
    for (int i = 0; i < 100; i++) sum0 += *a + *b;
    *ret = sum0;
}

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 0, db = 0, ret = 0, dret = 1.0f;
    __enzyme_autodiff((void *)compute_loops, &a, &da, &b, &db, &ret, &dret);
    out[0] = da;
    out[1] = db;
}
"""

LOOPSDOUBLE = r"""
double __enzyme_autodiff(void *, ...);

/* 100^2 (a + b) */
void compute_loops(float *a, float *b, float *ret) {
    double sum0 = 0.0;
    for (int i = 0; i < 100; i++) {
        double sum1 = 0.0;
        for (int j = 0; j < 100; j++) sum1 += *a + *b;
        sum0 += sum1;
    }
    *ret = sum0;
}

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 0, db = 0, ret = 0, dret = 1.0f;
    __enzyme_autodiff((void *)compute_loops, &a, &da, &b, &db, &ret, &dret);
    out[0] = da;
    out[1] = db;
}
"""

LOOPSTRIPLE = r"""
double __enzyme_autodiff(void *, ...);

/* 100^3 (a + b) */
void compute_loops(float *a, float *b, float *ret) {
    double sum0 = 0.0;
    for (int i = 0; i < 100; i++) {
        double sum1 = 0.0;
        for (int j = 0; j < 100; j++) {
            double sum2 = 0.0;
            for (int k = 0; k < 100; k++) sum2 += *a + *b;
            sum1 += sum2;
        }
        sum0 += sum1;
    }
    *ret = sum0;
}

void conformance_c_side(double *out) {
    float a = 2.0f, b = 3.0f, da = 0, db = 0, ret = 0, dret = 1.0f;
    __enzyme_autodiff((void *)compute_loops, &a, &da, &b, &db, &ret, &dret);
    out[0] = da;
    out[1] = db;
}
"""


def _loops_api(mod):
    a, da = np.array([2.0], np.float32), np.zeros(1, np.float32)
    b, db = np.array([3.0], np.float32), np.zeros(1, np.float32)
    ret, dret = np.zeros(1, np.float32), np.ones(1, np.float32)
    autodiff(Reverse, mod.compute_loops, Duplicated(a, da), Duplicated(b, db), Duplicated(ret, dret))

    def run(v):
        r = np.zeros(1, np.float32)
        mod.compute_loops(v[:1].astype(np.float32), v[1:].astype(np.float32), r)
        return float(r[0])

    _fd32(run, [2.0, 3.0], [da[0], db[0]])
    return [da[0], db[0]]


# ---------------------------------------------------------------------------
# loopsnested.c: the goto walk of controlflow.c with its two steps as inlined
# functions (split reverse mode), next to the straight-line sequence the walk
# takes from (0.9, 0.7) (combined reverse mode); -ffast-math.

LOOPSNESTED = r"""
extern void *__enzyme_augmentfwd(void *, double *, double *);
extern void __enzyme_reverse(void *, double *, double *, void *);
extern void __enzyme_autodiff(void *, double *, double *);

__attribute__((always_inline)) static inline void doA(double x[2]) {
    double t = 4 * __builtin_cos(x[0] + x[1]);
    x[0] = 3 * __builtin_sin(2 * x[0] + x[1]);
    x[1] = t;
}

__attribute__((always_inline)) static inline void doB(double x[2]) {
    double t = 4 * __builtin_sin(2 * x[0] + x[1]);
    x[0] = 4 * __builtin_cos(x[0] + 2 * x[1]);
    x[1] = t;
}

/* the steps f takes from (0.9, 0.7) */
void fcheck(double x[2]) {
    doA(x); doA(x); doB(x); doB(x); doA(x); doB(x);
}

void f(double x[2]) {
    for (;;) {
        doA(x);
        while (!(x[0] * x[0] < x[1])) {
            if (x[0] > 0) goto again;
            doB(x);
        }
        return;
    again:;
    }
}

void conformance_c_side(double *out) {
    double x[2] = {0.9, 0.7}, x_b[2] = {1.0, 2.0};
    double y[2] = {0.9, 0.7}, y_b[2] = {1.0, 2.0};
    void *tape = __enzyme_augmentfwd((void *)f, x, x_b);
    __enzyme_reverse((void *)f, x, x_b, tape);
    __enzyme_autodiff((void *)fcheck, y, y_b);
    out[0] = x[0]; out[1] = x[1]; out[2] = x_b[0]; out[3] = x_b[1];
    out[4] = y[0]; out[5] = y[1]; out[6] = y_b[0]; out[7] = y_b[1];
}
"""


def _loopsnested_api(mod):
    x0, seed = np.array([0.9, 0.7]), np.array([1.0, 2.0])
    x, xb = x0.copy(), seed.copy()
    forward, reverse = autodiff_thunk(ReverseSplit, mod.f, Duplicated)
    reverse(forward(x, xb))
    assert_fd(_weighted(_inplace_run(mod.f), seed), x0, xb, rtol=3e-5)  # as in _controlflow_api
    y, yb = x0.copy(), seed.copy()
    autodiff(Reverse, mod.fcheck, Duplicated(y, yb))
    assert_fd(_weighted(_inplace_run(mod.fcheck), seed), x0, yb, rtol=3e-5)
    return [*x, *xb, *y, *yb]


_UP = "enzyme/test/Integration/ReverseMode/"

CASES += [
    Case(name="reverse/allocatedtape", upstream=_UP + "allocatedtape.c", source=ALLOCATEDTAPE,
         expected=(1.2 + 3.4 * 3.4, -3.4, 5.6, 5.6 * 2 * 3.4 - 7.8), api=_allocatedtape_api),
    # upstream only FileChecks IR attributes: the values are analytic (d sigma/d du_dx = 1)
    Case(name="reverse/attributor2", upstream=_UP + "attributor2.c", source=ATTRIBUTOR2,
         expected=(3.0, 2.0, 0.0, -1.5, 2.0, 0.0), api=_attributor2_api),
    Case(name="reverse/boundissue", upstream=_UP + "boundissue.c", source=BOUNDISSUE,
         expected=(3.14 * 3.14, 6.28, *(2.0 * (1 + i) for i in range(10))), api=_boundissue_api),
    Case(name="reverse/cachefwd", upstream=_UP + "cachefwd.c", source=CACHEFWD,
         expected=tuple(14.0 * i for i in range(5)), api=_cachefwd_api,
         compile_kwargs={"flags": ["-ffast-math"]}),
    # upstream asserts nothing: the values come from _goto_walk (dual numbers in Python)
    Case(name="reverse/controlflow", upstream=_UP + "controlflow.c", source=CONTROLFLOW,
         expected=_GOTO_EXPECTED, api=_controlflow_api),
    Case(name="reverse/customalloc", upstream=_UP + "customalloc.c", source=CUSTOMALLOC,
         expected=(1.0,), api=_customalloc_api),
    Case(name="reverse/customcombined", upstream=_UP + "customcombined.c", source=CUSTOMCOMBINED,
         expected=(13.0, 1.0, 1.0), api=None,
         api_missing="the registered gradient is wrong on purpose (13 for d(x^2)/dx at 3), so no "
                     "finite-difference check can hold; the point is the C-side registration"),
    Case(name="reverse/customlog1p", upstream=_UP + "customlog1p.c", source=CUSTOMLOG1P,
         expected=(1.0 / 3.0,), api=_customlog1p_api),
    Case(name="reverse/dbginfo", upstream=_UP + "dbginfo.c", source=DBGINFO,
         expected=(4.0,), api=_dbginfo_api, compile_kwargs={"flags": ["-ffast-math", "-g"]}),
    Case(name="reverse/dbginfo2", upstream=_UP + "dbginfo2.c", source=DBGINFO2,
         expected=(104.0,), api=_dbginfo2_api, compile_kwargs={"flags": ["-g"]}),
    Case(name="reverse/differential_pointer_return", upstream=_UP + "differential_pointer_return.c",
         source=DIFFERENTIAL_POINTER_RETURN, expected=(12.0,), api=_differential_pointer_return_api),
    # per state: gradient vs entropy variables, Hessian asymmetry, Cholesky completes,
    # forward-over-reverse vs forward Jacobian; upstream's tolerances are 1e-13 / 1e-13 / 1e-12
    Case(name="reverse/entropy_hessian", upstream=_UP + "entropy_hessian.c", source=ENTROPY_HESSIAN,
         expected=(0.0, 0.0, 1.0, 0.0) * 4, api=_entropy_hessian_api, rtol=0.0, atol=1e-13),
    Case(name="reverse/forrealloc", upstream=_UP + "forrealloc.c", source=FORREALLOC,
         expected=(32.0,), api=_forrealloc_api),
    # d/dx of the mantissa x 2^-e is 2^-e = f(x)/x (upstream compares with f(x)/x)
    Case(name="reverse/frexp", upstream=_UP + "frexp.c", source=FREXP,
         expected=tuple(math.frexp(x)[0] / x for x in _FREXP_DATA), api=_frexp_api),
    Case(name="reverse/fwdsolve", upstream=_UP + "fwdsolve.c", source=FWDSOLVE,
         expected=(0, 0, 0, 0, 0, 0, -3000.0, 0, 0, -170000.0, 20000.0, 30000.0), api=_fwdsolve_api),
    Case(name="reverse/global_shadow_other_function", upstream=_UP + "global_shadow_other_function.c",
         source=GLOBAL_SHADOW_OTHER_FUNCTION, expected=(6.0, 8.0), api=_global_other_api,
         known=dict.fromkeys(("c_side", "api", "plain"),
                             "Enzyme v0.0.289 returns dx = (0, 0), not (6, 8): the static global g written by "
                             "one callee and read by another carries no adjoint between them (upstream also "
                             "passes -enzyme-global-activity=1, which the reference chain does not)")),
    Case(name="reverse/global_written_in_callee", upstream=_UP + "global_written_in_callee.c",
         source=GLOBAL_WRITTEN_IN_CALLEE, expected=(6.0,), api=_global_written_api,
         known=dict.fromkeys(("c_side", "api", "plain"),
                             "Enzyme v0.0.289 returns dx = 0, not 6: the load of the static global g after "
                             "the callee that writes it is taken for a read of inactive memory (the defect "
                             "this upstream test guards against)")),
    Case(name="reverse/gradient-struct-return", upstream=_UP + "gradient-struct-return.c",
         source=GRADIENT_STRUCT_RETURN, expected=(2.0, 1.0), api=_gradient_struct_return_api),
    Case(name="reverse/headerremat", upstream=_UP + "headerremat.c", source=HEADERREMAT,
         expected=(200, 15500, 24336, 37830, 59536, 92720, 144780, 226814, 355216, 554280),
         api=_headerremat_api),
    Case(name="reverse/inactivefn", upstream=_UP + "inactivefn.c", source=INACTIVEFN,
         expected=(0.0,), api=None,
         api_missing="the expected 0 is not the derivative of the C (2): no finite-difference check "
                     "can hold; the point is the inactive marker"),
    Case(name="reverse/inactivefn_noblock", upstream=_UP + "inactivefn_noblock.c", source=INACTIVEFN_NOBLOCK,
         expected=(0.0,), api=None,
         api_missing="the expected 0 is not the derivative of the C (2): no finite-difference check "
                     "can hold; the point is the inactive marker",
         known=dict.fromkeys(("c_side", "plain"),
                             "Enzyme v0.0.289 has no noblock inactive marker: the enzyme_inactivenoblockfn "
                             "annotation is ignored and d test/da = 2, not 0")),
    Case(name="reverse/insertsort_sum", upstream=_UP + "insertsort_sum.c", source=INSERTSORT_SUM,
         expected=_INSERTSORT_EXPECTED, api=_insertsort_api),
    Case(name="reverse/insertsort_sum_alt", upstream=_UP + "insertsort_sum_alt.c", source=INSERTSORT_SUM_ALT,
         expected=_INSERTSORT_EXPECTED, api=_insertsort_api),
    Case(name="reverse/insertsort_sum_min", upstream=_UP + "insertsort_sum_min.c", source=INSERTSORT_SUM_MIN,
         expected=_INSERTSORT_EXPECTED, api=_insertsort_api),
    # upstream's tolerance is 1e-3 (the primal is a bit-trick approximation)
    Case(name="reverse/invsqrt", upstream=_UP + "invsqrt.c", source=INVSQRT,
         expected=_INVSQRT_EXPECTED, api=_invsqrt_api, rtol=0.0, atol=1e-3),
    Case(name="reverse/loops", upstream=_UP + "loops.c", source=LOOPS,
         expected=(100.0, 100.0), api=_loops_api),
    Case(name="reverse/loopsdouble", upstream=_UP + "loopsdouble.c", source=LOOPSDOUBLE,
         expected=(1e4, 1e4), api=_loops_api),
    # upstream asserts nothing: both runs must give _goto_walk's values
    Case(name="reverse/loopsnested", upstream=_UP + "loopsnested.c", source=LOOPSNESTED,
         expected=_GOTO_EXPECTED * 2, api=_loopsnested_api, compile_kwargs={"flags": ["-ffast-math"]}),
    Case(name="reverse/loopstriple", upstream=_UP + "loopstriple.c", source=LOOPSTRIPLE,
         expected=(1e6, 1e6), api=_loops_api),
]
