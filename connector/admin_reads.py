"""Admin API reads made on a worker thread, on a read-only connection of their own.

The store's connection belongs to the event loop (:class:`~connector.state.Store`): a read
made on it holds the loop until it ends, every webhook, probe and delivery with it. A read
that grows with the store (years of data subject requests) is made here instead: a thread
of the loop's default executor opens the store read-only, reads one snapshot (WAL mode: it
neither waits for the daemon's writes nor holds them up) and builds the answer's bytes, so
the loop only sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from connector import dsr_views
from connector.storefile import read_only

__all__ = ["RequestPage", "off_the_loop", "request_page"]

T = TypeVar("T")


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store at ``path`` in one read transaction: what is read
    through it is one moment's store (a page's requests and their systems agree)."""
    db = read_only(path)
    try:
        db.execute("BEGIN")
        yield db
    finally:
        db.close()  # ends the read transaction; nothing was written


async def off_the_loop(path: Path, read: Callable[[sqlite3.Connection], T]) -> T:
    """``read(db)`` on a worker thread, ``db`` a read-only snapshot of the store at ``path``.

    Raises:
        sqlite3.Error: the store could not be read (the admin API answers 503 for a store at
            fault, as for its other routes).
    """

    def run() -> T:
        with _snapshot(path) as db:
            return read(db)

    return await asyncio.to_thread(run)


@dataclass(frozen=True)
class RequestPage:
    """A page of the request listing as the admin API sends it: the JSON body, built off the
    loop, and the request the next page starts after (``None`` on the last)."""

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
    """The read of one page of ``GET /admin/dsr`` (:func:`connector.dsr_views.page`), for
    :func:`off_the_loop`.

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
