"""What the framework bridges (enzyme.torch, enzyme.jax, enzyme.scipy)
share: a kernel seen as a pure function of its inputs. Which C parameters
are inputs and which are outputs, the outputs' shapes, and the function's
value, vector-Jacobian products and Jacobian-vector products on numpy
arrays, each one call of an Enzyme derivative. The bridges only translate
their frameworks' arrays and rules to and from these."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from .activity import Active, Const, Duplicated, Forward, ForwardWithPrimal, Reverse
from .autodiff import _as_kernel, autodiff
from .errors import ActivityError, ArgumentTypeError, LengthError
from .module import Kernel, _param_index
from .signature import known_shape, length_contracts

__all__ = ["PureFunction", "BridgeFunction", "pure_function", "RETURN"]

RETURN = "return"  # names the kernel's return value among the outputs

# An output's shape: fixed, or computed from the call's inputs (by name)
Shape = Union[Sequence[int], Callable[..., Sequence[int]]]


@dataclasses.dataclass(frozen=True)
class PureFunction:
    """A kernel as a pure function: ``inputs`` (parameter indices, in the
    order the function takes them) to ``outputs`` (parameter indices, -1
    for the return value). Floating inputs (arrays and scalars) are
    differentiable; an input array the kernel writes is copied first, so
    the caller's stays as it was."""

    kernel: Kernel
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    shapes: tuple[tuple[int, Any], ...]  # (output index, Shape) where given

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.kernel.signature.params[i].name for i in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(RETURN if i < 0 else self.kernel.signature.params[i].name for i in self.outputs)

    def differentiable(self, position: int) -> bool:
        """Is input ``position`` (in the function's order) floating?"""
        ctype = self.kernel.signature.params[self.inputs[position]].ctype
        return ctype.is_float and not ctype.is_struct and not ctype.rows

    def output_dtype(self, position: int) -> np.dtype:
        index = self.outputs[position]
        return np.dtype(self.kernel.signature.ret.dtype if index < 0 else
                        self.kernel.signature.params[index].ctype.dtype)

    def bind(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple:
        """The inputs in order from a call giving some by C parameter name."""
        names = self.input_names
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise ArgumentTypeError(f"no input named {', '.join(unknown)}; the inputs: {', '.join(names)}.")
        missing = [n for n in names[len(args):] if n not in kwargs]
        twice = [k for k in kwargs if names.index(k) < len(args)]
        if missing or twice:
            raise ArgumentTypeError(f"inputs {', '.join(missing)} missing" if missing else
                                    f"{', '.join(twice)} given both by position and by name")
        return (*args, *(kwargs[n] for n in names[len(args):]))

    def output_shapes(self, values: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
        """The outputs' shapes for a call with these inputs: given by the
        user, or from the output parameter's declared shape or length
        contract (``ENZYME_LEN`` or ``sizes=``)."""
        sig = self.kernel.signature
        by_name = dict(zip(self.input_names, values))
        given = dict(self.shapes)
        shapes = []
        for index in self.outputs:
            if index < 0:
                shapes.append(())
                continue
            param = sig.params[index]
            if index in given:
                shape = given[index]
                if callable(shape):
                    try:
                        shape = shape(**by_name)
                    except Exception as exc:  # the user's function: say whose it is
                        raise ActivityError(f"shapes['{param.name}'] could not be computed from the "
                                            f"inputs ({', '.join(by_name)}): {type(exc).__name__}: "
                                            f"{exc}") from None
            elif (known := known_shape(sig, index, by_name)) is not None:
                shape = known
            else:
                raise ActivityError(
                    f"the shape of output '{param.name}' of {sig.name} is not known: give "
                    f"shapes={{'{param.name}': (...)}} (or a function of the inputs by name), or a "
                    f"length contract (sizes={{'{sig.name}': {{'{param.name}': 'n'}}}} or ENZYME_LEN).")
            try:
                shapes.append(tuple(int(d) for d in (shape if np.ndim(shape) else (shape,))))
            except (TypeError, ValueError):
                raise ActivityError(f"the shape of output '{param.name}' must be a tuple of "
                                    f"integers, got {shape!r}.") from None
        return tuple(shapes)

    def check_sizes(self, values: Sequence[Any]) -> None:
        """Check the length contracts on the inputs' sizes and the outputs'
        shapes before anything runs (for a framework that calls the kernel
        later, where an error would lose its type): ``values`` may be
        arrays or anything with a ``shape`` (JAX's abstract values)."""
        sig = self.kernel.signature
        by_name = dict(zip(self.input_names, values))
        sizes = {name: int(np.prod(np.shape(v))) for name, v in by_name.items()
                 if sig.params[self.inputs[self.input_names.index(name)]].ctype.is_pointer}
        for (index, shape) in zip(self.outputs, self.output_shapes(values)):
            if index >= 0:
                sizes[sig.params[index].name] = int(np.prod(shape))
        for contract in length_contracts(sig):
            name = sig.params[contract.param].name
            try:
                needed = contract.evaluate([int(by_name[n]) for n in contract.names])
            except (KeyError, TypeError, ValueError):
                continue  # a length read from a value not known here: checked at the call
            if name in sizes and sizes[name] < needed:
                raise LengthError(f"'{name}' of {sig.name} has {sizes[name]} element(s), but its "
                                  f"length contract `{contract.expression}` needs {needed}.")

    def _arguments(self, values: Sequence[Any]) -> tuple[list[Any], list[np.ndarray]]:
        """The C argument list (fresh zeroed outputs, copies of written
        inputs) and the output arrays in it."""
        sig = self.kernel.signature
        if len(values) != len(self.inputs):
            raise ArgumentTypeError(f"this function of {sig.name} takes {len(self.inputs)} "
                                    f"input(s) ({', '.join(self.input_names)}), {len(values)} given.")
        args: list[Any] = [None] * len(sig.params)
        for index, value in zip(self.inputs, values):
            ctype = sig.params[index].ctype
            if ctype.is_pointer and not ctype.const and isinstance(value, np.ndarray):
                value = value.copy()  # the kernel writes it; the caller's stays
            args[index] = value
        arrays = []
        for index, shape in zip(self.outputs, self.output_shapes(values)):
            if index >= 0:
                args[index] = np.zeros(shape, dtype=sig.params[index].ctype.dtype)
                arrays.append(args[index])
        return args, arrays

    def __call__(self, *values: Any) -> tuple[Any, ...]:
        """The outputs, in the order of ``outputs``."""
        args, _ = self._arguments(values)
        result = self.kernel(*args)
        return tuple(result if index < 0 else args[index] for index in self.outputs)

    def pattern(self, reverse: bool) -> tuple[Any, tuple, Any]:
        """``(mode, activity classes per parameter, ret)`` of the derivative
        :meth:`vjp` (``reverse``) or :meth:`jvp` calls: every floating input
        and every output differentiated (scalar inputs Active in reverse
        mode), the rest Const."""
        sig = self.kernel.signature
        kinds: list[Any] = [Const] * len(sig.params)
        for position, index in enumerate(self.inputs):
            if self.differentiable(position):
                kinds[index] = Active if reverse and not sig.params[index].ctype.is_pointer else Duplicated
        for index in self.outputs:
            if index >= 0:
                kinds[index] = Duplicated
        returns = -1 in self.outputs
        ret = None if returns else (Const if sig.ret.kind != "void" else None)
        mode = Reverse if reverse else ForwardWithPrimal if returns else Forward
        return mode, tuple(kinds), ret

    def vjp(self, values: Sequence[Any], cotangents: Sequence[Any]) -> tuple[Any, ...]:
        """One reverse pass: for each input, the cotangents (one per output)
        pulled back (None for an input that is not floating)."""
        sig = self.kernel.signature
        args, _ = self._arguments(values)
        mode, kinds, ret = self.pattern(reverse=True)
        annotations: list[Any] = [Const(a) for a in args]
        for index, kind in enumerate(kinds):
            if kind is Active:
                annotations[index] = Active(args[index])
            elif kind is Duplicated and index not in self.outputs:
                annotations[index] = Duplicated(args[index], np.zeros_like(args[index]))
        seed = None
        for index, cotangent in zip(self.outputs, cotangents):
            if index < 0:
                seed = float(cotangent)
            else:
                y = args[index]
                bar = np.array(cotangent, dtype=y.dtype, copy=True, order="C")
                if bar.shape != y.shape:
                    raise ActivityError(f"the cotangent of '{sig.params[index].name}' has shape "
                                        f"{bar.shape}, the output {y.shape}.")
                annotations[index] = Duplicated(y, bar)
        with self.kernel.module._wrt_arguments_only():
            result = autodiff(mode, self.kernel, *annotations, ret=ret, seed=seed)
        grads: list[Any] = []
        for position, index in enumerate(self.inputs):
            if not self.differentiable(position):
                grads.append(None)
            elif sig.params[index].ctype.is_pointer:
                grads.append(annotations[index].dval)
            else:
                grads.append(result.derivs[index])
        return tuple(grads)

    def vjp_and_derivative(self, values: Sequence[Any], cotangents: Sequence[Any],
                           directions: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The vector-Jacobian product ``g`` (as :meth:`vjp`) and its
        derivative along ``directions`` on the inputs (None: held fixed),
        from one forward-over-reverse call: what second derivatives need."""
        args, _ = self._arguments(values)
        seeds = dict(zip(self.outputs, cotangents))
        moves = {self.inputs[p]: d for p, d in enumerate(directions)
                 if d is not None and self.differentiable(p)}
        grads, products = _second_order(self)(args, seeds, moves)
        return (tuple(grads.get(i) for i in self.inputs), tuple(products.get(i) for i in self.inputs))

    def jvp_derivative(self, values: Sequence[Any], tangents: Sequence[Any],
                       directions: Sequence[Any]) -> tuple[Any, ...]:
        """The derivative along ``directions`` of the outputs' tangents along
        ``tangents`` (both on the inputs; None: zero), from one
        forward-over-forward call."""
        args, _ = self._arguments(values)
        tangent_map = {self.inputs[p]: t for p, t in enumerate(tangents) if t is not None and self.differentiable(p)}
        moves = {self.inputs[p]: d for p, d in enumerate(directions) if d is not None and self.differentiable(p)}
        found = _second_order(self, forward=True)(args, tangent_map, moves)
        return tuple(found[i] for i in self.outputs)

    def jvp(self, values: Sequence[Any], tangents: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """One forward pass: the outputs and their tangents along the
        inputs' tangents (None or 0 for an input held fixed)."""
        sig = self.kernel.signature
        args, _ = self._arguments(values)
        annotations: list[Any] = [Const(a) for a in args]
        for position, (index, tangent) in enumerate(zip(self.inputs, tangents)):
            if not self.differentiable(position):
                continue
            value = args[index]
            if sig.params[index].ctype.is_pointer:
                dot = np.zeros_like(value) if tangent is None else \
                    np.array(tangent, dtype=value.dtype, copy=True, order="C").reshape(value.shape)
            else:
                dot = 0.0 if tangent is None else float(tangent)
            annotations[index] = Duplicated(value, dot)
        tangent_arrays = {}
        for index in self.outputs:
            if index >= 0:
                tangent_arrays[index] = np.zeros_like(args[index])
                annotations[index] = Duplicated(args[index], tangent_arrays[index])
        mode, _, ret = self.pattern(reverse=False)
        with self.kernel.module._wrt_arguments_only():
            result = autodiff(mode, self.kernel, *annotations, ret=ret)
        outputs = tuple(result.primal if index < 0 else args[index] for index in self.outputs)
        dots = tuple(result.tangent if index < 0 else tangent_arrays[index] for index in self.outputs)
        return outputs, dots


class BridgeFunction:
    """What the bridges' functions share: the pure function, a name, a
    docstring, a repr, and pickling as the call that made them
    (``factory(kernel, out, shapes)``)."""

    framework = ""

    def __init__(self, pure: PureFunction, factory: Callable[..., Any], out: Any, shapes: Any) -> None:
        self.pure = pure
        self._made_with = (factory, (pure.kernel, out, shapes))
        self.__name__ = f"{self.framework}_{pure.kernel.name}"
        self.__doc__ = (f"`{pure.kernel.signature}` as a {self.framework} function: inputs "
                        f"{', '.join(pure.input_names)}; outputs {', '.join(pure.output_names)}.")

    def __repr__(self) -> str:
        return (f"<enzyme.{self.framework}.function of {self.pure.kernel.signature}: "
                f"({', '.join(self.pure.input_names)}) -> ({', '.join(self.pure.output_names)})>")

    def __reduce__(self) -> tuple:
        return self._made_with


def _second_order(pure: PureFunction, forward: bool = False) -> Any:
    """The forward-over-reverse (or forward-over-forward) derivative of a
    pure function through all its floating inputs, built on first use."""
    from .transforms import ForwardSecondOrder, SecondOrder

    cache = _FORWARD_SECOND if forward else _SECOND
    found = cache.get(pure)
    if found is None:
        wrt = tuple(pure.inputs[p] for p in range(len(pure.inputs)) if pure.differentiable(p))
        found = cache.setdefault(pure, (ForwardSecondOrder if forward else SecondOrder)(
            pure.kernel, wrt, pure.outputs))
    return found


_SECOND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FORWARD_SECOND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pure_function(kernel: Kernel, out: str | int | Sequence[str | int] | None = None,
                  shapes: Mapping[str, Shape] | None = None) -> PureFunction:
    """A kernel as a pure function of its inputs (see :class:`PureFunction`).

    ``out`` names the outputs: non-const floating array parameters the
    kernel writes, and ``"return"`` for its floating return value (the
    default when ``out`` is not given). Every other parameter is an input.

    Examples
    --------
    >>> import numpy as np
    >>> from enzyme import compile
    >>> mod = compile("void sq(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i]*x[i]; }",
    ...               sizes={"sq": {"y": "n"}})
    >>> f = pure_function(mod.sq, out="y")
    >>> f.input_names, f(np.array([1.0, 2.0]), 2)
    (('x', 'n'), (array([1., 4.]),))
    """
    kernel = _as_kernel(kernel)
    sig = kernel.signature
    names = (RETURN,) if out is None else (out,) if isinstance(out, (str, int, np.integer)) else tuple(out)
    if not names:
        raise ActivityError("out is empty: name at least one output.")
    outputs = []
    for name in names:
        if name == RETURN:
            if not sig.ret.is_float or sig.ret.kind == "struct":
                raise ActivityError(f"'{sig.name}' returns {sig.ret.spelling}, not a floating "
                                    "scalar: name its output array parameters with out=.")
            outputs.append(-1)
            continue
        index = _param_index(kernel, name, "out")
        ctype = sig.params[index].ctype
        if not (ctype.is_pointer and ctype.is_float) or ctype.const or ctype.is_struct or ctype.rows:
            raise ActivityError(f"out: '{sig.params[index].name}' is `{ctype.spelling}`; an output "
                                "is a non-const floating array the kernel writes.")
        outputs.append(index)
    if len(set(outputs)) != len(outputs):
        raise ActivityError(f"out names an output twice: {names!r}.")
    inputs = tuple(i for i in range(len(sig.params)) if i not in outputs)
    for i in inputs:
        ctype = sig.params[i].ctype
        if ctype.is_function or ctype.holds_pointers:
            raise ActivityError(f"input '{sig.params[i].name}' is `{ctype.spelling}`, which the "
                                "bridges do not pass yet; call the kernel directly.")
    given = []
    for name, shape in (shapes or {}).items():
        index = _param_index(kernel, name, "shapes")
        if index not in outputs:
            raise ActivityError(f"shapes: '{name}' is not an output (out={names!r}).")
        if not callable(shape):  # (a tuple: hashable, as JAX's static parameters must be)
            shape = tuple(shape) if np.ndim(shape) else (shape,)
        given.append((index, shape))
    return PureFunction(kernel, inputs, tuple(outputs), tuple(given))
