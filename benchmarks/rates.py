"""Rates under a rolling limit: what every benchmark judged against a vendor's ceiling uses."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

__all__ = ["rolling_rate"]


def rolling_rate(
    times: Sequence[float],
    start: float,
    end: float,
    window: float,
    weights: Sequence[float] | None = None,
) -> float:
    """Events (or their ``weights``) per second in a trailing ``window``, sampled every 50 ms.

    A client under a rolling limit (HubSpot: 190 calls in any 10 s) may spend a window's
    calls in a burst and then wait for the window to roll on. Counted as events over a span,
    the same behaviour measured anywhere from 80% to 110% of the ceiling depending on whether
    the span ended just before or just after a burst; the count in every trailing window
    is what the limit itself judges, and is the same wherever the span ends. Samples are
    taken at every 50 ms from one window after ``start`` to ``end``. A span shorter than one
    window is judged by the one trailing window that holds it all: events / ``window``.
    (Counted over the span instead, a client that spent one window's allowance in its first
    second would read ten times a 10 s limit's ceiling.)
    """
    pairs = sorted(
        (t, 1.0 if weights is None else weights[i])
        for i, t in enumerate(times)
        if start <= t <= end
    )
    ordered = [t for t, _ in pairs]
    total = [0.0, *accumulate(w for _, w in pairs)]
    span = end - start
    if span < window:
        return total[-1] / window
    samples: list[float] = []
    t = start + window
    while t <= end + 1e-9:
        arrived = (
            total[bisect.bisect_right(ordered, t)] - total[bisect.bisect_right(ordered, t - window)]
        )
        samples.append(arrived / window)
        t += 0.05
    return sum(samples) / len(samples)
