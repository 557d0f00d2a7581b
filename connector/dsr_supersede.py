"""The open corrections an erasure of the same person supersedes.

What a correction had not written when the person asked to be erased is not written now:
its unsettled parts are closed as ``superseded`` naming the erasure, and it completes with a
receipt that says so. An access request is not superseded: the person may want their copy
and their erasure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from connector.dsr_servicebase import ServiceBase
from connector.dsr_store import RequestRow

__all__ = ["Supersession"]

log = logging.getLogger("klantsync.dsr")


class Supersession(ServiceBase):
    """Closes the corrections of a person being erased."""

    def supersede_corrections(self, erasure: RequestRow, subject_ids: Sequence[str]) -> None:
        """Close the open corrections of ``subject_ids`` that ``erasure`` supersedes; inside
        the write transaction that records the erasure (or widens it to them).

        A correction left open (a vendor down when it ran) was retried after the person
        asked to be erased: its write reached the systems as the erasure deleted the person
        there, or after (an update of a contact the erasure was about to delete), and it
        stayed open against its deadline for someone who is gone. What it had not written
        is not written now: each such part is ``superseded``, naming the erasure, and the
        correction completes with a receipt that says so (``superseded_by``). A run of it
        under way records nothing more (the request is completed: DsrStore.set_system and
        KindRunner._save refuse it) and asks no system again (KindRunner._askable). An
        access request is not superseded: the person may want their copy and their erasure.
        """
        for correction in self.db.open_corrections(list(dict.fromkeys(subject_ids))):
            self._supersede(correction, erasure.id)

    def _supersede(self, correction: RequestRow, erasure_id: str) -> None:
        """Close ``correction``'s unsettled parts as superseded by ``erasure_id``, a system
        configured since it opened included, and complete it."""
        with self.rt.store.transaction():
            for name in self.rt.systems:
                self.db.add_system(correction.id, name)
            closed = self.db.supersede(correction.id, erasure_id)
            if closed:
                self.audit("dsr.superseded", correction, superseded_by=erasure_id, systems=closed)
            self._complete_if_done(correction)
        log.info(
            "correction superseded by erasure",
            extra={"request": correction.id, "erasure": erasure_id},
        )

    def _superseded(self, row: RequestRow) -> bool:
        """Whether ``row``, an open correction, is of a person erased (or being erased)
        since it was asked: closed then as :meth:`supersede_corrections` closes it.

        For a correction whose erasure was recorded without closing it (by an earlier
        version, or under an address the erasure reached only later): its retry must not
        write the corrected data to the systems the erasure deletes the person from.
        """
        if row.kind != "rectify":
            return False
        erasure = self.db.erasure_suppressing([row.subject_id])
        if erasure is None:
            return False
        self._supersede(row, erasure)
        return True
