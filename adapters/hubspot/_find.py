"""Finding a subject's contacts: ``find`` (an access copy), ``find_records`` (an erasure's
snapshot and check, a correction) and ``find_people`` (a targeted sync), each reading as much
as it needs and no more.

- ``find``: ``POST /crm/v3/objects/contacts/batch/read`` by e-mail (the e-mail travels in the
  body, never in a URL path that could end up in an error message), then by HubSpot id; each
  read once for live contacts and once with ``archived=true`` for the recycle bin
  (:mod:`adapters.hubspot._lookup`); each contact found with every property the portal
  defines, the records associated with it and its address's subscription statuses
  (:mod:`adapters.hubspot._related`);
- ``find_records``: the contacts ``find`` finds, with the properties a pull asks for alone
  and nothing associated with them;
- ``find_people``: the live contact by id, else by e-mail, with those properties alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from adapters.hubspot._parts import HubSpotParts
from connector.adapter import Subject
from connector.others import own_addresses

#: The key of a contact's record that says the copy holds the configured properties only.
PROPERTIES_UNREAD: Final = "propertiesNotRead"

#: Why, as a code the access report states in the report's language (connector/access.py):
#: the scope that lets a token read the portal's property definitions. Integration vendors'
#: scope lists name it so (the scopes a contacts sync with all properties asks for); HubSpot's
#: own scope list was not read (UNVERIFIED there). HubSpot answers 403 for a missing scope.
PROPERTIES_UNREAD_REASON: Final = "crm.schemas.contacts.read"


class ContactFinds(HubSpotParts):
    """The adapter's reads of one subject's contacts, as each verb asks for them."""

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every contact HubSpot holds for the subject, archived ones included.

        Each comes with every property the portal defines, not only the mapped ones: an access
        request must show all that is held. Each comes with the records associated with it
        (``associations``: notes, calls, e-mails, meetings, tasks, deals, companies, support
        tickets) and the first with an address with that address's e-mail subscription statuses
        (``subscriptions``), each saying where HubSpot did not serve them all (see
        :mod:`adapters.hubspot._related`); they are read only for a contact found, so a lookup
        that finds nobody costs no more calls than before. An archived contact (``archived:
        true``) is held too: it sits in HubSpot's recycle bin, restorable for 90 days, so an
        access request reports it and an erasure's verification must not call the subject
        absent while it is there. The live contact found by e-mail comes first. An empty list
        when HubSpot holds nobody. When the token may not read the schema, each contact
        carries :data:`PROPERTIES_UNREAD`, so a copy of the configured properties alone does
        not pass for whole. The portal's property list (or its refusal) is read again once it is an
        hour old (:class:`~adapters.hubspot._properties.PropertyLists`): the daemon keeps one
        adapter for months, and a property an admin defines meanwhile is the person's too.
        """
        listed = await self._property_lists.names("contacts")
        live, others = await self._lookup.held(subject, listed.names)
        held = ([live] if live is not None else []) + others
        addresses: set[str] = set()
        for contact in held:
            if listed.refused:
                contact[PROPERTIES_UNREAD] = {"reason": PROPERTIES_UNREAD_REASON}
            own = _own_addresses(contact, subject.email)
            contact.update(await self._related.associated(str(contact["id"]), own))
            # Statuses are kept per address: read once, with the first contact holding it.
            address = _address(contact, subject.email)
            if address and address not in addresses:
                addresses.add(address)
                contact.update(await self._related.subscriptions(address))
        return held

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's contacts, live and archived, as :meth:`find` finds them, with the
        properties a pull asks for alone: an erasure's snapshot and check and a correction
        need their ids, whether each is archived and the mapped properties, not the notes,
        calls, e-mails, meetings, tasks, deals, companies and tickets associated with them, the
        address's subscriptions or every property the portal defines (see ``Adapter.find``).
        HubSpot holds no orders (``orders`` is the contract's).
        """
        live, others = await self._lookup.held(subject, self._asked)
        return ([live] if live is not None else []) + others

    async def find_people(self, subject: Subject) -> list[dict[str, Any]]:
        """The subject's live contact with the properties a pull asks for alone, as ``pull``
        lists it (see ``Adapter.find``): a targeted sync reads no more than it syncs, where
        :meth:`find` reads every property the portal defines (a date of birth, notes) for an
        access copy.

        By the HubSpot id where known (a webhook names it), else by e-mail; an id that finds
        no live contact (merged away, in the recycle bin) is looked up by e-mail too. An
        archived contact is nobody to sync, as a pull lists none: it is not read.
        """
        names = self._asked
        contact = None
        if subject.external_id:
            contact = await self._lookup.live_by_id(subject.external_id, names)
        if contact is None:
            contact = await self._lookup.by_email(subject.email, names)
        return [contact] if contact is not None else []


def _own_addresses(contact: Mapping[str, Any], asked: str) -> frozenset[str]:
    """The person's addresses, lower case: the one asked for and those the contact holds
    (``email``, and ``hs_additional_emails``, parted by ``;``). An e-mail's senders and
    recipients, and an address the text quotes, under any other are other people's."""
    properties = contact.get("properties")
    held = properties if isinstance(properties, dict) else {}
    found = [asked, held.get("email")]
    extra = held.get("hs_additional_emails")
    if isinstance(extra, str):
        found += extra.split(";")
    return own_addresses(*found)


def _address(contact: Mapping[str, Any], asked: str) -> str:
    """The e-mail address a contact holds (its ``email`` property), else the one asked for;
    ``""`` without one. Lower case: HubSpot keeps addresses so."""
    properties = contact.get("properties")
    held = properties.get("email") if isinstance(properties, dict) else None
    address = held if isinstance(held, str) and "@" in held else asked
    return address.strip().lower() if "@" in address else ""
