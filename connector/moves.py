"""A source record whose e-mail address changed: the same person under a new subject id.

Subject ids are keyed hashes of the e-mail address, so a customer who changes their address
in the shop arrives as a subject the connector has never seen. Left at that, every system
would get a second record for the person while the first, under the old address, went on
holding their name, phone and address (wrong data, and out of reach of an erasure asked for
with the new address). The shop's own record id says it is the same person: the source's
identity row for that id still names the old subject.

So, before a page is compared with what the destinations hold, the connector *moves* the
old subject's state to the new id: identity rows (every system's id for the person, one
taken out of the config since included), the delivered hashes, the dead letters; payloads
still queued under the old id are dropped (the page queues the current data; another flow
whose row goes reads its source in full next, unless it reads the page's source). Delivery
then finds the destinations' ids under the new subject and updates those records (adapters
write a record they know the id of by that id, new address included) instead of creating
new ones.
Each move is audited with both pseudonymous ids.

A payload queued under the old id for a system that has no id for the person is not
dropped: it may have landed, its answer lost to a crash (the store learns a system's id
only from that answer), and the system then holds the person under the old address. Its row
becomes the new id's, keeping that write as its ``former`` one; the page then queues the
current data into the same row. Delivery sends the former write first (``BatchSender.
_formers_first``): an upsert by the old address lands on the record it made, or makes the
one it would have, and its answer gives the id that the current write, new address
included, updates. Dropped, the new address went out alone and made a second record, while
the first kept the old address, name and phone.

The old id is kept as an alias of the new one (:func:`same_person`): an erasure asked for
under either address reaches the person and suppresses both ids, so a backup still holding
the old address cannot bring them back. That holds while nobody else has the old address:
once another customer takes it over, it is theirs, and an erasure under it reaches them only;
once they leave it in turn, it is an alias of theirs alone (its last holder's).

A move is made only when it is unambiguous: the new id must be unknown everywhere (no
identity, nothing delivered or queued, in any system, one since removed from the config
included), or known only as someone the same page moves away from it (Bert leaves the
address Anna takes, both read in one page: his move is made first, as two syncs would make
them), and neither id suppressed. Otherwise the page goes on as before and the old subject
stays as it was.

But an address whose subject the identity map ties to another of the source's records than
the page's is not someone known to be merged with: it is that other record's person, and the
page shows the address is no longer his (:func:`page_ids`). Taken for his, the page's record
went under his ids, onto his records everywhere, and its source id replaced his, so his own
move was missed next and his erasure missed his records. So the engine reads that record from
the source first, as a pull in id order would have (``MovePlanner.plan``): where he has a
new address, his move is made before the taker's; where the source no longer holds him
(deleted in the shop), he is *set apart*: his rows move to a pseudonym of his source record
(:func:`set_apart_id`), where an erasure by any of his ids still finds them, and whoever has
the address now is moved to it or is new there. A page's record whose address the source
still shows under that other record is left out of the page (:attr:`PagePlan.withheld`).

Someone may take over an address another customer left in the same sync (Bert moves away,
Anna takes his former address): she is a subject of her own, and her write looks the address
up, where a destination that has not yet taken Bert's change of address still holds his
record under it (Pipedrive finds him by e-mail, and the identity map would record Bert's
person as hers). So the write of whoever left an address lands first (:func:`vacated_by`,
:func:`queued_rows`; see ``Delivery._deliver_batch``), and the taker's waits in the outbox while
the leaver's change of address has not landed in that system (:func:`not_landed`): a row of
his still queued there, or a dead letter there (refused, his record there keeps the address).
Aliases are kept for good, so a ring can form (Anna took Bert's former address and Bert
Anna's, neither landed): no order writes each after the other, and held, neither would ever
be written, so the people of a ring are not held (:func:`in_rings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connector import audit
from connector.crypto import Keyring
from connector.state import Store, rows_in
from connector.store_marks import HELD

__all__ = [
    "MOVED_ENTRY",
    "SET_APART_ENTRY",
    "Move",
    "PageIds",
    "PagePlan",
    "apply_moves",
    "find_moves",
    "in_rings",
    "not_landed",
    "page_ids",
    "queued_rows",
    "same_person",
    "set_apart_id",
    "subjects_of_records",
    "vacated_by",
]

#: The audit entries of a person's move away from an address, keyed by the id they moved
#: to, the address they left under ``from`` (an access copy reads them: connector/dsr_store).
MOVED_ENTRY = "sync.subject_moved"
SET_APART_ENTRY = "sync.subject_set_apart"

#: Per-system rows that follow the person to the new id (queued payloads: see apply_moves).
_MOVED = ("identities", "delivered")


@dataclass(frozen=True)
class Move:
    """The person known as ``old`` is now ``new`` (their address changed in ``source``).

    ``set_apart``: the source no longer holds the person's record, and another record has
    their address now; ``new`` is the pseudonym of their record (:func:`set_apart_id`).
    """

    source: str
    old: str
    new: str
    set_apart: bool = False


@dataclass(frozen=True)
class PageIds:
    """What the source's identity map says of a page (:func:`page_ids`)."""

    #: The page's record ids the map knows, each with the subject it knows it under.
    known: dict[str, str]
    #: The page's subjects the map ties to a record other than the page's: subject -> that
    #: record id. Someone else held the address (and may have left it since).
    held: dict[str, str]
    #: The store's number of each subject looked up here (every one of the page's with a
    #: record id), ``None`` for those with none yet: the page asks for no one's again
    #: (:meth:`~connector.store_delivered.DeliveredStore.page_hashes`).
    numbers: dict[str, int | None] = field(default_factory=dict)

    def elsewhere(self, pulled: Mapping[str, str | None]) -> dict[str, str]:
        """Of :attr:`held`, those whose record the page does not hold: the source is asked
        for it (where has that person gone?) before the page is taken."""
        records = {ext for ext in pulled.values() if ext}
        return {sid: ext for sid, ext in self.held.items() if ext not in records}


@dataclass(frozen=True)
class PagePlan:
    """What a page implies (:func:`find_moves`)."""

    #: In the order they are made: whoever leaves an address before whoever takes it.
    moves: list[Move]
    #: The page's subjects whose address another source record holds still, by the identity
    #: map: written, they went under that person's ids (onto their records everywhere), and
    #: their source id replaced his. The page leaves them out.
    withheld: set[str]
    #: :attr:`PageIds.numbers`, where the plan moves nobody (a move renumbers).
    numbers: Mapping[str, int | None] = field(default_factory=dict)


def set_apart_id(keyring: Keyring, source: str, stored_id: str) -> str:
    """The pseudonym of a person the source no longer holds, by their record's stored id.

    Its text cannot be an address's or a phone's (no ``@``, no leading ``+``), nor a record
    key's (:meth:`~connector.ids.SystemIds.record_key`), so the keyed ids never meet.
    """
    return keyring.subject_id(f"set-apart:{source}:{stored_id}")


def page_ids(store: Store, source: str, pulled: Mapping[str, str | None]) -> PageIds:
    """What the identity map says of a page; ``pulled`` is subject id -> the source's record.

    One query for the page's record ids; more only where a subject of the page is not
    known by its own record (a new customer, a changed address): their numbers, then the
    records of those who have one. On a sync that finds nobody new or moved, none.
    """
    by_record = {ext: sid for sid, ext in pulled.items() if ext}
    if not by_record:
        return PageIds({}, {})
    rows = _subjects_for_records(store, source, list(by_record))
    known: dict[str, str] = {ext: sid for ext, sid, _ in rows}
    numbers: dict[str, int | None] = {sid: no for _, sid, no in rows}
    unconfirmed = [sid for ext, sid in by_record.items() if known.get(ext) != sid]
    # Subjects first, by their ids, then each one's row of the source by its key: joined
    # the other way, SQLite read every identity of the source (see Store, subjects). A
    # first sync's page stops at the first: nobody has a number.
    found = store.subject_numbers(unconfirmed)
    numbers.update((sid, found.get(sid)) for sid in unconfirmed)
    held = {
        sid: ext
        for sid, ext in store.external_ids_numbered(source, found).items()
        if ext != pulled[sid]
    }
    return PageIds(known, held, numbers)


def find_moves(
    store: Store,
    source: str,
    pulled: Mapping[str, str | None],
    ids: PageIds,
    gone: Mapping[str, str] | None = None,
) -> PagePlan:
    """The moves a page implies; ``pulled`` is subject id -> the source's record id.

    ``ids`` is :func:`page_ids` of ``pulled``; ``gone`` maps each record of :attr:`PageIds.
    held` that the source was asked for and no longer holds (deleted there, or left out of
    its pull) to its :func:`set_apart_id`. The person the identity map knows under such a
    record no longer holds the address (another record does, as the pull shows): they are
    set apart under that pseudonym, so their ids in every system stay theirs (and reach
    their erasure by any of those ids), and the address is free for whoever has it now.
    """
    gone = gone or {}
    by_record = {ext: sid for sid, ext in pulled.items() if ext}
    leaving = {sid: gone[ext] for sid, ext in ids.held.items() if ext in gone}
    candidates = {old: by_record[ext] for ext, old in ids.known.items() if old != by_record[ext]}
    if not candidates and not leaving:
        return PagePlan([], set(ids.held), ids.numbers)
    new_ids = list(candidates.values())
    erased = store.suppressed([*candidates, *new_ids, *leaving])
    moves = [
        Move(source, sid, apart, set_apart=True)
        for sid, apart in leaving.items()
        # Erased, the address stays out, whoever holds it; a pseudonym holding rows
        # already would merge two people's.
        if sid not in erased and not store.holds_rows(apart)
    ]
    freed = {move.old for move in moves}
    held = {sid for sid in new_ids if store.holds_rows(sid)}
    pending = {
        old: new for old, new in candidates.items() if old not in erased and new not in erased
    }
    # An address whose rows are those of someone the page moves away from it is free once
    # he has moved (Anna A -> C and Bert B -> A, read in one page, as across two syncs): his
    # move first, then hers, until no more can be made.
    while ready := [old for old, new in pending.items() if new not in held or new in freed]:
        for old in ready:
            moves.append(Move(source, old, pending.pop(old)))
            freed.add(old)
    pending = {old: new for old, new in candidates.items() if old not in freed}
    # People who each took the address another of them left (a swap) are written as they
    # come: see README, Known limits.
    return PagePlan(moves, {sid for sid in ids.held if sid not in freed | _rings(pending)})


def _rings(pending: Mapping[str, str]) -> set[str]:
    """The ids of ``pending`` (old -> new) that lead, new after new, back to themselves."""
    found: set[str] = set()
    for start in pending:
        seen: set[str] = set()
        sid = start
        while sid in pending and sid not in seen:
            seen.add(sid)
            sid = pending[sid]
        if sid == start:
            found.add(start)
    return found


def apply_moves(
    store: Store, moves: Sequence[Move], sources: Mapping[str, str] | None = None
) -> None:
    """Move each subject's state to its new id, with an audit entry each, atomically.

    Every system's rows go, one since taken out of the config included: left under the old
    id, they made it hold rows, so it no longer led to the person (an erasure under the new
    address had no part for that system, left the old address unsuppressed and the row
    tying the person to their record there in place).

    A row another flow queued under the old id that goes carried that flow's change, and
    its cursor may be past it: that flow reads its source in full next (:data:`~connector.
    store_runs.REREAD`), as where a page's write takes its row's place. Not a flow that
    reads the source the move was read from: the record changed there (its address), so
    even an incremental read of it offers the record again, under the new address.
    ``sources`` (flow -> its source) marks a flow with no cursor yet too
    (:meth:`~connector.store_runs.RunStore.mark_reread`).
    """
    taken: set[str] = set()
    with store.transaction() as db:
        for move in moves:
            numbers = store.subject_numbers([move.old, move.new], create=True)
            old, new = numbers[move.old], numbers[move.new]
            for table in _MOVED:
                where, params = store.by_subject(table, [move.old])
                db.execute(
                    f"UPDATE {table} SET subject_no=? WHERE {where}",  # noqa: S608 - fixed names
                    (new, *params),
                )
            where, params = store.by_subject("outbox", [move.old])
            queued = db.execute(
                f"SELECT DISTINCT system FROM outbox WHERE {where}",  # noqa: S608 - fixed names
                params,
            ).fetchall()
            # The flows reading the source the move was read from: the record changed there,
            # so they are offered it again (below).
            readers = {
                str(f)
                for (f,) in db.execute("SELECT flow FROM cursors WHERE system=?", (move.source,))
            } | {f for f, s in (sources or {}).items() if s == move.source}
            for (system,) in queued:
                # Where the system's id for the person is unknown, what is queued under the
                # old address may have landed anyway: the row stays, as the new id's, with
                # that write kept to go first (see the module). One kept from an earlier move
                # stays: the row's own payload was never sent while it waited.
                db.execute(
                    "UPDATE outbox SET subject_no=?1, former=COALESCE(former, payload) "
                    "WHERE system=?2 AND subject_no=?3 AND NOT EXISTS "
                    "(SELECT 1 FROM identities WHERE system=?2 AND subject_no=?1)",
                    (new, system, old),
                )
                # The rest carry the old address to a record known by its id: the page
                # queues the current data. Another flow's (its source may not have moved
                # the person, and an incremental one never offers the change again) marks
                # that flow; a held row keeps no write of its flow's.
                taken.update(
                    str(flow)
                    for (flow,) in db.execute(
                        "SELECT DISTINCT flow FROM outbox "
                        "WHERE system=? AND subject_no=? AND payload_hash!=?",
                        (system, old, HELD),
                    )
                    if str(flow) not in readers
                )
                db.execute("DELETE FROM outbox WHERE system=? AND subject_no=?", (system, old))
            if not store.holds_rows(move.old):
                # The old id lives on as an alias (below); its number has nothing left.
                db.execute("DELETE FROM subjects WHERE subject_no=?", (old,))
            # One dead letter per subject and system (schema 11): where the new id has its own
            # refusal already, that one is about the current address and stays.
            db.execute(
                "DELETE FROM dead_letters WHERE subject_id=? AND system IN "
                "(SELECT system FROM dead_letters WHERE subject_id=?)",
                (move.old, move.new),
            )
            db.execute(
                "UPDATE dead_letters SET subject_id=? WHERE subject_id=?", (move.new, move.old)
            )
            # Who unsubscribed at a system stays so under the new address (the member
            # moves with it there too), and when they last chose there goes with them.
            db.execute(
                "UPDATE OR IGNORE opt_outs SET subject_id=? WHERE subject_id=?",
                (move.new, move.old),
            )
            db.execute("DELETE FROM opt_outs WHERE subject_id=?", (move.old,))
            db.execute(
                "UPDATE OR IGNORE consent_events SET subject_id=? WHERE subject_id=?",
                (move.new, move.old),
            )
            db.execute("DELETE FROM consent_events WHERE subject_id=?", (move.old,))
            # The old id (and any the person had before it) stays known as theirs, so an
            # erasure under either address reaches the person and suppresses every id.
            db.execute(
                "UPDATE subject_aliases SET subject_id=? WHERE subject_id=?", (move.new, move.old)
            )
            # Whoever left the address before the mover took it is no longer its last holder:
            # kept, an erasure under it reached them too (erased one, suppressed all), and
            # theirs reached the address the mover left.
            db.execute(
                "DELETE FROM subject_aliases WHERE alias=? AND subject_id<>?",
                (move.old, move.new),
            )
            db.execute(
                "INSERT OR IGNORE INTO subject_aliases(subject_id, alias) VALUES (?,?)",
                (move.new, move.old),
            )
            audit.append(
                store,
                SET_APART_ENTRY if move.set_apart else MOVED_ENTRY,
                {"system": move.source, "from": move.old, "to": move.new},
                subject_id=move.new,
            )
        if taken:
            store.mark_reread(taken, sources)


def vacated_by(store: Store, subject_ids: Sequence[str]) -> dict[str, set[str]]:
    """Those of ``subject_ids`` that are someone else's former address: id -> who left it."""
    found: dict[str, set[str]] = {}
    # Asked for every batch delivered: a store nobody ever moved in answers with one seek.
    if store.db.execute("SELECT 1 FROM subject_aliases LIMIT 1").fetchone() is None:
        return found
    ids = list(dict.fromkeys(subject_ids))
    query = "SELECT alias, subject_id FROM subject_aliases WHERE alias IN (?...)"
    for alias, holder in rows_in(store.db, query, ids):
        if alias != holder:
            found.setdefault(alias, set()).add(holder)
    return found


def queued_rows(store: Store, system: str, subject_ids: Sequence[str]) -> dict[str, int]:
    """The outbox row (its id) each of ``subject_ids`` has waiting for ``system``, any flow."""
    numbers = store.subject_numbers(subject_ids)
    found: dict[str, int] = {}
    by_number = {number: sid for sid, number in numbers.items()}
    query = "SELECT subject_no, id FROM outbox WHERE system=? AND subject_no IN (?...)"
    for number, row_id in rows_in(store.db, query, list(by_number), before=(system,)):
        found[by_number[number]] = row_id
    return found


def not_landed(store: Store, system: str, left: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Of ``left`` (:func:`vacated_by`), the people whose leavers' change of address has not
    landed in ``system``: id -> those leavers.

    A leaver counts while he has a row queued for the system (his change, or one after it,
    not yet written) or a dead letter there (refused: the system's record of him may still
    hold the address). One who has neither has been written there since he left, or was
    never there at all: nothing of his is under the address.
    """
    leavers = sorted({sid for who in left.values() for sid in who})
    if not leavers:
        return {}
    pending = queued_rows(store, system, leavers).keys() | store.dead_lettered(system, leavers)
    found = {sid: who & pending for sid, who in left.items()}
    return {sid: who for sid, who in found.items() if who}


def in_rings(store: Store, system: str, waiting: Mapping[str, set[str]]) -> set[str]:
    """Those of ``waiting`` (:func:`not_landed`) who wait, through leavers who wait in turn,
    on themselves.

    Each of a ring holds an address another of it left, and none of their changes has landed:
    whoever is written first finds the other's record under the address, and held until the
    other lands, none would ever be written. Leavers outside ``waiting`` are asked of the
    store as far as the chain goes (each step is someone's former address: a few at most).
    """
    graph: dict[str, set[str]] = {sid: set(who) for sid, who in waiting.items()}
    ahead = {sid for who in graph.values() for sid in who} - graph.keys()
    while ahead:
        more = not_landed(store, system, vacated_by(store, sorted(ahead)))
        graph.update((sid, more.get(sid, set())) for sid in ahead)
        ahead = {sid for who in more.values() for sid in who} - graph.keys()
    return {sid for sid in waiting if sid in _reachable(graph, graph[sid])}


def _reachable(graph: Mapping[str, set[str]], start: set[str]) -> set[str]:
    """Every node ``graph`` leads to from ``start``, ``start`` included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        sid = todo.pop()
        if sid not in seen:
            seen.add(sid)
            todo.extend(graph.get(sid, ()))
    return seen


def subjects_of_records(store: Store, source: str, record_ids: Sequence[str]) -> dict[str, str]:
    """The subject the identity map knows each of ``source``'s ``record_ids`` under."""
    return {ext: sid for ext, sid, _ in _subjects_for_records(store, source, list(record_ids))}


def _subjects_for_records(
    store: Store, source: str, record_ids: list[str]
) -> list[tuple[str, str, int]]:
    """(record id, subject id, subject number) for each of ``record_ids`` the identity map
    holds for ``source``."""
    query = (
        "SELECT i.external_id, s.subject_id, s.subject_no "
        "FROM identities i JOIN subjects s ON s.subject_no = i.subject_no "
        "WHERE i.system=? AND i.external_id IN (?...)"
    )
    return rows_in(store.db, query, record_ids, before=(source,))


def same_person(store: Store, subject_ids: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """``subject_ids`` and every id the same people have had or have now, in that order.

    An alias joins two ids only through a former address that nobody holds now. After a move
    the old id holds nothing, and the two are one person. Once that address holds rows again,
    someone took it over (another customer, whose address it now is): a request under it is
    that customer's and does not reach the former owner, and the former owner's request does
    not reach (erase, suppress) the customer who has the address now. ``taken`` are ids a
    source says someone else holds now, before the store holds rows under them (a new
    customer who signed up under the address and asked before the next sync).
    """
    found = list(dict.fromkeys(subject_ids))
    if not found:
        return found
    vacant = [sid for sid in found if sid not in taken and not store.holds_rows(sid)]
    # From an address nobody holds now to the person who had it.
    everyone = list(dict.fromkeys([*found, *_alias_column(store, "subject_id", "alias", vacant)]))
    # Each person's former addresses, those nobody holds now.
    former = [
        sid
        for sid in _alias_column(store, "alias", "subject_id", everyone)
        if not store.holds_rows(sid)
    ]
    return list(dict.fromkeys([*everyone, *former]))


def _alias_column(store: Store, wanted: str, given: str, values: list[str]) -> list[str]:
    """``wanted`` of the alias rows whose ``given`` column is one of ``values``."""
    if not values:
        return []
    marks = ",".join("?" * len(values))
    rows = store.db.execute(
        f"SELECT {wanted} FROM subject_aliases WHERE {given} IN ({marks})",  # noqa: S608
        tuple(values),
    )
    return [row[0] for row in rows]
