"""enzyme.vmap: a kernel or its gradient over a batch in one native loop.
Every batched result is compared with the same calls made one by one (the
checked path) and with analytic gradients; the loop must see each element's
own rows, scalars and outputs, on one thread or several."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme

SRC = r"""
#include <math.h>
double rosen(const double *x, int n) {
    double s = 0;
    for (int i = 0; i + 1 < n; i++) {
        double a = 1 - x[i], b = x[i + 1] - x[i] * x[i]; s += a * a + 100 * b * b; }
    return s; }
double scaled(const double *x, double a, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += a * sin(x[i]); return s; }
void square(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }
float cubef(const float *x, int n) { float s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i] * x[i]; return s; }
double scratchy(const double *x, double *work, int n) {
    double s = 0; for (int i = 0; i < n; i++) { work[i] = x[i] * x[i]; s += work[i] * x[i]; } return s; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"square": {"y": "n"}})


def rosen_grad(x):
    g = np.zeros_like(x)
    g[:-1] += -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_gradients_of_a_batch_match_one_by_one(mod, workers):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.5, 1.5, size=(1001, 10))
    G = enzyme.vmap(enzyme.grad(mod.rosen), in_axes=(0, None), workers=workers)(X, 10)
    assert G.shape == X.shape
    np.testing.assert_allclose(G, np.array([rosen_grad(x) for x in X]), rtol=1e-12, atol=1e-12)
    values = enzyme.vmap(mod.rosen, in_axes=(0, None), workers=workers)(X, 10)
    np.testing.assert_array_equal(values, [mod.rosen(x, 10) for x in X])
    v, G2 = enzyme.vmap(enzyme.value_and_grad(mod.rosen), in_axes=(0, None), workers=workers)(X, 10)
    np.testing.assert_array_equal(v, values)
    np.testing.assert_array_equal(G2, G)


def test_batched_scalars_several_argnums_outputs_and_float32(mod):
    rng = np.random.default_rng(1)
    X, a = rng.normal(size=(50, 4)), rng.uniform(0.5, 2.0, size=50)
    gx, ga = enzyme.vmap(enzyme.grad(mod.scaled, argnums=(0, 1)), in_axes=(0, 0, None))(X, a, 4)
    np.testing.assert_allclose(gx, a[:, None] * np.cos(X), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ga, np.sin(X).sum(axis=1), rtol=1e-13, atol=1e-15)
    shared = enzyme.vmap(enzyme.grad(mod.scaled, argnums=1), in_axes=(0, None, None))(X, 1.5, 4)
    np.testing.assert_allclose(shared, np.sin(X).sum(axis=1), rtol=1e-13, atol=1e-15)
    Y = np.zeros_like(X)
    assert enzyme.vmap(mod.square, in_axes=(0, 0, None))(X, Y, 4) is None
    np.testing.assert_array_equal(Y, X * X)  # each element wrote its own row
    X32 = X.astype(np.float32)
    out = enzyme.vmap(mod.cubef, in_axes=(0, None))(X32, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (X32.astype(np.float64) ** 3).sum(axis=1), rtol=1e-5)
    g32 = enzyme.vmap(enzyme.grad(mod.cubef), in_axes=(0, None))(X32, 4)
    np.testing.assert_allclose(g32, 3 * X32.astype(np.float64) ** 2, rtol=1e-5)


def test_scratch_arrays_get_a_zero_shadow_per_element(mod):
    """grad gives a written, non-differentiated array a zero shadow (a
    derivative flows through it); batched, every element needs its own."""
    rng = np.random.default_rng(2)
    X, W = rng.normal(size=(20, 5)), np.zeros((20, 5))
    G = enzyme.vmap(enzyme.grad(mod.scratchy), in_axes=(0, 0, None))(X, W, 5)
    np.testing.assert_allclose(G, 3 * X ** 2, rtol=1e-14)
    # shared scratch: the Python loop of checked calls, same numbers
    G2 = enzyme.vmap(enzyme.grad(mod.scratchy), in_axes=(0, None, None))(X, np.zeros(5), 5)
    np.testing.assert_allclose(G2, G, rtol=1e-15)


def test_what_vmap_refuses(mod):
    X = np.ones((3, 4))
    with pytest.raises(enzyme.OptionError, match="size or flag shared"):
        enzyme.vmap(mod.rosen, in_axes=(0, 0))
    with pytest.raises(enzyme.OptionError, match="batches no argument"):
        enzyme.vmap(mod.rosen, in_axes=(None, None))
    with pytest.raises(enzyme.OptionError, match="only 0"):
        enzyme.vmap(mod.rosen, in_axes=(1, None))
    with pytest.raises(enzyme.ArgumentValueError, match="C-contiguous"):
        enzyme.vmap(mod.rosen, in_axes=(0, None))(np.ones((4, 3)).T, 4)
    with pytest.raises(enzyme.ArgumentValueError, match="batch size"):
        enzyme.vmap(mod.scaled, in_axes=(0, 0, None))(X, np.ones(2), 4)
    with pytest.raises(enzyme.LengthError):  # the first element's checks: y has 3, n says 4
        enzyme.vmap(mod.square, in_axes=(0, 0, None))(X, np.zeros((3, 3)), 4)
    with pytest.raises(enzyme.OptionTypeError, match="workers"):
        enzyme.vmap(mod.rosen, in_axes=(0, None), workers=0)
    W = np.ones((3, 5))
    with pytest.raises(enzyme.ArgumentValueError, match="share memory"):  # (Enzyme assumes no aliasing)
        enzyme.vmap(enzyme.grad(mod.scratchy), in_axes=(0, 0, None))(W, W, 5)
    Y = X + 1.0  # a primal call may work in place, as in C
    enzyme.vmap(mod.square, in_axes=(0, 0, None))(Y, Y, 4)
    np.testing.assert_array_equal(Y, 4.0)
