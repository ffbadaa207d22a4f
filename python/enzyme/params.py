"""The parameter model of a generated entry point: one typed slot per C-level
parameter.

The code generator decides each entry point's slots (role, C type, dtype,
writable, lane) and renders the C wrapper's parameter list and its cffi
cdef from them; the Python converters and checks (``call``), the C fast
path's plan (``native/fastcall.c``, through :func:`fast_plan_specs`) and the
isolated worker's copy-back (``worker``) read the same slots. A slot's
``writable`` is what makes its C declaration ``const`` or not, so the C and
the checks cannot disagree (cffi's recompiler works the same way: one parsed
model emits both the C and the type table).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .signature import CType, Signature

__all__ = ["Role", "Slot", "primal_slots", "pointee_type", "fast_plan_specs", "FAST_FORMATS", "FAST_VALUES"]


class Role(enum.Enum):
    """What a parameter of a generated entry point carries."""

    PRIMAL = "primal"
    SHADOW = "shadow"  # a tangent (forward) or an adjoint accumulator (reverse)
    SEED = "seed"  # the adjoint of an Active return
    PRIMAL_OUT = "primal_out"
    TANGENT_OUT = "tangent_out"
    ADJOINT_OUT = "adjoint_out"
    GRADIENT_OUT = "gradient_out"
    HVP_OUT = "hvp_out"
    DIRECTION = "direction"  # of a Hessian-vector product
    SCRATCH = "scratch"  # a zero shadow of an array the kernel may write
    SLOT = "slot"  # split mode: an Active scalar's value, in memory
    SLOT_SHADOW = "slot_shadow"
    RET_SLOT = "ret_slot"
    RET_SHADOW = "ret_shadow"
    TAPE = "tape"  # split mode: the caller-allocated tape
    CALLBACK = "callback"  # a function-pointer argument, as the index of the kernel passed

    @property
    def is_output(self) -> bool:
        return self.value.endswith("_out")


@dataclass(frozen=True)
class Slot:
    """One C-level parameter of an entry point: the model the generated C
    declaration is rendered from (:attr:`c_decl`) and every check reads.

    ``ctype`` is the kernel's type of argument ``arg`` (-1 for the return
    value; the element type for scalar outputs). ``base`` is the C type
    passed, or pointed at when ``pointer``; ``writable`` is whether the entry
    point may write through the pointer (an array the kernel writes, a
    reverse-mode shadow, an output cell), and is what makes the declaration
    ``const`` or not. ``lane`` numbers the shadows, seeds and outputs of a
    batched call.
    """

    role: Role
    arg: int
    ctype: CType
    name: str
    base: str
    pointer: bool
    writable: bool = False
    lane: int = 0

    @classmethod
    def primal(cls, arg: int, ctype: CType, name: str) -> Slot:
        """The kernel's own argument, passed as the kernel declares it."""
        if ctype.is_pointer:
            return cls(Role.PRIMAL, arg, ctype, name, pointee_type(ctype), True, not ctype.const)
        return cls(Role.PRIMAL, arg, ctype, name, ctype.c_decl, False)

    @property
    def c_type(self) -> str:
        if not self.pointer:
            return self.base
        return f"{'' if self.writable else 'const '}{self.base} *"

    @property
    def c_decl(self) -> str:
        """The parameter as the generated C and its cffi cdef declare it."""
        return f"{self.c_type} {self.name}"

    @property
    def dtype(self) -> str:
        return self.ctype.dtype


def pointee_type(ctype: CType) -> str:
    """What a pointer slot of this type points to in the generated C: the
    element type, or ``void`` for a table of row pointers (``double **``,
    passed opaquely with the same ABI)."""
    return "void" if ctype.rows else ctype.base


def primal_slots(signature: Signature, struct_out: bool = False) -> tuple[Slot, ...]:
    """The kernel's own parameters as slots (``a0``, ``a1``, ...), and with
    ``struct_out`` the untyped out-pointer a struct result is copied to.

    Examples
    --------
    >>> from enzyme.signature import CType, Param, Signature
    >>> x = CType("pointer", "const double *", "double", "float64", const=True)
    >>> y = CType("pointer", "double *", "double", "float64")
    >>> sig = Signature("f", (Param("x", x), Param("y", y)), CType("void", "void"), "f.c:1")
    >>> [(s.c_decl, s.writable) for s in primal_slots(sig)]
    [('const double * a0', False), ('double * a1', True)]
    """
    slots = tuple(Slot.primal(i, p.ctype, f"a{i}") for i, p in enumerate(signature.params))
    if struct_out:
        slots += (Slot(Role.PRIMAL_OUT, -1, signature.ret, "out", "void", True, True),)
    return slots


# Buffer-protocol format characters numpy uses for each element type, and the
# value codes of native/fastcall.c.
FAST_FORMATS = {"float64": "d", "float32": "f", "int8": "b", "uint8": "B", "int16": "h",
                "uint16": "H", "int32": "i", "uint32": "I", "int64": "lq", "uint64": "LQ"}
FAST_VALUES = {"float64": 0, "float32": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5,
               "uint8": 3, "uint16": 4, "uint32": 5}


def fast_plan_specs(slots: Sequence[Slot]) -> tuple[tuple, int, int, tuple[int, ...]] | None:
    """What the C fast path checks and packs for these slots: ``(argument
    specs, seed count, seed value code, output value codes)``, or None when
    a slot needs the Python path (structs, bools, unsigned 64-bit scalars,
    non-float seeds or results). An argument spec is ``(kind, value code,
    formats, itemsize, writable, min, max)`` with kind 0 for arrays, 1 for
    floats and 2 for integers, as native/fastcall.c reads it."""
    specs = []
    seeds, outs = [], []
    for slot in slots:
        ctype = slot.ctype
        if slot.role in (Role.PRIMAL, Role.SHADOW):
            if ctype.is_pointer:
                if ctype.dtype not in FAST_FORMATS or ctype.shape or ctype.rows:
                    return None  # (native/fastcall.c checks no declared shape)
                specs.append((0, 0, FAST_FORMATS[ctype.dtype], np.dtype(ctype.dtype).itemsize,
                              int(slot.writable), 0, 0))
            elif ctype.is_float:
                specs.append((1, FAST_VALUES[ctype.dtype], "", 0, 0, 0, 0))
            elif ctype.dtype in FAST_VALUES:
                info = np.iinfo(ctype.dtype)
                specs.append((2, FAST_VALUES[ctype.dtype], "", 0, 0, int(info.min), int(info.max)))
            else:
                return None
        elif slot.role is Role.CALLBACK:
            return None  # (a kernel object to map to its index: the Python path)
        elif slot.role is Role.SEED:
            seeds.append(slot)
        elif slot.role.is_output:
            outs.append(slot)
    if any(s.dtype not in ("float64", "float32") for s in seeds + outs):
        return None
    return (tuple(specs), len(seeds), FAST_VALUES[seeds[0].dtype] if seeds else 0,
            tuple(FAST_VALUES[s.dtype] for s in outs))
