"""HTTP/1.1 for every vendor call: httpx's interface, asyncio's sockets, httptools' parser.

httpx's own transport hands a request to httpcore's connection pool, which runs h11's state
machine: about 1,700 Python calls for one request. Fetching a shop page of 100 customers cost
0.9-1.0 ms of client CPU before its JSON was decoded; the same request written and framed
by hand over the same TLS stream, 0.27-0.29 ms. A sync makes two such calls per 100 records,
so this was a tenth of the connector's CPU. Here a request is written in one piece, and the
answer is framed by httptools (llhttp, the parser uvicorn uses) as it arrives, in the
protocol's own callback, and handed to httpx whole.

What is allowed does not change: the :class:`ssl.SSLContext` is the one
:func:`connector.http.build_ssl_context` built (verification on, TLS 1.2 minimum), the host
name is checked against the certificate, every call has httpx's connect, write, read and pool
timeouts, and failures are httpx's own exceptions (``ConnectError``, ``ReadTimeout``, ...)
with the ``OSError`` or ``ssl.SSLError`` as their cause, so :class:`connector.http.SystemClient`
classifies them as it always has. The read timeout runs between bytes, so a request may also
carry a deadline for the whole call (``extensions["deadline"]``, in seconds): each of those
waits is cut to what is left of it, and past it the call is :class:`DeadlineExceeded` (so
the deadline adds no timer of its own to a call). A request header holding CR, LF or NUL is
refused before anything is written (:class:`UnsafeHeaderError`): written raw, it would end
the header early and let what follows it pass as headers of its own.

What is read is bounded: an answer's header section to :data:`MAX_HEAD_BYTES`, its body to
:data:`MAX_ANSWER_BYTES`, and a compressed body (the connector asks for gzip or deflate) is
inflated here, to the same :data:`MAX_ANSWER_BYTES`, and handed to httpx decoded: httpx would
inflate it whole, a gzip bomb of megabytes into gigabytes.

The pool: at most ``max_connections`` calls in flight per transport (one more waits, up to
the pool timeout); a connection whose answer said it may be kept goes back to its origin's
idle list, and is taken again only if the peer has not closed it (or sent anything) while it
sat there, and within ``keepalive_expiry``. Answers are vendors' JSON documents: each is read
whole before httpx sees it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import zlib
from typing import Any, cast

import httptools
import httpx

__all__ = ["ACCEPT_ENCODING", "DeadlineExceeded", "H1Transport", "UnsafeHeaderError"]

#: Bytes of an answer kept in memory at most; a vendor answer is a JSON page of kilobytes.
#: A compressed answer is held to it twice: as it arrives, and as it inflates.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

#: Bytes of an answer's header section (interim answers included) read at most: what httpx's
#: own transport allows (httpcore's limit on what h11 buffers). Vendors send a few KiB.
MAX_HEAD_BYTES = 100 * 1024

#: The content codings H1Transport inflates (within MAX_ANSWER_BYTES): what a client built on
#: it must ask for, and no more (httpx asks for ``br`` and ``zstd`` too when their packages
#: are installed, and would inflate those without a limit).
ACCEPT_ENCODING = "gzip, deflate"

#: httptools' outcomes for bytes that are not an answer the connector reads. An upgrade
#: (``101 Switching Protocols``, which nothing here asks for) is not an HttpParserError.
_PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)

#: What may not appear in a header name or value: each would end the line, or the C string, early.
_UNSAFE = re.compile(rb"[\r\n\0]")

#: zlib's window bits per content coding: gzip, and deflate (zlib's format, as RFC 9110 has it).
_CODINGS = {
    b"gzip": zlib.MAX_WBITS | 16,
    b"x-gzip": zlib.MAX_WBITS | 16,
    b"deflate": zlib.MAX_WBITS,
}


class DeadlineExceeded(httpx.TimeoutException):
    """The call's deadline passed before its answer was whole (an answer trickling in)."""


class UnsafeHeaderError(httpx.LocalProtocolError):
    """A request header's name or value holds CR, LF or NUL: the request is not written.

    The message and :attr:`header` name the header, never its value (a token, an address).
    """

    def __init__(self, header: str, request: httpx.Request) -> None:
        super().__init__(f"header {header!r} holds CR, LF or NUL", request=request)
        self.header = header


_DEFAULT_PORTS = {b"https": 443, b"http": 80}


class _Answer:
    """httptools' callbacks: the answer as it is framed.

    An interim answer (1xx, e.g. 103 Early Hints) is dropped when the real one begins; bytes
    of any message after the real one mark the connection as not to be reused. The header
    section is measured twice: ``head_size`` adds up the headers as the parser hands them
    over, and ``head_fed`` the bytes fed while it is still incomplete (the parser buffers a
    header until its line ends, so an endless one never reaches ``on_header``).
    """

    __slots__ = (
        "chunks",
        "complete",
        "encoding",
        "head_done",
        "head_fed",
        "head_size",
        "headers",
        "interim",
        "overrun",
        "parser",
        "size",
        "status",
    )

    def __init__(self) -> None:
        self.parser: Any = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.head_size = 0  # interim answers' heads included: endless 103s are a head too
        self.head_fed = 0
        self.encoding: bytes | None = None
        self.status = 0
        self.head_done = False
        self.complete = False
        self.interim = False
        self.overrun = False

    def on_message_begin(self) -> None:
        if not self.complete:
            return
        if self.interim:
            self.headers, self.chunks, self.size, self.encoding = [], [], 0, None
            self.head_done = self.complete = self.interim = False
        else:
            self.overrun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.overrun:
            self.head_size += len(name) + len(value) + 4  # ": " and CRLF
            self.headers.append((name, value))
            if len(name) == 16 and name.lower() == b"content-encoding":
                self.encoding = value

    def on_headers_complete(self) -> None:
        if not self.overrun:
            self.head_done = True
            self.status = self.parser.get_status_code()
            self.interim = 100 <= self.status < 200

    def on_body(self, body: bytes) -> None:
        if not self.overrun:
            self.size += len(body)
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.overrun:
            self.complete = True

    @property
    def done(self) -> bool:
        return self.complete and not self.interim

    def past_limits(self) -> str | None:
        """What of the answer so far is more than the connector reads, in words, if any."""
        if self.size > MAX_ANSWER_BYTES:
            return "answer larger than the connector reads"
        if self.head_size > MAX_HEAD_BYTES or self.head_fed > MAX_HEAD_BYTES:
            return "answer header section larger than the connector reads"
        return None


class _Connection(asyncio.Protocol):
    """One TCP (then TLS) connection, and the answer it is reading, if any."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: _Answer | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.spoiled = False  # bytes arrived that belong to no answer: never reuse
        self.error: BaseException | None = None
        self.idle_since = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done:
            self.spoiled = True
            return
        if self.error is not None:
            return  # refused already (too large, malformed): read no more of it into memory
        answer = self.answer
        try:
            answer.parser.feed_data(data)
        except _PARSER_ERRORS as exc:
            self.error = exc
        if not answer.head_done or answer.interim:
            answer.head_fed += len(data)  # every byte of this read is of a head not yet whole
        problem = answer.past_limits()
        if problem is not None:
            self.error = ValueError(problem)
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- used by the transport -----------------------------------------------------------------

    def reusable(self, now: float, expiry: float | None) -> bool:
        return not (
            self.closed
            or self.spoiled
            or self.error is not None
            or (expiry is not None and now - self.idle_since > expiry)
        )

    async def write(self, data: bytes, timeout: float | None, ends: float | None) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if not self._paused:
            return  # handed to the kernel, or buffered under the high-water mark
        self._drained = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(_capped(timeout, ends)):
            await self._drained
        if self.closed:
            raise ConnectionResetError("the connection closed while the request was written")

    async def read_answer(
        self, head_only: bool, timeout: float | None, ends: float | None
    ) -> _Answer:
        """Wait for the whole answer (or only its head, for HEAD); ``timeout`` between bytes,
        and none past ``ends`` (the loop's time of the call's deadline), if given."""
        answer = self.answer = _Answer()
        loop = asyncio.get_running_loop()
        while not (answer.done or (head_only and answer.head_done and not answer.interim)):
            if self.error is not None:
                raise self.error
            if self.closed:
                if answer.head_done and _framed_by_close(answer.headers):
                    self.spoiled = True  # the body ended with the connection
                    break
                raise EOFError("the server closed the connection without a complete answer")
            self._waiter = loop.create_future()
            async with asyncio.timeout(_capped(timeout, ends)):
                await self._waiter
        self._waiter = None
        problem = answer.past_limits()
        if problem is not None:
            # Completed by the same read that took it past a limit: refused all the same.
            # (Bytes after a complete answer only spoil the connection, as keeps_alive says.)
            raise ValueError(problem)
        return answer

    def keeps_alive(self) -> bool:
        assert self.answer is not None
        if self.closed or self.spoiled or self.error is not None or self.answer.overrun:
            return False
        version: str = self.answer.parser.get_http_version()
        for name, value in self.answer.headers:
            if name.lower() == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    return False
                if version == "1.0":
                    return b"keep-alive" in tokens
        return version == "1.1"

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True


class H1Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 over the event loop's own TLS transports (see the module).

    Args:
        ssl_context: the TLS policy for https URLs (plain http is only ever a loopback test
            server, allowed by the config's development switch).
        limits: httpx's pool limits: connections in flight, idle ones kept, idle expiry.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(limits.max_connections or 1_000)
        self._keep = (
            limits.max_keepalive_connections
            if limits.max_keepalive_connections is not None
            else 1_000
        )
        self._expiry = limits.keepalive_expiry
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        deadline: float | None = request.extensions.get("deadline")
        ends = None if deadline is None else asyncio.get_running_loop().time() + deadline
        url = request.url
        if url.raw_scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"{url.scheme!r} is not http(s)", request=request)
        origin = (url.raw_scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.raw_scheme])
        data = await _request_bytes(request)  # refused here, before a connection is taken
        try:
            async with asyncio.timeout(_capped(timeouts.get("pool"), ends)):
                await self._slots.acquire()
        except TimeoutError as exc:
            _check_deadline(ends, timeouts.get("pool"), request)
            raise httpx.PoolTimeout("no connection free in time", request=request) from exc
        connection: _Connection | None = None
        try:
            connection = self._take_idle(origin) or await self._connect(
                origin, timeouts.get("connect"), ends, request
            )
            await self._send(connection, data, request, timeouts.get("write"), ends)
            answer = await self._receive(connection, request, timeouts.get("read"), ends)
            if connection.keeps_alive() and request.method != "HEAD":
                self._put_idle(origin, connection)
            else:
                connection.abort()
        except BaseException:
            if connection is not None:
                connection.abort()
            raise
        finally:
            self._slots.release()
        headers, body = answer.headers, b"".join(answer.chunks)
        if answer.encoding is not None:
            headers, body = _decoded(headers, body, answer.encoding, request)
        return httpx.Response(
            answer.status,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.abort()
        if idle:
            # The sockets are released on the loop's next turn; give it that turn, so a
            # caller that ends the loop right after (a test, a shutdown) leaves none open.
            await asyncio.sleep(0)

    # -- the pool ------------------------------------------------------------------------------

    def _take_idle(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if connection.reusable(now, self._expiry):
                return connection
            connection.abort()
        return None

    def _put_idle(self, origin: tuple[bytes, bytes, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._keep:
            connection.abort()
            return
        connection.answer = None
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    async def _connect(
        self,
        origin: tuple[bytes, bytes, int],
        timeout: float | None,
        ends: float | None,
        request: httpx.Request,
    ) -> _Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_capped(timeout, ends)):
                _, connection = await loop.create_connection(
                    _Connection,
                    name,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=name if tls else None,
                )
        except TimeoutError as exc:
            await _closed_by_now()
            _check_deadline(ends, timeout, request)
            raise httpx.ConnectTimeout("connect timed out", request=request) from exc
        except OSError as exc:  # ssl.SSLError included: a refused certificate ends here
            await _closed_by_now()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    # -- one exchange --------------------------------------------------------------------------

    async def _send(
        self,
        connection: _Connection,
        data: bytes,
        request: httpx.Request,
        timeout: float | None,
        ends: float | None,
    ) -> None:
        try:
            await connection.write(data, timeout, ends)
        except TimeoutError as exc:
            _check_deadline(ends, timeout, request)
            raise httpx.WriteTimeout("write timed out", request=request) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

    async def _receive(
        self,
        connection: _Connection,
        request: httpx.Request,
        timeout: float | None,
        ends: float | None,
    ) -> _Answer:
        try:
            return await connection.read_answer(request.method == "HEAD", timeout, ends)
        except TimeoutError as exc:
            _check_deadline(ends, timeout, request)
            raise httpx.ReadTimeout("read timed out", request=request) from exc
        except _PARSER_ERRORS as exc:
            raise httpx.RemoteProtocolError(
                f"malformed answer ({type(exc).__name__})", request=request
            ) from exc
        except EOFError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (OSError, ValueError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


def _capped(timeout: float | None, ends: float | None) -> float | None:
    """``timeout``, or what is left until ``ends`` (the call's deadline) if that is less."""
    if ends is None:
        return timeout
    left = max(0.0, ends - asyncio.get_running_loop().time())
    return left if timeout is None or left < timeout else timeout


def _check_deadline(ends: float | None, timeout: float | None, request: httpx.Request) -> None:
    """After a wait timed out: raise DeadlineExceeded if the deadline, not ``timeout``, cut it.

    Told by what is left of the deadline, less than ``timeout``: a loop's timer may fire a
    hair before its time, so "past ``ends``" would take a deadline for a timeout at times.
    """
    if ends is None:
        return
    if timeout is None or ends - asyncio.get_running_loop().time() < timeout:
        raise DeadlineExceeded("the call's deadline passed", request=request)


async def _request_bytes(request: httpx.Request) -> bytes:
    """The request as written on the wire, in one piece.

    Raises:
        UnsafeHeaderError: a header's name or value holds CR, LF or NUL.
    """
    body = await request.aread()
    lines = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if _UNSAFE.search(name) or _UNSAFE.search(value):
            raise UnsafeHeaderError(name.decode("latin-1"), request)
        if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
            chunked = True
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    if chunked:  # httpx's framing for a body of unknown length, already read here
        lines += (b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n") if body else (b"0\r\n\r\n",)
    else:
        lines.append(body)
    return b"".join(lines)


def _decoded(
    headers: list[tuple[bytes, bytes]], body: bytes, encoding: bytes, request: httpx.Request
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``body`` inflated as ``encoding`` says, and the headers that then describe it.

    Each coding is undone in turn, the last applied first. The Content-Encoding and
    Content-Length that described the compressed body are dropped, so httpx does not inflate
    it again.

    Raises:
        httpx.DecodingError: the body is not what its coding says, inflates past
            MAX_ANSWER_BYTES, or is in a coding the connector did not ask for (read as it
            is, it would hand an adapter compressed bytes where it expects JSON).
    """
    for coding in reversed(encoding.lower().split(b",")):
        coding = coding.strip()
        if coding in (b"", b"identity"):
            continue
        if coding not in _CODINGS:
            raise httpx.DecodingError("answer in a content coding not asked for", request=request)
        body = _inflate(body, coding, request)
    dropped = (b"content-encoding", b"content-length")
    return [(name, value) for name, value in headers if name.lower() not in dropped], body


def _inflate(data: bytes, coding: bytes, request: httpx.Request) -> bytes:
    """``data`` inflated from ``coding``; zlib is told to stop past MAX_ANSWER_BYTES."""
    limit = MAX_ANSWER_BYTES
    try:
        inflated = zlib.decompressobj(_CODINGS[coding]).decompress(data, limit + 1)
    except zlib.error as exc:
        if coding != b"deflate":
            raise httpx.DecodingError(f"answer is not {coding.decode()}", request=request) from exc
        try:  # deflate without zlib's wrapping, as some servers send it (httpx reads it too)
            inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, limit + 1)
        except zlib.error as raw_exc:
            raise httpx.DecodingError("answer is not deflate", request=request) from raw_exc
    if len(inflated) > limit:
        raise httpx.DecodingError("answer inflates past what the connector reads", request=request)
    return inflated


async def _closed_by_now() -> None:
    """Let the loop close the socket of a connection that failed in its TLS handshake.

    A failed handshake (or one cut short by the connect timeout) only schedules the close of
    its socket, for the loop's next turn. When the server's answer is read in the same turn
    as the connect completes (a busy machine), uvloop wakes ``create_connection`` before
    that close runs, and it raises with the socket still open, until the caller next yields
    to the loop. A caller that does not (a test shutting its server down, a command ending)
    leaves the peer waiting on a connection that is over. One turn closes it, before the
    error reaches the caller.
    """
    await asyncio.sleep(0)


def _framed_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an answer's body ends where the connection does (no length, not chunked)."""
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names
