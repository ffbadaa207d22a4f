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
from collections.abc import Sequence
from typing import Any

import numpy as np

from .activity import Active, Duplicated, Reverse, ReverseWithPrimal
from .call import NativeEntry, native_entry, run_batch
from .errors import ArgumentTypeError, ArgumentValueError, OptionError, OptionTypeError
from .module import Kernel
from .params import Role
from .transforms import Transformed, _normalize_argnums, grad_annotations

__all__ = ["vmap", "Batched"]

_log = logging.getLogger("enzyme")


def vmap(fn: Kernel | Transformed, in_axes: int | None | Sequence[int | None] = 0,
         workers: int = 1) -> Batched:
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
        Threads the loop is spread over (1: the calling thread only). Needs
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


class Batched:
    """A kernel or gradient mapped over a batch (see :func:`vmap`)."""

    def __init__(self, fn: Any, in_axes: Any, workers: int) -> None:
        if isinstance(fn, Kernel):
            self.kernel, self.transform, self._nums, self._single = fn, None, (), False
        elif isinstance(fn, Transformed) and fn.transform in ("grad", "value_and_grad"):
            self.kernel, self.transform = fn.kernel, fn.transform
            self._nums, self._single = _normalize_argnums(fn.options["argnums"],
                                                          len(fn.kernel.signature.params))
        else:
            raise OptionTypeError(f"enzyme.vmap takes a kernel (mod.f), enzyme.grad(...) or "
                                  f"enzyme.value_and_grad(...), got {fn!r}.")
        self.fn = fn
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
        self.__name__ = f"vmap_{getattr(fn, '__name__', self.kernel.name)}"
        self.__doc__ = f"{getattr(fn, '__doc__', '')}\n\nMapped over axis 0 of: " + ", ".join(
            p.name for p, a in zip(sig.params, axes) if a == 0) + "."

    def __repr__(self) -> str:
        return f"<enzyme.vmap of {self.fn!r} in_axes={self.in_axes} workers={self.workers}>"

    def __call__(self, *args: Any) -> Any:
        sig = self.kernel.signature
        if len(args) != len(sig.params):
            raise ArgumentTypeError(f"'{sig.name}' takes {len(sig.params)} argument(s), {len(args)} "
                                    f"given. Signature: {sig}")
        batched, size = self._batched(args)
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
        entry, bases, strides, keep = plan
        if not run_batch(entry, bases, strides, 1, size, self.workers):
            self.kernel.module._check_open()  # (closed: says so)
            return False
        del keep
        return True

    def _plan(self, args: tuple, batched: dict[int, np.ndarray],
              outputs: list[np.ndarray]) -> tuple[NativeEntry, list[int], list[int], list[Any]] | None:
        kernel, sig = self.kernel, self.kernel.signature
        module = kernel.module
        if module.isolate or module._shadowed:
            return None
        for i, param in enumerate(sig.params):
            writable = param.ctype.is_pointer and not param.ctype.const
            if (writable and i not in batched) or param.ctype.is_struct or param.ctype.rows \
                    or param.ctype.is_function:
                return None  # (a written array shared by every element: the Python loop's order)
            # a written batch must not overlap another argument in any row (the
            # first element's checks saw row 0 only); the Python loop's checks
            # then say which element
            others = [a for j, a in enumerate(args) if j != i and isinstance(a, np.ndarray)]
            if writable and any(np.may_share_memory(batched[i], a) for a in others):
                return None
        keep: list[Any] = []

        def fixed(value: Any, dtype: Any) -> tuple[int, int]:
            array = np.ascontiguousarray(value, dtype=dtype)
            keep.append(array)
            return array.ctypes.data, 0

        def argument(i: int) -> tuple[int, int]:
            if i in batched:
                return batched[i].ctypes.data, batched[i].strides[0]
            value, ctype = args[i], sig.params[i].ctype
            if ctype.is_pointer:
                if not isinstance(value, np.ndarray) or not value.flags.c_contiguous:
                    raise _Fallback
                return value.ctypes.data, 0
            return fixed([value], np.dtype(ctype.dtype))

        def output(out: np.ndarray) -> tuple[int, int]:
            return out.ctypes.data, out.strides[0]

        try:
            if self.transform is None:
                packed = kernel.packed_primal()
                if packed is None:
                    return None
                entry, address = packed
                slots = [argument(i) for i in range(len(sig.params))]
                slots.append((address, 0))
                slots.append(output(outputs[0]) if outputs else (0, 0))
                return entry, [b for b, _ in slots], [s for _, s in slots], keep
            return self._derivative_plan(args, batched, outputs, argument, output, fixed, keep)
        except _Fallback:
            return None

    def _derivative_plan(self, args, batched, outputs, argument, output, fixed, keep):
        kernel = self.kernel
        first = self._element(args, batched, 0)
        annotations = grad_annotations(kernel, self._nums, first)
        kinds = tuple(type(a) for a in annotations)
        mode = Reverse if self.transform == "grad" else ReverseWithPrimal
        fn = kernel.derivative_function(mode, kinds, None)
        entry = native_entry(fn)
        if entry is None or fn.failed is not None or fn.first_call is not None:
            return None
        grads = outputs if self.transform == "grad" else outputs[1:]
        grad_of = dict(zip(self._nums, grads))
        slots = []
        for slot in fn._slots:
            a, role = slot.arg, slot.role
            if slot.lane:
                return None
            if role is Role.PRIMAL:
                slots.append(argument(a))
            elif role is Role.SHADOW and a in grad_of:
                slots.append(output(grad_of[a]))
            elif role is Role.SHADOW and kinds[a] is Duplicated and a in batched:
                scratch = np.zeros_like(batched[a])  # (the zero shadow grad gives a written array)
                keep.append(scratch)
                slots.append(output(scratch))
            elif role is Role.SEED:
                slots.append(fixed([1.0], np.dtype(slot.dtype)))
            elif role in (Role.ADJOINT_OUT, Role.GRADIENT_OUT) and kinds[a] is Active and a in grad_of:
                slots.append(output(grad_of[a]))
            elif role is Role.PRIMAL_OUT and a < 0 and self.transform == "value_and_grad":
                slots.append(output(outputs[0]))
            else:
                return None
        return entry, [b for b, _ in slots], [s for _, s in slots], keep


class _Fallback(Exception):
    """An argument the native loop does not take: the Python loop runs."""
