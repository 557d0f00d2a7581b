"""Rolling-window rate limits, shared by the client-side limiter and the sandboxes' enforcers.

Vendors state limits as "N requests per rolling W seconds" (HubSpot 190/10 s, Pipedrive 40/2 s).
Both sides of the wire use the same :class:`RollingWindow`, so a sandbox enforces exactly the
rule the client paces itself by. The client counts each call from when it was answered (see
:meth:`RateLimiter.settle`), which is what keeps it under the vendor's window in practice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter", "RollingWindow"]


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` calls in any rolling window of ``per_seconds``."""

    requests: int
    per_seconds: float


class RollingWindow:
    """Counts events in a rolling window; answers whether one more fits and when it will."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._events: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.limit.per_seconds
        while self._events and self._events[0] <= horizon:
            self._events.popleft()

    def try_acquire(self, now: float) -> bool:
        """Record an event at ``now`` if the window has room; return whether it did."""
        self._expire(now)
        if len(self._events) < self.limit.requests:
            self._events.append(now)
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until one more event would fit (0 if it fits now)."""
        self._expire(now)
        if len(self._events) < self.limit.requests:
            return 0.0
        return max(0.0, self._events[0] + self.limit.per_seconds - now)

    def remaining(self, now: float) -> int:
        """Events still allowed in the current window."""
        self._expire(now)
        return self.limit.requests - len(self._events)

    def move(self, then: float, now: float) -> None:
        """Count the event recorded at ``then`` as happening at ``now`` instead."""
        with contextlib.suppress(ValueError):  # already expired: count it again, to be safe
            self._events.remove(then)
        if not self._events or now >= self._events[-1]:
            self._events.append(now)
        else:
            bisect.insort(self._events, now)


class RateLimiter:
    """Async limiter: ``await limiter.acquire()`` waits until the window has room.

    ``clock`` and ``sleep`` are injectable so tests never wait for real.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.window = RollingWindow(limit)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a slot, then take it. Callers are served in arrival order.

        Returns:
            When the slot was taken; hand it to :meth:`settle` when the call is answered.
        """
        async with self._lock:
            while True:
                now = self._clock()
                if self.window.try_acquire(now):
                    return now
                await self._sleep(self.window.wait_time(self._clock()) + 0.001)

    def settle(self, taken: float) -> None:
        """The call paced by the slot taken at ``taken`` has been answered: count it from now.

        A vendor counts a call when it *arrives*, some unknown time after it was sent (and
        not in the order sent, when calls run concurrently), so a window counted from send
        times can let through a call the vendor's window has no room for: a 429. Counting
        each call from when its answer came back, an upper bound on its arrival, keeps the
        client's window at least as full as the vendor's whatever the latency and its
        jitter. The price is one round trip per slot: 190 calls per 10.05 s instead of 10.
        """
        self.window.move(taken, self._clock())
