"""The second hostile-user pass of issue 10 (549 attack calls): each finding
that crashed, hung, lost data or raised a raw exception, as a regression
test. The first pass's findings are in test_hostile_calls.py,
test_cache_hardening.py and test_fork_and_signals.py."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import enzyme
from enzyme import Const, Duplicated, Reverse, ReverseSplit

DOT = "double dot2(const double *x, int n){double s=0;for(int i=0;i<n;i++) s+=x[i]*x[i];return s;}"


@pytest.fixture(scope="module")
def mod(cc):
    return cc(DOT + "\ndouble two(double x, double y) { return x * y; }\n")


def test_a_tape_cannot_be_copied_or_pickled(tc, private_cache):
    """A copy shared Enzyme's tape and both copies freed it: "double free
    detected" (SIGABRT) when they died. Run in a child: the failure mode
    ends the process."""
    code = textwrap.dedent(f"""
        import copy, pickle, numpy as np, enzyme
        from enzyme import Duplicated, Const, ReverseSplit
        m = enzyme.compile({DOT!r})
        fw, rv = enzyme.autodiff_thunk(ReverseSplit, m.dot2, Duplicated, Const)
        x, dx = np.array([1.0, 2.0, 3.0]), np.zeros(3)
        t = fw(x, dx, 3)
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            try:
                attempt(t)
            except enzyme.TapeError as exc:
                assert isinstance(exc, TypeError) and "cannot be copied" in str(exc)
            else:
                raise SystemExit("copied: " + attempt.__name__)
        rv(t, 1.0)
        assert np.allclose(dx, 2 * x), dx
        del t
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ENZYME_CACHE_DIR": str(private_cache)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_fifo_or_a_device_as_the_source_file_is_refused_at_once(tc, tmp_path):
    fifo = tmp_path / "model.c"
    os.mkfifo(fifo)
    result: list = []

    def attempt() -> None:
        try:
            enzyme.compile(path=fifo, toolchain=tc)
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            result.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the reader before failing
        with open(fifo, "w"):
            pass
        pytest.fail("compile(path=<FIFO>) blocked reading it")
    assert isinstance(result[0], enzyme.CompileError) and "not a regular file" in str(result[0])
    with pytest.raises(enzyme.CompileError, match="not a regular file"):
        enzyme.compile(path="/dev/zero", toolchain=tc)


def test_a_nul_in_a_path_is_an_option_error(tc):
    with pytest.raises(enzyme.OptionError, match="NUL"):
        enzyme.compile(path="/tmp/a\x00b.c", toolchain=tc)
    with pytest.raises(enzyme.OptionError, match="NUL"):
        enzyme.compile("/tmp/a\x00b.c", toolchain=tc)


def test_an_unreadable_header_does_not_break_the_cache(tc):
    # /proc/self/mem is a "regular" file that fails to read (EIO): its hash
    # raised a raw OSError after clang had compiled the code
    mod = enzyme.compile("#include </proc/self/mem>\ndouble procmem_k(double x){return 3*x;}",
                         toolchain=tc)
    assert mod.procmem_k(2.0) == 6.0


@pytest.mark.parametrize("value", ["nan", "0", "-1", "abc", "1e99"])
def test_a_bad_verify_timeout_is_an_option_error(tc, monkeypatch, value):
    monkeypatch.setenv("ENZYME_VERIFY_TIMEOUT", value)
    fresh = enzyme.compile(DOT + f"\n/* {value} */\n", toolchain=tc)
    with pytest.raises(enzyme.OptionError, match="ENZYME_VERIFY_TIMEOUT"):
        enzyme.grad(fresh.dot2)(np.ones(3), 3)


@pytest.mark.parametrize("argnums", ["x", None, 1.5, True, [0, "y"], b"\x00"])
def test_argnums_must_be_positions(mod, argnums):
    with pytest.raises(enzyme.ActivityError, match="argnums"):
        enzyme.grad(mod.two, argnums=argnums)(3.0, 5.0)


@pytest.mark.parametrize("options, match", [
    ({"forward_rules": ["x"]}, "forward_rules= takes a mapping"),
    ({"reverse_rules": "f"}, "reverse_rules= takes a mapping"),
    ({"verify": "no"}, "verify= takes True or False"),
    ({"isolate": "yes"}, "isolate= takes True or False"),
    ({"native_cpu": 1}, "native_cpu= takes True or False"),
    ({"toolchain": "clang"}, "toolchain= takes"),
])
def test_compile_options_of_the_wrong_type(options, match):
    with pytest.raises(enzyme.OptionTypeError, match=match):
        enzyme.compile("double opt_k(double x) { return x; }", **options)


def test_helpers_given_the_wrong_things():
    with pytest.raises(enzyme.ActivityError, match="kernel of a compiled module"):
        enzyme.check(None)
    with pytest.raises(enzyme.ArgumentValueError, match="negative"):
        enzyme.aligned_zeros(-1, np.float64)
    with pytest.raises(enzyme.ArgumentTypeError):
        enzyme.aligned_zeros(3, "nonsense")
    with pytest.raises(enzyme.ArgumentTypeError, match="numpy array"):
        enzyme.aligned_like([1, 2, 3])


def test_a_read_only_shadow_of_a_const_array_says_the_derivative_writes_it(mod):
    x, dx = np.ones(3), np.zeros(3)
    dx.flags.writeable = False
    with pytest.raises(enzyme.ShadowValueError) as info:
        enzyme.autodiff(Reverse, mod.dot2, Duplicated(x, dx), Const(3))
    assert "accumulates into it" in str(info.value) and "not const" not in str(info.value)


def test_split_mode_still_works_after_the_copy_guard(mod):
    fw, rv = enzyme.autodiff_thunk(ReverseSplit, mod.dot2, Duplicated, Const)
    x, dx = np.array([1.0, -2.0]), np.zeros(2)
    tape = fw(x, dx, 2)
    rv(tape, 2.0)
    np.testing.assert_allclose(dx, 4 * x)
    assert copy is not None and pickle is not None  # (imports used by the child test above)


def test_an_undefined_function_is_a_link_error_naming_it(tc):
    """A call to a function no library defines: the library fails to load
    with "undefined symbol"; the advice was to clear the cache."""
    src = "double nowhere_defined_fn(double);\ndouble calls_nowhere(double x) { return nowhere_defined_fn(x); }"
    with pytest.raises(enzyme.LinkError, match="nowhere_defined_fn.*libraries="):
        mod = enzyme.compile(src, toolchain=tc)
        mod.calls_nowhere(1.0)


def test_check_functions_given_a_string():
    with pytest.raises(enzyme.ArgumentValueError, match="x must be numbers"):
        enzyme.check_functions(lambda x: x, "abc", jvp=lambda x, v: v)


def test_an_lto_bitcode_archive_is_a_link_error_saying_so(tc, tmp_path):
    """A `clang -flto` static library holds bitcode the system linker cannot
    link; the issue saw it reported as a DifferentiationError."""
    import shutil

    (tmp_path / "lib.c").write_text("double lto_scale(double x) { return 3.0 * x; }\n")
    subprocess.run([tc.clang, "-flto", "-O2", "-fPIC", "-c", str(tmp_path / "lib.c"), "-o",
                    str(tmp_path / "lib.o")], check=True)
    ar = shutil.which("llvm-ar-15") or shutil.which("llvm-ar") or shutil.which("ar")
    subprocess.run([ar, "rcs", str(tmp_path / "liblto.a"), str(tmp_path / "lib.o")], check=True)
    src = "double lto_scale(double);\ndouble uses_lto(double x) { return lto_scale(x) * x; }\n"
    with pytest.raises(enzyme.LinkError, match="holds LLVM bitcode.*-flto"):
        enzyme.compile(src, libraries=["lto"], library_dirs=[tmp_path], toolchain=tc)


def test_kernels_take_arguments_by_their_c_names(mod):
    """mod.f(x=3.0, y=5.0) was a raw TypeError and inspect.signature said
    (*args); now names bind as in Python, and mistakes are ArgumentTypeErrors."""
    import inspect

    assert mod.two(x=3.0, y=5.0) == 15.0 and mod.two(3.0, y=2.0) == 6.0
    assert str(inspect.signature(mod.two)) == "(x, y)"
    assert mod.dot2(n=2, x=np.array([3.0, 4.0])) == 25.0
    for call, match in ((lambda: mod.two(3.0, z=1.0), "no parameter named z"),
                        (lambda: mod.two(3.0, x=1.0), "both by position and by name"),
                        (lambda: mod.two(y=1.0), "missing x")):
        with pytest.raises(enzyme.ArgumentTypeError, match=match):
            call()
