"""Backups of the store, and putting one back without undoing an erasure.

A store in WAL mode is two files while anything has it open, and a copy of the main file
alone (``cp``, a disk snapshot taken mid-checkpoint) can miss the last transactions or be
damaged. :func:`take_backup` copies it through SQLite's online backup API in one read
transaction: a consistent store as of one moment, taken while the daemon runs (readers do
not block its writes), checked, written as one self-contained file readable only by its
owner, and audited with its SHA-256.

The backup holds what the store holds: keyed HMAC ids, the sealed outbox and manifests, the
suppression list and the audit chain, nothing in clear; it opens only with the master key the
store was kept under when it was taken.

:func:`restore_backup` puts one back in place of the store. What happened since the backup
was taken is not in it, and one thing must not be undone by that: an erasure. The people
erased since are suppressed in the restored store too (the suppression list of the store it
replaces is carried over, and their traces deleted), or a restored identity map and sync
would bring them back. The outbox is emptied (what it held may have been delivered since;
sent again, an older payload would overwrite a newer one): the next sync queues again what
the systems lack, from the source's current data. The store it replaces is kept beside it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from connector import audit
from connector.config import Config
from connector.crypto import master_fingerprint
from connector.dsr_store import DsrStore
from connector.errors import ConfigError, StoreError
from connector.keyset import check_master_key, receipt_key_opens
from connector.lock import keys_alone, sharing_keys, syncing
from connector.receipts import receipt_key_path, retired_keys_dir
from connector.schema import MIGRATIONS
from connector.state import Store, utcnow
from connector.storefile import refuse_foreign

__all__ = ["BackupFacts", "RestoreFacts", "last_backup", "restore_backup", "take_backup"]

STORE_BACKUP = "store.backup"  # audit: a backup was taken (its chain head and SHA-256)
STORE_RESTORED = "store.restored"  # audit: a backup was put back (what it replaced, carried)

#: A store's companion files, which belong to the main file they sit beside.
_COMPANIONS = ("-wal", "-shm")

#: The table of a backup that holds the receipt signing key file as it was (sealed): a
#: backup is all a lost disk needs, and the store's public key stays the one receipts name.
_FILES_TABLE = "backup_files"
_RECEIPT_KEY = "receipt-signing.key"
#: Rows of that table under this prefix are the public halves of retired signing keys:
#: earlier receipts are verified with them.
_RETIRED = "retired/"


@dataclass(frozen=True)
class BackupFacts:
    """What a backup holds (counts, hashes and fingerprints; nothing about anyone)."""

    path: str
    bytes: int
    sha256: str
    taken_at: str
    schema_version: int
    master_fingerprint: str
    #: The copy's last audit entry: an auditor finds the chain it continues from here.
    audit_seq: int
    audit_hash: str
    suppressed: int
    open_requests: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreFacts:
    """What a restore did (counts, hashes and paths; nothing about anyone)."""

    backup_sha256: str
    backup_audit_seq: int
    #: Where the store that was replaced now is; None when there was none.
    replaced_path: str | None
    #: Whether that store could be read (a damaged one carries nothing over).
    replaced_readable: bool
    suppression_carried: int
    traces_deleted: int
    outbox_dropped: int
    #: Requests the replaced store holds and the backup does not (opened since): their ids.
    requests_not_in_backup: list[str] = field(default_factory=list)
    #: The receipt signing key file: "kept", "from the backup", "set aside" (not this
    #: store's, and the backup has none: the next receipt makes a new key) or "none".
    receipt_key: str = "none"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- taking a backup ---------------------------------------------------------------------------


def take_backup(config: Config, out: Path) -> BackupFacts:
    """Copy the store to ``out`` (replaced atomically if it exists), checked and audited.

    Raises:
        ConfigError: ``out`` is the store or one of its files.
        StoreError: there is no store yet, or it cannot be read.
    """
    store_path = config.store_path
    _refuse_store_files(config, out, "--out")
    if not store_path.exists():
        raise StoreError(f"{store_path}: there is no store yet, so nothing to back up")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    # Shared: a key rotation (which needs the store alone) does not reseal under the copy.
    with sharing_keys(store_path):
        store = Store(store_path)
        try:
            check_master_key(store, config)  # a backup nobody could open is no backup
            try:
                _copy(store, partial, receipt_key_path(store_path))
                facts = _facts(partial)
                os.replace(partial, out)
            finally:
                partial.unlink(missing_ok=True)
            _sync_folder(out.parent)
            sha = _sha256(out)
            backup = BackupFacts(
                path=str(out),
                bytes=out.stat().st_size,
                sha256=sha,
                taken_at=utcnow(),
                master_fingerprint=master_fingerprint(config.master_key),
                **facts._asdict(),
            )
            audit.append(
                store,
                STORE_BACKUP,
                {"sha256": sha, "audit_seq": backup.audit_seq, "bytes": backup.bytes},
            )
        finally:
            store.close()
    return backup


def last_backup(store: Store) -> dict[str, dict[str, str] | None]:
    """For ``status``: when the last backup was taken and the last restore made, with the
    backup's SHA-256, from the audit trail.

    A restored store holds no entry for the backup it came from (that went into the store
    it replaced, after the copy was taken), so the restore is shown beside it. Each is read
    from the newest entry back: with none ever made that reads the whole trail, which
    ``status`` can afford; ``None`` then (or once retention purged the entry).
    """
    found: dict[str, dict[str, str] | None] = {}
    for name, kind, key in (
        ("backup", STORE_BACKUP, "sha256"),
        ("restore", STORE_RESTORED, "backup_sha256"),
    ):
        row = store.db.execute(
            "SELECT ts, data FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (kind,)
        ).fetchone()
        found[name] = (
            None if row is None else {"at": str(row[0]), "sha256": str(json.loads(row[1])[key])}
        )
    return found


def _copy(store: Store, partial: Path, receipt_key: Path) -> None:
    """The store as of one moment into ``partial``, with its receipt signing key file:
    owner-only, one file, checked."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
        # One step (all pages): one read transaction, so one moment of the store; stepped,
        # every write by the daemon meanwhile would start the copy over.
        store.db.backup(copy)
        files = _receipt_files(receipt_key)
        if files:
            copy.execute(
                f"CREATE TABLE {_FILES_TABLE} (name TEXT PRIMARY KEY, content BLOB NOT NULL)"
            )
            copy.executemany(
                f"INSERT INTO {_FILES_TABLE}(name, content) VALUES (?, ?)",  # noqa: S608
                files,
            )
        # The copy is a file of its own: no -wal beside it to lose when it is moved.
        copy.execute("PRAGMA journal_mode=DELETE")
        problem = _damage(copy)
    if problem:
        raise StoreError(
            f"{store.path}: the store's copy is damaged ({problem}); the store itself may be: "
            "stop every klantsync on it and run `klantsync backup` again"
        )
    with open(partial, "rb") as written:
        os.fsync(written.fileno())


class _Held(NamedTuple):
    schema_version: int
    audit_seq: int
    audit_hash: str
    suppressed: int
    open_requests: int


def _receipt_files(receipt_key: Path) -> list[tuple[str, bytes]]:
    """The signing key file (sealed under the store's keys, as on disk: a master key
    rotation, which would seal it anew, waits for the backup, which shares the keys) and
    the public halves of retired keys, as rows of the backup's files table."""
    files = [(_RECEIPT_KEY, receipt_key.read_bytes())] if receipt_key.exists() else []
    retired = retired_keys_dir(receipt_key)
    if retired.is_dir():
        files += [(_RETIRED + pem.name, pem.read_bytes()) for pem in sorted(retired.glob("*.pem"))]
    return files


def _facts(path: Path) -> _Held:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        seq, digest = _head(db)
        (suppressed,) = db.execute("SELECT COUNT(*) FROM suppression").fetchone()
        (open_requests,) = db.execute(
            "SELECT COUNT(*) FROM dsr_requests WHERE status='open'"
        ).fetchone()
    return _Held(int(version), seq, digest, int(suppressed), int(open_requests))


# -- putting one back --------------------------------------------------------------------------


def restore_backup(config: Config, backup: Path, *, now: dt.datetime | None = None) -> RestoreFacts:
    """Put ``backup`` in place of the store, keeping every erasure made since (see module).

    No daemon, sync or other command may have the store open. The backup file itself is
    not changed: a copy of it is prepared beside the store and moved in place of it in one
    rename, so a failure on the way leaves the store as it was.

    Raises:
        ConfigError: ``backup`` is not a klantsync store backup, is damaged, is the store
            itself, or does not open with the configured master key.
        StoreError: the store is in use.
    """
    store_path = config.store_path
    _refuse_store_files(config, backup, "--from")
    sha = _readable_backup(backup)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    preparing = store_path.with_name(f"{store_path.name}.restoring")
    replaced = store_path.with_name(f"{store_path.name}.replaced-{stamp}")
    with syncing(store_path, "restore"), keys_alone(store_path):
        current = _read_current(store_path) if store_path.exists() else None
        _discard(preparing)
        key_file = receipt_key_path(store_path)
        staged_key = key_file.with_name(key_file.name + ".restoring")
        try:
            key = _prepare(config, backup, preparing, sha, current, replaced)
            if key.content is not None:
                _write_private(staged_key, key.content)
            if current is not None:
                _set_aside(store_path, replaced)
            os.replace(preparing, store_path)
            if key.action in ("from the backup", "set aside") and key_file.exists():
                # Not this store's (sealed under keys a rotation made since): kept, not lost.
                os.replace(key_file, key_file.with_name(f"{key_file.name}.replaced-{stamp}"))
            if key.content is not None:
                os.replace(staged_key, key_file)
            _put_back_retired(retired_keys_dir(key_file), key.retired)
        finally:
            _discard(preparing)
            staged_key.unlink(missing_ok=True)
        _sync_folder(store_path.parent)
    return _restored_facts(store_path, sha, current, replaced)


class _KeyFile(NamedTuple):
    """What becomes of the receipt signing key file beside the store, and the bytes to put
    there when it is the backup's."""

    action: str
    content: bytes | None
    #: Public halves of retired keys, by file name (earlier receipts verify with them).
    retired: dict[str, bytes]


def _put_back_retired(folder: Path, retired: dict[str, bytes]) -> None:
    """Each retired public key the folder lacks; one it holds is left as it is."""
    for name, content in retired.items():
        path = folder / Path(name).name  # a name, never a path out of the folder
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class _Current:
    """What the store being replaced holds that the restore needs (ids and counts only)."""

    readable: bool
    suppression: list[tuple[str, str, str | None, str]]
    requests: set[str]
    audit_seq: int
    audit_hash: str


def _read_current(store_path: Path) -> _Current:
    """The suppression list, request ids and audit head of the store, read without keys
    (they are HMAC ids and hashes): a store under another master key, or a damaged one
    that still reads, still hands over its erasures.

    Its log is checkpointed first, so the main file alone holds every transaction: that
    is the file set aside, and a crash before the rename leaves it whole where it was.
    """
    try:
        with closing(sqlite3.connect(store_path, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            suppression = db.execute(
                "SELECT subject_id, kind, request_id, created_at FROM suppression"
            ).fetchall()
            requests = {row[0] for row in db.execute("SELECT id FROM dsr_requests")}
            seq, digest = _head(db)
    except sqlite3.Error:
        return _Current(False, [], set(), 0, "")
    return _Current(True, suppression, requests, seq, digest)


def _head(db: sqlite3.Connection) -> tuple[int, str]:
    """The audit chain's head (seq, hash), as the chain records it (entries may be purged)."""
    row = db.execute("SELECT head_seq, head_hash FROM audit_chain WHERE id=1").fetchone()
    return (0, audit.GENESIS) if row is None else (int(row[0]), str(row[1]))


def _prepare(
    config: Config,
    backup: Path,
    preparing: Path,
    sha: str,
    current: _Current | None,
    replaced: Path,
) -> _KeyFile:
    """The backup's copy at ``preparing``: migrated, checked against the master key, the
    erasures since carried over, the outbox emptied, the restore audited; and what to do
    with the receipt signing key file."""
    fd = os.open(preparing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with (
        closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(preparing, isolation_level=None)) as copy,
    ):
        source.backup(copy)
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
        head = audit.chain_state(store).head_seq
        key = _receipt_key(store, config)
        carried = 0
        erased: list[str] = []
        with store.transaction() as db:
            if current is not None:
                before = {sid for (sid,) in db.execute("SELECT subject_id FROM suppression")}
                erased = [row[0] for row in current.suppression if row[0] not in before]
                db.executemany(
                    "INSERT OR IGNORE INTO suppression(subject_id, kind, request_id, created_at) "
                    "VALUES (?,?,?,?)",
                    current.suppression,
                )
                carried = len(erased)
            traces = sum(DsrStore(store).delete_traces(erased).values()) if erased else 0
            dropped = db.execute("DELETE FROM outbox").rowcount
            in_backup = {row[0] for row in db.execute("SELECT id FROM dsr_requests")}
            missing = sorted(current.requests - in_backup) if current is not None else []
            audit.append(
                store,
                STORE_RESTORED,
                {
                    "backup_sha256": sha,
                    "backup_audit_seq": head,
                    "replaced": _replaced_entry(current, replaced),
                    "suppression_carried": carried,
                    "traces_deleted": traces,
                    "outbox_dropped": dropped,
                    "requests_not_in_backup": missing,
                    "receipt_key": key.action,
                },
            )
            db.execute(f"DROP TABLE IF EXISTS {_FILES_TABLE}")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    with open(preparing, "rb") as written:
        os.fsync(written.fileno())
    return key


def _receipt_key(store: Store, config: Config) -> _KeyFile:
    """The key file beside the store stays if it opens with the restored store's keys;
    else (a master key rotation since sealed it anew, or a lost disk took it) the backup's
    copy takes its place; with none, the next receipt makes a new key. Retired public keys
    the backup holds go back where they are missing."""
    files: dict[str, bytes] = {}
    if store.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_FILES_TABLE,)
    ).fetchone():
        rows = store.db.execute(f"SELECT name, content FROM {_FILES_TABLE}")  # noqa: S608
        files = {str(name): bytes(content) for name, content in rows}
    retired = {
        name.removeprefix(_RETIRED): content
        for name, content in files.items()
        if name.startswith(_RETIRED)
    }
    saved = files.get(_RECEIPT_KEY)
    if receipt_key_opens(store, config):
        return _KeyFile("kept", None, retired)
    if saved is not None and receipt_key_opens(store, config, saved):
        return _KeyFile("from the backup", saved, retired)
    if receipt_key_path(config.store_path).exists():
        return _KeyFile("set aside", None, retired)
    return _KeyFile("none", None, retired)


def _replaced_entry(current: _Current | None, replaced: Path) -> dict[str, object] | None:
    if current is None:
        return None
    if not current.readable:
        return {"file": replaced.name, "readable": False}
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
    try:
        os.link(store_path, replaced)
    except OSError:  # a file system without hard links
        shutil.copy2(store_path, replaced)
    for suffix in _COMPANIONS:
        companion = store_path.with_name(store_path.name + suffix)
        if companion.exists():
            # The -wal belongs to the old main file: left beside the new one, SQLite would
            # read it into the restored store.
            os.replace(companion, replaced.with_name(replaced.name + suffix))


def _restored_facts(
    store_path: Path, sha: str, current: _Current | None, replaced: Path
) -> RestoreFacts:
    with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as db:
        (data,) = db.execute(
            "SELECT data FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (STORE_RESTORED,)
        ).fetchone()
    entry = json.loads(data)
    return RestoreFacts(
        backup_sha256=sha,
        backup_audit_seq=int(entry["backup_audit_seq"]),
        replaced_path=None if current is None else str(replaced),
        replaced_readable=current is not None and current.readable,
        suppression_carried=int(entry["suppression_carried"]),
        traces_deleted=int(entry["traces_deleted"]),
        outbox_dropped=int(entry["outbox_dropped"]),
        requests_not_in_backup=list(entry["requests_not_in_backup"]),
        receipt_key=str(entry["receipt_key"]),
    )


# -- shared ------------------------------------------------------------------------------------


def _refuse_store_files(config: Config, path: Path, option: str) -> None:
    store_path = config.store_path.resolve()
    own = {store_path, *(store_path.with_name(store_path.name + s) for s in _COMPANIONS)}
    if path.resolve() in own:
        raise ConfigError(option, "", f"{path} is the store itself (store.path); name another file")


def _readable_backup(backup: Path) -> str:
    """The backup's SHA-256, once it is known to be an intact klantsync store."""
    if not backup.is_file():
        raise ConfigError("--from", "", f"{backup} is not a file")
    try:
        with closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if not 0 < version <= len(MIGRATIONS):
                raise ConfigError(
                    "--from",
                    "",
                    f"{backup} is not a klantsync store backup"
                    + (" (it is from a newer klantsync)" if version > len(MIGRATIONS) else ""),
                )
            refuse_foreign(db, backup, version)
            problem = _damage(db)
    except (sqlite3.Error, StoreError):
        raise ConfigError(
            "--from", "", f"{backup} is not a klantsync store backup, or is damaged"
        ) from None
    if problem:
        raise ConfigError("--from", "", f"{backup} is damaged ({problem})")
    return _sha256(backup)


def _damage(db: sqlite3.Connection) -> str | None:
    """SQLite's first complaint about a database's pages and indexes, or None if intact."""
    (result,) = db.execute("PRAGMA integrity_check(1)").fetchone()
    return None if result == "ok" else str(result)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _discard(path: Path) -> None:
    for name in (path, *(path.with_name(path.name + s) for s in _COMPANIONS)):
        name.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (its directory entry), where the OS allows it."""
    with _opened_folder(folder) as fd:
        if fd is not None:
            os.fsync(fd)


@contextmanager
def _opened_folder(folder: Path) -> Iterator[int | None]:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
