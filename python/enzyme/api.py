"""The orchestrator: the public API, wiring the stages together.

toolchain -> signature -> activity -> codegen -> build -> call. This is the
only module that imports several stages.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import build
from . import toolchain as _toolchain_stage
from . import verify as _verify
from .activity import (
    MAX_WIDTH,
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Mode,
    Reverse,
    ReverseWithPrimal,
    activity_class_of,
    resolve_activities,
    resolve_hvp,
)
from .activity import Annotation as _Annotation
from .call import (
    DerivativeFunction,
    HvpFunction,
    OwnedLock,
    PrimalFunction,
    SplitFunctions,
    aligned_like,
    aligned_zeros,
    global_view,
    numpy_dtype,
    release_owner,
    tape_size,
)
from .codegen import (
    generate_derivative,
    generate_hvp,
    generate_primal_wrapper,
    generate_registrations,
    generate_split,
    primal_cdef,
)
from .errors import (
    ActivityError,
    CompileError,
    ContractError,
    DifferentiationError,
    EnzymeError,
    EnzymeWarning,
    ModuleClosedError,
    OptionError,
    OptionTypeError,
)
from .signature import (
    GlobalVar,
    Signature,
    parse_request,
    read_worker_reply,
    with_lengths,
    worker_command,
)

__all__ = ["compile", "Module", "Kernel", "autodiff", "autodiff_thunk", "derivative", "grad",
           "aligned_zeros", "aligned_like",
           "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "hvp", "KernelNotFoundError",
           "get_include", "GlobalNotFoundError", "GlobalsView"]


def get_include() -> str:
    """Directory of the shipped C header, for ``#include <enzyme/enzyme.h>``.

    Examples
    --------
    >>> import os, enzyme
    >>> os.path.exists(os.path.join(enzyme.get_include(), "enzyme", "enzyme.h"))
    True
    """
    return _INCLUDE_DIR


_INCLUDE_DIR = str(Path(__file__).resolve().parent / "include")


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
        return tc
    env = tuple(os.environ.get(v) for v in ("ENZYME_PLUGIN", "ENZYME_CLANG", "ENZYME_OPT"))
    with _toolchain_lock:
        if _default_toolchain is None or _default_toolchain[0] != env:
            _default_toolchain = (env, _toolchain_stage.resolve())
        return _default_toolchain[1]


class Kernel:
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

    def dtype(self, param: int | str) -> np.dtype:
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

    def __call__(self, *args: Any) -> Any:
        primal = self._primal
        if primal is None or self.module._closed:
            primal = self._primal_function()  # raises ModuleClosedError when closed
        return primal(*args)

    def _bind(self, fn: Any) -> Any:
        """A copy of a shared derivative callable that belongs to this
        kernel's module handle (closing the handle closes the copy)."""
        bound = self._bound.get(id(fn))
        if bound is None:
            bound = copy.copy(fn)
            bound._handle = self.module
            bound = self._bound.setdefault(id(fn), bound)
        return bound

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
                                        self.module._owner, isolate=self.module.isolate)
            else:
                primal = PrimalFunction(self.signature, self.module._artifact.so_path,
                                        primal_cdef(self.signature), owner=self.module._owner,
                                        isolate=self.module.isolate)
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
        key = (mode, kinds, ret, width)
        found = self._derivatives.get(key)
        if found is None:
            home = self._home
            other = None
            if self.module.verify and not _verify.verifying():
                other = home._prebuild_counterpart(mode, kinds, ret, width)
            try:
                found = self._compile_once(key, lambda: resolve_activities(
                    self.signature, mode, kinds, ret, width), generate_derivative, DerivativeFunction,
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
            found = self._compile_once(key, lambda: resolve_hvp(self.signature, wrt, width),
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
        spec = resolve_activities(self.signature, mode, kinds, ret)
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
                so_path = build.build_derivative(self.module._toolchain, self.module._artifact,
                                                 wrapper.c_source, self.name, spec.pattern)
                found = wrap(spec, wrapper, str(so_path), self.module._owner,
                             isolate=self.module.isolate)
                if on_create is not None:
                    on_create(found)
                self._derivatives[key] = found
        return found

    def _arm_check(self, fn: DerivativeFunction) -> None:
        fn.first_call = self._first_use_check

    def _before_fork(self) -> None:
        """Load in this process what a check's child process will call. The
        child has one thread: a lock another thread held at the fork stays
        held there forever, so the child must not load libraries or take
        locks (the globals' shadows are zeroed by the check's restore, not
        under the module's lock)."""
        self._primal_function()

    def _arm_hvp_check(self, fn: HvpFunction) -> None:
        fn.first_call = self._first_use_hvp_check

    def _first_use_hvp_check(self, fn: HvpFunction, args: Sequence[Any], directions: Sequence[Any]) -> None:
        """The first-use check of a Hessian-vector product (see
        :func:`enzyme.verify.hvp_test`), in a forked child, like
        :meth:`_first_use_check`."""
        if _verify.verifying():
            fn.first_call = self._first_use_hvp_check
            return
        wrt, sig = fn.spec.wrt, self.signature
        if len(args) != len(sig.params) or not isinstance(args[wrt], np.ndarray):
            fn.first_call = self._first_use_hvp_check  # the call says what is wrong
            return
        primals = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        try:
            annotations = _inactive(self, primals)
            annotations[wrt] = Duplicated(primals[wrt], None)
            kinds = tuple(type(a) for a in annotations)
            reverse = self.derivative_function(Reverse, kinds, None, 1)
        except EnzymeError as err:
            _verify.count_unchecked()
            warnings.warn(EnzymeWarning(f"the Hessian-vector product of '{self.name}' could not be "
                                        f"checked on its first call: its gradient does not build "
                                        f"({type(err).__name__}). It is used unchecked."), stacklevel=4)
            return

        def fresh() -> list:
            return [a.copy() if isinstance(a, np.ndarray) else a for a in primals]

        def gradient(x: np.ndarray) -> np.ndarray:
            values = fresh()
            values[wrt] = x.astype(primals[wrt].dtype)
            flat: list = []
            dx = np.zeros_like(values[wrt])
            for i, (a, value) in enumerate(zip(annotations, values)):
                flat.append(value)
                if isinstance(a, Duplicated):
                    flat.append(dx if i == wrt else np.zeros_like(value))
            reverse(*flat)
            return dx.astype(np.float64)

        def products(dirs: list) -> list:
            return fn(fresh(), [d.astype(primals[wrt].dtype) for d in dirs])[1]

        dtype = "float32" if primals[wrt].dtype == np.float32 else "float64"

        def test() -> Any:
            reverse.first_call = None  # in the child only: no lock taken there (see _before_fork)
            reverse.failed = None
            return _verify.hvp_test(primals[wrt].astype(np.float64), products, gradient,
                                    fn.spec.width, dtype, _CHECK_SEED, self.name, sig.params[wrt].name)

        self._before_fork()

        done = _verify.run_isolated(test, _verify.timeout())
        if done.status != "ok":
            if done.status == "error" and done.value[2]:
                fn.first_call = self._first_use_hvp_check
                return
            why = done.status if done.value is None else \
                f"{done.status}: {done.value[:2] if done.status == 'error' else done.value}"
            _verify.count_unchecked()
            warnings.warn(EnzymeWarning(f"the Hessian-vector product of '{self.name}' could not be "
                                        f"checked on its first call ({why}). It is used unchecked."),
                          stacklevel=4)
            return
        report = done.value
        if report.ok:
            _verify.stats["passed"] += 1
            return
        verdict = report.arguments[0].verdict
        if verdict in _verify.UNDECIDED:
            _verify.count_unchecked()
            warnings.warn(EnzymeWarning(f"the Hessian-vector product of '{self.name}' could not be "
                                        f"checked at this point ({verdict}); it is used unchecked.\n"
                                        f"{report}"), stacklevel=4)
            return
        raise _verify.mismatch_error(report, None)

    def _prebuild_counterpart(self, mode: Mode, kinds: tuple, ret: Any,
                              width: int) -> threading.Thread | None:
        """Start building, in another thread, the derivative the first-use
        check will compare this one with, so that both build at once (a
        cold first call then costs about one build, not two). The caller
        joins the thread once its own build is done."""
        try:
            spec = resolve_activities(self.signature, mode, kinds, ret, width)
        except EnzymeError:
            return None  # the request itself is wrong: the caller will say so
        if mode.split:
            return None

        def build_it() -> None:
            try:
                with _verify.inside_check():  # no counterpart of the counterpart
                    self._counterpart(spec)
            except Exception:  # the check builds it again and reports what is wrong
                pass
        thread = threading.Thread(target=build_it, name=f"enzyme-counterpart-{self.name}", daemon=True)
        thread.start()
        return thread

    def _counterpart(self, spec: Any) -> DerivativeFunction:
        """The unbatched entry point of the other mode with the same
        activities: what a derivative is checked against."""
        reverse = not spec.reverse
        kinds = tuple(Const if a.activity == "const" else
                      (Active if reverse and not a.ctype.is_pointer else Duplicated) for a in spec.args)
        ret = {"void": None, "const": Const}.get(spec.ret, Active if reverse else Duplicated)
        if self.signature.ret.kind == "struct":
            ret = Const  # reverse mode keeps a struct return Const: it is not checked
        return self.derivative_function(Reverse if reverse else Forward, kinds, ret, 1)

    def _check_point(self, spec: Any, primals: Sequence[Any]) -> _verify.Point:
        differentiated = [a.activity != "const" for a in spec.args]
        return _verify.Point(self, primals, differentiated, spec.ret in ("active", "dup", "dupnoneed"),
                             self.module._global_state())

    def _first_use_check(self, fn: DerivativeFunction | SplitFunctions, args: tuple, seed: Any) -> None:
        """The dot-product test of a derivative entry point against the other
        mode, at the arguments of its first call (on copies). Raises
        DerivativeMismatchError when they disagree and central differences do
        not side with ``fn``; warns when it cannot decide."""
        if _verify.verifying():
            fn.first_call = self._first_use_check  # called by another check: check it on its own later
            return
        spec = fn.spec
        primals, pos = [], 0
        for a in spec.args:
            if pos >= len(args):
                return  # a malformed call: the call itself says what is wrong
            primals.append(args[pos])
            pos += 2 if a.has_shadow else 1
        if pos != len(args):
            return
        point = self._check_point(spec, primals)
        if not point.slots or not point.n_in or not point.n_out:
            return  # nothing differentiated reaches an output: every derivative is zero
        other: DerivativeFunction | None
        try:
            other = self._counterpart(spec)
        except EnzymeError:
            # The other mode does not build (an Enzyme limitation in that
            # mode): central differences are then the only reference. Only
            # warning here let a reverse derivative that was 0 through.
            other = None
        entry = _verify.SplitAsReverse(fn) if spec.split else fn
        under_test = "reverse" if spec.reverse else "forward"

        def test() -> tuple:
            if other is None:
                return _verify.finite_difference_test(point, entry, under_test, _CHECK_SEED), None
            # in the child only: no lock taken there (see _before_fork); and a
            # counterpart refused on its own is still what this one is checked
            # against (the numbers decide)
            other.first_call = None
            other.failed = None
            fwd, rev = (other, entry) if spec.reverse else (entry, other)
            return _verify.first_use_test(point, fwd, rev, under_test, _CHECK_SEED)

        def unchecked(why: str) -> None:
            _verify.count_unchecked()
            warnings.warn(EnzymeWarning(f"the derivative {spec.pattern} of '{self.name}' could not be "
                                        f"checked on its first call: {why}. It is used unchecked; "
                                        "enzyme.check(...) tests it on demand."), stacklevel=5)

        self._before_fork()
        done = _verify.run_isolated(test, _verify.timeout())
        if done.status == "crashed":
            def call() -> None:
                _verify.call_only(point, entry, _CHECK_SEED)
            alone = _verify.run_isolated(call, _verify.timeout())
            if alone.status == "crashed":
                raise DifferentiationError(
                    f"the derivative {spec.pattern} of '{self.name}' crashed ({alone.value}) when its "
                    "first-use check called it on copies of these arguments: the call itself would "
                    "have ended the interpreter. Enzyme's code for this kernel is broken for these "
                    "arguments (or the kernel reads or writes past an array: give its length "
                    "contract with ENZYME_LEN or sizes=).", kernel=self.name, pattern=spec.pattern,
                    code="derivative-crashed", hint="check the arrays' lengths, try the other mode")
            unchecked(f"the other mode, which it is checked against, crashed ({done.value})")
            return
        if done.status == "timeout":
            unchecked(f"the check took longer than {_verify.timeout():g} s (ENZYME_VERIFY_TIMEOUT)")
            return
        if done.status == "error":
            name, message, about_arguments = done.value
            fn_rearmed = getattr(fn, "_check_rearmed", 0)
            if about_arguments and fn_rearmed < 3:
                # the call itself says what is wrong; check the next one (a few
                # times: not a fork per call should the check's own inputs be at fault)
                fn._check_rearmed = fn_rearmed + 1
                fn.first_call = self._first_use_check
            else:
                unchecked(f"{name}: {message.splitlines()[0] if message else ''}")
            return
        report, detail = done.value
        if report.ok:
            _verify.stats["passed"] += 1
            if other is not None and other.first_call is not None and other.spec.width == 1:
                other.first_call = None  # the same test checked it
            return
        if other is None and self.module._artifact.extra.get("custom_rules", True):
            # A custom rule may differ from the primal's differences by design
            # (an exact derivative of an approximation such as a fast inverse
            # square root, a straight-through estimator): without the other
            # mode there is no second opinion on the rule.
            unchecked("it differs from central differences, and the module has custom derivative "
                      f"rules, which may differ from them by design\n{report}")
            return
        unsure = [a.verdict for a in report.arguments if a.verdict in _verify.UNDECIDED]
        if detail is not None and not detail.repeatable:
            report = detail
        if not report.repeatable or unsure:
            unchecked(("its outputs change between identical calls (hidden state, I/O or randomness)"
                       if not report.repeatable else unsure[0]) + f"\n{report}")
            return
        raise _verify.mismatch_error(report, detail)


_CHECK_SEED = 20261129  # random directions of the checks: the same in every run


class Module:
    """A compiled C module: a :class:`Kernel` per external function.

    Get kernels as attributes (``mod.loss``) or items (``mod["loss"]``).
    """

    def __init__(self, artifact: build.ModuleArtifact, tc: _toolchain_stage.Toolchain,
                 signatures: Mapping[str, Signature],
                 variables: Mapping[str, GlobalVar] | None = None,
                 runtime_activity: bool = False, verify: bool = True, isolate: bool = False) -> None:
        self._artifact = artifact
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
        for key, (_, module) in list(_modules.items()):
            if module is home:
                del _modules[key]
        for key, module in list(_compile_memo.items()):
            if module is home:
                del _compile_memo[key]
        release_owner(home._owner)

    def __enter__(self) -> Module:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            raise KernelNotFoundError(
                f"the module defines no external function '{name}'; it has: "
                f"{', '.join(sorted(self._kernels)) or 'none'} (static functions are not "
                "exported).") from None

    def __getattr__(self, name: str) -> Kernel:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self):
        return iter(self._kernels.values())

    def __contains__(self, name: str) -> bool:
        return name in self._kernels

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._kernels))

    def __repr__(self) -> str:
        return f"<enzyme.Module {', '.join(sorted(self._kernels))}>"


class GlobalsView(Mapping):
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
    >>> from enzyme import Active, Reverse
    >>> _ = autodiff(Reverse, mod.f, Active(2.0))
    >>> float(mod.shadows["scale"])
    4.0
    """

    def __init__(self, module: Module, shadows: bool,
                 views: dict[str, np.ndarray] | None = None) -> None:
        self._module = module
        self._shadows = shadows
        self._views: dict[str, np.ndarray] = {} if views is None else views

    def _names(self) -> list[str]:
        if self._shadows:
            return list(self._module._shadowed)
        return [name for name, var in self._module._variables.items() if var.viewable]

    def __getitem__(self, name: str) -> np.ndarray:
        if self._module.isolate:
            raise GlobalNotFoundError(
                f"globals of a module compiled with isolate=True live in its worker process; "
                f"'{name}' cannot be viewed from here. Pass the value as an argument, or compile "
                "without isolate=True.")
        return self._view(name)

    def _view(self, name: str) -> np.ndarray:
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

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"<enzyme {'shadows' if self._shadows else 'globals'}: {', '.join(self._names())}>"


_modules: dict[tuple[str, str, bool, bool, bool], tuple[build.ModuleArtifact, Module]] = {}
_owner_ids = itertools.count(1)  # 0 is call.PERMANENT_OWNER


def _names_a_file(source: str) -> bool:
    """compile("model.c") names a file; anything with a newline is C text."""
    return "\n" not in source and source.strip().endswith((".c", ".h"))


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
                   sources: Iterable[str | os.PathLike] | None) -> list[build.SourceInput]:
    given = [x is not None for x in (source, path, sources)]
    if sum(given) != 1:
        raise OptionTypeError("give exactly one of: source text, path=, or sources=[...]")
    files: list[str | os.PathLike] = []
    if source is not None:
        if not isinstance(source, str):
            raise OptionTypeError(f"source must be C source text or a path, got "
                                  f"{type(source).__name__}")
        _check_text(source, "source")
        if _names_a_file(source):
            files = [source.strip()]
        else:
            return [build.SourceInput(source, "<source>")]
    elif path is not None:
        files = [path]
    else:
        files = list(_text_list(sources, "sources"))
        if not files:
            raise OptionTypeError("sources= is empty")
    inputs = []
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CompileError(f"cannot read C source {file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise CompileError(f"{file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                               f"offset {exc.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t "
                               "utf-8`).") from None
        inputs.append(build.SourceInput(text, str(file), os.path.abspath(file)))
    return inputs


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
            toolchain: _toolchain_stage.Toolchain | None = None) -> Module:
    """Compile C code and return a :class:`Module` of callable, differentiable kernels.

    Parameters
    ----------
    source : str, optional
        C source text, or the path of one ``.c`` file.
    path : path-like, optional
        One C file.
    sources : sequence of path-like, optional
        Several C files, linked into one module.
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
    verify : bool, optional
        Check every derivative entry point once, on its first call: the
        dot-product test against the other mode (forward for a reverse
        derivative and the reverse), on copies of the call's arguments, with
        central differences breaking a tie; raise
        :class:`DerivativeMismatchError` rather than return a wrong number.
        Costs one build of the other mode and a few extra calls the first
        time (see the README); later calls cost nothing. Default: on, unless
        the environment variable ``ENZYME_VERIFY`` is ``0``.
    isolate : bool
        Run every call of the module's kernels and derivatives in a worker
        process, for code you do not trust yet: a segfault, ``abort()`` or
        stack overflow there raises :class:`KernelCrashError` and the next
        call starts a new worker. Each call copies its arrays to shared
        memory and back (see the README for the cost); globals live in the
        worker, so ``mod.globals`` is not available. No C fast path.
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
    if verify is None:
        verify = os.environ.get("ENZYME_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")
    include_dirs = _text_list(include_dirs, "include_dirs")
    defines = _define_list(defines)
    flags = _text_list(flags, "flags")
    libraries = _text_list(libraries, "libraries")
    library_dirs = _text_list(library_dirs, "library_dirs")
    enzyme_flags = _text_list(enzyme_flags, "enzyme_flags")
    # (a name listed twice made two registrations clang rejected)
    inactive = tuple(dict.fromkeys(_text_list(inactive, "inactive")))
    inactive_globals = tuple(dict.fromkeys(_text_list(inactive_globals, "inactive_globals")))
    call_key = _call_key(locals())
    known = _compile_memo.get(call_key) if call_key is not None else None
    if known is not None and build.headers_unchanged(known._artifact):
        handle = known._new_handle()
        if handle is not None:
            return handle
    while True:
        module = _compile(source, path, sources, include_dirs, defines, flags, libraries,
                          library_dirs, forward_rules, reverse_rules, inactive, inactive_globals,
                          sizes, loose_types, runtime_activity, enzyme_flags, native_cpu,
                          split_long_blocks, bool(verify), bool(isolate), toolchain)
        if call_key is not None:
            _compile_memo[call_key] = module
        handle = module._new_handle()
        if handle is not None:  # else its last handle was closed meanwhile: load it again
            return handle


_compile_memo: dict[tuple, Module] = {}
_ENV = ("ENZYME_PLUGIN", "ENZYME_CLANG", "ENZYME_OPT", "ENZYME_CACHE_DIR", "XDG_CACHE_HOME")


_PLAIN = (str, int, float, bool, type(None))


def _frozen(value: Any) -> Any:
    """A hashable image of compile()'s arguments (mappings and sequences)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple or kind is list:
        return tuple(_frozen(v) for v in value) if value else ()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _call_key(arguments: dict) -> tuple | None:
    arguments = dict(arguments)
    source, path, sources = arguments.pop("source"), arguments.pop("path"), arguments.pop("sources")
    toolchain = arguments.pop("toolchain")
    files = []
    if isinstance(source, str) and _names_a_file(source):
        files.append(source.strip())
    if path is not None:
        files.append(path)
    files += list(sources or ())
    try:
        stamps = []
        for file in files:
            st = os.stat(file)
            stamps.append((os.path.abspath(file), st.st_size, st.st_mtime_ns, st.st_ino))
        stamps = tuple(stamps)
        # the working directory: relative include_dirs and paths depend on it
        key = (source if not files else None, stamps, tuple(map(_frozen, arguments.values())),
               toolchain, os.getcwd(), tuple(os.environ.get(v) for v in _ENV))
        hash(key)
    except (OSError, TypeError):
        return None  # unreadable file or unhashable argument: no shortcut
    return key


def _compile(source, path, sources, include_dirs, defines, flags, libraries, library_dirs,
             forward_rules, reverse_rules, inactive, inactive_globals, sizes, loose_types,
             runtime_activity, enzyme_flags, native_cpu, split_long_blocks, verify, isolate,
             toolchain) -> Module:
    tc = _resolve_toolchain(toolchain)
    inputs = _source_inputs(source, path, sources)
    args = [f"-I{os.path.abspath(d)}" for d in include_dirs]
    args += [f"-D{d}" for d in defines]
    args += [*flags, f"-I{get_include()}"]
    forward_rules, reverse_rules = dict(forward_rules or {}), dict(reverse_rules or {})
    rule_functions = _check_rules(forward_rules, reverse_rules, inactive, inactive_globals)
    if rule_functions or inactive or inactive_globals:
        inputs.append(build.SourceInput(
            generate_registrations(forward_rules, reverse_rules, tuple(inactive),
                                   tuple(inactive_globals)), "<enzyme-ffi registrations>"))
    link_args = []
    for directory in library_dirs:
        directory = os.path.abspath(directory)
        link_args += [f"-L{directory}", f"-Wl,-rpath,{directory}"]
    link_args += [f"-l{lib}" for lib in libraries]
    if "-fopenmp" in flags:
        link_args.append("-fopenmp")  # clang links its own OpenMP runtime

    def describe(paths: list[str]) -> build.ModuleFacts:
        done = build.run_tool(worker_command(),
                              input=parse_request(paths, args, tc.resource_dir, tc.libclang))
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
                   "globals": [v.to_json() for v in user], "custom_rules": custom_rules},
            shared_globals=tuple(v.name for v in user),
            shadowed_globals=tuple((v.name, v.size) for v in user
                                   if v.active and v.name not in inactive_globals))

    opt_flags = (("-enzyme-loose-types",) if loose_types else ()) + tuple(enzyme_flags)
    artifact = build.build_module(tc, inputs, args, tuple(link_args), describe, opt_flags,
                                  bool(native_cpu), bool(split_long_blocks))
    # Contracts change checks, not code: the same artifact with other sizes=
    # is another Module.
    memo_key = (artifact.key, repr(sorted((k, sorted(v.items())) for k, v in (sizes or {}).items())),
                bool(runtime_activity), verify, isolate)
    known = _modules.get(memo_key)
    if known is not None and known[0] is artifact and not known[1]._closed:
        return known[1]
    signatures = {s["name"]: Signature.from_json(s) for s in artifact.extra["signatures"]}
    variables = {v["name"]: GlobalVar.from_json(v) for v in artifact.extra.get("globals", ())}
    for kernel_name, lengths in (sizes or {}).items():
        if kernel_name not in signatures:
            raise ContractError(f"sizes: the module defines no function '{kernel_name}'.")
        signatures[kernel_name] = with_lengths(signatures[kernel_name], dict(lengths))
    missing = sorted(name for name in rule_functions if name not in signatures)
    if missing:
        raise CompileError(f"the derivative rule function(s) {', '.join(missing)} named in "
                           "forward_rules/reverse_rules are not defined (as non-static functions) "
                           "in the sources.")
    module = Module(artifact, tc, signatures, variables, runtime_activity=bool(runtime_activity),
                    verify=verify, isolate=isolate)
    _modules[memo_key] = (artifact, module)
    return module


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
                "struct of two of them, { primal, tangent } (see the README's custom derivatives).")
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


def _as_kernel(kernel: Any) -> Kernel:
    if not isinstance(kernel, Kernel):
        raise ActivityError(f"expected a kernel such as mod.f, got {type(kernel).__name__}; "
                            "compile the C code with enzyme.compile and pass mod.<function>.")
    return kernel


def autodiff(mode: Mode, kernel: Kernel, *args: Any, ret: Any = None, seed: Any = None):
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


def derivative(kernel: Kernel, mode: Mode, *activities: Any, ret: Any = None,
               width: int = 1) -> DerivativeFunction:
    """Build one derivative with fixed activities (like Rust's ``#[autodiff]``).

    The result is called with each primal followed by its shadow (for
    ``Duplicated``/``DuplicatedNoNeed``; a sequence of ``width`` shadows for
    ``BatchDuplicated``), plus ``seed=`` for an Active return, and returns
    what :func:`autodiff` returns.

    Examples
    --------
    >>> import numpy as np
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
    return kernel._bind(kernel.derivative_function(mode, kinds, ret, width))


def autodiff_thunk(mode: Mode, kernel: Kernel, *activities: Any,
                   ret: Any = None) -> tuple[Callable[..., Any], Callable[..., Any]]:
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
    functions = kernel._bind(kernel.split_functions(mode, kinds, ret))
    return functions.forward, functions.reverse


def _normalize_argnums(argnums: int | Sequence[int], nargs: int) -> tuple[tuple[int, ...], bool]:
    single = isinstance(argnums, (int, np.integer))
    nums = (int(argnums),) if single else tuple(int(a) for a in argnums)
    if not nums:
        raise ActivityError("argnums is empty")
    for num in nums:
        if not -nargs <= num < nargs:
            raise ActivityError(f"argnums={num} is out of range for a kernel of {nargs} arguments")
    return tuple(n % nargs for n in nums), single


def _scratch(param: Any, value: Any) -> bool:
    """Whether a helper must give a non-differentiated argument a zero shadow
    instead of passing it Const: the kernel may write it (a non-const pointer
    to floating data) and read back what it wrote. Enzyme drops derivatives
    that flow through Const memory, so a scratch array passed Const made
    ``grad`` silently zero."""
    return (param.ctype.is_pointer and not param.ctype.const and param.ctype.carries_derivative
            and isinstance(value, np.ndarray))


def _inactive(kernel: Kernel, args: Sequence[Any]) -> list[Any]:
    """The annotations of arguments no derivative is asked for: Const, or a
    zero shadow for what the kernel may write (see :func:`_scratch`)."""
    return [Duplicated(value, aligned_like(value)) if _scratch(param, value) else Const(value)
            for param, value in zip(kernel.signature.params, args)]


def _grad_call(kernel: Kernel, argnums, args: tuple, mode: Mode):
    sig = kernel.signature
    if not sig.ret.is_float:
        raise ActivityError(f"grad needs a kernel returning a floating scalar; '{sig.name}' "
                            f"returns {sig.ret.spelling}. {_no_scalar_return_fix(sig)}")
    nums, single = _normalize_argnums(argnums, len(sig.params))
    if len(args) != len(sig.params):
        raise ActivityError(f"'{sig.name}' takes {len(sig.params)} argument(s), {len(args)} given. "
                            f"Signature: {sig}")
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
    with kernel.module._wrt_arguments_only():
        result = autodiff(mode, kernel, *annotations)
    grads = tuple(result.derivs[i] if isinstance(annotations[i], Active) else annotations[i].dval
                  for i in nums)
    return (grads[0] if single else grads), result.primal


def grad(kernel: Kernel, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of a scalar-returning kernel with respect to ``argnums``.

    Arrays are differentiated with a fresh zero shadow (the result has the
    array's shape); floating scalars give a float. Other arguments are Const,
    except arrays the kernel may write (non-const floating pointers), which
    get a zero shadow so that derivatives flowing through them (a scratch
    buffer written and read back) are kept.

    Examples
    --------
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> grad(mod.f, argnums=(0, 1))(3.0, 5.0)
    (6.0, 3.0)
    """
    kernel = _as_kernel(kernel)

    def gradient(*args: Any) -> Any:
        return _grad_call(kernel, argnums, args, Reverse)[0]

    gradient.__name__ = f"grad_{kernel.name}"
    return gradient


def value_and_grad(kernel: Kernel, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """Like :func:`grad`, returning ``(value, gradient)`` from one reverse pass.

    Examples
    --------
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> value_and_grad(mod.f)(3.0, 5.0)
    (24.0, 6.0)
    """
    kernel = _as_kernel(kernel)

    def value_and_gradient(*args: Any) -> tuple[Any, Any]:
        grads, value = _grad_call(kernel, argnums, args, ReverseWithPrimal)
        return value, grads

    value_and_gradient.__name__ = f"value_and_grad_{kernel.name}"
    return value_and_gradient


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


def jvp(kernel: Kernel, wrt: int | str = 0, out: int | str | None = None) -> Callable[..., Any]:
    """Jacobian-vector product (forward mode): ``f(*args, v) -> (value, tangent)``.

    ``value`` and ``tangent`` are the kernel's return value and its directional
    derivative along ``v`` (a float for a scalar ``wrt``, an array like it
    otherwise); with ``out=``, the output array the kernel writes and its tangent.

    Examples
    --------
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> jvp(mod.f, wrt=0)(3.0, 5.0, 1.0)
    (24.0, 6.0)
    """
    kernel, x_index, out_index = _wrt_and_out(kernel, wrt, out, "jvp")

    def jvp_call(*args_and_v: Any) -> tuple[Any, Any]:
        *args, v = args_and_v
        _check_count(kernel, tuple(args))
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
    return jvp_call


def vjp(kernel: Kernel, wrt: int | str = 0, out: int | str | None = None) -> Callable[..., Any]:
    """Vector-Jacobian product (reverse mode): ``f(*args, u) -> (value, cotangent)``.

    ``u`` weighs the kernel's return value (a float), or with ``out=`` the
    output array the kernel writes (an array like it; it is copied, since
    Enzyme consumes the seed). The cotangent has the shape of argument ``wrt``.

    Examples
    --------
    >>> mod = compile("double f(double x, double y) { return x*x + 3*y; }")
    >>> vjp(mod.f, wrt=1)(3.0, 5.0, 2.0)
    (24.0, 6.0)
    """
    kernel, x_index, out_index = _wrt_and_out(kernel, wrt, out, "vjp")

    def vjp_call(*args_and_u: Any) -> tuple[Any, Any]:
        *args, u = args_and_u
        _check_count(kernel, tuple(args))
        annotations = _inactive(kernel, args)
        if kernel.signature.params[x_index].ctype.is_pointer:
            x = _wrt_array(kernel, tuple(args), x_index)
            annotations[x_index] = Duplicated(x, np.zeros_like(x))
        else:
            annotations[x_index] = Active(args[x_index])
        if out_index is None:
            with kernel.module._wrt_arguments_only():
                result = autodiff(ReverseWithPrimal, kernel, *annotations, seed=u)
            value = result.primal
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
    return vjp_call


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


def jacobian(kernel: Kernel, wrt: int | str = 0, out: int | str | None = None,
             mode: Mode | None = None, chunk: int = 8) -> Callable[..., np.ndarray]:
    """The Jacobian of an output array (``out=``) with respect to array ``wrt``.

    Computed ``chunk`` columns at a time with batched forward mode, or
    ``chunk`` rows at a time with batched reverse mode (at most 64 per call,
    Enzyme's batch width here) when there are fewer
    outputs than inputs; ``mode=Forward``/``Reverse`` forces the choice.
    Without ``out=`` the kernel's scalar return is differentiated (the
    gradient). The result has shape ``out.shape + x.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> mod = compile("void sq(const double *x, double *y, int n) {"
    ...               " for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }")
    >>> jacobian(mod.sq, wrt=0, out=1)(np.arange(3.0), np.zeros(3), 3)
    array([[0., 0., 0.],
           [0., 2., 0.],
           [0., 0., 4.]])
    """
    kernel = _as_kernel(kernel)
    x_index = _param_index(kernel, wrt, "wrt")
    if out is None:
        _returns_float(kernel, "jacobian")
        return grad(kernel, argnums=x_index)
    out_index = _param_index(kernel, out, "out")
    if mode not in (None, Forward, Reverse):
        raise ActivityError("jacobian's mode= is Forward, Reverse or None (automatic).")
    _check_chunk(chunk)

    def jacobian_call(*args: Any) -> np.ndarray:
        _check_count(kernel, args)
        x, y = _wrt_array(kernel, args, x_index), _output_array(kernel, args, out_index)
        n, m = x.size, y.size
        use_forward = mode is Forward or (mode is None and n <= m)
        jac = np.zeros((m, n), dtype=y.dtype)
        annotations = _inactive(kernel, args)
        with kernel.module._wrt_arguments_only():
            _jacobian_chunks(kernel, annotations, x_index, out_index, x, y, jac, use_forward, chunk)
        return jac.reshape((*y.shape, *x.shape))
    return jacobian_call


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


def hvp(kernel: Kernel, wrt: int | str = 0) -> Callable[..., np.ndarray]:
    """Hessian-vector product ``f(*args, v) -> H v`` by forward-over-reverse.

    One call costs a small multiple of one gradient (Enzyme differentiates a
    generated C gradient function in forward mode), never ``n`` gradients.

    Examples
    --------
    >>> import numpy as np
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
    return hvp_call


def hessian(kernel: Kernel, wrt: int | str = 0, chunk: int = 8) -> Callable[..., np.ndarray]:
    """The Hessian of a scalar-returning kernel with respect to an array argument.

    Built ``chunk`` columns at a time from batched Hessian-vector products
    (forward over reverse; at most 64 per call, Enzyme's batch width here).
    The result has shape ``x.shape + x.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> mod = compile("double cube(const double *x, int n) {"
    ...               " double s = 0; for (int i = 0; i < n; i++) s += x[i]*x[i]*x[i]; return s; }")
    >>> hessian(mod.cube)(np.array([1.0, 2.0]), 2)
    array([[ 6.,  0.],
           [ 0., 12.]])
    """
    kernel = _as_kernel(kernel)
    x_index = _param_index(kernel, wrt, "wrt")
    _check_chunk(chunk)

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
