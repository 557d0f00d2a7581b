"""``pull``, and the listing of every person an upsert answers its lookups from: both page
through ``GET /persons`` by ``update_time`` (``updated_since``), and list a second too full
to page by time on its own (``updated_until``), by ``additional_data.next_cursor``, until two
listings of it agree.

The listing is read as a full pull reads, when it saves searches (:mod:`.directory` says
when); one that fails leaves the batch to searches, one by one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

from adapters.pipedrive._calls import PERSONS, PersonCalls
from adapters.pipedrive.payloads import (
    PullCursor,
    decode_cursor,
    encode_cursor,
    later_time,
    moment,
    with_contact_keys,
)
from connector.adapter import OutboundRecord, Page
from connector.errors import FatalRemoteError, KlantsyncError
from connector.http import answer_object
from connector.paging import PAGING_LOOP, PageTokens

log = logging.getLogger("klantsync.pipedrive")

#: Listings of one crowded second at most, in one pull: the walk, and the listings again
#: until two agree. Two suffice where nothing of it changes meanwhile; each change while it
#: is paged costs one more. Past them (changes all through), the next run reads it again.
SECOND_PASSES: Final = 4


class PersonPages(PersonCalls):
    """Every person, page by page: the pull, and the listing an upsert makes of it."""

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of persons changed since the cursor's watermark, oldest change first.

        Each page after the first is asked for by ``updated_since`` at the newest
        ``update_time`` read so far (that second included; the persons of it read already are
        passed over), not by the page's ``next_cursor``: Pipedrive's docs say only that the
        cursor marks "the first item on the next page". Were it a position, a person read and
        then updated (or deleted) while the pull pages would shift the first person of the
        next page back onto the page read: never read by this pull, and never by the next
        one, which starts from the newest ``update_time`` seen, past theirs.

        A second holding more than half a page (a mass change), which reading by time would
        read again and again, is read on its own (:meth:`_read_second`): listed by
        ``updated_since`` and ``updated_until`` (documented as "earlier than") to that second
        alone, sorted by id, page by page by ``next_cursor``, and listed again until a pass
        finds the very persons the pass before it found. A person of it changed or deleted
        while it is paged leaves it, so the pass after theirs differs, and the neighbour
        their leaving may have passed over is read by the pass after. A pass agrees only once
        begun after that second was over (Pipedrive's ``Date``): a mass change still under
        way adds to it. Where :data:`SECOND_PASSES` passes never agree (changes all through,
        or the second not over yet), the pull reads on past that second, but its cursor
        stays at it, and the next run reads it again.

        A pull resumed from a cursor asks by time, from the second it names, never by a
        stored ``next_cursor`` (the pull was stopped, and persons moved meanwhile): a
        second read on its own is read again whole. Pages that hold nobody (a listing again
        that finds nobody new) are not handed over.

        Raises:
            FatalRemoteError: Pipedrive handed back a ``next_cursor`` already used in one
                listing (a paging loop would otherwise never end).
            RetryableError: a page answered with something that is not a list of persons.
        """
        async with aclosing(self._pages(cursor)) as pages:
            async for page in pages:
                if page.records or page.complete:
                    yield page

    async def _pages(self, cursor: str | None) -> AsyncGenerator[Page]:
        """A page for each ``GET /persons`` :meth:`pull` makes, those holding nobody too
        (the listing an upsert makes counts its calls by them).

        Raises:
            FatalRemoteError: a ``next_cursor`` already used in one listing.
            RetryableError: a page answered with something that is not a list of persons.
        """
        state = decode_cursor(cursor)
        since = state.since
        high = state.high or state.since
        if state.page and high is not None and _after(high, since):
            # Resumed inside a listing from ``since`` whose pages read reach ``high`` (a
            # cursor an earlier version stored): asked again from ``high`` by time, not by
            # the stored ``next_cursor``. Were it a position, a person of the pages read
            # updated (or deleted) while the pull was stopped would shift the next page's
            # first person onto them, unread for good. Everyone before ``high`` was read.
            since = high
        # The earliest second whose passes never agreed: no cursor of this pull goes past it.
        ceiling: str | None = None

        def resume_at(point: str | None) -> str:
            """A cursor resuming from ``point`` (``None``: the start), never past ``ceiling``."""
            held = point if point is None or ceiling is None else _earlier(point, ceiling)
            return encode_cursor(PullCursor(since=held, high=high))

        tokens = PageTokens(self.client.system, "GET", PERSONS)
        page_token: str | None = None
        # The persons read already (id and update_time) whom asking from ``since`` reads again.
        read: set[tuple[Any, datetime | None]] = set()
        while True:
            params: dict[str, Any] = {
                "limit": self.limits.page_size,
                "sort_by": "update_time",
                "sort_direction": "asc",
            }
            if since:
                params["updated_since"] = since
            if page_token:
                params["cursor"] = page_token
            people, next_token, status, _ = await self._list(params)
            newest: str | None = None
            for person in people:
                newest = later_time(newest, person.get("update_time"))
            high = later_time(high, newest)
            unread = [p for p in people if _stamp(p) not in read]
            records = [with_contact_keys(p) for p in unread if not p.get("is_deleted")]
            if next_token is None:
                end = high if high is None or ceiling is None else _earlier(high, ceiling)
                final = encode_cursor(PullCursor(since=end)) if end else None
                yield Page(records=records, cursor=final, complete=True)
                return
            at_newest = [p for p in people if _same_time(p.get("update_time"), newest)]
            if newest is None:
                # Nobody on the page with a readable time to ask by: by next_cursor.
                page_token = tokens.follow(next_token, status)
                back = since if since is None or high is None else _earlier(since, high)
                yield Page(records=records, cursor=resume_at(back))
                continue
            if _after(newest, since) and 2 * len(at_newest) <= len(people):
                # From the newest second on, by time: a new listing, whose cursors are its own.
                since, page_token = newest, None
                read = {_stamp(p) for p in at_newest}
                tokens = PageTokens(self.client.system, "GET", PERSONS)
                yield Page(records=records, cursor=resume_at(since))
                continue
            # The newest second holds more than half the page: read it on its own.
            yield Page(records=records, cursor=resume_at(newest))
            read = {_stamp(p) for p in people}
            outcome: list[bool] = []
            async for found in self._read_second(newest, read, outcome):
                for person in found:
                    high = later_time(high, person.get("update_time"))
                kept = [with_contact_keys(p) for p in found if not p.get("is_deleted")]
                yield Page(records=kept, cursor=resume_at(newest))
            if not outcome[-1]:
                ceiling = newest if ceiling is None else _earlier(ceiling, newest)
                log.warning(
                    "persons of one second kept changing while listed; read again next run",
                    extra={"system": self.client.system, "passes": SECOND_PASSES},
                )
            since, page_token, read = _next_second(newest), None, set()
            tokens = PageTokens(self.client.system, "GET", PERSONS)

    async def _read_second(
        self, second: str, read: set[tuple[Any, datetime | None]], outcome: list[bool]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield, page by page, the persons of one second not in ``read`` (adding them).

        The second is listed alone (``updated_since`` it, ``updated_until`` the next), by id,
        followed by ``next_cursor``; then listed again, until a pass finds the same ids as
        the one before it: nobody read by that pass left the second while it was paged, so
        nobody was shifted past it either (only someone leaving a position already read
        shifts the rest), and everyone still there was read. Two agree only where the second
        was over (Pipedrive's ``Date``, where it sends one) before the later of them began:
        one changed in a second still under way, after both passed their place, is in
        neither. At most :data:`SECOND_PASSES` passes; ``outcome`` gets whether two agreed.

        Raises:
            FatalRemoteError: a pass was handed back a ``next_cursor`` it had used.
            RetryableError: a page answered with something that is not a list of persons.
        """
        before: set[Any] | None = None
        over = moment(_next_second(second))
        # Whether the second was over before this pass began (no ``Date``: taken as over).
        closed = True
        for _ in range(SECOND_PASSES):
            found: set[Any] = set()
            tokens = PageTokens(self.client.system, "GET", PERSONS)
            page_token: str | None = None
            while True:
                params: dict[str, Any] = {
                    "limit": self.limits.page_size,
                    "sort_by": "id",
                    "sort_direction": "asc",
                    "updated_since": second,
                    "updated_until": _next_second(second),
                }
                if page_token:
                    params["cursor"] = page_token
                people, next_token, status, answered = await self._list(params)
                found.update(p.get("id") for p in people)
                unread = [p for p in people if _stamp(p) not in read]
                read.update(_stamp(p) for p in unread)
                yield unread
                if next_token is None:
                    break
                page_token = tokens.follow(next_token, status)
            if found == before and closed:
                outcome.append(True)
                return
            before = found
            closed = answered is None or over is None or answered >= over
        outcome.append(False)

    async def _list(
        self, params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], str | None, int, datetime | None]:
        """One page of ``GET /persons``: the persons on it, its ``next_cursor``, status and
        when Pipedrive answered (its ``Date``; ``None`` without a readable one)."""
        response = await self.client.request("GET", PERSONS, params=params)
        # Not json_object: a page it reads as {} (a front end's 200 HTML page) has no
        # next cursor either, and would end the pull "complete" with the rest never read.
        body = answer_object(
            response, system=self.client.system, method="GET", path=PERSONS, required=("data",)
        )
        people = [p for p in body.get("data") or [] if isinstance(p, dict)]
        return people, _next_cursor(body), response.status_code, _answered(response)

    async def _list_if_worth_it(self, records: Sequence[OutboundRecord]) -> None:
        """List every person first when that saves this batch's and the next ones' searches.

        A listing that fails is not this batch's failure: the records are searched one by
        one, as they would be without it.

        Raises:
            FatalRemoteError: bad token or missing permission.
        """
        lookups = sum(
            1 for r in records if r.email and not (r.external_id and r.external_id.isdecimal())
        )
        if not lookups:
            return
        async with self._listing:  # batches side by side wait for one listing
            if self.directory.fresh or not self.directory.worth_listing(lookups):
                return
            try:
                persons, pages = await self._every_person()
            except KlantsyncError as exc:
                # Bad credentials stop the system; a listing that failed (or looped, which
                # pull refuses) leaves the batch to searches.
                if isinstance(exc, FatalRemoteError) and exc.detail != PAGING_LOOP:
                    raise
                log.warning(
                    "person listing failed; searching instead",
                    extra={"system": self.client.system, "error": str(exc)},
                )
                return
            self.directory.load(persons, pages)

    async def _every_person(self) -> tuple[list[dict[str, Any]], int]:
        """Every live person, read as a full pull reads them, and how many calls that took.

        Only what the listing needs of each person is kept (id, e-mails): a company's whole
        person records would cost a few KB each until the last page.
        """
        persons: list[dict[str, Any]] = []
        pages = 0
        async for page in self._pages(None):
            pages += 1
            persons.extend({"id": p.get("id"), "emails": p.get("emails")} for p in page.records)
        return persons, pages


def _stamp(person: dict[str, Any]) -> tuple[Any, datetime | None]:
    """A person as read: their id, and the moment they were last changed."""
    return person.get("id"), moment(person.get("update_time"))


def _earlier(value: str, other: str) -> str:
    """The earlier of two times (``value`` where either is unreadable)."""
    return other if _after(value, other) else value


def _next_second(value: str) -> str:
    """The first whole second after the one ``value`` falls in (``value`` if unreadable)."""
    at = moment(value)
    if at is None:
        return value
    after = at.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    return after.strftime("%Y-%m-%dT%H:%M:%SZ")


def _same_time(value: Any, other: str | None) -> bool:
    """Whether ``value`` and ``other`` are readable times of one moment."""
    at = moment(value)
    return at is not None and at == moment(other)


def _after(value: str, other: str | None) -> bool:
    """Whether ``value`` is a readable time later than ``other`` (or ``other`` is none)."""
    at, bound = moment(value), moment(other)
    return at is not None and (bound is None or at > bound)


def _answered(response: httpx.Response) -> datetime | None:
    """When Pipedrive answered (its ``Date``, to the second); ``None`` without a readable one."""
    try:
        at = parsedate_to_datetime(response.headers.get("date") or "")
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return at if at.tzinfo is not None else None


def _next_cursor(body: dict[str, Any]) -> str | None:
    additional = body.get("additional_data")
    if not isinstance(additional, dict):
        return None
    token = additional.get("next_cursor")
    return token if isinstance(token, str) and token else None
