"""The work of each request kind (erase, access, rectify), run and resumed by the service.

Every step records its outcome per system before the next one starts, so a request killed at
any point resumes on retry: systems already final are skipped, ``in_progress`` ones are run
again (every adapter verb used here is idempotent), and the sealed manifest taken before the
first deletion still names every system's ids.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import jobs
from connector.access import (
    AUDIT_TRAIL,
    BUNDLE_FILES,
    art15_facts,
    sent_by_klantsync,
    write_bundle,
)
from connector.access_labels import labels_for
from connector.adapter import (
    RETAINED,
    ErasureResult,
    OutboundRecord,
    Subject,
    placed_by,
    placed_by_another,
    read_records,
)
from connector.crypto import DecryptionError, outbox_context
from connector.dsr_input import empties
from connector.dsr_runbase import STRANGER, RunBase, own_id, settle
from connector.dsr_store import (
    FINAL_STATUSES,
    HELD_PHONE,
    ON_HOLD,
    RequestRow,
    SystemRow,
    on_hold,
)
from connector.dsr_views import DsrError, StaleRunError
from connector.errors import KlantsyncError
from connector.model import Person, is_archived, normalise_email
from connector.moves import same_person, vacated_by
from connector.retention import count_bundles_of, delete_bundles_of, record_bundle
from connector.state import WITHDRAWAL, before_resend
from connector.systems import System

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = ["KindRunner"]

log = logging.getLogger("klantsync.dsr")

#: Why a rectification leaves a system that holds the subject in its recycle bin only.
_HELD_ONLY_ARCHIVED = (
    "held only archived (restorable) in the system, which cannot correct it there; "
    "a write would create the person again"
)

#: Why a rectification leaves a field to the sync (:meth:`KindRunner._changed_in_source_since`).
_SUPERSEDED = "changed in the source since the correction: the sync carries the new value"
#: What a correction's step says of the fields asked empty that the system kept (names only).
_KEPT_NOT_EMPTIED = "kept {fields} as held, not emptied: the system cannot hold {them} empty"


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

#: What an erasure keeps of the person, in its receipt's words (:meth:`KindRunner._kept`).
_KEPT_SUPPRESSION = (
    "suppression entry (keyed hash of the subject, no e-mail) so no sync re-creates the person"
)
_KEPT_AUDIT = "audit entries (keyed hash ids only)"


@dataclasses.dataclass(frozen=True)
class _Tenure:
    """When a person held an address, in the audit trail's seqs: after ``after``, the
    entry of another person's last move away from it (``None``: nobody left it before), up
    to ``until``, that of the person's own move away (``None``: they hold it still). 0 for
    a move whose entry retention purged, with every entry before it."""

    after: int | None = None
    until: int | None = None

    def covers(self, seq: int | None) -> bool:
        """Whether what the trail places at ``seq`` came while the person held the address.

        ``None`` is a request whose entries retention purged: older than every entry kept,
        so before any move the trail still records; the person's only if nobody held the
        address before them and their own move, if any, is still in the trail.
        """
        if seq is None:
            return self.after is None and self.until != 0
        return (self.after is None or seq > self.after) and (
            self.until is None or seq <= self.until
        )


class KindRunner(RunBase):
    """Runs the per-system work of a request and builds its receipt body.

    Args:
        service: the service whose store, runtime and clock it uses.
    """

    async def run(self, row: RequestRow) -> None:
        """Do what is left of ``row`` (an open request).

        Raises:
            StaleRunError: another process changed the request while this run worked on it;
                the run stopped before writing over that, and a retry carries on from it.
        """
        self._held[row.id] = row.manifest
        self._reads[row.id] = {}
        try:
            if row.kind == "erase":
                await self._erase(row)
                self._clear_the_log()
            elif row.kind == "access":
                await self._access(row)
            elif row.kind == "rectify":
                await self._rectify(row)
            else:  # pragma: no cover - kinds come from this module's own writers
                raise ValueError(f"unknown request kind {row.kind!r}")
        finally:
            self._held.pop(row.id, None)
            self._reads.pop(row.id, None)

    def _clear_the_log(self) -> None:
        """Truncate the store's write-ahead log after an erasure's run: :meth:`Store.truncate_log`.

        The store zeroes the pages the erasure's deletes free, but the log keeps the frames
        that wrote what was deleted (the person's sealed payloads, which the store's keys
        still open): a checkpoint copies the log back and starts it again from its beginning
        without clearing it, and the daemon's connection, open for months, never deletes it.
        A reader in the log (a command beside the daemon) keeps it from being cleared now:
        the store then tries again (its background checkpointer, its closing).
        """
        self.rt.store.truncate_log()

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

    def receipt(self, row: RequestRow, systems: list[SystemRow]) -> dict[str, Any]:
        """The receipt body (signed by the caller): per-system outcomes, no personal data."""
        connector: dict[str, Any]
        if row.kind == "erase":
            # An access bundle the erasure's last step (delete_bundles, just before with no
            # wait between) could not delete (its folder's permissions) is still on disk:
            # said so, not listed among what went.
            left = count_bundles_of(self.rt.store, self.rt.keyring, self._erased_ids(row))
            deleted = [
                "identity map rows",
                "delivered hashes",
                "outbox rows",
                "dead letters",
                "queued syncs of the person (webhook changes, resyncs)",
            ]
            kept = self._kept(row)
            if left:
                kept = (
                    f"{kept}; {left} access bundle(s) the erasure could not delete, which the "
                    "retention sweep deletes when due"
                )
            else:
                deleted.append("access bundles written for the person")
            connector = {"deleted": [*deleted, "erasure manifest"], "kept": kept}
        elif row.kind == "access":
            erased_by = self.service.open_manifest(row).get("erased_by") if row.manifest else None
            connector = {
                "bundle_files": list(BUNDLE_FILES),
                "note": "the access bundle is the only place klantsync wrote personal data in "
                "clear; the request's sealed copy of the e-mail is destroyed",
            }
            if erased_by:
                connector = {
                    "bundle_files": [],
                    "note": f"no access bundle was written: the person's erasure "
                    f"({', '.join(erased_by)}) completed while this request was open, and "
                    "what it would have copied was erased with it; the request's sealed copy "
                    "of the e-mail is destroyed",
                }
        else:
            # Said only where there is one: a note about a source nobody configured made the
            # reader look for a step to correct by hand that is not there.
            read_only = self._read_only_sources()
            connector = {}
            if read_only:
                connector = {
                    "note": f"a source klantsync only reads ({', '.join(read_only)}) keeps its "
                    "values: a system marked skipped there must be corrected by hand, or its "
                    "next change sends them again"
                }
        body: dict[str, Any] = {
            "version": 1,
            "request_id": row.id,
            "kind": row.kind,
            "subject_id": row.subject_id,
            "source": row.source,
            "received_at": row.received_at,
            "deadline": row.deadline,
            # Why a deadline is past the month (Art. 12(3)): without it, the proof of an
            # answer within an extended deadline leant on an audit trail it does not carry.
            "extension_reason": row.extension_reason,
            "issued_by": "klantsync",
            "systems": [
                {
                    "system": s.system,
                    # A system taken out of the config since (its part exempted) has none.
                    "adapter": (
                        self.rt.systems[s.system].settings.adapter
                        if s.system in self.rt.systems
                        else "no longer configured"
                    ),
                    "status": s.status,
                    "attempts": s.attempts,
                    "detail": s.detail or "",
                    **s.result,
                }
                for s in systems
            ],
            "connector": connector,
        }
        superseded_by = sorted(
            {str(s.result["superseded_by"]) for s in systems if s.result.get("superseded_by")}
        )
        if superseded_by:
            # A correction the person's erasure closed: which erasure, by its id.
            body["superseded_by"] = superseded_by[0]
        return body

    def _kept(self, row: RequestRow) -> str:
        """What an erasure keeps of the person, for its receipt: the suppression entry, the
        keyed ids of the systems' records it erased (noted by each run, kept
        ``webhook_ids_days`` to know a system's report of the deletion for this erasure's
        echo, :meth:`DsrService.echo_of_own_erasure`), and the audit entries. The person is
        told all of it; the record ids used to go unsaid."""
        parts = [_KEPT_SUPPRESSION]
        records = self.db.erased_records_of(row.id)
        if records:
            days = self.rt.config.retention.webhook_ids_days
            parts.append(
                f"keyed hashes of the ids of the {records} system record(s) erased (no id in "
                f"clear), for {days} days, so a system's report of this erasure is not taken "
                "for a new request"
            )
        parts.append(_KEPT_AUDIT)
        return "; ".join(parts)

    # -- erase ---------------------------------------------------------------------------------

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
        from connector.dsr import NO_LONGER_CONFIGURED

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

    # -- access --------------------------------------------------------------------------------

    async def _access(self, row: RequestRow) -> None:
        if self._unconfigured_unsettled(row):
            # The person was sent to a system the config no longer has, which may still hold
            # them: a copy without it would pass for whole. Nothing is read until it is
            # configured again, or its part is exempted and the bundle says why it was not
            # read (as an erasure waits; DsrService._note_unconfigured says so on the part).
            # So too for one an earlier attempt read: what it found is not kept, and its
            # part is unsettled again (_note_unconfigured, before each run).
            return
        manifest = self.service.open_manifest(row)
        # Under a former address the person's records are held under their current id (see
        # connector/moves.py), as an erasure finds them; the systems' ids of every id count.
        # An address changed in a source since the last sync is found through that source's
        # record (a source that cannot be asked now fails its own read below as well, and the
        # retry asks again).
        sources = self._sources(row)
        # Their own id in each source that holds the address for someone the store has not
        # met (the address is taken): an order there is theirs by it.
        owners: dict[str, str] = {}
        former, _ = await self._former_subjects(manifest["email"], sources, row=row, owners=owners)
        people = self._same_person(row.subject_id, [*manifest.get("also", []), *former])
        # The address is another customer's now: a system that still finds it on the person
        # who had it (HubSpot keeps a former address on the contact) shows that person.
        taken = STRANGER in former
        # Someone else held the address before (he moved away, or the address is taken
        # over): a guest order placed under it before the person's own account was made is
        # nobody's by id, and may be his (his name, his address, what he bought).
        held_before = taken or any(
            not who <= set(people) for who in vacated_by(self.rt.store, [row.subject_id]).values()
        )
        ids: dict[str, str] = {}
        for sid in people:
            for name, external_id in self.service.identities(sid).items():
                ids.setdefault(name, external_id)

        # And under an address a payload still queued carried (_queued_addresses).
        queued = self._queued_addresses(people, manifest["email"])

        async def read(name: str) -> list[dict[str, Any]]:
            self.db.set_system(row.id, name, "in_progress", attempt=True)
            system = self.rt.systems[name]
            subject = Subject(email=manifest["email"], external_id=ids.get(name))
            records = await system.adapter.find(subject)
            # A record the identity map knows as another subject's is theirs (_others).
            others = self._others(name, records, people)
            records = [r for r in records if system.mapping.record_id(r) not in others]
            if taken:
                records = [
                    r
                    for r in records
                    if _holds_address(system, r, manifest["email"], owners.get(name))
                ]
            else:
                # An order placed by another customer of the system under this address
                # (one who had it before) is theirs, not the person's: found by the
                # address it was billed to, it showed their name and order to whoever
                # holds the address now.
                own = ids.get(name)
                records = [r for r in records if own is None or not _someone_elses(r, own)]
            if held_before:
                records = _without_guest_orders_before(
                    system, records, owners.get(name) if taken else ids.get(name)
                )
            seen = {system.mapping.record_id(r) for r in records}
            for address in queued.get(name, []):
                for record in await system.adapter.find(Subject(email=address)):
                    if system.mapping.record_id(record) not in seen:
                        seen.add(system.mapping.record_id(record))
                        records.append(record)
            return records

        # Every system is read again on a retry: records are never stored between attempts.
        # One exempted from the request (DsrService.exempt) is not read at all; the bundle
        # tells the person why (Art. 12(4)), from the reason the exemption stored.
        reading = self._askable(row)
        outcomes = await settle({n: read(n) for n in reading})
        # Read again after: a system exempted while it was being read is left out too.
        exempt = self._exempted(row)
        held: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for name, outcome in outcomes.items():
            if isinstance(outcome, BaseException) and not isinstance(outcome, KlantsyncError):
                raise outcome  # a fault of the connector's own, not the system's answer
            if name in exempt:
                continue  # not in the bundle, whatever the read found
            if isinstance(outcome, KlantsyncError):
                reason = self._exempt_if_shut_out(row, name, outcome)
                if reason is not None:
                    exempt[name] = reason  # the bundle says why it holds nothing of it
                else:
                    self._failed(row, name, str(outcome))
            else:
                assert isinstance(outcome, list)
                held[name] = (self.rt.systems[name].settings.adapter, outcome)
                facts = {"endpoint": "find", "records": len(outcome)}
                self._set(row, name, "done" if outcome else "not_held", None, facts)
        if any(name not in held and name not in exempt for name in reading):
            return
        connector = {
            "subject_id": row.subject_id,
            **({"exempt_systems": sorted(exempt)} if exempt else {}),
            # Under an address another person gave up, what the store holds sealed under it
            # predates this holder (the store has not met them): the former holder's data.
            **self._holdings(row.subject_id, sealed=not taken),
            **(
                {"same_person": [{"subject_id": s, **self._holdings(s)} for s in people[1:]]}
                if len(people) > 1
                else {}
            ),
            "requests": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "received_at": r.received_at,
                    "status": r.status,
                    "completed_at": r.completed_at,
                }
                for r in self._history(row, people, taken=taken)
            ],
            AUDIT_TRAIL: self._audit_trail(row, people, taken=taken),
        }
        # Checked with no wait between the look and the writing below.
        before = set(manifest.get("erased_before", ()))
        erased = [e for e in self.db.erased_since(people, row.received_at) if e not in before]
        if erased:
            # The person's erasure completed while this request was open (run by another
            # process, or asked under another of their addresses): what was read here may
            # be what it deleted, and a bundle written now would hold it in clear after the
            # erasure's receipt said it was gone. No bundle; the receipt says why.
            manifest["erased_by"] = erased
            self._save(row, manifest)
            self.service.audit("dsr.access_not_written", row, erasures=erased)
            return
        target = Path(manifest["out_dir"]).resolve()
        # Recorded before a file is written: a run that dies in between leaves the record
        # of a bundle that may be there, which the person's erasure and the retention sweep
        # delete. Written first, a bundle nobody knew of outlived a completed erasure.
        # Recorded under every id the person is known by: their erasure, asked under
        # whichever address the systems know, deletes it.
        record_bundle(
            self.rt.store, self.rt.keyring, target, BUNDLE_FILES, subject_ids=list(people)
        )
        # Under an address another person gave up, what was delivered under it is theirs,
        # as what the store holds sealed under it is (above).
        sent = self._last_sent([] if taken else people)
        try:
            self._write_bundle(row, target, held, connector, exempt, sent)
        except OSError as exc:
            # Every system was read; the retry reads them again and writes once it can.
            raise DsrError(
                f"request {row.id}: the access bundle cannot be written to its folder "
                f"({exc.strerror or type(exc).__name__}); fix the folder and retry"
            ) from None
        self.service.audit("dsr.access_bundle", row, systems=sorted(held))

    def _audit_trail(
        self, row: RequestRow, people: list[str], *, taken: bool
    ) -> list[dict[str, Any]]:
        """The audit entries about the person (Art. 15: data about the processing of them),
        as stored: ids, statuses, counts and field names, never a value in clear.

        Under every id the person is known by, as their requests are, and only from when
        they held it (:meth:`_tenures`): not what another person did under one of them. Under
        an address another person gave up that the store has not seen this one take
        (``taken``), only this request's entries are known to be theirs.
        """
        if taken:
            found = self.db.audit_about([row.subject_id], request=row.id)
        else:
            tenures = self._tenures(people)
            found = [
                e
                for e in self.db.audit_about(list(tenures))
                if tenures[e.subject_id or ""].covers(e.seq) or e.data.get("request") == row.id
            ]
        return [
            {"at": e.ts, "kind": e.kind, "subject_id": e.subject_id, "data": e.data} for e in found
        ]

    def _history(self, row: RequestRow, people: list[str], *, taken: bool) -> list[RequestRow]:
        """The person's requests, in the order they came: those made under any id they are
        known by (a request made under a former address is theirs too), while they held it
        (:meth:`_tenures`: its ``dsr.received`` entry within that time), and this one.

        Not another person's, by the rule :meth:`_audit_trail` follows: under an address
        another person gave up that the store has not seen this one take (``taken``), only
        this request is known to be theirs.
        """
        if taken:
            return [row]
        tenures = self._tenures(people)
        received = self.db.received_seqs(list(tenures))
        rows = {
            r.id: r
            for sid, tenure in tenures.items()
            for r in self.db.history(sid)
            if r.id == row.id or tenure.covers(received.get(r.id))
        }
        return sorted(rows.values(), key=lambda r: (r.received_at, r.id))

    def _tenures(self, people: list[str]) -> dict[str, _Tenure]:
        """Every id the person's requests and audit entries may be under, with when they
        held it: ``people``, and the addresses they left that someone else holds now (no
        longer among ``people``: :func:`same_person`), whose earlier history is theirs.

        Ids are addresses, and an address passes from person to person. Under one someone
        else left before the person took it, what came before that move is the other's;
        under one the person left, what came after their move is whoever took it next's,
        who may not have been synced yet (the store cannot tell them from the person).
        """
        ids = list(dict.fromkeys([*people, *self.db.left_by(people)]))
        mine = set(ids)
        tenures = dict.fromkeys(ids, _Tenure())
        for sid, who in vacated_by(self.rt.store, ids).items():
            others = who - mine
            # By any of the leaver's ids: the entry of a move names the id they moved to
            # then, which a later move of theirs made an alias of their current one.
            leavers = (others | set(self.db.left_by(sorted(others)))) - mine
            tenures[sid] = _Tenure(
                after=self.db.moved_away_at(sid, leavers) if others else None,
                until=self.db.moved_away_at(sid, mine) if who & mine else None,
            )
        return tenures

    def _holdings(self, subject_id: str, *, sealed: bool = True) -> dict[str, Any]:
        """What the connector keeps about the subject, its systems' ids as the systems know
        them (the person is shown their Mailchimp id, not the store's cloaked form); with
        ``sealed``, what it holds of their data sealed, opened (:meth:`_sealed_data`)."""
        held = self.db.holdings(subject_id)
        held["identities"] = self.service.identities(subject_id)
        opened = self._sealed_data(subject_id) if sealed else {}
        if opened:
            held["sealed_data"] = opened
        return held

    def _sealed_data(self, subject_id: str) -> dict[str, list[dict[str, Any]]]:
        """What the connector keeps of the person's data sealed, opened: the payloads queued
        for a system, held from a former address and refused by a system, by kind.

        Kept for days (a dead letter for ``dead_letters_days``), and it may say what no
        system holds any more (a value since changed at the source): a copy that gave only
        when they were queued left out data the connector processes (Art. 15(3)).
        """
        found: dict[str, list[dict[str, Any]]] = {}
        for kind, system, at, blob in self.db.sealed_holdings(subject_id):
            try:
                envelope = self.rt.keyring.open_json(blob, outbox_context(system))
                entry: dict[str, Any] = {"system": system, "at": at, "data": envelope}
            except DecryptionError:
                # Still held, though no key opens it: said so rather than left out.
                entry = {"system": system, "at": at, "unreadable": True}
            found.setdefault(kind, []).append(entry)
        return found

    def _last_sent(self, people: list[str]) -> dict[str, dict[str, Any]]:
        """Per system, which of the person's fields klantsync last delivered there, and
        when (:func:`~connector.access.sent_by_klantsync`), under any of their ids: field
        names as the store keeps them (migration 27), never a value."""
        store = self.rt.store
        delivered = [
            (
                system,
                at,
                before_resend(payload_hash).startswith(WITHDRAWAL),
                None if number is None else store.field_names(number)[1],
            )
            for system, at, payload_hash, number in self.db.last_sent(people)
        ]
        mappings = {name: system.mapping for name, system in self.rt.systems.items()}
        return sent_by_klantsync(delivered, mappings)

    def _write_bundle(
        self,
        row: RequestRow,
        target: Path,
        held: dict[str, tuple[str, list[dict[str, Any]]]],
        connector: dict[str, Any],
        exempt: dict[str, str],
        sent: dict[str, dict[str, Any]] | None = None,
    ) -> list[Path]:
        return write_bundle(
            target,
            request_id=row.id,
            subject_id=row.subject_id,
            generated_at=self.service.timestamp(),
            systems=held,
            connector=connector,
            facts=art15_facts(self.rt.config),
            exempt=dict(sorted(exempt.items())),
            sent=sent,
            labels=labels_for(self.rt.config),
        )

    # -- rectify -------------------------------------------------------------------------------

    async def _rectify(self, row: RequestRow) -> None:
        manifest = self.service.open_manifest(row)
        states = {s.system: s for s in self.db.systems(row.id)}
        todo = [n for n in self.rt.systems if states[n].status not in FINAL_STATUSES]
        # Each system's id for the person, under any address they had: one who changed it in
        # the shop since the last sync is held elsewhere under the former.
        ids: dict[str, str] = {}
        person = await self.person(manifest["email"], row.subject_id, row)
        for sid in person:
            for name, external_id in self.service.identities(sid).items():
                ids.setdefault(name, external_id)
        superseded = await self._changed_in_source_since(row, manifest, states, ids)
        # A corrected phone goes to each system as a sync sends it: read in the person's
        # country. The corrected country says which, else the one the system holds, else
        # (a system that keeps no country, Pipedrive's persons) the source's.
        fields: dict[str, str] = manifest["fields"]
        if "country" in fields:
            # An emptied country gives none: a phone set with it is read as each system's
            # mapping reads one without a country code.
            home = self._corrected_country(fields["country"])
        elif any(self._is_phone(name) for name in fields):
            home = await self._home_country(row, manifest["email"], ids)
        else:
            home = None
        outcomes = await settle(
            {
                n: self._rectify_system(row, n, manifest, ids.get(n), superseded, person, home)
                for n in todo
            }
        )
        crashed = [o for o in outcomes.values() if isinstance(o, BaseException)]
        if crashed:
            raise crashed[0]
        settled = {s.system: s.status for s in self.db.systems(row.id)}
        if any(settled.get(name) == "done" for name in self._sources()):
            # The source holds the correction now, and the systems hold it too; but the
            # hashes say what was last sent from the source, the values before it. A change
            # back to those values in the source would then look like no change at all, and
            # the systems would keep the correction. So the next sync sends the person
            # again. (A source klantsync only reads keeps its values and its hashes: the
            # correction stays until the person changes there.) Only to the systems sent a
            # corrected field: the others' payloads hold none, and a write of them for a
            # corrected phone asked a newsletter member to confirm their subscription again.
            receiving = [
                name
                for name, system in self.rt.systems.items()
                if any(f.canonical in fields for f in system.mapping.sent_fields())
            ]
            # A write of theirs answered meanwhile is acknowledged first: committed after the
            # mark, its hash replaced the mark (connector/inflight.py).
            await self.rt.engine.in_flight.landed_everywhere(person)
            with self.rt.store.transaction():
                self.db.resend_on_next_sync(person, receiving)

    async def _changed_in_source_since(
        self,
        row: RequestRow,
        manifest: dict[str, Any],
        states: dict[str, SystemRow],
        ids: dict[str, str],
    ) -> frozenset[str]:
        """Fields the person (or the shop) changed in a source since the correction, which
        the sync carries: they are left to it.

        A correction left open for a system that was down is retried later; by then the
        customer may have changed the field in the shop, and the sync carried the new value
        everywhere. Written then, the correction's older value would overwrite it. A source
        that took the correction on an earlier attempt and holds another value now changed
        since. One the correction has not reached (it was the system that was down) holds
        another value than the correction whether the customer changed it or not: it changed
        since only where a system the correction reached holds that value now, having held
        another before (:meth:`_carried_since`). Written over, the customer's own change was
        undone there, and the resend it set up undid it everywhere. A source that cannot be
        read now decides nothing. A source klantsync only reads (Shopify) is never written:
        its values when the correction was first run were noted (:meth:`_note_read_only`),
        and one it holds now that is neither that nor the correction is the customer's since.
        """
        changed: set[str] = set()
        fields: dict[str, str] = manifest["fields"]
        written = {n for n, s in states.items() if s.status == "done"}
        before: dict[str, dict[str, str]] = manifest.get("before", {})
        for name in self._sources():
            state = states.get(name)
            asked = before.get(name, {}) if state is not None and state.status == "skipped" else {}
            if state is None or (state.status != "done" and not written - {name} and not asked):
                continue  # the correction reached no system yet: nothing was carried over it
            system = self.rt.systems[name]
            held = await self._held_now(row, name, manifest["email"], ids.get(name))
            if held is None:
                continue
            # Read as the sync read it: a phone without a country code in the person's own
            # country (the source holds the corrected one, if the correction had one).
            country = held.get("country")
            for field, value in fields.items():
                spec = system.mapping.fields.get(field)
                if spec is None or not spec.inbound:
                    continue
                if _holds(held.get(field), system.mapping, field, value, country):
                    continue
                if field in asked:
                    if asked[field] != self._value_hash(name, field, held.get(field)):
                        changed.add(field)
                    continue
                if state.status == "done" or await self._carried_since(
                    row, manifest, written - {name}, ids, field, held.get(field)
                ):
                    changed.add(field)
        return frozenset(changed)

    async def _carried_since(
        self,
        row: RequestRow,
        manifest: dict[str, Any],
        written: set[str],
        ids: dict[str, str],
        field: str,
        value: Any,
    ) -> bool:
        """Whether a system the correction of ``field`` was written to holds ``value`` (a
        source's) now, and held another value before the write: the sync carried it there
        since, so the source's value is a change made after the correction.

        The one that held that value before is no evidence (a sync of another change may
        have carried the source's old value back over the correction, which a write to the
        source then puts right). Systems whose values before were not noted (a correction
        written before they were) decide nothing.
        """
        before: dict[str, dict[str, str]] = manifest.get("before", {})
        for name in sorted(written):
            noted = before.get(name, {}).get(field)
            if noted is None or name not in self.rt.systems:
                continue
            if noted == self._value_hash(name, field, value):
                continue
            held = await self._held_now(row, name, manifest["email"], ids.get(name))
            if held is not None and held.get(field) == value:
                return True
        return False

    def _note_before(
        self,
        row: RequestRow,
        manifest: dict[str, Any],
        name: str,
        held: Person | None,
        names: Sequence[str],
    ) -> None:
        """Note, sealed with the request, keyed hashes of the values ``name`` holds of the
        fields it is about to be written (:meth:`_carried_since`); the first write's only,
        as a retry may find its own correction there already."""
        before: dict[str, dict[str, str]] = manifest.setdefault("before", {})
        if held is None or name in before:
            return
        before[name] = {field: self._value_hash(name, field, held.get(field)) for field in names}
        self._save(row, manifest)

    async def _note_read_only(
        self,
        row: RequestRow,
        manifest: dict[str, Any],
        name: str,
        external: str | None,
        kept: Sequence[str],
    ) -> None:
        """Note what a source klantsync only reads holds of the corrected fields when the
        correction is first run (:meth:`_changed_in_source_since`): a retry for a system
        that was down then tells a change the customer made there since, which the sync
        carried, from the value the correction was asked to replace. Unread (the source
        could not be asked), nothing is noted, and nothing is told."""
        if name not in manifest.get("before", {}):
            held = await self._held_now(row, name, manifest["email"], external)
            self._note_before(row, manifest, name, held, kept)

    async def _held_now(
        self, row: RequestRow, name: str, email: str, external: str | None
    ) -> Person | None:
        """The person's own live record in ``name`` as its mapping reads it, read in this
        run (:meth:`_records`); ``None`` where it holds none, or cannot be asked (which then
        decides nothing)."""
        try:
            records = await self._records(row, name, Subject(email=email, external_id=external))
        except KlantsyncError:
            return None
        return _held_person(self.rt.systems[name], records, external)

    def _value_hash(self, name: str, field: str, value: Any) -> str:
        """A keyed hash of a value ``name`` holds of ``field``: compared, never read back."""
        return self.rt.keyring.payload_hash(f"{name}:before-correction", {field: value})

    def _corrected_country(self, value: str) -> str | None:
        """A corrected country as the mappings read it (its code), for every system: one
        whose mapping keeps no country still reads the corrected phone in it. ``None`` for
        one emptied (an empty value)."""
        if empties(value):
            return None
        for system in self.rt.systems.values():
            spec = system.mapping.fields.get("country")
            if spec is not None:
                code = spec.convert(value)
                if isinstance(code, str):
                    return code
        return None

    def _is_phone(self, field: str) -> bool:
        """Whether some mapping reads ``field`` as a phone number."""
        return any(
            "phone" in system.mapping.fields[field].transform_names
            for system in self.rt.systems.values()
            if field in system.mapping.fields
        )

    async def _home_country(self, row: RequestRow, email: str, ids: dict[str, str]) -> str | None:
        """The person's country as a source holds it (the first the request may ask that
        answers with one): where a sync reads a phone without a country code from."""
        for name in self._sources(row):
            system = self.rt.systems[name]
            if "country" not in system.mapping.fields:
                continue
            subject = Subject(email=email, external_id=ids.get(name))
            try:
                records = await self._records(row, name, subject)
            except KlantsyncError:
                continue
            country = _held_country(system, [r for r in records if not is_archived(r)])
            if country is not None:
                return country
        return None

    async def _rectify_system(
        self,
        row: RequestRow,
        name: str,
        manifest: dict[str, Any],
        external: str | None,
        superseded: frozenset[str] = frozenset(),
        people: Sequence[str] = (),
        home: str | None = None,
    ) -> None:
        system = self.rt.systems[name]
        fields: dict[str, str] = manifest["fields"]
        names = sorted(
            n for n in fields if n in system.mapping.fields and system.mapping.fields[n].outbound
        )
        if names and set(names) <= superseded:
            self._set(row, name, "skipped", _SUPERSEDED)
            return
        # Named on the step whatever else it says: the person is told which of the fields
        # asked for this system were not written (the source's newer value stands).
        left = [n for n in names if n in superseded]
        names = [n for n in names if n not in superseded]
        emptying = [n for n in names if empties(fields[n])]
        if not names:
            kept = sorted(
                n for n in fields if n in system.mapping.fields and system.mapping.fields[n].inbound
            )
            detail = "this system receives none of the fields"
            if kept:
                await self._note_read_only(row, manifest, name, external, kept)
                # A source klantsync only reads: the old value stays there, and the next change
                # to the person there would send it to every system again.
                detail = (
                    f"holds {', '.join(kept)} but klantsync does not write them here: correct "
                    "them in this system too, or its next change to the person sends the old "
                    "values again"
                )
            self._set(row, name, "skipped", detail)
            return
        email: str = manifest["email"]
        self.db.set_system(row.id, name, "in_progress", attempt=True, manifest=self._version(row))
        # A write of this process's sync for the person may be on its way with the value
        # being corrected: it lands first, or it would land over the correction. (A sync of
        # another process is not seen here: see README, Known limits.)
        await self.rt.engine.in_flight.landed(name, [row.subject_id, *people])
        try:
            # Read afresh, as a correction reads (_records): the person's records, not what
            # only an access copy holds (a shop's orders, a CRM's notes, a member's activity).
            held = await read_records(system.adapter, Subject(email=email, external_id=external))
            # A record found by the address beside its own (a housemate's CRM person with the
            # person's address as a second e-mail) is the other subject's: corrected with the
            # person, it took their name and phone. The write leaves it (OutboundRecord.spare).
            others = self._others(name, held, [row.subject_id, *people])
            held = [r for r in held if system.mapping.record_id(r) not in others]
            records = [record for record in held if not is_archived(record)]
            if not records:
                # Nothing to correct: a correction neither creates the person nor brings an
                # archived record back.
                if held:
                    self._set(row, name, "skipped", _left_to_others(_HELD_ONLY_ARCHIVED, others))
                else:
                    # Orders are not read for a correction: the adapter says what it leaves
                    # of them unread (a shop's guest orders), so the step does not deny them.
                    held_none = (
                        getattr(system.adapter, "not_held_note", None)
                        or "the system holds no record for the subject"
                    )
                    self._set(row, name, "not_held", _left_to_others(held_none, others))
                return
            external = external or own_id(system, records, email)
            self._note_before(row, manifest, name, _held_person(system, records, external), names)
            # Under the address the system holds them by: asked under a former address (they
            # moved since), the correction wrote that one back over the current, in every
            # system whose mapping sends the e-mail.
            held_as = _held_address(system, records, external) or email
            person = Person(email=held_as)
            # A phone without a country code is one of the person's own country, as a sync
            # reads it: the country corrected with it, else the one the system holds, else
            # the source's (``home``).
            country = home if "country" in fields else _held_country(system, records) or home
            # A field asked empty ("remove my phone number") is not written a value: its
            # path is named to empty (OutboundRecord.clear), as the sync names one the source
            # no longer holds, and the adapter empties it as its vendor does.
            for field_name in names:
                if field_name not in emptying:
                    person[field_name] = system.mapping.convert_for(
                        field_name, fields[field_name], country
                    )
            # A number the system holds without a country code is read in the country held
            # beside it: a country corrected alone made the next sync read a Dutch "06 ..."
            # as +32 6 ... and send that to every system. It is written in full with the
            # country, so it means what it meant.
            in_full = _numbers_in_full(system, records, external, names, country)
            for field_name, number in in_full.items():
                person[field_name] = number
            clear = frozenset(system.mapping.fields[n].path for n in emptying)
            outbound = OutboundRecord(
                ref=row.id,
                email=held_as,
                external_id=external,
                fields=system.mapping.outbound(person),
                spare=others,
                clear=clear,
            )
            # What waits in the outbox takes the correction first, and a write that took
            # the old payload meanwhile lands before ours: a batch taking it now carries the
            # correction, and none of the old values lands after it.
            self._correct_queued(
                name,
                people,
                outbound.fields,
                email_path=system.mapping.fields["email"].path,
                queued_before=manifest.get("queued_before"),
                emptied=clear,
            )
            await self.rt.engine.in_flight.landed(name, [row.subject_id, *people])
            if name not in self._askable(row):
                # Exempted while this run read the system or waited for its writes: the
                # system is asked nothing more (the part's status stays the exemption's).
                return
            # update, never upsert: a correction changes what is held and nothing else. An
            # upsert would create the person where find saw only something else of theirs
            # (guest orders), add them to a newsletter audience they were never on, or
            # subscribe an archived member again, all without their consent.
            (result,) = await system.adapter.update([outbound])
        except StaleRunError:
            raise  # changed by another process: nothing of this run is written (see _save)
        except KlantsyncError as exc:
            self._failed(row, name, str(exc))
            return
        if result.outcome == "failed":
            self._failed(row, name, f"rejected: {result.reason}")
            return
        facts: dict[str, Any] = {"endpoint": "update", "outcome": result.outcome, "fields": names}
        # Which of ``fields`` asked empty the system left as they were (it cannot hold them
        # empty: a merge field an audience requires, a property HubSpot sets itself), and
        # which it emptied, by name alone (never a value). Said emptied from the asking, a
        # receipt claimed a field gone that the system kept.
        kept = [n for n in emptying if system.mapping.fields[n].path in result.kept]
        emptied = [n for n in emptying if n not in kept]
        if emptied and result.outcome != "skipped":  # skipped: nothing was written
            facts["emptied"] = emptied
        if kept:
            facts["kept"] = kept
        if in_full:
            facts["written_in_full"] = sorted(in_full)  # names only, never the number
        if others:
            facts["left_to_others"] = sorted(others)  # ids only: no personal data
        if result.outcome == "not_held":
            not_held = result.note or "no record the system could update"
            self._set(row, name, "not_held", _left_to_others(not_held, others))
            return
        if result.outcome == "skipped":
            # Held, but in a state a correction may not change (an archived member): the
            # receipt says so instead of claiming the field was corrected.
            skipped = result.note or "left unchanged"
            self._set(row, name, "skipped", _left_to_others(skipped, others), facts)
            return
        # The last-delivered hash stays: it is what the source last sent, so an unchanged
        # source sends nothing and the correction stands (dropping it made the next sync send
        # the source's old values over the correction).
        facts["updated_at"] = self.service.timestamp()
        if result.note:
            facts["note"] = result.note
        said = [result.note] if result.note else []
        if kept:
            them = "it" if len(kept) == 1 else "them"
            said.append(_KEPT_NOT_EMPTIED.format(fields=", ".join(kept), them=them))
        if in_full:
            said.append(
                f"{', '.join(sorted(in_full))} written again with its country code, "
                "unchanged, so the corrected country does not change what it means"
            )
        if left:
            # Written silently, the step read as if every field asked for was corrected.
            facts["left_to_source"] = left
            said.append(f"{', '.join(left)} {_SUPERSEDED}")
        self._set(row, name, "done", _left_to_others("; ".join(said), others) or None, facts)

    def _correct_queued(
        self,
        name: str,
        people: Sequence[str],
        corrected: Mapping[str, Any],
        *,
        email_path: str,
        queued_before: int | None,
        emptied: Collection[str] = frozenset(),
    ) -> None:
        """Write the correction into what waits in ``name``'s outbox for the person.

        A payload queued before the correction was asked (the system was down at the sync)
        carried the old values, and its delivery put them back over the correction. One
        queued since carries a change the person made after asking, which stands. A
        withdrawal waiting there is left as it is: it carries nothing but the e-mail and its
        marker.

        A path the correction empties (``emptied``) leaves the payload's ``fields`` and joins
        its ``clear`` (sorted), which the delivery empties; one it writes a value leaves
        ``clear``, where the sync had named it because the source held it empty then.
        """
        values = {path: value for path, value in corrected.items() if path != email_path}
        empty = {path for path in emptied if path != email_path}
        if not (values or empty) or not people or queued_before is None:
            return  # (a correction asked before its manifest said what was queued: as was)
        context = outbox_context(name)
        with self.rt.store.transaction():
            for row_id, sealed, payload_hash in self.db.queued_rows(name, people, queued_before):
                if payload_hash.startswith(WITHDRAWAL):
                    continue
                try:
                    envelope = self.rt.keyring.open_json(sealed, context)
                except DecryptionError:
                    continue  # left unread, as the delivery would leave it
                kept = {k: v for k, v in envelope.get("fields", {}).items() if k not in empty}
                envelope["fields"] = {**kept, **values}
                clear = (set(envelope.get("clear", ())) | empty) - values.keys()
                if clear:
                    envelope["clear"] = sorted(clear)
                else:
                    envelope.pop("clear", None)
                self.db.reseal_queued(row_id, self.rt.keyring.seal_json(envelope, context))
        # The engine's copy in clear of what it just queued would be sent instead, and a batch
        # that read the rows before (waiting for a connection) the payloads it read.
        self.rt.engine.resealed(people)


def _log_kept(row: RequestRow, problems: list[str]) -> None:
    """Log the access bundles an erasure could not delete, by id (their paths may name the
    person)."""
    for problem in problems:
        log.warning(
            "access bundle not deleted; the sweep deletes it when due",
            extra={"request": row.id, "error": problem},
        )


def _subject(manifest: dict[str, Any], name: str) -> Subject:
    from connector.dsr import PLACEHOLDER_EMAIL

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
    said = (
        f"left {len(spare)} record(s) found under the address that the connector knows as "
        f"another person's (ids {', '.join(sorted(spare))})"
    )
    return dataclasses.replace(result, note="; ".join(n for n in (result.note, said) if n))


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


def _holds_address(
    system: System, record: Mapping[str, Any], email: str, owner: str | None
) -> bool:
    """Whether ``record`` is the customer's who holds ``email`` now: held under it as its
    own address, not a former one the system keeps beside the current; an order only if it
    is theirs by their id in the system (an order placed under the address by the customer
    who had it before is that customer's)."""
    if record.get("type") == "order":
        return not placed_by_another(record, () if owner is None else (owner,))
    own = system.mapping.inbound(record).email
    return own is None or normalise_email(own) == normalise_email(email)


def _someone_elses(record: Mapping[str, Any], own: str) -> bool:
    """Whether ``record`` is an order placed by another customer than ``own`` (a guest
    order, placed by nobody's account, is not)."""
    return record.get("type") == "order" and placed_by_another(record, (own,))


def _without_guest_orders_before(
    system: System, records: list[dict[str, Any]], own: str | None
) -> list[dict[str, Any]]:
    """``records`` without the guest orders placed before the person's own record (``own``,
    their id in the system) was made: under an address someone else held before, those may
    be his. Where no own record, or no time, says otherwise, a guest order is left out."""
    made = next(
        (
            _created(r)
            for r in records
            if r.get("type") != "order" and own is not None and system.mapping.record_id(r) == own
        ),
        None,
    )

    def theirs(record: Mapping[str, Any]) -> bool:
        if record.get("type") != "order":
            return True
        if placed_by(record) is not None:
            return True  # placed by an account: judged by its id (_someone_elses)
        placed = _created(record)
        if made is None or placed is None or (made.tzinfo is None) != (placed.tzinfo is None):
            return False
        return placed > made

    return [r for r in records if theirs(r)]


def _created(record: Mapping[str, Any]) -> dt.datetime | None:
    """When the shop made ``record`` (WooCommerce ``date_created``, Shopify ``createdAt``)."""
    value = record.get("date_created") or record.get("createdAt")
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _held_person(
    system: System, records: list[dict[str, Any]], external: str | None
) -> Person | None:
    """The person's own live record as the mapping reads it: the one with their id (or the
    first that is no order), archived ones left out."""
    own = [r for r in records if r.get("type") != "order" and not is_archived(r)]
    if external is not None:
        own = [r for r in own if system.mapping.record_id(r) == external] or own
    return system.mapping.inbound(own[0]) if own else None


def _numbers_in_full(
    system: System,
    records: list[dict[str, Any]],
    external: str | None,
    names: Sequence[str],
    country: str | None,
) -> dict[str, str]:
    """The person's numbers the system holds that a correction of the country written to it
    (``names`` holds it; ``country`` is the corrected one, ``None`` emptied) makes mean
    another number: by field, each as read now, in E.164. A number given with its country
    code, or a phone corrected with the country, is none of them."""
    if "country" not in names:
        return {}
    own = [r for r in records if r.get("type") != "order" and not is_archived(r)]
    if external is not None:
        own = [r for r in own if system.mapping.record_id(r) == external] or own
    if not own:
        return {}
    held = system.mapping.inbound(own[0])
    numbers: dict[str, str] = {}
    for name, spec in system.mapping.fields.items():
        if name in names or not spec.outbound or "phone" not in spec.transform_names:
            continue
        number = held.get(name)
        if isinstance(number, str) and system.mapping.read_for(own[0], name, country) != number:
            numbers[name] = number
    return numbers


def _held_address(
    system: System, records: list[dict[str, Any]], external: str | None
) -> str | None:
    """The address the system holds the person's own record under: the record with their
    id (or the first that is no order), as the mapping reads it."""
    own = [r for r in records if r.get("type") != "order"]
    if external is not None:
        own = [r for r in own if system.mapping.record_id(r) == external] or own
    for record in own:
        address = system.mapping.inbound(record).email
        if address:
            return address
    return None


def _left_to_others(detail: str, others: frozenset[str]) -> str:
    """A rectification step's ``detail``, saying which records the correction left as
    another subject's (:meth:`KindRunner._others`): by id alone, as the receipt shows it."""
    if not others:
        return detail
    said = (
        f"left {len(others)} record(s) found under the address that the connector knows as "
        f"another person's (ids {', '.join(sorted(others))})"
    )
    return "; ".join(n for n in (detail, said) if n)


def _held_country(system: System, records: list[dict[str, Any]]) -> str | None:
    """The country the system holds for the person, as the mapping reads it."""
    for record in records:
        if record.get("type") == "order":
            continue
        country = system.mapping.inbound(record).get("country")
        if isinstance(country, str):
            return country
    return None


def _holds(held: Any, mapping: SystemMapping, field: str, value: str, country: str | None) -> bool:
    """Whether ``held`` (what a system's mapping reads of ``field``) is the correction's
    ``value``: its conversion, or no value at all for a field the correction empties."""
    if empties(value):
        return held is None or (isinstance(held, str) and not held.strip())
    return bool(held == mapping.convert_for(field, value, country))
