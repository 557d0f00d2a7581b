"""The stores a restore replaced (``<store>.replaced-<time>``), purged by the retention sweep
(:mod:`connector.retention`) once past ``replaced_stores_days``.

Each held all the store held, and no erasure reaches it: all but its audit trail and its keys
is deleted (the entries between the backup and the restore are there only; its keys check
its chain's MACs), then that trail's entries past ``audit_days`` as the store's own, and the
file once every entry of its own is past ``audit_days`` (or whole, when SQLite finds it
damaged: nothing of it can be kept). What is due is read first (:func:`replaced_stores_due`,
which a dry run counts); a trail is purged inside the sweep's last transaction
(:func:`replaced_trails_purged`), and a store is emptied or deleted only once that is
committed (:func:`purge_replaced_stores`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from connector import audit
from connector.config import Config
from connector.errors import ConfigError, KlantsyncError
from connector.keyset import store_keyring
from connector.retention_audit import audit_prefix, purge_audit, stamp
from connector.state import Store
from connector.storefile import foreign, replaced_stores

__all__ = [
    "Replaced",
    "purge_replaced_stores",
    "purge_replaced_trail",
    "replaced_stores_due",
    "replaced_trails_purged",
]


@dataclass(frozen=True)
class Replaced:
    """What is due of one store a restore replaced (:func:`replaced_stores_due`)."""

    path: Path
    #: Delete the file: its own audit trail is past ``audit_days`` too, or it is damaged.
    delete: bool = False
    #: Delete all but its audit trail and its keys.
    empty: bool = False
    #: Purge its audit entries through this seq, past ``audit_days`` (0: none are).
    audit_through: int = 0


def replaced_stores_due(
    store_path: Path, cutoff: str, audit_cutoff: str, errors: list[str]
) -> list[Replaced]:
    """The stores restores replaced before ``cutoff`` with something due: all but their
    audit trail (and keys), their audit entries past ``audit_cutoff``, or, once every entry
    of their own is, the file. Read only: a dry run says what the real run would do.

    The audit entries between the backup and the restore are in the replaced store only
    (the restored chain ends at the backup's head), and are kept as long as ``audit_days``
    keeps any: deleting the file with the rest deleted them years early. One that SQLite
    finds damaged (a restore replaced a damaged store) can be neither emptied nor kept
    apart from its trail: it is deleted whole, as left it would hold all it held forever.
    """
    due = []
    for path, when in replaced_stores(store_path):
        if stamp(when) >= cutoff:
            continue
        try:
            try:
                with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
                    if foreign(db):
                        # Another application's database under a replaced store's name (put
                        # aside by hand, or by a restore of an earlier version): not ours to
                        # empty or delete.
                        errors.append(f"replaced store {path.name}: not a klantsync store, left")
                        continue
                    work = _due_of(db, path, audit_cutoff)
            except sqlite3.Error as exc:
                if not _damaged(exc):
                    raise
                work = Replaced(path, delete=True)
        except (OSError, sqlite3.Error) as exc:
            errors.append(f"replaced store {path.name}: {_reason(exc)}")
            continue
        if work.delete or work.empty or work.audit_through:
            due.append(work)
    return due


def _due_of(db: sqlite3.Connection, path: Path, audit_cutoff: str) -> Replaced:
    """What is due of one replaced store, read from it."""
    tables = _tables(db)
    newest = ""
    if "audit" in tables:
        # The entries a purge of its trail adds (audit.anchored, and audit.keyed where the
        # purge keyed it) do not keep it: each purge would have kept it audit_days more.
        row = db.execute(
            "SELECT MAX(ts) FROM audit WHERE kind NOT IN (?, ?)",
            (audit.AUDIT_ANCHORED, audit.AUDIT_KEYED),
        ).fetchone()
        newest = str(row[0]) if row and row[0] else ""
    if newest < audit_cutoff:  # no entry of its own (""), or all past audit_days
        return Replaced(path, delete=True)
    held = any(_holds_rows(db, name) for name in tables - _KEPT_TABLES)
    through, _count = audit_prefix(db, audit_cutoff)
    return Replaced(path, empty=held, audit_through=through)


def purge_replaced_trail(
    config: Config, work: Replaced, cutoff: str, errors: list[str]
) -> Replaced:
    """Purge a replaced store's audit entries past ``cutoff`` as the store's own are: the
    prefix verified first, the rest anchored under the replaced store's own keys, so its
    kept trail still verifies. Its own chain records the purge (an ``audit.anchored``
    entry, in the same transaction there).

    Returns what is still due of it: nothing more of its trail if none went (what failed
    goes to ``errors``), the file whole if SQLite finds it damaged on the way.
    """
    failed: list[str] = []
    purged = 0
    try:
        replaced = Store(work.path)
        try:
            if _bind_own_keys(replaced, config):
                purged = purge_audit(replaced, cutoff, failed)
            else:
                failed.append(
                    "its keys do not open under keys.source, so its audit entries past "
                    "audit_days are kept"
                )
            # One file again, no -wal beside it, as an emptied replaced store is left.
            replaced.db.execute("PRAGMA journal_mode=DELETE")
        finally:
            replaced.close()
    except (KlantsyncError, sqlite3.Error, OSError) as exc:
        if _damaged(exc):
            return replace(work, delete=True)
        failed.append(_reason(exc))
    errors.extend(f"replaced store {work.path.name}: {problem}" for problem in failed)
    return work if purged else replace(work, audit_through=0)


def _bind_own_keys(replaced: Store, config: Config) -> bool:
    """Bind a replaced store's own keys to its audit chain, as ``audit verify`` at it does:
    those its keyset holds (its chain's MACs are under them, which after a master key
    rotation are not the store's), or, with no keyset, those the master key derives. False
    when its keyset does not open under the master key in use."""
    try:
        audit.use_keys(replaced, store_keyring(replaced, config))
    except ConfigError:
        return False
    return True


def purge_replaced_stores(due: Sequence[Replaced], errors: list[str]) -> None:
    """Empty or delete the replaced stores ``due`` says (once the entry saying so is
    committed); failures go to ``errors``, and the next sweep tries them again."""
    for work in due:
        try:
            if work.delete:
                _delete_replaced_store(work.path)
            else:
                _empty_replaced_store(work.path)
        except (OSError, sqlite3.Error) as exc:
            errors.append(f"replaced store {work.path.name}: {_reason(exc)}")


def _empty_replaced_store(path: Path) -> None:
    """Delete all but a replaced store's audit trail and keys; the file whole if SQLite finds
    it damaged on the way (it can be neither emptied nor kept apart from its trail)."""
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            _keep_only_the_audit_trail(db, _tables(db) - _KEPT_TABLES)
    except sqlite3.Error as exc:
        if not _damaged(exc):
            raise
        _delete_replaced_store(path)


def _delete_replaced_store(path: Path) -> None:
    for companion in ("-wal", "-shm"):
        path.with_name(path.name + companion).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    """What went wrong, in words that name no path (an operator may name folders after
    people) and nothing a row holds."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _damaged(exc: BaseException | None) -> bool:
    """Whether SQLite says the file is damaged (or not a database at all, its header gone),
    not that it is busy or the disk failed: only then is nothing of it to be kept. Read
    through the errors ``exc`` was raised from (a store that does not open says why so)."""
    while exc is not None:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
        exc = exc.__cause__
    return False


#: What an emptied replaced store keeps: its audit trail, which verifies on its own, and its
#: keys (wrapped under the master key; no personal data): after a master key rotation its
#: chain's MACs are under keys only its keyset holds, and a rotation since puts those under
#: the new master key too.
_KEPT_TABLES = frozenset({"audit", "audit_chain", "keyset"})


def _tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
    )
    return {str(name) for (name,) in rows}


def _holds_rows(db: sqlite3.Connection, table: str) -> bool:
    return db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None  # noqa: S608


def _keep_only_the_audit_trail(db: sqlite3.Connection, tables: set[str]) -> None:
    """Delete every row but the audit trail's, the freed pages zeroed and the file shrunk."""
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("PRAGMA secure_delete=ON")
    db.execute("BEGIN IMMEDIATE")
    for name in sorted(tables):
        db.execute(f'DELETE FROM "{name}"')  # noqa: S608 - the store's own tables
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    db.execute("VACUUM")


def replaced_trails_purged(
    config: Config, beside: Path, cut: dict[str, str], errors: list[str]
) -> list[Replaced]:
    """The replaced stores with something due; their trails past ``audit_days`` purged."""
    due = replaced_stores_due(beside, cut["replaced_stores"], cut["audit"], errors)
    # A replaced store's trail is purged here, recorded in that store's own chain: the rest
    # is irreversible without a record of its own, and waits for this store's entry.
    due = [
        purge_replaced_trail(config, work, cut["audit"], errors) if work.audit_through else work
        for work in due
    ]
    return [work for work in due if work.delete or work.empty or work.audit_through]
