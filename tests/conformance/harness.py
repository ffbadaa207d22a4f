"""The outside conformance corpus: Enzyme's own C integration tests
(``enzyme/test/Integration/{ReverseMode,ForwardMode,BatchMode}`` in
EnzymeAD/Enzyme), ported here. The facts (the functions, their inputs, the
values the upstream test checks) carry over; the code is written here.

Each :class:`Case` is run three ways:

``c_side``
    The C as written, whose ``void conformance_c_side(double *out)`` makes
    the upstream test's ``__enzyme_*`` calls itself and stores every value
    the upstream test checks into ``out``; compiled by ``enzyme.compile``.
``api``
    The same derivatives through the Python API (``autodiff``, ``grad``,
    ``jvp`` ... with the equivalent activities), returned in the same order;
    the case's ``api`` function also checks them against central differences
    of the primal, so a value that merely matches a wrong C side fails.
``plain``
    The reference three-step chain of ``shared/design.md`` (clang front end ->
    ``opt preserve-nvvm,default<O2>,enzyme,default<O3>`` -> clang -O3), as a
    separate executable whose ``main`` prints ``out``. It is the judge of
    what the pinned Enzyme can do: a case whose plain way fails is a known
    limitation of Enzyme v0.0.289, and every case whose plain way passes
    must pass the other two ways.

A case's ``known`` maps a way to the reason it fails; that way is then a
strict expected failure (it must keep failing, or the mark is removed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import enzyme

WAYS = ("c_side", "api", "plain")


@dataclasses.dataclass(frozen=True)
class Case:
    """One ported integration test.

    ``name`` is ``<mode>/<upstream file stem>`` (e.g. ``reverse/loops``);
    ``upstream`` the upstream path. ``expected`` are the values the upstream
    test asserts, in the order ``conformance_c_side`` stores them and ``api``
    returns them. ``compile_kwargs`` go to ``enzyme.compile`` (``flags`` also
    to the plain chain's front end). ``isolate`` runs the in-process ways in a
    child process (for code that may crash the interpreter).
    """

    name: str
    upstream: str
    source: str
    expected: tuple[float, ...]
    api: Callable[[Any], Sequence[float]] | None
    api_missing: str = ""  # why a case has no Python-API way, when it has none
    rtol: float = 1e-10
    atol: float = 1e-10
    known: dict[str, str] = dataclasses.field(default_factory=dict)
    compile_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    isolate: bool = False

    def __post_init__(self) -> None:
        assert "conformance_c_side" in self.source, self.name
        assert set(self.known) <= set(WAYS), self.name
        assert (self.api is None) == bool(self.api_missing), self.name


def assert_values(case: Case, got: Sequence[float], way: str) -> None:
    got = np.asarray(got, dtype=float).ravel()
    want = np.asarray(case.expected, dtype=float)
    assert got.shape == want.shape, f"{case.name} ({way}): {got.size} values, expected {want.size}"
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol,
                               err_msg=f"{case.name} ({way}) disagrees with {case.upstream}")


def assert_fd(f: Callable[[np.ndarray], float], x: Any, derivative: Any, *,
              direction: Any = None, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Check a derivative against central differences of ``f`` at ``x``.

    Without ``direction``, ``derivative`` is the gradient of scalar ``f``
    (same shape as ``x``). With it, ``derivative`` is the directional
    derivative ``J @ direction`` (``f`` may return an array then).
    """
    x = np.array(x, dtype=float)
    if direction is not None:
        d = np.asarray(direction, dtype=float)
        h = 1e-6 * max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
        fd = (np.asarray(f(x + h * d), dtype=float) - np.asarray(f(x - h * d), dtype=float)) / (2 * h)
        np.testing.assert_allclose(derivative, fd, rtol=rtol, atol=atol,
                                   err_msg="derivative disagrees with central differences")
        return
    from oracles import central_difference

    fd = central_difference(lambda v: float(f(v)), x)
    np.testing.assert_allclose(np.asarray(derivative, dtype=float).reshape(fd.shape), fd,
                               rtol=rtol, atol=atol,
                               err_msg="gradient disagrees with central differences")


def compile_case(case: Case, tc: Any) -> Any:
    return enzyme.compile(case.source, toolchain=tc, **case.compile_kwargs)


def run_c_side(case: Case, tc: Any) -> np.ndarray:
    mod = compile_case(case, tc)
    out = np.zeros(len(case.expected))
    mod.conformance_c_side(out)
    return out


def run_api(case: Case, tc: Any) -> np.ndarray:
    assert case.api is not None
    return np.asarray(case.api(compile_case(case, tc)), dtype=float)


_MAIN = r"""
int printf(const char *, ...);
int main(void) {
    double out[%(n)d] = {0};
    conformance_c_side(out);
    for (int i = 0; i < %(n)d; i++) printf("%%.17g\n", out[i]);
    return 0;
}
"""


def _run(cmd: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, errors="replace",
                          timeout=timeout, stdin=subprocess.DEVNULL)


def run_plain(case: Case, tc: Any, work: Path) -> np.ndarray:
    """The reference chain of shared/design.md, as an executable."""
    source = work / "k.c"
    source.write_text(case.source + _MAIN % {"n": len(case.expected)})
    flags = [str(f) for f in case.compile_kwargs.get("flags", ())]
    libs = [f"-l{lib}" for lib in case.compile_kwargs.get("libraries", ())]
    steps = [
        [tc.clang, "-O2", "-Xclang", "-disable-llvm-passes", "-fno-math-errno", "-fPIC",
         "-emit-llvm", "-c", str(source), "-o", str(work / "k.bc"), "-I", enzyme.get_include(),
         *flags],
        [tc.opt, str(work / "k.bc"), f"--load-pass-plugin={tc.plugin}",
         "-passes=preserve-nvvm,default<O2>,enzyme,default<O3>", "-o", str(work / "k.ad.bc")],
        [tc.clang, "-O3", "-fPIC", str(work / "k.ad.bc"), "-o", str(work / "k"), *flags, *libs, "-lm"],
    ]
    for cmd in steps:
        done = _run(cmd)
        assert done.returncode == 0, f"{case.name} (plain): {Path(cmd[0]).name} failed:\n{done.stderr[-3000:]}"
    done = _run([str(work / "k")], timeout=120)
    assert done.returncode == 0, f"{case.name} (plain): the program died ({done.returncode}):\n{done.stderr[-2000:]}"
    return np.array([float(v) for v in done.stdout.split()])


def run_isolated(case: Case, way: str) -> np.ndarray:
    """Run an in-process way in a child interpreter, so a crash there is a
    test failure, not the end of the test session."""
    here = Path(__file__).resolve().parent
    script = (f"import json, sys; sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]\n"
              "from enzyme import toolchain\n"
              "import corpus\n"
              "import harness\n"
              f"case = corpus.CASES[{case.name!r}]\n"
              f"values = harness.run_{way}(case, toolchain.resolve())\n"
              "print('VALUES', json.dumps([float(v) for v in values]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env=dict(os.environ))
    for line in done.stdout.splitlines():
        if line.startswith("VALUES "):
            return np.array(json.loads(line[len("VALUES "):]))
    raise AssertionError(f"{case.name} ({way}) in a child process: exit {done.returncode}\n"
                         f"{done.stderr[-3000:]}")
