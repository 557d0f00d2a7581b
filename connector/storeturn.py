"""Store writes made on the daemon's event loop without the loop waiting on another
process's write lock.

SQLite's busy timeout (:data:`connector.store_base.BUSY_TIMEOUT_MS`) makes a write wait inside the
statement while another process holds the store's write lock (an operator's ``sqlite3``
shell, a command writing beside the daemon, a backup). On the event loop that wait held
everything with it: a webhook was answered after ~10 s (vendors count a delivery not answered
within a few seconds as failed), and ``/healthz`` and ``/readyz`` went unanswered meanwhile,
so a probe had the daemon restarted. :func:`write_in_turn` tries the work without that wait,
and while the lock is another's gives the loop back and tries again, up to a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from connector.state import Store

__all__ = ["transaction_in_turn", "write_in_turn"]

T = TypeVar("T")

#: The first pause between tries, doubled after each up to :data:`LONGEST_PAUSE` (seconds):
#: a lock held for a moment (another process's commit) costs a few milliseconds, one held
#: for long is looked at a few times a second.
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 0.1


async def write_in_turn(store: Store, work: Callable[[], T], *, within: float) -> T:
    """``work()``, tried without waiting for the store's write lock, and tried again every
    little while the lock is another process's, for up to ``within`` seconds.

    ``work`` is synchronous, so nothing else on the loop uses the connection while its wait
    is off, and may be tried again after the lock refused it: what it wrote in the refused
    transaction was rolled back, and each transaction it commits before is one that, run
    again, finds its work done (a delivery's id noted, an acknowledgement written).

    Raises:
        sqlite3.OperationalError: the lock was still another's after ``within`` (SQLite's
            "database is locked", which :func:`connector.storefile.failure` says as a lock
            held too long); any other error ``work`` raised, as it came.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = FIRST_PAUSE
    while True:
        try:
            return _without_waiting(store, work)
        except sqlite3.OperationalError as exc:
            left = deadline - loop.time()
            if not _busy(exc) or left <= 0:
                raise
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, LONGEST_PAUSE)


async def transaction_in_turn(store: Store, work: Callable[[], T], *, within: float) -> T:
    """``work()`` in one transaction of its own, committed, run once: the store's write lock
    is taken first (``BEGIN IMMEDIATE``) without SQLite's wait, tried again every little
    while it is another process's for up to ``within`` seconds, the loop free in between.

    For work that cannot simply be run again after a refusal (it keeps count of what it
    did, or deletes files beside the store): it starts only once the lock is the store's,
    and a write lock held is one SQLite's wait never holds up again until the commit. Its
    own :meth:`~connector.state.Store.transaction` joins this one.

    Raises:
        sqlite3.OperationalError: the lock was still another's after ``within`` (nothing of
            ``work`` ran); any error ``work`` raised (its transaction rolled back) or the
            commit raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = FIRST_PAUSE
    while True:
        try:
            _without_waiting(store, lambda: store.db.execute("BEGIN IMMEDIATE"))
            break
        except sqlite3.OperationalError as exc:
            left = deadline - loop.time()
            if not _busy(exc) or left <= 0:
                raise
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, LONGEST_PAUSE)
    db = store.db
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException:
        # SQLite has rolled some failures back itself (a full disk): a ROLLBACK would then
        # fail and hide the error that matters.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return result


def _without_waiting(store: Store, work: Callable[[], T]) -> T:
    db = store.db
    (waits,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute("PRAGMA busy_timeout=0")
    try:
        return work()
    finally:
        db.execute(f"PRAGMA busy_timeout={int(waits)}")


def _busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused for a lock another connection holds (``SQLITE_BUSY``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
