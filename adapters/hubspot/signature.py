"""HubSpot webhook request signatures (v3), shared by the adapter and its sandbox.

HubSpot signs each delivery with ``X-HubSpot-Signature-v3``: the base64 HMAC-SHA256, keyed with
the app's client secret, of ``method + uri + body + timestamp``, where ``uri`` is the full URL
(scheme included) and ``timestamp`` the ``X-HubSpot-Request-Timestamp`` header in epoch
milliseconds. This follows the official Python SDK (``hubspot/utils/signature.py``), which
signs the URL exactly as received; HubSpot's docs mention URL-decoding some characters first,
but the list is unverified, so nothing is decoded here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["MAX_SKEW_MS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign_v3"]

SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"

#: How old (or how far ahead) a delivery's timestamp may be: the SDK's 300 s window.
MAX_SKEW_MS = 300_000


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int | str) -> str:
    """The v3 signature HubSpot would send for this delivery.

    Args:
        secret: the app's client secret.
        method: HTTP method, upper case (HubSpot sends ``POST``).
        uri: the full URL the delivery was sent to, ``https://`` included.
        body: the raw request body, exactly as received.
        timestamp_ms: the ``X-HubSpot-Request-Timestamp`` value (epoch milliseconds).

    Returns:
        The base64 text of the HMAC-SHA256 digest.
    """
    # Bytes are concatenated rather than decoded so a body that is not valid UTF-8 cannot
    # raise here; for UTF-8 bodies this equals the SDK's string concatenation.
    message = f"{method}{uri}".encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
