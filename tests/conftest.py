"""Shared fixtures. Behaviour tests use the real clang + Enzyme toolchain; when
it is missing they skip locally (with the reason) and FAIL in CI (CI=true)."""

from __future__ import annotations

import os

import pytest

import enzyme
from enzyme import toolchain as _toolchain

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
def fast_path():
    """The C fast path must be there: skipped locally without it, a failure in CI."""
    from enzyme import call

    if not call.fast_path_enabled():
        message = "the C fast path (enzyme._fastcall) is not built in this environment"
        if IN_CI:
            pytest.fail(message + " (CI installs the package, which must build it)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def cc(tc):
    """enzyme.compile with the checked toolchain."""

    def compile_c(source=None, **kwargs):
        return enzyme.compile(source, toolchain=tc, **kwargs)

    return compile_c


def pytest_terminal_summary(terminalreporter):
    """How the first-use checks of the derivatives this session called ended
    (in this process; child processes count their own)."""
    from enzyme import verify

    if verify.stats:
        found = ", ".join(f"{k} {v}" for k, v in sorted(verify.stats.items()))
        terminalreporter.write_line(f"enzyme first-use checks: {found}")


def need(module: str):
    """Import an optional package a test needs (torch, jax, dask): CI
    installs them, so there a missing one is a failure; locally a skip."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"{module} is not installed ({exc}); CI installs the bridges' extras.")
        pytest.skip(f"{module} is not installed")


def pytest_collection_modifyitems(items):
    """Tests marked ``jax`` run last: once JAX is imported its runtime
    threads live in the process, and the fork-based tests (and every
    first-use check) would fork a multithreaded process."""
    items.sort(key=lambda item: item.get_closest_marker("jax") is not None)
