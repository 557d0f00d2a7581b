"""Rolling-window rate limits, shared by the client-side limiter and the sandboxes' enforcers.

Vendors state limits as "N requests per rolling W seconds" (HubSpot 190/10 s, Pipedrive 40/2 s).
Both sides of the wire use the same :class:`RollingWindow`, so a sandbox enforces exactly the
rule the client paces itself by.
"""

from __future__ import annotations

import asyncio
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

    async def acquire(self) -> None:
        """Wait for a slot, then take it. Callers are served in arrival order."""
        async with self._lock:
            while not self.window.try_acquire(self._clock()):
                await self._sleep(self.window.wait_time(self._clock()) + 0.001)

    async def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (after a vendor's 429 with a wait hint)."""
        async with self._lock:
            await self._sleep(seconds)
