"""The audit entries a retention sweep may purge: of the store's own chain, and of the trail
a store a restore replaced keeps (:mod:`connector.retention_replaced`).

Only a prefix of a chain may go, and only once verified (:func:`verified_prefix`): purging a
tampered prefix would destroy the evidence. :func:`stamp` writes a sweep's cut-offs in the
store's one timestamp format, the text an entry's ``ts`` is compared with.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from connector import audit
from connector.state import Store

__all__ = ["audit_prefix", "purge_audit", "stamp", "verified_prefix"]


def stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def audit_prefix(db: sqlite3.Connection, cutoff: str) -> tuple[int, int]:
    """The audit entries past ``cutoff`` that may go: the last one's seq, and how many
    ((0, 0) for none).

    Only a prefix of the chain may go: everything before the first entry young enough to
    keep. An entry older than the cutoff but after a younger one (a clock step back) stays.
    """
    first_kept = db.execute("SELECT MIN(seq) FROM audit WHERE ts >= ?", (cutoff,)).fetchone()
    if first_kept[0] is None:
        last = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    else:
        last = int(first_kept[0]) - 1
    if last is None:
        return 0, 0
    count = int(db.execute("SELECT COUNT(*) FROM audit WHERE seq <= ?", (last,)).fetchone()[0])
    return (int(last), count) if count else (0, 0)


def verified_prefix(store: Store, cutoff: str, errors: list[str]) -> tuple[int, int]:
    """The audit entries past ``cutoff`` that may go (:func:`audit_prefix`), verified:
    the last one's seq and how many; (0, 0) where none may, and why in ``errors``."""
    last, count = audit_prefix(store.db, cutoff)
    if count == 0:
        return 0, 0
    # Purging a tampered prefix would destroy the evidence: verify what is about to go first.
    # A dry run verifies too (it only reads), so it says what the real run would do.
    result = audit.verify(store, upto=last)
    if not result.ok:
        errors.append(
            f"audit entries not purged: entry {result.first_bad}: {result.problem} "
            "(run `klantsync audit verify`)"
        )
        return 0, 0
    return last, count


def purge_audit(store: Store, cutoff: str, errors: list[str]) -> int:
    """Purge the audit entries past ``cutoff``, verified, at once: a replaced store's,
    which nothing else writes."""
    last, _count = verified_prefix(store, cutoff, errors)
    return audit.purge_through(store, last) if last else 0
