"""The wall clock set back under the daemon: noticed, and the scheduled runs moved back."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connector.clockstep import ClockWatch, reschedule
from connector.config import cron_trigger


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_wall_clock_set_back_is_measured_against_the_monotonic_one() -> None:
    """The step back is what the monotonic clock advanced beyond the wall clock; a wall
    clock keeping pace, or set forward, reads no step."""
    wall, steady = Clock(1_800_000_000.0), Clock(500.0)
    watch = ClockWatch(wall, steady)
    wall.now += 30
    steady.now += 30
    assert watch.step_back() == 0.0
    wall.now -= 3600
    steady.now += 30
    assert watch.step_back() == 3630.0
    wall.now += 7200
    steady.now += 30
    assert watch.step_back() == 0.0


def test_small_steps_back_add_up_until_together_they_pass_the_tolerance() -> None:
    """A clock stepped back 40 s at each look reads no step at the first (a run 40 s late
    matters to no one) but 80 s at the second, all of it; then nothing until it grows
    again. Each step left alone on its own, the runs drifted later without bound."""
    wall, steady = Clock(1_800_000_000.0), Clock(500.0)
    watch = ClockWatch(wall, steady)
    wall.now -= 10
    steady.now += 30
    assert watch.step_back() == 0.0
    wall.now -= 10
    steady.now += 30
    assert watch.step_back() == 80.0
    wall.now += 30
    steady.now += 30
    assert watch.step_back() == 0.0


@pytest.fixture
async def scheduler() -> AsyncIterator[Any]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    started = AsyncIOScheduler(timezone=dt.UTC)
    started.start(paused=True)  # the jobs get their times; none runs
    yield started
    started.shutdown(wait=False)


async def _nothing() -> None:
    """A job that is never run."""


async def test_an_interval_job_keeps_its_place_in_real_time_and_a_cron_job_its_own_times(
    scheduler: Any,
) -> None:
    """Set back an hour (and 30 s passing), a 15-minute job due in 10 minutes is due in 10
    minutes of the new clock, not 70; a "*/15" cron job comes at its quarter an hour
    earlier; a nightly one whose next time is still its next stays as it is."""
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(minutes=10)
    scheduler.add_job(_nothing, "interval", minutes=15, id="every", next_run_time=soon)
    scheduler.add_job(_nothing, cron_trigger("*/15 * * * *"), id="quarter")
    scheduler.add_job(_nothing, cron_trigger("0 3 * * *"), id="nightly")
    before = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    moved = reschedule(scheduler, 3630.0)
    after = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    assert after["every"] == soon - dt.timedelta(seconds=3630)
    assert after["quarter"] == before["quarter"] - dt.timedelta(hours=1)
    assert after["nightly"] == before["nightly"]
    assert moved == 2
