"""WooCommerce: customers and orders over the REST API v3, with a local sandbox."""

from __future__ import annotations

from adapters.woocommerce.adapter import (
    SPEC,
    WooCommerceAdapter,
    WooCommerceSettings,
)
from adapters.woocommerce.sandbox import WooCommerceSandbox

__all__ = ["SPEC", "WooCommerceAdapter", "WooCommerceSandbox", "WooCommerceSettings"]
