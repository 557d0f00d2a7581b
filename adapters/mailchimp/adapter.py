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
  notes (``GET .../members/{hash}/notes``: what the account's staff wrote about the person,
  without who wrote it and others' addresses it quotes: :mod:`adapters.mailchimp._members`)
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

The class is made of parts, each a module of this package it inherits: the reads of a
subject's members (``find``, ``find_records``) in :mod:`adapters.mailchimp._members`,
``erase`` in :mod:`adapters.mailchimp._erasure`, ``update`` in
:mod:`adapters.mailchimp._corrections`, the merge fields a write may empty in
:mod:`adapters.mailchimp._merge_fields`, and what they all share (one call, a write's
outcome) in :mod:`adapters.mailchimp._calls` and :mod:`adapters.mailchimp._outcomes`.

Privacy: failure reasons are Mailchimp's error ``title`` only (``Forgotten Email Not
Subscribed``), never its ``detail``, which echoes the e-mail. Error messages carry the path
with ``{subscriber_hash}`` in place of the hash, which identifies the person as well as the
e-mail does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

import httpx

from adapters.mailchimp._calls import _STATUS_ONLY, _member_hashes, _member_path
from adapters.mailchimp._corrections import Corrections
from adapters.mailchimp._erasure import DELETE_PERMANENT, Erasure
from adapters.mailchimp._members import ACTIVITY_UNREAD, ACTIVITY_UNREAD_REASON
from adapters.mailchimp._outcomes import (
    ARCHIVED_NOTE,
    _Batch,
    _first_failure,
    _kept,
    _Outcome,
    _written,
)
from adapters.mailchimp.labels import COPY_LABELS
from adapters.mailchimp.payloads import (
    NOT_OPTED_IN_STATUS,
    RENEWED_STATUS,
    WITHDRAWN_STATUS,
    is_subscriber_hash,
    left_by,
    member_body,
    subscriber_hash,
    withdrawal_body,
)
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.mailchimp.settings import (
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
    OutboundRecord,
    Page,
    UpsertResult,
    WebhookEvent,
    WebhookRequest,
)
from connector.errors import FatalRemoteError, RecordError
from connector.http import SystemClient, json_object
from connector.wording import counted
from connector.workers import WorkerPool

__all__ = [
    "ACTIVITY_UNREAD",
    "ACTIVITY_UNREAD_REASON",
    "DELETE_PERMANENT",
    "SPEC",
    "MailchimpAdapter",
    "MailchimpSettings",
    "client_config",
    "mailchimp_limits",
    "wait_hint",
]

#: One audience (``GET /lists/{list_id}``): ``check --online`` reads each configured one.
AUDIENCE: Final = "/lists/{list_id}"

#: A withdrawal with neither an address (removed at the source) nor a member id.
NO_MEMBER_NOTE: Final = "no address and no member id: no member to unsubscribe"

OPTED_OUT_NOTE: Final = (
    "unsubscribed at Mailchimp on an audience; withdrawn from every audience, and recorded "
    "as their opt-out there"
)


class MailchimpAdapter(Corrections, Erasure):
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
        note = ARCHIVED_NOTE.format(audiences=counted(archived, "audience")) if archived else ""
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

    # -- webhooks --------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Compare the URL's ``secret`` parameter in constant time; ``now`` is unused
        (Mailchimp sends no signature and no timestamp)."""
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Person events -> ``changed`` (a targeted sync); others ``ignored``; the URL check
        -> nothing (see :mod:`adapters.mailchimp.webhooks`)."""
        return parse_delivery(request, self.settings.list_ids)


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


SPEC = AdapterSpec(
    kind="mailchimp",
    settings_model=MailchimpSettings,
    factory=MailchimpAdapter,
    client_config=client_config,
    limits=mailchimp_limits,
    sandbox=MailchimpSandbox,
)
