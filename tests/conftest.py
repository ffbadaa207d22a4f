"""Shared fixtures. Behaviour tests use the real clang + Enzyme toolchain; when
it is missing they skip locally (with the reason) and FAIL in CI (CI=true)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import enzyme
from enzyme import toolchain as _toolchain

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test session gets its own compile cache, so tests never depend on
    (or pollute) the user's."""
    path = tmp_path_factory.mktemp("enzyme-cache")
    old = os.environ.get("ENZYME_CACHE_DIR")
    os.environ["ENZYME_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ENZYME_CACHE_DIR", None)
    else:
        os.environ["ENZYME_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tc(private_cache):
    try:
        return _toolchain.resolve()
    except enzyme.ToolchainError as exc:
        message = f"Enzyme toolchain not available: {exc}"
        if IN_CI:
            pytest.fail(message + "\n(CI=true: a missing toolchain is a failure, not a skip)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def cc(tc):
    """enzyme.compile with the checked toolchain."""

    def compile_c(source=None, **kwargs):
        return enzyme.compile(source, toolchain=tc, **kwargs)

    return compile_c


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of scalar f at array x by central differences (the oracle)."""
    x = np.asarray(x, dtype=float)
    grad = np.empty_like(x)
    for i in range(x.size):
        step = h * max(1.0, abs(x.flat[i]))
        up, down = x.copy(), x.copy()
        up.flat[i] += step
        down.flat[i] -= step
        grad.flat[i] = (f(up) - f(down)) / (2 * step)
    return grad
