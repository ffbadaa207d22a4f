"""Library lifetime: a library is never unloaded while a call into it is in
flight, and each compile() is its own handle, so closing one never closes
another's (issue 10). Before the fix each of the in-flight tests ended the
interpreter with a segmentation fault."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import enzyme
from enzyme import Const, Duplicated, Forward, call

SRC = """
double slow(const double *x, long it) {
  double s = 0;
  for (long i = 0; i < it; i++) s += x[i % 4] * 1e-9;
  return s;
}
/* a recurrence, so that its derivative loops as long as it does */
double chain(const double *x, long it) {
  double s = 0;
  for (long i = 0; i < it; i++) s = s * x[i % 4] * 0.25 + 1e-9;
  return s;
}
double sq(double x) { return x * x; }
"""
# long enough for the main thread to close the module meanwhile (~0.5 s)
ITERATIONS = 400_000_000


def _in_flight(library: call.LoadedLibrary, thread: threading.Thread) -> None:
    """Wait until a call has entered the library (or the thread ended)."""
    deadline = time.monotonic() + 60
    while library.gate.inflight == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert library.gate.inflight > 0, "the call never entered the library"


def _start(target) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            result["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _expected(x: np.ndarray) -> float:
    return float(ITERATIONS // 4 * x.sum() * 1e-9)


@pytest.mark.parametrize("path", ["primal", "fast", "reference"])
def test_closing_the_last_handle_waits_for_the_call_in_flight(cc, path, monkeypatch):
    if path == "reference":
        monkeypatch.setenv("ENZYME_NO_FASTCALL", "1")
    mod = cc(SRC, verify=False)
    x = np.arange(1.0, 5.0)
    if path == "primal":
        library = mod.slow._primal_function()._library
        thread, result = _start(lambda: mod.slow(x, ITERATIONS))
    else:
        df = enzyme.derivative(mod.chain, Forward, Duplicated, Const)
        assert (df._fast is not None) == (path == "fast")
        library = df._library
        expected = df(x, np.ones(4), 1000).tangent  # the same from 1,000 iterations on
        thread, result = _start(lambda: df(x, np.ones(4), ITERATIONS // 2))
    _in_flight(library, thread)
    mod.close()
    assert library.gate.closed and library.gate.inflight == 1  # closed, not unloaded yet
    thread.join()
    assert "error" not in result, result.get("error")
    if path == "primal":
        np.testing.assert_allclose(result["value"], _expected(x), rtol=1e-6)
    else:
        np.testing.assert_allclose(result["value"].tangent, expected, rtol=1e-12)
    assert library.gate.inflight == 0
    with pytest.raises(enzyme.ModuleClosedError):
        mod.sq(3.0)


def test_an_unrelated_with_block_does_not_close_another_handle(cc):
    """The reported crash: identical compile() calls shared one Module, so
    a `with` block elsewhere closed it under a running call."""
    mod = cc(SRC, verify=False)
    x = np.arange(1.0, 5.0)
    library = mod.slow._primal_function()._library
    thread, result = _start(lambda: mod.slow(x, ITERATIONS))
    _in_flight(library, thread)
    with cc(SRC, verify=False) as other:
        assert other is not mod
        assert other.sq(3.0) == 9.0
    assert not library.gate.closed  # mod is still open
    assert mod.sq(2.0) == 4.0
    thread.join()
    assert "error" not in result, result.get("error")
    np.testing.assert_allclose(result["value"], _expected(x), rtol=1e-6)
    mod.close()
    assert library.gate.closed


def test_a_derivative_of_a_closed_handle_refuses_while_another_handle_lives(cc):
    first = cc(SRC, verify=False)
    second = cc(SRC, verify=False)
    df1 = enzyme.derivative(first.sq, Forward, Duplicated)
    df2 = enzyme.derivative(second.sq, Forward, Duplicated)
    assert df1(3.0, 1.0).tangent == 6.0
    fwd1, _ = enzyme.autodiff_thunk(enzyme.ReverseSplit, first.sq, enzyme.Active)
    first.close()
    with pytest.raises(enzyme.ModuleClosedError):
        df1(3.0, 1.0)
    with pytest.raises(enzyme.ModuleClosedError):
        fwd1(3.0)
    with pytest.raises(enzyme.ModuleClosedError):
        first.sq(3.0)
    with pytest.raises(enzyme.ModuleClosedError):
        enzyme.grad(first.sq)(3.0)
    assert df2(3.0, 2.0).tangent == 12.0  # the other handle's library stayed loaded
    assert enzyme.grad(second.sq)(5.0) == 10.0
    second.close()
    with pytest.raises(enzyme.ModuleClosedError):
        df2(3.0, 1.0)


def test_a_gate_unloads_once_at_the_last_leave():
    calls = []
    for gate in ([call._fastcall.Gate()] if call._fastcall is not None else []) + [call._PyGate()]:
        assert gate.enter() and gate.enter()
        assert gate.close(lambda: calls.append("unloaded"))
        assert not gate.enter()  # closed: new calls refused
        gate.leave()
        assert calls == []
        gate.leave()
        assert calls == ["unloaded"]
        assert not gate.close(lambda: calls.append("twice"))
        calls.clear()
