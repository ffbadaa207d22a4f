"""Kernels calling CBLAS (issue 11), linked with OpenBLAS, differentiated by
Enzyme's BLAS rules; the helpers those rules call that CBLAS lacks
(``cblas_dlascl`` for dgemm with beta = 0) come from the package.

Oracles: the same expressions in numpy, with analytic derivatives, and the
other mode of Enzyme (forward tangents against reverse gradients).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SRC = r"""
#include <cblas.h>
double dot_nrm(const double *x, const double *y, int n) {
    return cblas_ddot(n, x, 1, y, 1) * cblas_dnrm2(n, x, 1);
}
/* y <- 2 (a x + y); returns |y|^2 */
double axpy_scal(double a, const double *x, double *y, int n) {
    cblas_daxpy(n, a, x, 1, y, 1);
    cblas_dscal(n, 2.0, y, 1);
    return cblas_ddot(n, y, 1, y, 1);
}
/* |op(A) x|^2 with A m x k row-major, op = A or A^T */
double gemv_sq(const double *A, const double *x, double *y, int m, int k, int trans) {
    int rows = trans ? k : m;
    cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, k, 1.0, A, k, x, 1, 0.0, y, 1);
    return cblas_ddot(rows, y, 1, y, 1);
}
/* |X W|^2 (X n x k, W k x m), row- or column-major */
double gemm_sq(const double *W, const double *X, double *H, int n, int k, int m, int colmajor) {
    if (colmajor)
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, m, k, 1.0, X, n, W, k, 0.0, H, n);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, k, 1.0, X, k, W, m, 0.0, H, m);
    double s = 0;
    for (int i = 0; i < n * m; i++) s += H[i] * H[i];
    return s;
}
/* a tanh layer: sum(tanh(X W^T + b)), X n x k, W m x k (transposed in dgemm) */
double layer(const double *W, const double *b, const double *X, double *Z, int n, int k, int m) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) Z[i * m + j] = b[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0, X, k, W, k, 1.0, Z, m);
    double s = 0;
    for (int i = 0; i < n * m; i++) { double e = __builtin_exp(2 * Z[i]); s += (e - 1) / (e + 1); }
    return s;
}
"""


@pytest.fixture(scope="module")
def mod(tc):
    if not any(os.path.exists(p) for p in ("/usr/include/cblas.h",
                                            "/usr/include/x86_64-linux-gnu/cblas.h")):
        message = "OpenBLAS (libopenblas-dev) is not installed; ci/setup.sh installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return enzyme.compile(SRC, libraries=["openblas"], toolchain=tc)


RNG = np.random.default_rng(11)


def test_level1_ddot_dnrm2_daxpy_dscal(mod):
    x, y = RNG.normal(size=6), RNG.normal(size=6)
    gx, gy = enzyme.grad(mod.dot_nrm, argnums=(0, 1))(x, y, 6)
    nx = np.linalg.norm(x)
    np.testing.assert_allclose(gx, y * nx + (x @ y) * x / nx, rtol=1e-12)
    np.testing.assert_allclose(gy, x * nx, rtol=1e-12)
    a = 0.7
    dx, dy, y0 = np.zeros(6), np.zeros(6), y.copy()
    autodiff(Reverse, mod.axpy_scal, Const(a), Duplicated(x, dx), Duplicated(y0.copy(), dy), Const(6))
    r = 2 * (a * x + y0)  # the result's vector; f = |r|^2
    np.testing.assert_allclose(dx, 4 * a * r, rtol=1e-12)
    np.testing.assert_allclose(dy, 4 * r, rtol=1e-12)
    # forward mode carries a tangent of alpha
    tangent = autodiff(Forward, mod.axpy_scal, Duplicated(a, 1.0), Const(x),
                       Duplicated(y0.copy(), np.zeros(6)), Const(6)).tangent
    assert tangent == pytest.approx(4 * r @ x, rel=1e-12)


def test_an_active_daxpy_alpha_is_an_enzyme_limit(mod):
    """Enzyme v0.0.289's reverse rule of daxpy fails an assertion for an
    Active alpha (the plain reference chain too): a DifferentiationError,
    never a number. docs/kernels.md lists it."""
    with pytest.raises(enzyme.DifferentiationError, match="axpy_scal"):
        autodiff(Reverse, mod.axpy_scal, Active(0.7), Const(np.ones(3)), Duplicated(np.ones(3), np.zeros(3)),
                 Const(3))


@pytest.mark.parametrize("trans", [0, 1])
def test_level2_dgemv(mod, trans):
    m, k = 4, 3
    A, x = RNG.normal(size=(m, k)), RNG.normal(size=m if trans else k)
    op = A.T if trans else A
    y = np.zeros(op.shape[0])
    gA, gx = enzyme.grad(mod.gemv_sq, argnums=(0, 1))(A, x, y, m, k, trans)
    r = op @ x
    np.testing.assert_allclose(gx, 2 * op.T @ r, rtol=1e-12)
    np.testing.assert_allclose(gA, 2 * (np.outer(x, r) if trans else np.outer(r, x)), rtol=1e-12)


@pytest.mark.parametrize("colmajor", [0, 1])
def test_level3_dgemm_both_layouts_and_modes(mod, colmajor):
    n, k, m = 5, 3, 4
    Xm, Wm = RNG.normal(size=(n, k)), RNG.normal(size=(k, m))
    # the same matrices, laid out as the call reads them
    X = np.asfortranarray(Xm).ravel(order="K") if colmajor else Xm.ravel()
    W = np.asfortranarray(Wm).ravel(order="K") if colmajor else Wm.ravel()
    X, W = np.ascontiguousarray(X), np.ascontiguousarray(W)
    H = np.zeros(n * m)
    assert mod.gemm_sq(W, X, H, n, k, m, colmajor) == pytest.approx(((Xm @ Wm) ** 2).sum(), rel=1e-12)
    gW, gX = enzyme.grad(mod.gemm_sq, argnums=(0, 1))(W, X, H, n, k, m, colmajor)
    want_W, want_X = 2 * Xm.T @ (Xm @ Wm), 2 * (Xm @ Wm) @ Wm.T
    order = "F" if colmajor else "C"
    np.testing.assert_allclose(gW, want_W.ravel(order=order), rtol=1e-12)
    np.testing.assert_allclose(gX, want_X.ravel(order=order), rtol=1e-12)
    # forward mode: the tangent along V is <grad, V>
    V = RNG.normal(size=W.size)
    tangent = autodiff(Forward, mod.gemm_sq, Duplicated(W, V), Const(X),
                       Duplicated(np.zeros(n * m), np.zeros(n * m)), Const(n), Const(k), Const(m),
                       Const(colmajor)).tangent
    assert tangent == pytest.approx(gW @ V, rel=1e-11)


def test_a_tanh_layer_with_transposed_weights_and_beta_one(mod):
    n, k, m = 8, 5, 3
    X, W, b = RNG.normal(size=(n, k)), RNG.normal(size=(m, k)) * 0.5, RNG.normal(size=m)
    Z = np.zeros((n, m))
    gW, gb = enzyme.grad(mod.layer, argnums=(0, 1))(W, b, X, Z, n, k, m)
    s = 1 - np.tanh(X @ W.T + b) ** 2  # d sum(tanh) / dZ
    np.testing.assert_allclose(gW, s.T @ X, rtol=1e-11)
    np.testing.assert_allclose(gb, s.sum(axis=0), rtol=1e-11)


def test_the_support_helpers_are_not_kernels(mod):
    assert "cblas_dlascl" not in mod.signatures
    assert sorted(mod.signatures) == ["axpy_scal", "dot_nrm", "gemm_sq", "gemv_sq", "layer"]
