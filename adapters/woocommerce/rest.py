"""The wc/v3 rules the sandbox enforces, apart from HTTP: validation and the write operations.

Each rule follows WooCommerce core (``class-wc-rest-customers-v*-controller.php``,
``class-wc-customer.php``, ``wc_create_new_customer``) or WordPress's REST argument handling;
every failure is an :class:`ApiError` carrying the code, message and status core would send.
Messages are core's own fixed texts, which never echo what was sent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.woocommerce.payloads import valid_email
from adapters.woocommerce.shapes import (
    BILLING_FIELDS,
    DELETABLE_ROLES,
    SHIPPING_FIELDS,
    customer_shape,
    error_body,
    wc_datetime,
)
from adapters.woocommerce.store import ShopStore
from adapters.woocommerce.taxes import RECALCULATING, calculate_totals

__all__ = ["ApiError", "ShopRules", "delete_review", "update_review", "valid_email"]

ORDER_STATUSES = frozenset(
    {"pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed"}
)
#: What a review's update takes as ``status`` (its schema's enum [src]): a status, or the
#: way back from spam or the trash.
REVIEW_UPDATES = ("approved", "hold", "spam", "unspam", "trash", "untrash")
#: A review update's arguments and their JSON types, as the route's schema declares them
#: (``get_endpoint_args_for_item_schema``; the read-only ``id``, ``date_created_gmt`` and
#: ``verified`` are not arguments, and are passed over).
_REVIEW_ARGUMENTS: dict[str, type] = {
    "product_id": int,
    "reviewer": str,
    "reviewer_email": str,
    "review": str,
    "rating": int,
    "status": str,
}


class ApiError(Exception):
    """A WordPress REST error: becomes ``{"code", "message", "data": {"status"}}``."""

    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return error_body(self.code, self.message, self.status, **self.data)


def _merge_address(
    current: dict[str, str], given: Any, keys: tuple[str, ...], *, null_clears: bool = True
) -> None:
    # WooCommerce sets only the address keys it knows; anything else is silently dropped.
    # An order's update_address passes a null to the setter, which empties the key; a
    # customer's update_customer_meta_fields sets only a key ``isset`` finds, which a null is
    # not, so there a null leaves the key as it was and "" empties it (``null_clears=False``).
    if not isinstance(given, Mapping):
        return
    for key in keys:
        if key not in given:
            continue
        if given[key] is None:
            if null_clears:
                current[key] = ""
            continue
        current[key] = str(given[key])


class ShopRules:
    """Create, update and delete customers and orders the way wc/v3 does.

    Args:
        store: the shop's data.
        now: the current wall-clock time (injectable so tests control timestamps).
    """

    def __init__(self, store: ShopStore, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now
        self._next_meta = 100_000_000  # above any generated meta id
        #: WooCommerce's Accounts setting "send the new user a link to set their password"
        #: (``woocommerce_registration_generate_password``): off, a customer created without
        #: a password is refused.
        self.generates_passwords = True

    def stamp(self, previous: str | None = None) -> str:
        """A modification time, strictly after ``previous`` so every change is visible."""
        moment = self.now().astimezone(UTC).replace(tzinfo=None, microsecond=0)
        text = wc_datetime(moment)
        if previous is not None and text <= previous:
            # WooCommerce's GMT stamps carry no offset: read as UTC, not the host's zone.
            bumped = datetime.fromisoformat(previous).replace(tzinfo=UTC).timestamp() + 1
            text = wc_datetime(datetime.fromtimestamp(bumped, UTC).replace(tzinfo=None))
        return text

    def add_meta(self, current: list[dict[str, Any]], given: list[Mapping[str, Any]]) -> None:
        """Append meta entries as a plugin adds them (``add_meta_data``): a key may repeat."""
        for item in given:
            self._next_meta += 1
            current.append({"id": self._next_meta, "key": str(item["key"]), "value": item["value"]})

    def merge_meta(self, current: list[dict[str, Any]], given: Any) -> None:
        """Apply ``meta_data`` as WooCommerce does, entry by entry (WC_Data::update_meta_data):
        by meta id where one is given (an id the object does not hold adds the entry), else
        over the first entry with the key, the others with it deleted, else appended; then,
        as its save does, an entry left with a null value is deleted."""
        if not isinstance(given, list):
            return
        for item in given:
            if not isinstance(item, Mapping) or ("key" not in item and "id" not in item):
                continue
            value = item.get("value")
            if item.get("id"):
                target = next((m for m in current if m["id"] == item["id"]), None)
            else:
                same = [m for m in current if m["key"] == item.get("key")]
                target = same[0] if same else None
                current[:] = [m for m in current if m is target or all(m is not x for x in same)]
            if target is not None:
                target["value"] = value
                if "key" in item:
                    target["key"] = str(item["key"])
            else:
                self.add_meta(current, [{"key": item.get("key"), "value": value}])
        current[:] = [m for m in current if m["value"] is not None]

    def _unique_username(self, email: str) -> str:
        base = re.sub(r"[^a-z0-9._-]", "", email.split("@", 1)[0].lower()) or "customer"
        taken = {str(c["username"]) for c in self.store.customers.values()}
        name, suffix = base, 1
        while name in taken:
            suffix += 1
            name = f"{base}-{suffix}"
        return name

    def create_customer(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /customers`` (and each ``create`` item of a batch)."""
        if data.get("id"):
            raise ApiError(
                400, "woocommerce_rest_customer_exists", "Cannot create existing resource."
            )
        email = data.get("email")
        if not isinstance(email, str) or not email:
            raise ApiError(
                400, "rest_missing_callback_param", "Missing parameter(s): email", params=["email"]
            )
        if not valid_email(email):
            raise ApiError(400, "customer_invalid_email", "Invalid email address")
        if self.store.by_email(email) is not None:
            raise ApiError(
                400,
                "registration-error-email-exists",
                "An account is already registered with your email address. Please log in.",
            )
        username = data.get("username") or self._unique_username(email)
        if any(c["username"] == username for c in self.store.customers.values()):
            raise ApiError(
                400,
                "registration-error-username-exists",
                "An account is already registered with that username. Please choose another.",
            )
        if not data.get("password") and not self.generates_passwords:
            # wc_create_new_customer, after the e-mail and username checks.
            raise ApiError(
                400, "registration-error-missing-password", "Please enter an account password."
            )
        stamp = self.stamp()
        moment = datetime.fromisoformat(stamp)
        customer = customer_shape(
            customer_id=self.store.new_customer_id(),
            email=email,
            first_name=str(data.get("first_name") or ""),
            last_name=str(data.get("last_name") or ""),
            username=str(username),
            billing={},
            shipping={},
            meta_data=[],
            created=moment,
            modified=moment,
        )
        _merge_address(customer["billing"], data.get("billing"), BILLING_FIELDS, null_clears=False)
        _merge_address(
            customer["shipping"], data.get("shipping"), SHIPPING_FIELDS, null_clears=False
        )
        self.merge_meta(customer["meta_data"], data.get("meta_data"))
        self.store.save(customer)
        return copy.deepcopy(customer)

    def update_customer(self, customer_id: Any, data: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /customers/{id}`` (and each ``update`` item of a batch)."""
        current = self.store.get(_as_id(customer_id))
        if current is None:
            raise ApiError(400, "woocommerce_rest_invalid_id", "Invalid resource ID.")
        customer = copy.deepcopy(current)
        previous_email = str(customer["email"])
        email = data.get("email")
        if isinstance(email, str) and email and email != previous_email:
            # WC_REST_Customers_V1_Controller::update_item refuses an e-mail that exists
            # (email_exists, case-blind in the database) and is not, byte for byte, the
            # customer's own: their own address in another case is refused too.
            owner = self.store.by_email(email)
            if not valid_email(email) or owner is not None:
                raise ApiError(
                    400, "woocommerce_rest_customer_invalid_email", "Email address is invalid."
                )
            customer["email"] = email
        username = data.get("username")
        if username is not None and username != customer["username"]:
            raise ApiError(
                400, "woocommerce_rest_customer_invalid_argument", "Username isn't editable."
            )
        # update_customer_meta_fields sets what ``isset`` finds: "" empties a name or an
        # address key, and a null (which isset passes over) changes nothing.
        for key in ("first_name", "last_name"):
            if data.get(key) is not None:
                customer[key] = str(data[key])
        _merge_address(customer["billing"], data.get("billing"), BILLING_FIELDS, null_clears=False)
        _merge_address(
            customer["shipping"], data.get("shipping"), SHIPPING_FIELDS, null_clears=False
        )
        if customer["billing"]["email"] and not valid_email(customer["billing"]["email"]):
            raise ApiError(400, "customer_invalid_billing_email", "Invalid billing email address")
        self.merge_meta(customer["meta_data"], data.get("meta_data"))
        customer["date_modified"] = customer["date_modified_gmt"] = self.stamp(
            customer["date_modified_gmt"]
        )
        self.store.save(customer, previous_email=previous_email)
        return copy.deepcopy(customer)

    def existing_user(self, customer_id: Any) -> dict[str, Any]:
        """The user ``customer_id`` names, as WooCommerce looks one up before reading,
        changing or deleting it (``Users::get_user_in_current_site``, in the route's
        permission check): one that does not exist is 404 ``wc_user_invalid_id``."""
        current = self.store.get(_as_id(customer_id))
        if current is None:
            raise ApiError(404, "wc_user_invalid_id", "Invalid user ID.")
        return current

    def delete_customer(self, customer_id: Any, force: bool) -> dict[str, Any]:
        """``DELETE /customers/{id}``: permanent, and only with ``force=true``. The user is
        looked up and its role checked first (the route's permission check), then
        ``force``."""
        current = self.existing_user(customer_id)
        if current["role"] not in DELETABLE_ROLES:
            raise ApiError(
                403,
                "woocommerce_rest_cannot_delete",
                "Sorry, you are not allowed to delete this resource.",
            )
        if not force:
            raise ApiError(
                501, "woocommerce_rest_trash_not_supported", "Customers do not support trashing."
            )
        before = copy.deepcopy(current)
        self.store.delete(int(current["id"]))
        return before

    def update_order(self, order_id: Any, data: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /orders/{id}``: billing, shipping, note, status, customer and meta data.

        An argument given as null is skipped (WordPress validates, and WooCommerce sets,
        only those that are not), so it changes nothing. An update that carries an address
        (or the order's lines) has the order's taxes and total worked out again at the
        location its addresses give then, as ``save_object`` does, paid order or not."""
        data = {key: value for key, value in data.items() if value is not None}
        _check_order_addresses(data)
        current = self.store.orders.get(_as_id(order_id))
        if current is None:
            raise ApiError(400, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        order = copy.deepcopy(current)
        _merge_address(order["billing"], data.get("billing"), BILLING_FIELDS)
        _merge_address(order["shipping"], data.get("shipping"), SHIPPING_FIELDS)
        if "customer_note" in data:
            order["customer_note"] = str(data["customer_note"])
        if "status" in data:
            if data["status"] not in ORDER_STATUSES:
                raise ApiError(
                    400,
                    "rest_invalid_param",
                    "Invalid parameter(s): status",
                    params={"status": "status is not one of the allowed values."},
                )
            order["status"] = data["status"]
        if "customer_id" in data:
            order["customer_id"] = _as_id(data["customer_id"])
        self.merge_meta(order["meta_data"], data.get("meta_data"))
        if RECALCULATING & data.keys():
            calculate_totals(order)
        order["date_modified"] = order["date_modified_gmt"] = self.stamp(order["date_modified_gmt"])
        self.store.orders[int(order["id"])] = order
        return copy.deepcopy(order)


def _check_order_addresses(data: Mapping[str, Any]) -> None:
    """Refuse an order's addresses as WordPress does before WooCommerce runs
    (``rest_validate_value_from_schema`` over the wc/v3 order schema): every part a string,
    and the billing e-mail an address or null (``"type": ["string", "null"], "format":
    "email"``), so an empty string is refused and null is what clears it. The answer is 400
    ``rest_invalid_param`` naming the address, and nothing is changed."""
    for part, keys in (("billing", BILLING_FIELDS), ("shipping", SHIPPING_FIELDS)):
        if part not in data:
            continue
        given = data[part]
        if not isinstance(given, Mapping):
            raise _invalid_param(part, f"{part} is not of type object.")
        for key in keys:
            value = given.get(key)
            if key not in given or (part, key, value) == ("billing", "email", None):
                continue
            if not isinstance(value, str):
                kinds = "string,null" if (part, key) == ("billing", "email") else "string"
                raise _invalid_param(part, f"{part}[{key}] is not of type {kinds}.")
            if (part, key) == ("billing", "email") and not valid_email(value):
                raise _invalid_param(part, "Invalid email address.")
    if "customer_note" in data and not isinstance(data["customer_note"], str):
        raise _invalid_param("customer_note", "customer_note is not of type string.")


def _invalid_param(name: str, why: str) -> ApiError:
    """WordPress's answer to an argument its schema refuses (WP_REST_Request::has_valid_params)."""
    return ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}", params={name: why})


def _as_id(value: Any) -> int:
    """A WordPress id from JSON or a path; anything else is id 0, which never exists."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return 0


def _check_review_arguments(data: Mapping[str, Any]) -> None:
    """Refuse a review update's arguments as WordPress does before WooCommerce runs
    (``WP_REST_Request::has_valid_params`` over the route's schema): each of the type
    declared, the e-mail one is_email takes (``'format' => 'email'``: an empty one is
    refused too), the status one of its enum. 400 ``rest_invalid_param`` naming it."""
    for name, kind in _REVIEW_ARGUMENTS.items():
        if name not in data:
            continue
        value = data[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _invalid_param(name, f"{name} is not of type integer.")
        if kind is str and not isinstance(value, str):
            raise _invalid_param(name, f"{name} is not of type string.")
    if "reviewer_email" in data and not valid_email(data["reviewer_email"]):
        raise _invalid_param("reviewer_email", "Invalid email address.")
    if "status" in data and data["status"] not in REVIEW_UPDATES:
        raise _invalid_param("status", f"status is not one of {', '.join(REVIEW_UPDATES)}.")


def _existing_review(store: ShopStore, review_id: Any) -> dict[str, Any]:
    """The review ``review_id`` names (``get_review``, in the route's permission check): 404
    ``woocommerce_rest_review_invalid_id`` where there is none."""
    review = store.reviews.get(_as_id(review_id))
    if review is None:
        raise ApiError(404, "woocommerce_rest_review_invalid_id", "Invalid review ID.")
    return review


def _set_review_status(review: dict[str, Any], status: str) -> bool:
    """``handle_status_param``: whether the status changed. Spam and the trash remember the
    status they came from, which ``unspam`` and ``untrash`` give back (WordPress keeps it as
    ``_wp_trash_meta_status``; held where there is none). A status the review has already
    is no change (``wp_get_comment_status`` names a held one ``unapproved``, so ``hold``
    always is one)."""
    if status == review["status"] and status != "hold":
        return False
    if status in ("spam", "trash"):
        if review["status"] not in ("spam", "trash"):
            review["previous_status"] = review["status"]
        review["status"] = status
    elif status in ("unspam", "untrash"):
        if review["status"] != status[2:]:
            return False
        review["status"] = review.pop("previous_status", None) or "hold"
    else:
        review["status"] = status
    return True


#: A review update's arguments and the keys of the stored comment they write.
_REVIEW_WRITES = (
    ("review", "content"),
    ("product_id", "product_id"),
    ("reviewer", "reviewer"),
    ("reviewer_email", "reviewer_email"),
)


def update_review(store: ShopStore, review_id: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """``PUT /products/reviews/{id}`` (``update_item`` [src]): the arguments checked first,
    then the review looked up; what is given is written, the rest of the comment (its IP
    address and browser, which no argument reaches) kept. A rating is written only when not
    0 (``! empty``) and with one of those; a status alone that changes nothing is 500
    ``woocommerce_rest_review_failed_edit``, as WooCommerce answers it. Returns the review as
    stored."""
    _check_review_arguments(data)
    review = _existing_review(store, review_id)
    if data.get("product_id") and data["product_id"] not in store.products:
        raise ApiError(404, "woocommerce_rest_product_invalid_id", "Invalid product ID.")
    if "review" in data and not data["review"]:
        raise ApiError(400, "woocommerce_rest_review_content_invalid", "Invalid review content.")
    changed = copy.deepcopy(review)
    written = [(key, data[name]) for name, key in _REVIEW_WRITES if name in data]
    changed.update(written)
    # The rating is written beside the comment's own fields only: alone, or with a status
    # alone, it is passed over.
    if written and data.get("rating"):
        changed["rating"] = data["rating"]
    if "status" in data and not _set_review_status(changed, data["status"]) and not written:
        raise ApiError(500, "woocommerce_rest_review_failed_edit", "Updating review status failed.")
    store.reviews[int(review["id"])] = changed
    return copy.deepcopy(changed)


def delete_review(store: ShopStore, review_id: Any, force: bool) -> tuple[dict[str, Any], bool]:
    """``DELETE /products/reviews/{id}`` (``delete_item`` [src]): with ``force`` the comment is
    deleted for good; without it, on a site that keeps a trash (WordPress's default,
    ``EMPTY_TRASH_DAYS`` 30), it is moved there, name, e-mail, text and all, and a review in
    the trash already is 410 ``woocommerce_rest_already_trashed``. Returns the review as it
    was (``force``) or is now, and whether it was deleted."""
    review = _existing_review(store, review_id)
    if force:
        del store.reviews[int(review["id"])]
        return copy.deepcopy(review), True
    if review["status"] == "trash":
        raise ApiError(
            410, "woocommerce_rest_already_trashed", "The object has already been trashed."
        )
    _set_review_status(review, "trash")
    return copy.deepcopy(review), False
