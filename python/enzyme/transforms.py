"""The helpers built on autodiff (grad, value_and_grad, jvp, vjp, jacobian,
hessian, hvp): JAX-like transformations that choose activities, shadows
and seeds for the user. Enzyme.jl keeps this sugar apart from its core
in the same way."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, Union, overload

import numpy as np

from .activity import (
    MAX_WIDTH,
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Mode,
    Reverse,
    ReverseMode,
    ReverseWithPrimal,
)
from .autodiff import _as_kernel, autodiff, derivative
from .call import (
    Derivative,
    FloatArray,
    adopt_arrays,
    aligned_like,
    aligned_zeros,
)
from .errors import (
    ActivityError,
)
from .firstuse import _inactive
from .module import Kernel, _param_index
from .params import Role
from .signature import (
    Signature,
    known_shape,
)

__all__ = ["grad", "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "hvp", "aligned_zeros", "aligned_like",
           "Transformed", "HessianBlock"]

# What a call of the Transformed returns. Invariant, so that vmap's overloads
# (keyed on it) accept only grad and value_and_grad, not e.g. a hessian.
_R = TypeVar("_R")
# One block of a Hessian: a float between two scalars, else an array.
HessianBlock = Union[float, FloatArray]


class Transformed(Generic[_R]):
    """A function of a kernel's arguments made by :func:`grad`,
    :func:`value_and_grad`, :func:`jvp`, :func:`vjp`, :func:`jacobian`,
    :func:`hvp` or :func:`hessian`.

    Call it with the kernel's arguments, positionally or by their C
    parameter names; the direction of ``jvp``/``hvp`` (``v``) and the
    weights of ``vjp`` (``u``) come last, or by name. It pickles as the
    transform, its options and the kernel (a kernel pickles as its module's
    sources and options), so it can be sent to other processes.

    Examples
    --------
    >>> import pickle
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> df = grad(mod.f)
    >>> df
    <enzyme.grad of double f(double x, double y) argnums=0>
    >>> df(y=5.0, x=3.0), pickle.loads(pickle.dumps(df))(3.0, 5.0)
    (6.0, 6.0)
    """

    def __init__(self, transform: str, kernel: Kernel, options: dict[str, object],
                 body: Callable[..., _R], direction: str | None = None) -> None:
        self.transform = transform
        self.kernel = kernel
        self.options = options
        self._body = body
        names = {p.name for p in kernel.signature.params}
        while direction is not None and direction in names:
            direction += "_"  # (a C parameter named v: the direction is v_)
        self._direction = direction
        self.__name__ = self.__qualname__ = f"{transform}_{kernel.name}"
        described = ", ".join(f"{k}={v!r}" for k, v in options.items())
        self.__doc__ = (f"{_SUMMARY[transform]} of the C function `{kernel.signature}`"
                        f"{' (' + described + ')' if described else ''}.\n\nArguments: "
                        f"{', '.join(p.name for p in kernel.signature.params)}"
                        f"{', ' + direction if direction else ''}.")

    def __call__(self, *args: object, **kwargs: object) -> _R:
        if kwargs:
            args = self._by_name(args, kwargs)
        if self._direction is not None and len(args) != len(self.kernel.signature.params) + 1:
            raise ActivityError(
                f"{self.__name__} takes the {len(self.kernel.signature.params)} argument(s) of "
                f"{self.kernel.name} and then the direction {self._direction}; {len(args)} given"
                f"{' (is the direction missing?)' if len(args) == len(self.kernel.signature.params) else ''}.")
        return self._body(*adopt_arrays(args))

    def _by_name(self, args: tuple, kwargs: dict) -> tuple:
        direction = self._direction
        if direction is None:
            return self.kernel._by_name(args, kwargs)
        if direction in kwargs:
            kwargs = dict(kwargs)
            last = kwargs.pop(direction)
        elif args:
            args, last = args[:-1], args[-1]
        else:
            raise ActivityError(f"{self.__name__} needs its direction {direction}: the last "
                                f"positional argument, or {direction}=.")
        if kwargs.get("copy") is True and last is not None and not np.isscalar(last):
            last = np.ascontiguousarray(last)  # (the direction is an input too)
        return (*self.kernel._by_name(args, kwargs), last)

    @property
    def __signature__(self) -> inspect.Signature:
        params = list(inspect.signature(self.kernel).parameters.values())
        if self._direction is not None:
            params.append(inspect.Parameter(self._direction, params[0].kind if params
                                            else inspect.Parameter.POSITIONAL_OR_KEYWORD))
        return inspect.Signature(params)

    def __repr__(self) -> str:
        options = " ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<enzyme.{self.transform} of {self.kernel.signature}{' ' + options if options else ''}>"

    def __reduce__(self) -> tuple:
        return _rebuild, (self.transform, self.kernel, self.options)


def _rebuild(transform: str, kernel: Kernel, options: dict[str, Any]) -> Transformed[Any]:
    return _TRANSFORMS[transform](kernel, **options)


_SUMMARY = {
    "grad": "The gradient", "value_and_grad": "The value and gradient",
    "jvp": "Jacobian-vector products (forward mode)", "vjp": "Vector-Jacobian products (reverse mode)",
    "jacobian": "The Jacobian", "hvp": "Hessian-vector products", "hessian": "The Hessian"}


def _normalize_argnums(argnums: int | Sequence[int], nargs: int) -> tuple[tuple[int, ...], bool]:
    def index(value: Any) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ActivityError(f"argnums takes argument positions (an int or a sequence of "
                                f"ints), got {value!r}.")
        return int(value)

    single = isinstance(argnums, (int, np.integer)) and not isinstance(argnums, (bool, np.bool_))
    if single:
        nums: tuple[int, ...] = (index(argnums),)
    elif isinstance(argnums, (str, bytes)) or not hasattr(argnums, "__iter__"):
        nums = (index(argnums),)  # raises: not a position
    else:
        nums = tuple(index(a) for a in argnums)
    if not nums:
        raise ActivityError("argnums is empty")
    for num in nums:
        if not -nargs <= num < nargs:
            raise ActivityError(f"argnums={num} is out of range for a kernel of {nargs} arguments")
    return tuple(n % nargs for n in nums), single


def _grad_call(kernel: Kernel, argnums: int | Sequence[int], args: tuple, mode: ReverseMode) -> tuple[Any, Any]:
    sig = kernel.signature
    if not sig.ret.is_float:
        raise ActivityError(f"grad needs a kernel returning a floating scalar; '{sig.name}' "
                            f"returns {sig.ret.spelling}. {_no_scalar_return_fix(sig)}")
    nums, single = _normalize_argnums(argnums, len(sig.params))
    if len(args) != len(sig.params):
        raise ActivityError(f"'{sig.name}' takes {len(sig.params)} argument(s), {len(args)} given. "
                            f"Signature: {sig}")
    annotations = grad_annotations(kernel, nums, args)
    with kernel.module._wrt_arguments_only():
        result = autodiff(mode, kernel, *annotations)
    grads = tuple(result.derivs[i] if isinstance(annotations[i], Active) else annotations[i].dval
                  for i in nums)
    return (grads[0] if single else grads), result.primal


def grad_annotations(kernel: Kernel, nums: Sequence[int], args: Sequence[Any]) -> list[Any]:
    """The activities :func:`grad` differentiates a call with: the
    arguments ``nums`` Duplicated (arrays, fresh zero shadows) or Active,
    the others as :func:`enzyme.firstuse._inactive` says."""
    sig = kernel.signature
    annotations = _inactive(kernel, args)
    for i in nums:
        value = args[i]
        if sig.params[i].ctype.is_pointer:
            if not isinstance(value, np.ndarray):
                raise ActivityError(f"argument {i} ('{sig.params[i].name}') is a pointer: pass "
                                    "a numpy array to differentiate it.")
            annotations[i] = Duplicated(value, aligned_like(value))
        else:
            annotations[i] = Active(value)
    return annotations


@overload
def grad(kernel: Kernel, argnums: int = 0) -> Transformed[Derivative]: ...
@overload
def grad(kernel: Kernel, argnums: Sequence[int]) -> Transformed[tuple[Derivative, ...]]: ...
def grad(kernel: Kernel, argnums: int | Sequence[int] = 0) -> Transformed[Any]:
    """The gradient of a scalar-returning kernel with respect to ``argnums``.

    Arrays are differentiated with a fresh zero shadow (the result has the
    array's shape); floating scalars give a float. Other arguments are Const,
    except arrays the kernel may write (non-const floating pointers), which
    get a zero shadow so that derivatives flowing through them (a scratch
    buffer written and read back) are kept.

    Examples
    --------
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> grad(mod.f, argnums=(0, 1))(3.0, 5.0)
    (6.0, 3.0)
    """
    kernel = _as_kernel(kernel)
    _normalize_argnums(argnums, len(kernel.signature.params))  # (a bad argnums fails here)

    def gradient(*args: Any) -> Any:
        return _grad_call(kernel, argnums, args, Reverse)[0]
    return Transformed("grad", kernel, {"argnums": argnums}, gradient)


@overload
def value_and_grad(kernel: Kernel, argnums: int = 0) -> Transformed[tuple[float, Derivative]]: ...
@overload
def value_and_grad(kernel: Kernel,
                   argnums: Sequence[int]) -> Transformed[tuple[float, tuple[Derivative, ...]]]: ...
def value_and_grad(kernel: Kernel, argnums: int | Sequence[int] = 0) -> Transformed[Any]:
    """Like :func:`grad`, returning ``(value, gradient)`` from one reverse pass.

    Examples
    --------
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> value_and_grad(mod.f)(3.0, 5.0)
    (24.0, 6.0)
    """
    kernel = _as_kernel(kernel)
    _normalize_argnums(argnums, len(kernel.signature.params))

    def value_and_gradient(*args: Any) -> tuple[Any, Any]:
        grads, value = _grad_call(kernel, argnums, args, ReverseWithPrimal)
        return value, grads
    return Transformed("value_and_grad", kernel, {"argnums": argnums}, value_and_gradient)


def _no_scalar_return_fix(sig: Signature) -> str:
    if sig.ret.kind == "struct":
        return ("A struct return has no single gradient: its forward-mode tangent comes from "
                "autodiff(Forward, ...) (one field per member); for a Jacobian, write the "
                "results into an array parameter and use jacobian(out=...).")
    return "Use autodiff with a seeded output shadow, or jacobian(out=...) for an output array."


def _returns_float(kernel: Kernel, helper: str) -> None:
    if not kernel.signature.ret.is_float:
        raise ActivityError(f"{helper} without out= needs a kernel returning a floating scalar; "
                            f"'{kernel.name}' returns {kernel.signature.ret.spelling}. "
                            f"{_no_scalar_return_fix(kernel.signature)}")


def _output_array(kernel: Kernel, args: tuple, out: int) -> np.ndarray:
    param = kernel.signature.params[out]
    if not (param.ctype.is_pointer and param.ctype.is_float) or param.ctype.const:
        raise ActivityError(f"out= must name a non-const floating array parameter that the kernel "
                            f"writes; '{param.name}' is `{param.ctype.spelling}`.")
    if not isinstance(args[out], np.ndarray):
        raise ActivityError(f"out: argument '{param.name}' must be a numpy array.")
    return args[out]


def _allocate_output(kernel: Kernel, args: Sequence[Any], out: int | None) -> list[Any]:
    """``args`` with ``None`` for the output array replaced by a zero array
    of the shape its declaration or length contract gives."""
    args = list(args)
    if out is None or out >= len(args) or args[out] is not None:
        return args
    sig = kernel.signature
    param = sig.params[out]
    shape = known_shape(sig, out, {p.name: a for p, a in zip(sig.params, args)})
    if shape is None:
        raise ActivityError(f"out: argument '{param.name}' is None and its size is not known: pass an "
                            f"array, or give it a length contract (ENZYME_LEN, or compile(sizes="
                            f"{{'{sig.name}': {{'{param.name}': 'n'}}}})).")
    args[out] = np.zeros(shape, dtype=param.ctype.dtype)
    return args


def _wrt_array(kernel: Kernel, args: tuple, wrt: int) -> np.ndarray:
    param = kernel.signature.params[wrt]
    if not (param.ctype.is_pointer and param.ctype.is_float) or param.ctype.is_struct:
        raise ActivityError(f"wrt must name a floating array parameter here; '{param.name}' is "
                            f"`{param.ctype.spelling}`.")
    if not isinstance(args[wrt], np.ndarray):
        raise ActivityError(f"wrt: argument '{param.name}' must be a numpy array.")
    return args[wrt]


def _check_count(kernel: Kernel, args: tuple) -> None:
    if len(args) != len(kernel.signature.params):
        raise ActivityError(f"'{kernel.name}' takes {len(kernel.signature.params)} argument(s), "
                            f"{len(args)} given. Signature: {kernel.signature}")


def _wrt_and_out(kernel: Any, wrt: int | str, out: int | str | None,
                 helper: str) -> tuple[Kernel, int, int | None]:
    """The kernel and the parameter indices of ``wrt`` and ``out`` (None: the
    kernel's scalar return, which must then be floating)."""
    kernel = _as_kernel(kernel)
    x_index = _param_index(kernel, wrt, "wrt")
    out_index = None if out is None else _param_index(kernel, out, "out")
    if out_index is None:
        _returns_float(kernel, helper)
    return kernel, x_index, out_index


def _ret_const(kernel: Kernel) -> Any:
    return Const if kernel.signature.ret.kind != "void" else None


@overload
def jvp(kernel: Kernel, wrt: int | str = 0, out: None = None) -> Transformed[tuple[float, float]]: ...
@overload
def jvp(kernel: Kernel, wrt: int | str, out: int | str) -> Transformed[tuple[FloatArray, FloatArray]]: ...
@overload
def jvp(kernel: Kernel, wrt: int | str = 0, *, out: int | str) -> Transformed[tuple[FloatArray, FloatArray]]: ...
def jvp(kernel: Kernel, wrt: int | str = 0, out: int | str | None = None) -> Transformed[Any]:
    """Jacobian-vector product (forward mode): ``f(*args, v) -> (value, tangent)``.

    ``value`` and ``tangent`` are the kernel's return value and its directional
    derivative along ``v`` (a float for a scalar ``wrt``, an array like it
    otherwise); with ``out=``, the output array the kernel writes and its tangent.

    Examples
    --------
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> jvp(mod.f, wrt=0)(3.0, 5.0, 1.0)
    (24.0, 6.0)
    """
    kernel, x_index, out_index = _wrt_and_out(kernel, wrt, out, "jvp")

    def jvp_call(*args_and_v: Any) -> tuple[Any, Any]:
        *args, v = args_and_v
        _check_count(kernel, tuple(args))
        args = _allocate_output(kernel, args, out_index)
        annotations = _inactive(kernel, args)
        annotations[x_index] = Duplicated(args[x_index], v)
        if out_index is None:
            with kernel.module._wrt_arguments_only():
                result = autodiff(ForwardWithPrimal, kernel, *annotations)
            return result.primal, result.tangent
        y = _output_array(kernel, tuple(args), out_index)
        tangent = np.zeros_like(y)
        annotations[out_index] = Duplicated(y, tangent)
        with kernel.module._wrt_arguments_only():
            autodiff(Forward, kernel, *annotations, ret=_ret_const(kernel))
        return y.copy(), tangent
    return Transformed("jvp", kernel, {"wrt": wrt, "out": out}, jvp_call, "v")


@overload
def vjp(kernel: Kernel, wrt: int | str = 0, out: None = None) -> Transformed[tuple[float, float | FloatArray]]: ...
@overload
def vjp(kernel: Kernel, wrt: int | str,
        out: int | str) -> Transformed[tuple[FloatArray, float | FloatArray]]: ...
@overload
def vjp(kernel: Kernel, wrt: int | str = 0, *,
        out: int | str) -> Transformed[tuple[FloatArray, float | FloatArray]]: ...
def vjp(kernel: Kernel, wrt: int | str = 0, out: int | str | None = None) -> Transformed[Any]:
    """Vector-Jacobian product (reverse mode): ``f(*args, u) -> (value, cotangent)``.

    ``u`` weighs the kernel's return value (a float), or with ``out=`` the
    output array the kernel writes (an array like it; it is copied, since
    Enzyme consumes the seed). The cotangent has the shape of argument ``wrt``.

    Examples
    --------
    >>> from enzyme import *
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> vjp(mod.f, wrt=1)(3.0, 5.0, 2.0)
    (24.0, 6.0)
    """
    kernel, x_index, out_index = _wrt_and_out(kernel, wrt, out, "vjp")

    def vjp_call(*args_and_u: Any) -> tuple[Any, Any]:
        *args, u = args_and_u
        _check_count(kernel, tuple(args))
        args = _allocate_output(kernel, args, out_index)
        annotations = _inactive(kernel, args)
        if kernel.signature.params[x_index].ctype.is_pointer:
            x = _wrt_array(kernel, tuple(args), x_index)
            annotations[x_index] = Duplicated(x, np.zeros_like(x))
        else:
            annotations[x_index] = Active(args[x_index])
        if out_index is None:
            with kernel.module._wrt_arguments_only():
                result = autodiff(ReverseWithPrimal, kernel, *annotations, seed=u)
            value: object = result.primal
        else:
            y = _output_array(kernel, tuple(args), out_index)
            seed = np.array(u, dtype=y.dtype, order="C", copy=True)
            if seed.shape != y.shape:
                raise ActivityError(f"u has shape {seed.shape}, but the output has shape {y.shape}.")
            annotations[out_index] = Duplicated(y, seed)
            with kernel.module._wrt_arguments_only():
                result = autodiff(Reverse, kernel, *annotations, ret=_ret_const(kernel))
            value = y.copy()
        adjoint = annotations[x_index]
        return value, (result.derivs[x_index] if isinstance(adjoint, Active) else adjoint.dval)
    return Transformed("vjp", kernel, {"wrt": wrt, "out": out}, vjp_call, "u")


def _unit_lanes(template: np.ndarray, start: int, width: int) -> np.ndarray:
    """``width`` arrays shaped like ``template`` holding unit vectors
    ``e_start, e_start+1, ...`` (zeros past the end: padding lanes)."""
    lanes = np.zeros((width, template.size), dtype=template.dtype)
    for lane in range(width):
        if start + lane < template.size:
            lanes[lane, start + lane] = 1
    return lanes.reshape((width, *template.shape))


def _check_chunk(chunk: Any) -> None:
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise ActivityError(f"chunk must be a positive integer, got {chunk!r}.")


def _chunk_width(chunk: int, count: int) -> int:
    """Directions per batched call: the chunk asked for, at most the number
    of directions there are and at most MAX_WIDTH (Enzyme's batch width
    here; a larger chunk is the same as MAX_WIDTH)."""
    return max(1, min(int(chunk), count, MAX_WIDTH))


# A str is also a Sequence, so mypy calls the first two overloads unsafe
# (overlapping the Sequence ones with other results); a call picks the first
# overload that matches, and a name is one parameter, as here.
@overload
def jacobian(kernel: Kernel, wrt: int | str = 0, out: None = None,  # type: ignore[overload-overlap]
             mode: Mode | None = None, chunk: int = 8) -> Transformed[Derivative]: ...
@overload
def jacobian(kernel: Kernel, wrt: int | str, out: int | str,  # type: ignore[overload-overlap]
             mode: Mode | None = None, chunk: int = 8) -> Transformed[FloatArray]: ...
@overload
def jacobian(kernel: Kernel, wrt: int | str = 0, *, out: int | str, mode: Mode | None = None,
             chunk: int = 8) -> Transformed[FloatArray]: ...
@overload
def jacobian(kernel: Kernel, wrt: Sequence[int | str], out: None = None, mode: Mode | None = None,
             chunk: int = 8) -> Transformed[tuple[Derivative, ...]]: ...
@overload
def jacobian(kernel: Kernel, wrt: Sequence[int | str], out: int | str, mode: Mode | None = None,
             chunk: int = 8) -> Transformed[tuple[FloatArray, ...]]: ...
def jacobian(kernel: Kernel, wrt: int | str | Sequence[int | str] = 0, out: int | str | None = None,
             mode: Mode | None = None, chunk: int = 8) -> Transformed[Any]:
    """The Jacobian of an output array (``out=``) with respect to ``wrt``.

    Computed ``chunk`` columns at a time with batched forward mode, or
    ``chunk`` rows at a time with batched reverse mode (at most 64 per call,
    Enzyme's batch width here) when there are fewer
    outputs than inputs; ``mode=Forward``/``Reverse`` forces the choice.
    Without ``out=`` the kernel's scalar return is differentiated (the
    gradient). The result has shape ``out.shape + x.shape``: for a floating
    scalar ``wrt``, ``out.shape``. Pass ``None`` for the output array when
    its size is known (a declared shape or a length contract): it is
    allocated (so too for :func:`jvp` and :func:`vjp`). With several ``wrt`` (a sequence), a
    tuple of Jacobians, one per entry, as ``jax.jacfwd(argnums=(...))``.

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import *
    >>> mod = compile("void sq(const double *x, double *y, int n) {"
    ...               " for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }")
    >>> jacobian(mod.sq, wrt=0, out=1)(np.arange(3.0), np.zeros(3), 3)
    array([[0., 0., 0.],
           [0., 2., 0.],
           [0., 0., 4.]])
    >>> mod = compile("void scale(const double *x, double a, double *y, int n) {"
    ...               " for (int i = 0; i < n; i++) y[i] = a * x[i]; }")
    >>> dx, da = jacobian(mod.scale, wrt=("x", "a"), out="y")(np.arange(2.0), 3.0, np.zeros(2), 2)
    >>> da
    array([0., 1.])
    """
    kernel = _as_kernel(kernel)
    several = not isinstance(wrt, (str, int, np.integer))
    if several and (isinstance(wrt, bytes) or not hasattr(wrt, "__iter__")):
        raise ActivityError(f"wrt takes a parameter (index or name) or a sequence of them, got {wrt!r}.")
    indices = tuple(_param_index(kernel, w, "wrt") for w in wrt) if several \
        else (_param_index(kernel, wrt, "wrt"),)
    if not indices:
        raise ActivityError("wrt is empty: name at least one parameter.")
    options: dict[str, object] = {"wrt": wrt, "out": out, "mode": mode, "chunk": chunk}
    if out is None:
        _returns_float(kernel, "jacobian")
        body = grad(kernel, argnums=indices if several else indices[0])._body
        return Transformed("jacobian", kernel, options, body)
    out_index = _param_index(kernel, out, "out")
    if mode not in (None, Forward, Reverse):
        raise ActivityError("jacobian's mode= is Forward, Reverse or None (automatic).")
    _check_chunk(chunk)
    for i in indices:
        ctype = kernel.signature.params[i].ctype
        if not ctype.is_float or ctype.is_struct:
            raise ActivityError(f"wrt must name floating parameters (arrays or scalars); "
                                f"'{kernel.signature.params[i].name}' is `{ctype.spelling}`.")

    def jacobian_call(*args: Any) -> Any:
        _check_count(kernel, args)
        args = tuple(_allocate_output(kernel, args, out_index))
        y = _output_array(kernel, args, out_index)
        restore = _writable_arrays(kernel, args)
        blocks = []
        for number, x_index in enumerate(indices):
            if number:
                restore()  # every block is taken at the same point
            if kernel.signature.params[x_index].ctype.is_pointer:
                blocks.append(_array_jacobian(kernel, args, x_index, out_index, y, mode, chunk))
            else:
                blocks.append(_scalar_jacobian(kernel, args, x_index, out_index, y, mode))
        return tuple(blocks) if several else blocks[0]
    return Transformed("jacobian", kernel, options, jacobian_call)


def _array_jacobian(kernel: Kernel, args: tuple, x_index: int, out_index: int, y: np.ndarray,
                    mode: Mode | None, chunk: int) -> np.ndarray:
    x = _wrt_array(kernel, args, x_index)
    n, m = x.size, y.size
    use_forward = mode is Forward or (mode is None and n <= m)
    jac = np.zeros((m, n), dtype=y.dtype)
    annotations = _inactive(kernel, args)
    with kernel.module._wrt_arguments_only():
        _jacobian_chunks(kernel, annotations, x_index, out_index, x, y, jac, use_forward, chunk)
    return jac.reshape((*y.shape, *x.shape))


def _scalar_jacobian(kernel: Kernel, args: tuple, x_index: int, out_index: int, y: np.ndarray,
                     mode: Mode | None) -> np.ndarray:
    """d out / d a floating scalar argument: one forward call (tangent 1),
    or with mode=Reverse one reverse call per output element."""
    column = np.zeros_like(y)
    with kernel.module._wrt_arguments_only():
        if mode is not Reverse:
            annotations = _inactive(kernel, args)
            annotations[x_index] = Duplicated(args[x_index], 1.0)
            annotations[out_index] = Duplicated(y, column)
            autodiff(Forward, kernel, *annotations, ret=_ret_const(kernel))
            return column
        restore = _writable_arrays(kernel, args)
        flat = column.reshape(-1)
        for i in range(y.size):
            if i:
                restore()
            annotations = _inactive(kernel, args)
            annotations[x_index] = Active(args[x_index])
            seed = np.zeros_like(y)
            seed.reshape(-1)[i] = 1
            annotations[out_index] = Duplicated(y, seed)
            flat[i] = autodiff(Reverse, kernel, *annotations, ret=_ret_const(kernel)).derivs[x_index]
    return column


def _writable_arrays(kernel: Kernel, args: Sequence[Any]) -> Callable[[], None]:
    """A function that puts back what the arrays the kernel may write (its
    non-const pointer arguments) hold now: a helper that calls a kernel
    several times (a chunk at a time) must evaluate every chunk at the same
    point, also when the kernel updates an array in place."""
    saved = [(value, value.copy()) for param, value in zip(kernel.signature.params, args)
             if param.ctype.is_pointer and not param.ctype.const and isinstance(value, np.ndarray)]

    def restore() -> None:
        for value, old in saved:
            value[...] = old
    return restore


def _jacobian_chunks(kernel: Kernel, annotations: list, x_index: int, out_index: int,
                     x: np.ndarray, y: np.ndarray, jac: np.ndarray, use_forward: bool,
                     chunk: int) -> None:
    """Fill ``jac`` (m x n) chunk by chunk: batched forward columns or
    batched reverse rows."""
    n, m = x.size, y.size
    mode = Forward if use_forward else Reverse
    width = _chunk_width(chunk, n if use_forward else m)
    if width > 1 and kernel.module._shadowed:
        # A derivative that involves a global's shadow cannot be batched (one
        # shadow per global, not per lane): then one direction per call.
        kinds = tuple(Duplicated if i in (x_index, out_index) else type(a) for i, a in enumerate(annotations))
        single = kernel.derivative_function(mode, kinds, _ret_const(kernel), 1)
        if kernel.module._shadows_used_by(single.so_path):
            width = 1

    def lanes(value: np.ndarray, shadows: np.ndarray) -> Any:
        return Duplicated(value, shadows[0]) if width == 1 else BatchDuplicated(value, shadows)

    restore = _writable_arrays(kernel, [a.val for a in annotations])
    scratch = [i for i, a in enumerate(annotations)
               if isinstance(a, Duplicated) and i not in (x_index, out_index)]
    for start in range(0, n if use_forward else m, width):
        if start:
            restore()  # every chunk starts from the point the Jacobian is taken at
        for i in scratch:
            value = annotations[i].val
            annotations[i] = lanes(value, np.zeros((width, *value.shape), dtype=value.dtype))
        if x_index == out_index:
            # An array updated in place: one shadow is the seed on entry
            # and the result on exit (the output's tangent in forward mode,
            # the input's adjoint in reverse mode).
            tangents = adjoints = _unit_lanes(x, start, width)
            annotations[x_index] = lanes(x, tangents)
        elif use_forward:
            tangents = np.zeros((width, *y.shape), dtype=y.dtype)
            annotations[x_index] = lanes(x, _unit_lanes(x, start, width))
            annotations[out_index] = lanes(y, tangents)
        else:
            adjoints = np.zeros((width, *x.shape), dtype=x.dtype)
            annotations[x_index] = lanes(x, adjoints)
            annotations[out_index] = lanes(y, _unit_lanes(y, start, width))
        autodiff(mode, kernel, *annotations, ret=_ret_const(kernel))
        if use_forward:
            cols = min(width, n - start)
            jac[:, start:start + cols] = tangents.reshape(width, m)[:cols].T
        else:
            rows = min(width, m - start)
            jac[start:start + rows, :] = adjoints.reshape(width, n)[:rows]


def hvp(kernel: Kernel, wrt: int | str = 0) -> Transformed[FloatArray]:
    """Hessian-vector product ``f(*args, v) -> H v`` by forward-over-reverse.

    One call costs a small multiple of one gradient (Enzyme differentiates a
    generated C gradient function in forward mode), never ``n`` gradients.

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import *
    >>> mod = compile("double cube(const double *x, int n) {"
    ...               " double s = 0; for (int i = 0; i < n; i++) s += x[i]*x[i]*x[i]; return s; }")
    >>> hvp(mod.cube)(np.array([1.0, 2.0]), 2, np.array([1.0, 1.0]))
    array([ 6., 12.])
    """
    kernel = _as_kernel(kernel)
    x_index = _param_index(kernel, wrt, "wrt")

    def hvp_call(*args_and_v: Any) -> np.ndarray:
        *args, v = args_and_v
        _check_count(kernel, tuple(args))
        return kernel.hvp_function(x_index, 1)(args, (v,))[1][0]
    return Transformed("hvp", kernel, {"wrt": wrt}, hvp_call, "v")


@overload  # (a str is one parameter, though a Sequence: see jacobian)
def hessian(kernel: Kernel, wrt: int | str = 0,  # type: ignore[overload-overlap]
            chunk: int = 8) -> Transformed[HessianBlock]: ...
@overload
def hessian(kernel: Kernel, wrt: Sequence[int | str],
            chunk: int = 8) -> Transformed[tuple[tuple[HessianBlock, ...], ...]]: ...
def hessian(kernel: Kernel, wrt: int | str | Sequence[int | str] = 0, chunk: int = 8) -> Transformed[Any]:
    """The Hessian of a scalar-returning kernel with respect to ``wrt``.

    For one array, built ``chunk`` columns at a time from batched
    Hessian-vector products (forward over reverse; at most 64 per call,
    Enzyme's batch width here); the result has shape ``x.shape + x.shape``.
    For a floating scalar ``wrt``, a float. For several ``wrt`` (a
    sequence), the blocks as nested tuples, ``H[i][j]`` of shape
    ``x_i.shape + x_j.shape`` (as ``jax.hessian(argnums=(...))``), from one
    forward-over-reverse derivative through all of them (a column per call).

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import *
    >>> mod = compile("double cube(const double *x, int n) {"
    ...               " double s = 0; for (int i = 0; i < n; i++) s += x[i]*x[i]*x[i]; return s; }")
    >>> hessian(mod.cube)(np.array([1.0, 2.0]), 2)
    array([[ 6.,  0.],
           [ 0., 12.]])
    >>> mod = compile("double f(const double *x, double a) { return a * a * x[0] * x[1]; }")
    >>> (hxx, hxa), (hax, haa) = hessian(mod.f, wrt=("x", "a"))(np.array([1.0, 2.0]), 3.0)
    >>> hxa, haa
    (array([12.,  6.]), 4.0)
    """
    kernel = _as_kernel(kernel)
    several = not isinstance(wrt, (str, int, np.integer))
    if several and (isinstance(wrt, bytes) or not hasattr(wrt, "__iter__")):
        raise ActivityError(f"wrt takes a parameter (index or name) or a sequence of them, got {wrt!r}.")
    indices = tuple(_param_index(kernel, w, "wrt") for w in wrt) if several \
        else (_param_index(kernel, wrt, "wrt"),)
    if not indices or len(set(indices)) != len(indices):
        raise ActivityError(f"wrt must name distinct parameters, at least one; got {wrt!r}.")
    _check_chunk(chunk)
    options: dict[str, object] = {"wrt": wrt, "chunk": chunk}
    params = kernel.signature.params
    if not several and params[indices[0]].ctype.is_pointer:
        return Transformed("hessian", kernel, options, _array_hessian(kernel, indices[0], chunk))
    _returns_float(kernel, "hessian")
    for i in indices:
        ctype = params[i].ctype
        if not ctype.is_float or ctype.is_struct or ctype.rows:
            raise ActivityError(f"hessian differentiates with respect to floating arrays and scalars; "
                                f"'{params[i].name}' is `{ctype.spelling}`.")
    second: list[SecondOrder] = []

    def hessian_call(*args: Any) -> Any:
        _check_count(kernel, args)
        if not second:
            second.append(SecondOrder(kernel, indices, (-1,)))
        shapes = {i: (np.shape(_wrt_array(kernel, args, i)) if params[i].ctype.is_pointer else ())
                  for i in indices}
        blocks = {(i, j): np.zeros((int(np.prod(shapes[i])), int(np.prod(shapes[j]))))
                  for i in indices for j in indices}
        restore = _writable_arrays(kernel, args)
        calls = 0
        for j in indices:
            for column in range(int(np.prod(shapes[j]))):
                if calls:
                    restore()
                calls += 1
                direction = np.zeros(shapes[j])
                direction.reshape(-1)[column] = 1.0
                _, products = second[0](args, {-1: 1.0}, {j: direction if shapes[j] else 1.0})
                for i in indices:
                    blocks[i, j][:, column] = np.ravel(products[i])
        shaped = {(i, j): (float(b[0, 0]) if not shapes[i] and not shapes[j]
                           else b.reshape(shapes[i] + shapes[j]))
                  for (i, j), b in blocks.items()}
        if not several:
            return shaped[indices[0], indices[0]]
        return tuple(tuple(shaped[i, j] for j in indices) for i in indices)
    return Transformed("hessian", kernel, options, hessian_call)


def _array_hessian(kernel: Kernel, x_index: int, chunk: int) -> Callable[..., np.ndarray]:
    def hessian_call(*args: Any) -> np.ndarray:
        _check_count(kernel, args)
        x = _wrt_array(kernel, args, x_index)
        n = x.size
        width = _chunk_width(chunk, n)
        fn = kernel.hvp_function(x_index, width)
        hess = np.zeros((n, n), dtype=x.dtype)
        restore = _writable_arrays(kernel, args)
        for start in range(0, n, width):
            if start:
                restore()
            _, products = fn(args, _unit_lanes(x, start, width))
            for lane in range(min(width, n - start)):
                hess[:, start + lane] = products[lane].ravel()
        return hess.reshape((*x.shape, *x.shape))
    return hessian_call


def _check_second_order_parameters(kernel: Kernel) -> None:
    """The parameters a derivative made a kernel cannot take yet (the
    derivative's C function would need them converted again)."""
    sig = kernel.signature
    for param in sig.params:
        if param.ctype.is_function or param.ctype.holds_pointers or param.ctype.rows:
            raise ActivityError(f"second derivatives of '{sig.name}' do not take its parameter "
                                f"'{param.name}' (C `{param.ctype.spelling}`) yet.")


class SecondOrder:
    """Forward over reverse through several inputs and outputs at once: for
    inputs ``wrt`` (floating arrays and scalars), outputs ``outputs``
    (array parameters, and -1 for the return value) with cotangents
    ``seeds``, and tangents ``directions`` on the inputs, one call gives
    the vector-Jacobian product ``g = J^T seeds`` and its derivative along
    the directions, ``d g``: for a scalar return seeded with 1, the
    gradient and a Hessian-vector product (all blocks of it at once).

    Built by differentiating the reverse derivative in forward mode: the
    reverse derivative's generated C becomes a kernel of a module of its
    own (:meth:`Kernel.derivative_as_kernel`), whose forward derivative is
    built, called and checked like any other.
    """

    def __init__(self, kernel: Kernel, wrt: Sequence[int], outputs: Sequence[int]) -> None:
        sig = kernel.signature
        self.kernel, self.wrt, self.outputs = kernel, tuple(wrt), tuple(outputs)
        _check_second_order_parameters(kernel)
        kinds = []
        for i, param in enumerate(sig.params):
            ctype = param.ctype
            if i in self.wrt:
                kinds.append(Duplicated if ctype.is_pointer else Active)
            elif ctype.is_pointer and not ctype.const and ctype.is_float:
                kinds.append(Duplicated)  # an output (seeded) or scratch (zero seed)
            else:
                kinds.append(Const)
        ret = Active if -1 in self.outputs else (Const if sig.ret.kind != "void" else None)
        self._inner, self._slots = kernel.derivative_as_kernel(Reverse, tuple(kinds), ret)
        outer = []
        for slot in self._slots:
            if slot.role is Role.SEED or (slot.role is Role.PRIMAL and kinds[slot.arg] is Const):
                outer.append(Const)
            else:
                # (an output's shadow too: it enters holding the seed, a
                # constant, but the reverse pass adds into it the adjoints of
                # the kernel's reads of that output, which depend on the
                # inputs; as Const, their tangents were dropped: wrong
                # Hessians of a kernel that reads back what it wrote)
                outer.append(Duplicated)
        self._outer = derivative(self._inner, Forward, *outer)
        self._kinds = kinds

    def __call__(self, args: Sequence[Any], seeds: Mapping[int, Any],
                 directions: Mapping[int, Any]) -> tuple[dict[int, Any], dict[int, Any]]:
        """``(g, dg)``, each a dict from the ``wrt`` indices to arrays (or
        floats for scalar inputs)."""
        sig = self.kernel.signature
        flat: list[Any] = []
        grads: dict[int, Any] = {}
        second: dict[int, Any] = {}
        for slot in self._slots:
            i = slot.arg
            if slot.role is Role.SEED:
                flat.append(float(seeds.get(-1, 0.0)))
            elif slot.role is Role.ADJOINT_OUT:  # a scalar input's adjoint, in memory
                dtype = np.dtype(sig.params[i].ctype.dtype)
                grads[i], second[i] = np.zeros(1, dtype=dtype), np.zeros(1, dtype=dtype)
                flat += (grads[i], second[i])
            elif slot.role is Role.PRIMAL:
                value = args[i]
                if self._kinds[i] is Const:
                    flat.append(value)
                elif not sig.params[i].ctype.is_pointer:  # a scalar input and its tangent
                    flat += (float(value), float(directions.get(i, 0.0)))
                else:
                    value = np.array(value, copy=True)  # the reverse pass writes outputs and scratch
                    tangent = np.zeros_like(value)
                    if i in directions:
                        tangent[...] = np.asarray(directions[i], dtype=value.dtype).reshape(value.shape)
                    flat += (value, tangent)
            else:  # Role.SHADOW
                template = np.asarray(args[i])
                if i in self.outputs:
                    seed = np.array(seeds.get(i, 0.0), dtype=template.dtype, order="C", copy=True)
                    flat += (np.broadcast_to(seed, template.shape).copy(), np.zeros_like(template))
                elif i in self.wrt:
                    grads[i], second[i] = np.zeros_like(template), np.zeros_like(template)
                    flat += (grads[i], second[i])
                else:
                    flat += (np.zeros_like(template), np.zeros_like(template))
        with self.kernel.module._wrt_arguments_only():
            self._outer(*flat)
        scalar = {i for i in self.wrt if not sig.params[i].ctype.is_pointer}
        return ({i: (float(g[0]) if i in scalar else g) for i, g in grads.items()},
                {i: (float(d[0]) if i in scalar else d) for i, d in second.items()})


class ForwardSecondOrder:
    """Forward over forward through several inputs and outputs: for inputs
    ``wrt`` (floating arrays and scalars) with tangents ``t`` and
    directions ``w``, one call gives, for each output (array parameters,
    -1 for the return value), the derivative along ``w`` of its tangent
    along ``t``: ``sum_ij d2 f / dx_i dx_j t_i w_j``. Built like
    :class:`SecondOrder`, from the forward derivative made a kernel."""

    def __init__(self, kernel: Kernel, wrt: Sequence[int], outputs: Sequence[int]) -> None:
        sig = kernel.signature
        self.kernel, self.wrt, self.outputs = kernel, tuple(wrt), tuple(outputs)
        _check_second_order_parameters(kernel)
        kinds = [Duplicated if i in self.wrt or (p.ctype.is_pointer and not p.ctype.const and p.ctype.is_float)
                 else Const for i, p in enumerate(sig.params)]
        ret = Duplicated if -1 in self.outputs else (Const if sig.ret.kind != "void" else None)
        self._inner, self._slots = kernel.derivative_as_kernel(Forward, tuple(kinds), ret)
        self._kinds = kinds
        outer = [Const if slot.role is Role.PRIMAL and kinds[slot.arg] is Const else Duplicated
                 for slot in self._slots]
        self._outer = derivative(self._inner, Forward, *outer)

    def __call__(self, args: Sequence[Any], tangents: Mapping[int, Any],
                 directions: Mapping[int, Any]) -> dict[int, Any]:
        """For each output index: the second derivative (an array like the
        output, or a float for the return value)."""
        sig = self.kernel.signature
        flat: list[Any] = []
        found: dict[int, Any] = {}

        def filled(template: np.ndarray, value: Any) -> np.ndarray:
            out = np.zeros_like(template)
            if value is not None:
                out[...] = np.asarray(value, dtype=template.dtype).reshape(template.shape)
            return out

        for slot in self._slots:
            i = slot.arg
            if slot.role is Role.TANGENT_OUT:  # the return value's tangent, in memory
                found[-1] = np.zeros(2, dtype=np.dtype(sig.ret.dtype))
                flat += (found[-1][:1], found[-1][1:])
            elif slot.role is Role.PRIMAL:
                value = args[i]
                if self._kinds[i] is Const:
                    flat.append(value)
                elif not sig.params[i].ctype.is_pointer:
                    flat += (float(value), float(directions.get(i, 0.0)))
                else:
                    value = np.array(value, copy=True)
                    flat += (value, filled(value, directions.get(i)))
            else:  # Role.SHADOW: a tangent of the inner forward pass
                if not sig.params[i].ctype.is_pointer:
                    flat += (float(tangents.get(i, 0.0)), 0.0)
                    continue
                template = np.asarray(args[i])
                tangent = filled(template, tangents.get(i)) if i in self.wrt else np.zeros_like(template)
                second = np.zeros_like(template)
                if i in self.outputs:
                    found[i] = second
                flat += (tangent, second)
        with self.kernel.module._wrt_arguments_only():
            self._outer(*flat)
        return {i: (float(v[1]) if i == -1 else v) for i, v in found.items()}


_TRANSFORMS: dict[str, Callable[..., Transformed[Any]]] = {
    "grad": grad, "value_and_grad": value_and_grad, "jvp": jvp, "vjp": vjp, "jacobian": jacobian,
    "hvp": hvp, "hessian": hessian}
