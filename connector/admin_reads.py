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
from typing import Any, TypeVar

from connector import dsr_views, jobs
from connector.config import Config
from connector.keyset import key_facts_in
from connector.state import latest_runs, latest_success, table_counts
from connector.storefile import read_only

__all__ = ["RequestPage", "off_the_loop", "request_page", "status_body"]

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


def status_body(
    config: Config,
    ready: bool,
    checks: dict[str, Any],
    running: dict[str, bool],
    now: dt.datetime,
) -> Callable[[sqlite3.Connection], bytes]:
    """The read of ``GET /admin/status``, for :func:`off_the_loop`: its JSON body.

    ``ready``, ``checks`` and each flow's ``running`` are the daemon's own state, found on
    the loop, as is ``now``, the daemon's clock the requests' days left are counted on (the
    request listing, the gauges and the daily review count on it too); the rest is read
    here. The exact counts of the people and their ids held the
    loop about 0.25 s at a million people, every webhook and probe waiting.
    """

    def read(db: sqlite3.Connection) -> bytes:
        runs = latest_runs(db)
        data: dict[str, Any] = {
            "ready": ready,
            "checks": checks,
            "flows": {
                flow.name: {
                    "running": running[flow.name],
                    "last_status": runs[flow.name][2] if flow.name in runs else "never run",
                    "last_finished": runs[flow.name][1] if flow.name in runs else None,
                    "last_success": latest_success(db, flow.name),
                }
                for flow in config.flows
            },
            "counts": table_counts(db),
            "jobs": [job.as_dict() for job in jobs.recent_in(db)],
            # As `klantsync status` shows them: fingerprints and dates, never a key.
            "keys": key_facts_in(db, config),
            "requests": dsr_views.summary_in(db, now),
        }
        return _encoded(data)

    return read
