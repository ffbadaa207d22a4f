"""Signatures are parsed by the compiling clang's own libclang, in a worker
process (issue items 6 and 7)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import enzyme
from enzyme import build
from enzyme.signature import parse_request, read_worker_reply, worker_command

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_parser_is_the_compilers_libclang(tc):
    if not tc.libclang:
        if IN_CI:
            pytest.fail("the compiling clang's libclang was not found (apt-get install libclang1-15)")
        pytest.skip("no libclang beside the compiling clang; the bundled one parses")
    assert f"llvm-{tc.llvm_major}" in os.path.realpath(tc.libclang) or str(tc.llvm_major) in tc.libclang
    assert f"libclang {tc.libclang}" in tc.identity


def test_what_clang_15_accepts_parses(cc):
    """A call before the callee's declaration is a warning for clang 15 (an
    error for the bundled libclang 18's defaults), a no-prototype definition
    (`int main()` style) made clang.cindex raise a bare AssertionError, and
    K&R definitions are common in legacy code."""
    mod = cc("int f(int x) { return g(x); }\nint g(int x) { return 2 * x; }\n"
             "int answer() { return 42; }\n"
             "double knr(x, y) double x; double y; { return x * x * y; }\n")
    assert mod.f(3) == 6 and mod.answer() == 42
    assert mod.answer.signature.params == () and not mod.answer.signature.variadic
    assert [p.name for p in mod.knr.signature.params] == ["x", "y"]
    assert enzyme.grad(mod.knr, argnums=(0, 1))(3.0, 2.0) == (12.0, 9.0)


def _parse(tc, source_path, libclang, command=None):
    done = build.run_tool(command or worker_command(),
                          input=parse_request([str(source_path)], [], tc.resource_dir, libclang))
    return read_worker_reply(done.stdout, done.returncode, done.stderr)


def test_worker_failures_are_compile_errors(tc, tmp_path):
    source = tmp_path / "k.c"
    source.write_text("double f(double x) { return x; }\n")
    signatures, _ = _parse(tc, source, tc.libclang)
    assert str(signatures["f"]) == "double f(double x)"
    with pytest.raises(enzyme.CompileError, match="libclang failed"):
        _parse(tc, source, str(tmp_path / "no-such-libclang.so"))
    # a worker that dies (as a crashing libclang would) is an error, not our death
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(enzyme.CompileError, match="died from signal 11"):
        _parse(tc, source, tc.libclang, command=crash)
    source.write_text("double f(double x) { return y; }\n")
    with pytest.raises(enzyme.CompileError, match="k.c:1:") as info:
        _parse(tc, source, tc.libclang)
    assert info.value.diagnostics


def test_parse_runs_in_a_child_process(tc, tmp_path):
    """The interpreter never loads libclang for a compile."""
    script = ("import sys, enzyme\n"
              "enzyme.compile('double sq(double x) { return x * x; }')\n"
              "print('clang.cindex' in sys.modules)\n")
    env = dict(os.environ, ENZYME_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
