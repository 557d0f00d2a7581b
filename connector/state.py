"""The store: SQLite in WAL mode, one file, versioned migrations.

Holds cursors, the identity map, delivered-payload hashes, the encrypted outbox, dead letters,
the suppression list, run history and the audit chain. Nothing in it is personal data in
clear: subjects are keyed HMAC ids, payloads are AES-GCM sealed by :mod:`connector.crypto`.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

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
    "HELD",
    "HELD_PHONE",
    "PER_SYSTEM_TABLES",
    "RESEND",
    "UNSURE",
    "WITHDRAWAL",
    "Ack",
    "DeadLetter",
    "OutboxRow",
    "PageLetter",
    "QueuedPayload",
    "Store",
    "before_resend",
    "chunks",
    "landed_unsure",
    "latest_runs",
    "latest_success",
    "table_counts",
    "utcnow",
]

log = logging.getLogger("klantsync.state")

T = TypeVar("T")

#: How long a statement waits out another process's write before it fails (milliseconds).
BUSY_TIMEOUT_MS = 5000

#: WAL pages after which a commit checkpoints the log itself (~40 MB; see ``Store``).
AUTOCHECKPOINT_PAGES = 10_000

#: The same with a background checkpointer running: only a bound, reached if it falls behind.
BACKGROUND_BOUND_PAGES = 50_000

#: Suppression entries held in memory at most (keyed HMAC ids, ~100 bytes each); a longer
#: list is asked in SQL (:meth:`Store.suppressed`).
SUPPRESSION_HELD_MAX = 100_000

#: The suppression kind of a number an erasure read from the person's records in a source
#: (not given with the request): lifted with the address when the person is readmitted.
HELD_PHONE = "erasure:held_phone"

#: Tables keyed by (system, subject_no): what the connector holds per person and system.
#: A subject id reaches its rows through ``subjects`` (:meth:`Store.subject_numbers`).
PER_SYSTEM_TABLES = ("identities", "delivered", "outbox")

# -- marks on payload hashes ------------------------------------------------------------------
#
# A payload hash (in the outbox, among what was delivered) may carry a mark in front, which no
# payload's own hash has. Both are read where a sync decides what to send (connector/engine.py).

#: Marks the hash of a withdrawal of consent (a mapping's ``withdrawn``) as one: a renewal
#: (``consent_renewed``) is due when the person consents again, under whichever address the
#: withdrawal went.
WITHDRAWAL = "withdrawal:"

#: Marks a delivered hash so that no payload has it: the next sync sends the person again
#: (see :meth:`~connector.dsr_store.DsrStore.resend_on_next_sync`). The mark keeps the hash it
#: replaced, ``resend:<hash>`` (:func:`before_resend`); a bare ``resend`` is one whose payload
#: is unknown.
RESEND = "resend"

#: Behind :data:`RESEND`, marks the hash of a payload that was on its way to the system and
#: may or may not have landed: a restore's mark (connector/carryover.py) for what the replaced
#: store still had queued, ``resend:unsure:<hash>``. A correction's mark keeps what the system
#: got: a withdrawal behind it went, and is not sent again (the person may have subscribed
#: anew at the system since). This one keeps what the system may have got: a withdrawal
#: behind it is sent again, and a renewal too. Both still say what may be held: someone
#: consenting again after a withdrawal that may have landed is sent a renewal.
UNSURE = "unsure:"

#: Marks an outbox row that is held, never sent: it keeps only a write from the person's
#: former address (schema 19, connector/moves.py), which may have landed with its answer lost,
#: while the system is to get nothing of them (consent withdrawn, an erasure pending). Dropped,
#: it took with it the only record of that address, and an erasure left what the system holds
#: under it. A page that queues them again replaces the mark (the kept write then goes first);
#: an erasure deletes the row with their other traces, the retention sweep after
#: ``dead_letters_days``. (Payload hashes are hex: none is the mark.)
HELD = "held"
#: Holds the rows matched by the condition that follows it (``?3`` onwards are its
#: parameters; ``?1`` is :data:`HELD`, ``?2`` the time held): each keeps its former address's
#: write, and is not sent (:meth:`Store.hold_formers`). Rows without one are the caller's.
_HOLD = (
    "UPDATE outbox SET payload=former, payload_hash=?1, attempts=0, enqueued_at=?2 "
    "WHERE former IS NOT NULL AND payload_hash!=?1 AND "
)


def before_resend(payload_hash: str) -> str:
    """The hash a system last got (or may have got), behind a resend mark of either kind
    (a bare mark stays as it is).

    What a system holds still decides what a resend sends: someone whose last payload was a
    withdrawal of consent is sent a renewal when they consent again, correction or not in
    between.
    """
    return payload_hash.removeprefix(f"{RESEND}:{UNSURE}").removeprefix(f"{RESEND}:")


def landed_unsure(payload_hash: str) -> bool:
    """Whether the hash is marked as a payload that may not have landed (:data:`UNSURE`)."""
    return payload_hash.startswith(f"{RESEND}:{UNSURE}")


def utcnow() -> str:
    """Now, UTC, ISO 8601 with seconds: the one timestamp format in the store."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# The three records below are made once per record of every sync (a page queued, a batch
# read back, an acknowledgement): named tuples, because a frozen dataclass's constructor
# costs ~2.5 us a record on its own here (it sets each field through object.__setattr__).


class QueuedPayload(NamedTuple):
    """A sealed payload ready to enter the outbox."""

    system: str
    subject_id: str
    payload: bytes
    payload_hash: str
    #: The fields it gives a value, as :meth:`Store.field_set` numbers them (migration 27).
    sent: int | None = None


class OutboxRow(NamedTuple):
    """A payload waiting for delivery."""

    id: int
    system: str
    subject_id: str
    flow: str
    payload: bytes
    payload_hash: str
    attempts: int
    subject_no: int
    #: A write queued under the person's former address, sealed, that may have landed
    #: (schema 19, connector/moves.py): sent first where the system's id is not known.
    former: bytes | None = None
    #: The fields it gives a value (:meth:`Store.field_set`); ``None`` for rows of before.
    sent: int | None = None


class Ack(NamedTuple):
    """A delivered outbox row: the system's id for the subject and what was sent.

    ``subject_no`` is the row's (:attr:`OutboxRow.subject_no`); without it the store looks
    the subject up.
    """

    outbox_id: int
    subject_id: str
    external_id: str | None
    payload_hash: str
    subject_no: int | None = None
    #: The fields the write gave a value (:meth:`Store.field_set`), kept as delivered.
    sent: int | None = None


class PageSent(NamedTuple):
    """Per system, per subject, the field set (:meth:`Store.field_set`) of the payload
    waiting in the outbox and of the one last delivered, where they have one."""

    queued: dict[str, dict[str, int]]
    delivered: dict[str, dict[str, int]]


class PageLetter(NamedTuple):
    """A dead letter as a page reads it (:meth:`Store.page_dead_letters`)."""

    flow: str
    #: The hash of the payload refused; ``None`` for one set aside, not refused.
    payload_hash: str | None


@dataclass(frozen=True)
class DeadLetter:
    """A record a system rejected for good; ``reason`` holds a category or status only.

    One per subject and system: ``reason`` and ``created_at`` are those of the latest
    refusal, ``first_refused_at`` and ``refusals`` say since when and how often it was refused.
    """

    id: int
    system: str
    subject_id: str
    flow: str
    reason: str
    created_at: str
    first_refused_at: str
    refusals: int


def _owner_only(path: Path) -> None:
    """Make the store file owner-only before SQLite opens it, and keep it so.

    Under the umask a shell, sudo or a container starts with (022) SQLite made it 0644, and
    its -wal and -shm with it (SQLite gives them the main file's mode): the sealed outbox,
    subject ids and wrapped keys, readable by every local user, while backups of the same
    data are 0600. A store made so by an earlier version is narrowed when opened; one owned
    by another user (opened to read) is left as it is.
    """
    if make_store_file(path):
        return
    # Not made here: one already there, or a folder that is not writable (the connect
    # below says what is wrong).
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


class Store:
    """The SQLite store. One connection; callers stay on one thread (the event loop's).

    Args:
        path: database file; its folder is created if missing.

    Raises:
        StorePathError: no store can be at ``path`` (a folder; a folder that cannot be made).
        StoreError: the file there is not a klantsync store, is damaged, or is newer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        make_store_folder(path)
        _owner_only(path)
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
            self._configure()
            self.migrate()
            #: The highest outbox id handed out, or found at open (see :meth:`enqueue_page`).
            self._outbox_high: int = self.db.execute(
                "SELECT COALESCE(MAX(id), 0) FROM outbox"
            ).fetchone()[0]
            #: The suppression list as last read, and the change count it was read at
            #: (see :meth:`suppressed`); ``None`` until read, or while the list is too long.
            self._suppression: frozenset[str] | None = None
            self._suppression_read_at: int | None = None
            #: Field sets read or made (:meth:`field_set`): by (flow, names) and by number.
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

    # -- cursors -----------------------------------------------------------------------------

    def get_cursor(self, flow: str, system: str, shape: str | None = None) -> str | None:
        """The flow's cursor on ``system``; ``None`` when there is none, or when it was set
        under another ``shape`` than the one given (see migration 17)."""
        row = self.db.execute(
            "SELECT cursor, shape FROM cursors WHERE flow=? AND system=?", (flow, system)
        ).fetchone()
        if row is None:
            return None
        if shape is not None and row[1] is not None and row[1] != shape:
            return None
        return None if row[0] is None else str(row[0])

    def set_cursor(
        self, flow: str, system: str, cursor: str | None, shape: str | None = None
    ) -> None:
        self.db.execute(
            "INSERT INTO cursors(flow, system, cursor, updated_at, shape) VALUES (?,?,?,?,?) "
            "ON CONFLICT(flow, system) DO UPDATE SET cursor=excluded.cursor, "
            "updated_at=excluded.updated_at, shape=COALESCE(excluded.shape, cursors.shape)",
            (flow, system, cursor, utcnow(), shape),
        )

    # -- the page commit: outbox rows + identities + cursor, atomically ----------------------------

    def enqueue_page(
        self,
        flow: str,
        source: str,
        payloads: Sequence[QueuedPayload],
        identities: Iterable[tuple[str, str]],
        cursor: str | None,
        *,
        move_cursor: bool = True,
        shape: str | None = None,
    ) -> list[int]:
        """Queue a page's payloads, record the source ids, and move the cursor, atomically.

        ``move_cursor=False`` leaves the cursor alone (records from a webhook or a targeted
        resync, which are not a page of the pull). ``shape`` is what the cursor is set under
        (:meth:`get_cursor`).

        Returns:
            The outbox id each payload was queued under, in the order given.
        """
        now = utcnow()
        identities = list(identities)
        with self.transaction() as db:
            numbers = self.subject_numbers(
                [*(p.subject_id for p in payloads), *(sid for sid, _ in identities)], create=True
            )
            # Ids are handed out here, always above every id in the table when the store was
            # opened, every id handed out since, and every id in the table now. Delivery
            # workers read the outbox in id order past the last id they took; had SQLite
            # picked the ids (MAX + 1), it would reuse ids once the highest rows were
            # delivered and deleted, and rows queued after that would sit unseen until the
            # next run. (A restart with a backlog showed it: the backlog delivered, the first
            # new page got ids the worker had passed.) A newer payload for a subject already
            # queued replaces it under a *new* id too, so a delivery of the old version in
            # flight cannot acknowledge (delete) the new one.
            (highest,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
            first = max(self._outbox_high, int(highest)) + 1
            self._outbox_high = first + len(payloads) - 1
            db.executemany(
                "INSERT INTO outbox(id, system, subject_no, flow, payload, payload_hash, "
                "enqueued_at, sent) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(system, subject_no) "
                "DO UPDATE SET id=excluded.id, payload=excluded.payload, "
                "payload_hash=excluded.payload_hash, flow=excluded.flow, "
                "enqueued_at=excluded.enqueued_at, attempts=0, sent=excluded.sent",
                [
                    (
                        first + n,
                        p.system,
                        numbers[p.subject_id],
                        flow,
                        p.payload,
                        p.payload_hash,
                        now,
                        p.sent,
                    )
                    for n, p in enumerate(payloads)
                ],
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) VALUES (?,?,?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET external_id=excluded.external_id "
                # An unchanged id is not rewritten: on a re-sync nearly all are unchanged.
                "WHERE external_id IS NOT excluded.external_id",
                [(source, numbers[sid], ext) for sid, ext in identities],
            )
            if move_cursor:
                self.set_cursor(flow, source, cursor, shape)
        return list(range(first, first + len(payloads)))

    # -- subjects ------------------------------------------------------------------------------
    #
    # A lookup by subject id first finds the ids' numbers, then seeks (system, subject_no) in
    # the per-system table. (Joined in one query, SQLite chose to read all of a system's rows
    # for a page's 100 ids and look each one's id up instead.)

    def subject_numbers(
        self, subject_ids: Sequence[str], *, create: bool = False
    ) -> dict[str, int]:
        """The store's number for each of ``subject_ids`` that has one (see migration 8).

        With ``create``, those without one get new numbers, in the order given; that writes,
        so it belongs inside a write transaction (one is opened if the caller has none).
        """
        unique = list(dict.fromkeys(subject_ids))
        if not create:
            return self._numbers(unique)
        with self.transaction():  # read under the write lock: nobody numbers them meanwhile
            found = self._numbers(unique)
            new = [sid for sid in unique if sid not in found]
            if new:
                found.update(self._number(new))
        return found

    def _numbers(self, subject_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in chunks(subject_ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT subject_id, subject_no FROM subjects "  # noqa: S608 - marks only
                f"WHERE subject_id IN ({marks})",
                tuple(chunk),
            )
            found.update(rows.fetchall())
        return found

    def _numbered(self, numbers: Sequence[int]) -> set[int]:
        """Which of ``numbers`` a subject still has (an erasure deletes the subject's)."""
        found: set[int] = set()
        for chunk in chunks(list(dict.fromkeys(numbers)), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT subject_no FROM subjects WHERE subject_no IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
            found.update(no for (no,) in rows)
        return found

    def _number(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """Number ``subject_ids`` (none has a number), above every number handed out before.

        SQLite's own choice (the highest in the table + 1) gave an erased person's number to
        the next newcomer, and an acknowledgement of the erased person's still waiting to be
        committed then attached their delivered hash and system id to the newcomer (see
        migration 20). The highest number handed out is kept, and moved here.
        """
        (high,) = self.db.execute(
            "SELECT MAX(COALESCE((SELECT n FROM subject_numbers_given WHERE id = 1), 0), "
            "(SELECT COALESCE(MAX(subject_no), 0) FROM subjects))"
        ).fetchone()
        numbered = {sid: int(high) + n for n, sid in enumerate(subject_ids, 1)}
        self.db.executemany(
            "INSERT INTO subjects(subject_no, subject_id) VALUES (?, ?)",
            [(number, sid) for sid, number in numbered.items()],
        )
        self.db.execute(
            "INSERT INTO subject_numbers_given(id, n) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET n = excluded.n",
            (int(high) + len(subject_ids),),
        )
        return numbered

    # -- change detection --------------------------------------------------------------------

    def remark_delivered(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Set the delivered hash of each ``(system, subject_id, payload_hash)``, sending
        nothing: a withdrawal an earlier version recorded by its bare hash, now marked. Only
        where the bare hash is still what was delivered (a delivery that landed since stays)."""
        self.db.executemany(
            "UPDATE delivered SET payload_hash=? WHERE system=? AND payload_hash=? "
            "AND subject_no=(SELECT subject_no FROM subjects WHERE subject_id=?)",
            [
                (payload_hash, system, payload_hash.removeprefix(WITHDRAWAL), sid)
                for system, sid, payload_hash in rows
            ],
        )

    def page_hashes(
        self, systems: Sequence[str], subject_ids: Sequence[str]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], PageSent]:
        """(queued, delivered, sent) for a page: per system, per subject, the hash of the
        payload waiting in the outbox and of the one last delivered, and the field sets of
        both (:meth:`field_set`; only where there is one). The page's subject numbers are
        looked up once (on a first sync nobody has one, and nothing more is read), and each
        table once for hash and set alike."""
        numbers = self.subject_numbers(subject_ids)
        queued, queued_sent = self._hashes_by_number("outbox", systems, numbers)
        delivered, delivered_sent = self._hashes_by_number("delivered", systems, numbers)
        return queued, delivered, PageSent(queued_sent, delivered_sent)

    def _hashes_by_number(
        self, table: str, systems: Sequence[str], numbers: Mapping[str, int]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, int]]]:
        """:meth:`_by_number` for ``payload_hash``, with the ``sent`` column beside it."""
        hashes: dict[str, dict[str, str]] = {system: {} for system in _names(systems)}
        sent: dict[str, dict[str, int]] = {system: {} for system in _names(systems)}
        if not numbers:
            return hashes, sent
        subject_of = {number: subject_id for subject_id, number in numbers.items()}
        names = ",".join("?" * len(systems))
        for chunk in chunks(list(subject_of), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT system, subject_no, payload_hash, sent FROM {table} "  # noqa: S608
                f"WHERE system IN ({names}) AND subject_no IN ({marks})",
                (*systems, *chunk),
            )
            for system, number, payload_hash, fields in rows:
                subject_id = subject_of[number]
                hashes[system][subject_id] = payload_hash
                if fields is not None:
                    sent[system][subject_id] = fields
        return hashes, sent

    # -- field sets (migration 27) ---------------------------------------------------------

    def field_set(self, flow: str, names: Iterable[str]) -> int:
        """The number of the set of field ``names`` a write of ``flow`` gives a value; made
        the first time it is asked for (that writes: inside the caller's transaction, or one
        of its own). People share a handful of sets, so each is read once per process."""
        key = (flow, ",".join(sorted(names)))
        number = self._field_set_numbers.get(key)
        if number is None:
            # Kept for later only once committed: a number made in a caller's transaction
            # that is then rolled back may be given to another set.
            own = not self.db.in_transaction
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO field_sets(flow, names) VALUES (?, ?) "
                    "ON CONFLICT(flow, names) DO NOTHING",
                    key,
                )
                (number,) = db.execute(
                    "SELECT id FROM field_sets WHERE flow=? AND names=?", key
                ).fetchone()
            if own:
                self._field_set_numbers[key] = number
                self._field_sets[number] = (flow, frozenset(filter(None, key[1].split(","))))
        return int(number)

    def field_names(self, number: int) -> tuple[str, frozenset[str]]:
        """(flow, field names) of the set :meth:`field_set` numbered ``number``."""
        found = self._field_sets.get(number)
        if found is None:
            row = self.db.execute(
                "SELECT flow, names FROM field_sets WHERE id=?", (number,)
            ).fetchone()
            if row is None:  # not made in this store (none is ever deleted): empties nothing
                return ("", frozenset())
            found = (str(row[0]), frozenset(filter(None, str(row[1]).split(","))))
            self._field_sets[number] = found
        return found

    def rejected_hashes(
        self, systems: Sequence[str], subject_ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        """Per system, the hash of the payload it last refused for good (dead letters)."""
        return {
            system: {sid: hash_ for sid, (_, hash_) in letters.items() if hash_ is not None}
            for system, letters in self.page_dead_letters(systems, subject_ids).items()
        }

    def page_dead_letters(
        self, systems: Sequence[str], subject_ids: Sequence[str]
    ) -> dict[str, dict[str, PageLetter]]:
        """Per system, the dead letter each of ``subject_ids`` has there: its flow and the
        hash of what was refused (``None``: set aside, not refused; see :meth:`dead_letter`).

        Found through the unique (system, subject_id) index: one row per subject and system,
        one query per 500 subjects (a page's).
        """
        found: dict[str, dict[str, PageLetter]] = {system: {} for system in _names(systems)}
        names = ",".join("?" * len(systems))
        for chunk in chunks(subject_ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT system, subject_id, flow, payload_hash FROM dead_letters "  # noqa: S608
                f"WHERE system IN ({names}) AND subject_id IN ({marks})",
                (*systems, *chunk),
            )
            for system, subject_id, flow, payload_hash in rows:
                found[system][subject_id] = PageLetter(flow, payload_hash)
        return found

    def drop_outdated_letters(self, letters: Sequence[tuple[str, str, str | None]]) -> int:
        """Delete each ``(system, subject_id, payload_hash)`` dead letter, as read by
        :meth:`page_dead_letters`; how many.

        For letters a page found describing nothing any more: the system holds what the
        source says (the refused change was undone at the source), so nothing waits to be
        fixed or delivered. Only the letter as read goes: one refused again meanwhile (another
        payload, from another process) stays.
        """
        with self.transaction() as db:
            cur = db.executemany(
                "DELETE FROM dead_letters WHERE system=? AND subject_id=? AND payload_hash IS ?",
                letters,
            )
        return int(cur.rowcount)

    def _by_number(
        self, table: str, column: str, systems: Sequence[str], numbers: Mapping[str, int]
    ) -> dict[str, dict[str, str]]:
        """Per system, ``column`` of ``table`` per subject id, found by (system, number).

        One query for every system asked: a lookup per destination and table was nine
        statements per page for a flow to three systems.
        """
        found: dict[str, dict[str, str]] = {system: {} for system in _names(systems)}
        if not numbers:
            return found
        subject_of = {number: subject_id for subject_id, number in numbers.items()}
        names = ",".join("?" * len(systems))
        for chunk in chunks(list(subject_of), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT system, subject_no, {column} FROM {table} "  # noqa: S608 - fixed names
                f"WHERE system IN ({names}) AND subject_no IN ({marks})",
                (*systems, *chunk),
            )
            for system, number, value in rows:
                found[system][subject_of[number]] = value
        return found

    # -- identities ----------------------------------------------------------------------------

    def external_id(self, system: str, subject_id: str) -> str | None:
        return self.external_ids(system, [subject_id]).get(subject_id)

    def external_ids(self, system: str, subject_ids: Sequence[str]) -> dict[str, str]:
        """``system``'s id per subject id, for those it has one for."""
        return self.external_ids_numbered(system, self.subject_numbers(subject_ids))

    def external_ids_numbered(self, system: str, numbers: Mapping[str, int]) -> dict[str, str]:
        """:meth:`external_ids` for subjects whose numbers the caller has (outbox rows)."""
        return self._by_number("identities", "external_id", [system], numbers)[system]

    def subjects_for_external(self, system: str, external_id: str) -> list[str]:
        """Every subject the identity map holds ``system``'s record ``external_id`` under."""
        rows = self.db.execute(
            "SELECT s.subject_id FROM identities i JOIN subjects s ON s.subject_no = i.subject_no "
            "WHERE i.system=? AND i.external_id=?",
            (system, external_id),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def move_identities(
        self, system: str, subject_ids: Sequence[str], former: str, kept: str
    ) -> list[str]:
        """Those of ``subject_ids`` known by ``system``'s record ``former`` are known by
        ``kept`` from now on (the system merged the one into the other); returns them.

        One known by another id since (a sync wrote them meanwhile) keeps it."""
        numbers = self.subject_numbers(subject_ids)
        moved: list[str] = []
        with self.transaction() as db:
            for sid, number in numbers.items():
                changed = db.execute(
                    "UPDATE identities SET external_id=? "
                    "WHERE system=? AND subject_no=? AND external_id=?",
                    (kept, system, number, former),
                ).rowcount
                if changed:
                    moved.append(sid)
        return moved

    def suppression_changes(self) -> int:
        """How many times the suppression list has changed (kept by triggers, migration 12)."""
        (changes,) = self.db.execute("SELECT n FROM suppression_changes").fetchone()
        return int(changes)

    def subject_for_external(self, system: str, external_id: str) -> str | None:
        row = self.db.execute(
            "SELECT s.subject_id FROM identities i JOIN subjects s ON s.subject_no = i.subject_no "
            "WHERE i.system=? AND i.external_id=?",
            (system, external_id),
        ).fetchone()
        return None if row is None else str(row[0])

    # -- outbox ------------------------------------------------------------------------------

    def outbox_batch(
        self, system: str, after_id: int, limit: int, flow: str | None = None
    ) -> list[OutboxRow]:
        """Up to ``limit`` rows for ``system`` with id above ``after_id``, oldest first;
        with ``flow``, only the rows that flow queued. A held row (:data:`HELD`) is none."""
        rows = self.db.execute(
            "SELECT o.id, o.system, s.subject_id, o.flow, o.payload, o.payload_hash, o.attempts, "
            "o.subject_no, o.former, o.sent FROM outbox o "
            "JOIN subjects s ON s.subject_no = o.subject_no "
            "WHERE o.system=? AND o.id>? AND (?4 IS NULL OR o.flow=?4) AND o.payload_hash!=?5 "
            "ORDER BY o.id LIMIT ?3",
            (system, after_id, limit, flow, HELD),
        ).fetchall()
        return [OutboxRow._make(row) for row in rows]

    def drop_unrouted(self, routes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Delete the rows queued by a flow for a system it no longer sends to; how many,
        per ``(flow, system)``.

        ``routes`` are the configured ``(flow, destination)`` pairs. Rows of a flow removed
        or renamed, or for a destination taken out of its flow, were delivered by another
        flow's run to a system nothing meant to send them to any more, or kept sealed in the
        outbox for good. The next run of a flow queues whatever its systems lack.

        A row that keeps a write from a former address is held instead (:data:`HELD`), as
        :meth:`drop_queued` holds it: it is all that tells what the system may hold under
        that address, for an erasure to reach. A flow no route names any more loses its
        cursors with its rows: put back as it was (its shape unchanged), it resumed past the
        changes those rows carried, and an incremental source (Shopify) never offered them
        again. Read in full instead, change detection sends only what the systems lack.
        """
        wanted = list(routes)
        flows = {flow for flow, _ in wanted}
        dropped: dict[tuple[str, str], int] = {}
        with self.transaction() as db:
            for flow, system in self.unrouted(wanted):
                held = db.execute(
                    _HOLD + "flow=?3 AND system=?4", (HELD, utcnow(), flow, system)
                ).rowcount
                gone = db.execute(
                    "DELETE FROM outbox WHERE flow=? AND system=? AND former IS NULL",
                    (flow, system),
                ).rowcount
                if gone:
                    dropped[(flow, system)] = gone
                if (held or gone) and flow not in flows:
                    db.execute("DELETE FROM cursors WHERE flow=?", (flow,))
        return dropped

    def unrouted(self, routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The ``(flow, system)`` pairs the outbox holds rows of that ``routes`` do not name."""
        wanted = set(routes)
        found = self.db.execute("SELECT DISTINCT flow, system FROM outbox").fetchall()
        return [(str(f), str(s)) for f, s in found if (f, s) not in wanted]

    def queued_by_flows(
        self, pairs: Sequence[tuple[str, str]], subject_ids: Sequence[str]
    ) -> dict[str, set[str]]:
        """Per system, which of ``subject_ids`` have a row queued by one of ``pairs``."""
        numbers = self.subject_numbers(subject_ids)
        subject_of = {number: sid for sid, number in numbers.items()}
        found: dict[str, set[str]] = {}
        for flow, system in pairs:
            for chunk in chunks(list(subject_of), 500):
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    "SELECT subject_no FROM outbox WHERE flow=? AND system=? "  # noqa: S608
                    f"AND subject_no IN ({marks})",
                    (flow, system, *chunk),
                )
                found.setdefault(system, set()).update(subject_of[n] for (n,) in rows)
        return found

    def outbox_count(self, system: str | None = None) -> int:
        if system is None:
            count: int = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        else:
            count = self.db.execute(
                "SELECT COUNT(*) FROM outbox WHERE system=?", (system,)
            ).fetchone()[0]
        return count

    def outbox_counts(self, flow: str | None = None) -> dict[str, int]:
        """Rows waiting for delivery, per system that has any (a walk of the (system, id) index);
        with ``flow``, only the rows that flow queued. A held row (:data:`HELD`) waits for
        nothing."""
        if flow is not None:
            rows = self.db.execute(
                "SELECT system, COUNT(*) FROM outbox "
                "WHERE flow=? AND payload_hash!=? GROUP BY system ORDER BY system",
                (flow, HELD),
            )
            return {str(system): int(count) for system, count in rows}
        # Every row counted from the (system, id) index alone, less the held ones from their
        # own (schema 28): the payload hash that tells them apart is in the table, and reading
        # it read every row waiting (``/metrics`` counts them at every scrape). The mark is
        # written in the statement, not bound: SQLite uses a partial index only for a query
        # whose WHERE names its condition.
        counts = {
            str(system): int(count)
            for system, count in self.db.execute(
                "SELECT system, COUNT(*) FROM outbox GROUP BY system ORDER BY system"
            )
        }
        for system, held in self.db.execute(
            f"SELECT system, COUNT(*) FROM outbox WHERE payload_hash = '{HELD}' "  # noqa: S608 - a constant
            "GROUP BY system"
        ):
            counts[str(system)] -= int(held)
        return {system: count for system, count in counts.items() if count}

    def note_identities(self, system: str, acks: Sequence[Ack]) -> None:
        """Record the system's id for subjects a write reached only in part (it is retried,
        or was refused for good elsewhere in the system): their rows stay queued or become
        dead letters and nothing counts as delivered, but the person is known there by that
        id, as an erasure, an access request, a move and a withdrawal of consent must know
        them.

        An id already known stays: the rest of the system still holds the person under it
        (a move renamed them in one audience, not yet in the other), and the retry finds
        them by it."""
        with self.transaction() as db:
            numbers = self.subject_numbers(
                [a.subject_id for a in acks if a.subject_no is None], create=True
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) "
                "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM subjects WHERE subject_no=?2) "
                "ON CONFLICT(system, subject_no) DO NOTHING",
                [
                    (system, a.subject_no or numbers[a.subject_id], a.external_id)
                    for a in acks
                    if a.external_id
                ],
            )

    def acknowledge(self, system: str, acks: Sequence[Ack]) -> None:
        """Record deliveries: hash and identity stored, outbox rows deleted, atomically.

        A delivered subject's dead letter for ``system`` goes too: the record was fixed and
        accepted, so the refusal no longer needs an operator (nor its sealed payload kept).
        """
        now = utcnow()
        with self.transaction() as db:
            unnumbered = [a.subject_id for a in acks if a.subject_no is None]
            numbers = self.subject_numbers(unnumbered, create=True) if unnumbered else {}
            # A subject erased while its batch was in flight has no number any more: its
            # acknowledgement writes nothing (rows under a number nobody has could never be
            # found, or erased, again). Who still has one is read once for the batch, under
            # the write lock this transaction holds, so nobody is erased in between.
            numbered = [
                (a, numbers[a.subject_id] if a.subject_no is None else a.subject_no) for a in acks
            ]
            held = self._numbered([no for _, no in numbered])
            rows = [(a, no) for a, no in numbered if no in held]
            db.executemany(
                "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at, sent) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET "
                "payload_hash=excluded.payload_hash, delivered_at=excluded.delivered_at, "
                # An acknowledgement without a field set (a withdrawal's) keeps the one the
                # fields were last written under: the system still holds them.
                "sent=COALESCE(excluded.sent, delivered.sent)",
                [(system, no, a.payload_hash, now, a.sent) for a, no in rows],
            )
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) VALUES (?, ?, ?) "
                "ON CONFLICT(system, subject_no) DO UPDATE SET external_id=excluded.external_id "
                # An unchanged id is not rewritten: on a re-sync nearly all are unchanged.
                "WHERE external_id IS NOT excluded.external_id",
                [(system, no, a.external_id) for a, no in rows if a.external_id],
            )
            db.executemany("DELETE FROM outbox WHERE id=?", [(a.outbox_id,) for a in acks])
            # Nearly always the system has no dead letters at all: one seek of the index
            # says so, and the batch costs nothing more (acknowledge is on every batch).
            if db.execute(
                "SELECT 1 FROM dead_letters WHERE system=? LIMIT 1", (system,)
            ).fetchone():
                subject_ids = [a.subject_id for a in acks]
                for chunk in chunks(subject_ids, 500):
                    marks = ",".join("?" * len(chunk))
                    db.execute(
                        "DELETE FROM dead_letters "  # noqa: S608 - marks only
                        f"WHERE system=? AND subject_id IN ({marks})",
                        (system, *chunk),
                    )

    def dead_letter(self, rows: Sequence[tuple[OutboxRow, str]], *, refused: bool = True) -> None:
        """Move rejected rows to the dead-letter table with their reason, atomically.

        A subject already dead-lettered for the system keeps its one row (schema 11): the
        latest payload, hash, reason and time replace the old, and the refusal is counted.
        ``refused=False`` is for rows the connector set aside itself (a payload that no longer
        opens): their hash is not kept, so the next sync offers the subject's current data
        again (:meth:`rejected_hashes` passes over only what a system refused).

        A subject on the suppression list gets none: erased while the refusal was on its
        way back (from another process, which could not wait for it), they must leave no
        sealed record behind the erasure that deleted their traces.
        """
        now = utcnow()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO dead_letters(system, subject_id, flow, payload, payload_hash, reason, "
                "created_at, first_refused_at, refusals) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,1 "
                "WHERE NOT EXISTS (SELECT 1 FROM suppression WHERE subject_id=?2) "
                "ON CONFLICT(system, subject_id) DO UPDATE SET flow=excluded.flow, "
                "payload=excluded.payload, payload_hash=excluded.payload_hash, "
                "reason=excluded.reason, created_at=excluded.created_at, "
                "refusals=refusals+1",
                [
                    (
                        r.system,
                        r.subject_id,
                        r.flow,
                        r.payload,
                        r.payload_hash if refused else None,
                        reason,
                        now,
                        now,
                    )
                    for r, reason in rows
                ],
            )
            db.executemany("DELETE FROM outbox WHERE id=?", [(r.id,) for r, _ in rows])

    def bump_attempts(self, ids: Sequence[int]) -> None:
        self.db.executemany("UPDATE outbox SET attempts=attempts+1 WHERE id=?", [(i,) for i in ids])

    def queued_now(self, ids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """Which of the outbox ``ids`` are still queued, each with its subject's number and
        sealed payload now (a move gives a row kept for its former address to the new one; a
        correction seals the row anew under the same id)."""
        found: dict[int, tuple[int, bytes]] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT id, subject_no, payload FROM outbox WHERE id IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
            found.update((int(i), (int(no), bytes(payload))) for i, no, payload in rows)
        return found

    def forget_former(self, ids: Sequence[int]) -> None:
        """Clear the former address's write of these rows: it was sent and answered."""
        self.db.executemany("UPDATE outbox SET former=NULL WHERE id=?", [(i,) for i in ids])

    def hold_formers(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Hold the rows of these (system, subject id) pairs that keep a write from a former
        address (:data:`HELD`): each keeps that write only, and is not sent; how many.

        For people a page did not queue for the system (gated, suppressed): the kept write
        would make the record, and the row's payload (the one before the move) would follow
        it as if it were current. Held since the first time: the sweep counts from then.
        """
        numbers = self.subject_numbers([sid for _, sid in pairs])
        with self.transaction() as db:
            return sum(
                db.execute(
                    _HOLD + "system=?3 AND subject_no=?4", (HELD, utcnow(), system, numbers[sid])
                ).rowcount
                for system, sid in pairs
                if sid in numbers
            )

    def drop_queued(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Drop what waits for each (system, subject id) pair, any flow's, but hold a row that
        keeps a write from a former address (:meth:`hold_formers`); how many rows dropped."""
        numbers = self.subject_numbers([sid for _, sid in pairs])
        self.hold_formers(pairs)
        with self.transaction() as db:
            return sum(
                db.execute(
                    "DELETE FROM outbox WHERE system=? AND subject_no=? AND former IS NULL",
                    (system, numbers[sid]),
                ).rowcount
                for system, sid in pairs
                if sid in numbers
            )

    def hold_or_drop(self, rows: Sequence[OutboxRow]) -> None:
        """Delete these outbox rows, but hold those that keep a former address's write."""
        with self.transaction() as db:
            db.executemany(_HOLD + "id=?3", [(HELD, utcnow(), r.id) for r in rows])
            db.executemany(
                "DELETE FROM outbox WHERE id=? AND former IS NULL", [(r.id,) for r in rows]
            )

    def drop_outbox(self, ids: Sequence[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    def dead_letters(
        self, system: str | None = None, *, latest: int | None = None
    ) -> list[DeadLetter]:
        """The dead letters (of ``system``, or all), the most recently refused last; with
        ``latest``, only that many of the most recently refused (an index walk from the end:
        schema 29)."""
        query = (
            "SELECT id, system, subject_id, flow, reason, created_at, "
            # The store's own writes always set it; a row put in by hand without it counts
            # as refused once, at created_at.
            "COALESCE(first_refused_at, created_at), refusals FROM dead_letters"
        )
        params: tuple[str, ...] = ()
        if system is not None:
            query += " WHERE system=?"
            params = (system,)
        # A refused-again row keeps its id: the time of its latest refusal orders it.
        if latest is not None:
            rows = self.db.execute(
                query + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, latest)
            ).fetchall()
            return [DeadLetter(*row) for row in reversed(rows)]
        rows_all = self.db.execute(query + " ORDER BY created_at, id", params)
        return [DeadLetter(*row) for row in rows_all]

    def dead_letter_count(self) -> int:
        count: int = self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return count

    # -- suppression ---------------------------------------------------------------------------

    def suppressed(self, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` are on the suppression list.

        Answered from a copy of the list held in memory, read again whenever the list's
        change count (kept by triggers, whoever writes: migration 12) has moved since; one
        row's read instead of an indexed lookup per id, three times a page during a sync. The
        count is read before the list, so a change made in between is read again next time,
        never missed. A list longer than :data:`SUPPRESSION_HELD_MAX` is asked in SQL.
        """
        listed = self._suppression_list()
        if listed is not None:
            return {sid for sid in subject_ids if sid in listed}
        found: set[str] = set()
        for chunk in chunks(subject_ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT subject_id FROM suppression WHERE subject_id IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def anyone_suppressed(self) -> bool:
        """Whether the suppression list holds anyone at all (a new store's does not)."""
        listed = self._suppression_list()
        if listed is not None:
            return bool(listed)
        return self.db.execute("SELECT 1 FROM suppression LIMIT 1").fetchone() is not None

    def _suppression_list(self) -> frozenset[str] | None:
        """The suppression list as it is now; ``None``: ask SQL (too long, or a transaction).

        Inside a transaction of this connection the count may include its own changes not
        committed yet, which a rollback takes back: a copy read then could later match a
        count that other changes reached. So the copy is only read, and used, outside one,
        where every count seen is a committed one and counts only grow.
        """
        if self.db.in_transaction:
            return None
        (changes,) = self.db.execute("SELECT n FROM suppression_changes").fetchone()
        if changes != self._suppression_read_at:
            rows = self.db.execute(
                "SELECT subject_id FROM suppression LIMIT ?", (SUPPRESSION_HELD_MAX + 1,)
            ).fetchall()
            held = len(rows) <= SUPPRESSION_HELD_MAX
            self._suppression = frozenset(row[0] for row in rows) if held else None
            self._suppression_read_at = changes
        return self._suppression

    def unsuppress(self, subject_ids: Sequence[str]) -> int:
        """Take ``subject_ids`` off the suppression list (connector/readmit.py); how many."""
        with self.transaction() as db:
            cur = db.executemany(
                "DELETE FROM suppression WHERE subject_id = ?", [(sid,) for sid in subject_ids]
            )
        return int(cur.rowcount)

    def suppress(self, subject_ids: Iterable[str], kind: str, request_id: str | None) -> None:
        """Put ``subject_ids`` on the suppression list under ``request_id`` (an entry there
        stays as it is, but for a number one erasure read from a source).

        The list keeps one entry per id, and a :data:`HELD_PHONE` entry is lifted when its
        erasure's person is readmitted. A number one erasure read that another asks for too
        (a housemate's ``--phone``, or read from their record as well) becomes a plain
        erasure entry of the later request: readmitting either person must not lift what
        the other's erasure still asks for (it is lifted only when given with ``--phone``).
        """
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO suppression(subject_id, kind, request_id, created_at) "
                "VALUES (?1,?2,?3,?4) ON CONFLICT(subject_id) DO UPDATE SET "
                "kind='erasure', request_id=excluded.request_id "
                "WHERE suppression.kind=?5 AND (excluded.kind!=?5 "
                "OR suppression.request_id IS NOT excluded.request_id)",
                [(sid, kind, request_id, utcnow(), HELD_PHONE) for sid in subject_ids],
            )

    # -- opt-outs at a system (migration 18) ------------------------------------------------

    def opt_out(self, system: str, subject_id: str) -> None:
        """``subject_id`` opted out at ``system`` itself (unsubscribed there)."""
        self.db.execute(
            "INSERT OR IGNORE INTO opt_outs(system, subject_id, created_at) VALUES (?,?,?)",
            (system, subject_id, utcnow()),
        )

    def opt_in(self, system: str, subject_id: str) -> bool:
        """``subject_id`` subscribed at ``system`` again; whether they had opted out there."""
        cur = self.db.execute(
            "DELETE FROM opt_outs WHERE system=? AND subject_id=?", (system, subject_id)
        )
        return cur.rowcount > 0

    def latest_consent_event(self, system: str, subject_id: str, occurred_at: str) -> bool:
        """Record that an unsubscribe or subscribe of the subject at ``system`` happened at
        ``occurred_at`` (ISO 8601, as the system says it); whether it is not older than the
        latest one recorded. An older one is not recorded, and is not to be taken: the
        person's later choice stands (migration 25)."""
        cur = self.db.execute(
            "INSERT INTO consent_events(system, subject_id, occurred_at) VALUES (?,?,?) "
            "ON CONFLICT(system, subject_id) DO UPDATE SET occurred_at=excluded.occurred_at "
            "WHERE excluded.occurred_at >= consent_events.occurred_at",
            (system, subject_id, occurred_at),
        )
        return cur.rowcount > 0

    def current_subject(self, subject_id: str) -> str:
        """The id whoever has an address now is known by: the address's own id while it
        holds rows (:meth:`holds_rows`), whoever left it before; else, where someone moved
        from it and nobody has it now, the id they moved to (it is an alias of that id).

        An alias followed whoever held rows would give someone who took over an address
        (Anna, after Bert moved) the acts of the person who left it: her unsubscribe at a
        system recorded as his opt-out.
        """
        if self.holds_rows(subject_id):
            return subject_id
        row = self.db.execute(
            "SELECT subject_id FROM subject_aliases WHERE alias=? LIMIT 1", (subject_id,)
        ).fetchone()
        return subject_id if row is None else str(row[0])

    def holds_rows(self, subject_id: str) -> bool:
        """Whether any per-system table, for any system (configured or not), has a row for
        the subject: an identity, a delivery, a queued write. One that moved holds none."""
        for table in PER_SYSTEM_TABLES:
            where, params = self.by_subject(table, [subject_id])
            if self.db.execute(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", params).fetchone():  # noqa: S608
                return True
        return False

    def withdrawal_delivered(self, system: str, subject_id: str, within_seconds: float) -> bool:
        """Whether the last thing ``system`` took for the subject is a withdrawal of consent
        (:data:`WITHDRAWAL`) it took within the last ``within_seconds``."""
        numbers = self.subject_numbers([subject_id])
        if not numbers:
            return False
        row = self.db.execute(
            "SELECT payload_hash, delivered_at FROM delivered WHERE system=? AND subject_no=?",
            (system, numbers[subject_id]),
        ).fetchone()
        # Marked to send again (the person subscribed at the system since): no echo is due.
        if row is None or not str(row[0]).startswith(WITHDRAWAL):
            return False
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=within_seconds)
        return dt.datetime.fromisoformat(str(row[1])) >= since

    def withdrawal_queued(self, system: str, subject_id: str) -> bool:
        """Whether the outbox holds a withdrawal of consent (:data:`WITHDRAWAL`) for the
        subject and ``system``: waiting, or on its way (a batch stays queued until it is
        answered, and the system may report what it took before then)."""
        numbers = self.subject_numbers([subject_id])
        if not numbers:
            return False
        row = self.db.execute(
            "SELECT payload_hash FROM outbox WHERE system=? AND subject_no=?",
            (system, numbers[subject_id]),
        ).fetchone()
        return row is not None and before_resend(str(row[0])).startswith(WITHDRAWAL)

    def withdrawal_answered(self, system: str, subject_id: str) -> None:
        """The subject subscribed at ``system`` again themselves: a withdrawal it last took
        from klantsync is answered, and marked to send again (:data:`RESEND`), so an
        unsubscribe after it is not taken for that withdrawal's echo.

        One that may not have landed (:data:`UNSURE`: a restore's) is answered too, its mark
        made a correction's: their subscribe came after it, and sent again it unsubscribed
        them from what they had just subscribed to."""
        numbers = self.subject_numbers([subject_id])
        if numbers:
            self.db.execute(
                "UPDATE delivered SET payload_hash = ? || ':' || payload_hash "
                "WHERE system=? AND subject_no=? AND payload_hash LIKE ? || '%'",
                (RESEND, system, numbers[subject_id], WITHDRAWAL),
            )
            unsure = f"{RESEND}:{UNSURE}"
            self.db.execute(
                "UPDATE delivered SET payload_hash = ? || ':' || substr(payload_hash, ?) "
                "WHERE system=? AND subject_no=? AND payload_hash LIKE ? || '%'",
                (RESEND, len(unsure) + 1, system, numbers[subject_id], unsure + WITHDRAWAL),
            )

    def opted_out(self, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` opted out at ``system`` itself."""
        if not self.db.execute("SELECT 1 FROM opt_outs LIMIT 1").fetchone():
            return set()  # nearly always: one seek, and a page costs nothing more
        return self._listed("opt_outs", system, subject_ids)

    def dead_lettered(self, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` have a dead letter for ``system`` (refused, or set aside)."""
        return self._listed("dead_letters", system, subject_ids)

    def _listed(self, table: str, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` have a row of ``table`` (keyed by system and subject id)
        for ``system``."""
        found: set[str] = set()
        for chunk in chunks(subject_ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT subject_id FROM {table} "  # noqa: S608 - a fixed name, marks only
                f"WHERE system=? AND subject_id IN ({marks})",
                (system, *chunk),
            )
            found.update(str(sid) for (sid,) in rows)
        return found

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, flow: str) -> int:
        cur = self.db.execute(
            "INSERT INTO runs(flow, started_at, status) VALUES (?,?,?)", (flow, utcnow(), "running")
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_run(self, run_id: int, status: str, summary: str) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at=?, status=?, summary=? WHERE id=?",
            (utcnow(), status, summary, run_id),
        )

    def close_interrupted_runs(self) -> int:
        """Mark every run still ``running`` as ``interrupted``; return how many there were.

        Only for a process that holds the store's sync lock (:func:`connector.lock.syncing`)
        and has started no run yet: then no run is in progress, and one the store still
        calls running was cut short (``kill -9``, a power cut). When it stopped is unknown,
        so ``finished_at`` stays empty.
        """
        cursor = self.db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        return cursor.rowcount

    def interrupt_run(self, run_id: int) -> None:
        """Record a finished run as ``interrupted``: the process's stop cut it short (its
        pull stopped before the end, deliveries left queued), and the next start resumes it
        as it does a run a ``kill -9`` left (:meth:`close_interrupted_runs`)."""
        self.db.execute("UPDATE runs SET status='interrupted' WHERE id=?", (run_id,))

    def interrupted_flows(self) -> set[str]:
        """The flows whose latest run is ``interrupted``: cut short, not yet run again."""
        return {flow for flow, run in self.last_runs().items() if run[2] == "interrupted"}

    def last_runs(self) -> dict[str, tuple[str, str | None, str, str | None]]:
        """Per flow: (started_at, finished_at, status, summary) of its latest run."""
        return latest_runs(self.db)

    def last_success(self, flow: str) -> str | None:
        return latest_success(self.db, flow)

    def by_subject(
        self, table: str, subject_ids: Sequence[str]
    ) -> tuple[str, tuple[str | int, ...]]:
        """A WHERE clause (and its parameters) for ``subject_ids`` in a per-system table.

        ``identities``, ``delivered`` and ``outbox`` are keyed (system, subject_no): asked for
        a subject alone, SQLite reads the whole table (at 200,000 customers, ~95 ms on the
        event loop per data subject request). Every system that has rows there, configured
        or not, is named as well, so the key is used: found by walking the key's first column
        from one system to the next (a few index seeks, however many rows).
        """
        if table not in PER_SYSTEM_TABLES:
            raise ValueError(f"{table} is not keyed by (system, subject_no)")
        numbers = list(self.subject_numbers(subject_ids).values())
        systems = [
            row[0]
            for row in self.db.execute(
                f"WITH RECURSIVE s(system) AS (SELECT MIN(system) FROM {table} "  # noqa: S608
                f"UNION ALL SELECT (SELECT MIN(system) FROM {table} WHERE system > s.system) "
                "FROM s WHERE s.system IS NOT NULL) SELECT system FROM s WHERE system IS NOT NULL"
            )
        ]
        if not systems or not numbers:
            return "0", ()
        names = ",".join("?" * len(systems))
        marks = ",".join("?" * len(numbers))
        return f"system IN ({names}) AND subject_no IN ({marks})", (*systems, *numbers)

    def counts(self) -> dict[str, int]:
        """Row counts of the main tables, for status output (:func:`table_counts`)."""
        return table_counts(self.db)


# The reads ``status`` shows, on any connection to the store: the store's own, or a reader's
# of its own (the admin API reads them on a thread, off the event loop: connector.admin_reads).


def latest_runs(db: sqlite3.Connection) -> dict[str, tuple[str, str | None, str, str | None]]:
    """Per flow: (started_at, finished_at, status, summary) of its latest run."""
    # Each flow's latest found by seeks on (flow, id), one flow to the next: GROUP BY
    # flow walked the whole index, every run of years of runs every 15 minutes.
    rows = db.execute(
        "WITH RECURSIVE f(flow) AS (SELECT MIN(flow) FROM runs "
        "UNION ALL SELECT (SELECT MIN(flow) FROM runs WHERE flow > f.flow) "
        "FROM f WHERE f.flow IS NOT NULL) "
        "SELECT r.flow, r.started_at, r.finished_at, r.status, r.summary FROM f "
        "JOIN runs r ON r.id = (SELECT MAX(id) FROM runs WHERE flow = f.flow)"
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def latest_success(db: sqlite3.Connection, flow: str) -> str | None:
    """When ``flow`` last finished a run without failure (``None``: never)."""
    row = db.execute(
        "SELECT MAX(finished_at) FROM runs WHERE flow=? AND status='ok'", (flow,)
    ).fetchone()
    return None if row is None else row[0]


def table_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the main tables, for status output.

    ``subjects`` is the people the store knows (one number each), ``identities`` their
    ids in the systems (one row per person and system). Each is exact. ``audit`` is
    counted from the seqs of the oldest and the newest entry kept (two seeks, not a
    walk of millions of entries): a chain's seqs run without a gap from its start to its
    head, which ``audit verify`` checks.
    """
    out: dict[str, int] = {}
    for table in (
        "subjects",
        "identities",
        "delivered",
        "outbox",
        "dead_letters",
        "suppression",
        "dsr_requests",
        "jobs",
    ):
        out[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
    # Two subqueries: MIN and MAX in one SELECT read every row.
    (entries,) = db.execute(
        "SELECT COALESCE((SELECT MAX(seq) FROM audit) - (SELECT MIN(seq) FROM audit) + 1, 0)"
    ).fetchone()
    out["audit"] = int(entries)
    return out


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: an ``IN (...)`` list per slice stays within
    SQLite's limit on a statement's variables (32,766 in its own builds, fewer in older)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _names(systems: Sequence[str]) -> Sequence[str]:
    if isinstance(systems, str):
        raise TypeError("systems is a sequence of system names, not one name")
    return systems
