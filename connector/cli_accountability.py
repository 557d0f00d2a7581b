"""Commands for accountability: ``register``, ``incident`` and ``retention``.

:func:`register_commands` adds them to the ``klantsync`` parser; :func:`run` handles them
(returning the exit status) and returns ``None`` for any other command, so ``cli.py`` needs
only two lines. Exit status as everywhere: 0 done, 1 finished with failures, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector import audit, incidents, retention
from connector.backup import refuse_store_files
from connector.cliargs import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    check_writable,
    int_at_least,
    tell,
    write_output,
)
from connector.config import Config, load_config
from connector.errors import StoreError
from connector.keyset import open_keyring
from connector.lock import sharing_keys
from connector.loop import run as run_loop
from connector.register import build_register
from connector.register_render import local_time, render
from connector.retention import PURGED_KINDS
from connector.runtime import looked_at
from connector.state import Store
from connector.storefile import store_exists

__all__ = ["register_commands", "run"]

_NO_PERSONAL_DATA = (
    "Your own words, stored with e-mail addresses and phone numbers masked, the rest as "
    "given: do NOT put personal data (names, e-mail addresses, customer numbers) in it."
)


def register_commands(subparsers: Any) -> None:
    """Add ``register``, ``incident`` and ``retention`` to the CLI's subparsers."""

    def command(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    reg = command(subparsers, "register", "the Art. 30 processing register (verwerkingsregister)")
    reg.add_argument("--lang", choices=["nl", "en"], default="nl", help="language (default nl)")
    reg.add_argument(
        "--format",
        choices=["md", "html", "json"],
        help="output format (default md; json with --json, which on standard output takes "
        "no other)",
    )
    reg.add_argument(
        "--out",
        type=Path,
        help="write to this file instead of standard output (a file, not a directory; "
        "missing folders are created)",
    )

    inc = subparsers.add_parser(
        "incident",
        help="personal-data breach: 72-hour clock and notification draft (Art. 33)",
        description="Personal-data breach: the 72-hour clock and the notification draft for "
        "the Autoriteit Persoonsgegevens (Art. 33 GDPR).",
    )
    actions = inc.add_subparsers(dest="incident_action", required=True, metavar="ACTION")
    opened = command(actions, "open", "record a breach, start the 72-hour clock, print a draft")
    opened.add_argument("--summary", required=True, help=f"what happened. {_NO_PERSONAL_DATA}")
    opened.add_argument(
        "--system",
        action="append",
        dest="systems",
        help="a system involved (repeatable; default: every system)",
    )
    opened.add_argument(
        "--aware-since",
        help="when you became aware of the breach, ISO 8601 (default: now); the clock starts "
        "here; without an offset (+01:00, Z) it is this machine's local time",
    )
    opened.add_argument("--lang", choices=["nl", "en"], default="nl", help="draft language")
    opened.add_argument(
        "--out", type=Path, help="write the draft to this file (a file, not a directory)"
    )
    command(actions, "list", "incidents with the time left to notify (exit 1 if one is overdue)")
    show = command(actions, "show", "one incident and its notification draft")
    show.add_argument("id", type=int_at_least(1))
    show.add_argument("--lang", choices=["nl", "en"], default="nl", help="draft language")
    close = command(actions, "close", "close an incident")
    close.add_argument("id", type=int_at_least(1))
    close.add_argument("--note", required=True, help=f"how it was resolved. {_NO_PERSONAL_DATA}")

    ret = subparsers.add_parser(
        "retention",
        help="delete what the connector keeps past its retention period",
        description="Delete what the connector keeps past its retention period ([retention]).",
    )
    ret_actions = ret.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    sweep = command(ret_actions, "run", "purge now")
    sweep.add_argument("--dry-run", action="store_true", help="only count what would be purged")


def run(args: argparse.Namespace, console: Console, config: Config | None = None) -> int | None:
    """Handle the commands of this module; ``None`` when ``args.command`` is not one of them."""
    if args.command not in ("register", "incident", "retention"):
        return None
    if config is None:
        config = load_config(args.config)
    if args.command == "register":
        return _register(config, args, console)
    if not _records(args) and not store_exists(config.store_path):
        return _without_store(config, args, console)
    # A dry run and `incident list` and `show` only look: a store that opening would write to
    # first (an older one, which it migrates) is looked at as a private copy, as `sync
    # --dry-run` looks at it. They read without the keys, so what opening with them writes
    # is not in their way. The stores a restore replaced are looked for beside the store,
    # not beside its copy.
    beside = config.store_path
    looking = _looking(args)
    look = (
        looked_at(config, tell, keyed=False, looking=looking)
        if looking is not None
        else contextlib.nullcontext(config)
    )
    # Shared, as every command that writes to the store holds it: a restore (which takes it
    # alone) waits for this one, and this one for a restore. Without it a breach recorded
    # while a restore ran went into the store being set aside, and its 72-hour clock was lost.
    with look as config, sharing_keys(config.store_path):
        store = Store(config.store_path)
        try:
            if args.command == "incident":
                return _incident(store, config, args, console)
            return _retention(store, config, args, console, beside)
        finally:
            store.close()


def _records(args: argparse.Namespace) -> bool:
    """Whether the command records something new, and so makes the store if there is none.

    ``incident open``, as ``sync`` and ``dsr``: a breach is recorded where it is found, its
    clock kept from the first day. The others only read or delete what a store holds: where
    there is none they make none (a store made at a mistaken path, bound to the key in use,
    looked like the real one to whoever ran them next), as ``status`` and ``audit`` make none.
    """
    return bool(args.command == "incident" and args.incident_action == "open")


def _looking(args: argparse.Namespace) -> str | None:
    """What the command is called when it only looks at the store, and must leave it as it
    is (a dry run, or an incident listed or shown); ``None`` when it changes the store."""
    if args.command == "retention" and args.dry_run:
        return "dry run"
    if args.command == "incident" and args.incident_action in ("list", "show"):
        return f"incident {args.incident_action}"
    return None


def _without_store(config: Config, args: argparse.Namespace, console: Console) -> int:
    """No store yet: no incident to list, show or close, nothing to purge; said, none made.

    A real ``retention run`` is refused (exit 1), as ``backup`` and ``keys rotate`` are: it
    is asked to change a store, and "purged 0" at a mistaken store.path, run from cron,
    would hide that the real store keeps everything. A dry run only looks, as ``audit
    verify`` does.
    """
    where = escape(str(config.store_path))
    if args.command == "retention":
        if not args.dry_run:
            raise StoreError(f"{config.store_path}: there is no store yet, so nothing to purge")
        report = retention.nothing_held(config, dry_run=True)
        if args.json:
            print(json.dumps({**report.as_dict(), "store_exists": False}, indent=2))
        else:
            console.print(f"no store at {where} yet: nothing to purge")
        return EXIT_OK
    if args.incident_action == "list":
        if args.json:
            print(json.dumps([]))
        else:
            console.print(f"no incidents (no store at {where} yet)")
        return EXIT_OK
    return _usage(args, console, f"no incident {args.id} (no store at {config.store_path} yet)")


def _register(config: Config, args: argparse.Namespace, console: Console) -> int:
    if args.out is None:
        # On standard output the register is the report: --json prints it as JSON, so a
        # --format of another kind beside it asks for two things at once. Refused, not
        # dropped: a script piping `--format html --json` into a page got JSON.
        if args.json and args.format not in (None, "json"):
            return _usage(
                args,
                console,
                f"--format {args.format} and --json: on standard output --json prints the "
                f"register as JSON; drop one, or write the {args.format} with --out FILE",
            )
        fmt = "json" if args.json else (args.format or "md")
        sys.stdout.write(render(build_register(config, args.lang), fmt))
        return EXIT_OK
    # To a file, --format says what the file holds (JSON when only --json is given, as
    # before), and --json asks for a machine-readable note of what was written where.
    fmt = args.format or ("json" if args.json else "md")
    example = f"{'verwerkingsregister' if args.lang == 'nl' else 'processing-register'}.{fmt}"
    # As backup --out: a register written over the master key leaves a store nobody opens.
    refuse_store_files(config, args.out, "--out")
    write_output(
        args.out, render(build_register(config, args.lang), fmt), option="--out", example=example
    )
    if args.json:
        print(json.dumps({"written": str(args.out), "format": fmt, "lang": args.lang}))
    else:
        console.print(f"register written to {escape(str(args.out))}")
    return EXIT_OK


def _usage(args: argparse.Namespace, console: Console, message: str) -> int:
    if args.json:
        print(json.dumps({"error": "usage", "message": message}))
    else:
        # Errors go to standard error, as every other command's do; stdout stays the output.
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error[/]: {escape(message)}"
        )
    return EXIT_USAGE


def _incident(store: Store, config: Config, args: argparse.Namespace, console: Console) -> int:
    now = incidents.utc_now()
    action = args.incident_action
    if action in ("open", "close"):
        # Both append to the audit chain, whose head carries a MAC under the store's keys.
        open_keyring(store, config)
    if action == "list":
        found = incidents.list_incidents(store)
        if args.json:
            print(json.dumps([i.as_dict(now) for i in found], indent=2))
        elif not found:
            console.print("no incidents")
        for incident in [] if args.json else found:
            status = incident.status(now)
            colour = {"open": "yellow", "overdue": "bold red", "closed": "green"}[status]
            console.print(
                f"#{incident.id} [{colour}]{status}[/] deadline {local_time(incident.deadline)} "
                f"({incidents.time_left_text(incident, now)}): {escape(incident.summary)}"
            )
        return EXIT_FAILED if any(i.status(now) == "overdue" for i in found) else EXIT_OK
    if action == "open":
        if args.out is not None:
            # Before the incident is recorded, so a bad --out does not leave one behind; a
            # draft written over the master key, the config or the store would lose them.
            refuse_store_files(config, args.out, "--out")
            check_writable(args.out, option="--out", example="incident.txt")
        aware = None
        # An empty --aware-since (a script's unset variable) is refused, not read as now.
        if args.aware_since is not None:
            try:
                aware = dt.datetime.fromisoformat(args.aware_since)
                if aware.tzinfo is None:
                    # Typed as the operator's clock reads: read as UTC, a Dutch "09:00"
                    # started the 72 hours one or two hours late, and a time typed just now
                    # was refused as in the future.
                    aware = aware.astimezone()
                aware.astimezone(dt.UTC)  # year 1 in a zone east of UTC is out of range
            except (ValueError, OverflowError):
                return _usage(args, console, "--aware-since must be an ISO 8601 date-time")
        try:
            incident = incidents.open_incident(
                store, config, args.summary, systems=args.systems, aware_at=aware, now=now
            )
        except ValueError as exc:
            return _usage(args, console, str(exc))
        return _show(incident, config, args, console, now, out=args.out)
    found_one = incidents.get_incident(store, args.id)
    if found_one is None:
        return _usage(args, console, f"no incident {args.id}")
    if action == "show":
        return _show(found_one, config, args, console, now)
    try:
        closed = incidents.close_incident(store, args.id, args.note, now=now)
    except ValueError as exc:
        return _usage(args, console, str(exc))
    if args.json:
        print(json.dumps(closed.as_dict(now), indent=2))
    else:
        console.print(f"incident #{closed.id} closed at {local_time(str(closed.closed_at))}")
    return EXIT_OK


def _show(
    incident: incidents.Incident,
    config: Config,
    args: argparse.Namespace,
    console: Console,
    now: dt.datetime,
    out: Path | None = None,
) -> int:
    draft = incidents.notification_draft(incident, config, args.lang, now)
    if out is not None:
        write_output(out, draft, option="--out", example="incident.txt")
    if args.json:
        data: dict[str, Any] = incident.as_dict(now)
        data["draft"] = draft
        if out is not None:
            data["written"] = str(out)  # as `register --out --json` says where it wrote
        print(json.dumps(data, indent=2))
        return EXIT_OK
    console.print(
        f"incident #{incident.id}: {incident.status(now)}, notify the Autoriteit "
        f"Persoonsgegevens by {local_time(incident.deadline)} "
        f"({incidents.time_left_text(incident, now)})"
    )
    if out is not None:
        console.print(f"draft written to {escape(str(out))}")
    else:
        sys.stdout.write("\n" + draft)
    return EXIT_OK


def _retention(
    store: Store, config: Config, args: argparse.Namespace, console: Console, beside: Path
) -> int:
    # The keys open the access bundles' sealed paths (the caller holds them shared, so a key
    # rotation waits for the sweep). A dry run only counts: it needs no key and leaves the
    # store's keys as they are.
    keyring = None if args.dry_run else open_keyring(store, config)
    if keyring is not None:
        # The periods it purges by are this config's: recorded, as `sync` records its own.
        audit.record_config(store, config)
    report = run_loop(retention.sweep(store, config, keyring, dry_run=args.dry_run, beside=beside))
    if args.json:
        print(json.dumps({**report.as_dict(), "store_exists": True}, indent=2))
    else:
        verb = "would purge" if report.dry_run else "purged"
        counts = report.counts
        said = ", ".join(f"{counts[kind]} {words}" for kind, words in PURGED_KINDS.items())
        console.print(f"retention: {verb} {said}")
        for error in report.errors:
            console.print(f"  [red]error[/]: {escape(error)}")
    return EXIT_FAILED if report.errors else EXIT_OK
