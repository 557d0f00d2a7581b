"""Emptying at the destinations what a source no longer holds.

Only fields with a value are written, so without this a phone number a customer removed in
the shop stayed in the CRM for good. The store keeps, per queued row and per subject last
delivered, the set of fields the write gave a value (migration 27, ``Store.field_set``). A
write of a flow names in ``OutboundRecord.clear`` the fields its flow's last write gave a
value that the source now holds empty; the adapter empties them as its vendor does.

Left as they are, on purpose:

- a field another flow wrote last (two shops, or more, feeding one CRM: one without a
  phone number for the person must not empty another's). A field a flow gave before
  other flows' writes that gave it no value is still that flow's to empty, however many
  flows wrote since: beside the set last delivered the store keeps that of the last write
  of each other flow, latest first (``sent_before``, migration 30, then the rest in
  ``sent_earlier``, migration 31), and a flow's own set there empties only what none of
  the sets after it names;
- a field the destination's mapping marks ``keep_when_emptied`` (one its own users fill in
  too: a company name sales keep up to date);
- a field the source gave a value that could not be read (``Person.unread``: a phone
  number that is none), which is not empty at the source. The system still holds what the
  flow gave it before, so the write's field set keeps naming it (``Plan.held``): the source
  emptying it later empties it there too;
- a field the source's mapping does not read, or the destination's no longer writes (a
  mapping narrowed since: the system keeps what it had, as it did);
- the e-mail, which names the record, and the consent field, whose withdrawal is sent as
  the mapping's ``withdrawn`` instead;
- everything written before this store kept field sets (their rows have none).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from connector.model import CONSENT_FIELDS

if TYPE_CHECKING:
    from connector.model import Person
    from connector.state import Store
    from connector.systems import System

__all__ = ["Emptying", "Plan"]

_NONE: frozenset[str] = frozenset()


class Plan(NamedTuple):
    """What a write does with the fields its flow's last write gave a value and it gives
    none: ``empty`` those the source holds empty; ``held`` those whose value the source
    gave could not be read, left as the system holds them (what the flow gave before)."""

    empty: frozenset[str] = _NONE
    held: frozenset[str] = _NONE


_NOTHING = Plan()


class Emptying:
    """Works out, per write, which of the destination's fields to empty; numbers field sets.

    One per engine: it caches the field sets' numbers (a handful per flow) and, per source
    and destination, which fields may be emptied at all.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._numbers: dict[tuple[str, tuple[str, ...]], int] = {}
        self._emptiable: dict[tuple[str, str], dict[str, str]] = {}

    def number(self, flow: str, fields: Iterable[str], held: Collection[str] = _NONE) -> int:
        """The store's number for the set of ``fields``' names written by ``flow``, with
        those the write left ``held`` (:attr:`Plan.held`): the system holds the flow's value.

        Looked up by the names in the order the mapping gives them (the same for everyone a
        mapping writes), so a record costs one dictionary lookup. Makes the set the first
        time (a write of its own): never call it inside a transaction that may roll back.
        """
        key = (flow, (*fields, *sorted(held)) if held else tuple(fields))
        number = self._numbers.get(key)
        if number is None:
            # Kept only when made in a transaction of its own (see Store.field_set).
            durable = not self.store.db.in_transaction
            number = self.store.field_set(flow, key[1])
            if durable:
                self._numbers[key] = number
        return number

    def plan(
        self,
        flow: str,
        source: System,
        dest: System,
        person: Person,
        fields: Mapping[str, Any],
        earlier: tuple[int | None, ...],
    ) -> Plan:
        """Which fields of ``dest`` a write of ``flow`` now empties for ``person``, and which
        it leaves held (:class:`Plan`).

        ``earlier`` are the field sets of what waits in the outbox for them and of what was
        last delivered (either may have landed: a row waiting may be a retry of one whose
        answer was lost), and, where known, those of the last write of each other flow
        before that one, latest first (``delivered.sent_before``, then
        ``delivered.sent_earlier``: one per flow). Those of another flow, or none, empty
        nothing; of ``flow``'s own set among those before, only the fields no later write of
        another flow gave a value (the value there is still the one ``flow`` gave).
        """
        given: set[str] = set()
        theirs: set[str] = set()
        for number in earlier[:2]:
            if number is not None:
                wrote, names = self.store.field_names(number)
                (given if wrote == flow else theirs).update(names)
        for before in earlier[2:]:
            if before is None:
                break
            wrote, names = self.store.field_names(before)
            if wrote == flow:
                given.update(names - theirs)
                break  # one set per flow: those further back are older than this one
            theirs.update(names)
        if not given:
            return _NOTHING
        emptiable = self._emptiable_paths(source, dest)
        empty: list[str] = []
        held: list[str] = []
        for path in given:
            if path in fields or (name := emptiable.get(path)) is None:
                continue
            (held if name in person.unread else empty).append(path)
        if not (empty or held):
            return _NOTHING
        return Plan(frozenset(empty), frozenset(held))

    def unheld(
        self,
        flow: str,
        source: System,
        dest: System,
        person: Person,
        fields: Mapping[str, Any],
        earlier: tuple[int | None, ...],
        last: int | None,
    ) -> bool:
        """Whether a write of ``flow`` that sends what the last write sent (whose field set
        is ``last``) empties a field there: one its own last write left held
        (:attr:`Plan.held`), the value the source gave then could not be read and it holds
        none now; or, the last write being another flow's, one ``flow`` gave before it that
        it gave no value and the source no longer holds (two shops that now agree, one of
        them having had a phone number the customer removed). The payload is the same
        (neither sends the field), so without this the write was found unchanged and the
        value stayed at the destination for good."""
        if last is None:
            return False
        wrote, names = self.store.field_names(last)
        if wrote != flow:
            if len(earlier) <= 2 or earlier[2] is None:
                return False
        # The set is the write's fields and those it held: more names, some held.
        elif len(names) <= len(fields):
            return False
        return bool(self.plan(flow, source, dest, person, fields, earlier).empty)

    def still_held(
        self,
        flow: str,
        queued: int | None,
        allowed: Collection[str],
        fields: Mapping[str, Any],
        clear: Collection[str],
    ) -> frozenset[str]:
        """Of the field set ``queued`` with a row of ``flow`` (:meth:`number`), those its
        write leaves held (:attr:`Plan.held`), as delivered: a field the mapping no longer
        writes is not, nor one a correction gave a value or empties since it was queued."""
        if queued is None:
            return _NONE
        wrote, names = self.store.field_names(queued)
        # Nearly always the set is the row's fields: one set difference says so.
        beyond = names - fields.keys()
        if wrote != flow or not beyond:
            return _NONE
        return frozenset(name for name in beyond if name in allowed and name not in clear)

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
