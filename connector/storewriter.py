"""A sync's write transactions on a thread of their own, over a connection of their own.

A sync commits once per page it queues (the page's outbox rows with its cursor) and once per
batch it delivers (the acknowledgement). Each commit is a few milliseconds of SQLite
(random-key b-tree pages, then the WAL write) during which, on the event loop, every vendor
answer waited to be read: a destination limited to a few connections (Mailchimp's ten) lost
those milliseconds on every one of them, and they came in the busiest moments. SQLite does
that work with the GIL released, so here it runs on one writer thread while the loop goes on.

The writer has its own connection (a sqlite3 connection is not to be shared between threads
at once) and runs one unit of work at a time, in the order given; a unit is one transaction,
as it was on the loop. The writer's transactions and the loop connection's exclude each other
through SQLite's lock, as any two connections' do (a write on the loop's side waits, up to
``busy_timeout``, for the writer's transaction in progress). The loop's connection sees a
transaction once it has committed, and the engine awaits each write before it reads what the
write changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from connector.state import BACKGROUND_BOUND_PAGES, Store

__all__ = ["StoreWriter"]

T = TypeVar("T")


class StoreWriter:
    """Runs units of work against a :class:`Store` of its own, on one thread, in order.

    Args:
        path: the store's file (already opened and migrated by the caller's :class:`Store`).
        background_checkpoints: the caller's store has a WAL checkpointer thread
            (:meth:`Store.checkpoint_in_background`); the writer's commits then leave the
            copying to it too.
    """

    def __init__(self, path: Path, *, background_checkpoints: bool = False) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="klantsync-writer")
        try:
            # Opened on the writer thread, where it will be used.
            self._store: Store = self._executor.submit(Store, path).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        if background_checkpoints:
            self._store.db.execute(f"PRAGMA wal_autocheckpoint={BACKGROUND_BOUND_PAGES}")
        self._closed = False

    async def run(self, work: Callable[[Store], T]) -> T:
        """``work(store)`` on the writer thread; its result, or its exception, here."""
        if self._closed:
            raise RuntimeError("the store writer is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._store)

    def close(self) -> None:
        """Finish the work already given, close the writer's connection, end the thread."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._store.close).result()
        self._executor.shutdown(wait=True)
