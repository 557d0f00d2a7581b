"""A targeted sync: some people of a source system, fetched and run through its flows.

Used by webhooks that name changed customers, and by ``resync --email``. The source is asked
for each person's current record (a webhook body may be older than a later change), and the
records then take the same path as a pulled page, cursor untouched. Many webhook deliveries
are handled as one batch: one engine run and one delivery batch for all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from connector.adapter import Subject
from connector.engine import FlowReport
from connector.model import is_archived, normalise_email
from connector.runtime import Runtime

__all__ = ["sync_subject", "sync_subjects"]

#: Lookups in flight at once towards the source during a batch.
FETCH_CONCURRENCY = 8


async def sync_subject(
    rt: Runtime,
    system: str,
    *,
    external_id: str | None = None,
    email: str | None = None,
    full: bool = False,
) -> list[FlowReport]:
    """Fetch one person from ``system`` and run them through every flow it is the source of."""
    return await sync_subjects(rt, system, [(external_id, email)], full=full)


async def sync_subjects(
    rt: Runtime,
    system: str,
    subjects: Iterable[tuple[str | None, str | None]],
    *,
    full: bool = False,
) -> list[FlowReport]:
    """Run people of ``system`` through its flows at once.

    Args:
        subjects: ``(external_id, email)`` of people to fetch from the source first.
        full: offer again what a system refused for good (``resync --email E --full``).
    """
    flows = [flow for flow in rt.config.flows if flow.source == system]
    unique = list(dict.fromkeys((ext, normalise_email(mail or "")) for ext, mail in subjects))
    if not flows or not unique:
        return []
    adapter = rt.systems[system].adapter
    slots = asyncio.Semaphore(FETCH_CONCURRENCY)

    # The person records alone, where the adapter can read them apart (find_people):
    # find() is the access and erasure lookup, and a shop's reads every order and its
    # notes, 3 + N calls and personal data no flow sends anywhere, to be thrown away here.
    lookup = getattr(adapter, "find_people", None) or adapter.find

    async def fetch(external_id: str | None, email: str) -> list[dict[str, Any]]:
        async with slots:
            found = await lookup(Subject(email=email, external_id=external_id))
        # find() returns everything held for the subject (e.g. orders, archived contacts);
        # only live people sync, as a pull would list them.
        # Nor anyone the pull leaves out by the system's settings (WooCommerce's role = a
        # shop manager when only customers are synced): a webhook about them, or a resync of
        # their address, carried them past the data minimisation the pull keeps.
        in_pull = getattr(adapter, "pull_includes", None)
        return [
            record
            for record in found
            if record.get("type", "customer") != "order"
            and not is_archived(record)
            and (in_pull is None or in_pull(record))
        ]

    fetched = await asyncio.gather(*(fetch(ext, mail) for ext, mail in unique))
    batch = [record for group in fetched for record in group]
    return [await rt.engine.ingest(flow.name, batch, full=full) for flow in flows]
