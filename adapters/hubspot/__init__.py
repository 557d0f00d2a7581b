"""HubSpot CRM v3 contacts: the adapter, its settings and its sandbox."""

from __future__ import annotations

from adapters.hubspot.adapter import (
    SPEC,
    HubSpotAdapter,
    HubSpotSettings,
    client_config,
    hubspot_limits,
    sign_v3,
    wait_hint,
)
from adapters.hubspot.sandbox import HubSpotSandbox

__all__ = [
    "SPEC",
    "HubSpotAdapter",
    "HubSpotSandbox",
    "HubSpotSettings",
    "client_config",
    "hubspot_limits",
    "sign_v3",
    "wait_hint",
]
