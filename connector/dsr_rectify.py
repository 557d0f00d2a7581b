"""A rectification's work: each system's record of the person corrected (Art. 16).

A correction writes only what the system receives and holds of the person; a field
changed in a source since the correction was asked is left to the sync, which carries it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connector.adapter import OutboundRecord, Subject, read_records
from connector.crypto import DecryptionError, outbox_context
from connector.dsr_input import empties
from connector.dsr_runbase import RunBase, left_to_others, own_id, settle
from connector.dsr_store import FINAL_STATUSES, RequestRow, SystemRow
from connector.dsr_views import StaleRunError
from connector.errors import KlantsyncError
from connector.model import Person, is_archived
from connector.state import WITHDRAWAL
from connector.systems import System

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = ["RectifySteps"]

#: Why a rectification leaves a system that holds the subject in its recycle bin only.
_HELD_ONLY_ARCHIVED = (
    "held only archived (restorable) in the system, which cannot correct it there; "
    "a write would create the person again"
)

#: Why a rectification leaves a field to the sync (:meth:`KindRunner._changed_in_source_since`).
_SUPERSEDED = "changed in the source since the correction: the sync carries the new value"
#: What a correction's step says of the fields asked empty that the system kept (names only).
_KEPT_NOT_EMPTIED = "kept {fields} as held, not emptied: the system cannot hold {them} empty"


class RectifySteps(RunBase):
    """The steps of a rectification: each system's record corrected, the rest left."""

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
                # archived record back. But a write of theirs may wait for the system (their
                # first, queued while it was down): it takes the correction, or its delivery
                # makes the record with the old values.
                self._correct_waiting(name, manifest, names, emptying, people, home)
                if held:
                    self._set(row, name, "skipped", left_to_others(_HELD_ONLY_ARCHIVED, others))
                else:
                    # Orders are not read for a correction: the adapter says what it leaves
                    # of them unread (a shop's guest orders), so the step does not deny them.
                    held_none = (
                        getattr(system.adapter, "not_held_note", None)
                        or "the system holds no record for the subject"
                    )
                    self._set(row, name, "not_held", left_to_others(held_none, others))
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
            self._set(row, name, "not_held", left_to_others(not_held, others))
            return
        if result.outcome == "skipped":
            # Held, but in a state a correction may not change (an archived member): the
            # receipt says so instead of claiming the field was corrected.
            skipped = result.note or "left unchanged"
            self._set(row, name, "skipped", left_to_others(skipped, others), facts)
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
        self._set(row, name, "done", left_to_others("; ".join(said), others) or None, facts)

    def _correct_waiting(
        self,
        name: str,
        manifest: dict[str, Any],
        names: Sequence[str],
        emptying: Collection[str],
        people: Sequence[str],
        country: str | None,
    ) -> None:
        """Write the correction of ``names`` into what waits in ``name``'s outbox for a
        person the system holds no live record of yet (:meth:`_correct_queued`)."""
        system = self.rt.systems[name]
        fields: dict[str, str] = manifest["fields"]
        person = Person(email=manifest["email"])
        for field_name in names:
            if field_name not in emptying:
                person[field_name] = system.mapping.convert_for(
                    field_name, fields[field_name], country
                )
        self._correct_queued(
            name,
            people,
            system.mapping.outbound(person),
            email_path=system.mapping.fields["email"].path,
            queued_before=manifest.get("queued_before"),
            emptied=frozenset(system.mapping.fields[n].path for n in emptying),
        )

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
