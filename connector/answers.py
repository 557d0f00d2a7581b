"""Reading a vendor's answer: how long it says to wait, its JSON body, its error category.

:class:`connector.http.SystemClient` reads a 5xx's ``Retry-After`` and an error's category
with these; adapters read their vendors' bodies and per-record error codes with them too. Of
an error body only vocabulary is kept (a machine code, a declared title, a standard reason
phrase): vendors echo what was sent in their messages, a person's data among it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from connector import jsonutil
from connector.errors import RetryableError

__all__ = ["answer_object", "is_machine_code", "json_object", "retry_after"]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header, else ``None``.

    Either form RFC 9110 allows: delay-seconds, or an HTTP-date (a host's WAF, WordPress's
    maintenance mode). A date is read against the answer's own ``Date``, both from the
    server's clock, so a skew between its clock and ours does not count; without one, against
    ours. A date already past is a wait of 0.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return _seconds_until(value, response.headers.get("date"))
    return seconds if 0 <= seconds < float("inf") else None


def _seconds_until(value: str, date: str | None) -> float | None:
    """Seconds from the answer's ``Date`` (else now) until the HTTP-date ``value``."""
    until = _http_date(value)
    if until is None:
        return None
    sent = _http_date(date) if date is not None else None
    return max(0.0, (until - (sent or datetime.now(UTC))).total_seconds())


def _http_date(value: str) -> datetime | None:
    """An HTTP-date (RFC 9110 5.6.7, its obsolete forms too) as an aware time, or ``None``."""
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP-dates are GMT; one written with "-0000" is parsed as naive.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A response body as a JSON object; ``{}`` when it is empty, not JSON, or not an object.

    Adapters read vendors' answers with this: a vendor that answers 204, an HTML error page or
    a bare list must not turn into an exception where a missing key would do.
    """
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = jsonutil.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def answer_object(
    response: httpx.Response,
    *,
    system: str,
    method: str,
    path: str,
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """The answer's JSON object, for a read whose "nothing there" is trusted.

    An erasure's verification certifies a subject absent from what a lookup finds, so a
    lookup must not read "nobody" into an answer it could not read: one that is not JSON (a
    maintenance page), not an object, or lacks a key in ``required`` that the vendor always
    sends, is a :class:`RetryableError` naming ``path``. :func:`json_object` stays for
    answers whose absence of a key is harmless.
    """
    body: Any = None
    if response.status_code != 204 and response.content:
        try:
            body = jsonutil.loads(response.content)
        except ValueError:
            body = None
    if isinstance(body, dict) and all(key in body for key in required):
        return body
    raise RetryableError(system, method, path, response.status_code, "unreadable answer")


#: Where vendors put their error category, in the order they are tried: HubSpot ``category``
#: (and ``errorType`` on a 429), WooCommerce ``code``, Mailchimp ``title``, Pipedrive ``error``.
_CATEGORY_KEYS = ("category", "code", "errorType", "title", "error")

#: A machine code: upper or lower snake case with at least one underscore
#: (``VALIDATION_ERROR``, ``woocommerce_rest_invalid_id``). Letters and underscores only: no
#: space (a sentence), no digit (a phone number, postcode or house number), no ``@`` or ``.``
#: (an address, a domain). A lone word could be a name (``JANSEN`` too), so it needs the
#: underscore; a vendor's one-word codes (HubSpot's ``CONFLICT``) are declared with its titles.
_MACHINE_CODE = re.compile(r"[A-Z]+(?:_[A-Z]+)+|[a-z]+(?:_[a-z]+)+")

#: Longest code or title kept; longer is text, whatever it looks like.
_MAX_CATEGORY_CHARS = 64

#: The standard reason phrases (``Not Found``, ``Too Many Requests``): vendors answer with the
#: phrase as their error title, and a phrase says nothing about a person.
_REASON_PHRASES = frozenset(status.phrase.casefold() for status in HTTPStatus)


def _error_category(response: httpx.Response, titles: frozenset[str] = _REASON_PHRASES) -> str:
    """A vendor's machine-readable error *category*, never its free-text message.

    Vendors' messages often echo what was sent (an e-mail, a name), and so do their other
    fields when they hold a sentence (``Person Jan Jansen is not valid``). Only a machine code
    (:data:`_MACHINE_CODE`) or one of the known ``titles`` (casefolded) is kept; anything else
    gives ``""``, and the error then says the HTTP status only.
    """
    try:
        body = jsonutil.loads(response.content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in _CATEGORY_KEYS:
        value = body.get(key)
        if isinstance(value, str) and _is_category(value, titles):
            return value
    return ""


def _is_category(value: str, titles: frozenset[str]) -> bool:
    """Whether ``value`` is a machine code or a known title: vocabulary, not someone's data."""
    return is_machine_code(value) or (
        0 < len(value) <= _MAX_CATEGORY_CHARS and value.casefold() in titles
    )


def is_machine_code(value: str) -> bool:
    """Whether ``value`` looks like a vendor's error code (see :data:`_MACHINE_CODE`).

    For adapters that read per-record error codes out of a vendor's answer themselves.
    """
    return 0 < len(value) <= _MAX_CATEGORY_CHARS and _MACHINE_CODE.fullmatch(value) is not None
