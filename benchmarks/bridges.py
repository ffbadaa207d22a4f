"""Per-call cost of the framework bridges against calling the kernel directly.

The Rosenbrock gradient (n=10 and n=100,000), medians over repeated calls:

* ``enzyme.grad`` on numpy arrays (the direct call);
* ``enzyme.jax.function`` under ``jax.jit(jax.grad(...))``, through XLA
  custom calls (the default) and through Python callbacks
  (``ENZYME_JAX_CALLBACKS=1``, measured in a child process);
* the same function in ``jax.numpy`` under ``jax.jit(jax.grad(...))``;
* ``enzyme.torch.function`` forward + backward on CPU tensors;
* ``enzyme.scipy.Minimize``'s ``jac``.

Run: ``.venv/bin/python benchmarks/bridges.py`` (needs the ``jax`` and
``torch`` extras; a missing one is reported and skipped). Prints a table.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

SOURCE = """
double rosen(const double *x, int n) {
    double s = 0;
    for (int i = 0; i + 1 < n; i++) { double a = 1 - x[i], b = x[i + 1] - x[i] * x[i]; s += a * a + 100 * b * b; }
    return s; }
"""
SIZES = (10, 100_000)


def median_us(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def repeats(n: int) -> int:
    return 3000 if n <= 10 else 200


def jax_rows() -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    import enzyme
    import enzyme.jax
    jax.config.update("jax_enable_x64", True)
    mod = enzyme.compile(SOURCE)
    f = enzyme.jax.function(mod.rosen)

    def reference(x):
        return jnp.sum((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2)

    ours = jax.jit(jax.grad(f), static_argnums=1)
    theirs = jax.jit(jax.grad(reference))
    rows = {}
    for n in SIZES:
        x = jnp.linspace(-1.0, 2.0, n)
        rows[f"jax.jit(grad) enzyme n={n}"] = median_us(lambda x=x, n=n: ours(x, n).block_until_ready(), repeats(n))
        rows[f"jax.jit(grad) jax.numpy n={n}"] = median_us(lambda x=x: theirs(x).block_until_ready(), repeats(n))
    return rows


def direct_rows() -> dict[str, float]:
    import numpy as np

    import enzyme
    mod = enzyme.compile(SOURCE)
    grad = enzyme.grad(mod.rosen)
    rows = {}
    for n in SIZES:
        x = np.linspace(-1.0, 2.0, n)
        rows[f"enzyme.grad n={n}"] = median_us(lambda x=x, n=n: grad(x, n), repeats(n))
    try:
        import torch

        import enzyme.torch
    except ImportError:
        return rows
    f = enzyme.torch.function(mod.rosen)
    for n in SIZES:
        x = torch.linspace(-1.0, 2.0, n, dtype=torch.float64, requires_grad=True)

        def step(x=x, n=n):
            x.grad = None
            f(x, n).backward()
        rows[f"torch forward+backward n={n}"] = median_us(step, repeats(n))
    try:
        import enzyme.scipy
        problem = enzyme.scipy.Minimize(mod.rosen, wrt="x")
    except Exception:
        return rows
    for n in SIZES:
        x = np.linspace(-1.0, 2.0, n)
        rows[f"scipy Minimize.jac n={n}"] = median_us(lambda x=x, n=n: problem.jac(x, n), repeats(n))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--jax-child":
        print(json.dumps(jax_rows()))
        return
    rows = direct_rows()
    for label, env in (("custom calls", {}), ("callbacks", {"ENZYME_JAX_CALLBACKS": "1"})):
        done = subprocess.run([sys.executable, __file__, "--jax-child"], capture_output=True, text=True,
                              env={**os.environ, **env})
        if done.returncode != 0:
            print(f"JAX ({label}) not measured: {done.stderr.strip().splitlines()[-1:]}")
            continue
        for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
            rows[key.replace("enzyme", f"enzyme ({label})") if "jax.numpy" not in key else key] = value
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    width = max(map(len, rows))
    for key in sorted(rows, key=lambda k: (int(k.rsplit("=", 1)[1]), k)):
        print(f"{key:<{width}}  {rows[key]:10.1f} us")


if __name__ == "__main__":
    main()
