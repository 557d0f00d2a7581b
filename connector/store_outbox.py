"""The encrypted outbox: a page's payloads queued with its cursor, batches read for delivery,
rows dropped, or held where they keep a write from a person's former address.

One row per person and system: a page's write takes the place of what waits for the person
there, whichever flow queued it (a flow whose write was taken reads in full next,
:data:`~connector.store_runs.REREAD`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from connector.store_base import rows_in, utcnow
from connector.store_marks import HELD, WITHDRAWAL
from connector.store_records import OutboxRow, QueuedPayload
from connector.store_runs import RunStore
from connector.store_subjects import SubjectStore

__all__ = ["OutboxStore"]

#: Holds the rows matched by the condition that follows it (``?3`` onwards are its
#: parameters; ``?1`` is :data:`HELD`, ``?2`` the time held): each keeps its former address's
#: write, and is not sent (:meth:`Store.hold_formers`). Rows without one are the caller's.
_HOLD = (
    "UPDATE outbox SET payload=former, payload_hash=?1, attempts=0, enqueued_at=?2 "
    "WHERE former IS NOT NULL AND payload_hash!=?1 AND "
)


class OutboxStore(SubjectStore, RunStore):
    """The outbox. A page's commit moves its flow's cursor too (:class:`RunStore`)."""

    # -- the page commit: outbox rows + identities + cursor, atomically ----------------------------

    def enqueue_page(
        self,
        flow: str,
        source: str,
        payloads: Sequence[QueuedPayload],
        identities: Iterable[tuple[str, str]],
        cursor: str | None,
        *,
        move_cursor: bool = True,
        shape: str | None = None,
        sources: Mapping[str, str] | None = None,
        numbered: Collection[str] = (),
    ) -> list[int]:
        """Queue a page's payloads, record the source ids, and move the cursor, atomically.

        ``move_cursor=False`` leaves the cursor alone (records from a webhook or a targeted
        resync, which are not a page of the pull). ``shape`` is what the cursor is set under
        (:meth:`RunStore.get_cursor`).

        A payload takes the place of what waits for its person and system. Where that was
        another flow's row, the other flow's cursor is marked (:data:`REREAD`): its change
        would otherwise never reach the system. ``sources`` (flow -> its source) lets a flow
        with no cursor yet be marked too (:meth:`RunStore.mark_reread`). ``numbered``: the
        subjects the caller read a number for (:meth:`SubjectStore.subject_numbers`).

        Returns:
            The outbox id each payload was queued under, in the order given.
        """
        now = utcnow()
        identities = list(identities)
        with self.transaction() as db:
            numbers = self.subject_numbers(
                [*(p.subject_id for p in payloads), *(sid for sid, _ in identities)],
                create=True,
                numbered=numbered,
            )
            # Ids are handed out here, always above every id in the table when the store was
            # opened, every id handed out since, and every id in the table now. Delivery
            # workers read the outbox in id order past the last id they took; had SQLite
            # picked the ids (MAX + 1), it would reuse ids once the highest rows were
            # delivered and deleted, and rows queued after that would sit unseen until the
            # next run. (A restart with a backlog showed it: the backlog delivered, the first
            # new page got ids the worker had passed.) A newer payload for a subject already
            # queued replaces it under a *new* id too, so a delivery of the old version in
            # flight cannot acknowledge (delete) the new one.
            (highest,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
            first = max(self._outbox_high, int(highest)) + 1
            self._outbox_high = first + len(payloads) - 1
            # A row of another flow that this page's write takes the place of: that flow's
            # change goes nowhere now, and its cursor passed it. It reads its source in full
            # next (REREAD), and queues again what the system lacks. The mark is new for
            # good, not this page's first id: an emptied outbox hands its ids out again once
            # the store is opened anew, and a read under a mark set before cleared one set
            # while it ran.
            # A withdrawal taking the place marks nothing: nothing but withdrawals goes to the
            # person there from then on, and the other flow's read, its source still saying
            # they consent, would have sent a renewal that subscribed them again at once.
            taken = self._taken_from(
                flow,
                [
                    (p.system, numbers[p.subject_id], p.payload_hash)
                    for p in payloads
                    if not p.payload_hash.startswith(WITHDRAWAL)
                ],
            )
            if taken:
                self.mark_reread(taken, sources)
            db.executemany(
                "INSERT INTO outbox(id, system, subject_no, flow, payload, payload_hash, "
                "enqueued_at, sent) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(system, subject_no) "
                "DO UPDATE SET id=excluded.id, payload=excluded.payload, "
                "payload_hash=excluded.payload_hash, flow=excluded.flow, "
                "enqueued_at=excluded.enqueued_at, attempts=0, sent=excluded.sent",
                [
                    (
                        first + n,
                        p.system,
                        numbers[p.subject_id],
                        flow,
                        p.payload,
                        p.payload_hash,
                        now,
                        p.sent,
                    )
                    for n, p in enumerate(payloads)
                ],
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) VALUES (?,?,?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET external_id=excluded.external_id "
                # An unchanged id is not rewritten: on a re-sync nearly all are unchanged.
                "WHERE external_id IS NOT excluded.external_id",
                [(source, numbers[sid], ext) for sid, ext in identities],
            )
            if move_cursor:
                self.set_cursor(flow, source, cursor, shape)
        return list(range(first, first + len(payloads)))

    def _taken_from(self, flow: str, rows: Sequence[tuple[str, int, str]]) -> set[str]:
        """The flows other than ``flow`` that have a row queued at these (system, subject
        number, new payload hash) places holding another payload: held rows aside (they keep
        no write of their flow's), and one holding the same payload (two sources that agree:
        what the other flow queued still reaches the system, and marked, both flows read in
        full at every run while the system is down)."""
        by_system: dict[str, dict[int, str]] = {}
        for system, number, digest in rows:
            by_system.setdefault(system, {})[number] = digest
        found: set[str] = set()
        query = (
            "SELECT subject_no, flow, payload_hash FROM outbox "
            "WHERE system=? AND subject_no IN (?...) AND flow!=? AND payload_hash!=?"
        )
        for system, digests in by_system.items():
            found.update(
                str(other)
                for number, other, digest in rows_in(
                    self.db, query, list(digests), before=(system,), after=(flow, HELD)
                )
                if digest != digests[number]
            )
        return found

    # -- outbox ------------------------------------------------------------------------------

    def outbox_batch(
        self, system: str, after_id: int, limit: int, flow: str | None = None
    ) -> list[OutboxRow]:
        """Up to ``limit`` rows for ``system`` with id above ``after_id``, oldest first;
        with ``flow``, only the rows that flow queued. A held row (:data:`HELD`) is none."""
        rows = self.db.execute(
            "SELECT o.id, o.system, s.subject_id, o.flow, o.payload, o.payload_hash, o.attempts, "
            "o.subject_no, o.former, o.sent FROM outbox o "
            "JOIN subjects s ON s.subject_no = o.subject_no "
            "WHERE o.system=? AND o.id>? AND (?4 IS NULL OR o.flow=?4) AND o.payload_hash!=?5 "
            "ORDER BY o.id LIMIT ?3",
            (system, after_id, limit, flow, HELD),
        ).fetchall()
        return [OutboxRow._make(row) for row in rows]

    def drop_unrouted(self, routes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Delete the rows queued by a flow for a system it no longer sends to; how many,
        per ``(flow, system)``.

        ``routes`` are the configured ``(flow, destination)`` pairs. Rows of a flow removed
        or renamed, or for a destination taken out of its flow, were delivered by another
        flow's run to a system nothing meant to send them to any more, or kept sealed in the
        outbox for good. The next run of a flow queues whatever its systems lack.

        A row that keeps a write from a former address is held instead (:data:`HELD`), as
        :meth:`drop_queued` holds it: it is all that tells what the system may hold under
        that address, for an erasure to reach. A flow no route names any more loses its
        cursors with its rows: put back as it was (its shape unchanged), it resumed past the
        changes those rows carried, and an incremental source (Shopify) never offered them
        again. Read in full instead, change detection sends only what the systems lack.
        """
        wanted = list(routes)
        flows = {flow for flow, _ in wanted}
        dropped: dict[tuple[str, str], int] = {}
        with self.transaction() as db:
            for flow, system in self.unrouted(wanted):
                held = db.execute(
                    _HOLD + "flow=?3 AND system=?4", (HELD, utcnow(), flow, system)
                ).rowcount
                gone = db.execute(
                    "DELETE FROM outbox WHERE flow=? AND system=? AND former IS NULL",
                    (flow, system),
                ).rowcount
                if gone:
                    dropped[(flow, system)] = gone
                if (held or gone) and flow not in flows:
                    db.execute("DELETE FROM cursors WHERE flow=?", (flow,))
        return dropped

    def unrouted(self, routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The ``(flow, system)`` pairs the outbox holds rows of that ``routes`` do not name."""
        wanted = set(routes)
        found = self.db.execute("SELECT DISTINCT flow, system FROM outbox").fetchall()
        return [(str(f), str(s)) for f, s in found if (f, s) not in wanted]

    def queued_by_flows(
        self, pairs: Sequence[tuple[str, str]], subject_ids: Sequence[str]
    ) -> dict[str, set[str]]:
        """Per system, which of ``subject_ids`` have a row queued by one of ``pairs``."""
        numbers = self.subject_numbers(subject_ids)
        subject_of = {number: sid for sid, number in numbers.items()}
        found: dict[str, set[str]] = {}
        query = "SELECT subject_no FROM outbox WHERE flow=? AND system=? AND subject_no IN (?...)"
        for flow, system in pairs:
            rows = rows_in(self.db, query, list(subject_of), before=(flow, system))
            found.setdefault(system, set()).update(subject_of[n] for (n,) in rows)
        return found

    def outbox_count(self, system: str | None = None) -> int:
        if system is None:
            count: int = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        else:
            count = self.db.execute(
                "SELECT COUNT(*) FROM outbox WHERE system=?", (system,)
            ).fetchone()[0]
        return count

    def outbox_counts(self, flow: str | None = None) -> dict[str, int]:
        """Rows waiting for delivery, per system that has any (a walk of the (system, id) index);
        with ``flow``, only the rows that flow queued. A held row (:data:`HELD`) waits for
        nothing."""
        if flow is not None:
            rows = self.db.execute(
                "SELECT system, COUNT(*) FROM outbox "
                "WHERE flow=? AND payload_hash!=? GROUP BY system ORDER BY system",
                (flow, HELD),
            )
            return {str(system): int(count) for system, count in rows}
        # Every row counted from the (system, id) index alone, less the held ones from their
        # own (schema 28): the payload hash that tells them apart is in the table, and reading
        # it read every row waiting (``/metrics`` counts them at every scrape). The mark is
        # written in the statement, not bound: SQLite uses a partial index only for a query
        # whose WHERE names its condition.
        counts = {
            str(system): int(count)
            for system, count in self.db.execute(
                "SELECT system, COUNT(*) FROM outbox GROUP BY system ORDER BY system"
            )
        }
        for system, held in self.db.execute(
            f"SELECT system, COUNT(*) FROM outbox WHERE payload_hash = '{HELD}' "  # noqa: S608 - a constant
            "GROUP BY system"
        ):
            counts[str(system)] -= int(held)
        return {system: count for system, count in counts.items() if count}

    def bump_attempts(self, ids: Sequence[int]) -> None:
        self.db.executemany("UPDATE outbox SET attempts=attempts+1 WHERE id=?", [(i,) for i in ids])

    def queued_now(self, ids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """Which of the outbox ``ids`` are still queued, each with its subject's number and
        sealed payload now (a move gives a row kept for its former address to the new one; a
        correction seals the row anew under the same id)."""
        query = "SELECT id, subject_no, payload FROM outbox WHERE id IN (?...)"
        return {
            int(i): (int(no), bytes(payload))
            for i, no, payload in rows_in(self.db, query, list(ids))
        }

    def forget_former(self, ids: Sequence[int]) -> None:
        """Clear the former address's write of these rows: it was sent and answered."""
        self.db.executemany("UPDATE outbox SET former=NULL WHERE id=?", [(i,) for i in ids])

    def hold_formers(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Hold the rows of these (system, subject id) pairs that keep a write from a former
        address (:data:`HELD`): each keeps that write only, and is not sent; how many.

        For people a page did not queue for the system (gated, suppressed): the kept write
        would make the record, and the row's payload (the one before the move) would follow
        it as if it were current. Held since the first time: the sweep counts from then.
        """
        numbers = self.subject_numbers([sid for _, sid in pairs])
        with self.transaction() as db:
            return sum(
                db.execute(
                    _HOLD + "system=?3 AND subject_no=?4", (HELD, utcnow(), system, numbers[sid])
                ).rowcount
                for system, sid in pairs
                if sid in numbers
            )

    def drop_queued(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Drop what waits for each (system, subject id) pair, any flow's, but hold a row that
        keeps a write from a former address (:meth:`hold_formers`); how many rows dropped."""
        numbers = self.subject_numbers([sid for _, sid in pairs])
        self.hold_formers(pairs)
        with self.transaction() as db:
            return sum(
                db.execute(
                    "DELETE FROM outbox WHERE system=? AND subject_no=? AND former IS NULL",
                    (system, numbers[sid]),
                ).rowcount
                for system, sid in pairs
                if sid in numbers
            )

    def hold_or_drop(self, rows: Sequence[OutboxRow]) -> None:
        """Delete these outbox rows, but hold those that keep a former address's write."""
        with self.transaction() as db:
            db.executemany(_HOLD + "id=?3", [(HELD, utcnow(), r.id) for r in rows])
            db.executemany(
                "DELETE FROM outbox WHERE id=? AND former IS NULL", [(r.id,) for r in rows]
            )

    def drop_outbox(self, ids: Sequence[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])
