"""The public API is precisely typed: ``mypy --strict --disallow-any-expr`` on
a user's script (tests/typing/user_script.py) reports nothing, so no ``Any``
leaks out of enzyme's signatures into user code. A second snippet with
deliberate mistakes must be reported, so that the check cannot pass by mypy
not looking (enzyme not found, the flags ignored, the file skipped).

mypy missing: a skip locally, a failure in CI (CI=true), as with the
toolchain."""

from __future__ import annotations

import importlib.util
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI

SCRIPT = Path(__file__).parent / "typing" / "user_script.py"
BRIDGES = Path(__file__).parent / "typing" / "bridges_script.py"

# Each line with a trailing comment is a mistake a type checker must catch;
# the comment is the error code mypy gives it.
WRONG_USES = '''\
from typing import Any
import enzyme
mod = enzyme.compile("double f(double x) { return x * x; }")
forward: enzyme.ForwardResult = enzyme.autodiff(enzyme.Reverse, mod.f, enzyme.Active(1.0))  # assignment
enzyme.vmap(enzyme.hessian(mod.f))  # arg-type
enzyme.autodiff_thunk(enzyme.Reverse, mod.f, enzyme.Active)  # arg-type
def leak() -> Any: ...
leaked = leak()  # misc
'''

# (the error code is optional: an error without one must not slip through)
_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)(?:\s+\[(?P<code>[a-z-]+)\])?$")
# numpy's own arrays have Any as their shape parameter (ndarray[Any, ...],
# and NDArray is ndarray[tuple[Any, ...], dtype[...]]): a numpy expression a
# user writes may show it, whatever enzyme's types are. Only that is let
# through: the message is about an expression whose type has no Any left once
# those shape parameters are taken out (an Any in a dtype, or anywhere else,
# still fails).
_CONTAINS_ANY = re.compile(r'^Expression type contains "Any" \(has type "(?P<type>.*)"\)$')
_NUMPY_SHAPE = re.compile(r"ndarray\[(?:Any|tuple\[Any, \.\.\.\]), ")


def _numpy_shape_only(message: str) -> bool:
    found = _CONTAINS_ANY.match(message)
    if found is None:
        return False
    rest, shapes = _NUMPY_SHAPE.subn("ndarray[", found["type"])
    return shapes > 0 and "Any" not in rest


@pytest.fixture(scope="module")
def mypy_present() -> None:
    if importlib.util.find_spec("mypy") is None:
        message = "mypy is not installed (pip install -e .[test] installs it)"
        if IN_CI:
            pytest.fail(message + "\n(CI=true: a missing mypy is a failure, not a skip)")
        pytest.skip(message)


def _mypy(tmp_path: Path, *files: Path, flags: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str],
                                                                             list[re.Match[str]]]:
    """mypy --strict --disallow-any-expr on ``files``, with a fresh cache and
    an empty configuration (no setting of this repository or of the user's
    home can loosen it), from a directory outside the repository."""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--disallow-any-expr", "--config-file", str(config),
         "--cache-dir", str(tmp_path / "mypy-cache"), "--show-error-codes", "--no-pretty",
         "--no-color-output", *flags, *map(str, files)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    # 0: no error; 1: errors reported; anything else: mypy itself failed
    assert done.returncode in (0, 1), f"mypy failed (exit {done.returncode}):\n{output}"
    assert f"{len(files)} source file" in output, f"mypy did not check the files:\n{output}"
    errors = [m for m in map(_ERROR.match, done.stdout.splitlines()) if m]
    assert errors or done.returncode == 0, f"mypy exited 1 with no error line:\n{output}"
    return done, errors


def test_user_script_has_no_type_errors_and_wrong_uses_are_caught(mypy_present: None, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_uses.py"
    wrong.write_text(WRONG_USES)
    done, errors = _mypy(tmp_path, SCRIPT, wrong)
    output = done.stdout + done.stderr

    in_script = [m for m in errors if Path(m["path"]).name == SCRIPT.name]
    unexpected = [m.group(0) for m in in_script if not _numpy_shape_only(m["message"])]
    assert not unexpected, ("mypy --strict --disallow-any-expr reports errors in "
                            f"{SCRIPT.name}:\n" + "\n".join(unexpected) + f"\n\nmypy's output:\n{output}")

    expected = {number: line.rsplit("# ", 1)[1] for number, line in enumerate(WRONG_USES.splitlines(), 1)
                if "  # " in line}
    reported = {(int(m["line"]), m["code"]) for m in errors if Path(m["path"]).name == wrong.name}
    missed = [f"line {number} ([{code}]): {WRONG_USES.splitlines()[number - 1]}"
              for number, code in expected.items() if (number, code) not in reported]
    assert not missed, "mypy did not report these deliberate mistakes:\n" + "\n".join(missed) + \
        f"\n\nmypy's output:\n{output}"


@pytest.mark.parametrize("message, let_through", [
    ('Expression type contains "Any" (has type "ndarray[Any, dtype[float64]]")', True),
    ('Expression type contains "Any" (has type "tuple[ndarray[tuple[Any, ...], dtype[float64]], float]")', True),
    ('Expression type contains "Any" (has type "ndarray[Any, dtype[Any]]")', False),
    ('Expression type contains "Any" (has type "Callable[..., Any]")', False),
    ('Expression type contains "Any" (has type "tuple[ndarray[Any, dtype[float64]], Any]")', False),
    ('Expression has type "Any"', False),
])
def test_only_numpy_shape_any_is_let_through(message: str, let_through: bool) -> None:
    assert _numpy_shape_only(message) is let_through


def test_user_script_runs(tc: object) -> None:
    """The script's narrowing (isinstance, asserts) holds for what the calls
    really return: the types it was checked against are the true ones."""
    runpy.run_path(str(SCRIPT), run_name="__main__")


@pytest.mark.jax  # (runs the script, which imports JAX)
def test_bridge_functions_return_typed_values(mypy_present: None, tc: object, tmp_path: Path) -> None:
    """enzyme.torch / enzyme.jax functions give tensors and jax.Arrays, not
    Any. (--allow-untyped-calls: torch's backward and jax.config.update are
    untyped themselves; an untyped enzyme function would still return Any,
    which --disallow-any-expr reports.)"""
    from conftest import need

    need("torch")
    need("jax")
    done, errors = _mypy(tmp_path, BRIDGES, flags=("--allow-untyped-calls",))
    unexpected = [m.group(0) for m in errors if not _numpy_shape_only(m["message"])]
    assert not unexpected, "\n".join(unexpected) + f"\n\nmypy's output:\n{done.stdout}{done.stderr}"
    runpy.run_path(str(BRIDGES), run_name="__main__")
