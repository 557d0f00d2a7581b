"""The daemon's public listener (webhooks, health, metrics) and how both listeners are served.

Kept apart from :mod:`connector.admin` because the two face different callers: vendors and
monitoring here, operators there, on separate sockets so the admin API can stay on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from connector.adapter import WebhookRequest
from connector.errors import ConfigError
from connector.http import server_pair_problem
from connector.listen import listener_is_loopback
from connector.storeturn import write_in_turn
from connector.webhooks import MAX_BODY_BYTES, UNKNOWN_SYSTEM, receive

if TYPE_CHECKING:
    from connector.daemon import Daemon

__all__ = ["bind_listener", "build_public_app", "build_servers"]


class BodyTooLarge(Exception):
    """The request body passed :data:`MAX_BODY_BYTES`."""


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(body)


#: The content codings that pack a body (RFC 9110 8.4.1, the IANA registry).
_PACKING_CODINGS = frozenset({"gzip", "x-gzip", "deflate", "compress", "x-compress", "br", "zstd"})


def _uncompressed(request: Request) -> bool:
    """Whether the body comes as it was sent: no ``Content-Encoding`` that packs it. A
    coding that packs nothing (``identity``, or a charset a client puts there by mistake)
    leaves the body as signed, and it verifies as it did."""
    codings = request.headers.get("content-encoding", "").lower().split(",")
    return not any(coding.strip() in _PACKING_CODINGS for coding in codings)


def _system_label(configured: Collection[str], system: str) -> str:
    """``system`` if it is a configured system's name, else :data:`UNKNOWN_SYSTEM`.

    The name comes from the URL of an unauthenticated request: used as a label as it is, any
    caller could put an e-mail address into ``/metrics`` (``POST /webhooks/a@b.example``) and
    add a time series per request. Configured names are few and chosen by the operator.
    """
    return system if system in configured else UNKNOWN_SYSTEM


#: Seconds a caller is asked to wait when the store does not answer (a full disk, say).
STORE_RETRY_AFTER = 60

#: Seconds a webhook delivery waits for the store's write lock while another process holds
#: it, before it is answered 503 (the vendor delivers it again). Within the patience of the
#: least patient vendor (Shopify: 5 s for the whole answer), with room for the rest of it.
WEBHOOK_STORE_WAIT_SECONDS = 3.0


def store_unavailable() -> JSONResponse:
    """503 for a request the store failed under: try again later, nothing was done."""
    return JSONResponse(
        {"error": "store unavailable; try again later"},
        status_code=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER)},
    )


def build_public_app(daemon: Daemon) -> Starlette:
    """Webhooks, ``/healthz``, ``/readyz``, ``/metrics``."""
    public_url = daemon.rt.config.daemon.public_url
    configured = frozenset(daemon.rt.config.systems)
    daemon.metrics.declare_webhooks(sorted({*configured, UNKNOWN_SYSTEM}))

    async def webhook(request: Request) -> Response:
        system = request.path_params["system"]
        label = _system_label(configured, system)
        allowed = _webhook_methods(daemon, system)
        if request.method not in allowed:
            # The Allow header names what this system's endpoint takes (RFC 9110 15.5.6):
            # a vendor's URL check told GET is allowed where it is not got another 405.
            daemon.metrics.webhooks.labels(label, "405").inc()
            return JSONResponse(
                {"error": "method not allowed"},
                status_code=405,
                headers={"Allow": ", ".join(allowed)},
            )
        if not _uncompressed(request):
            # Not unpacked here (nor could it be told whether the vendor signed the body
            # packed or not): checked as it came, it failed its signature, 401 and a
            # "signature invalid or stale" entry that sent the operator after the secret.
            daemon.metrics.webhooks.labels(label, "415").inc()
            return JSONResponse(
                {"error": "compressed body; send it uncompressed"},
                status_code=415,
                headers={"Accept-Encoding": "identity"},  # RFC 9110 15.5.16
            )
        try:
            body = await _read_capped(request)
        except BodyTooLarge:
            daemon.metrics.webhooks.labels(label, "too_large").inc()
            return JSONResponse({"error": "body too large"}, status_code=413)
        except ClientDisconnect:
            # The sender hung up before its body was all in (its own timeout, a line that
            # dropped): nothing was taken, and the vendor delivers it again. Raised on, it
            # was logged as an error inside the app, as a bug is. Nobody reads this answer.
            daemon.metrics.webhooks.labels(label, "incomplete").inc()
            return Response(status_code=400)
        # Vendors sign the URL they called (HubSpot v3); behind a proxy that is the public URL.
        url = str(request.url)
        if public_url:
            url = public_url.rstrip("/") + request.url.path
            if request.url.query:
                url += "?" + request.url.query
        delivery = WebhookRequest(
            method=request.method,
            url=url,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        try:
            # Off the loop's wait: another process holding the store's write lock (an
            # operator's sqlite3 shell, a backup) held every request and probe with this one
            # for SQLite's busy timeout, and the vendor's patience ran out first.
            outcome = await write_in_turn(
                daemon.rt.store,
                lambda: receive(daemon.rt, system, delivery, daemon.clock()),
                within=WEBHOOK_STORE_WAIT_SECONDS,
            )
        except sqlite3.Error as exc:
            if not daemon.store_at_fault(exc):
                # A bug, answered as any other (500): a 503 asks the vendor to deliver again
                # and would be its answer to every delivery, until the vendor (WooCommerce
                # after five failures) disables the webhook.
                raise
            # Nothing was queued (the transaction rolled back): the vendor delivers again.
            # So for a lock another process still held after WEBHOOK_STORE_WAIT_SECONDS.
            daemon.store_failed(exc, "webhook")
            daemon.metrics.webhooks.labels(label, "503").inc()
            return store_unavailable()
        daemon.metrics.webhooks.labels(label, str(outcome.status)).inc()
        if outcome.status != 200:
            return JSONResponse({"error": outcome.reason}, status_code=outcome.status)
        if outcome.queued:
            daemon.jobs.wake.set()
        return JSONResponse(
            {
                "queued": len(outcome.queued),
                "duplicates": outcome.duplicates,
                "ignored": outcome.ignored,
            }
        )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_request: Request) -> Response:
        ready, checks = daemon.readiness()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    metrics_refused = _metrics_guard(daemon)

    async def metrics(request: Request) -> Response:
        refused = metrics_refused(request)
        if refused is not None:
            return refused
        daemon.refresh_gauges()
        return Response(
            daemon.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app = Starlette(
        routes=[
            # Every method reaches the handler, which allows POST, and GET (with HEAD) only
            # for a vendor that checks the URL so (Mailchimp), with its secret: declared
            # here, every system's 405 named GET and HEAD as allowed.
            Route("/webhooks/{system}", _EveryMethod(webhook)),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    # "/webhooks/news/?secret=..." was answered 307 to the path without the slash, built from
    # the scheme the listener sees: behind the TLS-terminating proxy, http://, with the
    # Mailchimp secret in it, and a 307 sends the body (customer data) again. A 404 instead.
    app.router.redirect_slashes = False
    return app


def _metrics_guard(daemon: Daemon) -> Callable[[Request], Response | None]:
    """What refuses a request for ``/metrics``: ``None`` where it is served.

    The metrics tell of an overdue breach, overdue requests, the backups' and the master
    key's age and which processors the client uses: not for anyone who finds the host. A
    listener beyond loopback (with ``tls_cert``, facing vendors and so the internet) serves
    them only for ``daemon.metrics_token`` as a bearer token, which Prometheus sends from
    its scrape config (``authorization``); on loopback they are served as before, unless a
    token is set (then it is asked for there too: behind a proxy, the operator's choice).
    A token of its own, not the admin token: a scraper may read, never erase.
    """
    settings = daemon.rt.config.daemon
    configured = settings.metrics_token
    token = configured.get_secret_value().encode() if configured is not None else b""
    beyond_loopback = not listener_is_loopback(settings.listen)

    def refused(request: Request) -> Response | None:
        if not token:
            if not beyond_loopback:
                return None
            return JSONResponse(
                {"error": "metrics are served beyond loopback only with daemon.metrics_token"},
                status_code=403,
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token):
            return None
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    return refused


class _EveryMethod:
    """``endpoint`` as an ASGI app, to which a route passes requests of every method.

    Given a function, Starlette's route takes the methods it lists (GET if none) and answers
    any other 405 itself, with those as ``Allow``, whichever resource the path names.
    """

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: _Message, receive: _Receive, send: _Send) -> None:
        await self.app(scope, receive, send)


def _webhook_methods(daemon: Daemon, system: str) -> tuple[str, ...]:
    """The methods ``system``'s webhook endpoint takes: POST, and GET and HEAD where its
    vendor checks the URL with a GET when the webhook is saved."""
    found = daemon.rt.systems.get(system)
    if found is not None and "webhook_url_check" in found.adapter.capabilities:
        return ("GET", "HEAD", "POST")
    return ("POST",)


#: The most bytes a request's head (request line and headers) may take; a vendor's is a
#: few kilobytes.
MAX_HEAD_BYTES = 65_536


#: Seconds a request may take to arrive, head and body, from its first byte (a connection's
#: first request: from the connection's opening). No vendor waits longer for its answer
#: (WooCommerce, the most patient, gives up on a delivery after 60 s): a request slower
#: than this is nobody's the listener could still answer in time.
REQUEST_READ_SECONDS = 60.0

#: What a request that did not arrive within REQUEST_READ_SECONDS is answered.
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _bounded_protocol() -> type[Any]:
    """uvicorn's httptools protocol, refusing a request whose head passes MAX_HEAD_BYTES or
    that does not arrive within REQUEST_READ_SECONDS.

    httptools sets no limit of its own: a single header of many megabytes was buffered whole
    and the request served. Nor does uvicorn set a time for a request to arrive: a
    connection that sent a byte now and then (or nothing at all) was held open for good, so
    a caller opening enough of them left the daemon out of file descriptors, taking no
    vendor's delivery and reaching no vendor. The listener faces vendors (and, with
    ``tls_cert``, the internet); the body is capped at :data:`MAX_BODY_BYTES` by the app.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTooLarge(Exception):
        """Raised from a parser callback: the head passed MAX_HEAD_BYTES."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _in_head = True
        _head_bytes = 0  # the request line and headers the parser handed over
        _unparsed = 0  # reads the parser kept whole because the head had not ended
        _too_large = False
        _receiving = False  # from a request's first byte to its last
        _deadline: asyncio.TimerHandle | None = None  # when the request to come must be in

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._expect_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_expecting()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes, self._unparsed = True, 0, 0
            self._receiving = True
            self._expect_request()  # begun in the read that ended the request before it

        def on_message_complete(self) -> None:
            self._receiving = False
            self._stop_expecting()
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            # A head that ends within a read is judged here, whatever the reads were.
            self._grow(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def _grow(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES:
                self._too_large = True
                raise HeadTooLarge  # the parser stops; uvicorn answers as for bad input

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._refuse()
            else:
                super().send_400_response(msg)

        def data_received(self, data: bytes) -> None:
            # The time runs from a request's first byte, not from each read: a request sent
            # a byte at a time does not keep the connection for ever.
            self._expect_request()
            was_in_head = self._in_head
            super().data_received(data)
            # A head that never ends (one endless header) is buffered by the parser, which
            # calls back only at its end: reads that began and ended inside it count too.
            if was_in_head and self._in_head:
                self._unparsed += len(data)
                if self._unparsed > MAX_HEAD_BYTES:
                    self._refuse()

        def _refuse(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

        def _expect_request(self) -> None:
            if self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(REQUEST_READ_SECONDS, self._too_slow)

        def _stop_expecting(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            """The request under way did not arrive in time (or none began): 408 where it
            can still be answered, and the connection closed. An app waiting for the body
            sees the caller gone, as when a caller hangs up."""
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._receiving and self._unanswered():
                self.transport.write(_TOO_SLOW)
            self.transport.close()

        def _unanswered(self) -> bool:
            """Whether the 408 would be the answer to the request under way: none to it has
            begun, and none to an earlier request (pipelined before it) is still going out."""
            if self._in_head:
                return self.cycle is None or self.cycle.response_complete
            return not self.cycle.response_started and not self.pipeline

    return BoundedHttpToolsProtocol


#: Seconds a caller cut off by a stop is asked to wait: the service manager starts the daemon
#: again within seconds.
STOP_RETRY_AFTER = 30

_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Message, _Receive, _Send], Awaitable[None]]


class BodyGate:
    """ASGI layer: a request still waiting for its body when the listener closes is
    answered 503 with ``Retry-After`` instead of being cut.

    A vendor on a slow line may still be sending a delivery when the daemon stops. uvicorn
    waits for such a request for ever, so the daemon's stop gave up on the listener and the
    request's task was cancelled: uvicorn logged "Exception in ASGI application" at error
    level and the vendor got no answer. When the listener closes (:meth:`close`), a request
    waiting for its body has done nothing yet: its wait is cancelled here, and the cut is
    answered as a refusal the vendor delivers again after. A request past its body runs to
    its end as before.
    """

    def __init__(self, app: _App) -> None:
        self.app = app
        self.closed = False
        #: Requests waiting for their body now, and whether each was cut by :meth:`close`.
        self._waiting: dict[asyncio.Task[Any], list[bool]] = {}

    def close(self) -> None:
        """The listener closes: cut every request waiting for its body, now and later."""
        self.closed = True
        for task in list(self._waiting):
            self._cut(task)

    def _cut(self, task: asyncio.Task[Any]) -> None:
        cut = self._waiting.get(task)
        if cut is not None and not cut[0]:
            cut[0] = True
            task.cancel()

    async def __call__(self, scope: _Message, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None  # uvicorn runs each request in a task of its own
        cut = [False]
        started = False

        async def gated_receive() -> _Message:
            with self._waiting_for_body(task, cut):
                return await receive()

        async def noting_send(message: _Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, gated_receive, noting_send)
        except asyncio.CancelledError:
            if not cut[0]:
                raise  # not this gate's doing
            task.uncancel()
            if not started:
                await _answer_stopping(send)

    @contextlib.contextmanager
    def _waiting_for_body(self, task: asyncio.Task[Any], cut: list[bool]) -> Iterator[None]:
        self._waiting[task] = cut
        if self.closed:
            # Asked for after the close: a body already here is read at once (the check
            # runs after this turn of the loop); one still to come is not waited for.
            asyncio.get_running_loop().call_soon(self._cut, task)
        try:
            yield
        finally:
            del self._waiting[task]


async def _answer_stopping(send: _Send) -> None:
    body = json.dumps({"error": "stopping; try again later"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(STOP_RETRY_AFTER).encode()),
                # The rest of the body may still come: it is no next request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _server_class() -> type[Any]:
    """uvicorn's server, leaving SIGTERM/SIGINT to the daemon, closing its :class:`BodyGate`
    when it shuts down.

    uvicorn (0.29 and later) catches both signals itself while it serves
    (``Server.capture_signals``), so the listeners began to shut down at the signal, before
    the daemon's in-flight batch had finished, and raised the signal again when they ended.
    The daemon owns the signals; the listeners close when it says (``should_exit``).
    """
    import uvicorn

    class DaemonServer(uvicorn.Server):
        gate: BodyGate | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.gate is not None:
                self.gate.close()
            await super().shutdown(sockets=sockets)

    return DaemonServer


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_servers(daemon: Daemon) -> list[tuple[Any, socket.socket]]:
    """uvicorn servers for both listeners, each with its socket already bound.

    Binding here, before anything starts, turns a port in use into a clear configuration
    error naming the key (uvicorn would otherwise exit the whole process from inside a task).
    """
    import uvicorn

    from connector.admin import build_admin_app

    settings = daemon.rt.config.daemon
    server_class = _server_class()
    tls: dict[str, Any] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        # Loaded now as the listeners will load it, a key this user may not read included
        # (the config load leaves that to here): failing inside uvicorn's task, both
        # listeners died after "daemon started", with no webhooks, health or admin API.
        problem = server_pair_problem(settings.tls_cert, settings.tls_key, strict=True)
        if problem:
            raise ConfigError(str(daemon.rt.config.path), "daemon.tls_cert", problem)
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    servers = []
    for key, app, listen in (
        ("daemon.listen", build_public_app(daemon), settings.listen),
        ("daemon.admin_listen", build_admin_app(daemon), settings.admin_listen),
    ):
        host, port = _host_port(listen)
        sock = bind_listener(str(daemon.rt.config.path), key, host, port)
        gate = BodyGate(app)
        config = uvicorn.Config(
            gate,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # uvicorn's own set-up gives its loggers handlers that print tracebacks as they
            # are; without it they reach the redacting handler (connector/logs.py).
            log_config=None,
            lifespan="off",
            http=_bounded_protocol(),
            **tls,
        )
        # The daemon owns signal handling (it must finish the in-flight batch first).
        server = server_class(config)
        server.gate = gate
        servers.append((server, sock))
    return servers


def bind_listener(file: str, key: str, host: str, port: int) -> socket.socket:
    """The listening socket for ``host:port``; a port in use is a ConfigError naming ``key``.

    Created as an explicit TCP socket: asyncio turns Nagle's algorithm off on accepted
    connections only when the listening socket says IPPROTO_TCP, and one made with the
    default protocol (0) left it on. A response written as head, then body then waited for
    the client's delayed acknowledgement: every webhook was answered ~40 ms late.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(file, key, f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
