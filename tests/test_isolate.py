"""compile(..., isolate=True): calls run in a worker process, so a kernel
that dereferences NULL, aborts or overflows its stack raises
KernelCrashError and the interpreter lives on (issue 10). Results must be
exactly those of the same module called in-process."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, ReverseSplitWithPrimal, worker

SRC = r"""
#include <stdlib.h>
#include <stddef.h>
double sq(double x) { return x * x; }
double dot(const double *x, const double *y, long n) {
  double s = 0; for (long i = 0; i < n; i++) s += x[i] * y[i] * y[i]; return s;
}
void scale(double *x, double a, long n) { for (long i = 0; i < n; i++) x[i] *= a; }
/* writes through a const pointer: a bug the isolated call must not carry back */
double sneaky(const double *x) { ((double *)x)[0] = 42.0; return x[1]; }
double null_deref(double x) { double *volatile p = NULL; return *p + x; }
double aborts(double x) { if (x > 0) abort(); return x; }
double recurse(double x) { volatile double pad[64]; pad[0] = x; return recurse(pad[0] + 1.0) + pad[1]; }
struct pair { double a, b; };
struct pair both(double x) { struct pair p = {x * x, 3 * x}; return p; }
double counter = 0;
double count(double x) { counter += 1; return counter * x; }
"""


@pytest.fixture(scope="module")
def iso(cc):
    return cc(SRC, isolate=True)


@pytest.mark.parametrize("kernel, sig", [("null_deref", "SIGSEGV"), ("aborts", "SIGABRT"),
                                         ("recurse", "SIGSEGV")])
def test_a_crashing_kernel_raises_and_the_next_call_works(iso, kernel, sig):
    with pytest.raises(enzyme.KernelCrashError, match=f"'{kernel}' crashed its worker process "
                                                      f"with {sig}") as info:
        getattr(iso, kernel)(1.0)
    assert info.value.signal == sig
    assert iso.sq(3.0) == 9.0  # a new worker


def test_results_are_those_of_the_in_process_module(cc, iso):
    plain = cc(SRC)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), rng.normal(size=6)
    assert iso.dot(x, y, 6) == plain.dot(x, y, 6)
    a, b = x.copy(), x.copy()
    iso.scale(a, 1.5, 6)
    plain.scale(b, 1.5, 6)
    np.testing.assert_array_equal(a, b)
    assert iso.both(2.0) == plain.both(2.0)
    for mod, out in ((iso, np.zeros(6)), (plain, np.zeros(6))):
        enzyme.autodiff(Reverse, mod.dot, Duplicated(x, out), Const(y), Const(6))
    np.testing.assert_allclose(out, y * y, rtol=1e-15)
    dx_iso, dx_plain = np.zeros(6), np.zeros(6)
    enzyme.autodiff(Reverse, iso.dot, Duplicated(x, dx_iso), Const(y), Const(6))
    enzyme.autodiff(Reverse, plain.dot, Duplicated(x, dx_plain), Const(y), Const(6))
    np.testing.assert_array_equal(dx_iso, dx_plain)
    t_iso = enzyme.autodiff(Forward, iso.dot, Const(x), Duplicated(y, np.ones(6)), Const(6)).tangent
    np.testing.assert_allclose(t_iso, 2 * np.dot(x, y), rtol=1e-13)
    assert enzyme.grad(iso.sq)(3.0) == 6.0
    np.testing.assert_allclose(enzyme.hessian(iso.dot, wrt=1)(x, y, 6), np.diag(2 * x), rtol=1e-13)
    fwd, rev = enzyme.autodiff_thunk(ReverseSplitWithPrimal, iso.dot, Duplicated, Const, Const)
    dx = np.zeros(6)
    tape = fwd(x, dx, y, 6)
    assert tape.primal == plain.dot(x, y, 6)
    rev(tape, seed=2.0)
    np.testing.assert_allclose(dx, 2 * y * y, rtol=1e-15)
    assert enzyme.autodiff(Reverse, iso.sq, Active(3.0)).derivs == (6.0,)


def test_only_what_the_entry_point_may_write_comes_back(iso):
    x = np.array([1.0, 2.0])
    x.flags.writeable = False
    assert iso.sneaky(x) == 2.0
    np.testing.assert_array_equal(x, [1.0, 2.0])


def test_globals_live_in_the_worker(iso):
    with pytest.raises(enzyme.GlobalNotFoundError, match="isolate=True"):
        iso.globals["counter"]
    first = iso.count(1.0)
    assert iso.count(1.0) == first + 1  # state persists between calls in one worker


def test_a_worker_killed_between_calls_is_replaced(iso):
    iso.sq(1.0)
    os.kill(worker._worker.proc.pid, signal.SIGKILL)
    worker._worker.proc.wait()
    assert iso.sq(5.0) == 25.0


def test_threads_share_the_worker(iso):
    results: dict[int, float] = {}

    def run(i: int) -> None:
        x = np.full(100, float(i))
        results[i] = iso.dot(x, np.ones(100), 100)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 100.0 * i for i in range(8)}


def test_large_arrays_grow_the_shared_region(iso):
    n = 3_000_000  # 24 MB per array: beyond the first region
    x, y = np.full(n, 2.0), np.ones(n)
    assert iso.dot(x, y, n) == 2.0 * n
    iso.scale(x, 0.5, n)
    np.testing.assert_array_equal(x[:3], 1.0)


def test_a_derivative_through_an_active_global_is_refused(iso):
    with pytest.raises(enzyme.DifferentiationError, match="isolate=True") as info:
        enzyme.grad(iso.count)(2.0)
    assert info.value.code == "global-isolated"
