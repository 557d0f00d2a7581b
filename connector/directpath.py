"""The short way from a vendor client to its transport, for a call httpx's client would
do nothing more with (see :class:`_DirectPath`).

The request goes to the same transport :class:`connector.http.SystemClient` built, so the TLS
policy, the pool and the timeouts are those of every other call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx


class _DirectPath:
    """One call straight to the transport, for what httpx's client would do nothing more with.

    ``AsyncClient.request`` merges the base URL, headers, cookies and parameters through
    several layers of URL parsing and copying, then runs the auth and redirect machinery:
    most of the client's own CPU on a small call (Mailchimp's one member per call, at the
    vendor's 10 connections, waits for that CPU on a busy event loop). A vendor client here
    has a fixed base URL, basic or header auth, no cookies and no redirects, so the request
    is built from the client's current headers and auth and handed to the same transport
    (same pool, TLS policy, timeouts and exception types). Anything else (a proxy for the
    base URL, another auth scheme, an absolute or query-carrying path) goes the general way.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        transport: httpx.AsyncBaseTransport,
        extensions: Mapping[str, Any],
    ) -> None:
        self.client = client
        self.transport = transport
        self.base = str(client.base_url).rstrip("/")
        self.parsed = _parsed_url(client.base_url)
        self.extensions = {**extensions, "timeout": client.timeout.as_dict()}

    @classmethod
    def for_client(
        cls,
        client: httpx.AsyncClient,
        transport: httpx.AsyncBaseTransport,
        extensions: Mapping[str, Any],
    ) -> _DirectPath | None:
        base = client.base_url
        if base.query or base.fragment or base.userinfo:
            return None
        # An environment proxy (HTTPS_PROXY) mounts its own transport for the base URL.
        if client._transport_for_url(base) is not transport:
            return None
        return cls(client, transport, extensions)

    def takes(self, path: str) -> bool:
        """Whether ``path`` is a plain path under the base URL, with auth this path sends."""
        auth = self.client.auth
        return (
            (auth is None or isinstance(auth, httpx.BasicAuth))
            and path.startswith("/")
            and "?" not in path
            and "#" not in path
        )

    async def send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        query = str(httpx.QueryParams(params)) if params else None
        url = _url_under(self.parsed, path, query) if self.parsed is not None else None
        if url is None:
            url = httpx.URL(self.base + path + (f"?{query}" if query else ""))
        request_headers = self.client.headers.copy()
        auth = self.client.auth
        if isinstance(auth, httpx.BasicAuth):
            request_headers["Authorization"] = auth._auth_header
        if headers:
            request_headers.update(headers)
        request = httpx.Request(
            method, url, headers=request_headers, content=content, extensions=self.extensions
        )
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


#: A path httpx would leave as it is: its parse (a fifth of a small call's client CPU, most of
#: it checking the host again) is then skipped. Anything else is parsed as always.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._~:@!$'()*+,;=-]*")


def _parsed_url(url: httpx.URL) -> Any:
    """``url``'s parsed form if a URL can be made from it without parsing, else ``None``.

    This reaches into httpx (``URL._uri_reference``, a named tuple): checked once against
    httpx's own parse, so another httpx version just takes the general route.
    """
    parsed = getattr(url, "_uri_reference", None)
    if parsed is None or not hasattr(parsed, "_replace"):
        return None
    try:
        probe = _url_under(parsed, "/a/b:c@d", "e=f")
    except (AttributeError, TypeError, ValueError):
        return None
    expected = httpx.URL(str(url).rstrip("/") + "/a/b:c@d?e=f")
    if probe is None or probe != expected or probe.raw_path != expected.raw_path:
        return None
    return parsed


def _url_under(parsed: Any, path: str, query: str | None) -> httpx.URL | None:
    """The base URL with ``path`` appended and ``query``, or ``None`` if it must be parsed."""
    if not _PLAIN_PATH.fullmatch(path):
        return None
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = parsed._replace(
        path=parsed.path.rstrip("/") + path, query=query, fragment=None
    )
    return url
