"""``klantsync backup`` and ``klantsync restore``: the store copied while in use, and put back.

The work is :mod:`connector.backup`'s; this module parses, calls and prints. Exit status as
everywhere: 0 done, 1 the store is in use or cannot be read (or, for ``backup``, the
backup was written but the store's audit trail does not verify, or could not record it),
2 bad usage (an ``--out`` or ``--from`` that cannot be one, a backup that is not one, the
wrong master key).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector.backup import take_backup
from connector.cliargs import EXIT_FAILED, EXIT_OK, check_writable
from connector.config import Config
from connector.restore import restore_backup
from connector.stages import shown
from connector.wording import counted

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add ``backup`` and ``restore`` to the CLI's subparsers."""
    backup = subparsers.add_parser(
        "backup",
        help="copy the store to a file, consistently, while the daemon runs",
        description="Copy the store to one file as of one moment (SQLite's online backup), "
        "check it and record it in the audit trail. The copy holds what the store holds: "
        "HMAC ids and sealed data, nothing in clear; it opens only with the master key.",
    )
    backup.add_argument("--out", required=True, type=Path, help="the backup file to write")
    backup.add_argument("--json", action="store_true", help="machine-readable output")
    restore = subparsers.add_parser(
        "restore",
        help="put a backup in place of the store, keeping what happened since "
        "(stop the daemon first)",
        description="Put a backup in place of the store. The sync's bookkeeping goes back to "
        "the backup; what happened since does not: from the replaced store, when it can be "
        "read, the restored one takes erasures, who was first sent where, data subject "
        "requests, queued jobs, webhook ids, bundles and incidents. The outbox is emptied "
        "(the next sync queues again what the systems lack) but for the writes kept from a "
        "customer's former address, and the replaced store is kept beside it.",
    )
    restore.add_argument(
        "--from", dest="source", required=True, type=Path, help="the backup file to restore"
    )
    restore.add_argument(
        "--over-a-new-store",
        action="store_true",
        help="the store at store.path was made anew after the one the backup is of was lost: "
        "restore over it although it is another store, carrying over what it holds",
    )
    restore.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, console: Console, config: Config) -> int | None:
    """Handle ``backup`` and ``restore``; ``None`` for any other command."""
    if args.command == "backup":
        return _backup(args, console, config)
    if args.command == "restore":
        return _restore(args, console, config)
    return None


def _backup(args: argparse.Namespace, console: Console, config: Config) -> int:
    check_writable(args.out, option="--out", example="klantsync-backup.db")
    with shown(console, "backup", show=not args.json) as step:
        facts = take_backup(config, args.out, step=step)
    # Written all the same (what it holds may still be wanted), but exit 1: a timer taking
    # daily backups shows a failure from the day the trail broke, not on the day of need.
    done = EXIT_OK if facts.audit_verifies and facts.recorded else EXIT_FAILED
    if args.json:
        print(json.dumps(facts.as_dict()))
        return done
    size = facts.bytes / 1_000_000
    console.print(f"backup written: {escape(facts.path)} ({size:.1f} MB, sha256 {facts.sha256})")
    console.print(
        f"  the store as of {facts.taken_at}: schema {facts.schema_version}, audit chain "
        f"to entry {facts.audit_seq} ({facts.audit_hash[:16]}), {facts.suppressed} "
        f"suppression entries, {facts.open_requests} open requests"
    )
    console.print(
        f"  it opens only with master key {facts.master_fingerprint}: keep the key with the "
        "backup's keeper, not in the same place"
    )
    if not facts.audit_verifies:
        console.print(
            f"[red]the store's audit trail does not verify ({escape(facts.audit_problem)}): "
            "`klantsync restore` refuses this backup, as every one taken while the trail is "
            "broken; a backup taken before the damage still restores[/red]"
        )
    if not facts.recorded:
        console.print(
            "[red]the backup is whole, but the store could not record it in its audit "
            f"trail: {escape(facts.record_problem)}; keep it, and take another once the "
            "store can be written, so the trail records a backup[/red]"
        )
    return done


def _restore(args: argparse.Namespace, console: Console, config: Config) -> int:
    with shown(console, "restore", show=not args.json) as step:
        facts = restore_backup(
            config, args.source, over_a_new_store=args.over_a_new_store, step=step
        )
    if args.json:
        print(json.dumps(facts.as_dict()))
        return EXIT_OK
    console.print(
        f"store restored from {escape(str(args.source))} (sha256 {facts.backup_sha256}; its "
        f"audit chain went to entry {facts.backup_audit_seq})"
    )
    if facts.replaced_path is not None:
        console.print(f"  the store it replaced is kept as {escape(facts.replaced_path)}")
    carried = facts.carried
    if facts.replaced_readable:
        console.print(
            f"  taken over from it: {counted(carried['suppression'], 'erasure')} since the "
            f"backup (their {counted(carried['traces_deleted'], 'row')} deleted here), "
            f"{counted(carried['people'], 'person', 'people')} first sent somewhere since, "
            f"{counted(carried['delivered_since'], 'payload')} delivered since to people it "
            f"knew, {counted(carried['requests'], 'data subject request')}, "
            f"{counted(carried['jobs'], 'job')}, {counted(carried['incidents'], 'incident')}, "
            f"{counted(carried['bundles'], 'access bundle')}"
        )
    kept = (
        f"; {facts.outbox_kept} kept, each holding a write from a customer's former address "
        "that goes first"
        if facts.outbox_kept
        else ""
    )
    console.print(
        f"  outbox: {counted(facts.outbox_dropped, 'payload')} dropped (the next sync queues again "
        f"whatever the systems lack){kept}"
    )
    if facts.reads_in_full_next:
        console.print(
            "  read in full at their next run, to queue again what was dropped: "
            + ", ".join(facts.reads_in_full_next)
        )
    retired = facts.master_key_retired
    key_said = {
        "from the backup": "put back from the backup (the one beside the store was not this "
        "store's, or was missing)",
        "set aside": "beside the store was not this store's and the backup has none: set "
        "aside; a new key was made",
    }
    if retired is not None:
        # The file beside the store was this store's, sealed under the rotation's keys.
        key_said["from the backup"] = (
            "put back from the backup (the one beside the store was sealed under the keys "
            "of the master key rotation this restore undid; it is kept beside the store)"
        )
    if facts.receipt_key in key_said:
        console.print(f"  receipt signing key: {key_said[facts.receipt_key]}")
    if retired is not None:
        _say_rotation_undone(console, retired)
    if facts.not_carried:
        console.print(
            "[yellow]  not taken over (sealed under keys a master key rotation made since the "
            "backup, or a store of another klantsync version), so only in the replaced store: "
            + escape(", ".join(facts.not_carried))
            + "[/]",
            markup=True,
        )
    if not facts.replaced_readable:
        gone = "there was no store" if facts.replaced_path is None else "it could not be read"
        console.print(
            f"[yellow]no erasure made since the backup was carried over ({gone}): erase "
            "again everyone erased since (the receipts you sent and `audit export` of any "
            "later copy say which requests)[/]",
            markup=True,
        )
    return EXIT_OK


def _say_rotation_undone(console: Console, retired: dict[str, str]) -> None:
    """The restored store is under a master key a rotation retired (perhaps because it
    leaked): what is sealed from now on opens with that key again, until it is rotated."""
    console.print(
        f"[yellow]the store is back under master key {retired['master_fingerprint']}, which "
        f"a master key rotation retired at {retired['retired_at']} (the replaced store was "
        f"under {retired['replaced_store_under']}): the restore undid that rotation. Make it "
        "again: `klantsync keys rotate --to SOURCE` (the key the replaced store was under, or "
        "a new one from `klantsync keygen`), then point keys.source at it[/]",
        markup=True,
    )
