"""WooCommerce webhook deliveries: the signature scheme and the decoding of topics into events.

WooCommerce signs a delivery with ``X-WC-Webhook-Signature = base64(HMAC-SHA256(raw body,
secret))`` (``WC_Webhook::generate_signature``). There is no timestamp in the signature, so no
freshness window can be checked here; replays are caught by the daemon on the body's hash
(:func:`connector.adapter.body_key`: WooCommerce's delivery id is neither signed nor one per
delivery), and a changed customer is fetched from the shop, never taken from the body: a
delivery sent again later, or one overtaken by a later change, cannot write old data back.
The sandbox signs with :func:`webhook_signature` too, so both sides share one definition.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from connector.adapter import WebhookEvent, WebhookRequest, body_key, delivery_json

__all__ = ["is_ping", "parse_delivery", "verify_delivery", "webhook_signature"]

_PING_BODY = re.compile(rb"webhook_id=\d+")


def webhook_signature(body: bytes, secret: str) -> str:
    """``base64(HMAC-SHA256(body, secret))``, as WooCommerce computes it."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def is_ping(request: WebhookRequest) -> bool:
    """Whether this is the form-encoded ping WooCommerce sends when a webhook is saved."""
    content_type = request.headers.get("content-type", "")
    return content_type.startswith("application/x-www-form-urlencoded") and bool(
        _PING_BODY.fullmatch(request.body.strip())
    )


def verify_delivery(request: WebhookRequest, secret: str) -> bool:
    """Check a delivery's signature in constant time.

    ``WC_Webhook::deliver_ping`` posts ``webhook_id=<id>`` with no signature header at all,
    and WooCommerce refuses to activate the webhook unless the ping gets a 200. So an
    *unsigned* body that is exactly a ping is accepted: it carries no data and
    :func:`parse_delivery` turns it into no events, so accepting it cannot move anyone's
    data. A ping that does carry a signature must match it like any other delivery.
    """
    signature = request.headers.get("x-wc-webhook-signature")
    if signature is None:
        return is_ping(request)
    expected = webhook_signature(request.body, secret)
    return hmac.compare_digest(signature.strip().encode(), expected.encode())


def _positive_id(value: Any) -> str | None:
    """A WordPress id as text, or ``None`` for 0, missing or malformed ids (guests)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isdecimal() and int(value) > 0:
        return str(int(value))
    return None


def parse_delivery(request: WebhookRequest) -> list[WebhookEvent]:
    """Decode a verified delivery into events (see the adapter's ``parse_webhook``)."""
    if is_ping(request) and "x-wc-webhook-topic" not in request.headers:
        return []
    delivery_id = body_key(request.body)
    topic = request.headers.get("x-wc-webhook-topic", "").strip().lower()
    body = delivery_json(request.body)
    if not isinstance(body, dict):
        # Signed but not a JSON object: nothing to act on, and failing the delivery would
        # only make WooCommerce disable the webhook after a few attempts.
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    resource, _, event = topic.partition(".")
    if resource == "customer" and event in ("created", "updated"):
        email = body.get("email")
        return [
            WebhookEvent(
                kind="changed",
                delivery_id=delivery_id,
                external_id=_positive_id(body.get("id")),
                email=email if isinstance(email, str) and email else None,
            )
        ]
    if resource == "customer" and event == "deleted":
        # The payload of a deleted event is only {"id": ...}.
        return [
            WebhookEvent(
                kind="deleted", delivery_id=delivery_id, external_id=_positive_id(body.get("id"))
            )
        ]
    if resource == "order":
        billing = body.get("billing")
        email = billing.get("email") if isinstance(billing, dict) else None
        external_id = _positive_id(body.get("customer_id"))
        # An order placed by an account names that customer, by id alone: its billing
        # e-mail may be another account holder's address (connector.adapter.placed_by),
        # and looked up by it the delivery refreshed that other person. A guest order has
        # only its billing e-mail to name anyone by.
        email = email if isinstance(email, str) and email and external_id is None else None
        if external_id is None and email is None:
            # order.deleted carries only the order id: no person to resync.
            return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
        return [
            WebhookEvent(
                kind="changed", delivery_id=delivery_id, external_id=external_id, email=email
            )
        ]
    return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
