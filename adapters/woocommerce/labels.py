"""How a WooCommerce access copy reads for the person: its records and wc/v3's keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.access_labels import CopyLabels

__all__ = ["COPY_LABELS"]

_ADDRESS: dict[str, tuple[str, str]] = {
    "first_name": ("first name", "voornaam"),
    "last_name": ("last name", "achternaam"),
    "company": ("company", "bedrijfsnaam"),
    "address_1": ("street and number", "straat en huisnummer"),
    "address_2": ("address line 2", "adresregel 2"),
    "city": ("city", "plaats"),
    "state": ("state or province", "provincie"),
    "postcode": ("postcode", "postcode"),
    "country": ("country", "land"),
    "email": ("e-mail address", "e-mailadres"),
    "phone": ("phone number", "telefoonnummer"),
}

_FIELDS: dict[str, tuple[str, str]] = {
    "type": ("Kind of record", "Soort gegeven"),
    "id": ("Number in the shop", "Nummer in de webshop"),
    "date_created": ("Created (shop time)", "Aangemaakt (tijd van de webshop)"),
    "date_created_gmt": ("Created (UTC)", "Aangemaakt (UTC)"),
    "date_modified": ("Last changed (shop time)", "Laatst gewijzigd (tijd van de webshop)"),
    "date_modified_gmt": ("Last changed (UTC)", "Laatst gewijzigd (UTC)"),
    "email": ("E-mail address", "E-mailadres"),
    "first_name": ("First name", "Voornaam"),
    "last_name": ("Last name", "Achternaam"),
    "role": ("Role in the shop", "Rol in de webshop"),
    "username": ("User name", "Gebruikersnaam"),
    "is_paying_customer": ("Paying customer", "Betalende klant"),
    "avatar_url": ("Profile picture (Gravatar link)", "Profielfoto (Gravatar-link)"),
    "meta_data.date_of_birth": ("Date of birth", "Geboortedatum"),
    "meta_data.ip_address": ("IP address", "IP-adres"),
    "meta_data.marketing_opt_in": ("Marketing consent", "Toestemming marketing"),
    "_links.self.*.href": (
        "Link to this record in the shop",
        "Link naar dit gegeven in de webshop",
    ),
    "_links.collection.*.href": (
        "Link to the list in the shop",
        "Link naar de lijst in de webshop",
    ),
    "customer_note": ("Note by the customer", "Opmerking van de klant"),
    # An order.
    "number": ("Order number", "Bestelnummer"),
    "parent_id": ("Part of order", "Onderdeel van bestelling"),
    "order_key": ("Order key", "Bestelsleutel"),
    "created_via": ("Placed via", "Geplaatst via"),
    "status": ("Status", "Status"),
    "currency": ("Currency", "Valuta"),
    "prices_include_tax": ("Prices include VAT", "Prijzen inclusief btw"),
    "customer_id": ("Customer number", "Klantnummer"),
    "customer_ip_address": ("IP address the order was placed from", "IP-adres bij het bestellen"),
    "customer_user_agent": ("Browser the order was placed with", "Browser bij het bestellen"),
    "payment_method": ("Payment method (code)", "Betaalwijze (code)"),
    "payment_method_title": ("Payment method", "Betaalwijze"),
    "transaction_id": ("Payment reference", "Betalingskenmerk"),
    "date_paid": ("Paid (shop time)", "Betaald (tijd van de webshop)"),
    "date_completed": ("Completed (shop time)", "Afgerond (tijd van de webshop)"),
    "line_items.*.name": ("Order line {}: product", "Bestelregel {}: product"),
    "line_items.*.quantity": ("Order line {}: quantity", "Bestelregel {}: aantal"),
    "line_items.*.subtotal": ("Order line {}: subtotal", "Bestelregel {}: subtotaal"),
    "line_items.*.total": ("Order line {}: total", "Bestelregel {}: totaal"),
    "line_items.*.total_tax": ("Order line {}: VAT", "Bestelregel {}: btw"),
    "shipping_total": ("Shipping costs", "Verzendkosten"),
    "cart_tax": ("VAT on the products", "Btw op de producten"),
    "total_tax": ("VAT in total", "Btw totaal"),
    "total": ("Total", "Totaal"),
    "notes.*.note": ("Order note {}: text", "Notitie {} bij de bestelling: tekst"),
    "notes.*.customer_note": (
        "Order note {}: sent to the customer",
        "Notitie {} bij de bestelling: aan de klant gestuurd",
    ),
    # A product review.
    "product_review.product_name": ("Product", "Product"),
    "product_review.review": ("Review text", "Tekst van de review"),
    "product_review.rating": ("Rating", "Waardering"),
    "product_review.reviewer": ("Name shown", "Getoonde naam"),
    "product_review.reviewer_email": ("E-mail address", "E-mailadres"),
    "product_review.status": ("Status", "Status"),
    "product_review.date_created": ("Written (shop time)", "Geschreven (tijd van de webshop)"),
}
for _where, (_en, _nl) in {
    "billing": ("Billing address", "Factuuradres"),
    "shipping": ("Delivery address", "Bezorgadres"),
}.items():
    _FIELDS |= {
        f"{_where}.{k}": (f"{_en}: {en}", f"{_nl}: {nl}") for k, (en, nl) in _ADDRESS.items()
    }


def _kind_of(record: Mapping[str, Any]) -> tuple[str, str]:
    if record.get("type") == "order":
        return "order", str(record.get("number") or record.get("id") or "")
    if record.get("type") == "review":
        return "review", ""
    return ("shop_account", "") if record.get("type") is None else ("", "")


COPY_LABELS = CopyLabels(vendor="WooCommerce", kind_of=_kind_of, fields=_FIELDS)
