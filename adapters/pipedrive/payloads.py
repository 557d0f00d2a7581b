"""Payload helpers of the Pipedrive adapter: person bodies, pull cursors, reasons.

Pure functions, kept apart from :mod:`adapters.pipedrive.adapter` so that module stays about
the calls it makes.

Pipedrive v2 keeps a person's e-mails and phones as lists of ``{value, primary, label}``. The
mapping speaks plain ``email`` and ``phone``, so the adapter converts both ways: outbound it
builds the lists (:func:`person_body`), inbound it adds the primary ``email`` and ``phone`` to
each record it hands over (:func:`with_contact_keys`), leaving the vendor's shape otherwise
as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from connector.adapter import RETAINED, nest
from connector.model import normalise_email

__all__ = [
    "CUSTOM_FIELDS",
    "IN_THE_BIN",
    "NAME_PARTS",
    "PURGED_AFTER",
    "PullCursor",
    "decode_cursor",
    "email_values",
    "emptied_custom_fields",
    "encode_cursor",
    "failure_reason",
    "held_name_part",
    "in_the_bin",
    "later_time",
    "moment",
    "other_entries_kept",
    "person_body",
    "primary_value",
    "search_hits",
    "with_contact_keys",
    "without_own_entry",
]


def person_body(
    fields: Mapping[str, Any],
    email: str,
    *,
    creating: bool,
    emails: bool = True,
    phones: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST``/``PATCH /persons`` for one mapped record.

    ``email`` and ``phone`` become Pipedrive's lists with one primary entry; other mapped
    fields pass through under their own names, a dotted one nested (``custom_fields.<hash>``
    -> ``{"custom_fields": {"<hash>": ...}}``, where v2 keeps custom fields); the mapping is
    the allow-list, so nothing unmapped can reach this point. The v2 person requests have
    ``name`` and no ``first_name`` or ``last_name`` (those a read shows, split from
    ``name``): the mapped name parts are sent as ``name`` only, ``first last`` when either is
    known. ``name`` is required on create: without either part it is the e-mail's local part
    (derived from a mapped field, so no new personal data is sent). On update ``name`` is
    sent only when a name part is, so a record without names never overwrites a name someone
    typed in Pipedrive; without ``emails`` the e-mail list is not sent at all (a correction
    of other fields); ``phones`` is the whole phone list to send, when the caller made it
    (see ``other_entries_kept``).
    """
    body = nest({k: v for k, v in fields.items() if k not in _NOT_SENT_AS_THEMSELVES})
    address = str(fields.get("email") or email or "").strip()
    if address and emails:
        # Sent on updates too: the connector owns the primary e-mail of the people it syncs,
        # and an e-mail changed at the source must reach Pipedrive. (Whether PATCH replaces the
        # whole list or merges is UNVERIFIED; the sandbox replaces it.)
        body["emails"] = [{"value": address, "primary": True, "label": "work"}]
    phone = fields.get("phone")
    if phones is not None:
        body["phones"] = phones
    elif isinstance(phone, str) and phone.strip():
        body["phones"] = [{"value": phone.strip(), "primary": True}]
    first = str(fields.get("first_name") or "").strip()
    last = str(fields.get("last_name") or "").strip()
    full = " ".join(part for part in (first, last) if part)
    if full:
        body["name"] = full
    elif creating:
        body["name"] = address.partition("@")[0] or "unknown"
    return body


#: Mapped fields a person body carries in another shape: the contact lists and ``name``.
_NOT_SENT_AS_THEMSELVES = frozenset({"email", "phone", "first_name", "last_name"})

#: The mapped name parts, in the order ``name`` joins them.
NAME_PARTS: Final = ("first_name", "last_name")


def held_name_part(person: Mapping[str, Any], missing: str, given: str) -> str:
    """The name part ``missing`` (``first_name``/``last_name``) as the person holds it, for
    a write that carries only the other part, ``given``.

    Pipedrive's ``name`` is both parts, so a write of one alone keeps the other, else it
    would become the whole name (a last name a salesperson typed, gone at the next sync).
    A held name that begins with the given first name (ends with the given last name)
    holds the rest as the other part, whatever Pipedrive's own split: "Jansen", written
    from a last name alone, has no first name (Pipedrive shows "Jansen" as the first name,
    and it came back as "Jansen Jansen"), and "Anna Maria Vos" with the first name "Anna
    Maria" keeps "Vos". Otherwise the part is the one Pipedrive shows on a read (split from
    ``name`` by Pipedrive).
    """
    held = str(person.get("name") or "").split()
    words = given.split()
    count = len(words)
    if count and len(held) >= count:
        fold = [word.casefold() for word in words]
        if missing == "last_name" and [w.casefold() for w in held[:count]] == fold:
            return " ".join(held[count:])
        if missing == "first_name" and [w.casefold() for w in held[-count:]] == fold:
            return " ".join(held[:-count])
    shown = person.get(missing)
    return shown.strip() if isinstance(shown, str) else ""


def other_entries_kept(
    entries: Any,
    value: str,
    *,
    label: str | None = None,
    changed: bool | None = None,
    former: str | None = None,
) -> list[dict[str, Any]]:
    """A person's phone or e-mail list holding ``value`` as the connector's entry, and the
    entries someone added in Pipedrive.

    ``changed`` says whether ``value`` differs from what the connector last wrote there
    (:class:`~adapters.pipedrive.sent.LastSent`; ``None``: not known), and ``former`` is
    the connector's entry, where the list holds it (``""``: the caller knows none is, and
    every entry stays, second). Not in the list, ``value`` replaces the connector's former
    entry (the customer changed it at the source), and the rest stay: ``former``, else
    (``None``: an e-mail list, found by its primary address) the primary entry, taken for
    the connector's. An entry a salesperson made primary stays, second: taken for the
    connector's, the office number was replaced and the number the customer gave up
    stayed. In the list:

    - primary already, or unchanged (``changed`` false): the list stays as it is: a
      salesperson who made the office number the primary one keeps it so;
    - changed: it is the customer's new one, which a salesperson had added; it becomes the
      primary entry, replacing the connector's former one, as a value not yet listed does.
      Left beside it, the address the customer gave up stayed the person's primary one,
      and the next customer to take it up was written onto the mover's person;
    - not known (nothing written since the adapter started): it becomes the primary entry
      and every other entry stays beside it, as neither a change nor a reordered list can
      be ruled out: no entry a salesperson typed is lost, and an address the customer gave
      up no longer finds the person.

    Entries are compared as subjects are told apart (:func:`normalise_email`; a phone
    number is left as it is by that): an address that is another subject's is not taken
    for this one's.
    """
    current = [
        dict(e) for e in (entries if isinstance(entries, list) else ()) if isinstance(e, Mapping)
    ]
    same = normalise_email(value)
    listed = [e for e in current if normalise_email(str(e.get("value", ""))) == same]
    if listed and (changed is False or any(e.get("primary") for e in listed)):
        return current
    own: dict[str, Any] = {**(listed[0] if listed else {}), "value": value.strip(), "primary": True}
    if label is not None and not listed:
        own["label"] = label
    others = [e for e in current if normalise_email(str(e.get("value", ""))) != same]
    if former is not None:
        gone = normalise_email(former)
        kept = (e for e in others if normalise_email(str(e.get("value", ""))) != gone)
        return [own, *({**e, "primary": False} for e in kept)]
    if listed and changed is None:
        return [own, *({**e, "primary": False} for e in others)]
    return [own, *(e for e in others if not e.get("primary"))]


def without_own_entry(entries: Any, former: str) -> list[dict[str, Any]] | None:
    """A person's phone list without the connector's entry, for a number the customer
    removed at the source; ``None`` when the list does not hold it.

    Pipedrive keeps the phones as one list that a write replaces whole (the sandbox's
    reading; UNVERIFIED whether a real ``PATCH`` merges), and v2 empties no single entry
    otherwise: the list is sent without the connector's entry, the numbers a salesperson
    added (an office number) stay as they are. ``former`` is the connector's entry, as
    the adapter tells it (its ``_own_phone``): never the primary one for being primary,
    which may be an office number a salesperson made so.
    """
    current = [
        dict(e) for e in (entries if isinstance(entries, list) else ()) if isinstance(e, Mapping)
    ]
    gone = normalise_email(former)
    kept = [e for e in current if normalise_email(str(e.get("value", ""))) != gone]
    return kept if len(kept) < len(current) else None


#: How a mapped custom field's path begins: ``custom_fields.<its 40-character key>``.
CUSTOM_FIELDS: Final = "custom_fields."


def emptied_custom_fields(clear: Iterable[str]) -> dict[str, None]:
    """The ``custom_fields`` entries that empty the mapped custom fields named in ``clear``.

    Pipedrive empties a custom field written ``null`` (its maintainers, client-nodejs issue
    162: "i was able to clear custom fields using null"; a read shows it ``null`` after),
    and a field left out of ``custom_fields`` keeps its value, so only these are sent. v2
    keeps the same keys under ``custom_fields``; that it takes ``null`` there as v1 did at
    the top level is UNVERIFIED. A deeper path (a part of a monetary or range field) is
    not emptied: how v2 empties a part alone is not known, and so it is left.
    """
    keys = (name.removeprefix(CUSTOM_FIELDS) for name in clear if name.startswith(CUSTOM_FIELDS))
    return {key: None for key in keys if key and "." not in key}


def primary_value(entries: Any) -> str | None:
    """The primary entry's value of a v2 ``emails``/``phones`` list (else the first one)."""
    if not isinstance(entries, list):
        return None
    values = [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("value"), str)]
    for entry in values:
        if entry.get("primary"):
            return str(entry["value"])
    return str(values[0]["value"]) if values else None


def with_contact_keys(person: Mapping[str, Any]) -> dict[str, Any]:
    """The person as Pipedrive gave it, plus top-level ``email`` and ``phone`` for the mapping."""
    record = dict(person)
    record["email"] = primary_value(person.get("emails"))
    record["phone"] = primary_value(person.get("phones"))
    return record


#: "Marks a person as deleted. After 30 days, the person will be permanently deleted."
#: (v2 ``deletePerson``): until then Pipedrive holds the person and can restore them.
PURGED_AFTER: Final = timedelta(days=30)

#: The ``retained`` code of a person in that bin (see :func:`in_the_bin`).
IN_THE_BIN: Final = "deleted_purged_later"


def in_the_bin(person: Mapping[str, Any]) -> dict[str, Any]:
    """A person Pipedrive shows marked deleted (``is_deleted``), as ``find`` reports them.

    Still held: access must show them and an erasure must not say nobody is held. Marked
    as HubSpot's recycle bin is (``archived``: no sync takes them as a person, no correction
    writes to them), with ``retained`` (:data:`IN_THE_BIN`: deleting them is all the API
    can do, so an erasure's check that nothing is left passes them over, as the erasure's
    receipt says they are purged later) and ``purged_after``, when Pipedrive purges them.
    That date counts from ``update_time``: v2 gives no deletion time of its own, and that a
    deletion sets ``update_time`` (as the sandbox's does) is UNVERIFIED. If it does not, the
    deletion came later and so does the purge: Pipedrive holds the person at least until
    that date.
    """
    record = with_contact_keys(person)
    record["archived"] = True
    record[RETAINED] = IN_THE_BIN
    deleted = person.get("update_time")
    parsed = _parse_time(deleted) if isinstance(deleted, str) else None
    purged = parsed + PURGED_AFTER if parsed is not None else None
    record["purged_after"] = (
        purged.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if purged is not None else None
    )
    return record


def search_hits(body: Mapping[str, Any], email: str) -> list[int]:
    """Ids of persons in a ``/persons/search`` answer whose e-mails include ``email`` exactly.

    ``exact_match`` is asked of Pipedrive already; the e-mails are compared again here, as
    subjects are told apart (:func:`normalise_email`), so a partial or fuzzy hit, or an
    address that is another subject's ("strasse@" for "straße@"), can never be updated or
    deleted in someone else's name.
    """
    data = body.get("data")
    items = data.get("items") if isinstance(data, Mapping) else None
    wanted = normalise_email(email)
    ids: list[int] = []
    for hit in items if isinstance(items, list) else []:
        item = hit.get("item") if isinstance(hit, Mapping) else None
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), int):
            continue
        if any(normalise_email(e) == wanted for e in email_values(item.get("emails"))):
            ids.append(int(item["id"]))
    return sorted(set(ids))


def email_values(emails: Any) -> list[str]:
    """The addresses of a person's ``emails`` (objects in records, strings in search hits)."""
    return [text for text in map(_email_text, _list(emails)) if text]


def _list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()


def _email_text(entry: Any) -> str:
    # Search items list e-mails as plain strings; person records as {value, ...} objects.
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("value"), str):
        return str(entry["value"])
    return ""


def failure_reason(status: int | None) -> str:
    """A per-record failure reason from the HTTP status alone.

    Pipedrive's ``error`` and ``error_info`` are free text that can echo what was sent (a
    name, an e-mail), so they never become a reason: only the status and a category.
    """
    if status is None:
        return "transport retry_later"
    if status == 429:
        return "429 rate_limited"
    if status >= 500:
        return f"{status} server_error"
    if status in (400, 422):
        return f"{status} validation"
    if status == 402:
        return "402 plan_limit"
    if status == 409:
        return "409 conflict"
    return f"{status} rejected"


@dataclass(frozen=True)
class PullCursor:
    """What a pull cursor holds.

    Attributes:
        since: the ``updated_since`` watermark this pull reads from (RFC 3339), or ``None``.
        page: Pipedrive's ``next_cursor`` to resume inside a pull, or ``None``.
        high: the highest ``update_time`` seen so far in this pull (the next watermark).
    """

    since: str | None = None
    page: str | None = None
    high: str | None = None


def encode_cursor(cursor: PullCursor) -> str:
    """Compact JSON: opaque to the engine, readable to an operator who inspects the store."""
    values = {"since": cursor.since, "page": cursor.page, "high": cursor.high}
    return json.dumps({k: v for k, v in values.items() if v}, separators=(",", ":"))


def decode_cursor(text: str | None) -> PullCursor:
    """Read a stored cursor; an unreadable one starts from the beginning.

    Reading everything again is always safe: the engine skips records whose content it has
    already delivered.
    """
    if not text:
        return PullCursor()
    try:
        raw = json.loads(text)
    except ValueError:
        return PullCursor()
    if not isinstance(raw, dict):
        return PullCursor()
    return PullCursor(*(_text(raw.get(key)) for key in ("since", "page", "high")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def later_time(current: str | None, candidate: Any) -> str | None:
    """The later of two RFC 3339 times (``current`` kept when ``candidate`` is unreadable)."""
    if not isinstance(candidate, str):
        return current
    parsed = _parse_time(candidate)
    if parsed is None:
        return current
    if current is None:
        return candidate
    known = _parse_time(current)
    return candidate if known is None or parsed > known else current


def moment(value: Any) -> datetime | None:
    """The time an RFC 3339 text names (UTC where it names no zone); ``None`` if unreadable."""
    return _parse_time(value) if isinstance(value, str) else None


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Pipedrive sends UTC with a "Z"; a time without a zone is read as UTC so that aware and
    # naive times never meet in one comparison (which would raise).
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
