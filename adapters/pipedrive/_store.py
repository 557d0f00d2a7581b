"""The Pipedrive sandbox's data: persons as API v2 shows them, soft deletion, paging, search.

No HTTP here: :mod:`adapters.pipedrive.sandbox` turns requests into calls on
:class:`PersonStore` and its answers into Pipedrive's responses. Times come from the caller
(the sandbox's injectable wall clock), so tests can step through the 30-day window.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LINKED_KINDS",
    "PURGE_AFTER_SECONDS",
    "WRITABLE_FIELDS",
    "BadRequest",
    "Person",
    "PersonStore",
    "decode_position",
    "encode_position",
    "lead_id",
    "name_parts",
    "parse_rfc3339",
    "rfc3339",
    "validate_body",
]

#: "After 30 days, the person will be permanently deleted." (v2 ``deletePerson``).
PURGE_AFTER_SECONDS = 30 * 86_400

#: What Pipedrive keeps beside a person that names them (``person_id``): notes (API v1),
#: deals and activities (API v2).
LINKED_KINDS = ("notes", "deals", "activities", "leads")

#: Body fields a person write may carry: ``AddPersonRequest`` and ``UpdatePersonRequest`` of
#: the v2 SDK (``src/versions/v2/models/add-person-request.ts``), which have ``name`` and no
#: ``first_name`` or ``last_name``: those Pipedrive shows on a read, split from ``name``
#: (:func:`name_parts`). Anything else is refused with a 400; whether Pipedrive itself refuses
#: or ignores unknown fields is UNVERIFIED. Refusing makes a mapping that sends a field
#: Pipedrive lacks fail loudly in tests.
WRITABLE_FIELDS = frozenset(
    {
        "name",
        "owner_id",
        "org_id",
        "add_time",
        "update_time",
        "emails",
        "phones",
        "visible_to",
        "label_ids",
        "marketing_status",
        "custom_fields",
    }
)


class BadRequest(ValueError):
    """A request Pipedrive would answer with 400; the text never echoes what was sent."""


def rfc3339(epoch: int) -> str:
    """``2025-01-01T10:20:00Z``: how v2 writes ``add_time`` and ``update_time``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> int:
    """Epoch seconds of an RFC 3339 time; :class:`BadRequest` if it is not one."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest("Invalid date format, use RFC3339") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def encode_position(values: list[Any]) -> str:
    """An opaque paging cursor, as Pipedrive's look (base64 of a small JSON value)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode("ascii")


def decode_position(cursor: str) -> list[Any]:
    """The values inside a cursor; :class:`BadRequest` for one this sandbox did not issue."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise BadRequest("Invalid cursor") from exc
    if not isinstance(values, list):
        raise BadRequest("Invalid cursor")
    return values


def _entries(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be an array")
    entries: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise BadRequest(f"{name} items must be objects with a value")
        entries.append(
            {
                "value": item["value"],
                "primary": bool(item.get("primary", False)),
                "label": str(item.get("label") or "work"),
            }
        )
    if entries and not any(e["primary"] for e in entries):
        entries[0]["primary"] = True
    return entries


def name_parts(name: Any) -> tuple[str | None, str | None]:
    """``first_name`` and ``last_name`` as Pipedrive shows them for a person's ``name``.

    v2 writes take ``name`` only; a read shows both parts besides it. How Pipedrive splits a
    name is UNVERIFIED: the sandbox takes the first word as the first name and the rest as
    the last name ("Jan van der Berg": "Jan", "van der Berg").
    """
    words = str(name or "").split(maxsplit=1)
    return (words[0] if words else None, words[1] if len(words) > 1 else None)


def validate_body(body: Any, *, creating: bool) -> dict[str, Any]:
    """Check a person write; return it with ``emails``/``phones`` normalised.

    Raises:
        BadRequest: not an object, an unknown field, no ``name`` on create, malformed lists.
    """
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    unknown = sorted(name for name in body if name not in WRITABLE_FIELDS)
    if unknown:
        raise BadRequest("Unknown field in request body")
    clean = dict(body)
    name = clean.get("name")
    if creating and (not isinstance(name, str) or not name.strip()):
        raise BadRequest("Name must be given")
    if "name" in clean and (not isinstance(name, str) or not name.strip()):
        raise BadRequest("Name must be a non-empty string")
    custom = clean.get("custom_fields")
    if "custom_fields" in clean and not (
        isinstance(custom, dict) and all(isinstance(key, str) for key in custom)
    ):
        # "An object where each key represents a custom field" (the v2 request models).
        raise BadRequest("custom_fields must be an object")
    if isinstance(custom, dict):
        # A custom field written null or "" is emptied, and a read shows it null
        # (pipedrive/client-nodejs issue 162, for v1; the same under v2's custom_fields is
        # UNVERIFIED).
        clean["custom_fields"] = {k: (None if v == "" else v) for k, v in custom.items()}
    for key in ("emails", "phones"):
        if key in clean:
            clean[key] = _entries(clean[key], key)
    return clean


@dataclass
class Person:
    """One person as the sandbox keeps it; ``deleted_at`` (epoch seconds) marks a deletion."""

    id: int
    values: dict[str, Any]
    add_time: int
    update_time: int
    deleted_at: int | None = None

    @property
    def emails(self) -> list[str]:
        return [str(e["value"]).strip().lower() for e in self.values.get("emails") or []]

    def to_json(self) -> dict[str, Any]:
        """The v2 ``Person`` shape (a subset: the fields klantsync and tests look at)."""
        values = self.values
        first, last = name_parts(values.get("name"))
        return {
            "id": self.id,
            "name": values.get("name"),
            "first_name": first,
            "last_name": last,
            "owner_id": values.get("owner_id", 1),
            "org_id": values.get("org_id"),
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
            "emails": [dict(e) for e in values.get("emails") or []],
            "phones": [dict(p) for p in values.get("phones") or []],
            "is_deleted": self.deleted_at is not None,
            "visible_to": values.get("visible_to", 3),
            "label_ids": list(values.get("label_ids") or []),
            "picture_id": None,
            "custom_fields": dict(values.get("custom_fields") or {}),
        }

    def search_item(self) -> dict[str, Any]:
        """The abbreviated ``item`` of a ``/persons/search`` hit: e-mails as plain strings."""
        values = self.values
        return {
            "id": self.id,
            "type": "person",
            "name": values.get("name"),
            "phones": [p["value"] for p in values.get("phones") or []],
            "emails": [e["value"] for e in values.get("emails") or []],
            "visible_to": values.get("visible_to", 3),
            "owner": {"id": values.get("owner_id", 1)},
            "organization": None,
            "custom_fields": [],
            "notes": [],
        }


@dataclass
class PersonStore:
    """Every person, live or marked deleted, by id, and what Pipedrive keeps beside them.

    ``linked`` holds, by kind (:data:`LINKED_KINDS`), the notes, deals, activities and leads
    that name a person by ``person_id``, each in the shape its list endpoint answers (a
    lead's id is a UUID, the others' a number). What a
    person's deletion or purge does to them is UNVERIFIED: the sandbox leaves them as they
    are. ``labels`` are the options of the person field ``label_ids``: id -> name.
    """

    persons: dict[int, Person] = field(default_factory=dict)
    next_id: int = 1
    linked: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {kind: [] for kind in LINKED_KINDS}
    )
    labels: dict[int, str] = field(default_factory=dict)
    next_linked_id: int = 1

    def add_linked(self, kind: str, values: Mapping[str, Any]) -> int:
        """Keep one note, deal, activity or lead (``values`` in its list shape); return its
        number (a lead's id is made of it)."""
        number = self.next_linked_id
        item = {"id": lead_id(number) if kind == "leads" else number, **values}
        self.linked[kind].append(item)
        self.next_linked_id += 1
        return number

    def remove_linked(self, kind: str, item_id: int) -> bool:
        """Delete one note, deal or activity for good; whether it was there."""
        kept = [item for item in self.linked[kind] if item.get("id") != item_id]
        gone = len(kept) != len(self.linked[kind])
        self.linked[kind] = kept
        return gone

    def linked_of(self, kind: str, person_id: int | None) -> list[dict[str, Any]]:
        """The items of ``kind`` naming ``person_id`` (every one for ``None``), by id; leads
        in the order they were made ("sorted by the time they were created")."""
        items = self.linked[kind]
        chosen = [i for i in items if person_id is None or i.get("person_id") == person_id]
        if kind == "leads":
            return chosen
        return sorted(chosen, key=lambda item: int(item["id"]))

    def live(self, person_id: int) -> Person | None:
        person = self.persons.get(person_id)
        return person if person is not None and person.deleted_at is None else None

    def with_email(self, email: str, *, deleted: bool = False) -> list[Person]:
        """Persons holding ``email`` (case-insensitive), live or (``deleted``) marked deleted."""
        wanted = email.strip().lower()
        return [
            p
            for p in self.persons.values()
            if (p.deleted_at is not None) == deleted and wanted in p.emails
        ]

    def create(self, values: Mapping[str, Any], now: int) -> Person:
        person = Person(self.next_id, dict(values), now, now)
        self.persons[person.id] = person
        self.next_id += 1
        return person

    def update(self, person: Person, values: Mapping[str, Any], now: int) -> None:
        # Lists are replaced, not merged: what PATCH does to emails/phones is UNVERIFIED.
        # Custom fields are set one by one, each key the request names (a field left out
        # keeps its value): that PATCH does not clear the others is UNVERIFIED.
        changes = dict(values)
        if "custom_fields" in changes:
            held = dict(person.values.get("custom_fields") or {})
            changes["custom_fields"] = {**held, **changes["custom_fields"]}
        person.values.update(changes)
        person.update_time = now

    def delete(self, person: Person, now: int) -> None:
        """Mark deleted: gone from reads, restorable until purged 30 days later."""
        person.deleted_at = now
        person.update_time = now

    def merge(self, merged: Person, kept: Person, now: int) -> None:
        """Merge ``merged`` into ``kept``, as v1 ``PUT /persons/{id}/merge`` does: the kept
        person's values win where both have one and the merged one's fill those it lacks;
        what names the merged person (notes, deals, activities) names the kept one after;
        the merged person is marked deleted, as a ``DELETE`` marks it.

        "If both Persons have data in the same field, the Person of merge_with_id will be
        considered more important ... If the Person of merge_with_id has empty fields, but
        the other Person has content in them, it will be added" and "all related data
        (activities, emails, filters, notes, ...) will be transferred" [doc: Pipedrive,
        "Merging two persons"]. That the e-mail and phone lists are joined, the kept
        person's entries first and still primary, is UNVERIFIED (one third-party tool says
        they are combined); so is that the person merged away is in the bin as a deleted one.
        """
        values = dict(kept.values)
        for key, value in merged.values.items():
            if key in ("emails", "phones"):
                held = [dict(e) for e in values.get(key) or []]
                seen = {str(e["value"]).strip().lower() for e in held}
                extra = [
                    {**e, "primary": False}
                    for e in merged.values.get(key) or []
                    if str(e["value"]).strip().lower() not in seen
                ]
                values[key] = held + extra
            elif key == "custom_fields":
                held_fields = dict(values.get(key) or {})
                given = {k: v for k, v in (value or {}).items() if held_fields.get(k) is None}
                values[key] = {**held_fields, **given}
            elif values.get(key) in (None, "", []):
                values[key] = value
        kept.values = values
        kept.update_time = now
        for kind in LINKED_KINDS:
            for item in self.linked[kind]:
                if item.get("person_id") == merged.id:
                    item["person_id"] = kept.id
        self.delete(merged, now)

    def restore(self, person: Person, now: int) -> None:
        person.deleted_at = None
        person.update_time = now

    def purge(self, now: int) -> int:
        """Remove for good every person deleted at least 30 days before ``now``."""
        expired = [
            p.id
            for p in self.persons.values()
            if p.deleted_at is not None and now - p.deleted_at >= PURGE_AFTER_SECONDS
        ]
        for person_id in expired:
            del self.persons[person_id]
        return len(expired)

    def listing(
        self,
        *,
        since: int | None,
        until: int | None,
        sort_by: str,
        descending: bool,
        after: list[Any] | None,
        limit: int,
        by_offset: bool = False,
    ) -> tuple[list[Person], str | None]:
        """One page of live persons in ``(sort key, id)`` order after the ``after`` position.

        Keyset paging (rather than offsets) keeps a page stable when a person is updated
        while a client pages: it moves to the end instead of shifting every later page.
        With ``by_offset`` the cursor is a position in the list instead (``[offset]``): a
        person updated or deleted on a page already read shifts every later one back by
        one, and the first of the next page onto the page read (what Pipedrive's
        ``next_cursor`` may be: the reference says only that it marks "the first item on
        the next page", UNVERIFIED either way).
        """

        def key(person: Person) -> tuple[int, int]:
            value = {"id": person.id, "add_time": person.add_time}.get(sort_by, person.update_time)
            return (value, person.id)

        chosen = [
            p
            for p in self.persons.values()
            if p.deleted_at is None
            and (since is None or p.update_time >= since)
            and (until is None or p.update_time < until)
        ]
        chosen.sort(key=key, reverse=descending)
        if by_offset:
            start = int(after[0]) if after is not None else 0
            page = chosen[start : start + limit]
            more = start + limit < len(chosen)
            return page, encode_position([start + limit]) if more else None
        if after is not None:
            mark = (int(after[0]), int(after[1]))
            chosen = [p for p in chosen if (key(p) < mark if descending else key(p) > mark)]
        page = chosen[:limit]
        more = len(chosen) > limit
        return page, encode_position(list(key(page[-1]))) if more and page else None

    def search(
        self, term: str, fields: Iterable[str], exact: bool, *, indexed_before: int | None = None
    ) -> list[Person]:
        """Live persons whose e-mail, phone or name matches ``term`` (case-insensitive).

        ``indexed_before``: the search index holds only persons last changed before then
        (epoch seconds); a person created or changed since is not found (``None``: all are).
        """
        wanted = term.strip().lower()
        names = set(fields)

        def texts(person: Person) -> list[str]:
            found: list[str] = []
            if "email" in names:
                found += person.emails
            if "phone" in names:
                found += [str(p["value"]).lower() for p in person.values.get("phones") or []]
            if "name" in names:
                found.append(str(person.values.get("name") or "").lower())
            return found

        def matches(text: str) -> bool:
            return text == wanted if exact else wanted in text

        return sorted(
            (
                p
                for p in self.persons.values()
                if p.deleted_at is None
                and (indexed_before is None or p.update_time < indexed_before)
                and any(matches(t) for t in texts(p))
            ),
            key=lambda p: p.id,
        )


def lead_id(number: int) -> str:
    """A lead's id: a UUID, as Pipedrive gives leads (made of the sandbox's running number)."""
    return f"{number:08x}-0000-4000-8000-{number:012x}"
