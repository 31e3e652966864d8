"""One-line messages: every error granet prints is a single line, however long or multi-line its cause."""

from __future__ import annotations


def one_line(text: object, limit: int = 300) -> str:
    """`text` with all whitespace runs collapsed to one space, cut to `limit` characters ("..." marks a cut)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
