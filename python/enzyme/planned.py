"""Names of the public API that are planned but not built yet.

They exist so that code written against the documented API fails with a
clear message at the point of use, instead of an ImportError that suggests a
broken install. Nothing here computes anything.
"""

from __future__ import annotations

from typing import Any, NoReturn

from .errors import NotImplementedYetError

__all__ = ["BatchDuplicated", "BatchDuplicatedNoNeed", "jvp", "vjp", "jacobian", "hessian", "hvp"]


def _planned(name: str, instead: str) -> NoReturn:
    raise NotImplementedYetError(
        f"enzyme.{name} is not implemented in this version of enzyme-ffi (batch mode, "
        f"Jacobians and Hessians are planned). For now: {instead}")


class BatchDuplicated:
    """Batched shadows ``BatchDuplicated(x, (dx1, ..., dxW))``: not implemented yet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _planned(type(self).__name__, "call autodiff once per shadow with Duplicated(x, dx).")


class BatchDuplicatedNoNeed(BatchDuplicated):
    """Batched shadows, primal not needed: not implemented yet."""


def jvp(*args: Any, **kwargs: Any) -> NoReturn:
    """Jacobian-vector product: not implemented yet."""
    _planned("jvp", "use autodiff(Forward, kernel, Duplicated(x, v), ...).")


def vjp(*args: Any, **kwargs: Any) -> NoReturn:
    """Vector-Jacobian product: not implemented yet."""
    _planned("vjp", "use autodiff(Reverse, kernel, Duplicated(x, dx), Duplicated(out, v), ...).")


def jacobian(*args: Any, **kwargs: Any) -> NoReturn:
    """Jacobian: not implemented yet."""
    _planned("jacobian", "build it column by column with autodiff(Forward, ...).")


def hessian(*args: Any, **kwargs: Any) -> NoReturn:
    """Hessian: not implemented yet."""
    _planned("hessian", "differentiate a C gradient function (written with __enzyme_autodiff) "
                        "in forward mode.")


def hvp(*args: Any, **kwargs: Any) -> NoReturn:
    """Hessian-vector product: not implemented yet."""
    _planned("hvp", "differentiate a C gradient function (written with __enzyme_autodiff) "
                    "in forward mode.")
