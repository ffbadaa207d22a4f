"""Compile latency and per-call overhead of enzyme-ffi (foundation numbers).

Measures, in one run on this machine:

* cold: ``compile`` + first reverse derivative of a 20-line kernel, new
  process, empty cache;
* warm: the same in a new process with the disk cache filled;
* in-process repeat: ``compile`` + ``autodiff`` again in the same process;
* per-call overhead of a derivative call on three 3-element arrays, against
  raw cffi calls of the same generated entry point (pointers converted once,
  and ``ffi.from_buffer`` per call).

Run: ``.venv/bin/python benchmarks/latency.py``. Prints medians (min/max).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

KERNEL = r"""
#include <math.h>
/* 20-line kernel: a damped spring chain energy */
double chain_energy(const double *pos, const double *vel, const double *k, int n) {
    double e = 0.0;
    for (int i = 0; i < n; i++) {
        double kin = 0.5 * vel[i] * vel[i];
        double stretch = 0.0;
        if (i + 1 < n) {
            double d = pos[i + 1] - pos[i] - 1.0;
            stretch = 0.5 * k[i] * d * d;
        }
        double anchor = 0.1 * (1.0 - cos(pos[i]));
        double damp = exp(-0.01 * vel[i] * vel[i]);
        e += (kin + stretch + anchor) * damp;
    }
    if (e > 1e6) {
        e = 1e6 + log(e - 1e6 + 1.0);
    }
    return e;
}
"""

CHILD = textwrap.dedent("""
    import time, sys
    t0 = time.perf_counter()
    import numpy as np, enzyme
    from enzyme import Reverse, Duplicated, Const, autodiff
    t1 = time.perf_counter()
    mod = enzyme.compile(sys.argv[1])
    p, v, k = np.linspace(0, 3, 3), np.ones(3), np.ones(3)
    dp = np.zeros(3)
    autodiff(Reverse, mod.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))
    t2 = time.perf_counter()
    print(t1 - t0, t2 - t1)
""")


def _child(cache: str) -> tuple[float, float]:
    env = dict(os.environ, ENZYME_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, KERNEL], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def _stats(samples: list[float], scale: float, unit: str) -> str:
    return (f"{statistics.median(samples) * scale:.3g} {unit} "
            f"(min {min(samples) * scale:.3g}, max {max(samples) * scale:.3g}, n={len(samples)})")


def _per_call(fn, repeat: int = 7, number: int = 20000) -> list[float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return runs


def main() -> None:
    import numpy as np

    import enzyme
    from enzyme import Const, Duplicated, Reverse, autodiff

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"python {platform.python_version()}, enzyme-ffi {enzyme.__version__}")

    cold, warm, imports = [], [], []
    for _ in range(5):
        with tempfile.TemporaryDirectory() as cache:
            # cold includes probing clang/opt versions and hashing the plugin,
            # which a fresh cache dir has not remembered yet
            cold.append(_child(cache)[1])
            start, hit = _child(cache)
            warm.append(hit)
            imports.append(start)
    print(f"import numpy + enzyme in a new process: {_stats(imports, 1e3, 'ms')} "
          "(not included below)")
    print(f"cold compile + first reverse derivative (new process, empty cache): "
          f"{_stats(cold, 1e3, 'ms')}")
    print(f"warm (new process, disk cache): {_stats(warm, 1e3, 'ms')}")

    mod = enzyme.compile(KERNEL)
    p, v, k = np.linspace(0, 3, 3), np.ones(3), np.ones(3)
    dp = np.zeros(3)
    autodiff(Reverse, mod.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))
    repeat = []
    for _ in range(200):
        t0 = time.perf_counter()
        m = enzyme.compile(KERNEL)
        autodiff(Reverse, m.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))
        repeat.append(time.perf_counter() - t0)
    print(f"in-process repeat (compile + autodiff again): {_stats(repeat, 1e6, 'us')}")

    df = enzyme.derivative(mod.chain_energy, Reverse, Duplicated, Const, Const, Const)
    ffi, raw = df._ffi, df._fn
    cp, cdp, cv, ck = (ffi.from_buffer("double[]", a) for a in (p, dp, v, k))

    def raw_preconverted():
        raw(cp, cdp, cv, ck, 3, 1.0)

    def raw_from_buffer():
        fb = ffi.from_buffer
        raw(fb("double[]", p), fb("double[]", dp), fb("double[]", v), fb("double[]", k), 3, 1.0)

    def via_derivative():
        df(p, dp, v, k, 3)

    def via_autodiff():
        autodiff(Reverse, mod.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))

    rows = [("raw cffi call, pointers converted once", raw_preconverted),
            ("raw cffi call, ffi.from_buffer per call", raw_from_buffer),
            ("enzyme.derivative(...) callable", via_derivative),
            ("enzyme.autodiff(Reverse, ...)", via_autodiff)]
    base = None
    for name, fn in rows:
        runs = _per_call(fn)
        med = statistics.median(runs)
        base = base or med
        print(f"{name:45s} {_stats(runs, 1e9, 'ns')}  ratio {med / base:.2f}")


if __name__ == "__main__":
    main()
