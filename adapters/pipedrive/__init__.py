"""Pipedrive API v2 persons: the adapter, its settings and its sandbox.

Needed outside this package (reported, not done here):

- ``adapters/registry.py``: register ``SPEC`` (``from adapters.pipedrive import SPEC``).
- ``connector/http.py``: Pipedrive answers a client that keeps sending after 429s with a 403
  Cloudflare HTML page, which is rate limiting, not a permission problem. The client classifies
  every 403 as fatal before an adapter sees it; an adapter-provided classifier on
  ``ClientConfig`` (for example ``is_rate_limited: Callable[[httpx.Response], bool]``, fed
  :func:`~adapters.pipedrive.settings.is_cloudflare_block`) would let it become a
  ``RateLimitedError``.
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
