"""Sending one batch of outbox rows to a destination, and settling its answer.

Before the call, rows that must not go are taken out: someone erased or unsubscribed at the
system since they were queued, a withdrawal the mapping no longer sends, a field the
mapping no longer allows. A row keeping the write of a former address sends that first
(:meth:`BatchSender._formers_first`). After it, the answer becomes acknowledgements, dead
letters and retries, committed with the batch's audit entry (or, when all were written,
with the engine's next write: :mod:`connector.settling`); whoever was erased while the write
was on its way is erased in the system again (:mod:`connector.lateerasure`).

Apart from the engine because it is the one place that turns queued rows into records and
an answer into the store's outcome; draining the outbox (:mod:`connector.delivery`) and the
call itself (:mod:`connector.upserts`) sit on either side of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from connector import audit, upserts
from connector.adapter import OutboundRecord, UpsertResult
from connector.config import FlowSettings
from connector.crypto import DecryptionError, Keyring, outbox_context
from connector.emptying import Emptying
from connector.ids import SystemIds
from connector.lateerasure import LateErasure
from connector.reports import DestinationReport, Progress
from connector.settling import Settling
from connector.state import WITHDRAWAL, Ack, OutboxRow, Store, before_resend
from connector.systems import System
from connector.upserts import Outage, deferred

__all__ = ["BatchSender", "Fresh"]

log = logging.getLogger("klantsync.engine")

#: What was just sealed into the outbox, in clear, by outbox id: the subject id, the payload
#: hash, the envelope and the sealed payload it was read from (see ``Engine._fresh``).
Fresh = dict[int, tuple[str, str, dict[str, Any], bytes]]


class BatchSender:
    """Sends batches of one engine's outbox rows and settles the answers.

    Args:
        store: the state store.
        keyring: keys derived from the master key.
        ids: the identity map's ids to and from the form the store keeps.
        emptying: what each write empties at its destination.
        settling: the sync's writes (:mod:`connector.settling`).
        fresh: the engine's payloads kept in clear (taken from here, so a row's copy is
            used once).
        checkpoint: the engine's hook called at "delivered" and "acked".
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        ids: SystemIds,
        emptying: Emptying,
        settling: Settling,
        fresh: Fresh,
        checkpoint: Callable[[str], None],
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.ids = ids
        self.emptying = emptying
        self.settling = settling
        self.fresh = fresh
        self.checkpoint = checkpoint
        self.late = LateErasure(store, settling)

    async def send(
        self,
        flow: FlowSettings,
        dest: System,
        rows: list[OutboxRow],
        dest_report: DestinationReport,
        stop: asyncio.Event,
        progress: Progress,
        outage: Outage,
    ) -> None:
        """Send ``rows`` to ``dest`` and settle the answer: acknowledged, dead-lettered,
        left for a later try, or erased again where the person was erased meanwhile."""
        opted_out = self.store.opted_out(dest.name, [r.subject_id for r in rows])
        if opted_out:
            # Queued before the person unsubscribed at the system itself: what it would
            # write (a PUT re-adds an archived member) is not sent; their withdrawal is.
            stale = [
                r
                for r in rows
                if r.subject_id in opted_out
                and not before_resend(r.payload_hash).startswith(WITHDRAWAL)
            ]
            if stale:
                self.settling.write(lambda store: store.drop_outbox([r.id for r in stale]))
                for row in stale:
                    self.fresh.pop(row.id, None)
                dest_report.suppressed_at_delivery += len(stale)
                rows = [r for r in rows if r not in stale]
        suppressed = self.store.suppressed([r.subject_id for r in rows])
        if suppressed:
            # An erasure arrived after these were queued: they must never be sent. (Whatever
            # an earlier try of theirs may have written, the erasure's own fan-out, which
            # has not deleted their rows yet, deletes after this; a row keeping a former
            # address's write is held for it, not dropped: it reads that address there.)
            gone = [r for r in rows if r.subject_id in suppressed]
            self.settling.write(lambda store: store.hold_or_drop(gone))
            for row in gone:
                self.fresh.pop(row.id, None)
            dest_report.suppressed_at_delivery += len(gone)
            rows = [r for r in rows if r.subject_id not in suppressed]
        if not dest.mapping.withdrawn:
            rows = self._without_withdrawals(dest, rows, dest_report)
        records: list[OutboundRecord] = []
        by_ref: dict[str, OutboxRow] = {}
        # Per record, the fields it leaves as the system holds them from the flow's earlier
        # write (a value the source gave could not be read): still the flow's (Plan.held).
        unread: dict[str, frozenset[str]] = {}
        undecryptable: list[tuple[OutboxRow, str]] = []
        external = self.store.external_ids_numbered(
            dest.name, {r.subject_id: r.subject_no for r in rows}
        )
        context = outbox_context(dest.name)
        allowed = dest.mapping.allowed_paths
        for row in rows:
            try:
                fresh = self.fresh.pop(row.id, None)
                # Taken only while the row holds what was sealed from it: a correction made
                # by another process (a `dsr rectify` beside the daemon) seals the row anew
                # under the same hash, and the copy in clear would undo it.
                if fresh is not None and (fresh[0], fresh[1], fresh[3]) == (
                    row.subject_id,
                    row.payload_hash,
                    row.payload,
                ):
                    envelope = fresh[2]
                else:
                    envelope = self.keyring.open_json(row.payload, context)
            except DecryptionError:
                undecryptable.append((row, "undecryptable: damaged, or sealed under another key"))
                continue
            ref = str(row.id)
            by_ref[ref] = row
            fields = envelope["fields"]
            if not allowed.issuperset(fields):
                fields = self._allowed_now(dest, row, envelope)
            empty = envelope.get("clear")
            record = OutboundRecord(
                ref=ref,
                # None for a withdrawal of someone whose address the source removed: it
                # goes by the system's id alone (see MovePlanner.addressless).
                email=envelope["email"] or "",
                external_id=self.ids.from_store(dest.name, external.get(row.subject_id)),
                fields=fields,
                # A field the mapping no longer writes is not emptied either; one a
                # correction wrote into the row since (dsr rectify) is written.
                clear=(allowed & set(empty)) - fields.keys() if empty else frozenset(),
            )
            records.append(record)
            if row.sent is not None:
                unread[ref] = self.emptying.still_held(
                    row.flow, row.sent, allowed, fields, record.clear
                )
        if undecryptable:
            # No refusal of the data: the next sync offers the person's current data again.
            self.settling.write(lambda store: store.dead_letter(undecryptable, refused=False))
            dest_report.dead_lettered += len(undecryptable)
            for row, reason in undecryptable:
                log.warning(
                    "queued payload does not open, dead-lettered",
                    extra={"system": dest.name, "subject": row.subject_id, "reason": reason},
                )
        if not records:
            return
        sent_fields = {record.ref: record.fields for record in records}
        to_empty = {record.ref: record.clear for record in records if record.clear}
        emptied: set[str] = set()  # what the system says it emptied, for the audit entry
        results: list[UpsertResult] = []
        if any(by_ref[r.ref].former is not None and r.external_id is None for r in records):
            records, results = await self._formers_first(
                dest, records, by_ref, dest_report, stop, outage
            )
        if records:
            results += await upserts.upsert(dest, records, dest_report, stop, outage)
        if outage.down:
            # The system is down (every try of several batches failed to reach it): the rest
            # waits in the outbox for the next run, instead of each batch spending its
            # retries on it (a backlog of half a million customers was 5,000 batches).
            stop.set()
        self.checkpoint("delivered")
        results = await self.late.settle(dest, records, by_ref, results, dest_report)
        # The answer was read and parsed in this same turn of the loop; let other answers in
        # before the acknowledgement's transaction (see YIELD_EVERY).
        await asyncio.sleep(0)
        acks: list[Ack] = []
        dead: list[tuple[OutboxRow, str]] = []
        later: list[int] = []
        held: list[Ack] = []  # written in part: the system's id, no delivered hash
        unsubscribed: list[str] = []  # found unsubscribed at the system itself
        for result in results:
            row = by_ref[result.ref]
            if result.opted_out and result.outcome != "failed":
                unsubscribed.append(row.subject_id)
            if result.outcome == "failed":
                if result.retryable:
                    later.append(row.id)
                    dest_report.deferred = result.reason or "deferred"
                else:
                    dead.append((row, result.reason or "rejected"))
                if result.external_id:
                    # Written in part (one audience took it, another refused it): the record
                    # made there is the person's, retried or dead-lettered. Known by its id,
                    # a move renames it, an erasure deletes it and a withdrawal of consent
                    # reaches it; dropped with a refusal, it outlived all three.
                    stored = self.ids.to_store(dest.name, result.external_id)
                    held.append(Ack(row.id, row.subject_id, stored, "", row.subject_no))
                continue
            if result.ref in to_empty:
                emptied.update(to_empty[result.ref] - result.kept)
            if result.outcome == "created":
                dest_report.created += 1
            elif result.outcome == "updated":
                dest_report.updated += 1
            else:
                dest_report.upserted += 1
            stored_id = self.ids.to_store(dest.name, result.external_id)
            # What was sent, which a correction or a narrowed mapping may have made other
            # than what was queued: what the next write of the flow empties goes by it. A
            # withdrawal of consent (an unsubscribe) leaves the fields the system holds as
            # they were, so what gave them a value stays the set (Store.acknowledge keeps
            # it): consenting again, a name removed meanwhile is emptied.
            field_set = (
                None
                if before_resend(row.payload_hash).startswith(WITHDRAWAL)
                else self.emptying.number(
                    row.flow, sent_fields[result.ref], unread.get(result.ref, ())
                )
            )
            acks.append(
                Ack(row.id, row.subject_id, stored_id, row.payload_hash, row.subject_no, field_set)
            )
        outcomes = Counter(result.outcome for result in results)
        # One transaction for the batch's outcome and its audit entry: each commit costs
        # a write of every page it touched, and the entry belongs with what it records.
        entry = {
            "flow": flow.name,
            "system": dest.name,
            **{kind: outcomes[kind] for kind in ("created", "updated", "upserted")},
            "failed": len(dead) + len(later),
            "fields": sorted({k for rec in records for k in rec.fields}),
        }
        if emptied:
            entry["emptied"] = sorted(emptied)

        def settle(store: Store) -> None:
            with store.transaction():
                if acks:
                    store.acknowledge(dest.name, acks)
                if dead:
                    store.dead_letter(dead)
                if later:
                    store.bump_attempts(later)
                if held:
                    store.note_identities(dest.name, held)
                for subject_id in unsubscribed:
                    # As their unsubscribe webhook is recorded (connector/webhooks.py).
                    store.opt_out(dest.name, subject_id)
                    consent = {"system": dest.name}
                    audit.append(store, "consent.opted_out", consent, subject_id=subject_id)
                if acks or dead:
                    audit.append(store, "sync.batch", entry)

        if dead or later or unsubscribed:
            # Committed before the batch stops counting as in flight: an erasure waiting on
            # it must find (and delete) a dead letter or an opt-out it leaves, never have one
            # land after.
            self.settling.write(settle)
        elif acks:
            # Only acknowledgements: they may wait for the next write. One landing after an
            # erasure of its subject writes nothing (Store.acknowledge).
            self.settling.later(settle)
        if dead:
            dest_report.dead_lettered += len(dead)
            for row, reason in dead:
                log.warning(
                    "record rejected, dead-lettered",
                    extra={"system": dest.name, "subject": row.subject_id, "reason": reason},
                )
        if later:
            dest_report.retry_later += len(later)
        self.checkpoint("acked")
        progress.delivered(flow.name, dest.name, len(results))

    def _without_withdrawals(
        self, dest: System, rows: list[OutboxRow], dest_report: DestinationReport
    ) -> list[OutboxRow]:
        """``rows`` less the withdrawals of consent, which ``dest``'s mapping has no
        ``withdrawn`` to send now (taken out of it since they were queued); those are
        dropped, unsent.

        A withdrawal goes as one or not at all: stripped of its marker, the bare address
        went as an ordinary write, and Mailchimp added the person who withdrew their
        consent as a subscribed member. Nothing is sent in its place, as for someone the
        consent gate stops where the mapping has no ``withdrawn`` (a row keeping a former
        address's write is held, as there, for an erasure to find that address by).
        """
        unsent = [r for r in rows if before_resend(r.payload_hash).startswith(WITHDRAWAL)]
        if not unsent:
            return rows
        self.settling.write(lambda store: store.hold_or_drop(unsent))
        for row in unsent:
            self.fresh.pop(row.id, None)
            log.warning(
                "queued withdrawal of consent not sent: the mapping has no withdrawn now",
                extra={"system": dest.name, "subject": row.subject_id},
            )
        dest_report.suppressed_at_delivery += len(unsent)
        ids = {row.id for row in unsent}
        return [r for r in rows if r.id not in ids]

    def _allowed_now(
        self, dest: System, row: OutboxRow, envelope: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A queued payload's fields as ``dest``'s mapping allows them now.

        Queued under a mapping that allowed more (a field taken out of it since, while the
        system was down): only what the mapping allows now leaves. The sync after this one
        queues the person's current payload, without it. A withdrawal goes as the mapping
        sends one now (its ``withdrawn``: :meth:`_without_withdrawals` took the rows it has
        none for), never as the bare address. Anything else is said: a renewal whose marker
        was taken out goes as a plain write, which asks nobody to confirm.
        """
        if before_resend(row.payload_hash).startswith(WITHDRAWAL):
            return dest.mapping.withdrawal({"email": envelope["email"]})
        allowed = dest.mapping.allowed_paths
        fields: dict[str, Any] = envelope["fields"]
        log.warning(
            "queued payload sent without what its mapping no longer allows",
            extra={
                "system": dest.name,
                "subject": row.subject_id,
                "dropped": sorted(name for name in fields if name not in allowed),
            },
        )
        return {name: value for name, value in fields.items() if name in allowed}

    async def _formers_first(
        self,
        dest: System,
        records: list[OutboundRecord],
        by_ref: dict[str, OutboxRow],
        dest_report: DestinationReport,
        stop: asyncio.Event,
        outage: Outage,
    ) -> tuple[list[OutboundRecord], list[UpsertResult]]:
        """Send first the writes rows keep from a former address (connector/moves.py),
        where ``dest``'s id for the person is not known; return the records to send now,
        each with the id learned, and the results of the rest (those that wait, and rows
        whose one write this was).

        Such a write may have landed, its answer lost: sent again by the old address, it
        lands on the same record (an upsert), and the answer gives that record's id, which
        the current write (new address included) then updates. Sent by the new address
        alone, it made a second record. The id is committed before the current write goes,
        so a crash between the two sends nothing twice. A former write that cannot go now
        (the system is down) keeps the current one queued with it; one the system refuses
        made no record, and the current one goes by its address, as any new person's (one it
        refuses in part names the record it made, which the current write updates).

        A row whose payload is still that write (no page has queued the person since the
        move) sends it once, and its answer is the row's: sent again by the id, the payload
        from before the move went as if it were current. Where the current write is a
        withdrawal of consent, the former write is one too, by the old address: the record
        it may have made is found without sending the data the consent covered.
        """
        context = outbox_context(dest.name)
        allowed = dest.mapping.allowed_paths
        formers: list[OutboundRecord] = []
        once: set[str] = set()  # rows whose payload is their former write
        for record in records:
            row = by_ref[record.ref]
            if row.former is None or record.external_id is not None:
                continue
            try:
                envelope = self.keyring.open_json(row.former, context)
            except DecryptionError:
                continue  # sealed under another key: the current write goes, as before
            fields = {k: v for k, v in envelope["fields"].items() if k in allowed}
            if before_resend(row.payload_hash).startswith(WITHDRAWAL):
                fields = dest.mapping.withdrawal({"email": envelope["email"]})
            former = OutboundRecord(record.ref, envelope["email"], None, fields)
            if former == record:
                once.add(record.ref)
            formers.append(former)
        if not formers:
            return records, []
        results = await upserts.upsert(dest, formers, dest_report, stop, outage)
        # Someone erased meanwhile is erased again where the former write may have landed.
        answered = await self.late.settle(dest, formers, by_ref, results, dest_report)
        settled = {r.ref for r in results} - {r.ref for r in answered}
        learned: dict[str, str] = {}
        waiting: list[UpsertResult] = []
        done: list[int] = []
        for result in answered:
            if result.ref in once and (result.outcome != "failed" or not result.retryable):
                waiting.append(result)  # sent, or refused: settled as the row's own answer
                continue
            if result.external_id:  # written, or written in part
                learned[result.ref] = result.external_id
            elif result.outcome == "failed" and result.retryable:
                waiting.append(result)
                continue
            done.append(by_ref[result.ref].id)
        held = [
            Ack(row.id, row.subject_id, self.ids.to_store(dest.name, ext), "", row.subject_no)
            for ref, ext in learned.items()
            for row in (by_ref[ref],)
        ]

        def settle(store: Store) -> None:
            with store.transaction():
                store.note_identities(dest.name, held)
                store.forget_former(done)

        if done:
            self.settling.write(settle)
        skip = settled | {r.ref for r in waiting}
        current = [
            r._replace(external_id=learned.get(r.ref, r.external_id))
            for r in records
            if r.ref not in skip
        ]
        if stop.is_set():  # the system is down, or answered with a fatal error
            return [], waiting + deferred(current, "delivery stopped")
        return current, waiting
