"""The connection layer under every vendor call: httpcore's network backend on asyncio streams.

httpx reaches the network through httpcore, which by default goes through anyio: a TLS layer
written in Python over ``ssl.MemoryBIO``, a cancel scope and a typed-attribute lookup per read
and write, and a ``select.poll`` per idle connection every time the pool assigns a request.
On this daemon's hot paths (one HTTPS call per Mailchimp member; hundreds of calls a second
during a fan-out) that was about a quarter of the client's CPU per call (2.0 -> 1.5 ms here).
This backend hands the same work to the event loop's own transports
(``loop.create_connection``, ``start_tls``), with far less Python in between.

Nothing about *what* is allowed changes: the :class:`ssl.SSLContext` is the one
:func:`connector.http.build_ssl_context` built (verification on, TLS 1.2 minimum), and errors
are mapped to the same httpcore exceptions the anyio backend raises, so httpx turns them into
the same ``httpx.ConnectError``/``ReadTimeout``/... with the ``ssl.SSLError`` as their cause.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpcore._synchronization as httpcore_sync
import httpx

__all__ = ["AsyncioBackend", "AsyncioStream", "AsyncioTransport", "fast_httpcore_locks"]

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Reader(asyncio.StreamReader):
    """A stream reader that remembers the peer closed, even with data left unread."""

    peer_closed = False

    def feed_eof(self) -> None:
        self.peer_closed = True
        super().feed_eof()


#: What a broken connection raises here (ssl.SSLError is an OSError): mapped to httpcore's
#: ConnectError/ReadError/WriteError, with the original kept as the cause.
_BROKEN = (OSError, EOFError)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (then TLS) connection, as httpcore reads and writes it."""

    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # Exceptions are mapped inline rather than through a context manager: this runs for
        # every answer, and a generator-based manager cost more than the read itself.
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except _BROKEN as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            if self._writer.transport.get_write_buffer_size() == 0:
                return  # all handed to the kernel: nothing to wait for
            if timeout is None:
                await self._writer.drain()
                return
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except _BROKEN as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        # Closes the TCP connection without a TLS close_notify, as httpcore's anyio backend
        # does: HTTP/1.1 frames every message, and waiting for the peer's close_notify would
        # hold up the pool (it closes expired connections on the way to a request).
        self._writer.transport.abort()
        # The socket is released on the loop's next turn; give it that turn, so a caller that
        # ends the loop right after (a test, a shutdown) leaves no socket open.
        await asyncio.sleep(0)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, TimeoutError):
                raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
            if isinstance(exc, _BROKEN):
                raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of idle pooled connections: anything pending means the server closed it.
            return (
                self._reader.peer_closed
                or self._writer.is_closing()
                or self._reader.exception() is not None
            )
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections on the running event loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        reader = _Reader(limit=2**16, loop=loop)
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("connect timed out") from exc
        except _BROKEN as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for vendor calls")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def fast_httpcore_locks() -> None:
    """Make httpcore's asyncio locks stop yielding to the event loop when they are free.

    httpcore guards each connection with anyio locks, taken three times per request, and
    waits on an anyio event that is usually already set. anyio's ``Lock`` gives up its turn
    of the event loop (``sleep(0)``) even when nobody holds it, and ``Event.wait`` does so
    when the event is already set: four trips to the back of the loop's ready queue per
    call. On a loop that is busy (a sync pulling, mapping and sealing while destinations
    answer) each trip waits for everything queued ahead, and vendor calls came back 15 ms
    later than the vendor answered. anyio's ``fast_acquire`` takes a free lock without the
    trip, and a set event needs none: same locking, same cancellation at the next real wait.

    Idempotent. If httpcore's internals ever change shape this does nothing (the test
    ``test_httpcore_locks_take_no_extra_turns`` notices).
    """
    lock, event = httpcore_sync.AsyncLock, httpcore_sync.AsyncEvent
    if getattr(lock, "_klantsync_fast", False) or not hasattr(lock, "setup"):
        return
    original_setup = lock.setup
    original_wait = event.wait

    def setup(self: Any) -> None:
        original_setup(self)
        if getattr(self, "_backend", "") == "asyncio":
            self._anyio_lock = anyio.Lock(fast_acquire=True)

    async def wait(self: Any, timeout: float | None = None) -> None:
        anyio_event = getattr(self, "_anyio_event", None)
        if anyio_event is not None and anyio_event.is_set():
            return
        await original_wait(self, timeout)

    lock.setup = setup  # type: ignore[method-assign]
    event.wait = wait  # type: ignore[method-assign]
    lock._klantsync_fast = True  # type: ignore[attr-defined]


class AsyncioTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on :class:`AsyncioBackend`.

    Everything above the pool (request and response mapping, exception mapping) is httpx's
    own; only the pool is rebuilt, with the same settings and this backend, and httpcore's
    locks take no extra turns of the loop (:func:`fast_httpcore_locks`).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        fast_httpcore_locks()
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )
