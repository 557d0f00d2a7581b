"""OS locks on files beside the store.

- One daemon per store: :class:`DaemonLock`, exclusive; the CLI uses :func:`daemon_running` to
  decide whether to queue a resync for the daemon or run it inline.
- The store's keys in use: every command that works with the store's keys holds
  :func:`sharing_keys` (shared) while it runs; replacing the master key takes
  :func:`keys_alone` (exclusive), so no process goes on sealing with keys the rotation retired.

``flock`` is released by the kernel when the process dies, however it dies, so a crash never
leaves a stale lock behind; the daemon's lock file records its pid for messages.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from connector.errors import StoreError

__all__ = ["DaemonLock", "daemon_running", "keys_alone", "lock_path", "sharing_keys"]


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


def _keys_lock_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".keys.lock")


@contextmanager
def _flock(store_path: Path, *, exclusive: bool) -> Iterator[None]:
    path = _keys_lock_path(store_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            raise StoreError(
                f"{store_path}: another klantsync command or the daemon has this store open; "
                "stop it and run this again"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its lock


@contextmanager
def sharing_keys(store_path: Path) -> Iterator[None]:
    """Held while a command works with the store's keys; waits out a rotation (seconds)."""
    with _flock(store_path, exclusive=False):
        yield


@contextmanager
def keys_alone(store_path: Path) -> Iterator[None]:
    """The store's keys to this process alone, or StoreError saying what to stop."""
    with _flock(store_path, exclusive=True):
        yield
