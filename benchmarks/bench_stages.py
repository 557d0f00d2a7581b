"""Where a first sync's connector CPU goes, stage by stage.

Usage::

    python -m benchmarks.bench_stages                      # 100k customers, both on CPU 0
    python -m benchmarks.bench_stages --customers 3000     # scaled down
    python -m benchmarks.bench_stages --cpu none --json    # unpinned, figures as JSON
    python -m benchmarks.bench_stages --again              # and an unchanged re-sync after it

The run is the engine benchmark's (:func:`benchmarks.bench_sync.run_engine` with
``--one-cpu``): a first sync of every customer against unlimited, zero-latency sandboxes in
a process of their own, both processes on one CPU so that the connector's CPU time is its own
work. Before the runtime opens, each stage's functions (:data:`STAGES`) are wrapped in a
timer that reads the calling thread's CPU clock on entry and exit. Time is charged to the
innermost stage running: a stage called inside another (the payload sealed while a page is
queued) is taken out of the outer one, so the stages add up without counting anything twice.

What the stages do not cover is "the rest": the engine's own loop, HTTP and TLS, the event
loop. The timers cost CPU too: that cost is measured (:func:`timer_cost`) and shown on a row
of its own, not hidden in the rest, so the table adds up to the connector's CPU for the run.
The untimed figure is ``bench_sync engine --one-cpu 0``'s.

Only synchronous functions are timed: a coroutine gives the loop away at each ``await``, and
its time would hold whatever ran meanwhile. A stage whose function is renamed or becomes a
coroutine makes this script fail, not read zero (the smoke test checks each stage is seen).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import inspect
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_sync import (
    _on_cpu,
    _say,
    _workdir,
    check_cpu,
    connector_run,
    sandbox_server,
)

__all__ = ["STAGES", "Stage", "StageClock", "main", "run", "timer_cost"]


@dataclass(frozen=True)
class Stage:
    """A stage of the sync and the functions whose time is its: ``module:Class.method`` or
    ``module:function`` (a function is replaced wherever a module of the project holds it)."""

    label: str
    targets: tuple[str, ...]


#: The stages, in the order of the README's table ("Where a first sync's time goes").
STAGES: tuple[Stage, ...] = (
    Stage(
        "mapping a shop record to the canonical person (`SystemMapping.inbound`)",
        ("connector.mapping:SystemMapping.inbound",),
    ),
    Stage(
        "queueing a page: outbox rows, identities, numbering new people, the cursor "
        "(`Store.enqueue_page`)",
        ("connector.store_outbox:OutboxStore.enqueue_page",),
    ),
    Stage(
        "acknowledging a batch: delivered hashes, the system's ids, outbox rows deleted "
        "(`Store.acknowledge`)",
        ("connector.store_delivered:DeliveredStore.acknowledge",),
    ),
    Stage("sealing the payload (AES-GCM over its JSON)", ("connector.crypto:Keyring.seal_json",)),
    Stage("JSON decoding of the shop's pages and HubSpot's answers", ("connector.jsonutil:loads",)),
    Stage(
        "the payload's keyed hash (change detection)", ("connector.crypto:Keyring.payload_hash",)
    ),
    Stage(
        "the identity map's look at a page (moves)",
        ("connector.moves:page_ids", "connector.moves:find_moves"),
    ),
    Stage("the subject id (keyed HMAC of the address)", ("connector.crypto:Keyring.subject_id",)),
    Stage("reading the outbox for delivery", ("connector.store_outbox:OutboxStore.outbox_batch",)),
    Stage(
        "the payload for HubSpot (`SystemMapping.outbound`)",
        ("connector.mapping:SystemMapping.outbound",),
    ),
    Stage(
        "the page's hash lookups, dead letters, suppression checks, audit entries",
        (
            "connector.store_delivered:DeliveredStore.page_hashes",
            "connector.store_dead_letters:DeadLetterStore.page_dead_letters",
            "connector.pagesuppression:suppressed_on_page",
            "connector.audit:append",
        ),
    ),
)

#: The packages whose modules may hold a timed function under a name of their own.
_OURS = ("connector", "adapters")


class StageClock:
    """Charges each timed call's thread CPU time to its stage, the innermost one running."""

    def __init__(self, clock: Callable[[], int] = time.thread_time_ns) -> None:
        self._clock = clock  # the calling thread's CPU nanoseconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads: list[tuple[dict[str, int], dict[str, int]]] = []

    def _own(self) -> tuple[list[list[Any]], dict[str, int], dict[str, int]]:
        local = self._local
        try:
            return local.stack, local.spent, local.calls
        except AttributeError:
            local.stack, local.spent, local.calls = [], {}, {}
            with self._lock:
                self._threads.append((local.spent, local.calls))
            return local.stack, local.spent, local.calls

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function``, its time charged to ``label``."""
        if inspect.iscoroutinefunction(function):
            raise TypeError(f"{label}: {function.__qualname__} is a coroutine and cannot be timed")
        clock = self._clock
        own = self._own

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack, spent, calls = own()
            now = clock()
            if stack:  # the stage that called this one stops being charged
                outer = stack[-1]
                spent[outer[0]] = spent.get(outer[0], 0) + now - outer[1]
            frame: list[Any] = [label, now]
            stack.append(frame)
            calls[label] = calls.get(label, 0) + 1
            try:
                return function(*args, **kwargs)
            finally:
                now = clock()
                spent[label] = spent.get(label, 0) + now - frame[1]
                stack.pop()
                if stack:
                    stack[-1][1] = now

        return timed

    def spent_ns(self) -> dict[str, int]:
        """Each stage's CPU nanoseconds, every thread's together."""
        return self._summed(0)

    def calls(self) -> dict[str, int]:
        """How many times each stage was entered, every thread's together."""
        return self._summed(1)

    def reset(self) -> None:
        """Start counting afresh, every thread's counts emptied."""
        with self._lock:
            for spent, calls in self._threads:
                spent.clear()
                calls.clear()

    def _summed(self, which: int) -> dict[str, int]:
        total: dict[str, int] = {}
        with self._lock:
            for counts in self._threads:
                for label, n in counts[which].items():
                    total[label] = total.get(label, 0) + n
        return total


@contextlib.contextmanager
def timed_stages(clock: StageClock) -> Iterator[None]:
    """While in it, every stage's functions (:data:`STAGES`) are timed by ``clock``; put
    back afterwards."""
    import connector.runtime  # noqa: F401  (loads the modules that hold the stages' functions)

    undo: list[Callable[[], None]] = []
    try:
        for stage in STAGES:
            for target in stage.targets:
                undo += _replace(target, functools.partial(clock.wrap, stage.label))
        yield
    finally:
        for step in reversed(undo):
            step()


def _replace(
    target: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> list[Callable[[], None]]:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    owner_name, _, method = attribute.rpartition(".")
    if owner_name:
        owner = getattr(module, owner_name)
        if method not in vars(owner):
            raise AttributeError(f"{target}: {owner_name} defines no {method}")
        original = vars(owner)[method]
        setattr(owner, method, wrap(original))
        return [functools.partial(setattr, owner, method, original)]
    original = getattr(module, attribute)
    wrapped = wrap(original)
    undo: list[Callable[[], None]] = []
    # `from connector.moves import page_ids` gave the importer a name of its own: each
    # module holding the function is given the timed one.
    for name, held in list(sys.modules.items()):
        if held is None or name.split(".")[0] not in _OURS:
            continue
        for key, value in list(vars(held).items()):
            if value is original:
                setattr(held, key, wrapped)
                undo.append(functools.partial(setattr, held, key, original))
    return undo


def timer_cost(calls: int = 200_000) -> float:
    """The CPU nanoseconds one timed call costs beyond the call itself."""

    def nothing() -> None:
        return None

    timed = StageClock().wrap("calibration", nothing)
    best = []
    for _ in range(3):
        start = time.thread_time_ns()
        for _ in range(calls):
            nothing()
        bare = time.thread_time_ns() - start
        start = time.thread_time_ns()
        for _ in range(calls):
            timed()
        best.append((time.thread_time_ns() - start - bare) / calls)
    return max(min(best), 0.0)


def run_stages(
    customers: int, *, cpu: int | None, workdir: Path | None, again: bool = False
) -> dict[str, Any]:
    """One first sync with every stage timed; each stage's microseconds a record.

    ``again``: a second sync with nothing changed follows (what a scheduled sync mostly is),
    its stages under ``"again"``.
    """
    clock = StageClock()
    first: list[tuple[dict[str, int], dict[str, int]]] = []

    def between() -> None:
        first.append((clock.spent_ns(), clock.calls()))
        clock.reset()

    with contextlib.ExitStack() as stack:
        if cpu is not None:
            stack.enter_context(_on_cpu(cpu))  # before the sandbox starts: it inherits it
        base = stack.enter_context(_workdir(workdir))
        info = stack.enter_context(
            sandbox_server(base, customers, latency=0.0, hubspot_limit="none")
        )
        where = "" if cpu is None else f", both processes on CPU {cpu}"
        _say(f"stages: {customers} customers, no latency, no limit{where}")
        with timed_stages(clock):
            result = connector_run(
                info, base / "connector", unlimited=True, again=again, between=between
            )
        overhead_ns = timer_cost()
    spent, calls = first[0] if again else (clock.spent_ns(), clock.calls())
    figures = _per_record(
        result["report"], result["cpu_s"], spent, calls, overhead_ns, customers, every=True
    )
    figures["customers"] = customers
    figures["sandbox_cpu_s"] = result["sandbox_cpu_s"]
    if again:
        second = result["again"]
        figures["again"] = _per_record(
            second["report"],
            second["cpu_s"],
            clock.spent_ns(),
            clock.calls(),
            overhead_ns,
            customers,
            every=False,
        )
        figures["again"]["customers"] = customers
        figures["again"]["sandbox_cpu_s"] = second["sandbox_cpu_s"]
    return figures


def _per_record(
    report: dict[str, Any],
    cpu_s: float,
    spent: dict[str, int],
    calls: dict[str, int],
    overhead_ns: float,
    customers: int,
    *,
    every: bool,
) -> dict[str, Any]:
    """One sync's stages, microseconds a record. ``every``: each stage must have run (a
    first sync runs them all; an unchanged one queues, seals and delivers nothing)."""
    records = int(report["pulled"])
    if records != customers:
        raise RuntimeError(f"the sync pulled {records} of {customers} customers")
    per = 1e3 * records  # ns -> us a record
    rows: list[dict[str, Any]] = []
    for stage in STAGES:
        if every and not calls.get(stage.label):
            raise RuntimeError(f"stage never entered: {stage.label}")
        rows.append(
            {
                "stage": stage.label,
                "us_per_record": spent.get(stage.label, 0) / per,
                "calls_per_record": calls.get(stage.label, 0) / records,
            }
        )
    total_us = 1e6 * cpu_s / records
    timers_us = overhead_ns * sum(calls.values()) / per
    staged = sum(row["us_per_record"] for row in rows)
    return {
        "connector_cpu_s": cpu_s,
        "stages": rows,
        "timers_us_per_record": timers_us,
        "rest_us_per_record": total_us - staged - timers_us,
        "total_us_per_record": total_us,
        "untimed_us_per_record": total_us - timers_us,
    }


def print_stages(result: dict[str, Any]) -> None:
    """The stages as the README's table: microseconds a record, largest first."""
    rows = sorted(result["stages"], key=lambda row: -row["us_per_record"])
    lines = [(row["stage"], f"{row['us_per_record']:.1f}") for row in rows]
    lines += [
        (
            "the rest: the engine's own loop, HTTP and TLS, HubSpot's batches, the event loop",
            f"{result['rest_us_per_record']:.1f}",
        ),
        (
            "the timers themselves (measured, taken out of the rest)",
            f"{result['timers_us_per_record']:.1f}",
        ),
        ("**all: connector CPU a record, this run**", f"**{result['total_us_per_record']:.1f}**"),
        ("less the timers", f"{result['untimed_us_per_record']:.1f}"),
    ]
    print("| stage | us a record |")
    print("| --- | --- |")
    for stage, value in lines:
        print(f"| {stage} | {value} |")
    print(
        f"\n{result['customers']:,} records; connector CPU {result['connector_cpu_s']:.2f} s, "
        f"sandbox CPU {result['sandbox_cpu_s']:.2f} s "
        f"(ratio {result['connector_cpu_s'] / max(result['sandbox_cpu_s'], 1e-9):.2f})"
    )


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run, print; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_stages")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--cpu",
        default="0",
        help='the one CPU both processes run on (default 0), or "none" to leave them be',
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument(
        "--again",
        action="store_true",
        help="follow the first sync with an unchanged one and time its stages too",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    cpu = None if args.cpu == "none" else _cpu(parser, args.cpu)
    result = run_stages(args.customers, cpu=cpu, workdir=args.workdir, again=args.again)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("A first sync: every record new\n")
        print_stages(result)
        if result.get("again"):
            print("\nAn unchanged re-sync: every record pulled, mapped and hashed, none sent\n")
            print_stages(result["again"])
    return result


def _cpu(parser: argparse.ArgumentParser, given: str) -> int:
    try:
        cpu = int(given)
    except ValueError:
        parser.error(f'--cpu {given}: a CPU number, or "none"')
    check_cpu(parser, "--cpu", cpu)
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
