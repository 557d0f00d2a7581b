"""The HTTP/1.1 transport under SystemClient (connector/h1.py), over real loopback TLS.

A small asyncio TLS server plays a vendor that does what vendors do: keeps connections alive
or closes them (idle, or with ``Connection: close``), answers with a length, in chunks or
until it hangs up, sets cookies, is slow, or drops the connection halfway through an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.devtls import DevCA
from connector.errors import FatalRemoteError, KlantsyncError, RetryableError
from connector.h1 import MAX_HEAD_BYTES, H1Transport
from connector.http import RetryPolicy, SystemClient
from connector.loop import run as run_loop
from tests.conftest import CANARY_EMAIL, no_sleep

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Vendor:
    """Answers each request with ``answer(n)`` (n counts requests), then closes if told."""

    def __init__(
        self, answer: Callable[[int], bytes] = lambda _n: OK, *, close_after_answer: bool = False
    ) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if b"\r\ntransfer-encoding: chunked\r\n" in head.lower():
                    self.requests.append(head + await reader.readuntil(b"\r\n0\r\n\r\n"))
                else:
                    self.requests.append(head + await reader.readexactly(length))
                await self.release.wait()
                writer.write(self.answer(len(self.requests)))
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


def _client(url: str, ca: DevCA, **kwargs: object) -> SystemClient:
    return SystemClient(
        "crm",
        url,
        ca_bundle=ca.ca_path,
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_vendor_calls_go_through_the_h1_transport_on_one_kept_connection(
    tmp_path: Path,
) -> None:
    """Production clients are built on H1Transport; a kept-alive connection is reused."""
    vendor = Vendor()
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        assert isinstance(client._client._transport, H1Transport)
        first = await client.request("GET", "/a", params={"page": 2})
        second = await client.request("POST", "/b", content=b'{"x": 1}')
    assert first.status_code == second.status_code == 200 and first.json() == {}
    assert vendor.connections == 1  # kept alive and reused
    get, post = vendor.requests
    assert get.startswith(b"GET /a?page=2 HTTP/1.1\r\n") and b"\r\nHost: 127.0.0.1:" in get
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in get  # what the transport inflates
    assert post.startswith(b"POST /b HTTP/1.1\r\n") and post.endswith(b'\r\n\r\n{"x": 1}')
    assert b"\r\nContent-Length: 8\r\n" in post


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


async def test_connection_close_chunked_and_close_delimited_answers(tmp_path: Path) -> None:
    """Every framing a vendor may use is read whole; only a kept connection is reused."""
    answers = [
        b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\n{"a":1}',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"b\r\n4\r\n":2}\r\n0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"c":3}',
    ]
    vendor = Vendor(lambda n: answers[n - 1])
    vendor_closes_third = Vendor(lambda n: answers[2], close_after_answer=True)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        assert (await client.request("GET", "/1")).json() == {"a": 1}
        assert (await client.request("GET", "/2")).json() == {"b": 2}
    assert vendor.connections == 2  # the first said close; the chunked one was kept
    server, ca, url = await _serve(vendor_closes_third, tmp_path / "third")
    async with server, _client(url, ca) as client:
        assert (await client.request("GET", "/3")).json() == {"c": 3}


async def test_an_answer_cut_off_halfway_is_a_retryable_transport_error(tmp_path: Path) -> None:
    """The vendor hangs up mid-body: the call is retried, and then fails as retryable."""
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":'
    vendor = Vendor(lambda _n: cut, close_after_answer=True)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        with pytest.raises(RetryableError, match="RemoteProtocolError"):
            await client.request("GET", "/a")
        assert client.stats.transport_errors == 2  # two attempts, both cut off
    assert vendor.connections == 2


async def test_a_vendor_too_slow_to_answer_is_a_read_timeout(tmp_path: Path) -> None:
    """No byte within the read timeout: httpx's ReadTimeout, retried, never a hang."""
    vendor = Vendor()
    vendor.release.clear()  # the vendor never answers until the test lets go
    server, ca, url = await _serve(vendor, tmp_path)
    # Long enough for a TLS handshake on a loaded machine (the one timeout is connect's
    # too: at 0.05 s a busy CI host made it a ConnectTimeout), short enough to wait out.
    async with server, _client(url, ca, timeout=0.5) as client:
        with pytest.raises(RetryableError, match="ReadTimeout"):
            await client.request("GET", "/slow")
        vendor.release.set()
    assert len(vendor.requests) == 2


async def test_calls_beyond_max_connections_wait_for_a_free_one(tmp_path: Path) -> None:
    """Three calls at once with two connections allowed: two go, the third waits its turn."""
    vendor = Vendor()
    vendor.release.clear()
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca, max_connections=2) as client:
        calls = [asyncio.create_task(client.request("GET", f"/{n}")) for n in range(3)]
        for _ in range(200):
            await asyncio.sleep(0)
            if len(vendor.requests) >= 2:
                break
        await asyncio.sleep(0.01)  # time for a third request, were it sent
        assert len(vendor.requests) == 2 and vendor.connections == 2
        vendor.release.set()
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200, 200]
    assert vendor.connections == 2


async def test_a_cancelled_call_leaves_no_connection_behind_for_reuse(tmp_path: Path) -> None:
    """A call cancelled while it waits for the answer drops its connection."""
    vendor = Vendor()
    vendor.release.clear()
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        call = asyncio.create_task(client.request("GET", "/a"))
        while not vendor.requests:
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        vendor.release.set()
        assert (await client.request("GET", "/b")).status_code == 200
    assert vendor.connections == 2


async def test_cookies_a_vendor_sets_are_never_sent_back(tmp_path: Path) -> None:
    """Tokens authenticate; a vendor's cookies (bot detection, load balancing) are dropped."""
    cookie = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: __cf_bm=tracker; Path=/; Secure\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    vendor = Vendor(lambda _n: cookie)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        await client.request("GET", "/a")
        await client.request("POST", "/b", json={"x": 1})  # httpx's general path too
    assert all(b"\r\ncookie:" not in r.lower() for r in vendor.requests)


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # no zlib wrapping
        (b"gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
    ],
    ids=["gzip", "deflate", "raw-deflate", "gzip-twice"],
)
async def test_a_compressed_answer_is_handed_on_inflated(
    tmp_path: Path, coding: bytes, compress: Callable[[bytes], bytes]
) -> None:
    """The transport undoes Content-Encoding (within the limit) and says it has: httpx, which
    would inflate it without one, sees an answer that is not compressed."""
    body = compress(b'{"zipped":true}')
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
    vendor = Vendor(lambda _n: head % (coding, len(body)) + body)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        response = await client.request("GET", "/z")
    assert response.json() == {"zipped": True}
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize("path", ["/bomb", "/bomb?page=1"], ids=["direct-path", "general-path"])
async def test_a_compressed_answer_that_inflates_past_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """MAX_ANSWER_BYTES holds for what an answer inflates to, not only for what arrives: 2 MB
    of zeros are 2 KB gzipped, and a gzip bomb of 64 MiB inflates to 64 GiB. Inflated as far
    as the limit and no further, it is refused, on both of the client's paths to the
    transport; one that stays within it is read."""
    monkeypatch.setattr("connector.h1.MAX_ANSWER_BYTES", 100_000)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    bomb, fits = gzip.compress(b"0" * 2_000_000), gzip.compress(b"0" * 100_000)
    assert len(bomb) < 100_000
    vendor = Vendor(lambda n: head % len(bomb) + bomb if n <= 2 else head % len(fits) + fits)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        with pytest.raises(RetryableError, match="DecodingError"):
            await client.request("GET", path)
        assert len((await client.request("GET", path)).content) == 100_000


@pytest.mark.parametrize(
    ("coding", "path"),
    [
        (b"gzip", "/crm/v3/objects/contacts/batch/upsert"),
        (b"gzip", "/crm/v3/objects/contacts/batch/upsert?archived=false"),
        (b"br", "/crm/v3/objects/contacts/batch/upsert"),
    ],
    ids=["direct-path", "general-path", "not-asked-for"],
)
async def test_an_answer_not_in_the_coding_it_says_ends_in_a_retryable_error(
    tmp_path: Path, coding: bytes, path: str
) -> None:
    """An answer labelled gzip that is not (a proxy that mislabels, a body damaged on the way),
    or in a coding the connector did not ask for, is httpx's DecodingError: a RequestError,
    not a TransportError, and it too ends in the error tree, as retryable (a damaged answer
    may come whole next time; one that never does fails once the retries run out)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: 2\r\n\r\n{}" % coding
    vendor = Vendor(lambda _n: answer)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        with pytest.raises(RetryableError, match="DecodingError"):
            await client.request("POST", path, json={"a": 1})
    assert len(vendor.requests) == 2  # retried once, as the client's policy says


async def test_transport_errors_are_httpx_exceptions(tmp_path: Path) -> None:
    """Used on its own, the transport raises httpx's exceptions: refused, then malformed."""
    transport = H1Transport(ssl_context=ssl.create_default_context(), limits=httpx.Limits())
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(httpx.Request("GET", "https://127.0.0.1:1/"))
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))
    vendor = Vendor(lambda _n: b"NOT HTTP AT ALL\r\n\r\n")
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        with pytest.raises(RetryableError, match="RemoteProtocolError"):
            await client.request("GET", "/a")


async def test_an_interim_answer_is_skipped_and_extra_bytes_spoil_the_connection(
    tmp_path: Path,
) -> None:
    """A 103 before the answer is dropped; bytes after an answer mean it is not reused."""
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + OK
    trailing = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"
    vendor = Vendor(lambda n: early if n == 1 else trailing)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        first = await client.request("GET", "/1")
        assert first.status_code == 200 and first.json() == {} and "link" not in first.headers
        assert (await client.request("GET", "/2")).json() == {}  # same connection: kept
        assert (await client.request("GET", "/3")).json() == {}  # a new one: /2 overran
    assert vendor.connections == 2


async def test_an_idle_connection_past_its_keepalive_expiry_is_not_reused(tmp_path: Path) -> None:
    """Kept within keepalive_expiry, reused; idle for longer, closed and replaced."""
    vendor = Vendor()
    server, ca, url = await _serve(vendor, tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    async with server:
        for expiry, connections in ((60.0, 1), (0.0, 2)):
            vendor.connections = 0
            transport = H1Transport(
                ssl_context=context, limits=httpx.Limits(keepalive_expiry=expiry)
            )
            for path in ("/a", "/b"):
                response = await transport.handle_async_request(httpx.Request("GET", url + path))
                assert response.status_code == 200
                await asyncio.sleep(0.001)  # idle for longer than an expiry of 0
            await transport.aclose()
            assert vendor.connections == connections, expiry


async def test_a_failed_tls_handshake_has_closed_the_socket_when_the_error_is_raised() -> None:
    """The peer sees the connection end by the time the caller sees the handshake fail.

    The server answers (not in TLS) as soon as it accepts, so its bytes are waiting when the
    client starts its handshake, which then fails in the same turn of the loop that wakes the
    call: the loop has only scheduled the socket's close. A caller that goes on without
    giving the loop a turn (a test shutting its server down, a command ending) must not
    leave the socket open for the peer to wait on.
    """
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    accepted: asyncio.Future[socket.socket] = loop.create_future()

    def answer_in_plain_http() -> None:
        loop.remove_reader(listener)
        peer, _ = listener.accept()
        peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        accepted.set_result(peer)

    loop.add_reader(listener, answer_in_plain_http)
    transport = H1Transport(ssl_context=ssl.create_default_context(), limits=httpx.Limits())
    with listener, pytest.raises(httpx.ConnectError) as info:
        await transport.handle_async_request(httpx.Request("GET", f"https://127.0.0.1:{port}/"))
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with accepted.result() as peer:
        peer.setblocking(False)
        received = b""
        # The ClientHello, then the end of the connection; BlockingIOError if still open.
        while chunk := peer.recv(65536):
            received += chunk
    assert received


async def test_an_http_1_0_answer_keeps_its_connection_only_when_it_says_keep_alive(
    tmp_path: Path,
) -> None:
    """HTTP/1.0 closes after each answer unless the vendor says ``Connection: keep-alive``."""
    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}"
    for answer, connections in ((plain, 3), (kept, 1)):
        vendor = Vendor(lambda _n, answer=answer: answer)  # type: ignore[misc]
        server, ca, url = await _serve(vendor, tmp_path / str(connections))
        async with server, _client(url, ca) as client:
            for path in ("/a", "/b", "/c"):
                assert (await client.request("GET", path)).status_code == 200
        assert vendor.connections == connections


async def test_an_answer_larger_than_the_connector_reads_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endless or huge answer is cut off (a transport error), never read into memory."""
    monkeypatch.setattr("connector.h1.MAX_ANSWER_BYTES", 1000)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    vendor = Vendor(lambda _n: big)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        with pytest.raises(RetryableError, match="ReadError"):
            await client.request("GET", "/big")


async def test_a_switching_protocols_answer_is_a_retryable_protocol_error(
    tmp_path: Path,
) -> None:
    """A ``101 Switching Protocols`` (from a proxy in front of a vendor; nothing here asks to
    upgrade) is not an HTTP answer the connector reads. httptools says so with an exception
    of its own, not an HttpParserError; it ends as every malformed answer does."""
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    vendor = Vendor(lambda _n: upgrade)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca, timeout=5.0) as client:
        with pytest.raises(RetryableError, match="RemoteProtocolError"):
            await client.request("GET", "/crm/v3/objects/contacts")


_FILLER = b"X-Pad: aaaaaaaaaa\r\n"  # 19 bytes
_END = b"Content-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        # One header never finished: the parser buffers it, so only the bytes fed tell.
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 2 * MAX_HEAD_BYTES, True),
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 2 * MAX_HEAD_BYTES + b"\r\n" + _END, True),
        (b"HTTP/1.1 200 OK\r\n" + _FILLER * (MAX_HEAD_BYTES // 19 + 1) + _END, True),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" * (MAX_HEAD_BYTES // 20), True),
        (b"HTTP/1.1 200 OK\r\n" + _FILLER * (MAX_HEAD_BYTES // 24) + _END, False),
    ],
    ids=["endless-header", "huge-header", "many-headers", "endless-interim", "just-within"],
)
async def test_a_header_section_past_what_the_connector_reads_is_refused(
    tmp_path: Path, answer: bytes, refused: bool
) -> None:
    """Headers are held to MAX_HEAD_BYTES (what httpx's own transport allows) as the body is
    to MAX_ANSWER_BYTES: a header section past it is cut off (a transport error, not a wait
    for the read timeout), never read into memory until the process runs out of it, be it
    one header, many, or interim answers one after the other; one within it is read."""
    vendor = Vendor(lambda _n: answer)
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca, timeout=5.0) as client:
        if refused:
            with pytest.raises(RetryableError, match="ReadError"):
                await client.request("GET", "/huge-head")
        else:
            assert (await client.request("GET", "/huge-head")).json() == {}


class Trickler(Vendor):
    """Answers a byte at a time, a few milliseconds apart, for as long as the client listens."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 100_000
        try:
            for byte in answer:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.005)
        except ConnectionError:
            pass
        finally:
            writer.close()


async def test_an_answer_trickling_in_past_the_call_s_deadline_is_a_retryable_error(
    tmp_path: Path,
) -> None:
    """The read timeout runs between bytes, so a vendor sending a byte every few milliseconds
    never passes it and held the call (and its connection, and its rate-limit slot) for ever.
    The deadline bounds the whole call: past it, the call ends as retryable."""
    vendor = Trickler()
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca, timeout=5.0, deadline=0.1) as client:
        with pytest.raises(RetryableError, match="deadline passed"):
            await client.request("GET", "/slowly")
        assert client.stats.transport_errors == 2  # both attempts, each in its own deadline
    assert len(vendor.requests) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Trace", f"1\r\nX-Email: {CANARY_EMAIL}"),
        ("X-Trace", f"1\nX-Email: {CANARY_EMAIL}"),
        ("X-Trace", f"{CANARY_EMAIL}\r"),
        ("X-Trace", f"{CANARY_EMAIL}\0"),
        ("X-Trace\r\nX-Evil", CANARY_EMAIL),
    ],
    ids=["crlf", "lf", "cr", "nul", "in-the-name"],
)
async def test_a_header_holding_cr_lf_or_nul_is_refused_before_anything_is_written(
    tmp_path: Path, name: str, value: str
) -> None:
    """Written raw, a line break in a header ends it and makes what follows a header of its
    own (or, behind a proxy, a request of its own). Such a request is refused before a
    connection is taken, as fatal (it would be the same on a retry), naming the header and
    never its value."""
    vendor = Vendor()
    server, ca, url = await _serve(vendor, tmp_path)
    async with server, _client(url, ca) as client:
        for path, body in (("/a", None), ("/a?general=path", {"x": 1})):
            with pytest.raises(FatalRemoteError) as caught:
                await client.request("POST", path, json=body, headers={name: value})
            assert "header 'X-Trace" in str(caught.value)
            assert CANARY_EMAIL not in str(caught.value)
    assert vendor.connections == 0 and vendor.requests == []


async def test_a_body_of_unknown_length_goes_out_chunked_and_whole(tmp_path: Path) -> None:
    """A streamed request body (no length known in advance) is framed in chunks."""

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    vendor = Vendor()
    server, ca, url = await _serve(vendor, tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    async with (
        server,
        httpx.AsyncClient(
            transport=H1Transport(ssl_context=context, limits=httpx.Limits())
        ) as client,
    ):
        response = await client.post(url + "/stream", content=parts())
        assert response.status_code == 200
    (request,) = vendor.requests
    assert b"\r\nTransfer-Encoding: chunked\r\n" in request
    assert request.endswith(b'\r\n\r\n8\r\n{"a": 1}\r\n0\r\n\r\n')


async def test_a_call_that_finds_no_free_connection_in_time_is_a_pool_timeout(
    tmp_path: Path,
) -> None:
    """One connection allowed and busy: a call whose pool timeout passes gives up."""
    vendor = Vendor()
    vendor.release.clear()
    server, ca, url = await _serve(vendor, tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    transport = H1Transport(ssl_context=context, limits=httpx.Limits(max_connections=1))
    async with server:
        busy = asyncio.create_task(transport.handle_async_request(httpx.Request("GET", url)))
        while not vendor.requests:
            await asyncio.sleep(0)
        waiting = httpx.Request("GET", url, extensions={"timeout": {"pool": 0.01}})
        with pytest.raises(httpx.PoolTimeout):
            await transport.handle_async_request(waiting)
        vendor.release.set()
        assert (await busy).status_code == 200
        await transport.aclose()


_STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 999 Odd",
        b"HTTP/1.1 103 Early Hints",
        b"HTTP/1.1 101 Switching Protocols",
        b"HTTP/2 200",
        b"HTTP/1.1 200",
        b"ICY 200 OK",
        b"",
    ]
)
_HEADER_LINES = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 2",
            b"Content-Length: 0",
            b"Content-Length: -1",
            b"Content-Length: x",
            b"Content-Length: 99999999999999999999",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Connection: close",
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"Content-Encoding: gzip",
            b"Content-Encoding: br",
            b"Content-Encoding: deflate",
            b"Retry-After: soon",
            b"X-Odd: \x00\xff",
        ]
    )
    | st.binary(max_size=20),
    max_size=4,
)
_ANSWERS = st.one_of(
    st.binary(max_size=300),
    st.tuples(_STATUS_LINES, _HEADER_LINES, st.binary(max_size=40)).map(
        lambda parts: (
            parts[0] + b"\r\n" + b"".join(h + b"\r\n" for h in parts[1]) + b"\r\n" + parts[2]
        )
    ),
)


def test_whatever_bytes_a_server_answers_end_in_a_response_or_a_classified_error(
    tmp_path: Path,
) -> None:
    """A broken or hostile server (any bytes, any framing, then a hang-up) never makes a
    call raise anything but the error tree's errors, which say what happens next."""
    ca = DevCA(tmp_path)
    cert = ca.issue("vendor")

    @settings(max_examples=120, derandomize=True, deadline=None)
    @given(answer=_ANSWERS)
    def calls(answer: bytes) -> None:
        async def once() -> None:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(answer)
                    await writer.drain()
                finally:
                    writer.close()

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert.cert_path, cert.key_path)
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
            port = server.sockets[0].getsockname()[1]
            async with server, _client(f"https://127.0.0.1:{port}", ca, timeout=2.0) as client:
                with contextlib.suppress(KlantsyncError):
                    await client.request("GET", "/a", accept=(204, 999))

        run_loop(once())  # the event loop the connector runs on (uvloop where installed)

    calls()
