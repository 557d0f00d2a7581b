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

The head and the anchor each carry a MAC (HMAC-SHA256 under a key derived from the store's
data keys, :meth:`connector.crypto.Keyring.audit_mac`), written with them: the row alone,
unkeyed, was moved back to the last entry kept in one UPDATE after the newest entries were
deleted, and the chain verified. A process binds the store's keys with :func:`use_keys`
(:mod:`connector.keyset` does, wherever it opens them). A chain from before the MACs is adopted
as it stands at the first write or verify with the keys, and an ``audit.keyed`` entry says
from where (a chain adopted while empty starts from a genesis of its own instead): a chain
that was keyed and carries no MAC is then told from one that never was.

What this does *not* protect against:

- someone with the store's keys (the master key), who computes the MACs as the connector does;
- someone who can write the database file and kept a copy of the row as it was when the head
  was where they set it back to (a MAC over the same head is the same MAC): the row copied
  back with the entries after it deleted verifies;
- someone who deletes every entry since the chain was keyed, the ``audit.keyed`` entry with
  them, and clears the MACs: the chain is then adopted again, and ``audit verify`` says so.

Only a copy of the head kept elsewhere stops those: ``audit verify`` prints the head hash so an
operator or auditor can record it outside the store and compare it later.
"""

from __future__ import annotations

import _json
import datetime as dt
import hashlib
import json
import secrets
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from connector.crypto import Keyring
from connector.errors import StoreError
from connector.state import Store, utcnow

if TYPE_CHECKING:
    from connector.compliance import Gap
    from connector.config import Config

__all__ = [
    "AUDIT_ANCHORED",
    "AUDIT_EXPORTED",
    "AUDIT_KEYED",
    "CHECK_RESULT",
    "CONFIG_LOADED",
    "INCIDENT_CLOSED",
    "INCIDENT_OPENED",
    "KEY_ROTATED",
    "MAC_ADOPTED",
    "MAC_CHECKED",
    "MAC_UNCHECKED",
    "MAC_UNKEYED",
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
    "export_lines",
    "file_sha256",
    "latest",
    "parse_since",
    "purge_through",
    "record_check",
    "record_config",
    "record_resync",
    "rekey",
    "use_keys",
    "verify",
]

GENESIS = "0" * 64

# The kinds of entry. Other modules append with these names so an auditor can filter on them.
SYNC_BATCH = "sync.batch"  # engine: one delivered batch (counts, field names)
SYNC_RUN = "sync.run"  # engine: one flow run (counts)
SYNC_ERASED_ON_ARRIVAL = "sync.erased_on_arrival"  # engine: a write landed after its erasure
SYNC_MANUAL = "sync.manual"  # cli/admin API: a manual resync was requested (of one person?)
CONFIG_LOADED = "config.loaded"  # a config (file + mappings) with a new SHA-256 came into use
KEY_ROTATED = "keys.rotated"  # a key was rotated (key ids / fingerprints only, never keys)
CHECK_RESULT = "check.result"  # `klantsync check` compliance result (gap codes and keys)
RETENTION_PURGED = "retention.purged"  # a retention sweep deleted something (counts only)
INCIDENT_OPENED = "incident.opened"  # a breach clock started (id and deadline only)
INCIDENT_CLOSED = "incident.closed"  # a breach clock stopped
AUDIT_ANCHORED = "audit.anchored"  # the oldest entries were purged; the chain starts after seq
AUDIT_KEYED = "audit.keyed"  # a chain from before head and anchor MACs was keyed from here on
AUDIT_EXPORTED = "audit.exported"  # `audit export`: how many entries, which seqs (no content)

# What :func:`verify` could say of the head's and the anchor's MACs (``VerifyResult.mac``).
MAC_CHECKED = "checked"  # both hold under the store's keys
MAC_ADOPTED = "adopted"  # the chain had none yet (a store from before them): it has now
MAC_UNCHECKED = "unchecked"  # the chain has them, but verify had no key to check them with
# The chain has none yet, and verify did not add them: no key, or it looked at a copy.
MAC_UNKEYED = "unkeyed"

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
    """The ``audit_chain`` row: where verification starts (anchor) and must end (head), and
    their MACs (None in a chain not keyed yet)."""

    anchor_seq: int
    anchor_hash: str
    head_seq: int
    head_hash: str
    head_mac: str | None = None
    anchor_mac: str | None = None

    @property
    def keyed(self) -> bool:
        return self.head_mac is not None or self.anchor_mac is not None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, entries checked, and the first bad seq if any.

    ``head_hash`` is worth writing down outside the store: see the module docstring. ``mac``
    says what was made of the head's and the anchor's MACs (``MAC_*``): only ``checked`` and
    ``adopted`` vouch for the head and the anchor.
    """

    ok: bool
    checked: int
    first_bad: int | None = None
    problem: str = ""
    anchor_seq: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    mac: str = MAC_UNKEYED


def _digest(prev_hash: str, seq: int, ts: str, kind: str, subject: str | None, data: str) -> str:
    material = "\x1f".join((prev_hash, str(seq), ts, kind, subject or "", data))
    return hashlib.sha256(material.encode()).hexdigest()


def _matches(
    prev: str, seq: int, ts: str, kind: str, subject: str | None, data: str, digest: str
) -> bool:
    """Whether a row read back from the store matches its hash. A value written by hand as
    bytes (a BLOB) where the chain wrote text does not: it is an edit, not a crash."""
    try:
        return _digest(prev, seq, ts, kind, subject, data) == digest
    except TypeError:
        return False


#: What :func:`verify` says of an entry holding bytes where the chain wrote text.
_NOT_TEXT = "a value of the entry is stored as bytes, not as the text written: it was edited"


def _payload(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), sort_keys=True, separators=(",", ":"))


#: The keys each open store's chain is keyed with (:func:`use_keys`).
_KEYS: weakref.WeakKeyDictionary[Store, Keyring] = weakref.WeakKeyDictionary()


def use_keys(store: Store, keyring: Keyring) -> None:
    """Key ``store``'s chain head and anchor with ``keyring`` (the store's own keys) from now
    on, in this process: appends and purges write their MACs, :func:`verify` checks them."""
    _KEYS[store] = keyring


def _mac(keyring: Keyring, role: str, seq: int, digest: str) -> str:
    # The role is in the message: the head's MAC does not hold as the anchor's.
    return keyring.audit_mac(f"{role}\x1f{seq}\x1f{digest}".encode())


def chain_state(store: Store) -> ChainState:
    """The anchor and head of the chain as recorded in ``audit_chain``."""
    row = store.db.execute(
        "SELECT anchor_seq, anchor_hash, head_seq, head_hash, head_mac, anchor_mac "
        "FROM audit_chain WHERE id=1"
    ).fetchone()
    if row is None:  # the row is created by the migration; its absence is itself tampering
        return ChainState(0, GENESIS, -1, "")
    return ChainState(int(row[0]), str(row[1]), int(row[2]), str(row[3]), row[4], row[5])


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
    million entries) fast, while every entry still chains to the one before it. With the
    store's keys bound (:func:`use_keys`) the new head gets its MAC, and a chain not keyed
    yet is adopted first.

    Raises:
        StoreError: the chain is keyed and this process has not bound the store's keys (its
            head moved without a MAC would read as tampering).
    """
    keyring = _KEYS.get(store)
    with store.transaction() as db:
        # Taken with the write lock held: taken before it, a writer that waited for the lock
        # wrote a higher seq with an earlier time than the entry before it.
        stamp = ts or utcnow()
        state = chain_state(store)
        if state.keyed and keyring is None:
            raise StoreError(
                f"{store.path}: the audit chain is keyed, and this command appended to it "
                "without the store's keys"
            )
        adopting = keyring is not None and not state.keyed and _keyed_at(store, state) is None
        if adopting and state.head_seq == 0:
            # No entry for an audit.keyed entry to follow: the chain starts from a genesis of
            # its own instead, which a chain stripped of its MACs cannot hide (_keyed_at).
            genesis = secrets.token_hex(32)
            state = replace(state, anchor_hash=genesis, head_hash=genesis)
        elif adopting:
            items = [(AUDIT_KEYED, {"head_seq": state.head_seq}, None), *items]
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
        head_mac = state.head_mac
        if keyring is not None and (adopting or state.head_mac == _head_mac(keyring, state)):
            head_mac = _mac(keyring, "head", seq, prev)
        # else: a MAC that did not hold stays one that does not, the new entries chained on:
        # a head set back by hand is not made good by the next append.
        db.execute(
            "UPDATE audit_chain SET head_seq=?, head_hash=?, head_mac=? WHERE id=1",
            (seq, prev, head_mac),
        )
        if adopting and keyring is not None:
            db.execute(
                "UPDATE audit_chain SET anchor_hash=?, anchor_mac=? WHERE id=1",
                (state.anchor_hash, _anchor_mac(keyring, state)),
            )
    return seq


def _head_mac(keyring: Keyring, state: ChainState) -> str:
    return _mac(keyring, "head", state.head_seq, state.head_hash)


def _anchor_mac(keyring: Keyring, state: ChainState) -> str:
    return _mac(keyring, "anchor", state.anchor_seq, state.anchor_hash)


def _keyed_at(store: Store, state: ChainState) -> int | None:
    """Where the chain shows it was keyed (the seq of an entry saying so, or 0 for a genesis
    of its own), or None: what tells a chain stripped of its MACs from one never keyed."""
    if state.anchor_seq == 0 and state.anchor_hash != GENESIS:
        return 0
    row = store.db.execute(
        "SELECT seq FROM audit WHERE kind=? ORDER BY seq LIMIT 1", (AUDIT_KEYED,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    # Retention purges the audit.keyed entry in time; each purge's anchor entry says keyed.
    row = store.db.execute(
        "SELECT seq, data FROM audit WHERE kind=? ORDER BY seq DESC LIMIT 1", (AUDIT_ANCHORED,)
    ).fetchone()
    if row is not None and json.loads(row[1]).get("keyed"):
        return int(row[0])
    return None


def rekey(store: Store, keyring: Keyring) -> None:
    """Carry the chain's MACs over to ``keyring`` and key the chain with it from now on, in
    the caller's transaction: a master key rotation renews the key they are made with.

    A MAC that does not hold under the keys in use is carried as it is, still not holding: a
    rotation must not vouch for a head or an anchor moved without the key.
    """
    old = _KEYS.get(store)
    with store.transaction() as db:
        state = chain_state(store)
        head, anchor = state.head_mac, state.anchor_mac
        if old is not None and head is not None and head == _head_mac(old, state):
            head = _head_mac(keyring, state)
        if old is not None and anchor is not None and anchor == _anchor_mac(old, state):
            anchor = _anchor_mac(keyring, state)
        db.execute("UPDATE audit_chain SET head_mac=?, anchor_mac=? WHERE id=1", (head, anchor))
    _KEYS[store] = keyring


def entries(store: Store, since: str | None = None) -> Iterator[AuditEntry]:
    """Entries in order, optionally only those from the first one at or after the ISO
    timestamp ``since`` (:func:`_rows_since`)."""
    query, params = _rows_since(since)
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(query, params):
        yield AuditEntry(seq, ts, kind, subject, json.loads(data), prev, digest)


def export_lines(store: Store, since: str | None = None) -> Iterator[tuple[int, str]]:
    """(seq, line) of each entry of :func:`entries` as ``audit export`` writes it: the entry
    as ``json.dumps(vars(entry), sort_keys=True)`` gives it, and a line end.

    The same bytes, made for a fraction of the work: the entry's fields are written in
    place, and its data decoded and encoded again by the C parts of :mod:`json` directly,
    without the per-call set-up of ``json.loads`` and ``json.dumps`` (at 2 million entries,
    most of what an export took). An entry that is not as the chain writes it (a value
    stored as bytes, data with more after it) takes the general way, whose output (or
    error) is the one given.
    """
    query, params = _rows_since(since)
    # The parts json.dumps(..., sort_keys=True) and json.loads are made of (CPython's C
    # half of json): the same escaping, order, separators, numbers and NaN handling.
    text = _json.encode_basestring_ascii
    encode = _json.make_encoder(None, _not_json, text, None, ": ", ", ", True, False, True)
    # typeshed wants a scanner as the context; json itself passes its decoder, as here.
    scan = _json.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(query, params):
        try:
            value, end = scan(data, 0)
            if end != len(data):
                raise TypeError("more than one value")
            # The keys in sorted order: data, hash, kind, prev_hash, seq, subject_id, ts.
            line = (
                f'{{"data": {"".join(encode(value, 0))}, "hash": {text(digest)}, '
                f'"kind": {text(kind)}, "prev_hash": {text(prev)}, "seq": {int(seq)}, '
                f'"subject_id": {"null" if subject is None else text(subject)}, '
                f'"ts": {text(ts)}}}\n'
            )
        except (TypeError, StopIteration, ValueError):
            entry = AuditEntry(seq, ts, kind, subject, json.loads(data), prev, digest)
            line = json.dumps(vars(entry), sort_keys=True) + "\n"
        yield int(seq), line


def _rows_since(since: str | None) -> tuple[str, tuple[str, ...]]:
    """The query of the entries in order from the first one at or after ``since``, and
    every one after it, and its parameters.

    An entry's time is the wall clock's when it was written, and a clock set back gives an
    entry after an earlier one an earlier time. Taken by time alone, such an entry was left
    out of the middle of an export, and the export, checked as the README says, read as an
    entry deleted: an unbroken run of the chain is what an auditor can check.
    """
    query = "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit"
    if not since:
        return query + " ORDER BY seq", ()
    first = "SELECT MIN(seq) FROM audit WHERE ts >= ?"
    return f"{query} WHERE seq >= ({first}) ORDER BY seq", (since,)


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


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


def verify(store: Store, upto: int | None = None, *, adopt: bool = True) -> VerifyResult:
    """Walk the chain from its anchor; report the first entry whose link or hash does not hold.

    The anchor (that a purge recorded it, and its MAC) and the head's MAC are checked
    whatever ``upto`` says. The head row and the entries are read in one read transaction:
    the daemon appends all day, and an entry committed between the two reads made an intact
    chain look broken. A chain not keyed yet is adopted when the whole chain verifies and
    the store's keys are bound (:func:`use_keys`); the result says so (``MAC_ADOPTED``).

    Args:
        store: the store.
        upto: check only entries up to this seq (retention checks what it is about to purge);
            the head is then compared with the newest entry, which is not itself verified.
        adopt: False to leave a chain not keyed yet as it is (``MAC_UNKEYED``): a look at a
            private copy of the store, whose chain keyed would be reported keyed, and the
            store's would not be.
    """
    keyring = _KEYS.get(store)
    with _snapshot(store):
        result = _verify(store, chain_state(store), keyring, upto)
    if adopt and upto is None and result.ok and result.mac == MAC_UNKEYED and keyring is not None:
        append_many(store, [])  # adopts the chain as it stands (see append_many)
        again = verify(store)
        return replace(again, mac=MAC_ADOPTED) if again.mac == MAC_CHECKED else again
    return result


@contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """One read transaction (one state of the store), unless the caller's is open already."""
    if store.db.in_transaction:
        yield
        return
    store.db.execute("BEGIN")
    try:
        yield
    finally:
        if store.db.in_transaction:
            store.db.execute("ROLLBACK")  # it only read


def _verify(
    store: Store, state: ChainState, keyring: Keyring | None, upto: int | None
) -> VerifyResult:
    expected_prev = state.anchor_hash
    expected_seq = state.anchor_seq + 1
    checked = 0

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(
            False, checked, seq, problem, state.anchor_seq, state.head_seq, state.head_hash, mac
        )

    mac = _mac_state(state, keyring)
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
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(
        query + " ORDER BY seq", params
    ):
        if seq != expected_seq:
            if seq < expected_seq:
                return bad(seq, f"unexpected entry {seq} before the chain's start")
            return bad(expected_seq, f"entry {expected_seq} is missing (next is {seq})")
        if prev != expected_prev:
            return bad(seq, "link to the previous entry is broken")
        try:
            material = join((prev, str(seq), ts, kind, subject or "", data)).encode()
        except TypeError:  # bytes where the chain wrote text: no hash of it can hold
            return bad(seq, _NOT_TEXT)
        if sha256(material).hexdigest() != digest:
            return bad(seq, "entry content does not match its hash")
        expected_prev = digest
        expected_seq += 1
        checked += 1
    last, last_hash = expected_seq - 1, expected_prev
    if upto is not None:
        # The head is compared with the newest entry as stored: a cheap check of the end,
        # where a full walk is what verifies it.
        row = store.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None and int(row[0]) > last:
            last, last_hash = int(row[0]), str(row[1])
    problem = _anchor_problem(store, state)
    if problem is not None:
        return bad(*problem)
    if last < state.head_seq:
        return bad(last + 1, f"entry {last + 1} is missing (the head records {state.head_seq})")
    if last > state.head_seq:
        return bad(state.head_seq + 1, f"entry {state.head_seq + 1} is beyond the chain head")
    if last_hash != state.head_hash:
        return bad(last, "the last entry does not match the chain head")
    problem = _mac_problem(store, state, keyring)
    if problem is not None:
        return bad(*problem)
    return VerifyResult(
        True, checked, None, "", state.anchor_seq, state.head_seq, state.head_hash, mac
    )


def _mac_state(state: ChainState, keyring: Keyring | None) -> str:
    if not state.keyed:
        return MAC_UNKEYED
    return MAC_UNCHECKED if keyring is None else MAC_CHECKED


def _anchor_problem(store: Store, state: ChainState) -> tuple[int, str] | None:
    """Whether the chain's start is one a purge recorded; (seq, problem) if not.

    Read through the index by kind, so retention's check of a prefix checks it too: the
    entry that recorded the anchor comes after the entries purged with it. Each entry read
    here is checked against its own hash (a full walk checks its links).
    """
    if state.anchor_seq == 0:
        return None
    anchored: dict[str, Any] | None = None  # the data of the last audit.anchored entry
    purged_before_anchors = False  # a purge by a version that recorded no anchor entry
    for seq, ts, kind, subject, data, prev, digest in store.db.execute(
        "SELECT seq, ts, kind, subject_id, data, prev_hash, hash FROM audit "
        "WHERE kind IN (?, ?) AND seq > ? ORDER BY seq",
        (AUDIT_ANCHORED, RETENTION_PURGED, state.anchor_seq),
    ):
        if not _matches(prev, seq, ts, kind, subject, data, digest):
            return seq, "entry content does not match its hash"
        recorded = json.loads(data)
        if kind == AUDIT_ANCHORED:
            anchored = recorded
        elif anchored is None and "replaced_stores" not in recorded:
            # Audit entries purged by a version that did not record its anchors yet. A
            # version that does appends its audit.anchored entry right before its
            # retention.purged one, in one transaction, and its purge entries count the
            # replaced stores too (which came with anchors): where no anchor entry is left,
            # one of those had its anchor entry deleted with the prefix, so it excuses
            # nothing. An earlier version's entry, without that count, does, even first in
            # the chain: it purged the whole chain when none was younger than audit_days.
            purged_before_anchors |= bool(recorded.get("audit_entries"))
    if anchored is None and not purged_before_anchors:
        return (
            state.anchor_seq,
            f"the chain starts after entry {state.anchor_seq}, but no purge is recorded: "
            "the entries before it were deleted",
        )
    if anchored is not None and (
        anchored.get("anchor_seq") != state.anchor_seq
        or anchored.get("anchor_hash") != state.anchor_hash
    ):
        return (
            state.anchor_seq,
            f"the chain starts after entry {state.anchor_seq}, but the last purge recorded "
            f"its start after entry {anchored.get('anchor_seq')}: entries were deleted",
        )
    return None


def _mac_problem(
    store: Store, state: ChainState, keyring: Keyring | None
) -> tuple[int, str] | None:
    """Whether the head's and the anchor's MACs do not hold; (seq, problem) if so."""
    # A chain edited and hashed anew from there on by someone without the key fails here
    # too, and here only: its links and hashes hold, and nothing tells which entry changed.
    after = (
        f"entries after entry {state.head_seq} may have been deleted, or an entry up to it "
        "edited and the hashes from it on computed anew (compare with a head hash recorded "
        "outside the store)"
    )
    if not state.keyed:
        keyed_at = _keyed_at(store, state)
        if keyed_at is None:
            return None  # a chain from before the MACs: adopted at the next write with keys
        since = f"entry {keyed_at}" if keyed_at else "its first entry"
        return (
            state.head_seq + 1,
            f"the chain head carries no MAC, but the chain was keyed from {since} on: the "
            f"head row was rewritten without the store's key, and {after}",
        )
    if state.head_mac is None or state.anchor_mac is None:
        return state.head_seq + 1, f"the chain head row lost one of its MACs: {after}"
    if keyring is None:
        return None  # said as MAC_UNCHECKED
    if state.anchor_mac != _anchor_mac(keyring, state):
        return (
            state.anchor_seq,
            f"the chain's start (after entry {state.anchor_seq}) does not carry the store's "
            "MAC: it was moved without the store's key",
        )
    if state.head_mac != _head_mac(keyring, state):
        return (
            state.head_seq + 1,
            f"the chain head (entry {state.head_seq}) does not carry the store's MAC: it was "
            f"moved without the store's key, and {after}",
        )
    return None


def purge_through(store: Store, seq: int) -> int:
    """Delete entries up to ``seq`` and anchor the chain at it; return how many were deleted.

    The caller (retention) verifies the chain first: purging evidence of tampering would
    hide it. The new anchor is appended to the chain as an ``audit.anchored`` entry in the
    same transaction, which is what tells this purge from a prefix deleted by hand; with the
    store's keys bound, the anchor gets its MAC, and the entry says the chain is keyed (a
    chain not keyed yet is adopted first, as :func:`append_many` adopts one).
    """
    keyring = _KEYS.get(store)
    with store.transaction() as db:
        row = db.execute("SELECT hash FROM audit WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return 0
        state = chain_state(store)
        if state.keyed and keyring is None:
            raise StoreError(
                f"{store.path}: the audit chain is keyed, and this command purged it without "
                "the store's keys"
            )
        if keyring is not None and not state.keyed:
            # A chain from before the MACs (retention run may be the first command with the
            # keys after an upgrade) is adopted whole first, head and anchor, as the first
            # keyed append does: keying the anchor alone made the append below take the
            # chain for keyed already and leave its head without a MAC, which reads as
            # tampering. (One stripped of its MACs is not adopted, and stays unkeyed.)
            append_many(store, [])
            state = chain_state(store)
        deleted = db.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount
        anchor = replace(state, anchor_seq=seq, anchor_hash=str(row[0]))
        db.execute(
            "UPDATE audit_chain SET anchor_seq=?, anchor_hash=?, anchor_mac=? WHERE id=1",
            (
                anchor.anchor_seq,
                anchor.anchor_hash,
                _anchor_mac(keyring, anchor)
                if keyring is not None and state.keyed
                else state.anchor_mac,
            ),
        )
        append(
            store,
            AUDIT_ANCHORED,
            {
                "anchor_seq": seq,
                "anchor_hash": str(row[0]),
                "purged": int(deleted),
                "keyed": keyring is not None,
            },
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


def record_resync(
    store: Store, system: str, *, full: bool, source: str, subject_id: str | None = None
) -> int:
    """Append ``sync.manual``: a resync of ``system`` asked for through ``source`` (``cli``,
    ``admin``), of one person (``subject_id``, their keyed id) or of every record.

    Who asked and for whom are said as a data subject request's entries say them: a resync
    of one person and one of the whole system otherwise left the same entry.
    """
    return append(
        store, SYNC_MANUAL, {"system": system, "full": full, "source": source}, subject_id
    )
