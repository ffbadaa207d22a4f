"""Every bad input is an EnzymeError subclass (and the matching TypeError /
ValueError), raised before any native code runs."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

SOURCE = """
double dot(const double *x, const double *y, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += x[i] * y[i]; return s;
}
void scale(double *x, double a, int n) { for (int i = 0; i < n; i++) x[i] *= a; }
double f(double x, double y) { return x * x + 3 * y; }
short small(short s) { return s; }
struct opaque;
double uses_struct(struct opaque *p, double x) { return x; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


@pytest.fixture
def arrays():
    x = np.arange(1.0, 4.0)
    y = np.arange(4.0, 7.0)
    return x, y


def _untouched(*pairs):
    for array, before in pairs:
        np.testing.assert_array_equal(array, before)


def test_shadow_wrong_dtype(mod, arrays):
    x, y = arrays
    dx = np.zeros(3, dtype=np.float32)
    with pytest.raises(enzyme.ShadowError, match="dtype float64") as info:
        autodiff(Reverse, mod.dot, Duplicated(x, dx), Const(y), Const(3))
    assert isinstance(info.value, TypeError)
    _untouched((dx, np.zeros(3)))


def test_shadow_wrong_shape(mod, arrays):
    x, y = arrays
    dx = np.zeros(4)
    with pytest.raises(enzyme.ShadowError, match="shape") as info:
        autodiff(Reverse, mod.dot, Duplicated(x, dx), Const(y), Const(3))
    assert isinstance(info.value, ValueError)
    _untouched((dx, np.zeros(4)))


def test_shadow_not_contiguous(mod, arrays):
    x, y = arrays
    dx = np.zeros(6)[::2]
    with pytest.raises(enzyme.ShadowValueError, match="C-contiguous"):
        autodiff(Reverse, mod.dot, Duplicated(x, dx), Const(y), Const(3))


def test_shadow_read_only(mod, arrays):
    x, y = arrays
    dx = np.zeros(3)
    dx.flags.writeable = False
    with pytest.raises(enzyme.ShadowValueError, match="read-only"):
        autodiff(Reverse, mod.dot, Duplicated(x, dx), Const(y), Const(3))


def test_shadow_aliases_primal(mod, arrays):
    x, y = arrays
    with pytest.raises(enzyme.ShadowValueError, match="shares memory"):
        autodiff(Reverse, mod.dot, Duplicated(x, x), Const(y), Const(3))
    buf = np.zeros(6)
    with pytest.raises(enzyme.ShadowValueError, match="shares memory"):
        autodiff(Reverse, mod.dot, Duplicated(buf[:3], buf[2:5]), Const(y), Const(3))


def test_shadow_not_an_array(mod, arrays):
    x, y = arrays
    with pytest.raises(enzyme.ShadowTypeError, match="numpy array"):
        autodiff(Reverse, mod.dot, Duplicated(x, [0.0, 0.0, 0.0]), Const(y), Const(3))


def test_duplicated_pointer_needs_array(mod, arrays):
    _, y = arrays
    with pytest.raises(enzyme.ArgumentTypeError, match="numpy array"):
        autodiff(Reverse, mod.dot, Duplicated(1.0, np.zeros(1)), Const(y), Const(3))


def test_active_only_on_floating_scalars(mod, arrays):
    x, y = arrays
    with pytest.raises(enzyme.ActivityError, match="Active is only for floating scalars"):
        autodiff(Reverse, mod.dot, Active(x), Const(y), Const(3))
    with pytest.raises(enzyme.ActivityError, match="no derivative"):
        autodiff(Reverse, mod.dot, Const(x), Const(y), Active(3))
    with pytest.raises(enzyme.ActivityError, match="reverse-mode annotation"):
        autodiff(Forward, mod.f, Active(1.0), Const(2.0))
    with pytest.raises(TypeError):  # ActivityError is a TypeError
        autodiff(Reverse, mod.f, Duplicated(1.0, 1.0), Const(2.0))


def test_wrong_argument_count(mod):
    with pytest.raises(enzyme.ActivityError, match="takes 2 argument"):
        autodiff(Reverse, mod.f, Active(1.0))
    with pytest.raises(enzyme.ArgumentTypeError, match="takes 2 argument"):
        mod.f(1.0)
    df = enzyme.derivative(mod.dot, Reverse, Duplicated, Const, Const)
    with pytest.raises(enzyme.ActivityError, match=r"\(x, dx, y, n\)"):
        df(np.ones(3), np.ones(3), 3)


def test_primal_argument_checks(mod, arrays):
    x, y = arrays
    with pytest.raises(enzyme.ArgumentTypeError, match="dtype float64"):
        mod.dot(x.astype(np.float32), y, 3)
    with pytest.raises(enzyme.ArgumentTypeError, match="numpy array"):
        mod.dot([1.0, 2.0, 3.0], y, 3)
    with pytest.raises(enzyme.ArgumentTypeError, match="integer"):
        mod.dot(x, y, 3.0)
    with pytest.raises(enzyme.ArgumentValueError, match="does not fit"):
        mod.dot(x, y, 2 ** 40)
    with pytest.raises(enzyme.ArgumentValueError, match="range -32768..32767"):
        mod.small(40000)
    with pytest.raises(enzyme.ArgumentTypeError, match="real number"):
        mod.f("1", 2.0)
    big_endian = x.astype(">f8")
    with pytest.raises(enzyme.ArgumentTypeError):
        mod.dot(big_endian, y, 3)
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(enzyme.ArgumentValueError, match="read-only"):
        mod.scale(frozen, 2.0, 3)
    mod.dot(frozen, y, 3)  # a const pointer accepts a read-only array


def test_unsupported_type_errors_on_use_not_compile(mod):
    kernel = mod.uses_struct  # compiling the module worked
    with pytest.raises(enzyme.UnsupportedSignatureError, match="struct opaque"):
        kernel(None, 1.0)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="uses_struct"):
        autodiff(Reverse, kernel, Const(None), Active(1.0))


def test_unknown_kernel(mod):
    with pytest.raises(enzyme.KernelNotFoundError, match="dot, f"):
        _ = mod.nope
    with pytest.raises(AttributeError):
        _ = mod.nope
    assert not hasattr(mod, "nope")


def test_c_syntax_error_names_the_line(cc):
    with pytest.raises(enzyme.CompileError, match=r"<source>:3:\d+: error") as info:
        cc("double ok(double x) { return x; }\n\ndouble bad(double x) { return x +* ; }\n")
    assert "double bad(double x)" in str(info.value)
    assert info.value.diagnostics


def test_non_c_input(cc, tmp_path):
    with pytest.raises(enzyme.CompileError):
        cc("def f(x):\n    return x * x\n")
    with pytest.raises(enzyme.CompileError, match="cannot read"):
        cc(path=tmp_path / "missing.c")


def test_enzyme_failure_is_a_differentiation_error(cc):
    mod = cc("extern double opaque(double);\ndouble g(double x) { return opaque(x) * x; }\n")
    with pytest.raises(enzyme.DifferentiationError) as info:
        autodiff(Reverse, mod.g, Active(2.0))
    err = info.value
    assert err.kernel == "g"
    assert "Reverse(Active" in err.pattern
    assert "opaque" in err.enzyme_message
    assert "No augmented forward pass" in str(err) or "No derivative" in str(err)


def test_bad_mode_and_annotations(mod):
    with pytest.raises(enzyme.ActivityError, match="not a mode"):
        autodiff("reverse", mod.f, Active(1.0), Active(2.0))
    with pytest.raises(enzyme.ActivityError, match="not an activity"):
        enzyme.derivative(mod.f, Reverse, Active, float)
    with pytest.raises(enzyme.ActivityError, match="ret="):
        autodiff(Reverse, mod.f, Active(1.0), Active(2.0), ret=Duplicated)
    with pytest.raises(enzyme.ActivityError, match="seed="):
        autodiff(Reverse, mod.f, Active(1.0), Active(2.0), ret=Const, seed=2.0)

