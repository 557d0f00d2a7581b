"""The suppression list: people an erasure keeps from being synced again (by keyed id),
held in memory while it is short and has not changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from connector.store_base import StoreBase, rows_in, utcnow

__all__ = ["HELD_PHONE", "SUPPRESSION_HELD_MAX", "SuppressionStore"]

#: Suppression entries held in memory at most (keyed HMAC ids, ~100 bytes each); a longer
#: list is asked in SQL (:meth:`Store.suppressed`).
SUPPRESSION_HELD_MAX = 100_000

#: The suppression kind of a number an erasure read from the person's records in a source
#: (not given with the request): lifted with the address when the person is readmitted.
HELD_PHONE = "erasure:held_phone"


class SuppressionStore(StoreBase):
    """The suppression list."""

    def suppression_changes(self) -> int:
        """How many times the suppression list has changed (kept by triggers, migration 12)."""
        (changes,) = self.db.execute("SELECT n FROM suppression_changes").fetchone()
        return int(changes)

    def suppressed(self, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` are on the suppression list.

        Answered from a copy of the list held in memory, read again whenever the list's
        change count (kept by triggers, whoever writes: migration 12) has moved since; one
        row's read instead of an indexed lookup per id, three times a page during a sync. The
        count is read before the list, so a change made in between is read again next time,
        never missed. A list longer than :data:`SUPPRESSION_HELD_MAX` is asked in SQL.
        """
        listed = self._suppression_list()
        if listed is not None:
            return {sid for sid in subject_ids if sid in listed}
        query = "SELECT subject_id FROM suppression WHERE subject_id IN (?...)"
        return {r[0] for r in rows_in(self.db, query, subject_ids)}

    def anyone_suppressed(self) -> bool:
        """Whether the suppression list holds anyone at all (a new store's does not)."""
        listed = self._suppression_list()
        if listed is not None:
            return bool(listed)
        return self.db.execute("SELECT 1 FROM suppression LIMIT 1").fetchone() is not None

    def _suppression_list(self) -> frozenset[str] | None:
        """The suppression list as it is now; ``None``: ask SQL (too long, or a transaction).

        Inside a transaction of this connection the count may include its own changes not
        committed yet, which a rollback takes back: a copy read then could later match a
        count that other changes reached. So the copy is only read, and used, outside one,
        where every count seen is a committed one and counts only grow.
        """
        if self.db.in_transaction:
            return None
        (changes,) = self.db.execute("SELECT n FROM suppression_changes").fetchone()
        if changes != self._suppression_read_at:
            rows = self.db.execute(
                "SELECT subject_id FROM suppression LIMIT ?", (SUPPRESSION_HELD_MAX + 1,)
            ).fetchall()
            held = len(rows) <= SUPPRESSION_HELD_MAX
            self._suppression = frozenset(row[0] for row in rows) if held else None
            self._suppression_read_at = changes
        return self._suppression

    def unsuppress(self, subject_ids: Sequence[str]) -> int:
        """Take ``subject_ids`` off the suppression list (connector/readmit.py); how many."""
        with self.transaction() as db:
            cur = db.executemany(
                "DELETE FROM suppression WHERE subject_id = ?", [(sid,) for sid in subject_ids]
            )
        return int(cur.rowcount)

    def suppress(self, subject_ids: Iterable[str], kind: str, request_id: str | None) -> None:
        """Put ``subject_ids`` on the suppression list under ``request_id`` (an entry there
        stays as it is, but for a number one erasure read from a source).

        The list keeps one entry per id, and a :data:`HELD_PHONE` entry is lifted when its
        erasure's person is readmitted. A number one erasure read that another asks for too
        (a housemate's ``--phone``, or read from their record as well) becomes a plain
        erasure entry of the later request: readmitting either person must not lift what
        the other's erasure still asks for (it is lifted only when given with ``--phone``).
        """
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO suppression(subject_id, kind, request_id, created_at) "
                "VALUES (?1,?2,?3,?4) ON CONFLICT(subject_id) DO UPDATE SET "
                "kind='erasure', request_id=excluded.request_id "
                "WHERE suppression.kind=?5 AND (excluded.kind!=?5 "
                "OR suppression.request_id IS NOT excluded.request_id)",
                [(sid, kind, request_id, utcnow(), HELD_PHONE) for sid in subject_ids],
            )
