"""Shopify webhook deliveries: the HMAC scheme, and topics decoded into events.

Shopify signs each delivery with ``X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(raw body,
app client secret))``. An invalid HMAC must be answered 401, which the daemon does for any
delivery :func:`verify_delivery` refuses.

Replays: the daemon refuses a delivery whose key it has seen (kept ``webhook_ids_days``).
The key is the body's hash (:func:`connector.adapter.body_key`): ``X-Shopify-Webhook-Id``
is not signed, so keyed on it, a captured ``customers/data_request`` resent under a new id
opened another request and wrote another access bundle. Each genuine delivery of those
topics differs in its body (the customer, the orders, the request's own id). ``shop/redact``
does not: ``{shop_id, shop_domain}``, the same bytes every time, so a store that reinstalled
the app and uninstalled it again within the week had its second request to delete its data
ignored. Its key is the webhook id (a retry repeats it): a capture resent under a new id
purges what is held for the store once more, which is what the store asked for. The topic
header is not signed either, so a ``shop/redact`` is taken only when its body is shaped as
Shopify's (``shop_id`` and ``shop_domain``, nothing about a person): any other captured
delivery resent under that topic and a fresh id would otherwise purge the whole store. The
same holds for the person topics: a ``customers/redact`` naming someone is taken only with
``orders_to_redact`` and nothing of a data request, a ``customers/data_request`` only with
``data_request`` or ``orders_requested``. A captured data request resent as a redact once
its key expired (``webhook_ids_days``) would otherwise erase the person in every system.

Since API 2025-01 a change of e-mail marketing consent comes on its own topic,
``customers_email_marketing_consent/update`` ``{customer_id, email_address,
email_marketing_consent}``, no longer in ``customers/update``: it is a change of that
customer, to be synced like the others.

The mandatory compliance topics carry the subject: ``customers/redact`` and
``customers/data_request`` ``{shop_id, shop_domain, customer{id, email, phone}, ...}``, and
``shop/redact`` ``{shop_id, shop_domain}`` 48 hours after the app is uninstalled.

Shopify sends a delivery that failed (no 2xx: the connector down, its store refusing a
write with 503) again, "a total of 8 times over 4 hours", with the original payload, and
points to ``X-Shopify-Triggered-At`` as the moment it was triggered (Shopify's changelog,
"Updates to webhook retry mechanism", 2024-09-10). Shopify's 30 days for a compliance
request count from then, so the request's event carries it (``sent_at``; the intake takes
it within bounds, as the header is not signed).

Customer ids in webhook bodies are numeric (REST style); they are turned into the GraphQL
global id (``gid://shopify/Customer/<n>``) that pulls record, so the identity map matches.
The sandbox signs with :func:`webhook_signature` too, so both sides share one definition.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

from connector.adapter import WebhookEvent, WebhookRequest, body_key, delivery_json

__all__ = [
    "COMPLIANCE_TOPICS",
    "CUSTOMER_GID",
    "customer_gid",
    "parse_delivery",
    "replay_key",
    "triggered_at",
    "verify_delivery",
    "webhook_signature",
]

log = logging.getLogger(__name__)

#: Days Shopify gives an app to carry out a customers/redact or customers/data_request.
COMPLIANCE_DAYS: Final = 30

CUSTOMER_GID: Final = "gid://shopify/Customer/"
HMAC_HEADER: Final = "x-shopify-hmac-sha256"
TOPIC_HEADER: Final = "x-shopify-topic"
DOMAIN_HEADER: Final = "x-shopify-shop-domain"

WEBHOOK_ID_HEADER: Final = "x-shopify-webhook-id"
TRIGGERED_AT_HEADER: Final = "x-shopify-triggered-at"

COMPLIANCE_TOPICS: Final = frozenset({"customers/redact", "customers/data_request", "shop/redact"})

_KINDS: Final[Mapping[str, Literal["changed", "deleted", "erase", "access", "purge_all"]]] = {
    "customers/redact": "erase",
    "customers/data_request": "access",
    "shop/redact": "purge_all",
    "customers/create": "changed",
    "customers/update": "changed",
    "customers/delete": "deleted",
    "customers_email_marketing_consent/update": "changed",
}

#: The topic whose body names the customer by ``customer_id`` and ``email_address``.
CONSENT_TOPIC: Final = "customers_email_marketing_consent/update"

#: What a genuine shop/redact body holds: the store, and nothing about anyone.
_SHOP_REDACT_KEYS: Final = frozenset({"shop_id", "shop_domain"})

#: Keys of a body about a person or their orders (the other compliance topics', the
#: customer topics'), which no shop/redact holds.
_PERSONAL_KEYS: Final = frozenset(
    {"id", "admin_graphql_api_id", "email", "email_address", "phone", "data_request"}
)

#: What only a customers/data_request body holds: the request and the orders it asks for.
_DATA_REQUEST_KEYS: Final = frozenset({"data_request", "orders_requested"})

#: What only a customers/redact body holds: the orders to redact (a list, empty or not).
_REDACT_KEY: Final = "orders_to_redact"

#: What every compliance body about a person holds, whichever topic it is.
_PERSON_REQUEST_KEYS: Final = frozenset({"shop_id", "shop_domain", "customer"})


def webhook_signature(body: bytes, secret: str) -> str:
    """``base64(HMAC-SHA256(body, secret))``, as Shopify computes it."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_delivery(request: WebhookRequest, secret: str) -> bool:
    """Check ``X-Shopify-Hmac-Sha256`` over the raw body, in constant time."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    signature = headers.get(HMAC_HEADER)
    if not signature or not secret:
        return False
    expected = webhook_signature(request.body, secret)
    return hmac.compare_digest(signature.strip().encode(), expected.encode())


#: Topics whose body is the same bytes on every genuine delivery (see the module).
_REPEATING_BODIES: Final = frozenset({"shop/redact"})


def replay_key(request: WebhookRequest, topic: str) -> str:
    """The body's hash; for a topic whose body repeats, the delivery's
    ``X-Shopify-Webhook-Id`` (a retry repeats it) where it has one."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    webhook_id = headers.get(WEBHOOK_ID_HEADER, "").strip()
    repeats = topic in _REPEATING_BODIES
    if repeats and webhook_id and len(webhook_id) <= 100 and webhook_id.isprintable():
        return f"webhook-id:{webhook_id}"
    return body_key(request.body)


def customer_gid(value: Any) -> str | None:
    """The GraphQL id of a customer from a webhook's numeric id (or an id already global)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return f"{CUSTOMER_GID}{value}"
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and int(text) > 0:
            return f"{CUSTOMER_GID}{int(text)}"
        if text.startswith(CUSTOMER_GID) and text[len(CUSTOMER_GID) :].isdecimal():
            return text
    return None


def triggered_at(headers: Mapping[str, str]) -> float | None:
    """When Shopify first sent the delivery (``X-Shopify-Triggered-At``, which it repeats
    when it sends one again), in epoch seconds; ``None`` when the header is missing or not
    an ISO 8601 moment with its offset (a time without one could be any zone's)."""
    text = headers.get(TRIGGERED_AT_HEADER, "").strip()
    if not text or len(text) > 64:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.timestamp()


def _text(value: Any) -> str | None:
    """A non-empty string field, trimmed (the e-mail, or the phone beside it)."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_delivery(request: WebhookRequest, shop_domain: str | None = None) -> list[WebhookEvent]:
    """Decode a verified delivery into one event (see the adapter's ``parse_webhook``).

    A compliance request always yields its event, even when its body cannot be read: the
    daemon then records it as unmatched instead of the request vanishing without a trace.
    One whose body names someone but is shaped as another topic's is ignored (see the
    module): the topic header is not signed.

    ``shop_domain`` is the store this system is (``<shop>.myshopify.com``), when known: a
    delivery about another store is ignored. One app's client secret signs the deliveries
    of every store it is installed on, to one URL, so another store's ``shop/redact`` (a
    second store of the organisation, a development store) verified as well and made the
    connector forget everything it held for this one.
    """
    headers = {name.lower(): value for name, value in request.headers.items()}
    topic = headers.get(TOPIC_HEADER, "").strip().lower()
    delivery_id = replay_key(request, topic)
    kind = _KINDS.get(topic)
    if kind is None:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    payload = delivery_json(request.body)
    payload = payload if isinstance(payload, dict) else {}
    if shop_domain is not None:
        # The compliance bodies name their store (signed); other topics only in the header.
        named = payload.get("shop_domain") if kind in ("erase", "access", "purge_all") else None
        store = named if isinstance(named, str) else headers.get(DOMAIN_HEADER, "")
        if store.strip().lower() != shop_domain:
            # Said, as a store's name (no person's): one that is this store under another
            # spelling would otherwise lose its erasures without a trace.
            log.warning(
                "Shopify delivery about another store ignored",
                extra={"topic": topic, "shop_domain": store[:100], "expected": shop_domain},
            )
            return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    if kind == "purge_all":
        if not _shaped_as_shop_redact(payload):
            # Keyed on its unsigned id, another topic's signed body resent under this topic
            # would forget the whole store: only Shopify's own shape is taken. Said by topic
            # and key names only (the body may be a customer's).
            log.warning(
                "Shopify shop/redact with a body that is not one ignored",
                extra={"topic": topic, "keys": sorted(str(k)[:40] for k in payload)[:20]},
            )
            return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
        return [WebhookEvent(kind=kind, delivery_id=delivery_id)]
    if kind in ("erase", "access"):
        customer = payload.get("customer")
        customer = customer if isinstance(customer, dict) else {}
        event = WebhookEvent(
            kind=kind,
            delivery_id=delivery_id,
            external_id=customer_gid(customer.get("id")),
            email=_text(customer.get("email")),
            phone=_text(customer.get("phone")),
            # Shopify: "complete the action within 30 days" (erasure-semantics
            # reference), a day or so shorter than a calendar month.
            due_within_days=COMPLIANCE_DAYS,
            # Counted from the first try of a delivery Shopify sends again (see the module).
            sent_at=triggered_at(headers),
        )
        names_someone = event.external_id or event.email or event.phone
        if names_someone and not _shaped_as_person_request(kind, payload):
            # The topic is not signed: a captured customers/data_request resent as
            # customers/redact would erase the person everywhere, for good. Only a body
            # shaped as its own topic's is taken; one naming nobody still leaves its trace
            # (unmatched). Said by topic and key names only (the body is a customer's).
            log.warning(
                "Shopify %s with a body that is not one ignored",
                topic,
                extra={"topic": topic, "keys": sorted(str(k)[:40] for k in payload)[:20]},
            )
            return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
        return [event]
    if topic == CONSENT_TOPIC:
        external_id = customer_gid(payload.get("customer_id"))
        email = _text(payload.get("email_address"))
    else:
        # customers/create|update|delete carry the customer itself, REST shaped.
        external_id = customer_gid(payload.get("admin_graphql_api_id")) or customer_gid(
            payload.get("id")
        )
        email = _text(payload.get("email"))
    if external_id is None:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    return [WebhookEvent(kind=kind, delivery_id=delivery_id, external_id=external_id, email=email)]


def _shaped_as_person_request(kind: str, payload: Mapping[str, Any]) -> bool:
    """Whether a body naming a customer is its topic's, so neither compliance topic's body
    passes for the other's (nor an order's, which names a customer too): a customers/redact
    holds nothing of a data request, a customers/data_request no ``orders_to_redact``, and
    each holds its own topic's key. A body of the keys both share and nothing else is taken
    for either: Shopify's examples always carry their own key, but a genuine erasure sent
    without its (empty) order list must not be ignored, and such a body is no other topic's."""
    keys = set(map(str, payload))
    own, others = (
        ({_REDACT_KEY}, _DATA_REQUEST_KEYS)
        if kind == "erase"
        else (_DATA_REQUEST_KEYS, {_REDACT_KEY})
    )
    if keys & others:
        return False
    return bool(keys & own) or keys <= _PERSON_REQUEST_KEYS


def _shaped_as_shop_redact(payload: Mapping[str, Any]) -> bool:
    """Whether a body is Shopify's shop/redact: its store's id and domain, and nothing about
    a person or their orders, so no other topic's body can pass for one. A key Shopify may
    add that names neither does not make a genuine one ignored."""
    if not set(payload) >= _SHOP_REDACT_KEYS or not isinstance(payload["shop_domain"], str):
        return False
    return not any(
        key in _PERSONAL_KEYS or key.startswith(("customer", "order")) for key in map(str, payload)
    )
