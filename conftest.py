"""Repository-wide pytest set-up: a private compile cache for every session
(tests and the package's doctests never touch the user's cache)."""

from __future__ import annotations

import os

import pytest


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
