"""HubSpot's webhooks: a delivery's v3 signature checked, and its ``contact.*`` events read.

The signing itself (what is signed, the URI forms) is in :mod:`adapters.hubspot.signature`,
which the sandbox signs with too; here is what the adapter makes of a delivery.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final, Literal

from adapters.hubspot.signature import (
    MAX_SKEW_MS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_v3,
    uri_forms,
)
from connector.adapter import WebhookEvent, WebhookRequest, delivery_json


class ContactWebhooks:
    """The adapter's ``verify_webhook`` and ``parse_webhook``."""

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check the v3 signature (constant time) and that the timestamp is within 5 minutes.

        The signature may cover the URI decoded as HubSpot documents or as received (see
        :mod:`adapters.hubspot.signature`); either verifies.
        """
        headers = {name.lower(): value for name, value in request.headers.items()}
        signature = headers.get(SIGNATURE_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        # Milliseconds since 1970 take 13 digits; past 4300 int() raises, which answered a
        # delivery nobody signed with a 500 and an error in the log.
        if not signature or not timestamp or not timestamp.isdecimal() or len(timestamp) > 20:
            return False
        skew = now * 1000 - int(timestamp)
        if skew > MAX_SKEW_MS or skew < -MAX_SKEW_MS:
            return False
        method = request.method.upper()
        matches = [
            hmac.compare_digest(
                sign_v3(secret, method, uri, request.body, timestamp).encode(), signature.encode()
            )
            for uri in uri_forms(request.url)  # every form compared: no timing tells which
        ]
        return any(matches)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Decode a delivery (a JSON array of events) into contact events; others are dropped."""
        payload = delivery_json(request.body)
        if isinstance(payload, dict):
            payload = [payload]
        if not isinstance(payload, list):
            return []
        events: list[WebhookEvent] = []
        for item in payload:
            if not isinstance(item, dict):
                continue
            kind = _EVENT_KINDS.get(str(item.get("subscriptionType") or ""))
            if kind is None or item.get("eventId") is None:
                continue
            object_id = item.get("objectId")
            events.append(
                WebhookEvent(
                    kind=kind,
                    delivery_id=_replay_key(item),
                    external_id=str(object_id) if object_id is not None else None,
                )
            )
        return events


#: What tells one event from another: HubSpot says ``eventId`` "is not guaranteed to be
#: unique", and a retry of an event carries the same values in all of these (only its
#: ``attemptNumber`` grows). ``propertyValue`` is left out: it may be an e-mail address.
_EVENT_IDENTITY: Final = (
    "eventId",
    "subscriptionId",
    "portalId",
    "subscriptionType",
    "objectId",
    "occurredAt",
    "propertyName",
)


def _replay_key(item: Mapping[str, Any]) -> str:
    """The key a retry of this event shares and no other event has (``eventId`` first).

    With ``eventId`` alone, a different event that happens to carry the same one (another
    contact's privacy deletion) was dropped as a replay after HubSpot had its 200.
    """
    identity = ":".join(
        "" if item.get(name) is None else str(item[name]) for name in _EVENT_IDENTITY
    )
    # Kept in the store for webhook_ids_days, beyond an erasure: hashed, so the erased
    # contact's id (and that they asked to be deleted) is not kept readable with it.
    return "event:" + hashlib.sha256(identity.encode()).hexdigest()


_EVENT_KINDS: Final[Mapping[str, Literal["changed", "deleted", "erase"]]] = {
    "contact.privacyDeletion": "erase",
    "contact.creation": "changed",
    "contact.propertyChange": "changed",
    "contact.deletion": "deleted",
}
