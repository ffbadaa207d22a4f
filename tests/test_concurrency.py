"""Processes and threads: one build for many concurrent requests, and native
calls that release the GIL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

import enzyme
from enzyme import Const, Duplicated, Reverse, autodiff

WORKER = textwrap.dedent("""
    import json, sys, threading
    import numpy as np
    import enzyme
    from enzyme import build, Reverse, Duplicated, Const, autodiff

    source = sys.argv[1]
    results, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            mod = enzyme.compile(source)
            w, dw = np.linspace(0.5, 2.0, 5), np.zeros(5)
            r = autodiff(enzyme.ReverseWithPrimal, mod.fresh_kernel, Duplicated(w, dw), Const(5))
            results[i] = [r.primal] + dw.tolist()
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps({"runs": build.subprocess_runs, "results": results, "errors": errors}))
""")


def test_four_processes_eight_threads_one_build(tc, tmp_path):
    # a kernel no cache has seen: a fresh constant in the source
    nonce = uuid.uuid4().int % 1000003
    source = ("double fresh_kernel(const double *w, int n) { double s = 0.0; "
              f"for (int i = 0; i < n; i++) s += w[i] * w[i] * {nonce}.0 + w[i]; return s; }}")
    # counts builds: without the first-use check's builds of the other mode
    env = dict(os.environ, ENZYME_CACHE_DIR=str(tmp_path / "cache"), ENZYME_VERIFY="0")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, source], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    elapsed = time.perf_counter() - start
    reports = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(not r["errors"] for r in reports), [r["errors"] for r in reports]
    w = np.linspace(0.5, 2.0, 5)
    expected = [float(np.sum(w * w * nonce + w))] + (2 * w * nonce + 1).tolist()
    for report in reports:
        for result in report["results"]:
            np.testing.assert_allclose(result, expected, rtol=1e-12)
    # exactly one build: the module (clang front end, the signature parser,
    # clang -### for the host CPU's features, opt for them, clang link) and
    # one derivative (clang with the module's bitcode linked in, opt through
    # Enzyme, opt for the host CPU, link) were built by one thread of one
    # process
    assert sum(r["runs"] for r in reports) == 5 + 4, [r["runs"] for r in reports]
    print(f"4 processes x 8 threads: {elapsed:.2f} s, subprocess runs per process "
          f"{[r['runs'] for r in reports]}")


SPIN = r"""
/* spins until another thread sets flag[0] (or max_iters runs out) */
long wait_for(volatile const double *flag, long max_iters) {
    long i = 0;
    while (flag[0] == 0.0 && i < max_iters) i++;
    return i;
}
double busy(const double *x, int n, long reps) {
    double s = 0.0;
    for (long r = 0; r < reps; r++)
        for (int i = 0; i < n; i++) s += x[i] * x[i] / (1.0 + r);
    return s;
}
"""


def test_native_calls_release_the_gil(cc):
    mod = cc(SPIN)
    flag = np.zeros(1)
    cap = 20_000_000_000  # minutes of spinning: only reached if the GIL were held
    result = {}

    def spin():
        result["iterations"] = mod.wait_for(flag, cap)

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.2)
    flag[0] = 1.0  # needs the GIL: possible only because the C call released it
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert 0 < result["iterations"] < cap


def test_derivative_calls_from_many_threads(cc):
    mod = cc(SPIN)
    df = enzyme.derivative(mod.busy, Reverse, Duplicated, Const, Const)
    x = np.linspace(0.1, 1.0, 50)
    expected = np.zeros(50)
    df(x, expected, 50, 200)
    outs = [np.zeros(50) for _ in range(8)]
    errors = []

    def run(out):
        try:
            for _ in range(20):
                out[:] = 0.0
                df(x, out, 50, 200)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for out in outs:
        np.testing.assert_array_equal(out, expected)
    autodiff(Reverse, mod.busy, Duplicated(x, np.zeros(50)), Const(50), Const(1))


@pytest.mark.parametrize("n_threads", [8])
def test_threads_compiling_distinct_kernels(cc, n_threads):
    errors, values = [], [None] * n_threads

    def run(i):
        try:
            mod = cc(f"double k{i}(double x) {{ return {i + 1}.0 * x * x; }}")
            values[i] = autodiff(Reverse, mod[f"k{i}"], enzyme.Active(1.5)).derivs[0]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert values == [3.0 * (i + 1) for i in range(n_threads)]
