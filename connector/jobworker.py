"""The daemon's job worker: claims queued jobs (:mod:`connector.jobs`) and runs them in turn.

Webhooks and the admin API only queue; this is what runs their work, one job at a time:
manual resyncs, webhook deliveries (a changed customer, an erasure or access request from a
shop) and data subject requests asked for through the admin API. Flows run through the
daemon (:class:`FlowRunner`), so a job never runs a flow beside its scheduled run.

What it promises, whatever a job meets:

- A job that fails with a :class:`~connector.errors.KlantsyncError` is marked failed with
  that message, and the next job runs.
- A job that meets a bug is marked failed with the exception's type only (its text may hold
  an e-mail); the traceback is logged only under ``KLANTSYNC_DEBUG=1``.
- The store failing under the worker (a full disk, say) is logged as what it means, and in
  the daemon noted for readiness (``/readyz`` then proves the store takes writes); after
  :data:`STORE_RETRY_SECONDS` the jobs it held go back to the queue and it carries on. Had it
  ended, webhooks and admin calls would go on queueing work that nothing ran. Which SQLite
  errors are the store failing is :func:`connector.storefile.failure`'s to say: any other
  (a constraint violated, a statement misused) is a bug like any other, and run again it
  would fail again, holding every job behind it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from connector import jobs
from connector.engine import FlowReport
from connector.errors import KlantsyncError
from connector.logs import debug_wanted
from connector.runtime import Runtime
from connector.storefile import failure, failure_text
from connector.storeturn import write_in_turn

__all__ = [
    "BOOKKEEPING_WAIT_SECONDS",
    "CHANGE_BATCH",
    "JOB_POLL_SECONDS",
    "QUEUE_WAIT_SECONDS",
    "STORE_RETRY_SECONDS",
    "FlowRunner",
    "JobWorker",
    "StoreFailed",
    "SubjectsSynced",
    "cut_short",
]

T = TypeVar("T")

# The daemon's log, as it was before the worker had a module of its own: operators' filters
# on the logger name keep working.
log = logging.getLogger("klantsync.daemon")

#: Seconds the worker waits for new jobs before looking in the store again (jobs queued by
#: another process, e.g. ``klantsync resync`` while the daemon runs, do not wake it directly).
JOB_POLL_SECONDS = 1.0
#: Seconds the job worker rests after the store failed under it before it tries again.
STORE_RETRY_SECONDS = 30.0
#: Most webhook "changed" deliveries run together as one targeted sync.
CHANGE_BATCH = 100
#: Seconds an admin call (a request, a resync) waits for the store's write lock while
#: another process holds it, before it is answered 503; the event loop does not wait with it
#: (:func:`connector.storeturn.write_in_turn`).
QUEUE_WAIT_SECONDS = 10.0
#: Seconds the worker's own writes to the queue (claiming a job, recording how it ended)
#: wait for the store's write lock while another process holds it, off the event loop,
#: before the worker says the store failed. Longer than an admin call's wait: nobody waits
#: on the answer, and a job that ran and could not be recorded is run again.
BOOKKEEPING_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class SubjectsSynced:
    """What a targeted sync of some people did: records written, and whether any of its
    flows' reports failed (a destination down, a record refused, deliveries left queued).

    The count alone read as success: a resync of one address with the CRM down ended
    "done" with nothing written, where the same resync run inline exits 1.

    ``cut_short``: a stop left one of those runs unfinished (:func:`cut_short`), so the job
    is run again at the next start. A run that went to its end and failed on its own
    account (a record refused) is not: queued again, its refused payload was not offered
    again and the job ended saying it had not failed.
    """

    written: int
    failed: bool
    cut_short: bool


class FlowRunner(Protocol):
    """What runs a job's syncs: the daemon, which never runs one flow twice at once."""

    async def run_flow(
        self, flow_name: str, *, full: bool = False, wait: bool = False
    ) -> FlowReport | None: ...

    async def sync_subjects(
        self,
        system: str,
        subjects: list[tuple[str | None, str | None]],
        *,
        full: bool = False,
    ) -> SubjectsSynced | None: ...


#: Told of a store failure met while running (the error, and what met it).
StoreFailed = Callable[[sqlite3.Error, str], None]


class JobWorker:
    """Runs queued jobs until ``stopping`` is set.

    Args:
        rt: the opened runtime (its store holds the queue).
        runner: runs flows and targeted syncs for resync and webhook jobs.
        stopping: set when the daemon stops; the job in hand finishes first.
        store_failed: told of each store failure the worker meets, to log it (the daemon's,
            which also makes readiness prove the store takes writes); by default it is
            logged only.
    """

    def __init__(
        self,
        rt: Runtime,
        runner: FlowRunner,
        stopping: asyncio.Event,
        store_failed: StoreFailed | None = None,
    ) -> None:
        self.rt = rt
        self.runner = runner
        self.stopping = stopping
        self.store_failed = store_failed or self._log_store_failure
        #: Set to look in the queue at once (a job queued by this process).
        self.wake = asyncio.Event()

    def queue(self, kind: str, params: dict[str, Any], *, durable: bool = False) -> int:
        """Queue a job and wake the worker; ``durable``: on disk first (:func:`jobs.enqueue`)."""
        job_id = jobs.enqueue(self.rt.store, self.rt.keyring, kind, params, durable=durable)
        self.wake.set()
        return job_id

    async def queue_request(self, kind: str, email: str) -> int:
        """Queue a data subject request asked for through the admin API; the job's id.

        An erasure is recorded first, its suppression entry with it
        (:meth:`~connector.dsr.DsrService.queue_erase`, as ``dsr erase`` records it before
        it fans out): from the answer on, no sync sends the person anything, however many
        jobs wait before this one; the job then runs that request. Recorded by the job, a
        scheduled run between the answer and the job's start synced the person again.

        The job is on disk before the answer (the operator told it is queued does not ask
        again), and so is the erasure's record, committed just before: syncing the store's
        log syncs all it holds.
        """
        from connector.dsr import DsrService

        params: dict[str, Any] = {"kind": kind, "email": email}
        if kind == "erase":
            view = await DsrService(self.rt).queue_erase(
                email, source="admin", in_turn=self.in_turn
            )
            params = {"kind": kind, "request": view.id}  # its manifest holds the address
        return await self.in_turn(lambda: self.queue("dsr", params, durable=True))

    async def in_turn(self, work: Callable[[], T]) -> T:
        """``work()`` (a write transaction an admin call makes) without the event loop
        waiting on another process's lock of the store, for up to :data:`QUEUE_WAIT_SECONDS`
        (:func:`connector.storeturn.write_in_turn`)."""
        return await write_in_turn(self.rt.store, work, within=QUEUE_WAIT_SECONDS)

    async def _booked(self, work: Callable[[], T]) -> T:
        """``work()`` (the worker's own write to the queue, one transaction or statement that
        run again finds its work done) without the event loop waiting on another process's
        lock of the store, for up to :data:`BOOKKEEPING_WAIT_SECONDS`. It waited inside
        SQLite's busy timeout on the loop, every webhook, probe and admin call with it."""
        return await write_in_turn(self.rt.store, work, within=BOOKKEEPING_WAIT_SECONDS)

    async def _finish(self, batch: list[jobs.Job], status: str, result: dict[str, Any]) -> None:
        """Record how the jobs of ``batch`` ended, all in one transaction (then logged, once)."""

        def record() -> None:
            with self.rt.store.transaction():
                for job in batch:
                    jobs.finish(self.rt.store, job.id, status, result)

        await self._booked(record)

    async def run(self) -> None:
        """Claim and run queued jobs until stopped, outliving store failures (module doc)."""
        held = False  # jobs left running by a store failure
        while not self.stopping.is_set():
            try:
                if held:
                    await self._booked(lambda: jobs.requeue_running(self.rt.store))
                    held = False
                await self._next_job()
            except sqlite3.Error as exc:
                held = True
                self.store_failed(exc, "job worker")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), STORE_RETRY_SECONDS)
        if held:
            # Stopped while resting after a store failure: the jobs it held are not running,
            # and left so the next start counted them as ended while running
            # (:func:`jobs.requeue_cut_off`), failing them at the fifth restart during a
            # disk problem. A store still refusing leaves them to be counted, as before.
            with contextlib.suppress(sqlite3.Error):
                jobs.requeue_running(self.rt.store)

    def _store_at_fault(self, exc: Exception) -> bool:
        """Whether ``exc`` is the store failing (a full disk, a lock held too long...), which
        a wait may mend, rather than a bug, which the job met and would meet again."""
        if not isinstance(exc, sqlite3.Error):
            return False
        return failure(self.rt.config.store_path, exc) is not None

    def _log_store_failure(self, exc: sqlite3.Error, during: str) -> None:
        """Log a store failure as what it means and what to do."""
        error = failure_text(self.rt.config.store_path, exc)
        log.error("store failed", extra={"during": during, "error": error})

    async def run_job(self, job: jobs.Job) -> dict[str, Any]:
        """Run one job's work; its result (stored with the job).

        Raises:
            KlantsyncError: the work failed (or the job is of a kind this version does not
                know); other exceptions are bugs, and the worker records them as such.
        """
        params = job.params or {}
        if job.kind == "resync":
            return await self._resync(params)
        if job.kind == "webhook":
            return await self._webhook_job(params, _received(job))
        if job.kind == "dsr":
            return await self._dsr_job(params, _received(job))
        # Queued by a newer version, say: a failure to look at, not work done.
        raise KlantsyncError(f"unknown job kind {job.kind}")

    async def _next_job(self) -> None:
        """Run the next queued job (or batch of webhook changes); wait a while if none."""
        job = await self._booked(lambda: jobs.claim_next(self.rt.store, self.rt.keyring))
        if job is None:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_or_stop(), JOB_POLL_SECONDS)
            return
        try:
            if _is_change(job):
                await self._run_change_batch(job)
                return
            await self._run_one(job)
        except asyncio.CancelledError:
            if self.stopping.is_set():
                # The stop's grace ran out while the job ran (an erasure asking vendor after
                # vendor does not look at the stop): a stop, not the job's failure. Left
                # running, the next start counted it as ended while running, and a job cut
                # at five stops was failed (:func:`jobs.requeue_cut_off`). Queued again
                # uncounted, it runs again at the next start; a crash is still counted.
                with contextlib.suppress(sqlite3.Error):
                    jobs.requeue_running(self.rt.store)
            raise

    async def _run_one(self, job: jobs.Job) -> None:
        try:
            result = await self.run_job(job)
        except _Deferred as exc:
            # Not run, and not failed: queued again, the next start runs it. (A flow already
            # run by a resync of several flows runs again then; a resync is idempotent.)
            await self._requeue([job], str(exc))
        except KlantsyncError as exc:
            await self._finish([job], "failed", {"error": str(exc)})
            log.warning("job failed", extra={"job": job.id, "kind": job.kind, "error": str(exc)})
        except Exception as exc:  # a bug met by one job must not stop the jobs after it
            if self._store_at_fault(exc):
                raise  # the store's trouble, not the job's: run() waits and runs it again
            await self._finish([job], "failed", _internal(exc))
            _log_internal(exc, job)
        else:
            await self._finish([job], "done", result)
            log.info("job done", extra={"job": job.id, "kind": job.kind})

    async def _run_change_batch(self, first: jobs.Job) -> None:
        """Webhook "changed" deliveries waiting together run as one targeted sync per system.

        A burst of deliveries (a shop importing customers) then costs one engine run and one
        delivery batch instead of one of each per delivery. The batch ends at the first other
        job queued after them (an erasure, say), which is left queued: it and all after it
        run afterwards, in the order they came, so a change that came after an erasure
        request is never sent before the erasure has run. Each system's jobs are judged by
        its own sync: one shop down fails its own changes, not another shop's, unasked.
        """
        more = await self._booked(
            lambda: jobs.claim_more(
                self.rt.store, self.rt.keyring, first.id, CHANGE_BATCH - 1, _is_change
            )
        )
        by_system: dict[str, list[jobs.Job]] = {}
        for job in [first, *more]:
            by_system.setdefault((job.params or {})["system"], []).append(job)
        systems = list(by_system.items())
        for index, (system, its_jobs) in enumerate(systems):
            try:
                await self._run_system_changes(system, its_jobs)
            except _Deferred as exc:
                # The jobs after it too: run now, one would overtake the changes before it.
                rest = [job for _, later in systems[index:] for job in later]
                await self._requeue(rest, str(exc))
                return

    async def _run_system_changes(self, system: str, batch: list[jobs.Job]) -> None:
        """One system's changes of a batch as one targeted sync; each job ends as it ended.

        Raises:
            _Deferred: the daemon stopped before the sync ran, or cut it short.
        """
        subjects = [
            ((job.params or {}).get("external_id"), (job.params or {}).get("email"))
            for job in batch
        ]
        try:
            synced = await self._sync_subjects(system, subjects)
        except _Deferred:
            raise
        except KlantsyncError as exc:
            await self._finish(batch, "failed", {"error": str(exc)})
            for job in batch:
                log.warning("job failed", extra={"job": job.id, "kind": job.kind})
        except Exception as exc:  # as in _run_one
            if self._store_at_fault(exc):
                raise
            await self._finish(batch, "failed", _internal(exc))
            _log_internal(exc, batch[0])
        else:
            result = {"batch": len(batch), "written": synced.written, "failed": synced.failed}
            await self._finish(batch, "done", result)
            for job in batch:
                log.info("job done", extra={"job": job.id, "kind": job.kind})

    async def _requeue(self, claimed: list[jobs.Job], why: str) -> None:
        """Put claimed jobs that did not run back in the queue, saying why."""

        def requeue() -> None:
            with self.rt.store.transaction():
                for job in claimed:
                    jobs.requeue(self.rt.store, job.id)

        await self._booked(requeue)
        for job in claimed:
            log.info("job queued again", extra={"job": job.id, "kind": job.kind, "why": why})

    async def _wake_or_stop(self) -> None:
        waits = [
            asyncio.ensure_future(self.wake.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _resync(self, params: dict[str, Any]) -> dict[str, Any]:
        system = params["system"]
        if not any(flow.source == system for flow in self.rt.config.flows):
            # Checked against the config file as it is now, the resync was queued for a
            # daemon that runs the config it started with: "done", having run nothing.
            raise KlantsyncError(
                f"no flow of the running daemon reads {system} (a config edited since the "
                "daemon started takes effect when it restarts)"
            )
        if params.get("email"):
            synced = await self._sync_subjects(
                system, [(None, params["email"])], full=bool(params.get("full"))
            )
            # Said as a resync of the whole system says it: done, and whether it failed.
            return {"written": synced.written, "failed": synced.failed}
        reports = []
        for flow in self.rt.config.flows:
            if flow.source == system:
                # A run under way (a scheduled one) is waited for, not taken for this one:
                # the resync may be --full, or asked for a change that run had passed.
                report = await self.runner.run_flow(
                    flow.name, full=bool(params.get("full")), wait=True
                )
                if report is None:
                    raise _Deferred("the daemon stopped before the resync ran")
                if cut_short(report, self.stopping):
                    # Done, it would never be run again, and a --full resync's retry of
                    # refused records never reached the rest.
                    raise _Deferred("the daemon stopped before the resync finished")
                reports.append(report.as_dict())
        return {
            "flows": [r["flow"] for r in reports],
            "failed": any(r["failed"] for r in reports),
        }

    async def _sync_subjects(
        self,
        system: str,
        subjects: list[tuple[str | None, str | None]],
        *,
        full: bool = False,
    ) -> SubjectsSynced:
        """A targeted sync through the runner, as a flow's run is: one the daemon stops before,
        or that a stop cuts short, is :class:`_Deferred` (queued again for the next start).

        Ended "done" instead, having delivered nothing, it was never run again: the person's
        write waited for the flow's next scheduled run (a nightly cron's: the next night).
        """
        synced = await self.runner.sync_subjects(system, subjects, full=full)
        if synced is None:
            raise _Deferred("the daemon stopped before the sync ran")
        if synced.cut_short:
            raise _Deferred("the daemon stopped before the sync finished")
        return synced

    async def _webhook_job(self, params: dict[str, Any], received: dt.datetime) -> dict[str, Any]:
        event = params["event"]
        system = params["system"]
        if event == "changed":
            # Fetched from the source, whatever the delivery carried: a delivery replayed,
            # or overtaken by a later change, must not write an older record back.
            subjects = [(params.get("external_id"), params.get("email"))]
            synced = await self._sync_subjects(system, subjects)
            return {"written": synced.written, "failed": synced.failed}
        if event == "merged":
            from connector.merges import follow_merge

            return await follow_merge(self.rt, params)
        if event in ("erase", "access", "purge_all", "deleted"):
            from connector.adapter import WebhookEvent
            from connector.dsr import DsrService

            due = params.get("due_within_days")
            service = DsrService.for_delivery(
                self.rt, received, due if isinstance(due, int) else None
            )
            view = await service.handle_event(
                system,
                WebhookEvent(
                    kind=event,
                    delivery_id=params["delivery_id"],
                    external_id=params.get("external_id"),
                    email=params.get("email"),
                    phone=params.get("phone"),
                ),
                recorded=params.get("request"),  # an erasure, recorded as it came
            )
            return {"request": view.id if view is not None else None}
        return {"ignored": event}

    async def _dsr_job(self, params: dict[str, Any], received: dt.datetime) -> dict[str, Any]:
        from connector.dsr import DsrService

        service = DsrService(self.rt, received_at=received)
        if params["kind"] == "erase" and "request" in params:
            view = await service.retry(params["request"])  # recorded when it was asked
        elif params["kind"] == "erase":
            # Queued by an earlier version, which recorded the erasure only here.
            view = await service.erase(params["email"], source="admin")
        else:
            view = await service.access(params["email"], source="admin")
        return {"request": view.id, "status": view.status}


def cut_short(report: FlowReport, stopping: asyncio.Event) -> bool:
    """Whether a stop left ``report``'s run unfinished: the run failed, and its pull did not
    reach its end or a destination has rows of it left queued.

    One rule for the daemon, which records such a run interrupted (the next start resumes
    it), and for the job worker, which queues such a resync again. A run that went to its
    end and failed on its own account (a dead letter) is neither: nothing is left to resume.
    """
    if not stopping.is_set() or not report.failed:
        return False
    return not report.complete or any(d.left_queued for d in report.destinations.values())


class _Deferred(KlantsyncError):
    """A job that could not run now (the daemon is stopping): back to the queue."""


def _received(job: jobs.Job) -> dt.datetime:
    """When a job's request reached the connector: when it was queued, or, for a delivery
    the vendor sent again after one failed, at its first try (the intake's ``received_at``,
    :func:`connector.webhooks.first_sent`)."""
    first = (job.params or {}).get("received_at")
    return dt.datetime.fromisoformat(first if isinstance(first, str) else job.created_at)


def _internal(exc: Exception) -> dict[str, Any]:
    """A job's result after a bug: the exception's type only (its text may hold the data)."""
    return {"error": f"internal error: {type(exc).__name__}"}


def _log_internal(exc: Exception, job: jobs.Job) -> None:
    """Log a bug a job met; the traceback (frames hold values) only with KLANTSYNC_DEBUG."""
    log.error(
        "job failed with an internal error",
        extra={"job": job.id, "kind": job.kind, "error": type(exc).__name__},
        exc_info=exc if debug_wanted() else None,
    )


def _is_change(job: jobs.Job) -> bool:
    return job.kind == "webhook" and (job.params or {}).get("event") == "changed"
