"""Stage 2: read the C signatures of a module's external functions with libclang.

Types are mapped through their *canonical* form, so ``size_t`` and
``int64_t`` become the ABI type they stand for; parsing uses the compiling
clang's resource directory, without which libclang silently types
``size_t`` as ``int`` (a wrong ABI).
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import CompileError, ContractError, UnsupportedSignatureError

__all__ = ["PARSE_VERSION", "CType", "Param", "Signature", "GlobalVar", "LengthContract", "ContractValueError",
           "CInt", "c_int_type", "length_contracts", "layout_size", "integer_register_floats",
           "with_lengths", "known_shape", "parse_signatures", "parse_module", "parse_request", "worker_command",
    "read_worker_reply"]


# Bump when what the parse records changes (layout keys, Signature or
# GlobalVar fields): parse results are stored with cached module builds, so
# the build's cache key must include it, or a stale entry keeps old facts.
PARSE_VERSION = "8"


@dataclass(frozen=True)
class CType:
    """A parameter or return type, as far as the calling layer cares.

    ``kind`` is ``"void"``, ``"scalar"``, ``"pointer"``, ``"function"`` (a
    pointer to a function: ``base`` is its canonical type, such as
    ``double (double)``, and it is passed as ``void *``) or ``"unsupported"``.
    For scalars and pointers ``base`` is the C spelling of the (pointee)
    element type and ``dtype`` the matching numpy dtype name.
    """

    kind: str
    spelling: str
    base: str = ""
    dtype: str = ""
    const: bool = False
    reason: str = ""
    # Pointers to C structs: base is "void" (the generated C passes them
    # opaquely), dtype is "struct", layout the JSON of a numpy structured
    # dtype (names/formats/offsets/itemsize, clang's own offsets), and
    # struct_float tells whether any field can carry a derivative.
    layout: str = ""
    struct_float: bool = False
    # An array parameter's declared shape (``double r[3][3]`` -> (3, 3),
    # ``double (*p)[4]`` and ``double q[][4]`` -> (0, 4): 0 where C leaves the
    # extent open); empty for a plain pointer. The generated C passes it as
    # a flat pointer to the element type, the same address and ABI.
    shape: tuple[int, ...] = ()
    # `double **`: a table of row pointers, which the calling layer builds
    # from a 2-D array (one table for the array, one per shadow). ``base`` is
    # the element type and ``const`` whether the elements are.
    rows: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.shape, tuple):  # (read back from JSON as a list)
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def is_float(self) -> bool:
        """A floating scalar, or a pointer to floating scalars."""
        return self.dtype in ("float32", "float64")

    @property
    def carries_derivative(self) -> bool:
        """Floating, or a struct with a floating field: what Enzyme can
        differentiate (a struct return's gradient is not a scalar's)."""
        return self.dtype in ("float32", "float64") or self.struct_float

    @property
    def is_struct(self) -> bool:
        return self.dtype == "struct"

    @property
    def struct_tag(self) -> str:
        """The tag of the C struct enzyme-ffi generates with this layout (for
        struct return values, which generated C must declare)."""
        return f"__efi_s_{hashlib.sha256(self.layout.encode()).hexdigest()[:10]}"

    @property
    def is_pointer(self) -> bool:
        return self.kind == "pointer"

    @property
    def is_function(self) -> bool:
        return self.kind == "function"

    @property
    def holds_pointers(self) -> bool:
        """A pointer to a struct with pointer fields: one struct, built from
        a mapping of its fields (see the calling layer)."""
        return self.is_struct and '"pointers"' in self.layout

    @property
    def pointer_fields(self) -> list[dict]:
        return json.loads(self.layout).get("pointers", []) if self.holds_pointers else []

    @property
    def c_decl(self) -> str:
        """The type as written in generated C and in the cffi cdef."""
        if self.kind == "void":
            return "void"
        if self.kind == "function" or self.rows:
            return "void *"  # (the same ABI as any function pointer, or `double **`)
        if self.kind == "struct":
            return f"struct {self.struct_tag}"
        if self.kind == "pointer":
            return f"{'const ' if self.const else ''}{self.base} *"
        if self.base == "char":
            # cffi takes a plain `char` only as bytes and zero-extends it, while
            # clang's callee expects the caller to sign-extend: (char)-3 arrived
            # as 253. The explicitly signed (or unsigned) char is the same ABI.
            return "signed char" if self.dtype == "int8" else "unsigned char"
        return self.base


@dataclass(frozen=True)
class Param:
    name: str
    ctype: CType
    # A C expression over the integer parameters giving how many elements a
    # pointer parameter needs (from ENZYME_LEN(...) in C, or sizes= in Python).
    length: str = ""


@dataclass(frozen=True)
class Signature:
    """One external C function: name, parameters and return type."""

    name: str
    params: tuple[Param, ...]
    ret: CType
    location: str  # file:line of the definition
    variadic: bool = False
    # Why the library does not export the symbol (hidden visibility, a C99
    # inline definition); empty when it does. Such a function is compiled
    # into the module but cannot be looked up by name.
    hidden: str = ""
    # Why derivatives of it cannot be trusted: a function it calls passes a
    # float in an integer register (see integer_register_floats); empty if none.
    abi_hazard: str = ""
    # The canonical type of the function itself (``double (double)``): what
    # a function-pointer parameter must match for it to be passed there.
    fn_type: str = ""

    def unsupported(self) -> list[str]:
        """Why this function cannot be called yet (empty when it can)."""
        problems = []
        if self.hidden:
            problems.append(self.hidden)
        if not self.name.isascii():
            problems.append("its name is not ASCII, and cffi (which declares the function to call "
                            "it) only reads ASCII identifiers: rename it, or call it from a "
                            "function with an ASCII name")
        if self.variadic:
            problems.append("variadic functions (`...`) cannot be called or differentiated")
        for param in self.params:
            if param.ctype.kind in ("unsupported", "void"):
                problems.append(f"parameter '{param.name}' has type `{param.ctype.spelling}`: "
                                f"{param.ctype.reason or 'not supported'}")
        if self.ret.kind not in ("void", "scalar", "struct"):
            problems.append(f"the return type `{self.ret.spelling}` is not supported "
                            f"({self.ret.reason or 'return void, a scalar or a struct of scalars'})")
        return problems

    def check_supported(self) -> None:
        problems = self.unsupported()
        if not problems:
            return
        typed = any(p.ctype.kind in ("unsupported", "void") for p in self.params) \
            or self.ret.kind not in ("void", "scalar", "struct")
        raise UnsupportedSignatureError(
            f"{self.location}: kernel '{self.name}' cannot be used from Python: "
            + "; ".join(problems) + "."
            + (" Supported now: double, float, integer scalars, pointers to them and to structs "
               "of them, multidimensional arrays of them, function pointers (another kernel is "
               "passed), void, scalar or struct returns. Wrap the function in a C function with "
               "such a signature." if typed else "")
        )

    @property
    def c_prototype(self) -> str:
        params = ", ".join(p.ctype.c_decl for p in self.params) or "void"
        return f"{self.ret.c_decl} {self.name}({params})"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Signature:
        return cls(
            name=data["name"],
            params=tuple(Param(p["name"], CType(**p["ctype"]), p.get("length", ""))
                         for p in data["params"]),
            ret=CType(**data["ret"]),
            location=data["location"],
            variadic=data.get("variadic", False),
            hidden=data.get("hidden", ""),
            abi_hazard=data.get("abi_hazard", ""),
            fn_type=data.get("fn_type", ""),
        )

    def __str__(self) -> str:
        def decl(ctype: CType) -> str:
            return ctype.c_decl if ctype.kind in ("scalar", "pointer", "void") else ctype.spelling

        params = ", ".join(f"{decl(p.ctype)} {p.name}".replace("* ", "*") for p in self.params)
        return f"{decl(self.ret)} {self.name}({params})"


@dataclass(frozen=True)
class CInt:
    """A C integer type as C arithmetic sees it (LP64): width, signedness and
    conversion rank (int 1, long 2, long long 3)."""

    bits: int
    signed: bool
    rank: int

    @property
    def name(self) -> str:
        base = {1: "int", 2: "long", 3: "long long"}[self.rank]
        return base if self.signed else f"unsigned {base}"

    def fits(self, value: int) -> bool:
        if self.signed:
            return -(1 << (self.bits - 1)) <= value < (1 << (self.bits - 1))
        return 0 <= value < (1 << self.bits)


_INT, _LONG = CInt(32, True, 1), CInt(64, True, 2)


def c_int_type(ctype: CType) -> CInt:
    """The type an integer parameter has in C arithmetic, after the integer
    promotions (anything narrower than int, _Bool included, becomes int)."""
    digits = "".join(ch for ch in ctype.dtype if ch.isdigit())
    bits = int(digits) if digits else 8  # "bool": _Bool
    if bits < 32:
        return _INT
    signed = not ctype.dtype.startswith("uint")
    rank = 3 if "long long" in ctype.base else 2 if "long" in ctype.base or bits == 64 else 1
    return CInt(bits, signed, rank)


def _common_type(a: CInt, b: CInt) -> CInt:
    """C's usual arithmetic conversions between two promoted integer types."""
    if a == b:
        return a
    if a.signed == b.signed:
        return a if a.rank >= b.rank else b
    unsigned, signed = (a, b) if not a.signed else (b, a)
    if unsigned.rank >= signed.rank:
        return unsigned
    if signed.bits > unsigned.bits:
        return signed
    return CInt(signed.bits, False, signed.rank)


class ContractValueError(Exception):
    """Raised by a contract's evaluation: division by zero or overflow."""


def _c_binary(op: ast.operator, a: int, ta: CInt, b: int, tb: CInt) -> tuple[int, CInt]:
    t = _common_type(ta, tb)
    if not t.signed:
        a, b = a % (1 << t.bits), b % (1 << t.bits)
    if isinstance(op, ast.Add):
        value = a + b
    elif isinstance(op, ast.Sub):
        value = a - b
    elif isinstance(op, ast.Mult):
        value = a * b
    else:  # / and //: C's division, truncating toward zero
        if b == 0:
            raise ContractValueError("divides by zero")
        value = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    if t.signed and not t.fits(value):
        raise ContractValueError(f"overflows {t.name}")
    return (value if t.signed else value % (1 << t.bits)), t


@dataclass(frozen=True)
class LengthContract:
    """Pointer parameter ``param`` needs at least ``evaluate(args)`` elements,
    where the expression reads the integer parameters ``uses`` (named
    ``names``). The expression is evaluated as C would: each parameter has
    its C type, literals are int (or long), the usual arithmetic conversions
    apply, division truncates, unsigned arithmetic wraps around; division by
    zero and signed overflow raise :class:`ContractValueError`."""

    param: int
    name: str
    expression: str
    uses: tuple[int, ...]
    names: tuple[str, ...]
    function: Callable[[Sequence[int]], tuple[int, CInt]] = field(compare=False, repr=False)

    def evaluate(self, values: Sequence[int]) -> int:
        """``values`` are the integer arguments listed in ``uses``, in order."""
        return self.function(values)[0]


_MAX_CONTRACT_CHARS = 4000
_MAX_CONTRACT_NODES = 1000
_MAX_CONTRACT_DEPTH = 200

_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load,
            ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.USub, ast.UAdd)


def _compile_length(signature: Signature, index: int, expression: str) -> LengthContract:
    where = f"the length of '{signature.params[index].name}' in {signature.name}"
    shown = expression if len(expression) <= 80 else expression[:60] + " ... " + expression[-15:]
    too_big = (f"{where}: `{shown}` is too large for a length contract (at most "
               f"{_MAX_CONTRACT_NODES} operands and operators, nested at most {_MAX_CONTRACT_DEPTH} "
               "deep); simplify it, e.g. `2000 * n` rather than `n + n + ...`.")
    if len(expression) > _MAX_CONTRACT_CHARS:
        raise ContractError(too_big)
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise ContractError(f"{where}: `{shown}` is not an expression of integer "
                            "parameters, integer literals, + - * / and parentheses.") from None
    except (RecursionError, MemoryError):
        raise ContractError(too_big) from None
    # The checks and the evaluation below recurse over the tree: bound it here,
    # so that a generated contract is refused rather than a RecursionError.
    depth, nodes, pending = 0, 0, [(tree.body, 1)]
    while pending:
        node, level = pending.pop()
        nodes, depth = nodes + 1, max(depth, level)
        pending.extend((child, level + 1) for child in ast.iter_child_nodes(node)
                       if isinstance(child, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant)))
    if nodes > _MAX_CONTRACT_NODES or depth > _MAX_CONTRACT_DEPTH:
        raise ContractError(too_big)
    names = {p.name: i for i, p in enumerate(signature.params)}
    uses: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED) or (isinstance(node, ast.Constant)
                                              and type(node.value) is not int):
            raise ContractError(f"{where}: `{expression}` may only use integer parameters, "
                                "integer literals, + - * / and parentheses.")
        if isinstance(node, ast.Name):
            i = names.get(node.id)
            if i is None or signature.params[i].ctype.kind != "scalar" \
                    or signature.params[i].ctype.is_float:
                raise ContractError(f"{where}: `{node.id}` in `{expression}` is not an integer "
                                    f"parameter of {signature.name}.")
            if i not in uses:
                uses.append(i)

    def build(node: ast.AST) -> Callable[[Sequence[int]], tuple[int, CInt]]:
        """A closure evaluating ``node`` on the used parameters' values;
        parts without parameters are evaluated once, here, so that `n / 0`
        or a literal overflow is an error when the contract is written."""
        if isinstance(node, ast.Constant):
            value = node.value
            ctype = _INT if _INT.fits(value) else _LONG
            if not ctype.fits(value):
                raise ContractError(f"{where}: the literal {value} in `{expression}` is too large "
                                    "for a C long.")
            return lambda values: (value, ctype)
        if isinstance(node, ast.Name):
            slot, ctype = uses.index(names[node.id]), c_int_type(signature.params[names[node.id]].ctype)
            return lambda values: (values[slot], ctype)
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            if isinstance(node.op, ast.UAdd):
                fn = operand
            else:
                def fn(values, operand=operand):
                    return _c_binary(ast.Sub(), 0, _INT, *operand(values))
        else:
            left, right, op = build(node.left), build(node.right), node.op
            if (isinstance(op, (ast.Div, ast.FloorDiv))
                    and not any(isinstance(n, ast.Name) for n in ast.walk(node.right))
                    and right(())[0] == 0):
                raise ContractError(f"{where}: `{expression}` divides by zero whatever the "
                                    "arguments.")

            def fn(values, left=left, right=right, op=op):
                return _c_binary(op, *left(values), *right(values))
        if not any(isinstance(n, ast.Name) for n in ast.walk(node)):
            try:
                constant = fn(())
            except ContractValueError as exc:
                raise ContractError(f"{where}: `{expression}` {exc} whatever the arguments.") from None
            return lambda values: constant
        return fn

    function = build(tree.body)
    return LengthContract(index, signature.params[index].name, expression.strip(), tuple(uses),
                          tuple(signature.params[i].name for i in uses), function)


def length_contracts(signature: Signature) -> tuple[LengthContract, ...]:
    """The checked length contracts of a signature's pointer parameters."""
    contracts = []
    for i, param in enumerate(signature.params):
        if not param.length:
            continue
        if param.ctype.holds_pointers:
            raise ContractError(f"'{param.name}' of {signature.name} points to one struct holding "
                                f"pointers: give the lengths of its pointer fields instead, e.g. "
                                f"sizes={{'{signature.name}': {{'{param.name}.x': 'n'}}}}.")
        if not param.ctype.is_pointer:
            raise ContractError(f"'{param.name}' of {signature.name} is not a pointer, so it has "
                                "no length to check.")
        contracts.append(_compile_length(signature, i, param.length))
    return tuple(contracts)


def known_shape(signature: Signature, index: int, values: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The shape an array parameter must have when the call does not give
    the array (an output allocated for the caller): its declared shape
    (``double r[3][3]``), or its length contract evaluated on ``values``
    (the other arguments by name); None when neither says."""
    param = signature.params[index]
    if param.ctype.shape and all(param.ctype.shape):
        return tuple(param.ctype.shape)
    for contract in length_contracts(signature):
        if contract.param == index:
            missing = [n for n in contract.names if values.get(n) is None]
            if missing:
                return None
            return (contract.evaluate([int(values[n]) for n in contract.names]),)
    return None


def with_lengths(signature: Signature, lengths: dict[str, str]) -> Signature:
    """The signature with length contracts added or replaced from Python
    (``sizes={"x": "n"}``; ``{"m.x": "n"}`` for pointer field ``x`` of a
    struct ``m``, over that struct's integer fields); the expressions are
    checked here."""
    lengths = dict(lengths)  # (the field entries are taken out below; the caller's stay)
    names = [p.name for p in signature.params]
    fields: dict[str, dict[str, str]] = {}
    for key in [k for k in lengths if "." in k and k.split(".", 1)[0] in names]:
        param, field_name = key.split(".", 1)
        fields.setdefault(param, {})[field_name] = str(lengths.pop(key))
    unknown = [name for name in lengths if name not in names]
    if unknown:
        raise ContractError(f"sizes for {signature.name}: no parameter named "
                            f"{', '.join(unknown)} (it has {', '.join(names)}).")
    params = []
    for p in signature.params:
        if p.name in lengths:
            p = replace(p, length=str(lengths[p.name]))
        if p.name in fields:
            if not p.ctype.holds_pointers:
                raise ContractError(f"sizes for {signature.name}: '{p.name}' is not a pointer to a "
                                    "struct holding pointers, so it has no fields to size.")
            layout = json.loads(p.ctype.layout)
            layout["lengths"] = {**layout.get("lengths", {}), **fields[p.name]}
            p = replace(p, ctype=replace(p.ctype, layout=json.dumps(layout)))
            field_contracts(p.ctype, f"{p.name} of {signature.name}")  # checked now
        params.append(p)
    updated = replace(signature, params=tuple(params))
    length_contracts(updated)
    return updated


def field_contracts(ctype: CType, where: str) -> list[LengthContract]:
    """The length contracts of a struct's pointer fields (``sizes={"m.x":
    "n"}``), over the struct's integer fields: each contract's ``param`` and
    ``uses`` index the struct's fields."""
    layout = json.loads(ctype.layout)
    lengths = layout.get("lengths", {})
    if not lengths:
        return []
    pointers = {f["name"]: f for f in layout.get("pointers", [])}
    fields = []
    for name, fmt in zip(layout["names"], layout["formats"]):
        if name in pointers:
            f = pointers[name]
            fields.append(Param(name, CType("pointer", f"{f['base']} *", f["base"], f["dtype"])))
        elif isinstance(fmt, str) and fmt[1] in "iu":
            dtype = f"{'uint' if fmt[1] == 'u' else 'int'}{int(fmt[2:]) * 8}"
            base = {"int8": "signed char", "uint8": "unsigned char", "int16": "short",
                    "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
                    "int64": "long", "uint64": "unsigned long"}[dtype]
            fields.append(Param(name, CType("scalar", base, base, dtype)))
        else:
            fields.append(Param(name, CType("unsupported", str(fmt))))
    struct = Signature(f"the struct '{where}'", tuple(fields), CType("void", "void"), "")
    contracts = []
    for name, expression in lengths.items():
        if name not in pointers:
            raise ContractError(f"sizes: '{name}' is not a pointer field of the struct {where} "
                                f"(its pointer fields: {', '.join(pointers) or 'none'}).")
        contracts.append(_compile_length(struct, [p.name for p in fields].index(name), expression))
    return contracts


@dataclass(frozen=True)
class GlobalVar:
    """A global variable the module defines with external linkage.

    ``element`` is the CType of one element (a scalar, or ``kind="struct"``
    with a layout) and ``shape`` the array dimensions (``()`` for a scalar);
    ``element.kind == "unsupported"`` (with a ``reason``) for globals Python
    cannot view (pointers, unions, zero-length arrays), which are still
    shared between the module's libraries. A ``thread_local`` global is
    shared too, but has one instance per thread, so it cannot be viewed: a
    view made on one thread would show that thread's copy, and dangle once
    the thread exits.
    """

    name: str
    spelling: str
    element: CType
    shape: tuple[int, ...]
    size: int
    const: bool
    location: str
    thread_local: bool = False

    @property
    def viewable(self) -> bool:
        return self.element.kind in ("scalar", "struct") and not self.thread_local

    @property
    def why_not_viewable(self) -> str:
        if self.thread_local:
            return ("it is thread-local (__thread / _Thread_local): each thread has its own "
                    "copy, and a view made on one thread dangles once that thread exits. Read "
                    "or set it through a C function the kernel's thread calls, or make it an "
                    "ordinary global")
        if self.element.kind not in ("scalar", "struct"):
            return self.element.reason or "its type has no numpy equivalent"
        return ""

    @property
    def active(self) -> bool:
        """Can it carry derivatives (so that it needs a shadow)? A
        thread-local global gets one too: the shadow itself is an ordinary
        global, and without it Enzyme cannot differentiate code reading it."""
        return (self.element.kind in ("scalar", "struct") and not self.const
                and self.element.carries_derivative)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> GlobalVar:
        return cls(name=data["name"], spelling=data["spelling"], element=CType(**data["element"]),
                   shape=tuple(data["shape"]), size=data["size"], const=data["const"],
                   location=data["location"], thread_local=data.get("thread_local", False))


def _global_var(cursor, table, where: str) -> GlobalVar:
    from clang.cindex import TypeKind as K

    t = cursor.type.get_canonical()
    const = t.is_const_qualified()
    shape: list[int] = []
    element = t
    while element.kind == K.CONSTANTARRAY:
        shape.append(element.element_count)
        element = element.element_type.get_canonical()
        const = const or element.is_const_qualified()
    scalar = _scalar(element, table)
    if not cursor.spelling.isascii():
        ctype = CType("unsupported", element.spelling,
                      reason="its name is not ASCII, and cffi (which declares the symbol to find "
                             "it) only reads ASCII identifiers; rename it")
    elif 0 in shape:
        ctype = CType("unsupported", element.spelling,
                      reason="it is a zero-length array (a GNU extension): there is no element "
                             "to view")
    elif scalar:
        ctype = CType("scalar", element.spelling, scalar[0], scalar[1])
    elif element.kind == K.RECORD:
        ctype = _ctype(element, table, returned=True)
    else:
        ctype = CType("unsupported", element.spelling,
                      reason=f"`{element.spelling}` has no numpy equivalent")
    return GlobalVar(cursor.spelling, cursor.type.spelling, ctype, tuple(shape), max(t.get_size(), 0),
                     const, where, _thread_local(cursor))


def _thread_local(cursor) -> bool:
    try:
        from clang.cindex import TLSKind

        return cursor.tls_kind != TLSKind.NONE
    except (ImportError, AttributeError):  # a libclang without clang_getCursorTLSKind
        words = {token.spelling for token in cursor.get_tokens()}
        return bool(words & {"__thread", "_Thread_local", "thread_local"})


def _scalar_table():
    from clang.cindex import TypeKind as K

    return {
        K.DOUBLE: ("double", "float64"),
        K.FLOAT: ("float", "float32"),
        K.BOOL: ("_Bool", "bool"),
        K.CHAR_S: ("char", "int"),
        K.SCHAR: ("signed char", "int"),
        K.CHAR_U: ("char", "uint"),
        K.UCHAR: ("unsigned char", "uint"),
        K.SHORT: ("short", "int"),
        K.USHORT: ("unsigned short", "uint"),
        K.INT: ("int", "int"),
        K.UINT: ("unsigned int", "uint"),
        K.LONG: ("long", "int"),
        K.ULONG: ("unsigned long", "uint"),
        K.LONGLONG: ("long long", "int"),
        K.ULONGLONG: ("unsigned long long", "uint"),
    }


def _scalar(t, table) -> tuple[str, str] | None:
    entry = table.get(t.kind)
    if entry is None:
        return None
    base, family = entry
    if family in ("int", "uint"):
        return base, f"{family}{8 * t.get_size()}"
    return base, family


class _Unsupported(Exception):
    pass


def _element_format(t, table) -> tuple[object, bool]:
    """The numpy format of one struct field type, and whether it is floating."""
    from clang.cindex import TypeKind as K

    canon = t.get_canonical()
    scalar = _scalar(canon, table)
    if scalar:
        dtype = scalar[1]
        if dtype == "bool":
            return "|b1", False
        code = {"float64": "f8", "float32": "f4"}.get(dtype) or \
            f"{'u' if dtype.startswith('u') else 'i'}{int(dtype.lstrip('uint')) // 8}"
        return (f"<{code}" if code[-1] != "1" else f"|{code}"), dtype.startswith("float")
    if canon.kind == K.CONSTANTARRAY:
        inner, floating = _element_format(canon.element_type, table)
        if isinstance(inner, list) and len(inner) == 2 and isinstance(inner[1], list):
            return [inner[0], [canon.element_count, *inner[1]]], floating
        return [inner, [canon.element_count]], floating
    if canon.kind == K.RECORD:
        return _record_layout(canon, table)
    raise _Unsupported(f"struct fields of type `{t.spelling}` are not supported (fields must be "
                       "double, float, integers, fixed-size arrays or structs of those)")


def layout_size(fmt: object) -> int:
    """The size in bytes of a layout format (a scalar's numpy code, an
    ``[element, shape]`` array or a nested struct's layout)."""
    if isinstance(fmt, dict):
        return fmt["itemsize"]
    if isinstance(fmt, list):
        return math.prod(fmt[1]) * layout_size(fmt[0])
    return int(str(fmt)[2:])


def _scalar_leaves(layout: dict, base: int = 0) -> list[tuple[int, int, bool, str]]:
    """(offset, size, floating, field name) of every scalar in a layout."""
    leaves = []
    for name, fmt, offset in zip(layout["names"], layout["formats"], layout["offsets"]):
        count, element = (math.prod(fmt[1]), fmt[0]) if isinstance(fmt, list) else (1, fmt)
        for i in range(count):
            at = base + offset + i * layout_size(element)
            if isinstance(element, dict):
                leaves += [(o, n, f, f"{name}.{leaf}") for o, n, f, leaf in _scalar_leaves(element, at)]
            else:
                leaves.append((at, layout_size(element), str(element)[1] == "f", name))
    return leaves


def integer_register_floats(layout: dict) -> list[str]:
    """The floating fields of a struct passed or returned by value that the
    x86-64 SysV ABI puts in an integer register: a struct of at most 16
    bytes without misaligned fields travels in registers, one per eightbyte,
    and an eightbyte holding any integer field goes in an integer register.
    Code then packs the float's bits with integer shifts and ors, which
    Enzyme v0.0.289 cannot differentiate: forward mode fails, reverse mode
    silently drops the derivative (0)."""
    leaves = _scalar_leaves(layout)
    if layout["itemsize"] > 16 or any(offset % size for offset, size, _, _ in leaves):
        return []  # passed in memory
    mixed: list[str] = []
    for eightbyte in range(0, layout["itemsize"], 8):
        inside = [leaf for leaf in leaves if eightbyte <= leaf[0] < eightbyte + 8]
        if any(not floating for _, _, floating, _ in inside):
            mixed += [name for _, _, floating, name in inside if floating and name not in mixed]
    return mixed


def _record_layout(record, table, pointers: bool = False) -> tuple[dict, bool]:
    """A numpy structured-dtype description of a C struct, with clang's
    offsets, size and alignment, so the numpy and C layouts agree by
    construction. The members of an anonymous struct member are the
    struct's own (C reaches them as ``s.a``), at their offsets in it.

    With ``pointers``, top-level fields that point to scalars are allowed:
    each is an 8-byte unsigned field in the layout (the address the calling
    layer fills in) and is described under ``"pointers"`` (name, dtype, C
    element type, const).
    """
    from clang.cindex import CursorKind
    from clang.cindex import TypeKind as K

    declaration = record.get_declaration()
    if declaration.kind != CursorKind.STRUCT_DECL:
        raise _Unsupported(f"`{record.spelling}` is a union; only structs are supported")
    if record.get_size() < 0:
        raise _Unsupported(f"`{record.spelling}` is an incomplete type (its definition is not "
                           "visible): include the header that defines it")
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    pointed: list[dict] = []
    floating = False

    def add(rec, base: int) -> None:
        nonlocal floating
        for member in rec.get_fields():
            if member.is_bitfield():
                raise _Unsupported(
                    f"`{record.spelling}` has a bit-field ({member.spelling or 'unnamed'}), which "
                    "numpy cannot lay out; give the kernel a struct of whole fields (e.g. an "
                    "`int` per flag) and convert in C")
            offset = base + member.get_field_offsetof() // 8
            if not member.spelling:
                inner = member.type.get_canonical()
                if inner.get_declaration().kind != CursorKind.STRUCT_DECL:
                    raise _Unsupported(f"`{record.spelling}` has an anonymous union member; only "
                                       "structs are supported")
                add(inner, offset)
                continue
            canon = member.type.get_canonical()
            if pointers and base == 0 and canon.kind == K.POINTER:
                element = _scalar(canon.get_pointee().get_canonical(), table)
                if element is None:
                    raise _Unsupported(f"field '{member.spelling}' of `{record.spelling}` is "
                                       f"`{member.type.spelling}`: only pointers to double, float "
                                       "and integer types are supported in a struct")
                names.append(member.spelling)
                formats.append("<u8")
                offsets.append(offset)
                pointed.append({"name": member.spelling, "base": element[0], "dtype": element[1],
                                "const": canon.get_pointee().is_const_qualified()})
                floating = floating or element[1] in ("float32", "float64")
                continue
            fmt, is_float = _element_format(member.type, table)
            names.append(member.spelling)
            formats.append(fmt)
            offsets.append(offset)
            floating = floating or is_float

    add(record, 0)
    layout = {"names": names, "formats": formats, "offsets": offsets,
              "itemsize": record.get_size(), "align": record.get_align()}
    if pointed:
        layout["pointers"] = pointed
    return layout, floating


def _ctype(t, table, returned: bool = False) -> CType:
    from clang.cindex import TypeKind as K

    spelling = t.spelling
    canon = t.get_canonical()
    if canon.kind == K.VOID:
        return CType("void", spelling, reason="a void parameter")
    if canon.kind == K.RECORD:
        if not returned:
            return CType("unsupported", spelling, reason="structs passed by value are not "
                         "supported; pass a pointer to the struct")
        try:
            layout, floating = _record_layout(canon, table)
        except _Unsupported as exc:
            return CType("unsupported", spelling, reason=str(exc))
        return CType("struct", spelling, "void", "struct", layout=json.dumps(layout),
                     struct_float=floating)
    scalar = _scalar(canon, table)
    if scalar:
        return CType("scalar", spelling, scalar[0], scalar[1])
    if canon.kind == K.POINTER and canon.get_pointee().get_canonical().kind in (
            K.FUNCTIONPROTO, K.FUNCTIONNOPROTO):
        # A callback: another kernel of the module is passed for it.
        return CType("function", spelling, canon.get_pointee().get_canonical().spelling, "function")
    if canon.kind == K.POINTER and canon.get_pointee().get_canonical().kind == K.POINTER:
        inner = canon.get_pointee().get_canonical().get_pointee()
        element = _scalar(inner.get_canonical(), table)
        if element:
            return CType("pointer", spelling, element[0], element[1],
                         const=inner.is_const_qualified(), rows=True)
        return CType("unsupported", spelling,
                     reason=f"pointers to `{canon.get_pointee().spelling}` are not supported (only "
                            "`double **`-style tables of rows of scalars)")
    if canon.kind in (K.POINTER, K.INCOMPLETEARRAY, K.CONSTANTARRAY):
        pointee = canon.get_pointee() if canon.kind == K.POINTER else canon.element_type
        shape = [canon.element_count if canon.kind == K.CONSTANTARRAY else 0]
        # A multidimensional array, `double (*)[M]` or `double [N][M]`: its
        # rows are contiguous, so it is a flat array of the innermost element.
        while pointee.get_canonical().kind == K.CONSTANTARRAY:
            shape.append(pointee.get_canonical().element_count)
            pointee = pointee.get_canonical().element_type
        if len(shape) == 1 and not shape[0]:
            shape = []  # a plain pointer, or `double x[]`
        element = _scalar(pointee.get_canonical(), table)
        if element:
            return CType("pointer", spelling, element[0], element[1],
                         const=pointee.is_const_qualified(), shape=tuple(shape))
        if shape and len(shape) > 1:
            return CType("unsupported", spelling,
                         reason=f"arrays of `{pointee.spelling}` are not supported yet (only "
                                "multidimensional arrays of double, float and integer types)")
        if pointee.get_canonical().kind == K.RECORD:
            try:
                layout, floating = _record_layout(pointee.get_canonical(), table, pointers=True)
            except _Unsupported as exc:
                return CType("unsupported", spelling, reason=str(exc))
            return CType("pointer", spelling, "void", "struct", const=pointee.is_const_qualified(),
                         layout=json.dumps(layout), struct_float=floating)
        return CType("unsupported", spelling,
                     reason=f"pointers to `{pointee.spelling}` are not supported yet (only "
                            "pointers to double, float, integer types and structs of those)")
    return CType("unsupported", spelling,
                 reason=f"`{spelling}` parameters are not supported yet")


LENGTH_ANNOTATION = "enzyme_len:"


def _length_annotation(cursor) -> str:
    from clang.cindex import CursorKind

    for child in cursor.get_children():
        if child.kind == CursorKind.ANNOTATE_ATTR and child.spelling.startswith(LENGTH_ANNOTATION):
            return child.spelling[len(LENGTH_ANNOTATION):].strip()
    return ""


_INDEX = None


def _drop_index() -> None:
    # libclang's Index.__del__ fails noisily if it runs during interpreter
    # teardown, after clang.cindex's globals are gone; release it first.
    global _INDEX
    _INDEX = None


def _index():
    global _INDEX
    if _INDEX is None:
        from clang.cindex import Index

        _INDEX = Index.create()
        atexit.register(_drop_index)
    return _INDEX


def _diagnostic_text(diag) -> str:
    loc = diag.location
    where = f"{_display_name(loc.file.name) if loc.file else '<unknown>'}:{loc.line}:{loc.column}"
    text = f"{where}: error: {diag.spelling}"
    if loc.file:
        try:
            with open(loc.file.name, errors="replace") as handle:
                lines = handle.read().splitlines()
            if 0 < loc.line <= len(lines):
                text += f"\n    {lines[loc.line - 1]}\n    {' ' * (loc.column - 1)}^"
        except OSError:
            pass
    return text


def parse_signatures(sources: Sequence[str], args: Sequence[str],
                     resource_dir: str) -> dict[str, Signature]:
    """The external functions the sources define (see :func:`parse_module`).

    Examples
    --------
    >>> import os, tempfile
    >>> from enzyme.toolchain import resolve
    >>> path = os.path.join(tempfile.mkdtemp(), "f.c")
    >>> _ = open(path, "w").write("double f(double x, double y) { return x*x + 3*y; }")
    >>> sigs = parse_signatures([path], [], resolve().resource_dir)
    >>> str(sigs["f"])
    'double f(double x, double y)'
    """
    return parse_module(sources, args, resource_dir)[0]


def parse_module(sources: Sequence[str], args: Sequence[str], resource_dir: str,
                 census: dict | None = None, languages: Sequence[str] | None = None,
                 file_args: Sequence[Sequence[str]] | None = None,
                 cache_dir: str | None = None,
                 ) -> tuple[dict[str, Signature], dict[str, GlobalVar]]:
    """Parse every C source and return the external functions it defines.

    In C++ sources, the functions are those with C linkage (``extern "C"``):
    the only ones a C declaration can call by name.

    Parameters
    ----------
    sources : sequence of str
        Paths of the C and C++ files.
    args : sequence of str
        The ``-I``/``-D``/``-std`` flags used to compile them.
    resource_dir : str
        ``clang -print-resource-dir`` of the compiling clang.
    languages : sequence of str, optional
        ``"c"`` or ``"c++"`` for each source (default: all C).
    file_args : sequence of sequences of str, optional
        Each source's own flags, after ``args`` (from a compilation database).
    cache_dir : str, optional
        Where each file's parse is kept (with the hashes of the headers it
        read), so that parsing a module again re-parses only changed files.

    Raises
    ------
    CompileError
        When libclang reports an error (the message has file:line:col).

    Returns
    -------
    (signatures, globals)
        The external functions and the external global variables defined.
        ``census``, when given, receives every function and global variable
        the sources declare (see :func:`_unit_census`), for checking the
        names given to ``compile()``.
    """
    gnu_inline = _gnu_inline_semantics(args)
    units = []
    # What a header's declaration says is the same in every file that
    # includes it: worked out once per declaration (a 249-file library
    # repeats 170,000 of them), yet each file's facts stay complete.
    memo: dict = {}
    for source, language, own in zip(sources, languages or ["c"] * len(sources),
                                     file_args or [()] * len(sources)):
        # (-fno-exceptions as the build compiles C++: build.CXX_FLAGS)
        cxx = ["-fno-exceptions"] if language == "c++" else []
        parse_args = ["-x", language, "-resource-dir", resource_dir, *cxx, *args, *own]
        key = _unit_key(source, parse_args, gnu_inline) if cache_dir else ""
        facts = _cached_unit(cache_dir, key) if cache_dir else None
        if facts is None:
            facts = _parse_unit(source, parse_args, language == "c++", gnu_inline, memo)
            if cache_dir:
                _store_unit(cache_dir, key, facts)
        units.append(facts)
    return _merge_units(units, census)


def _parse_unit(source: str, parse_args: Sequence[str], cxx_source: bool,
                gnu_inline: bool, memo: dict | None = None) -> dict:
    """What one file contributes to a module, as JSON-able facts: the
    functions and globals it defines, the call-ABI hazards and rule
    registrations it declares, whom its functions call, its census, and the
    headers it read (for the per-file cache)."""
    from clang.cindex import CursorKind, LinkageKind, StorageClass, TranslationUnitLoadError, TypeKind

    table = _scalar_table()
    try:
        tu = _index().parse(source, args=list(parse_args))
    except TranslationUnitLoadError as exc:
        raise CompileError(f"libclang could not parse {_display_name(source)}: {exc}") from exc
    errors = tuple(_diagnostic_text(d) for d in tu.diagnostics if d.severity >= 3)
    if errors:
        raise CompileError(f"Parsing {_display_name(source)} failed:\n" + "\n".join(errors),
                           errors)
    top = _top_level(tu.cursor)
    mark = _first_line(source)
    facts: dict = {"hazards": {}, "handled": [], "signatures": [], "variables": [], "calls": {},
                   "census": {"functions": {}, "variables": {}}, "cxx_linkage": [],
                   "includes": sorted({str(i.include.name) for i in tu.get_includes()
                                       if i.include is not None})}
    memo = {} if memo is None else memo
    # Functions with a struct in an integer register (see
    # integer_register_floats), and functions with a derivative rule or
    # declared inactive, whose bodies Enzyme does not differentiate. Each
    # name once per file, and each declaration once per parse (``memo``).
    checked: set[str] = set()
    for cursor in top:
        if cursor.kind == CursorKind.FUNCTION_DECL and cursor.spelling not in checked:
            if cursor.type.kind == TypeKind.FUNCTIONPROTO:  # (`f()` says nothing yet)
                checked.add(cursor.spelling)
            where = _declaration_key(cursor)
            why = memo.get(("hazard", where)) if where else None
            if why is None:
                why = _register_hazard(cursor, table, source)
                if where:
                    memo[("hazard", where)] = why
            if why:
                facts["hazards"].setdefault(cursor.spelling, why)
        elif cursor.kind == CursorKind.VAR_DECL:
            for prefix in _RULE_PREFIXES:
                if cursor.spelling.startswith(prefix):
                    facts["handled"].append(cursor.spelling[len(prefix):])
    if mark == SUPPORT_MARK:
        return facts
    declarations: dict[str, list] = {}
    for cursor in top:
        if cursor.kind == CursorKind.FUNCTION_DECL:
            declarations.setdefault(cursor.spelling, []).append(cursor)
    for cursor in top:
        # tentative definitions (`double g;`) define the variable too
        if (cursor.kind == CursorKind.VAR_DECL and cursor.linkage == LinkageKind.EXTERNAL
                and (cursor.is_definition() or cursor.storage_class != StorageClass.EXTERN)):
            if not _hidden(cursor):
                # A hidden global is absent from the library's symbol table, so
                # it cannot be shared: each library keeps its own copy, as
                # with a static one.
                facts["variables"].append(_global_var(cursor, table, _where(cursor, source)).to_json())
            continue
        if cursor.kind != CursorKind.FUNCTION_DECL or not cursor.is_definition():
            continue
        # (whom it calls: a hazard may be declared in another file)
        facts["calls"].setdefault(cursor.spelling, []).extend(sorted(_callees(cursor)))
        if cursor.linkage != LinkageKind.EXTERNAL:
            continue
        if cxx_source and cursor.mangled_name != cursor.spelling:
            # C++ linkage: its symbol is mangled (extern "C" exposes a function)
            facts["cxx_linkage"].append(cursor.spelling)
            continue
        params = tuple(
            Param(arg.spelling or f"arg{i}", _ctype(arg.type, table), _length_annotation(arg))
            for i, arg in enumerate(cursor.get_arguments())
        )
        facts["signatures"].append(Signature(
            name=cursor.spelling,
            params=params,
            ret=_ctype(cursor.result_type, table, returned=True),
            location=_where(cursor, source),
            # a definition without a prototype (`int main()`, K&R style)
            # takes exactly the parameters it declares
            variadic=(cursor.type.kind == TypeKind.FUNCTIONPROTO
                      and cursor.type.is_function_variadic()),
            hidden=_why_not_exported(tu, cursor, declarations[cursor.spelling], gnu_inline,
                                     cxx_source),
            fn_type=cursor.type.get_canonical().spelling,
        ).to_json())
    if mark != REGISTRATIONS_MARK:
        facts["census"] = _unit_census(top, memo)
    return facts


def _declaration_key(cursor) -> tuple:
    """A declaration's name and type: all that the hazard check and the
    census read of it."""
    return (cursor.spelling, cursor.type.spelling)


def _merge_units(units: Sequence[dict], census: dict | None) -> tuple[dict[str, Signature],
                                                                    dict[str, GlobalVar]]:
    """A module's functions and globals from its files' facts, with the
    call-ABI hazards each function reaches through any file's functions."""
    hazards: dict[str, str] = {}
    handled: set[str] = set()
    calls: dict[str, set[str]] = {}
    found: dict[str, Signature] = {}
    variables: dict[str, GlobalVar] = {}
    for facts in units:
        for name, why in facts["hazards"].items():
            hazards.setdefault(name, why)
        handled.update(facts["handled"])
        for name, callees in facts["calls"].items():
            calls.setdefault(name, set()).update(callees)
        for data in facts["signatures"]:
            found[data["name"]] = Signature.from_json(data)
        for data in facts["variables"]:
            variables[data["name"]] = GlobalVar.from_json(data)
    if hazards:
        for name, signature in found.items():
            why = _reached_hazard(name, calls, hazards, handled)
            if why:
                found[name] = replace(signature, abi_hazard=why)
    if census is not None:
        functions = census.setdefault("functions", {})
        names = census.setdefault("variables", {})
        for facts in units:
            for name, entry in facts["census"]["functions"].items():
                kept = functions.setdefault(name, dict(entry))
                kept["defined"] = kept["defined"] or entry["defined"]
            for name, entry in facts["census"]["variables"].items():
                names.setdefault(name, entry)
            census.setdefault("cxx_linkage", []).extend(facts["cxx_linkage"])
    return found, variables


def _unit_key(source: str, parse_args: Sequence[str], gnu_inline: bool) -> str:
    """The per-file parse cache key: the file's path and text, the flags,
    the parse's own version and the libclang that parses."""
    with open(source, "rb") as handle:
        text = handle.read()
    from clang.cindex import conf

    material = json.dumps([PARSE_VERSION, os.path.realpath(source), hashlib.sha256(text).hexdigest(),
                           list(parse_args), gnu_inline, str(conf.lib._name)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _file_digest(path: str) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # (a device or a pipe is never hashed: it may never end)
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def _facts_digest(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _cached_unit(cache_dir: str, key: str) -> dict | None:
    """A file's parse from the cache, when every file it read is unchanged;
    anything amiss is a miss (cache trouble never breaks a parse)."""
    try:
        with open(os.path.join(cache_dir, f"{key}.parse.json"), encoding="utf-8") as handle:
            record = json.load(handle)
        if not all(_file_digest(path) == digest for path, digest in record["deps"].items()):
            return None
        # (the facts drive every check of a call: a record edited or damaged
        # on disk is a miss, as a module manifest whose hash fails is)
        if record["digest"] != _facts_digest(record["facts"]):
            return None
        return record["facts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_unit(cache_dir: str, key: str, facts: dict) -> None:
    deps = {path: _file_digest(path) for path in facts["includes"]}
    if any(digest is None for digest in deps.values()):
        return  # (a file it read cannot be hashed: never cached)
    final = os.path.join(cache_dir, f"{key}.parse.json")
    tmp = f"{final}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"deps": deps, "facts": facts, "digest": _facts_digest(facts)}, handle)
        os.replace(tmp, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


REGISTRATIONS_MARK = "/* enzyme-ffi generated: registrations given to enzyme.compile */"
# The first line of the C file of helpers Enzyme's BLAS rules call: its
# functions are the module's machinery, not kernels.
SUPPORT_MARK = "/* enzyme-ffi generated: support functions for Enzyme's derivatives */"


def _first_line(source: str) -> str:
    with open(source, encoding="utf-8", errors="replace") as handle:
        return handle.readline().strip()


def _unit_census(top: Sequence, memo: dict | None = None) -> dict:
    """Every function and global variable a file declares (not the generated
    registrations, which declare whatever names they were given):
    ``functions[name] = {"static", "defined", "nparams" (-1 without a
    prototype), "nfloating" (floating scalar parameters), "ret" ("void",
    "floating", "struct", "pointer", "other"), "ret_fields" (a struct
    return's field count)}``, ``variables[name] = {"static"}``."""
    from clang.cindex import CursorKind, LinkageKind, TypeKind

    functions: dict[str, dict] = {}
    variables: dict[str, dict] = {}
    for cursor in top:
        static = cursor.linkage != LinkageKind.EXTERNAL
        if cursor.kind == CursorKind.VAR_DECL:
            variables.setdefault(cursor.spelling, {"static": static})
        elif cursor.kind == CursorKind.FUNCTION_DECL:
            entry = functions.get(cursor.spelling)
            where = (*_declaration_key(cursor), static) if entry is None and memo is not None else None
            if where and ("census", where) in memo:
                entry = functions[cursor.spelling] = dict(memo[("census", where)])
            if entry is None:
                ret = cursor.result_type.get_canonical()
                kind = ("void" if ret.kind == TypeKind.VOID else
                        "floating" if ret.kind in (TypeKind.FLOAT, TypeKind.DOUBLE) else
                        "struct" if ret.kind == TypeKind.RECORD else
                        "pointer" if ret.kind == TypeKind.POINTER else "other")
                prototyped = cursor.type.kind == TypeKind.FUNCTIONPROTO
                params = list(cursor.get_arguments())
                entry = functions[cursor.spelling] = {
                    "static": static, "defined": False, "ret": kind,
                    "nparams": len(params) if prototyped else -1,
                    "nfloating": sum(a.type.get_canonical().kind in (TypeKind.FLOAT, TypeKind.DOUBLE)
                                     for a in params),
                    "ret_fields": len(list(ret.get_fields())) if kind == "struct" else 0}
                if where:
                    memo[("census", where)] = dict(entry)
            entry["defined"] = entry["defined"] or cursor.is_definition()
    return {"functions": functions, "variables": variables}


_RULE_PREFIXES = ("__enzyme_register_derivative_", "__enzyme_register_gradient_",
                  "__enzyme_inactivefn_")


def _register_hazard(function, table, source: str) -> str:
    """Why a function passes floats in an integer register (empty if not)."""
    from clang.cindex import TypeKind as K

    typed = [("returns", function.result_type)]
    typed += [("takes", arg.type) for arg in function.get_arguments()]
    for verb, t in typed:
        canon = t.get_canonical()
        if canon.kind != K.RECORD:
            continue
        try:
            layout, _ = _record_layout(canon, table)
        except _Unsupported:
            continue
        floats = integer_register_floats(layout)
        if floats:
            return (f"'{function.spelling}' ({_where(function, source)}), which {verb} `{t.spelling}` by "
                    f"value, whose float field(s) {', '.join(floats)} the C ABI passes in an "
                    "integer register together with integer fields")
    return ""


def _callees(function) -> set[str]:
    from clang.cindex import CursorKind

    names = set()
    for node in function.walk_preorder():
        if node.kind == CursorKind.CALL_EXPR:
            target = node.referenced
            if target is not None and target.kind == CursorKind.FUNCTION_DECL:
                names.add(target.spelling)
    return names


def _reached_hazard(kernel: str, calls: dict[str, set[str]], hazards: dict[str, str],
                    handled: set[str]) -> str:
    """The hazard of a function the kernel calls, directly or not (its own
    struct return is not one: enzyme-ffi keeps it Const in reverse mode and
    refuses its tangent in forward mode)."""
    seen, pending = {kernel}, sorted(calls.get(kernel, ()))
    while pending:
        name = pending.pop()
        if name in seen or name in handled:
            continue
        seen.add(name)
        if name in hazards:
            return hazards[name]
        pending.extend(sorted(calls.get(name, ())))
    return ""


def _where(cursor, source: str) -> str:
    loc = cursor.location
    return f"{_display_name(loc.file.name if loc.file else source)}:{loc.line}"


def _display_name(path: str) -> str:
    """The name a user knows a source by: C text given to compile() is
    parsed from a temporary ``build-*/source<i>.c`` file, deleted once the
    build ends, so a location there would point at nothing."""
    directory, base = os.path.split(path)
    if os.path.basename(directory).startswith("build-") and re.fullmatch(r"source\d+\.c", base):
        return "<source>"
    return path


_VISIBILITY: Callable | None = None


def _hidden(cursor) -> bool:
    """Does the symbol have hidden visibility (an attribute, a pragma or
    -fvisibility=hidden), so that the linked library does not export it?"""
    global _VISIBILITY
    if _VISIBILITY is None:
        import ctypes

        from clang.cindex import Cursor, conf

        # The bindings do not wrap clang_getCursorVisibility (libclang >= 3.8).
        function = conf.lib.clang_getCursorVisibility
        function.argtypes, function.restype = [Cursor], ctypes.c_int
        _VISIBILITY = function
    return _VISIBILITY(cursor) == 1  # CXVisibility_Hidden


_INLINE = frozenset(("inline", "__inline", "__inline__"))


def _gnu_inline_semantics(args: Sequence[str]) -> bool:
    """Whether `inline` means GNU89's (a plain `inline` definition is also
    an external one, `extern inline` is not) rather than C99's."""
    gnu = False
    for arg in args:
        if arg.startswith("-std="):
            gnu = arg[5:] in ("c89", "c90", "gnu89", "gnu90", "iso9899:1990", "iso9899:199409")
        elif arg == "-ansi":
            gnu = True
        elif arg in ("-fgnu89-inline", "-fno-gnu89-inline"):
            gnu = arg == "-fgnu89-inline"
    return gnu


def _top_level(root) -> list:
    """The file-scope declarations of a translation unit, with those inside
    C++ ``extern "C" { ... }`` blocks (and single ``extern "C"``
    declarations) taken out of their linkage block."""
    from clang.cindex import CursorKind

    out = []
    for cursor in root.get_children():
        # (libclang 15 reports a linkage block as an unexposed declaration)
        if cursor.kind in (CursorKind.LINKAGE_SPEC, CursorKind.UNEXPOSED_DECL):
            out += _top_level(cursor)
        else:
            out.append(cursor)
    return out


def _why_not_exported(tu, definition, declarations: list, gnu_inline: bool,
                      cxx: bool = False) -> str:
    """Why the library will not export a function defined with external
    linkage (empty when it will): hidden visibility, or an inline definition,
    which C emits no symbol for (clang's isInlineDefinitionExternallyVisible,
    from the specifiers written on each file-scope declaration)."""
    from clang.cindex import SourceRange

    name = definition.spelling
    if _hidden(definition):
        return (f"the library does not export '{name}' (it has hidden visibility, from "
                "__attribute__((visibility(\"hidden\"))), a visibility pragma or "
                "-fvisibility=hidden), so Python cannot find it; give it "
                "__attribute__((visibility(\"default\"))) or drop -fvisibility=hidden")
    specifiers = []
    for declaration in declarations:
        before = SourceRange.from_locations(declaration.extent.start, declaration.location)
        words = {token.spelling for token in tu.get_tokens(extent=before)} - {name}
        specifiers.append((bool(words & _INLINE), "extern" in words, "gnu_inline" in words))
    if not any(inline for inline, _, _ in specifiers):
        return ""
    if cxx:
        return (f"'{name}' is a C++ inline function, which C++ emits only where it is called, so "
                "the library does not export it; drop `inline`")
    if gnu_inline or any(gnu for _, _, gnu in specifiers):
        exported = any(inline and not extern for inline, extern, _ in specifiers)
    else:  # C99 6.7.4p7
        exported = any(not inline or extern for inline, extern, _ in specifiers)
    if exported:
        return ""
    return (f"'{name}' is an inline definition, for which C emits no symbol (C99: every "
            "declaration says `inline` and none `extern`; GNU89: `extern inline`), so the library "
            "does not export it; drop `inline`, or (C99) add a declaration of it with `extern` "
            "in the same file")


# ---- Parsing in a worker process --------------------------------------------
# libclang runs in a child interpreter, as clang and opt do: a crash or a hang
# inside it becomes an exception (with the build's timeout), never the end of
# the user's interpreter. The child loads only this module and errors.py (a
# bare package object stands in for enzyme), not numpy or cffi.

_BOOTSTRAP = ("import sys, types\n"
              "package = types.ModuleType('_enzyme_parse'); package.__path__ = [{directory!r}]\n"
              "sys.modules['_enzyme_parse'] = package\n"
              "from _enzyme_parse.signature import _worker_main\n"
              "_worker_main()\n")


def worker_command() -> list[str]:
    """The command line of a parse worker; it reads :func:`parse_request`'s
    JSON on stdin and writes its reply on stdout."""
    return [sys.executable, "-I", "-S", "-c", _BOOTSTRAP.format(directory=os.path.dirname(__file__))]


def parse_request(sources: Sequence[str], args: Sequence[str], resource_dir: str,
                  libclang: str, languages: Sequence[str] | None = None,
                  file_args: Sequence[Sequence[str]] | None = None,
                  cache_dir: str | None = None) -> str:
    """The worker's input: what :func:`parse_module` takes, and the libclang
    to load ("" for the one bundled with the Python package)."""
    return json.dumps({"sources": list(sources), "args": list(args), "resource_dir": resource_dir,
                       "libclang": libclang, "sys_path": [p for p in sys.path if p],
                       "languages": list(languages) if languages else None,
                       "file_args": [list(a) for a in file_args] if file_args else None,
                       "cache_dir": cache_dir})


def read_worker_reply(stdout: str, returncode: int, stderr: str, census: dict | None = None
                      ) -> tuple[dict[str, Signature], dict[str, GlobalVar]]:
    """The signatures and globals from a worker's output, or the
    :class:`CompileError` it reported (or that its death amounts to);
    ``census`` receives the names the sources declare (see parse_module)."""
    reply = None
    for line in stdout.splitlines():
        if line.startswith("ENZYME-PARSE "):
            reply = json.loads(line[len("ENZYME-PARSE "):])
    if reply is None:
        how = f"died from signal {-returncode}" if returncode < 0 else f"exited with {returncode}"
        raise CompileError(f"libclang {how} while parsing the sources' signatures (a libclang "
                           f"crash: try simplifying the declarations it stopped at):\n{stderr[-3000:]}")
    if "error" in reply:
        raise CompileError(reply["error"], tuple(reply.get("diagnostics", ())))
    if census is not None:
        census.update(reply.get("census", {}))
    return ({s["name"]: Signature.from_json(s) for s in reply["signatures"]},
            {v["name"]: GlobalVar.from_json(v) for v in reply["globals"]})


def _worker_main() -> None:
    request = json.loads(sys.stdin.read())
    sys.path.extend(p for p in request["sys_path"] if p not in sys.path)  # where clang.cindex is
    try:
        import clang.cindex

        if request["libclang"]:
            clang.cindex.Config.set_library_file(request["libclang"])
            # the bindings may be newer than the library: skip functions it lacks
            clang.cindex.Config.set_compatibility_check(False)
        census: dict = {}
        signatures, variables = parse_module(request["sources"], request["args"],
                                             request["resource_dir"], census,
                                             request.get("languages"), request.get("file_args"),
                                             request.get("cache_dir"))
        reply = {"signatures": [s.to_json() for s in signatures.values()],
                 "globals": [v.to_json() for v in variables.values()], "census": census}
    except CompileError as exc:
        reply = {"error": str(exc), "diagnostics": list(exc.diagnostics)}
    except Exception as exc:  # anything else libclang's bindings raise
        reply = {"error": f"libclang failed while parsing the signatures: {type(exc).__name__}: {exc}"}
    print("ENZYME-PARSE " + json.dumps(reply), flush=True)
