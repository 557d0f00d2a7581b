"""Mailchimp audience webhooks: the URL secret check and the decoding of form-encoded events.

Mailchimp signs nothing. Its documented protection is a hard-to-guess secret in the callback
URL, so the webhook is registered as ``https://<daemon>/webhooks/<system>?secret=<secret>``
and :func:`verify_delivery` compares that query parameter with the configured secret in
constant time. There is no timestamp, so no freshness window; replays are caught by the daemon
on the delivery id (a hash of the body, which holds ``fired_at``).

A delivery is a form-encoded POST: ``type=unsubscribe&fired_at=...&data[email]=...&data[id]=
<subscriber hash>&data[list_id]=...``. When the webhook is saved, Mailchimp checks the URL with
a GET that carries no event (the adapter's ``webhook_url_check``); it must be answered 200, or
the webhook is not saved, and yields no events here. So does an empty POST.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping, Sequence
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from adapters.mailchimp.payloads import subscriber_hash
from connector.adapter import WebhookEvent, WebhookRequest, body_key

__all__ = ["SECRET_PARAM", "parse_delivery", "verify_delivery"]

#: The query parameter of the callback URL that carries the shared secret.
SECRET_PARAM: Final = "secret"  # noqa: S105 (a parameter name, not a secret)

#: Audience events about one person; each asks for a targeted sync of that person.
_PERSON_EVENTS: Final = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned"})


#: Events that are the person's own choice about this newsletter, at Mailchimp.
_CONSENT_EVENTS: Final[Mapping[str, Literal["opted_out", "opted_in"]]] = {
    "unsubscribe": "opted_out",
    "subscribe": "opted_in",
}


def verify_delivery(request: WebhookRequest, secret: str) -> bool:
    """Whether the URL carries exactly one ``secret`` parameter equal to ``secret``."""
    if not secret:
        return False
    # Read as written, not form-decoded: Mailchimp calls the URL exactly as it was
    # registered, and form decoding made the "+" of a base64 secret a space, so such a
    # secret never matched. Registered percent-encoded ("%2B"), it matches decoded.
    query = urlsplit(request.url).query
    given = [
        value
        for name, _, value in (pair.partition("=") for pair in query.split("&"))
        if unquote(name) == SECRET_PARAM
    ]
    if len(given) != 1:
        return False
    expected = secret.encode("utf-8")
    as_written = hmac.compare_digest(given[0].encode("utf-8"), expected)
    decoded = hmac.compare_digest(unquote(given[0]).encode("utf-8"), expected)
    return as_written or decoded


def parse_delivery(
    request: WebhookRequest, list_ids: Sequence[str] | None = None
) -> list[WebhookEvent]:
    """Decode a verified delivery.

    ``unsubscribe`` is ``opted_out`` and ``subscribe`` ``opted_in``: the person left (or
    joined again) this newsletter at Mailchimp itself, and the connector must not subscribe
    them again because the shop still says yes (an archived member is re-added by a ``PUT``).
    It says nothing about other processing: not an erasure, nor a consent at the source.
    ``profile``, ``upemail`` (its new address) and ``cleaned`` become ``changed`` events for
    that person; ``campaign`` and anything else is ``ignored``. An empty body (Mailchimp's
    URL check) yields no events. ``fired_at`` says when the event happened
    (:attr:`WebhookEvent.occurred_at`): Mailchimp delivers a failed delivery again later,
    after newer events of the same member.
    """
    if not request.body.strip():
        return []
    delivery_id = body_key(request.body)
    try:
        form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    kind = _first(form, "type")
    if kind not in _PERSON_EVENTS:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    if list_ids is not None and _first(form, "data[list_id]") not in list_ids:
        # An audience klantsync does not write: what happens there (a subscribe on another
        # newsletter) says nothing of the audiences it does.
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    email = _first(form, "data[new_email]" if kind == "upemail" else "data[email]")
    if "@" not in email:
        return [WebhookEvent(kind="ignored", delivery_id=delivery_id)]
    # ``data[id]`` is a short web id in the examples seen, not the subscriber hash the API
    # addresses members by (unverified), so the external id is computed from the e-mail.
    consent = _CONSENT_EVENTS.get(kind)
    if kind == "unsubscribe" and _first(form, "data[action]") == "delete":
        consent = None  # the account's owner deleted the member: not the person's choice
    return [
        WebhookEvent(
            kind=consent or "changed",
            delivery_id=delivery_id,
            external_id=subscriber_hash(email),
            email=email,
            occurred_at=_fired_at(_first(form, "fired_at")),
        )
    ]


def _fired_at(text: str) -> str | None:
    """``fired_at`` (``2025-01-24 15:30:00``) in ISO 8601, read as UTC (one clock stamps every
    event of an account: what matters is their order); ``None`` where there is none or it
    reads as no time (the event is then taken in the order it came)."""
    try:
        fired = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return fired.replace(tzinfo=dt.UTC).isoformat(timespec="seconds")


def _first(form: Mapping[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0].strip() if values else ""
