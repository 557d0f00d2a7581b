"""``pull``, and the listing of every person an upsert answers its lookups from: both page
through ``GET /persons`` by ``update_time`` (``updated_since``), and by
``additional_data.next_cursor`` within a second too full to page by time.

The listing is read as a full pull reads, when it saves searches (:mod:`.directory` says
when); one that fails leaves the batch to searches, one by one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

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
        one, which starts from the newest ``update_time`` seen, past theirs. ``next_cursor``
        is followed only where the page's newest second holds more than half the page (a mass
        change), which reading by time would read again and again, page after page. A pull
        resumed from a cursor holding a ``next_cursor`` asks by time again too, from the
        newest second it had read (the pull was stopped, and persons moved meanwhile).

        Raises:
            FatalRemoteError: Pipedrive handed back a ``next_cursor`` already used in this
                pull (a paging loop would otherwise never end).
            RetryableError: a page answered with something that is not a list of persons.
        """
        state = decode_cursor(cursor)
        since = state.since
        high = state.high or state.since
        page_token = state.page
        if page_token and high is not None and _after(high, since):
            # Resumed inside a listing from ``since`` whose pages read reach ``high``: asked
            # again from ``high`` by time, not by the stored ``next_cursor``. Were it a
            # position, a person of the pages read updated (or deleted) while the pull was
            # stopped would shift the next page's first person onto them, unread for good.
            # Everyone before ``high`` was read; only its own second is read again. This
            # also takes up a cursor a version that paged by next_cursor alone stored.
            since, page_token = high, None
        tokens = PageTokens(self.client.system, "GET", PERSONS, first=page_token)
        # The ids read already in the second ``since`` names, which asking from it reads again.
        read_at_since: set[Any] = set()
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
            response = await self.client.request("GET", PERSONS, params=params)
            # Not json_object: a page it reads as {} (a front end's 200 HTML page) has no
            # next cursor either, and would end the pull "complete" with the rest never read.
            body = answer_object(
                response, system=self.client.system, method="GET", path=PERSONS, required=("data",)
            )
            people = [p for p in body.get("data") or [] if isinstance(p, dict)]
            newest: str | None = None
            for person in people:
                newest = later_time(newest, person.get("update_time"))
            high = later_time(high, newest)
            unread = [
                p
                for p in people
                if not (p.get("id") in read_at_since and _same_time(p.get("update_time"), since))
            ]
            records = [with_contact_keys(p) for p in unread if not p.get("is_deleted")]
            next_token = _next_cursor(body)
            if next_token is None:
                final = encode_cursor(PullCursor(since=high)) if high else None
                yield Page(records=records, cursor=final, complete=True)
                return
            at_newest = [p for p in people if _same_time(p.get("update_time"), newest)]
            if newest is not None and _after(newest, since) and 2 * len(at_newest) <= len(people):
                # From the newest second on, by time: a new listing, whose cursors are its own.
                since, page_token = newest, None
                read_at_since = {p.get("id") for p in at_newest}
                tokens = PageTokens(self.client.system, "GET", PERSONS)
            else:
                page_token = tokens.follow(next_token, response.status_code)
            resume = PullCursor(since=since, page=page_token, high=high)
            yield Page(records=records, cursor=encode_cursor(resume))

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
        """Every live person, read as a full pull reads them, and how many pages that took.

        Only what the listing needs of each person is kept (id, e-mails): a company's whole
        person records would cost a few KB each until the last page.
        """
        persons: list[dict[str, Any]] = []
        pages = 0
        async for page in self.pull(None):
            pages += 1
            persons.extend({"id": p.get("id"), "emails": p.get("emails")} for p in page.records)
        return persons, pages


def _same_time(value: Any, other: str | None) -> bool:
    """Whether ``value`` and ``other`` are readable times of one moment."""
    at = moment(value)
    return at is not None and at == moment(other)


def _after(value: str, other: str | None) -> bool:
    """Whether ``value`` is a readable time later than ``other`` (or ``other`` is none)."""
    at, bound = moment(value), moment(other)
    return at is not None and (bound is None or at > bound)


def _next_cursor(body: dict[str, Any]) -> str | None:
    additional = body.get("additional_data")
    if not isinstance(additional, dict):
        return None
    token = additional.get("next_cursor")
    return token if isinstance(token, str) and token else None
