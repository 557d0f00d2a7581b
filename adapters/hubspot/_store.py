"""The HubSpot sandbox's data: contacts, their archive (recycle bin), the GDPR blocklist, search.

Kept apart from the HTTP layer in :mod:`adapters.hubspot.sandbox` so the rules of the data
(what is live, what is restorable, what is gone for good) read in one place.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.hubspot._objects import ObjectStore

__all__ = [
    "DEFAULT_READ_PROPERTIES",
    "KNOWN_OPTIONS",
    "KNOWN_PROPERTIES",
    "MULTIPLE_CHOICE",
    "READ_ONLY_PROPERTIES",
    "Contact",
    "ContactStore",
    "SearchError",
    "valid_email",
]

#: Contact properties the fake portal knows. ``date_of_birth`` is a real HubSpot property and is
#: accepted on purpose: a mapping that leaks it must be caught by tests that inspect what the
#: sandbox received, not by the fake refusing it.
KNOWN_PROPERTIES = frozenset(
    {
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "company",
        "address",
        "city",
        "zip",
        "state",
        "country",
        "jobtitle",
        "website",
        "lifecyclestage",
        "hs_legal_basis",
        "date_of_birth",
    }
)

#: Properties HubSpot sets itself; a write that names one is rejected. A merge sets the last
#: two: the ids of the contacts merged into the record, and the addresses beside its own.
READ_ONLY_PROPERTIES = frozenset(
    {
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
        "hs_merged_object_ids",
        "hs_additional_emails",
    }
)

#: The options (their values) of the enumeration properties among :data:`KNOWN_PROPERTIES`,
#: as a portal defines them by default. The lifecycle stages are HubSpot's internal values;
#: the legal bases' values are UNVERIFIED (HubSpot's labels, as its GDPR settings show them).
KNOWN_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "lifecyclestage": (
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    ),
    "hs_legal_basis": (
        "Legitimate interest - prospect/lead",
        "Legitimate interest - existing customer",
        "Legitimate interest - other",
        "Performance of a contract",
        "Freely given consent from contact",
        "Not applicable",
    ),
}

#: The enumeration properties among :data:`KNOWN_PROPERTIES` that take several options at once
#: (a multiple checkbox); a custom enumeration is a dropdown, which takes one.
MULTIPLE_CHOICE = frozenset({"hs_legal_basis"})

#: What a read returns when it names no properties (HubSpot's documented default set).
DEFAULT_READ_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)

#: Properties the free-text ``query`` of a search looks in.
QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def valid_email(value: str) -> bool:
    """HubSpot's check, as far as the fake needs it: one ``@`` and no whitespace."""
    return bool(_EMAIL.match(value))


_last_stamp: tuple[int, str] = (-1, "")


def _now_iso() -> str:
    """Now, as HubSpot writes it (UTC, to the millisecond).

    A batch stamps up to 100 contacts within the same millisecond: the text is made once per
    millisecond, not once per contact (formatting a datetime cost ~2.5 us a contact).
    """
    global _last_stamp
    millis = time.time_ns() // 1_000_000
    stamp = _last_stamp  # one read: sandboxes on other threads may replace it meanwhile
    if stamp[0] != millis:
        seconds, rest = divmod(millis, 1000)
        moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest * 1000)
        stamp = (millis, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        _last_stamp = stamp
    return stamp[1]


class SearchError(ValueError):
    """A search request HubSpot would answer with 400; the text is the vendor-style message."""


@dataclass
class Contact:
    """One contact as HubSpot stores it: every property value a string."""

    id: int
    properties: dict[str, str]
    created_at: str
    updated_at: str
    archived: bool = False
    archived_at: str | None = None

    @property
    def email(self) -> str:
        return self.properties.get("email", "")

    def to_json(
        self, names: Iterable[str] | None = None, trace_id: str | None = None
    ) -> dict[str, Any]:
        """The ``SimplePublicObject`` shape, with the requested properties (``None`` if unset)."""
        wanted = DEFAULT_READ_PROPERTIES if names is None else names
        body: dict[str, Any] = {
            "id": str(self.id),
            "properties": {name: self.properties.get(name) for name in wanted},
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": self.archived,
        }
        if self.archived_at:
            body["archivedAt"] = self.archived_at
        if trace_id:
            body["objectWriteTraceId"] = trace_id
        return body


class ContactStore:
    """Contacts keyed by id and by (live) e-mail; archived ones kept restorable.

    Args:
        extra_properties: custom properties the portal defines beyond :data:`KNOWN_PROPERTIES`.
        enumerations: custom enumeration properties the portal defines, with their options'
            values.
    """

    def __init__(
        self,
        extra_properties: Iterable[str] = (),
        enumerations: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        custom = {name: tuple(values) for name, values in (enumerations or {}).items()}
        self.known = KNOWN_PROPERTIES | frozenset(extra_properties) | frozenset(custom)
        #: Each enumeration property's options (values), which its definition lists.
        self.options: dict[str, tuple[str, ...]] = {**KNOWN_OPTIONS, **custom}
        self.contacts: dict[int, Contact] = {}
        self.live_by_email: dict[str, int] = {}
        self.archived_by_email: dict[str, list[int]] = {}
        #: E-mails gdpr-delete was called for (HubSpot blocklists them).
        self.blocklist: set[str] = set()
        #: Contacts created for a blocklisted e-mail (HubSpot lets the API bring them back).
        self.blocklist_recreations = 0
        #: Records associated with contacts (notes, deals, ...) and subscription statuses.
        self.objects = ObjectStore(_now_iso)
        #: The id of each contact merged away -> the id of the record it was merged into.
        self.merged_into: dict[int, int] = {}
        #: Contacts whose latest change search does not show yet: HubSpot indexes a change
        #: for search seconds after it, not always in the order of the changes.
        self.not_yet_searchable: set[int] = set()
        self._order: list[int] = []
        self._next_id = 1001
        # Kept as a count so ``count_live`` stays O(1): benchmarks ask after every batch.
        self._archived = 0

    # -- validation --------------------------------------------------------------------------

    def bad_property_names(self, properties: Mapping[str, Any]) -> list[str]:
        """Names a write may not carry: unknown to the portal, or set by HubSpot itself."""
        return sorted(name for name in properties if name not in self.known)

    def invalid_options(self, properties: Mapping[str, str]) -> list[tuple[str, str]]:
        """The enumeration values a write may not carry: ``(name, value)`` for each property
        with options whose value is not one of their internal values (HubSpot's
        ``INVALID_OPTION``). ``""`` empties any property; a multiple checkbox takes several
        options, separated by semicolons."""
        invalid: list[tuple[str, str]] = []
        for name, value in properties.items():
            offered = self.options.get(name)
            if offered is None or not value:
                continue
            given = value.split(";") if name in MULTIPLE_CHOICE else (value,)
            if any(option not in offered for option in given):
                invalid.append((name, value))
        return invalid

    # -- reads -------------------------------------------------------------------------------

    def live(self, id_value: str, id_property: str | None = None) -> Contact | None:
        """The live contact addressed by id (or by e-mail when ``id_property`` is email)."""
        if id_property == "email":
            contact_id = self.live_by_email.get(id_value.strip().lower())
        elif id_value.isdecimal():
            contact_id = int(id_value)
        else:
            return None
        contact = self.contacts.get(contact_id) if contact_id is not None else None
        return contact if contact is not None and not contact.archived else None

    def followed(self, id_value: str) -> Contact | None:
        """The live contact a read by id answers: the contact itself, or for the id of one
        merged away the record it was merged into ("both of the previous IDs will point to
        the resulting merged record, so fetching any records using the original IDs will
        return the new merged record with the new ID" [doc: HubSpot changelog, "Updated
        merge functionality for contacts and companies"]). Writes and ``gdpr-delete`` by such
        an id are not said to follow it (UNVERIFIED): the fake answers them as for an id it
        does not hold, the cautious reading."""
        if not id_value.isdecimal():
            return None
        contact_id = int(id_value)
        while contact_id in self.merged_into:
            contact_id = self.merged_into[contact_id]
        return self.live(str(contact_id))

    def archived(self, id_value: str, id_property: str | None = None) -> Contact | None:
        """The most recently archived contact addressed by id or e-mail."""
        if id_property == "email":
            ids = self.archived_by_email.get(id_value.strip().lower()) or []
            return self.contacts.get(ids[-1]) if ids else None
        contact = self.contacts.get(int(id_value)) if id_value.isdecimal() else None
        return contact if contact is not None and contact.archived else None

    def page(
        self, after: str | None, limit: int, archived: bool
    ) -> tuple[list[Contact], str | None]:
        """Contacts in id order from ``after`` (an id), and the next ``after`` or ``None``."""
        start = bisect_left(self._order, int(after)) if after and after.isdecimal() else 0
        found: list[Contact] = []
        for index in range(start, len(self._order)):
            contact = self.contacts.get(self._order[index])
            if contact is None or contact.archived != archived:
                continue
            if len(found) == limit:
                return found, str(contact.id)
            found.append(contact)
        return found, None

    def count_live(self) -> int:
        return len(self.contacts) - self._archived

    # -- writes ------------------------------------------------------------------------------

    def create(self, properties: Mapping[str, str]) -> Contact:
        """A new live contact; the caller has checked the e-mail is free and valid."""
        now = _now_iso()
        contact_id = self._next_id
        self._next_id += 1
        values = dict(properties)
        if "email" in values:
            values["email"] = values["email"].strip().lower()
        values.update({"hs_object_id": str(contact_id), "createdate": now, "lastmodifieddate": now})
        contact = Contact(contact_id, values, now, now)
        self.contacts[contact_id] = contact
        self._order.append(contact_id)
        if contact.email:
            self.live_by_email[contact.email] = contact_id
            if contact.email in self.blocklist:
                self.blocklist_recreations += 1
        return contact

    def update(self, contact: Contact, properties: Mapping[str, str]) -> None:
        """Overwrite the given properties (``""`` clears); re-index a changed e-mail."""
        now = _now_iso()
        old_email = contact.email
        for name, value in properties.items():
            contact.properties[name] = value.strip().lower() if name == "email" else value
        contact.properties["lastmodifieddate"] = now
        contact.updated_at = now
        if contact.email != old_email:
            self.live_by_email.pop(old_email, None)
            if contact.email:
                self.live_by_email[contact.email] = contact.id

    def merge(self, primary: Contact, merged: Contact) -> Contact:
        """Merge two live contacts as HubSpot does now: into a *new* record with a new id
        (the changelog above), holding the primary's values where it has one and the merged
        one's elsewhere, the primary's e-mail, the other's among its additional addresses
        (``hs_additional_emails``), both ids in ``hs_merged_object_ids``, and what was
        associated with either. Both former ids then answer reads with the new record.

        The merged contact's address is no contact's e-mail afterwards: HubSpot lets a new
        contact be created with it [doc: knowledge base, "Merge records", 2025], and whether
        a lookup by ``idProperty=email`` finds the record by an additional address is
        UNVERIFIED; the fake finds none, the cautious reading."""
        values = {
            **merged.properties,
            **{name: value for name, value in primary.properties.items() if value},
        }
        extra = [
            address
            for contact in (primary, merged)
            for address in [contact.email, *_listed(contact, "hs_additional_emails")]
            if address and address != primary.email
        ]
        ids = [
            former
            for contact in (primary, merged)
            for former in [str(contact.id), *_listed(contact, "hs_merged_object_ids")]
        ]
        values["hs_additional_emails"] = ";".join(dict.fromkeys(extra))
        values["hs_merged_object_ids"] = ";".join(dict.fromkeys(ids))
        for contact in (primary, merged):
            del self.contacts[contact.id]
            if self.live_by_email.get(contact.email) == contact.id:
                del self.live_by_email[contact.email]
        record = self.create(values)
        for contact in (primary, merged):
            self.merged_into[contact.id] = record.id
            self.objects.move_links(contact.id, record.id)
        return record

    def email_taken(self, email: str, by_other_than: Contact | None = None) -> bool:
        contact_id = self.live_by_email.get(email.strip().lower())
        return contact_id is not None and (by_other_than is None or contact_id != by_other_than.id)

    def archive(self, contact: Contact) -> None:
        """Move a contact to the recycle bin (restorable, as HubSpot keeps it 90 days)."""
        if contact.archived:
            return
        contact.archived = True
        contact.archived_at = _now_iso()
        self._archived += 1
        if contact.email:
            self.live_by_email.pop(contact.email, None)
            self.archived_by_email.setdefault(contact.email, []).append(contact.id)

    def restore(self, email: str) -> bool:
        """Bring back the latest archived contact for ``email``, unless a live one exists."""
        email = email.strip().lower()
        ids = self.archived_by_email.get(email)
        if not ids or email in self.live_by_email:
            return False
        contact = self.contacts[ids.pop()]
        if not ids:
            del self.archived_by_email[email]
        contact.archived = False
        contact.archived_at = None
        self._archived -= 1
        contact.updated_at = _now_iso()
        self.live_by_email[email] = contact.id
        return True

    def purge(self, contact: Contact) -> None:
        """Delete a contact for good (gdpr-delete): no copy stays, not even in the archive, and
        what is associated with it goes too (see :meth:`ObjectStore.forget`)."""
        if self.contacts.pop(contact.id, None) is not None and contact.archived:
            self._archived -= 1
        if contact.email:
            if self.live_by_email.get(contact.email) == contact.id:
                del self.live_by_email[contact.email]
            ids = self.archived_by_email.get(contact.email)
            if ids and contact.id in ids:
                ids.remove(contact.id)
                if not ids:
                    del self.archived_by_email[contact.email]
            self.blocklist.add(contact.email)
        # "A contact and all associated content": its engagements go with it, and its
        # address's statuses unless another contact (live or archived) still has the address.
        email = contact.email
        if email in self.live_by_email or email in self.archived_by_email:
            email = ""
        self.objects.forget(contact.id, email, lambda other: other in self.contacts)

    # -- search ------------------------------------------------------------------------------

    def search(self, body: Mapping[str, Any]) -> tuple[int, list[Contact]]:
        """Live contacts matching a search body, sorted; ``(total, all matches)``. A contact
        whose latest change search does not show yet (:attr:`not_yet_searchable`) is none.

        Raises:
            SearchError: more filter groups or filters than HubSpot allows (5 groups, 10
                filters per group, 25 in all) or an operator the fake does not know.
        """
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > 5:
            raise SearchError("Too many filter groups: at most 5 are allowed.")
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > 10:
                raise SearchError("Too many filters in a group: at most 10 are allowed.")
            total_filters += len(filters)
        if total_filters > 25:
            raise SearchError("Too many filters: at most 25 are allowed in all groups.")
        query = str(body.get("query") or "").lower()
        matches = [
            contact
            for contact in self.contacts.values()
            if not contact.archived
            and contact.id not in self.not_yet_searchable
            and (not groups or any(_matches_group(contact, group) for group in groups))
            and (not query or _matches_query(contact, query))
        ]
        sorts = body.get("sorts") or []
        if sorts:
            first = sorts[0]
            name = first if isinstance(first, str) else str(first.get("propertyName", ""))
            descending = isinstance(first, dict) and first.get("direction") == "DESCENDING"
            matches.sort(key=lambda c: _sort_key(c.properties.get(name)), reverse=descending)
        return len(matches), matches


def _listed(contact: Contact, name: str) -> list[str]:
    """The values of a property HubSpot keeps as a list, separated by semicolons."""
    return [value for value in contact.properties.get(name, "").split(";") if value]


def _matches_group(contact: Contact, group: Mapping[str, Any]) -> bool:
    return all(_matches_filter(contact, f) for f in group.get("filters") or [])


def _matches_filter(contact: Contact, flt: Mapping[str, Any]) -> bool:
    name = str(flt.get("propertyName", ""))
    operator = str(flt.get("operator", "EQ"))
    actual = contact.properties.get(name)
    if name == "hs_object_id":
        actual = str(contact.id)
    value = str(flt.get("value", "")).lower()
    values = [str(v).lower() for v in flt.get("values") or []]
    if name in DATE_PROPERTIES:
        # HubSpot takes a date filter's value as epoch milliseconds (or ISO 8601) and holds
        # the property as ISO 8601 text: both compare as milliseconds.
        actual, value = _as_millis(actual), _as_millis(value) or value
    present = actual not in (None, "")
    text = (actual or "").lower()
    if operator == "EQ":
        return present and text == value
    if operator == "NEQ":
        return text != value
    if operator == "IN":
        return present and text in values
    if operator == "NOT_IN":
        return text not in values
    if operator == "HAS_PROPERTY":
        return present
    if operator == "NOT_HAS_PROPERTY":
        return not present
    if operator == "CONTAINS_TOKEN":
        return present and value.strip("*") in text
    if operator == "NOT_CONTAINS_TOKEN":
        return value.strip("*") not in text
    if operator in ("LT", "LTE", "GT", "GTE"):
        return present and _compare(text, value, operator)
    raise SearchError(f"Unsupported operator {operator}.")


#: The contact properties that hold a time (ISO 8601 text, to the millisecond).
DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})


def _as_millis(text: str | None) -> str | None:
    """An ISO 8601 time as epoch milliseconds (text); milliseconds and ``None`` as given."""
    if not text or text.isdecimal():
        return text
    try:
        moment = datetime.fromisoformat(text.replace("z", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        return text
    return str(int(moment.timestamp() * 1000 + 0.5))


def _sort_key(value: str | None) -> tuple[int, float, str]:
    # Ids sort as numbers ("9" before "10"), anything else as text.
    text = value or ""
    return (0, float(text), "") if text.isdecimal() else (1, 0.0, text)


def _compare(left: str, right: str, operator: str) -> bool:
    # Numbers compare as numbers (dates are epoch milliseconds), anything else as text.
    try:
        order = (float(left) > float(right)) - (float(left) < float(right))
    except ValueError:
        order = (left > right) - (left < right)
    return {"LT": order < 0, "LTE": order <= 0, "GT": order > 0, "GTE": order >= 0}[operator]


def _matches_query(contact: Contact, query: str) -> bool:
    return any(query in (contact.properties.get(name) or "").lower() for name in QUERY_PROPERTIES)
