"""Consent at a system: opt-outs made there (migration 18), the latest subscribe or
unsubscribe heard of (migration 25), and whether one is the echo of a withdrawal klantsync
sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from connector.store_base import utcnow
from connector.store_marks import RESEND, UNSURE, WITHDRAWAL, before_resend
from connector.store_subjects import SubjectStore

__all__ = ["ConsentStore"]


class ConsentStore(SubjectStore):
    """Opt-outs and consent events at each system."""

    # -- opt-outs at a system (migration 18) ------------------------------------------------

    def opt_out(self, system: str, subject_id: str) -> None:
        """``subject_id`` opted out at ``system`` itself (unsubscribed there)."""
        self.db.execute(
            "INSERT OR IGNORE INTO opt_outs(system, subject_id, created_at) VALUES (?,?,?)",
            (system, subject_id, utcnow()),
        )

    def opt_in(self, system: str, subject_id: str) -> bool:
        """``subject_id`` subscribed at ``system`` again; whether they had opted out there."""
        cur = self.db.execute(
            "DELETE FROM opt_outs WHERE system=? AND subject_id=?", (system, subject_id)
        )
        return cur.rowcount > 0

    def latest_consent_event(self, system: str, subject_id: str, occurred_at: str) -> bool:
        """Record that an unsubscribe or subscribe of the subject at ``system`` happened at
        ``occurred_at`` (ISO 8601, as the system says it); whether it is not older than the
        latest one recorded. An older one is not recorded, and is not to be taken: the
        person's later choice stands (migration 25)."""
        cur = self.db.execute(
            "INSERT INTO consent_events(system, subject_id, occurred_at) VALUES (?,?,?) "
            "ON CONFLICT(system, subject_id) DO UPDATE SET occurred_at=excluded.occurred_at "
            "WHERE excluded.occurred_at >= consent_events.occurred_at",
            (system, subject_id, occurred_at),
        )
        return cur.rowcount > 0

    def opted_out(self, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` opted out at ``system`` itself."""
        if not self.db.execute("SELECT 1 FROM opt_outs LIMIT 1").fetchone():
            return set()  # nearly always: one seek, and a page costs nothing more
        return self._listed("opt_outs", system, subject_ids)

    def withdrawal_delivered(self, system: str, subject_id: str, within_seconds: float) -> bool:
        """Whether the last thing ``system`` took for the subject is a withdrawal of consent
        (:data:`WITHDRAWAL`) it took within the last ``within_seconds``."""
        numbers = self.subject_numbers([subject_id])
        if not numbers:
            return False
        row = self.db.execute(
            "SELECT payload_hash, delivered_at FROM delivered WHERE system=? AND subject_no=?",
            (system, numbers[subject_id]),
        ).fetchone()
        # Marked to send again (the person subscribed at the system since): no echo is due.
        if row is None or not str(row[0]).startswith(WITHDRAWAL):
            return False
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=within_seconds)
        return dt.datetime.fromisoformat(str(row[1])) >= since

    def withdrawal_queued(self, system: str, subject_id: str) -> bool:
        """Whether the outbox holds a withdrawal of consent (:data:`WITHDRAWAL`) for the
        subject and ``system``: waiting, or on its way (a batch stays queued until it is
        answered, and the system may report what it took before then)."""
        numbers = self.subject_numbers([subject_id])
        if not numbers:
            return False
        row = self.db.execute(
            "SELECT payload_hash FROM outbox WHERE system=? AND subject_no=?",
            (system, numbers[subject_id]),
        ).fetchone()
        return row is not None and before_resend(str(row[0])).startswith(WITHDRAWAL)

    def withdrawal_answered(self, system: str, subject_id: str) -> None:
        """The subject subscribed at ``system`` again themselves: a withdrawal it last took
        from klantsync is answered, and marked to send again (:data:`RESEND`), so an
        unsubscribe after it is not taken for that withdrawal's echo.

        One that may not have landed (:data:`UNSURE`: a restore's) is answered too, its mark
        made a correction's: their subscribe came after it, and sent again it unsubscribed
        them from what they had just subscribed to."""
        numbers = self.subject_numbers([subject_id])
        if numbers:
            self.db.execute(
                "UPDATE delivered SET payload_hash = ? || ':' || payload_hash "
                "WHERE system=? AND subject_no=? AND payload_hash LIKE ? || '%'",
                (RESEND, system, numbers[subject_id], WITHDRAWAL),
            )
            unsure = f"{RESEND}:{UNSURE}"
            self.db.execute(
                "UPDATE delivered SET payload_hash = ? || ':' || substr(payload_hash, ?) "
                "WHERE system=? AND subject_no=? AND payload_hash LIKE ? || '%'",
                (RESEND, len(unsure) + 1, system, numbers[subject_id], unsure + WITHDRAWAL),
            )
