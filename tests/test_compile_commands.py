"""A project's own build settings (issue 11): compile(compile_commands=...)
reads each file's include directories, definitions, language and standard
from the compilation database of a small CMake project configured here.

Oracles: the values the per-file definitions imply, and analytic
derivatives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import enzyme
from enzyme.compdb import read_database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

CMAKE = """
cmake_minimum_required(VERSION 3.16)
project(model C CXX)
add_library(model STATIC src/energy.c src/scale.cpp)
target_include_directories(model PRIVATE include)
target_compile_definitions(model PRIVATE WEIGHT=3)
set_source_files_properties(src/scale.cpp PROPERTIES COMPILE_DEFINITIONS "OFFSET=2")
set_target_properties(model PROPERTIES C_STANDARD 99 CXX_STANDARD 17)
"""

HEADER = """
#ifndef MODEL_H
#define MODEL_H
#ifdef __cplusplus
extern "C" {
#endif
double scale(double x);
#ifdef __cplusplus
}
#endif
#define SQUARE(x) ((x) * (x))
#endif
"""

ENERGY_C = """
#include "model.h"
/* WEIGHT comes from the project's build, not from the source */
double energy(const double *x, int n) {
    double e = 0;
    for (int i = 0; i < n; i++) e += WEIGHT * SQUARE(scale(x[i]));
    return e;
}
"""

SCALE_CPP = """
#include "model.h"
#include <cmath>
extern "C" double scale(double x) { return x + OFFSET; }  // OFFSET: this file's own definition
"""


def _cmake() -> str:
    found = shutil.which("cmake") or str(Path(sys.executable).with_name("cmake"))
    if not os.path.exists(found):
        message = "cmake is not installed (pip install cmake; the test extra has it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def project(tc, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmake-project")
    (root / "include").mkdir()
    (root / "src").mkdir()
    (root / "CMakeLists.txt").write_text(CMAKE)
    (root / "include" / "model.h").write_text(HEADER)
    (root / "src" / "energy.c").write_text(ENERGY_C)
    (root / "src" / "scale.cpp").write_text(SCALE_CPP)
    clangxx = tc.clang.replace("clang-", "clang++-") if "clang-" in tc.clang else tc.clang + "++"
    done = subprocess.run(
        [_cmake(), "-S", str(root), "-B", str(root / "build"), "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
         f"-DCMAKE_C_COMPILER={tc.clang}", f"-DCMAKE_CXX_COMPILER={clangxx}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_the_database_gives_each_file_its_own_flags(project):
    db = read_database(project / "build" / "compile_commands.json")
    energy = db[str(project / "src" / "energy.c")]
    scale = db[str(project / "src" / "scale.cpp")]
    assert energy.language == "c" and scale.language == "c++"
    assert f"-I{project / 'include'}" in energy.flags and "-DWEIGHT=3" in energy.flags
    assert "-DOFFSET=2" in scale.flags and "-DOFFSET=2" not in energy.flags
    assert any(f.startswith("-std=") for f in scale.flags)
    assert not any(f.startswith(("-O", "-g", "-o", "-W")) for f in energy.flags + scale.flags)


def test_compile_with_the_projects_settings(project, tc):
    db = project / "build" / "compile_commands.json"
    srcs = [project / "src" / "energy.c", project / "src" / "scale.cpp"]
    mod = enzyme.compile(sources=srcs, compile_commands=db, toolchain=tc)
    x = np.array([0.5, -1.0, 2.0])
    assert mod.energy(x, 3) == pytest.approx(3 * ((x + 2) ** 2).sum(), rel=1e-15)
    np.testing.assert_allclose(enzyme.grad(mod.energy)(x, 3), 6 * (x + 2), rtol=1e-15)
    # without sources=: every file the database lists
    whole = enzyme.compile(compile_commands=db, toolchain=tc)
    assert sorted(whole.signatures) == ["energy", "scale"]
    assert whole.scale(1.0) == 3.0


def test_a_file_outside_the_database_and_a_bad_database(project, tc, tmp_path):
    db = project / "build" / "compile_commands.json"
    other = tmp_path / "other.c"
    other.write_text("double other(double x) { return x; }\n")
    with pytest.raises(enzyme.CompileError, match="not in the compilation database"):
        enzyme.compile(sources=[other], compile_commands=db, toolchain=tc)
    bad = tmp_path / "compile_commands.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(enzyme.CompileError, match="not a compilation database"):
        enzyme.compile(compile_commands=bad, toolchain=tc)
    with pytest.raises(enzyme.OptionTypeError, match="compile_commands"):
        enzyme.compile(compile_commands=3, toolchain=tc)
