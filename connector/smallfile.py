"""Files the configuration names, judged before they are read: a regular file, of a size
such a file can have.

A named pipe nobody writes to holds whoever opens it until a writer comes (at config load:
every command, the daemon's start included, for good); a device (``/dev/zero``) or a file
far longer than the kind it is meant to be (a log, an archive, a disk image named by
mistake) is read whole into memory. So a secret file, a mapping, a CA bundle and the
daemon's TLS files are looked at first, the same way, and refused in words the caller puts
after the file's name.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["UnfitFileError", "read_small", "unfit"]


class UnfitFileError(Exception):
    """What a path names is no file of its kind that can be read (the reason, in words)."""


def unfit(path: Path, noun: str, limit: int) -> str | None:
    """Why ``path`` (a symlink followed) is no ``noun`` to read, or ``None`` if it may be.

    A folder is left to the caller, which says so as for any file that cannot be read. A
    look by name only: what reads the file afterwards (OpenSSL, the TOML parser) opens it
    anew; :func:`read_small` judges what it opened.

    Args:
        path: the file.
        noun: what it is meant to be, for the words (``secret``, ``CA bundle``).
        limit: the most bytes such a file holds.

    Raises:
        OSError: it cannot be looked at (missing, no permission on a folder above it).
    """
    return _judged(path.stat(), noun, limit)


def _judged(found: os.stat_result, noun: str, limit: int) -> str | None:
    """:func:`unfit`'s words for a file of ``found``'s kind and size."""
    if not (stat.S_ISREG(found.st_mode) or stat.S_ISDIR(found.st_mode)):
        return _not_regular(noun)
    if stat.S_ISREG(found.st_mode) and found.st_size > limit:
        return _longer(noun, limit)
    return None


#: How a file the config names is opened to be judged and read: a pipe with no writer would
#: hold a plain open itself; a terminal never becomes this process's.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_small(path: Path, noun: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Judged by what was opened, not by its name first: looked at, then opened, a file
    swapped in between for a pipe (a secret file rewritten by a deploy tool, a path an
    attacker may rename in) held the load for good, and a device was read.

    Raises:
        UnfitFileError: it is no regular file, or it is longer (:func:`unfit`'s words).
        OSError: it cannot be read (a folder: IsADirectoryError).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise UnfitFileError(_not_regular(noun)) from None
        raise
    try:
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        problem = _judged(found, noun, limit)
        if problem is not None:
            raise UnfitFileError(problem)
        with open(fd, "rb", closefd=False) as handle:
            # Bounded here too: a file grown since it was looked at, or one whose size the
            # kernel does not tell (under /proc) is still not read past the limit.
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnfitFileError(_longer(noun, limit))
    return data


def _not_regular(noun: str) -> str:
    return (
        f"is not a regular file (a pipe, a device or a socket?); a {noun} is read from a "
        "file holding it"
    )


def _longer(noun: str, limit: int) -> str:
    size = f"{limit // (1 << 20)} MiB" if limit >= 1 << 20 else f"{limit // 1024} KiB"
    return f"is longer than any {noun} (over {size}): is it the file meant?"
