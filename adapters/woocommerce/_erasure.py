"""Erasing a subject from a WooCommerce shop: their orders anonymised and the notes on them
deleted, their product reviews anonymised, then their customer account(s) deleted for good.

See :mod:`adapters.woocommerce.adapter` for why in this order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from adapters.woocommerce._calls import API
from adapters.woocommerce._lookup import (
    ORDER_KEYS,
    REVIEW_KEYS,
    REVIEW_RECORD,
    REVIEWS,
    SubjectLookup,
    _review_record,
)
from adapters.woocommerce.payloads import (
    ANONYMOUS_ORDER,
    ANONYMOUS_PATHS,
    ANONYMOUS_REVIEW,
    is_anonymous,
    response_code,
)
from adapters.woocommerce.shapes import DELETABLE_ROLES
from connector.adapter import ErasureResult, Subject
from connector.errors import FatalRemoteError, RecordError
from connector.wording import counted

__all__ = ["ShopErasure"]

#: What an erasure leaves of the orders when anonymise_orders is off, and why.
KEPT_ORDERS = "kept with their billing data (anonymise_orders is off: kept for tax law)"
#: WooCommerce's answer (400) to an update of an order it no longer has.
ORDER_GONE = "woocommerce_rest_shop_order_invalid_id"
#: WooCommerce's answers to a deletion of a customer it no longer has: 404
#: ``wc_user_invalid_id`` (its permission check looks the user up first, in current
#: versions), or 400 ``woocommerce_rest_invalid_id`` (older ones).
CUSTOMER_GONE: dict[int, str] = {404: "wc_user_invalid_id", 400: "woocommerce_rest_invalid_id"}
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

#: WooCommerce's answer (404) to an update of a review it no longer has.
REVIEW_GONE = "woocommerce_rest_review_invalid_id"
#: What an erasure's note says an anonymised review keeps, and what it cannot change.
REVIEWS_LEFT = (
    "review text and rating are kept; the reviewer's IP address and browser are not "
    "reachable over wc/v3 and remain"
)

#: What an erasure asks of each customer account it deletes (``_fields``): its id (what it
#: deletes), its address (guest orders billed to the one the person moved to are theirs too:
#: :func:`_addresses`) and its role (what a refused deletion names: :func:`_refused_delete`).
#: Not the username, the shipping address or what plugins keep in its meta data.
ERASURE_CUSTOMER_KEYS = ("id", "email", "role")


class ShopErasure(SubjectLookup):
    """The adapter's ``erase`` and ``snapshot_keys``, and the steps an erasure takes."""

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
            said += EARLIER.format(more=counted(gone_accounts, "more account"))
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
            done.append(_anonymised(anonymised, blank, notes, "guest order"))
        elif not self.settings.anonymise_orders:
            # Only counted: whose each order is says it is theirs, and nothing else is read.
            whose = {"_fields": ",".join(ORDER_KEYS)}
            guest = await self._orders_for(subject, [], whose)
            if guest:
                # Not "nothing held": their guest orders stay, with their billing data.
                done.append(f"{counted(len(guest), 'guest order')} {KEPT_ORDERS}")
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


def _anonymised(anonymised: int, blank: int, notes: int, orders: str = "order") -> str:
    """What an erasure's note says of the orders it anonymised: ``blank`` of them found so
    already count too, said as such (this attempt did not blank them, and may not be what
    did); their notes were deleted before, or by this attempt, which says how many."""
    if blank:
        done = (
            f"{counted(anonymised + blank, orders)} anonymised ({blank} of them found so "
            f"already); every note on them deleted, {notes} at this attempt"
        )
    else:
        done = f"{counted(anonymised, orders)} anonymised; {counted(notes, 'order note')} deleted"
    return f"{done}; {ORDERS_LEFT}"


def _reviews_anonymised(count: int, gone: int = 0) -> str:
    """What an erasure's note says of the product reviews it anonymised. None is said too
    (the receipt shows they were looked for), as none found: an earlier attempt's
    anonymised reviews no longer carry the address, and those found by the account are passed
    over: they are not counted again, but ``gone`` counts those the request's snapshot
    found that no longer show under the person."""
    if gone:
        earlier = EARLIER.format(more=counted(gone, "more review"))
        return f"{counted(count, 'review')} anonymised{earlier}; {REVIEWS_LEFT}"
    if not count:
        return "0 reviews anonymised (none under their addresses or from their account)"
    return f"{counted(count, 'review')} anonymised; {REVIEWS_LEFT}"


#: Put after a count of this attempt's by one that finds gone what the request's snapshot
#: found: done by an earlier attempt cut off before its outcome was recorded (or by the
#: shop's staff meanwhile), which the snapshot, not this attempt, knows of.
EARLIER: Final = (
    " by this attempt, and {more} the request found before its first attempt no "
    "longer under the person"
)


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
