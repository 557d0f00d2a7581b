"""OS locks on files beside the store (the store file itself, symlinks followed).

- One daemon per store: :class:`DaemonLock`, exclusive; the CLI uses :func:`daemon_running` to
  decide whether to queue a resync for the daemon or run it inline.
- The store's keys in use: every command that works with the store's keys holds
  :func:`sharing_keys` (shared) while it runs; replacing the master key takes
  :func:`keys_alone` (exclusive), so no process goes on sealing with keys the rotation retired.
- One sync at a time per store: :func:`syncing` (exclusive), held by ``sync``, an inline
  ``resync`` and ``demo`` for their run and by the daemon for its life. Two syncs at once pull
  the same pages and deliver the same records twice over, and a run the store records as
  running while nobody holds this lock (:func:`sync_running`) is one that was interrupted.
  The lock belongs to those commands, not to the engine: tests run several engines on one
  store in one process.

``flock`` is released by the kernel when the process dies, however it dies, so a crash never
leaves a stale lock behind; the daemon's lock file records its pid for messages.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType

from connector.errors import StoreError, StorePathError
from connector.storefile import make_store_folder

__all__ = [
    "KEYS_HELD",
    "DaemonLock",
    "KeyedLocks",
    "daemon_running",
    "keys_alone",
    "lock_files",
    "lock_path",
    "one_at_a_time",
    "sharing_keys",
    "sync_lock_path",
    "sync_running",
    "syncing",
    "wait_for_lock",
]

log = logging.getLogger("klantsync.lock")


def _beside_store(store_path: Path, suffix: str) -> Path:
    """The lock file ``<store><suffix>`` beside the store file itself.

    Named from the real file, symlinks followed: two configs (or a config and an operator's
    command line) naming one store through a symlinked folder or file took separate locks,
    and two daemons, or a sync beside the daemon, ran on one store. A store not made yet is
    named by its real folder and its own name, where SQLite will make it. A path that cannot
    be resolved (a symlink loop) is kept as given: no store can be opened there either.
    """
    try:
        real = store_path.resolve()  # not strict: resolves the folder of a file not there yet
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        real = store_path.absolute()
    return real.with_name(real.name + suffix)


def lock_path(store_path: Path) -> Path:
    """The lock file that belongs to a store."""
    return _beside_store(store_path, ".daemon.lock")


class DaemonLock:
    """Context manager holding the daemon lock of a store; raises StoreError if taken."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        fd = _open_lock(self.store_path, self.path)
        try:
            _lock_exclusive(fd)
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


def _open_lock(store_path: Path, path: Path) -> int:
    """A descriptor on the lock file ``path`` beside the store, created (and its folder) if
    missing; StorePathError (exit 2, naming store.path) if it cannot be.

    Raises:
        StoreError: the store (or the lock file) is there but may not be written (exit 1):
            :func:`_unwritable`.
    """
    make_store_folder(store_path)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        unwritable = _unwritable(store_path, path, exc)
        if unwritable is not None:
            raise unwritable from exc
        raise StorePathError(
            store_path,
            f"cannot create its lock file {path.name} beside it ({exc.strerror}); point "
            "store.path at a file in a folder klantsync can create and write",
        ) from exc


def _unwritable(store_path: Path, path: Path, exc: OSError) -> StoreError | None:
    """The StoreError a lock file refused for writing means where the store is there, else
    ``None`` (no store can be at the path: the configuration's to fix).

    A failing disk is remounted read-only by the kernel (ext4 ``errors=remount-ro``), and a
    store's files may belong to another user: the store and its lock files are there and
    none can be written. That is a store failure, like SQLite's read-only store, not a
    ``store.path`` to point elsewhere.
    """
    if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    if not (path.exists() or store_path.exists()):
        return None
    if exc.errno == errno.EROFS:
        return StoreError(
            f"{store_path}: the store's folder is on a read-only file system (its lock file "
            f"{path.name} cannot be opened for writing); a disk remounted read-only after "
            "errors is failing: check the disk and its file system, then run again"
        )
    return StoreError(
        f"{store_path}: the store's folder is not writable by this user (its lock file "
        f"{path.name}: {exc.strerror}); give the user klantsync runs as write access to the "
        "store's folder and the files in it (the store, its -wal and -shm, its lock files)"
    )


def daemon_running(store_path: Path) -> bool:
    """Whether a daemon currently holds the store's lock."""
    return _held(lock_path(store_path))


def sync_running(store_path: Path) -> bool:
    """Whether a sync (a command, or the daemon) holds the store's sync lock now."""
    return _held(sync_lock_path(store_path))


#: How often, and how far apart, a refused exclusive lock is tried again before giving up.
_TRIES = 20
_PAUSE_SECONDS = 0.01


def _lock_exclusive(fd: int) -> None:
    """An exclusive lock on ``fd`` now, or BlockingIOError if another process keeps it.

    :func:`_held` (``status``, a ``resync`` deciding where to go) takes a shared lock for a
    moment to see whether anyone holds the lock; a sync or daemon starting in that moment
    must not be refused for it, so a refusal is tried again for a fifth of a second.
    """
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _TRIES - 1:
                raise
            time.sleep(_PAUSE_SECONDS)


#: The kernel's list of the locks held (Linux), for a lock file this user may not open.
_KERNEL_LOCKS = Path("/proc/locks")


def _held(path: Path) -> bool:
    """Whether some process holds an exclusive lock on ``path``; creates nothing.

    A lock file this user may not open (the daemon runs as another user, and an operator
    asks ``status`` or ``resync``) is looked up in the kernel's list of locks instead.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:  # the file, or the folder it is in
        return _held_by_another_user(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _held_by_another_user(path: Path) -> bool:
    """Whether the kernel lists an exclusive ``flock`` on the lock file ``path``, which this
    user may not open; held (by that user's process, pid unknown) where it cannot tell:
    a ``resync`` then hands its work to the daemon rather than start a sync beside it.

    Lines read ``1: FLOCK  ADVISORY  WRITE 4565 fe:00:2148259 0 EOF`` (a waiter's with
    ``->``). They are matched by inode number only, as a file system may give ``stat``
    another device number than it gives the list: another file's lock of the same number
    at worst makes the lock look held.
    """
    try:
        inode = str(path.stat().st_ino)
        lines = _KERNEL_LOCKS.read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split()
        if "FLOCK" not in fields or "WRITE" not in fields:
            continue
        if any(f.count(":") == 2 and f.rsplit(":", 1)[1] == inode for f in fields):
            return True
    return False


def _keys_lock_path(store_path: Path) -> Path:
    return _beside_store(store_path, ".keys.lock")


@contextmanager
def _flock(store_path: Path, *, exclusive: bool) -> Iterator[None]:
    path = _keys_lock_path(store_path)
    fd = _open_lock(store_path, path)
    try:
        if exclusive:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"{store_path}: another klantsync command or the daemon has this store "
                    "open; stop it and run this again"
                ) from None
        else:
            wait_for_lock(fd, path, exclusive=False, held=KEYS_HELD)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its lock


#: How long a command waits for a lock before it says what it waits for, and the pauses it
#: waits in.
_KEYS_NOTICE_SECONDS = 2.0
_KEYS_PAUSE_SECONDS = 0.05

#: What a command waiting for the store's keys says: who holds them and that it goes on.
KEYS_HELD = (
    "waiting for the store's keys: a master key rotation (keys rotate) or a restore is in "
    "progress and holds them; this goes on once it has finished"
)


def wait_for_lock(fd: int, path: Path, *, exclusive: bool, held: str) -> None:
    """A lock on the lock file ``fd`` (at ``path``), shared or ``exclusive``, waiting as long
    as another process holds it; ``held`` (what holds it, and that the wait goes on) said
    once, at WARNING, after :data:`_KEYS_NOTICE_SECONDS` (counted in the pauses waited).

    A blocking ``flock`` waited without a word: behind a rotation that was stuck or slow an
    operator saw a command hang, and not why. The lock is tried again after each pause
    instead, which lets the command speak; it still waits until the holder ends, and
    Ctrl-C still stops it. The message names the lock file, nothing the store holds.
    """
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    waited = 0.0
    said = False
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except BlockingIOError:
            pass
        if not said and waited >= _KEYS_NOTICE_SECONDS:
            log.warning(held, extra={"lock_file": str(path)})
            said = True
        time.sleep(_KEYS_PAUSE_SECONDS)
        waited += _KEYS_PAUSE_SECONDS


@contextmanager
def sharing_keys(store_path: Path) -> Iterator[None]:
    """Held while a command works with the store's keys; waits out a rotation (seconds),
    saying so if it lasts (:func:`wait_for_lock`)."""
    with _flock(store_path, exclusive=False):
        yield


@contextmanager
def keys_alone(store_path: Path) -> Iterator[None]:
    """The store's keys to this process alone, or StoreError saying what to stop."""
    with _flock(store_path, exclusive=True):
        yield


def sync_lock_path(store_path: Path) -> Path:
    """The file whose lock says a sync runs on the store."""
    return _beside_store(store_path, ".sync.lock")


def lock_files(store_path: Path) -> tuple[Path, ...]:
    """Every lock file beside the store. A lock is held on the file's inode: a file renamed
    over one leaves the holder locking a file nobody opens, and a second daemon or sync in."""
    return (lock_path(store_path), sync_lock_path(store_path), _keys_lock_path(store_path))


#: Who holds the sync lock, as another process's refusal names them.
_SYNC_HOLDERS = {
    "sync": "another klantsync sync",
    "resync": "a klantsync resync",
    "demo": "a klantsync demo",
}


@contextmanager
def syncing(store_path: Path, holder: str) -> Iterator[None]:
    """The store's sync lock while the block runs, or StoreError (exit 1) naming who has it.

    Never waits: a second sync would only repeat the first one's work once it could start,
    and the daemon, refused at start, is restarted by its service manager.

    Args:
        store_path: the store.
        holder: ``sync``, ``resync``, ``demo``, ``restore`` or ``daemon``, written in the
            lock file for the message another process gets.
    """
    fd = _open_lock(store_path, sync_lock_path(store_path))
    try:
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            raise StoreError(_sync_refusal(store_path, os.pread(fd, 64, 0))) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its lock


def _sync_refusal(store_path: Path, recorded: bytes) -> str:
    holder, _, pid = recorded.decode(errors="replace").strip().partition(" ")
    pid_text = f" (pid {pid})" if pid.isdecimal() else ""
    if holder == "daemon":
        return (
            f"{store_path}: the klantsync daemon{pid_text} runs on this store and syncs it; "
            "use `klantsync resync --system S` (or `--email E`), which hands the sync to it"
        )
    if holder == "restore":
        return (
            f"{store_path}: a klantsync restore{pid_text} is putting a backup in place of "
            "this store; run this again once it has finished"
        )
    who = _SYNC_HOLDERS.get(holder, "another klantsync command")
    return (
        f"{store_path}: {who}{pid_text} is syncing this store; run this again once it has "
        "finished (two syncs at once would pull and deliver the same records twice)"
    )


#: Per key, the lock and how many hold or await it (see :func:`one_at_a_time`).
KeyedLocks = dict[str, tuple[asyncio.Lock, list[int]]]


@asynccontextmanager
async def one_at_a_time(locks: KeyedLocks, key: str) -> AsyncIterator[None]:
    """Within this process, one holder of ``key`` at a time; the others wait their turn.

    The entry goes when its last holder or waiter leaves: a daemon that runs for months
    keeps no lock per request or delivery it ever handled.
    """
    lock, users = locks.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            yield
    finally:
        users[0] -= 1
        if not users[0]:
            del locks[key]
