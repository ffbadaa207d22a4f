"""enzyme.vmap: a kernel, or its gradient, over a batch of inputs in one
native call.

Many small calls (a gradient at each of 10,000 points) cost more in Python
than in C: ``enzyme.vmap(enzyme.grad(mod.f), in_axes=(0, None))(X, n)`` calls
the generated entry point for every row of ``X`` from a C loop
(native/fastcall.c), optionally on several threads. The first element goes
through the ordinary checked call, which checks the arguments (their type,
shape, contracts and overlaps: every element has the same) and runs the
derivative's first-use check; the loop then calls the same entry point for
the others. What the loop cannot take (an isolated module, globals carrying
derivatives, a written array shared by every element, parameters the packed
convention does not pass) runs as a Python loop of checked calls instead,
with the same results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, Union, cast, overload

import numpy as np
import numpy.typing as npt

from .activity import Active, Duplicated, Reverse, ReverseWithPrimal
from .call import CArray, Derivative, FloatArray, NativeEntry, native_entry, run_batch
from .errors import ArgumentTypeError, ArgumentValueError, OptionError, OptionTypeError
from .module import Kernel
from .params import Role
from .transforms import Transformed, _normalize_argnums, grad_annotations

__all__ = ["vmap", "Batched", "StackedDerivative"]

_log = logging.getLogger("enzyme")
_PROBE = 256  # elements timed on one thread before deciding on more
_THREADS_PAY_FROM = 300e-6  # seconds of remaining work below which one thread runs it

_R = TypeVar("_R")
# One argument's derivatives over the batch, stacked: an array of floats (a
# scalar argument), or of the argument's rows (records for structs).
StackedDerivative = Union[FloatArray, npt.NDArray[np.void]]
_InAxes = Union[int, None, Sequence[Union[int, None]]]


# The overloads follow what vmap takes (a kernel, grad or value_and_grad, of
# one argument or several) to what the batch gives. value_and_grad's come
# before grad's: (float, Derivative) is also a tuple of Derivatives.
@overload
def vmap(fn: Kernel, in_axes: _InAxes = 0, workers: int = 1) -> Batched[CArray | None]: ...
@overload
def vmap(fn: Transformed[tuple[float, Derivative]], in_axes: _InAxes = 0,
         workers: int = 1) -> Batched[tuple[FloatArray, StackedDerivative]]: ...
@overload
def vmap(fn: Transformed[tuple[float, tuple[Derivative, ...]]], in_axes: _InAxes = 0,
         workers: int = 1) -> Batched[tuple[FloatArray, tuple[StackedDerivative, ...]]]: ...
@overload
def vmap(fn: Transformed[Derivative], in_axes: _InAxes = 0, workers: int = 1) -> Batched[StackedDerivative]: ...
@overload
def vmap(fn: Transformed[tuple[Derivative, ...]], in_axes: _InAxes = 0,
         workers: int = 1) -> Batched[tuple[StackedDerivative, ...]]: ...
def vmap(fn: Kernel | Transformed[Any], in_axes: _InAxes = 0, workers: int = 1) -> Batched[Any]:
    """``fn`` mapped over axis 0 of its batched arguments, in one native loop.

    Parameters
    ----------
    fn : Kernel or the result of grad / value_and_grad
        ``mod.f`` (the kernel's return values come back stacked; arrays it
        writes must be batched, and each element writes its own row), or
        ``enzyme.grad(mod.f, argnums)`` / ``enzyme.value_and_grad(...)``
        (gradients stacked along a new first axis).
    in_axes : 0, None or a sequence of them, one per C parameter
        0: the argument is batched along its first axis (an array of rows,
        or a 1-D array of values for a floating scalar); None: the same
        value for every element. Integer parameters (sizes) cannot be
        batched: every element has the sizes checked for the first.
    workers : int
        Threads the loop may be spread over (1: the calling thread only). A
        batch whose remaining work is under about 0.3 ms (timed on its first
        elements) runs on one thread: starting threads would cost more. Needs
        a module without writable globals.

    Examples
    --------
    >>> import numpy as np, enzyme
    >>> mod = enzyme.compile("double sq(const double *x, int n) {"
    ...                      " double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i]; return s; }")
    >>> X = np.arange(6.0).reshape(3, 2)
    >>> enzyme.vmap(mod.sq, in_axes=(0, None))(X, 2)
    array([ 1., 13., 41.])
    >>> enzyme.vmap(enzyme.grad(mod.sq), in_axes=(0, None))(X, 2)
    array([[ 0.,  2.],
           [ 4.,  6.],
           [ 8., 10.]])
    """
    return Batched(fn, in_axes, workers)


class Batched(Generic[_R]):
    """A kernel or gradient mapped over a batch (see :func:`vmap`); ``_R`` is
    what a call returns."""

    def __init__(self, fn: Kernel | Transformed[Any], in_axes: _InAxes, workers: int) -> None:
        self.kernel: Kernel
        self.transform: str | None
        self._nums: tuple[int, ...]
        if isinstance(fn, Kernel):
            self.kernel, self.transform, self._nums, self._single = fn, None, (), False
        elif isinstance(fn, Transformed) and fn.transform in ("grad", "value_and_grad"):
            self.kernel, self.transform = fn.kernel, fn.transform
            self._nums, self._single = _normalize_argnums(cast("int | Sequence[int]", fn.options["argnums"]),
                                                          len(fn.kernel.signature.params))
        else:
            raise OptionTypeError(f"enzyme.vmap takes a kernel (mod.f), enzyme.grad(...) or "
                                  f"enzyme.value_and_grad(...), got {fn!r}.")
        self.fn: Kernel | Transformed[object] = fn
        sig = self.kernel.signature
        nparams = len(sig.params)
        if in_axes is None or isinstance(in_axes, (int, np.integer)):
            axes = (in_axes,) * nparams
        else:
            axes = tuple(in_axes)
            if len(axes) != nparams:
                raise OptionError(f"in_axes has {len(axes)} entries; '{sig.name}' has {nparams} "
                                  f"parameters ({', '.join(p.name for p in sig.params)}).")
        for axis, param in zip(axes, sig.params):
            if axis is not None and axis != 0:
                raise OptionError(f"in_axes: only 0 (batched along the first axis) or None (shared) "
                                  f"are supported, got {axis!r} for '{param.name}'.")
            if axis == 0 and not param.ctype.is_pointer and not param.ctype.is_float:
                raise OptionError(f"in_axes: '{param.name}' is `{param.ctype.spelling}`, a size or "
                                  "flag shared by every element: give it None (every element is "
                                  "checked against the sizes of the first).")
        if 0 not in axes:
            raise OptionError("in_axes batches no argument: give 0 for at least one.")
        if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
            raise OptionTypeError(f"workers= takes a positive int, got {workers!r}.")
        module = self.kernel.module
        if workers > 1 and any(module.globals._view(n).flags.writeable for n in module.globals):
            raise OptionError(f"workers={workers}: the module of '{sig.name}' has writable globals, "
                              "which threads would share; use workers=1.")
        self.in_axes, self.workers = axes, int(workers)
        self._recipes: dict[tuple, Any] = {}
        self.__name__ = f"vmap_{getattr(fn, '__name__', self.kernel.name)}"
        self.__doc__ = f"{getattr(fn, '__doc__', '')}\n\nMapped over axis 0 of: " + ", ".join(
            p.name for p, a in zip(sig.params, axes) if a == 0) + "."

    def __repr__(self) -> str:
        return f"<enzyme.vmap of {self.fn!r} in_axes={self.in_axes} workers={self.workers}>"

    def __call__(self, *args: object) -> _R:
        sig = self.kernel.signature
        if len(args) != len(sig.params):
            raise ArgumentTypeError(f"'{sig.name}' takes {len(sig.params)} argument(s), {len(args)} "
                                    f"given. Signature: {sig}")
        batched, size = self._batched(args)
        if self.transform is not None:
            found = self._gradients(args, batched, size)
            if found is not None:
                return found
        first_args = self._element(args, batched, 0)
        first = self.fn(*first_args)
        outputs = [np.zeros((size, *np.shape(part)), dtype=dtype)
                   for part, dtype in zip(self._parts(first), self._dtypes(first_args, first))]
        self._store(outputs, 0, first)
        if size > 1 and not self._run_native(args, batched, outputs, size):
            for i in range(1, size):
                self._store(outputs, i, self.fn(*self._element(args, batched, i)))
        return self._result(outputs)

    # -- arguments -------------------------------------------------------

    def _batched(self, args: tuple) -> tuple[dict[int, np.ndarray], int]:
        """The batched arguments as C-contiguous arrays, and the batch size."""
        sig = self.kernel.signature
        found: dict[int, np.ndarray] = {}
        size = None
        for i, (axis, param, value) in enumerate(zip(self.in_axes, sig.params, args)):
            if axis is None:
                continue
            if param.ctype.is_pointer:
                if not isinstance(value, np.ndarray) or value.ndim == 0:
                    raise ArgumentTypeError(f"'{param.name}' is batched: pass a numpy array whose "
                                            f"first axis is the batch, got {type(value).__name__}.")
                if not value.flags.c_contiguous:
                    raise ArgumentValueError(f"'{param.name}' is batched and must be C-contiguous "
                                             "(np.ascontiguousarray) so that each element is.")
                array = value
            else:
                array = np.ascontiguousarray(value, dtype=np.dtype(param.ctype.dtype))
                if array.ndim != 1:
                    raise ArgumentValueError(f"'{param.name}' is a batched scalar: pass a 1-D array "
                                             f"of values, got shape {array.shape}.")
            if size is not None and array.shape[0] != size:
                raise ArgumentValueError(f"batched arguments disagree on the batch size: "
                                         f"'{param.name}' has {array.shape[0]}, an earlier one {size}.")
            size = array.shape[0]
            found[i] = array
        if not size:
            raise ArgumentValueError("the batch is empty (a batched argument has 0 rows).")
        return found, size

    def _element(self, args: tuple, batched: dict[int, np.ndarray], i: int) -> list[Any]:
        sig = self.kernel.signature
        out = list(args)
        for k, array in batched.items():
            out[k] = array[i] if sig.params[k].ctype.is_pointer else array[i].item()
        return out

    # -- results ---------------------------------------------------------

    def _parts(self, result: Any) -> list[Any]:
        """One element's results as a list (return value, gradients)."""
        if self.transform is None:
            return [] if result is None else [result]
        if self.transform == "grad":
            return [result] if self._single else list(result)
        value, grads = result
        return [value, *([grads] if self._single else grads)]

    def _dtypes(self, first_args: Sequence[Any], first: Any) -> list[np.dtype]:
        """The C types of the results (what the native loop writes)."""
        sig = self.kernel.signature
        ret = [] if sig.ret.kind == "void" else [
            np.asarray(self._parts(first)[0]).dtype if sig.ret.is_struct else np.dtype(sig.ret.dtype)]
        grads = [np.asarray(first_args[i]).dtype if sig.params[i].ctype.is_pointer
                 else np.dtype(sig.params[i].ctype.dtype) for i in self._nums]
        return ret if self.transform is None else grads if self.transform == "grad" else ret + grads

    def _store(self, outputs: list[np.ndarray], i: int, result: Any) -> None:
        for out, part in zip(outputs, self._parts(result)):
            out[i] = part

    def _result(self, outputs: list[np.ndarray]) -> Any:
        if self.transform is None:
            return outputs[0] if outputs else None
        if self.transform == "grad":
            return outputs[0] if self._single else tuple(outputs)
        grads = outputs[1] if self._single else tuple(outputs[1:])
        return outputs[0], grads

    # -- the native loop -------------------------------------------------

    def _run_native(self, args: tuple, batched: dict[int, np.ndarray], outputs: list[np.ndarray],
                    size: int) -> bool:
        """Elements 1.. through the C loop; False (nothing ran) where it
        cannot take this call."""
        plan = self._plan(args, batched, outputs)
        if plan is None:
            _log.debug("enzyme.vmap of %s: a Python loop of checked calls", self.kernel.name)
            return False
        entry, bases, strides = plan
        return self._loop(entry, bases, strides, size, None)

    def _loop(self, entry: NativeEntry, bases: list[Any], strides: list[int], size: int,
              zero: list[int] | None) -> bool:
        """Elements 1.. through the batch twin. With several workers, the
        first few elements run alone first and time the rest: a batch too
        small to pay for starting threads (about 50 us each) runs on one."""
        start, workers = 1, self.workers
        if workers > 1 and size > 2:
            start = min(size, 1 + _PROBE)
            began = time.perf_counter()
            if not run_batch(entry, bases, strides, 1, start, 1, zero):
                self.kernel.module._check_open()  # (closed: says so)
                return False
            per_element = (time.perf_counter() - began) / (start - 1)
            if per_element * (size - start) < _THREADS_PAY_FROM:
                workers = 1
        if not run_batch(entry, bases, strides, start, size, workers, zero):
            self.kernel.module._check_open()
            return False
        return True

    def _plan(self, args: tuple, batched: dict[int, np.ndarray],
              outputs: list[np.ndarray]) -> tuple[NativeEntry, list[Any], list[int]] | None:
        """The kernel's batch loop: its shim's batch twin, the slots' bases
        and strides (and the arrays they point into); None for the Python
        loop. (Gradients: see :meth:`_gradients`.) A base is an array
        (run_batch holds its buffer for the call) or an address."""
        sig = self.kernel.signature
        if self.transform is not None or not self._plannable(args, batched):
            return None
        packed = self.kernel.packed_primal()
        if packed is None:
            return None
        entry, address = packed
        bases: list[Any] = []
        strides: list[int] = []
        for i in range(len(sig.params)):
            array, stride = self._argument(args, batched, i)
            bases.append(array)
            strides.append(stride)
        bases.append(address)  # the kernel itself, as the shim calls it
        strides.append(0)
        bases.append(outputs[0] if outputs else 0)
        strides.append(outputs[0].strides[0] if outputs else 0)
        return entry, bases, strides

    def _argument(self, args: tuple, batched: dict[int, np.ndarray], i: int) -> tuple[np.ndarray, int]:
        """Parameter ``i``'s slot in the loop: its memory and the stride
        between elements (0: the same for every element)."""
        if i in batched:
            return batched[i], batched[i].strides[0]
        ctype = self.kernel.signature.params[i].ctype
        if ctype.is_pointer:
            return args[i], 0
        return np.array([args[i]], dtype=np.dtype(ctype.dtype)), 0

    def _plannable(self, args: tuple, batched: dict[int, np.ndarray]) -> bool:
        """Whether the native loop may run this call (else the Python loop)."""
        module, sig = self.kernel.module, self.kernel.signature
        if module.isolate or module._shadowed:
            return False
        for i, param in enumerate(sig.params):
            ctype = param.ctype
            if ctype.is_struct or ctype.rows or ctype.is_function:
                return False
            if ctype.is_pointer and i not in batched and (
                    not isinstance(args[i], np.ndarray) or not args[i].flags.c_contiguous):
                return False
            if ctype.is_pointer and not ctype.const:
                if i not in batched:
                    return False  # (a written array shared by every element: the Python loop's order)
                # a written batch must not overlap another argument in any row
                # (the first element's checks saw row 0 only); the Python loop's
                # checks then say which element
                if any(np.may_share_memory(batched[i], a) for j, a in enumerate(args)
                       if j != i and isinstance(a, np.ndarray)):
                    return False
        return True

    def _recipe(self, first: list[Any]) -> Any:
        """The derivative grad calls for arguments like ``first`` and its
        native entry (cached by the arguments' kinds), or None."""
        key = tuple((type(a), getattr(a, "dtype", None)) for a in first)
        if key not in self._recipes:
            annotations = grad_annotations(self.kernel, self._nums, first)
            kinds = tuple(type(a) for a in annotations)
            mode = Reverse if self.transform == "grad" else ReverseWithPrimal
            fn = self.kernel.derivative_function(mode, kinds, None)
            entry = native_entry(fn)
            usable = entry is not None and entry.batch and not any(slot.lane for slot in fn._slots)
            self._recipes[key] = (fn, kinds, entry) if usable else None
        return self._recipes[key]

    def _gradients(self, args: tuple, batched: dict[int, np.ndarray], size: int) -> Any:
        """grad / value_and_grad over the batch: the first element through the
        derivative's checked call, the others through its batch twin; None
        when the native loop cannot take the call."""
        if not self._plannable(args, batched):
            return None
        sig = self.kernel.signature
        first = self._element(args, batched, 0)
        recipe = self._recipe(first)
        if recipe is None:
            return None
        fn, kinds, entry = recipe
        # (not zeroed here: the loop zeroes each element's shadows just
        # before its call, in one pass over memory; row 0 is zeroed below)
        grads: dict[int, np.ndarray] = {}
        for a in self._nums:
            if sig.params[a].ctype.is_pointer:
                grads[a] = np.empty((size, *np.shape(first[a])), dtype=first[a].dtype)
            else:
                grads[a] = np.empty(size, dtype=np.dtype(sig.params[a].ctype.dtype))
            grads[a][0] = 0
        scratch = {a: np.empty_like(batched[a]) for a, kind in enumerate(kinds)
                   if kind is Duplicated and a not in grads}
        for array in scratch.values():
            array[0] = 0
        values = np.zeros(size, dtype=np.dtype(sig.ret.dtype)) if self.transform == "value_and_grad" else None
        flat: list[Any] = []
        for a, kind in enumerate(kinds):
            flat.append(first[a])
            if kind is Duplicated:
                flat.append(grads[a][0] if a in grads else scratch[a][0])
        result = fn(*flat)  # (the first-use check, and every argument check)
        for a in self._nums:
            if kinds[a] is Active:
                grads[a][0] = result.derivs[a]
        if values is not None:
            values[0] = result.primal
        if size > 1:
            bases: list[Any] = []
            strides, zero = [], []
            for slot in fn._slots:
                a, role = slot.arg, slot.role
                if role is Role.PRIMAL:
                    array, stride = self._argument(args, batched, a)
                elif role is Role.SHADOW:
                    array = grads[a] if a in grads else scratch[a]
                    stride = array.strides[0]
                elif role is Role.SEED:
                    array, stride = np.ones(1, dtype=np.dtype(slot.dtype)), 0
                elif role in (Role.ADJOINT_OUT, Role.GRADIENT_OUT) and a in grads:
                    array, stride = grads[a], grads[a].strides[0]
                elif role is Role.PRIMAL_OUT and values is not None:
                    array, stride = values, values.strides[0]
                else:
                    return None  # (not reached for grad's derivatives; the Python loop if it were)
                bases.append(array)  # (run_batch holds its buffer for the call)
                strides.append(stride)
                zero.append(array.strides[0] if role in (Role.SHADOW, Role.ADJOINT_OUT, Role.GRADIENT_OUT) else 0)
            if not self._loop(entry, bases, strides, size, zero):
                return None
        out = [grads[a] for a in self._nums]
        found = out[0] if self._single else tuple(out)
        return found if values is None else (values, found)


