"""Which subjects each system has a write in flight for, in this process.

A sync checks the suppression list before it sends a batch, but the batch can wait seconds in
the rate limiter or on the network after that check. An erasure recorded in that window would
delete the person, verify them absent, and then see the batch re-create them. The engine holds
a batch's subjects here from before its suppression check until its answer is settled; an
erasure, once its suppression entry is written, waits here before it deletes anything in a
system. Either the batch was checked after the entry (and drops the person) or the erasure
waits for it to land (and deletes what it wrote). Another process's sync cannot be seen here;
the engine checks the list again after each write for that (see ``Delivery._deliver_batch``).

A batch counts until its acknowledgement is committed, not only until its answer came: the
engine commits an acknowledgement with its next write (``Settling.later``), and one
committed after a correction's mark to send the person again (``DsrStore.resend_on_next_sync``)
wrote its hash over the mark, so a change back to the former values was never sent. Whoever
waits has the waiting acknowledgements committed at once (``settle``) rather than at the
engine's next write, which may be a page of the source away.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["InFlight"]


class InFlight:
    """Subjects with a write in flight, per system; erasures wait until theirs have landed."""

    def __init__(self, settle: Callable[[], None] | None = None) -> None:
        self._held: dict[str, Counter[str]] = {}
        self._changed = asyncio.Event()
        #: Commits the acknowledgements waiting to be, which release their holds (the
        #: engine's ``flush``).
        self._settle = settle or (lambda: None)
        #: How many :meth:`landed` calls are waiting now (what tests wait on).
        self.waiting = 0

    def hold(self, system: str, subject_ids: Sequence[str]) -> Callable[[], None]:
        """Hold ``subject_ids`` as being written to ``system`` until the function returned
        is called (again, it does nothing)."""
        held = self._held.setdefault(system, Counter())
        held.update(subject_ids)
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            held.subtract(subject_ids)
            for sid in subject_ids:
                if held[sid] <= 0:
                    del held[sid]
            self.answered()

        return release

    def answered(self) -> None:
        """Wake every waiter; each looks again at what it waits for. Also said when a write
        was answered and only its acknowledgement keeps it held: a waiter commits it."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @contextmanager
    def writing(self, system: str, subject_ids: Sequence[str]) -> Iterator[None]:
        """Hold ``subject_ids`` as being written to ``system`` for the ``with`` block."""
        release = self.hold(system, subject_ids)
        try:
            yield
        finally:
            release()

    def busy(self, system: str, subject_ids: Iterable[str]) -> bool:
        """Whether any of ``subject_ids`` has a write to ``system`` in flight."""
        held = self._held.get(system)
        return held is not None and any(sid in held for sid in subject_ids)

    def busy_anywhere(self, subject_ids: Iterable[str]) -> bool:
        """Whether any of ``subject_ids`` has a write to any system in flight."""
        wanted = set(subject_ids)
        return any(not wanted.isdisjoint(held) for held in self._held.values())

    async def landed(self, system: str, subject_ids: Sequence[str]) -> None:
        """Return once no write to ``system`` for any of ``subject_ids`` is in flight."""
        await self._until_idle(lambda: self.busy(system, subject_ids))

    async def landed_everywhere(self, subject_ids: Sequence[str]) -> None:
        """Return once no write to any system for any of ``subject_ids`` is in flight.

        A move waits so: another flow feeding another system may be writing the old address
        (the daemon runs flows side by side), and its acknowledgement must find the system's
        id under the old subject for the move to carry it over.
        """
        await self._until_idle(lambda: self.busy_anywhere(subject_ids))

    async def _until_idle(self, busy: Callable[[], bool]) -> None:
        """Wait for the writes in flight to change until ``busy`` says none is left."""
        while busy():
            self._settle()  # a write answered whose acknowledgement waits: committed now
            if not busy():
                return
            self.waiting += 1
            try:
                await self._changed.wait()
            finally:
                self.waiting -= 1
