"""A faithful local fake of the WooCommerce REST API v3 (``/wp-json/wc/v3``).

It serves what klantsync touches: customers (list, read, create, update, delete, batch),
orders (list, read, update; an update that carries an address taxes the order again where it
then is, as WooCommerce does: :mod:`adapters.woocommerce.taxes`) and product reviews (list,
read, update, delete: WordPress comments, whose IP address and browser the REST API neither
shows nor changes), with WooCommerce's paging headers, error bodies and status codes,
its batch limit of 100 items, permanent-only customer deletion (``force=true``), HTTP basic
auth with a consumer key and secret over HTTPS only (over plain http WooCommerce wants OAuth
1.0a, which this fake does not speak: every call there is anonymous, answered 401), the key's
read or write permissions, and
genuine webhook signatures. Faults, rate limits and
the request log come from :class:`~connector.sandboxkit.SandboxBase`.

The request log never holds personal data: query values that can carry it (``email``,
``reviewer_email``, ``search``, the consumer key and secret) are replaced before a call is
recorded, and write bodies are reduced to their field names by
:func:`connector.sandboxkit.record`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from adapters.woocommerce.listing import list_customers, list_orders, list_reviews, only_fields
from adapters.woocommerce.rest import ApiError, ShopRules, delete_review, update_review
from adapters.woocommerce.shapes import BILLING_FIELDS, customer_shape, order_shape, review_shape
from adapters.woocommerce.store import ShopStore
from adapters.woocommerce.webhooks import webhook_signature
from connector.ratelimit import RateLimit
from connector.sandboxkit import JSONResponse, SandboxBase, record

__all__ = ["WooCommerceSandbox"]

PREFIX = "/wp-json/wc/v3"
BATCH_LIMIT = 100
#: Query parameters whose values can be personal data or secrets: never logged.
#: Customer fields that the REST API merges key by key.
_NESTED = frozenset({"billing", "shipping", "meta_data"})
#: What WooCommerce answers an anonymous caller, per kind of action.
_CANNOT = {
    "view": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "create": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "edit": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
    "delete": (
        "woocommerce_rest_cannot_delete",
        "Sorry, you are not allowed to delete this resource.",
    ),
    "batch": (
        "woocommerce_rest_cannot_batch",
        "Sorry, you are not allowed to batch manipulate this resource.",
    ),
}

Handler = Callable[[Request], Awaitable[tuple[Response, list[Mapping[str, Any]]]]]


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _boolean(request: Request, name: str) -> bool:
    """A ``boolean`` query argument as WordPress takes one, before the route runs: checked
    by ``rest_is_boolean`` ("true", "false", "1" or "0", in any case), then read by
    ``rest_sanitize_boolean``; absent, false. Anything else ("yes", "") is 400
    ``rest_invalid_param``: a fake that took ``force=yes`` for true deleted for good where
    WordPress deletes nothing."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(
            400,
            "rest_invalid_param",
            f"Invalid parameter(s): {name}",
            params={name: f"{name} is not of type boolean."},
        )
    return value in ("true", "1")


class WooCommerceSandbox(SandboxBase):
    """A fake WooCommerce shop speaking wc/v3.

    Args:
        consumer_key: the REST key it accepts.
        consumer_secret: the REST secret it accepts.
        rate_limit: a host/WAF limit to enforce (wc/v3 itself has none), or ``None``.
        clock: monotonic time for the rate window.
        wall_clock: epoch seconds for ``date_created``/``date_modified``.
        honours_fields: whether ``_fields`` cuts the answers (WordPress 4.9.8 on); set
            ``False`` to be a shop that sends whole records whatever is asked.
    """

    kind = "woocommerce"

    def __init__(
        self,
        *,
        consumer_key: str = "ck_sandbox",
        consumer_secret: str = "cs_sandbox",  # noqa: S107 - a fake shop's well-known secret
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(rate_limit=rate_limit, clock=clock)
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.store = ShopStore()
        self.rules = ShopRules(self.store, lambda: datetime.fromtimestamp(wall_clock(), UTC))
        self._wall_clock = wall_clock
        self.honours_fields = True
        #: The key's permissions, as WooCommerce's REST API keys page sets them: ``read``,
        #: ``write`` or ``read_write``.
        self.key_permissions = "read_write"
        self._app: ASGIApp | None = None

    # -- the ASGI app ----------------------------------------------------------------------

    def app(self) -> ASGIApp:
        """The Starlette app, wrapped so :class:`ConnectionReset` drops the connection."""
        if self._app is None:
            c, o = f"{PREFIX}/customers", f"{PREFIX}/orders"
            r = f"{PREFIX}/products/reviews"
            routes = [
                Route(
                    f"{c}/batch", self._wrap("batch", self._batch), methods=["POST", "PUT", "PATCH"]
                ),
                Route(c, self._wrap("view", self._list_customers), methods=["GET"]),
                Route(c, self._wrap("create", self._create_customer), methods=["POST"]),
                Route(f"{c}/{{id:int}}", self._wrap("view", self._get_customer), methods=["GET"]),
                Route(
                    f"{c}/{{id:int}}",
                    self._wrap("edit", self._update_customer),
                    methods=["POST", "PUT", "PATCH"],
                ),
                Route(
                    f"{c}/{{id:int}}",
                    self._wrap("delete", self._delete_customer),
                    methods=["DELETE"],
                ),
                Route(o, self._wrap("view", self._list_orders), methods=["GET"]),
                Route(f"{o}/{{id:int}}", self._wrap("view", self._get_order), methods=["GET"]),
                Route(
                    f"{o}/{{id:int}}",
                    self._wrap("edit", self._update_order),
                    methods=["POST", "PUT", "PATCH"],
                ),
                Route(
                    f"{o}/{{id:int}}/notes", self._wrap("view", self._list_notes), methods=["GET"]
                ),
                Route(
                    f"{o}/{{id:int}}/notes/{{note:int}}",
                    self._wrap("delete", self._delete_note),
                    methods=["DELETE"],
                ),
                Route(r, self._wrap("view", self._list_reviews), methods=["GET"]),
                Route(f"{r}/{{id:int}}", self._wrap("view", self._get_review), methods=["GET"]),
                Route(
                    f"{r}/{{id:int}}",
                    self._wrap("edit", self._update_review),
                    methods=["POST", "PUT", "PATCH"],
                ),
                Route(
                    f"{r}/{{id:int}}", self._wrap("delete", self._delete_review), methods=["DELETE"]
                ),
            ]
            self._app = self.serve(Starlette(routes=routes))
        return self._app

    def fault_response(self, status: int, request: Request) -> Response:
        """What WordPress's fatal-error handler answers a REST request."""
        body = {
            "code": "internal_server_error",
            "message": "There has been a critical error on this website.",
            "data": {"status": status},
            "additional_errors": [],
        }
        return _json(body, status)

    def _wrap(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Rate limit and auth first (in that order, as a host would), then the call."""

        async def endpoint(request: Request) -> Response:
            logged = request  # record() keeps only names of personal query values
            window = self.admit()
            if window is not None:
                wait = max(1, math.ceil(window.wait_time(self.clock())))
                body = {
                    "code": "rest_rate_limited",
                    "message": "Too many requests.",
                    "data": {"status": 429},
                }
                return record(self.log, logged, _json(body, 429, {"Retry-After": str(wait)}))
            denied = self._authenticate(request, action) or self._permitted(request.method)
            if denied is not None:
                return record(self.log, logged, _json(denied.body(), denied.status))
            try:
                response, records = await handler(request)
            except ApiError as error:
                response, records = _json(error.body(), error.status), []
            return record(self.log, logged, response, records=list(records))

        return endpoint

    def _authenticate(self, request: Request, action: str) -> ApiError | None:
        if request.url.scheme != "https":
            # WooCommerce reads the key and secret (Basic, or the query pair) only when
            # is_ssl(); over http it wants OAuth 1.0a signatures [docs], which this fake does
            # not check. A Basic header there authenticates nobody: the caller is anonymous.
            code, message = _CANNOT[action]
            return ApiError(401, code, message)
        # WC_REST_Authentication::perform_basic_authentication: the query pair first, where
        # both are given, else HTTP Basic, where both are given; a key it does not know
        # authenticates nobody and sets no error (the caller is anonymous, as without one).
        # Only a known key with the wrong secret is refused as such.
        key = request.query_params.get("consumer_key", "")
        secret = request.query_params.get("consumer_secret", "")
        if not (key and secret):
            key = secret = ""
            header = request.headers.get("authorization", "")
            if header.lower().startswith("basic "):
                try:
                    key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    key = secret = ""
        if not (key and secret) or not hmac.compare_digest(
            key.encode(), self.consumer_key.encode()
        ):
            code, message = _CANNOT[action]
            return ApiError(401, code, message)
        if not hmac.compare_digest(secret.encode(), self.consumer_secret.encode()):
            return ApiError(
                401, "woocommerce_rest_authentication_error", "Consumer secret is invalid."
            )
        return None

    def _permitted(self, method: str) -> ApiError | None:
        """WC_REST_Authentication::check_permissions, run on ``rest_pre_dispatch`` for a call
        the key authenticated, before the route's arguments and permission check: a read
        needs ``read`` or ``read_write``, a write ``write`` or ``read_write``."""
        reads = method in ("GET", "HEAD")
        if self.key_permissions in ("read_write", "read" if reads else "write"):
            return None
        need = "read" if reads else "write"
        message = f"The API key provided does not have {need} permissions."
        return ApiError(401, "woocommerce_rest_authentication_error", message)

    # -- handlers --------------------------------------------------------------------------

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "rest_invalid_json", "Invalid JSON body passed.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "rest_invalid_json", "Invalid JSON body passed.")
        return body

    async def _list_customers(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        items, headers = list_customers(self.store, request)
        return _json(self._fields(request, items), 200, headers), []

    def _fields(self, request: Request, body: Any) -> Any:
        """``body`` cut to ``_fields``: WordPress filters every answer by it, a write's as a
        read's, but not an error (an :class:`ApiError` never comes here)."""
        return only_fields(request, body) if self.honours_fields else body

    async def _get_customer(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        customer = self.rules.existing_user(request.path_params["id"])
        return _json(self._fields(request, customer)), []

    async def _create_customer(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._body(request)
        if body.get("password") is None and not self.rules.generates_passwords:
            # The route requires the argument then; a batch's create meets the
            # registration check instead (ShopRules.create_customer).
            raise ApiError(
                400,
                "rest_missing_callback_param",
                "Missing parameter(s): password",
                params=["password"],
            )
        created = self.rules.create_customer(body)
        location = f"{request.base_url}{PREFIX.lstrip('/')}/customers/{created['id']}"
        return _json(self._fields(request, created), 201, {"Location": location}), [body]

    async def _update_customer(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        # The route's permission check looks the user up first: a batch's update, which
        # WooCommerce runs without it, answers 400 woocommerce_rest_invalid_id instead.
        self.rules.existing_user(request.path_params["id"])
        body = await self._body(request)
        updated = self.rules.update_customer(request.path_params["id"], body)
        return _json(self._fields(request, updated)), [body]

    async def _delete_customer(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        force = _boolean(request, "force")
        deleted = self.rules.delete_customer(request.path_params["id"], force)
        return _json(self._fields(request, deleted)), []

    async def _batch(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._body(request)
        lists = {name: body.get(name) or [] for name in ("create", "update", "delete")}
        if not all(isinstance(items, list) for items in lists.values()):
            raise ApiError(
                400, "rest_invalid_param", "Invalid parameter(s): create, update, delete"
            )
        if sum(len(items) for items in lists.values()) > BATCH_LIMIT:
            raise ApiError(
                413,
                "woocommerce_rest_request_entity_too_large",
                f"Unable to accept more than {BATCH_LIMIT} items for this request.",
            )
        result: dict[str, list[Any]] = {}
        operations: dict[str, Callable[[Any], dict[str, Any]]] = {
            "create": lambda item: self.rules.create_customer(_mapping(item)),
            "update": lambda item: self.rules.update_customer(
                _mapping(item).get("id"), _mapping(item)
            ),
            # Batch deletes are always forced (WC_REST_Controller::batch_items).
            "delete": lambda item: self.rules.delete_customer(item, True),
        }
        for name, items in lists.items():
            if not items and name not in body:
                continue
            outcomes: list[Any] = []
            for item in items:
                try:
                    outcomes.append(operations[name](item))
                except ApiError as error:
                    # Each item fails on its own: id 0 and the error, status in data.
                    outcomes.append(
                        {
                            "id": 0,
                            "error": {
                                "code": error.code,
                                "message": error.message,
                                "data": {"status": error.status, **error.data},
                            },
                        }
                    )
            result[name] = outcomes
        written = [
            item for item in (*lists["create"], *lists["update"]) if isinstance(item, Mapping)
        ]
        return _json(result), written

    async def _list_orders(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        items, headers = list_orders(self.store, request)
        return _json(self._fields(request, items), 200, headers), []

    async def _get_order(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        order = self.store.orders.get(int(request.path_params["id"]))
        if order is None:
            raise ApiError(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        return _json(self._fields(request, order)), []

    async def _list_notes(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /orders/{id}/notes``: every note, newest first, unpaged (as wc/v3 answers)."""
        order_id = int(request.path_params["id"])
        if order_id not in self.store.orders:
            raise ApiError(404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
        notes = self.store.order_notes.get(order_id, [])
        return _json(list(reversed(notes))), []

    async def _delete_note(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``DELETE /orders/{id}/notes/{note}?force=true``: notes cannot be trashed, so
        without ``force`` WooCommerce answers 501 ``woocommerce_rest_trash_not_supported``."""
        force = _boolean(request, "force")
        order_id, note_id = int(request.path_params["id"]), int(request.path_params["note"])
        notes = self.store.order_notes.get(order_id, [])
        found = next((n for n in notes if n["id"] == note_id), None)
        if order_id not in self.store.orders or found is None:
            raise ApiError(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")
        if not force:
            raise ApiError(
                501,
                "woocommerce_rest_trash_not_supported",
                "The resource does not support trashing.",
            )
        notes.remove(found)
        return _json(found), []

    async def _update_order(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._body(request)
        updated = self.rules.update_order(request.path_params["id"], body)
        return _json(self._fields(request, updated)), [body]

    def _review(self, request: Request, review: dict[str, Any], context: str) -> dict[str, Any]:
        """A stored review as the REST API shows it in ``context``."""
        name = self.store.products.get(int(review["product_id"]), "")
        return review_shape(review, product_name=name, site=str(request.base_url), context=context)

    async def _list_reviews(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        reviews, headers = list_reviews(self.store, request)
        context = request.query_params.get("context", "view")
        shown = [self._review(request, review, context) for review in reviews]
        return _json(self._fields(request, shown), 200, headers), []

    async def _get_review(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        review = self.store.reviews.get(int(request.path_params["id"]))
        if review is None:
            raise ApiError(404, "woocommerce_rest_review_invalid_id", "Invalid review ID.")
        context = request.query_params.get("context", "view")
        return _json(self._fields(request, self._review(request, review, context))), []

    async def _update_review(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``PUT /products/reviews/{id}``: answered in the ``edit`` context, as WooCommerce
        sets it for an update."""
        body = await self._body(request)
        updated = update_review(self.store, request.path_params["id"], body)
        return _json(self._fields(request, self._review(request, updated, "edit"))), [body]

    async def _delete_review(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``DELETE /products/reviews/{id}``: ``{"deleted": true, "previous": ...}`` with
        ``force``, else the review as moved to the trash (``edit`` context either way)."""
        force = _boolean(request, "force")
        review, deleted = delete_review(self.store, request.path_params["id"], force)
        shown = self._review(request, review, "edit")
        body = {"deleted": True, "previous": shown} if deleted else shown
        return _json(self._fields(request, body)), []

    # -- SandboxLike and test helpers ------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The consumer key and secret this shop accepts."""
        return {"consumer_key": self.consumer_key, "consumer_secret": self.consumer_secret}

    def add_person(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed one customer as it sits in the shop's database; return its id.

        No REST validation runs: shops hold whatever imports and old plugins wrote, including
        malformed e-mails, which is what the engine's dead-letter tests need. ``extra`` may
        hold billing keys (``city``, ``postcode``, ``country``, ...), ``billing`` or
        ``shipping`` dicts, ``meta_data``, ``role``, ``username``, ``customer_note`` (kept
        top-level, as checkout-field plugins expose it) and ``date_of_birth`` or any other
        key, which is stored as a meta data entry the way plugins keep custom fields.

        Raises:
            ValueError: a customer with this e-mail already exists.
        """
        if self.store.by_email(email) is not None:
            raise ValueError("a customer with this e-mail already exists")
        billing: dict[str, Any] = {"first_name": first_name, "last_name": last_name}
        billing.update({"email": email, "phone": phone})
        billing.update({k: extra.pop(k) for k in BILLING_FIELDS if k in extra})
        billing.update(extra.pop("billing", {}))
        moment = self.rules.now().replace(tzinfo=None, microsecond=0)
        customer = customer_shape(
            customer_id=self.store.new_customer_id(),
            email=email,
            first_name=first_name,
            last_name=last_name,
            username=str(extra.pop("username", "") or email.split("@", 1)[0]),
            billing={k: str(v) for k, v in billing.items()},
            shipping={k: str(v) for k, v in extra.pop("shipping", {}).items()},
            meta_data=[],
            created=moment,
            modified=moment,
            role=str(extra.pop("role", "customer")),
        )
        if "customer_note" in extra:
            customer["customer_note"] = str(extra.pop("customer_note"))
        meta = list(extra.pop("meta_data", []))
        meta += [{"key": key, "value": value} for key, value in extra.items()]
        self.rules.add_meta(customer["meta_data"], meta)
        self.store.save(customer)
        return str(customer["id"])

    def seed_synthetic(self, n: int, seed: int = 0) -> None:
        """Add ``n`` generated customers, built on demand (a million costs almost nothing)."""
        self.store.seed_synthetic(n, seed)

    def holds(self, email: str) -> bool:
        """Whether a customer with this e-mail exists."""
        return self.store.by_email(email) is not None

    def restorable(self, email: str) -> bool:
        """Always false: WooCommerce deletes customers permanently (no trash for users)."""
        return False

    def record_for(self, email: str) -> dict[str, Any] | None:
        """A copy of the customer with this e-mail, or ``None``."""
        customer_id = self.store.by_email(email)
        customer = self.store.get(customer_id) if customer_id is not None else None
        return copy.deepcopy(customer) if customer is not None else None

    def touch(self, email: str, /, **changes: Any) -> None:
        """Change a customer as the shop owner would, and bump ``date_modified``.

        Keys are customer fields (``first_name``), address dicts (``billing={...}``), dotted
        or double-underscored address keys (``billing.phone``, ``billing__city``), or fields
        outside the REST schema such as ``customer_note``, which are set as they are.
        ``email`` is positional-only so ``touch(old, email=new)`` changes the address.

        Raises:
            KeyError: no customer has this e-mail.
        """
        customer_id = self.store.by_email(email)
        if customer_id is None:
            raise KeyError("no such customer")
        data: dict[str, Any] = {}
        for key, value in changes.items():
            head, sep, tail = key.replace("__", ".").partition(".")
            if sep:
                data.setdefault(head, {})[tail] = value
            else:
                data[head] = value
        self.rules.update_customer(customer_id, data)
        # What the REST schema does not know (a plugin's note field) is written as given.
        customer = self.store.get(customer_id)
        assert customer is not None
        rest_fields = {"email", "first_name", "last_name", "username", "password"}
        outside = {k: v for k, v in data.items() if k not in rest_fields and k not in _NESTED}
        if outside:
            changed = copy.deepcopy(customer)
            changed.update(outside)
            self.store.save(changed, previous_email=str(customer["email"]))

    def add_order(self, customer_id: int | str = 0, **fields: Any) -> int:
        """Add an order; billing defaults to the customer's. Return the order id."""
        owner = int(customer_id or 0)
        customer = self.store.get(owner) if owner else None
        billing = dict(customer["billing"]) if customer else {}
        billing.update(fields.pop("billing", {}))
        order_id = self.store.new_order_id()
        self.store.orders[order_id] = order_shape(
            order_id=order_id,
            customer_id=owner if customer else 0,
            billing=billing,
            shipping=dict(fields.pop("shipping", customer["shipping"] if customer else {})),
            created=self.rules.now().replace(tzinfo=None, microsecond=0),
            **fields,
        )
        return order_id

    def add_order_note(
        self, order_id: int, note: str, *, customer_note: bool = False, author: str = "WooCommerce"
    ) -> int:
        """Add a note to an order (a shop employee's, or one sent to the customer); its id.
        ``author`` is who wrote it as wc/v3 names them: the employee's display name, or
        "WooCommerce" for one the shop added itself (a status change, an e-mail sent)."""
        note_id = self.store.new_note_id()
        self.store.order_notes.setdefault(order_id, []).append(
            {
                "id": note_id,
                "author": author,
                "date_created": self.rules.now().replace(tzinfo=None, microsecond=0).isoformat(),
                "note": note,
                "customer_note": customer_note,
            }
        )
        return note_id

    def notes_of(self, order_id: int) -> list[dict[str, Any]]:
        """Copies of an order's notes, oldest first."""
        return copy.deepcopy(self.store.order_notes.get(order_id, []))

    def order(self, order_id: int) -> dict[str, Any] | None:
        """A copy of one order, or ``None``."""
        found = self.store.orders.get(order_id)
        return copy.deepcopy(found) if found is not None else None

    def orders_for(self, customer_id: int | str) -> list[dict[str, Any]]:
        """Copies of the orders linked to a customer id."""
        owner = int(customer_id)
        return [copy.deepcopy(o) for o in self.store.orders.values() if o["customer_id"] == owner]

    def add_review(
        self,
        reviewer_email: str,
        review: str,
        *,
        reviewer: str = "",
        product_id: int = 93,
        rating: int = 5,
        status: str = "approved",
        verified: bool = False,
        user_id: int | str = 0,
    ) -> int:
        """Seed a product review as it sits in the shop's database (a comment: with the IP
        address and browser it was written from); its id. No REST validation runs, as for
        :meth:`add_person`. A product it names that the shop lacks is added."""
        self.store.products.setdefault(product_id, f"Product {product_id}")
        review_id = self.store.new_note_id()
        self.store.reviews[review_id] = {
            "id": review_id,
            "product_id": product_id,
            "status": status,
            "reviewer": reviewer,
            "reviewer_email": reviewer_email,
            "content": review,
            "rating": rating,
            "verified": verified,
            "user_id": int(user_id or 0),
            "date": self.rules.now().replace(tzinfo=None, microsecond=0).isoformat(),
            "author_ip": "198.51.100.7",
            "agent": "Mozilla/5.0",
        }
        return review_id

    def trash_product(self, product_id: int) -> None:
        """Move a product to the trash, as its owner does in WordPress or over
        ``DELETE /products/{id}`` without ``force`` (``wp_trash_post``). Its reviews go along:
        ``wp_trash_post_comments`` marks every one of them, held, approved, spam or in the
        trash, ``post-trashed``, a status the review list cannot be asked for; the review
        still shows by its id (``get_review`` asks only that the post be a product)."""
        for review in self.store.reviews.values():
            if review["product_id"] == product_id:
                review["status"] = "post-trashed"

    def review(self, review_id: int) -> dict[str, Any] | None:
        """A copy of one review as stored (its text under ``content``), or ``None``."""
        found = self.store.reviews.get(review_id)
        return copy.deepcopy(found) if found is not None else None

    def sign_webhook(
        self,
        body: bytes,
        secret: str,
        *,
        topic: str = "customer.updated",
        webhook_id: int = 1,
        source: str = "https://shop.example.nl/",
        second: int | None = None,
    ) -> dict[str, str]:
        """The headers of a genuine WooCommerce delivery of ``body`` (``WC_Webhook::deliver``).

        The delivery id is WooCommerce's: ``wp_hash(webhook id . strtotime('now'))``
        (``WC_Webhook::get_new_delivery_id``), the same for every delivery one webhook makes
        within a ``second`` (now, unless given): it tells no two deliveries apart.
        """
        resource, _, event = topic.partition(".")
        now = int(self._wall_clock()) if second is None else second
        delivery = hashlib.md5(f"{webhook_id}{now}".encode(), usedforsecurity=False).hexdigest()
        return {
            "Content-Type": "application/json",
            "User-Agent": "WooCommerce/9.5.2 Hookshot (WordPress/6.7.1)",
            "X-WC-Webhook-Source": source,
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Signature": webhook_signature(body, secret),
            "X-WC-Webhook-ID": str(webhook_id),
            "X-WC-Webhook-Delivery-ID": delivery,
        }


def _mapping(item: Any) -> Mapping[str, Any]:
    return item if isinstance(item, Mapping) else {}
