"""`status` and `audit`: what the store holds and where its runs stand, and the audit
chain verified or exported. Neither creates a store where there is none, and `status`,
`audit verify` and `audit export` leave an older store at its schema (they look at a private
copy). An export is recorded in the trail (``audit.exported``), but for one read from such a
copy."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector import audit, incidents
from connector.aside import aside_folder
from connector.cliargs import EXIT_FAILED, EXIT_OK, tell
from connector.config import Config
from connector.dsr_views import deadline_shown
from connector.dsr_views import summary as dsr_summary
from connector.errors import ConfigError
from connector.keyset import check_master_key
from connector.lock import daemon_running, sharing_keys, sync_running
from connector.runtime import looked_at, schema_of
from connector.state import Store
from connector.storefile import store_exists
from connector.wording import counted

__all__ = ["audit_chain", "status"]


#: Dead letters the text output lists, the latest; ``--json`` lists every one.
DEAD_LETTERS_SHOWN = 20


def status(config: Config, args: argparse.Namespace, console: Console) -> int:
    store_path = config.store_path
    if not store_exists(store_path):
        return _status_without_store(config, args, console)
    # A store that opening would migrate is read as a private copy: it is the store the
    # older daemon still runs on, after a new version is installed.
    with looked_at(config, tell, keyed=False, looking="status") as looked:
        store = Store(looked.store_path)
        try:
            # The text lists the latest few dead letters: only those are read for it.
            shown = None if args.json else DEAD_LETTERS_SHOWN
            data = _status_data(store, store_path, config, dead_letters=shown)
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
        errors = info.get("last_errors") or []
        why = f": {errors[0]}" if errors else ""
        why += f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        console.print(
            f"  flow {escape(name)}: {escape(str(info.get('last_status')))} "
            f"(last success {info.get('last_success') or 'never'}){stopped}{escape(why)}"
        )
        if info.get("reads_in_full_next"):
            console.print(
                f"    reads its source in full at its next run: {info['reads_in_full_next']}"
            )
    counts = data["counts"]
    per_system = escape(", ".join(f"{name} {n}" for name, n in data["queued"].items()))
    # What waits to be sent, as the breakdown and the outbox gauge count it: the outbox
    # table also keeps held rows (a former address's write, never sent).
    waiting = sum(data["queued"].values())
    console.print(
        f"  queued {waiting}{f' ({per_system})' if per_system else ''}, "
        f"dead letters {counts['dead_letters']}, "
        f"known subjects {counts['subjects']} ({counts['identities']} system ids), "
        f"suppressed {counts['suppression']}, "
        f"audit entries {counts['audit']}"
    )
    requests = data["requests"]
    console.print(
        f"  data subject requests: {requests['open']} open, {requests['overdue']} overdue, "
        f"{requests['due_soon']} due within 7 days"
    )
    for request in requests["requests"]:
        mark = "OVERDUE" if request["overdue"] else ("due soon" if request["flagged"] else "")
        waiting = escape(", ".join(request["waiting_on"])) or "-"
        # The Dutch date, as `dsr list` and `dsr show` print it (--json keeps the moment).
        console.print(
            f"    {request['id']} {request['kind']}: {request['days_left']} days left "
            f"(deadline {deadline_shown(request['deadline'])}) waiting on {waiting} "
            f"{mark}".rstrip()
        )
        for system, detail in request.get("on_hold", {}).items():
            console.print(f"      {escape(system)}: {escape(detail)}")
    breaches = data["incidents"]
    if breaches["open"]:
        console.print(
            f"  breach incidents: {breaches['open']} open, {breaches['overdue']} past their "
            "72 hours (klantsync incident show ID)"
        )
        for incident in breaches["incidents"]:
            mark = " OVERDUE" if incident["status"] == "overdue" else ""
            console.print(
                f"    incident {incident['id']}: {incident['time_left']} "
                f"(deadline {incident['deadline']}){mark}"
            )
    backup, restore = data["last_backup"]["backup"], data["last_backup"]["restore"]
    console.print(
        f"  last backup: {backup['at']} (sha256 {backup['sha256'][:16]})"
        if backup
        else "  last backup: none recorded (klantsync backup --out FILE)"
    )
    if restore:
        console.print(
            f"  restored {restore['at']} from the backup with sha256 {restore['sha256'][:16]}"
        )
    console.print(f"  daemon: {'running' if data['daemon_running'] else 'not running'}")
    if data["sync_running"] and not data["daemon_running"]:
        console.print("  sync: running now")
    dead_letters = data["dead_letters"]
    if data["counts"]["dead_letters"] > DEAD_LETTERS_SHOWN:
        console.print(
            f"  the latest {DEAD_LETTERS_SHOWN} dead letters of {data['counts']['dead_letters']} "
            "(status --json lists every one):"
        )
    for dead in dead_letters[-DEAD_LETTERS_SHOWN:]:
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


def _status_data(
    store: Store, store_path: Path, config: Config, *, dead_letters: int | None = None
) -> dict[str, Any]:
    """What ``status`` reports of ``store``: the store at ``store_path``, or a private copy
    of it, migrated (the schema and the locks are then the store's own, read beside it).
    ``dead_letters``: list only that many, the latest (every one without)."""
    from connector.backup import last_backup
    from connector.engine import flow_shape, reads_in_full
    from connector.keyset import key_facts

    runs, flows = _runs_now(store, store_path), [f.name for f in config.flows]
    # Why a flow that has run reads its source in full next (null: it resumes from its
    # cursor). A full read of a large shop is slow, and after another flow's write took
    # one of its own it comes with no change the operator made.
    full_next = {f.name: reads_in_full(store, f, flow_shape(config, f)) for f in config.flows}
    return {
        "store": str(store_path),
        "schema_version": (
            store.schema_version if store.path == store_path else schema_of(store_path)
        ),
        "counts": store.counts(),
        "queued": store.outbox_counts(),
        "flows": {
            name: (
                {
                    "last_started": runs[name][0],
                    "last_finished": runs[name][1],
                    "last_status": runs[name][2],
                    "last_success": store.last_success(name),
                    # Why the latest run failed, as its summary says (the errors name
                    # systems, calls and the vendor's category, never a person).
                    "last_errors": _run_errors(runs[name][3]),
                    "reads_in_full_next": full_next[name],
                }
                if name in runs
                else {"last_status": "never run"}
            )
            for name in flows
        },
        # Every one (the text lists the latest few); the reason is the vendor's category,
        # never its message, and the subject its HMAC id.
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
            for d in store.dead_letters(latest=dead_letters)
        ],
        "requests": dsr_summary(store),
        # The 72-hour breach clocks still running (closed ones: `incident list`).
        "incidents": incidents.open_summary(store),
        "daemon_running": daemon_running(store_path),
        "sync_running": sync_running(store_path),
        "keys": key_facts(store, config),
        "last_backup": last_backup(store),
        "store_exists": True,
    }


def _run_errors(summary: str | None) -> list[str]:
    """Why a run failed, as its stored summary says (none for a run still going or cut
    short): its errors, then each destination that left records behind and why.

    A run fails too when a destination only deferred its records (down for the whole run)
    or refused some; that reason is in the destination's part of the summary, and a failed
    flow shown with no reason sent the operator looking at every system.
    """
    try:
        data = json.loads(summary or "{}")
        errors = data.get("errors")
        destinations = data.get("destinations")
    except (ValueError, AttributeError):
        return []
    said = [str(e) for e in errors] if isinstance(errors, list) else []
    for name, dest in (destinations if isinstance(destinations, dict) else {}).items():
        if not isinstance(dest, dict):
            continue
        if dest.get("retry_later") and not dest.get("fatal"):  # a stop is in the errors
            why = f" ({dest['deferred']})" if dest.get("deferred") else ""
            deferred = counted(dest["retry_later"], "record")
            said.append(f"{name}: {deferred} deferred to the next run{why}")
        if dest.get("dead_lettered"):
            refused = counted(dest["dead_lettered"], "record")
            said.append(f"{name}: {refused} refused (see dead letters)")
        if dest.get("not_erased"):
            landed = counted(dest["not_erased"], "write")
            said.append(f"{name}: {landed} landed after an erasure")
    return said


def _runs_now(store: Store, store_path: Path) -> dict[str, tuple[str, str | None, str, str | None]]:
    """Each flow's latest run, one still marked running shown as ``interrupted`` when no
    process holds the sync lock of the store at ``store_path`` (``store`` may be a private
    copy of it) (the process running it died: ``kill -9``, a power cut).

    The lock is looked at before and after the runs are read, so a sync that takes it in
    between (and has just recorded its run) is not taken for an interrupted one.
    """
    syncing_before = sync_running(store_path)
    runs = store.last_runs()
    if syncing_before or not any(run[2] == "running" for run in runs.values()):
        return runs
    if sync_running(store_path):
        return runs
    return {
        flow: (run[0], run[1], "interrupted", run[3]) if run[2] == "running" else run
        for flow, run in runs.items()
    }


def _status_without_store(config: Config, args: argparse.Namespace, console: Console) -> int:
    """No store yet: nothing has run. Said so without opening one, which would create it."""
    flows = {flow.name: {"last_status": "never run"} for flow in config.flows}
    if args.json:
        # The keys a store's answer has, each as an empty store gives it (made aside and
        # deleted): a script reading `counts.outbox` or `requests.overdue` on a deployment
        # not synced yet finds 0, not a missing key. No schema yet, and no lock to look at:
        # the lock files lie beside the store, and looking makes them.
        with aside_folder() as aside:
            empty = Store(Path(aside) / config.store_path.name)
            try:
                data = _status_data(empty, empty.path, config)
            finally:
                empty.close()
        data.update(
            store=str(config.store_path),
            schema_version=None,
            flows=flows,
            daemon_running=False,
            sync_running=False,
            store_exists=False,
        )
        print(json.dumps(data, indent=2))
        return EXIT_OK
    console.print(
        f"store {escape(str(config.store_path))}: not created yet (nothing synced yet; "
        "the first command that syncs creates it)"
    )
    for name in flows:
        console.print(f"  flow {escape(name)}: never run")
    return EXIT_OK


def audit_chain(config: Config, args: argparse.Namespace, console: Console) -> int:
    store_path = config.store_path
    if args.action == "verify" and args.since:
        # A chain is verified from its anchor to its head, or it proves nothing; taken as
        # "verify since", the option was ignored and the whole chain said intact.
        raise ConfigError("--since", "", "applies to export only; verify checks the whole chain")
    if not store_exists(store_path):
        return _audit_without_store(store_path, args, console)
    if args.action == "verify":
        return _verify(config, args, console)
    try:
        since = audit.parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError("--since", "", str(exc)) from None
    # Read as a private copy where opening would migrate the store (said on stderr, so the
    # export stays the entries alone).
    with looked_at(config, tell, keyed=False, looking="audit export") as looked:
        if looked.store_path != store_path:
            copy = Store(looked.store_path)
            try:
                _export(copy, since, _Written())
            finally:
                copy.close()
            # The copy is thrown away: an entry there would be recorded nowhere, and one in
            # the store would be a write (after a migration) a look must not make.
            tell("the export is not recorded in the audit trail: the store was read as a copy")
            return EXIT_OK
    # The keyed subject ids in it leave the store: recorded, as a backup is (`store.backup`),
    # with the store's keys (refused where they are not its), as every writer holds them.
    with sharing_keys(store_path):
        store = Store(store_path)
        try:
            check_master_key(store, config)
            _export_recorded(store, since)
        finally:
            store.close()
    return EXIT_OK


def _verify(config: Config, args: argparse.Namespace, console: Console) -> int:
    """``audit verify``: the chain of the store, or of a private copy where opening would
    migrate it (said on stderr), as `audit export` reads it. Verified as it was, an older
    store was migrated by the look, and the older daemon still running on it refused it at
    its next start ("newer than this klantsync supports").

    With the store's keys, which the head's and the anchor's MACs are checked with: shared,
    as every command using them holds it. A chain from before the MACs is keyed here, but
    not on a copy: keyed there, it was reported keyed, and the store's was not.
    """
    with (
        looked_at(config, tell, keyed=False, looking="audit verify") as looked,
        sharing_keys(looked.store_path),
    ):
        copy = looked.store_path != config.store_path
        store = Store(looked.store_path)
        try:
            check_master_key(store, looked)  # refuses a key not the store's
            result = audit.verify(store, adopt=not copy)
        finally:
            store.close()
    return _verified(result, args, console, copy=copy)


@dataclass
class _Written:
    """The entries an export has written so far: how many, the seqs of the first and the
    last (None while there are none)."""

    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def add(self, seq: int) -> None:
        self.entries += 1
        self.first_seq = seq if self.first_seq is None else self.first_seq
        self.last_seq = seq


def _export_recorded(store: Store, since: str | None) -> None:
    """``audit export`` of the store itself, recorded as ``audit.exported`` with what it
    wrote, and whether it ran to its end (``complete``).

    An export cut short (its reader gone, as with ``| head``; a full disk; Ctrl-C) has
    taken the entries it wrote out of the store all the same: it is recorded too, with
    those, before the error ends the command. Left to the error, it was recorded nowhere.
    """
    written = _Written()
    try:
        _export(store, since, written)
    except (OSError, KeyboardInterrupt):
        _record_export(store, since, written, complete=False)
        raise
    _record_export(store, since, written, complete=True)


def _record_export(store: Store, since: str | None, written: _Written, *, complete: bool) -> None:
    audit.append(
        store, audit.AUDIT_EXPORTED, {**asdict(written), "since": since, "complete": complete}
    )


def _export(store: Store, since: str | None, written: _Written) -> None:
    """Write the entries at or after ``since`` to stdout as JSON Lines, each counted in
    ``written`` once its line is written."""
    out = sys.stdout
    for seq, line in audit.export_lines(store, since=since):
        out.write(line)
        written.add(seq)
    # Flushed here, not as the command ends: a reader gone while the last lines still sat
    # in the buffer is found before the export is recorded as complete.
    out.flush()


#: What ``audit verify`` adds of the head's and the anchor's MACs, when it is not "checked".
_MAC_SAID = {
    audit.MAC_ADOPTED: "its head and anchor had no MAC yet (a store from before they were "
    "keyed): keyed now",
    audit.MAC_UNCHECKED: "its head and anchor were not checked against their MAC: no key",
    audit.MAC_UNKEYED: "its head and anchor have no MAC yet, and there was no key to add it",
}


#: What ``audit verify`` says of a chain from before the MACs in a private copy of the store.
_MAC_LEFT_UNKEYED = (
    "its head and anchor have no MAC yet (a store from before they were keyed): the first "
    "command that writes to the store with its keys adds them"
)


def _verified(
    result: audit.VerifyResult, args: argparse.Namespace, console: Console, *, copy: bool = False
) -> int:
    """Say ``result``; ``copy``: it is a private copy's (a chain there is left unkeyed)."""
    if args.json:
        print(json.dumps({**vars(result), "store_exists": True}))
    elif result.ok:
        keyed = result.mac in (audit.MAC_CHECKED, audit.MAC_ADOPTED)
        what = "audit chain intact" if keyed else "audit chain's entries intact"
        console.print(f"[green]ok[/]: {what} ({counted(result.checked, 'entry', 'entries')})")
        if copy and result.mac == audit.MAC_UNKEYED:
            console.print(f"  {_MAC_LEFT_UNKEYED}")
        elif result.mac in _MAC_SAID:
            console.print(f"  {_MAC_SAID[result.mac]}")
        # Recorded outside the store, the head hash catches a wholesale rewrite.
        console.print(f"  head: entry {result.head_seq}, hash {result.head_hash}", soft_wrap=True)
    else:
        console.print(
            f"[red]broken[/]: entry {result.first_bad}: {escape(result.problem)} "
            f"({counted(result.checked, 'entry', 'entries')} verified before it)"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


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
        # No entries: an empty export, as for a store with none; said on stderr, so the
        # export's output stays empty and an archive can tell why.
        print(f"no store at {store_path} yet: no audit entries to export", file=sys.stderr)
        return EXIT_OK
    result = audit.VerifyResult(ok=True, checked=0)
    if args.json:
        print(json.dumps({**vars(result), "store_exists": False}))
    else:
        console.print(
            f"no store at {escape(str(store_path))} yet: no audit entries to verify", markup=True
        )
    return EXIT_OK
