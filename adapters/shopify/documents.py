"""The GraphQL documents the Shopify adapter sends, and nothing else.

A customer is read with the fields its mapping reads (:func:`selection_of` turns the
mapping's paths into a selection: ``defaultAddress.city`` selects ``defaultAddress { city
}``) and what every read needs (:data:`ALWAYS_READ`), by pulls and targeted syncs alike;
access and erasure read besides what the shop keeps on the person (:data:`HELD_FIELDS`).
An adapter not told its mapping's paths reads :data:`CUSTOMER_FIELDS`. The rest is fixed
text, kept in one place so it is reviewable at a glance, and so the sandbox's tests can
check it answers exactly these. Each connection asks for few enough nodes to stay below
Shopify's single-query cost ceiling (:data:`QUERY_COST_CEILING`): a customers page is cut
to what its selection allows (:attr:`CustomerQueries.most_per_page`), and the fixed ones
are counted below.

Values that can be personal data (the e-mail in a search) always travel as variables, never
inside the document text; a mapping's path reaches it only as GraphQL field names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connector.errors import ConfigError

__all__ = [
    "ALWAYS_READ",
    "CUSTOMER_FIELDS",
    "CUSTOMER_ORDERS",
    "DEFAULT_QUERIES",
    "HELD_FIELDS",
    "LINE_ITEMS_PER_ORDER",
    "ORDERS_PAGE_SIZE",
    "QUERY_COST_CEILING",
    "REQUEST_ERASURE",
    "SEARCH_MOST_PAGES",
    "SEARCH_PAGE_SIZE",
    "CustomerQueries",
    "Selection",
    "customer_queries",
    "mapping_selection",
    "merged",
    "selection_of",
]

#: A GraphQL selection: each field as the document writes it (with its arguments, if it
#: has any) -> what is selected under it, nothing for a scalar.
Selection = dict[str, "Selection"]

#: Shopify's single-query cost ceiling for third-party accounts, in points.
QUERY_COST_CEILING: Final = 1000

#: A GraphQL field name (the spec's ``Name``). A path's every part must be one: nothing else
#: of a mapping's text can reach a document.
_NAME: Final = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")

#: What every customer read needs, whatever the mapping reads: the id (the identity map's,
#: an erasure's), the e-mail (a search keeps exact matches only) and ``updatedAt`` (the
#: pull's cursor).
ALWAYS_READ: Final = ("id", "email", "updatedAt")


def selection_of(paths: Iterable[str]) -> Selection:
    """The selection of dotted ``paths``: ``defaultAddress.city`` and
    ``defaultAddress.zip`` select ``defaultAddress { city zip }``.

    Raises:
        ValueError: a part of a path is not a GraphQL field name; its text is the path.
    """
    selection: Selection = {}
    for path in paths:
        parts = path.split(".")
        if not all(_NAME.fullmatch(part) for part in parts):
            raise ValueError(path)
        under = selection
        for part in parts:
            under = under.setdefault(part, {})
    return selection


def mapping_selection(paths: Mapping[str, str], mapping: Path) -> Selection:
    """The selection of a mapping's ``paths`` (each with the mapping key that names it),
    the one rule of which paths a Shopify mapping may hold: the config load judges the
    mapping by it (so ``check`` refuses what a sync would), and the adapter builds its reads
    with it.

    Raises:
        ConfigError: a path that cannot be a Shopify field (a part of it is no GraphQL
            name), naming the ``mapping`` file and its key.
    """
    try:
        return selection_of(paths)
    except ValueError as exc:
        raise ConfigError(
            str(mapping),
            paths[str(exc)],
            "each part of a Shopify path must be a GraphQL field name (letters, digits "
            "and _, not starting with a digit), as in defaultAddress.province",
        ) from None


def merged(*selections: Selection) -> Selection:
    """One selection holding all of ``selections``. A field two of them select is selected
    once, as the first writes it (``addresses(first: 100)``, not a bare ``addresses``
    beside it, which GraphQL refuses as a conflict), with both selections under it."""
    out: Selection = {}
    for selection in selections:
        _merge_into(out, selection)
    return out


def _merge_into(out: Selection, selection: Selection) -> None:
    for key, under in selection.items():
        name = _field_name(key)
        written = next((k for k in out if _field_name(k) == name), key)
        _merge_into(out.setdefault(written, {}), under)


def _field_name(key: str) -> str:
    return key.split("(", 1)[0]


def _text(selection: Selection, indent: str) -> str:
    """The selection as document text: a field a line, what is under it on the same line."""
    return "".join(f"\n{indent}{_inline(key, under)}" for key, under in selection.items())


def _inline(key: str, under: Selection) -> str:
    if not under:
        return key
    return f"{key} {{ {' '.join(_inline(k, u) for k, u in under.items())} }}"


def _node_cost(selection: Selection) -> int:
    """What one node of this selection costs by Shopify's rules: 1, and 1 for each object
    (or list of them) under it, whatever it holds; scalars are free."""
    return 1 + sum(_node_cost(under) for under in selection.values() if under)


def _names(names: str) -> list[str]:
    """Space-separated field names, a list: a line of them reads as a selection does."""
    return names.split()


def _each(parent: str, names: str) -> list[str]:
    """The path of each of ``names`` (space-separated) under ``parent``."""
    return [f"{parent}.{name}" for name in _names(names)]


#: What a customer node is read with by an adapter its mapping's paths were not given to:
#: the shipped mapping's fields, plus ``note`` and ``tags``, which then reach klantsync so
#: that withheld-field counts name them.
CUSTOMER_FIELDS: Final[Selection] = selection_of(
    [
        *ALWAYS_READ,
        *_names("firstName lastName phone createdAt note tags"),
        *_each("emailMarketingConsent", "marketingState consentUpdatedAt"),
        *_each("defaultAddress", "address1 address2 city zip countryCodeV2 company phone"),
    ]
)

#: ``addresses`` is cut at ``first``; this many covers any real address book.
ADDRESSES_PER_CUSTOMER: Final = 100

#: What ``find`` reads a customer with beside what a pull reads: what the shop keeps on the
#: person, whether a mapping reads it or not. An access request must show them every
#: address the shop keeps for them (a work address, a parcel point), their consent to e-mail
#: and SMS marketing (state, level, when and where collected), the staff's note and tags,
#: their language and what they spent. A pull and a targeted sync read none of it
#: (minimisation). The e-mail consent's level (single or confirmed opt-in) is read here:
#: the pull's selection has the state and date only, and a copy without it did not show
#: whether the person ever confirmed the subscription.
HELD_FIELDS: Final[Selection] = merged(
    CUSTOMER_FIELDS,
    selection_of(
        [
            "locale",
            "emailMarketingConsent.marketingOptInLevel",
            *_each("amountSpent", "amount currencyCode"),
            *_each(
                "smsMarketingConsent",
                "marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom",
            ),
        ]
    ),
    {
        f"addresses(first: {ADDRESSES_PER_CUSTOMER})": selection_of(
            _names(
                "address1 address2 city zip province countryCodeV2 company phone firstName lastName"
            )
        )
    },
)

#: Shopify e-mails are unique per store; a few slots leave room for fuzzy search matches.
SEARCH_PAGE_SIZE: Final = 10

#: Pages of an e-mail search read at most before the lookup gives up with an error. Whether
#: ``email:`` matches whole addresses or their words is UNVERIFIED; matching words, it finds
#: every ``jan@x.nl.evil`` beside ``jan@x.nl``, and the customer may be on any page. Past
#: this many (100 customers), the lookup fails rather than answer "nobody" from a part.
SEARCH_MOST_PAGES: Final = 10


@dataclass(frozen=True)
class CustomerQueries:
    """The documents that read customers, for one selection of their fields.

    Attributes:
        page: a pull's page of customers (``$first``, ``$after``, ``$query``).
        person_by_id: a targeted sync's read by id (``$id``): what a pull reads.
        customer_by_id: access's read by id: what the shop keeps besides.
        ids_search: the e-mail search of every lookup (``$first``, ``$after``, ``$query``):
            :data:`ALWAYS_READ` alone; a match is then read by id with what the lookup needs.
        ids_by_id: an erasure's read by id (``$id``): :data:`ALWAYS_READ` alone.
        most_per_page: the most customers a page may ask for within the cost ceiling.
        fields: what a pull reads of each (:data:`ALWAYS_READ` included).
    """

    fields: Selection
    page: str
    person_by_id: str
    customer_by_id: str
    ids_search: str
    ids_by_id: str
    most_per_page: int


def customer_queries(fields: Selection) -> CustomerQueries:
    """The documents reading ``fields`` (and :data:`ALWAYS_READ`) of customers, and
    :data:`HELD_FIELDS` besides for access and erasure."""
    fields = merged(selection_of(ALWAYS_READ), fields)
    read, held = _text(fields, "      "), _text(merged(HELD_FIELDS, fields), "      ")
    ids = _text(selection_of(ALWAYS_READ), "      ")
    # A page costs 2 + size x (cost of a node) + 1 for pageInfo.
    most = (QUERY_COST_CEILING - 3) // _node_cost(fields)
    return CustomerQueries(
        fields=fields,
        page=f"""
query KlantsyncCustomers($first: Int!, $after: String, $query: String) {{
  customers(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {{
    nodes {{{read}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
""",
        person_by_id=f"""
query KlantsyncPerson($id: ID!) {{
  customer(id: $id) {{{read}
  }}
}}
""",
        customer_by_id=f"""
query KlantsyncCustomer($id: ID!) {{
  customer(id: $id) {{{held}
  }}
}}
""",
        ids_search=f"""
query KlantsyncFindCustomerIds($first: Int!, $after: String, $query: String!) {{
  customers(first: $first, after: $after, query: $query) {{
    nodes {{{ids}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
""",
        ids_by_id=f"""
query KlantsyncCustomerIds($id: ID!) {{
  customer(id: $id) {{{ids}
  }}
}}
""",
        most_per_page=max(1, most),
    )


#: The documents of an adapter its mapping's paths were not given to.
DEFAULT_QUERIES: Final = customer_queries(CUSTOMER_FIELDS)

#: 10 orders of up to 50 line items, two addresses and the details given at checkout:
#: 1 + 2 + 10 x (1 + 2 + 2 + 50 + 1 + 1 + 1 + 1) + 1 = 594 points.
ORDERS_PAGE_SIZE: Final = 10
LINE_ITEMS_PER_ORDER: Final = 50

#: The order fields personal to the customer are read whole (what they wrote at checkout,
#: its note and the details given with it, ``customAttributes``: REST's ``note_attributes``,
#: a gift message, a delivery slot; where it was billed and sent), as WooCommerce's orders
#: are: an access request shows them.
#: ``numberOfOrders`` counts every order of the customer's, so a history Shopify served in
#: part (orders older than 60 days need ``read_all_orders``) is told from a whole one.
_ORDER_ADDRESS: Final = "address1 address2 city zip province countryCodeV2 company phone name"

CUSTOMER_ORDERS: Final = f"""
query KlantsyncCustomerOrders($id: ID!, $after: String) {{
  customer(id: $id) {{
    numberOfOrders
    orders(first: {ORDERS_PAGE_SIZE}, after: $after) {{
      nodes {{
        id
        name
        createdAt
        email
        phone
        note
        customAttributes {{ key value }}
        billingAddress {{ {_ORDER_ADDRESS} }}
        shippingAddress {{ {_ORDER_ADDRESS} }}
        totalPriceSet {{ shopMoney {{ amount currencyCode }} }}
        lineItems(first: {LINE_ITEMS_PER_ORDER}) {{
          nodes {{ title quantity }}
          pageInfo {{ hasNextPage endCursor }}
        }}
      }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
"""

#: An order's line items past the first page (an access request lists every one).
LINE_ITEMS_PAGE_SIZE: Final = 250

ORDER_LINE_ITEMS: Final = f"""
query KlantsyncOrderLineItems($id: ID!, $after: String) {{
  order(id: $id) {{
    lineItems(first: {LINE_ITEMS_PAGE_SIZE}, after: $after) {{
      nodes {{ title quantity }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
"""

REQUEST_ERASURE: Final = """
mutation KlantsyncRequestErasure($customerId: ID!) {
  customerRequestDataErasure(customerId: $customerId) {
    customerId
    userErrors { field message code }
  }
}
"""
