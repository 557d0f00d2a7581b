"""What ``/readyz`` says of the store and of each flow, in fixed texts.

The daemon (:meth:`connector.daemon.Daemon.readiness`) puts these checks together with its
own: the job worker's and a stop asked for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.config import FlowSettings
from connector.state import Store
from connector.storehealth import file_identity, intact, write_once

__all__ = [
    "READY_STARTING",
    "READY_SUCCEEDED",
    "STORE_DAMAGED",
    "STORE_GONE",
    "UNREADY_FAILING",
    "UNREADY_NOT_RUN",
    "UNREADY_NO_STORE",
    "UNREADY_STALE",
    "UNREADY_STOPPING",
    "UNREADY_WORKER_ENDED",
    "WORKER_RUNS",
    "RunsSinceStart",
    "flow_checks",
    "parse_ts",
    "store_check",
]

# Why a flow is (not) ready, as ``/readyz`` says it: fixed texts, so the probe's body never
# carries an error message (which names paths and statuses) or anything personal.
READY_SUCCEEDED = "succeeded within twice its interval"
READY_STARTING = "no run finished yet since the daemon started"
UNREADY_STALE = "no success within twice its interval"
UNREADY_FAILING = "never succeeded: every run since the daemon started failed"
UNREADY_NOT_RUN = "never succeeded, and no run within twice its interval of the daemon's start"
UNREADY_NO_STORE = "unknown: the store did not answer"
#: The job worker's check once its task ended while the daemon runs (followed by the type of
#: what ended it): nothing runs the queue any more, while webhooks and admin calls fill it.
UNREADY_WORKER_ENDED = (
    "the job worker ended on an error it does not catch: queued jobs no longer run; "
    "restart the daemon"
)
#: The daemon's check once a stop was asked for (SIGTERM, SIGINT): the listeners stay up
#: while the in-flight batch finishes, but no flow run or job starts any more.
UNREADY_STOPPING = (
    "stopping: no flow run or job starts any more; what is queued waits for the next start"
)
#: The store's check when a store that failed is found damaged (``PRAGMA quick_check``).
STORE_DAMAGED = (
    "the store is damaged (SQLite's quick_check finds faults in it): stop every klantsync "
    "on it and restore it from a backup"
)
#: The store's check when the file the daemon has open is no longer the one at store.path.
STORE_GONE = (
    "the store file is no longer at store.path (removed, moved or replaced): what the daemon "
    "writes is lost when it stops, and every command opens another store; put the file back "
    "(or restore a backup) and restart the daemon"
)
#: The job worker's check while its task runs.
WORKER_RUNS = "ok"


def parse_ts(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text).timestamp()


@dataclass
class RunsSinceStart:
    """What one flow's scheduled (or resync) runs did since this daemon started."""

    finished: int = 0
    failed: int = 0


class _NotReady(Exception):
    """The store answers but is not ready, in a fixed text: it refused a write and no write
    has been tried since (its failure's type), or it is no longer the file at its path."""


def store_check(
    store: Store,
    flows: Iterable[FlowSettings],
    opened: tuple[int, int] | None,
    failure: str | None,
) -> tuple[str, dict[str, str | None]]:
    """The store's check (``"ok"`` when it answers) and each flow's last success in it.

    ``opened`` is the store file's identity as the daemon opened it
    (:func:`connector.storehealth.file_identity`); ``failure`` the type of the store failure
    met since the last write that succeeded, if any: the store must then take a write again
    (:func:`connector.storehealth.write_once`), as reads alone pass on a store that refuses
    every write. ``"ok"`` with a ``failure`` means it did: the failure is over.
    """
    successes: dict[str, str | None] = {}
    try:
        # Read here, where a failure is caught: "SELECT 1" reads no page of the file, so
        # a store whose pages cannot be read passed it, and the flows' reads below then
        # failed the probe itself (a bare 500 instead of a 503 saying why).
        store.db.execute("SELECT 1").fetchone()
        if file_identity(store.path) != opened:
            raise _NotReady(STORE_GONE)
        successes = {f.name: store.last_success(f.name) for f in flows}
        if failure is not None:
            # A full disk, a store it may not write, a lock held by another process, a
            # damaged page: SELECTs still answer while every delivery is refused 503.
            if not intact(store):
                raise _NotReady(STORE_DAMAGED)
            if not write_once(store):
                raise _NotReady(failure)
        return "ok", successes
    except _NotReady as exc:
        return str(exc), successes
    except Exception as exc:  # any store failure means not ready
        return type(exc).__name__, successes


def flow_checks(
    flows: Iterable[FlowSettings],
    successes: Mapping[str, str | None] | None,
    runs_since_start: Mapping[str, RunsSinceStart],
    started_at: float,
    now: float,
) -> tuple[bool, dict[str, Any]]:
    """Whether every flow succeeded since the run before its latest due one (twice its
    interval; a cron's on its own times), and each flow's check saying why.

    ``successes`` is each flow's last success as the store answered it (:func:`store_check`);
    ``None`` where the store did not answer: each flow then says so, not ready.
    """
    checks: dict[str, Any] = {}
    ready = True
    for flow in flows:
        schedule = flow.parsed_schedule
        allowed = schedule.allowed_since(started_at)
        runs = runs_since_start[flow.name]
        if successes is None:
            # The flows' successes are in the store: without it, the probe still answers
            # (503, saying why) instead of failing itself.
            checks[f"flow:{flow.name}"] = {
                "last_success": None,
                "allowed_seconds": allowed,
                "runs_since_start": runs.finished,
                "failed_since_start": runs.failed,
                "ok": False,
                "reason": UNREADY_NO_STORE,
            }
            ready = False
            continue
        last = parse_ts(successes[flow.name])
        if last is not None:
            allowed = schedule.allowed_since(last)
            fresh = now - last <= allowed
            reason = READY_SUCCEEDED if fresh else UNREADY_STALE
        elif runs.finished:
            # Never succeeded, so every run that finished failed.
            fresh, reason = False, UNREADY_FAILING
        else:
            fresh = now - started_at <= allowed
            reason = READY_STARTING if fresh else UNREADY_NOT_RUN
        checks[f"flow:{flow.name}"] = {
            "last_success": last,
            "allowed_seconds": allowed,
            "runs_since_start": runs.finished,
            "failed_since_start": runs.failed,
            "ok": fresh,
            "reason": reason,
        }
        ready = ready and fresh
    return ready, checks
