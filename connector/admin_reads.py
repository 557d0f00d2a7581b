"""Admin API reads that grow with the store, each built whole into the answer's bytes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from connector import dsr_views

__all__ = ["RequestPage", "request_page"]


@dataclass(frozen=True)
class RequestPage:
    """A page of the request listing as the admin API sends it: the JSON body, and the
    request the next page starts after (``None`` on the last)."""

    body: bytes
    next_after: str | None


def _encoded(value: object) -> bytes:
    """``value`` as FastAPI's JSON answers encode it (UTF-8, no blanks)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def request_page(
    now: dt.datetime,
    *,
    open_only: bool,
    overdue: bool,
    after: str | None,
    limit: int | None,
) -> Callable[[sqlite3.Connection], RequestPage]:
    """The read of one page of ``GET /admin/dsr`` (:func:`connector.dsr_views.page`).

    The body is encoded here as FastAPI's JSON answer encodes it: turned into JSON on the
    loop, 6,000 requests with their systems held it for about as long as reading them did.
    """

    def read(db: sqlite3.Connection) -> RequestPage:
        found, next_after = dsr_views.page(
            db, now, open_only=open_only, overdue=overdue, after=after, limit=limit
        )
        # One request at a time: json's encoder keeps the interpreter's lock for the whole
        # of one call, so the whole listing in one held the loop for ~0.1 s all the same.
        body = b"[" + b",".join(_encoded(view.as_dict()) for view in found) + b"]"
        return RequestPage(body, next_after)

    return read
