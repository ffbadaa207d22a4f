"""Batch (vector) mode, Jacobians, Hessians and Hessian-vector products on real
C, checked against finite differences and against the unbatched modes."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import central_difference

import enzyme
from enzyme import (
    Active,
    BatchDuplicated,
    BatchDuplicatedNoNeed,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    autodiff,
)

SOURCE = r"""
#include <math.h>
double energy(const double *x, double s, int n) {
    double e = 0.0;
    for (int i = 0; i < n; i++) e += s * sin(x[i]) * x[(i + 1) % n] + 0.25 * x[i] * x[i] * x[i] * x[i];
    return e;
}
/* a nonlinear map R^n -> R^m */
void nlmap(const double *x, int n, double *y, int m) {
    for (int j = 0; j < m; j++) {
        double acc = 0.0;
        for (int i = 0; i < n; i++) acc += sin((j + 1) * 0.1 * x[i]) * x[(i + j) % n];
        y[j] = tanh(acc) + 0.01 * j * x[j % n] * x[j % n];
    }
}
double rosen(const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n - 1; i++) {
        double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        s += 100.0 * a * a + b * b;
    }
    return s;
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


@pytest.mark.parametrize("width", [1, 2, 3, 8, 16])
def test_batch_forward_matches_single_forward(mod, width):
    rng = np.random.default_rng(width)
    x = rng.normal(size=12)
    directions = rng.normal(size=(width, 12))
    ds = rng.normal(size=width)
    t = autodiff(ForwardWithPrimal, mod.energy, BatchDuplicated(x, directions),
                 BatchDuplicated(0.7, tuple(ds)), Const(12))
    assert len(t.tangent) == width
    assert t.primal == pytest.approx(mod.energy(x, 0.7, 12))
    for lane in range(width):
        single = autodiff(Forward, mod.energy, Duplicated(x, directions[lane]),
                          Duplicated(0.7, ds[lane]), Const(12)).tangent
        assert t.tangent[lane] == pytest.approx(single, rel=1e-12)


@pytest.mark.parametrize("width", [1, 4, 16])
def test_batch_reverse_seeds_and_adjoints(mod, width):
    rng = np.random.default_rng(10 + width)
    x = rng.normal(size=9)
    shadows = np.zeros((width, 9))
    seeds = rng.normal(size=width)
    r = autodiff(ReverseWithPrimal, mod.energy, BatchDuplicated(x, shadows), Active(1.3),
                 Const(9), seed=tuple(seeds))
    g = enzyme.grad(mod.energy, argnums=(0, 1))(x, 1.3, 9)
    for lane in range(width):
        np.testing.assert_allclose(shadows[lane], seeds[lane] * g[0], rtol=1e-12)
        assert r.derivs[1][lane] == pytest.approx(seeds[lane] * g[1], rel=1e-12)
    assert r.primal == pytest.approx(mod.energy(x, 1.3, 9))


def test_batch_reverse_output_seeds_give_vjps(mod):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), np.zeros(4)
    cotangents = rng.normal(size=(3, 4))
    adjoints = np.zeros((3, 6))
    autodiff(Reverse, mod.nlmap, BatchDuplicated(x, adjoints), Const(6),
             BatchDuplicatedNoNeed(y, cotangents.copy()), Const(4))
    jac = enzyme.jacobian(mod.nlmap, wrt=0, out=2)(x, 6, np.zeros(4), 4)
    np.testing.assert_allclose(adjoints, cotangents @ jac, rtol=1e-11, atol=1e-13)


def _fd_jacobian(mod, x, m):
    def column(i):
        def f(v):
            y = np.zeros(m)
            mod.nlmap(v, x.size, y, m)
            return y[i]
        return central_difference(f, x)
    return np.array([column(i) for i in range(m)])


def test_jacobian_50x30_forward_reverse_and_fd_agree(mod):
    x = np.random.default_rng(5).normal(size=30)
    y = np.zeros(50)
    jac = enzyme.jacobian(mod.nlmap, wrt=0, out="y")(x, 30, y, 50)
    assert jac.shape == (50, 30)
    expected_y = np.zeros(50)
    mod.nlmap(x, 30, expected_y, 50)
    np.testing.assert_array_equal(y, expected_y)  # the primal output is written too
    np.testing.assert_allclose(jac, _fd_jacobian(mod, x, 50), rtol=1e-6, atol=1e-8)
    jac_rev = enzyme.jacobian(mod.nlmap, wrt="x", out=2, mode=Reverse, chunk=16)(x, 30, y, 50)
    np.testing.assert_allclose(jac_rev, jac, rtol=1e-12, atol=1e-14)
    jac_one = enzyme.jacobian(mod.nlmap, wrt=0, out=2, mode=Forward, chunk=1)(x, 30, y, 50)
    np.testing.assert_allclose(jac_one, jac, rtol=1e-12, atol=1e-14)


def test_jvp_and_vjp(mod):
    rng = np.random.default_rng(6)
    x, v, u = rng.normal(size=8), rng.normal(size=8), rng.normal(size=5)
    jac = enzyme.jacobian(mod.nlmap, wrt=0, out=2)(x, 8, np.zeros(5), 5)
    y, tangent = enzyme.jvp(mod.nlmap, wrt=0, out=2)(x, 8, np.zeros(5), 5, v)
    np.testing.assert_allclose(tangent, jac @ v, rtol=1e-12)
    y2, cotangent = enzyme.vjp(mod.nlmap, wrt=0, out=2)(x, 8, np.zeros(5), 5, u)
    np.testing.assert_allclose(cotangent, u @ jac, rtol=1e-12)
    # (two entry points, each vectorised its own way: libmvec's results may
    # differ from one build to another in the last bits)
    np.testing.assert_allclose(y, y2, rtol=4e-15, atol=0)
    value, tangent = enzyme.jvp(mod.energy, wrt=1)(x, 0.5, 8, 1.0)
    assert tangent == pytest.approx(enzyme.grad(mod.energy, argnums=1)(x, 0.5, 8))
    value, cot = enzyme.vjp(mod.energy, wrt=0)(x, 0.5, 8, 2.0)
    np.testing.assert_allclose(cot, 2.0 * enzyme.grad(mod.energy)(x, 0.5, 8), rtol=1e-13)


def test_hessian_20_variables_against_fd_of_gradient(mod):
    x = np.random.default_rng(7).normal(size=20) * 0.5 + 1.0
    hess = enzyme.hessian(mod.rosen)(x, 20)
    gradient = enzyme.grad(mod.rosen)
    fd = np.array([central_difference(lambda v, i=i: gradient(v, 20)[i], x) for i in range(20)])
    np.testing.assert_allclose(hess, fd, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-12, atol=1e-12)
    hess_small_chunks = enzyme.hessian(mod.rosen, chunk=3)(x, 20)
    np.testing.assert_allclose(hess_small_chunks, hess, rtol=1e-13)


def test_hessian_vector_product(mod):
    rng = np.random.default_rng(8)
    x, v = rng.normal(size=15), rng.normal(size=15)
    hv = enzyme.hvp(mod.energy)(x, 0.9, 15, v)
    hess = enzyme.hessian(mod.energy)(x, 0.9, 15)
    np.testing.assert_allclose(hv, hess @ v, rtol=1e-11, atol=1e-12)


def test_batch_misuse_is_a_clear_error(mod):
    x = np.ones(4)
    df = enzyme.derivative(mod.energy, Forward, BatchDuplicated, Const, Const, width=4)
    with pytest.raises(enzyme.ShadowValueError, match="width 4"):
        df(x, np.zeros((3, 4)), 1.0, 4)
    with pytest.raises(enzyme.ActivityError, match="same number of shadows"):
        autodiff(Forward, mod.energy, BatchDuplicated(x, np.zeros((2, 4))),
                 BatchDuplicated(1.0, (1.0, 0.0, 0.0)), Const(4))
    with pytest.raises(enzyme.ActivityError, match="cannot be mixed"):
        autodiff(Forward, mod.energy, BatchDuplicated(x, np.zeros((2, 4))),
                 Duplicated(1.0, 1.0), Const(4))
    shared = np.zeros(6)
    with pytest.raises(enzyme.ShadowValueError, match="share memory"):
        autodiff(Reverse, mod.energy, BatchDuplicated(x, (shared[:4], shared[2:])), Const(1.0),
                 Const(4))
    with pytest.raises(enzyme.ShadowValueError, match="shape"):
        autodiff(Reverse, mod.energy, BatchDuplicated(x, np.zeros((2, 5))), Const(1.0), Const(4))
    with pytest.raises(enzyme.ActivityError, match="between 1 and"):
        BatchDuplicated(x, ())
    # a floating scalar wrt is taken (energy is linear in s); an int is not
    assert enzyme.hessian(mod.energy, wrt=1)(x, 1.0, 4) == 0.0
    with pytest.raises(enzyme.ActivityError, match="floating arrays and scalars"):
        enzyme.hessian(mod.energy, wrt=2)(x, 1.0, 4)
    with pytest.raises(enzyme.ActivityError, match="non-const floating array"):
        enzyme.jacobian(mod.nlmap, wrt=0, out=0)(x, 4, np.zeros(2), 2)


def test_jacobian_of_an_in_place_kernel_is_taken_at_one_point(cc):
    """A kernel that updates its output in place reads it too: the Jacobian
    helper calls the kernel once per chunk and must start every chunk from
    the same point (random program 40: chunk=1 in reverse mode gave a
    Jacobian of the successive states). The array ends as one call leaves it."""
    mod = cc("""
    #include <math.h>
    void sweep(const double *x, double *y, int n) {
        for (int j = n - 2; j >= 0; j--) y[j] = 0.6 * y[j] + 0.4 * tanh(y[j + 1] + x[j]);
    }""")
    x = np.linspace(-0.5, 0.7, 5)
    y0 = np.linspace(0.3, -0.2, 5)

    def f(v):
        y = y0.copy()
        mod.sweep(v, y, 5)
        return y

    h = 1e-6
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(5)]).T
    for mode in (enzyme.Forward, enzyme.Reverse):
        for chunk in (1, 2, 8):
            y = y0.copy()
            jac = enzyme.jacobian(mod.sweep, wrt=0, out=1, mode=mode, chunk=chunk)(x, y, 5)
            np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(y, f(x), rtol=1e-15)
