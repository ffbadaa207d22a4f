"""Arrays of other libraries passed zero-copy, the transforms as objects
(keywords, signature, repr, pickling), jacobian with scalar and several
wrt. Oracles: analytic derivatives and the same call on numpy arrays."""

from __future__ import annotations

import array
import inspect
import pickle

import cffi
import numpy as np
import pytest

import enzyme
from conftest import need
from enzyme import Const, Duplicated, Forward, Reverse, autodiff, grad, jacobian, jvp, vjp

SRC = """
double wsum(const double *x, const double *w, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += w[i] * x[i] * x[i]; return s; }
void square(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }
void affine(const double *x, double a, double b, double *y, int n) {
    for (int i = 0; i < n; i++) y[i] = a * x[i] * x[i] + b * a; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC)


def test_buffers_of_other_kinds_are_shared_without_a_copy(mod):
    x = np.array([1.0, 2.0, 3.0])
    w = np.array([0.5, 1.0, 2.0])
    expected = float(np.sum(w * x * x))
    ffi = cffi.FFI()
    assert mod.wsum(memoryview(x), array.array("d", w), 3) == expected
    assert mod.wsum(ffi.new("double[]", list(x)), w, 3) == expected
    # an output written through a memoryview and a cffi array lands in them
    y = np.zeros(3)
    mod.square(x, memoryview(y), 3)
    assert y.tolist() == [1.0, 4.0, 9.0]
    out = ffi.new("double[]", 3)
    mod.square(x, out, 3)
    assert list(out) == [1.0, 4.0, 9.0]
    # a shadow given as a memoryview accumulates into the caller's array
    dx = np.zeros(3)
    autodiff(Reverse, mod.wsum, Duplicated(x, memoryview(dx)), Const(w), 3)
    np.testing.assert_array_equal(dx, 2 * w * x)


def test_buffers_that_do_not_fit_are_refused_with_the_reason(mod):
    x = np.arange(3.0)
    with pytest.raises(enzyme.ArgumentTypeError, match="dtype float64.*got uint8"):
        mod.square(x, bytearray(24), 3)
    with pytest.raises(enzyme.ArgumentValueError, match="read-only"):
        mod.square(x, memoryview(np.zeros(3)).toreadonly(), 3)
    with pytest.raises(enzyme.ArgumentTypeError, match="must be an array of dtype float64"):
        mod.square([0.0, 1.0, 2.0], np.zeros(3), 3)
    with pytest.raises(enzyme.ArgumentValueError, match="C-contiguous"):
        mod.square(memoryview(np.arange(6.0))[::2], np.zeros(3), 3)
    ffi = cffi.FFI()
    with pytest.raises(enzyme.ArgumentTypeError, match="not an array of numbers"):
        mod.square(ffi.new("double *"), np.zeros(3), 3)


def test_torch_tensors_are_shared_both_ways(mod):
    torch = need("torch")
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.float64)
    mod.square(x, y, 3)
    assert y.tolist() == [1.0, 4.0, 9.0]
    dx = torch.zeros(3, dtype=torch.float64)
    autodiff(Reverse, mod.wsum, Duplicated(x, dx), Const(torch.ones(3, dtype=torch.float64)), 3)
    assert dx.tolist() == [2.0, 4.0, 6.0]
    with pytest.raises(enzyme.ArgumentTypeError, match="detach"):
        mod.square(x, torch.zeros(3, dtype=torch.float64, requires_grad=True), 3)
    with pytest.raises(enzyme.ArgumentTypeError, match="float64.*got float32"):
        mod.square(x.float(), y, 3)


@pytest.mark.jax
def test_jax_arrays_are_read_only_inputs(mod):
    jax = need("jax")
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.array([1.0, 2.0, 3.0])
    y = np.zeros(3)
    mod.square(x, y, 3)
    assert y.tolist() == [1.0, 4.0, 9.0]
    np.testing.assert_array_equal(grad(mod.wsum)(x, np.ones(3), 3), [2.0, 4.0, 6.0])
    with pytest.raises(enzyme.ArgumentValueError, match="read-only"):
        mod.square(np.ones(3), jax.numpy.zeros(3), 3)


def test_transforms_take_names_and_show_the_c_parameters(mod):
    x, w = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    g = grad(mod.wsum)
    np.testing.assert_array_equal(g(n=2, w=w, x=x), 2 * w * x)
    np.testing.assert_array_equal(g(x, w=w, n=2), 2 * w * x)
    assert list(inspect.signature(g).parameters) == ["x", "w", "n"]
    assert repr(g) == "<enzyme.grad of double wsum(const double *x, const double *w, int n) argnums=0>"
    assert "gradient" in g.__doc__ and "wsum" in g.__doc__
    forward = jvp(mod.wsum, wrt="x")
    assert list(inspect.signature(forward).parameters) == ["x", "w", "n", "v"]
    value, tangent = forward(x=x, w=w, n=2, v=np.array([1.0, 0.0]))
    assert (value, tangent) == (3.0 + 16.0, 6.0)
    value, cotangent = vjp(mod.wsum, wrt="x")(x, w, 2, u=2.0)
    np.testing.assert_array_equal(cotangent, 4 * w * x)
    with pytest.raises(enzyme.ArgumentTypeError, match="no parameter named z"):
        g(x, w, z=2)
    with pytest.raises(enzyme.ArgumentTypeError, match="both by position and by name"):
        g(x, w, 2, x=x)
    with pytest.raises(enzyme.ActivityError, match="argnums"):
        grad(mod.wsum, argnums="x")


def test_transforms_pickle_and_give_the_same_numbers(mod):
    x, w = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])
    for fn, args in [(grad(mod.wsum, argnums=(0, 1)), (x, w, 3)),
                     (jacobian(mod.square, wrt=0, out=1), (x, np.zeros(3), 3)),
                     (enzyme.hessian(mod.wsum), (x, w, 3)),
                     (jvp(mod.square, wrt=0, out=1), (x, np.zeros(3), 3, np.ones(3)))]:
        again = pickle.loads(pickle.dumps(fn))
        assert repr(again) == repr(fn)
        first, second = fn(*args), again(*args)
        for a, b in zip(first if isinstance(first, tuple) else (first,),
                        second if isinstance(second, tuple) else (second,)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(enzyme.hessian(mod.wsum)(x, w, 3), np.diag(2 * w))


def test_jacobian_with_respect_to_a_scalar_and_several_parameters(mod):
    x, a, b = np.array([1.0, 2.0, 3.0]), 2.0, 0.5
    expected_x = np.diag(2 * a * x)
    expected_a = x * x + b
    expected_b = np.full(3, a)
    for mode in (None, Forward, Reverse):
        dx, da, db = jacobian(mod.affine, wrt=("x", "a", 2), out="y", mode=mode)(x, a, b, np.zeros(3), 3)
        np.testing.assert_allclose(dx, expected_x, rtol=1e-15)
        np.testing.assert_allclose(da, expected_a, rtol=1e-15)
        np.testing.assert_allclose(db, expected_b, rtol=1e-15)
        assert da.shape == (3,)
    single = jacobian(mod.affine, wrt="a", out="y")(x, a, b, np.zeros(3), 3)
    np.testing.assert_allclose(single, expected_a, rtol=1e-15)
    # without out=: the gradient, one per wrt
    gx, gw = jacobian(mod.wsum, wrt=("x", "w"))(x, np.ones(3), 3)
    np.testing.assert_array_equal(gx, 2 * x)
    np.testing.assert_array_equal(gw, x * x)
    with pytest.raises(enzyme.ActivityError, match="floating parameters"):
        jacobian(mod.affine, wrt="n", out="y")
    with pytest.raises(enzyme.ActivityError, match="empty"):
        jacobian(mod.affine, wrt=(), out="y")


def test_hessian_with_respect_to_a_scalar_and_several_parameters(cc):
    mod = cc("""
    double f(const double *x, double a, const double *w, int n) {
        double s = 0; for (int i = 0; i < n; i++) s += a * a * w[i] * x[i] * x[i] * x[(i + 1) % n];
        return s; }""")
    x, a, w = np.array([1.0, 2.0, 3.0]), 1.5, np.array([0.5, 1.0, 2.0])

    def analytic(x, a):
        n = len(x)
        hxx = np.zeros((n, n))
        for i in range(n):
            j = (i + 1) % n
            hxx[i, i] += 2 * a * a * w[i] * x[j]
            hxx[i, j] += 2 * a * a * w[i] * x[i]
            hxx[j, i] += 2 * a * a * w[i] * x[i]
        gx = np.array([2 * a * a * w[i] * x[i] * x[(i + 1) % n] + a * a * w[i - 1] * x[i - 1] ** 2
                       for i in range(n)])
        hxa = 2 * gx / a
        haa = 2 * float(np.sum(w * x * x * np.roll(x, -1)))
        return hxx, hxa, haa

    hxx, hxa, haa = analytic(x, a)
    (bxx, bxa), (bax, baa) = enzyme.hessian(mod.f, wrt=("x", "a"))(x, a, w, 3)
    np.testing.assert_allclose(bxx, hxx, rtol=1e-14)
    np.testing.assert_allclose(bxa, hxa, rtol=1e-14)
    np.testing.assert_allclose(bax, hxa, rtol=1e-14)
    assert baa == pytest.approx(haa, rel=1e-14) and isinstance(baa, float)
    assert enzyme.hessian(mod.f, wrt="a")(x, a, w, 3) == pytest.approx(haa, rel=1e-14)
    np.testing.assert_allclose(enzyme.hessian(mod.f, wrt=0)(x, a, w, 3), hxx, rtol=1e-14)
    with pytest.raises(enzyme.ActivityError, match="distinct"):
        enzyme.hessian(mod.f, wrt=("x", 0))
    with pytest.raises(enzyme.ActivityError, match="floating arrays and scalars"):
        enzyme.hessian(mod.f, wrt=("x", "n"))


def test_second_order_through_array_outputs_matches_differences_of_the_vjp(cc):
    from enzyme.transforms import SecondOrder

    mod = cc("void model(const double *x, double a, double *y, int n) {"
             " for (int i = 0; i < n; i++) y[i] = a * sin(x[i]) * x[(i + 1) % n]; }",
             flags=["-include", "math.h"])
    x, a = np.array([0.3, -1.2, 0.8]), 1.7
    u = np.array([1.0, -2.0, 0.5])
    v, va = np.array([0.5, 1.0, -1.0]), 0.3
    second = SecondOrder(mod.model, (0, 1), (2,))
    grads, products = second((x, a, np.zeros(3), 3), {2: u}, {0: v, 1: va})

    def vjp(x, a):
        g, _ = second((x, a, np.zeros(3), 3), {2: u}, {})
        return np.concatenate([g[0], [g[1]]])

    np.testing.assert_allclose(np.concatenate([grads[0], [grads[1]]]), vjp(x, a), rtol=1e-15)
    h = 1e-6
    central = (vjp(x + h * v, a + h * va) - vjp(x - h * v, a - h * va)) / (2 * h)
    np.testing.assert_allclose(np.concatenate([products[0], [products[1]]]), central, rtol=1e-7, atol=1e-9)
    # the first order part against the plain reverse derivative
    dx, y = np.zeros(3), np.zeros(3)
    result = autodiff(Reverse, mod.model, Duplicated(x, dx), enzyme.Active(a), Duplicated(y, u.copy()), 3)
    np.testing.assert_allclose(grads[0], dx, rtol=1e-15)
    assert grads[1] == pytest.approx(result.derivs[1], rel=1e-15)


def test_copy_true_converts_read_only_inputs_only(mod):
    grid = np.arange(12.0).reshape(3, 4)
    x, w = grid[:, 0], grid[:, 1]  # strided columns, as SciPy passes them
    with pytest.raises(enzyme.ArgumentValueError, match="copy=True"):
        mod.wsum(x, w, 3)
    assert mod.wsum(x, w, 3, copy=True) == float(np.sum(w * x * x))
    assert mod.wsum([1, 2, 3], np.ones(3, dtype=np.float32), n=3, copy=True) == 14.0
    np.testing.assert_array_equal(grad(mod.wsum)(x, w, 3, copy=True), 2 * w * x)
    assert np.shares_memory(grid, x)  # the caller's arrays are untouched views
    with pytest.raises(enzyme.ArgumentTypeError, match="got float32"):
        mod.square(x, np.zeros(3, dtype=np.float32), 3, copy=True)  # an output is never copied
    with pytest.raises(enzyme.ArgumentTypeError, match="True or False"):
        mod.wsum(x, w, 3, copy="yes")


def test_an_output_given_as_none_is_allocated_from_its_contract(cc):
    mod = cc("void sq(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }",
             sizes={"sq": {"y": "n"}})
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(jacobian(mod.sq, wrt=0, out=1)(x, None, 3), np.diag(2 * x))
    value, tangent = jvp(mod.sq, wrt=0, out="y")(x, None, 3, np.ones(3))
    np.testing.assert_array_equal(value, x * x)
    np.testing.assert_array_equal(tangent, 2 * x)
    _, cotangent = vjp(mod.sq, wrt=0, out="y")(x, None, 3, np.array([1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(cotangent, [2.0, 0.0, 12.0])
    plain = cc("void sq2(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i]; }")
    with pytest.raises(enzyme.ActivityError, match="size is not known"):
        jacobian(plain.sq2, wrt=0, out=1)(x, None, 3)


def test_second_order_in_a_module_of_its_own_refuses_mutable_globals(cc):
    mod = cc("double scale = 2.0;\n"
             "double f(const double *x, double a) { return scale * a * a * x[0] * x[1]; }",
             inactive_globals=["scale"])
    mod.globals["scale"][...] = 5.0  # a state the new module would not see
    with pytest.raises(enzyme.DifferentiationError, match="scale"):
        enzyme.hessian(mod.f, wrt=("x", "a"))(np.array([1.0, 2.0]), 3.0)
    # the single-array Hessian uses this module's globals
    np.testing.assert_allclose(enzyme.hessian(mod.f, wrt="x")(np.array([1.0, 2.0]), 3.0),
                               [[0.0, 45.0], [45.0, 0.0]], rtol=1e-15)


def test_a_direction_named_like_a_parameter_and_a_missing_direction(cc):
    mod = cc("double vf(const double *v, int n) { double s = 0; for (int i = 0; i < n; i++) s += v[i] * v[i] * v[i];"
             " return s; }")
    forward = jvp(mod.vf, wrt="v")
    assert list(inspect.signature(forward).parameters) == ["v", "n", "v_"]
    x = np.array([1.0, 2.0, 3.0])
    assert forward(v=x, n=3, v_=np.ones(3)) == (36.0, 42.0)
    np.testing.assert_array_equal(enzyme.hvp(mod.vf, wrt="v")(x, 3, np.arange(6.0)[::2], copy=True), 6 * x * [0, 2, 4])
    with pytest.raises(enzyme.ActivityError, match="is the direction missing"):
        forward(x, 3)


def test_split_passes_pickled_one_by_one_still_pair(cc):
    from enzyme import ReverseSplitWithPrimal, autodiff_thunk

    mod = cc("double wdot(const double *x, const double *w, int n) {"
             " double s = 0; for (int i = 0; i < n; i++) s += w[i] * x[i] * x[i]; return s; }")
    forward, reverse = autodiff_thunk(ReverseSplitWithPrimal, mod.wdot, Duplicated, Const, Const)
    forward2, reverse2 = pickle.loads(pickle.dumps(forward)), pickle.loads(pickle.dumps(reverse))
    dx = np.zeros(2)
    reverse2(forward2(np.array([1.0, 2.0]), dx, np.array([3.0, 0.5]), 2))
    np.testing.assert_array_equal(dx, [6.0, 2.0])
    _, other = autodiff_thunk(ReverseSplitWithPrimal, mod.wdot, Const, Duplicated, Const)
    with pytest.raises(enzyme.ActivityError, match="needs the Tape"):
        other(forward2(np.array([1.0, 2.0]), np.zeros(2), np.ones(2), 2))


def test_forward_over_forward_matches_differences_of_the_jvp(cc):
    from enzyme.transforms import ForwardSecondOrder

    mod = cc("void model(const double *x, double a, double *y, int n) {"
             " for (int i = 0; i < n; i++) y[i] = a * sin(x[i]) * x[(i + 1) % n]; }",
             flags=["-include", "math.h"])
    x, a = np.array([0.3, -1.2, 0.8]), 1.7
    t, ta = np.array([1.0, 0.5, -1.0]), 0.2
    w, wa = np.array([0.3, -0.4, 2.0]), -0.5
    found = ForwardSecondOrder(mod.model, (0, 1), (2,))((x, a, np.zeros(3), 3), {0: t, 1: ta}, {0: w, 1: wa})

    def tangent(x, a):
        y, dy = np.zeros(3), np.zeros(3)
        autodiff(Forward, mod.model, Duplicated(x, t.copy()), Duplicated(a, ta), Duplicated(y, dy), 3)
        return dy

    h = 1e-6
    np.testing.assert_allclose(found[2], (tangent(x + h * w, a + h * wa) - tangent(x - h * w, a - h * wa)) / (2 * h),
                               rtol=1e-7, atol=1e-9)
