"""The compile cache: in-process hits run no subprocess, a new process finds
entries on disk, header edits and corrupted entries trigger rebuilds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import enzyme
from enzyme import Active, Duplicated, Reverse, autodiff, build

KERNEL = """
double cached_loss(const double *w, const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (w[i] * x[i] - 1.0) * (w[i] * x[i] - 1.0);
    return s;
}
"""


def _forbid_subprocesses(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_second_request_in_process_runs_no_subprocess(cc, monkeypatch):
    mod = cc(KERNEL)
    w, x = np.ones(4), np.arange(4.0)
    dw = np.zeros(4)
    autodiff(Reverse, mod.cached_loss, Duplicated(w, dw), x, 4)
    runs = build.subprocess_runs
    _forbid_subprocesses(monkeypatch)
    mod2 = cc(KERNEL)
    dw2 = np.zeros(4)
    autodiff(Reverse, mod2.cached_loss, Duplicated(w, dw2), x, 4)
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_allclose(dw, 2 * (w * x - 1) * x)
    assert build.subprocess_runs == runs


def _run_child(code: str, cache: str) -> subprocess.CompletedProcess:
    # ENZYME_VERIFY=0: these children count the builds of what they ask for;
    # the first-use check's own builds are tested in test_verify.py
    env = dict(os.environ, ENZYME_CACHE_DIR=cache, ENZYME_VERIFY="0")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


# The start of every child script: optionally forbid subprocesses (a cache
# hit must start none), then compile the kernel.
CHILD_PRELUDE = """
import subprocess, numpy as np, enzyme
from enzyme import build, Reverse, Forward, ReverseWithPrimal, Duplicated, Const, Active, autodiff
src = {src!r}
if {forbid}:
    def refuse(*a, **k):
        raise AssertionError("subprocess started")
    subprocess.run = subprocess.Popen = refuse
mod = enzyme.compile(src)"""

CHILD = CHILD_PRELUDE + """
w, x, dw = np.ones(3), np.arange(3.0), np.zeros(3)
autodiff(Reverse, mod.cached_loss, Duplicated(w, dw), x, 3)
print(list(dw), build.subprocess_runs)
"""


def test_new_process_finds_the_cache_on_disk(tc, tmp_path):
    cache = str(tmp_path / "cache")
    first = _run_child(CHILD.format(src=KERNEL, forbid=False), cache)
    assert first.returncode == 0, first.stderr
    second = _run_child(CHILD.format(src=KERNEL, forbid=True), cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split("]")[0] == first.stdout.split("]")[0]
    assert second.stdout.strip().endswith(" 0")
    mode = stat.S_IMODE(os.stat(cache).st_mode)
    assert mode == 0o700
    leftovers = [p for p in os.listdir(cache) if p.startswith("build-")]
    assert leftovers == []  # temporary build dirs are removed


def test_corrupted_entries_are_rebuilt_not_loaded(tc, tmp_path):
    cache = tmp_path / "cache"
    first = _run_child(CHILD.format(src=KERNEL, forbid=False), str(cache))
    assert first.returncode == 0, first.stderr
    for so in list((cache / "modules").glob("*.so")) + list((cache / "derivatives").glob("*.so")):
        so.write_bytes(b"\x7fELF garbage" * 10)
    again = _run_child(CHILD.format(src=KERNEL, forbid=False), str(cache))
    assert again.returncode == 0, again.stderr
    assert again.stdout.split("]")[0] == first.stdout.split("]")[0]
    assert not again.stdout.strip().endswith(" 0")  # it rebuilt
    # a truncated manifest, or valid JSON of the wrong shape, is also just a miss
    for i, manifest in enumerate(sorted((cache / "modules").glob("*.json"))
                                 + sorted((cache / "derivatives").glob("*.json"))):
        manifest.write_text(["{", "[]", '{"key": 1}'][i % 3])
    third = _run_child(CHILD.format(src=KERNEL, forbid=False), str(cache))
    assert third.returncode == 0, third.stderr
    assert json.loads(next((cache / "modules").glob("*.json")).read_text())["files"]


def test_header_edit_invalidates_the_module(cc, tmp_path):
    header = tmp_path / "consts.h"
    header.write_text("#define K 2.0\n")
    src = tmp_path / "uses_header.c"
    src.write_text('#include "consts.h"\ndouble hk(double x) { return K * x * x; }\n')
    mod = cc(path=src)
    assert autodiff(Reverse, mod.hk, Active(1.0)).derivs[0] == 4.0
    header.write_text("#define K 5.0\n")
    os.utime(header, ns=(1, 1))  # a different stamp even within one mtime tick
    mod = cc(path=src)
    assert mod.hk(1.0) == 5.0
    assert autodiff(Reverse, mod.hk, Active(1.0)).derivs[0] == 10.0


def test_header_edit_with_the_old_library_loaded(cc, tmp_path):
    """The old module's primal library is loaded in this process when the
    header changes. The rebuild used to reuse the library's file name, and
    dlopen, which matches loaded libraries by name, gave back the old code:
    the new module computed with K = 2 (a wrong number, silently)."""
    header = tmp_path / "consts.h"
    header.write_text("#define K 2.0\n")
    src = tmp_path / "uses_header_loaded.c"
    src.write_text('#include "consts.h"\ndouble hkl(double x) { return K * x * x; }\n')
    old = cc(path=src, verify=False)
    assert old.hkl(1.0) == 2.0
    header.write_text("#define K 5.0\n")
    os.utime(header, ns=(1, 1))
    new = cc(path=src, verify=False)
    assert new.hkl(1.0) == 5.0
    assert autodiff(Reverse, new.hkl, Active(1.0)).derivs[0] == 10.0
    assert old.hkl(1.0) == 2.0          # the old module keeps its own code


def test_unwritable_cache_falls_back_with_a_warning(tc, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("ENZYME_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="refused"):
        mod = enzyme.compile("double fallback_k(double x) { return 3 * x; }", toolchain=tc)
    assert mod.fallback_k(2.0) == 6.0


@pytest.mark.parametrize("problem", ["world-writable", "foreign-owner"])
def test_unsafe_cache_dir_is_refused(tc, tmp_path, monkeypatch, problem):
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    if problem == "world-writable":
        os.chmod(shared, 0o777)
        expected = "writable by other users"
    else:
        if os.getuid() != 0:
            pytest.skip("changing a directory's owner needs root")
        os.chown(shared, 65534, 65534)
        expected = "owned by uid 65534"
    monkeypatch.setenv("ENZYME_CACHE_DIR", str(shared))
    with pytest.warns(UserWarning, match=expected):
        # a source of its own per case: an in-process hit would not touch the cache dir
        mod = enzyme.compile(f"double unsafe_k(double x) {{ return 5 * x; }} /* {problem} */",
                             toolchain=tc)
    assert autodiff(Reverse, mod.unsafe_k, Active(1.0)).derivs[0] == 5.0
    assert list(shared.iterdir()) == []  # nothing was written where others could tamper


SEVERAL = CHILD_PRELUDE + """
w, x = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
out = []
for mode in (Reverse, ReverseWithPrimal):
    dw, dx = np.zeros(3), np.zeros(3)
    autodiff(mode, mod.cached_loss, Duplicated(w, dw), Duplicated(x, dx), 3)
    out += list(dw) + list(dx)
out.append(autodiff(Forward, mod.cached_loss, Duplicated(w, np.ones(3)), x, 3).tangent)
out += list(enzyme.hessian(mod.cached_loss)(w, x, 3).ravel())
print(out, build.subprocess_runs)
"""


def test_several_derivatives_of_one_kernel_each_compiled_once(tc, tmp_path):
    cache = str(tmp_path / "cache")
    first = _run_child(SEVERAL.format(src=KERNEL, forbid=False), cache)
    assert first.returncode == 0, first.stderr
    values, runs = first.stdout.rsplit("]", 1)
    # module (no Enzyme call in it): clang front end, the signature parser
    # (a libclang worker), clang -### (the host CPU's features, once per
    # process), opt (optimise for them), clang link; each of the 4
    # derivatives: clang (front end + link of the module's bitcode), opt
    # through Enzyme, opt for the host CPU, clang link
    assert int(runs) == 5 + 4 * 4
    second = _run_child(SEVERAL.format(src=KERNEL, forbid=True), cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout.rsplit("]", 1) == [values, " 0\n"]
    assert len(list((tmp_path / "cache" / "derivatives").glob("*.so"))) == 4


def test_swapped_files_are_checked_again_before_loading(cc, private_cache):
    """Within one process too: after close(), a library swapped on disk is
    hash-checked (and rebuilt) before it is loaded again."""
    source = "double swapped_k(double x) { return 7.0 * x * x; }"
    with cc(source) as mod:
        assert autodiff(Reverse, mod.swapped_k, Active(1.0)).derivs[0] == 14.0
    for so in list((private_cache / "derivatives").glob("*.so")) + \
            list((private_cache / "modules").glob("*.so")):
        garbage = so.with_suffix(".tmp")
        garbage.write_bytes(b"\x7fELF" + b"\0" * 64)
        os.replace(garbage, so)  # a new inode: what a swap looks like
    with cc(source) as mod:
        assert mod.swapped_k(2.0) == 28.0
        assert autodiff(Reverse, mod.swapped_k, Active(1.0)).derivs[0] == 14.0
