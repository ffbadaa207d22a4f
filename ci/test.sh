#!/usr/bin/env bash
# One command: set up (apt packages, .venv, package, Enzyme plugin) and run the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/ci/setup.sh" --bridges
cd "$ROOT"
exec .venv/bin/python -m pytest tests python/enzyme --doctest-modules --durations=15 "$@"
