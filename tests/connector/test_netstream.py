"""The connection layer under SystemClient (connector/netstream.py), over real loopback TLS.

A small asyncio TLS server plays a vendor that does what vendors do between calls: sets a
cookie, and closes a keep-alive connection while it sits idle in the pool.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from connector.devtls import DevCA
from connector.http import RetryPolicy, SystemClient
from connector.netstream import AsyncioTransport
from tests.conftest import no_sleep


class Vendor:
    """Answers each request ``{}`` with a Set-Cookie, then (if told) closes the connection."""

    def __init__(self, *, close_after_answer: bool) -> None:
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.cookie_headers: list[str] = []
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.cookie_headers += [
                    ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("cookie:")
                ]
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Set-Cookie: __cf_bm=tracker; Path=/; Secure\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
                await writer.drain()
                if self.close_after_answer:
                    # No "Connection: close": the client believes it may reuse this one.
                    writer.close()
                    await writer.wait_closed()
                    self.closed.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _serve(vendor: Vendor, tmp_path: Path) -> tuple[asyncio.Server, DevCA, str]:
    ca = DevCA(tmp_path)
    cert = ca.issue("vendor")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    server = await asyncio.start_server(vendor.handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    return server, ca, f"https://127.0.0.1:{port}"


def _client(url: str, ca: DevCA) -> SystemClient:
    return SystemClient(
        "crm", url, ca_bundle=ca.ca_path, retry=RetryPolicy(attempts=2, sleep=no_sleep)
    )


async def test_vendor_calls_go_through_the_asyncio_transport(tmp_path: Path) -> None:
    """Production clients are built on AsyncioTransport (tests that pass a transport are not)."""
    vendor = Vendor(close_after_answer=False)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        assert isinstance(client._client._transport, AsyncioTransport)
        first = await client.request("GET", "/a")
        second = await client.request("GET", "/b")
    assert first.status_code == second.status_code == 200
    assert vendor.connections == 1  # kept alive and reused


async def test_a_connection_the_vendor_closed_while_idle_is_not_reused(tmp_path: Path) -> None:
    """The pool notices the vendor hung up and opens a new connection: no failed call."""
    vendor = Vendor(close_after_answer=True)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        await client.request("GET", "/a")
        await vendor.closed.wait()
        for _ in range(50):  # let the client's loop read the close_notify and the EOF
            await asyncio.sleep(0)
        response = await client.request("GET", "/b")
        assert response.status_code == 200
        assert client.stats.transport_errors == 0 and client.stats.retries == 0
    assert vendor.connections == 2


async def test_cookies_a_vendor_sets_are_never_sent_back(tmp_path: Path) -> None:
    """Tokens authenticate; a vendor's cookies (bot detection, load balancing) are dropped."""
    vendor = Vendor(close_after_answer=False)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        await client.request("GET", "/a")
        await client.request("GET", "/b")
    assert vendor.cookie_headers == []


async def test_httpcore_locks_take_no_extra_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call gives up its turn of the loop only to wait for the vendor, not for free locks."""
    from anyio._backends._asyncio import AsyncIOBackend

    turns = {"checkpoint": 0}
    real_checkpoint = AsyncIOBackend.checkpoint.__func__  # type: ignore[attr-defined]
    real_shielded = AsyncIOBackend.cancel_shielded_checkpoint.__func__  # type: ignore[attr-defined]

    async def checkpoint(cls: type) -> None:
        turns["checkpoint"] += 1
        await real_checkpoint(cls)

    async def shielded(cls: type) -> None:
        turns["checkpoint"] += 1
        await real_shielded(cls)

    vendor = Vendor(close_after_answer=False)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        await client.request("GET", "/warm-up")  # the connection is made (TLS may yield)
        monkeypatch.setattr(AsyncIOBackend, "checkpoint", classmethod(checkpoint))
        monkeypatch.setattr(AsyncIOBackend, "cancel_shielded_checkpoint", classmethod(shielded))
        for n in range(5):
            await client.request("GET", f"/{n}")
    assert turns["checkpoint"] == 0
