"""``update`` (a rectification): correct the members that exist, on every configured
audience; never add, subscribe, re-subscribe or restore anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from adapters.mailchimp._calls import _STATUS_ONLY, _member_hashes, _member_path
from adapters.mailchimp._merge_fields import MergeFields
from adapters.mailchimp._outcomes import (
    ARCHIVED_NOTE,
    _Batch,
    _first_failure,
    _kept,
    _Outcome,
    _written,
)
from adapters.mailchimp.payloads import update_body
from connector.adapter import OutboundRecord, UpsertResult
from connector.http import json_object
from connector.wording import counted

NOT_HELD_NOTE: Final = "no member with this address on any configured audience"


class Corrections(MergeFields):
    """The adapter's ``update``: a ``PATCH`` of the fields of each member that is there."""

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Correct members that exist; never add, subscribe, re-subscribe or restore anyone.

        On each configured audience, each member the record may be (its address's hash, and
        the known member id if that differs, as ``find`` looks them up) is read first:

        - absent (404): left absent; a correction adds nobody to an audience;
        - archived: left archived and unchanged, as a sync's write leaves it (see
          :meth:`_statuses`). Mailchimp documents no way to change an archived member but
          re-adding it with a ``PUT``, which subscribes it again, and the sandbox answers a
          ``PATCH`` of one with 404 as of an absent member. Reading first
          means no ``PATCH`` is even tried, so no undocumented vendor behaviour can restore
          the member, and the result can say it is there but was left alone;
        - any other status (subscribed, unsubscribed, cleaned, pending): a ``PATCH`` of its
          fields alone (:func:`~adapters.mailchimp.payloads.update_body`), so the status,
          which is the member's consent, stays what it is;
        - another subject's (its id among ``record.spare``): left as it is.

        One result per record: ``updated`` if some member was changed (``note`` counts the
        archived ones left alone), ``skipped`` if only archived members exist, ``not_held``
        if none does, or ``failed`` as for ``upsert``.

        Raises:
            FatalRemoteError: as for ``upsert``; calls not yet started are not made.
        """
        return await self._each(records, self._update_one)

    async def _update_one(self, record: OutboundRecord, batch: _Batch) -> UpsertResult:
        hashes = _member_hashes(record.email, record.external_id)
        if not hashes:
            return UpsertResult(record.ref, "failed", reason="MISSING_EMAIL")
        body = update_body(record.fields)
        # One member after the other: a worker is one connection (see __init__). Another
        # subject's member (record.spare) keeps their own values.
        outcomes = [
            await self._correct(list_id, member_hash, body, batch, record)
            for list_id in self.settings.list_ids
            for member_hash in hashes
            if member_hash not in record.spare
        ]
        failed = _first_failure(record.ref, outcomes)
        if failed is not None:
            return failed
        archived = sum(o.left == "archived" for o in outcomes)
        note = ARCHIVED_NOTE.format(audiences=counted(archived, "audience")) if archived else ""
        member_id = next((o.member_id for o in outcomes if o.member_id), None)
        if member_id is not None:
            kept = _kept(outcomes) if record.clear else frozenset()
            return UpsertResult(record.ref, "updated", external_id=member_id, note=note, kept=kept)
        if archived:
            return UpsertResult(record.ref, "skipped", note=note)
        return UpsertResult(record.ref, "not_held", note=NOT_HELD_NOTE)

    async def _correct(
        self,
        list_id: str,
        member_hash: str,
        body: dict[str, Any],
        batch: _Batch,
        record: OutboundRecord,
    ) -> _Outcome:
        """Read one member; ``PATCH`` ``body`` onto it only if it is there, not archived and
        not another subject's (its id among the record's ``spare``), emptying the fields its
        ``clear`` names that its audience lets a write empty (see :meth:`_emptying`); the
        outcome's ``kept`` names those it leaves.

        Only its id and status are asked for, as :meth:`_statuses` asks: they are all the
        check reads, and a whole member carries the IP addresses it signed up and confirmed
        from, its location, language, stats, tags and every merge field."""
        path = _member_path(list_id, member_hash)
        template = _member_path(list_id, "{subscriber_hash}")

        async def call() -> _Outcome:
            held = await self._request(
                "GET", path, template, params={"fields": "id,status"}, accept=(404,)
            )
            if held.status_code == 404:
                return _Outcome(ok=True, left="absent")
            member = json_object(held)
            if str(member.get("id")) in record.spare:
                return _Outcome(ok=True, left="spare")
            if member.get("status") == "archived":
                return _Outcome(ok=True, left="archived")
            sent, left = body, frozenset[str]()
            if record.clear:
                sent, left = await self._emptying(list_id, body, record.clear, record.fields)
            response = await self._request(
                "PATCH", path, template, params=_STATUS_ONLY, json=sent, accept=(404,)
            )
            if response.status_code == 404:
                return _Outcome(ok=True, left="absent")  # gone since it was read
            written = _written(response)
            return replace(written, kept=left) if left and written.member_id else written

        return await self._on_connection(batch, call)
