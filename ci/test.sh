#!/usr/bin/env bash
# One command: set up (apt packages, .venv, package, Enzyme plugin), run the
# tests, then build and try the wheels.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/ci/setup.sh" --bridges
cd "$ROOT"
status=0
.venv/bin/python -m pytest tests python/enzyme --doctest-modules --durations=15 "$@" || status=$?
# The whole run (no pytest arguments) also builds the wheels and tries each
# one on every CPython 3.9-3.13 found (ci/wheel.sh).
if [ $# -eq 0 ]; then bash ci/wheel.sh || status=1; fi
exit $status
