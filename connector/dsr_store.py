"""SQL for data subject requests, and for deleting the connector's own traces of a subject.

The tables (``dsr_requests``, ``dsr_systems``) are defined by schema migration 2 in
:mod:`connector.state`; this module is the only code that writes them, and with
:mod:`connector.dsr_rows` (their rows, and the reads a listing makes of them) the only code
that reads them. Rows hold subject ids (keyed HMAC), statuses and vendor facts; whatever
identifies the person in clear (e-mail, phone, ids per system) lives only in the sealed
``manifest`` and ``payload`` columns, which are set to NULL once a request is complete.

The connector's other traces of a subject, read for an access copy and deleted by an
erasure, are :class:`connector.dsr_traces.SubjectTraces`, a part of :class:`DsrStore`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from connector.dsr_rows import (
    EXEMPTED,
    FINAL_STATUSES,
    LISTED_COLUMNS,
    NO_LONGER_CONFIGURED,
    ON_HOLD,
    PURGE_SOURCE,
    SYSTEM_STATUSES,
    ListedRequest,
    RequestRow,
    SystemRow,
    latest_purges,
    listed_position,
    listed_requests,
    listed_systems,
    on_hold,
    receipt_keys_retired,
)
from connector.dsr_traces import MOVED_AWAY, SubjectTraces
from connector.state import HELD_PHONE, Store, utcnow

__all__ = [
    "EXEMPTED",
    "FINAL_STATUSES",
    "HELD_PHONE",
    "LISTED_COLUMNS",
    "MOVED_AWAY",
    "NO_LONGER_CONFIGURED",
    "ON_HOLD",
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

#: How the detail of a correction's part closed by the person's erasure starts
#: (:meth:`DsrStore.supersede`), the erasure's request id after.
SUPERSEDED_BY = "superseded by the person's erasure "
_SUPERSEDED_WHY = (
    ", recorded before the correction was written here: nothing more is written to this "
    "system, which the erasure deletes the person from"
)


_REQUEST_COLUMNS = (
    "id, kind, subject_id, received_at, deadline, extension_reason, status, source, "
    "manifest, payload, receipt, completed_at"
)


class DsrStore(SubjectTraces):
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
    # (its summary for an access report; the rest, and its deletion: SubjectTraces)

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
