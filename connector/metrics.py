"""Prometheus metrics of one connector: records by outcome, requests, latency, rate limits,
requests of data subjects. Names and labels carry systems and outcomes only, never personal data.

prometheus-client gives the exposition format and histogram maths that scrapers expect; a
registry per instance keeps tests independent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from connector import __version__
from connector.engine import FlowReport

__all__ = ["FLOW_OUTCOMES", "WEBHOOK_OUTCOMES", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The outcomes ``klantsync_flow_runs`` counts.
FLOW_OUTCOMES = ("ok", "failed")
#: The outcomes ``klantsync_webhooks`` counts (:mod:`connector.httpapp` labels a delivery
#: with one of these): the answer's status, or what cut the delivery short.
WEBHOOK_OUTCOMES = ("200", "401", "404", "405", "415", "503", "too_large", "incomplete")


class Metrics:
    """The connector's metrics, fed by flow reports, HTTP observations and the store."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pulled = Counter(
            "klantsync_records_pulled", "Records pulled from a source", ["system"], registry=r
        )
        self.written = Counter(
            "klantsync_records_written",
            "Records created, updated or upserted",
            ["system"],
            registry=r,
        )
        self.unchanged = Counter(
            "klantsync_records_unchanged", "Records skipped as unchanged", ["system"], registry=r
        )
        self.withheld = Counter(
            "klantsync_fields_withheld",
            "Source field values withheld by minimisation (not in any mapping)",
            ["system"],
            registry=r,
        )
        self.gated = Counter(
            "klantsync_records_gated",
            "Records held back by a consent gate",
            ["system"],
            registry=r,
        )
        self.suppressed = Counter(
            "klantsync_records_suppressed",
            "Records of erased subjects stopped",
            ["system"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "klantsync_records_dead_lettered", "Records rejected for good", ["system"], registry=r
        )
        self.emptied = Counter(
            "klantsync_records_emptied",
            "Records queued with fields to empty (held empty at the source now)",
            ["system"],
            registry=r,
        )
        self.http_requests = Counter(
            "klantsync_http_requests",
            "Calls to external systems",
            ["system", "status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "klantsync_http_rate_limited",
            "Answers from external systems saying to slow down (a 429 or the vendor's own)",
            ["system"],
            registry=r,
        )
        self.latency = Histogram(
            "klantsync_http_request_seconds",
            "Latency of calls to external systems",
            ["system"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.flow_runs = Counter(
            "klantsync_flow_runs", "Flow runs by outcome", ["flow", "outcome"], registry=r
        )
        self.flow_runs_skipped = Counter(
            "klantsync_flow_runs_skipped",
            "Scheduled times of a flow skipped because its previous run was still going",
            ["flow"],
            registry=r,
        )
        self.last_success = Gauge(
            "klantsync_flow_last_success_timestamp",
            "Unix time of the flow's last successful run",
            ["flow"],
            registry=r,
        )
        self.dsr_open = Gauge("klantsync_dsr_open", "Open data subject requests", registry=r)
        self.dsr_overdue = Gauge(
            "klantsync_dsr_overdue", "Data subject requests past their deadline", registry=r
        )
        self.dsr_due_soon = Gauge(
            "klantsync_dsr_due_soon",
            "Open data subject requests due within 7 days and not yet overdue, by kind",
            ["kind"],
            registry=r,
        )
        self.incidents_open = Gauge(
            "klantsync_incidents_open", "Breach incidents not yet closed", registry=r
        )
        self.incidents_overdue = Gauge(
            "klantsync_incidents_overdue",
            "Breach incidents open past their 72 hours (Art. 33)",
            registry=r,
        )
        self.outbox = Gauge("klantsync_outbox_queued", "Payloads waiting", registry=r)
        self.jobs = Gauge(
            "klantsync_jobs",
            "Jobs (resyncs, webhook deliveries, requests) queued or running, by kind and state",
            ["kind", "state"],
            registry=r,
        )
        self.oldest_queued = Gauge(
            "klantsync_jobs_oldest_queued_seconds",
            "Seconds the oldest queued job has waited to be taken (0 when none waits)",
            registry=r,
        )
        self.longest_running = Gauge(
            "klantsync_jobs_longest_running_seconds",
            "Seconds the job running longest has run (0 when none runs)",
            registry=r,
        )
        self.master_key_since = Gauge(
            "klantsync_master_key_since_timestamp",
            "Unix time the store's keys were last put under a master key (made or rotated)",
            registry=r,
        )
        self.last_backup = Gauge(
            "klantsync_last_backup_timestamp",
            "Unix time of the last backup of the store (klantsync backup); 0 if none recorded",
            registry=r,
        )
        # The version as a label on a constant 1, Prometheus's usual way: a dashboard shows
        # which release each client's instance runs, and an upgrade is a change of series.
        self.build_info = Gauge(
            "klantsync_build_info",
            "The klantsync version this daemon runs, as its label (always 1)",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self.webhooks = Counter(
            "klantsync_webhooks",
            "Webhook deliveries by outcome",
            ["system", "outcome"],
            registry=r,
        )

    def declare_flows(self, flows: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """Start at 0 the counter series the flows make known: each flow's runs by outcome,
        its source's and destinations' record counters and their 429s.

        A series that first appears at 1 has no earlier sample: Prometheus's ``increase()``
        and ``rate()`` read no change there, so an alert on them missed the first failed run,
        dead letter or 429 after each start.

        Args:
            flows: ``(flow, source, destinations)`` per configured flow.
        """
        for flow, source, destinations in flows:
            for outcome in FLOW_OUTCOMES:
                self.flow_runs.labels(flow, outcome)
            self.flow_runs_skipped.labels(flow)
            for counter in (self.pulled, self.withheld, self.suppressed, self.rate_limited):
                counter.labels(source)
            for name in destinations:
                for counter in (
                    self.written,
                    self.unchanged,
                    self.gated,
                    self.suppressed,
                    self.dead_lettered,
                    self.emptied,
                    self.rate_limited,
                ):
                    counter.labels(name)

    def declare_webhooks(self, systems: Iterable[str]) -> None:
        """Start at 0 each of ``systems``' deliveries by outcome (``WEBHOOK_OUTCOMES``): the
        first refused delivery after a start is an increase too (see :meth:`declare_flows`)."""
        for system in systems:
            for outcome in WEBHOOK_OUTCOMES:
                self.webhooks.labels(system, outcome)

    def observe_request(self, system: str, status: int | None, seconds: float) -> None:
        """One call to an external system (``status`` ``None`` for transport failures)."""
        self.http_requests.labels(system, str(status) if status is not None else "error").inc()
        self.latency.labels(system).observe(seconds)

    def observe_rate_limited(self, system: str) -> None:
        """One answer of ``system`` telling klantsync to slow down (a 429, or the vendor's
        own way of saying so: :meth:`connector.http.SystemClient.note_rate_limited`)."""
        self.rate_limited.labels(system).inc()

    def observe_flow(self, report: FlowReport, finished_at: float, *, run: bool = True) -> None:
        """Counters from one flow run; ``run=False`` for a targeted sync (a webhook's, a
        resync by e-mail), whose records count but which is no run of the flow: its success
        says nothing of the pull, and must not hide a flow whose every run fails."""
        if report.dry_run:
            return
        self.pulled.labels(report.source).inc(report.pulled)
        self.withheld.labels(report.source).inc(sum(report.withheld_fields.values()))
        self.suppressed.labels(report.source).inc(report.suppressed)
        for name, dest in report.destinations.items():
            self.written.labels(name).inc(dest.written)
            self.unchanged.labels(name).inc(dest.unchanged)
            self.gated.labels(name).inc(dest.gated)
            self.dead_lettered.labels(name).inc(dest.dead_lettered)
            self.emptied.labels(name).inc(dest.emptied)
            self.suppressed.labels(name).inc(dest.suppressed_at_delivery)
        if not run:
            return
        outcome = "failed" if report.failed else "ok"
        self.flow_runs.labels(report.flow, outcome).inc()
        if not report.failed:
            self.last_success.labels(report.flow).set(finished_at)

    def observe_failed_run(self, flow: str) -> None:
        """A flow run that ended in an exception (the store failing under it, say)."""
        self.flow_runs.labels(flow, "failed").inc()

    def set_gauges(self, **values: Any) -> None:
        """Refresh gauges read from the store (outbox size, jobs queued and running by kind
        and state, how long the oldest queued job waited and the longest running one ran,
        open, overdue and due-soon requests, open and overdue breach incidents,
        when the master key was set, when the last backup was taken)."""
        if "outbox" in values:
            self.outbox.set(values["outbox"])
        if "jobs" in values:
            for (kind, state), count in values["jobs"].items():
                self.jobs.labels(kind, state).set(count)
        if "oldest_queued" in values:
            self.oldest_queued.set(values["oldest_queued"])
        if "longest_running" in values:
            self.longest_running.set(values["longest_running"])
        if "dsr_open" in values:
            self.dsr_open.set(values["dsr_open"])
        if "dsr_overdue" in values:
            self.dsr_overdue.set(values["dsr_overdue"])
        if "dsr_due_soon" in values:
            for kind, count in values["dsr_due_soon"].items():
                self.dsr_due_soon.labels(kind).set(count)
        if "incidents_open" in values:
            self.incidents_open.set(values["incidents_open"])
        if "incidents_overdue" in values:
            self.incidents_overdue.set(values["incidents_overdue"])
        if "master_key_since" in values:
            self.master_key_since.set(values["master_key_since"])
        if "last_backup" in values:
            self.last_backup.set(values["last_backup"])

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))
