"""The direct call path sends exactly what httpx's own client would, and steps aside otherwise."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connector.errors import RetryableError
from connector.http import RetryPolicy, SystemClient, _DirectPath
from tests.conftest import no_sleep

BASES = [
    "https://api.example.com",
    "https://us21.api.example.com/3.0/",
    "https://h.example:8443/v2",
]

CALLS: list[tuple[str, str, dict[str, Any] | None, dict[str, str] | None]] = [
    ("GET", "/customers", {"page": 2, "per_page": 100}, None),
    ("GET", "/persons", {"cursor": "a b/c=d&e", "include_fields": ["x", "y"], "flag": True}, None),
    ("PUT", "/lists/a1b2c3/members/0123456789abcdef", None, {"X-Trace": "1"}),
    ("GET", "/contacts/jan.de+vries@example.nl", {"idProperty": "email"}, None),
    ("GET", "/zoek/één twee", None, None),
    ("DELETE", "/persons/%40odd", None, None),
    ("POST", "/crm/v3/objects/contacts/batch/upsert", None, {"Content-Type": "application/x"}),
]


def _capture(direct: bool, base: str, auth: Any, headers: dict[str, str]) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async def run() -> None:
        client = SystemClient(
            "crm", base, auth=auth, headers=headers, transport=httpx.MockTransport(handler)
        )
        assert (client._direct is not None) is True  # every case here qualifies
        if not direct:
            client._direct = None
        for method, path, params, extra in CALLS:
            await client.request(method, path, params=params, headers=extra, json={"a": 1})
            await client.request(method, path, params=params, headers=extra)
        await client.aclose()

    import asyncio

    asyncio.run(run())
    return seen


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        (("user", "sleutel"), {}),
        (None, {"Authorization": "Bearer t"}),
        (None, {"x-api-token": "t"}),
    ],
)
def test_the_direct_path_sends_what_httpx_would(
    base: str, auth: Any, headers: dict[str, str]
) -> None:
    general = _capture(False, base, auth, headers)
    direct = _capture(True, base, auth, headers)
    assert len(general) == len(direct) == 2 * len(CALLS)
    for want, got in zip(general, direct, strict=True):
        assert got.method == want.method
        assert str(got.url) == str(want.url)
        assert got.url.raw_path == want.url.raw_path
        assert sorted(got.headers.multi_items()) == sorted(want.headers.multi_items())
        assert got.content == want.content
        assert got.extensions["timeout"] == want.extensions["timeout"]
        assert got.extensions["deadline"] == want.extensions["deadline"] == 120.0


async def test_the_general_path_takes_what_the_direct_one_does_not() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200)

    class Custom(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = "Custom x"
            yield request

    transport = httpx.MockTransport(handler)
    client = SystemClient("crm", "https://api.example.com", transport=transport)
    assert client._direct is not None
    assert not client._direct.takes("/a?b=c")  # a query in the path: httpx merges it
    assert not client._direct.takes("https://other.example.com/x")
    await client.request("GET", "/a?b=c", params={"d": "e"})
    assert sent == ["https://api.example.com/a?d=e"]  # httpx's own rule: params replace it
    custom = SystemClient("crm", "https://api.example.com", auth=Custom(), transport=transport)
    assert custom._direct is not None and not custom._direct.takes("/a")


def test_a_transport_mounted_for_the_base_url_sends_every_call_the_general_way() -> None:
    ours = httpx.MockTransport(lambda _r: httpx.Response(200))
    proxy = httpx.MockTransport(lambda _r: httpx.Response(200))
    mounted = httpx.AsyncClient(
        base_url="https://api.example.com", transport=ours, mounts={"https://": proxy}
    )
    plain = httpx.AsyncClient(base_url="https://api.example.com", transport=ours)
    assert _DirectPath.for_client(mounted, ours, {}) is None
    assert _DirectPath.for_client(plain, ours, {}) is not None


async def test_credentials_changed_on_the_client_are_used_by_the_next_call() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    client = SystemClient(
        "shop", "https://shop.example.nl", auth=("ck", "cs"), transport=httpx.MockTransport(handler)
    )
    await client.request("GET", "/x")
    client._client.auth = httpx.BasicAuth("ck2", "cs2")
    await client.request("GET", "/x")
    assert seen[0] != seen[1] and seen[1] == httpx.BasicAuth("ck2", "cs2")._auth_header


class CountingPolicy(RetryPolicy):
    def __init__(self) -> None:
        super().__init__(attempts=4, sleep=no_sleep)
        self.asked: list[int] = []

    def backoff(self, attempt: int, error: BaseException | None) -> float:
        self.asked.append(attempt)
        return super().backoff(attempt, error)


async def test_retries_back_off_by_attempt_number_and_stop_at_the_limit() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503 if calls < 3 else 200)

    policy = CountingPolicy()
    client = SystemClient(
        "crm", "https://api.example.com", retry=policy, transport=httpx.MockTransport(handler)
    )
    response = await client.request("GET", "/x")
    assert response.status_code == 200 and calls == 3
    assert policy.asked == [1, 2] and client.stats.retries == 2

    always = CountingPolicy()
    failing = SystemClient(
        "crm",
        "https://api.example.com",
        retry=always,
        transport=httpx.MockTransport(lambda _r: httpx.Response(503)),
    )
    with pytest.raises(RetryableError):
        await failing.request("GET", "/x")
    # tenacity asks for the wait after the last attempt too (its stop may depend on it)
    assert always.asked == [1, 2, 3, 4] and failing.stats.requests == 4
    assert failing.stats.retries == 3
