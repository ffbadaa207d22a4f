"""MkDocs hook: the troubleshooting page's table of known Enzyme failures is
generated from ``enzyme.diagnostics.CATALOGUE``, so it cannot drift from
what the package matches."""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- failure-catalogue -->"


def _cell(text: str) -> str:
    """The catalogue's plain text as one Markdown table cell: Markdown's
    special characters escaped outside `code` spans (``__enzyme_*`` must not
    become emphasis), the spans kept as code."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside backticks
        parts[i] = re.sub(r"([\\_*\[\]#])", r"\\\1", parts[i]).replace("<", "&lt;")
    return "`".join(parts).replace("|", "\\|")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from enzyme.diagnostics import CATALOGUE

    rows = ["| `code` | what happened | what to do |", "|---|---|---|"]
    rows += [f"| `{f.code}` | {_cell(f.what)} | {_cell(f.hint)} |" for f in CATALOGUE]
    return markdown.replace(MARKER, "\n".join(rows))
