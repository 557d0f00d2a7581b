"""One daemon per store: an exclusive OS lock on a file beside the store.

``flock`` is released by the kernel when the process dies, however it dies, so a crashed
daemon never leaves a stale lock behind; the lock file records the holder's pid for messages.
The CLI uses :func:`daemon_running` to decide whether to queue a resync for the daemon or run
it inline.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from connector.errors import StoreError

__all__ = ["DaemonLock", "daemon_running", "lock_path"]


def lock_path(store_path: Path) -> Path:
    """The lock file that belongs to a store."""
    return store_path.with_name(store_path.name + ".daemon.lock")


class DaemonLock:
    """Context manager holding the daemon lock of a store; raises StoreError if taken."""

    def __init__(self, store_path: Path) -> None:
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(
                f"{self.path}: a klantsync daemon (pid {holder}) already runs on this store"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def daemon_running(store_path: Path) -> bool:
    """Whether a daemon currently holds the store's lock."""
    path = lock_path(store_path)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
