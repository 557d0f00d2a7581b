"""What the daemon's scheduler runs, and when: each flow on its schedule (at start, or on a
cron at its times unless a time passed while the daemon was down or a stop cut its run
short), the housekeeping jobs, the scheduled runs moved back with a wall clock set back
(:mod:`connector.clockstep`), and the times skipped while a run outlasts its schedule
(:func:`say_overruns`).

The daemon (:meth:`connector.daemon.Daemon.serve`) makes the scheduler and starts it; the
jobs run through the daemon's own tasks (``Daemon._scheduled``), which a stop waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connector.clockstep import WATCH_SECONDS, ClockWatch, reschedule
from connector.config import Schedule, cron_trigger
from connector.review import first_review

if TYPE_CHECKING:
    from connector.daemon import Daemon

__all__ = [
    "FLOW_JOB",
    "add_jobs",
    "follow_clock",
    "missed_cron_time",
    "say_overruns",
    "trigger",
    "watch_clock",
]

log = logging.getLogger("klantsync.daemon")

#: A flow's job id: this, then the flow's name.
FLOW_JOB = "flow:"

#: What apscheduler warns of each time a job comes due while its last run still goes on
#: (``max_instances``): the daemon says it in its own words instead (:func:`say_overruns`).
_SKIPPED = "maximum number of running instances reached"


class _SaidByTheDaemon(logging.Filter):
    """Drops apscheduler's warning of a due time skipped (:data:`_SKIPPED`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _SKIPPED not in str(record.msg)


_SAID_BY_THE_DAEMON = _SaidByTheDaemon()


def add_jobs(scheduler: Any, daemon: Daemon, now: dt.datetime, resumed: set[str]) -> None:
    """Add the daemon's jobs to ``scheduler`` (not started yet): each flow's, and the
    housekeeping, compliance review and retention sweep; ``resumed`` names the flows whose
    latest run a stop cut short."""
    last_runs = daemon.rt.store.last_runs()
    for flow in daemon.rt.config.flows:
        # A flow "every 15m" runs at start; one on a cron runs at its times only (a
        # nightly "0 3 * * *" must not run at whatever hour the daemon was started),
        # but for a run a stop cut short, resumed now: left to its next time, the rest
        # of a nightly pull, and what the run left queued, waited a day. So is one whose
        # time came while the daemon was down (a host rebooted across it): once now.
        last_started = last_runs[flow.name][0] if flow.name in last_runs else None
        missed = missed_cron_time(flow.parsed_schedule, last_started, now)
        if missed:
            log.info("flow run missed while stopped: run now", extra={"flow": flow.name})
        on_cron = flow.parsed_schedule.cron is not None and flow.name not in resumed and not missed
        at_start = {} if on_cron else {"next_run_time": now}
        scheduler.add_job(
            daemon._scheduled_flow,
            trigger(flow.parsed_schedule),
            args=[flow.name],
            id=f"{FLOW_JOB}{flow.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            **at_start,
        )
    # The housekeeping jobs run however late the loop lets them start: with APScheduler's
    # default grace of one second, a sync holding the loop for two skipped the day's
    # review (or the 15 minutes' request retries, or the sweep) altogether.
    late = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
    scheduler.add_job(
        daemon._scheduled,
        "interval",
        args=[daemon.housekeeping],
        minutes=15,
        id="housekeeping",
        name="housekeeping",
        jitter=30,
        next_run_time=now,
        **late,
    )
    scheduler.add_job(
        daemon._scheduled,
        "interval",
        args=[daemon.compliance_review],
        hours=24,
        id="compliance",
        name="compliance review",
        next_run_time=first_review(daemon.rt.store, now),
        **late,
    )
    scheduler.add_job(
        daemon._scheduled,
        "interval",
        args=[daemon.retention_sweep],
        hours=6,
        id="retention",
        name="retention sweep",
        jitter=300,
        next_run_time=now,
        **late,
    )


def say_overruns(scheduler: Any, overran: Callable[[str], None]) -> None:
    """Call ``overran`` with a job's id each time it comes due while its last run still goes
    on (the time is skipped: no job runs twice at once), in place of apscheduler's warning.

    apscheduler warned at each such time, naming the job and its next time: a flow "every
    1m" whose first sync took an hour logged sixty warnings, each one different, so a log
    reader could not tell one tight schedule from sixty problems.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES

    # addFilter adds a filter once, however many daemons a process starts (the tests').
    logging.getLogger("apscheduler.scheduler").addFilter(_SAID_BY_THE_DAEMON)
    scheduler.add_listener(lambda event: overran(event.job_id), EVENT_JOB_MAX_INSTANCES)


async def watch_clock(stopping: asyncio.Event, look: Callable[[], None]) -> None:
    """Call ``look`` (the daemon's look at its clocks) every
    :data:`~connector.clockstep.WATCH_SECONDS` until ``stopping`` is set."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), WATCH_SECONDS)
        if stopping.is_set():
            break
        try:
            look()
        except Exception as exc:
            # Left to end the task, one failure stopped every later look, and nothing
            # said so but asyncio's note when the task was collected. Said by the
            # error's type only; the next look tries again.
            log.error("clock watch failed", extra={"error": type(exc).__name__})


def follow_clock(scheduler: Any, watch: ClockWatch) -> None:
    """Move the scheduled runs back with a wall clock set back (more than
    :data:`~connector.clockstep.STEP_TOLERANCE_SECONDS`, smaller steps adding up) since
    the runs last followed it, and say so once."""
    step = watch.step_back()
    if not step:
        return
    moved = reschedule(scheduler, step)
    log.warning(
        "wall clock set back: scheduled runs moved back with it",
        extra={"seconds": round(step), "jobs": moved},
    )


def trigger(schedule: Any) -> Any:
    from apscheduler.triggers.interval import IntervalTrigger

    if schedule.interval_seconds is not None:
        # Jitter spreads flows of many instances; a tenth of the interval, at most a minute.
        jitter = min(60, int(schedule.interval_seconds / 10))
        return IntervalTrigger(seconds=schedule.interval_seconds, jitter=jitter or None)
    return cron_trigger(schedule.cron)


def missed_cron_time(schedule: Schedule, last_started: str | None, now: dt.datetime) -> bool:
    """Whether a flow on a cron came due, at ``now``, after its latest run started
    (``last_started``, as the store records it): a time of it passed with no daemon up.

    The scheduler knows only the times to come: a host down across the nightly run lost
    that day's, as anacron and systemd's ``Persistent=`` would not. However many times
    passed, the flow runs once for them (its next time is its own). A flow that has never
    run (new in the config) has missed nothing: its first time comes.
    """
    if schedule.cron is None or last_started is None:
        return False
    since = dt.datetime.fromisoformat(last_started)
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    # The store keeps whole seconds: the run the scheduler started at 03:00:00.4 reads
    # 03:00:00, and a time at or before it is the one that run was for.
    after = since + dt.timedelta(seconds=1)
    due = cron_trigger(schedule.cron).get_next_fire_time(None, after)
    return due is not None and due <= now
