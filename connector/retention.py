"""Retention of what the connector holds itself (GDPR Art. 5(1)(e)).

:func:`sweep` deletes, per ``[retention]``:

- dead letters last refused more than ``dead_letters_days`` ago (``created_at`` is the latest
  refusal: a record refused again holds the payload of that refusal, kept from then);
- outbox rows held more than ``dead_letters_days`` (a write from a customer's former address
  that must not be sent, kept for an erasure to find that address by:
  :data:`connector.state.HELD`); set aside like a dead letter, kept as long;
- the sealed manifests of data subject requests completed more than ``manifests_days`` ago
  (the request row stays: it is the record that the request was handled);
- access bundles recorded with :func:`record_bundle` more than ``access_bundles_days`` ago
  (:mod:`connector.retention_bundles`);
- audit entries older than ``audit_days``: only a prefix of the chain, after verifying it, and
  anchored so the rest still verifies (see :mod:`connector.audit`,
  :mod:`connector.retention_audit`);
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
  ``audit_days`` (or whole, when SQLite finds it damaged: nothing of it can be kept;
  :mod:`connector.retention_replaced`).

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
import datetime as dt
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from connector import audit
from connector.config import Config
from connector.crypto import Keyring
from connector.retention_audit import stamp, verified_prefix
from connector.retention_bundles import (
    BundlePurge,
    bundles_in,
    count_bundles_of,
    delete_bundles_of,
    delete_bundles_of_customers,
    record_bundle,
)
from connector.retention_replaced import (
    Replaced,
    purge_replaced_stores,
    replaced_stores_due,
    replaced_trails_purged,
)
from connector.state import HELD, Store
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
    purge_replaced_stores(replaced, report.errors)
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
    report = RetentionReport(now=stamp(when), dry_run=dry_run)
    report.cutoffs = {
        "dead_letters": stamp(when - dt.timedelta(days=days.dead_letters_days)),
        "manifests": stamp(when - dt.timedelta(days=days.manifests_days)),
        "bundles": stamp(when - dt.timedelta(days=days.access_bundles_days)),
        "audit": stamp(when - dt.timedelta(days=days.audit_days)),
        "jobs": stamp(when - dt.timedelta(days=days.jobs_days)),
        "webhook_ids": stamp(when - dt.timedelta(days=days.webhook_ids_days)),
        "runs": stamp(when - dt.timedelta(days=days.runs_days)),
        "replaced_stores": stamp(when - dt.timedelta(days=days.replaced_stores_days)),
    }
    return report


def _count_due(
    store: Store, keyring: Keyring | None, report: RetentionReport, beside: Path
) -> None:
    """A dry run: count what a sweep would purge, writing nothing (``keyring``, if any,
    tells bundles apart: :func:`connector.retention_bundles.bundles_in`)."""
    cut = report.cutoffs
    for rows in _row_purges(cut):
        setattr(report, rows.kind, rows.count(store))
    bundles = store.db.execute(
        "SELECT id, path, files FROM bundles WHERE created_at < ? ORDER BY id",
        (cut["bundles"],),
    ).fetchall()
    report.bundles = bundles_in(bundles, keyring)
    report.audit_entries = verified_prefix(store, cut["audit"], report.errors)[1]
    due = replaced_stores_due(beside, cut["replaced_stores"], cut["audit"], report.errors)
    report.replaced_stores = len(due)


def _purged_in_batches(
    store: Store, config: Config, keyring: Keyring, report: RetentionReport, beside: Path
) -> Generator[_Batch, None, list[Replaced]]:
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
    purges["bundles"] = BundlePurge(keyring, cut["bundles"], report.errors)
    purges["audit_entries"] = _AuditPurge(cut["audit"], report.errors)
    left = [purges[kind] for kind in PURGED_KINDS if kind in purges]
    while True:
        counts = dict.fromkeys(PURGED_KINDS, 0)
        due: list[Replaced] = []

        def batch(counts: dict[str, int] = counts, due: list[Replaced] = due) -> None:
            room = BATCH_ROWS
            while left and room > 0:
                purged, used = left[0].take(store, room)
                counts[left[0].kind] += purged
                room -= used
                if left[0].done:
                    left.pop(0)
            if not left:
                due.extend(replaced_trails_purged(config, beside, cut, report.errors))
                counts["replaced_stores"] = len(due)
            if any(counts.values()):
                audit.append(store, audit.RETENTION_PURGED, counts)

        yield batch  # run in a transaction of its own and committed when this resumes
        for kind, count in counts.items():
            setattr(report, kind, getattr(report, kind) + count)
        if not left:
            return [work for work in due if work.delete or work.empty]


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
            self.through = verified_prefix(store, self.cutoff, self.errors)[0]
        share = store.db.execute(
            "SELECT seq FROM audit WHERE seq <= ? ORDER BY seq LIMIT 1 OFFSET ?",
            (self.through, room - 1),
        ).fetchone()
        upto = self.through if share is None else int(share[0])
        purged = audit.purge_through(store, upto) if upto else 0
        self.done = upto == self.through or not purged
        return purged, purged
