"""`double **` parameters (issue 11): a 2-D array is passed as a table of
row pointers, built by the package for the primal and for each shadow.

Oracles: numpy (values, analytic gradients) and forward mode against
reverse mode.
"""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

SRC = r"""
double energy(double **rows, int n, int m) {
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) s += rows[i][j] * rows[i][j] * (1 + j);
    return s;
}
/* rows[i][j] *= w[i] * a, in place */
void scale_rows(double **rows, const double *w, double a, int n, int m) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) rows[i][j] *= w[i] * a;
}
double weighted(const double *const *rows, const double *w, int n, int m) {
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) s += w[j] * rows[i][j] * rows[i][(j + 1) % m];
    return s;
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"energy": {"rows": "n"}})


RNG = np.random.default_rng(5)


def test_primal_reads_and_writes_through_the_rows(mod):
    A = RNG.normal(size=(4, 3))
    assert mod.energy(A, 4, 3) == pytest.approx((A ** 2 * np.array([1, 2, 3])).sum(), rel=1e-14)
    B, w = A.copy(), np.array([1.0, 2.0, -1.0, 0.5])
    mod.scale_rows(B, w, 3.0, 4, 3)
    np.testing.assert_allclose(B, A * (3.0 * w)[:, None], rtol=1e-15)
    assert mod.energy.signature.params[0].ctype.rows


def test_reverse_gradient_and_shadow_tables(mod):
    A = RNG.normal(size=(5, 4))
    np.testing.assert_allclose(enzyme.grad(mod.energy)(A, 5, 4), 2 * A * np.array([1, 2, 3, 4]),
                               rtol=1e-14)
    w = RNG.normal(size=4)
    gA, gw = enzyme.grad(mod.weighted, argnums=(0, 1))(A, w, 5, 4)
    nxt = np.roll(A, -1, axis=1)
    np.testing.assert_allclose(gw, (A * nxt).sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(gA, w * nxt + np.roll(w * A, 1, axis=1), rtol=1e-13)
    # an in-place update: seed every output with 1
    X, dX = A.copy(), np.ones_like(A)
    res = autodiff(Reverse, mod.scale_rows, Duplicated(X, dX), Const(np.ones(5)), Active(2.0),
                   Const(5), Const(4))
    np.testing.assert_allclose(dX, np.full_like(A, 2.0))
    assert res.derivs[2] == pytest.approx(A.sum(), rel=1e-13)


def test_forward_mode_agrees_with_reverse(mod):
    A, V = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
    tangent = autodiff(Forward, mod.energy, Duplicated(A, V), Const(3), Const(5)).tangent
    assert tangent == pytest.approx((enzyme.grad(mod.energy)(A, 3, 5) * V).sum(), rel=1e-13)


def test_what_is_refused_before_any_call(mod):
    A = np.ones((4, 3))
    with pytest.raises(enzyme.ArgumentValueError, match="2-D array"):
        mod.energy(np.ones(12), 4, 3)
    with pytest.raises(enzyme.ArgumentTypeError, match="float64"):
        mod.energy(np.ones((4, 3), np.float32), 4, 3)
    with pytest.raises(enzyme.LengthError, match="at least 5 rows"):
        mod.energy(A, 5, 3)
    with pytest.raises(enzyme.ShadowValueError, match="shape"):
        autodiff(Reverse, mod.energy, Duplicated(A, np.zeros((4, 2))), Const(4), Const(3))
    # the rows written through the table may not overlap another argument
    B = np.ones((4, 3))
    with pytest.raises(enzyme.ArgumentValueError, match="share memory"):
        mod.scale_rows.derivative_function(Reverse, (Duplicated, Const, Active, Const, Const))(
            B, np.zeros_like(B), B[0], 1.0, 4, 3)
    read_only = np.ones((4, 3))
    read_only.flags.writeable = False
    with pytest.raises(enzyme.ArgumentValueError, match="read-only"):
        mod.scale_rows(read_only, np.ones(4), 1.0, 4, 3)
    assert mod.weighted(read_only, np.ones(3), 4, 3) == pytest.approx(12.0)  # const rows: fine


def test_isolate_refuses_row_tables(tc):
    iso = enzyme.compile(SRC, isolate=True, toolchain=tc)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="isolate=True"):
        iso.energy(np.ones((2, 2)), 2, 2)
