"""Rolling-window rate limits, shared by the client-side limiter and the sandboxes' enforcers.

Vendors state limits as "N requests per rolling W seconds" (HubSpot 190/10 s, Pipedrive 40/2 s).
Both sides of the wire use the same :class:`RollingWindow`, so a sandbox enforces exactly the
rule the client paces itself by. The client counts each call from when it was answered (see
:meth:`RateLimiter.settle`), and a call not yet answered as in the window however long it
takes, which is what keeps it under the vendor's window in practice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import Counter, deque
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

    def wait_time(self, now: float, held: int = 0) -> float:
        """Seconds until one more event would fit (0 if it fits now).

        ``held`` more events count besides those recorded, and do not expire (calls not yet
        answered); it must be below the limit, or no wait would do.
        """
        self._expire(now)
        # The events that must expire first: all but the room left beside those held.
        beyond = len(self._events) + held - self.limit.requests
        if beyond < 0:
            return 0.0
        return max(0.0, self._events[beyond] + self.limit.per_seconds - now)

    def remaining(self, now: float) -> int:
        """Events still allowed in the current window."""
        self._expire(now)
        return self.limit.requests - len(self._events)

    def move(self, then: float, now: float) -> None:
        """Count the event recorded at ``then`` as happening at ``now`` instead."""
        with contextlib.suppress(ValueError):  # already expired: count it again, to be safe
            self._events.remove(then)
        self.record(now)

    def record(self, at: float) -> None:
        """Count an event at ``at``, whether or not the window has room for it."""
        if not self._events or at >= self._events[-1]:
            self._events.append(at)
        else:
            bisect.insort(self._events, at)


class RateLimiter:
    """Async limiter: ``await limiter.acquire()`` waits until the window has room.

    The window holds the calls answered, each from its answer (see :meth:`settle`); a call
    taken and not yet answered holds its slot until it is, however long that takes.
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
        #: When each call not yet answered took its slot (a count per time).
        self._unanswered: Counter[float] = Counter()
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
                held = self._unanswered.total()
                if self.window.remaining(now) > held:
                    self._unanswered[now] += 1
                    return now
                await self._sleep(self._wait(now, held) + 0.001)

    def _wait(self, now: float, held: int) -> float:
        """Seconds until a slot may be free, ``held`` of them taken by calls not answered."""
        if held >= self.window.limit.requests:
            # Every slot waits for an answer, which no clock brings: look again a window
            # later. An answer within it frees its slot a window after it, so no later.
            return self.window.limit.per_seconds
        return self.window.wait_time(now, held)

    def settle(self, taken: float) -> None:
        """The call paced by the slot taken at ``taken`` has been answered: count it from now.

        A vendor counts a call when it *arrives*, some unknown time after it was sent (and
        not in the order sent, when calls run concurrently), so a window counted from send
        times can let through a call the vendor's window has no room for: a 429. Counting
        each call from when its answer came back, an upper bound on its arrival, keeps the
        client's window at least as full as the vendor's whatever the latency and its
        jitter. The price is one round trip per slot: 190 calls per 10.05 s instead of 10.
        Until then the call holds its slot, however long past the window it is answered:
        the vendor counts it from its arrival, any time up to the answer.

        Args:
            taken: what :meth:`acquire` returned for the call.
        """
        if self._unanswered[taken] > 1:
            self._unanswered[taken] -= 1
        else:
            self._unanswered.pop(taken, None)  # none left (or settled twice: counted anyway)
        self.window.record(self._clock())

    def release(self, taken: float) -> None:
        """The slot taken at ``taken`` was not used: no call was sent, so it is given back
        uncounted (the vendor saw nothing), for the next caller.

        Args:
            taken: what :meth:`acquire` returned.
        """
        if self._unanswered[taken] > 1:
            self._unanswered[taken] -= 1
        else:
            self._unanswered.pop(taken, None)
