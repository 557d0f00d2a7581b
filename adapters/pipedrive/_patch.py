"""One person Pipedrive holds, written: ``PATCH /persons/{id}`` built from what the person
holds (read first), and a write's answer read as the record's result.

``upsert`` writes to the person under the known id or to the holder of the address this way,
``update`` to every person of the subject's (:mod:`._writes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import httpx

from adapters.pipedrive._calls import PERSONS
from adapters.pipedrive._lookup import _primary_is
from adapters.pipedrive._own_entries import OwnEntries
from adapters.pipedrive._patch_fields import (
    _empty_custom_fields,
    _name_left,
    _not_emptied,
    _other_name_part,
)
from adapters.pipedrive.payloads import person_body, primary_value
from connector.adapter import OutboundRecord, UpsertResult
from connector.http import json_object


class PersonPatch(OwnEntries):
    """A person's update, keeping what a salesperson added and what the record does not carry."""

    async def _patch_holder(
        self, hits: Sequence[int], record: OutboundRecord
    ) -> UpsertResult | None:
        """Write to the first of ``hits`` (oldest first: the stable choice when several
        persons share an address) whose primary e-mail is the record's; ``None`` if none is.

        Search hits and the listing name every person holding the address, a housemate's
        that has it only as a second e-mail among them: written to, that person was renamed
        after the customer and its id learned as theirs (their later erasure deleted it).
        """
        for person_id in hits:
            updated = await self._patch(person_id, record, holder=record.email)
            if updated is not None:
                return updated
        return None

    async def _patch(
        self,
        person_id: int,
        record: OutboundRecord,
        *,
        correcting: bool = False,
        holder: str | None = None,
    ) -> UpsertResult | None:
        """Update one person; ``None`` when it no longer exists (404), or when ``holder`` is
        given and is not the person's primary e-mail (they are not that address's holder).

        The person is read first. The connector owns the primary phone and e-mail of the
        people it writes, not the others a salesperson added (an office number, a work
        address): the phone replaces the entry the connector wrote before (where that is
        not known, only a sole entry: :meth:`_own_phone`) and the others are kept, and so
        does a sync's e-mail (sent as the whole list, which replaced theirs). One already
        in the list stays where it is while unchanged, and becomes the primary entry once
        changed at the source (:func:`other_entries_kept`, told by :attr:`sent` what the
        adapter last wrote there). Pipedrive's ``name`` is both name parts, so a write carrying one
        alone keeps the other as the person holds it (:func:`held_name_part`), else it would
        become the whole name: a customer the shop holds a first name of only lost the last
        name a salesperson typed at every sync, and a field the source does not hold is
        never emptied at the destination.
        ``correcting`` (the update-only verb, which may carry only the corrected fields)
        changes what is given and nothing else: the e-mail list is not sent.

        ``record.clear`` names what the source now holds empty, emptied as Pipedrive
        empties each: the phone by sending the list without the connector's entry
        (:meth:`_phones_without_own`; a salesperson's numbers stay, and of several numbers
        none known as its own, none is removed), a custom field as
        ``null`` (:func:`emptied_custom_fields`), a name part by writing ``name`` without
        it (:func:`_name_left`); never ``name`` empty, which Pipedrive refuses. Any other
        name is not known how to empty, and is left. The result's ``kept`` names what of
        ``clear`` was left so (:func:`_not_emptied`).

        Raises:
            RetryableError: the person's read answered with something that is not a person
                (a front end's page): nothing is written.
        """
        fields = dict(record.fields)
        # Read as find reads (an answer that cannot be read is retryable, not an empty
        # person): what is sent is built from what the person holds, and built from nothing
        # it replaced the entries a salesperson added and dropped the name part the record
        # does not carry, or took the holder of the address for nobody's and made another.
        person = await self._read(person_id)
        if person is None:
            return None
        if person.get("is_deleted"):
            # Marked deleted, restorable for 30 days: as gone as a 404 (find and erase read
            # it so too). Written to, the customer stayed in the recycle bin as "updated".
            return None
        if holder is not None and not _primary_is(person, holder):
            return None  # a housemate's person, holding the address beside their own
        fields.update(_other_name_part(person, fields, record.clear))
        if record.clear:
            fields.update(_name_left(person, fields, record.clear))
        phone = fields.get("phone")
        phone = phone if isinstance(phone, str) else None
        phones = self._list_with(person_id, person, "phones", phone)
        emptying_phone = phones is None and "phone" in record.clear
        if emptying_phone:
            phones = self._phones_without_own(person_id, person)
        emptied_phone = emptying_phone and phones is not None
        # Left in place, the number may still be the customer's: the receipt must not say
        # it was emptied.
        untold = emptying_phone and not emptied_phone and self._own_phone_untold(person_id, person)
        phone_kept = frozenset({"phone"}) if untold else frozenset()
        address = str(fields.get("email") or record.email or "").strip()
        emails = self._list_with(person_id, person, "emails", None if correcting else address)
        body = person_body(
            fields, record.email, creating=False, emails=not correcting, phones=phones
        )
        if emails is not None:
            body["emails"] = emails
        if record.clear:
            _empty_custom_fields(body, record.clear)
        response = await self.client.request(
            "PATCH", f"{PERSONS}/{person_id}", json=body, accept=(404,)
        )
        if response.status_code == 404:
            return None
        result = self._result(record.ref, response, "updated")
        if result.outcome == "updated":
            self._wrote(person_id, address if emails is not None else None, phone)
            if emptied_phone:
                self.sent.emptied(person_id, "phones")
            if record.clear:
                result = result._replace(kept=_not_emptied(record, body) | phone_kept)
        primary = primary_value(emails)
        if primary and result.outcome == "updated":
            self.directory.written(person_id, primary)  # its e-mail list is this now
        return result

    @staticmethod
    def _result(
        ref: str, response: httpx.Response, outcome: Literal["created", "updated"]
    ) -> UpsertResult:
        body = json_object(response)
        data = body.get("data")
        person_id = data.get("id") if isinstance(data, dict) else None
        if body.get("success") is False or person_id is None:
            # A 2xx without the person: its fate is unknown, and writes here are idempotent.
            return UpsertResult(
                ref, "failed", reason=f"{response.status_code} no_result", retryable=True
            )
        return UpsertResult(ref, outcome, external_id=str(person_id))
