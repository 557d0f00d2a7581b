"""The command layer: parse arguments, call the core, print, exit 0 / 1 / 2.

Exit status: 0 done; 1 finished with failures (details printed); 2 bad usage or bad
configuration (the message names the file, key and what is wrong). Every reporting command
takes ``--json``. Nothing here holds logic the daemon or admin API would also need.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector import audit, cli_accountability, cli_dsr, cli_keys, compliance
from connector.cliargs import int_at_least, make_folder
from connector.config import Config, load_config
from connector.crypto import generate_master_key
from connector.dsr_views import summary as dsr_summary
from connector.engine import DestinationReport, FlowReport, Progress
from connector.errors import ConfigError, KlantsyncError, StoreError, StorePathError
from connector.http import redact_url
from connector.lock import daemon_running, sharing_keys, sync_running, syncing
from connector.logs import redact, setup_logging
from connector.loop import run as run_loop
from connector.runtime import open_runtime, settle_heap
from connector.state import Store, damage, store_path_problem

__all__ = ["main", "print_report", "progress_bar"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The reader of standard output went away (``klantsync audit export | head``): 128 + SIGPIPE,
#: what the shell reports for any Unix tool stopped that way, as 130 is 128 + SIGINT.
EXIT_PIPE = 141


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klantsync",
        description="GDPR-aware customer-data sync: webshop -> CRM, with proof.",
    )
    parser.add_argument("-c", "--config", type=Path, help="config file (TOML)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, json_help: str = "machine-readable output"
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help=json_help)
        return p

    demo = command("demo", "sandboxes + sync + erasure + access + register, end to end")
    demo.add_argument("--dir", type=Path, help="keep the demo's files here (default: temp dir)")
    demo.add_argument(
        "--customers",
        # The story changes, erases and looks up customers 1 to 5.
        type=int_at_least(5, "the demo's story uses five customers"),
        default=300,
        help="synthetic customers to seed (at least 5; default 300)",
    )
    command(
        "keygen",
        "print a new master key (urlsafe base64 of 32 random bytes)",
        json_help='print {"key": ...} instead of the bare key',
    )
    check = command(
        "check",
        "validate config, mappings and TLS settings; list compliance gaps "
        "(exit 1 if there are any, or if --online finds a system unreachable)",
    )
    check.add_argument("--online", action="store_true", help="also call every system once")
    sync = command("sync", "run flows now")
    sync.add_argument("--flow", help="only this flow")
    sync.add_argument(
        "--full",
        action="store_true",
        help="ignore cursors; re-read everything, and offer again records a system refused before",
    )
    sync.add_argument("--dry-run", action="store_true", help="report what would be sent")
    resync = command(
        "resync",
        "manual resync of one source system's flows; handed to the daemon as a job when one "
        "runs on this store, run here otherwise",
    )
    resync.add_argument("--system", required=True, help="source system name")
    resync.add_argument("--email", help="only this person")
    resync.add_argument(
        "--full", action="store_true", help="ignore cursors; retry records refused before"
    )
    command("status", "flows, queues, dead letters")
    command(
        "run",
        "the daemon: scheduler + webhooks + admin API + metrics",
        json_help="log JSON lines on stderr, whatever [logging] format says",
    )
    sandbox = command(
        "sandbox",
        "run the sandboxes alone over HTTPS, to try things by hand",
        json_help="print one JSON object (URLs, CA, credentials) instead of export lines",
    )
    sandbox.add_argument(
        "--dir",
        type=Path,
        help="CA and certs (default: var/sandbox beside the -c config, else in this folder; "
        "config.example.toml trusts var/sandbox/tls/ca.pem relative to itself)",
    )
    sandbox.add_argument(
        "--customers",
        type=int_at_least(0),  # empty sandboxes are a fair start for trying things by hand
        default=50,
        help="synthetic customers to seed (0 or more; default 50)",
    )
    audit_cmd = command("audit", "verify or export the audit chain")
    audit_cmd.add_argument("action", choices=["verify", "export"])
    audit_cmd.add_argument("--since", help="export entries at or after this ISO timestamp")
    cli_dsr.register(sub)
    cli_accountability.register_commands(sub)
    cli_keys.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``klantsync`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        code = _dispatch(args, parser, console)
        # Flushed here so a reader that went away is noticed while it can be handled.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_PIPE
    except ConfigError as exc:
        _error(err, args, str(exc), kind="config")
        return EXIT_USAGE
    except StoreError as exc:
        _error(err, args, str(exc), kind="store")
        return EXIT_FAILED
    except KlantsyncError as exc:
        _error(err, args, str(exc), kind="error")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: a bug must not dump a traceback
        return _internal_error(err, args, exc)


def _internal_error(err: Console, args: argparse.Namespace, exc: Exception) -> int:
    """One line for an unexpected exception; the traceback only when asked for.

    A traceback's frames show local values (a record, a token), and its text goes wherever
    stderr goes (a journal, a CI log): so by default only the exception's type and its text,
    redacted as log lines are, and a hint how to get the rest.
    """
    debug = os.environ.get("KLANTSYNC_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    text = " ".join(redact(str(exc)).split())  # one line, whatever the exception holds
    detail = f": {text}" if text else ""
    err.print(f"klantsync: internal error: {type(exc).__name__}{detail}", markup=False)
    if getattr(args, "json", False):
        # Scripts read the answer on stdout, as for every other error.
        print(json.dumps({"error": "internal", "message": f"{type(exc).__name__}{detail}"}))
    if not debug:
        err.print("(run again with KLANTSYNC_DEBUG=1 to see the traceback)", markup=False)
    return EXIT_FAILED


def _stdout_gone() -> None:
    """Standard output's reader closed it (``| head``): stop quietly, as Unix tools do.

    Python ignores SIGPIPE, so the write raised instead; what is still buffered would raise
    again when the interpreter flushes at exit and print a traceback. Pointing the descriptor
    at /dev/null lets that flush succeed (the pattern the ``signal`` module's docs give).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass


def _error(err: Console, args: argparse.Namespace, message: str, kind: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": kind, "message": message}))
    else:
        # Messages name config keys such as [systems.crm]: escaped, or rich eats them as markup.
        err.print(f"[bold red]error[/]: {escape(message)}", markup=True, soft_wrap=True)


def _need_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.config is None:
        parser.error(f"{args.command} needs -c CONFIG")
    path: Path = args.config
    return path


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser, console: Console) -> int:
    if args.command == "keygen":
        # Printing the key is the command's purpose, so its JSON form holds it too.
        key = generate_master_key()
        print(json.dumps({"key": key}) if args.json else key)
        return EXIT_OK
    if args.command == "demo":
        from connector.demo import run_demo

        if args.dir is not None:
            make_folder(args.dir, option="--dir")
        return run_demo(console, directory=args.dir, customers=args.customers, as_json=args.json)
    if args.command == "sandbox":
        from connector.demo import run_sandboxes

        # Relative paths in a config are relative to it, so the CA goes where -c's file
        # looks for it, from whatever folder the command runs in.
        base = args.config.parent if args.config is not None else Path()
        directory = args.dir or base / "var" / "sandbox"
        make_folder(directory, option="--dir")
        return run_sandboxes(console, directory, args.customers, as_json=args.json)
    config_path = _need_config(args, parser)
    config = load_config(config_path)
    with _store_errors(config):
        return _dispatch_configured(args, parser, console, config_path, config)


@contextlib.contextmanager
def _store_errors(config: Config) -> Iterator[None]:
    """Store failures as the errors the exit status contract wants, without a traceback.

    A store path that cannot hold a store is the config's to fix (exit 2, naming
    ``store.path``). A store file found damaged while a command runs (SQLite notices a bad
    page when it reads it, which can be long after opening) is a StoreError (exit 1).
    """
    try:
        yield
    except StorePathError as exc:
        raise ConfigError(str(config.path), "store.path", str(exc)) from exc
    except sqlite3.Error as exc:
        found = damage(config.store_path, exc)
        if found is None:
            raise
        raise found from exc


def _dispatch_configured(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    console: Console,
    config_path: Path,
    config: Config,
) -> int:
    # The daemon reports through its log: `run --json` asks for it as JSON lines.
    log_format = "json" if args.command == "run" and args.json else config.logging.format
    setup_logging(config.logging.level, log_format)
    handled = cli_accountability.run(args, console, config)
    if handled is not None:
        return handled
    if args.command == "keys":
        return cli_keys.run(args, console, config)
    if args.command == "check":
        return run_loop(_check(config_path, args, console))
    if args.command == "run":
        return _run_daemon(config_path)
    if args.command == "resync":
        # Checked before the hand-off too: a job the daemon cannot run would be queued,
        # reported as queued, and end "done" having done nothing.
        _resync_flows(config, args.system)
        if daemon_running(config.store_path):
            return _queue_resync(config, args, console)
    if args.command == "sync" and not config.flows:
        return _no_flows(config, args)
    if args.command in ("sync", "resync"):
        return run_loop(_sync(config, args, console))
    if args.command == "status":
        return _status(config, args, console)
    if args.command == "audit":
        return _audit(config.store_path, args, console)
    if args.command == "dsr":
        return cli_dsr.run(args, console)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover


def _check_master_key(config: Config) -> dict[str, Any]:
    """Whether the master key opens the store (ConfigError if not); a missing store is new."""
    from connector.crypto import master_fingerprint
    from connector.keyset import check_master_key

    facts: dict[str, Any] = {"fingerprint": master_fingerprint(config.master_key)}
    # Checked without creating anything: a check makes no store.
    problem = store_path_problem(config.store_path)
    if problem is not None:
        raise StorePathError(config.store_path, problem)
    if not config.store_path.exists():
        facts["store"] = "not created yet"
        return facts
    store = Store(config.store_path)
    try:
        facts["store"] = "opens" if check_master_key(store, config) else "opens (not yet bound)"
    finally:
        store.close()
    return facts


async def _check(config_path: Path, args: argparse.Namespace, console: Console) -> int:
    config = load_config(config_path)
    summary: dict[str, Any] = {
        "config": str(config_path),
        "store": str(config.store_path),
        "systems": {
            name: {
                "adapter": s.adapter,
                "url": redact_url(s.base_url),
                "mapping": str(s.mapping),
                "fields_sent": config.mappings[name].outbound_fields,
                "private_ca": s.ca_bundle is not None,
            }
            for name, s in config.systems.items()
        },
        "flows": {
            f.name: {"source": f.source, "destinations": f.destinations} for f in config.flows
        },
        "online": {},
        # Worth knowing, not a failure: a config of systems only serves erasure and access.
        "warnings": (
            []
            if config.flows
            else ["no flow is configured ([[flows]]): sync and the daemon will move nobody"]
        ),
    }
    summary["master_key"] = _check_master_key(config)
    gaps = compliance.check_compliance(config)
    summary["compliance_gaps"] = [gap.as_dict() for gap in gaps]
    failed = bool(gaps)
    if args.online:
        from connector.adapter import Subject
        from connector.systems import open_systems

        # Only the systems: a check opens no store, so it creates none and binds no keys.
        systems = open_systems(config)
        try:
            for name, system in systems.items():
                try:
                    await system.adapter.find(Subject(email="klantsync-check@example.invalid"))
                    summary["online"][name] = "ok"
                except KlantsyncError as exc:
                    summary["online"][name] = str(exc)
                    failed = True
        finally:
            await systems.aclose()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_check(console, config_path, config, summary, gaps)
    return EXIT_FAILED if failed else EXIT_OK


def _print_check(
    console: Console,
    config_path: Path,
    config: Config,
    summary: dict[str, Any],
    gaps: Sequence[compliance.Gap],
) -> None:
    # Names, URLs and paths come from the config and messages from vendors' errors: printed
    # as text, never read as rich markup.
    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'s' if n != 1 else ''}"

    unreachable = [name for name, result in summary["online"].items() if result != "ok"]
    problems = [count(len(gaps), "compliance gap")] if gaps else []
    if unreachable:
        problems.append(f"{count(len(unreachable), 'system')} failed the online check")
    if problems:
        # The headline must not read "ok" when the command exits 1 for what follows.
        where = escape(str(config_path))
        console.print(f"[yellow]config valid[/], but {' and '.join(problems)} (below): {where}")
    else:
        reached = "; every system answered" if summary["online"] else ""
        console.print(f"[green]ok[/]: {escape(str(config_path))} is valid{escape(reached)}")
    key = summary["master_key"]
    line(f"  master key {key['fingerprint']}: store {key['store']}")
    for name, info in summary["systems"].items():
        line(f"  system {name}: {info['adapter']} at {info['url']}; {_sends(config, name, info)}")
    for name, info in summary["flows"].items():
        line(f"  flow {name}: {info['source']} -> {', '.join(info['destinations'])}")
    for warning in summary["warnings"]:
        console.print(f"  [yellow]warning[/]: {escape(warning)}")
    for name, result in summary["online"].items():
        # A remote error already starts with the system's name; the line names it once.
        line(f"  online {name}: {result.removeprefix(f'{name}: ')}")
    if gaps:
        console.print(f"[red]compliance gaps[/] ({len(gaps)}):")
    for gap in gaps:
        line(f"  gap: {gap}")


def _sends(config: Config, name: str, info: dict[str, Any]) -> str:
    """What the system is sent; a system no flow delivers to is a source only."""
    if info["fields_sent"]:
        return f"sends {', '.join(info['fields_sent'])}"
    if any(name in flow.destinations for flow in config.flows):
        return "sends nothing (its mapping allows no field)"
    return "sends nothing (source only)"


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
    and a bar drawn there would be in the way of it. The bar is transient, so what stays on
    the terminal is the report alone.
    """
    if not (show and console.is_terminal):
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(console=console, transient=True) as bar:
        yield _BarProgress(bar)


async def _sync(config: Config, args: argparse.Namespace, console: Console) -> int:
    dry_run = getattr(args, "dry_run", False)
    # A dry run writes no cursor, outbox or run: it may look beside a sync or the daemon.
    lock = contextlib.nullcontext() if dry_run else syncing(config.store_path, args.command)
    with lock:
        return await _sync_locked(config, args, console, dry_run=dry_run)


async def _sync_locked(
    config: Config, args: argparse.Namespace, console: Console, *, dry_run: bool
) -> int:
    async with open_runtime(config) as rt:
        settle_heap()
        if not dry_run:
            # With the sync lock held, a run still marked running was interrupted.
            rt.store.close_interrupted_runs()
        audit.record_config(rt.store, rt.config)
        reports: list[FlowReport] = []
        flow_names: list[str | None] = [args.flow] if args.command == "sync" else []
        if args.command == "resync":
            flow_names = list(_resync_flows(rt.config, args.system))
            audit.append(rt.store, "sync.manual", {"system": args.system, "full": args.full})
            if args.email:
                from connector.targeted import sync_subject

                reports = await sync_subject(rt, args.system, email=args.email)
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


def _no_flows(config: Config, args: argparse.Namespace) -> int:
    """``sync`` with no flow configured: said in one line, rather than an exit 0 in silence
    that reads like a sync that found nobody to move.

    Exit 0 (nothing failed). The line goes to stderr, so ``--json`` still prints ``[]``.
    """
    if args.flow is not None:
        config.flow(args.flow)  # raises the error any config gives for an unknown flow
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"nothing to sync: {config.path} configures no flow (add a [[flows]] table)",
        markup=False,
    )
    if args.json:
        print("[]")
    return EXIT_OK


def _run_daemon(config_path: Path) -> int:
    from connector.daemon import Daemon
    from connector.lock import DaemonLock

    config = load_config(config_path)
    # The sync lock for the daemon's whole life: it syncs whenever its schedule or a webhook
    # says, so a `sync` beside it is refused (and told to hand the work over with `resync`).
    with DaemonLock(config.store_path), syncing(config.store_path, "daemon"):

        async def serve() -> None:
            async with open_runtime(config) as rt:
                settle_heap()
                await Daemon(rt).serve()

        run_loop(serve())
    return EXIT_OK


def _resync_flows(config: Config, system: str) -> list[str]:
    """The flows a resync of ``system`` runs; ConfigError (exit 2) when there are none."""
    if system not in config.systems:
        raise ConfigError(str(config.path), "systems", f"no system named {system!r}")
    flows = [f.name for f in config.flows if f.source == system]
    if not flows:
        raise ConfigError(str(config.path), "flows", f"no flow has {system!r} as its source")
    return flows


def _queue_resync(config: Config, args: argparse.Namespace, console: Console) -> int:
    """The daemon runs: hand it the resync (it starts within a second) instead of racing it."""
    with sharing_keys(config.store_path):
        job_id = _enqueue_resync(config, args)
    if args.json:
        print(json.dumps({"queued": True, "job_id": job_id}))
    else:
        console.print(f"the daemon runs on this store: resync queued as job {job_id}")
    return EXIT_OK


def _enqueue_resync(config: Config, args: argparse.Namespace) -> int:
    from connector import jobs
    from connector.keyset import open_keyring

    store = Store(config.store_path)
    try:
        params: dict[str, Any] = {"system": args.system, "full": args.full}
        if args.email:
            params["email"] = args.email.strip().lower()
        job_id = jobs.enqueue(store, open_keyring(store, config), "resync", params)
        audit.append(store, "sync.manual", {"system": args.system, "full": args.full})
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
            f"dead-lettered {dest.dead_lettered}, left queued {dest.retry_later}"
            + (
                f", still rejected {dest.still_rejected} (not re-sent until changed or --full)"
                if dest.still_rejected
                else ""
            )
            + (f" (last: {escape(dest.deferred)})" if dest.retry_later and dest.deferred else "")
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
            "their existing records were updated, not duplicated"
        )
    if report.withheld_fields:
        withheld = ", ".join(f"{k} ({v})" for k, v in sorted(report.withheld_fields.items()))
        console.print(f"  withheld (not in any mapping, never sent): {escape(withheld)}")
    for error in report.errors:
        console.print(f"  [red]error[/]: {escape(error)}")


def _status(config: Config, args: argparse.Namespace, console: Console) -> int:
    from connector.keyset import key_facts

    store_path, flows = config.store_path, [f.name for f in config.flows]
    problem = store_path_problem(store_path)
    if problem is not None:
        raise StorePathError(store_path, problem)
    if not store_path.exists():
        return _status_without_store(config, args, console)
    store = Store(store_path)
    try:
        runs = _runs_now(store)
        data: dict[str, Any] = {
            "store": str(store_path),
            "schema_version": store.schema_version,
            "counts": store.counts(),
            "queued": store.outbox_counts(),
            "flows": {
                name: (
                    {
                        "last_started": runs[name][0],
                        "last_finished": runs[name][1],
                        "last_status": runs[name][2],
                        "last_success": store.last_success(name),
                    }
                    if name in runs
                    else {"last_status": "never run"}
                )
                for name in flows
            },
            # The 20 most recently refused; the reason is the vendor's category, never its
            # message, and the subject its HMAC id.
            "dead_letters": [
                {
                    "id": d.id,
                    "system": d.system,
                    "subject": d.subject_id,
                    "reason": d.reason,
                    "refusals": d.refusals,
                    "first_refused_at": d.first_refused_at,
                    "last_refused_at": d.created_at,
                }
                for d in store.dead_letters()[-20:]
            ],
            "requests": dsr_summary(store),
            "daemon_running": daemon_running(store_path),
            "sync_running": sync_running(store_path),
            "keys": key_facts(store, config),
            "store_exists": True,
        }
    finally:
        store.close()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    console.print(f"store {escape(str(store_path))} (schema v{data['schema_version']})")
    keys = data["keys"]
    if keys["bound"]:
        opens = "" if keys["keys_source_matches"] else " [bold red]NOT the key in keys.source[/]"
        console.print(
            f"  master key {keys['master_fingerprint']}{opens} "
            f"(last rotated {keys['rotated_at'] or 'never'})",
            markup=True,
        )
    for name, info in data["flows"].items():
        stopped = (
            "; its process stopped mid-run, the next sync resumes where it stopped"
            if info.get("last_status") == "interrupted"
            else ""
        )
        console.print(
            f"  flow {escape(name)}: {escape(str(info.get('last_status')))} "
            f"(last success {info.get('last_success') or 'never'}){stopped}"
        )
    counts = data["counts"]
    per_system = escape(", ".join(f"{name} {n}" for name, n in data["queued"].items()))
    console.print(
        f"  queued {counts['outbox']}{f' ({per_system})' if per_system else ''}, "
        f"dead letters {counts['dead_letters']}, "
        f"known subjects {counts['subjects']} ({counts['identities']} system ids), "
        f"suppressed {counts['suppression']}, "
        f"audit entries {counts['audit']}"
    )
    requests = data["requests"]
    console.print(
        f"  data subject requests: {requests['open']} open, {requests['overdue']} overdue, "
        f"{requests['flagged']} due within 7 days"
    )
    for request in requests["requests"]:
        mark = "OVERDUE" if request["overdue"] else ("due soon" if request["flagged"] else "")
        waiting = escape(", ".join(request["waiting_on"])) or "-"
        console.print(
            f"    {request['id']} {request['kind']}: {request['days_left']} days left "
            f"(deadline {request['deadline']}) waiting on {waiting} {mark}".rstrip()
        )
    console.print(f"  daemon: {'running' if data['daemon_running'] else 'not running'}")
    if data["sync_running"] and not data["daemon_running"]:
        console.print("  sync: running now")
    for dead in data["dead_letters"]:
        when = (
            f"refused {dead['refusals']} times, first {dead['first_refused_at']}, "
            f"last {dead['last_refused_at']}"
            if dead["refusals"] > 1
            else f"refused {dead['last_refused_at']}"
        )
        console.print(
            f"  dead letter #{dead['id']} {dead['system']} {dead['subject']}: {dead['reason']} "
            f"({when})",
            markup=False,
        )
    return EXIT_OK


def _runs_now(store: Store) -> dict[str, tuple[str, str | None, str, str | None]]:
    """Each flow's latest run, one still marked running shown as ``interrupted`` when no
    process holds the sync lock (the process running it died: ``kill -9``, a power cut).

    The lock is looked at before and after the runs are read, so a sync that takes it in
    between (and has just recorded its run) is not taken for an interrupted one.
    """
    syncing_before = sync_running(store.path)
    runs = store.last_runs()
    if syncing_before or not any(run[2] == "running" for run in runs.values()):
        return runs
    if sync_running(store.path):
        return runs
    return {
        flow: (run[0], run[1], "interrupted", run[3]) if run[2] == "running" else run
        for flow, run in runs.items()
    }


def _status_without_store(config: Config, args: argparse.Namespace, console: Console) -> int:
    """No store yet: nothing has run. Said so without opening one, which would create it."""
    flows = {flow.name: {"last_status": "never run"} for flow in config.flows}
    if args.json:
        data = {
            "store": str(config.store_path),
            "store_exists": False,
            "flows": flows,
            "daemon_running": False,
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    console.print(
        f"store {escape(str(config.store_path))}: not created yet (nothing synced yet; "
        "the first command that syncs creates it)"
    )
    for name in flows:
        console.print(f"  flow {escape(name)}: never run")
    return EXIT_OK


def _audit(store_path: Path, args: argparse.Namespace, console: Console) -> int:
    problem = store_path_problem(store_path)
    if problem is not None:
        raise StorePathError(store_path, problem)
    if not store_path.exists():
        return _audit_without_store(store_path, args, console)
    store = Store(store_path)
    try:
        if args.action == "verify":
            result = audit.verify(store)
            if args.json:
                print(json.dumps({**vars(result), "store_exists": True}))
            elif result.ok:
                console.print(f"[green]ok[/]: audit chain intact ({result.checked} entries)")
                # Recorded outside the store, the head hash catches a wholesale rewrite.
                console.print(
                    f"  head: entry {result.head_seq}, hash {result.head_hash}", soft_wrap=True
                )
            else:
                console.print(
                    f"[red]broken[/]: entry {result.first_bad}: {escape(result.problem)} "
                    f"({result.checked} entries verified before it)"
                )
            return EXIT_OK if result.ok else EXIT_FAILED
        out = sys.stdout
        try:
            since = audit.parse_since(args.since) if args.since else None
        except ValueError as exc:
            raise ConfigError("--since", "", str(exc)) from None
        for entry in audit.entries(store, since=since):
            out.write(json.dumps(vars(entry), sort_keys=True) + "\n")
        return EXIT_OK
    finally:
        store.close()


def _audit_without_store(store_path: Path, args: argparse.Namespace, console: Console) -> int:
    """No store, so no chain: nothing to verify or export, and nothing is created.

    ``verify`` exits 0: no entry failed a check (exit 1 means one did). It says in words, and
    in JSON as ``store_exists: false`` with ``checked: 0``, that there was nothing to check;
    a store that vanished shows there, and as a head hash recorded elsewhere gone missing.
    """
    if args.action == "export":
        if args.since:
            try:
                audit.parse_since(args.since)
            except ValueError as exc:
                raise ConfigError("--since", "", str(exc)) from None
        return EXIT_OK  # no entries: an empty export, as for a store with none
    result = audit.VerifyResult(ok=True, checked=0)
    if args.json:
        print(json.dumps({**vars(result), "store_exists": False}))
    else:
        console.print(
            f"no store at {escape(str(store_path))} yet: no audit entries to verify", markup=True
        )
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
