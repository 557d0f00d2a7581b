"""How the daemon looks at its store once something failed: whether the file it has open is
still the one at ``store.path``, whether its pages read as a store's, whether it takes a
write again, and what a full disk left of the work it was doing.

Readiness (:mod:`connector.readiness`) asks these; the daemon (:mod:`connector.daemon`)
says the last when it logs a store failure.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from connector.state import Store

__all__ = ["after_full_disk", "file_identity", "intact", "write_once"]


def after_full_disk(during: str) -> str:
    """What the daemon's work ``during`` (as :meth:`connector.daemon.Daemon.store_failed` is
    told it) left when the store's disk filled up, and how it goes on: a webhook's vendor and
    an admin caller were answered 503, a flow resumes at its next run."""
    if during.startswith("flow "):
        return "free space: the flow runs again at its next time, after the last page it queued"
    if during == "webhook":
        return (
            "the delivery was answered 503 and nothing of it was kept, so the vendor "
            "delivers it again: free space"
        )
    if during.startswith("admin "):
        return "the call was answered 503 and changed nothing: free space and call again"
    if during == "job worker":
        return "the job stays queued and runs once the store takes writes again: free space"
    return "free space: the daemon tries again at the work's next turn"


def file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path``; ``None`` where there is none.

    Removed (or moved away, or replaced) under the running daemon, the store it has open
    still answers every statement, into a file that is gone when the daemon stops, while
    every command beside it (``dsr erase``, ``status``, ``backup``) opens another, new
    store at the path.
    """
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def intact(store: Store) -> bool:
    """Whether the store's pages read as a store's (``PRAGMA quick_check``), once it failed.

    A torn page refuses every statement that reads it (the jobs table's: every admin call),
    while the probe's own reads and write, on other pages, pass: it said ready at once.
    A look at every page (a quarter of a second on a store of 200,000 customers), made only
    while the store is marked failed. A page that stops the look itself is damage too; any
    other error (a disk that fails to read) is raised.
    """
    try:
        rows = store.db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return False
        raise
    return [tuple(row) for row in rows] == [("ok",)]


#: The row the probe writes (:func:`write_once`), in the ``leases`` table, which nothing
#: else writes: it meets no row of another's there.
_PROBE = "readiness probe"


def write_once(store: Store) -> bool:
    """Write to the store and commit: whether the store takes writes again.

    The write is one a delivery's resembles: a row as large as a page, on a page of its
    own the store must grow by, inserted and deleted again in one transaction that commits
    (the log gets its frames, the store none of its rows). So a full disk, a read-only file
    or a held lock refuse it as they refuse a delivery; a rewrite of one page the store
    already has (the schema version) passed on a disk still full. It does not wait out
    another process's lock (5 s on the event loop); a lock still held is a failure.
    ``False`` (not tried) while a transaction is open on the connection: its work is not
    this probe's to commit.

    Raises:
        sqlite3.Error: the store refused the write (rolled back).
    """
    db = store.db
    if db.in_transaction:
        return False
    (waits,) = db.execute("PRAGMA busy_timeout").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.execute("PRAGMA busy_timeout=0")
    try:
        with store.transaction():
            db.execute(
                "INSERT INTO leases(name, holder, pid, expires_at) VALUES (?, zeroblob(?), 0, 0)",
                (_PROBE, int(page_size)),
            )
            db.execute("DELETE FROM leases WHERE name=?", (_PROBE,))
    finally:
        db.execute(f"PRAGMA busy_timeout={int(waits)}")
    return True
