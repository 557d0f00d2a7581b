"""The object types an access copy reads beside a contact, and the scopes HubSpot reads them with.

One table for the adapter (its warnings name the scope to grant) and the sandbox (it refuses a
call its token lacks the scope for, with HubSpot's 403). HubSpot answers 403 (``MISSING_SCOPES``)
for a missing scope, whatever its name; the names below are UNVERIFIED against HubSpot's scope
list except where a source is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "ASSOCIATED_KINDS",
    "ENGAGEMENTS",
    "READ_SCOPES",
    "SCHEMA_SCOPES",
    "SUBSCRIPTIONS_SCOPE",
]

#: Activities HubSpot logs on a contact's timeline (engagements): what staff wrote, said or
#: sent about or to the person.
ENGAGEMENTS: Final = ("notes", "calls", "emails", "meetings", "tasks")

#: The object types associated with a contact that an access copy lists, engagements first.
ASSOCIATED_KINDS: Final = (*ENGAGEMENTS, "deals", "companies")

#: The scope a token reads each object type's records (and their associations) with. The
#: engagement guides (notes, for one) list ``crm.objects.contacts.read`` [doc]; deals and
#: companies have scopes of their own. An e-mail's body is said to need ``sales-email-read``
#: besides (UNVERIFIED; HubSpot then blanks it rather than refusing the call).
READ_SCOPES: Final[Mapping[str, str]] = {
    "contacts": "crm.objects.contacts.read",
    **{kind: "crm.objects.contacts.read" for kind in ENGAGEMENTS},
    "deals": "crm.objects.deals.read",
    "companies": "crm.objects.companies.read",
}

#: The scope a token lists an object type's property definitions with. UNVERIFIED:
#: ``crm.schemas.<type>.read`` for contacts, deals and companies; engagements have no schema
#: scope of their own that a source names, so their read scope stands in.
SCHEMA_SCOPES: Final[Mapping[str, str]] = {
    "contacts": "crm.schemas.contacts.read",
    **{kind: "crm.objects.contacts.read" for kind in ENGAGEMENTS},
    "deals": "crm.schemas.deals.read",
    "companies": "crm.schemas.companies.read",
}

#: The scope that reads an address's e-mail subscription statuses (UNVERIFIED).
SUBSCRIPTIONS_SCOPE: Final = "communication_preferences.read"
