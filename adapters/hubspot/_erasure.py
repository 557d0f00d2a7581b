"""``erase``: ``POST /crm/v3/objects/contacts/gdpr-delete`` of every contact of the subject,
archived ones included, and what the receipt says of it.

Never ``DELETE`` or ``batch/archive``, which are soft deletes HubSpot can restore for 90 days;
nothing at all for a subject HubSpot does not hold (by e-mail it would blocklist the
address). The deals, companies and support tickets associated with the contact, which
gdpr-delete leaves, are counted first and named on the receipt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from adapters.hubspot._lookup import CONTACTS
from adapters.hubspot._parts import HubSpotParts
from adapters.hubspot._scopes import CONTACTS_WRITE, needing
from connector.adapter import ErasureResult, Subject, not_counted

GDPR_DELETE: Final = f"{CONTACTS}/gdpr-delete"

#: The erasure's notes (signed into the receipt): each says what was sent, no more.
ERASURE_NOTE: Final = "permanently deleted; e-mail added to HubSpot's blocklist"
ERASED_BY_ID_NOTE: Final = "permanently deleted by contact id"
NOTHING_ERASED_NOTE: Final = "no contact of this person found: nothing deleted, nothing sent"
#: What a completed erasure did, for one that finds the contact gone since the request
#: first looked (``ErasureResult.erased_note``): gdpr-delete by e-mail, as ``erase`` sends
#: it for a contact it holds, and what it leaves, no longer countable.
ERASED_NOTE: Final = (
    f"{ERASURE_NOTE}; deals, companies and tickets associated with the contact left by "
    "gdpr-delete (not counted again: the contact is gone)"
)

#: Most further archived contacts with one e-mail an erasure looks for, one lookup each.
MAX_ARCHIVED_ROUNDS: Final = 10

#: What gdpr-delete leaves of the records associated with a contact: the business's records,
#: shared with others (a deal, its company), and the support tickets the person raised, which
#: their access copy holds. It takes the contact's engagements ("all associated content");
#: HubSpot's changelog says its GDPR deletion deletes "the contact record and any
#: associations between the contact record and other CRM objects", and names no tickets
#: among what goes. That it leaves deals, companies and tickets is the cautious reading
#: (UNVERIFIED), which the receipt follows, so it never understates what stays.
LEFT_BY_GDPR_DELETE: Final = (
    ("deals", "deal", "deals"),
    ("companies", "company", "companies"),
    ("tickets", "ticket", "tickets"),
)


class ContactErasure(HubSpotParts):
    """The adapter's ``erase``: gdpr-delete of the subject's contacts, found first."""

    async def erase(self, subject: Subject) -> ErasureResult:
        """Permanently delete every contact of the subject with ``gdpr-delete``; never archive.

        HubSpot answers 204 whether or not the e-mail exists, and adds an e-mail it does not
        find to its blocklist [spec], where it stays: so ``found`` comes from a lookup first,
        and a subject HubSpot does not hold (no live or archived contact with the e-mail, none
        under the identity map's id) is sent nothing at all. Handing it their address would
        leave personal data at a processor that had none; the erasure's verification still
        reads HubSpot afterwards. The live contact with the e-mail is deleted by e-mail,
        which also blocklists it. Every other contact of the subject is deleted by id: an
        archived one (in the recycle bin, restorable for 90 days: an archive is not an
        erasure) and one found only by the identity map's id (its e-mail changed in HubSpot);
        the e-mail is then sent too, so HubSpot blocklists the address it held them under.
        Calling this twice is harmless; the second finds nothing, sends nothing and reports
        ``found=False``. A contact the connector knows as another subject's
        (``subject.spare``) is left: where the live one with the e-mail may be it, nothing is
        deleted by e-mail. The note says what was sent (:data:`ERASURE_NOTE`,
        :data:`ERASED_BY_ID_NOTE`, :data:`NOTHING_ERASED_NOTE`), and what gdpr-delete
        leaves of the records associated with the contacts (:meth:`_left_by_gdpr_delete`).
        """
        live, others = await self._lookup.held(subject)
        found = live is not None or bool(others)
        by_id = [str(contact["id"]) for contact in others]
        # Counted before they are gone: a deleted contact has no associations to list.
        contacts = [str(live["id"])] if live is not None else []
        left = await self._left_by_gdpr_delete([*contacts, *by_id])
        statuses = [await self._gdpr_delete_id(contact_id) for contact_id in by_id]
        by_email = "@" in subject.email and (
            live is not None or (bool(others) and not subject.spare)
        )
        if by_email:
            with needing(CONTACTS_WRITE):
                response = await self.client.request(
                    "POST", GDPR_DELETE, json={"objectId": subject.email, "idProperty": "email"}
                )
            statuses.append(response.status_code)
        if any(contact.get("archived") for contact in others):
            statuses += await self._erase_more_archived(subject.email, {*by_id, *subject.spare})
        return ErasureResult(
            found=found,
            mode="hard_delete",
            reversible=False,
            endpoint=f"POST {GDPR_DELETE}",
            # The first status that is not a plain 204 tells most (a 404: already gone).
            vendor_status=next(
                (s for s in statuses if s != 204), statuses[-1] if statuses else None
            ),
            note="; ".join(part for part in (_sent_note(by_email, found), left) if part),
            erased_note=ERASED_NOTE if "@" in subject.email else "permanently deleted",
        )

    async def _left_by_gdpr_delete(self, contact_ids: Sequence[str]) -> str:
        """What the receipt says gdpr-delete leaves of what the contacts are associated
        with (:data:`LEFT_BY_GDPR_DELETE`): each kind's count, never a record's content or
        id, and a kind HubSpot would not list (a scope the app lacks) named as not counted.

        Said only "permanently deleted", the receipt passed the person's part for all the
        portal held of them, while the deal named after them stayed, associated with nobody.
        """
        counted: list[str] = []
        unread: list[str] = []
        for kind, one, many in LEFT_BY_GDPR_DELETE:
            listed = await self._associated_with_any(contact_ids, kind)
            if listed is None:
                unread.append(kind)
            elif listed[0]:
                ids, whole = listed
                number = f"{'' if whole else 'at least '}{len(ids)}"
                counted.append(f"{number} {one if len(ids) == 1 else many}")
        said: list[str] = []
        if counted:
            said.append(
                "left in HubSpot, associated with the contact (the business's records, which "
                f"gdpr-delete leaves): {', '.join(counted)}"
            )
        if unread:
            said.append(not_counted(unread, "HubSpot"))
        return "; ".join(said)

    async def _associated_with_any(
        self, contact_ids: Sequence[str], kind: str
    ) -> tuple[set[str], bool] | None:
        """The ids of ``kind`` associated with any of the contacts (a deal of two of them
        counts once) and whether that is all of them; ``None`` where HubSpot would not list
        them for one of the contacts."""
        ids: set[str] = set()
        whole = True
        for contact_id in contact_ids:
            listed = await self._related.associated_ids(contact_id, kind)
            if listed is None:
                return None
            ids.update(listed[0])
            whole = whole and listed[1]
        return ids, whole

    async def _gdpr_delete_id(self, contact_id: str) -> int:
        # gdpr-delete by the id of an archived contact: the spec does not restrict it to live
        # contacts and HubSpot's UI deletes permanently from the recycle bin, but that the API
        # does so is UNVERIFIED. If it does not, the verification's find still sees the
        # contact and the erasure stays open instead of reporting it absent.
        with needing(CONTACTS_WRITE):
            response = await self.client.request(
                "POST", GDPR_DELETE, json={"objectId": contact_id}, accept=(404,)
            )
        return response.status_code

    async def _erase_more_archived(self, email: str, done: set[str]) -> list[int]:
        """Delete further archived contacts with this e-mail; their statuses.

        A lookup by e-mail answers with one contact, but the recycle bin can hold several with
        the same e-mail (archived, created again by a sync, archived again). Stops when a
        lookup finds none, or one already sent to gdpr-delete (HubSpot kept it: the
        verification then reports it still present).
        """
        statuses: list[int] = []
        for _ in range(MAX_ARCHIVED_ROUNDS):
            contact = await self._lookup.by_email(email, archived=True)
            if contact is None or str(contact["id"]) in done:
                break
            done.add(str(contact["id"]))
            statuses.append(await self._gdpr_delete_id(str(contact["id"])))
        return statuses


def _sent_note(by_email: bool, found: bool) -> str:
    """What the erasure sent, as its note says it (see ``HubSpotAdapter.erase``)."""
    return ERASURE_NOTE if by_email else ERASED_BY_ID_NOTE if found else NOTHING_ERASED_NOTE
