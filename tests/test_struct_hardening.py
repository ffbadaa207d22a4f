"""Structs, globals and symbols a hostile user can write: over-aligned and
packed structs, anonymous members, bit-fields, thread-local and zero-length
globals, hidden and inline functions, non-ASCII names, and contracts too
large to evaluate. Each is either supported with the right numbers or
refused with an EnzymeError that says what to do."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, ForwardWithPrimal, Reverse, autodiff
from enzyme.codegen import struct_definitions
from enzyme.diagnostics import explain
from enzyme.signature import CType


def _aligned_zeros(n: int, dtype: np.dtype, alignment: int, offset: int = 0) -> np.ndarray:
    """n zeroed records at an address that is ``offset`` past a multiple of ``alignment``."""
    buf = np.zeros(n * dtype.itemsize + 2 * alignment, np.uint8)
    start = (-buf.ctypes.data % alignment) + offset
    return buf[start:start + n * dtype.itemsize].view(dtype)


# ---- 1. over-aligned structs -------------------------------------------------

OVERALIGNED = r"""
typedef struct { _Alignas(32) double v[4]; } V4;
double norm2(const V4 *p, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) { V4 q = p[i]; for (int k = 0; k < 4; k++) s += q.v[k] * q.v[k]; }
    return s;
}
void copyv(V4 *dst, const V4 *src, int n) { for (int i = 0; i < n; i++) dst[i] = src[i]; }
V4 make(double x) { V4 r; for (int k = 0; k < 4; k++) r.v[k] = (k + 1) * x * x; return r; }
"""


@pytest.fixture(scope="module")
def overaligned(cc):
    return cc(OVERALIGNED)  # -march=native: aligned vector moves


def test_overaligned_struct_dtype_carries_the_c_alignment(overaligned):
    dt = overaligned.norm2.dtype("p")
    assert dt.itemsize == 32 and dt.names == ("v",)
    assert dt.metadata["c_alignment"] == 32
    # arrays built from it keep it, and still compare equal to a plain layout
    assert np.zeros(2, dt).dtype.metadata["c_alignment"] == 32
    assert dt == np.dtype({"names": ["v"], "formats": [("<f8", (4,))], "offsets": [0], "itemsize": 32})


def test_misaligned_overaligned_arrays_are_refused_before_the_call(overaligned):
    dt = overaligned.copyv.dtype("dst")
    src, dst = _aligned_zeros(3, dt, 32, offset=16), _aligned_zeros(3, dt, 32, offset=16)
    src["v"] = 2.0
    with pytest.raises(enzyme.ArgumentValueError, match=r"not a multiple of 32.*aligned_zeros"):
        overaligned.copyv(dst, src, 3)
    assert (dst["v"] == 0).all()   # nothing was called
    p, dp_bad = _aligned_zeros(3, dt, 32), _aligned_zeros(3, dt, 32, offset=16)
    with pytest.raises(enzyme.ShadowValueError, match="not a multiple of 32"):
        autodiff(Reverse, overaligned.norm2, Duplicated(p, dp_bad), Const(3))


def test_aligned_overaligned_arrays_give_right_numbers(overaligned):
    dt = overaligned.norm2.dtype("p")
    p, dp = enzyme.aligned_zeros(3, dt), enzyme.aligned_like(_aligned_zeros(3, dt, 32, offset=16))
    assert p.ctypes.data % 32 == 0 and dp.ctypes.data % 32 == 0
    p["v"] = np.arange(12.0).reshape(3, 4)
    assert overaligned.norm2(p, 3) == pytest.approx(float((np.arange(12.0) ** 2).sum()))
    autodiff(Reverse, overaligned.norm2, Duplicated(p, dp), Const(3))
    np.testing.assert_allclose(dp["v"], 2 * p["v"], rtol=1e-14)
    dst = _aligned_zeros(3, dt, 32)
    overaligned.copyv(dst, p, 3)
    np.testing.assert_array_equal(dst["v"], p["v"])


def test_overaligned_struct_return_is_rebuilt_with_its_alignment(overaligned):
    lines = struct_definitions(overaligned.make.signature.ret)
    assert any("_Alignof" in line and "== 32" in line for line in lines)
    r = overaligned.make(1.5)
    np.testing.assert_allclose(r["v"], [2.25, 4.5, 6.75, 9.0])
    t = autodiff(Forward, overaligned.make, Duplicated(1.5, 1.0)).tangent
    np.testing.assert_allclose(t["v"], [3.0, 6.0, 9.0, 12.0])


# ---- 2. anonymous members, bit-fields, long double, packed, mixed returns ------

def test_anonymous_struct_members_are_fields_of_the_struct(cc):
    mod = cc(r"""
struct S { struct { double a, b; }; double c; int k; };
double an(const struct S *s, int n) {
    double t = 0; for (int i = 0; i < n; i++) t += s[i].a * s[i].b + s[i].c * s[i].k; return t;
}""")
    dt = mod.an.dtype("s")
    assert dt.names == ("a", "b", "c", "k")
    assert [dt.fields[n][1] for n in dt.names] == [0, 8, 16, 24]
    s = np.zeros(2, dt)
    s["a"], s["b"], s["c"], s["k"] = [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [2, 3]
    assert mod.an(s, 2) == pytest.approx(1 * 3 + 2 * 4 + 5 * 2 + 6 * 3)
    ds = np.zeros_like(s)
    autodiff(Reverse, mod.an, Duplicated(s, ds), Const(2))
    np.testing.assert_allclose(ds["a"], s["b"])
    np.testing.assert_allclose(ds["b"], s["a"])
    np.testing.assert_allclose(ds["c"], s["k"])


def test_dtype_of_bitfield_struct_or_long_double_pointer_is_a_clear_error(cc):
    mod = cc(r"""
struct B { int flag : 1; int k : 7; double v; };
double bf(const struct B *b, int n) { double t = 0; for (int i = 0; i < n; i++) t += b[i].v; return t; }
long double ld(const long double *x, int n) { long double t = 0; for (int i = 0; i < n; i++) t += x[i]; return t; }
struct U { union { int u; float f; }; double v; };
double un(const struct U *u) { return u->v; }
""")
    with pytest.raises(enzyme.UnsupportedSignatureError, match="bit-field.*whole fields"):
        mod.bf.dtype("b")
    with pytest.raises(enzyme.UnsupportedSignatureError, match="long double"):
        mod.ld.dtype("x")
    with pytest.raises(enzyme.UnsupportedSignatureError, match="anonymous union"):
        mod.un.dtype("u")


def test_packed_struct_returned_by_value(cc):
    mod = cc(r"""
struct __attribute__((packed)) P { char c; double d; };
struct P pk(double x) { struct P r; r.c = 1; r.d = x * x; return r; }
""")
    r = mod.pk(3.0)
    assert r.dtype.itemsize == 9 and int(r["c"]) == 1 and float(r["d"]) == 9.0
    res = autodiff(ForwardWithPrimal, mod.pk, Duplicated(3.0, 1.0))
    assert float(res.tangent["d"]) == pytest.approx(6.0)
    assert float(res.primal["d"]) == 9.0


def test_forward_tangent_of_a_struct_in_an_integer_register_is_refused_before_building(cc):
    mod = cc(r"""
struct M { float a; int k; };
struct M mx(float x) { struct M r; r.a = x * x; r.k = 3; return r; }
struct W { float a; float b; int k; };
struct W wide(float x) { struct W r; r.a = x * x; r.b = 3 * x; r.k = 3; return r; }
""")
    r = mod.mx(2.0)
    assert float(r["a"]) == 4.0 and int(r["k"]) == 3
    with pytest.raises(enzyme.DifferentiationError, match="integer register") as info:
        autodiff(Forward, mod.mx, Duplicated(np.float32(2.0), np.float32(1.0)))
    assert info.value.code == "struct-return-integer-register"
    assert "Fix:" in str(info.value)
    # the floats of W fill their own eightbyte: its tangent is computed
    t = autodiff(Forward, mod.wide, Duplicated(np.float32(2.0), np.float32(1.0))).tangent
    assert float(t["a"]) == pytest.approx(4.0) and float(t["b"]) == pytest.approx(3.0)


def test_derivative_through_a_call_passing_floats_in_an_integer_register_is_refused(cc):
    # Reverse mode gave 0 here, silently (the correct derivative is 2 x k = 12).
    mod = cc(r"""
struct M { float a; int k; };
__attribute__((noinline)) struct M mk(float x) { struct M r; r.a = x * x; r.k = 3; return r; }
float use(float x) { struct M m = mk(x); return m.a * (float)m.k; }
float fine(float x) { return 3 * x * x; }
""")
    assert mod.use(2.0) == 12.0
    for mode, arg in ((Reverse, Active(np.float32(2.0))),
                      (Forward, Duplicated(np.float32(2.0), np.float32(1.0)))):
        with pytest.raises(enzyme.DifferentiationError, match="'mk'.*integer register") as info:
            autodiff(mode, mod.use, arg)
        assert info.value.code == "struct-in-integer-register"
    assert autodiff(Reverse, mod.fine, Active(np.float32(2.0))).derivs[0] == pytest.approx(12.0)


def test_enzyme_failure_on_struct_packing_gets_its_own_hint():
    _, bits = explain("Enzyme: cannot handle unknown binary operator:   %5 = lshr i64 %4, 1")
    _, packed = explain("Enzyme: cannot handle unknown binary operator:   "
                        "%.sroa.0.0.insert.insert = or i64 %.sroa.0.0.insert.ext, 12884901888")
    assert bits.code == packed.code == "unknown-binary-operator"
    assert "inverse square root" in bits.what and "struct" not in bits.hint
    assert "struct" in packed.what and "inverse square root" not in packed.what + packed.hint


def test_packed_and_pragma_pack_layouts_are_rebuilt_exactly():
    for layout in ({"names": ["c", "d"], "formats": ["|i1", "<f8"], "offsets": [0, 1],
                    "itemsize": 9, "align": 1},
                   {"names": ["c", "d", "e"], "formats": ["|i1", "<f8", "<i4"], "offsets": [0, 2, 10],
                    "itemsize": 14, "align": 2}):
        lines = struct_definitions(CType("struct", "struct P", "void", "struct", layout=json.dumps(layout)))
        assert any("packed" in line for line in lines)
        assert any("sizeof(struct __efi_s_" in line and f"== {layout['itemsize']}" in line
                   for line in lines)


# ---- 3. thread-local globals --------------------------------------------------

def test_thread_local_globals_are_not_viewable(cc):
    mod = cc(r"""
__thread double t = 1.5;
_Thread_local double t2 = 2.0;
double g = 2.5;
void set_t(double v) { t = v; }
double f(double x) { return t * x * x; }
""")
    assert "t" not in list(mod.globals) and "t2" not in list(mod.globals) and "g" in list(mod.globals)
    errors = []

    def on_a_thread():
        try:
            mod.globals["t"]
        except enzyme.EnzymeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=on_a_thread)
    worker.start()
    worker.join()
    assert isinstance(errors[0], enzyme.GlobalNotFoundError)
    assert "thread-local" in str(errors[0]) and "C function" in str(errors[0])
    with pytest.raises(enzyme.GlobalNotFoundError, match="thread-local"):
        mod.globals["t2"]
    # derivatives of code reading the calling thread's copy are right
    mod.set_t(3.0)
    assert enzyme.grad(mod.f)(2.0) == pytest.approx(2 * 3.0 * 2.0)


# ---- 4. hidden, inline and non-ASCII functions; zero-length arrays -----------

def test_functions_the_library_does_not_export_are_refused_clearly(cc):
    mod = cc(r"""
__attribute__((visibility("hidden"))) double hid(double x) { return x * x; }
inline double c99(double x) { return x * x; }
inline double both(double x);
double both(double x) { return 3 * x; }     /* a non-inline declaration: exported */
__attribute__((visibility("hidden"))) double hg = 2.0;
double useh(double x) { return hg * x * x; }
""")
    with pytest.raises(enzyme.UnsupportedSignatureError, match=r"does not export 'hid'.*visibility"):
        mod.hid(3.0)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="'c99' is an inline definition"):
        mod.c99(3.0)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="inline definition"):
        enzyme.grad(mod.c99)(3.0)
    assert mod.both(2.0) == 6.0
    assert mod.useh(3.0) == 18.0 and enzyme.grad(mod.useh)(3.0) == pytest.approx(12.0)
    assert "hg" not in list(mod.globals)

    hidden_all = cc("double fv(double x) { return x * x; }", flags=["-fvisibility=hidden"])
    with pytest.raises(enzyme.UnsupportedSignatureError, match="fvisibility=hidden"):
        hidden_all.fv(3.0)


def test_gnu89_extern_inline_is_not_exported_but_plain_inline_is(cc):
    mod = cc(r"""
extern inline double ei(double x) { return x * x; }
inline double pi(double x) { return 2 * x; }
""", flags=["-std=gnu89"])
    with pytest.raises(enzyme.UnsupportedSignatureError, match="inline definition"):
        mod.ei(3.0)
    assert mod.pi(3.0) == 6.0


def test_non_ascii_names_and_zero_length_arrays(cc):
    mod = cc("double f\u00e9(double x) { return x * x; }\n"
             "double zarr[0];\n"
             "double zk(double x) { return x * x; }\n")
    with pytest.raises(enzyme.UnsupportedSignatureError, match="not ASCII"):
        mod["f\u00e9"](3.0)
    assert mod.zk(3.0) == 9.0
    assert "zarr" not in dict(mod.globals)
    with pytest.raises(enzyme.GlobalNotFoundError, match="zero-length"):
        mod.globals["zarr"]


# ---- 5. locations of source text ---------------------------------------------

def test_unsupported_signature_location_names_the_source_text(cc):
    mod = cc("double ok(double x){return x;}\n\ndouble bad(void *p, double x){return x;}\n")
    assert mod.bad.signature.location == "<source>:3"
    with pytest.raises(enzyme.UnsupportedSignatureError, match=r"^<source>:3: kernel 'bad'"):
        mod.bad(None, 1.0)


# ---- 6. contracts too large to evaluate --------------------------------------

def test_huge_length_contracts_are_a_contract_error(cc):
    src = "double plain(const double *x, int n) { return x[0]; }\n"
    for expression in (" + ".join(["n"] * 2000), "(" * 2000 + "n" + ")" * 2000, "-" * 5000 + "n"):
        with pytest.raises(enzyme.ContractError, match="too large"):
            cc(src, sizes={"plain": {"x": expression}})
    annotated = cc("#include <enzyme/enzyme.h>\n"
                   f"double c(const double *ENZYME_LEN({' + '.join(['n'] * 2000)}) x, int n) "
                   "{ return x[0]; }\n")
    with pytest.raises(enzyme.ContractError, match="too large"):
        annotated.c(np.ones(2000), 1)
    # a long but reasonable contract still works
    mod = cc(src, sizes={"plain": {"x": " + ".join(["n"] * 50)}})
    assert mod.plain(np.ones(100), 2) == 1.0
    with pytest.raises(enzyme.LengthError):
        mod.plain(np.ones(99), 2)
