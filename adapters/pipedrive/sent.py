"""What the adapter last wrote as a person's own e-mail and phone, to tell a change from a
reordered list.

Pipedrive keeps several e-mails and phones per person, one of them primary. The connector's
value is the primary one; a salesperson may add others, or make one of them primary. A
value the connector sends that is in the list beside another primary one is either
unchanged (the salesperson reordered the list: their choice stays) or the customer's new
one, changed at the source, which the salesperson had added already: then it must become
the primary one, or the address the customer gave up stays the person's primary, a
newcomer taking it up is written onto the mover's person, and his erasure deletes hers.
The list alone cannot tell the two apart; what the connector last sent can.

Kept in memory for the adapter's life, as keyed digests only: the key is made when the
adapter is and never leaves the process, so no address or number is held for this, and
none can be read back. A person the adapter has not written since it started is
:data:`None` (unknown) to :meth:`LastSent.changed`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Final, Literal

from connector.model import normalise_email

__all__ = ["Kind", "LastSent"]

#: Which of a person's lists a value is the connector's entry of.
Kind = Literal["emails", "phones"]

_KEY_BYTES: Final = 32
#: In place of a digest: the adapter removed its own entry from the list (the customer
#: removed the number at the source), so the list holds none of the connector's.
_REMOVED: Final = b""


class LastSent:
    """Per person and list, a digest of the value the adapter last wrote as theirs."""

    def __init__(self) -> None:
        self._key = os.urandom(_KEY_BYTES)
        self._by_person: dict[tuple[int, Kind], bytes] = {}

    def changed(self, person_id: int, kind: Kind, value: str) -> bool | None:
        """Whether ``value`` differs from what the adapter last wrote to the person's
        ``kind`` list; ``None`` when it wrote none since it started."""
        last = self._by_person.get((person_id, kind))
        return None if last is None else last != self._digest(value)

    def last_of(self, person_id: int, kind: Kind, values: Iterable[str]) -> str | None:
        """The one of ``values`` (a person's ``kind`` list as it stands) that the adapter
        last wrote there; ``None`` when none is, or it wrote none since it started."""
        last = self._by_person.get((person_id, kind))
        if last is None:
            return None
        return next((value for value in values if self._digest(value) == last), None)

    def knows(self, person_id: int, kind: Kind) -> bool:
        """Whether the adapter wrote (or emptied) the person's ``kind`` entry since it
        started: then :meth:`last_of` finding none means the list holds none of its own."""
        return (person_id, kind) in self._by_person

    def emptied(self, person_id: int, kind: Kind) -> None:
        """The person's ``kind`` list was written without the connector's entry."""
        self._by_person[(person_id, kind)] = _REMOVED

    def wrote(self, person_id: int, kind: Kind, value: str) -> None:
        """The person's ``kind`` list was written with ``value`` as the connector's entry."""
        self._by_person[(person_id, kind)] = self._digest(value)

    def forget(self, person_id: int) -> None:
        """The person was erased: nothing of theirs is kept."""
        for kind in ("emails", "phones"):
            self._by_person.pop((person_id, kind), None)

    def _digest(self, value: str) -> bytes:
        # Compared as other_entries_kept compares entries: as subjects are told apart.
        text = normalise_email(value).encode()
        return hashlib.blake2b(text, key=self._key, digest_size=16).digest()
