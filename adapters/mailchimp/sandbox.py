"""A faithful local fake of the Mailchimp Marketing API 3.0 (audience members), as Starlette.

Where it matters to a client it behaves like Mailchimp: the same paths (under ``/3.0``), bodies
and status codes; HTTP basic auth with the API key as password; RFC 7807-style error bodies
(``type, title, status, detail, instance`` and ``errors[]`` for validation); ``PUT`` upserts,
``PATCH`` updates, ``DELETE`` *archives* (restorable) and ``delete-permanent`` removes the member
and forgets the address; ``search-members``; the account's audiences (``GET /lists``, and
one by id) and an audience's merge field definitions; member lists, a member's notes and
its activity feed paged by ``count``/``offset``; every answer to a ``GET`` cut to the dotted
paths its ``fields`` names; and the **10 simultaneous connections per account** limit: calls
in flight are counted (in on arrival, out when answered), and a call arriving while 10 are in
flight gets 429.

Member rules and the assumptions made where Mailchimp does not document its behaviour are in
:mod:`adapters.mailchimp._store`.

The request log holds method, path, status and body field *names* only (``merge_fields.FNAME``);
the ``query`` of a search is redacted. Paths hold subscriber hashes, never e-mails.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.mailchimp._store import Member, MemberStore, Problem
from adapters.mailchimp.payloads import problem_body, subscriber_hash
from adapters.mailchimp.settings import ACCOUNT_CONNECTIONS, PAGE_SIZE
from adapters.mailchimp.webhooks import SECRET_PARAM
from connector.sandboxkit import ResetMiddleware, SandboxBase, field_tree, record

__all__ = ["API_PREFIX", "MailchimpSandbox"]

API_PREFIX: Final = "/3.0"
AUDIENCE: Final = f"{API_PREFIX}/lists/{{list_id}}"
MEMBERS: Final = f"{AUDIENCE}/members"
MEMBER: Final = f"{MEMBERS}/{{subscriber_hash}}"
MERGE_FIELDS: Final = f"{AUDIENCE}/merge-fields"
NOTES: Final = f"{MEMBER}/notes"
ACTIVITY_FEED: Final = f"{MEMBER}/activity-feed"

#: A route handler: the response, and the bodies the request carried (for the log's names).
Handler = Callable[[Request], Awaitable[tuple[Response, list[Mapping[str, Any]]]]]


def _problem(problem: Problem) -> Response:
    body = problem_body(problem.status, problem.title, problem.detail, problem.errors)
    return JSONResponse(body, status_code=problem.status)


class _ConnectionGate:
    """Counts calls in flight for the account, refuses the 11th, then applies injected faults.

    Runs outside Starlette: Starlette answers an exception from a route with a 500, so a
    :class:`~connector.sandboxkit.ConnectionReset` from a fault must be raised out here.
    The injected latency is spent *inside* the in-flight window, so slow calls overlap as
    they do against the real service.
    """

    def __init__(self, sandbox: MailchimpSandbox, app: ASGIApp) -> None:
        self.sandbox = sandbox
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sandbox = self.sandbox
        sandbox.in_flight += 1
        sandbox.max_in_flight_seen = max(sandbox.max_in_flight_seen, sandbox.in_flight)
        try:
            if sandbox.in_flight > sandbox.max_connections:
                sandbox.rejected_429 += 1
                response = sandbox.too_many_requests()
            else:
                send = sandbox.answer_late(send)
                fault = await sandbox.before()  # raises ConnectionReset for a dropped call
                if fault is None:
                    await self.app(scope, receive, send)
                    return
                response = sandbox.fault_response(fault, Request(scope, receive))
            record(sandbox.log, Request(scope, receive), response)
            await response(scope, receive, send)
        finally:
            sandbox.in_flight -= 1


class MailchimpSandbox(SandboxBase):
    """Fake Mailchimp account: audiences and their members; meets ``SandboxLike``.

    Args:
        api_key: the key it accepts (the suffix after ``-`` is the data centre).
        list_ids: the account's audiences; ``add_person`` seeds the first.
        max_connections: simultaneous connections allowed (Mailchimp: 10 per account).
        wall_clock: epoch seconds for member timestamps.

    Attributes:
        store: the audiences and members.
        in_flight: calls being answered right now.
        max_in_flight_seen: the most calls ever in flight at once (tests assert the limit).
        rejected_429: calls refused for exceeding the connection limit.
        endpoints_used: ``"METHOD path-template"`` of every routed call, in order.
    """

    kind = "mailchimp"

    def __init__(
        self,
        *,
        api_key: str = "0123456789abcdef0123456789abcdef-us21",
        list_ids: Sequence[str] = ("a1b2c3d4e5", "f6e5d4c3b2"),
        max_connections: int = ACCOUNT_CONNECTIONS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.list_ids = tuple(list_ids)
        self.max_connections = max_connections
        self.store = MemberStore(self.list_ids, wall_clock)
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.rejected_429 = 0
        self.endpoints_used: list[str] = []

    # -- SandboxLike -----------------------------------------------------------------------

    def app(self) -> Any:
        """The ASGI app, behind the connection gate and the reset middleware."""
        routes = [
            self._route("GET", f"{API_PREFIX}/lists", self._list_audiences),
            self._route("GET", AUDIENCE, self._get_audience),
            self._route("GET", MERGE_FIELDS, self._list_merge_fields),
            self._route("GET", MEMBERS, self._list_members),
            self._route("GET", MEMBER, self._get_member),
            self._route("GET", NOTES, self._list_notes),
            self._route("GET", ACTIVITY_FEED, self._activity_feed),
            self._route("PUT", MEMBER, self._put_member),
            self._route("PATCH", MEMBER, self._patch_member),
            self._route("DELETE", MEMBER, self._archive_member),
            self._route("POST", f"{MEMBER}/actions/delete-permanent", self._delete_permanent),
            self._route("GET", f"{API_PREFIX}/search-members", self._search_members),
        ]
        return ResetMiddleware(_ConnectionGate(self, Starlette(routes=routes)))

    def credentials(self) -> dict[str, str]:
        """The API key, under the name the adapter's settings use."""
        return {"api_key": self.api_key}

    def add_person(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed a subscribed member; return its id (the subscriber hash).

        ``extra`` may hold ``list_id`` (default: the first audience), ``status`` and further
        merge fields by tag (``ADDRESS="..."``).
        """
        list_id = str(extra.pop("list_id", self.list_ids[0]))
        status = str(extra.pop("status", "subscribed"))
        merge_fields: dict[str, Any] = {"FNAME": first_name, "LNAME": last_name}
        if phone:
            merge_fields["PHONE"] = phone
        merge_fields.update(extra)
        return self.store.add(list_id, email, status, merge_fields).id

    def holds(self, email: str) -> bool:
        """Whether a live (not archived) member has this address on any audience."""
        return any(m.status != "archived" for m in self._members_of(email))

    def member_count(self) -> int:
        """Live (not archived) members, over every audience."""
        return sum(
            1
            for audience in self.store.audiences.values()
            for member in audience.members.values()
            if member.status != "archived"
        )

    def restorable(self, email: str) -> bool:
        """Whether an archived member exists that a ``PUT`` with a ``status`` would bring back."""
        return any(m.status == "archived" for m in self._members_of(email))

    def record_for(self, email: str) -> dict[str, Any] | None:
        """The first live member with this address, in Mailchimp's shape."""
        live = [m for m in self._members_of(email) if m.status != "archived"]
        return live[0].to_json() if live else None

    # -- sandbox-only helpers --------------------------------------------------------------

    def member(self, list_id: str, email: str) -> dict[str, Any] | None:
        """The member with this address on one audience (archived included), or ``None``."""
        found = self.store.audience(list_id).members.get(subscriber_hash(email))
        return found.to_json() if found is not None else None

    def add_note(
        self, email: str, text: str, *, list_id: str | None = None, created_by: str = "staff"
    ) -> int:
        """Staff write a note about the member with this address (default: the first
        audience); return the note's id."""
        chosen = list_id or self.list_ids[0]
        return self.store.add_note(chosen, subscriber_hash(email), text, created_by).id

    def add_activity(
        self, email: str, activity_type: str, *, list_id: str | None = None, **fields: Any
    ) -> None:
        """Mailchimp records an event of the member with this address (default: the first
        audience): a campaign's ``sent``, ``open``, ``click`` or ``bounce``, which the sandbox
        does not model itself."""
        chosen = list_id or self.list_ids[0]
        self.store.add_activity(chosen, subscriber_hash(email), activity_type, **fields)

    def require_merge_field(self, list_id: str, tag: str) -> None:
        """The audience's owner makes merge field ``tag`` required (e.g. "COMPANY")."""
        self.store.audience(list_id).required.add(tag)

    def pause_signups(self, email: str, paused: bool = True) -> None:
        """Mailchimp pauses (or, ``paused`` false, ends the pause of) the signups of an address
        that has signed up to a lot of lists very recently, account-wide (see ``_store``)."""
        member_hash = subscriber_hash(email)
        if paused:
            self.store.signups_paused.add(member_hash)
        else:
            self.store.signups_paused.discard(member_hash)

    def confirmations_to(self, email: str) -> int:
        """How many confirmation e-mails Mailchimp sent this address (see ``_store``)."""
        wanted = subscriber_hash(email)
        return sum(member_hash == wanted for _, member_hash in self.store.confirmations)

    def confirm(self, list_id: str, email: str) -> None:
        """The person clicks the confirmation e-mail's link: pending becomes subscribed."""
        found = self.store.audience(list_id).members.get(subscriber_hash(email))
        if found is None or found.status != "pending":
            raise ValueError("no pending member with that address on that audience")
        self.store.add_activity(list_id, found.id, "signup")
        found.status = "subscribed"

    def is_forgotten(self, list_id: str, email: str) -> bool:
        """Whether ``delete-permanent`` made this audience refuse the address."""
        return subscriber_hash(email) in self.store.audience(list_id).forgotten

    def webhook_delivery(
        self, event: str, email: str, *, list_id: str | None = None, new_email: str = ""
    ) -> bytes:
        """A form-encoded body as Mailchimp posts it for an audience event about ``email``."""
        fields: dict[str, str] = {
            "type": event,
            "fired_at": "2025-01-24 15:30:00",
            "data[list_id]": list_id or self.list_ids[0],
        }
        if event == "upemail":
            fields.update(
                {
                    "data[old_email]": email,
                    "data[new_email]": new_email,
                    "data[new_id]": subscriber_hash(new_email)[:10],
                }
            )
        else:
            fields.update({"data[email]": email, "data[id]": subscriber_hash(email)[:10]})
            if event == "unsubscribe":
                fields.update({"data[action]": "unsub", "data[reason]": "manual"})
        return urlencode(fields).encode()

    @staticmethod
    def webhook_url(base: str, secret: str) -> str:
        """The callback URL to register with Mailchimp: the secret rides in the query."""
        return f"{base}?{urlencode({SECRET_PARAM: secret})}"

    def _members_of(self, email: str) -> list[Member]:
        key = subscriber_hash(email)
        found = (a.members.get(key) for a in self.store.audiences.values())
        return [m for m in found if m is not None]

    # -- responses -------------------------------------------------------------------------

    def too_many_requests(self) -> Response:
        """Mailchimp's answer to a connection over the account's limit (no rate headers)."""
        body = problem_body(
            429,
            "Too Many Requests",
            f"You have exceeded the limit of {self.max_connections} simultaneous connections.",
        )
        return JSONResponse(body, status_code=429)

    def fault_response(self, status: int, request: Request) -> Response:
        """An injected failure, in Mailchimp's error shape."""
        if status == 429:
            return self.too_many_requests()
        if status == 403:
            # What Mailchimp may answer under heavy load: a bare 403, no problem document.
            return Response(b"", status_code=403)
        title = "Internal Server Error" if status >= 500 else "Bad Request"
        body = problem_body(status, title, "An unexpected internal error has occurred.")
        return JSONResponse(body, status_code=status)

    # -- plumbing --------------------------------------------------------------------------

    def _route(self, method: str, template: str, handler: Handler) -> Route:
        endpoint_name = f"{method} {template}"

        async def endpoint(request: Request) -> Response:
            self.endpoints_used.append(endpoint_name)
            denied = self._authenticate(request)
            if denied is not None:
                return record(self.log, request, _problem(denied))
            try:
                response, records = await handler(request)
            except Problem as problem:
                response, records = _problem(problem), []
            return record(self.log, request, response, records=records)

        return Route(template, endpoint, methods=[method])

    def _authenticate(self, request: Request) -> Problem | None:
        header = request.headers.get("authorization", "")
        if not header:
            return Problem(401, "API Key Missing", "Your request did not include an API key.")
        key = ""
        if header.lower().startswith("basic "):
            try:
                key = base64.b64decode(header[6:]).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return Problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        return None

    # -- handlers --------------------------------------------------------------------------

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise Problem(
                400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."
            ) from None
        if not isinstance(body, dict):
            raise Problem(400, "Invalid Resource", "The request body must be a JSON object.")
        return body

    async def _list_audiences(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /lists``: the account's audiences, paged by ``count`` (at most 1000) and
        ``offset`` as Mailchimp's collections are."""
        count, offset = _paging(request)
        ids = sorted(self.store.audiences)
        page = [{"id": list_id, "name": f"Audience {list_id}"} for list_id in ids]
        body = {"lists": page[offset : offset + count], "total_items": len(ids)}
        return _partial(request, body), []

    async def _get_audience(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /lists/{list_id}``: one audience of the account, or 404."""
        audience = self.store.audience(request.path_params["list_id"])
        body = {"id": audience.id, "name": f"Audience {audience.id}"}
        return _partial(request, body), []

    async def _list_merge_fields(
        self, request: Request
    ) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /lists/{list_id}/merge-fields``: the audience's merge field definitions, paged
        as a collection (``count`` 10 unless asked)."""
        count, offset = _paging(request)
        audience = self.store.audience(request.path_params["list_id"])
        definitions = audience.merge_fields()
        body = {
            "merge_fields": definitions[offset : offset + count],
            "list_id": audience.id,
            "total_items": len(definitions),
        }
        return _partial(request, body), []

    async def _list_members(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        count, offset = _paging(request)
        list_id = request.path_params["list_id"]
        members, total = self.store.page(list_id, count, offset, request.query_params.get("status"))
        body = {
            "members": [m.to_json() for m in members],
            "list_id": list_id,
            "total_items": total,
        }
        return _partial(request, body), []

    async def _get_member(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        params = request.path_params
        member = self.store.get(params["list_id"], params["subscriber_hash"])
        return _partial(request, member.to_json()), []

    async def _list_notes(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET .../members/{hash}/notes``: the member's notes, paged as a collection."""
        count, offset = _paging(request)
        params = request.path_params
        notes, total = self.store.notes(params["list_id"], params["subscriber_hash"], count, offset)
        member_hash = MemberStore.resolve_hash(params["subscriber_hash"])
        body = {
            "notes": notes,
            "list_id": params["list_id"],
            "email_id": member_hash,
            "total_items": total,
        }
        return _partial(request, body), []

    async def _activity_feed(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET .../members/{hash}/activity-feed``: the member's events, the newest first,
        paged by ``count``/``offset``; no ``total_items`` (see ``_store``)."""
        count, offset = _paging(request)
        params = request.path_params
        events = self.store.activity(params["list_id"], params["subscriber_hash"], count, offset)
        body = {
            "activity": events,
            "email_id": MemberStore.resolve_hash(params["subscriber_hash"]),
            "list_id": params["list_id"],
        }
        return _partial(request, body), []

    async def _put_member(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._body(request)
        params = request.path_params
        try:
            member = self.store.put(
                params["list_id"], params["subscriber_hash"], body, validate=_validates(request)
            )
        except Problem as problem:
            # The log still shows which fields were sent, even when Mailchimp refused them.
            return _problem(problem), [body]
        return JSONResponse(member.to_json()), [body]

    async def _patch_member(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._body(request)
        params = request.path_params
        member = self.store.patch(
            params["list_id"], params["subscriber_hash"], body, validate=_validates(request)
        )
        return JSONResponse(member.to_json()), [body]

    async def _archive_member(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        params = request.path_params
        self.store.archive(params["list_id"], params["subscriber_hash"])
        return Response(status_code=204), []

    async def _delete_permanent(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        params = request.path_params
        self.store.delete_permanent(params["list_id"], params["subscriber_hash"])
        return Response(status_code=204), []

    async def _search_members(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        query = request.query_params.get("query", "")
        if not query.strip():
            raise Problem(400, "Invalid Resource", "The query parameter is required.")
        exact, partial = self.store.search(query, request.query_params.get("list_id"))
        body = {
            "exact_matches": {
                "members": [m.to_json() for m in exact],
                "total_items": len(exact),
            },
            "full_search": {
                "members": [m.to_json() for m in partial],
                "total_items": len(partial),
            },
        }
        return _partial(request, body), []


def _partial(request: Request, body: dict[str, Any]) -> JSONResponse:
    """``body`` as Mailchimp answers a ``GET`` asking ``fields``: a comma-separated list of
    paths from the answer's root, sub-objects' fields named with dots (``id``,
    ``merge_fields.FNAME``, ``members.email_address``); each item of a list on the way is cut
    by the rest of the path. Only what is named is answered, and a path naming nothing the
    answer holds adds nothing. A whole object asked for wins over its parts. Without
    ``fields``, ``body`` whole."""
    wanted = field_tree(request.query_params.get("fields", "").split(","))
    return JSONResponse(_cut(body, wanted) if wanted else body)


def _cut(value: Any, wanted: dict[str, Any]) -> Any:
    """``value`` with the ``wanted`` tree of keys alone; a list's items cut alike."""
    if isinstance(value, list):
        return [_cut(item, wanted) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: value[key] if below is True else _cut(value[key], below)
        for key, below in wanted.items()
        if key in value
    }


def _validates(request: Request) -> bool:
    """Whether a member write is checked against the required merge fields."""
    return request.query_params.get("skip_merge_validation", "").lower() != "true"


def _paging(request: Request) -> tuple[int, int]:
    """A collection's ``count`` (10 unless asked, at most 1000) and ``offset``."""
    count = _integer(request, "count", 10)
    if count > PAGE_SIZE:
        raise Problem(400, "Invalid Resource", f"The count parameter may not exceed {PAGE_SIZE}.")
    return count, _integer(request, "offset", 0)


def _integer(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdecimal():
        raise Problem(400, "Invalid Resource", f"The {name} parameter must be an integer.")
    return int(raw)
