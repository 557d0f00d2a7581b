"""A targeted sync: one person of a source system, fetched and run through its flows.

Used by a webhook that names a changed customer, and by ``resync --email``. The source is
asked for the person's current record (never trusting a webhook body for content), which then
takes the same path as a pulled page, cursor untouched.
"""

from __future__ import annotations

from connector.adapter import Subject
from connector.engine import FlowReport
from connector.model import normalise_email
from connector.runtime import Runtime

__all__ = ["sync_subject"]


async def sync_subject(
    rt: Runtime, system: str, *, external_id: str | None = None, email: str | None = None
) -> list[FlowReport]:
    """Fetch one person from ``system`` and run them through every flow it is the source of."""
    flows = [flow for flow in rt.config.flows if flow.source == system]
    if not flows:
        return []
    subject = Subject(email=normalise_email(email or ""), external_id=external_id)
    found = await rt.systems[system].adapter.find(subject)
    # find() returns everything held for the subject (e.g. orders); only people are synced.
    records = [record for record in found if record.get("type", "customer") != "order"]
    return [await rt.engine.ingest(flow.name, records) for flow in flows]
