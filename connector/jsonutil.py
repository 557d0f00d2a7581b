"""JSON on the hot path: :func:`loads` and :func:`dumps`, with orjson underneath.

A sync decodes every page a source sends, encodes every batch it delivers, and seals and hashes
every payload it queues; with the standard library that was a fifth of the connector's time per
record. orjson does the same work several times faster. Its output differs from ``json.dumps``
only where no reader cares: UTF-8 instead of ``\\uXXXX`` escapes, no spaces, and ``null``
for NaN and infinities (which never occur in customer data). Anything orjson refuses (integers
past 64 bits, NaN in the input, bytes in another encoding) falls back to the standard library,
so these never fail where ``json`` would have succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

#: Dates, datetimes and dataclasses go to ``default`` as ``json.dumps`` would send them, so a
#: caller's ``default=str`` sees the same values it always saw.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON document; raises ``ValueError`` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson reads UTF-8 only and refuses NaN/Infinity; the standard library reads both
        # (and UTF-16/32 with or without a BOM), and raises ValueError where neither can.
        try:
            return json.loads(data if isinstance(data, bytes | str) else bytes(data))
        except RecursionError:
            # Nested deeper than either parser goes (orjson stops at 1,024 levels): a few
            # kilobytes of "[" from a vendor. Its RecursionError reached no caller's
            # ValueError, and a sync reading such an answer ended as a bug.
            raise ValueError("JSON nested too deep to read") from None


def dumps(
    value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> bytes:
    """Compact JSON as UTF-8 bytes; ``sort_keys`` for a canonical form (hashes).

    Raises:
        TypeError: a value is not serialisable and there is no ``default`` for it.
    """
    option = _PASSTHROUGH | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError as exc:
        # Integers past 64 bits, non-string keys, nesting deeper than orjson allows: the
        # standard library takes them (or raises its own TypeError/ValueError).
        try:
            text = json.dumps(
                value,
                sort_keys=sort_keys,
                separators=(",", ":"),
                ensure_ascii=False,
                default=default,
            )
        except TypeError:
            raise TypeError(str(exc)) from exc
        return text.encode()
