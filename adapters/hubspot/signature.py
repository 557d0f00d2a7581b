"""HubSpot webhook request signatures (v3), shared by the adapter and its sandbox.

HubSpot signs each delivery with ``X-HubSpot-Signature-v3``: the base64 HMAC-SHA256, keyed with
the app's client secret, of ``method + uri + body + timestamp``, where ``uri`` is the full URL
(scheme included) and ``timestamp`` the ``X-HubSpot-Request-Timestamp`` header in epoch
milliseconds.

HubSpot's "Validating requests" has the URI decoded first for the characters in
:data:`DECODED`, and several client implementations do so; the official Python SDK
(``hubspot/utils/signature.py``) signs the URL exactly as received. The list is unverified
against HubSpot itself, so a delivery is accepted under either form (:func:`uri_forms`): a
URL whose query holds ``%40`` verifies, and nothing that verified before stops verifying.
The sandbox signs as HubSpot's documentation says (:func:`hubspot_uri`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

__all__ = [
    "DECODED",
    "MAX_SKEW_MS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "hubspot_uri",
    "sign_v3",
    "uri_forms",
]

#: The characters HubSpot decodes in the URI before signing, by their percent-encoding.
DECODED: Final = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}

_ENCODED: Final = re.compile("|".join(DECODED), re.IGNORECASE)

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


def hubspot_uri(uri: str) -> str:
    """``uri`` as HubSpot signs it: the characters in :data:`DECODED` decoded, no others."""
    return _ENCODED.sub(lambda match: DECODED[match.group(0).upper()], uri)


def uri_forms(uri: str) -> list[str]:
    """The forms of a received URI a genuine signature may cover: decoded as HubSpot
    documents, and exactly as received (as the official SDK verifies)."""
    return list(dict.fromkeys([hubspot_uri(uri), uri]))
