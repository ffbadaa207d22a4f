#!/usr/bin/env bash
# One command: set up (apt packages, .venv, package, Enzyme plugin) and run the
# main example: fit a legacy-style C Lotka-Volterra model with Enzyme gradients.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/ci/setup.sh"
cd "$ROOT"
exec .venv/bin/python examples/fit_lotka_volterra.py "$@"
