"""Reading the HubSpot contacts changed since a pull's cursor: CRM search by ``lastmodifieddate``.

A flow's first read (no cursor) lists every contact (``GET /crm/v3/objects/contacts``, 100 a
call of the burst budget); every later one searches (``POST .../search``, in the separate
search limit) for the contacts modified since the latest modification the previous read
saw, oldest first. What the cursor holds (JSON, opaque to the engine):

- ``since``: epoch milliseconds, the latest ``lastmodifieddate`` read (for a first read, the
  latest in the portal when it began), from which the next read searches;
- ``list``: the list's ``after`` token, while a first read is under way.

Each search page is a new query from the latest modification time read so far, never the
next ``after`` of the last one: ``after`` is an offset into the query's answer, so a contact
ahead of it that changes meanwhile (and moves to the end) shifts an unread one back past it,
never to be read; and a query pages through 10,000 results at most. The contacts sharing
the boundary millisecond are answered again and dropped by id. A page of nothing but that
millisecond (more contacts changed in it than a page holds) is read by id instead, then the
search goes on past it.

HubSpot shows a change in search some seconds after it is made ("changes made by other API
calls will take several seconds to propagate to the search indexing" [3p]), not necessarily
in the order the changes were made. A cursor at the latest change read skipped an earlier
change that search showed only after the read, for good. So the cursor stays ``lag`` (the
``search_lag_seconds`` setting) behind the time HubSpot gave its first answer of the run
(its ``Date``): the next run reads again what changed in that window, which the engine sends
nothing for if it is unchanged, and reads what search showed late.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

from adapters.hubspot._lookup import CONTACTS
from adapters.hubspot._related import next_after
from adapters.hubspot._scopes import CONTACTS_READ, needing
from connector.adapter import Page
from connector.errors import FatalRemoteError
from connector.http import SystemClient, answer_object
from connector.paging import PAGING_LOOP

__all__ = [
    "SEARCH",
    "PullCursor",
    "answered_millis",
    "changed_since",
    "decode_cursor",
    "latest_change",
]

SEARCH: Final = f"{CONTACTS}/search"

#: The property a search filters and sorts changes by; HubSpot sets it on every change.
MODIFIED: Final = "lastmodifieddate"


@dataclass(frozen=True)
class PullCursor:
    """What a HubSpot pull cursor holds (see the module docstring)."""

    since: int | None = None
    list_after: str | None = None

    def encode(self) -> str | None:
        values: dict[str, Any] = {"since": self.since, "list": self.list_after}
        kept = {key: value for key, value in values.items() if value is not None}
        return json.dumps(kept, separators=(",", ":")) if kept else None


def decode_cursor(text: str | None) -> PullCursor:
    """Read a stored cursor. A bare token (the list's ``after``, as cursors were before the
    search) resumes that list; anything unreadable reads every contact again, which is always
    safe: the engine sends nothing for what it already delivered."""
    if not text:
        return PullCursor()
    try:
        raw = json.loads(text)
    except ValueError:
        return PullCursor(list_after=text)
    if isinstance(raw, int):  # a bare numeric ``after`` token
        return PullCursor(list_after=text)
    if not isinstance(raw, dict):
        return PullCursor()
    since = raw.get("since")
    after = raw.get("list")
    return PullCursor(
        since=since if isinstance(since, int) and not isinstance(since, bool) else None,
        list_after=after if isinstance(after, str) and after else None,
    )


def modified_millis(record: dict[str, Any]) -> int | None:
    """A contact's ``lastmodifieddate`` as epoch milliseconds (``None``: unreadable)."""
    properties = record.get("properties")
    value = properties.get(MODIFIED) if isinstance(properties, dict) else None
    if not isinstance(value, str) or not value:
        value = record.get("updatedAt")
    if not isinstance(value, str) or not value:
        return None
    if value.isdecimal():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000 + 0.5)


def answered_millis(response: httpx.Response) -> int | None:
    """When HubSpot answered (its ``Date``, to the second) in epoch milliseconds; ``None``
    without a readable one. The first value where a front end added a second one."""
    values = response.headers.get_list("date")
    try:
        moment = parsedate_to_datetime(values[0]) if values else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


async def _search(
    client: SystemClient, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """The answer's contacts, its next ``after`` and when HubSpot answered
    (:func:`answered_millis`)."""
    with needing(CONTACTS_READ):
        response = await client.request("POST", SEARCH, json=body, bucket="search")
    # Not json_object: an answer it reads as {} (a front end's 200 HTML page) has no paging
    # either, and would end the read "complete" with the rest never read.
    answer = answer_object(
        response, system=client.system, method="POST", path=SEARCH, required=("results",)
    )
    records = [r for r in answer.get("results") or [] if isinstance(r, dict)]
    return records, next_after(answer), answered_millis(response)


async def latest_change(client: SystemClient) -> int | None:
    """The latest ``lastmodifieddate`` in the portal (``None``: no contact), read before a
    first read lists every contact: the next read searches from it, so a contact changed
    while the list was read is read again next time."""
    body = {
        "sorts": [{"propertyName": MODIFIED, "direction": "DESCENDING"}],
        "properties": [MODIFIED],
        "limit": 1,
    }
    records, _, _ = await _search(client, body)
    return modified_millis(records[0]) if records else None


async def changed_since(
    client: SystemClient,
    since: int,
    properties: Sequence[str],
    page_size: int,
    lag_ms: int = 0,
) -> AsyncIterator[Page]:
    """Yield pages of the contacts modified at or after ``since``, oldest change first, each
    with the cursor after it, to a complete last page.

    A change HubSpot has not yet shown in search when the read passes its time is read by
    the next run: no cursor passes ``lag_ms`` before HubSpot's first answer of this one (see
    the module docstring), nor goes back before ``since``.

    Raises:
        FatalRemoteError: HubSpot answered pages that do not move forward (a paging loop).
        RetryableError: a page answered with something that is not a list of contacts.
    """
    asked = [*properties, *([MODIFIED] if MODIFIED not in properties else [])]
    high = since
    floor = since
    past_floor = False  # the floor's millisecond is read whole: search after it
    at_floor: set[str] = set()  # ids read at the floor's millisecond
    shown: int | None = None  # the latest change search surely showed when the run began

    def after(high: int) -> str | None:
        """The cursor after what is read up to ``high``: at most ``shown``, never back."""
        bound = shown if shown is not None else high - lag_ms
        return PullCursor(since=max(since, min(high, bound))).encode()

    while True:
        operator = "GT" if past_floor else "GTE"
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": MODIFIED, "operator": operator, "value": str(floor)}]}
            ],
            "sorts": [{"propertyName": MODIFIED, "direction": "ASCENDING"}],
            "properties": asked,
            "limit": page_size,
        }
        records, following, answered = await _search(client, body)
        if shown is None and answered is not None:
            shown = answered - lag_ms
        fresh: list[dict[str, Any]] = []
        latest, at_latest = floor, at_floor
        for record in records:
            millis = modified_millis(record)
            if millis is None or millis < floor:
                fresh.append(record)  # answered, so read; it moves no watermark
                continue
            key = str(record.get("id"))
            if millis == floor and key in at_floor:
                continue  # the boundary's contacts, answered again
            if millis > latest:
                latest, at_latest = millis, set()
            fresh.append(record)
            if millis == latest:
                at_latest.add(key)
        high = max(high, latest)
        if following is None:
            yield Page(records=fresh, cursor=after(high), complete=True)
            return
        if latest > floor:
            floor, at_floor, past_floor = latest, at_latest, False
            yield Page(records=fresh, cursor=after(high))
            continue
        if past_floor:
            raise FatalRemoteError(client.system, "POST", SEARCH, 200, PAGING_LOOP)
        # A full page of the floor's millisecond alone: read the rest of it by id.
        yield Page(records=fresh, cursor=after(high))
        async for page in _one_millisecond(client, floor, asked, page_size, at_floor, after(high)):
            yield page
        past_floor = True


async def _one_millisecond(
    client: SystemClient,
    millis: int,
    asked: Sequence[str],
    page_size: int,
    read: set[str],
    cursor: str | None,
) -> AsyncIterator[Page]:
    """Yield the contacts modified in one millisecond that ``read`` does not name, by id
    (``hs_object_id`` after the last one read: no offset, no cap), adding them to ``read``."""
    last_id = 0
    while True:
        filters = [
            {"propertyName": MODIFIED, "operator": "EQ", "value": str(millis)},
            {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)},
        ]
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": list(asked),
            "limit": page_size,
        }
        records, following, _ = await _search(client, body)
        ids = [int(key) for r in records if (key := str(r.get("id"))).isdecimal()]
        fresh = [r for r in records if str(r.get("id")) not in read]
        read.update(str(r.get("id")) for r in records)
        yield Page(records=fresh, cursor=cursor)
        if following is None or not records:
            return
        if not ids or max(ids) <= last_id:
            raise FatalRemoteError(client.system, "POST", SEARCH, 200, PAGING_LOOP)
        last_id = max(ids)
