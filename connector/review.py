"""The daemon's daily review: compliance gaps, agreements due for review, open breaches,
data subject requests overdue or due soon, keys due for rotation and a backup too old, each
a warning in the log, and the check recorded in the audit trail.

The daemon schedules it (:meth:`connector.daemon.Daemon.compliance_review`), first at
:func:`first_review`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from connector import audit
from connector.backup import last_backup_time
from connector.gauges import master_key_since
from connector.runtime import Runtime
from connector.state import Store
from connector.storeturn import transaction_in_turn

__all__ = [
    "BACKUP_REVIEW_DAYS",
    "KEY_REVIEW_DAYS",
    "REVIEW_MAX_IDS",
    "REVIEW_STORE_WAIT_SECONDS",
    "compliance_review",
    "first_review",
]

log = logging.getLogger("klantsync.daemon")

#: Age at which the receipt signing key and the master key are reported as due for rotation.
KEY_REVIEW_DAYS = 365
#: The daily review warns when the last backup of the store is older than this (or missing).
BACKUP_REVIEW_DAYS = 7
#: The daily review names at most this many request ids per warning (its count says how
#: many there are): a backlog of hundreds must not make one log line of kilobytes.
REVIEW_MAX_IDS = 50
#: How long the daily review waits, off the event loop, for the store's write lock another
#: process holds before it records the check (then it is a store failure, and the next
#: review records it): waited inside SQLite's busy timeout, /healthz and every webhook
#: waited with it.
REVIEW_STORE_WAIT_SECONDS = 30.0


async def compliance_review(
    rt: Runtime, clock: Callable[[], float], now: Callable[[], dt.datetime]
) -> None:
    """Warn about compliance gaps, agreements due for review and keys due for rotation;
    record the check. ``clock`` and ``now`` are the daemon's."""
    from connector.compliance import check_compliance, reviews_due

    gaps = check_compliance(rt.config)
    for gap in gaps:
        log.warning("compliance gap", extra={"code": gap.code, "key": gap.key})
    for system, review in reviews_due(rt.config):
        log.warning(
            "processor agreement due for review",
            extra={"system": system, "review_date": review.isoformat()},
        )
    from connector.incidents import open_summary

    for incident in open_summary(rt.store, now=now())["incidents"]:
        # A breach clock still running: the authority must hear within 72 hours, and an
        # incident left open after it was reported is worth closing too.
        log.warning(
            "breach incident open",
            extra={
                "incident": incident["id"],
                "deadline": incident["deadline"],
                "time_left": incident["time_left"],
            },
        )
    _review_requests(rt.store, now)
    from connector.receipts import receipt_key_path

    key_file = receipt_key_path(rt.config.store_path)
    if key_file.is_file():
        age_days = (clock() - key_file.stat().st_mtime) / 86400
        if age_days > KEY_REVIEW_DAYS:
            log.warning(
                "receipt signing key due for rotation (klantsync dsr rotate-key)",
                extra={"age_days": int(age_days)},
            )
    since = master_key_since(rt.store, rt.config)
    if since is not None:
        age_days = (clock() - since) / 86400
        if age_days > KEY_REVIEW_DAYS:
            log.warning(
                "master key due for rotation (klantsync keys rotate)",
                extra={"age_days": int(age_days)},
            )
    backed_up = last_backup_time(rt.store)
    if backed_up is None or (clock() - backed_up) / 86400 > BACKUP_REVIEW_DAYS:
        # Art. 32(1)(c): restoring access to personal data in time after an incident.
        log.warning(
            "no recent backup of the store (klantsync backup --out FILE)",
            extra={"max_age_days": BACKUP_REVIEW_DAYS, "last_backup": backed_up},
        )
    # Its write lock taken off the loop, as the sweep's: see REVIEW_STORE_WAIT_SECONDS.
    await transaction_in_turn(
        rt.store,
        lambda: audit.record_check(rt.store, gaps),
        within=REVIEW_STORE_WAIT_SECONDS,
    )


def _review_requests(store: Store, now: Callable[[], dt.datetime]) -> None:
    """Warn of open data subject requests past their deadline and of those due within
    :data:`~connector.dsr_views.FLAG_DAYS` days, by count and request id (earliest
    deadline first), never by anything of the person.

    The deadline (one month, Art. 12(3)) was a gauge only once past: an operator heard
    of a request when it was already late, not while there was a week to answer it.
    """
    from connector.dsr_views import FLAG_DAYS, summary

    open_requests = summary(store, now=now())["requests"]
    by_deadline = sorted(open_requests, key=lambda r: dt.datetime.fromisoformat(r["deadline"]))
    overdue = [r["id"] for r in by_deadline if r["overdue"]]
    due_soon = [r["id"] for r in by_deadline if r["flagged"] and not r["overdue"]]
    if overdue:
        log.warning(
            "data subject requests overdue",
            extra={"count": len(overdue), "requests": overdue[:REVIEW_MAX_IDS]},
        )
    if due_soon:
        log.warning(
            f"data subject requests due within {FLAG_DAYS} days",
            extra={"count": len(due_soon), "requests": due_soon[:REVIEW_MAX_IDS]},
        )


def first_review(store: Store, now: dt.datetime) -> dt.datetime:
    """When a starting daemon runs its first daily review.

    At once when no review ran in the last day or the config changed since the last one
    (its gaps may be new); otherwise a day after the last. A daemon restarted a few times a
    day (a deployment, a crash loop) repeated its warnings and its ``check.result`` entry at
    each start.
    """
    review = audit.latest(store, audit.CHECK_RESULT)
    if review is None:
        return now
    loaded = audit.latest(store, audit.CONFIG_LOADED)
    if loaded is not None and loaded[0] > review[0]:
        return now
    due = review[1] + dt.timedelta(days=1)
    return due if now < due else now
