"""Logging set-up: JSON lines for services, readable lines on a terminal, redaction always.

The code logs subject ids, counts and field names only. :class:`RedactingFilter` is the last
line of defence in case a message or an exception ever carries an e-mail address, a phone
number or a bearer token anyway: it masks them before any handler sees the record.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

__all__ = ["RedactingFilter", "redact", "setup_logging"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d \-()]{7,}\d(?![\w])")
_BEARER = re.compile(r"(?i)(bearer|token|secret|key|password|authorization)([\"'=: ]+)[^\s\"',&]+")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """Mask e-mail addresses, phone numbers and credential-looking values in ``text``."""
    text = _EMAIL.sub("<email>", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    return _PHONE.sub("<phone>", text)


class RedactingFilter(logging.Filter):
    """Redacts the message, its arguments, extra fields and exception text of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = redact(f"{type(exc).__name__}: {exc}")
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD
        )
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_text:
            line += f"\n  {record.exc_text}"
        return line


def setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure the root ``klantsync`` logger on stderr, with redaction."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("klantsync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
