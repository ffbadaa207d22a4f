"""A user script using the PyTorch and JAX bridges: what their functions
return is typed (tests/test_typing.py runs mypy on it, and runs it)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import torch

import enzyme
import enzyme.jax
import enzyme.torch

SOURCE = """
double sq(const double *x, int n) { double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i]; return s; }
"""


def torch_side(mod: enzyme.Module) -> torch.Tensor:
    f = enzyme.torch.function(mod.sq)
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    out = f(x, 3)
    assert not isinstance(out, tuple)  # one output: a tensor
    out.backward()
    assert x.grad is not None and torch.allclose(x.grad, 2 * x.detach())
    return out


def jax_side(mod: enzyme.Module) -> jax.Array:
    g = enzyme.jax.function(mod.sq)
    y = g(jnp.ones(3), 3)
    assert not isinstance(y, tuple)
    return y


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    mod = enzyme.compile(SOURCE)
    t = torch_side(mod)
    a = jax_side(mod)
    assert float(t.item()) == float(a) == 3.0


if __name__ == "__main__":
    main()
