"""XLA custom calls for enzyme.jax: kernels and their derivatives called from
compiled JAX programs without a Python callback.

One FFI target, ``enzyme_ffi_call``, is a small C handler (``xla_handler.c``,
compiled on first use with the toolchain's clang against the installed
jaxlib's XLA FFI header). Each custom call carries the number of a
:class:`Plan` (checked against the handler's table, never a raw address):
the entry point to call (a derivative's packed twin, or a kernel's primal
shim) and where each of its slots comes from (an operand, a result, a copy,
zeroed scratch, or a static value the plan holds).

The first call of each plan runs in Python instead, through the same
computation the callback path does (``first_call``), so a derivative's
first-use check sees real values; the plan is then marked checked and every
later call stays native. A plan whose first call failed keeps calling Python,
which raises again. Anything this path cannot pass makes :func:`plan_for`
return None, and enzyme.jax uses its callbacks.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import build
from .call import NativeEntry, native_entry
from .errors import EnzymeError
from .params import Role

__all__ = ["TARGET", "Plan", "Source", "available", "plan_for", "primal_plan", "static_source"]

TARGET = "enzyme_ffi_call"
_log = logging.getLogger("enzyme")

# Where a slot comes from (the SLOT_* codes of xla_handler.c)
ARG, ARG_COPY, RET, FIXED, SCRATCH_ARG, SCRATCH_RET, SCRATCH = range(7)
_MAX_BUFFERS = 64

_FIRST_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p),
                               ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_int64)


class _CPlan(ctypes.Structure):
    # the EfiPlan of xla_handler.c
    _fields_ = [("entry", ctypes.c_void_p), ("closed", ctypes.c_void_p), ("first_call", _FIRST_CALL),
                ("id", ctypes.c_int64), ("checked", ctypes.c_int64), ("nslots", ctypes.c_int64),
                ("kind", ctypes.c_void_p), ("index", ctypes.c_void_p), ("fixed", ctypes.c_void_p)]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one slot of an entry point comes from: ``kind`` (ARG, RET, ...)
    and an operand or result position (a byte count for SCRATCH), or for
    FIXED the value the plan keeps (a numpy array)."""

    kind: int
    index: int = 0
    value: Any = None


class Plan:
    """One custom call's plan, kept for the life of the process (compiled
    JAX programs hold its number, ``id``). ``first_call(args, results)`` computes
    the call in Python on numpy views of XLA's buffers and says whether the
    native path may take the later calls."""

    def __init__(self, entry: NativeEntry, sources: Sequence[Source],
                 first_call: Callable[[list[np.ndarray], list[np.ndarray]], bool],
                 args: Sequence[tuple[tuple[int, ...], np.dtype]],
                 results: Sequence[tuple[tuple[int, ...], np.dtype]],
                 keep: Sequence[Any] = ()) -> None:
        self._kinds = np.array([s.kind for s in sources], dtype=np.int64)
        self._indexes = np.array([s.index for s in sources], dtype=np.int64)
        self._fixed_values = [s.value for s in sources]
        self._fixed = (ctypes.c_void_p * max(len(sources), 1))(
            *[v.ctypes.data if isinstance(v, np.ndarray) else (v or 0) for v in self._fixed_values])
        self._args, self._results = list(args), list(results)
        self._python = first_call
        self._keep = (entry, *keep)
        self._callback = _FIRST_CALL(self._first_call)
        self._c = _CPlan(entry.address, entry.closed_flag(), self._callback, 0, 0, len(sources),
                         self._kinds.ctypes.data, self._indexes.ctypes.data,
                         ctypes.cast(self._fixed, ctypes.c_void_p))
        with _lock:
            # the number the custom call carries (xla_handler.c's table)
            self.id = self._c.id = int(_state["library"].efi_register_plan(ctypes.byref(self._c)))
            if self.id < 0:
                raise EnzymeError("enzyme.jax: too many custom-call plans in this process (65,536).")
            _plans.append(self)

    def _first_call(self, plan_id: int, args: Any, rets: Any, message: int, size: int) -> int:
        try:
            ok = self._python(_views(args, self._args), _views(rets, self._results))
            if ok:
                self._c.checked = 1
            return 0
        except BaseException as exc:  # (into C: every error becomes the custom call's message)
            text = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:max(size - 1, 0)]
            ctypes.memmove(message, text + b"\0", len(text) + 1)
            return 1


def _views(pointers: Any, specs: Sequence[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
    views = []
    for i, (shape, dtype) in enumerate(specs):
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes == 0:
            views.append(np.zeros(shape, dtype))
            continue
        memory = (ctypes.c_char * nbytes).from_address(pointers[i])
        views.append(np.frombuffer(memory, dtype=dtype).reshape(shape))
    return views


_lock = threading.Lock()
_plans: list[Plan] = []
_state: dict[str, Any] = {}


def available(toolchain: Any) -> bool:
    """Whether the custom-call path can be used in this process: JAX with
    its FFI, the C fast path (for the library gates), and the handler
    compiled and registered (once; a failure is logged and the callbacks
    are used). ``ENZYME_JAX_CALLBACKS=1`` turns the custom calls off."""
    if os.environ.get("ENZYME_JAX_CALLBACKS", "") == "1":
        return False
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _register(toolchain)
        return bool(_state["ok"])


def _register(toolchain: Any) -> bool:
    try:
        import jax.ffi

        from .call import _fastcall
        if _fastcall is None:
            return False
        source = (Path(__file__).with_name("xla_handler.c")).read_text()
        path = build.build_helper(toolchain, source, [jax.ffi.include_dir()], "the XLA custom-call handler")
        library = ctypes.CDLL(str(path))
        library.efi_register_plan.restype = ctypes.c_int64
        library.efi_register_plan.argtypes = [ctypes.c_void_p]
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.efi_xla_call), platform="cpu")
        _state["library"] = library
        return True
    except (EnzymeError, OSError, ImportError, AttributeError, RuntimeError, ValueError) as exc:
        _log.info("enzyme.jax: XLA custom calls unavailable (%s: %s); using Python callbacks",
                  type(exc).__name__, exc)
        return False


def static_source(value: Any, ctype: Any) -> Source | None:
    """A FIXED source for a static input (a size, a const integer array)."""
    if ctype.is_pointer:
        if not ctype.const or not isinstance(value, np.ndarray):
            return None  # (a written static array would need a copy per call)
        return Source(FIXED, 0, np.ascontiguousarray(value))
    try:
        return Source(FIXED, 0, np.array([value], dtype=np.dtype(ctype.dtype)))
    except (TypeError, ValueError):
        return None


def plan_for(fn: Any, slots: Sequence[Any], role_of: Callable[[Any], Source | None],
             first_call: Callable, args: Sequence, results: Sequence) -> Plan | None:
    """The plan of a derivative whose slots ``role_of`` maps to sources
    (None: not passable), or None when any slot is not."""
    entry = native_entry(fn)
    if entry is None or len(args) > _MAX_BUFFERS or len(results) > _MAX_BUFFERS:
        return None
    sources = []
    for slot in slots:
        if slot.role is Role.CALLBACK or slot.lane:
            return None
        source = role_of(slot)
        if source is None:
            return None
        sources.append(source)
    if len(sources) > 2 * _MAX_BUFFERS:
        return None
    return Plan(entry, sources, first_call, args, results, keep=(fn,))


def primal_plan(kernel: Any, sources: Sequence[Source], first_call: Callable,
                args: Sequence, results: Sequence) -> Plan | None:
    """The plan of a kernel's own call, through its packed shim
    (:meth:`enzyme.module.Kernel.packed_primal`): ``sources`` for its
    parameters, then the return value's."""
    packed = kernel.packed_primal()
    if packed is None or len(sources) + 2 > 2 * _MAX_BUFFERS:
        return None
    shim, address = packed
    # s[n] is the kernel itself, as the shim calls it
    fixed = [*sources[:-1], Source(FIXED, 0, address), sources[-1]]
    return Plan(shim, fixed, first_call, args, results, keep=(kernel,))
