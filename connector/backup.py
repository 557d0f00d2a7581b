"""Backups of the store: a consistent copy taken while the daemon runs.

A store in WAL mode is two files while anything has it open, and a copy of the main file
alone (``cp``, a disk snapshot taken mid-checkpoint) can miss the last transactions or be
damaged. :func:`take_backup` copies it through SQLite's online backup API in one read
transaction: a consistent store as of one moment, taken while the daemon runs (readers do
not block its writes), checked, written as one self-contained file readable only by its
owner, and audited with its SHA-256.

The backup holds what the store holds: keyed HMAC ids, the sealed outbox and manifests, the
suppression list and the audit chain, nothing in clear; it opens only with the master key the
store was kept under when it was taken.

It carries the receipt signing key file beside the store (and retired public keys), so a
backup is all a lost disk needs. :mod:`connector.restore` puts one back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

from connector import audit
from connector.config import Config, secret_files
from connector.crypto import master_fingerprint
from connector.errors import ConfigError, StoreError, StoreFullError, StorePathError
from connector.keyset import check_master_key, seal_clear_bundle_paths, store_keyring
from connector.lock import lock_files, sharing_keys
from connector.privatefile import sync_folder
from connector.receipts import ReceiptSigner, receipt_key_path, retired_keys_dir
from connector.schema import MIGRATIONS
from connector.stages import Steps, unseen
from connector.state import Store, utcnow
from connector.storefile import (
    COMPANIONS,
    copy_failure,
    failure,
    read_only,
    refuse_foreign,
    store_exists,
    store_path_problem,
)

__all__ = [
    "COMPANIONS",
    "FILES_TABLE",
    "PREPARING",
    "RECEIPT_KEY",
    "RETIRED",
    "STORE_BACKUP",
    "STORE_RESTORED",
    "BackupFacts",
    "chain_head",
    "damage",
    "discard",
    "last_backup",
    "last_backup_time",
    "readable_backup",
    "refuse_store_files",
    "sha256",
    "take_backup",
]

STORE_BACKUP = "store.backup"  # audit: a backup was taken (its chain head and SHA-256)
STORE_RESTORED = "store.restored"  # audit: a backup was put back (what it replaced, carried)

#: What a restore appends to the store's name (and the receipt signing key file's) for the
#: copy it prepares beside it, deleted first and last: no file the operator names goes there.
PREPARING = ".restoring"

#: The table of a backup that holds the receipt signing key file as it was (sealed): a
#: backup is all a lost disk needs, and the store's public key stays the one receipts name.
FILES_TABLE = "backup_files"
RECEIPT_KEY = "receipt-signing.key"
#: Rows of that table under this prefix are the public halves of retired signing keys:
#: earlier receipts are verified with them.
RETIRED = "retired/"


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
    #: Whether the store's audit trail verified when the backup was taken (with the store's
    #: keys), and if not, at which entry and why. A restore refuses a backup whose trail
    #: does not verify: this one is kept, but it is no backup to count on.
    audit_verifies: bool = True
    audit_problem: str = ""
    #: Whether the store recorded the backup in its audit trail (``store.backup``), and if
    #: not, why (its disk full, say): the backup is whole all the same.
    recorded: bool = True
    record_problem: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- taking a backup ---------------------------------------------------------------------------


def take_backup(config: Config, out: Path, *, step: Steps = unseen) -> BackupFacts:
    """Copy the store to ``out`` (replaced atomically if it exists), checked and audited;
    each step told to ``step`` as it starts.

    Raises:
        ConfigError: ``out`` is the store or one of its files.
        StoreError: there is no store yet, or it cannot be read.
    """
    store_path = config.store_path
    refuse_store_files(config, out, "--out")
    # A path no store can be at (a file in the way) is bad configuration, as for every
    # command: StorePathError, not "no store yet".
    if not store_exists(store_path):
        raise StoreError(f"{store_path}: there is no store yet, so nothing to back up")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(_partial_name(out))
    _discard_dead_partials(out.parent)
    # Shared: a key rotation (which needs the store alone) does not reseal under the copy.
    with sharing_keys(store_path):
        store = Store(store_path)
        try:
            check_master_key(store, config)  # a backup nobody could open is no backup
            # Verified here, not first at a restore: that refuses a backup whose trail does
            # not verify, and the day it is needed is the wrong day to learn every backup
            # since the damage is one.
            step("verifying the audit trail")
            trail = audit.verify(store)
            keyring = store_keyring(store, config)
            # Nothing in clear goes into the copy: an older store's bundle paths first.
            seal_clear_bundle_paths(store, keyring)
            # A master key rotation that stopped before renaming the signing key file left
            # it staged: copied as it was on disk, the backup's key file opened with no key.
            ReceiptSigner.for_store(store_path, keyring).settle()
            try:
                try:
                    step("copying the store")
                    _copy(store, partial, receipt_key_path(store_path), step)
                except sqlite3.Error as exc:
                    # Its own disk's failure, not the store's (which it only reads).
                    found = copy_failure(out, exc, "the backup", "name another --out")
                    if found is None:
                        raise
                    raise found from exc
                facts = _facts(partial)
                os.replace(partial, out)
            finally:
                partial.unlink(missing_ok=True)
            sync_folder(out.parent)
            step("hashing the copy")
            sha = sha256(out)
            backup = BackupFacts(
                path=str(out),
                bytes=out.stat().st_size,
                sha256=sha,
                taken_at=utcnow(),
                master_fingerprint=master_fingerprint(config.master_key),
                audit_verifies=trail.ok,
                audit_problem="" if trail.ok else f"entry {trail.first_bad}: {trail.problem}",
                **facts._asdict(),
            )
            try:
                audit.append(
                    store,
                    STORE_BACKUP,
                    {
                        "sha256": sha,
                        "audit_seq": backup.audit_seq,
                        "bytes": backup.bytes,
                        "audit_verifies": trail.ok,
                    },
                )
            except sqlite3.Error as exc:
                # The store's disk full (or failing, or read-only) is the day a backup is
                # wanted most: the copy, whole and checked on its own disk, is kept and
                # named, and the command fails only for the entry the trail lacks.
                found = failure(store_path, exc)
                if found is None:
                    raise
                if isinstance(found, StoreFullError):
                    found = found.then(
                        "the backup is whole and kept, only its entry in the audit trail is "
                        "missing: free space on the store's disk (the next backup is recorded)"
                    )
                backup = replace(backup, recorded=False, record_problem=str(found))
        finally:
            store.close()
    return backup


def last_backup(store: Store) -> dict[str, dict[str, str] | None]:
    """For ``status``: when the last backup was taken and the last restore made, with the
    backup's SHA-256, from the audit trail.

    A restored store holds no entry for the backup it came from (that went into the store
    it replaced, after the copy was taken), so the restore is shown beside it. Each is found
    through the trail's index by kind (schema 13), newest first; ``None`` when there is none
    (or once retention purged the entry).
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


def last_backup_time(store: Store) -> float | None:
    """Unix time of the last backup the audit trail records, or None."""
    found = last_backup(store)["backup"]
    return None if found is None else dt.datetime.fromisoformat(found["at"]).timestamp()


def _partial_name(out: Path) -> str:
    """The name of a backup's copy to ``out`` while it is written (by this process)."""
    return f".{out.name}.partial-{os.getpid()}"


#: A copy's name while written (:func:`_partial_name`): the writer's pid after the name.
_PARTIAL = re.compile(r"\..+\.partial-(\d+)")
_SQLITE_HEADER = b"SQLite format 3\x00"


def _discard_dead_partials(folder: Path) -> None:
    """Delete the copies in ``folder`` that backups no longer running left (killed mid-copy).

    Each holds the store as of its moment, every erasure's traces since included, under a
    hidden name nothing else looks at: left, each killed backup kept one more for good, and
    backups named by date never meet their own name again. Of the files so named, only a
    database (or an empty file: killed before the first page) is taken for a copy; a copy
    of a process still running (a backup beside this one) is its own.
    """
    for path in folder.glob(".*.partial-*"):
        named = _PARTIAL.fullmatch(path.name)
        if named is None or _running(int(named.group(1))) or path.is_symlink():
            continue
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(_SQLITE_HEADER))
        except OSError:
            continue
        if head in (b"", _SQLITE_HEADER):
            # Its log and journal with it: the copy takes the store's write-ahead logging,
            # so what was written into it before it was made one file (the signing key
            # file) is in its "-wal", which was left for good.
            for companion in (*COMPANIONS, "-journal"):
                path.with_name(path.name + companion).unlink(missing_ok=True)
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether a process with this id runs (one whose id was given again counts as running:
    its copy is left, as it may be that process's own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _copy(store: Store, partial: Path, receipt_key: Path, step: Steps = unseen) -> None:
    """The store as of one moment into ``partial``, with its receipt signing key file:
    owner-only, one file, checked."""
    # Made anew, never opened where it stands: its name can be guessed, and a symlink
    # planted there had the store's copy written over whatever it pointed at (the master
    # key file, say). Unlinking removes a link itself, not its target.
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
        # One step (all pages): one read transaction, so one moment of the store; stepped,
        # every write by the daemon meanwhile would start the copy over.
        store.db.backup(copy)
        files = _receipt_files(receipt_key)
        if files:
            # mtime_ns: a key's age, which the daemon's rotation reminder reads off its file.
            copy.execute(
                f"CREATE TABLE {FILES_TABLE} "
                "(name TEXT PRIMARY KEY, content BLOB NOT NULL, mtime_ns INTEGER)"
            )
            copy.executemany(
                f"INSERT INTO {FILES_TABLE}(name, content, mtime_ns) VALUES (?, ?, ?)",  # noqa: S608
                files,
            )
        # The copy is a file of its own: no -wal beside it to lose when it is moved.
        copy.execute("PRAGMA journal_mode=DELETE")
        step("checking the copy")
        problem = damage(copy)
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


def _receipt_files(receipt_key: Path) -> list[tuple[str, bytes, int]]:
    """The signing key file (sealed under the store's keys, as on disk: a master key
    rotation, which would seal it anew, waits for the backup, which shares the keys) and
    the public halves of retired keys, as rows of the backup's files table."""
    paths = [receipt_key] if receipt_key.exists() else []
    retired = retired_keys_dir(receipt_key)
    if retired.is_dir():
        paths += sorted(retired.glob("*.pem"))
    return [
        (RECEIPT_KEY if path == receipt_key else RETIRED + path.name, *_content_and_age(path))
        for path in paths
    ]


def _content_and_age(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _facts(path: Path) -> _Held:
    with closing(read_only(path)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        seq, digest = chain_head(db)
        (suppressed,) = db.execute("SELECT COUNT(*) FROM suppression").fetchone()
        (open_requests,) = db.execute(
            "SELECT COUNT(*) FROM dsr_requests WHERE status='open'"
        ).fetchone()
    return _Held(int(version), seq, digest, int(suppressed), int(open_requests))


# -- putting one back --------------------------------------------------------------------------


# -- shared with connector/restore.py -------------------------------------------------------


def refuse_store_files(config: Config, path: Path, option: str) -> None:
    """ConfigError when ``path`` is one of the files the store cannot do without: the store
    and its -wal and -shm, its lock files, its receipt signing key file and the folder of
    retired receipt keys (or a file in it), each secret file the config names
    (the master key above all: a backup written over it could never be opened, nor could the
    store), the daemon's TLS key and certificate (without them it cannot listen), and the
    config file, its mappings and CA bundles (without them it does not load). A symlink is
    followed: the file it names is what would be lost."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        raise ConfigError(
            option, "", f"{path} cannot be followed (a symlink loop); name another file"
        ) from None
    try:
        store_path = config.store_path.resolve()
    except (OSError, RuntimeError):
        # A symlink loop: no store can be there, which is store.path's to fix (exit 2).
        problem = store_path_problem(config.store_path) or "cannot be reached"
        raise StorePathError(config.store_path, problem) from None
    own = {store_path, *(store_path.with_name(store_path.name + s) for s in COMPANIONS)}
    if target in own:
        raise ConfigError(option, "", f"{path} is the store itself (store.path); name another file")
    # A restore deletes what is there before it prepares its copy: named as --from, the
    # backup was gone before it was read (and the restore hung copying the new file into
    # itself); written there, a backup went with the next restore.
    preparing = store_path.with_name(store_path.name + PREPARING)
    if target in {preparing, *(preparing.with_name(preparing.name + s) for s in COMPANIONS)}:
        raise ConfigError(
            option,
            "",
            f"{path} is the copy a restore prepares beside the store (deleted by the next "
            "restore); copy it elsewhere first, or name another file",
        )
    if target in lock_files(store_path):
        raise ConfigError(option, "", f"{path} is one of the store's lock files; name another file")
    key_file = receipt_key_path(store_path)
    if option != "--from" and _set_aside_by_a_restore(target, store_path, key_file):
        # The audit entries between a backup and its restore are in the store it replaced
        # only: written over, they were lost. A file so named that is no such store yet is
        # taken for one by the retention sweep, which empties it. Read (--from), one undoes
        # a restore.
        raise ConfigError(
            option,
            "",
            f"{path} is named as a store a restore replaced, or the receipt signing key file "
            "it set aside (kept beside the store, and swept by retention); name another file",
        )
    staged = (".rotating", PREPARING)  # a key rotation's and a restore's, put in place later
    if target in {key_file, *(key_file.with_name(key_file.name + s) for s in staged)}:
        raise ConfigError(
            option, "", f"{path} is the store's receipt signing key file; name another file"
        )
    # Also before it exists: `dsr rotate-key` makes it on its first run, and a file there
    # would stop every rotation; a file in it would replace a retired public key.
    retired = retired_keys_dir(key_file)
    if target == retired or retired in target.parents:
        raise ConfigError(
            option,
            "",
            f"{path} is the store's folder of retired receipt keys, or in it; name another file",
        )
    for key, secret in secret_files(config.path):
        if target == secret.resolve():
            raise ConfigError(
                option, "", f"{path} is the secret file {key} names; name another file"
            )
    for key, tls_file in _tls_files(config):
        if target == tls_file.resolve():
            raise ConfigError(option, "", f"{path} is the daemon's {key}; name another file")
    for what, loaded in _config_files(config):
        if target == loaded.resolve():
            raise ConfigError(option, "", f"{path} is {what}; name another file")


def _set_aside_by_a_restore(target: Path, store_path: Path, key_file: Path) -> bool:
    """Whether ``target`` (resolved) is named as what a restore keeps beside the store: the
    store it replaced (``<store>.replaced-...``, with its -wal and -shm and the wrapping a
    key rotation stages beside it) or the receipt signing key file it set aside."""
    if target.parent != store_path.parent:
        return False
    return any(target.name.startswith(f"{kept.name}.replaced-") for kept in (store_path, key_file))


def _tls_files(config: Config) -> list[tuple[str, Path]]:
    """The daemon's TLS files the config names (resolved when it was loaded), by key."""
    daemon = config.daemon
    named = (("daemon.tls_key", daemon.tls_key), ("daemon.tls_cert", daemon.tls_cert))
    return [(key, path) for key, path in named if path is not None]


def _config_files(config: Config) -> list[tuple[str, Path]]:
    """The files loaded with the config, which it does not load without: itself, each
    system's mapping and its ``ca_bundle``."""
    found = [("the config file", config.path)]
    for name, system in config.systems.items():
        found.append((f"the mapping systems.{name}.mapping names", system.mapping))
        if system.ca_bundle is not None:
            found.append((f"the CA bundle systems.{name}.ca_bundle names", system.ca_bundle))
    return found


def readable_backup(backup: Path) -> str:
    """The backup's SHA-256, once it is known to be an intact klantsync store."""
    if not backup.is_file():
        raise ConfigError("--from", "", f"{backup} is not a file")
    try:
        with closing(read_only(backup)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if not 0 < version <= len(MIGRATIONS):
                raise ConfigError(
                    "--from",
                    "",
                    f"{backup} is not a klantsync store backup"
                    + (" (it is from a newer klantsync)" if version > len(MIGRATIONS) else ""),
                )
            refuse_foreign(db, backup)
            problem = damage(db)
    except (sqlite3.Error, StoreError):
        raise ConfigError(
            "--from", "", f"{backup} is not a klantsync store backup, or is damaged"
        ) from None
    if problem:
        raise ConfigError("--from", "", f"{backup} is damaged ({problem})")
    return sha256(backup)


def chain_head(db: sqlite3.Connection) -> tuple[int, str]:
    """The audit chain's head (seq, hash), as the chain records it (entries may be purged)."""
    row = db.execute("SELECT head_seq, head_hash FROM audit_chain WHERE id=1").fetchone()
    return (0, audit.GENESIS) if row is None else (int(row[0]), str(row[1]))


def damage(db: sqlite3.Connection) -> str | None:
    """SQLite's first complaint about a database's pages and indexes, or None if intact."""
    (result,) = db.execute("PRAGMA integrity_check(1)").fetchone()
    return None if result == "ok" else str(result)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def discard(path: Path) -> None:
    for name in (path, *(path.with_name(path.name + s) for s in COMPANIONS)):
        name.unlink(missing_ok=True)
