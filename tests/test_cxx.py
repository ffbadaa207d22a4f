"""C++ sources (issue 11): `.cpp`/`.cc`/`.cxx` files and ``language="c++"``
text are compiled as C++ and linked with libstdc++; the kernels are the
``extern "C"`` functions, whose bodies may use templates, classes,
std::vector, std::array, <cmath>, new/delete and lambdas.

Oracles: the same model written in numpy, analytic derivatives and central
differences. Exceptions are refused at compile time: Enzyme v0.0.289 gives
wrong derivatives through a caught exception (the test shows it with
-fexceptions).
"""

from __future__ import annotations

import numpy as np
import pytest
from oracles import central_difference as _fd

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

MODEL_CPP = r"""
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

namespace detail {
template <typename T> T sq(T x) { return x * x; }
struct Spring {
    double k, rest;
    double energy(double d) const { return 0.5 * k * sq(d - rest); }
};
}

double twice(double x) { return 2 * x; }  // C++ linkage: not a kernel

extern "C" {
double chain(const double *x, int n, double k) {
    std::vector<double> d(n > 0 ? n - 1 : 0);
    for (int i = 0; i + 1 < n; i++) d[i] = x[i + 1] - x[i];
    detail::Spring s{k, 1.0};
    double e = 0.0;
    for (double v : d) e += s.energy(v);
    std::array<double, 3> w{1.0, 0.5, 0.25};
    auto weigh = [&](int i) { return w[i % 3] * std::sin(x[i]); };
    for (int i = 0; i < n; i++) e += weigh(i);
    return e;
}
}

extern "C" double logsumexp(const double *x, int n) {
    double *t = new double[n];
    double top = *std::max_element(x, x + n);
    for (int i = 0; i < n; i++) t[i] = std::exp(x[i] - top);
    double s = std::accumulate(t, t + n, 0.0);
    delete[] t;
    return top + std::log(s);
}
"""

C_PART = r"""
double cxx_scale(double);
/* C calling into the C++ file's extern "C" function */
double c_side(const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += cxx_scale(x[i]) * x[i];
    return s;
}
"""

CXX_PART = r"""
#include <cmath>
template <int P> struct Pow { static double of(double v) { return v * Pow<P - 1>::of(v); } };
template <> struct Pow<0> { static double of(double) { return 1.0; } };
extern "C" double cxx_scale(double v) { return Pow<3>::of(v) + std::cos(v); }
"""


def _chain_numpy(x: np.ndarray, k: float) -> float:
    d = np.diff(x)
    return float(0.5 * k * ((d - 1.0) ** 2).sum() + (np.array([1.0, 0.5, 0.25])[np.arange(x.size) % 3]
                                                     * np.sin(x)).sum())




@pytest.fixture(scope="module")
def model(tc, tmp_path_factory):
    path = tmp_path_factory.mktemp("cxx") / "model.cpp"
    path.write_text(MODEL_CPP)
    return enzyme.compile(str(path), toolchain=tc)


def test_kernels_are_the_extern_c_functions(model):
    assert sorted(model.signatures) == ["chain", "logsumexp"]
    with pytest.raises(enzyme.KernelNotFoundError, match='C\\+\\+ linkage.*extern "C"'):
        _ = model.twice


def test_templates_classes_vectors_lambdas_differentiate(model):
    x = np.linspace(0.1, 2.3, 7)
    assert model.chain(x, 7, 3.0) == pytest.approx(_chain_numpy(x, 3.0), rel=1e-13)
    g = enzyme.grad(model.chain)(x, 7, 3.0)
    np.testing.assert_allclose(g, _fd(lambda v: _chain_numpy(v, 3.0), x), rtol=1e-6, atol=1e-8)
    # the spring constant's adjoint is the spring energy at k = 1
    res = autodiff(Reverse, model.chain, Const(x), Const(7), Active(3.0))
    assert res.derivs[2] == pytest.approx(0.5 * ((np.diff(x) - 1) ** 2).sum(), rel=1e-12)
    # forward mode agrees with the gradient
    v = np.random.default_rng(0).normal(size=7)
    tangent = autodiff(Forward, model.chain, Duplicated(x, v), Const(7), Const(3.0)).tangent
    assert tangent == pytest.approx(g @ v, rel=1e-12)


def test_new_delete_and_std_algorithms(model):
    x = np.array([0.3, -1.2, 2.5, 0.0])
    assert model.logsumexp(x, 4) == pytest.approx(np.log(np.exp(x).sum()), rel=1e-14)
    np.testing.assert_allclose(enzyme.grad(model.logsumexp)(x, 4), np.exp(x) / np.exp(x).sum(),
                               rtol=1e-13)


def test_mixed_c_and_cxx_sources(tc, tmp_path):
    (tmp_path / "part.c").write_text(C_PART)
    (tmp_path / "part.cc").write_text(CXX_PART)
    mod = enzyme.compile(sources=[tmp_path / "part.c", tmp_path / "part.cc"], toolchain=tc)
    x = np.array([0.5, 1.5, -0.7])
    want = ((x ** 3 + np.cos(x)) * x).sum()
    assert mod.c_side(x, 3) == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(enzyme.grad(mod.c_side)(x, 3), 4 * x ** 3 + np.cos(x) - x * np.sin(x),
                               rtol=1e-13)
    assert enzyme.grad(mod.cxx_scale)(2.0) == pytest.approx(12.0 - np.sin(2.0), rel=1e-14)


def test_source_text_with_language_cxx(tc):
    src = "#include <cmath>\nextern \"C\" double f(double x) { return std::tanh(x); }\n"
    mod = enzyme.compile(src, language="c++", toolchain=tc)
    assert enzyme.grad(mod.f)(0.4) == pytest.approx(1 - np.tanh(0.4) ** 2, rel=1e-14)
    with pytest.raises(enzyme.CompileError, match="cmath"):
        enzyme.compile(src, toolchain=tc)  # C by default
    with pytest.raises(enzyme.OptionError, match="language"):
        enzyme.compile(src, language="fortran", toolchain=tc)


THROWING = r"""
#include <cmath>
#include <stdexcept>
static double checked_sqrt(double v) {
    if (v < 0) throw std::domain_error("negative");
    return std::sqrt(v);
}
extern "C" double safe_sum(const double *x, int n) {
    try {
        double s = 0;
        for (int i = 0; i < n; i++) s += checked_sqrt(x[i]);
        return s;
    } catch (const std::exception &) {
        return -1.0;
    }
}
"""


def test_exceptions_are_a_compile_error_that_says_why(tc):
    with pytest.raises(enzyme.CompileError, match="exceptions disabled") as info:
        enzyme.compile(THROWING, language="c++", toolchain=tc)
    assert "wrong derivatives" in str(info.value) and "-fexceptions" in str(info.value)


def test_why_exceptions_are_refused(tc):
    """With -fexceptions (the user's choice), the pinned Enzyme's gradient
    through a caught exception is wrong: the catch returns a constant, so
    the gradient is 0, but Enzyme gives NaN and nonzero entries. If this
    starts to pass, exceptions could be allowed again."""
    mod = enzyme.compile(THROWING, language="c++", flags=["-fexceptions"], verify=False,
                         toolchain=tc)
    y = np.array([1.0, -4.0, 9.0])
    assert mod.safe_sum(y, 3) == -1.0
    g = enzyme.grad(mod.safe_sum)(y, 3)
    assert not np.array_equal(g, np.zeros(3))
