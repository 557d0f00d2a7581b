"""Reading a subject's HubSpot contacts, live and archived, for ``find`` and ``erase``.

An archived contact (a HubSpot user's restorable "delete") sits in the recycle bin for 90
days: reads skip it unless asked with the ``archived=true`` query flag, which then returns
archived contacts *only* [spec: ``archived`` on ``GET .../{contactId}`` and ``batch/read``],
and search never returns it. It is still held, so each lookup here is made twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from adapters.hubspot._scopes import CONTACTS_READ, needing
from connector.adapter import Subject
from connector.http import SystemClient, answer_object

__all__ = ["ARCHIVED_ONLY", "CONTACTS", "ContactLookup", "first_contact"]

CONTACTS: Final = "/crm/v3/objects/contacts"

#: The query flag that makes a read return archived (recycle bin) contacts only [spec].
ARCHIVED_ONLY: Final[Mapping[str, str]] = {"archived": "true"}


class ContactLookup:
    """Finds contacts by e-mail and by HubSpot id, in the live set and in the recycle bin.

    Args:
        client: the portal's HTTP client.
        properties: the properties read when a caller names none.
    """

    def __init__(self, client: SystemClient, properties: Sequence[str]) -> None:
        self.client = client
        self.properties = list(properties)

    async def held(
        self, subject: Subject, names: Sequence[str] | None = None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The live contact with the subject's e-mail, and every other contact of theirs.

        The others, each once: the archived contact with that e-mail, and the contact the
        identity map's id names (live or archived; its e-mail may have changed in HubSpot).
        """
        live = await self.by_email(subject.email, names)
        if live is not None and str(live["id"]) in subject.spare:
            live = None  # another subject's contact (Subject.spare): neither read nor deleted
        seen = {str(live["id"])} if live is not None else set()
        others: dict[str, dict[str, Any]] = {}
        archived = await self.by_email(subject.email, names, archived=True)
        if archived is not None:
            others[str(archived["id"])] = archived
        if subject.external_id and subject.external_id not in seen | others.keys():
            by_id = await self.by_id(subject.external_id, names)
            # A merged-away id can answer with a contact already found by e-mail.
            if by_id is not None and str(by_id["id"]) not in seen:
                others.setdefault(str(by_id["id"]), by_id)
        return live, [c for key, c in others.items() if key not in subject.spare]

    async def by_email(
        self, email: str, names: Sequence[str] | None = None, *, archived: bool = False
    ) -> dict[str, Any] | None:
        """The live contact with this e-mail, or with ``archived`` the archived one."""
        if "@" not in email:
            return None  # no e-mail known (a subject known only by its HubSpot id)
        # batch/read keeps the e-mail in the body: a GET .../{email} would put it in the URL
        # path, which error messages and access logs carry.
        with needing(CONTACTS_READ):
            response = await self.client.request(
                "POST",
                f"{CONTACTS}/batch/read",
                params=ARCHIVED_ONLY if archived else None,
                json={
                    "idProperty": "email",
                    "inputs": [{"id": email}],
                    "properties": list(names or self.properties),
                },
                # The spec gives batch/read an ``archived`` query flag, but whether HubSpot
                # looks archived contacts up by a unique property (``idProperty``) is
                # UNVERIFIED. A refusal means "not known by e-mail"; the identity map's id
                # still reaches them.
                accept=(400,) if archived else (),
            )
        if response.status_code == 400:
            return None
        body = answer_object(
            response,
            system=self.client.system,
            method="POST",
            path=f"{CONTACTS}/batch/read",
            required=("results",),
        )
        return first_contact(body["results"], archived)

    async def by_id(
        self, external_id: str, names: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The contact with this HubSpot id: the live one, else the archived one."""
        if not external_id.isdecimal():
            return None  # HubSpot ids are numeric; anything else cannot address a contact
        for archived in (False, True):
            found = await self._get_by_id(external_id, names, archived)
            if found is not None:
                return found
        return None

    async def live_by_id(
        self, external_id: str, names: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The live contact with this HubSpot id; ``None`` for one in the recycle bin."""
        if not external_id.isdecimal():
            return None
        return await self._get_by_id(external_id, names, archived=False)

    async def archived_by_id(
        self, external_id: str, names: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The archived contact with this HubSpot id; ``None`` for a live one or none."""
        if not external_id.isdecimal():
            return None
        return await self._get_by_id(external_id, names, archived=True)

    async def _get_by_id(
        self, external_id: str, names: Sequence[str] | None, archived: bool
    ) -> dict[str, Any] | None:
        """The contact with this id, read with ``batch/read``: the property names go in the
        body. In a GET's query string every property of a real portal (hundreds, for an
        access request) passed the length a URL may have, and HubSpot answered 414."""
        path = f"{CONTACTS}/batch/read"
        with needing(CONTACTS_READ):
            response = await self.client.request(
                "POST",
                path,
                # The spec's ``archived`` flag: "only results that have been archived".
                params=ARCHIVED_ONLY if archived else None,
                json={
                    "inputs": [{"id": external_id}],
                    "properties": list(names or self.properties),
                },
                accept=(404,),
            )
        if response.status_code == 404:
            return None
        body = answer_object(
            response, system=self.client.system, method="POST", path=path, required=("results",)
        )
        return first_contact(body["results"], archived)


def first_contact(results: Any, archived: bool) -> dict[str, Any] | None:
    """The first contact in ``results`` that is archived or live as asked.

    The flag is checked, not trusted to the request: a HubSpot that ignored ``archived`` would
    otherwise make a live contact pass for an archived one, or the reverse.
    """
    for result in results if isinstance(results, list) else []:
        if (
            isinstance(result, dict)
            and result.get("id") is not None
            and bool(result.get("archived")) == archived
        ):
            return result
    return None
