"""PyTorch bridge: a kernel as a differentiable function of tensors.

``enzyme.torch.function(mod.f, out=...)`` returns a callable on tensors
whose autograd uses Enzyme's derivatives: the backward pass is one reverse
pass of the C code, and double backward is one forward-over-reverse pass
(Enzyme differentiating its own reverse derivative). CPU tensors of the
kernel's dtype are passed without a copy. Install with
``pip install enzyme-ffi[torch]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .bridge import RETURN, BridgeFunction, PureFunction, Shape, pure_function
from .errors import ActivityError, ArgumentTypeError
from .module import Kernel

__all__ = ["function", "TorchFunction", "RETURN"]


def _to_numpy(value: Any) -> Any:
    """A tensor as a numpy array sharing its memory (a contiguous copy of a
    strided one, as torch's own operators would make); a 0-d tensor for a
    scalar parameter as a number is left to the call, which takes it."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ArgumentTypeError(f"a tensor on {value.device} was given: enzyme runs C code on "
                                    "the CPU; move it with t.cpu().")
        return value.detach().contiguous().numpy()
    return value


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def _to_tensor(value: Any, dtype: np.dtype) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return torch.tensor(value, dtype=torch.from_numpy(np.zeros((), dtype=dtype)).dtype)


class TorchFunction(BridgeFunction):
    """A kernel as a function of tensors (see :func:`function`)."""

    framework = "torch"

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if kwargs:
            args = self.pure.bind(args, kwargs)
        outputs: tuple[torch.Tensor, ...] = _KernelFunction.apply(self.pure, *args)
        return outputs[0] if len(self.pure.outputs) == 1 else outputs




class _KernelFunction(torch.autograd.Function):
    """The kernel: forward is the C call, backward one reverse pass."""

    @staticmethod
    def forward(ctx: Any, pure: PureFunction, *values: Any) -> tuple[torch.Tensor, ...]:
        arrays = [_scalar(_to_numpy(v)) for v in values]
        outputs = pure(*arrays)
        ctx.pure = pure
        ctx.save_for_backward(*[v for v in values if isinstance(v, torch.Tensor)])
        ctx.layout = [isinstance(v, torch.Tensor) for v in values]
        ctx.others = [v for v in values if not isinstance(v, torch.Tensor)]
        return tuple(_to_tensor(o, pure.output_dtype(i)) for i, o in enumerate(outputs))

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor) -> tuple[Any, ...]:
        tensors, others = iter(ctx.saved_tensors), iter(ctx.others)
        values = [next(tensors) if is_tensor else next(others) for is_tensor in ctx.layout]
        grads = _PullBack.apply(ctx.pure, len(values), *values, *cotangents)
        return (None, *(g if ctx.pure.differentiable(i) and ctx.needs_input_grad[i + 1] else None
                        for i, g in enumerate(grads)))


class _PullBack(torch.autograd.Function):
    """The vector-Jacobian product, itself differentiable (forward over
    reverse, and a forward pass for its cotangents)."""

    @staticmethod
    def forward(ctx: Any, pure: PureFunction, count: int, *values_and_cotangents: Any) -> tuple[torch.Tensor, ...]:
        values, cotangents = values_and_cotangents[:count], values_and_cotangents[count:]
        arrays = [_scalar(_to_numpy(v)) for v in values]
        bars = [np.zeros(()) if c is None else _to_numpy(c) for c in cotangents]
        grads = pure.vjp(arrays, bars)
        ctx.pure, ctx.count = pure, count
        ctx.save_for_backward(*[v if isinstance(v, torch.Tensor) else None for v in values_and_cotangents])
        ctx.others = values_and_cotangents
        # (a placeholder for an input that is not floating: dropped by the caller)
        return tuple(torch.zeros(()) if g is None else _to_tensor(g, np.asarray(g).dtype) for g in grads)

    @staticmethod
    def backward(ctx: Any, *second: torch.Tensor) -> tuple[Any, ...]:
        items = [s if s is not None else o for s, o in zip(ctx.saved_tensors, ctx.others)]
        values = items[:ctx.count]
        directions = [None if w is None or not ctx.pure.differentiable(i) else w
                      for i, w in enumerate(second[:ctx.count])]
        found = _SecondOrder.apply(ctx.pure, ctx.count, directions, *items)
        grads: list[Any] = [None, None]
        for i, (product, value) in enumerate(zip(found[:ctx.count], values)):
            # (a Python number given for a scalar input gets no gradient)
            grads.append(product if isinstance(value, torch.Tensor) and ctx.pure.differentiable(i) else None)
        grads += list(found[ctx.count:])
        return tuple(grads)


class _SecondOrder(torch.autograd.Function):
    """The derivative of the vector-Jacobian product g = J(x)^T u along w
    (the cotangents of g): d/dx (u^T J(x) w), forward over reverse, and
    d/du = J w, a forward pass. Its own derivative (a third derivative) is
    an error: without this node torch would take these products for
    constants and return a silently wrong third derivative."""

    @staticmethod
    def forward(ctx: Any, pure: PureFunction, count: int, directions: list, *items: Any) -> tuple[torch.Tensor, ...]:
        values, cotangents = items[:count], items[count:]
        arrays = [_scalar(_to_numpy(v)) for v in values]
        bars = [np.zeros(()) if c is None else _to_numpy(c) for c in cotangents]
        moves = [None if w is None else _scalar(_to_numpy(w)) for w in directions]
        _, products = pure.vjp_and_derivative(arrays, bars, moves)
        _, along = pure.jvp(arrays, moves)
        out = [torch.zeros(()) if p is None else _to_tensor(p, np.asarray(p).dtype) for p in products]
        out += [_to_tensor(t, pure.output_dtype(i)) for i, t in enumerate(along)]
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *_: torch.Tensor) -> tuple[Any, ...]:
        raise ActivityError("enzyme.torch: third derivatives are not implemented yet (first and "
                            "second derivatives are).")


def function(kernel: Kernel, out: str | Sequence[str] | None = None,
             shapes: Mapping[str, Shape] | None = None) -> TorchFunction:
    """A kernel as a function of tensors whose gradients come from Enzyme.

    Parameters
    ----------
    kernel : Kernel
        ``mod.f`` of a compiled module.
    out : str or sequence of str, optional
        The outputs: non-const floating array parameters the kernel writes,
        and ``"return"`` for its floating return value (the default). Every
        other parameter is an input, given positionally or by its C name:
        tensors (or numpy arrays) for arrays, numbers or 0-d tensors for
        scalars.
    shapes : mapping, optional
        An output's shape, a tuple or a function of the inputs by name;
        by default from its declared shape or length contract.

    Returns
    -------
    TorchFunction
        Returns a tensor (a tuple for several outputs). Floating inputs are
        differentiable; ``backward`` is one Enzyme reverse pass, double
        backward one forward-over-reverse pass and one forward pass.

    Examples
    --------
    >>> import torch, enzyme
    >>> mod = enzyme.compile("double sumsq(const double *x, int n) {"
    ...                      " double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i]; return s; }")
    >>> f = enzyme.torch.function(mod.sumsq)
    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> f(x, 2).backward()
    >>> x.grad
    tensor([2., 4.], dtype=torch.float64)
    """
    return TorchFunction(pure_function(kernel, out, shapes), function, out, shapes)

