"""Derivatives that check themselves: the dot-product test.

For random directions ``v`` (over the differentiated inputs) and ``w`` (over
the outputs), forward mode gives ``w . (J v)`` and reverse mode gives
``(J^T w) . v``; the two must agree to rounding. Two independent Enzyme
modes rarely go wrong the same way, and where they disagree central
differences along ``v`` say which one is right.

A kernel call is seen as a function ``F`` from its differentiated inputs
(floating scalars, and the floating contents of arrays with a shadow) to its
outputs (a floating return value that is differentiated, and the final
contents of the non-const arrays with a shadow). Every evaluation starts from
copies of the arguments and from the globals as they were, so the user's
arrays and globals end as the checked call leaves them.

This module is called by the orchestrator (``module``, ``firstuse``) with a kernel and the
derivative entry points to compare; it never imports cffi.
"""

from __future__ import annotations

import collections
import dataclasses
import faulthandler
import os
import pickle
import select
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

import numpy as np
import numpy.typing as npt

from .activity import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseSplit,
    ReverseSplitWithPrimal,
    ReverseWithPrimal,
)
from .call import aligned_like
from .errors import (
    ActivityError,
    ArgumentError,
    ArgumentValueError,
    DerivativeMismatchError,
    OptionError,
    ShadowError,
)
from .paths import env_seconds

if TYPE_CHECKING:  # (for annotations only: module imports this module)
    from .activity import Annotation, Mode
    from .call import DerivativeFunction
    from .module import Kernel

# check_functions' callables: f(x) and jvp(x, v) return an output (a float
# or an array), vjp(x, w) an array like x; w is a float when f returns one.
_F64 = npt.NDArray[np.float64]
_Outputs = Callable[[_F64], npt.ArrayLike]
_Jvp = Callable[[_F64, _F64], npt.ArrayLike]
_Vjp = Callable[[_F64, Union[_F64, float]], npt.ArrayLike]

__all__ = ["ArgumentCheck", "CheckReport", "Point", "compare", "tolerances", "UNDECIDED"]

# Relative tolerances of the dot-product test (forward against reverse) and
# of central differences, against the sum of the magnitudes of the terms of
# each dot product (so cancellation in the sum does not make them tighter).
# Forward and reverse mode round differently; 1e-6 leaves room for
# accumulation orders over long loops while a wrong adjoint is usually off
# by O(1). Central differences with a step of 1e-6 (relative) are good to
# about 1e-8 on smooth code; 1e-4 leaves room for curvature.
_RTOL = {"float64": 1e-6, "float32": 2e-3}
_FD_RTOL = {"float64": 1e-4, "float32": 5e-2}
_FD_STEP = {"float64": 1e-6, "float32": 3e-3}

# Verdicts that say the test could not decide (a first-use check warns)
NOT_FINITE = "not finite in either mode"
NOT_SMOOTH = "the gradient is not smooth here (central differences change with the step)"
UNDECIDED = (NOT_FINITE, NOT_SMOOTH)
ZERO_DIRECTIONS = "zero directions"  # the name of zero_direction_test's result

_state = threading.local()

# What the first-use checks of this process found: "passed", "raised",
# "unchecked" (a warning said why); for measurements and tests.
stats: collections.Counter = collections.Counter()


def count_unchecked() -> None:
    stats["unchecked"] += 1


def verifying() -> bool:
    """Whether this thread is inside a check (entry points called by a check
    are not checked themselves)."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def inside_check() -> Iterator[None]:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def tolerances(dtype: str) -> tuple[float, float]:
    """(dot-product rtol, finite-difference rtol) for an element type."""
    return _RTOL.get(dtype, _RTOL["float32"]), _FD_RTOL.get(dtype, _FD_RTOL["float32"])


def changed(after: np.ndarray, before: np.ndarray) -> bool:
    """Whether a read-only array changed, value by value (field by field for
    a struct: its padding bytes are not data; NaN equals NaN)."""
    return not np.array_equal(after, before, equal_nan=after.dtype.kind == "f")


def const_write(name: str, what: str) -> ArgumentCheck:
    """The failed verdict of a derivative that wrote into a const argument."""
    return ArgumentCheck(-1, name, float("nan"), float("nan"), None, float("inf"),
                         f"{what} writes into '{name}', a const (read-only) argument")


def _float_views(a: np.ndarray) -> list[np.ndarray]:
    """Views of the floating parts of an array (every floating field of a
    record array, nested records and sub-arrays included)."""
    if a.dtype.names is None:
        return [a] if a.dtype.kind == "f" else []
    views: list[np.ndarray] = []
    for name in a.dtype.names:
        views += _float_views(a[name])
    return views


def _floats(a: np.ndarray) -> np.ndarray:
    views = _float_views(a)
    if not views:
        return np.zeros(0)
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in views])


def _put(a: np.ndarray, vec: np.ndarray) -> None:
    k = 0
    for view in _float_views(a):
        view[...] = vec[k:k + view.size].reshape(view.shape)
        k += view.size


def _shaped(template: np.ndarray, vec: np.ndarray) -> np.ndarray:
    out = aligned_like(template)  # (an over-aligned struct's copy must stay aligned)
    _put(out, vec)
    return out


@dataclass(frozen=True)
class Slot:
    """One differentiated argument: a floating scalar or an array's floats."""

    index: int
    name: str
    scalar: bool
    output: bool  # a non-const array: its final contents are an output
    size: int


@dataclass(frozen=True)
class ArgumentCheck:
    """The dot-product test for one differentiated argument.

    ``forward`` is ``w . (J_i v_i)``, ``reverse`` is ``(J^T w)_i . v_i`` and
    ``finite_difference`` is ``w . (F(u + h v_i) - F(u - h v_i)) / 2h``
    (None when not computed); ``disagreement`` is ``|forward - reverse|``
    relative to the magnitude of the terms, ``verdict`` says what it means.
    """

    index: int
    name: str
    forward: float
    reverse: float
    finite_difference: float | None
    disagreement: float
    verdict: str

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@dataclass(frozen=True)
class CheckReport:
    """What :func:`enzyme.check` found: one :class:`ArgumentCheck` per
    differentiated argument, and the tolerances used. ``ok`` is true when
    every argument passed. Prints as a table."""

    kernel: str
    pattern: str
    arguments: tuple[ArgumentCheck, ...]
    rtol: float
    fd_rtol: float
    repeatable: bool = True

    @property
    def ok(self) -> bool:
        return self.repeatable and all(a.ok for a in self.arguments)

    def __str__(self) -> str:
        lines = [f"dot-product test of {self.kernel}, {self.pattern} (rtol {self.rtol:g}, "
                 f"finite differences {self.fd_rtol:g})"]
        if not self.repeatable:
            lines.append("  the kernel's outputs change between identical calls (hidden state, "
                         "I/O or randomness): the numbers below cannot be trusted either way")
        lines.append(f"  {'argument':<14}{'w.(Jv) fwd':>15}{'(J^T w).v rev':>15}{'finite diff':>15}"
                     f"{'disagree':>10}  verdict")
        for a in self.arguments:
            fd = "-" if a.finite_difference is None else f"{a.finite_difference:.8g}"
            lines.append(f"  {a.name:<14}{a.forward:>15.8g}{a.reverse:>15.8g}{fd:>15}"
                         f"{a.disagreement:>10.1e}  {a.verdict}")
        return "\n".join(lines)

    __repr__ = __str__


class Point:
    """The call being checked: a kernel, the primal arguments (copied now),
    which arguments are differentiated, and whether the return is an output.

    ``state`` is a pair of functions (save, restore) for what the kernel may
    change besides its arguments (the module's globals).
    """

    def __init__(self, kernel: Any, primals: Sequence[Any], differentiated: Sequence[bool],
                 return_output: bool, state: tuple[Callable[[], Any], Callable[[Any], None]]) -> None:
        sig = kernel.signature
        self.kernel = kernel
        self.primals = [aligned_like(a, copy=True) if isinstance(a, np.ndarray) else a
                        for a in primals]
        # a struct return is not an output here: reverse mode keeps it Const
        self.return_output = return_output and sig.ret.kind == "scalar" and sig.ret.is_float
        self.dtype = "float32" if any(
            p.ctype.dtype == "float32" for p in sig.params) or sig.ret.dtype == "float32" else "float64"
        self.slots: list[Slot] = []
        for i, (param, diff) in enumerate(zip(sig.params, differentiated)):
            if not diff:
                continue
            value = self.primals[i]
            if param.ctype.is_pointer:
                size = _floats(value).size if isinstance(value, np.ndarray) else 0
                self.slots.append(Slot(i, param.name, False, not param.ctype.const, size))
            else:
                self.slots.append(Slot(i, param.name, True, False, 1))
        self._save, self._restore = state
        # arrays behind const pointers: no derivative may write them (Enzyme
        # has added adjoints into memory the kernel only reads)
        self.read_only = [i for i, p in enumerate(sig.params)
                          if p.ctype.is_pointer and p.ctype.const and isinstance(self.primals[i], np.ndarray)]
        self.written: dict[str, set[str]] = {"forward": set(), "reverse": set()}
        self._globals = self._save()

    @property
    def n_in(self) -> int:
        return sum(s.size for s in self.slots)

    @property
    def n_out(self) -> int:
        return int(self.return_output) + sum(s.size for s in self.slots if s.output)

    def note_writes(self, mode: str, args: Sequence[Any]) -> None:
        """Record the read-only arrays a derivative call changed."""
        for i in self.read_only:
            if changed(args[i], self.primals[i]):
                self.written[mode].add(self.kernel.signature.params[i].name)

    def primal_writes(self) -> set[str]:
        """The read-only arrays the kernel itself changes (const cast away):
        its derivatives may change them too."""
        args = self.fresh()
        self.kernel(*args)
        return {self.kernel.signature.params[i].name for i in self.read_only
                if changed(args[i], self.primals[i])}

    def fresh(self) -> list[Any]:
        """Copies of the arguments, with the globals put back as they were."""
        self._restore(self._globals)
        return [aligned_like(a, copy=True) if isinstance(a, np.ndarray) else a
                for a in self.primals]

    def inputs(self) -> np.ndarray:
        return np.concatenate([np.atleast_1d(np.float64(self.primals[s.index])) if s.scalar
                               else _floats(self.primals[s.index]) for s in self.slots] or [np.zeros(0)])

    def split_in(self, vec: np.ndarray) -> dict[int, np.ndarray]:
        parts, k = {}, 0
        for s in self.slots:
            parts[s.index] = vec[k:k + s.size]
            k += s.size
        return parts

    def outputs_of(self, ret: Any, args: Sequence[Any]) -> np.ndarray:
        parts = [np.atleast_1d(np.float64(ret))] if self.return_output else []
        parts += [_floats(args[s.index]) for s in self.slots if s.output]
        return np.concatenate(parts) if parts else np.zeros(0)

    def evaluate(self, delta: np.ndarray | None = None) -> np.ndarray:
        """F(u + delta)."""
        args = self.fresh()
        if delta is not None:
            parts = self.split_in(delta)
            for s in self.slots:
                if s.scalar:
                    args[s.index] = float(args[s.index]) + float(parts[s.index][0])
                else:
                    _put(args[s.index], _floats(args[s.index]) + parts[s.index])
        ret = self.kernel(*args)
        return self.outputs_of(ret, args)

    def finish(self) -> None:
        """Leave the globals as the checked call will find them."""
        self._restore(self._globals)


def forward_lanes(point: Point, fn: Any, directions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """J v for each direction, from a forward-mode entry point ``fn`` (its
    width is the number of directions)."""
    spec = fn.spec
    args = point.fresh()
    flat: list[Any] = []
    parts = [point.split_in(v) for v in directions]
    shadows: dict[int, list] = {}
    for a in spec.args:
        flat.append(args[a.index])
        if not a.has_shadow:
            continue
        value = args[a.index]
        if a.ctype.is_pointer:
            lanes = [_shaped(value, p[a.index]) if a.index in p else aligned_like(value)
                     for p in parts]
        else:
            lanes = [float(p[a.index][0]) if a.index in p else 0.0 for p in parts]
        shadows[a.index] = lanes
        flat.append(lanes if spec.batched else lanes[0])
    result = fn(*flat)
    point.note_writes("forward", args)
    tangents = result.tangent if spec.batched else (result.tangent,)
    out = []
    for lane in range(len(directions)):
        vals = [np.atleast_1d(np.float64(tangents[lane]))] if point.return_output else []
        vals += [_floats(shadows[s.index][lane]) for s in point.slots if s.output]
        out.append(np.concatenate(vals) if vals else np.zeros(0))
    return out


def reverse_lanes(point: Point, fn: Any, seeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """J^T w for each seed, from a reverse-mode entry point ``fn``."""
    spec = fn.spec
    args = point.fresh()
    flat: list[Any] = []
    shadows: dict[int, list] = {}
    out_slots = [s for s in point.slots if s.output]
    for a in spec.args:
        flat.append(args[a.index])
        if not a.has_shadow:
            continue
        value = args[a.index]
        lanes = []
        for w in seeds:
            k, lane = int(point.return_output), aligned_like(value)
            for s in out_slots:
                if s.index == a.index:
                    _put(lane, w[k:k + s.size])
                k += s.size
            lanes.append(lane)
        shadows[a.index] = lanes
        flat.append(lanes if spec.batched else lanes[0])
    seed = None
    if spec.returns_derivative and spec.reverse:
        seed = [float(w[0]) for w in seeds] if spec.batched else float(seeds[0][0])
    result = fn(*flat, seed=seed)
    point.note_writes("reverse", args)
    out = []
    for lane in range(len(seeds)):
        vals = []
        for s in point.slots:
            if s.scalar:
                d = result.derivs[s.index]
                vals.append(np.atleast_1d(np.float64(d[lane] if spec.batched else d)))
            else:
                vals.append(_floats(shadows[s.index][lane]))
        out.append(np.concatenate(vals) if vals else np.zeros(0))
    return out


def input_scales(u: np.ndarray) -> np.ndarray:
    """Per-input scale of the random directions: each input's magnitude
    (at least 1e-3 of the largest), so that a central difference moves every
    input by the same relative step, whatever the units (densities of 1e-3
    next to temperatures of 300)."""
    top = float(np.max(np.abs(u))) if u.size else 0.0
    if not np.isfinite(top) or top == 0.0:
        return np.ones_like(u, dtype=np.float64)
    return np.maximum(np.abs(u), 1e-3 * top)


def _step(relative: float, v: np.ndarray, u: np.ndarray) -> float:
    """The central-difference step along ``v`` that moves no input by more
    than ``relative`` times its scale (see :func:`input_scales`)."""
    ratio = float(np.max(np.abs(v) / input_scales(u))) if v.size else 0.0
    return relative / ratio if ratio > 0 else relative


def _scale(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(np.abs(a * b)))


def _close(x: float, y: float, scale: float, rtol: float, floor: float = 0.0) -> bool:
    if not (np.isfinite(x) and np.isfinite(y)):
        return bool(x == y)
    return abs(x - y) <= rtol * scale + floor or x == y


def compare(point: Point, forward: Any, reverse: Any, *, under_test: str, rng: np.random.Generator,
            per_argument: bool = False, finite_differences: bool = False) -> CheckReport:
    """The dot-product test between a forward and a reverse entry point at a
    point. ``under_test`` (``"forward"`` or ``"reverse"``) names the entry
    point whose result the verdicts are about; its width may exceed 1 (every
    lane is tested against the other, unbatched, entry point).

    With ``per_argument`` the test runs one argument at a time (a forward
    call each); central differences are computed when asked, and wherever
    forward and reverse disagree.
    """
    with inside_check():
        rtol, fd_rtol = tolerances(point.dtype)
        width = (forward if under_test == "forward" else reverse).spec.width
        n_in, n_out = point.n_in, point.n_out
        scales = input_scales(point.inputs())
        vs = [rng.standard_normal(n_in) * scales for _ in range(width if under_test == "forward" else 1)]
        ws = [rng.standard_normal(n_out) for _ in range(width if under_test == "reverse" else 1)]
        groups = [[s] for s in point.slots] if per_argument else [list(point.slots)]
        results: list[ArgumentCheck] = []
        repeatable = True
        eps = float(np.finfo(np.float32 if point.dtype == "float32" else np.float64).eps)
        try:
            # Rounding noise floors. A derivative that is zero by cancellation
            # (the squared norm of a normalised vector, the dot product of two
            # orthonormal vectors) comes out as noise in either mode, not as
            # zero: about eps |w| max(|F(u)|, 1) |v| / |u|, taking outputs
            # and inputs to be of order one at least (an output that is zero
            # by cancellation says nothing of its terms' size). Central
            # differences add eps |w| max(|F(u)|, 1) / h.
            f0, u = point.evaluate(), point.inputs()
            f_size = np.maximum(np.abs(f0), 1.0)
            u_size = max(float(np.max(np.abs(u))) if u.size else 0.0, 1.0)
            adjoints = reverse_lanes(point, reverse, ws)
            for group in groups:
                mask = np.concatenate([np.full(s.size, any(s is g for g in group)) for s in point.slots]
                                      or [np.zeros(0, bool)])
                dirs = [np.where(mask, v, 0.0) for v in vs]
                tangents = forward_lanes(point, forward, dirs)
                name = group[0].name if len(group) == 1 else "all arguments"
                index = group[0].index if len(group) == 1 else -1
                for lane in range(width):
                    v = dirs[lane if under_test == "forward" else 0]
                    w = ws[lane if under_test == "reverse" else 0]
                    t = tangents[lane if under_test == "forward" else 0]
                    a = adjoints[lane if under_test == "reverse" else 0]
                    fwd, rev = float(w @ t), float(a @ v)
                    scale = max(_scale(w, t), _scale(a, v))
                    v_size = float(np.max(np.abs(v))) if v.size else 0.0
                    floor = 1e3 * eps * _scale(w, f_size) * v_size / u_size
                    agree = _close(fwd, rev, scale, rtol, floor)
                    fd = None
                    fd_floor = floor
                    if finite_differences or not agree:
                        fd, h = _central_difference(point, v, w)
                        scale = max(scale, abs(fd))
                        fd_floor = floor + 10 * eps * _scale(w, f_size) / h
                    mine, other = (fwd, rev) if under_test == "forward" else (rev, fwd)
                    if not (np.isfinite(fwd) or np.isfinite(rev)):
                        verdict = NOT_FINITE
                    elif agree:
                        verdict = "ok" if fd is None or _close(fd, mine, scale, fd_rtol, fd_floor) else \
                            ("forward and reverse agree, finite differences do not (a Const "
                             "argument that carries derivatives, or a kink or discontinuity here)")
                    elif not point_repeatable(point):
                        repeatable = False
                        verdict = "not repeatable"
                    elif _close(fd, mine, scale, fd_rtol, fd_floor):
                        verdict = "ok"  # the other mode is the wrong one
                    elif _close(fd, other, scale, fd_rtol, fd_floor):
                        verdict = f"{under_test} mode is wrong (finite differences side with the other mode)"
                    else:
                        verdict = "forward and reverse disagree, finite differences with neither"
                    label = name if width == 1 else f"{name} [lane {lane}]"
                    results.append(ArgumentCheck(index, label, fwd, rev, fd,
                                                 abs(fwd - rev) / scale if scale else 0.0, verdict))
            results += [const_write(name, f"{under_test} mode")
                        for name in sorted(point.written[under_test] - point.primal_writes())]
        finally:
            point.finish()
        spec = (forward if under_test == "forward" else reverse).spec
        return CheckReport(spec.kernel, spec.pattern, tuple(results), rtol, fd_rtol, repeatable)


def _central_difference(point: Point, v: np.ndarray, w: np.ndarray,
                        shrink: float = 1.0) -> tuple[float, float]:
    """w . (F(u + h v) - F(u - h v)) / 2h, and h."""
    u = point.inputs()
    step = _FD_STEP.get(point.dtype, _FD_STEP["float32"])
    h = _step(step, v, u) * shrink
    plus, minus = point.evaluate(h * v), point.evaluate(-h * v)
    return float(w @ (plus - minus)) / (2 * h), h


def point_repeatable(point: Point) -> bool:
    """Two evaluations from the same arguments and globals give the same
    outputs (a kernel with hidden state, such as a static counter, does not)."""
    first = point.evaluate()
    for _ in range(3):
        again = point.evaluate()
        if not (np.array_equal(first, again, equal_nan=True) or np.allclose(first, again, rtol=1e-13, atol=0)):
            return False
    return True


def mismatch_error(report: CheckReport, per_argument: CheckReport | None) -> DerivativeMismatchError:
    """The error raised when a derivative fails its first-use check."""
    stats["raised"] += 1
    detail = per_argument if per_argument is not None else report
    bad = [a for a in detail.arguments if not a.ok] or [a for a in report.arguments if not a.ok]
    writes = [a for a in bad if "writes into" in a.verdict]
    if writes:
        return DerivativeMismatchError(
            f"the derivative {report.pattern} of '{report.kernel}' failed its first-use check: "
            f"{writes[0].verdict}. Enzyme's code writes derivatives into memory the kernel only "
            "reads (seen with a load through a select between a read-only table and an active "
            "array); the call would have changed your data.\n" + str(detail) +
            "\nWhat to try: the other mode; copy the table into a local array in C; and please "
            "report the kernel. To call it anyway, compile with verify=False (or set "
            "ENZYME_VERIFY=0).", report=detail)
    bad = [a for a in bad if "writes into" not in a.verdict] or bad
    worst = max(bad, key=lambda a: a.disagreement)
    names = ", ".join(sorted({a.name.split(" [")[0] for a in bad}))
    if report.pattern.startswith("hvp"):
        return DerivativeMismatchError(
            f"the Hessian-vector products of '{report.kernel}' with respect to {names} failed their "
            f"first-use check: w.Hv = {worst.forward:.10g}, v.Hw = {worst.reverse:.10g}, central "
            f"differences of the gradient give {worst.finite_difference:.10g} ({worst.verdict}). Enzyme "
            "computed a wrong second derivative here without reporting an error.\n" + str(detail) +
            "\nWhat to try: a Hessian from jacobian() of a C gradient function, or finite differences "
            "of enzyme.grad; and please report the kernel. To call it anyway, compile with "
            "verify=False (or set ENZYME_VERIFY=0).", report=detail)
    return DerivativeMismatchError(
        f"the derivative {report.pattern} of '{report.kernel}' failed its first-use check: "
        f"forward and reverse mode disagree for {names} (w.(Jv) = {worst.forward:.10g} by forward "
        f"mode, (J^T w).v = {worst.reverse:.10g} by reverse mode, "
        + ("" if worst.finite_difference is None else
           f"{worst.finite_difference:.10g} by central differences, ")
        + f"relative disagreement {worst.disagreement:.1e}; {worst.verdict}). Enzyme computed a "
        "wrong derivative here without reporting an error.\n" + str(detail) +
        "\nWhat to try: the other mode (Forward instead of Reverse, or the reverse), which the "
        "check found right if finite differences side with it; the known Enzyme limitations in "
        "docs/correctness.md; a custom derivative rule for the function involved; "
        "compile(..., split_long_blocks=False) or small rewrites of the loop; and please report "
        "the kernel. To call it anyway, compile with verify=False (or set ENZYME_VERIFY=0).",
        report=detail)


class SplitAsReverse:
    """A split derivative (augmented forward pass, then reverse pass) called
    like an unsplit reverse entry point, so the same test checks it."""

    def __init__(self, functions: Any) -> None:
        self.functions = functions
        self.spec = functions.spec

    def __call__(self, *flat: Any, seed: Any = None) -> Any:
        tape = self.functions.forward(*flat)
        return self.functions.reverse(tape, seed=seed)


def check(kernel: Kernel, *args: object, mode: Mode | None = None, ret: type[Annotation[object]] | None = None,
          width: int = 1, finite_differences: bool = True, seed: int = 0) -> CheckReport:
    """Check a kernel's derivatives with the dot-product test.

    For random directions ``v`` over the differentiated arguments and ``w``
    over the outputs, compares ``w . (J v)`` from Enzyme's forward mode with
    ``(J^T w) . v`` from its reverse mode, one differentiated argument at a
    time, and with central differences along the same directions. Runs on
    copies: the arguments and the module's globals are left as they were.

    Parameters
    ----------
    kernel : Kernel
    *args
        One per C parameter, as for :func:`enzyme.autodiff`: ``Const(x)`` or a
        bare value is not differentiated; ``Active(x)``, ``Duplicated(x, dx)``
        (``dx`` is not used), ``DuplicatedNoNeed`` or ``BatchDuplicated``
        mark a floating scalar or array as differentiated. The outputs are a
        floating return value (unless ``ret=Const``) and the final contents
        of the differentiated non-const arrays.
    mode : Mode, optional
        The entry point the verdicts are about: ``Reverse`` (default),
        ``ReverseWithPrimal``, ``Forward``, ``ForwardWithPrimal``,
        ``ReverseSplit`` or ``ReverseSplitWithPrimal`` (the split passes).
    ret : annotation class, optional
        ``Const`` leaves the return value out of the outputs.
    width : int
        Check the batched entry point of that many lanes (every lane is
        tested against the other mode).
    finite_differences : bool
        Also compare with central differences (default); they are computed
        wherever forward and reverse disagree in any case.
    seed : int
        Seed of the random directions.

    Returns
    -------
    CheckReport
        ``report.ok``; ``print(report)`` gives a table with, per argument,
        the three numbers, their relative disagreement and a verdict.

    Examples
    --------
    >>> import numpy as np, enzyme
    >>> mod = enzyme.compile("double f(const double *x, double a) {"
    ...                      " return a * x[0] * x[1]; }")
    >>> report = enzyme.check(mod.f, enzyme.Duplicated(np.array([1.0, 2.0]), None), enzyme.Active(3.0))
    >>> report.ok
    True
    >>> [a.name for a in report.arguments]
    ['x', 'a']
    """

    mode = Reverse if mode is None else mode
    if mode not in (Reverse, ReverseWithPrimal, Forward, ForwardWithPrimal, ReverseSplit,
                    ReverseSplitWithPrimal):
        raise ActivityError(f"check: mode must be a Mode such as Reverse or Forward, got {mode!r}.")
    if not isinstance(width, int) or width < 1:
        raise ActivityError(f"check: width must be a positive integer, got {width!r}.")
    if mode.split and width != 1:
        raise ActivityError("check: split derivatives are not batched; use width=1.")
    if not hasattr(kernel, "derivative_function"):
        raise ActivityError(f"check: the first argument is a kernel of a compiled module "
                            f"(mod.f), got {type(kernel).__name__}.")
    sig = kernel.signature
    if len(args) != len(sig.params):
        raise ActivityError(f"check: '{sig.name}' takes {len(sig.params)} argument(s), {len(args)} "
                            f"given. Signature: {sig}")
    primals, differentiated = [], []
    for a, param in zip(args, sig.params):
        marked = isinstance(a, (Active, Duplicated, BatchDuplicated))
        primals.append(a.val if hasattr(a, "val") else a)
        if marked and not param.ctype.carries_derivative:
            raise ActivityError(f"check: argument '{param.name}' (`{param.ctype.spelling}`) carries "
                                "no derivative; pass it as Const.")
        differentiated.append(marked)
    if not any(differentiated):
        raise ActivityError("check: mark at least one argument as differentiated (Active or Duplicated).")
    reverse = mode.reverse
    ret_output = sig.ret.carries_derivative and ret is not Const

    def kinds(for_reverse: bool, batched: bool) -> tuple:
        out = []
        for diff, param in zip(differentiated, sig.params):
            if not diff:
                out.append(Const)
            elif for_reverse and not param.ctype.is_pointer:
                out.append(Active)
            else:
                out.append(BatchDuplicated if batched else Duplicated)
        return tuple(out)

    def ret_kind(for_reverse: bool) -> Any:
        if sig.ret.kind == "void":
            return None
        if not ret_output:
            return Const
        return Active if for_reverse else Duplicated

    batched = width > 1
    entry: SplitAsReverse | DerivativeFunction[Any]
    if mode.split:
        entry = SplitAsReverse(kernel.split_functions(mode, kinds(True, False), ret_kind(True)))
    else:
        entry = kernel.derivative_function(mode, kinds(reverse, batched), ret_kind(reverse), width)
    other_mode = Forward if reverse else Reverse
    other = kernel.derivative_function(other_mode, kinds(not reverse, False), ret_kind(not reverse), 1)
    fwd, rev = (other, entry) if reverse else (entry, other)
    point = Point(kernel, primals, differentiated, ret_output, kernel.module._global_state())
    if not point.n_out:
        raise ActivityError(f"check: '{sig.name}' has no differentiated output (a floating return "
                            "value, or a non-const array marked Duplicated).")
    with kernel.module._wrt_arguments_only():
        return compare(point, fwd, rev, under_test="reverse" if reverse else "forward",
                       rng=np.random.default_rng(seed), per_argument=True,
                       finite_differences=finite_differences)


@dataclass(frozen=True)
class Isolated:
    """What a task run in a child process gave: ``status`` is ``"ok"``
    (``value`` is its result), ``"error"`` (``value`` is (exception class
    name, message, is an argument error)), ``"crashed"`` (``value`` is the
    signal or exit code) or ``"timeout"``."""

    status: str
    value: Any = None


def run_isolated(task: Callable[[], Any], timeout: float) -> Isolated:
    """Run ``task`` in a forked child and return its result.

    A check calls derivatives the user did not ask for (the other mode), and
    those can crash where the asked-for one does not (Enzyme's forward mode
    of a call through a function pointer held in a global, for one). In a
    child, a crash or hang costs the check, not the interpreter; and every
    write the check makes (arrays, globals, static variables) stays in the
    child, so the user's process is left exactly as it was.
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ (and JAX, whose runtime is multithreaded) warn about
        # fork() in a process with threads: the child here runs only the
        # kernel's C code and numpy on copies, which take no lock another
        # thread may hold (libraries are loaded before the fork; call.py
        # frees its load lock across forks), and never calls into JAX or
        # torch
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        code = 0
        try:
            os.close(read_fd)
            # a crash here is an answer, not news: no traceback dump on stderr
            faulthandler.disable()
            try:
                result: tuple = ("ok", task())
            except Exception as err:  # reported to the parent as data
                result = ("error", (type(err).__name__, str(err),
                                    isinstance(err, (ArgumentError, ShadowError, ActivityError))))
            data = pickle.dumps(result)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return Isolated("timeout")
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return Isolated("crashed", signal.Signals(os.WTERMSIG(status)).name)
    if os.WEXITSTATUS(status) != 0 or not chunks:
        return Isolated("crashed", f"exit status {os.WEXITSTATUS(status)}")
    status_name, value = pickle.loads(b"".join(chunks))
    return Isolated(status_name, value)


def first_use_test(point: Point, forward: Any, reverse: Any, under_test: str,
                   seed: int) -> tuple[CheckReport, CheckReport | None]:
    """The first-use check: the dot-product test over all differentiated
    arguments at once; where it fails, again per argument with central
    differences (for the error message)."""
    report = compare(point, forward, reverse, under_test=under_test, rng=np.random.default_rng(seed))
    if report.ok or not report.repeatable or any(a.verdict in UNDECIDED for a in report.arguments):
        return report, None
    detail = compare(point, forward, reverse, under_test=under_test, rng=np.random.default_rng(seed),
                     per_argument=True, finite_differences=True)
    return report, detail


def finite_difference_test(point: Point, fn: Any, under_test: str, seed: int) -> CheckReport:
    """The first-use check of an entry point whose other mode does not build:
    ``w . J v`` from it against central differences of the kernel along
    random directions, trusted only where the differences are smooth (the
    same at a quarter of the step)."""
    with inside_check():
        rtol, fd_rtol = tolerances(point.dtype)
        rng = np.random.default_rng(seed)
        width = fn.spec.width
        forward = under_test == "forward"
        scales = input_scales(point.inputs())
        vs = [rng.standard_normal(point.n_in) * scales for _ in range(width if forward else 1)]
        ws = [rng.standard_normal(point.n_out) for _ in range(1 if forward else width)]
        eps = float(np.finfo(np.float32 if point.dtype == "float32" else np.float64).eps)
        results: list[ArgumentCheck] = []
        try:
            f0, u = point.evaluate(), point.inputs()
            f_size = np.maximum(np.abs(f0), 1.0)
            u_size = max(float(np.max(np.abs(u))) if u.size else 0.0, 1.0)
            if forward:
                found = [float(ws[0] @ t) for t in forward_lanes(point, fn, vs)]
            else:
                found = [float(a @ vs[0]) for a in reverse_lanes(point, fn, ws)]
            for lane, mine in enumerate(found):
                v, w = vs[lane if forward else 0], ws[0 if forward else lane]
                fd, h = _central_difference(point, v, w)
                scale = max(abs(mine), abs(fd), _scale(w, f_size) * eps)
                v_size = float(np.max(np.abs(v))) if v.size else 0.0
                floor = 1e3 * eps * _scale(w, f_size) * v_size / u_size + \
                    10 * eps * _scale(w, f_size) / h
                if not np.isfinite(mine) and not np.isfinite(fd):
                    verdict = NOT_FINITE
                elif _close(fd, mine, scale, fd_rtol, floor):
                    verdict = "ok"
                elif not _close(fd, _central_difference(point, v, w, 0.25)[0], scale, fd_rtol,
                                4 * floor):
                    verdict = NOT_SMOOTH
                else:
                    verdict = (f"{under_test} mode disagrees with central differences (the other "
                               "mode, its usual reference, does not build or crashes)")
                results.append(ArgumentCheck(
                    -1, "all arguments" if width == 1 else f"all arguments [lane {lane}]",
                    mine if forward else float("nan"), float("nan") if forward else mine, fd,
                    abs(mine - fd) / scale if scale else 0.0, verdict))
            results += [const_write(name, f"{under_test} mode")
                        for name in sorted(point.written[under_test] - point.primal_writes())]
            # differences of a kernel with hidden state say nothing
            repeatable = all(r.verdict == "ok" for r in results) or point_repeatable(point)
        finally:
            point.finish()
        return CheckReport(fn.spec.kernel, fn.spec.pattern, tuple(results), rtol, fd_rtol,
                           repeatable)


def zero_direction_test(point: Point, fn: Any, under_test: str) -> ArgumentCheck | None:
    """A derivative is linear in its tangents (forward) or seeds (reverse):
    zero in must give exactly zero out. A failure (None when it holds)
    means a derivative leaked in from memory the call reads rather than from
    its arguments, such as a global's shadow that is the global itself:
    ERFA's eraUtctai gave the tangent 35/86400 (the leap seconds' value) for
    zero tangents, a wrong number that no tolerance of the dot-product test
    caught at Julian dates."""
    with inside_check():
        try:
            if under_test == "forward":
                found = forward_lanes(point, fn, [np.zeros(point.n_in)] * fn.spec.width)
            else:
                found = reverse_lanes(point, fn, [np.zeros(point.n_out)] * fn.spec.width)
        finally:
            point.finish()
    largest = max((float(np.max(np.abs(x))) for x in found if x.size), default=0.0)
    if not np.isfinite(largest) or largest == 0.0:
        return None  # (NaN or inf from 0 * inf: a question for the other tests)
    return ArgumentCheck(-1, ZERO_DIRECTIONS, largest if under_test == "forward" else 0.0,
                         largest if under_test == "reverse" else 0.0, 0.0, float("inf"),
                         f"{under_test} mode is not linear: zero {'tangents' if under_test == 'forward' else 'seeds'} "
                         f"gave derivatives up to {largest:.3g} (a derivative that does not come "
                         "from the arguments, e.g. a global's shadow)")


def with_zero_direction_test(report: CheckReport, point: Point, fn: Any,
                             under_test: str) -> CheckReport:
    """``report`` with the zero-direction test's failure added, if any."""
    failure = zero_direction_test(point, fn, under_test)
    if failure is None:
        return report
    return dataclasses.replace(report, arguments=(*report.arguments, failure))


def call_only(point: Point, fn: Any, seed: int) -> None:
    """Call an entry point once on copies (to see whether it crashes)."""
    with inside_check():
        rng = np.random.default_rng(seed)
        if fn.spec.reverse:
            reverse_lanes(point, fn, [rng.standard_normal(point.n_out) for _ in range(fn.spec.width)])
        else:
            forward_lanes(point, fn, [rng.standard_normal(point.n_in) for _ in range(fn.spec.width)])


def timeout() -> float:
    """Seconds a first-use check may take (``ENZYME_VERIFY_TIMEOUT``)."""
    return env_seconds("ENZYME_VERIFY_TIMEOUT", 120.0, OptionError)


def check_functions(f: _Outputs, x: npt.ArrayLike, *, jvp: _Jvp | None = None,
                    vjp: _Vjp | None = None, seed: int = 0, name: str = "") -> CheckReport:
    """Check derivatives you compute yourself (C code calling
    ``__enzyme_autodiff`` / ``__enzyme_fwddiff``, wrapped in Python) with
    the dot-product test and central differences.

    Parameters
    ----------
    f : callable
        ``f(x)``: the function, returning a float or an array (its outputs).
    x : array_like
        The point (floating; any shape). ``f``, ``jvp`` and ``vjp`` get
        copies.
    jvp : callable, optional
        ``jvp(x, v) -> J v`` (shaped like f's output).
    vjp : callable, optional
        ``vjp(x, w) -> J^T w`` (shaped like x).
    seed : int
        Seed of the random directions.
    name : str
        What the report calls the function.

    Returns
    -------
    CheckReport

    Notes
    -----
    With both, ``w . jvp(x, v)`` is compared with ``vjp(x, w) . v``; with one,
    that one is compared with central differences, which are computed in
    every case. The verdict is about ``vjp`` when given, else ``jvp``.

    Examples
    --------
    >>> import numpy as np
    >>> report = check_functions(lambda x: np.sum(x**3), np.array([1.0, 2.0]),
    ...                          vjp=lambda x, w: 3 * x**2 * w)
    >>> report.ok
    True
    """
    if jvp is None and vjp is None:
        raise ActivityError("check_functions needs jvp=, vjp= or both.")
    try:
        x0 = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentValueError(f"check_functions: x must be numbers (a float or an array of "
                            f"floats), got {type(x).__name__}: {exc}.") from None
    dtype = "float32" if np.asarray(x).dtype == np.float32 else "float64"
    rtol, fd_rtol = tolerances(dtype)
    eps = float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
    rng = np.random.default_rng(seed)

    def outputs(u: np.ndarray) -> np.ndarray:
        return np.asarray(f(u.copy()), dtype=np.float64).ravel()

    f0 = outputs(x0)
    v = rng.standard_normal(x0.size) * input_scales(x0.ravel())
    w = rng.standard_normal(f0.size)
    t = None if jvp is None else np.asarray(jvp(x0.copy(), v.reshape(x0.shape)), dtype=np.float64).ravel()
    a = None if vjp is None else np.asarray(vjp(x0.copy(), w.reshape(f0.shape) if f0.size > 1 else float(w[0])),
                                            dtype=np.float64).ravel()
    if t is not None and t.shape != f0.shape:
        raise ActivityError(f"jvp returned {t.size} values, f returns {f0.size}.")
    if a is not None and a.shape != x0.ravel().shape:
        raise ActivityError(f"vjp returned {a.size} values, x has {x0.size}.")
    u_size = max(float(np.max(np.abs(x0))) if x0.size else 0.0, 1.0)
    h = _step(_FD_STEP[dtype], v, x0.ravel())
    fd = float(w @ (outputs(x0 + h * v.reshape(x0.shape)) - outputs(x0 - h * v.reshape(x0.shape)))) / (2 * h)
    f_size = np.maximum(np.abs(f0), 1.0)
    floor = 1e3 * eps * _scale(w, f_size) * float(np.max(np.abs(v))) / u_size
    fd_floor = floor + 10 * eps * _scale(w, f_size) / h
    fwd = float(w @ t) if t is not None else float("nan")
    rev = float(a @ v) if a is not None else float("nan")
    scale = max(_scale(w, t) if t is not None else 0.0, _scale(a, v) if a is not None else 0.0, abs(fd))
    mine = rev if a is not None else fwd
    if t is not None and a is not None:
        agree = _close(fwd, rev, scale, rtol, floor)
        if agree:
            verdict = "ok" if _close(fd, mine, scale, fd_rtol, fd_floor) else \
                "jvp and vjp agree, finite differences do not (a kink or discontinuity here?)"
        elif _close(fd, mine, scale, fd_rtol, fd_floor):
            verdict = "ok"
        elif _close(fd, fwd, scale, fd_rtol, fd_floor):
            verdict = "vjp is wrong (finite differences side with jvp)"
        else:
            verdict = "jvp and vjp disagree, finite differences with neither"
    else:
        verdict = "ok" if _close(fd, mine, scale, fd_rtol, fd_floor) else \
            f"{'vjp' if a is not None else 'jvp'} disagrees with finite differences"
    if not (np.isfinite(fwd) or np.isfinite(rev)):
        verdict = NOT_FINITE
    both = t is not None and a is not None
    check = ArgumentCheck(0, "x", fwd, rev, fd, abs(fwd - rev) / scale if both and scale else
                          (abs(mine - fd) / scale if scale else 0.0), verdict)
    return CheckReport(name or getattr(f, "__name__", "f"), "user-supplied derivatives",
                       (check,), rtol, fd_rtol)


def hvp_test(x0: np.ndarray, hvp: Callable[[list], list], gradient: Callable[[np.ndarray], np.ndarray],
             width: int, dtype: str, seed: int, kernel: str, name: str) -> CheckReport:
    """The first-use check of Hessian-vector products: symmetry (``w . H v``
    against ``v . H w``, both from ``hvp``) and central differences of the
    gradient along ``v``, trusted only where the gradient is smooth (the
    same at a quarter of the step). ``hvp(directions)`` takes ``width``
    directions; ``gradient(x)`` is a reverse-mode gradient at ``x``."""
    with inside_check():
        rtol, fd_rtol = tolerances(dtype)
        eps = float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
        rng = np.random.default_rng(seed)
        v = rng.standard_normal(x0.shape) * input_scales(x0.ravel()).reshape(x0.shape)
        w = rng.standard_normal(x0.shape)
        zeros = [np.zeros_like(x0)] * max(width - 2, 0)
        if width >= 2:
            hv, hw = hvp([v, w, *zeros])[:2]
        else:
            hv, hw = hvp([v])[0], hvp([w])[0]
        a, b = float(np.sum(w * hv)), float(np.sum(v * hw))
        g0 = gradient(x0.copy())
        u_size = max(float(np.max(np.abs(x0))) if x0.size else 0.0, 1.0)
        g_size = np.maximum(np.abs(g0), 1.0)
        scale = max(_scale(w, hv), _scale(v, hw))
        floor = 1e3 * eps * _scale(w, g_size) * float(np.max(np.abs(v))) / u_size
        h = _step(_FD_STEP.get(dtype, _FD_STEP["float32"]), v.ravel(), x0.ravel())

        def fd_at(step: float) -> float:
            return float(np.sum(w * (gradient(x0 + step * v) - gradient(x0 - step * v)))) / (2 * step)

        fd, fd_quarter = fd_at(h), fd_at(h / 4)
        fd_floor = floor + 40 * eps * _scale(w, g_size) / h
        scale_fd = max(scale, abs(fd))
        smooth = _close(fd, fd_quarter, scale_fd, fd_rtol, fd_floor)
        if not (np.isfinite(a) or np.isfinite(b)):
            verdict = NOT_FINITE
        elif not _close(a, b, scale, rtol, floor):
            verdict = "hvp is wrong (w.Hv and v.Hw differ: a Hessian is symmetric)"
        elif not smooth:
            verdict = NOT_SMOOTH
        elif _close(fd, a, scale_fd, fd_rtol, fd_floor):
            verdict = "ok"
        else:
            verdict = "hvp is wrong (central differences of the gradient disagree)"
        check = ArgumentCheck(0, name, a, b, fd, abs(a - fd) / scale_fd if scale_fd else 0.0, verdict)
        return CheckReport(kernel, f"hvp wrt {name}", (check,), rtol, fd_rtol)
