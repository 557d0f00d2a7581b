"""``erase``: ``DELETE /persons/{id}`` of each of the subject's persons, after the notes about
them alone, and what the receipt says of it.

Pipedrive only marks a person deleted and purges it 30 days later, restorable meanwhile:
the result is ``delete_purged_later`` and reversible, and its notes say so.
"""

from __future__ import annotations

from typing import Final

from adapters.pipedrive._calls import PERSONS
from adapters.pipedrive._lookup import NOT_HELD_NOTE, SubjectLookup, _passed_note
from adapters.pipedrive.linked import Left
from connector.adapter import ErasureResult, Subject
from connector.model import is_archived

#: How the erasure call reads on a receipt (the API root is part of ``base_url``).
ERASURE_ENDPOINT: Final = "DELETE /api/v2/persons/{id}"
#: "Marks a person as deleted. After 30 days, the person will be permanently deleted."
#: (v2 ``deletePerson``): kept, restorable, for 30 days, and purged after them, not within.
ERASURE_NOTE: Final = "deleted, purged by the vendor after 30 days"
#: Held only in the bin (deleted before): restorable until the purge, like a deletion now.
IN_THE_BIN_NOTE: Final = "deleted already, purged by the vendor 30 days after that deletion"
#: What a completed erasure did, for one that finds the person gone since the request first
#: looked (``ErasureResult.erased_note``): deleted by an earlier call, restorable until the
#: purge, and what is linked to them read no more.
ERASED_NOTE: Final = (
    f"{ERASURE_NOTE}; the notes about the person alone deleted before them, their deals, "
    "leads, activities and notes also on another record left (not counted again: the "
    "person is gone)"
)


class PersonErasure(SubjectLookup):
    """The deletion of a subject's persons, found as :class:`SubjectLookup` finds them."""

    async def erase(self, subject: Subject) -> ErasureResult:
        """Delete every live person for the subject with ``DELETE /persons/{id}``; idempotent.

        Pipedrive purges a deleted person 30 days later and can restore it until then, so the
        result is ``delete_purged_later`` and reversible, and the note says so. A person
        ``find`` shows in that bin already is held the same way: found, reversible, not "no
        person held"; no ``DELETE`` is sent for them (they are deleted, and v2 has no other
        deletion). One whose ``DELETE`` answers 404 (someone deleted them since our read)
        counts as found too. A second call deletes nothing: it reports the persons in the
        bin where Pipedrive shows them, else ``found=False``.

        Before each person goes, the notes about them alone are deleted and what else names
        them is counted (:meth:`.linked.LinkedReader.erase_beside`): deals, leads (live
        and archived) and activities are the business's records, kept, and the note names
        them by kind and count, so the receipt does not pass the person's part for all
        Pipedrive held of them. A kind Pipedrive refuses to list (403: the API user lacks
        the permission) is named as not counted and the person is deleted all the same; a
        refused notes list, a 401 or a 5xx fails the erasure, retried as any. A person the
        e-mail finds that holds it only beside another primary address is left
        (:meth:`_held`), and the note says so by id.
        """
        self._forget(subject)
        people, passed = await self._held(subject)
        left = Left()
        deleted = 0
        status: int | None = None
        for person in people:
            self.sent.forget(int(person["id"]))
            self.directory.forget_person(int(person["id"]))
            left.add(await self.linked.erase_beside(int(person["id"])))
            if is_archived(person):
                continue  # in the bin already: a DELETE changes nothing
            response = await self.client.request(
                "DELETE", f"{PERSONS}/{int(person['id'])}", accept=(404,)
            )
            # A 404 here means someone deleted the person between our read and this call.
            status = response.status_code if status in (None, 200) else status
            deleted += response.status_code == 200
        done = ERASURE_NOTE if deleted else IN_THE_BIN_NOTE if people else NOT_HELD_NOTE
        return ErasureResult(
            found=bool(people),
            mode="delete_purged_later",
            reversible=True,
            endpoint=ERASURE_ENDPOINT,
            vendor_status=status,
            note="; ".join(part for part in (done, left.said(), _passed_note(passed)) if part),
            erased_note=ERASED_NOTE,
        )

    def _forget(self, subject: Subject) -> None:
        """What the adapter holds in memory of the subject leaves it before anything is
        read: the listing's entry of their address and of the person under their known id
        (whatever address it holds them under), even if the erasure fails and waits for a
        retry. Each person the erasure then finds is forgotten as it goes."""
        if subject.email:
            self.directory.forget(subject.email)
        if subject.external_id and subject.external_id.isdecimal():
            person_id = int(subject.external_id)
            self.directory.forget_person(person_id)
            self.sent.forget(person_id)
