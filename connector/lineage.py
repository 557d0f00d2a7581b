"""Whether a backup is one of this store: what a restore checks before it replaces anything.

The master key does not tell: two stores in one state folder read the folder's one key
file, and a backup of the one opened as well at the other's ``store.path``, its customers,
cursors and identity map taking the other's place. Two marks do:

- the store's id (schema 23, ``store_identity``): a random id made with the store, carried
  in every backup of it and kept by a restore, so every backup of a store, before or after
  restores, holds the id of the store it is put back into;
- for a backup taken before the id existed, the audit chain: a chain is only ever appended
  to, and a restored store goes on from its backup's last entry, so a store and every backup
  of it hold the same entry at the first position both still hold (retention purges the
  oldest entries). Where they hold none in common (a backup older than the audit trail the
  store keeps), nothing tells, and the backup is taken as the store's, as before the id.
"""

from __future__ import annotations

import sqlite3

__all__ = ["chains_meet", "store_id"]


def store_id(db: sqlite3.Connection) -> str | None:
    """The store's id; None for a store (or a backup) from before schema 23, or one whose
    id cannot be read."""
    try:
        row = db.execute("SELECT store_id FROM store_identity WHERE id=1").fetchone()
    except sqlite3.Error:  # no such table (an earlier schema), or a damaged page
        return None
    return None if row is None else str(row[0])


def chains_meet(ours: sqlite3.Connection, theirs: sqlite3.Connection) -> bool | None:
    """Whether two audit chains are of one store: the same entry at the first position both
    hold. None when they hold no position in common, or one's entry there cannot be read."""
    first, second = _ends(ours), _ends(theirs)
    if first is None or second is None:
        return None
    # Position 0 is a genesis (all zeros in every chain from before the MACs): entry 1,
    # which covers it, is the first that tells one store's chain from another's.
    seq = max(first[0], second[0], 1)
    if seq > min(first[2], second[2]):
        return None
    mine, other = _hash_at(ours, first, seq), _hash_at(theirs, second, seq)
    if mine is None or other is None:
        return None
    return mine == other


def _ends(db: sqlite3.Connection) -> tuple[int, str, int] | None:
    """(anchor seq, anchor hash, head seq) of a chain; None if its row cannot be read."""
    try:
        row = db.execute("SELECT anchor_seq, anchor_hash, head_seq FROM audit_chain WHERE id=1")
        found = row.fetchone()
    except sqlite3.Error:
        return None
    return None if found is None else (int(found[0]), str(found[1]), int(found[2]))


def _hash_at(db: sqlite3.Connection, ends: tuple[int, str, int], seq: int) -> str | None:
    """The hash of entry ``seq``: the anchor's, where the chain was purged up to it."""
    if seq == ends[0]:
        return ends[1]
    try:
        row = db.execute("SELECT hash FROM audit WHERE seq=?", (seq,)).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])
