"""Copying the store's write-ahead log back into the database, off the event loop.

SQLite in WAL mode appends every commit to the log and, once the log passes
``wal_autocheckpoint`` pages, copies it back into the database *inside the commit that
crossed the line*. On the event loop that commit then held the loop for 40-70 ms (a sync
writes a few random-key pages per record, so the log fills fast): every vendor call in flight
waited that long for its answer to be read, webhooks for theirs, and a destination limited to
a few connections (Mailchimp) sat idle meanwhile.

Here a thread with its own connection runs passive checkpoints instead: a passive checkpoint
copies what no reader still needs and never blocks the writer, and the sqlite3 module
releases the GIL while it works. The store's own autocheckpoint stays on, far higher, as a
bound on the log should this thread fall behind. Durability is unchanged: a committed
transaction is in the log either way, and SQLite recovers from the log at open.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

__all__ = ["WalCheckpointer", "truncated_now"]

log = logging.getLogger("klantsync.store")


def truncated_now(db: sqlite3.Connection) -> bool:
    """Copy the whole log into the database and truncate it to nothing, without waiting;
    whether that was done.

    A truncation needs the log to itself: it waits for the writer and every reader, and holds
    off other writers while it waits. Not waiting, it leaves the store's other users as they
    were when one is in the way; the caller tries again later. (A log that is not in use,
    the database not in WAL mode, counts as done.)
    """
    (timeout,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute("PRAGMA busy_timeout=0")
    try:
        busy, _frames, _copied = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        return False  # busy or locked (this connection mid-transaction): later, then
    finally:
        db.execute(f"PRAGMA busy_timeout={int(timeout)}")
    return int(busy) == 0


class WalCheckpointer:
    """A daemon thread running a passive checkpoint of ``path``'s WAL every ``interval`` s.

    A look when nothing was written costs a read of SQLite's shared index; one that copied
    a lot and left more behind (the writer outpaced it) is followed by another at once.

    Args:
        path: the database file (in WAL mode).
        interval: seconds between looks at the log.
    """

    #: Frames left uncopied after a checkpoint that make the next one start at once.
    BEHIND = 1000

    def __init__(self, path: Path, *, interval: float = 0.2) -> None:
        self.path = path
        self.interval = interval
        #: Checkpoints run, for tests and status.
        self.runs = 0
        #: Set after each checkpoint the thread runs (tests wait on it instead of sleeping).
        self.ran = threading.Event()
        self._stop = threading.Event()
        self._truncate = threading.Event()
        #: Held while this thread checkpoints: a truncation asked for on the store's own
        #: connection (an erasure's, :meth:`Store.truncate_log`) takes it first, so this
        #: thread's look is never what keeps the log from being truncated at once.
        self.lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(
            target=self._loop, name="klantsync-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def checkpoint(self) -> tuple[int, int]:
        """Run one passive checkpoint now: (frames in the log, frames copied back so far)."""
        _busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        return int(frames), int(copied)

    def truncate_soon(self) -> None:
        """Truncate the log at the next look that finds it free (:func:`truncated_now`), and
        at each look until one does."""
        self._truncate.set()

    @property
    def truncate_pending(self) -> bool:
        """Whether a truncation asked for (:meth:`truncate_soon`) is still to be done."""
        return self._truncate.is_set()

    def close(self) -> None:
        """Stop the thread (after a checkpoint in progress ends) and close its connection."""
        self._stop.set()
        self._thread.join()
        self._db.close()

    def _loop(self) -> None:
        again = False
        last_copied = -1
        while not self._stop.wait(0 if again else self.interval):
            try:
                with self.lock:
                    if self._truncate.is_set() and truncated_now(self._db):
                        self._truncate.clear()
                        log.info("the store's write-ahead log is truncated")
                    frames, copied = self.checkpoint()
            except sqlite3.Error as exc:
                # Busy or locked is the writer's business; the next look tries again.
                log.debug("background checkpoint skipped", extra={"error": type(exc).__name__})
                again = False
                continue
            self.ran.set()
            again = frames - copied >= self.BEHIND and copied != last_copied
            last_copied = copied
