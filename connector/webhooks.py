"""Inbound webhooks: verify, de-duplicate, queue. The HTTP layer only calls :func:`receive`.

Work is never done inside the request: a verified delivery's events are sealed into the jobs
table (they can carry a whole customer record) and the delivery is acknowledged at once; the
daemon's worker does the syncing or the erasure. An erasure is recorded with the delivery,
its suppression entries with it, by what the store can tell without asking a vendor, so no
sync sends the person anything from the answer on. A delivery id already seen is a replay and
is ignored, whatever its signature says. A delivery refused (for its signature, or sent to
no webhook endpoint) leaves a ``webhook.rejected`` entry (at most one a minute per system
and reason, see :func:`_record_rejected`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import weakref
from dataclasses import dataclass, field
from typing import Any

from connector import audit, jobs
from connector.adapter import Adapter, WebhookEvent, WebhookRequest
from connector.dsr import DsrService
from connector.model import normalise_email
from connector.runtime import Runtime
from connector.settings import WebhookSettings
from connector.state import Store, utcnow

__all__ = ["MAX_BODY_BYTES", "UNKNOWN_SYSTEM", "WebhookOutcome", "receive"]

#: Vendors send single records or small event arrays; anything larger is refused unread.
MAX_BODY_BYTES = 1_048_576


@dataclass
class WebhookOutcome:
    """What happened to one delivery: HTTP status to answer, and counts."""

    status: int
    reason: str = ""
    queued: list[int] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0


def receive(rt: Runtime, system_name: str, request: WebhookRequest, now: float) -> WebhookOutcome:
    """Verify and queue one delivery for ``system_name``.

    Returns 404 for an unknown system or one without a webhook secret, 401 for a bad or stale
    signature (nothing is queued; either refusal is recorded), 200 otherwise.
    """
    system = rt.systems.get(system_name)
    if system is None or system.settings.webhooks is None:
        # Recorded too: probing, or a vendor posting to a wrong URL, is for the operator to see.
        known = system is not None
        reason = REJECTED_NO_WEBHOOKS if known else REJECTED_UNKNOWN_SYSTEM
        _record_rejected(rt.store, system_name if known else UNKNOWN_SYSTEM, reason, now)
        return WebhookOutcome(404, "no webhook endpoint for this system")
    if not _verified(system.adapter, system.settings.webhooks, request, now):
        _record_rejected(rt.store, system_name, REJECTED_SIGNATURE, now)
        return WebhookOutcome(401, "signature invalid or stale")
    events = system.adapter.parse_webhook(request)
    outcome = WebhookOutcome(200)
    # The delivery's ids are noted and its jobs queued in one transaction. Noted apart, a
    # store that failed in between (a full disk) answered 503 with the id kept and no job:
    # the vendor's next delivery was then "a duplicate", and the change, or an erasure
    # request, was lost. A data subject request (sent once: Shopify's compliance topics,
    # and WooCommerce never retries) is on disk before the 200; a lost change is caught up
    # by the next scheduled run, so changes are not each paid an fsync.
    requests = any(event.kind in REQUEST_KINDS for event in events)
    with rt.store.durable_transaction() if requests else rt.store.transaction():
        if any(event.kind == "opted_in" for event in events):
            # A withdrawal the sync delivered may have its acknowledgement waiting for the
            # engine's next write: written first, so the subscribe answers it (see
            # _record_consent). Written after, it wrote its hash over the subscribe's mark,
            # and the person's own unsubscribe then was taken for that withdrawal's echo.
            # Inside the delivery's transaction: a store whose lock is another's refuses its
            # start, before the engine hands over what it holds (a failed write drops it).
            rt.engine.flush()
        for event in events:
            if event.kind == "ignored":
                outcome.ignored += 1
                continue
            if not _first_delivery(rt, system_name, event.delivery_id):
                outcome.duplicates += 1
                continue
            if event.kind in ("opted_out", "opted_in"):
                # Recorded here, with the delivery, not queued: a sync running before a
                # job would subscribe again someone who just unsubscribed.
                outcome.ignored += not _record_consent(rt, system_name, event)
                continue
            params: dict[str, Any] = {
                "system": system_name,
                "event": event.kind,
                "delivery_id": event.delivery_id,
                "external_id": event.external_id,
                "email": event.email,
                "phone": event.phone,
                "due_within_days": event.due_within_days,
            }
            if event.merged_into is not None:
                params["merged_into"] = event.merged_into
            first = first_sent(event, now)
            received = dt.datetime.fromtimestamp(first, dt.UTC)
            if first != now:
                # A delivery sent again after one failed: the job's request counts from the
                # first try, as the erasure recorded here does, not from when it was queued.
                params["received_at"] = received.isoformat()
            if event.kind == "erase":
                # Recorded here, with the delivery, as the admin API records one before its
                # answer: queued alone, a scheduled run before the job (or a `sync` while
                # the daemon was stopped) created again the contact HubSpot had just
                # deleted for GDPR, and wrote the other systems. No vendor is asked before
                # the answer; the job goes on as the request and does the rest.
                service = DsrService.for_delivery(rt, received, event.due_within_days)
                if service.own_erasure_reported(system_name, event):
                    outcome.ignored += 1  # the echo of klantsync's own erasure
                    continue
                recorded = service.erase_on_receipt(system_name, event)
                if recorded is not None:
                    params["request"] = recorded.id
            outcome.queued.append(jobs.enqueue(rt.store, rt.keyring, "webhook", params))
    return outcome


def _verified(
    adapter: Adapter, hooks: WebhookSettings, request: WebhookRequest, now: float
) -> bool:
    """Whether ``request`` verifies with the system's webhook secret, or with the one it
    replaced (``previous_secret``) while that is configured. A vendor does not sign with a
    rotated secret at once, and retries what it signed before with the old one: with one
    secret, a rotation refused (401) what was signed with the old one, or with the new one,
    until the config and the vendor agreed, a person's erasure request among them. Each
    adapter compares in constant time; which secret matched is told nowhere."""
    return any(adapter.verify_webhook(request, secret, now) for secret in hooks.secrets())


#: At most one ``webhook.rejected`` entry per system and reason in this many seconds.
REJECTED_ENTRY_EVERY = 60.0

#: Why a delivery was refused, as its ``webhook.rejected`` entry says.
REJECTED_SIGNATURE = "signature invalid or stale"
REJECTED_NO_WEBHOOKS = "no webhooks configured"
REJECTED_UNKNOWN_SYSTEM = "unknown system"

#: What a ``webhook.rejected`` entry names for a delivery to a name that is no configured
#: system (the metrics label it so too).
UNKNOWN_SYSTEM = "unknown"


@dataclass
class _Rejections:
    """A system's refused deliveries since its last ``webhook.rejected`` entry."""

    recorded_at: float
    unrecorded: int = 0


#: Per open store (the daemon's), per system and reason: when the last refusal was recorded.
_REJECTED: weakref.WeakKeyDictionary[Store, dict[tuple[str, str], _Rejections]] = (
    weakref.WeakKeyDictionary()
)


def _record_rejected(store: Store, system_name: str, reason: str, now: float) -> None:
    """Append ``webhook.rejected`` for a delivery refused for ``reason``.

    A delivery refused for its signature may be a data subject's request (HubSpot's
    ``privacyDeletion`` after the app secret rotated at HubSpot only): the trail shows it
    was refused. One sent to no webhook endpoint is probing, or a vendor posting to a wrong
    URL. But the endpoint is public and asks nothing before the signature, so a flood of
    forged deliveries would otherwise write the trail (kept for ``audit_days``) as fast as
    it can be sent: one entry a minute per system and reason is written, and the next one
    counts the refusals in between (``unrecorded``), which the metrics count one by one.

    ``system_name`` is a configured system's, or :data:`UNKNOWN_SYSTEM`: a name from the
    URL as it is could put an e-mail address in the trail, and a new one per request would
    write an entry per request (and keep one more key here each time).
    """
    seen = _REJECTED.setdefault(store, {})
    key = (system_name, reason)
    last = seen.get(key)
    if last is not None and 0 <= now - last.recorded_at < REJECTED_ENTRY_EVERY:
        last.unrecorded += 1
        return
    data: dict[str, Any] = {"system": system_name, "reason": reason}
    if last is not None and last.unrecorded:
        data["unrecorded"] = last.unrecorded
    audit.append(store, "webhook.rejected", data)
    seen[key] = _Rejections(now)


#: How long before its delivery the vendor's mark of a request's first try
#: (:attr:`WebhookEvent.sent_at`) may be and still be taken. Shopify sends a failed
#: delivery again 8 times over 4 hours, and warns that a delivery may come up to a day late;
#: three days leaves room for both. The mark is not signed: taken, it can only bring the
#: deadline forward (one after the delivery is not taken), and one older than this is no
#: redelivery's (a vendor's clock gone wrong, a header that means something else), which
#: would make a request overdue as it came.
FIRST_SENT_WITHIN = dt.timedelta(days=3)


def first_sent(event: WebhookEvent, now: float) -> float:
    """When ``event``'s request reached the connector: at the first try of a delivery the
    vendor sent again after one failed (the store refused it with 503, the daemon was down)
    where the vendor marks it, else now. README: a delivery the store failed to take is
    taken when the vendor delivers it again; it came at the first try all the same, and
    the vendor's days to carry it out (Shopify's 30) count from then."""
    sent = event.sent_at
    if sent is None or not now - FIRST_SENT_WITHIN.total_seconds() <= sent <= now:
        return now
    return sent


#: Event kinds that are a data subject's request (or a shop's, or their consent at the
#: system), not a change to sync.
REQUEST_KINDS = frozenset({"erase", "access", "purge_all", "opted_out", "opted_in"})


#: How soon after klantsync delivered a withdrawal the system's report of that unsubscribe
#: comes (Mailchimp posts its webhooks within seconds); an unsubscribe later is the
#: person's own.
ECHO_WITHIN_SECONDS = 3600.0


def _record_consent(rt: Runtime, system: str, event: WebhookEvent) -> bool:
    """Record an unsubscribe (or a subscribe again) at ``system``; whether it was recorded.

    Recorded for someone the store does not know yet too (keyed hash only): the first sync
    must not subscribe again who unsubscribed before it. Recorded for whoever has the
    address now (:meth:`~connector.state.Store.current_subject`): under the id the person
    has now if the address is one they moved from and nobody has taken over. Not recorded:
    the system telling of the withdrawal klantsync itself delivered just before (its
    webhook reports API changes too), which is no choice of the person's at the system,
    and would block their renewal for good. So is one while klantsync's withdrawal is
    still in the outbox: it may be on its way (Mailchimp reports the first audience's
    unsubscribe while the batch writes the next), and one not sent yet asks what the
    person's unsubscribe asks. A withdrawal delivered longer ago has no echo to come: an
    unsubscribe then is the person's own.

    Nor an event older than the latest recorded for the person there, where the system
    says when it happened (:attr:`WebhookEvent.occurred_at`): a delivery answered with an
    error comes again after the person's newer choice, which stands. Nor anything of an
    erased person: their erasure deleted their opt-outs, and a row made under their id
    now would outlive it.
    """
    if not event.email:
        return False
    address = rt.keyring.subject_id(normalise_email(event.email))
    subject_id = rt.store.current_subject(address)
    if rt.store.suppressed([address, subject_id]):
        return False
    if event.kind == "opted_out" and _echo_of_own_withdrawal(rt, system, subject_id):
        return False
    if event.occurred_at is not None and not rt.store.latest_consent_event(
        system, subject_id, event.occurred_at
    ):
        return False
    if event.kind == "opted_out":
        rt.store.opt_out(system, subject_id)
        audit.append(rt.store, "consent.opted_out", {"system": system}, subject_id=subject_id)
    else:
        # Their own subscribe answers any withdrawal the system holds from klantsync: an
        # unsubscribe after it is theirs too, not an echo of it.
        rt.store.withdrawal_answered(system, subject_id)
        if rt.store.opt_in(system, subject_id):
            audit.append(rt.store, "consent.opted_in", {"system": system}, subject_id=subject_id)
    return True


def _echo_of_own_withdrawal(rt: Runtime, system: str, subject_id: str) -> bool:
    """Whether an unsubscribe reported by ``system`` may be klantsync's own withdrawal:
    one on its way or waiting, or one delivered within :data:`ECHO_WITHIN_SECONDS`."""
    store = rt.store
    return store.withdrawal_queued(system, subject_id) or store.withdrawal_delivered(
        system, subject_id, ECHO_WITHIN_SECONDS
    )


def _first_delivery(rt: Runtime, system: str, delivery_id: str) -> bool:
    try:
        rt.store.db.execute(
            "INSERT INTO webhook_deliveries(system, delivery_id, received_at) VALUES (?,?,?)",
            (system, delivery_id, utcnow()),
        )
    except sqlite3.IntegrityError:
        return False
    return True
