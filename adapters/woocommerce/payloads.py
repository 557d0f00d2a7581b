"""Payload helpers of the WooCommerce adapter: request bodies, cursors and error codes.

Pure functions, kept apart from :mod:`adapters.woocommerce.adapter` so that module stays about
the calls it makes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

import httpx

from adapters.woocommerce.shapes import BILLING_FIELDS, SHIPPING_FIELDS
from connector.http import is_machine_code

__all__ = [
    "ANONYMOUS_ORDER",
    "ANONYMOUS_PATHS",
    "ANONYMOUS_REVIEW",
    "KEPT_FOR_TAX",
    "code_only",
    "decode_cursor",
    "emptied",
    "encode_cursor",
    "is_anonymous",
    "response_code",
    "valid_email",
]

#: WordPress ``is_email``'s characters: of the part before the @, and of each domain label
#: (ASCII only: it refuses "jürgen@..." and "info@müller.de"), which may hold a hyphen but
#: neither start nor end with one.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")


def valid_email(value: str) -> bool:
    """Whether WordPress would accept ``value`` as an e-mail address: its ``is_email``, rule
    by rule. At least six characters; an @, not first; before it :data:`_LOCAL`'s
    characters; after it at least two labels parted by single dots, each a :data:`_LABEL`.

    WordPress checks the customers ``email`` filter with it (400 rest_invalid_param), and
    an account's address too, so no customer holds an address it refuses.
    """
    local, at, domain = value.partition("@")
    if len(value) < 6 or not at or not _LOCAL.fullmatch(local):
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


#: What an anonymised order keeps of its addresses. A REST update that carries an address
#: has WooCommerce work the order's taxes and total out again (``calculate_totals( true )``)
#: at the tax location the addresses then give, and an address with no country gives the
#: shop's base country: a German customer's order charged 19% VAT was rewritten at the Dutch
#: 21%, its total with it, though the order is kept as the record of a sale. Country and state
#: are what country and state rates go by, and part of that record (VAT/OSS); alone they
#: identify nobody. Over REST no update of an address escapes the recalculation (WooCommerce's
#: own eraser, which sets and saves without it, is not reachable there), so rates that go by
#: postcode or city are worked out again all the same.
KEPT_FOR_TAX = ("country", "state")
#: Order fields the anonymisation blanks: every other part of the billing and shipping
#: addresses (shipping has no e-mail in WooCommerce), and the customer's own note. The billing
#: e-mail is cleared with null: WordPress checks it against the order schema (an address, or
#: null since WooCommerce 5.9) before WooCommerce runs, and refuses an empty string with 400
#: rest_invalid_param: the erasure would stop at the person's first order.
_BLANKED = tuple(key for key in SHIPPING_FIELDS if key not in KEPT_FOR_TAX)
ANONYMOUS_ORDER: dict[str, Any] = {
    "billing": {**dict.fromkeys(_BLANKED, ""), "email": None},
    "shipping": dict.fromkeys(_BLANKED, ""),
    "customer_note": "",
}
#: The paths of an order the anonymisation blanks, as ``_fields`` names them: all
#: :func:`is_anonymous` needs to read to tell an order blanked already.
ANONYMOUS_PATHS: tuple[str, ...] = (
    *(f"{part}.{key}" for part in ("billing", "shipping") for key in ANONYMOUS_ORDER[part]),
    "customer_note",
)

#: What an anonymised product review says of its reviewer. WordPress's own eraser for
#: comments (``wp_comments_personal_data_eraser`` [src]) writes the author "Anonymous" and
#: an empty e-mail, keeping the text; over REST the e-mail cannot be emptied (the update
#: declares it ``'format' => 'email'``, and is_email refuses "": 400 rest_invalid_param), so
#: it becomes the address WordPress itself gives an erased one
#: (``wp_privacy_anonymize_data('email')``), which is_email takes and no mailbox has. The
#: text and the rating stay, as with WordPress's eraser. What the eraser also clears, the IP
#: address, the browser and the link to the user account, no REST argument reaches.
ANONYMOUS_REVIEW: dict[str, str] = {
    "reviewer": "Anonymous",
    "reviewer_email": "deleted@site.invalid",
}

#: A customer's fields an update empties with an empty string, by dotted name. WooCommerce's
#: ``update_customer_meta_fields`` sets the names and each billing and shipping key that
#: PHP's ``isset`` finds in the request, and their setters take "" (no check but the
#: billing e-mail's): "" empties one, a null (not ``isset``) leaves it as it was. Not the
#: e-mail addresses: the account's is who the customer is (a write never empties it), and
#: the billing one, where order mails and invoices go, is declared an address
#: (``'format' => 'email'``), which WordPress refuses "" for where it checks the arguments.
_BLANKABLE = frozenset(
    {
        "first_name",
        "last_name",
        *(f"billing.{key}" for key in BILLING_FIELDS if key != "email"),
        *(f"shipping.{key}" for key in SHIPPING_FIELDS),
    }
)
#: The account's names, which WooCommerce keeps as the billing address's names too: written,
#: both copies are (``adapter._with_billing_names``), so emptied, both are.
_BILLING_COPIES = {"first_name": "billing.first_name", "last_name": "billing.last_name"}
#: A customer's meta data, entries of a list (``meta_data.<key>``). An entry is emptied by
#: writing its key with a null value: ``update_meta_data`` sets it, and the save
#: (``WC_Data::save_meta_data``) deletes an entry left null. An empty string would be kept as
#: a value, which a plugin may read as one ("" is not "no").
_META = "meta_data."


def emptied(clear: Collection[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a customer update sends to empty the fields ``clear`` names (dotted, as
    ``fields``): "" for a name or an address key, null for a meta data entry.

    A name WooCommerce cannot hold empty (the e-mail addresses) or that this does not know
    (the username, which is not editable; a read-only field) is left out, not sent for the
    shop to refuse, as is any name ``fields`` writes. Emptying the account's first or last
    name empties its billing copy too, unless ``fields`` writes that copy.
    """
    empty: dict[str, Any] = {}
    for name in sorted(clear):
        if name in _BLANKABLE:
            empty[name] = ""
            copy = _BILLING_COPIES.get(name)
            if copy is not None:
                empty[copy] = ""
        elif name.startswith(_META) and len(name) > len(_META):
            empty[name] = None
    return {name: value for name, value in empty.items() if name not in fields}


#: WordPress's own customer errors, which WooCommerce passes on as a batch item's code: the
#: only codes with hyphens, which the shared rule does not accept (a name can have one).
_WORDPRESS_CODES = frozenset(
    {
        "registration-error-email-exists",
        "registration-error-invalid-email",
        "registration-error-username-exists",
        "registration-error-invalid-username",
        # A shop set not to generate passwords for new accounts refuses a create without one.
        "registration-error-missing-password",
    }
)


def code_only(error: Any) -> str:
    """A per-item error's code, kept only if it is one (messages, and text that only looks
    like a code, can echo what was sent: a name, a phone number, an address)."""
    code = error.get("code") if isinstance(error, Mapping) else None
    if isinstance(code, str) and (is_machine_code(code) or code in _WORDPRESS_CODES):
        return code
    return "rejected"


def response_code(response: httpx.Response) -> str:
    """The error code of a WordPress error response, or ``""``."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return code_only(body) if isinstance(body, dict) else ""


def is_anonymous(order: Mapping[str, Any]) -> bool:
    """Whether an order already holds no personal billing, shipping or note data: nothing in
    what :data:`ANONYMOUS_ORDER` blanks. Its country and state, kept or emptied (as earlier
    versions did), say nothing either way."""
    for part in ("billing", "shipping"):
        values = order.get(part)
        if isinstance(values, Mapping) and any(values.get(k) for k in ANONYMOUS_ORDER[part]):
            return False
    return not order.get("customer_note")


def encode_cursor(offset: int, after: int, total: int | None) -> str:
    """The pull cursor: where the next page starts in the id-ordered list, the highest id
    already delivered, and how many customers the shop counted at the last page."""
    return json.dumps({"offset": offset, "after": after, "total": total}, separators=(",", ":"))


def decode_cursor(cursor: str | None, page_size: int) -> tuple[int, int, int | None]:
    """(offset, highest id already delivered, count at the last page). An unreadable
    cursor restarts the scan: a full scan loses nothing, and unchanged records stop at the
    engine's hash check. A cursor of earlier versions names a page instead of an offset."""
    if not cursor:
        return 0, 0, None
    try:
        data = json.loads(cursor)
        page = data.get("page")
        offset = (int(page) - 1) * page_size if page is not None else int(data["offset"])
        after = int(data.get("after", 0))
        total = data.get("total")
        total = None if total is None else int(total)
    except (ValueError, TypeError, KeyError, AttributeError):
        return 0, 0, None
    if offset < 0 or after < 0 or (total is not None and total < 0):
        return 0, 0, None
    return offset, after, total
