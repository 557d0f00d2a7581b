"""The scopes HubSpot's contact routes need, the object types an access copy reads beside a
contact, and the scopes HubSpot reads them with.

One table for the adapter (its errors and warnings name the scope to grant) and the sandbox (it
refuses a call its token lacks the scope for, with HubSpot's 403). HubSpot answers 403
(``MISSING_SCOPES``) for a missing scope, whatever its name; the names below are UNVERIFIED
against HubSpot's scope list except where a source is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Final

from connector.scopes import ScopeRefusal, naming_scope

__all__ = [
    "ASSOCIATED_KINDS",
    "CONTACTS_READ",
    "CONTACTS_WRITE",
    "ENGAGEMENTS",
    "READ_SCOPES",
    "SCHEMA_SCOPES",
    "SUBSCRIPTIONS_SCOPE",
    "needing",
]

#: The scope every contact read needs: list, read, batch/read, search [spec: each operation's
#: ``security``].
CONTACTS_READ: Final = "crm.objects.contacts.read"

#: The scope every contact write needs: create, update, upsert, archive, merge and
#: gdpr-delete [spec]. A private app granted the read scope alone may pull and look people up,
#: and is refused every write, an erasure's included.
CONTACTS_WRITE: Final = "crm.objects.contacts.write"

#: Activities HubSpot logs on a contact's timeline (engagements): what staff wrote, said or
#: sent about or to the person.
ENGAGEMENTS: Final = ("notes", "calls", "emails", "meetings", "tasks")

#: The object types associated with a contact that an access copy lists, engagements first.
#: Tickets are the person's support requests (CRM object ``tickets``; contact to ticket is
#: association type 15 [src: HubSpot's generated clients, ``CONTACT_TO_TICKET``]).
ASSOCIATED_KINDS: Final = (*ENGAGEMENTS, "deals", "companies", "tickets")

#: The scope a token reads each object type's records (and their associations) with. The
#: engagement guides (notes, for one) list ``crm.objects.contacts.read`` [doc]; deals and
#: companies have scopes of their own. An e-mail's body is said to need ``sales-email-read``
#: besides (UNVERIFIED; HubSpot then blanks it rather than refusing the call). Tickets are
#: read with the private-app scope ``tickets`` [2nd: integration guides name it for the
#: tickets endpoints; HubSpot's own list of the scopes its tickets batch read accepts, and
#: whether a newer ``crm.objects.tickets.read`` stands in for it, are UNVERIFIED].
READ_SCOPES: Final[Mapping[str, str]] = {
    "contacts": CONTACTS_READ,
    **{kind: CONTACTS_READ for kind in ENGAGEMENTS},
    "deals": "crm.objects.deals.read",
    "companies": "crm.objects.companies.read",
    "tickets": "tickets",
}

#: The scope a token lists an object type's property definitions with. UNVERIFIED:
#: ``crm.schemas.<type>.read`` for contacts, deals and companies; engagements and tickets
#: have no schema scope of their own that a source names, so their read scope stands in.
SCHEMA_SCOPES: Final[Mapping[str, str]] = {
    "contacts": "crm.schemas.contacts.read",
    **{kind: CONTACTS_READ for kind in ENGAGEMENTS},
    "deals": "crm.schemas.deals.read",
    "companies": "crm.schemas.companies.read",
    "tickets": "tickets",
}

#: The scope that reads an address's e-mail subscription statuses (UNVERIFIED).
SUBSCRIPTIONS_SCOPE: Final = "communication_preferences.read"


#: HubSpot's error category for a call its token lacks a scope for [doc: 403 is a missing scope].
MISSING_SCOPES: Final = "MISSING_SCOPES"

#: HubSpot's refusal of a call for a missing scope: 403 ``MISSING_SCOPES`` (or a 403 with no
#: category at all), granted to the private app.
REFUSAL: Final = ScopeRefusal(MISSING_SCOPES, "the private app", status=403, also=frozenset({""}))


def needing(scope: str) -> AbstractContextManager[None]:
    """Run calls that need ``scope``; HubSpot's refusal of one (403) is raised naming it.

    The 403 said ``MISSING_SCOPES`` and no more: which scope, HubSpot puts in its body, which
    errors never carry. The operator then had to guess what to grant the private app (a
    legacy one has no scopes at all) for a pull, a sync or an erasure to go through.

    Raises:
        FatalRemoteError: the 403, its detail naming ``scope``; other errors as they were.
    """
    return naming_scope(REFUSAL, scope)
