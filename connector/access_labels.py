"""Plain words for the access reports: what each record is, and what each field holds.

A data subject reads the report (Art. 12(1) GDPR: "clear and plain language"), not the
vendors' APIs: a record is headed by what it is and where ("Bestelling 1042", "Contact in
HubSpot"), and a field by a label in the report's language. Labels come from the adapter's
own table of the vendor's well-known keys (:class:`CopyLabels`, an adapter's
``copy_labels``), else from the system's mapping where it maps the field (its canonical
name's label: a custom property or merge field the table cannot know); any other key
is shown as the vendor gives it, so nothing is left out. ``data.json`` keeps the vendors'
keys: this module touches the reports only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector.model import CANONICAL_FIELDS

if TYPE_CHECKING:
    from connector.config import Config

__all__ = [
    "KEPT_AFTER_ERASURE",
    "KINDS",
    "RETAINED_REASONS",
    "CopyLabels",
    "SystemLabels",
    "labels_for",
]

#: What a record is, by the code an adapter's ``kind_of`` gives, as a heading in English
#: and Dutch; ``{vendor}`` is the system's product name, ``{ref}`` the record's own
#: reference (an order number, a list).
KINDS: dict[str, tuple[str, str]] = {
    "shop_account": (
        "Customer account in the webshop ({vendor})",
        "Klantaccount in de webshop ({vendor})",
    ),
    "order": ("Order {ref}", "Bestelling {ref}"),
    "review": ("Product review", "Productreview"),
    "contact": ("Contact in {vendor}", "Contact in {vendor}"),
    "person": ("Contact person in {vendor}", "Contactpersoon in {vendor}"),
    "subscription": (
        "Newsletter subscription ({vendor}, list {ref})",
        "Nieuwsbriefabonnement ({vendor}, lijst {ref})",
    ),
}

#: Why a system keeps a record on purpose (the ``retained`` code its ``find`` gives), per
#: language, beside the record in the copy; a code not listed is shown as the system gave it.
RETAINED_REASONS: dict[str, dict[str, str]] = {
    "tax_records": {
        "en": "kept with its billing data for the tax records the law requires the shop to "
        "keep (seven years in the Netherlands)",
        "nl": "bewaard met de factuurgegevens voor de fiscale bewaarplicht van de winkel "
        "(in Nederland zeven jaar)",
    },
    "deleted_purged_later": {
        "en": "deleted; the system can restore it until it deletes it for good on or after "
        "the date under purged_after",
        "nl": "verwijderd; tot de datum bij purged_after (of later) kan het systeem het nog "
        "herstellen, daarna wist het dit definitief",
    },
}

#: What an erasure left at a system on purpose, by the ``retained`` code its verification
#: recorded, as the person's report says it after what the erasure did there (English,
#: Dutch). ``None``: nothing to add, the erasure's outcome says it already (a record in a
#: system's bin is "deleted, can still be restored"). A code not listed is said only as
#: something kept on purpose: the code is the system's word, not the person's.
KEPT_AFTER_ERASURE: dict[str, tuple[str, str] | None] = {
    "tax_records": (
        "your orders kept, with their billing data, because the law requires the shop to "
        "keep its invoices for seven years (in the Netherlands)",
        "uw bestellingen bewaard, met de factuurgegevens, omdat de wet de winkel verplicht "
        "zijn facturen zeven jaar te bewaren (in Nederland)",
    ),
    "deleted_purged_later": None,
}

#: The kinds of record a system's mapping reads (the person record): their fields take the
#: mapping's labels. An order or a review has keys of the same name that hold other things.
MAPPED_KINDS = frozenset({"shop_account", "contact", "person", "subscription"})

_POSITION = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")


@dataclass(frozen=True)
class CopyLabels:
    """How a kind of system's records read in an access report (an adapter's ``copy_labels``).

    Attributes:
        vendor: the product's name as people know it ("WooCommerce").
        kind_of: a record -> (a code of :data:`KINDS`, or "" when not known; its reference).
        fields: a record's dotted path, list positions as ``*``, -> (English, Dutch) label;
            ``{}`` in a label takes the position's number, counted from 1.
        mapped_under: where the mapping's paths sit in a record ("properties." at HubSpot).
        values: a record's dotted path -> a value the vendor gives there as a code -> what
            it means for the person (English, Dutch): Mailchimp's ``cleaned`` says nothing
            to someone who does not know that it means their address bounced.
    """

    vendor: str
    kind_of: Callable[[Mapping[str, Any]], tuple[str, str]]
    fields: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    mapped_under: str = ""
    values: Mapping[str, Mapping[str, tuple[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemLabels:
    """One configured system's labels: its adapter's table and its mapping's fields."""

    copy: CopyLabels
    mapped: Mapping[str, str] = field(default_factory=dict)  # record path -> canonical name

    def heading(self, lang: str, record: Mapping[str, Any]) -> str:
        """What ``record`` is and where, in ``lang``; "" when the adapter does not say."""
        code, ref = self.copy.kind_of(record)
        if code not in KINDS:
            return ""
        text = KINDS[code][1 if lang == "nl" else 0].format(vendor=self.copy.vendor, ref=ref)
        return text.strip()

    def value(self, lang: str, path: str, value: str) -> str:
        """``value`` at ``path`` with what it means in ``lang`` beside it, where the adapter
        says; else ``value`` itself."""
        meaning = self.copy.values.get(_POSITION.sub("*", path), {}).get(value)
        if meaning is None:
            return value
        return f"{value}: {meaning[1 if lang == 'nl' else 0]}"

    def label(self, lang: str, record: Mapping[str, Any], path: str) -> str:
        """``path`` of ``record`` in plain words in ``lang``, or ``path`` itself."""
        # The adapter's table first: it tells a billing address from a delivery address,
        # where the mapping's canonical name says "street and number" for the one it reads.
        positions = [int(p) + 1 for p in _POSITION.findall(path)]
        known = self.copy.fields.get(_POSITION.sub("*", path))
        if known is not None:
            return known[1 if lang == "nl" else 0].format(*positions)
        code, _ = self.copy.kind_of(record)
        if code in MAPPED_KINDS and path in self.mapped:
            spec = CANONICAL_FIELDS[self.mapped[path]]
            return spec.label_nl if lang == "nl" else spec.label_en
        return path


def labels_for(config: Config) -> dict[str, SystemLabels]:
    """Each configured system's labels, for those whose adapter states ``copy_labels``."""
    from adapters.registry import REGISTRY

    found: dict[str, SystemLabels] = {}
    for name, settings in config.systems.items():
        copy = getattr(REGISTRY[settings.adapter].factory, "copy_labels", None)
        if not isinstance(copy, CopyLabels):
            continue
        mapping = config.mappings.get(name)
        mapped: dict[str, str] = {}
        if mapping is not None:
            mapped = {f.path: canonical for canonical, f in mapping.fields.items()}
            mapped = {f"{copy.mapped_under}{path}": c for path, c in mapped.items()}
        found[name] = SystemLabels(copy, mapped)
    return found
