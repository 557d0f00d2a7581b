"""Shared mechanics of the sandboxes: fault injection, request recording, rate enforcement,
and serving ASGI apps over real TLS on loopback.

Each ``adapters/<kind>/sandbox.py`` is a faithful fake of one vendor API. What every fake
needs (and what tests steer) lives here once:

- :class:`FaultPlan`: latency, the next N calls failing with a status, connection resets;
- :class:`RequestLog`: what the fake saw (method, path, JSON property names), for assertions;
- :class:`SandboxBase`: holds both plus a vendor-shaped rolling-window limiter;
- :func:`serve_tls`: run apps with uvicorn over HTTPS, certificates from a generated CA.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector import jsonutil
from connector.devtls import DevCA, ServerCert
from connector.ratelimit import RateLimit, RollingWindow

__all__ = [
    "ConnectionReset",
    "FaultGate",
    "FaultPlan",
    "JSONResponse",
    "RecordedRequest",
    "RequestLog",
    "SandboxBase",
    "ServedApp",
    "field_tree",
    "free_port",
    "serve_tls",
]


class ConnectionReset(Exception):
    """Raised inside a sandbox handler to drop the connection without a response."""


class JSONResponse(StarletteJSONResponse):
    """Starlette's ``JSONResponse`` (the same compact UTF-8 body) rendered with orjson.

    The benchmarks list a hundred thousand customers through a sandbox; with the standard
    library, serialising them was a quarter of the sandbox's time.
    """

    def render(self, content: Any) -> bytes:
        return jsonutil.dumps(content)


@dataclass
class FaultPlan:
    """Faults a test injects into a sandbox; consumed call by call.

    Attributes:
        latency: seconds every answer takes, the sandbox's own work included (benchmarks
            use 0.05).
        fail_next: the next N calls answer ``fail_status`` (5xx by default).
        reset_next: the next N calls drop the connection.
        down: every call drops the connection until cleared (a system that is offline).
        fail_every: every Nth call answers ``fail_status`` (0: never), for intermittent errors.
        hold: while set and not yet released, answers wait for it (a latency a test ends
            when it has seen what it waits for, instead of a time that a busy machine may
            outlast).
    """

    latency: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    reset_next: int = 0
    down: bool = False
    fail_every: int = 0
    hold: asyncio.Event | None = None
    _calls: int = 0

    def next_fault(self) -> int | str | None:
        """Consume one call: ``"reset"``, a status to fail with, or ``None``."""
        self._calls += 1
        if self.down:
            return "reset"
        if self.reset_next > 0:
            self.reset_next -= 1
            return "reset"
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status
        if self.fail_every and self._calls % self.fail_every == 0:
            return self.fail_status
        return None


@dataclass(frozen=True)
class RecordedRequest:
    """One call a sandbox saw. ``property_names`` are the field names of the body's records."""

    method: str
    path: str
    query: Mapping[str, str]
    status: int
    property_names: frozenset[str] = frozenset()
    records: int = 0


@dataclass
class RequestLog:
    """Every call a sandbox answered, in order."""

    entries: list[RecordedRequest] = field(default_factory=list)
    keep: bool = True

    def add(self, entry: RecordedRequest) -> None:
        if self.keep:
            self.entries.append(entry)

    def writes(self) -> list[RecordedRequest]:
        """Calls that change data (not GET/HEAD)."""
        return [e for e in self.entries if e.method not in ("GET", "HEAD")]

    def property_names(self) -> set[str]:
        """Union of every field name any write carried."""
        names: set[str] = set()
        for entry in self.entries:
            names |= entry.property_names
        return names

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for e in self.entries if e.method == method and e.path.startswith(path_prefix))

    def clear(self) -> None:
        self.entries.clear()


class SandboxBase:
    """State every sandbox has: faults, a request log, an optional vendor rate limit.

    ``clock`` is injectable so tests can step time instead of sleeping.
    """

    def __init__(
        self,
        *,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = FaultPlan()
        self.log = RequestLog()
        self.clock = clock
        self.windows: dict[str, RollingWindow] = {}
        if rate_limit is not None:
            self.windows["default"] = RollingWindow(rate_limit)

    def set_rate_limit(self, bucket: str, limit: RateLimit | None) -> None:
        """Enforce (or with ``None`` stop enforcing) a rolling limit on ``bucket``."""
        if limit is None:
            self.windows.pop(bucket, None)
        else:
            self.windows[bucket] = RollingWindow(limit)

    def admit(self, bucket: str = "default") -> RollingWindow | None:
        """Count one call in ``bucket``; return the full window if the call is over the limit."""
        window = self.windows.get(bucket)
        if window is None or window.try_acquire(self.clock()):
            return None
        return window

    def fault_response(self, status: int, request: Request) -> Response:
        """What the vendor answers an injected failure; sandboxes give their own error shape."""
        return JSONResponse({"error": HTTPStatus(status).phrase}, status_code=status)

    def serve(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the fault gate and the reset middleware: what ``app()`` returns."""
        return ResetMiddleware(FaultGate(self, app))

    async def before(self) -> int | None:
        """Consume one call's faults: a status to fail with, or ``None`` to go on.

        Latency is not spent here but on the answer (:meth:`answer_late`); a dropped
        connection still comes after it.
        """
        fault = self.faults.next_fault()
        if fault == "reset":
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            raise ConnectionReset
        return fault if isinstance(fault, int) else None

    def answer_late(self, send: Send) -> Send:
        """``send``, holding the answer back until ``faults.latency`` after the call arrived.

        A vendor's latency is the time its answer takes to come back, its own work included;
        so the sandbox works *during* the latency instead of after it. (Added on top, the
        sandbox's handling time, a millisecond or more on a busy machine, would count as
        vendor latency the client is not responsible for.)
        """
        latency, hold = self.faults.latency, self.faults.hold
        if not latency and hold is None:
            return send
        loop = asyncio.get_running_loop()
        due = loop.time() + latency

        async def late(message: Message) -> None:
            if message["type"] == "http.response.start":
                if hold is not None:
                    await hold.wait()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            await send(message)

        return late


#: Query parameters that can carry personal data or secrets; the log keeps only their names.
REDACTED_QUERY_KEYS = frozenset(
    {
        "email",
        "reviewer_email",
        "search",
        "query",
        "term",
        "consumer_key",
        "consumer_secret",
        "api_key",
        "api_token",
    }
)


def record(
    log: RequestLog,
    request: Request,
    response: Response,
    body: Any = None,
    records: list[Mapping[str, Any]] | None = None,
) -> Response:
    """Add a call to ``log`` with the field names of ``records``; return ``response``."""
    names: set[str] = set()
    for rec in records or []:
        names |= _leaf_names(rec)
    log.add(
        RecordedRequest(
            method=request.method,
            path=request.url.path,
            query={
                key: ("<redacted>" if key in REDACTED_QUERY_KEYS else value)
                for key, value in request.query_params.items()
            },
            status=response.status_code,
            property_names=frozenset(names),
            records=len(records or []),
        )
    )
    return response


def field_tree(paths: Iterable[str]) -> dict[str, Any]:
    """The dotted field paths a client asks an answer be cut to (Mailchimp's ``fields``,
    WordPress's ``_fields``), as a tree: ``{"merge_fields": {"FNAME": True}, "id": True}``.
    An object asked for whole (``True``) wins over its parts, in either order; blank paths
    name nothing. How an answer is cut by the tree is each vendor's own."""
    tree: dict[str, Any] = {}
    for path in paths:
        if not path.strip():
            continue
        *parents, last = path.strip().split(".")
        node = tree
        for key in parents:
            if node.get(key) is True:
                break  # the whole object is asked for already
            node = node.setdefault(key, {})
        else:
            node[last] = True
    return tree


def _leaf_names(record: Mapping[str, Any], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            names |= _leaf_names(value, f"{name}.")
        else:
            names.add(name)
    return names


class FaultGate:
    """Applies a sandbox's injected faults before a request reaches its routes.

    It sits outside Starlette on purpose: Starlette's error middleware answers any exception
    from a route with a 500 before re-raising it, so a :class:`ConnectionReset` raised inside
    a handler would reach the client as a 500 instead of a dropped connection.
    """

    def __init__(self, sandbox: SandboxBase, app: ASGIApp) -> None:
        self.sandbox = sandbox
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = self.sandbox.answer_late(send)
            fault = await self.sandbox.before()  # raises ConnectionReset for a dropped call
            if fault is not None:
                request = Request(scope, receive)
                response = self.sandbox.fault_response(fault, request)
                record(self.sandbox.log, request, response)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ResetMiddleware:
    """Turns :class:`ConnectionReset` into a dropped connection.

    Under uvicorn an exception before the response starts closes the socket, which the client
    sees as a transport error. In-process (``httpx.ASGITransport``) it surfaces as an
    exception from the transport, which :mod:`connector.http` classifies the same way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ConnectionReset:
            if scope["type"] != "http":
                raise
            import httpx

            # Start a response, then fail: uvicorn then drops the socket mid-response (the
            # client sees a protocol error), and ASGITransport re-raises the transport error.
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            raise httpx.ReadError("connection reset by sandbox") from None


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServedApp:
    """A sandbox listening on loopback: its https base URL."""

    name: str
    url: str
    port: int


@contextmanager
def serve_tls(
    apps: Mapping[str, ASGIApp],
    cert_dir: Path,
    *,
    cert: ServerCert | None = None,
    ca: DevCA | None = None,
    ports: Mapping[str, int] | None = None,
) -> Iterator[tuple[DevCA | None, dict[str, ServedApp]]]:
    """Serve each app over HTTPS on its own loopback port, in a background thread.

    Yields the CA (whose ``ca_path`` clients should trust) and each app's URL. A given
    ``cert`` (e.g. an expired one, for tests) replaces the freshly issued one. ``ports``
    pins an app to a port (the ``sandbox`` command, so the example config can name it).
    """
    import uvicorn

    from connector.httpapp import bind_listener
    from connector.loop import new_event_loop

    if cert is None:
        ca = ca or DevCA(cert_dir)
        cert = ca.issue("sandbox")
    servers: list[uvicorn.Server] = []
    served: dict[str, ServedApp] = {}
    # Bound here, before anything starts: a port in use (a sandbox left running) is a clear
    # error at once, not uvicorn's tracebacks from its thread after a 20 s wait.
    sockets: list[socket.socket] = []
    try:
        for name in apps:
            port = (ports or {}).get(name) or 0
            sockets.append(bind_listener("sandbox", f"{name} port", "127.0.0.1", port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    for (name, app), sock in zip(apps.items(), sockets, strict=True):
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert.cert_path),
            ssl_keyfile=str(cert.key_path),
            log_level="warning",
            access_log=False,
            lifespan="off",
            log_config=None,  # as the daemon's listeners: logs go through connector/logs.py
        )
        servers.append(uvicorn.Server(config))
        served[name] = ServedApp(name, f"https://127.0.0.1:{port}", port)

    loop = new_event_loop()
    started = threading.Event()

    failed: list[BaseException] = []

    async def run_all() -> None:
        tasks = [
            asyncio.ensure_future(server.serve(sockets=[sock]))
            for server, sock in zip(servers, sockets, strict=True)
        ]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break  # one stopped before it started: said below, not waited out
            await asyncio.sleep(0.01)
        started.set()
        await asyncio.gather(*tasks)

    def runner() -> None:
        for server in servers:
            # uvicorn installs signal handlers only on the main thread; make that explicit.
            server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        try:
            loop.run_until_complete(run_all())
        except BaseException as exc:  # reported by the caller's thread
            failed.append(exc)
            started.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            for sock in sockets:
                sock.close()

    thread = threading.Thread(target=runner, name="klantsync-sandboxes", daemon=True)
    thread.start()
    if not started.wait(timeout=20) or not all(server.started for server in servers):
        for server in servers:
            server.should_exit = True
        thread.join(timeout=10)
        reason = f": {type(failed[0]).__name__}" if failed else ""
        raise RuntimeError(f"sandboxes did not start{reason}")
    try:
        yield ca, served
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=10)


SandboxHandler = Callable[[Request], Awaitable[Response]]
