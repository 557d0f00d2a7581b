"""What the connector holds about one subject is found by key, not by reading whole tables."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connector import audit
from connector.dsr_store import FINAL_STATUSES, SYSTEM_STATUSES, DsrStore, RequestRow
from connector.dsr_views import make_view, system_views, views
from connector.state import RESEND, Ack, QueuedPayload, Store
from tests.conftest import sqlite_steps
from tests.store_versions import as_the_version_before


def _fill(store: Store, people: int, systems: tuple[str, ...] = ("shop", "crm", "news")) -> None:
    with store.transaction() as db:
        numbers = store.subject_numbers([f"s{n:07d}" for n in range(people)], create=True)
        for system in systems:
            db.executemany(
                "INSERT INTO identities(system, subject_no, external_id) VALUES (?,?,?)",
                [(system, numbers[f"s{n:07d}"], str(n)) for n in range(people)],
            )
            db.executemany(
                "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at) "
                "VALUES (?,?,?,?)",
                [(system, numbers[f"s{n:07d}"], "h", "2026-01-01") for n in range(people)],
            )


def test_holdings_and_erasing_traces_cost_the_same_whatever_the_store_holds(
    tmp_path: Path,
) -> None:
    """At 200,000 customers these read whole tables: ~95 ms on the event loop per request."""
    small, large = Store(tmp_path / "small.db"), Store(tmp_path / "large.db")
    _fill(small, 200)
    _fill(large, 20_000)
    costs = []
    for store in (small, large):
        db = DsrStore(store)
        holdings, _ = sqlite_steps(store, lambda db=db: db.holdings("s0000100"))
        erasing, _ = sqlite_steps(store, lambda db=db: db.delete_traces(["s0000150"]))
        costs.append(holdings + erasing)
    assert costs[1] <= costs[0] + 1  # full reads of the large store: ~180 times as many


def test_every_system_with_rows_is_found_and_erased_configured_or_not(tmp_path: Path) -> None:
    """A system since removed from the config still has its rows found and deleted."""
    store = Store(tmp_path / "s.db")
    _fill(store, 50, systems=("crm", "old-crm", "shop"))
    store.enqueue_page(
        "f", "shop", [QueuedPayload("old-crm", "s0000007", b"sealed", "h")], [], None
    )
    db = DsrStore(store)
    assert db.identities("s0000007") == {"crm": "7", "old-crm": "7", "shop": "7"}
    held = db.holdings("s0000007")
    assert set(held["last_delivered"]) == {"crm", "old-crm", "shop"}
    assert set(held["queued_for_delivery"]) == {"old-crm"}
    counts = db.delete_traces(["s0000007", "s0000008"])
    assert counts["identities"] == 6 and counts["delivered"] == 6 and counts["outbox"] == 1
    assert db.identities("s0000007") == {} == db.identities("s0000008")
    assert db.identities("s0000009") == {"crm": "9", "old-crm": "9", "shop": "9"}


def test_a_resend_is_marked_only_for_the_systems_named(tmp_path: Path) -> None:
    """A correction marks to be sent again only the systems sent a corrected field; named
    none, nothing is marked; named nothing (``None``), every system is."""
    store = Store(tmp_path / "s.db")
    _fill(store, 3)
    db = DsrStore(store)

    def delivered() -> dict[str, str]:
        (_, by_system, _) = store.page_hashes(["shop", "crm", "news"], ["s0000001"])
        return {system: hashes["s0000001"] for system, hashes in by_system.items()}

    assert db.resend_on_next_sync(["s0000001"], ["crm"]) == 1
    assert delivered() == {"shop": "h", "crm": f"{RESEND}:h", "news": "h"}
    assert db.resend_on_next_sync(["s0000001"], []) == 0
    assert db.resend_on_next_sync(["s0000001"]) == 2  # crm's is marked already
    assert set(delivered().values()) == {f"{RESEND}:h"}


def test_by_subject_refuses_a_table_not_keyed_by_system_and_subject(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(ValueError, match="not keyed"):
        store.by_subject("audit", ["x"])
    assert store.by_subject("identities", ["x"]) == ("0", ())  # nothing held: matches nothing


def test_a_delivery_acknowledged_after_its_subject_was_erased_leaves_nothing(
    tmp_path: Path,
) -> None:
    """An erasure between a batch's call and its acknowledgement: no row outlives it."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", [QueuedPayload("crm", "gone", b"sealed", "h")], [], None)
    (row,) = store.outbox_batch("crm", 0, 10)
    DsrStore(store).delete_traces(["gone"])
    store.acknowledge("crm", [Ack(row.id, "gone", "contact-1", "h", row.subject_no)])
    for table in ("identities", "delivered", "outbox", "subjects"):
        (count,) = store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
        assert count == 0, table


def test_purging_a_source_drops_the_numbers_of_people_nothing_is_held_for(tmp_path: Path) -> None:
    """shop/redact: a person known only through that shop loses their subject number too; one
    delivered to a destination keeps it (and that system's rows)."""
    store = Store(tmp_path / "s.db")
    _fill(store, 4, systems=("shopify",))
    store.db.execute("DELETE FROM delivered")  # known to the shop only
    with store.transaction() as db:
        no = store.subject_numbers(["s0000001"])["s0000001"]
        db.execute(
            "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at) "
            "VALUES ('crm', ?, 'h', '2026-01-01')",
            (no,),
        )
    counts = DsrStore(store).purge_source("shopify", ["shopify"])
    assert counts["identities"] == 4 and counts["subjects"] == 3
    left = [row[0] for row in store.db.execute("SELECT subject_id FROM subjects")]
    assert left == ["s0000001"]
    assert store.subject_numbers(["s0000001"]) == {"s0000001": no}


def _requests_store(path: Path, count: int) -> Store:
    """A store holding ``count`` completed erasures, each of two systems."""
    store = Store(path)
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, "
            "source, receipt, completed_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"er-20250101-{n:08x}",
                    "erase",
                    f"{n:032x}",
                    "2025-01-01T00:00:00+00:00",
                    "2025-02-01T00:00:00+00:00",
                    "completed",
                    "cli",
                    '{"signed": "receipt"}',
                    "2025-01-02T00:00:00+00:00",
                )
                for n in range(count)
            ],
        )
        db.executemany(
            "INSERT INTO dsr_systems(request_id, system, status, updated_at) VALUES (?,?,?,?)",
            [
                (f"er-20250101-{n:08x}", system, "done", "2025-01-02T00:00:00+00:00")
                for n in range(count)
                for system in ("shop", "crm")
            ],
        )
    return store


def _statements(store: Store, work: Callable[[], Any]) -> int:
    seen: list[str] = []
    store.db.set_trace_callback(seen.append)
    try:
        work()
    finally:
        store.db.set_trace_callback(None)
    return len(seen)


def test_listing_the_requests_reads_their_systems_in_one_statement(tmp_path: Path) -> None:
    """`dsr list` and ``GET /admin/dsr`` read every request's systems at once, not with a
    statement per request (a table never purged: years of requests)."""
    small = _requests_store(tmp_path / "small.db", 100)
    large = _requests_store(tmp_path / "large.db", 1000)
    counts = [_statements(store, lambda store=store: views(store)) for store in (small, large)]
    assert counts[0] == counts[1]
    listed = views(large)
    assert len(listed) == 1000
    assert [s.system for s in listed[-1].systems] == ["crm", "shop"]
    assert views(large, open_only=True) == []


def _columns_read(store: Store, work: Callable[[], Any]) -> set[tuple[str, str]]:
    """The (table, column) pairs the statements ``work()`` prepares read."""
    read: set[tuple[str, str]] = set()

    def note(action: int, table: str | None, column: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_READ and table and column:
            read.add((table, column))
        return sqlite3.SQLITE_OK

    store.db.set_authorizer(note)
    try:
        work()
    finally:
        store.db.set_authorizer(None)
    return read


def test_listing_the_requests_reads_only_what_the_listing_shows(tmp_path: Path) -> None:
    """`dsr list` and ``GET /admin/dsr`` show each request's dates, status and systems'
    states: reading every receipt, sealed manifest and payload and each system's result for
    it (decoded, then dropped) took 0.5 s at 6,000 requests, on the daemon's event loop.
    What they show is what `dsr show ID` shows of the request, which reads it whole."""
    store = _requests_store(tmp_path / "s.db", 20)
    store.db.execute(
        "UPDATE dsr_requests SET status='open', receipt=NULL, completed_at=NULL, "
        "manifest=x'00', payload=x'00' WHERE id=?",
        ("er-20250101-00000003",),
    )
    moment = dt.datetime(2025, 1, 20, tzinfo=dt.UTC)
    listed: list[Any] = []
    read = _columns_read(store, lambda: listed.extend(views(store, now=lambda: moment)))
    unshown = {("dsr_requests", "manifest"), ("dsr_requests", "payload")}
    assert read and not read & {*unshown, ("dsr_systems", "result")}, read
    # The text of `dsr list` shows no system's part: none is read.
    read = _columns_read(store, lambda: views(store, with_systems=False))
    assert read and not read & unshown and not {t for t, _ in read} - {"dsr_requests"}, read
    dsr = DsrStore(store)
    for view in listed:
        row = dsr.get(view.id)
        assert row is not None
        whole = make_view(row, system_views(dsr.systems(row.id)), moment)
        assert view.as_dict() == whole.as_dict()
    assert [v.has_receipt for v in listed].count(False) == 1


def test_the_audit_entries_about_a_person_are_read_through_their_index(tmp_path: Path) -> None:
    """An access copy lists the audit entries about the person: by subject id, through
    the partial index migration 26 adds to a store made before it, not by reading the whole
    trail (years of sync runs and batches, which name nobody)."""
    path = tmp_path / "s.db"
    Store(path).close()
    as_the_version_before(path)
    store = Store(path)  # migrated again
    for n in range(3):
        audit.append(store, "sync.run", {"flow": "f", "n": n})
        audit.append(store, "dsr.received", {"request": f"r{n}"}, subject_id=f"s{n}")
    audit.append(store, "sync.subject_moved", {"from": "s0", "to": "s2"}, subject_id="s2")
    db = DsrStore(store)
    seen: list[str] = []
    store.db.set_trace_callback(seen.append)
    try:
        about = db.audit_about(["s0", "s2"])
        of_request = db.audit_about(["s1"], request="r1")
        moved_at = db.moved_away_at("s0", {"s2"})
        received = db.received_seqs(["s0", "s2"])
    finally:
        store.db.set_trace_callback(None)
    assert [(e.kind, e.subject_id) for e in about] == [
        ("dsr.received", "s0"),
        ("dsr.received", "s2"),
        ("sync.subject_moved", "s2"),
    ]
    assert [e.data for e in of_request] == [{"request": "r1"}]
    assert moved_at == about[-1].seq
    assert received == {"r0": about[0].seq, "r2": about[1].seq}
    reads = [s for s in seen if "FROM audit" in s]
    assert len(reads) == 4
    for statement in reads:
        plan = " | ".join(
            str(row[-1]) for row in store.db.execute("EXPLAIN QUERY PLAN " + statement)
        )
        assert "USING INDEX audit_subject" in plan, plan


def _correction(request_id: str, subject_id: str) -> RequestRow:
    return RequestRow(
        request_id, "rectify", subject_id, "2026-03-02T09:00:00+00:00",
        "2026-04-02T21:59:59+00:00", None, "open", "cli", b"sealed", None, None, None,
    )  # fmt: skip


def test_a_superseded_part_is_final_and_no_run_s_outcome_opens_it_again(tmp_path: Path) -> None:
    """``superseded`` closes the parts of a correction not final yet, naming the erasure
    (in its detail and result), and a run of the correction still under way cannot set the
    part to what it did after (failed, done)."""
    assert "superseded" in SYSTEM_STATUSES and "superseded" in FINAL_STATUSES
    db = DsrStore(Store(tmp_path / "s.db"))
    db.create(_correction("rc-20260302-00000001", "s1"), ["crm", "shop", "news"])
    db.create(_correction("rc-20260302-00000002", "s2"), ["crm"])
    db.set_system("rc-20260302-00000001", "shop", "done", result={"fields": ["city"]})
    db.set_system("rc-20260302-00000001", "crm", "failed", result={"attempted": 1})
    assert [r.id for r in db.open_corrections(["s1", "s9"])] == ["rc-20260302-00000001"]
    closed = db.supersede("rc-20260302-00000001", "er-20260304-0000000a")
    assert closed == ["crm", "news"]
    parts = {p.system: p for p in db.systems("rc-20260302-00000001")}
    assert {name: p.status for name, p in parts.items()} == {
        "crm": "superseded",
        "news": "superseded",
        "shop": "done",
    }
    crm = parts["crm"]
    assert crm.detail is not None and "er-20260304-0000000a" in crm.detail
    assert crm.result == {"attempted": 1, "superseded_by": "er-20260304-0000000a"}
    assert "superseded_by" not in parts["shop"].result
    for status in ("done", "failed", "pending"):
        db.set_system("rc-20260302-00000001", "crm", status)
    assert db.systems("rc-20260302-00000001")[0].status == "superseded"
    assert db.complete("rc-20260302-00000001", "{}", "2026-03-04T10:00:00+00:00")
    # Another subject's correction is left as it is.
    assert db.systems("rc-20260302-00000002")[0].status == "pending"
