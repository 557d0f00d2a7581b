"""The Pipedrive API v2 persons adapter (settings and client config live in ``settings.py``).

What it does, by contract verb:

- ``pull``: ``GET /persons`` sorted by ``update_time``, 500 a page, paged by
  ``additional_data.next_cursor``; the stored cursor carries the ``updated_since``
  watermark, so a later pull reads only what changed (re-reading the boundary second is
  harmless: the engine skips unchanged content);
- ``upsert``: v2 has neither a batch write nor an upsert for persons, so each record is one
  to three calls, run with bounded concurrency: ``PATCH /persons/{id}`` when the identity map
  knows the id, else the e-mail is looked up and the person whose *primary* e-mail it is is
  patched, else ``POST /persons``. A person holding the address only beside their own (a
  housemate's, the customer's address added as a second e-mail) is not the customer's: it
  is neither renamed after them nor taken as theirs. The lookup is ``GET /persons/search``
  (exact e-mail, the search bucket), or, when many come at once (a first sync), one listing
  of every person (:mod:`.directory`);
- ``update``: the same without the ``POST``: only a person Pipedrive holds is changed;
- ``find``: ``GET /persons/{id}`` for a known id, plus every exact e-mail hit of the search
  whose primary e-mail it is (Pipedrive lets several persons share an e-mail; one holding
  it beside another primary one is not the subject's, as ``upsert`` tells them apart),
  each read in full with what Pipedrive keeps beside them: notes, deals, activities and
  label names (:mod:`.linked`); a person in the 30-day bin among them is reported held,
  marked so (:func:`~.payloads.in_the_bin`); ``find_records`` (an erasure's snapshot and
  check, a correction) the persons alone, and ``find_people`` (a targeted sync: a webhook,
  ``resync --email``) the live persons alone, as ``pull`` lists them;
- ``erase``: ``DELETE /persons/{id}`` for each of those persons. Pipedrive only *marks* a
  person deleted and purges it 30 days later ("Marks a person as deleted. After 30 days, the
  person will be permanently deleted."), and can restore it meanwhile: the result says so
  (``delete_purged_later``, reversible) and the receipt must too. API v2 has no immediate
  permanent deletion of a person. Before each, the notes about the person alone are
  deleted (API v1), and the deals, activities and notes also on another record, which are
  the business's, are counted on the receipt (:mod:`.linked`);
- webhooks: v2 deliveries with HTTP Basic credentials (see :mod:`adapters.pipedrive.webhooks`).

A person marked deleted is not live: no sync or correction writes to them. Whether v2
``GET /persons/{id}`` answers such a person with 404 or with ``is_deleted: true`` during the
30 days is UNVERIFIED (the reference says neither; the sandbox answers 404 unless asked to
show them). Shown, they are still held, restorable until purged: ``find`` reports them and
``erase`` counts them as found (deleted already, reversible), not as "no person held".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Literal

import httpx

from adapters.pipedrive.directory import Directory
from adapters.pipedrive.labels import COPY_LABELS
from adapters.pipedrive.linked import Left, LinkedReader
from adapters.pipedrive.payloads import (
    CUSTOM_FIELDS,
    NAME_PARTS,
    PullCursor,
    decode_cursor,
    emptied_custom_fields,
    encode_cursor,
    failure_reason,
    held_name_part,
    in_the_bin,
    later_time,
    other_entries_kept,
    person_body,
    primary_value,
    search_hits,
    with_contact_keys,
    without_own_entry,
)
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.pipedrive.sent import Kind, LastSent
from adapters.pipedrive.settings import (
    PipedriveSettings,
    client_config,
    pipedrive_limits,
)
from adapters.pipedrive.webhooks import parse_delivery, verify_delivery
from connector.access_labels import CopyLabels
from connector.adapter import (
    AdapterSpec,
    Capability,
    ErasureResult,
    OutboundRecord,
    Page,
    Subject,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
)
from connector.errors import (
    FatalRemoteError,
    KlantsyncError,
    RecordError,
    RetryableError,
    system_down,
)
from connector.http import SystemClient, answer_object, json_object
from connector.model import is_archived, normalise_email

__all__ = ["ERASURE_ENDPOINT", "ERASURE_NOTE", "SPEC", "PipedriveAdapter"]

PERSONS: Final = "/persons"
SEARCH: Final = "/persons/search"

#: How the erasure call reads on a receipt (the API root is part of ``base_url``).
ERASURE_ENDPOINT: Final = "DELETE /api/v2/persons/{id}"
#: "Marks a person as deleted. After 30 days, the person will be permanently deleted."
#: (v2 ``deletePerson``): kept, restorable, for 30 days, and purged after them, not within.
ERASURE_NOTE: Final = "deleted, purged by the vendor after 30 days"
#: Held only in the bin (deleted before): restorable until the purge, like a deletion now.
IN_THE_BIN_NOTE: Final = "deleted already, purged by the vendor 30 days after that deletion"
NOT_HELD_NOTE: Final = "no person held for this subject"
#: What a completed erasure did, for one that finds the person gone since the request first
#: looked (``ErasureResult.erased_note``): deleted by an earlier call, restorable until the
#: purge, and what is linked to them read no more.
ERASED_NOTE: Final = (
    f"{ERASURE_NOTE}; the notes about the person alone deleted before them, their deals, "
    "activities and notes also on another record left (not counted again: the person is gone)"
)

log = logging.getLogger("klantsync.pipedrive")


class PipedriveAdapter:
    """Pipedrive API v2 persons, as the :class:`~connector.adapter.Adapter` contract asks.

    Args:
        client: the company's HTTP client, built by :mod:`connector.http`, whose base URL is
            the API v2 root (``https://<company>.pipedrive.com/api/v2``).
        settings: the company's validated settings.
    """

    kind: str = "pipedrive"
    capabilities: frozenset[Capability] = frozenset(
        {"pull", "upsert", "update", "find", "erase", "webhooks"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: A person comes with their deals, activities and notes.
    copy_categories: frozenset[str] = frozenset({"orders", "notes"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS

    def __init__(self, client: SystemClient, settings: PipedriveSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = pipedrive_limits(settings)
        self.directory = Directory(client.clock)
        self.sent = LastSent()
        self.linked = LinkedReader(client, settings.base_url)
        self._listing = asyncio.Lock()

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of persons changed since the cursor's watermark, oldest change first.

        Raises:
            FatalRemoteError: Pipedrive handed back a ``next_cursor`` already used in this
                pull (a paging loop would otherwise never end).
            RetryableError: a page answered with something that is not a list of persons.
        """
        state = decode_cursor(cursor)
        high = state.high or state.since
        page_token = state.page
        seen: set[str] = {page_token} if page_token else set()
        while True:
            params: dict[str, Any] = {
                "limit": self.limits.page_size,
                "sort_by": "update_time",
                "sort_direction": "asc",
            }
            if state.since:
                params["updated_since"] = state.since
            if page_token:
                params["cursor"] = page_token
            response = await self.client.request("GET", PERSONS, params=params)
            # Not json_object: a page it reads as {} (a front end's 200 HTML page) has no
            # next cursor either, and would end the pull "complete" with the rest never read.
            body = answer_object(
                response, system=self.client.system, method="GET", path=PERSONS, required=("data",)
            )
            people = [p for p in body.get("data") or [] if isinstance(p, dict)]
            for person in people:
                high = later_time(high, person.get("update_time"))
            records = [with_contact_keys(p) for p in people if not p.get("is_deleted")]
            next_token = _next_cursor(body)
            if next_token is None:
                final = encode_cursor(PullCursor(since=high)) if high else None
                yield Page(records=records, cursor=final, complete=True)
                return
            if next_token in seen:
                raise FatalRemoteError(
                    self.client.system, "GET", PERSONS, response.status_code, "PAGING_LOOP"
                )
            seen.add(next_token)
            page_token = next_token
            resume = PullCursor(since=state.since, page=next_token, high=high)
            yield Page(records=records, cursor=encode_cursor(resume))

    # -- upsert ------------------------------------------------------------------------------

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Create or update persons, one call chain per record; results in input order.

        Records run concurrently (at most ``limits.max_concurrency`` at once), except that
        records for the same e-mail run one after another, in order, the later ones by the id
        the first one got: run side by side, two searches could both miss and create the
        person twice (and Pipedrive's search may not show a person created a moment ago).

        Per-record failures carry the HTTP status and a category, never Pipedrive's message.
        Retries that ran out (429, 5xx, transport) fail only their own record, retryably.

        Raises:
            FatalRemoteError: bad token or missing permission (the whole system stops).
        """
        await self._list_if_worth_it(records)
        return await self._write_persons(records, self._upsert_one)

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Change persons Pipedrive holds; never create one. Results in input order.

        Every person that is the subject's is changed, found as ``find`` and ``erase`` find
        them (:meth:`_held`): the one under the known id and each exact e-mail hit whose
        primary e-mail the address is (Pipedrive lets several persons share an e-mail; a
        correction that reached one of them left the others wrong behind a receipt saying
        it was made). Not one the connector knows as another subject's (``record.spare``),
        nor one holding the address beside another primary one (as ``upsert`` tells them
        apart): corrected, a housemate's person took the subject's name; the note names
        those by id. A record that finds no live person is ``not_held`` instead of being
        created with ``POST /persons``.

        Raises:
            FatalRemoteError: as for ``upsert``.
        """
        return await self._write_persons(records, self._correct_one)

    async def _write_persons(
        self,
        records: Sequence[OutboundRecord],
        write_one: Callable[[OutboundRecord], Awaitable[UpsertResult]],
    ) -> list[UpsertResult]:
        """Run ``write_one`` over ``records`` as ``upsert`` describes; results in input order."""
        gate = asyncio.Semaphore(max(1, self.limits.max_concurrency))
        chains: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            # One chain per subject, as subjects are told apart: addresses that only match
            # case-folded ("straße@", "strasse@") are two people, each with their own person.
            key = normalise_email(record.email) or f"id:{record.external_id or index}"
            chains.setdefault(key, []).append(index)
        results: list[UpsertResult | None] = [None] * len(records)

        stopped = asyncio.Event()

        async def run(chain: list[int]) -> None:
            known: str | None = None
            for index in chain:
                record = records[index]
                if known and not record.external_id:
                    record = record._replace(external_id=known)
                async with gate:
                    if stopped.is_set():
                        return  # another record met a fatal error: send nothing more
                    try:
                        result = await write_one(record)
                    except FatalRemoteError:
                        stopped.set()
                        raise
                results[index] = result
                known = result.external_id or known

        outcomes = await asyncio.gather(*(run(c) for c in chains.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # Every chain has finished by now, so nothing is left running behind the raise.
                raise outcome
        return [result for result in results if result is not None]

    async def _upsert_one(self, record: OutboundRecord) -> UpsertResult:
        if not record.email and not record.external_id:
            return UpsertResult(record.ref, "failed", reason="missing_email")
        try:
            if record.external_id and record.external_id.isdecimal():
                updated = await self._patch(int(record.external_id), record)
                if updated is not None:
                    return updated
            # No id, or a stale one (the person was deleted in Pipedrive): look the e-mail up.
            listed = self.directory.ids(record.email) if record.email else None
            if listed is not None:
                hits = listed
            else:
                hits = await self._search(record.email) if record.email else []
            updated = await self._patch_holder(hits, record)
            if updated is None and listed:
                # Deleted (or moved) since the listing: whoever holds the address now, if any.
                updated = await self._patch_holder(await self._search(record.email), record)
            return updated or await self._create(record)
        except RecordError as exc:
            return UpsertResult(record.ref, "failed", reason=failure_reason(exc.status))
        except RetryableError as exc:
            return UpsertResult(
                record.ref,
                "failed",
                reason=failure_reason(exc.status),
                retryable=True,
                unreachable=system_down(exc),
            )

    async def _correct_one(self, record: OutboundRecord) -> UpsertResult:
        """``update`` for one record: every live person of the subject's changed, found as
        ``find`` finds them (:meth:`_held`); the note names by id those left as not theirs."""
        if not record.email and not record.external_id:
            return UpsertResult(record.ref, "failed", reason="missing_email")
        subject = Subject(email=record.email, external_id=record.external_id, spare=record.spare)
        try:
            # Another subject's person (OutboundRecord.spare), found by the address beside
            # their own, keeps their own values; so does one holding it beside another
            # primary address (_held).
            people, passed = await self._held(subject)
            first: UpsertResult | None = None
            kept: frozenset[str] = frozenset()
            for person in people:
                updated = await self._patch(int(person["id"]), record, correcting=True)
                first = first or updated
                if updated is not None and updated.outcome != "updated":
                    return updated  # refused: said as it is; a retry writes them all again
                if updated is not None:
                    kept |= updated.kept  # kept on one of the persons, it is still held
        except RecordError as exc:
            return UpsertResult(record.ref, "failed", reason=failure_reason(exc.status))
        except RetryableError as exc:
            return UpsertResult(
                record.ref, "failed", reason=failure_reason(exc.status), retryable=True
            )
        result = first or UpsertResult(record.ref, "not_held", note=NOT_HELD_NOTE)
        said = "; ".join(part for part in (result.note, _passed_note(passed)) if part)
        return result._replace(note=said, kept=kept)

    async def _create(self, record: OutboundRecord) -> UpsertResult:
        """``POST /persons``, made once: Pipedrive has no key to match a repeated create by,
        so one whose answer was lost (or a 5xx) is not sent again blindly, which made a
        second person. The e-mail is looked up instead; the person found is the one the
        call created, and is written to (and so noted in the listing lookups are answered
        from); none found, the record waits for the next try.

        A 2xx whose person cannot be read (a proxy's page, a truncated body) is an answer
        lost as well: Pipedrive may have created the person, and a retry answered from the
        listing, which does not hold them, would create them a second time.
        """
        body = person_body(record.fields, record.email, creating=True)
        try:
            response = await self.client.request("POST", PERSONS, json=body, repeatable=False)
        except RetryableError:
            made = await self._made_by_lost_create(record)
            if made is None:
                raise
            return made
        result = self._result(record.ref, response, "created")
        if result.external_id is None:
            return await self._made_by_lost_create(record) or result
        self.directory.created(record.email, int(result.external_id))
        own = (primary_value(body.get("emails")), primary_value(body.get("phones")))
        self._wrote(int(result.external_id), *own)
        return result

    async def _made_by_lost_create(self, record: OutboundRecord) -> UpsertResult | None:
        """The person a create whose answer was lost made, written to; ``None`` if none is
        found (the create did not happen, or the search does not show it yet)."""
        hits = await self._search(record.email) if record.email else []
        return await self._patch_holder(hits, record)

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

    def _list_with(
        self, person_id: int, person: dict[str, Any], kind: Kind, value: str | None
    ) -> list[dict[str, Any]] | None:
        """The person's ``kind`` list to send with ``value`` as the connector's entry
        (:func:`other_entries_kept`), told whether ``value`` changed since the adapter last
        wrote it there, and which entry that was; ``None`` when there is no value to send."""
        if value is None or not value.strip():
            return None
        entries = person.get(kind)
        changed = self.sent.changed(person_id, kind, value)
        if kind == "phones":
            # "": no entry is known as the connector's, so every one stays beside the new
            # number. Taken for its own, the primary one was replaced: an office number a
            # salesperson made primary was lost, and the number the customer gave up stayed.
            former: str | None = self._own_phone(person_id, entries) or ""
        else:
            # The primary e-mail where the last write is not known: the person was found,
            # and is written, by their primary address (_patch_holder).
            former = self.sent.last_of(person_id, kind, _entry_values(entries))
        label = "work" if kind == "emails" else None
        return other_entries_kept(entries, value, label=label, changed=changed, former=former)

    def _phones_without_own(
        self, person_id: int, person: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The person's phone list without the connector's entry (:func:`without_own_entry`),
        for a phone the source now holds empty; ``None`` when no entry is known as its own
        (:meth:`_own_phone`): nothing is removed."""
        entries = person.get("phones")
        own = self._own_phone(person_id, entries)
        return None if own is None else without_own_entry(entries, own)

    def _own_phone(self, person_id: int, entries: Any) -> str | None:
        """The value of the connector's entry in a person's phone list; ``None`` when no
        entry is known as its own.

        Written since the adapter started, it is the number the adapter last wrote, where
        listed; not listed (taken out by the adapter, as the customer removed it, or removed
        or edited in Pipedrive), every entry is a salesperson's. Not written since (a
        restart; a ``dsr rectify`` beside the daemon), Pipedrive's entries carry nothing
        that tells whose they are (``value``, ``primary``, ``label``, which salespeople set
        too): a sole entry is taken for the connector's, as a flow that empties or changes
        the number most likely wrote it; of several, a salesperson may have made theirs
        primary, so none is taken (:meth:`_own_phone_untold`).
        """
        values = _entry_values(entries)
        if self.sent.knows(person_id, "phones"):
            return self.sent.last_of(person_id, "phones", values)
        return values[0] if len(values) == 1 else None

    def _own_phone_untold(self, person_id: int, person: dict[str, Any]) -> bool:
        """Whether the person's phone list holds several entries and the adapter cannot tell
        which is its own (it wrote none since it started): a phone to empty is then left."""
        several = len(_entry_values(person.get("phones"))) > 1
        return several and not self.sent.knows(person_id, "phones")

    def _wrote(self, person_id: int, address: str | None, phone: str | None) -> None:
        """Remember what a write that landed sent as the person's own e-mail and phone."""
        written: tuple[tuple[Kind, str | None], ...] = (("emails", address), ("phones", phone))
        for kind, value in written:
            if value:
                self.sent.wrote(person_id, kind, value)

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

    async def _list_if_worth_it(self, records: Sequence[OutboundRecord]) -> None:
        """List every person first when that saves this batch's and the next ones' searches.

        A listing that fails is not this batch's failure: the records are searched one by
        one, as they would be without it.

        Raises:
            FatalRemoteError: bad token or missing permission.
        """
        lookups = sum(
            1 for r in records if r.email and not (r.external_id and r.external_id.isdecimal())
        )
        if not lookups:
            return
        async with self._listing:  # batches side by side wait for one listing
            if self.directory.fresh or not self.directory.worth_listing(lookups):
                return
            try:
                persons, pages = await self._every_person()
            except KlantsyncError as exc:
                # Bad credentials stop the system; a listing that failed (or looped, which
                # pull refuses) leaves the batch to searches.
                if isinstance(exc, FatalRemoteError) and exc.detail != "PAGING_LOOP":
                    raise
                log.warning(
                    "person listing failed; searching instead",
                    extra={"system": self.client.system, "error": str(exc)},
                )
                return
            self.directory.load(persons, pages)

    async def _every_person(self) -> tuple[list[dict[str, Any]], int]:
        """Every live person, read as a full pull reads them, and how many pages that took.

        Only what the listing needs of each person is kept (id, e-mails): a company's whole
        person records would cost a few KB each until the last page.
        """
        persons: list[dict[str, Any]] = []
        pages = 0
        async for page in self.pull(None):
            pages += 1
            persons.extend({"id": p.get("id"), "emails": p.get("emails")} for p in page.records)
        return persons, pages

    async def _search(self, email: str) -> list[int]:
        """Ids of live persons whose e-mails include ``email`` exactly (search bucket).

        Every page of hits, by ``additional_data.next_cursor``: more than a page's hundred
        persons may share an address (a shared mailbox), and an access request or an
        erasure must see all of them.
        """
        ids: set[int] = set()
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {
                "term": email,
                "fields": "email",
                "exact_match": "true",
                "limit": 100,
            }
            if cursor:
                params["cursor"] = cursor
            response = await self.client.request("GET", SEARCH, params=params, bucket="search")
            body = answer_object(
                response, system=self.client.system, method="GET", path=SEARCH, required=("data",)
            )
            ids.update(search_hits(body, email))
            extra = body.get("additional_data")
            cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
            if not isinstance(cursor, str) or not cursor:
                return sorted(ids)
            if cursor in seen:
                # Paging in a loop: what was read is not all there is, and an erasure's
                # check must not conclude from it that nobody is left (as the pull refuses).
                raise FatalRemoteError(
                    self.client.system, "GET", SEARCH, response.status_code, "PAGING_LOOP"
                )
            seen.add(cursor)

    # -- find --------------------------------------------------------------------------------

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every person Pipedrive holds for the subject (by Pipedrive id and by exact e-mail),
        in full; one it shows in the 30-day bin marked so (:func:`in_the_bin`). A person
        the connector knows as another subject's (``subject.spare``) is left out.

        Each comes with what Pipedrive keeps beside them (:mod:`.linked`): the notes staff
        wrote about them, their deals and activities, and the names of their labels
        (``labels``, beside ``label_ids``), read once for all of them.
        """
        people, _ = await self._held(subject)
        labels = await self.linked.label_names() if any(_label_ids(p) for p in people) else {}
        found: list[dict[str, Any]] = []
        for person in people:
            named = [{"id": i, "label": labels.get(i)} for i in _label_ids(person)]
            beside = await self.linked.beside(int(person["id"]))
            found.append({**person, "labels": named, **beside})
        return found

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's persons, as :meth:`find` finds them (those in the bin marked so),
        without what Pipedrive keeps beside them: an erasure's snapshot and check and a
        correction need the persons, not the notes staff wrote about them, their deals,
        activities or label names (see ``Adapter.find``; the erasure counts what it leaves
        of those itself). ``orders`` is the contract's: deals are no orders of the person's."""
        people, _ = await self._held(subject)
        return people

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The subject's live persons alone, as ``pull`` lists them (see ``Adapter.find``): a
        targeted sync (a webhook, ``resync --email``) syncs the person record, and reads
        none of the notes staff wrote about them, their deals, activities or label names,
        which :meth:`find` reads for an access copy. One in the 30-day bin is nobody to
        sync, as a pull lists none."""
        people, _ = await self._held(subject)
        return [person for person in people if not is_archived(person)]

    async def _held(self, subject: Subject) -> tuple[list[dict[str, Any]], list[int]]:
        """The persons ``find`` reports, without what is kept beside them, and the ids of
        those the e-mail found that are not the subject's by the rule the sync writes by.

        The person the identity map's id names is the subject's. One the search finds is
        theirs only where the address is its primary e-mail (:func:`_primary_is`, as
        ``upsert`` writes): a person holding it beside another primary one is a
        housemate's, whom the sync never wrote as the subject's, and whom their access copy
        showed and their erasure deleted.
        """
        found: dict[int, dict[str, Any]] = {}
        passed: list[int] = []
        if subject.external_id and subject.external_id.isdecimal():
            person = await self._read(int(subject.external_id))
            if person is not None:
                found[int(person["id"])] = person
        if subject.email:
            for person_id in await self._search(subject.email):
                # Another subject's person (Subject.spare) is neither shown nor deleted.
                if person_id in found or str(person_id) in subject.spare:
                    continue
                person = await self._read(person_id)
                if person is None:
                    continue
                if _primary_is(person, subject.email):
                    found[person_id] = person
                else:
                    passed.append(person_id)
        people = [
            in_the_bin(found[key])
            if found[key].get("is_deleted")
            else with_contact_keys(found[key])
            for key in sorted(found)
        ]
        return people, passed

    async def _read(self, person_id: int) -> dict[str, Any] | None:
        """The person as Pipedrive shows them, in the bin (``is_deleted``) or not; ``None``
        for a 404."""
        path = f"{PERSONS}/{person_id}"
        response = await self.client.request("GET", path, accept=(404,))
        if response.status_code == 404:
            return None
        data = answer_object(
            response, system=self.client.system, method="GET", path=path, required=("data",)
        )["data"]
        if not isinstance(data, dict) or data.get("id") is None:
            return None
        return data

    # -- erase -------------------------------------------------------------------------------

    async def erase(self, subject: Subject) -> ErasureResult:
        """Delete every live person for the subject with ``DELETE /persons/{id}``; idempotent.

        Pipedrive purges a deleted person 30 days later and can restore it until then, so the
        result is ``delete_purged_later`` and reversible, and the note says so. A person
        ``find`` shows in that bin already is held the same way: found, reversible, not "no
        person held"; no ``DELETE`` is sent for them (they are deleted, and v2 has no other
        deletion). One whose ``DELETE`` answers 404 (someone deleted them since our read)
        counts as found too. A second call deletes nothing: it reports the persons in the
        bin where Pipedrive shows them, else ``found=False``.

        Before each person goes, the notes about them alone are deleted and what else names
        them is counted (:meth:`.linked.LinkedReader.erase_beside`): deals and activities
        are the business's records, kept, and the note names them by kind and count, so
        the receipt does not pass the person's part for all Pipedrive held of them. A
        person the e-mail finds that holds it only beside another primary address is left
        (:meth:`_held`), and the note says so by id.
        """
        self._forget(subject)
        people, passed = await self._held(subject)
        left = Left()
        deleted = 0
        status: int | None = None
        for person in people:
            self.sent.forget(int(person["id"]))
            self.directory.forget_person(int(person["id"]))
            left.add(await self.linked.erase_beside(int(person["id"])))
            if is_archived(person):
                continue  # in the bin already: a DELETE changes nothing
            response = await self.client.request(
                "DELETE", f"{PERSONS}/{int(person['id'])}", accept=(404,)
            )
            # A 404 here means someone deleted the person between our read and this call.
            status = response.status_code if status in (None, 200) else status
            deleted += response.status_code == 200
        done = ERASURE_NOTE if deleted else IN_THE_BIN_NOTE if people else NOT_HELD_NOTE
        return ErasureResult(
            found=bool(people),
            mode="delete_purged_later",
            reversible=True,
            endpoint=ERASURE_ENDPOINT,
            vendor_status=status,
            note="; ".join(part for part in (done, left.said(), _passed_note(passed)) if part),
            erased_note=ERASED_NOTE,
        )

    def _forget(self, subject: Subject) -> None:
        """What the adapter holds in memory of the subject leaves it before anything is
        read: the listing's entry of their address and of the person under their known id
        (whatever address it holds them under), even if the erasure fails and waits for a
        retry. Each person the erasure then finds is forgotten as it goes."""
        if subject.email:
            self.directory.forget(subject.email)
        if subject.external_id and subject.external_id.isdecimal():
            person_id = int(subject.external_id)
            self.directory.forget_person(person_id)
            self.sent.forget(person_id)

    # -- merges ------------------------------------------------------------------------------

    async def held_addresses(self, external_id: str) -> list[str] | None:
        """Every e-mail address of the live person ``external_id``, primary first; ``None``
        when Pipedrive holds no live person under it (404, in the bin, not an id).

        The connector reads the person a merge kept with it (:mod:`connector.merges`): the
        merge keeps the kept person's primary address, and the customer's may be one of the
        others."""
        if not external_id.isdecimal():
            return None
        person = await self._read(int(external_id))
        if person is None or person.get("is_deleted"):
            return None
        entries = person.get("emails")
        listed = entries if isinstance(entries, list) else []
        ordered = sorted(listed, key=lambda e: not (isinstance(e, dict) and e.get("primary")))
        return _entry_values(ordered)

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check the delivery's HTTP Basic credentials against ``secret`` (``"user:password"``).

        ``now`` is unused: Pipedrive signs nothing and sends no timestamp to check.
        """
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Person create/change -> ``changed``; delete -> ``deleted``, or ``merged`` where it
        names the person kept; anything else ignored."""
        return parse_delivery(request)


def _primary_is(person: dict[str, Any], email: str) -> bool:
    """Whether ``email`` is the person's primary e-mail (as subjects are told apart)."""
    return normalise_email(primary_value(person.get("emails")) or "") == normalise_email(email)


def _other_name_part(
    person: dict[str, Any], fields: dict[str, Any], clear: frozenset[str]
) -> dict[str, str]:
    """The name part a write leaves out, as ``person`` holds it, when it carries the other
    one alone (:func:`held_name_part`); nothing when it carries both or neither, or when
    the part left out is one to empty (``clear``): the name is then the part given."""
    given = {part: str(fields.get(part) or "").strip() for part in NAME_PARTS}
    sent = [part for part in NAME_PARTS if given[part]]
    if len(sent) != 1:
        return {}
    missing = next(part for part in NAME_PARTS if part not in sent)
    if missing in clear:
        return {}
    return {missing: held_name_part(person, missing, given[sent[0]])}


def _name_left(
    person: dict[str, Any], fields: dict[str, Any], clear: frozenset[str]
) -> dict[str, str]:
    """For a write that carries no name part and empties one: the other part, as the
    person holds it, which then is the whole ``name``.

    Pipedrive keeps the name whole and refuses an empty one (``name`` is required), so a
    name part is emptied by writing ``name`` without it. Both parts emptied, or nothing
    held of the other one, the name stays as it is: sent empty, the write was refused and
    the record's other fields with it.
    """
    if any(str(fields.get(part) or "").strip() for part in NAME_PARTS):
        return {}
    emptied = [part for part in NAME_PARTS if part in clear]
    if len(emptied) != 1:
        return {}
    other = next(part for part in NAME_PARTS if part not in emptied)
    kept = held_name_part(person, other, "")
    return {other: kept} if kept else {}


def _not_emptied(record: OutboundRecord, body: dict[str, Any]) -> frozenset[str]:
    """The names of ``record.clear`` a person's update with ``body`` leaves as they are.

    A name part is emptied by a ``name`` written without it, and left with the name when
    none is written (both parts emptied, or the other one not held: :func:`_name_left`). The
    phone is emptied by the list without the connector's entry, or holds none of the
    person's own already (one left among several the adapter cannot tell its own from,
    :meth:`PipedriveAdapter._own_phone_untold`, the caller adds). A whole mapped custom
    field is emptied (``null``); a part of one, and any other name, is left. A name
    ``record.fields`` writes is written, not left.
    """
    custom = {CUSTOM_FIELDS + key for key in emptied_custom_fields(record.clear)}
    emptied = custom | {"phone"} | (set(NAME_PARTS) if "name" in body else set())
    return frozenset(record.clear - emptied - record.fields.keys())


def _empty_custom_fields(body: dict[str, Any], clear: frozenset[str]) -> None:
    """Add to ``body`` the ``null`` of each mapped custom field ``clear`` names
    (:func:`emptied_custom_fields`), beside the custom fields it writes."""
    emptied = emptied_custom_fields(clear)
    if emptied:
        held = body.get("custom_fields")
        body["custom_fields"] = {**(held if isinstance(held, dict) else {}), **emptied}


def _passed_note(passed: Sequence[int]) -> str:
    """What an erasure or a correction says of the persons it left as not the subject's
    (ids only: they are no personal data of the subject, and let whoever reads the receipt
    look)."""
    if not passed:
        return ""
    return (
        f"left {len(passed)} person(s) found under the address that hold it only beside "
        f"another primary e-mail, as syncs leave them (ids {', '.join(map(str, sorted(passed)))})"
    )


def _entry_values(entries: Any) -> list[str]:
    """The values of a person's ``emails`` or ``phones`` list."""
    if not isinstance(entries, list):
        return []
    return [
        str(e["value"]) for e in entries if isinstance(e, dict) and isinstance(e.get("value"), str)
    ]


def _label_ids(person: dict[str, Any]) -> list[int]:
    ids = person.get("label_ids")
    return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []


def _next_cursor(body: dict[str, Any]) -> str | None:
    additional = body.get("additional_data")
    if not isinstance(additional, dict):
        return None
    token = additional.get("next_cursor")
    return token if isinstance(token, str) and token else None


SPEC = AdapterSpec(
    kind="pipedrive",
    settings_model=PipedriveSettings,
    factory=PipedriveAdapter,
    client_config=client_config,
    limits=pipedrive_limits,
    sandbox=PipedriveSandbox,
)
