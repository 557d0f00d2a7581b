"""An access request's work: every system read, and the bundle written (Art. 15).

Under every id the person is known by, and only from when they held it: what another
person did under an address they left, or took over, is not theirs to see.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connector.access import AUDIT_TRAIL, BUNDLE_FILES, art15_facts, sent_by_klantsync, write_bundle
from connector.access_labels import labels_for
from connector.adapter import Subject, placed_by, placed_by_another
from connector.crypto import DecryptionError, outbox_context
from connector.dsr_runbase import STRANGER, RunBase, settle
from connector.dsr_store import RequestRow
from connector.dsr_views import DsrError
from connector.errors import KlantsyncError
from connector.model import normalise_email
from connector.moves import vacated_by
from connector.retention import record_bundle
from connector.state import WITHDRAWAL, before_resend
from connector.systems import System

__all__ = ["AccessSteps"]


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


class AccessSteps(RunBase):
    """The steps of an access request: the systems read, the bundle written."""

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
                found = await system.adapter.find(Subject(email=address))
                # Another subject's record there is theirs, as under the address asked
                # with (the erasure spares it too), and so is another customer's order.
                spared = self._others(name, found, people)
                own = ids.get(name)
                for record in found:
                    record_id = system.mapping.record_id(record)
                    if record_id in seen or record_id in spared:
                        continue
                    if own is not None and _someone_elses(record, own):
                        continue
                    seen.add(record_id)
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
