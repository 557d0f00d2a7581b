"""How klantsync talks to a HubSpot portal: its settings, limits, auth and back-off readers.

Kept apart from :mod:`adapters.hubspot.adapter` so the operator-facing knobs (tier, search rate,
properties read) and HubSpot's back-off signal read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, Literal

import httpx
from pydantic import Field

from connector.adapter import ClientConfig, Limits
from connector.http import retry_after
from connector.ratelimit import RateLimit
from connector.settings import DAY, SystemSettings

__all__ = [
    "DAILY_WAIT_SECONDS",
    "DEFAULT_PROPERTIES",
    "LOCK_SECONDS",
    "MAX_BATCH",
    "MIGRATION_IN_PROGRESS",
    "TIER_BURST",
    "HubSpotSettings",
    "Tier",
    "budget_spent",
    "client_config",
    "hubspot_limits",
    "is_locked",
    "is_migrating",
    "stay_away",
    "wait_hint",
]

Tier = Literal["free", "starter", "professional", "enterprise", "api_add_on"]

#: Burst limit per rolling 10 s, per app, by account tier (HubSpot usage guidelines).
TIER_BURST: Final[Mapping[str, int]] = {
    "free": 100,
    "starter": 100,
    "professional": 190,
    "enterprise": 190,
    "api_add_on": 250,
}

#: Properties read by ``pull`` and ``find`` unless the settings name others.
DEFAULT_PROPERTIES: Final = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "address",
    "city",
    "zip",
    "country",
    "hs_object_id",
    "lastmodifieddate",
)

#: Most inputs HubSpot takes in one batch call, and most records in one list page.
MAX_BATCH: Final = 100


class HubSpotSettings(SystemSettings):
    """The ``[systems.<name>]`` table of a HubSpot portal.

    Attributes:
        tier: the account's API tier; sets the burst limit (100, 190 or 250 calls per 10 s).
            A ``rate_limit`` table overrides it.
        search_per_second: the CRM search limit (4/s per token by HubSpot's changelog).
        search_lag_seconds: how long after a change HubSpot's search may first show it; a
            pull after the first reads again what changed in that window before the last
            one began (:mod:`adapters.hubspot._changes`), so a change shown late is read.
            At most a day.
        properties: contact properties read by ``pull`` and ``find_people``: those of them
            the system's mapping reads (``HubSpotAdapter.ask_only_for_paths``).
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("token",)

    adapter: Literal["hubspot"]
    base_url: str = "https://api.hubapi.com"
    tier: Tier = "professional"
    search_per_second: int = Field(default=4, gt=0)
    # Bounded: search shows a change seconds after it. A lag of 10**9 (32 years) loaded and
    # kept the cursor decades back, so every run searched the whole portal again.
    search_lag_seconds: int = Field(default=60, ge=0, le=DAY)
    properties: list[str] = Field(default_factory=lambda: list(DEFAULT_PROPERTIES), min_length=1)


def hubspot_limits(settings: HubSpotSettings) -> Limits:
    """HubSpot's limits under ``settings``: 100 per batch and page, burst by tier, search 4/s."""
    if settings.rate_limit is not None:
        burst = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    else:
        burst = RateLimit(TIER_BURST[settings.tier], 10)
    return Limits(
        batch_size=MAX_BATCH,
        page_size=MAX_BATCH,
        rate={"default": burst, "search": RateLimit(settings.search_per_second, 1)},
        max_concurrency=settings.max_concurrency or 4,
    )


#: After a ``DAILY`` 429, the seconds no call is sent before one looks again
#: (:func:`budget_spent`). The daily quota resets at midnight in the portal's time zone,
#: which no single call can wait for; the records stay queued meanwhile.
DAILY_WAIT_SECONDS: Final = 300.0


#: HubSpot's status while the account moves between data-hosting locations ("Migration in
#: Progress"), with a ``Retry-After`` in seconds, "typically up to 24 hours" [doc: error
#: handling].
MIGRATION_IN_PROGRESS: Final = 477

#: How long HubSpot's lock lasts after a 423 Locked (a large volume of writes in a short
#: time): "Locks will last for 2 seconds", so it asks for "a delay of at least 2 seconds
#: between your API requests" [doc: error handling].
LOCK_SECONDS: Final = 2.0


def is_locked(response: httpx.Response) -> bool:
    """Whether HubSpot answered 423 Locked (see :data:`LOCK_SECONDS`).

    Retried with the client's backoff for any 423, the first retries went out after half a
    second, then a second, into the lock, and so did the other workers' calls: more error
    answers, which HubSpot wants under 5% of a day's calls. As a "slow down"
    (``rate_limited``), every call of the client waits the lock out.
    """
    return response.status_code == 423


def is_migrating(response: httpx.Response) -> bool:
    """Whether HubSpot answered 477: the account is moving between data centres.

    A "come back later" for every call, not a refusal of what was sent. Taken as a 4xx like
    any other, every record of a sync in that window was dead-lettered (a batch refused,
    then each record alone) and an erasure failed; as a "slow down" (``rate_limited``) the
    work stays queued and the client holds every call back for the ``Retry-After``
    (:func:`wait_hint`; an hour at most, then one call looks).
    """
    return response.status_code == MIGRATION_IN_PROGRESS


def stay_away(response: httpx.Response) -> bool:
    """Whether HubSpot asks for no calls for a while without a 429: its 423 or 477, told to
    the client as ``rate_limited`` so it holds every call back for :func:`wait_hint`."""
    return is_locked(response) or is_migrating(response)


def wait_hint(response: httpx.Response) -> float | None:
    """Read HubSpot's 429 and say how long to wait (``None``: use the client's backoff).

    HubSpot sends no ``Retry-After``; the body's ``policyName`` says which limit was hit:

    - ``TEN_SECONDLY_ROLLING``: wait one window (``X-HubSpot-RateLimit-Interval-Milliseconds``,
      else 10 s). The official SDKs back off 10 s x attempt; the client-side limiter already
      paces us, so one full window is enough for the rolling window to free.
    - search (message "secondly limit", or a ``SECONDLY`` policy): 1 s.
    - ``DAILY``: :data:`DAILY_WAIT_SECONDS`.

    A 477 (:func:`is_migrating`) is waited out for its ``Retry-After``, the one answer HubSpot
    documents one for, and a 423 (:func:`is_locked`) for :data:`LOCK_SECONDS`. Missing
    headers and bodies that are not JSON are tolerated.
    """
    if is_migrating(response):
        return retry_after(response)
    if is_locked(response):
        return LOCK_SECONDS
    interval = _interval_seconds(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    policy = ""
    message = ""
    if isinstance(body, dict):
        policy = str(body.get("policyName") or "").upper()
        message = str(body.get("message") or "").lower()
    if policy == "DAILY":
        return DAILY_WAIT_SECONDS
    if policy == "TEN_SECONDLY_ROLLING":
        return interval if interval is not None else 10.0
    if policy == "SECONDLY" or "secondly limit" in message:
        return 1.0
    return interval


def _interval_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("x-hubspot-ratelimit-interval-milliseconds")
    try:
        millis = float(raw) if raw is not None else None
    except ValueError:
        return None
    if millis is None or not 0 < millis <= 86_400_000:
        return None
    return millis / 1000


def budget_spent(response: httpx.Response) -> float | None:
    """:data:`DAILY_WAIT_SECONDS` when a 429 is HubSpot's ``DAILY`` policy, else ``None``.

    The daily limit comes back at midnight in the account's time zone; until then every call
    is a 429, and HubSpot wants error answers under 5% of a day's calls (its SDKs never retry
    this one). So the client sends nothing for this long, then one call looks.
    """
    if response.status_code != 429:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    policy = str(body.get("policyName") or "").upper() if isinstance(body, dict) else ""
    return DAILY_WAIT_SECONDS if policy == "DAILY" else None


def client_config(settings: HubSpotSettings) -> ClientConfig:
    """Bearer-token auth, HubSpot's 429 readers, and its 423 and 477 as a "come back later"."""
    return ClientConfig(
        headers={"Authorization": f"Bearer {settings.credential('token')}"},
        wait_hint=wait_hint,
        rate_limited=stay_away,
        budget_spent=budget_spent,
        # HubSpot's one-word error categories (the others have an underscore).
        error_titles=frozenset({"CONFLICT", "THROTTLED"}),
    )
