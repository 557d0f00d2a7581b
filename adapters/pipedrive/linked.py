"""What Pipedrive keeps beside a person, read for the access copy (Art. 15).

A person record is not all Pipedrive holds about someone. Staff write notes about them
(typically the most personal text the CRM holds), deals, leads and activities (calls,
meetings) name them, and labels ("VIP", "Wanbetaler") say what the company thinks of them.
``find`` adds each to the person's record:

- ``notes``: ``GET /api/v1/notes?person_id=``. API v2 has no notes endpoint in Pipedrive's
  SDK; the v1 one is read beside the v2 root (v1 paging: ``start``, ``limit``,
  ``additional_data.pagination.more_items_in_collection`` and ``next_start``). That v1
  notes stay served while v1 person endpoints go away is UNVERIFIED;
- ``deals``: ``GET /api/v2/deals?person_id=`` ("only deals linked to the specified person")
  and ``GET /api/v2/deals/archived?person_id=``. Since July 2025 the first leaves archived
  deals out, and the second lists them, with the same filters and cursor paging [src:
  Pipedrive's changelog "archived deals and leads will not be returned in existing
  endpoints", naming ``GET /api/v2/deals`` and the new endpoint; its reference,
  ``getArchivedDeals`` "Returns data about all archived deals", with ``person_id``,
  ``limit`` and ``cursor``]. Its answer's shape (``data``, ``additional_data.next_cursor``,
  as the first) is UNVERIFIED: the reference shows none. A deal from it is marked
  ``is_archived`` in the copy, as Pipedrive's deals carry it since the change [its SDK's
  changelog: "Added ``is_archived`` and ``archive_time`` properties to deals endpoints
  response"], whether or not the answer says so; one in both lists (archived between the
  two calls) is listed once, as archived;
- ``leads``: ``GET /api/v1/leads?person_id=`` and ``GET /api/v1/leads/archived?person_id=``
  (v1 paging by ``start``). Since July 2025 the first lists leads not archived only, the
  archived ones have the second [src: Pipedrive's SDK, ``getLeads`` "Returns multiple not
  archived leads" and ``getArchivedLeads``; its changelog "archived deals and leads will
  not be returned in existing endpoints"]; the ``archived_status`` the list once took is
  no longer documented, so it is not sent. A lead in both (archived between the two calls)
  is listed once. The SDK's answer keeps ``more_items_in_collection`` in
  ``additional_data`` itself, without ``next_start``; other v1 lists nest it under
  ``pagination``: both are read (which one Pipedrive sends for leads is UNVERIFIED);
- ``activities``: ``GET /api/v2/activities?person_id=`` ("only activities whose primary
  participant is the given person"; older SDK versions lack the parameter);
- ``labels``: the names of ``label_ids``, from the options of the person field whose
  ``field_code`` is ``label_ids`` (``GET /api/v2/personFields``, read once per copy).
  That the label field has that code is UNVERIFIED (v1 knew a single ``label`` too, also
  taken); the ids stay in ``label_ids``.

Only items that name the person (``person_id``) are kept: a filter Pipedrive ignored would
otherwise put other people's data into this person's copy. Of those, what Pipedrive adds of
other people is left out: a note's author (``user``: a staff member's e-mail and name) and
the attendees of an activity other than the person (each with their e-mail and name); and
an address of another that what staff wrote quotes (:data:`WRITTEN`: a note's text, a
deal's title and lost reason, a lead's title, an activity's subject and notes) reads
``[address left out]`` (:mod:`connector.others`).
Each list is read to at most :data:`MAX_PAGES` pages of :data:`PAGE_SIZE` (leads: each of
their two lists); one with more says so in the record (``notesNotRead``, ``dealsNotRead``,
``leadsNotRead``, ``activitiesNotRead``: reason :data:`CUT_REASON`, and how many the copy
lists), so a partial list never passes for the whole. A 404 is an empty list: the person
went away since it was read, as for the other adapters' sub-collections.

An erasure deletes the person's notes that are about them alone (``DELETE /api/v1/notes/
{id}``; the v1 note attaches to nothing else: no deal, organisation, lead or project) and
counts what it leaves (:meth:`LinkedReader.erase_beside`): deals and leads (archived ones
of both too, read as the copy reads them), activities and notes also on another record are the
business's records, which name the person but are not theirs to have deleted, and the
receipt names them by kind and count. A kind Pipedrive refuses to list (a 403: the API
user's permission set leaves deals, leads or activities out) is named as not counted, with
a warning to grant it, and the erasure goes on: the person is deleted all the same. The
notes are read to delete those about the person alone, so a refusal of them, as any other
failure of a read (a 401, a 5xx), fails the erasure, to be retried. A lead is kept for the
reason a deal is: it is a deal not yet made, the company's pipeline, which it converts into
a deal (notes on it are kept too). What Pipedrive itself does to a deleted person's notes,
deals, leads and activities is UNVERIFIED; whether a deleted note goes to a bin is
UNVERIFIED too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from connector.adapter import not_counted
from connector.errors import FatalRemoteError
from connector.http import SystemClient, answer_object
from connector.others import text_without_others
from connector.paging import PAGING_LOOP, PageTokens

__all__ = ["CUT_REASON", "MAX_PAGES", "PAGE_SIZE", "WRITTEN", "Left", "LinkedReader"]

log = logging.getLogger("klantsync.pipedrive")

T = TypeVar("T")

#: Items a page of each list holds (the most v1 and v2 lists give).
PAGE_SIZE: Final = 500
#: Pages of each list one access copy reads, at most.
MAX_PAGES: Final = 10
#: The reason code a record carries for a list read in part (connector/access.py says it).
CUT_REASON: Final = "pipedrive_list_cut"

NOTES: Final = "/notes"
DEALS: Final = "/deals"
#: API v2: the person's archived deals, which ``DEALS`` leaves out since July 2025.
ARCHIVED_DEALS: Final = "/deals/archived"
#: API v1, as notes: the person's leads not archived, and the archived ones.
LEADS: Final = "/leads"
ARCHIVED_LEADS: Final = "/leads/archived"
ACTIVITIES: Final = "/activities"
PERSON_FIELDS: Final = "/personFields"
#: ``field_code`` of the person field whose options name the labels (UNVERIFIED; see above).
LABEL_FIELDS: Final = frozenset({"label_ids", "label"})
#: The fields of a v1 note that attach it to a record besides the person: such a note is
#: that record's too (a deal's history), and an erasure leaves it.
ATTACHED_ELSEWHERE: Final = ("deal_id", "org_id", "lead_id", "project_id")
#: The fields of each list holding what staff wrote (a v1 note's ``content``, HTML; a deal's
#: ``title`` and ``lost_reason``; a lead's ``title``; an activity's ``note`` and
#: ``public_description``, and its ``subject``): an address of another quoted in them is
#: left out of the copy, the person's own stays (Art. 15(4)).
WRITTEN: Final[Mapping[str, tuple[str, ...]]] = {
    "notes": ("content",),
    "deals": ("title", "lost_reason"),
    "leads": ("title",),
    "activities": ("subject", "note", "public_description"),
}


@dataclass
class Left:
    """What an erasure did with, and left of, what Pipedrive keeps beside the person.

    Counts only, never content or ids: the receipt shows :meth:`said`, and a deal names
    other people (its organisation, its participants) as well.
    """

    notes_deleted: int = 0
    notes_kept: int = 0
    deals: int = 0
    leads: int = 0
    activities: int = 0
    #: Lists longer than one erasure reads (:data:`MAX_PAGES` pages): the rest stays unread.
    cut: set[str] = field(default_factory=set)
    #: Kinds Pipedrive refused to list (403), in the order read: not counted at all.
    uncounted: list[str] = field(default_factory=list)

    def add(self, other: Left) -> None:
        self.notes_deleted += other.notes_deleted
        self.notes_kept += other.notes_kept
        self.deals += other.deals
        self.leads += other.leads
        self.activities += other.activities
        self.cut |= other.cut
        self.refused(*other.uncounted)

    def refused(self, *kinds: str) -> None:
        """Note ``kinds`` as not counted (Pipedrive refused to list them)."""
        self.uncounted += [kind for kind in kinds if kind not in self.uncounted]

    def said(self) -> str:
        """The receipt's words for it; empty when nothing was linked to the person."""
        parts: list[str] = []
        if self.notes_deleted:
            parts.append(
                f"{_count(self.notes_deleted, 'note', 'notes')} about the person alone deleted"
            )
        kept = [
            text
            for kind, number, text in (
                ("deals", self.deals, _count(self.deals, "deal", "deals")),
                ("leads", self.leads, _count(self.leads, "lead", "leads")),
                (
                    "activities",
                    self.activities,
                    _count(self.activities, "activity", "activities"),
                ),
                (
                    "notes",
                    self.notes_kept,
                    f"{_count(self.notes_kept, 'note', 'notes')} also on a deal, organisation, "
                    "lead or project",
                ),
            )
            # A kind refused for one person and counted for another is not counted whole.
            if number and kind not in self.uncounted
        ]
        if kept:
            parts.append(
                "left in Pipedrive, linked to the person (the business's records, which "
                f"klantsync does not delete): {', '.join(kept)}"
            )
        parts += [
            f"{kind} beyond the first {MAX_PAGES * PAGE_SIZE} not read, left as they are"
            for kind in sorted(self.cut)
            if kind not in self.uncounted
        ]
        return "; ".join(
            part for part in (*parts, not_counted(self.uncounted, "Pipedrive")) if part
        )


class LinkedReader:
    """Reads what Pipedrive keeps beside persons, over the adapter's client.

    Args:
        client: the company's client, based at the API v2 root.
        v2_root: that root (``https://<company>.pipedrive.com/api/v2``); API v1 is beside it.
    """

    def __init__(self, client: SystemClient, v2_root: str) -> None:
        self.client = client
        root = v2_root.rstrip("/")
        self.v1_root = root.removesuffix("/v2") + "/v1"

    async def label_names(self) -> dict[int, str]:
        """Label id -> name, from the person fields; empty if Pipedrive shows none."""
        names: dict[int, str] = {}
        fields, _ = await self._cursor_list(PERSON_FIELDS, {})
        for person_field in fields:
            if person_field.get("field_code") not in LABEL_FIELDS:
                continue
            for option in person_field.get("options") or []:
                if isinstance(option, Mapping) and isinstance(option.get("id"), int):
                    names[int(option["id"])] = str(option.get("label") or "")
        return names

    async def beside(self, person_id: int, own: Collection[str]) -> dict[str, Any]:
        """``notes``, ``deals``, ``activities`` and ``leads`` of the person, each with its cut
        marker.

        ``own`` holds the person's addresses (lower case): any other one their text quotes
        is left out (:data:`WRITTEN`).
        """
        held: dict[str, Any] = {}
        notes, more = await self._notes(person_id)
        kept = [_without_others("notes", n, person_id, own) for n in notes]
        held.update(_listed("notes", kept, more))
        deals, more = await self._deals(person_id)
        held.update(
            _listed("deals", [_without_others("deals", d, person_id, own) for d in deals], more)
        )
        items, more = await self._cursor_list(ACTIVITIES, {"person_id": person_id})
        named = [
            _without_others("activities", i, person_id, own) for i in items if _names(i, person_id)
        ]
        held.update(_listed("activities", named, more))
        leads, more = await self._leads(person_id)
        held.update(
            _listed("leads", [_without_others("leads", i, person_id, own) for i in leads], more)
        )
        return held

    async def erase_beside(self, person_id: int) -> Left:
        """Delete the person's notes about them alone; count what is left beside them.

        Run before the person is deleted: a retry after a failure between the two finds the
        person again, and with them what is still linked.
        """
        left = Left()
        notes, more = await self._notes(person_id)
        if more:
            left.cut.add("notes")
        for note in notes:
            if any(note.get(key) for key in ATTACHED_ELSEWHERE):
                left.notes_kept += 1
            elif isinstance(note.get("id"), int):
                left.notes_deleted += await self._delete_note(int(note["id"]))
        deals = await self._unless_refused("deals", self._deals(person_id), left)
        if deals is not None:
            if deals[1]:
                left.cut.add("deals")
            left.deals = len(deals[0])
        leads = await self._unless_refused("leads", self._leads(person_id), left)
        if leads is not None:
            if leads[1]:
                left.cut.add("leads")
            left.leads = len(leads[0])
        activities = await self._unless_refused(
            "activities", self._cursor_list(ACTIVITIES, {"person_id": person_id}), left
        )
        if activities is not None:
            if activities[1]:
                left.cut.add("activities")
            left.activities = sum(1 for item in activities[0] if _names(item, person_id))
        return left

    async def _unless_refused(self, kind: str, read: Awaitable[T], left: Left) -> T | None:
        """What ``read`` (an erasure's count of ``kind``) returns; ``None`` where Pipedrive
        refused it (403: the API user may not see ``kind``), noted on ``left`` and warned of.

        Only a 403 of Pipedrive's own (JSON; Cloudflare's HTML one is a rate limit, retried
        by the client): a 401 (the token is bad, and the delete would fail too), a 5xx or a
        transport error still fail the erasure, whose retry counts them.
        """
        try:
            return await read
        except FatalRemoteError as exc:
            if exc.status != 403:
                raise
        left.refused(kind)
        # The company's permission, not a person's: nobody is named.
        log.warning(
            "Pipedrive refused to list %s (403: the API user lacks the permission to see "
            "them): an erasure's receipt says they were not counted",
            kind,
            extra={"system": self.client.system},
        )
        return None

    async def _delete_note(self, note_id: int) -> int:
        """``DELETE /api/v1/notes/{id}``: 1 if deleted, 0 if gone already (404)."""
        response = await self.client.request(
            "DELETE", f"{self.v1_root}{NOTES}/{note_id}", accept=(404,)
        )
        return int(response.status_code == 200)

    async def _notes(self, person_id: int) -> tuple[list[dict[str, Any]], bool]:
        """The person's notes (API v1, paged by ``start``) and whether more were left."""
        url = self.v1_root + NOTES
        found: list[dict[str, Any]] = []
        start = 0
        for _ in range(MAX_PAGES):
            params = {"person_id": person_id, "start": start, "limit": PAGE_SIZE}
            body = await self._page(url, NOTES, params)
            if body is None:
                return [], False
            found += [n for n in _items(body) if n.get("person_id") == person_id]
            pagination = _mapping(_mapping(body.get("additional_data")).get("pagination"))
            following = pagination.get("next_start")
            if not pagination.get("more_items_in_collection"):
                return found, False
            if not isinstance(following, int) or following <= start:
                raise FatalRemoteError(self.client.system, "GET", NOTES, 200, PAGING_LOOP)
            start = following
        return found, True

    async def _deals(self, person_id: int) -> tuple[list[dict[str, Any]], bool]:
        """The deals naming the person, not archived then archived (API v2, each list paged
        by ``cursor``): :func:`_live_then_archived`."""
        lists = []
        for path in (DEALS, ARCHIVED_DEALS):
            items, more = await self._cursor_list(path, {"person_id": person_id})
            lists.append(([d for d in items if _names(d, person_id)], more))
        return _live_then_archived(*lists)

    async def _leads(self, person_id: int) -> tuple[list[dict[str, Any]], bool]:
        """The person's leads, not archived then archived (API v1, each list paged by
        ``start``): :func:`_live_then_archived`."""
        lists = []
        for path in (LEADS, ARCHIVED_LEADS):
            items, more = await self._start_list(path, {"person_id": person_id})
            lists.append(([lead for lead in items if lead.get("person_id") == person_id], more))
        return _live_then_archived(*lists)

    async def _start_list(
        self, path: str, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        """A v1 list's items (paged by ``start``) and whether more were left. The next page
        starts at ``next_start`` where the answer gives one, else after the items given."""
        url = self.v1_root + path
        found: list[dict[str, Any]] = []
        start = 0
        for _ in range(MAX_PAGES):
            body = await self._page(url, path, {**params, "start": start, "limit": PAGE_SIZE})
            if body is None:
                return [], False
            items = _items(body)
            found += items
            following = _next_start(body, start, len(items))
            if following is None:
                return found, False
            if following <= start:
                raise FatalRemoteError(self.client.system, "GET", path, 200, PAGING_LOOP)
            start = following
        return found, True

    async def _cursor_list(
        self, path: str, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        """A v2 list's items (paged by ``cursor``) and whether more were left."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        tokens = PageTokens(self.client.system, "GET", path)
        for _ in range(MAX_PAGES):
            query = {**params, "limit": PAGE_SIZE, **({"cursor": cursor} if cursor else {})}
            body = await self._page(path, path, query)
            if body is None:
                return [], False
            found += _items(body)
            following = _mapping(body.get("additional_data")).get("next_cursor")
            if not isinstance(following, str) or not following:
                return found, False
            cursor = tokens.follow(following)
        return found, True

    async def _page(self, url: str, path: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """One page's body; ``None`` for a 404 (the person went away meanwhile)."""
        response = await self.client.request("GET", url, params=params, accept=(404,))
        if response.status_code == 404:
            return None
        return answer_object(
            response, system=self.client.system, method="GET", path=path, required=("data",)
        )


def _next_start(body: Mapping[str, Any], start: int, given: int) -> int | None:
    """Where a v1 list's next page starts; ``None`` on its last page. Its pagination is
    under ``additional_data.pagination`` or (the leads list's, in Pipedrive's SDK) in
    ``additional_data`` itself."""
    additional = _mapping(body.get("additional_data"))
    pagination = _mapping(additional.get("pagination")) or additional
    if not pagination.get("more_items_in_collection"):
        return None
    following = pagination.get("next_start")
    if isinstance(following, int) and not isinstance(following, bool):
        return following
    return start + given


def _listed(kind: str, items: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    held: dict[str, Any] = {kind: items}
    if more:
        held[f"{kind}NotRead"] = {"reason": CUT_REASON, "listed": len(items)}
    return held


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _names(item: Mapping[str, Any], person_id: int) -> bool:
    """Whether a deal or activity names the person (its own or a participant's)."""
    if item.get("person_id") == person_id:
        return True
    participants = item.get("participants")
    return isinstance(participants, list) and any(
        isinstance(p, Mapping) and p.get("person_id") == person_id for p in participants
    )


def _without_others(
    kind: str, item: Mapping[str, Any], person_id: int, own: Collection[str]
) -> dict[str, Any]:
    """A note, deal, lead or activity (``kind``) as the person's copy holds it: without what
    Pipedrive adds of other people, nor their addresses quoted in its text.

    A v1 note names its author under ``user`` (a staff member's e-mail, name and picture;
    ``user_id`` stays, as the person's ``owner_id`` does), and an activity lists its
    ``attendees`` with their e-mail and name (the salesperson organising it, the
    customer's partner invited too): of those the copy keeps the person's own entry.
    Handed over, a customer's access request disclosed those people's addresses.
    """
    kept = dict(item)
    attendees = item.get("attendees")
    if isinstance(attendees, list):
        kept["attendees"] = [
            a for a in attendees if isinstance(a, Mapping) and a.get("person_id") == person_id
        ]
    return text_without_others(kept, WRITTEN.get(kind, ()), own, leave_out=_OTHER_PEOPLE)


#: Keys of a linked item that hold other people's data whole: a note's author.
_OTHER_PEOPLE: Final = frozenset({"user"})


def _items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = body.get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _live_then_archived(
    live: tuple[list[dict[str, Any]], bool], archived: tuple[list[dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], bool]:
    """Items of a live list and of its archived list (each with whether it had more than
    was read), once each, those from the archived list marked ``is_archived``, and whether
    either had more. One both lists give was archived between the two reads: it is now."""
    found = {str(item.get("id")): item for item in live[0]}
    for item in archived[0]:
        found[str(item.get("id"))] = {**item, "is_archived": True}
    return list(found.values()), live[1] or archived[1]
