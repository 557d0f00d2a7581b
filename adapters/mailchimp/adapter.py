"""The Mailchimp Marketing API 3.0 adapter: audience members, as a newsletter *destination*.

What it does, by contract verb:

- ``upsert``: ``PUT /lists/{list_id}/members/{subscriber_hash}`` per record and configured
  audience, fanned out concurrently but never more than ``max_connections`` calls in flight
  (Mailchimp answers the 11th simultaneous connection of an account with 429). The batch
  endpoints are not used: ``POST /batches`` is asynchronous (poll, then download a tar.gz of
  results) and ``POST /lists/{id}`` answers 200 with per-member errors whose messages echo
  e-mails; one idempotent PUT per member gives a per-record result straight away.
  A record whose ``status`` is ``"unsubscribed"`` (consent withdrawn) is sent as a ``PATCH``
  instead, which updates existing members only: a withdrawal never *adds* anyone; it reaches
  the member under the record's address and the one under the id the connector holds (the
  former address) when that is another, or that one alone when the record has no address
  (removed at the source). One whose
  ``status`` is ``"pending"`` (consent given again after a withdrawal) asks the member to
  confirm, unless it is subscribed already (see :func:`_renewal`); under a new address, beside
  a former member Mailchimp will not move, at the new one (see :func:`_beside`). One
  answered with the
  member ``transactional`` (never opted in at Mailchimp) gives it ``status_if_new`` (see
  :meth:`MailchimpAdapter._sign_up`). Each write reads the
  member first: an archived one is left archived and unchanged, never re-added (see
  :meth:`MailchimpAdapter._statuses`). A first write (no member id known) answered with the
  member ``unsubscribed`` on one audience sends the others the withdrawal instead, and its
  result is ``opted_out`` (see :meth:`MailchimpAdapter._opted_out`). The merge fields a
  record's ``clear`` names are written as ``""``, which empties them, on each audience that
  does not require them (``GET /lists/{list_id}/merge-fields``, read once an hour; see
  :meth:`MailchimpAdapter._emptying`), and the result's ``kept`` names the rest, kept on
  an audience holding the member; a withdrawal sends its status alone.
- ``update`` (a rectification): ``GET`` of the member's id and status on each configured
  audience, then a ``PATCH`` of its fields, never its status, if it is there and not
  archived, emptying what ``clear`` names as ``upsert`` does. It never adds, subscribes,
  re-subscribes or restores anyone (see :meth:`MailchimpAdapter.update`).
- ``find``: ``GET /search-members`` (exact matches across the account) plus ``GET`` of the
  member on every audience, archived members included (marked so: :func:`as_found`, which
  ``find_records`` does too); each member found comes with its
  notes (``GET .../members/{hash}/notes``: what the account's staff wrote about the person)
  and its activity (``GET .../members/{hash}/activity-feed``: sends, opens, clicks, bounces,
  unsubscribes); ``find_records`` (an erasure's snapshot and check, a correction) the
  members alone, asked for the paths the mapping reads alone (``ask_only_for_paths``);
- ``erase``: ``POST .../actions/delete-permanent`` on every audience the member is in, which
  deletes the member's notes with it. Never ``DELETE .../members/{hash}``, which only archives
  (the member can be re-added).
- webhooks: a secret in the callback URL (Mailchimp signs nothing), form-encoded events.
- ``check_settings`` (``check --online``): ``GET /lists/{list_id}`` of each configured
  audience, which a ``find`` cannot vouch for.
- ``pull``: not offered. Mailchimp is only a destination here.

Mailchimp's ``PUT`` answers the member without saying whether it was just created, so every
successful write is reported as ``"upserted"`` (written, new or not); one left alone on every
audience because the member is archived there is ``"skipped"``, and its ``note`` says so.

Privacy: failure reasons are Mailchimp's error ``title`` only (``Forgotten Email Not
Subscribed``), never its ``detail``, which echoes the e-mail. Error messages carry the path
with ``{subscriber_hash}`` in place of the hash, which identifies the person as well as the
e-mail does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from adapters.mailchimp.labels import COPY_LABELS
from adapters.mailchimp.payloads import (
    NOT_OPTED_IN_STATUS,
    RENEWED_STATUS,
    SIGNUPS_PAUSED,
    WITHDRAWN_STATUS,
    as_found,
    emptiable_tags,
    emptied,
    is_subscriber_hash,
    left_by,
    member_body,
    merge_tags,
    refused_fields,
    signups_paused,
    subscriber_hash,
    update_body,
    withdrawal_body,
)
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.mailchimp.settings import (
    PAGE_SIZE,
    MailchimpSettings,
    client_config,
    mailchimp_limits,
    wait_hint,
)
from adapters.mailchimp.webhooks import parse_delivery, verify_delivery
from connector.access_labels import CopyLabels
from connector.adapter import (
    AdapterSpec,
    Capability,
    ErasureResult,
    OutboundRecord,
    Page,
    Subject,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
)
from connector.errors import (
    FatalRemoteError,
    RecordError,
    RemoteError,
    RetryableError,
    system_down,
)
from connector.http import SystemClient, answer_object, json_object
from connector.workers import WorkerPool

__all__ = [
    "DELETE_PERMANENT",
    "SPEC",
    "MailchimpAdapter",
    "MailchimpSettings",
    "client_config",
    "mailchimp_limits",
    "wait_hint",
]

#: Query of a write that changes what it carries and nothing else (a withdrawal's status, a
#: correction's fields): Mailchimp otherwise checks the whole member against the audience's
#: required merge fields, and refuses an unsubscribe because a field the owner made
#: required later is empty.
_STATUS_ONLY: Final = {"skip_merge_validation": "true"}

MEMBER: Final = "/lists/{list_id}/members/{subscriber_hash}"
DELETE_PERMANENT: Final = f"{MEMBER}/actions/delete-permanent"
SEARCH: Final = "/search-members"
#: The account's audiences (``GET /lists``): an erasure looks on every one.
LISTS: Final = "/lists"
#: One audience (``GET /lists/{list_id}``): ``check --online`` reads each configured one.
AUDIENCE: Final = "/lists/{list_id}"
#: An audience's merge field definitions: which of its fields a write may empty.
MERGE_FIELDS: Final = "/lists/{list_id}/merge-fields"
#: What of the definitions is read: an audience has far fewer merge fields than a page holds.
MERGE_FIELD_KEYS: Final = "merge_fields.tag,merge_fields.required"
#: How long an audience's definitions are trusted before they are read again: its owner can
#: make a field required at any time, and the daemon keeps one adapter for months. A write
#: refused meanwhile for a field it empties is sent again without emptying (see _write).
MERGE_FIELDS_MAX_AGE: Final = 3600.0

ERASURE_NOTE: Final = (
    "permanently deleted on {n} audience(s); Mailchimp refuses to re-import this address "
    "unless the person re-subscribes"
)
ARCHIVED_NOTE: Final = (
    "left archived and unchanged on {n} audience(s): Mailchimp changes an archived member "
    "only by re-adding it, which would subscribe it again"
)
NOT_HELD_NOTE: Final = "no member with this address on any configured audience"
#: Put after the count of :data:`ERASURE_NOTE` by an attempt that finds the member gone from
#: audiences the request's snapshot found it on (``Subject.snapshot``): deleted there by an
#: earlier attempt cut off before its outcome was recorded (or by someone at Mailchimp).
GONE_BEFORE_NOTE: Final = (
    " by this attempt, and gone already from {n} more the request found it on before its "
    "first attempt"
)
#: A withdrawal with neither an address (removed at the source) nor a member id.
NO_MEMBER_NOTE: Final = "no address and no member id: no member to unsubscribe"
#: What a completed erasure did, for one that finds no member left of a person the request
#: found before (``ErasureResult.erased_note``).
ERASED_NOTE: Final = (
    "permanently deleted on every audience it was on; Mailchimp refuses to re-import this "
    "address unless the person re-subscribes"
)
OPTED_OUT_NOTE: Final = (
    "unsubscribed at Mailchimp on an audience; withdrawn from every audience, and recorded "
    "as their opt-out there"
)

#: Pages of a member's activity feed an access copy reads (each of ``PAGE_SIZE`` events, the
#: newest first): a bound, since the feed does not say how long it is.
ACTIVITY_PAGES: Final = 10
#: What every read of a member for an erasure or a correction asks for beside the paths the
#: mapping reads: its id and audience (the member's path), its address (a search's exact
#: match is told by it) and its status (an archived member is written to by neither).
MEMBER_KEYS: Final = ("id", "list_id", "email_address", "status")
#: Where a search's members lie in its answer: ``fields`` names paths from the answer's root.
SEARCH_MEMBERS: Final = "exact_matches.members"

#: The key of a member's record that says its activity was read only in part, and why.
ACTIVITY_UNREAD: Final = "activityNotRead"
#: Its reason, a code the access reports say in their language (connector/access.py).
ACTIVITY_UNREAD_REASON: Final = "activity_feed_cut"


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


class MailchimpAdapter:
    """Mailchimp audience members, as the :class:`~connector.adapter.Adapter` contract asks.

    Args:
        client: the account's HTTP client, built by :mod:`connector.http`; its base URL is
            ``https://<dc>.api.mailchimp.com/3.0``.
        settings: the account's validated settings.
    """

    kind: str = "mailchimp"
    #: A member's id is the MD5 of their e-mail: the store keeps it cloaked (connector/ids.py).
    personal_ids = True
    capabilities: frozenset[Capability] = frozenset(
        {"upsert", "update", "find", "erase", "webhooks", "webhook_url_check"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: A member comes with its activity and notes; its record holds the IP address it
    #: signed up and confirmed from (``ip_signup``, ``ip_opt``) and its status.
    copy_categories: frozenset[str] = frozenset({"activity", "notes", "online", "consent"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS
    #: A withdrawal without an address unsubscribes the member its id names (upsert).
    withdraws_by_id = True

    def __init__(self, client: SystemClient, settings: MailchimpSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = mailchimp_limits(settings)
        # One gate for every call this adapter makes (upserts, lookups, erasures, and the
        # several upsert batches the engine runs at once): the account-wide limit is on
        # connections, so it must be kept here, not per call of ``upsert``.
        connections = min(
            settings.max_connections, settings.max_concurrency or settings.max_connections
        )
        self._connections = asyncio.Semaphore(connections)
        # Upserts run on as many workers as there are connections, each taking the next
        # member as soon as its call is answered (connector/workers.py): a freed connection
        # goes back to work in the same turn of the loop instead of waking another task.
        self._workers: WorkerPool[UpsertResult] = WorkerPool(connections)
        #: The paths of a member ``find_records`` asks for (``None``: whole members, before
        #: :meth:`ask_only_for_paths`).
        self._record_paths: tuple[str, ...] | None = None
        #: list id -> (when read, by the client's clock; the merge tags a write may empty
        #: there), read only once a record names fields to empty (see :meth:`_emptiable`).
        self._emptiable_tags: dict[str, tuple[float, frozenset[str]]] = {}

    def ask_only_for_paths(self, paths: Mapping[str, str]) -> None:
        """Read members for an erasure's snapshot and check and for a correction
        (:meth:`find_records`) with the paths the mapping reads and :data:`MEMBER_KEYS`
        alone, as Mailchimp's ``fields`` takes them (dotted: ``merge_fields.FNAME``).

        ``paths`` are the mapping's (:meth:`SystemMapping.source_paths`, each with the mapping
        key naming it). A whole member carries the IP addresses it signed up and confirmed
        from, its location, language, stats and tags, and every merge field (a postal
        address, a birthday) whether a mapping reads it or not: none of it leaves Mailchimp
        for a read that has no use for it. An access copy (:meth:`find`) still reads whole
        members.
        """
        self._record_paths = tuple(dict.fromkeys((*MEMBER_KEYS, *paths)))

    # -- pull ------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Not offered: Mailchimp is a destination (see ``capabilities``).

        Raises:
            FatalRemoteError: always, before any call; a flow must not use Mailchimp as source.
        """
        raise FatalRemoteError(
            self.client.system, "GET", "/lists/{list_id}/members", None, "pull not supported"
        )
        yield  # pragma: no cover  (makes this an async generator, as the contract has it)

    # -- upsert ----------------------------------------------------------------------------

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Write each record to every configured audience; one result per record, in order.

        A record fails only with what Mailchimp said (its error title) or, for a transient
        failure that outlasted the retries, as retryable. Writes are idempotent, so a record
        that failed on one audience is simply sent again to all of them.

        Raises:
            FatalRemoteError: bad API key, unknown audience, or a route Mailchimp refuses;
                calls not yet started are not made.
        """
        return await self._each(records, self._upsert_one)

    async def _each(
        self,
        records: Sequence[OutboundRecord],
        write_one: Callable[[OutboundRecord, _Batch], Awaitable[UpsertResult]],
    ) -> list[UpsertResult]:
        """``write_one`` over ``records`` on the workers; the first fatal error is raised once
        every call has finished, and stops those not yet started."""
        batch = _Batch()
        results = await self._workers.run_all(
            [partial(write_one, record, batch) for record in records]
        )
        if batch.fatal is not None:
            raise batch.fatal
        return results

    async def _upsert_one(self, record: OutboundRecord, batch: _Batch) -> UpsertResult:
        withdrawn = record.fields.get("status") == WITHDRAWN_STATUS
        if "@" in record.email:
            member_hash = subscriber_hash(record.email)
        elif withdrawn and record.external_id and is_subscriber_hash(record.external_id):
            # The shop removed the person's address, and their consent with it: the member
            # klantsync subscribed is known by its id alone, and unsubscribed by it.
            member_hash = record.external_id
        elif withdrawn:
            # Nor a member id: nothing klantsync wrote landed (the write it replaced was
            # never sent), and a withdrawal adds nobody.
            return UpsertResult(record.ref, "skipped", note=NO_MEMBER_NOTE)
        else:
            return UpsertResult(record.ref, "failed", reason="MISSING_EMAIL")
        # One audience after the other: a worker is one connection (see __init__).
        outcomes: list[_Outcome] = []
        for list_id in self.settings.list_ids:
            outcome = await self._write(list_id, member_hash, record, withdrawn, batch)
            if _unsubscribed_here(record, withdrawn, outcome):
                return await self._opted_out(record, member_hash, list_id, outcome, batch)
            outcomes.append(outcome)
        failed = _first_failure(record.ref, outcomes)
        if failed is None and any(o.beside for o in outcomes):
            # As below: the member under the former address stays, known by its id.
            member_id = record.external_id
            return UpsertResult(record.ref, "upserted", external_id=member_id, kept=_kept(outcomes))
        if failed is not None and _moving(record):
            # The member under the former address stays where its move failed or was refused
            # (Mailchimp moves a subscribed member alone): known by the new id an audience
            # that took the write gives, it was out of reach of an erasure, a withdrawal and a
            # correction. Known by the former id, both are reached: the new address's member
            # by its address, the former's by that id.
            return failed._replace(external_id=record.external_id)
        if failed is not None:
            return failed
        member_id = next((o.member_id for o in outcomes if o.member_id), None)
        archived = sum(o.left == "archived" for o in outcomes)
        note = ARCHIVED_NOTE.format(n=archived) if archived else ""
        if archived and member_id is None:
            return UpsertResult(record.ref, "skipped", note=note)
        kept = _kept(outcomes) if record.clear else frozenset()
        return UpsertResult(record.ref, "upserted", external_id=member_id, note=note, kept=kept)

    async def _opted_out(
        self,
        record: OutboundRecord,
        member_hash: str,
        unsubscribed_on: str,
        outcome: _Outcome,
        batch: _Batch,
    ) -> UpsertResult:
        """The person unsubscribed at Mailchimp itself, on ``unsubscribed_on``: withdraw them
        from every other audience this system writes, and say so to the engine.

        The system is one purpose: an unsubscribe from one of its audiences withdraws them
        from all it writes, as the ``unsubscribe`` webhook's opt-out does. A first write
        learns it only from an answer (it reads nothing first), so an audience written before
        may have just taken them, and one after would be sent ``status_if_new``, subscribing
        them anew: each is sent the withdrawal instead (a ``PATCH``, which adds nobody). The
        result is ``opted_out``, which the engine records as their opt-out at the system.
        """
        others = [list_id for list_id in self.settings.list_ids if list_id != unsubscribed_on]
        outcomes = [outcome]
        for list_id in others:
            outcomes.append(await self._write(list_id, member_hash, record, True, batch))
        failed = _first_failure(record.ref, outcomes)
        if failed is not None:
            # Without the member id, the record sent again is a first write again, and finds
            # them unsubscribed again. Known by it, the write would take that unsubscribe for
            # one klantsync may have sent, and subscribe them where the withdrawal failed.
            return failed._replace(external_id=None)
        return UpsertResult(
            record.ref,
            "upserted",
            external_id=outcome.member_id,
            note=OPTED_OUT_NOTE,
            opted_out=True,
            kept=outcome.kept,
        )

    async def _write(
        self,
        list_id: str,
        member_hash: str,
        record: OutboundRecord,
        withdrawn: bool,
        batch: _Batch,
    ) -> _Outcome:
        path = _member_path(list_id, member_hash)
        template = _member_path(list_id, "{subscriber_hash}")

        async def call() -> _Outcome:
            if withdrawn:
                return await self._withdraw(list_id, member_hash, record)
            body = member_body(record.email, record.fields, self.settings.status_if_new)
            renewal = body.get("status") == RENEWED_STATUS
            # Read first where the connector wrote the person before (it holds their member
            # id) and for a renewal: a member it never wrote is written with status_if_new
            # alone, which leaves an archived one archived (see _statuses), and the answer
            # says so. Read before every write, a first sync took two calls a member.
            reads = record.external_id is not None or renewal
            held = await self._statuses(list_id, template, record) if reads else {}
            if "archived" in held.values():
                return _Outcome(ok=True, left="archived")
            if renewal:
                body = _renewal(body, held)
            # Nearly every record empties nothing, and costs nothing more than before.
            sent, left = body, frozenset[str]()
            if record.clear:
                sent, left = await self._emptying(list_id, body, record.clear, record.fields)
            try:
                response = await self._put_or_move(list_id, path, template, record, sent, held)
            except RecordError:
                if sent is body:
                    raise
                # A field was made required since the definitions were read: the rest of the
                # record is written, the field left as it is, and the definitions read anew.
                self._emptiable_tags.pop(list_id, None)
                response = await self._put_or_move(list_id, path, template, record, body, held)
                left = left_by(record.clear, (), record.fields)
            if reads and not held:
                # A member the write adds held nothing to empty. One not read first (no
                # member id known) may be new too: what it leaves is said kept, never emptied.
                left = frozenset()
            written = _written(response)
            if written.status == NOT_OPTED_IN_STATUS and "status" not in body:
                written = await self._sign_up(list_id, template, written)
            # Marked after the sign-up, whose answer is a new outcome: marked before, a
            # transactional member beside the former one lost the mark, and the connector
            # knew the person by the new member alone (the former out of an erasure's reach).
            if _beside(record, body, held) and written.member_id:
                written = replace(written, beside=True)
            return replace(written, kept=left) if left and written.member_id else written

        return await self._on_connection(batch, call)

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

    async def _sign_up(self, list_id: str, template: str, written: _Outcome) -> _Outcome:
        """Give a consenting person Mailchimp holds as ``transactional`` a new member's status.

        A transactional member is a contact the store's own Mailchimp integration added
        without a newsletter opt-in; no campaign reaches it, and a write without a status
        leaves it so (``status_if_new`` reaches new members only). It never unsubscribed, so
        nothing of the person's own choice at Mailchimp is overridden: the shop's consent
        gives it what a new member gets (subscribed, or pending to confirm), in a ``PATCH``
        of the status alone, as a withdrawal is sent.
        """
        member_id = written.member_id or ""
        response = await self._request(
            "PATCH",
            _member_path(list_id, member_id),
            template,
            params=_STATUS_ONLY,
            json={"status": self.settings.status_if_new},
            accept=(404,),
        )
        if response.status_code == 404:
            # Gone since the write: its fate is unknown, so the record is sent again.
            return _Outcome(ok=False, reason="NO_RESULT", retryable=True)
        return _written(response)

    async def _withdraw(self, list_id: str, member_hash: str, record: OutboundRecord) -> _Outcome:
        """Unsubscribe every member of this audience the withdrawal is about.

        That is the member under the record's address and, when the connector holds the id
        of another (the person changed their address since it was written, and the move was
        refused or not yet made), that one too: it is the member klantsync subscribed, and
        stopping at the first that answers would leave it getting the newsletter. A member
        the identity map knows as another subject's (``record.spare``) is left alone.

        ``PATCH`` updates only: someone who is not in this audience stays out of it (404 is
        that answer). The member is unsubscribed where it is, not moved.
        """
        template = _member_path(list_id, "{subscriber_hash}")
        hashes = [member_hash]
        known = record.external_id
        if known and is_subscriber_hash(known) and known not in (member_hash, *record.spare):
            hashes.append(known)
        written: list[_Outcome] = []
        for held in hashes:
            response = await self._request(
                "PATCH",
                _member_path(list_id, held),
                template,
                params=_STATUS_ONLY,
                json=withdrawal_body(),
                accept=(404,),
            )
            if response.status_code != 404:
                written.append(_written(response))
        if not written:
            return _Outcome(ok=True)
        # One write whose fate is unknown has the record sent again; otherwise the member
        # under the record's address is the one the connector knows the person by.
        return next((outcome for outcome in written if not outcome.ok), written[0])

    async def _statuses(
        self, list_id: str, template: str, record: OutboundRecord
    ) -> dict[str, str]:
        """member id -> status of each member the write may reach on this audience: the one
        under the record's address, then the one under the id the connector holds (a
        ``PUT`` goes to the first, a move to the second); absent ones are left out.

        Read before every write because of archived members. A marketer archives contacts
        (often ones who unsubscribed: archived contacts are not billed), and Mailchimp
        documents no way to write an archived member but re-adding it, which subscribes it
        again. Reports differ on what a ``PUT`` carrying only ``status_if_new`` does to one
        (it stays archived, say jethro-pmm #708 and mailchimp/mc-woocommerce #951), so the
        connector does not send it one at all: it is left archived and unchanged (see
        :data:`ARCHIVED_NOTE`). A member the identity map knows as another subject's is
        not read.
        """
        statuses: dict[str, str] = {}
        for member_hash in _member_hashes(record.email, record.external_id):
            if member_hash in record.spare:
                continue
            held = await self._request(
                "GET",
                _member_path(list_id, member_hash),
                template,
                params={"fields": "id,status"},
                accept=(404,),
            )
            if held.status_code != 404:
                statuses[member_hash] = str(json_object(held).get("status") or "")
        return statuses

    async def _put_or_move(
        self,
        list_id: str,
        path: str,
        template: str,
        record: OutboundRecord,
        body: dict[str, Any],
        held: Mapping[str, str],
    ) -> httpx.Response:
        """``PUT`` the member; if it is known under another address, change that one's first.

        The member id the connector holds is the hash of the address it was written under.
        When it differs from the record's, the person changed their address at the source:
        a ``PATCH`` of the known member with the new ``email_address`` moves it (history,
        status and consent kept) where a ``PUT`` would add a second member and leave the
        first subscribed under the old address. A member gone from the audience (404) is
        simply written under the new address. Mailchimp moves a subscribed member alone: the
        move of any other is refused ("Invalid Resource", naming ``email address``), which
        fails the record for good, and no ``PUT`` adds a second member beside it (that would
        subscribe, or ask to confirm, someone who unsubscribed or bounced there), with two
        exceptions, told by ``held`` (the statuses read first, see :meth:`_statuses`), where
        the member is written under the record's address beside the one that stays
        (:func:`_beside`).
        """
        known = record.external_id
        if known and _moving(record) and not _beside(record, body, held):
            change = {"email_address": record.email, "merge_fields": body.get("merge_fields", {})}
            if "status" in body:  # a renewal: the member under the former address confirms
                change["status"] = body["status"]
            moved = await self._request(
                "PATCH", _member_path(list_id, known), template, json=change, accept=(404,)
            )
            if moved.status_code != 404:
                return moved
        return await self._request("PUT", path, template, json=body)

    # -- update ----------------------------------------------------------------------------

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
        note = ARCHIVED_NOTE.format(n=archived) if archived else ""
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

    # -- find ------------------------------------------------------------------------------

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every member record of the subject, on any audience, archived ones included, each
        with the notes Mailchimp holds about it under ``"notes"`` and its activity under
        ``"activity"``.

        A note is free text the account's staff wrote about the person, so access must show
        it. The activity is what Mailchimp recorded of the person's newsletter (sends, opens,
        clicks, bounces, unsubscribes, sign-ups): tracking it holds about them, which access
        must show as well (see :meth:`_activity`). Neither is a record of its own: each lives
        and dies with its member (``delete-permanent`` deletes "all personally identifiable
        information related to" it), so an erasure's check that nothing is left needs to look
        for members only, and one whose member is gone has nothing to read.
        """
        members = await self._members(subject)
        found: list[dict[str, Any]] = []
        for (list_id, member_hash), member in members.items():
            notes = await self._notes(list_id, member_hash)
            activity = await self._activity(list_id, member_hash)
            found.append({**member, "notes": notes, **activity})
        return found

    async def find_records(self, subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        """The subject's member records, as :meth:`find` finds them, without their notes and
        activity: an erasure's snapshot and check and a correction need the members (ids,
        status, merge fields), and ``delete-permanent`` deletes the rest unread (see
        ``Adapter.find``), with the paths the mapping reads alone once told them
        (:meth:`ask_only_for_paths`). Mailchimp holds no orders (``orders`` is the
        contract's)."""
        return list((await self._members(subject, self._record_paths)).values())

    async def _members(
        self, subject: Subject, paths: Sequence[str] | None = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """(list id, member id) -> member, from search-members and every audience read by hash;
        whole, or with ``paths`` alone (Mailchimp's ``fields``), which must hold
        :data:`MEMBER_KEYS`.

        Every audience of the account is read by hash, not only the configured ones, because
        a search may not show every member (archived ones, for instance): an erasure must
        reach, and its check must see, an archived member on an audience klantsync does not
        write to. The identity map's id is tried as well (the hash of the address the
        connector wrote).
        """
        found: dict[tuple[str, str], dict[str, Any]] = {}
        email = subject.email.strip().lower()
        if "@" in email:
            for member in await self._search(email, paths):
                found[(str(member["list_id"]), str(member["id"]))] = member
        hashes = _member_hashes(email, subject.external_id)
        audiences = list(self.settings.list_ids)
        audiences += [a for a in await self._audiences() if a not in audiences]
        for list_id in audiences:
            for member_hash in hashes:
                if (list_id, member_hash) in found:
                    continue
                held = await self._get_member(list_id, member_hash, paths)
                if held is not None:
                    found[(list_id, member_hash)] = held
        # Another subject's member (Subject.spare) is neither read nor deleted.
        return {
            key: as_found(member) for key, member in found.items() if key[1] not in subject.spare
        }

    async def _audiences(self) -> list[str]:
        """Every audience id of the account (``GET /lists``)."""
        lists = await self._collection(LISTS, LISTS, "lists", fields="lists.id,total_items")
        found = (str(item.get("id") or "") for item in lists)
        return [list_id for list_id in found if list_id.isalnum()]

    async def _notes(self, list_id: str, member_hash: str) -> list[dict[str, Any]]:
        """The member's notes (``GET .../notes``); none if the member went away meanwhile."""
        path = _member_path(list_id, member_hash) + "/notes"
        template = _member_path(list_id, "{subscriber_hash}") + "/notes"
        return await self._collection(path, template, "notes", gone_is_empty=True)

    async def _activity(self, list_id: str, member_hash: str) -> dict[str, Any]:
        """``{"activity": [...]}``: the member's activity feed (``GET .../activity-feed``), the
        newest events first; none if the member went away meanwhile (404).

        ``activity-feed`` is read rather than the older ``.../activity``, which gives the
        last 50 events only: the feed pages by count and offset (at most 1000 a page). Its
        answer is not documented to hold ``total_items`` (UNVERIFIED), so it is read while
        its pages come full, up to :data:`ACTIVITY_PAGES`. A member with more than that
        carries :data:`ACTIVITY_UNREAD`, so the copy does not pass for the whole of it.
        """
        path = _member_path(list_id, member_hash) + "/activity-feed"
        template = _member_path(list_id, "{subscriber_hash}") + "/activity-feed"
        events = await self._collection(
            path, template, "activity", gone_is_empty=True, max_pages=ACTIVITY_PAGES
        )
        held: dict[str, Any] = {"activity": events}
        if len(events) >= ACTIVITY_PAGES * PAGE_SIZE:
            held[ACTIVITY_UNREAD] = {"reason": ACTIVITY_UNREAD_REASON, "eventsListed": len(events)}
        return held

    async def _collection(
        self,
        path: str,
        template: str,
        key: str,
        *,
        fields: str = "",
        gone_is_empty: bool = False,
        max_pages: int = 0,
    ) -> list[dict[str, Any]]:
        """Every item of the collection at ``path`` (the objects under ``key``), paged by
        count and offset as Mailchimp pages every collection: one call unless it holds more
        than a page. A 404 is an empty collection when ``gone_is_empty``.

        A collection that says how many items it holds (``total_items``) is read to the end.
        One that does not is read while its pages come full, up to ``max_pages`` (without a
        bound, its first page only: nothing else says when to stop).
        """
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            params: dict[str, Any] = {"count": PAGE_SIZE, "offset": offset}
            if fields:
                params["fields"] = fields
            async with self._connections:
                response = await self._request(
                    "GET", path, template, params=params, accept=(404,) if gone_is_empty else ()
                )
            if response.status_code == 404:
                return []
            # The template, not the path: a subscriber hash is the MD5 of the e-mail.
            body = answer_object(
                response, system=self.client.system, method="GET", path=template, required=(key,)
            )
            page = [item for item in body[key] or [] if isinstance(item, dict)]
            found += page
            offset += PAGE_SIZE
            total = body.get("total_items")
            if isinstance(total, int):
                more = offset < total
            else:
                more = len(page) >= PAGE_SIZE and offset < max_pages * PAGE_SIZE
            if not page or not more:
                return found

    async def _search(self, email: str, paths: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The exact matches of ``email`` across the account; whole, or with ``paths`` alone.

        Only the exact matches are asked for: the answer's ``full_search`` holds the members
        whose address merely contains the query, other people's (``jan@`` for ``an@``).
        """
        wanted = [f"{SEARCH_MEMBERS}.{path}" for path in paths] if paths else ["exact_matches"]
        # The e-mail travels in the query string, which SystemClient never puts in errors.
        params = {"query": email, "fields": ",".join(wanted)}
        async with self._connections:
            response = await self._request("GET", SEARCH, SEARCH, params=params)
        body = answer_object(
            response,
            system=self.client.system,
            method="GET",
            path=SEARCH,
            required=("exact_matches",),
        )
        matches = body["exact_matches"]
        members = matches.get("members") if isinstance(matches, dict) else None
        return [
            member
            for member in members or []
            if isinstance(member, dict)
            and str(member.get("email_address", "")).strip().lower() == email
            and str(member.get("list_id") or "").isalnum()
            # The id goes into erasure paths: only a real subscriber hash is taken.
            and is_subscriber_hash(str(member.get("id") or ""))
        ]

    async def _get_member(
        self, list_id: str, member_hash: str, paths: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The member, whole or with ``paths`` alone; ``None`` if the audience has none."""
        template = _member_path(list_id, "{subscriber_hash}")
        params = {"fields": ",".join(paths)} if paths else None
        async with self._connections:
            response = await self._request(
                "GET", _member_path(list_id, member_hash), template, params=params, accept=(404,)
            )
        if response.status_code == 404:
            return None
        # The template, not the path: a subscriber hash is the MD5 of the e-mail.
        return answer_object(
            response, system=self.client.system, method="GET", path=template, required=("id",)
        )

    # -- check -----------------------------------------------------------------------------

    async def check_settings(self) -> None:
        """Read each configured audience (``GET /lists/{list_id}``), for ``check --online``.

        An audience the account does not have (a typo in ``list_ids``, one deleted) fails
        every write with a fatal 404, yet a ``find`` cannot tell: the member of an unknown
        audience is answered 404 as an absent member is, which it takes for "no such member".

        Raises:
            FatalRemoteError: naming the first audience Mailchimp does not have (an audience
                id, no personal data); or the failure of the call.
        """
        for list_id in self.settings.list_ids:
            path = AUDIENCE.format(list_id=quote(list_id, safe=""))
            async with self._connections:
                response = await self._request(
                    "GET", path, path, params={"fields": "id"}, accept=(404,)
                )
            if response.status_code == 404:
                # Named in the detail: the error's route reads the id in its path as {id}.
                detail = f"no such audience {list_id!r}: check list_ids"
                raise FatalRemoteError(self.client.system, "GET", path, 404, detail)

    # -- erase -----------------------------------------------------------------------------

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

    # -- webhooks --------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Compare the URL's ``secret`` parameter in constant time; ``now`` is unused
        (Mailchimp sends no signature and no timestamp)."""
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Person events -> ``changed`` (a targeted sync); others ``ignored``; the URL check
        -> nothing (see :mod:`adapters.mailchimp.webhooks`)."""
        return parse_delivery(request, self.settings.list_ids)

    # -- plumbing --------------------------------------------------------------------------

    async def _on_connection(
        self, batch: _Batch, call: Callable[[], Awaitable[_Outcome]]
    ) -> _Outcome:
        """Run ``call`` on one of the account's connections; its remote errors become outcomes.

        The first fatal error is kept on ``batch``, and calls not yet started are not made.
        """
        async with self._connections:
            if batch.fatal is not None:
                return _Outcome(ok=False, reason="NOT_SENT", retryable=True)
            try:
                return await call()
            except FatalRemoteError as exc:
                batch.fatal = batch.fatal or exc
                return _Outcome(ok=False, reason=_reason(exc), retryable=True)
            except RecordError as exc:
                return _Outcome(ok=False, reason=_reason(exc))
            except RetryableError as exc:
                return _Outcome(
                    ok=False, reason=_reason(exc), retryable=True, unreachable=system_down(exc)
                )

    async def _request(
        self,
        method: str,
        path: str,
        template: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        accept: Sequence[int] = (),
    ) -> httpx.Response:
        """One call (the caller holds a connection slot); errors name ``template``, not ``path``.

        ``path`` holds the subscriber hash; the error raised names the route with
        ``{subscriber_hash}`` instead, so no message or log identifies the person. A 400 is
        read here, not by the client, for what its title alone does not say (see
        :meth:`_refused`).
        """
        try:
            response = await self.client.request(
                method, path, params=params, json=json, accept=(*accept, 400)
            )
        except RemoteError as exc:
            renamed = exc.renamed(template)
            # The original's message holds the hash: keep only what caused *it* (the transport
            # error, if any) in the chain.
            raise renamed from exc.__cause__
        if response.status_code == 400 and 400 not in accept:
            raise self._refused(method, template, response)
        return response

    def _refused(self, method: str, template: str, response: httpx.Response) -> RemoteError:
        """The record error a 400 is: Mailchimp's title, as the client would keep it, and the
        fields its ``errors[]`` names (``Invalid Resource: COMPANY``), never its ``detail``
        or messages, which echo the e-mail and values sent (see :func:`refused_fields`).

        A pause of the address's signups is a :class:`RetryableError` instead (``Invalid
        Resource: SIGNUPS_PAUSED``): the record stays queued and is sent again by a later
        run, once Mailchimp takes signups of the address again, where a record error would
        have dead-lettered a consenting person as an address Mailchimp will not take.
        """
        body = json_object(response)
        title = body.get("title")
        category = title if isinstance(title, str) and self.client.is_category(title) else ""
        if signups_paused(body):
            paused = f"{category or 'HTTP_400'}: {SIGNUPS_PAUSED}"
            return RetryableError(self.client.system, method, template, 400, paused)
        fields = refused_fields(body) if category else []
        detail = f"{category}: {', '.join(fields)}" if fields else category
        return RecordError(self.client.system, method, template, 400, detail)


def _keys(members: Mapping[tuple[str, str], Any]) -> frozenset[str]:
    """Each (list id, member id) of ``members`` as one key of ``Subject.snapshot``."""
    return frozenset(f"{list_id}/{member_id}" for list_id, member_id in members)


def _erasure_note(deleted: int, gone: int) -> str:
    """:data:`ERASURE_NOTE` for ``deleted`` audiences, with the ``gone`` more an earlier
    attempt of the request left without their member (:data:`GONE_BEFORE_NOTE`)."""
    if not gone:
        return ERASURE_NOTE.format(n=deleted)
    count, rest = ERASURE_NOTE.format(n=deleted).split(";", 1)
    return f"{count}{GONE_BEFORE_NOTE.format(n=gone)};{rest}"


def _member_path(list_id: str, member_hash: str) -> str:
    return f"/lists/{quote(list_id, safe='')}/members/{member_hash}"


def _member_hashes(email: str, external_id: str | None) -> list[str]:
    """The member ids a person may have on an audience: their address's hash, and the id the
    connector holds when it is another (the member's address changed in Mailchimp)."""
    normalised = email.strip().lower()
    hashes = [subscriber_hash(normalised)] if "@" in normalised else []
    if external_id and is_subscriber_hash(external_id):
        hashes.append(external_id)
    return list(dict.fromkeys(hashes))


def _moving(record: OutboundRecord) -> bool:
    """Whether the record moves a member: the connector knows it by the hash of another
    address than the record's (the person changed theirs at the source)."""
    known = record.external_id
    return bool(known and is_subscriber_hash(known) and known != subscriber_hash(record.email))


def _beside(record: OutboundRecord, body: Mapping[str, Any], held: Mapping[str, str]) -> bool:
    """Whether a write that moves a member (:func:`_moving`) goes to the record's address
    beside the member under the former one, which ``held`` shows is not subscribed (Mailchimp
    would refuse its move), and is left where it is.

    So it goes for consent given again (a renewal, asking to confirm): the person is asked
    at their new address, and nobody is subscribed who does not confirm; the former member
    stays unsubscribed. So it goes too where the record's address has a member of its own
    on the audience (the person signed up again under it): it is written as it is, status
    kept. Either way the connector keeps knowing the person by the former member's id, so
    an erasure, a withdrawal and a correction reach both (the new one by its address).
    """
    known = record.external_id
    if not known or not _moving(record) or held.get(known, "subscribed") == "subscribed":
        return False
    return body.get("status") == RENEWED_STATUS or subscriber_hash(record.email) in held


def _renewal(body: dict[str, Any], held: Mapping[str, str]) -> dict[str, Any]:
    """``body`` asking to confirm again, or without a status for a member who is in.

    Someone the connector unsubscribed when they withdrew consent has given it again.
    Mailchimp does not let an API set an unsubscribed member's status to ``subscribed`` (400
    "Member In Compliance State", widely reported); only the person can re-subscribe.
    ``pending`` is how they can: Mailchimp e-mails them a confirmation, and they are
    subscribed once they confirm, by their own hand, as Mailchimp requires. ``held`` is what
    was read of the members the write may reach (under the address's hash first, then the
    id the connector holds): one who is subscribed or pending already (they re-subscribed
    through the audience's form meanwhile) keeps that status, and is not sent back to
    confirm.
    """
    first = next(iter(held.values()), None)
    if first in ("subscribed", "pending"):
        return {name: value for name, value in body.items() if name != "status"}
    return body


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


def _unsubscribed_here(record: OutboundRecord, withdrawn: bool, outcome: _Outcome) -> bool:
    """Whether a first write (no member id known) found the person unsubscribed.

    A write without a status keeps a member's status, so Mailchimp's answer says what the
    person chose there. Only a first write says it of the person: a member klantsync wrote
    before may be unsubscribed by klantsync's own withdrawal, and one it never wrote was
    not (a withdrawal adds nobody, and learns the id of any member it reaches).
    """
    return (
        not withdrawn
        and record.external_id is None
        and outcome.ok
        and outcome.status == WITHDRAWN_STATUS
    )


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


def _reason(exc: RemoteError) -> str:
    """Mailchimp's error title (the client keeps only known ones, see ERROR_TITLES), or status."""
    if exc.detail:
        return exc.detail
    return f"HTTP_{exc.status}" if exc.status is not None else type(exc).__name__


SPEC = AdapterSpec(
    kind="mailchimp",
    settings_model=MailchimpSettings,
    factory=MailchimpAdapter,
    client_config=client_config,
    limits=mailchimp_limits,
    sandbox=MailchimpSandbox,
)
