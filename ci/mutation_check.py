"""Does the test suite notice wrong derivatives? Run the behaviour tests once
per mutation of the generated derivative code (ci/mutation_plugin.py) and
report how many tests fail under each; a mutation no test notices is a hole
in the suite.

    .venv/bin/python ci/mutation_check.py [--only NAME] [pytest selection ...]

Each run uses its own compile cache (the conftest gives every session one),
so mutated code never reaches the user's cache.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))

DEFAULT_SELECTION = [
    "tests/test_derivatives.py", "tests/test_fuzz.py", "tests/test_batch_higher_order.py",
    "tests/test_globals.py", "tests/test_structs.py", "tests/test_split_mode.py",
    "tests/test_pipeline_regressions.py", "tests/test_custom_rules.py", "tests/test_readme.py",
    "tests/test_random_programs.py",
    # the conformance cases' C-side and Python-API ways (the reference chain
    # way runs no generated code)
    "tests/conformance/test_conformance.py::test_conformance", "-k", "not plain",
]


def run(selection: list[str], mutation: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "ci"),
                                                                     os.environ.get("PYTHONPATH")])))
    if mutation:
        env["ENZYME_MUTATION"] = mutation
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "mutation_plugin", "-p",
                           "no:cacheprovider", "--no-header", "-rfE", *selection],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|xfailed|xpassed)",
                                               done.stdout.splitlines()[-1] if done.stdout else "")}
    failed_files: dict[str, int] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"(FAILED|ERROR) (tests/[^:]+)::", line)
        if match:
            failed_files[match.group(2)] = failed_files.get(match.group(2), 0) + 1
    return {"counts": counts, "by_file": failed_files, "seconds": time.monotonic() - start}


def main() -> None:
    from mutation_plugin import MUTATIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(MUTATIONS))
    parser.add_argument("selection", nargs="*")
    options = parser.parse_args()
    selection = options.selection or DEFAULT_SELECTION
    baseline = run(selection, "")
    print(f"no mutation: {baseline['counts']} ({baseline['seconds']:.0f} s)")
    for name in options.only or sorted(MUTATIONS):
        result = run(selection, name)
        failing = result["counts"].get("failed", 0) + result["counts"].get("error", 0) \
            + result["counts"].get("errors", 0) + result["counts"].get("xpassed", 0)
        print(f"{name}: {failing} tests fail ({result['seconds']:.0f} s)")
        for path, count in sorted(result["by_file"].items()):
            print(f"    {count:4d}  {path}")


if __name__ == "__main__":
    main()
