"""The one place a kind of system is registered: ``adapter = "<kind>"`` in the config.

Adding a system: a package under ``adapters/`` exporting a ``SPEC``, a mapping under
``mappings/``, and one line here. Nothing else in the core changes.
"""

from __future__ import annotations

from adapters.hubspot import SPEC as HUBSPOT
from adapters.mailchimp import SPEC as MAILCHIMP
from adapters.pipedrive import SPEC as PIPEDRIVE
from adapters.shopify import SPEC as SHOPIFY
from adapters.woocommerce import SPEC as WOOCOMMERCE
from connector.adapter import AdapterSpec

__all__ = ["REGISTRY"]

REGISTRY: dict[str, AdapterSpec] = {
    spec.kind: spec for spec in (WOOCOMMERCE, SHOPIFY, HUBSPOT, MAILCHIMP, PIPEDRIVE)
}
