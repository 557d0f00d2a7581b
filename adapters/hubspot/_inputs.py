"""A batch write's inputs: each record as HubSpot takes it, and which records go in one call.

HubSpot takes every property value as a string, and rejects a whole batch that names one
contact twice; the writes (:mod:`adapters.hubspot._writes`) build their calls with these.
``_as_property`` also turns a value the mapping sets itself into the text
``check --online`` holds against an enumeration's options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

from connector.adapter import OutboundRecord


def _by_email(records: Sequence[OutboundRecord]) -> list[dict[str, Any]]:
    """Batch inputs that name each contact by e-mail (``idProperty=email``)."""
    return [
        {
            "id": record.email,
            "idProperty": "email",
            # A unique trace id per input turns partial failures into a 207 that names the
            # failed inputs, instead of a 400 for the whole batch.
            "objectWriteTraceId": record.ref,
            "properties": {name: _as_property(value) for name, value in record.fields.items()},
        }
        for record in records
    ]


def _as_property(value: Any) -> str:
    """HubSpot takes every property value as a string; ``""`` clears a value."""
    if type(value) is str:  # nearly every value, once per field of every record sent
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        # Multiple-checkbox properties take their options separated by semicolons.
        return ";".join(_as_property(item) for item in value)
    return str(value)


def _chunks_without_duplicates(
    items: Sequence[tuple[int, OutboundRecord]],
    size: int,
    key: Callable[[OutboundRecord], str],
) -> Iterable[list[tuple[int, OutboundRecord]]]:
    chunk: list[tuple[int, OutboundRecord]] = []
    seen: set[str] = set()
    for item in items:
        value = key(item[1])
        if len(chunk) >= size or value in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(value)
    if chunk:
        yield chunk


def _email(record: OutboundRecord) -> str:
    return record.email.lower()


def _contact_id(record: OutboundRecord) -> str:
    return record.external_id or ""
