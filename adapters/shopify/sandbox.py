"""A faithful local fake of Shopify's GraphQL Admin API, for the queries klantsync sends.

It serves ``POST /admin/api/{version}/graphql.json`` with:

- access-token auth (``X-Shopify-Access-Token``) and Shopify's 401 body;
- a small GraphQL reader (``_graphql.py``) and the customer/order part of the schema
  (``_schema.py``), answering only what was selected and refusing, before anything runs,
  what Shopify's validation refuses (unknown fields, missing required arguments, variables
  declared and not used, variables and literals of another type than their argument's);
- the calculated-cost leaky bucket per plan (restore 100/200/1000/2000 points/s), with
  ``extensions.cost`` on every executed answer, and Shopify's ``THROTTLED`` error when the
  bucket cannot cover a query's requested cost: HTTP 200 by default, 429 when asked (which
  Shopify sends is disputed; UNVERIFIED). An injected 429 (a 429 storm) is that answer too,
  the bucket emptied. Bucket size is 10x the restore rate (UNVERIFIED);
- keyset cursor paging, the ``updated_at`` search filter (optionally date-granular), the
  ``email:`` filter (whole addresses, or optionally their words), and
  ``customerRequestDataErasure`` holding the customer until :meth:`process_erasures` runs
  (Shopify's own waiting period), ``customerCancelDataErasure``, and ``customerDelete``
  refusing customers with orders;
- Admin API versions as Shopify serves them: a retired version (older than 12 months on the
  wall clock) falls forward to the oldest supported one, and ``X-Shopify-API-Version`` names
  the version that answered;
- orders older than 60 days served only to a token granted ``read_all_orders`` (none is by
  default, as with Shopify);
- a token holding a given set of access scopes: a field outside them is answered Shopify's
  ``ACCESS_DENIED`` (``_scopes.py``; every scope by default, as the demo's app has);
- genuine webhook deliveries (:meth:`ShopifySandbox.signed_webhook`).

Faults and the request log come from :class:`~connector.sandboxkit.SandboxBase`. The log
holds variable *names* only, never their values (a search variable holds an e-mail).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.shopify._cost import CostBucket, requested_cost
from adapters.shopify._graphql import GraphQLSyntaxError, parse
from adapters.shopify._schema import Executor
from adapters.shopify._scopes import access_denied
from adapters.shopify._store import CUSTOMER, ORDER, GraphQLError, ShopStore, gid, iso
from adapters.shopify.settings import (
    DEFAULT_API_VERSION,
    RESTORE_RATES,
    Plan,
    serving_version,
)
from adapters.shopify.webhooks import COMPLIANCE_TOPICS, webhook_signature
from connector.sandboxkit import SandboxBase, record

__all__ = ["AUTH_ERROR", "ShopifySandbox"]

AUTH_ERROR = "[API] Invalid API key or access token (unrecognized login or wrong password)"
_PATH = re.compile(r"/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json")


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class _InjectedThrottle(Response):
    """An injected 429, its body made once the call's query is read: the throttled answer
    names the query's requested cost (:meth:`ShopifySandbox.throttle_injected`)."""

    def __init__(self, sandbox: ShopifySandbox, request: Request) -> None:
        super().__init__(status_code=429, media_type="application/json")
        self.sandbox = sandbox
        self.request = request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self.sandbox.throttle_injected(await self.request.body())
        await _json(answer, self.status_code)(scope, receive, send)


class ShopifySandbox(SandboxBase):
    """A fake Shopify store speaking the GraphQL Admin API; meets ``SandboxLike``.

    Args:
        access_token: the Admin API token it accepts.
        plan: the store's plan; sets the bucket's restore rate.
        bucket_size: points the bucket holds (default 10x the restore rate).
        throttle_status: HTTP status of a throttled answer (200 as Shopify documents it,
            or 429).
        max_query_cost: the single-query ceiling (1000 by third-party accounts).
        date_granular: compare ``updated_at`` search bounds by date only.
        token_search: ``email:`` matches the words of an address, not the whole of it
            (``jan@x.nl`` finds ``jan@x.nl.evil`` too; UNVERIFIED either way).
        clock: monotonic seconds for the cost bucket.
        wall_clock: epoch seconds for ``createdAt``/``updatedAt`` and webhook headers.
        shop_domain: the ``*.myshopify.com`` name used in webhooks.
        read_all_orders: the token holds Shopify's ``read_all_orders`` scope; without it
            orders created more than 60 days ago are not served (``numberOfOrders`` still
            counts them). ``scopes`` holding it grants it too.
        scopes: the access scopes the token was granted (``None``: every one, as the demo's
            app). A query or mutation reading a field outside them (see
            :mod:`adapters.shopify._scopes`) is answered ``ACCESS_DENIED``, as Shopify does:
            HTTP 200, its root fields null, nothing run.

    Attributes:
        store: the customers, orders and pending erasures.
        operations: ``"query customers"``, ``"mutation customerRequestDataErasure"``, ... of
            every executed call, in order.
        throttled: calls answered ``THROTTLED``.
    """

    kind = "shopify"

    def __init__(
        self,
        *,
        access_token: str = "shpat_sandbox",  # noqa: S107 - the fake's own well-known token
        plan: Plan = "standard",
        bucket_size: float | None = None,
        throttle_status: int = 200,
        max_query_cost: int = 1000,
        date_granular: bool = False,
        token_search: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shop_domain: str = "klantsync-sandbox.myshopify.com",
        read_all_orders: bool = False,
        scopes: Collection[str] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.access_token = access_token
        rate = RESTORE_RATES[plan]
        self.bucket = CostBucket(bucket_size or rate * 10, rate, clock)
        self.throttle_status = throttle_status
        self.max_query_cost = max_query_cost
        self.wall_clock = wall_clock
        self.shop_domain = shop_domain
        self.store = ShopStore(date_granular=date_granular, token_search=token_search)
        self.scopes = None if scopes is None else frozenset(scopes)
        all_orders = read_all_orders or "read_all_orders" in (self.scopes or ())
        self.executor = Executor(self.store, self.now, all_orders=all_orders)
        self.operations = self.executor.operations
        self.throttled = 0
        self._app: ASGIApp | None = None
        self._webhooks = 0

    def now(self) -> str:
        """The wall-clock time as Shopify prints it."""
        return iso(datetime.fromtimestamp(self.wall_clock(), UTC))

    # -- the ASGI app ----------------------------------------------------------------------

    def app(self) -> ASGIApp:
        """The Starlette app, wrapped so faults can drop the connection."""
        if self._app is None:
            routes = [Route("/admin/api/{version}/graphql.json", self._graphql, methods=["POST"])]
            self._app = self.serve(Starlette(routes=routes))
        return self._app

    async def _graphql(self, request: Request) -> Response:
        if not _PATH.fullmatch(request.url.path):
            return record(self.log, request, _json({"errors": "Not Found"}, 404))
        at = datetime.fromtimestamp(self.wall_clock(), UTC)
        headers = {"X-Shopify-API-Version": serving_version(request.path_params["version"], at)}
        token = request.headers.get("x-shopify-access-token", "")
        if not token or not hmac.compare_digest(token.encode(), self.access_token.encode()):
            return record(self.log, request, _json({"errors": AUTH_ERROR}, 401))
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            missing = {"errors": {"query": "Required parameter missing or invalid"}}
            return record(self.log, request, _json(missing, 400, headers))
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            variables = {}
        answer, status = self.answer(body["query"], variables)
        return record(self.log, request, _json(answer, status, headers), records=[variables])

    def answer(self, document: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Run one GraphQL call through parsing, validation, the cost bucket and execution."""
        try:
            operation = parse(document)
        except GraphQLSyntaxError as error:
            location = {"line": error.line, "column": error.column}
            return {"errors": [{"message": error.message, "locations": [location]}]}, 200
        problems = self.executor.validate(operation, variables)
        if problems:
            return {"errors": [p.as_json() for p in problems]}, 200
        requested = requested_cost(self.executor.types(), operation, variables)
        if requested > self.max_query_cost:
            too_costly = {
                "message": f"Query cost is {requested}, which exceeds the single query max "
                f"cost limit ({self.max_query_cost}).",
                "extensions": {
                    "code": "MAX_COST_EXCEEDED",
                    "cost": requested,
                    "maxCost": self.max_query_cost,
                },
            }
            return {"errors": [too_costly]}, 200
        if not self.bucket.take(requested):
            return self._throttled(requested), self.throttle_status
        if self.scopes is not None:
            root = "Mutation" if operation.kind == "mutation" else "QueryRoot"
            types = self.executor.types()
            denied = access_denied(types, root, operation.selections, self.scopes)
            if denied:
                # Nothing runs (a refused mutation erases no one); the root fields answer
                # null. Shopify charged the requested cost for one (as quoted).
                data = {field.key: None for field in operation.selections}
                cost = {"cost": self._cost(requested, requested)}
                return {"errors": denied, "data": data, "extensions": cost}, 200
        try:
            data, actual = self.executor.execute(operation, variables)
        except GraphQLError as error:
            self.bucket.refund(requested)
            return {
                "errors": [error.as_json()],
                "extensions": {"cost": self._cost(requested, 0)},
            }, 200
        self.bucket.refund(max(0, requested - actual))
        return {"data": data, "extensions": {"cost": self._cost(requested, actual)}}, 200

    def _throttled(self, requested: int) -> dict[str, Any]:
        """Shopify's ``THROTTLED`` answer to a query of ``requested`` points, with the
        bucket's figures, which a client computes its wait from."""
        self.throttled += 1
        return {
            "errors": [
                {
                    "message": "Throttled",
                    "extensions": {
                        "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits",
                    },
                }
            ],
            "extensions": {"cost": self._cost(requested, None)},
        }

    def _requested(self, raw: bytes) -> int:
        """What the query in a call's body may cost; 0 for one this store would not run."""
        try:
            body = json.loads(raw)
        except ValueError:
            return 0
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 0
        variables = body.get("variables")
        variables = variables if isinstance(variables, dict) else {}
        try:
            operation = parse(body["query"])
        except GraphQLSyntaxError:
            return 0
        if self.executor.validate(operation, variables):
            return 0
        return requested_cost(self.executor.types(), operation, variables)

    def throttle_injected(self, raw: bytes) -> dict[str, Any]:
        """The answer to an injected 429: the store's bucket ran dry (another app of the
        store, a burst), so it is emptied and the call throttled as :meth:`answer` throttles
        one. The figures then hold for the next call too: a client that waits what they say
        finds the points there; one that comes back sooner is throttled again."""
        requested = self._requested(raw)
        self.bucket.take(self.bucket.available())
        return self._throttled(requested)

    def _cost(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": self.bucket.status(),
        }

    # -- SandboxLike -----------------------------------------------------------------------

    def fault_response(self, status: int, request: Request) -> Response:
        """Shopify's answer to an injected failure: a 429 is its ``THROTTLED`` answer with
        the cost figures (:meth:`throttle_injected`), so a 429 storm meets a client's
        throttle handling, as the bucket's own 429s do; others ``{"errors": "<reason
        phrase>"}``."""
        if status == 429:
            return _InjectedThrottle(self, request)
        return _json({"errors": HTTPStatus(status).phrase}, status)

    def credentials(self) -> dict[str, str]:
        """The Admin API access token this store accepts."""
        return {"access_token": self.access_token}

    def add_person(
        self,
        email: str | None,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed one customer as the store holds it; return its GraphQL id.

        ``extra`` may hold address keys (``address1``, ``address2``, ``city``, ``zip``,
        ``country_code``, ``company``, ``address_phone``), ``marketing_state``
        (``SUBSCRIBED``, ``NOT_SUBSCRIBED``, ...), ``note``, ``tags``, ``locale``,
        ``created_at``/``updated_at`` (ISO), or any GraphQL customer field by its own name.
        ``email`` may be ``None`` (or empty): Shopify keeps customers known by their phone
        alone, with ``email`` and ``emailMarketingConsent`` null, as many as there are.

        Raises:
            ValueError: a customer with this e-mail already exists (Shopify keeps them unique).
        """
        email = email or None
        if email is not None and self.store.by_email(email) is not None:
            raise ValueError("a customer with this e-mail already exists")
        number = self.store.new_customer_number()
        stamp = self.now()
        created = str(extra.pop("created_at", stamp))
        address_keys = {
            "address1": "address1",
            "address2": "address2",
            "city": "city",
            "zip": "zip",
            "country_code": "countryCodeV2",
            "company": "company",
            "address_phone": "phone",
            "province_code": "provinceCode",
        }
        address_values = {
            target: extra.pop(source) for source, target in address_keys.items() if source in extra
        }
        address: dict[str, Any] | None = None
        if address_values:
            address = dict.fromkeys(_ADDRESS_FIELDS)
            address.update(address_values)
            address["id"] = gid("MailingAddress", number + 1_000_000)
            address["firstName"] = first_name or None
            address["lastName"] = last_name or None
            address["name"] = f"{first_name} {last_name}".strip() or None
            address["country"] = _COUNTRY_NAMES.get(str(address.get("countryCodeV2")))
        state = str(extra.pop("marketing_state", "NOT_SUBSCRIBED"))
        customer: dict[str, Any] = {
            "id": gid(CUSTOMER, number),
            "legacyResourceId": str(number),
            "email": email,
            "firstName": first_name or None,
            "lastName": last_name or None,
            "displayName": f"{first_name} {last_name}".strip() or email or phone or None,
            "phone": phone or None,
            "createdAt": created,
            "updatedAt": str(extra.pop("updated_at", created)),
            "note": extra.pop("note", None),
            "tags": list(extra.pop("tags", [])),
            "state": "ENABLED",
            "verifiedEmail": True,
            "taxExempt": False,
            "locale": extra.pop("locale", "nl"),
            "numberOfOrders": "0",
            "dataSaleOptOut": False,
            "amountSpent": {"amount": "0.0", "currencyCode": "EUR"},
            # Shopify: "If the customer doesn't have an email address, then this property
            # is null."
            "emailMarketingConsent": None
            if email is None
            else {
                "marketingState": state,
                "marketingOptInLevel": "SINGLE_OPT_IN" if state == "SUBSCRIBED" else None,
                "consentUpdatedAt": created if state != "NOT_SUBSCRIBED" else None,
            },
            "smsMarketingConsent": None,
            "defaultAddress": address,
            "addresses": [copy.deepcopy(address)] if address else [],
        }
        customer.update(extra)
        self.store.customers[number] = customer
        return str(customer["id"])

    def holds(self, email: str) -> bool:
        """Whether a customer with this e-mail exists (a pending erasure still holds them)."""
        return self.store.by_email(email) is not None

    def restorable(self, email: str) -> bool:
        """Always false: Shopify keeps no restorable copy of an erased customer."""
        return False

    def record_for(self, email: str) -> dict[str, Any] | None:
        """A copy of the customer with this e-mail, as the store holds it, or ``None``."""
        found = self.store.by_email(email)
        return copy.deepcopy(found) if found is not None else None

    # -- test helpers ----------------------------------------------------------------------

    def touch(self, email: str, /, **changes: Any) -> None:
        """Change a customer as the shop owner would, and bump ``updatedAt`` to now.

        ``email`` names the customer by their e-mail, or by their GraphQL id (one without
        an e-mail). Keys are GraphQL customer fields (``firstName``, ``note``), or dotted / double
        underscored nested keys (``defaultAddress.city``, ``emailMarketingConsent__
        marketingState``). ``updatedAt`` moves strictly forward even when the wall clock
        has not, so every change is visible to an incremental pull. A change of the
        default address changes its entry in ``addresses`` too, as in Shopify (unless
        ``addresses`` is given as well).

        Raises:
            KeyError: no customer has this e-mail.
        """
        customer = self._customer(email)
        if customer is None:
            raise KeyError("no such customer")
        default = customer.get("defaultAddress")
        former_default = default.get("id") if isinstance(default, dict) else None
        consent = customer.get("emailMarketingConsent")
        former_state = consent.get("marketingState") if isinstance(consent, dict) else None
        keys = {key.replace("__", ".") for key in changes}
        heads: set[str] = set()
        for key, value in changes.items():
            head, sep, tail = key.replace("__", ".").partition(".")
            heads.add(head)
            if sep:
                nested = customer.get(head)
                if not isinstance(nested, dict):
                    nested = customer[head] = {}
                nested[tail] = value
            else:
                customer[head] = value
        if "defaultAddress" in heads and "addresses" not in heads:
            self._file_default_address(customer, former_default)
        if "email" in heads and "emailMarketingConsent" not in heads:
            # The consent is the address's: Shopify has none without one, and a customer
            # given an address has not subscribed with it.
            customer["email"] = customer["email"] or None
            held = customer.get("emailMarketingConsent")
            if customer["email"] is None:
                customer["emailMarketingConsent"] = None
            elif held is None:
                customer["emailMarketingConsent"] = {
                    "marketingState": "NOT_SUBSCRIBED",
                    "marketingOptInLevel": None,
                    "consentUpdatedAt": None,
                }
        stamp = self.now()
        if stamp <= customer["updatedAt"]:
            moment = datetime.fromisoformat(customer["updatedAt"].replace("Z", "+00:00"))
            stamp = iso(datetime.fromtimestamp(moment.timestamp() + 1, UTC))
        customer["updatedAt"] = stamp
        consent = customer.get("emailMarketingConsent")
        state = consent.get("marketingState") if isinstance(consent, dict) else None
        if isinstance(consent, dict) and state != former_state:
            # Shopify dates the consent record when its state changes (the date given, else
            # when the change was sent): an access copy showed an opt-out under the date of
            # the first opt-in.
            if "emailMarketingConsent.consentUpdatedAt" not in keys:
                consent["consentUpdatedAt"] = stamp
            if state == "SUBSCRIBED" and not consent.get("marketingOptInLevel"):
                consent["marketingOptInLevel"] = "SINGLE_OPT_IN"

    def _customer(self, key: str) -> dict[str, Any] | None:
        """The customer with this e-mail, or with this GraphQL id."""
        if key.startswith(f"gid://shopify/{CUSTOMER}/"):
            return self.store.customer(key)
        return self.store.by_email(key)

    def _file_default_address(self, customer: dict[str, Any], former: Any) -> None:
        """Keep the address book holding the default address, as Shopify does: the default
        is one of the customer's addresses, so a change of it changes that entry (an access
        copy otherwise listed the former address as the only one kept, and the current one
        nowhere in the book). A default taken away leaves the book, and the next address in
        it becomes the default; one given to a customer without any joins the book."""
        book = [a for a in customer.get("addresses") or [] if former is None or a["id"] != former]
        at = next(
            (i for i, a in enumerate(customer.get("addresses") or []) if a["id"] == former), 0
        )
        default = customer.get("defaultAddress")
        if not isinstance(default, dict) or not any(
            value not in (None, "") for key, value in default.items() if key != "id"
        ):
            customer["defaultAddress"] = copy.deepcopy(book[0]) if book else None
            customer["addresses"] = book
            return
        address = dict.fromkeys(_ADDRESS_FIELDS)
        address.update(default)
        address["id"] = address["id"] or gid("MailingAddress", self.store.new_address_number())
        address["country"] = _COUNTRY_NAMES.get(str(address.get("countryCodeV2")))
        customer["defaultAddress"] = address
        book.insert(at, copy.deepcopy(address))
        customer["addresses"] = book

    def add_order(
        self,
        email: str,
        *,
        total: str = "24.95",
        currency: str = "EUR",
        items: tuple[str, ...] = ("Koffiemok",),
        note: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Add an order for the customer with ``email``; return the order's GraphQL id.
        ``attributes`` are the details given with it at checkout (``customAttributes``,
        REST's ``note_attributes``: a gift message, a delivery slot), in order.

        Raises:
            KeyError: no customer has this e-mail.
        """
        customer = self.store.by_email(email)
        if customer is None:
            raise KeyError("no such customer")
        number = self.store.new_order_number()
        owner = int(customer["legacyResourceId"])
        money = {"amount": total, "currencyCode": currency}
        self.store.orders[number] = {
            "id": gid(ORDER, number),
            "legacyResourceId": str(number),
            "name": f"#{1000 + len(self.store.orders) + 1}",
            "createdAt": self.now(),
            "updatedAt": self.now(),
            "email": customer["email"],
            "phone": customer["phone"],
            "note": note,
            "customAttributes": [{"key": k, "value": v} for k, v in (attributes or {}).items()],
            "totalPriceSet": {"shopMoney": dict(money), "presentmentMoney": dict(money)},
            "billingAddress": copy.deepcopy(customer["defaultAddress"]),
            "shippingAddress": copy.deepcopy(customer["defaultAddress"]),
            "lineItems": [
                {
                    "id": gid("LineItem", self.store.new_line_number()),
                    "title": title,
                    "name": title,
                    "quantity": 1,
                    "sku": None,
                }
                for title in items
            ],
            "_customer": owner,
        }
        customer["numberOfOrders"] = str(len(self.store.orders_of(owner)))
        return str(self.store.orders[number]["id"])

    def orders_for(self, email: str) -> list[dict[str, Any]]:
        """Copies of the orders of the customer with ``email`` (none once erased)."""
        customer = self.store.by_email(email)
        if customer is None:
            return []
        return copy.deepcopy(self.store.orders_of(int(customer["legacyResourceId"])))

    def pending_erasure(self, email: str) -> bool:
        """Whether an erasure request for this e-mail's customer waits in Shopify's queue."""
        customer = self.store.by_email(email)
        return customer is not None and int(customer["legacyResourceId"]) in (
            self.store.pending_erasures
        )

    def cancel_erasure(self, email: str) -> None:
        """The shop's owner cancels the pending erasure in Shopify's admin (as
        ``customerCancelDataErasure`` does): the customer stays."""
        customer = self.store.by_email(email)
        number = int(customer["legacyResourceId"]) if customer is not None else 0
        if self.store.pending_erasures.pop(number, None) is None:
            raise ValueError("no erasure pending for that customer")

    def process_erasures(self) -> int:
        """Let Shopify's waiting period pass: carry out every pending erasure; return how many.

        The customer is removed; their orders stay with order facts only (name, dates,
        totals, line items), as Shopify keeps them.
        """
        numbers = list(self.store.pending_erasures)
        for number in numbers:
            self.store.erase(number)
        return len(numbers)

    def signed_webhook(
        self, topic: str, payload: Mapping[str, Any], secret: str
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a genuine Shopify delivery of ``payload`` on ``topic``."""
        self._webhooks += 1
        body = json.dumps(payload, separators=(",", ":")).encode()
        seed = hashlib.sha256(f"{self.shop_domain}:{topic}:{self._webhooks}".encode()).digest()
        return body, {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": webhook_signature(body, secret),
            "X-Shopify-Shop-Domain": self.shop_domain,
            "X-Shopify-Webhook-Id": str(uuid.UUID(bytes=seed[:16])),
            "X-Shopify-Event-Id": str(uuid.UUID(bytes=seed[16:])),
            "X-Shopify-API-Version": DEFAULT_API_VERSION,
            "X-Shopify-Triggered-At": datetime.fromtimestamp(self.wall_clock(), UTC).isoformat(),
        }

    def signed_compliance_webhook(
        self, topic: str, payload: Mapping[str, Any], secret: str
    ) -> tuple[bytes, dict[str, str]]:
        """A genuine delivery of one of the three mandatory compliance topics.

        Raises:
            ValueError: ``topic`` is not ``customers/redact``, ``customers/data_request`` or
                ``shop/redact``.
        """
        if topic not in COMPLIANCE_TOPICS:
            raise ValueError(f"not a compliance topic: {topic}")
        return self.signed_webhook(topic, payload, secret)

    def compliance_payload(self, topic: str, email: str | None = None) -> dict[str, Any]:
        """The payload Shopify sends on a compliance topic, for a customer of this store.

        Shapes follow Shopify's app template: ``customers/redact`` ``{shop_id, shop_domain,
        customer{id, email, phone}, orders_to_redact}``, ``customers/data_request`` the same
        with ``orders_requested`` and ``data_request{id}``, ``shop/redact`` ``{shop_id,
        shop_domain}``. ``email`` may be the customer's GraphQL id instead (one without an
        e-mail).

        Raises:
            KeyError: the topic needs a customer and none has this e-mail.
        """
        shop = {"shop_id": 954_889, "shop_domain": self.shop_domain}
        if topic == "shop/redact":
            return shop
        customer = self._customer(email or "")
        if customer is None:
            raise KeyError("no such customer")
        number = int(customer["legacyResourceId"])
        orders = [int(o["legacyResourceId"]) for o in self.store.orders_of(number)]
        person = {"id": number, "email": customer["email"], "phone": customer["phone"]}
        if topic == "customers/redact":
            return {**shop, "customer": person, "orders_to_redact": orders}
        return {
            **shop,
            "orders_requested": orders,
            "customer": person,
            "data_request": {"id": 9_999 + self._webhooks},
        }


_ADDRESS_FIELDS = (
    "id", "address1", "address2", "city", "zip", "province", "provinceCode", "country",
    "countryCodeV2", "company", "phone", "firstName", "lastName", "name",
)  # fmt: skip
_COUNTRY_NAMES = {"NL": "Netherlands", "BE": "Belgium", "DE": "Germany", "FR": "France"}
