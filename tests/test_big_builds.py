"""Big code bases (issue 11): a module's files compile in parallel and are
cached one by one, so editing one file recompiles only that file; a build
step longer than a couple of seconds reports progress through logging."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import enzyme
from enzyme import build

FILES = {
    "a.c": "double fa(double x) { return x * x; }\n",
    "b.c": "double fb(double x) { return 3 * x; }\n",
    "c.c": "double fa(double); double fb(double);\n"
           "double total(const double *x, int n) { double s = 0; for (int i = 0; i < n; i++) "
           "s += fa(x[i]) + fb(x[i]); return s; }\n",
}


def _write(tmp_path, **override):
    paths = []
    for name, text in FILES.items():
        (tmp_path / name).write_text(override.get(name, text))
        paths.append(tmp_path / name)
    return paths


def test_editing_one_file_recompiles_only_that_file(tc, tmp_path, monkeypatch):
    monkeypatch.setenv("ENZYME_CACHE_DIR", str(tmp_path / "cache"))
    compiled: list[str] = []
    real = build.run_tool

    def counting(cmd, input=None):
        if "-emit-llvm" in cmd and "-mlink-bitcode-file" not in cmd:  # a source file's compile
            compiled.append(cmd[cmd.index("-x") + 2].rsplit("/", 1)[-1])
        return real(cmd, input)

    monkeypatch.setattr(build, "run_tool", counting)
    mod = enzyme.compile(sources=_write(tmp_path), toolchain=tc)
    assert sorted(compiled) == ["a.c", "b.c", "c.c"]
    x = np.array([1.0, 2.0])
    assert mod.total(x, 2) == 1 + 4 + 3 * 3
    # an edit of one file: the others' bitcode comes from the per-file cache
    compiled.clear()
    edited = enzyme.compile(sources=_write(tmp_path, **{"b.c": "double fb(double x) { return 5 * x; }\n"}),
                            toolchain=tc)
    assert compiled == ["b.c"]
    assert edited.total(x, 2) == 1 + 4 + 5 * 3
    # and only that file was parsed again: one new per-file parse record
    parses = sorted((tmp_path / "cache" / "objects").glob("*.parse.json"))
    assert len(parses) == 4, parses
    np.testing.assert_allclose(enzyme.grad(edited.total)(x, 2), 2 * x + 5)
    # a header change is seen through the per-file record of what it read
    (tmp_path / "k.h").write_text("#define K 2\n")
    src = tmp_path / "h.c"
    src.write_text('#include "k.h"\ndouble fh(double x) { return K * x; }\n')
    assert enzyme.compile(sources=[src], toolchain=tc).fh(1.0) == 2.0
    (tmp_path / "k.h").write_text("#define K 7\n")
    assert enzyme.compile(sources=[src], toolchain=tc).fh(1.0) == 7.0
    # a header that changes a signature: the per-file parse is not reused
    (tmp_path / "real.h").write_text("typedef float real;\n")
    typed = tmp_path / "typed.c"
    typed.write_text('#include "real.h"\nreal twice(real x) { return 2 * x; }\n')
    assert enzyme.compile(sources=[typed], toolchain=tc).twice.signature.ret.dtype == "float32"
    (tmp_path / "real.h").write_text("typedef double real;\n")
    assert enzyme.compile(sources=[typed], toolchain=tc).twice.signature.ret.dtype == "float64"


def test_a_long_step_reports_progress(tc, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ENZYME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "PROGRESS_AFTER", 0.001)
    with caplog.at_level(logging.DEBUG, logger="enzyme"):
        mod = enzyme.compile(sources=_write(tmp_path), toolchain=tc)
        enzyme.grad(mod.total)(np.ones(2), 2)
    messages = [r.getMessage() for r in caplog.records if r.name == "enzyme"]
    assert any("compiling 3 source file(s)" in m and "so far" in m for m in messages), messages
    assert any("of 'total'" in m and "so far" in m for m in messages), messages
    assert any(m.startswith("run: ") and "-emit-llvm" in m for m in messages)


@pytest.mark.parametrize("jobs", [1, 4])
def test_the_first_failing_file_is_reported_in_source_order(tc, tmp_path, monkeypatch, jobs):
    monkeypatch.setattr("os.cpu_count", lambda: jobs)
    paths = _write(tmp_path, **{"a.c": "double fa(double x) { return x +; }\n",
                                "c.c": "double total(void) { return undefined_name; }\n"})
    with pytest.raises(enzyme.CompileError, match="a.c"):
        enzyme.compile(sources=paths, toolchain=tc)


def test_an_edited_parse_record_is_not_trusted(tc, tmp_path, monkeypatch):
    """The per-file parse drives every check of a call (a dtype there lets a
    float32 array pass for double *): a record edited on disk is ignored."""
    import json

    monkeypatch.setenv("ENZYME_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "k.c"
    src.write_text("double ksum(const double *x, int n) {\n"
                   "    double s = 0; for (int i = 0; i < n; i++) s += x[i]; return s; }\n")
    assert enzyme.compile(sources=[src], toolchain=tc).ksum(np.ones(3), 3) == 3.0
    (record_path,) = (tmp_path / "cache" / "objects").glob("*.parse.json")
    record = json.loads(record_path.read_text())
    record["facts"]["signatures"][0]["params"][0]["ctype"]["dtype"] = "float32"
    record_path.write_text(json.dumps(record))
    # the module's own entry gone, a new process's build looks the file's parse up
    (tmp_path / "cache" / "modules").rename(tmp_path / "cache" / "old-modules")
    (tmp_path / "cache" / "modules").mkdir(mode=0o700)
    child = subprocess.run(
        [sys.executable, "-c", "import sys, enzyme\n"
         "mod = enzyme.compile(sources=[sys.argv[1]])\n"
         "print(mod.ksum.signature.params[0].ctype.dtype)", str(src)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ENZYME_CACHE_DIR": str(tmp_path / "cache")})
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "float64"
