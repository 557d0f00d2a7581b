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
"""

from __future__ import annotations

import logging
from typing import Final

from connector import audit
from connector.model import normalise_email
from connector.runtime import Runtime

__all__ = ["MERGE_LEARNED", "MERGE_NOT_LEARNED", "learn_merge"]

#: Audit kind of a subject now known by the record a merge kept.
MERGE_LEARNED: Final = "identity.merged"
#: Audit kind of a merge whose kept record was not taken for the subjects' (see ``why``).
MERGE_NOT_LEARNED: Final = "identity.merge_not_learned"

NOT_LIVE: Final = "no live record under the kept id"
NOT_THEIR_ADDRESS: Final = "the kept record does not hold the subject's address"
ANOTHER_S: Final = "the kept record is known as another subject's"

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
