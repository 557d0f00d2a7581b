"""Webhook benchmarks (issue 4): acknowledgement rate and latency, change propagation.

Usage::

    python -m benchmarks.bench_webhooks                  # 3,000 deliveries, 100 changes
    python -m benchmarks.bench_webhooks --deliveries 500 --changes 20

The sandboxes run in this process over loopback TLS; the daemon is a real ``klantsync run``
child process, as in production. Two measurements:

1. **Propagation** (idle daemon): a customer changes in the shop and a signed
   ``customer.updated`` delivery is posted; the time until the HubSpot sandbox holds the new
   value is measured per change (changes paced at ``--change-rate`` per second, well inside
   HubSpot's 19 requests/s, as the issue says "when the CRM's rate limit allows").
   Target: p95 under 2 s.
2. **Acknowledgement** (flood): ``--deliveries`` signed deliveries, one per customer, posted
   over ``--concurrency`` keep-alive connections (8 by default; a shop's webhook queue sends
   over a handful). Rate and latency percentiles of the 200 answers.
   Target: at least 500 deliveries/s with p99 under 50 ms. In a closed loop the latency
   grows with the number of connections (each waits for those ahead of it): at 32 the rate
   stays ~700/s and p50 becomes ~40 ms.

The exit status is 1 if a target is missed.

Measured on the 2-core machine this project runs on: 1,075 deliveries/s, p50 7 ms, p99 15 ms;
changes reach the HubSpot sandbox in 10 ms at p50 and under 0.5 s at p95.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from benchmarks.children import dies_with_parent
from connector.demo import write_config
from connector.loop import run as run_loop
from connector.ratelimit import RateLimit
from connector.runtime import open_runtime
from connector.sandboxkit import free_port, serve_tls

__all__ = ["main"]

SECRET = "bench-webhook-secret"


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def _world(directory: Path, customers: int) -> Iterator[dict[str, Any]]:
    shop = WooCommerceSandbox()
    shop.seed_synthetic(customers, seed=5)
    crm = HubSpotSandbox(rate_limit=RateLimit(190, 10))
    shop.log.keep = crm.log.keep = False
    with serve_tls({"shop": shop.app(), "crm": crm.app()}, directory / "tls") as (ca, apps):
        assert ca is not None
        config = write_config(
            directory,
            {name: app.url for name, app in apps.items()},
            ca.ca_path,
            {"shop": shop.credentials(), "crm": crm.credentials()},
        )
        (directory / "secrets" / "hook").write_text(SECRET)
        port = free_port()
        text = config.read_text().replace(
            "[systems.crm]",
            '[systems.shop.webhooks]\nsecret = "file:secrets/hook"\n\n[systems.crm]',
        )
        text += (
            f'\n[daemon]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{free_port()}"\n'
            '\n[logging]\nlevel = "WARNING"\nformat = "json"\n'
        )
        config.write_text(text)
        yield {"shop": shop, "crm": crm, "config": config, "url": f"http://127.0.0.1:{port}"}


def _start_daemon(config: Path, url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        dies_with_parent([sys.executable, "-m", "connector", "-c", str(config), "run"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("daemon did not become healthy within 30 s")


async def _propagation(world: dict[str, Any], changes: int, rate: float) -> list[float]:
    shop: WooCommerceSandbox = world["shop"]
    crm: HubSpotSandbox = world["crm"]
    sent: dict[str, tuple[str, float]] = {}
    arrived: list[float] = []
    async with httpx.AsyncClient(base_url=world["url"]) as client:

        async def watch() -> None:
            while sent or len(arrived) < changes:
                for email, (name, at) in list(sent.items()):
                    record = crm.record_for(email)
                    if record and record["properties"].get("firstname") == name:
                        arrived.append(time.monotonic() - at)
                        del sent[email]
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        for index in range(changes):
            customer = shop.store.get(index + 1)
            assert customer is not None
            name = f"Bench{index}"
            shop.touch(customer["email"], first_name=name)
            body = json.dumps(shop.record_for(customer["email"])).encode()
            sent[customer["email"]] = (name, time.monotonic())
            response = await client.post(
                "/webhooks/shop", content=body, headers=shop.sign_webhook(body, SECRET)
            )
            assert response.status_code == 200
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(watcher, timeout=120)
    return arrived


async def _flood(
    world: dict[str, Any], deliveries: int, concurrency: int
) -> tuple[float, list[float]]:
    shop: WooCommerceSandbox = world["shop"]
    # One delivery per customer, as a bulk import in the shop would send them. Requests are
    # built up front and written as raw HTTP/1.1 on keep-alive connections: a full client
    # library costs the load generator more CPU per request than the daemon spends on it.
    host, _, port = world["url"].removeprefix("http://").partition(":")
    wire: asyncio.Queue[bytes] = asyncio.Queue()
    for index in range(deliveries):
        customer = shop.store.get(index + 1)
        assert customer is not None
        body = json.dumps(customer).encode()
        headers = shop.sign_webhook(body, SECRET)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        wire.put_nowait(
            (
                f"POST /webhooks/shop HTTP/1.1\r\nHost: {host}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not wire.empty():
                request = wire.get_nowait()
                started = time.monotonic()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.monotonic() - started)
                assert b" 200 " in status_line, status_line
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.monotonic() - started, latencies


def main(
    deliveries: int = 3000,
    changes: int = 100,
    concurrency: int = 8,
    change_rate: float = 10.0,
    directory: Path | None = None,
) -> dict[str, float]:
    """Run both measurements; return the figures (also printed)."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        world = stack.enter_context(_world(directory, customers=max(changes, deliveries)))

        async def first_sync() -> None:
            async with open_runtime(world["config"]) as rt:
                await rt.engine.sync()

        run_loop(first_sync())
        daemon = _start_daemon(world["config"], world["url"])
        try:
            arrivals = run_loop(_propagation(world, changes, change_rate))
            wall, acks = run_loop(_flood(world, deliveries, concurrency))
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    figures = {
        "deliveries": float(deliveries),
        "ack_per_second": deliveries / wall if wall else 0.0,
        "ack_p50_ms": 1000 * statistics.median(acks) if acks else 0.0,
        "ack_p99_ms": 1000 * _percentile(acks, 0.99),
        "changes": float(len(arrivals)),
        "propagation_p50_s": statistics.median(arrivals) if arrivals else 0.0,
        "propagation_p95_s": _percentile(arrivals, 0.95),
    }
    checks = [
        (
            "acknowledged deliveries/s",
            figures["ack_per_second"],
            ">= 500",
            figures["ack_per_second"] >= 500,
        ),
        ("acknowledgement p99 (ms)", figures["ack_p99_ms"], "< 50", figures["ack_p99_ms"] < 50),
        (
            "change reaches HubSpot p95 (s)",
            figures["propagation_p95_s"],
            "< 2",
            figures["propagation_p95_s"] < 2,
        ),
    ]
    print(f"webhooks: {deliveries} deliveries at concurrency {concurrency}; {changes} changes")
    for name, value, target, ok in checks:
        print(f"  {name:<32} {value:>10.2f}   target {target:<6} {'PASS' if ok else 'FAIL'}")
    print(f"  acknowledgement p50 (ms)         {figures['ack_p50_ms']:>10.2f}")
    print(f"  propagation p50 (s)              {figures['propagation_p50_s']:>10.2f}")
    figures["ok"] = float(all(ok for _name, _value, _target, ok in checks))
    return figures


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_webhooks")
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--change-rate", type=float, default=10.0)
    args = parser.parse_args(argv)
    figures = main(args.deliveries, args.changes, args.concurrency, args.change_rate)
    # As every benchmark: a missed target is a failed run, for whoever runs it by script.
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(_cli())
