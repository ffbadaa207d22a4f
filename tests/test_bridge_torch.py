"""enzyme.torch: kernels as autograd functions of tensors. Oracles:
torch.autograd.gradcheck/gradgradcheck (central differences of the
function itself), and the same function written with torch operators."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import enzyme
from conftest import need

torch = need("torch")
import enzyme.torch as et  # noqa: E402  (after torch is known to be there)

SRC = """
#include <math.h>
double energy(const double *x, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += sin(x[i]) * x[(i + 1) % n]; return s; }
void model(const double *x, double a, double *y, int n) {
    for (int i = 0; i < n; i++) y[i] = a * exp(x[i]) * x[(i + 1) % n]; }
double both(const double *x, double *y, int n) {
    double s = 0; for (int i = 0; i < n; i++) { y[i] = x[i] * x[i]; s += x[i]; } return s; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"model": {"y": "n"}, "both": {"y": "n"}})


def x4(requires_grad=True):
    return torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=torch.float64, requires_grad=requires_grad)


def test_gradcheck_and_gradgradcheck_of_a_scalar_kernel(mod):
    f = et.function(mod.energy)
    x = x4()
    assert torch.autograd.gradcheck(lambda x: f(x, 4), (x,))
    assert torch.autograd.gradgradcheck(lambda x: f(x, 4), (x,))
    # against the same function in torch
    value = f(x, 4)
    value.backward()
    same = x4()
    reference = (torch.sin(same) * torch.roll(same, -1)).sum()
    reference.backward()
    torch.testing.assert_close(value, reference.detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(x.grad, same.grad, rtol=1e-14, atol=0)
    # second order against torch's own Hessian
    hessian = torch.autograd.functional.hessian(lambda x: f(x, 4), x4(False))
    expected = torch.autograd.functional.hessian(lambda x: (torch.sin(x) * torch.roll(x, -1)).sum(), x4(False))
    torch.testing.assert_close(hessian, expected, rtol=1e-13, atol=1e-14)


def test_array_outputs_and_scalar_inputs(mod):
    g = et.function(mod.model, out="y")
    x, a = x4(), torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: g(x, a, 4), (x, a))
    y = g(x=x, a=a, n=4)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (y * weights).sum().backward()
    x2, a2 = x4(), torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    ((a2 * torch.exp(x2) * torch.roll(x2, -1)) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-14, atol=0)
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-14, atol=0)
    assert torch.autograd.gradgradcheck(lambda x, a: g(x, a, 4), (x, a))
    # the Hessian of a weighted sum of the outputs against torch's own
    def weighted(fn):
        return lambda x, a: (fn(x, a) * weights).sum()
    point = (x4(False), torch.tensor(1.5, dtype=torch.float64))
    ours = torch.autograd.functional.hessian(weighted(lambda x, a: g(x, a, 4)), point)
    theirs = torch.autograd.functional.hessian(weighted(lambda x, a: a * torch.exp(x) * torch.roll(x, -1)), point)
    for row_ours, row_theirs in zip(ours, theirs):
        for block_ours, block_theirs in zip(row_ours, row_theirs):
            torch.testing.assert_close(block_ours, block_theirs, rtol=1e-13, atol=1e-13)


def test_several_outputs_and_the_return_value(mod):
    h = et.function(mod.both, out=["return", "y"])
    x = x4()
    assert torch.autograd.gradcheck(lambda x: h(x, 4), (x,))
    assert torch.autograd.gradgradcheck(lambda x: h(x, 4), (x,))
    s, y = h(x, 4)
    torch.testing.assert_close(y, x.detach() ** 2)
    assert s.item() == pytest.approx(float(x.detach().sum()))


def test_tensors_pass_without_a_copy_and_bad_ones_are_refused(mod):
    x = torch.arange(4.0, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)
    mod.model(x, 2.0, y, 4)  # the kernel itself writes into the tensor's memory
    torch.testing.assert_close(y, 2.0 * torch.exp(x) * torch.roll(x, -1))
    g = et.function(mod.model, out="y")
    with pytest.raises(enzyme.ArgumentTypeError, match="float64"):
        g(x.float(), 2.0, 4)
    with pytest.raises(enzyme.ActivityError, match="output"):
        et.function(mod.model, out="x")
    with pytest.raises(enzyme.ActivityError, match="shape of output 'y' must be a tuple"):
        et.function(mod.both, out="y", shapes={"y": "bad"})(x, 4)


def test_a_torch_function_pickles(mod):
    g = et.function(mod.model, out="y")
    again = pickle.loads(pickle.dumps(g))
    x = x4(False)
    np.testing.assert_array_equal(again(x, 1.5, 4).numpy(), g(x, 1.5, 4).numpy())
    assert repr(again) == repr(g)


def test_second_derivatives_with_numbers_float32_and_read_back_outputs(cc):
    mod = cc("""double sc(double a, double b) { return a * a * b * b; }
        float ff(const float *x, float a, int n) { float s = 0; for (int i = 0; i < n; i++) s += a * a * x[i] * x[i];
            return s; }
        void g(const double *x, double *y, double *w, int n) {
            for (int i = 0; i < n; i++) y[i] = x[i] * x[i];
            w[0] = 0; for (int i = 0; i < n; i++) w[0] += y[i] * y[i]; }""", sizes={"g": {"y": "n"}})
    s = et.function(mod.sc)
    a = torch.tensor(1.0, dtype=torch.float64)
    # b given as a Python number: no gradient for it, and no error
    assert torch.autograd.functional.hessian(lambda a: s(a, 2.0), a).item() == 8.0
    g = et.function(mod.g, out=("y", "w"), shapes={"w": (1,)})
    x = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.functional.hessian(lambda x: g(x, 3)[1][0], x),
                               torch.diag(12 * x ** 2), rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradgradcheck(lambda x: g(x, 3)[1], (x.clone().requires_grad_(),))
    blocks = enzyme.hessian(mod.ff, wrt=("x", "a"))(np.array([1.0, 2.0], dtype=np.float32), np.float32(1.5), 2)
    np.testing.assert_allclose(blocks[0][0], 2 * 1.5 ** 2 * np.eye(2), rtol=1e-6)
    np.testing.assert_allclose(blocks[0][1], [6.0, 12.0], rtol=1e-6)
    assert blocks[1][1] == pytest.approx(10.0, rel=1e-6)


def test_lazy_torch_views_are_refused_not_misread(mod):
    x = torch.tensor([1 + 1j, 1 + 2j, 1 + 3j], dtype=torch.complex128).conj().imag  # -1, -2, -3
    with pytest.raises(enzyme.ArgumentTypeError, match="resolve_neg"):
        mod.energy(x, 3)
    assert mod.energy(x.resolve_neg(), 3) == pytest.approx(
        float((torch.sin(x.resolve_neg()) * torch.roll(x.resolve_neg(), -1)).sum()), rel=1e-15)


def test_a_third_derivative_is_an_error_not_a_silent_zero(mod):
    f = et.function(mod.energy)
    x = x4()
    y = f(x, 4) + (x ** 4).sum()  # torch's own part would still give a number
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    same = x4()
    (g2,) = torch.autograd.grad((torch.sin(same) * torch.roll(same, -1)).sum() + (same ** 4).sum(), same,
                                create_graph=True)
    (h2,) = torch.autograd.grad(g2.sum(), same)
    torch.testing.assert_close(h.detach(), h2, rtol=1e-13, atol=1e-13)
    with pytest.raises(enzyme.ActivityError, match="third derivatives"):
        torch.autograd.grad(h.sum(), x)
