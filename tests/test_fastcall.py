"""The C fast path (native/fastcall.c) agrees with the Python reference path,
and hands everything unusual to it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, ReverseWithPrimal, call
from enzyme.codegen import generate_derivative

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SOURCE = """
double wdot(const double *x, const double *y, int n, double a) {
    double s = 0.0; for (int i = 0; i < n; i++) s += a * x[i] * y[i] * y[i]; return s;
}
float fscale(float *x, float a, short n) {
    float s = 0; for (short i = 0; i < n; i++) { x[i] *= a; s += x[i]; } return s;
}
"""


@pytest.fixture(scope="module")
def mod(cc, fast_path):
    return cc(SOURCE)


def _reference(df):
    """The same compiled derivative without the fast path."""
    slow = call.DerivativeFunction(df.spec, generate_derivative(df.spec), df._library.key[0])
    slow._fast = None
    return slow


def test_fast_path_is_taken_and_agrees(mod):
    rng = np.random.default_rng(0)
    for mode in (Reverse, ReverseWithPrimal):
        df = enzyme.derivative(mod.wdot, mode, Duplicated, Duplicated, Const, Active)
        assert df._fast is not None
        slow = _reference(df)
        x, y = rng.normal(size=5), rng.normal(size=5)
        fast_dx, fast_dy, slow_dx, slow_dy = (np.zeros(5) for _ in range(4))
        a = df(x, fast_dx, y, fast_dy, 5, 1.5, seed=2.0)
        b = slow(x, slow_dx, y, slow_dy, 5, 1.5, seed=2.0)
        assert a == b
        np.testing.assert_array_equal(fast_dx, slow_dx)
        np.testing.assert_array_equal(fast_dy, slow_dy)
    df = enzyme.derivative(mod.fscale, Forward, Duplicated, Duplicated, Const)
    assert df._fast is not None
    x = np.arange(1.0, 4.0, dtype=np.float32)
    t = df(x.copy(), np.ones(3, np.float32), 2.0, 0.5, 3)
    assert t == _reference(df)(x.copy(), np.ones(3, np.float32), 2.0, 0.5, 3)


@pytest.mark.parametrize("bad", ["short", "float32", "strided", "readonly", "alias", "big_endian",
                                 "list", "bool", "overflow", "numpy_scalar", "seed_str"])
def test_unusual_arguments_get_the_reference_behaviour(mod, bad):
    df = enzyme.derivative(mod.wdot, Reverse, Duplicated, Duplicated, Const, Active)
    slow = _reference(df)

    def args():
        x, y = np.ones(4), np.arange(4.0)
        dx, dy = np.zeros(4), np.zeros(4)
        values = [x, dx, y, dy, 4, 1.5]
        kw = {}
        if bad == "short":
            values[1] = np.zeros(3)
        elif bad == "float32":
            values[0] = x.astype(np.float32)
        elif bad == "strided":
            values[3] = np.zeros(8)[::2]
        elif bad == "readonly":
            values[1].flags.writeable = False
        elif bad == "alias":
            values[1] = x
        elif bad == "big_endian":
            values[2] = y.astype(">f8")
        elif bad == "list":
            values[2] = [0.0, 1.0, 2.0, 3.0]
        elif bad == "bool":
            values[4] = True
        elif bad == "overflow":
            values[4] = 2 ** 40
        elif bad == "numpy_scalar":
            values[5] = np.float64(1.5)
        elif bad == "seed_str":
            kw["seed"] = "2"
        return values, kw

    outcomes = []
    for fn in (df, slow):
        values, kw = args()
        try:
            outcomes.append(("ok", fn(*values, **kw), [v.copy() for v in values
                                                       if isinstance(v, np.ndarray)]))
        except enzyme.EnzymeError as exc:
            outcomes.append((type(exc), str(exc)))
    if outcomes[0][0] == "ok":
        assert outcomes[1][0] == "ok" and outcomes[0][1] == outcomes[1][1]
        for a, b in zip(outcomes[0][2], outcomes[1][2]):
            np.testing.assert_array_equal(a, b)
    else:
        assert outcomes[0] == outcomes[1]
