"""What each system got: acknowledgements, the hash of the payload last delivered (change
detection), and the sets of fields a write gave a value (migration 27)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from connector.store_base import rows_in, system_names, utcnow
from connector.store_marks import WITHDRAWAL
from connector.store_records import Ack, PageSent
from connector.store_subjects import SubjectStore

__all__ = ["DeliveredStore"]


class DeliveredStore(SubjectStore):
    """Deliveries recorded, and what a page compares its payloads with."""

    # -- deliveries --------------------------------------------------------------------------

    def note_identities(self, system: str, acks: Sequence[Ack]) -> None:
        """Record the system's id for subjects a write reached only in part (it is retried,
        or was refused for good elsewhere in the system): their rows stay queued or become
        dead letters and nothing counts as delivered, but the person is known there by that
        id, as an erasure, an access request, a move and a withdrawal of consent must know
        them.

        An id already known stays: the rest of the system still holds the person under it
        (a move renamed them in one audience, not yet in the other), and the retry finds
        them by it."""
        with self.transaction() as db:
            numbers = self.subject_numbers(
                [a.subject_id for a in acks if a.subject_no is None], create=True
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) "
                "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM subjects WHERE subject_no=?2) "
                "ON CONFLICT(system, subject_no) DO NOTHING",
                [
                    (system, a.subject_no or numbers[a.subject_id], a.external_id)
                    for a in acks
                    if a.external_id
                ],
            )

    def acknowledge(self, system: str, acks: Sequence[Ack]) -> None:
        """Record deliveries: hash and identity stored, outbox rows deleted, atomically.

        A delivered subject's dead letter for ``system`` goes too: the record was fixed and
        accepted, so the refusal no longer needs an operator (nor its sealed payload kept).
        """
        now = utcnow()
        with self.transaction() as db:
            unnumbered = [a.subject_id for a in acks if a.subject_no is None]
            numbers = self.subject_numbers(unnumbered, create=True) if unnumbered else {}
            # A subject erased while its batch was in flight has no number any more: its
            # acknowledgement writes nothing (rows under a number nobody has could never be
            # found, or erased, again). Who still has one is read once for the batch, under
            # the write lock this transaction holds, so nobody is erased in between.
            numbered = [
                (a, numbers[a.subject_id] if a.subject_no is None else a.subject_no) for a in acks
            ]
            held = self._numbered([no for _, no in numbered])
            rows = [(a, no) for a, no in numbered if no in held]
            db.executemany(
                "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at, sent) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET "
                "payload_hash=excluded.payload_hash, delivered_at=excluded.delivered_at, "
                # An acknowledgement without a field set (a withdrawal's) keeps the one the
                # fields were last written under: the system still holds them.
                "sent=COALESCE(excluded.sent, delivered.sent), "
                # A write of another flow than the last keeps that flow's set (migration
                # 30): what it gave and this write gives no value is still its value there.
                # The set it held before goes on to ``sent_earlier`` (migration 31's
                # trigger), so a third flow's write loses no flow's set.
                "sent_before=CASE WHEN excluded.sent IS NULL OR delivered.sent IS NULL "
                "OR (SELECT flow FROM field_sets WHERE id=excluded.sent) "
                "IS (SELECT flow FROM field_sets WHERE id=delivered.sent) "
                "THEN delivered.sent_before ELSE delivered.sent END",
                [(system, no, a.payload_hash, now, a.sent) for a, no in rows],
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) VALUES (?, ?, ?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET external_id=excluded.external_id "
                # An unchanged id is not rewritten: on a re-sync nearly all are unchanged.
                "WHERE external_id IS NOT excluded.external_id",
                [(system, no, a.external_id) for a, no in rows if a.external_id],
            )
            db.executemany("DELETE FROM outbox WHERE id=?", [(a.outbox_id,) for a in acks])
            # Nearly always the system has no dead letters at all: one seek of the index
            # says so, and the batch costs nothing more (acknowledge is on every batch).
            if db.execute(
                "SELECT 1 FROM dead_letters WHERE system=? LIMIT 1", (system,)
            ).fetchone():
                rows_in(
                    db,
                    "DELETE FROM dead_letters WHERE system=? AND subject_id IN (?...)",
                    [a.subject_id for a in acks],
                    before=(system,),
                )

    # -- change detection --------------------------------------------------------------------

    def remark_delivered(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Set the delivered hash of each ``(system, subject_id, payload_hash)``, sending
        nothing: a withdrawal an earlier version recorded by its bare hash, now marked. Only
        where the bare hash is still what was delivered (a delivery that landed since stays)."""
        self.db.executemany(
            "UPDATE delivered SET payload_hash=? WHERE system=? AND payload_hash=? "
            "AND subject_no=(SELECT subject_no FROM subjects WHERE subject_id=?)",
            [
                (payload_hash, system, payload_hash.removeprefix(WITHDRAWAL), sid)
                for system, sid, payload_hash in rows
            ],
        )

    def page_hashes(
        self,
        systems: Sequence[str],
        subject_ids: Sequence[str],
        numbers: Mapping[str, int | None] | None = None,
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], PageSent]:
        """(queued, delivered, sent) for a page: per system, per subject, the hash of the
        payload waiting in the outbox and of the one last delivered, and the field sets of
        both (:meth:`field_set`; only where there is one). The page's subject numbers are
        looked up once (on a first sync nobody has one, and nothing more is read), and each
        table once for hash and set alike.

        ``numbers`` holds numbers the caller looked up already, ``None`` for a subject that
        had none (the page's identity map: :class:`~connector.moves.PageIds`); only the
        other subjects' are looked up. The caller passes numbers read since its last wait,
        with no write of its own in between.
        """
        given = numbers or {}
        read = {sid: given[sid] for sid in subject_ids if sid in given}
        numbered = {sid: no for sid, no in read.items() if no is not None}
        numbered.update(self.subject_numbers([sid for sid in subject_ids if sid not in read]))
        queued, queued_sent, _, _ = self._hashes_by_number("outbox", systems, numbered)
        delivered, delivered_sent, before, earlier = self._hashes_by_number(
            "delivered", systems, numbered
        )
        return queued, delivered, PageSent(queued_sent, delivered_sent, before, earlier)

    def _hashes_by_number(
        self, table: str, systems: Sequence[str], numbers: Mapping[str, int]
    ) -> tuple[
        dict[str, dict[str, str]],
        dict[str, dict[str, int]],
        dict[str, dict[str, int]],
        dict[str, dict[str, tuple[int, ...]]],
    ]:
        """:meth:`SubjectStore._by_number` for ``payload_hash``, with ``sent`` beside it, and
        for ``delivered`` its ``sent_before`` and ``sent_earlier``, latest first (the outbox
        has neither: empty)."""
        hashes: dict[str, dict[str, str]] = {system: {} for system in system_names(systems)}
        sent: dict[str, dict[str, int]] = {system: {} for system in system_names(systems)}
        before: dict[str, dict[str, int]] = {system: {} for system in system_names(systems)}
        earlier: dict[str, dict[str, tuple[int, ...]]] = {
            system: {} for system in system_names(systems)
        }
        if not numbers:
            return hashes, sent, before, earlier
        subject_of = {number: subject_id for subject_id, number in numbers.items()}
        names = ",".join("?" * len(systems))
        kept = "sent_before, sent_earlier" if table == "delivered" else "NULL, NULL"
        query = (
            f"SELECT system, subject_no, payload_hash, sent, {kept} "  # noqa: S608 - fixed names
            f"FROM {table} WHERE system IN ({names}) AND subject_no IN (?...)"
        )
        for system, number, payload_hash, fields, fields_before, older in rows_in(
            self.db, query, list(subject_of), before=systems
        ):
            subject_id = subject_of[number]
            hashes[system][subject_id] = payload_hash
            if fields is not None:
                sent[system][subject_id] = fields
            if fields_before is not None:
                before[system][subject_id] = fields_before
            if older is not None:  # three flows or more (migration 31): seldom
                earlier[system][subject_id] = tuple(int(n) for n in json.loads(older)[::-1])
        return hashes, sent, before, earlier

    # -- field sets (migration 27) ---------------------------------------------------------

    def field_set(self, flow: str, names: Iterable[str]) -> int:
        """The number of the set of field ``names`` a write of ``flow`` gives a value; made
        the first time it is asked for (that writes: inside the caller's transaction, or one
        of its own). People share a handful of sets, so each is read once per process."""
        key = (flow, ",".join(sorted(names)))
        number = self._field_set_numbers.get(key)
        if number is None:
            # Kept for later only once committed: a number made in a caller's transaction
            # that is then rolled back may be given to another set.
            own = not self.db.in_transaction
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO field_sets(flow, names) VALUES (?, ?) "
                    "ON CONFLICT(flow, names) DO NOTHING",
                    key,
                )
                (number,) = db.execute(
                    "SELECT id FROM field_sets WHERE flow=? AND names=?", key
                ).fetchone()
            if own:
                self._field_set_numbers[key] = number
                self._field_sets[number] = (flow, frozenset(filter(None, key[1].split(","))))
        return int(number)

    def field_names(self, number: int) -> tuple[str, frozenset[str]]:
        """(flow, field names) of the set :meth:`field_set` numbered ``number``."""
        found = self._field_sets.get(number)
        if found is None:
            row = self.db.execute(
                "SELECT flow, names FROM field_sets WHERE id=?", (number,)
            ).fetchone()
            if row is None:  # not made in this store (none is ever deleted): empties nothing
                return ("", frozenset())
            found = (str(row[0]), frozenset(filter(None, str(row[1]).split(","))))
            self._field_sets[number] = found
        return found
