"""What a flow run did: per-destination counts, the run's report, progress events.

The engine fills these in; the CLI prints them, the daemon turns them into metrics, the store
keeps them as run summaries and the audit log records their counts (never values).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DestinationReport", "FlowReport", "Progress", "audit_summary"]


@dataclass
class DestinationReport:
    """What happened towards one destination in one run."""

    queued: int = 0
    unchanged: int = 0
    gated: int = 0
    created: int = 0
    updated: int = 0
    #: Written where the system does not say whether the record was new (see UpsertOutcome).
    upserted: int = 0
    dead_lettered: int = 0
    retry_later: int = 0
    suppressed_at_delivery: int = 0
    withdrawn: int = 0
    #: Queued with fields to empty: the source holds them empty now, and the flow's last
    #: write gave them a value (connector/emptying.py).
    emptied: int = 0
    #: Refused for good before with this very payload: not sent again until it changes.
    still_rejected: int = 0
    #: Written for someone erased meanwhile, and erasing it again failed (see
    #: ``LateErasure.settle``): the person may still be in the system.
    not_erased: int = 0
    requests: int = 0
    fatal: str = ""
    #: Why records were left queued, as the last one deferred says (status and error code).
    deferred: str = ""
    #: What the system's outbox holds when the run ends: deferred, what delivery never read
    #: because it stopped (a 401, a stop asked for), and what earlier runs left. Counting
    #: the deferred alone said 100 where 250 were left, and ``status`` said 250.
    left_queued: int = 0

    @property
    def written(self) -> int:
        return self.created + self.updated + self.upserted

    @property
    def backlog(self) -> int:
        """Queued this run and not yet settled (written, dead-lettered or deferred)."""
        settled = self.written + self.dead_lettered + self.retry_later
        return self.queued - settled - self.suppressed_at_delivery


@dataclass
class FlowReport:
    """What one run of one flow did; printed by ``sync`` and stored as the run summary."""

    flow: str
    source: str
    dry_run: bool = False
    pulled: int = 0
    invalid: int = 0
    suppressed: int = 0
    #: People whose e-mail address changed at the source (see connector.moves).
    moved: int = 0
    withheld_fields: Counter[str] = field(default_factory=Counter)
    #: Canonical field -> values the source gave that its mapping could not read (a phone
    #: number that is none): not sent, so the destinations keep what they had. Counts only.
    unreadable_values: Counter[str] = field(default_factory=Counter)
    #: The top-level fields the source was asked for, where it can be (``None``: whole
    #: records were read; see ``Adapter``, ``ask_only_for``).
    asked_fields: list[str] | None = None
    destinations: dict[str, DestinationReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    complete: bool = False
    run_id: int | None = None

    @property
    def unasked_arrived(self) -> list[str]:
        """Withheld fields the source was not asked for: it sent them all the same (a shop
        that ignores ``_fields``), so they did leave it. Empty where it was not asked."""
        if self.asked_fields is None:
            return []
        asked = set(self.asked_fields)
        return sorted(f for f in self.withheld_fields if f.split(".", 1)[0] not in asked)

    @property
    def failed(self) -> bool:
        """True when anything needs attention: errors, dead letters or deliveries left queued."""
        return bool(self.errors) or any(
            d.dead_lettered or d.retry_later or d.not_erased for d in self.destinations.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "source": self.source,
            "dry_run": self.dry_run,
            "complete": self.complete,
            "pulled": self.pulled,
            "invalid": self.invalid,
            "suppressed": self.suppressed,
            "moved": self.moved,
            "withheld_fields": dict(sorted(self.withheld_fields.items())),
            "unreadable_values": dict(sorted(self.unreadable_values.items())),
            "asked_fields": self.asked_fields,
            "unasked_arrived": self.unasked_arrived,
            "destinations": {
                name: {**vars(d), "written": d.written} for name, d in self.destinations.items()
            },
            "errors": list(self.errors),
            "failed": self.failed,
        }


class Progress:
    """Receives progress events; the CLI's terminal bar implements this. Default: silent."""

    def pulled(self, flow: str, count: int, total: int | None) -> None:
        """``count`` more records pulled; ``total`` when the source knows it."""

    def delivered(self, flow: str, system: str, count: int) -> None:
        """``count`` more records delivered (or settled) to ``system``."""


def audit_summary(report: FlowReport) -> dict[str, Any]:
    """The counts of a run for the audit log: names and numbers, no personal data."""
    return {
        "flow": report.flow,
        "source": report.source,
        "pulled": report.pulled,
        "invalid": report.invalid,
        "suppressed": report.suppressed,
        "moved": report.moved,
        "withheld_fields": sorted(report.withheld_fields),
        "destinations": {
            name: {"written": d.written, "unchanged": d.unchanged, "dead_lettered": d.dead_lettered}
            for name, d in report.destinations.items()
        },
        "failed": report.failed,
    }
