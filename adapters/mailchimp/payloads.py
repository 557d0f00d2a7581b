"""Mailchimp's shapes, shared by the adapter and the sandbox: subscriber hashes, member bodies
and the RFC 7807-style error body.

Mailchimp addresses a member by the *subscriber hash*: the MD5 of the lower-cased e-mail. It is
not a secret (anyone holding an e-mail can compute it), so it is treated like the e-mail
itself: it is never put in an error message (see the adapter's path templating).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Final

from connector.adapter import nest

__all__ = [
    "ERROR_TYPE",
    "MEMBER_STATUSES",
    "NOT_OPTED_IN_STATUS",
    "RENEWED_STATUS",
    "SIGNUPS_PAUSED",
    "WITHDRAWN_STATUS",
    "as_found",
    "emptiable_tags",
    "emptied",
    "is_subscriber_hash",
    "left_by",
    "member_body",
    "merge_tags",
    "problem_body",
    "refused_fields",
    "signups_paused",
    "subscriber_hash",
    "update_body",
    "withdrawal_body",
]

#: The ``type`` URI of every Mailchimp error body.
ERROR_TYPE: Final = "https://mailchimp.com/developer/marketing/docs/errors/"

#: Statuses a member can be written with (``archived`` comes only from ``DELETE``).
MEMBER_STATUSES: Final = frozenset(
    {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}
)

#: A field a refusal's ``errors[]`` names: a merge tag (upper-case letters, digits and
#: underscores: ``COMPANY``, ``MMERGE3``), alone or under its member path
#: (``merge_fields.PHONE``), or a member property (``email_address``, ``status_if_new``,
#: ``status``). Nothing else is taken for one: a message, or text in a field's place, can
#: echo what was sent.
_FIELD_NAME: Final = re.compile(
    r"(?:merge_fields\.)?[A-Z][A-Z0-9_]{0,49}|[a-z]+(?:_[a-z]+)+|status"
)

#: Fields a refusal names other than by their property's name, and the name they are
#: reported by: Mailchimp's refusal to change a member's address names ``email address``.
_FIELD_SPELLINGS: Final = {"email address": "email_address"}

#: The reason's code for a write refused while Mailchimp pauses the address's signups.
SIGNUPS_PAUSED: Final = "SIGNUPS_PAUSED"

#: What the ``detail`` of that refusal says after the address it begins with ("... has
#: signed up to a lot of lists very recently; we're not allowing more signups for now").
_SIGNUPS_PAUSED_DETAIL: Final = "has signed up to a lot of lists very recently"

#: The status of a member no campaign reaches because it never opted in (a contact the
#: store's own Mailchimp integration added), which a consenting person is given a new
#: member's status from (see the adapter's ``_sign_up``).
NOT_OPTED_IN_STATUS: Final = "transactional"

#: The ``status`` value a mapping sends when the person withdrew marketing consent.
WITHDRAWN_STATUS: Final = "unsubscribed"

#: The ``status`` value a mapping sends when someone unsubscribed for a withdrawn consent gives
#: it again: Mailchimp e-mails them to confirm (the adapter's ``_renewal`` says why).
RENEWED_STATUS: Final = "pending"


def subscriber_hash(email: str) -> str:
    """MD5 hex digest of the lower-cased e-mail: Mailchimp's id of a member in an audience."""
    normalised = email.strip().lower().encode("utf-8")
    # MD5 is Mailchimp's choice of identifier, not a security measure.
    return hashlib.md5(normalised, usedforsecurity=False).hexdigest()


def as_found(member: dict[str, Any]) -> dict[str, Any]:
    """A member as ``find`` reports it: one Mailchimp holds archived (``status`` "archived",
    what ``DELETE`` leaves: restorable by a re-add) marked ``"archived": true`` as well.

    That is how the connector tells a record still held but not live
    (:func:`connector.model.is_archived`, HubSpot's own field): access and erasure see it,
    and a correction neither reads it as the person's values nor writes to it. Read by its
    status alone, an archived member passed for a live one there.
    """
    return {**member, "archived": True} if member.get("status") == "archived" else member


def is_subscriber_hash(value: str) -> bool:
    """Whether ``value`` looks like a subscriber hash (32 lower-case hex digits)."""
    return len(value) == 32 and all(ch in "0123456789abcdef" for ch in value)


def member_body(email: str, fields: Mapping[str, Any], status_if_new: str) -> dict[str, Any]:
    """The body of ``PUT /lists/{id}/members/{hash}`` for one record.

    The e-mail is the record's normalised one (the hash is computed from it, so body and path
    always agree). ``status`` is sent only when the mapping sends one: without it Mailchimp
    keeps an existing member's status, so a sync never re-subscribes someone who unsubscribed
    in Mailchimp. ``status_if_new`` applies only to a person not yet in the audience; when the
    mapping does send a status, a new member gets that same status.
    """
    body = nest(fields)
    body["email_address"] = email
    status = body.get("status")
    body["status_if_new"] = status if isinstance(status, str) and status else status_if_new
    if "status" in body and not body["status"]:
        del body["status"]  # an empty status means "leave it", not "set it to nothing"
    return body


def update_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The body of the ``PATCH`` that corrects an existing member's fields, and nothing else.

    ``status`` and ``status_if_new`` are never sent, whatever the mapping holds: a status is
    the member's consent, which a correction must not change. Nor is ``email_address``: the
    member is addressed by it, and a ``PATCH`` carrying another one would change it.
    """
    body = nest(fields)
    for name in ("status", "status_if_new", "email_address"):
        body.pop(name, None)
    return body


def withdrawal_body() -> dict[str, Any]:
    """The body of the ``PATCH`` that unsubscribes someone who withdrew consent.

    Only the status travels: with the consent gone there is no ground to keep their profile
    (names) up to date either.
    """
    return {"status": WITHDRAWN_STATUS}


#: The prefix of a merge field's name among a record's fields (``merge_fields.PHONE``).
_MERGE_FIELD: Final = "merge_fields."


def merge_tags(names: Collection[str]) -> list[str]:
    """The merge tags among the names of fields to empty (``merge_fields.PHONE`` -> ``PHONE``),
    sorted. Nothing else of a member can be emptied: a name that is not one whole merge field
    (``status``, one line of an address field: ``merge_fields.ADDRESS.city``) is none."""
    tags = (name.removeprefix(_MERGE_FIELD) for name in names if name.startswith(_MERGE_FIELD))
    return sorted(tag for tag in tags if tag and "." not in tag)


def left_by(
    clear: Collection[str], tags: Collection[str], fields: Collection[str]
) -> frozenset[str]:
    """The names of ``clear`` a write emptying the merge fields ``tags`` leaves as they are:
    every one that is not one of those whole merge fields (a field the audience requires,
    one line of an address field, a name that is no merge field), less those ``fields``
    writes a value."""
    emptied = {_MERGE_FIELD + tag for tag in tags}
    return frozenset(name for name in clear if name not in emptied and name not in fields)


def emptiable_tags(definitions: object) -> frozenset[str]:
    """The tags of an audience's merge field definitions (``GET .../merge-fields``'s
    ``merge_fields``) that a write may empty: every one the audience does not mark
    ``required``. A required one written empty is refused ("Please enter a value"), and a
    write that skips that check would leave the audience holding it empty all the same."""
    return frozenset(
        str(item["tag"])
        for item in (definitions if isinstance(definitions, list) else [])
        if isinstance(item, dict) and isinstance(item.get("tag"), str) and not item.get("required")
    )


def emptied(body: Mapping[str, Any], tags: Collection[str]) -> dict[str, Any]:
    """``body`` with each merge field of ``tags`` written as an empty string.

    That is how Mailchimp empties a merge field: a write carrying ``""`` for one overwrites
    what the member held, and a read then shows it ``""`` (integrations strip blank values
    before writing for that very reason: ibericode/mailchimp-user-sync #75 and
    ibericode/mailchimp-for-wordpress #531; third-party, UNVERIFIED against Mailchimp's own
    reference). ``null`` is no way: Mailchimp left the value as it was (amro/gibbon #54), and
    API 3.0 has no call that resets one member's field (``merge-var-reset`` was not carried
    over, brandonseydel/MailChimp.Net #328). An address field is all or nothing, so it too
    is emptied whole by ``""``.
    """
    held = body.get("merge_fields")
    merge_fields = dict(held) if isinstance(held, Mapping) else {}
    merge_fields.update(dict.fromkeys(tags, ""))
    return {**body, "merge_fields": merge_fields}


def problem_body(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """Mailchimp's error body: ``{type, title, status, detail, instance}`` (+ ``errors[]``).

    ``detail`` often echoes the e-mail, which is why the adapter reads ``title`` only.
    """
    body: dict[str, Any] = {
        "type": ERROR_TYPE,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return body


def refused_fields(body: Mapping[str, Any]) -> list[str]:
    """The fields a refusal names in its ``errors[]``, in order and each once.

    Mailchimp's ``Invalid Resource`` is one title for a merge field the audience requires
    and the write left empty (every new member refused until it is filled or made
    optional) and for one customer's invalid address; the field is what tells them apart.
    Only names of the form of a field (:data:`_FIELD_NAME`) are kept, never the messages;
    ``email address``, as Mailchimp names the field when it refuses to change the address
    of a member that is not subscribed, is reported as ``email_address``.
    """
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    named = (item.get("field") for item in errors if isinstance(item, Mapping))
    spelt = (_FIELD_SPELLINGS.get(name, name) for name in named if isinstance(name, str))
    found = [name for name in spelt if _FIELD_NAME.fullmatch(name)]
    return list(dict.fromkeys(found))


def signups_paused(body: Mapping[str, Any]) -> bool:
    """Whether a refusal is Mailchimp's pause of the address's signups: an address that has
    signed up to a lot of lists very recently is refused, for now, as ``Invalid Resource``
    with no ``errors[]``, its ``detail`` alone saying so (and holding the address, so it is
    read here and never kept). The pause ends: the write is to be sent again later, not
    refused for good."""
    detail = body.get("detail")
    return isinstance(detail, str) and _SIGNUPS_PAUSED_DETAIL in detail
