"""The rows of the data subject request tables (``dsr_requests``, ``dsr_systems``), the
statuses and details they hold, and the reads of them that need no :class:`DsrStore`.

The listings (``dsr list``, ``GET /admin/dsr``) read through a connection of their own
(:func:`listed_requests`, :func:`listed_systems`): years of requests are not read whole for
them. :mod:`connector.dsr_store` is the only code that writes the tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector import audit

__all__ = [
    "EXEMPTED",
    "FINAL_STATUSES",
    "LISTED_COLUMNS",
    "NO_LONGER_CONFIGURED",
    "ON_HOLD",
    "PURGE_SOURCE",
    "SYSTEM_STATUSES",
    "ListedRequest",
    "RequestRow",
    "SystemRow",
    "latest_purges",
    "listed_position",
    "listed_requests",
    "listed_systems",
    "on_hold",
    "receipt_keys_retired",
]

#: Per-system statuses. ``failed`` and ``pending_verification`` are retried; the rest of the
#: non-final ones are work not yet started or interrupted (resumed on retry). ``superseded``
#: closes what a correction had not written when the person's erasure was recorded
#: (:meth:`connector.dsr_store.DsrStore.supersede`).
SYSTEM_STATUSES = frozenset(
    {
        "pending",
        "in_progress",
        "done",
        "verified_absent",
        "pending_verification",
        "failed",
        "not_held",
        "skipped",
        "exempt",
        "superseded",
    }
)

#: The audit entry of a source purged (:meth:`connector.dsr_store.DsrStore.purge_source`; a
#: restore redoes it).
PURGE_SOURCE = "dsr.purge_source"


def latest_purges(db: sqlite3.Connection, schema: str = "main") -> dict[str, str]:
    """Per source, the time of the latest purge the audit trail of ``schema`` (an attached
    database's name, or the store's own) records."""
    latest: dict[str, str] = {}
    for ts, data in db.execute(
        f"SELECT ts, data FROM {schema}.audit WHERE kind = ?",  # noqa: S608 - fixed names
        (PURGE_SOURCE,),
    ):
        system = str(json.loads(data).get("system"))
        latest[system] = max(latest.get(system, ""), str(ts))
    return latest


def receipt_keys_retired(db: sqlite3.Connection) -> dict[str, str]:
    """Per receipt signing key id, when ``dsr rotate-key`` retired it, as the audit trail's
    ``keys.rotated`` entries record it (the earliest, for a key rotated away twice)."""
    retired: dict[str, str] = {}
    for ts, data in db.execute("SELECT ts, data FROM audit WHERE kind = ?", (audit.KEY_ROTATED,)):
        entry = json.loads(data)
        if entry.get("key") == "receipt-signing" and isinstance(entry.get("old"), str):
            old = entry["old"]
            retired[old] = min(retired.get(old, str(ts)), str(ts))
    return retired


#: A request is complete when every system is in one of these.
FINAL_STATUSES = frozenset(
    {"done", "verified_absent", "not_held", "skipped", "exempt", "superseded"}
)

#: How the detail of a part an operator exempted starts (DsrService.exempt), the reason after.
EXEMPTED = "exempt: "
#: How the detail of an erasure's part held for an earlier erasure's exemption starts
#: (KindRunner._hold_exempted_before): pending until the operator decides.
ON_HOLD = "on hold: "
#: The detail of an unsettled part of a system taken out of the config since.
NO_LONGER_CONFIGURED = (
    "no longer configured: configure it again, or exempt its part with the reason "
    "(dsr exempt ID --system S --reason R)"
)


def on_hold(status: str, detail: str | None) -> bool:
    """Whether a part with ``status`` and ``detail`` is held for an earlier exemption."""
    return status == "pending" and (detail or "").startswith(ON_HOLD)


@dataclass(frozen=True)
class RequestRow:
    """One ``dsr_requests`` row (``manifest`` and ``payload`` are sealed blobs or ``None``)."""

    id: str
    kind: str
    subject_id: str
    received_at: str
    deadline: str
    extension_reason: str | None
    status: str
    source: str
    manifest: bytes | None
    payload: bytes | None
    receipt: str | None
    completed_at: str | None

    @property
    def has_receipt(self) -> bool:
        return self.receipt is not None


#: The columns a listing shows of each request (``dsr list``, ``GET /admin/dsr``): not the
#: sealed manifest and payload, nor the receipt's text (only whether there is one).
LISTED_COLUMNS = (
    "id",
    "kind",
    "subject_id",
    "received_at",
    "deadline",
    "extension_reason",
    "status",
    "source",
    "completed_at",
)


@dataclass(frozen=True)
class ListedRequest:
    """What a listing shows of one request (:data:`LISTED_COLUMNS`, and whether it has a
    receipt); ``dsr show ID`` reads the whole row (:class:`RequestRow`)."""

    id: str
    kind: str
    subject_id: str
    received_at: str
    deadline: str
    extension_reason: str | None
    status: str
    source: str
    completed_at: str | None
    has_receipt: bool


@dataclass(frozen=True)
class SystemRow:
    """One ``dsr_systems`` row: a request's state in one system.

    ``result`` is the JSON the receipt is built from (vendor facts; never personal data).
    """

    request_id: str
    system: str
    status: str
    attempts: int
    detail: str | None
    result: dict[str, Any]
    updated_at: str


def listed_requests(
    db: sqlite3.Connection,
    *,
    open_only: bool = False,
    overdue_at: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[ListedRequest]:
    """Requests as a listing shows them, oldest first (by receipt, then id): years of
    receipts, manifests and payloads are not read for it.

    Args:
        db: a connection to the store (the store's own, or a reader's of its own).
        open_only: only the open requests.
        overdue_at: only the open requests whose deadline is before this moment (ISO 8601).
        after: only the requests after this (received_at, id) in the listing's order: the
            next page keyed on the last one shown, so a request added between pages
            neither repeats one nor pushes one off the page it was to be on.
        limit: at most this many.
    """
    query = (
        f"SELECT {', '.join(LISTED_COLUMNS)}, receipt IS NOT NULL "  # noqa: S608 - fixed names
        "FROM dsr_requests"
    )
    where: list[str] = []
    args: list[Any] = []
    if open_only or overdue_at is not None:
        where.append("status='open'")
    if overdue_at is not None:
        # julianday() reads each moment's own offset: a deadline stored with another one (by
        # an earlier version, or a carried-over store) compares as the moment it is.
        where.append("julianday(deadline) < julianday(?)")
        args.append(overdue_at)
    if after is not None:
        where.append("(received_at, id) > (?, ?)")
        args.extend(after)
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY received_at, id"
    if limit is not None:
        query += " LIMIT ?"
        args.append(limit)
    return [
        ListedRequest(i, kind, sid, received, due, reason, status, source, done, bool(signed))
        for i, kind, sid, received, due, reason, status, source, done, signed in db.execute(
            query, args
        )
    ]


def listed_position(db: sqlite3.Connection, request_id: str) -> tuple[str, str] | None:
    """Where a request stands in a listing's order (received_at, id); ``None`` for none."""
    found = db.execute(
        "SELECT received_at, id FROM dsr_requests WHERE id=?", (request_id,)
    ).fetchone()
    return None if found is None else (found[0], found[1])


def listed_systems(
    db: sqlite3.Connection,
    *,
    open_only: bool = False,
    request_ids: Sequence[str] | None = None,
) -> dict[str, list[tuple[str, str, int, str | None, str]]]:
    """Each request's systems (only the open requests' with ``open_only``, only those of
    ``request_ids`` where given: a page's), by request id, as a listing shows them:
    (system, status, attempts, detail, updated_at). One statement for a listing, not one per
    request (years of requests), and no system's ``result`` (the receipt's facts), which no
    listing shows."""
    query = (
        "SELECT s.request_id, s.system, s.status, s.attempts, s.detail, s.updated_at "
        "FROM dsr_systems s"
    )
    args: Sequence[str] = ()
    if request_ids is not None and not request_ids:
        return {}
    if request_ids is not None:
        # A page's ids, read by the table's key: a page costs the same at any depth.
        query += f" WHERE s.request_id IN ({','.join('?' * len(request_ids))})"
        args = request_ids
    elif open_only:
        query += " JOIN dsr_requests r ON r.id = s.request_id WHERE r.status='open'"
    found: dict[str, list[tuple[str, str, int, str | None, str]]] = {}
    for request, system, status, attempts, detail, at in db.execute(
        query + " ORDER BY s.request_id, s.system", args
    ):
        found.setdefault(request, []).append((system, status, attempts, detail, at))
    return found
