"""Hostile arguments at the call layer (issue 10): what a check reads is
what native code gets, and every mistake is an EnzymeError, on the fast
path and on the reference path."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import enzyme
from enzyme import Active, BatchDuplicated, Const, Duplicated, Forward, Reverse

SRC = """
#include <enzyme/enzyme.h>
double sumsq(const double *x, long n) { double s = 0; for (long i = 0; i < n; i++) s += x[i]*x[i]; return s; }
double total(const double *ENZYME_LEN(n) x, long n) { double s = 0; for (long i = 0; i < n; i++) s += x[i]; return s; }
void scale(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = 2.0 * x[i]; }
double shifted(char c, double x) { return x * x + c; }
double sq(double x) { return x * x; }
"""
BIG = 2_000_000


class LyingShape(np.ndarray):
    """Claims to hold BIG elements; its buffer holds one."""

    @property
    def shape(self):
        return (BIG,)

    @property
    def size(self):
        return BIG


class LyingLength:
    """len() says 2; iterating yields ``count`` arrays."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        return iter([np.zeros(self.size) for _ in range(self.count)])


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, verify=False)


@pytest.fixture(params=["fast", "reference"])
def path(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setenv("ENZYME_NO_FASTCALL", "1")
    return request.param


def test_a_subclass_lying_about_its_shape_is_checked_by_its_buffer(mod, path):
    tiny = np.zeros(1).view(LyingShape)
    assert tiny.shape == (BIG,)
    with pytest.raises(enzyme.ShadowValueError, match=r"shape \(1,\)"):
        enzyme.autodiff(Reverse, mod.sumsq, Duplicated(np.ones(BIG), tiny), Const(BIG))
    with pytest.raises(enzyme.LengthError):
        mod.total(tiny, BIG)
    lanes = [np.zeros(BIG), tiny]
    with pytest.raises(enzyme.ShadowValueError, match=r"shape \(1,\)"):
        enzyme.autodiff(Forward, mod.scale, BatchDuplicated(np.ones(BIG), [np.ones(BIG)] * 2),
                        BatchDuplicated(np.zeros(BIG), lanes), Const(BIG))


def test_a_subclass_telling_the_truth_is_still_accepted(mod, path):
    class Tagged(np.ndarray):
        pass
    x, dx = np.arange(3.0).view(Tagged), np.zeros(3).view(Tagged)
    enzyme.autodiff(Reverse, mod.sumsq, Duplicated(x, dx), Const(3))
    np.testing.assert_array_equal(np.asarray(dx), [0.0, 2.0, 4.0])


def test_lanes_are_counted_as_iterated_not_as_len_says(mod):
    df = enzyme.derivative(mod.scale, Forward, BatchDuplicated, BatchDuplicated, Const, width=2)
    with pytest.raises(enzyme.ShadowValueError, match="has 3 shadows"):
        df(np.ones(4), LyingLength(3, 4), np.zeros(4), LyingLength(2, 4), 4)
    with pytest.raises(enzyme.ShadowValueError, match="has 1 shadows"):
        df(np.ones(4), LyingLength(2, 4), np.zeros(4), LyingLength(1, 4), 4)


def test_char_parameters_take_integers(mod):
    assert mod.shifted(3, 2.0) == 7.0
    assert mod.shifted(np.int8(-3), 2.0) == 1.0
    assert enzyme.grad(mod.shifted, argnums=1)(3, 2.0) == 4.0
    with pytest.raises(enzyme.ArgumentValueError, match="does not fit"):
        mod.shifted(300, 2.0)


@pytest.mark.parametrize("call", [
    lambda m: m.sq(2 ** 1100),
    lambda m: enzyme.autodiff(Reverse, m.sq, Active(2 ** 1100)),
    lambda m: enzyme.autodiff(Reverse, m.sq, Active(2.0), seed=2 ** 1100),
    lambda m: enzyme.derivative(m.sq, Reverse, Active)(2.0, seed=2 ** 1100),
    lambda m: enzyme.grad(m.sq)(2 ** 1100),
], ids=["primal", "active", "seed", "derivative-seed", "grad"])
def test_an_integer_too_large_for_a_double_is_an_enzyme_error(mod, call):
    with pytest.raises(enzyme.ArgumentValueError, match="does not fit"):
        call(mod)


def test_numbers_of_any_numpy_kind_are_scalars(mod):
    assert mod.sq(np.array(3.0)) == 9.0
    assert mod.sq(np.uint8(3)) == 9.0
    assert enzyme.autodiff(Reverse, mod.sq, Active(3.0), seed=np.array(2.0)).derivs == (12.0,)


def test_a_zero_dimensional_seed_of_a_batched_reverse_call(cc):
    m = cc("double dot(const double *x, const double *y, long n) {"
           " double s = 0; for (long i = 0; i < n; i++) s += x[i] * y[i]; return s; }", verify=False)
    x, y = np.arange(3.0), np.ones(3)
    lanes = np.zeros((2, 3))
    enzyme.autodiff(Reverse, m.dot, BatchDuplicated(x, lanes), Const(y), Const(3), seed=np.array(2.0))
    np.testing.assert_array_equal(lanes, [[2.0, 2.0, 2.0]] * 2)


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_tape_dropped_unreversed_frees_enzymes_memory(cc):
    m = cc("#include <math.h>\ndouble chain(const double *x, long n) { double s = 1.0;"
           " for (long i = 0; i < n; i++) s = sin(s * x[i]) + s; return s; }", verify=False)
    fwd, rev = enzyme.autodiff_thunk(enzyme.ReverseSplitWithPrimal, m.chain, Duplicated, Const)
    n = 10_000
    x, dx = np.linspace(0.1, 0.2, n), np.zeros(n)
    for _ in range(20):
        fwd(x, dx, n)
    gc.collect()
    before = _rss_mib()
    for _ in range(500):  # each tape holds ~n doubles that only the reverse pass frees
        fwd(x, dx, n)
    gc.collect()
    growth = _rss_mib() - before
    assert growth < 8, f"RSS grew by {growth:.1f} MiB over 500 dropped tapes"
    np.testing.assert_array_equal(dx, 0.0)  # the release ran into scratch shadows
    tape = fwd(x, dx, n)  # and a kept tape still reverses into the caller's shadow
    rev(tape, seed=1.0)
    expected = np.zeros(n)
    enzyme.autodiff(Reverse, m.chain, Duplicated(x, expected), Const(n))
    np.testing.assert_allclose(dx, expected, rtol=1e-12)
