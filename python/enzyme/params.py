"""The parameter model of a generated entry point: one typed slot per C-level
parameter, made once from the code generator's own declarations.

What each argument of a call may be is decided here and only read
elsewhere: the Python converters and checks (``call``), the C fast path's
plan (``native/fastcall.c``, through :func:`fast_plan_specs`) and the
isolated worker's copy-back (``worker``) all take a slot's ``writable`` from
the declaration the C wrapper was generated with, so the C and the checks
cannot disagree (cffi's recompiler works the same way: one parsed model
emits both the C and the type table).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .signature import CType

if TYPE_CHECKING:  # only the type: the model reads what the generator emitted
    from .codegen import WrapperParam

__all__ = ["Role", "Slot", "slots_of", "declares_writable", "fast_plan_specs", "FAST_FORMATS",
           "FAST_VALUES"]


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

    @property
    def is_output(self) -> bool:
        return self.value.endswith("_out")


@dataclass(frozen=True)
class Slot:
    """One C-level parameter of an entry point.

    ``writable`` is whether the entry point may write through it: a
    non-const pointer in the generated declaration (an array the kernel
    writes, a reverse-mode shadow, an output cell). ``lane`` numbers the
    shadows of a batched call; ``arg`` is the kernel's parameter (-1 for
    the return value).
    """

    role: Role
    arg: int
    lane: int
    ctype: CType
    decl: str
    writable: bool

    @property
    def pointer(self) -> bool:
        return "*" in self.decl

    @property
    def dtype(self) -> str:
        return self.ctype.dtype


def declares_writable(decl: str) -> bool:
    """Whether a C parameter declaration lets the callee write through it: a
    non-const pointer."""
    return "*" in decl and not decl.lstrip().startswith("const")


def slots_of(params: Sequence[WrapperParam]) -> tuple[Slot, ...]:
    """The slots of an entry point, from its generated parameters.

    Examples
    --------
    >>> from enzyme.codegen import WrapperParam
    >>> from enzyme.signature import CType
    >>> x = CType("pointer", "const double *", "double", "float64", const=True)
    >>> [(s.role.name, s.writable) for s in slots_of([
    ...     WrapperParam("primal", 0, x, "const double * a0"),
    ...     WrapperParam("shadow", 0, x, "double * da0_0")])]
    [('PRIMAL', False), ('SHADOW', True)]
    """
    return tuple(Slot(Role(p.role), p.arg, p.lane, p.ctype, p.c_decl, declares_writable(p.c_decl))
                 for p in params)


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
                if ctype.dtype not in FAST_FORMATS:
                    return None
                specs.append((0, 0, FAST_FORMATS[ctype.dtype], np.dtype(ctype.dtype).itemsize,
                              int(slot.writable), 0, 0))
            elif ctype.is_float:
                specs.append((1, FAST_VALUES[ctype.dtype], "", 0, 0, 0, 0))
            elif ctype.dtype in FAST_VALUES:
                info = np.iinfo(ctype.dtype)
                specs.append((2, FAST_VALUES[ctype.dtype], "", 0, 0, int(info.min), int(info.max)))
            else:
                return None
        elif slot.role is Role.SEED:
            seeds.append(slot)
        elif slot.role.is_output:
            outs.append(slot)
    if any(s.dtype not in ("float64", "float32") for s in seeds + outs):
        return None
    return (tuple(specs), len(seeds), FAST_VALUES[seeds[0].dtype] if seeds else 0,
            tuple(FAST_VALUES[s.dtype] for s in outs))
