"""A targeted sync: some people of a source system, fetched and run through its flows.

Used by webhooks that name changed customers, and by ``resync --email``. The source is asked
for each person's current record (a webhook body may be older than a later change), and the
records then take the same path as a pulled page, cursor untouched. Many webhook deliveries
are handled as one batch: one engine run and one delivery batch for all of them.

A pull reads everyone changed since its cursor, so one that reads someone under an address
another customer left (Bert moved away, Anna signed up under his former address) reads Bert
too, and the move is seen (``connector/moves.py``). A targeted sync fetches only whom it was
told of, in the order the deliveries came, which the vendor does not promise (WooCommerce),
nor that a failed one comes again: Anna fetched alone, her record was taken for Bert's (his
subject, his ids everywhere). So the record the source's identity map holds under a fetched
person's subject is fetched beside them, by its id (:func:`_held_before`), and the move is
seen as a pull sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
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
    # notes, 3 + N calls, a CRM's every property it defines (a date of birth): personal
    # data no flow sends anywhere, to be thrown away here.
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
    # One fetch more per person whose address the source knows under another record: that
    # record first, as a pull (id order) reads the earlier customer first. One the source no
    # longer holds is found by nobody, and the batch goes on as it is (no move to see).
    held = _held_before(rt, system, batch)
    if held:
        before = await asyncio.gather(*(fetch(ext, "") for ext in held))
        batch = [*(record for group in before for record in group), *batch]
    return [await rt.engine.ingest(flow.name, batch, full=full) for flow in flows]


def _held_before(rt: Runtime, system: str, batch: Sequence[Mapping[str, Any]]) -> list[str]:
    """The source's ids of records the identity map holds under the subject of a record of
    ``batch`` other than that record, and not in ``batch`` itself: someone who held the
    address before (and may have left it since) whom only a pull would read beside it."""
    mapping = rt.systems[system].mapping
    record_ids = {mapping.record_id(record) for record in batch}
    by_subject: dict[str, str | None] = {}
    for record in batch:
        email = mapping.inbound(record).email
        if email is not None and "@" in email:
            by_subject[rt.keyring.subject_id(normalise_email(email))] = mapping.record_id(record)
    known = rt.store.external_ids(system, list(by_subject))
    return sorted(
        {ext for sid, ext in known.items() if ext != by_subject[sid] and ext not in record_ids}
    )
