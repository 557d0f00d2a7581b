"""``klantsync run``: the service. One event loop runs the scheduler, the HTTP listeners, the
job worker and the deliveries.

- APScheduler runs each flow on its schedule (never two runs of one flow at once; missed runs
  coalesced; jitter) and the housekeeping jobs (retry open data subject requests, refresh
  gauges).
- The public listener serves ``POST /webhooks/<system>``, ``/healthz``, ``/readyz`` and
  ``/metrics``; the admin listener serves the admin API (:mod:`connector.admin`).
- Webhooks and the admin API only queue jobs (:mod:`connector.jobs`); the job worker
  (:mod:`connector.jobworker`) runs them.
- SIGTERM/SIGINT: stop taking work, let the in-flight batch finish, flush, exit 0. SIGHUP
  is logged and ignored (there is no reload).
- One daemon per store (:mod:`connector.lock`).
- Readiness (:mod:`connector.readiness`), the gauges read from the store
  (:mod:`connector.gauges`), the daily review (:mod:`connector.review`) and the jobs the
  scheduler runs (:mod:`connector.scheduling`) are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

from connector import audit, gauges, jobs, review
from connector.clockstep import ClockWatch
from connector.engine import FlowReport
from connector.errors import KlantsyncError
from connector.jobworker import JobWorker, SubjectsSynced, cut_short
from connector.metrics import Metrics
from connector.readiness import (
    READY_STARTING,
    READY_SUCCEEDED,
    STORE_DAMAGED,
    STORE_GONE,
    UNREADY_FAILING,
    UNREADY_NO_STORE,
    UNREADY_NOT_RUN,
    UNREADY_STALE,
    UNREADY_STOPPING,
    UNREADY_WORKER_ENDED,
    WORKER_RUNS,
    RunsSinceStart,
    flow_checks,
    store_check,
)
from connector.review import first_review
from connector.runtime import Runtime
from connector.scheduling import (
    FLOW_JOB,
    add_jobs,
    follow_clock,
    missed_cron_time,
    say_overruns,
    watch_clock,
)
from connector.scheduling import trigger as _trigger
from connector.storefile import failure, failure_text
from connector.storehealth import after_full_disk, file_identity

__all__ = [
    "READY_STARTING",
    "READY_SUCCEEDED",
    "STORE_DAMAGED",
    "STORE_GONE",
    "UNREADY_FAILING",
    "UNREADY_NOT_RUN",
    "UNREADY_NO_STORE",
    "UNREADY_STALE",
    "UNREADY_STOPPING",
    "UNREADY_WORKER_ENDED",
    "Daemon",
    "RunsSinceStart",
    # Importable from here too, as the tests import them.
    "_trigger",
    "first_review",
    "hangups_ignored",
    "missed_cron_time",
]

log = logging.getLogger("klantsync.daemon")

#: How long a stop waits for the in-flight batch before giving up on it (it stays queued).
STOP_GRACE_SECONDS = 8.0


class Daemon:
    """The service around one runtime.

    Args:
        rt: the opened runtime (config, store, keys, systems, engine).
        clock: wall clock in epoch seconds (webhook freshness windows, readiness).
        monotonic: a clock no one sets, against which the wall clock's steps back are
            noticed (:mod:`connector.clockstep`).
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = rt
        self.clock = clock
        self.monotonic = monotonic
        #: The scheduler while :meth:`serve` runs, and the look at the clocks it keeps.
        self.scheduler: Any = None
        self._clock_watch: ClockWatch | None = None
        self.metrics = Metrics()
        self.metrics.declare_flows(
            (flow.name, flow.source, flow.destinations) for flow in rt.config.flows
        )
        for flow in rt.config.flows:
            # From the store: an alert on the gauge's age must see a flow that has not
            # succeeded since before this start, not a series missing until it does.
            last = rt.store.last_success(flow.name)
            if last is not None:
                when = dt.datetime.fromisoformat(last).timestamp()
                self.metrics.last_success.labels(flow.name).set(when)
        #: The jobs whose runs were found outlasting their schedule, said once each.
        self._overran: set[str] = set()
        self.flow_locks = {flow.name: asyncio.Lock() for flow in rt.config.flows}
        self.stopping = asyncio.Event()
        self.started_at = clock()
        #: Kept in memory: readiness asks about this daemon's runs, not an earlier one's.
        self.runs_since_start = {flow.name: RunsSinceStart() for flow in rt.config.flows}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Flows with a run under way or waiting for its lock (by count): what a scheduled
        #: run that comes due meanwhile leaves the work to.
        self._runs_wanted: dict[str, int] = {}
        #: The type of the store failure a webhook, an admin call, a scheduled job or the job
        #: worker last met, until a write succeeds again: readiness then writes once itself
        #: (see :func:`connector.storehealth.write_once`), as reads alone pass on a store that
        #: refuses every write.
        self._store_failure: str | None = None
        #: The store file's identity as opened, which readiness compares with the file now at
        #: ``store.path`` (see :func:`connector.storehealth.file_identity`).
        self._store_file = file_identity(rt.store.path)
        #: Runs what webhooks and the admin API queue; its flows run through this daemon, and
        #: a store failure it meets counts for readiness as any other.
        self.jobs = JobWorker(rt, self, self.stopping, self.store_failed)
        #: The job worker's check for readiness: ``None`` before :meth:`serve` starts it,
        #: ``"ok"`` while its task runs, and once that ended while the daemon runs,
        #: :data:`UNREADY_WORKER_ENDED` with the type of what ended it (:meth:`_worker_ended`).
        self._worker_state: str | None = None
        for system in rt.systems.values():
            system.client.observer = self.metrics.observe_request
            system.client.rate_limit_observer = self.metrics.observe_rate_limited

    # -- flows --------------------------------------------------------------------------------

    async def run_flow(
        self, flow_name: str, *, full: bool = False, wait: bool = False
    ) -> FlowReport | None:
        """Run one flow; never two runs of it at once.

        A scheduled run finding a run of the flow under way (or waiting to start) is skipped
        (``None``): that run does its work. One finding only a targeted sync of a few people
        (a webhook's) waits for it: skipped, a nightly run lost its day to one customer's
        update. ``wait`` (a resync someone asked for) waits for a run under way to end and
        then runs, as asked (``--full`` included). ``None`` also when the daemon stops.
        """
        lock = self.flow_locks[flow_name]
        if self.stopping.is_set() or (flow_name in self._runs_wanted and not wait):
            why = "stopping" if self.stopping.is_set() else "already running"
            log.info("flow run skipped", extra={"flow": flow_name, "why": why})
            return None
        self._runs_wanted[flow_name] = self._runs_wanted.get(flow_name, 0) + 1
        try:
            return await self._run_flow_locked(flow_name, lock, full)
        finally:
            self._runs_wanted[flow_name] -= 1
            if not self._runs_wanted[flow_name]:
                del self._runs_wanted[flow_name]

    async def _run_flow_locked(
        self, flow_name: str, lock: asyncio.Lock, full: bool
    ) -> FlowReport | None:
        async with lock:
            if self.stopping.is_set():
                log.info("flow run skipped", extra={"flow": flow_name, "why": "stopping"})
                return None
            log.info("flow run started", extra={"flow": flow_name, "full": full})
            runs = self.runs_since_start[flow_name]
            try:
                (report,) = await self.rt.engine.sync(flow_name, full=full)
            except Exception:
                # A run that raised did not succeed either (cancellation is no run at all).
                runs.finished += 1
                runs.failed += 1
                self.metrics.observe_failed_run(flow_name)
                raise
            runs.finished += 1
            # The store's notion of success (its ``last_success``): a run with errors, dead
            # letters or deliveries left queued is not one.
            runs.failed += int(report.failed)
            if report.run_id is not None and cut_short(report, self.stopping):
                # Cut short by the stop (the pull ended early, deliveries left queued): the
                # next start resumes it, a flow on a cron included, which would otherwise
                # leave the rest until its next time (a nightly one: the next night). A run
                # that went to its end and failed on its own account (a dead letter) stays
                # failed: nothing is left to resume.
                self.rt.store.interrupt_run(report.run_id)
            self.metrics.observe_flow(report, self.clock())
            log.info(
                "flow run finished",
                extra={
                    "flow": flow_name,
                    "pulled": report.pulled,
                    "written": sum(d.written for d in report.destinations.values()),
                    "failed": report.failed,
                },
            )
            return report

    async def sync_subjects(
        self,
        system: str,
        subjects: list[tuple[str | None, str | None]],
        *,
        full: bool = False,
    ) -> SubjectsSynced | None:
        """Targeted sync of people of a source system (webhooks, a resync by e-mail);
        ``full`` offers again what a system refused for good.

        ``None`` when the daemon stops first, before or while it waits for a run of the
        system's flows to end, as :meth:`run_flow` says it: the engine delivers nothing then,
        and the job that asked is queued again for the next start.
        """
        from connector.targeted import sync_subjects

        flows = [f.name for f in self.rt.config.flows if f.source == system]
        if self.stopping.is_set():
            log.info("targeted sync skipped", extra={"system": system, "why": "stopping"})
            return None
        async with contextlib.AsyncExitStack() as held:
            # Each lock taken is released on the way out, also when the wait for the next
            # one is cancelled: a lock left held kept every later run of its flow waiting.
            for name in flows:
                await held.enter_async_context(self.flow_locks[name])
            if self.stopping.is_set():  # came while a run of the flows held them
                log.info("targeted sync skipped", extra={"system": system, "why": "stopping"})
                return None
            reports = await sync_subjects(self.rt, system, subjects, full=full)
        for report in reports:
            self.metrics.observe_flow(report, self.clock(), run=False)
        return SubjectsSynced(
            written=sum(d.written for r in reports for d in r.destinations.values()),
            failed=any(r.failed for r in reports),
            cut_short=any(cut_short(r, self.stopping) for r in reports),
        )

    # -- jobs ---------------------------------------------------------------------------------

    def queue(self, kind: str, params: dict[str, Any], *, durable: bool = False) -> int:
        """Queue a job for the worker (:mod:`connector.jobworker`) and wake it; ``durable``:
        synced to disk before it returns (:func:`connector.jobs.enqueue`)."""
        return self.jobs.queue(kind, params, durable=durable)

    async def queue_request(self, kind: str, email: str) -> int:
        """Queue a data subject request asked for through the admin API, an erasure
        recorded (and the person suppressed) first (:meth:`JobWorker.queue_request`)."""
        return await self.jobs.queue_request(kind, email)

    # -- health -------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the store answers (and, once it refused a write, takes one again), the
        job worker's task has not ended, no stop was asked for, and every flow succeeded
        since the run before its latest due one (twice its interval; a cron's on its own
        times).

        A flow that has never succeeded is judged by this daemon's runs: before its first run
        finishes it counts from the daemon's start (start-up does not flap), and once a run
        has finished without success it is not ready (a source down from the start shows at
        once, not after twice the interval). Each flow's check says why, in a fixed text.
        """
        checks: dict[str, Any] = {}
        store, successes = store_check(
            self.rt.store, self.rt.config.flows, self._store_file, self._store_failure
        )
        checks["store"] = store
        ready = store == "ok"
        if ready:
            # It answers and, after a failure, took a write again: the failure is over.
            self._store_failure = None
        # The flows' successes were read only where the store answered: judged by the store
        # alone, as a job worker that ended says nothing of the store or of the flows.
        store_answered = ready
        if self._worker_state is not None:
            checks["job_worker"] = self._worker_state
            ready = ready and self._worker_state == WORKER_RUNS
        if self.stopping.is_set():
            # The listeners stay up while the in-flight batch finishes (up to
            # STOP_GRACE_SECONDS), and a delivery is still queued then; but nothing runs it.
            checks["daemon"] = UNREADY_STOPPING
            ready = False
        now = self.clock()
        fresh, flows = flow_checks(
            self.rt.config.flows,
            successes if store_answered else None,
            self.runs_since_start,
            self.started_at,
            now,
        )
        checks.update(flows)
        return ready and fresh, checks

    def refresh_gauges(self) -> None:
        """Read queue and request counts from the store into the gauges
        (:func:`connector.gauges.refresh`)."""
        gauges.refresh(self.rt, self.metrics, self.clock, self.now)

    def now(self) -> dt.datetime:
        """The daemon's clock as an aware UTC moment (request deadlines are compared so)."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def housekeeping(self) -> None:
        """Retry open data subject requests; refresh gauges.

        A request waiting for its turn when the daemon stops does not start (as the job
        worker starts no job). The store refusing a retry's write is raised to
        :meth:`_scheduled`, which says so and makes the daemon not ready.
        """
        try:
            with contextlib.suppress(ImportError):
                from connector.dsr import DsrService

                try:
                    await DsrService(self.rt).retry_open(stopping=self.stopping)
                except KlantsyncError as exc:
                    log.warning("request retry failed", extra={"error": str(exc)})
        finally:
            self.refresh_gauges()

    async def compliance_review(self) -> None:
        """Warn about compliance gaps, agreements due for review and keys due for rotation;
        record the check (:func:`connector.review.compliance_review`)."""
        await review.compliance_review(self.rt, self.clock, self.now)

    async def retention_sweep(self) -> None:
        """Purge what the connector holds itself past its retention period (audited)."""
        from connector import retention

        try:
            report = await retention.sweep(self.rt.store, self.rt.config, self.rt.keyring)
        except KlantsyncError as exc:
            log.warning("retention sweep failed", extra={"error": str(exc)})
            return
        # What it could not purge (an audit prefix that fails verification, an access bundle
        # it cannot delete) is said every sweep until fixed, as `retention run` says it. The
        # errors name bundle ids and audit seqs, never a person.
        for error in report.errors:
            log.warning("retention sweep left something", extra={"error": error})

    # -- lifecycle ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def serve(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`stop`), then shut down cleanly."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from connector.httpapp import build_servers

        servers = build_servers(self)  # first: a port in use stops us before anything runs
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            # What operators send a daemon to reload, and a closed terminal sends: left to
            # its default it killed the process on the spot (no batch finished, nothing
            # flushed), and systemd takes that death for a clean exit, so Restart=on-failure
            # left the daemon down. There is no reload: said, and otherwise ignored.
            loop.add_signal_handler(signal.SIGHUP, _hangup)
        requeued, cut_off = jobs.requeue_cut_off(self.rt.store)
        # The daemon holds the store's sync lock (`klantsync run`): a run still marked
        # running is one a stopped process left, not one in progress.
        interrupted = self.rt.store.close_interrupted_runs()
        resumed = self.rt.store.interrupted_flows()
        audit.append(
            self.rt.store,
            "daemon.started",
            {"requeued_jobs": requeued, "failed_jobs": cut_off, "interrupted_runs": interrupted},
        )
        # What runs is what the audit trail says ran: a changed config leaves an entry.
        audit.record_config(self.rt.store, self.rt.config)
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        add_jobs(scheduler, self, now, resumed)
        say_overruns(scheduler, self.overran)
        scheduler.start()
        self.scheduler = scheduler
        self._clock_watch = ClockWatch(self.clock, self.monotonic)
        self._spawn(self._watch_clock())
        server_tasks = [self._spawn(server.serve(sockets=[sock])) for server, sock in servers]
        worker = self._spawn(self.jobs.run())
        self._worker_state = WORKER_RUNS
        worker.add_done_callback(self._worker_ended)
        log.info("daemon started", extra={"flows": len(self.rt.config.flows)})
        await self.stopping.wait()
        log.info("daemon stopping")
        # Nothing new starts; what runs is the daemon's own tasks (:meth:`_scheduled`),
        # waited for below. The scheduler is shut down only after them: its shutdown cancels
        # the jobs it still has running, and it logs each as failed, with a traceback.
        scheduler.pause()
        self.rt.engine.request_stop()
        running = [t for t in self._tasks if t not in server_tasks and t is not worker]
        pending = [*running, worker]
        if pending:
            _, still = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
            for task in still:
                task.cancel()
            if still:
                # A cancelled task ends at the loop's next turn, the job awaiting it after.
                await asyncio.wait(still, timeout=1)
        scheduler.shutdown(wait=False)
        for server, _sock in servers:
            server.should_exit = True
        await asyncio.wait(server_tasks, timeout=3)
        audit.append(self.rt.store, "daemon.stopped", {})
        self.rt.store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        log.info("daemon stopped")

    async def _watch_clock(self) -> None:
        """Look at the clocks every :data:`~connector.clockstep.WATCH_SECONDS` until the stop
        (:func:`connector.scheduling.watch_clock`)."""
        await watch_clock(self.stopping, self.check_clock)

    def check_clock(self) -> None:
        """Move the scheduled runs back with a wall clock set back (more than
        :data:`~connector.clockstep.STEP_TOLERANCE_SECONDS`, smaller steps adding up) since
        the runs last followed it, and say so once. Left as they were, every run came as
        much later, the retries of open requests included, while their deadlines kept
        running."""
        if self.scheduler is None or self._clock_watch is None:
            return
        follow_clock(self.scheduler, self._clock_watch)

    def _worker_ended(self, task: asyncio.Task[Any]) -> None:
        """Note the job worker's task ending, other than by the daemon's stop: an error it
        does not catch (it outlives store failures and the bugs jobs meet) ended it. Nothing
        said so, and ``/readyz`` stayed ready while jobs piled up: now it is not, and the
        end is logged once, by the error's type only (its text may hold what a job held)."""
        # Retrieved here in any case: left unretrieved, asyncio logged it with its text and
        # traceback when the task was collected.
        cancelled = task.cancelled()
        error = None if cancelled else task.exception()
        if error is None and self.stopping.is_set():
            return  # the stop's own doing: it returned, or the stop's grace ran out
        if error is not None:
            kind = type(error).__name__
        else:
            kind = "CancelledError" if cancelled else "returned"
        self._worker_state = f"{UNREADY_WORKER_ENDED} ({kind})"
        log.error("job worker ended", extra={"error": kind})

    async def _scheduled(
        self, work: Callable[[], Coroutine[Any, Any, Any]], what: str | None = None
    ) -> None:
        """What a scheduled job runs: ``work()`` as a task of the daemon's own, which a stop
        waits for (the in-flight batch finishes) instead of the scheduler cancelling it.

        A cancellation while the daemon stops is the scheduler's shutdown reaching a job
        that was still winding down: expected, so it ends the job quietly (apscheduler logs
        a job that raised it as an error, traceback and all). So does a store failure, once
        logged as what it means: the job's next run tries again. A bug SQLite reports (a
        constraint violated) is no store failure: it ends the job as any other bug does.
        """
        task = self._spawn(work())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
        except sqlite3.Error as exc:
            if not self.store_at_fault(exc):
                raise
            self.store_failed(exc, what or str(getattr(work, "__name__", "scheduled job")))

    def overran(self, job_id: str) -> None:
        """A scheduled job came due while its last run still went on: that time is skipped
        (a run that ends later does not start another at once; the next is on schedule).

        Counted for a flow (``klantsync_flow_runs_skipped``), and said once a job: a
        schedule tighter than a run takes (a first sync of many customers, a slow vendor)
        skips every time that comes due meanwhile, and each time is no news.
        """
        flow = job_id.removeprefix(FLOW_JOB) if job_id.startswith(FLOW_JOB) else None
        if flow is not None:
            self.metrics.flow_runs_skipped.labels(flow).inc()
        if job_id in self._overran:
            return
        self._overran.add(job_id)
        log.warning(
            "a run outlasts its schedule: the times due while it runs are skipped",
            extra={"flow": flow} if flow is not None else {"job": job_id},
        )

    async def _scheduled_flow(self, flow_name: str) -> None:
        try:
            await self._scheduled(lambda: self.run_flow(flow_name), f"flow {flow_name}")
        except KlantsyncError as exc:
            log.warning("flow run failed", extra={"flow": flow_name, "error": str(exc)})

    def store_at_fault(self, exc: sqlite3.Error) -> bool:
        """Whether an SQLite error is the store failing (a full disk, a failing one, a store
        it may not write, a lock held too long: :func:`connector.storefile.failure`), which
        trying again later may mend. Any other is a bug: the same work meets it again, so
        answering "try again later" (a 503) would be answered so for ever."""
        return failure(self.rt.config.store_path, exc) is not None

    def store_failed(self, exc: sqlite3.Error, during: str) -> None:
        """Log the store failing under ``during`` as what it means and what to do."""
        error = failure_text(self.rt.config.store_path, exc, after_full_disk(during))
        log.error("store failed", extra={"during": during, "error": error})
        self._store_failure = type(exc).__name__

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGTERM does)."""
        self.stopping.set()


def _hangup() -> None:
    log.warning("SIGHUP ignored: the daemon has no reload; restart it to apply a changed config")


@contextlib.contextmanager
def hangups_ignored() -> Iterator[None]:
    """SIGHUP logged and ignored while the daemon starts, until :meth:`Daemon.serve` takes
    it over on its loop.

    Opening the store takes seconds where it is migrated: a SIGHUP then took its default
    action and killed the daemon, which systemd counts as a clean exit (left down).
    """

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        _hangup()

    before = signal.signal(signal.SIGHUP, on_hangup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, before)
