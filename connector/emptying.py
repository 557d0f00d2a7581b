"""Emptying at the destinations what a source no longer holds.

Only fields with a value are written, so without this a phone number a customer removed in
the shop stayed in the CRM for good. The store keeps, per queued row and per subject last
delivered, the set of fields the write gave a value (migration 27, ``Store.field_set``). A
write of a flow names in ``OutboundRecord.clear`` the fields its flow's last write gave a
value that the source now holds empty; the adapter empties them as its vendor does.

Left as they are, on purpose:

- a field another flow wrote last (two shops feeding one CRM: one without a phone number
  for the person must not empty the other's);
- a field the destination's mapping marks ``keep_when_emptied`` (one its own users fill in
  too: a company name sales keep up to date);
- a field the source gave a value that could not be read (``Person.unread``: a phone
  number that is none), which is not empty at the source;
- a field the source's mapping does not read, or the destination's no longer writes (a
  mapping narrowed since: the system keeps what it had, as it did);
- the e-mail, which names the record, and the consent field, whose withdrawal is sent as
  the mapping's ``withdrawn`` instead;
- everything written before this store kept field sets (their rows have none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connector.model import CONSENT_FIELDS

if TYPE_CHECKING:
    from connector.model import Person
    from connector.state import Store
    from connector.systems import System

__all__ = ["Emptying"]

_NONE: frozenset[str] = frozenset()


class Emptying:
    """Works out, per write, which of the destination's fields to empty; numbers field sets.

    One per engine: it caches the field sets' numbers (a handful per flow) and, per source
    and destination, which fields may be emptied at all.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._numbers: dict[tuple[str, tuple[str, ...]], int] = {}
        self._emptiable: dict[tuple[str, str], dict[str, str]] = {}

    def number(self, flow: str, fields: Mapping[str, Any]) -> int:
        """The store's number for the set of ``fields``' names written by ``flow``.

        Looked up by the names in the order the mapping gives them (the same for everyone a
        mapping writes), so a record costs one dictionary lookup. Makes the set the first
        time (a write of its own): never call it inside a transaction that may roll back.
        """
        key = (flow, tuple(fields))
        number = self._numbers.get(key)
        if number is None:
            # Kept only when made in a transaction of its own (see Store.field_set).
            durable = not self.store.db.in_transaction
            number = self.store.field_set(flow, key[1])
            if durable:
                self._numbers[key] = number
        return number

    def to_empty(
        self,
        flow: str,
        source: System,
        dest: System,
        person: Person,
        fields: Mapping[str, Any],
        earlier: tuple[int | None, int | None],
    ) -> frozenset[str]:
        """The fields of ``dest`` a write of ``flow`` now empties for ``person``.

        ``earlier`` are the field sets of what waits in the outbox for them and of what was
        last delivered (either may have landed: a row waiting may be a retry of one whose
        answer was lost). Those of another flow, or none, empty nothing.
        """
        given: set[str] = set()
        for number in earlier:
            if number is not None:
                wrote, names = self.store.field_names(number)
                if wrote == flow:
                    given.update(names)
        if not given:
            return _NONE
        emptiable = self._emptiable_paths(source, dest)
        empty = [
            path
            for path in given
            if path not in fields
            and (name := emptiable.get(path)) is not None
            and name not in person.unread
        ]
        return frozenset(empty) if empty else _NONE

    def _emptiable_paths(self, source: System, dest: System) -> dict[str, str]:
        """``dest``'s field path -> canonical name, for the fields a write from ``source``
        may empty: ``dest`` writes them (not the e-mail, not a consent field, not one its
        mapping keeps when emptied), and ``source`` reads them."""
        key = (source.name, dest.name)
        found = self._emptiable.get(key)
        if found is None:
            consent = set(CONSENT_FIELDS.values())
            reads = source.mapping.fields
            found = {
                spec.path: spec.canonical
                for spec in dest.mapping.sent_fields()
                if spec.canonical != "email"
                and spec.canonical not in consent
                and not spec.keep_when_emptied
                and (read := reads.get(spec.canonical)) is not None
                and read.inbound
            }
            self._emptiable[key] = found
        return found
