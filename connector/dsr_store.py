"""SQL for data subject requests, and for deleting the connector's own traces of a subject.

The tables (``dsr_requests``, ``dsr_systems``) are defined by schema migration 2 in
:mod:`connector.state`; this module is the only code that reads and writes them. Rows hold
subject ids (keyed HMAC), statuses and vendor facts; whatever identifies the person in clear
(e-mail, phone, ids per system) lives only in the sealed ``manifest`` and ``payload`` columns,
which are set to NULL once a request is complete.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connector import audit
from connector.moves import MOVED_ENTRY, SET_APART_ENTRY
from connector.state import HELD, HELD_PHONE, PER_SYSTEM_TABLES, RESEND, Store, utcnow

__all__ = [
    "EXEMPTED",
    "FINAL_STATUSES",
    "HELD_PHONE",
    "LISTED_COLUMNS",
    "MOVED_AWAY",
    "PURGE_SOURCE",
    "SUPERSEDED_BY",
    "SYSTEM_STATUSES",
    "DsrStore",
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
#: (:meth:`DsrStore.supersede`).
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

#: The audit entry of a source purged (:meth:`DsrStore.purge_source`; a restore redoes it).
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


#: The audit entry of a request received (the first of its entries).
RECEIVED = "dsr.received"

#: The audit entries of a person's move away from an address (connector/moves.py).
MOVED_AWAY = (MOVED_ENTRY, SET_APART_ENTRY)

#: A request is complete when every system is in one of these.
FINAL_STATUSES = frozenset(
    {"done", "verified_absent", "not_held", "skipped", "exempt", "superseded"}
)

#: How the detail of a correction's part closed by the person's erasure starts
#: (:meth:`DsrStore.supersede`), the erasure's request id after.
SUPERSEDED_BY = "superseded by the person's erasure "
_SUPERSEDED_WHY = (
    ", recorded before the correction was written here: nothing more is written to this "
    "system, which the erasure deletes the person from"
)

#: How the detail of a part an operator exempted starts (DsrService.exempt), the reason after.
EXEMPTED = "exempt: "
#: How the detail of an erasure's part held for an earlier erasure's exemption starts
#: (KindRunner._hold_exempted_before): pending until the operator decides.
ON_HOLD = "on hold: "


def on_hold(status: str, detail: str | None) -> bool:
    """Whether a part with ``status`` and ``detail`` is held for an earlier exemption."""
    return status == "pending" and (detail or "").startswith(ON_HOLD)


_REQUEST_COLUMNS = (
    "id, kind, subject_id, received_at, deadline, extension_reason, status, source, "
    "manifest, payload, receipt, completed_at"
)


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


class DsrStore:
    """Data subject request records on top of the :class:`~connector.state.Store`.

    Args:
        store: the open store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # -- requests ----------------------------------------------------------------------------

    def create(
        self,
        row: RequestRow,
        systems: Sequence[str],
        suppress: Iterable[str] = (),
    ) -> None:
        """Insert a request, its per-system rows and (for erasure) its suppression entries.

        One transaction: a request never exists without its suppression entry, so an erasure
        that crashes right after being recorded still stops every sync path.
        """
        now = utcnow()
        with self.store.transaction() as db:
            db.execute(
                f"INSERT INTO dsr_requests({_REQUEST_COLUMNS}) "  # noqa: S608 - fixed names
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.id,
                    row.kind,
                    row.subject_id,
                    row.received_at,
                    row.deadline,
                    row.extension_reason,
                    row.status,
                    row.source,
                    row.manifest,
                    row.payload,
                    row.receipt,
                    row.completed_at,
                ),
            )
            db.executemany(
                "INSERT INTO dsr_systems(request_id, system, status, attempts, detail, result, "
                "updated_at) VALUES (?,?,?,?,?,?,?)",
                [(row.id, name, "pending", 0, None, "{}", now) for name in systems],
            )
            ids = [sid for sid in suppress if sid]
            if ids:
                self.store.suppress(ids, "erasure", row.id)

    def get(self, request_id: str) -> RequestRow | None:
        found = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests WHERE id=?",  # noqa: S608
            (request_id,),
        ).fetchone()
        return None if found is None else RequestRow(*found)

    def requests(self, *, open_only: bool = False) -> list[RequestRow]:
        """Every request, oldest first (only open ones with ``open_only``)."""
        query = f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests"  # noqa: S608
        if open_only:
            query += " WHERE status='open'"
        return [RequestRow(*r) for r in self.db.execute(query + " ORDER BY received_at, id")]

    def listing(self, *, open_only: bool = False) -> list[ListedRequest]:
        """Every request (only open ones with ``open_only``), oldest first, as a listing
        shows it (:func:`listed_requests`)."""
        return listed_requests(self.db, open_only=open_only)

    def open_for(self, kind: str, subject_id: str) -> RequestRow | None:
        """The open request of ``kind`` for a subject, if there is one."""
        found = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests "  # noqa: S608
            "WHERE kind=? AND subject_id=? AND status='open' ORDER BY received_at LIMIT 1",
            (kind, subject_id),
        ).fetchone()
        return None if found is None else RequestRow(*found)

    def received(
        self, kind: str, subject_id: str, received_at: str, source: str
    ) -> RequestRow | None:
        """The request of ``kind`` for a subject that came from ``source`` at
        ``received_at``, if any."""
        found = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests "  # noqa: S608
            "WHERE kind=? AND subject_id=? AND received_at=? AND source=? LIMIT 1",
            (kind, subject_id, received_at, source),
        ).fetchone()
        return None if found is None else RequestRow(*found)

    def open_suppressing(self, subject_ids: Sequence[str]) -> RequestRow | None:
        """An open request that put any of ``subject_ids`` on the suppression list, if any."""
        marks = ",".join("?" * len(subject_ids))
        found = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests WHERE status='open' AND id IN "  # noqa: S608
            f"(SELECT request_id FROM suppression WHERE subject_id IN ({marks})) "
            "ORDER BY received_at LIMIT 1",
            tuple(subject_ids),
        ).fetchone()
        return None if found is None else RequestRow(*found)

    def exempted_before(
        self, subject_ids: Sequence[str], request_id: str
    ) -> dict[str, tuple[str, str]]:
        """Per system, the latest part an operator exempted (:data:`EXEMPTED`) of another
        erasure of any of ``subject_ids``: that request's id, and the reason as stored.

        An erasure of a subject is one asked for under it, or one that put it on the
        suppression list. Parts exempt for what a run found (a shop that keeps everything
        on purpose, a purged shop that refuses klantsync) are not an operator's decision,
        and each request finds those again itself.
        """
        marks = ",".join("?" * len(subject_ids))
        rows = self.db.execute(
            "SELECT s.system, r.id, s.detail FROM dsr_systems s "  # noqa: S608 - marks only
            "JOIN dsr_requests r ON r.id = s.request_id "
            "WHERE r.kind='erase' AND r.id != ? AND s.status='exempt' "
            "AND substr(s.detail, 1, ?) = ? "
            f"AND (r.subject_id IN ({marks}) OR r.id IN "
            f"(SELECT request_id FROM suppression WHERE subject_id IN ({marks}))) "
            "ORDER BY r.received_at, r.id",
            (request_id, len(EXEMPTED), EXEMPTED, *subject_ids, *subject_ids),
        ).fetchall()
        return {
            str(system): (str(earlier), str(detail).removeprefix(EXEMPTED))
            for system, earlier, detail in rows
        }

    def held_phones(self, addresses: Sequence[str]) -> list[str]:
        """The numbers (keyed ids) that erasures of ``addresses`` read from the person's
        records in the sources and suppressed (:data:`HELD_PHONE`).

        An erasure of an address is one asked for under it, or one that put it on the
        suppression list: asked for under a former address, an erasure is widened to the
        one the person has now, and the number it read is theirs under that one too.
        """
        marks = ",".join("?" * len(addresses))
        rows = self.db.execute(
            "SELECT s.subject_id FROM suppression s JOIN dsr_requests r ON r.id = s.request_id "  # noqa: S608 - marks only
            f"WHERE s.kind=? AND r.kind='erase' AND (r.subject_id IN ({marks}) OR r.id IN "
            f"(SELECT request_id FROM suppression WHERE subject_id IN ({marks}))) "
            "ORDER BY s.subject_id",
            (HELD_PHONE, *addresses, *addresses),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def erased_since(self, subject_ids: Sequence[str], since: str) -> list[str]:
        """The erasures of any of ``subject_ids`` completed at or after ``since``, by id.

        An erasure of a subject is one asked for under it, or one that put it on the
        suppression list (widened to it: a former address, the same shop record).
        """
        if not subject_ids:
            return []
        marks = ",".join("?" * len(subject_ids))
        rows = self.db.execute(
            "SELECT id FROM dsr_requests WHERE kind='erase' AND status='completed' "  # noqa: S608 - marks only
            f"AND completed_at >= ? AND (subject_id IN ({marks}) OR id IN "
            f"(SELECT request_id FROM suppression WHERE subject_id IN ({marks}))) ORDER BY id",
            (since, *subject_ids, *subject_ids),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def erased_since_any(self, since: str) -> list[str]:
        """The erasures of anyone completed at or after ``since``, by id."""
        rows = self.db.execute(
            "SELECT id FROM dsr_requests WHERE kind='erase' AND status='completed' "
            "AND completed_at >= ? ORDER BY id",
            (since,),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def history(self, subject_id: str) -> list[RequestRow]:
        """Every request about a subject, oldest first."""
        rows = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests "  # noqa: S608
            "WHERE subject_id=? ORDER BY received_at, id",
            (subject_id,),
        )
        return [RequestRow(*r) for r in rows]

    def set_manifest(self, request_id: str, manifest: bytes | None) -> None:
        self.db.execute("UPDATE dsr_requests SET manifest=? WHERE id=?", (manifest, request_id))

    def replace_manifest(self, request_id: str, manifest: bytes, expected: bytes | None) -> bool:
        """Set an open request's manifest only if it is still ``expected``; whether it was.

        A run that read the manifest and wrote it back later would otherwise undo what
        another process added meanwhile (an address a queued payload carried, a phone), or
        put a sealed manifest back into a request completed meanwhile (which destroyed it).
        """
        return (
            self.db.execute(
                "UPDATE dsr_requests SET manifest=? WHERE id=? AND status='open' AND manifest IS ?",
                (manifest, request_id, expected),
            ).rowcount
            == 1
        )

    def set_deadline(self, request_id: str, deadline: str, reason: str | None) -> None:
        self.db.execute(
            "UPDATE dsr_requests SET deadline=?, extension_reason=? WHERE id=?",
            (deadline, reason, request_id),
        )

    def complete(self, request_id: str, receipt: str, completed_at: str) -> bool:
        """Mark done, store the receipt and destroy the manifest and payload (sealed PII).

        Returns whether this call completed it: a request completed meanwhile (by another
        process on the same store) keeps the receipt it has.
        """
        finals = sorted(FINAL_STATUSES)
        marks = ",".join("?" * len(finals))
        # Only while every part is still settled: an amendment from another process (a
        # correction asked again) may have set parts pending since the caller looked.
        completed = self.db.execute(
            "UPDATE dsr_requests SET status='completed', receipt=?, completed_at=?, "  # noqa: S608 - marks only
            "manifest=NULL, payload=NULL WHERE id=? AND status='open' AND NOT EXISTS "
            f"(SELECT 1 FROM dsr_systems WHERE request_id=? AND status NOT IN ({marks}))",
            (receipt, completed_at, request_id, request_id, *finals),
        )
        return completed.rowcount == 1

    # -- per-system state --------------------------------------------------------------------

    def systems_of_all(
        self, *, open_only: bool = False
    ) -> dict[str, list[tuple[str, str, int, str | None, str]]]:
        """Each request's systems (only the open requests' with ``open_only``), by request
        id, as a listing shows them (:func:`listed_systems`)."""
        return listed_systems(self.db, open_only=open_only)

    def systems(self, request_id: str) -> list[SystemRow]:
        rows = self.db.execute(
            "SELECT request_id, system, status, attempts, detail, result, updated_at "
            "FROM dsr_systems WHERE request_id=? ORDER BY system",
            (request_id,),
        ).fetchall()
        return [
            SystemRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}"), r[6]) for r in rows
        ]

    def set_system(
        self,
        request_id: str,
        system: str,
        status: str,
        *,
        detail: str | None = None,
        result: dict[str, Any] | None = None,
        attempt: bool = False,
        manifest: bytes | None = None,
    ) -> None:
        """Record one system's status (``attempt`` counts a new try; ``result`` replaces).

        An ``exempt`` system (:meth:`DsrService.exempt`) keeps that status: an operator may
        exempt it from another process (the CLI beside the daemon) while a retry is talking
        to the system, and the retry's outcome must not undo the decision. A ``superseded``
        one (:meth:`supersede`) keeps it too: the person's erasure closed it, and an outcome
        of a correction's run still under way must not open it again. With
        ``manifest`` (the sealed manifest the caller's run holds), nothing is recorded if
        the request's manifest has changed since: a correction amended meanwhile, or an
        erasure widened by another process, has parts pending again for what this run did
        not know, and its outcome must not settle them.
        """
        assert status in SYSTEM_STATUSES, status
        sets = "status=?, detail=?, updated_at=?"
        params: list[Any] = [status, detail, utcnow()]
        if result is not None:
            sets += ", result=?"
            params.append(json.dumps(result, sort_keys=True))
        if attempt:
            sets += ", attempts=attempts+1"
        guard, guarded = "", []
        if manifest is not None:
            guard = " AND (SELECT manifest FROM dsr_requests WHERE id=?) = ?"
            guarded = [request_id, manifest]
        self.db.execute(
            f"UPDATE dsr_systems SET {sets} WHERE request_id=? AND system=? "  # noqa: S608
            f"AND (status != 'exempt' OR ? = 'exempt') AND status != 'superseded'{guard}",
            (*params, request_id, system, status, *guarded),
        )

    def add_system(self, request_id: str, system: str) -> None:
        """Track a system configured after the request was opened (no-op if tracked)."""
        self.db.execute(
            "INSERT OR IGNORE INTO dsr_systems(request_id, system, status, attempts, detail, "
            "result, updated_at) VALUES (?,?,?,?,?,?,?)",
            (request_id, system, "pending", 0, None, "{}", utcnow()),
        )

    # -- corrections an erasure supersedes ------------------------------------------------------

    def open_corrections(self, subject_ids: Sequence[str]) -> list[RequestRow]:
        """The open corrections (``rectify``) of any of ``subject_ids``, oldest first."""
        if not subject_ids:
            return []
        marks = ",".join("?" * len(subject_ids))
        rows = self.db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM dsr_requests "  # noqa: S608 - marks only
            f"WHERE kind='rectify' AND status='open' AND subject_id IN ({marks}) "
            "ORDER BY received_at, id",
            tuple(subject_ids),
        )
        return [RequestRow(*r) for r in rows]

    def erasure_suppressing(self, subject_ids: Sequence[str]) -> str | None:
        """The id of the erasure that put any of ``subject_ids`` on the suppression list (the
        earliest received), if one did: the person is erased, or being erased."""
        if not subject_ids:
            return None
        marks = ",".join("?" * len(subject_ids))
        found = self.db.execute(
            "SELECT r.id FROM suppression s JOIN dsr_requests r ON r.id = s.request_id "  # noqa: S608 - marks only
            f"WHERE r.kind='erase' AND s.subject_id IN ({marks}) "
            "ORDER BY r.received_at, r.id LIMIT 1",
            tuple(subject_ids),
        ).fetchone()
        return None if found is None else str(found[0])

    def supersede(self, request_id: str, erasure_id: str) -> list[str]:
        """Close every part of ``request_id`` (a correction) not final yet as ``superseded``
        by the erasure ``erasure_id``; the systems closed, by name.

        The detail names the erasure (:data:`SUPERSEDED_BY`) and the part's result, which
        the receipt is built from, carries its id as ``superseded_by``: ids only. The caller
        holds the write transaction that records the erasure, so no run of the correction
        writes between the two.
        """
        finals = sorted(FINAL_STATUSES)
        marks = ",".join("?" * len(finals))
        closed = [
            str(row[0])
            for row in self.db.execute(
                "SELECT system FROM dsr_systems WHERE request_id=? "  # noqa: S608 - marks only
                f"AND status NOT IN ({marks}) ORDER BY system",
                (request_id, *finals),
            )
        ]
        if closed:
            detail = f"{SUPERSEDED_BY}{erasure_id}{_SUPERSEDED_WHY}"
            self.db.execute(
                "UPDATE dsr_systems SET status='superseded', detail=?, updated_at=?, "  # noqa: S608 - marks only
                "result=json_set(COALESCE(result, '{}'), '$.superseded_by', ?) "
                f"WHERE request_id=? AND status NOT IN ({marks})",
                (detail, utcnow(), erasure_id, request_id, *finals),
            )
        return closed

    # -- what the connector itself holds about a subject --------------------------------------

    def identities(self, subject_id: str) -> dict[str, str]:
        """System name -> that system's id for the subject, from the identity map."""
        where, params = self.store.by_subject("identities", [subject_id])
        rows = self.db.execute(
            f"SELECT system, external_id FROM identities WHERE {where} ORDER BY system",  # noqa: S608
            params,
        )
        return {str(system): str(ext) for system, ext in rows}

    def suppression(self, subject_id: str) -> dict[str, Any] | None:
        found = self.db.execute(
            "SELECT kind, request_id, created_at FROM suppression WHERE subject_id=?",
            (subject_id,),
        ).fetchone()
        if found is None:
            return None
        entry: dict[str, Any] = {"kind": found[0], "request_id": found[1], "created_at": found[2]}
        request = self.get(found[1]) if found[1] else None
        if request is not None:
            # What the person's report says in plain words (connector/access_own.py): when
            # the erasure completed and what it did at each system, by status only (a
            # detail may name what an operator wrote), and the codes of what it kept there on
            # purpose (a note may name ids; codes are the system's, none of the person's).
            entry["request_status"] = request.status
            entry["completed_at"] = request.completed_at
            entry["systems"] = {
                s.system: {
                    "status": s.status,
                    "reversible": bool(s.result.get("reversible")),
                    **(
                        {"retained": list(s.result["retained"])} if s.result.get("retained") else {}
                    ),
                }
                for s in self.systems(request.id)
            }
        return entry

    def holdings(self, subject_id: str) -> dict[str, Any]:
        """Everything non-sealed the connector keeps about a subject (for access reports)."""
        where, params = self.store.by_subject("delivered", [subject_id])
        delivered = self.db.execute(
            f"SELECT system, delivered_at FROM delivered WHERE {where} ORDER BY system",  # noqa: S608
            params,
        ).fetchall()
        where, params = self.store.by_subject("outbox", [subject_id])
        queued = self.db.execute(
            f"SELECT system, enqueued_at FROM outbox WHERE {where} ORDER BY system",  # noqa: S608
            params,
        ).fetchall()
        dead = self.db.execute(
            "SELECT system, reason, created_at, COALESCE(first_refused_at, created_at), "
            "refusals FROM dead_letters WHERE subject_id=? ORDER BY id",
            (subject_id,),
        ).fetchall()
        opted_out = self.db.execute(
            "SELECT system, created_at FROM opt_outs WHERE subject_id=? ORDER BY system",
            (subject_id,),
        ).fetchall()
        return {
            "identities": self.identities(subject_id),
            "last_delivered": {s: at for s, at in delivered},
            # Unsubscribed at the system itself: sent nothing there but the withdrawal.
            "opted_out_at": {s: at for s, at in opted_out},
            "queued_for_delivery": {s: at for s, at in queued},
            # created_at is the latest refusal (schema 11 keeps one row per system).
            "dead_letters": [
                {"system": s, "reason": r, "created_at": c, "first_refused_at": f, "refusals": n}
                for s, r, c, f, n in dead
            ],
            "suppression": self.suppression(subject_id),
        }

    def last_sent(self, subject_ids: Sequence[str]) -> list[tuple[str, str, str, int | None]]:
        """(system, delivered_at, payload hash, field set) of what each system was last
        delivered for any of ``subject_ids``; the field set (migration 27,
        ``Store.field_names``) is ``None`` for a row written before the store kept them."""
        where, params = self.store.by_subject("delivered", subject_ids)
        rows = self.db.execute(
            "SELECT system, delivered_at, payload_hash, sent FROM delivered "  # noqa: S608
            f"WHERE {where} ORDER BY system, delivered_at",
            params,
        ).fetchall()
        return [(str(s), str(at), str(h), None if n is None else int(n)) for s, at, h, n in rows]

    def sealed_holdings(self, subject_id: str) -> list[tuple[str, str, str, bytes]]:
        """(kind, system, time, sealed payload) of every payload the connector keeps for the
        subject: ``queued`` for delivery, ``held`` from a former address (connector/moves.py)
        and ``refused`` by a system (a dead letter). All sealed with the system's outbox
        context; the person's data as much as a system's record is (Art. 15(3))."""
        where, params = self.store.by_subject("outbox", [subject_id])
        rows = self.db.execute(
            "SELECT system, enqueued_at, payload, payload_hash, former FROM outbox "  # noqa: S608
            f"WHERE {where} ORDER BY system",
            params,
        ).fetchall()
        found: list[tuple[str, str, str, bytes]] = []
        for system, at, payload, payload_hash, former in rows:
            # A held row's payload is its former write (state._HOLD): listed once, as held.
            if payload_hash != HELD:
                found.append(("queued", str(system), str(at), bytes(payload)))
            if former is not None:
                # Held since then; kept beside a newer payload, its own time is not kept.
                held_at = str(at) if payload_hash == HELD else ""
                found.append(("held", str(system), held_at, bytes(former)))
        dead = self.db.execute(
            "SELECT system, created_at, payload FROM dead_letters WHERE subject_id=? ORDER BY id",
            (subject_id,),
        ).fetchall()
        found += [("refused", str(s), str(at), bytes(payload)) for s, at, payload in dead]
        return found

    def audit_about(
        self, subject_ids: Sequence[str], request: str | None = None
    ) -> list[audit.AuditEntry]:
        """The audit entries about ``subject_ids`` (requests, corrections, resyncs, refusals,
        opt-outs: each names the person by id), oldest first; with ``request``, only that
        request's. Through the ``audit_subject`` index (migration 26), not the whole trail."""
        if not subject_ids:
            return []
        marks = ",".join("?" * len(subject_ids))
        query = (
            "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit "  # noqa: S608 - marks only
            f"WHERE subject_id IN ({marks})"
        )
        params: tuple[str, ...] = tuple(subject_ids)
        if request is not None:
            query += " AND json_extract(data, '$.request') = ?"
            params += (request,)
        return [
            audit.AuditEntry(seq, ts, kind, subject, json.loads(data), prev, digest)
            for seq, ts, kind, subject, data, prev, digest in self.db.execute(
                query + " ORDER BY seq", params
            )
        ]

    def received_seqs(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """Per request made under any of ``subject_ids``, the seq of its ``dsr.received``
        audit entry: where the request falls among the moves of people away from an
        address (:meth:`moved_away_at`). A request whose entries retention purged is not
        among them. Through the ``audit_subject`` index, as :meth:`audit_about` reads."""
        if not subject_ids:
            return {}
        marks = ",".join("?" * len(subject_ids))
        # "+kind": not through the kind's index, which holds every request ever received;
        # the person's own entries are a handful.
        rows = self.db.execute(
            "SELECT json_extract(data, '$.request'), MIN(seq) FROM audit "  # noqa: S608 - marks only
            f"WHERE subject_id IN ({marks}) AND +kind = ? GROUP BY 1",
            (*subject_ids, RECEIVED),
        )
        return {str(request): int(seq) for request, seq in rows if request is not None}

    def moved_away_at(self, subject_id: str, movers: Collection[str]) -> int:
        """The seq of the audit entry of the last move of any of ``movers`` away from
        ``subject_id`` (connector/moves.py), 0 when there is none (or it was purged, with
        every entry before it)."""
        if not movers:
            return 0
        marks = ",".join("?" * len(movers))
        (seq,) = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM audit "  # noqa: S608 - marks only
            f"WHERE subject_id IN ({marks}) AND kind IN (?, ?) "
            "AND json_extract(data, '$.from') = ?",
            (*sorted(movers), *MOVED_AWAY, subject_id),
        ).fetchone()
        return int(seq)

    def left_by(self, subject_ids: Sequence[str]) -> list[str]:
        """The addresses (ids) any of ``subject_ids`` was the last to leave
        (connector/moves.py), whoever holds them now."""
        if not subject_ids:
            return []
        marks = ",".join("?" * len(subject_ids))
        rows = self.db.execute(
            f"SELECT alias FROM subject_aliases WHERE subject_id IN ({marks}) "  # noqa: S608 - marks only
            "AND alias <> subject_id ORDER BY alias",
            tuple(subject_ids),
        )
        return [str(row[0]) for row in rows]

    def resend_on_next_sync(
        self, subject_ids: Sequence[str], systems: Collection[str] | None = None
    ) -> int:
        """Make the next sync send the subjects' current data to ``systems`` (every system,
        where ``None``) again.

        Their delivered hashes are marked (:data:`RESEND`) so no payload hashes to them; the
        row stays: it also says they were sent there, which a withdrawal of consent needs.
        Returns how many rows were marked.
        """
        if systems is not None and not systems:
            return 0
        where, params = self.store.by_subject("delivered", subject_ids)
        only: tuple[str, ...] = () if systems is None else tuple(sorted(systems))
        if only:
            where += f" AND system IN ({','.join('?' * len(only))})"
        cur = self.db.execute(
            "UPDATE delivered SET payload_hash = ? || ':' || payload_hash "  # noqa: S608
            f"WHERE {where} AND payload_hash NOT LIKE ? || '%'",
            (RESEND, *params, *only, RESEND),
        )
        return int(cur.rowcount)

    def queued_payloads(self, subject_ids: Sequence[str]) -> list[tuple[str, bytes]]:
        """(system, sealed payload) of every outbox row queued for ``subject_ids``, and of
        every write a row keeps from a former address (connector/moves.py)."""
        where, params = self.store.by_subject("outbox", subject_ids)
        rows = self.db.execute(
            f"SELECT system, payload, former FROM outbox WHERE {where}",  # noqa: S608
            params,
        )
        found: list[tuple[str, bytes]] = []
        for system, payload, former in rows:
            found.append((str(system), bytes(payload)))
            if former is not None:
                found.append((str(system), bytes(former)))
        return found

    def highest_queued(self) -> int:
        """The highest outbox id now: every row queued later gets a higher one (see
        :meth:`connector.state.Store.enqueue_page`)."""
        (highest,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
        return int(highest)

    def queued_rows(
        self, system: str, subject_ids: Sequence[str], up_to: int
    ) -> list[tuple[int, bytes, str]]:
        """(id, sealed payload, payload hash) of ``system``'s outbox rows for
        ``subject_ids`` with an id of ``up_to`` or below (queued by then)."""
        where, params = self.store.by_subject("outbox", subject_ids)
        rows = self.db.execute(
            "SELECT id, payload, payload_hash FROM outbox "  # noqa: S608 - marks only
            f"WHERE system=? AND id <= ? AND {where}",
            (system, up_to, *params),
        )
        return [(int(i), bytes(p), str(h)) for i, p, h in rows]

    def erased_on_arrival(
        self, request_id: str, request_subject: str, system: str, subject_ids: Sequence[str]
    ) -> bool:
        """Whether a sync erased in ``system`` what its own write made of ``subject_ids``
        since the erasure ``request_id`` (of ``request_subject``) was received: a write on its
        way when the erasure came landed, and the engine, finding the person suppressed,
        erased it again and found it (``sync.erased_on_arrival``). The erasure's own call
        then finds nothing there, though the system held the person.

        Read from the audit trail (the kind's index, entries since the request's
        ``dsr.received``), where a retry after a crash finds it too.
        """
        marks = ",".join("?" * len(subject_ids))
        found = self.db.execute(
            "SELECT 1 FROM audit WHERE kind=? AND seq > ("  # noqa: S608 - marks only
            "SELECT MIN(seq) FROM audit WHERE kind='dsr.received' AND subject_id=? "
            "AND json_extract(data, '$.request')=?) "
            f"AND subject_id IN ({marks}) AND json_extract(data, '$.system')=? "
            "AND json_extract(data, '$.found') LIMIT 1",
            (audit.SYNC_ERASED_ON_ARRIVAL, request_subject, request_id, *subject_ids, system),
        ).fetchone()
        return found is not None

    def vendor_deadline(self, request_id: str, subject_id: str) -> int | None:
        """The days the system that asked gave to carry out ``request_id`` (of
        ``subject_id``), where its deadline was set or brought forward by them (Shopify's
        compliance webhooks: 30), else ``None``.

        Read from the request's audit entries (the subject's index), which mark it
        (``due_within_days``): the row's day gap cannot tell, since 30 days and a month are
        the same length in a month of 30 days, or one an earlier version counted.
        """
        found = self.db.execute(
            "SELECT MIN(json_extract(data, '$.due_within_days')) FROM audit "
            "WHERE subject_id=? AND kind IN "
            "('dsr.received', 'dsr.deadline_brought_forward', 'dsr.deadline_kept') "
            "AND json_extract(data, '$.request')=? "
            "AND json_extract(data, '$.due_within_days') IS NOT NULL",
            (subject_id, request_id),
        ).fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def reseal_queued(self, row_id: int, sealed: bytes) -> None:
        """Replace a queued payload (its hash, what the source sent, stays)."""
        self.db.execute("UPDATE outbox SET payload=? WHERE id=?", (sealed, row_id))

    def delete_traces(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """Delete the subject's identities, hashes, outbox rows, dead letters, opt-outs at
        systems (and when they last chose there) and former ids.

        What stays: the suppression entry and audit entries, both keyed HMAC ids only.
        Returns rows deleted per table.
        """
        counts: dict[str, int] = {}
        marks = ",".join("?" * len(subject_ids))
        with self.store.transaction() as db:
            for table in ("identities", "delivered", "outbox"):
                where, params = self.store.by_subject(table, subject_ids)
                cur = db.execute(f"DELETE FROM {table} WHERE {where}", params)  # noqa: S608
                counts[table] = cur.rowcount
            cur = db.execute(
                f"DELETE FROM dead_letters WHERE subject_id IN ({marks})",  # noqa: S608
                tuple(subject_ids),
            )
            counts["dead_letters"] = cur.rowcount
            cur = db.execute(
                f"DELETE FROM opt_outs WHERE subject_id IN ({marks})",  # noqa: S608
                tuple(subject_ids),
            )
            counts["opt_outs"] = cur.rowcount
            cur = db.execute(
                f"DELETE FROM consent_events WHERE subject_id IN ({marks})",  # noqa: S608
                tuple(subject_ids),
            )
            counts["consent_events"] = cur.rowcount
            cur = db.execute(
                f"DELETE FROM subject_aliases WHERE subject_id IN ({marks}) "  # noqa: S608
                f"OR alias IN ({marks})",
                (*subject_ids, *subject_ids),
            )
            counts["subject_aliases"] = cur.rowcount
            # Last: the clauses above find the per-system rows through these numbers.
            cur = db.execute(
                f"DELETE FROM subjects WHERE subject_id IN ({marks})",  # noqa: S608
                tuple(subject_ids),
            )
            counts["subjects"] = cur.rowcount
        return counts

    def purge_source(self, system: str, flows: Sequence[str]) -> dict[str, int]:
        """Forget everything held because of one source system (Shopify's ``shop/redact``).

        The system's identity rows, the cursors of the flows reading from it, and what those
        flows still have queued or dead-lettered; then the subject numbers of people nothing
        is held for any more (an HMAC id kept for no purpose). Data already delivered to
        destinations is the controller's, in their systems; erasing it there is a decision per
        person, so a person delivered somewhere keeps that system's rows and their number.
        """
        counts: dict[str, int] = {}
        marks = ",".join("?" * len(flows)) or "NULL"
        with self.store.transaction() as db:
            counts["identities"] = db.execute(
                "DELETE FROM identities WHERE system=?", (system,)
            ).rowcount
            for table in ("cursors", "outbox", "dead_letters"):
                counts[table] = db.execute(
                    f"DELETE FROM {table} WHERE flow IN ({marks})",  # noqa: S608
                    tuple(flows),
                ).rowcount
            # One pass: SQLite builds the set of numbers still in use once (an ephemeral
            # index), not a lookup per subject (the tables are keyed by system first).
            in_use = " UNION ".join(f"SELECT subject_no FROM {t}" for t in PER_SYSTEM_TABLES)  # noqa: S608
            counts["subjects"] = db.execute(
                f"DELETE FROM subjects WHERE subject_no NOT IN ({in_use})"  # noqa: S608
            ).rowcount
        return counts

    # -- records erasures deleted (migration 24) ---------------------------------------------

    def note_erased_records(self, record_keys: Sequence[str], request_id: str) -> None:
        """Note the systems' records ``request_id`` erases, by their keyed ids, as of now.

        Noted again at each run of the request: a report of the deletion may come for as
        long after the request's last run as after its first.
        """
        now = utcnow()
        self.db.executemany(
            "INSERT INTO erased_records(record_key, request_id, erased_at) VALUES (?,?,?) "
            "ON CONFLICT(record_key) DO UPDATE SET request_id=excluded.request_id, "
            "erased_at=excluded.erased_at",
            [(key, request_id, now) for key in dict.fromkeys(record_keys)],
        )

    def erased_records_of(self, request_id: str) -> int:
        """How many systems' records ``request_id`` keeps noted by their keyed ids."""
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM erased_records WHERE request_id=?", (request_id,)
        ).fetchone()
        return int(count)

    def erased_record(self, record_key: str, since: str) -> str | None:
        """The erasure that erased the record keyed ``record_key`` and last ran at ``since``
        or later, if any."""
        found = self.db.execute(
            "SELECT request_id FROM erased_records WHERE record_key=? AND erased_at >= ?",
            (record_key, since),
        ).fetchone()
        return None if found is None else str(found[0])
