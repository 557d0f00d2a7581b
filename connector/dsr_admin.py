"""An operator's decisions on an open request: a deadline extended, a system's part exempted
with the reason the person is told, or a part held for an earlier exemption released.

Each is one write transaction from the look at the request to its audit entry, so two
decisions at once (the CLI and the admin API) cannot both pass a check made before either
wrote, and a decision without its entry is none.
"""

from __future__ import annotations

import datetime as dt

from connector.dsr_servicebase import ServiceBase, iso, no_request
from connector.dsr_store import EXEMPTED, FINAL_STATUSES, RequestRow, SystemRow, on_hold
from connector.dsr_views import (
    MAX_EXTENSION_MONTHS,
    DsrUsageError,
    RequestView,
    add_months,
    extension_months,
)
from connector.logs import redact

__all__ = ["OperatorDecisions"]


class OperatorDecisions(ServiceBase):
    """What an operator decides about a request (``dsr extend``, ``exempt``, ``release``)."""

    def extend(self, request_id: str, months: int, reason: str) -> RequestView:
        """Extend an open request's deadline (Art. 12(3): two further months at most).

        The reason is redacted (e-mails, phones) before it is stored.
        """
        # The look, the checks and the write in one write transaction: two extensions at
        # once (the CLI and the admin API) each passed the Art. 12(3) check on the months
        # used before either wrote, and the trail recorded more months than the deadline
        # moved, the first reason written over. A deadline moved without its entry would be
        # an extension nobody can account for.
        with self.rt.store.transaction():
            row = self.db.get(request_id)
            if row is None:
                raise no_request(request_id)
            used = self._extension_allowed(row, months, reason)
            received = dt.datetime.fromisoformat(row.received_at)
            deadline = iso(add_months(received, 1 + used + months))
            text = redact(" ".join(reason.split()))[:500]
            combined = f"{row.extension_reason}; {text}" if row.extension_reason else text
            self.db.set_deadline(row.id, deadline, combined)
            self.audit("dsr.extended", row, months=months, deadline=deadline, reason=text)
        return self._view(self.db.get(row.id))

    def _extension_allowed(self, row: RequestRow, months: int, reason: str) -> int:
        """The months ``row`` is extended by already, if it may be by ``months`` more.

        Raises:
            DsrUsageError: it is not open, the reason is empty, or Art. 12(3) does not allow it.
        """
        request_id = row.id
        if row.status != "open":
            raise DsrUsageError(f"request {request_id} is {row.status}; only open ones extend")
        if not reason.strip():
            raise DsrUsageError("an extension needs a reason (--reason)")
        received = dt.datetime.fromisoformat(row.received_at)
        told_by = add_months(received, 1)
        if self.now() > told_by:
            # Art. 12(3): the data subject is told of any extension within one month of
            # receipt, whatever a first extension moved the deadline to.
            raise DsrUsageError(
                f"request {request_id} was received more than a month ago ({row.received_at}); "
                "a deadline extends only within one month of receipt (Art. 12(3))"
            )
        if self.now() > dt.datetime.fromisoformat(row.deadline):
            # And only while the request's own deadline has not passed: one shorter than the
            # month (Shopify's 30 days) is missed once it passes, and an extension then
            # would hide the missed deadline from `dsr list --overdue` after the fact.
            raise DsrUsageError(
                f"request {request_id} is past its deadline ({row.deadline}); a deadline "
                "extends only before it passes"
            )
        due_within = self.db.vendor_deadline(row.id, row.subject_id)
        if due_within is not None:
            # Shopify's compliance webhooks: the app acts within 30 days, and GDPR's extension
            # does not lengthen a vendor's term. Refused rather than capped at it: a deadline
            # "extended" to where it stands would tell the person of a delay there is none of.
            raise DsrUsageError(
                f"request {request_id} answers a request the system that asked wants carried "
                f"out within {due_within} days; its deadline ({row.deadline}) does not extend"
            )
        used = extension_months(row)
        if used >= MAX_EXTENSION_MONTHS:
            raise DsrUsageError(
                f"request {request_id} is already extended by {used} months, the most "
                "Art. 12(3) allows"
            )
        if months < 1 or used + months > MAX_EXTENSION_MONTHS:
            raise DsrUsageError(
                f"--months must be 1..{MAX_EXTENSION_MONTHS - used}: a deadline extends by at "
                f"most {MAX_EXTENSION_MONTHS} months in total ({used} used)"
            )
        return used

    def exempt(self, request_id: str, system: str, reason: str) -> RequestView:
        """Close one system's part of an open request without carrying it out, with a reason.

        For a part the controller may not or need not carry out, which the person must be
        told the reason for (Art. 12(4)): order records a shop must keep (Art. 17(3)(b), a
        legal obligation such as seven years of bookkeeping), data needed for legal claims
        (Art. 17(3)(e)), or an erasure the system's owner cancelled in the system itself for
        such a reason (a Shopify erasure cancelled while pending, which the retries would
        otherwise ask for again until the deadline passed). The system is not asked again;
        once every other system is settled the request completes, and its receipt names the
        system as ``exempt`` with the reason. The reason is redacted before it is stored. An
        access request completes with its bundle, written by its next run without the system.

        Raises:
            DsrUsageError: no such request, it is not open, it has no such system, that
                system's part is settled already, or the reason is empty.
        """
        text = redact(" ".join(reason.split()))[:500]
        # The look, the decision, its entry and the completion it may bring in one write
        # transaction. A retry from another process that settled the part in between (erased
        # it after all) is not overwritten; an exemption nobody can account for is none. And
        # the daemon may make it again whole after another process's lock refused it
        # (connector/storeturn.py): committed before the completion and refused there, made
        # again it was refused as settled already, and the request was left open.
        with self.rt.store.transaction():
            row = self.db.get(request_id)
            if row is None:
                raise no_request(request_id)
            if row.status != "open":
                raise DsrUsageError(
                    f"request {request_id} is {row.status}; only an open request's systems "
                    "can be exempted"
                )
            if not text:
                raise DsrUsageError("an exemption needs a reason (--reason): the person is told it")
            status = self._part(row, system).status
            if status in FINAL_STATUSES:
                raise DsrUsageError(
                    f"{system} is {status} for request {request_id} already; only an "
                    "unsettled part can be exempted"
                )
            self.db.set_system(row.id, system, "exempt", detail=f"{EXEMPTED}{text}")
            self.audit("dsr.exempted", row, system=system, reason=text)
            if row.kind != "access":
                # An access request completes with its bundle, which its next run writes
                # from the systems that are left (the daemon's retries, or dsr retry).
                self._complete_if_done(row)
        return self._view(self.db.get(row.id))

    def release(self, request_id: str, system: str) -> RequestView:
        """Let an open erasure erase ``system``, whose part it holds because an earlier
        erasure of the person exempted that system (KindRunner._hold_exempted_before).

        The operator's other answer to such a part is ``dsr exempt`` (the reason holds
        still). Released, the part is pending as any other, and the request's next run
        (the daemon's retries, or ``dsr retry``) erases the person there; the earlier
        exemption no longer holds it back. Calls no system.

        Raises:
            DsrUsageError: no such request, it is not open, it has no such system, or that
                system's part is not on hold.
        """
        # The look, the decision and its entry in one write transaction, as for exempt.
        with self.rt.store.transaction():
            row = self.db.get(request_id)
            if row is None:
                raise no_request(request_id)
            if row.status != "open":
                raise DsrUsageError(
                    f"request {request_id} is {row.status}; only an open request's part on "
                    "hold can be released"
                )
            part = self._part(row, system)
            if not on_hold(part.status, part.detail):
                raise DsrUsageError(
                    f"{system}'s part of request {request_id} is not on hold for an earlier "
                    "exemption; there is nothing to release"
                )
            # Kept in the manifest, which lasts as long as the request is open: the next run
            # must not hold the part again for the same earlier exemption.
            manifest = self.open_manifest(row)
            manifest["released"] = [*manifest.get("released", []), system]
            self.db.set_manifest(row.id, self.seal_manifest(row.id, manifest))
            self.db.set_system(row.id, system, "pending")
            self.audit("dsr.released", row, system=system)
        return self._view(self.db.get(row.id))

    def _part(self, row: RequestRow, system: str) -> SystemRow:
        """The request's part for ``system``; refused when it has none of that name."""
        parts = {part.system: part for part in self.db.systems(row.id)}
        if system not in parts:
            # The name is not repeated: through the admin API, what was sent would be
            # answered back (and reach proxies' logs), whatever it held.
            raise DsrUsageError(
                f"request {row.id} has no system of that name; it has {', '.join(parts)}"
            )
        return parts[system]
