"""Putting a backup back in place of the store, without undoing what happened since.

What happened since the backup was taken is not in it, and some of it must not be undone by
a restore: an erasure above all. When the store it replaces can still be read, the restored
store takes over what that store knows and the backup cannot (:mod:`connector.carryover`:
erasures, who was sent where, requests, queued jobs, ...). The outbox is emptied (what it
held may have been delivered since; sent again, an older payload would overwrite a newer
one): the next sync queues again what the systems lack, from the source's current data.
For that, every cursor in the restored store is marked (:data:`~connector.store_runs.RESTORED`),
and each flow's next run reads its source in full: the backup's cursor of an incremental
source (Shopify, Pipedrive, HubSpot) is past the records whose payloads the emptied outbox
held, and would never offer them again. Every cursor, not only those of flows that had rows
dropped: a payload the replaced store had queued since, which the carry-over marks to be
sent again, may be of a record the backup's cursor is past as well (a full sync since), and
with no store to read nothing says which. (A full read after a rare restore is cheap.)
Rows that keep a write from a former address (connector/moves.py) are the exception: the
replaced store's are taken over, or, with none to read, the backup's kept.

A backup whose audit trail does not verify (checked with the keys the restore opens) is
refused: SQLite finds an edited entry intact. So is another store's backup
(:mod:`connector.lineage`): two stores in one folder share its master key.

The backup's copy is prepared beside the store and renamed over it last, so a restore that
fails leaves the store as it was; the store it replaces is kept beside it. The receipt
signing key file stays if it opens with the restored store's keys, and otherwise the
backup's copy is put back (a master key rotation since sealed it anew; a lost disk took it),
or, with none there, a new key is made.

The store and that key file are two renames, and no order of them is safe alone: the key
file the restored store's keys open need not open with the replaced store's. So the key file
is staged where a master key rotation stages one (:attr:`ReceiptSigner.staged_path`), the
file it replaces kept beside it (a link) and the retired public keys put back, all before the
store's rename, which is what makes the restore done; the key's rename follows. Stopped
before the store's rename, the staged file does not open with the keys of the store still in
place, and the next use of the key deletes it: the store as it was, with its key file.
Stopped after, it opens with the restored store's keys, and the next use of the key (a
receipt, its check, a backup, a rotation) renames it into place, as after a rotation.

The public halves of the store's signing keys are kept in clear in the folder beside it
(:func:`connector.receipts.retired_keys_dir`), which a restore leaves in place: the replaced
store's are still there, though its key file may not open with the restored store's keys.
Once the store is renamed into place, each key kept as in use that is not the restored
store's is retired at the restore (:func:`connector.receipts.retire_replaced`): the
receipts it signed before still verify, and none it signs later does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector import audit
from connector.backup import (
    COMPANIONS,
    FILES_TABLE,
    PREPARING,
    RECEIPT_KEY,
    RETIRED,
    STORE_RESTORED,
    chain_head,
    discard,
    readable_backup,
    refuse_store_files,
)
from connector.carryover import Carried, attached, carry_erasures, carry_over
from connector.config import Config
from connector.crypto import RECEIPT_KEY_CONTEXT, master_fingerprint
from connector.errors import ConfigError, StoreError
from connector.keyset import check_master_key, receipt_key_opens, store_keyring
from connector.lineage import chains_meet, store_id
from connector.lock import keys_alone, syncing
from connector.privatefile import sync_folder, write_private
from connector.receipts import key_id, receipt_key_path, retire_replaced, retired_keys_dir
from connector.stages import Steps, unseen
from connector.state import Store
from connector.store_runs import RESTORED
from connector.storefile import drop_orphaned_log, foreign, read_only

__all__ = ["RestoreFacts", "restore_backup"]


@dataclass(frozen=True)
class RestoreFacts:
    """What a restore did (counts, hashes and paths; nothing about anyone)."""

    backup_sha256: str
    backup_audit_seq: int
    #: Where the store that was replaced now is; None when there was none.
    replaced_path: str | None
    #: Whether that store could be read (one that cannot hands nothing over).
    replaced_readable: bool
    #: What was taken over from it, by kind (see :class:`connector.carryover.Carried`).
    carried: dict[str, int]
    outbox_dropped: int
    #: The flows whose cursors the restore marked: each reads its source in full at its
    #: next run (a flow with no cursor does anyway). Restores before it marked none.
    reads_in_full_next: list[str] = field(default_factory=list)
    #: Outbox rows kept: writes from a former address (connector/moves.py).
    outbox_kept: int = 0
    #: What it holds sealed under keys the restored store does not have ("request <id>").
    not_carried: list[str] = field(default_factory=list)
    #: The receipt signing key file: "kept", "from the backup", "set aside" (not this
    #: store's, and the backup has none: a new key was made) or "none".
    receipt_key: str = "none"
    #: When the backup's master key is one a rotation recorded in the replaced store retired:
    #: its fingerprint, when that rotation was made, and the fingerprint the replaced store
    #: was kept under. The restore undid the rotation; it must be made again.
    master_key_retired: dict[str, str] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def restore_backup(
    config: Config,
    backup: Path,
    *,
    now: dt.datetime | None = None,
    over_a_new_store: bool = False,
    step: Steps = unseen,
) -> RestoreFacts:
    """Put ``backup`` in place of the store, keeping what happened since (see the module);
    each step told to ``step`` as it starts.

    No daemon, sync or other command may have the store open. The backup file itself is
    not changed. ``over_a_new_store`` says the store at ``store.path`` was made anew after
    the one the backup is of was lost: its other id is no reason to refuse, and what it
    holds (erasures first) is carried over as from any store a restore replaces.

    Raises:
        ConfigError: ``backup`` is not a klantsync store backup, is damaged, is the store
            itself, does not open with the configured master key, or holds an audit trail
            that does not verify.
        StoreError: the store is in use.
    """
    store_path = config.store_path
    refuse_store_files(config, backup, "--from")
    step("checking the backup")
    sha = readable_backup(backup)
    moment = now or dt.datetime.now(dt.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    preparing = store_path.with_name(store_path.name + PREPARING)
    replaced = _free_name(store_path.with_name(f"{store_path.name}.replaced-{stamp}"))
    key_file = receipt_key_path(store_path)
    # Where a rotation stages the key file: the signer settles it, so a restore stopped
    # between its two renames is finished by the next use of the key (see the module).
    staged_key = key_file.with_name(key_file.name + _STAGED_KEY)
    with syncing(store_path, "restore"), keys_alone(store_path):
        if store_path.exists():
            _refuse_foreign(store_path)
        current = _read_current(store_path) if store_path.exists() else None
        discard(preparing)
        done = False
        key_aside: Path | None = None
        try:
            key = _prepare(
                config, backup, preparing, sha, current, replaced, over_a_new_store, step
            )
            step("putting it in place")
            if key.content is not None:
                write_private(staged_key, key.content, mtime_ns=key.mtime_ns)
                if key_file.exists():
                    # Not this store's (sealed under keys a rotation made since): kept, not
                    # lost. Linked: it stays in place until the staged file is renamed over it.
                    key_aside = _free_name(key_file.with_name(f"{key_file.name}.replaced-{stamp}"))
                    _keep(key_file, key_aside)
            # Public halves only, put where missing: harmless to the store still in place.
            _put_back_retired(retired_keys_dir(key_file), key.retired)
            try:
                if current is not None:
                    _set_aside(store_path, replaced)
                else:
                    # Nothing else puts a store there while a restore runs: the locks above.
                    drop_orphaned_log(store_path)
                os.replace(preparing, store_path)
                done = True
            except BaseException:
                if current is not None:
                    _take_back(store_path, replaced)
                raise
            if key.content is not None:
                os.replace(staged_key, key_file)
            # After the store's rename: stopped before, the replaced key is still the one in
            # use. Stopped between, it stays known as made and never retired, and verifies
            # what it signed, as a key retired by an earlier version does.
            retire_replaced(
                retired_keys_dir(key_file), key.key_id, moment.isoformat(timespec="seconds")
            )
        finally:
            discard(preparing)
            if not done:
                staged_key.unlink(missing_ok=True)
                if key_aside is not None:
                    key_aside.unlink(missing_ok=True)  # a link to the key file still in use
        sync_folder(store_path.parent)
    return _restored_facts(store_path, sha, current, replaced)


#: The suffix of :attr:`connector.receipts.ReceiptSigner.staged_path`.
_STAGED_KEY = ".rotating"


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``-3``... if taken (a restore cut short and run again within
    the same second left its link to the store, or the key file, it was replacing)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


@dataclass
class _Current:
    """The store being replaced: whether it reads, and its audit chain's head.

    ``damaged``: it reads (its suppression list at least) but a page of it does not: it
    hands over its erasures only, the one thing a restore must never lose, and nothing is
    read from the rest (a damaged page makes every statement after it fail).
    """

    readable: bool
    audit_seq: int = 0
    audit_hash: str = ""
    damaged: bool = False
    #: The fingerprint of the master key it is kept under (None: not bound, or unread).
    master_fingerprint: str | None = None
    #: Its master key rotations, oldest first, as its audit trail records them:
    #: (when, old fingerprint, new fingerprint).
    rotations: list[tuple[str, str, str]] = field(default_factory=list)
    #: Its id (connector/lineage.py); None when it has none or it cannot be read.
    store_id: str | None = None


def _refuse_foreign(store_path: Path) -> None:
    """StoreError when the file at store.path is another application's database: it is
    left exactly as it is (set aside as a replaced store, the retention sweep would delete
    it). A damaged store is not refused: a backup is what it needs."""
    try:
        with closing(read_only(store_path)) as db:
            other = foreign(db)
    except sqlite3.Error:
        return  # damaged past reading its tables: judged unreadable below
    if other:
        raise StoreError(
            f"{store_path}: not a klantsync store: an SQLite database with tables of its own "
            "and no klantsync schema; point store.path at the klantsync store, or at a file "
            "that does not exist yet, and restore again"
        )


def _read_current(store_path: Path) -> _Current:
    """Whether the store reads (its tables are read without keys: HMAC ids, hashes and
    sealed blobs), and its audit head.

    A store of an earlier klantsync (the restore is the first command after an upgrade) is
    migrated first, as any command would, so that all it knows can be taken over; one that
    cannot be migrated still hands over its erasures. Its log is checkpointed, so the main
    file alone holds every transaction: that is the file set aside, and a crash before the
    rename leaves it whole where it was.
    """
    with contextlib.suppress(StoreError, sqlite3.Error):
        Store(store_path).close()  # migrates; an unreadable store is judged below
    try:
        with closing(sqlite3.connect(store_path, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute(
                "SELECT subject_id, kind, request_id, created_at FROM suppression"
            ).fetchall()
            held_id = store_id(db)  # read apart: a damaged store may still tell which it is
    except sqlite3.Error:
        return _Current(False)
    try:
        with closing(read_only(store_path)) as db:
            # Every page read once (no index cross-checks): what the carry-over would meet.
            if db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                return _Current(True, damaged=True, store_id=held_id)
            seq, digest = chain_head(db)
            fingerprint, rotations = _master_keys(db)
    except sqlite3.Error:
        return _Current(True, damaged=True, store_id=held_id)
    return _Current(
        True, seq, digest, master_fingerprint=fingerprint, rotations=rotations, store_id=held_id
    )


def _master_keys(db: sqlite3.Connection) -> tuple[str | None, list[tuple[str, str, str]]]:
    """The master key fingerprint a store is kept under, and its master key rotations as
    its audit trail records them (``keys.rotated``; the receipt key's are not these)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    row = None
    if "keyset" in tables:
        row = db.execute("SELECT master_fingerprint FROM keyset WHERE id=1").fetchone()
    rotations = []
    for ts, data in db.execute(
        "SELECT ts, data FROM audit WHERE kind=? ORDER BY seq", (audit.KEY_ROTATED,)
    ):
        entry = json.loads(data)
        if entry.get("key") == "master":
            rotations.append((str(ts), str(entry["old"]), str(entry["new"])))
    return (None if row is None else str(row[0])), rotations


def _retired_key(config: Config, current: _Current | None) -> dict[str, str] | None:
    """The rotation the restore undoes, if any: the backup opens with the configured master
    key, and the replaced store's trail records a rotation that retired that very key, the
    store since kept under another. A rotation is made because a key may have leaked:
    going back under it must not pass unsaid."""
    if current is None or not current.readable or current.damaged:
        return None  # nothing to read it from
    restored = master_fingerprint(config.master_key)
    if current.master_fingerprint in (None, restored):
        return None  # the replaced store is under this key too (rotated back, or never)
    retiring = [when for when, old, _new in current.rotations if old == restored]
    if not retiring:
        return None
    return {
        "master_fingerprint": restored,
        "retired_at": retiring[-1],
        "replaced_store_under": str(current.master_fingerprint),
    }


class _KeyFile(NamedTuple):
    """What becomes of the receipt signing key file beside the store, and the bytes to put
    there when it is the backup's."""

    action: str
    content: bytes | None
    #: Public halves of retired keys, by file name (earlier receipts verify with them).
    retired: dict[str, bytes]
    #: The key file's age as the backup saw it (None from backups that did not keep it).
    mtime_ns: int | None = None
    #: The id of the key the restored store signs with (None: no key file yet).
    key_id: str | None = None


def _prepare(
    config: Config,
    backup: Path,
    preparing: Path,
    sha: str,
    current: _Current | None,
    replaced: Path,
    over_a_new_store: bool = False,
    step: Steps = unseen,
) -> _KeyFile:
    """The backup's copy at ``preparing``: migrated, checked against the master key, what
    the replaced store knows since taken over, the outbox emptied, the restore audited; and
    what to do with the receipt signing key file."""
    fd = os.open(preparing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with (
        closing(read_only(backup)) as source,
        closing(sqlite3.connect(preparing, isolation_level=None)) as copy,
    ):
        taken_of = store_id(source)  # before the copy is migrated: schema 23 makes an id
        step("copying the backup")
        source.backup(copy)
    step("opening the copy")
    store = Store(preparing)  # migrates a backup taken by an older version
    try:
        try:
            check_master_key(store, config)
        except ConfigError:
            raise ConfigError(
                "--from",
                "",
                f"{backup} does not open with the master key keys.source names (fingerprint "
                f"{master_fingerprint(config.master_key)}): set keys.source to the key the "
                "store was kept under when the backup was taken",
            ) from None
        step("verifying its audit trail")
        _refuse_broken_trail(store, backup)
        if not over_a_new_store:
            _refuse_another_store(store, backup, taken_of, current, config.store_path)
        head = audit.chain_state(store).head_seq
        key = _receipt_key(store, config)
        retired = _retired_key(config, current)
        carried = Carried()
        readable = current is not None and current.readable
        step("taking over what happened since" if readable else "emptying the outbox")
        with (
            attached(store, config.store_path) if readable else nullcontext(),
            store.transaction() as db,
        ):
            # A row keeping a write from a former address is all that tells what a system may
            # hold under it (connector/moves.py): the replaced store's take the backup's
            # place (carry_over); with none to read, the backup's stay. The rest is dropped.
            dropped = db.execute("DELETE FROM outbox WHERE former IS NULL").rowcount
            if current is not None and current.store_id is not None and not over_a_new_store:
                # The store stays the one it replaces (the same id, or a backup from before
                # ids, judged its own): backups taken of it before are still its own after.
                # Over a store made anew, the backup's id stays: the lost store's backups
                # are the ones that are this store's.
                db.execute("UPDATE store_identity SET store_id=? WHERE id=1", (current.store_id,))
            if readable and current is not None and current.damaged:
                carried = carry_erasures(store)
            elif readable:
                flows_of = {
                    name: [flow.name for flow in config.flows if flow.source == name]
                    for name in config.systems
                }
                carried = carry_over(store, store_keyring(store, config), flows_of)
            # After the carry-over: a purge taken over deletes the cursors of its flows.
            rereads = store.mark_every_cursor(RESTORED)
            (kept,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            counts = {k: v for k, v in asdict(carried).items() if k != "not_carried"}
            audit.append(
                store,
                STORE_RESTORED,
                {
                    "backup_sha256": sha,
                    "backup_audit_seq": head,
                    "replaced": _replaced_entry(current, replaced),
                    "carried": counts,
                    "not_carried": carried.not_carried,
                    "outbox_dropped": dropped,
                    "outbox_kept": int(kept),
                    "reads_in_full_next": rereads,
                    "receipt_key": key.action,
                    "master_key_retired": retired,
                    "over_a_new_store": over_a_new_store,
                },
            )
            db.execute(f"DROP TABLE IF EXISTS {FILES_TABLE}")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    with open(preparing, "rb") as written:
        os.fsync(written.fileno())
    return key


def _refuse_broken_trail(store: Store, backup: Path) -> None:
    """ConfigError naming ``--from`` when the backup's audit trail does not verify, with the
    keys :func:`check_master_key` bound. SQLite finds an edited entry intact: put back, the
    restore was chained on to it and every `audit verify` of the store failed from then on,
    with the store that could show what was changed replaced."""
    result = audit.verify(store)
    if not result.ok:
        raise ConfigError(
            "--from",
            "",
            f"{backup}: its audit trail does not verify (entry {result.first_bad}: "
            f"{result.problem}): the file was changed, or the store it was taken of had "
            "been; restore another backup",
        )


def _refuse_another_store(
    store: Store, backup: Path, taken_of: str | None, current: _Current | None, store_path: Path
) -> None:
    """ConfigError naming ``--from`` when the backup is another store's
    (:mod:`connector.lineage`): it holds another store id than the store it would replace,
    or, taken before ids, an audit chain that does not begin as that store's does.

    With no store to compare it with (none, or one that cannot be read) the backup is taken
    as this store's, as a lost disk needs.
    """
    if current is None or current.store_id is None:
        return
    if taken_of is not None:
        if taken_of == current.store_id:
            return
        said = f"store id {taken_of}, where {store_path} is store {current.store_id}"
    else:
        meet = None
        if not current.damaged:  # a damaged store's chain is not read
            with contextlib.suppress(sqlite3.Error), closing(read_only(store_path)) as db:
                meet = chains_meet(store.db, db)
        if meet is not False:
            return
        said = f"taken before store ids, its audit trail does not begin as {store_path}'s"
    raise ConfigError(
        "--from",
        "",
        f"{backup} is a backup of another store ({said}): restore it with the config of the "
        f"store it was taken of. If {store_path} is a store made anew after the one the backup "
        "is of was lost, restore again with --over-a-new-store: what it holds (its erasures "
        "first) is then carried over",
    )


def _receipt_key(store: Store, config: Config) -> _KeyFile:
    """The key file beside the store stays if it opens with the restored store's keys;
    else (a master key rotation since sealed it anew, or a lost disk took it) the backup's
    copy takes its place; with none, a new key does (made now, not by the next receipt: a
    file there that is not the restored store's must go in the same step as the rename
    that puts a staged key in place). Retired public keys the backup holds go back where
    they are missing."""
    files: dict[str, bytes] = {}
    ages: dict[str, int | None] = {}
    columns = {row[1] for row in store.db.execute(f"PRAGMA table_info({FILES_TABLE})")}
    if columns:
        # Backups before mtime_ns hold no age: the key then looks as new as the restore.
        age = "mtime_ns" if "mtime_ns" in columns else "NULL"
        rows = store.db.execute(f"SELECT name, content, {age} FROM {FILES_TABLE}")  # noqa: S608
        for name, content, mtime_ns in rows:
            files[str(name)] = bytes(content)
            ages[str(name)] = mtime_ns
    retired = {
        name.removeprefix(RETIRED): content
        for name, content in files.items()
        if name.startswith(RETIRED)
    }
    saved = files.get(RECEIPT_KEY)
    key_file = receipt_key_path(config.store_path)
    if receipt_key_opens(store, config):
        return _KeyFile("kept", None, retired, key_id=_key_id(store, config, key_file.read_bytes()))
    if saved is not None and receipt_key_opens(store, config, saved):
        # The same key keeps its age: the daemon's rotation reminder reads the file's mtime.
        return _KeyFile(
            "from the backup",
            saved,
            retired,
            ages.get(RECEIPT_KEY),
            key_id=_key_id(store, config, saved),
        )
    if key_file.exists():
        made = _new_receipt_key(store, config)
        return _KeyFile("set aside", made, retired, key_id=_key_id(store, config, made))
    return _KeyFile("none", None, retired)


def _new_receipt_key(store: Store, config: Config) -> bytes:
    """A new receipt signing key file's bytes, sealed under the restored store's keys (as
    :class:`connector.receipts.ReceiptSigner` makes one on first use)."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return store_keyring(store, config).seal(raw, RECEIPT_KEY_CONTEXT)


def _key_id(store: Store, config: Config, sealed: bytes) -> str:
    """The key id of the signing key file ``sealed``, which opens with ``store``'s keys."""
    raw = store_keyring(store, config).open(sealed, RECEIPT_KEY_CONTEXT)
    return key_id(Ed25519PrivateKey.from_private_bytes(raw).public_key())


def _put_back_retired(folder: Path, retired: dict[str, bytes]) -> None:
    """Each retired public key the folder lacks; one it holds is left as it is."""
    for name, content in retired.items():
        path = folder / Path(name).name  # a name, never a path out of the folder
        if not path.exists():
            write_private(path, content)


def _replaced_entry(current: _Current | None, replaced: Path) -> dict[str, object] | None:
    if current is None:
        return None
    if not current.readable:
        return {"file": replaced.name, "readable": False}
    if current.damaged:
        return {"file": replaced.name, "readable": True, "damaged": True}
    return {
        "file": replaced.name,
        "readable": True,
        "audit_seq": current.audit_seq,
        "audit_hash": current.audit_hash,
    }


def _set_aside(store_path: Path, replaced: Path) -> None:
    """Keep the replaced store (and its -wal, which holds its last transactions) beside it.

    Linked first: until the backup's copy is renamed over it, the store is still where it
    was, so a crash here leaves it in use, not missing (a missing store would be made anew,
    empty, by the next command: every customer new, nobody suppressed).
    """
    _keep(store_path, replaced)
    for suffix in COMPANIONS:
        companion = store_path.with_name(store_path.name + suffix)
        if companion.exists():
            # The -wal belongs to the old main file: left beside the new one, SQLite would
            # read it into the restored store.
            os.replace(companion, replaced.with_name(replaced.name + suffix))


def _keep(path: Path, kept: Path) -> None:
    """``path`` kept also as ``kept``: a hard link, or a copy on a file system without."""
    try:
        os.link(path, kept)
    except OSError:
        shutil.copy2(path, kept)


def _take_back(store_path: Path, replaced: Path) -> None:
    """Undo :func:`_set_aside` when the backup's copy was not renamed over the store: its
    -wal and -shm go back beside it, and the name it was kept under goes. Left, that name
    was the store itself (a hard link) under a replaced store's name, which the retention
    sweep empties once it is due: the store in use, its suppression list with the rest."""
    for suffix in COMPANIONS:
        moved = replaced.with_name(replaced.name + suffix)
        companion = store_path.with_name(store_path.name + suffix)
        if moved.exists() and not companion.exists():
            os.replace(moved, companion)
    replaced.unlink(missing_ok=True)  # made by this restore (a free name): a link or a copy


def _restored_facts(
    store_path: Path, sha: str, current: _Current | None, replaced: Path
) -> RestoreFacts:
    with closing(read_only(store_path)) as db:
        (data,) = db.execute(
            "SELECT data FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (STORE_RESTORED,)
        ).fetchone()
    entry = json.loads(data)
    return RestoreFacts(
        backup_sha256=sha,
        backup_audit_seq=int(entry["backup_audit_seq"]),
        replaced_path=None if current is None else str(replaced),
        replaced_readable=current is not None and current.readable,
        carried={str(k): int(v) for k, v in entry["carried"].items()},
        outbox_dropped=int(entry["outbox_dropped"]),
        outbox_kept=int(entry.get("outbox_kept", 0)),  # restores before it kept none
        reads_in_full_next=[str(f) for f in entry.get("reads_in_full_next", [])],
        not_carried=[str(n) for n in entry["not_carried"]],
        receipt_key=str(entry["receipt_key"]),
        master_key_retired=entry.get("master_key_retired"),  # restores before it said none
    )
