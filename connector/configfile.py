"""Reading the TOML files of a configuration (the config itself and its mappings).

Both kinds of file fail the same ways (missing, a folder, unreadable, a pipe or a device,
far too long, not UTF-8, not TOML, a key of the wrong type), and every one of those must end
as a :class:`ConfigError` naming the file and the key, never as a traceback or a wait.
:func:`read_toml` and :func:`pydantic_error` are that shared wording, and :class:`Problems`
the telling of every problem a file holds at once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from connector.errors import ConfigError
from connector.smallfile import UnfitFileError, read_small

__all__ = ["MAX_TOML_BYTES", "Problems", "pydantic_error", "read_toml"]

T = TypeVar("T")

#: The most bytes a config or a mapping file is read for: far above any real one (a config
#: of a dozen systems is some tens of KiB, a mapping a few), far below what would strain the
#: memory of a small server.
MAX_TOML_BYTES = 1 << 20


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed contents of ``path``; :class:`ConfigError` naming it when it cannot be read.

    Args:
        path: the file to read.
        what: what the file is, for messages ("config file", "mapping file").
    """
    file = str(path)
    try:
        # Judged by what was opened (connector/smallfile.py): `-c` naming a named pipe held
        # every command for good, waiting for a writer, and a device (/dev/zero) or a file
        # far longer than a config (a log, a disk image named by mistake) was read whole
        # into memory, with no word said.
        text = read_small(path, what.removesuffix(" file"), MAX_TOML_BYTES).decode("utf-8")
    except UnfitFileError as unfit:
        raise ConfigError(file, "", f"{what} {unfit}") from None
    except FileNotFoundError:
        raise ConfigError(file, "", f"{what} not found") from None
    except IsADirectoryError:
        raise ConfigError(file, "", f"is a directory; name the {what} itself") from None
    except PermissionError:
        raise ConfigError(file, "", f"{what} cannot be read (permission denied)") from None
    except UnicodeDecodeError as exc:
        # TOML is UTF-8 by definition; a file saved as Latin-1 or UTF-16 stops here.
        raise ConfigError(
            file, "", f"is not UTF-8 text (at byte offset {exc.start}); save the {what} as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(file, "", f"{what} cannot be read ({exc.strerror or exc})") from None
    except ValueError:
        # A NUL in the name ("embedded null byte"): no file has one. Shown escaped, as a
        # NUL written to a terminal is no character at all.
        shown = file.replace("\x00", "\\u0000")
        raise ConfigError(
            shown, "", f"no {what} has such a name (it holds a NUL character)"
        ) from None
    try:
        # An editor's byte-order mark in front (Windows Notepad writes one) is no part of the
        # text, as in a secret file: TOML refused it as an invalid statement at line 1,
        # column 1, a line that reads as it should. Dropped after decoding, so a decoding
        # error's offset still counts the file's own bytes.
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"is not valid TOML ({exc})") from None


#: pydantic's words for a value of the wrong shape name Python's classes ("a valid dictionary
#: or instance of ProcessorSettings", "not a valid path for <class 'pathlib.Path'>"), which
#: someone editing a TOML file has never seen: said in TOML's terms instead.
_SHAPES = {
    "model_type": "must be a table ([section] or { key = value, ... }), not a single value",
    "dict_type": "must be a table ([section] or { key = value, ... }), not a single value",
    "path_type": 'must be a path, written as a string in quotes (e.g. "certs/ca.pem")',
}


#: What a value of TOML's own types looks like, for a value of another type given: pydantic
#: said "Input should be a valid date" of ``"2026-01-15"``, a valid date to whoever wrote it
#: (in quotes, it is text), and "a valid integer" of ``"6"``.
_TYPES = {
    "int_type": "must be a whole number (e.g. 6)",
    "float_type": "must be a number (e.g. 30 or 0.5)",
    "bool_type": "must be true or false",
    "date_type": "must be a date, written as TOML writes one (e.g. 2026-01-15)",
    "string_type": 'must be text in quotes (e.g. "...")',
    "list_type": 'must be a list in brackets (e.g. ["..."])',
    "finite_number": "must be a finite number (inf and nan are none)",
}

#: pydantic's words for a number past its bounds, said as a rule for the key.
_BOUNDS = {
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
}


def _words(error: Any, key: str) -> str | None:
    """What pydantic found wrong with one value, in the terms of the file being edited; None
    for a rule of its own ("value_error") or one not worded here."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _TYPES:
        words = _TYPES[kind]
        if isinstance(error.get("input"), str):
            # The commonest cases: the right value, quoted, or one item without its list.
            # Said so, the value itself not repeated (it could be a secret pasted in the
            # wrong place).
            if kind == "list_type":
                words += ", also for one item"
            elif kind != "string_type":
                words += ", without quotes (in quotes it is text)"
        return words
    if kind in _BOUNDS:
        words = _BOUNDS[kind].format(**{k: _number(v) for k, v in ctx.items()})
        limit = ctx.get("le", ctx.get("lt"))
        if key.endswith("seconds") and limit is not None:
            # "at most 86400" asks the reader to work out that it is a day.
            words += f" seconds ({_duration(limit)})"
        return words
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        words = f"must hold at least {least} item{'s' if least != 1 else ''}"
        return words + ("; the list is empty" if ctx.get("actual_length") == 0 else "")
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    return None


def _duration(seconds: float) -> str:
    """A bound of seconds as one says it: "an hour", "4 hours", "a day", "7 days"."""
    for size, one, unit in (
        (86400, "a day", "days"),
        (3600, "an hour", "hours"),
        (60, "a minute", "minutes"),
    ):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return one if count == 1 else f"{count} {unit}"
    return f"{_number(seconds)} s"


def _number(value: object) -> str:
    """A bound as the file would write it: 1, not 1.0; 36500, not 3.65e+04."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def pydantic_error(file: str, prefix: str, exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, as a :class:`ConfigError` naming its dotted key; the
    others in one table (two mistyped keys of ``[sync]``) as its ``also``."""
    first, *others = (_one_error(file, prefix, error) for error in exc.errors())
    first.also = tuple(others)
    return first


def _one_error(file: str, prefix: str, first: Any) -> ConfigError:
    """One problem pydantic found, as a :class:`ConfigError` naming its dotted key."""
    key = prefix
    for part in first["loc"]:
        # An array's item by its place, as flows[0] is: "purposes.1" read as a key "1".
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    if first["type"] == "extra_forbidden":
        return ConfigError(file, key, "unknown key (check the spelling)")
    if first["type"] == "missing":
        return ConfigError(file, key, "required key is missing")
    if first["type"] in _SHAPES:
        return ConfigError(file, key, _SHAPES[first["type"]])
    if first["type"] == "value_error" and "error" in first.get("ctx", {}):
        # Our own validators' words, without pydantic's "Value error, " in front.
        return ConfigError(file, key, str(first["ctx"]["error"]))
    # Otherwise the message is pydantic's description of the rule; the input value is never
    # included, because it could be a secret or personal data.
    return ConfigError(file, key, _words(first, key) or str(first["msg"]))


class Problems:
    """The problems one load of a config (or of a mapping) finds, each where it was found,
    told together: an operator fixes them in one go rather than one ``check`` at a time."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def add(self, problem: ConfigError) -> None:
        # One table's several problems (pydantic_error's) are told as the others are.
        self.found += [problem, *problem.also]
        problem.also = ()

    def attempt(self, work: Callable[[], T]) -> T | None:
        """What ``work`` gives, or None with its ConfigError kept to be told."""
        try:
            return work()
        except ConfigError as exc:
            self.add(exc)
            return None

    def raise_any(self) -> None:
        """Raise the first problem found, the others as its ``also``; nothing if none."""
        if self.found:
            first, *others = self.found
            first.also = tuple(others)
            raise first
