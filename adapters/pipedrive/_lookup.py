"""Finding a subject's persons: ``find`` (with what Pipedrive keeps beside them),
``find_records`` and ``find_people``.

Whose a person is (:meth:`SubjectLookup._held`, :func:`_primary_is`) is the rule the writes
and the erasure follow too, so the notes they give when it finds nobody
(:data:`NOT_HELD_NOTE`) or leaves a person as another's (:func:`_passed_note`) are kept
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from adapters.pipedrive._calls import PersonCalls
from adapters.pipedrive.payloads import in_the_bin, primary_value, with_contact_keys
from connector.adapter import Subject
from connector.model import is_archived, normalise_email
from connector.others import own_addresses
from connector.wording import counted

NOT_HELD_NOTE: Final = "no person held for this subject"


class SubjectLookup(PersonCalls):
    """The persons Pipedrive holds for a subject: by the known id, and by exact e-mail where
    that is the person's primary one."""

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every person Pipedrive holds for the subject (by Pipedrive id and by exact e-mail),
        in full; one it shows in the 30-day bin marked so (:func:`in_the_bin`). A person
        the connector knows as another subject's (``subject.spare``) is left out.

        Each comes with what Pipedrive keeps beside them (:mod:`.linked`): the notes staff
        wrote about them, their deals, leads and activities, and the names of their labels
        (``labels``, beside ``label_ids``), read once for all of them. An address their text
        quotes that is none of the person's (the one asked for, those the person holds) is
        left out.
        """
        people, _ = await self._held(subject)
        labels = await self.linked.label_names() if any(_label_ids(p) for p in people) else {}
        found: list[dict[str, Any]] = []
        for person in people:
            named = [{"id": i, "label": labels.get(i)} for i in _label_ids(person)]
            own = own_addresses(subject.email, *_email_values(person))
            beside = await self.linked.beside(int(person["id"]), own)
            found.append({**person, "labels": named, **beside})
        return found

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's persons, as :meth:`find` finds them (those in the bin marked so),
        without what Pipedrive keeps beside them: an erasure's snapshot and check and a
        correction need the persons, not the notes staff wrote about them, their deals,
        leads, activities or label names (see ``Adapter.find``; the erasure counts what it
        leaves of notes, deals, leads and activities itself). ``orders`` is the contract's: deals
        are no orders of the person's."""
        people, _ = await self._held(subject)
        return people

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The subject's live persons alone, as ``pull`` lists them (see ``Adapter.find``): a
        targeted sync (a webhook, ``resync --email``) syncs the person record, and reads
        none of the notes staff wrote about them, their deals, leads, activities or label names,
        which :meth:`find` reads for an access copy. One in the 30-day bin is nobody to
        sync, as a pull lists none."""
        people, _ = await self._held(subject)
        return [person for person in people if not is_archived(person)]

    async def _held(self, subject: Subject) -> tuple[list[dict[str, Any]], list[int]]:
        """The persons ``find`` reports, without what is kept beside them, and the ids of
        those the e-mail found that are not the subject's by the rule the sync writes by.

        The person the identity map's id names is the subject's. One the search finds is
        theirs only where the address is its primary e-mail (:func:`_primary_is`, as
        ``upsert`` writes): a person holding it beside another primary one is a
        housemate's, whom the sync never wrote as the subject's, and whom their access copy
        showed and their erasure deleted.
        """
        found: dict[int, dict[str, Any]] = {}
        passed: list[int] = []
        if subject.external_id and subject.external_id.isdecimal():
            person = await self._read(int(subject.external_id))
            if person is not None:
                found[int(person["id"])] = person
        if subject.email:
            for person_id in await self._search(subject.email):
                # Another subject's person (Subject.spare) is neither shown nor deleted.
                if person_id in found or str(person_id) in subject.spare:
                    continue
                person = await self._read(person_id)
                if person is None:
                    continue
                if _primary_is(person, subject.email):
                    found[person_id] = person
                else:
                    passed.append(person_id)
        people = [
            in_the_bin(found[key])
            if found[key].get("is_deleted")
            else with_contact_keys(found[key])
            for key in sorted(found)
        ]
        return people, passed


def _primary_is(person: dict[str, Any], email: str) -> bool:
    """Whether ``email`` is the person's primary e-mail (as subjects are told apart)."""
    return normalise_email(primary_value(person.get("emails")) or "") == normalise_email(email)


def _passed_note(passed: Sequence[int]) -> str:
    """What an erasure or a correction says of the persons it left as not the subject's
    (ids only: they are no personal data of the subject, and let whoever reads the receipt
    look)."""
    if not passed:
        return ""
    ids = ", ".join(map(str, sorted(passed)))
    return (
        f"left {counted(len(passed), 'person')} found under the address but holding it only "
        f"beside another primary e-mail, as syncs leave them (ids {ids})"
    )


def _email_values(person: dict[str, Any]) -> list[Any]:
    """Every address of the person's ``emails`` (primary or not), as Pipedrive gave them."""
    entries = person.get("emails")
    if not isinstance(entries, list):
        return []
    return [e.get("value") for e in entries if isinstance(e, dict)]


def _label_ids(person: dict[str, Any]) -> list[int]:
    ids = person.get("label_ids")
    return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []
