"""The first-use check of derivative entry points, wired to a kernel: a
mixin of :class:`enzyme.module.Kernel` (the checks themselves are in
:mod:`enzyme.verify`)."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import verify as _verify
from .activity import (
    Active,
    Const,
    Duplicated,
    Forward,
    Mode,
    Reverse,
    resolve_activities,
)
from .call import (
    DerivativeFunction,
    HvpFunction,
    SplitFunctions,
    aligned_like,
)
from .errors import (
    DifferentiationError,
    EnzymeError,
    EnzymeWarning,
)

_CHECK_SEED = 20261129  # random directions of the checks: the same in every run


def _scratch(param: Any, value: Any) -> bool:
    """Whether a helper must give a non-differentiated argument a zero shadow
    instead of passing it Const: the kernel may write it (a non-const pointer
    to floating data) and read back what it wrote. Enzyme drops derivatives
    that flow through Const memory, so a scratch array passed Const made
    ``grad`` silently zero."""
    return (param.ctype.is_pointer and not param.ctype.const and param.ctype.carries_derivative
            and isinstance(value, np.ndarray))


def _inactive(kernel: Any, args: Sequence[Any]) -> list[Any]:
    """The annotations of arguments no derivative is asked for: Const, or a
    zero shadow for what the kernel may write (see :func:`_scratch`)."""
    return [Duplicated(value, aligned_like(value)) if _scratch(param, value) else Const(value)
            for param, value in zip(kernel.signature.params, args)]


class FirstUseChecks:
    """The first-use check of a kernel's derivatives (see :mod:`enzyme.verify`),
    as methods of :class:`~enzyme.module.Kernel`: arming a new entry point,
    building the other mode it is checked against, running the test in a
    forked child and turning its verdict into an error or a warning."""

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

        # const arrays the products change: Enzyme's nested derivative wrote
        # adjoints into read-only memory (random programs 1630 and 2960)
        written: set[str] = set()
        const_arrays = [i for i, p in enumerate(sig.params)
                        if p.ctype.is_pointer and p.ctype.const and isinstance(primals[i], np.ndarray)]

        def products(dirs: list) -> list:
            values = fresh()
            out = fn(values, [d.astype(primals[wrt].dtype) for d in dirs])[1]
            written.update(sig.params[i].name for i in const_arrays
                           if _verify.changed(values[i], primals[i]))
            return out

        dtype = "float32" if primals[wrt].dtype == np.float32 else "float64"

        def test() -> Any:
            reverse.first_call = None  # in the child only: no lock taken there (see _before_fork)
            reverse.failed = None
            report = _verify.hvp_test(primals[wrt].astype(np.float64), products, gradient,
                                      fn.spec.width, dtype, _CHECK_SEED, self.name,
                                      sig.params[wrt].name)
            return dataclasses.replace(report, arguments=report.arguments + tuple(
                _verify.const_write(name, "hvp") for name in sorted(written)))

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
            spec = self._with_callbacks(resolve_activities(self.signature, mode, kinds, ret, width))
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
        kinds = tuple(Const if not a.activity.differentiated else
                      (Active if reverse and not a.ctype.is_pointer else Duplicated) for a in spec.args)
        ret = (Active if reverse else Duplicated) if spec.returns_derivative else \
            (None if spec.ret is None else Const)
        if self.signature.ret.kind == "struct":
            ret = Const  # reverse mode keeps a struct return Const: it is not checked
        return self.derivative_function(Reverse if reverse else Forward, kinds, ret, 1)

    def _check_point(self, spec: Any, primals: Sequence[Any]) -> _verify.Point:
        differentiated = [a.activity.differentiated for a in spec.args]
        return _verify.Point(self, primals, differentiated, spec.returns_derivative,
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
        structs = [a.name for a in spec.args if a.has_shadow and a.ctype.holds_pointers]
        if structs:
            _verify.count_unchecked()
            warnings.warn(EnzymeWarning(
                f"the derivative {spec.pattern} of '{self.name}' is not checked on its first call: "
                f"the dot-product test does not reach into structs holding pointers "
                f"({', '.join(structs)}) yet. It is used unchecked."), stacklevel=5)
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
                report = _verify.finite_difference_test(point, entry, under_test, _CHECK_SEED)
                return _verify.with_zero_direction_test(report, point, entry, under_test), None
            # in the child only: no lock taken there (see _before_fork); and a
            # counterpart refused on its own is still what this one is checked
            # against (the numbers decide)
            other.first_call = None
            other.failed = None
            fwd, rev = (other, entry) if spec.reverse else (entry, other)
            report, detail = _verify.first_use_test(point, fwd, rev, under_test, _CHECK_SEED)
            return _verify.with_zero_direction_test(report, point, entry, under_test), detail

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
            # The other mode crashes, this one does not: central differences
            # are the reference (with the other mode's crash only a warning,
            # a wrong forward derivative got through: random program 2167).
            crash = done.value
            other = None

            def by_differences() -> tuple:
                report = _verify.finite_difference_test(point, entry, under_test, _CHECK_SEED)
                return _verify.with_zero_direction_test(report, point, entry, under_test), None
            done = _verify.run_isolated(by_differences, _verify.timeout())
            if done.status == "crashed":
                unchecked(f"the other mode, which it is checked against, crashed ({crash}), and so "
                          f"did central differences around it ({done.value})")
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
        if any(a.name == _verify.ZERO_DIRECTIONS and not a.ok for a in report.arguments):
            # conclusive whatever else is unsure here: a derivative is linear
            raise _verify.mismatch_error(report, None)
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
