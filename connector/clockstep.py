"""The wall clock set back under the running daemon: noticed, and the scheduled runs moved
back with it.

APScheduler decides what is due by ``datetime.now`` and only sleeps on the loop's monotonic
timer, so a clock set back an hour (by hand, or NTP stepping it) left every run it had
planned an hour further off, the 15 minutes' retries of open requests included. The daemon
compares the wall clock's advance with the monotonic clock's between looks
(:class:`ClockWatch`) and, on a step back, moves each job's next run back by as much
(:func:`reschedule`): it comes after as much real time as it would have.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

__all__ = ["STEP_TOLERANCE_SECONDS", "WATCH_SECONDS", "ClockWatch", "reschedule"]

#: A step back up to this is left alone until more such steps make it larger: a run a
#: minute late matters to no one, and the jobs are not moved for every small NTP step. (A
#: look delayed by a busy loop reads no step: both clocks are read at the look.)
STEP_TOLERANCE_SECONDS = 60.0
#: How often the daemon looks at its clocks.
WATCH_SECONDS = 30.0


class ClockWatch:
    """Compares the wall clock's advance with the monotonic clock's since the schedule last
    followed it.

    Steps back within :data:`STEP_TOLERANCE_SECONDS` add up until together they pass it: a
    host whose clock is stepped back half a minute at a time (``ntpdate`` from cron on a
    clock running fast) had each step left alone, and the runs drifted hours late over
    days.

    Args:
        wall: wall clock in epoch seconds (the daemon's).
        monotonic: a clock no one sets (``time.monotonic``).
    """

    def __init__(self, wall: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.wall = wall
        self.monotonic = monotonic
        #: The wall clock's lead over the monotonic one when the schedule last followed it.
        self._offset = wall() - monotonic()

    def step_back(self) -> float:
        """Seconds the wall clock was set back since the schedule last followed it, once
        more than :data:`STEP_TOLERANCE_SECONDS` (the schedule is then taken to follow it
        again); 0 before that, and when it was set forward (the scheduler runs what came
        due then by itself)."""
        offset = self.wall() - self.monotonic()
        back = self._offset - offset
        if back < 0:
            self._offset = offset
            return 0.0
        if back <= STEP_TOLERANCE_SECONDS:
            return 0.0
        self._offset = offset
        return back


def reschedule(scheduler: Any, step: float) -> int:
    """Move every scheduled job's next run back by ``step`` seconds of the wall clock; how
    many moved.

    An interval's job keeps its place in real time (its later runs follow from this one);
    a cron's goes to its first own time at or after that place, so "*/15" comes within 15
    minutes again, and a nightly run the step crossed does not run twice. A paused job
    (no next run) stays as it is.
    """
    from apscheduler.triggers.interval import IntervalTrigger

    back = dt.timedelta(seconds=step)
    moved = 0
    for job in scheduler.get_jobs():
        if job.next_run_time is None:
            continue
        due = job.next_run_time - back
        if not isinstance(job.trigger, IntervalTrigger):
            due = job.trigger.get_next_fire_time(None, due)
        if due is not None and due != job.next_run_time:
            scheduler.modify_job(job.id, next_run_time=due)
            moved += 1
    return moved
