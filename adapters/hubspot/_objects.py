"""The HubSpot sandbox's data beside contacts: records associated with them, and subscriptions.

A contact's notes, calls, one-to-one e-mails, meetings and tasks (engagements), its deals,
its companies and its support tickets are records of their own, linked to the contact by
associations; an address's e-mail subscription statuses are kept by address. An access copy
reads both; an erasure (``gdpr-delete``, "a contact and all associated content") takes the
contact's engagements with it (see :meth:`ObjectStore.forget`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from adapters.hubspot._scopes import ASSOCIATED_KINDS, ENGAGEMENTS

__all__ = [
    "CONTACT_TO",
    "OBJECT_PROPERTIES",
    "OBJECT_READ_ONLY",
    "ObjectStore",
    "Record",
]

#: HubSpot's own (``HUBSPOT_DEFINED``) association type from a contact to each kind [doc: the
#: v4 associations type table].
CONTACT_TO: Final[Mapping[str, int]] = {
    "notes": 202,
    "calls": 194,
    "emails": 198,
    "meetings": 200,
    "tasks": 204,
    "deals": 4,
    "companies": 279,
    "tickets": 15,
}

#: Properties the fake portal defines per kind: HubSpot's documented ones.
OBJECT_PROPERTIES: Final[Mapping[str, frozenset[str]]] = {
    "notes": frozenset({"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"}),
    "calls": frozenset(
        {
            "hs_timestamp",
            "hs_call_title",
            "hs_call_body",
            "hs_call_direction",
            "hs_call_duration",
            "hs_call_status",
            "hs_call_from_number",
            "hs_call_to_number",
            "hubspot_owner_id",
        }
    ),
    "emails": frozenset(
        {
            "hs_timestamp",
            "hs_email_direction",
            "hs_email_status",
            "hs_email_subject",
            "hs_email_text",
            "hs_email_html",
            "hubspot_owner_id",
            # Who sent and received it (see adapters/hubspot/_recipients.py); a seeded
            # record holds what a test gives it, the fake fills in none from the headers.
            "hs_email_headers",
            *(
                f"hs_email_{role}_{part}"
                for role in ("from", "to", "cc", "bcc")
                for part in ("email", "firstname", "lastname")
            ),
        }
    ),
    "meetings": frozenset(
        {
            "hs_timestamp",
            "hs_meeting_title",
            "hs_meeting_body",
            "hs_internal_meeting_notes",
            "hs_meeting_start_time",
            "hs_meeting_end_time",
            "hs_meeting_outcome",
            "hubspot_owner_id",
        }
    ),
    "tasks": frozenset(
        {"hs_timestamp", "hs_task_subject", "hs_task_body", "hs_task_status", "hubspot_owner_id"}
    ),
    "deals": frozenset({"dealname", "description", "amount", "dealstage", "pipeline", "closedate"}),
    "companies": frozenset({"name", "description", "domain", "phone", "city", "country"}),
    # A ticket's own creation date as ``createdate`` (as a contact's), beside hs_createdate,
    # and the properties past subject, content, source_type and the pipeline's two are
    # UNVERIFIED names.
    "tickets": frozenset(
        {
            "subject",
            "content",
            "hs_pipeline",
            "hs_pipeline_stage",
            "hs_ticket_priority",
            "hs_ticket_category",
            "source_type",
            "createdate",
            "hubspot_owner_id",
        }
    ),
}

#: Properties HubSpot sets itself on every record of these kinds.
OBJECT_READ_ONLY: Final = frozenset({"hs_object_id", "hs_createdate", "hs_lastmodifieddate"})

#: What a read returns for a record when it names no properties.
_DEFAULT_READ: Final = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")


@dataclass
class Record:
    """One record of an associated kind, every property value a string."""

    id: int
    kind: str
    properties: dict[str, str]
    created_at: str
    updated_at: str

    def to_json(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The ``SimplePublicObject`` shape, with the requested properties (``None`` if unset)."""
        wanted = _DEFAULT_READ if names is None else names
        return {
            "id": str(self.id),
            "properties": {name: self.properties.get(name) for name in wanted},
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }


class ObjectStore:
    """Records of the associated kinds, their links to contacts, and subscription statuses.

    Args:
        stamp: now, as HubSpot writes it (the contact store's clock).
    """

    def __init__(self, stamp: Callable[[], str]) -> None:
        self.stamp = stamp
        self.known: dict[str, frozenset[str]] = dict(OBJECT_PROPERTIES)
        self.records: dict[str, dict[int, Record]] = {kind: {} for kind in ASSOCIATED_KINDS}
        #: contact id -> kind -> record ids, in the order they were associated.
        self.links: dict[int, dict[str, list[int]]] = {}
        #: address (lower case) -> subscription type name -> its status, as HubSpot answers it.
        self.subscriptions: dict[str, dict[str, dict[str, Any]]] = {}
        self._subscription_ids: dict[str, int] = {}
        self._next_id = 9_000_001

    def add(self, kind: str, contact_ids: Iterable[int], properties: Mapping[str, str]) -> Record:
        """A new record of ``kind``, associated with each of ``contact_ids``."""
        now = self.stamp()
        record_id = self._next_id
        self._next_id += 1
        values = {**properties, "hs_object_id": str(record_id)}
        values |= {"hs_createdate": now, "hs_lastmodifieddate": now}
        if kind == "tickets":
            values.setdefault("createdate", now)
        record = Record(record_id, kind, values, now, now)
        self.records[kind][record_id] = record
        for contact_id in contact_ids:
            self.links.setdefault(contact_id, {}).setdefault(kind, []).append(record_id)
        return record

    def associated(self, contact_id: int, kind: str) -> list[int]:
        """The ids of the contact's records of ``kind`` that exist, in association order."""
        ids = self.links.get(contact_id, {}).get(kind, [])
        return [record_id for record_id in ids if record_id in self.records[kind]]

    def move_links(self, from_id: int, to_id: int) -> None:
        """Associate with ``to_id`` what was associated with ``from_id`` (a merge: "all
        related data" of both contacts ends on the record they were merged into)."""
        for kind, ids in self.links.pop(from_id, {}).items():
            kept = self.links.setdefault(to_id, {}).setdefault(kind, [])
            kept += [record_id for record_id in ids if record_id not in kept]

    def get(self, kind: str, id_value: str) -> Record | None:
        return self.records[kind].get(int(id_value)) if id_value.isdecimal() else None

    def subscribe(
        self, email: str, name: str, status: str, legal_basis: str | None, explanation: str
    ) -> None:
        """Set the address's status for the subscription type ``name`` (created if new)."""
        type_id = self._subscription_ids.setdefault(name, 100 + len(self._subscription_ids))
        entry: dict[str, Any] = {
            "id": str(type_id),
            "name": name,
            "description": name,
            "status": status,
            "sourceOfStatus": "SUBSCRIPTION_STATUS",
        }
        if legal_basis:
            entry |= {"legalBasis": legal_basis, "legalBasisExplanation": explanation}
        self.subscriptions.setdefault(email.strip().lower(), {})[name] = entry

    def statuses(self, email: str) -> list[dict[str, Any]]:
        """The address's subscription statuses, one per type it has one for."""
        return list(self.subscriptions.get(email.strip().lower(), {}).values())

    def forget(self, contact_id: int, email: str, still_linked: Callable[[int], bool]) -> None:
        """What ``gdpr-delete`` takes with a contact: its associations, the engagements linked
        to no other contact that ``still_linked`` says is held, and its address's statuses.

        UNVERIFIED beyond "permanently delete a contact and all associated content"; the fake
        takes the cautious view: an engagement another contact still has, and every deal,
        company and ticket (records of their own, not engagements), stay.
        """
        links = self.links.pop(contact_id, {})
        for kind in ENGAGEMENTS:
            for record_id in links.get(kind, []):
                others = (
                    other
                    for other, kinds in self.links.items()
                    if record_id in kinds.get(kind, []) and still_linked(other)
                )
                if next(others, None) is None:
                    self.records[kind].pop(record_id, None)
        if email:
            self.subscriptions.pop(email.strip().lower(), None)
