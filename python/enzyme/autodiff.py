"""The core of differentiation: autodiff with call-site activities, and
derivative / autodiff_thunk with fixed ones (built once, called many
times)."""

from __future__ import annotations

from typing import Any, Union, overload

from .activity import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    ForwardMode,
    Mode,
    ReverseMode,
    ReverseSplitMode,
    activity_class_of,
)
from .activity import Annotation as _Annotation
from .call import (
    DerivativeFunction,
    ForwardPass,
    ForwardResult,
    ReversePass,
    ReverseResult,
    _Seed,
)
from .errors import (
    ActivityError,
)
from .module import Kernel

__all__ = ["autodiff", "derivative", "autodiff_thunk"]

# The public signatures take `object` where any value goes, not Any: mypy
# infers an argument expression against its parameter's type, and against
# Any, numpy's generic results come out with Any in them in the caller's code.

# ret=: an annotation class (ret=Const), or None for the default.
_Ret = Union[type[_Annotation[object]], None]
# An activity for derivative() and autodiff_thunk(): a class (Duplicated), or
# an instance, whose class is used.
_Activity = Union[type[_Annotation[object]], _Annotation[object]]


def _as_kernel(kernel: Any) -> Kernel:
    if not isinstance(kernel, Kernel):
        raise ActivityError(f"expected a kernel such as mod.f, got {type(kernel).__name__}; "
                            "compile the C code with enzyme.compile and pass mod.<function>.")
    return kernel


@overload
def autodiff(mode: ReverseMode, kernel: Kernel, *args: object, ret: _Ret = None,
             seed: _Seed = None) -> ReverseResult: ...
@overload
def autodiff(mode: ForwardMode, kernel: Kernel, *args: object, ret: _Ret = None,
             seed: _Seed = None) -> ForwardResult: ...
@overload
def autodiff(mode: Mode, kernel: Kernel, *args: object, ret: _Ret = None,
             seed: _Seed = None) -> ReverseResult | ForwardResult: ...
def autodiff(mode: Mode, kernel: Kernel, *args: Any, ret: Any = None,
             seed: Any = None) -> ReverseResult | ForwardResult:
    """Differentiate a kernel call with Enzyme, with call-site activities.

    Parameters
    ----------
    mode : Mode
        ``Reverse``, ``ReverseWithPrimal``, ``Forward`` or ``ForwardWithPrimal``.
    kernel : Kernel
    *args
        One per C parameter: ``Const(x)``, ``Active(x)`` (reverse, floating
        scalars), ``Duplicated(x, dx)`` or ``DuplicatedNoNeed(x, dx)``. A bare
        value means ``Const``. In reverse mode shadows *accumulate* (``+=``);
        an output array's shadow is its seed and is zeroed by the call.
    ret : annotation class, optional
        The return value's activity (default Active in reverse, Duplicated in
        forward, for floating returns).
    seed : float, optional
        The adjoint of an Active return (default 1.0); only for an Active return.

    Returns
    -------
    ReverseResult(derivs, primal) or ForwardResult(tangent, primal)

    Examples
    --------
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> autodiff(Reverse, mod.f, Active(3.0), Active(5.0)).derivs
    (6.0, 3.0)
    """
    if type(kernel) is not Kernel:
        kernel = _as_kernel(kernel)
    # One pass over the annotations: their classes (the derivative's key) and
    # the flat argument list (each primal followed by its shadow).
    kinds, flat, width = [], [], 0
    for a in args:
        cls = type(a)
        if cls is Const or cls is Active:
            flat.append(a.val)
        elif cls is Duplicated or cls is DuplicatedNoNeed:
            flat += (a.val, a.dval)
        elif isinstance(a, BatchDuplicated):
            if width and a.width != width:
                raise ActivityError("every BatchDuplicated argument needs the same number of "
                                    f"shadows; got {width} and {a.width}.")
            width = a.width
            flat += (a.val, a.dval)
        elif isinstance(a, _Annotation):  # a user subclass: treat as its base annotation
            flat += (a.val, a.dval) if hasattr(a, "dval") else (a.val,)
        else:
            cls = Const  # a bare value
            flat.append(a)
        kinds.append(cls)
    if ret is not None:
        activity_class_of(ret)
    return kernel.derivative_function(mode, tuple(kinds), ret, width or 1)(*flat, seed=seed)


@overload
def derivative(kernel: Kernel, mode: ReverseMode, *activities: _Activity, ret: _Ret = None,
               width: int = 1) -> DerivativeFunction[ReverseResult]: ...
@overload
def derivative(kernel: Kernel, mode: ForwardMode, *activities: _Activity, ret: _Ret = None,
               width: int = 1) -> DerivativeFunction[ForwardResult]: ...
@overload
def derivative(kernel: Kernel, mode: Mode, *activities: _Activity, ret: _Ret = None,
               width: int = 1) -> DerivativeFunction[ReverseResult | ForwardResult]: ...
def derivative(kernel: Kernel, mode: Mode, *activities: Any, ret: Any = None,
               width: int = 1) -> DerivativeFunction[Any]:
    """Build one derivative with fixed activities (like Rust's ``#[autodiff]``).

    The result is called with each primal followed by its shadow (for
    ``Duplicated``/``DuplicatedNoNeed``; a sequence of ``width`` shadows for
    ``BatchDuplicated``), plus ``seed=`` for an Active return, and returns
    what :func:`autodiff` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import *
    >>> mod = compile("double dot(const double *x, const double *y, int n) {"
    ...               " double s = 0; for (int i = 0; i < n; i++) s += x[i] * y[i]; return s; }")
    >>> df = derivative(mod.dot, Reverse, Duplicated, Const, Const)
    >>> x, dx, y = np.ones(3), np.zeros(3), np.arange(3.0)
    >>> _ = df(x, dx, y, 3)
    >>> dx
    array([0., 1., 2.])
    """
    kernel = _as_kernel(kernel)
    kinds = tuple(activity_class_of(a) for a in activities)
    if ret is not None:
        activity_class_of(ret)
    return kernel._bind(kernel.derivative_function(mode, kinds, ret, width),
                        (_derivative_of, (kernel, mode, kinds, ret, width)))


def _derivative_of(kernel: Kernel, mode: Mode, kinds: tuple, ret: Any, width: int) -> DerivativeFunction[Any]:
    """derivative(), as pickle rebuilds what it returned."""
    return derivative(kernel, mode, *kinds, ret=ret, width=width)


def autodiff_thunk(mode: ReverseSplitMode, kernel: Kernel, *activities: _Activity,
                   ret: _Ret = None) -> tuple[ForwardPass, ReversePass]:
    """Split reverse mode: the augmented forward pass and the reverse pass as
    two functions, with the tape held by Python in between (Enzyme.jl's
    ``autodiff_thunk``).

    ``forward(*args)`` takes each primal followed by its shadow and returns a
    :class:`~enzyme.call.Tape` (``tape.primal`` holds the return value with
    ``ReverseSplitWithPrimal``); ``reverse(tape, seed=1.0)`` runs the reverse
    pass once, with the seed chosen then, accumulating into the shadows given
    to ``forward``, and returns a ``ReverseResult``. The arrays given to
    ``forward`` must stay unchanged until ``reverse`` has run.

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import *
    >>> mod = compile("double dot(const double *x, const double *y, int n) {"
    ...               " double s = 0; for (int i = 0; i < n; i++) s += x[i] * y[i]; return s; }")
    >>> from enzyme import ReverseSplitWithPrimal
    >>> fwd, rev = autodiff_thunk(ReverseSplitWithPrimal, mod.dot, Duplicated, Const, Const)
    >>> x, dx, y = np.ones(3), np.zeros(3), np.arange(3.0)
    >>> tape = fwd(x, dx, y, 3)
    >>> tape.primal
    3.0
    >>> _ = rev(tape, seed=2.0)
    >>> dx
    array([0., 2., 4.])
    """
    kernel = _as_kernel(kernel)
    if not isinstance(mode, Mode) or not mode.split:
        raise ActivityError(f"autodiff_thunk takes ReverseSplit or ReverseSplitWithPrimal, not "
                            f"{mode!r}.")
    kinds = tuple(activity_class_of(a) for a in activities)
    if ret is not None:
        activity_class_of(ret)
    functions = kernel._bind(kernel.split_functions(mode, kinds, ret),
                             (_split_functions_of, (kernel, mode, kinds, ret)))
    return functions.forward, functions.reverse


def _split_functions_of(kernel: Kernel, mode: ReverseSplitMode, kinds: tuple, ret: Any) -> Any:
    """The passes' owner autodiff_thunk() returns the methods of, as pickle
    rebuilds it (a pickled pass is a method of it)."""
    forward: Any = autodiff_thunk(mode, kernel, *kinds, ret=ret)[0]  # (a bound method, typed as a ForwardPass)
    return forward.__self__
