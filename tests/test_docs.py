"""The documentation site: it builds with warnings as errors, and every
Python block of every page runs as written, in order, from the repository
root (a page's blocks share one namespace, as a reader would run them).

Convention: a ```python block is an example and runs; a ```py block is an
illustration that cannot run here (a cluster's address, a project's build
directory) and says so in its first line."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import need

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _marks(page: str) -> list:
    # Pages importing JAX run last (see conftest.pytest_collection_modifyitems).
    return [pytest.mark.jax] if "import jax" in (DOCS / page).read_text() else []


def test_site_builds_with_warnings_as_errors(tmp_path):
    need("mkdocs")
    need("mkdocstrings_handlers.python")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"docs built in {time.perf_counter() - t0:.1f} s")
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("enzyme.compile", "enzyme.grad", "enzyme.vmap.vmap", "enzyme.jax.function",
                 "enzyme.errors.ShadowError", "enzyme.toolchain.install_toolchain"):
        assert f'id="{name}"' in api, f"the API reference lacks {name}"
    import enzyme

    undocumented = [name for name in enzyme.__all__
                    if name != "__version__" and not re.search(rf"\b{re.escape(name)}\b", api)]
    assert not undocumented, f"public names the API reference does not mention: {undocumented}"
    # The troubleshooting table is generated from the package's catalogue.
    from enzyme.diagnostics import CATALOGUE

    trouble = (tmp_path / "site" / "troubleshooting" / "index.html").read_text()
    assert all(f"<code>{f.code}</code>" in trouble for f in CATALOGUE)
    # ...and reads as written: no `__enzyme_*` turned into emphasis.
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", "", trouble)).split())
    for failure in CATALOGUE:
        for text in (failure.what, failure.hint):
            assert " ".join(text.replace("`", "").split()) in shown, text


def test_every_page_is_in_the_navigation_and_helpers_and_bridges_have_examples():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert not [p for p in PAGES if p not in nav], "pages missing from mkdocs.yml's nav"
    for page in PAGES:
        text = (DOCS / page).read_text()
        if page.startswith(("helpers/", "bridges/")):
            assert BLOCK.search(text), f"{page} has no runnable example"
        # Every Python-looking fence is either an example the runner sees or
        # a marked illustration: none is skipped by a spelling the regex misses.
        fences = re.findall(r"^[ \t]*(?:```|~~~)[ \t]*(?:python3?|py)\b.*$", text, re.M)
        illustrations = [f for f in fences if f == "```py"]
        assert len(fences) == len(BLOCK.findall(text)) + len(illustrations), (page, fences)
        for match in re.finditer(r"^```py\n(.*)$", text, re.M):
            assert match.group(1).startswith("# (illustration"), f"{page}: a ```py block must say why it is not run"


@pytest.mark.parametrize("page", [pytest.param(p, marks=_marks(p)) for p in PAGES
                                  if BLOCK.search((DOCS / p).read_text())])
def test_page_examples_run(page, tc, monkeypatch):
    text = (DOCS / page).read_text()
    for module in ("torch", "jax", "scipy", "dask"):
        if re.search(rf"^import {module}\b|^from {module}\b", text, re.M):
            need(module)
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__docs__"}
    for number, block in enumerate(BLOCK.findall(text), 1):
        exec(compile(block, f"docs/{page} (block {number})", "exec"), namespace)
