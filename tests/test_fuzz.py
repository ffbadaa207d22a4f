"""Hypothesis throws random argument kinds, dtypes, shapes, strides, byte
orders, read-only arrays, aliasing views, NaN/inf, huge and negative sizes,
wrong activities and wrong counts at primal and derivative calls.

Property: every call either returns the right numbers or raises an
``EnzymeError`` subclass; the interpreter never crashes, and no array the
user passed is modified when a call fails."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import enzyme
from enzyme import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    autodiff,
)

EXAMPLES = int(os.environ.get("ENZYME_FUZZ_EXAMPLES", "250"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

SOURCE = r"""
#include <enzyme/enzyme.h>
double dot(const double *ENZYME_LEN(n) x, const double *ENZYME_LEN(n) y, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}
void scale(double *ENZYME_LEN(n) x, double a, int n) { for (int i = 0; i < n; i++) x[i] *= a; }
float fsum(const float *ENZYME_LEN(n) x, float s, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += s * x[i];
    return acc;
}
double poly(double x, double y) { return x * x * y + 3.0 * y; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


def arrays() -> st.SearchStrategy:
    dtypes = st.sampled_from(["<f8", ">f8", "<f4", "<i4", "<i8", "<c16", "|b1", "<f2"])

    def build(dtype, n, layout, fill, writeable):
        with np.errstate(invalid="ignore"):
            base = np.full(n * 2 + 1, fill).astype(dtype)
        if layout == "strided":
            array = base[::2]
        elif layout == "2d":
            array = base[: (n // 2) * 2].reshape(-1, 2) if n >= 2 else base[:n]
        elif layout == "fortran":
            array = np.asfortranarray(base[: (n // 2) * 2].reshape(-1, 2).T) if n >= 2 else base[:n]
        else:
            array = base[:n].copy()
        array.flags.writeable = writeable
        return array

    return st.builds(build, dtypes, st.integers(0, 6),
                     st.sampled_from(["plain", "plain", "strided", "2d", "fortran"]),
                     st.sampled_from([1.0, -2.5, np.nan, np.inf, 0.0]), st.booleans())


def scalars() -> st.SearchStrategy:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
        st.integers(-3, 8), st.booleans(), st.none(), st.text(max_size=3),
        st.sampled_from([np.float32(1.5), np.int64(3), np.float64("nan"), [1.0, 2.0], (1.0,),
                         np.array(2.0), np.array([1.0])]))


def values() -> st.SearchStrategy:
    return st.one_of(arrays(), scalars())


def annotated(value_strategy: st.SearchStrategy) -> st.SearchStrategy:
    def wrap(kind, value, shadow, width):
        if kind == "raw":
            return value
        if kind == "const":
            return Const(value)
        if kind == "active":
            return Active(value)
        if kind == "dup":
            return Duplicated(value, shadow)
        if kind == "noneed":
            return DuplicatedNoNeed(value, shadow)
        return BatchDuplicated(value, [shadow] * width)
    return st.builds(wrap, st.sampled_from(["raw", "const", "const", "active", "dup", "dup",
                                             "noneed", "batch"]),
                     value_strategy, value_strategy, st.integers(1, 3))


def _arrays_in(objs) -> list[np.ndarray]:
    found = []
    for obj in objs:
        for part in (obj, getattr(obj, "val", None), getattr(obj, "dval", None)):
            if isinstance(part, np.ndarray):
                found.append(part)
            elif isinstance(part, (tuple, list)):
                found += [p for p in part if isinstance(p, np.ndarray)]
    return found


def _snapshot(arrays_):
    return [(a, a.copy()) for a in arrays_]


def _unchanged(snapshot) -> bool:
    return all(np.array_equal(a, before, equal_nan=True) for a, before in snapshot)


MODES = st.sampled_from([Reverse, ReverseWithPrimal, Forward, ForwardWithPrimal])


@SETTINGS
@given(args=st.lists(values(), min_size=0, max_size=4), kernel=st.sampled_from(
    ["dot", "scale", "fsum", "poly"]))
def test_primal_calls(mod, args, kernel):
    snapshot = _snapshot(_arrays_in(args))
    try:
        result = mod[kernel](*args)
    except enzyme.EnzymeError:
        assert _unchanged(snapshot)
        return
    if kernel == "dot":
        x, y, n = args
        expected = float(np.dot(x[:n].astype(float), y[:n].astype(float)))
        assert result == pytest.approx(expected, nan_ok=True)
    elif kernel == "poly":
        x, y = (float(v) for v in args)
        if math.isfinite(x) and math.isfinite(y) and abs(x) < 1e100 and abs(y) < 1e100:
            assert result == pytest.approx(x * x * y + 3.0 * y)


@SETTINGS
@given(mode=MODES, args=st.lists(annotated(values()), min_size=0, max_size=4),
       kernel=st.sampled_from(["dot", "scale", "fsum", "poly"]),
       seed=st.one_of(st.none(), st.floats(-2, 2), st.text(max_size=2)))
def test_derivative_calls(mod, mode, args, kernel, seed):
    snapshot = _snapshot(_arrays_in(args))
    try:
        autodiff(mode, mod[kernel], *args, seed=seed)
    except enzyme.EnzymeError:
        assert _unchanged(snapshot)


@SETTINGS
@given(n=st.integers(-5, 12), size=st.integers(0, 8), shadow_size=st.integers(0, 8),
       alias=st.booleans(), mode=st.sampled_from([Reverse, ReverseWithPrimal]))
def test_dot_gradient_is_right_or_refused(mod, n, size, shadow_size, alias, mode):
    rng = np.random.default_rng(abs(n) * 100 + size)
    x, y = rng.normal(size=size), rng.normal(size=size)
    dx = x[::-1] if alias else np.zeros(shadow_size)
    before = (x.copy(), y.copy(), dx.copy())
    try:
        r = autodiff(mode, mod.dot, Duplicated(x, dx), Const(y), Const(n))
    except enzyme.EnzymeError:
        assert all(np.array_equal(a, b) for a, b in zip((x, y, dx), before))
        return
    assert (not alias or size == 0) and (alias or shadow_size == size) and 0 <= n <= size
    np.testing.assert_allclose(dx[:n], y[:n], rtol=1e-14)
    np.testing.assert_array_equal(dx[n:], 0.0)
    if mode is ReverseWithPrimal:
        assert r.primal == pytest.approx(float(np.dot(x[:n], y[:n])))


@SETTINGS
@given(activities=st.lists(st.sampled_from([Const, Active, Duplicated, DuplicatedNoNeed,
                                            BatchDuplicated, int, "x", None]),
                           min_size=0, max_size=4),
       mode=MODES, kernel=st.sampled_from(["dot", "scale", "fsum", "poly"]))
def test_declared_derivatives(mod, activities, mode, kernel):
    try:
        df = enzyme.derivative(mod[kernel], mode, *activities)
    except enzyme.EnzymeError:
        return
    try:
        df(*([1.0] * 7))
    except enzyme.EnzymeError:
        pass
