"""Draining the outbox to one destination while the pull runs.

One worker per destination of a flow takes that flow's rows in batches, up to the system's
``max_concurrency`` at once, and hands each to :class:`connector.batchsend.BatchSender`. A
batch holds its subjects in flight (:mod:`connector.inflight`) until its answer is
committed; one read before a move or a correction reads its rows again; and a write under an
address someone else moved away from waits for that person's change to land first
(:mod:`connector.moves`).

Apart from the engine because it is the consumer side of a run: the engine's pull queues
pages and wakes these workers, and nothing here reads the source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from connector.batchsend import BatchSender, Fresh
from connector.config import FlowSettings
from connector.inflight import InFlight
from connector.moves import in_rings, not_landed, queued_rows, vacated_by
from connector.reports import DestinationReport, FlowReport, Progress
from connector.settling import Settling
from connector.state import OutboxRow, Store
from connector.systems import System
from connector.upserts import DOWN_AFTER, Outage

__all__ = ["WAITS_FOR_LEAVER", "Changes", "Delivery"]

log = logging.getLogger("klantsync.engine")

#: Why a write is left queued behind someone who left its address (``Delivery._after_leavers``),
#: as a run's report and ``status`` give it: no address, no subject.
WAITS_FOR_LEAVER = (
    "held until the change of address of whoever had the address before lands in this "
    "system (it is queued or a dead letter there)"
)


class Changes:
    """How many times queued rows changed under the batches that read them.

    Subjects moved (an address change: :mod:`connector.moveplan`) and queued rows sealed
    anew (a correction written into them: ``Engine.resealed``); a batch read before either
    reads its rows again (:meth:`Delivery._still_queued`).
    """

    def __init__(self) -> None:
        self.moves = 0
        self.reseals = 0

    @property
    def seen(self) -> int:
        """Both counts together, as a batch notes them when its rows are read."""
        return self.moves + self.reseals


class Delivery:
    """Drains one engine's outbox, a worker per destination of a flow.

    Args:
        store: the state store.
        in_flight: the subjects with a write in flight.
        settling: the sync's writes (:mod:`connector.settling`).
        sender: sends one batch and settles its answer.
        fresh: the engine's payloads kept in clear (a row dropped here lets its copy go).
        changes: how many times queued rows changed under batches read before.
        stopping: whether a stop was asked for (SIGTERM): no new batch is taken.
    """

    def __init__(
        self,
        store: Store,
        in_flight: InFlight,
        settling: Settling,
        sender: BatchSender,
        fresh: Fresh,
        changes: Changes,
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.in_flight = in_flight
        self.settling = settling
        self.sender = sender
        self.fresh = fresh
        self.changes = changes
        self.stopping = stopping

    async def drain(
        self,
        flow: FlowSettings,
        dest: System,
        report: FlowReport,
        producer_done: asyncio.Event,
        wake: asyncio.Event,
        drained: asyncio.Event,
        progress: Progress,
        halt: asyncio.Event,
    ) -> None:
        """Drain ``dest``'s outbox while the pull runs, up to ``max_concurrency`` batches;
        ``halt`` stops taking batches (another destination's delivery crashed)."""
        dest_report = report.destinations[dest.name]
        slots = asyncio.Semaphore(max(1, dest.limits.max_concurrency))
        in_flight: set[asyncio.Task[None]] = set()
        crashed: list[BaseException] = []
        stop = asyncio.Event()
        outage = Outage()

        def settled(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()
            drained.set()
            if not task.cancelled() and task.exception() is not None:
                # An unexpected failure is a crash of this run: stop and re-raise below.
                crashed.append(task.exception())  # type: ignore[arg-type]
                stop.set()

        last_id = 0
        while not stop.is_set() and not self.stopping() and not halt.is_set():
            # Clear before looking, so a page queued right after the look still wakes us.
            wake.clear()
            # This flow's rows only: another flow feeding the same system delivers its own
            # (run side by side in the daemon, both read every row and wrote each twice).
            rows = self.store.outbox_batch(
                dest.name, last_id, dest.limits.batch_size, flow=flow.name
            )
            if not rows:
                if producer_done.is_set():
                    break
                await wake.wait()
                continue
            last_id = rows[-1].id
            changes_seen = self.changes.seen
            await slots.acquire()
            task = asyncio.create_task(
                self._deliver_batch(
                    flow, dest, rows, dest_report, stop, progress, outage, changes_seen
                )
            )
            in_flight.add(task)
            task.add_done_callback(settled)
        if in_flight:
            await asyncio.wait(set(in_flight))
        if crashed:
            raise crashed[0]
        if stop.is_set() and not dest_report.fatal and outage.down:
            report.errors.append(
                f"delivery to {dest.name} deferred for the rest of this run: {DOWN_AFTER} "
                f"batches in a row could not be delivered ({dest_report.deferred})"
            )
        elif stop.is_set():
            report.errors.append(f"delivery to {dest.name} stopped: {dest_report.fatal}")
        elif self.stopping() and self.store.outbox_batch(dest.name, last_id, 1, flow=flow.name):
            # A stop asked for (SIGTERM) left rows this run never took. Unsaid, the run was
            # a success (``last_success``, /readyz) and the daemon did not resume it at its
            # next start: a nightly cron's rows waited for the next night.
            report.errors.append(
                f"delivery to {dest.name} stopped with rows still queued; resumes next run"
            )

    async def _deliver_batch(
        self,
        flow: FlowSettings,
        dest: System,
        rows: list[OutboxRow],
        dest_report: DestinationReport,
        stop: asyncio.Event,
        progress: Progress,
        outage: Outage,
        changes_seen: int | None = None,
    ) -> None:
        if stop.is_set():
            dest_report.retry_later += len(rows)
            return
        # Held from before the suppression check until the answer is committed: an erasure
        # recorded meanwhile waits for this write to land before it deletes, and so does a
        # move of one of these subjects, and a correction. One made while the batch waited
        # for a connection (its rows read, not yet held) is caught here: they are read again.
        release = self.in_flight.hold(dest.name, [r.subject_id for r in rows])
        try:
            if changes_seen is not None and changes_seen != self.changes.seen:
                rows = self._still_queued(rows)
            left = vacated_by(self.store, [r.subject_id for r in rows])
            first = [r for r in rows if r.subject_id not in left]
            if first:
                await self.sender.send(flow, dest, first, dest_report, stop, progress, outage)
            taking = [r for r in rows if r.subject_id in left]
            if taking and not stop.is_set():
                taking = await self._after_leavers(dest, taking, left, rows, dest_report)
            elif taking:
                dest_report.retry_later += len(taking)
                taking = []
            if taking:
                await self.sender.send(flow, dest, taking, dest_report, stop, progress, outage)
        finally:
            if self.settling.waiting:
                # Let go once the acknowledgement is committed: by the next write, or by
                # whoever waits for these subjects (woken to commit it).
                self.settling.release_after(release)
                self.in_flight.answered()
            else:
                release()

    async def _after_leavers(
        self,
        dest: System,
        taking: list[OutboxRow],
        left: Mapping[str, set[str]],
        batch: list[OutboxRow],
        dest_report: DestinationReport,
    ) -> list[OutboxRow]:
        """Those of ``taking`` (people under an address someone else moved away from, see
        connector/moves.py) whose writes may go now: the leaver's change of address has
        landed in ``dest``.

        Written before it, the taker's write found the leaver's record under the address
        (Pipedrive looks a person up by e-mail; Mailchimp's member is the address) and
        wrote onto it, and the identity map gave the leaver's record to the taker: their
        next change overwrote it, their erasure deleted it. The leavers of this batch were
        written first; one in an earlier batch is waited for (only earlier ones: two batches
        never wait on each other). A leaver whose write is still queued (it failed, or waits
        behind this batch) or was refused (a dead letter: the system's record of him may
        still hold the address) keeps the taker's write queued for a later try, until his
        change lands (a dead letter fixed and delivered). People who wait on each other in
        a ring (see ``moves.in_rings``) are not held: nothing they wait for could land.
        """
        leavers = sorted({sid for row in taking for sid in left[row.subject_id]})
        # An acknowledged write leaves the outbox once its outcome is committed.
        self.settling.flush()
        waiting = queued_rows(self.store, dest.name, leavers)
        start = min(row.id for row in batch)
        earlier = [sid for sid, row_id in waiting.items() if row_id < start]
        if earlier:
            await self.in_flight.landed(dest.name, earlier)
            self.settling.flush()
        behind = not_landed(self.store, dest.name, left)
        blocked = set(behind) - in_rings(self.store, dest.name, behind) if behind else set()
        held = [row for row in taking if row.subject_id in blocked]
        if held:
            dest_report.retry_later += len(held)
            dest_report.deferred = WAITS_FOR_LEAVER
            for row in held:
                log.info(
                    "write held until the address's former holder's change of address lands",
                    extra={"system": dest.name, "subject": row.subject_id},
                )
        return [row for row in taking if row.subject_id not in blocked]

    def _still_queued(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """The rows a move since they were read has not dropped or given to the new id, each
        with the payload it holds now.

        A move drops the old address's queued rows (the page queues the current data); a
        batch read before it would otherwise still send them, and their acknowledgement,
        under a subject the move emptied, would record nothing: the new address then went
        out as a second record. A row the move gave to the new id (its write kept to go
        first) waits for a later batch, as the new id's (the page queues the current data
        into it, under a new outbox id): acknowledged as read here, it left the outbox with
        that write unsent.

        A row a correction sealed anew since (``Engine.resealed``) goes with the corrected
        values: the payload read before was sent over the correction, and its acknowledgement
        then took the corrected row out of the outbox.
        """
        queued = self.store.queued_now([row.id for row in rows])
        kept: list[OutboxRow] = []
        for row in rows:
            now = queued.get(row.id)
            if now is not None and now[0] == row.subject_no:
                kept.append(row._replace(payload=now[1]))
            else:
                self.fresh.pop(row.id, None)
        return kept
