"""Records merged in a system: the identity map learns the record a merge kept.

A salesperson who merges the customer's record into another one (Pipedrive's persons) leaves
the identity map naming a record that is gone. The next sync then looked the customer up by
address, and where the address had become a second one beside the kept record's own primary
address, it could not tell that record from a housemate's: it added a new one, and an
erasure or access request left the kept record as another person's. A system that announces
the merge (a ``merged`` webhook event naming both ids) lets the connector follow it here.

The event is not taken on its word: the kept record is read, and a subject known by the
merged-away id is moved to it only where it holds the subject's own address among its
e-mail addresses (compared by keyed id: the connector keeps no address). A kept record the
identity map knows as another subject's is left to that subject: a merge of two customers'
records must not make one the other's. Every outcome leaves an audit entry of ids alone.

A kept record that cannot be read for a while (429s or 5xx past the client's retries) is
asked again by a new job at the end of the queue, up to :data:`MERGE_READS` reads in all:
failed at once, the merge was never learned, and the delivery is not sent twice.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from connector import audit, jobs
from connector.errors import KlantsyncError, RetryableError
from connector.model import normalise_email
from connector.runtime import Runtime

__all__ = ["MERGE_LEARNED", "MERGE_NOT_LEARNED", "MERGE_READS", "follow_merge", "learn_merge"]

#: Audit kind of a subject now known by the record a merge kept.
MERGE_LEARNED: Final = "identity.merged"
#: Audit kind of a merge whose kept record was not taken for the subjects' (see ``why``).
MERGE_NOT_LEARNED: Final = "identity.merge_not_learned"

NOT_LIVE: Final = "no live record under the kept id"
NOT_THEIR_ADDRESS: Final = "the kept record does not hold the subject's address"
ANOTHER_S: Final = "the kept record is known as another subject's"
UNREAD: Final = "the kept record could not be read"

#: How many jobs in all read the kept record of one merge before it is left not learned.
MERGE_READS: Final = 5

log = logging.getLogger("klantsync.merges")


async def learn_merge(rt: Runtime, system_name: str, former: str, kept: str | None) -> int:
    """Move the subjects ``system_name`` knows by ``former`` to ``kept``, where the kept
    record holds their address and is nobody else's; returns how many were moved.

    A system whose adapter cannot read a record's addresses (no ``held_addresses``), or an
    id nobody is known by, learns nothing and asks the system nothing.
    """
    system = rt.systems.get(system_name)
    read = getattr(system.adapter, "held_addresses", None) if system is not None else None
    if read is None or not former or not kept or former == kept:
        return 0
    ids = rt.engine.ids
    stored_former, stored_kept = ids.to_store(system_name, former), ids.to_store(system_name, kept)
    if not rt.store.subjects_for_external(system_name, stored_former):
        return 0
    addresses: list[str] | None = await read(kept)
    held = {rt.keyring.subject_id(a) for a in map(normalise_email, addresses or ()) if a}
    ids_only = {"system": system_name, "from": stored_former, "to": stored_kept}
    with rt.store.transaction():
        # Read again under the write lock: a sync may have written them meanwhile.
        known = rt.store.subjects_for_external(system_name, stored_former)
        others = set(rt.store.subjects_for_external(system_name, stored_kept)) - set(known)
        learned = [sid for sid in known if sid in held and not others and addresses is not None]
        moved = rt.store.move_identities(system_name, learned, stored_former, stored_kept)
        for sid in moved:
            audit.append(rt.store, MERGE_LEARNED, ids_only, subject_id=sid)
        for sid in known:
            if sid in moved:
                continue
            why = NOT_LIVE if addresses is None else ANOTHER_S if others else NOT_THEIR_ADDRESS
            audit.append(rt.store, MERGE_NOT_LEARNED, {**ids_only, "why": why}, subject_id=sid)
    log.info(
        "merge followed",
        extra={"system": system_name, "learned": len(moved), "left": len(known) - len(moved)},
    )
    return len(moved)


async def follow_merge(rt: Runtime, params: dict[str, Any]) -> dict[str, Any]:
    """The ``merged`` webhook job: :func:`learn_merge`, asked again by a new job where the
    kept record could not be read for now, and left not learned after :data:`MERGE_READS`.

    Raises:
        KlantsyncError: the last read failed too (the merge is audited as not learned).
    """
    system, kept = str(params["system"]), params.get("merged_into")
    former = str(params.get("external_id") or "")
    read = int(params.get("attempt") or 1)
    try:
        return {"learned": await learn_merge(rt, system, former, kept)}
    except RetryableError as exc:
        if read < MERGE_READS:
            # At the end of the queue, not in its place: the jobs after it are not held up
            # while the system is down, and the client's own retries wait between reads.
            again = jobs.enqueue(rt.store, rt.keyring, "webhook", {**params, "attempt": read + 1})
            log.info("merge read again later", extra={"system": system, "job": again})
            return {"learned": 0, "read_again_by": again}
        _not_read(rt, system, former, str(kept or ""))
        raise KlantsyncError(f"merge not learned after {read} reads: {exc}") from exc


def _not_read(rt: Runtime, system_name: str, former: str, kept: str) -> None:
    """Audit, by ids, each subject known by ``former`` as left where it was."""
    ids = rt.engine.ids
    stored_former, stored_kept = ids.to_store(system_name, former), ids.to_store(system_name, kept)
    data = {"system": system_name, "from": stored_former, "to": stored_kept, "why": UNREAD}
    with rt.store.transaction():
        for sid in rt.store.subjects_for_external(system_name, stored_former):
            audit.append(rt.store, MERGE_NOT_LEARNED, data, subject_id=sid)
