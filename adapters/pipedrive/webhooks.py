"""Pipedrive webhook deliveries (webhooks v2): HTTP Basic auth and the decoding of events.

Pipedrive signs nothing. A webhook may carry HTTP Basic credentials (``http_auth_user`` and
``http_auth_password``, set when the webhook is created), which Pipedrive sends in the
``Authorization`` header of every delivery. The configured webhook secret is therefore the
pair ``"user:password"``, and a delivery verifies when its header carries exactly that pair
(config load refuses any other secret: see ``PipedriveWebhookSettings``).
There is no timestamp to check, so replays are caught by the daemon on the delivery id.

A v2 delivery is ``{"meta": {...}, "data": {...}, "previous": {...}}``; ``meta`` names the
``action`` (``create``, ``change``, ``delete``), the ``entity`` (``person``, ``deal``, ...) and
the ``entity_id``. That ``meta.id`` identifies the event (and stays the same on a retried
attempt) is UNVERIFIED; without it, the body's hash stands in. v1 deliveries (``meta.object``,
where ``meta.id`` is the *object's* id and would wrongly deduplicate every later change of one
person) are ignored: create the webhook with ``version = "2.0"``.

A merge comes as two v2 deliveries: a ``delete`` of the person merged away, whose ``meta``
carries ``merged_to_id`` (a string: the id of the person the merge kept), and a ``change``
of the person kept ("The merged event action from v1 is unavailable in v2 ... you'll receive
two webhooks - one for the deleted object and another for the changed object. The deleted
object event meta block will contain a merged_to_id: string" [doc: Pipedrive's webhooks v2
migration guide]). The delete becomes a ``merged`` event naming both ids. Which of the two
comes first, and whether a plain deletion's ``meta`` leaves ``merged_to_id`` out or sends it
empty or null, are UNVERIFIED: anything but a positive id is read as a plain deletion.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, Final, Literal

from adapters.pipedrive.payloads import primary_value
from connector.adapter import WebhookEvent, WebhookRequest, body_key, delivery_json

__all__ = ["basic_authorization", "parse_delivery", "verify_delivery"]

_ACTIONS: Final[Mapping[str, Literal["changed", "deleted"]]] = {
    "create": "changed",
    "change": "changed",
    "delete": "deleted",
}


def basic_authorization(secret: str) -> str:
    """The ``Authorization`` value Pipedrive sends for a webhook whose credentials are
    ``secret`` (``"user:password"``)."""
    return "Basic " + base64.b64encode(secret.encode()).decode("ascii")


def verify_delivery(request: WebhookRequest, secret: str) -> bool:
    """Whether the delivery carries the configured Basic credentials (constant time).

    The decoded ``user:password`` is compared, not the header text, so the scheme's case and
    base64 padding quirks do not matter. A secret without ``:`` cannot be a Basic pair and
    never verifies: a misconfiguration must not open the endpoint.
    """
    if ":" not in secret:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        presented = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(presented, secret.encode())


def _delivery_id(meta: Mapping[str, Any], body: bytes) -> str:
    event_id = meta.get("id")
    if isinstance(event_id, str | int) and not isinstance(event_id, bool) and str(event_id):
        return str(event_id)
    # Without an event id, the body's hash still lets the daemon spot an exact replay.
    return body_key(body)


def _entity_id(value: Any) -> str | None:
    """Pipedrive's person id as text (v2 sends it as a string), or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdecimal() and int(value) > 0:
        return str(int(value))
    return None


def parse_delivery(request: WebhookRequest) -> list[WebhookEvent]:
    """Decode a verified delivery: person create/change -> changed, delete -> deleted, a
    delete whose ``meta`` names ``merged_to_id`` -> merged (both ids, see the module).

    Anything else (other entities, v1 payloads, bodies that are not JSON objects) is one
    ``ignored`` event, so the delivery is acknowledged and Pipedrive does not retry it.
    """
    payload = delivery_json(request.body)
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict):
        return [WebhookEvent(kind="ignored", delivery_id=_delivery_id({}, request.body))]
    # Only a v2 meta (it has "entity") carries an event id; a v1 meta.id is the object's id.
    delivery_id = _delivery_id(meta if "entity" in meta else {}, request.body)
    kind = _ACTIONS.get(str(meta.get("action") or ""))
    if meta.get("entity") != "person" or kind is None:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    external_id = _entity_id(meta.get("entity_id"))
    if kind == "deleted":
        # The deleted person's data is no longer wanted; only its id travels on.
        kept = _entity_id(meta.get("merged_to_id"))
        if kept is not None and external_id is not None and kept != external_id:
            return [
                WebhookEvent(
                    kind="merged",
                    delivery_id=delivery_id,
                    external_id=external_id,
                    merged_into=kept,
                )
            ]
        return [WebhookEvent(kind="deleted", delivery_id=delivery_id, external_id=external_id)]
    data = payload.get("data") if isinstance(payload, dict) else None
    email = primary_value(data.get("emails")) if isinstance(data, dict) else None
    if external_id is None and isinstance(data, dict):
        external_id = _entity_id(data.get("id"))
    return [
        WebhookEvent(
            kind="changed",
            delivery_id=delivery_id,
            external_id=external_id,
            email=email or None,
        )
    ]
