"""Stage 6: load shared libraries with cffi and call them safely.

Each callable holds a *call plan* computed once: one converter per
argument, and the primal/shadow pairs to compare. Every check runs before
the native function is entered, so a bad argument is an exception and the
user's arrays are untouched. cffi's ABI mode releases the GIL during the
native call, so Python threads can run kernels in parallel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, SupportsFloat, TypeVar, Union, overload

import cffi
import numpy as np
import numpy.typing as npt

from .errors import (
    ActivityError,
    ArgumentTypeError,
    ArgumentValueError,
    DerivativeMismatchError,
    DifferentiationError,
    EnzymeError,
    LengthError,
    LinkError,
    ModuleClosedError,
    NotPicklableError,
    ReentrantCallError,
    ShadowTypeError,
    ShadowValueError,
    TapeError,
    UnsupportedSignatureError,
)
from .params import Role, Slot, fast_plan_specs, primal_slots
from .signature import ContractValueError, CType, Signature, field_contracts, length_contracts
from .worker import IsolatedEntry

if TYPE_CHECKING:  # only for annotations: the calling layer needs no other stage
    from .activity import DerivativeSpec, HvpSpec
    from .codegen import GeneratedSplit, GeneratedWrapper
    from .signature import GlobalVar

__all__ = ["ReverseResult", "ForwardResult", "PrimalFunction", "DerivativeFunction", "NativeEntry",
           "native_entry", "run_batch", "HvpFunction", "SplitFunctions", "Tape", "tape_size", "load_symbol",
           "numpy_dtype", "global_view", "LoadedLibrary", "release_owner", "PERMANENT_OWNER", "aligned_zeros",
           "aligned_like", "CValue", "Adjoint", "Tangent", "FloatArray", "Derivative", "CArray", "CDType",
           "ForwardPass", "ReversePass"]

# The public types of the values the API hands back. What a call returns
# depends on the C code, which a type checker does not see: these say
# honestly what it can be, and a user narrows them (isinstance) where the C
# type is known to them.

# What a C function returns, as Python receives it: a float for double and
# float, an int for the integer types (a bool for _Bool), a numpy record
# (np.void) for a struct, None for void.
CValue = Union[float, int, np.void, None]
# One entry of ReverseResult.derivs: an Active argument's adjoint (a tuple of
# one per lane when batched), None for any other argument.
Adjoint = Union[float, tuple[float, ...], None]
# ForwardResult.tangent: the return value's tangent (a record for a struct;
# a tuple of one per lane when batched), None when there is none.
Tangent = Union[float, np.void, tuple[Union[float, np.void], ...], None]
# Arrays of C doubles or floats.
FloatArray = Union[npt.NDArray[np.float64], npt.NDArray[np.float32]]
# The derivative with respect to one argument, as the helpers (grad, vjp,
# ...) return it: a float for a scalar, an array shaped like an array
# argument (records for an array of structs).
Derivative = Union[float, FloatArray, npt.NDArray[np.void]]
# An array whose dtype follows a C type only known at run time (vmap of a
# kernel, a global's view, aligned_zeros of a kernel's dtype). generic[object]
# rather than numpy's default generic[Any], so that no Any reaches user code;
# a string, since numpy before 2.2 cannot subscript generic at run time.
CArray = npt.NDArray["np.generic[object]"]
CDType = np.dtype["np.generic[object]"]

_R = TypeVar("_R")
_ScalarT = TypeVar("_ScalarT", bound=np.generic)
# A seed: one number, or one per lane of a batched derivative.
_Seed = Union[SupportsFloat, Sequence[SupportsFloat], None]


class ReverseResult(NamedTuple):
    """Result of a reverse-mode call.

    ``derivs`` has one entry per argument: the adjoint (a float) for an
    ``Active`` argument, ``None`` otherwise (array adjoints are accumulated
    into their shadows). ``primal`` is the kernel's return value for
    ``ReverseWithPrimal``, else ``None``.
    """

    derivs: tuple[Adjoint, ...]
    primal: CValue = None


class ForwardResult(NamedTuple):
    """Result of a forward-mode call: the return value's tangent (``None``
    for a void kernel or ``ret=Const``) and, with ``ForwardWithPrimal``, the
    return value itself."""

    tangent: Tangent = None
    primal: CValue = None


class _PyGate:
    """The pure-Python twin of ``_fastcall.Gate`` (used when the extension
    was not built): the calls in flight into one library."""

    __slots__ = ("inflight", "closed", "_on_idle", "_lock")

    def __init__(self) -> None:
        self.inflight = 0
        self.closed = False
        self._on_idle: Callable[[], Any] | None = None
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.inflight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1
            idle = self._idle()
        if idle is not None:
            idle()

    def close(self, on_idle: Callable[[], Any] | None) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self._on_idle = on_idle
            idle = self._idle()
        if idle is not None:
            idle()
        return True

    def _idle(self) -> Callable[[], Any] | None:
        if self.closed and self.inflight == 0 and self._on_idle is not None:
            idle, self._on_idle = self._on_idle, None
            return idle
        return None


# The C fast path (native/fastcall.c), when the extension was built.
try:
    from . import _fastcall
except ImportError:  # a source checkout without the compiled extension
    _fastcall = None


class LoadedLibrary:
    """A dlopen'ed library, the owners (modules) using it and the gate its
    calls pass. It is unloaded once its last owner has released it and no
    call is in flight: every call enters the gate before native code runs
    and leaves it after, so a call into an unloaded library is an exception
    and a call in flight is never returned into unmapped memory."""

    __slots__ = ("key", "ffi", "lib", "owners", "gate")

    def __init__(self, key: tuple[str, str], ffi: cffi.FFI, lib: Any) -> None:
        self.key = key
        self.ffi = ffi
        self.lib = lib
        self.owners: set[int] = set()
        self.gate = _fastcall.Gate() if _fastcall is not None else _PyGate()

    @property
    def alive(self) -> bool:
        return not self.gate.closed

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` with the library held loaded for the call (raises
        ModuleClosedError if it was unloaded)."""
        gate = self.gate
        if not gate.enter():
            raise _closed(self)
        try:
            return fn(*args)
        finally:
            gate.leave()


class OwnedLock:
    """A lock held for a long operation (a derivative's build, its first-use
    check) that never deadlocks its own process: entered again from the
    thread holding it (a signal handler that runs while the thread is
    inside), it raises ReentrantCallError instead of waiting for itself; and
    a forked child finds it free (the thread that held it at the fork does
    not exist there)."""

    __slots__ = ("what", "reentrant", "_lock", "_depth", "__weakref__")
    _every: weakref.WeakSet[OwnedLock] = weakref.WeakSet()

    def __init__(self, what: str, reentrant: bool = False) -> None:
        self.what = what
        self.reentrant = reentrant  # nesting allowed (only the fork reset applies)
        # Reentrant inside, so that a handler running right after acquire()
        # returned (before the depth is counted) enters instead of hanging.
        self._lock = threading.RLock()
        self._depth = 0
        OwnedLock._every.add(self)

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self._depth += 1
        if self._depth > 1 and not self.reentrant:
            self._depth -= 1
            self._lock.release()
            raise ReentrantCallError(
                f"{self.what} was asked for again while this thread is already inside it "
                "(a signal handler that runs during the build or first-use check?). Call it "
                "outside the handler, or build it once before installing the handler.")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        self._lock.release()

    @classmethod
    def _reset_after_fork(cls) -> None:
        for lock in list(cls._every):
            lock._lock = threading.RLock()
            lock._depth = 0


os.register_at_fork(after_in_child=OwnedLock._reset_after_fork)


_libraries: dict[tuple[str, str], LoadedLibrary] = {}
_load_lock = threading.Lock()
# A forked child (the first-use check runs in one) has only the forking
# thread: the lock must be free at the fork, or a load there waits forever.
os.register_at_fork(before=_load_lock.acquire, after_in_parent=_load_lock.release,
                    after_in_child=_load_lock.release)
# Owner for libraries that must stay loaded for the life of the process
# (numpy views of their globals cannot be invalidated).
PERMANENT_OWNER = 0


def load_symbol(so_path: str, cdef: str, name: str,
                owner: int = PERMANENT_OWNER) -> tuple[cffi.FFI, Any, LoadedLibrary]:
    """dlopen a library (once per path and cdef) for ``owner``; return
    ``(ffi, symbol, library)``."""
    key = (so_path, cdef)
    with _load_lock:
        entry = _libraries.get(key)
        if entry is None:
            ffi = cffi.FFI()
            ffi.cdef(cdef)
            try:
                lib = ffi.dlopen(so_path)
            except OSError as exc:
                missing = re.search(r"undefined symbol: (\S+?)\.?(\s|$)", str(exc))
                if missing:
                    raise LinkError(
                        f"the compiled library {so_path} cannot be loaded: it calls "
                        f"{missing.group(1)}, which no library it was linked with defines. Fix: "
                        "pass the library that defines it with libraries= (and library_dirs=), "
                        "or define it in your sources.") from exc
                raise EnzymeError(f"cannot load the compiled library {so_path}: {exc}. "
                                  "Clear the cache (`python -m enzyme cache clear`) and retry.") from exc
            entry = _libraries[key] = LoadedLibrary(key, ffi, lib)
        entry.owners.add(owner)
    symbol = getattr(entry.lib, name)
    if not isinstance(symbol, entry.ffi.CData):
        # cffi's library object answers Python's own attribute names
        # (__init__, __class__ ...) before the library's symbols
        raise UnsupportedSignatureError(
            f"the C function '{name}' cannot be called from Python: its name is taken by a Python "
            "attribute of cffi's library object. Rename it (C reserves names starting with two "
            "underscores), or wrap it in a function with another name.")
    return entry.ffi, symbol, entry


def release_owner(owner: int) -> int:
    """Drop ``owner`` from every library; close those nobody owns any more
    (each is unloaded when its last call in flight returns). Returns how
    many libraries were closed."""
    closed = 0
    with _load_lock:
        for key, library in list(_libraries.items()):
            if owner in library.owners:
                library.owners.discard(owner)
                if not library.owners:
                    del _libraries[key]
                    library.gate.close(functools.partial(library.ffi.dlclose, library.lib))
                    closed += 1
    return closed


def _target(library: LoadedLibrary, fn: Any, so_path: str, cdef: str, name: str,
            slots: Sequence[Slot], what: str, isolate: bool) -> Any:
    """What a call runs: the entry point itself, or (isolate) its stand-in
    that runs it in the worker process (which copies back what the slots
    say the entry point may write)."""
    if not isolate:
        return fn
    passed_by_address = [s for s in slots if s.ctype.is_function or s.ctype.rows]
    if passed_by_address:
        # (an address in this process means nothing in the worker: a function,
        # or a table of row pointers)
        kind = "a function pointer" if passed_by_address[0].ctype.is_function else \
            "a table of row pointers (`double **`)"
        raise UnsupportedSignatureError(
            f"{what} takes {kind}, which a module compiled with isolate=True cannot pass to its "
            "worker process; compile it without isolate=True.")
    return IsolatedEntry(so_path, cdef, name, tuple(s.writable for s in slots), what,
                         library.ffi, fn)


def _invoker(library: LoadedLibrary, fn: Any, so_path: str, cdef: str, name: str,
             slots: Sequence[Slot], what: str, isolate: bool) -> Callable[..., Any]:
    """How a callable calls its entry point: in this process, or (isolate)
    in the worker process; either way through the library's gate."""
    return functools.partial(library.call,
                             _target(library, fn, so_path, cdef, name, slots, what, isolate))


def _closed(library: LoadedLibrary) -> EnzymeError:
    return ModuleClosedError(f"the module that owned {library.key[0]} was closed; compile it "
                             "again to call it.")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"[:120]


# Values that are never adopted as arrays (scalars, struct mappings, kernels
# are converted by their parameter's own converter)
_NOT_BUFFERS = (bool, int, float, complex, str, type(None), dict, np.generic)
_CFFI = cffi.FFI()  # (typeof works on cdata of any FFI instance)


def _adopt(value: Any) -> Any:
    """Another library's array as a numpy array sharing its memory, or the
    value unchanged when it is not one: DLPack (CPU torch tensors and
    ``jax.Array``), ``__array_interface__``, a cffi array of a C number
    type, and the buffer protocol (memoryview, bytearray, array.array).
    Nothing is copied, so an output written by C lands in the caller's
    object; what numpy marks read-only (a ``jax.Array``, a read-only
    memoryview) stays read-only and is refused as an output."""
    if isinstance(value, np.ndarray) or isinstance(value, _NOT_BUFFERS):
        return value
    try:
        if isinstance(value, _CFFI.CData):
            ctype = _CFFI.typeof(value)
            if ctype.kind != "array" or ctype.item.kind != "primitive":
                raise ArgumentTypeError(
                    f"a cffi {ctype.cname} is not an array of numbers: pass a cffi array "
                    "(ffi.new('double[]', n)) or a numpy array.")
            dtype = np.dtype(_CFFI_NUMBERS.get(ctype.item.cname, "V"))
            if dtype.kind == "V":
                raise ArgumentTypeError(f"a cffi {ctype.cname} has no numpy dtype: pass a numpy array.")
            return np.frombuffer(_CFFI.buffer(value), dtype=dtype)
        if callable(value):
            return value  # a kernel for a function pointer
        if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
            for lazy in ("is_neg", "is_conj"):
                # torch's lazy views (x.conj().imag, t._neg_view()) keep a
                # sign or conjugation in a flag that DLPack does not carry:
                # shared as they are, their values would be wrong
                flagged = getattr(value, lazy, None)
                if callable(flagged) and flagged():
                    fix = "resolve_neg" if lazy == "is_neg" else "resolve_conj"
                    raise ArgumentTypeError(
                        f"this tensor is a lazy {'negated' if lazy == 'is_neg' else 'conjugated'} "
                        f"view, which cannot be shared with C as it is: pass t.{fix}() (a copy).")
            return np.from_dlpack(value)
        if hasattr(value, "__array_interface__"):
            return np.asarray(value)
        return np.asarray(memoryview(value))
    except EnzymeError:
        raise
    except TypeError:
        return value  # not an array at all: the parameter's converter says what it needs
    except (BufferError, RuntimeError, ValueError) as exc:
        if "gradient" in str(exc):
            raise ArgumentTypeError("a torch tensor that requires grad cannot be shared with C: "
                                    "pass t.detach(), or use enzyme.torch.function for gradients "
                                    "that flow back to torch.") from None
        raise ArgumentTypeError(f"{type(value).__name__} could not be shared with C without a "
                                f"copy: {exc}. Pass a numpy array.") from None


# cffi's primitive C types that are numpy numbers
_CFFI_NUMBERS = {"double": "f8", "float": "f4", "int8_t": "i1", "uint8_t": "u1", "int16_t": "i2",
                 "uint16_t": "u2", "int32_t": "i4", "uint32_t": "u4", "int64_t": "i8",
                 "uint64_t": "u8", "int": "i4", "unsigned int": "u4", "long": "i8",
                 "unsigned long": "u8", "long long": "i8", "unsigned long long": "u8",
                 "short": "i2", "unsigned short": "u2", "signed char": "i1",
                 "unsigned char": "u1", "char": "i1", "size_t": "u8", "_Bool": "?"}


def _plain(value: Any) -> Any:
    """An ndarray subclass as a plain ndarray view of the same buffer: every
    check then reads the real shape and size, whatever the subclass's
    properties claim (a subclass whose ``shape`` lied passed the checks);
    another library's array as a numpy view of its memory (see _adopt)."""
    if type(value) is not np.ndarray:
        if isinstance(value, np.ndarray):
            return np.ndarray.view(value, np.ndarray)
        return _adopt(value)
    return value


def copy_inputs(signature: Signature, args: Sequence[Any]) -> tuple:
    """``args`` with each read-only array argument (a C ``const`` pointer to
    numbers) that is strided, of another dtype, or a list converted to a
    fresh C-contiguous array of the parameter's dtype (``copy=True`` of a
    call). Arrays the C code writes are never copied: the caller would not
    see what it wrote, so their checks still apply."""
    out = list(args)
    for i, (param, value) in enumerate(zip(signature.params, args)):
        ctype = param.ctype
        if not ctype.is_pointer or not ctype.const or ctype.is_function or ctype.is_struct \
                or ctype.holds_pointers or value is None or isinstance(value, (str, bytes, Mapping)):
            continue
        value = _plain(value)
        dtype = numpy_dtype(ctype)
        if isinstance(value, np.ndarray) and value.dtype == dtype and value.flags.c_contiguous:
            continue
        try:
            out[i] = np.ascontiguousarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ArgumentTypeError(f"argument '{param.name}' (C `{ctype.spelling}`) cannot be "
                                    f"converted to an array of {dtype}: {exc}") from None
    return tuple(out)


def adopt_arrays(args: Sequence[Any]) -> tuple:
    """``args`` with each array of another library (see _adopt) and each
    ndarray subclass as a plain numpy array sharing its memory."""
    return tuple(_plain_all(args))


def _plain_all(args: Sequence[Any]) -> Sequence[Any]:
    for value in args:
        if type(value) is not np.ndarray and not isinstance(value, _NOT_BUFFERS):
            return [_plain(v) for v in args]
    return args


def _callback_converter(ctype: CType, what: str, module_key: str,
                        candidates: Sequence[str] | None = None,
                        ffi: cffi.FFI | None = None) -> Callable[[Any], Any]:
    """A kernel passed for a function-pointer parameter: for a derivative,
    its index among the candidates the generated code dispatches on; for a
    primal call, its address. Only a kernel of the same module, of exactly
    the parameter's function type, is taken (duck-typed: the calling layer
    knows kernels only by ``callback_identity``)."""
    def kernel_name(value: Any) -> str:
        identity = getattr(value, "callback_identity", None)
        if identity is None:
            raise ArgumentTypeError(f"{what} is a function pointer (C `{ctype.spelling}`): pass a "
                                    f"kernel of the same module (mod.f), got {_describe(value)}.")
        key, name, fn_type = identity
        if key != module_key:
            raise ArgumentValueError(f"{what}: '{name}' is a kernel of another module; pass one "
                                     "compiled into this module (its own code is what is called "
                                     "and differentiated).")
        if fn_type != ctype.base:
            raise ArgumentTypeError(f"{what} must be a function of type `{ctype.base}`, but '{name}' "
                                    f"is `{fn_type}`.")
        return name

    if candidates is not None:
        def index(value: Any) -> int:
            name = kernel_name(value)
            if name not in candidates:
                raise ArgumentValueError(f"{what}: '{name}' cannot be passed here (a kernel cannot "
                                         "be its own callback).")
            return candidates.index(name)
        return index

    def address(value: Any) -> Any:
        kernel_name(value)
        return ffi.cast("void *", value.callback_address())
    return address


def _scalar_converter(ctype: CType, what: str, error_type: type[Exception]) -> Callable[[Any], Any]:
    dtype = np.dtype(ctype.dtype)
    if ctype.is_float:
        def convert(value: Any) -> float:
            if isinstance(value, float):
                return value
            if isinstance(value, (np.ndarray, np.generic)) and value.ndim == 0 \
                    and value.dtype.kind in "fiu":
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    return float(value)
                except OverflowError:
                    raise ArgumentValueError(f"{what} = {value} does not fit a C "
                                             f"`{ctype.spelling}` (an integer beyond 1.8e308)."
                                             ) from None
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


def _layout_format(spec: Any) -> Any:
    if isinstance(spec, dict):
        fields = {"names": spec["names"], "formats": [_layout_format(f) for f in spec["formats"]],
                  "offsets": spec["offsets"], "itemsize": spec["itemsize"]}
        dtype = np.dtype(fields)
        align = spec.get("align", 0)  # absent from layouts parsed before it was recorded
        try:
            aligned = np.dtype({**fields, "aligned": True})
        except ValueError:  # a packed struct: fields off their natural alignment
            aligned = None
        if aligned is not None and align and align % aligned.alignment == 0:
            dtype = aligned
        # numpy derives a structured dtype's alignment from its fields' (at
        # most 16 bytes, and 1 for a packed one); clang's, which may be more
        # (_Alignas(32)), travels as metadata for _array_converter to check.
        return np.dtype(dtype, metadata={"c_alignment": align}) if align else dtype
    if isinstance(spec, list):
        return (_layout_format(spec[0]), tuple(spec[1]))
    return np.dtype(spec)


def numpy_dtype(ctype: CType) -> np.dtype:
    """The numpy dtype of a parameter's elements: the scalar's own, or for a
    pointer to a C struct the structured dtype with clang's layout."""
    if ctype.kind in ("unsupported", "void") or not ctype.dtype:
        from .errors import UnsupportedSignatureError

        raise UnsupportedSignatureError(
            f"C `{ctype.spelling}` has no numpy dtype: {ctype.reason or 'not supported'}.")
    if ctype.is_struct:
        return _layout_format(json.loads(ctype.layout))
    return np.dtype(ctype.dtype)


def _array_converter(ffi: cffi.FFI, ctype: CType, what: str, writable: bool,
                     type_error: type[Exception], value_error: type[Exception]) -> Callable[[Any], Any]:
    dtype = numpy_dtype(ctype)
    # Struct pointers are passed opaquely (void *); numpy owns their layout.
    c_array = "char[]" if ctype.is_struct else f"{ctype.base}[]"
    from_buffer = ffi.from_buffer
    named = f"kernel.dtype('{what.split(chr(39))[1]}')" if ctype.is_struct and "'" in what else ""
    fix = f"build it with np.zeros(n, dtype={named})" if named else f"convert it with x.astype(np.{dtype})"
    # Code compiled for an over-aligned struct (_Alignas(32)) may move it with
    # aligned vector instructions, which fault on a misaligned address; numpy
    # allocates 16-byte aligned memory at best.
    alignment = max(dtype.alignment, (dtype.metadata or {}).get("c_alignment", 1)) \
        if ctype.is_struct else 1
    check_shape = _shape_check(ctype, what, value_error) if ctype.shape else None
    # (a shadow is written in reverse mode even when its primal is const)
    written_by = (f"the C code writes to it (C `{ctype.spelling}`, not const)" if not ctype.const
                  else "the derivative accumulates into it")

    def convert(value: Any) -> Any:
        if type(value) is not np.ndarray:
            value = _plain(value)  # (ndarray.view is not an overridable method)
            if type(value) is not np.ndarray:
                raise type_error(f"{what} must be an array of dtype {dtype} (C "
                                 f"`{ctype.spelling}`): a numpy array, or any buffer numpy can "
                                 "share (DLPack, __array_interface__, the buffer protocol), got "
                                 f"{_describe(value)}. Convert it with "
                                 f"np.ascontiguousarray(x, dtype=np.{dtype}).")
        if value.dtype != dtype:
            raise type_error(f"{what} must have dtype {dtype} (C `{ctype.spelling}`), got "
                             f"{value.dtype}. To fix it, {fix} (for an output, convert before "
                             "the call and read the converted array after).")
        if not value.flags.c_contiguous:
            raise value_error(f"{what} must be C-contiguous, got strides {value.strides}. Use "
                              "np.ascontiguousarray(x)" + (", or call with copy=True (inputs)."
                                                           if not writable else "."))
        if writable and not value.flags.writeable:
            raise value_error(f"{what} is read-only, but {written_by}. Pass a writeable array "
                              "(e.g. a copy).")
        if alignment > 1 and value.size and value.ctypes.data % alignment:
            raise value_error(
                f"{what} starts at address {value.ctypes.data:#x}, not a multiple of {alignment}: "
                f"C `{ctype.spelling}` is {alignment}-byte aligned, and the compiled code may move "
                "it with aligned vector instructions (a crash). numpy aligns new arrays to 16 "
                "bytes at most (np.zeros_like too): allocate it (and its shadows) with "
                f"enzyme.aligned_zeros(n, {named or 'dtype'}), or enzyme.aligned_like(x, "
                "copy=True) for a copy.")
        if check_shape is not None:
            check_shape(value)
        return from_buffer(c_array, value, require_writable=False)
    return convert


class _Indirect(NamedTuple):
    """What a converted argument that holds pointers (a row table, a struct
    of pointers) points to: ``keep`` keeps those arrays alive as long as
    it; ``spans`` (start, size, written?, label) are the memory the call
    reads and writes through it, for the overlap check; ``write_back``
    copies what the call wrote into the struct back to the user's object."""

    keep: Any
    spans: tuple[tuple[int, int, bool, str], ...]
    write_back: Callable[[], None] | None = None


# A converted argument holding pointers -> what it points to (see _Indirect)
_INDIRECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CData = _CFFI.CData  # (converted scalars are Python numbers: not weak-referenceable)


def _write_back(converted: Sequence[Any]) -> None:
    """After a call: copy the scalar fields a call wrote into a struct of
    pointers back to the mapping it was built from."""
    if not _INDIRECT:
        return
    for cdata in converted:
        entry = _INDIRECT.get(cdata) if isinstance(cdata, _CData) else None
        if entry is not None and entry.write_back is not None:
            entry.write_back()


def _rows_converter(ffi: cffi.FFI, ctype: CType, what: str, writable: bool,
                    type_error: type[Exception], value_error: type[Exception]) -> Callable[[Any], Any]:
    """A 2-D array for a `double **` parameter: checked like any array (as
    a whole), then passed as a fresh table of pointers to its rows."""
    flat = _array_converter(ffi, dataclasses.replace(ctype, rows=False), what, writable,
                            type_error, value_error)
    element = f"{ctype.base} *"

    def convert(value: Any) -> Any:
        value = _plain(value)
        if isinstance(value, np.ndarray) and value.ndim != 2:
            raise value_error(f"{what} must be a 2-D array (C `{ctype.spelling}`: a table of "
                              f"rows), got shape {value.shape}.")
        data = flat(value)  # dtype, contiguity, writability
        rows, stride = value.shape[0], value.strides[0]
        table = ffi.new(f"{element}[]", max(rows, 1))
        start = int(ffi.cast("uintptr_t", data))
        for i in range(rows):
            table[i] = ffi.cast(element, start + i * stride)
        _INDIRECT[table] = _Indirect(value, ((start, value.nbytes, writable, what),))
        return table
    return convert


def _struct_of_pointers_converter(ffi: cffi.FFI, ctype: CType, what: str, writable: bool,
                                  type_error: type[Exception],
                                  value_error: type[Exception]) -> Callable[[Any], Any]:
    """A mapping (or an object with attributes) of a struct's fields for a
    pointer to a struct holding pointers: the package builds the C struct,
    each pointer field pointing at its numpy array (checked like any array
    argument), and after the call copies the scalar fields back into a
    mutable mapping when the C code may write them (for a shadow in reverse
    mode, the adjoints of its floating fields)."""
    dtype = numpy_dtype(ctype)
    pointers = {field["name"]: field for field in ctype.pointer_fields}
    scalars = [name for name in dtype.names if name not in pointers]
    arrays = {
        name: _array_converter(
            ffi, CType("pointer", f"{'const ' if f['const'] else ''}{f['base']} *", f["base"],
                       f["dtype"], const=f["const"]),
            f"field '{name}' of {what}", writable and not f["const"], type_error, value_error)
        for name, f in pointers.items()}
    # sizes={"m.x": "n"}: pointer field x needs n elements, n a field of the struct
    contracts = field_contracts(ctype, what)
    field_names = list(dtype.names)

    def convert(value: Any) -> Any:
        mapping = isinstance(value, Mapping)
        if mapping:
            missing = [n for n in dtype.names if n not in value]
        elif isinstance(value, np.ndarray) or value is None or isinstance(value, (int, float, str)):
            raise type_error(f"{what} points to a struct holding pointers (C `{ctype.spelling}`): "
                             f"pass a dict of its fields {{{', '.join(dtype.names)}}} (arrays for "
                             f"the pointer fields), got {_describe(value)}.")
        else:
            missing = [n for n in dtype.names if not hasattr(value, n)]
        if missing:
            raise type_error(f"{what} (C `{ctype.spelling}`) lacks the field(s) {', '.join(missing)}; "
                             f"give every field: {', '.join(dtype.names)}.")
        get = value.__getitem__ if mapping else (lambda n: getattr(value, n))
        if writable and scalars and not isinstance(value, MutableMapping):
            raise type_error(f"{what}: the C code may write the struct's fields, which are copied "
                             "back after the call: pass a dict (a mutable mapping).")
        record = aligned_zeros(1, dtype)
        for name in scalars:
            field = get(name)
            if isinstance(field, (bool, np.bool_)) or not isinstance(
                    field, (int, float, np.integer, np.floating)) and np.ndim(field) == 0:
                raise type_error(f"field '{name}' of {what} must be a number, got {_describe(field)}.")
            try:
                with np.errstate(over="raise", invalid="raise"):
                    record[name] = field
                # (a float field rounds, as C would; an integer must fit exactly)
                if dtype.fields[name][0].base.kind in "iu" and np.any(record[name] != np.asarray(field)):
                    raise ValueError("it does not fit the C type")
            except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
                raise value_error(f"field '{name}' of {what} cannot be {field!r} (C type "
                                  f"{dtype.fields[name][0]}): {exc}.") from None
        keep, spans = [record], []
        for name, convert_array in arrays.items():
            array = get(name)
            cdata = convert_array(array)
            keep.append(cdata)
            start = int(ffi.cast("uintptr_t", cdata))
            record[name] = start
            spans.append((start, ffi.sizeof(cdata), writable and not pointers[name]["const"],
                          f"field '{name}' of {what}"))
        for contract in contracts:
            field = f"field '{contract.name}' of {what}"
            _enforce_contract(contract, [int(record[field_names[i]][0]) for i in contract.uses],
                              np.asarray(get(contract.name)).size, field, field)
        buffer = ffi.from_buffer("char[]", record, require_writable=False)

        def write_back() -> None:
            for name in scalars:
                value[name] = record[name][0].item() if record[name].ndim == 1 else record[name][0].copy()
        _INDIRECT[buffer] = _Indirect(keep, tuple(spans), write_back if writable and scalars else None)
        return buffer
    return convert


def _shape_check(ctype: CType, what: str, value_error: type[Exception]) -> Callable[[Any], None]:
    """The check of an array parameter's declared shape: ``double r[3][3]``
    takes an array of shape (n, 3) with n >= 3, ``double (*p)[4]`` one of
    shape (n, 4); a one-dimensional ``double a[5]`` at least 5 elements of
    any shape. (C passes the address only: a smaller array would be read
    past its end.)"""
    lead, trailing = ctype.shape[0], ctype.shape[1:]
    wanted = f"({'n' if not lead else f'n >= {lead}'}, {', '.join(map(str, trailing))})"

    def check(value: np.ndarray) -> None:
        if not trailing:
            if value.size < lead:
                raise value_error(f"{what} must have at least {lead} elements (C "
                                  f"`{ctype.spelling}`), got {value.size}.")
            return
        if value.ndim != len(ctype.shape) or value.shape[1:] != trailing:
            raise value_error(f"{what} must have shape {wanted} (C `{ctype.spelling}`: rows of "
                              f"{' x '.join(map(str, trailing))}), got shape {value.shape}. Fix: "
                              f"reshape it, e.g. x.reshape(-1, {', '.join(map(str, trailing))}).")
        if value.shape[0] < lead:
            raise value_error(f"{what} must have at least {lead} rows (C `{ctype.spelling}`), "
                              f"got shape {value.shape}.")
    return check


# A dtype the type checker knows (np.float64) gives an array of it; any other
# (a struct dtype from kernel.dtype(), "f8") an array of some dtype.
@overload
def aligned_zeros(shape: int | tuple[int, ...],
                  dtype: np.dtype[_ScalarT] | type[_ScalarT]) -> npt.NDArray[_ScalarT]: ...
@overload
def aligned_zeros(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> CArray: ...
def aligned_zeros(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.zeros`` that honours the C alignment of a struct dtype from
    ``kernel.dtype()`` (``_Alignas(32)`` and the like; numpy aligns to 16
    bytes at most).

    Examples
    --------
    >>> import numpy as np
    >>> dt = np.dtype(np.float64, metadata={"c_alignment": 64})
    >>> aligned_zeros(3, dt).ctypes.data % 64
    0
    """
    try:
        dtype = np.dtype(dtype)
        align = int((dtype.metadata or {}).get("c_alignment", 0))
        if align <= 16:
            return np.zeros(shape, dtype)
        count = int(np.prod(shape))
        if count < 0:
            raise ValueError("negative dimensions are not allowed")
    except TypeError as exc:
        raise ArgumentTypeError(f"aligned_zeros({shape!r}, {dtype!r}): {exc}.") from None
    except (ValueError, MemoryError, OverflowError) as exc:
        raise ArgumentValueError(f"aligned_zeros({shape!r}, {dtype!r}): {exc}.") from None
    buffer = np.zeros(count * dtype.itemsize + align, np.uint8)
    start = -buffer.ctypes.data % align
    return buffer[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def aligned_like(value: npt.NDArray[_ScalarT], copy: bool = False) -> npt.NDArray[_ScalarT]:
    """A C-contiguous array shaped like ``value`` (zeros, or a copy of it)
    with its dtype's C alignment."""
    if not isinstance(value, np.ndarray):
        raise ArgumentTypeError(f"aligned_like takes a numpy array, got {_describe(value)}.")
    out = aligned_zeros(value.shape, value.dtype)
    if copy:
        out[...] = value
    return out


def _check_pair(primal: Any, shadow: Any, name: str) -> None:
    if not isinstance(primal, np.ndarray) or not isinstance(shadow, np.ndarray):
        # a struct of pointers: its shadow's arrays pair with the primal's
        fields = primal.items() if isinstance(primal, Mapping) else vars(primal).items() \
            if hasattr(primal, "__dict__") else ()
        for field, array in fields:
            if isinstance(array, np.ndarray):
                other = shadow.get(field) if isinstance(shadow, Mapping) else getattr(shadow, field, None)
                if isinstance(other, np.ndarray):
                    _check_pair(array, other, f"{name}.{field}")
        return
    if shadow.shape != primal.shape:
        raise ShadowValueError(f"the shadow of '{name}' has shape {shadow.shape}, but its primal "
                               f"has shape {primal.shape}; use np.zeros_like({name}).")
    if shadow.size and np.may_share_memory(primal, shadow):
        raise ShadowValueError(f"the shadow of '{name}' shares memory with its primal; Enzyme "
                               "would read derivatives as values. Use a separate array, e.g. "
                               f"np.zeros_like({name}).")


def _length_plan(signature: Signature, position: dict[int, int]) -> list[tuple]:
    """(flat position of the array, flat positions of the integers it reads,
    contract) for every length contract of the signature."""
    # A contract counts C elements: rows, for a multidimensional array or a
    # table of rows (-1: the array's first extent).
    return [(position[c.param], tuple(position[u] for u in c.uses), c,
             -1 if signature.params[c.param].ctype.rows
             else math.prod(signature.params[c.param].ctype.shape[1:]))
            for c in length_contracts(signature)]


def _check_lengths(plan: list[tuple], args: Sequence[Any], converted: Sequence[Any],
                   kernel: str) -> None:
    """Every array must hold at least as many elements as its contract says;
    the integers are the converted (range-checked) ones."""
    for array_pos, use_pos, contract, row in plan:
        array = args[array_pos]
        size = (array.shape[0] if array.ndim else 1) if row < 0 else array.size // row
        _enforce_contract(contract, [converted[u] for u in use_pos], size,
                          f"argument '{contract.name}' of {kernel}", f"'{contract.name}' in {kernel}",
                          "rows" if row > 1 or row < 0 else "elements")


def _enforce_contract(contract: Any, values: Sequence[int], size: int, subject: str,
                      length_of: str, unit: str = "elements") -> None:
    """Raise LengthError unless ``size`` meets ``contract`` evaluated on the
    integer ``values`` (an argument's, or a struct field's)."""
    try:
        needed = contract.evaluate(values)
        problem = "" if needed >= 0 else f"= {needed}, is negative"
    except ContractValueError as exc:
        needed, problem = 0, f"{exc} in C arithmetic"
    if problem or size < needed:
        bound = ", ".join(f"{name}={v}" for name, v in zip(contract.names, values))
        if problem:
            raise LengthError(f"the length of {length_of}, {contract.expression} with {bound}, "
                              f"{problem}; nothing was called.")
        raise LengthError(f"{subject} needs at least {needed} {unit} ({contract.expression} with "
                          f"{bound}), but has {size}.")


def _out_cell(ffi: cffi.FFI, ctype: CType) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """How to allocate a scalar result slot and read it back: a one-element C
    array, or for a struct returned by value a buffer read as a numpy record."""
    if ctype.kind == "struct":
        dtype = numpy_dtype(ctype)
        return (lambda: ffi.new("char[]", dtype.itemsize),
                lambda cell: np.frombuffer(ffi.buffer(cell), dtype)[0].copy())
    c_type = f"{ctype.base}[1]"
    return (lambda: ffi.new(c_type)), (lambda cell: cell[0])


class PrimalFunction:
    """A C function called with numpy arrays and Python scalars. A kernel
    returning a struct is called through its generated void wrapper
    (``entry``), and the struct comes back as a numpy record."""

    def __init__(self, signature: Signature, so_path: str, cdef: str, entry: str | None = None,
                 owner: int = PERMANENT_OWNER, isolate: bool = False, module_key: str = "") -> None:
        self.signature = signature
        self._ffi, self._fn, self._library = load_symbol(so_path, cdef, entry or signature.name, owner)
        self._isolate = isolate or bool(entry)  # (a struct result: through its wrapper only)
        # (the gate is entered inline below: the primal call is the hot one)
        self._gate = self._library.gate
        slots = primal_slots(signature, struct_out=bool(entry))
        self._target = _target(self._library, self._fn, so_path, cdef, entry or signature.name,
                               slots, f"the kernel '{signature.name}'", isolate)
        self._out = _out_cell(self._ffi, signature.ret) if entry else None
        self._convert = _primal_converters(self._ffi, signature, slots, module_key)
        self._writes_back = any(s.ctype.holds_pointers for s in slots)
        self._nargs = len(self._convert)
        self._lengths = _length_plan(signature, {i: i for i in range(self._nargs)})

    def __call__(self, *args: Any) -> Any:
        if len(args) != self._nargs:
            raise ArgumentTypeError(f"{self.signature.name} takes {self._nargs} argument(s), "
                                    f"{len(args)} given. Signature: {self.signature}")
        converted = [conv(a) for conv, a in zip(self._convert, args)]
        if self._lengths:  # (the converters already see a subclass's real buffer)
            args = _plain_all(args)
            _check_lengths(self._lengths, args, converted, self.signature.name)
        out = self._out
        if out is not None:
            cell = out[0]()
            converted.append(cell)
        gate = self._gate
        if not gate.enter():
            raise _closed(self._library)
        try:
            result = self._target(*converted)
        finally:
            gate.leave()
        if self._writes_back:
            _write_back(converted)
        return result if out is None else out[1](cell)


def _primal_converters(ffi: cffi.FFI, signature: Signature, slots: Sequence[Slot],
                       module_key: str, callbacks: dict[int, tuple[str, ...]] | None = None,
                       ) -> list[Callable[[Any], Any]]:
    """One converter per parameter for a call with primal arguments only,
    each as writable as its slot (a function pointer: its address, or with
    ``callbacks``, its index among the candidates)."""
    primals = sorted((s for s in slots if s.role in (Role.PRIMAL, Role.CALLBACK)),
                     key=lambda s: s.arg)
    out = []
    for s in primals:
        what = f"argument '{signature.params[s.arg].name}' of {signature.name}"
        if s.ctype.is_function:
            out.append(_callback_converter(s.ctype, what, module_key,
                                           (callbacks or {}).get(s.arg) if s.role is Role.CALLBACK
                                           else None, ffi))
        else:
            out.append(_param_converter(ffi, s.ctype, what, writable=s.writable, shadow=False))
    return out


def _param_converter(ffi, ctype: CType, what: str, writable: bool, shadow: bool):
    type_error = ShadowTypeError if shadow else ArgumentTypeError
    value_error = ShadowValueError if shadow else ArgumentValueError
    if ctype.holds_pointers:
        return _struct_of_pointers_converter(ffi, ctype, what, writable, type_error, value_error)
    if ctype.rows:
        return _rows_converter(ffi, ctype, what, writable, type_error, value_error)
    if ctype.is_pointer:
        return _array_converter(ffi, ctype, what, writable, type_error, value_error)
    return _scalar_converter(ctype, what, type_error)


def _lanes(values: Any, width: int, what: str) -> tuple:
    """The W shadows of a batched argument: a sequence, or an array whose
    first axis runs over the lanes."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") \
            or (isinstance(values, np.ndarray) and values.ndim == 0):
        raise ShadowTypeError(f"{what} must be a sequence of {width} shadows (one per batch "
                              f"lane), got {_describe(values)}.")
    # Taken once, and counted as taken: len() of a sequence may disagree
    # with what iterating it yields.
    lanes = tuple(_plain(v) for v in _plain(values))
    if len(lanes) != width:
        raise ShadowValueError(f"{what} has {len(lanes)} shadows, but this derivative was "
                               f"built for width {width}.")
    return lanes


def _check_no_overlap(ffi: cffi.FFI, entries: Sequence[tuple[Any, bool, str]]) -> None:
    """Raise when a buffer the derivative writes overlaps any other buffer of
    the call. ``entries`` are (converted array, written?, label). Enzyme
    assumes that arguments do not alias: an output overlapping an input, or
    two shadows sharing memory, gives silently wrong derivatives (one lane's
    or argument's derivative written over another's). Read-only buffers may
    share memory."""
    spans = []
    for cdata, written, label in entries:
        indirect = _INDIRECT.get(cdata) if _INDIRECT and isinstance(cdata, _CData) else None
        if indirect is not None:  # a row table or a struct: the memory it points to
            for start, size, written_there, what in indirect.spans:
                if size:
                    spans.append((start, start + size, written and written_there, what))
            continue
        size = ffi.sizeof(cdata)
        start = int(ffi.cast("uintptr_t", cdata))
        if size:
            spans.append((start, start + size, written, label))
    spans.sort()
    for i, (_, end, written, label) in enumerate(spans):
        for other_start, _, other_written, other_label in spans[i + 1:]:
            if other_start >= end:
                break
            if written or other_written:
                both = f"{label} and {other_label}"
                error = ShadowValueError if "shadow" in both else ArgumentValueError
                raise error(f"{both} share memory, and the derivative writes "
                            f"{label if written else other_label}. Enzyme assumes the buffers of a "
                            "call do not overlap: give each its own array (e.g. np.zeros_like(x), "
                            "or rows of np.zeros((W, *x.shape)) for batched shadows).")




if _fastcall is not None and os.environ.get("ENZYME_NO_MALLOC_TUNING", "") != "1":
    # Enzyme mallocs and frees its tape on every reverse call: keep blocks up
    # to 64 MiB in the heap instead of a fresh mmap (and page faults) each
    # time. See native/fastcall.c; ENZYME_NO_MALLOC_TUNING=1 leaves glibc's
    # defaults alone.
    _fastcall.tune_malloc(64 << 20, 128 << 20)


def fast_path_enabled() -> bool:
    return _fastcall is not None and os.environ.get("ENZYME_NO_FASTCALL", "") != "1"


def _fast_plan(fn: DerivativeFunction, wrapper: GeneratedWrapper) -> Any:
    """A C Plan doing this derivative's checks and call, or None when the
    call plan has something only the Python path handles (batches, length
    contracts, and what :func:`params.fast_plan_specs` refuses)."""
    if not fast_path_enabled() or fn._batched or fn._lengths:
        return None
    planned = fast_plan_specs(fn._slots)
    if planned is None:
        return None
    specs, nseeds, seed_value, outs = planned
    address = int(fn._ffi.cast("uintptr_t", getattr(fn._library.lib, wrapper.packed_entry)))
    try:
        return _fastcall.Plan(address, fn._library.gate, np.ndarray, specs,
                              tuple((p, s) for p, s, _ in fn._pairs), nseeds, seed_value, outs)
    except ValueError:  # more arguments than the fast path has slots for
        return None


def _native_entry(ffi: Any, library: Any, name: str, isolate: bool, batch: str = "") -> NativeEntry | None:
    if isolate or not name or _fastcall is None:
        return None
    return NativeEntry(int(ffi.cast("uintptr_t", getattr(library.lib, name))), library.gate,
                       int(ffi.cast("uintptr_t", getattr(library.lib, batch))) if batch else 0)


@dataclasses.dataclass(frozen=True)
class NativeEntry:
    """An entry point for native callers outside Python (the XLA custom
    call of enzyme.jax, enzyme.vmap's loop): the address of a ``void
    f(void **slots)`` or of the kernel itself, its library's gate, and the
    address of its batch twin. Such callers cannot enter the
    gate; :meth:`closed_flag` pins the library (it is never unloaded) and
    gives the address of the flag its close() sets, to read before each
    call."""

    address: int
    gate: Any
    batch: int = 0  # the batch twin (see codegen.GeneratedWrapper.batch_entry), if any

    def closed_flag(self) -> int:
        return int(self.gate.pin())


def run_batch(entry: NativeEntry, bases: Sequence[Any], strides: Sequence[int], start: int, stop: int,
              workers: int = 1, zero: Sequence[int] | None = None) -> bool:
    """Call an entry point's batch twin for the elements ``i`` of ``[start,
    stop)``, with slot ``k`` at ``bases[k] + i * strides[k]`` (a base is an
    address or a C-contiguous array, whose buffer is held for the call; the
    first ``zero[k]`` bytes zeroed before the call, for written slots), without the
    GIL, on ``workers`` threads (native/fastcall.c). False when the library's
    gate is closed (nothing ran). The caller has checked every buffer."""
    return bool(_fastcall.run_batch(entry.batch, entry.gate, tuple(bases), tuple(strides),
                                    tuple(zero) if zero is not None else (0,) * len(bases), start, stop,
                                    workers))


def native_entry(fn: DerivativeFunction | PrimalFunction) -> NativeEntry | None:
    """The packed twin of a derivative, or the kernel of a primal function,
    for native callers; None where calls must stay in Python (an isolated
    module, no C fast path)."""
    if isinstance(fn, PrimalFunction):
        return _native_entry(fn._ffi, fn._library, fn.signature.name, fn._isolate)
    return fn._native


def _check_in_progress(fn: Any, *args: Any) -> None:
    """The marker of a first-use check that is running (see _CheckedOnce)."""


class _CheckedOnce:
    """A check to run once, before the first call (the orchestrator sets
    ``first_call``: the first-use self-check of a derivative). An error it
    raised is raised again by every later call."""

    # Slots (here and in DerivativeFunction): attribute access on the
    # per-call path stays fast, and the per-handle copies of derivative()
    # (copy.copy) keep it (a copied instance dict made calls ~100 ns slower).
    __slots__ = ("first_call", "failed", "_first_lock", "_handle", "_check_rearmed", "__dict__")
    first_call: Callable[..., None] | None
    failed: Exception | None

    def __copy__(self) -> Any:
        # (explicit: __reduce__ below rebuilds, which a copy must not do)
        cls = type(self)
        new = cls.__new__(cls)
        for klass in cls.__mro__:
            for name in getattr(klass, "__slots__", ()):
                if name != "__dict__" and hasattr(self, name):
                    object.__setattr__(new, name, getattr(self, name))
        new.__dict__.update(self.__dict__)
        return new

    def __reduce__(self) -> Any:
        """Pickled as the public call that made it (``made_by``, set by
        derivative() and autodiff_thunk()), rebuilt from the cache on the
        other side; the module's shared original has none."""
        made_by = self.__dict__.get("made_by")
        if made_by is None:
            raise NotPicklableError(
                f"this derivative of {self.spec.kernel} is the module's internal copy: pickle "
                "what enzyme.derivative(...) or autodiff_thunk(...) returned, or the kernel.")
        return made_by

    def _init_checked_once(self) -> None:
        self.first_call = None
        self.failed = None
        self._first_lock = OwnedLock("the first-use check of this derivative")
        # The module handle a copy given to the user belongs to (anything
        # with a ``_closed`` flag); None for the module's shared original.
        self._handle: Any = None

    def _handle_closed(self) -> ModuleClosedError:
        return ModuleClosedError(f"the module of this derivative of {self.spec.kernel} was "
                                 "closed; compile it again to use it.")

    def _prepare(self, *call_args: Any) -> Any:
        """Check and convert a call's arguments (raising what the call would
        raise), without calling."""
        raise NotImplementedError

    def _run_first_call(self, *check_args: Any) -> None:
        # While the check runs, first_call holds _check_in_progress: other
        # threads wait here for its verdict, a signal handler on the checking
        # thread gets ReentrantCallError from the lock, and the check's own
        # calls (in its forked child, where the lock is free) go through.
        with self._first_lock:
            check = self.first_call
            if check is not None and check is not _check_in_progress:
                # Arguments the call itself refuses raise its error here, and
                # the check stays armed for the next call: a first call with a
                # typo must not leave the derivative unchecked for good.
                self._prepare(*check_args)
                self.first_call = _check_in_progress
                try:
                    check(self, *check_args)
                except (DerivativeMismatchError, DifferentiationError) as err:
                    self.failed = err  # refused (wrong, or crashing): every later call too
                finally:
                    if self.first_call is _check_in_progress:  # (the check may re-arm itself)
                        self.first_call = None
        if self.failed is not None:
            raise self.failed


class DerivativeFunction(_CheckedOnce, Generic[_R]):
    """A generated derivative entry point with its call plan.

    Called with the flat argument list of the declaration style: each
    primal, followed by its shadow when it has one (for a batched derivative,
    a sequence of ``width`` shadows); ``seed=`` for an Active return. ``_R``
    is what a call returns (ReverseResult or ForwardResult, by the mode).
    """

    __slots__ = ("spec", "so_path", "_ffi", "_fn", "_library", "_invoke", "_width", "_batched",
                 "_convert", "_group", "_buffers", "_pairs", "_outputs", "_has_seed", "_seed_convert",
                 "_slots", "_nflat", "_nargs", "_lengths", "_fast", "_fixed_result", "_flat_names",
                 "_writes_back", "_native")

    def __init__(self, spec: DerivativeSpec, wrapper: GeneratedWrapper, so_path: str,
                 owner: int = PERMANENT_OWNER, isolate: bool = False) -> None:
        self.spec = spec
        self.so_path = so_path
        self._ffi, self._fn, self._library = load_symbol(so_path, wrapper.cdef, wrapper.entry, owner)
        self._invoke = _invoker(self._library, self._fn, so_path, wrapper.cdef, wrapper.entry,
                                wrapper.params,
                                f"the derivative {spec.pattern} of '{spec.kernel}'", isolate)
        self._init_checked_once()
        ffi = self._ffi
        sig = spec.signature
        self._width = spec.width
        self._batched = spec.batched
        self._convert: list[Callable[[Any], Any]] = []  # per flat argument (per lane for groups)
        self._group: list[str] = []  # "" or, for a flat argument holding W lanes, what they are
        # (flat position, written?, label) of every array: no written one may
        # overlap another buffer of the call
        self._buffers: list[tuple[int, bool, str]] = []
        self._pairs: list[tuple[int, int, str]] = []
        self._outputs: list[tuple[Callable, Callable, str, int]] = []  # (allocate, read, role, arg)
        self._has_seed = False
        self._seed_convert = None
        position: dict[int, int] = {}
        # Every check below reads what a slot may be from the one model
        # (params.Slot), as the C fast path's plan does.
        self._slots = wrapper.params
        for slot in self._slots:
            name = sig.params[slot.arg].name if slot.arg >= 0 else "return"
            if slot.role is Role.PRIMAL:
                position[slot.arg] = len(self._convert)
                if slot.pointer:
                    self._buffers.append((len(self._convert), slot.writable, f"argument '{name}'"))
                self._convert.append(_param_converter(
                    ffi, slot.ctype, f"argument '{name}' of {sig.name}", slot.writable,
                    shadow=False))
                self._group.append("")
            elif slot.role is Role.SHADOW:
                if slot.lane:
                    continue  # one flat argument holds all lanes
                if slot.pointer:
                    self._pairs.append((position[slot.arg], len(self._convert), name))
                    self._buffers.append((len(self._convert), slot.writable,
                                          f"the shadow of '{name}'"))
                self._convert.append(_param_converter(
                    ffi, slot.ctype, f"the shadow of '{name}' in {sig.name}", slot.writable,
                    shadow=True))
                self._group.append(f"the shadows of '{name}'" if self._batched else "")
            elif slot.role is Role.CALLBACK:
                position[slot.arg] = len(self._convert)
                self._convert.append(_callback_converter(
                    slot.ctype, f"argument '{name}' of {sig.name}", spec.callback_module,
                    dict(spec.callbacks)[slot.arg]))
                self._group.append("")
            elif slot.role is Role.SEED:
                if not slot.lane:
                    self._has_seed = True
                    self._seed_convert = _scalar_converter(slot.ctype, "seed", ArgumentTypeError)
            else:
                self._outputs.append((*_out_cell(ffi, slot.ctype), slot.role, slot.arg))
        self._nflat = len(self._convert)
        self._nargs = len(sig.params)
        self._lengths = _length_plan(sig, position)
        self._writes_back = any(s.ctype.holds_pointers for s in self._slots)
        self._fast = _fast_plan(self, wrapper) if wrapper.packed_entry and not isolate else None
        self._native = _native_entry(self._ffi, self._library, wrapper.packed_entry, isolate,
                                     wrapper.batch_entry)
        # With no scalar results the result never changes: build it once.
        self._fixed_result = (self._result(()) if not self._outputs else None)
        self._flat_names = [
            f"d{sig.params[s.arg].name}" if s.role is Role.SHADOW else sig.params[s.arg].name
            for s in self._slots
            if s.role in (Role.PRIMAL, Role.CALLBACK) or (s.role is Role.SHADOW and not s.lane)
        ]

    def _seeds(self, seed: Any) -> list:
        if not self._batched:
            return [self._seed_convert(1.0 if seed is None else seed)]
        if seed is None:
            return [1.0] * self._width
        if isinstance(seed, (int, float, np.integer, np.floating)) or (
                isinstance(seed, np.ndarray) and seed.ndim == 0):
            return [self._seed_convert(seed)] * self._width
        return [self._seed_convert(s) for s in _lanes(seed, self._width, "seed")]

    def __call__(self, *args: object, seed: _Seed = None) -> _R:
        handle = self._handle
        if handle is not None and handle._closed:
            raise self._handle_closed()
        if self.first_call is not None or self.failed is not None:
            self._run_first_call(args, seed)
        fast = self._fast
        if fast is not None:
            # the plan enters the library's gate itself; when it is closed it
            # declines and the reference path below raises
            values = fast(*args, seed)
            if values is not NotImplemented:
                return self._fixed_result or self._result(values)
        # Anything the fast path does not take (or no fast path): the
        # reference path, which accepts it or says precisely what is wrong.
        converted = self._prepare(args, seed)
        outs = [allocate() for allocate, _, _, _ in self._outputs]
        self._invoke(*converted, *outs)
        if self._writes_back:
            _write_back(converted)
        return self._result([read(out) for out, (_, read, _, _) in zip(outs, self._outputs)])

    def _prepare(self, args: tuple, seed: Any) -> list:
        """The converted arguments and seeds of a call, every check done."""
        if len(args) != self._nflat:
            raise ActivityError(
                f"this derivative of {self.spec.kernel} ({self.spec.pattern}) takes "
                f"{self._nflat} argument(s) ({', '.join(self._flat_names)}): each primal, "
                f"followed by its shadow{'s' if self._batched else ''} when it has one; "
                f"{len(args)} given.")
        args = _plain_all(args)
        if self._batched:
            # A batched argument's lanes are taken from it once: the arrays
            # checked are the arrays passed.
            arrays: list = list(args)
            converted, per_arg = [], []
            for i, (conv, value, group) in enumerate(zip(self._convert, args, self._group)):
                if group:
                    arrays[i] = lanes = _lanes(value, self._width, group)
                    cdata = tuple(conv(v) for v in lanes)
                    converted.extend(cdata)
                    per_arg.append(cdata)
                else:
                    converted.append(conv(value))
                    per_arg.append(converted[-1])
            self._check_batched_pairs(arrays)
            buffers = [(cdata, written, f"{label} (lane {lane})" if self._group[pos] else label)
                       for pos, written, label in self._buffers
                       for lane, cdata in enumerate(per_arg[pos] if self._group[pos] else (per_arg[pos],))]
        else:
            converted = per_arg = [conv(a) for conv, a in zip(self._convert, args)]
            for primal_pos, shadow_pos, name in self._pairs:
                _check_pair(args[primal_pos], args[shadow_pos], name)
            buffers = [(converted[pos], written, label) for pos, written, label in self._buffers]
        _check_no_overlap(self._ffi, buffers)
        if self._lengths:
            _check_lengths(self._lengths, args, per_arg, self.spec.kernel)
        if self._has_seed:
            converted.extend(self._seeds(seed))
        elif seed is not None:
            raise ActivityError(f"seed= only applies to an Active return; {self.spec.pattern} "
                                "has none.")
        return converted

    def _check_batched_pairs(self, arrays: Sequence[Any]) -> None:
        """Every lane's shape is its primal's (``arrays``: the flat arguments,
        each batched one as the tuple of lanes that was converted)."""
        for primal_pos, shadow_pos, name in self._pairs:
            primal = arrays[primal_pos]
            for lane, shadow in enumerate(arrays[shadow_pos]):
                if shadow.shape != primal.shape:
                    raise ShadowValueError(f"shadow {lane} of '{name}' has shape {shadow.shape}, "
                                           f"but its primal has shape {primal.shape}.")
                _check_pair(primal, shadow, name)

    def _result(self, values: Sequence[Any]) -> Any:
        primal = None
        tangents: list = []
        derivs: list = [None] * self._nargs
        for value, (_, _, role, arg) in zip(values, self._outputs):
            if role is Role.PRIMAL_OUT:
                primal = value
            elif role is Role.TANGENT_OUT:
                tangents.append(value)
            elif self._batched:
                derivs[arg] = (derivs[arg] or ()) + (value,)
            else:
                derivs[arg] = value
        # tuple.__new__ skips the NamedTuple constructor's argument handling
        if self.spec.reverse:
            return tuple.__new__(ReverseResult, (tuple(derivs), primal))
        if not tangents:
            return tuple.__new__(ForwardResult, (None, primal))
        return tuple.__new__(ForwardResult,
                             (tuple(tangents) if self._batched else tangents[0], primal))


class HvpFunction(_CheckedOnce):
    """Hessian-vector products (forward over reverse) with a call plan.

    Called with the kernel's arguments and a sequence of ``width`` direction
    arrays shaped like argument ``wrt``; returns ``(gradient, products)``.
    """

    def __init__(self, spec: HvpSpec, wrapper: GeneratedWrapper, so_path: str,
                 owner: int = PERMANENT_OWNER, isolate: bool = False) -> None:
        self.spec = spec
        self.so_path = so_path
        self._ffi, self._fn, self._library = load_symbol(so_path, wrapper.cdef, wrapper.entry, owner)
        self._invoke = _invoker(self._library, self._fn, so_path, wrapper.cdef, wrapper.entry,
                                wrapper.params,
                                f"the Hessian-vector product of '{spec.signature.name}'", isolate)
        self._init_checked_once()
        sig = spec.signature
        self._slots = wrapper.params
        self._convert = _primal_converters(self._ffi, sig, self._slots, spec.callback_module,
                                           dict(spec.callbacks))
        x = sig.params[spec.wrt]
        self._direction = _param_converter(self._ffi, x.ctype, f"a direction for '{x.name}'",
                                           writable=False, shadow=True)
        self._out = _param_converter(self._ffi, x.ctype, "an output", writable=True, shadow=True)
        # zero buffers for the arrays the kernel may write (their shadows in
        # both passes); fresh for every call
        self._scratch = {s.arg: _param_converter(self._ffi, s.ctype, "a scratch shadow",
                                                 writable=True, shadow=True)
                         for s in self._slots if s.role is Role.SCRATCH}
        self._lengths = _length_plan(sig, {i: i for i in range(len(sig.params))})
        self._buffers = [(s.arg, s.writable, f"argument '{sig.params[s.arg].name}'")
                         for s in self._slots if s.role is Role.PRIMAL and s.pointer]

    def __call__(self, args: Sequence[Any], directions: Sequence[Any]) -> tuple[np.ndarray, list]:
        if self.first_call is not None or self.failed is not None:
            self._run_first_call(args, directions)
        args, converted, lanes, converted_lanes = self._prepare(args, directions)
        x = args[self.spec.wrt]
        gradient = np.zeros_like(x)
        products = [np.zeros_like(x) for _ in lanes]
        call_args = []
        for slot in self._slots:
            if slot.role in (Role.PRIMAL, Role.CALLBACK):
                call_args.append(converted[slot.arg])
            elif slot.role is Role.DIRECTION:
                call_args.append(converted_lanes[slot.lane])
            elif slot.role is Role.GRADIENT_OUT:
                call_args.append(self._out(gradient))
            elif slot.role is Role.HVP_OUT:
                call_args.append(self._out(products[slot.lane]))
            else:
                call_args.append(self._scratch[slot.arg](np.zeros_like(args[slot.arg])))
        self._invoke(*call_args)
        _write_back(call_args)
        return gradient, products

    def _prepare(self, args: Sequence[Any], directions: Sequence[Any]) -> tuple[list, list, list, list]:
        """The arguments and directions of a call, converted and checked."""
        sig, wrt = self.spec.signature, self.spec.wrt
        if len(args) != len(sig.params):
            raise ArgumentTypeError(f"{sig.name} takes {len(sig.params)} argument(s), "
                                    f"{len(args)} given. Signature: {sig}")
        args = _plain_all(args)
        converted = [conv(a) for conv, a in zip(self._convert, args)]
        if self._lengths:
            _check_lengths(self._lengths, args, converted, sig.name)
        x = args[wrt]
        lanes = _lanes(directions, self.spec.width, f"the directions for '{sig.params[wrt].name}'")
        converted_lanes = [self._direction(v) for v in lanes]
        if not sig.params[wrt].ctype.const:
            # The kernel writes x, so the derivative writes x's tangents: the
            # directions. Give it copies; the caller's stay as they were
            # (and may be read-only).
            lanes = [np.array(v, copy=True) for v in lanes]
            converted_lanes = [self._out(v) for v in lanes]
        for lane in lanes:
            if lane.shape != x.shape:
                raise ShadowValueError(f"a direction has shape {lane.shape}, but "
                                       f"'{sig.params[wrt].name}' has shape {x.shape}.")
            _check_pair(x, lane, sig.params[wrt].name)
        _check_no_overlap(self._ffi, [(converted[i], written, label) for i, written, label in self._buffers]
                          + [(c, False, f"direction {k}") for k, c in enumerate(converted_lanes)])
        return args, converted, lanes, converted_lanes


def tape_size(so_path: str, split: GeneratedSplit, owner: int = PERMANENT_OWNER) -> int:
    """Ask a compiled size probe how many bytes the tape needs."""
    _, probe, library = load_symbol(so_path, split.cdef, split.size_entry, owner)
    return int(library.call(probe))


class Tape:
    """What the augmented forward pass of a split derivative leaves for the
    reverse pass: Enzyme's tape, the converted arguments (kept alive and reused
    by the reverse pass) and the scalar cells. It can be reversed once.

    ``primal`` is the kernel's return value (``ReverseSplitWithPrimal``).
    """

    __slots__ = ("owner", "call_args", "cells", "buffer", "primal", "used", "_lock")

    def __init__(self, owner: SplitFunctions, call_args: list, cells: dict, buffer: Any,
                 primal: CValue) -> None:
        self.owner = owner
        self.call_args = call_args
        self.cells = cells
        self.buffer = buffer
        self.primal = primal
        self.used = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "used" if self.used else "ready"
        return f"<enzyme.Tape of {self.owner.spec.kernel}, {len(self.buffer)} bytes, {state}>"

    def _not_copyable(self, *_: Any) -> Any:
        # A copy would share Enzyme's tape, which each copy would then free
        # (a double free that aborts the interpreter).
        raise TapeError("a Tape cannot be copied or pickled: it owns Enzyme's memory for one "
                        "reverse pass in this process. Keep the object and reverse it once; run "
                        "the forward pass again for another tape.")

    __copy__ = __deepcopy__ = __reduce__ = __reduce_ex__ = _not_copyable

    def __del__(self) -> None:
        # Enzyme's tape holds memory its augmented pass malloc'ed, freed only
        # by the reverse pass: a tape dropped unreversed leaked it (20,000
        # dropped passes of a 10,000-element loop: +1.5 GB). Run the reverse
        # pass with a zero seed into scratch shadows, so the caller's
        # shadows stay as they are.
        if self.used:
            return
        self.used = True
        try:
            self.owner._release_tape(self)
        except Exception:  # never raise from a destructor; at worst it leaks
            pass


class ForwardPass(Protocol):
    """The augmented forward pass :func:`enzyme.autodiff_thunk` returns: each
    primal followed by its shadow, giving the :class:`Tape`."""

    def __call__(self, *args: object) -> Tape: ...


class ReversePass(Protocol):
    """The reverse pass :func:`enzyme.autodiff_thunk` returns."""

    def __call__(self, tape: Tape, seed: SupportsFloat | None = None) -> ReverseResult: ...


class SplitFunctions(_CheckedOnce):
    """The two passes of a split reverse-mode derivative, with their call plan.

    ``forward(*flat_args)`` (each primal followed by its shadow) runs the
    augmented forward pass and returns a :class:`Tape`; ``reverse(tape,
    seed=1.0)`` runs the reverse pass once, accumulating into the shadows
    given to ``forward``, and returns a :class:`ReverseResult`.
    """

    def __init__(self, spec: DerivativeSpec, split: GeneratedSplit, so_path: str,
                 tape_bytes: int, owner: int = PERMANENT_OWNER, isolate: bool = False) -> None:
        self.spec = spec
        self.so_path = so_path
        self.tape_bytes = tape_bytes
        self._init_checked_once()  # the first-use check of both passes, before the first forward pass
        self._ffi, self._forward, self._library = load_symbol(so_path, split.cdef,
                                                              split.forward_entry, owner)
        _, self._reverse, _ = load_symbol(so_path, split.cdef, split.reverse_entry, owner)
        slots = split.entry_params
        self._invoke_forward = _invoker(self._library, self._forward, so_path, split.cdef,
                                        split.forward_entry, slots, f"the forward pass of "
                                        f"{spec.pattern} of '{spec.kernel}'", isolate)
        self._invoke_reverse = _invoker(self._library, self._reverse, so_path, split.cdef,
                                        split.reverse_entry, slots, f"the reverse pass of "
                                        f"{spec.pattern} of '{spec.kernel}'", isolate)
        ffi, sig = self._ffi, spec.signature
        for slot in split.params:
            if slot.role is Role.SHADOW and (slot.ctype.rows or slot.ctype.holds_pointers):
                # (a tape dropped unreversed is released with scratch shadows,
                # which these would need built: not done yet)
                raise UnsupportedSignatureError(
                    f"split mode does not take a shadow of '{sig.params[slot.arg].name}' (C "
                    f"`{slot.ctype.spelling}`: it holds pointers) yet; use Reverse.")
        self._convert: list[Callable[[Any], Any]] = []
        self._pairs: list[tuple[int, int, str]] = []
        self._buffers: list[tuple[int, bool, str]] = []  # as DerivativeFunction's
        # One step per entry parameter: ("arg", flat index), ("cell", flat index)
        # for an Active scalar's value, or ("zero", None) for a zeroed cell.
        self._plan: list[tuple[str, Any, str, Role, int]] = []
        position: dict[int, int] = {}
        for slot in split.params:  # (writability from the one model, see params)
            name = sig.params[slot.arg].name if slot.arg >= 0 else "return"
            base, role = slot.ctype.base, slot.role
            if slot.role in (Role.PRIMAL, Role.SHADOW):
                shadow = slot.role is Role.SHADOW
                if shadow:
                    self._pairs.append((position[slot.arg], len(self._convert), name))
                else:
                    position[slot.arg] = len(self._convert)
                what = f"the shadow of '{name}'" if shadow else f"argument '{name}'"
                if slot.pointer:
                    self._buffers.append((len(self._convert), slot.writable, what))
                self._plan.append(("arg", len(self._convert), base, role, slot.arg))
                self._convert.append(_param_converter(ffi, slot.ctype, f"{what} of {sig.name}",
                                                      slot.writable, shadow))
            elif slot.role is Role.CALLBACK:
                position[slot.arg] = len(self._convert)
                self._plan.append(("arg", len(self._convert), base, role, slot.arg))
                self._convert.append(_callback_converter(
                    slot.ctype, f"argument '{name}' of {sig.name}", spec.callback_module,
                    dict(spec.callbacks)[slot.arg]))
            elif slot.role is Role.SLOT:
                self._plan.append(("cell", len(self._convert), base, role, slot.arg))
                self._convert.append(_scalar_converter(_scalar_of(slot.ctype),
                                                       f"argument '{name}' of {sig.name}",
                                                       ArgumentTypeError))
            else:  # slot_shadow, ret_slot, ret_shadow
                self._plan.append(("zero", None, base, role, slot.arg))
        self._nflat = len(self._convert)
        self._lengths = _length_plan(sig, position)
        self._seed_convert = (_scalar_converter(_scalar_of(sig.ret), "seed", ArgumentTypeError)
                              if spec.returns_derivative else None)

    def forward(self, *args: object) -> Tape:
        if self._handle is not None and self._handle._closed:
            raise self._handle_closed()
        if self.first_call is not None or self.failed is not None:
            self._run_first_call(args, None)
        plain, converted = self._prepare(args, None)  # (plain: the arrays converted points into, held)
        new = self._ffi.new
        call_args, cells = [], {}
        for kind, index, base, role, arg in self._plan:
            if kind == "arg":
                call_args.append(converted[index])
                continue
            cell = new(f"{base}[1]", [converted[index]] if kind == "cell" else None)
            cells[(role, arg)] = cell
            call_args.append(cell)
        buffer = new("char[]", max(self.tape_bytes, 1))
        self._invoke_forward(*call_args, buffer)
        _write_back(converted)
        primal = cells[(Role.RET_SLOT, -1)][0] if self.spec.with_primal and (Role.RET_SLOT, -1) in cells \
            else None
        return Tape(self, call_args, cells, buffer, primal)

    def _release_tape(self, tape: Tape) -> None:
        """Free what an unreversed tape holds (see Tape.__del__)."""
        if not self._library.alive:
            return
        new, typeof = self._ffi.new, self._ffi.typeof
        call_args = [new(typeof(value), max(len(value), 1)) if role is Role.SHADOW else value
                     for value, (_, _, _, role, _) in zip(tape.call_args, self._plan)]
        for (role, _), cell in tape.cells.items():
            if role is Role.RET_SHADOW:
                cell[0] = 0
        self._invoke_reverse(*call_args, tape.buffer)

    def _prepare(self, args: tuple, _seed: Any) -> tuple[list, list]:
        """The forward pass's arguments, converted and checked."""
        if len(args) != self._nflat:
            raise ActivityError(f"the forward pass of {self.spec.kernel} ({self.spec.pattern}) "
                                f"takes {self._nflat} argument(s): each primal, followed by its "
                                f"shadow when it has one; {len(args)} given.")
        args = _plain_all(args)
        converted = [conv(a) for conv, a in zip(self._convert, args)]
        for primal_pos, shadow_pos, name in self._pairs:
            _check_pair(args[primal_pos], args[shadow_pos], name)
        _check_no_overlap(self._ffi, [(converted[i], written, label) for i, written, label in self._buffers])
        if self._lengths:
            _check_lengths(self._lengths, args, converted, self.spec.kernel)
        return args, converted

    def reverse(self, tape: Tape, seed: SupportsFloat | None = None) -> ReverseResult:
        # (a tape of another handle's copy of this very derivative, e.g. the
        # passes unpickled one by one, runs the same reverse entry point)
        if not isinstance(tape, Tape) or (tape.owner is not self and
                                          tape.owner._reverse is not self._reverse):
            raise ActivityError(f"reverse() needs the Tape returned by this derivative's forward "
                                f"pass ({self.spec.kernel}, {self.spec.pattern}).")
        if self._seed_convert is not None:
            seed_value = self._seed_convert(1.0 if seed is None else seed)
        elif seed is not None:
            raise ActivityError(f"seed= only applies to an Active return; {self.spec.pattern} "
                                "has none.")
        if self._handle is not None and self._handle._closed:
            raise self._handle_closed()
        if not self._library.alive:
            raise _closed(self._library)  # before the tape is spent
        with tape._lock:
            if tape.used:
                raise ActivityError("this tape was already reversed; Enzyme frees what the tape "
                                    "holds in the reverse pass. Run the forward pass again.")
            tape.used = True
        if self._seed_convert is not None:
            tape.cells[(Role.RET_SHADOW, -1)][0] = seed_value
        self._invoke_reverse(*tape.call_args, tape.buffer)
        _write_back(tape.call_args)
        derivs: list = [None] * len(self.spec.signature.params)
        for (role, arg), cell in tape.cells.items():
            if role is Role.SLOT_SHADOW:
                derivs[arg] = cell[0]
        return ReverseResult(tuple(derivs), tape.primal)


def _scalar_of(ctype: CType) -> CType:
    return CType("scalar", ctype.base, ctype.base, ctype.dtype)


def global_view(so_path: str, symbol: str, var: GlobalVar, read_only: bool) -> np.ndarray:
    """A numpy array viewing a global variable of a loaded library (the view
    keeps the library loaded). ``const`` globals live in read-only memory:
    their views are read-only, so a write is a Python error, not a crash."""
    ffi, cells, _ = load_symbol(so_path, f"extern char {symbol}[{max(var.size, 1)}];", symbol,
                                PERMANENT_OWNER)
    view = np.frombuffer(ffi.buffer(cells), dtype=numpy_dtype(var.element)).reshape(var.shape)
    if read_only:
        view.flags.writeable = False
    return view
