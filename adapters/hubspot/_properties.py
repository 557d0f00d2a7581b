"""The portal's property lists (``GET /crm/v3/properties/{objectType}``), read for access copies
and for a write that empties properties (which of them HubSpot lets an integration write).

An access copy holds every property the portal defines for an object, not only the mapped
ones, so it asks HubSpot which those are. The answer changes when an admin defines a property
(a "complaint note" filled in for the person from then on), and the daemon keeps one adapter
for months: a list is trusted for :data:`MAX_AGE_SECONDS`, then read again, by the client's
clock. A refusal (403: the token lacks the scope to read definitions) is kept as long, so a
scope granted meanwhile is seen within that time too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from adapters.hubspot._scopes import SCHEMA_SCOPES
from connector.http import SystemClient, json_object

__all__ = [
    "MAX_AGE_SECONDS",
    "Listed",
    "PropertyLists",
    "definitions_by_name",
    "properties_path",
    "read_only_value",
]

log = logging.getLogger("klantsync.hubspot")

#: How long a property list (or its refusal) is used before it is read again: a property an
#: admin defines shows in access copies within the hour, at one call an hour per object type.
MAX_AGE_SECONDS: Final = 3600.0


def properties_path(object_type: str) -> str:
    """The portal's property definitions of ``object_type`` (every one, unpaged)."""
    return f"/crm/v3/properties/{object_type}"


def definitions_by_name(results: object) -> dict[str, Mapping[str, Any]]:
    """The definitions in a property list's ``results``, by name; what is no definition
    (no object, no name) is passed over."""
    return {
        str(item["name"]): item
        for item in (results if isinstance(results, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }


def read_only_value(definition: Mapping[str, Any]) -> bool:
    """Whether HubSpot lets no integration write the property's value (one it sets itself or
    calculates): ``modificationMetadata.readOnlyValue``."""
    metadata = definition.get("modificationMetadata")
    return isinstance(metadata, dict) and metadata.get("readOnlyValue") is True


@dataclass(frozen=True)
class Listed:
    """An object type's property names, and whether HubSpot refused the list (403): the names
    are then the fallback ones, and a copy holding them must say it is partial. ``read_only``
    names those of them HubSpot lets no integration write (none known when refused)."""

    names: list[str]
    refused: bool
    read_only: frozenset[str] = frozenset()


class PropertyLists:
    """Every property name of each object type, read at most once per :data:`MAX_AGE_SECONDS`.

    Args:
        client: the portal's HTTP client; its ``clock`` ages the lists.
        fallback: per object type, the names used when HubSpot refuses (or lists none).
    """

    def __init__(self, client: SystemClient, fallback: Mapping[str, Sequence[str]]) -> None:
        self.client = client
        self.fallback = {kind: list(names) for kind, names in fallback.items()}
        self._lists: dict[str, tuple[float, Listed]] = {}

    async def names(self, object_type: str) -> Listed:
        """The object type's property names, read again once the last read is too old."""
        now = self.client.clock()
        kept = self._lists.get(object_type)
        if kept is not None and now - kept[0] < MAX_AGE_SECONDS:
            return kept[1]
        listed = await self._read(object_type)
        self._lists[object_type] = (now, listed)
        return listed

    async def _read(self, object_type: str) -> Listed:
        path = properties_path(object_type)
        response = await self.client.request("GET", path, accept=(403,))
        refused = response.status_code == 403
        if refused:
            # The portal's, not a person's: no contact is named.
            log.warning(
                "HubSpot refused the %s property definitions: access copies hold only some of "
                "their properties; grant the private app the %s scope for every property",
                object_type,
                SCHEMA_SCOPES.get(object_type, f"crm.schemas.{object_type}.read"),
                extra={"system": self.client.system},
            )
        definitions = definitions_by_name(json_object(response).get("results"))
        read_only = frozenset(name for name, item in definitions.items() if read_only_value(item))
        names = list(definitions) or list(self.fallback.get(object_type, ()))
        return Listed(names, refused, read_only)
