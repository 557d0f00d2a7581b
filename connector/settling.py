"""The sync's writes, and acknowledgements that ride in the next one.

A fully acknowledged batch's outcome need not be committed on its own: it waits for the
engine's next write (usually the next page's), which commits it first, in the same
transaction. One commit instead of two, and the outbox pages the acknowledgements free are
those the page fills. Past :data:`SETTLE_LATER_MAX` waiting, they are committed alone.

Apart from the engine because pulling and delivering both write through it, and the holds
(:mod:`connector.inflight`) of the batches whose outcomes wait are let go only here, once
those are committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from connector.state import Store

__all__ = ["SETTLE_LATER_MAX", "Settling"]

#: Fully acknowledged batches whose outcome may wait for the engine's next write. They ride
#: in the next page's transaction: one commit instead of two, and the outbox pages the
#: acknowledgements free are those the page fills. Past this many, they are committed alone.
SETTLE_LATER_MAX = 32

T = TypeVar("T")


class Settling:
    """The sync's write transactions on ``store``, each after the outcomes waiting."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: Acknowledged batches' outcomes not committed yet; the next write commits them first.
        self._settles: list[Callable[[Store], None]] = []
        #: The holds (connector/inflight.py) of the batches whose outcomes those are, let go
        #: once they are committed.
        self._unsettled: list[Callable[[], None]] = []

    @property
    def waiting(self) -> bool:
        """Whether an acknowledged batch's outcome waits for the next write."""
        return bool(self._settles)

    def write(self, work: Callable[[Store], T]) -> T:
        """One write transaction of the sync, after the acknowledged batches' waiting ones.

        The outcomes :meth:`later` holds are committed first, in the same transaction, in
        the order they came; then their batches stop counting as in flight (committed or
        not: a failed commit leaves the rows queued, sent again next run).
        """
        settles, self._settles = self._settles, []
        unsettled, self._unsettled = self._unsettled, []
        try:
            if not settles:
                return work(self.store)
            with self.store.transaction():
                for settle in settles:
                    settle(self.store)
                return work(self.store)
        finally:
            for release in unsettled:
                release()

    def later(self, settle: Callable[[Store], None]) -> None:
        """Commit an acknowledged batch's outcome with the next write (now, past a few)."""
        self._settles.append(settle)
        if len(self._settles) >= SETTLE_LATER_MAX:
            self.flush()

    def release_after(self, release: Callable[[], None]) -> None:
        """Let a batch's hold go once the outcomes waiting now are committed."""
        self._unsettled.append(release)

    def flush(self) -> None:
        """Commit the acknowledged batches' outcomes still waiting."""
        if self._settles:
            self.write(_nothing)


def _nothing(_store: Store) -> None:
    """A write of nothing: what :meth:`Settling.flush` commits the waiting outcomes with."""
