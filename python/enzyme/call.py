"""Stage 6: load shared libraries with cffi and call them safely.

Each callable holds a *call plan* computed once: one converter per
argument, and the primal/shadow pairs to compare. Every check runs before
the native function is entered, so a bad argument is an exception and the
user's arrays are untouched. cffi's ABI mode releases the GIL during the
native call, so Python threads can run kernels in parallel.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import cffi
import numpy as np

from .errors import (
    ActivityError,
    ArgumentTypeError,
    ArgumentValueError,
    EnzymeError,
    ShadowTypeError,
    ShadowValueError,
)
from .signature import CType, Signature

if TYPE_CHECKING:  # only for annotations: the calling layer needs no other stage
    from .activity import DerivativeSpec
    from .codegen import GeneratedWrapper

__all__ = ["ReverseResult", "ForwardResult", "PrimalFunction", "DerivativeFunction",
           "load_symbol"]


class ReverseResult(NamedTuple):
    """Result of a reverse-mode call.

    ``derivs`` has one entry per argument: the adjoint (a float) for an
    ``Active`` argument, ``None`` otherwise (array adjoints are accumulated
    into their shadows). ``primal`` is the kernel's return value for
    ``ReverseWithPrimal``, else ``None``.
    """

    derivs: tuple
    primal: Any = None


class ForwardResult(NamedTuple):
    """Result of a forward-mode call: the return value's tangent (``None``
    for a void kernel or ``ret=Const``) and, with ``ForwardWithPrimal``, the
    return value itself."""

    tangent: Any = None
    primal: Any = None


_libraries: dict[tuple[str, str], tuple[cffi.FFI, Any]] = {}
_load_lock = threading.Lock()


def load_symbol(so_path: str, cdef: str, name: str) -> tuple[cffi.FFI, Any]:
    """dlopen a library (once per path and cdef) and return ``(ffi, function)``."""
    key = (so_path, cdef)
    with _load_lock:
        entry = _libraries.get(key)
        if entry is None:
            ffi = cffi.FFI()
            ffi.cdef(cdef)
            try:
                lib = ffi.dlopen(so_path)
            except OSError as exc:
                raise EnzymeError(f"cannot load the compiled library {so_path}: {exc}. "
                                  "Clear the cache (`python -m enzyme cache clear`) and retry.") from exc
            entry = (ffi, lib)
            _libraries[key] = entry
    ffi, lib = entry
    return ffi, getattr(lib, name)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"[:120]


def _scalar_converter(ctype: CType, what: str, error_type: type[Exception]) -> Callable[[Any], Any]:
    dtype = np.dtype(ctype.dtype)
    if ctype.is_float:
        def convert(value: Any) -> float:
            if isinstance(value, float):
                return value
            if isinstance(value, (int, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
                return float(value)
            if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fi":
                return float(value)
            raise error_type(f"{what} must be a real number (C `{ctype.spelling}`), got "
                             f"{_describe(value)}.")
        return convert
    if dtype.kind == "b":
        def convert_bool(value: Any) -> bool:
            if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                                        and value in (0, 1)):
                return bool(value)
            raise error_type(f"{what} must be a bool (C `{ctype.spelling}`), got {_describe(value)}.")
        return convert_bool
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def convert_int(value: Any) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            try:
                value = operator.index(value)  # 0-d integer arrays and similar
            except TypeError:
                raise error_type(f"{what} must be an integer (C `{ctype.spelling}`), got "
                                 f"{_describe(value)}.") from None
        value = int(value)
        if not low <= value <= high:
            raise ArgumentValueError(f"{what} = {value} does not fit C `{ctype.spelling}` "
                                     f"(range {low}..{high}).")
        return value
    return convert_int


def _array_converter(ffi: cffi.FFI, ctype: CType, what: str, writable: bool,
                     type_error: type[Exception], value_error: type[Exception]) -> Callable[[Any], Any]:
    dtype = np.dtype(ctype.dtype)
    c_array = f"{ctype.base}[]"
    from_buffer = ffi.from_buffer

    def convert(value: Any) -> Any:
        if type(value) is not np.ndarray:
            if isinstance(value, np.ndarray):
                value = value.view(np.ndarray)
            else:
                raise type_error(f"{what} must be a numpy array of dtype {dtype} (C "
                                 f"`{ctype.spelling}`), got {_describe(value)}. Convert it with "
                                 f"np.ascontiguousarray(x, dtype=np.{dtype}).")
        if value.dtype != dtype:
            raise type_error(f"{what} must have dtype {dtype} (C `{ctype.spelling}`), got "
                             f"{value.dtype}. Convert it with x.astype(np.{dtype}) (for an output, "
                             "convert before the call and read the converted array after).")
        if not value.flags.c_contiguous:
            raise value_error(f"{what} must be C-contiguous, got strides {value.strides}. Use "
                              "np.ascontiguousarray(x).")
        if writable and not value.flags.writeable:
            raise value_error(f"{what} is read-only, but the C code writes to it (C "
                              f"`{ctype.spelling}`, not const). Pass a writeable copy.")
        return from_buffer(c_array, value, require_writable=False)
    return convert


def _check_pair(primal: Any, shadow: Any, name: str) -> None:
    if shadow.shape != primal.shape:
        raise ShadowValueError(f"the shadow of '{name}' has shape {shadow.shape}, but its primal "
                               f"has shape {primal.shape}; use np.zeros_like({name}).")
    if shadow.size and np.may_share_memory(primal, shadow):
        raise ShadowValueError(f"the shadow of '{name}' shares memory with its primal; Enzyme "
                               "would read derivatives as values. Use a separate array, e.g. "
                               f"np.zeros_like({name}).")


class PrimalFunction:
    """A C function called with numpy arrays and Python scalars."""

    def __init__(self, signature: Signature, so_path: str, cdef: str) -> None:
        self.signature = signature
        self._ffi, self._fn = load_symbol(so_path, cdef, signature.name)
        self._convert = [
            _param_converter(self._ffi, p.ctype, f"argument '{p.name}' of {signature.name}",
                             writable=not p.ctype.const, shadow=False)
            for p in signature.params
        ]
        self._nargs = len(self._convert)

    def __call__(self, *args: Any) -> Any:
        if len(args) != self._nargs:
            raise ArgumentTypeError(f"{self.signature.name} takes {self._nargs} argument(s), "
                                    f"{len(args)} given. Signature: {self.signature}")
        converted = [conv(a) for conv, a in zip(self._convert, args)]
        return self._fn(*converted)


def _param_converter(ffi, ctype: CType, what: str, writable: bool, shadow: bool):
    type_error = ShadowTypeError if shadow else ArgumentTypeError
    value_error = ShadowValueError if shadow else ArgumentValueError
    if ctype.is_pointer:
        return _array_converter(ffi, ctype, what, writable, type_error, value_error)
    return _scalar_converter(ctype, what, type_error)


class DerivativeFunction:
    """A generated derivative entry point with its call plan.

    Called with the flat argument list of the declaration style: each
    primal, followed by its shadow when it has one; ``seed=`` for an Active
    return.
    """

    def __init__(self, spec: DerivativeSpec, wrapper: GeneratedWrapper, so_path: str) -> None:
        self.spec = spec
        self._ffi, self._fn = load_symbol(so_path, wrapper.cdef, wrapper.entry)
        ffi = self._ffi
        sig = spec.signature
        self._convert: list[Callable[[Any], Any]] = []
        self._pairs: list[tuple[int, int, str]] = []
        self._outputs: list[tuple[str, str, int]] = []  # (cffi type, role, arg)
        self._has_seed = False
        self._seed_convert = None
        position: dict[int, int] = {}
        for param in wrapper.params:
            name = sig.params[param.arg].name if param.arg >= 0 else "return"
            if param.role == "primal":
                position[param.arg] = len(self._convert)
                writable = param.ctype.is_pointer and not param.ctype.const
                self._convert.append(_param_converter(
                    ffi, param.ctype, f"argument '{name}' of {sig.name}", writable, shadow=False))
            elif param.role == "shadow":
                if param.ctype.is_pointer:
                    writable = spec.reverse or not param.ctype.const
                    self._pairs.append((position[param.arg], len(self._convert), name))
                else:
                    writable = False
                self._convert.append(_param_converter(
                    ffi, param.ctype, f"the shadow of '{name}' in {sig.name}", writable,
                    shadow=True))
            elif param.role == "seed":
                self._has_seed = True
                self._seed_convert = _scalar_converter(param.ctype, "seed", ArgumentTypeError)
            else:
                self._outputs.append((f"{param.ctype.base}[1]", param.role, param.arg))
        self._nflat = len(self._convert)
        self._nargs = len(sig.params)
        self._flat_names = [
            f"d{sig.params[p.arg].name}" if p.role == "shadow" else sig.params[p.arg].name
            for p in wrapper.params if p.role in ("primal", "shadow")
        ]

    def __call__(self, *args: Any, seed: Any = None) -> Any:
        if len(args) != self._nflat:
            raise ActivityError(
                f"this derivative of {self.spec.kernel} ({self.spec.pattern}) takes "
                f"{self._nflat} argument(s) ({', '.join(self._flat_names)}): each primal, "
                f"followed by its shadow when it has one; {len(args)} given.")
        converted = [conv(a) for conv, a in zip(self._convert, args)]
        for primal_pos, shadow_pos, name in self._pairs:
            _check_pair(args[primal_pos], args[shadow_pos], name)
        if self._has_seed:
            converted.append(self._seed_convert(1.0 if seed is None else seed))
        elif seed is not None:
            raise ActivityError(f"seed= only applies to an Active return; {self.spec.pattern} "
                                "has none.")
        outs = [self._ffi.new(t) for t, _, _ in self._outputs]
        self._fn(*converted, *outs)
        primal = None
        tangent = None
        derivs = [None] * self._nargs
        for out, (_, role, arg) in zip(outs, self._outputs):
            if role == "primal_out":
                primal = out[0]
            elif role == "tangent_out":
                tangent = out[0]
            else:
                derivs[arg] = out[0]
        if self.spec.reverse:
            return ReverseResult(tuple(derivs), primal)
        return ForwardResult(tangent, primal)


def flatten_annotations(annotations: Sequence[Any]) -> list[Any]:
    """The flat (primal, shadow, ...) argument list of annotation instances."""
    flat: list[Any] = []
    for annotation in annotations:
        flat.append(annotation.val)
        if hasattr(annotation, "dval"):
            flat.append(annotation.dval)
    return flat
