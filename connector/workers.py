"""A fixed number of workers taking calls from one queue: for vendors that limit connections.

Mailchimp allows an account ten connections at once and takes one call per member. Ten
slots guarded by a semaphore, with a task per member waiting on it, keep ten calls in flight
too, but every freed slot then wakes *another* task, which runs only on a later turn of the
event loop: on a loop busy with a sync, a wait of milliseconds per call, with the connection
idle meanwhile. Here a worker that finishes a call takes the next job itself, in the same
turn, and its connection goes straight back to work.

Jobs from several callers (the engine runs several batches at once) share the queue, in
order; each caller gets its own results, in the order it gave its jobs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["WorkerPool", "gather_or_cancel"]

T = TypeVar("T")

Job = tuple[Callable[[], Awaitable[Any]], "asyncio.Future[Any]"]


class WorkerPool(Generic[T]):
    """At most ``size`` jobs running at once, each worker taking the next job as it finishes.

    Workers exist only while there is work: they start when jobs arrive and end when the
    queue is empty, so an idle pool holds no task.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._queue: deque[Job] = deque()
        #: The workers that will still take a job. One leaves the set itself, in the turn it
        #: finds the queue empty (a done callback came a turn later: a caller arriving in
        #: between found the pool full, started no worker, and waited for ever).
        self._workers: set[asyncio.Task[None]] = set()

    async def run_all(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run ``jobs``; their results in order. The first exception is raised once all end.

        Cancelling the caller cancels its jobs that have not started; started ones finish.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[T]] = [loop.create_future() for _ in jobs]
        self._queue.extend(zip(jobs, futures, strict=True))
        while len(self._workers) < self.size and self._queue:
            worker = asyncio.create_task(self._work())
            self._workers.add(worker)
            # For a worker cancelled before it ran: it never reaches its own leaving.
            worker.add_done_callback(self._workers.discard)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def _work(self) -> None:
        me = asyncio.current_task()
        try:
            await self._take_jobs()
        finally:
            # In the turn the queue was seen empty: a job queued after that finds the pool
            # short of this worker, and starts another.
            if me is not None:
                self._workers.discard(me)

    async def _take_jobs(self) -> None:
        while self._queue:
            job, future = self._queue.popleft()
            if future.done():  # its caller was cancelled
                continue
            try:
                result = await job()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as exc:
                # Handed to the caller, which raises it once its jobs end; the worker goes on
                # to the next job. One that stopped here (an interrupt, the process being
                # stopped) would leave its caller, and every caller of the jobs it had not
                # taken yet, waiting for ever.
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)


async def gather_or_cancel(calls: Sequence[Callable[[], Awaitable[T]]], *, limit: int) -> list[T]:
    """Run ``calls``, at most ``limit`` at once; their results in order, or the first failure.

    Unlike ``asyncio.gather`` over a semaphore, the first failure ends the rest: no call
    starts after it, and those running are cancelled and have ended when it is raised. A
    refused credential (a 401) stops its caller's work, and the calls beside it do not run
    on, unowned, each earning its own 401 after the run has stopped.
    """
    gate = asyncio.Semaphore(max(1, limit))
    failures: list[BaseException] = []

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            if failures:
                raise asyncio.CancelledError  # not started: an earlier call failed
            try:
                return await call()
            except Exception as exc:
                failures.append(exc)
                raise

    tasks = [asyncio.ensure_future(run(call)) for call in calls]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for those done; the caller's cancellation reaches the rest
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise failures[0]
    return [task.result() for task in tasks]
