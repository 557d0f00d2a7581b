"""The HubSpot sandbox's routes beside contacts: associations, associated records, properties of
other object types, and e-mail subscription statuses.

Shapes as HubSpot's: the v4 association list (``{results: [{toObjectId, associationTypes}],
paging}``, at most 500 a page), the v3 batch read (``BatchResponse``, 207 naming the ids it
could not find), the Properties API, and communication preferences v3 (``{recipient,
subscriptionStatuses}``). The scopes each route needs are in :func:`needed_scopes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from adapters.hubspot._objects import CONTACT_TO, OBJECT_READ_ONLY, ObjectStore
from adapters.hubspot._routes import (
    Reject,
    batch_read_answer,
    property_definition,
    read_inputs,
)
from adapters.hubspot._scopes import (
    ASSOCIATED_KINDS,
    READ_SCOPES,
    SCHEMA_SCOPES,
    SUBSCRIPTIONS_SCOPE,
)
from adapters.hubspot._store import ContactStore, valid_email
from connector.sandboxkit import JSONResponse

__all__ = [
    "ASSOCIATIONS",
    "OBJECT_BATCH_READ",
    "OBJECT_PROPERTIES_ROUTE",
    "SUBSCRIPTIONS",
    "ObjectRoutes",
    "needed_scopes",
]

ASSOCIATIONS: Final = "/crm/v4/objects/contacts/{contactId}/associations/{toObjectType}"
OBJECT_BATCH_READ: Final = "/crm/v3/objects/{objectType}/batch/read"
OBJECT_PROPERTIES_ROUTE: Final = "/crm/v3/properties/{objectType}"
SUBSCRIPTIONS: Final = "/communication-preferences/v3/status/email/{emailAddress}"

#: Most associations one v4 list page holds (its default too).
MAX_ASSOCIATIONS_PAGE: Final = 500


def needed_scopes(request: Request) -> list[str]:
    """The scopes a call to one of these routes needs (see :mod:`adapters.hubspot._scopes`;
    UNVERIFIED names): reading a kind's records or associations needs the kind's read scope
    (and the contact's), its property list the kind's schema scope."""
    path = request.url.path
    params = request.path_params
    if path.startswith("/communication-preferences/"):
        return [SUBSCRIPTIONS_SCOPE]
    if path.startswith("/crm/v4/"):
        kind = str(params.get("toObjectType", ""))
        return sorted({READ_SCOPES["contacts"], READ_SCOPES.get(kind, READ_SCOPES["contacts"])})
    kind = str(params.get("objectType", "contacts"))
    table = SCHEMA_SCOPES if path.startswith("/crm/v3/properties/") else READ_SCOPES
    return [table.get(kind, READ_SCOPES["contacts"])]


def _kind(request: Request, key: str) -> str:
    """The object type a path names; HubSpot's 400 for one it does not know."""
    kind = str(request.path_params[key])
    if kind not in ASSOCIATED_KINDS:
        raise Reject(400, f"Unable to infer object type from: {kind}")
    return kind


class ObjectRoutes:
    """The routes over the contacts' :class:`~adapters.hubspot._objects.ObjectStore`."""

    def __init__(self, contacts: ContactStore) -> None:
        self.contacts = contacts

    @property
    def objects(self) -> ObjectStore:
        return self.contacts.objects

    async def list_properties(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /crm/v3/properties/{objectType}`` for a kind other than contacts."""
        kind = _kind(request, "objectType")
        names = sorted(self.objects.known[kind] | OBJECT_READ_ONLY)
        group = f"{kind.rstrip('s')}information"
        results = [property_definition(n, n in OBJECT_READ_ONLY, group) for n in names]
        return JSONResponse({"results": results}), []

    async def associations(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /crm/v4/objects/contacts/{contactId}/associations/{toObjectType}``.

        An archived contact's associations are served (they come back with it when it is
        restored); whether HubSpot serves them while it is in the recycle bin is UNVERIFIED.
        A contact it does not hold at all is a 404 (UNVERIFIED: it may answer no results).
        """
        kind = _kind(request, "toObjectType")
        contact_id = str(request.path_params["contactId"])
        contact = self.contacts.live(contact_id) or self.contacts.archived(contact_id)
        if contact is None:
            raise Reject(404, "resource not found", "OBJECT_NOT_FOUND")
        try:
            limit = int(request.query_params.get("limit", str(MAX_ASSOCIATIONS_PAGE)))
            offset = int(request.query_params.get("after") or 0)
        except ValueError:
            raise Reject(400, "limit and after must be numbers.") from None
        limit = max(1, min(limit, MAX_ASSOCIATIONS_PAGE))
        ids = self.objects.associated(contact.id, kind)
        label = {"category": "HUBSPOT_DEFINED", "typeId": CONTACT_TO[kind], "label": None}
        body: dict[str, Any] = {
            "results": [
                {"toObjectId": record_id, "associationTypes": [label]}
                for record_id in ids[offset : offset + limit]
            ]
        }
        if offset + limit < len(ids):
            after = str(offset + limit)
            link = f"{request.url.scheme}://{request.url.netloc}{request.url.path}?after={after}"
            body["paging"] = {"next": {"after": after, "link": link}}
        return JSONResponse(body), []

    async def batch_read(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``POST /crm/v3/objects/{objectType}/batch/read`` for a kind other than contacts."""
        kind = _kind(request, "objectType")
        body, inputs = await read_inputs(request)
        names = body.get("properties") or None
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            id_value = str(item.get("id", ""))
            record = self.objects.get(kind, id_value)
            if record is None:
                missing.append(id_value)
            else:
                results.append(record.to_json(names))
        return batch_read_answer(results, missing, kind.rstrip("s").upper()), []

    async def subscription_statuses(
        self, request: Request
    ) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /communication-preferences/v3/status/email/{emailAddress}``: the address's
        status per subscription type. An address with none answers an empty list
        (UNVERIFIED: HubSpot may list every type, or answer 404)."""
        email = str(request.path_params["emailAddress"])
        if not valid_email(email):
            raise Reject(400, "Invalid email address.")
        statuses = self.objects.statuses(email)
        return JSONResponse({"recipient": email, "subscriptionStatuses": statuses}), []
