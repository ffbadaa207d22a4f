"""The README's Python blocks run as written, in order, from the repository root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.jax  # (a block uses enzyme.jax)
def test_readme_python_blocks_run(tc, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_states_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "bash ci/demo.sh" in text and "bash ci/test.sh" in text
    run = (ROOT / ".ci" / "run").read_text()
    assert "ci/test.sh" in run
