"""The benchmarks' figures measure what they say: rates as the vendor's limit counts them, the
connector's own memory, the CPUs it was given, and a verdict only where there is one.

None sleeps or is timed: the figure builders get made-up call logs or a fake clock, and the
runs that start the sandboxes use a few hundred customers, as the smoke tests do.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

# HubSpot Professional: 190 calls per rolling 10 s, 100 contacts a batch -> 1,900 contacts/s.
CEILING = 190 * 100 / 10

needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pins processes to CPUs: Linux with two CPUs",
)


def _limited_client_upserts(windows: int, in_flight: int = 4, latency: float = 0.05) -> list:
    """``batch/upsert`` rows (arrived, finished, status, live contacts after) of a client
    that keeps HubSpot's rolling limit exactly: 190 calls, ``in_flight`` at a time, then the
    next call only once the call 190 before it is 10 s old (the sandbox's RollingWindow)."""
    rows = []
    for w in range(windows):
        for i in range(190):
            arrived = w * 10.0 + (i // in_flight) * latency
            rows.append((arrived, arrived + latency, 200, 0))
    rows.sort(key=lambda row: row[1])
    return [(a, f, s, 100 * (n + 1)) for n, (a, f, s, _) in enumerate(rows)]


def test_sustained_rate_never_reads_above_the_hubspot_ceiling_however_short_the_run() -> None:
    """No trailing 10 s holds more than 19,000 contacts under 190 calls per rolling 10 s, so
    no sustained rate can exceed 1,900 contacts/s. A client that spends two windows'
    allowance (one burst at 0 s, the next at 10 s) and ends at ~12.4 s, counted over its
    span, read ~3,064 contacts/s (161%); a 2,000-customer run (one burst) ~40,000/s."""
    from benchmarks.bench_sync import sustained_rate

    two_bursts = _limited_client_upserts(windows=2)
    one_burst = _limited_client_upserts(windows=1)[:20]  # 2,000 customers
    assert sustained_rate(two_bursts, 10.0) <= CEILING * 1.001
    assert sustained_rate(one_burst, 10.0) <= CEILING * 1.001


def test_memory_benchmark_gives_no_figure_when_nothing_reached_hubspot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peak measured while nothing is queued, sealed, sent or acknowledged is not the
    sync's: with HubSpot refusing the connector's token (401, no contact written) every
    customer is still pulled, and the memory run used to report "growth <= 20%: PASS"."""
    import benchmarks.bench_sync as bench

    real = bench.sandbox_server

    @contextlib.contextmanager
    def refused(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        with real(*args, **kwargs) as info:
            credentials = {**info["credentials"], "crm": {"token": "pat-not-this-portal"}}
            yield {**info, "credentials": credentials}

    monkeypatch.setattr(bench, "sandbox_server", refused)
    with pytest.raises(RuntimeError, match="delivered 0 of 30 to HubSpot"):
        bench.run_memory(300, workdir=tmp_path)


def test_memory_figure_is_the_connector_process_own_peak(tmp_path: Path) -> None:
    """On Linux a child started by fork + exec inherits the parent's high-water mark in
    ``ru_maxrss``, so a figure read from it is at least the measuring process's own peak (in
    ``bench_sync all``, the engine's 100k run just before: "growth" read ~0% whatever the
    connector did). Here the measuring process holds 400 MB; the connector's own peak is
    ~70 MB."""
    from benchmarks.bench_sync import run_memory

    ballast = bytearray(400 * 1024 * 1024)
    try:
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert parent_peak_mb >= 400
        figures = run_memory(300, workdir=tmp_path)
    finally:
        del ballast
    peaks = {f.name: f.value for f in figures if f.name.startswith("peak RSS")}
    assert peaks and all(0 < value < 300 for value in peaks.values()), peaks


def _affinities(pid: int) -> dict[int, set[int]]:
    """The CPUs each thread of process ``pid`` may run on."""
    return {
        thread.id: set(os.sched_getaffinity(thread.id)) for thread in psutil.Process(pid).threads()
    }


@needs_two_cpus
def test_own_cpu_keeps_every_sandbox_thread_off_the_connector_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--own-cpu N``: the connector alone on CPU N, the sandbox on the others. Moved after
    it started (``sched_setaffinity(pid, ...)``), only the sandbox's main thread left CPU N;
    the uvicorn thread serving every request kept every CPU."""
    import benchmarks.bench_sync as bench

    cpu = min(os.sched_getaffinity(0))
    seen: dict[int, set[int]] = {}
    real = bench.connector_run

    def watching(info: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.update(_affinities(info["pid"]))
        return real(info, *args, **kwargs)

    monkeypatch.setattr(bench, "connector_run", watching)
    before = os.sched_getaffinity(0)
    try:
        bench.run(
            ["engine", "--customers", "200", "--own-cpu", str(cpu), "--workdir", str(tmp_path)]
        )
    finally:
        os.sched_setaffinity(0, before)
    assert len(seen) >= 2  # the main thread and the serving thread at least
    on_connector_cpu = {tid: cpus for tid, cpus in seen.items() if cpu in cpus}
    assert not on_connector_cpu, f"sandbox threads still allowed on CPU {cpu}: {on_connector_cpu}"


@needs_two_cpus
def test_one_cpu_puts_every_thread_of_both_processes_on_that_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--one-cpu N``: both processes on CPU N, all their threads; a thread the measuring
    process started before is moved too, and every thread gets its CPUs back after."""
    import benchmarks.bench_sync as bench

    cpu = min(os.sched_getaffinity(0))
    seen: dict[str, dict[int, set[int]]] = {}
    real = bench.connector_run

    def watching(info: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen["sandbox"] = _affinities(info["pid"])
        seen["connector"] = _affinities(os.getpid())
        return real(info, *args, **kwargs)

    monkeypatch.setattr(bench, "connector_run", watching)
    stop = threading.Event()
    earlier = threading.Thread(target=stop.wait, name="started-before")
    earlier.start()
    tid = earlier.native_id
    assert tid is not None
    try:
        before = os.sched_getaffinity(tid)
        bench.run(
            ["engine", "--customers", "200", "--one-cpu", str(cpu), "--workdir", str(tmp_path)]
        )
        after = os.sched_getaffinity(tid)
    finally:
        stop.set()
        earlier.join()
    assert tid in seen["connector"]
    for process, threads in seen.items():
        assert all(cpus == {cpu} for cpus in threads.values()), (process, threads)
    assert after == before


def test_dsr_queued_erasure_rate_is_judged_by_trailing_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queued erasures' "HubSpot calls/s vs its 19/s ceiling" is the count in each
    trailing 10 s window, as the fan-out benchmark judges the same limit: counted over the
    span, the client's first burst (which a rolling limit allows) read as sustained, above
    the ceiling (the figure read 101%). Here five erasures (~45 calls, well inside one
    burst) run within one second. (The clock is a fake one that moves 10 ms a reading:
    nothing is timed.)"""
    import benchmarks.bench_dsr as bench

    ticks = iter(n / 100 for n in range(100_000))
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    figures = bench.main(n=5, latency=0.0, concurrency=2, directory=tmp_path)
    assert figures["erasures_completed"] == 5
    assert figures["queued_seconds"] < 1.0
    assert figures["hubspot_calls"] > 0
    assert 0 < figures["hubspot_utilisation"] <= 1.0, figures["hubspot_calls_per_second"]


def test_fanout_share_counts_only_calls_the_vendor_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call answered 429 is work the vendor did not take (the sandboxes' RollingWindow does
    not count it), nor is a call that got no answer: neither counts towards a destination's
    share of its ceiling. Here Mailchimp answers every call 429: not one member written, and
    a share of 0. (The benchmark runs for one second of its own, as the smoke tests do.)"""
    import benchmarks.bench_fanout as bench
    import connector.demo as demo

    real_build = bench._build
    real_config = demo.write_config

    def refusing(name: str, customers: int, latency: float) -> Any:
        box = real_build(name, customers, latency)
        if name == "news":
            box.faults.fail_every = 1
            box.faults.fail_status = 429
        return box

    def one_try(*args: Any, **kwargs: Any) -> Path:
        # One try per call: a refused call is not retried for minutes after the stop.
        path = real_config(*args, **kwargs)
        text = path.read_text()
        if "[sync]" in text:
            text = text.replace("[sync]", "[sync]\nretry_attempts = 1", 1)
        else:
            text += "\n[sync]\nretry_attempts = 1\n"
        path.write_text(text)
        return path

    # The sandboxes are forked from this process, so they are built by the patched _build.
    monkeypatch.setattr(bench, "_build", refusing)
    monkeypatch.setattr(demo, "write_config", one_try)
    figures = bench.main(
        customers=200, seconds=1.0, warmup=0.0, latency=0.01, directory=tmp_path, only=["news"]
    )
    assert figures["news_mean_call_ms"] > 0  # calls were made, and every one refused
    assert figures["news_share_of_ceiling"] == 0.0, figures["news_calls_per_second"]


def test_webhook_benchmark_exits_1_when_a_target_is_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As every benchmark's: a missed target is exit status 1. Here the daemon acknowledges
    40 deliveries in 10 s (4/s against >= 500, p99 500 ms against < 50) and changes take 5 s
    to reach HubSpot (p95 target < 2 s)."""
    import benchmarks.bench_webhooks as bench

    @contextlib.contextmanager
    def world(directory: Path, customers: int) -> Iterator[dict[str, Any]]:
        yield {"config": directory / "klantsync.toml", "url": "http://127.0.0.1:9"}

    class Runtime:
        def __init__(self) -> None:
            async def sync() -> list[Any]:
                return []

            self.engine = SimpleNamespace(sync=sync)

        async def __aenter__(self) -> Runtime:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def propagation(world: Any, changes: int, rate: float) -> list[float]:
        return [5.0] * changes

    async def flood(world: Any, deliveries: int, concurrency: int) -> tuple[float, list[float]]:
        return 10.0, [0.5] * deliveries

    daemon = SimpleNamespace(terminate=lambda: None, wait=lambda timeout=None: 0)
    monkeypatch.setattr(bench, "_world", world)
    monkeypatch.setattr(bench, "open_runtime", lambda config: Runtime())
    monkeypatch.setattr(bench, "_start_daemon", lambda config, url: daemon)
    monkeypatch.setattr(bench, "_propagation", propagation)
    monkeypatch.setattr(bench, "_flood", flood)
    assert bench._cli(["--deliveries", "40", "--changes", "3"]) == 1


def test_a_run_without_hubspot_calls_does_not_pass_the_429_share() -> None:
    """0 of 0 calls answered 429 is no share at all: a run that stopped calling HubSpot
    must not read "answered 429: 0%, PASS"."""
    from benchmarks.bench_sync import answered_429

    assert answered_429(0, 0).passed is False
    assert answered_429(1000, 9).passed is True
    assert answered_429(1000, 10).passed is False
