"""Data subject requests: erasure, access and rectification across every connected system.

:class:`DsrService` is what the CLI, the daemon and the admin API call. A request is a durable
record (:mod:`connector.dsr_store`) with a status per system, so it survives restarts and a
retry resumes exactly where it stopped. Erasure, in order:

1. the suppression entry (keyed HMAC of the e-mail and phone), in the same transaction as the
   request record, so from then on no sync path creates or updates the person;
2. a manifest of every system's ids for the subject (identity map plus each adapter's
   ``find``), sealed, taken before anything is deleted, so a retry still reaches a system after
   another one (or the connector's own identity map) has forgotten the person;
3. the connector's own traces deleted (identity rows, delivered hashes, outbox, dead letters);
4. the fan-out: every system's ``erase`` concurrently, each with its own status and retries;
5. verification with ``find``: ``verified_absent``, or an alert (``failed``: still present);
6. when every system is done: the manifest is destroyed and a signed receipt stored.

A system's part the controller may not or need not carry out (a legal obligation to keep,
a Shopify erasure its owner cancelled) is closed by :meth:`DsrService.exempt`, with the
reason the receipt then gives.

Access and rectification follow the same record-and-resume pattern (see
:mod:`connector.dsr_kinds`). Inbound privacy webhooks are verified and queued by
:func:`connector.webhooks.receive` (an erasure is recorded as it comes); the job worker
(:mod:`connector.jobworker`) then carries each out through :meth:`DsrService.handle_event`.

This module keeps the service's core: opening, running and completing a request. Its other
concerns are parts it inherits (:mod:`connector.dsr_servicebase` names them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import os
import secrets
import sqlite3
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from connector.adapter import PLACEHOLDER_EMAIL, Subject, read_records
from connector.dsr_admin import OperatorDecisions
from connector.dsr_events import EventIntake
from connector.dsr_input import (
    checked_email,
    checked_fields,
    checked_phone,
    emptied,
    phone_regions,
)
from connector.dsr_kinds import KindRunner
from connector.dsr_receipt_keys import ReceiptKeys
from connector.dsr_servicebase import PREFIX, iso, no_request, with_changes
from connector.dsr_store import FINAL_STATUSES, NO_LONGER_CONFIGURED, DsrStore, RequestRow
from connector.dsr_supersede import Supersession
from connector.dsr_views import (
    DsrError,
    DsrUsageError,
    RequestView,
    StaleRunError,
    SubjectNotFoundError,
    SystemView,
    add_months,
    summary,
    utc_now,
    views,
)
from connector.errors import KlantsyncError
from connector.lock import KeyedLocks, one_at_a_time
from connector.model import normalise_email
from connector.moves import same_person
from connector.receipts import ReceiptSigner
from connector.runtime import Runtime
from connector.stages import Counts, uncounted
from connector.state import Store
from connector.storefile import failure

__all__ = [
    "NO_LONGER_CONFIGURED",
    "PLACEHOLDER_EMAIL",
    "DsrError",
    "DsrService",
    "DsrUsageError",
    "RequestView",
    "SubjectNotFoundError",
    "SystemView",
    "no_request",
    "summary",
]

log = logging.getLogger("klantsync.dsr")


_LOCKS: weakref.WeakKeyDictionary[Store, KeyedLocks] = weakref.WeakKeyDictionary()


def _crashed(row: RequestRow, exc: Exception) -> None:
    """Log a request's retry ended by a bug; the type only: an OS error's text names paths
    an operator chose, and SQLite's may quote values."""
    log.error("retry crashed", extra={"request": row.id, "error": type(exc).__name__})


class DsrService(EventIntake, OperatorDecisions, ReceiptKeys, Supersession):
    """Opens, runs, resumes and reports data subject requests for one runtime.

    Args:
        rt: the open runtime (config, store, keyring, systems).
        now: the wall clock (tests pass a fixed one to check deadlines and flags).
        concurrency: requests :meth:`retry_open` runs at once; each system's client still
            paces its own calls to the vendor's rate limit.
        received_at: when a request queued before it runs reached the connector (a job's
            creation: an admin API call, a webhook). Its deadline counts from then, not
            from when the worker got to it; and the job run again after a crash finds the
            request it opened (same kind, subject and moment) instead of a second one.
        due_within: how long the system that asked gives to carry a request out, where that
            is shorter than GDPR's month (Shopify: 30 days); the deadline is the earlier.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        now: Callable[[], dt.datetime] = utc_now,
        concurrency: int = 16,
        received_at: dt.datetime | None = None,
        due_within: dt.timedelta | None = None,
    ) -> None:
        self.rt = rt
        self.db = DsrStore(rt.store)
        self.now = now
        self.received_at = received_at
        self.due_within = due_within
        self.concurrency = max(1, concurrency)
        self.signer = ReceiptSigner.for_store(
            rt.config.store_path, rt.keyring, on_rotate=self._audit_receipt_key_rotated
        )
        self.kinds = KindRunner(self)
        # Shared by every service on the same store: the daemon builds one per job, and two
        # of them must not run the same request at once.
        self._locks = _LOCKS.setdefault(rt.store, {})

    @classmethod
    def for_delivery(
        cls, rt: Runtime, received_at: dt.datetime, due_within_days: int | None
    ) -> DsrService:
        """The service for a request a vendor's webhook delivered at ``received_at``: its
        deadline counts from then, within the days the vendor gives, if fewer. The intake
        (connector/webhooks.py) and the job that goes on with the request read it alike."""
        due = dt.timedelta(days=due_within_days) if due_within_days is not None else None
        return cls(rt, received_at=received_at, due_within=due)

    # -- opening requests ----------------------------------------------------------------------

    async def erase(
        self,
        email: str | None = None,
        *,
        phone: str | None = None,
        external: tuple[str, str] | None = None,
        source: str = "cli",
    ) -> RequestView:
        """Erase a subject everywhere: suppress, snapshot, fan out, verify, sign a receipt.

        ``external`` is ``(system name, that system's id)`` for triggers that carry only an id.
        Asking again while a request for the subject is open resumes that request.

        Raises:
            DsrUsageError: neither an e-mail nor a system id, or an unknown system.
            SubjectNotFoundError: the system id matches no subject anyone knows, and the
                request names no number, nor a record of a source (see _unknown_record).
        """
        view = await self.queue_erase(email, phone=phone, external=external, source=source)
        return await self.retry(view.id)

    async def queue_erase(
        self,
        email: str | None = None,
        *,
        phone: str | None = None,
        external: tuple[str, str] | None = None,
        source: str = "cli",
        in_turn: Callable[[Callable[[], RequestView]], Awaitable[RequestView]] | None = None,
    ) -> RequestView:
        """Record an erasure and its suppression entry now; leave the fan-out to a retry.

        ``in_turn``: what runs the recording (one write transaction, which may be run again
        after the store's lock refused it), for the daemon, whose event loop must not wait
        on another process's lock (:func:`connector.storeturn.write_in_turn`).
        """
        ids: dict[str, str] = {}
        known_sid: str | None = None
        if not email and external is None:
            raise DsrUsageError("erasure needs an e-mail address or a system id")
        if email:
            email = checked_email(email)
        if external is not None:
            # The id too when both are given: a shop's request carries the address the person
            # has now, and the systems may hold them under the one they had at the last sync.
            system = external[0]
            if system not in self.rt.systems:
                raise DsrUsageError(
                    f"no system of that name; configured: {', '.join(self.rt.systems)}"
                )
            known_sid, ids = self._known_by(external)
            if not email:
                email = await self._resolve_email(ids, known_sid, first=system)
        e164 = checked_phone(phone, phone_regions(self.rt.config, source)) if phone else None
        subject_ids = self._named(email, known_sid, e164)
        if not subject_ids:
            subject_ids = self._unknown_record(external)
        primary = subject_ids[0]
        # The same person under the addresses they had before (connector/moves.py); not
        # through an address a source holds for a customer the store has not met (one who
        # signed up under an address another person gave up): erasing them must not erase
        # and suppress the person who had it. The sources are asked only when an alias led
        # somewhere: the rest of erasures are recorded without waiting on a source.
        widened = same_person(self.rt.store, subject_ids)
        if email and len(widened) > len(set(subject_ids)) and await self.kinds.taken_over(email):
            widened = same_person(self.rt.store, subject_ids, [primary])
        record = functools.partial(
            self._record_erasure, primary, widened, email, e164, ids, external, source
        )
        return await in_turn(record) if in_turn is not None else record()

    def _keep_earlier_deadline(self, row: RequestRow, source: str) -> None:
        """Give ``row``, an open request this one goes on as, this one's deadline where that
        is earlier; inside the caller's write transaction.

        A Shopify customers/redact (or data_request) that finds the person's request open
        went on under that request's deadline: a month from an earlier receipt, maybe
        extended by two more, while Shopify wants it carried out within 30 days of its
        webhook. The earlier of the two holds, whatever an extension granted before: the
        one request answers both. Recorded as an extension is, the deadline moved with
        its entry.

        Where the system's days leave the earlier deadline as it is, the entry
        ``dsr.deadline_kept`` says the request answers them too: an extension granted after
        would carry it past them (see :meth:`_extension_allowed`).

        Only an asker that gives days of its own moves it: the same person asking again
        (``dsr erase`` or the admin API while the request is open) pulled an extended
        deadline back to a month from the repeat, undoing an extension the controller
        granted and told the person of. Whether its days are fewer than the month is not
        asked: Shopify's 30 days outlast a February, and its webhook then joined an
        extended request unmarked, its deadline left months past Shopify's and open to
        extension again.
        """
        if self.due_within is None:
            return
        received = self.received_at or self.now()
        own = iso(self._deadline(received))
        if dt.datetime.fromisoformat(own) >= dt.datetime.fromisoformat(row.deadline):
            if self.due_within is not None:
                self.audit("dsr.deadline_kept", row, by=own, source=source, **self._due_within())
            return
        self.db.set_deadline(row.id, own, row.extension_reason)
        self.audit(
            "dsr.deadline_brought_forward",
            row,
            deadline=own,
            was=row.deadline,
            source=source,
            **self._due_within(),
        )

    def _due_within(self) -> dict[str, int]:
        """The mark of a request whose asking system gives fewer days than GDPR's month,
        for its audit entries (``due_within_days``): what refuses its extension later."""
        return {} if self.due_within is None else {"due_within_days": self.due_within.days}

    async def access(
        self,
        email: str,
        out_dir: Path | None = None,
        *,
        source: str = "cli",
        also: str | None = None,
    ) -> RequestView:
        """Collect every system's records and the connector's own into an access bundle.

        ``out_dir`` defaults to ``<store folder>/access/<request id>``; the bundle there is the
        only place the connector writes personal data in clear. ``also`` is the subject id a
        system's id for the person is known under, when that differs from the e-mail's.
        Asking again while the subject's request is open resumes it, when it writes where this
        one would (no ``out_dir``, or the same): a second bundle would be a second copy.
        """
        email = checked_email(email)
        if out_dir is not None:
            _check_out_dir(out_dir)
            # Kept absolute: a retry may run in another folder (the daemon's, under a service
            # manager "/"), and must write where the operator asked.
            out_dir = out_dir.resolve()
        sid = self.rt.keyring.subject_id(email)
        with self.rt.store.transaction():
            opened = self._opened_before("access", sid, source)
            if opened is not None and opened.status != "open":
                return self._view(opened)  # written already: one request, one bundle
            resumed = opened or self._open_access(sid, out_dir)
            if resumed is not None:
                self._keep_earlier_deadline(resumed, source)
            else:
                row = self._new_row("access", sid, source)
                target = out_dir or self.rt.config.store_path.parent.resolve() / "access" / row.id
                also_ids = [also] if also else []
                manifest = {
                    "email": email,
                    "out_dir": str(target),
                    "also": also_ids,
                    "erased_before": self._erased_before(row),
                }
                sealed = self.seal_manifest(row.id, manifest)
                people = same_person(self.rt.store, [sid, *also_ids])
                self.db.create(with_changes(row, manifest=sealed), self._parts(people))
                self.audit(
                    "dsr.received", row, source=source, deadline=row.deadline, **self._due_within()
                )
        return await self.retry(row.id if resumed is None else resumed.id)

    def _erased_before(self, row: RequestRow) -> list[str]:
        """The erasures completed in the second a new access request is received in, before
        it, which its run does not count as completed "while the request was open" (see
        KindRunner's access run): times are kept to the second.

        Only for a request received now. One queued before it runs (an admin API call, a
        webhook) counts from when it came (``received_at``), and every erasure completed
        since, while it waited for the worker, was one while it was open: taken for ones
        before it, they let a bundle be written after the person's erasure. Of one
        completed in the second it came, the store cannot tell whether it came before:
        counted as while it was open, a person erased just before asking gets no bundle
        (its receipt says why) rather than one written after their erasure.
        """
        if self.received_at is not None:
            return []
        return self.db.erased_since_any(row.received_at)

    def _parts(self, subject_ids: list[str]) -> list[str]:
        """The systems a new access or correction has a part for: every configured one, and
        every one the person's identity map names that the config no longer has.

        They were sent the person's data and may still hold it: a copy that left such a
        system out passed for whole, and a correction completed as if nobody else had been
        sent the old values (Art. 19). Its part waits, as an erasure's does, until the
        system is configured again or exempted (:meth:`_note_unconfigured`).
        """
        named = {name for sid in subject_ids for name in self.identities(sid)}
        return [*self.rt.systems, *sorted(named - set(self.rt.systems))]

    def _opened_before(self, kind: str, subject_id: str, source: str) -> RequestRow | None:
        """The request this queued call opened on an earlier try, if it did (see
        ``received_at``): a job whose process died before it was marked done runs again.
        Known by kind, subject, source and the second it came: two calls from different
        sources in one second (a CRM's webhook and a shop's, one with a phone) are two, and
        the second goes on as the first's asking again."""
        if self.received_at is None:
            return None
        return self.db.received(kind, subject_id, iso(self.received_at), source)

    def _open_access(self, subject_id: str, out_dir: Path | None) -> RequestRow | None:
        """The subject's open access request that writes its bundle to ``out_dir``, if any."""
        row = self.db.open_for("access", subject_id)
        if row is None or out_dir is None:
            return row
        target = self.open_manifest(row)["out_dir"]
        return row if Path(target).resolve() == out_dir.resolve() else None

    async def rectify(
        self, email: str, fields: dict[str, str], *, source: str = "cli"
    ) -> RequestView:
        """Push corrected canonical fields to every system that receives them.

        Asking again while a correction of the subject is open adds to that request instead
        of opening a second one (see :meth:`_amend`): two open corrections could each be
        retried in any order, and the older one, retried last, would put the values it
        corrects back.

        Raises:
            DsrUsageError: no fields, an unknown canonical field (named), the e-mail itself,
                a consent emptied (it is withdrawn at the source), or a value no mapping can
                normalise (an empty one empties the field: see ``checked_fields``).
            DsrError: the subject has been erased.
        """
        email = checked_email(email)
        checked = checked_fields(self.rt.config.mappings, fields)
        sid = self.rt.keyring.subject_id(email)
        if self.rt.store.suppressed([sid]):
            raise DsrError(f"subject {sid} has been erased; there is nothing to rectify")
        # The person's open correction may be under an address they had before: asked
        # under the new one, a second request would complete, and the first, retried
        # later, would put its older values (and the former address) back.
        person = await self.kinds.person(email, sid)
        # One write transaction from the look for an open request to the new one, as for an
        # erasure: asked twice at once, the subject still has one open correction.
        with self.rt.store.transaction():
            existing = None
            for subject in person:
                existing = self.db.open_for("rectify", subject)
                if existing is not None:
                    break
            if existing is None:
                row = self._new_row("rectify", sid, source)
                sealed = self.seal_manifest(row.id, self._correction(email, checked))
                self.db.create(with_changes(row, manifest=sealed), self._parts(person))
                self.audit(
                    "dsr.received", row, source=source, fields=sorted(checked), **_emptied(checked)
                )
        if existing is not None:
            # Under the request's lock: a retry of it already running finishes first, so it
            # cannot mark a system done with the fields as they were before this amendment.
            # (From another process, DsrStore.set_system's manifest check does the same.)
            async with one_at_a_time(self._locks, existing.id):
                with self.rt.store.transaction():
                    if self._amend(existing.id, checked, source, email):
                        row = existing
                    else:
                        # Completed meanwhile (that retry): its values are written; these
                        # are not, and get a request of their own.
                        row = self._new_row("rectify", sid, source)
                        sealed = self.seal_manifest(row.id, self._correction(email, checked))
                        self.db.create(with_changes(row, manifest=sealed), self._parts(person))
                        self.audit(
                            "dsr.received",
                            row,
                            source=source,
                            fields=sorted(checked),
                            **_emptied(checked),
                        )
        return await self.retry(row.id)

    def _correction(self, email: str, fields: dict[str, str]) -> dict[str, Any]:
        """A correction's manifest: the address and fields asked for, and the highest outbox
        id now. What waits in the outbox up to it was queued before the person asked and
        takes the correction; what is queued after carries a change they made since, which
        stands (see KindRunner._correct_queued)."""
        return {"email": email, "fields": fields, "queued_before": self.db.highest_queued()}

    def _amend(self, request_id: str, fields: dict[str, str], source: str, email: str) -> bool:
        """Add ``fields`` to an open correction, and ask every system again; whether it was
        still open to add to.

        A field asked for again takes its new value, and the request takes the address it
        was asked with now (the person may have changed it since: a correction writes the
        address it holds). Every system is asked again, even for the same correction asked
        twice (an operator running a command again after it died): a system the request
        had settled may have changed the value since (the customer edited their name in the
        shop), and a correction is an update, safe to repeat.
        """
        row = self.db.get(request_id)
        if row is None or row.status != "open":
            return False  # completed meanwhile (by a retry that held the lock)
        manifest = self.open_manifest(row)
        amended = {
            **manifest,
            **self._correction(email, {**manifest["fields"], **fields}),
        }
        # What each system held before the earlier write (KindRunner._note_before): the
        # writes asked for now note theirs afresh.
        amended.pop("before", None)
        # Sealed anew even when the same: a run of the request under way in another process
        # then records none of its outcomes (they are checked against the manifest it ran
        # with), and the parts stay pending for the next run to write again.
        self.db.set_manifest(row.id, self.seal_manifest(row.id, amended))
        for system in self.db.systems(row.id):
            self.db.set_system(row.id, system.system, "pending")
        self.audit("dsr.amended", row, source=source, fields=sorted(fields), **_emptied(fields))
        return True

    # -- running and resuming ------------------------------------------------------------------

    async def retry(self, request_id: str) -> RequestView:
        """Run whatever is not done yet of one request (a completed one is left as is).

        A run that another process changed the request under (the daemon's retry beside a
        CLI command) stops before writing over that, and runs once more from what is there
        now, unless the other completed it.

        Raises:
            DsrUsageError: no request has this id.
            StaleRunError: the request changed under the second run too.
        """
        found = self.db.get(request_id)
        if found is None:
            raise no_request(request_id)
        # And one request of the person at a time: an access run beside their erasure (the
        # daemon retries every open request at once) read the systems before the erasure
        # deleted and wrote its bundle after the erasure's clean-up, and the person's data
        # stayed on disk in clear once the erasure completed. Taken in the order asked.
        async with (
            one_at_a_time(self._locks, request_id),
            one_at_a_time(self._locks, f"subject:{found.subject_id}"),
        ):
            for attempt in (1, 2):
                row = self.db.get(request_id)
                if row is None:
                    raise no_request(request_id)
                if row.status != "open":
                    break
                for name in self.rt.systems:
                    self.db.add_system(row.id, name)  # a system configured since it opened
                self._note_unconfigured(row)
                if self._superseded(row):
                    break
                try:
                    await self.kinds.run(row)
                except StaleRunError:
                    if attempt == 2:
                        raise
                    log.info(
                        "request changed by another process; run again", extra={"request": row.id}
                    )
                    continue
                self._complete_if_done(row)
                break
        return self._view(self.db.get(request_id))

    async def retry_open(
        self, *, stopping: asyncio.Event | None = None, counts: Counts = uncounted
    ) -> int:
        """Retry every open request, at most ``concurrency`` at once; return how many progressed.

        A request progressed when it completed or more of its systems reached a final status.

        Args:
            stopping: set when the daemon stops. A request still waiting for its turn then
                does not start: started, its erasure would be cut off by the stop's grace
                with its vendors half asked. It is tried again at the next start.
            counts: told how many of the open requests have been tried of how many, first
                with none and then as each one ends (``dsr retry --all`` shows it on a
                terminal: each request asks its systems again, and a thousand take minutes).

        Raises:
            sqlite3.Error: the store refused (a full disk, a store it may not write, a lock
                held too long: :func:`connector.storefile.failure`), raised once the requests
                under way have ended; the ones still waiting do not start, as the store would
                refuse them too. The daemon says so and is not ready; ``dsr retry`` exits 1.
        """
        slots = asyncio.Semaphore(self.concurrency)
        refused: list[sqlite3.Error] = []

        async def one(row: RequestRow) -> bool:
            async with slots:
                if refused:
                    return False
                if stopping is not None and stopping.is_set():
                    log.info("request retry skipped", extra={"request": row.id, "why": "stopping"})
                    return False
                before = self._finals(row.id)
                try:
                    view = await self.retry(row.id)
                except KlantsyncError as exc:
                    log.warning("retry failed", extra={"request": row.id, "error": str(exc)})
                    return False
                except sqlite3.Error as exc:
                    if failure(self.rt.config.store_path, exc) is None:
                        _crashed(row, exc)  # a bug SQLite reports: the others may go on
                    else:
                        refused.append(exc)
                    return False
                except Exception as exc:
                    _crashed(row, exc)
                    return False
                return not view.is_open or self._finals(row.id) > before

        rows = self.db.requests(open_only=True)
        tried = 0
        counts(tried, len(rows))

        async def counted_one(row: RequestRow) -> bool:
            nonlocal tried
            try:
                return await one(row)
            finally:
                tried += 1
                counts(tried, len(rows))

        done = await asyncio.gather(*(counted_one(row) for row in rows))
        if refused:
            raise refused[0]
        return sum(done)

    # -- reading -------------------------------------------------------------------------------

    def list(
        self, *, open_only: bool = False, overdue: bool = False, with_systems: bool = True
    ) -> list[RequestView]:
        """Requests, oldest first; ``overdue`` keeps open requests past their deadline;
        without each system's part with ``with_systems=False``."""
        found = views(
            self.rt.store, open_only=open_only or overdue, now=self.now, with_systems=with_systems
        )
        return [v for v in found if v.overdue] if overdue else found

    def get(self, request_id: str) -> RequestView | None:
        row = self.db.get(request_id)
        return None if row is None else self._view(row)

    # -- internals ---------------------------------------------------------------------------

    async def _resolve_email(
        self, ids: dict[str, str], subject_id: str | None, *, first: str
    ) -> str | None:
        """The subject's e-mail, read from a system that still holds them by its id.

        Only an e-mail that hashes to the known subject id is accepted (when one is known),
        so a system id reused for someone else cannot redirect the erasure. The record is
        read as an erasure reads it (:func:`read_records`), not as an access copy.
        """
        order = sorted(ids, key=lambda name: name != first)
        for name in order:
            system = self.rt.systems.get(name)
            if system is None:
                continue
            try:
                records = await read_records(
                    system.adapter, Subject(email=PLACEHOLDER_EMAIL, external_id=ids[name])
                )
            except KlantsyncError as exc:
                log.warning("lookup by id failed", extra={"system": name, "error": str(exc)})
                continue
            for record in records:
                email = system.mapping.inbound(record).email
                if email and (
                    subject_id is None
                    or self.rt.keyring.subject_id(normalise_email(email)) == subject_id
                ):
                    return email
        return None

    def _note_unconfigured(self, row: RequestRow) -> None:
        """Say why an unsettled part of a system no longer configured is not retried.

        Such a part keeps the request open (:meth:`_complete_if_done`): the system may still
        hold the person, and a receipt that left it out would look whole. The operator either
        configures the system again or exempts its part with the reason the person is told.

        An access request's part the system settled in an earlier attempt (read, ``done``)
        is unsettled again: records are never kept between attempts, so the bundle the next
        run writes from the configured systems could not hold what that one holds, while the
        receipt said it was read. Pending again (what that read found goes with it), it
        waits as any such part does.
        """
        for state in self.db.systems(row.id):
            if state.system in self.rt.systems or state.status == "exempt":
                continue
            if state.status not in FINAL_STATUSES:
                self.db.set_system(row.id, state.system, state.status, detail=NO_LONGER_CONFIGURED)
            elif row.kind == "access":
                self.db.set_system(
                    row.id, state.system, "pending", detail=NO_LONGER_CONFIGURED, result={}
                )

    def _complete_if_done(self, row: RequestRow) -> None:
        systems = self.db.systems(row.id)
        tracked = {s.system for s in systems}
        if not tracked >= set(self.rt.systems):
            return
        # Every part settled, a system taken out of the config since included (above).
        if any(s.status not in FINAL_STATUSES for s in systems):
            return
        completed_at = self.timestamp()
        fresh = self.db.get(row.id)
        assert fresh is not None
        if fresh.kind == "erase":
            self.kinds.delete_bundles(fresh)
        receipt = self.kinds.receipt(fresh, systems)
        receipt["completed_at"] = completed_at
        signed = self.signer.sign(receipt)
        digest = hashlib.sha256(signed.encode()).hexdigest()
        # The receipt and its hash in the audit chain together: a process that died between
        # them left a completed request whose receipt the chain does not vouch for.
        with self.rt.store.transaction():
            if not self.db.complete(row.id, signed, completed_at):
                return
            self.audit("dsr.completed", row, receipt_sha256=digest)
        log.info("request completed", extra={"request": row.id, "subject": row.subject_id})

    def _finals(self, request_id: str) -> int:
        return sum(s.status in FINAL_STATUSES for s in self.db.systems(request_id))

    def _new_row(self, kind: str, subject_id: str, source: str) -> RequestRow:
        now = self.received_at or self.now()
        request_id = f"{PREFIX[kind]}-{now:%Y%m%d}-{secrets.token_hex(4)}"
        return RequestRow(
            id=request_id,
            kind=kind,
            subject_id=subject_id,
            received_at=iso(now),
            deadline=iso(self._deadline(now)),
            extension_reason=None,
            status="open",
            source=source,
            manifest=None,
            payload=None,
            receipt=None,
            completed_at=None,
        )

    def _deadline(self, received: dt.datetime) -> dt.datetime:
        """The end of the day a calendar month after receipt (:func:`add_months`), or sooner
        where the system that asked wants it (Shopify: 30 days from the moment it asked)."""
        month = add_months(received, 1)
        return month if self.due_within is None else min(month, received + self.due_within)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an access bundle folder that cannot be made, before any system is asked."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DsrUsageError(
            f"--out: the folder cannot be made ({exc.strerror or type(exc).__name__})"
        ) from None
    if not os.access(out_dir, os.W_OK):
        raise DsrUsageError("--out: the folder is not writable")


def _emptied(fields: dict[str, str]) -> dict[str, list[str]]:
    """A correction's audit fact naming the fields it empties (names only), where any."""
    names = emptied(fields)
    return {"emptied": names} if names else {}
