"""How a Shopify access copy reads for the person: its records and the Admin API's keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.access_labels import CopyLabels

__all__ = ["COPY_LABELS"]

_FIELDS: dict[str, tuple[str, str]] = {
    "type": ("Kind of record", "Soort gegeven"),
    "id": ("Id in Shopify", "Id in Shopify"),
    "email": ("E-mail address", "E-mailadres"),
    "firstName": ("First name", "Voornaam"),
    "lastName": ("Last name", "Achternaam"),
    "phone": ("Phone number", "Telefoonnummer"),
    "note": ("Note by the shop", "Notitie van de winkel"),
    "tags.*": ("Tag {}", "Label {}"),
    "createdAt": ("Created", "Aangemaakt"),
    "updatedAt": ("Last changed", "Laatst gewijzigd"),
    "locale": ("Language", "Taal"),
    "emailMarketingConsent.marketingState": ("Newsletter consent", "Toestemming nieuwsbrief"),
    "amountSpent.amount": ("Spent in the shop", "Besteed in de winkel"),
    "amountSpent.currencyCode": ("Spent in the shop: currency", "Besteed in de winkel: valuta"),
    "state": ("Account status", "Status van het account"),
    "customerId": ("Customer", "Klant"),
    "name": ("Order number", "Bestelnummer"),
    "processedAt": ("Placed", "Geplaatst"),
    "displayFinancialStatus": ("Payment status", "Betaalstatus"),
    "displayFulfillmentStatus": ("Delivery status", "Leverstatus"),
    "totalPriceSet.shopMoney.amount": ("Total", "Totaal"),
    "totalPriceSet.shopMoney.currencyCode": ("Currency", "Valuta"),
    "customAttributes.*.key": ("Detail given at checkout {}", "Gegeven bij het afrekenen {}"),
    "customAttributes.*.value": (
        "Detail given at checkout {}: value",
        "Gegeven bij het afrekenen {}: waarde",
    ),
    "lineItems.nodes.*.title": ("Order line {}: product", "Bestelregel {}: product"),
    "lineItems.nodes.*.quantity": ("Order line {}: quantity", "Bestelregel {}: aantal"),
}
for _where, (_en, _nl) in {
    "defaultAddress": ("Address", "Adres"),
    "billingAddress": ("Billing address", "Factuuradres"),
    "shippingAddress": ("Delivery address", "Bezorgadres"),
    # The customer's address book: the default address is one of them, listed again.
    "addresses.*": ("Address book, address {}", "Adresboek, adres {}"),
}.items():
    _FIELDS |= {
        f"{_where}.{key}": (f"{_en}: {en}", f"{_nl}: {nl}")
        for key, (en, nl) in {
            "name": ("name", "naam"),
            "firstName": ("first name", "voornaam"),
            "lastName": ("last name", "achternaam"),
            "company": ("company", "bedrijfsnaam"),
            "address1": ("street and number", "straat en huisnummer"),
            "address2": ("address line 2", "adresregel 2"),
            "zip": ("postcode", "postcode"),
            "city": ("city", "plaats"),
            "province": ("state or province", "provincie"),
            "countryCodeV2": ("country", "land"),
            "country": ("country", "land"),
            "phone": ("phone number", "telefoonnummer"),
        }.items()
    }


def _kind_of(record: Mapping[str, Any]) -> tuple[str, str]:
    if record.get("type") == "order":
        return "order", str(record.get("name") or "").lstrip("#")
    return ("shop_account", "") if record.get("type") is None else ("", "")


COPY_LABELS = CopyLabels(vendor="Shopify", kind_of=_kind_of, fields=_FIELDS)
