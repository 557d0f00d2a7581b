"""Queued work in the store: manual resyncs, webhook-triggered syncs, data subject requests.

A webhook or an admin call must be acknowledged fast, and work must survive a restart, so both
only *queue* a job; the daemon's worker claims and runs jobs one by one. Job parameters can
hold an e-mail or a whole customer record (a webhook payload), so they are sealed with the
keyring like the outbox.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from connector.crypto import JOB_CONTEXT, DecryptionError, Keyring
from connector.model import normalise_email
from connector.state import Store, utcnow

log = logging.getLogger("klantsync.daemon")

#: A claimed job's outcome when its sealed parameters do not open.
UNREADABLE = "job parameters do not open: damaged, or sealed under another key"
#: How many times a daemon may end while running a job before the next start fails it.
MAX_CUT_OFF = 5
#: The outcome of a job a daemon ended while running :data:`MAX_CUT_OFF` times.
CUT_OFF = (
    f"not run again: the daemon ended while running it {MAX_CUT_OFF} times (it crashed, or "
    "the job outlasted the stop's grace); the log of those runs says where it stopped"
)

#: The kinds of job this version queues. Any other (one queued by a newer version, which
#: this one fails) counts as :data:`OTHER_KIND` in :func:`pending_counts`.
KINDS = ("resync", "webhook", "dsr")
OTHER_KIND = "other"
#: The states of a job not yet finished: what :func:`pending_counts` counts.
PENDING_STATES = ("queued", "running")

__all__ = [
    "KINDS",
    "OTHER_KIND",
    "PENDING_STATES",
    "Job",
    "claim_more",
    "claim_next",
    "enqueue",
    "finish",
    "forget_queued",
    "forget_syncs_of",
    "get",
    "job_in",
    "pending_counts",
    "pending_since",
    "recent",
    "recent_in",
    "requeue",
    "requeue_cut_off",
    "requeue_running",
]


@dataclass(frozen=True)
class Job:
    """A queued or finished job; ``params`` are decrypted only when claimed."""

    id: int
    kind: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None
    params: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Public view (never the params: they may hold personal data)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
        }


def enqueue(
    store: Store, keyring: Keyring, kind: str, params: dict[str, Any], *, durable: bool = False
) -> int:
    """Queue a job; return its id.

    ``durable`` syncs it to disk before it returns (:meth:`Store.durable_transaction`): for
    work acknowledged to someone who will not ask again (a data subject request). Other jobs
    (a resync, a change) are caught up by the next scheduled run if a power cut loses them,
    so they are not each paid an fsync.
    """
    sealed = keyring.seal_json(params, JOB_CONTEXT)
    with store.durable_transaction() if durable else store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO jobs(kind, params, status, created_at) VALUES (?,?,?,?)",
            (kind, sealed, "queued", utcnow()),
        )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def claim_next(store: Store, keyring: Keyring) -> Job | None:
    """Mark the oldest queued job running and return it with its params, or ``None``.

    A job whose params do not open is marked failed (:data:`UNREADABLE`) and the next one is
    claimed: it can never run, and left running it would stop the worker at every start.

    Each job is claimed, or failed, in a transaction of its own, so a call the store's lock
    refused part-way may be made again whole (:func:`connector.storeturn.write_in_turn`):
    what it committed before is done, and what it was refused was not. A job failed in
    one transaction and left running by the next, then refused, was held for good.
    """
    while True:
        # Looked at first, without the write lock: the idle worker asks every second, and
        # took the lock each time, so another process writing for longer than the lock wait
        # held the event loop that long and was reported as the store failing, with nothing
        # queued.
        if store.db.execute("SELECT 1 FROM jobs WHERE status='queued' LIMIT 1").fetchone() is None:
            return None
        with store.transaction() as db:
            row = db.execute(
                "SELECT id, params FROM jobs WHERE status='queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            job = _opened(store, keyring, row[0], row[1])
            if job is not None:
                now = utcnow()
                db.execute(
                    "UPDATE jobs SET status='running', started_at=? WHERE id=?", (now, job.id)
                )
                return dataclasses.replace(job, status="running", started_at=now)


def claim_more(
    store: Store, keyring: Keyring, after_id: int, limit: int, wanted: Callable[[Job], bool]
) -> list[Job]:
    """Claim up to ``limit`` more queued jobs to run as one batch with job ``after_id``:
    those queued right after it that ``wanted`` takes, up to the first it does not.

    Jobs run in the order they came, so a change that came after an erasure request waits
    for the erasure (which makes sure it is never sent). The job the batch stops at stays
    queued, not claimed: claimed and not started, it was left running by a daemon that
    ended during the batch (a crash, the stop's grace run out), counted as cut off by the
    next start (:func:`requeue_cut_off`), and at the fifth failed without ever running.
    Jobs whose params do not open are marked failed and left out (see :func:`claim_next`).
    """
    claimed: list[Job] = []
    with store.transaction() as db:
        rows = db.execute(
            "SELECT id, params FROM jobs WHERE status='queued' AND id>? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        now = utcnow()
        for job_id, sealed in rows:
            job = _opened(store, keyring, job_id, sealed)
            if job is None:
                continue
            if not wanted(job):
                break
            db.execute("UPDATE jobs SET status='running', started_at=? WHERE id=?", (now, job_id))
            claimed.append(dataclasses.replace(job, status="running", started_at=now))
    return claimed


def _opened(store: Store, keyring: Keyring, job_id: int, sealed: bytes | None) -> Job | None:
    """A claimed job with its params; ``None`` (and the job failed) if they do not open."""
    job = get(store, job_id)
    assert job is not None
    try:
        params = keyring.open_json(sealed, JOB_CONTEXT) if sealed is not None else {}
    except DecryptionError:
        finish(store, job_id, "failed", {"error": UNREADABLE})
        log.error("job failed", extra={"job": job_id, "kind": job.kind, "error": UNREADABLE})
        return None
    return Job(**{**job.__dict__, "params": params})


def finish(store: Store, job_id: int, status: str, result: dict[str, Any]) -> None:
    """Record a job's outcome and drop its sealed params (they are no longer needed)."""
    store.db.execute(
        "UPDATE jobs SET status=?, finished_at=?, result=?, params=NULL WHERE id=?",
        (status, utcnow(), json.dumps(result, default=str), job_id),
    )


#: Webhook events that only ask for a sync of the person (not a request of theirs); a
#: merge teaches the identity map the record the person's became, by ids alone.
_SYNC_EVENTS = frozenset({"changed", "deleted", "merged"})


def forget_queued(
    store: Store,
    keyring: Keyring,
    subject_ids: Collection[str],
    records: Collection[tuple[str, str]] = (),
) -> int:
    """Finish, unrun, the queued syncs of the people ``subject_ids`` name, or of their
    ``(system, record id)`` ``records`` (a change of the shop record under an address
    the person moved to): webhook changes and resyncs of one address. Their sealed
    parameters hold the person's e-mail, phone or record, which an erasure must not leave
    behind while the job waits (for as long as the daemon is stopped). Run, they would sync
    nobody: the person is suppressed. A queued data subject request is theirs and stays.
    Returns how many were finished."""
    wanted = set(subject_ids)
    theirs = {(system, str(record)) for system, record in records}
    forgotten = 0
    for job_id, params in _queued_syncs(store, keyring):
        email = params.get("email")
        by_email = isinstance(email, str) and email
        by_record = (params.get("system"), str(params.get("external_id"))) in theirs
        if by_record or (by_email and keyring.subject_id(normalise_email(str(email))) in wanted):
            finish(store, job_id, "done", {"skipped": "the person was erased"})
            forgotten += 1
    return forgotten


def forget_syncs_of(store: Store, keyring: Keyring, system: str) -> int:
    """Finish, unrun, the syncs of ``system`` not run yet: its webhook changes and
    deletions, and resyncs of it. For a source purged (Shopify's ``shop/redact``): their
    sealed parameters hold its customers' e-mails, phones and ids, and run they would ask
    a shop that is gone. Requests (an erasure or access request from that shop, the purge
    itself) are not syncs and stay. Finished rather than deleted: a restore takes a job's
    latest status over from the store it replaces, and a deleted one came back queued from
    the backup. Returns how many were finished."""
    forgotten = 0
    for job_id, params in _queued_syncs(store, keyring):
        if params.get("system") == system:
            finish(store, job_id, "done", {"skipped": "the source was purged"})
            forgotten += 1
    return forgotten


def _queued_syncs(store: Store, keyring: Keyring) -> Iterator[tuple[int, dict[str, Any]]]:
    """The queued jobs that only ask for a sync (webhook changes and deletions, resyncs),
    with their opened parameters. One whose parameters do not open is left out: its claim
    fails it (UNREADABLE), and nothing here can tell what it is."""
    rows = store.db.execute(
        "SELECT id, kind, params FROM jobs WHERE status='queued' AND kind IN ('webhook', 'resync')"
    ).fetchall()
    for job_id, kind, sealed in rows:
        try:
            params = keyring.open_json(sealed, JOB_CONTEXT) if sealed is not None else {}
        except DecryptionError:
            continue
        if kind == "webhook" and params.get("event") not in _SYNC_EVENTS:
            continue
        yield job_id, params


def requeue(store: Store, job_id: int) -> None:
    """Put a claimed job back in the queue, as it was (it did not run)."""
    store.db.execute(
        "UPDATE jobs SET status='queued', started_at=NULL WHERE id=? AND status='running'",
        (job_id,),
    )


def requeue_running(store: Store) -> int:
    """Jobs left 'running' go back to the queue, uncounted; returns how many.

    For the job worker after the store failed under it: the job it held did nothing wrong,
    and is tried again for as long as the store takes to mend. A daemon's start uses
    :func:`requeue_cut_off`.
    """
    cursor = store.db.execute("UPDATE jobs SET status='queued' WHERE status='running'")
    return cursor.rowcount


def requeue_cut_off(store: Store) -> tuple[int, list[int]]:
    """At a daemon's start: the jobs an earlier daemon ended while running (a crash, a
    stop's grace run out) go back to the queue, counted; one cut off :data:`MAX_CUT_OFF`
    times is failed instead (:data:`CUT_OFF`). Returns how many were queued again, and the
    ids of those failed.

    Queued again for ever, a job that crashes the daemon (or outlasts the grace at every
    stop) was claimed first at every start, and no job after it ever ran.
    """
    with store.transaction() as db:
        db.execute("UPDATE jobs SET cut_off = cut_off + 1 WHERE status='running'")
        failed = db.execute(
            "SELECT id, kind FROM jobs WHERE status='running' AND cut_off >= ? ORDER BY id",
            (MAX_CUT_OFF,),
        ).fetchall()
        for job_id, _ in failed:
            finish(store, job_id, "failed", {"error": CUT_OFF})
        requeued = db.execute("UPDATE jobs SET status='queued' WHERE status='running'").rowcount
    for job_id, kind in failed:
        log.error("job failed", extra={"job": job_id, "kind": kind, "error": CUT_OFF})
    return requeued, [job_id for job_id, _ in failed]


def get(store: Store, job_id: int) -> Job | None:
    """One job's public view."""
    return job_in(store.db, job_id)


def recent(store: Store, limit: int = 20) -> list[Job]:
    """The latest jobs, newest first."""
    return recent_in(store.db, limit)


def job_in(db: sqlite3.Connection, job_id: int) -> Job | None:
    """:func:`get` on any connection to the store (a reader's own, off the event loop)."""
    row = db.execute(
        "SELECT id, kind, status, created_at, started_at, finished_at, result FROM jobs WHERE id=?",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    job_id, kind, status, created, started, finished, result = row
    return Job(
        id=job_id,
        kind=kind,
        status=status,
        created_at=created,
        started_at=started,
        finished_at=finished,
        result=json.loads(result) if result else None,
    )


def recent_in(db: sqlite3.Connection, limit: int = 20) -> list[Job]:
    """:func:`recent` on any connection to the store (a reader's own, off the event loop)."""
    rows = db.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [job for (job_id,) in rows if (job := job_in(db, job_id)) is not None]


def pending_counts(store: Store) -> dict[tuple[str, str], int]:
    """Jobs queued and running, by ``(kind, state)``; every pair is there, 0 if none.

    For the job gauges: a stuck worker (running stays at 1, queued grows) or a flood of
    webhook deliveries shows there. Every pair, so a queue that drained reads 0 rather than
    the count last seen; the kinds are this version's and :data:`OTHER_KIND`, so the
    series stay few whatever the store holds. Finished jobs are history, not counted.
    """
    counts = {(kind, state): 0 for kind in (*KINDS, OTHER_KIND) for state in PENDING_STATES}
    rows = store.db.execute(
        "SELECT kind, status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') "
        "GROUP BY kind, status"
    ).fetchall()
    for kind, status, count in rows:
        label = kind if kind in KINDS else OTHER_KIND
        counts[label, status] += count
    return counts


def pending_since(store: Store) -> tuple[str | None, str | None]:
    """When the oldest queued job was queued, and when the job running longest started
    (store timestamps; ``None`` for none).

    For the job age gauges: a worker stuck on a hanging call shows in the counts only as
    "running stays 1 while queued grows", which a busy hour shows too; these ages say how
    long nothing was taken. Ids grow with time, so the oldest queued job is the first one
    by id (on the ``(status, id)`` index); few run at once, so their start is a small min.
    """
    row = store.db.execute(
        "SELECT (SELECT created_at FROM jobs WHERE status='queued' ORDER BY id LIMIT 1), "
        "(SELECT MIN(started_at) FROM jobs WHERE status='running')"
    ).fetchone()
    return row[0], row[1]
