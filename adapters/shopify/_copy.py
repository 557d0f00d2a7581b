"""What a Shopify access copy holds of the free text it hands over: others' addresses left out.

The staff's note and tags on a customer, an order's note and the details given with it at
checkout (``customAttributes``, REST's ``note_attributes``: a gift message, a delivery
instruction) are the person's data, handed over whole; an address of someone else they
quote ("bevestiging ook naar bep@...") reads ``[address left out]`` (Art. 15(4);
:mod:`connector.others`). The person's own stay: the one asked for, their customers', and
an order's own e-mail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from connector.others import own_addresses, text_without_others, without_others_addresses

__all__ = ["ATTRIBUTE_WRITTEN", "WRITTEN", "copy_addresses", "customer_copy", "order_copy"]

#: The text a customer and an order hold: the staff's note on the customer, the order's.
WRITTEN: Final = ("note",)
#: What a detail given at checkout holds: its name (a checkout field's, or typed) and value.
ATTRIBUTE_WRITTEN: Final = ("key", "value")


def copy_addresses(email: str, customers: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The person's addresses, lower case: ``email`` (asked with) and their customers'."""
    return own_addresses(email, *(customer.get("email") for customer in customers))


def customer_copy(customer: Mapping[str, Any], own: frozenset[str]) -> dict[str, Any]:
    """A customer as the copy holds it: an address its note or a tag quotes that is none of
    ``own`` is left out."""
    kept = text_without_others(customer, WRITTEN, own)
    tags = kept.get("tags")
    if isinstance(tags, list):
        kept["tags"] = [
            without_others_addresses(tag, own) if isinstance(tag, str) else tag for tag in tags
        ]
    return kept


def order_copy(order: Mapping[str, Any], own: frozenset[str]) -> dict[str, Any]:
    """An order as the copy holds it: an address its note or a detail given at checkout
    quotes that is none of ``own`` nor the order's own e-mail is left out."""
    own |= own_addresses(order.get("email"))
    kept = text_without_others(order, WRITTEN, own)
    attributes = kept.get("customAttributes")
    if isinstance(attributes, list):
        kept["customAttributes"] = [
            text_without_others(a, ATTRIBUTE_WRITTEN, own) if isinstance(a, Mapping) else a
            for a in attributes
        ]
    return kept
