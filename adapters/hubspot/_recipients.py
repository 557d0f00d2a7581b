"""An e-mail's senders and recipients, as a person's access copy holds them (Art. 15(4)).

A one-to-one e-mail associated with a contact is the person's data: what was written to
them or by them, and when. Its headers are other people's too: the salesperson who sent it,
a colleague in cc, and whoever was in bcc, whom the person never saw. Handed over, a copy
would disclose those people's addresses and names, and that there was a bcc at all. Of them
the copy keeps the person's own entries (under any address their contact holds, or the one
asked for) and leaves out the others, as the Pipedrive reader leaves out an activity's other
attendees. The subject and the text (plain and HTML) are kept, but for the addresses of
others they quote (a reply quotes "Cees <cees@elders.example> wrote:", a forward a whole
header block): each is replaced by :data:`~connector.others.LEFT_OUT`
(:func:`~connector.others.without_others_addresses`). Names in the text cannot be told from
other words and stay. Every other property is kept as HubSpot serves it.

What is assumed of HubSpot's e-mail objects (CRM v3 ``emails``), none of it checked against
a live portal nor found in the vendor reference, so UNVERIFIED:

- ``hs_email_headers`` is a JSON string (HubSpot's e-mail guide is remembered to show
  ``{"from": {...}, "to": [{...}], "cc": [], "bcc": []}``): ``from`` (and ``sender``) one
  entry, the others a list of them; an entry an object with ``email``, ``firstName`` and
  ``lastName``, where ``email`` may read ``Name <address>``, or a bare address as text. A
  key it holds besides those (another header) is left out: it may name anyone. A value
  that is no JSON object says nothing of whose it is and is left out whole (``null``);
- ``hs_email_{from,sender,to,cc,bcc}_email`` hold that role's addresses, several parted by
  ``;``, and every other ``hs_email_{role}_...`` property (``_firstname``, ``_lastname``)
  their names in the same order: a name is kept where it stands at one of the person's own
  addresses in a list as long, and left out (``null``) wherever that cannot be told.

A property left out is ``null``, as HubSpot serves one that is not set: the record still
lists every property its kind defines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from connector.others import text_without_others

__all__ = ["HEADERS", "email_without_others"]

#: The property holding the e-mail's headers as JSON.
HEADERS: Final = "hs_email_headers"

#: The properties holding what was written: another's address in them is left out.
_WRITTEN: Final = ("hs_email_subject", "hs_email_text", "hs_email_html")

#: The header keys that name people: one entry each (``from``, ``sender``) or a list.
_SINGLE_ROLES: Final = frozenset({"from", "sender"})
_LISTED_ROLES: Final = frozenset({"to", "cc", "bcc"})

#: ``hs_email_<role>_<part>``: a property naming the senders or recipients of one role.
_ROLE_PROPERTY: Final = re.compile(r"hs_email_(from|sender|to|cc|bcc)_(\w+)")

#: What parts the values of one role's properties.
_SEPARATOR: Final = ";"


def email_without_others(record: Mapping[str, Any], own: Collection[str]) -> dict[str, Any]:
    """An ``emails`` record as the person's copy holds it: of its senders and recipients,
    only the entries under ``own`` (lower-case addresses); everything else as served."""
    properties = record.get("properties")
    if not isinstance(properties, Mapping):
        return dict(record)
    kept = dict(properties)
    if HEADERS in kept:
        kept[HEADERS] = _headers(kept[HEADERS], own)
    for role in {m.group(1) for name in kept if (m := _ROLE_PROPERTY.fullmatch(name))}:
        kept |= _role(kept, role, own)
    return {**record, "properties": text_without_others(kept, _WRITTEN, own)}


def _headers(value: Any, own: Collection[str]) -> str | None:
    """``hs_email_headers`` with only the person's own entries; ``None`` where it cannot be
    read (and so cannot be told whose it is), unset stays unset."""
    if value is None or value == "":
        return None if value is None else ""
    try:
        headers = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        return None
    kept: dict[str, Any] = {}
    for key, entry in headers.items():
        role = key.lower()
        if role in _LISTED_ROLES and isinstance(entry, list):
            kept[key] = [e for e in entry if _is_own(e, own)]
        elif role in _SINGLE_ROLES | _LISTED_ROLES and _is_own(entry, own):
            kept[key] = entry
    return json.dumps(kept, ensure_ascii=False)


def _role(properties: Mapping[str, Any], role: str, own: Collection[str]) -> dict[str, Any]:
    """The ``hs_email_<role>_...`` properties with only the person's own values."""
    names = [n for n in properties if (m := _ROLE_PROPERTY.fullmatch(n)) and m.group(1) == role]
    addresses_name = f"hs_email_{role}_email"
    addresses = _parts(properties.get(addresses_name))
    keep = [i for i, address in enumerate(addresses) if _address(address) in own]
    kept: dict[str, Any] = {}
    for name in names:
        value = properties[name]
        if value is None or value == "":
            continue
        if name == addresses_name:
            kept[name] = _SEPARATOR.join(addresses[i] for i in keep) or None
            continue
        parts = _parts(value)
        # A name stands at its address's place only in a list as long; otherwise whose it
        # is cannot be told, and it is left out whole.
        if len(parts) == len(addresses) and keep:
            kept[name] = _SEPARATOR.join(parts[i] for i in keep) or None
        else:
            kept[name] = None
    return kept


def _parts(value: Any) -> list[str]:
    return [p.strip() for p in value.split(_SEPARATOR)] if isinstance(value, str) else []


def _is_own(entry: Any, own: Collection[str]) -> bool:
    """Whether a header entry (an object with ``email``, or an address as text) is the
    person's."""
    address = entry.get("email") if isinstance(entry, Mapping) else entry
    return isinstance(address, str) and _address(address) in own


def _address(text: str) -> str:
    """The address in ``Name <address>`` or a bare address, lower case."""
    start, end = text.rfind("<"), text.rfind(">")
    inner = text[start + 1 : end] if 0 <= start < end else text
    return inner.strip().lower()
