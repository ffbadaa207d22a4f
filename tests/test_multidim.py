"""Multidimensional array parameters (issue 11): ``double r[3][3]``,
``double (*p)[3]`` and ``double q[][3]`` take C-contiguous numpy arrays of
the declared trailing shape, checked like 1-D arrays (shadows too).

Oracles: numpy (the primal), analytic derivatives of matrix-vector products
and central differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracles import central_difference as _fd

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

# Written the way legacy astronomy code (SOFA/ERFA style) writes them.
SRC = r"""
#include <math.h>
void rxp(double r[3][3], const double p[3], double rp[3]) {
    for (int i = 0; i < 3; i++) {
        double w = 0.0;
        for (int j = 0; j < 3; j++) w += r[i][j] * p[j];
        rp[i] = w;
    }
}
double pvm(const double pv[2][3]) {
    return sqrt(pv[0][0] * pv[0][0] + pv[0][1] * pv[0][1] + pv[0][2] * pv[0][2])
         + 0.5 * (pv[1][0] * pv[1][0] + pv[1][1] * pv[1][1] + pv[1][2] * pv[1][2]);
}
double rows_energy(int n, const double (*x)[3], double k) {
    double e = 0.0;
    for (int i = 0; i + 1 < n; i++)
        for (int d = 0; d < 3; d++) {
            double t = x[i + 1][d] - x[i][d];
            e += k * t * t * t * t;
        }
    return e;
}
void scale_rows(int n, double x[][2], double s) {
    for (int i = 0; i < n; i++) { x[i][0] *= s; x[i][1] *= s * s; }
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"rows_energy": {"x": "n"}, "scale_rows": {"x": "n"}})




def test_signatures_record_the_declared_shapes(mod):
    shapes = {p.name: p.ctype.shape for p in mod.rxp.signature.params}
    assert shapes == {"r": (3, 3), "p": (3,), "rp": (3,)}
    assert mod.rows_energy.signature.params[1].ctype.shape == (0, 3)
    assert mod.scale_rows.signature.params[1].ctype.shape == (0, 2)


def test_primal_matches_numpy(mod):
    rng = np.random.default_rng(3)
    r, p = rng.normal(size=(3, 3)), rng.normal(size=3)
    out = np.zeros(3)
    mod.rxp(r, p, out)
    np.testing.assert_allclose(out, r @ p, rtol=1e-14)
    x = rng.normal(size=(5, 3))
    want = sum(((x[i + 1] - x[i]) ** 4).sum() for i in range(4)) * 0.7
    assert mod.rows_energy(5, x, 0.7) == pytest.approx(want, rel=1e-13)


def test_reverse_and_forward_of_a_matrix_argument(mod):
    rng = np.random.default_rng(4)
    r, p = rng.normal(size=(3, 3)), rng.normal(size=3)
    w = rng.normal(size=3)  # the seed on rp
    # reverse: d(w . r p)/dr = outer(w, p), d/dp = r^T w
    dr, dp, rp, drp = np.zeros((3, 3)), np.zeros(3), np.zeros(3), w.copy()
    autodiff(Reverse, mod.rxp, Duplicated(r, dr), Duplicated(p, dp), Duplicated(rp, drp))
    np.testing.assert_allclose(dr, np.outer(w, p), rtol=1e-13)
    np.testing.assert_allclose(dp, r.T @ w, rtol=1e-13)
    # forward: the tangent of rp along (R, v) is R p + r v
    R, v, trp = rng.normal(size=(3, 3)), rng.normal(size=3), np.zeros(3)
    autodiff(Forward, mod.rxp, Duplicated(r, R), Duplicated(p, v), Duplicated(np.zeros(3), trp))
    np.testing.assert_allclose(trp, R @ p + r @ v, rtol=1e-13)


def test_grad_of_rows_and_of_a_2x3_array_against_differences(mod):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    g = enzyme.grad(mod.rows_energy, argnums=1)(6, x, 0.3)
    assert g.shape == (6, 3)
    np.testing.assert_allclose(g, _fd(lambda v: mod.rows_energy(6, v, 0.3), x), rtol=1e-6, atol=1e-9)
    pv = rng.normal(size=(2, 3))
    np.testing.assert_allclose(enzyme.grad(mod.pvm)(pv), _fd(mod.pvm, pv), rtol=1e-6, atol=1e-9)
    # the scalar's adjoint, next to a 2-D argument
    dx = np.zeros_like(x)
    res = autodiff(Reverse, mod.rows_energy, Const(6), Duplicated(x, dx), Active(0.3))
    assert res.derivs[2] == pytest.approx(mod.rows_energy(6, x, 1.0), rel=1e-12)


def test_an_in_place_2d_update_differentiates(mod):
    x = np.arange(8.0).reshape(4, 2) + 1.0
    dx = np.ones_like(x)
    res = autodiff(Reverse, mod.scale_rows, Const(4), Duplicated(x.copy(), dx), Active(1.5))
    # x[:,0] -> s x0, x[:,1] -> s^2 x1: with seed 1 on every output,
    # dx0 = s, dx1 = s^2, ds = sum(x0) + 2 s sum(x1)
    np.testing.assert_allclose(dx[:, 0], 1.5)
    np.testing.assert_allclose(dx[:, 1], 2.25)
    assert res.derivs[2] == pytest.approx(x[:, 0].sum() + 3.0 * x[:, 1].sum(), rel=1e-13)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(9), r"shape \(n >= 3, 3\)"),          # flat
    (np.zeros((3, 4)), r"rows of 3"),               # wrong trailing extent
    (np.zeros((2, 3)), r"at least 3 rows"),         # fewer rows than declared
    (np.zeros((3, 3, 1)), r"shape \(n >= 3, 3\)"),
])
def test_wrong_shapes_are_refused_before_any_call(mod, bad, match):
    p, rp = np.ones(3), np.full(3, 7.0)
    with pytest.raises(enzyme.ArgumentValueError, match=match):
        mod.rxp(bad, p, rp)
    with pytest.raises(enzyme.ArgumentValueError, match=match):
        autodiff(Reverse, mod.rxp, Duplicated(bad, np.zeros_like(bad)), Const(p),
                 Duplicated(rp, np.ones(3)))
    np.testing.assert_array_equal(rp, 7.0)


def test_a_short_one_dimensional_array_is_refused(mod):
    with pytest.raises(enzyme.ArgumentValueError, match="at least 3 elements"):
        mod.rxp(np.eye(3), np.ones(2), np.zeros(3))


def test_shadow_shape_and_row_contracts(mod):
    x = np.ones((4, 3))
    with pytest.raises(enzyme.ShadowValueError):
        autodiff(Reverse, mod.rows_energy, Const(4), Duplicated(x, np.zeros(12)), Const(1.0))
    with pytest.raises(enzyme.ShadowValueError):
        autodiff(Reverse, mod.rows_energy, Const(4), Duplicated(x, np.zeros((4, 2))), Const(1.0))
    with pytest.raises(enzyme.LengthError, match="at least 5 rows"):
        mod.rows_energy(5, x, 1.0)
    assert mod.rows_energy(4, x, 1.0) == 0.0
