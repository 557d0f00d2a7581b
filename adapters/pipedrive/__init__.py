"""Pipedrive API v2 persons: the adapter, its settings and its sandbox.

Pipedrive answers a client that keeps sending after 429s with a 403 Cloudflare HTML page,
which is rate limiting, not a permission problem: ``client_config`` hands
:func:`~adapters.pipedrive.settings.is_cloudflare_block` to the HTTP client as its
``rate_limited`` test and, through ``budget_spent``, holds every call back for a while
after it, as after a spent daily budget: calling on is what earned the block.
"""

from __future__ import annotations

from adapters.pipedrive.adapter import (
    ERASURE_ENDPOINT,
    ERASURE_NOTE,
    SPEC,
    PipedriveAdapter,
)
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.pipedrive.settings import (
    PipedriveSettings,
    client_config,
    is_cloudflare_block,
    pipedrive_limits,
    wait_hint,
)
from adapters.pipedrive.webhooks import basic_authorization

__all__ = [
    "ERASURE_ENDPOINT",
    "ERASURE_NOTE",
    "SPEC",
    "PipedriveAdapter",
    "PipedriveSandbox",
    "PipedriveSettings",
    "basic_authorization",
    "client_config",
    "is_cloudflare_block",
    "pipedrive_limits",
    "wait_hint",
]
