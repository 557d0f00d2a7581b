"""Soak benchmark: does ``klantsync run`` stay bounded over many scheduled syncs?

Usage::

    python -m benchmarks.bench_soak                    # 2,000 customers, 150 cycles (~4 min)
    python -m benchmarks.bench_soak --cycles 40        # shorter
    python -m benchmarks.bench_soak --minutes 30       # as many cycles as 30 minutes hold

Ops run the daemon for months; a few kilobytes kept per sync, a file descriptor or a thread
left behind per job, or a write-ahead log never restarted add up over the 35,000 runs a
year of a flow "every 15m". This runs the real daemon (``python -m connector -c CONFIG
run``, a child process) against the demo's four sandboxes (WooCommerce, HubSpot, Mailchimp,
Pipedrive over loopback TLS, served from this process as ``klantsync demo`` serves them),
its flow scheduled every ``--interval`` seconds, and drives it as a shop and its operators
would. Each cycle:

1. changes ``--changes`` customers in the shop (a new first name each);
2. waits until HubSpot holds every change and the run that carried them has finished (the
   daemon's log says ``flow run finished``; no sleeping beyond short polls);
3. every ``--dsr-every`` cycles files a data subject request through the admin API,
   erasure and access in turn, and waits for its job; every ``--resync-every`` cycles asks
   for a resync of the shop through the admin API, as ops do by hand; every cycle reads
   ``/metrics``, ``/readyz`` and ``GET /admin/status`` as a scraper, a probe and a dashboard
   would;
4. samples the daemon process (psutil): resident memory, open file descriptors, threads,
   and the sizes of the store file and its ``-wal``.

Judged, from warm-up (the sample after the first tenth of the cycles: caches, the
collector's generations, the executor's threads and SQLite's page cache filled) to the end:
resident memory grows by at most 5%; file descriptors and threads grow by at most a small
constant (:data:`FD_SLACK`, :data:`THREAD_SLACK`); the write-ahead log never passes the
store's own autocheckpoint size (``store_base.AUTOCHECKPOINT_PAGES`` pages, ~40 MB; see
:func:`wal_bound`); no run failed, every change reached HubSpot and every request was done.
The store file itself grows with what it must keep (runs, finished jobs, audit entries, the
requests), which the retention sweep purges after their days: reported, not judged.

Only counts and sizes are printed: never an address, a name or a secret. The exit status is
1 when a figure misses its target, as for every benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.bench_sync import Figure, print_table
from benchmarks.children import dies_with_parent

__all__ = ["Sample", "main", "run", "wal_bound"]

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = "soak"
#: Every system the demo's config knows; the flow reads the shop and writes to the others.
SYSTEMS = ("shop", "crm", "news", "deals")
#: Resident memory may grow this much from warm-up to the end.
RSS_GROWTH = 0.05
#: Open file descriptors and threads may end this many above warm-up (a connection to a
#: vendor opened or closed at the moment of the sample, a worker thread still winding down).
FD_SLACK = 4
THREAD_SLACK = 2
#: The share of the cycles run before the warm-up sample.
WARM_UP = 0.10
MB = 1024 * 1024


@dataclass
class Sample:
    """The daemon process after one cycle."""

    cycle: int
    syncs: int
    rss: int
    fds: int
    threads: int
    store: int
    wal: int

    def as_dict(self) -> dict[str, Any]:
        return vars(self).copy()


def wal_bound(store: Path) -> int:
    """The write-ahead log's bound in bytes: ``AUTOCHECKPOINT_PAGES`` of the store's pages.

    That is the size at which a commit checkpoints the log itself where nothing else does
    (``PRAGMA wal_autocheckpoint``, ~40 MB at 4 KiB pages). The daemon checkpoints on a thread
    of its own and raises the store's own line to ``BACKGROUND_BOUND_PAGES`` as a fallback
    only; a log past the lower line means that thread fell behind or a reader held the log
    (checkpoints then cannot restart it, and it grows by every commit): unbounded growth in
    a daemon that runs for months.
    """
    import sqlite3

    from connector.store_base import AUTOCHECKPOINT_PAGES

    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    return int(page_size) * AUTOCHECKPOINT_PAGES


# -- the daemon --------------------------------------------------------------------------------


@dataclass
class _Log:
    """What the daemon's JSON log said, counted by a reader thread."""

    runs: int = 0
    failed_runs: int = 0
    errors: int = 0
    warnings: int = 0
    #: Each warning's event, with how often it was logged: a count alone does not say
    #: whether the soak warned of what it does on purpose (refusals, outages) or of more.
    #: Events are fixed texts; the log holds no personal data.
    warned: Counter[str] = field(default_factory=Counter)
    cond: threading.Condition = field(default_factory=threading.Condition)


class DaemonProcess:
    """``python -m connector -c CONFIG run`` as a child process; its log read as it comes."""

    def __init__(self, config: Path, flow: str) -> None:
        self.flow = flow
        self.log = _Log()
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            dies_with_parent([sys.executable, "-m", "connector", "-c", str(config), "run"]),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.process = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            with self.log.cond:
                level = str(entry.get("level", "")).upper()
                if level in ("ERROR", "CRITICAL"):
                    self.log.errors += 1
                elif level == "WARNING":
                    self.log.warnings += 1
                    self.log.warned[str(entry.get("event", ""))] += 1
                if entry.get("event") == "flow run finished" and entry.get("flow") == self.flow:
                    self.log.runs += 1
                    self.log.failed_runs += int(bool(entry.get("failed")))
                self.log.cond.notify_all()

    @property
    def runs(self) -> int:
        with self.log.cond:
            return self.log.runs

    def wait_runs(self, count: int, timeout: float) -> bool:
        """Wait (on the log, not sleeping) until ``count`` runs of the flow finished."""
        deadline = time.monotonic() + timeout
        with self.log.cond:
            while self.log.runs < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return False
                self.log.cond.wait(min(remaining, 0.5))
            return True

    def sample(self, cycle: int, store: Path) -> Sample:
        wal = store.with_name(store.name + "-wal")
        with self.process.oneshot():
            rss = self.process.memory_info().rss
            fds = self.process.num_fds()
            threads = self.process.num_threads()
        return Sample(
            cycle=cycle,
            syncs=self.runs,
            rss=rss,
            fds=fds,
            threads=threads,
            store=_size(store),
            wal=_size(wal),
        )

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


class WalWatch:
    """The largest size the store's ``-wal`` reached, looked at every ``interval`` seconds on
    a thread of its own: a log that swells within a run and is restarted before the cycle's
    sample is still seen (the first run's, too)."""

    def __init__(self, store: Path, interval: float = 0.1) -> None:
        self.path = store.with_name(store.name + "-wal")
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, _size(self.path))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> int:
        """Stop looking; the peak."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _size(self.path))
        return self.peak


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- the world ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _world(
    directory: Path, customers: int, names: Sequence[str], interval: int
) -> Iterator[dict[str, Any]]:
    """The sandboxes over loopback TLS and a config for them with a daemon section."""
    from connector.demo import sandboxes, write_config
    from connector.sandboxkit import free_port

    with sandboxes(directory, customers, names=tuple(names)) as (boxes, ca_path, urls):
        for box in boxes.values():
            # One log entry per call is only cost over thousands of cycles (and this
            # process's memory is not what is measured, but its growth slows the sandboxes).
            box.log.keep = False
        config = write_config(
            directory, urls, ca_path, {name: box.credentials() for name, box in boxes.items()}
        )
        token = secrets.token_urlsafe(24)
        (directory / "secrets" / "admin").write_text(token + "\n")
        listen, admin = free_port(), free_port()
        text = config.read_text()
        assert 'schedule = "every 15m"' in text, "write_config changed its schedule line"
        text = text.replace('schedule = "every 15m"', f'schedule = "every {interval}s"')
        text += (
            f'\n[daemon]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n'
            'admin_token = "file:secrets/admin"\n\n[logging]\nlevel = "INFO"\nformat = "json"\n'
        )
        config.write_text(text)
        flow = "shop-to-crm" if list(names) == ["shop", "crm"] else "shop-to-all"
        yield {
            "boxes": boxes,
            "config": config,
            "store": directory / "klantsync.db",
            "flow": flow,
            "public": f"http://127.0.0.1:{listen}",
            "admin": f"http://127.0.0.1:{admin}",
            "token": token,
        }


def _wait_healthy(daemon: DaemonProcess, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with status {daemon.proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"daemon not healthy within {timeout:.0f} s")


def _wait_job(client: httpx.Client, job_id: int, timeout: float) -> str:
    """Poll ``GET /admin/jobs/ID`` until the job is no longer queued or running; its status."""
    deadline = time.monotonic() + timeout
    status = "queued"
    while time.monotonic() < deadline:
        response = client.get(f"/admin/jobs/{job_id}")
        response.raise_for_status()
        status = str(response.json()["status"])
        if status not in ("queued", "running"):
            return status
        time.sleep(0.05)
    return status


def _holds(crm: Any, email: str, first_name: str) -> bool:
    record = crm.record_for(email)
    return bool(record) and record["properties"].get("firstname") == first_name


# -- the soak ----------------------------------------------------------------------------------


@dataclass
class _Tally:
    changes_sent: int = 0
    changes_arrived: int = 0
    requests_asked: int = 0
    requests_done: int = 0
    resyncs_asked: int = 0
    resyncs_done: int = 0
    scrapes_failed: int = 0


@dataclass
class Soaked:
    """What a soak sampled and counted."""

    samples: list[Sample]
    tally: _Tally
    log: _Log
    #: The daemon's exit status once stopped with SIGTERM.
    status: int
    #: :func:`wal_bound` of its store.
    wal_limit: int
    #: The largest ``-wal`` seen, the first run included (:class:`WalWatch`).
    wal_peak: int


def soak(
    *,
    customers: int = 2_000,
    cycles: int | None = 150,
    minutes: float | None = None,
    changes: int = 5,
    interval: int = 1,
    dsr_every: int = 10,
    resync_every: int = 25,
    systems: Sequence[str] = SYSTEMS,
    directory: Path | None = None,
    say: Any = None,
) -> Soaked:
    """Run the daemon through the cycles; what was sampled and counted."""
    say = say or (lambda _text: None)
    if cycles is None and minutes is None:
        raise ValueError("give cycles, minutes or both")
    # The changed customers come from the front of the shop, the erased ones from its back
    # and the ones asking for a copy from its middle: no cycle touches someone erased.
    touchable = max(changes, customers // 2)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ks-soak-")))
        world = stack.enter_context(_world(directory, customers, systems, interval))
        shop, crm = world["boxes"]["shop"], world["boxes"]["crm"]
        say(f"{customers} customers in {', '.join(systems)}; flow every {interval} s")
        began = time.monotonic()
        wal = WalWatch(world["store"])
        daemon = DaemonProcess(world["config"], world["flow"])
        try:
            _wait_healthy(daemon, world["public"])
            # The first run sends every customer everywhere: not a cycle, but the start.
            if not daemon.wait_runs(1, timeout=600):
                raise RuntimeError("the daemon's first run did not finish")
            say(f"first run finished ({time.monotonic() - began:.0f} s from the start); cycling")
            admin = stack.enter_context(
                httpx.Client(
                    base_url=world["admin"],
                    headers={"Authorization": f"Bearer {world['token']}"},
                    timeout=30,
                )
            )
            public = stack.enter_context(httpx.Client(base_url=world["public"], timeout=30))
            tally = _Tally()
            samples: list[Sample] = []
            started = time.monotonic()
            erased = 0
            asked_copy = 0
            cycle = 0
            while True:
                if cycles is not None and cycle >= cycles:
                    break
                if minutes is not None and time.monotonic() - started >= minutes * 60:
                    break
                cycle += 1
                # 1. a handful of customers change in the shop
                wanted: list[tuple[str, str]] = []
                for k in range(changes):
                    customer = shop.store.get(1 + ((cycle * changes + k) % touchable))
                    if customer is None:
                        continue
                    name = f"Soak{cycle}x{k}"
                    shop.touch(customer["email"], first_name=name)
                    wanted.append((customer["email"], name))
                tally.changes_sent += len(wanted)
                # 2. ... reach HubSpot, and the run carrying them ends
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not all(
                    _holds(crm, email, name) for email, name in wanted
                ):
                    if daemon.proc.poll() is not None:
                        raise RuntimeError(f"daemon exited with status {daemon.proc.returncode}")
                    time.sleep(0.02)
                tally.changes_arrived += sum(_holds(crm, email, name) for email, name in wanted)
                daemon.wait_runs(daemon.runs + 1, timeout=120)
                # 3. what ops and their tools do meanwhile
                if dsr_every and cycle % dsr_every == 0:
                    if (cycle // dsr_every) % 2:
                        erased += 1
                        customer_id, kind = customers + 1 - erased, "erase"
                    else:
                        asked_copy += 1
                        customer_id, kind = touchable + asked_copy, "access"
                    customer = shop.store.get(customer_id)
                    if customer is not None:
                        tally.requests_asked += 1
                        response = admin.post(
                            "/admin/dsr", json={"kind": kind, "email": customer["email"]}
                        )
                        if response.status_code == 202:
                            job = _wait_job(admin, int(response.json()["job_id"]), 120)
                            tally.requests_done += job == "done"
                if resync_every and cycle % resync_every == 0:
                    tally.resyncs_asked += 1
                    response = admin.post("/admin/resync", json={"system": "shop"})
                    if response.status_code == 202:
                        job = _wait_job(admin, int(response.json()["job_id"]), 120)
                        tally.resyncs_done += job == "done"
                # A scrape must answer; the probe only be answered (a run that took longer
                # than two intervals, as runs every second may, is "not ready" for a moment).
                for path, fine in (("/metrics", (200,)), ("/readyz", (200, 503))):
                    try:
                        answered = public.get(path).status_code
                    except httpx.HTTPError:
                        answered = 0
                    tally.scrapes_failed += answered not in fine
                # ... and the operator's dashboard, read off the loop on a worker thread
                try:
                    tally.scrapes_failed += admin.get("/admin/status").status_code != 200
                except httpx.HTTPError:
                    tally.scrapes_failed += 1
                # 4. the daemon's process, as it stands
                samples.append(daemon.sample(cycle, world["store"]))
                if cycle % 10 == 0:
                    last = samples[-1]
                    say(
                        f"cycle {cycle} at {time.monotonic() - started:.0f} s: "
                        f"{last.syncs} syncs, RSS {last.rss / MB:.1f} MB, "
                        f"{last.fds} fds, {last.threads} threads, WAL {last.wal / MB:.2f} MB"
                    )
        finally:
            status = daemon.stop()
            wal_peak = wal.stop()
        return Soaked(samples, tally, daemon.log, status, wal_bound(world["store"]), wal_peak)


def judge(soaked: Soaked) -> list[Figure]:
    """The figures, each beside its target."""
    samples, tally, log, wal_limit = soaked.samples, soaked.tally, soaked.log, soaked.wal_limit
    if not samples:
        return [Figure(BENCHMARK, "cycles run", 0, "", ">= 1", False)]
    cycles = samples[-1].cycle
    warm = next(s for s in samples if s.cycle >= max(1, math.ceil(cycles * WARM_UP)))
    end = samples[-1]
    syncs_after = max(1, end.syncs - warm.syncs)
    growth = (end.rss - warm.rss) / warm.rss
    wal_peak = max(soaked.wal_peak, *(s.wal for s in samples))
    return [
        Figure(BENCHMARK, "cycles run", cycles, ""),
        Figure(BENCHMARK, "syncs completed", end.syncs, "", f">= {cycles}", end.syncs >= cycles),
        Figure(BENCHMARK, "failed runs", log.failed_runs, "", "0", log.failed_runs == 0),
        Figure(
            BENCHMARK,
            f"changes reaching HubSpot (of {tally.changes_sent:,})",
            tally.changes_arrived,
            "",
            "all",
            tally.changes_arrived == tally.changes_sent,
        ),
        Figure(
            BENCHMARK,
            f"requests done (of {tally.requests_asked:,}, admin API)",
            tally.requests_done,
            "",
            "all",
            tally.requests_done == tally.requests_asked,
        ),
        Figure(
            BENCHMARK,
            f"resyncs done (of {tally.resyncs_asked:,}, admin API)",
            tally.resyncs_done,
            "",
            "all",
            tally.resyncs_done == tally.resyncs_asked,
        ),
        Figure(
            BENCHMARK,
            "scrapes, probes and status reads failed",
            tally.scrapes_failed,
            "",
            "0",
            tally.scrapes_failed == 0,
        ),
        Figure(BENCHMARK, "errors logged", log.errors, "", "0", log.errors == 0),
        Figure(BENCHMARK, "warnings logged", log.warnings, ""),
        *(Figure(BENCHMARK, f"  {event}", n, "") for event, n in log.warned.most_common()),
        Figure(BENCHMARK, "daemon's exit status", soaked.status, "", "0", soaked.status == 0),
        Figure(BENCHMARK, f"RSS at warm-up (cycle {warm.cycle})", warm.rss / MB, "MB"),
        Figure(BENCHMARK, "RSS at the end", end.rss / MB, "MB"),
        Figure(
            BENCHMARK,
            "RSS growth after warm-up",
            100 * growth,
            "%",
            f"<= {100 * RSS_GROWTH:.0f}%",
            growth <= RSS_GROWTH,
        ),
        Figure(
            BENCHMARK,
            "RSS growth per 100 syncs",
            100 * (end.rss - warm.rss) / syncs_after / MB,
            "MB",
        ),
        Figure(BENCHMARK, "open fds at warm-up", warm.fds, ""),
        Figure(
            BENCHMARK,
            "open fds at the end",
            end.fds,
            "",
            f"<= {warm.fds + FD_SLACK}",
            end.fds <= warm.fds + FD_SLACK,
        ),
        Figure(BENCHMARK, "threads at warm-up", warm.threads, ""),
        Figure(
            BENCHMARK,
            "threads at the end",
            end.threads,
            "",
            f"<= {warm.threads + THREAD_SLACK}",
            end.threads <= warm.threads + THREAD_SLACK,
        ),
        Figure(
            BENCHMARK,
            "WAL peak",
            wal_peak / MB,
            "MB",
            f"<= {wal_limit / MB:.0f} MB",
            wal_peak <= wal_limit,
        ),
        Figure(BENCHMARK, "WAL at the end", end.wal / MB, "MB"),
        Figure(BENCHMARK, "store at warm-up", warm.store / MB, "MB"),
        Figure(BENCHMARK, "store at the end", end.store / MB, "MB"),
        Figure(
            BENCHMARK,
            "store growth per 100 syncs",
            100 * (end.store - warm.store) / syncs_after / 1024,
            "KiB",
        ),
    ]


# -- command line ------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def run(argv: Sequence[str] | None = None) -> list[Figure]:
    """Parse ``argv``, run the soak, print the table; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_soak")
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument(
        "--cycles", type=int, default=None, help="cycles to run (default 150 without --minutes)"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="run for this long (with --cycles: the first)"
    )
    parser.add_argument("--changes", type=int, default=5, help="customers changed a cycle")
    parser.add_argument("--interval", type=int, default=1, help="the flow's schedule, seconds")
    parser.add_argument("--dsr-every", type=int, default=10, help="cycles between requests")
    parser.add_argument("--resync-every", type=int, default=25, help="cycles between resyncs")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help='the sandboxes, the shop first: "shop,crm,news,deals" or "shop,crm"',
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store and config")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    if not names or names[0] != "shop" or "crm" not in names or not set(names) <= set(SYSTEMS):
        parser.error('--systems: the shop first, HubSpot ("crm") among them, of ' + str(SYSTEMS))
    cycles = args.cycles if args.cycles is not None or args.minutes is not None else 150
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        if (args.workdir / "klantsync.db").exists():
            parser.error("--workdir holds a store already: its key does not fit new sandboxes")
    soaked = soak(
        customers=args.customers,
        cycles=cycles,
        minutes=args.minutes,
        changes=args.changes,
        interval=args.interval,
        dsr_every=args.dsr_every,
        resync_every=args.resync_every,
        systems=names,
        directory=args.workdir.resolve() if args.workdir else None,
        say=None if args.quiet else _say,
    )
    figures = judge(soaked)
    if args.workdir is not None:
        # Every cycle's sample, for a closer look at a trend (sizes and counts only).
        (args.workdir / "soak-samples.json").write_text(
            json.dumps([sample.as_dict() for sample in soaked.samples], indent=1)
        )
    if args.json:
        print(json.dumps([f.as_dict() for f in figures], indent=2))
    else:
        print_table(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; exit status 1 if any figure missed its target."""
    # SIGTERM (a CI job's timeout, `kill`) unwinds like Ctrl-C, through the daemon's stop:
    # left to its default it ended this process alone, and the daemon ran on, orphaned.
    signal.signal(signal.SIGTERM, _terminated)
    figures = run(argv)
    return 1 if any(f.passed is False for f in figures) else 0


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
