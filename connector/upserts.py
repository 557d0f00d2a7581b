"""One write call to a destination, and whether the destination is down.

A batch goes to the adapter's ``upsert`` in one call; a batch the vendor refuses as a whole
is sent again record by record to find the one it refuses. Each call's outcome is counted
by the run's :class:`Outage` for that destination: several calls in a row that cannot reach
it stop the run's delivery there, and the rest waits in the outbox for the next run.

Apart from :mod:`connector.batchsend` because it knows nothing of the outbox or the store:
only the adapter, the records, and the errors of :mod:`connector.errors`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from connector.adapter import OutboundRecord, UpsertResult
from connector.errors import (
    FatalRemoteError,
    KlantsyncError,
    RecordError,
    RemoteError,
    RetryableError,
    system_down,
)
from connector.reports import DestinationReport
from connector.systems import System

__all__ = ["DOWN_AFTER", "Outage", "call", "deferred", "reason", "upsert"]

log = logging.getLogger("klantsync.engine")

#: Calls in a row that could not reach a system (see :func:`system_down`) before a run
#: stops delivering to it and leaves the rest queued for the next run.
DOWN_AFTER = 3


async def upsert(
    dest: System,
    records: list[OutboundRecord],
    dest_report: DestinationReport,
    stop: asyncio.Event,
    outage: Outage,
) -> list[UpsertResult]:
    """Upsert a batch; isolate records when the vendor rejects a whole batch."""
    try:
        results, failure = await call(dest, records, dest_report, stop)
        outage.observe(failure, results)
        return results
    except RecordError as exc:
        outage.observe(None)  # the system answered
        if len(records) == 1:
            return [UpsertResult(records[0].ref, "failed", reason=reason(exc))]
    # The vendor refused the batch as a whole; send one by one to find the culprit.
    results = []
    for n, record in enumerate(records):
        if stop.is_set():  # a call met a 401, or the system is down: send nothing more
            results += deferred(records[n:], "delivery stopped")
            break
        try:
            got, failure = await call(dest, [record], dest_report, stop)
        except RecordError as exc:
            results.append(UpsertResult(record.ref, "failed", reason=reason(exc)))
            continue
        results += got
        outage.observe(failure, got)
        if failure is not None and system_down(failure):
            # One record's retries ran out against a system that is down: each other
            # record's would too (a batch of 100 was 800 calls). They wait, unsent. A
            # record the vendor chokes on (a 500 every try) is only deferred itself.
            results += deferred(records[n + 1 :], reason(failure))
            break
    return results


async def call(
    dest: System,
    records: list[OutboundRecord],
    dest_report: DestinationReport,
    stop: asyncio.Event,
) -> tuple[list[UpsertResult], RemoteError | None]:
    """One write call: its results, and the error the call itself failed with (every
    record deferred after all retries, or delivery stopped), if it did. A refusal of the
    batch as a whole is raised (:class:`RecordError`)."""
    dest_report.requests += 1
    try:
        return await dest.adapter.upsert(records), None
    except RetryableError as exc:
        log.warning("delivery deferred", extra={"system": dest.name, "error": str(exc)})
        return deferred(records, reason(exc)), exc
    except FatalRemoteError as exc:
        log.error("delivery stopped", extra={"system": dest.name, "error": str(exc)})
        dest_report.fatal = str(exc)
        stop.set()
        return deferred(records, reason(exc)), exc


class Outage:
    """Calls in a row a run's delivery to one system could not get through."""

    def __init__(self) -> None:
        self.in_a_row = 0
        self.down = False

    def observe(self, failure: RemoteError | None, results: Sequence[UpsertResult] = ()) -> None:
        """Count one call's outcome: the error it failed with, or (``None``) its results.
        Adapters that write record by record (Mailchimp, Pipedrive) answer a system that is
        down with every result failed ``unreachable``. A failure that says nothing of the
        system (a 500, as an error or as every record's result) neither counts nor resets:
        the system answered, and the next call tells."""
        unreachable = bool(results) and all(r.unreachable for r in results)
        if unreachable or (failure is not None and system_down(failure)):
            self.in_a_row += 1
            self.down = self.down or self.in_a_row >= DOWN_AFTER
        elif failure is None and any(r.outcome != "failed" or not r.retryable for r in results):
            self.in_a_row = 0  # something was written, or refused: the system answered


def deferred(records: Sequence[OutboundRecord], why: str) -> list[UpsertResult]:
    """``records`` left queued, unsent or unanswered, for the next try."""
    return [UpsertResult(r.ref, "failed", reason=why, retryable=True) for r in records]


def reason(exc: KlantsyncError) -> str:
    """What a failed record's result says of ``exc``: its status (or kind) and detail."""
    status = getattr(exc, "status", None)
    detail = getattr(exc, "detail", "")
    parts = [str(status) if status is not None else type(exc).__name__]
    if detail:
        parts.append(detail)
    return " ".join(parts)
