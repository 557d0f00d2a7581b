"""Shopify: customers over the GraphQL Admin API (a source and a DSR target), with a sandbox."""

from __future__ import annotations

from adapters.shopify.adapter import SPEC, ShopifyAdapter, ShopifySettings
from adapters.shopify.sandbox import ShopifySandbox

__all__ = ["SPEC", "ShopifyAdapter", "ShopifySandbox", "ShopifySettings"]
