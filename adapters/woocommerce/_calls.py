"""How the WooCommerce adapter calls a shop and reads its answers, for each of its parts.

:class:`ShopCalls` is the base the adapter's parts (:mod:`adapters.woocommerce._lookup`,
:mod:`adapters.woocommerce._erasure`) and :class:`~adapters.woocommerce.adapter.WooCommerceAdapter`
build on: the client, settings and limits they use, one call with a 401 said plainly, and a
wc/v3 answer read as JSON, a collection or every page of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from adapters.woocommerce.settings import PAGE_SIZE, WooCommerceSettings
from connector import jsonutil
from connector.adapter import Limits
from connector.errors import FatalRemoteError, RetryableError
from connector.http import SystemClient

__all__ = ["API", "ShopCalls"]

API = "/wp-json/wc/v3"

#: What WooCommerce answers an anonymous caller (401 ``woocommerce_rest_cannot_view``,
#: ``..._cannot_edit`` and the like); a known key with a wrong secret is
#: ``..._authentication_error``.
ANONYMOUS_CODES = "woocommerce_rest_cannot_"
#: Why a shop takes calls that carry the key and secret as anonymous. WooCommerce answers a
#: consumer key it does not know exactly as it answers a call with none
#: (``perform_basic_authentication`` returns without an error [src]), so both are named.
NO_KEY_SEEN = (
    "the shop took the calls as anonymous, though every call carries the consumer key and "
    "secret: either it does not know the key (revoked, mistyped, or another shop's: "
    "WooCommerce answers an unknown key as it answers none), or it never saw it: a server "
    "or proxy in front of WordPress drops the Authorization header (Apache running PHP as "
    "CGI/FastCGI does unless told to pass it: CGIPassAuth On), or does not tell WordPress "
    "the call came over https (WooCommerce reads the key only then)"
)


class ShopCalls:
    """What every part of the adapter calls the shop with (set by the adapter's ``__init__``)."""

    client: SystemClient
    settings: WooCommerceSettings
    limits: Limits

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One call through the client, a 401 that takes the caller for anonymous said as
        such, with both of its causes: an unknown key, or a key the shop never saw (a key
        that is right is not replaced for nothing, nor a revoked one looked for in Apache).

        Raises:
            FatalRemoteError: as the client does; for a shop that took the caller for
                anonymous, saying why it may have.
        """
        try:
            return await self.client.request(method, path, **options)
        except FatalRemoteError as exc:
            if exc.status != 401 or not exc.detail.startswith(ANONYMOUS_CODES):
                raise
            detail = f"{exc.detail}: {NO_KEY_SEEN}"
            raise FatalRemoteError(exc.system, exc.method, path, 401, detail) from exc

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        """The answer's JSON. A body that is not JSON (WordPress in maintenance mode answers
        an HTML page, a plugin's PHP notice can come before the JSON) is a retryable error."""
        try:
            return jsonutil.loads(response.content)
        except ValueError:
            raise RetryableError(
                self.client.system, method, path, response.status_code, "not JSON"
            ) from None

    def _list(self, response: httpx.Response, method: str, path: str) -> list[dict[str, Any]]:
        """A wc/v3 collection: its objects with a WordPress id (a positive integer).

        Anything but a list is an error, never an empty collection: an erasure must not
        conclude that nobody is held from an answer it could not read.
        """
        body = self._json(response, method, path)
        if not isinstance(body, list):
            raise FatalRemoteError(
                self.client.system, method, path, response.status_code, "not a list"
            )
        return [item for item in body if isinstance(item, dict) and _is_id(item.get("id"))]

    async def _list_all(
        self, path: str, params: Mapping[str, Any], fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every page of a wc/v3 collection (orders, reviews) under ``params``."""
        items: list[dict[str, Any]] = []
        seen: set[int] = set()
        page = 1
        while True:
            response = await self._request(
                "GET",
                path,
                params={**params, **(fields or {}), "per_page": PAGE_SIZE, "page": page},
            )
            batch = self._list(response, "GET", path)
            fresh = [o for o in batch if o["id"] not in seen]
            if batch and not fresh:
                return items  # the shop is not paging; everything has been seen
            seen.update(o["id"] for o in fresh)
            items += fresh
            total_pages = response.headers.get("x-wp-totalpages", "")
            if not batch or (
                page >= int(total_pages) if total_pages.isdecimal() else len(batch) < PAGE_SIZE
            ):
                return items
            page += 1


def _is_id(value: Any) -> bool:
    """A WordPress id: a positive integer (a bool is not one, though Python counts it so)."""
    return type(value) is int and value > 0
