"""What the parts of the Pipedrive adapter share: the client, settings and what the adapter
keeps in memory (set by its ``__init__``), one person read by id, and the ids of the persons
a search finds under an e-mail.

:class:`PersonCalls` is the base each part inherits (the pages of :mod:`._pull`, the
subject's persons of :mod:`._lookup`, the writes of :mod:`._own_entries`, :mod:`._patch`
and :mod:`._writes`, the erasure of :mod:`._erasure`), so each is checked against the
attributes declared here rather than an untyped ``self``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from adapters.pipedrive.directory import Directory
from adapters.pipedrive.linked import LinkedReader
from adapters.pipedrive.payloads import search_hits
from adapters.pipedrive.sent import LastSent
from adapters.pipedrive.settings import PipedriveSettings
from connector.adapter import Limits
from connector.http import SystemClient, answer_object
from connector.paging import PageTokens

PERSONS: Final = "/persons"
SEARCH: Final = "/persons/search"


class PersonCalls:
    """The attributes every part of the adapter uses, and the reads they all make.

    :class:`~adapters.pipedrive.adapter.PipedriveAdapter` sets the attributes (see its
    ``__init__``).
    """

    client: SystemClient
    settings: PipedriveSettings
    limits: Limits
    #: Who holds an e-mail, from one listing of every person (:mod:`.directory`).
    directory: Directory
    #: What the adapter last wrote as a person's own e-mail and phone (:mod:`.sent`).
    sent: LastSent
    #: What Pipedrive keeps beside a person (:mod:`.linked`).
    linked: LinkedReader
    #: Held while the persons are listed, so batches side by side wait for one listing.
    _listing: asyncio.Lock

    async def _read(self, person_id: int) -> dict[str, Any] | None:
        """The person as Pipedrive shows them, in the bin (``is_deleted``) or not; ``None``
        for a 404."""
        path = f"{PERSONS}/{person_id}"
        response = await self.client.request("GET", path, accept=(404,))
        if response.status_code == 404:
            return None
        data = answer_object(
            response, system=self.client.system, method="GET", path=path, required=("data",)
        )["data"]
        if not isinstance(data, dict) or data.get("id") is None:
            return None
        return data

    async def _search(self, email: str) -> list[int]:
        """Ids of live persons whose e-mails include ``email`` exactly (search bucket).

        Every page of hits, by ``additional_data.next_cursor``: more than a page's hundred
        persons may share an address (a shared mailbox), and an access request or an
        erasure must see all of them.
        """
        ids: set[int] = set()
        cursor: str | None = None
        tokens = PageTokens(self.client.system, "GET", SEARCH)
        while True:
            params: dict[str, Any] = {
                "term": email,
                "fields": "email",
                "exact_match": "true",
                "limit": 100,
            }
            if cursor:
                params["cursor"] = cursor
            response = await self.client.request("GET", SEARCH, params=params, bucket="search")
            body = answer_object(
                response, system=self.client.system, method="GET", path=SEARCH, required=("data",)
            )
            ids.update(search_hits(body, email))
            extra = body.get("additional_data")
            cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
            if not isinstance(cursor, str) or not cursor:
                return sorted(ids)
            # Paging in a loop: what was read is not all there is, and an erasure's check
            # must not conclude from it that nobody is left (as the pull refuses).
            tokens.follow(cursor, response.status_code)
