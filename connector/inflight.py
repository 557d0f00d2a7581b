"""Which subjects each system has a write in flight for, in this process.

A sync checks the suppression list before it sends a batch, but the batch can wait seconds in
the rate limiter or on the network after that check. An erasure recorded in that window would
delete the person, verify them absent, and then see the batch re-create them. The engine holds
a batch's subjects here from before its suppression check until its answer is settled; an
erasure, once its suppression entry is written, waits here before it deletes anything in a
system. Either the batch was checked after the entry (and drops the person) or the erasure
waits for it to land (and deletes what it wrote). Another process's sync cannot be seen here;
the engine checks the list again after each write for that (see ``Engine._deliver_batch``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["InFlight"]


class InFlight:
    """Subjects with a write in flight, per system; erasures wait until theirs have landed."""

    def __init__(self) -> None:
        self._held: dict[str, Counter[str]] = {}
        self._changed = asyncio.Event()
        #: How many :meth:`landed` calls are waiting now (what tests wait on).
        self.waiting = 0

    @contextmanager
    def writing(self, system: str, subject_ids: Sequence[str]) -> Iterator[None]:
        """Hold ``subject_ids`` as being written to ``system`` for the ``with`` block."""
        held = self._held.setdefault(system, Counter())
        held.update(subject_ids)
        try:
            yield
        finally:
            held.subtract(subject_ids)
            for sid in subject_ids:
                if held[sid] <= 0:
                    del held[sid]
            # Wake every waiter; each looks again at what it waits for.
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def busy(self, system: str, subject_ids: Iterable[str]) -> bool:
        """Whether any of ``subject_ids`` has a write to ``system`` in flight."""
        held = self._held.get(system)
        return held is not None and any(sid in held for sid in subject_ids)

    async def landed(self, system: str, subject_ids: Sequence[str]) -> None:
        """Return once no write to ``system`` for any of ``subject_ids`` is in flight."""
        while self.busy(system, subject_ids):
            self.waiting += 1
            try:
                await self._changed.wait()
            finally:
                self.waiting -= 1
