"""An erasure's work: the manifest snapshot, the connector's own traces, then each system.

The snapshot is sealed before the first deletion, so a run killed at any point resumes on
retry with every system's ids still named; a system's erasure is read again to verify it
before its part is settled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from connector import jobs
from connector.adapter import (
    PLACEHOLDER_EMAIL,
    RETAINED,
    ErasureResult,
    Subject,
    placed_by,
    read_records,
)
from connector.dsr_runbase import STRANGER, RunBase, left_to_others, own_id, settle
from connector.dsr_store import (
    FINAL_STATUSES,
    HELD_PHONE,
    NO_LONGER_CONFIGURED,
    ON_HOLD,
    RequestRow,
    SystemRow,
    on_hold,
)
from connector.errors import KlantsyncError
from connector.moves import same_person
from connector.retention import delete_bundles_of
from connector.systems import System

__all__ = ["ASK_AGAIN_AFTER", "ERASED_ON_ARRIVAL", "GONE_SINCE_SNAPSHOT", "EraseSteps"]

log = logging.getLogger("klantsync.dsr")

#: How long an erasure the vendor holds pending waits before it is asked for again.
ASK_AGAIN_AFTER = dt.timedelta(days=1)

#: How an erasure's note says its part was found done (:func:`_erased_before`).
GONE_SINCE_SNAPSHOT = (
    "found when the request first looked and gone when erased again: deleted by an "
    "earlier attempt of this request, whose outcome was not recorded"
)

#: How an erasure's note says a sync's write made the record it found erased already.
ERASED_ON_ARRIVAL = (
    "made by a write of klantsync's that was on its way when the erasure arrived, and erased "
    "again as it landed (audited as sync.erased_on_arrival)"
)


class EraseSteps(RunBase):
    """The steps of an erasure, and its widening to every address the person had."""

    async def _erase(self, row: RequestRow) -> None:
        manifest = self.service.open_manifest(row)
        self._hold_exempted_before(row, manifest)
        await self._former_address(row, manifest)
        self._hold_source_records(row, manifest)
        # Again for the addresses and records the request was widened to just now.
        self._hold_exempted_before(row, manifest)
        states = {s.system: s for s in self.db.systems(row.id)}
        askable = self._askable(row)
        todo = [
            n for n in self.rt.systems if states[n].status not in FINAL_STATUSES and n in askable
        ]
        # 1. The manifest snapshot: each system's ids, before that system is asked to delete.
        missing = [n for n in todo if n not in manifest["snapshot"]]
        found = await settle({n: self._find(n, manifest) for n in missing})
        sources = self._sources()
        phones: list[str] = []
        taken = 0
        for name, outcome in found.items():
            if isinstance(outcome, KlantsyncError):
                if not self._exempt_if_shut_out(row, name, outcome):
                    self._failed(row, name, f"snapshot: {outcome}", attempt=True)
                continue
            if isinstance(outcome, BaseException):
                raise outcome  # a fault of the connector's own, not the system's answer
            assert isinstance(outcome, list)
            system = self.rt.systems[name]
            outcome = self._spare(name, outcome, manifest)
            # Only a record whose own e-mail is the subject's names the person's id (an order
            # listed with them has an id too, but not theirs).
            own = own_id(system, outcome, manifest["email"]) if manifest["email"] else None
            if own:
                manifest["ids"].setdefault(name, own)
            if name in sources:
                phones += _own_phones(system, outcome, manifest["email"], manifest["ids"].get(name))
            manifest["held"][name] = bool(outcome)
            keys = getattr(system.adapter, "snapshot_keys", None)
            if keys is not None:
                # Added to, never replaced: a snapshot taken again (widen) after part of
                # an erasure was done no longer sees what that part deleted.
                held_keys: dict[str, list[str]] = manifest.setdefault("snapshot_keys", {})
                held_keys[name] = sorted({*held_keys.get(name, ()), *keys(outcome)})
            if any(RETAINED not in r for r in outcome):
                # Something beyond what is kept on purpose, which the erasure deletes. Never
                # taken back: a snapshot taken again later (widen) finds it gone already.
                deletable = manifest.setdefault("deletable", [])
                if name not in deletable:
                    deletable.append(name)
            manifest["snapshot"].append(name)
            taken += 1
        if taken:
            # Only when a snapshot was taken: a system down through the retries (every 15
            # minutes) appended an entry for a snapshot never taken, 96 a day.
            held = sorted(n for n, h in manifest["held"].items() if h)
            # Each write here goes with its audit entry (see _set).
            with self.rt.store.transaction():
                self._suppress_phones(row, manifest, phones)
                self._save(row, manifest)
                self.service.audit("dsr.manifest", row, systems_holding=held)
        # Again with the source ids the snapshot may have added.
        self._hold_source_records(row, manifest)
        # 2. The connector's own traces go before the fan-out, so nothing here outlives it.
        # A sync batch checked against the suppression list before this request's entry was
        # written may still be on its way: it lands first (connector/inflight.py), so its
        # outcome is among the traces deleted and what it wrote among what the fan-out erases.
        for name in todo:
            await self.rt.engine.in_flight.landed(name, manifest["subject_ids"])
        with self.rt.store.transaction():
            # Read before the rows go, and kept with their going: a payload waiting in the
            # outbox may have been delivered with its answer lost (the system's id never
            # learned), under an address the person had then.
            self._note_queued_addresses(row, manifest)
            counts = self.db.delete_traces(manifest["subject_ids"])
            # The records the fan-out erases, keyed, as the identity rows that named them go:
            # a system's report of that deletion (HubSpot's privacyDeletion of its own
            # gdpr-delete) is then known for this erasure's, not a request of the person's.
            self.db.note_erased_records(
                [
                    self.rt.engine.ids.record_key(name, str(record))
                    for name, record in manifest["ids"].items()
                    if record
                ],
                row.id,
            )
            counts["jobs"] = jobs.forget_queued(
                self.rt.store,
                self.rt.keyring,
                manifest["subject_ids"],
                [(name, str(record)) for name, record in manifest["ids"].items() if record],
            )
            self.rt.engine.forget(manifest["subject_ids"])
            # An access bundle written for them earlier holds their data in clear: it goes
            # with the rest, not at the sweep weeks later (the receipt says nothing is kept).
            kept: list[str] = []
            counts["bundles"] = delete_bundles_of(
                self.rt.store, self.rt.keyring, manifest["subject_ids"], kept
            )
            if any(counts.values()):
                self.service.audit("dsr.traces_deleted", row, rows=counts)
        _log_kept(row, kept)
        # 3. Fan out to every system whose snapshot is taken, concurrently.
        ready = [n for n in todo if n in manifest["snapshot"]]
        outcomes = await settle({n: self._erase_system(row, n, manifest, states[n]) for n in ready})
        crashed = [o for o in outcomes.values() if isinstance(o, BaseException)]
        if crashed:
            raise crashed[0]

    def _hold_exempted_before(self, row: RequestRow, manifest: dict[str, Any]) -> None:
        """Hold each part another erasure of the person exempted, for the operator to decide.

        An operator exempts one system's part of an erasure (records needed for a legal
        claim, Art. 17(3)(e)); the person asks again later (Shopify sends customers/redact
        months after the shop's request; a second e-mail), and that request erased at once
        what the exemption kept. Whether the reason still holds is the operator's call: the
        part stays pending, asked nothing (:meth:`_askable`), its detail naming the request
        that exempted it and the reason, redacted as it was stored, until the operator
        exempts it again (``dsr exempt``) or lets the erasure reach it (``dsr release``,
        kept in the manifest's ``released``). Settled parts, and those of systems the config
        no longer has (which wait anyway), are left as they are.
        """
        earlier = self.db.exempted_before([row.subject_id, *manifest["subject_ids"]], row.id)
        released = manifest.get("released", [])
        for part in self.db.systems(row.id):
            name = part.system
            if (
                name not in earlier
                or name in released
                or name not in self.rt.systems
                or part.status in FINAL_STATUSES
                or on_hold(part.status, part.detail)
            ):
                continue
            exempted_by, reason = earlier[name]
            detail = (
                f"{ON_HOLD}{exempted_by} exempted it ({reason}); not erased until decided: "
                f"dsr exempt {row.id} --system {name} --reason R keeps it, "
                f"dsr release {row.id} --system {name} erases it"
            )
            # No manifest check: a run under way in another process must not get past it.
            with self.rt.store.transaction():
                self.db.set_system(row.id, name, "pending", detail=detail)
                self.service.audit("dsr.on_hold", row, system=name, exempted_by=exempted_by)

    def _suppress_phones(
        self, row: RequestRow, manifest: dict[str, Any], phones: list[str]
    ) -> None:
        """Suppress the numbers the person's records in the sources hold, keyed like a
        phone given with the request (``dsr erase --phone``).

        An erasure asked with no number (by e-mail, a CRM's webhook) suppressed none, and a
        restored backup holding the person under another address but the number the shop
        had stayed in. Read at the snapshot, before the source deletes the record; only the
        keyed hashes are kept, with the request's other ids.
        """
        keyed = [self.rt.keyring.subject_id(phone) for phone in dict.fromkeys(phones)]
        added = [sid for sid in keyed if sid not in manifest["subject_ids"]]
        if not added:
            return
        manifest["subject_ids"] += added
        self.rt.store.suppress(added, HELD_PHONE, row.id)
        self.service.audit("dsr.phones_held", row, subject_ids=added)

    def _note_queued_addresses(self, row: RequestRow, manifest: dict[str, Any]) -> None:
        """Note in the manifest, per system, the other addresses payloads were queued under
        (:meth:`_queued_addresses`); each is erased too. Read before the outbox rows go
        with the traces, and kept with their going."""
        queued: dict[str, list[str]] = manifest.setdefault("queued_as", {})
        added = 0
        found = self._queued_addresses(manifest["subject_ids"], manifest["email"])
        for system, addresses in found.items():
            known = queued.setdefault(system, [])
            for address in addresses:
                if address not in known:
                    known.append(address)
                    added += 1
        if added:
            self._save(row, manifest)
            self.service.audit("dsr.queued_addresses", row, addresses=added)

    def _hold_source_records(self, row: RequestRow, manifest: dict[str, Any]) -> None:
        """Suppress the person's record in each source by its own id, and widen the erasure
        to whoever else the identity map holds those records under.

        A backup that brings the record back under an address nobody here saw (changed and
        erased before a sync) stays out (PageTaker._suppressed). And a sync that read the
        person under a new address before this suppression queued them under that
        address's subject (no move: their former one was suppressed already); it joins the
        request, so its queued rows go with the traces and nothing reaches a system under
        the new address. The look comes after the suppression, with no wait between: a
        page queued later is stopped by it (PageTaker.take checks again before queueing).
        """
        sources = self._sources()
        held = [
            (name, external_id)
            for name, external_id in manifest["ids"].items()
            if name in sources and external_id
        ]
        if not held:
            return
        ids = self.rt.engine.ids
        self.rt.store.suppress(
            [ids.record_key(name, external_id) for name, external_id in held], "erasure", row.id
        )
        others = [
            sid
            for name, external_id in held
            for sid in self.rt.store.subjects_for_external(name, ids.to_store(name, external_id))
        ]
        added = [s for s in same_person(self.rt.store, others) if s not in manifest["subject_ids"]]
        if added:
            self.widen(row, manifest, added, "dsr.same_record")

    def widen(
        self,
        row: RequestRow,
        manifest: dict[str, Any],
        added: list[str],
        entry: str,
        ids: Mapping[str, str] | None = None,
        *,
        in_run: bool = True,
    ) -> None:
        """Add subjects the person is also known under: suppressed, their ids in the manifest,
        and a system settled before they were known erased again with the id it missed.
        ``ids`` are systems' ids given with the request, taken where the manifest has none."""
        manifest["subject_ids"] += added
        if added:
            with self.rt.store.transaction():
                self.rt.store.suppress(added, "erasure", row.id)
                self.service.audit(entry, row, subject_ids=added)
                # A correction open under an address the erasure reaches only now.
                self.service.supersede_corrections(row, added)
        changed: set[str] = set()
        for system, external_id in (ids or {}).items():
            if system not in manifest["ids"]:
                manifest["ids"][system] = external_id
                changed.add(system)
        for sid in added:
            for system, external_id in self.service.identities(sid).items():
                if manifest["ids"].get(system) != external_id:
                    # The id the syncs wrote under; the address asked with still finds a
                    # record made under the other (each adapter looks by e-mail and by id).
                    manifest["ids"][system] = external_id
                    changed.add(system)
        states = {s.system: s for s in self.db.systems(row.id)}
        for system in sorted(changed):
            if system not in states and system not in self.rt.systems:
                self._part_no_longer_configured(row, system)
            elif system in states and states[system].status in FINAL_STATUSES:
                # Settled before this subject was known: erased again with its id.
                self.db.set_system(row.id, system, "pending", detail="known under another address")
                if system in manifest["snapshot"]:
                    manifest["snapshot"].remove(system)
        self._save(row, manifest, in_run=in_run)

    def _part_no_longer_configured(self, row: RequestRow, system: str) -> None:
        """Give ``row`` a part for ``system``, which the config no longer has, found only now
        to have been sent the person (under an address the erasure was widened to).

        Opened with the request, such a system gets a part (DsrService._record_erasure);
        learnt of later, it got none: the erasure deleted the identity rows that showed the
        person was sent there and completed with a receipt that left it out, though it may
        still hold them. Its part waits, as that one does, until the system is configured
        again or exempted."""
        self.db.add_system(row.id, system)
        self.db.set_system(row.id, system, "pending", detail=NO_LONGER_CONFIGURED)

    async def _former_address(self, row: RequestRow, manifest: dict[str, Any]) -> None:
        """Widen the erasure to the address the person had at the last sync, if it differs.

        Someone who changed their address in the shop and asks to be erased before the next
        sync is held in the other systems under the former address, which the identity map
        knows and the request does not (see :meth:`_former_subjects`): its ids join the
        manifest and it is suppressed too. Each source is asked once per request; one that
        cannot be asked now is asked again on the next retry, and a system already settled
        by then is erased again with the id it was missing.
        """
        email = manifest["email"]
        asked = manifest.setdefault("sources_asked", [])
        # A source whose part is exempted is not asked (nor counted asked: it never answered).
        todo = [n for n in self._sources(row) if n not in asked]
        if not email or not todo:
            return
        former, answered = await self._former_subjects(email, todo)
        former = [s for s in former if s != STRANGER]
        asked += answered
        added = [s for s in same_person(self.rt.store, former) if s not in manifest["subject_ids"]]
        if added:
            self.widen(row, manifest, added, "dsr.former_address")
        else:
            self._save(row, manifest)

    def _spare(
        self, name: str, records: list[dict[str, Any]], manifest: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``records`` without those another subject's (:meth:`_others`), whose ids the
        manifest keeps: the erasure passes them to the system as ``Subject.spare``.

        Without the orders those accounts placed too: they are that customer's, and the
        erasure, which leaves the account, leaves them (a shop blanks no order placed by an
        account it spares). Counted here, they made the snapshot find the person held and
        deletable there, and the call that then found nothing to erase was taken for one
        that met an earlier attempt's deletion: the receipt said the customer was deleted.
        """
        others = self._others(name, records, manifest["subject_ids"])
        spared: dict[str, list[str]] = manifest.setdefault("spared", {})
        if others:
            spared[name] = sorted(others)
        else:
            spared.pop(name, None)
        system = self.rt.systems[name]
        return [r for r in records if not _left_as_another_s(system, r, others)]

    async def _find(self, name: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """The erasure's snapshot of ``name``: ids, whether it holds the person, their
        numbers, and orders it keeps on purpose (:func:`read_records`). Not the access copy:
        notes, activity and what a CRM associates with the person go with the erasure
        unread."""
        subject = _subject(manifest, name)
        return await read_records(self.rt.systems[name].adapter, subject, orders=True)

    async def _erase_system(
        self, row: RequestRow, name: str, manifest: dict[str, Any], state: SystemRow
    ) -> None:
        system = self.rt.systems[name]
        subject = _subject(manifest, name)
        # Addresses a payload was queued under and maybe delivered (_note_queued_addresses).
        also = [
            Subject(email=a, spare=subject.spare)
            for a in manifest.get("queued_as", {}).get(name, [])
        ]
        if not manifest["email"] and subject.external_id is None and not also:
            self._set(row, name, "not_held", "no e-mail or id known for this system")
            return
        subjects = [subject, *also] if manifest["email"] or subject.external_id else also
        record = dict(state.result)
        erasing = self._erasure_due(state, record)
        # A retry that only reads keeps the part pending_verification: marked in_progress,
        # a process that died in the read left a part the next retry could not tell from
        # one whose erasure call may not have been made, and it asked the vendor again at
        # once (Shopify: a second erasure queued within the hour).
        self.db.set_system(
            row.id,
            name,
            "in_progress" if erasing else "pending_verification",
            detail=None if erasing else state.detail,
            attempt=True,
        )
        try:
            if erasing:
                # Writes of a sync still on their way settled before the traces went (see
                # _erase); any batch since saw the suppression entry and sent nothing.
                results = await self._erase_unless_exempted(row, system, subjects)
                if results is None:
                    return
                result = _outcome(results)
                if not result.found and _gone_since_snapshot(name, manifest, record):
                    result = _erased_before(result)
                elif not result.found and self.db.erased_on_arrival(
                    row.id, row.subject_id, name, manifest["subject_ids"]
                ):
                    result = _erased_on_arrival(result)
                result = _passed_over(result, subject.spare)
                # A retry after a crash finds nothing left, or only what is kept on purpose:
                # the facts of the call that deleted stay.
                if not (
                    (record.get("found") and not result.found)
                    or (_deleted(record) and result.mode == "kept")
                ):
                    record = _erasure_facts(result, self.service.timestamp())
                with self.rt.store.transaction():
                    # Not final until checked below: a process that died between the two
                    # left it "done", and the retry signed a receipt nobody had checked.
                    self.db.set_system(row.id, name, "pending_verification", result=record)
                    self.service.audit("dsr.erased", row, system=name, found=result.found)
        except KlantsyncError as exc:
            if not self._exempt_if_shut_out(row, name, exc, record):
                self._failed(row, name, str(exc))
            return
        if name not in self._askable(row):
            return  # exempted during the erasure call: not even read to verify
        try:
            # What the system keeps on purpose (RETAINED: orders kept for tax law) is no
            # failure: the erasure's note and receipt say it stays.
            found = [
                r
                for s in subjects
                for r in await read_records(system.adapter, s, orders=True)
                if not _left_as_another_s(system, r, subject.spare)
            ]
            remaining = [r for r in found if RETAINED not in r]
        except KlantsyncError as exc:
            # The erasure was asked for; only its check is missing. The part stays pending
            # and the retry reads again: made "failed", the retry asked the vendor to erase
            # again at once, and a pending erasure (Shopify) was queued again every 15
            # minutes instead of once a day (_ask_again).
            if not self._exempt_if_shut_out(row, name, exc, record):
                self._unverified(row, name, f"the verifying read failed: {exc}", record)
            return
        if remaining:
            if record.get("pending"):
                self._set(
                    row,
                    name,
                    "pending_verification",
                    "the vendor erases asynchronously; verified again on retry",
                    record,
                )
                return
            with self.rt.store.transaction():
                self._failed(row, name, "still present after erasure", record)
                self.service.audit("dsr.alert", row, system=name, problem="still present")
            log.error("erased subject still present", extra={"system": name, "request": row.id})
            return
        held = bool(manifest["held"].get(name) or record.get("found"))
        record["verified_at"] = self.service.timestamp()
        # Why what the check passed over is kept, as the system's codes (``tax_records``),
        # never the note: the note's free text may name ids, and a "verified absent" whose
        # orders stay was told to the person as "deleted" (connector/access_own.py).
        retained = sorted({str(r[RETAINED]) for r in found if RETAINED in r})
        if retained:
            record["retained"] = retained
        else:
            record.pop("retained", None)
        detail = None
        if record.get("mode") == "kept":
            note = record.get("note") or "the system keeps what it holds on purpose"
            if name not in manifest.get("deletable", []):
                # Nothing deleted: what the system holds it keeps on purpose (guest orders
                # kept for tax law), which the check passed over. That is no certified
                # absence; the receipt names the system as exempt, with the note saying why.
                self._set(row, name, "exempt", f"kept on purpose: {note}", record)
                return
            # The snapshot found more than what is kept (an account), gone now: deleted by
            # an earlier call whose answer a crash lost. Verified absent, not exempt.
            detail = f"gone since the snapshot but for what is kept on purpose: {note}"
        if not held and row.source == f"webhook:{name}":
            detail = "erased by the vendor itself (origin of the request)"
        self._set(row, name, "verified_absent" if held else "not_held", detail, record)

    async def _erase_unless_exempted(
        self, row: RequestRow, system: System, subjects: Sequence[Subject]
    ) -> list[ErasureResult] | None:
        """Ask ``system`` to erase each of ``subjects``; ``None`` once its part is exempted.

        The part's status is read again just before each call, with no wait between the read
        and the call: an exemption made while the run read the other systems, or during a
        call for another of the person's addresses, keeps what it was to keep (records
        needed for a legal claim). A call already made stays in the audit trail.
        """
        results: list[ErasureResult] = []
        for subject in subjects:
            if system.name not in self._askable(row):
                if results:
                    found = any(r.found for r in results)
                    self.service.audit("dsr.erased", row, system=system.name, found=found)
                return None
            results.append(await system.adapter.erase(subject))
        return results

    def _erasure_due(self, state: SystemRow, record: dict[str, Any]) -> bool:
        """Whether this attempt asks the vendor to erase, or only reads to verify.

        By what is recorded of the last erasure call: with none (``erased_at``), it is made.
        One made whose check is missing (``pending_verification``, which a read-only retry
        keeps, whatever stops it) is not made again at once, only once a day
        (:meth:`_ask_again`). Any other status says the part is to be erased again: a
        record still present after the call, an id learned since (:meth:`widen`), or an
        attempt that died around its call, which may not have been made.
        """
        if not record.get("erased_at"):
            return True
        return state.status != "pending_verification" or self._ask_again(record)

    def _ask_again(self, record: dict[str, Any]) -> bool:
        """Whether an erasure the vendor holds pending is asked for again now: once a day.

        While it is pending (Shopify: ten days) its owner can cancel it; the person is then
        still there and nothing else would ever ask again. Asked at every retry (every 15
        minutes) it would be a thousand requests a pending erasure; once a day, a cancelled
        one is queued again the next day. One cancelled on purpose is closed with
        ``dsr exempt``, which stops the asking.
        """
        asked = record.get("erased_at")
        try:
            last = dt.datetime.fromisoformat(str(asked))
        except ValueError:
            return True
        if last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        return self.service.now() - last >= ASK_AGAIN_AFTER

    def delete_bundles(self, row: RequestRow) -> None:
        """An erasure's last step before its receipt: the person's access bundles, again.

        The first deletion went with the traces, before the fan-out. A bundle written since
        (an access request of theirs run by another process, or under another address of
        theirs) outlived the completed erasure, and the receipt named it as one the erasure
        could not delete, which it never tried to.
        """
        kept: list[str] = []
        deleted = delete_bundles_of(self.rt.store, self.rt.keyring, self._erased_ids(row), kept)
        if deleted:
            self.service.audit("dsr.traces_deleted", row, rows={"bundles": deleted})
        _log_kept(row, kept)

    def _erased_ids(self, row: RequestRow) -> list[str]:
        """Every id an erasure covers (a bundle written under a former address is recorded
        under that one)."""
        subject_ids = self.service.open_manifest(row)["subject_ids"] if row.manifest else []
        return [row.subject_id, *subject_ids]


def _log_kept(row: RequestRow, problems: list[str]) -> None:
    """Log the access bundles an erasure could not delete, by id (their paths may name the
    person)."""
    for problem in problems:
        log.warning(
            "access bundle not deleted; the sweep deletes it when due",
            extra={"request": row.id, "error": problem},
        )


def _subject(manifest: dict[str, Any], name: str) -> Subject:
    keys = manifest.get("snapshot_keys", {}).get(name)
    return Subject(
        email=manifest["email"] or PLACEHOLDER_EMAIL,
        phone=manifest.get("phone"),
        external_id=manifest["ids"].get(name),
        spare=frozenset(manifest.get("spared", {}).get(name, ())),
        snapshot=None if keys is None else frozenset(keys),
    )


def _own_phones(
    system: System, records: list[dict[str, Any]], email: str | None, external: str | None
) -> list[str]:
    """The numbers the person's own records hold, in E.164 as a sync reads them (the
    mapping's phone transform, in the person's country).

    Own: held under their address or their id in the system; not an order (its billing
    number may be whoever paid), nor a record found by a number shared with a housemate.
    """
    phones: list[str] = []
    for record in records:
        if record.get("type") == "order":
            continue
        person = system.mapping.inbound(record)
        by_address = email is not None and person.email == email
        by_id = external is not None and system.mapping.record_id(record) == external
        if not (by_address or by_id):
            continue
        phone = person.get("phone")
        if isinstance(phone, str) and phone:
            phones.append(phone)
    return phones


def _left_as_another_s(system: System, record: Mapping[str, Any], spare: Collection[str]) -> bool:
    """Whether an erasure leaves ``record`` as another subject's: one of the records in
    ``spare`` (by their ids, :meth:`KindRunner._others`), or an order one of those placed.

    An order is told by whose it is (:func:`placed_by`), never by its own id: a shop numbers
    its orders apart from its accounts, and an order of the person's that has the number
    of an account left would be passed over."""
    if record.get("type") == "order":
        return placed_by(record) in spare
    return system.mapping.record_id(record) in spare


def _outcome(results: Sequence[ErasureResult]) -> ErasureResult:
    """One system's outcome of erasing each of the person's addresses there.

    An address whose erasure deleted something speaks for the system, with what another
    keeps on purpose added to its note: the first that found anything might be one whose
    guest orders are kept, and the part said "nothing deleted" of an account deleted under
    a former address.
    """
    deleted = [r for r in results if r.found and r.mode != "kept"]
    kept = [r for r in results if r.found and r.mode == "kept"]
    if not deleted:
        return kept[0] if kept else results[0]
    first = deleted[0]
    notes = [first.note, *(r.note for r in kept)]
    return dataclasses.replace(first, note="; ".join(n for n in notes if n))


def _gone_since_snapshot(name: str, manifest: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether the request's snapshot found something of the person at ``name`` that the
    erasure deletes (``deletable``), with no erasure call recorded as having found it.

    A call that now finds nothing of them then meets what an earlier attempt's call left:
    the process died between the vendor's answer and its record (or a failure was
    reported of a call the vendor carried out).
    """
    return name in manifest.get("deletable", []) and not record.get("found")


def _erased_before(result: ErasureResult) -> ErasureResult:
    """``result`` of a call that found the person gone since the snapshot, as the erasure
    that deleted them: found, with the adapter's note for a completed erasure
    (:attr:`ErasureResult.erased_note`), and how it is known. Recorded as it came ("no
    person held", "nothing deleted, nothing sent"), the receipt denied the deletion and
    left out what the vendor keeps (a 30-day bin, a blocklist)."""
    done = result.erased_note or "erased"
    return dataclasses.replace(result, found=True, note=f"{done}; {GONE_SINCE_SNAPSHOT}")


def _erased_on_arrival(result: ErasureResult) -> ErasureResult:
    """``result`` of a call that found nothing where a sync's write, on its way when the
    erasure came, made the person's record and the sync erased it as it landed
    (:meth:`DsrStore.erased_on_arrival`): found, with the adapter's note for a completed
    erasure and how it came about. Recorded as it came, the receipt said the system held
    nobody, though klantsync had made the record there (and HubSpot keeps the address on
    its blocklist)."""
    done = result.erased_note or "erased"
    return dataclasses.replace(result, found=True, note=f"{done}; {ERASED_ON_ARRIVAL}")


def _passed_over(result: ErasureResult, spare: frozenset[str]) -> ErasureResult:
    """``result`` with its note saying which records, another subject's, were left (ids
    only: the receipt shows the note, and ids are no personal data of the person)."""
    if not spare:
        return result
    return dataclasses.replace(result, note=left_to_others(result.note, spare))


def _deleted(facts: Mapping[str, Any]) -> bool:
    """Whether recorded erasure facts say something was deleted (not only kept)."""
    return bool(facts.get("found")) and facts.get("mode") != "kept"


def _erasure_facts(result: ErasureResult, at: str) -> dict[str, Any]:
    return {
        "endpoint": result.endpoint,
        "mode": result.mode,
        "reversible": result.reversible,
        "found": result.found,
        "vendor_status": result.vendor_status,
        "confirmation": result.confirmation,
        "note": result.note,
        "pending": result.pending,
        "erased_at": at,
    }
