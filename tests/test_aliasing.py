"""No buffer a derivative writes (a non-const primal, a shadow, a batched
lane) may overlap another buffer of the call, on the Python path and on the
C fast path (issue item 5: only a primal against its own shadow was
checked, and aliasing across arguments silently gave garbage)."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import BatchDuplicated, Const, Duplicated, Forward, Reverse, ReverseSplit, autodiff

SOURCE = r"""
void scale(const double *x, double *y, double a, int n) { for (int i = 0; i < n; i++) y[i] = a * x[i] * x[i]; }
double dot(const double *a, const double *b, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s;
}
double norm2(const double *x, int n) { double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i]; return s; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


def _refused(call, *arrays):
    before = [a.copy() for a in arrays]
    with pytest.raises(enzyme.EnzymeError, match="share memory") as info:
        call()
    assert isinstance(info.value, ValueError)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)   # nothing native ran


def test_aliasing_across_arguments_is_refused(mod):
    x, y, dy = np.arange(1.0, 5.0), np.zeros(4), np.ones(4)
    # the shadow of x is y, the primal of another argument
    _refused(lambda: autodiff(Reverse, mod.scale, Duplicated(x, y), Duplicated(y, dy), Const(2.0), Const(4)),
             x, y, dy)
    # one array as two shadows
    d = np.zeros(4)
    _refused(lambda: autodiff(Reverse, mod.scale, Duplicated(x, d), Duplicated(y, d), Const(2.0), Const(4)),
             x, y, d)
    # an output overlapping an input (a view of the same memory)
    buf = np.arange(1.0, 9.0)
    _refused(lambda: autodiff(Reverse, mod.scale, Duplicated(buf[:4], np.zeros(4)),
                              Duplicated(buf[2:6], np.ones(4)), Const(2.0), Const(4)), buf)
    # forward: the tangent read for x is the tangent written for y
    t = np.ones(4)
    _refused(lambda: autodiff(Forward, mod.scale, Duplicated(x, t), Duplicated(y, t), Const(2.0), Const(4)),
             x, y, t)
    # batched lanes sharing memory (reverse accumulates into each)
    lanes = np.zeros((2, 4))
    _refused(lambda: autodiff(Reverse, mod.norm2, BatchDuplicated(x, [lanes[0], lanes[0]]), Const(4)),
             lanes)
    # split mode
    fwd, _ = enzyme.autodiff_thunk(ReverseSplit, mod.scale, Duplicated, Duplicated, Const, Const)
    _refused(lambda: fwd(x, d, y, d, 2.0, 4), x, y, d)


def test_fast_path_refuses_too(mod):
    """The C fast path must not run an aliased call: it hands it to the
    Python path (which raises), never calls the entry point."""
    df = enzyme.derivative(mod.scale, Reverse, Duplicated, Duplicated, Const, Const)
    fast = df._fast
    if fast is None:
        pytest.skip("the C fast path is not built or disabled (ENZYME_NO_FASTCALL)")
    x, y, d = np.arange(1.0, 5.0), np.zeros(4), np.zeros(4)
    assert fast(x, d, y, d, 2.0, 4, None) is NotImplemented
    assert fast(x, y, y, np.ones(4), 2.0, 4, None) is NotImplemented
    dx, dy = np.zeros(4), np.ones(4)
    assert fast(x, dx, y, dy, 2.0, 4, None) is not NotImplemented   # the plain case runs
    np.testing.assert_allclose(dx, 2 * 2.0 * x)


def test_read_only_buffers_may_share(mod):
    """Two inputs read through the same direction array, or the same
    array passed as two const inputs, are fine: nothing writes them."""
    a, b, v = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), np.array([0.5, -1.0, 2.0])
    t = autodiff(Forward, mod.dot, Duplicated(a, v), Duplicated(b, v), Const(3))
    assert t.tangent == pytest.approx(v @ b + a @ v, rel=1e-15)
    r = autodiff(Reverse, mod.dot, Const(a), Duplicated(b, np.zeros(3)), Const(3))
    assert r.derivs == (None, None, None)
    assert mod.dot(a, a, 3) == pytest.approx(a @ a)


def test_hvp_direction_must_not_alias_x(mod):
    x = np.array([1.0, 2.0, 3.0])
    with pytest.raises(enzyme.ShadowValueError, match="shares memory"):
        enzyme.hvp(mod.norm2)(x, 3, x)
    np.testing.assert_allclose(enzyme.hvp(mod.norm2)(x, 3, x.copy()), 2 * x)
