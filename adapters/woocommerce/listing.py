"""Collection endpoints of the sandbox: argument checks, filters, paging headers.

WordPress validates collection arguments before the controller runs: ``per_page`` must lie in
1..100, ``page`` at least 1, enums must match, or the answer is 400 ``rest_invalid_param``.
Pages come with ``X-WP-Total``, ``X-WP-TotalPages`` and a ``Link`` header (``rel="next"`` /
``rel="prev"``). A page past the end of a customers list is an empty 200, as in core.

The customers fast path (ordered by id, no search/include/exclude) costs O(page size) even
over a million generated customers; the other orderings and filters walk the whole list.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from adapters.woocommerce.payloads import valid_email
from adapters.woocommerce.rest import ApiError
from adapters.woocommerce.store import ShopStore
from connector.sandboxkit import field_tree

__all__ = ["list_customers", "list_orders", "list_reviews", "only_fields"]

CUSTOMER_ROLES = (
    "all",
    "administrator",
    "editor",
    "author",
    "contributor",
    "subscriber",
    "customer",
    "shop_manager",
)
#: wc/v3's ``status`` enum (WC_REST_Orders_V2_Controller::get_collection_params): ``any``,
#: ``trash`` and the order statuses. ``any`` is WP_Query's: every status but the trash.
ORDER_STATUSES = (
    "any",
    "trash",
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
)

#: The review list's ``status`` enum (WC_REST_Product_Reviews_Controller::
#: get_collection_params [src]); ``approved`` is its default. ``all`` is WP_Comment_Query's:
#: held and approved reviews, not those marked spam or in the trash [src: WordPress
#: ``class-wp-comment-query.php``], which are listed only when asked for by name.
REVIEW_STATUSES = ("all", "hold", "approved", "spam", "trash")
#: The statuses ``all`` stands for.
_ALL_REVIEWS = frozenset({"hold", "approved"})
#: What the review list can be ordered by; ``date_gmt`` is its default.
_REVIEW_ORDERS = ("date", "date_gmt", "id", "include", "product")


def _invalid(name: str, why: str) -> ApiError:
    return ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}", params={name: why})


def _integer(
    request: Request, name: str, default: int | None, low: int, high: int | None
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, f"{name} is not of type integer.") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} (inclusive) and {high} (inclusive)" if high else f"at least {low}"
        raise _invalid(name, f"{name} must be {bounds}")
    return value


def _enum(request: Request, name: str, default: str, allowed: Iterable[str]) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise _invalid(name, f"{name} is not one of {', '.join(allowed)}.")
    return value


#: A numeric string as PHP's is_numeric takes one (what rest_is_integer asks first).
_PHP_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _id_list(request: Request, name: str) -> list[int]:
    """An ``array`` of ``integer`` argument (ids): repeated ``name[]=`` or one value split
    on commas and spaces (wp_parse_list). Each item must be an integer to rest_is_integer
    ("7", "-7", "7.0"), or the answer is 400 naming its place in the list; the queries
    then take each through absint (wp_parse_id_list), so "-7" is 7."""
    values = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    parts = [part for value in values for part in re.split(r"[\s,]+", value) if part]
    ids: list[int] = []
    for index, part in enumerate(parts):
        number = float(part) if _PHP_NUMERIC.fullmatch(part) else None
        if number is None or not number.is_integer():
            raise _invalid(name, f"{name}[{index}] is not of type integer.")
        ids.append(abs(int(number)))
    return ids


def _paging_headers(request: Request, total: int, per_page: int, page: int) -> dict[str, str]:
    pages = math.ceil(total / per_page) if total else 0
    headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
    links = []
    if page > 1:
        prev_page = min(page - 1, pages) if pages else 1
        links.append(f'<{request.url.include_query_params(page=prev_page)}>; rel="prev"')
    if page < pages:
        links.append(f'<{request.url.include_query_params(page=page + 1)}>; rel="next"')
    if links:
        headers["Link"] = ", ".join(links)
    return headers


def _wild_match(pattern: str, email: str) -> bool:
    """WP_User_Query's search with a leading and/or trailing ``*``: the rest of the term
    (taken literally) at the end, the start, or anywhere in the address."""
    leading, trailing = pattern.startswith("*"), pattern.endswith("*")
    term = pattern.strip("*")
    if leading and trailing:
        return term in email
    return email.endswith(term) if leading else email.startswith(term)


def _display_name(customer: dict[str, Any]) -> str:
    name = f"{customer['first_name']} {customer['last_name']}".strip()
    return (name or str(customer["username"])).lower()


def only_fields(request: Request, body: Any) -> Any:
    """``body`` as WordPress answers it under ``_fields`` (rest_filter_response_fields):
    a list of keys (wp_parse_list: split on commas and spaces, or given as ``_fields[]``),
    each item of a list cut to them; ``a.b`` keeps ``b`` of the object ``a`` (since 5.3),
    and ``a`` asked for whole wins over its parts. ``_links`` comes only when asked for,
    like any key. Without ``_fields``, ``body``."""
    given = [*request.query_params.getlist("_fields"), *request.query_params.getlist("_fields[]")]
    tree = field_tree(part for value in given for part in re.split(r"[\s,]+", value))
    if not tree:
        return body
    if isinstance(body, list):
        return [_cut(item, tree) if isinstance(item, dict) else item for item in body]
    return _cut(body, tree) if isinstance(body, dict) else body


def _cut(value: Any, wanted: dict[str, Any]) -> Any:
    """PHP's array_intersect_key, recursively: a list cut by names keeps nothing."""
    if isinstance(value, list):
        return []
    out: dict[str, Any] = {}
    for key, below in wanted.items():
        if key in value:
            inner = value[key]
            nested = below is not True and isinstance(inner, dict | list)
            out[key] = _cut(inner, below) if nested else inner
    return out


def list_customers(
    store: ShopStore, request: Request
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``GET /customers``: the page's customers and the paging headers.

    The customers are the store's own dicts, not copies: the one caller serialises them into
    the response at once and changes nothing. (A deep copy of every listed customer used to
    cost more than building them, which capped what the benchmarks could pull.)
    """
    per_page = _integer(request, "per_page", 10, 1, 100)
    page = _integer(request, "page", 1, 1, None)
    offset = _integer(request, "offset", None, 0, None)
    assert per_page is not None and page is not None
    order = _enum(request, "order", "asc", ("asc", "desc"))
    orderby = _enum(request, "orderby", "name", ("id", "include", "name", "registered_date"))
    # wc/v3 builds the enum from wp_roles(): a role a plugin registered is one of them.
    role = _enum(request, "role", "customer", (*CUSTOMER_ROLES, *store.plugin_roles))
    _enum(request, "context", "view", ("view", "edit"))
    include, exclude = _id_list(request, "include"), _id_list(request, "exclude")
    search = request.query_params.get("search", "").strip().strip("*").lower()
    email = request.query_params.get("email", "").strip()
    start = offset if offset is not None else (page - 1) * per_page
    descending = order == "desc"

    if "email" in request.query_params:
        # The parameter is declared 'format' => 'email': WordPress checks it with is_email
        # before WooCommerce runs the query.
        if not valid_email(email):
            raise _invalid("email", "Invalid email address.")
        # WC_REST_Customers_V1_Controller::get_items passes it to WP_User_Query as the search
        # in user_email: an exact match, unless it begins or ends with "*", which
        # WP_User_Query reads as a wildcard there (a LIKE, as MySQL compares: any case).
        if email.startswith("*") or email.endswith("*"):
            matched = [
                c
                for c in store.iter_customers(role)
                if _wild_match(email.lower(), str(c["email"]).lower())
            ]
        else:
            found = store.by_email(email) if email else None
            customer = store.get(found) if found is not None else None
            matched = [customer] if customer and (role in ("all", customer["role"])) else []
    elif orderby in ("id", "registered_date") and not (search or include or exclude):
        # Registration order is id order: user ids only ever grow.
        ids, total = store.page_ids(role, start, per_page, descending)
        items = [c for c in (store.get(i) for i in ids) if c is not None]
        return items, _paging_headers(request, total, per_page, page)
    else:
        matched = list(store.iter_customers(role))
    if include:
        wanted = set(include)
        matched = [c for c in matched if c["id"] in wanted]
    if exclude:
        unwanted = set(exclude)
        matched = [c for c in matched if c["id"] not in unwanted]
    if search:
        matched = [
            c
            for c in matched
            if any(
                search in str(c[k]).lower()
                for k in ("email", "username", "first_name", "last_name")
            )
        ]
    if orderby == "include" and include:
        matched.sort(key=lambda c: include.index(c["id"]), reverse=descending)
    elif orderby == "name":
        matched.sort(key=_display_name, reverse=descending)
    else:
        matched.sort(key=lambda c: int(c["id"]), reverse=descending)
    items = matched[start : start + per_page]
    return items, _paging_headers(request, len(matched), per_page, page)


def list_orders(store: ShopStore, request: Request) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``GET /orders``: filtered by customer, search and status (``any``, the default,
    leaves out the trash); newest first by default."""
    per_page = _integer(request, "per_page", 10, 1, 100)
    page = _integer(request, "page", 1, 1, None)
    offset = _integer(request, "offset", None, 0, None)
    customer = _integer(request, "customer", None, 0, None)
    assert per_page is not None and page is not None
    order = _enum(request, "order", "desc", ("asc", "desc"))
    orderby = _enum(request, "orderby", "date", ("date", "id", "include", "title", "slug"))
    status = _enum(request, "status", "any", ORDER_STATUSES)
    # MySQL's utf8mb4 collations compare without case, and some fold "ß" to "ss": case
    # folding stands in for them, so a search finds what a shop's database would.
    search = request.query_params.get("search", "").strip().casefold()
    orders = list(store.orders.values())
    if customer is not None:
        orders = [o for o in orders if o["customer_id"] == customer]
    if status == "any":
        # A trashed order is listed only when asked for by ``status=trash``.
        orders = [o for o in orders if o["status"] != "trash"]
    else:
        orders = [o for o in orders if o["status"] == status]
    if search:
        # Core searches the billing and shipping address indexes, which include e-mail and phone.
        orders = [
            o
            for o in orders
            if any(
                search in str(v).casefold()
                for part in ("billing", "shipping")
                for v in o[part].values()
            )
        ]
    key = "date_created_gmt" if orderby == "date" else "id"
    orders.sort(key=lambda o: (o[key], o["id"]), reverse=order == "desc")
    start = offset if offset is not None else (page - 1) * per_page
    total = len(orders)
    return copy.deepcopy(orders[start : start + per_page]), _paging_headers(
        request, total, per_page, page
    )


def _collation(text: str) -> str:
    """A text as the shop's database compares it: MySQL's utf8mb4 collations compare without
    case and ignore trailing spaces, and some fold "ß" to "ss" (case folding stands in)."""
    return text.rstrip(" ").casefold()


def list_reviews(store: ShopStore, request: Request) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``GET /products/reviews``: the page's reviews as stored (the caller shapes them) and the
    paging headers; newest first by default, ``approved`` ones only unless ``status`` says
    otherwise.

    ``reviewer_email`` is declared ``'format' => 'email'``: WordPress checks it with is_email
    before WooCommerce runs (400 ``rest_invalid_param``), then WP_Comment_Query matches
    ``comment_author_email`` by the database's collation (:func:`_collation`), not byte for
    byte. ``search`` looks into the reviewer's name, e-mail, IP address and the text.
    """
    per_page = _integer(request, "per_page", 10, 1, 100)
    page = _integer(request, "page", 1, 1, None)
    offset = _integer(request, "offset", None, 0, None)
    assert per_page is not None and page is not None
    order = _enum(request, "order", "desc", ("asc", "desc"))
    orderby = _enum(request, "orderby", "date_gmt", _REVIEW_ORDERS)
    status = _enum(request, "status", "approved", REVIEW_STATUSES)
    _enum(request, "context", "view", ("view", "edit"))
    include, exclude = _id_list(request, "include"), _id_list(request, "exclude")
    products, reviewers = _id_list(request, "product"), _id_list(request, "reviewer")
    search = request.query_params.get("search", "").strip().casefold()
    statuses = _ALL_REVIEWS if status == "all" else {status}
    matched = [r for r in store.reviews.values() if r["status"] in statuses]
    if "reviewer_email" in request.query_params:
        email = request.query_params["reviewer_email"].strip()
        if not valid_email(email):
            raise _invalid("reviewer_email", "Invalid email address.")
        matched = [r for r in matched if _collation(r["reviewer_email"]) == _collation(email)]
    if include:
        matched = [r for r in matched if r["id"] in include]
    if exclude:
        matched = [r for r in matched if r["id"] not in exclude]
    if products:
        matched = [r for r in matched if r["product_id"] in products]
    if reviewers:
        matched = [r for r in matched if r["user_id"] in reviewers]
    if search:
        columns = ("reviewer", "reviewer_email", "author_ip", "content")
        matched = [r for r in matched if any(search in str(r[c]).casefold() for c in columns)]
    if orderby == "include" and include:
        matched.sort(key=lambda r: include.index(r["id"]))
    else:
        # WP_Comment_Query adds the id, in the same direction, to make the order total.
        first = {"id": "id", "product": "product_id"}.get(orderby, "date")
        matched.sort(key=lambda r: (r[first], r["id"]), reverse=order == "desc")
    start = offset if offset is not None else (page - 1) * per_page
    headers = _paging_headers(request, len(matched), per_page, page)
    return copy.deepcopy(matched[start : start + per_page]), headers
