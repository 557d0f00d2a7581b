"""``erase``: ``delete-permanent`` of the subject's member on every audience it is in.

Never ``DELETE .../members/{hash}``, which only archives (the member can be re-added).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from adapters.mailchimp._calls import _member_path
from adapters.mailchimp._members import MEMBER_KEYS, MemberReads
from connector.adapter import ErasureResult, Subject
from connector.wording import counted

MEMBER: Final = "/lists/{list_id}/members/{subscriber_hash}"
DELETE_PERMANENT: Final = f"{MEMBER}/actions/delete-permanent"

ERASURE_NOTE: Final = (
    "permanently deleted on {audiences}; Mailchimp refuses to re-import this address "
    "unless the person re-subscribes"
)
#: Put after the count of :data:`ERASURE_NOTE` by an attempt that finds the member gone from
#: audiences the request's snapshot found it on (``Subject.snapshot``): deleted there by an
#: earlier attempt cut off before its outcome was recorded (or by someone at Mailchimp).
GONE_BEFORE_NOTE: Final = (
    " by this attempt, and gone already from {n} more the request found it on before its "
    "first attempt"
)
#: What a completed erasure did, for one that finds no member left of a person the request
#: found before (``ErasureResult.erased_note``).
ERASED_NOTE: Final = (
    "permanently deleted on every audience it was on; Mailchimp refuses to re-import this "
    "address unless the person re-subscribes"
)


class Erasure(MemberReads):
    """Permanent deletion of a subject's members, found as :class:`MemberReads` finds them."""

    async def erase(self, subject: Subject) -> ErasureResult:
        """Permanently delete the subject's member record on every audience it is in.

        ``delete-permanent`` works per audience, so it is called once per member found. A 404
        means the member went away meanwhile. Calling this twice is harmless; the second call
        finds nobody and reports ``found=False``.

        The members are read for where they are (:data:`MEMBER_KEYS`) alone: what they hold
        goes with them unread.
        """
        members = await self._members(subject, MEMBER_KEYS)
        # The count is of this call's deletions: an attempt cut off between two audiences
        # deleted on some already, which the request's snapshot says it found them on.
        gone = len((subject.snapshot or frozenset()) - _keys(members))
        deleted = 0
        status: int | None = None
        for list_id, member_hash in members:
            path = _member_path(list_id, member_hash) + "/actions/delete-permanent"
            template = _member_path(list_id, "{subscriber_hash}") + "/actions/delete-permanent"
            async with self._connections:
                response = await self._request("POST", path, template, accept=(404,))
            if response.status_code == 204:
                deleted += 1
            status = response.status_code if status in (None, 204) else status
        return ErasureResult(
            found=bool(members),
            mode="hard_delete",
            reversible=False,
            endpoint=f"POST {DELETE_PERMANENT}",
            vendor_status=status,
            note=(
                _erasure_note(deleted, gone)
                if members
                else "no member with this address on any audience"
            ),
            erased_note=ERASED_NOTE,
        )

    def snapshot_keys(self, records: Sequence[Mapping[str, Any]]) -> frozenset[str]:
        """The audience and member id of each member an erasure's snapshot found, for
        ``Subject.snapshot`` (see ``Adapter.erase``): no address, only where it was."""
        return _keys({(str(r.get("list_id")), str(r.get("id"))): r for r in records})


def _keys(members: Mapping[tuple[str, str], Any]) -> frozenset[str]:
    """Each (list id, member id) of ``members`` as one key of ``Subject.snapshot``."""
    return frozenset(f"{list_id}/{member_id}" for list_id, member_id in members)


def _erasure_note(deleted: int, gone: int) -> str:
    """:data:`ERASURE_NOTE` for ``deleted`` audiences, with the ``gone`` more an earlier
    attempt of the request left without their member (:data:`GONE_BEFORE_NOTE`)."""
    if not gone:
        return ERASURE_NOTE.format(audiences=counted(deleted, "audience"))
    count, rest = ERASURE_NOTE.format(audiences=counted(deleted, "audience")).split(";", 1)
    return f"{count}{GONE_BEFORE_NOTE.format(n=gone)};{rest}"
