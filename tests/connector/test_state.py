"""The store's outbox: ids only grow, so delivery workers reading past an id miss nothing.

And a destination's next batch is a range read, however long its backlog. Dead letters: one
per subject and system, gone once the subject is delivered there.


And a destination's next batch is a range read, however long its backlog. A path or a file
that cannot be a store is refused with a StoreError saying what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import connector.state as state
import connector.store_base as store_base
import connector.storefile as storefile
from connector.errors import StoreError, StorePathError
from connector.schema import MIGRATIONS, statements
from connector.state import PER_SYSTEM_TABLES, WITHDRAWAL, Ack, QueuedPayload, Store
from connector.storefile import failure, store_path_problem
from tests.conftest import disk_full_error, sqlite_steps
from tests.store_versions import add_people, store_at

REPO = Path(__file__).resolve().parents[2]


def _payloads(subjects: list[str], source: str = "") -> list[QueuedPayload]:
    """Payloads for the CRM; ``source`` tells apart what another source says of them."""
    return [QueuedPayload("crm", sid, b"sealed", f"hash-{source}{sid}") for sid in subjects]


def test_outbox_ids_grow_even_after_the_newest_rows_are_delivered(tmp_path: Path) -> None:
    """Rows queued after the outbox emptied get ids above every id handed out before."""
    store = Store(tmp_path / "s.db")
    first = store.enqueue_page("f", "shop", _payloads(["a", "b"]), [], "c1")
    rows = store.outbox_batch("crm", 0, 10)
    assert [r.id for r in rows] == first
    store.acknowledge("crm", [Ack(r.id, r.subject_id, None, r.payload_hash) for r in rows])
    assert store.outbox_count() == 0
    second = store.enqueue_page("f", "shop", _payloads(["c", "d"]), [], "c2")
    assert min(second) > max(first)
    # A worker that last took max(first) finds the new rows.
    assert [r.subject_id for r in store.outbox_batch("crm", max(first), 10)] == ["c", "d"]


def test_a_requeued_subject_moves_to_a_new_id(tmp_path: Path) -> None:
    """A newer payload for a queued subject replaces it under a new, higher id."""
    store = Store(tmp_path / "s.db")
    (old,) = store.enqueue_page("f", "shop", _payloads(["a"]), [], None)
    (new,) = store.enqueue_page("f", "shop", _payloads(["a"]), [], None)
    assert new > old
    assert [r.id for r in store.outbox_batch("crm", 0, 10)] == [new]


def test_ids_after_a_restart_stay_above_the_backlog_found_at_open(tmp_path: Path) -> None:
    """Reopened with a backlog, the store queues above it even once the backlog is delivered."""
    first = Store(tmp_path / "s.db")
    backlog = first.enqueue_page("f", "shop", _payloads(["a", "b", "c"]), [], "c1")
    first.close()
    store = Store(tmp_path / "s.db")
    rows = store.outbox_batch("crm", 0, 10)  # a worker takes the backlog and delivers it
    store.acknowledge("crm", [Ack(r.id, r.subject_id, None, r.payload_hash) for r in rows])
    new = store.enqueue_page("f", "shop", _payloads(["d"]), [], "c2")
    assert min(new) > max(backlog)
    assert [r.subject_id for r in store.outbox_batch("crm", max(backlog), 10)] == ["d"]


def _steps_for_next_batch(store: Store, system: str) -> int:
    """SQLite steps (in thousands) that reading ``system``'s next batch takes."""
    steps, rows = sqlite_steps(store, lambda: store.outbox_batch(system, 0, 50))
    assert len(rows) == 50 and [r.id for r in rows] == sorted(r.id for r in rows)
    return steps


def test_a_batch_costs_the_same_whatever_the_backlog(tmp_path: Path) -> None:
    """The next batch is a range read, not a sort of every row the destination has waiting.

    A slow destination's backlog grows at the pull's pace (Pipedrive beside HubSpot: ~1,900 a
    second); read and sorted in full, each of its batches took 14 ms at 100,000 rows.
    """
    store = Store(tmp_path / "s.db")

    def queue(n: int, start: int) -> None:
        payloads = [
            QueuedPayload(system, f"{system}-{i}", b"sealed" * 40, "h")
            for i in range(start, start + n)
            for system in ("crm", "deals")
        ]
        store.enqueue_page("f", "shop", payloads, [], None)

    queue(500, 0)
    small = _steps_for_next_batch(store, "deals")
    queue(20_000, 500)
    large = _steps_for_next_batch(store, "deals")
    assert large <= small + 1  # without the (system, id) index: ~35 times as many


def _plans(store: Store, work: Any) -> list[str]:
    """The query plan of every SELECT ``work()`` runs, one line per step of each."""
    seen: list[str] = []
    store.db.set_trace_callback(seen.append)
    try:
        work()
    finally:
        store.db.set_trace_callback(None)
    return [
        str(row[3])
        for sql in seen
        if sql.lstrip().upper().startswith("SELECT")
        for row in store.db.execute("EXPLAIN QUERY PLAN " + sql)
    ]


def test_counting_what_waits_reads_indexes_not_the_queued_rows(tmp_path: Path) -> None:
    """``/metrics`` counts the outbox at every scrape (and `status` on every call): a count
    that read each row for its payload hash (held rows are not waiting) took ~0.25 s on the
    event loop per 500,000 rows of a destination's backlog. Held rows are still left out."""
    store = Store(tmp_path / "s.db")
    payloads = [
        QueuedPayload(system, f"p{i}", b"sealed" * 40, "h")
        for i in range(300)
        for system in ("crm", "deals")
    ]
    store.enqueue_page("f", "shop", payloads, [], None)
    store.db.execute(
        "UPDATE outbox SET payload_hash=? WHERE id IN (SELECT id FROM outbox WHERE system='crm' "
        "ORDER BY id LIMIT 2)",
        (state.HELD,),
    )
    plans = _plans(store, store.outbox_counts)
    assert store.outbox_counts() == {"crm": 298, "deals": 300}
    # Rows read from the table: only those in the index of held rows (schema 28).
    scans = [plan for plan in plans if plan.startswith(("SCAN", "SEARCH"))]
    assert scans and all(
        "COVERING INDEX" in plan or plan.endswith("INDEX outbox_held") for plan in scans
    ), plans


def test_the_latest_dead_letters_cost_the_same_however_many_there_are(tmp_path: Path) -> None:
    """`status` lists the latest 20 dead letters: read and sorted all, 40,000 took 0.45 s."""

    def refused(store: Store, start: int, n: int) -> None:
        store.db.executemany(
            "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at) "
            "VALUES ('crm', ?, 'f', ?, 'INVALID_EMAIL', ?)",
            [
                (f"s{i}", b"sealed" * 40, f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}")
                for i in range(start, start + n)
            ],
        )

    store = Store(tmp_path / "s.db")
    refused(store, 0, 200)
    small, first = sqlite_steps(store, lambda: store.dead_letters(latest=20))
    refused(store, 200, 20_000)
    large, latest = sqlite_steps(store, lambda: store.dead_letters(latest=20))
    assert [d.subject_id for d in first] == [f"s{i}" for i in range(180, 200)]
    assert [d.subject_id for d in latest] == [d.subject_id for d in store.dead_letters()[-20:]]
    assert large <= small + 1  # without the index on (created_at, id): ~60 times as many


def test_a_store_keyed_by_subject_id_keeps_every_row_when_it_gets_subject_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Migration 8 re-keys identities, hashes and queued payloads; nothing is lost or mixed."""
    path = tmp_path / "v7.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:7]:
        db.executescript(script)
    db.execute("PRAGMA user_version=7")
    db.executemany(
        "INSERT INTO identities(system, subject_id, external_id) VALUES (?,?,?)",
        [("shop", "a", "1"), ("crm", "a", "901"), ("shop", "b", "2")],
    )
    db.execute("INSERT INTO delivered VALUES ('crm', 'a', 'hash-a', '2026-01-01')")
    db.execute(
        "INSERT INTO outbox(id, system, subject_id, flow, payload, payload_hash, enqueued_at, "
        "attempts) VALUES (41, 'crm', 'b', 'f', x'00ff', 'hash-b', '2026-01-02', 3)"
    )
    db.close()

    caplog.set_level(logging.INFO, logger="klantsync.state")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    (said,) = [r for r in caplog.records if r.getMessage() == "migrating the store"]
    assert (said.schema_from, said.schema_to) == (7, len(MIGRATIONS))  # type: ignore[attr-defined]
    numbers = store.subject_numbers(["a", "b", "c"])
    assert set(numbers) == {"a", "b"} and numbers["a"] != numbers["b"]
    assert store.external_ids("shop", ["a", "b"]) == {"a": "1", "b": "2"}
    assert store.external_id("crm", "a") == "901"
    assert store.subject_for_external("crm", "901") == "a"
    assert store.page_hashes(["crm"], ["a", "b"])[1] == {"crm": {"a": "hash-a"}}
    (row,) = store.outbox_batch("crm", 0, 10)
    assert (row.id, row.subject_id, row.payload, row.attempts) == (41, "b", b"\x00\xff", 3)
    assert row.subject_no == numbers["b"]
    for table in PER_SYSTEM_TABLES:  # the old key column is gone, not left beside the new
        columns = [c[1] for c in store.db.execute(f"PRAGMA table_info({table})")]
        assert "subject_no" in columns and "subject_id" not in columns, table
    # New ids still go above the migrated backlog.
    assert store.enqueue_page("f", "shop", _payloads(["c"]), [("c", "3")], None) == [42]


def test_new_subjects_get_numbers_in_the_order_they_are_queued(tmp_path: Path) -> None:
    """A page's new people sit side by side at the end of each per-system table's key."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", _payloads(["m", "c", "x"]), [("m", "1"), ("z", "9")], None)
    numbers = store.subject_numbers(["m", "c", "x", "z"])
    assert [numbers[s] for s in ("m", "c", "x", "z")] == [1, 2, 3, 4]
    rows = store.outbox_batch("crm", 0, 10)
    assert [(r.subject_id, r.subject_no) for r in rows] == [("m", 1), ("c", 2), ("x", 3)]
    store.acknowledge("crm", [Ack(r.id, r.subject_id, f"ext-{r.subject_id}", "h") for r in rows])
    assert store.external_ids("crm", ["m", "c", "x"]) == {"m": "ext-m", "c": "ext-c", "x": "ext-x"}
    assert store.subject_numbers(["m", "c", "x", "z"]) == numbers  # nothing renumbered


def test_a_page_of_known_and_new_people_keeps_the_known_numbers_and_numbers_the_rest(
    tmp_path: Path,
) -> None:
    """Numbering offers every id of a page a number at once: those who had one keep it, and
    everyone else is numbered above all numbers given, in the page's order, once each."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", _payloads(["a", "b"]), [], None)
    assert store.subject_numbers(["a", "b"]) == {"a": 1, "b": 2}

    asked: list[str] = []
    store.db.set_trace_callback(asked.append)
    numbers = store.subject_numbers(["n", "b", "m", "n", "a"], create=True)
    store.db.set_trace_callback(None)

    assert numbers["a"] == 1 and numbers["b"] == 2
    # Only those who had a number are looked up by id: the new ones' numbers are read off
    # the table's own key.
    by_id = [sql for sql in asked if sql.startswith("SELECT") and "subject_id IN" in sql]
    assert len(by_id) == 1 and "'a'" in by_id[0] and "'b'" in by_id[0]
    assert "'n'" not in by_id[0] and "'m'" not in by_id[0]
    assert numbers["n"] > 2 and numbers["m"] > numbers["n"]
    assert store.subject_numbers(["a", "b", "n", "m"]) == numbers
    assert store.db.execute("SELECT COUNT(*) FROM subjects").fetchone() == (4,)
    # Nobody later gets a number offered here, used or not.
    store.enqueue_page("f", "shop", _payloads(["z"]), [], None)
    assert store.subject_numbers(["z"])["z"] > 5
    # All known: nothing written, nothing handed out.
    given = store.db.execute("SELECT n FROM subject_numbers_given").fetchone()
    assert store.subject_numbers(["m", "a"], create=True) == {"m": numbers["m"], "a": 1}
    assert store.db.execute("SELECT n FROM subject_numbers_given").fetchone() == given
    assert store.subject_numbers([], create=True) == {}


def test_numbering_told_who_was_numbered_looks_them_up_once_and_trusts_only_the_table(
    tmp_path: Path,
) -> None:
    """A re-sync's page is everyone known: told so, the commit looks them up (one seek
    each) instead of offering each a number first. The hint decides only the order: who lost
    their number meanwhile (an erasure) or never had one is numbered anew, above all numbers
    given, in the page's order."""
    store = Store(tmp_path / "s.db")
    known = store.subject_numbers(["a", "b", "c"], create=True)
    store.db.execute("DELETE FROM subjects WHERE subject_id = 'c'")  # erased meanwhile

    asked: list[str] = []
    store.db.set_trace_callback(asked.append)
    numbers = store.subject_numbers(
        ["a", "n", "b", "c", "m"], create=True, numbered={"a", "b", "c", "never"}
    )
    store.db.set_trace_callback(None)

    assert numbers["a"] == known["a"] and numbers["b"] == known["b"]
    assert known["c"] < numbers["n"] < numbers["c"] < numbers["m"]
    assert store.subject_numbers(["a", "b", "c", "n", "m"]) == numbers
    # The known ones were not offered a number: no insert names them.
    inserts = [sql for sql in asked if sql.startswith("INSERT INTO subjects")]
    assert inserts and not any("'a'" in sql or "'b'" in sql for sql in inserts)

    # All known and told so: one lookup, nothing written, nothing handed out.
    given = store.db.execute("SELECT n FROM subject_numbers_given").fetchone()
    asked.clear()
    store.db.set_trace_callback(asked.append)
    assert store.subject_numbers(["b", "a"], create=True, numbered={"a", "b"}) == {
        "b": known["b"],
        "a": known["a"],
    }
    store.db.set_trace_callback(None)
    assert not [sql for sql in asked if sql.startswith("INSERT")]
    assert store.db.execute("SELECT n FROM subject_numbers_given").fetchone() == given


def test_an_erased_persons_number_is_never_given_to_a_newcomer(tmp_path: Path) -> None:
    """The newest person is erased while an acknowledgement of theirs waits to be committed
    (it carries their number); the next person gets a number of their own. Given the erased
    one's (SQLite's highest + 1), the acknowledgement attached the erased person's delivered
    hash and system id to the newcomer."""
    from connector.dsr_store import DsrStore

    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", _payloads(["a", "b"]), [], None)
    waiting = [
        Ack(r.id, r.subject_id, f"ext-{r.subject_id}", r.payload_hash, r.subject_no)
        for r in store.outbox_batch("crm", 0, 10)
        if r.subject_id == "b"
    ]
    DsrStore(store).delete_traces(["b"])
    assert store.subject_numbers(["b"]) == {}
    store.enqueue_page("f", "shop", _payloads(["c"]), [], None)

    store.acknowledge("crm", waiting)

    assert store.external_ids("crm", ["c"]) == {}
    assert store.page_hashes(["crm"], ["c"])[:2] == ({"crm": {"c": "hash-c"}}, {"crm": {}})
    assert store.subject_numbers(["c"]) == {"c": 3}
    # Reopened, the numbers handed out are still known.
    store.close()
    store = Store(tmp_path / "s.db")
    DsrStore(store).delete_traces(["c"])
    store.enqueue_page("f", "shop", _payloads(["d"]), [], None)
    assert store.subject_numbers(["a", "d"]) == {"a": 1, "d": 4}


def test_a_number_given_outside_the_store_s_numbering_is_not_given_again(tmp_path: Path) -> None:
    """A restore's carry-over numbers people by SQL of its own (the highest + 1): erased
    after, their number still counts as handed out."""
    from connector.dsr_store import DsrStore

    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", _payloads(["a"]), [], None)
    store.db.execute("INSERT INTO subjects(subject_id) VALUES ('carried')")
    store.enqueue_page("f", "shop", _payloads(["carried"]), [], None)
    DsrStore(store).delete_traces(["carried"])
    store.enqueue_page("f", "shop", _payloads(["b"]), [], None)
    assert store.subject_numbers(["a", "b"]) == {"a": 1, "b": 3}


def test_migration_20_numbers_newcomers_above_every_number_the_store_holds(
    tmp_path: Path,
) -> None:
    """A store from before keeps its people's numbers; the next newcomer's is above them."""
    path = tmp_path / "v19.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:19]:
        for statement in statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version=19")
    db.executemany(
        "INSERT INTO subjects(subject_no, subject_id) VALUES (?, ?)", [(1, "a"), (7, "b")]
    )
    db.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    store.enqueue_page("f", "shop", _payloads(["c"]), [], None)
    assert store.subject_numbers(["a", "b", "c"]) == {"a": 1, "b": 7, "c": 8}


def test_a_pages_lookups_by_subject_id_cost_the_same_whatever_the_store_holds(
    tmp_path: Path,
) -> None:
    """A page's hashes and ids are found by key, however many people a system holds.

    Joined to ``subjects`` in one query with a page's 100 ids and one system, SQLite's own
    choice was to read every row of that system and look each one's id up: at 20,000 people
    ~200 times the steps, and the connector's CPU per record doubled.
    """
    store = Store(tmp_path / "s.db")
    page = [f"s{i}" for i in range(200)]  # all known in both stores

    def add(people: int, start: int) -> None:
        subjects = [f"s{i}" for i in range(start, start + people)]
        store.enqueue_page("f", "shop", _payloads(subjects), [(s, f"e{s}") for s in subjects], None)
        rows = store.outbox_batch("crm", 0, people)
        store.acknowledge("crm", [Ack(r.id, r.subject_id, "x", "h", r.subject_no) for r in rows])

    def steps() -> int:
        hashes, _ = sqlite_steps(store, lambda: store.page_hashes(["crm"], page))
        ids, _ = sqlite_steps(store, lambda: store.external_ids("shop", page))
        return hashes + ids

    add(200, 0)
    small = steps()
    add(20_000, 200)
    assert store.page_hashes(["crm"], ["s5", "s20100"])[1] == {"crm": {"s5": "h", "s20100": "h"}}
    assert store.page_hashes(["crm"], ["s5", "nobody"])[:2] == ({"crm": {}}, {"crm": {"s5": "h"}})
    large = steps()
    assert large <= small + small // 2, (small, large)


def _refuse(store: Store, system: str, subject: str, payload_hash: str, reason: str) -> None:
    """Queue ``subject`` for ``system`` and dead-letter it, as a refused delivery does."""
    store.enqueue_page(
        "f", "shop", [QueuedPayload(system, subject, b"sealed", payload_hash)], [], None
    )
    (row,) = [r for r in store.outbox_batch(system, 0, 10) if r.subject_id == subject]
    store.dead_letter([(row, reason)])


def test_a_subject_refused_again_keeps_one_dead_letter_holding_the_latest_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest payload, hash, reason and time replace the old; the first time stays, and
    the refusals are counted."""
    store = Store(tmp_path / "s.db")
    monkeypatch.setattr("connector.store_dead_letters.utcnow", lambda: "2026-03-01T09:00:00+00:00")
    _refuse(store, "crm", "a", "hash-1", "VALIDATION_ERROR")
    _refuse(store, "mail", "a", "hash-m", "Invalid Resource")
    monkeypatch.setattr("connector.store_dead_letters.utcnow", lambda: "2026-03-05T09:00:00+00:00")
    _refuse(store, "crm", "a", "hash-2", "CONFLICT")
    crm = store.dead_letters("crm")
    assert [
        (d.subject_id, d.reason, d.first_refused_at, d.created_at, d.refusals) for d in crm
    ] == [("a", "CONFLICT", "2026-03-01T09:00:00+00:00", "2026-03-05T09:00:00+00:00", 2)]
    assert store.rejected_hashes(["crm", "mail"], ["a"]) == {
        "crm": {"a": "hash-2"},
        "mail": {"a": "hash-m"},
    }
    assert [d.system for d in store.dead_letters()] == ["mail", "crm"]  # latest refusal last
    assert store.outbox_count() == 0


def test_a_delivery_deletes_the_subjects_dead_letter_for_that_system_only(tmp_path: Path) -> None:
    """Delivered to the CRM: the CRM's refusal goes, the newsletter's and other people's stay."""
    store = Store(tmp_path / "s.db")
    for subject in ("a", "b"):
        _refuse(store, "crm", subject, "hash-" + subject, "VALIDATION_ERROR")
    _refuse(store, "mail", "a", "hash-m", "Invalid Resource")
    store.enqueue_page("f", "shop", _payloads(["a"]), [], None)
    (row,) = store.outbox_batch("crm", 0, 10)
    store.acknowledge("crm", [Ack(row.id, "a", "901", row.payload_hash, row.subject_no)])
    assert sorted((d.system, d.subject_id) for d in store.dead_letters()) == [
        ("crm", "b"),
        ("mail", "a"),
    ]
    assert store.rejected_hashes(["crm"], ["a", "b"]) == {"crm": {"b": "hash-b"}}


def test_an_outdated_dead_letter_goes_only_as_the_page_read_it(tmp_path: Path) -> None:
    """A page that found a letter describing nothing drops it, but not one refused again
    since it was read (another payload), nor the subject's letters for other systems."""
    store = Store(tmp_path / "s.db")
    _refuse(store, "crm", "a", "hash-1", "CONFLICT")
    _refuse(store, "mail", "a", "hash-m", "Invalid Resource")
    _refuse(store, "crm", "b", "hash-b", "CONFLICT")
    read = store.page_dead_letters(["crm"], ["a", "b"])["crm"]
    assert read["a"] == ("f", "hash-1")
    _refuse(store, "crm", "b", "hash-b2", "CONFLICT")  # refused again meanwhile
    outdated = [("crm", sid, letter.payload_hash) for sid, letter in read.items()]
    assert store.drop_outdated_letters(outdated) == 1
    assert sorted((d.system, d.subject_id) for d in store.dead_letters()) == [
        ("crm", "b"),
        ("mail", "a"),
    ]


def test_migration_15_drops_dead_letters_delivered_since(tmp_path: Path) -> None:
    """Before schema 11 a delivery did not clear a dead letter: a store from then listed
    records the system had accepted since. Those go; one refused after its last delivery,
    or never delivered, stays."""
    path = tmp_path / "v14.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:14]:
        for statement in statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version=14")
    db.executemany("INSERT INTO subjects(subject_id) VALUES (?)", [("a",), ("b",), ("c",)])
    numbers = dict(db.execute("SELECT subject_id, subject_no FROM subjects"))
    db.executemany(
        "INSERT INTO dead_letters(system, subject_id, flow, payload, payload_hash, reason, "
        "created_at) VALUES ('crm', ?, 'f', x'00', 'h', 'VALIDATION_ERROR', ?)",
        [
            ("a", "2026-01-01T00:00:00+00:00"),  # delivered on the 2nd: goes
            ("b", "2026-01-03T00:00:00+00:00"),  # refused after its delivery: stays
            ("c", "2026-01-01T00:00:00+00:00"),  # never delivered: stays
        ],
    )
    db.executemany(
        "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at) "
        "VALUES ('crm', ?, 'h', ?)",
        [(numbers["a"], "2026-01-02T00:00:00+00:00"), (numbers["b"], "2026-01-02T00:00:00+00:00")],
    )
    db.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert sorted(d.subject_id for d in store.dead_letters()) == ["b", "c"]


def test_migration_11_folds_a_subjects_dead_letters_into_its_latest(tmp_path: Path) -> None:
    """Rows from before schema 11 become one per subject and system: the newest, counted."""
    path = tmp_path / "v10.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:10]:
        db.executescript(script)
    db.execute("PRAGMA user_version=10")
    db.executemany(
        "INSERT INTO dead_letters(system, subject_id, flow, payload, payload_hash, reason, "
        "created_at) VALUES (?,?,'f',x'00',?,?,?)",
        [
            ("crm", "a", "h1", "VALIDATION_ERROR", "2026-01-01T00:00:00+00:00"),
            ("crm", "b", "hb", "CONFLICT", "2026-01-02T00:00:00+00:00"),
            ("crm", "a", "h2", "VALIDATION_ERROR", "2026-01-03T00:00:00+00:00"),
            ("crm", "a", "h3", "CONFLICT", "2026-01-04T00:00:00+00:00"),
        ],
    )
    db.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    found = {
        d.subject_id: (d.reason, d.first_refused_at, d.created_at, d.refusals)
        for d in store.dead_letters()
    }
    assert found == {
        "a": ("CONFLICT", "2026-01-01T00:00:00+00:00", "2026-01-04T00:00:00+00:00", 3),
        "b": ("CONFLICT", "2026-01-02T00:00:00+00:00", "2026-01-02T00:00:00+00:00", 1),
    }
    assert store.rejected_hashes(["crm"], ["a", "b"]) == {"crm": {"a": "h3", "b": "hb"}}
    with pytest.raises(sqlite3.IntegrityError):  # one per subject and system from now on
        store.db.execute(
            "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at) "
            "VALUES ('crm', 'a', 'f', x'00', 'x', 'now')"
        )


# -- what cannot be a store ----------------------------------------------------------------


def test_a_store_path_below_a_regular_file_is_a_store_path_error(tmp_path: Path) -> None:
    """A folder on the store's path that is a file: StorePathError naming both, said the same
    by the check that creates nothing."""
    (tmp_path / "state").write_text("not a folder")
    path = tmp_path / "state" / "sub" / "klantsync.db"
    with pytest.raises(StorePathError) as caught:
        Store(path)
    assert caught.value.path == path
    assert str(caught.value) == (
        f"{path}: {tmp_path / 'state'} is a file, not a folder, so the store cannot go there; "
        "point store.path at a file in a folder klantsync can create and write"
    )
    assert store_path_problem(path) == caught.value.problem


def test_a_store_path_that_is_a_folder_is_a_store_path_error(tmp_path: Path) -> None:
    """A folder where the store file should be is refused, not opened."""
    with pytest.raises(StorePathError, match=r"is a folder, not a file; point store\.path"):
        Store(tmp_path)
    assert store_path_problem(tmp_path) is not None
    assert store_path_problem(tmp_path / "new" / "klantsync.db") is None


def test_a_store_path_through_a_symlink_loop_is_a_store_path_error(tmp_path: Path) -> None:
    """A store.path that is a symlink loop, or leads through one, can hold no store, as
    opening it says: the commands that only read the store said there was none yet (exit 0)."""
    loop = tmp_path / "klantsync.db"
    loop.symlink_to(loop.name)
    looped_folder = tmp_path / "state"
    looped_folder.symlink_to(looped_folder.name)
    for path in (loop, looped_folder / "klantsync.db"):
        with pytest.raises(StorePathError) as caught:
            storefile.store_exists(path)
        assert str(caught.value) == (
            f"{path}: cannot be reached (a symlink loop); point store.path at a file in a "
            "folder klantsync can create and write"
        )
        with pytest.raises(StorePathError):
            Store(path)


def test_a_store_path_through_a_symlink_to_a_folder_not_there_is_a_store_path_error(
    tmp_path: Path,
) -> None:
    """A store.path that is (or leads through) a symlink into a folder that is not there can
    hold no store, and every command says so: the commands that only read the store said
    none was created yet, which the first sync would do, and the sync refused the path."""
    gone = tmp_path / "gone"
    linked_folder = tmp_path / "state"
    linked_folder.symlink_to(gone)
    linked_file = tmp_path / "klantsync.db"
    linked_file.symlink_to(gone / "klantsync.db")
    for path, said in (
        (
            linked_folder / "klantsync.db",
            f"{linked_folder} is a symlink to a folder that is not there",
        ),
        (linked_file, f"is a symlink to {gone / 'klantsync.db'}, in a folder that is not there"),
    ):
        with pytest.raises(StorePathError, match=re.escape(said)):
            storefile.store_exists(path)
        with pytest.raises(StorePathError):
            Store(path)
    assert not gone.exists()


def test_a_file_claiming_a_schema_without_its_tables_is_not_a_klantsync_store(
    tmp_path: Path,
) -> None:
    """An SQLite file that says schema 9 but has none of its tables is refused as not a
    store, before a migration fails on a table it lacks."""
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=9")
    db.close()
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value) == (
        f"{path}: not a klantsync store: it says schema 9 but holds none of its tables; point "
        "store.path at the klantsync store, or restore the store from a backup"
    )


def test_a_store_missing_some_of_its_tables_is_damaged(tmp_path: Path) -> None:
    """A store without some of the tables its schema has is damaged: restore a backup."""
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE outbox")
    db.close()
    with pytest.raises(StoreError, match=r"damaged: schema \d+ without its tables outbox; resto"):
        Store(path)


def test_another_applications_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """A foreign SQLite database gets no klantsync tables added, whatever its tables are
    called (one named like ours made the first migration fail with a traceback)."""
    for tables in (["cursors"], ["orders", "invoices"]):
        path = tmp_path / f"{tables[0]}.db"
        db = sqlite3.connect(path)
        for table in tables:
            db.execute(f"CREATE TABLE {table} (x)")
        db.commit()
        db.close()
        with pytest.raises(StoreError) as caught:
            Store(path)
        assert str(caught.value) == (
            f"{path}: not a klantsync store: an SQLite database with tables of its own and no "
            "klantsync schema; point store.path at the klantsync store, or at a file that does "
            "not exist yet"
        )
        db = sqlite3.connect(path)
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master ORDER BY name")]
        assert names == sorted(tables)
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # not made WAL
        db.close()
        assert sorted(p.name for p in tmp_path.glob(f"{tables[0]}.db*")) == [path.name]


def test_a_file_refused_as_no_klantsync_store_keeps_its_mode(tmp_path: Path) -> None:
    """A file at store.path that is not a klantsync store is refused and left as it was, its
    mode included: it was made owner-only before it was judged, and another application's
    database (or, for root, /dev/null) became unreadable to the users it serves."""
    other = tmp_path / "orders.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE orders (x)")
        db.commit()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    for path in (other, text):
        path.chmod(0o644)
        with pytest.raises(StoreError, match="not a klantsync store"):
            Store(path)
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_file_that_is_not_sqlite_is_not_a_klantsync_store(tmp_path: Path) -> None:
    """A file of something else at store.path is refused with what to do, not SQLite's words."""
    path = tmp_path / "s.db"
    path.write_text("[store]\npath = 'klantsync.db'\n" * 40)
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value).startswith(
        f"{path}: not a klantsync store: the file is not an SQLite database"
    )
    assert "restore the store from a backup" in str(caught.value)


def test_a_damaged_store_found_when_opened_says_restore_it(tmp_path: Path) -> None:
    """A store whose first pages are garbage is named damaged, with what to do."""
    path = tmp_path / "s.db"
    Store(path).close()
    with path.open("r+b") as file:
        file.seek(100)  # past the header: the schema page itself
        file.write(b"\xff" * 3000)
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value) == (
        f"{path}: the store is damaged (SQLite: database disk image is malformed); stop every "
        "klantsync on it and restore it from a backup"
    )


def test_a_store_file_emptied_to_zero_bytes_is_refused_not_made_anew(tmp_path: Path) -> None:
    """A store truncated to nothing (a full disk under a copy, a torn file system) is a
    damaged store, refused naming the file and left as it is. Taken for a file to make a
    store in, it was migrated in place, and a sync found an empty suppression list: every
    erased person the shop still holds came back."""
    path = tmp_path / "klantsync.db"
    store = Store(path)
    store.suppress(["0" * 32], "erasure", None)
    store.close()
    path.write_bytes(b"")
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value) == (
        f"{path}: the store is empty: damaged or truncated (a file of 0 bytes); stop every "
        "klantsync on it and restore it from a backup"
    )
    assert path.stat().st_size == 0


def test_a_store_whose_making_failed_is_made_at_the_next_open_not_refused_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new store is never an empty file, even while it is being made or when its making
    fails part-way (a full disk): an empty file left so was refused from then on, and
    another process opening the store while it was made refused it too."""
    path = tmp_path / "klantsync.db"

    def on_a_full_disk(self: Store) -> None:
        assert path.stat().st_size > 0  # SQLite's header is there before anything else
        raise disk_full_error()

    with monkeypatch.context() as patched:
        patched.setattr(Store, "_configure", on_a_full_disk)
        with pytest.raises(StoreError, match="the disk holding the store is full"):
            Store(path)
    assert [p.name for p in tmp_path.iterdir()] == ["klantsync.db"]  # nothing made aside left
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()


def test_a_new_store_made_where_a_deleted_store_s_log_lies_is_new_not_that_store(
    tmp_path: Path,
) -> None:
    """A store deleted (or lost, or moved) while its -wal still held its last transactions (a
    daemon killed with -9 leaves it) leaves that log and its -shm beside the path. SQLite
    does not tell whose a log is: the new store made at the path read it in on its first
    open, and came up as the deleted store's last pages (or as a damaged store, refused)."""
    path = tmp_path / "klantsync.db"
    deleted = Store(path)
    deleted.db.execute("PRAGMA wal_autocheckpoint=0")
    with deleted.transaction() as db:
        db.execute("CREATE TABLE the_deleted_stores_own (x)")
    log = {s: path.with_name(path.name + s).read_bytes() for s in ("-wal", "-shm")}
    deleted.close()
    path.unlink()
    for suffix, content in log.items():
        path.with_name(path.name + suffix).write_bytes(content)  # as the killed daemon left it
    store = Store(path)
    tables = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master")}
    assert "the_deleted_stores_own" not in tables
    assert store.schema_version == len(MIGRATIONS)
    assert store.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store.close()


def test_a_store_path_linked_to_a_file_not_there_yet_gets_a_new_store_there(
    tmp_path: Path,
) -> None:
    """A store.path that is a symlink to a file not made yet (a state directory linked in
    before the first sync) is where a new store is made, at the link's target, as
    ``status`` says. SQLite, given the link, made an empty file there, refused from then on
    by every command as a store truncated to nothing, to restore from a backup."""
    real = tmp_path / "disk" / "klantsync.db"
    real.parent.mkdir()
    link = tmp_path / "state" / "klantsync.db"
    link.parent.mkdir()
    link.symlink_to(real)
    store = Store(link)
    store.suppress(["0" * 32], "erasure", None)
    store.close()
    assert link.is_symlink() and real.stat().st_size > 0
    store = Store(link)
    assert store.schema_version == len(MIGRATIONS)
    assert store.suppressed(["0" * 32]) == {"0" * 32}
    store.close()


def test_a_store_already_there_opens_on_a_disk_too_full_for_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the store must still open to be read (``status``, ``dsr list``, a
    ``backup`` to another disk): opening it wrote a new store's header aside first, to link
    in only where no store was, and the full disk refused every command."""
    path = tmp_path / "klantsync.db"
    store = Store(path)
    store.suppress(["0" * 32], "erasure", None)
    store.close()
    connect = sqlite3.connect

    def on_a_full_disk(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        # A file with nothing in it yet cannot be given its first page.
        if Path(database).exists() and Path(database).stat().st_size == 0:
            raise disk_full_error()
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", on_a_full_disk)
    store = Store(path)
    assert store.suppressed(["0" * 32]) == {"0" * 32}
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["klantsync.db"]


def test_runs_left_running_are_closed_out_as_interrupted(tmp_path: Path) -> None:
    """Runs a stopped process left marked running become interrupted; finished ones stay."""
    store = Store(tmp_path / "s.db")
    done = store.start_run("a")
    store.finish_run(done, "ok", "{}")
    store.start_run("b")
    assert store.close_interrupted_runs() == 1
    runs = store.last_runs()
    assert runs["a"][2] == "ok"
    assert runs["b"][1:3] == (None, "interrupted")
    assert store.close_interrupted_runs() == 0


def test_each_flow_s_latest_run_costs_the_same_however_many_runs_there_are(
    tmp_path: Path,
) -> None:
    """`status`, ``/admin/status`` and every sync's start read each flow's latest run:
    grouped by flow, that walked every run kept (100,000 in three years of a run every 15
    minutes). Found flow by flow with seeks, it costs the same for a handful or years."""

    def ran(store: Store, n: int) -> None:
        store.db.executemany(
            "INSERT INTO runs(flow, started_at, finished_at, status, summary) "
            "VALUES (?, ?, ?, 'ok', '{}')",
            [(f"flow-{i % 3}", f"s{i:06d}", f"f{i:06d}") for i in range(n)],
        )

    small, large = Store(tmp_path / "small.db"), Store(tmp_path / "large.db")
    ran(small, 30)
    ran(large, 20_000)
    for store in (small, large):
        last = store.start_run("flow-1")
        store.finish_run(last, "failed", '{"errors": []}')
    few, runs = sqlite_steps(small, small.last_runs)
    many, latest = sqlite_steps(large, large.last_runs)
    assert many <= few + 1  # grouped by flow: ~70 times as many
    assert latest["flow-1"][2:] == ("failed", '{"errors": []}')
    assert {flow: run[:2] for flow, run in latest.items() if flow != "flow-1"} == {
        "flow-0": ("s019998", "f019998"),
        "flow-2": ("s019997", "f019997"),
    }
    assert sorted(runs) == sorted(latest) == ["flow-0", "flow-1", "flow-2"]


def test_status_counts_the_audit_entries_without_reading_them(tmp_path: Path) -> None:
    """`status` counted the audit trail's rows at every call, ~80 ms at 2 million entries
    (and ``/admin/status`` on the daemon's event loop). The seqs of the oldest and the
    newest entry kept give the same count, also after retention purged the oldest."""
    from connector import audit

    store = Store(tmp_path / "s.db")
    assert store.counts()["audit"] == 0
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(2_000)])
    # Each step that reads the trail seeks one entry (SEARCH), none walks it (SCAN).
    plans = [plan for plan in _plans(store, store.counts) if plan.split()[1:2] == ["audit"]]
    assert plans and all(plan == "SEARCH audit" for plan in plans), plans
    assert store.counts()["audit"] == 2_000
    audit.purge_through(store, 500)
    (rows,) = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()
    assert store.counts()["audit"] == rows == 2_000 - 500 + 1


def test_a_migration_another_process_ran_meanwhile_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes open an older store at once: the one that waited for the write lock
    finds the step done (the schema read again under the lock) and does not run it twice."""
    store = Store(tmp_path / "klantsync.db")
    try:
        real = Store.schema_version.fget
        assert real is not None
        seen = iter([len(MIGRATIONS) - 1])  # what it read before the other process finished

        def stale_first(self: Store) -> int:
            return next(seen, None) or real(self)

        monkeypatch.setattr(Store, "schema_version", property(stale_first))
        store.migrate()
        assert store.schema_version == len(MIGRATIONS)
    finally:
        store.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_an_upgrade_killed_between_two_steps_leaves_the_schema_it_started_from(
    tmp_path: Path,
) -> None:
    """A kill -9 (or a power cut) part-way through an upgrade over several versions leaves
    the schema it started from, which the klantsync it was upgraded from still opens; steps
    committed one by one left one in between, which that klantsync refused as newer."""
    path = tmp_path / "klantsync.db"
    db = store_at(path, 7)
    add_people(db, 50, numbered=False)
    db.close()
    killer = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        import connector.state as state
        import connector.store_base as store_base
        from connector.schema import MIGRATIONS
        real = store_base.statements
        def killed_before_step_ten(script):
            if script == MIGRATIONS[9]:
                os._exit(137)  # killed here, with steps 8 and 9 run
            return real(script)
        store_base.statements = killed_before_step_ten
        state.Store(Path({str(path)!r}))
        """
    )
    run = subprocess.run([sys.executable, "-c", killer], capture_output=True, cwd=REPO)
    assert run.returncode == 137, run.stderr.decode()
    assert _version(path) == 7
    store = Store(path)  # and the next open upgrades it whole
    assert store.schema_version == len(MIGRATIONS)
    assert store.db.execute("SELECT COUNT(*) FROM identities").fetchone() == (50,)
    store.close()


def test_an_upgrade_that_fills_the_disk_on_a_later_step_leaves_the_schema_it_started_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 8 rewrites the per-person tables and needs room for their copy: a store at
    schema 5 upgraded on a nearly full disk fails there, said as a full disk, and stays at
    schema 5 (not at 7, which the klantsync of schema 5 refused as newer)."""
    path = tmp_path / "klantsync.db"
    db = store_at(path, 5)
    add_people(db, 3000, numbered=False)
    db.close()
    configure = Store._configure

    def on_a_nearly_full_disk(self: Store) -> None:
        configure(self)
        (pages,) = self.db.execute("PRAGMA page_count").fetchone()
        self.db.execute(f"PRAGMA max_page_count={pages + 8}")  # room for small steps only

    monkeypatch.setattr(Store, "_configure", on_a_nearly_full_disk)
    with pytest.raises(StoreError, match="the disk holding the store is full"):
        Store(path)
    assert _version(path) == 5


def _rebuilding_dsr_requests(deleting_requests: bool) -> str:
    """A step rebuilding the table ``dsr_systems`` refers to, as SQLite's procedure for
    changing a table has it; with ``deleting_requests``, one that loses its rows on the way."""
    copied = "" if deleting_requests else "INSERT INTO dsr_requests_new SELECT * FROM dsr_requests;"
    return f"""
    CREATE TABLE dsr_requests_new (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject_id TEXT NOT NULL,
        received_at TEXT NOT NULL, deadline TEXT NOT NULL, extension_reason TEXT,
        status TEXT NOT NULL, source TEXT NOT NULL,
        manifest BLOB, payload BLOB, receipt TEXT, completed_at TEXT
    );
    {copied}
    DROP TABLE dsr_requests;
    ALTER TABLE dsr_requests_new RENAME TO dsr_requests;
    """


@pytest.mark.parametrize("deleting_requests", [False, True])
def test_a_step_may_rebuild_a_table_others_refer_to_but_not_break_their_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deleting_requests: bool
) -> None:
    """PRAGMA foreign_keys is a no-op inside the upgrade's one transaction: the upgrade turns
    them off around it, so a step can rebuild a table others refer to, and checks the
    references before it commits: a step that leaves rows referring to nothing is rolled back."""
    path = tmp_path / "klantsync.db"
    store = Store(path)
    store.db.execute(
        "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, source) "
        "VALUES ('r1', 'erase', 's', 't', 't', 'open', 'cli')"
    )
    store.db.execute(
        "INSERT INTO dsr_systems(request_id, system, status, updated_at) "
        "VALUES ('r1', 'crm', 'pending', 't')"
    )
    store.close()
    latest = len(MIGRATIONS)
    monkeypatch.setattr(
        store_base, "MIGRATIONS", [*MIGRATIONS, _rebuilding_dsr_requests(deleting_requests)]
    )
    if deleting_requests:
        with pytest.raises(StoreError) as caught:
            Store(path)
        assert str(caught.value) == (
            f"{path}: migrating the store from schema {latest} to {latest + 1} would leave rows "
            "of dsr_systems referring to rows that are not there; it is left at schema "
            f"{latest}: keep the klantsync version that last used it, and report this as a bug"
        )
        assert _version(path) == latest
        return
    store = Store(path)
    assert store.schema_version == latest + 1
    assert store.db.execute("SELECT request_id FROM dsr_systems").fetchall() == [("r1",)]
    assert store.db.execute("PRAGMA foreign_keys").fetchone() == (1,)  # enforced again
    store.close()


def test_a_store_another_process_is_creating_is_not_refused_as_another_applications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes opening a new store at once (the daemon starting while `dsr erase` runs
    on a fresh deployment): the schema version and the tables are read as of one moment.
    Read apart, the other's first migration committed in between made the store look like
    another application's database (tables, no klantsync schema), and the command failed."""
    path = tmp_path / "klantsync.db"
    tables = storefile._tables
    other_ran: list[bool] = []

    def the_other_process_commits_meanwhile(db: sqlite3.Connection) -> frozenset[str]:
        if not other_ran:
            other_ran.append(True)
            Store(path).close()  # the other process, done between the two reads
        return tables(db)

    monkeypatch.setattr(storefile, "_tables", the_other_process_commits_meanwhile)
    store = Store(path)
    assert other_ran and store.schema_version == len(MIGRATIONS)
    store.close()


def test_a_full_disk_a_read_only_store_and_a_held_lock_are_said_with_what_to_do(
    tmp_path: Path,
) -> None:
    """SQLite's codes for a full disk, a failing disk, no write permission and a lock held
    too long become messages naming the store and what to do; any other error stays a bug."""
    path = tmp_path / "store.db"
    Store(path).close()

    full = failure(path, disk_full_error())
    assert full is not None and str(full).startswith(
        f"{path}: the disk holding the store is full (SQLite: database or disk is full); "
        "the write was rolled back and nothing queued is lost: free space and run again"
    )

    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as read_only:
        reader.execute("CREATE TABLE x (y)")
    reader.close()
    said = failure(path, read_only.value)
    assert said is not None and "the store cannot be written" in str(said)

    holder, waiter = sqlite3.connect(path), sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        waiter.execute("BEGIN IMMEDIATE")
    holder.rollback()
    holder.close()
    waiter.close()
    said = failure(path, busy.value)
    assert said is not None and "held the store's write lock for too long" in str(said)

    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]
    said = failure(path, io_error)
    assert said is not None and "could not be read or written" in str(said)

    bug = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as no_table:
        bug.execute("SELECT * FROM nowhere")
    assert failure(path, no_table.value) is None


def test_a_full_disk_sqlite_says_as_an_i_o_error_is_said_as_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk SQLite fails to grow a -shm it makes anew (the store opened after the
    last process closed it) with an I/O error, not "full": said as a failing disk to check,
    while the disk only lacked space. Read with room on the disk, it stays a failing disk."""
    path = tmp_path / "store.db"
    Store(path).close()
    shm_error = sqlite3.OperationalError("disk I/O error")
    shm_error.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHMSIZE  # type: ignore[attr-defined]
    room = os.statvfs(path.parent)
    assert room.f_bavail * room.f_frsize >= 1 << 20  # the test's disk has room
    said = failure(path, shm_error)
    assert said is not None and "could not be read or written" in str(said)

    class FullDisk(NamedTuple):
        f_bavail: int = 3
        f_frsize: int = 4096

    monkeypatch.setattr(os, "statvfs", lambda folder: FullDisk())
    said = failure(path, shm_error)
    assert str(said).startswith(
        f"{path}: the disk holding the store is full (SQLite: disk I/O error); the write was "
        "rolled back and nothing queued is lost: free space and run again"
    )
    short_read = sqlite3.OperationalError("disk I/O error")
    short_read.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHORT_READ  # type: ignore[attr-defined]
    said = failure(path, short_read)
    assert said is not None and "could not be read or written" in str(said)


def test_the_suppression_list_held_in_memory_sees_every_writer_at_once(tmp_path: Path) -> None:
    """An entry added by another process, even by plain SQL, is seen by the next check; one
    removed is gone from it (the triggers of migration 12 move the change count)."""
    path = tmp_path / "store.db"
    store, other = Store(path), Store(path)
    assert store.suppressed(["a", "b"]) == set() and not store.anyone_suppressed()
    other.suppress(["a"], "erasure", "er-1")
    assert store.suppressed(["a", "b"]) == {"a"} and store.anyone_suppressed()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "INSERT INTO suppression(subject_id, kind, request_id, created_at) "
        "VALUES ('b', 'erasure', 'er-2', '2026-11-29T00:00:00+00:00')"
    )
    assert store.suppressed(["a", "b"]) == {"a", "b"}
    raw.execute("DELETE FROM suppression WHERE subject_id='a'")
    raw.close()
    assert store.suppressed(["a", "b"]) == {"b"}
    store.close()
    other.close()


def test_a_suppression_list_too_long_to_hold_is_asked_in_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector.store_suppression

    monkeypatch.setattr(connector.store_suppression, "SUPPRESSION_HELD_MAX", 2)
    store = Store(tmp_path / "store.db")
    store.suppress(["a", "b", "c"], "erasure", "er-1")
    asked: list[str] = []
    store.db.set_trace_callback(asked.append)
    assert store.suppressed(["a", "c", "d"]) == {"a", "c"} and store.anyone_suppressed()
    assert any("FROM suppression WHERE subject_id IN" in sql for sql in asked)  # not held
    store.close()


def test_a_suppression_rolled_back_never_stands_in_for_one_committed_later(
    tmp_path: Path,
) -> None:
    """A check inside a transaction that adds an entry and then rolls back leaves no copy
    behind that a later, different change could be taken for."""
    path = tmp_path / "store.db"
    store, other = Store(path), Store(path)
    assert store.suppressed(["x", "y"]) == set()
    with pytest.raises(RuntimeError), store.transaction():
        store.suppress(["x"], "erasure", "er-1")
        assert store.suppressed(["x"]) == {"x"}  # its own change, seen in its transaction
        raise RuntimeError("rolled back")
    other.suppress(["y"], "erasure", "er-2")  # the count moves by one again, to what it was
    assert store.suppressed(["x", "y"]) == {"y"}
    store.close()
    other.close()


def test_the_suppression_triggers_are_there_at_the_latest_schema(tmp_path: Path) -> None:
    """A migration that rebuilt the suppression table would drop the triggers the copy held
    in memory depends on."""
    store = Store(tmp_path / "store.db")
    rows = store.db.execute(
        "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='suppression'"
    ).fetchall()
    assert sorted(name for (name,) in rows) == [
        "suppression_added",
        "suppression_changed",
        "suppression_removed",
    ]
    store.close()


def test_the_store_and_its_wal_and_shm_are_owner_only_under_a_default_umask(
    tmp_path: Path,
) -> None:
    """Under umask 022 (a shell, sudo, a container) SQLite made the store 0644, its -wal and
    -shm with it: the sealed outbox, subject ids and wrapped keys readable by every local
    user. A store an earlier version left so is narrowed when opened."""
    import os
    import stat

    def modes(path: Path) -> dict[str, int]:
        names = {"": path, "-wal": path.with_name(path.name + "-wal")}
        names["-shm"] = path.with_name(path.name + "-shm")
        return {k: stat.S_IMODE(p.stat().st_mode) for k, p in names.items() if p.exists()}

    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "a.db")
        store.enqueue_page("f", "shop", [QueuedPayload("crm", "s1", b"x", "h")], [], None)
        made = modes(store.path)
        store.close()
        legacy = tmp_path / "legacy.db"
        Store(legacy).close()
        legacy.chmod(0o644)
        reopened = Store(legacy)
        narrowed = modes(legacy)
        reopened.close()
    finally:
        os.umask(old)
    assert set(made) == {"", "-wal", "-shm"} and set(made.values()) == {0o600}
    assert narrowed[""] == 0o600


def test_a_cursor_set_under_another_shape_is_not_used(tmp_path: Path) -> None:
    """A cursor remembers the shape of the flow it was set under (its destinations and
    mappings); asked under another, there is none. One set before shapes (NULL) is used."""
    store = Store(tmp_path / "a.db")
    store.set_cursor("f", "shop", "page-7", "shape-a")
    assert store.get_cursor("f", "shop", "shape-a") == "page-7"
    assert store.get_cursor("f", "shop", "shape-b") is None
    assert store.get_cursor("f", "shop") == "page-7"
    store.db.execute("UPDATE cursors SET shape=NULL")
    assert store.get_cursor("f", "shop", "shape-b") == "page-7"
    store.set_cursor("f", "shop", "page-8")  # no shape given: the one it had stays
    store.set_cursor("f", "shop", "page-9", "shape-b")
    store.set_cursor("f", "shop", "page-10")
    assert store.get_cursor("f", "shop", "shape-b") == "page-10"


def test_a_flow_whose_queued_write_another_flow_took_reads_in_full_until_a_full_read_ends(
    tmp_path: Path,
) -> None:
    """Flow `web` queued Anna for the CRM; flow `shop`'s write of her takes the row. `web`'s
    cursor is not used until a full read that started under the mark ends; its pages keep
    the mark, and a mark set while it read (another write taken) stays for the next run. A
    flow's own newer write, and a write into a held row, mark nothing."""
    store = Store(tmp_path / "a.db")
    store.enqueue_page("web", "shopify", _payloads(["anna", "bert"]), [], "c1", shape="w")
    store.enqueue_page("web", "shopify", _payloads(["anna"]), [], "c2", shape="w")
    assert store.reread_mark("web", "shopify") is None
    store.db.execute(
        "UPDATE outbox SET payload_hash='held' WHERE subject_no="
        "(SELECT subject_no FROM subjects WHERE subject_id='bert')"
    )
    store.enqueue_page("shop", "shop", _payloads(["bert"], "shop:"), [], None, shape="s")
    assert store.reread_mark("web", "shopify") is None

    store.enqueue_page("shop", "shop", _payloads(["anna"], "shop:"), [], None, shape="s")
    mark = store.reread_mark("web", "shopify")
    assert mark is not None and store.get_cursor("web", "shopify", "w") is None
    assert store.reread_mark("shop", "shop") is None

    store.enqueue_page("web", "shopify", _payloads(["carla"]), [], "c3", shape="w")  # its read
    assert store.reread_mark("web", "shopify") == mark
    store.reread_done("web", "shopify", mark, "w")
    assert store.get_cursor("web", "shopify", "w") == "c3"

    store.enqueue_page("web", "shopify", _payloads(["dirk"]), [], "c4", shape="w")
    store.enqueue_page("shop", "shop", _payloads(["dirk"], "shop:"), [], None, shape="s")
    again = store.reread_mark("web", "shopify")
    assert again is not None and again != mark
    store.reread_done("web", "shopify", mark, "w")  # a read that started under the old mark
    assert store.reread_mark("web", "shopify") == again


def test_a_flow_with_no_cursor_yet_whose_queued_write_another_flow_took_reads_in_full(
    tmp_path: Path,
) -> None:
    """`web` has no cursor yet: a webhook queued Anna, and its first pull is under way, its
    first page read with her write found queued (nothing to queue again). `shop`'s write
    takes that row before the page commits: marking only the cursors there were marked
    nothing, the page then set `web`'s first cursor past her, and its next run resumed
    from it. Given each flow's source, the mark waits on a cursor of its own, which the
    page's keeps."""
    sources = {"web": "shopify", "shop": "shop"}
    store = Store(tmp_path / "n.db")
    store.enqueue_page("web", "shopify", _payloads(["anna"]), [], None, move_cursor=False)
    store.enqueue_page(
        "shop", "shop", _payloads(["anna"], "shop:"), [], None, shape="s", sources=sources
    )
    mark = store.reread_mark("web", "shopify")
    assert mark is not None and store.get_cursor("web", "shopify") is None
    store.enqueue_page("web", "shopify", [], [], "c1", shape="w")  # its first page
    assert store.reread_mark("web", "shopify") == mark
    assert store.get_cursor("web", "shopify", "w") is None
    store.reread_done("web", "shopify", mark, "w")
    assert store.get_cursor("web", "shopify", "w") == "c1"
    # A flow the map does not name (taken out of the config) gets no cursor.
    store.enqueue_page("gone", "woo", _payloads(["bert"]), [], None, move_cursor=False)
    store.enqueue_page(
        "shop", "shop", _payloads(["bert"], "shop:"), [], None, shape="s", sources=sources
    )
    assert store.reread_mark("gone", "woo") is None and store.get_cursor("gone", "woo") is None


def test_a_withdrawal_taking_another_flow_s_queued_write_marks_nothing(tmp_path: Path) -> None:
    """`shop` queues Anna's withdrawal of consent where `web`'s write of her waited: `web`
    is not sent to read in full, where its source (still saying she consents) would queue a
    renewal that subscribed her again at once. The withdrawal stands until `web`'s source
    changes, as it would have had the write been delivered first."""
    store = Store(tmp_path / "w.db")
    store.enqueue_page("web", "shopify", _payloads(["anna"]), [], "c1", shape="w")
    withdrawal = [QueuedPayload("crm", "anna", b"sealed", f"{WITHDRAWAL}hash-anna")]
    store.enqueue_page("shop", "shop", withdrawal, [], None, shape="s")
    assert store.reread_mark("web", "shopify") is None
    assert store.get_cursor("web", "shopify", "w") == "c1"


def test_the_same_payload_taking_another_flow_s_queued_write_marks_nothing(
    tmp_path: Path,
) -> None:
    """Two sources that agree about Anna: `shop` queues the very payload `web` had queued.
    Nothing of `web`'s is lost, so its cursor stays as it was; marked, both flows would read
    their whole source at every run while the system is down. A payload that differs marks."""
    store = Store(tmp_path / "same.db")
    store.enqueue_page("web", "shopify", _payloads(["anna", "bert"]), [], "c1", shape="w")
    store.enqueue_page("shop", "shop", _payloads(["anna"]), [], None, shape="s")
    assert store.reread_mark("web", "shopify") is None
    assert store.get_cursor("web", "shopify", "w") == "c1"
    other = [QueuedPayload("crm", "bert", b"sealed", "hash-bert-other")]
    store.enqueue_page("shop", "shop", other, [], None, shape="s")
    assert store.reread_mark("web", "shopify") is not None


def test_a_mark_set_while_a_full_read_runs_stays_though_the_store_was_opened_anew(
    tmp_path: Path,
) -> None:
    """Outbox ids start again above the rows in the table when the store is opened, so an
    emptied outbox hands out the ids of before. `web`'s mark was set by another process (a
    sync before the daemon started); while the daemon's full read under it runs, `shop`'s
    write takes a row `web` just queued. That mark is a new one: the read ending clears the
    mark it started under, not this one, which its next run reads in full for."""
    first = Store(tmp_path / "a.db")
    first.enqueue_page("web", "shopify", _payloads(["anna"]), [], "c1", shape="w")
    first.enqueue_page("shop", "shop", _payloads(["anna"], "shop:"), [], None, shape="s")
    started_under = first.reread_mark("web", "shopify")
    assert started_under is not None
    rows = first.outbox_batch("crm", 0, 10)
    first.acknowledge("crm", [Ack(r.id, r.subject_id, None, r.payload_hash) for r in rows])
    first.close()

    store = Store(tmp_path / "a.db")  # the daemon starts, the outbox empty
    assert store.reread_mark("web", "shopify") == started_under
    store.enqueue_page("web", "shopify", _payloads(["bert"]), [], "c2", shape="w")
    store.enqueue_page("shop", "shop", _payloads(["bert"], "shop:"), [], None, shape="s")
    store.reread_done("web", "shopify", started_under, "w")
    assert store.reread_mark("web", "shopify") is not None
    assert store.get_cursor("web", "shopify", "w") is None


class _CommitFails:
    """The store's connection, but COMMIT fails as on an I/O error (the transaction stays
    open, as SQLite leaves it)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_failed_commit_ends_the_transaction_and_says_what_failed(tmp_path: Path) -> None:
    """A COMMIT that fails left the transaction open: the next statement of a durable write
    (setting the sync level back) failed in turn with "Safety level may not be changed
    inside a transaction", which hid the I/O error and left every later commit synced."""
    store = Store(tmp_path / "k.db")
    real = store.db
    store.db = _CommitFails(real)  # type: ignore[assignment]
    with (
        pytest.raises(sqlite3.OperationalError, match="disk I/O error"),
        store.durable_transaction() as db,
    ):
        db.execute(
            "INSERT INTO cursors(flow, system, cursor, updated_at) VALUES (?,?,?,?)",
            ("f", "s", "c", "t"),
        )
    store.db = real
    assert not real.in_transaction
    assert real.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again
    assert real.execute("SELECT COUNT(*) FROM cursors").fetchone() == (0,)


def test_a_statement_that_fills_the_disk_raises_the_full_disk_not_a_rollback_error(
    tmp_path: Path,
) -> None:
    """A statement failing with SQLITE_FULL: SQLite has rolled the transaction back itself,
    and the ROLLBACK that followed raised "no transaction is active" in its place, so the
    operator lost "free space and run again". (A full disk simulated by max_page_count.)"""
    store = Store(tmp_path / "s.db")
    (pages,) = store.db.execute("PRAGMA page_count").fetchone()
    store.db.execute(f"PRAGMA max_page_count={pages + 5}")
    with pytest.raises(sqlite3.Error) as caught, store.transaction() as db:
        for n in range(200):
            db.execute(
                "INSERT INTO opt_outs(system, subject_id, created_at) VALUES (?,?,?)",
                ("news", "x" * 500 + str(n), "2026-11-30T00:00:00+00:00"),
            )
    assert caught.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
    assert not store.db.in_transaction


def test_rows_in_asks_past_the_variable_limit_in_chunks_with_its_other_parameters() -> None:
    """rows_in runs a statement per 500 values, each binding the parameters before and after
    its own: 1,201 values past the 999 variables older SQLite allows in one statement."""
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t (kind TEXT, n INTEGER, flag INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [("a", n, n % 2) for n in range(1300)])
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [("b", n, 1) for n in range(1300)])
        asked = list(range(1201))
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        rows = store_base.rows_in(
            db,
            "SELECT n FROM t WHERE kind=? AND n IN (?...) AND flag=? ORDER BY n",
            asked,
            before=("a",),
            after=(1,),
        )
        assert [n for (n,) in rows] == [n for n in asked if n % 2]
        assert len(statements) == 3  # 500 + 500 + 201
        assert store_base.rows_in(db, "SELECT n FROM t WHERE n IN (?...)", []) == []
        with pytest.raises(ValueError, match="once"):
            store_base.rows_in(db, "SELECT n FROM t WHERE n IN (1, 2)", asked)
