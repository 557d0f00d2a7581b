"""The WooCommerce adapter: customers over the REST API v3 (``/wp-json/wc/v3``).

What WooCommerce offers and how it shapes this adapter:

- The customers list has **no date filter**, so :meth:`WooCommerceAdapter.pull` is a full scan
  in id order; the engine spots changes by content hash. Webhooks give the low-latency path.
  The scan reads by offset, and reads again from further back when customers were deleted
  in what it already read (they would move the rest up, past it).
- Writes go through ``POST /customers/batch`` (100 items in total per call), after an exact
  e-mail lookup so a retried create becomes an update instead of a duplicate. ``update`` sends
  the ``update`` list only: someone the shop knows from guest orders alone gets no account.
  A field the source no longer holds (``OutboundRecord.clear``) is emptied in a customer the
  shop holds, as WooCommerce empties one (:func:`~adapters.woocommerce.payloads.emptied`);
  the e-mail addresses are never emptied (the result's ``kept`` names what is left so),
  and the customer's orders keep their own copy.
- Erasure: WooCommerce keeps orders (and their billing and shipping data) when a user is
  deleted, so the subject's orders (those in the trash too, which ``status=any`` leaves
  out) are anonymised first, all but their addresses' country and state, which the taxes
  charged go by (WooCommerce taxes an order again when its addresses are written:
  :data:`~adapters.woocommerce.payloads.KEPT_FOR_TAX`), then the customer is deleted with
  ``force=true`` (WordPress users have no trash; the deletion is permanent).
- Product reviews are WordPress comments holding the reviewer's name and e-mail. Those under
  the subject's addresses (exactly: the shop's filter goes by its database's collation), and
  those written from their account (by its user id, under whatever address they had then), are
  anonymised before the account goes, as WordPress's own eraser does (the name "Anonymous",
  the e-mail a placeholder, the text and rating kept), and listed in the access copy. One
  another customer wrote from their own account under the address is theirs, as an order
  they placed under it is.
- Webhooks are signed with base64(HMAC-SHA256(body, secret)) and carry no timestamp.
- A pull asks only for the fields the mapping reads, with WordPress's ``_fields`` (its REST
  API filters every response by it since 4.9.8): a customer's username, avatar URL,
  shipping address and the like never leave the shop. A shop that ignores it sends whole
  records, and the mapping drops and counts what it does not read, as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Final, Literal
from urllib.parse import unquote

import httpx
from pydantic import field_validator

from adapters.woocommerce.labels import COPY_LABELS
from adapters.woocommerce.payloads import (
    ANONYMOUS_ORDER,
    ANONYMOUS_PATHS,
    ANONYMOUS_REVIEW,
    code_only,
    decode_cursor,
    emptied,
    encode_cursor,
    is_anonymous,
    response_code,
    valid_email,
)
from adapters.woocommerce.sandbox import WooCommerceSandbox
from adapters.woocommerce.shapes import DELETABLE_ROLES
from adapters.woocommerce.webhooks import parse_delivery, verify_delivery
from connector import jsonutil
from connector.access_labels import CopyLabels
from connector.adapter import (
    RETAINED,
    AdapterSpec,
    Capability,
    ClientConfig,
    ErasureResult,
    Limits,
    OutboundRecord,
    Page,
    Subject,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
    nest,
    placed_by_another,
)
from connector.errors import FatalRemoteError, RecordError, RetryableError
from connector.http import SystemClient, retry_after
from connector.model import normalise_email
from connector.ratelimit import RateLimit
from connector.settings import SystemSettings
from connector.workers import gather_or_cancel

__all__ = [
    "API",
    "SPEC",
    "WooCommerceAdapter",
    "WooCommerceSettings",
    "retry_after",
    "woocommerce_client_config",
    "woocommerce_limits",
]

API = "/wp-json/wc/v3"
PAGE_SIZE = 100  # WordPress caps per_page at 100
#: WooCommerce keeps extra fields as a list of ``{"key", "value"}`` entries.
META_LISTS = frozenset({"meta_data"})

#: Customers read again before where the last page ended. A deletion in the part already
#: read shows as a drop in X-WP-Total, unless as many new customers signed up meanwhile
#: (they come last, in id order): this margin covers that many such deletions per page.
REREAD = 2
#: Reads of one page again by how much X-WP-Total dropped while customers keep being
#: deleted before it; past that the scan steps back until the page meets what was read.
MAX_REREADS = 5
BATCH_SIZE = 100  # woocommerce_rest_batch_items_limit, across create + update + delete
NOT_HELD_NOTE = "no customer account with this id or e-mail (guest orders are not changed)"
#: What an erasure leaves of the orders when anonymise_orders is off, and why.
KEPT_ORDERS = "kept with their billing data (anonymise_orders is off: kept for tax law)"
#: WooCommerce's answer (400) to an update of an order it no longer has.
ORDER_GONE = "woocommerce_rest_shop_order_invalid_id"
#: WooCommerce's answers to a deletion of a customer it no longer has: 404
#: ``wc_user_invalid_id`` (its permission check looks the user up first, in current
#: versions), or 400 ``woocommerce_rest_invalid_id`` (older ones).
CUSTOMER_GONE: dict[int, str] = {404: "wc_user_invalid_id", 400: "woocommerce_rest_invalid_id"}
#: What an erasure's reads ask of an order (``_fields``): its id, and what tells whose it is
#: (the account that placed it, the address it is billed to). Not what was bought, its
#: total, its addresses, or the IP address and browser it was placed from.
ORDER_KEYS = ("id", "customer_id", "billing.email")
#: What an erasure's own reads of the orders it blanks ask for: whose each is
#: (:data:`ORDER_KEYS`) and what the blanking clears (:data:`ANONYMOUS_PATHS`), which tells
#: an order blanked already (its receipt counts those apart). Not what was bought, its total
#: or payment, or the IP address and browser it was placed from.
ERASURE_ORDER_KEYS = tuple(dict.fromkeys((*ORDER_KEYS, *ANONYMOUS_PATHS)))

#: What an erasure's note says an anonymised order keeps, and why.
ORDERS_LEFT = (
    "order IP address and user agent are read-only over wc/v3 and remain; order country "
    "and state are kept, as the taxes charged go by them"
)

#: What an erasure asks the answer to its blanking of an order to hold (``_fields``): the id
#: alone. Only the answer's status is read.
BLANKED_ANSWER = {"_fields": "id"}

#: Product reviews: listed by a user who may ``moderate_comments``, changed by one who may
#: ``edit_products`` (``wc_rest_check_product_reviews_permissions`` [src]), as a shop manager
#: and an administrator may; another key's user is refused (``check --online`` says so).
REVIEWS = f"{API}/products/reviews"
#: The review list's statuses an erasure and an access copy read. Its ``all`` is
#: WP_Comment_Query's: held and approved reviews alone. Those marked spam and those in the
#: trash keep the reviewer's name and e-mail (and can be restored), so they are asked for by
#: name. [src: ``WC_REST_Product_Reviews_Controller::get_collection_params`` and WordPress's
#: ``class-wp-comment-query.php``, read for this; reference/vendor-apis.md has nothing on
#: reviews, and none of it was tried against a live shop.] A review of a product in the trash
#: (``wp_trash_post_comments`` marks each ``post-trashed``, whatever its status) is in none of
#: these, and the list's enum has no way to ask for it; ``GET .../reviews/{id}`` shows it, but
#: nothing lists its id, so it is not reached (README, Known limits). A draft or private
#: product's are listed: the controller's query asks nothing of the product's status.
REVIEW_STATUSES = ("all", "spam", "trash")
#: What an erasure asks of each review (``_fields``): its id, the reviewer's e-mail and the
#: link to the account it was written from (whose it is: :func:`_reviewer_account`; WordPress
#: reads ``a.b`` as ``b`` of ``a`` since 5.3, and gives ``_links`` only when asked for). Not
#: the reviewer's name or what they wrote.
REVIEW_KEYS = ("id", "reviewer_email", "_links.reviewer")
#: A ``reviewer`` link's account: ``rest_url('wp/v2/users/' . $review->user_id)``, under
#: ``/wp-json/`` or, without pretty permalinks, in ``?rest_route=``.
REVIEWER_HREF = re.compile(r"/wp/v2/users/(\d+)(?![\d])")
#: WooCommerce's answer (404) to an update of a review it no longer has.
REVIEW_GONE = "woocommerce_rest_review_invalid_id"
#: What an erasure's note says an anonymised review keeps, and what it cannot change.
REVIEWS_LEFT = (
    "review text and rating are kept; the reviewer's IP address and browser are not "
    "reachable over wc/v3 and remain"
)
#: The key an access copy and an erasure's reads put a review under, in the shape wc/v3 gives
#: it. Not the record's top level: the core reads a record's ``id`` there as a person's (the
#: identity map's), and a review's id is a comment's, which a customer's may equal.
REVIEW_RECORD = "product_review"

#: What an erasure asks of each customer account it deletes (``_fields``): its id (what it
#: deletes), its address (guest orders billed to the one the person moved to are theirs too:
#: :func:`_addresses`) and its role (what a refused deletion names: :func:`_refused_delete`).
#: Not the username, the shipping address or what plugins keep in its meta data.
ERASURE_CUSTOMER_KEYS = ("id", "email", "role")

#: What WooCommerce answers an anonymous caller (401 ``woocommerce_rest_cannot_view``,
#: ``..._cannot_edit`` and the like); a known key with a wrong secret is
#: ``..._authentication_error``.
ANONYMOUS_CODES = "woocommerce_rest_cannot_"
#: Why a shop takes calls that carry the key and secret as anonymous. WooCommerce answers a
#: consumer key it does not know exactly as it answers a call with none
#: (``perform_basic_authentication`` returns without an error [src]), so both are named.
NO_KEY_SEEN = (
    "the shop took the calls as anonymous, though every call carries the consumer key and "
    "secret: either it does not know the key (revoked, mistyped, or another shop's: "
    "WooCommerce answers an unknown key as it answers none), or it never saw it: a server "
    "or proxy in front of WordPress drops the Authorization header (Apache running PHP as "
    "CGI/FastCGI does unless told to pass it: CGIPassAuth On), or does not tell WordPress "
    "the call came over https (WooCommerce reads the key only then)"
)

#: Why a key that reads is refused a write.
READ_ONLY_KEY = (
    "woocommerce_rest_authentication_error: the consumer key reads but may not write (its "
    "permissions are Read): erasures, corrections and syncs into the shop need Read/Write "
    "(WooCommerce > Settings > Advanced > REST API)"
)

#: Per-item batch errors worth another try: a create that lost a race with another writer
#: (the retry looks the e-mail up again and updates instead).
_RETRYABLE_ITEM_CODES = frozenset({"registration-error-email-exists"})

#: WordPress's and WooCommerce's own roles; a plugin may register more (``add_role``).
BUILT_IN_ROLES: Final = (
    "administrator",
    "editor",
    "author",
    "contributor",
    "subscriber",
    "customer",
    "shop_manager",
)
#: A role name as WordPress makes them (``sanitize_key``): lower-case letters, digits, ``_``
#: and ``-``. wc/v3 takes any role the site registered, so one a plugin adds
#: (``wholesale_customer``) is named as it is; whether the shop knows it is
#: ``check --online``'s (:meth:`WooCommerceAdapter.check_settings`).
ROLE_NAME = re.compile(r"[a-z0-9_-]+")
#: What a role that is not a role name is told (the value itself is not repeated: a
#: config error names the key, never what was written there).
ROLE_EXPECTED = (
    'must be "all", a role name (lower-case letters, digits, _ and -: "customer", or one a '
    'plugin adds), or a list of roles but "all" (role = ["customer", "subscriber"])'
)
#: What an item of a list of roles that is none of them is told.
ROLE_IN_LIST = (
    'is not a role name: lower-case letters, digits, _ and - ("all" stands alone: role = "all")'
)
#: What ``check --online`` says of a configured role the shop does not know.
UNKNOWN_ROLE = "the shop knows no role {role!r} (a typo, or the plugin adding it is off)"


class WooCommerceSettings(SystemSettings):
    """The ``[systems.<name>]`` table of a WooCommerce shop.

    Attributes:
        anonymise_orders: blank the subject's orders (billing, shipping, note; not the
            addresses' country and state) before deleting the customer on erasure. Turn off
            only where order data must be kept by law, and say so in the register.
        role: which users a pull lists (WooCommerce's own default is ``customer``): "all",
            one role, or several (a tuple of two or more: a one-role list is read as that
            role). wc/v3 lists one role per call, or all: several are listed as all, and
            those of another role left out here (:meth:`WooCommerceAdapter.pull_includes`).
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("consumer_key", "consumer_secret")
    #: WooCommerce reads the key and secret (HTTP Basic) over HTTPS only; over plain http it
    #: wants OAuth 1.0a signatures [docs], which this adapter does not make.
    https_only: ClassVar[str | None] = (
        "WooCommerce accepts the consumer key and secret over https:// only (over http:// it "
        "requires OAuth 1.0a signatures, which klantsync does not send): every call would be "
        "refused with 401"
    )

    adapter: Literal["woocommerce"]
    anonymise_orders: bool = True
    role: str | tuple[str, ...] = "all"

    @field_validator("role", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        # Checked here, not by the type: a union's own error names its branches, which
        # someone editing the TOML file never wrote.
        if isinstance(value, str):
            if value != "all" and not ROLE_NAME.fullmatch(value):
                raise ValueError(ROLE_EXPECTED)
            return value
        if not isinstance(value, list | tuple):
            raise ValueError(ROLE_EXPECTED)
        if not value:
            raise ValueError(
                'an empty list of roles lists nobody: name one or more roles, or "all"'
            )
        for place, name in enumerate(value, start=1):
            if not isinstance(name, str) or not ROLE_NAME.fullmatch(name) or name == "all":
                raise ValueError(f"item {place} of the list {ROLE_IN_LIST}")
        named = tuple(dict.fromkeys(value))
        # One role alone is asked of the shop by name, which lists no one else at all.
        return named[0] if len(named) == 1 else named

    def check_warnings(self) -> list[str]:
        """A role not among WordPress's and WooCommerce's own: a plugin's, or a typo
        ("customers") that a sync of one role would meet as a bare 400 and a list of roles
        as nobody listed, in silence. ``check --online`` asks the shop."""
        named = (self.role,) if isinstance(self.role, str) else self.role
        return [
            f"role: {role!r} is not one of WordPress's or WooCommerce's own roles "
            f"({', '.join(BUILT_IN_ROLES)}): right for a role a plugin adds; "
            "check --online asks the shop whether it knows it"
            for role in named
            if role != "all" and role not in BUILT_IN_ROLES
        ]


def woocommerce_limits(settings: WooCommerceSettings) -> Limits:
    """wc/v3 has no rate limit of its own; a host or WAF limit comes from the settings."""
    rate: dict[str, RateLimit] = {}
    if settings.rate_limit is not None:
        rate["default"] = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    return Limits(
        batch_size=BATCH_SIZE,
        page_size=PAGE_SIZE,
        rate=rate,
        max_concurrency=settings.max_concurrency or 4,
    )


def woocommerce_client_config(settings: WooCommerceSettings) -> ClientConfig:
    """HTTP basic with the consumer key and secret (over HTTPS, as WooCommerce prescribes)."""
    return ClientConfig(
        auth=(settings.credential("consumer_key"), settings.credential("consumer_secret")),
        wait_hint=retry_after,
    )


class WooCommerceAdapter:
    """Customers of a WooCommerce shop (see the module docstring for the approach).

    Args:
        client: the shop's HTTP client, base URL the shop root (``https://shop.example.nl``).
        settings: the shop's validated settings.
    """

    kind = "woocommerce"
    capabilities: frozenset[Capability] = frozenset(
        {"pull", "upsert", "update", "find", "erase", "webhooks"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: Each order found comes with what was bought, its total and payment method, the IP
    #: address and browser it was placed from, and its notes; each product review with what
    #: was written and the rating given.
    copy_categories: frozenset[str] = frozenset({"orders", "online", "notes", "reviews"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS
    #: What a correction's step says where the shop holds no account of the person: it
    #: reads no orders (``find_records``), and changes none, guest orders billed to them too.
    not_held_note: str = NOT_HELD_NOTE

    def __init__(self, client: SystemClient, settings: WooCommerceSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = woocommerce_limits(settings)
        #: The top-level fields a pull asks for (``_fields``); ``None``: whole records.
        self.asked_fields: frozenset[str] | None = None
        #: The roles a pull keeps of all users, where ``role`` names several (wc/v3 lists
        #: one role per call, or all); ``None``: the shop lists only those a pull takes.
        role = settings.role
        self._several: frozenset[str] | None = None if isinstance(role, str) else frozenset(role)

    def ask_only_for(self, fields: frozenset[str]) -> None:
        """Let a pull ask the shop for ``fields`` alone (and the id, which the scan reads)."""
        self.asked_fields = frozenset(fields) | {"id"}

    async def fields_honoured(self) -> bool | None:
        """Whether the shop cuts its answers to ``_fields`` (``check --online``): one
        customer asked for by id alone. ``None`` when it holds nobody to tell by."""
        path = f"{API}/customers"
        params = {"per_page": 1, "role": "all", "_fields": "id"}
        response = await self._request("GET", path, params=params)
        body = self._json(response, "GET", path)
        if not isinstance(body, list) or not body or not isinstance(body[0], dict):
            return None
        return set(body[0]) <= {"id"}

    async def check_settings(self) -> None:
        """Whether the key may write, for ``check --online``: an empty ``customers/batch``,
        which changes nothing.

        A key made with Read permissions reads everything a ``find`` reads, so the check
        passed, and the first erasure, correction or sync into the shop was refused 401
        ``woocommerce_rest_authentication_error`` (``check_permissions`` [src], before the
        route runs), the code a wrong secret gets.

        Raises:
            FatalRemoteError: the key may not write, saying so; or the failure of the call.
        """
        path = f"{API}/customers/batch"
        try:
            await self._request("POST", path, json={})
        except FatalRemoteError as exc:
            if exc.status != 401 or not exc.detail.startswith("woocommerce_rest_authentication_"):
                raise
            # A find with the same key and secret was answered just before: not the secret.
            raise FatalRemoteError(exc.system, "POST", path, 401, READ_ONLY_KEY) from exc
        await self._check_roles()

    async def _check_roles(self) -> None:
        """Each configured role not WordPress's own, asked of the shop (one call each): wc/v3
        answers a role it does not know 400 ``rest_invalid_param``. Taken by name at load, a
        typo pulled nobody where it was one of several (everyone is listed and kept by role).

        Raises:
            FatalRemoteError: naming the first role the shop does not know.
        """
        role = self.settings.role
        named = (role,) if isinstance(role, str) else role
        path = f"{API}/customers"
        for name in named:
            if name == "all" or name in BUILT_IN_ROLES:
                continue
            params = {"per_page": 1, "role": name, "_fields": "id"}
            try:
                await self._request("GET", path, params=params)
            except (RecordError, FatalRemoteError) as exc:
                if exc.status != 400 or not exc.detail.startswith("rest_invalid_param"):
                    raise
                detail = f"rest_invalid_param: {UNKNOWN_ROLE.format(role=name)}"
                raise FatalRemoteError(exc.system, "GET", path, 400, detail) from exc

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One call through the client, a 401 that takes the caller for anonymous said as
        such, with both of its causes: an unknown key, or a key the shop never saw (a key
        that is right is not replaced for nothing, nor a revoked one looked for in Apache).

        Raises:
            FatalRemoteError: as the client does; for a shop that took the caller for
                anonymous, saying why it may have.
        """
        try:
            return await self.client.request(method, path, **options)
        except FatalRemoteError as exc:
            if exc.status != 401 or not exc.detail.startswith(ANONYMOUS_CODES):
                raise
            detail = f"{exc.detail}: {NO_KEY_SEEN}"
            raise FatalRemoteError(exc.system, exc.method, path, 401, detail) from exc

    # -- pull ------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Scan all customers in id order, one page per call; the last page is ``complete``.

        Pages are read by offset into the id-ordered list. A customer deleted in the part
        already read (an erasure running beside the sync, the shop owner) moves every later
        one up a place, so a scan that went on where it stopped would pass over as many
        customers as were deleted, until its next run. So each page starts a little before
        where the last one ended (:data:`REREAD`), and further back by as many customers as
        ``X-WP-Total`` dropped since the last page, and in any case until the page meets what
        was read (a page whose first id is past the highest delivered: as many signed up
        meanwhile as were deleted, or more deleted than the total showed); no page that
        does not is used. What was delivered already is known by its id (ids only grow) and
        dropped. Where ``role`` names several roles, everyone is listed and the other
        roles are dropped from each page after the scan counted them as read. The cursor
        holds the offset, the highest id read and the count, so a run resumed after a
        crash does the same. If the shop
        answers two pages with the same span of ids (it ignores ``offset``), the scan stops
        with an error instead of looping.
        """
        position, after, total = decode_cursor(cursor, PAGE_SIZE)
        path = f"{API}/customers"
        spans: set[tuple[int, int]] = set()
        while True:
            start = max(0, position - REREAD)
            response, raw, counted = await self._customers_at(path, start)
            reread = 0
            while (
                total is not None
                and counted is not None
                and counted < total
                and start > 0
                and reread < MAX_REREADS
            ):
                # Deleted since the last page: read from as far back as they could have
                # moved the rest. Bounded, and `start` moves only with a read, so `raw` is
                # always the page at `start`: a shop deleting faster than we read is left
                # to the check below.
                start, total = max(0, start - (total - counted)), counted
                reread += 1
                response, raw, counted = await self._customers_at(path, start)
            step = 2 * REREAD
            while start > 0 and not (raw and raw[0]["id"] <= after):
                # The page starts past the highest id delivered, or the list now ends
                # before it: customers between may have moved up unseen (as many signed up
                # as were deleted, so X-WP-Total did not drop, or more were deleted than
                # the reads above followed). Read from further back until the page meets
                # what was read: only such a page is sure to hold everyone after it. No
                # budget: the step doubles, so this ends at the latest at the list's start.
                start, step = max(0, start - step), step * 2
                reread += 1
                response, raw, counted = await self._customers_at(path, start)
            total = counted if counted is not None else total
            if raw and not reread:
                # Two pages with the same first and last id: the shop ignores `offset`.
                span = (raw[0]["id"], raw[-1]["id"])
                if span in spans:
                    raise FatalRemoteError(
                        self.client.system, "GET", path, response.status_code, "page repeated"
                    )
                spans.add(span)
            records = [r for r in raw if r["id"] > after]
            after = max([after, *(r["id"] for r in records)])
            position = start + len(raw)
            if self._several is not None:
                # Listed as all, the roles not named are left out only now: the offset,
                # the highest id read and the last page went by the whole page, so a page
                # of staff is neither read again for ever nor taken for the last one.
                records = [r for r in records if r.get("role") in self._several]
            if not raw or len(raw) < PAGE_SIZE or (total is not None and position >= total):
                yield Page(records=records, cursor=None, complete=True)
                return
            yield Page(records=records, cursor=encode_cursor(position, after, total))

    def pull_includes(self, record: Mapping[str, Any]) -> bool:
        """Whether a pull lists this customer: its role is one ``role`` syncs. (Looked up
        by e-mail, for a webhook or a resync, anyone of any role is found.)"""
        if self._several is not None:
            return record.get("role") in self._several
        return self.settings.role == "all" or record.get("role") == self.settings.role

    async def _customers_at(
        self, path: str, offset: int
    ) -> tuple[httpx.Response, list[dict[str, Any]], int | None]:
        """One page of customers in id order from ``offset``, and ``X-WP-Total`` if given."""
        params = {
            "orderby": "id",
            "order": "asc",
            "per_page": PAGE_SIZE,
            "offset": offset,
            "role": "all" if self._several is not None else self.settings.role,
        }
        if self.asked_fields is not None:
            # The role too where the pull itself picks the roles it keeps.
            asked = self.asked_fields if self._several is None else self.asked_fields | {"role"}
            params["_fields"] = ",".join(sorted(asked))
        response = await self._request("GET", path, params=params)
        raw = self._list(response, "GET", path)
        counted = response.headers.get("x-wp-total", "")
        return response, raw, int(counted) if counted.isdecimal() else None

    # -- upsert ----------------------------------------------------------------------------

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Create or update customers, keyed on external id, else on exact e-mail."""
        results: list[UpsertResult] = []
        for start in range(0, len(records), BATCH_SIZE):
            results += await self._upsert_batch(records[start : start + BATCH_SIZE])
        return results

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Change customers the shop holds (by external id, else exact e-mail); create none.

        A record with no customer is ``not_held``, even when the shop has guest orders billed
        to the e-mail (``find`` lists those): an order is a record of a sale, not an account,
        and ``upsert`` would create the account. So is one whose e-mail finds only another
        subject's account (``record.spare``).
        """
        results: list[UpsertResult] = []
        for start in range(0, len(records), BATCH_SIZE):
            results += await self._upsert_batch(records[start : start + BATCH_SIZE], create=False)
        return results

    async def _upsert_batch(
        self, records: Sequence[OutboundRecord], *, create: bool = True
    ) -> list[UpsertResult]:
        ids = await self._known_ids(records)
        results = await self._write_known(records, ids, create)
        # A stale external id (the shop owner deleted the customer) fails as invalid_id:
        # look those up by e-mail and write again, so the record is not lost.
        stale = [
            i
            for i, (rec, res) in enumerate(zip(records, results, strict=True))
            if rec.external_id and res.reason == "woocommerce_rest_invalid_id"
        ]
        if stale:
            again = [records[i] for i in stale]
            again_ids = await self._known_ids(again, ignore_given=True)
            retried = await self._write_known(again, again_ids, create)
            for i, result in zip(stale, retried, strict=True):
                results[i] = result
        return results

    async def _known_ids(
        self, records: Sequence[OutboundRecord], *, ignore_given: bool = False
    ) -> list[str | None]:
        async def resolve(record: OutboundRecord) -> str | None:
            if record.external_id and not ignore_given:
                return record.external_id
            # Only the id is wanted: the shop's copy of the person need not come along.
            customer = await self._customer_by_email(record.email, {"_fields": "id"})
            if customer is None or str(customer["id"]) in record.spare:
                return None  # none, or another subject's account (OutboundRecord.spare)
            return str(customer["id"])

        # The first failure (a revoked key's 401) ends the batch's lookups, not only the batch.
        return await gather_or_cancel(
            [partial(resolve, r) for r in records], limit=self.limits.max_concurrency
        )

    async def _write_known(
        self, records: Sequence[OutboundRecord], ids: Sequence[str | None], create: bool
    ) -> list[UpsertResult]:
        """``_write``; without ``create``, a record with no known customer is ``not_held``
        and left out of the call."""
        if create:
            return await self._write(records, ids)
        results = [UpsertResult(r.ref, "not_held", note=NOT_HELD_NOTE) for r in records]
        held = [i for i, known in enumerate(ids) if known is not None]
        if held:
            written = await self._write([records[i] for i in held], [ids[i] for i in held])
            for i, result in zip(held, written, strict=True):
                results[i] = result
        return results

    async def _write(
        self, records: Sequence[OutboundRecord], ids: Sequence[str | None]
    ) -> list[UpsertResult]:
        creates: list[int] = []
        updates: list[int] = []
        kept: dict[int, frozenset[str]] = {}
        body: dict[str, list[dict[str, Any]]] = {"create": [], "update": []}
        for i, (record, known) in enumerate(zip(records, ids, strict=True)):
            fields = _with_billing_names(record.fields)
            if record.clear and known is not None:
                # What the source no longer holds is emptied in a customer the shop holds;
                # one this call creates holds nothing to empty. What it cannot empty is kept.
                empty = emptied(record.clear, fields)
                fields = {**empty, **fields}
                kept[i] = frozenset(record.clear - empty.keys() - fields.keys())
            item = nest(fields, key_value_lists=META_LISTS)
            if known is None:
                item.setdefault("email", record.email)
                body["create"].append(item)
                creates.append(i)
            else:
                item["id"] = int(known) if known.isdecimal() else known
                body["update"].append(item)
                updates.append(i)
        results = await self._batch(records, body, creates, updates)
        # WooCommerce refuses an update whose e-mail exists and is not byte for byte the
        # customer's own: their own address in another case (stored "Jan@", sent "jan@").
        # Those are sent again without the e-mail, which is theirs already.
        refused = [
            (i, item)
            for i, item in zip(updates, body["update"], strict=True)
            if results[i].reason == "woocommerce_rest_customer_invalid_email"
        ]
        if refused:
            stored = await self._stored_emails([str(item["id"]) for _, item in refused])
            again = [
                (i, {k: v for k, v in item.items() if k != "email"})
                for i, item in refused
                if str(item.get("email", "")).lower() == stored.get(str(item["id"]), "").lower()
            ]
            if again:
                retried = await self._batch(
                    records, {"update": [item for _, item in again]}, [], [i for i, _ in again]
                )
                for i, _ in again:
                    results[i] = retried[i]
        for i, names in kept.items():
            if names and results[i].outcome == "updated":
                results[i] = results[i]._replace(kept=names)
        return results

    async def _batch(
        self,
        records: Sequence[OutboundRecord],
        body: dict[str, list[dict[str, Any]]],
        creates: list[int],
        updates: list[int],
    ) -> list[UpsertResult]:
        """One ``customers/batch`` call; a result per position of ``records`` it carried."""
        payload = {name: items for name, items in body.items() if items}
        response = await self._request("POST", f"{API}/customers/batch", json=payload)
        answer = self._json(response, "POST", f"{API}/customers/batch")
        results: list[UpsertResult] = [
            UpsertResult(r.ref, "failed", reason="not_sent", retryable=True) for r in records
        ]
        for name, positions in (("create", creates), ("update", updates)):
            items = answer.get(name) if isinstance(answer, dict) else None
            items = items if isinstance(items, list) else []
            outcome: Literal["created", "updated"] = "created" if name == "create" else "updated"
            for n, i in enumerate(positions):
                results[i] = self._result(
                    records[i].ref, items[n] if n < len(items) else None, outcome
                )
        return results

    async def _stored_emails(self, ids: Sequence[str]) -> dict[str, str]:
        """The e-mail each of these customers has in the shop now, as stored (one call).

        Asked for the id and e-mail alone (``_fields``): a whole customer carries the
        shipping address, the username, the Gravatar hash and whatever meta data plugins
        keep (a date of birth, an IP address), none of which this reads."""
        numbers = [known for known in ids if known.isdecimal()]
        if not numbers:
            return {}
        params = {
            "include": ",".join(numbers),
            "per_page": PAGE_SIZE,
            "role": "all",
            "_fields": "id,email",
        }
        response = await self._request("GET", f"{API}/customers", params=params)
        return {
            str(customer["id"]): str(customer.get("email") or "")
            for customer in self._list(response, "GET", f"{API}/customers")
        }

    @staticmethod
    def _result(ref: str, item: Any, outcome: Literal["created", "updated"]) -> UpsertResult:
        if not isinstance(item, Mapping):
            # The shop answered fewer items than sent: unknown fate, so try again later.
            return UpsertResult(ref, "failed", reason="missing_in_response", retryable=True)
        error = item.get("error")
        if error or not _is_id(item.get("id")):
            code = code_only(error)
            data = error.get("data") if isinstance(error, Mapping) else None
            status = data.get("status") if isinstance(data, Mapping) else None
            retryable = code in _RETRYABLE_ITEM_CODES or (isinstance(status, int) and status >= 500)
            return UpsertResult(ref, "failed", reason=code, retryable=retryable)
        return UpsertResult(ref, outcome, external_id=str(item["id"]))

    # -- reading answers -------------------------------------------------------------------

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        """The answer's JSON. A body that is not JSON (WordPress in maintenance mode answers
        an HTML page, a plugin's PHP notice can come before the JSON) is a retryable error."""
        try:
            return jsonutil.loads(response.content)
        except ValueError:
            raise RetryableError(
                self.client.system, method, path, response.status_code, "not JSON"
            ) from None

    def _list(self, response: httpx.Response, method: str, path: str) -> list[dict[str, Any]]:
        """A wc/v3 collection: its objects with a WordPress id (a positive integer).

        Anything but a list is an error, never an empty collection: an erasure must not
        conclude that nobody is held from an answer it could not read.
        """
        body = self._json(response, method, path)
        if not isinstance(body, list):
            raise FatalRemoteError(
                self.client.system, method, path, response.status_code, "not a list"
            )
        return [item for item in body if isinstance(item, dict) and _is_id(item.get("id"))]

    # -- find and erase --------------------------------------------------------------------

    async def _customer_by_email(
        self, email: str, fields: Mapping[str, str]
    ) -> dict[str, Any] | None:
        if not valid_email(email):
            # WordPress refuses such an address in the filter (400 rest_invalid_param), and
            # no account can hold one: nobody, not a failure (the id may still find them).
            return None
        # role=all: a subscriber or shop manager with this e-mail is the same person.
        params = {"email": email, "role": "all"}
        asked = fields.get("_fields")
        # The address is read back to be compared (below), whatever else the caller asks.
        narrowed = {"_fields": ",".join(sorted({*asked.split(","), "email"}))} if asked else {}
        path = f"{API}/customers"
        if email.startswith("*"):
            # WP_User_Query reads a "*" at the start of the search as a wildcard (a LIKE):
            # "*bob@example.nl" lists jimbob@example.nl too, in any number.
            listed = await self._list_all(path, params, narrowed)
        else:
            response = await self._request("GET", path, params={**params, **narrowed})
            listed = self._list(response, "GET", path)
        # Only the account holding the address itself is the person's: the first hit was
        # taken before, to copy, write or delete, whoever's it was. (MySQL's collation
        # compares without case, and in some "ss" as "ß": two people, as for reviews.)
        wanted = normalise_email(email)
        for customer in listed:
            held = customer.get("email")
            if isinstance(held, str) and normalise_email(held) == wanted:
                return customer
        return None

    async def _customer_by_id(
        self, external_id: str | None, fields: Mapping[str, str]
    ) -> dict[str, Any] | None:
        known = _wp_id(external_id)
        if known is None:
            return None  # not a WordPress id: it cannot address anyone here
        path = f"{API}/customers/{known}"
        response = await self._request("GET", path, params=fields, accept=(404,))
        if response.status_code != 200:
            return None
        body = self._json(response, "GET", path)
        if not (isinstance(body, dict) and _is_id(body.get("id"))):
            # Not a customer, and not a 404: never read as "nobody" (see _list).
            raise RetryableError(self.client.system, "GET", path, 200, "unreadable answer")
        return body

    async def _customers_for(
        self, subject: Subject, fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The subject's customer accounts: the one the identity map's id names first, then
        the one holding the address where that is another; whole, or cut to ``fields``
        (``{"_fields": ...}``). Another subject's (Subject.spare) is neither read nor deleted.

        The id is read beside the address, not only when the address finds nobody: the
        person's shop e-mail may have changed while their former address now finds another
        account (someone who signed up under it since), and the person's own account was
        then neither copied nor erased.
        """
        fields = fields or {}
        by_email = await self._customer_by_email(subject.email, fields)
        found = [] if by_email is None else [by_email]
        if by_email is None or str(by_email["id"]) != _wp_id(subject.external_id):
            own = await self._customer_by_id(subject.external_id, fields)
            found = found if own is None else [own, *found]
        return [c for c in found if str(c["id"]) not in subject.spare]

    async def _list_all(
        self, path: str, params: Mapping[str, Any], fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every page of a wc/v3 collection (orders, reviews) under ``params``."""
        items: list[dict[str, Any]] = []
        seen: set[int] = set()
        page = 1
        while True:
            response = await self._request(
                "GET",
                path,
                params={**params, **(fields or {}), "per_page": PAGE_SIZE, "page": page},
            )
            batch = self._list(response, "GET", path)
            fresh = [o for o in batch if o["id"] not in seen]
            if batch and not fresh:
                return items  # the shop is not paging; everything has been seen
            seen.update(o["id"] for o in fresh)
            items += fresh
            total_pages = response.headers.get("x-wp-totalpages", "")
            if not batch or (
                page >= int(total_pages) if total_pages.isdecimal() else len(batch) < PAGE_SIZE
            ):
                return items
            page += 1

    async def _orders_anywhere(
        self, params: Mapping[str, Any], fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """``_list_orders``, and the same in the trash: wc/v3's ``status=any`` (its default)
        leaves trashed orders out and lists them only under ``status=trash``. A trashed
        order (the shop owner's bin, WooCommerce's own clean-up of failed and cancelled
        orders) keeps its billing data and can be restored, so access shows it and an
        erasure blanks it like any other."""
        listed = await self._list_all(f"{API}/orders", params, fields)
        return listed + await self._list_all(f"{API}/orders", {**params, "status": "trash"}, fields)

    async def _orders_for(
        self,
        subject: Subject,
        customers: Sequence[Mapping[str, Any]],
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The subject's orders, trashed ones included: those their ``customers`` placed,
        and those billed to their addresses (:func:`_addresses`) that are theirs by
        :func:`~connector.adapter.placed_by_another`, the rule access reads its copy by
        too: guest orders, and their own accounts' (an account the identity map names
        counts, should the shop not have detached its orders when it was deleted). An order
        another account holder billed to the address is that customer's: an erasure that
        blanked it destroyed their name, address and note. Whole, or cut to ``fields``
        (``{"_fields": ...}``, which must keep what this reads: :data:`ORDER_KEYS`)."""
        accounts = [int(customer["id"]) for customer in customers]
        own = {str(account) for account in accounts}
        known = _wp_id(subject.external_id)
        if known and known not in subject.spare:
            own.add(known)
        found: dict[int, dict[str, Any]] = {}
        for account in accounts:
            for order in await self._orders_anywhere({"customer": account}, fields):
                found[order["id"]] = order
        for email in _addresses(subject, customers):
            wanted = normalise_email(email)
            if "@" not in wanted:
                # Without an e-mail there is nothing to match guest orders on; an empty search
                # would list every order of the shop, and blank billing e-mails would "match".
                continue
            # search is a substring match over the address index: keep exact e-mail matches
            # only, so jan@x.nl is never mistaken for an@x.nl, nor strasse@ (another subject)
            # for straße@, which the shop's database may fold to the same.
            for order in await self._orders_anywhere({"search": email}, fields):
                billing = order.get("billing")
                billed_to = billing.get("email", "") if isinstance(billing, Mapping) else ""
                if (
                    isinstance(billed_to, str)
                    and normalise_email(billed_to) == wanted
                    and not placed_by_another(order, own)
                ):
                    found[order["id"]] = order
        return [found[k] for k in sorted(found)]

    async def _reviews_for(
        self,
        subject: Subject,
        customers: Sequence[Mapping[str, Any]],
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The subject's product reviews: those written under one of their addresses
        (:func:`_addresses`) and those written from one of their accounts
        (:func:`_review_accounts`), in every status the list gives (:data:`REVIEW_STATUSES`).

        The shop's ``reviewer_email`` filter compares by its database's collation (without
        case; in some, "ß" as "ss"), so only exact matches are kept, as for guest orders:
        strasse@ and straße@ are two people. Whole, or cut to ``fields`` (``{"_fields":
        ...}``, which must keep ``reviewer_email`` and ``_links.reviewer``)."""
        accounts = _review_accounts(subject, customers)
        addresses = [
            (email, normalise_email(email))
            for email in _addresses(subject, customers)
            # WordPress refuses such an address in the filter (400 rest_invalid_param), as its
            # REST API and its comment form (where the site asks for an e-mail, its default)
            # refuse it for a review: nobody, not a failure.
            if valid_email(email)
        ]
        asked = [
            *(
                {"reviewer_email": email, "status": s}
                for email, _ in addresses
                for s in REVIEW_STATUSES
            ),
            *({"reviewer": account, "status": s} for account in accounts for s in REVIEW_STATUSES),
        ]
        # Asked several at once: one list call per address or account and status, each a
        # round trip, made one after the other was most of an erasure's time at the shop.
        # No more at once than the shop takes, and the first refusal (a revoked key's 401)
        # ends the rest: with a bare gather they all ran, each earning its own 401.
        calls = [partial(self._list_all, REVIEWS, p, fields) for p in asked]
        # gather_or_cancel waits on what it starts: none (no address WordPress takes, no
        # account) is nothing to wait for.
        answers = await gather_or_cancel(calls, limit=self.limits.max_concurrency) if calls else []
        wanted = {normalised for _, normalised in addresses}
        found: dict[int, dict[str, Any]] = {}
        for params, reviews in zip(asked, answers, strict=True):
            for review in reviews:
                if "reviewer" in params:
                    # Anonymised, it names them no more; and WordPress keeps its user id
                    # after the account is deleted (no REST argument clears it), so an
                    # erasure's check would find it again for ever.
                    if review.get("reviewer_email") != ANONYMOUS_REVIEW["reviewer_email"]:
                        found[review["id"]] = review
                    continue
                written = review.get("reviewer_email")
                if (
                    isinstance(written, str)
                    and normalise_email(written) in wanted
                    and not _written_by_another(review, accounts)
                ):
                    found[review["id"]] = review
        return [found[k] for k in sorted(found)]

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """The customer account(s) (as wc/v3 returns them), each of their orders as
        ``{"type": "order"}`` and each of their product reviews as ``{"type": "review"}``
        (under :data:`REVIEW_RECORD`)."""
        customers = await self._customers_for(subject)
        orders = await self._orders_for(subject, customers)
        held: list[dict[str, Any]] = list(customers)
        kept = self._kept()
        # Each with its notes: a shop employee's, or one sent to the customer, they may
        # hold what the person said or what was said about them.
        held += [
            {"type": "order", **order, "notes": await self._notes_of(order["id"]), **kept}
            for order in orders
        ]
        # What they wrote about a product and the rating they gave, held and approved ones,
        # those marked spam and those in the trash alike.
        return held + [_review_record(r) for r in await self._reviews_for(subject, customers)]

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The customer account(s) as :meth:`find` finds them, with the fields a pull asks
        for alone, and with ``orders`` their orders as :meth:`find` finds and marks them,
        each with what tells whose it is alone (:data:`ORDER_KEYS`) and without its notes,
        and their product reviews with their id and reviewer e-mail alone
        (:data:`REVIEW_KEYS`) (see ``Adapter.find``).

        An erasure's snapshot and check need the accounts and whether orders or reviews of
        the person are held; a correction changes the account alone. Neither reads what was
        bought, the order's addresses, the staff's notes on it or what a review says: the
        erasure blanks the orders, deletes their notes and anonymises the reviews reading
        them itself (:meth:`erase`).
        """
        asked = self.asked_fields
        fields = {} if asked is None else {"_fields": ",".join(sorted(asked))}
        customers = await self._customers_for(subject, fields)
        if not orders:
            return customers
        listed = await self._orders_for(subject, customers, {"_fields": ",".join(ORDER_KEYS)})
        kept = self._kept()
        whose = {"_fields": ",".join(REVIEW_KEYS)}
        reviews = await self._reviews_for(subject, customers, whose)
        return [
            *customers,
            *({"type": "order", **order, **kept} for order in listed),
            *(_review_record(review) for review in reviews),
        ]

    def _kept(self) -> dict[str, str]:
        """What marks a found order: not anonymised by an erasure (anonymise_orders off:
        kept for tax law), it is held on purpose (:data:`RETAINED`), found for access, and
        no sign an erasure failed."""
        return {} if self.settings.anonymise_orders else {RETAINED: "tax_records"}

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The customer alone (see ``Adapter.find``): a targeted sync reads no orders, and
        only the fields a pull asks for, and the role :meth:`pull_includes` reads."""
        asked = self.asked_fields
        fields = {} if asked is None else {"_fields": ",".join(sorted(asked | {"role"}))}
        return await self._customers_for(subject, fields)

    async def _notes_of(self, order_id: int) -> list[dict[str, Any]]:
        """``GET /orders/{id}/notes``: every note (wc/v3 does not page them); [] if gone."""
        path = f"{API}/orders/{order_id}/notes"
        response = await self._request("GET", path, accept=(404,))
        return [] if response.status_code == 404 else self._list(response, "GET", path)

    async def _delete_notes(self, order_id: int) -> int:
        """Delete every note of an order (``force=true``: notes cannot be trashed), as
        WooCommerce's own eraser does; how many went."""
        deleted = 0
        for note in await self._notes_of(order_id):
            path = f"{API}/orders/{order_id}/notes/{note['id']}"
            response = await self._request("DELETE", path, params={"force": "true"}, accept=(404,))
            deleted += response.status_code == 200
        return deleted

    async def erase(self, subject: Subject) -> ErasureResult:
        """Anonymise the subject's orders (if configured) and product reviews, then delete
        their customer account(s) for good.

        The accounts are asked for what deletes them alone (:data:`ERASURE_CUSTOMER_KEYS`),
        the orders for whose they are and what the blanking clears alone
        (:data:`ERASURE_ORDER_KEYS`), the reviews for whose they are alone
        (:data:`REVIEW_KEYS`): the rest of any has no use here, and goes, or stays in the
        shop, unread. The account goes last: its address finds their guest orders and
        reviews written under it."""
        customers = await self._customers_for(subject, {"_fields": ",".join(ERASURE_CUSTOMER_KEYS)})
        anonymised = blank = notes = 0
        if self.settings.anonymise_orders:
            blanking = {"_fields": ",".join(ERASURE_ORDER_KEYS)}
            orders = await self._orders_for(subject, customers, blanking)
            anonymised, blank, notes = await self._anonymise(orders)
        whose_reviews = {"_fields": ",".join(REVIEW_KEYS)}
        found_reviews = await self._reviews_for(subject, customers, whose_reviews)
        reviews = await self._anonymise_reviews(found_reviews)
        # An attempt cut off half-way anonymised reviews (deleted accounts) that no longer
        # show under the person; the request's snapshot says how many there were.
        gone = (subject.snapshot or frozenset()) - self.snapshot_keys(
            [*customers, *(_review_record(review) for review in found_reviews)]
        )
        gone_reviews = sum(key.startswith("review/") for key in gone)
        gone_accounts = len(gone) - gone_reviews
        if not customers:
            return await self._erase_guest(subject, (anonymised, blank, notes), reviews)
        statuses = [await self._delete_customer(customer) for customer in customers]
        deleted = statuses.count(200)
        orders_text = (
            _anonymised(anonymised, blank, notes)
            if self.settings.anonymise_orders
            else f"orders {KEPT_ORDERS}"
        )
        reviews_text = _reviews_anonymised(reviews, gone_reviews)
        # The route, not the call: the shop's customer id is the person's record there, and
        # this text goes into the request's steps and its signed receipt, which hold none.
        endpoint = f"DELETE {API}/customers/{{id}}?force=true"
        if not deleted:
            # Deleted by someone else between our lookup and our call: nothing left to delete.
            return ErasureResult(
                found=anonymised + blank + reviews > 0,
                mode="hard_delete",
                reversible=False,
                endpoint=endpoint,
                vendor_status=statuses[-1],
                note=f"customer already gone; {orders_text}; {reviews_text}",
                erased_note=self._erased_note(),
            )
        said = "customer deleted" if deleted == 1 else f"{deleted} customer accounts deleted"
        if gone_accounts:
            said += EARLIER.format(n=gone_accounts, what="account(s)")
        return ErasureResult(
            found=True,
            mode="hard_delete",
            reversible=False,
            endpoint=endpoint,
            vendor_status=200,
            note=f"{said}; {orders_text}; {reviews_text}",
        )

    async def _erase_guest(
        self, subject: Subject, orders: tuple[int, int, int], reviews: int
    ) -> ErasureResult:
        """The outcome of an erasure that found no customer account: their guest orders
        anonymised (``orders``: blanked now, found blank, notes deleted) or kept, and
        ``reviews`` product reviews anonymised."""
        anonymised, blank, notes = orders
        done = ["no customer account"]
        if anonymised or blank:
            done.append(_anonymised(anonymised, blank, notes, "guest orders"))
        elif not self.settings.anonymise_orders:
            # Only counted: whose each order is says it is theirs, and nothing else is read.
            whose = {"_fields": ",".join(ORDER_KEYS)}
            guest = await self._orders_for(subject, [], whose)
            if guest:
                # Not "nothing held": their guest orders stay, with their billing data.
                done.append(f"{len(guest)} guest orders {KEPT_ORDERS}")
                if not reviews:
                    return ErasureResult(
                        found=True,
                        mode="kept",  # nothing changed: no account, the orders kept
                        reversible=False,
                        endpoint=f"GET {API}/orders",
                        note="; ".join(done),
                    )
        if reviews:
            done.append(_reviews_anonymised(reviews))
        if anonymised or blank or reviews:
            route = f"{API}/orders/{{id}}" if anonymised or blank else f"{REVIEWS}/{{id}}"
            return ErasureResult(
                found=True,
                mode="anonymise",
                reversible=False,
                endpoint=f"PUT {route}",
                note="; ".join(done),
            )
        return ErasureResult(
            found=False,
            mode="hard_delete",
            reversible=False,
            endpoint=f"DELETE {API}/customers/{{id}}?force=true",
            note="no customer, order or review with personal data for this subject",
            erased_note=self._erased_note(),
        )

    def snapshot_keys(self, records: Sequence[Mapping[str, Any]]) -> frozenset[str]:
        """Each customer account and product review an erasure's snapshot found, by id,
        for ``Subject.snapshot`` (see ``Adapter.erase``). Orders are not among them: one
        an earlier attempt blanked is still found by its account, and counted."""
        keys: set[str] = set()
        for record in records:
            if record.get("type") == "review":
                keys.add(f"review/{record[REVIEW_RECORD].get('id')}")
            elif record.get("type") is None and record.get("id") is not None:
                keys.add(f"customer/{record['id']}")
        return frozenset(keys)

    def _erased_note(self) -> str:
        """What a completed erasure did, for one that finds nothing left of a person the
        request found before (``ErasureResult.erased_note``): their account deleted, and
        their orders as the settings have them, no longer countable."""
        orders = (
            "any orders of theirs anonymised and the notes on them deleted (not counted "
            f"again: the account is gone); {ORDERS_LEFT}"
            if self.settings.anonymise_orders
            else f"orders {KEPT_ORDERS}"
        )
        reviews = (
            "any reviews of theirs anonymised (not counted again: they no longer carry the "
            f"name or address); {REVIEWS_LEFT}"
        )
        return f"customer deleted; {orders}; {reviews}"

    async def _anonymise(self, orders: Sequence[Mapping[str, Any]]) -> tuple[int, int, int]:
        """Blank ``orders`` and delete their notes: how many orders were blanked now, how
        many were found blank already, and how many notes went.

        An order found blank is the person's anonymised order all the same (blanked by an
        attempt that stopped before the account went, or by the shop's own retention): left
        uncounted, the retry's receipt said "0 orders anonymised" of two this request had
        blanked.
        """
        anonymised = blank = notes = 0
        for order in orders:
            if is_anonymous(order):
                # Blanked by a try that stopped before its notes went: they go now.
                blank += 1
                notes += await self._delete_notes(int(order["id"]))
                continue
            path = f"{API}/orders/{order['id']}"
            # WooCommerce answers an update with the whole order (what was bought, the IP
            # address and browser it was placed from); only the status is read here, so
            # the answer is asked to hold the id alone. An error answer is not cut.
            response = await self._request(
                "PUT", path, params=BLANKED_ANSWER, json=ANONYMOUS_ORDER, accept=(400, 404)
            )
            # Deleted meanwhile (WooCommerce answers an update of an order it no longer
            # has 400 woocommerce_rest_shop_order_invalid_id): nothing of it to blank.
            code = response_code(response)
            if response.status_code == 400 and code != ORDER_GONE:
                raise RecordError(self.client.system, "PUT", path, 400, code)
            if response.status_code == 200:
                anonymised += 1
                notes += await self._delete_notes(int(order["id"]))
        return anonymised, blank, notes

    async def _anonymise_reviews(self, reviews: Sequence[Mapping[str, Any]]) -> int:
        """Anonymise ``reviews`` (:data:`ANONYMOUS_REVIEW`): how many were.

        WooCommerce answers an update with the whole review, the text and the reviewer's
        name and e-mail as now written; only the status is read, so the answer is asked to
        hold the id alone. A review deleted meanwhile (404 ``woocommerce_rest_review_invalid_id``)
        has nothing left to anonymise; any other refusal (its product gone: 404
        ``woocommerce_rest_product_invalid_id``) leaves the reviewer's name and e-mail, and
        is an error.
        """
        anonymised = 0
        for review in reviews:
            path = f"{REVIEWS}/{review['id']}"
            response = await self._request(
                "PUT", path, params=BLANKED_ANSWER, json=ANONYMOUS_REVIEW, accept=(404,)
            )
            code = response_code(response)
            if response.status_code == 404 and code != REVIEW_GONE:
                raise RecordError(self.client.system, "PUT", path, 404, code)
            anonymised += response.status_code == 200
        return anonymised

    async def _delete_customer(self, customer: Mapping[str, Any]) -> int:
        """``DELETE /customers/{id}?force=true``: 200 deleted, else the status of an
        answer saying it was gone already."""
        path = f"{API}/customers/{int(customer['id'])}"
        response = await self._request(
            "DELETE", path, params={"force": "true"}, accept=(400, 403, 404)
        )
        if response.status_code == 403:
            raise _refused_delete(self.client.system, path, response, customer)
        code = response_code(response)
        if response.status_code in (400, 404) and code != CUSTOMER_GONE[response.status_code]:
            raise RecordError(self.client.system, "DELETE", path, response.status_code, code)
        return response.status_code

    # -- webhooks --------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check ``X-WC-Webhook-Signature``; ``now`` is unused: WooCommerce signs no timestamp.

        An unsigned body that is exactly WooCommerce's ping (``webhook_id=<n>``, form
        encoded) is accepted so the webhook can be activated; it yields no events.
        """
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """``customer.created/updated`` -> changed, ``customer.deleted`` -> deleted,
        ``order.*`` -> changed for the order's customer (an account's by its id alone, a
        guest's by the billing e-mail); the ping -> no events; else ignored."""
        return parse_delivery(request)


SPEC = AdapterSpec(
    kind="woocommerce",
    settings_model=WooCommerceSettings,
    factory=WooCommerceAdapter,
    client_config=woocommerce_client_config,
    limits=woocommerce_limits,
    sandbox=WooCommerceSandbox,
)


def _with_billing_names(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """``fields`` with the account's name written to the billing address as well.

    WooCommerce keeps the name twice, and the billing copy is the one invoices, order
    e-mails and the next checkout use: a corrected name written to the account alone left
    the shop using the name the person asked to have corrected. (A mapping that writes the
    billing name itself keeps what it writes.)
    """
    extra = {
        f"billing.{name}": fields[name]
        for name in ("first_name", "last_name")
        if name in fields and f"billing.{name}" not in fields
    }
    return {**fields, **extra} if extra else fields


def _anonymised(anonymised: int, blank: int, notes: int, orders: str = "orders") -> str:
    """What an erasure's note says of the orders it anonymised: ``blank`` of them found so
    already count too, said as such (this attempt did not blank them, and may not be what
    did); their notes were deleted before, or by this attempt, which says how many."""
    if blank:
        done = (
            f"{anonymised + blank} {orders} anonymised ({blank} of them found so already); "
            f"every note on them deleted, {notes} at this attempt"
        )
    else:
        done = f"{anonymised} {orders} anonymised; {notes} order notes deleted"
    return f"{done}; {ORDERS_LEFT}"


def _reviews_anonymised(count: int, gone: int = 0) -> str:
    """What an erasure's note says of the product reviews it anonymised. None is said too
    (the receipt shows they were looked for), as none found: an earlier attempt's
    anonymised reviews no longer carry the address, and those found by the account are passed
    over: they are not counted again, but ``gone`` counts those the request's snapshot
    found that no longer show under the person."""
    if gone:
        earlier = EARLIER.format(n=gone, what="review(s)")
        return f"{count} reviews anonymised{earlier}; {REVIEWS_LEFT}"
    if not count:
        return "0 reviews anonymised (none under their addresses or from their account)"
    return f"{count} reviews anonymised; {REVIEWS_LEFT}"


#: Put after a count of this attempt's by one that finds gone what the request's snapshot
#: found: done by an earlier attempt cut off before its outcome was recorded (or by the
#: shop's staff meanwhile), which the snapshot, not this attempt, knows of.
EARLIER: Final = (
    " by this attempt, and {n} more {what} the request found before its first attempt no "
    "longer under the person"
)


def _review_record(review: Mapping[str, Any]) -> dict[str, Any]:
    """A product review as an access copy and an erasure's reads list it: marked as one, the
    review as wc/v3 gives it under :data:`REVIEW_RECORD`."""
    return {"type": "review", REVIEW_RECORD: dict(review)}


def _refused_delete(
    system: str, path: str, response: httpx.Response, customer: Mapping[str, Any]
) -> RecordError | FatalRemoteError:
    """The error for a 403 to deleting a customer, saying what a person must do about it.

    Since WooCommerce 9.5.2 its REST API deletes only customers and subscribers: an account
    with another role (a shop manager who also bought something) is refused with 403
    ``woocommerce_rest_cannot_delete`` however the key is permitted. That erasure cannot be
    finished over the API; the message says so, with the role (a technical name, not personal
    data), so an operator deletes the user in WordPress and retries the request. Any other
    403 is the key's permissions, fatal as before.
    """
    code = response_code(response)
    role = str(customer.get("role", ""))
    if code == "woocommerce_rest_cannot_delete" and role and role not in DELETABLE_ROLES:
        detail = (
            f"{code}: WooCommerce deletes only {' and '.join(sorted(DELETABLE_ROLES))} accounts "
            f"over its API and this one's role is {role!r}; delete the user in WordPress "
            "(Users), then retry the request"
        )
        return RecordError(system, "DELETE", path, 403, detail)
    return FatalRemoteError(system, "DELETE", path, 403, code)


def _addresses(subject: Subject, customers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The addresses guest orders of the subject are billed to: the one asked with, and the
    current one of each of their customer accounts where it differs. Asked under a former
    address (found by the identity map's id), a guest order placed since under the current
    one is theirs too."""
    addresses = [subject.email]
    for customer in customers:
        current = customer.get("email")
        if isinstance(current, str) and normalise_email(current) not in {
            normalise_email(a) for a in addresses
        }:
            addresses.append(current)
    return addresses


def _review_accounts(subject: Subject, customers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The user ids whose product reviews are the subject's: their accounts' and the one the
    identity map names (deleted from the shop, its reviews keep its id), not another
    subject's (Subject.spare). WordPress keeps the account's id on a review written while
    logged in, beside the address the person had then: one who changed it since is found
    by the id alone. Never 0: a guest's review has user id 0, and ``reviewer=0`` lists
    every guest's (WP_Comment_Query's ``author__in``)."""
    accounts = [str(customer["id"]) for customer in customers]
    known = _wp_id(subject.external_id)
    if known is not None:
        accounts.append(known)
    return [a for a in dict.fromkeys(accounts) if a not in subject.spare and _wp_id(a)]


def _written_by_another(review: Mapping[str, Any], own: Collection[str]) -> bool:
    """Whether ``review`` was written from a customer account none of ``own`` (the person's
    user ids: :func:`_review_accounts`), by the rule orders go by
    (:func:`~connector.adapter.placed_by_another`): a review found by the address it was
    written under is the person's only as a guest's (no account to say otherwise) or one of
    their own accounts'. Another customer may have written it from their account under the
    address (one who held it before the person): listed in the person's copy it gave away
    that customer's name and what they wrote, and anonymised by the person's erasure it
    took their name off their review."""
    writer = _reviewer_account(review)
    return writer is not None and writer not in own


def _reviewer_account(review: Mapping[str, Any]) -> str | None:
    """The user id of the account ``review`` was written from, or ``None`` for a guest's.

    The review's JSON has no field for it: WooCommerce gives the comment's user id only as
    a ``reviewer`` link (``.../wp/v2/users/<id>``), and only where it is not 0
    (``WC_REST_Product_Reviews_Controller::prepare_links`` [src]). A link that names no
    id this can read says nothing of whose the review is: it counts as none."""
    links = review.get("_links")
    # Not a mapping: no links, or PHP's empty array ([]) once _fields cut every one away.
    reviewer = links.get("reviewer") if isinstance(links, Mapping) else None
    for link in reviewer if isinstance(reviewer, list) else []:
        href = link.get("href") if isinstance(link, Mapping) else None
        named = REVIEWER_HREF.search(unquote(href)) if isinstance(href, str) else None
        if named is not None:
            return str(int(named.group(1)))
    return None


def _wp_id(external_id: str | None) -> str | None:
    """An identity map id as WordPress writes it (``"007"`` is customer 7), or ``None``."""
    if external_id and external_id.isdecimal() and int(external_id) > 0:
        return str(int(external_id))
    return None


def _is_id(value: Any) -> bool:
    """A WordPress id: a positive integer (a bool is not one, though Python counts it so)."""
    return type(value) is int and value > 0
