"""The Pipedrive sandbox's route handlers: v2 persons list, search, read, write and delete;
what an access copy reads beside a person (notes, deals, activities, label names).

Each handler takes a Starlette request and returns the response plus the records (person
bodies) it carried, so :mod:`adapters.pipedrive.sandbox` can log their field *names*. A
request Pipedrive would refuse raises :class:`Reject`. Auth, faults and rate limits are applied
around each call by :class:`~adapters.pipedrive.sandbox.PipedriveSandbox`, not here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.pipedrive._store import (
    BadRequest,
    Person,
    PersonStore,
    decode_position,
    encode_position,
    parse_rfc3339,
    validate_body,
)

__all__ = ["MAX_LIST_LIMIT", "MAX_SEARCH_LIMIT", "LinkedRoutes", "PersonRoutes", "Reject"]

MAX_LIST_LIMIT = 500
#: v2 ``searchPersons``: "If not provided, 100 items will be returned. Please note that a
#: maximum value of 500 is allowed." (as the list endpoints).
MAX_SEARCH_LIMIT = 500
SEARCH_FIELDS = frozenset({"custom_fields", "email", "notes", "phone", "name"})

Result = tuple[Response, list[Mapping[str, Any]]]


class Reject(Exception):
    """A request Pipedrive would refuse: its status, a fixed message, the records it carried."""

    def __init__(
        self, status: int, message: str, records: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.records = list(records)


def _ok(data: Any, additional: Mapping[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if additional is not None:
        body["additional_data"] = dict(additional)
    return JSONResponse(body)


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdecimal() or not 1 <= int(raw) <= maximum:
        raise Reject(400, f"Parameter {name} must be an integer from 1 to {maximum}")
    return int(raw)


def _truthy(raw: str | None) -> bool:
    return raw is not None and raw.strip().lower() in ("1", "true")


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise Reject(400, "Request body must be valid JSON") from exc


class PersonRoutes:
    """The person endpoints over one :class:`~adapters.pipedrive._store.PersonStore`.

    Args:
        store: the persons.
        now: epoch seconds now (the sandbox's wall clock).
        show_deleted: ``GET /persons/{id}`` shows a person marked deleted (``is_deleted:
            true``) instead of answering 404; see the sandbox module docstring.
        offset_cursors: ``GET /persons`` pages by position, not by key (see
            :meth:`~adapters.pipedrive._store.PersonStore.listing`).
        search_lag: seconds (read on each search) for which a person created or changed
            is not found by ``GET /persons/search`` (the lists show them at once).
    """

    def __init__(
        self,
        store: PersonStore,
        now: Callable[[], int],
        *,
        show_deleted: bool = False,
        offset_cursors: bool = False,
        search_lag: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.store = store
        self.now = now
        self.show_deleted = show_deleted
        self.offset_cursors = offset_cursors
        self.search_lag = search_lag

    def _person(self, request: Request) -> Person:
        raw = str(request.path_params.get("id", ""))
        if not raw.isdecimal():
            raise Reject(400, "Parameter id must be an integer")
        person = self.store.live(int(raw))
        if person is None:
            # Marked deleted answers 404 too: see the sandbox module docstring (UNVERIFIED).
            raise Reject(404, "Person not found")
        return person

    async def list_persons(self, request: Request) -> Result:
        """``GET /persons``: one page, ``additional_data.next_cursor`` for the next."""
        params = request.query_params
        limit = _int_param(request, "limit", 100, MAX_LIST_LIMIT)
        sort_by = params.get("sort_by", "id")
        direction = params.get("sort_direction", "asc")
        if sort_by not in ("id", "update_time", "add_time") or direction not in ("asc", "desc"):
            raise Reject(400, "Invalid sort parameters")
        try:
            since = params.get("updated_since")
            until = params.get("updated_until")
            cursor = params.get("cursor")
            after = decode_position(cursor) if cursor else None
            if after is not None and (
                len(after) != (1 if self.offset_cursors else 2)
                or not all(isinstance(v, int) and v >= 0 for v in after)
            ):
                raise BadRequest("Invalid cursor")
            page, next_cursor = self.store.listing(
                since=parse_rfc3339(since) if since else None,
                until=parse_rfc3339(until) if until else None,
                sort_by=sort_by,
                descending=direction == "desc",
                after=after,
                limit=limit,
                by_offset=self.offset_cursors,
            )
        except BadRequest as exc:
            raise Reject(400, str(exc)) from exc
        return _ok([p.to_json() for p in page], {"next_cursor": next_cursor}), []

    async def search(self, request: Request) -> Result:
        """``GET /persons/search``: hits as ``{result_score, item}``, e-mails as strings."""
        params = request.query_params
        term = params.get("term", "")
        exact = _truthy(params.get("exact_match"))
        if len(term.strip()) < (1 if exact else 2):
            raise Reject(400, "Search term must be at least 2 characters long")
        fields = [f for f in params.get("fields", ",".join(SEARCH_FIELDS)).split(",") if f]
        if not fields or any(f not in SEARCH_FIELDS for f in fields):
            raise Reject(400, "Invalid search fields")
        limit = _int_param(request, "limit", 100, MAX_SEARCH_LIMIT)
        start = 0
        cursor = params.get("cursor")
        if cursor:
            try:
                position = decode_position(cursor)
            except BadRequest as exc:
                raise Reject(400, str(exc)) from exc
            start = int(position[0]) if position and isinstance(position[0], int) else 0
        lag = self.search_lag()
        # Pipedrive's search index trails its writes; the lists read the persons themselves.
        indexed_before = math.floor(self.now() - lag) + 1 if lag > 0 else None
        hits = self.store.search(term, fields, exact, indexed_before=indexed_before)
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        items = [{"result_score": 1.0 if exact else 0.5, "item": p.search_item()} for p in page]
        next_cursor = encode_position([start + limit]) if more else None
        return _ok({"items": items}, {"next_cursor": next_cursor}), []

    async def get(self, request: Request) -> Result:
        """``GET /persons/{id}``; a person marked deleted only with ``show_deleted``."""
        raw = str(request.path_params.get("id", ""))
        held = self.store.persons.get(int(raw)) if self.show_deleted and raw.isdecimal() else None
        person = held if held is not None else self._person(request)
        return _ok(person.to_json()), []

    async def create(self, request: Request) -> Result:
        """``POST /persons``: ``name`` is required."""
        body = await _json_body(request)
        records: list[Mapping[str, Any]] = [body] if isinstance(body, dict) else []
        try:
            values = validate_body(body, creating=True)
        except BadRequest as exc:
            raise Reject(400, str(exc), records) from exc
        person = self.store.create(values, self.now())
        return _ok(person.to_json()), records

    async def patch(self, request: Request) -> Result:
        """``PATCH /persons/{id}``: the given fields replace the stored ones."""
        body = await _json_body(request)
        records: list[Mapping[str, Any]] = [body] if isinstance(body, dict) else []
        person = self._person(request)
        try:
            values = validate_body(body, creating=False)
        except BadRequest as exc:
            raise Reject(400, str(exc), records) from exc
        self.store.update(person, values, self.now())
        return _ok(person.to_json()), records

    async def delete(self, request: Request) -> Result:
        """``DELETE /persons/{id}``: marks deleted; purged 30 days later."""
        person = self._person(request)
        self.store.delete(person, self.now())
        return _ok({"id": person.id}), []

    async def merge(self, request: Request) -> Result:
        """v1 ``PUT /persons/{id}/merge`` with ``{"merge_with_id": <id>}``: the person
        ``{id}`` is merged into ``merge_with_id``, which is kept and answered
        (``{success, data: {id, ...}}``; the whole v1 answer is UNVERIFIED)."""
        body = await _json_body(request)
        merged = self._person(request)
        kept_id = body.get("merge_with_id") if isinstance(body, dict) else None
        if isinstance(kept_id, bool) or not isinstance(kept_id, int):
            raise Reject(400, "Parameter merge_with_id must be an integer")
        kept = self.store.live(kept_id)
        if kept is None:
            raise Reject(404, "Person not found")
        if kept is merged:
            raise Reject(400, "Cannot merge a person with itself")
        self.store.merge(merged, kept, self.now())
        return _ok(kept.to_json()), []


def _person_filter(request: Request) -> int | None:
    raw = request.query_params.get("person_id")
    if raw is None:
        return None
    if not raw.isdecimal():
        raise Reject(400, "Parameter person_id must be an integer")
    return int(raw)


class LinkedRoutes:
    """What Pipedrive keeps beside a person, as an access copy reads it: a person's notes
    (``GET /v1/notes``), deals and activities (``GET /v2/deals``, ``GET /v2/deals/archived``,
    ``GET /v2/activities``), leads (``GET /v1/leads``, ``GET /v1/leads/archived``), each
    filtered by ``person_id``, and the label names (``GET /v2/personFields``); and
    ``DELETE /v1/notes/{id}``, with which an erasure deletes the notes about the person.

    Notes are in API v1 only (the v2 SDK has no notes endpoint); they page by ``start`` and
    ``limit`` and say ``additional_data.pagination.more_items_in_collection``, as v1 lists
    do. Deals (both lists) and activities page by ``cursor`` as v2 persons do.
    """

    def __init__(self, store: PersonStore) -> None:
        self.store = store

    async def notes(self, request: Request) -> Result:
        """``GET /v1/notes?person_id=``: one page from ``start``."""
        raw = request.query_params.get("start", "0")
        if not raw.isdecimal():
            raise Reject(400, "Parameter start must be a non-negative integer")
        start, limit = int(raw), _int_param(request, "limit", 100, MAX_LIST_LIMIT)
        items = self.store.linked_of("notes", _person_filter(request))
        more = start + limit < len(items)
        pagination: dict[str, Any] = {
            "start": start,
            "limit": limit,
            "more_items_in_collection": more,
        }
        if more:
            pagination["next_start"] = start + limit
        return _ok(items[start : start + limit], {"pagination": pagination}), []

    async def delete_note(self, request: Request) -> Result:
        """``DELETE /v1/notes/{id}``: the note goes for good (whether Pipedrive keeps a
        deleted note restorable is UNVERIFIED); v1 answers ``data: true``."""
        raw = str(request.path_params.get("id", ""))
        if not raw.isdecimal():
            raise Reject(400, "Parameter id must be an integer")
        if not self.store.remove_linked("notes", int(raw)):
            raise Reject(404, "Note not found")
        return _ok(True), []

    async def leads(self, request: Request) -> Result:
        """``GET /v1/leads?person_id=``: one page from ``start`` of the leads not archived.
        The ``archived_status`` it once took is not heeded: Pipedrive no longer documents it
        since archived leads moved to their own list (whether it still heeds it is
        UNVERIFIED; the sandbox takes the strict reading)."""
        return _start_page(request, self._leads(request, archived=False))

    async def archived_leads(self, request: Request) -> Result:
        """``GET /v1/leads/archived?person_id=``: one page from ``start`` of the archived ones."""
        return _start_page(request, self._leads(request, archived=True))

    def _leads(self, request: Request, *, archived: bool) -> list[dict[str, Any]]:
        items = self.store.linked_of("leads", _person_filter(request))
        return [lead for lead in items if bool(lead.get("is_archived")) == archived]

    async def deals(self, request: Request) -> Result:
        """``GET /v2/deals?person_id=``: one page of the deals not archived,
        ``additional_data.next_cursor`` for the next. Since July 2025 Pipedrive leaves
        archived deals out of it [its changelog: "archived deals and leads will not be
        returned in existing endpoints"]."""
        return _cursor_page(request, self._deals(request, archived=False))

    async def archived_deals(self, request: Request) -> Result:
        """``GET /v2/deals/archived?person_id=``: one page of the archived deals, paged as
        the others (``limit``, ``cursor``: the parameters Pipedrive documents for it). That
        its answer has the shape of ``GET /v2/deals`` is UNVERIFIED (its reference shows
        none)."""
        return _cursor_page(request, self._deals(request, archived=True))

    def _deals(self, request: Request, *, archived: bool) -> list[dict[str, Any]]:
        items = self.store.linked_of("deals", _person_filter(request))
        return [deal for deal in items if bool(deal.get("is_archived")) == archived]

    async def activities(self, request: Request) -> Result:
        """``GET /v2/activities?person_id=``: one page, as deals."""
        return _cursor_page(request, self.store.linked_of("activities", _person_filter(request)))

    async def person_fields(self, request: Request) -> Result:
        """``GET /v2/personFields``: the fields the sandbox has, ``label_ids`` with its options."""
        labels = [{"id": i, "label": name} for i, name in sorted(self.store.labels.items())]
        fields = [
            _field("Name", "name", "varchar"),
            _field("Email", "emails", "varchar"),
            _field("Phone", "phones", "phone"),
            {**_field("Labels", "label_ids", "set"), "options": labels},
        ]
        return _cursor_page(request, fields, keyed=False)


def _start_page(request: Request, items: list[dict[str, Any]]) -> Result:
    """One page of a v1 list from ``start``, its pagination in ``additional_data`` itself,
    as Pipedrive's SDK models the leads lists' answer (``start``, ``limit``,
    ``more_items_in_collection``; no ``next_start``)."""
    raw = request.query_params.get("start", "0")
    if not raw.isdecimal():
        raise Reject(400, "Parameter start must be a non-negative integer")
    start, limit = int(raw), _int_param(request, "limit", 100, MAX_LIST_LIMIT)
    more = start + limit < len(items)
    paging = {"start": start, "limit": limit, "more_items_in_collection": more}
    return _ok(items[start : start + limit], paging), []


def _cursor_page(request: Request, items: list[dict[str, Any]], *, keyed: bool = True) -> Result:
    """One v2 page of ``items`` after the ``cursor``: by ``id`` when ``keyed``, else by
    position (fields have no numeric id in v2)."""
    limit = _int_param(request, "limit", 100, MAX_LIST_LIMIT)
    cursor = request.query_params.get("cursor")
    after = 0
    if cursor:
        try:
            position = decode_position(cursor)
        except BadRequest as exc:
            raise Reject(400, str(exc)) from exc
        if len(position) != 1 or not isinstance(position[0], int):
            raise Reject(400, "Invalid cursor")
        after = position[0]
    numbered = [(int(item["id"]) if keyed else n, item) for n, item in enumerate(items, 1)]
    rest = [(key, item) for key, item in numbered if key > after]
    page = rest[:limit]
    next_cursor = encode_position([page[-1][0]]) if len(rest) > limit and page else None
    return _ok([item for _, item in page], {"next_cursor": next_cursor}), []


def _field(name: str, code: str, kind: str) -> dict[str, Any]:
    """A standard person field in the v2 ``GetPersonFields`` item shape (a subset)."""
    return {
        "field_name": name,
        "field_code": code,
        "field_type": kind,
        "is_custom_field": False,
        "is_optional_response_field": False,
        "options": None,
    }
