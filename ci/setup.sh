#!/usr/bin/env bash
# Set up everything enzyme-ffi needs on a fresh Debian 12 / Ubuntu machine:
# Debian's clang-15/llvm-15, a .venv with the package (editable) and its test
# and example dependencies, and the pinned Enzyme plugin. Safe to run again;
# fast when nothing changed. Sourced by ci/demo.sh and ci/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# llvm-15-dev: headers for the long-block opt pass (native/split_blocks.cpp)
APT_PACKAGES=(clang-15 libclang1-15 llvm-15 llvm-15-dev libomp-15-dev)
need_apt=()
for tool in clang-15 opt-15 llvm-link-15; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=("${APT_PACKAGES[@]}")
done
for file in /usr/lib/llvm-15/lib/libLLVM-15.so.1 /usr/lib/llvm-15/lib/libclang.so.1 /usr/lib/llvm-15/lib/cmake/llvm/LLVMConfig.cmake; do
  [ -e "$file" ] || need_apt=("${APT_PACKAGES[@]}")
done
# OpenBLAS (CBLAS headers and library) for kernels calling BLAS (tests/test_blas.py)
[ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || need_apt+=(libopenblas-dev)
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then need_apt+=(python3 python3-venv python3-pip python3-dev);
else
  "$PY" -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv python3-pip)
  # the C fast path (native/fastcall.c) is built against Python's headers
  "$PY" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
    >/dev/null 2>&1 || need_apt+=(python3-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "error: need root or sudo to install: ${need_apt[*]}" >&2; exit 1; fi
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
# The native parts need a C and a C++ compiler; clang-15 is one when the
# system has no cc/c++.
command -v cc >/dev/null 2>&1 || export CC=clang-15
command -v c++ >/dev/null 2>&1 || export CXX=clang++-15
stamp=".venv/.enzyme-ffi-installed"
want="$(cat pyproject.toml CMakeLists.txt native/*.c native/*.cpp | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VPY" -c "import enzyme" >/dev/null 2>&1; then
  echo "==> pip install -e .[test,examples,docs]"
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  "$VPY" -m pip install -q -e ".[test,examples,docs]" ruff
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--bridges" ] && ! "$VPY" -c "import torch, jax, distributed, joblib" >/dev/null 2>&1; then
  # The bridges' packages, for their tests. torch first and pinned: 2.13.0
  # is a CPU build (a file on this workplace's machines); an open range
  # would let pip pick a CUDA build of several GB.
  echo "==> pip install torch==2.13.0 and .[jax,torch,dask]"
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[test,examples,docs,jax,torch,dask]"
fi

echo "==> Enzyme plugin"
"$VPY" -m enzyme install-toolchain --no-apt
