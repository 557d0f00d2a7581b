"""The connector's own traces of a subject beside the request tables, for data subject
requests: what it delivered, queued, set aside or was refused for them, what its audit trail
says about them, and the deletion of it all at an erasure or a source's purge.

:class:`SubjectTraces` is a part of :class:`connector.dsr_store.DsrStore`, on the store and
connection it holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from connector import audit
from connector.moves import MOVED_ENTRY, SET_APART_ENTRY
from connector.state import HELD, PER_SYSTEM_TABLES, RESEND, Store

__all__ = ["MOVED_AWAY", "RECEIVED", "SubjectTraces"]

#: The audit entry of a request received (the first of its entries).
RECEIVED = "dsr.received"

#: The audit entries of a person's move away from an address (connector/moves.py).
MOVED_AWAY = (MOVED_ENTRY, SET_APART_ENTRY)


class SubjectTraces:
    """What the connector holds about a subject beside the request tables, read and deleted
    (mixed into :class:`connector.dsr_store.DsrStore`)."""

    store: Store
    db: sqlite3.Connection

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
