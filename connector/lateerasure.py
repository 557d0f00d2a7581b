"""People erased while their write was on its way to a system: their rows leave the outbox,
and what the write may have made there is erased again.

Apart from sending a batch (:mod:`connector.batchsend`) because it is the erasure's side of
delivery: an erasure run by another process cannot see this one's writes in flight, so each
answer is checked against the suppression list before it is settled.
"""

from __future__ import annotations

import logging
from typing import Any

from connector import audit
from connector.adapter import OutboundRecord, Subject, UpsertResult
from connector.errors import KlantsyncError
from connector.reports import DestinationReport
from connector.settling import Settling
from connector.state import OutboxRow, Store
from connector.systems import System

__all__ = ["LateErasure"]

log = logging.getLogger("klantsync.engine")


class LateErasure:
    """Settles the rows of people erased while their write was on its way.

    Args:
        store: the state store.
        settling: the sync's writes (:mod:`connector.settling`).
    """

    def __init__(self, store: Store, settling: Settling) -> None:
        self.store = store
        self.settling = settling

    async def settle(
        self,
        dest: System,
        records: list[OutboundRecord],
        by_ref: dict[str, OutboxRow],
        results: list[UpsertResult],
        dest_report: DestinationReport,
    ) -> list[UpsertResult]:
        """Settle the rows of people erased while their write was on its way; the rest.

        An erasure run by another process (a CLI command beside the daemon) cannot see this
        one's writes in flight, and may have verified the person absent before this write
        landed. So the list is read again: whoever is on it now leaves the outbox, never as
        a dead letter (that would keep their sealed record), and is erased in ``dest`` once
        more if the write landed or may have (a retryable failure: a timeout, say, or a
        refusal that names the record it made in part).
        """
        late = self.store.suppressed(list({by_ref[r.ref].subject_id for r in results}))
        if not late:
            return results
        erase: list[tuple[OutboxRow, OutboundRecord]] = []
        refused: list[OutboxRow] = []
        outcome = {result.ref: result for result in results}
        for record in records:
            row, result = by_ref[record.ref], outcome.get(record.ref)
            if result is None or row.subject_id not in late:
                continue
            if result.outcome == "failed" and not result.retryable and not result.external_id:
                refused.append(row)  # nothing landed (a refusal written in part says its id)
            else:
                erase.append(
                    (row, record._replace(external_id=result.external_id or record.external_id))
                )
        if refused:
            self.settling.write(lambda store: store.drop_outbox([row.id for row in refused]))
            dest_report.suppressed_at_delivery += len(refused)
        await self._erase_again(dest, erase, dest_report)
        settled = {str(row.id) for row in refused} | {str(row.id) for row, _ in erase}
        return [r for r in results if r.ref not in settled]

    async def _erase_again(
        self,
        dest: System,
        rows: list[tuple[OutboxRow, OutboundRecord]],
        dest_report: DestinationReport,
    ) -> None:
        """Erase in ``dest`` what these rows of erased people may have written there.

        The rows leave the outbox either way, each with an audit entry (hash id only) saying
        whether the erasure worked, and whether it found what the write made: the person's
        erasure, whose own call then finds nothing, reads it there, and does not certify
        that the system held nobody (``DsrStore.erased_on_arrival``). One that failed is
        counted as not erased: the run then reports a failure, and the log names the system
        (an erasure asked again reaches it).
        """
        if not rows:
            return
        outcomes: list[tuple[OutboxRow, dict[str, Any]]] = []
        for row, record in rows:
            subject = Subject(email=record.email, external_id=record.external_id)
            try:
                erased = await dest.adapter.erase(subject)
                outcomes.append((row, {"system": dest.name, "erased": True, "found": erased.found}))
            except KlantsyncError as exc:
                outcomes.append((row, {"system": dest.name, "erased": False}))
                log.error(
                    "a write for an erased person landed and could not be erased again",
                    extra={"system": dest.name, "subject": row.subject_id, "error": str(exc)},
                )

        def settle(store: Store) -> None:
            with store.transaction():
                store.drop_outbox([row.id for row, _ in outcomes])
                kind = audit.SYNC_ERASED_ON_ARRIVAL
                audit.append_many(store, [(kind, said, row.subject_id) for row, said in outcomes])

        self.settling.write(settle)
        dest_report.suppressed_at_delivery += len(outcomes)
        dest_report.not_erased += sum(not said["erased"] for _, said in outcomes)
