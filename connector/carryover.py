"""What a restored store takes over from the store it replaces: what the backup cannot know.

A restore rolls the sync's own bookkeeping back to the backup (cursors, payload hashes of
people the backup knows, the outbox, emptied). What happened in the world since must not be
rolled back with it, and the replaced store, when it can still be read, knows it:

- **erasures**: its suppression list, and the people on it lose their rows here too, or a
  sync would bring them back; and **readmissions** (``dsr readmit``) its audit trail
  records, unless suppressed there again since (one readmitted since lost their rows at
  the erasure before it: the backup's go here too);
- **sources purged since** (Shopify's ``shop/redact``, as its audit trail records them):
  what is held because of that source is forgotten here too, before the rest is taken over;
- **who was sent where**: a (system, person) pair the backup holds nothing of, first sent
  since. Forgotten, a customer subscribed to the newsletter after the backup who then opts
  out would not be unsubscribed (a withdrawal goes only where the person was sent), and an
  erasure would not know the system's id;
- **what a system last got**, where it got something since: the replaced store's payload
  hash for the pair, or, where a payload was on its way there, a mark to send the current
  one again. With the backup's hash, a change since that the shop then undid was never
  sent (the record looked unchanged), and the system kept the change. With it, which
  fields that write gave a value (connector/emptying.py), by flow and names: with the
  backup's, a field emptied since and filled in at the system by its own users was
  emptied again;
- **refusals delivered since**: a dead letter of the backup's for a record the replaced
  store delivered after that refusal, and no longer has a letter for, is gone. Kept, it
  listed a refusal of what the system holds, and with the system's latest hash the record
  looked unchanged, so no delivery would ever clear it;
- **moves since** (a new address): the systems followed them, so the person's rows go
  under the new address here too, and the former one becomes an alias (someone who took
  that address since keeps the rows the replaced store holds of them);
- **former addresses** (moves since);
- **writes kept from a former address** (``outbox.former``, connector/moves.py): a write
  under the address someone moved away from that may have landed, its answer lost, and
  the row it goes first with. The rest of the outbox is emptied, but this is the only
  record of what the system may hold under that address: dropped, the new address went
  out alone and made a second record, and an erasure no longer knew the address to erase
  under. The replaced store's say (it is the later: one answered since is gone there);
- **data subject requests**, with each system's status and the receipts: opened or settled
  since, and an open one must still be retried. **Queued jobs** (a privacy webhook's work
  not done yet), **webhook delivery ids** (a replay stays a replay), **the records erasures
  deleted** (a system's report of one stays the erasure's echo), **access bundles**
  (their retention records: the bundle is deleted when due), **breach incidents** (their
  72-hour clocks).

Sealed values (request manifests, job parameters, bundle paths, kept writes) are taken only
if they open with the restored store's keys: after a master key rotation since the backup
they do not, and those rows are named instead (``not_carried``) for the operator to ask for
again (a kept write cannot be asked for: its row is named, ``outbox <id>``).
Everything here is HMAC ids, hashes, counts and sealed blobs: nothing is read in clear.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from connector import audit
from connector.crypto import (
    BUNDLE_PATH_CONTEXT,
    JOB_CONTEXT,
    DecryptionError,
    Keyring,
    manifest_context,
    outbox_context,
)
from connector.dsr_store import PURGE_SOURCE, DsrStore, latest_purges
from connector.jobs import CUT_OFF, MAX_CUT_OFF
from connector.readmit import READMITTED
from connector.state import PER_SYSTEM_TABLES, RESEND, UNSURE, Store, utcnow

__all__ = ["Carried", "attached", "carry_erasures", "carry_over"]


@dataclass
class Carried:
    """Counts of what was taken over, and what could not be (nothing about anyone)."""

    suppression: int = 0
    traces_deleted: int = 0
    #: Suppression entries the replaced store lifted since (dsr readmit): lifted here too.
    readmitted: int = 0
    moves: int = 0
    people: int = 0
    #: Sources purged since the backup (Shopify's ``shop/redact``), purged here too.
    purged: int = 0
    #: (system, person) pairs the backup knows that got something since (see module).
    delivered_since: int = 0
    #: The backup's dead letters for records delivered since (see module).
    refusals_delivered: int = 0
    aliases: int = 0
    opt_outs: int = 0
    requests: int = 0
    jobs: int = 0
    deliveries: int = 0
    #: Keyed ids of records erasures deleted (see DsrService.echo_of_own_erasure).
    erased_records: int = 0
    bundles: int = 0
    incidents: int = 0
    #: Queued rows that keep a write from a former address (see module), with that write.
    formers: int = 0
    #: What could not be taken: "request <id>", "job <id>", "bundle <id>", "outbox <id>"
    #: (sealed under keys
    #: this store does not have), or all but erasures from a store at another schema.
    not_carried: list[str] = field(default_factory=list)


@contextmanager
def attached(store: Store, replaced: Path) -> Iterator[None]:
    """The replaced store attached to ``store``'s connection as ``replaced`` (outside any
    transaction: SQLite attaches no database inside one)."""
    store.db.execute("ATTACH DATABASE ? AS replaced", (str(replaced),))
    try:
        yield
    finally:
        store.db.execute("DETACH DATABASE replaced")


def carry_over(
    store: Store, keyring: Keyring, flows_of: Mapping[str, Sequence[str]] | None = None
) -> Carried:
    """Take over from the attached replaced store what the backup cannot know (see module).

    Runs inside the caller's transaction, with the replaced store :func:`attached`. A
    replaced store at another schema version (last opened by another klantsync) hands over
    its erasures only: the other tables' columns may differ. ``flows_of`` names the flows
    reading from each source (the config's), for a purge of one to take over.
    """
    db = store.db
    carried = Carried()
    # Before the other steps: what was held because of a purged source is gone from the
    # backup's state first; what the replaced store holds since (a shop connected again)
    # then comes over as anything sent since does.
    carried.purged = _purged_since(store, flows_of or {})
    (theirs,) = db.execute("PRAGMA replaced.user_version").fetchone()
    (ours,) = db.execute("PRAGMA main.user_version").fetchone()
    _erasures(store, carried)
    carried.readmitted = _readmitted_since(store, carried)
    if theirs != ours:
        carried.not_carried.append(f"all but erasures (a store at schema {theirs})")
        return carried
    carried.moves = _moved_since(db, store)
    carried.people = _sent_since(store)
    carried.delivered_since = _delivered_since(store)
    carried.refusals_delivered = _refusals_delivered_since(db)
    carried.aliases = db.execute(
        "INSERT OR IGNORE INTO main.subject_aliases(subject_id, alias) "
        "SELECT subject_id, alias FROM replaced.subject_aliases"
    ).rowcount
    # Who is opted out at a system is as the replaced store, the newer, says: one who
    # unsubscribed there since is never subscribed again by the restored store, and one who
    # subscribed there again since is not unsubscribed by it.
    db.execute("DELETE FROM main.opt_outs")
    carried.opt_outs = db.execute(
        "INSERT OR IGNORE INTO main.opt_outs(system, subject_id, created_at) "
        "SELECT system, subject_id, created_at FROM replaced.opt_outs "
        "WHERE subject_id NOT IN (SELECT subject_id FROM main.suppression)"
    ).rowcount
    # And when each last chose there: a late delivery of an older choice stays older.
    db.execute("DELETE FROM main.consent_events")
    db.execute(
        "INSERT OR IGNORE INTO main.consent_events(system, subject_id, occurred_at) "
        "SELECT system, subject_id, occurred_at FROM replaced.consent_events "
        "WHERE subject_id NOT IN (SELECT subject_id FROM main.suppression)"
    )
    carried.requests = _requests(db, keyring, carried.not_carried)
    carried.jobs = _jobs(db, keyring, carried.not_carried)
    carried.deliveries = db.execute(
        "INSERT OR IGNORE INTO main.webhook_deliveries(system, delivery_id, received_at) "
        "SELECT system, delivery_id, received_at FROM replaced.webhook_deliveries"
    ).rowcount
    carried.erased_records = db.execute(
        "INSERT OR REPLACE INTO main.erased_records(record_key, request_id, erased_at) "
        "SELECT record_key, request_id, erased_at FROM replaced.erased_records"
    ).rowcount
    carried.bundles = _bundles(db, keyring, carried.not_carried)
    carried.incidents = _changed_rows(db, "incidents")
    carried.formers = _formers(db, keyring, carried.not_carried)
    return carried


def carry_erasures(store: Store) -> Carried:
    """:func:`carry_over` of a replaced store damaged past its suppression list: its
    erasures only, the one thing a restore must never lose. Nothing else of it is read (a
    damaged page makes every statement after it fail); the rest is said not carried."""
    carried = Carried()
    _erasures(store, carried)
    carried.not_carried.append("all but erasures (the replaced store is damaged)")
    return carried


def _erasures(store: Store, carried: Carried) -> None:
    """Take over the replaced store's suppression list, and delete from the backup's state
    the traces of the people erased since."""
    db = store.db
    erased = [
        str(sid)
        for (sid,) in db.execute(
            "SELECT subject_id FROM replaced.suppression EXCEPT SELECT subject_id FROM suppression"
        )
    ]
    db.execute(
        "INSERT OR IGNORE INTO main.suppression(subject_id, kind, request_id, created_at) "
        "SELECT subject_id, kind, request_id, created_at FROM replaced.suppression"
    )
    carried.suppression = len(erased)
    if erased:
        carried.traces_deleted = sum(DsrStore(store).delete_traces(erased).values())
        carried.traces_deleted += _bundles_of(db, erased)


def _bundles_of(db: sqlite3.Connection, erased: Sequence[str]) -> int:
    """Forget the access bundle records of people erased since; how many.

    Their erasure deleted each bundle and its record; the backup's copy of the record
    (their subject id, a path that may name them) goes too. One the replaced store still
    holds is a bundle the erasure could not delete, left to the sweep: kept.
    """
    marks = ",".join("?" * len(erased))
    return db.execute(
        f"DELETE FROM main.bundles AS m WHERE subject_id IN ({marks}) "  # noqa: S608 - marks only
        f"AND NOT EXISTS (SELECT 1 FROM replaced.bundles r WHERE {_SAME_BUNDLE})",
        tuple(erased),
    ).rowcount


#: Whether bundle rows ``m`` (the backup's) and ``r`` (the replaced store's) are one record.
#: The id alone does not say: it is an INTEGER PRIMARY KEY without AUTOINCREMENT, so once
#: the newest record is deleted (an erasure, the sweep) the next bundle gets its id. The
#: path is not compared: a master key rotation since seals it anew, the record unchanged.
_SAME_BUNDLE = (
    "r.id = m.id AND r.created_at = m.created_at AND r.files = m.files "
    "AND r.subject_id IS m.subject_id"
)


def _purged_since(store: Store, flows_of: Mapping[str, Sequence[str]]) -> int:
    """Purge here the sources the replaced store purged since the backup; how many.

    A source counts when the replaced store's audit trail holds a purge of it later than
    any this store's holds (none, for a backup taken before the purge). Each is done again
    here and recorded here too, so a later restore over this store purges again, whichever
    backup it puts back. (Compared by position in the trail, a purge replayed by the restore
    of an older backup sat before a newer backup's last entry, and that backup's restore
    brought the shop's rows back.)
    """
    db = store.db
    systems = [
        system
        for system, latest in latest_purges(db, "replaced").items()
        if latest > latest_purges(db, "main").get(system, "")
    ]
    for system in systems:
        flows = list(flows_of.get(system, ()))
        # A flow the config no longer has, known here by its cursor on the source.
        flows += [
            str(flow)
            for (flow,) in db.execute("SELECT flow FROM main.cursors WHERE system = ?", (system,))
            if flow not in flows
        ]
        counts = DsrStore(store).purge_source(system, flows)
        audit.append(
            store,
            PURGE_SOURCE,
            {"system": system, **counts, "reason": "purged before a restore, taken over by it"},
        )
    return len(systems)


def _readmitted_since(store: Store, carried: Carried) -> int:
    """Lift what the replaced store lifted: people readmitted (connector/readmit.py), as its
    audit trail records them, and not suppressed there again since. Only what is recorded
    is lifted: a replaced store that is simply emptier (made anew after a lost disk) lifts
    nothing. What is taken over is recorded here too (a ``dsr.readmitted`` entry), so a
    later restore over this store takes it over again. Returns how many entries were lifted.

    One readmitted later than any readmission of theirs this store's trail records was
    erased since the backup, or was suppressed in it (and holds nothing in it, then): the
    backup's rows of them are from before that erasure (a system id it deleted, the hash of
    what was sent before) and go, as an erased person's do (:func:`_erasures`). Kept, the
    next sync would write to a record that no longer exists, or find them unchanged and not
    send them at all. What the replaced store sent them since comes over with the rest.
    """
    db = store.db
    readmitted = _latest_readmissions(db, "replaced")
    ours = _latest_readmissions(db, "main")
    still = {
        str(sid)
        for (sid,) in db.execute(
            "SELECT subject_id FROM replaced.suppression WHERE subject_id IN "
            "(SELECT value FROM json_each(?))",
            (json.dumps(sorted(readmitted)),),
        )
    }
    lifted = [
        sid
        for sid in sorted(readmitted)
        if sid not in still
        and db.execute("DELETE FROM main.suppression WHERE subject_id = ?", (sid,)).rowcount
    ]
    since = [
        sid
        for sid, latest in sorted(readmitted.items())
        if sid not in still and latest > ours.get(sid, "")
    ]
    if since:
        carried.traces_deleted += sum(DsrStore(store).delete_traces(since).values())
        carried.traces_deleted += _bundles_of(db, since)
    taken = sorted({*lifted, *since})
    if taken:
        audit.append(
            store,
            READMITTED,
            {
                "subject_ids": taken,
                "reason": "readmitted before a restore, taken over by it",
                # The entry is stamped with the restore's time; a later restore compares
                # the readmission's own (:func:`_latest_readmissions`).
                "readmitted_at": {sid: readmitted[sid] for sid in taken},
            },
        )
    return len(lifted)


def _latest_readmissions(db: sqlite3.Connection, schema: str) -> dict[str, str]:
    """Per subject id, the time of the latest readmission ``schema``'s audit trail records.

    An entry a restore wrote for a readmission it took over is stamped with the restore's
    time; it names the readmission's own (``readmitted_at``), which is the one compared: by
    the restore's, a backup taken after the readmission and before that restore looked
    older than it, and lost its rows of the person written since. An entry without it (a
    readmission itself, or taken over by an earlier version) has its own time.
    """
    latest: dict[str, str] = {}
    for ts, data in db.execute(
        f"SELECT ts, data FROM {schema}.audit WHERE kind = ?",  # noqa: S608 - fixed names
        (READMITTED,),
    ):
        entry = json.loads(data)
        at = entry.get("readmitted_at") or {}
        for sid in entry.get("subject_ids", []):
            when = str(at.get(str(sid), ts)) if isinstance(at, dict) else str(ts)
            latest[str(sid)] = max(latest.get(str(sid), ""), when)
    return latest


def _moved_since(db: sqlite3.Connection, store: Store) -> int:
    """Moves the replaced store made since the backup, made here too; returns how many.

    A person who changed their address since is held there under the new one, with the
    system ids the backup holds under the former (connector/moves.py moved the rows). The
    systems followed: a newsletter member's address changed. Left as the backup has it,
    this store would look for them under the former address (an erasure would miss the
    member under the new one), and the next sync would find a move from a state the
    systems have left. So the former address's rows go, the new one's come from the
    replaced store (with the other pairs sent since, :func:`_sent_since`), and the former
    address becomes an alias.

    A former address the replaced store holds rows under again is someone else's now (a
    new customer signed up with it). The move counts where the replaced store records it
    (the former address an alias of the new one, as connector/moves.py leaves it): the
    backup's rows under that address are still the mover's, and left there they would make
    her system ids the newcomer's (his changes written onto her records, his erasure
    deleting them). They go with her; the newcomer's rows come from the replaced store as
    anything sent since does. Without that record, a shared system id alone does not say
    the person moved, and the candidate is left.
    """
    candidates = db.execute(
        "SELECT DISTINCT rs.subject_id, s.subject_id FROM replaced.identities ri "
        "JOIN replaced.subjects rs ON rs.subject_no = ri.subject_no "
        "JOIN main.identities i ON i.system = ri.system AND i.external_id = ri.external_id "
        "JOIN main.subjects s ON s.subject_no = i.subject_no "
        "WHERE s.subject_id != rs.subject_id"
    ).fetchall()
    # Few, as a rule: each looked up by (system, number), the replaced store's key.
    systems = [row[0] for row in db.execute("SELECT DISTINCT system FROM replaced.identities")]
    marks = ",".join("?" * len(systems))
    moves = [
        (new, old)
        for new, old in candidates
        if not db.execute(
            "SELECT 1 FROM replaced.subjects r JOIN replaced.identities i "  # noqa: S608
            f"ON i.system IN ({marks}) AND i.subject_no = r.subject_no "
            "WHERE r.subject_id = ? LIMIT 1",
            (*systems, old),
        ).fetchone()
        or db.execute(
            "SELECT 1 FROM replaced.subject_aliases WHERE subject_id = ? AND alias = ?",
            (new, old),
        ).fetchone()
    ]
    if not moves:
        return 0
    former = sorted({str(old) for _, old in moves})
    for table in PER_SYSTEM_TABLES:
        where, params = store.by_subject(table, former)
        db.execute(f"DELETE FROM main.{table} WHERE {where}", params)  # noqa: S608
    db.executemany(
        "INSERT OR IGNORE INTO main.subject_aliases(subject_id, alias) VALUES (?, ?)",
        [(str(new), str(old)) for new, old in moves],
    )
    return len(moves)


def _sent_since(store: Store) -> int:
    """The (system, person) pairs the backup holds nothing of; returns how many people.

    A pair whose system id the backup holds under someone else is left out (the moves
    since are made first, :func:`_moved_since`; what still conflicts is not taken).
    """
    db = store.db
    db.execute(
        "CREATE TEMP TABLE sent_since AS "
        "SELECT rs.subject_id AS subject_id, x.system AS system, "
        "ri.external_id AS external_id, rd.payload_hash AS payload_hash, "
        "rd.delivered_at AS delivered_at "
        "FROM (SELECT system, subject_no FROM replaced.identities "
        "      UNION SELECT system, subject_no FROM replaced.delivered) AS x "
        "JOIN replaced.subjects rs ON rs.subject_no = x.subject_no "
        "LEFT JOIN replaced.identities ri ON ri.system = x.system AND ri.subject_no = x.subject_no "
        "LEFT JOIN replaced.delivered rd ON rd.system = x.system AND rd.subject_no = x.subject_no "
        "LEFT JOIN main.subjects s ON s.subject_id = rs.subject_id "
        "WHERE rs.subject_id NOT IN (SELECT subject_id FROM main.suppression) "
        "AND (s.subject_no IS NULL OR ("
        "  NOT EXISTS (SELECT 1 FROM main.identities i "
        "              WHERE i.system = x.system AND i.subject_no = s.subject_no) "
        "  AND NOT EXISTS (SELECT 1 FROM main.delivered d "
        "                  WHERE d.system = x.system AND d.subject_no = s.subject_no))) "
        "AND (ri.external_id IS NULL OR NOT EXISTS (SELECT 1 FROM main.identities i2 "
        "     WHERE i2.system = x.system AND i2.external_id = ri.external_id))"
    )
    try:
        db.execute(
            "INSERT OR IGNORE INTO main.subjects(subject_id) "
            "SELECT DISTINCT subject_id FROM temp.sent_since"
        )
        db.execute(
            "INSERT INTO main.identities(system, subject_no, external_id) "
            "SELECT c.system, s.subject_no, c.external_id FROM temp.sent_since c "
            "JOIN main.subjects s ON s.subject_id = c.subject_id WHERE c.external_id IS NOT NULL"
        )
        db.execute(
            "INSERT INTO main.delivered(system, subject_no, payload_hash, delivered_at) "
            "SELECT c.system, s.subject_no, c.payload_hash, c.delivered_at "
            "FROM temp.sent_since c JOIN main.subjects s ON s.subject_id = c.subject_id "
            "WHERE c.payload_hash IS NOT NULL"
        )
        _field_sets_since(store, "sent_since")
        (people,) = db.execute("SELECT COUNT(DISTINCT subject_id) FROM temp.sent_since").fetchone()
    finally:
        db.execute("DROP TABLE temp.sent_since")
    return int(people)


def _delivered_since(store: Store) -> int:
    """What each system last got, where the replaced store sent it something since the backup.

    The pairs the backup holds nothing of came with :func:`_sent_since`, at the payload they
    got; this takes the pairs it holds at an older one. They are found by delivery time: at
    or after the last delivery the backup records (an earlier one it would hold already; a
    few more read at the boundary change nothing). A payload still queued there may have
    landed, its answer lost, or not: the pair is marked :data:`~connector.state.RESEND` and
    :data:`~connector.state.UNSURE` with that payload's hash, so the next sync sends the
    current one whatever the hashes say, knowing what may have landed (a withdrawal of
    consent, say: consenting again, the person is sent a renewal). A withdrawal behind this
    mark is sent again, where behind a correction's it went: read as sent, it was sent by
    nobody (the outbox is emptied), and the person stayed subscribed. That holds for a pair the
    backup holds nothing of, too: a newsletter member written by a sync cut short, then
    restored over, is unsubscribed when the person opts out (a withdrawal goes only where
    something was sent). Returns how many pairs changed.
    """
    db = store.db
    db.execute(
        "CREATE TEMP TABLE delivered_since AS "
        "SELECT x.system AS system, rs.subject_id AS subject_id, MAX(x.queued) AS queued, "
        # A pair may come twice, delivered and queued again since: the queued one decides.
        "       CASE WHEN MAX(x.queued) THEN MAX(CASE WHEN x.queued THEN x.payload_hash END) "
        "            ELSE MAX(x.payload_hash) END AS payload_hash, MAX(x.at) AS at "
        "FROM (SELECT rd.system AS system, rd.subject_no AS subject_no, 0 AS queued, "
        "             rd.payload_hash AS payload_hash, rd.delivered_at AS at "
        "      FROM replaced.delivered rd WHERE rd.delivered_at >= "
        "            (SELECT COALESCE(MAX(delivered_at), '') FROM main.delivered) "
        "      UNION ALL SELECT ro.system, ro.subject_no, 1, ? || ro.payload_hash, "
        "             ro.enqueued_at FROM replaced.outbox ro) AS x "
        "JOIN replaced.subjects rs ON rs.subject_no = x.subject_no "
        "WHERE rs.subject_id NOT IN (SELECT subject_id FROM main.suppression) "
        "GROUP BY x.system, rs.subject_id",
        (f"{RESEND}:{UNSURE}",),
    )
    try:
        changed = db.execute(
            "UPDATE main.delivered AS d SET payload_hash = c.payload_hash "
            "FROM temp.delivered_since c JOIN main.subjects s ON s.subject_id = c.subject_id "
            "WHERE d.system = c.system AND d.subject_no = s.subject_no "
            "AND d.payload_hash != c.payload_hash"
        ).rowcount
        db.execute(
            "INSERT OR IGNORE INTO main.subjects(subject_id) "
            "SELECT subject_id FROM temp.delivered_since WHERE queued"
        )
        changed += db.execute(
            "INSERT OR IGNORE INTO main.delivered(system, subject_no, payload_hash, "
            "delivered_at) SELECT q.system, s.subject_no, q.payload_hash, q.at "
            "FROM temp.delivered_since q JOIN main.subjects s ON s.subject_id = q.subject_id "
            "WHERE q.queued"
        ).rowcount
        _field_sets_since(store, "delivered_since")
    finally:
        db.execute("DROP TABLE temp.delivered_since")
    return int(changed)


def _field_sets_since(store: Store, pairs: str) -> None:
    """Give the (system, person) ``pairs`` (a temporary table) the field set of what the
    replaced store sent them (connector/emptying.py), numbered in this store, with those
    of the last writes of the other flows before it (migrations 30 and 31).

    The backup's set is of the payload it last sent, not of the one whose hash came over:
    a field emptied since and then filled in at the system by its own users (a
    salesperson's number) was emptied again by the next write. So too the backup's sets
    of the other flows: one that gave a field before the backup, another flow giving it
    since, emptied the other's value. A set is taken by its flow and names, never by its
    number, which the replaced store gave after the backup to sets this one may number
    otherwise. A payload still queued there may have landed or not: its flow's set and the
    delivered one, taken together, are what that flow may have given (as the engine reads
    both, connector/emptying.py); of two flows, or with none known, the pair has none, nor
    any of other flows, and its next write empties nothing.
    """
    db = store.db
    rows = db.execute(
        "SELECT c.system, s.subject_no, df.flow, df.names, qf.flow, qf.names, "  # noqa: S608
        "rd.sent_before, rd.sent_earlier "
        f"FROM temp.{pairs} c JOIN main.subjects s ON s.subject_id = c.subject_id "
        "JOIN replaced.subjects rs ON rs.subject_id = c.subject_id "
        "LEFT JOIN replaced.delivered rd ON rd.system = c.system "
        "     AND rd.subject_no = rs.subject_no "
        "LEFT JOIN replaced.field_sets df ON df.id = rd.sent "
        "LEFT JOIN replaced.outbox ro ON ro.system = c.system AND ro.subject_no = rs.subject_no "
        "LEFT JOIN replaced.field_sets qf ON qf.id = ro.sent"
    ).fetchall()
    updates: list[tuple[int | None, int | None, str | None, str, int]] = []
    for system, subject_no, d_flow, d_names, q_flow, q_names, before, earlier in rows:
        flows = {flow for flow in (d_flow, q_flow) if flow is not None}
        number: int | None = None
        others: list[int] = []
        if len(flows) == 1:
            flow = str(flows.pop())
            names = {n for given in (d_names, q_names) if given for n in str(given).split(",")}
            number = store.field_set(flow, names)
            if d_flow is not None and before is not None:
                latest_first = [before, *json.loads(earlier or "[]")[::-1]]
                others = _other_flows_sets(store, latest_first, flow)
        updates.append(
            (
                number,
                others[0] if others else None,
                json.dumps(others[:0:-1]) if len(others) > 1 else None,
                str(system),
                int(subject_no),
            )
        )
    # The sets before cleared first: moved on by a write, ``sent_before`` hands the set it
    # held to ``sent_earlier`` (migration 31's trigger), which a clear one does not.
    db.executemany(
        "UPDATE main.delivered SET sent_before = NULL WHERE system = ? AND subject_no = ?",
        [update[3:] for update in updates],
    )
    db.executemany(
        "UPDATE main.delivered SET sent = ?, sent_before = ?, sent_earlier = ? "
        "WHERE system = ? AND subject_no = ?",
        updates,
    )


def _other_flows_sets(store: Store, numbers: Sequence[object], flow: str) -> list[int]:
    """The replaced store's field sets ``numbers`` (latest first) of flows other than
    ``flow``, one per flow, numbered in this store."""
    found: list[int] = []
    seen = {flow}
    for number in numbers:
        row = store.db.execute(
            "SELECT flow, names FROM replaced.field_sets WHERE id = ?", (number,)
        ).fetchone()
        if row is None:  # none is ever deleted; unknown, what is older is not trusted
            break
        if str(row[0]) in seen:
            continue
        seen.add(str(row[0]))
        found.append(store.field_set(str(row[0]), filter(None, str(row[1]).split(","))))
    return found


def _refusals_delivered_since(db: sqlite3.Connection) -> int:
    """Drop the backup's dead letters for records the replaced store delivered after the
    refusal and holds no letter for (its delivery cleared it); returns how many. (Times are
    to the second: a delivery in the refusal's second counts, the letter being gone there.)

    What a system last got came over with :func:`_delivered_since` and :func:`_sent_since`:
    the record now looks unchanged, is not offered again, and its letter, kept, said for
    good that the system refused what it holds (and held back whoever took over an address
    it named, connector/moves.py). One the replaced store still has (refused again since)
    stays.
    """
    return db.execute(
        "DELETE FROM main.dead_letters AS m WHERE NOT EXISTS "
        "(SELECT 1 FROM replaced.dead_letters r "
        " WHERE r.system = m.system AND r.subject_id = m.subject_id) "
        "AND EXISTS (SELECT 1 FROM replaced.subjects rs JOIN replaced.delivered rd "
        " ON rd.system = m.system AND rd.subject_no = rs.subject_no "
        " WHERE rs.subject_id = m.subject_id AND rd.delivered_at >= m.created_at)"
    ).rowcount


def _opens(keyring: Keyring, blob: bytes | None, context: str) -> bool:
    if blob is None:
        return True
    try:
        keyring.open(bytes(blob), context)
    except DecryptionError:
        return False
    return True


_REQUEST_COLUMNS = (
    "id, kind, subject_id, received_at, deadline, extension_reason, status, source, manifest, "
    "payload, receipt, completed_at"
)


def _requests(db: sqlite3.Connection, keyring: Keyring, not_carried: list[str]) -> int:
    """Requests opened or changed since: the replaced store's version of each (it is the
    later one), with each system's status; returns how many were taken."""
    taken = 0
    rows = db.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM replaced.dsr_requests r WHERE NOT EXISTS "  # noqa: S608
        f"(SELECT 1 FROM main.dsr_requests m WHERE m.id = r.id AND "
        "m.status IS r.status AND m.deadline IS r.deadline AND m.manifest IS r.manifest AND "
        "m.receipt IS r.receipt) OR EXISTS (SELECT 1 FROM "
        "(SELECT request_id, system, status, attempts FROM replaced.dsr_systems "
        "WHERE request_id = r.id EXCEPT SELECT request_id, system, status, attempts "
        "FROM main.dsr_systems WHERE request_id = r.id))"
    ).fetchall()
    for row in rows:
        request_id = str(row[0])
        if not _opens(keyring, row[8], manifest_context(request_id)):
            not_carried.append(f"request {request_id}")
            continue
        db.execute("DELETE FROM main.dsr_systems WHERE request_id = ?", (request_id,))
        marks = ",".join("?" * len(row))
        db.execute(
            f"INSERT OR REPLACE INTO main.dsr_requests({_REQUEST_COLUMNS}) "  # noqa: S608
            f"VALUES ({marks})",
            row,
        )
        db.execute(
            "INSERT INTO main.dsr_systems SELECT * FROM replaced.dsr_systems WHERE request_id = ?",
            (request_id,),
        )
        taken += 1
    return taken


def _jobs(db: sqlite3.Connection, keyring: Keyring, not_carried: list[str]) -> int:
    """Jobs queued or finished since, as the replaced store has them, with how often a
    daemon was cut off running each (its count lost, a job that crashes the daemon had all
    its tries again after every restore). One it was running when it stopped is counted cut
    off once more and goes back in the queue, or is failed past the bound, as a daemon's
    start does (:func:`connector.jobs.requeue_cut_off`)."""
    taken = 0
    rows = db.execute(
        "SELECT id, kind, params, status, created_at, started_at, finished_at, result, cut_off "
        "FROM replaced.jobs j WHERE NOT EXISTS (SELECT 1 FROM main.jobs m "
        "WHERE m.id = j.id AND m.status IS j.status AND m.cut_off = j.cut_off)"
    ).fetchall()
    for row in rows:
        if not _opens(keyring, row[2], JOB_CONTEXT):
            not_carried.append(f"job {row[0]}")
            continue
        job_id, kind, params, status, created, started, finished, result, cut_off = row
        if status == "running":
            cut_off += 1
            if cut_off >= MAX_CUT_OFF:
                # As jobs.finish: the outcome, and no sealed params left that nothing needs.
                status, finished, params = "failed", utcnow(), None
                result = json.dumps({"error": CUT_OFF})
            else:
                status = "queued"
        db.execute(
            "INSERT OR REPLACE INTO main.jobs(id, kind, params, status, created_at, "
            "started_at, finished_at, result, cut_off) VALUES (?,?,?,?,?,?,?,?,?)",
            (job_id, kind, params, status, created, started, finished, result, cut_off),
        )
        taken += 1
    return taken


def _bundles(db: sqlite3.Connection, keyring: Keyring, not_carried: list[str]) -> int:
    """Retention records of access bundles written since, each under the id it has there.

    A backup's record whose id the replaced store gave to a bundle written since is one the
    replaced store deleted (its bundle erased, swept or written again): the newer record
    takes its place, so that the newer bundle is swept in turn.
    """
    taken = 0
    rows = db.execute(
        "SELECT id, path, files, created_at, subject_id FROM replaced.bundles r "  # noqa: S608
        f"WHERE NOT EXISTS (SELECT 1 FROM main.bundles m WHERE {_SAME_BUNDLE})"  # a constant
    ).fetchall()
    for row in rows:
        if isinstance(row[1], bytes) and not _opens(keyring, row[1], BUNDLE_PATH_CONTEXT):
            not_carried.append(f"bundle {row[0]}")
            continue
        db.execute(
            "INSERT OR REPLACE INTO main.bundles(id, path, files, created_at, subject_id) "
            "VALUES (?,?,?,?,?)",
            row,
        )
        taken += 1
    return taken


def _formers(db: sqlite3.Connection, keyring: Keyring, not_carried: list[str]) -> int:
    """The replaced store's rows that keep a write from a former address, whole, in place
    of the backup's (the caller empties the rest of the outbox); returns how many.

    The backup's own are dropped: one the replaced store no longer keeps was answered
    since (the system's id for the person came over with what was sent since), and sent
    again by the former address it would make a record the system no longer holds under
    it. A row goes whole: its payload is the person's latest, queued after the move by a
    page the restored cursor may be past. People erased since are not taken.
    """
    db.execute("DELETE FROM main.outbox WHERE former IS NOT NULL")
    rows = db.execute(
        "SELECT rs.subject_id, ro.id, ro.system, ro.flow, ro.payload, ro.payload_hash, "
        "ro.enqueued_at, ro.attempts, ro.former "
        "FROM replaced.outbox ro JOIN replaced.subjects rs ON rs.subject_no = ro.subject_no "
        "WHERE ro.former IS NOT NULL "
        "AND rs.subject_id NOT IN (SELECT subject_id FROM main.suppression)"
    ).fetchall()
    taken = 0
    for subject_id, row_id, system, flow, payload, payload_hash, at, attempts, former in rows:
        context = outbox_context(str(system))
        if not (_opens(keyring, payload, context) and _opens(keyring, former, context)):
            not_carried.append(f"outbox {row_id}")
            continue
        db.execute("INSERT OR IGNORE INTO main.subjects(subject_id) VALUES (?)", (subject_id,))
        db.execute(
            "INSERT INTO main.outbox(id, system, subject_no, flow, payload, payload_hash, "
            "enqueued_at, attempts, former) SELECT ?, ?, subject_no, ?, ?, ?, ?, ?, ? "
            "FROM main.subjects WHERE subject_id = ?",
            (row_id, system, flow, payload, payload_hash, at, attempts, former, subject_id),
        )
        taken += 1
    return taken


def _changed_rows(db: sqlite3.Connection, table: str) -> int:
    """Rows of ``table`` (no sealed columns) that are new or changed since: the replaced
    store's version of each."""
    return db.execute(
        f"INSERT OR REPLACE INTO main.{table} SELECT * FROM replaced.{table} "  # noqa: S608
        f"EXCEPT SELECT * FROM main.{table}"
    ).rowcount
