"""The hash-chained audit log: append, verify, export.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting,
inserting or reordering any row breaks the chain from that row on, and :func:`verify` names
the first bad entry. Entries carry subject ids (keyed HMAC), counts and field *names*; never
values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connector.state import Store, utcnow

__all__ = ["AuditEntry", "VerifyResult", "append", "entries", "verify"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    seq: int
    ts: str
    kind: str
    subject_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, entries checked, and the first bad seq if any."""

    ok: bool
    checked: int
    first_bad: int | None = None
    problem: str = ""


def _digest(prev_hash: str, seq: int, ts: str, kind: str, subject: str | None, data: str) -> str:
    material = "\x1f".join((prev_hash, str(seq), ts, kind, subject or "", data))
    return hashlib.sha256(material.encode()).hexdigest()


def append(store: Store, kind: str, data: Mapping[str, Any], subject_id: str | None = None) -> int:
    """Add an entry (inside the caller's transaction if there is one); return its seq."""
    payload = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    ts = utcnow()
    with store.transaction() as db:
        row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
        digest = _digest(prev, seq, ts, kind, subject_id, payload)
        db.execute(
            "INSERT INTO audit(seq, ts, kind, subject_id, data, prev_hash, hash) "
            "VALUES (?,?,?,?,?,?,?)",
            (seq, ts, kind, subject_id, payload, prev, digest),
        )
    return int(seq)


def entries(store: Store, since: str | None = None) -> Iterator[AuditEntry]:
    """Entries in order, optionally only those at or after the ISO timestamp ``since``."""
    query = "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit"
    params: tuple[str, ...] = ()
    if since:
        query += " WHERE ts >= ?"
        params = (since,)
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(
        query + " ORDER BY seq", params
    ):
        yield AuditEntry(seq, ts, kind, subject, json.loads(data), prev, digest)


def verify(store: Store) -> VerifyResult:
    """Walk the chain; report the first entry whose link or hash does not hold."""
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    cursor = store.db.execute(
        "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit ORDER BY rowid"
    )
    for seq, ts, kind, subject, data, prev, digest in cursor:
        if seq != expected_seq:
            return VerifyResult(False, checked, seq, f"expected entry {expected_seq}, found {seq}")
        if prev != expected_prev:
            return VerifyResult(False, checked, seq, "link to the previous entry is broken")
        if _digest(prev, seq, ts, kind, subject, data) != digest:
            return VerifyResult(False, checked, seq, "entry content does not match its hash")
        expected_prev = digest
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked)
