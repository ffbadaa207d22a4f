"""The enzyme-ffi benchmark suite: writes BENCHMARKS.md and benchmarks/ratios.png.

For every kernel, in one run on this machine: primal and gradient time from
native C (a C driver built with the same clang, calling the very entry point
Python calls: the limit), the same through the Python API, JAX ``jit(grad)``
where JAX is installed, and the cost of central finite differences
(2 n primal evaluations, from the measured native primal). Plus per-call
overhead, compile latency, and compile time of generated kernels.

Run: ``bash benchmarks/run.sh`` (sets up a benchmark venv with JAX).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import enzyme
from enzyme import Const, Duplicated, Reverse
from enzyme.codegen import generate_derivative
from enzyme.params import Role

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import first_use  # noqa: E402
import latency  # noqa: E402
import vector_math_accuracy  # noqa: E402


@dataclass
class Case:
    name: str
    title: str
    file: str
    kernel: str
    dup: tuple[int, ...]          # indices of the differentiated (array) arguments
    make: Callable[[np.random.Generator], list]
    cheap_bound: bool             # in the "gradient / primal <= 5" target set
    options: dict = field(default_factory=dict)  # compile() options (libraries=...)


def _rosen(n):
    return lambda rng: [rng.uniform(-1.5, 1.5, size=n), n]


CASES = [
    Case("rosenbrock_10", "Rosenbrock, n = 10", "rosenbrock.c", "rosenbrock", (0,), _rosen(10), True),
    Case("rosenbrock_1e6", "Rosenbrock, n = 1e6", "rosenbrock.c", "rosenbrock", (0,), _rosen(10**6),
         True),
    Case("lotka_volterra", "Lotka-Volterra, 1e5 Euler steps, 4 params", "lotka_volterra.c",
         "lv_loss", (0,), lambda rng: [np.array([1.0, 0.1, 0.075, 1.5]), 100_000, 1e-4], True),
    Case("gmm", "Gaussian mixture log-lik., d=10 K=25 N=10k", "gmm.c", "gmm_loglik", (0,),
         lambda rng: [rng.normal(scale=0.5, size=25 + 2 * 25 * 10), rng.normal(size=10_000 * 10),
                      10_000, 10, 25], False),
    Case("heat", "2-D heat equation 256x256, 100 steps", "heat.c", "heat_norm", (0,),
         lambda rng: [rng.uniform(size=256 * 256), 256, 100, 0.2], True),
    Case("mlp", "2-layer tanh MLP 64-128-1, batch 256", "mlp.c", "mlp_loss", (0,),
         lambda rng: [rng.normal(scale=0.1, size=64 * 128 + 128 + 128 + 1),
                      rng.normal(size=256 * 64), rng.normal(size=256), 256, 64, 128], False),
    Case("mlp_blas", "2-layer tanh MLP 64-128-1, batch 256, CBLAS", "mlp_blas.c", "mlp_blas_loss", (0,),
         lambda rng: [rng.normal(scale=0.1, size=64 * 128 + 128 + 128 + 1),
                      rng.normal(size=256 * 64), rng.normal(size=256), 256, 64, 128], False,
         {"libraries": ["openblas"]}),
    Case("black_scholes", "Black-Scholes, 1e6 options (d/d spot, d/d vol)", "black_scholes.c",
         "bs_total", (0, 1),
         lambda rng: [rng.uniform(80, 120, size=10**6), rng.uniform(0.1, 0.4, size=10**6),
                      rng.uniform(90, 110, size=10**6), rng.uniform(0.25, 2.0, size=10**6), 0.03,
                      10**6], True),
    Case("lennard_jones", "Lennard-Jones energy, 1000 particles", "lennard_jones.c", "lj_energy",
         (0,), lambda rng: [_lattice(1000, rng), 1000], True),
]


def _lattice(n: int, rng: np.random.Generator) -> np.ndarray:
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    return (grid * 1.2 + rng.uniform(-0.05, 0.05, size=(n, 3))).ravel().astype(np.float64)


def paired_timings(fns: list[Callable[[], object]], min_time: float, max_reps: int,
                   min_reps: int = 5) -> list[list[float]]:
    """Times of several functions called in turn, call by call, so that the
    machine's noise hits each alike."""
    for fn in fns:
        fn()  # warm up (first-call costs are measured separately)
    out: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(out[0]) < min_reps or (time.perf_counter() - start < min_time and len(out[0]) < max_reps):
        for fn, times in zip(fns, out):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return out


def timings(fn: Callable[[], object], min_time: float = 0.5, min_reps: int = 5,
            max_reps: int = 2000) -> list[float]:
    return paired_timings([fn], min_time, max_reps, min_reps)[0]


def summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


DRIVER = string.Template(r"""
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
/* Memory at the given offset within a page: each array gets the page offset
   its Python twin has, so both sides see the same cache-set and 4K-aliasing
   pattern (Lennard-Jones' gradient moves by 1.5x with it). */
static void *place(long bytes, long offset) {
    char *p;
    if (posix_memalign((void **)&p, 4096, bytes + offset + 8)) { fprintf(stderr, "no memory\n"); exit(2); }
    memset(p, 0, bytes + offset + 8);
    return p + offset;
}
static void *load(const char *path, long bytes, long offset) {
    FILE *f = fopen(path, "rb"); void *p = place(bytes, offset);
    if (!f || fread(p, 1, bytes, f) != (size_t)bytes) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f); return p;
}
static void report(const char *what, double *t, int n) {
    printf("%s", what);
    for (int i = 0; i < n; i++) printf(" %.9e", t[i]);
    printf("\n");
}
typedef double (*primal_t)(${primal_types});
typedef void (*grad_t)(${entry_types});
int main(int argc, char **argv) {
    /* Enzyme allocates its tape with malloc on every gradient call. A fresh
       process would mmap and unmap it each time (page faults: +0.6 ms per
       Lotka-Volterra gradient, measured); a long-running process, such as
       the Python one, has raised glibc's thresholds by then. Raise them here
       too, so that this stays the best case. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    void *hm = dlopen(argv[1], RTLD_NOW), *hd = dlopen(argv[2], RTLD_NOW);
    if (!hm || !hd) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    primal_t f = (primal_t)dlsym(hm, "${kernel}");
    grad_t g = (grad_t)dlsym(hd, "${entry}");
    int reps_p = atoi(argv[3]), reps_g = atoi(argv[4]);
${setup}
    double *tp = malloc(reps_p * sizeof(double)), *tg = malloc(reps_g * sizeof(double));
    volatile double sink = 0.0;
    sink += f(${primal_args});
    for (int r = 0; r < reps_p; r++) { double t0 = now(); sink += f(${primal_args}); tp[r] = now() - t0; }
    g(${entry_args});
    for (int r = 0; r < reps_g; r++) { double t0 = now(); g(${entry_args}); tg[r] = now() - t0; }
    report("primal", tp, reps_p);
    report("gradient", tg, reps_g);
    return sink == 12345.678;
}
""")


def raw_cffi_gradient(df, args: list, shadows: dict[int, np.ndarray]) -> Callable[[], object]:
    """The same entry point called through cffi with pointers converted once:
    the cost of the gradient in this process without enzyme-ffi's layer."""
    ffi, fn = df._ffi, df._fn
    call_args: list = []
    for param in generate_derivative(df.spec).params:
        if param.role is Role.PRIMAL:
            value = args[param.arg]
            call_args.append(ffi.cast("double *", value.ctypes.data) if isinstance(value, np.ndarray)
                             else value)
        elif param.role is Role.SHADOW:
            call_args.append(ffi.cast("double *", shadows[param.arg].ctypes.data))
        elif param.role is Role.SEED:
            call_args.append(1.0)
        else:
            call_args.append(ffi.new("double *"))
    return lambda: fn(*call_args)


def native_driver(case: Case, mod: enzyme.Module, df, args: list, offsets: dict[str, list[int]],
                  workdir: Path) -> Path:
    """Build a C driver that calls the same primal and the same generated
    gradient entry point the Python API calls, on arrays placed at the page
    offsets ``offsets`` (argument index -> [array, shadow]) that a Python
    process gave them."""
    kernel = mod[case.kernel]
    wrapper = generate_derivative(df.spec)
    setup, primal_args = [], []
    for i, (param, value) in enumerate(zip(kernel.signature.params, args)):
        if param.ctype.is_pointer:
            path = workdir / f"{case.name}_a{i}.bin"
            value.tofile(path)
            array_offset, shadow_offset = offsets.get(str(i), [0, 0])
            setup.append(f"    double *a{i} = load(\"{path}\", {value.nbytes}L, {array_offset}L);")
            setup.append(f"    double *d{i} = place({max(value.nbytes, 8)}L, {shadow_offset}L);")
            primal_args.append(f"a{i}")
        else:
            primal_args.append(repr(float(value)) if param.ctype.is_float else f"{int(value)}L")
    entry_args = []
    for param in wrapper.params:
        if param.role is Role.PRIMAL:
            entry_args.append(primal_args[param.arg])
        elif param.role is Role.SHADOW:
            entry_args.append(f"d{param.arg}")
        elif param.role is Role.SEED:
            entry_args.append("1.0")
        else:
            setup.append(f"    double out_{len(entry_args)} = 0.0;")
            entry_args.append(f"&out_{len(entry_args)}")
    entry_types = [p.c_type for p in wrapper.params]
    primal_types = [p.ctype.c_decl for p in kernel.signature.params]
    source = DRIVER.substitute({
        "primal_types": ", ".join(primal_types), "entry_types": ", ".join(entry_types),
        "kernel": case.kernel, "entry": wrapper.entry, "setup": "\n".join(setup),
        "primal_args": ", ".join(primal_args), "entry_args": ", ".join(entry_args)})
    c_file, exe = workdir / f"{case.name}_driver.c", workdir / f"{case.name}_driver"
    c_file.write_text(source)
    tc = enzyme.toolchain.resolve()
    subprocess.run([tc.clang, "-O2", str(c_file), "-o", str(exe), "-ldl"], check=True)
    return exe


def native_samples(exe: Path, mod: enzyme.Module, df, reps_p: int, reps_g: int) -> dict[str, list[float]]:
    out = subprocess.run([str(exe), mod._artifact.so_path, df._library.key[0], str(reps_p),
                          str(reps_g)], check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: [float(t) for t in line.split()[1:]] for line in out.splitlines()}


def jax_timings(case: Case, args: list) -> dict | None:
    try:
        import jax
        import jax_kernels
    except ImportError:
        return None
    make = jax_kernels.JAX_KERNELS.get(case.name)
    if make is None:
        return None
    f, wrt, jargs = make(*args)
    primal = jax.jit(f)
    gradient = jax.jit(jax.grad(f, argnums=wrt))
    t0 = time.perf_counter()
    jax.block_until_ready(gradient(*jargs))
    first = time.perf_counter() - t0
    return {"primal": summary(timings(lambda: jax.block_until_ready(primal(*jargs)))),
            "gradient": summary(timings(lambda: jax.block_until_ready(gradient(*jargs)))),
            "first_call": first, "version": jax.__version__}


def case_setup(case: Case, options: dict | None = None):
    """The case's module (built with compile() ``options`` on top of the
    case's own), kernel, derivative and arguments, the same in every process
    (seeded): (mod, kernel, df, args, shadows, flat)."""
    args = case.make(np.random.default_rng(0))
    mod = enzyme.compile(path=HERE / "kernels" / case.file, **case.options, **(options or {}))
    kernel = mod[case.kernel]
    kinds = [Duplicated if i in case.dup else Const for i in range(len(args))]
    df = enzyme.derivative(kernel, Reverse, *kinds)
    flat: list = []
    shadows: dict[int, np.ndarray] = {}
    for i, value in enumerate(args):
        flat.append(value)
        if i in case.dup:
            shadows[i] = np.zeros_like(value)
            flat.append(shadows[i])
    return mod, kernel, df, args, shadows, flat


def python_child(name: str) -> None:
    """``run.py --python-child NAME``: time one case through the Python API in
    this fresh process and print the samples and the arrays' page offsets as
    JSON."""
    case = next(c for c in CASES if c.name == name)
    _, kernel, df, args, shadows, flat = case_setup(case)
    offsets = {i: [a.ctypes.data % 4096, shadows[i].ctypes.data % 4096 if i in shadows else 0]
               for i, a in enumerate(args) if isinstance(a, np.ndarray)}
    print(json.dumps({"primal": timings(lambda: kernel(*args), min_time=0.1, max_reps=500),
                      "gradient": timings(lambda: df(*flat), min_time=0.2, max_reps=500),
                      "offsets": offsets}))


def python_samples(case: Case) -> dict:
    out = subprocess.run([sys.executable, __file__, "--python-child", case.name], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


# Each round times the gradient in a fresh Python process and a fresh native
# process: the address-space layout of a process (ASLR places the stack and
# the heap anew each time) moves some kernels by 10-50% (Lennard-Jones'
# scatter into its shadow), so each side gets as many draws as the other, and
# a change in the machine's speed during the run lands on both alike. The
# Python / native ratio is the median of the rounds' ratios. Python / raw cffi
# is measured in this process, call by call.
ROUNDS = 6


def run_case(case: Case, workdir: Path) -> dict:
    t0 = time.perf_counter()
    mod, kernel, df, args, shadows, flat = case_setup(case)
    build_time = time.perf_counter() - t0
    py_in_process, raw_times = paired_timings([lambda: df(*flat), raw_cffi_gradient(df, args, shadows)],
                                              min_time=0.5, max_reps=2000)
    samples: dict[str, list[float]] = {"py_primal": [], "py_gradient": [], "primal": [], "gradient": []}
    over_native = []
    driver = None
    for _ in range(ROUNDS):
        python_round = python_samples(case)
        if driver is None:  # arrays at the page offsets a fresh Python process gives them
            driver = native_driver(case, mod, df, args, python_round["offsets"], workdir)
        reps_p = int(min(500, max(5, 0.1 / statistics.median(python_round["primal"]))))
        reps_g = int(min(500, max(5, 0.2 / statistics.median(python_round["gradient"]))))
        native_round = native_samples(driver, mod, df, reps_p, reps_g)
        over_native.append(statistics.median(python_round["gradient"])
                           / statistics.median(native_round["gradient"]))
        samples["py_primal"] += python_round["primal"]
        samples["py_gradient"] += python_round["gradient"]
        for what, times in native_round.items():
            samples[what] += times
    python_primal, python_gradient = summary(samples["py_primal"]), summary(samples["py_gradient"])
    raw_gradient = summary(raw_times)
    native = {"primal": summary(samples["primal"]), "gradient": summary(samples["gradient"])}
    n_wrt = sum(np.size(args[i]) for i in case.dup)
    result = {"case": case, "build": build_time, "modes": mode_results(case), "python": {"primal": python_primal,
              "gradient": python_gradient}, "raw_cffi": raw_gradient, "native": native, "n_wrt": n_wrt,
              "python_over_native": statistics.median(over_native),
              "python_over_raw": statistics.median(py_in_process) / statistics.median(raw_times),
              "fd": 2 * n_wrt * native["primal"]["median"], "jax": jax_timings(case, args)}
    if case.name == "lennard_jones":
        force = np.zeros_like(args[0])
        result["analytic_forces"] = summary(timings(lambda: mod.lj_forces(args[0], 1000, force)))
        grad = enzyme.grad(kernel)(*args)
        result["forces_max_abs_diff"] = float(np.max(np.abs(-grad - force)))
    return result


# compile() modes compared for every kernel (in-process Python API timings):
# libm's scalar functions (the default before vector math), the default, and
# reassociated floating-point reductions.
MODES = (("vector_math=False", {"vector_math": False}), ("default", {}),
         ("reassociate=True", {"reassociate": True}))


def mode_results(case: Case) -> dict[str, dict]:
    """Each mode's primal and gradient (Python API, this process) and how far
    its value and gradient are from the default mode's (largest difference
    over the largest magnitude)."""
    found: dict[str, dict] = {}
    for label, options in MODES:
        _, kernel, df, args, shadows, flat = case_setup(case, options)
        df(*flat)
        gradient = np.concatenate([shadows[i].ravel() for i in case.dup])
        found[label] = {"value": float(kernel(*args)), "gradient_values": gradient,
                        "primal": summary(timings(lambda k=kernel, a=args: k(*a), min_time=0.3, max_reps=500)),
                        "gradient": summary(timings(lambda d=df, f=flat: d(*f), min_time=0.3, max_reps=500))}
    base = found["default"]
    for entry in found.values():
        entry["value_diff"] = abs(entry["value"] - base["value"]) / max(abs(base["value"]), 1e-300)
        entry["gradient_diff"] = float(np.max(np.abs(entry["gradient_values"] - base["gradient_values"]))
                                       / max(np.max(np.abs(base["gradient_values"])), 1e-300))
    for entry in found.values():
        del entry["gradient_values"]
    return found


VMAP_DRIVER = string.Template(r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
typedef void (*grad_t)(${entry_types});
int main(int argc, char **argv) {
    void *hm = dlopen(argv[1], RTLD_NOW), *hd = dlopen(argv[2], RTLD_NOW);
    if (!hm || !hd) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    grad_t g = (grad_t)dlsym(hd, "${entry}");
    long points = atol(argv[3]); int reps = atoi(argv[4]);
    double *X = malloc(points * 10 * sizeof(double)), *G = malloc(points * 10 * sizeof(double));
    for (long i = 0; i < points * 10; i++) X[i] = (double)((i * 7919) % 1000) / 333.0 - 1.5;
    printf("loop");
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        memset(G, 0, points * 10 * sizeof(double));  /* (vmap's result: a fresh zeroed array) */
        for (long p = 0; p < points; p++) { ${declare} g(${entry_args}); }
        printf(" %.9e", now() - t0);
    }
    printf("\n");
    return G[0] == 12345.678;
}
""")


def vmap_results(workdir: Path, points: int = 10_000) -> dict:
    """Rosenbrock n=10 gradients at ``points`` points: enzyme.vmap on one and
    two threads, a Python loop of enzyme.grad calls, and the same loop in C
    calling the same entry point."""
    mod = enzyme.compile(path=HERE / "kernels" / "rosenbrock.c")
    X = np.random.default_rng(0).uniform(-1.5, 1.5, size=(points, 10))
    gradient = enzyme.grad(mod.rosenbrock)
    out = {"points": points}
    if points <= 10_000:
        out["python_loop"] = summary(timings(lambda: [gradient(x, 10) for x in X], min_time=1.0, max_reps=20))
    for workers in (1, 2):
        batched = enzyme.vmap(gradient, in_axes=(0, None), workers=workers)
        out[f"vmap_{workers}"] = summary(timings(lambda b=batched: b(X, 10), min_time=1.0, max_reps=200))
    df = enzyme.derivative(mod.rosenbrock, Reverse, Duplicated, Const)
    wrapper = generate_derivative(df.spec)
    entry_args, declare = [], ""
    for param in wrapper.params:
        if param.role is Role.PRIMAL:
            entry_args.append("X + 10 * p" if param.arg == 0 else "10")
        elif param.role is Role.SHADOW:
            entry_args.append("G + 10 * p")
        elif param.role is Role.SEED:
            entry_args.append("1.0")
        else:
            declare = "double cell = 0.0;"
            entry_args.append("&cell")
    source = VMAP_DRIVER.substitute({"entry_types": ", ".join(p.c_type for p in wrapper.params),
                                     "entry": wrapper.entry, "entry_args": ", ".join(entry_args),
                                     "declare": declare})
    c_file, exe = workdir / "vmap_driver.c", workdir / "vmap_driver"
    c_file.write_text(source)
    subprocess.run([enzyme.toolchain.resolve().clang, "-O2", str(c_file), "-o", str(exe), "-ldl"], check=True)
    line = subprocess.run([str(exe), mod._artifact.so_path, df._library.key[0], str(points), "50"],
                          check=True, capture_output=True, text=True).stdout.split()
    out["c_loop"] = summary([float(t) for t in line[1:]])
    return out


def scaling_source(size: int) -> str:
    """A straight-line kernel of ``size`` dependent statements over two 64-element arrays."""
    lines = ["#include <math.h>", "double gen(const double *x, const double *y) {",
             "    double a0 = x[0];"]
    for k in range(1, size + 1):
        if k % 10 == 0:
            lines.append(f"    double a{k} = sin(a{k - 1}) * y[{(k * 7) % 64}] + x[{k % 64}];")
        else:
            lines.append(f"    double a{k} = a{k - 1} * x[{k % 64}] + y[{(k * 7) % 64}] * 0.5;")
    lines += [f"    return a{size};", "}"]
    return "\n".join(lines) + "\n"


def _time_compile(source: str, split_long_blocks: bool) -> float:
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("ENZYME_CACHE_DIR")
        os.environ["ENZYME_CACHE_DIR"] = cache
        try:
            t0 = time.perf_counter()
            mod = enzyme.compile(source, split_long_blocks=split_long_blocks)
            x, y = np.full(64, 0.999), np.full(64, 0.01)
            enzyme.autodiff(Reverse, mod.gen, Duplicated(x, np.zeros(64)), Duplicated(y, np.zeros(64)))
            elapsed = time.perf_counter() - t0
            mod.close()
            return elapsed
        finally:
            if old is None:
                os.environ.pop("ENZYME_CACHE_DIR", None)
            else:
                os.environ["ENZYME_CACHE_DIR"] = old


def compile_scaling(sizes: list[int], whole_up_to: int) -> list[tuple[int, float, float | None]]:
    """(statements, seconds with the long-block pass, seconds without it or
    None past ``whole_up_to``): compile + first reverse derivative, cold cache."""
    points = []
    for size in sizes:
        source = scaling_source(size)
        split = _time_compile(source, True)
        whole = _time_compile(source, False) if size <= whole_up_to else None
        points.append((size, split, whole))
        print(f"  compile scaling: {size} statements {split:.2f} s"
              + (f" (without the long-block pass {whole:.2f} s)" if whole is not None else ""), flush=True)
    return points


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e9:.0f} ns"


def _span(s: dict) -> str:
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def write_report(results: list[dict], lat: dict, overhead: dict, scaling: list, path: Path,
                 chart: Path, first: dict | None = None, vms: list | None = None,
                 accuracy: list | None = None) -> None:
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
               f"Python {platform.python_version()}, numpy {np.__version__}, "
               f"enzyme-ffi {enzyme.__version__}, {enzyme.toolchain.resolve().identity}")
    jax_version = next((r["jax"]["version"] for r in results if r["jax"]), None)
    lines = ["# Benchmarks", "",
             "Written by `bash benchmarks/run.sh` (benchmarks/run.py); every number below comes from "
             "one run on one machine. Times are medians over repeated calls, with (min-max). "
             "Machines here are noisy: compare the ratios, which are taken within the run.", "",
             f"Machine: {machine}. JAX: {jax_version or 'not installed'}"
             f"{' (CPU, float64)' if jax_version else ''}.", "",
             "## Gradients", "",
             "Native C calls the same generated gradient entry point the Python API calls, on "
             "arrays at the same page offsets. Each of 6 rounds times the Python API in a fresh "
             "Python process and then the native driver in a fresh process (a process's address-"
             "space layout moves some kernels by 10-50%, so both sides get the same number of "
             "draws); times pool the rounds' samples and Python / native is the median of the "
             "rounds' ratios. Python / raw cffi compares, call by call in one process, the API "
             "with a cffi call of the same entry point with pointers converted once: the Python "
             "layer's own cost. FD is central finite differences, "
             "2 n evaluations of the native primal.", "",
             "| kernel | native primal | native gradient | grad / primal | Python gradient | "
             "Python / native | Python / raw cffi | JAX jit(grad) | JAX / Enzyme | FD (2n primals) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        nat, py, jx = r["native"], r["python"], r["jax"]
        ratio = nat["gradient"]["median"] / nat["primal"]["median"]
        jax_cell = _span(jx["gradient"]) if jx else "n/a"
        jax_ratio = f"{jx['gradient']['median'] / nat['gradient']['median']:.2f}x" if jx else "n/a"
        lines.append(f"| {r['case'].title} | {_span(nat['primal'])} | {_span(nat['gradient'])} | "
                     f"{ratio:.2f} | {_span(py['gradient'])} | {r['python_over_native']:.3f} | "
                     f"{r['python_over_raw']:.3f} | {jax_cell} | "
                     f"{jax_ratio} | {_fmt(r['fd'])} |")
    lines += ["", "## Modes", "",
              "The same kernels built three ways, timed through the Python API in one process: "
              "`vector_math=False` (libm's scalar functions: the default before vector math), the "
              "default (`vector_math=True`: libmvec in vectorised loops after Enzyme) and "
              "`reassociate=True` (with vector math; floating-point reductions may be reordered). "
              "The last two columns: the largest difference of the value and of the gradient from "
              "the default's, over the largest magnitude. JAX / Enzyme uses the JAX time of the "
              "table above.", "",
              "| kernel | mode | primal | gradient | grad / primal | JAX / Enzyme | value vs default "
              "| gradient vs default |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for label, m in r.get("modes", {}).items():
            ratio = m["gradient"]["median"] / m["primal"]["median"]
            jx = r["jax"]
            jax_ratio = f"{jx['gradient']['median'] / m['gradient']['median']:.2f}x" if jx else "n/a"
            lines.append(f"| {r['case'].title} | {label} | {_span(m['primal'])} | {_span(m['gradient'])} | "
                         f"{ratio:.2f} | {jax_ratio} | {m['value_diff']:.1e} | {m['gradient_diff']:.1e} |")
    if accuracy:
        lines += ["", "### Vector math accuracy", "",
                  "Each libm function libmvec covers, in a C loop built with and without vector math, "
                  "over 10^6 points of a typical domain (benchmarks/vector_math_accuracy.py): the "
                  "largest difference in units in the last place of the scalar result, the largest "
                  "relative difference over normal results, and how many results differ at all.", "",
                  "| function | max ulp | max rel. diff | results differing |", "|---|---|---|---|"]
        lines += [f"| {a['function']} | {a['max_ulp']:.0f} | {a['max_rel']:.1e} | {100 * a['differ']:.1f}% |"
                  for a in accuracy]
    if vms:
        lines += ["", "## Many small calls: Rosenbrock n = 10 gradients at many points", "",
                  "`enzyme.vmap(enzyme.grad(mod.rosenbrock), in_axes=(0, None))(X, 10)` against a "
                  "Python loop of `enzyme.grad` calls and the same loop in C calling the same entry "
                  "point directly (zeroing the gradients first, as vmap's fresh result is).", "",
                  "| points | how | time | per point | / C loop |", "|---|---|---|---|---|"]
        for vm in vms:
            base = vm["c_loop"]["median"]
            for key, label in (("c_loop", "C loop"), ("vmap_1", "enzyme.vmap, workers=1"),
                               ("vmap_2", "enzyme.vmap, workers=2"), ("python_loop", "Python loop of grad")):
                if key in vm:
                    t = vm[key]["median"]
                    lines.append(f"| {vm['points']:,} | {label} | {_span(vm[key])} | {_fmt(t / vm['points'])} | "
                                 f"{t / base:.2f} |")
    lines += ["", "## Targets", ""]
    for r in results:
        nat = r["native"]
        if nat["gradient"]["median"] >= 1e-3:
            ok = r["python_over_native"] <= 1.05
            lines.append(f"- Python within 1.05x of native ({r['case'].title}): "
                         f"{r['python_over_native']:.3f}x {'met' if ok else 'NOT met'} "
                         f"(Python / raw cffi in the same process: {r['python_over_raw']:.3f}x)")
    for r in results:
        if r["case"].cheap_bound:
            ratio = r["native"]["gradient"]["median"] / r["native"]["primal"]["median"]
            lines.append(f"- gradient / primal <= 5 ({r['case'].title}): {ratio:.2f} "
                         f"{'met' if ratio <= 5 else 'NOT met'}")
    lv = next((r for r in results if r["case"].name == "lotka_volterra"), None)
    if lv and lv["jax"]:
        speedup = lv["jax"]["gradient"]["median"] / lv["python"]["gradient"]["median"]
        lines.append(f"- at least 3x faster than JAX on Lotka-Volterra (Python API): "
                     f"{speedup:.2f}x {'met' if speedup >= 3 else 'NOT met'}")
    derivative_call = overhead["enzyme.derivative(...) callable"]["median"]
    lines.append(f"- per-call overhead <= 1.5 us (derivative call, 3 small arrays): "
                 f"{_fmt(derivative_call)} {'met' if derivative_call <= 1.5e-6 else 'NOT met'}")
    for key, limit, label in (("cold", 0.6, "cold compile + first derivative <= 0.6 s"),
                              ("warm", 0.03, "warm disk-cache load <= 30 ms"),
                              ("repeat", 20e-6, "in-process repeat <= 20 us")):
        value = lat[key]["median"]
        lines.append(f"- {label}: {_fmt(value)} {'met' if value <= limit else 'NOT met'}")
    ljr = next((r for r in results if r["case"].name == "lennard_jones"), None)
    if ljr:
        lines += ["", "## Lennard-Jones: Enzyme forces vs hand-written analytic forces", "",
                  f"Analytic forces (C, through the Python API): {_span(ljr['analytic_forces'])}; "
                  f"Enzyme gradient: {_span(ljr['python']['gradient'])} "
                  f"({ljr['python']['gradient']['median'] / ljr['analytic_forces']['median']:.2f}x); "
                  f"max |F_enzyme - F_analytic| = {ljr['forces_max_abs_diff']:.2e}."]
    lines += ["", "## Per-call overhead (reverse derivative, three 3-element arrays and an int)", "",
              "| call | time | ratio |", "|---|---|---|"]
    base = None
    for name, s in overhead.items():
        base = base or s["median"]
        lines.append(f"| {name} | {_span(s)} | {s['median'] / base:.2f} |")
    if first:
        lines += [""] + first_use.report_lines(first, {c.name: c.title for c in CASES})
    lines += ["", "## Compile latency (20-line kernel, reverse derivative)", "",
              f"- import numpy + enzyme in a new process: {_span(lat['import'])} (not included below)",
              f"- cold (new process, empty cache, toolchain probe included): {_span(lat['cold'])}",
              f"- warm (new process, disk cache): {_span(lat['warm'])}",
              f"- in-process repeat (compile + autodiff): {_span(lat['repeat'])}", "",
              "## Compile time of generated straight-line kernels", "",
              "Compile + first reverse derivative, cold cache. The long-block pass "
              "(`split_long_blocks=True`, the default) outlines 32-instruction pieces of long "
              "basic blocks before Enzyme runs; the last column turns it off.", "",
              "| statements | default | per statement | split_long_blocks=False |", "|---|---|---|---|"]
    lines += [f"| {size} | {_fmt(split)} | {_fmt(split / size)} | "
              f"{_fmt(whole) if whole is not None else 'not run'} |" for size, split, whole in scaling]
    big = [(size, split) for size, split, _ in scaling if size >= 1000]
    if len(big) >= 2:
        exponent = np.polyfit(np.log([b[0] for b in big]), np.log([b[1] for b in big]), 1)[0]
        lines += ["", f"Least-squares growth from 1,000 statements up: time ~ statements^{exponent:.2f} "
                  "(1.00 is linear)."]
    whole = [(size, w) for size, _, w in scaling if w is not None]
    if len(whole) >= 2:
        exponent = np.log(whole[-1][1] / whole[-2][1]) / np.log(whole[-1][0] / whole[-2][0])
        lines += [f"Without the pass, between {whole[-2][0]} and {whole[-1][0]} statements: "
                  f"time ~ statements^{exponent:.2f}."]
    lines += ["", f"![ratios]({chart.name})", ""]
    path.write_text("\n".join(lines))
    _chart(results, chart)


def _chart(results: list[dict], chart: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [r["case"].name for r in results]
    grad_primal = [r["native"]["gradient"]["median"] / r["native"]["primal"]["median"] for r in results]
    python_native = [r["python_over_native"] for r in results]
    jax_enzyme = [r["jax"]["gradient"]["median"] / r["native"]["gradient"]["median"] if r["jax"]
                  else np.nan for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    ax.bar(x - 0.27, grad_primal, 0.27, label="gradient / primal (native)")
    ax.bar(x, python_native, 0.27, label="Python API / native gradient")
    ax.bar(x + 0.27, jax_enzyme, 0.27, label="JAX jit(grad) / Enzyme gradient")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(5.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("ratio (log scale)")
    ax.set_title("enzyme-ffi: ratios measured in one run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(chart, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE.parent / "BENCHMARKS.md"))
    parser.add_argument("--scaling", default="100,300,1000,2000,5000,10000",
                        help="statement counts for the compile-time curve")
    parser.add_argument("--whole-up-to", type=int, default=1000,
                        help="also time sizes up to this without the long-block pass")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--python-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_child:
        python_child(args.python_child)
        return
    selected = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in selected:
            print(f"{case.name} ...", flush=True)
            results.append(run_case(case, Path(tmp)))
            r = results[-1]
            print(f"  native primal {_fmt(r['native']['primal']['median'])}, native gradient "
                  f"{_fmt(r['native']['gradient']['median'])}, python gradient "
                  f"{_fmt(r['python']['gradient']['median'])}"
                  + (f", jax {_fmt(r['jax']['gradient']['median'])}" if r["jax"] else ""), flush=True)
    print("latency ...", flush=True)
    lat = latency.measure_latency()
    overhead = latency.measure_overhead()
    print("first-use check ...", flush=True)
    first = first_use.measure([c.name for c in selected])
    scaling = compile_scaling([int(s) for s in args.scaling.split(",") if s], args.whole_up_to)
    print("vmap and vector math accuracy ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        vms = [vmap_results(Path(tmp), points) for points in (10_000, 100_000)]
    accuracy = vector_math_accuracy.measure()
    out = Path(args.out)
    write_report(results, lat, overhead, scaling, out, HERE / "ratios.png", first, vms, accuracy)
    print(f"wrote {out} and {HERE / 'ratios.png'}")


if __name__ == "__main__":
    main()
