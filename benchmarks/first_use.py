"""Cost of the first-use check on the benchmark kernels (issue 16).

Each sample is a fresh process that compiles the case's module, builds its
reverse derivative and calls it once (timed together), with ``ENZYME_VERIFY``
on or off, from a cold cache (nothing built) and from a warm one (every
library built before). With the check on, the forward derivative it is
checked against is built in the background while the reverse one builds (2
cores here), then loaded; the first call forks a child that runs the test.
Extra builds are counted as tool runs (``enzyme.build.subprocess_runs``).
Later calls cost nothing (the check runs once per entry point and process).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
import run
from enzyme import build
case = next(c for c in run.CASES if c.name == sys.argv[1])
t0 = time.perf_counter()
_, _, df, _, _, flat = run.case_setup(case)
df(*flat)
t1 = time.perf_counter()
runs = build.subprocess_runs
df(*flat)
t2 = time.perf_counter()
print(json.dumps({"first": t1 - t0, "second": t2 - t1, "tool_runs": runs}))
"""


def _sample(name: str, cache: str, verify: bool) -> dict:
    env = dict(os.environ, ENZYME_CACHE_DIR=cache, ENZYME_VERIFY="1" if verify else "0")
    done = subprocess.run([sys.executable, "-c", CHILD, name, str(HERE)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(names: list[str], runs: int = 3) -> dict[str, dict]:
    """Per case: medians of the first call's time with and without the
    check, cold and warm, and the extra tool runs of a cold first call."""
    out = {}
    for name in names:
        cold_on, cold_off, warm_on, warm_off = [], [], [], []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as cache:
                cold_on.append(_sample(name, cache, True))
                warm_on.append(_sample(name, cache, True))
            with tempfile.TemporaryDirectory() as cache:
                cold_off.append(_sample(name, cache, False))
                warm_off.append(_sample(name, cache, False))

        def med(samples: list[dict], key: str) -> float:
            return statistics.median(s[key] for s in samples)

        out[name] = {
            "cold_on": med(cold_on, "first"), "cold_off": med(cold_off, "first"),
            "warm_on": med(warm_on, "first"), "warm_off": med(warm_off, "first"),
            "second_on": med(warm_on, "second"), "second_off": med(warm_off, "second"),
            "extra_tool_runs": med(cold_on, "tool_runs") - med(cold_off, "tool_runs"),
        }
    return out


def report_lines(results: dict[str, dict], titles: dict[str, str]) -> list[str]:
    def ms(x: float) -> str:
        if x < 1e-3:
            return f"{x * 1e6:.0f} us"
        return f"{x * 1e3:.1f} ms" if x < 10 else f"{x:.1f} s"

    lines = ["## First-use check (the derivative's first call, `compile(verify=True)`, the default)", "",
             "Compile + derivative build + first call, in a fresh process per sample, medians of 3; "
             "cold: empty cache, warm: everything built. Extra tool runs: the clang/opt runs of the "
             "forward derivative the check builds (in the background, next to the reverse one). "
             "The second call is the same with the check on or off.", "",
             "| case | cold: compile + first call, check on / off | warm, on / off | extra tool runs | "
             "second call, on / off |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {titles.get(name, name)} | {ms(r['cold_on'])} / {ms(r['cold_off'])} | "
                     f"{ms(r['warm_on'])} / {ms(r['warm_off'])} | {r['extra_tool_runs']:.0f} | "
                     f"{ms(r['second_on'])} / {ms(r['second_off'])} |")
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import run

    names = sys.argv[1].split(",") if len(sys.argv) > 1 else [c.name for c in run.CASES]
    res = measure(names)
    print(json.dumps(res, indent=1))
    print("\n".join(report_lines(res, {c.name: c.title for c in run.CASES})))
