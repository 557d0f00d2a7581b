"""Dead letters: records a system refused for good (or the connector set aside), one per
subject and system, kept sealed for an operator."""

from __future__ import annotations

from collections.abc import Sequence

from connector.store_base import rows_in, system_names, utcnow
from connector.store_records import DeadLetter, OutboxRow, PageLetter
from connector.store_subjects import SubjectStore

__all__ = ["DeadLetterStore"]


class DeadLetterStore(SubjectStore):
    """The dead-letter table."""

    def dead_letter(self, rows: Sequence[tuple[OutboxRow, str]], *, refused: bool = True) -> None:
        """Move rejected rows to the dead-letter table with their reason, atomically.

        A subject already dead-lettered for the system keeps its one row (schema 11): the
        latest payload, hash, reason and time replace the old, and the refusal is counted.
        ``refused=False`` is for rows the connector set aside itself (a payload that no longer
        opens): their hash is not kept, so the next sync offers the subject's current data
        again (:meth:`rejected_hashes` passes over only what a system refused).

        A subject on the suppression list gets none: erased while the refusal was on its
        way back (from another process, which could not wait for it), they must leave no
        sealed record behind the erasure that deleted their traces.
        """
        now = utcnow()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO dead_letters(system, subject_id, flow, payload, payload_hash, reason, "
                "created_at, first_refused_at, refusals) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,1 "
                "WHERE NOT EXISTS (SELECT 1 FROM suppression WHERE subject_id=?2) "
                "ON CONFLICT(system, subject_id) DO UPDATE SET flow=excluded.flow, "
                "payload=excluded.payload, payload_hash=excluded.payload_hash, "
                "reason=excluded.reason, created_at=excluded.created_at, "
                "refusals=refusals+1",
                [
                    (
                        r.system,
                        r.subject_id,
                        r.flow,
                        r.payload,
                        r.payload_hash if refused else None,
                        reason,
                        now,
                        now,
                    )
                    for r, reason in rows
                ],
            )
            db.executemany("DELETE FROM outbox WHERE id=?", [(r.id,) for r, _ in rows])

    def dead_letters(
        self, system: str | None = None, *, latest: int | None = None
    ) -> list[DeadLetter]:
        """The dead letters (of ``system``, or all), the most recently refused last; with
        ``latest``, only that many of the most recently refused (an index walk from the end:
        schema 29)."""
        query = (
            "SELECT id, system, subject_id, flow, reason, created_at, "
            # The store's own writes always set it; a row put in by hand without it counts
            # as refused once, at created_at.
            "COALESCE(first_refused_at, created_at), refusals FROM dead_letters"
        )
        params: tuple[str, ...] = ()
        if system is not None:
            query += " WHERE system=?"
            params = (system,)
        # A refused-again row keeps its id: the time of its latest refusal orders it.
        if latest is not None:
            rows = self.db.execute(
                query + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, latest)
            ).fetchall()
            return [DeadLetter(*row) for row in reversed(rows)]
        rows_all = self.db.execute(query + " ORDER BY created_at, id", params)
        return [DeadLetter(*row) for row in rows_all]

    def dead_letter_count(self) -> int:
        count: int = self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return count

    def rejected_hashes(
        self, systems: Sequence[str], subject_ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        """Per system, the hash of the payload it last refused for good (dead letters)."""
        return {
            system: {sid: hash_ for sid, (_, hash_) in letters.items() if hash_ is not None}
            for system, letters in self.page_dead_letters(systems, subject_ids).items()
        }

    def page_dead_letters(
        self, systems: Sequence[str], subject_ids: Sequence[str]
    ) -> dict[str, dict[str, PageLetter]]:
        """Per system, the dead letter each of ``subject_ids`` has there: its flow and the
        hash of what was refused (``None``: set aside, not refused; see :meth:`dead_letter`).

        Found through the unique (system, subject_id) index: one row per subject and system,
        one query per 500 subjects (a page's).
        """
        found: dict[str, dict[str, PageLetter]] = {system: {} for system in system_names(systems)}
        names = ",".join("?" * len(systems))
        query = (
            "SELECT system, subject_id, flow, payload_hash FROM dead_letters "  # noqa: S608
            f"WHERE system IN ({names}) AND subject_id IN (?...)"
        )
        for system, subject_id, flow, payload_hash in rows_in(
            self.db, query, subject_ids, before=systems
        ):
            found[system][subject_id] = PageLetter(flow, payload_hash)
        return found

    def drop_outdated_letters(self, letters: Sequence[tuple[str, str, str | None]]) -> int:
        """Delete each ``(system, subject_id, payload_hash)`` dead letter, as read by
        :meth:`page_dead_letters`; how many.

        For letters a page found describing nothing any more: the system holds what the
        source says (the refused change was undone at the source), so nothing waits to be
        fixed or delivered. Only the letter as read goes: one refused again meanwhile (another
        payload, from another process) stays.
        """
        with self.transaction() as db:
            cur = db.executemany(
                "DELETE FROM dead_letters WHERE system=? AND subject_id=? AND payload_hash IS ?",
                letters,
            )
        return int(cur.rowcount)

    def dead_lettered(self, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` have a dead letter for ``system`` (refused, or set aside)."""
        return self._listed("dead_letters", system, subject_ids)
