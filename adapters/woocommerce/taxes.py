"""An order's taxes and total as the sandbox shop works them out, the way WooCommerce does.

WooCommerce charges an order's taxes at its tax location (``WC_Abstract_Order::
get_tax_location``): by its default setting (``woocommerce_tax_based_on = shipping``) the
shipping address's country, else the billing address's, else the shop's base country. It
works them out when the order is placed, and again whenever a REST update of the order
carries an address or its lines (``WC_REST_Orders_V2_Controller::save_object`` calls
``calculate_totals( true )``): a paid order's taxes and total are rewritten at whatever
location its addresses give by then.

The shop's rates are one standard rate per country, with no state, postcode or city rules;
an order at a country without a rate is charged none, as WooCommerce charges none where no
rate matches. Amounts are strings with two decimals, as wc/v3 serves them, and each line's
tax is rounded on its own (the default: ``woocommerce_tax_round_at_subtotal`` off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["BASE_COUNTRY", "RECALCULATING", "TAX_RATES", "TaxRate", "calculate_totals"]

#: The shop's own country (``woocommerce_default_country``): where an order with no country
#: is taxed.
BASE_COUNTRY = "NL"


@dataclass(frozen=True)
class TaxRate:
    """One row of the shop's tax table (WooCommerce > Settings > Tax > Standard rates)."""

    rate_id: int
    country: str
    percent: Decimal
    label: str


TAX_RATES: dict[str, TaxRate] = {
    rate.country: rate
    for rate in (
        TaxRate(1, "NL", Decimal(21), "BTW"),
        TaxRate(2, "BE", Decimal(21), "BTW"),
        TaxRate(3, "DE", Decimal(19), "MwSt."),
    )
}

#: What an order's REST update carries that makes WooCommerce work its totals out again.
RECALCULATING = frozenset(
    {"billing", "shipping", "line_items", "shipping_lines", "fee_lines", "coupon_lines"}
)

_CENT = Decimal("0.01")


def _money(amount: Decimal) -> str:
    return str(amount.quantize(_CENT, rounding=ROUND_HALF_UP))


def tax_location(order: Mapping[str, Any]) -> str:
    """The country an order is taxed in: shipping's, else billing's, else the base country."""
    for part in ("shipping", "billing"):
        country = order[part].get("country")
        if country:
            return str(country)
    return BASE_COUNTRY


def calculate_totals(order: dict[str, Any]) -> None:
    """Work ``order``'s line taxes, tax lines, ``total_tax`` and ``total`` out at its tax
    location, from each line's amount before tax (``total``), as ``calculate_totals`` does."""
    rate = TAX_RATES.get(tax_location(order))
    net = tax = Decimal(0)
    for item in order["line_items"]:
        amount = Decimal(item["total"])
        charged = _tax(amount, rate)
        item["subtotal_tax"] = item["total_tax"] = _money(charged)
        item["taxes"] = (
            [{"id": rate.rate_id, "total": _money(charged), "subtotal": _money(charged)}]
            if rate
            else []
        )
        net, tax = net + amount, tax + charged
    order["tax_lines"] = [_tax_line(order, rate, tax)] if rate else []
    order["cart_tax"] = order["total_tax"] = _money(tax)
    order["total"] = _money(net + tax)


def _tax(amount: Decimal, rate: TaxRate | None) -> Decimal:
    """The tax on one line, rounded to the cent (none where no rate matches)."""
    if rate is None:
        return Decimal(0)
    return (amount * rate.percent / 100).quantize(_CENT, rounding=ROUND_HALF_UP)


def _tax_line(order: Mapping[str, Any], rate: TaxRate, tax: Decimal) -> dict[str, Any]:
    """The order's tax line for ``rate``. Its id stands in for the shop's order item
    sequence, as its line's does (:func:`~adapters.woocommerce.shapes.order_shape`): one per
    order and rate."""
    return {
        "id": int(order["id"]) * 10 + rate.rate_id,
        "rate_code": f"{rate.country}-{rate.label.rstrip('.').upper()}-1",
        "rate_id": rate.rate_id,
        "label": rate.label,
        "compound": False,
        "tax_total": _money(tax),
        "shipping_tax_total": "0.00",
        "rate_percent": float(rate.percent),
        "meta_data": [],
    }
