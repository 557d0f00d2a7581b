"""Files that hold keys or personal data: owner-only, and whole or not at all.

Two ways to put such a file on disk, both through a temporary file in the same folder that is
complete on disk before it takes the name:

- :func:`write_private` replaces whatever is at the name. A crash leaves the old file or the
  new one, never a torn one (a retired key's public half written half, and every receipt
  check failed on it), and what was there before (a file of another mode, a symlink to
  somewhere else) is replaced, not written through.
- :func:`create_private` takes the name only if nothing is there, so two processes starting
  at once neither both write their own file nor read the other's half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["create_private", "fill", "sync_folder", "write_private"]


def write_private(path: Path, data: bytes, *, mtime_ns: int | None = None) -> None:
    """Put ``data`` at ``path``, mode 0600, replacing what is there; ``mtime_ns`` sets its
    age (a key sealed anew keeps the key's own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        fill(fd, data, temporary, mtime_ns)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    sync_folder(path.parent)


def create_private(path: Path, data: bytes, *, mtime_ns: int | None = None) -> bool:
    """Put ``data`` at ``path`` (0600) unless something is there; False if it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        fill(fd, data, temporary, mtime_ns)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:
            # A filesystem without hard links: an exclusive create is as safe against a
            # second writer, though a crash mid-write could leave a short file behind.
            return _create_exclusive(path, data, mtime_ns)
        return True
    finally:
        os.unlink(temporary)


def _create_exclusive(path: Path, data: bytes, mtime_ns: int | None) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    fill(fd, data, path, mtime_ns)
    return True


def fill(fd: int, data: bytes, path: Path | str, mtime_ns: int | None = None) -> None:
    """Write ``data`` through ``fd`` (then closed) to disk; give ``path`` that age if asked."""
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform lets a folder be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse a folder's fsync; the rename itself is still atomic
    finally:
        os.close(fd)
