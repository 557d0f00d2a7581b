"""How klantsync talks to a Pipedrive company: its settings, limits, auth and back-off readers.

Kept apart from :mod:`adapters.pipedrive.adapter` so the operator-facing knobs (plan, base URL)
and Pipedrive's back-off signals read in one place.

Pipedrive's limits (docs page "Rate limiting"; see ``reference/vendor-apis.md`` section E'):

- a burst limit per API token on a rolling 2 s window, by plan: Lite 20, Growth 40,
  Premium 100, Ultimate 120 (OAuth apps get four times as much; klantsync uses a token);
- search endpoints: 10 requests per 2 s on every plan;
- a daily token budget per company, reset at midnight in the *server's* time zone; once spent,
  every call answers 429 until the reset;
- headers ``x-ratelimit-limit``, ``x-ratelimit-remaining``, ``x-ratelimit-reset`` (the
  burst window) and (API tokens only) ``x-daily-requests-left``, which the docs define as the
  requests "you can still make to POST/PUT endpoints during the ongoing day (calculated in
  UTC)": the older daily write allowance, not the token budget. No header is documented for
  the token budget; its 429 is told from a burst 429 by the burst window having room
  (``x-ratelimit-remaining`` above 0), which a refusal of the window itself never has;
- clients that keep sending after 429s get a **403 Cloudflare HTML page**.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr, field_validator

from connector.adapter import ClientConfig, Limits
from connector.http import retry_after
from connector.ratelimit import RateLimit
from connector.secrets import DeferredSecret
from connector.settings import SystemSettings, WebhookSettings

__all__ = [
    "API_V2_ROOT",
    "BATCH_SIZE",
    "BLOCKED_WAIT_SECONDS",
    "DAILY_WAIT_SECONDS",
    "PAGE_SIZE",
    "PIPEDRIVE_HOST",
    "PLAN_BURST",
    "SEARCH_LIMIT",
    "WINDOW_SECONDS",
    "PipedriveSettings",
    "PipedriveWebhookSettings",
    "Plan",
    "client_config",
    "daily_spent",
    "is_cloudflare_block",
    "pipedrive_limits",
    "wait_hint",
]

Plan = Literal["lite", "growth", "premium", "ultimate"]

#: Pipedrive's own domain: its API host and each company's address are under it.
PIPEDRIVE_HOST: Final = "pipedrive.com"
#: The path of the API v2 root on those hosts.
API_V2_ROOT: Final = "/api/v2"

#: Length of Pipedrive's rolling burst window, in seconds.
WINDOW_SECONDS: Final = 2.0

#: Burst limit per rolling 2 s window for an API token, by plan.
PLAN_BURST: Final[Mapping[str, int]] = {"lite": 20, "growth": 40, "premium": 100, "ultimate": 120}

#: The search endpoints' own limit: 10 calls per 2 s on every plan.
SEARCH_LIMIT: Final = RateLimit(10, WINDOW_SECONDS)

#: Most records one list page may hold (``limit`` above 500 is refused).
PAGE_SIZE: Final = 500

#: Records per ``upsert`` call. API v2 has no batch write for persons, so the adapter fans a
#: batch out into one call per record (with bounded concurrency); a small batch keeps each
#: engine batch (and its acknowledgement transaction) short.
BATCH_SIZE: Final = 10

#: After a 429 that says a *daily* allowance is spent (:func:`daily_spent`), the seconds no
#: call is sent before one looks again (:func:`budget_spent`). The budget resets at midnight
#: server time, which no single call can wait for; the records stay queued.
DAILY_WAIT_SECONDS: Final = 300.0

#: After Cloudflare's 403 block page, the seconds no call is sent before one looks again
#: (:func:`budget_spent`). The block is what Pipedrive puts in front of a client that kept
#: calling through its 429s: every further call feeds it, so none goes out for a while; the
#: records stay queued.
BLOCKED_WAIT_SECONDS: Final = 300.0


class PipedriveWebhookSettings(WebhookSettings):
    """``[systems.<name>.webhooks]`` of a Pipedrive company.

    Pipedrive signs nothing: a delivery carries the webhook's HTTP auth user and password as
    Basic credentials (see :mod:`adapters.pipedrive.webhooks`), so the secret is the pair
    ``"user:password"``. Any other secret could never verify: every delivery would be
    answered 401 until Pipedrive turned the webhook off, with nothing to tell the operator.
    So it is refused here, once resolved from its reference (and never echoed), and so is
    a ``previous_secret`` that is no such pair.
    """

    @field_validator("secret", "previous_secret")
    @classmethod
    def _basic_pair(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or isinstance(secret, DeferredSecret):
            # Not resolved: the config was loaded for a command that calls no system. Those
            # that serve webhooks resolve it at load, and it is checked then.
            return secret
        user, colon, password = secret.get_secret_value().partition(":")
        if not (user and colon and password):
            raise ValueError(
                'must be "user:password": the HTTP auth user and password the Pipedrive '
                "webhook was created with, which Pipedrive sends with each delivery (it "
                "signs nothing); any other secret never verifies a delivery"
            )
        return secret


class PipedriveSettings(SystemSettings):
    """The ``[systems.<name>]`` table of a Pipedrive company.

    Attributes:
        plan: the company's plan; sets the burst limit per token (20, 40, 100 or 120 calls per
            rolling 2 s). A ``rate_limit`` table overrides it.
        base_url: the API v2 root, ``https://<company>.pipedrive.com/api/v2`` or
            ``https://api.pipedrive.com/api/v2``.
        webhooks: the webhook's ``"user:password"`` (:class:`PipedriveWebhookSettings`).
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("api_token",)

    adapter: Literal["pipedrive"]
    base_url: str = "https://api.pipedrive.com/api/v2"
    plan: Plan = "growth"
    webhooks: PipedriveWebhookSettings | None = None

    @field_validator("base_url")
    @classmethod
    def _pipedrive_s_api_v2_root(cls, value: str) -> str:
        # Pipedrive's own hosts serve API v1 beside v2: at v1's root every read came back in
        # v1's shape (``email``, paged by ``start``, so a pull ended after its first page as
        # if complete), and the notes were looked for under ".../v1/v1"; at the company's
        # web address every call met the web app. Another host (the sandbox, a proxy in
        # front of Pipedrive) is the operator's to choose.
        try:
            parts = urlsplit(value)
            host = (parts.hostname or "").lower()
        except ValueError:
            return value  # the config's own URL check says what is wrong with it
        if host != PIPEDRIVE_HOST and not host.endswith(f".{PIPEDRIVE_HOST}"):
            return value
        if parts.path.rstrip("/") != API_V2_ROOT:
            raise ValueError(
                f'must be Pipedrive\'s API v2 root, "https://api.{PIPEDRIVE_HOST}{API_V2_ROOT}"'
                f' or "https://<company>.{PIPEDRIVE_HOST}{API_V2_ROOT}"'
            )
        return value


def pipedrive_limits(settings: PipedriveSettings) -> Limits:
    """Pipedrive's limits under ``settings``: burst by plan per 2 s, search 10 per 2 s."""
    if settings.rate_limit is not None:
        burst = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    else:
        burst = RateLimit(PLAN_BURST[settings.plan], WINDOW_SECONDS)
    return Limits(
        batch_size=BATCH_SIZE,
        page_size=PAGE_SIZE,
        rate={"default": burst, "search": SEARCH_LIMIT},
        max_concurrency=settings.max_concurrency or 4,
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Read Pipedrive's 429 and say how long to wait (``None``: use the client's backoff).

    - a daily allowance spent (:func:`daily_spent`): :data:`DAILY_WAIT_SECONDS` (the client
      caps it at its own maximum).
    - ``x-ratelimit-reset``: seconds until the burst window frees, as Pipedrive documents it.
    - ``Retry-After``, should a proxy in front of Pipedrive send one: in seconds or as an
      HTTP-date (:func:`connector.http.retry_after`).

    Missing or malformed headers are tolerated; the body is never read (it is not needed, and
    a Cloudflare page is HTML).
    """
    if daily_spent(response):
        return DAILY_WAIT_SECONDS
    reset = _number(response.headers.get("x-ratelimit-reset"))
    return reset if reset is not None else retry_after(response)


def daily_spent(response: httpx.Response) -> bool:
    """Whether a 429 says a daily allowance is spent, not the 2 s burst window.

    - The token budget: a 429 whose burst window still has room (``x-ratelimit-remaining``
      above 0). Pipedrive documents no header of the budget itself, only that every call
      is a 429 once it is spent; the burst headers come on every answer, and a 429 of the
      burst window says 0 left. Read as a burst 429, the spent budget was retried within
      seconds, call after call, which is what earns Cloudflare's 403 block.
    - The daily write allowance: ``x-daily-requests-left: 0`` ("requests you can still
      make to POST/PUT endpoints during the ongoing day").
    """
    if response.status_code != 429:
        return False
    writes = _number(response.headers.get("x-daily-requests-left"))
    if writes is not None and writes <= 0:
        return True
    room = _number(response.headers.get("x-ratelimit-remaining"))
    return room is not None and room > 0


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    # A reset hint beyond a day is nonsense (or an epoch timestamp, which this is not).
    return value if 0 <= value <= 86_400 else None


def is_cloudflare_block(response: httpx.Response) -> bool:
    """Whether a response is Cloudflare's 403 HTML page for a client that ignored 429s.

    Pipedrive's own 403s (missing permission) are JSON; the block page is ``text/html``. It is
    rate limiting, not a fatal error: the client is told so through
    ``ClientConfig.rate_limited``, and :func:`budget_spent` holds every call back for
    :data:`BLOCKED_WAIT_SECONDS`, since knocking again is what earned the block.
    """
    content_type = response.headers.get("content-type", "").lower()
    return response.status_code == 403 and content_type.startswith("text/html")


def budget_spent(response: httpx.Response) -> float | None:
    """How long to send nothing after ``response``, or ``None`` to retry it as usual.

    - :data:`DAILY_WAIT_SECONDS` when a 429 says a daily allowance is spent
      (:func:`daily_spent`). The budget comes back at midnight in Pipedrive's server time
      zone, which a client cannot know; until then every call is a 429, and a client that
      keeps calling through them gets Cloudflare's 403 page.
    - :data:`BLOCKED_WAIT_SECONDS` for that page itself (:func:`is_cloudflare_block`): each
      call sent into the block, and each retry of each record's calls, prolongs it.

    The client sends nothing for this long, then one call looks.
    """
    if is_cloudflare_block(response):
        return BLOCKED_WAIT_SECONDS
    return DAILY_WAIT_SECONDS if daily_spent(response) else None


def client_config(settings: PipedriveSettings) -> ClientConfig:
    """API-token auth in the ``x-api-token`` header (as the official SDK sends it)."""
    return ClientConfig(
        headers={"x-api-token": settings.credential("api_token")},
        wait_hint=wait_hint,
        rate_limited=is_cloudflare_block,
        budget_spent=budget_spent,
    )
