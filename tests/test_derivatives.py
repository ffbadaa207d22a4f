"""Derivatives of real C, compiled with the real clang + Enzyme, checked against
analytic values or central finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from oracles import central_difference

import enzyme
from enzyme import (
    Active,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    autodiff,
)

SCALAR = """
double f(double x, double y) { return x * x + 3 * y; }
double fp(double x, const double *y) { return x * x + 3 * y[0]; }
double many(double a, double b, double c, double d) { return a * b + sin(c) * d * d; }
"""


@pytest.fixture(scope="module")
def scalar(cc):
    return cc("#include <math.h>\n" + SCALAR)


def test_primal_call(scalar):
    assert scalar.f(3.0, 5.0) == 24.0
    assert scalar["f"](3, 5) == 24.0
    assert str(scalar.f.signature) == "double f(double x, double y)"


def test_reverse_active_active(scalar):
    r = autodiff(Reverse, scalar.f, Active(3.0), Active(5.0))
    assert r.derivs == (6.0, 3.0)
    assert r.primal is None


def test_reverse_active_duplicated(scalar):
    y, dy = np.array([5.0]), np.zeros(1)
    r = autodiff(Reverse, scalar.fp, Active(3.0), Duplicated(y, dy))
    assert r.derivs == (6.0, None)
    assert dy[0] == 3.0


def test_reverse_with_primal_and_seed(scalar):
    r = autodiff(ReverseWithPrimal, scalar.f, Active(3.0), Active(5.0), seed=2.0)
    assert r.derivs == (12.0, 6.0)
    assert r.primal == 24.0
    r = autodiff(ReverseWithPrimal, scalar.f, Active(3.0), Const(5.0))
    assert r.derivs == (6.0, None) and r.primal == 24.0


def test_forward_modes(scalar):
    t = autodiff(Forward, scalar.f, Duplicated(3.0, 1.0), Const(5.0))
    assert t.tangent == 6.0 and t.primal is None
    t = autodiff(ForwardWithPrimal, scalar.f, Duplicated(3.0, 0.5), Duplicated(5.0, 2.0))
    assert t.tangent == 6.0 * 0.5 + 3.0 * 2.0
    assert t.primal == 24.0
    t = autodiff(ForwardWithPrimal, scalar.f, Duplicated(3.0, 1.0), Const(5.0), ret=Const)
    assert t.tangent is None and t.primal == 24.0


def test_several_active_scalars(scalar):
    a, b, c, d = 1.5, -2.0, 0.7, 3.0
    r = autodiff(ReverseWithPrimal, scalar.many, Active(a), Active(b), Active(c), Active(d))
    expected = (b, a, math.cos(c) * d * d, 2 * math.sin(c) * d)
    assert r.derivs == pytest.approx(expected, rel=1e-14)
    assert r.primal == pytest.approx(a * b + math.sin(c) * d * d)


ROSENBROCK = """
double rosenbrock(const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n - 1; i++) {
        double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        s += 100.0 * a * a + b * b;
    }
    return s;
}
"""


def rosenbrock_grad(x):
    g = np.zeros_like(x)
    a = x[1:] - x[:-1] ** 2
    g[:-1] += -400.0 * x[:-1] * a - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * a
    return g


def test_rosenbrock_reverse_and_accumulation(cc):
    mod = cc(ROSENBROCK)
    x = np.random.default_rng(1).normal(size=50)
    dx = np.zeros_like(x)
    autodiff(Reverse, mod.rosenbrock, Duplicated(x, dx), Const(50))
    np.testing.assert_allclose(dx, rosenbrock_grad(x), rtol=1e-12)
    # Shadows accumulate, as in Enzyme: a second call adds the gradient again.
    autodiff(Reverse, mod.rosenbrock, Duplicated(x, dx), Const(50))
    np.testing.assert_allclose(dx, 2 * rosenbrock_grad(x), rtol=1e-12)


def test_forward_and_reverse_agree(cc):
    mod = cc(ROSENBROCK)
    rng = np.random.default_rng(2)
    x, v = rng.normal(size=20), rng.normal(size=20)
    dx = np.zeros_like(x)
    autodiff(Reverse, mod.rosenbrock, Duplicated(x, dx), Const(20))
    t = autodiff(Forward, mod.rosenbrock, Duplicated(x, v), Const(20))
    assert t.tangent == pytest.approx(float(dx @ v), rel=1e-12)


def test_grad_value_and_grad_and_derivative(cc):
    mod = cc(ROSENBROCK)
    x = np.linspace(-1.0, 1.5, 10)
    g = enzyme.grad(mod.rosenbrock)(x, 10)
    np.testing.assert_allclose(g, rosenbrock_grad(x), rtol=1e-12)
    value, g2 = enzyme.value_and_grad(mod.rosenbrock, argnums=0)(x, 10)
    assert value == pytest.approx(mod.rosenbrock(x, 10))
    np.testing.assert_allclose(g, g2, rtol=1e-14)  # two compiled forms (with and without the primal)
    df = enzyme.derivative(mod.rosenbrock, Reverse, Duplicated, Const)
    dx = np.zeros_like(x)
    r = df(x, dx, 10)
    assert r.derivs == (None, None)
    np.testing.assert_array_equal(dx, g)


OUTPUT = """
#include <math.h>
void squash(const double *x, double *out, long n) {
    for (long i = 0; i < n; i++) out[i] = sin(x[i]) * x[i];
}
"""


def test_output_pointer_seeded_shadow(cc):
    mod = cc(OUTPUT)
    x = np.linspace(0.1, 2.0, 7)
    out = np.zeros(7)
    seed = np.arange(1.0, 8.0)
    dout = seed.copy()
    dx = np.zeros(7)
    autodiff(Reverse, mod.squash, Duplicated(x, dx), Duplicated(out, dout), Const(7))
    np.testing.assert_allclose(dx, seed * (np.cos(x) * x + np.sin(x)), rtol=1e-13)
    np.testing.assert_allclose(out, np.sin(x) * x)
    # Enzyme consumes the seed held in an output's shadow.
    np.testing.assert_array_equal(dout, 0.0)
    # Forward mode: the output shadow receives the tangent.
    v = np.ones(7)
    dout = np.zeros(7)
    autodiff(Forward, mod.squash, Duplicated(x, v), Duplicated(out, dout), Const(7))
    np.testing.assert_allclose(dout, np.cos(x) * x + np.sin(x), rtol=1e-13)


def test_duplicated_noneed(cc):
    mod = cc(OUTPUT)
    x = np.linspace(0.1, 2.0, 5)
    out = np.full(5, -1.0)
    dout, dx = np.ones(5), np.zeros(5)
    autodiff(Reverse, mod.squash, Duplicated(x, dx), DuplicatedNoNeed(out, dout), Const(5))
    np.testing.assert_allclose(dx, np.cos(x) * x + np.sin(x), rtol=1e-13)


LIBM = """
#include <math.h>
double libm(const double *x) {
    return sin(x[0]) * exp(x[1]) + log(x[2]) * pow(x[3], 2.5) + sqrt(x[4])
         + tanh(x[5]) + fabs(x[6]) * fmax(x[7], x[8]) + erf(x[9]);
}
"""


def test_libm_calls(cc):
    mod = cc(LIBM)
    x = np.array([0.3, 0.2, 1.7, 1.3, 2.2, 0.4, -0.8, 1.1, 0.5, 0.6])
    g = enzyme.grad(mod.libm)(x)
    np.testing.assert_allclose(g, central_difference(mod.libm, x), rtol=1e-7, atol=1e-9)
    expected = [math.cos(0.3) * math.exp(0.2), math.sin(0.3) * math.exp(0.2), 1.3 ** 2.5 / 1.7,
                math.log(1.7) * 2.5 * 1.3 ** 1.5, 0.5 / math.sqrt(2.2), 1 - math.tanh(0.4) ** 2,
                -1.1, 0.8, 0.0, 2 / math.sqrt(math.pi) * math.exp(-0.36)]
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-15)


CONTROL = """
#include <stdlib.h>
static double cube(double x) { return x * x * x; }
static double rpow(double x, int n) { return n == 0 ? 1.0 : x * rpow(x, n - 1); }
double branches(double x) {
    if (x < 0.0) return -x * x;
    else if (x < 1.0) return cube(x);
    return 2.0 * x - 1.0;
}
/* halve until below 1: derivative is 2^-k with k chosen by the data */
double halve(double x) {
    while (x > 1.0) x *= 0.5;
    return x * x;
}
double recursive(double x) { return rpow(x, 5); }
double with_malloc(const double *x, int n) {
    double *tmp = (double *)malloc(n * sizeof(double));
    double s = 0.0;
    for (int i = 0; i < n; i++) tmp[i] = x[i] * x[i];
    for (int i = 0; i < n; i++) s += tmp[i] * x[(i + 1) % n];
    free(tmp);
    return s;
}
"""


@pytest.mark.parametrize("x, expected", [(-2.0, 4.0), (0.5, 0.75), (3.0, 2.0)])
def test_branches(cc, x, expected):
    mod = cc(CONTROL)
    assert autodiff(Reverse, mod.branches, Active(x)).derivs[0] == pytest.approx(expected)


def test_data_dependent_while_loop(cc):
    mod = cc(CONTROL)
    # 6.0 -> 3.0 -> 1.5 -> 0.75: x_final = x / 8, f = x^2/64, f' = x/32
    assert autodiff(Reverse, mod.halve, Active(6.0)).derivs[0] == pytest.approx(6.0 / 32)
    assert autodiff(Forward, mod.halve, Duplicated(0.5, 1.0)).tangent == pytest.approx(1.0)


def test_static_and_recursive_helpers(cc):
    mod = cc(CONTROL)
    assert "cube" not in mod and "rpow" not in mod
    assert autodiff(Reverse, mod.recursive, Active(1.5)).derivs[0] == pytest.approx(5 * 1.5 ** 4)


def test_malloc_free_inside_kernel(cc):
    mod = cc(CONTROL)
    x = np.array([0.5, -1.2, 2.0, 0.3])
    g = enzyme.grad(mod.with_malloc)(x, 4)
    np.testing.assert_allclose(g, central_difference(lambda v: mod.with_malloc(v, 4), x),
                               rtol=1e-7)


FLOATS = """
float fsum(const float *x, float s, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += s * x[i] * x[i];
    return acc;
}
"""


def test_float_kernels(cc):
    mod = cc(FLOATS)
    assert mod.fsum.signature.params[0].ctype.dtype == "float32"
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    dx = np.zeros_like(x)
    r = autodiff(Reverse, mod.fsum, Duplicated(x, dx), Active(0.5), Const(3))
    np.testing.assert_allclose(dx, 2 * 0.5 * x, rtol=1e-6)
    assert r.derivs[1] == pytest.approx(14.0, rel=1e-6)
    t = autodiff(Forward, mod.fsum, Duplicated(x, np.ones(3, np.float32)), Duplicated(0.5, 0.0),
                 Const(3))
    assert t.tangent == pytest.approx(6.0, rel=1e-6)
    with pytest.raises(enzyme.ShadowTypeError):
        autodiff(Reverse, mod.fsum, Duplicated(x, np.zeros(3)), Active(0.5), Const(3))


SELF_CALLING = """
#include <enzyme/enzyme.h>
double sq(double x) { return x * x * x; }
double dsq(double x) { return __enzyme_autodiff((void *)sq, enzyme_out, x); }
void grad_dot(const double *x, double *dx, const double *y, int n);
double dot(const double *x, const double *y, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += x[i] * y[i]; return s;
}
void grad_dot(const double *x, double *dx, const double *y, int n) {
    __enzyme_autodiff((void *)dot, enzyme_dup, x, dx, enzyme_const, y, enzyme_const, n);
}
"""


def test_c_code_calling_enzyme_itself(cc):
    mod = cc(SELF_CALLING)
    assert mod.dsq(2.0) == 12.0
    x, dx, y = np.ones(4), np.zeros(4), np.arange(4.0)
    mod.grad_dot(x, dx, y, 4)
    np.testing.assert_array_equal(dx, y)


def test_integer_arguments_and_returns(cc):
    mod = cc("""
    #include <stdint.h>
    #include <stddef.h>
    int64_t isum(const int32_t *v, size_t n) { int64_t s = 0; for (size_t i = 0; i < n; i++) s += v[i]; return s; }
    double scaled(const double *x, const int *idx, int n, double a) {
        double s = 0; for (int i = 0; i < n; i++) s += a * x[idx[i]]; return s;
    }
    """)
    assert mod.isum(np.arange(5, dtype=np.int32), 5) == 10
    assert mod.isum.signature.params[1].ctype.dtype == "uint64"
    x, dx = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    idx = np.array([2, 2, 0], dtype=np.intc)
    r = autodiff(Reverse, mod.scaled, Duplicated(x, dx), Const(idx), Const(3), Active(2.0))
    np.testing.assert_array_equal(dx, [2.0, 0.0, 4.0])
    assert r.derivs[3] == 7.0


def test_multiple_sources_include_dirs_defines(cc, tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "scale.h").write_text("#define SCALE 4.0\ndouble helper(double);\n")
    (tmp_path / "a.c").write_text('#include "scale.h"\ndouble top(double x) { return SCALE * helper(x) + OFFSET; }\n')
    (tmp_path / "b.c").write_text('#include "scale.h"\ndouble helper(double x) { return x * x; }\n')
    mod = cc(sources=[tmp_path / "a.c", tmp_path / "b.c"], include_dirs=[tmp_path / "inc"],
             defines={"OFFSET": "1.0"})
    assert mod.top(2.0) == 17.0
    # the derivative crosses the file boundary: Enzyme sees both bodies
    assert autodiff(Reverse, mod.top, Active(2.0)).derivs[0] == 16.0


def test_compile_from_path_string(cc, tmp_path):
    src = tmp_path / "model.c"
    src.write_text("double tw(double x) { return 2 * x; }\n")
    mod = cc(str(src))
    assert mod.tw(1.5) == 3.0


def test_two_duplicated_arrays_get_their_own_adjoints(cc):
    """Two same-typed differentiated arrays with different adjoints: a
    derivative that swapped or mixed their shadows would fail here, in
    every mode and form (reverse with and without the primal, batched,
    forward)."""
    mod = cc("double mix(const double *a, const double *b, int n) {"
             " double s = 0; for (int i = 0; i < n; i++) s += a[i] * a[i] * b[i] + 3.0 * b[i]; return s; }")
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.25, 4.0, -1.0])
    want_a, want_b = 2 * a * b, a * a + 3.0
    for mode in (Reverse, enzyme.ReverseWithPrimal):
        da, db = np.zeros(3), np.zeros(3)
        autodiff(mode, mod.mix, Duplicated(a, da), Duplicated(b, db), Const(3))
        np.testing.assert_allclose(da, want_a, rtol=1e-15)
        np.testing.assert_allclose(db, want_b, rtol=1e-15)
    lanes_a, lanes_b = np.zeros((2, 3)), np.zeros((2, 3))
    autodiff(Reverse, mod.mix, enzyme.BatchDuplicated(a, lanes_a), enzyme.BatchDuplicated(b, lanes_b), Const(3),
             seed=(1.0, -2.0))
    np.testing.assert_allclose(lanes_a, np.outer([1.0, -2.0], want_a), rtol=1e-15)
    np.testing.assert_allclose(lanes_b, np.outer([1.0, -2.0], want_b), rtol=1e-15)
    va, vb = np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, -1.0])
    t = autodiff(Forward, mod.mix, Duplicated(a, va), Duplicated(b, vb), Const(3))
    assert t.tangent == pytest.approx(want_a @ va + want_b @ vb, rel=1e-14)
    g = enzyme.grad(mod.mix, argnums=(0, 1))(a, b, 3)
    np.testing.assert_allclose(g[0], want_a, rtol=1e-15)
    np.testing.assert_allclose(g[1], want_b, rtol=1e-15)
