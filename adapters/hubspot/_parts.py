"""What the parts of the HubSpot adapter share: the attributes the adapter sets, and the
properties every read of a contact asks for.

:class:`~adapters.hubspot.adapter.HubSpotAdapter` sets the attributes (see its ``__init__``);
its parts (:mod:`adapters.hubspot._writes`, :mod:`adapters.hubspot._find`,
:mod:`adapters.hubspot._erasure`) inherit :class:`HubSpotParts`, so each is checked against
the attributes declared here rather than an untyped ``self``.
"""

from __future__ import annotations

from typing import Final

from adapters.hubspot._lookup import ContactLookup
from adapters.hubspot._properties import PropertyLists
from adapters.hubspot._related import Related
from connector.http import SystemClient

__all__ = ["OWN_PROPERTIES", "HubSpotParts"]

#: The properties every read asks for whatever the mapping reads: the e-mail, by which
#: lookups and erasures tell a contact's address. (HubSpot answers ``hs_object_id``,
#: ``createdate`` and ``lastmodifieddate`` with every contact unasked.)
OWN_PROPERTIES: Final = ("email",)


class HubSpotParts:
    """The attributes every part of the adapter uses.

    ``_asked`` is the contact properties pulls and targeted syncs ask for (the configured
    ``properties``, or those the mapping reads: ``ask_only_for_paths``); ``_lookup`` finds
    contacts by e-mail and id, live and archived; ``_property_lists`` holds the portal's
    property lists; ``_related`` reads what is associated with a contact.
    """

    client: SystemClient
    _asked: list[str]
    _lookup: ContactLookup
    _property_lists: PropertyLists
    _related: Related
