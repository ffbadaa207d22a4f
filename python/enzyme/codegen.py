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
from dataclasses import dataclass

from .activity import ArgSpec, DerivativeSpec
from .signature import CType, Signature

__all__ = ["WrapperParam", "GeneratedWrapper", "generate_derivative", "primal_cdef"]

# Bump when the generated code changes shape: it is part of every cache key.
CODEGEN_VERSION = "1"


@dataclass(frozen=True)
class WrapperParam:
    """One parameter of the generated entry point.

    ``role`` is ``primal``, ``shadow`` (both for argument ``arg``), ``seed``,
    or an output: ``primal_out``, ``adjoint_out`` (for argument ``arg``),
    ``tangent_out``. ``ctype`` is the element type for outputs.
    """

    role: str
    arg: int
    ctype: CType
    c_decl: str


@dataclass(frozen=True)
class GeneratedWrapper:
    entry: str
    c_source: str
    cdef: str
    params: tuple[WrapperParam, ...]


def primal_cdef(signature: Signature) -> str:
    """The cffi declaration of a kernel itself."""
    return signature.c_prototype + ";"


def _value(ctype: CType) -> CType:
    """The scalar type stored at a pointer, or the scalar itself."""
    return CType("scalar", ctype.base, ctype.base, ctype.dtype)


def _shadow_decl(arg: ArgSpec, reverse: bool) -> str:
    # Reverse accumulates into every shadow, so even a const primal's shadow
    # is written; in forward mode an input's tangent is only read.
    const = arg.ctype.const and not reverse
    return f"{'const ' if const else ''}{arg.ctype.base} *"


def generate_derivative(spec: DerivativeSpec) -> GeneratedWrapper:
    """Write the C wrapper and cdef for one derivative request.

    Examples
    --------
    >>> from enzyme.activity import Active, Reverse, resolve_activities
    >>> from enzyme.signature import CType, Param, Signature
    >>> dbl = CType("scalar", "double", "double", "float64")
    >>> sig = Signature("f", (Param("x", dbl), Param("y", dbl)), dbl, "f.c:1")
    >>> w = generate_derivative(resolve_activities(sig, Reverse, [Active, Active]))
    >>> [p.role for p in w.params]
    ['primal', 'primal', 'seed', 'adjoint_out', 'adjoint_out']
    """
    sig = spec.signature
    uid = hashlib.sha256(f"{CODEGEN_VERSION}|{sig.c_prototype}|{spec.pattern}".encode()).hexdigest()[:12]
    entry = f"__efi_d_{sig.name}_{uid}"
    helper = f"__efi_h_{sig.name}_{uid}"
    enzyme_fn = f"__enzyme_{'autodiff' if spec.reverse else 'fwddiff'}_efi_{uid}"

    helper_params: list[tuple[str, str]] = []  # (C type, name) of the helper's parameters
    call_in_helper: list[str] = []  # how the helper passes each argument on
    entry_params: list[WrapperParam] = []
    outputs: list[WrapperParam] = []
    locals_: list[str] = []
    enzyme_args: list[tuple[str, str]] = []  # (C type, expression)
    after: list[str] = []

    for arg in spec.args:
        ctype, name = arg.ctype, f"a{arg.index}"
        if arg.activity == "const":
            helper_params.append((ctype.c_decl, name))
            call_in_helper.append(name)
            entry_params.append(WrapperParam("primal", arg.index, ctype, f"{ctype.c_decl} {name}"))
            enzyme_args += [("int", "enzyme_const"), (ctype.c_decl, name)]
        elif ctype.is_pointer:
            shadow = _shadow_decl(arg, spec.reverse)
            helper_params.append((ctype.c_decl, name))
            call_in_helper.append(name)
            entry_params.append(WrapperParam("primal", arg.index, ctype, f"{ctype.c_decl} {name}"))
            entry_params.append(WrapperParam("shadow", arg.index, ctype, f"{shadow} d{name}"))
            marker = "enzyme_dupnoneed" if arg.activity == "dupnoneed" else "enzyme_dup"
            enzyme_args += [("int", marker), (ctype.c_decl, name), (shadow, f"d{name}")]
        else:
            # A floating scalar: Active (reverse) or a tangent (forward). It is
            # handed to the helper by pointer so its derivative lives in memory.
            base = ctype.base
            helper_params.append((f"const {base} *", name))
            call_in_helper.append(f"*{name}")
            entry_params.append(WrapperParam("primal", arg.index, ctype, f"{base} {name}"))
            if arg.activity == "active":
                locals_.append(f"{base} v{name} = {name}, s{name} = 0;")
                outputs.append(WrapperParam("adjoint_out", arg.index, ctype, f"{base} *out_d{name}"))
                after.append(f"*out_d{name} = s{name};")
            else:
                entry_params.append(WrapperParam("shadow", arg.index, ctype, f"{base} d{name}"))
                locals_.append(f"{base} v{name} = {name}, s{name} = d{name};")
            enzyme_args += [("int", "enzyme_dup"), (f"const {base} *", f"&v{name}"),
                            (f"{base} *", f"&s{name}")]

    ret = sig.ret
    call = f"{sig.name}({', '.join(call_in_helper)})"
    if spec.ret == "void":
        helper_body = f"{call};"
    else:
        rbase = ret.base
        rtype = _value(ret)
        helper_params.append((f"{rbase} *", "ret"))
        helper_body = f"*ret = {call};"
        seed = "0"
        if spec.ret == "active":
            entry_params.append(WrapperParam("seed", -1, rtype, f"{rbase} seed"))
            seed = "seed"
        locals_.append(f"{rbase} r = 0, dr = {seed};")
        if spec.ret == "const":
            enzyme_args += [("int", "enzyme_const"), (f"{rbase} *", "&r")]
        else:
            keep = spec.with_primal and spec.ret != "dupnoneed"
            enzyme_args += [("int", "enzyme_dup" if keep else "enzyme_dupnoneed"),
                            (f"{rbase} *", "&r"), (f"{rbase} *", "&dr")]
        if spec.with_primal:
            outputs.insert(0, WrapperParam("primal_out", -1, rtype, f"{rbase} *out_primal"))
            after.append("*out_primal = r;")
        if not spec.reverse and spec.ret in ("dup", "dupnoneed"):
            outputs.append(WrapperParam("tangent_out", -1, rtype, f"{rbase} *out_tangent"))
            after.append("*out_tangent = dr;")

    params = tuple(entry_params + outputs)
    helper_sig = ", ".join(f"{t} {n}" for t, n in helper_params) or "void"
    helper_ptr = f"void (*)({', '.join(t for t, _ in helper_params) or 'void'})"
    proto_types = ", ".join([helper_ptr] + [t for t, _ in enzyme_args])
    entry_sig = ", ".join(p.c_decl for p in params) or "void"
    lines = [
        f"/* enzyme-ffi generated: {spec.pattern} of {sig} */",
        "extern int enzyme_dup, enzyme_dupnoneed, enzyme_const;",
        f"extern {sig.c_prototype};",
        f"static void {helper}({helper_sig}) {{ {helper_body} }}",
        f"extern void {enzyme_fn}({proto_types});",
        f"void {entry}({entry_sig}) {{",
        *(f"    {line}" for line in locals_),
        f"    {enzyme_fn}({', '.join([helper] + [e for _, e in enzyme_args])});",
        *(f"    {line}" for line in after),
        "}",
        "",
    ]
    return GeneratedWrapper(entry=entry, c_source="\n".join(lines),
                            cdef=f"void {entry}({entry_sig});", params=params)
