"""What an access copy holds beside a contact's own properties.

HubSpot keeps, about a contact, more than its properties: the records associated with it
(notes a salesperson wrote, calls, one-to-one e-mails, meetings, tasks, deals, companies,
support tickets) and,
per e-mail subscription type, whether the address is subscribed and on what legal basis. Both
are in the reference's access recipe (search "plus associations plus
``GET /communication-preferences/v3/status/email/{email}``"), and both are personal data an
access request must show (Art. 15):

- associations: ``GET /crm/v4/objects/contacts/{id}/associations/{toObjectType}`` per kind,
  paged by ``after``, then ``POST /crm/v3/objects/{kind}/batch/read`` of those ids with every
  property the portal defines for the kind (:class:`~adapters.hubspot._properties.PropertyLists`;
  the kind's main properties where HubSpot refuses the list). At most
  :data:`MAX_PER_KIND` records of a kind are listed. Of an e-mail's senders and recipients,
  the person's own entries alone are kept (:mod:`adapters.hubspot._recipients`), and the
  addresses of others that the text of an e-mail, note, call, meeting or task, a deal's
  name or description, a company's description or a ticket's subject or text quotes read
  ``[address left out]`` (:data:`WRITTEN`, :mod:`connector.others`);
- subscription statuses: ``GET /communication-preferences/v3/status/email/{email}``.

A refusal (403: a scope the private app lacks) of one of them does not fail the copy: the
contact's record says what was not read (:data:`ASSOCIATIONS_UNREAD`,
:data:`SUBSCRIPTIONS_UNREAD`), as ``propertiesNotRead`` does for its properties, so a partial
copy never passes for whole; a kind refused is logged with the scope to grant
(:data:`~adapters.hubspot._scopes.READ_SCOPES`), never the contact.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import httpx

from adapters.hubspot._properties import PropertyLists
from adapters.hubspot._recipients import email_without_others
from adapters.hubspot._scopes import ASSOCIATED_KINDS, READ_SCOPES
from connector.errors import RemoteError, RetryableError
from connector.http import SystemClient, answer_object
from connector.others import text_without_others
from connector.paging import PageTokens

__all__ = [
    "ASSOCIATIONS_UNREAD",
    "ASSOCIATIONS_UNREAD_REASON",
    "MAIN_PROPERTIES",
    "MAX_PER_KIND",
    "SUBSCRIPTIONS",
    "SUBSCRIPTIONS_UNREAD",
    "SUBSCRIPTIONS_UNREAD_REASON",
    "WRITTEN",
    "Related",
    "next_after",
]

log = logging.getLogger("klantsync.hubspot")

#: Most records of one kind an access copy lists per contact: a bound on the calls one copy
#: makes (a page of associations and five batch reads per kind). A contact with more of a kind
#: says so (:data:`ASSOCIATIONS_UNREAD`), so the copy does not pass for the whole of it.
MAX_PER_KIND: Final = 500

#: Most associations a v4 list page holds (its default, and its maximum) [src: HubSpot's
#: generated clients, ``limit`` "default to 500"].
ASSOCIATIONS_PAGE: Final = 500

#: Most ids one ``batch/read`` takes.
READ_BATCH: Final = 100

ASSOCIATIONS: Final = "/crm/v4/objects/contacts/{contactId}/associations/{toObjectType}"

#: The route with the e-mail in its path. Errors and logs name this template, never the path.
SUBSCRIPTIONS: Final = "/communication-preferences/v3/status/email/{emailAddress}"

#: The key of a contact's record that says records associated with it were not all listed.
ASSOCIATIONS_UNREAD: Final = "associationsNotRead"
#: Its reason, a code the access reports say in their language (connector/access.py); beside
#: it, which kinds: ``unread`` (HubSpot served none: a missing scope), ``cut`` (more than
#: ``listedPerKind``), ``mainPropertiesOnly`` (the kind's property list was refused).
ASSOCIATIONS_UNREAD_REASON: Final = "associations_partial"

#: The key of a contact's record that says its address's subscription statuses were not read.
SUBSCRIPTIONS_UNREAD: Final = "subscriptionsNotRead"
#: Its reason: the scope that reads them (UNVERIFIED name; HubSpot answers 403 without it).
SUBSCRIPTIONS_UNREAD_REASON: Final = "communication_preferences.read"

#: The properties that carry what a record of each kind says, read where HubSpot refuses the
#: kind's property list: HubSpot's documented ones (its engagement and object guides), not
#: every one a portal may define.
MAIN_PROPERTIES: Final[Mapping[str, tuple[str, ...]]] = {
    "notes": ("hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"),
    "calls": (
        "hs_timestamp",
        "hs_call_title",
        "hs_call_body",
        "hs_call_direction",
        "hs_call_duration",
        "hs_call_status",
        "hs_call_from_number",
        "hs_call_to_number",
        "hs_call_recording_url",
        "hubspot_owner_id",
    ),
    "emails": (
        "hs_timestamp",
        "hs_email_direction",
        "hs_email_status",
        "hs_email_subject",
        "hs_email_text",
        "hs_email_html",
        "hs_email_headers",
        "hubspot_owner_id",
    ),
    "meetings": (
        "hs_timestamp",
        "hs_meeting_title",
        "hs_meeting_body",
        "hs_internal_meeting_notes",
        "hs_meeting_location",
        "hs_meeting_start_time",
        "hs_meeting_end_time",
        "hs_meeting_outcome",
        "hubspot_owner_id",
    ),
    "tasks": (
        "hs_timestamp",
        "hs_task_subject",
        "hs_task_body",
        "hs_task_status",
        "hs_task_priority",
        "hs_task_type",
        "hubspot_owner_id",
    ),
    "deals": (
        "dealname",
        "description",
        "amount",
        "dealstage",
        "pipeline",
        "closedate",
        "hubspot_owner_id",
    ),
    "companies": ("name", "description", "domain", "phone", "address", "city", "zip", "country"),
    # The ticket guide's: subject (its name), hs_pipeline_stage (its status), hs_pipeline;
    # content and source_type as the legacy tickets API names them; the rest UNVERIFIED.
    "tickets": (
        "subject",
        "content",
        "hs_pipeline",
        "hs_pipeline_stage",
        "hs_ticket_priority",
        "hs_ticket_category",
        "source_type",
        "createdate",
        "hubspot_owner_id",
    ),
}

#: The properties of each kind holding what staff wrote (an e-mail's: its own module; a
#: deal's name and description, a company's description; a ticket's subject and text, the
#: person's words or staff's): an address of another quoted in them ("her partner
#: cees@elders.example called too") is left out of the copy, the person's own stays
#: (Art. 15(4); :mod:`connector.others`).
WRITTEN: Final[Mapping[str, tuple[str, ...]]] = {
    "notes": ("hs_note_body",),
    "calls": ("hs_call_title", "hs_call_body"),
    "meetings": ("hs_meeting_title", "hs_meeting_body", "hs_internal_meeting_notes"),
    "tasks": ("hs_task_subject", "hs_task_body"),
    "deals": ("dealname", "description"),
    "companies": ("description",),
    "tickets": ("subject", "content"),
}


class Related:
    """Reads the records associated with a contact and its address's subscription statuses.

    Args:
        client: the portal's HTTP client.
        lists: the portal's property lists, shared with the contact reads.
    """

    def __init__(self, client: SystemClient, lists: PropertyLists) -> None:
        self.client = client
        self.lists = lists

    async def associated(self, contact_id: str, own: Collection[str]) -> dict[str, Any]:
        """``{"associations": {kind: [record, ...]}}`` for the kinds the contact has records
        of, and :data:`ASSOCIATIONS_UNREAD` where some were not read; ``{}`` for none.

        ``own`` holds the person's addresses (lower case): an e-mail's other senders and
        recipients are left out (Art. 15(4); :mod:`adapters.hubspot._recipients`), as are
        other addresses the text of a record quotes (:data:`WRITTEN`).
        """
        found: dict[str, list[dict[str, Any]]] = {}
        partial: dict[str, list[str]] = {"unread": [], "cut": [], "mainPropertiesOnly": []}
        for kind in ASSOCIATED_KINDS:
            listed = await self.associated_ids(contact_id, kind)
            if listed is None:
                partial["unread"].append(kind)
                _refused(self.client.system, kind)
                continue
            ids, whole = listed
            if not whole:
                partial["cut"].append(kind)
            if not ids:
                continue
            names = await self.lists.names(kind)
            if names.refused:
                partial["mainPropertiesOnly"].append(kind)
            records = await self._read(kind, ids, names.names)
            if records is None:
                partial["unread"].append(kind)
                _refused(self.client.system, kind)
            elif records:
                found[kind] = [_as_copied(kind, record, own) for record in records]
        held: dict[str, Any] = {"associations": found} if found else {}
        said = {key: ", ".join(kinds) for key, kinds in partial.items() if kinds}
        if said:
            if partial["cut"]:
                said["listedPerKind"] = str(MAX_PER_KIND)
            held[ASSOCIATIONS_UNREAD] = {"reason": ASSOCIATIONS_UNREAD_REASON, **said}
        return held

    async def subscriptions(self, email: str) -> dict[str, Any]:
        """``{"subscriptions": [...]}``: the address's status per subscription type (with its
        legal basis), or :data:`SUBSCRIPTIONS_UNREAD` where HubSpot refused them.

        HubSpot answers an address it knows nothing of either with no statuses or with 404
        (which one is UNVERIFIED): both are none.
        """
        path = SUBSCRIPTIONS.format(emailAddress=quote(email.strip(), safe="@"))
        try:
            response = await self.client.request("GET", path, accept=(403, 404))
        except RemoteError as exc:
            # The path holds the e-mail: the error raised names the route's template instead,
            # and keeps only what caused the original (a transport error) in its chain.
            raise exc.renamed(SUBSCRIPTIONS) from exc.__cause__
        if response.status_code == 403:
            return {SUBSCRIPTIONS_UNREAD: {"reason": SUBSCRIPTIONS_UNREAD_REASON}}
        if response.status_code == 404:
            return {"subscriptions": []}
        body = answer_object(
            response,
            system=self.client.system,
            method="GET",
            path=SUBSCRIPTIONS,
            required=("subscriptionStatuses",),
        )
        statuses = self._list_of(response, body["subscriptionStatuses"], "GET", SUBSCRIPTIONS)
        return {"subscriptions": [status for status in statuses if isinstance(status, dict)]}

    def _list_of(self, response: httpx.Response, value: Any, method: str, path: str) -> list[Any]:
        """``value`` where it is a list; an answer holding something else where HubSpot always
        sends a list was not read, and says nothing about what is held."""
        if isinstance(value, list):
            return value
        raise RetryableError(
            self.client.system, method, path, response.status_code, "unreadable answer"
        )

    async def associated_ids(self, contact_id: str, kind: str) -> tuple[list[str], bool] | None:
        """The ids of the contact's records of ``kind`` (at most :data:`MAX_PER_KIND`) and
        whether that is all of them; ``None`` where HubSpot served none (403: a missing
        scope; 404: it does not answer for this contact, which for one in the recycle bin is
        UNVERIFIED either way). An erasure counts with it what gdpr-delete leaves."""
        path = ASSOCIATIONS.format(contactId=contact_id, toObjectType=kind)
        ids: list[str] = []
        tokens = PageTokens(self.client.system, "GET", path)
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": min(ASSOCIATIONS_PAGE, MAX_PER_KIND - len(ids))}
            if after is not None:
                params["after"] = after
            response = await self.client.request("GET", path, params=params, accept=(403, 404))
            if response.status_code in (403, 404):
                return None
            body = answer_object(
                response, system=self.client.system, method="GET", path=path, required=("results",)
            )
            for item in self._list_of(response, body["results"], "GET", path):
                linked = _object_id(item.get("toObjectId")) if isinstance(item, dict) else None
                if linked is not None and linked not in ids:
                    ids.append(linked)
            after = next_after(body)
            if after is None:
                return ids, True
            if len(ids) >= MAX_PER_KIND:
                return ids, False
            tokens.follow(after, response.status_code)

    async def _read(
        self, kind: str, ids: Sequence[str], names: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        """The records of ``kind`` with these ids and properties; ``None`` where HubSpot
        refused them (403). One gone since it was listed (404, or a 207 naming it) is left
        out: it is no longer held."""
        path = f"/crm/v3/objects/{kind}/batch/read"
        records: list[dict[str, Any]] = []
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            response = await self.client.request(
                "POST",
                path,
                json={"inputs": [{"id": i} for i in chunk], "properties": list(names)},
                accept=(403, 404),
            )
            if response.status_code == 403:
                return None
            if response.status_code == 404:
                continue
            body = answer_object(
                response,
                system=self.client.system,
                method="POST",
                path=path,
                required=("results",),
            )
            records += [
                record
                for record in self._list_of(response, body["results"], "POST", path)
                if isinstance(record, dict) and record.get("id") is not None
            ]
        return records


def _refused(system: str, kind: str) -> None:
    """Warn that HubSpot served none of ``kind`` (a 403, or a 404 for the contact), naming
    the scope that reads them: the copy says only that the kind was not read."""
    # The portal's, not a person's: no contact is named.
    log.warning(
        "HubSpot served no %s associated with a contact: access copies leave them out "
        "(a 403: grant the private app the %s scope)",
        kind,
        READ_SCOPES.get(kind, READ_SCOPES["contacts"]),
        extra={"system": system},
    )


def _as_copied(kind: str, record: dict[str, Any], own: Collection[str]) -> dict[str, Any]:
    """A record of ``kind`` as the person's copy holds it: without others' addresses."""
    if kind == "emails":
        return email_without_others(record, own)
    properties = record.get("properties")
    if kind not in WRITTEN or not isinstance(properties, Mapping):
        return record
    return {**record, "properties": text_without_others(properties, WRITTEN[kind], own)}


def _object_id(value: Any) -> str | None:
    """A HubSpot object id (a number, or its digits as text), as text; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isdecimal():
        return value
    return None


def next_after(body: Mapping[str, Any]) -> str | None:
    """HubSpot's ``paging.next.after`` token, or ``None`` on the last page."""
    paging = body.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    after = following.get("after") if isinstance(following, dict) else None
    return str(after) if after not in (None, "") else None
