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
from connector.crypto import Keyring, outbox_context
from connector.delivery import WAITS_FOR_LEAVER, Changes, Delivery
from connector.emptying import Emptying
from connector.errors import (
    KlantsyncError,
)
from connector.ids import SystemIds
from connector.inflight import InFlight
from connector.model import Person, earlier_email_forms, normalise_email
from connector.moveplan import MovePlanner, source_people
from connector.moves import (
    PagePlan,
    subjects_of_records,
)
from connector.pages import ReadAhead
from connector.reports import DestinationReport, FlowReport, Progress, audit_summary
from connector.settling import Settling
from connector.state import (
    RESEND,
    WITHDRAWAL,
    PageLetter,
    QueuedPayload,
    Store,
    before_resend,
    landed_unsure,
)
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
    "source_people",
]

log = logging.getLogger("klantsync.engine")

#: How many just-queued payloads the engine keeps in clear for delivery (see ``_fresh``).
FRESH_LIMIT = 4096

#: Records a page's work handles between turns of the event loop. A page is ~100 records of
#: mapping, hashing and sealing per destination: done in one go it held the loop for tens of
#: milliseconds, during which answers from destinations that take one call per record
#: (Mailchimp) waited and their connections sat idle. The lookups before and the commit
#: after stay as they were; what changes between slices (an acknowledgement, an erasure)
#: is caught where it always is: by the outbox's upsert and the suppression check at
#: delivery.
YIELD_EVERY = 10

#: The summary of a run that raised: what its report would have held is lost with it.
STOPPED = "the run stopped on an error; see the log"

#: Why a run left records of a page unwritten (``MovePlanner.plan``): no address, no
#: subject. Read again by the next run, once the source shows the other record's change.
WITHHELD = (
    "{count} record(s) not written: the address each has now is another source record's "
    "in the identity map, which the source still shows under it"
)

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
        #: In a dry run: the (flow, system) pairs a real run would drop first.
        self._dry_unrouted: list[tuple[str, str]] = []
        #: In a dry run of several flows: per system another flow of it feeds too, the hash
        #: each subject would have been queued under by the flows run before (see sync).
        self._foreseen: dict[str, dict[str, str]] = {}
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
        self.planner = MovePlanner(
            store, keyring, self.ids, self.in_flight, self.settling, self.changes
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
            self._foreseen = {name: {} for name, count in fed.items() if count > 1}
        try:
            return [
                await self.run_flow(flow, full=full, dry_run=dry_run, progress=progress)
                for flow in flows
            ]
        finally:
            self._foreseen = {}

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
        if cursor is None and not full and self.store.get_cursor(flow.name, source.name):
            log.info(
                "the flow's destinations or mappings changed since its cursor was set: "
                "reading its source in full",
                extra={"flow": flow.name},
            )
        if not dry_run:
            self._drop_unrouted()
        else:
            # What the real run would drop first: a dry run reads past those rows as well.
            self._dry_unrouted = self.store.unrouted(self._routes())
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
            systems = [flow.source, *sorted(flow.destinations)]
            parts = [f"{flow.source}>{','.join(sorted(flow.destinations))}"]
            parts += [
                f"{name}:{audit.file_sha256(self.config.systems[name].mapping)}" for name in systems
            ]
            found = hashlib.sha256("\n".join(parts).encode()).hexdigest()
            self._shapes[flow.name] = found
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
                await self._take_page(
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

    # -- pull side ---------------------------------------------------------------------------

    async def _take_page(
        self,
        flow: FlowSettings,
        source: System,
        destinations: Sequence[System],
        page: Page,
        report: FlowReport,
        dry_run: bool,
        retry_rejected: bool,
        moves_cursor: bool = True,
    ) -> None:
        people: dict[str, tuple[str | None, Person]] = {}
        unaddressed: list[str] = []  # record ids of the page's records without an address
        for n, raw in enumerate(page.records, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            report.pulled += 1
            person = source.mapping.inbound(raw, report.withheld_fields, report.unreadable_values)
            email = person.email
            if email is None or "@" not in email:
                report.invalid += 1
                record_id = source.mapping.record_id(raw)
                if record_id:
                    unaddressed.append(record_id)
                continue
            # Within a page the last occurrence of a subject wins, as it would across pages.
            # Known by the normalised address whatever the mapping's transforms: one that
            # kept capitals made another subject than the erasure's, which let them back.
            sid = self.keyring.subject_id(normalise_email(email))
            people[sid] = (source.mapping.record_id(raw), person)
        plan = await self.planner.plan(source, people, report)
        if not dry_run:
            plan = await self.planner.moved(source, people, report, plan)
        if plan.withheld:
            # Their address is another source record's in the identity map, and the source
            # did not show that person leaving it: written, they went under his ids.
            for sid in plan.withheld:
                del people[sid]
                log.info(
                    "record not written: its address is still another record's",
                    extra={"flow": flow.name, "subject": sid},
                )
            report.errors.append(WITHHELD.format(count=len(plan.withheld)))
        # Known records whose address was removed at the source: sent a withdrawal where a
        # consent-gated system got them (see _addressless). None on nearly every page.
        addressless = self._addressless(source, unaddressed, people, plan) if unaddressed else {}
        if addressless and not dry_run:
            # A write of theirs on its way (queued before, taken by delivery as the run
            # started) lands first: its answer gives the system's id, which the withdrawal
            # goes by. Read before it, the withdrawal went with no id, reached no one, and
            # counted as sent: the member the write subscribed stayed so for good.
            await self.in_flight.landed_everywhere(list(addressless))
        subject_ids = list(people)
        # Who is known here under a former address: a dry run reads them as the sync would
        # (not as new people), so it foresees what goes to them, an unsubscribe included.
        formerly: dict[str, str] = {}
        vacated: set[str] = set()  # addresses someone moved away from in this page
        if dry_run:
            formerly = {m.new: m.old for m in plan.moves}
            report.moved += sum(not m.set_apart for m in plan.moves)
        elif plan.moves:
            report.moved += sum(not move.set_apart for move in plan.moves)
            vacated = {move.old for move in plan.moves}
        suppressed_at = self.store.suppression_changes()
        suppressed = self._suppressed(source.name, people)
        report.suppressed += len(suppressed)
        payloads: list[QueuedPayload] = []
        envelopes: list[tuple[str, str, dict[str, Any]]] = []
        remarked: list[tuple[str, str, str]] = []
        unsent: list[tuple[str, str]] = []  # queued there, and not queued again now
        ungated: list[tuple[str, str]] = []  # queued there under a consent no longer given
        names = [dest.name for dest in destinations]
        queued_by, delivered_by, sent_by = self.store.page_hashes(
            names, [*subject_ids, *formerly.values(), *addressless]
        )
        # What a destination refused for good is not offered again as it was: it would be
        # refused again, and add a dead letter, on every sync. A --full sync retries. A
        # letter is read on a --full sync too, to see whether it still describes anything.
        letters_by = self.store.page_dead_letters(names, [*subject_ids, *addressless])
        outdated: list[tuple[str, str, str | None]] = []  # letters that describe nothing now
        if dry_run and self._dry_unrouted:
            # Rows the real run drops first (their flow no longer sends to the system) are
            # not what waits: the real run queues the person anew.
            stale = self.store.queued_by_flows(self._dry_unrouted, subject_ids)
            for system, sids in stale.items():
                for sid in sids:
                    queued_by.get(system, {}).pop(sid, None)
        for new, old in formerly.items():  # a dry run's moves, as the sync makes them
            for hashes in (*queued_by.values(), *delivered_by.values()):
                if old in hashes:
                    hashes[new] = hashes.pop(old)
            for sets in (*sent_by.queued.values(), *sent_by.delivered.values()):
                if old in sets:
                    sets[new] = sets.pop(old)
        for system, earlier in self._foreseen.items():  # what the dry run's earlier flows queued
            if system in queued_by:
                queued_by[system].update((sid, earlier[sid]) for sid in people if sid in earlier)
        for dest in destinations:
            dest_report = report.destinations[dest.name]
            queued = queued_by[dest.name]
            delivered = delivered_by[dest.name]
            queued_sent = sent_by.queued[dest.name]
            delivered_sent = sent_by.delivered[dest.name]
            letters = letters_by[dest.name]
            context = outbox_context(dest.name)
            foreseen = self._foreseen.get(dest.name) if dry_run else None
            # Whether the source records the consent this system needs. One that does not
            # cannot tell who withdrew it: its flow sends those people nothing here, not
            # even a withdrawal (read as one, everyone who opted in through another flow's
            # source was unsubscribed at each run of it, and asked to confirm at the next).
            purpose = dest.mapping.requires_consent
            tells = purpose is None or source.mapping.reads_consent(purpose)
            # Unsubscribed at the system itself (Mailchimp's own link): sent the withdrawal
            # and nothing more, whatever the source's consent says (migration 18).
            opted_out = self.store.opted_out(
                dest.name, [*subject_ids, *formerly.values(), *addressless]
            )
            opted_out |= {new for new, old in formerly.items() if old in opted_out}
            in_part = self._written_in_part(dest.name, letters, queued, delivered)
            pool = people
            # Only where the system takes a withdrawal by its id alone: HubSpot, say, refuses
            # a write without an address, which made a dead letter of every such customer.
            if (
                addressless
                and purpose is not None
                and tells
                and getattr(dest.adapter, "withdraws_by_id", False)
            ):
                held = (queued, delivered, in_part)
                pool = self._with_addressless(dest, people, addressless, held)
            for n, (sid, (_, person)) in enumerate(pool.items(), 1):
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if sid in suppressed:
                    if sid in queued:
                        unsent.append((dest.name, sid))
                    continue
                last = queued.get(sid, delivered.get(sid))
                writes = False  # a write of their fields, not a withdrawal
                if sid not in opted_out and dest.mapping.admits(person):
                    writes = True
                    fields = dest.mapping.outbound(person)
                    digest = self.keyring.payload_hash(dest.name, fields)
                    if last is not None and last != digest and dest.mapping.consent_renewed:
                        fields, digest = self._renewed(
                            dest, person, fields, digest, last, delivered.get(sid)
                        )
                elif not tells:
                    dest_report.gated += 1
                    continue
                elif (last is not None or sid in in_part) and dest.mapping.withdrawn:
                    # They were sent here under a consent they no longer give (or a write
                    # was refused after it made their record in part): tell the system (e.g.
                    # unsubscribe), and from then on send nothing else.
                    fields = dest.mapping.withdrawal(person)
                    bare = self.keyring.payload_hash(dest.name, fields)
                    digest = WITHDRAWAL + bare
                    sent = last or ""  # nothing for a write refused in part: none was sent
                    previous = before_resend(sent)
                    if not landed_unsure(sent) and (
                        previous == bare or previous.startswith(WITHDRAWAL)
                    ):
                        # Sent already: under the address they had then (they moved since),
                        # behind a correction's mark to send again, or before withdrawals
                        # were marked. Sent again, it unsubscribed a member who had
                        # subscribed anew through the audience's own form meanwhile. (One
                        # a restore found still queued may not have landed: it goes again.)
                        if last == bare and delivered.get(sid) == bare:
                            # Delivered before withdrawals were marked: its bare hash holds
                            # this address, and is known as a withdrawal only while the
                            # address stays. Marked now, it still is once they move.
                            remarked.append((dest.name, sid, digest))
                        last = digest
                    dest_report.withdrawn += 1
                else:
                    dest_report.gated += 1
                    if sid in queued:
                        ungated.append((dest.name, sid))
                    continue
                letter = letters.get(sid)
                if last == digest and not (
                    writes
                    and self.emptying.unheld(
                        flow.name,
                        source,
                        dest,
                        person,
                        fields,
                        (queued_sent.get(sid), delivered_sent.get(sid)),
                        (queued_sent if sid in queued else delivered_sent).get(sid),
                    )
                ):
                    dest_report.unchanged += 1
                    if (
                        letter is not None
                        and sid not in queued
                        and self._judges(flow, letter.flow, dest.name)
                    ):
                        # The system was last delivered what the source says now (a refused
                        # change undone at the source): the letter refuses nothing that is
                        # still to be sent. Kept, `status` listed it for good, and whoever
                        # took over an address it named was held back behind it for good
                        # (connector/moves.py).
                        outdated.append((dest.name, sid, letter.payload_hash))
                    continue
                if not retry_rejected and letter is not None and letter.payload_hash == digest:
                    dest_report.still_rejected += 1
                    continue
                dest_report.queued += 1
                fate = (
                    self.emptying.plan(
                        flow.name,
                        source,
                        dest,
                        person,
                        fields,
                        (queued_sent.get(sid), delivered_sent.get(sid)),
                    )
                    if writes and last is not None
                    else None
                )
                empty = fate.empty if fate is not None else None
                if empty:
                    dest_report.emptied += 1
                if dry_run:
                    if foreseen is not None:
                        foreseen[sid] = digest
                else:
                    envelope: dict[str, Any] = {"email": person.email, "fields": fields}
                    if empty:
                        envelope["clear"] = sorted(empty)
                    sealed = self.keyring.seal_json(envelope, context)
                    field_set = self.emptying.number(
                        flow.name, fields, fate.held if fate is not None else ()
                    )
                    payloads.append(QueuedPayload(dest.name, sid, sealed, digest, field_set))
                    envelopes.append((sid, digest, envelope))
        self._checkpoint("pulled")
        if dry_run:
            return
        if remarked:
            self.settling.write(lambda store: store.remark_delivered(remarked))
        if unsent:
            # A write kept from a former address (connector/moves.py) made while the person
            # consented would make a record for them here, and the payload before the move
            # would follow it; the page sends them nothing (a withdrawal, where one is due,
            # was queued into the row above, which keeps its former write to go first). The
            # row is held, not dropped: that write may have landed, and its address is what
            # the pending erasure must erase under too (it takes the row with the traces).
            self.settling.write(lambda store: store.hold_formers(unsent))
        if ungated:
            # Queued while they gave the consent this system needs, which they no longer
            # give, and it has no withdrawal to send: delivered, the write made or updated a
            # record of someone who withdrew the consent for it. (A former address's write
            # would make that record too: its row is held, unsent, for an erasure to find
            # the address by; consenting again, they are queued into it and it goes first.)
            self.settling.write(lambda store: store.drop_queued(ungated))
        if self.store.suppression_changes() != suppressed_at:
            # An erasure suppressed someone while the page was read. Asked again here, with
            # nothing awaited from here to the commit below, so a page is queued either
            # before an erasure's suppression (which then finds what it queued) or not at
            # all for whom it suppressed (see KindRunner._hold_source_records).
            late = self._suppressed(source.name, {**people, **addressless}) - suppressed
            if late:
                payloads, envelopes = self._without(late, payloads, envelopes, report)
                suppressed |= late
                report.suppressed += len(late)
        if vacated & people.keys():
            # Whoever took over an address vacated here is queued after the one who left it,
            # so their write lands after that one's, in the same batch or a later one (see
            # Delivery._after_leavers); queued before, it waited for the next run.
            order = sorted(range(len(payloads)), key=lambda n: payloads[n].subject_id in vacated)
            payloads = [payloads[n] for n in order]
            envelopes = [envelopes[n] for n in order]
        identities = [
            (sid, ext) for sid, (ext, _) in people.items() if ext and sid not in suppressed
        ]

        def queue(store: Store) -> list[int]:
            with store.transaction():
                if outdated:
                    store.drop_outdated_letters(outdated)
                return store.enqueue_page(
                    flow.name,
                    source.name,
                    payloads,
                    identities,
                    page.cursor,
                    move_cursor=moves_cursor,
                    shape=self.shape(flow),
                )

        ids = self.settling.write(queue)
        if addressless and any(payload.subject_id in addressless for payload in payloads):
            # A withdrawal took the place of a write queued before: a batch that read that
            # write and waits for a connection reads its rows again (see Delivery._still_queued).
            self.changes.reseals += 1
        for system, sid, _ in outdated:
            log.info(
                "dead letter cleared: the system holds what the source holds",
                extra={"system": system, "subject": sid},
            )
        self._fresh.update(
            (row_id, (*envelope, payload.payload))
            for row_id, envelope, payload in zip(ids, envelopes, payloads, strict=True)
        )
        while len(self._fresh) > FRESH_LIMIT:
            del self._fresh[next(iter(self._fresh))]
        self._checkpoint("queued")

    def _addressless(
        self,
        source: System,
        record_ids: Sequence[str],
        people: Mapping[str, tuple[str | None, Person]],
        plan: PagePlan,
    ) -> dict[str, tuple[str | None, Person]]:
        """The people the identity map knows by ``record_ids``, records of the page that
        came without a usable address: subject id -> (record id, a person with no field).

        The shop removed their address (Shopify keeps a customer with a phone alone, and
        drops the e-mail consent with the address). Nobody can be written without an
        address, but whoever a consent-gated system got must not stay subscribed there on
        a consent the shop no longer records: the page sends them the withdrawal, by the
        system's id (:meth:`_with_addressless`), and nothing else anywhere. Left out: an
        address a record of the page holds now, a person set apart by this page (another
        record took their address: the system's record under it is the taker's now), and
        whoever is suppressed (an erasure sends the rest).
        """
        known = subjects_of_records(self.store, source.name, record_ids)
        apart = {move.new for move in plan.moves if move.set_apart}
        found: dict[str, tuple[str | None, Person]] = {
            sid: (record_id, Person())
            for record_id, sid in known.items()
            if sid not in people and sid not in apart
        }
        for sid in self._suppressed(source.name, found):
            del found[sid]
        return found

    def _with_addressless(
        self,
        dest: System,
        people: dict[str, tuple[str | None, Person]],
        addressless: Mapping[str, tuple[str | None, Person]],
        held: tuple[Mapping[str, str], Mapping[str, str], set[str]],
    ) -> dict[str, tuple[str | None, Person]]:
        """``people`` and those of ``addressless`` that consent-gated ``dest`` got (or has a
        write queued for), for the page to send them its withdrawal as to anyone whose
        consent is gone.

        ``held`` is what is queued for ``dest`` and what it was delivered, by subject, and
        who it holds a record of in part. With no address, the withdrawal goes by the
        system's id for the person, read when it is delivered: a first write still queued
        is replaced by it, unsent, and reaches nobody if that write never landed. One whose
        id the identity map holds under someone else too is left alone: the record under
        that id is theirs as well (whoever took the address over).
        """
        queued, delivered, in_part = held
        reached = [s for s in addressless if s in queued or s in delivered or s in in_part]
        if not reached:
            return people
        ids = self.store.external_ids(dest.name, reached)
        sent = {
            sid: addressless[sid]
            for sid in reached
            if sid not in ids or self.store.subjects_for_external(dest.name, ids[sid]) == [sid]
        }
        return {**people, **sent} if sent else people

    def _written_in_part(
        self,
        system: str,
        letters: Mapping[str, PageLetter],
        queued: Mapping[str, str],
        delivered: Mapping[str, str],
    ) -> set[str]:
        """Those with a dead letter for ``system`` (``letters``) it holds a record of though
        nothing queued or delivered says so: a write it refused in part (one Mailchimp
        audience took it, another refused it) named the record it made (see
        :meth:`connector.batchsend.BatchSender.send`).

        They were sent something there, as a withdrawal of consent counts it: gated as if
        never sent, the one who opted out stayed subscribed where the write landed. Letters
        are few, so a page without any looks up nothing.
        """
        unsent = [sid for sid in letters if sid not in queued and sid not in delivered]
        if not unsent:
            return set()
        return set(self.store.external_ids(system, unsent))

    def _renewed(
        self,
        dest: System,
        person: Person,
        fields: dict[str, Any],
        digest: str,
        last: str,
        delivered: str | None,
    ) -> tuple[dict[str, Any], str]:
        """``fields`` and their hash, renewed where what ``dest`` holds is a withdrawal.

        Someone unsubscribed for a withdrawn consent who consents again is sent the mapping's
        ``consent_renewed`` with their fields (Mailchimp: asked to confirm, see its adapter).
        Once that landed, the same renewal is what they last got, and stays unchanged until
        their data changes: it is not sent again. A withdrawal is known by its mark
        (:data:`WITHDRAWAL`), whatever address it went under (they may have moved since),
        and behind a mark to send again (a correction reached the shop). Only a changed
        payload gets here, so an unchanged re-sync hashes nothing more.

        ``last`` is what waits in the outbox, else what was delivered (``delivered``).
        Where either is a withdrawal, the system holds one, or will once it lands: until a
        renewal lands, every payload is one. So a renewal still waiting is replaced by one
        with the newer fields; compared with the waiting one alone, it was replaced by a
        plain write, which Mailchimp applied to the unsubscribed member without asking them.
        """
        held = [before_resend(h) for h in (last, delivered) if h is not None]
        renewed = dest.mapping.renewal(fields)
        renewed_digest = self.keyring.payload_hash(dest.name, renewed)
        if any(h.startswith(WITHDRAWAL) for h in held):
            return renewed, renewed_digest
        if before_resend(last) == renewed_digest:
            if last.startswith(f"{RESEND}:") and not landed_unsure(last):
                # The renewal went, and a correction marked it to send again: the fields go
                # as they are. Sent as the renewal, it asked the member to confirm again
                # (one who unsubscribed at the system since was e-mailed), for a change of
                # data. A restore's mark (it may not have landed) sends the renewal.
                return fields, digest
            return renewed, renewed_digest
        # A withdrawal delivered before withdrawals were marked: its bare hash.
        legacy = self.keyring.payload_hash(dest.name, dest.mapping.withdrawal(person))
        if legacy in held:
            return renewed, renewed_digest
        return fields, digest

    @staticmethod
    def _without(
        late: set[str],
        payloads: list[QueuedPayload],
        envelopes: list[tuple[str, str, dict[str, Any]]],
        report: FlowReport,
    ) -> tuple[list[QueuedPayload], list[tuple[str, str, dict[str, Any]]]]:
        """A page's payloads and envelopes less those of ``late`` subjects, counted back."""
        kept: list[QueuedPayload] = []
        kept_envelopes: list[tuple[str, str, dict[str, Any]]] = []
        for payload, envelope in zip(payloads, envelopes, strict=True):
            if payload.subject_id in late:
                report.destinations[payload.system].queued -= 1
            else:
                kept.append(payload)
                kept_envelopes.append(envelope)
        return kept, kept_envelopes

    def _suppressed(self, source: str, people: Mapping[str, tuple[str | None, Person]]) -> set[str]:
        """Which of a page's subjects are on the suppression list: by e-mail, by phone, or
        by the source's own record id.

        An erasure lists the person's phone number and their record in each source too, so
        a restored backup that holds them under another address (even one the connector
        never saw) but the same number, or as the same shop record, is stopped as well.
        """
        if not self.store.anyone_suppressed():
            return set()  # nobody erased yet: no phone or record needs its keyed hash either
        phones: dict[str, list[str]] = {}
        records: dict[str, list[str]] = {}
        legacy: dict[str, str] = {}
        for sid, (external_id, person) in people.items():
            phone = person.get("phone")
            if isinstance(phone, str) and phone:
                phones.setdefault(self.keyring.subject_id(phone), []).append(sid)
            if external_id:
                records.setdefault(self.ids.record_key(source, external_id), []).append(sid)
            email = person.email
            for former in earlier_email_forms(email) if email is not None else ():
                # Erased before addresses were read as they are now (in NFC, with the
                # domain in punycode): suppressed under the form they had then.
                legacy[self.keyring.subject_id(former)] = sid
        listed = self.store.suppressed([*people, *phones, *records, *legacy])
        found = {sid for sid in people if sid in listed}
        found.update(sid for former_id, sid in legacy.items() if former_id in listed)
        for record_key, sids in records.items():
            if record_key in listed:
                found.update(sids)
        by_phone = {sid for phone, sids in phones.items() if phone in listed for sid in sids}
        if by_phone - found:
            # A number is shared in a household: someone the store knew already, under an
            # address of their own, is a housemate of the erased, not them. Stopped, they were
            # never synced again (not even their withdrawal of consent). Someone new with the
            # number may be the erased person under another address (a restored backup).
            known = self.store.subject_numbers(list(by_phone - found))
            found.update(sid for sid in by_phone if sid not in known)
        return found

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
