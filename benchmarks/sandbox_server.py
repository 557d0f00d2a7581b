"""The far end of the benchmarks: both sandboxes over loopback TLS, in a process of their own.

Run as ``python -m benchmarks.sandbox_server --customers N --ready-file F``. It seeds the
WooCommerce sandbox with ``N`` synthetic customers (built lazily, so a million cost little),
starts the HubSpot sandbox with the given burst limit and latency, serves both with
:func:`connector.sandboxkit.serve_tls`, and writes what a connector needs to reach them (URLs,
CA path, credentials) as JSON to the ready file. It runs until SIGTERM or SIGINT.

The sandboxes run apart from the connector so that the connector's CPU time and memory are its
own: on one machine the sandboxes would otherwise share (and blur) every figure.

One route is added in front of the HubSpot app, for the benchmark only: ``GET /__bench/stats``
answers what the far end saw (live contacts, 429s, and one row per ``batch/upsert`` call:
arrival time, finish time, status, live contacts after). Times are ``time.monotonic()``, which
on Linux is one clock for every process, so the measuring process can line them up with its own.
The adapters' sandboxes are not changed for this; the wrapper only reads them.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.ratelimit import RateLimit
from connector.sandboxkit import serve_tls

__all__ = ["STATS_PATH", "StatsApp", "main", "parse_limit"]

STATS_PATH = "/__bench/stats"
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"


class StatsApp:
    """ASGI wrapper: records every ``batch/upsert`` call and serves :data:`STATS_PATH`."""

    def __init__(self, sandbox: HubSpotSandbox, app: ASGIApp) -> None:
        self.sandbox = sandbox
        self.app = app
        #: (arrived, finished, status, live contacts after), one row per batch/upsert call.
        self.upserts: list[tuple[float, float, int, int]] = []
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == STATS_PATH:
            await self._stats(send)
            return
        self.requests += 1
        if path != UPSERT_PATH:
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            count = self.sandbox.contact_count()
            self.upserts.append((arrived, time.monotonic(), status, count))

    async def _stats(self, send: Send) -> None:
        body = json.dumps(
            {
                "contacts": self.sandbox.contact_count(),
                "rejected_429": self.sandbox.rejected_429,
                "requests": self.requests,
                "upserts": self.upserts,
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def parse_limit(text: str) -> RateLimit | None:
    """``"190/10"`` -> 190 requests per 10 s; ``"none"`` or ``"0"`` -> unlimited."""
    if text.strip().lower() in ("none", "0", "off", ""):
        return None
    requests, _, seconds = text.partition("/")
    return RateLimit(int(requests), float(seconds or 10))


def build(
    customers: int, *, latency: float, shop_latency: float, hubspot_limit: RateLimit | None
) -> tuple[WooCommerceSandbox, HubSpotSandbox, StatsApp]:
    """The two sandboxes, seeded and configured, and the stats wrapper around HubSpot."""
    shop = WooCommerceSandbox()
    shop.seed_synthetic(customers, seed=7)
    crm = HubSpotSandbox(rate_limit=hubspot_limit, search_rate_limit=None)
    crm.faults.latency = latency
    shop.faults.latency = shop_latency
    # The request logs keep one entry per call; over a million customers that is only cost.
    shop.log.keep = False
    crm.log.keep = False
    return shop, crm, StatsApp(crm, crm.app())


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox_server")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.05, help="HubSpot latency, seconds")
    parser.add_argument("--shop-latency", type=float, default=0.0, help="WooCommerce latency")
    parser.add_argument("--hubspot-limit", default="190/10", help='"190/10" or "none"')
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--dir", type=Path, default=None, help="for the TLS files")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    shop, crm, stats = build(
        args.customers,
        latency=args.latency,
        shop_latency=args.shop_latency,
        hubspot_limit=parse_limit(args.hubspot_limit),
    )
    with tempfile.TemporaryDirectory(prefix="klantsync-bench-tls-") as tmp:
        cert_dir = args.dir or Path(tmp)
        with serve_tls({"shop": shop.app(), "crm": stats}, cert_dir) as (ca, served):
            assert ca is not None
            info: dict[str, Any] = {
                "urls": {name: app.url for name, app in served.items()},
                "ca_path": str(ca.ca_path),
                "credentials": {"shop": shop.credentials(), "crm": crm.credentials()},
                "customers": args.customers,
            }
            # Written whole, then renamed: the reader never sees half a file.
            partial = args.ready_file.with_suffix(".partial")
            partial.write_text(json.dumps(info))
            partial.rename(args.ready_file)
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
