"""Client-side pacing against a vendor's rolling window: counted from when calls are answered."""

from __future__ import annotations

import random

from connector.ratelimit import RateLimit, RateLimiter, RollingWindow
from tests.conftest import FakeClock


async def test_a_settled_call_counts_from_its_answer() -> None:
    """Two per 10 s, answered 0.5 s after sending: the third waits 10 s from the first answer."""
    clock = FakeClock()
    start = clock()

    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)

    limiter = RateLimiter(RateLimit(2, 10), clock=clock, sleep=fake_sleep)
    for _ in range(2):
        taken = await limiter.acquire()
        clock.advance(0.5)
        limiter.settle(taken)
    await limiter.acquire()
    assert 10.5 <= clock() - start <= 10.51  # counted from sending, it would be 10.0


async def test_a_call_not_yet_answered_holds_its_slot_past_the_window() -> None:
    """A vendor counts a call from its arrival, any time up to its answer, so a call still
    unanswered after a window holds its slot until it is answered, and then for a window
    from its answer. One call per second: A is taken at 0, reaches the vendor at 0.9 and is
    answered at 1.5 or later; B, asked for at 1.0, must not go before the vendor's window
    lets A go, where it went at 1.0 into a 429."""
    clock = FakeClock(0.0)
    vendor = RollingWindow(RateLimit(1, 1.0))
    answered: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)
        if not answered and clock() >= 1.5:  # A's answer comes back by now
            limiter.settle(a_taken)
            answered.append(clock())

    limiter = RateLimiter(RateLimit(1, 1.0), clock=clock, sleep=fake_sleep)
    a_taken = await limiter.acquire()
    clock.advance(1.0)  # A is still on its way
    b_taken = await limiter.acquire()
    assert vendor.try_acquire(0.9)  # A arrives
    assert vendor.try_acquire(b_taken), f"B sent at {b_taken}, A still in the vendor's window"
    assert b_taken >= answered[0] + 1.0  # counted from A's answer


def test_window_move_keeps_events_in_order() -> None:
    """An event moved to a later time still expires in time order."""
    window = RollingWindow(RateLimit(3, 10))
    for at in (0.0, 1.0, 2.0):
        assert window.try_acquire(at)
    window.move(0.0, 5.0)  # answered late
    window.move(1.0, 3.0)  # answered early
    assert window.remaining(12.5) == 1  # 2.0 expired; 3.0 and 5.0 still count
    assert window.remaining(15.5) == 3


async def test_paced_calls_never_overrun_the_vendor_window_whatever_the_latency() -> None:
    """With calls arriving late and out of order, the vendor's window never overflows."""
    rng = random.Random(5)
    clock = FakeClock()
    vendor = RollingWindow(RateLimit(19, 1))

    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)

    limiter = RateLimiter(RateLimit(19, 1), clock=clock, sleep=fake_sleep)
    in_flight: list[tuple[float, float, float]] = []  # (arrives, answered, taken)
    rejected = 0
    for _ in range(2000):
        taken = await limiter.acquire()
        transit = rng.uniform(0.0, 0.3)
        in_flight.append((taken + transit, taken + transit + rng.uniform(0.0, 0.05), taken))
        # Let time pass a little, delivering arrivals and answers that are due, in time order.
        clock.advance(rng.uniform(0.0, 0.02))
        for arrives, answered, taken_at in sorted(c for c in in_flight if c[1] <= clock()):
            rejected += not vendor.try_acquire(arrives)
            limiter.settle(taken_at)
            in_flight.remove((arrives, answered, taken_at))
        while len(in_flight) >= 4:  # at most four calls in flight, as the engine runs them
            clock.advance(0.01)
            for arrives, answered, taken_at in sorted(c for c in in_flight if c[1] <= clock()):
                rejected += not vendor.try_acquire(arrives)
                limiter.settle(taken_at)
                in_flight.remove((arrives, answered, taken_at))
    assert rejected == 0


async def test_a_slot_given_back_unused_is_not_counted() -> None:
    """A caller that took a slot and then sent nothing (the vendor's window closed while it
    queued) gives it back: the next caller takes it at once, and nothing is counted."""
    clock = FakeClock()
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.advance(seconds)

    limiter = RateLimiter(RateLimit(1, 10), clock=clock, sleep=fake_sleep)
    limiter.release(await limiter.acquire())
    limiter.settle(await limiter.acquire())
    assert waited == []
    assert limiter.window.remaining(clock()) == 0
