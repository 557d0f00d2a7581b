"""``klantsync keys``: the store's keys. ``keys show`` and ``keys rotate --to SOURCE``.

Replacing the master key is for when it may have leaked, or when policy says it is time: the
new key is made with ``klantsync keygen`` and put where secrets live (a file only the service
reads, or the service's environment); ``keys rotate --to`` names it as ``keys.source`` would.
After the rotation the old key no longer opens the store, so ``keys.source`` must be pointed
at the new one before the next command. Run again after a rotation cut short past its commit
(``keys.source`` still naming the old key), it finishes what that one left and says so. What
a rotation cannot renew (the subject and payload keys, and the receipt signing key, which
``dsr rotate-key`` replaces) is said with it. Exit status as everywhere: 0 done, 1 the
store could not be changed (another command or the daemon has it open), 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector.cliargs import EXIT_OK, tell
from connector.config import Config
from connector.crypto import decode_master_key, master_fingerprint
from connector.errors import ConfigError, StoreError
from connector.keyset import (
    KEPT_KEYS,
    Rotation,
    RotationFinished,
    finish_rotation,
    key_facts,
    open_keyring,
    rotate_master_key,
)
from connector.lock import keys_alone, sharing_keys
from connector.runtime import looked_at
from connector.secrets import resolve_secret
from connector.state import Store
from connector.storefile import store_exists

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add ``keys`` to the CLI's subparsers."""
    keys = subparsers.add_parser(
        "keys",
        help="the store's keys: show the master key in use, or replace it",
        description="The store's keys: which master key it is kept under, and replacing it.",
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    shown = "fingerprint of the master key the store is kept under"
    show = actions.add_parser("show", help=shown, description=shown)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    rotate = actions.add_parser(
        "rotate",
        help="put the store under a new master key (stop the daemon first)",
        description="Wrap the store's keys under a new master key and seal everything kept "
        "sealed again under a fresh key. Afterwards point keys.source at the new key.",
    )
    rotate.add_argument(
        "--to",
        required=True,
        metavar="SOURCE",
        help="the new master key, as keys.source names one: env:NAME, file:PATH (a relative "
        "path relative to the config file) or credential:NAME (make the key with "
        "`klantsync keygen`)",
    )
    rotate.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, console: Console, config: Config) -> int:
    """Handle ``keys show`` and ``keys rotate``."""
    if args.keys_action == "show":
        return _show(args, console, config)
    return _rotate(args, console, config)


def _show(args: argparse.Namespace, console: Console, config: Config) -> int:
    if not store_exists(config.store_path):
        return _no_store_yet(args, console, config)
    # A store that opening would migrate is read as a private copy (said on stderr): it is
    # the store the older daemon still runs on, after a new version is installed.
    with (
        looked_at(config, tell, keyed=False, looking="keys show") as looked,
        sharing_keys(looked.store_path),
    ):
        store = Store(looked.store_path)
        try:
            open_keyring(store, looked)  # refuses a key not the store's; binds a new store
            keys = key_facts(store, looked)
        finally:
            store.close()
    created, rotated = keys["created_at"], keys["rotated_at"]
    facts = {
        "master_fingerprint": keys["master_fingerprint"],
        "created_at": created,
        "rotated_at": rotated,
    }
    if args.json:
        print(json.dumps({**facts, "store_exists": True}))
    else:
        console.print(f"master key fingerprint {facts['master_fingerprint']}")
        console.print(f"keys created {created}; last rotated {rotated or 'never'}")
    return EXIT_OK


def _no_store_yet(args: argparse.Namespace, console: Console, config: Config) -> int:
    """``keys show`` where there is no store: said, and none made (a store made here would
    be bound to whatever key keys.source names, at a path that may be a mistake)."""
    fingerprint = master_fingerprint(config.master_key)
    if args.json:
        facts = {"master_fingerprint": None, "created_at": None, "rotated_at": None}
        print(json.dumps({**facts, "store_exists": False, "keys_source": fingerprint}))
    else:
        console.print(
            f"no store at {escape(str(config.store_path))} yet: the first command that uses "
            f"it keeps it under the key keys.source names (fingerprint {fingerprint})",
            markup=True,
        )
    return EXIT_OK


def _say_what_is_kept(console: Console, rotation: Rotation | RotationFinished) -> None:
    """What a rotation cannot renew, and so what the old key still gives whoever holds it.

    The subject and payload keys stay (subject ids are HMACs of addresses the store does not
    hold), and so does the receipt signing key (sealed anew): after a leak the operator
    must know what the rotation did not take back (README, Known limits).
    """
    whence = (
        "they were derived from the old master key, which computes them on its own"
        if rotation.kept_derived_from_old_key
        else "they were derived from an earlier master key; the old one gives them with any "
        "copy or backup of the store taken while it was in use"
    )
    console.print(
        f"[yellow]not renewed: the subject key, for {KEPT_KEYS['subject']}; and the payload "
        f"key, for {KEPT_KEYS['payload']}. They cannot be renewed without losing every person; "
        f"{whence}. Whoever holds it and anything carrying subject ids (a copy or backup of "
        "the store, an audit export, the logs) can test guessed e-mail addresses against "
        "them, open the cloaked ids and test guessed data against the hashes: if it leaked, "
        "keep every copy of the store, its backups and exports as guarded as before[/]",
        markup=True,
    )
    if rotation.receipt_key:
        console.print(
            "[yellow]not renewed: the receipt signing key (sealed anew, the same key): an "
            "earlier copy of its key file (a backup holds one) opens with the old master key; "
            "if it leaked, replace the signing key with `klantsync dsr rotate-key`[/]",
            markup=True,
        )


def _rotate(args: argparse.Namespace, console: Console, config: Config) -> int:
    where = "--to"
    # Read from the folder keys.source is read from, so the same text names the same file.
    text = resolve_secret(args.to, file="command line", key=where, base_dir=config.base_dir)
    try:
        new_master = decode_master_key(text)
    except ValueError as exc:
        raise ConfigError("command line", where, f"master key {exc}") from None
    if new_master == config.master_key:
        raise ConfigError(
            "command line",
            where,
            "names the master key in use (keys.source); make a new one with `klantsync keygen`",
        )
    if not store_exists(config.store_path):
        # Rotating a store made here, empty, would bind it to the old key and say "rotated":
        # the key then moved over the old one no longer opens the real store, wherever it is.
        raise StoreError(
            f"{config.store_path}: there is no store yet, so nothing to rotate; point "
            "store.path at the store"
        )
    # No other command or daemon may have the store open: one that opened it before the
    # rotation would go on sealing with the keys it retires.
    with keys_alone(config.store_path):
        store = Store(config.store_path)
        try:
            # A rerun of a rotation killed past its commit, before keys.source named the new
            # key: the README's recipe, run again, must not then fail on the old key.
            finished = finish_rotation(store, config, new_master)
            if finished is not None:
                return _say_finished(args, console, config, finished)
            rotation = rotate_master_key(store, config, new_master)
        finally:
            store.close()
    if args.json:
        print(json.dumps({**rotation.as_dict(), "keys_source": args.to}))
        return EXIT_OK
    console.print(f"master key rotated: {rotation.old_fingerprint} -> {rotation.new_fingerprint}")
    sealed = ", ".join(f"{name} {count}" for name, count in rotation.resealed.items())
    receipt = "; the receipt signing key too" if rotation.receipt_key else ""
    console.print(f"sealed again under a fresh key: {sealed}{receipt}")
    if rotation.unreadable:
        left = ", ".join(f"{name} {count}" for name, count in rotation.unreadable.items())
        console.print(f"left as they were (they did not open under the old key either): {left}")
    _say_what_is_kept(console, rotation)
    if rotation.shared_receipt_key is not None:
        # Left in place because other stores in the folder may sign with it; but if the old
        # key leaked, this copy of the signing key is open to whoever has it.
        console.print(
            f"[yellow]{escape(str(rotation.shared_receipt_key))} (the receipt key file the "
            "stores in that folder shared before each had its own) still holds this store's "
            "signing key under the old master key: delete it once every store that used it "
            "has been opened by this version[/]",
            markup=True,
        )
    if rotation.replaced_resealed:
        names = ", ".join(path.name for path in rotation.replaced_resealed)
        console.print(f"stores a restore replaced, under the new key too: {escape(names)}")
    for path in rotation.replaced_left:
        # Kept for replaced_stores_days with all the store held: if the old key leaked, this
        # copy is open to whoever has it.
        console.print(
            f"[yellow]{escape(str(path))} (the store a restore replaced) could not be put "
            "under the new key and still opens with the old one: delete it, with its -wal "
            "and -shm[/]",
            markup=True,
        )
    _say_point_keys_source(args, console, config)
    return EXIT_OK


def _say_finished(
    args: argparse.Namespace, console: Console, config: Config, finished: RotationFinished
) -> int:
    """The store is under the --to key already: what was left of that rotation, done now."""
    if args.json:
        print(json.dumps({**finished.as_dict(), "keys_source": args.to}))
        return EXIT_OK
    console.print(
        f"the store is already under the new master key (fingerprint "
        f"{finished.new_fingerprint}): a rotation to it was made, and keys.source does not "
        "name it yet; what that rotation left undone, if anything, is done now"
    )
    if finished.replaced_resealed:
        names = ", ".join(path.name for path in finished.replaced_resealed)
        console.print(f"stores a restore replaced, under the new key too: {escape(names)}")
    for path in finished.replaced_left:
        console.print(
            f"[yellow]{escape(str(path))} (the store a restore replaced) could not be put "
            "under the new key yet: the next command that opens the store tries again[/]",
            markup=True,
        )
    _say_what_is_kept(console, finished)
    _say_point_keys_source(args, console, config)
    return EXIT_OK


def _say_point_keys_source(args: argparse.Namespace, console: Console, config: Config) -> None:
    console.print(
        f"[bold]now set keys.source = {escape(repr(args.to))} in {escape(str(config.path))}[/]: "
        "the old key no longer opens this store",
        markup=True,
    )
    # Moving the new key file over the old one would leave no copy of the only key the
    # backups taken until now open with.
    console.print(
        "[yellow]backups taken before this rotation open with the old key only: keep it as "
        "a retired key file for as long as them (README, Replacing the master key), or "
        "destroy it with them[/]",
        markup=True,
    )
