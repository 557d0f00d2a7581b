"""The Shopify adapter: customers over the GraphQL Admin API, as a source and a DSR target.

What it does, by contract verb:

- ``pull``: ``customers(sortKey: UPDATED_AT, query: "updated_at:>='<since>'")`` paged by
  ``endCursor``. The cursor (opaque JSON) holds the ``since`` bound of the pull under way,
  the page cursor inside it and the newest ``updatedAt`` seen. A finished pull moves
  ``since`` to that newest time *minus* ``overlap_seconds``, because Shopify's
  ``updated_at`` filter may compare dates only (a community report; UNVERIFIED) and late
  writes can land just behind the newest one. Records re-read in the overlap are spotted by
  the engine's content hash and send nothing. A customer is read with the fields the
  mapping reads (``ask_only_for_paths``; see ``documents.py``), a page cut to Shopify's
  single-query cost ceiling.
- ``upsert`` and ``update``: not offered. Shopify is a source of customers here, so
  ``capabilities`` leave them out and a call is a :class:`~connector.errors.FatalRemoteError`.
- ``find``: the customers by exact e-mail (search, every page of its hits up to
  ``SEARCH_MOST_PAGES``, then an exact match: whether ``email:`` matches whole addresses or
  their words is UNVERIFIED) and the one the
  known GraphQL id names (read by id when the search did not return it), with every address
  the store keeps for them; plus each of their orders (name, date, total, line item titles,
  note, the details given at checkout, billing and shipping address); an address of
  another that a note, a tag or a checkout detail quotes reads ``[address left out]``
  (:mod:`adapters.shopify._copy`). Shopify serves orders older than 60 days only to an
  app granted ``read_all_orders``: when it served fewer than the customer's
  ``numberOfOrders``, the customer's record says so (:data:`ORDERS_UNREAD`) and a warning
  names the scope, so an access copy is never a partial history shown as whole.
- ``erase``: ``customerRequestDataErasure`` only, for the customers found by their id and
  e-mail alone. Shopify queues it and erases after its own waiting period, so the result
  is ``pending``. Never ``customerDelete``: it refuses
  customers with orders and is not Shopify's privacy route.
- webhooks: ``X-Shopify-Hmac-Sha256`` and the compliance topics (see ``webhooks.py``).

Access scopes: Shopify refuses a call the app's token lacks the scope for with
``ACCESS_DENIED`` (HTTP 200); each call says the scope it needs (``_scopes.py``: pulls and
lookups ``read_customers``, orders ``read_orders``, the erasure request
``write_customer_data_erasure``), and the error names it, so the operator knows what to grant.

API version: each answer names in ``X-Shopify-API-Version`` the version that served it. A
configured version Shopify has retired is answered by its oldest supported one, a schema
nobody tested here; the first answer of another version than ``api_version`` is logged as
a warning naming the system and both versions (``check --online`` reports it, from
:meth:`ShopifyAdapter.online_warnings`).

Throttling: Shopify answers a throttled query (by its own account) with HTTP 200 and
``errors[].extensions.code == "THROTTLED"``; some report 429 (UNVERIFIED). A 429 is retried
by the client, waiting what :func:`~adapters.shopify.settings.wait_hint` reads; a 200 is
retried here with the client's own retry policy, waiting what the cost figures say. Either
way no other call of the store's client is sent before then.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from adapters.shopify._copy import copy_addresses, customer_copy, order_copy
from adapters.shopify._scopes import ERASURE_SCOPE, READ_CUSTOMERS, READ_ORDERS, needing
from adapters.shopify.documents import (
    CUSTOMER_ORDERS,
    DEFAULT_QUERIES,
    ORDER_LINE_ITEMS,
    REQUEST_ERASURE,
    SEARCH_MOST_PAGES,
    SEARCH_PAGE_SIZE,
    customer_queries,
    mapping_selection,
)
from adapters.shopify.labels import COPY_LABELS
from adapters.shopify.sandbox import ShopifySandbox
from adapters.shopify.settings import (
    RESTORE_RATES,
    ShopifySettings,
    client_config,
    graphql_path,
    is_throttled,
    shopify_limits,
    throttle_wait,
)
from adapters.shopify.webhooks import customer_gid, parse_delivery, verify_delivery
from connector.access_labels import CopyLabels
from connector.adapter import (
    AdapterSpec,
    Capability,
    ErasureResult,
    OutboundRecord,
    Page,
    Subject,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
)
from connector.errors import (
    FatalRemoteError,
    RateLimitedError,
    RecordError,
    RemoteError,
    RetryableError,
)
from connector.http import SystemClient, is_machine_code, json_object
from connector.model import normalise_email
from connector.paging import PageTokens

__all__ = [
    "ERASURE_NOTE",
    "ORDERS_UNREAD",
    "SPEC",
    "ShopifyAdapter",
    "ShopifySettings",
    "decode_cursor",
]

log = logging.getLogger("klantsync.shopify")

#: The key of the customer's record that says how many of their orders Shopify did not serve.
ORDERS_UNREAD: Final = "ordersNotRead"

#: Why, as a code the access report states in the report's language (connector/access.py).
ORDERS_UNREAD_REASON: Final = "read_all_orders"

ERASURE_NOTE: Final = (
    "erasure queued by Shopify; Shopify holds it until its own waiting period passes; "
    "verification is scheduled for later (while pending it can be cancelled in Shopify "
    "with customerCancelDataErasure, and a retry here asks again once a day: a part cancelled on "
    "purpose is closed with dsr exempt); order facts (items, dates, totals) are kept by Shopify"
)

#: What a completed erasure did, for one that finds the customer gone since the request
#: first looked (``ErasureResult.erased_note``): Shopify carried out the erasure queued.
ERASED_NOTE: Final = (
    "erased by Shopify (customerRequestDataErasure); order facts (items, dates, totals) are "
    "kept by Shopify"
)

#: What an ``X-Shopify-API-Version`` holds (a quarterly release, or ``unstable``).
_VERSION_FORM: Final = re.compile(r"\d{4}-\d{2}|unstable")

#: What a read of the subject's customers reads of each (see ``_customers_for``).
Reads = Literal["held", "synced", "ids"]

#: Top-level GraphQL error codes worth another try (Shopify's own transient failures).
_RETRYABLE_CODES: Final = frozenset({"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT"})


@dataclass(frozen=True)
class PullCursor:
    """Where a pull stands.

    Attributes:
        since: lower bound of ``updatedAt`` for this pull (``None``: every customer).
        after: Shopify's ``endCursor`` of the last page delivered in this pull, if any.
        newest: the newest ``updatedAt`` seen so far in this pull (ISO 8601, UTC).
    """

    since: str | None = None
    after: str | None = None
    newest: str | None = None

    def encode(self) -> str:
        """The opaque text the engine stores."""
        return json.dumps(
            {"since": self.since, "after": self.after, "newest": self.newest},
            separators=(",", ":"),
        )


def decode_cursor(cursor: str | None) -> PullCursor:
    """Read a stored cursor; an unreadable one starts over (a full pull loses nothing)."""
    if not cursor:
        return PullCursor()
    try:
        raw = json.loads(cursor)
    except ValueError:
        return PullCursor()
    if not isinstance(raw, dict):
        return PullCursor()
    since, after, newest = (raw.get(k) for k in ("since", "after", "newest"))
    return PullCursor(
        since=since if _parse_time(since) is not None else None,
        after=after if isinstance(after, str) and after else None,
        newest=newest if _parse_time(newest) is not None else None,
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two ISO times, keeping the text of the one chosen."""
    ta, tb = _parse_time(a), _parse_time(b)
    if ta is None:
        return b if tb is not None else None
    if tb is None or ta >= tb:
        return a
    return b


def _search_value(text: str) -> str:
    """A value quoted for Shopify's search syntax, so ``:`` or spaces cannot change the query."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: GraphQL's validation codes, as Shopify sends them: camel case with a capital inside
#: (``undefinedField``, ``missingRequiredArguments``), which a mapping's wrong path is told by.
_CAMEL_CODE: Final = re.compile(r"[a-z]+(?:[A-Z][a-z]+)+")

#: Shopify's codes of one word, which the machine-code rule takes for a name and drops.
_ONE_WORD_CODES: Final = frozenset({"THROTTLED", "BLANK", "INVALID", "TAKEN"})


def _code(value: Any) -> str | None:
    """A code (``THROTTLED``, ``DOES_NOT_EXIST``, ``undefinedField``), never free text.

    Held to the rule of every other vendor's error category (:func:`is_machine_code`): a
    code where Shopify's place for one holds a lone word (a name) or digits (a phone
    number) is someone's data, and went into the error, its dead letter and the log.
    """
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    if is_machine_code(value) or _CAMEL_CODE.fullmatch(value) or value in _ONE_WORD_CODES:
        return value
    return None


def _count(value: Any) -> int | None:
    """An ``UnsignedInt64`` count, which Shopify sends as a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def _error_code(body: Mapping[str, Any]) -> str:
    """The first code of a GraphQL ``errors`` list; never its message, which can echo input."""
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors:
            extensions = error.get("extensions") if isinstance(error, dict) else None
            if isinstance(extensions, dict) and (code := _code(extensions.get("code"))):
                return code
    return "GRAPHQL_ERROR"


class ShopifyAdapter:
    """Shopify customers as the :class:`~connector.adapter.Adapter` contract asks.

    Args:
        client: the store's HTTP client (base URL ``https://<shop>.myshopify.com``).
        settings: the store's validated settings.

    Attributes:
        last_cost: ``extensions.cost`` of the last answer, for status output and tests.
        asked_fields: the top-level customer fields reads ask for, once the mapping's
            paths are given (:meth:`ask_only_for_paths`); ``None`` before.
    """

    kind: str = "shopify"
    capabilities: frozenset[Capability] = frozenset({"pull", "find", "erase", "webhooks"})
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: Each order found comes with what was bought, its total, its note, the details given
    #: at checkout and its addresses.
    copy_categories: frozenset[str] = frozenset({"orders", "address", "notes"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS

    def __init__(self, client: SystemClient, settings: ShopifySettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = shopify_limits(settings)
        self.path = graphql_path(settings)
        self.last_cost: dict[str, Any] | None = None
        self.asked_fields: frozenset[str] | None = None
        self._queries = DEFAULT_QUERIES
        self._versions_told: set[str] = set()
        self._scope_told = False

    def ask_only_for_paths(self, paths: Mapping[str, str]) -> None:
        """Read customers with the fields the mapping reads: ``paths`` (each with the
        mapping key that names it) become the selection of pulls and targeted syncs, so a
        field added to the mapping is read from the next run on, and none it does not read
        (the staff's note, tags) leaves Shopify. Access and erasure read what the shop
        keeps besides.

        Raises:
            ConfigError: a path that cannot be a Shopify field (a part of it is no GraphQL
                name), naming the mapping file and its key.
        """
        fields = mapping_selection(paths, self.settings.mapping)
        self._queries = customer_queries(fields)
        self.asked_fields = frozenset(self._queries.fields)

    # -- the one endpoint --------------------------------------------------------------------

    async def _graphql(
        self, document: str, variables: Mapping[str, Any], *, needs: str
    ) -> dict[str, Any]:
        """Send one GraphQL call that needs the access scope ``needs``; return its ``data``.

        Shopify's refusal for a scope the app lacks (``ACCESS_DENIED``) is raised naming
        ``needs``: the code alone left the operator guessing what to grant.

        A throttled or transient answer (HTTP 200 with ``errors``) is retried here with the
        client's retry policy: the client cannot see errors inside a 200. A throttled one
        holds back the client's other calls too (:meth:`SystemClient.hold`), until the
        bucket holds what the query asked for.

        Raises:
            RateLimitedError: still throttled when the retries ran out.
            RetryableError: Shopify's transient failure, retries exhausted.
            FatalRemoteError: any other GraphQL error (by code only), or no ``data``.
        """
        with needing(needs):
            return await self._send(document, variables)

    async def _send(self, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`_graphql`'s call, retried while Shopify throttles it or fails for a time."""
        policy = self.client.retry
        attempt = 0
        while True:
            attempt += 1
            response = await self.client.request(
                "POST", self.path, json={"query": document, "variables": dict(variables)}
            )
            self._note_version(response.headers.get("x-shopify-api-version", ""))
            body = json_object(response)
            extensions = body.get("extensions")
            cost = extensions.get("cost") if isinstance(extensions, dict) else None
            self.last_cost = cost if isinstance(cost, dict) else self.last_cost
            if not body.get("errors"):
                data = body.get("data")
                if not isinstance(data, dict):
                    raise FatalRemoteError(
                        self.client.system, "POST", self.path, response.status_code, "NO_DATA"
                    )
                return data
            error = self._error(response.status_code, body)
            if isinstance(error, RateLimitedError) and error.wait_seconds:
                # The bucket is the app's, not this call's: the other calls in flight wait
                # for it to refill too, rather than each be sent into it and be throttled.
                self.client.hold(error.wait_seconds)
            if (
                not isinstance(error, RetryableError)
                or attempt >= policy.attempts
                or not policy.waits_out(error)  # never retried before the bucket has refilled
            ):
                raise error
            self.client.stats.retries += 1
            await policy.sleep(policy.backoff(attempt, error))

    def _note_version(self, served: str) -> None:
        """Warn, once per version, when the answer came from another API version than the
        configured one: Shopify retired it and fell forward, unasked and unannounced."""
        served = served.strip()
        configured = self.settings.api_version
        if not served or served == configured or served in self._versions_told:
            return
        if not _VERSION_FORM.fullmatch(served):
            return  # not a version (a proxy's header?): nothing worth repeating in a log
        self._versions_told.add(served)
        log.warning(
            "%s",
            self._version_warning(served),
            extra={"system": self.client.system, "configured": configured, "served": served},
        )

    def _version_warning(self, served: str) -> str:
        return (
            f"{self.client.system}: Shopify answered with API version {served}, not the "
            f"configured {self.settings.api_version}: set api_version to a version Shopify "
            "supports"
        )

    def online_warnings(self) -> list[str]:
        """What the calls made so far found for the operator to act on, which ``check
        --online`` reports: each other API version Shopify answered with (logged besides,
        once, for a daemon's journal)."""
        return [self._version_warning(served) for served in sorted(self._versions_told)]

    def _error(self, status: int, body: Mapping[str, Any]) -> RemoteError:
        system, path = self.client.system, self.path
        if is_throttled(body):
            self.client.note_rate_limited()
            wait = throttle_wait(body, RESTORE_RATES[self.settings.plan])
            return RateLimitedError(system, "POST", path, status, "THROTTLED", wait)
        code = _error_code(body)
        if code in _RETRYABLE_CODES:
            return RetryableError(system, "POST", path, status, code)
        return FatalRemoteError(system, "POST", path, status, code)

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of customers updated since the cursor's bound, oldest change first.

        Every page's cursor resumes after that page; the last page's cursor starts the next
        pull at the newest ``updatedAt`` seen minus the overlap, and never before the bound
        this pull started from, so the cursor only moves forward.

        Raises:
            FatalRemoteError: Shopify handed back a page cursor already used in this pull,
                or said a page has more after it without a cursor to it.
        """
        state = decode_cursor(cursor)
        tokens = PageTokens(self.client.system, "POST", self.path, first=state.after)
        query = f"updated_at:>='{state.since}'" if state.since else None
        while True:
            # A selection of many objects costs more a node: the page is cut to fit the
            # single-query ceiling, which Shopify would refuse outright.
            first = min(self.limits.page_size, self._queries.most_per_page)
            variables = {"first": first, "after": state.after, "query": query}
            data = await self._graphql(self._queries.page, variables, needs=READ_CUSTOMERS)
            connection = data.get("customers")
            if not isinstance(connection, dict):
                raise FatalRemoteError(self.client.system, "POST", self.path, 200, "NO_CUSTOMERS")
            records = [
                node
                for node in connection.get("nodes") or []
                if isinstance(node, dict) and isinstance(node.get("id"), str)
            ]
            newest = state.newest
            for record in records:
                newest = _later(newest, record.get("updatedAt"))
            info = connection.get("pageInfo")
            info = info if isinstance(info, dict) else {}
            end = info.get("endCursor")
            if info.get("hasNextPage") is True:
                if not isinstance(end, str) or not end:
                    # More to come and no way to it: taken as the last page, the bound
                    # moved past every customer on the pages not read, for good.
                    raise FatalRemoteError(
                        self.client.system, "POST", self.path, 200, "NO_END_CURSOR"
                    )
                tokens.follow(end)
                state = PullCursor(since=state.since, after=end, newest=newest)
                yield Page(records=records, cursor=state.encode())
                continue
            done = PullCursor(since=self._next_since(state.since, newest))
            yield Page(records=records, cursor=done.encode(), complete=True)
            return

    def _next_since(self, since: str | None, newest: str | None) -> str | None:
        moment = _parse_time(newest)
        if moment is None:
            return since  # nothing seen: the bound stays where it was
        reach_back = _format_time(moment - timedelta(seconds=self.settings.overlap_seconds))
        return _later(since, reach_back)

    # -- upsert ------------------------------------------------------------------------------

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Not offered: Shopify is a source here (``capabilities`` has no ``"upsert"``).

        Raises:
            FatalRemoteError: always, before anything is sent.
        """
        raise FatalRemoteError(self.client.system, "POST", self.path, None, "UPSERT_NOT_SUPPORTED")

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Not offered either: klantsync never writes to Shopify (``capabilities``).

        Raises:
            FatalRemoteError: always, before anything is sent.
        """
        raise FatalRemoteError(self.client.system, "POST", self.path, None, "UPDATE_NOT_SUPPORTED")

    # -- find --------------------------------------------------------------------------------

    async def _by_email(self, email: str, reads: Reads = "held") -> list[dict[str, Any]]:
        """The customers whose e-mail is ``email`` (as subjects are told apart), every page
        of the search read.

        The search's pages are read with each hit's id and e-mail alone (``"ids"``): where
        ``email:`` matches an address's words, its hits are other people's customers, whose
        note, address book and spending an access request has no business reading. Each
        exact match is then read by id with what ``reads`` asks for.

        Raises:
            RecordError: the search found more than :data:`SEARCH_MOST_PAGES` pages of
                customers (``SEARCH_TOO_BROAD``): the customer may be on a page not read, and
                an answer from the pages read could say "nobody" of someone the shop holds.
            FatalRemoteError: Shopify said a page has more after it without a new cursor.
        """
        wanted = normalise_email(email)
        if not wanted:
            return []
        search = self._queries.ids_search
        query = f"email:{_search_value(email.strip())}"
        tokens = PageTokens(self.client.system, "POST", self.path)
        found: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(SEARCH_MOST_PAGES):
            variables = {"first": SEARCH_PAGE_SIZE, "after": after, "query": query}
            data = await self._graphql(search, variables, needs=READ_CUSTOMERS)
            connection = data.get("customers")
            connection = connection if isinstance(connection, dict) else {}
            # Search may match words, not whole addresses: keep exact e-mail matches only, so
            # an@x.nl is never mistaken for jan@x.nl, nor strasse@ (another subject) for
            # straße@, nor jan@x.nl.evil for jan@x.nl.
            found += [
                node
                for node in connection.get("nodes") or []
                if isinstance(node, dict)
                and isinstance(node.get("id"), str)
                and isinstance(node.get("email"), str)
                and normalise_email(node["email"]) == wanted
            ]
            info = connection.get("pageInfo")
            info = info if isinstance(info, dict) else {}
            if info.get("hasNextPage") is not True:
                if reads == "ids":
                    return found
                read = [await self._by_id(node["id"], reads) for node in found]
                # One gone, or given another address, between the search and the read is
                # not (or no longer) the subject's customer by this address.
                return [
                    node
                    for node in read
                    if node is not None
                    and isinstance(node.get("email"), str)
                    and normalise_email(node["email"]) == wanted
                ]
            end = info.get("endCursor")
            if not isinstance(end, str) or not end:
                # More to come and no way to it: the customer may be among them.
                raise FatalRemoteError(self.client.system, "POST", self.path, 200, "NO_END_CURSOR")
            after = tokens.follow(end)
        # Counts only: the address is the subject's business, not the log's.
        log.warning(
            "an e-mail search found more customers than klantsync reads",
            extra={"system": self.client.system, "pages_read": SEARCH_MOST_PAGES},
        )
        raise RecordError(self.client.system, "POST", self.path, 200, "SEARCH_TOO_BROAD")

    async def _by_id(self, external_id: str | None, reads: Reads = "held") -> dict[str, Any] | None:
        gid = customer_gid(external_id)
        if gid is None:
            return None  # not a Shopify customer id: it cannot address anyone here
        queries = self._queries
        document = {
            "held": queries.customer_by_id,
            "synced": queries.person_by_id,
            "ids": queries.ids_by_id,
        }[reads]
        data = await self._graphql(document, {"id": gid}, needs=READ_CUSTOMERS)
        node = data.get("customer")
        return node if isinstance(node, dict) and isinstance(node.get("id"), str) else None

    async def _customers_for(self, subject: Subject, reads: Reads = "held") -> list[dict[str, Any]]:
        """The subject's customer nodes, read with (``reads``) everything the shop keeps on
        them (``"held"``: their address book, for access), as a pull reads them
        (``"synced"``: a targeted sync reads no more than it syncs), or with their id and
        e-mail alone (``"ids"``: what an erasure needs to name them)."""
        matches = await self._by_email(subject.email, reads)
        # Another subject's customer (Subject.spare), found by the address, is neither read
        # nor erased.
        customers = [c for c in matches if str(c["id"]) not in subject.spare]
        gid = customer_gid(subject.external_id)
        if gid is None or any(c["id"] == gid for c in matches):
            return customers  # no id known, or the search returned its customer already
        # The identity map's id names the person's own customer, whose Shopify e-mail may
        # have changed while the address now finds someone else (another subject's, a second
        # customer a checkout made): it is read beside them, not only when they are nobody.
        own = await self._by_id(gid, reads)
        return customers if own is None else [own, *customers]

    async def _orders(self, customer_id: str) -> tuple[list[dict[str, Any]], int | None]:
        """The customer's orders Shopify serves, and how many it counts (``None``: unknown)."""
        orders: list[dict[str, Any]] = []
        counted: int | None = None
        after: str | None = None
        seen: set[str] = set()
        while True:
            # The customer was read already: a refusal here is for their orders.
            variables = {"id": customer_id, "after": after}
            data = await self._graphql(CUSTOMER_ORDERS, variables, needs=READ_ORDERS)
            customer = data.get("customer")
            connection = customer.get("orders") if isinstance(customer, dict) else None
            if not isinstance(connection, dict):
                return orders, counted  # the customer went away meanwhile
            if counted is None and isinstance(customer, dict):
                counted = _count(customer.get("numberOfOrders"))
            for order in connection.get("nodes") or []:
                if isinstance(order, dict):
                    await self._all_line_items(order)
                    orders.append(order)
            info = connection.get("pageInfo")
            info = info if isinstance(info, dict) else {}
            end = info.get("endCursor")
            if info.get("hasNextPage") is not True or not isinstance(end, str) or end in seen:
                return orders, counted
            seen.add(end)
            after = end

    async def _all_line_items(self, order: dict[str, Any]) -> None:
        """Read the order's line items past the first page into it: an access request's copy
        listed 50 of a 60-item order, and said nothing of the rest."""
        items = order.get("lineItems")
        if not isinstance(items, dict) or not isinstance(order.get("id"), str):
            return
        nodes = items.setdefault("nodes", [])
        info = items.get("pageInfo")
        seen: set[str] = set()
        while isinstance(info, dict) and info.get("hasNextPage") is True:
            after = info.get("endCursor")
            if not isinstance(after, str) or after in seen:
                return  # no way on: the page info says the list is not whole
            seen.add(after)
            variables = {"id": order["id"], "after": after}
            data = await self._graphql(ORDER_LINE_ITEMS, variables, needs=READ_ORDERS)
            node = data.get("order")
            more = node.get("lineItems") if isinstance(node, dict) else None
            if not isinstance(more, dict):
                return  # the order went away meanwhile; its page info says what was read
            nodes += [n for n in more.get("nodes") or [] if isinstance(n, dict)]
            info = more.get("pageInfo")
        items["pageInfo"] = {"hasNextPage": False}

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """The customer node(s) and each of their orders as ``{"type": "order", ...}``.

        A customer of whom Shopify served fewer orders than it counts carries
        :data:`ORDERS_UNREAD` (how many, and why), so the copy does not pass for whole.
        """
        customers = await self._customers_for(subject)
        # Others' addresses the notes, tags and checkout details quote are left out
        # (Art. 15(4)), the person's own stay.
        own = copy_addresses(subject.email, customers)
        held: list[dict[str, Any]] = []
        for customer in customers:
            orders, counted = await self._orders(customer["id"])
            held += [
                {"type": "order", "customerId": customer["id"], **order_copy(o, own)}
                for o in orders
            ]
            if counted is not None and counted > len(orders):
                self._orders_unread(customer, counted - len(orders))
        return [customer_copy(customer, own) for customer in customers] + held

    def _orders_unread(self, customer: dict[str, Any], missing: int) -> None:
        customer[ORDERS_UNREAD] = {"count": missing, "reason": ORDERS_UNREAD_REASON}
        if self._scope_told:
            return  # the scope is the store's, not the customer's: said once is enough
        self._scope_told = True
        # Counts only: which customer is the access request's business, not the log's.
        log.warning(
            "Shopify served fewer orders than the customer has: grant the app the "
            "read_all_orders scope for orders older than 60 days",
            extra={"system": self.client.system, "orders_not_read": missing},
        )

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The customer node(s) as a pull reads them (see ``Adapter.find``), for an erasure's
        snapshot and check and a correction's reads. Without orders even where asked for
        them: Shopify's erasure is of the customer, whose orders go with it, and an order is
        read only by the customer's id, so it tells nothing the customer does not."""
        return await self.find_people(subject)

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The customer node(s) alone (see ``Adapter.find``): a targeted sync reads no orders."""
        return list(await self._customers_for(subject, "synced"))

    # -- erase -------------------------------------------------------------------------------

    async def erase(self, subject: Subject) -> ErasureResult:
        """Queue Shopify's own erasure (``customerRequestDataErasure``) for the subject.

        Asking again while Shopify still holds the request finds the customer again and asks
        again (``found`` and ``pending`` both true); once Shopify has erased, nothing is found.

        Raises:
            RetryableError: Shopify answered ``FAILED_TO_REQUEST``.
            RecordError: another user error code.
        """
        endpoint = f"POST {self.path} customerRequestDataErasure"
        # Their ids alone: the request names a customer by id, and reading their note, tags
        # and address book to ask for their erasure reads what it is to erase, for nothing.
        customers = await self._customers_for(subject, "ids")
        if not customers:
            return ErasureResult(
                found=False,
                mode="async_hard_delete",
                reversible=False,
                endpoint=endpoint,
                note="no Shopify customer with this e-mail or id",
                erased_note=ERASED_NOTE,
            )
        requested = 0
        for customer in customers:
            variables = {"customerId": customer["id"]}
            data = await self._graphql(REQUEST_ERASURE, variables, needs=ERASURE_SCOPE)
            payload = data.get("customerRequestDataErasure")
            payload = payload if isinstance(payload, dict) else {}
            codes = [
                _code(error.get("code")) or "USER_ERROR"
                for error in payload.get("userErrors") or []
                if isinstance(error, dict)
            ]
            if not codes:
                requested += 1
            elif codes[0] == "DOES_NOT_EXIST":
                continue  # gone between the lookup and the request: nothing left to erase
            elif codes[0] == "FAILED_TO_REQUEST":
                raise RetryableError(self.client.system, "POST", self.path, 200, codes[0])
            else:
                raise RecordError(self.client.system, "POST", self.path, 200, codes[0])
        return ErasureResult(
            found=requested > 0,
            mode="async_hard_delete",
            reversible=False,
            endpoint=endpoint,
            vendor_status=200,
            note=ERASURE_NOTE if requested else "customer already gone when the request was sent",
            pending=requested > 0,
            erased_note=ERASED_NOTE,
        )

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check ``X-Shopify-Hmac-Sha256``; ``now`` is unused: Shopify signs no timestamp."""
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """``customers/redact`` -> erase, ``customers/data_request`` -> access (each with a
        body shaped as its own), ``shop/redact`` shaped as one -> purge_all,
        ``customers/create|update`` and ``customers_email_marketing_consent/update`` ->
        changed, ``customers/delete`` -> deleted; any other topic -> ignored."""
        return parse_delivery(request, self.settings.own_domain())


SPEC = AdapterSpec(
    kind="shopify",
    settings_model=ShopifySettings,
    factory=ShopifyAdapter,
    client_config=client_config,
    limits=shopify_limits,
    sandbox=ShopifySandbox,
)
