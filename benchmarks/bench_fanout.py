"""Fan-out benchmark (issue 6): one shop feeding HubSpot, Mailchimp and Pipedrive at once.

Usage::

    python -m benchmarks.bench_fanout                 # 30 s window, 50 ms latency everywhere
    python -m benchmarks.bench_fanout --seconds 10 --customers 20000
    python -m benchmarks.bench_fanout --only news     # Mailchimp alone: the client's own ceiling

The four sandboxes run in a child process over loopback TLS, each with the vendor's own
limit and ``--latency`` per call; the connector runs here, one flow from the shop to the three
destinations, for ``--seconds``, then stops the way SIGTERM stops the daemon. Each
destination's call rate is measured from the client's own request times over the window
(after a warm-up of ``--warmup`` seconds), counting only the calls the vendor accepted (not
those answered 429, nor those that got no answer), as the mean count in a trailing window of
its own limit's length (:func:`rolling_rate`), and compared with that sandbox's ceiling:

- HubSpot: 190 calls per rolling 10 s -> 19 calls/s;
- Pipedrive (Growth): 40 calls per 2 s, and searches 10 per 2 s. A new person costs one
  write: after the first few, lookups are answered by one listing of every person
  (``adapters/pipedrive/directory.py``), not a search each, so the burst window binds: 20
  calls/s (writes, listing pages and the few searches together) is the ceiling measured;
- Mailchimp: no request quota, 10 connections at once -> 10 / latency calls/s.

A destination that runs out of work before the window ends is measured up to its last call
(use enough ``--customers`` that none does: HubSpot alone takes 1,900 a second).

Target: every destination at no less than 90% of its ceiling, at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.rates import rolling_rate

__all__ = ["DESTINATIONS", "WINDOWS", "main", "rolling_rate"]

#: The sandbox names of the three destinations, as :func:`connector.demo.write_config` has them.
DESTINATIONS = ("crm", "news", "deals")


#: Each destination's own limit window in seconds, over which its rate is averaged (see
#: :func:`rolling_rate`). Mailchimp has none (it limits connections): one second.
WINDOWS = {"crm": 10.0, "news": 1.0, "deals": 2.0}


def _build(name: str, customers: int, latency: float) -> Any:
    from adapters.hubspot.sandbox import HubSpotSandbox
    from adapters.mailchimp.sandbox import MailchimpSandbox
    from adapters.pipedrive.sandbox import PipedriveSandbox
    from adapters.woocommerce.sandbox import WooCommerceSandbox
    from connector.ratelimit import RateLimit

    if name == "shop":
        box: Any = WooCommerceSandbox()
        box.seed_synthetic(customers, seed=3)
    elif name == "crm":
        box = HubSpotSandbox(rate_limit=RateLimit(190, 10))
    elif name == "news":
        box = MailchimpSandbox(list_ids=("a1b2c3d4e5",))
    else:
        box = PipedriveSandbox(block_after=None)
    box.log.keep = False
    if name != "shop":
        box.faults.latency = latency
    return box


def _serve(
    name: str, cert: tuple[str, str], customers: int, latency: float, pipe: Connection
) -> None:
    """Child process: one sandbox over TLS until the parent says stop.

    One process per sandbox, so that the busiest (Mailchimp, hundreds of calls a second)
    cannot starve the others' answers and blur their figures.
    """
    from connector.devtls import ServerCert
    from connector.sandboxkit import serve_tls

    box = _build(name, customers, latency)
    server_cert = ServerCert(Path(cert[0]), Path(cert[1]))
    with serve_tls({name: box.app()}, Path(cert[0]).parent, cert=server_cert) as (_, served):
        pipe.send({"url": served[name].url, "credentials": box.credentials()})
        pipe.recv()  # the parent is done
        pipe.send(getattr(box, "rejected_429", 0))


async def _run(
    config: Path, seconds: float
) -> tuple[dict[str, list[tuple[float, int | None, float]]], dict[str, Any]]:
    from connector.runtime import open_runtime, settle_heap

    calls: dict[str, list[tuple[float, int | None, float]]] = defaultdict(list)
    async with open_runtime(config) as rt:
        settle_heap()  # as `klantsync sync` and the daemon do
        for system in rt.systems.values():

            def observe(name: str, status: int | None, seconds: float) -> None:
                calls[name].append((time.monotonic(), status, seconds))

            system.client.observer = observe
        task = asyncio.create_task(rt.engine.sync())
        await asyncio.sleep(seconds)
        rt.engine.request_stop()
        (report,) = await task
    return calls, report.as_dict()


def main(
    customers: int = 100_000,
    seconds: float = 30.0,
    warmup: float = 5.0,
    latency: float = 0.05,
    directory: Path | None = None,
    only: Sequence[str] = DESTINATIONS,
) -> dict[str, float]:
    """Run the fan-out for ``seconds``; return each destination's rate and share of ceiling.

    ``only`` runs the flow to those destinations alone (``["news"]``: what one destination
    reaches when the connector does nothing else).
    """
    from connector.demo import write_config
    from connector.devtls import DevCA
    from connector.loop import run as run_loop

    with tempfile.TemporaryDirectory() as tmp:
        work = directory or Path(tmp)
        ca = DevCA(work / "tls")
        cert = ca.issue("sandbox")
        context = multiprocessing.get_context("fork")
        pipes: dict[str, Connection] = {}
        processes = []
        for name in ("shop", *only):
            parent, child = multiprocessing.Pipe()
            process = context.Process(
                target=_serve,
                args=(name, (str(cert.cert_path), str(cert.key_path)), customers, latency, child),
                daemon=True,
            )
            process.start()
            pipes[name], processes = parent, [*processes, process]
        ready = {name: pipe.recv() for name, pipe in pipes.items()}
        config = write_config(
            work,
            {name: info["url"] for name, info in ready.items()},
            ca.ca_path,
            {name: info["credentials"] for name, info in ready.items()},
        )
        started = time.monotonic()
        calls, report = run_loop(_run(config, seconds))
        rejected: dict[str, int] = {}
        for name, pipe in pipes.items():
            pipe.send("stop")
            rejected[name] = pipe.recv()
        for process in processes:
            process.join(timeout=10)
    window_start, window_end = started + warmup, started + seconds

    def rate(system: str) -> float:
        """Calls the vendor accepted per second while the destination still had work, within
        the window: a call answered 429 is not counted in the vendor's window (it did none of
        the work the ceiling allows), and one that got no answer never reached it."""
        times = [
            t
            for t, status, _s in calls.get(system, [])
            if window_start <= t <= window_end and status is not None and status != 429
        ]
        if len(times) < 2:
            return 0.0
        return rolling_rate(times, window_start, times[-1], WINDOWS[system])

    def mean_call_ms(system: str) -> float:
        """How long a call took as the connector saw it (latency + both sides' work + waits)."""
        taken = [s for t, _status, s in calls.get(system, []) if window_start <= t <= window_end]
        return 1000 * sum(taken) / len(taken) if taken else 0.0

    ceilings = {"crm": 19.0, "news": 10 / latency if latency else 0.0, "deals": 20.0}
    figures: dict[str, float] = {
        "crm_calls_per_second": rate("crm"),
        "news_calls_per_second": rate("news"),
        "deals_calls_per_second": rate("deals"),
        "seconds": seconds,
    }
    measured = {
        "crm": figures["crm_calls_per_second"],
        "news": figures["news_calls_per_second"],
        "deals": figures["deals_calls_per_second"],
    }
    print(
        f"fan-out: 1 shop -> HubSpot, Mailchimp, Pipedrive; {latency * 1000:.0f} ms latency; "
        f"window {warmup:.0f}-{seconds:.0f} s"
    )
    all_ok = True
    for name, label in (
        ("crm", "HubSpot calls/s"),
        ("news", "Mailchimp calls/s"),
        ("deals", "Pipedrive calls/s"),
    ):
        if name not in only:
            continue
        figures[f"{name}_mean_call_ms"] = mean_call_ms(name)
        ceiling = ceilings[name]
        share = measured[name] / ceiling if ceiling else 0.0
        figures[f"{name}_share_of_ceiling"] = share
        ok = share >= 0.9
        all_ok = all_ok and ok
        print(
            f"  {label:<22} {measured[name]:8.2f} of {ceiling:7.2f}  = {share:6.1%}  "
            f"target >= 90%  {'PASS' if ok else 'FAIL'}  "
            f"(mean call {figures[f'{name}_mean_call_ms']:.1f} ms)"
        )
    for name in only:
        figures[f"{name}_429"] = float(rejected.get(name, 0))
    print("  429 answers: " + ", ".join(f"{n} {int(figures[f'{n}_429'])}" for n in only))
    figures["pulled"] = float(report["pulled"])
    print(f"  pulled from the shop: {report['pulled']} customers in {seconds:.0f} s")
    figures["ok"] = 1.0 if all_ok else 0.0
    return figures


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_fanout")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=DESTINATIONS,
        default=list(DESTINATIONS),
        help="destinations to run (default: all three at once)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = main(args.customers, args.seconds, args.warmup, args.latency, only=args.only)
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(_cli())
