"""Reading a subject's members: whole, with their notes and activity, for an access copy
(``find``), or with the paths the mapping reads alone for an erasure and a correction
(``find_records``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from adapters.mailchimp._calls import MailchimpCalls, _member_hashes, _member_path
from adapters.mailchimp.payloads import as_found, is_subscriber_hash
from adapters.mailchimp.settings import PAGE_SIZE
from connector.adapter import Subject
from connector.http import answer_object
from connector.others import own_addresses, text_without_others

SEARCH: Final = "/search-members"
#: The account's audiences (``GET /lists``): an erasure looks on every one.
LISTS: Final = "/lists"

#: Pages of a member's activity feed an access copy reads (each of ``PAGE_SIZE`` events, the
#: newest first): a bound, since the feed does not say how long it is.
ACTIVITY_PAGES: Final = 10
#: What every read of a member for an erasure or a correction asks for beside the paths the
#: mapping reads: its id and audience (the member's path), its address (a search's exact
#: match is told by it) and its status (an archived member is written to by neither).
MEMBER_KEYS: Final = ("id", "list_id", "email_address", "status")
#: Where a search's members lie in its answer: ``fields`` names paths from the answer's root.
SEARCH_MEMBERS: Final = "exact_matches.members"

#: What staff wrote in a note (``note``): an address of another quoted in it is left out of
#: the copy, the person's own stays (Art. 15(4); :mod:`connector.others`).
NOTE_WRITTEN: Final = ("note",)
#: Who wrote it (``created_by``: the account user's name), another person, whom the copy
#: leaves out as Pipedrive's leaves out a note's ``user``; the note and its dates stay.
NOTE_AUTHOR: Final = ("created_by",)

#: The key of a member's record that says its activity was read only in part, and why.
ACTIVITY_UNREAD: Final = "activityNotRead"
#: Its reason, a code the access reports say in their language (connector/access.py).
ACTIVITY_UNREAD_REASON: Final = "activity_feed_cut"


class MemberReads(MailchimpCalls):
    """Finds a subject's members on every audience of the account, archived ones included."""

    #: The paths of a member ``find_records`` asks for: set by the adapter's ``__init__``.
    _record_paths: tuple[str, ...] | None

    def ask_only_for_paths(self, paths: Mapping[str, str]) -> None:
        """Read members for an erasure's snapshot and check and for a correction
        (:meth:`find_records`) with the paths the mapping reads and :data:`MEMBER_KEYS`
        alone, as Mailchimp's ``fields`` takes them (dotted: ``merge_fields.FNAME``).

        ``paths`` are the mapping's (:meth:`SystemMapping.source_paths`, each with the mapping
        key naming it). A whole member carries the IP addresses it signed up and confirmed
        from, its location, language, stats and tags, and every merge field (a postal
        address, a birthday) whether a mapping reads it or not: none of it leaves Mailchimp
        for a read that has no use for it. An access copy (:meth:`find`) still reads whole
        members.
        """
        self._record_paths = tuple(dict.fromkeys((*MEMBER_KEYS, *paths)))

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every member record of the subject, on any audience, archived ones included, each
        with the notes Mailchimp holds about it under ``"notes"`` and its activity under
        ``"activity"``.

        A note is free text the account's staff wrote about the person, so access must show
        it, but for an address of another it quotes, none of the person's (the one asked for,
        the member's), which reads ``[address left out]``, and for its author (a staff
        member: :data:`NOTE_AUTHOR`), who is left out. The activity is what Mailchimp
        recorded of the person's newsletter (sends, opens, clicks, bounces, unsubscribes,
        sign-ups): tracking it holds about them, which access must show as well (see
        :meth:`_activity`). Neither is a record of its own: each lives and dies with its
        member (``delete-permanent`` deletes "all personally identifiable information
        related to" it), so an erasure's check that nothing is left needs to look for members
        only, and one whose member is gone has nothing to read.
        """
        members = await self._members(subject)
        found: list[dict[str, Any]] = []
        for (list_id, member_hash), member in members.items():
            own = own_addresses(subject.email, member.get("email_address"))
            notes = [
                text_without_others(note, NOTE_WRITTEN, own, leave_out=NOTE_AUTHOR)
                for note in await self._notes(list_id, member_hash)
            ]
            activity = await self._activity(list_id, member_hash)
            found.append({**member, "notes": notes, **activity})
        return found

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's member records, as :meth:`find` finds them, without their notes and
        activity: an erasure's snapshot and check and a correction need the members (ids,
        status, merge fields), and ``delete-permanent`` deletes the rest unread (see
        ``Adapter.find``), with the paths the mapping reads alone once told them
        (:meth:`ask_only_for_paths`). Mailchimp holds no orders (``orders`` is the
        contract's)."""
        return list((await self._members(subject, self._record_paths)).values())

    async def _members(
        self, subject: Subject, paths: Sequence[str] | None = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """(list id, member id) -> member, from search-members and every audience read by hash;
        whole, or with ``paths`` alone (Mailchimp's ``fields``), which must hold
        :data:`MEMBER_KEYS`.

        Every audience of the account is read by hash, not only the configured ones, because
        a search may not show every member (archived ones, for instance): an erasure must
        reach, and its check must see, an archived member on an audience klantsync does not
        write to. The identity map's id is tried as well (the hash of the address the
        connector wrote).
        """
        found: dict[tuple[str, str], dict[str, Any]] = {}
        email = subject.email.strip().lower()
        if "@" in email:
            for member in await self._search(email, paths):
                found[(str(member["list_id"]), str(member["id"]))] = member
        hashes = _member_hashes(email, subject.external_id)
        audiences = list(self.settings.list_ids)
        audiences += [a for a in await self._audiences() if a not in audiences]
        for list_id in audiences:
            for member_hash in hashes:
                if (list_id, member_hash) in found:
                    continue
                held = await self._get_member(list_id, member_hash, paths)
                if held is not None:
                    found[(list_id, member_hash)] = held
        # Another subject's member (Subject.spare) is neither read nor deleted.
        return {
            key: as_found(member) for key, member in found.items() if key[1] not in subject.spare
        }

    async def _audiences(self) -> list[str]:
        """Every audience id of the account (``GET /lists``)."""
        lists = await self._collection(LISTS, LISTS, "lists", fields="lists.id,total_items")
        found = (str(item.get("id") or "") for item in lists)
        return [list_id for list_id in found if list_id.isalnum()]

    async def _notes(self, list_id: str, member_hash: str) -> list[dict[str, Any]]:
        """The member's notes (``GET .../notes``); none if the member went away meanwhile."""
        path = _member_path(list_id, member_hash) + "/notes"
        template = _member_path(list_id, "{subscriber_hash}") + "/notes"
        return await self._collection(path, template, "notes", gone_is_empty=True)

    async def _activity(self, list_id: str, member_hash: str) -> dict[str, Any]:
        """``{"activity": [...]}``: the member's activity feed (``GET .../activity-feed``), the
        newest events first; none if the member went away meanwhile (404).

        ``activity-feed`` is read rather than the older ``.../activity``, which gives the
        last 50 events only: the feed pages by count and offset (at most 1000 a page). Its
        answer is not documented to hold ``total_items`` (UNVERIFIED), so it is read while
        its pages come full, up to :data:`ACTIVITY_PAGES`. A member with more than that
        carries :data:`ACTIVITY_UNREAD`, so the copy does not pass for the whole of it.
        """
        path = _member_path(list_id, member_hash) + "/activity-feed"
        template = _member_path(list_id, "{subscriber_hash}") + "/activity-feed"
        events = await self._collection(
            path, template, "activity", gone_is_empty=True, max_pages=ACTIVITY_PAGES
        )
        held: dict[str, Any] = {"activity": events}
        if len(events) >= ACTIVITY_PAGES * PAGE_SIZE:
            held[ACTIVITY_UNREAD] = {"reason": ACTIVITY_UNREAD_REASON, "eventsListed": len(events)}
        return held

    async def _collection(
        self,
        path: str,
        template: str,
        key: str,
        *,
        fields: str = "",
        gone_is_empty: bool = False,
        max_pages: int = 0,
    ) -> list[dict[str, Any]]:
        """Every item of the collection at ``path`` (the objects under ``key``), paged by
        count and offset as Mailchimp pages every collection: one call unless it holds more
        than a page. A 404 is an empty collection when ``gone_is_empty``.

        A collection that says how many items it holds (``total_items``) is read to the end.
        One that does not is read while its pages come full, up to ``max_pages`` (without a
        bound, its first page only: nothing else says when to stop).
        """
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            params: dict[str, Any] = {"count": PAGE_SIZE, "offset": offset}
            if fields:
                params["fields"] = fields
            async with self._connections:
                response = await self._request(
                    "GET", path, template, params=params, accept=(404,) if gone_is_empty else ()
                )
            if response.status_code == 404:
                return []
            # The template, not the path: a subscriber hash is the MD5 of the e-mail.
            body = answer_object(
                response, system=self.client.system, method="GET", path=template, required=(key,)
            )
            page = [item for item in body[key] or [] if isinstance(item, dict)]
            found += page
            offset += PAGE_SIZE
            total = body.get("total_items")
            if isinstance(total, int):
                more = offset < total
            else:
                more = len(page) >= PAGE_SIZE and offset < max_pages * PAGE_SIZE
            if not page or not more:
                return found

    async def _search(self, email: str, paths: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The exact matches of ``email`` across the account; whole, or with ``paths`` alone.

        Only the exact matches are asked for: the answer's ``full_search`` holds the members
        whose address merely contains the query, other people's (``jan@`` for ``an@``).
        """
        wanted = [f"{SEARCH_MEMBERS}.{path}" for path in paths] if paths else ["exact_matches"]
        # The e-mail travels in the query string, which SystemClient never puts in errors.
        params = {"query": email, "fields": ",".join(wanted)}
        async with self._connections:
            response = await self._request("GET", SEARCH, SEARCH, params=params)
        body = answer_object(
            response,
            system=self.client.system,
            method="GET",
            path=SEARCH,
            required=("exact_matches",),
        )
        matches = body["exact_matches"]
        members = matches.get("members") if isinstance(matches, dict) else None
        return [
            member
            for member in members or []
            if isinstance(member, dict)
            and str(member.get("email_address", "")).strip().lower() == email
            and str(member.get("list_id") or "").isalnum()
            # The id goes into erasure paths: only a real subscriber hash is taken.
            and is_subscriber_hash(str(member.get("id") or ""))
        ]

    async def _get_member(
        self, list_id: str, member_hash: str, paths: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The member, whole or with ``paths`` alone; ``None`` if the audience has none."""
        template = _member_path(list_id, "{subscriber_hash}")
        params = {"fields": ",".join(paths)} if paths else None
        async with self._connections:
            response = await self._request(
                "GET", _member_path(list_id, member_hash), template, params=params, accept=(404,)
            )
        if response.status_code == 404:
            return None
        # The template, not the path: a subscriber hash is the MD5 of the e-mail.
        return answer_object(
            response, system=self.client.system, method="GET", path=template, required=("id",)
        )
