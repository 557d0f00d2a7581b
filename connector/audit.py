"""The hash-chained audit log: append, verify, purge, export.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting,
inserting or reordering any row breaks the chain from that row on, and :func:`verify` names
the first bad entry. Entries carry subject ids (keyed HMAC), counts and field *names*; never
values.

Two things a chain alone cannot show are covered by the ``audit_chain`` row (one row, written
in the same transaction as every append and purge):

- the **head** (last seq and its hash): without it, deleting the *last* entries leaves a chain
  that still verifies;
- the **anchor** (seq and hash of the last entry purged by retention): verification starts from
  it, so purging the oldest entries keeps the rest verifiable. Each purge appends an
  ``audit.anchored`` entry naming the anchor it set, in the chain itself: an anchor moved by
  hand (the oldest entries deleted, the row pointed at the last one's stored hash, no hash
  recomputed) matches no such entry, and :func:`verify` says so.

What this does *not* protect against: someone with write access to the database file who
rewrites a suffix of the chain, recomputes every hash *and* updates the head row. A plain hash
chain cannot stop that; only a copy of the head kept elsewhere can. ``audit verify`` prints the
head hash so an operator or auditor can record it outside the store and compare it later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector.state import Store, utcnow

if TYPE_CHECKING:
    from connector.compliance import Gap
    from connector.config import Config

__all__ = [
    "AUDIT_ANCHORED",
    "CHECK_RESULT",
    "CONFIG_LOADED",
    "INCIDENT_CLOSED",
    "INCIDENT_OPENED",
    "KEY_ROTATED",
    "RETENTION_PURGED",
    "SYNC_BATCH",
    "SYNC_MANUAL",
    "SYNC_RUN",
    "AuditEntry",
    "ChainState",
    "VerifyResult",
    "append",
    "append_many",
    "chain_state",
    "config_digest",
    "entries",
    "file_sha256",
    "latest",
    "parse_since",
    "purge_through",
    "record_check",
    "record_config",
    "verify",
]

GENESIS = "0" * 64

# The kinds of entry. Other modules append with these names so an auditor can filter on them.
SYNC_BATCH = "sync.batch"  # engine: one delivered batch (counts, field names)
SYNC_RUN = "sync.run"  # engine: one flow run (counts)
SYNC_ERASED_ON_ARRIVAL = "sync.erased_on_arrival"  # engine: a write landed after its erasure
SYNC_MANUAL = "sync.manual"  # cli/admin API: a manual resync was requested
CONFIG_LOADED = "config.loaded"  # a config (file + mappings) with a new SHA-256 came into use
KEY_ROTATED = "keys.rotated"  # a key was rotated (key ids / fingerprints only, never keys)
CHECK_RESULT = "check.result"  # `klantsync check` compliance result (gap codes and keys)
RETENTION_PURGED = "retention.purged"  # a retention sweep deleted something (counts only)
INCIDENT_OPENED = "incident.opened"  # a breach clock started (id and deadline only)
INCIDENT_CLOSED = "incident.closed"  # a breach clock stopped
AUDIT_ANCHORED = "audit.anchored"  # the oldest entries were purged; the chain starts after seq

_INSERT = (
    "INSERT INTO audit(seq, ts, kind, subject_id, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?)"
)


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
class ChainState:
    """The ``audit_chain`` row: where verification starts (anchor) and must end (head)."""

    anchor_seq: int
    anchor_hash: str
    head_seq: int
    head_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, entries checked, and the first bad seq if any.

    ``head_hash`` is worth writing down outside the store: see the module docstring.
    """

    ok: bool
    checked: int
    first_bad: int | None = None
    problem: str = ""
    anchor_seq: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS


def _digest(prev_hash: str, seq: int, ts: str, kind: str, subject: str | None, data: str) -> str:
    material = "\x1f".join((prev_hash, str(seq), ts, kind, subject or "", data))
    return hashlib.sha256(material.encode()).hexdigest()


def _payload(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), sort_keys=True, separators=(",", ":"))


def chain_state(store: Store) -> ChainState:
    """The anchor and head of the chain as recorded in ``audit_chain``."""
    row = store.db.execute(
        "SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM audit_chain WHERE id=1"
    ).fetchone()
    if row is None:  # the row is created by the migration; its absence is itself tampering
        return ChainState(0, GENESIS, -1, "")
    return ChainState(int(row[0]), str(row[1]), int(row[2]), str(row[3]))


def append(store: Store, kind: str, data: Mapping[str, Any], subject_id: str | None = None) -> int:
    """Add an entry (inside the caller's transaction if there is one); return its seq."""
    return append_many(store, [(kind, data, subject_id)])


def append_many(
    store: Store,
    items: Iterable[tuple[str, Mapping[str, Any], str | None]],
    ts: str | None = None,
) -> int:
    """Add ``(kind, data, subject_id)`` entries in one transaction; return the last seq.

    One ``executemany`` for the lot: this is what makes bulk writers (and the benchmark's
    million entries) fast, while every entry still chains to the one before it.
    """
    stamp = ts or utcnow()
    with store.transaction() as db:
        state = chain_state(store)
        seq, prev = state.head_seq, state.head_hash

        def rows() -> Iterator[tuple[int, str, str, str | None, str, str, str]]:
            nonlocal seq, prev
            for kind, data, subject_id in items:
                seq += 1
                payload = _payload(data)
                digest = _digest(prev, seq, stamp, kind, subject_id, payload)
                yield (seq, stamp, kind, subject_id, payload, prev, digest)
                prev = digest

        db.executemany(_INSERT, rows())
        db.execute("UPDATE audit_chain SET head_seq=?, head_hash=? WHERE id=1", (seq, prev))
    return seq


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


def parse_since(text: str) -> str:
    """An ISO date or timestamp as the store's UTC timestamp format, for ``--since``.

    Without an offset it is read as the operator's clock reads, as ``incident open
    --aware-since`` reads it: read as UTC, a Dutch "10:00" missed an hour or two of entries.

    Raises:
        ValueError: ``text`` is not an ISO 8601 date or date-time.
    """
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-01-31") from None
    try:
        if when.tzinfo is None:
            when = when.astimezone()  # local time
        return when.astimezone(dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError):  # the first hours of year 1, east of UTC
        raise ValueError("is before the first date there is (year 1, UTC)") from None


def verify(store: Store, upto: int | None = None) -> VerifyResult:
    """Walk the chain from its anchor; report the first entry whose link or hash does not hold.

    Args:
        store: the store.
        upto: check only entries up to this seq (retention checks what it is about to purge);
            the head is then not compared.
    """
    state = chain_state(store)
    expected_prev = state.anchor_hash
    expected_seq = state.anchor_seq + 1
    checked = 0

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(
            False, checked, seq, problem, state.anchor_seq, state.head_seq, state.head_hash
        )

    if state.head_seq < 0:
        return bad(0, "the chain head record is missing")
    query = "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit"
    params: tuple[int, ...] = ()
    if upto is not None:
        query += " WHERE seq <= ?"
        params = (upto,)
    # ORDER BY seq: rows swapped by editing their seq values come back in their new order and
    # fail on the link, since each hash covers the seq it was written with.
    # The loop is _digest inlined, with locals bound: it runs a million times in an audit.
    sha256, join = hashlib.sha256, "\x1f".join
    anchored: str | None = None  # the data of the last audit.anchored entry
    purged_before_anchors = False  # a purge by a version that recorded no anchor entry
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(
        query + " ORDER BY seq", params
    ):
        if seq != expected_seq:
            if seq < expected_seq:
                return bad(seq, f"unexpected entry {seq} before the chain's start")
            return bad(expected_seq, f"entry {expected_seq} is missing (next is {seq})")
        if prev != expected_prev:
            return bad(seq, "link to the previous entry is broken")
        material = join((prev, str(seq), ts, kind, subject or "", data)).encode()
        if sha256(material).hexdigest() != digest:
            return bad(seq, "entry content does not match its hash")
        if kind == AUDIT_ANCHORED:
            anchored = data
        elif kind == RETENTION_PURGED and anchored is None:
            # Audit entries purged by a version that did not record its anchors yet. A
            # version that does appends its audit.anchored entry right before its
            # retention.purged one, in one transaction, and its purge entries count the
            # replaced stores too (which came with anchors): where no anchor entry is left,
            # one of those had its anchor entry deleted with the prefix, so it excuses
            # nothing. An earlier version's entry, without that count, does, even first in
            # the chain: it purged the whole chain when none was younger than audit_days.
            recorded = json.loads(data)
            if "replaced_stores" not in recorded:
                purged_before_anchors |= bool(recorded.get("audit_entries"))
        expected_prev = digest
        expected_seq += 1
        checked += 1
    last = expected_seq - 1
    if upto is None and state.anchor_seq > 0:
        recorded = json.loads(anchored) if anchored is not None else None
        if recorded is None and not purged_before_anchors:
            return bad(
                state.anchor_seq,
                f"the chain starts after entry {state.anchor_seq}, but no purge is recorded: "
                "the entries before it were deleted",
            )
        if recorded is not None and (
            recorded.get("anchor_seq") != state.anchor_seq
            or recorded.get("anchor_hash") != state.anchor_hash
        ):
            return bad(
                state.anchor_seq,
                f"the chain starts after entry {state.anchor_seq}, but the last purge recorded "
                f"its start after entry {recorded.get('anchor_seq')}: entries were deleted",
            )
    if upto is None:
        if last < state.head_seq:
            return bad(last + 1, f"entry {last + 1} is missing (the head records {state.head_seq})")
        if last > state.head_seq:
            return bad(state.head_seq + 1, f"entry {state.head_seq + 1} is beyond the chain head")
        if expected_prev != state.head_hash:
            return bad(last, "the last entry does not match the chain head")
    return VerifyResult(True, checked, None, "", state.anchor_seq, state.head_seq, state.head_hash)


def purge_through(store: Store, seq: int) -> int:
    """Delete entries up to ``seq`` and anchor the chain at it; return how many were deleted.

    The caller (retention) verifies that prefix first: purging evidence of tampering would
    hide it. The new anchor is appended to the chain as an ``audit.anchored`` entry in the
    same transaction, which is what tells this purge from a prefix deleted by hand.
    """
    with store.transaction() as db:
        row = db.execute("SELECT hash FROM audit WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return 0
        deleted = db.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount
        db.execute(
            "UPDATE audit_chain SET anchor_seq=?, anchor_hash=? WHERE id=1", (seq, str(row[0]))
        )
        append(
            store,
            AUDIT_ANCHORED,
            {"anchor_seq": seq, "anchor_hash": str(row[0]), "purged": int(deleted)},
        )
    return int(deleted)


def file_sha256(path: Any) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def config_digest(config: Config) -> dict[str, Any]:
    """SHA-256 of the config file and of each system's mapping file, and of them together.

    File bytes are hashed, not the loaded values: the values hold resolved secrets, and a hash
    of a secret has no place in a log an auditor reads.
    """
    files = {"config": file_sha256(config.path)}
    mappings = {name: file_sha256(s.mapping) for name, s in sorted(config.systems.items())}
    combined = hashlib.sha256()
    for name, digest in [("config", files["config"]), *sorted(mappings.items())]:
        combined.update(f"{name}\0{digest}\0".encode())
    return {"sha256": combined.hexdigest(), "config": files["config"], "mappings": mappings}


def record_config(store: Store, config: Config) -> bool:
    """Append ``config.loaded`` if the effective config differs from the last one recorded.

    Call at daemon and sync start. Returns whether an entry was appended.
    """
    digest = config_digest(config)
    with store.transaction() as db:
        row = db.execute(
            "SELECT data FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (CONFIG_LOADED,)
        ).fetchone()
        if row is not None and json.loads(row[0]).get("sha256") == digest["sha256"]:
            return False
        append(store, CONFIG_LOADED, digest)
    return True


def latest(store: Store, kind: str) -> tuple[int, dt.datetime] | None:
    """(seq, time) of the newest entry of ``kind``, through the index by kind; or None."""
    row = store.db.execute(
        "SELECT seq, ts FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (kind,)
    ).fetchone()
    return None if row is None else (int(row[0]), dt.datetime.fromisoformat(str(row[1])))


def record_check(store: Store, gaps: Sequence[Gap]) -> int:
    """Append the result of the compliance checks (gap codes and config keys, no values)."""
    return append(
        store,
        CHECK_RESULT,
        {
            "gaps": len(gaps),
            "found": [{"code": g.code, "key": g.key} for g in gaps],
        },
    )
