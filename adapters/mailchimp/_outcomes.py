"""What one write to one audience came to, and the result of a record made of those.

``upsert`` and ``update`` (a correction) write each record to every configured audience:
each write is an :class:`_Outcome` (fine, failed, or left alone and why), and the record's
:class:`~connector.adapter.UpsertResult` is told from all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import httpx

from connector.adapter import UpsertResult
from connector.errors import FatalRemoteError
from connector.http import json_object

ARCHIVED_NOTE: Final = (
    "left archived and unchanged on {audiences}: Mailchimp changes an archived member "
    "only by re-adding it, which would subscribe it again"
)


@dataclass
class _Outcome:
    """One write to one audience: fine, or failed with a reason.

    ``left`` says why a correction (``update``) wrote nothing there although nothing failed:
    no such member (``"absent"``), an archived one (``"archived"``), or another subject's
    (``"spare"``: :attr:`~connector.adapter.OutboundRecord.spare`).
    """

    ok: bool
    reason: str = ""
    retryable: bool = False
    member_id: str | None = None
    left: Literal["", "absent", "archived", "spare"] = ""
    #: The failure said Mailchimp could not be reached (see connector.errors.system_down).
    unreachable: bool = False
    #: The member's status in Mailchimp's answer to the write ("" when there was none).
    status: str = ""
    #: The names of the record's ``clear`` the write left as they were on this audience.
    kept: frozenset[str] = frozenset()
    #: The write went to the record's address beside the member under the former one, which
    #: Mailchimp would not move (see ``MailchimpAdapter._put_or_move``): that one stays.
    beside: bool = False


@dataclass
class _Batch:
    """What the calls of one ``upsert`` share: the first fatal error stops the rest."""

    fatal: FatalRemoteError | None = None


def _written(response: httpx.Response) -> _Outcome:
    """The member Mailchimp answered a write with, by its id.

    Mailchimp answers every write of a member with the member, id included. A 2xx that is
    not one (a maintenance page or a proxy's page answered 200, an empty body) says nothing
    about the write: it may never have reached Mailchimp. Its fate is unknown, so the record
    is sent again (writes are idempotent) rather than taken as written, which would record
    it delivered and leave a member missing, or a withdrawal of consent never made.
    """
    member = json_object(response)
    member_id = member.get("id")
    if not isinstance(member_id, str) or not member_id:
        return _Outcome(ok=False, reason="NO_RESULT", retryable=True)
    if member.get("status") == "archived":
        # Written without a status to a member archived before the connector knew it: it
        # stays archived, as the marketer left it, and is not counted as written there.
        return _Outcome(ok=True, left="archived")
    return _Outcome(ok=True, member_id=member_id, status=str(member.get("status") or ""))


def _kept(outcomes: Sequence[_Outcome]) -> frozenset[str]:
    """The names of a record's ``clear`` left as they were on any audience that holds the
    member written: kept on one, the field is still held (its ``kept``)."""
    return frozenset().union(*(o.kept for o in outcomes if o.member_id))


def _first_failure(ref: str, outcomes: Sequence[_Outcome]) -> UpsertResult | None:
    """The record's failure, if any audience failed: a retryable one first, since a record
    sent again is sent to every audience anyway.

    Either names the member id an audience that did take the write holds: the member exists
    there, and the connector must know it by that id (a move of the person's address before
    the retry renames it instead of adding a second member beside it; their erasure and
    their withdrawal of consent reach it). A refusal by another audience (a required merge
    field it lacks) does not undo the member one audience made.
    """
    written = next((o.member_id for o in outcomes if o.ok and o.member_id), None)
    for outcome in outcomes:
        if not outcome.ok and outcome.retryable:
            return UpsertResult(
                ref,
                "failed",
                external_id=written,
                reason=outcome.reason,
                retryable=True,
                unreachable=outcome.unreachable,
            )
    for outcome in outcomes:
        if not outcome.ok:
            return UpsertResult(ref, "failed", external_id=written, reason=outcome.reason)
    return None
