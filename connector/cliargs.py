"""Exit codes, argument types and output files shared by the command modules (``cli`` and
every ``cli_*``).

Kept apart from :mod:`connector.cli`, which imports those modules, so they can use these
without an import cycle. A bad value becomes a usage error (exit 2) naming the option, never
a traceback from deep inside the command that received it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from connector.errors import ConfigError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "check_writable",
    "int_at_least",
    "make_folder",
    "refuse_directory",
    "tell",
    "write_output",
]

#: The public contract: 0 done; 1 finished with failures (details printed); 2 bad usage or
#: bad configuration (the message names the file, key and what is wrong).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The reader of standard output went away (``klantsync audit export | head``): 128 + SIGPIPE,
#: what the shell reports for any Unix tool stopped that way, as 130 is 128 + SIGINT.
EXIT_PIPE = 141


#: A whole number as the command line takes one: digits, and a minus sign for one below 0.
_DIGITS = re.compile(r"-?[0-9]+")

#: The largest integer SQLite stores, and so the largest id or count worth asking about.
_LARGEST = 2**63 - 1


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers of at least ``minimum``.

    Args:
        minimum: the smallest value accepted.
        why: a few words appended to the message saying why the floor is where it is.
    """
    kind = {0: "a whole number of 0 or more", 1: "a positive whole number"}.get(
        minimum, f"a whole number of at least {minimum}"
    )
    reason = f" ({why})" if why else ""

    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text):
            # Not repeated: what is typed where a number belongs may be anything, a person's
            # e-mail address or phone number among it (`incident show jan@...`), and errors
            # carry no personal data. (int() would take "+31 6..." for a number, too.)
            raise argparse.ArgumentTypeError(
                f"not {kind}{reason}, written in digits (what was given is not repeated: "
                "it may be personal data)"
            )
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not {kind}{reason}")
        if value > _LARGEST:
            # No id or count the store keeps goes past it; SQLite refused it as an overflow,
            # which ended the command as an internal error.
            raise argparse.ArgumentTypeError(f"{text} is too large (at most {_LARGEST})")
        return value

    return parse


def tell(line: str) -> None:
    """A line for the operator on standard error, as it is: standard output stays the
    command's output (the one JSON document under ``--json``)."""
    print(line, file=sys.stderr)


def refuse_directory(path: Path, *, option: str, example: str) -> None:
    """Exit-2 error when the file an option names is an existing directory."""
    if path.is_dir():
        raise ConfigError(option, "", f"{path} is a directory; name a file, e.g. {path / example}")


def make_folder(path: Path, *, option: str) -> None:
    """The folder an option names, made if missing; exit-2 error if it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(option, "", f"{path} cannot be a folder ({reason})") from None


def check_writable(path: Path, *, option: str, example: str) -> None:
    """Exit-2 error now if the file an option names could not be written later.

    For a command that records something before it writes the file (``incident open``):
    the record must not be left behind by an ``--out`` that was never going to work.
    """
    refuse_directory(path, option=option, example=example)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            option, "", f"cannot make the folder of {path} ({exc.strerror or type(exc).__name__})"
        ) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(option, "", f"cannot write {path} (permission denied)")


def write_output(path: Path, text: str, *, option: str, example: str) -> None:
    """Write ``text`` to the file an ``--out``-style option names; exit-2 errors if it cannot.

    A directory is refused, as ``sort -o`` and ``gcc -o`` refuse one, rather than guessed
    into: the option names a file, and the message suggests one inside that directory.
    Missing parent folders are created.

    Args:
        path: the file to write.
        text: its contents (UTF-8).
        option: the option's name for messages (``--out``).
        example: a file name to suggest when ``path`` is a directory.
    """
    refuse_directory(path, option=option, example=example)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            option, "", f"cannot write {path} ({exc.strerror or type(exc).__name__})"
        ) from None
