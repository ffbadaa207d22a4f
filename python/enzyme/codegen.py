"""Stage 4: generate the C wrapper around an Enzyme call, and its cffi cdef.

One generator writes both, so the C definition and the declaration cffi uses
cannot disagree. Every wrapper has one calling convention: it returns
``void`` and writes scalar results through out-pointers, so cffi never
returns a struct. Inside, the kernel is called through a small helper whose
floating scalars are passed by pointer and whose return value is stored
through a pointer; Enzyme then differentiates a ``void`` function whose
every active quantity lives in memory, so there is no struct-of-adjoints
return type to declare (the source of "Cannot cast return type of
gradient"), and a return seed is simply the initial value of the return
slot's shadow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from .activity import Activity, DerivativeSpec, HvpSpec
from .errors import DifferentiationError
from .params import Role, Slot, pointee_type, primal_slots
from .signature import (
    REGISTRATIONS_MARK,
    SUPPORT_MARK,
    CType,
    Signature,
    integer_register_floats,
    layout_size,
)

__all__ = ["GeneratedWrapper", "generate_blas_support", "generate_derivative", "generate_hvp", "primal_cdef",
           "generate_registrations", "GeneratedSplit", "generate_split", "generate_primal_wrapper",
           "struct_definitions", "generate_primal_shim"]

# Bump when the generated code changes shape: it is part of every cache key.
CODEGEN_VERSION = "8"


@dataclass(frozen=True)
class GeneratedWrapper:
    """An entry point: its C, its cffi cdef, and the slots (params.Slot) both
    were rendered from."""

    entry: str
    c_source: str
    cdef: str
    params: tuple[Slot, ...]
    # ``void packed(void **slots)``: the same call with every argument passed
    # through one array (pointers as themselves, scalars by address), for the
    # C fast path (native/fastcall.c), which cannot call arbitrary signatures.
    packed_entry: str = ""
    # ``void batch(char *const *bases, const long long *strides, long long lo,
    # long long hi)``: the call for each i in [lo, hi), slot k at bases[k] +
    # i * strides[k] (enzyme.vmap's loop, native/fastcall.c's run_batch).
    batch_entry: str = ""


def _packed(entry: str, params: tuple[Slot, ...]) -> tuple[str, str, str]:
    """Definition, cdef and name of the packed twin of ``entry``."""
    name = entry.replace("__efi_d_", "__efi_pk_", 1)
    args = [f"({p.c_type})s[{i}]" if p.pointer else f"*({p.c_type} *)s[{i}]"
            for i, p in enumerate(params)]
    return (f"void {name}(void **s) {{ {entry}({', '.join(args)}); }}",
            f"void {name}(void **);", name)


_BATCH_SIGNATURE = "(char *const *b, const long long *st, const long long *z, long long lo, long long hi)"
BATCH_CDEF = "(char *const *, const long long *, const long long *, long long, long long)"


def _batch_twin(entry: str, params: tuple[Slot, ...]) -> tuple[str, str, str]:
    """Definition, cdef and name of the batch twin of ``entry`` (see
    :attr:`GeneratedWrapper.batch_entry`)."""
    name = entry.replace("__efi_d_", "__efi_bt_", 1)
    # (through a local alias: a call of the exported entry from a shared
    # library goes through the PLT, an extra jump per element)
    local = entry.replace("__efi_d_", "__efi_dl_", 1)
    # Written slots are zeroed element by element, z[k] bytes when z[k] > 0,
    # just before their call (reverse-mode shadows accumulate): one pass over
    # memory instead of a zeroing pass and then the loop.
    zeroed = [k for k, p in enumerate(params) if p.writable]
    zeroing = "".join(f"if (z{k}) __builtin_memset(b{k} + i * s{k}, 0, (unsigned long)z{k}); " for k in zeroed)
    return (f"static __typeof__({entry}) {local} __attribute__((alias(\"{entry}\")));\n"
            f"void {name}{_BATCH_SIGNATURE} {{\n{_batch_locals(len(params))}"
            + "".join(f"    const long long z{k} = z[{k}];\n" for k in zeroed)
            + f"    for (long long i = lo; i < hi; i++) {{ {zeroing}{local}({', '.join(_strided(params))}); }}\n}}",
            f"void {name}{BATCH_CDEF};", name)


def _batch_locals(n: int) -> str:
    # (copied into locals: the loop's calls cannot change them, so they stay
    # in registers instead of being reloaded around every call)
    return "".join(f"    char *const b{k} = b[{k}]; const long long s{k} = st[{k}];\n" for k in range(n))


def _strided(params: Sequence[Slot]) -> list[str]:
    return [f"({p.c_type})(b{k} + i * s{k})" if p.pointer else f"*({p.c_type} *)(b{k} + i * s{k})"
            for k, p in enumerate(params)]


def generate_primal_shim(signature: Signature) -> tuple[str, str, str] | None:
    """C source and names of ``void shim(void **s)``, which calls a kernel of
    this signature through the function pointer in ``s[n]`` (``n`` its
    parameter count) with the slots before it as its arguments (pointers as
    themselves, scalars by address) and stores a return value at ``s[n + 1]``:
    the primal call in the packed convention of the derivatives' twins (see
    :func:`_packed`), for callers that cannot call arbitrary signatures (the
    XLA custom call of enzyme.jax); and of its batch twin (see
    :attr:`GeneratedWrapper.batch_entry`). None for signatures it cannot pass
    (structs by value, row tables, function pointers).

    Examples
    --------
    >>> from enzyme.signature import CType, Param, Signature
    >>> x = CType("pointer", "const double *", "double", "float64", const=True)
    >>> n = CType("scalar", "int", "int", "int32")
    >>> sig = Signature("f", (Param("x", x), Param("n", n)), CType("scalar", "double", "double", "float64"), "f.c:1")
    >>> print(generate_primal_shim(sig)[0])
    typedef double (*__efi_fn)(const double *, int);
    void __efi_px(void **s) { *(double *)s[3] = ((__efi_fn)s[2])((const double *)s[0], *(int *)s[1]); }
    void __efi_pxb(char *const *b, const long long *st, const long long *z, long long lo, long long hi) {
        char *const b0 = b[0]; const long long s0 = st[0];
        char *const b1 = b[1]; const long long s1 = st[1];
        __efi_fn fn = (__efi_fn)b[2];
        (void)z;
        for (long long i = lo; i < hi; i++) *(double *)(b[3] + i * st[3]) = fn((const double *)(b0 + i * s0), \
*(int *)(b1 + i * s1));
    }
    """
    types = [signature.ret, *(p.ctype for p in signature.params)]
    if any(t.kind not in ("scalar", "pointer", "void") or t.is_struct or t.rows for t in types):
        return None
    if signature.ret.kind == "pointer":
        return None
    params = primal_slots(signature)
    n = len(params)
    args = [f"({p.c_type})s[{i}]" if p.pointer else f"*({p.c_type} *)s[{i}]" for i, p in enumerate(params)]
    call = f"((__efi_fn)s[{n}])({', '.join(args)})"
    ret = signature.ret.c_decl
    body = call if ret == "void" else f"*({ret} *)s[{n + 1}] = {call}"
    batch_call = f"fn({', '.join(_strided(params))})"
    batch_body = batch_call if ret == "void" else f"*({ret} *)(b[{n + 1}] + i * st[{n + 1}]) = {batch_call}"
    return (f"typedef {ret} (*__efi_fn)({', '.join(p.c_type for p in params) or 'void'});\n"
            f"void __efi_px(void **s) {{ {body}; }}\n"
            f"void __efi_pxb{_BATCH_SIGNATURE} {{\n{_batch_locals(n)}"
            f"    __efi_fn fn = (__efi_fn)b[{n}];\n    (void)z;\n"
            f"    for (long long i = lo; i < hi; i++) {batch_body};\n}}", "__efi_px", "__efi_pxb")


def primal_cdef(signature: Signature) -> str:
    """The cffi declaration of a kernel itself."""
    return signature.c_prototype + ";"


def _value(ctype: CType) -> CType:
    """The scalar type stored at a pointer, or the scalar itself."""
    return CType("scalar", ctype.base, ctype.base, ctype.dtype)


_C_TYPES = {"f8": "double", "f4": "float", "i1": "signed char", "u1": "unsigned char",
            "i2": "short", "u2": "unsigned short", "i4": "int", "u4": "unsigned int",
            "i8": "long long", "u8": "unsigned long long", "b1": "_Bool"}


def _format_align(fmt: object) -> int:
    """The alignment C gives a field of this layout format by default."""
    if isinstance(fmt, dict):
        return fmt.get("align") or max(map(_format_align, fmt["formats"]), default=1)
    if isinstance(fmt, list):
        return _format_align(fmt[0])
    return layout_size(fmt)  # x86-64 aligns every scalar type here to its size


def _natural_layout(spec: dict) -> bool:
    """Would C lay the fields out at the recorded offsets, size and alignment
    without attributes (no packing, no _Alignas)?"""
    offset, align = 0, 1
    for fmt, recorded in zip(spec["formats"], spec["offsets"]):
        field_align = _format_align(fmt)
        if -(-offset // field_align) * field_align != recorded:
            return False
        offset = recorded + layout_size(fmt)
        align = max(align, field_align)
    return spec.get("align", align) == align and -(-offset // align) * align == spec["itemsize"]


def struct_definitions(ctype: CType) -> list[str]:
    """C definitions of the struct a kernel returns by value (nested structs
    first), rebuilt from clang's layout, with static assertions that the
    rebuilt struct has the same size, alignment and offsets; empty for other
    types.

    A struct C would not lay out as recorded (``packed``, ``_Alignas``,
    ``#pragma pack``) is rebuilt packed, each field aligned to the largest
    power of two (up to the struct's alignment) dividing its offset, and the
    struct aligned as recorded: C pads before a field less than its
    alignment, so that places every field where clang did. The fields keep
    their types and offsets, so the ABI classification (which registers
    carry the struct) is the original's."""
    if ctype.kind != "struct":
        return []
    lines: list[str] = []

    def define(spec: dict) -> str:
        tag = f"__efi_s_{hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:10]}"
        natural = _natural_layout(spec)
        struct_align = spec.get("align") or 1
        fields, asserts = [], []
        for name, fmt, offset in zip(spec["names"], spec["formats"], spec["offsets"]):
            dims = ""
            if isinstance(fmt, list):
                fmt, shape = fmt
                dims = "".join(f"[{n}]" for n in shape)
            ctype_name = f"struct {define(fmt)}" if isinstance(fmt, dict) else _C_TYPES[fmt[1:]]
            attribute = ""
            if not natural and offset:
                field_align = min(offset & -offset, struct_align)
                if field_align > 1:
                    attribute = f" __attribute__((aligned({field_align})))"
            fields.append(f"{ctype_name} {name}{dims}{attribute};")
            asserts.append(f"_Static_assert(__builtin_offsetof(struct {tag}, {name}) == {offset}, "
                           f"\"enzyme-ffi: layout of {name}\");")
        attributes = "" if natural else f"__attribute__((packed, aligned({struct_align}))) "
        lines.append(f"struct {attributes}{tag} {{ {' '.join(fields)} }};")
        lines.append(f"_Static_assert(sizeof(struct {tag}) == {spec['itemsize']}, "
                     f"\"enzyme-ffi: struct size\");")
        if spec.get("align"):
            lines.append(f"_Static_assert(_Alignof(struct {tag}) == {spec['align']}, "
                         f"\"enzyme-ffi: struct alignment\");")
        lines.extend(asserts)
        return tag

    tag = define(json.loads(ctype.layout))
    assert tag == ctype.struct_tag
    return lines


def generate_primal_wrapper(sig: Signature) -> GeneratedWrapper:
    """A void + out-pointer wrapper for a kernel returning a struct by value,
    so that cffi never returns a struct."""
    uid = _uid(sig.c_prototype, "primal")
    entry = f"__efi_p_{sig.name}_{uid}"
    params = primal_slots(sig, struct_out=True)
    entry_sig = ", ".join(p.c_decl for p in params)
    call = f"{sig.name}({', '.join(f'a{i}' for i in range(len(sig.params)))})"
    lines = [f"/* enzyme-ffi generated: primal wrapper of {sig} */",
             *struct_definitions(sig.ret),
             f"extern {sig.c_prototype};",
             # out is caller memory that need not have the struct's
             # alignment (over-aligned structs): copied, not stored as a struct
             f"void {entry}({entry_sig}) {{ {sig.ret.c_decl} r = {call}; "
             "__builtin_memcpy(out, &r, sizeof r); }", ""]
    return GeneratedWrapper(entry=entry, c_source="\n".join(lines),
                            cdef=f"void {entry}({entry_sig});", params=params)


def _uid(*parts: str) -> str:
    return hashlib.sha256("|".join((CODEGEN_VERSION, *parts)).encode()).hexdigest()[:12]


class _Call:
    """One Enzyme call being assembled: the helper around the kernel, the
    entry point's parameters, and the call's argument list."""

    def __init__(self, sig: Signature, width: int, runtime_activity: bool = False,
                 callbacks: tuple[tuple[int, tuple[str, ...]], ...] = ()) -> None:
        self.sig = sig
        self.width = width
        # function-pointer parameters: their candidate kernels, and those used
        self.candidates = dict(callbacks)
        self.callbacks: list[tuple[int, tuple[str, ...]]] = []
        self.helper_params: list[tuple[str, str]] = []  # (C type, name)
        self.call_in_helper: list[str] = []
        self.entry_params: list[Slot] = []
        self.outputs: list[Slot] = []
        self.locals: list[str] = []
        self.enzyme_args: list[tuple[str, str]] = []  # (C type, expression)
        self.after: list[str] = []
        self.helper_ret = "void"
        if runtime_activity:
            self.enzyme_args.append(("int", "enzyme_runtime_activity"))
        if width > 1:
            self.enzyme_args += [("int", "enzyme_width"), ("int", str(width))]

    def lanes(self, fmt: str) -> list[str]:
        return [fmt.format(w=w) for w in range(self.width)]

    def const(self, index: int, ctype: CType) -> None:
        if ctype.is_function:
            self.callback(index, ctype)
            return
        name = f"a{index}"
        self.helper_params.append((ctype.c_decl, name))
        self.call_in_helper.append(name)
        self.entry_params.append(Slot.primal(index, ctype, name))
        self.enzyme_args += [("int", "enzyme_const"), (ctype.c_decl, name)]

    def callback(self, index: int, ctype: CType) -> None:
        """A function-pointer parameter, passed as the index of the kernel
        chosen among its candidates: the helper calls the kernel with that
        function's address as a constant (see :func:`_dispatch`), which is
        what Enzyme needs to differentiate through the call."""
        name = f"a{index}"
        self.helper_params.append(("int", name))
        self.call_in_helper.append(_callback_placeholder(index))
        self.entry_params.append(Slot(Role.CALLBACK, index, ctype, name, "int", False))
        self.enzyme_args += [("int", "enzyme_const"), ("int", name)]
        self.callbacks.append((index, self.candidates.get(index, ())))

    def pointer(self, index: int, ctype: CType, shadow_writable: bool, noneed: bool,
                shadow_role: Role = Role.SHADOW) -> None:
        name = f"a{index}"
        self.helper_params.append((ctype.c_decl, name))
        self.call_in_helper.append(name)
        self.entry_params.append(Slot.primal(index, ctype, name))
        shadows = [Slot(shadow_role, index, ctype, f"d{name}_{w}", pointee_type(ctype), True,
                        shadow_writable, lane=w) for w in range(self.width)]
        self.entry_params += shadows
        self.enzyme_args += [("int", "enzyme_dupnoneed" if noneed else "enzyme_dup"),
                             (ctype.c_decl, name)]
        self.enzyme_args += [(d.c_type, d.name) for d in shadows]

    def scalar(self, index: int, ctype: CType, active: bool) -> None:
        """A floating scalar, handed to the helper by pointer so that its
        derivative lives in memory: Active (reverse) or with tangents (forward)."""
        name, base = f"a{index}", ctype.base
        self.helper_params.append((f"const {base} *", name))
        self.call_in_helper.append(f"*{name}")
        self.entry_params.append(Slot(Role.PRIMAL, index, ctype, name, base, False))
        if active:
            self.locals.append(f"{base} v{name} = {name}, " + ", ".join(self.lanes(f"s{name}_{{w}} = 0")) + ";")
            for w in range(self.width):
                self.outputs.append(Slot(Role.ADJOINT_OUT, index, ctype, f"out_d{name}_{w}", base,
                                         True, True, lane=w))
                self.after.append(f"*out_d{name}_{w} = s{name}_{w};")
        else:
            for w in range(self.width):
                self.entry_params.append(Slot(Role.SHADOW, index, ctype, f"d{name}_{w}", base,
                                              False, lane=w))
            self.locals.append(f"{base} v{name} = {name}, "
                               + ", ".join(self.lanes(f"s{name}_{{w}} = d{name}_{{w}}")) + ";")
        self.enzyme_args += [("int", "enzyme_dup"), (f"const {base} *", f"&v{name}")]
        self.enzyme_args += [(f"{base} *", s) for s in self.lanes(f"&s{name}_{{w}}")]

    def returns(self, ret: Activity | None, reverse: bool, with_primal: bool,
                seed_param: bool = True) -> str:
        """Add the return slot; give the helper's body. An Active return is
        seeded by ``seed_*`` parameters, or by 1 when ``seed_param`` is false."""
        call = f"{self.sig.name}({', '.join(self.call_in_helper)})"
        if ret is None:
            return f"{call};"
        struct = self.sig.ret.kind == "struct"
        rtype = self.sig.ret if struct else _value(self.sig.ret)
        rbase = rtype.c_decl if struct else rtype.base
        # A struct result leaves through an untyped pointer to caller memory
        # laid out like it (cffi has no declaration of the struct), copied
        # bytewise since that memory may lack the struct's alignment.
        out_base = "void" if struct else rbase

        def store(out: str, value: str) -> str:
            return f"__builtin_memcpy({out}, &{value}, sizeof {value});" if struct else f"*{out} = {value};"
        if reverse and ret is Activity.ACTIVE and not with_primal and self.width == 1 and not struct:
            # The helper returns the (seeded) value, Enzyme seeds it with 1:
            # d(seed * f) = seed * df. Storing the result through a pointer
            # instead (the form below) made Enzyme v0.0.289 compute wrong
            # adjoints for some loops (a strided reduction of a select, then
            # of squares: tests/test_pipeline_regressions.py), as does any
            # use of the primal result; so it is kept for what needs it.
            self.helper_ret = rbase
            if not seed_param:
                return f"return {call};"
            self.entry_params.append(Slot(Role.SEED, -1, rtype, "seed_0", rbase, False))
            self.helper_params.append((rbase, "seed"))
            self.enzyme_args += [("int", "enzyme_const"), (rbase, "seed_0")]
            return f"return seed * {call};"
        self.helper_params.append((f"{rbase} *", "ret"))
        if ret is Activity.ACTIVE and not seed_param:
            seeds = self.lanes("dr_{w} = 1")
        elif ret is Activity.ACTIVE:
            for w in range(self.width):
                self.entry_params.append(Slot(Role.SEED, -1, rtype, f"seed_{w}", rbase, False, lane=w))
            seeds = self.lanes("dr_{w} = seed_{w}")
        else:
            seeds = self.lanes("dr_{w} = {{0}}" if struct else "dr_{w} = 0")
        self.locals.append(f"{rbase} r = {'{0}' if struct else '0'}, {', '.join(seeds)};")
        if ret is Activity.CONST:
            self.enzyme_args += [("int", "enzyme_const"), (f"{rbase} *", "&r")]
        else:
            keep = with_primal and ret is not Activity.DUPLICATED_NONEED
            self.enzyme_args += [("int", "enzyme_dup" if keep else "enzyme_dupnoneed"),
                                 (f"{rbase} *", "&r")]
            self.enzyme_args += [(f"{rbase} *", d) for d in self.lanes("&dr_{w}")]
        if with_primal:
            self.outputs.insert(0, Slot(Role.PRIMAL_OUT, -1, rtype, "out_primal", out_base, True, True))
            self.after.append(store("out_primal", "r"))
        if not reverse and ret is not None and ret.has_shadow:
            for w in range(self.width):
                self.outputs.append(Slot(Role.TANGENT_OUT, -1, rtype, f"out_tangent_{w}", out_base,
                                         True, True, lane=w))
                self.after.append(store(f"out_tangent_{w}", f"dr_{w}"))
        return f"*ret = {call};"

    def helper_pointer_type(self) -> str:
        return f"{self.helper_ret} (*)({', '.join(t for t, _ in self.helper_params) or 'void'})"

    def helper_definition(self, helper: str, body: str) -> str:
        params = ", ".join(f"{t} {n}" for t, n in self.helper_params) or "void"
        return f"static {self.helper_ret} {helper}({params}) {{ {_dispatch(body, self.callbacks)} }}"

    def callback_declarations(self) -> list[str]:
        """Declarations of the candidate kernels (only their addresses are
        taken; llvm-link resolves them by name)."""
        names = sorted({n for _, names in self.callbacks for n in names} - {self.sig.name})
        return [f"extern void {n}(void);" for n in names]

    def declaration(self, enzyme_fn: str) -> str:
        types = ", ".join([self.helper_pointer_type()] + [t for t, _ in self.enzyme_args])
        return f"extern void {enzyme_fn}({types});"

    def invocation(self, enzyme_fn: str, helper: str) -> str:
        return f"{enzyme_fn}({', '.join([helper] + [e for _, e in self.enzyme_args])});"


def _callback_placeholder(index: int) -> str:
    return f"__EFI_CALLBACK_{index}__"


def _dispatch(body: str, callbacks: list[tuple[int, tuple[str, ...]]]) -> str:
    """``body`` once per combination of the candidates of each callback
    parameter (chosen by its index argument), each with the candidate's
    address in place of the placeholder; an index out of range traps (the
    Python side checks it first)."""
    if not callbacks:
        return body
    (index, names), rest = callbacks[0], callbacks[1:]
    branches = []
    for k, name in enumerate(names):
        chosen = _dispatch(body.replace(_callback_placeholder(index), f"(void *){name}"), rest)
        branches.append(f"if (a{index} == {k}) {{ {chosen} }}")
    return " else ".join([*branches, "__builtin_trap();"])


_PRELUDE = ("extern int enzyme_dup, enzyme_dupnoneed, enzyme_const, enzyme_width, "
            "enzyme_runtime_activity;")


def _shadow_writable(ctype: CType, reverse: bool) -> bool:
    # Reverse accumulates into every shadow, so even a const primal's shadow
    # is written; in forward mode an input's tangent is only read.
    return reverse or not ctype.const


def _check_abi_hazard(sig: Signature, pattern: str) -> None:
    """Refuse a derivative through a call that passes a float in an integer
    register: Enzyme v0.0.289 fails on it in forward mode, and in reverse
    mode silently returns 0 for what flows through it (a wrong number)."""
    if sig.abi_hazard:
        raise DifferentiationError(
            f"'{sig.name}' cannot be differentiated ({pattern}): it calls {sig.abi_hazard}. "
            "Enzyme cannot differentiate the integer bit operations that packing does (forward "
            "mode fails; reverse mode would silently give 0 for what flows through it).\nFix: "
            "pass or return that struct through a pointer, or lay it out so that floats and "
            "integers do not share an 8-byte word (e.g. integers after the first 8 bytes of "
            "floats), or register a derivative rule for that function (or declare it inactive if "
            "no derivative flows through it).",
            kernel=sig.name, pattern=pattern, code="struct-in-integer-register",
            hint="pass such structs through a pointer, or lay them out so that floats and integers "
                 "do not share an 8-byte word")


def _check_forward_struct_return(spec: DerivativeSpec) -> None:
    """Refuse a forward-mode tangent of a struct return that the ABI packs
    into an integer register: the kernel then assembles the return value
    with integer shifts and ors of the float's bits, which Enzyme v0.0.289
    cannot differentiate (it fails on the `or`, or on the conflicting types;
    seen with `struct { float a; int k; }`)."""
    sig = spec.signature
    if sig.ret.kind != "struct":
        return
    floats = integer_register_floats(json.loads(sig.ret.layout))
    if floats:
        raise DifferentiationError(
            f"forward mode of '{sig.name}' ({spec.pattern}) cannot give the tangent of its return "
            f"value `{sig.ret.spelling}`: the C ABI returns its floating field(s) "
            f"{', '.join(floats)} in an integer register together with integer fields, and "
            "Enzyme cannot differentiate the bit operations that pack them.\nFix: keep the "
            "return Const (ret=Const) and return the floating results through a pointer "
            "parameter, or return a struct whose floats do not share an 8-byte word with integers "
            "(e.g. put the integer fields after 8 bytes of floats, or make the struct larger "
            "than 16 bytes).",
            kernel=sig.name, pattern=spec.pattern, code="struct-return-integer-register",
            hint="return the floats through a pointer parameter, or lay the struct out so that "
                 "floats and integers do not share an 8-byte word")


def generate_derivative(spec: DerivativeSpec, runtime_activity: bool = False) -> GeneratedWrapper:
    """Write the C wrapper and cdef for one derivative request.

    Examples
    --------
    >>> from enzyme.activity import Active, Reverse, resolve_activities
    >>> from enzyme.signature import CType, Param, Signature
    >>> dbl = CType("scalar", "double", "double", "float64")
    >>> sig = Signature("f", (Param("x", dbl), Param("y", dbl)), dbl, "f.c:1")
    >>> w = generate_derivative(resolve_activities(sig, Reverse, [Active, Active]))
    >>> [p.role.value for p in w.params]
    ['primal', 'primal', 'seed', 'adjoint_out', 'adjoint_out']
    """
    sig = spec.signature
    _check_abi_hazard(sig, spec.pattern)
    if not spec.reverse and spec.returns_derivative:
        _check_forward_struct_return(spec)
    uid = _uid(sig.c_prototype, spec.pattern, str(runtime_activity), str(spec.callbacks))
    entry = f"__efi_d_{sig.name}_{uid}"
    helper = f"__efi_h_{sig.name}_{uid}"
    enzyme_fn = f"__enzyme_{'autodiff' if spec.reverse else 'fwddiff'}_efi_{uid}"
    call = _Call(sig, spec.width, runtime_activity, spec.callbacks)
    for arg in spec.args:
        if arg.activity is Activity.CONST:
            call.const(arg.index, arg.ctype)
        elif arg.ctype.is_pointer:
            call.pointer(arg.index, arg.ctype, _shadow_writable(arg.ctype, spec.reverse),
                         noneed=arg.activity is Activity.DUPLICATED_NONEED)
        else:
            call.scalar(arg.index, arg.ctype, active=arg.activity is Activity.ACTIVE)
    body = call.returns(spec.ret, spec.reverse, spec.with_primal)
    params = tuple(call.entry_params + call.outputs)
    entry_sig = ", ".join(p.c_decl for p in params) or "void"
    # The fast path takes unbatched calls only; and the packed twin must not
    # inline the entry (two inlined Enzyme call sites gave wrong batched
    # tangents with the pinned plugin), hence noinline.
    packed_def, packed_cdef, packed_name = _packed(entry, params) if not spec.batched else ("", "", "")
    batch_def, batch_cdef, batch_name = _batch_twin(entry, params) if not spec.batched else ("", "", "")
    lines = [
        f"/* enzyme-ffi generated: {spec.pattern} of {sig} */",
        _PRELUDE,
        *struct_definitions(sig.ret),
        f"extern {sig.c_prototype};",
        *call.callback_declarations(),
        call.helper_definition(helper, body),
        call.declaration(enzyme_fn),
        f"{'__attribute__((noinline)) ' if packed_name else ''}void {entry}({entry_sig}) {{",
        *(f"    {line}" for line in call.locals),
        f"    {call.invocation(enzyme_fn, helper)}",
        *(f"    {line}" for line in call.after),
        "}",
        packed_def,
        batch_def,
        "",
    ]
    cdef = f"void {entry}({entry_sig});" + (f"\n{packed_cdef}\n{batch_cdef}" if packed_name else "")
    return GeneratedWrapper(entry=entry, c_source="\n".join(lines), cdef=cdef, params=params,
                            packed_entry=packed_name, batch_entry=batch_name)


def generate_hvp(spec: HvpSpec, runtime_activity: bool = False) -> GeneratedWrapper:
    """Hessian-vector products by forward-over-reverse.

    The generated C holds a gradient function (``__enzyme_autodiff`` of the
    kernel with respect to argument ``spec.wrt``, return seeded with 1), and
    the entry point differentiates that gradient function with
    ``__enzyme_fwddiff`` in ``spec.width`` directions at once. Entry
    parameters: every primal argument, then ``width`` directions
    (``direction``), the gradient (``gradient_out``) and ``width`` products
    (``hvp_out``), all arrays shaped like the ``wrt`` argument; and zero
    buffers shaped like each array the kernel may write (``scratch``).
    """
    sig = spec.signature
    _check_abi_hazard(sig, f"hvp wrt {sig.params[spec.wrt].name}")
    uid = _uid(sig.c_prototype, f"hvp wrt {spec.wrt} width {spec.width}", str(runtime_activity),
               str(spec.callbacks))
    entry = f"__efi_hvp_{sig.name}_{uid}"
    helper = f"__efi_h_{sig.name}_{uid}"
    grad_fn = f"__efi_g_{sig.name}_{uid}"
    inner_fn = f"__enzyme_autodiff_efi_g_{uid}"
    outer_fn = f"__enzyme_fwddiff_efi_hv_{uid}"
    x = sig.params[spec.wrt].ctype
    base = x.base

    # Arrays the kernel may write (non-const floating pointers) are given
    # zero shadows in both passes, not passed Const: Enzyme drops derivatives
    # that flow through Const memory, such as a scratch array written and
    # read back. Their buffers are entry parameters of role "scratch".
    scratch = [i for i, p in enumerate(sig.params)
               if i != spec.wrt and p.ctype.is_pointer and not p.ctype.const and p.ctype.carries_derivative]
    inner = _Call(sig, 1, runtime_activity, spec.callbacks)
    for index, param in enumerate(sig.params):
        if index == spec.wrt:
            inner.pointer(index, param.ctype, True, noneed=False)
        elif index in scratch:
            inner.pointer(index, param.ctype, True, noneed=False)
        else:
            inner.const(index, param.ctype)
    body = inner.returns(Activity.ACTIVE, reverse=True, with_primal=False, seed_param=False)
    # The gradient function: the kernel's parameters plus the gradient buffer
    # and the scratch arrays' adjoints; the return seed is fixed at 1.
    grad_params = [("int" if p.ctype.is_function else p.ctype.c_decl, f"a{i}")
                   for i, p in enumerate(sig.params)]
    grad_params.append((f"{base} *", f"da{spec.wrt}_0"))
    grad_params += [(f"{pointee_type(sig.params[i].ctype)} *", f"da{i}_0") for i in scratch]

    outer = _Call(sig, spec.width, runtime_activity, spec.callbacks)
    for index, param in enumerate(sig.params):
        if index == spec.wrt:
            outer.pointer(index, param.ctype, False, noneed=False, shadow_role=Role.DIRECTION)
        elif index in scratch:
            outer.pointer(index, param.ctype, True, noneed=False, shadow_role=Role.SCRATCH)
        else:
            outer.const(index, param.ctype)
    gradient = CType("pointer", f"{base} *", base, x.dtype)
    outer.entry_params.append(Slot(Role.GRADIENT_OUT, spec.wrt, gradient, "grad", base, True, True))
    outer.enzyme_args += [("int", "enzyme_dup"), (f"{base} *", "grad")]
    for w in range(spec.width):
        outer.entry_params.append(Slot(Role.HVP_OUT, spec.wrt, gradient, f"hv_{w}", base, True, True,
                                       lane=w))
        outer.enzyme_args.append((f"{base} *", f"hv_{w}"))
    for i in scratch:  # the gradient function's adjoint of each scratch array, and its tangents
        ctype = sig.params[i].ctype
        adjoint = Slot(Role.SCRATCH, i, ctype, f"ga{i}", pointee_type(ctype), True, True)
        outer.entry_params.append(adjoint)
        outer.enzyme_args += [("int", "enzyme_dup"), (adjoint.c_type, adjoint.name)]
        for w in range(spec.width):
            tangent = Slot(Role.SCRATCH, i, ctype, f"gt{i}_{w}", pointee_type(ctype), True, True,
                           lane=w)
            outer.entry_params.append(tangent)
            outer.enzyme_args.append((tangent.c_type, tangent.name))
    outer.helper_params = grad_params  # what is differentiated is the gradient function
    params = tuple(outer.entry_params)
    entry_sig = ", ".join(p.c_decl for p in params)
    grad_sig = ", ".join(f"{t} {n}" for t, n in grad_params)
    lines = [
        f"/* enzyme-ffi generated: Hessian-vector product (width {spec.width}) of {sig} "
        f"with respect to {sig.params[spec.wrt].name} */",
        _PRELUDE,
        *struct_definitions(sig.ret),
        f"extern {sig.c_prototype};",
        *inner.callback_declarations(),
        inner.helper_definition(helper, body),
        inner.declaration(inner_fn),
        f"static void {grad_fn}({grad_sig}) {{",
        *(f"    {line}" for line in inner.locals),
        f"    {inner.invocation(inner_fn, helper)}",
        "}",
        outer.declaration(outer_fn),
        f"void {entry}({entry_sig}) {{",
        f"    {outer.invocation(outer_fn, grad_fn)}",
        "}",
        "",
    ]
    return GeneratedWrapper(entry=entry, c_source="\n".join(lines),
                            cdef=f"void {entry}({entry_sig});", params=params)


def generate_registrations(forward_rules: dict[str, str], reverse_rules: dict[str, tuple[str, str]],
                           inactive: tuple[str, ...], inactive_globals: tuple[str, ...]) -> str:
    """A C file holding Enzyme's registration globals for rules and inactive
    code given from Python (the same globals the shipped header's macros
    write). Names must already be checked to be C identifiers.

    Examples
    --------
    >>> print(generate_registrations({"f": "df"}, {}, ("log",), ()))  # doctest: +NORMALIZE_WHITESPACE
    /* enzyme-ffi generated: registrations given to enzyme.compile */
    extern void f(void);
    extern void df(void);
    __attribute__((used)) void *__enzyme_register_derivative_f[2] = { (void *)f, (void *)df };
    extern void log(void);
    __attribute__((used)) void *__enzyme_inactivefn_log = (void *)log;
    """
    # Only addresses are taken, so a function's declared type does not matter
    # in this translation unit of its own; llvm-link resolves by name.
    declared: set[str] = set()
    lines = [REGISTRATIONS_MARK]  # (the parser's census skips this file by it)

    def declare(*names: str) -> None:
        for name in names:
            if name not in declared:
                declared.add(name)
                lines.append(f"extern void {name}(void);")

    for fn, fwd in forward_rules.items():
        declare(fn, fwd)
        lines.append(f"__attribute__((used)) void *__enzyme_register_derivative_{fn}[2] = "
                     f"{{ (void *){fn}, (void *){fwd} }};")
    for fn, (aug, rev) in reverse_rules.items():
        declare(fn, aug, rev)
        lines.append(f"__attribute__((used)) void *__enzyme_register_gradient_{fn}[3] = "
                     f"{{ (void *){fn}, (void *){aug}, (void *){rev} }};")
    for fn in inactive:
        declare(fn)
        lines.append(f"__attribute__((used)) void *__enzyme_inactivefn_{fn} = (void *){fn};")
    for var in inactive_globals:
        lines.append(f"extern char {var};")
        lines.append(f"__attribute__((used)) void *__enzyme_inactive_global_{var} = (void *)&{var};")
    return "\n".join(lines) + "\n"


def generate_blas_support() -> str:
    """C definitions of the helpers Enzyme's BLAS derivative rules call that
    CBLAS libraries do not have: ``cblas_dlascl``/``cblas_slascl``, LAPACK's
    ``?lascl`` with a layout argument (the reverse of ``cblas_dgemm`` with
    beta = 0 zeroes the output's adjoint with it: ``cto / cfrom`` = 0).
    They are weak, so a library that does define them wins.

    Only a general matrix (``type`` ``'G'``) is scaled, the one kind
    Enzyme's rules ask for; any other kind aborts rather than leave the
    matrix unscaled (a wrong derivative).
    """
    lines = [SUPPORT_MARK, "extern void abort(void);"]
    for prefix, real in (("d", "double"), ("s", "float")):
        lines.append(f"""\
__attribute__((weak)) void cblas_{prefix}lascl(int layout, char type, int kl, int ku, {real} cfrom,
        {real} cto, int m, int n, {real} *a, int lda, int *info) {{
    (void)kl; (void)ku;
    if (type != 'G' || cfrom == 0 || cfrom != cfrom || cto != cto) abort();
    {real} factor = cto / cfrom;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {{
            long at = layout == 101 ? (long)i * lda + j : i + (long)j * lda;
            a[at] = factor == 0 ? 0 : a[at] * factor;
        }}
    if (info) *info = 0;
}}""")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GeneratedSplit:
    """Split reverse mode: a tape-size probe, or the augmented forward and
    reverse entry points (sharing one parameter list, the tape last)."""

    c_source: str
    cdef: str
    size_entry: str
    forward_entry: str
    reverse_entry: str
    params: tuple[Slot, ...]

    @property
    def entry_params(self) -> tuple[Slot, ...]:
        """The parameters of both passes: ``params``, then the tape."""
        return (*self.params, _TAPE)


# The caller-allocated tape both split passes take last.
_TAPE = Slot(Role.TAPE, -1, CType("void", "void"), "tape", "void", True, True)


def generate_split(spec: DerivativeSpec, tape_bytes: int | None,
                   runtime_activity: bool = False) -> GeneratedSplit:
    """Write split-mode entry points (``__enzyme_augmentfwd`` / ``__enzyme_reverse``).

    With ``tape_bytes=None`` only the probe ``long size(void)`` (from
    ``__enzyme_augmentsize``) is defined. Otherwise both passes use a tape of
    ``tape_bytes`` bytes allocated by the caller (``enzyme_allocated``, a
    compile-time constant for Enzyme). Floating scalars and the return value
    live in caller-owned slots (``slot``/``slot_shadow``, ``ret_slot``/
    ``ret_shadow``) that persist from the forward to the reverse pass.
    """
    sig = spec.signature
    _check_abi_hazard(sig, spec.pattern)
    uid = _uid(sig.c_prototype, spec.pattern, "split", str(runtime_activity), str(spec.callbacks))
    helper = f"__efi_h_{sig.name}_{uid}"
    call = _Call(sig, 1, runtime_activity, spec.callbacks)
    markers: list[str] = ["enzyme_runtime_activity"] if runtime_activity else []
    for arg in spec.args:
        ctype, name = arg.ctype, f"a{arg.index}"
        noneed = arg.activity is Activity.DUPLICATED_NONEED
        if arg.activity is Activity.CONST:
            call.const(arg.index, ctype)
            markers.append("enzyme_const")
        elif ctype.is_pointer:
            call.pointer(arg.index, ctype, True, noneed=noneed)
            markers.append("enzyme_dupnoneed" if noneed else "enzyme_dup")
        else:
            base = ctype.base
            call.helper_params.append((f"const {base} *", name))
            call.call_in_helper.append(f"*{name}")
            call.entry_params += [Slot(Role.SLOT, arg.index, ctype, f"v{name}", base, True, True),
                                  Slot(Role.SLOT_SHADOW, arg.index, ctype, f"s{name}", base, True, True)]
            call.enzyme_args += [("int", "enzyme_dup"), (f"const {base} *", f"v{name}"),
                                 (f"{base} *", f"s{name}")]
            markers.append("enzyme_dup")
    body = f"{sig.name}({', '.join(call.call_in_helper)});"
    if spec.ret is not None:
        rtype = _value(sig.ret)
        rbase = rtype.base
        call.helper_params.append((f"{rbase} *", "ret"))
        body = f"*ret = {body}"
        call.entry_params.append(Slot(Role.RET_SLOT, -1, rtype, "r", rbase, True, True))
        if spec.ret is Activity.CONST:
            call.enzyme_args += [("int", "enzyme_const"), (f"{rbase} *", "r")]
            markers.append("enzyme_const")
        else:
            call.entry_params.append(Slot(Role.RET_SHADOW, -1, rtype, "dr", rbase, True, True))
            call.enzyme_args += [("int", "enzyme_dup"), (f"{rbase} *", "r"), (f"{rbase} *", "dr")]
            markers.append("enzyme_dup")
    size_entry = f"__efi_size_{sig.name}_{uid}"
    size_fn = f"__enzyme_augmentsize_efi_{uid}"
    lines = [
        f"/* enzyme-ffi generated: split {spec.pattern} of {sig} */",
        "extern int enzyme_dup, enzyme_dupnoneed, enzyme_const, enzyme_allocated, enzyme_tape, "
        "enzyme_runtime_activity;",
        *struct_definitions(sig.ret),
        f"extern {sig.c_prototype};",
        *call.callback_declarations(),
        call.helper_definition(helper, body),
        f"extern long {size_fn}({', '.join([call.helper_pointer_type()] + ['int'] * len(markers))});",
        f"long {size_entry}(void) {{ return {size_fn}({', '.join([helper] + markers)}); }}",
    ]
    cdefs = [f"long {size_entry}(void);"]
    params = tuple(call.entry_params)
    forward_entry = f"__efi_fwd_{sig.name}_{uid}"
    reverse_entry = f"__efi_rev_{sig.name}_{uid}"
    if tape_bytes is not None:
        allocated = [("int", "enzyme_allocated"), ("long", str(tape_bytes)),
                     ("int", "enzyme_tape"), ("void *", "tape")]
        entry_sig = ", ".join(p.c_decl for p in (*params, _TAPE))
        types = ", ".join([call.helper_pointer_type()] + [t for t, _ in allocated + call.enzyme_args])
        args = ", ".join([helper] + [e for _, e in allocated + call.enzyme_args])
        for entry, enzyme_fn in ((forward_entry, f"__enzyme_augmentfwd_efi_{uid}"),
                                 (reverse_entry, f"__enzyme_reverse_efi_{uid}")):
            lines += [f"extern void {enzyme_fn}({types});",
                      f"void {entry}({entry_sig}) {{ {enzyme_fn}({args}); }}"]
            cdefs.append(f"void {entry}({entry_sig});")
    return GeneratedSplit(c_source="\n".join(lines) + "\n", cdef="\n".join(cdefs),
                          size_entry=size_entry, forward_entry=forward_entry,
                          reverse_entry=reverse_entry, params=params)
