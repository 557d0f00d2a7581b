"""The store's connection: SQLite in WAL mode, one file, versioned migrations, transactions.

:class:`StoreBase` opens the file (owner-only), sets the connection up, upgrades the schema
and hands out transactions; the store's other parts (:mod:`connector.state` names them) are
mixins on top of it, each for the tables of one concern. The helpers they share are here:
the one timestamp format, and ``IN (...)`` lists cut to SQLite's limit.

Every method that changes several tables does so in one transaction, which is what makes a
crash at any point lose nothing: a page's outbox rows and the cursor after it commit together;
an acknowledgement's hash, identity and outbox deletion commit together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from connector.errors import StoreError
from connector.schema import MIGRATIONS, statements
from connector.storefile import (
    failure,
    make_store_file,
    make_store_folder,
    refuse_foreign,
    unusable,
)
from connector.walcheckpoint import WalCheckpointer, truncated_now

__all__ = [
    "AUTOCHECKPOINT_PAGES",
    "BACKGROUND_BOUND_PAGES",
    "BUSY_TIMEOUT_MS",
    "IN_LIST",
    "IN_LIST_MAX",
    "StoreBase",
    "chunks",
    "rows_in",
    "system_names",
    "utcnow",
]

# The store's log lines keep the name they have always had: operators filter on it.
log = logging.getLogger("klantsync.state")

T = TypeVar("T")

#: How long a statement waits out another process's write before it fails (milliseconds).
BUSY_TIMEOUT_MS = 5000

#: WAL pages after which a commit checkpoints the log itself (~40 MB; see
#: ``StoreBase._configure``).
AUTOCHECKPOINT_PAGES = 10_000

#: The same with a background checkpointer running: only a bound, reached if it falls behind.
BACKGROUND_BOUND_PAGES = 50_000


def utcnow() -> str:
    """Now, UTC, ISO 8601 with seconds: the one timestamp format in the store."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: an ``IN (...)`` list per slice stays within
    SQLite's limit on a statement's variables (32,766 in its own builds, fewer in older)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: The most values one statement's ``IN (...)`` list is given by :func:`rows_in`: within
#: SQLite's limit on a statement's variables (999 in builds before 3.32), with room to spare
#: for the statement's other parameters.
IN_LIST_MAX = 500

#: Where :func:`rows_in` puts a chunk's placeholders: not SQL, so a statement run without
#: it fails at once instead of binding the wrong values.
IN_LIST = "(?...)"


def rows_in(
    db: sqlite3.Connection,
    sql: str,
    values: Sequence[object],
    *,
    before: Sequence[object] = (),
    after: Sequence[object] = (),
) -> list[Any]:
    """The rows ``sql`` gives for all of ``values``, run :data:`IN_LIST_MAX` values at a time
    (none for none).

    ``sql`` holds :data:`IN_LIST` once, as ``... IN (?...)``: each run has a chunk's
    placeholders there, and binds ``before``, the chunk's values, then ``after``. The values
    are only ever bound, never written into the statement. A statement that gives no rows
    (a ``DELETE``) runs the same way.
    """
    if sql.count(IN_LIST) != 1:
        raise ValueError(f"the statement must hold {IN_LIST} once")
    found: list[Any] = []
    for chunk in chunks(values, IN_LIST_MAX):
        statement = sql.replace(IN_LIST, "(" + ",".join("?" * len(chunk)) + ")")
        found += db.execute(statement, (*before, *chunk, *after)).fetchall()
    return found


def system_names(systems: Sequence[str]) -> Sequence[str]:
    """``systems`` as given; one name passed alone is refused (a string is a sequence too)."""
    if isinstance(systems, str):
        raise TypeError("systems is a sequence of system names, not one name")
    return systems


def _owner_only(path: Path) -> None:
    """Keep the store file, its -wal and its -shm owner-only (a new store is made so:
    :func:`make_store_file`).

    Under the umask a shell, sudo or a container starts with (022) SQLite made it 0644, and
    its -wal and -shm with it (SQLite gives them the main file's mode): the sealed outbox,
    subject ids and wrapped keys, readable by every local user, while backups of the same
    data are 0600. A store made so by an earlier version is narrowed when opened, once it is
    known for a klantsync store: narrowed before, another application's database refused
    there (or, for root, ``/dev/null``) was left unreadable to the users it serves. One owned
    by another user (opened to read) is left as it is.
    """
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


def _refuse_newer(path: Path, version: int) -> None:
    """StoreError for a store from a newer klantsync: this one would not know its tables."""
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path}: schema version {version} is newer than this klantsync supports "
            f"({len(MIGRATIONS)}); upgrade klantsync"
        )


class StoreBase:
    """The store's connection. One connection; callers stay on one thread (the event loop's).

    Args:
        path: database file; its folder is created if missing.

    Raises:
        StorePathError: no store can be at ``path`` (a folder; a folder that cannot be made).
        StoreError: the file there is not a klantsync store, is damaged, or is newer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        make_store_folder(path)
        # Not made here: one already there, or a folder that is not writable (the connect
        # below says what is wrong).
        made_here = make_store_file(path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise unusable(path, exc) from exc
        self._checkpointer: WalCheckpointer | None = None
        #: Whether the log still holds what :meth:`truncate_log` was asked to remove.
        self._log_owed = False
        try:
            # Waits out another process's write (up to 5 s) rather than failing at once.
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Refused before anything is set: WAL mode, for one, stays with the file.
            refuse_foreign(self.db, self.path)
            if not made_here:
                _owner_only(path)  # known for a store now: narrowed, not a file refused
            self._configure()
            self.migrate()
            # The parts' own state, set up in the one __init__ they share.
            #: The highest outbox id handed out, or found at open (see
            #: :meth:`OutboxStore.enqueue_page`).
            self._outbox_high: int = self.db.execute(
                "SELECT COALESCE(MAX(id), 0) FROM outbox"
            ).fetchone()[0]
            #: The suppression list as last read, and the change count it was read at (see
            #: :meth:`SuppressionStore.suppressed`); ``None`` until read, or while the list
            #: is too long.
            self._suppression: frozenset[str] | None = None
            self._suppression_read_at: int | None = None
            #: Field sets read or made (:meth:`DeliveredStore.field_set`): by (flow, names)
            #: and by number.
            self._field_set_numbers: dict[tuple[str, str], int] = {}
            self._field_sets: dict[int, tuple[str, frozenset[str]]] = {}
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.Error):
                raise unusable(path, exc) from exc
            raise

    def _configure(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode (only an OS crash can lose
        # the last transactions), which is the failure this store must survive.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint every ~40 MB of WAL instead of SQLite's 4 MB. A checkpoint copies
        # pages back into the database and syncs both files; a sync writes a few pages per
        # record (subject ids are random keys), so at the default it checkpointed every
        # few hundred records and spent half of each commit there. Durability is the same:
        # a committed transaction is in the WAL either way. A long-running process moves
        # checkpoints off its event loop altogether (:meth:`checkpoint_in_background`).
        self.db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Freed pages are zeroed so deleted payloads do not linger in the file.
        self.db.execute("PRAGMA secure_delete=ON")

    def checkpoint_in_background(self) -> WalCheckpointer:
        """Checkpoint the WAL on a thread of its own from now on (:mod:`connector.walcheckpoint`).

        The commit that crosses ``wal_autocheckpoint`` then no longer copies the log itself;
        that limit is raised to a bound on the log's size should the thread fall behind.
        Idempotent; :meth:`close` stops the thread.
        """
        if self._checkpointer is None:
            self._checkpointer = WalCheckpointer(self.path)
            self.db.execute(f"PRAGMA wal_autocheckpoint={BACKGROUND_BOUND_PAGES}")
            if self._log_owed:
                self._checkpointer.truncate_soon()
        return self._checkpointer

    @property
    def log_owed(self) -> bool:
        """Whether the log still holds what :meth:`truncate_log` was asked to remove."""
        return self._log_owed

    def truncate_log(self) -> bool:
        """Copy the write-ahead log into the store and truncate it to nothing: now if no
        other process is in the way, else at the next chance; whether it is done now.

        For writes that leave behind, in the log, what must not stay readable: an upgrade
        that rewrote tables (schema 8 copies the identity map through the log, ids as an
        older store kept them), ids cloaked and paths sealed where they were. The log keeps
        a page's earlier frames until a checkpoint truncates it (a passive one, the daemon's,
        never does), and ``secure_delete`` zeroes only the store file's freed pages. The
        next chance: the background checkpointer's looks (:meth:`checkpoint_in_background`),
        and :meth:`close`; the log says when it waits.
        """
        # Not while this process's own checkpointer looks at the log: its passive
        # checkpoint in progress made the truncation busy, and the log kept what an erasure
        # had removed until its next look.
        checkpointer = self._checkpointer
        with checkpointer.lock if checkpointer is not None else contextlib.nullcontext():
            done = truncated_now(self.db)
        if done:
            self._log_owed = False
            return True
        if not self._log_owed:
            log.warning(
                "the store's write-ahead log still holds rows since rewritten: another "
                "process is using the store; it is truncated at the next chance"
            )
        self._log_owed = True
        if self._checkpointer is not None:
            self._checkpointer.truncate_soon()
        return False

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
            self._log_owed = self._log_owed and checkpointer.truncate_pending
        if self._log_owed and not truncated_now(self.db):
            # Closed last, a connection removes the log itself: it is another process's now.
            log.warning(
                "the store's write-ahead log still holds rows since rewritten: another "
                "process has the store open; the log goes when the last one closes it"
            )
        self.db.close()

    @property
    def schema_version(self) -> int:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def migrate(self) -> None:
        """Apply pending migrations; refuse a store from a newer klantsync.

        Every step in one transaction: a kill or a full disk part-way leaves the schema the
        upgrade started from, never one in between. (Each step committed on its own left a
        store the klantsync it was upgraded from refused as newer, and only this one could
        finish it.) Schema 8 rewrites whole tables: the upgrade needs room for their copy.
        """
        current = self.schema_version
        _refuse_newer(self.path, current)
        if current == len(MIGRATIONS):
            return
        if current > 0:
            # Some migrations rewrite whole tables (8: ~3.5 s per 200,000 customers): say why
            # a start-up takes its time.
            log.info(
                "migrating the store", extra={"schema_from": current, "schema_to": len(MIGRATIONS)}
            )
        try:
            with self._foreign_keys_unenforced(), self.transaction():
                # Read again under the write lock: another process opening the store at the
                # same moment (a daemon restarting beside a cron sync) may have upgraded it
                # while this one waited for the lock.
                current = self.schema_version
                _refuse_newer(self.path, current)
                broken_before = self._broken_references()
                for version in range(current, len(MIGRATIONS)):
                    for statement in statements(MIGRATIONS[version]):
                        self.db.execute(statement)
                self._refuse_broken_references(current, broken_before)
                self.db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        except sqlite3.Error as exc:
            # The transaction rolled back: the store is as it was before the upgrade.
            raise failure(self.path, exc) or StoreError(
                f"{self.path}: migrating the store from schema {current} to {len(MIGRATIONS)} "
                f"failed ({exc}); it is left at schema {current}: restore it from a backup "
                "if it is damaged, or keep the klantsync version that last used it"
            ) from exc
        if 0 < current < len(MIGRATIONS):
            # The rewritten tables' old rows stay readable in the log until it is truncated.
            self.truncate_log()

    @contextmanager
    def _foreign_keys_unenforced(self) -> Iterator[None]:
        """Foreign keys unenforced for the block, enforced again after.

        SQLite's way to rebuild a table others refer to (a step that drops a parent table
        otherwise fails, or deletes its children). ``PRAGMA foreign_keys`` is a no-op inside
        a transaction, so a step cannot set it itself: the upgrade does, around its one
        transaction, and checks the references before it commits.
        """
        self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            self.db.execute("PRAGMA foreign_keys=ON")

    def _broken_references(self) -> Counter[str]:
        """Rows referring to rows that are not there, by table (``PRAGMA foreign_key_check``)."""
        return Counter(str(row[0]) for row in self.db.execute("PRAGMA foreign_key_check"))

    def _refuse_broken_references(self, version: int, before: Counter[str]) -> None:
        """StoreError (rolling the upgrade back) when the steps left more rows referring to
        rows that are not there than the store held before, which enforced foreign keys
        would have refused. (Rows broken before the upgrade are not its to judge.)"""
        broken = sorted(self._broken_references() - before)
        if broken:
            raise StoreError(
                f"{self.path}: migrating the store from schema {version} to {len(MIGRATIONS)} "
                f"would leave rows of {', '.join(broken)} referring to rows that are not "
                f"there; it is left at schema {version}: keep the klantsync version that last "
                "used it, and report this as a bug"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work (``BEGIN IMMEDIATE`` ... ``COMMIT``; rollback on error)."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            # SQLite has rolled the whole transaction back itself after some errors (a full
            # disk): a ROLLBACK then fails, and its error would hide the one that matters.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            # A COMMIT that fails (a full disk, an I/O error) can leave the transaction
            # open: ended here, so the connection is usable and the caller sees this error.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    @contextmanager
    def durable_transaction(self) -> Iterator[sqlite3.Connection]:
        """:meth:`transaction`, synced to disk before it returns: for what is acknowledged
        to someone who will not send it again (a vendor's data subject request, answered
        200). The store's usual commits survive a crash of the process, not of the machine
        (``synchronous=NORMAL``); this one survives a power cut too."""
        if self.db.in_transaction:
            yield self.db  # the outer transaction decides when it is synced
            return
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            with self.transaction() as db:
                yield db
        finally:
            # Not inside a transaction (SQLite refuses it there, which would hide what
            # failed); transaction() has ended it either way.
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA synchronous=NORMAL")
