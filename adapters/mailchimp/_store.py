"""The Mailchimp sandbox's state and rules: audiences, their members, archive and forgetting.

Each audience keys its members by subscriber hash. What Mailchimp refuses raises
:class:`Problem`, which the sandbox turns into Mailchimp's error body, and a refused request
changes nothing (every check comes before the first change). Rules modelled:

- ``PUT`` adds or updates; a new member needs ``status_if_new``; an archived member is re-added
  by a ``status`` only (see below); a ``status`` of ``subscribed`` for an ``unsubscribed`` or
  ``cleaned`` member is refused
  ("Member In Compliance State"); an address deleted permanently is refused for good
  ("Forgotten Email Not Subscribed"); ``pending`` is taken from any status, and each member
  that becomes pending is sent a confirmation e-mail (:attr:`MemberStore.confirmations`);
- an address Mailchimp pauses signups for (one that "has signed up to a lot of lists very
  recently") is refused becoming ``subscribed`` or ``pending`` (a new member, a re-add, a
  change of status) with 400 "Invalid Resource", no ``errors[]`` and the address in its
  detail, until the pause ends (:attr:`MemberStore.signups_paused`); other writes to its
  member go through. Reports show it for a new member and an archived one re-added; that a
  change of status meets it too is assumed (UNVERIFIED);
- ``PATCH`` updates an existing, not archived, member only; it changes the address of a
  ``subscribed`` one only: any other is refused with 400 "Invalid Resource", its ``errors[]``
  naming the field ``email address`` (with a space: "This member's status is "cleaned." You
  can only update email addresses for members with a status of "subscribed.""; reported for
  ``cleaned`` and ``unsubscribed`` members, ibericode/mailchimp-user-sync #96 and
  integrations' tests; that ``pending`` and ``transactional`` ones meet it too is taken from
  its words, UNVERIFIED);
- a merge field written as an empty string is emptied (a read shows it ``""``), as a
  value is written; one the audience requires is refused so ("Please enter a value"),
  unless the write says ``skip_merge_validation=true``. Third-party reports only
  (UNVERIFIED, see ``payloads.emptied``);
- an audience's merge field definitions (``GET .../merge-fields``) list its tags, each
  with its type and whether its owner made it required;
- ``DELETE`` archives (restorable by a later ``PUT`` carrying a ``status``); ``delete-permanent``
  removes the member and forgets the address on that audience;
- a member's notes (free text the account's staff wrote about them) belong to the member:
  they move with a change of its address, stay with an archived member, and go with it when
  it is deleted permanently;
- so does its activity (``GET .../activity-feed``, the newest event first). Mailchimp records
  sends, opens, clicks and bounces of its campaigns too; the sandbox sends no campaigns, so
  it records what it does model: a member becoming subscribed (``signup``) or unsubscribed
  (``unsub``) and a write changing its fields or address (``profile``); tests seed the rest
  (:meth:`MemberStore.add_activity`).

Assumptions where the vendor's behaviour is not documented (the fake is the stricter one):
the hash in the path must match the body's ``email_address``; ``search-members`` does not show
archived members; ``count`` over 1000 is refused rather than capped; a ``PATCH`` of an archived
member answers 404, as for an absent one (the documented way back is a ``PUT``, which re-adds);
an archived member's notes and activity can still be read (the member is still there); an
activity event is ``{"activity_type", "created_at_timestamp", ...}``, and the feed's answer
holds no ``total_items`` (the SDK's model of it has none): both UNVERIFIED, as are the names
of the activity types recorded here.

UNVERIFIED, from third-party reports only (jethro-pmm #708, mailchimp/mc-woocommerce #951; the
vendor's reference says only that an archived member "can be re-added"): a ``PUT`` carrying
``status_if_new`` and no ``status`` leaves an archived member archived (answered as it is, its
fields unchanged here), and one carrying a ``status`` re-adds it with that status. The member
keeps the status it had when it was archived: re-added ``subscribed``, one archived while
``unsubscribed`` or ``cleaned`` is refused as it would have been before ("Member In
Compliance State").
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from adapters.mailchimp.payloads import MEMBER_STATUSES, subscriber_hash

__all__ = ["Audience", "Member", "MemberStore", "Note", "Problem"]

#: The activity event a member's new status is recorded as (see the module docstring).
_STATUS_EVENTS: Final = {"subscribed": "signup", "unsubscribed": "unsub"}

#: The statuses only the person can leave for ``subscribed`` ("Member In Compliance State").
_COMPLIANCE: Final = ("unsubscribed", "cleaned")

#: The statuses a member signs up to (which a pause of the address's signups refuses).
_SIGNED_UP: Final = ("subscribed", "pending")

#: Merge fields every new audience has (Mailchimp's defaults), with their types.
DEFAULT_MERGE_TYPES: Final = {
    "FNAME": "text",
    "LNAME": "text",
    "ADDRESS": "address",
    "PHONE": "phone",
    "BIRTHDAY": "birthday",
}
DEFAULT_MERGE_TAGS: Final = tuple(DEFAULT_MERGE_TYPES)


class Problem(Exception):
    """A request Mailchimp would refuse: status, title, detail and optional field errors."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors


def _invalid(detail: str, field_name: str = "", message: str = "") -> Problem:
    errors = [{"field": field_name, "message": message}] if field_name else None
    return Problem(400, "Invalid Resource", detail, errors)


def not_found() -> Problem:
    """Mailchimp's 404 body, the same for an unknown audience or member."""
    return Problem(404, "Resource Not Found", "The requested resource could not be found.")


@dataclass
class Note:
    """One note about a member, as the account's staff wrote it."""

    id: int
    note: str
    created_by: str
    created_at: str
    updated_at: str


@dataclass
class Member:
    """One audience member, as the sandbox keeps it, with its notes (oldest first)."""

    list_id: str
    email_address: str
    status: str
    merge_fields: dict[str, Any]
    web_id: int
    timestamp_opt: str
    last_changed: str
    notes: list[Note] = field(default_factory=list)
    #: Its activity events, oldest first (the feed answers them newest first).
    activity: list[dict[str, Any]] = field(default_factory=list)
    #: Its status before it was archived ("" if it was seeded archived): the compliance state
    #: a re-add keeps (see the module docstring).
    archived_from: str = ""

    @property
    def id(self) -> str:
        return subscriber_hash(self.email_address)

    def to_json(self) -> dict[str, Any]:
        """The member in Mailchimp's shape (the fields klantsync and an auditor care about)."""
        names = [self.merge_fields.get("FNAME", ""), self.merge_fields.get("LNAME", "")]
        return {
            "id": self.id,
            "email_address": self.email_address,
            "unique_email_id": self.id[:10],
            "full_name": " ".join(str(n) for n in names if n),
            "web_id": self.web_id,
            "email_type": "html",
            "status": self.status,
            "merge_fields": copy.deepcopy(self.merge_fields),
            "ip_signup": "",
            "timestamp_signup": "",
            "ip_opt": "",
            "timestamp_opt": self.timestamp_opt,
            "last_changed": self.last_changed,
            "language": "",
            "vip": False,
            "source": "API - Generic",
            "tags_count": 0,
            "tags": [],
            "list_id": self.list_id,
        }

    def note_json(self, note: Note) -> dict[str, Any]:
        """One of its notes in Mailchimp's shape."""
        return {
            "id": note.id,
            "created_at": note.created_at,
            "created_by": note.created_by,
            "updated_at": note.updated_at,
            "note": note.note,
            "list_id": self.list_id,
            "email_id": self.id,
            "contact_id": self.id[:10],
        }


@dataclass
class Audience:
    """One audience (list): its members by hash and the hashes deleted permanently."""

    id: str
    members: dict[str, Member] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    merge_tags: tuple[str, ...] = DEFAULT_MERGE_TAGS
    #: Merge fields the audience's owner made required: a write leaving one empty is
    #: refused, unless it says ``skip_merge_validation=true``.
    required: set[str] = field(default_factory=set)

    def merge_fields(self) -> list[dict[str, Any]]:
        """Its merge field definitions in Mailchimp's shape (``GET .../merge-fields``): the
        defaults, then each the owner added by making it required (a text field)."""
        tags = dict.fromkeys((*self.merge_tags, *sorted(self.required)))
        return [
            {
                "merge_id": merge_id,
                "tag": tag,
                "name": tag.title(),
                "type": DEFAULT_MERGE_TYPES.get(tag, "text"),
                "required": tag in self.required,
                "default_value": "",
                "public": True,
                "display_order": merge_id + 1,
                "list_id": self.id,
            }
            for merge_id, tag in enumerate(tags, start=1)
        ]


class MemberStore:
    """Every audience of one account, and the member rules above.

    Args:
        list_ids: the account's audiences.
        wall_clock: epoch seconds for ``timestamp_opt`` and ``last_changed``.
    """

    def __init__(self, list_ids: tuple[str, ...], wall_clock: Callable[[], float]) -> None:
        self.audiences = {list_id: Audience(list_id) for list_id in list_ids}
        self._wall_clock = wall_clock
        self._web_ids = itertools.count(100_001)
        self._note_ids = itertools.count(1)
        #: (list id, subscriber hash) of each confirmation e-mail sent, in order: Mailchimp
        #: sends one whenever a member becomes ``pending``.
        self.confirmations: list[tuple[str, str]] = []
        #: Subscriber hashes of the addresses Mailchimp pauses signups for, account-wide.
        self.signups_paused: set[str] = set()

    def _now(self) -> str:
        return datetime.fromtimestamp(self._wall_clock(), UTC).isoformat(timespec="seconds")

    def audience(self, list_id: str) -> Audience:
        found = self.audiences.get(list_id)
        if found is None:
            raise not_found()
        return found

    def all_members(self) -> Iterator[Member]:
        for audience in self.audiences.values():
            yield from audience.members.values()

    @staticmethod
    def resolve_hash(value: str) -> str:
        """The path's member key: a subscriber hash, or an e-mail (Mailchimp takes both)."""
        return subscriber_hash(value) if "@" in value else value.lower()

    # -- reads -----------------------------------------------------------------------------

    def get(self, list_id: str, member_hash: str) -> Member:
        """A member, archived ones included (their status says ``archived``)."""
        member = self.audience(list_id).members.get(self.resolve_hash(member_hash))
        if member is None:
            raise not_found()
        return member

    def page(
        self, list_id: str, count: int, offset: int, status: str | None
    ) -> tuple[list[Member], int]:
        """One page of an audience in insertion order; archived only when asked for."""
        members = [
            m
            for m in self.audience(list_id).members.values()
            if (m.status == status if status else m.status != "archived")
        ]
        return members[offset : offset + count], len(members)

    def notes(
        self, list_id: str, member_hash: str, count: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a member's notes (archived members included) and how many it has."""
        member = self.get(list_id, member_hash)
        page = member.notes[offset : offset + count]
        return [member.note_json(note) for note in page], len(member.notes)

    def activity(
        self, list_id: str, member_hash: str, count: int, offset: int
    ) -> list[dict[str, Any]]:
        """One page of a member's activity feed, the newest event first (archived members
        included)."""
        member = self.get(list_id, member_hash)
        newest_first = member.activity[::-1]
        return copy.deepcopy(newest_first[offset : offset + count])

    def search(self, query: str, list_id: str | None) -> tuple[list[Member], list[Member]]:
        """Exact e-mail matches, and other members whose address or name contains ``query``."""
        needle = query.strip().lower()
        audiences = [self.audience(list_id)] if list_id else list(self.audiences.values())
        exact: list[Member] = []
        partial: list[Member] = []
        for audience in audiences:
            for member in audience.members.values():
                if member.status == "archived":
                    continue
                if member.email_address.lower() == needle:
                    exact.append(member)
                elif needle and needle in _haystack(member):
                    partial.append(member)
        return exact[:10], partial[:10]

    # -- writes ----------------------------------------------------------------------------

    def put(
        self, list_id: str, member_hash: str, body: Mapping[str, Any], *, validate: bool = True
    ) -> Member:
        """``PUT``: add or update (see the module docstring for the rules); ``validate``
        unless the call said ``skip_merge_validation=true``."""
        audience = self.audience(list_id)
        key = self.resolve_hash(member_hash)
        email = body.get("email_address")
        if not isinstance(email, str) or not _plausible_email(email):
            raise _invalid(
                "The resource submitted could not be validated. For field-specific details, "
                "see the 'errors' array.",
                "email_address",
                "Please provide a valid email address.",
            )
        if subscriber_hash(email) != key:
            raise _invalid(
                "The subscriber hash does not match the email address.",
                "email_address",
                "Does not match the subscriber hash in the URL.",
            )
        if key in audience.forgotten:
            raise Problem(
                400,
                "Forgotten Email Not Subscribed",
                f"{email} was permanently deleted and cannot be re-imported. The contact "
                "must re-subscribe to get back on the list.",
            )
        status = _status(body, "status")
        status_if_new = _status(body, "status_if_new")
        merge_fields = _merge_fields(body)
        member = audience.members.get(key)
        now = self._now()
        held = member.merge_fields if member is not None else {}
        if validate:
            _check_required(audience, {**held, **merge_fields})
        if member is not None and member.status == "archived":
            if status is None:
                return member  # UNVERIFIED: left archived (see the module docstring)
            # Re-added: the compliance state it had before is kept; otherwise as new (a
            # pending one is sent the e-mail). Checked before the member is touched: a
            # refused re-add leaves it archived.
            kept = member.archived_from if member.archived_from in _COMPLIANCE else ""
            _check_status(member.email_address, kept, status)
            self._check_signup(member.email_address, kept, status)
            member.status = kept
            self._change_status(member, status)
        elif member is None:
            chosen = status_if_new
            if chosen is None:
                raise _invalid(
                    "The resource submitted could not be validated. For field-specific "
                    "details, see the 'errors' array.",
                    "status_if_new",
                    "This value is required when the member is new.",
                )
            self._check_signup(email, "", chosen)
            fields = dict(merge_fields)
            member = Member(list_id, email, "", fields, next(self._web_ids), now, now)
            audience.members[key] = member
            self._change_status(member, chosen)
        elif status is not None:
            self._check_signup(member.email_address, member.status, status)
            self._change_status(member, status)
        self._update_fields(member, merge_fields)
        member.last_changed = now
        return member

    def patch(
        self, list_id: str, member_hash: str, body: Mapping[str, Any], *, validate: bool = True
    ) -> Member:
        """``PATCH``: update an existing, not archived, member only. Mailchimp checks the
        whole member against the audience's required merge fields, not only what the call
        changes, unless it says ``skip_merge_validation=true`` (``validate`` false).

        An ``email_address`` other than the member's changes its address, and with it the
        member's id (the hash of the address); an address another member has, or one that
        was permanently deleted, is refused.
        """
        audience = self.audience(list_id)
        key = self.resolve_hash(member_hash)
        member = audience.members.get(key)
        if member is None or member.status == "archived":
            raise not_found()
        status = _status(body, "status")
        merge_fields = _merge_fields(body)
        if validate:
            _check_required(audience, {**member.merge_fields, **merge_fields})
        # Everything is checked before anything is applied: a refused call changes nothing
        # (a refused status must not have moved the member to its new address first).
        if status is not None:
            _check_status(member.email_address, member.status, status)
            self._check_signup(member.email_address, member.status, status)
        email = body.get("email_address")
        if isinstance(email, str) and subscriber_hash(email) != key:
            if not _plausible_email(email):
                raise _invalid(
                    "The resource submitted could not be validated. For field-specific "
                    "details, see the 'errors' array.",
                    "email_address",
                    "Please provide a valid email address.",
                )
            if member.status != "subscribed":
                raise _invalid(
                    "The resource submitted could not be validated. For field-specific "
                    "details, see the 'errors' array.",
                    "email address",
                    f'This member\'s status is "{member.status}." You can only update email '
                    'addresses for members with a status of "subscribed."',
                )
            new_key = subscriber_hash(email)
            if new_key in audience.members or new_key in audience.forgotten:
                raise Problem(400, "Member Exists", f"{email} is already a list member.")
            del audience.members[key]
            member.email_address = email.strip()
            audience.members[new_key] = member
            self._record(member, "profile")
        if status is not None:
            self._change_status(member, status)
        self._update_fields(member, merge_fields)
        member.last_changed = self._now()
        return member

    def _check_signup(self, email: str, current: str, status: str) -> None:
        """Refuse making a member with this address ``subscribed`` or ``pending`` (from
        ``current``) while Mailchimp pauses its signups."""
        signing_up = status in _SIGNED_UP and status != current
        if signing_up and subscriber_hash(email) in self.signups_paused:
            raise Problem(
                400,
                "Invalid Resource",
                f"{email} has signed up to a lot of lists very recently; we're not allowing "
                "more signups for now",
            )

    def _update_fields(self, member: Member, merge_fields: Mapping[str, Any]) -> None:
        """Take ``merge_fields``; a change of one is a profile update in the member's activity."""
        changed = any(member.merge_fields.get(tag) != value for tag, value in merge_fields.items())
        member.merge_fields.update(merge_fields)
        if changed:
            self._record(member, "profile")

    def _change_status(self, member: Member, status: str) -> None:
        _check_status(member.email_address, member.status, status)
        if status == "pending" and member.status != "pending":
            self.confirmations.append((member.list_id, subscriber_hash(member.email_address)))
        if status != member.status and status in _STATUS_EVENTS:
            self._record(member, _STATUS_EVENTS[status])
        member.status = status

    def _record(self, member: Member, activity_type: str, **fields: Any) -> None:
        """An event in the member's activity, now."""
        event = {"activity_type": activity_type, "created_at_timestamp": self._now(), **fields}
        member.activity.append(event)

    def archive(self, list_id: str, member_hash: str) -> None:
        """``DELETE``: the member stays, archived, and a later ``PUT`` with a ``status`` brings
        it back."""
        member = self.get(list_id, member_hash)
        if member.status != "archived":
            member.archived_from = member.status
        member.status = "archived"
        member.last_changed = self._now()

    def delete_permanent(self, list_id: str, member_hash: str) -> None:
        """``delete-permanent``: the member is removed, its notes with it, and the address
        forgotten here."""
        audience = self.audience(list_id)
        key = self.resolve_hash(member_hash)
        if audience.members.pop(key, None) is None:
            raise not_found()
        audience.forgotten.add(key)

    def add_note(self, list_id: str, member_hash: str, text: str, created_by: str) -> Note:
        """Seed a note about a member, as staff write one in Mailchimp."""
        member = self.get(list_id, member_hash)
        now = self._now()
        note = Note(next(self._note_ids), text, created_by, now, now)
        member.notes.append(note)
        return note

    def add_activity(
        self, list_id: str, member_hash: str, activity_type: str, **fields: Any
    ) -> None:
        """Seed an event in a member's activity, as Mailchimp records a campaign's send,
        open, click or bounce (``fields``: ``campaign_id``, ``url``, ...)."""
        self._record(self.get(list_id, member_hash), activity_type, **fields)

    def add(self, list_id: str, email: str, status: str, merge_fields: Mapping[str, Any]) -> Member:
        """Seed a member as the account holds it (no API rules)."""
        audience = self.audience(list_id)
        key = subscriber_hash(email)
        audience.forgotten.discard(key)  # a person re-subscribing by form is allowed back
        now = self._now()
        member = Member(list_id, email, status, dict(merge_fields), next(self._web_ids), now, now)
        audience.members[key] = member
        return member


def _haystack(member: Member) -> str:
    names = " ".join(str(v) for k, v in member.merge_fields.items() if k in ("FNAME", "LNAME"))
    return f"{member.email_address} {names}".lower()


def _plausible_email(email: str) -> bool:
    local, at, domain = email.strip().rpartition("@")
    return bool(at and local and "." in domain and " " not in email)


def _status(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if value not in MEMBER_STATUSES:
        raise _invalid(
            "The resource submitted could not be validated. For field-specific details, "
            "see the 'errors' array.",
            name,
            "Schema describes enum, value is not one of the allowed statuses.",
        )
    return str(value)


def _check_status(email: str, current: str, status: str) -> None:
    """Refuse ``status`` for a member whose status is ``current`` as Mailchimp does: the API
    may not subscribe someone who unsubscribed or was cleaned."""
    if status == "subscribed" and current in _COMPLIANCE:
        raise Problem(
            400,
            "Member In Compliance State",
            f"{email} is in a compliance state due to unsubscribe, bounce, "
            "or compliance review and cannot be subscribed.",
        )


def _check_required(audience: Audience, merge_fields: Mapping[str, Any]) -> None:
    for tag in sorted(audience.required):
        if merge_fields.get(tag) in (None, ""):
            raise _invalid("Your merge fields were invalid.", tag, "Please enter a value")


def _merge_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    value = body.get("merge_fields", {})
    if not isinstance(value, dict):
        raise _invalid(
            "The resource submitted could not be validated. For field-specific details, "
            "see the 'errors' array.",
            "merge_fields",
            "Schema describes object, another type found instead.",
        )
    return dict(value)
