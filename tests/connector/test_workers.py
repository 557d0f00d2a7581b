"""WorkerPool: a fixed number of workers over one queue (connector/workers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from connector.workers import WorkerPool


def _job(
    n: int, gate: asyncio.Event, running: list[int], peak: list[int]
) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        running.append(n)
        peak[0] = max(peak[0], len(running))
        await gate.wait()
        running.remove(n)
        return n * 10

    return run


async def test_results_in_order_and_never_more_than_size_at_once() -> None:
    pool: WorkerPool[int] = WorkerPool(3)
    gate, running, peak = asyncio.Event(), [], [0]
    first = asyncio.create_task(pool.run_all([_job(n, gate, running, peak) for n in range(5)]))
    second = asyncio.create_task(pool.run_all([_job(n, gate, running, peak) for n in (7, 8)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(running) == 3  # three workers busy, four jobs waiting in the queue
    gate.set()
    assert await first == [0, 10, 20, 30, 40]
    assert await second == [70, 80]
    assert peak[0] == 3


async def test_one_worker_runs_jobs_in_order_and_ends_when_the_queue_is_empty() -> None:
    """One worker, two jobs, in order; an idle pool holds no task."""
    pool: WorkerPool[str] = WorkerPool(1)
    order: list[str] = []

    async def job(name: str) -> str:
        order.append(name)
        return name

    assert await pool.run_all([lambda: job("a"), lambda: job("b")]) == ["a", "b"]
    assert order == ["a", "b"] and not pool._workers


async def test_an_exception_reaches_its_caller_after_the_others_finish() -> None:
    pool: WorkerPool[int] = WorkerPool(2)
    done: list[int] = []

    async def ok(n: int) -> int:
        done.append(n)
        return n

    async def bad() -> int:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await pool.run_all([lambda: ok(1), bad, lambda: ok(2)])
    assert sorted(done) == [1, 2]


async def test_a_cancelled_caller_leaves_its_waiting_jobs_unstarted() -> None:
    pool: WorkerPool[int] = WorkerPool(1)
    gate, running, peak = asyncio.Event(), [], [0]
    started: list[int] = []

    async def later() -> int:
        started.append(2)
        return 2

    caller = asyncio.create_task(pool.run_all([_job(1, gate, running, peak), later]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == []


class _Stopped(BaseException):
    """Not an ``Exception``: what an interrupt or a stopping process raises in a job."""


async def test_a_job_that_raises_past_exception_still_settles_every_caller() -> None:
    """A job raising something that is not an ``Exception`` is its caller's to raise; the
    worker goes on, so neither that caller nor the jobs queued behind it wait for ever."""
    pool: WorkerPool[int] = WorkerPool(1)

    async def stopped() -> int:
        raise _Stopped

    async def fine() -> int:
        return 1

    first = asyncio.create_task(pool.run_all([stopped, fine]))
    second = asyncio.create_task(pool.run_all([fine]))
    done, _ = await asyncio.wait({first, second}, timeout=5)
    assert done == {first, second}  # before the fix: neither ever finished
    with pytest.raises(_Stopped):
        first.result()
    assert second.result() == [1]


async def test_a_caller_arriving_in_the_turn_the_last_worker_ends_starts_a_worker() -> None:
    """The last worker leaves the pool in the turn it finds the queue empty: a second caller
    (another delivery batch) woken in that very turn starts a worker of its own, and its jobs
    run. Left in the pool until a done callback a turn later, the worker made the pool look
    full: the second caller started none, and waited for ever."""
    pool: WorkerPool[str] = WorkerPool(1)  # Mailchimp with max_concurrency = 1
    go = asyncio.Event()
    ran: list[str] = []

    async def first_job() -> str:
        go.set()  # the other caller is woken in the same turn the worker ends
        return "a"

    async def second_job() -> str:
        ran.append("b")
        return "b"

    async def second_caller() -> list[str]:
        await go.wait()
        return await pool.run_all([second_job])

    other = asyncio.create_task(second_caller())
    for _ in range(2):
        await asyncio.sleep(0)
    assert await pool.run_all([first_job]) == ["a"]
    for _ in range(50):
        await asyncio.sleep(0)
    try:
        assert ran == ["b"] and other.done()
        assert other.result() == ["b"] and not pool._workers
    finally:
        other.cancel()
