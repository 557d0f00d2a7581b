"""Taking one page of a source: what it queues for each destination.

Each record is mapped to a canonical person and known by the subject id of their address;
the page's address moves are made first (:mod:`connector.moveplan`). Then, per destination:
the suppression list, the consent gate and the mapping's minimisation, a comparison with
what the system last received (or refused for good), and the changed payloads sealed into
the outbox *together with* the cursor after the page, in one transaction. A known record
whose address the source removed is sent a withdrawal of consent where a consent-gated
system got it, by the system's id.

Apart from the engine because it is the producer side of a run and the bulk of the per-record
work; the engine's run loop hands it pages and wakes delivery after each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connector.adapter import Page
from connector.batchsend import Fresh
from connector.config import FlowSettings
from connector.crypto import Keyring, outbox_context
from connector.delivery import Changes
from connector.emptying import Emptying
from connector.ids import SystemIds
from connector.inflight import InFlight
from connector.model import Person, normalise_email
from connector.moveplan import MovePlanner
from connector.pagesuppression import suppressed_on_page
from connector.renewal import renewed
from connector.reports import FlowReport
from connector.settling import Settling
from connector.state import (
    WITHDRAWAL,
    QueuedPayload,
    Store,
    before_resend,
    landed_unsure,
)
from connector.systems import System
from connector.transforms import forget_phones
from connector.wording import counted

__all__ = ["FRESH_LIMIT", "WITHHELD", "YIELD_EVERY", "PageTaker"]

log = logging.getLogger("klantsync.engine")

#: How many just-queued payloads the engine keeps in clear for delivery (see ``Engine._fresh``).
FRESH_LIMIT = 4096

#: Records a page's work handles between turns of the event loop. A page is ~100 records of
#: mapping, hashing and sealing per destination: done in one go it held the loop for tens of
#: milliseconds, during which answers from destinations that take one call per record
#: (Mailchimp) waited and their connections sat idle. The lookups before and the commit
#: after stay as they were; what changes between slices (an acknowledgement, an erasure)
#: is caught where it always is: by the outbox's upsert and the suppression check at
#: delivery.
YIELD_EVERY = 10

#: Why a run left records of a page unwritten (``MovePlanner.plan``): no address, no
#: subject. Read again by the next run, once the source shows the other record's change.
WITHHELD = (
    "{records} not written: the address each has now is another source record's "
    "in the identity map, which the source still shows under it"
)


class PageTaker:
    """Takes the pages of one engine's runs.

    Args:
        store: the state store.
        keyring: keys derived from the master key.
        ids: the identity map's ids to and from the form the store keeps.
        emptying: what each write empties at its destination.
        settling: the sync's writes (:mod:`connector.settling`).
        in_flight: the subjects with a write in flight.
        planner: finds and makes a page's address moves.
        fresh: the engine's payloads kept in clear: what a page queued is added here.
        changes: counts the queued rows a page sealed anew.
        checkpoint: the engine's hook called at "pulled" and "queued".
        judges: whether a flow may clear a dead letter another flow left in a system
            (``Engine._judges``).
        shape: a flow's shape, which its cursor is set under (``Engine.shape``).
        sources: each configured flow's source (a flow whose queued write a page takes
            reads in full next: :meth:`connector.state.Store.enqueue_page`).
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        ids: SystemIds,
        emptying: Emptying,
        settling: Settling,
        in_flight: InFlight,
        planner: MovePlanner,
        fresh: Fresh,
        changes: Changes,
        checkpoint: Callable[[str], None],
        *,
        judges: Callable[[FlowSettings, str, str], bool],
        shape: Callable[[FlowSettings], str],
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.sources = dict(sources or {})
        self.store = store
        self.keyring = keyring
        self.ids = ids
        self.emptying = emptying
        self.settling = settling
        self.in_flight = in_flight
        self.planner = planner
        self.fresh = fresh
        self.changes = changes
        self.checkpoint = checkpoint
        self.judges = judges
        self.shape = shape
        #: In a dry run: the (flow, system) pairs a real run would drop first.
        self.dry_unrouted: list[tuple[str, str]] = []
        #: In a dry run of several flows: per system another flow of it feeds too, the hash
        #: each subject would have been queued under by the flows run before (``Engine.sync``).
        self.foreseen: dict[str, dict[str, str]] = {}

    async def take(
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
        """Map, check, gate and compare ``page``'s records for each of ``destinations``, and
        queue what changed with the cursor after the page (one transaction); a dry run
        counts what it would queue."""
        people: dict[str, tuple[str | None, Person]] = {}
        unaddressed: list[str] = []  # record ids of the page's records without an address
        record_ids = [source.mapping.record_id(raw) for raw in page.records]
        # A record read again later in the pull is taken as it was read last, as it would be
        # across pages: an incremental source (Shopify, Pipedrive, HubSpot's search) lists a
        # record changed while it is read once more, at the end. Pages taken together hold
        # both readings; the earlier one taken too, a changed address made a second subject
        # of the same record, never moved: its stale address was written as a person of its
        # own, and stayed out of reach of the customer's erasure.
        latest = {record_id: n for n, record_id in enumerate(record_ids) if record_id}
        for n, (raw, record_id) in enumerate(zip(page.records, record_ids, strict=True)):
            if (n + 1) % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            report.pulled += 1
            if record_id and latest[record_id] != n:
                continue  # read again further on
            person = source.mapping.inbound(raw, report.withheld_fields, report.unreadable_values)
            email = person.email
            if email is None or "@" not in email:
                report.invalid += 1
                if record_id:
                    unaddressed.append(record_id)
                continue
            # Known by the normalised address whatever the mapping's transforms: one that
            # kept capitals made another subject than the erasure's, which let them back.
            sid = self.keyring.subject_id(normalise_email(email))
            taken = people.get(sid)
            if taken is not None and taken[0] != record_id:
                # Another record of the page has this address (Pipedrive keeps two persons
                # under one e-mail). The records before this one are taken first, as they
                # would be on a page of their own: whoever the identity map ties the address
                # to keeps it, and the other is held back and said. Kept in one page, the
                # last silently replaced the first, so which person a system got depended
                # on how the source's pages fell (and fall together, connector/pages.py).
                await self._take_people(
                    flow,
                    source,
                    destinations,
                    people,
                    unaddressed,
                    None,
                    report,
                    dry_run,
                    retry_rejected,
                    moves_cursor=False,
                )
                people, unaddressed = {}, []
            people[sid] = (record_id, person)
        await self._take_people(
            flow,
            source,
            destinations,
            people,
            unaddressed,
            page.cursor,
            report,
            dry_run,
            retry_rejected,
            moves_cursor,
        )

    async def _take_people(
        self,
        flow: FlowSettings,
        source: System,
        destinations: Sequence[System],
        people: dict[str, tuple[str | None, Person]],
        unaddressed: list[str],
        cursor: str | None,
        report: FlowReport,
        dry_run: bool,
        retry_rejected: bool,
        moves_cursor: bool,
    ) -> None:
        """:meth:`take` once the records are read: ``people`` by subject id, the record ids
        of those without an address, and the cursor after them (moved if ``moves_cursor``)."""
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
            report.errors.append(WITHHELD.format(records=counted(len(plan.withheld), "record")))
        # Known records whose address was removed at the source: sent a withdrawal where a
        # consent-gated system got them (see MovePlanner.addressless). None on nearly every page.
        addressless = (
            self.planner.addressless(source, unaddressed, people, plan, self._suppressed)
            if unaddressed
            else {}
        )
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
        if suppressed:
            # Read, an erased person's number was kept in the parser's cache (one read per
            # number and process), which their erasure had emptied: their record may be
            # read after it, from a page read ahead before it or from a source that keeps
            # them (its part exempted, or not yet erased). Queued nowhere, their number yet
            # stayed in the daemon's memory until thousands of others pushed it out.
            forget_phones()
        payloads: list[QueuedPayload] = []
        envelopes: list[tuple[str, str, dict[str, Any]]] = []
        remarked: list[tuple[str, str, str]] = []
        unsent: list[tuple[str, str]] = []  # queued there, and not queued again now
        ungated: list[tuple[str, str]] = []  # queued there under a consent no longer given
        names = [dest.name for dest in destinations]
        # The numbers the plan read stand: nothing ran in between (no move was made, and
        # there was no wait, in which another flow's move or an erasure could have run).
        queued_by, delivered_by, sent_by = self.store.page_hashes(
            names,
            [*subject_ids, *formerly.values(), *addressless],
            None if addressless else plan.numbers,
        )
        # What a destination refused for good is not offered again as it was: it would be
        # refused again, and add a dead letter, on every sync. A --full sync retries. A
        # letter is read on a --full sync too, to see whether it still describes anything.
        letters_by = self.store.page_dead_letters(names, [*subject_ids, *addressless])
        outdated: list[tuple[str, str, str | None]] = []  # letters that describe nothing now
        if dry_run and self.dry_unrouted:
            # Rows the real run drops first (their flow no longer sends to the system) are
            # not what waits: the real run queues the person anew.
            stale = self.store.queued_by_flows(self.dry_unrouted, subject_ids)
            for system, sids in stale.items():
                for sid in sids:
                    queued_by.get(system, {}).pop(sid, None)
        for new, old in formerly.items():  # a dry run's moves, as the sync makes them
            for hashes in (*queued_by.values(), *delivered_by.values()):
                if old in hashes:
                    hashes[new] = hashes.pop(old)
            for sets in (
                *sent_by.queued.values(),
                *sent_by.delivered.values(),
                *sent_by.before.values(),
            ):
                if old in sets:
                    sets[new] = sets.pop(old)
            for lists in sent_by.earlier.values():
                if old in lists:
                    lists[new] = lists.pop(old)
        for system, earlier in self.foreseen.items():  # what the dry run's earlier flows queued
            if system in queued_by:
                queued_by[system].update((sid, earlier[sid]) for sid in people if sid in earlier)
        for dest in destinations:
            dest_report = report.destinations[dest.name]
            queued = queued_by[dest.name]
            delivered = delivered_by[dest.name]
            queued_sent = sent_by.queued[dest.name]
            delivered_sent = sent_by.delivered[dest.name]
            sent_before = sent_by.before[dest.name]
            sent_earlier = sent_by.earlier[dest.name]  # three flows or more: nearly always {}
            letters = letters_by[dest.name]
            context = outbox_context(dest.name)
            foreseen = self.foreseen.get(dest.name) if dry_run else None
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
            in_part = self.planner.written_in_part(dest.name, letters, queued, delivered)
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
                pool = self.planner.with_addressless(dest, people, addressless, held)
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
                        fields, digest = renewed(
                            self.keyring, dest, person, fields, digest, last, delivered.get(sid)
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
                        (
                            queued_sent.get(sid),
                            delivered_sent.get(sid),
                            sent_before.get(sid),
                            *sent_earlier.get(sid, ()),
                        ),
                        (queued_sent if sid in queued else delivered_sent).get(sid),
                    )
                ):
                    dest_report.unchanged += 1
                    if (
                        letter is not None
                        and sid not in queued
                        and self.judges(flow, letter.flow, dest.name)
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
                        (
                            queued_sent.get(sid),
                            delivered_sent.get(sid),
                            sent_before.get(sid),
                            *sent_earlier.get(sid, ()),
                        ),
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
        self.checkpoint("pulled")
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
                forget_phones()  # as above
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
        # Who had a number when the plan was read: on a re-sync's page, everyone. A hint to
        # the commit, which reads the numbers again under the write lock.
        numbered = {sid for sid, number in plan.numbers.items() if number is not None}

        def queue(store: Store) -> list[int]:
            with store.transaction():
                if outdated:
                    store.drop_outdated_letters(outdated)
                return store.enqueue_page(
                    flow.name,
                    source.name,
                    payloads,
                    identities,
                    cursor,
                    move_cursor=moves_cursor,
                    shape=self.shape(flow),
                    sources=self.sources,
                    numbered=numbered,
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
        self.fresh.update(
            (row_id, (*envelope, payload.payload))
            for row_id, envelope, payload in zip(ids, envelopes, payloads, strict=True)
        )
        while len(self.fresh) > FRESH_LIMIT:
            del self.fresh[next(iter(self.fresh))]
        self.checkpoint("queued")

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
        """Which of a page's subjects are erased (:func:`suppressed_on_page`)."""
        return suppressed_on_page(self.store, self.keyring, self.ids, source, people)
