"""The records the store takes and hands back: queued payloads, outbox rows, acknowledgements,
what a page reads of what was sent and refused, dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Ack", "DeadLetter", "OutboxRow", "PageLetter", "PageSent", "QueuedPayload"]

# The three records below are made once per record of every sync (a page queued, a batch
# read back, an acknowledgement): named tuples, because a frozen dataclass's constructor
# costs ~2.5 us a record on its own here (it sets each field through object.__setattr__).


class QueuedPayload(NamedTuple):
    """A sealed payload ready to enter the outbox."""

    system: str
    subject_id: str
    payload: bytes
    payload_hash: str
    #: The fields it gives a value, as :meth:`Store.field_set` numbers them (migration 27).
    sent: int | None = None


class OutboxRow(NamedTuple):
    """A payload waiting for delivery."""

    id: int
    system: str
    subject_id: str
    flow: str
    payload: bytes
    payload_hash: str
    attempts: int
    subject_no: int
    #: A write queued under the person's former address, sealed, that may have landed
    #: (schema 19, connector/moves.py): sent first where the system's id is not known.
    former: bytes | None = None
    #: The fields it gives a value (:meth:`Store.field_set`); ``None`` for rows of before.
    sent: int | None = None


class Ack(NamedTuple):
    """A delivered outbox row: the system's id for the subject and what was sent.

    ``subject_no`` is the row's (:attr:`OutboxRow.subject_no`); without it the store looks
    the subject up.
    """

    outbox_id: int
    subject_id: str
    external_id: str | None
    payload_hash: str
    subject_no: int | None = None
    #: The fields the write gave a value (:meth:`Store.field_set`), kept as delivered.
    sent: int | None = None


class PageSent(NamedTuple):
    """Per system, per subject, the field set (:meth:`Store.field_set`) of the payload
    waiting in the outbox and of the one last delivered, where they have one; that of the
    last write of another flow before the one last delivered (migration 30); and those of
    the last writes of the flows before that one, latest first (migration 31)."""

    queued: dict[str, dict[str, int]]
    delivered: dict[str, dict[str, int]]
    before: dict[str, dict[str, int]]
    earlier: dict[str, dict[str, tuple[int, ...]]]


class PageLetter(NamedTuple):
    """A dead letter as a page reads it (:meth:`Store.page_dead_letters`)."""

    flow: str
    #: The hash of the payload refused; ``None`` for one set aside, not refused.
    payload_hash: str | None


@dataclass(frozen=True)
class DeadLetter:
    """A record a system rejected for good; ``reason`` holds a category or status only.

    One per subject and system: ``reason`` and ``created_at`` are those of the latest
    refusal, ``first_refused_at`` and ``refusals`` say since when and how often it was refused.
    """

    id: int
    system: str
    subject_id: str
    flow: str
    reason: str
    created_at: str
    first_refused_at: str
    refusals: int
