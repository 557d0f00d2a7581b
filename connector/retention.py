"""Retention of what the connector holds itself (GDPR Art. 5(1)(e)).

:func:`sweep` deletes, per ``[retention]``:

- dead letters last refused more than ``dead_letters_days`` ago (``created_at`` is the latest
  refusal: a record refused again holds the payload of that refusal, kept from then);
- outbox rows held more than ``dead_letters_days`` (a write from a customer's former address
  that must not be sent, kept for an erasure to find that address by:
  :data:`connector.state.HELD`); set aside like a dead letter, kept as long;
- the sealed manifests of data subject requests completed more than ``manifests_days`` ago
  (the request row stays: it is the record that the request was handled);
- access bundles recorded with :func:`record_bundle` more than ``access_bundles_days`` ago;
- audit entries older than ``audit_days``: only a prefix of the chain, after verifying it, and
  anchored so the rest still verifies (see :mod:`connector.audit`);
- the daemon's jobs finished more than ``jobs_days`` ago (queued and running ones stay);
- webhook delivery ids received more than ``webhook_ids_days`` ago (kept to spot a vendor's
  retry of a delivery already taken; a daemon receiving webhooks for years would otherwise
  keep every id it ever saw), and on the same period the keyed ids of the records an
  erasure deleted (kept to know a system's report of that deletion for the erasure's echo);
- the flows' runs that started more than ``runs_days`` ago, except each flow's latest run and
  latest successful one (what ``status`` and the readiness probe read);
- the stores a restore replaced (``<store>.replaced-<time>``) more than
  ``replaced_stores_days`` ago: each held all the store held, and no erasure reaches it, so
  all but its audit trail and its keys is deleted (the entries between the backup and the
  restore are there only; its keys check its chain's MACs), then that trail's entries past
  ``audit_days`` as the store's own, and the file once every entry of its own is past
  ``audit_days`` (or whole, when SQLite finds it damaged: nothing of it can be kept).

The daemon schedules :func:`sweep`; ``klantsync retention run`` calls it by hand. A sweep
purges in transactions of at most :data:`BATCH_ROWS` rows, so the store's other writers get
their turns between them; each that deletes something appends its ``retention.purged``
audit entry with its counts only (one for a sweep with little to purge). What cannot be
undone outside the store (a replaced store emptied or deleted) is done once the last entry
is committed. It then clears the store's write-ahead log, which still holds what was
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import glob
import json
import logging
import sqlite3
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from connector import audit
from connector.config import Config
from connector.crypto import BUNDLE_PATH_CONTEXT, DecryptionError, Keyring
from connector.errors import ConfigError, KlantsyncError
from connector.keyset import store_keyring
from connector.state import HELD, Store, chunks, utcnow
from connector.storefile import foreign, replaced_stores
from connector.storeturn import transaction_in_turn

__all__ = [
    "BATCH_ROWS",
    "PURGED_KINDS",
    "SWEEP_STORE_WAIT_SECONDS",
    "RetentionReport",
    "count_bundles_of",
    "delete_bundles_of",
    "delete_bundles_of_customers",
    "nothing_held",
    "record_bundle",
    "sweep",
    "sweep_now",
]

log = logging.getLogger(__name__)

#: What a sweep purges, by its count in :class:`RetentionReport`, in the words ``retention
#: run`` says it in. The total, the ``retention.purged`` entry and the command's output all
#: go by this list, so a kind added to the sweep cannot go unsaid in one of them.
PURGED_KINDS = {
    "dead_letters": "dead letters",
    "held_writes": "held writes from a former address",
    "manifests": "request manifests",
    "bundles": "access bundles",
    "audit_entries": "audit entries",
    "jobs": "finished jobs",
    "webhook_ids": "webhook delivery ids",
    "erased_records": "keyed ids of erased records",
    "runs": "flow runs",
    "replaced_stores": "stores a restore replaced",
}


#: How many rows one transaction of a sweep purges at most. SQLite lets one writer in at a
#: time: while a sweep's transaction is open, the daemon's syncs, acknowledgements, webhooks
#: and requests (and any command beside it) wait for it. A sweep with much to purge (the
#: first after an upgrade, a backlog of webhook ids) held them for seconds in one
#: transaction; in shares of this size each waits milliseconds.
BATCH_ROWS = 500
#: How long the daemon's sweep waits, off its event loop, for the store's write lock while
#: another process holds it, before each of its transactions (then it is a store failure,
#: and the next sweep tries again).
SWEEP_STORE_WAIT_SECONDS = 30.0

#: The work of one of a sweep's transactions: run inside one, which its caller opens and
#: commits, and once only (it counts what it purged and deletes bundles' files).
_Batch = Callable[[], None]


@dataclass
class RetentionReport:
    """What a sweep purged (or, in a dry run, would purge), by kind, with the cut-off dates."""

    now: str
    dry_run: bool
    dead_letters: int = 0
    held_writes: int = 0
    manifests: int = 0
    bundles: int = 0
    audit_entries: int = 0
    jobs: int = 0
    webhook_ids: int = 0
    erased_records: int = 0
    runs: int = 0
    replaced_stores: int = 0
    cutoffs: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many of each kind (:data:`PURGED_KINDS`) were purged, in that order."""
        return {kind: int(getattr(self, kind)) for kind in PURGED_KINDS}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return asdict(self)


def record_bundle(
    store: Store,
    keyring: Keyring,
    path: Path,
    files: Sequence[str] | None = None,
    *,
    subject_ids: Sequence[str] = (),
) -> int:
    """Record an access bundle just written at ``path`` (a file or a folder); return its id.

    ``subject_ids`` are the ids of the person whose data it holds, one row each: their
    erasure, under any of them, deletes it (:func:`delete_bundles_of`).

    ``files`` are the bundle's files under ``path``, as written; without them, the files
    present now. The sweep deletes exactly those (then any folder they leave empty): a bundle
    written into a folder that also holds other things, even ``--out .``, never costs the
    operator anything but the bundle. The path is sealed: an operator may name a folder after
    the person.
    """
    root = path.resolve()
    if files is not None:
        listed = list(files)
    elif root.is_dir():
        listed = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        listed = [""]  # the path itself is the bundle
    sealed = keyring.seal(str(root).encode(), BUNDLE_PATH_CONTEXT)
    with store.transaction() as db:
        # A bundle written again where one was recorded (the request retried after the
        # process died between the two) replaces that record: one bundle, one row, kept
        # from now. Paths are sealed with a fresh nonce each, so they are compared opened;
        # the table holds only bundles still within their retention.
        _forget_rows_at(store, keyring, str(root))
        now, names = utcnow(), json.dumps(listed)
        ids = []
        whose: Sequence[str | None] = subject_ids or [None]
        for subject_id in whose:
            cur = db.execute(
                "INSERT INTO bundles(path, files, created_at, subject_id) VALUES (?,?,?,?)",
                (sealed, names, now, subject_id),
            )
            assert cur.lastrowid is not None
            ids.append(cur.lastrowid)
    return ids[0]


def _forget_rows_at(store: Store, keyring: Keyring, where: str) -> None:
    """Delete every bundle row whose path opens to ``where`` (one per id of the person)."""
    for bundle_id, stored in store.db.execute("SELECT id, path FROM bundles").fetchall():
        if _opened_path(keyring, stored) == where:
            store.db.execute("DELETE FROM bundles WHERE id=?", (bundle_id,))


def _opened_path(keyring: Keyring, path: bytes | str) -> str | None:
    """A bundle row's path (one from before schema 10 is in clear); None if it does not open."""
    if isinstance(path, str):
        return path
    try:
        return keyring.open(path, BUNDLE_PATH_CONTEXT).decode()
    except DecryptionError:
        return None


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


async def sweep(
    store: Store,
    config: Config,
    keyring: Keyring | None,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    beside: Path | None = None,
) -> RetentionReport:
    """The scheduled entry point: see :func:`sweep_now`.

    It runs on the loop rather than on a thread (the store's connection is the loop's), and
    lets the loop's other tasks run between two of its transactions: in the daemon, a sweep
    with much to purge would otherwise hold up every webhook, acknowledgement and request
    until it ended. Cancelled there (the daemon stopping), it stops between two of them.
    """
    report, batches = _started(store, config, keyring, now, dry_run=dry_run, beside=beside)
    for batch in batches:
        # Its write lock taken off the loop: another process holding it (an operator's
        # sqlite3 shell, a backup) held every webhook and /healthz for the busy timeout.
        await transaction_in_turn(store, batch, within=SWEEP_STORE_WAIT_SECONDS)
        await asyncio.sleep(0)
    return report


def sweep_now(
    store: Store,
    config: Config,
    keyring: Keyring | None,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    beside: Path | None = None,
) -> RetentionReport:
    """Purge everything past its retention period; report counts (nothing, if ``dry_run``).

    ``keyring`` opens the access bundles' sealed paths; a dry run needs none. ``beside``:
    the path the stores a restore replaced sit beside, where it is not ``store``'s (a dry
    run on a private copy of the store, see :func:`connector.runtime.looked_at`).

    The purges go in transactions of at most :data:`BATCH_ROWS` rows, each with the
    ``retention.purged`` entry counting its own: SQLite lets one writer in at a time, and
    every other writer of the store (the daemon's syncs, acknowledgements, webhooks and
    requests, a command beside it) waits for the transaction in progress, not for the
    whole sweep. A sweep cut short (killed, the disk full) leaves purged exactly what its
    committed entries count, and the next sweep purges the rest.
    """
    report, batches = _started(store, config, keyring, now, dry_run=dry_run, beside=beside)
    for batch in batches:
        with store.transaction():
            batch()
    return report


def _started(
    store: Store,
    config: Config,
    keyring: Keyring | None,
    now: dt.datetime | None,
    *,
    dry_run: bool,
    beside: Path | None,
) -> tuple[RetentionReport, Iterator[_Batch]]:
    """The report a sweep fills in, and the sweep: the work of each of its transactions,
    which the caller runs in one and commits before it asks for the next (the daemon's loop
    runs its other tasks in between)."""
    report = nothing_held(config, now, dry_run=dry_run)
    where = beside or store.path
    if dry_run:
        _count_due(store, keyring, report, where)
        return report, iter(())
    if keyring is None:
        raise ValueError("a sweep that deletes needs the store's keys")
    return report, _swept(store, config, keyring, report, where)


def _swept(
    store: Store, config: Config, keyring: Keyring, report: RetentionReport, beside: Path
) -> Iterator[_Batch]:
    """The purges, a transaction at a time; then what lies outside the store."""
    replaced = yield from _purged_in_batches(store, config, keyring, report, beside)
    # Only now that the entry counting them is committed: a replaced store emptied or
    # deleted by a sweep whose entry then failed left nothing to find for the next one,
    # and no entry ever said it. Cut short here, the next sweep does (and says) the rest.
    _purge_replaced_stores(replaced, report.errors)
    _clear_the_log(store, report)


def _clear_the_log(store: Store, report: RetentionReport) -> None:
    """Copy the store's write-ahead log into it and truncate the log, after a sweep that
    purged something (or after one that could not clear it): :meth:`Store.truncate_log`.

    The store zeroes the pages a delete frees, but the log keeps the frames that wrote what
    was deleted: a checkpoint copies the log back and starts it again from its beginning
    without clearing it, and in the daemon, whose connection stays open for months, the log
    is never deleted. A dead letter's sealed payload, which the store's keys still open,
    stayed on disk past its period. A reader in the log (a command beside the daemon) keeps
    it from being cleared: the sweep says so, and the store tries again (its background
    checkpointer, the next sweep).
    """
    if not report.total and not store.log_owed:
        return
    if not store.truncate_log():
        report.errors.append(
            "the store's write-ahead log, which still holds what was purged, could not be "
            "cleared now (another process was reading the store); it is tried again"
        )


def nothing_held(
    config: Config, now: dt.datetime | None = None, *, dry_run: bool = False
) -> RetentionReport:
    """The report of a sweep with nothing to purge, with its cut-off dates: what a sweep
    starts from, and what ``retention run`` says where there is no store yet."""
    when = now or dt.datetime.now(dt.UTC)
    days = config.retention
    report = RetentionReport(now=_stamp(when), dry_run=dry_run)
    report.cutoffs = {
        "dead_letters": _stamp(when - dt.timedelta(days=days.dead_letters_days)),
        "manifests": _stamp(when - dt.timedelta(days=days.manifests_days)),
        "bundles": _stamp(when - dt.timedelta(days=days.access_bundles_days)),
        "audit": _stamp(when - dt.timedelta(days=days.audit_days)),
        "jobs": _stamp(when - dt.timedelta(days=days.jobs_days)),
        "webhook_ids": _stamp(when - dt.timedelta(days=days.webhook_ids_days)),
        "runs": _stamp(when - dt.timedelta(days=days.runs_days)),
        "replaced_stores": _stamp(when - dt.timedelta(days=days.replaced_stores_days)),
    }
    return report


def _count_due(
    store: Store, keyring: Keyring | None, report: RetentionReport, beside: Path
) -> None:
    """A dry run: count what a sweep would purge, writing nothing (``keyring``, if any,
    tells bundles apart: :func:`_bundles_in`)."""
    cut = report.cutoffs
    for rows in _row_purges(cut):
        setattr(report, rows.kind, rows.count(store))
    bundles = store.db.execute(
        "SELECT id, path, files FROM bundles WHERE created_at < ? ORDER BY id",
        (cut["bundles"],),
    ).fetchall()
    report.bundles = _bundles_in(bundles, keyring)
    report.audit_entries = _verified_prefix(store, cut["audit"], report.errors)[1]
    due = _replaced_stores_due(beside, cut["replaced_stores"], cut["audit"], report.errors)
    report.replaced_stores = len(due)


def _purged_in_batches(
    store: Store, config: Config, keyring: Keyring, report: RetentionReport, beside: Path
) -> Generator[_Batch, None, list[_Replaced]]:
    """The purges in the store, in transactions of at most :data:`BATCH_ROWS` rows, each
    with a ``retention.purged`` entry counting what it purged (none where it purged
    nothing): a process that died part-way left no purge the audit trail does not show. (A
    bundle's files deleted in a transaction that then rolled back leave its row, and the
    next sweep finds them gone.) Yields each transaction's work, for the caller to run in
    one (:data:`_Batch`).

    The last one also purges the replaced stores' trails and counts the replaced stores
    due; returns those to empty or delete once it is committed.
    """
    cut = report.cutoffs
    purges: dict[str, _Purge] = {rows.kind: rows for rows in _row_purges(cut)}
    purges["bundles"] = _BundlePurge(keyring, cut["bundles"], report.errors)
    purges["audit_entries"] = _AuditPurge(cut["audit"], report.errors)
    left = [purges[kind] for kind in PURGED_KINDS if kind in purges]
    while True:
        counts = dict.fromkeys(PURGED_KINDS, 0)
        due: list[_Replaced] = []

        def batch(counts: dict[str, int] = counts, due: list[_Replaced] = due) -> None:
            room = BATCH_ROWS
            while left and room > 0:
                purged, used = left[0].take(store, room)
                counts[left[0].kind] += purged
                room -= used
                if left[0].done:
                    left.pop(0)
            if not left:
                due.extend(_replaced_trails_purged(config, beside, cut, report.errors))
                counts["replaced_stores"] = len(due)
            if any(counts.values()):
                audit.append(store, audit.RETENTION_PURGED, counts)

        yield batch  # run in a transaction of its own and committed when this resumes
        for kind, count in counts.items():
            setattr(report, kind, getattr(report, kind) + count)
        if not left:
            return [work for work in due if work.delete or work.empty]


def _replaced_trails_purged(
    config: Config, beside: Path, cut: dict[str, str], errors: list[str]
) -> list[_Replaced]:
    """The replaced stores with something due; their trails past ``audit_days`` purged."""
    due = _replaced_stores_due(beside, cut["replaced_stores"], cut["audit"], errors)
    # A replaced store's trail is purged here, recorded in that store's own chain: the rest
    # is irreversible without a record of its own, and waits for this store's entry.
    due = [
        _purge_replaced_trail(config, work, cut["audit"], errors) if work.audit_through else work
        for work in due
    ]
    return [work for work in due if work.delete or work.empty or work.audit_through]


class _Purge(Protocol):
    """One kind a sweep purges (its count in :class:`RetentionReport`), a share of a
    transaction at a time."""

    kind: str
    #: Nothing of it is left past its period (that this sweep purges).
    done: bool

    def take(self, store: Store, room: int) -> tuple[int, int]:
        """Purge up to ``room`` rows more; how many it purged, by the report's count, and
        how many rows of the transaction's share that took."""
        ...


@dataclass
class _RowPurge:
    """The rows of one table past their period, purged in the order of their key, each
    transaction going on after the last key the one before purged: the keys of the rows
    already looked at are not read again, however many a table keeps."""

    kind: str
    table: str
    #: The columns of its primary key.
    key: tuple[str, ...]
    #: Which rows are past their period; its ``?`` are ``params``.
    due: str
    params: tuple[str, ...]
    #: A ``SET`` clause that purges a row's column instead of the row (a manifest).
    clear: str = ""
    after: tuple[Any, ...] | None = None
    done: bool = False

    def count(self, store: Store) -> int:
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE {self.due}"  # noqa: S608
        return int(store.db.execute(sql, self.params).fetchone()[0])

    def take(self, store: Store, room: int) -> tuple[int, int]:
        columns = ", ".join(self.key)
        marks = ", ".join("?" * len(self.key))
        where, params = f"({self.due})", [*self.params]
        if self.after is not None:
            where += f" AND ({columns}) > ({marks})"
            params += self.after
        last = store.db.execute(
            f"SELECT {columns} FROM {self.table} WHERE {where} "  # noqa: S608
            f"ORDER BY {columns} LIMIT 1 OFFSET ?",
            (*params, room - 1),
        ).fetchone()
        if last is not None:  # more than room are due: these room now, the rest after
            where += f" AND ({columns}) <= ({marks})"
            params += last
        # The tables, columns and conditions are the sweep's own (_row_purges), not input.
        if self.clear:
            sql = f"UPDATE {self.table} SET {self.clear} WHERE {where}"  # noqa: S608
        else:
            sql = f"DELETE FROM {self.table} WHERE {where}"  # noqa: S608
        purged = int(store.db.execute(sql, params).rowcount)
        self.after, self.done = (None if last is None else tuple(last)), last is None
        return purged, purged


def _row_purges(cut: dict[str, str]) -> list[_RowPurge]:
    """The kinds purged row by row (all but bundles, audit entries and replaced stores)."""
    kept = (
        "id NOT IN (SELECT MAX(id) FROM runs GROUP BY flow) AND id NOT IN "
        "(SELECT MAX(id) FROM runs WHERE status='ok' GROUP BY flow)"
    )
    return [
        _RowPurge(
            "dead_letters", "dead_letters", ("id",), "created_at < ?", (cut["dead_letters"],)
        ),
        _RowPurge(
            "held_writes",
            "outbox",
            ("id",),
            "payload_hash=? AND enqueued_at < ?",
            (HELD, cut["dead_letters"]),
        ),
        # Only finished requests lose their manifest; an open request still needs it to
        # reach every system. completed_at is set when the request is finished, whatever
        # the outcome.
        _RowPurge(
            "manifests",
            "dsr_requests",
            ("id",),
            "manifest IS NOT NULL AND completed_at IS NOT NULL AND completed_at < ?",
            (cut["manifests"],),
            clear="manifest=NULL",
        ),
        _RowPurge(
            "jobs",
            "jobs",
            ("id",),
            "status IN ('done', 'failed') AND finished_at < ?",
            (cut["jobs"],),
        ),
        _RowPurge(
            "webhook_ids",
            "webhook_deliveries",
            ("system", "delivery_id"),
            "received_at < ?",
            (cut["webhook_ids"],),
        ),
        # As long as a delivery id: a system's report of an erasure's deletion comes as its
        # webhook does (DsrService.echo_of_own_erasure).
        _RowPurge(
            "erased_records",
            "erased_records",
            ("record_key",),
            "erased_at < ?",
            (cut["webhook_ids"],),
        ),
        # Each flow's latest run and latest successful one stay: what `status` and the
        # readiness probe read.
        _RowPurge("runs", "runs", ("id",), f"started_at < ? AND {kept}", (cut["runs"],)),
    ]


@dataclass
class _BundlePurge:
    """The access bundles past their period, their files and then their rows."""

    keyring: Keyring
    cutoff: str
    errors: list[str]
    kind: str = "bundles"
    after: int = 0
    done: bool = False

    def take(self, store: Store, room: int) -> tuple[int, int]:
        rows = store.db.execute(
            "SELECT id, path, files FROM bundles WHERE created_at < ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (self.cutoff, self.after, room),
        ).fetchall()
        self.done = len(rows) < room
        if rows:
            self.after = int(rows[-1][0])  # one that failed is not tried again this sweep
        return _delete_rows(store, self.keyring, rows, self.errors), len(rows)


@dataclass
class _AuditPurge:
    """The audit entries past their period: the prefix verified in the first transaction,
    then purged a share at a time, each share anchored (:func:`connector.audit.purge_through`
    appends its ``audit.anchored`` entry), so the chain verifies between two of them."""

    cutoff: str
    errors: list[str]
    kind: str = "audit_entries"
    #: The last entry of the verified prefix (0: none may go); None until the first share.
    through: int | None = None
    done: bool = False

    def take(self, store: Store, room: int) -> tuple[int, int]:
        if self.through is None:
            self.through = _verified_prefix(store, self.cutoff, self.errors)[0]
        share = store.db.execute(
            "SELECT seq FROM audit WHERE seq <= ? ORDER BY seq LIMIT 1 OFFSET ?",
            (self.through, room - 1),
        ).fetchone()
        upto = self.through if share is None else int(share[0])
        purged = audit.purge_through(store, upto) if upto else 0
        self.done = upto == self.through or not purged
        return purged, purged


def delete_bundles_of(
    store: Store, keyring: Keyring, subject_ids: Sequence[str], errors: list[str]
) -> int:
    """Delete the access bundles written for any of ``subject_ids`` (an erasure); how many.

    A bundle that cannot be deleted now (its folder unwritable) keeps its record, is named
    in ``errors`` by id, and the sweep deletes it when due.
    """
    return _delete_rows(store, keyring, _bundle_rows_of(store, keyring, subject_ids), errors)


def count_bundles_of(store: Store, keyring: Keyring, subject_ids: Sequence[str]) -> int:
    """How many access bundles written for any of ``subject_ids`` are still recorded: those
    an erasure could not delete. One bundle counts once, however many of the person's ids
    it is recorded under."""
    return _bundles_in(_bundle_rows_of(store, keyring, subject_ids), keyring)


def _bundles_in(rows: Sequence[tuple[int, bytes | str, str]], keyring: Keyring | None) -> int:
    """How many bundles ``rows`` are: a bundle has a row for each id of the person.

    Told apart by their opened paths; without keys (a dry run), or where a path does not
    open, by the sealed path as stored: :func:`record_bundle` seals it once for all of a
    bundle's rows, with a fresh nonce each time, so one sealed value is one bundle.
    """

    def bundle(path: bytes | str) -> bytes | str:
        return (None if keyring is None else _opened_path(keyring, path)) or path

    return len({bundle(path) for _, path, _ in rows})


def _bundle_rows_of(
    store: Store, keyring: Keyring, subject_ids: Sequence[str]
) -> list[tuple[int, bytes | str, str]]:
    """The bundle rows recorded for any of ``subject_ids``, by id, then the unowned ones
    whose data.json names one of them."""
    wanted = set(subject_ids)
    if not wanted:
        return []
    rows: list[tuple[int, bytes | str, str]] = []
    for chunk in chunks(sorted(wanted), 500):
        marks = ",".join("?" * len(chunk))
        rows += store.db.execute(
            f"SELECT id, path, files FROM bundles WHERE subject_id IN ({marks})",  # noqa: S608
            tuple(chunk),
        ).fetchall()
    rows.sort(key=lambda row: row[0])
    rows += _unowned_bundles_of(store, keyring, wanted.__contains__)
    return rows


def delete_bundles_of_customers(
    store: Store, keyring: Keyring, system: str, not_of: Sequence[str], errors: list[str]
) -> int:
    """Delete the access bundles of the people ``system`` holds a record for (as the
    identity map knows), less those one of ``not_of`` holds too; how many.

    Found by a join, not a list of the customers' ids: a shop of half a million customers
    is more ids than one statement may carry, and more than memory should hold.
    """
    others = ",".join("?" * len(not_of)) or "NULL"
    on = "ON i.subject_no = s.subject_no"
    customer = (
        f"EXISTS (SELECT 1 FROM subjects s CROSS JOIN identities i {on} "  # noqa: S608
        "WHERE s.subject_id = {sid} AND i.system = ? AND NOT EXISTS (SELECT 1 FROM identities o "
        f"WHERE o.subject_no = s.subject_no AND o.system IN ({others})))"
    )
    rows = store.db.execute(
        "SELECT b.id, b.path, b.files FROM bundles b WHERE "  # noqa: S608 - marks only
        + customer.format(sid="b.subject_id")
        + " ORDER BY b.id",
        (system, *not_of),
    ).fetchall()

    def is_customer(subject_id: str) -> bool:
        query = "SELECT " + customer.format(sid="?")
        return bool(store.db.execute(query, (subject_id, system, *not_of)).fetchone()[0])

    rows += _unowned_bundles_of(store, keyring, is_customer)
    return _delete_rows(store, keyring, rows, errors)


def _unowned_bundles_of(
    store: Store, keyring: Keyring, wanted: Callable[[str], bool]
) -> list[tuple[int, bytes | str, str]]:
    """Bundles recorded before they said whose they are (store schema 14) whose own
    data.json names a subject ``wanted`` says yes to. Until retention purges them, an
    erasure asked after the upgrade would otherwise leave them in clear."""
    found = []
    for bundle_id, path, files in store.db.execute(
        "SELECT id, path, files FROM bundles WHERE subject_id IS NULL ORDER BY id"
    ).fetchall():
        where = _opened_path(keyring, path)
        names = json.loads(files)
        if where is None or "data.json" not in names:
            continue
        try:
            data = json.loads((Path(where) / "data.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # gone, or not a bundle's data.json: nobody's to say
        subject_id = data.get("subject_id") if isinstance(data, dict) else None
        if isinstance(subject_id, str) and wanted(subject_id):
            found.append((bundle_id, path, files))
    return found


def _delete_rows(
    store: Store, keyring: Keyring, rows: Sequence[tuple[int, bytes | str, str]], errors: list[str]
) -> int:
    """Delete these bundles' files, then their rows; how many. Failures go to ``errors``."""
    purged = 0
    gone: set[str] = set()
    for bundle_id, path, files in rows:
        where = _opened_path(keyring, path)
        if where is None:
            errors.append(f"bundle {bundle_id}: its path does not open under the store's keys")
            continue
        if where in gone:
            continue  # another id's row of a bundle deleted just now
        try:
            _delete_bundle(Path(where), json.loads(files))
        except OSError as exc:
            # The error names the bundle's id, not its path: an operator may have put a
            # person's name in an --out folder name.
            errors.append(f"bundle {bundle_id}: {exc.strerror or type(exc).__name__}")
            continue
        # Its rows go too (one per id of the person): a path is only useful while there is
        # something to delete.
        _forget_rows_at(store, keyring, where)
        gone.add(where)
        purged += 1
    return purged


@dataclass(frozen=True)
class _Replaced:
    """What is due of one store a restore replaced (:func:`_replaced_stores_due`)."""

    path: Path
    #: Delete the file: its own audit trail is past ``audit_days`` too, or it is damaged.
    delete: bool = False
    #: Delete all but its audit trail and its keys.
    empty: bool = False
    #: Purge its audit entries through this seq, past ``audit_days`` (0: none are).
    audit_through: int = 0


def _replaced_stores_due(
    store_path: Path, cutoff: str, audit_cutoff: str, errors: list[str]
) -> list[_Replaced]:
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
        if _stamp(when) >= cutoff:
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
                work = _Replaced(path, delete=True)
        except (OSError, sqlite3.Error) as exc:
            errors.append(f"replaced store {path.name}: {_reason(exc)}")
            continue
        if work.delete or work.empty or work.audit_through:
            due.append(work)
    return due


def _due_of(db: sqlite3.Connection, path: Path, audit_cutoff: str) -> _Replaced:
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
        return _Replaced(path, delete=True)
    held = any(_holds_rows(db, name) for name in tables - _KEPT_TABLES)
    through, _count = _audit_prefix(db, audit_cutoff)
    return _Replaced(path, empty=held, audit_through=through)


def _purge_replaced_trail(
    config: Config, work: _Replaced, cutoff: str, errors: list[str]
) -> _Replaced:
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
                purged = _purge_audit(replaced, cutoff, failed)
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


def _purge_replaced_stores(due: Sequence[_Replaced], errors: list[str]) -> None:
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


def _delete_bundle(root: Path, files: list[str]) -> None:
    if files == [""]:
        root.unlink(missing_ok=True)
        return
    folders = {root}
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            continue  # only ever what record_bundle listed under the root
        target = root / name
        target.unlink(missing_ok=True)
        # What a process killed while writing the file left under a temporary name
        # (connector/privatefile.py): the same content, half written.
        for partial in target.parent.glob(f".{glob.escape(target.name)}.*"):
            partial.unlink(missing_ok=True)
        parent = target.parent
        while parent != root:
            folders.add(parent)
            parent = parent.parent
    # Folders the bundle's files leave empty go too, deepest first; anything else stays.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _audit_prefix(db: sqlite3.Connection, cutoff: str) -> tuple[int, int]:
    """The audit entries past ``cutoff`` that may go: the last one's seq, and how many
    ((0, 0) for none).

    Only a prefix of the chain may go: everything before the first entry young enough to
    keep. An entry older than the cutoff but after a younger one (a clock step back) stays.
    """
    first_kept = db.execute("SELECT MIN(seq) FROM audit WHERE ts >= ?", (cutoff,)).fetchone()
    if first_kept[0] is None:
        last = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    else:
        last = int(first_kept[0]) - 1
    if last is None:
        return 0, 0
    count = int(db.execute("SELECT COUNT(*) FROM audit WHERE seq <= ?", (last,)).fetchone()[0])
    return (int(last), count) if count else (0, 0)


def _verified_prefix(store: Store, cutoff: str, errors: list[str]) -> tuple[int, int]:
    """The audit entries past ``cutoff`` that may go (:func:`_audit_prefix`), verified:
    the last one's seq and how many; (0, 0) where none may, and why in ``errors``."""
    last, count = _audit_prefix(store.db, cutoff)
    if count == 0:
        return 0, 0
    # Purging a tampered prefix would destroy the evidence: verify what is about to go first.
    # A dry run verifies too (it only reads), so it says what the real run would do.
    result = audit.verify(store, upto=last)
    if not result.ok:
        errors.append(
            f"audit entries not purged: entry {result.first_bad}: {result.problem} "
            "(run `klantsync audit verify`)"
        )
        return 0, 0
    return last, count


def _purge_audit(store: Store, cutoff: str, errors: list[str]) -> int:
    """Purge the audit entries past ``cutoff``, verified, at once: a replaced store's,
    which nothing else writes."""
    last, _count = _verified_prefix(store, cutoff, errors)
    return audit.purge_through(store, last) if last else 0
