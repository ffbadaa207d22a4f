"""Resource hygiene and cache faults: no growth of memory or file descriptors
over many calls and compile/unload cycles, temporary build dirs removed,
hung builds stopped, a failing cache replaced by a private temporary one."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Reverse, autodiff, call, paths


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_growth_over_100k_derivative_calls(cc):
    mod = cc("double dot3(const double *a, const double *b, const double *c, int n) {"
             " double s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i] * c[i]; return s; }")
    df = enzyme.derivative(mod.dot3, Reverse, Duplicated, Const, Const, Const)
    a, da, b, c = np.ones(3), np.zeros(3), np.arange(3.0), np.full(3, 2.0)
    for _ in range(10_000):
        df(a, da, b, c, 3)
    rss, fds = _rss_kib(), _fds()
    for _ in range(100_000):
        df(a, da, b, c, 3)
    growth = _rss_kib() - rss
    print(f"RSS growth over 100k derivative calls: {growth} KiB; fds {fds} -> {_fds()}")
    assert growth < 2048
    assert _fds() == fds
    np.testing.assert_allclose(da, 110_000 * b * c)


@pytest.mark.parametrize("verify", [False, True])
def test_no_growth_over_200_compile_unload_cycles(cc, verify):
    """With verify=True every cycle's module checks its derivative on first
    use (a fork, a pipe, the other mode's library): none of it may leak."""
    sources = [f"double cyc{i}(double x) {{ return {i + 2}.0 * x * x; }}" for i in range(10)]
    for source in sources:  # fill the disk cache: the cycles below load and unload
        with cc(source, verify=verify) as mod:
            autodiff(Reverse, mod[next(iter(mod)).name], Active(1.0))
    libraries = len(call._libraries)

    def cycle(i: int) -> None:
        with cc(sources[i % 10], verify=verify) as mod:
            kernel = mod[f"cyc{i % 10}"]
            assert autodiff(Reverse, kernel, Active(1.0)).derivs[0] == 2.0 * (i % 10 + 2)

    for i in range(20):
        cycle(i)
    gc.collect()
    rss, fds = _rss_kib(), _fds()
    for i in range(200):
        cycle(i)
    growth = _rss_kib() - rss
    print(f"RSS growth over 200 compile/unload cycles: {growth} KiB; fds {fds} -> {_fds()}")
    assert growth < 4096
    # (not ==: a descriptor an earlier test left to the collector, or a
    # framework's thread, may close meanwhile; a leak is growth)
    assert _fds() <= fds
    assert len(call._libraries) == libraries  # every library was unloaded again


def test_closed_module_raises_instead_of_crashing(cc):
    mod = cc("double closing(double x) { return x * x; }")
    df = enzyme.derivative(mod.closing, Reverse, Active)
    mod.close()
    with pytest.raises(enzyme.ModuleClosedError):
        df(2.0)
    with pytest.raises(enzyme.ModuleClosedError):
        mod.closing(2.0)
    with pytest.raises(enzyme.ModuleClosedError):
        autodiff(Reverse, mod.closing, Active(2.0), ret=Const)
    assert cc("double closing(double x) { return x * x; }").closing(3.0) == 9.0  # a new module


def _build_dirs(root) -> list[str]:
    return [p for p in os.listdir(root) if p.startswith("build-")] if os.path.isdir(root) else []


def test_temporary_build_dirs_removed_on_failure(cc, private_cache):
    with pytest.raises(enzyme.CompileError):
        cc("double broken(double x) { return x +* ; }")
    mod = cc("double opaque_call(double); double uses_it(double x) { return opaque_call(x); }")
    with pytest.raises(enzyme.DifferentiationError):
        autodiff(Reverse, mod.uses_it, Active(1.0))
    assert _build_dirs(private_cache) == []


def test_a_hung_build_is_stopped(tc, tmp_path):
    script = """
import enzyme, sys
try:
    enzyme.compile("double slow_to_build(double x) { return x * 3.0; }")
except enzyme.BuildTimeoutError as exc:
    print("timeout:", exc)
    sys.exit(3)
"""
    env = dict(os.environ, ENZYME_CACHE_DIR=str(tmp_path / "cache"), ENZYME_COMPILE_TIMEOUT="0.001")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ENZYME_COMPILE_TIMEOUT" in done.stdout
    assert "cache dir" not in done.stderr  # a timeout is not mistaken for cache trouble
    assert _build_dirs(tmp_path / "cache") == []


def test_cache_failing_mid_build_falls_back(tc, monkeypatch):
    real_replace = os.replace
    state = {"failed": False}

    def disk_full(src, dst, *args, **kwargs):
        # (the per-file object cache drops a failed write silently, a lost
        # shortcut; the module's own entry is what must fall back)
        if not state["failed"] and "enzyme-ffi-cache-" not in str(dst) and "/objects/" not in str(dst):
            state["failed"] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full)
    monkeypatch.setattr(paths, "_cache_abandoned", False)
    with pytest.warns(UserWarning, match="No space left"):
        mod = enzyme.compile("double disk_full_kernel(double x) { return 4.0 * x; }", toolchain=tc)
    assert autodiff(Reverse, mod.disk_full_kernel, Active(1.0)).derivs[0] == 4.0
    assert state["failed"]


def test_cache_cli(tc, tmp_path):
    env = dict(os.environ, ENZYME_CACHE_DIR=str(tmp_path / "cli-cache"))
    setup = "import enzyme; enzyme.compile('double cli_k(double x) { return x; }')"
    subprocess.run([sys.executable, "-c", setup], env=env, check=True, timeout=120)
    info = subprocess.run([sys.executable, "-m", "enzyme", "cache", "info"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "modules:     1" in info.stdout
    cleared = subprocess.run([sys.executable, "-m", "enzyme", "cache", "clear"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and not (tmp_path / "cli-cache").exists()
