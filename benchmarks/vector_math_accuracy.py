"""Accuracy of compile(vector_math=True) against scalar libm.

Each libm function libmvec covers is applied in a C loop, compiled once with
vector math (the default) and once without; the outputs are compared in
units in the last place (ulp: the difference over numpy's spacing of the
scalar result) and as relative error, over 10^6 points of a typical domain
per function, in double and in float. Run alone:
``.venv/bin/python benchmarks/vector_math_accuracy.py``; benchmarks/run.py
puts the table in BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

import enzyme

# function -> (low, high) of its inputs (two-argument functions take a pair)
DOMAINS = {
    "acos": (-1, 1), "acosh": (1, 100), "asin": (-1, 1), "asinh": (-100, 100), "atan": (-100, 100),
    "atanh": (-0.999, 0.999), "cbrt": (-1000, 1000), "cos": (-100, 100), "cosh": (-20, 20),
    "erf": (-6, 6), "erfc": (-6, 26), "exp": (-700, 700), "exp10": (-300, 300), "exp2": (-1000, 1000),
    "expm1": (-50, 50), "log": (1e-300, 1e300), "log10": (1e-300, 1e300), "log1p": (-0.999, 1e6),
    "log2": (1e-300, 1e300), "sin": (-100, 100), "sinh": (-20, 20), "tan": (-100, 100),
    "tanh": (-20, 20), "atan2": (-100, 100), "hypot": (-1e10, 1e10), "pow": (0.01, 100),
}
TWO = ("atan2", "hypot", "pow")
FLOAT_DOMAINS = {"exp": (-80, 80), "exp10": (-35, 35), "exp2": (-120, 120), "cosh": (-80, 80),
                 "sinh": (-80, 80), "log": (1e-30, 1e30), "log10": (1e-30, 1e30), "log2": (1e-30, 1e30),
                 "hypot": (-1e15, 1e15)}


def source(functions: list[str]) -> str:
    lines = ["#define _GNU_SOURCE", "#include <math.h>"]
    for f in functions:
        for t, suffix in (("double", ""), ("float", "f")):
            args = "x[i], y[i]" if f in TWO else "x[i]"
            lines.append(f"void apply_{f}{suffix}(const {t} *x, const {t} *y, {t} *out, int n) "
                         f"{{ for (int i = 0; i < n; i++) out[i] = {f}{suffix}({args}); }}")
    return "\n".join(lines)


def measure(n: int = 1_000_000, seed: int = 0) -> list[dict]:
    functions = list(DOMAINS)
    text = source(functions)
    vector = enzyme.compile(text, vector_math=True, verify=False)
    scalar = enzyme.compile(text, vector_math=False, verify=False)
    rng = np.random.default_rng(seed)
    rows = []
    for f in functions:
        for dtype, suffix in ((np.float64, ""), (np.float32, "f")):
            low, high = FLOAT_DOMAINS.get(f, DOMAINS[f]) if suffix else DOMAINS[f]
            if low > 0 and high / low > 1e6:  # log-uniform over wide positive ranges
                x = np.exp(rng.uniform(np.log(low), np.log(high), n)).astype(dtype)
            else:
                x = rng.uniform(low, high, n).astype(dtype)
            y = rng.uniform(*((0.5, 3.0) if f == "pow" else (low, high)), n).astype(dtype)
            outs = []
            for mod in (scalar, vector):
                out = np.zeros(n, dtype)
                getattr(mod, f"apply_{f}{suffix}")(x, y, out, n)
                outs.append(out)
            reference, found = outs
            finite = np.isfinite(reference) & np.isfinite(found)
            ulp = np.abs(found[finite].astype(np.float64) - reference[finite]) / np.spacing(
                np.abs(reference[finite])).astype(np.float64)
            # (relative error of normal results: a subnormal's is not meaningful)
            nonzero = finite & (np.abs(reference) >= np.finfo(dtype).tiny)
            rel = np.abs((found[nonzero].astype(np.float64) - reference[nonzero]) / reference[nonzero])
            rows.append({"function": f + suffix, "max_ulp": float(ulp.max(initial=0)),
                         "max_rel": float(rel.max(initial=0)),
                         "differ": float(np.mean(found[finite] != reference[finite])),
                         "nonfinite_mismatch": int(np.sum(np.isfinite(reference) != np.isfinite(found)))})
    return rows


def main() -> None:
    rows = measure()
    print(f"{'function':10s} {'max ulp':>8s} {'max rel err':>12s} {'results differing':>18s}")
    for r in rows:
        print(f"{r['function']:10s} {r['max_ulp']:8.2f} {r['max_rel']:12.2e} {100 * r['differ']:17.1f}%"
              + (f"  ({r['nonfinite_mismatch']} non-finite mismatches)" if r["nonfinite_mismatch"] else ""))


if __name__ == "__main__":
    main()
