"""The gauges ``/metrics`` serves that the daemon reads from its store: what waits in the
outbox and the job queue (and for how long), open data subject requests and breaches, the
last backup and when the keys were put under the current master key.

The daemon refreshes them at each scrape and with its housekeeping
(:meth:`connector.daemon.Daemon.refresh_gauges`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable
from typing import Any

from connector import jobs
from connector.backup import last_backup_time
from connector.config import Config
from connector.errors import KlantsyncError
from connector.metrics import Metrics
from connector.readiness import parse_ts
from connector.runtime import Runtime
from connector.state import Store

__all__ = ["DSR_KINDS", "OTHER_DSR_KIND", "master_key_since", "refresh"]

#: The kinds of data subject request the due-soon gauge counts; any other (one a newer
#: version opened) counts as :data:`OTHER_DSR_KIND`, so the series stay few whatever the
#: store holds.
DSR_KINDS = ("erase", "access", "rectify")
OTHER_DSR_KIND = "other"


def refresh(
    rt: Runtime,
    metrics: Metrics,
    clock: Callable[[], float],
    now: Callable[[], dt.datetime],
) -> None:
    """Read queue and request counts from the store into the gauges; ``clock`` and ``now``
    are the daemon's (:attr:`connector.daemon.Daemon.clock`, its ``now``).

    A store that does not answer leaves them as they were: ``/metrics`` still serves the
    request and flow counters, which say most when the store is in trouble.
    """
    try:
        # What waits to be sent: a held row (a former address's write kept for an erasure
        # to read) never is, and counted it kept an alert on the queue firing for good.
        waiting = sum(rt.store.outbox_counts().values())
        values: dict[str, Any] = {"outbox": waiting, "jobs": jobs.pending_counts(rt.store)}
        values.update(_job_ages(rt.store, clock))
        # A request or breach table another version left unreadable leaves those gauges
        # alone; a fault of klantsync's own is raised, not kept out of sight.
        with contextlib.suppress(KlantsyncError):
            from connector.dsr import summary

            counts = summary(rt.store, now=now())
            values["dsr_open"] = counts.get("open", 0)
            values["dsr_overdue"] = counts.get("overdue", 0)
            values["dsr_due_soon"] = _due_soon_by_kind(counts.get("requests", []))
        with contextlib.suppress(KlantsyncError):
            from connector.incidents import open_summary

            breaches = open_summary(rt.store, now=now())
            values["incidents_open"] = breaches["open"]
            values["incidents_overdue"] = breaches["overdue"]
        since = master_key_since(rt.store, rt.config)
        values["last_backup"] = last_backup_time(rt.store) or 0.0
    except sqlite3.Error:
        return
    if since is not None:
        values["master_key_since"] = since
    metrics.set_gauges(**values)


def _job_ages(store: Store, clock: Callable[[], float]) -> dict[str, float]:
    """Seconds the oldest queued job has waited and the longest running one has run (0
    for none), on the daemon's clock: a worker stuck on a hanging call leaves both to
    grow, where the job counts only showed a queue that a busy hour shows too."""
    queued, running = jobs.pending_since(store)
    now = clock()

    def age(since: str | None) -> float:
        moment = parse_ts(since)
        # A clock set back since the job's time makes no negative age.
        return max(0.0, now - moment) if moment is not None else 0.0

    return {"oldest_queued": age(queued), "longest_running": age(running)}


def master_key_since(store: Store, config: Config) -> float | None:
    """Unix time the store's keys were put under the current master key, if bound."""
    from connector.keyset import key_facts

    keys = key_facts(store, config)
    since = keys.get("rotated_at") or keys.get("created_at")
    return dt.datetime.fromisoformat(since).timestamp() if isinstance(since, str) else None


def _due_soon_by_kind(requests: list[dict[str, Any]]) -> dict[str, int]:
    """Open requests (as :func:`connector.dsr_views.summary` lists them) due within its
    flag days and not yet overdue, by kind. Every kind is there, 0 if none, so a request
    answered (or gone overdue, which its own gauge counts) reads 0, not the count last seen.
    """
    counts = dict.fromkeys((*DSR_KINDS, OTHER_DSR_KIND), 0)
    for request in requests:
        if request["flagged"] and not request["overdue"]:
            kind = request["kind"] if request["kind"] in DSR_KINDS else OTHER_DSR_KIND
            counts[kind] += 1
    return counts
