"""compile() and what it returns: the options, the module handles, their
kernels and globals, and the in-process caches of compiled modules. The
orchestrator: it imports the stages (toolchain -> signature -> activity
-> codegen -> build -> call) and wires them together."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import inspect
import itertools
import logging
import os
import pickle
import re
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import build
from . import toolchain as _toolchain_stage
from . import verify as _verify
from .activity import (
    Forward,
    Mode,
    Reverse,
    ReverseWithPrimal,
    resolve_activities,
    resolve_hvp,
)
from .call import (
    PERMANENT_OWNER,
    CArray,
    CDType,
    CValue,
    DerivativeFunction,
    HvpFunction,
    NativeEntry,
    OwnedLock,
    PrimalFunction,
    SplitFunctions,
    copy_inputs,
    global_view,
    load_symbol,
    native_entry,
    numpy_dtype,
    release_owner,
    tape_size,
)
from .codegen import (
    BATCH_CDEF,
    generate_blas_support,
    generate_derivative,
    generate_hvp,
    generate_primal_shim,
    generate_primal_wrapper,
    generate_registrations,
    generate_split,
    primal_cdef,
)
from .compdb import read_database
from .errors import (
    ActivityError,
    ArgumentTypeError,
    CompileError,
    ContractError,
    DifferentiationError,
    EnzymeError,
    EnzymeWarning,
    ModuleClosedError,
    NotPicklableError,
    OptionError,
    OptionTypeError,
    UnsupportedSignatureError,
)
from .firstuse import FirstUseChecks
from .paths import get_include
from .signature import (
    GlobalVar,
    Signature,
    parse_request,
    read_worker_reply,
    with_lengths,
    worker_command,
)

__all__ = ["compile", "Module", "Kernel", "GlobalsView", "KernelNotFoundError", "GlobalNotFoundError", "get_include"]


class KernelNotFoundError(EnzymeError, AttributeError):
    """The module defines no external function of that name."""


class GlobalNotFoundError(EnzymeError, KeyError):
    """The module defines no (viewable) external global of that name."""


_toolchain_lock = threading.Lock()


# The default toolchain, and the environment it was resolved under: changing
# ENZYME_PLUGIN/ENZYME_CLANG/ENZYME_OPT mid-process resolves it again.
_default_toolchain: tuple[tuple, _toolchain_stage.Toolchain] | None = None


def _resolve_toolchain(tc: _toolchain_stage.Toolchain | None) -> _toolchain_stage.Toolchain:
    global _default_toolchain
    if tc is not None:
        if not isinstance(tc, _toolchain_stage.Toolchain):
            raise OptionTypeError(f"toolchain= takes what enzyme.toolchain.resolve() returns, got "
                                  f"{type(tc).__name__}; to use another clang, set ENZYME_CLANG or "
                                  "pass resolve(clang=...).")
        return tc
    env = tuple(os.environ.get(v) for v in ("ENZYME_PLUGIN", "ENZYME_CLANG", "ENZYME_OPT"))
    with _toolchain_lock:
        if _default_toolchain is None or _default_toolchain[0] != env:
            _default_toolchain = (env, _toolchain_stage.resolve())
        return _default_toolchain[1]


_primal_shims: dict[str, tuple[int, int]] = {}  # shim source -> its entries (loaded for good)
_shims_lock = threading.Lock()


class Kernel(FirstUseChecks):
    """One external C function of a compiled :class:`Module`.

    Call it like the C function, with numpy arrays for pointers and Python
    numbers for scalars. Derivatives come from :func:`autodiff`,
    :func:`derivative`, :func:`grad` and :func:`value_and_grad`.

    Examples
    --------
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> mod.f(3.0, 5.0)
    24.0
    >>> str(mod.f.signature)
    'double f(double x, double y)'
    """

    def __init__(self, module: Module, signature: Signature, home: Kernel | None = None) -> None:
        self.module = module
        self.signature = signature
        self.name = signature.name
        self._primal: PrimalFunction | None = None
        # The kernel of the module's shared state (see Module._new_handle):
        # derivatives are built, cached and checked there, once for every
        # handle of the module.
        self._home: Kernel = home or self
        if home is None:
            self._derivatives: dict[tuple, DerivativeFunction | HvpFunction] = {}
            self._key_locks: dict[tuple, OwnedLock] = {}
            self._lock = OwnedLock(f"a derivative build of '{self.name}'")
        else:
            self._derivatives, self._key_locks, self._lock = (
                home._derivatives, home._key_locks, home._lock)
        # per-handle copies of shared derivatives given out by derivative()
        # and autodiff_thunk(): they refuse calls once this handle is closed
        self._bound: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"<enzyme.Kernel {self.signature}>"

    def dtype(self, param: int | str) -> CDType:
        """The numpy dtype a parameter's array must have: for a pointer to a C
        struct, a structured dtype with exactly the C layout.

        Examples
        --------
        >>> mod = compile("struct p { double x[3]; int id; double m; };"
        ...               "double mass(const struct p *ps, int n) { return ps[0].m; }")
        >>> mod.mass.dtype("ps").names
        ('x', 'id', 'm')
        """
        return numpy_dtype(self.signature.params[_param_index(self, param, "param")].ctype)

    def __call__(self, *args: object, **kwargs: object) -> CValue:
        """Call the C function: arguments by position or by C parameter
        name. ``copy=True`` (unless the C function has a parameter of that
        name) converts read-only array arguments that are strided, of
        another dtype or lists into fresh arrays first (see
        :func:`enzyme.call.copy_inputs`)."""
        primal = self._primal
        if primal is None or self.module._closed:
            primal = self._primal_function()  # raises ModuleClosedError when closed
        if kwargs:
            args = self._by_name(args, kwargs)
        return primal(*args)

    def _by_name(self, args: tuple, kwargs: dict) -> tuple:
        """Positional arguments from a call that names some by their C
        parameter names (``mod.f(x=3.0, n=4)``), converted first when the
        call says ``copy=True``."""
        copy_asked = False
        if "copy" in kwargs and all(p.name != "copy" for p in self.signature.params):
            kwargs = dict(kwargs)
            copy_asked = kwargs.pop("copy")
            if not isinstance(copy_asked, bool):
                raise ArgumentTypeError(f"copy= takes True or False, got {copy_asked!r}.")
        args = self._by_name_only(args, kwargs) if kwargs else args
        return copy_inputs(self.signature, args) if copy_asked else args

    def _by_name_only(self, args: tuple, kwargs: dict) -> tuple:
        names = [p.name for p in self.signature.params]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise ArgumentTypeError(f"{self.name}() has no parameter named {', '.join(unknown)}; "
                                    f"its parameters: {', '.join(names) or 'none'}. Signature: "
                                    f"{self.signature}")
        twice = [k for k in kwargs if names.index(k) < len(args)]
        if twice:
            raise ArgumentTypeError(f"{self.name}() got {', '.join(twice)} both by position and "
                                    "by name.")
        missing = [n for n in names[len(args):] if n not in kwargs]
        if missing:
            raise ArgumentTypeError(f"{self.name}() is missing {', '.join(missing)}. Signature: "
                                    f"{self.signature}")
        return (*args, *(kwargs[n] for n in names[len(args):]))

    @property
    def __signature__(self) -> inspect.Signature:
        """The C parameters, for ``inspect.signature(kernel)`` and help()."""
        try:
            return inspect.Signature([inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                      for p in self.signature.params])
        except ValueError:  # a C name that is a Python keyword (`lambda`): positional only
            return inspect.Signature([inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY)
                                      for i in range(len(self.signature.params))])

    def __reduce__(self) -> tuple:
        # by its module (which pickles as its sources and options) and name
        return _kernel_of, (self.module, self.name)

    def _bind(self, fn: Any, made_by: tuple) -> Any:
        """A copy of a shared derivative callable that belongs to this
        kernel's module handle (closing the handle closes the copy).
        ``made_by`` is how pickle rebuilds it: (function, arguments)."""
        bound = self._bound.get(id(fn))
        if bound is None:
            bound = copy.copy(fn)
            bound._handle = self.module
            bound.made_by = made_by
            bound = self._bound.setdefault(id(fn), bound)
        return bound

    def _with_callbacks(self, spec: Any) -> Any:
        """``spec`` with, for each function-pointer parameter, the kernels of
        this module that may be passed for it (those of its function type)."""
        callbacks = []
        for i, param in enumerate(self.signature.params):
            if param.ctype.is_function:
                names = tuple(sorted(
                    name for name, sig in self.module.signatures.items()
                    if sig.fn_type == param.ctype.base and name != self.name and not sig.unsupported()))
                callbacks.append((i, names))
        if not callbacks:
            return spec
        return dataclasses.replace(spec, callbacks=tuple(callbacks),
                                   callback_module=self.module._artifact.key)

    @property
    def callback_identity(self) -> tuple[str, str, str]:
        """(module, name, function type): what a function-pointer parameter
        checks about a kernel passed for it."""
        return self.module._artifact.key, self.name, self.signature.fn_type

    def callback_address(self) -> int:
        """The kernel's address in the module's library (for a primal call
        that takes it as a function pointer)."""
        if self.signature.ret.kind == "struct":
            raise UnsupportedSignatureError(
                f"'{self.name}' returns a struct by value, which enzyme-ffi calls through a "
                "wrapper; it cannot be passed as a function pointer.")
        primal = self._primal_function()
        return int(primal._ffi.cast("uintptr_t", primal._fn))

    def packed_primal(self) -> tuple[NativeEntry, int] | None:
        """The kernel in the packed convention, for native callers (enzyme.jax's
        XLA custom calls, enzyme.vmap's batch loop): the entry of a shim
        ``void f(void **s)`` that calls the kernel through the function pointer
        in ``s[n]`` (``n`` its parameter count) with ``s[0..n-1]`` as its
        arguments and stores its return value at ``s[n + 1]`` (and its batch
        twin), and the kernel's address; None where the kernel cannot be called so (an
        isolated module, structs by value, row tables, function pointers)."""
        primal = self._primal_function()
        kernel = native_entry(primal)
        shim = generate_primal_shim(self.signature)
        if kernel is None or shim is None:
            return None
        source, name, batch_name = shim
        with _shims_lock:
            addresses = _primal_shims.get(source)
            if addresses is None:
                path = build.build_helper(self.module._toolchain, source, [], f"the primal shim of '{self.name}'")
                cdef = (f"void {name}(void **);\n"
                        f"void {batch_name}{BATCH_CDEF};")
                ffi, fn, library = load_symbol(str(path), cdef, name, PERMANENT_OWNER)
                addresses = _primal_shims[source] = (int(ffi.cast("uintptr_t", fn)),
                                                     int(ffi.cast("uintptr_t", getattr(library.lib, batch_name))))
        return NativeEntry(addresses[0], kernel.gate, addresses[1]), kernel.address

    def _primal_function(self) -> PrimalFunction:
        self.module._check_open()
        primal = self._primal
        if primal is None:
            self.signature.check_supported()
            if self.signature.ret.kind == "struct":
                wrapper = generate_primal_wrapper(self.signature)
                so_path = build.build_derivative(self.module._toolchain, self.module._artifact,
                                                 wrapper.c_source, self.name, "primal")
                primal = PrimalFunction(self.signature, str(so_path), wrapper.cdef, wrapper.entry,
                                        self.module._owner, isolate=self.module.isolate,
                                        module_key=self.module._artifact.key)
            else:
                primal = PrimalFunction(self.signature, self.module._artifact.so_path,
                                        primal_cdef(self.signature), owner=self.module._owner,
                                        isolate=self.module.isolate,
                                        module_key=self.module._artifact.key)
            self._primal = primal
        return primal

    def derivative_function(self, mode: Mode, kinds: tuple, ret: Any = None,
                            width: int = 1) -> DerivativeFunction:
        """The compiled derivative for a mode and activity classes (cached).

        Raises :class:`DifferentiationError` for a batched derivative (width
        > 1) that involves a global carrying derivatives: Enzyme keeps one
        shadow per global, not one per lane, and the other lanes read (or, in
        reverse mode, write) memory past it.
        """
        self.module._check_open()
        if isinstance(mode, Mode) and mode.split:
            # Both passes in one call (autodiff or derivative with a split mode)
            # is the unsplit derivative: built, cached and checked as that.
            mode = ReverseWithPrimal if mode.with_primal else Reverse
        key = (mode, kinds, ret, width)
        found = self._derivatives.get(key)
        if found is None:
            home = self._home
            other = None
            if self.module.verify and not _verify.verifying():
                other = home._prebuild_counterpart(mode, kinds, ret, width)
            try:
                found = self._compile_once(key, lambda: self._with_callbacks(resolve_activities(
                    self.signature, mode, kinds, ret, width)), generate_derivative, DerivativeFunction,
                    home._arm_check if self.module.verify else None)
            finally:
                if other is not None:
                    other.join()  # no build goes on behind the caller's back
        if self.module.isolate:
            self._refuse_shadows_in_worker(found.so_path)
        if width > 1:
            used = self.module._shadows_used_by(found.so_path)
            if used:
                raise DifferentiationError(
                    f"a batched derivative ({width} lanes) of '{self.name}' cannot be computed: the "
                    f"kernel uses the global(s) {', '.join(used)}, which carry derivatives, and "
                    "Enzyme keeps one shadow per global, not one per lane.\nFix: make one call per "
                    "direction (Duplicated instead of BatchDuplicated); or declare the global const "
                    "if it never changes, or list it in compile(inactive_globals=[...]) if it "
                    "carries no derivative.",
                    kernel=self.name, pattern=found.spec.pattern, code="global-batch",
                    hint="one call per direction, or a const or inactive global")
        return found

    def _refuse_shadows_in_worker(self, so_path: str) -> None:
        used = self.module._shadows_used_by(so_path)
        if used:
            raise DifferentiationError(
                f"a derivative of '{self.name}' in a module compiled with isolate=True cannot use "
                f"the global(s) {', '.join(used)}, which carry derivatives: their shadows live in "
                "the worker process, out of reach of the checks and helpers.\nFix: declare the "
                "global const if it never changes, list it in compile(inactive_globals=[...]) if "
                "it carries no derivative, pass it as an argument, or compile without isolate=True.",
                kernel=self.name, code="global-isolated",
                hint="a const or inactive global, or an argument")

    def hvp_function(self, wrt: int, width: int = 1) -> HvpFunction:
        """The compiled Hessian-vector product w.r.t. parameter ``wrt`` (cached).

        Raises :class:`DifferentiationError` when the derivative involves a
        global that carries derivatives (its shadow): Enzyme's nested
        derivatives keep one shadow per global, used as the inner reverse
        pass's adjoint and as the outer forward pass's tangent at once, which
        gave wrong second derivatives (and reads of uninitialised memory).
        """
        self.module._check_open()
        key = ("hvp", wrt, width)
        found = self._derivatives.get(key)
        if found is None:
            found = self._compile_once(key, lambda: self._with_callbacks(
                resolve_hvp(self.signature, wrt, width)),
                                       generate_hvp, HvpFunction,
                                       self._home._arm_hvp_check if self.module.verify else None)
        used = self.module._shadows_used_by(found.so_path)
        if used:
            raise DifferentiationError(
                f"hvp/hessian of '{self.name}' cannot be computed: the kernel uses the global(s) "
                f"{', '.join(used)}, which carry derivatives, and Enzyme's nested (forward-over-"
                "reverse) derivatives keep one shadow per global for both passes, which gives wrong "
                "second derivatives.\nFix: if the global never changes, declare it const; if it "
                "carries no derivative, list it in compile(inactive_globals=[...]); otherwise pass "
                "its value as an argument.",
                kernel=self.name, pattern=f"hvp wrt {wrt}", code="global-second-order",
                hint="declare the global const, list it in inactive_globals, or pass it as an "
                     "argument")
        return found

    def derivative_as_kernel(self, mode: Mode, kinds: tuple, ret: Any = None) -> tuple[Kernel, tuple]:
        """The derivative (``Reverse`` or ``Forward``) with these activities
        as a C function of a module of its own (the kernel's sources plus
        the generated wrapper), and the wrapper's parameters
        (:class:`~enzyme.params.Slot`).

        Derivatives of that kernel are derivatives of the derivative (Enzyme
        differentiates through the inner ``__enzyme_autodiff`` or
        ``__enzyme_fwddiff`` call, as for Hessian-vector products), built,
        called and checked like any other.
        """
        if mode not in (Reverse, Forward):
            raise ActivityError(f"derivative_as_kernel takes Reverse or Forward, not {mode!r}.")
        self.module._check_open()
        recipe = self.module._recipe
        if recipe is None:
            raise NotPicklableError("this module was not made by enzyme.compile(): its derivatives "
                                    "cannot be differentiated again.")
        mutable = sorted(v.name for v in self.module._variables.values() if not v.const)
        if mutable:
            # The new module has globals of its own: what this module's
            # globals hold now would not be seen, a silently different function.
            raise DifferentiationError(
                f"this second derivative of '{self.name}' is computed in a module of its own, which "
                f"would not share this module's global variable(s) {', '.join(mutable)}.\nFix: make "
                "them const if they never change, or pass their values as arguments; hessian(wrt=<one "
                "array>) and hvp use this module's globals.",
                kernel=self.name, pattern="second order", code="global-second-order",
                hint="const globals, or pass the values as arguments")
        spec = self._with_callbacks(resolve_activities(self.signature, mode, kinds, ret, 1))
        wrapper = generate_derivative(spec, self.module.runtime_activity)
        # (the packed and batch twins, last in the source, take void ** and
        # strided slots: not kernels)
        text = wrapper.c_source.split("\nvoid __efi_pk_", 1)[0] + "\n"
        inputs = [*recipe.inputs, build.SourceInput(text, f"<enzyme-ffi {mode!r} of {self.name}>")]
        key = ("derivative-of", recipe.digest, spec.pattern, hashlib.sha256(text.encode()).hexdigest())
        module = _handle_of(key, lambda: _compile(list(inputs), recipe.options, recipe.toolchain))
        return module[wrapper.entry], wrapper.params

    def split_functions(self, mode: Mode, kinds: tuple, ret: Any = None) -> SplitFunctions:
        """The compiled split (augmented forward + reverse) derivative (cached)."""
        self.module._check_open()
        key = ("split", mode, kinds, ret)
        found = self._derivatives.get(key)
        if found is None:
            with self._lock:
                found = self._derivatives.get(key)
                if found is None:
                    found = self._derivatives[key] = self._build_split(mode, kinds, ret)
                    if self.module.verify:
                        found.first_call = self._home._first_use_check
        if self.module.isolate:
            self._refuse_shadows_in_worker(found.so_path)
        return found

    def _build_split(self, mode: Mode, kinds: tuple, ret: Any) -> SplitFunctions:
        spec = self._with_callbacks(resolve_activities(self.signature, mode, kinds, ret))
        tc, artifact = self.module._toolchain, self.module._artifact
        runtime = self.module.runtime_activity
        probe = generate_split(spec, None, runtime)
        probe_so = build.build_derivative(tc, artifact, probe.c_source, self.name, spec.pattern)
        size = max(tape_size(str(probe_so), probe, self.module._owner), 8)
        for _ in range(2):
            split = generate_split(spec, size, runtime)
            try:
                so_path = build.build_derivative(tc, artifact, split.c_source, self.name,
                                                 spec.pattern)
            except DifferentiationError as err:
                # The probe and the real passes are separate builds; should
                # Enzyme's tape need differ, it says so: retry with its number.
                need = re.search(r"need (\d+) bytes have \d+ bytes", err.enzyme_message)
                if need is None or int(need.group(1)) <= size:
                    raise
                size = int(need.group(1))
                continue
            return SplitFunctions(spec, split, str(so_path), size, self.module._owner,
                                  isolate=self.module.isolate)
        raise DifferentiationError(f"Enzyme's tape size for '{self.name}' did not settle.",
                                   kernel=self.name, pattern=spec.pattern)

    def _compile_once(self, key: tuple, resolve: Callable, generate: Callable, wrap: Callable,
                      on_create: Callable[[Any], None] | None = None):
        self.module._check_open()
        # one lock per derivative: two different derivatives of a kernel
        # build at once (the first-use check's counterpart next to the one
        # asked for), one derivative is built once
        with self._lock:
            key_lock = self._key_locks.get(key)
            if key_lock is None:
                what = {"hvp": "Hessian-vector product", "split": "split derivative"}.get(
                    str(key[0]), f"{key[0]!r} derivative")
                key_lock = self._key_locks[key] = OwnedLock(f"the {what} of '{self.name}'")
        with key_lock:
            found = self._derivatives.get(key)
            if found is None:
                spec = resolve()
                wrapper = generate(spec, self.module.runtime_activity)
                _log.debug("generated wrapper for %s of '%s':\n%s", spec.pattern, self.name,
                           wrapper.c_source)
                so_path = build.build_derivative(self.module._toolchain, self.module._artifact,
                                                 wrapper.c_source, self.name, spec.pattern)
                found = wrap(spec, wrapper, str(so_path), self.module._owner,
                             isolate=self.module.isolate)
                found.c_source = wrapper.c_source  # what Enzyme was given (for bug reports)
                if on_create is not None:
                    on_create(found)
                self._derivatives[key] = found
        return found


class Module:
    """A compiled C module: a :class:`Kernel` per external function.

    Get kernels as attributes (``mod.loss``) or items (``mod["loss"]``).
    """

    def __init__(self, artifact: build.ModuleArtifact, tc: _toolchain_stage.Toolchain,
                 signatures: Mapping[str, Signature],
                 variables: Mapping[str, GlobalVar] | None = None,
                 runtime_activity: bool = False, verify: bool = True, isolate: bool = False,
                 recipe: Recipe | None = None) -> None:
        self._artifact = artifact
        self._recipe = recipe
        self.runtime_activity = runtime_activity
        self.verify = verify
        self.isolate = isolate
        self._toolchain = tc
        self.signatures = dict(signatures)
        self._kernels = {name: Kernel(self, sig) for name, sig in self.signatures.items()}
        hidden = sorted(name for name in self._kernels if not name.startswith("__") and (
            hasattr(Module, name) or
            name in ("globals", "shadows", "signatures", "verify", "runtime_activity")))
        if hidden:
            warnings.warn(EnzymeWarning(
                f"kernel(s) {', '.join(hidden)} have the name of a Module attribute: mod.{hidden[0]} "
                f"is the attribute; reach the kernel as mod['{hidden[0]}']."), stacklevel=3)
        self._variables = dict(variables or {})
        # The globals with a shadow (non-static, non-const, floating, not
        # declared inactive): what the helpers must isolate.
        self._shadowed = tuple(name[len(build.SHADOW_PREFIX):] for name in artifact.shared_globals
                               if name.startswith(build.SHADOW_PREFIX))
        self._shadows_lock = OwnedLock("a helper call", reentrant=True)
        self._shadow_use: dict[str, tuple[str, ...]] = {}
        self.globals = GlobalsView(self, shadows=False)
        self.shadows = GlobalsView(self, shadows=True)
        self._owner = next(_owner_ids)
        self._closed = False
        # This object is the module's shared state; compile() hands out
        # handles of it (_new_handle), and the libraries stay loaded until
        # the last open handle is closed.
        self._home = self
        self._handles_lock = threading.Lock()
        self._open_handles = 0

    def _new_handle(self) -> Module | None:
        """A new handle sharing this module's libraries, derivatives and
        checks, or None when the module was released meanwhile."""
        with self._handles_lock:
            if self._closed:
                return None
            self._open_handles += 1
        handle = object.__new__(Module)
        handle.__dict__.update(self.__dict__)
        handle._closed = False
        handle._kernels = {name: Kernel(handle, k.signature, home=k)
                           for name, k in self._kernels.items()}
        handle.globals = GlobalsView(handle, shadows=False, views=self.globals._views)
        handle.shadows = GlobalsView(handle, shadows=True, views=self.shadows._views)
        return handle

    @contextmanager
    def _wrt_arguments_only(self) -> Iterator[None]:
        """Run a helper (grad, jvp, vjp, jacobian ...) as a derivative with
        respect to its arguments only: every global's shadow is zero during
        the call (no tangent in forward mode, no earlier adjoint to leak into
        the arguments' in reverse mode) and holds its old value again after
        it. Calls of helpers on one module serialize here."""
        if not self._shadowed or self.isolate:  # (isolated: no derivative uses a shadow)
            yield
            return
        with self._shadows_lock:
            views = [self.shadows[name] for name in self._shadowed]
            saved = [view.copy() for view in views]
            for view in views:
                view[...] = 0
            try:
                yield
            finally:
                for view, old in zip(views, saved):
                    view[...] = old

    def _global_state(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """(save, restore) of every writable global's value: a check evaluates
        the kernel several times, each from the state of the checked call,
        with every global's shadow zero (a reverse pass leaves adjoints in
        them, which a forward pass would read as tangents)."""
        # (in this process: with isolate=True the check's child calls here)
        views = [self.globals._view(name) for name in self.globals]
        views = [v for v in views if v.flags.writeable]
        shadows = [self.shadows._view(name) for name in self._shadowed]

        def save() -> list[np.ndarray]:
            return [v.copy() for v in views]

        def restore(saved: list[np.ndarray]) -> None:
            for view, old in zip(views, saved):
                view[...] = old
            for shadow in shadows:
                shadow[...] = 0
        return save, restore

    def _shadows_used_by(self, so_path: str) -> tuple[str, ...]:
        """The globals whose shadows a derivative library refers to (it links
        to them by name, so their names are in its dynamic symbol table)."""
        if not self._shadowed:
            return ()
        used = self._shadow_use.get(so_path)
        if used is None:
            data = Path(so_path).read_bytes()
            used = tuple(name for name in self._shadowed
                         if (build.SHADOW_PREFIX + name).encode() + b"\0" in data)
            self._shadow_use[so_path] = used
        return used

    def _check_open(self) -> None:
        if self._closed:
            raise ModuleClosedError("this module was closed; compile it again to use it.")

    def close(self) -> None:
        """Unload the module's shared libraries (those no other module uses).

        Calling one of its kernels or derivatives afterwards raises
        :class:`ModuleClosedError`. A library whose globals were viewed
        through ``mod.globals``/``mod.shadows`` stays loaded (numpy views
        cannot be invalidated). Compiling the same source again after
        ``close()`` gives a new module, loaded from the disk cache.

        Examples
        --------
        >>> with compile("double half(double x) { return 0.5 * x; }") as mod:
        ...     mod.half(3.0)
        1.5
        """
        home = self._home
        with home._handles_lock:
            if self._closed or self is home:
                return
            self._closed = True
            home._open_handles -= 1
            if home._open_handles:
                return  # another compile() of the same code still uses it
            home._closed = True
        _known.forget(home)
        release_owner(home._owner)

    def __enter__(self) -> Module:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        """A module pickles as what built it: its sources' text, its options
        and the toolchain given to compile() (none: each process resolves
        its own). Unpickling compiles it again, which the disk cache makes
        a lookup when the cache is shared or the module was built there
        before; the values of its globals are not carried."""
        if self._recipe is None:
            raise NotPicklableError("this module was not made by enzyme.compile(): it cannot be pickled.")
        _ = self._recipe.digest  # (computed once, and carried)
        return _module_from_recipe, (self._recipe,)

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            if name in self._artifact.extra.get("cxx_linkage", ()):
                raise KernelNotFoundError(
                    f"'{name}' is a C++ function with C++ linkage: its symbol is mangled, so it "
                    f"cannot be called by name. Fix: declare it extern \"C\" (extern \"C\" "
                    f"double {name}(...) {{ ... }}, or inside an extern \"C\" {{ ... }} block); "
                    "its body may still use any C++.") from None
            raise KernelNotFoundError(
                f"the module defines no external function '{name}'; it has: "
                f"{', '.join(sorted(self._kernels)) or 'none'} (static functions are not "
                "exported).") from None

    def __getattr__(self, name: str) -> Kernel:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[Kernel]:
        return iter(self._kernels.values())

    def __contains__(self, name: str) -> bool:
        return name in self._kernels

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._kernels))

    def __repr__(self) -> str:
        return f"<enzyme.Module {', '.join(sorted(self._kernels))}>"


class GlobalsView(Mapping[str, CArray]):
    """The module's external global variables as numpy arrays viewing the
    C memory (``mod.globals``), or their Enzyme shadows (``mod.shadows``,
    for globals that can carry derivatives).

    Every library of a module (primal and derivatives) shares one copy of
    each external global, so a value set here is what the kernels and their
    derivatives see. A shadow accumulates the global's adjoint in reverse
    mode (zero it yourself, as with any shadow) and holds its tangent in
    forward mode. ``const`` globals are read-only views.

    Examples
    --------
    >>> mod = compile("double scale = 2.0; double f(double x) { return scale * x * x; }")
    >>> mod.globals["scale"][...] = 3.0
    >>> mod.f(1.0)
    3.0
    >>> from enzyme import Active, Reverse, autodiff
    >>> _ = autodiff(Reverse, mod.f, Active(2.0))
    >>> float(mod.shadows["scale"])
    4.0
    """

    def __init__(self, module: Module, shadows: bool,
                 views: dict[str, CArray] | None = None) -> None:
        self._module = module
        self._shadows = shadows
        self._views: dict[str, CArray] = {} if views is None else views

    def _names(self) -> list[str]:
        if self._shadows:
            return list(self._module._shadowed)
        return [name for name, var in self._module._variables.items() if var.viewable]

    def __getitem__(self, name: str) -> CArray:
        if self._module.isolate:
            raise GlobalNotFoundError(
                f"globals of a module compiled with isolate=True live in its worker process; "
                f"'{name}' cannot be viewed from here. Pass the value as an argument, or compile "
                "without isolate=True.")
        return self._view(name)

    def _view(self, name: str) -> CArray:
        view = self._views.get(name)
        if view is not None:
            return view
        var = self._module._variables.get(name)
        if var is not None and not self._shadows and not var.viewable:
            raise GlobalNotFoundError(f"the global '{name}' ({var.location}) cannot be viewed: "
                                      f"{var.why_not_viewable}.")
        if var is None or name not in self._names():
            what = "global that can carry derivatives" if self._shadows else "viewable global"
            raise GlobalNotFoundError(f"the module has no {what} '{name}'; it has: "
                                      f"{', '.join(self._names()) or 'none'} (static and "
                                      "hidden-visibility globals are private to each library and "
                                      "not viewable).")
        symbol = build.SHADOW_PREFIX + name if self._shadows else name
        view = global_view(self._module._artifact.so_path, symbol, var,
                           read_only=var.const and not self._shadows)
        self._views[name] = view
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"<enzyme {'shadows' if self._shadows else 'globals'}: {', '.join(self._names())}>"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What compile() built a module from: its sources (text and names),
    options and the toolchain it was given. A module pickles as this."""

    inputs: tuple[build.SourceInput, ...]
    options: CompileOptions
    toolchain: _toolchain_stage.Toolchain | None

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(pickle.dumps((self.inputs, self.options, self.toolchain),
                                           protocol=4)).hexdigest()



def _module_from_recipe(recipe: Recipe) -> Module:
    """A handle of the module ``recipe`` builds: the one this process has
    (unpickling the same module twice loads it once), else compiled, which
    the disk cache makes a lookup when it was built before."""
    return _handle_of(("recipe", recipe.digest),
                      lambda: _compile(list(recipe.inputs), recipe.options, recipe.toolchain))


def _kernel_of(module: Module, name: str) -> Kernel:
    return module[name]


class _KnownModules:
    """The in-process memo of modules (their shared state), found by an
    identical compile() call (a few stat() calls) or, after the build stage
    found the artifact, by the artifact and the options that change checks
    but not code. :meth:`forget` is the one place a module is dropped; the
    loaded libraries and built derivatives live with the module itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_call: dict[tuple, Module] = {}
        self._by_artifact: dict[tuple, tuple[build.ModuleArtifact, Module]] = {}

    def for_call(self, key: tuple | None) -> Module | None:
        return self._by_call.get(key) if key is not None else None

    def for_artifact(self, key: tuple, artifact: build.ModuleArtifact) -> Module | None:
        known = self._by_artifact.get(key)
        if known is not None and known[0] is artifact and not known[1]._closed:
            return known[1]
        return None

    def remember(self, module: Module, call_key: tuple | None = None,
                 artifact_key: tuple | None = None) -> None:
        with self._lock:
            if call_key is not None:
                self._by_call[call_key] = module
            if artifact_key is not None:
                self._by_artifact[artifact_key] = (module._artifact, module)

    def forget(self, module: Module) -> None:
        with self._lock:
            for key in [k for k, m in self._by_call.items() if m is module]:
                del self._by_call[key]
            for key in [k for k, (_, m) in self._by_artifact.items() if m is module]:
                del self._by_artifact[key]


_known = _KnownModules()
_log = logging.getLogger("enzyme")


_owner_ids = itertools.count(1)  # 0 is call.PERMANENT_OWNER


def _names_a_file(source: str) -> bool:
    """compile("model.c") names a file; anything with a newline is C text."""
    return "\n" not in source and source.strip().endswith((".c", ".h", *build.CXX_SUFFIXES))


_LANGUAGES = {"c": "c", "c++": "c++", "cxx": "c++", "cpp": "c++"}


def _language_of(file: str | os.PathLike) -> str:
    """A file's language by its name: C++ for the endings clang reads as
    C++, else C (language= and a compilation database come first)."""
    return "c++" if str(file).endswith(build.CXX_SUFFIXES) else "c"


def _check_text(text: str, what: str) -> str:
    """Text that can become a command-line argument or a file."""
    if "\0" in text:
        raise OptionError(f"{what}: {text[:80]!r} contains a NUL byte, which no command-line "
                          "argument or file can hold.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OptionError(f"{what}: the text is not valid Unicode ({exc.reason} at position "
                          f"{exc.start}: {text[max(exc.start - 20, 0):exc.start + 20]!r}).") from None
    return text


def _text_list(value: Any, what: str) -> tuple[str, ...]:
    """A list-of-strings option, checked. One string instead of a list used to
    be iterated character by character (flags="-O2" became -O and 2)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, os.PathLike)):
        shown = os.fspath(value) if not isinstance(value, bytes) else value
        raise OptionTypeError(f"{what}= takes a list of strings, got the single "
                              f"{type(value).__name__} {shown!r}: write {what}=[{shown!r}].")
    try:
        items = list(value)
    except TypeError:
        raise OptionTypeError(f"{what}= takes a list of strings, got "
                              f"{type(value).__name__}.") from None
    checked = []
    for item in items:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise OptionTypeError(f"{what}= takes strings, got {item!r} ({type(item).__name__}).")
        checked.append(_check_text(item, what))
    return tuple(checked)


def _define_list(defines: Any) -> tuple[str, ...]:
    """defines= as -D arguments: a mapping {name: value or None} or a list
    of "NAME" / "NAME=value" strings."""
    if defines is None:
        return ()
    if isinstance(defines, Mapping):
        out = []
        for name, value in defines.items():
            if not isinstance(name, str) or not name:
                raise OptionTypeError(f"defines= names must be non-empty strings, got {name!r}.")
            if value is not None and not isinstance(value, (str, int, float)):
                raise OptionTypeError(f"defines['{name}'] must be a string, a number or None, "
                                      f"got {type(value).__name__}.")
            out.append(_check_text(name if value is None else f"{name}={value}", "defines"))
        return tuple(out)
    return _text_list(defines, "defines")


def _source_inputs(source: str | None, path: str | os.PathLike | None,
                   sources: Iterable[str | os.PathLike] | None,
                   language: str | None = None,
                   compile_commands: str | None = None) -> list[build.SourceInput]:
    given = [x is not None for x in (source, path, sources)]
    database = read_database(compile_commands) if compile_commands else None
    if database is not None and not any(given):
        if not database:
            raise CompileError(f"the compilation database {compile_commands} lists no files.")
        sources = sorted(database)  # the whole project
        given = [False, False, True]
    if sum(given) != 1:
        raise OptionTypeError("give exactly one of: source text, path=, or sources=[...] (or "
                              "compile_commands= alone, for every file it lists)")
    files: list[str | os.PathLike] = []
    if source is not None:
        if not isinstance(source, str):
            raise OptionTypeError(f"source must be C source text or a path, got "
                                  f"{type(source).__name__}")
        _check_text(source, "source")
        if _names_a_file(source):
            files = [source.strip()]
        else:
            return [build.SourceInput(source, "<source>", language=language or "c")]
    elif path is not None:
        files = [path]
    else:
        files = list(_text_list(sources, "sources"))
        if not files:
            raise OptionTypeError("sources= is empty")
    inputs = []
    for file in files:
        if not isinstance(file, (str, os.PathLike)):
            raise OptionTypeError(f"path= takes a file name, got {type(file).__name__}.")
        _check_text(os.fspath(file), "path")
        try:
            # A FIFO or a device would be read forever (or into all memory)
            # before any tool, and its timeout, runs.
            if not stat.S_ISREG(os.stat(file).st_mode):
                raise CompileError(f"{file} is not a regular file (a device, FIFO or directory); "
                                   "give the path of a C or C++ source file.")
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CompileError(f"cannot read C source {file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise CompileError(f"{file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                               f"offset {exc.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t "
                               "utf-8`).") from None
        entry = None
        if database is not None:
            entry = database.get(os.path.normpath(os.path.abspath(file))) or \
                database.get(os.path.realpath(file))
            if entry is None:
                raise CompileError(f"{file} is not in the compilation database {compile_commands}; "
                                   "its flags are unknown. Fix: list a file the project builds, "
                                   "or pass its flags with include_dirs=/defines=/flags= instead.")
        inputs.append(build.SourceInput(
            text, str(file), os.path.abspath(file),
            language or (entry.language if entry else _language_of(file)),
            entry.flags if entry else ()))
    return inputs


@dataclass(frozen=True)
class CompileOptions:
    """compile()'s options, checked and normalised once (tuples, sorted
    mappings): what the code generation and the build read, and, being
    hashable, part of the key of the in-process memo of modules."""

    include_dirs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()  # as -D arguments: "NAME" or "NAME=value"
    flags: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    library_dirs: tuple[str, ...] = ()
    forward_rules: tuple[tuple[str, str], ...] = ()
    reverse_rules: tuple[tuple[str, tuple[str, str]], ...] = ()
    inactive: tuple[str, ...] = ()
    inactive_globals: tuple[str, ...] = ()
    sizes: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    loose_types: bool = False
    runtime_activity: bool = False
    enzyme_flags: tuple[str, ...] = ()
    native_cpu: bool = True
    split_long_blocks: bool = True
    vector_math: bool = True
    reassociate: bool = False
    verify: bool = True
    isolate: bool = False
    language: str | None = None  # None: by file name ending (text: C)
    compile_commands: str | None = None  # a compilation database (absolute path)

    @classmethod
    def from_arguments(cls, *, include_dirs: Any = (), defines: Any = None, flags: Any = (),
                       libraries: Any = (), library_dirs: Any = (), forward_rules: Any = None,
                       reverse_rules: Any = None, inactive: Any = (), inactive_globals: Any = (),
                       sizes: Any = None, loose_types: Any = False, runtime_activity: Any = False,
                       enzyme_flags: Any = (), native_cpu: Any = True, split_long_blocks: Any = True,
                       verify: Any = None, isolate: Any = False,
                       language: Any = None, compile_commands: Any = None, vector_math: Any = True,
                       reassociate: Any = False) -> CompileOptions:
        """Check and normalise compile()'s keyword arguments (OptionError /
        OptionTypeError for what cannot be used)."""
        if verify is None:
            verify = _verify_by_default()
        for name, rules in (("forward_rules", forward_rules), ("reverse_rules", reverse_rules)):
            if rules is not None and not isinstance(rules, Mapping):
                raise OptionTypeError(f"{name}= takes a mapping {{function: rule}}, got "
                                      f"{type(rules).__name__}.")
        for name, flag in (("verify", verify), ("isolate", isolate), ("loose_types", loose_types),
                           ("runtime_activity", runtime_activity), ("native_cpu", native_cpu),
                           ("split_long_blocks", split_long_blocks), ("vector_math", vector_math),
                           ("reassociate", reassociate)):
            # (bool("no") is True: a string here would silently mean the opposite)
            if not isinstance(flag, (bool, np.bool_)):
                raise OptionTypeError(f"{name}= takes True or False, got {flag!r}.")
        forward_rules = dict(forward_rules or {})
        reverse_rules = dict(reverse_rules or {})
        # (a name listed twice made two registrations clang rejected)
        inactive = tuple(dict.fromkeys(_text_list(inactive, "inactive")))
        inactive_globals = tuple(dict.fromkeys(_text_list(inactive_globals, "inactive_globals")))
        _check_rules(forward_rules, reverse_rules, inactive, inactive_globals)
        if sizes is not None and not isinstance(sizes, Mapping):
            raise OptionTypeError(f"sizes= takes a mapping {{kernel: {{parameter: expression}}}}, "
                                  f"got {type(sizes).__name__}.")
        checked_sizes = []
        for kernel, lengths in (sizes or {}).items():
            if not isinstance(lengths, Mapping):
                raise OptionTypeError(f"sizes['{kernel}'] takes a mapping {{parameter: "
                                      f"expression}}, got {type(lengths).__name__}.")
            checked_sizes.append((str(kernel), tuple(sorted((str(k), str(v))
                                                             for k, v in lengths.items()))))
        if language is not None and (not isinstance(language, str)
                                     or language.lower() not in _LANGUAGES):
            raise OptionError(f"language= is 'c' or 'c++' (None: C++ for files ending in "
                              f"{', '.join(build.CXX_SUFFIXES[:4])}, else C), got {language!r}.")
        return cls(
            include_dirs=_text_list(include_dirs, "include_dirs"), defines=_define_list(defines),
            flags=_text_list(flags, "flags"), libraries=_text_list(libraries, "libraries"),
            library_dirs=_text_list(library_dirs, "library_dirs"),
            forward_rules=tuple(sorted(forward_rules.items())),
            reverse_rules=tuple(sorted((fn, tuple(pair)) for fn, pair in reverse_rules.items())),
            inactive=inactive, inactive_globals=inactive_globals,
            sizes=tuple(sorted(checked_sizes)), loose_types=bool(loose_types),
            runtime_activity=bool(runtime_activity),
            enzyme_flags=_text_list(enzyme_flags, "enzyme_flags"), native_cpu=bool(native_cpu),
            split_long_blocks=bool(split_long_blocks), verify=bool(verify), isolate=bool(isolate),
            vector_math=bool(vector_math), reassociate=bool(reassociate),
            language=_LANGUAGES[language.lower()] if language is not None else None,
            compile_commands=(os.path.abspath(_check_text(os.fspath(compile_commands),
                                                          "compile_commands"))
                              if _path_like(compile_commands, "compile_commands") else None))


def _path_like(value: Any, what: str) -> bool:
    """Whether an optional path option was given (and is a path)."""
    if value is None:
        return False
    if not isinstance(value, (str, os.PathLike)):
        raise OptionTypeError(f"{what}= takes a file path, got {type(value).__name__}.")
    return True


def _verify_by_default() -> bool:
    return os.environ.get("ENZYME_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")


# compile()'s keyword defaults, in the order compile() lists them, and the
# options they give (by the environment's ENZYME_VERIFY)
_DEFAULT_ARGUMENTS = ((), None, (), (), (), None, None, (), (), None, False, False, (), True, True,
                      None, False, None, None, True, False)
_default_options = {verify: CompileOptions(verify=verify) for verify in (False, True)}


def compile(source: str | None = None, *, path: str | os.PathLike | None = None,
            sources: Sequence[str | os.PathLike] | None = None,
            include_dirs: Sequence[str | os.PathLike] = (),
            defines: Mapping[str, str | int | None] | Sequence[str] | None = None,
            flags: Sequence[str] = (), libraries: Sequence[str] = (),
            library_dirs: Sequence[str | os.PathLike] = (),
            forward_rules: Mapping[str, str] | None = None,
            reverse_rules: Mapping[str, tuple[str, str]] | None = None,
            inactive: Sequence[str] = (), inactive_globals: Sequence[str] = (),
            sizes: Mapping[str, Mapping[str, str]] | None = None,
            loose_types: bool = False, runtime_activity: bool = False,
            enzyme_flags: Sequence[str] = (), native_cpu: bool = True,
            split_long_blocks: bool = True, verify: bool | None = None, isolate: bool = False,
            language: str | None = None,
            compile_commands: str | os.PathLike | None = None,
            vector_math: bool = True, reassociate: bool = False,
            toolchain: _toolchain_stage.Toolchain | None = None) -> Module:
    """Compile C code and return a :class:`Module` of callable, differentiable kernels.

    Parameters
    ----------
    source : str, optional
        C source text, or the path of one ``.c`` (or C++) file.
    path : path-like, optional
        One C or C++ file.
    sources : sequence of path-like, optional
        Several C and C++ files, linked into one module. Files ending in
        ``.cpp``, ``.cc``, ``.cxx``, ``.c++``, ``.cp`` or ``.C`` are C++
        (compiled with clang as C++, the module linked with libstdc++); the
        kernels of a C++ file are its ``extern "C"`` functions.
    include_dirs, defines, flags, libraries, library_dirs
        ``-I``, ``-D``, extra clang flags (e.g. ``-ffast-math``), ``-l``
        libraries and their ``-L`` directories (also used as run paths).
        ``enzyme.get_include()`` is always on the include path.
    forward_rules : mapping, optional
        ``{"f": "f_fwd"}``: use C function ``f_fwd`` as the forward-mode
        derivative of ``f`` (see ``ENZYME_CUSTOM_DERIVATIVE`` in the header
        for the rule's signature). ``f`` may have no body (a library call).
    reverse_rules : mapping, optional
        ``{"f": ("f_aug", "f_rev")}``: augmented forward pass and reverse pass
        for ``f`` (``ENZYME_CUSTOM_GRADIENT``).
    inactive, inactive_globals : sequence of str, optional
        Functions whose calls are not differentiated (logging, timers, RNG;
        they may have no body) and globals holding no derivative information.
    sizes : mapping, optional
        Length contracts per kernel, ``{"loss": {"w": "n", "out": "2*n"}}``:
        before every call, each array (and shadow) must hold at least that
        many elements. The same as ``ENZYME_LEN(...)`` in the C declaration;
        Python's entries win.
    loose_types : bool
        Let Enzyme's type analysis guess where it cannot deduce a type
        (``-enzyme-loose-types``). Check the numbers when you need it.
    runtime_activity : bool
        Decide activity at run time (``enzyme_runtime_activity``), for code
        whose activity Enzyme cannot settle statically.
    enzyme_flags : sequence of str
        Extra ``-enzyme-*`` options for the Enzyme pass (expert use; part of
        the cache key).
    native_cpu : bool
        Optimise for this machine's CPU (the target features of
        ``-march=native``; the default, as numba does). They are applied
        after Enzyme has run: Enzyme differentiates the generic x86-64 code
        of the reference chain (with AVX2 before Enzyme, the vectorizer's
        masked gathers made a reverse derivative fail). Cached code is keyed
        by the CPU, so a cache shared by different machines never runs one
        machine's code on another. Pass False for code that must run on any
        x86-64.
    split_long_blocks : bool
        Before Enzyme runs, cut basic blocks longer than 256 instructions
        (1,000 inside loops) into outlined 32-instruction pieces, so compile
        time grows linearly with the length of straight-line code (Enzyme's
        activity analysis is quadratic in it: 1,000 generated statements take
        17 s whole, 3.6 s cut). Pieces of blocks up to 2,000 instructions are
        inlined back after differentiation; inside loops each piece costs a
        tape allocation per iteration, so pass False for a long loop body
        whose run time matters more than its compile time. Needs the pass
        built at install time (``python -m enzyme doctor`` says whether it is
        there).
    vector_math : bool
        After Enzyme has run, let loops that call libm functions (``exp``,
        ``log``, ``tanh``, ``erfc``, ``pow``, ...) vectorize with glibc's
        vector math library, libmvec (x86-64 with glibc 2.35 or later for most
        functions; elsewhere this does nothing). Its functions are accurate to
        4 ulp (glibc's bound) where libm's are to 1: results may differ from
        scalar libm in the last bits (see docs/performance.md
        for what was measured). Pass False for libm's own results.
    reassociate : bool
        Let clang reorder floating-point sums and products (and assume no
        signed zeros and no floating-point traps), so that reductions such
        as ``s += x[i] * x[i]`` vectorize: often 2-4x faster loops, with
        rounding that depends on the vector width. NaN and infinity keep
        their meaning (this is not ``-ffast-math``). Default False.
    verify : bool, optional
        Check every derivative entry point once, on its first call: the
        dot-product test against the other mode (forward for a reverse
        derivative and the reverse), on copies of the call's arguments, with
        central differences breaking a tie; raise
        :class:`DerivativeMismatchError` rather than return a wrong number.
        Costs one build of the other mode and a few extra calls the first
        time (see docs/helpers/check.md); later calls cost nothing. Default: on, unless
        the environment variable ``ENZYME_VERIFY`` is ``0``.
    isolate : bool
        Run every call of the module's kernels and derivatives in a worker
        process, for code you do not trust yet: a segfault, ``abort()`` or
        stack overflow there raises :class:`KernelCrashError` and the next
        call starts a new worker. Each call copies its arrays to shared
        memory and back (docs/safety.md gives the cost); globals live in the
        worker, so ``mod.globals`` is not available. No C fast path.
    language : {"c", "c++"}, optional
        The language of source text (default C), or of every file (default:
        by file name ending, as above).
    compile_commands : path-like, optional
        A compilation database (``compile_commands.json``, from CMake's
        ``CMAKE_EXPORT_COMPILE_COMMANDS`` or Bear): each file of ``sources``
        (or ``path``) is read with its own include directories, definitions,
        language and standard from it. Without ``sources``, every file it
        lists is compiled into the module.
    toolchain : Toolchain, optional
        From :func:`enzyme.toolchain.resolve`; resolved automatically otherwise.

    Returns
    -------
    Module

    Raises
    ------
    CompileError
        clang's diagnostics, with file:line:col and the source line.
    ToolchainError
        The toolchain is missing or mismatched (see ``python -m enzyme doctor``).

    Examples
    --------
    >>> mod = compile("double sq(double x) { return x * x; }")
    >>> mod.sq(3.0)
    9.0
    """
    # A repeated call with the same arguments, unchanged files and the same
    # environment returns a new handle of the same module after a few stat()
    # calls: closing one handle never closes another's.
    given = (include_dirs, defines, flags, libraries, library_dirs, forward_rules, reverse_rules,
             inactive, inactive_globals, sizes, loose_types, runtime_activity, enzyme_flags,
             native_cpu, split_long_blocks, verify, isolate, language, compile_commands, vector_math,
             reassociate)
    # (types first: an array among the arguments would make == ambiguous)
    if all(type(a) is type(d) for a, d in zip(given, _DEFAULT_ARGUMENTS)) \
            and given == _DEFAULT_ARGUMENTS:
        # compile(source) alone, the common repeated call: nothing to check
        # but the environment's ENZYME_VERIFY
        options = _default_options[_verify_by_default()]
    else:
        options = CompileOptions.from_arguments(
            include_dirs=include_dirs, defines=defines, flags=flags, libraries=libraries,
            library_dirs=library_dirs, forward_rules=forward_rules, reverse_rules=reverse_rules,
            inactive=inactive, inactive_globals=inactive_globals, sizes=sizes,
            loose_types=loose_types, runtime_activity=runtime_activity, enzyme_flags=enzyme_flags,
            native_cpu=native_cpu, split_long_blocks=split_long_blocks, verify=verify,
            isolate=isolate, language=language, compile_commands=compile_commands,
            vector_math=vector_math, reassociate=reassociate)
    return _handle_of(_call_key(source, path, sources, options, toolchain), lambda: _compile(
        _source_inputs(source, path, sources, options.language, options.compile_commands),
        options, toolchain))


def _handle_of(call_key: tuple | None, build_module: Callable[[], Module]) -> Module:
    """A new handle of the module known by ``call_key`` (unless its headers
    changed), else of the module ``build_module`` returns."""
    known = _known.for_call(call_key)
    if known is not None and build.headers_unchanged(known._artifact):
        handle = known._new_handle()
        if handle is not None:
            return handle
    while True:
        module = build_module()
        _known.remember(module, call_key=call_key)
        handle = module._new_handle()
        if handle is not None:  # else its last handle was closed meanwhile: load it again
            return handle




_ENV = ("ENZYME_PLUGIN", "ENZYME_CLANG", "ENZYME_OPT", "ENZYME_CACHE_DIR", "XDG_CACHE_HOME")


def _call_key(source: Any, path: Any, sources: Any, options: CompileOptions,
              toolchain: Any) -> tuple | None:
    """What makes an identical compile() call: the options, the source text
    or the files' identities (path, size, mtime, inode), the toolchain, the
    working directory (relative paths depend on it) and the environment
    variables that choose tools and the cache."""
    files = []
    if isinstance(source, str) and _names_a_file(source):
        files.append(source.strip())
    if path is not None:
        files.append(path)
    if sources is not None and not isinstance(sources, (str, bytes, os.PathLike)):
        files += list(sources)
    if options.compile_commands:
        if not files:
            return None  # every file the database lists: read it to know them
        files.append(options.compile_commands)
    try:
        stamps = []
        for file in files:
            st = os.stat(file)
            stamps.append((os.path.abspath(file), st.st_size, st.st_mtime_ns, st.st_ino))
        key = (source if not files else None, tuple(stamps), options, toolchain, os.getcwd(),
               tuple(os.environ.get(v) for v in _ENV))
        hash(key)
    except (OSError, TypeError, ValueError):
        return None  # unreadable file, NUL in a name, unhashable argument: no shortcut
    return key


def _compile(inputs: list[build.SourceInput], options: CompileOptions,
             toolchain: _toolchain_stage.Toolchain | None) -> Module:
    """Build (or load from the disk cache) the module of ``inputs``: the
    shared state that compile() hands out handles of."""
    recipe = Recipe(tuple(inputs), options, toolchain)
    tc = _resolve_toolchain(toolchain)
    args = [f"-I{os.path.abspath(d)}" for d in options.include_dirs]
    args += [f"-D{d}" for d in options.defines]
    args += [*options.flags, f"-I{get_include()}"]
    if options.reassociate:
        args += list(build.REASSOCIATE_FLAGS)
    forward_rules, reverse_rules = dict(options.forward_rules), dict(options.reverse_rules)
    inactive, inactive_globals = options.inactive, options.inactive_globals
    rule_functions = {fwd for fwd in forward_rules.values()} | {
        name for pair in reverse_rules.values() for name in pair}
    if rule_functions or inactive or inactive_globals:
        inputs.append(build.SourceInput(
            generate_registrations(forward_rules, reverse_rules, inactive, inactive_globals),
            "<enzyme-ffi registrations>"))
    if any("cblas_" in source.text for source in inputs):
        # helpers Enzyme's BLAS rules call that CBLAS does not define
        inputs.append(build.SourceInput(generate_blas_support(), "<enzyme-ffi BLAS support>"))
    link_args = []
    for directory in options.library_dirs:
        directory = os.path.abspath(directory)
        link_args += [f"-L{directory}", f"-Wl,-rpath,{directory}"]
    link_args += [f"-l{lib}" for lib in options.libraries]
    if "-fopenmp" in options.flags:
        link_args.append("-fopenmp")  # clang links its own OpenMP runtime
    if any(i.language == "c++" for i in inputs):
        link_args.append("-lstdc++")  # (the libraries are linked by clang's C driver)
    languages = [i.language for i in inputs]
    file_args = [i.flags for i in inputs]

    def describe(paths: list[str], cache_dir: str | None = None) -> build.ModuleFacts:
        done = build.run_tool(worker_command(),
                              input=parse_request(paths, args, tc.resource_dir, tc.libclang,
                                                  languages, file_args, cache_dir))
        census: dict = {}
        signatures, variables = read_worker_reply(done.stdout, done.returncode, done.stderr, census)
        _check_rule_targets(census, forward_rules, reverse_rules, inactive, inactive_globals)
        # Enzyme's own globals (markers, registrations) must stay defined in
        # every library: Enzyme reads their initializers.
        user = [v for v in variables.values()
                if not v.name.startswith(("enzyme_", "__enzyme_"))]
        custom_rules = bool(forward_rules or reverse_rules) or any(
            name.startswith(("__enzyme_register_", "__enzyme_function_like"))
            for name in census.get("variables", {}))
        return build.ModuleFacts(
            extra={"signatures": [s.to_json() for s in signatures.values()],
                   "globals": [v.to_json() for v in user], "custom_rules": custom_rules,
                   "cxx_linkage": sorted(set(census.get("cxx_linkage", ()))),
                   "calls_enzyme": any(_ENZYME_CALL.search(source.text) for source in inputs)},
            shared_globals=tuple(v.name for v in user),
            shadowed_globals=tuple((v.name, v.size) for v in user
                                   if v.active and v.name not in inactive_globals))

    opt_flags = (("-enzyme-loose-types",) if options.loose_types else ()) + options.enzyme_flags
    artifact = build.build_module(tc, inputs, args, tuple(link_args), describe, opt_flags,
                                  options.native_cpu, options.split_long_blocks, options.vector_math)
    # Contracts change checks, not code: the same artifact with other sizes=
    # is another Module.
    memo_key = (artifact.key, options.sizes, options.runtime_activity, options.verify,
                options.isolate)
    known = _known.for_artifact(memo_key, artifact)
    if known is not None:
        return known
    signatures = {s["name"]: Signature.from_json(s) for s in artifact.extra["signatures"]}
    variables = {v["name"]: GlobalVar.from_json(v) for v in artifact.extra.get("globals", ())}
    for kernel_name, lengths in options.sizes:
        if kernel_name not in signatures:
            raise ContractError(f"sizes: the module defines no function '{kernel_name}'.")
        signatures[kernel_name] = with_lengths(signatures[kernel_name], dict(lengths))
    missing = sorted(name for name in rule_functions if name not in signatures)
    if missing:
        raise CompileError(f"the derivative rule function(s) {', '.join(missing)} named in "
                           "forward_rules/reverse_rules are not defined (as non-static functions) "
                           "in the sources.")
    module = Module(artifact, tc, signatures, variables, runtime_activity=options.runtime_activity,
                    verify=options.verify, isolate=options.isolate, recipe=recipe)
    _known.remember(module, artifact_key=memo_key)
    return module


# C code that calls Enzyme itself (see build.build_derivative)
_ENZYME_CALL = re.compile(r"__enzyme_(autodiff|fwddiff|augmentfwd|reverse|batch)")

_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_rules(forward_rules: dict, reverse_rules: dict, inactive: Sequence[str],
                 inactive_globals: Sequence[str]) -> set[str]:
    """Check that every name is a C identifier; return the rule functions,
    which must be defined in the module."""
    def identifier(name: Any, what: str) -> str:
        if not isinstance(name, str) or not _C_IDENTIFIER.match(name):
            raise OptionTypeError(f"{what}: {name!r} is not a C function or variable name.")
        return name

    rules: set[str] = set()
    for fn, fwd in forward_rules.items():
        identifier(fn, "forward_rules key")
        rules.add(identifier(fwd, f"forward_rules['{fn}']"))
    for fn, pair in reverse_rules.items():
        identifier(fn, "reverse_rules key")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise OptionTypeError(f"reverse_rules['{fn}'] must be a pair (augmented_forward, "
                                  f"reverse) of C function names, got {pair!r}.")
        rules.update(identifier(name, f"reverse_rules['{fn}']") for name in pair)
    for name in inactive:
        identifier(name, "inactive")
    for name in inactive_globals:
        identifier(name, "inactive_globals")
    return rules


def _check_rule_targets(census: dict, forward_rules: dict, reverse_rules: dict,
                        inactive: Sequence[str], inactive_globals: Sequence[str]) -> None:
    """Check the names given to compile() against what the sources declare,
    before Enzyme runs: a misspelt or static function is otherwise silently
    ignored, and a rule of the wrong shape crashes Enzyme."""
    functions, variables = census.get("functions", {}), census.get("variables", {})

    def unknown(name: str, what: str, pool: Mapping) -> OptionError:
        close = difflib.get_close_matches(name, list(pool), n=3)
        return OptionError(f"{what} names '{name}', which the sources do not declare"
                           + (f" (did you mean {', '.join(close)}?)" if close else "")
                           + ". Check the spelling, or declare it in the sources.")

    def function(name: str, what: str) -> dict:
        found = functions.get(name)
        if found is None:
            if name in variables:
                raise OptionError(f"{what}: '{name}' is a global variable, not a function"
                                  + (" (list it in inactive_globals=)" if what == "inactive" else "")
                                  + ".")
            raise unknown(name, what, functions)
        if found["static"]:
            raise OptionError(f"{what}: '{name}' is a static function, which Enzyme's registration "
                              "cannot reach from another file; remove `static` (or write the "
                              "registration in the same file with the header's macros).")
        return found

    for fn, fwd in forward_rules.items():
        target, rule = function(fn, "forward_rules"), function(fwd, f"forward_rules['{fn}']")
        n, m = target["nparams"], rule["nparams"]
        least = n + target.get("nfloating", 0)  # a floating scalar always has its tangent
        if n >= 0 and m >= 0 and not least <= m <= 2 * n:
            raise OptionError(
                f"forward_rules['{fn}']: '{fwd}' takes {m} parameter(s), but a forward rule of "
                f"'{fn}' ({n} parameter(s)) takes each of them followed by its tangent "
                f"({least if least == 2 * n else f'{least} to {2 * n}'}).")
        if target["ret"] == "void" and rule["ret"] != "void":
            raise OptionError(f"forward_rules['{fn}']: '{fn}' returns nothing, so '{fwd}' must "
                              "return void (it writes the output tangents through pointers).")
        if target["ret"] == "floating" and (rule["ret"] != "struct" or rule["ret_fields"] != 2):
            raise OptionError(
                f"forward_rules['{fn}']: '{fn}' returns a floating value, so '{fwd}' must return a "
                "struct of two of them, { primal, tangent } (see docs/custom-derivatives.md).")
    for fn, (aug, rev) in reverse_rules.items():
        target = function(fn, "reverse_rules")
        aug_info = function(aug, f"reverse_rules['{fn}'][0]")
        rev_info = function(rev, f"reverse_rules['{fn}'][1]")
        if aug_info["ret"] != "pointer":
            raise OptionError(
                f"reverse_rules['{fn}']: the augmented forward pass '{aug}' must return a tape "
                f"pointer (void *, may be NULL); it returns {aug_info['ret']}"
                + (" (are the augmented and reverse passes swapped?)" if rev_info["ret"] == "pointer"
                   else "") + ".")
        n = target["nparams"]
        if n >= 0 and rev_info["nparams"] >= 0 and rev_info["nparams"] < n + 1:
            raise OptionError(
                f"reverse_rules['{fn}']: the reverse pass '{rev}' takes {rev_info['nparams']} "
                f"parameter(s); it takes '{fn}''s {n} (each pointer followed by its shadow) and the "
                "tape last.")
    for name in inactive:
        function(name, "inactive")
    for name in inactive_globals:
        if name not in variables:
            if name in functions:
                raise OptionError(f"inactive_globals: '{name}' is a function, not a global "
                                  "variable (list it in inactive=).")
            raise unknown(name, "inactive_globals", variables)


def _param_index(kernel: Kernel, which: int | str, what: str) -> int:
    params = kernel.signature.params
    if isinstance(which, str):
        for i, param in enumerate(params):
            if param.name == which:
                return i
        raise ActivityError(f"{what}='{which}': '{kernel.name}' has no parameter of that name "
                            f"({', '.join(p.name for p in params)}).")
    if not isinstance(which, (int, np.integer)) or not -len(params) <= which < len(params):
        raise ActivityError(f"{what}={which!r} is not a parameter index of '{kernel.name}' "
                            f"({len(params)} parameters).")
    return int(which) % len(params)
