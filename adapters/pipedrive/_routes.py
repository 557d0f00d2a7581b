"""The Pipedrive sandbox's route handlers: v2 persons list, search, read, write and delete.

Each handler takes a Starlette request and returns the response plus the records (person
bodies) it carried, so :mod:`adapters.pipedrive.sandbox` can log their field *names*. A
request Pipedrive would refuse raises :class:`Reject`. Auth, faults and rate limits are applied
around each call by :class:`~adapters.pipedrive.sandbox.PipedriveSandbox`, not here.
"""

from __future__ import annotations

import json
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

__all__ = ["MAX_LIST_LIMIT", "MAX_SEARCH_LIMIT", "PersonRoutes", "Reject"]

MAX_LIST_LIMIT = 500
MAX_SEARCH_LIMIT = 100
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
    """

    def __init__(
        self, store: PersonStore, now: Callable[[], int], *, show_deleted: bool = False
    ) -> None:
        self.store = store
        self.now = now
        self.show_deleted = show_deleted

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
                len(after) != 2 or not all(isinstance(v, int) for v in after)
            ):
                raise BadRequest("Invalid cursor")
            page, next_cursor = self.store.listing(
                since=parse_rfc3339(since) if since else None,
                until=parse_rfc3339(until) if until else None,
                sort_by=sort_by,
                descending=direction == "desc",
                after=after,
                limit=limit,
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
        hits = self.store.search(term, fields, exact)
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
