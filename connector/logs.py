"""Logging set-up: JSON lines for services, readable lines on a terminal, redaction always.

Rendering is structlog's (JSON lines, or key=value on a terminal) over the standard library's
loggers, so every module just uses ``logging.getLogger``.

The code logs subject ids, counts and field names only. :class:`RedactingFilter` is the last
line of defence in case a message or an exception ever carries an e-mail address, a phone
number or a bearer token anyway: it masks them before any handler sees the record.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
import unicodedata
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote, unquote_plus

from connector.requestids import KIND_PREFIXES

__all__ = ["RedactingFilter", "debug_wanted", "mask_contact_details", "redact", "setup_logging"]


def _marks() -> str:
    """A character class body of the combining marks (Unicode Mn, Mc, Me), as ranges.

    ``\\w`` leaves them out: an accent typed as its own character ("e" and U+0301, what
    many forms send) or a vowel sign of an Indic script broke an address in two, and the
    name before the mark stayed in clear. (The planes that hold marks: 0.04 s, once.)
    """
    codes = [
        code
        for code in (*range(0x20000), *range(0xE0100, 0xE01F0))
        if unicodedata.category(chr(code)) in ("Mn", "Mc", "Me")
    ]
    ranges: list[str] = []
    start = end = codes[0]
    for code in (*codes[1:], -1):
        if code == end + 1:
            end = code
            continue
        ranges.append(f"\\U{start:08x}-\\U{end:08x}" if end > start else f"\\U{start:08x}")
        start = end = code
    return "".join(ranges)


@functools.cache
def _email() -> re.Pattern[str]:
    """An address as people have them: letters of any script in the name and the domain
    ("müller@", "bloemen-café.nl"), with their combining marks, and the name's other
    characters (an apostrophe in "o'brien"). ASCII letters only let such a name through, or
    its head before the letter. Not begun by an apostrophe: one before the address quotes
    it ('jan@x.nl'), and stays. Built at the first redaction, not at every command's start.
    """
    mark = _marks()
    name = rf"[\w{mark}.%+\-!#$&*/=?^`{{|}}~]"
    domain = rf"[\w{mark}\-]+(?:\.[\w{mark}\-]+)*\.(?:[^\W\d_]|[{mark}]){{2,}}"
    # Begun only where a name can begin, not inside one: the leftmost match starts there
    # anyway, and without the look-behind a long run of such characters with no "@" was
    # scanned again from each of its characters (200,000 took minutes to log).
    return re.compile(rf"(?<!{name}){name}(?:{name}|')*@{domain}")


#: A data subject request's id (connector/requestids.py): the kind's prefix, the day it was
#: received and eight hex digits ("er-20260105-97368204"). About one id in 43 has hex
#: digits that are all digits, and the day and those read as a phone: masked, the journal's
#: "request completed" line said "er-<phone>" and could not be matched to its request. It is
#: matched before a phone can begin inside it, and left as it is: it names no one.
_REQUEST_ID = rf"\b(?:{KIND_PREFIXES})-(?:19|20)\d{{6}}-[0-9a-f]{{8}}\b"
#: Digits with the separators people write numbers with: spaces, dashes, brackets, and the
#: slashes and dots of Belgian and German numbers ("0470/12.34.56", "030/1234567"), which the
#: phone transform reads as numbers too. (An IP address is masked with them: also personal.)
#: A request id is matched as one first, and kept (:func:`_phone_unless_dates`).
_PHONE = re.compile(rf"(?P<request>{_REQUEST_ID})|(?<![\w])\+?\d[\d \-()./]{{7,}}\d(?![\w])")
#: What the phone pattern also matches and is no phone: dates ("2026-11-29", "29-11-2026",
#: "29.11.2026", "29/11/2026"), alone or in
#: a span ("2026-11-29 - 2026-12-13"), each perhaps with an hour ("2026-11-29 14"). Operators
#: write them in reasons (an extension's, a readmission's) and the connector in deadlines;
#: masked, an audit entry lost the one fact it was written for. A run of digits beside a
#: date still reads as a phone ("2026-11-29 06 12345678" is masked whole).
_DATE = (
    r"(?:(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    # ... and as the Dutch and Germans write them: 30-11-2026, 30.11.2026, 30/11/2026.
    r"|(?:0?[1-9]|[12]\d|3[01])(?:-(?:0?[1-9]|1[0-2])-|\.(?:0?[1-9]|1[0-2])\."
    r"|/(?:0?[1-9]|1[0-2])/)(?:19|20)\d\d)(?: \d\d)?"
)
_DATES_ONLY = re.compile(rf"{_DATE}(?:(?: - | |-){_DATE})*")
#: ... nor a count or an amount written with thousands separators, up to eight digits
#: ("1.250.000", "12.345.678" of "EUR 12.345.678,90"; it never starts with 0, a phone
#: mostly does, and a phone has nine digits or more: "612.345.678" stays masked, as an IP
#: address does, "81.204.123.145"), nor an ISO date written with slashes or dots
#: ("2026/11/30").
_NOT_A_PHONE = re.compile(
    r"[1-9]\d?\.\d{3}\.\d{3}"
    r"|(?:19|20)\d\d([/.])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])"
)
#: A credential after its name; after "Authorization:" the scheme word ("Bearer", "Basic")
#: is passed over, so the token itself is masked, not the word.
_BEARER = re.compile(
    r"(?i)(bearer|token|secret|key|password|authorization)([\"'=: ]+)"
    r"(?:(?:bearer|basic|token)\s+)?[^\s\"',&]+"
)

#: A URL in text: httpx's own errors carry the full URL of the request, query string and all,
#: and a query is where a lookup by e-mail puts the address (``?email=...``).
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+")
#: An address as a URL carries it, "@" as "%40" (and "+" as "%2B"): the e-mail pattern looks
#: for "@" and passed it. A candidate is masked when its decoded text holds an address.
_PERCENT_EMAIL = re.compile(
    # Begun where a name can begin (not inside one), so a long word costs one pass.
    r"(?<![\w.\-+~!$&*=^`|{}%])(?:[\w.\-+~!$&*=^`|{}]|%[0-9A-Fa-f]{2})+"
    r"%40(?:[\w.\-]|%[0-9A-Fa-f]{2})+"
)

#: A phone number as a URL or a form carries it: "+" as "%2B", a space as "%20" or "+"
#: (``?phone=%2B31%206...``, a form-encoded webhook body). The phone pattern ends a number at
#: the "%" or the "+", and passed it. A candidate is masked when its decoded text is a phone.
#: Begun where a number can begin (not inside a word, nor inside an escape).
_ENCODED_PHONE = re.compile(r"(?<![\w%])(?:%2[Bb])?\d(?:[\d\-()./+]|%[0-9A-Fa-f]{2}){7,}\d(?![\w])")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: How deep :func:`_redacted` goes into nested containers; deeper is masked whole.
_DEPTH = 16


def debug_wanted() -> bool:
    """Whether ``KLANTSYNC_DEBUG`` asks for tracebacks (their frames hold values, so only
    when someone asks)."""
    return os.environ.get("KLANTSYNC_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def redact(text: str) -> str:
    """Mask e-mail addresses, phone numbers and credential-looking values in ``text``, and
    drop the query string (and credentials) of every URL in it."""
    text = _URL.sub(_url_without_query, text)
    text = _email().sub("<email>", _PERCENT_EMAIL.sub(_percent_email, text))
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    return _PHONE.sub(_phone_unless_dates, _ENCODED_PHONE.sub(_encoded_phone, text))


def mask_contact_details(text: str) -> str:
    """Mask e-mail addresses and phone numbers in ``text``, and nothing else.

    For an operator's account of a breach: "the API key leaked" is what it is about, and
    :func:`redact` would mask the word after "key" as a credential.
    """
    text = _email().sub("<email>", _PERCENT_EMAIL.sub(_percent_email, text))
    return _PHONE.sub(_phone_unless_dates, _ENCODED_PHONE.sub(_encoded_phone, text))


def _url_without_query(match: re.Match[str]) -> str:
    # Imported here: connector.http brings httpx, which a command that logs nothing with a
    # URL in it need not load.
    from connector.http import redact_url

    return redact_url(match.group())


def _percent_email(match: re.Match[str]) -> str:
    found = match.group()
    return "<email>" if _email().search(unquote(found)) else found


def _encoded_phone(match: re.Match[str]) -> str:
    found = match.group()
    if "%" not in found and "+" not in found:
        return found  # as it stands: the phone pattern reads it
    decoded = _PHONE.fullmatch(unquote_plus(found))
    if decoded is None or _phone_unless_dates(decoded) != "<phone>":
        return found
    return "<phone>"


def _phone_unless_dates(match: re.Match[str]) -> str:
    found = match.group()
    if match.group("request"):
        return found
    kept = _DATES_ONLY.fullmatch(found) or _NOT_A_PHONE.fullmatch(found)
    return found if kept else "<phone>"


class RedactingFilter(logging.Filter):
    """Redacts the message, its arguments, extra fields and exception text of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _redacted(value))
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's type and redacted message travel as a field; the traceback
            # object is dropped, because frames can hold values a renderer might print.
            # KLANTSYNC_DEBUG asks for the traceback: its text (file, line, source; no
            # frame's values), redacted like the rest.
            exc = record.exc_info[1]
            text = f"{type(exc).__name__}: {exc}"
            if debug_wanted():
                text = "".join(traceback.format_exception(exc)).rstrip()
            record.exception = redact(text)
            record.exc_info = None
            record.exc_text = None
        return True


def _redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: redact every string in the event's values (the last step)."""
    for key, value in list(event.items()):
        event[key] = _redacted(value)
    return event


def _redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it redacted, in lists, tuples, sets and dicts (their
    keys too) all the way down; anything else as it is.

    An extra is not always text: a list of the keys of a vendor's body, a dict of details.
    The renderer writes those out whole, so a string inside one is redacted as any other.
    """
    if isinstance(value, str):
        return redact(value)
    if not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return value
    if depth >= _DEPTH:
        return "<redacted>"  # a structure this deep (or one that holds itself) is not read
    if isinstance(value, Mapping):
        return {_redacted(k, depth + 1): _redacted(v, depth + 1) for k, v in value.items()}
    items = [_redacted(item, depth + 1) for item in value]
    return items if isinstance(value, list) else tuple(items)  # a set's stays hashable


def _formatter(use_json: bool) -> logging.Formatter:
    """structlog renders stdlib records: JSON lines for services, key=value on a terminal."""
    import structlog

    pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure the ``klantsync`` logger on stderr, with redaction twice over.

    The filter masks the message and extras of each record; the structlog chain redacts the
    rendered event again, exception text included.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = _redacting_handler(use_json)
    root = logging.getLogger("klantsync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # The libraries underneath log too: apscheduler a job that raised, asyncio a task's lost
    # exception, uvicorn an error in a request (its own logging set-up is turned off, see
    # httpapp). Without a handler of their own, Python printed those to stderr as they were,
    # traceback and exception text included, and that text can hold an e-mail address. Their
    # warnings and errors now pass the same redaction, as one field, without the traceback.
    foreign = _redacting_handler(use_json)
    foreign.setLevel(logging.WARNING)
    setattr(foreign, _OURS, True)
    everything = logging.getLogger()
    everything.handlers[:] = [h for h in everything.handlers if not getattr(h, _OURS, False)]
    everything.addHandler(foreign)


#: Marks the handler set on the root logger, so a second set-up replaces it (and leaves the
#: handlers others put there, a test runner's say, alone).
_OURS = "klantsync_redacting"


def _redacting_handler(use_json: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(use_json))
    handler.addFilter(RedactingFilter())
    return handler
