"""Enzyme's own integration tests, run three ways (see harness.py): the C
calling ``__enzyme_*`` through ``enzyme.compile``, the Python API with the
equivalent activities (also checked against central differences), and the
reference chain. A way a case lists in ``known`` must fail (strict xfail)."""

from __future__ import annotations

import pytest
from corpus import CASES
from harness import WAYS, assert_values, run_api, run_c_side, run_isolated, run_plain


def _params():
    for name, case in CASES.items():
        for way in WAYS:
            if way == "api" and case.api is None:
                continue  # counted in the corpus report, not skipped
            marks = []
            if way in case.known:
                marks.append(pytest.mark.xfail(strict=True, reason=case.known[way]))
            yield pytest.param(name, way, id=f"{name}-{way}", marks=marks)


@pytest.mark.parametrize("name,way", list(_params()))
def test_conformance(name, way, tc, tmp_path):
    case = CASES[name]
    if way == "plain":
        values = run_plain(case, tc, tmp_path)
    elif case.isolate:
        values = run_isolated(case, way)
    else:
        values = (run_c_side if way == "c_side" else run_api)(case, tc)
    assert_values(case, values, way)


def test_corpus_size():
    """The issue asks for at least 60 ported tests."""
    assert len(CASES) >= 60, len(CASES)


def test_docs_list_every_known_limitation():
    """The documentation's Correctness page names every case marked as a known
    limitation of the pinned Enzyme (and every one it names is marked)."""
    from pathlib import Path

    section = (Path(__file__).resolve().parents[2] / "docs" / "correctness.md").read_text()
    marked = {name for name, case in CASES.items() if "plain" in case.known}
    named = {name for name in CASES if f"`{name}`" in section}
    assert marked == named
