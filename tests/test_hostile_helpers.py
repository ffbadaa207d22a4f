"""The helpers (grad, jacobian, hessian, hvp) on kernels that write their
arguments or return structs: the same checks as autodiff, and never a
silent zero (issue 17)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

import enzyme
from enzyme import Forward, Reverse

WRITERS = """
/* sum of cubes, then doubles x: the Hessian is diag(6 x) at the x given */
double cubes_then_double(double *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) { s += x[i] * x[i] * x[i]; x[i] = 2.0 * x[i]; }
  return s;
}
void square_in_place(double *x, int n) { for (int i = 0; i < n; i++) x[i] = x[i] * x[i]; }
struct pair { double a, b; };
struct pair moments(const double *x, int n) {
  struct pair r = {0, 0};
  for (int i = 0; i < n; i++) { r.a += x[i] * x[i]; r.b += 3 * x[i]; }
  return r;
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(WRITERS)


def test_hvp_of_a_kernel_writing_x_leaves_a_read_only_direction_alone(mod):
    x, v = np.array([1.0, 2.0]), np.array([1.0, -1.0])
    v.flags.writeable = False
    hv = enzyme.hvp(mod.cubes_then_double)(x, 2, v)
    np.testing.assert_allclose(hv, [6.0, -12.0], rtol=1e-12)
    np.testing.assert_array_equal(v, [1.0, -1.0])  # was overwritten with x's tangent
    np.testing.assert_array_equal(x, [2.0, 4.0])  # as one call of the kernel leaves it


def test_hvp_direction_in_read_only_memory(mod):
    """A direction in a PROT_READ mapping crashed the interpreter."""
    page = mmap.mmap(-1, mmap.PAGESIZE)
    np.frombuffer(page, dtype=np.float64, count=2)[:] = [0.5, 2.0]
    readonly = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ)
    v = np.frombuffer(readonly, dtype=np.float64, count=2)  # zeros, read-only
    x = np.array([1.0, 2.0])
    np.testing.assert_array_equal(enzyme.hvp(mod.cubes_then_double)(x, 2, v), [0.0, 0.0])
    x = np.array([1.0, 2.0])
    w = np.frombuffer(page, dtype=np.float64, count=2)
    np.testing.assert_allclose(enzyme.hvp(mod.cubes_then_double)(x, 2, w), [3.0, 24.0], rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 8])
@pytest.mark.parametrize("mode", [None, Forward, Reverse])
def test_jacobian_of_an_array_updated_in_place(mod, mode, chunk):
    """wrt and out naming the same array gave an all-zero Jacobian."""
    x = np.array([1.0, 2.0, 3.0])
    jac = enzyme.jacobian(mod.square_in_place, wrt=0, out=0, mode=mode, chunk=chunk)(x, 3)
    np.testing.assert_allclose(jac, np.diag([2.0, 4.0, 6.0]), rtol=1e-12)
    np.testing.assert_array_equal(x, [1.0, 4.0, 9.0])  # one call's effect, not one per chunk


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_hessian_chunks_all_start_from_the_callers_point(mod, chunk):
    x = np.array([1.0, 2.0, 3.0, 4.0])
    hess = enzyme.hessian(mod.cubes_then_double, chunk=chunk)(x, 4)
    np.testing.assert_allclose(hess, np.diag([6.0, 12.0, 18.0, 24.0]), rtol=1e-12)
    np.testing.assert_array_equal(x, [2.0, 4.0, 6.0, 8.0])


@pytest.mark.parametrize("helper", [
    lambda k: enzyme.grad(k)(np.ones(2), 2),
    lambda k: enzyme.value_and_grad(k)(np.ones(2), 2),
    lambda k: enzyme.jacobian(k, wrt=0)(np.ones(2), 2),
    lambda k: enzyme.hessian(k)(np.ones(2), 2),
    lambda k: enzyme.hvp(k)(np.ones(2), 2, np.ones(2)),
], ids=["grad", "value_and_grad", "jacobian", "hessian", "hvp"])
def test_a_struct_return_has_no_gradient(mod, helper):
    """grad of a struct-returning kernel returned zeros."""
    with pytest.raises(enzyme.ActivityError, match="floating scalar"):
        helper(mod.moments)


def test_a_struct_return_tangent_in_forward_mode(mod):
    x = np.array([1.0, 2.0])
    result = enzyme.autodiff(Forward, mod.moments, enzyme.Duplicated(x, np.array([1.0, 0.0])),
                             enzyme.Const(2))
    assert (result.tangent["a"], result.tangent["b"]) == (2.0, 3.0)
