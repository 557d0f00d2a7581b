"""`sync` and `resync`: running flows now (or handing a resync to the daemon), the
progress bar on a terminal, and the summary of each flow run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector import audit
from connector.aside import aside_folder
from connector.cliargs import EXIT_FAILED, EXIT_OK, tell
from connector.config import Config
from connector.engine import DestinationReport, FlowReport, Progress
from connector.errors import ConfigError
from connector.lock import sharing_keys, syncing
from connector.runtime import looked_at, open_runtime, settle_heap
from connector.stages import on_terminal
from connector.state import Store
from connector.storefile import store_exists

__all__ = ["no_flows", "print_report", "progress_bar", "queue_resync", "resync_flows", "sync"]


class _BarProgress(Progress):
    """A rich progress bar per flow and destination, for terminals."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.tasks: dict[str, Any] = {}

    def _task(self, key: str, total: int | None) -> Any:
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(key, total=total)
        elif total is not None:
            self.bar.update(self.tasks[key], total=total)
        return self.tasks[key]

    def pulled(self, flow: str, count: int, total: int | None) -> None:
        self.bar.advance(self._task(f"{flow}: pull", total), count)

    def delivered(self, flow: str, system: str, count: int) -> None:
        self.bar.advance(self._task(f"{flow}: -> {system}", None), count)


@contextlib.contextmanager
def progress_bar(console: Console, *, show: bool = True) -> Iterator[Progress | None]:
    """Bars per flow and destination while the block runs, on a terminal; else ``None``.

    A pipe or a ``--json`` reader (``show=False``) gets nothing: what it reads is the report,
    and a bar drawn there would be in the way of it (:func:`connector.stages.on_terminal`).
    The bar is transient, so what stays on the terminal is the report alone.
    """
    if not on_terminal(console, show):
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(console=console, transient=True) as bar:
        yield _BarProgress(bar)


async def sync(config: Config, args: argparse.Namespace, console: Console) -> int:
    dry_run = getattr(args, "dry_run", False)
    if dry_run and not store_exists(config.store_path):
        # Nothing synced yet: the dry run compares with an empty store, made aside and
        # thrown away, so looking leaves no store (nor keys bound to one) behind. A path no
        # store can be at is bad configuration first (StorePathError), as for the real sync
        # that follows: a full dry run there, exit 0, told the operator all was well.
        with aside_folder() as aside:
            empty = dataclasses.replace(config, store_path=Path(aside) / config.store_path.name)
            return await _sync_locked(empty, args, console, dry_run=True)
    if dry_run:
        # A dry run writes no cursor, outbox or run: it may look beside a sync or the daemon.
        # A store that opening would write to first is looked at as a private copy.
        with looked_at(config, tell) as looked:
            return await _sync_locked(looked, args, console, dry_run=True)
    with syncing(config.store_path, args.command):
        return await _sync_locked(config, args, console, dry_run=False)


async def _sync_locked(
    config: Config, args: argparse.Namespace, console: Console, *, dry_run: bool
) -> int:
    async with open_runtime(config, dry_run=dry_run) as rt:
        settle_heap()
        if not dry_run:
            # With the sync lock held, a run still marked running was interrupted.
            rt.store.close_interrupted_runs()
            # Not on a dry run: a config only looked at has not taken effect, and the next
            # real run would then find it recorded already.
            audit.record_config(rt.store, rt.config)
        reports: list[FlowReport] = []
        flow_names: list[str | None] = [args.flow] if args.command == "sync" else []
        if args.command == "resync":
            flow_names = list(resync_flows(rt.config, args.system))
            audit.record_resync(
                rt.store,
                args.system,
                full=args.full,
                source="cli",
                subject_id=rt.keyring.subject_id(args.email) if args.email else None,
            )
            if args.email:
                from connector.targeted import sync_subject

                reports = await sync_subject(rt, args.system, email=args.email, full=args.full)
                flow_names = []
        for flow_name in flow_names:
            with progress_bar(console, show=not args.json) as bar:
                reports += await rt.engine.sync(
                    flow_name, full=args.full, dry_run=dry_run, progress=bar
                )
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for report in reports:
            print_report(console, report)
    return EXIT_FAILED if any(r.failed for r in reports) else EXIT_OK


def no_flows(config: Config, args: argparse.Namespace) -> int:
    """``sync`` with no flow configured: said in one line, rather than an exit 0 in silence
    that reads like a sync that found nobody to move.

    Exit 0 (nothing failed). The line goes to stderr, so ``--json`` still prints ``[]``.
    A ``--flow`` was checked before (no config without flows has one of that name).
    """
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"nothing to sync: {config.path} configures no flow (add a [[flows]] table)",
        markup=False,
    )
    if args.json:
        print("[]")
    return EXIT_OK


def resync_flows(config: Config, system: str) -> list[str]:
    """The flows a resync of ``system`` runs; ConfigError (exit 2) when there are none.

    About ``--system``, not the config: under ``--json`` it is answered as usage (a script
    sending config errors to whoever keeps the config was sent a typo on the command line).
    """
    if system not in config.systems:
        known = ", ".join(sorted(config.systems))
        raise ConfigError("--system", "", f"no system named {system!r} (systems: {known})")
    flows = [f.name for f in config.flows if f.source == system]
    if not flows:
        sources = ", ".join(sorted({f.source for f in config.flows})) or "none"
        raise ConfigError(
            "--system", "", f"no flow has {system!r} as its source (sources: {sources})"
        )
    return flows


def queue_resync(config: Config, args: argparse.Namespace, console: Console) -> int:
    """The daemon runs: hand it the resync (it starts within a second) instead of racing it."""
    with sharing_keys(config.store_path):
        job_id = _enqueue_resync(config, args)
    if args.json:
        print(json.dumps({"queued": True, "job_id": job_id}))
    else:
        console.print(f"the daemon runs on this store: resync queued as job {job_id}")
    return EXIT_OK


def _enqueue_resync(config: Config, args: argparse.Namespace) -> int:
    with sharing_keys(config.store_path):  # a restore waits for it, as for every writer
        return _enqueue_resync_shared(config, args)


def _enqueue_resync_shared(config: Config, args: argparse.Namespace) -> int:
    from connector import jobs
    from connector.keyset import open_keyring

    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        params: dict[str, Any] = {"system": args.system, "full": args.full}
        if args.email:
            params["email"] = args.email  # checked and normalised by the CLI
        subject_id = keyring.subject_id(args.email) if args.email else None
        # One transaction: a job queued is a job recorded, and no entry without its job.
        with store.transaction():
            job_id = jobs.enqueue(store, keyring, "resync", params)
            audit.record_resync(
                store, args.system, full=args.full, source="cli", subject_id=subject_id
            )
    finally:
        store.close()
    return job_id


def _written(name: str, dest: DestinationReport) -> str:
    """Created and updated counts; what was written where the system does not say which."""
    counts = f"created {dest.created}, updated {dest.updated}"
    if not dest.upserted:
        return counts
    written = f"written {dest.upserted} ({name} does not say which were new)"
    return written if not (dest.created or dest.updated) else f"{counts}, {written}"


def _movers(report: FlowReport) -> str:
    """What the summary says of the records of those who changed their address: only what
    holds. A dry run updated nothing; in a run that left writes refused or queued, the
    counts do not say whose, and a mover's may be among them (a move HubSpot refuses as a
    CONFLICT keeps the old address on the contact)."""
    if report.dry_run:
        return "a sync writes their change to the records the systems hold for them, not new ones"
    if report.failed or any(d.left_queued for d in report.destinations.values()):
        return (
            "their writes go to the records the systems hold for them, not to new ones; "
            "what was refused or left queued (above) has not reached them"
        )
    return "their records were updated where they were sent, not duplicated"


def print_report(console: Console, report: FlowReport) -> None:
    """Human summary of one flow run."""
    mode = " (dry run)" if report.dry_run else ""
    console.print(
        f"[bold]{escape(report.flow)}[/]{mode}: pulled {report.pulled} from {escape(report.source)}"
        f", {report.invalid} without a usable e-mail, {report.suppressed} suppressed (erased)"
    )
    for name, dest in report.destinations.items():
        verb = "would send" if report.dry_run else "queued"
        console.print(
            f"  -> {escape(name)}: {verb} {dest.queued}, {escape(_written(name, dest))}, "
            f"unchanged {dest.unchanged}, gated by consent {dest.gated}, "
            f"dead-lettered {dest.dead_lettered}, "
            + (
                f"already queued {dest.left_queued} (a sync sends these first)"
                if report.dry_run
                else f"left queued {dest.left_queued}"
            )
            + (
                f", still rejected {dest.still_rejected} (not re-sent until changed or --full)"
                if dest.still_rejected
                else ""
            )
            + (f" (last: {escape(dest.deferred)})" if dest.retry_later and dest.deferred else "")
            + (
                # Counted as queued, not as delivered: a write the system refused or that
                # waits in the outbox (the system down) has emptied nothing yet.
                f", {dest.emptied} {'would be sent' if report.dry_run else 'queued'} with "
                "fields to empty (no longer held at the source)"
                if dest.emptied
                else ""
            )
            + (
                f", [red]{dest.not_erased} written for someone erased meanwhile and not "
                "erased again: ask for their erasure again[/]"
                if dest.not_erased
                else ""
            )
        )
    if report.moved:
        console.print(
            f"  {report.moved} changed their e-mail address at {escape(report.source)}: "
            + _movers(report)
        )
    if report.asked_fields is not None:
        asked = (
            f"  asked {escape(report.source)} only for: {escape(', '.join(report.asked_fields))}"
        )
        if report.unasked_arrived:
            # A shop that ignores _fields: what it sent is dropped (below), but it left.
            console.print(
                f"{asked}, [yellow]yet it sent other fields too (withheld below): it does "
                "not honour _fields[/]"
            )
        else:
            console.print(f"{asked} (its other fields never left it)")
    if report.withheld_fields:
        withheld = ", ".join(f"{k} ({v})" for k, v in sorted(report.withheld_fields.items()))
        console.print(f"  withheld (not in any mapping, never sent): {escape(withheld)}")
    for name, count in sorted(report.unreadable_values.items()):
        values = "value" if count == 1 else "values"
        console.print(
            f"  [yellow]{escape(name)}: {count} {values} not readable, not sent[/] "
            "(the destinations keep what they had)"
        )
    for error in report.errors:
        console.print(f"  [red]error[/]: {escape(error)}")
