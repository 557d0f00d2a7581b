"""Inbound privacy webhooks: a system asks for an erasure or an access request.

A delivery is verified with the system's webhook secret before anything else is read, and
a replayed delivery (same id) opens nothing. Shopify's mandatory ``customers/redact`` and
``customers/data_request`` arrive here, as do other systems' deletion events.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from connector import audit
from connector.adapter import WebhookRequest
from connector.dsr_views import RequestView, WebhookRejected
from connector.lock import KeyedLocks, one_at_a_time

if TYPE_CHECKING:
    from connector.dsr import DsrService

__all__ = ["handle_webhook"]

#: Per store, the deliveries being taken now, each with a lock and how many hold or await it.
_IN_HAND: weakref.WeakKeyDictionary[object, KeyedLocks] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def _alone(store: object, key: str) -> AsyncIterator[None]:
    """Take one delivery at a time: the same delivery taken twice at once waits its turn.

    The id is noted only once its request is open (see below), so two copies taken side by
    side would both find it unseen and both open a request, the second for a person the
    first had just erased everywhere. In turn, the second finds the id noted.
    """
    async with one_at_a_time(_IN_HAND.setdefault(store, {}), key):
        yield


async def handle_webhook(
    service: DsrService, system_name: str, request: WebhookRequest, now: float
) -> list[RequestView]:
    """Verify an inbound delivery with the system's webhook secret, then open its requests.

    Args:
        now: epoch seconds, for the vendor's freshness window.

    Raises:
        WebhookRejected: unknown system, no secret configured, or a bad or stale signature;
            nothing is opened.
    """
    system = service.rt.systems.get(system_name)
    if system is None:
        raise WebhookRejected(f"webhook for unknown system {system_name!r}")
    hooks = system.settings.webhooks
    if hooks is None:
        raise WebhookRejected(
            f"{system_name}: no webhook secret configured (systems.{system_name}.webhooks.secret)"
        )
    if not system.adapter.verify_webhook(request, hooks.secret.get_secret_value(), now):
        audit.append(service.rt.store, "webhook.rejected", {"system": system_name})
        raise WebhookRejected(
            f"{system_name}: webhook signature is invalid or outside its freshness window"
        )
    opened: list[RequestView] = []
    for event in system.adapter.parse_webhook(request):
        if event.kind not in ("erase", "access"):
            continue
        # A replayed delivery must not open a second request; namespaced so the daemon's own
        # use of the same table cannot collide with this guard. The id is noted once the
        # request is open, not before: noted first, a process that died (or a store that
        # failed) before the request was recorded made the vendor's next delivery "a
        # replay", and the erasure was never opened. A delivery taken twice meanwhile finds
        # the request open and resumes it.
        delivery = f"dsr:{event.delivery_id}"
        async with _alone(service.rt.store, f"{system_name}\0{delivery}"):
            if service.db.seen_delivery(system_name, delivery):
                continue
            view = await service.handle_event(system_name, event)
            service.db.first_delivery(system_name, delivery)
        if view is not None:
            opened.append(view)
    return opened
