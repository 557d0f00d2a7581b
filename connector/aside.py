"""Private folders for what a command only looks at: a copy of the store, an empty store.

A look (``status``, ``check``, the dry runs, ``audit verify``...) copies the store into a
folder of its own in the temporary folder and deletes it after. A process killed meanwhile
(``kill -9``, the OOM killer) left that copy there: sealed, but holding what the store held
then, the outbox and dead letters of people erased since included, which no erasure reaches.
So each folder is named after the process that made it, and the next look deletes those of
processes that are gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["ASIDE_PREFIX", "aside_folder", "sweep_left_behind"]

#: The folder's name: this prefix, the making process's id, a dash, tempfile's random part.
ASIDE_PREFIX = "klantsync-dry-run-"


def aside_folder() -> tempfile.TemporaryDirectory[str]:
    """A new private folder (mode 0700) in the temporary folder, deleted when the block
    ends; those a killed process left are deleted first."""
    sweep_left_behind()
    return tempfile.TemporaryDirectory(prefix=f"{ASIDE_PREFIX}{os.getpid()}-")


def sweep_left_behind(folder: Path | None = None) -> int:
    """Delete the private folders in ``folder`` (the temporary folder) that this user's
    processes made and that no process of theirs holds any more; how many."""
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
        shutil.rmtree(entry, ignore_errors=True)
        swept += not entry.exists()
    return swept


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
