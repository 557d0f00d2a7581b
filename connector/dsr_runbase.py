"""What every request kind's run shares: its state, its writes and which systems it asks.

A run holds the sealed manifest it read (:meth:`RunBase._save` writes only over that
version) and what it read of each system; every step's outcome is recorded with its audit
entry (:meth:`RunBase._set`, :meth:`RunBase._failed`). Who the person is, under every
address the store and the sources know them by, is found here too: an erasure widens to
it, an access copy reads by it and a correction writes to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from connector.adapter import Subject, read_records
from connector.config import adapter_capabilities
from connector.crypto import DecryptionError, outbox_context
from connector.dsr_store import EXEMPTED, FINAL_STATUSES, RequestRow, latest_purges, on_hold
from connector.dsr_views import StaleRunError
from connector.errors import FatalRemoteError, KlantsyncError
from connector.model import earlier_email_forms, is_archived
from connector.moves import same_person
from connector.systems import System
from connector.wording import counted

if TYPE_CHECKING:
    from connector.dsr import DsrService

__all__ = ["STRANGER", "RunBase", "left_to_others", "own_id", "settle"]

log = logging.getLogger("klantsync.dsr")

#: Among the subjects :meth:`KindRunner._former_subjects` finds: a source holds the address
#: for a customer the store has not met.
STRANGER = "<a customer the store has not met>"

#: The answers of a system that no longer lets klantsync in (its token revoked, as Shopify
#: revokes an app's when the shop uninstalls it).
_REFUSED = frozenset({401, 403})


class RunBase:
    """What the run of each request kind shares: its state, its writes, the systems it
    may ask and who the person is.

    Args:
        service: the service whose store, runtime and clock it uses.
    """

    def __init__(self, service: DsrService) -> None:
        self.service = service
        self.db = service.db
        self.rt = service.rt
        #: Per request run now, the sealed manifest it read or last wrote (see :meth:`_save`).
        self._held: dict[str, bytes | None] = {}
        #: Per request run now, what it read of each system before writing (:meth:`_records`).
        self._reads: dict[str, dict[tuple[str, str, str | None], list[dict[str, Any]]]] = {}

    def _version(self, row: RequestRow) -> bytes | None:
        """What a run's outcomes are recorded against: the sealed manifest it holds.

        Changed by another process meanwhile (the CLI beside the daemon: a correction asked
        again, an erasure widened by a retry of its own), the request's parts may be pending
        again for what the run does not know: an outcome of the run must then not settle
        them (:meth:`DsrStore.set_system`). Access requests change nothing that matters so.
        """
        if row.kind == "access":
            return None
        return self._held.get(row.id, row.manifest)

    def _save(self, row: RequestRow, manifest: dict[str, Any], *, in_run: bool = True) -> None:
        """Write ``manifest`` back: during a run, only over the version the run holds.

        The request lock is this process's; the CLI beside the daemon runs the same request
        from another. A run that wrote back the manifest it read undid what the other added
        meanwhile (an address a queued payload carried, whose rows that run then deleted:
        the erasure completed with the contact under it still in the CRM), or put a sealed
        manifest back into a request the other completed. Outside a run (an erasure asked
        again) the write goes through, and the run's next write finds it.
        """
        sealed = self.service.seal_manifest(row.id, manifest)
        if not in_run:
            self.db.set_manifest(row.id, sealed)
            return
        if not self.db.replace_manifest(row.id, sealed, self._held.get(row.id, row.manifest)):
            raise StaleRunError(
                f"request {row.id} was changed by another process while this run worked on "
                "it; nothing of this run was written over that, and a retry carries on"
            )
        self._held[row.id] = sealed

    def _sources(self, row: RequestRow | None = None) -> list[str]:
        """The configured systems that are a flow's source, in configuration order; with
        ``row``, only those the request may still ask (:meth:`_askable`)."""
        sources = {flow.source for flow in self.rt.config.flows}
        return [name for name in self._askable(row) if name in sources]

    def _read_only_sources(self) -> list[str]:
        """The configured flows' sources klantsync cannot write (Shopify): a correction
        leaves their values as they are."""
        return [
            name
            for name in self._sources()
            if "update" not in adapter_capabilities(self.rt.systems[name].settings.adapter)
        ]

    def _askable(self, row: RequestRow | None) -> list[str]:
        """The configured systems ``row`` may still ask, in configuration order: all but
        those whose part is exempted (:meth:`DsrService.exempt`). Every call that asks a
        system on a request's behalf goes by this, read again just before it asks.

        An exemption says the system is asked nothing more, even by a run already under way
        (the operator exempts from the CLI while the daemon's retry works): a list fixed at
        the start of a run went on reading, and erasing, what the exemption was to keep out.
        With no request yet (an erasure or correction being opened), every system.
        """
        if row is None:
            return list(self.rt.systems)
        # A part held for an earlier exemption (_hold_exempted_before) is not asked either,
        # until the operator decides; nor a correction's part the person's erasure closed,
        # recorded while this run worked (DsrService.supersede_corrections).
        left = {
            s.system
            for s in self.db.systems(row.id)
            if s.status in ("exempt", "superseded") or on_hold(s.status, s.detail)
        }
        return [name for name in self.rt.systems if name not in left]

    def _unconfigured_unsettled(self, row: RequestRow) -> bool:
        """Whether a part of ``row`` of a system the config no longer has is unsettled."""
        return any(
            s.system not in self.rt.systems and s.status not in FINAL_STATUSES
            for s in self.db.systems(row.id)
        )

    def _exempted(self, row: RequestRow) -> dict[str, str]:
        """The systems whose part of ``row`` is exempted, each with the reason the exemption
        stored (its detail without the "exempt: " it starts with)."""
        return {
            s.system: (s.detail or "").removeprefix(EXEMPTED)
            for s in self.db.systems(row.id)
            if s.status == "exempt"
        }

    async def _former_subjects(
        self,
        email: str,
        sources: list[str],
        *,
        row: RequestRow | None = None,
        owners: dict[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Subjects the person is known under in the identity map by their record in a source.

        Someone who changed their address in the shop since the last sync is held in the
        other systems under the former address. The shop's record for the address asked with
        has its own id, and the identity map knows that id under the former address's
        subject (connector/moves.py). Returns those subjects, and the sources that answered
        (one that could not be asked is left to the next retry).

        A source record for the address whose id the store knows under nobody is a customer
        the store has not met (one who signed up under an address another person gave up):
        :data:`STRANGER` is then among the subjects, which :meth:`_same_person` reads as
        "the address is taken"; ``owners``, where given, then takes that customer's id in the
        source (source -> id), for the request run that asked (an access copy's orders).

        The sources' records are read as a correction reads them (:meth:`_records`): ids,
        addresses and whether each is archived, not a shop's orders or a CRM's notes.
        """
        found = await settle({n: self._records(row, n, Subject(email=email)) for n in sources})
        # Known under a form of the address from before addresses were read in NFC (a
        # shop's "e + accent"): the same person, whom no sync has read again since.
        earlier = [self.rt.keyring.subject_id(form) for form in earlier_email_forms(email)]
        subjects: list[str] = list(self.rt.store.subject_numbers(earlier))
        answered: list[str] = []
        for name, outcome in found.items():
            if isinstance(outcome, KlantsyncError):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            assert isinstance(outcome, list)
            answered.append(name)
            own = own_id(self.rt.systems[name], outcome, email)
            stored = self.rt.engine.ids.to_store(name, own) if own else None
            former = self.rt.store.subject_for_external(name, stored) if stored else None
            if former is not None:
                subjects.append(former)
            elif stored is not None and any(not is_archived(r) for r in outcome):
                subjects.append(STRANGER)
                assert own is not None
                if owners is not None:
                    owners[name] = own
        return subjects, answered

    async def taken_over(self, email: str) -> bool:
        """Whether a source holds ``email`` for a customer the store has not met (see
        :meth:`_former_subjects`; a source that cannot be asked now says nothing)."""
        former, _ = await self._former_subjects(email, self._sources())
        return STRANGER in former

    def _same_person(self, subject_id: str, others: list[str]) -> list[str]:
        """:func:`same_person` of the request's subject and ``others`` (from
        :meth:`_former_subjects`). Where a source holds the address asked with for a
        customer the store has not met, the address is theirs now: it does not lead to the
        person who had it before (their data would go into this customer's bundle, and
        this customer's correction onto their records)."""
        taken = [subject_id] if STRANGER in others else []
        known = [s for s in others if s != STRANGER]
        return same_person(self.rt.store, [subject_id, *known], taken)

    async def person(self, email: str, subject_id: str, row: RequestRow | None = None) -> list[str]:
        """The subject and every subject the same person is known under: former addresses
        the identity map links (connector/moves.py), and the one a source's record for
        ``email`` is known under when the person changed their address since the last sync
        (:meth:`_former_subjects`; a source that cannot be asked now, or that ``row`` may
        not ask, is left out)."""
        former, _ = await self._former_subjects(email, self._sources(row), row=row)
        return self._same_person(subject_id, former)

    def _others(
        self, name: str, records: list[dict[str, Any]], people: Sequence[str]
    ) -> frozenset[str]:
        """The ids of the records among ``records`` the identity map knows at ``name`` under
        other subjects only, none of ``people`` (the person's).

        A system may find a record by an address it holds beside the record's own (a sales
        rep adds the person's address to a housemate's CRM person as a second e-mail). That
        record is the other subject's: shown in the person's copy, it gave away the
        housemate's data, and erased with the person, it deleted the housemate. Orders are
        left to :func:`_someone_elses` (an order id is no person's id in the identity map).
        """
        ids = self.rt.engine.ids
        system = self.rt.systems[name]
        others: set[str] = set()
        for record in records:
            record_id = system.mapping.record_id(record)
            if record.get("type") == "order" or record_id is None:
                continue
            known = self.rt.store.subjects_for_external(name, ids.to_store(name, record_id))
            if known and not set(known) & set(people):
                others.add(record_id)
        return frozenset(others)

    async def _records(
        self, row: RequestRow | None, name: str, subject: Subject
    ) -> list[dict[str, Any]]:
        """``subject``'s records at ``name`` as a correction reads them (:func:`read_records`:
        no orders, nothing only an access copy holds), read once per request run.

        The look for a former address, the person's country and what a source holds now ask
        a system the same before this run writes anything: read again for each, a
        correction read the shop three times. The run's write to a system reads it afresh
        first, once the sync's writes on their way have landed (:meth:`_rectify_system`);
        nothing read is kept past the run (:meth:`run`), and without ``row`` (a request
        being opened) nothing is kept at all.
        """
        adapter = self.rt.systems[name].adapter
        reads = self._reads.get(row.id) if row is not None else None
        if reads is None:
            return await read_records(adapter, subject)
        key = (name, subject.email, subject.external_id)
        if key not in reads:
            reads[key] = await read_records(adapter, subject)
        return list(reads[key])

    def _queued_addresses(self, subject_ids: list[str], email: str | None) -> dict[str, list[str]]:
        """Per system, the addresses other than ``email`` the subjects' queued payloads carry.

        The identity map learns a system's id for the person when a delivery is answered.
        One whose answer was lost (a failure half-way through a batch, a reset connection)
        left its payload queued, and the system may hold the person under the address it
        carried, a former one the identity map knows only as an HMAC: a Mailchimp member
        subscribed under it, found by nothing else.
        """
        found: dict[str, list[str]] = {}
        for system, sealed in self.db.queued_payloads(subject_ids):
            try:
                envelope = self.rt.keyring.open_json(sealed, outbox_context(system))
            except DecryptionError:
                continue  # left unread, as the delivery would leave it
            address = envelope.get("email")
            known = found.setdefault(system, [])
            if address and address != email and address not in known:
                known.append(address)
        return found

    # -- a purged source that shut klantsync out ---------------------------------------------

    def _exempt_if_shut_out(
        self,
        row: RequestRow,
        name: str,
        error: KlantsyncError,
        record: dict[str, Any] | None = None,
    ) -> str | None:
        """Close ``name``'s part as exempt if its source was purged and it refuses klantsync
        (:meth:`_shut_out`); return the reason, or ``None`` (the part is left to the caller).
        """
        reason = self._shut_out(row, name, error)
        if reason is not None:
            self._set(row, name, "exempt", reason, record)
        return reason

    def _shut_out(self, row: RequestRow, name: str, error: KlantsyncError) -> str | None:
        """Why ``name`` is not asked again for ``row``: its source was purged (Shopify's
        ``shop/redact``: the shop uninstalled the app, whose token it revoked) and it refuses
        klantsync's credentials. ``None`` for any other failure.

        A customer's request that came after the purge (Shopify sends ``customers/redact``
        months after the merchant's request) failed at that shop at every retry, until an
        operator exempted it. Nor is there anything left to do there: klantsync holds
        nothing of the shop since the purge and cannot reach it, and what the shop holds is
        its owner's, in Shopify (which carries out the requests it sent itself). Not
        "not held": nobody looked, and the shop may well hold the person. A shop that lets
        klantsync in again (the app installed again, its new token configured) is asked as
        any other; a refusal with no purge is a credential to fix, and fails as before.
        """
        if not isinstance(error, FatalRemoteError) or error.status not in _REFUSED:
            return None
        purged = latest_purges(self.rt.store.db).get(name)
        if purged is None:
            return None
        reason = (
            f"the shop removed klantsync's access and klantsync forgot what it held of it "
            f"(shop/redact, {purged}); it refuses klantsync's credentials ({error.status}), "
            "so it is not asked: what it holds is the shop owner's to handle in the shop"
        )
        if row.source == f"webhook:{name}":
            reason += ", which sent this request"
        return reason

    # -- status helpers ------------------------------------------------------------------------

    def _set(
        self,
        row: RequestRow,
        name: str,
        status: str,
        detail: str | None,
        result: dict[str, Any] | None = None,
    ) -> None:
        # The status and its audit entry together: a process that died between them left
        # a step the trail does not show.
        with self.rt.store.transaction():
            self.db.set_system(
                row.id, name, status, detail=detail, result=result, manifest=self._version(row)
            )
            self.service.audit("dsr.system", row, system=name, status=status)

    def _unverified(self, row: RequestRow, name: str, reason: str, record: dict[str, Any]) -> None:
        """An erasure asked for whose verifying read failed: pending, read again on retry."""
        self._set(row, name, "pending_verification", f"{reason}; read again on retry", record)
        log.warning(
            "erasure not verified", extra={"request": row.id, "system": name, "error": reason}
        )

    def _failed(
        self,
        row: RequestRow,
        name: str,
        reason: str,
        result: dict[str, Any] | None = None,
        *,
        attempt: bool = False,
    ) -> None:
        # Error texts come from the error tree: system, method, path, status; never bodies.
        with self.rt.store.transaction():
            self.db.set_system(
                row.id,
                name,
                "failed",
                detail=reason,
                result=result,
                attempt=attempt,
                manifest=self._version(row),
            )
            self.service.audit("dsr.system", row, system=name, status="failed", detail=reason)
        log.warning(
            "request step failed", extra={"request": row.id, "system": name, "error": reason}
        )


def own_id(system: System, records: list[dict[str, Any]], email: str) -> str | None:
    """The id of the record among ``records`` that holds ``email`` itself, if one does.

    A vendor's search by address may also return records it only partly matches, so the
    address is read back from each through the mapping before its id is trusted.
    """
    for record in records:
        if system.mapping.inbound(record).email == email:
            return system.mapping.record_id(record)
    return None


async def settle(jobs: dict[str, Awaitable[Any]]) -> dict[str, Any]:
    """Run ``jobs`` concurrently; each name maps to its result or the exception it raised.

    Every job finishes (or fails) before this returns, so a crash in one system never leaves
    another mid-call with its status unrecorded. The process being stopped (a cancellation,
    an interrupt) is not a system's answer: it goes on up as itself once all have finished.
    """
    names = list(jobs)
    results = await asyncio.gather(*jobs.values(), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    return dict(zip(names, results, strict=True))


def left_to_others(note: str, ids: Collection[str]) -> str:
    """``note`` (a system part's), with what it says of the records a request left because
    the connector knows them as another subject's: by id alone, as the receipt shows it
    (ids are no personal data of the person)."""
    if not ids:
        return note
    said = (
        f"left {counted(len(ids), 'record')} found under the address that the connector "
        f"knows as another person's (ids {', '.join(sorted(ids))})"
    )
    return "; ".join(n for n in (note, said) if n)
