"""The HubSpot CRM v3 contacts adapter (settings and client config live in ``settings.py``).

What it does, by contract verb:

- ``pull``: a first read lists every contact (``GET /crm/v3/objects/contacts`` paged by
  ``after``, with loop detection); later ones search for the contacts modified since the
  last one (``POST .../search`` by ``lastmodifieddate``: :mod:`adapters.hubspot._changes`);
- ``upsert``: ``POST .../batch/upsert`` keyed on e-mail, one ``objectWriteTraceId`` per input
  so HubSpot answers a partial failure with 207 and says which inputs failed; a property the
  record names to empty (``clear``) is sent ``""``, as HubSpot empties one, unless HubSpot
  would refuse it (see ``_with_emptied``): the result's ``kept`` then names it;
- ``update``: ``POST .../batch/update`` only, by id or by e-mail, so a contact HubSpot does not
  hold is never created; one in the recycle bin is left unchanged, and the result says so;
- ``find``: ``POST .../batch/read`` by e-mail (the e-mail travels in the body, never in a URL
  path that could end up in an error message), then by HubSpot id; each read once for live
  contacts and once with ``archived=true`` for the recycle bin, because an archived contact
  is still held (restorable for 90 days); each contact found with the records associated
  with it and its address's subscription statuses (:mod:`adapters.hubspot._related`);
- ``find_records`` (an erasure's snapshot and check, a correction): the contacts ``find``
  finds, with those properties alone and nothing associated with them;
- ``find_people`` (a targeted sync: a webhook, ``resync --email``): the live contact by id,
  else by e-mail, with the configured properties the mapping reads only, as ``pull`` reads
  it (``ask_only_for_paths``);
- ``erase``: ``POST .../gdpr-delete`` only, archived contacts included, and nothing at all for
  a subject HubSpot does not hold (by e-mail it would blocklist the address). Never ``DELETE``
  or ``batch/archive``, which are soft deletes HubSpot can restore for 90 days. The deals and
  companies associated with the contact, which gdpr-delete leaves, are counted first and
  named on the receipt;
- ``check_mapping`` (``check --online``): the portal's contact properties
  (``GET /crm/v3/properties/contacts``) against the properties the mapping names and the
  configured ``properties``, which a ``find`` cannot vouch for (:mod:`adapters.hubspot._mapped`);
- webhooks: v3 signatures and ``contact.*`` events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Final, Literal

from adapters.hubspot._changes import PullCursor, changed_since, decode_cursor, latest_change
from adapters.hubspot._lookup import CONTACTS, ContactLookup
from adapters.hubspot._mapped import (
    configured_warnings,
    contact_definitions,
    mapped_properties,
    option_warnings,
    refusals,
)
from adapters.hubspot._properties import PropertyLists
from adapters.hubspot._related import MAIN_PROPERTIES, Related, next_after
from adapters.hubspot._scopes import CONTACTS_READ, CONTACTS_WRITE, needing
from adapters.hubspot.labels import COPY_LABELS
from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.hubspot.settings import (
    DEFAULT_PROPERTIES,
    MAX_BATCH,
    HubSpotSettings,
    client_config,
    hubspot_limits,
    wait_hint,
)
from adapters.hubspot.signature import (
    MAX_SKEW_MS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_v3,
    uri_forms,
)
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
from connector.errors import ConfigError, FatalRemoteError, RecordError
from connector.http import SystemClient, answer_object, json_object
from connector.mapping import SystemMapping

__all__ = [
    "DEFAULT_PROPERTIES",
    "SPEC",
    "HubSpotAdapter",
    "HubSpotSettings",
    "client_config",
    "hubspot_limits",
    "sign_v3",
    "wait_hint",
]

GDPR_DELETE: Final = f"{CONTACTS}/gdpr-delete"

#: The key of a contact's record that says the copy holds the configured properties only.
PROPERTIES_UNREAD: Final = "propertiesNotRead"

#: Why, as a code the access report states in the report's language (connector/access.py):
#: the scope that lets a token read the portal's property definitions. Its name is
#: UNVERIFIED against HubSpot's scope list; HubSpot answers 403 for a missing scope.
PROPERTIES_UNREAD_REASON: Final = "crm.schemas.contacts.read"

#: The properties every read asks for whatever the mapping reads: the e-mail, by which
#: lookups and erasures tell a contact's address. (HubSpot answers ``hs_object_id``,
#: ``createdate`` and ``lastmodifieddate`` with every contact unasked.)
OWN_PROPERTIES: Final = ("email",)

#: The contact properties HubSpot sets itself, whose write it refuses (``READ_ONLY_VALUE``), an
#: empty value's too: never emptied, also where the portal's definitions, which say so of each
#: property (``readOnlyValue``), cannot be read.
SET_BY_HUBSPOT: Final = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})

#: Error categories worth retrying when HubSpot reports them per input in a 207.
RETRYABLE_CATEGORIES: Final = frozenset({"RATE_LIMITS", "RATE_LIMIT", "INTERNAL_ERROR", "LOCKED"})

#: The erasure's notes (signed into the receipt): each says what was sent, no more.
ERASURE_NOTE: Final = "permanently deleted; e-mail added to HubSpot's blocklist"
ERASED_BY_ID_NOTE: Final = "permanently deleted by contact id"
NOTHING_ERASED_NOTE: Final = "no contact of this person found: nothing deleted, nothing sent"
NOT_HELD_NOTE: Final = "no contact with this id or e-mail"
#: What a completed erasure did, for one that finds the contact gone since the request
#: first looked (``ErasureResult.erased_note``): gdpr-delete by e-mail, as ``erase`` sends
#: it for a contact it holds, and what it leaves, no longer countable.
ERASED_NOTE: Final = (
    f"{ERASURE_NOTE}; deals and companies associated with the contact left by gdpr-delete "
    "(not counted again: the contact is gone)"
)
ARCHIVED_NOTE: Final = (
    "left archived and unchanged: the contact is in HubSpot's recycle bin, where its API "
    "changes no contact, and a correction does not restore one"
)

#: A record's reason where HubSpot's answer neither confirmed nor refused its input.
NO_RESULT: Final = "NO_RESULT"

#: Most further archived contacts with one e-mail an erasure looks for, one lookup each.
MAX_ARCHIVED_ROUNDS: Final = 10

#: What gdpr-delete leaves of the records associated with a contact: the business's records,
#: shared with others (a deal, its company). It takes the contact's engagements ("all
#: associated content"); that it leaves deals and companies is the cautious reading
#: (UNVERIFIED), which the receipt follows, so it never understates what stays.
LEFT_BY_GDPR_DELETE: Final = (("deals", "deal", "deals"), ("companies", "company", "companies"))


class HubSpotAdapter:
    """HubSpot CRM v3 contacts, as the :class:`~connector.adapter.Adapter` contract asks.

    Args:
        client: the portal's HTTP client, built by :mod:`connector.http`.
        settings: the portal's validated settings.
    """

    kind: str = "hubspot"
    capabilities: frozenset[Capability] = frozenset(
        {"pull", "upsert", "update", "find", "erase", "webhooks"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: A contact comes with its associated deals, companies, notes, calls, e-mails and
    #: meetings, and its e-mail subscriptions with their legal basis.
    copy_categories: frozenset[str] = frozenset({"orders", "notes", "professional", "consent"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS

    def __init__(self, client: SystemClient, settings: HubSpotSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = hubspot_limits(settings)
        #: The contact properties pulls and targeted syncs ask for (``None``: the configured
        #: ``properties`` whole, before :meth:`ask_only_for_paths`).
        self.asked_fields: frozenset[str] | None = None
        self._asked = list(settings.properties)
        self._properties = ",".join(settings.properties)
        self._lookup = ContactLookup(client, settings.properties)
        # Without the schema scope a copy holds the configured properties only (and an
        # associated record its kind's main ones).
        self._property_lists = PropertyLists(
            client, {"contacts": settings.properties, **MAIN_PROPERTIES}
        )
        self._related = Related(client, self._property_lists)
        #: What the last :meth:`check_mapping` found for the operator to act on.
        self._warnings: list[str] = []

    def ask_only_for_paths(self, paths: Mapping[str, str]) -> None:
        """Read contacts with the configured ``properties`` the mapping reads alone, and the
        e-mail every lookup tells contacts apart by (:data:`OWN_PROPERTIES`).

        ``paths`` are the mapping's (:meth:`SystemMapping.source_paths`, each with the
        mapping key naming it): under its ``record_root`` they are property names, and the
        id (``id_path``) is the contact's own, answered with every read. Pulls, targeted
        syncs and an erasure's lookups then leave a street address or postcode the mapping
        does not read in HubSpot; an access copy (:meth:`find`) still reads every property
        the portal defines.
        """
        read = {path.split(".", 1)[0] for path, key in paths.items() if key != "id_path"}
        wanted = read | set(OWN_PROPERTIES)
        asked = [name for name in self.settings.properties if name in wanted]
        asked += [name for name in OWN_PROPERTIES if name not in asked]
        self._asked = asked
        self._properties = ",".join(asked)
        self._lookup.properties = list(asked)
        self.asked_fields = frozenset(asked)

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of the contacts changed since ``cursor``, each with the cursor after it.

        Without a cursor (a flow's first read, ``sync --full``) every contact is listed
        (``GET .../contacts`` by ``after``), after one search for the latest modification in
        the portal; from then on only the contacts modified since are searched for
        (:mod:`adapters.hubspot._changes`).

        Raises:
            FatalRemoteError: HubSpot handed back an ``after`` token already used in this pull,
                or search pages that do not move forward (a paging loop would never end).
            RetryableError: a page answered with something that is not a list of contacts.
        """
        state = decode_cursor(cursor)
        if state.since is not None and state.list_after is None:
            lag_ms = self.settings.search_lag_seconds * 1000
            async for page in changed_since(
                self.client, state.since, self._asked, self.limits.page_size, lag_ms
            ):
                yield page
            return
        since = state.since
        if state.list_after is None:
            since = await latest_change(self.client)
        # A list resumed without one (a cursor from before the search) ends without one: the
        # next read lists every contact again, as its changes while paused are not known.
        async for page in self._list(state.list_after, since):
            yield page

    async def _list(self, after: str | None, since: int | None) -> AsyncIterator[Page]:
        """Every contact from ``after`` on, 100 a call; the last page's cursor searches from
        ``since`` (the latest modification when the first page was read)."""
        seen: set[str] = {after} if after else set()
        while True:
            params: dict[str, Any] = {"limit": self.limits.page_size}
            params["properties"] = self._properties
            if after:
                params["after"] = after
            with needing(CONTACTS_READ):
                response = await self.client.request("GET", CONTACTS, params=params)
            # Not json_object: a page it reads as {} (a front end's 200 HTML page) has no
            # paging either, and would end the pull "complete" with the rest never read.
            body = answer_object(
                response,
                system=self.client.system,
                method="GET",
                path=CONTACTS,
                required=("results",),
            )
            records = [r for r in body.get("results") or [] if isinstance(r, dict)]
            following = next_after(body)
            if following is None:
                final = PullCursor(since=since).encode()
                yield Page(records=records, cursor=final, complete=True)
                return
            if following in seen:
                raise FatalRemoteError(
                    self.client.system, "GET", CONTACTS, response.status_code, "PAGING_LOOP"
                )
            seen.add(following)
            yield Page(records=records, cursor=PullCursor(since, following).encode())
            after = following

    # -- upsert ------------------------------------------------------------------------------

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

    # -- find --------------------------------------------------------------------------------

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every contact HubSpot holds for the subject, archived ones included.

        Each comes with every property the portal defines, not only the mapped ones: an access
        request must show all that is held. Each comes with the records associated with it
        (``associations``: notes, calls, e-mails, meetings, tasks, deals, companies) and the
        first with an address with that address's e-mail subscription statuses
        (``subscriptions``), each saying where HubSpot did not serve them all (see
        :mod:`adapters.hubspot._related`); they are read only for a contact found, so a lookup
        that finds nobody costs no more calls than before. An archived contact (``archived:
        true``) is held too: it sits in HubSpot's recycle bin, restorable for 90 days, so an
        access request reports it and an erasure's verification must not call the subject
        absent while it is there. The live contact found by e-mail comes first. An empty list
        when HubSpot holds nobody. When the token may not read the schema, each contact
        carries :data:`PROPERTIES_UNREAD`, so a copy of the configured properties alone does
        not pass for whole. The portal's property list (or its refusal) is read again once it is an
        hour old (:class:`~adapters.hubspot._properties.PropertyLists`): the daemon keeps one
        adapter for months, and a property an admin defines meanwhile is the person's too.
        """
        listed = await self._property_lists.names("contacts")
        live, others = await self._lookup.held(subject, listed.names)
        held = ([live] if live is not None else []) + others
        addresses: set[str] = set()
        for contact in held:
            if listed.refused:
                contact[PROPERTIES_UNREAD] = {"reason": PROPERTIES_UNREAD_REASON}
            contact.update(await self._related.associated(str(contact["id"])))
            # Statuses are kept per address: read once, with the first contact holding it.
            address = _address(contact, subject.email)
            if address and address not in addresses:
                addresses.add(address)
                contact.update(await self._related.subscriptions(address))
        return held

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's contacts, live and archived, as :meth:`find` finds them, with the
        properties a pull asks for alone: an erasure's snapshot and check and a correction
        need their ids, whether each is archived and the mapped properties, not the notes,
        calls, e-mails, meetings, tasks, deals and companies associated with them, the
        address's subscriptions or every property the portal defines (see ``Adapter.find``).
        HubSpot holds no orders (``orders`` is the contract's).
        """
        live, others = await self._lookup.held(subject, self._asked)
        return ([live] if live is not None else []) + others

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The subject's live contact with the properties a pull asks for alone, as ``pull``
        lists it (see ``Adapter.find``): a targeted sync reads no more than it syncs, where
        :meth:`find` reads every property the portal defines (a date of birth, notes) for an
        access copy.

        By the HubSpot id where known (a webhook names it), else by e-mail; an id that finds
        no live contact (merged away, in the recycle bin) is looked up by e-mail too. An
        archived contact is nobody to sync, as a pull lists none: it is not read.
        """
        names = self._asked
        contact = None
        if subject.external_id:
            contact = await self._lookup.live_by_id(subject.external_id, names)
        if contact is None:
            contact = await self._lookup.by_email(subject.email, names)
        return [contact] if contact is not None else []

    # -- erase -------------------------------------------------------------------------------

    async def erase(self, subject: Subject) -> ErasureResult:
        """Permanently delete every contact of the subject with ``gdpr-delete``; never archive.

        HubSpot answers 204 whether or not the e-mail exists, and adds an e-mail it does not
        find to its blocklist [spec], where it stays: so ``found`` comes from a lookup first,
        and a subject HubSpot does not hold (no live or archived contact with the e-mail, none
        under the identity map's id) is sent nothing at all. Handing it their address would
        leave personal data at a processor that had none; the erasure's verification still
        reads HubSpot afterwards. The live contact with the e-mail is deleted by e-mail,
        which also blocklists it. Every other contact of the subject is deleted by id: an
        archived one (in the recycle bin, restorable for 90 days: an archive is not an
        erasure) and one found only by the identity map's id (its e-mail changed in HubSpot);
        the e-mail is then sent too, so HubSpot blocklists the address it held them under.
        Calling this twice is harmless; the second finds nothing, sends nothing and reports
        ``found=False``. A contact the connector knows as another subject's
        (``subject.spare``) is left: where the live one with the e-mail may be it, nothing is
        deleted by e-mail. The note says what was sent (:data:`ERASURE_NOTE`,
        :data:`ERASED_BY_ID_NOTE`, :data:`NOTHING_ERASED_NOTE`), and what gdpr-delete
        leaves of the records associated with the contacts (:meth:`_left_by_gdpr_delete`).
        """
        live, others = await self._lookup.held(subject)
        found = live is not None or bool(others)
        by_id = [str(contact["id"]) for contact in others]
        # Counted before they are gone: a deleted contact has no associations to list.
        contacts = [str(live["id"])] if live is not None else []
        left = await self._left_by_gdpr_delete([*contacts, *by_id])
        statuses = [await self._gdpr_delete_id(contact_id) for contact_id in by_id]
        by_email = "@" in subject.email and (
            live is not None or (bool(others) and not subject.spare)
        )
        if by_email:
            with needing(CONTACTS_WRITE):
                response = await self.client.request(
                    "POST", GDPR_DELETE, json={"objectId": subject.email, "idProperty": "email"}
                )
            statuses.append(response.status_code)
        if any(contact.get("archived") for contact in others):
            statuses += await self._erase_more_archived(subject.email, {*by_id, *subject.spare})
        return ErasureResult(
            found=found,
            mode="hard_delete",
            reversible=False,
            endpoint=f"POST {GDPR_DELETE}",
            # The first status that is not a plain 204 tells most (a 404: already gone).
            vendor_status=next(
                (s for s in statuses if s != 204), statuses[-1] if statuses else None
            ),
            note="; ".join(part for part in (_sent_note(by_email, found), left) if part),
            erased_note=ERASED_NOTE if "@" in subject.email else "permanently deleted",
        )

    async def _left_by_gdpr_delete(self, contact_ids: Sequence[str]) -> str:
        """What the receipt says gdpr-delete leaves of what the contacts are associated
        with (:data:`LEFT_BY_GDPR_DELETE`): each kind's count, never a record's content or
        id, and a kind HubSpot would not list (a scope the app lacks) named as not counted.

        Said only "permanently deleted", the receipt passed the person's part for all the
        portal held of them, while the deal named after them stayed, associated with nobody.
        """
        counted: list[str] = []
        unread: list[str] = []
        for kind, one, many in LEFT_BY_GDPR_DELETE:
            listed = await self._associated_with_any(contact_ids, kind)
            if listed is None:
                unread.append(kind)
            elif listed[0]:
                ids, whole = listed
                number = f"{'' if whole else 'at least '}{len(ids)}"
                counted.append(f"{number} {one if len(ids) == 1 else many}")
        said: list[str] = []
        if counted:
            said.append(
                "left in HubSpot, associated with the contact (the business's records, which "
                f"gdpr-delete leaves): {', '.join(counted)}"
            )
        if unread:
            said.append(f"{' and '.join(unread)} not counted (HubSpot would not list them)")
        return "; ".join(said)

    async def _associated_with_any(
        self, contact_ids: Sequence[str], kind: str
    ) -> tuple[set[str], bool] | None:
        """The ids of ``kind`` associated with any of the contacts (a deal of two of them
        counts once) and whether that is all of them; ``None`` where HubSpot would not list
        them for one of the contacts."""
        ids: set[str] = set()
        whole = True
        for contact_id in contact_ids:
            listed = await self._related.associated_ids(contact_id, kind)
            if listed is None:
                return None
            ids.update(listed[0])
            whole = whole and listed[1]
        return ids, whole

    async def _gdpr_delete_id(self, contact_id: str) -> int:
        # gdpr-delete by the id of an archived contact: the spec does not restrict it to live
        # contacts and HubSpot's UI deletes permanently from the recycle bin, but that the API
        # does so is UNVERIFIED. If it does not, the verification's find still sees the
        # contact and the erasure stays open instead of reporting it absent.
        with needing(CONTACTS_WRITE):
            response = await self.client.request(
                "POST", GDPR_DELETE, json={"objectId": contact_id}, accept=(404,)
            )
        return response.status_code

    async def _erase_more_archived(self, email: str, done: set[str]) -> list[int]:
        """Delete further archived contacts with this e-mail; their statuses.

        A lookup by e-mail answers with one contact, but the recycle bin can hold several with
        the same e-mail (archived, created again by a sync, archived again). Stops when a
        lookup finds none, or one already sent to gdpr-delete (HubSpot kept it: the
        verification then reports it still present).
        """
        statuses: list[int] = []
        for _ in range(MAX_ARCHIVED_ROUNDS):
            contact = await self._lookup.by_email(email, archived=True)
            if contact is None or str(contact["id"]) in done:
                break
            done.add(str(contact["id"]))
            statuses.append(await self._gdpr_delete_id(str(contact["id"])))
        return statuses

    # -- check -------------------------------------------------------------------------------

    async def check_mapping(self, mapping: SystemMapping) -> None:
        """Hold the properties ``mapping`` names against the portal's contact properties
        (``GET /crm/v3/properties/contacts``), for ``check --online``.

        A ``find`` cannot tell a property the portal lacks, nor one HubSpot lets no
        integration write: the first sync did, with a dead letter for every customer sent. A
        value the mapping sets itself that an enumeration does not offer is a warning
        (:meth:`online_warnings`), as is a configured ``properties`` name the portal lacks
        (:func:`~adapters.hubspot._mapped.configured_warnings`).

        Raises:
            ConfigError: naming the mapping file and each such property with the key naming
                it (names only, no value).
            FatalRemoteError: the list refused (403), naming the scope to grant the private
                app, ``crm.schemas.contacts.read``; or the call's failure.
        """
        definitions = await contact_definitions(self.client)
        named = mapped_properties(mapping, _as_property)
        system = self.client.system
        self._warnings = option_warnings(system, named, definitions)
        self._warnings += configured_warnings(system, self.settings.properties, named, definitions)
        refused = refusals(named, definitions)
        if refused:
            raise ConfigError(str(mapping.path), "", refused)

    def online_warnings(self) -> list[str]:
        """What :meth:`check_mapping` found for the operator to act on, which ``check
        --online`` reports among its warnings."""
        return list(self._warnings)

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check the v3 signature (constant time) and that the timestamp is within 5 minutes.

        The signature may cover the URI decoded as HubSpot documents or as received (see
        :mod:`adapters.hubspot.signature`); either verifies.
        """
        headers = {name.lower(): value for name, value in request.headers.items()}
        signature = headers.get(SIGNATURE_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        # Milliseconds since 1970 take 13 digits; past 4300 int() raises, which answered a
        # delivery nobody signed with a 500 and an error in the log.
        if not signature or not timestamp or not timestamp.isdecimal() or len(timestamp) > 20:
            return False
        skew = now * 1000 - int(timestamp)
        if skew > MAX_SKEW_MS or skew < -MAX_SKEW_MS:
            return False
        method = request.method.upper()
        matches = [
            hmac.compare_digest(
                sign_v3(secret, method, uri, request.body, timestamp).encode(), signature.encode()
            )
            for uri in uri_forms(request.url)  # every form compared: no timing tells which
        ]
        return any(matches)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Decode a delivery (a JSON array of events) into contact events; others are dropped."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            return []
        if isinstance(payload, dict):
            payload = [payload]
        if not isinstance(payload, list):
            return []
        events: list[WebhookEvent] = []
        for item in payload:
            if not isinstance(item, dict):
                continue
            kind = _EVENT_KINDS.get(str(item.get("subscriptionType") or ""))
            if kind is None or item.get("eventId") is None:
                continue
            object_id = item.get("objectId")
            events.append(
                WebhookEvent(
                    kind=kind,
                    delivery_id=_replay_key(item),
                    external_id=str(object_id) if object_id is not None else None,
                )
            )
        return events


#: What tells one event from another: HubSpot says ``eventId`` "is not guaranteed to be
#: unique", and a retry of an event carries the same values in all of these (only its
#: ``attemptNumber`` grows). ``propertyValue`` is left out: it may be an e-mail address.
_EVENT_IDENTITY: Final = (
    "eventId",
    "subscriptionId",
    "portalId",
    "subscriptionType",
    "objectId",
    "occurredAt",
    "propertyName",
)


def _replay_key(item: Mapping[str, Any]) -> str:
    """The key a retry of this event shares and no other event has (``eventId`` first).

    With ``eventId`` alone, a different event that happens to carry the same one (another
    contact's privacy deletion) was dropped as a replay after HubSpot had its 200.
    """
    identity = ":".join(
        "" if item.get(name) is None else str(item[name]) for name in _EVENT_IDENTITY
    )
    # Kept in the store for webhook_ids_days, beyond an erasure: hashed, so the erased
    # contact's id (and that they asked to be deleted) is not kept readable with it.
    return "event:" + hashlib.sha256(identity.encode()).hexdigest()


_EVENT_KINDS: Final[Mapping[str, Literal["changed", "deleted", "erase"]]] = {
    "contact.privacyDeletion": "erase",
    "contact.creation": "changed",
    "contact.propertyChange": "changed",
    "contact.deletion": "deleted",
}


def _sent_note(by_email: bool, found: bool) -> str:
    """What the erasure sent, as its note says it (see ``HubSpotAdapter.erase``)."""
    return ERASURE_NOTE if by_email else ERASED_BY_ID_NOTE if found else NOTHING_ERASED_NOTE


def _address(contact: Mapping[str, Any], asked: str) -> str:
    """The e-mail address a contact holds (its ``email`` property), else the one asked for;
    ``""`` without one. Lower case: HubSpot keeps addresses so."""
    properties = contact.get("properties")
    held = properties.get("email") if isinstance(properties, dict) else None
    address = held if isinstance(held, str) and "@" in held else asked
    return address.strip().lower() if "@" in address else ""


def _by_email(records: Sequence[OutboundRecord]) -> list[dict[str, Any]]:
    """Batch inputs that name each contact by e-mail (``idProperty=email``)."""
    return [
        {
            "id": record.email,
            "idProperty": "email",
            # A unique trace id per input turns partial failures into a 207 that names the
            # failed inputs, instead of a 400 for the whole batch.
            "objectWriteTraceId": record.ref,
            "properties": {name: _as_property(value) for name, value in record.fields.items()},
        }
        for record in records
    ]


def _as_property(value: Any) -> str:
    """HubSpot takes every property value as a string; ``""`` clears a value."""
    if type(value) is str:  # nearly every value, once per field of every record sent
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        # Multiple-checkbox properties take their options separated by semicolons.
        return ";".join(_as_property(item) for item in value)
    return str(value)


def _chunks_without_duplicates(
    items: Sequence[tuple[int, OutboundRecord]],
    size: int,
    key: Callable[[OutboundRecord], str],
) -> Iterable[list[tuple[int, OutboundRecord]]]:
    chunk: list[tuple[int, OutboundRecord]] = []
    seen: set[str] = set()
    for item in items:
        value = key(item[1])
        if len(chunk) >= size or value in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(value)
    if chunk:
        yield chunk


def _email(record: OutboundRecord) -> str:
    return record.email.lower()


def _contact_id(record: OutboundRecord) -> str:
    return record.external_id or ""


def _result_ref(result: Mapping[str, Any], by_email: Mapping[str, str]) -> str | None:
    trace = result.get("objectWriteTraceId")
    if isinstance(trace, str) and trace:
        return trace
    properties = result.get("properties")
    if isinstance(properties, dict):
        email = properties.get("email")
        if isinstance(email, str):
            return by_email.get(email.lower())
    return None


def _error_refs(error: Mapping[str, Any]) -> list[str]:
    context = error.get("context")
    if not isinstance(context, dict):
        return []
    traces = context.get("objectWriteTraceId")
    if isinstance(traces, str):
        return [traces]
    if isinstance(traces, list):
        return [trace for trace in traces if isinstance(trace, str)]
    return []


def _refs_by_sent_id(error: Mapping[str, Any], by_sent_id: Mapping[str, str]) -> list[str]:
    """The records an error names by the ids their inputs were sent with (``context.ids``),
    as HubSpot names the contacts a ``batch/update`` found no live one for
    (``OBJECT_NOT_FOUND``). Read by trace id alone, such a record was "neither confirmed nor
    refused", retried by the same id for good: never written by e-mail, nor to the record a
    merge made of its contact."""
    context = error.get("context")
    ids = context.get("ids") if isinstance(context, dict) else None
    if not isinstance(ids, list):
        return []
    named = [str(sent).lower() for sent in ids if isinstance(sent, str | int)]
    return [by_sent_id[sent] for sent in named if sent and sent in by_sent_id]


def _category(error: Mapping[str, Any], client: SystemClient) -> str:
    """The error's category where it passes the client's rule for what a category may carry
    (:meth:`~connector.http.SystemClient.is_category`), else ``BATCH_ERROR``; never its
    message, which echoes input. The reason goes to dead letters and ``status``: a
    "category" holding digits (a phone number) or a lone word (a name) is no code."""
    category = error.get("category")
    return category if isinstance(category, str) and client.is_category(category) else "BATCH_ERROR"


_JSON: Final = json.JSONDecoder()


def _problem_codes(error: Mapping[str, Any], client: SystemClient) -> list[str]:
    """HubSpot's codes for what it refused in an input, which its category alone does not
    say: a property the portal lacks (``PROPERTY_DOESNT_EXIST``) or a value it will not take
    (``INVALID_EMAIL``). They come from the error's details (``errors[].code``) and from the
    problems its message lists as JSON after "Property values were not valid: " (``error``,
    as HubSpot's error-handling guide shows it). Only what passes the client's rule for
    codes is kept; the message's text, which quotes what was sent, never is."""
    found: list[Any] = []
    details = error.get("errors")
    if isinstance(details, list):
        found += [item.get("code") for item in details if isinstance(item, dict)]
    message = error.get("message")
    if isinstance(message, str) and "[" in message:
        try:
            # The list alone: text HubSpot may add after it is no reason to read none.
            problems, _ = _JSON.raw_decode(message, message.index("["))
        except ValueError:
            problems = None
        if isinstance(problems, list):
            found += [item.get("error") for item in problems if isinstance(item, dict)]
    return sorted({code for code in found if isinstance(code, str) and client.is_category(code)})


def _is_retryable(error: Mapping[str, Any], category: str) -> bool:
    status = str(error.get("status") or "")
    if status.isdecimal() and (int(status) >= 500 or int(status) == 429):
        return True
    return category in RETRYABLE_CATEGORIES


SPEC = AdapterSpec(
    kind="hubspot",
    settings_model=HubSpotSettings,
    factory=HubSpotAdapter,
    client_config=client_config,
    limits=hubspot_limits,
    sandbox=HubSpotSandbox,
)
