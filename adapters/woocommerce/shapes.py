"""The wc/v3 JSON shapes the sandbox serves: customers, orders, product reviews, addresses and
error bodies.

Kept in one place so the generated customers (:mod:`adapters.woocommerce.synthetic`) and the
ones created over the API come out byte-for-byte alike. The sandbox site runs on WordPress's
default timezone (UTC+0), so ``date_*`` and ``date_*_gmt`` hold the same value.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from adapters.woocommerce.taxes import calculate_totals

__all__ = [
    "ADDRESS_FIELDS",
    "BILLING_FIELDS",
    "DELETABLE_ROLES",
    "SHIPPING_FIELDS",
    "address",
    "customer_shape",
    "error_body",
    "order_shape",
    "review_shape",
    "wc_datetime",
]

#: The keys WooCommerce keeps in an address, in its own order.
ADDRESS_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "postcode",
    "country",
    "state",
)
BILLING_FIELDS = (*ADDRESS_FIELDS, "email", "phone")
SHIPPING_FIELDS = (*ADDRESS_FIELDS, "phone")

#: The roles whose users WooCommerce lets its REST API delete (since 9.5.2; the filter
#: ``woocommerce_rest_customer_allowed_roles`` can widen it). Others get 403
#: ``woocommerce_rest_cannot_delete``.
DELETABLE_ROLES = frozenset({"customer", "subscriber"})


def wc_datetime(moment: datetime) -> str:
    """WordPress REST date format: ISO 8601 to the second, no offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def address(**values: str) -> dict[str, str]:
    """An address with every WooCommerce key present (missing ones empty)."""
    return {key: str(values.get(key, "")) for key in (*ADDRESS_FIELDS, "email", "phone")}


def _avatar(email: str, size: int = 96) -> str:
    # WooCommerce serves the Gravatar URL; md5 is Gravatar's scheme, not a security measure.
    digest = hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?s={size}&d=mm&r=g"


def customer_shape(
    *,
    customer_id: int,
    email: str,
    first_name: str,
    last_name: str,
    username: str,
    billing: dict[str, str],
    shipping: dict[str, str],
    meta_data: list[dict[str, Any]],
    created: datetime | str,
    modified: datetime | str,
    role: str = "customer",
    is_paying_customer: bool = False,
) -> dict[str, Any]:
    """A customer as ``GET /wp-json/wc/v3/customers/{id}`` returns it.

    ``created`` and ``modified`` are datetimes, or text already in :func:`wc_datetime` form.
    """
    # Formatted once each: the benchmarks list a million generated customers through here.
    created_at = created if isinstance(created, str) else wc_datetime(created)
    if modified == created:
        modified_at = created_at
    else:
        modified_at = modified if isinstance(modified, str) else wc_datetime(modified)
    return {
        "id": customer_id,
        "date_created": created_at,
        "date_created_gmt": created_at,
        "date_modified": modified_at,
        "date_modified_gmt": modified_at,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "role": role,
        "username": username,
        "billing": {key: billing.get(key, "") for key in BILLING_FIELDS},
        "shipping": {key: shipping.get(key, "") for key in SHIPPING_FIELDS},
        "is_paying_customer": is_paying_customer,
        "avatar_url": _avatar(email),
        "meta_data": meta_data,
        "_links": {
            "self": [{"href": f"/wp-json/wc/v3/customers/{customer_id}"}],
            "collection": [{"href": "/wp-json/wc/v3/customers"}],
        },
    }


def order_shape(
    *,
    order_id: int,
    customer_id: int,
    billing: dict[str, str],
    shipping: dict[str, str],
    created: datetime,
    status: str = "processing",
    net: str = "41.28",
    customer_note: str = "",
    meta_data: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An order as ``GET /wp-json/wc/v3/orders/{id}`` returns it (the parts that matter here):
    one line costing ``net`` before tax, taxed where its addresses say
    (:func:`~adapters.woocommerce.taxes.calculate_totals`)."""
    stamp = wc_datetime(created)
    order = {
        "id": order_id,
        "parent_id": 0,
        "number": str(order_id),
        "order_key": f"wc_order_{order_id:08d}",
        "created_via": "checkout",
        "status": status,
        "currency": "EUR",
        "date_created": stamp,
        "date_created_gmt": stamp,
        "date_modified": stamp,
        "date_modified_gmt": stamp,
        "prices_include_tax": False,
        "customer_id": customer_id,
        # Read-only over REST: an API client cannot blank these (the erasure note says so).
        "customer_ip_address": "198.51.100.7",
        "customer_user_agent": "Mozilla/5.0",
        "customer_note": customer_note,
        "billing": {key: billing.get(key, "") for key in BILLING_FIELDS},
        "shipping": {key: shipping.get(key, "") for key in SHIPPING_FIELDS},
        "payment_method": "ideal",
        "payment_method_title": "iDEAL",
        "transaction_id": "",
        "meta_data": list(meta_data or []),
        "line_items": [
            {
                # Order items are one sequence in the shop; ten ids per order stand in for it.
                "id": order_id * 10,
                "name": "Koffiebonen 1 kg",
                "product_id": 93,
                "variation_id": 0,
                "quantity": 1,
                "tax_class": "",
                "subtotal": net,
                "total": net,
                "meta_data": [],
            }
        ],
    }
    calculate_totals(order)
    return order


def _autop(text: str) -> str:
    """WordPress's ``wpautop`` as far as a review needs it: each paragraph (parted by a blank
    line) in ``<p>``, a single line break within one as ``<br />``."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "".join("<p>" + p.replace("\n", "<br />\n") + "</p>\n" for p in paragraphs)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def review_shape(
    review: dict[str, Any], *, product_name: str, site: str, context: str = "view"
) -> dict[str, Any]:
    """A product review as ``GET /wp-json/wc/v3/products/reviews/{id}`` returns it
    (``WC_REST_Product_Reviews_Controller::prepare_item_for_response`` [src]) from the comment
    it is kept as: ``review`` is the text run through ``wpautop`` in the ``view`` context, as
    stored in ``edit`` (the context an update's and a deletion's answers are given in).

    Neither the IP address nor the browser the review was written from (``author_ip``,
    ``agent``) is in the schema: the REST API neither shows nor changes them. The reviewer's
    user account shows only as a ``reviewer`` link, where there is one.
    """
    content = str(review["content"])
    links: dict[str, Any] = {
        "self": [{"href": f"{site}wp-json/wc/v3/products/reviews/{review['id']}"}],
        "collection": [{"href": f"{site}wp-json/wc/v3/products/reviews"}],
        "up": [{"href": f"{site}wp-json/wc/v3/products/{review['product_id']}"}],
    }
    if review["user_id"]:
        links["reviewer"] = [
            {"embeddable": True, "href": f"{site}wp-json/wp/v2/users/{review['user_id']}"}
        ]
    return {
        "id": review["id"],
        "date_created": review["date"],
        "date_created_gmt": review["date"],
        "product_id": review["product_id"],
        "product_name": product_name,
        "product_permalink": f"{site}product/{_slug(product_name)}/",
        "status": review["status"],
        "reviewer": review["reviewer"],
        "reviewer_email": review["reviewer_email"],
        "review": _autop(content) if context == "view" else content,
        "rating": review["rating"],
        "verified": review["verified"],
        # WordPress's show_avatars is on by default: the sizes rest_get_avatar_sizes gives.
        "reviewer_avatar_urls": {
            str(size): _avatar(str(review["reviewer_email"]), size) for size in (24, 48, 96)
        },
        "_links": links,
    }


def error_body(code: str, message: str, status: int, **data: Any) -> dict[str, Any]:
    """The WordPress REST error shape: ``{"code", "message", "data": {"status", ...}}``."""
    return {"code": code, "message": message, "data": {"status": status, **data}}
