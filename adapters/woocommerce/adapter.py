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

The settings and client config live in ``settings.py``; the reads that find a subject's
accounts, orders and reviews in ``_lookup.py``, the erasure's steps in ``_erasure.py``, both on
the shop calls of ``_calls.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import httpx

from adapters.woocommerce._calls import API, _is_id
from adapters.woocommerce._erasure import ShopErasure

# Re-exported: imported from here before the erasure steps had a module of their own.
from adapters.woocommerce._erasure import _refused_delete as _refused_delete
from adapters.woocommerce._lookup import (
    ORDER_KEYS,
    REVIEW_KEYS,
    _account_copy,
    _copy_addresses,
    _order_copy,
    _review_copy,
    _review_record,
)
from adapters.woocommerce.labels import COPY_LABELS
from adapters.woocommerce.payloads import (
    code_only,
    decode_cursor,
    emptied,
    encode_cursor,
)
from adapters.woocommerce.sandbox import WooCommerceSandbox
from adapters.woocommerce.settings import (
    BATCH_SIZE,
    BUILT_IN_ROLES,
    PAGE_SIZE,
    WooCommerceSettings,
    woocommerce_client_config,
    woocommerce_limits,
)
from adapters.woocommerce.webhooks import parse_delivery, verify_delivery
from connector.access_labels import CopyLabels
from connector.adapter import (
    RETAINED,
    AdapterSpec,
    Capability,
    OutboundRecord,
    Page,
    Subject,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
    nest,
)
from connector.errors import FatalRemoteError, RecordError
from connector.http import SystemClient, retry_after
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

#: WooCommerce keeps extra fields as a list of ``{"key", "value"}`` entries.
META_LISTS = frozenset({"meta_data"})

#: Customers read again before where the last page ended. A deletion in the part already
#: read shows as a drop in X-WP-Total, unless as many new customers signed up meanwhile
#: (they come last, in id order): this margin covers that many such deletions per page.
REREAD = 2
#: Reads of one page again by how much X-WP-Total dropped while customers keep being
#: deleted before it; past that the scan steps back until the page meets what was read.
MAX_REREADS = 5
NOT_HELD_NOTE = "no customer account with this id or e-mail (guest orders are not changed)"

#: Why a key that reads is refused a write.
READ_ONLY_KEY = (
    "woocommerce_rest_authentication_error: the consumer key reads but may not write (its "
    "permissions are Read): erasures, corrections and syncs into the shop need Read/Write "
    "(WooCommerce > Settings > Advanced > REST API)"
)

#: Per-item batch errors worth another try: a create that lost a race with another writer
#: (the retry looks the e-mail up again and updates instead).
_RETRYABLE_ITEM_CODES = frozenset({"registration-error-email-exists"})

#: What ``check --online`` says of a configured role the shop does not know.
UNKNOWN_ROLE = "the shop knows no role {role!r} (a typo, or the plugin adding it is off)"


class WooCommerceAdapter(ShopErasure):
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

    # -- find (the reads: _lookup.py; erase: _erasure.py) ----------------------------------

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """The customer account(s) (as wc/v3 returns them), each of their orders as
        ``{"type": "order"}`` and each of their product reviews as ``{"type": "review"}``
        (under :data:`REVIEW_RECORD`)."""
        customers = await self._customers_for(subject)
        orders = await self._orders_for(subject, customers)
        # Others' addresses a note quotes are left out (Art. 15(4)), the person's own stay;
        # so is the shop employee who wrote an order note (_lookup.NOTE_AUTHOR).
        own = _copy_addresses(subject, customers)
        held = [_account_copy(customer, own) for customer in customers]
        kept = self._kept()
        # Each with its notes: a shop employee's, or one sent to the customer, they may
        # hold what the person said or what was said about them.
        held += [
            {"type": "order", **_order_copy(order, await self._notes_of(order["id"]), own), **kept}
            for order in orders
        ]
        # What they wrote about a product and the rating they gave, held and approved ones,
        # those marked spam and those in the trash alike; others' addresses it quotes left out.
        return held + [_review_copy(r, own) for r in await self._reviews_for(subject, customers)]

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
