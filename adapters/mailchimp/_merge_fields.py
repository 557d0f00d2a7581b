"""Which merge fields of an audience a write may empty: its definitions, read once an hour.

A record's ``clear`` names fields to empty; an audience refuses a write leaving one it
requires empty, so each audience's definitions say which of them are written as ``""``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from adapters.mailchimp._calls import MailchimpCalls
from adapters.mailchimp.payloads import emptiable_tags, emptied, left_by, merge_tags
from adapters.mailchimp.settings import PAGE_SIZE
from connector.http import answer_object

#: An audience's merge field definitions: which of its fields a write may empty.
MERGE_FIELDS: Final = "/lists/{list_id}/merge-fields"
#: What of the definitions is read: an audience has far fewer merge fields than a page holds.
MERGE_FIELD_KEYS: Final = "merge_fields.tag,merge_fields.required"
#: How long an audience's definitions are trusted before they are read again: its owner can
#: make a field required at any time, and the daemon keeps one adapter for months. A write
#: refused meanwhile for a field it empties is sent again without emptying (see _write).
MERGE_FIELDS_MAX_AGE: Final = 3600.0


class MergeFields(MailchimpCalls):
    """The merge fields a write empties, as each audience lets it (upsert and update)."""

    #: list id -> (when read, by the client's clock; the merge tags a write may empty
    #: there): set empty by the adapter's ``__init__``.
    _emptiable_tags: dict[str, tuple[float, frozenset[str]]]

    async def _emptying(
        self,
        list_id: str,
        body: dict[str, Any],
        clear: frozenset[str],
        fields: Mapping[str, Any],
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """``body`` emptying the merge fields ``clear`` names that this audience lets a write
        empty (see :func:`~adapters.mailchimp.payloads.emptied`), for a member on it, and the
        names of ``clear`` it leaves as they are (:func:`left_by`; none that ``fields``
        writes): the result's ``kept``, a member held there.

        A field the audience requires is left as it is: Mailchimp refuses a write leaving one
        empty, which would fail the whole record for that one field, and a correction (which
        skips that check) would leave the audience holding it empty. A name the audience has
        no field for, or that is no merge field (:func:`merge_tags`), is passed over. Each
        audience is asked, as a member is on several and each defines its own fields.
        """
        tags = merge_tags(clear)
        if not tags:
            return body, left_by(clear, (), fields)
        emptiable = await self._emptiable(list_id)
        kept = [tag for tag in tags if tag in emptiable]
        return (emptied(body, kept) if kept else body), left_by(clear, kept, fields)

    async def _emptiable(self, list_id: str) -> frozenset[str]:
        """The merge tags of this audience a write may empty (the caller holds a connection),
        read again once :data:`MERGE_FIELDS_MAX_AGE` has passed.

        Workers that find them unread at once may each read them: the same answer, once per
        audience an hour, where a lock would hold the writes of every other audience back.
        """
        now = self.client.clock()
        kept = self._emptiable_tags.get(list_id)
        if kept is not None and now - kept[0] < MERGE_FIELDS_MAX_AGE:
            return kept[1]
        path = MERGE_FIELDS.format(list_id=quote(list_id, safe=""))
        # One page (PAGE_SIZE) holds every merge field an audience can have.
        params = {"count": PAGE_SIZE, "fields": MERGE_FIELD_KEYS}
        response = await self._request("GET", path, path, params=params)
        # An answer that is not the definitions (a maintenance page) must not pass for an
        # audience with nothing to empty for an hour: it fails the write, to be sent again.
        body = answer_object(
            response, system=self.client.system, method="GET", path=path, required=("merge_fields",)
        )
        tags = emptiable_tags(body["merge_fields"])
        self._emptiable_tags[list_id] = (now, tags)
        return tags
