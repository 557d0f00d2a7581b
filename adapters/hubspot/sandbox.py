"""A faithful local fake of HubSpot CRM v3 contacts, as a Starlette app.

Where it matters to a client it behaves like HubSpot: the same paths, bodies and status codes;
bearer-token auth with HubSpot's error body; list paging by ``after``; batches of at most 100
with 207 multi-status when every input carries an ``objectWriteTraceId`` (else a 400 for the
whole batch), an input naming a property the portal lacks, or giving an enumeration a value
none of its options has (``INVALID_OPTION``), among its failures; the portal's
contact property definitions (type, whether an integration may write it, an enumeration's
options); the ``TEN_SECONDLY_ROLLING`` burst limit with HubSpot's 429 body and
``X-HubSpot-RateLimit-*`` headers; the separate search limit (4/s, no rate-limit headers);
``DELETE`` and ``batch/archive`` as *restorable* archives, which reads show only with the
``archived=true`` query flag and search never shows; and ``gdpr-delete`` as a permanent
deletion that blocklists the e-mail (which the API may still bring back, as HubSpot
documents; the fake counts it) and, by id, purges an archived contact.
Beside contacts it keeps what an access copy reads about one: the records associated with it
(notes, calls, e-mails, meetings, tasks, deals, companies, support tickets; v4 association
lists and v3 batch reads) and the e-mail subscription statuses of an address (communication
preferences v3),
each behind the scope HubSpot reads it with (403 ``MISSING_SCOPES`` for a token without it),
as the contacts are behind theirs.

The request log holds method, path, status and property *names* only: no values, no e-mails.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from email.utils import formatdate
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.hubspot._object_routes import (
    ASSOCIATIONS,
    OBJECT_BATCH_READ,
    OBJECT_PROPERTIES_ROUTE,
    SUBSCRIPTIONS,
    ObjectRoutes,
    needed_scopes,
)
from adapters.hubspot._routes import (
    CONTACTS,
    MAX_SEARCH_RESULTS,
    PROPERTIES,
    ContactRoutes,
    Handler,
    Reject,
    error_body,
)
from adapters.hubspot._scopes import CONTACTS_READ, CONTACTS_WRITE, SCHEMA_SCOPES
from adapters.hubspot._store import ContactStore
from adapters.hubspot.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, hubspot_uri, sign_v3
from connector.ratelimit import RateLimit, RollingWindow
from connector.sandboxkit import (
    JSONResponse,
    RecordedRequest,
    RequestLog,
    SandboxBase,
    record,
)

__all__ = ["MIGRATION_RETRY_AFTER", "HubSpotSandbox"]

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


#: HubSpot's answer to a call its token lacks a scope for (UNVERIFIED beyond the category
#: ``MISSING_SCOPES`` and the status, 403).
SCOPES_MESSAGE = (
    "This app hasn't been granted all required scopes to make this call. Read more about "
    "required scopes here: https://developers.hubspot.com/scopes."
)

#: The path prefix that holds an e-mail address (communication preferences by address).
_ADDRESS_IN_PATH = SUBSCRIPTIONS.split("{", 1)[0]


class _RequestLog(RequestLog):
    """The request log, holding the route's template where a path holds an e-mail address:
    the log keeps no personal data, whatever a call (or an injected fault) was."""

    def add(self, entry: RecordedRequest) -> None:
        if entry.path.startswith(_ADDRESS_IN_PATH):
            entry = replace(entry, path=SUBSCRIPTIONS)
        super().add(entry)


#: The ``Retry-After`` (seconds) of the 477 HubSpot answers while an account moves between
#: data-hosting locations [doc: error handling, "typically up to 24 hours"]. Its body is not
#: documented; the fake's says what happened, in HubSpot's error shape.
MIGRATION_RETRY_AFTER = 3600

#: The longest request target (path and query) answered; past it, 414. HubSpot documents 414
#: for a URI too long without a figure; 8 KB is the common front end's default. (A real
#: portal defines hundreds of contact properties: named in a query string, they pass it.)
MAX_URI_BYTES = 8192


class HubSpotSandbox(SandboxBase):
    """Fake HubSpot portal: CRM v3 contacts, search, gdpr-delete; meets ``SandboxLike``.

    Args:
        token: the private-app token the fake accepts.
        rate_limit: the burst limit (``None``: unlimited). HubSpot Professional is 190/10 s.
        search_rate_limit: the search limit (``None``: unlimited); HubSpot's is 4/s.
        clock: monotonic clock for the rate windows; tests pass a fake one they advance.
        extra_properties: custom contact properties the portal defines.
        enumerations: custom enumeration (dropdown) contact properties the portal defines,
            with their options' values, which its property list gives.
        scopes: the scopes the token was granted (``None``: every one, as the demo's and
            most tests' token). A call to a route that needs another (see
            :mod:`adapters.hubspot._scopes`) is answered HubSpot's 403 ``MISSING_SCOPES``:
            the contact routes too, which read with ``crm.objects.contacts.read`` and write
            (gdpr-delete included) with ``crm.objects.contacts.write`` [spec].
        search_cap: the most results one search query pages through (HubSpot's 10,000);
            tests set a few, to page past it without seeding ten thousand contacts.

    Attributes:
        store: the contacts, archive and blocklist.
        rejected_429: calls answered 429 by the rate limits.
        endpoints_used: ``"METHOD path-template"`` of every call, in order.
        daily_left: calls the portal has left today (``None``: no daily limit in play);
            at 0, every call is answered HubSpot's ``DAILY`` 429 until a test resets it.
    """

    kind = "hubspot"

    def __init__(
        self,
        *,
        token: str = "pat-sandbox",  # noqa: S107 (the fake's own token, not a secret)
        rate_limit: RateLimit | None = RateLimit(190, 10),  # noqa: B008 (frozen value)
        search_rate_limit: RateLimit | None = RateLimit(4, 1),  # noqa: B008 (frozen value)
        clock: Callable[[], float] = time.monotonic,
        extra_properties: Sequence[str] = (),
        enumerations: Mapping[str, Sequence[str]] | None = None,
        scopes: Collection[str] | None = None,
        search_cap: int = MAX_SEARCH_RESULTS,
    ) -> None:
        super().__init__(rate_limit=rate_limit, clock=clock)
        self.log = _RequestLog()
        self.set_rate_limit("search", search_rate_limit)
        self.search_cap = search_cap
        self.token = token
        self.scopes = None if scopes is None else set(scopes)
        self.store = ContactStore(extra_properties, enumerations)
        self.rejected_429 = 0
        self.daily_left: int | None = None
        self.endpoints_used: list[str] = []
        self._event_ids = itertools.count(1)

    # -- SandboxLike -------------------------------------------------------------------------

    def app(self) -> Any:
        """The ASGI app, wrapped so a fault can drop the connection."""
        contacts = ContactRoutes(self.store, self.search_cap)
        objects = ObjectRoutes(self.store)
        schema = [SCHEMA_SCOPES["contacts"]]
        routes = [
            self._route("GET", PROPERTIES, contacts.list_properties, needs=lambda _r: schema),
            self._route(
                "GET", OBJECT_PROPERTIES_ROUTE, objects.list_properties, needs=needed_scopes
            ),
            self._route("GET", ASSOCIATIONS, objects.associations, needs=needed_scopes),
            self._route("GET", SUBSCRIPTIONS, objects.subscription_statuses, needs=needed_scopes),
            self._route("GET", CONTACTS, contacts.list_contacts, needs=_reads),
            self._route("POST", CONTACTS, contacts.create, needs=_writes),
            self._route(
                "POST", f"{CONTACTS}/search", contacts.search, bucket="search", needs=_reads
            ),
            self._route("POST", f"{CONTACTS}/gdpr-delete", contacts.gdpr_delete, needs=_writes),
            self._route("POST", f"{CONTACTS}/batch/read", contacts.batch_read, needs=_reads),
            self._route("POST", f"{CONTACTS}/batch/create", contacts.batch_create, needs=_writes),
            self._route("POST", f"{CONTACTS}/batch/update", contacts.batch_update, needs=_writes),
            self._route("POST", f"{CONTACTS}/batch/upsert", contacts.batch_upsert, needs=_writes),
            self._route("POST", f"{CONTACTS}/batch/archive", contacts.batch_archive, needs=_writes),
            self._route("GET", f"{CONTACTS}/{{id}}", contacts.get, needs=_reads),
            self._route("PATCH", f"{CONTACTS}/{{id}}", contacts.patch, needs=_writes),
            self._route("DELETE", f"{CONTACTS}/{{id}}", contacts.delete, needs=_writes),
            # After every contact route: "contacts" would match its ``{objectType}``.
            self._route("POST", OBJECT_BATCH_READ, objects.batch_read, needs=needed_scopes),
        ]
        return self.serve(Starlette(routes=routes))

    def credentials(self) -> dict[str, str]:
        """The private-app token, under the name the adapter's settings use."""
        return {"token": self.token}

    def add_person(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed a live contact; ``extra`` are further property names and values."""
        properties = {"email": email, "firstname": first_name, "lastname": last_name}
        if phone:
            properties["phone"] = phone
        properties.update({name: "" if v is None else str(v) for name, v in extra.items()})
        existing = self.store.live(email, "email")
        if existing is not None:
            self.store.update(existing, properties)
            return str(existing.id)
        return str(self.store.create(properties).id)

    def add_associated(self, contact_id: str, kind: str, **properties: Any) -> str:
        """Seed a record of ``kind`` (``notes``, ``deals``, ...) associated with the contact;
        its id."""
        values = {name: "" if v is None else str(v) for name, v in properties.items()}
        return str(self.store.objects.add(kind, [int(contact_id)], values).id)

    def subscribe(
        self,
        email: str,
        name: str,
        status: str = "SUBSCRIBED",
        legal_basis: str | None = "CONSENT_WITH_NOTICE",
        explanation: str = "",
    ) -> None:
        """Seed the address's status for the e-mail subscription type ``name``."""
        self.store.objects.subscribe(email, name, status, legal_basis, explanation)

    def holds(self, email: str) -> bool:
        """Whether a live (not archived, not deleted) contact has this e-mail."""
        return self.store.live(email, "email") is not None

    def restorable(self, email: str) -> bool:
        """Whether an archived copy exists that HubSpot could restore (gdpr-delete leaves none)."""
        return self.store.archived(email, "email") is not None

    def record_for(self, email: str) -> dict[str, Any] | None:
        """The live contact in HubSpot's shape, with every property it has."""
        contact = self.store.live(email, "email")
        return contact.to_json(sorted(contact.properties)) if contact else None

    # -- sandbox-only helpers ----------------------------------------------------------------

    def contact_count(self) -> int:
        """Live contacts."""
        return self.store.count_live()

    def restore(self, email: str) -> bool:
        """Restore an archived contact, as HubSpot's recycle bin can within 90 days."""
        return self.store.restore(email)

    def merge(self, primary_id: str, merged_id: str) -> str:
        """Merge two live contacts, as a user does in HubSpot (or ``POST .../contacts/merge``
        with ``primaryObjectId`` and ``objectIdToMerge``); the id of the new record both
        became, which reads by either former id answer with (:meth:`ContactStore.merge`).

        Raises:
            KeyError: either id names no live contact.
        """
        primary, merged = self.store.live(primary_id), self.store.live(merged_id)
        if primary is None or merged is None or primary is merged:
            raise KeyError("merge needs two live contacts")
        return str(self.store.merge(primary, merged).id)

    def show_in_search_late(self, contact_id: str) -> None:
        """Keep the contact's latest change out of search until :meth:`show_in_search`, as
        HubSpot shows a change in search seconds after it, not always in order."""
        self.store.not_yet_searchable.add(int(contact_id))

    def show_in_search(self) -> None:
        """Let search show every change made so far."""
        self.store.not_yet_searchable.clear()

    def is_blocklisted(self, email: str) -> bool:
        """Whether gdpr-delete put this e-mail on the portal's blocklist."""
        return email.strip().lower() in self.store.blocklist

    def signed_privacy_deletion(
        self, secret: str, url: str, object_id: str | int, now_ms: int
    ) -> tuple[bytes, dict[str, str]]:
        """A ``contact.privacyDeletion`` delivery as HubSpot sends it, signed with v3.

        Returns:
            The raw body and the headers (lower-case names) to POST it to ``url`` with.
        """
        event = {
            "eventId": next(self._event_ids),
            "subscriptionId": 1,
            "portalId": 1,
            "appId": 1,
            "occurredAt": now_ms,
            "subscriptionType": "contact.privacyDeletion",
            "attemptNumber": 0,
            "objectId": int(object_id),
            "changeSource": "GDPR",
        }
        body = json.dumps([event]).encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign_v3(secret, "POST", hubspot_uri(url), body, now_ms),
            TIMESTAMP_HEADER: str(now_ms),
        }
        return body, headers

    # -- plumbing ----------------------------------------------------------------------------

    def _route(
        self,
        method: str,
        template: str,
        handler: Handler,
        bucket: str = "default",
        needs: Callable[[Request], Sequence[str]] | None = None,
    ) -> Route:
        """``handler`` behind the fake's auth, scopes, daily and burst limits, and log."""
        endpoint_name = f"{method} {template}"

        async def endpoint(request: Request) -> Response:
            self.endpoints_used.append(endpoint_name)
            target = request.url.path + ("?" + request.url.query if request.url.query else "")
            if len(target.encode()) > MAX_URI_BYTES:
                body = error_body("URI Too Long", "VALIDATION_ERROR")
                return record(self.log, request, JSONResponse(body, status_code=414))
            if request.headers.get("authorization") != f"Bearer {self.token}":
                body = error_body(AUTH_MESSAGE, "INVALID_AUTHENTICATION")
                return record(self.log, request, JSONResponse(body, status_code=401))
            missing = self._missing_scopes(needs(request) if needs else ())
            if missing:
                return record(self.log, request, _missing_scopes(missing))
            if self.daily_left is not None:
                if self.daily_left <= 0:
                    self.rejected_429 += 1
                    return record(self.log, request, _daily_limited())
                self.daily_left -= 1
            full = self.admit(bucket)
            if full is not None:
                self.rejected_429 += 1
                return record(self.log, request, self._rate_limited(bucket, full))
            try:
                response, records = await handler(request)
            except Reject as exc:
                body = error_body(exc.message, exc.category, **exc.extra)
                response, records = JSONResponse(body, status_code=exc.status), exc.records
            if bucket == "default":
                self._add_rate_headers(response)
            # HubSpot's answers carry the time they were given; a pull's cursor is held
            # behind it (adapters/hubspot/_changes.py). Served by uvicorn, it adds its own.
            response.headers.setdefault("Date", formatdate(usegmt=True))
            return record(self.log, request, response, records=records)

        return Route(template, endpoint, methods=[method])

    def _missing_scopes(self, needed: Sequence[str]) -> list[str]:
        granted = self.scopes
        return [] if granted is None else [scope for scope in needed if scope not in granted]

    def fault_response(self, status: int, request: Request) -> Response:
        """HubSpot's answer to an injected failure: its 429 (per bucket), its 477 with the
        migration's ``Retry-After``, or its error body."""
        bucket = "search" if request.url.path.endswith("/search") else "default"
        if status == 429:
            window = self.windows.get(bucket) or RollingWindow(RateLimit(190, 10))
            return self._rate_limited(bucket, window)
        if status == 477:
            body = error_body("Migration in progress", "MIGRATION_IN_PROGRESS")
            headers = {"Retry-After": str(MIGRATION_RETRY_AFTER)}
            return JSONResponse(body, status_code=status, headers=headers)
        category = "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR"
        body = error_body("internal error", category)
        return JSONResponse(body, status_code=status)

    def _rate_limited(self, bucket: str, window: RollingWindow) -> Response:
        if bucket == "search":
            # Search 429s carry no X-HubSpot-RateLimit-* headers (only the message says which).
            # The search policy's name is unverified; clients should key on the message, as
            # HubSpot's own SDKs do.
            return _limited("You have reached your secondly limit.", "SECONDLY")
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window.limit.per_seconds * 1000)),
            "X-HubSpot-RateLimit-Max": str(window.limit.requests),
            "X-HubSpot-RateLimit-Remaining": "0",
        }
        return _limited(
            "You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING", headers
        )

    def _add_rate_headers(self, response: Response) -> None:
        window = self.windows.get("default")
        if window is None:
            return
        response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(
            int(window.limit.per_seconds * 1000)
        )
        response.headers["X-HubSpot-RateLimit-Max"] = str(window.limit.requests)
        response.headers["X-HubSpot-RateLimit-Remaining"] = str(window.remaining(self.clock()))


def _reads(_request: Request) -> Sequence[str]:
    """What a contact read (list, read, batch/read, search) needs [spec]."""
    return (CONTACTS_READ,)


def _writes(_request: Request) -> Sequence[str]:
    """What a contact write (create, update, upsert, archive, gdpr-delete) needs [spec]."""
    return (CONTACTS_WRITE,)


def _missing_scopes(missing: Sequence[str]) -> Response:
    """HubSpot's 403 for a token without a scope the call needs."""
    body = error_body(
        SCOPES_MESSAGE,
        "MISSING_SCOPES",
        errors=[
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": list(missing)},
            }
        ],
        links={"scopes": "https://developers.hubspot.com/scopes"},
    )
    return JSONResponse(body, status_code=403)


def _daily_limited() -> Response:
    """HubSpot's answer once the portal's daily limit is spent (reference: its body)."""
    return _limited("You have reached your daily limit.", "DAILY")


def _limited(message: str, policy: str, headers: dict[str, str] | None = None) -> Response:
    """A 429 in HubSpot's shape for one of its rate-limit policies."""
    body = error_body(message, "RATE_LIMITS", errorType="RATE_LIMIT", policyName=policy)
    return JSONResponse(body, status_code=429, headers=headers)
