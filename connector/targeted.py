"""A targeted sync: some people of a source system, fetched and run through its flows.

Used by webhooks that name changed customers, and by ``resync --email``. The source is asked
for each person's current record (a webhook body may be older than a later change), and the
records then take the same path as a pulled page, cursor untouched. Many webhook deliveries
are handled as one batch: one engine run and one delivery batch for all of them.

A pull reads everyone changed since its cursor, so one that reads someone under an address
another customer left (Bert moved away, Anna signed up under his former address) reads Bert
too. A targeted sync fetches only whom it was told of, in the order the deliveries came,
which the vendor does not promise (WooCommerce), nor that a failed one comes again. Both take
their records through ``PageTaker.take``, which reads the record the source's identity map
holds under such an address from the source too, by its id, so his move is seen either way
(``connector/moves.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from connector.adapter import Subject
from connector.engine import FlowReport, source_people
from connector.model import normalise_email
from connector.runtime import Runtime

__all__ = ["sync_subject", "sync_subjects"]


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
    # Lookups in flight at once: no more than the system's calls in flight at once
    # (``max_concurrency``), which an operator lowers for a host whose WAF refuses more.
    slots = asyncio.Semaphore(max(1, rt.systems[system].limits.max_concurrency))

    async def fetch(external_id: str | None, email: str) -> list[dict[str, Any]]:
        async with slots:
            return await source_people(
                rt.systems[system], Subject(email=email, external_id=external_id)
            )

    fetched = await asyncio.gather(*(fetch(ext, mail) for ext, mail in unique))
    batch = [record for group in fetched for record in group]
    return [await rt.engine.ingest(flow.name, batch, full=full) for flow in flows]
