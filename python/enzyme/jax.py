"""JAX bridge: a kernel as a JAX function whose derivatives come from Enzyme.

``enzyme.jax.function(mod.f, out=...)`` returns a function of JAX arrays
that works under ``jax.jit``, ``jax.grad``, ``jax.jacfwd``, ``jax.jacrev``,
``jax.hessian`` and ``jax.vmap``. It is built from five JAX primitives,
each a call of compiled C code:

- the kernel itself;
- its JVP (one Enzyme forward pass), linear in the tangents, whose
  transpose is
- the VJP (one Enzyme reverse pass), whose own JVP is the VJP again (along
  the cotangents) plus
- the derivative of the VJP along the inputs (one forward-over-reverse
  pass), which is symmetric in its direction and so its own transpose;
- the derivative of the JVP along the inputs (one forward-over-forward
  pass), symmetric in its two directions, whose transpose in either is the
  forward-over-reverse one.

So first derivatives in either mode and second derivatives in any nesting
(``jax.hessian``, ``jax.jacfwd(jax.jacfwd(f))``, ``jax.jacrev(jax.jacrev(f))``,
``jax.jacrev(jax.jacfwd(f))``) are exact; third derivatives raise an
error saying so. Integer parameters (sizes) are static: pass Python ints.
``jax.vmap`` makes one call per batch element.

Compiled (``jax.jit``, and every transform JAX compiles), the kernel, its
JVP and its VJP are XLA custom calls into the generated C (see
:mod:`enzyme.xla`): no Python on the call path after the first call of each,
which runs the checked Python path once (a derivative's first-use check). The
two second-order primitives, modules run in a worker process (``isolate``)
and modules carrying derivatives through globals use ``jax.pure_callback``;
so does everything when ``ENZYME_JAX_CALLBACKS=1``. Evaluated eagerly, the
primitives call the C directly. Needs
``jax.config.update("jax_enable_x64", True)`` for kernels on doubles.
Install with ``pip install enzyme-ffi[jax]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import xla
from .bridge import RETURN, BridgeFunction, PureFunction, Shape, pure_function
from .errors import ActivityError, ArgumentTypeError
from .module import Kernel
from .params import Role

__all__ = ["function", "JaxFunction", "RETURN"]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A primitive's static parameters: the pure function, which of its
    inputs are operands (floating) and the values of the others."""

    pure: PureFunction
    floating: tuple[int, ...]  # input positions passed as JAX operands
    statics: tuple[tuple[int, Any], ...]  # (input position, Python value)

    def values(self, operands: Sequence[Any]) -> list[Any]:
        out: list[Any] = [None] * len(self.pure.inputs)
        for position, value in zip(self.floating, operands):
            array = np.asarray(value)
            out[position] = float(array) if array.ndim == 0 else array
        for position, value in self.static_values():
            out[position] = value
        return out

    def avals_by_input(self, avals: Sequence[Any]) -> list[Any]:
        out: list[Any] = [None] * len(self.pure.inputs)
        for position, aval in zip(self.floating, avals):
            out[position] = aval
        for position, value in self.static_values():
            out[position] = value
        return out

    def static_values(self) -> list[tuple[int, Any]]:
        """(input position, value) of the static inputs, arrays as arrays."""
        return [(position, value.array() if isinstance(value, _StaticArray) else value)
                for position, value in self.statics]

    def output_avals(self, input_avals: Sequence[Any]) -> list[jax.core.ShapedArray]:
        shapes = self.pure.output_shapes(self.avals_by_input(input_avals))
        return [jax.core.ShapedArray(shape, self.pure.output_dtype(i)) for i, shape in enumerate(shapes)]

    def input_avals(self, input_avals: Sequence[Any]) -> list[jax.core.ShapedArray]:
        return [jax.core.ShapedArray(a.shape, a.dtype) for a in input_avals]


@dataclasses.dataclass(frozen=True)
class _StaticArray:
    """A non-floating array input (``const int *idx``): static, so held as
    bytes (JAX's static parameters must be hashable)."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, value: Any, dtype: np.dtype) -> _StaticArray:
        array = np.ascontiguousarray(value, dtype=dtype)
        return cls(array.tobytes(), array.dtype.str, array.shape)

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape).copy()


def _host(fn: Any, results: Sequence[jax.ShapeDtypeStruct], *operands: Any) -> list[Any]:
    """Call ``fn`` on the host with numpy arrays (a pure callback)."""
    def call(*arrays: Any) -> tuple[np.ndarray, ...]:
        out = fn(*arrays)
        return tuple(np.asarray(o, dtype=r.dtype).reshape(r.shape) for o, r in zip(out, results))
    return list(jax.pure_callback(call, tuple(results), *operands))


def _shapes(avals: Sequence[Any]) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]


def _primitive(name: str, abstract: Any, host: Any, native: Any = None) -> Primitive:
    """A primitive with several results: called directly when evaluated
    eagerly; compiled, an XLA custom call where ``native`` makes a plan for
    it (see enzyme.xla), a host callback otherwise."""
    prim = Primitive(f"enzyme_{name}")
    prim.multiple_results = True
    prim.def_abstract_eval(abstract)

    def impl(*operands: Any, plan: _Plan) -> list[Any]:
        avals = abstract(*[_aval(o) for o in operands], plan=plan)
        out = host(plan, *[np.asarray(o) for o in operands])
        return [jnp.asarray(np.asarray(o, dtype=a.dtype).reshape(a.shape)) for o, a in zip(out, avals)]

    def callback(*operands: Any, plan: _Plan) -> list[Any]:
        avals = abstract(*[_aval(o) for o in operands], plan=plan)
        return _host(functools.partial(host, plan), _shapes(avals), *operands)

    by_callback = mlir.lower_fun(callback, multiple_results=True)

    def lowering(ctx: Any, *operands: Any, plan: _Plan) -> Any:
        found = _native_plan(native, host, plan, ctx.avals_in, ctx.avals_out) if native else None
        if found is None:
            return by_callback(ctx, *operands, plan=plan)

        def custom_call(*values: Any) -> Any:
            return jax.ffi.ffi_call(xla.TARGET, _shapes(ctx.avals_out))(*values, plan=np.int64(found.id))
        return mlir.lower_fun(custom_call, multiple_results=True)(ctx, *operands)

    prim.def_impl(impl)
    mlir.register_lowering(prim, lowering)
    batching.primitive_batchers[prim] = functools.partial(_batch_by_loop, prim)
    return prim


_native_plans: dict[tuple, Any] = {}


def _native_plan(native: Any, host: Any, plan: _Plan, avals_in: Sequence[Any],
                 avals_out: Sequence[Any]) -> xla.Plan | None:
    """The custom-call plan of one lowering (cached: compiled programs keep
    its number), or None for the callback. Modules calling into a worker
    process or carrying derivatives through globals keep the callback (the
    Python path handles them)."""
    module = plan.pure.kernel.module
    if module.isolate or module._shadowed or not xla.available(module._toolchain):
        return None
    key = (native, plan, tuple((a.shape, a.dtype) for a in avals_in))
    if key not in _native_plans:
        args = [(tuple(a.shape), np.dtype(a.dtype)) for a in avals_in]
        results = [(tuple(a.shape), np.dtype(a.dtype)) for a in avals_out]
        _native_plans[key] = native(plan, host, args, results)
    return _native_plans[key]


def _positions(plan: _Plan) -> tuple[dict[int, int], dict[int, Any], dict[int, int]]:
    """C parameter index -> operand position (floating inputs), static value,
    output position."""
    floating = {plan.pure.inputs[p]: k for k, p in enumerate(plan.floating)}
    statics = {plan.pure.inputs[p]: v for p, v in plan.static_values()}
    outputs = {index: j for j, index in enumerate(plan.pure.outputs)}
    return floating, statics, outputs


def _first_call(host: Any, plan: _Plan, checked: Any) -> Any:
    """The first call of a custom call, in Python: the callback's work on
    XLA's buffers; later calls may go native once ``checked()``."""
    def run(args: list[np.ndarray], results: list[np.ndarray]) -> bool:
        for out, value in zip(results, host(plan, *args)):
            out[...] = np.asarray(value, dtype=out.dtype).reshape(out.shape)
        return checked()
    return run


def _primal_native(plan: _Plan, host: Any, args: Sequence, results: Sequence) -> xla.Plan | None:
    kernel = plan.pure.kernel
    sig = kernel.signature
    floating, statics, outputs = _positions(plan)
    sources = []
    for index, param in enumerate(sig.params):
        if index in floating:
            written = param.ctype.is_pointer and not param.ctype.const
            sources.append(xla.Source(xla.ARG_COPY if written else xla.ARG, floating[index]))
        elif index in outputs:
            sources.append(xla.Source(xla.RET, outputs[index]))
        else:
            source = xla.static_source(statics[index], param.ctype)
            if source is None:
                return None
            sources.append(source)
    sources.append(xla.Source(xla.RET, outputs[-1]) if -1 in outputs else xla.Source(xla.SCRATCH, 16))
    return xla.primal_plan(kernel, sources, _first_call(host, plan, lambda: True), args, results)


def _derivative_native(reverse: bool, plan: _Plan, host: Any, args: Sequence,
                       results: Sequence) -> xla.Plan | None:
    """The plan of the JVP (operands: x, tangents; results: output tangents)
    or the VJP (operands: x, output cotangents; results: input gradients)."""
    pure = plan.pure
    mode, kinds, ret = pure.pattern(reverse=reverse)
    fn = pure.kernel.derivative_function(mode, kinds, ret)
    floating, statics, outputs = _positions(plan)
    n = len(plan.floating)
    sig = pure.kernel.signature

    def source(slot: Any) -> xla.Source | None:
        a, role = slot.arg, slot.role
        if role is Role.PRIMAL:
            if a in floating:
                return xla.Source(xla.ARG_COPY if slot.writable else xla.ARG, floating[a])
            if a in outputs:
                return xla.Source(xla.SCRATCH_ARG, n + outputs[a]) if reverse else \
                    xla.Source(xla.SCRATCH_RET, outputs[a])
            return xla.static_source(statics[a], sig.params[a].ctype)
        if role is Role.SHADOW:
            if a in floating:
                return xla.Source(xla.RET, floating[a]) if reverse else \
                    xla.Source(xla.ARG_COPY if slot.writable else xla.ARG, n + floating[a])
            if a in outputs:  # (reverse: the cotangent, which Enzyme zeroes)
                return xla.Source(xla.ARG_COPY, n + outputs[a]) if reverse else xla.Source(xla.RET, outputs[a])
            return None
        if role is Role.SEED and reverse and -1 in outputs:
            return xla.Source(xla.ARG, n + outputs[-1])
        if role in (Role.ADJOINT_OUT, Role.GRADIENT_OUT) and reverse and a in floating:
            return xla.Source(xla.RET, floating[a])
        if role is Role.TANGENT_OUT and not reverse and -1 in outputs:
            return xla.Source(xla.RET, outputs[-1])
        if role is Role.PRIMAL_OUT:
            return xla.Source(xla.SCRATCH, 16)
        return None

    def checked() -> bool:
        return fn.first_call is None and fn.failed is None

    return xla.plan_for(fn, fn._slots, source, _first_call(host, plan, checked), args, results)


def _batch_by_loop(prim: Primitive, operands: Sequence[Any], dims: Sequence[Any], **params: Any):
    """vmap: one call per batch element (the kernel is a scalar C loop)."""
    size = next(o.shape[d] for o, d in zip(operands, dims) if d is not None)
    moved = [jnp.moveaxis(o, d, 0) if d is not None else None for o, d in zip(operands, dims)]
    if size == 0:  # an empty batch: empty results of the right shapes, no call
        element = [jax.core.ShapedArray(np.shape(m[0:1])[1:] if m is not None else np.shape(o), jnp.result_type(o))
                   for m, o in zip(moved, operands)]
        avals = prim.abstract_eval(*element, **params)[0]
        return [jnp.zeros((0, *a.shape), a.dtype) for a in avals], [0] * len(avals)
    results = [prim.bind(*[m[i] if m is not None else o for m, o in zip(moved, operands)], **params)
               for i in range(size)]
    return [jnp.stack(column) for column in zip(*results)], [0] * len(results[0])


# The four primitives. Operand layouts: call (x); jvp (x, tangents of x);
# vjp (x, cotangents of the outputs); second (x, cotangents, directions on x).

def _call_abstract(*avals: Any, plan: _Plan) -> list[Any]:
    return plan.output_avals(avals)


def _call_host(plan: _Plan, *arrays: Any) -> tuple:
    return plan.pure(*plan.values(arrays))


def _jvp_abstract(*avals: Any, plan: _Plan) -> list[Any]:
    return plan.output_avals(avals[:len(plan.floating)])


def _jvp_host(plan: _Plan, *arrays: Any) -> tuple:
    n = len(plan.floating)
    tangents: list[Any] = [None] * len(plan.pure.inputs)
    for position, tangent in zip(plan.floating, arrays[n:]):
        tangents[position] = tangent
    return plan.pure.jvp(plan.values(arrays[:n]), tangents)[1]


def _vjp_abstract(*avals: Any, plan: _Plan) -> list[Any]:
    return plan.input_avals(avals[:len(plan.floating)])


def _vjp_host(plan: _Plan, *arrays: Any) -> tuple:
    n = len(plan.floating)
    grads = plan.pure.vjp(plan.values(arrays[:n]), arrays[n:])
    return tuple(grads[p] for p in plan.floating)


def _second_abstract(*avals: Any, plan: _Plan) -> list[Any]:
    return plan.input_avals(avals[:len(plan.floating)])


def _second_host(plan: _Plan, *arrays: Any) -> tuple:
    n, m = len(plan.floating), len(plan.pure.outputs)
    directions: list[Any] = [None] * len(plan.pure.inputs)
    for position, direction in zip(plan.floating, arrays[n + m:]):
        directions[position] = direction
    _, products = plan.pure.vjp_and_derivative(plan.values(arrays[:n]), arrays[n:n + m], directions)
    return tuple(products[p] for p in plan.floating)


def _forward_second_abstract(*avals: Any, plan: _Plan) -> list[Any]:
    return plan.output_avals(avals[:len(plan.floating)])


def _forward_second_host(plan: _Plan, *arrays: Any) -> tuple:
    n = len(plan.floating)
    tangents: list[Any] = [None] * len(plan.pure.inputs)
    directions: list[Any] = [None] * len(plan.pure.inputs)
    for k, position in enumerate(plan.floating):
        tangents[position], directions[position] = arrays[n + k], arrays[2 * n + k]
    return plan.pure.jvp_derivative(plan.values(arrays[:n]), tangents, directions)


call_p = _primitive("call", _call_abstract, _call_host, _primal_native)
forward_second_p = _primitive("jvp_derivative", _forward_second_abstract, _forward_second_host)
jvp_p = _primitive("jvp", _jvp_abstract, _jvp_host, functools.partial(_derivative_native, False))
vjp_p = _primitive("vjp", _vjp_abstract, _vjp_host, functools.partial(_derivative_native, True))
second_p = _primitive("vjp_derivative", _second_abstract, _second_host)


def _instantiate(tangents: Sequence[Any], like: Sequence[Any]) -> list[Any]:
    return [jnp.zeros(np.shape(p), jnp.result_type(p)) if type(t) is ad.Zero else t
            for t, p in zip(tangents, like)]


def _nonzero(tangents: Sequence[Any]) -> bool:
    return any(type(t) is not ad.Zero for t in tangents)


def _not_supported(what: str) -> ActivityError:
    return ActivityError(f"enzyme.jax: {what} is not implemented yet (first and second "
                         "derivatives are).")


def _call_jvp(primals: Sequence[Any], tangents: Sequence[Any], *, plan: _Plan):
    out = call_p.bind(*primals, plan=plan)
    if not _nonzero(tangents):
        return out, [ad.Zero.from_primal_value(o) for o in out]
    return out, jvp_p.bind(*primals, *_instantiate(tangents, primals), plan=plan)


def _first_order_jvp(first: Primitive, second: Primitive, primals: Sequence[Any],
                     tangents: Sequence[Any], *, plan: _Plan):
    """The JVP of a first-derivative primitive (the JVP or the VJP), whose
    operands are the point and a direction linear in it: the primitive
    again along the direction, plus its second-order primitive along the
    point."""
    n = len(plan.floating)
    out = first.bind(*primals, plan=plan)
    parts = []
    if _nonzero(tangents[n:]):  # along the direction: linear
        parts.append(first.bind(*primals[:n], *_instantiate(tangents[n:], primals[n:]), plan=plan))
    if _nonzero(tangents[:n]):  # along the point: a second derivative
        parts.append(second.bind(*primals, *_instantiate(tangents[:n], primals[:n]), plan=plan))
    if not parts:
        return out, [ad.Zero.from_primal_value(o) for o in out]
    return out, parts[0] if len(parts) == 1 else [a + b for a, b in zip(*parts)]


def _aval(value: Any) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(np.shape(value), jnp.result_type(value))


def _dense(cotangents: Sequence[Any], avals: Sequence[Any]) -> list[Any]:
    """Cotangents with JAX's symbolic zeros made arrays of the given shapes."""
    return [jnp.zeros(a.shape, a.dtype) if type(c) is ad.Zero else c for c, a in zip(cotangents, avals)]


def _forward_second_transpose(cotangents: Sequence[Any], *operands: Any, plan: _Plan):
    # sum_k ct_k t^T H_k w is symmetric in t and w: transposed in one of
    # them, it is the forward-over-reverse product along the other
    n = len(plan.floating)
    x, t, w = operands[:n], operands[n:2 * n], operands[2 * n:]
    undefined_t = any(ad.is_undefined_primal(v) for v in t)
    undefined_w = any(ad.is_undefined_primal(v) for v in w)
    if any(ad.is_undefined_primal(v) for v in x) or undefined_t == undefined_w:
        raise _not_supported("this transpose of a second derivative")
    cts = _dense(cotangents, plan.output_avals([_aval(v) for v in x]))
    along = w if undefined_t else t
    found = second_p.bind(*x, *cts, *along, plan=plan)
    transposed = t if undefined_t else w
    out = [g if ad.is_undefined_primal(v) else None for g, v in zip(found, transposed)]
    return [None] * n + (out + [None] * n if undefined_t else [None] * n + out)


def _jvp_transpose(cotangents: Sequence[Any], *operands: Any, plan: _Plan):
    n = len(plan.floating)
    x = operands[:n]
    if any(ad.is_undefined_primal(v) for v in x):
        raise _not_supported("transposing a forward-mode derivative with respect to its point")
    cts = _dense(cotangents, plan.output_avals([_aval(v) for v in x]))
    return [None] * n + vjp_p.bind(*x, *cts, plan=plan)


def _vjp_transpose(cotangents: Sequence[Any], *operands: Any, plan: _Plan):
    n = len(plan.floating)
    x = operands[:n]
    if any(ad.is_undefined_primal(v) for v in x):
        raise _not_supported("transposing a reverse-mode derivative with respect to its point")
    cts = _dense(cotangents, [_aval(v) for v in x])
    return [None] * n + jvp_p.bind(*x, *cts, plan=plan)


def _second_jvp(primals: Sequence[Any], tangents: Sequence[Any], *, plan: _Plan):
    raise _not_supported("a third derivative")  # (of either second-order primitive)


def _second_transpose(cotangents: Sequence[Any], *operands: Any, plan: _Plan):
    n, m = len(plan.floating), len(plan.pure.outputs)
    x, cot, directions = operands[:n], operands[n:n + m], operands[n + m:]
    if any(ad.is_undefined_primal(v) for v in (*x, *cot)):
        raise _not_supported("transposing a second derivative with respect to its point or its "
                             "cotangents")
    # d/dx (J(x)^T u) along w is sum_k u_k H_k w with each H_k symmetric:
    # its transpose in w is itself (for the directions being transposed)
    cts = _dense(cotangents, [_aval(v) for v in x])
    found = second_p.bind(*x, *cot, *cts, plan=plan)
    return [None] * (n + m) + [g if ad.is_undefined_primal(w) else None for g, w in zip(found, directions)]


ad.primitive_jvps[call_p] = _call_jvp
ad.primitive_jvps[jvp_p] = functools.partial(_first_order_jvp, jvp_p, forward_second_p)
ad.primitive_transposes[jvp_p] = _jvp_transpose
ad.primitive_jvps[vjp_p] = functools.partial(_first_order_jvp, vjp_p, second_p)
ad.primitive_transposes[vjp_p] = _vjp_transpose
ad.primitive_jvps[second_p] = _second_jvp
ad.primitive_jvps[forward_second_p] = _second_jvp
ad.primitive_transposes[forward_second_p] = _forward_second_transpose
ad.primitive_transposes[second_p] = _second_transpose


class JaxFunction(BridgeFunction):
    """A kernel as a JAX function (see :func:`function`)."""

    framework = "jax"

    def __call__(self, *args: object, **kwargs: object) -> jax.Array | tuple[jax.Array, ...]:
        if kwargs:
            args = self.pure.bind(args, kwargs)
        if len(args) != len(self.pure.inputs):
            raise ArgumentTypeError(f"{self.__name__} takes {len(self.pure.inputs)} input(s) "
                                    f"({', '.join(self.pure.input_names)}), {len(args)} given.")
        floating, operands, statics = [], [], []
        sig = self.pure.kernel.signature
        for position, value in enumerate(args):
            ctype = sig.params[self.pure.inputs[position]].ctype
            if self.pure.differentiable(position):
                dtype = np.dtype(ctype.dtype)
                if dtype == np.float64 and not jax.config.jax_enable_x64:
                    raise ArgumentTypeError(
                        f"'{self.pure.input_names[position]}' is C `{ctype.spelling}` (float64), but "
                        "JAX is in 32-bit mode: call jax.config.update('jax_enable_x64', True) first.")
                floating.append(position)
                operands.append(jnp.asarray(value, dtype=dtype))
            else:
                if isinstance(value, jax.core.Tracer):
                    raise ArgumentTypeError(
                        f"'{self.pure.input_names[position]}' (C `{ctype.spelling}`) is static: pass "
                        "a Python value, not a traced array (under jit, mark it static).")
                if ctype.is_pointer and not ctype.is_function and not ctype.is_struct:
                    try:
                        value = _StaticArray.of(value, np.dtype(ctype.dtype))
                    except (TypeError, ValueError) as exc:
                        raise ArgumentTypeError(f"'{self.pure.input_names[position]}' (C "
                                                f"`{ctype.spelling}`) must be an array: {exc}") from None
                statics.append((position, value.item() if isinstance(value, np.generic) else value))
        plan = _Plan(self.pure, tuple(floating), tuple(statics))
        # the contracts, now: inside the callback an error would reach the
        # caller as JAX's "CpuCallback error"
        self.pure.check_sizes(plan.avals_by_input(operands))
        outputs = call_p.bind(*operands, plan=plan)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def function(kernel: Kernel, out: str | Sequence[str] | None = None,
             shapes: Mapping[str, Shape] | None = None) -> JaxFunction:
    """A kernel as a JAX function whose derivatives come from Enzyme.

    Parameters
    ----------
    kernel : Kernel
        ``mod.f`` of a compiled module.
    out : str or sequence of str, optional
        The outputs: non-const floating array parameters the kernel writes,
        and ``"return"`` for its floating return value (the default). Every
        other parameter is an input: floating arrays and scalars are JAX
        operands (differentiable), the others (sizes) static Python values.
    shapes : mapping, optional
        An output's shape, a tuple or a function of the inputs by name (JAX
        abstract values for operands); by default from its declared shape
        or length contract.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, enzyme
    >>> jax.config.update("jax_enable_x64", True)
    >>> mod = enzyme.compile("double sumsq(const double *x, int n) {"
    ...                      " double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i] * x[i]; return s; }")
    >>> f = enzyme.jax.function(mod.sumsq)
    >>> x = jnp.array([1.0, 2.0])
    >>> jax.jit(jax.grad(f), static_argnums=1)(x, 2)
    Array([ 3., 12.], dtype=float64)
    >>> jax.hessian(f)(x, 2)
    Array([[ 6.,  0.],
           [ 0., 12.]], dtype=float64)
    """
    return JaxFunction(pure_function(kernel, out, shapes), function, out, shapes)
