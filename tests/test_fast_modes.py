"""compile(vector_math=...) and compile(reassociate=...): libm calls in
vectorised loops go to glibc's libmvec (on by default where it exists), and
floating-point reductions may be reordered (opt-in). Both must leave every
derivative right: checked against analytic derivatives and against the
default build, and each option must really change the code it claims to."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import enzyme
from enzyme import build

KERNELS = r"""
#include <math.h>
double soft(const double *x, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += tanh(x[i]) + erfc(x[i]) * exp(0.5 * x[i]);
    return s;
}
void squash(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = tanh(x[i]) * erf(x[i]); }
float softf(const float *x, long n) {
    float s = 0; for (long i = 0; i < n; i++) s += tanhf(x[i]); return s;
}
"""


def soft_grad(x):
    return (1 - np.tanh(x) ** 2) - 2 / np.sqrt(np.pi) * np.exp(-x * x) * np.exp(0.5 * x) \
        + 0.5 * np.exp(0.5 * x) * _erfc(x)


def _erfc(x):
    from scipy.special import erfc
    return erfc(x)


def calls_libmvec(path: str) -> bool:
    return b"_ZGV" in Path(path).read_bytes()


def support(cc):
    mod = cc("double one(double x) { return x; }")
    return build.vector_math_support(mod._toolchain, True)


def test_vector_math_calls_libmvec_and_keeps_derivatives_right(cc):
    if support(cc) is None:
        assert os.environ.get("CI") != "true", "CI machines are x86-64 Debian 12 (glibc 2.36): libmvec must work"
        pytest.skip("no libmvec here (not x86-64 glibc >= 2.35, or no pass plugin)")
    vector = cc(KERNELS, vector_math=True)
    scalar = cc(KERNELS, vector_math=False)
    x = np.linspace(-3.0, 3.0, 1001)
    n = x.size
    grads = {}
    for mod in (vector, scalar):
        grads[mod is vector] = g = enzyme.grad(mod.soft)(x, n)
        np.testing.assert_allclose(g, soft_grad(x), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(mod.soft(x, n), np.sum(np.tanh(x) + _erfc(x) * np.exp(0.5 * x)), rtol=1e-14)
        y, J = np.zeros(n), None
        J = enzyme.jacobian(mod.squash, wrt=0, out=1)(x[:7], y[:7], 7)
        from scipy.special import erf
        want = (1 - np.tanh(x[:7]) ** 2) * erf(x[:7]) + np.tanh(x[:7]) * 2 / np.sqrt(np.pi) * np.exp(-x[:7] ** 2)
        np.testing.assert_allclose(np.diag(J), want, rtol=1e-13, atol=1e-15)
    # the two builds differ (libmvec is not libm), within the documented 4 ulp
    assert not np.array_equal(grads[True], grads[False])
    assert calls_libmvec(vector._artifact.so_path) and not calls_libmvec(scalar._artifact.so_path)
    derivative = vector.soft.derivative_function(enzyme.Reverse, (enzyme.Duplicated, enzyme.Const))
    assert calls_libmvec(derivative.so_path)
    x32 = x.astype(np.float32)
    assert enzyme.grad(vector.softf)(x32, n) == pytest.approx(1 - np.tanh(x32.astype(np.float64)) ** 2,
                                                               rel=1e-5, abs=1e-6)


def test_reassociate_reorders_reductions_only_within_rounding(cc):
    source = "double sumsq(const double *x, long n) { double s = 0; for (long i = 0; i < n; i++) s += x[i] * x[i];" \
             " return s; }"
    plain = cc(source)
    fast = cc(source, reassociate=True)
    assert fast._artifact.key != plain._artifact.key
    rng = np.random.default_rng(3)
    x = rng.normal(size=100_003)
    exact = float(np.sum(x.astype(np.longdouble) ** 2))
    assert fast.sumsq(x, x.size) == pytest.approx(exact, rel=1e-12)
    assert plain.sumsq(x, x.size) == pytest.approx(exact, rel=1e-12)
    np.testing.assert_allclose(enzyme.grad(fast.sumsq)(x, x.size), 2 * x, rtol=1e-15)
    # the reduction is reordered (a vectorised sum rounds differently), which
    # is what makes it fast; a sum of integers is exact either way
    assert fast.sumsq(x, x.size) != plain.sumsq(x, x.size)
    ints = np.arange(1000, dtype=float)
    assert fast.sumsq(ints, 1000) == plain.sumsq(ints, 1000) == float(np.sum(ints ** 2))


@pytest.mark.parametrize("option", ["vector_math", "reassociate"])
def test_the_fast_options_take_booleans(cc, option):
    with pytest.raises(enzyme.OptionTypeError, match=f"{option}= takes True or False"):
        cc("double sq(double x) { return x * x; }", **{option: "yes"})
