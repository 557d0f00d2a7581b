"""Which entries of a person's e-mail and phone lists are the connector's own, and the lists
a write sends with its value as that entry.

Pipedrive keeps several e-mails and phones per person, one of them primary; a salesperson's
others stay as they are. :mod:`.sent` remembers what the adapter last wrote there; this
part reads a person's lists against it, and tells it what a write that landed sent.
"""

from __future__ import annotations

from typing import Any

from adapters.pipedrive._calls import PersonCalls
from adapters.pipedrive.payloads import other_entries_kept, without_own_entry
from adapters.pipedrive.sent import Kind


class OwnEntries(PersonCalls):
    """A person's e-mail and phone lists, told the connector's entry from the others."""

    def _list_with(
        self, person_id: int, person: dict[str, Any], kind: Kind, value: str | None
    ) -> list[dict[str, Any]] | None:
        """The person's ``kind`` list to send with ``value`` as the connector's entry
        (:func:`other_entries_kept`), told whether ``value`` changed since the adapter last
        wrote it there, and which entry that was; ``None`` when there is no value to send."""
        if value is None or not value.strip():
            return None
        entries = person.get(kind)
        changed = self.sent.changed(person_id, kind, value)
        if kind == "phones":
            # "": no entry is known as the connector's, so every one stays beside the new
            # number. Taken for its own, the primary one was replaced: an office number a
            # salesperson made primary was lost, and the number the customer gave up stayed.
            former: str | None = self._own_phone(person_id, entries) or ""
        else:
            # The primary e-mail where the last write is not known: the person was found,
            # and is written, by their primary address (_patch_holder).
            former = self.sent.last_of(person_id, kind, _entry_values(entries))
        label = "work" if kind == "emails" else None
        return other_entries_kept(entries, value, label=label, changed=changed, former=former)

    def _phones_without_own(
        self, person_id: int, person: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The person's phone list without the connector's entry (:func:`without_own_entry`),
        for a phone the source now holds empty; ``None`` when no entry is known as its own
        (:meth:`_own_phone`): nothing is removed."""
        entries = person.get("phones")
        own = self._own_phone(person_id, entries)
        return None if own is None else without_own_entry(entries, own)

    def _own_phone(self, person_id: int, entries: Any) -> str | None:
        """The value of the connector's entry in a person's phone list; ``None`` when no
        entry is known as its own.

        Written since the adapter started, it is the number the adapter last wrote, where
        listed; not listed (taken out by the adapter, as the customer removed it, or removed
        or edited in Pipedrive), every entry is a salesperson's. Not written since (a
        restart; a ``dsr rectify`` beside the daemon), Pipedrive's entries carry nothing
        that tells whose they are (``value``, ``primary``, ``label``, which salespeople set
        too): a sole entry is taken for the connector's, as a flow that empties or changes
        the number most likely wrote it; of several, a salesperson may have made theirs
        primary, so none is taken (:meth:`_own_phone_untold`).
        """
        values = _entry_values(entries)
        if self.sent.knows(person_id, "phones"):
            return self.sent.last_of(person_id, "phones", values)
        return values[0] if len(values) == 1 else None

    def _own_phone_untold(self, person_id: int, person: dict[str, Any]) -> bool:
        """Whether the person's phone list holds several entries and the adapter cannot tell
        which is its own (it wrote none since it started): a phone to empty is then left."""
        several = len(_entry_values(person.get("phones"))) > 1
        return several and not self.sent.knows(person_id, "phones")

    def _wrote(self, person_id: int, address: str | None, phone: str | None) -> None:
        """Remember what a write that landed sent as the person's own e-mail and phone."""
        written: tuple[tuple[Kind, str | None], ...] = (("emails", address), ("phones", phone))
        for kind, value in written:
            if value:
                self.sent.wrote(person_id, kind, value)


def _entry_values(entries: Any) -> list[str]:
    """The values of a person's ``emails`` or ``phones`` list."""
    if not isinstance(entries, list):
        return []
    return [
        str(e["value"]) for e in entries if isinstance(e, dict) and isinstance(e.get("value"), str)
    ]
