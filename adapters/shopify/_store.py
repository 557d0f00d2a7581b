"""The Shopify sandbox's data: customers and orders in GraphQL shape, search, paging, erasure.

Records are kept the way the GraphQL Admin API shows them (``firstName``, ``defaultAddress``,
``emailMarketingConsent``, ...), including fields klantsync must not pass on (``note``,
``tags``, ``locale``, ``amountSpent``, SMS consent, every address), so the tests can see the
mapping withhold them. Ids are GraphQL global ids over numeric ids, like Shopify's.

Search follows Shopify's syntax for the terms the adapter uses: ``email:<value>``,
``updated_at:>='<time>'`` (and ``>``, ``<``, ``<=``, ``created_at``, ``id``), terms joined
by spaces meaning AND, bare words matching name or e-mail. With ``date_granular`` the
``updated_at`` filter compares calendar dates only, as one community report says Shopify's
does (UNVERIFIED), so the adapter's overlap can be shown to matter. With ``token_search``
``email:`` matches the words of an address rather than the whole of it, as Shopify's may
(UNVERIFIED either way): ``email:"jan@x.nl"`` finds ``jan@x.nl.evil`` and ``x.jan@nl.nl``
too, every customer whose address holds each of the words ``jan``, ``x`` and ``nl``.

Paging is keyset paging, as Shopify's: a cursor is base64 JSON of the last record's sort
value and id, so a record changed while a pull is under way moves behind the cursor instead
of shifting the pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GraphQLError",
    "ShopStore",
    "Slice",
    "gid",
    "iso",
    "numeric_id",
    "older_than",
    "paginate",
]

CUSTOMER = "Customer"
ORDER = "Order"
_TERM = re.compile(r"""(?:[^\s"']+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')+""")
_COMPARE = re.compile(r"(>=|<=|>|<|=)?(.*)", re.DOTALL)


class GraphQLError(Exception):
    """An error the fake answers inside ``errors`` (HTTP 200), as Shopify does."""

    def __init__(self, message: str, code: str | None = None, path: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.path = list(path)

    def as_json(self) -> dict[str, Any]:
        """The error as one entry of ``errors``."""
        body: dict[str, Any] = {"message": self.message}
        if self.path:
            body["path"] = self.path
        if self.code:
            body["extensions"] = {"code": self.code}
        return body


def gid(kind: str, number: int) -> str:
    """``gid://shopify/<kind>/<number>``."""
    return f"gid://shopify/{kind}/{number}"


def numeric_id(value: Any, kind: str) -> int | None:
    """The number inside a global id of ``kind``, or ``None``."""
    prefix = f"gid://shopify/{kind}/"
    if isinstance(value, str) and value.startswith(prefix) and value[len(prefix) :].isdecimal():
        return int(value[len(prefix) :])
    return None


def iso(moment: datetime) -> str:
    """Shopify's timestamp form: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: str) -> datetime | None:
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def older_than(text: Any, days: int, now: str) -> bool:
    """Whether the ISO time ``text`` lies more than ``days`` days before ``now``."""
    moment, current = _time(str(text)), _time(now)
    if moment is None or current is None:
        return False
    return (current - moment).total_seconds() > days * 86_400


@dataclass
class Slice:
    """One page of a connection: its items, each item's cursor and the page info."""

    items: list[dict[str, Any]]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def _encode_cursor(last_id: int, last_value: Any) -> str:
    raw = json.dumps({"last_id": last_id, "last_value": last_value}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode("ascii")


def _decode_cursor(cursor: str) -> tuple[Any, int]:
    try:
        raw = json.loads(base64.b64decode(cursor.encode(), validate=True))
        return raw["last_value"], int(raw["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise GraphQLError("Invalid cursor for current pagination", "BAD_USER_INPUT") from None


def paginate(
    items: list[dict[str, Any]],
    sort_value: Callable[[dict[str, Any]], Any],
    kind: str,
    args: dict[str, Any],
    max_page: int,
) -> Slice:
    """Apply ``first``/``after``/``last``/``before``/``reverse`` to items already filtered.

    Raises:
        GraphQLError: neither or both of ``first`` and ``last``, a page over ``max_page``,
            or a cursor the fake did not hand out.
    """
    first, last = args.get("first"), args.get("last")
    if (first is None) == (last is None):
        raise GraphQLError("you must provide one of first or last", "BAD_USER_INPUT")
    size = first if first is not None else last
    if not isinstance(size, int) or size < 0 or size > max_page:
        raise GraphQLError(f"The page size must be between 0 and {max_page}", "BAD_USER_INPUT")

    def key(item: dict[str, Any]) -> tuple[Any, int]:
        return sort_value(item), numeric_id(item["id"], kind) or 0

    reverse = bool(args.get("reverse"))
    ordered = sorted(items, key=key, reverse=reverse)
    keys = [key(item) for item in ordered]
    start, stop = 0, len(ordered)
    if isinstance(args.get("after"), str):
        mark = _decode_cursor(args["after"])
        start = next(
            (i for i, k in enumerate(keys) if (k < mark if reverse else k > mark)), len(keys)
        )
    if isinstance(args.get("before"), str):
        mark = _decode_cursor(args["before"])
        stop = next(
            (i for i, k in enumerate(keys) if (k <= mark if reverse else k >= mark)), len(keys)
        )
    window = list(range(start, max(start, stop)))
    chosen = window[:size] if first is not None else window[max(0, len(window) - size) :]
    cursors = [_encode_cursor(keys[i][1], keys[i][0]) for i in chosen]
    return Slice(
        items=[ordered[i] for i in chosen],
        cursors=cursors,
        has_next=bool(chosen) and chosen[-1] + 1 < stop if first is not None else stop < len(keys),
        has_previous=bool(chosen) and chosen[0] > start if last is not None else start > 0,
    )


@dataclass
class ShopStore:
    """Customers, orders and pending erasures of one fake store."""

    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: customer number -> when the erasure was requested (ISO); held until processed.
    pending_erasures: dict[int, str] = field(default_factory=dict)
    date_granular: bool = False
    token_search: bool = False
    _next_customer: int = 7_100_000_000_001
    _next_order: int = 5_500_000_000_001
    _next_line: int = 13_000_000_000_001
    _next_address: int = 9_200_000_000_001

    # -- ids -----------------------------------------------------------------------------

    def new_customer_number(self) -> int:
        self._next_customer += 1
        return self._next_customer - 1

    def new_order_number(self) -> int:
        self._next_order += 1
        return self._next_order - 1

    def new_address_number(self) -> int:
        self._next_address += 1
        return self._next_address - 1

    def new_line_number(self) -> int:
        self._next_line += 1
        return self._next_line - 1

    # -- lookups -------------------------------------------------------------------------

    def by_email(self, email: str) -> dict[str, Any] | None:
        wanted = email.strip().casefold()
        return next(
            (
                c
                for c in self.customers.values()
                if isinstance(c.get("email"), str) and c["email"].casefold() == wanted
            ),
            None,
        )

    def customer(self, global_id: Any) -> dict[str, Any] | None:
        number = numeric_id(global_id, CUSTOMER)
        return self.customers.get(number) if number is not None else None

    def order(self, global_id: Any) -> dict[str, Any] | None:
        number = numeric_id(global_id, ORDER)
        return self.orders.get(number) if number is not None else None

    def orders_of(self, customer_number: int) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["_customer"] == customer_number]

    # -- search --------------------------------------------------------------------------

    def search_customers(self, query: str | None) -> list[dict[str, Any]]:
        """Customers matching Shopify search syntax (the subset in the module docstring)."""
        found = list(self.customers.values())
        for term in _TERM.findall(query or ""):
            name, sep, raw = term.partition(":")
            if not sep:
                word = _strip_quotes(term).casefold()
                found = [c for c in found if word in _words(c)]
                continue
            comparator, value = _split_comparison(raw)
            found = [c for c in found if self._matches(c, name.lower(), comparator, value)]
        return found

    def _matches(self, customer: dict[str, Any], name: str, comparator: str, value: str) -> bool:
        if name == "email":
            address = str(customer.get("email") or "").casefold()
            if self.token_search:
                return set(_email_words(value)) <= set(_email_words(address))
            return address == value.casefold()
        if name == "id":
            number = numeric_id(customer["id"], CUSTOMER)
            return value.isdecimal() and number == int(value)
        if name in ("updated_at", "created_at"):
            held = _time(customer["updatedAt" if name == "updated_at" else "createdAt"])
            bound = _time(value) if len(value.strip()) > 10 else _time(value.strip() + "T00:00:00Z")
            if held is None or bound is None:
                return False
            left: Any = held
            right: Any = bound
            if self.date_granular and name == "updated_at":
                left, right = held.date(), bound.date()
            compare: dict[str, bool] = {
                ">": left > right,
                ">=": left >= right,
                "<": left < right,
                "<=": left <= right,
                "=": left == right,
            }
            return compare[comparator]
        return True  # a term the fake does not know filters nothing, as Shopify's warnings say

    # -- erasure -------------------------------------------------------------------------

    def erase(self, number: int) -> None:
        """What Shopify's erasure leaves: no customer; orders keep only their facts."""
        self.customers.pop(number, None)
        self.pending_erasures.pop(number, None)
        for order in self.orders_of(number):
            order["_customer"] = None
            order["email"] = order["phone"] = order["note"] = None
            order["customAttributes"] = []
            order["billingAddress"] = order["shippingAddress"] = None


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return re.sub(r"\\(.)", r"\1", inner)
    return text


def _split_comparison(raw: str) -> tuple[str, str]:
    match = _COMPARE.fullmatch(raw)
    assert match is not None  # the pattern matches any text
    return match.group(1) or "=", _strip_quotes(match.group(2))


def _email_words(address: str) -> list[str]:
    return [word for word in re.split(r"[^\w]+", address.casefold()) if word]


def _words(customer: dict[str, Any]) -> str:
    return " ".join(
        str(customer.get(key) or "") for key in ("email", "firstName", "lastName")
    ).casefold()
