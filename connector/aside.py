"""Private folders for what a command only looks at: a copy of the store, an empty store.

A look (``status``, ``check``, the dry runs, ``audit verify``...) copies the store into a
folder of its own in the temporary folder and deletes it after. A process killed meanwhile
(``kill -9``, the OOM killer) left that copy there: sealed, but holding what the store held
then, the outbox and dead letters of people erased since included, which no erasure reaches.
So the next look deletes the folders no live process holds.

Held is told by a ``flock`` the making process keeps on its folder while it uses it: the
kernel drops it when the process dies, however it dies, and sees it from every process on
the host. The making process's id in the folder's name is not enough alone: a process in
another PID namespace (a container sharing the temporary folder with the host or another
container) finds no process of that id in its own, and deleted the copy a live look was
reading. A folder is deleted only when its process is gone here and it holds no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ASIDE_PREFIX", "aside_folder", "sweep_left_behind"]

#: The folder's name: this prefix, the making process's id, a dash, tempfile's random part.
ASIDE_PREFIX = "klantsync-dry-run-"
#: The name a folder is made under, before it is held: a sweep passes it over.
_MAKING_PREFIX = "klantsync-making-"


@contextlib.contextmanager
def aside_folder() -> Iterator[str]:
    """A new private folder (mode 0700) in the temporary folder, held while the block runs
    and deleted when it ends; those a killed process left are deleted first."""
    sweep_left_behind()
    made = Path(tempfile.mkdtemp(prefix=_MAKING_PREFIX))
    try:
        fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        shutil.rmtree(made, ignore_errors=True)
        raise
    try:
        # Held before it bears the name a sweep looks for, so no sweep finds it unheld.
        fcntl.flock(fd, fcntl.LOCK_EX)
        folder = made.with_name(f"{ASIDE_PREFIX}{os.getpid()}-{made.name[len(_MAKING_PREFIX) :]}")
        try:
            made.rename(folder)
        except OSError:
            shutil.rmtree(made, ignore_errors=True)
            raise
        try:
            yield str(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)


def sweep_left_behind(folder: Path | None = None) -> int:
    """Delete the private folders in ``folder`` (the temporary folder) that this user's
    processes made and that no process holds any more; how many."""
    where = Path(folder or tempfile.gettempdir())
    swept = 0
    try:
        entries = list(where.glob(f"{ASIDE_PREFIX}*"))
    except OSError:
        return 0
    for entry in entries:
        pid = entry.name[len(ASIDE_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue  # in use, or an earlier version's (no process id to tell by)
        try:
            found = entry.lstat()
        except OSError:
            continue
        if not entry.is_dir() or entry.is_symlink() or found.st_uid != os.getuid():
            continue  # another user's, which is not ours to delete
        swept += _delete_unheld(entry)
    return swept


def _delete_unheld(entry: Path) -> bool:
    """Delete ``entry`` unless a process holds it (:func:`aside_folder`); whether it went."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: a live process (maybe one this one cannot see) uses it
        shutil.rmtree(entry, ignore_errors=True)
        return not entry.exists()
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user's counts: it may be reused)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
