"""What callers see of data subject requests: views, deadlines, the status summary, errors.

Kept apart from the orchestration in :mod:`connector.dsr` so the ``status`` command, the admin
API and the CLI can read requests without building a runtime. Nothing here holds an e-mail:
requests are known by their id and the subject's keyed HMAC id.
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from connector.dsr_store import (
    FINAL_STATUSES,
    DsrStore,
    ListedRequest,
    RequestRow,
    SystemRow,
    listed_position,
    listed_requests,
    listed_systems,
    on_hold,
)
from connector.errors import KlantsyncError
from connector.state import Store

__all__ = [
    "FLAG_DAYS",
    "DsrError",
    "DsrUsageError",
    "RequestView",
    "StaleRunError",
    "SubjectNotFoundError",
    "SystemView",
    "UnknownCursorError",
    "add_months",
    "deadline_shown",
    "extension_months",
    "page",
    "summary",
    "summary_in",
    "system_views",
    "utc_now",
]

#: A request this many days (or fewer) before its deadline is flagged for attention.
FLAG_DAYS = 7
#: Art. 12(3): one month, extendable by two further months.
MAX_EXTENSION_MONTHS = 2
#: Whose calendar a deadline's months are counted on: the controller's (a Dutch agency's
#: clients; the incident clock shows this zone too).
DEADLINE_ZONE = "Europe/Amsterdam"


class DsrError(KlantsyncError):
    """A data subject request cannot be carried out as asked; the CLI exits 1."""


class DsrUsageError(DsrError):
    """Bad usage (unknown request or field, an extension too long); the CLI exits 2."""


class StaleRunError(DsrError):
    """Another process changed a request while a run of it worked: the run stopped before
    writing over that (the CLI exits 1; a retry carries on from what is there now)."""


class UnknownCursorError(DsrUsageError):
    """A page was asked for after a request the store does not hold."""


class SubjectNotFoundError(DsrError):
    """An id from a system (a webhook) matches no subject the connector or the system knows."""


def utc_now() -> dt.datetime:
    """Now, UTC, aware."""
    return dt.datetime.now(dt.UTC)


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """When a period of calendar months from ``moment`` ends, on the controller's calendar
    (:data:`DEADLINE_ZONE`): at the end of the day with the same date, the day clamped to
    the month's last (31 January + 1 month = 28/29 February). Returned in ``moment``'s own
    zone.

    EU Regulation 1182/71 art. 3(2)(c), by which a GDPR period is counted: a period in
    months ends "with the expiry of the last hour" of that day. Ended at the hour of
    receipt instead, a request received at 10:00 on 5 January and answered at 15:00 on
    5 February was listed as late and overdue from 10:00 that day, on the date it was due.

    Counted on the Dutch date the request came, not the UTC one: received at 00:30 on
    1 March in the Netherlands (23:30 UTC on 28 February), it is due by the end of 1 April,
    not of 28 March.
    """
    zone = ZoneInfo(DEADLINE_ZONE)
    local = moment.astimezone(zone)
    index = local.month - 1 + months
    year, month = local.year + index // 12, index % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    # The store keeps whole seconds: the last one of the day is its end. Amsterdam changes
    # its clocks at night, never at midnight, so that second exists every day.
    end = dt.datetime(year, month, day, 23, 59, 59, tzinfo=zone)
    return end.astimezone(moment.tzinfo)


def deadline_shown(deadline: str) -> str:
    """A deadline as ``dsr list``, ``dsr show`` and ``status`` print it: its Dutch date, and
    its Dutch time where it ends before that day does.

    A month ends with its day (:func:`add_months`), but Shopify's 30 days end at the moment
    it asked, and a request an earlier version opened at the hour it came: printed as the
    date alone, such a request read as due by the end of that day while it was overdue, and
    flagged so, from that hour on."""
    local = dt.datetime.fromisoformat(deadline).astimezone(ZoneInfo(DEADLINE_ZONE))
    day = local.date().isoformat()
    return day if local.time() >= dt.time(23, 59, 59) else f"{day} {local:%H:%M}"


def extension_months(row: RequestRow) -> int:
    """How many months the deadline has been extended by so far (0, 1 or 2).

    Read from the days between receipt and deadline (a month is 28 to 32 of them, to the
    end of its last day), so a deadline counted on another calendar or to another hour (on
    UTC dates, or to the hour of receipt, by an earlier version) reads the same. Not read
    for a request a vendor's shorter term binds (Shopify's 30 days), whose gap says nothing
    of an extension: that one does not extend (``DsrService._extension_allowed``)."""
    received = dt.datetime.fromisoformat(row.received_at)
    deadline = dt.datetime.fromisoformat(row.deadline)
    months = round((deadline - received).total_seconds() / (86400 * 30.44))
    return max(0, min(MAX_EXTENSION_MONTHS, months - 1))


@dataclass(frozen=True)
class SystemView:
    """One system's state in a request."""

    system: str
    status: str
    attempts: int
    detail: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "status": self.status,
            "attempts": self.attempts,
            "detail": self.detail,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class RequestView:
    """A data subject request as callers see it; never holds an e-mail or other clear data.

    Attributes:
        status: ``open`` or ``completed``.
        days_left: whole days to the deadline (negative when overdue).
        flagged: open with :data:`FLAG_DAYS` or fewer days left (or overdue).
        overdue: open past its deadline.
        systems: per-system statuses, by system name.
    """

    id: str
    kind: str
    subject_id: str
    received_at: str
    deadline: str
    status: str
    days_left: int
    flagged: bool
    overdue: bool
    source: str
    extension_reason: str | None
    completed_at: str | None
    has_receipt: bool
    systems: tuple[SystemView, ...]

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def failed_systems(self) -> list[str]:
        return [s.system for s in self.systems if s.status not in FINAL_STATUSES]

    @property
    def deadline_date(self) -> str:
        """The deadline's date on the calendar it is counted on (:data:`DEADLINE_ZONE`).

        Not the UTC date: a month ends with its Dutch day (due by the end of 1 April, at
        21:59:59 UTC on 1 April), but a vendor's days end at the moment it asked (Shopify's
        30 days, due at 00:30 on 1 April in the Netherlands, at 22:30 UTC on 31 March, a
        date neither the operator nor the person keeps)."""
        moment = dt.datetime.fromisoformat(self.deadline)
        return moment.astimezone(ZoneInfo(DEADLINE_ZONE)).date().isoformat()

    @property
    def deadline_shown(self) -> str:
        """The deadline as the CLI prints it (:func:`deadline_shown`)."""
        return deadline_shown(self.deadline)

    @property
    def completed_date(self) -> str | None:
        """The date the request was completed on, on the deadline's calendar (``None`` while
        it is open): what shows it was answered in time."""
        if self.completed_at is None:
            return None
        moment = dt.datetime.fromisoformat(self.completed_at)
        return moment.astimezone(ZoneInfo(DEADLINE_ZONE)).date().isoformat()

    @property
    def completed_late(self) -> bool:
        """Completed after its deadline."""
        if self.completed_at is None:
            return False
        completed = dt.datetime.fromisoformat(self.completed_at)
        return completed > dt.datetime.fromisoformat(self.deadline)

    def system(self, name: str) -> SystemView:
        """The state in one system (``KeyError`` if the request does not track it)."""
        for view in self.systems:
            if view.system == name:
                return view
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json`` and the admin API."""
        return {
            "id": self.id,
            "kind": self.kind,
            "subject_id": self.subject_id,
            "received_at": self.received_at,
            "deadline": self.deadline,
            "status": self.status,
            "days_left": self.days_left,
            "flagged": self.flagged,
            "overdue": self.overdue,
            "source": self.source,
            "extension_reason": self.extension_reason,
            "completed_at": self.completed_at,
            "has_receipt": self.has_receipt,
            "systems": {s.system: s.as_dict() for s in self.systems},
        }


def make_view(
    row: RequestRow | ListedRequest, systems: Sequence[SystemView], now: dt.datetime
) -> RequestView:
    """Build the view of one request as of ``now``, from its whole row or from what a
    listing reads of it."""
    deadline = dt.datetime.fromisoformat(row.deadline)
    days_left = (deadline - now) // dt.timedelta(days=1)
    is_open = row.status == "open"
    return RequestView(
        id=row.id,
        kind=row.kind,
        subject_id=row.subject_id,
        received_at=row.received_at,
        deadline=row.deadline,
        status=row.status,
        days_left=days_left,
        flagged=is_open and deadline - now <= dt.timedelta(days=FLAG_DAYS),
        overdue=is_open and now > deadline,
        source=row.source,
        extension_reason=row.extension_reason,
        completed_at=row.completed_at,
        has_receipt=row.has_receipt,
        systems=tuple(systems),
    )


def views(
    store: Store,
    *,
    open_only: bool = False,
    now: Callable[[], dt.datetime] = utc_now,
    with_systems: bool = True,
) -> list[RequestView]:
    """Every request (or the open ones) as views, oldest first; without each system's
    part with ``with_systems=False`` (the text of ``dsr list`` shows none)."""
    dsr = DsrStore(store)
    moment = now()
    systems = dsr.systems_of_all(open_only=open_only) if with_systems else {}
    return [
        make_view(r, [SystemView(*part) for part in systems.get(r.id, ())], moment)
        for r in dsr.listing(open_only=open_only)
    ]


def page(
    db: sqlite3.Connection,
    now: dt.datetime,
    *,
    open_only: bool = False,
    overdue: bool = False,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[list[RequestView], str | None]:
    """One page of the listing, oldest first (every request with ``limit=None``), and the
    request to ask for the next page after (``None`` on the last page).

    ``overdue`` keeps the open requests past their deadline at ``now``; ``after`` starts
    after that request, in the listing's order whatever the filters (a pager of open ones
    whose last request was completed meanwhile goes on where it was).

    Raises:
        UnknownCursorError: ``after`` names no request the store holds.
    """
    position = None
    if after is not None:
        position = listed_position(db, after)
        if position is None:
            raise UnknownCursorError(f"no request {after} to list after")
    rows = listed_requests(
        db,
        open_only=open_only,
        overdue_at=now.isoformat() if overdue else None,
        after=position,
        # One more than asked: whether there is a next page, without a count of them all.
        limit=None if limit is None else limit + 1,
    )
    more = limit is not None and len(rows) > limit
    if more:
        rows = rows[:limit]
    # A page's systems by their key; a whole listing's in one read of the table (its ids,
    # thousands, would pass SQLite's limit on a statement's parameters).
    systems = (
        listed_systems(db, open_only=open_only or overdue)
        if limit is None
        else listed_systems(db, request_ids=[r.id for r in rows])
    )
    found = [make_view(r, [SystemView(*part) for part in systems.get(r.id, ())], now) for r in rows]
    if overdue:
        found = [v for v in found if v.overdue]  # as `dsr list --overdue` judges it
    return found, rows[-1].id if more else None


def system_views(rows: Sequence[SystemRow]) -> list[SystemView]:
    """The views of a request's systems read whole (``dsr show ID``)."""
    return [SystemView(s.system, s.status, s.attempts, s.detail, s.updated_at) for s in rows]


def summary(store: Store, now: dt.datetime | None = None) -> dict[str, Any]:
    """Counts of open, overdue, flagged and due-soon requests, and days left and the
    deadline (its moment, and its date on the calendar it is counted on) per open request.

    For the ``status`` command and ``/admin/status``.
    """
    return summary_in(store.db, now)


def summary_in(db: sqlite3.Connection, now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`summary` on any connection to the store (a reader's own, off the event loop)."""
    moment = now or utc_now()
    # The open requests with their systems, as views(open_only=True) reads them.
    open_views, _ = page(db, moment, open_only=True)
    return {
        "open": len(open_views),
        "overdue": sum(v.overdue for v in open_views),
        # Flagged counts the overdue ones too (each needs attention); due_soon only those
        # with time left, so "due within 7 days" does not count an overdue one twice.
        "flagged": sum(v.flagged for v in open_views),
        "due_soon": sum(v.flagged and not v.overdue for v in open_views),
        "requests": [
            {
                "id": v.id,
                "kind": v.kind,
                "deadline": v.deadline,
                "deadline_date": v.deadline_date,
                "days_left": v.days_left,
                "flagged": v.flagged,
                "overdue": v.overdue,
                "waiting_on": v.failed_systems,
                # Parts held for an earlier exemption wait on the operator, not a retry:
                # each with why (the request that exempted it, and its reason).
                "on_hold": {s.system: s.detail for s in v.systems if on_hold(s.status, s.detail)},
            }
            for v in open_views
        ],
    }
