"""Flows: pull -> map -> identify -> suppress -> gate -> diff -> outbox -> deliver -> ack.

One :class:`Engine` runs flows over the systems of one config. A flow's source is pulled page
by page; each page is mapped to canonical people (someone whose e-mail address changed at the
source is moved to their new subject id first: :mod:`connector.moves`), checked against the
suppression list, gated and minimised per destination, compared with what each destination
last received (or last refused for good), and the changed payloads are sealed into the
outbox *together with* the cursor after that page (one transaction). Delivery workers drain
the outbox concurrently with the pull, in batches, and acknowledge each record (hash +
external id stored, outbox row deleted) in one transaction: that of the engine's next write
(usually the next page's), which commits the acknowledgements waiting before its own work.

A crash anywhere therefore loses nothing (the cursor never passes what is not queued; the
outbox survives) and duplicates nothing (deliveries are upserts, keyed on the e-mail or the
destination's own id, and the acknowledgement is idempotent). An acknowledgement still
waiting when the process dies is a delivery made again on the next run, as one cut short by a
crash always was.

The engine is the public face (:meth:`Engine.sync`, :meth:`Engine.ingest`, what an erasure or
a correction tells it) and the run loop that joins the two sides. The work is done by one
collaborator per concept, each built once per engine: :mod:`connector.pagetake` takes a
page, with :mod:`connector.moveplan` for its address moves; :mod:`connector.delivery`
drains the outbox, :mod:`connector.batchsend` sends one batch and settles its answer, and
:mod:`connector.upserts` makes the call; :mod:`connector.settling` holds the writes they
all commit through.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from connector import audit
from connector.adapter import Page
from connector.batchsend import BatchSender, Fresh
from connector.config import Config, FlowSettings
from connector.crypto import Keyring
from connector.delivery import WAITS_FOR_LEAVER, Changes, Delivery
from connector.emptying import Emptying
from connector.errors import KlantsyncError
from connector.ids import SystemIds
from connector.inflight import InFlight
from connector.moveplan import MovePlanner, source_people
from connector.pages import ReadAhead
from connector.pagetake import PageTaker
from connector.reports import DestinationReport, FlowReport, Progress, audit_summary
from connector.settling import Settling
from connector.state import Store
from connector.store_runs import RESTORED
from connector.systems import System, Systems
from connector.transforms import forget_phones
from connector.upserts import DOWN_AFTER

__all__ = [
    "DOWN_AFTER",
    "WAITS_FOR_LEAVER",
    "DestinationReport",
    "Engine",
    "FlowReport",
    "Progress",
    "flow_shape",
    "reads_in_full",
    "reread_reason",
    "source_people",
]

log = logging.getLogger("klantsync.engine")

#: The summary of a run that raised: what its report would have held is lost with it.
STOPPED = "the run stopped on an error; see the log"


def flow_shape(config: Config, flow: FlowSettings) -> str:
    """What the flow's cursor is set under (:meth:`Engine.shape`), from the mapping files
    as they are now."""
    systems = [flow.source, *sorted(flow.destinations)]
    parts = [f"{flow.source}>{','.join(sorted(flow.destinations))}"]
    parts += [f"{name}:{audit.file_sha256(config.systems[name].mapping)}" for name in systems]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def reread_reason(mark: str) -> str:
    """Why a cursor carries ``mark`` (:data:`~connector.store_runs.REREAD`)."""
    if mark.startswith(RESTORED):
        return (
            "a backup was restored: its outbox was emptied, and its cursor may be past "
            "the changes it held"
        )
    return "another flow's write took the place of one this flow had queued"


def reads_in_full(store: Store, flow: FlowSettings, shape: str) -> str | None:
    """Why the flow's next run reads its source in full although it has a cursor, as
    :meth:`Engine.run_flow` finds it; ``None`` when it resumes from its cursor (or has none
    to resume from: a first run reads everything)."""
    mark = store.reread_mark(flow.name, flow.source)
    if mark is not None:
        return reread_reason(mark)
    if store.get_cursor(flow.name, flow.source, shape) is None and store.get_cursor(
        flow.name, flow.source
    ):
        return "the flow's destinations or mappings changed since its cursor was set"
    return None


#: Called at named points of a flow ("pulled", "queued", "delivered", "acked"); tests raise
#: from it to simulate a crash at exactly that point.
Checkpoint = Callable[[str], None]


class Engine:
    """Runs flows for one config.

    Args:
        config: the loaded config.
        store: the state store.
        keyring: keys derived from the master key.
        systems: built systems (see :func:`connector.systems.open_systems`).
        checkpoint: optional hook called at named points (crash simulation in tests).

    The engine writes on ``store``'s connection, on the event loop. (A writer thread with a
    connection of its own cost about 4% more CPU, the loop's page cache being dropped at each
    of its commits, and no longer changed any destination's call rate or the webhooks'
    latency: benchmarks/README.md.)
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: Keyring,
        systems: Systems,
        *,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.keyring = keyring
        self.systems = systems
        self._checkpoint = checkpoint or (lambda _name: None)
        self._stopping = False
        # What was just sealed into the outbox, in clear, by outbox id: delivery usually takes
        # a row moments after it was queued, and then need not decrypt and parse it again.
        # Bounded, so a backlog (a rate-limited destination) costs no memory; rows not here
        # (older, or from an earlier run) are opened from the outbox as always. An entry is
        # used only for the same subject and payload hash, so it can never stand in for
        # another row that came to have its id.
        self._fresh: Fresh = {}
        #: The sync's writes, each committing first the acknowledged batches' outcomes that
        #: wait for it (connector/settling.py).
        self.settling = Settling(store)
        #: Subjects with a write in flight; an erasure waits on it (connector/inflight.py). A
        #: batch counts until its acknowledgement is committed; whoever waits commits it.
        self.in_flight = InFlight(self.flush)
        #: The identity map's ids to and from the form the store keeps (connector/ids.py).
        self.ids = SystemIds(keyring, systems)
        #: How many times subjects were moved (an address change), and queued rows sealed
        #: anew (a correction written into them); a batch read before either reads its rows
        #: again (connector/delivery.py).
        self.changes = Changes()
        #: Each flow's shape (see :meth:`shape`), worked out now, from the mapping files as
        #: they are when the config was loaded: worked out at a first run, an edit made to a
        #: file since (not yet in use) was recorded as the shape the run sent under.
        self._shapes: dict[str, str] = {}
        for flow in config.flows:
            self.shape(flow)
        #: What each write empties at its destination, and the field sets the store keeps
        #: for it (connector/emptying.py).
        self.emptying = Emptying(store)
        #: Sends a batch of outbox rows and settles the answer (connector/batchsend.py).
        self.batches = BatchSender(
            store, keyring, self.ids, self.emptying, self.settling, self._fresh, self._checkpoint
        )
        #: Finds and makes the address moves a page implies (connector/moveplan.py).
        #: Each flow's source: a flow whose queued write another's took is marked to read
        #: in full even before its first cursor is set (Store.mark_reread).
        sources = {flow.name: flow.source for flow in config.flows}
        self.planner = MovePlanner(
            store, keyring, self.ids, self.in_flight, self.settling, self.changes, sources=sources
        )
        #: Takes a page of a source: what it queues for each destination (connector/pagetake.py).
        self.taker = PageTaker(
            store,
            keyring,
            self.ids,
            self.emptying,
            self.settling,
            self.in_flight,
            self.planner,
            self._fresh,
            self.changes,
            self._checkpoint,
            judges=self._judges,
            shape=self.shape,
            sources=sources,
        )
        #: Drains the outbox to each destination while the pull runs (connector/delivery.py).
        self.delivery = Delivery(
            store,
            self.in_flight,
            self.settling,
            self.batches,
            self._fresh,
            self.changes,
            lambda: self._stopping,
        )

    async def sync(
        self,
        flow_name: str | None = None,
        *,
        full: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> list[FlowReport]:
        """Run one flow, or every flow in config order."""
        flows = [self.config.flow(flow_name)] if flow_name else self.config.flows
        if dry_run:
            # A real sync's later flow finds what an earlier one queued for a system both
            # feed (and sends nothing that is already there); a dry run queues nothing, so it
            # keeps those hashes in memory, for the systems two of its flows feed only.
            fed = Counter(name for flow in flows for name in flow.destinations)
            self.taker.foreseen = {name: {} for name, count in fed.items() if count > 1}
        try:
            return [
                await self.run_flow(flow, full=full, dry_run=dry_run, progress=progress)
                for flow in flows
            ]
        finally:
            self.taker.foreseen = {}

    async def run_flow(
        self,
        flow: FlowSettings,
        *,
        full: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> FlowReport:
        """Pull the flow's source and deliver to its destinations; return what happened."""
        source = self.systems[flow.source]
        shape = self.shape(flow)
        cursor = None if full else self.store.get_cursor(flow.name, source.name, shape)
        # Another flow's write took the place of one this flow had queued (see
        # Store.enqueue_page), or a restore emptied the outbox (connector/restore.py): read
        # in full, cleared once that read queued what it covers.
        reread = self.store.reread_mark(flow.name, source.name)
        if reread is not None and not full:
            log.info(
                f"{reread_reason(reread)}: reading its source in full",
                extra={"flow": flow.name},
            )
        elif cursor is None and not full and self.store.get_cursor(flow.name, source.name):
            log.info(
                "the flow's destinations or mappings changed since its cursor was set: "
                "reading its source in full",
                extra={"flow": flow.name},
            )
        if not dry_run:
            self._drop_unrouted()
        else:
            # What the real run would drop first: a dry run reads past those rows as well.
            self.taker.dry_unrouted = self.store.unrouted(self._routes())
        run_id = None if dry_run else self.store.start_run(flow.name)
        try:
            report = await self._run(
                flow, source.adapter.pull(cursor), dry_run, progress, run_id, retry_rejected=full
            )
        except Exception:
            # The store failed under the run (a full disk for a moment) or a bug met it: the
            # run is failed, not left "running" for status while nothing runs.
            if run_id is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.store.finish_run(run_id, "failed", json.dumps({"errors": [STOPPED]}))
            raise
        asked: frozenset[str] | None = getattr(source.adapter, "asked_fields", None)
        report.asked_fields = None if asked is None else sorted(asked)
        if not dry_run:
            # The run's outcome and its audit entry together: a run the store shows finished
            # is one the audit trail shows.
            with self.store.transaction():
                self.store.finish_run(
                    report.run_id or 0,
                    "failed" if report.failed else "ok",
                    json.dumps(report.as_dict()),
                )
                audit.append(self.store, "sync.run", audit_summary(report))
                if reread is not None and report.complete:
                    self.store.reread_done(flow.name, source.name, reread, shape)
        return report

    def shape(self, flow: FlowSettings) -> str:
        """A digest of what the flow's cursor depends on: its source, its destinations and
        the mapping files of each (their bytes, as ``config.loaded`` records them).

        A cursor set under another shape is not used: a destination added to the flow, or
        a field to a mapping, would otherwise never be offered the customers the cursor
        has passed (an incremental source, Shopify, reads only what changed since).
        """
        found = self._shapes.get(flow.name)
        if found is None:  # a flow the engine was not built with (tests build them by hand)
            found = self._shapes[flow.name] = flow_shape(self.config, flow)
        return found

    def _routes(self) -> list[tuple[str, str]]:
        """Every configured ``(flow, destination)``."""
        return [(f.name, d) for f in self.config.flows for d in f.destinations]

    def _judges(self, flow: FlowSettings, letter_flow: str, system: str) -> bool:
        """Whether ``flow`` may clear a dead letter ``letter_flow`` left in ``system``.

        Another flow's letter is that flow's to judge (its source may hold other data). A
        letter of a flow that no longer sends there (renamed, removed) has nobody else to
        judge it: any flow that sends there does, or it stayed for good.
        """
        return letter_flow == flow.name or (letter_flow, system) not in self._routes()

    def _drop_unrouted(self) -> None:
        """Delete what flows queued for systems they no longer send to (see
        :meth:`Store.drop_unrouted`), and say so."""
        routes = self._routes()
        dropped = self.settling.write(lambda store: store.drop_unrouted(routes))
        for (flow, system), count in dropped.items():
            log.info(
                "queued payloads dropped: their flow no longer sends to the system",
                extra={"flow": flow, "system": system, "count": count},
            )

    async def ingest(
        self, flow_name: str, records: Sequence[Mapping[str, Any]], *, full: bool = False
    ) -> FlowReport:
        """Run given source records (a webhook's, a targeted resync's) through one flow.

        The flow's cursor is not touched: these records are outside the paging of a pull,
        and a pull of the same flow may be moving it meanwhile. ``full`` offers again what a
        system refused for good, as a ``--full`` sync does (``resync --email E --full``).

        Recorded as a scheduled run is, by a ``sync.run`` entry (``targeted``: it ran given
        records, not a pull): what it suppressed (an erased person a webhook named again)
        and withheld is in the trail, not only in the report.
        """
        flow = self.config.flow(flow_name)

        async def one_page() -> AsyncIterator[Page]:
            # The whole of this run's pull: taken, the run reached its end (a stop then
            # leaves at most its deliveries unfinished, :func:`connector.jobworker.cut_short`).
            yield Page(records=list(records), cursor=None, complete=True)

        report = await self._run(
            flow,
            one_page(),
            dry_run=False,
            progress=None,
            retry_rejected=full,
            moves_cursor=False,
        )
        summary = {**audit_summary(report), "targeted": True}
        self.settling.write(lambda store: audit.append(store, audit.SYNC_RUN, summary))
        return report

    def request_stop(self) -> None:
        """Finish what is in flight, start nothing new (SIGTERM). Queued work stays queued."""
        self._stopping = True

    def forget(self, subject_ids: Sequence[str]) -> int:
        """Drop the payloads kept in clear for ``subject_ids`` (an erasure), and the phone
        numbers read so far; how many payloads.

        A delivery stopped by a fatal answer leaves its batches' entries here, and an
        erasure that deletes their outbox rows would otherwise leave the person's e-mail and
        fields in the daemon's memory until newer payloads pushed them out, months in a
        quiet shop."""
        gone = set(subject_ids)
        stale = [row_id for row_id, (sid, *_) in self._fresh.items() if sid in gone]
        for row_id in stale:
            del self._fresh[row_id]
        forget_phones()  # the numbers read are kept by what they were, not by whose
        return len(stale)

    def resealed(self, subject_ids: Sequence[str]) -> None:
        """Queued rows of ``subject_ids`` were sealed anew (a correction written into them):
        their copies in clear go, and a batch that read them before sends them as they are
        now (see ``Delivery._still_queued``).

        Such a batch may be waiting for a connection, not yet in flight, so the correction
        did not wait for it: sent as read, the old values landed over the correction and
        its acknowledgement took the corrected row out of the outbox.
        """
        self.forget(subject_ids)
        self.changes.reseals += 1

    def flush(self) -> None:
        """Commit the acknowledged batches' outcomes still waiting."""
        self.settling.flush()

    async def _run(
        self,
        flow: FlowSettings,
        pages: AsyncIterator[Page],
        dry_run: bool,
        progress: Progress | None,
        run_id: int | None = None,
        *,
        retry_rejected: bool = False,
        moves_cursor: bool = True,
    ) -> FlowReport:
        progress = progress or Progress()
        source = self.systems[flow.source]
        destinations = [self.systems[name] for name in flow.destinations]
        report = FlowReport(flow.name, flow.source, dry_run=dry_run)
        for dest in destinations:
            report.destinations[dest.name] = DestinationReport()
        report.run_id = run_id
        producer_done = asyncio.Event()
        drained = asyncio.Event()
        # Set when a destination's delivery crashed (a bug, the store failing under it): the
        # others stop taking batches, settle those under way, and the run raises. Left to go
        # on, they ran unowned after the run had failed and its flow was free again, and the
        # next run sent their rows a second time.
        halt = asyncio.Event()
        wake = {dest.name: asyncio.Event() for dest in destinations}
        workers = (
            []
            if dry_run
            else [
                asyncio.create_task(
                    self.delivery.drain(
                        flow, dest, report, producer_done, wake[dest.name], drained, progress, halt
                    )
                )
                for dest in destinations
            ]
        )

        def worker_done(task: asyncio.Task[None]) -> None:
            # A worker that ends (a fatal error) must not leave the pull waiting on it.
            drained.set()
            if not task.cancelled() and task.exception() is not None:
                halt.set()
                for event in wake.values():
                    event.set()

        for worker in workers:
            worker.add_done_callback(worker_done)
        ahead = ReadAhead(pages)
        try:
            while (page := await ahead.next()) is not None:
                await self.taker.take(
                    flow, source, destinations, page, report, dry_run, retry_rejected, moves_cursor
                )
                progress.pulled(flow.name, len(page.records), page.total)
                for event in wake.values():
                    event.set()
                if page.complete:
                    report.complete = True
                if workers:
                    await self._hold_back(destinations, report, workers, drained)
                if self._stopping:
                    report.errors.append("stopped before the pull finished; resumes next run")
                    break
        except KlantsyncError as exc:
            report.errors.append(str(exc))
            log.warning("pull failed", extra={"flow": flow.name, "error": str(exc)})
        finally:
            await ahead.close()
            producer_done.set()
            for event in wake.values():
                event.set()
            try:
                # Every worker ends before the run does, a crashed one's siblings included.
                ended = await asyncio.gather(*workers, return_exceptions=True)
                crashed = [e for e in ended if isinstance(e, BaseException)]
                if crashed:
                    raise crashed[0]
            finally:
                self.flush()
                # What is left in clear (deliveries stopped by a fatal answer, a run cut
                # short) goes with the run: an erasure by another process deletes its rows,
                # and nothing here would read them again to let it go.
                self._fresh.clear()
        # A dry run's count is what waits already: a real sync sends it first.
        waiting = self.store.outbox_counts(flow=flow.name)
        for name, dest_report in report.destinations.items():
            dest_report.left_queued = waiting.get(name, 0)
        return report

    # -- delivery side -----------------------------------------------------------------------

    async def _hold_back(
        self,
        destinations: Sequence[System],
        report: FlowReport,
        workers: Sequence[asyncio.Task[None]],
        drained: asyncio.Event,
    ) -> None:
        """Pull no further while every destination already has plenty queued.

        The pull keeps pace with the hungriest destination: one with less than a few rounds
        of batches waiting lets it go on. Pulling further ahead would only grow the outbox and
        take the event loop's time from the deliveries (the loop is one core).
        """
        while not self._stopping and not all(worker.done() for worker in workers):
            hungry = False
            for dest in destinations:
                dest_report = report.destinations[dest.name]
                high_water = max(200, 4 * dest.limits.batch_size * dest.limits.max_concurrency)
                if not dest_report.fatal and dest_report.backlog < high_water:
                    hungry = True
                    break
            if hungry:
                return
            drained.clear()
            await drained.wait()
