#!/usr/bin/env bash
# One command for the benchmark suite: sets up everything (as ci/setup.sh),
# a separate .venv-bench with JAX (JAX is never installed in the test venv),
# then writes BENCHMARKS.md and benchmarks/ratios.png. Extra arguments go to
# benchmarks/run.py (e.g. --only lotka_volterra --scaling 100,1000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/ci/setup.sh"
cd "$ROOT"
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
stamp=".venv-bench/.enzyme-ffi-installed"
want="$(cat pyproject.toml CMakeLists.txt native/*.c native/*.cpp | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || ! .venv-bench/bin/python -c "import enzyme, jax, matplotlib, scipy" >/dev/null 2>&1; then
  echo "==> pip install -e .[examples] jax (benchmark venv)"
  .venv-bench/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv-bench/bin/python -m pip install -q -e ".[examples]" jax
  echo "$want" > "$stamp"
fi
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv-bench/bin/python benchmarks/run.py "$@"
