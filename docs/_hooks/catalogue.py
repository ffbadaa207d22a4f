"""MkDocs hook: the troubleshooting page's table of known Enzyme failures is
generated from ``enzyme.diagnostics.CATALOGUE``, so it cannot drift from
what the package matches."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- failure-catalogue -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from enzyme.diagnostics import CATALOGUE

    rows = ["| `code` | what happened | what to do |", "|---|---|---|"]
    rows += [f"| `{f.code}` | {_cell(f.what)} | {_cell(f.hint)} |" for f in CATALOGUE]
    return markdown.replace(MARKER, "\n".join(rows))
