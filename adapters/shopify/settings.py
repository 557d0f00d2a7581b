"""How klantsync talks to a Shopify store: its settings, limits, auth and throttle reader.

Shopify's GraphQL Admin API is paced by *calculated query cost*, not by request count: each
app and store pair has a leaky bucket of points that refills at a rate set by the store's plan
(Standard 100 points/s, Advanced 200, Plus 1000, Commerce Components 2000). Every response
says what the call cost and what is left in ``extensions.cost``. So the client-side
rolling-window limiter is not used (``rate={}``); a throttled call is instead retried after
exactly the time the bucket needs to refill, computed by :func:`throttle_wait`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from adapters.shopify.documents import mapping_selection
from connector.adapter import ClientConfig, Limits
from connector.http import retry_after
from connector.settings import SystemSettings

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = [
    "DEFAULT_API_VERSION",
    "MAX_PAGE_SIZE",
    "RESTORE_RATES",
    "SUPPORT_MONTHS",
    "Plan",
    "ShopifySettings",
    "client_config",
    "graphql_path",
    "is_throttled",
    "serving_version",
    "shopify_limits",
    "throttle_wait",
    "wait_hint",
]

Plan = Literal["standard", "advanced", "plus", "commerce_components"]

#: Points per second the cost bucket refills with, by plan (shopify.dev GraphQL rate limits).
RESTORE_RATES: Final[Mapping[str, float]] = {
    "standard": 100.0,
    "advanced": 200.0,
    "plus": 1000.0,
    "commerce_components": 2000.0,
}

#: Most nodes one connection page may ask for. Widely used, but UNVERIFIED in our reference.
MAX_PAGE_SIZE: Final = 250

#: A store's own name at Shopify, as its webhooks carry it.
_SHOP_HOST = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_API_VERSION = re.compile(r"\d{4}-(01|04|07|10)|unstable")

#: Shopify supports each stable Admin API version for at least 12 months from its release
#: (the first day of its quarter); a call naming a retired one is answered by the oldest
#: version still supported, a schema nobody here tested.
SUPPORT_MONTHS: Final = 12

#: The newest stable version when this release was made (2026-11), supported by Shopify
#: until October 2027; moved forward with each release of klantsync.
DEFAULT_API_VERSION: Final = "2026-10"


def _month(year: int, month: int) -> int:
    """Months since year 0: versions and dates compared as one number."""
    return year * 12 + month - 1


def _oldest_supported(at: datetime) -> str:
    """The oldest stable version Shopify still serves at ``at``: the newest release (this
    quarter's) and the ones before it that are not yet ``SUPPORT_MONTHS`` old."""
    oldest = _month(at.year, (at.month - 1) // 3 * 3 + 1) - (SUPPORT_MONTHS - 3)
    return f"{oldest // 12:04d}-{oldest % 12 + 1:02d}"


def serving_version(requested: str, at: datetime) -> str:
    """The version Shopify answers a call naming ``requested`` with, at ``at``.

    A supported stable version answers as itself, and so do ``unstable`` and a version not
    yet released (Shopify's release candidate; that later ones are served so is
    UNVERIFIED); a retired or malformed one falls forward to the oldest supported.
    """
    if requested == "unstable":
        return requested
    if _API_VERSION.fullmatch(requested):
        year, month = (int(part) for part in requested.split("-"))
        if _month(at.year, at.month) < _month(year, month) + SUPPORT_MONTHS:
            return requested
    return _oldest_supported(at)


class ShopifySettings(SystemSettings):
    """The ``[systems.<name>]`` table of a Shopify store.

    Attributes:
        api_version: the Admin API version in the path (Shopify releases quarterly and
            serves each for 12 months; see :func:`serving_version`).
        plan: the store's plan; sets the restore rate assumed when a throttled answer does
            not carry its own ``throttleStatus``.
        overlap_seconds: how far each incremental pull reaches back before the newest
            ``updatedAt`` seen, because Shopify's ``updated_at`` filter may compare dates only.
        page_size: customers asked for per page (Shopify allows at most 250); fewer where
            the mapping reads so many objects that a page would cost more than Shopify's
            single-query ceiling (see ``documents.CustomerQueries.most_per_page``).
        shop_domain: the store's ``<shop>.myshopify.com`` name, which webhooks carry; by
            default the host of ``base_url`` when it is one. Deliveries about another store
            (one app, installed on several) are ignored.
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("access_token",)

    adapter: Literal["shopify"]
    api_version: str = DEFAULT_API_VERSION
    plan: Plan = "standard"
    overlap_seconds: int = Field(default=300, ge=0, le=7 * 86_400)
    page_size: int = Field(default=100, ge=1, le=MAX_PAGE_SIZE)
    shop_domain: str | None = None

    def own_domain(self) -> str | None:
        """The store's myshopify.com name: ``shop_domain``, else ``base_url``'s host if it is
        one; ``None`` when neither says (a proxy or a sandbox host)."""
        if self.shop_domain:
            return self.shop_domain.strip().lower()
        host = (urlsplit(self.base_url).hostname or "").lower()
        return host if host.endswith(".myshopify.com") else None

    def check_mapping(self, mapping: SystemMapping) -> None:
        """Refuse a path the mapping reads that Shopify cannot be asked for, by the rule the
        adapter builds its reads with (:func:`~adapters.shopify.documents.mapping_selection`).
        """
        mapping_selection(mapping.source_paths(), mapping.path)

    @field_validator("shop_domain")
    @classmethod
    def _a_myshopify_host(cls, value: str | None) -> str | None:
        # Compared as written with what each delivery names: written as a URL (as base_url
        # is, beside it), with a slash, or as the handle alone, it matched no delivery, and
        # the store's own customers/redact were ignored without a word.
        if value is None:
            return None
        text = value.strip().lower()
        host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
        if "." not in host:
            host = f"{host}.myshopify.com"
        if not _SHOP_HOST.fullmatch(host):
            raise ValueError('must be the store\'s "<handle>.myshopify.com" name')
        return host

    @field_validator("api_version")
    @classmethod
    def _known_version_form(cls, value: str) -> str:
        # A typo here would reach Shopify as an unknown version, which it silently serves
        # with its oldest supported one: refuse it at config load instead.
        if not _API_VERSION.fullmatch(value):
            raise ValueError('must look like "2026-10" (a quarterly release) or "unstable"')
        return value


def graphql_path(settings: ShopifySettings) -> str:
    """The one endpoint every call goes to: ``/admin/api/{version}/graphql.json``."""
    return f"/admin/api/{settings.api_version}/graphql.json"


def shopify_limits(settings: ShopifySettings) -> Limits:
    """One record per write (nothing is written), the configured page, no request-count limit.

    Pacing is cost-based (see the module docstring), so ``rate`` is empty; two calls in
    flight keep one store's bucket from being drained by a single sync.
    """
    return Limits(
        batch_size=1,
        page_size=settings.page_size,
        rate={},
        max_concurrency=settings.max_concurrency or 2,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def is_throttled(body: Any) -> bool:
    """Whether a GraphQL answer carries Shopify's ``THROTTLED`` error."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return False
    return any(
        isinstance(error, dict)
        and isinstance(error.get("extensions"), dict)
        and error["extensions"].get("code") == "THROTTLED"
        for error in errors
    )


def throttle_wait(body: Any, fallback_restore_rate: float | None = None) -> float | None:
    """Seconds until the bucket holds what the throttled query asked for, or ``None``.

    ``(requestedQueryCost - currentlyAvailable) / restoreRate``, rounded up to the
    millisecond so the retry does not land a hair short of the points it needs. An answer
    without ``throttleStatus`` (or without its figures) is taken as an empty bucket
    refilling at ``fallback_restore_rate`` (the plan's). Without the requested cost, or
    without any rate, the answer is ``None`` and the client falls back to its own backoff.
    """
    if not isinstance(body, dict):
        return None
    extensions = body.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    if not isinstance(cost, dict):
        return None
    requested = _number(cost.get("requestedQueryCost"))
    status = cost.get("throttleStatus")
    status = status if isinstance(status, dict) else {}
    # Not said: taken as none left, so the retry does not come back before the points can.
    available = _number(status.get("currentlyAvailable")) or 0.0
    rate = _number(status.get("restoreRate")) or fallback_restore_rate
    if requested is None or not rate or rate <= 0:
        return None
    return math.ceil(max(0.0, requested - available) / rate * 1000) / 1000


def wait_hint(response: httpx.Response) -> float | None:
    """Read a 429 from Shopify: the cost figures of a GraphQL body, else ``Retry-After``.

    Whether Shopify answers a throttled GraphQL call with 429 or with 200 is disputed
    (UNVERIFIED); the 200 form is handled by the adapter, this reader covers the 429 form.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if is_throttled(body):
        wait = throttle_wait(body)
        if wait is not None:
            return wait
    return retry_after(response)


def client_config(settings: ShopifySettings) -> ClientConfig:
    """The access-token header and the throttle reader."""
    return ClientConfig(
        headers={"X-Shopify-Access-Token": settings.credential("access_token")},
        wait_hint=wait_hint,
    )
