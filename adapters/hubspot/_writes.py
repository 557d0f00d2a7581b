"""``upsert`` and ``update``: the batch writes of contacts, by HubSpot id where it is known and
by e-mail for the rest, and each record's result read from HubSpot's 207.

- ``upsert``: ``POST /crm/v3/objects/contacts/batch/upsert`` keyed on e-mail, one
  ``objectWriteTraceId`` per input so HubSpot answers a partial failure with 207 and says
  which inputs failed; a contact known by id is updated by that id (``batch/update``), or by
  the id of the contact HubSpot merged it into;
- ``update``: ``batch/update`` only, by id or by e-mail, so a contact HubSpot does not hold is
  never created; one in the recycle bin is left unchanged, and the result says so.

A property the record names to empty (``clear``) is sent ``""``, as HubSpot empties one,
unless HubSpot would refuse it (see :meth:`ContactWrites._with_emptied`). How each record is
sent is in :mod:`adapters.hubspot._inputs`, how HubSpot's answer is read in
:mod:`adapters.hubspot._batch_answers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal

from adapters.hubspot._batch_answers import (
    _category,
    _error_refs,
    _is_retryable,
    _problem_codes,
    _refs_by_sent_id,
    _result_ref,
)
from adapters.hubspot._inputs import (
    _as_property,
    _by_email,
    _chunks_without_duplicates,
    _contact_id,
    _email,
)
from adapters.hubspot._lookup import CONTACTS
from adapters.hubspot._parts import OWN_PROPERTIES, HubSpotParts
from adapters.hubspot._scopes import CONTACTS_WRITE, needing
from adapters.hubspot.settings import MAX_BATCH
from connector.adapter import OutboundRecord, UpsertResult
from connector.errors import RecordError
from connector.http import json_object

#: The contact properties HubSpot sets itself, whose write it refuses (``READ_ONLY_VALUE``), an
#: empty value's too: never emptied, also where the portal's definitions, which say so of each
#: property (``readOnlyValue``), cannot be read.
SET_BY_HUBSPOT: Final = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})

#: A correction's note where HubSpot holds no contact of the record's (see ``update``).
NOT_HELD_NOTE: Final = "no contact with this id or e-mail"
#: A correction's note where the record's contact is in the recycle bin (see ``_unwritten``).
ARCHIVED_NOTE: Final = (
    "left archived and unchanged: the contact is in HubSpot's recycle bin, where its API "
    "changes no contact, and a correction does not restore one"
)

#: A record's reason where HubSpot's answer neither confirmed nor refused its input.
NO_RESULT: Final = "NO_RESULT"


class ContactWrites(HubSpotParts):
    """The adapter's ``upsert`` and ``update``: batch writes of contacts, one result each."""

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Write contacts; one result per record, in input order.

        A contact the connector knows the id of is updated by that id (``batch/update``), so
        a new e-mail address at the source changes the address of the existing contact
        instead of creating a second one; if HubSpot merged that contact into another, the
        record it became is updated by its own id, which the result names
        (:meth:`_merged_into`); if HubSpot no longer has that id (deleted there), the record
        is upserted by e-mail like any other. The rest are
        created or updated by e-mail (``batch/upsert``). A record without an e-mail fails
        locally (``MISSING_EMAIL``); records sharing an id go in separate calls, in order,
        because HubSpot rejects a whole batch with duplicate ids.
        """
        return await self._write_contacts(records, self._upsert_batch)

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Change contacts HubSpot holds; never create one. One result per record, in order.

        As ``upsert``, except that the records without a (live) HubSpot id are updated by
        e-mail with ``batch/update`` and ``idProperty=email``, which answers a contact HubSpot
        does not hold with ``OBJECT_NOT_FOUND`` where ``batch/upsert`` would create it. Such a
        record is ``not_held`` unless the contact is in the recycle bin (see
        :meth:`_unwritten`), and so is one whose e-mail names a contact the connector knows
        as another subject's (``record.spare``): that contact is left as it is.
        """
        results = await self._write_contacts(records, self._update_by_email)
        return [
            await self._unwritten(record, result) if result.reason == "OBJECT_NOT_FOUND" else result
            for record, result in zip(records, results, strict=True)
        ]

    async def _unwritten(self, record: OutboundRecord, result: UpsertResult) -> UpsertResult:
        """What a correction HubSpot found no live contact for says: ``skipped`` with
        :data:`ARCHIVED_NOTE` for an archived contact of the record's (by its id, else its
        e-mail), which HubSpot still holds (restorable for 90 days; ``find`` reports it), as
        Mailchimp's archived member is; else ``not_held``. Said ``not_held``, the receipt told
        the person HubSpot held nothing while it kept the uncorrected values."""
        archived = None
        if record.external_id:
            archived = await self._lookup.archived_by_id(record.external_id, ["email"])
        if archived is None:
            archived = await self._lookup.by_email(record.email, ["email"], archived=True)
        if archived is None or str(archived["id"]) in record.spare:
            return UpsertResult(result.ref, "not_held", note=NOT_HELD_NOTE)
        return UpsertResult(result.ref, "skipped", note=ARCHIVED_NOTE)

    async def _write_contacts(
        self,
        records: Sequence[OutboundRecord],
        by_email_batch: Callable[[Sequence[OutboundRecord]], Awaitable[list[UpsertResult]]],
    ) -> list[UpsertResult]:
        """Write by HubSpot id where known, and with ``by_email_batch`` for the rest (see
        ``upsert``)."""
        kept: dict[int, frozenset[str]] = {}
        if any(record.clear for record in records):  # nearly never: then nothing is read
            records, kept = await self._with_emptied(records)
        results: dict[int, UpsertResult] = {}
        by_id: list[tuple[int, OutboundRecord]] = []
        by_email: list[tuple[int, OutboundRecord]] = []
        for index, record in enumerate(records):
            if not record.email:
                results[index] = UpsertResult(record.ref, "failed", reason="MISSING_EMAIL")
            elif record.external_id and record.external_id.isdecimal():
                by_id.append((index, record))
            else:
                by_email.append((index, record))
        unfound, unanswered = await self._write_by_id(by_id, results)
        merged: list[tuple[int, OutboundRecord]] = []
        for index, record in unfound:
            survivor = await self._merged_into(record)
            if survivor is None:
                by_email.append((index, record))
            else:
                merged.append((index, survivor))
        for index, record in unanswered:
            # HubSpot may leave an update by the id of a contact merged away out of its
            # results without an error: retried by that id, it never landed. Otherwise
            # (the contact still under that id) it stays retried, as any unanswered input.
            survivor = await self._merged_into(record)
            if survivor is not None:
                merged.append((index, survivor))
        # Once: a read by the former id answers the record at the end of every later merge.
        by_email += (await self._write_by_id(merged, results))[0]
        by_email.sort(key=lambda item: item[0])
        for chunk in _chunks_without_duplicates(by_email, MAX_BATCH, _email):
            outcomes = await by_email_batch([record for _, record in chunk])
            for (index, _), outcome in zip(chunk, outcomes, strict=True):
                results[index] = outcome
        for index, names in kept.items():
            # A contact the write created held nothing to empty: nothing of it was kept.
            if results[index].outcome == "updated":
                results[index] = results[index]._replace(kept=names)
        return [results[index] for index in range(len(records))]

    async def _write_by_id(
        self, items: Sequence[tuple[int, OutboundRecord]], results: dict[int, UpsertResult]
    ) -> tuple[list[tuple[int, OutboundRecord]], list[tuple[int, OutboundRecord]]]:
        """Update each record's contact by its id, its result put in ``results`` by position;
        those HubSpot holds no live contact under that id for (``OBJECT_NOT_FOUND``), and
        those it neither confirmed nor refused (``NO_RESULT``, their result put too)."""
        unfound: list[tuple[int, OutboundRecord]] = []
        unanswered: list[tuple[int, OutboundRecord]] = []
        for chunk in _chunks_without_duplicates(items, MAX_BATCH, _contact_id):
            outcomes = await self._update_batch([record for _, record in chunk])
            for (index, record), outcome in zip(chunk, outcomes, strict=True):
                if outcome.reason == "OBJECT_NOT_FOUND":
                    unfound.append((index, record))
                    continue
                results[index] = outcome
                if outcome.reason == NO_RESULT:
                    unanswered.append((index, record))
        return unfound, unanswered

    async def _merged_into(self, record: OutboundRecord) -> OutboundRecord | None:
        """The record addressed to the contact its id's contact was merged into; ``None``
        where the id names none (deleted, in the recycle bin), or one the connector knows as
        another subject's (``record.spare``).

        HubSpot merges two contacts into a new record with a new id, and answers a read by
        either former id with it [doc: changelog, "Updated merge functionality for contacts
        and companies"]; that a write by a former id reaches it is not said. Written by
        e-mail instead, the record made a second contact: the merged record keeps the
        primary contact's address, and HubSpot lets a contact be created with the other.
        """
        contact = await self._lookup.live_by_id(record.external_id or "", ["email"])
        merged = str(contact["id"]) if contact is not None else record.external_id
        if merged == record.external_id or merged in record.spare:
            return None
        return record._replace(external_id=merged)

    async def _with_emptied(
        self, records: Sequence[OutboundRecord]
    ) -> tuple[list[OutboundRecord], dict[int, frozenset[str]]]:
        """The records with each name in ``clear`` that HubSpot can hold empty sent as ``""``,
        and by position the names of ``clear`` each leaves as they are (its result's ``kept``).

        HubSpot empties a property it is sent ``""`` for, in a PATCH and the batch writes
        alike ("Property values can be cleared by passing an empty string" [spec]), and a read
        then answers ``""``; a null it answers with success and leaves the value as it was
        (its answer on HubSpot/hubspot-api-nodejs#324). It refuses a write of a
        property it sets itself (``READ_ONLY_VALUE``) or one the portal does not define
        (``PROPERTY_DOESNT_EXIST``), an empty value included, and fails the record's whole
        input for it: such a name is left out, as is the e-mail, which HubSpot tells contacts
        apart by. Which those are the portal's property definitions say (read at most once an
        hour); without the scope to read them, only the configured ``properties`` are
        emptied, less those HubSpot sets itself. A contact the upsert creates takes ``""`` as
        no value, so nothing is asked first whether it exists (a name left is said kept only
        of a contact the write updated).
        """
        listed = await self._property_lists.names("contacts")
        emptiable = set(listed.names) - listed.read_only - SET_BY_HUBSPOT - set(OWN_PROPERTIES)
        kept = {
            index: frozenset(record.clear - emptiable - record.fields.keys())
            for index, record in enumerate(records)
            if record.clear
        }
        written = [
            record._replace(
                fields={**dict.fromkeys(record.clear & emptiable, ""), **record.fields},
                clear=frozenset(),
            )
            if record.clear
            else record
            for record in records
        ]
        return written, {index: names for index, names in kept.items() if names}

    async def _update_batch(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        inputs = [
            {
                "id": record.external_id,
                "objectWriteTraceId": record.ref,
                "properties": {name: _as_property(value) for name, value in record.fields.items()},
            }
            for record in records
        ]
        return await self._write_batch("batch/update", inputs, records)

    async def _update_by_email(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        results: list[UpsertResult | None] = [None] * len(records)
        for index, record in enumerate(records):
            if record.spare and await self._anothers_by_email(record):
                results[index] = UpsertResult(record.ref, "not_held", note=NOT_HELD_NOTE)
        rest = [i for i, result in enumerate(results) if result is None]
        if rest:
            chunk = [records[i] for i in rest]
            written = await self._write_batch("batch/update", _by_email(chunk), chunk)
            for index, result in zip(rest, written, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    async def _anothers_by_email(self, record: OutboundRecord) -> bool:
        """Whether the live contact with the record's e-mail is one the connector knows as
        another subject's (``record.spare``): written by e-mail, the correction landed on it."""
        contact = await self._lookup.by_email(record.email, ["email"])
        return contact is not None and str(contact["id"]) in record.spare

    async def _upsert_batch(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        return await self._write_batch("batch/upsert", _by_email(records), records)

    async def _write_batch(
        self, action: str, inputs: list[dict[str, Any]], records: Sequence[OutboundRecord]
    ) -> list[UpsertResult]:
        try:
            with needing(CONTACTS_WRITE):
                response = await self.client.request(
                    "POST", f"{CONTACTS}/{action}", json={"inputs": inputs}
                )
        except RecordError as exc:
            if len(records) > 1:
                # HubSpot refused the whole batch for one input (a property the portal lacks,
                # a malformed value): raised, so the engine sends one by one to find it.
                # Failing every record here made the whole batch dead letters.
                raise
            reason = exc.detail or f"HTTP_{exc.status}"
            return [UpsertResult(record.ref, "failed", reason=reason) for record in records]
        body = json_object(response)
        by_ref: dict[str, UpsertResult] = {}
        by_email = {record.email.lower(): record.ref for record in records}
        # What each input was sent as (a contact id, or an e-mail with idProperty=email): an
        # error may name its inputs by these alone (``context.ids``), without trace ids.
        by_sent_id = {
            str(item.get("id") or "").lower(): record.ref
            for item, record in zip(inputs, records, strict=True)
        }
        for result in body.get("results") or []:
            if not isinstance(result, dict):
                continue
            ref = _result_ref(result, by_email)
            if ref is None:
                continue
            outcome: Literal["created", "updated"] = "created" if result.get("new") else "updated"
            external_id = str(result["id"]) if result.get("id") is not None else None
            by_ref[ref] = UpsertResult(ref, outcome, external_id=external_id)
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            category = _category(error, self.client)
            retryable = _is_retryable(error, category)
            codes = _problem_codes(error, self.client)
            reason = f"{category}: {', '.join(codes)}" if codes else category
            for ref in _error_refs(error) or _refs_by_sent_id(error, by_sent_id):
                by_ref[ref] = UpsertResult(ref, "failed", reason=reason, retryable=retryable)
        # An input HubSpot neither confirmed nor rejected is retried: upserts are idempotent.
        return [
            by_ref.get(record.ref)
            or UpsertResult(record.ref, "failed", reason=NO_RESULT, retryable=True)
            for record in records
        ]
