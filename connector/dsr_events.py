"""Erasures by what they name, and the requests systems' webhooks ask for.

An erasure is recorded with its suppression entries in one write transaction, or goes on as
the person's open one (:meth:`EventIntake._record_erasure`), whether ``dsr erase``, the admin
API or a webhook asked for it. A webhook's erasure is recorded as the webhook comes
(:meth:`EventIntake.erase_on_receipt`), its report of a deletion klantsync's own erasure
asked of it is told apart from a request (:meth:`EventIntake.own_erasure_reported`), and
its job opens the request the event asks for (:meth:`EventIntake.handle_event`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

from connector import audit, jobs
from connector.adapter import WebhookEvent
from connector.dsr_input import checked_email, checked_phone, phone_regions
from connector.dsr_servicebase import ServiceBase, iso, with_changes
from connector.dsr_store import PURGE_SOURCE, RequestRow
from connector.dsr_views import DsrUsageError, RequestView, SubjectNotFoundError
from connector.moves import same_person
from connector.retention import delete_bundles_of_customers
from connector.runtime import Runtime

__all__ = ["EventIntake"]

log = logging.getLogger("klantsync.dsr")


class EventIntake(ServiceBase):
    """Webhook events made requests, and an erasure recorded by what it names."""

    def erase_on_receipt(self, system: str, event: WebhookEvent) -> RequestView | None:
        """Record a webhook's erasure, and its suppression entries, as the webhook comes:
        by what the event names that the store resolves itself, asking no vendor.

        Called inside the transaction that notes the delivery and queues its job
        (:func:`connector.webhooks.receive`), so from the vendor's 200 on no sync sends the
        person anything, as for an erasure asked through the admin API; recorded by the job,
        a scheduled run before it (or a ``sync`` while the daemon was stopped) created again
        the contact HubSpot had just deleted. The job goes on as this request
        (:meth:`handle_event` with ``recorded``), and adds what only the vendors can tell:
        the address of an event that names only an id, and the addresses the person had
        before, which a source may hold for someone else now (:meth:`queue_erase`). Not
        widened through those here for that reason.

        Returns ``None`` when the event names no one the store knows (an id it never
        learned, an address that is no address): the job looks further, as it did.
        """
        source = f"webhook:{system}"
        try:
            email = checked_email(event.email) if event.email else None
        except DsrUsageError:
            return None  # the job refuses it, saying why
        external = (system, event.external_id) if event.external_id else None
        known_sid, ids = self._known_by(external) if external is not None else (None, {})
        e164 = _webhook_phone(self.rt, event.phone, source)
        subject_ids = self._named(email, known_sid, e164)
        if not subject_ids:
            return None
        primary = subject_ids[0]
        subject_ids = same_person(self.rt.store, subject_ids, [primary] if email else [])
        return self._record_erasure(primary, subject_ids, email, e164, ids, external, source)

    def echo_of_own_erasure(self, system: str, external_id: str | None) -> RequestRow | None:
        """The erasure of klantsync's own that deleted ``system``'s record ``external_id``,
        open or completed within ``webhook_ids_days``, if one did.

        HubSpot posts ``contact.privacyDeletion`` for the ``gdpr-delete`` an erasure sent
        it. That is the erasure's echo, not a request of the person's: taken for one, it
        opened a second erasure (a second deadline, fan-out and receipt, for a request the
        person never made) where HubSpot is a flow's source, and was logged as matching
        nobody where it is not. The erasure deleted the identity rows that named the
        record; its run noted the record's keyed id (:meth:`DsrStore.note_erased_records`),
        kept as long as a webhook's delivery id, the time such a report may take.
        """
        if not external_id or system not in self.rt.systems:
            return None
        days = self.rt.config.retention.webhook_ids_days
        since = iso(self.now() - dt.timedelta(days=days))
        found = self.db.erased_record(self.rt.engine.ids.record_key(system, external_id), since)
        return None if found is None else self.db.get(found)

    def own_erasure_reported(self, system: str, event: WebhookEvent) -> bool:
        """Whether ``event`` is ``system``'s report of a deletion klantsync's own erasure
        asked of it (:meth:`echo_of_own_erasure`); if so, the audit trail says it under that
        erasure (``dsr.echo``), not as a request that matched nobody.

        Only when it names nothing that erasure does not cover: an address or a number it
        carries (a shop's request gives the address the customer has now) that is not on
        the suppression list makes it a request that adds to the person's erasure (asked
        again, while it is open).
        """
        echo = self.echo_of_own_erasure(system, event.external_id)
        if echo is None:
            return False
        named: list[str] = []
        if event.email:
            with contextlib.suppress(DsrUsageError):  # not an address: nothing it could add
                named.append(self.rt.keyring.subject_id(checked_email(event.email)))
        e164 = _webhook_phone(self.rt, event.phone, f"webhook:{system}")
        if e164:
            named.append(self.rt.keyring.subject_id(e164))
        if named and self.rt.store.suppressed(named) != set(named):
            return False
        self.audit("dsr.echo", echo, system=system)
        log.info("webhook reported klantsync's own erasure", extra={"system": system})
        return True

    async def handle_event(
        self, system: str, event: WebhookEvent, *, recorded: str | None = None
    ) -> RequestView | None:
        """Open the request a verified webhook event asks for; other events give ``None``.

        ``erase`` becomes an erasure mirrored to every system (found by the event's e-mail, or
        by its id through the identity map); ``access`` an access request; ``purge_all``
        (Shopify's ``shop/redact``) forgets what the connector holds because of that source.
        An erasure the system reports of a record klantsync's own erasure deleted is that
        erasure's echo, and opens nothing (:meth:`echo_of_own_erasure`). ``recorded`` is the
        erasure recorded as the webhook came (:meth:`erase_on_receipt`), which this goes on
        as: carried out already (the daemon's retries came first), it is left as it is.
        """
        if event.kind == "purge_all":
            flows = [f.name for f in self.rt.config.flows if f.source == system]
            with self.rt.store.transaction():
                # The access bundles written for the shop's customers hold their data in
                # clear; "delete all of that shop's customer data" includes them. One who
                # is a customer of another source too keeps theirs: it answers a request
                # of theirs that stands.
                others = [f.source for f in self.rt.config.flows if f.source != system]
                kept: list[str] = []
                bundles = delete_bundles_of_customers(
                    self.rt.store, self.rt.keyring, system, others, kept
                )
                counts = {**self.db.purge_source(system, flows), "bundles": bundles}
                # Its syncs not run yet go too (their parameters hold its customers' data).
                # Its customers' own requests stay: jobs run in the order they came, so one
                # still waiting came after the shop/redact (Shopify sends customers/redact
                # days or months after the merchant's request, so it may come after the
                # uninstall). Its erasure, recorded as it came, reaches the systems the
                # shop's data was delivered to, which this purge leaves alone; an access
                # request is owed to the person within the month, and those systems still
                # hold their data. The purge does neither, so neither is done for them here.
                counts["jobs"] = jobs.forget_syncs_of(self.rt.store, self.rt.keyring, system)
                audit.append(self.rt.store, PURGE_SOURCE, {"system": system, **counts})
            log.info("source purged", extra={"system": system, **counts})
            return None
        if event.kind not in ("erase", "access"):
            return None
        source = f"webhook:{system}"
        # The system's own id only while it is configured: a request queued before the
        # system was taken out of the config still stands, by the e-mail it carries (it
        # failed for good on the unknown system, and nobody was erased).
        configured = system in self.rt.systems
        external = (system, event.external_id) if event.external_id and configured else None
        if not event.email and external is None:
            # Nobody to look for (a compliance request whose body could not be read): the
            # vendor was answered already, so the audit trail says a request came.
            self._unmatched(system, event)
            return None
        if event.kind == "erase" and recorded is not None:
            # Carried out since it was recorded (the daemon's retries came first): opened
            # again here, the person's identity rows gone, it was a second request.
            done = self.db.get(recorded)
            if done is not None and done.status != "open":
                return self._view(done)
        elif event.kind == "erase" and external and self.own_erasure_reported(system, event):
            return None  # the echo of klantsync's own erasure
        try:
            if event.kind == "erase":
                phone = _webhook_phone(self.rt, event.phone, source)
                return await self.erase(event.email, phone=phone, external=external, source=source)
            email = event.email
            sid = None
            if external is not None:
                stored_id = self.rt.engine.ids.to_store(*external)
                sid = self.rt.store.subject_for_external(external[0], stored_id)
            if not email and external is not None:
                email = await self._resolve_email({system: external[1]}, sid, first=system)
            if not email:
                raise SubjectNotFoundError(f"{system}: the id given matches no known subject")
            return await self.access(email, source=source, also=sid)
        except SubjectNotFoundError:
            self._unmatched(system, event)
            return None

    def _unmatched(self, system: str, event: WebhookEvent) -> None:
        audit.append(self.rt.store, "dsr.unmatched", {"system": system, "kind": event.kind})
        log.warning("webhook matched no subject", extra={"system": system})

    def _known_by(self, external: tuple[str, str]) -> tuple[str | None, dict[str, str]]:
        """The subject the identity map knows a system's id under, and that subject's ids
        in every system (the given one's too, whether known or not)."""
        system, external_id = external
        stored_id = self.rt.engine.ids.to_store(system, external_id)
        known_sid = self.rt.store.subject_for_external(system, stored_id)
        ids = self.identities(known_sid) if known_sid else {}
        ids.setdefault(system, external_id)
        return known_sid, ids

    def _named(self, email: str | None, known_sid: str | None, e164: str | None) -> list[str]:
        """The keyed ids an erasure names directly: its address's, the subject a system's id
        is known under, its number's (the first is the request's own)."""
        subject_ids = [self.rt.keyring.subject_id(email)] if email else []
        if known_sid:
            subject_ids.append(known_sid)
        if e164:
            subject_ids.append(self.rt.keyring.subject_id(e164))
        return subject_ids

    def _record_erasure(
        self,
        primary: str,
        subject_ids: list[str],
        email: str | None,
        e164: str | None,
        ids: dict[str, str],
        external: tuple[str, str] | None,
        source: str,
    ) -> RequestView:
        """Open the erasure with its suppression entries, or go on as the person's open one."""
        # One write transaction from the look for an open request to the new one: SQLite
        # lets one writer in at a time, so a CLI command and the daemon asked at once (a
        # webhook and an operator) open one request, not two.
        with self.rt.store.transaction():
            opened = self._opened_before("erase", primary, source)
            if opened is not None and opened.status != "open":
                return self._view(opened)
            # Open, it may be the one recorded as the webhook came (erase_on_receipt): what
            # the job adds to it (the address the vendors told) goes in as for an erasure
            # asked again.
            existing = opened or self._open_erasure(primary, subject_ids, external)
            if existing is not None:
                self._asked_again(existing, subject_ids, ids, e164, email)
                self._keep_earlier_deadline(existing, source)
                self.supersede_corrections(existing, subject_ids)
                return self._view(self.db.get(existing.id))
            for sid in subject_ids:
                for name, external_id in self.identities(sid).items():
                    ids.setdefault(name, external_id)
            manifest = {
                "email": email,
                "phone": e164,
                "subject_ids": subject_ids,
                "ids": ids,
                "held": {},
                "snapshot": [],
            }
            row = self._new_row("erase", primary, source)
            sealed = self.seal_manifest(row.id, manifest)
            # And every system the person's identity map names that the config no longer
            # has: it may still hold them (they were sent there), and a receipt that left it
            # out would look whole, while the erasure deleted the rows that said so. Its part
            # waits for the system to be configured again or exempted (_note_unconfigured).
            systems = [*self.rt.systems, *sorted(set(ids) - set(self.rt.systems))]
            self.db.create(with_changes(row, manifest=sealed), systems, suppress=subject_ids)
            self.audit(
                "dsr.received", row, source=source, deadline=row.deadline, **self._due_within()
            )
            self.audit("dsr.suppressed", row, entries=len(subject_ids))
            self.supersede_corrections(row, subject_ids)
        return self._view(self.db.get(row.id))

    def _unknown_record(self, external: tuple[str, str] | None) -> list[str]:
        """An erasure that names nobody the connector knows, nor a number: keyed by the
        source's record it names (its keyed id, :meth:`SystemIds.record_key`).

        A shop asks to erase a customer it never sent here (a Shopify customer with no
        e-mail, whom no sync could take). The request is opened all the same, keyed by what
        it names: its suppression entries (the number given, else the record) keep the
        person out of every later sync (PageTaker._suppressed reads both), and the shop's
        part erases there by the id. A record of a system no flow reads from is nobody a
        sync could bring back, and nothing to erase elsewhere.

        Raises:
            SubjectNotFoundError: no source's record is named.
        """
        sources = {flow.source for flow in self.rt.config.flows}
        if external is None or external[0] not in sources:
            named = external[0] if external is not None else "request"
            raise SubjectNotFoundError(f"{named}: the id given matches no known subject")
        return [self.rt.engine.ids.record_key(*external)]

    def _open_erasure(
        self, primary: str, subject_ids: list[str], external: tuple[str, str] | None
    ) -> RequestRow | None:
        """The person's open erasure, whichever of their addresses or records it names.

        Asked again under a former address (a move), the primary id is not the open
        request's, but its suppression entries hold every id it was widened to. A shop's
        request by its customer id finds it by the record's entry too: the open erasure
        deleted the identity rows that tied the id to the person, and the address it
        carries may be one the connector never saw.
        """
        found = self.db.open_for("erase", primary)
        if found is not None:
            return found
        keys = list(subject_ids)
        if external is not None:
            keys.append(self.rt.engine.ids.record_key(*external))
        return self.db.open_suppressing(keys)

    def _asked_again(
        self,
        row: RequestRow,
        subject_ids: list[str],
        ids: dict[str, str],
        e164: str | None,
        email: str | None = None,
    ) -> None:
        """Add to an open erasure what it is asked again with: a phone number, a system's id,
        an address it did not know. Dropped, a phone given only the second time was never
        suppressed, and a restored backup holding the person under it came back. So is the
        address of one recorded without it (a webhook's, by an id, as it came): the systems
        are looked in by it too, and its records' numbers read."""
        manifest = self.open_manifest(row)
        if e164 and not manifest.get("phone"):
            manifest["phone"] = e164
        if email and not manifest.get("email"):
            manifest["email"] = email
        added = [sid for sid in subject_ids if sid not in manifest["subject_ids"]]
        self.kinds.widen(row, manifest, added, "dsr.asked_again", ids, in_run=False)


def _webhook_phone(rt: Runtime, phone: str | None, source: str) -> str | None:
    """A webhook's number in E.164 as the system that sent it reads it; ``None`` for one
    that does not parse, which is left out, not a reason to refuse the request."""
    if not phone:
        return None
    try:
        return checked_phone(phone, phone_regions(rt.config, source))
    except DsrUsageError:
        return None
