"""Who of a page's people is on the suppression list (erased): by e-mail, by phone, or by
the source's own record id.

Apart from the page's work because an erasure's reach is its own concept: the keyed forms a
person is listed under (addresses as they were read before, phone numbers, source records),
and the housemate who shares an erased person's number.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.crypto import Keyring
from connector.ids import SystemIds
from connector.model import Person, earlier_email_forms
from connector.moves import subjects_of_records
from connector.state import Store

__all__ = ["suppressed_on_page"]


def suppressed_on_page(
    store: Store,
    keyring: Keyring,
    ids: SystemIds,
    source: str,
    people: Mapping[str, tuple[str | None, Person]],
) -> set[str]:
    """Which of a page's subjects are on the suppression list: by e-mail, by phone, or
    by the source's own record id.

    An erasure lists the person's phone number and their record in each source too, so
    a restored backup that holds them under another address (even one the connector
    never saw) but the same number, or as the same shop record, is stopped as well.
    """
    if not store.anyone_suppressed():
        return set()  # nobody erased yet: no phone or record needs its keyed hash either
    phones: dict[str, list[str]] = {}
    records: dict[str, list[str]] = {}
    by_record: dict[str, list[str]] = {}
    legacy: dict[str, str] = {}
    for sid, (external_id, person) in people.items():
        phone = person.get("phone")
        if isinstance(phone, str) and phone:
            phones.setdefault(keyring.subject_id(phone), []).append(sid)
        if external_id:
            records.setdefault(ids.record_key(source, external_id), []).append(sid)
            by_record.setdefault(external_id, []).append(sid)
        email = person.email
        for former in earlier_email_forms(email) if email is not None else ():
            # Erased before addresses were read as they are now (in NFC, with the
            # domain in punycode): suppressed under the form they had then.
            legacy[keyring.subject_id(former)] = sid
    # The subject the identity map knows each record under, where it is not the page's: the
    # address the record had when last taken. Erased under it (a request in progress, which
    # suppressed that address and has not yet come to the record itself), the record is the
    # erased person's under their new one: no move is made from a suppressed subject, so
    # taken as someone new, they were queued and written under the new address while the
    # erasure went on, and the record that write made was left at the system for good.
    formerly: dict[str, list[str]] = {}
    for external_id, former in subjects_of_records(store, source, list(by_record)).items():
        if former not in by_record[external_id]:
            formerly.setdefault(former, []).extend(by_record[external_id])
    listed = store.suppressed([*people, *phones, *records, *legacy, *formerly])
    found = {sid for sid in people if sid in listed}
    found.update(sid for former, sids in formerly.items() if former in listed for sid in sids)
    found.update(sid for former_id, sid in legacy.items() if former_id in listed)
    for record_key, sids in records.items():
        if record_key in listed:
            found.update(sids)
    by_phone = {sid for phone, sids in phones.items() if phone in listed for sid in sids}
    if by_phone - found:
        # A number is shared in a household: someone the store knew already, under an
        # address of their own, is a housemate of the erased, not them. Stopped, they were
        # never synced again (not even their withdrawal of consent). Someone new with the
        # number may be the erased person under another address (a restored backup).
        known = store.subject_numbers(list(by_phone - found))
        found.update(sid for sid in by_phone if sid not in known)
    return found
