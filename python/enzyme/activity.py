"""Stage 3: activity annotations and modes, resolved against a signature.

The user writes Enzyme's annotations on the Python side (``Const``,
``Active``, ``Duplicated``, ``DuplicatedNoNeed``) and picks a mode
(``Reverse``, ``ReverseWithPrimal``, ``Forward``, ``ForwardWithPrimal``).
:func:`resolve_activities` checks that they fit the C signature and returns
a :class:`DerivativeSpec`, the frozen description the code generator works
from. Nothing here touches values; value checks happen in the calling layer.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ActivityError
from .signature import CType, Signature

__all__ = [
    "Mode", "ReverseMode", "ForwardMode", "ReverseSplitMode",
    "Reverse", "ReverseWithPrimal", "Forward", "ForwardWithPrimal", "ReverseSplit", "ReverseSplitWithPrimal",
    "Annotation", "Const", "Active", "Duplicated", "DuplicatedNoNeed",
    "BatchDuplicated", "BatchDuplicatedNoNeed",
    "Activity", "ArgSpec", "DerivativeSpec", "HvpSpec", "resolve_activities", "resolve_hvp",
    "activity_class_of", "MAX_WIDTH",
]

# Enzyme itself has no hard limit; beyond this the generated prototypes get
# unwieldy and compile time grows with no speed gain on a CPU.
MAX_WIDTH = 64


@dataclass(frozen=True, eq=False)
class Mode:
    """A differentiation mode: reverse or forward, with or without the primal.

    The modes are singletons compared by identity, which keeps the
    per-call derivative lookup (keyed by mode) cheap. Each is an instance of
    :class:`ReverseMode` or :class:`ForwardMode`, so that a type checker
    knows which result :func:`enzyme.autodiff` gives for it.
    """

    name: str
    reverse: bool
    with_primal: bool
    split: bool = False  # forward and reverse passes as separate calls, a tape between

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name  # the singleton of that name: modes are compared by identity


# (repr=False: a generated __repr__ would replace Mode's, which prints the name)
@dataclass(frozen=True, eq=False, repr=False)
class ReverseMode(Mode):
    """A reverse mode: :func:`enzyme.autodiff` returns a ``ReverseResult``."""


@dataclass(frozen=True, eq=False, repr=False)
class ReverseSplitMode(ReverseMode):
    """A split reverse mode, the one :func:`enzyme.autodiff_thunk` takes."""


@dataclass(frozen=True, eq=False, repr=False)
class ForwardMode(Mode):
    """A forward mode: :func:`enzyme.autodiff` returns a ``ForwardResult``."""


Reverse = ReverseMode("Reverse", reverse=True, with_primal=False)
ReverseWithPrimal = ReverseMode("ReverseWithPrimal", reverse=True, with_primal=True)
Forward = ForwardMode("Forward", reverse=False, with_primal=False)
ForwardWithPrimal = ForwardMode("ForwardWithPrimal", reverse=False, with_primal=True)
ReverseSplit = ReverseSplitMode("ReverseSplit", reverse=True, with_primal=False, split=True)
ReverseSplitWithPrimal = ReverseSplitMode("ReverseSplitWithPrimal", reverse=True, with_primal=True, split=True)


class Activity(enum.Enum):
    """What an annotation asks of one parameter (or of the return value);
    the value is the annotation's name, as patterns and messages print it."""

    CONST = "Const"
    ACTIVE = "Active"
    DUPLICATED = "Duplicated"
    DUPLICATED_NONEED = "DuplicatedNoNeed"

    @property
    def has_shadow(self) -> bool:
        return self in (Activity.DUPLICATED, Activity.DUPLICATED_NONEED)

    @property
    def differentiated(self) -> bool:
        return self is not Activity.CONST


# The types of an annotation's primal and shadow, for type checkers: a user's
# Duplicated(x, dx).dval is dx's type, not Any.
_V = TypeVar("_V", covariant=True)
_D = TypeVar("_D", covariant=True)


class Annotation(Generic[_V]):
    """Base of the activity annotations. ``val`` is the primal value."""

    kind: Activity
    __slots__ = ("val",)

    def __init__(self, val: _V) -> None:
        self.val = val

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.val!r})"


class Const(Annotation[_V]):
    """An argument that is not differentiated (no shadow).

    Examples
    --------
    >>> Const(3)
    Const(3)
    """

    kind = Activity.CONST
    __slots__ = ()


class Active(Annotation[_V]):
    """A floating-point scalar whose adjoint is returned (reverse mode only).

    Examples
    --------
    >>> Active(3.0)
    Active(3.0)
    """

    kind = Activity.ACTIVE
    __slots__ = ()


class Duplicated(Annotation[_V], Generic[_V, _D]):
    """A primal with its shadow.

    For an array, the shadow is an array of the same dtype and shape: in
    reverse mode the adjoint is *added* to it (and an output's shadow is the
    seed, consumed and zeroed by the call); in forward mode it carries the
    tangent (the input direction, or the output tangent written by the call).
    For a floating scalar in forward mode the shadow is its tangent.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones(3)
    >>> Duplicated(w, np.zeros_like(w))      # doctest: +ELLIPSIS
    Duplicated(array([1., 1., 1.]), array([0., 0., 0.]))
    """

    kind = Activity.DUPLICATED
    __slots__ = ("dval",)

    def __init__(self, val: _V, dval: _D) -> None:
        super().__init__(val)
        self.dval = dval

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.val!r}, {self.dval!r})"


class DuplicatedNoNeed(Duplicated[_V, _D]):
    """Like :class:`Duplicated`, but the primal result is not needed: the
    kernel may leave the primal output array unwritten."""

    kind = Activity.DUPLICATED_NONEED
    __slots__ = ()


class BatchDuplicated(Annotation[_V]):
    """A primal with ``W`` shadows, differentiated in one batched Enzyme call
    (``enzyme_width``): ``W`` tangent directions in forward mode, ``W``
    accumulated adjoints (one per seed) in reverse mode.

    ``dvals`` is a sequence of ``W`` shadows (arrays shaped like the primal,
    or floats for a scalar in forward mode); a 2-D array whose rows are the
    shadows also works.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones(3)
    >>> BatchDuplicated(x, np.eye(3)).width
    3
    """

    kind = Activity.DUPLICATED
    __slots__ = ("dval",)

    def __init__(self, val: _V, dvals: Collection[object]) -> None:
        super().__init__(val)
        if isinstance(dvals, (str, bytes)) or not hasattr(dvals, "__len__"):
            raise ActivityError(f"{type(self).__name__} takes a sequence of shadows, one per "
                                f"batch lane; got {type(dvals).__name__}.")
        if not 1 <= len(dvals) <= MAX_WIDTH:
            raise ActivityError(f"{type(self).__name__} needs between 1 and {MAX_WIDTH} shadows, "
                                f"got {len(dvals)}.")
        self.dval: tuple[object, ...] = tuple(dvals)

    @property
    def width(self) -> int:
        return len(self.dval)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.val!r}, <{self.width} shadows>)"


class BatchDuplicatedNoNeed(BatchDuplicated[_V]):
    """Like :class:`BatchDuplicated`, but the primal output may be left unwritten."""

    kind = Activity.DUPLICATED_NONEED
    __slots__ = ()


_ANNOTATIONS = {cls.__name__: cls for cls in (Const, Active, Duplicated, DuplicatedNoNeed,
                                              BatchDuplicated, BatchDuplicatedNoNeed)}


def activity_class_of(obj: Any) -> type[Annotation]:
    """The annotation class of an instance, or the class itself (also when
    parameterised for a type checker: ``Active[float]`` is ``Active``)."""
    origin = typing.get_origin(obj)
    if origin is not None:
        obj = origin
    if isinstance(obj, type) and issubclass(obj, Annotation) and obj is not Annotation:
        return obj
    if isinstance(obj, Annotation) and type(obj) is not Annotation:
        return type(obj)
    raise ActivityError(f"{obj!r} is not an activity annotation; use one of "
                        f"{', '.join(_ANNOTATIONS)}.")


@dataclass(frozen=True)
class ArgSpec:
    """One parameter with its resolved activity."""

    index: int
    name: str
    ctype: CType
    activity: Activity

    @property
    def has_shadow(self) -> bool:
        return self.activity.has_shadow


@dataclass(frozen=True)
class DerivativeSpec:
    """A fully resolved derivative request: what the code generator needs."""

    signature: Signature
    reverse: bool
    with_primal: bool
    args: tuple[ArgSpec, ...]
    ret: Activity | None  # None for a void kernel; ACTIVE in reverse mode only
    width: int = 1  # shadows per Duplicated argument (enzyme_width)
    batched: bool = False  # shadows given as groups (BatchDuplicated), even when width is 1
    split: bool = False  # augmented forward and reverse passes as separate calls
    # For each function-pointer parameter, the kernels of the module that may
    # be passed for it (same function type): the generated code calls the
    # chosen one directly, so Enzyme differentiates through it.
    callbacks: tuple[tuple[int, tuple[str, ...]], ...] = ()
    callback_module: str = ""  # the module whose kernels those are (its cache key)

    @property
    def kernel(self) -> str:
        return self.signature.name

    @property
    def pattern(self) -> str:
        mode = (("ReverseSplit" if self.split else "Reverse") if self.reverse else "Forward") \
            + ("WithPrimal" if self.with_primal else "")
        batch = "Batch" if self.batched else ""
        if self.batched:
            mode += f"[width={self.width}]"
        inner = ", ".join(batch + a.activity.value if a.activity.has_shadow else a.activity.value
                          for a in self.args)
        return f"{mode}({inner}; ret={self.ret.value if self.ret else 'void'})"

    @property
    def returns_derivative(self) -> bool:
        """Whether the return value is differentiated (seeded in reverse
        mode, given a tangent in forward mode)."""
        return self.ret is not None and self.ret.differentiated


def _fix_for(arg_name: str, ctype: CType) -> str:
    if ctype.is_pointer:
        return f"Duplicated(array, shadow_array) or Const(array) for '{arg_name}'"
    if ctype.is_float:
        return f"Active(x) (reverse), Duplicated(x, dx) (forward) or Const(x) for '{arg_name}'"
    return f"Const(n) for '{arg_name}'"


def _resolve_arg(index: int, param, kind: Activity, reverse: bool) -> ArgSpec:
    ctype = param.ctype
    where = f"argument {index} ('{param.name}', C type `{ctype.spelling}`)"
    if kind is Activity.CONST:
        return ArgSpec(index, param.name, ctype, kind)
    if ctype.is_function:
        raise ActivityError(f"{where} is a function pointer: pass another kernel of the module as "
                            f"Const(mod.<kernel>); derivatives flow through the call it makes.")
    if not ctype.carries_derivative:
        raise ActivityError(
            f"{where} is {'a pointer to ' if ctype.is_pointer else ''}{ctype.base}, which has "
            f"no derivative, so it cannot be {kind.value}. Use {_fix_for(param.name, ctype)}."
        )
    if kind is Activity.ACTIVE:
        if ctype.is_pointer:
            raise ActivityError(f"{where} is a pointer: Active is only for floating scalars. "
                                f"Use {_fix_for(param.name, ctype)}.")
        if not reverse:
            raise ActivityError(f"{where}: Active is a reverse-mode annotation. In forward "
                                f"mode give a tangent with Duplicated({param.name}, d{param.name}).")
    elif not ctype.is_pointer and reverse:
        raise ActivityError(
            f"{where} is a scalar passed by value: in reverse mode it has nowhere to "
            f"accumulate a shadow. Use Active({param.name}) to get its adjoint in r.derivs."
        )
    return ArgSpec(index, param.name, ctype, kind)


def _resolve_ret(signature: Signature, mode: Mode, ret: Any) -> Activity | None:
    rtype = signature.ret
    if rtype.kind == "void":
        if ret not in (None, Const):
            raise ActivityError(f"'{signature.name}' returns void, so ret= must be omitted "
                                "(or Const).")
        return None
    if rtype.kind == "struct":
        if mode.split:
            raise ActivityError(f"'{signature.name}' returns a struct by value, which split mode "
                                "does not support; write the result through a pointer.")
        if mode.reverse and ret not in (None, Const):
            raise ActivityError(f"'{signature.name}' returns a struct by value: in reverse mode "
                                "its return can only be Const (seed a struct written through a "
                                "pointer instead), or use forward mode.")
        if mode.reverse or not rtype.carries_derivative:
            return Activity.CONST
    if ret is None:
        if not rtype.carries_derivative:
            return Activity.CONST
        return Activity.ACTIVE if mode.reverse else Activity.DUPLICATED
    cls = activity_class_of(ret)
    if isinstance(ret, Annotation):
        raise ActivityError("ret= takes an annotation class (ret=Const), not an instance.")
    if cls is Const:
        return Activity.CONST
    if not rtype.carries_derivative:
        raise ActivityError(f"'{signature.name}' returns {rtype.base}, which has no "
                            "derivative: use ret=Const (the default).")
    if mode.reverse:
        if cls is Active:
            return Activity.ACTIVE
        raise ActivityError(f"In reverse mode ret= is Active (seeded by seed=) or Const, "
                            f"not {cls.__name__}.")
    if cls is Duplicated:
        return Activity.DUPLICATED
    if cls is DuplicatedNoNeed:
        if mode.with_primal:
            raise ActivityError("ret=DuplicatedNoNeed asks for the tangent without the primal, "
                                "which contradicts ForwardWithPrimal: use ret=Duplicated.")
        return Activity.DUPLICATED_NONEED
    raise ActivityError(f"In forward mode ret= is Duplicated, DuplicatedNoNeed or Const, "
                        f"not {cls.__name__}.")


def resolve_activities(signature: Signature, mode: Mode, activities: Sequence[Any],
                       ret: Any = None, width: int = 1) -> DerivativeSpec:
    """Check an activity pattern against a signature.

    Parameters
    ----------
    signature : Signature
    mode : Mode
        ``Reverse``, ``ReverseWithPrimal``, ``Forward`` or ``ForwardWithPrimal``.
    activities : sequence
        One annotation (class or instance) per C parameter.
    ret : annotation class, optional
        Activity of the return value; default Active (reverse) / Duplicated
        (forward) for floating returns, Const otherwise.
    width : int
        Number of shadows of every BatchDuplicated argument (batch mode).

    Raises
    ------
    ActivityError
        Wrong count, or an annotation that does not fit its parameter.

    Examples
    --------
    >>> from enzyme.signature import CType, Param, Signature
    >>> dbl = CType("scalar", "double", "double", "float64")
    >>> sig = Signature("f", (Param("x", dbl), Param("y", dbl)), dbl, "f.c:1")
    >>> spec = resolve_activities(sig, Reverse, [Active, Active])
    >>> spec.pattern
    'Reverse(Active, Active; ret=Active)'
    """
    if not isinstance(mode, Mode):
        raise ActivityError(f"{mode!r} is not a mode; use Reverse, ReverseWithPrimal, Forward "
                            "or ForwardWithPrimal.")
    signature.check_supported()
    if len(activities) != len(signature.params):
        raise ActivityError(
            f"'{signature.name}' takes {len(signature.params)} argument(s) "
            f"({', '.join(p.name for p in signature.params) or 'none'}), but "
            f"{len(activities)} activit{'y was' if len(activities) == 1 else 'ies were'} given. "
            f"Signature: {signature}"
        )
    classes = [activity_class_of(act) for act in activities]
    batched = any(issubclass(c, BatchDuplicated) for c in classes)
    if batched and any(issubclass(c, Duplicated) for c in classes):
        raise ActivityError("Duplicated and BatchDuplicated cannot be mixed in one call: give "
                            "every differentiated argument the same number of shadows with "
                            "BatchDuplicated.")
    if not (isinstance(width, int) and 1 <= width <= MAX_WIDTH):
        raise ActivityError(f"width must be an integer from 1 to {MAX_WIDTH}, got {width!r}.")
    if width > 1 and not batched:
        raise ActivityError(f"width={width} needs BatchDuplicated arguments.")
    if mode.split and batched:
        raise ActivityError("split mode (ReverseSplit) does not take BatchDuplicated arguments in "
                            "this version; use Duplicated, or combined Reverse for batches.")
    args = tuple(
        _resolve_arg(i, param, cls.kind, mode.reverse)
        for i, (param, cls) in enumerate(zip(signature.params, classes))
    )
    return DerivativeSpec(signature, mode.reverse, mode.with_primal, args,
                          _resolve_ret(signature, mode, ret), width, batched, mode.split)


@dataclass(frozen=True)
class HvpSpec:
    """Hessian-vector products of a scalar-returning kernel with respect to one
    array argument, ``width`` directions per call."""

    signature: Signature
    wrt: int
    width: int
    callbacks: tuple[tuple[int, tuple[str, ...]], ...] = ()  # as DerivativeSpec's
    callback_module: str = ""

    @property
    def kernel(self) -> str:
        return self.signature.name

    @property
    def pattern(self) -> str:
        return f"HVP[width={self.width}](wrt={self.signature.params[self.wrt].name})"


def resolve_hvp(signature: Signature, wrt: int, width: int = 1) -> HvpSpec:
    """Check that Hessian-vector products of ``signature`` w.r.t. parameter
    ``wrt`` make sense: a floating return and a floating array parameter."""
    signature.check_supported()
    if not signature.ret.is_float:
        raise ActivityError(f"hessian/hvp need a kernel returning a floating scalar; "
                            f"'{signature.name}' returns {signature.ret.spelling}.")
    if not -len(signature.params) <= wrt < len(signature.params):
        raise ActivityError(f"wrt={wrt} is out of range for '{signature.name}' "
                            f"({len(signature.params)} parameters).")
    wrt %= len(signature.params)
    param = signature.params[wrt]
    if not (param.ctype.is_pointer and param.ctype.is_float) or param.ctype.is_struct \
            or param.ctype.rows:
        raise ActivityError(f"hessian/hvp differentiate with respect to an array of doubles or "
                            f"floats; parameter '{param.name}' is `{param.ctype.spelling}`. Wrap "
                            "scalars into an array parameter in C.")
    if not (isinstance(width, int) and 1 <= width <= MAX_WIDTH):
        raise ActivityError(f"width must be an integer from 1 to {MAX_WIDTH}, got {width!r}.")
    return HvpSpec(signature, wrt, width)
