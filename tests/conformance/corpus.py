"""All ported cases, by name: every ``cases_*.py`` module here defines ``CASES``
(a list of :class:`harness.Case`)."""

from __future__ import annotations

import importlib
from pathlib import Path

from harness import Case

CASES: dict[str, Case] = {}
for _path in sorted(Path(__file__).parent.glob("cases_*.py")):
    for _case in importlib.import_module(_path.stem).CASES:
        assert _case.name not in CASES, f"two cases named {_case.name}"
        CASES[_case.name] = _case
