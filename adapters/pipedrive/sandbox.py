"""A faithful local fake of Pipedrive API v2 persons, as a Starlette app.

Where it matters to a client it behaves like Pipedrive (see ``reference/vendor-apis.md`` E'):

- the v2 paths under ``/api/v2``: ``GET|POST /persons``, ``GET /persons/search``,
  ``GET|PATCH|DELETE /persons/{id}``; bodies ``{success, data, additional_data}`` and errors
  ``{success: false, error, error_info, data, additional_data}``;
- person writes that carry ``name`` and no ``first_name``/``last_name`` (the v2 request
  models have neither), which a read shows split from ``name``;
- what an access copy reads beside a person: notes (``GET /api/v1/notes?person_id=``, API
  v1 paging), deals and activities (``GET /api/v2/deals|activities?person_id=``; archived
  deals at ``GET /api/v2/deals/archived?person_id=`` alone, as since July 2025), leads
  (``GET /api/v1/leads?person_id=``, those not archived, and ``GET
  /api/v1/leads/archived?person_id=``, the archived ones, as since July 2025), and the
  label names among the person fields (``GET /api/v2/personFields``); ``DELETE
  /api/v1/notes/{id}``, which an erasure deletes the notes about the person with. As in
  Pipedrive, a note names its author (a staff member's e-mail and name under ``user``) and
  an activity its attendees (each with their e-mail and name), other people's data;
- ``x-api-token`` auth (401 ``{success:false, error:"unauthorized access", errorCode:401}``);
- v1 ``PUT /api/v1/persons/{id}/merge`` (``{merge_with_id}``), which merges the person
  ``{id}`` into the one kept, and :meth:`PipedriveSandbox.merge_deliveries`: the two v2
  webhook deliveries Pipedrive sends of it;
- cursor paging (``limit`` at most 500, else 400) with ``updated_since``/``updated_until``
  and ``sort_by``/``sort_direction``; the next page from ``additional_data.next_cursor``,
  by key (the last person's sort value and id) or, with ``offset_cursors``, by position;
- search by e-mail with ``exact_match``; with ``search_lag`` set, a search does not find a
  person created or changed in the last that many seconds (Pipedrive's search index trails
  its writes), while ``GET /persons`` and ``GET /persons/{id}`` show them at once;
- with ``send_date``, a ``Date`` header on every answer, from the sandbox's wall clock (the
  clock ``add_time`` and ``update_time`` are in), as any HTTP server with a clock sends
  one; off by default, as in process (``httpx.ASGITransport``) nothing adds one, and the
  pull reads a second without a ``Date`` as over (:mod:`adapters.pipedrive._pull`);
- ``DELETE`` that only *marks* a person deleted; :meth:`PipedriveSandbox.purge` removes for
  good what was deleted 30 days before (the vendor's documented purge);
- the rolling 2 s burst limit per token and the separate search limit (10 per 2 s), with
  ``x-ratelimit-limit``/``-remaining``/``-reset`` on every response and 429 past them; an
  optional daily budget; and the 403 Cloudflare HTML page for a client that keeps sending
  after 429s, until it has stayed away for a while. The daily budget is in tokens, charged
  by kind of call (:data:`TOKEN_COST`), and comes back at midnight of the server's day
  (:data:`SERVER_TZ`, on the wall clock). No header tells what is left of it (Pipedrive
  documents none): once spent, every call is a 429 whose burst headers still show room;
- ``x-daily-requests-left`` on every response, as the docs define it: the requests left
  today (UTC) to the write endpoints of the daily write allowance
  (:data:`DAILY_WRITES`), counting ``POST``, ``PUT`` and ``PATCH`` (that v2's ``PATCH``
  counts is UNVERIFIED). Not enforced: the docs say only that Pipedrive "may start
  blocking" those who exceed it.

Choices on facts the reference leaves UNVERIFIED, made so the fake is strict rather than kind:

- a person marked deleted answers 404 to ``GET``, ``PATCH`` and ``DELETE`` and is left out of
  lists and search ("not returned by default"); real Pipedrive may still show it to ``GET``
  with ``is_deleted: true`` during the 30 days (v2's Person has the field; the reference
  says neither way), which ``show_deleted=True`` makes the sandbox do, and the adapter
  reads as held, in the bin;
- search calls count against the search window only, not also against the burst window;
- ``x-ratelimit-reset`` is whole seconds until the window has room again;
- Cloudflare's block lasts :data:`BLOCK_SECONDS` after the last call that met it (how long
  it lasts is not documented; each call sent into it keeps it up);
- unknown body fields are refused with 400;
- ``next_cursor`` of ``GET /persons`` is keyset-like (the next page starts after the last
  person read, wherever the others moved meanwhile); ``offset_cursors=True`` makes it a
  position instead, the other reading of the docs ("the first item on the next page");
- the search index's lag (``search_lag``) is how long it lags, not a sample of it: how long
  Pipedrive's does is UNVERIFIED (not documented). A person changed within it is not found
  at all, where Pipedrive's index may still find them under what they held before: strict,
  as a lookup that misses is what a client must survive;
- that the lists read live data (a person created is listed at once) is UNVERIFIED too.

The request log holds method, path, status and body field *names* only; the search ``term``
(an e-mail) is replaced before a call is recorded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from email.utils import formatdate
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.pipedrive import _routes
from adapters.pipedrive._store import (
    PURGE_AFTER_SECONDS,
    Person,
    PersonStore,
    lead_id,
    rfc3339,
)
from connector.ratelimit import RateLimit, RollingWindow
from connector.sandboxkit import SandboxBase, record

__all__ = [
    "API",
    "API_V1",
    "BLOCK_SECONDS",
    "DAILY_WRITES",
    "SERVER_TZ",
    "STAFF_USER",
    "TOKEN_COST",
    "PipedriveSandbox",
]

API = "/api/v2"
#: API v1, beside v2: notes and leads are listed there only.
API_V1 = "/api/v1"

#: Daily-budget tokens a call costs, by kind. The reference gives Pipedrive's v1 examples
#: ("get single 2, list 20, update 10, delete 6, ..., search 40") and says v2 endpoints are
#: cheaper, by how much it does not say (UNVERIFIED): the sandbox charges the v1 figures,
#: which keep their order (a search dearest, a list dearer than a single read, writes in
#: between). A create is charged as an update (UNVERIFIED).
TOKEN_COST: Final[Mapping[str, int]] = {
    "get": 2,
    "list": 20,
    "search": 40,
    "create": 10,
    "update": 10,
    "delete": 6,
}

#: The staff member who writes the sandbox's notes and organises its activities: Pipedrive
#: names the author of each (synthetic, like every value the sandbox holds).
STAFF_USER: Final[Mapping[str, Any]] = {
    "id": 1,
    "email": "verkoop@bedrijf.example",
    "name": "Vera Verkoop",
    "icon_url": None,
    "is_you": True,
}

#: How long Cloudflare's block stays up after the last call that met it, in seconds
#: (UNVERIFIED: the reference says only that the block comes). Shorter than the adapter's
#: ``BLOCKED_WAIT_SECONDS``, so a client that stays away as long finds it lifted.
BLOCK_SECONDS: Final = 60.0

#: The time zone of the "server's" midnight the daily budget comes back at. Which zone
#: Pipedrive means is UNVERIFIED (a client cannot know it); the sandbox's is UTC.
SERVER_TZ: Final[tzinfo] = UTC

#: The daily write allowance ``x-daily-requests-left`` counts down: "a maximum of 10 000
#: POST/PUT requests daily per user", reset at midnight UTC (Pipedrive's changelog, 2019).
DAILY_WRITES: Final = 10_000
#: The methods that allowance counts.
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})

ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
CLOUDFLARE_PAGE = (
    "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head>"
    "<body><h1>Sorry, you have been blocked</h1></body></html>"
)
#: Query parameters whose values can be personal data: only their names are logged.


def error_body(message: str, status: int) -> dict[str, Any]:
    """Pipedrive's error shape (the v1 error models of the SDK, kept by v2)."""
    return {
        "success": False,
        "error": message,
        "error_info": ERROR_INFO,
        "errorCode": status,
        "data": None,
        "additional_data": None,
    }


class _Window(RollingWindow):
    """A rolling window that also says when it next has room (for ``x-ratelimit-reset``)."""

    def reset_in(self, now: float) -> int:
        return math.ceil(self.wait_time(now)) if self.remaining(now) <= 0 else 0


Handler = Callable[[Request], Awaitable[tuple[Response, list[Mapping[str, Any]]]]]


class PipedriveSandbox(SandboxBase):
    """Fake Pipedrive company: API v2 persons and search; meets ``SandboxLike``.

    Args:
        token: the API token the fake accepts.
        rate_limit: the burst limit per rolling window (``None``: unlimited); Growth is 40/2 s.
        search_rate_limit: the search limit (``None``: unlimited); 10/2 s on every plan.
        daily_budget: tokens a day (``None``: no daily budget enforced). Each call is
            charged :data:`TOKEN_COST` of its kind; one is let through while any token is
            left (how Pipedrive treats a call dearer than what is left is UNVERIFIED), and
            the budget is whole again from the next midnight (:data:`SERVER_TZ`).
        block_after: consecutive 429s after which a client is answered Cloudflare's 403 HTML
            page instead (``None``: never).
        block_seconds: how long the block stays up after the last call that met it; then
            calls are answered again, and the 429s are counted afresh.
        clock: monotonic clock of the rate windows; tests pass one their sleep advances.
        wall_clock: epoch seconds for ``add_time``/``update_time``, deletion times and the
            daily budget's day.
        show_deleted: ``GET /persons/{id}`` shows a person marked deleted, with
            ``is_deleted: true``, until the purge (UNVERIFIED either way; default 404).
        offset_cursors: ``GET /persons`` hands out a ``next_cursor`` that is a position in
            the list, not the last person's sort key: a person updated or deleted on a page
            already read shifts the rest back by one (UNVERIFIED either way; default keyset).
        search_lag: seconds by which ``GET /persons/search`` trails writes: a person created
            or changed (``update_time``) within the last that many seconds of the wall clock
            is not found (default 0: found at once). Read on every search, so a test may set
            the attribute as it sets ``faults``; the lists are not affected.
        send_date: every answer carries a ``Date`` of the wall clock (default: none).

    Attributes:
        refused: ``"METHOD path-template"`` of the calls answered Pipedrive's JSON 403, as
            for an API user whose permission set leaves that list out (a test adds
            ``"GET /api/v1/leads"``); the call is still counted against the limits.
        store: the persons, live and marked deleted, and what is kept beside them.
        daily_left: tokens left today (``None``: no daily budget).
        writes_left: write requests left today of :data:`DAILY_WRITES`, as
            ``x-daily-requests-left`` says.
        rejected_429: calls answered 429 by the limits.
        blocked_403: calls answered with the Cloudflare page.
        endpoints_used: ``"METHOD path-template"`` of every call, in order.
    """

    kind = "pipedrive"

    def __init__(
        self,
        *,
        token: str = "pipedrive-sandbox-token",  # noqa: S107 (the fake's own token)
        rate_limit: RateLimit | None = RateLimit(40, 2),  # noqa: B008 (frozen value)
        search_rate_limit: RateLimit | None = RateLimit(10, 2),  # noqa: B008 (frozen value)
        daily_budget: int | None = None,
        block_after: int | None = 20,
        block_seconds: float = BLOCK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        show_deleted: bool = False,
        offset_cursors: bool = False,
        search_lag: float = 0.0,
        send_date: bool = False,
    ) -> None:
        super().__init__(clock=clock)
        self.show_deleted = show_deleted
        self.offset_cursors = offset_cursors
        self.search_lag = search_lag
        self.send_date = send_date
        for bucket, limit in (("default", rate_limit), ("search", search_rate_limit)):
            if limit is not None:
                self.windows[bucket] = _Window(limit)
        self.token = token
        self.wall_clock = wall_clock
        self.daily_budget = daily_budget
        self.daily_left = daily_budget
        self.writes_left = DAILY_WRITES
        self._writes_day = datetime.fromtimestamp(self.wall_clock(), UTC).date()
        self._budget_day = self._server_day()
        self.block_after = block_after
        self.block_seconds = block_seconds
        #: Until when (the rate windows' clock) Cloudflare's block is up, if it is.
        self._blocked_until: float | None = None
        self.store = PersonStore()
        self.rejected_429 = 0
        self.blocked_403 = 0
        self.endpoints_used: list[str] = []
        self.refused: set[str] = set()
        self._strikes = 0

    # -- SandboxLike -------------------------------------------------------------------------

    def app(self) -> Any:
        """The ASGI app, wrapped so a fault can drop the connection."""
        routes = _routes.PersonRoutes(
            self.store,
            self._now,
            show_deleted=self.show_deleted,
            offset_cursors=self.offset_cursors,
            search_lag=lambda: self.search_lag,
        )
        linked = _routes.LinkedRoutes(self.store)
        persons = f"{API}/persons"
        table = [
            self._route("GET", persons, routes.list_persons, cost="list"),
            self._route("POST", persons, routes.create, cost="create"),
            self._route("GET", f"{persons}/search", routes.search, "search", cost="search"),
            self._route("GET", f"{persons}/{{id}}", routes.get, cost="get"),
            self._route("PATCH", f"{persons}/{{id}}", routes.patch, cost="update"),
            self._route("DELETE", f"{persons}/{{id}}", routes.delete, cost="delete"),
            self._route("PUT", f"{API_V1}/persons/{{id}}/merge", routes.merge, cost="update"),
            self._route("GET", f"{API_V1}/notes", linked.notes, cost="list"),
            self._route("DELETE", f"{API_V1}/notes/{{id}}", linked.delete_note, cost="delete"),
            self._route("GET", f"{API}/deals", linked.deals, cost="list"),
            self._route("GET", f"{API}/deals/archived", linked.archived_deals, cost="list"),
            self._route("GET", f"{API_V1}/leads", linked.leads, cost="list"),
            self._route("GET", f"{API_V1}/leads/archived", linked.archived_leads, cost="list"),
            self._route("GET", f"{API}/activities", linked.activities, cost="list"),
            self._route("GET", f"{API}/personFields", linked.person_fields, cost="list"),
        ]
        return self.serve(Starlette(routes=table))

    def credentials(self) -> dict[str, str]:
        """The API token, under the name the adapter's settings use."""
        return {"api_token": self.token}

    def add_person(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed a live person (``extra``: further v2 person fields); return its id.

        Pipedrive keeps the name whole (``name``); a read shows it split again.
        """
        name = " ".join(p for p in (first_name, last_name) if p) or email.partition("@")[0]
        values: dict[str, Any] = {
            "name": name,
            "emails": [{"value": email, "primary": True, "label": "work"}],
            "phones": [{"value": phone, "primary": True, "label": "work"}] if phone else [],
        }
        values.update(extra)
        return str(self.store.create(values, self._now()).id)

    def holds(self, email: str) -> bool:
        """Whether a live (not marked deleted) person has this e-mail."""
        return bool(self.store.with_email(email))

    def restorable(self, email: str) -> bool:
        """Whether a person with this e-mail is marked deleted but still within its 30 days."""
        now = self._now()
        return any(
            p.deleted_at is not None and now - p.deleted_at < PURGE_AFTER_SECONDS
            for p in self.store.with_email(email, deleted=True)
        )

    def record_for(self, email: str) -> dict[str, Any] | None:
        """The live person in Pipedrive's v2 shape, or ``None``."""
        found = self.store.with_email(email)
        return found[0].to_json() if found else None

    # -- sandbox-only helpers ----------------------------------------------------------------

    def add_note(self, person_id: str, content: str, **extra: Any) -> int:
        """Seed a note about a person, as staff write one (v1 ``Note`` shape, a subset;
        ``extra``: further fields, such as the ``deal_id`` of a deal it is on too).

        Like Pipedrive's, the note names its author, a staff member: ``user_id`` and
        ``user`` with their e-mail and name (client-nodejs ``InlineResponse20036User``:
        "The Email of the Note creator"), and the person by ``person: {name}``.
        """
        stamp = rfc3339(self._now()).replace("T", " ").rstrip("Z")  # v1: "YYYY-MM-DD HH:MM:SS"
        person = self.store.persons.get(int(person_id))
        values = {
            "person_id": int(person_id),
            "content": content,
            "add_time": stamp,
            "update_time": stamp,
            "active_flag": True,
            "user_id": STAFF_USER["id"],
            "user": {k: v for k, v in STAFF_USER.items() if k != "id"},
            "person": {"name": person.values.get("name") if person else None},
            **extra,
        }
        return self.store.add_linked("notes", values)

    def add_deal(self, person_id: str, title: str, **extra: Any) -> int:
        """Seed a deal linked to a person (v2 deal shape, a subset: ``lost_reason`` is the
        staff's words for why a lost one was lost, ``None`` on another; ``extra``: further
        fields, ``is_archived=True`` for one in the archive, archived now unless
        ``archive_time`` says when)."""
        values = {
            "title": title,
            "person_id": int(person_id),
            "status": "open",
            "lost_reason": None,
            "is_archived": False,
            "archive_time": None,
            **extra,
        }
        stamped = self._stamped(values)
        if stamped["is_archived"] and stamped["archive_time"] is None:
            stamped["archive_time"] = stamped["add_time"]
        return self.store.add_linked("deals", stamped)

    def add_lead(self, person_id: str, title: str, **extra: Any) -> str:
        """Seed a lead linked to a person (v1 ``Lead`` shape, a subset; ``extra``: further
        fields, ``is_archived=True`` for one in the archive); return its id, a UUID."""
        values = {
            "title": title,
            "owner_id": STAFF_USER["id"],
            "creator_id": STAFF_USER["id"],
            "person_id": int(person_id),
            "organization_id": None,
            "label_ids": [],
            "value": None,
            "expected_close_date": None,
            "is_archived": False,
            "was_seen": True,
            "source_name": "Manually created",
            **extra,
        }
        return lead_id(self.store.add_linked("leads", self._stamped(values)))

    def add_activity(
        self, person_id: str, subject: str, *, attendees: Sequence[str] = (), **extra: Any
    ) -> int:
        """Seed an activity whose primary participant is a person (v2 shape, a subset).

        ``attendees``: the e-mail addresses of further persons invited to it (a meeting with
        the customer and their partner). Pipedrive lists each with their e-mail and name
        (v2 ``ActivityItemAttendeesInner``: ``email``, ``name``, ``status``,
        ``is_organizer``, ``person_id``, ``user_id``), beside the staff member organising
        it; the person of the activity is among them as well.
        """
        participants = [{"person_id": int(person_id), "primary": True}]
        invited = [self._attendee(person_id), *(self._attendee(e) for e in attendees)]
        organiser = {
            "email": STAFF_USER["email"],
            "name": STAFF_USER["name"],
            "status": "accepted",
            "is_organizer": True,
            "person_id": None,
            "user_id": STAFF_USER["id"],
        }
        values = {
            "subject": subject,
            "type": "call",
            "person_id": int(person_id),
            "participants": participants,
            "attendees": [organiser, *invited],
            "done": False,
            **extra,
        }
        return self.store.add_linked("activities", self._stamped(values))

    def _attendee(self, who: str) -> dict[str, Any]:
        """An activity's attendee: a person by id, or someone invited by e-mail (a person
        holding it, if any)."""
        if who.isdecimal():
            person = self.store.persons.get(int(who))
        else:
            person = next(iter(self.store.with_email(who)), None)
        email = person.emails[0] if person and person.emails else who
        return {
            "email": email,
            "name": person.values.get("name") if person else None,
            "status": "accepted",
            "is_organizer": False,
            "person_id": person.id if person else None,
            "user_id": None,
        }

    def add_label(self, label: str) -> int:
        """Add an option to the person field ``label_ids``; return its id."""
        label_id = max(self.store.labels, default=0) + 1
        self.store.labels[label_id] = label
        return label_id

    def person_count(self) -> int:
        """Live persons."""
        return sum(1 for p in self.store.persons.values() if p.deleted_at is None)

    def restore(self, email: str) -> bool:
        """Undo a deletion within the 30 days, as Pipedrive's support or UI can."""
        candidates: list[Person] = [
            p
            for p in self.store.with_email(email, deleted=True)
            if p.deleted_at is not None and self._now() - p.deleted_at < PURGE_AFTER_SECONDS
        ]
        if not candidates:
            return False
        self.store.restore(max(candidates, key=lambda p: p.deleted_at or 0), self._now())
        return True

    def merge(self, merged_id: str, kept_id: str) -> None:
        """Merge one person into another as a salesperson does in Pipedrive (no call logged)."""
        merged, kept = self.store.live(int(merged_id)), self.store.live(int(kept_id))
        if merged is None or kept is None or merged is kept:
            raise ValueError("both persons must be live, and two")
        self.store.merge(merged, kept, self._now())

    def merge_deliveries(self, merged_id: str, kept_id: str) -> list[bytes]:
        """The v2 webhook bodies Pipedrive sends of a merge: a ``delete`` of the person
        merged away whose ``meta`` carries ``merged_to_id`` (a string), and a ``change`` of
        the person kept [doc: webhooks v2 migration guide]. Their order, and ``meta``
        beyond ``action``, ``entity``, ``entity_id``, ``id`` and ``merged_to_id``, are
        UNVERIFIED. The kept person is the v2 shape this sandbox reads."""
        kept = self.store.persons[int(kept_id)]
        gone = self.store.persons[int(merged_id)]
        stamp = rfc3339(self._now())

        def body(action: str, person: Person, **meta: Any) -> bytes:
            head = {
                "action": action,
                "entity": "person",
                "entity_id": str(person.id),
                "id": f"{action}-{person.id}-{stamp}",
                "timestamp": stamp,
                "version": "2.0",
                **meta,
            }
            shown = person.to_json()
            data, previous = (None, shown) if action == "delete" else (shown, None)
            return json.dumps({"meta": head, "data": data, "previous": previous}).encode()

        return [body("delete", gone, merged_to_id=str(kept.id)), body("change", kept)]

    def purge(self, now: float | None = None) -> int:
        """Remove for good what was deleted 30 days or more before ``now``; return how many."""
        return self.store.purge(int(self.wall_clock() if now is None else now))

    # -- plumbing ----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.wall_clock())

    def _stamped(self, values: Mapping[str, Any]) -> dict[str, Any]:
        now = rfc3339(self._now())
        return {**values, "add_time": now, "update_time": now}

    def _server_day(self) -> date:
        return datetime.fromtimestamp(self.wall_clock(), SERVER_TZ).date()

    def _route(
        self,
        method: str,
        template: str,
        handler: Handler,
        bucket: str = "default",
        *,
        cost: str,
    ) -> Route:
        endpoint_name = f"{method} {template}"
        handled = self._handled(endpoint_name, handler, bucket, cost, method in WRITE_METHODS)

        async def endpoint(request: Request) -> Response:
            return self._dated(await handled(request))

        return Route(template, endpoint, methods=[method])

    def _handled(
        self, endpoint_name: str, handler: Handler, bucket: str, cost: str, write: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        """The answer to one call of ``endpoint_name``: auth, limits, refusals, the handler."""

        async def endpoint(request: Request) -> Response:
            self.endpoints_used.append(endpoint_name)
            logged = request  # record() keeps only names of personal query values
            if request.headers.get("x-api-token") != self.token:
                body = error_body("unauthorized access", 401)
                return record(self.log, logged, JSONResponse(body, status_code=401))
            refused = self._over_limit(bucket, TOKEN_COST[cost], write)
            if refused is not None:
                return record(self.log, logged, refused)
            if endpoint_name in self.refused:
                # Pipedrive's own 403 is JSON (Cloudflare's block page is HTML); its exact
                # message for a missing permission is UNVERIFIED.
                body = error_body("You do not have permission to perform this action", 403)
                return record(self.log, logged, JSONResponse(body, status_code=403))
            try:
                response, records = await handler(request)
            except _routes.Reject as exc:
                body = error_body(exc.message, exc.status)
                response, records = JSONResponse(body, status_code=exc.status), exc.records
            self._add_rate_headers(response, bucket)
            return record(self.log, logged, response, records=records)

        return endpoint

    def _over_limit(self, bucket: str, tokens: int, write: bool) -> Response | None:
        """Count one call costing ``tokens`` (a ``write`` counts against the daily write
        allowance too); the refusal to send if it is over a limit (else ``None``)."""
        if self._blocked():
            # Kept sending through 429s: Cloudflare answers before Pipedrive does.
            self.blocked_403 += 1
            return Response(CLOUDFLARE_PAGE, status_code=403, media_type="text/html")
        self._refill_at_midnight()
        if self.daily_left is not None and self.daily_left <= 0:
            # Refused before the burst window counts it: the window's headers show room.
            return self._rate_limited(bucket, burst=False)
        if self.admit(bucket) is not None:
            return self._rate_limited(bucket)
        self._strikes = 0
        if self.daily_left is not None:
            self.daily_left = max(0, self.daily_left - tokens)
        if write:
            self.writes_left = max(0, self.writes_left - 1)
        return None

    def _blocked(self) -> bool:
        """Whether Cloudflare's block answers this call. A block is for a while, not for
        good: once a client has stayed away for ``block_seconds`` it lifts, and its 429s
        count afresh; a call sent into it keeps it up."""
        if self.block_after is None:
            return False
        now = self.clock()
        if self._blocked_until is not None and now >= self._blocked_until:
            self._blocked_until = None
            self._strikes = 0
        if self._blocked_until is None and self._strikes < self.block_after:
            return False
        self._blocked_until = now + self.block_seconds
        return True

    def _refill_at_midnight(self) -> None:
        """The daily budget whole again once the server's day has turned, and the write
        allowance once the UTC day has."""
        today = self._server_day()
        if today != self._budget_day:
            self._budget_day = today
            self.daily_left = self.daily_budget
        utc_day = datetime.fromtimestamp(self.wall_clock(), UTC).date()
        if utc_day != self._writes_day:
            self._writes_day = utc_day
            self.writes_left = DAILY_WRITES

    def fault_response(self, status: int, request: Request) -> Response:
        """What an injected fault answers: a vendor-shaped 429 or error body."""
        bucket = "search" if request.url.path.endswith("/search") else "default"
        if status == 429:
            response = self._rate_limited(bucket)
        else:
            response = JSONResponse(error_body("Internal server error", status), status_code=status)
        return self._dated(response)

    def _dated(self, response: Response) -> Response:
        """``response`` with Pipedrive's ``Date`` (the wall clock), where ``send_date`` asks."""
        if self.send_date:
            response.headers["date"] = formatdate(self.wall_clock(), usegmt=True)
        return response

    def _rate_limited(self, bucket: str, *, burst: bool = True) -> Response:
        """A 429: of the burst window (``burst``: its headers say no room left, an injected
        one too), else of the spent daily budget (the window's headers as they stand)."""
        self.rejected_429 += 1
        self._strikes += 1
        # Pipedrive's exact 429 message is UNVERIFIED; clients must key on status and headers.
        response = JSONResponse(error_body("Request over limit", 429), status_code=429)
        self._add_rate_headers(response, bucket)
        if burst and "x-ratelimit-remaining" in response.headers:
            response.headers["x-ratelimit-remaining"] = "0"
        return response

    def _add_rate_headers(self, response: Response, bucket: str) -> None:
        window = self.windows.get(bucket)
        if isinstance(window, _Window):
            now = self.clock()
            response.headers["x-ratelimit-limit"] = str(window.limit.requests)
            response.headers["x-ratelimit-remaining"] = str(max(0, window.remaining(now)))
            response.headers["x-ratelimit-reset"] = str(window.reset_in(now))
        response.headers["x-daily-requests-left"] = str(self.writes_left)
