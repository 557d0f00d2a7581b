"""What a person's ``PATCH`` carries beside the record's fields, read off the person it
changes, and which of the names the record's ``clear`` lists it leaves as they are.

Pipedrive keeps the name whole (``name``): a write carrying one name part keeps the other
as the person holds it, and a name part is emptied by writing ``name`` without it. A mapped
custom field is emptied as ``null``. Pure functions of the person, the record and the body,
kept apart from the calls of :class:`~adapters.pipedrive._patch.PersonPatch` that use them.
"""

from __future__ import annotations

from typing import Any

from adapters.pipedrive.payloads import (
    CUSTOM_FIELDS,
    NAME_PARTS,
    emptied_custom_fields,
    held_name_part,
)
from connector.adapter import OutboundRecord


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
    :meth:`.OwnEntries._own_phone_untold`, the caller adds). A whole mapped custom field is
    emptied (``null``); a part of one, and any other name, is left. A name
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
