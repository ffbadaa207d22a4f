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


def _parts(annotation):
    """(kind, value, shadow) of an argument as autodiff read it."""
    if isinstance(annotation, BatchDuplicated):
        return "batch", annotation.val, annotation.dval
    for kind, cls in (("const", Const), ("active", Active), ("noneed", DuplicatedNoNeed),
                      ("dup", Duplicated)):
        if isinstance(annotation, cls):
            return kind, annotation.val, getattr(annotation, "dval", None)
    return "const", annotation, None


def _finite(*values) -> bool:
    """Only finite, moderate numbers have one right answer to compare with
    (with inf or nan the order of C's operations decides which nan or inf)."""
    return all(np.all(np.isfinite(np.asarray(v, dtype=float)))
               and np.all(np.abs(np.asarray(v, dtype=float)) < 1e30) for v in values)


def _lanes(kind, shadow):
    return list(shadow) if kind == "batch" else [shadow]


def _check_against_oracle(kernel, mode, before, after, result, seed):
    """Compare a successful autodiff call with the kernel's derivative
    computed here by hand. ``before``/``after``: (kind, value, shadow) per
    argument, copied before the call and read after it. Returns False when
    the inputs are not finite (nothing to compare)."""
    reverse = mode in (Reverse, ReverseWithPrimal)
    kinds = [k for k, _, _ in before]
    vals = [np.array(v, dtype=float) if isinstance(v, np.ndarray) else v for _, v, _ in before]
    sigma = 1.0 if seed is None else float(seed)
    rtol = 1e-4 if kernel == "fsum" else 1e-12
    if kernel in ("dot", "fsum"):
        x, n = vals[0], int(vals[2])
        other = vals[1]
        if not _finite(x[:n], other[:n] if kernel == "dot" else other):
            return False
        if kernel == "dot":
            y = other
            primal = float(np.dot(x[:n], y[:n]))
            grads = [np.concatenate([y[:n], np.zeros(x.size - n)]),
                     np.concatenate([x[:n], np.zeros(y.size - n)])]
        else:
            s_ = float(other)
            primal = s_ * float(x[:n].sum())
            grads = [np.concatenate([np.full(n, s_), np.zeros(x.size - n)]), float(x[:n].sum())]
        if reverse:
            for i in (0, 1):
                if kinds[i] in ("dup", "noneed", "batch") and isinstance(vals[i], np.ndarray):
                    for lane_before, lane_after in zip(_lanes(kinds[i], before[i][2]),
                                                       _lanes(kinds[i], after[i][2])):
                        np.testing.assert_allclose(lane_after, np.asarray(lane_before, dtype=float)
                                                   + sigma * grads[i], rtol=rtol, atol=1e-12)
                if kinds[i] == "active":
                    assert result.derivs[i] == pytest.approx(sigma * grads[i], rel=rtol, abs=1e-12)
                elif kinds[i] != "batch":
                    assert result.derivs[i] is None
        else:
            width = max((len(_lanes(k, sh)) for k, _, sh in before if k == "batch"), default=0)
            tangents = []
            for lane in range(max(width, 1)):
                t = 0.0
                for i in (0, 1):
                    if kinds[i] in ("dup", "noneed", "batch"):
                        d = np.asarray(_lanes(kinds[i], before[i][2])[lane], dtype=float)
                        t += float(np.sum(d * grads[i])) if isinstance(vals[i], np.ndarray) \
                            else float(d) * grads[i]
                tangents.append(t)
            got = result.tangent if width else [result.tangent]
            np.testing.assert_allclose(np.asarray(got, dtype=float), tangents, rtol=rtol, atol=1e-9)
        if mode in (ReverseWithPrimal, ForwardWithPrimal):
            assert result.primal == pytest.approx(primal, rel=rtol, abs=1e-12)
        return True
    if kernel == "poly":
        x, y = float(vals[0]), float(vals[1])
        if not _finite(x, y):
            return False
        grads = [2 * x * y, x * x + 3.0]
        if reverse:
            for i in (0, 1):
                want = sigma * grads[i] if kinds[i] == "active" else None
                assert result.derivs[i] == (pytest.approx(want, rel=rtol) if want is not None else None)
        else:
            width = max((len(_lanes(k, sh)) for k, _, sh in before if k == "batch"), default=0)
            tangents = [sum(float(_lanes(kinds[i], before[i][2])[lane]) * grads[i]
                            for i in (0, 1) if kinds[i] in ("dup", "noneed", "batch"))
                        for lane in range(max(width, 1))]
            got = result.tangent if width else [result.tangent]
            np.testing.assert_allclose(np.asarray(got, dtype=float), tangents, rtol=rtol)
        if mode in (ReverseWithPrimal, ForwardWithPrimal):
            assert result.primal == pytest.approx(x * x * y + 3.0 * y, rel=rtol)
        return True
    # scale: x[:n] *= a, in place
    x, a, n = vals[0], float(vals[1]), int(vals[2])
    if not _finite(x[:n], a) or not all(_finite(np.asarray(sh, dtype=float)[:n])
                                        for sh in _lanes(kinds[0], before[0][2])
                                        if kinds[0] != "const"):
        return False
    if kinds[0] != "noneed":   # DuplicatedNoNeed may leave the primal unwritten
        np.testing.assert_allclose(np.asarray(after[0][1], dtype=float)[:n], a * x[:n], rtol=rtol)
    for lane, (lane_before, lane_after) in enumerate(zip(_lanes(kinds[0], before[0][2]),
                                                        _lanes(kinds[0], after[0][2]))):
        if kinds[0] == "const":
            break
        d = np.asarray(lane_before, dtype=float)
        if reverse:
            want = np.concatenate([a * d[:n], d[n:]])
            if kinds[1] == "active":
                assert result.derivs[1] == pytest.approx(float(np.dot(x[:n], d[:n])), rel=rtol, abs=1e-12)
        else:
            da = 0.0
            if kinds[1] in ("dup", "noneed", "batch"):
                da = float(_lanes(kinds[1], before[1][2])[lane])
            want = np.concatenate([a * d[:n] + x[:n] * da, d[n:]])
        np.testing.assert_allclose(np.asarray(lane_after, dtype=float), want, rtol=rtol, atol=1e-12)
    return True


def _copy_parts(annotation):
    kind, value, shadow = _parts(annotation)

    def copy(v):
        if isinstance(v, np.ndarray):
            return v.copy()
        if isinstance(v, (list, tuple)):
            return [copy(p) for p in v]
        return v
    return kind, copy(value), copy(shadow)


@SETTINGS
@given(mode=MODES, args=st.lists(annotated(values()), min_size=0, max_size=4),
       kernel=st.sampled_from(["dot", "scale", "fsum", "poly"]),
       seed=st.one_of(st.none(), st.floats(-2, 2), st.text(max_size=2)))
def test_derivative_calls(mod, mode, args, kernel, seed):
    """Every call either raises an EnzymeError and leaves every array as it
    was, or returns what the kernel's derivative, worked out here by hand,
    says (derivatives, tangents, primal, and the shadows after the call)."""
    snapshot = _snapshot(_arrays_in(args))
    before = [_copy_parts(a) for a in args]
    try:
        result = autodiff(mode, mod[kernel], *args, seed=seed)
    except enzyme.EnzymeError:
        assert _unchanged(snapshot)
        return
    _check_against_oracle(kernel, mode, before, [_parts(a) for a in args], result, seed)


@SETTINGS
@given(kernel=st.sampled_from(["dot", "scale", "fsum", "poly"]), mode=MODES,
       n=st.integers(0, 5), data=st.data())
def test_valid_derivative_calls(mod, kernel, mode, n, data):
    """Well-formed calls of every kernel and activity pattern, so that the
    oracle comparison above runs on many successful calls, not only on the
    few random annotations that happen to be valid."""
    rng = np.random.default_rng(n)
    reverse = mode in (Reverse, ReverseWithPrimal)
    dup = data.draw(st.sampled_from([Duplicated, DuplicatedNoNeed]))
    f = np.float32 if kernel == "fsum" else np.float64

    def arr():
        return rng.normal(size=n).astype(f)

    def scalar_active():
        v = float(rng.normal())
        return Active(v) if reverse else Duplicated(v, float(rng.normal()))

    x = arr()
    if kernel == "dot":
        args = [data.draw(st.sampled_from([dup(x, arr()), Const(x)])),
                data.draw(st.sampled_from([dup(arr(), arr()), Const(arr())])), Const(n)]
    elif kernel == "fsum":
        args = [dup(x, arr()), data.draw(st.sampled_from([scalar_active(), Const(1.5)])), Const(n)]
    elif kernel == "scale":
        args = [Duplicated(x, arr()), data.draw(st.sampled_from([scalar_active(), Const(0.5)])),
                Const(n)]
    else:
        args = [scalar_active(), data.draw(st.sampled_from([scalar_active(), Const(2.0)]))]
    seed = data.draw(st.sampled_from([None, 0.5])) if reverse and kernel != "scale" else None
    before = [_copy_parts(a) for a in args]
    result = autodiff(mode, mod[kernel], *args, seed=seed)
    assert _check_against_oracle(kernel, mode, before, [_parts(a) for a in args], result, seed)


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
    # the flat argument list it takes: each primal, then its shadow(s)
    rng = np.random.default_rng(len(activities))
    n = 3
    f = np.float32 if kernel == "fsum" else np.float64
    flat, annotated_args = [], []
    sig = mod[kernel].signature
    for param, activity in zip(sig.params, activities):
        if param.ctype.is_pointer:
            value = rng.normal(size=n).astype(f)
        elif param.ctype.is_float:
            value = float(rng.normal())
        else:
            value = n
        if activity in (Duplicated, DuplicatedNoNeed):
            shadow = np.zeros_like(value) if isinstance(value, np.ndarray) else float(rng.normal())
            flat += [value, shadow]
            annotated_args.append(activity(value.copy() if isinstance(value, np.ndarray) else value,
                                           shadow.copy() if isinstance(shadow, np.ndarray) else shadow))
        else:
            flat.append(value)
            annotated_args.append(Active(value) if activity is Active else Const(value))
    try:
        declared = df(*flat)
    except enzyme.EnzymeError:
        return
    # the declaration style and the call-site style are one derivative
    called = autodiff(mode, mod[kernel], *annotated_args)
    assert type(declared) is type(called)
    _same(declared, called)
    flat_shadows = []
    position = 0
    for activity in activities:
        position += 1
        if activity in (Duplicated, DuplicatedNoNeed):
            flat_shadows.append(flat[position])
            position += 1
    called_shadows = [a.dval for a in annotated_args if isinstance(a, (Duplicated, DuplicatedNoNeed))]
    for mine, theirs in zip(flat_shadows, called_shadows):
        np.testing.assert_allclose(np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float),
                                   rtol=1e-6)


def _same(a, b) -> None:
    """Two results (nested tuples of floats, arrays and None) are equal."""
    if a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6)
