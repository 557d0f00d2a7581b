"""``upsert`` and ``update``: one to three calls a record, with bounded concurrency, the
records of one subject one after another (:meth:`PersonWrites._write_persons`).

``upsert`` writes to the person under the known id, else to the one whose primary e-mail
the record's is (from the listing of :mod:`._pull`, or a search), else creates one, once
(:meth:`PersonWrites._create`). A create whose answer was lost is looked for among the
persons changed since just before it was sent, not by the search alone, whose index lags
behind Pipedrive's writes (:meth:`PersonWrites._made_by_lost_create`). ``update`` writes
to every person of the subject's, found as ``find`` finds them (:mod:`._lookup`), and
creates nobody. Each person's write is :mod:`._patch`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from adapters.pipedrive._calls import PERSONS
from adapters.pipedrive._lookup import NOT_HELD_NOTE, SubjectLookup, _passed_note, _primary_is
from adapters.pipedrive._patch import PersonPatch
from adapters.pipedrive._pull import PersonPages
from adapters.pipedrive.payloads import failure_reason, moment, person_body, primary_value
from connector.adapter import OutboundRecord, Subject, UpsertResult
from connector.errors import FatalRemoteError, RecordError, RetryableError, system_down
from connector.model import normalise_email

#: Seconds before the create's sending, by Pipedrive's clock, that the persons changed since
#: are listed from: against a ``Date`` cut to the second, and Pipedrive's servers' clocks
#: (the one stamping ``update_time``, the one dating the answer) not quite agreeing.
SKEW_SECONDS: Final = 5

#: Said of a record whose earlier create lost its answer and whose person was not found for
#: sure either way: it waits rather than create the customer a second time.
UNSETTLED_REASON: Final = "lost_create unsettled"


class PersonWrites(PersonPatch, SubjectLookup, PersonPages):
    """Persons created and changed for the records a sync or a correction sends."""

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Create or update persons, one call chain per record; results in input order.

        Records run concurrently (at most ``limits.max_concurrency`` at once), except that
        records for the same e-mail run one after another, in order, the later ones by the id
        the first one got: run side by side, two searches could both miss and create the
        person twice (and Pipedrive's search may not show a person created a moment ago).

        Per-record failures carry the HTTP status and a category, never Pipedrive's message.
        Retries that ran out (429, 5xx, transport) fail only their own record, retryably.

        Raises:
            FatalRemoteError: bad token or missing permission (the whole system stops).
        """
        await self._list_if_worth_it(records)
        return await self._write_persons(records, self._upsert_one)

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Change persons Pipedrive holds; never create one. Results in input order.

        Every person that is the subject's is changed, found as ``find`` and ``erase`` find
        them (:meth:`_held`): the one under the known id and each exact e-mail hit whose
        primary e-mail the address is (Pipedrive lets several persons share an e-mail; a
        correction that reached one of them left the others wrong behind a receipt saying
        it was made). Not one the connector knows as another subject's (``record.spare``),
        nor one holding the address beside another primary one (as ``upsert`` tells them
        apart): corrected, a housemate's person took the subject's name; the note names
        those by id. A record that finds no live person is ``not_held`` instead of being
        created with ``POST /persons``.

        Raises:
            FatalRemoteError: as for ``upsert``.
        """
        return await self._write_persons(records, self._correct_one)

    async def _write_persons(
        self,
        records: Sequence[OutboundRecord],
        write_one: Callable[[OutboundRecord], Awaitable[UpsertResult]],
    ) -> list[UpsertResult]:
        """Run ``write_one`` over ``records`` as ``upsert`` describes; results in input order."""
        gate = asyncio.Semaphore(max(1, self.limits.max_concurrency))
        chains: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            # One chain per subject, as subjects are told apart: addresses that only match
            # case-folded ("straße@", "strasse@") are two people, each with their own person.
            key = normalise_email(record.email) or f"id:{record.external_id or index}"
            chains.setdefault(key, []).append(index)
        results: list[UpsertResult | None] = [None] * len(records)

        stopped = asyncio.Event()

        async def run(chain: list[int]) -> None:
            known: str | None = None
            for index in chain:
                record = records[index]
                if known and not record.external_id:
                    record = record._replace(external_id=known)
                async with gate:
                    if stopped.is_set():
                        return  # another record met a fatal error: send nothing more
                    try:
                        result = await write_one(record)
                    except FatalRemoteError:
                        stopped.set()
                        raise
                results[index] = result
                known = result.external_id or known

        outcomes = await asyncio.gather(*(run(c) for c in chains.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # Every chain has finished by now, so nothing is left running behind the raise.
                raise outcome
        return [result for result in results if result is not None]

    async def _upsert_one(self, record: OutboundRecord) -> UpsertResult:
        if not record.email and not record.external_id:
            return UpsertResult(record.ref, "failed", reason="missing_email")
        try:
            if record.external_id and record.external_id.isdecimal():
                updated = await self._patch(int(record.external_id), record)
                if updated is not None:
                    return updated
            # No id, or a stale one (the person was deleted in Pipedrive): look the e-mail up.
            listed = self.directory.ids(record.email) if record.email else None
            if listed is not None:
                hits = listed
            else:
                hits = await self._search(record.email) if record.email else []
            updated = await self._patch_holder(hits, record)
            if updated is None and listed:
                # Deleted (or moved) since the listing: whoever holds the address now, if any.
                updated = await self._patch_holder(await self._search(record.email), record)
            return updated or await self._create(record)
        except RecordError as exc:
            return UpsertResult(record.ref, "failed", reason=failure_reason(exc.status))
        except RetryableError as exc:
            return UpsertResult(
                record.ref,
                "failed",
                reason=failure_reason(exc.status),
                retryable=True,
                unreachable=system_down(exc),
            )

    async def _correct_one(self, record: OutboundRecord) -> UpsertResult:
        """``update`` for one record: every live person of the subject's changed, found as
        ``find`` finds them (:meth:`_held`); the note names by id those left as not theirs."""
        if not record.email and not record.external_id:
            return UpsertResult(record.ref, "failed", reason="missing_email")
        subject = Subject(email=record.email, external_id=record.external_id, spare=record.spare)
        try:
            # Another subject's person (OutboundRecord.spare), found by the address beside
            # their own, keeps their own values; so does one holding it beside another
            # primary address (_held).
            people, passed = await self._held(subject)
            first: UpsertResult | None = None
            kept: frozenset[str] = frozenset()
            for person in people:
                updated = await self._patch(int(person["id"]), record, correcting=True)
                first = first or updated
                if updated is not None and updated.outcome != "updated":
                    return updated  # refused: said as it is; a retry writes them all again
                if updated is not None:
                    kept |= updated.kept  # kept on one of the persons, it is still held
        except RecordError as exc:
            return UpsertResult(record.ref, "failed", reason=failure_reason(exc.status))
        except RetryableError as exc:
            return UpsertResult(
                record.ref, "failed", reason=failure_reason(exc.status), retryable=True
            )
        result = first or UpsertResult(record.ref, "not_held", note=NOT_HELD_NOTE)
        said = "; ".join(part for part in (result.note, _passed_note(passed)) if part)
        return result._replace(note=said, kept=kept)

    async def _create(self, record: OutboundRecord) -> UpsertResult:
        """``POST /persons``, made once: Pipedrive has no key to match a repeated create by,
        so one whose answer was lost (or a 5xx) is not sent again blindly, which made a
        second person. The e-mail is looked up instead; the person found is the one the
        call created, and is written to (and so noted in the listing lookups are answered
        from); none found, the record waits for the next try.

        A 2xx whose person cannot be read (a proxy's page, a truncated body) is an answer
        lost as well: Pipedrive may have created the person, and a retry answered from the
        listing, which does not hold them, would create them a second time.

        An address whose earlier create is noted as unsettled (:meth:`Directory.lost
        <adapters.pipedrive.directory.Directory.lost>`) is looked for again instead of
        created, and waits while it is still not known.
        """
        earlier = self.directory.lost_at(record.email) if record.email else None
        if earlier is not None:
            made = await self._made_by_lost_create(record, earlier)
            if made is not None:
                return made
            if self.directory.lost_at(record.email) is not None:
                return UpsertResult(record.ref, "failed", reason=UNSETTLED_REASON, retryable=True)
        body = person_body(record.fields, record.email, creating=True)
        sent = self.client.clock()
        try:
            response = await self.client.request("POST", PERSONS, json=body, repeatable=False)
        except RetryableError:
            made = await self._made_by_lost_create(record, sent)
            if made is None:
                raise
            return made
        result = self._result(record.ref, response, "created")
        if result.external_id is None:
            return await self._made_by_lost_create(record, sent) or result
        self.directory.created(record.email, int(result.external_id))
        own = (primary_value(body.get("emails")), primary_value(body.get("phones")))
        self._wrote(int(result.external_id), *own)
        return result

    async def _made_by_lost_create(
        self, record: OutboundRecord, sent: float
    ) -> UpsertResult | None:
        """The person a create sent at ``sent`` (the client's clock) whose answer was lost
        made, written to (and so noted in the listing, as a person created is); ``None`` if
        none is found.

        Looked for among the persons changed since (:meth:`_changed_since`), which the list
        reads from Pipedrive's own data, then with the search, as before. Pipedrive's search
        index lags behind its writes: alone, it missed the person made a moment ago, and the
        record's next try made the customer a second time.

        Where the persons changed since were all read and none is the record's, the create
        did not happen: the record waits, and its next try creates it. Where they were not
        all read and the search missed them too, it is not known: the address is noted
        (:meth:`Directory.lost <adapters.pipedrive.directory.Directory.lost>`), and its next
        create looks again instead of being sent.
        """
        if not record.email:
            return None
        listed, whole = await self._changed_since(record.email, sent)
        made = await self._patch_holder(listed, record)
        if made is None:
            made = await self._patch_holder(await self._search(record.email), record)
        if made is not None or whole:
            self.directory.settled(record.email)
        else:
            self.directory.lost(record.email, sent)
        return made

    async def _changed_since(self, email: str, sent: float) -> tuple[list[int], bool]:
        """Ids (oldest first) of live persons whose primary e-mail is ``email`` among those
        changed since :data:`SKEW_SECONDS` before ``sent``, and whether all of those were
        read.

        At most two ``GET /persons`` (:meth:`_list`): the newest page, by ``update_time``
        descending; its ``Date``, less the seconds since ``sent`` and the skew, is where the
        window opens by Pipedrive's clock, which ``update_time`` is in. Where that page
        reaches back past it, or is the last, everyone changed since was read. Else the page
        from where the window opens, ascending: the person made, changed at the create,
        comes after those changed in the few seconds before it, and before those changed
        since, which a busy company's writes (the rest of a first sync) add to by the second.
        Where the two pages do not meet (more persons changed in the window than they hold,
        a mass change), or the first answer had no ``Date`` to place the window by, not
        everyone was read: the caller searches, and else waits (never a create on a guess).
        """
        size = self.limits.page_size
        newest = {"limit": size, "sort_by": "update_time", "sort_direction": "desc"}
        people, more, _, answered = await self._list(dict(newest))
        found = [p for p in people if not p.get("is_deleted") and _primary_is(p, email)]
        if answered is None:
            return _ids(found), more is None
        opens = answered - timedelta(seconds=self.client.clock() - sent + SKEW_SECONDS)
        oldest = moment(people[-1].get("update_time")) if people else None
        whole = more is None or (oldest is not None and oldest < opens)
        if found or whole:
            return _ids(found), whole
        since = {**newest, "sort_direction": "asc", "updated_since": _rfc3339(opens)}
        early, later, _, _ = await self._list(since)
        found = [p for p in early if not p.get("is_deleted") and _primary_is(p, email)]
        newest_early = moment(early[-1].get("update_time")) if early else None
        # Met only past one second: persons of the second both pages end in may be on neither.
        met = later is None or (
            newest_early is not None and oldest is not None and newest_early > oldest
        )
        return _ids(found), met


def _ids(people: Sequence[dict[str, Any]]) -> list[int]:
    return sorted({int(p["id"]) for p in people if isinstance(p.get("id"), int)})


def _rfc3339(at: datetime) -> str:
    """``at`` as ``updated_since`` takes it: UTC, to the second (rounded down)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
