"""Counts said in words: "1 order", "2 orders".

Erasure receipts are signed, and shown to the person and perhaps to a supervisory
authority; the notes of the systems' parts, the request's own part, the sync's report and
the commands' summaries (a restore's, `status`, `audit verify`, `dsr retry --all`) all count
things. "1 orders" and "1 audience(s)" read as a form letter, so each of them says its
counts through :func:`counted`.
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is one.

    ``plural`` is for a noun that does not take an ``s`` ("person" -> "people"); the noun may
    carry words before it ("more review" -> "2 more reviews").
    """
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"
