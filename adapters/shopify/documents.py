"""The GraphQL documents the Shopify adapter sends, and nothing else.

Kept in one place so the field list read from Shopify is reviewable at a glance (it is the
upper bound of what reaches klantsync; the mapping then decides what flows on), and so the
sandbox's tests can check it answers exactly these. Each connection asks for few enough
nodes to stay far below Shopify's single-query cost ceiling (1000 points by third-party
accounts): a customers page of 250 costs 2 + 250 x 3 + 1 (pageInfo) = 753.

Values that can be personal data (the e-mail in a search) always travel as variables, never
inside the document text.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CUSTOMERS_PAGE",
    "CUSTOMERS_SEARCH",
    "CUSTOMER_BY_ID",
    "CUSTOMER_FIELDS",
    "CUSTOMER_HELD_FIELDS",
    "CUSTOMER_ORDERS",
    "LINE_ITEMS_PER_ORDER",
    "ORDERS_PAGE_SIZE",
    "PEOPLE_SEARCH",
    "PERSON_BY_ID",
    "REQUEST_ERASURE",
    "SEARCH_PAGE_SIZE",
]

#: What a customer node is read with: the mapped fields, plus ``note`` and ``tags``, which
#: are read so access requests show them and so withheld-field counts name them.
CUSTOMER_FIELDS: Final = """
      id
      email
      firstName
      lastName
      phone
      createdAt
      updatedAt
      note
      tags
      emailMarketingConsent { marketingState consentUpdatedAt }
      defaultAddress { address1 address2 city zip countryCodeV2 company phone }
"""

#: ``addresses`` is cut at ``first``; this many covers any real address book.
ADDRESSES_PER_CUSTOMER: Final = 100

#: What ``find`` reads a customer with: the pull's fields plus what the shop keeps on the
#: person that no flow syncs. The mapping syncs the default address only, but an access
#: request must show the person every address the shop keeps for them (a work address, a
#: parcel point), their consent to SMS marketing beside the e-mail one (state, level, when
#: and where collected), their language and what they spent. A pull and a targeted sync
#: read none of it (minimisation).
CUSTOMER_HELD_FIELDS: Final = f"""{CUSTOMER_FIELDS.rstrip()}
      locale
      amountSpent {{ amount currencyCode }}
      smsMarketingConsent {{
        marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom
      }}
      addresses(first: {ADDRESSES_PER_CUSTOMER}) {{
        address1 address2 city zip province countryCodeV2 company phone firstName lastName
      }}
"""

CUSTOMERS_PAGE: Final = f"""
query KlantsyncCustomers($first: Int!, $after: String, $query: String) {{
  customers(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {{
    nodes {{{CUSTOMER_FIELDS}    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

#: Shopify e-mails are unique per store; a few slots leave room for fuzzy search matches.
SEARCH_PAGE_SIZE: Final = 10

CUSTOMERS_SEARCH: Final = f"""
query KlantsyncFindCustomer($first: Int!, $query: String!) {{
  customers(first: $first, query: $query) {{
    nodes {{{CUSTOMER_HELD_FIELDS}    }}
  }}
}}
"""

CUSTOMER_BY_ID: Final = f"""
query KlantsyncCustomer($id: ID!) {{
  customer(id: $id) {{{CUSTOMER_HELD_FIELDS}  }}
}}
"""

#: The same lookups for a targeted sync: the fields a pull reads, no address book.
PEOPLE_SEARCH: Final = f"""
query KlantsyncFindPerson($first: Int!, $query: String!) {{
  customers(first: $first, query: $query) {{
    nodes {{{CUSTOMER_FIELDS}    }}
  }}
}}
"""

PERSON_BY_ID: Final = f"""
query KlantsyncPerson($id: ID!) {{
  customer(id: $id) {{{CUSTOMER_FIELDS}  }}
}}
"""

#: 10 orders of up to 50 line items and two addresses:
#: 1 + 2 + 10 x (1 + 2 + 2 + 50 + 1 + 1 + 1) + 1 = 584 points.
ORDERS_PAGE_SIZE: Final = 10
LINE_ITEMS_PER_ORDER: Final = 50

#: The order fields personal to the customer are read whole (what they wrote at checkout,
#: where it was billed and sent), as WooCommerce's orders are: an access request shows them.
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
