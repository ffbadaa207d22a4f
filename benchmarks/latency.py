"""Compile latency and per-call overhead of enzyme-ffi.

* cold: ``compile`` + first reverse derivative of a 20-line kernel, new
  process, empty cache (includes probing the toolchain);
* warm: the same in a new process with the disk cache filled (after import);
* in-process repeat: ``compile`` + ``autodiff`` again in the same process;
* per-call overhead of a derivative call on three 3-element arrays, against
  raw cffi calls of the same generated entry point (pointers converted once,
  and ``ffi.from_buffer`` per call).

Run alone: ``.venv/bin/python benchmarks/latency.py``; ``benchmarks/run.py``
includes it in BENCHMARKS.md.
"""

from __future__ import annotations

import os
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


def stats(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def measure_latency(runs: int = 5, repeats: int = 200) -> dict:
    """Cold, warm and in-process repeat latency, in seconds."""
    import numpy as np

    import enzyme
    from enzyme import Const, Duplicated, Reverse, autodiff

    # The in-process repeat is timed in rounds between the child processes
    # (like the other ratios, so a noisy stretch of the run hits all alike).
    mod = enzyme.compile(KERNEL)
    p, v, k = np.linspace(0, 3, 3), np.ones(3), np.ones(3)
    dp = np.zeros(3)
    autodiff(Reverse, mod.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))
    cold, warm, imports, repeat = [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(_child(cache)[1])
            start, hit = _child(cache)
            warm.append(hit)
            imports.append(start)
        for _ in range(repeats):
            t0 = time.perf_counter()
            m = enzyme.compile(KERNEL)
            autodiff(Reverse, m.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3))
            repeat.append(time.perf_counter() - t0)
    return {"import": stats(imports), "cold": stats(cold), "warm": stats(warm),
            "repeat": stats(repeat)}


def _per_call(fn, repeat: int = 7, number: int = 20000) -> list[float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return runs


def measure_overhead() -> dict:
    """Seconds per call of one reverse derivative on three 3-element arrays."""
    import numpy as np

    import enzyme
    from enzyme import Const, Duplicated, Reverse, autodiff

    mod = enzyme.compile(KERNEL)
    p, v, k = np.linspace(0, 3, 3), np.ones(3), np.ones(3)
    dp = np.zeros(3)
    df = enzyme.derivative(mod.chain_energy, Reverse, Duplicated, Const, Const, Const)
    ffi, raw = df._ffi, df._fn
    cp, cdp, cv, ck = (ffi.from_buffer("double[]", a) for a in (p, dp, v, k))
    fb = ffi.from_buffer

    rows = {
        "raw cffi call, pointers converted once": lambda: raw(cp, cdp, cv, ck, 3, 1.0),
        "raw cffi call, ffi.from_buffer per call": lambda: raw(
            fb("double[]", p), fb("double[]", dp), fb("double[]", v), fb("double[]", k), 3, 1.0),
        "enzyme.derivative(...) callable": lambda: df(p, dp, v, k, 3),
        "enzyme.autodiff(Reverse, ...)": lambda: autodiff(
            Reverse, mod.chain_energy, Duplicated(p, dp), Const(v), Const(k), Const(3)),
    }
    return {name: stats(_per_call(fn)) for name, fn in rows.items()}


def main() -> None:
    import platform

    import enzyme

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"python {platform.python_version()}, enzyme-ffi {enzyme.__version__}")
    latency = measure_latency()
    for key, label in (("import", "import numpy + enzyme (new process)"),
                       ("cold", "cold compile + first reverse derivative"),
                       ("warm", "warm (new process, disk cache)"),
                       ("repeat", "in-process repeat (compile + autodiff)")):
        s = latency[key]
        print(f"{label:45s} {s['median'] * 1e3:9.3f} ms (min {s['min'] * 1e3:.3f}, "
              f"max {s['max'] * 1e3:.3f}, n={s['n']})")
    overhead = measure_overhead()
    base = None
    for name, s in overhead.items():
        base = base or s["median"]
        print(f"{name:45s} {s['median'] * 1e9:9.0f} ns (min {s['min'] * 1e9:.0f}, "
              f"max {s['max'] * 1e9:.0f})  ratio {s['median'] / base:.2f}")


if __name__ == "__main__":
    main()
