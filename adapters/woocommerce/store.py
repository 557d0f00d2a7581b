"""The sandbox's data: customers (explicit and synthetic), orders and product reviews, with the
lookups wc/v3 needs.

Customers created over the API or by ``add_person`` live in a plain dict; a seeded synthetic
block (:class:`~adapters.woocommerce.synthetic.SyntheticBlock`) holds the bulk. Ids are handed
out in increasing order, so the explicit dict's insertion order is also id order, and every
explicit id lies outside the block's range. A page in id order is then a position lookup in
three sorted runs (explicit ids below the block, the block, explicit ids above it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from adapters.woocommerce.synthetic import SyntheticBlock

__all__ = ["ShopStore"]


class ShopStore:
    """Customers and orders of one fake shop."""

    def __init__(self) -> None:
        self.customers: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        #: Order id -> its notes (wc/v3 /orders/{id}/notes), oldest first.
        self.order_notes: dict[int, list[dict[str, Any]]] = {}
        #: Review id -> the product review as WordPress keeps it, a comment: its text under
        #: ``content``, and the IP address and browser it was written from, which the REST
        #: API never shows (:func:`~adapters.woocommerce.shapes.review_shape`).
        self.reviews: dict[int, dict[str, Any]] = {}
        #: Product id -> its name (posts in WordPress; only what a review names of one).
        self.products: dict[int, str] = {93: "Koffiebonen 1 kg"}
        #: Roles plugins registered (``add_role``) beside WordPress's and WooCommerce's own.
        self.plugin_roles: list[str] = []
        self._next_note = 501
        self.block: SyntheticBlock | None = None
        self._next_customer = 1
        # Orders live in wp_posts / wc_orders, a sequence apart from wp_users; starting
        # elsewhere makes a customer id used as an order id (or back) fail loudly in tests.
        self._next_order = 1001
        self._emails: dict[str, int] = {}  # lower-cased e-mail -> id, explicit and overridden

    def new_note_id(self) -> int:
        """The next comment id: an order note's or a product review's (both comments in
        WordPress, one sequence apart from users and posts)."""
        self._next_note += 1
        return self._next_note - 1

    # -- customers -------------------------------------------------------------------------

    def seed_synthetic(self, n: int, seed: int) -> None:
        """Append a block of ``n`` generated customers after the current ids."""
        if self.block is not None:
            raise RuntimeError("the sandbox holds one synthetic block; seed it once")
        self.block = SyntheticBlock(self._next_customer - 1, n, seed)
        self._next_customer += n

    def new_customer_id(self) -> int:
        """Hand out the next WordPress user id."""
        customer_id = self._next_customer
        self._next_customer += 1
        return customer_id

    def get(self, customer_id: int) -> dict[str, Any] | None:
        """The live customer under ``customer_id``, or ``None``."""
        if self.block is not None and self.block.owns(customer_id):
            return self.block.get(customer_id)
        return self.customers.get(customer_id)

    def by_email(self, email: str) -> int | None:
        """The id of the live customer with this e-mail (case-insensitive, as MySQL compares)."""
        key = email.strip().lower()
        found = self._emails.get(key)
        if found is not None:
            return found
        if self.block is not None:
            return self.block.id_for_email(key)
        return None

    def save(self, customer: dict[str, Any], previous_email: str | None = None) -> None:
        """Store a created or changed customer and keep the e-mail index right."""
        customer_id = int(customer["id"])
        if previous_email is not None:
            self._emails.pop(previous_email.lower(), None)
        self._emails[str(customer["email"]).lower()] = customer_id
        if self.block is not None and self.block.owns(customer_id):
            self.block.put(customer)
        else:
            self.customers[customer_id] = customer

    def delete(self, customer_id: int) -> None:
        """Delete a customer for good and detach their orders, as ``wp_delete_user`` does."""
        customer = self.get(customer_id)
        if customer is None:
            return
        self._emails.pop(str(customer["email"]).lower(), None)
        if self.block is not None and self.block.owns(customer_id):
            self.block.delete(customer_id)
        else:
            del self.customers[customer_id]
        # WooCommerce hooks deleted_user to reset _customer_user to 0: orders stay, as guests.
        for order in self.orders.values():
            if order["customer_id"] == customer_id:
                order["customer_id"] = 0

    def _runs(self, role: str) -> tuple[list[int], int, list[int]]:
        """Ids matching ``role`` in three ascending runs: below the block, in it, above it."""

        def wanted(customer: dict[str, Any]) -> bool:
            return role == "all" or customer["role"] == role

        block = self.block
        below = [cid for cid, c in self.customers.items() if wanted(c)]
        if block is None:
            return below, 0, []
        above = [cid for cid in below if cid > block.last_id]
        below = [cid for cid in below if cid <= block.base]
        # Generated customers (and their overrides: role is read-only) are all "customer".
        in_block = block.live_count() if role in ("all", "customer") else 0
        return below, in_block, above

    def page_ids(
        self, role: str, offset: int, limit: int, descending: bool
    ) -> tuple[list[int], int]:
        """Ids of one page in id order and the total that matched; O(limit) in the block."""
        below, in_block, above = self._runs(role)
        total = len(below) + in_block + len(above)
        ids: list[int] = []
        for position in range(offset, min(offset + limit, total)):
            at = total - 1 - position if descending else position
            if at < len(below):
                ids.append(below[at])
            elif at < len(below) + in_block:
                assert self.block is not None
                ids.append(self.block.id_at(at - len(below)))
            else:
                ids.append(above[at - len(below) - in_block])
        return ids, total

    def iter_customers(self, role: str) -> Iterator[dict[str, Any]]:
        """Every matching customer in id order (the slow path: search, include, exclude)."""
        below, in_block, above = self._runs(role)
        for customer_id in below:
            yield self.customers[customer_id]
        for position in range(in_block):
            assert self.block is not None
            customer = self.block.get(self.block.id_at(position))
            if customer is not None:
                yield customer
        for customer_id in above:
            yield self.customers[customer_id]

    # -- orders ----------------------------------------------------------------------------

    def new_order_id(self) -> int:
        """Hand out the next order id."""
        order_id = self._next_order
        self._next_order += 1
        return order_id
