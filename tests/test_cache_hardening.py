"""The compile cache against hostile or unlucky surroundings: `cache clear`
deletes only what the cache made, entries that are devices or were edited
are rebuilt, paths with spaces and relative or symlinked cache dirs cache,
unsafe subdirectories are refused, bad environment values and bad flags get
clear errors, a link failure is a link failure, a cleared cache does not
break loaded modules, and the signature parser's memory is bounded."""

from __future__ import annotations

import errno
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

import enzyme
from enzyme import Active, Duplicated, Forward, Reverse, autodiff, build, paths
from enzyme.signature import parse_request, worker_command

PY = sys.executable


def _child(code: str, cache: str | os.PathLike, cwd: str | os.PathLike | None = None,
           stdin_text: str | None = None, timeout: float = 240,
           **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (no in-process memo), with its own cache dir; the
    first-use check is off, so tool runs count only the requested builds."""
    full = dict(os.environ, ENZYME_CACHE_DIR=str(cache), ENZYME_VERIFY="0", **env)
    return subprocess.run([PY, "-c", textwrap.dedent(code)], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, input=stdin_text,
                          stdin=None if stdin_text is not None else subprocess.DEVNULL)


def _clear(cache: str | os.PathLike) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "enzyme", "cache", "clear"], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, ENZYME_CACHE_DIR=str(cache)))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache dir of the test's own, and a cache not abandoned by an earlier test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENZYME_CACHE_DIR", str(cache))
    monkeypatch.setattr(paths, "_cache_abandoned", False)
    return cache


# ---- 1. `cache clear` never deletes what the cache did not create ----------

def test_clear_refuses_a_directory_that_is_not_a_cache(tmp_path):
    thesis = tmp_path / "notacache" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("precious\n")
    done = _clear(thesis.parent)
    assert done.returncode == 1 and "not an enzyme-ffi cache" in done.stderr
    assert "thesis.txt" in done.stderr and thesis.read_text() == "precious\n"


def test_clear_refuses_a_regular_file_and_a_symlink_to_a_foreign_dir(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("dummy\n")
    done = _clear(afile)
    assert done.returncode == 1 and "not a directory" in done.stderr
    assert afile.read_text() == "dummy\n"
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    (tmp_path / "link").symlink_to(target)
    done = _clear(tmp_path / "link")
    assert done.returncode == 1 and "nothing was deleted" in done.stderr
    assert (target / "keep.txt").read_text() == "keep\n"
    # the library function refuses the symlink itself too (the CLI resolves it first)
    with pytest.raises(enzyme.CacheError, match="symbolic link"):
        paths.clear_cache(tmp_path / "link")


def test_clear_deletes_only_the_cache_layout(tc, tmp_path):
    cache = tmp_path / "cache"
    made = _child("import enzyme; enzyme.compile('double clear_k(double x) { return x; }')", cache)
    assert made.returncode == 0, made.stderr
    assert paths.is_marked_cache(cache)
    (cache / "notes.txt").write_text("mine\n")  # dropped into the cache by its user
    done = _clear(cache)
    assert done.returncode == 0, done.stderr
    assert "notes.txt" in done.stdout  # said to be kept
    assert sorted(os.listdir(cache)) == ["CACHEDIR.TAG", "notes.txt"]
    (cache / "notes.txt").unlink()
    done = _clear(cache)
    assert done.returncode == 0 and not cache.exists()  # nothing else in it: removed


@pytest.mark.parametrize("content", ["layout", "user modules"])
def test_an_unmarked_directory_is_never_cleared(tmp_path, content):
    """Names prove nothing: a directory without the marker that holds only
    names the cache uses (a user's modules/ with their own files in it, an
    old cache) is refused whole, and every file stays."""
    root = tmp_path / "p"
    if content == "layout":
        for sub in ("modules", "derivatives", "locks", "build-abc123"):
            (root / sub).mkdir(parents=True)
        (root / "modules" / "k.json").write_text("{}")
        (root / "toolchain-probe.json").write_text("{}")
    else:
        (root / "modules").mkdir(parents=True)
        (root / "modules" / "keep.py").write_text("x = 1\n")
        (root / "build-2024").mkdir()
        (root / "build-2024" / "results.csv").write_text("1,2\n")
        (root / ".draft.tmp").write_text("draft\n")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    done = _clear(root)
    assert done.returncode == 1 and "nothing was deleted" in done.stderr, done.stderr
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    with pytest.raises(enzyme.CacheError, match="no CACHEDIR.TAG marker"):
        paths.claim_cache_root(root)  # nor is it taken over as a cache
    assert not paths.is_marked_cache(root)


def test_compile_does_not_take_over_a_foreign_directory(tc, own_cache):
    own_cache.mkdir()
    (own_cache / "modules").mkdir()  # the user's own "modules" directory
    (own_cache / "thesis.txt").write_text("precious\n")
    with pytest.warns(UserWarning, match="not an enzyme-ffi cache"):
        mod = enzyme.compile("double foreign_k(double x) { return 2 * x; }", toolchain=tc)
    assert mod.foreign_k(2.0) == 4.0
    assert sorted(os.listdir(own_cache)) == ["modules", "thesis.txt"]
    assert os.listdir(own_cache / "modules") == []


# ---- 2. files that are not regular files are never hashed -----------------

@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_hashing_a_non_regular_file_is_refused(tmp_path, kind):
    if kind == "device":
        victim = tmp_path / "zero.so"
        victim.symlink_to("/dev/zero")
    else:
        victim = tmp_path / "pipe.so"
        os.mkfifo(victim)
    code = (f"from enzyme.paths import sha256_file, NotRegularFileError\n"
            f"try:\n    sha256_file({str(victim)!r})\nexcept NotRegularFileError as e:\n"
            f"    print('refused', isinstance(e, OSError))\n")
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused True", done.stderr


HASH_CHILD = """
import enzyme
m = enzyme.compile('#include "k.h"\\ndouble f(double x){{return K*x*x;}}', include_dirs=[{inc!r}])
print(m.f(2.0), enzyme.autodiff(enzyme.Reverse, m.f, enzyme.Active(2.0)).derivs[0])
"""


@pytest.mark.parametrize("which", ["modules", "derivatives"])
def test_a_cache_entry_replaced_by_a_device_is_rebuilt(tc, tmp_path, which):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "k.h").write_text("#define K 3.0\n")
    cache = tmp_path / "cache"
    code = HASH_CHILD.format(inc=str(tmp_path / "inc"))
    first = _child(code, cache)
    assert first.stdout.split() == ["12.0", "12.0"], first.stderr
    victim = glob.glob(str(cache / which / "*.so"))[0]
    os.remove(victim)
    os.symlink("/dev/zero", victim)
    again = _child(code, cache, timeout=120)  # used to hash /dev/zero forever
    assert again.stdout.split() == ["12.0", "12.0"], again.stderr


def test_including_dev_stdin_does_not_break_the_cache(tc, tmp_path):
    """The dependency is a pipe (/proc/<pid>/fd/pipe:[...] once resolved):
    not recorded, not hashed, and the cache dir stays in use."""
    code = """
    import warnings, enzyme
    from enzyme import paths
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = enzyme.compile("#include </dev/stdin>\\ndouble stdin_k(double x) { return 3 * x; }")
    print(m.stdin_k(2.0), paths._cache_abandoned)
    """
    done = _child(code, tmp_path / "cache", stdin_text="")
    assert done.stdout.split() == ["6.0", "False"], done.stderr
    manifest = json.loads(next((tmp_path / "cache" / "modules").glob("*.json")).read_text())
    assert manifest["deps"] == {}


# ---- 3. a manifest's content is covered by a hash -------------------------

TAMPER_CHILD = """
import warnings, numpy as np, enzyme
warnings.simplefilter("always")
m = enzyme.compile("double total(const double *x, long n){double s=0;for(long i=0;i<n;i++)s+=x[i];return s;}")
try:
    print("float32 accepted", m.total(np.ones(4, np.float32), 4))
except enzyme.ArgumentTypeError:
    print("float32 refused")
print(m.total(np.ones(4), 4))
"""


def test_an_edited_manifest_signature_is_rebuilt(tc, tmp_path):
    cache = tmp_path / "cache"
    first = _child(TAMPER_CHILD, cache)
    assert first.stdout.split("\n")[:2] == ["float32 refused", "4.0"], first.stderr
    manifest_path = next((cache / "modules").glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["extra"]["signatures"][0]["params"][0]["ctype"]["dtype"] = "float32"
    manifest_path.write_text(json.dumps(manifest))
    again = _child(TAMPER_CHILD, cache)
    assert again.stdout.split("\n")[:2] == ["float32 refused", "4.0"], again.stdout + again.stderr
    assert "modified after it was written" in again.stderr
    rebuilt = json.loads(manifest_path.read_text())
    assert rebuilt["extra"]["signatures"][0]["params"][0]["ctype"]["dtype"] == "float64"


# ---- 4. paths with spaces --------------------------------------------------

def test_depfile_escapes_are_parsed():
    text = ("/tmp/cache\\ dir/build-1/source0.bc: /tmp/my\\ dir/model.c \\\n"
            "  /tmp/inc\\ dir/k.h /tmp/price$$.h /tmp/hash\\#1.h \\\n"
            "  /tmp/back\\\\\\ slash.h /tmp/plain.h\n")
    assert build.parse_depfile(text) == ["/tmp/my dir/model.c", "/tmp/inc dir/k.h", "/tmp/price$.h",
                                         "/tmp/hash#1.h", "/tmp/back\\ slash.h", "/tmp/plain.h"]


SPACE_CHILD = """
import enzyme, warnings
from enzyme import build
warnings.simplefilter("error")  # a fallback (cache abandoned) warns
m = enzyme.compile(path={src!r}, include_dirs=[{inc!r}])
print(m.h(2.0), enzyme.autodiff(enzyme.Reverse, m.h, enzyme.Active(1.0)).derivs[0], build.subprocess_runs)
"""


def test_paths_with_spaces_cache(tc, tmp_path):
    inc, src_dir = tmp_path / "inc dir", tmp_path / "src dir"
    inc.mkdir()
    src_dir.mkdir()
    (inc / "k.h").write_text("#define K 3.0\n")
    src = src_dir / "m.c"
    src.write_text('#include "k.h"\ndouble h(double x){return K*x*x;}\n')
    cache = tmp_path / "cache dir"
    code = SPACE_CHILD.format(src=str(src), inc=str(inc))
    first = _child(code, cache)
    assert first.stdout.split()[:2] == ["12.0", "6.0"], first.stderr
    second = _child(code, cache)
    assert second.stdout.split() == ["12.0", "6.0", "0"], second.stderr  # all from the cache
    manifest = json.loads(next((cache / "modules").glob("*.json")).read_text())
    assert list(manifest["deps"]) == [os.path.realpath(inc / "k.h")]
    # and the header is still tracked: an edit rebuilds
    (inc / "k.h").write_text("#define K 5.0\n")
    third = _child(code, cache)
    assert third.stdout.split()[:2] == ["20.0", "10.0"], third.stderr


# ---- 5. relative and symlinked cache dirs ----------------------------------

RUNS_CHILD = """
import warnings, enzyme
from enzyme import build
warnings.simplefilter("error")
m = enzyme.compile("double rel_k(double x){return x*x*x;}")
print(enzyme.autodiff(enzyme.Reverse, m.rel_k, enzyme.Active(2.0)).derivs[0], build.subprocess_runs)
"""


@pytest.mark.parametrize("spelling", ["rel", "./rel2", "link"])
def test_relative_and_symlinked_cache_dirs_cache(tc, tmp_path, spelling):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    first = _child(RUNS_CHILD, spelling, cwd=tmp_path)
    assert first.stdout.split()[0] == "12.0", first.stderr
    second = _child(RUNS_CHILD, spelling, cwd=tmp_path)
    assert second.stdout.split() == ["12.0", "0"], second.stderr


# ---- 6. every subdirectory is checked like the root ------------------------

@pytest.mark.parametrize("sub", ["modules", "derivatives", "locks"])
def test_world_writable_subdirectory_is_refused(tc, own_cache, sub):
    first = enzyme.compile(f"double sub_k(double x) {{ return 3 * x; }} /* {sub} 1 */", toolchain=tc)
    assert autodiff(Reverse, first.sub_k, Active(1.0)).derivs[0] == 3.0
    os.chmod(own_cache / sub, 0o777)
    before = sorted(os.listdir(own_cache / sub))
    with pytest.warns(UserWarning, match=f"{sub} is writable by other users"):
        mod = enzyme.compile(f"double sub_k(double x) {{ return 3 * x; }} /* {sub} 2 */", toolchain=tc)
    assert autodiff(Reverse, mod.sub_k, Active(1.0)).derivs[0] == 3.0
    assert sorted(os.listdir(own_cache / sub)) == before  # nothing new where others can write


# ---- 7. environment values --------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "1e12", "abc", "0", "-1"])
def test_bad_compile_timeout_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("ENZYME_COMPILE_TIMEOUT", value)
    with pytest.raises(enzyme.ToolchainError, match="ENZYME_COMPILE_TIMEOUT") as info:
        build.run_tool(["true"])
    assert "seconds" in str(info.value)


def test_good_compile_timeouts_are_accepted(monkeypatch):
    for value in ("0.5", "600", " 30 ", "604800"):
        monkeypatch.setenv("ENZYME_COMPILE_TIMEOUT", value)
        assert build.run_tool(["true"]).returncode == 0


def test_unknown_user_in_cache_dir(tc, own_cache, monkeypatch):
    monkeypatch.setenv("ENZYME_CACHE_DIR", "~nosuchuser_efi/cache")
    with pytest.raises(enzyme.CacheError, match="ENZYME_CACHE_DIR"):
        paths.cache_dir()
    with pytest.warns(UserWarning, match="nosuchuser_efi"):  # falls back, never fails a compile
        mod = enzyme.compile("double nouser_k(double x) { return 7 * x; }", toolchain=tc)
    assert mod.nouser_k(1.0) == 7.0
    done = subprocess.run([PY, "-m", "enzyme", "cache", "info"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))
    assert done.returncode == 1 and "ENZYME_CACHE_DIR" in done.stderr and "Traceback" not in done.stderr


def test_missing_tmpdir_is_named(tc, own_cache, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/nonexistent_efi_tmp")
    with pytest.raises(enzyme.ToolchainError, match="TMPDIR") as info:
        enzyme.compile("double tmpdir_k(double x) { return x; }", toolchain=tc)
    assert "__enzyme" not in str(info.value)


# ---- 8. link failures and flags that change clang's output -----------------

def test_a_missing_library_is_a_link_error(tc, own_cache):
    with pytest.raises(enzyme.CompileError) as info:
        enzyme.compile("double link_k(double x) { return x * x; }", libraries=["nosuchlib_efi"],
                       toolchain=tc)
    assert isinstance(info.value, build.LinkError)
    assert not isinstance(info.value, enzyme.DifferentiationError)
    assert "nosuchlib_efi" in str(info.value) and "__enzyme" not in str(info.value)


@pytest.mark.parametrize("flags", [["-o", "/tmp/efi-x.o"], ["-o/tmp/efi-x.o"], ["-E"], ["-S"], ["-c"],
                                   ["-fsyntax-only"], ["-MD"], ["-MF", "x.d"], ["-emit-llvm"],
                                   ["-Xclang", "-emit-obj"], ["-###"]])
def test_flags_that_change_the_output_kind_are_refused(tc, own_cache, flags):
    runs = build.subprocess_runs
    with pytest.raises(enzyme.CompileError, match="changes what clang produces") as info:
        enzyme.compile("double flag_k(double x) { return x; }", flags=flags, toolchain=tc)
    assert isinstance(info.value, ValueError) and "__enzyme" not in str(info.value)
    assert build.subprocess_runs == runs  # refused before anything ran


def test_ordinary_flags_pass_the_check():
    build.check_flags(["-std=c11", "-Wall", "-mavx2", "-O1", "-D", "-c", "-I", "-E", "-include",
                       "stdio.h", "-fopenmp", "-mllvm", "-x", "c", "-Xclang", "-disable-O0-optnone"])


def test_disk_full_at_link_time_falls_back(tc, own_cache, monkeypatch):
    real = subprocess.run
    state = {"failed": False}

    def full_disk(cmd, *args, **kwargs):
        if "-shared" in cmd and not state["failed"]:
            state["failed"] = True
            return subprocess.CompletedProcess(cmd, 1, "", "ld: final link failed: No space left on device\n")
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", full_disk)
    with pytest.warns(UserWarning, match="No space left"):
        mod = enzyme.compile("double diskfull_link_k(double x) { return 4.0 * x; }", toolchain=tc)
    assert autodiff(Reverse, mod.diskfull_link_k, Active(1.0)).derivs[0] == 4.0
    assert state["failed"]


# ---- 9. the cache cleared under a loaded module ------------------------------

def test_new_derivatives_after_the_cache_was_cleared(tc, own_cache):
    mod = enzyme.compile("double f9(double x) { return x * x * x; }\n"
                         "double g9(double x) { return x * x; }", toolchain=tc)
    assert autodiff(Reverse, mod.f9, Active(2.0)).derivs[0] == 12.0
    assert _clear(own_cache).returncode == 0
    assert not own_cache.exists()
    assert mod.f9(2.0) == 8.0
    assert autodiff(Forward, mod.f9, Duplicated(2.0, 1.0)).tangent == 12.0
    assert autodiff(Reverse, mod.g9, Active(2.0)).derivs[0] == 4.0


def test_cleared_cache_with_shared_globals(tc, own_cache, tmp_path):
    src = tmp_path / "glob9.c"
    src.write_text("double scale9 = 3.0;\ndouble s9(double x) { return scale9 * x * x; }\n"
                   "double t9(double x) { return scale9 * x; }\n")
    mod = enzyme.compile(path=src, toolchain=tc)
    assert autodiff(Reverse, mod.s9, Active(1.0)).derivs[0] == 6.0
    assert _clear(own_cache).returncode == 0
    mod.globals["scale9"][...] = 5.0  # the loaded library's state is what a derivative must see
    try:
        derivs = autodiff(Reverse, mod.t9, Active(1.0)).derivs
    except enzyme.CacheError as exc:  # acceptable: a clear instruction, never a "bug" message
        assert "enzyme.compile" in str(exc)
    else:
        assert derivs[0] == 5.0


# ---- 10. the signature parser: memory bound and its own timeout message ------

def test_a_hard_memory_limit_below_the_parsers_bound(tc, tmp_path):
    """Under `ulimit -v` (a hard limit) below the parser's 4 GiB bound, every
    compile failed: the worker tried to raise the hard limit."""
    code = """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3900 << 20, 3900 << 20))
    import enzyme
    mod = enzyme.compile("double hard_limit_k(double x) { return x * x; }")
    print(mod.hard_limit_k(3.0), enzyme.grad(mod.hard_limit_k)(3.0))
    """
    done = _child(code, tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["9.0", "6.0"]


def test_parser_memory_is_bounded(tc, tmp_path):
    """`#include </dev/zero>` made libclang grow until the timeout. The
    child's own limit (2 GiB) only keeps a regression from eating the
    machine; the parser must stop far below it."""
    src = tmp_path / "zero.c"
    src.write_text("#include </dev/zero>\ndouble f(double x) { return x; }\n")
    code = f"""
    import resource, time
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from enzyme import build
    from enzyme.signature import parse_request, worker_command
    start = time.time()
    done = build.run_tool(worker_command(), input=parse_request([{str(src)!r}], [], {tc.resource_dir!r},
                                                                  {tc.libclang!r}))
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, round(time.time() - start))
    """
    done = _child(code, tmp_path / "cache", ENZYME_PARSE_MEMORY_MB="400", ENZYME_COMPILE_TIMEOUT="120")
    assert done.returncode == 0, done.stderr
    peak_mib, seconds = map(int, done.stdout.split())
    assert peak_mib < 600, f"the parser grew to {peak_mib} MiB"
    assert seconds < 60


def test_bad_parser_memory_setting(monkeypatch, tc, tmp_path):
    monkeypatch.setenv("ENZYME_PARSE_MEMORY_MB", "lots")
    src = tmp_path / "k.c"
    src.write_text("double f(double x) { return x; }\n")
    with pytest.raises(enzyme.ToolchainError, match="ENZYME_PARSE_MEMORY_MB"):
        build.run_tool(worker_command(), input=parse_request([str(src)], [], tc.resource_dir, tc.libclang))


def test_parser_timeout_names_the_parse(tc, tmp_path, monkeypatch):
    fifo = tmp_path / "never.h"
    os.mkfifo(fifo)  # no writer: reading it blocks forever
    src = tmp_path / "k.c"
    src.write_text(f'#include "{fifo}"\ndouble f(double x) {{ return x; }}\n')
    monkeypatch.setenv("ENZYME_COMPILE_TIMEOUT", "3")
    with pytest.raises(enzyme.BuildTimeoutError) as info:
        build.run_tool(worker_command(), input=parse_request([str(src)], [], tc.resource_dir, tc.libclang))
    message = str(info.value)
    assert "signatures" in message and "libclang" in message and "`python" not in message


def test_enospc_from_a_tool_is_cache_trouble_not_a_tool_error(tmp_path):
    script = tmp_path / "full.sh"
    script.write_text("#!/bin/sh\necho 'error: No space left on device' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(OSError) as info:
        build.run_tool([str(script)])
    assert info.value.errno == errno.ENOSPC
    assert not isinstance(info.value, enzyme.EnzymeError)


def test_marker_is_written_when_the_cache_creates_its_root(tc, own_cache):
    enzyme.compile("double marker_k(double x) { return x; }", toolchain=tc)
    assert paths.is_marked_cache(own_cache)
    tag = (own_cache / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55") and "enzyme-ffi" in tag
    assert set(os.listdir(own_cache)) <= {"CACHEDIR.TAG", "modules", "derivatives", "objects", "locks",
                                          "toolchain-probe.json"}


def test_module_key_includes_the_parse_version(tc, monkeypatch):
    """A module entry stores the parse's results (signatures, globals): a
    parser that records other facts must not reuse it."""
    from enzyme import signature

    sources = [build.SourceInput("double pv(double x) { return x; }", "<source>")]
    before = build._module_key(tc, sources, [], [], True, False)
    monkeypatch.setattr(signature, "PARSE_VERSION", signature.PARSE_VERSION + "-next")
    assert build._module_key(tc, sources, [], [], True, False) != before
