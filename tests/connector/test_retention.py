"""Retention: what is past its period goes, nothing else does, and the purge is audited."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, retention, retention_bundles
from connector.cli import main
from connector.config import Config, load_config
from connector.crypto import BUNDLE_PATH_CONTEXT, Keyring
from connector.dsr import DsrService
from connector.keyset import open_keyring
from connector.schema import MIGRATIONS
from connector.state import HELD, Store
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    MASTER_KEY,
    RuntimeFactory,
    damaged_store,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
#: The keys a new store gets under the tests' master key (see connector/keyset.py).
KEYS = Keyring(base64.urlsafe_b64decode(MASTER_KEY))


def _ago(days: float) -> str:
    return (NOW - dt.timedelta(days=days)).isoformat(timespec="seconds")


def _dead_letter(store: Store, created_at: str, subject: str = "s") -> None:
    store.db.execute(
        "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at) "
        "VALUES ('crm', ?, 'f', x'00', '400 invalid', ?)",
        (subject, created_at),
    )


def _queued(store: Store, enqueued_at: str, subject: str, payload_hash: str) -> None:
    (number,) = store.subject_numbers([subject], create=True).values()
    store.db.execute(
        "INSERT INTO outbox(system, subject_no, flow, payload, payload_hash, enqueued_at, "
        "former) VALUES ('crm', ?, 'f', x'00', ?, ?, x'00')",
        (number, payload_hash, enqueued_at),
    )


def _request(store: Store, rid: str, completed_at: str | None) -> None:
    store.db.execute(
        "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, source, "
        "manifest, completed_at) VALUES (?, 'erase', 's', ?, ?, ?, 'cli', x'01', ?)",
        (rid, _ago(400), _ago(370), "done" if completed_at else "running", completed_at),
    )


def _bundle(store: Store, directory: Path, created_at: str) -> int:
    directory.mkdir(parents=True)
    (directory / "access.json").write_text("{}")
    (directory / "data").mkdir()
    (directory / "data/crm.json").write_text("{}")
    bundle_id = retention.record_bundle(store, KEYS, directory)
    store.db.execute("UPDATE bundles SET created_at=? WHERE id=?", (created_at, bundle_id))
    return bundle_id


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)  # retention defaults: 30/30/30 days, audit 2555 days


@pytest.fixture
def store(config: Config) -> Store:
    return Store(config.store_path)


def _job(store: Store, status: str, finished_at: str | None) -> None:
    store.db.execute(
        "INSERT INTO jobs(kind, params, status, created_at, finished_at, result) "
        "VALUES ('sync', NULL, ?, ?, ?, '{}')",
        (status, _ago(400), finished_at),
    )


def _webhook_id(store: Store, delivery_id: str, received_at: str) -> None:
    store.db.execute(
        "INSERT INTO webhook_deliveries(system, delivery_id, received_at) VALUES ('shop', ?, ?)",
        (delivery_id, received_at),
    )


def _erased_record(store: Store, record_key: str, erased_at: str) -> None:
    store.db.execute(
        "INSERT INTO erased_records(record_key, request_id, erased_at) VALUES (?, 'er-1', ?)",
        (record_key, erased_at),
    )


def _fill(store: Store, tmp_path: Path) -> None:
    _dead_letter(store, _ago(31), "s-old")  # one dead letter per subject and system
    _dead_letter(store, _ago(29), "s-young")
    _queued(store, _ago(31), "s-held-old", HELD)  # a former address's write, held unsent
    _queued(store, _ago(29), "s-held-young", HELD)
    _queued(store, _ago(31), "s-waiting", "hash")  # waits for delivery, however long
    _request(store, "old-done", _ago(31))
    _request(store, "young-done", _ago(1))
    _request(store, "open", None)
    _bundle(store, tmp_path / "out/old", _ago(31))
    (tmp_path / "out/old/operator-notes.txt").write_text("not the connector's")
    _bundle(store, tmp_path / "out/young", _ago(2))
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3)], ts=_ago(2600))
    audit.append_many(store, [("sync.run", {"n": 3}, None)], ts=_ago(10))
    _job(store, "done", _ago(31))
    _job(store, "failed", _ago(31))
    _job(store, "done", _ago(29))
    _job(store, "queued", None)
    _job(store, "running", None)
    _webhook_id(store, "old", _ago(8))
    _webhook_id(store, "young", _ago(6))
    _erased_record(store, "old", _ago(8))  # kept as long as a delivery id
    _erased_record(store, "young", _ago(6))


async def test_sweep_purges_what_is_past_its_period_and_nothing_else(
    store: Store, config: Config, tmp_path: Path
) -> None:
    """Old dead letters, held former writes, manifests, bundles, audit entries, jobs,
    webhook ids and erased records' keyed ids go; young and open ones stay, and what waits
    for delivery."""
    _fill(store, tmp_path)
    report = await retention.sweep(store, config, KEYS, NOW)
    assert (report.dead_letters, report.manifests, report.bundles, report.audit_entries) == (
        1,
        1,
        1,
        3,
    )
    assert (report.jobs, report.webhook_ids, report.held_writes) == (2, 1, 1)
    queued_left = sorted(r[0] for r in store.db.execute("SELECT enqueued_at FROM outbox"))
    assert queued_left == [_ago(31), _ago(29)]
    assert store.outbox_counts() == {"crm": 1}
    jobs_left = sorted(r[0] for r in store.db.execute("SELECT status FROM jobs"))
    assert jobs_left == ["done", "queued", "running"]
    ids_left = [r[0] for r in store.db.execute("SELECT delivery_id FROM webhook_deliveries")]
    assert ids_left == ["young"]
    assert report.erased_records == 1
    assert [r[0] for r in store.db.execute("SELECT record_key FROM erased_records")] == ["young"]
    assert report.errors == []
    assert [d.created_at for d in store.dead_letters()] == [_ago(29)]
    manifests = dict(store.db.execute("SELECT id, manifest IS NOT NULL FROM dsr_requests"))
    assert manifests == {"old-done": 0, "young-done": 1, "open": 1}
    assert not (tmp_path / "out/old/access.json").exists()
    assert not (tmp_path / "out/old/data").exists()
    assert (tmp_path / "out/old/operator-notes.txt").exists()
    assert (tmp_path / "out/young/data/crm.json").exists()
    assert store.db.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 1
    kept = [e.data for e in audit.entries(store)]
    assert kept[0] == {"n": 3}
    assert kept[-1] == {
        "dead_letters": 1,
        "held_writes": 1,
        "manifests": 1,
        "bundles": 1,
        "audit_entries": 3,
        "jobs": 2,
        "webhook_ids": 1,
        "erased_records": 1,
        "runs": 0,
        "replaced_stores": 0,
    }
    result = audit.verify(store)
    assert result.ok and result.anchor_seq == 3


async def test_a_sweep_that_cannot_record_its_purges_purges_nothing(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails as the sweep writes its retention.purged entry (a full disk; or the
    process dies there): every purge is undone with it, so nothing is gone that the audit
    trail does not show. Each purge was its own write before, and stayed."""
    from tests.conftest import disk_full_error

    _fill(store, tmp_path)
    real = audit.append

    def full(store_: Store, kind: str, *args: Any, **kwargs: Any) -> int:
        if kind == audit.RETENTION_PURGED:
            raise disk_full_error()
        return real(store_, kind, *args, **kwargs)

    monkeypatch.setattr(audit, "append", full)
    with pytest.raises(sqlite3.OperationalError):
        await retention.sweep(store, config, KEYS, NOW)
    assert len(store.dead_letters()) == 2
    assert store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 5
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 4
    monkeypatch.setattr(audit, "append", real)
    again = await retention.sweep(store, config, KEYS, NOW)
    assert (again.dead_letters, again.jobs, again.audit_entries) == (1, 2, 3)
    assert audit.verify(store).ok


def _fill_past_one_transaction(store: Store, folder: Path) -> None:
    """:func:`_fill`, with more past their period than a few transactions of four take:
    dead letters, webhook ids, finished jobs and audit entries (ahead of the young one)."""
    audit.append_many(store, [("sync.run", {"n": -n}, None) for n in range(6)], ts=_ago(2700))
    _fill(store, folder)
    for n in range(9):
        _dead_letter(store, _ago(40 + n), f"s-many-{n}")
        _webhook_id(store, f"old-{n}", _ago(9))
        _job(store, "done", _ago(35))


def _held_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """What the store holds of what a sweep purges, audit entries but the sweep's own."""
    sweeps = (audit.AUDIT_ANCHORED, audit.RETENTION_PURGED)
    return {
        "dead_letters": store.db.execute("SELECT * FROM dead_letters ORDER BY id").fetchall(),
        "outbox": store.db.execute("SELECT id, enqueued_at FROM outbox ORDER BY id").fetchall(),
        "manifests": store.db.execute(
            "SELECT id, manifest FROM dsr_requests ORDER BY id"
        ).fetchall(),
        "bundles": store.db.execute("SELECT created_at FROM bundles ORDER BY id").fetchall(),
        "jobs": store.db.execute("SELECT * FROM jobs ORDER BY id").fetchall(),
        "webhook_ids": store.db.execute(
            "SELECT * FROM webhook_deliveries ORDER BY delivery_id"
        ).fetchall(),
        "erased_records": store.db.execute("SELECT * FROM erased_records").fetchall(),
        "runs": store.db.execute("SELECT * FROM runs ORDER BY id").fetchall(),
        "audit": [(e.kind, e.data) for e in audit.entries(store) if e.kind not in sweeps],
    }


def _purged_by_entries(store: Store) -> dict[str, int]:
    """What the store's retention.purged entries count, added up by kind."""
    total = dict.fromkeys(retention.PURGED_KINDS, 0)
    for entry in audit.entries(store):
        if entry.kind == audit.RETENTION_PURGED:
            for kind, count in entry.data.items():
                total[kind] += count
    return total


def _commits(store: Store) -> list[str]:
    """The COMMITs the store's connection runs from now on, as it runs them."""
    seen: list[str] = []
    store.db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def test_a_sweep_with_more_to_purge_than_one_transaction_takes_commits_in_several(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite lets one writer in at a time: a sweep that purged everything in one
    transaction kept every other writer of the store (in the daemon: syncs, webhooks,
    acknowledgements, requests) waiting until it ended, seconds on a large store. It
    purges a bounded share a transaction, each counted by its own retention.purged entry,
    and ends where one transaction ended."""
    whole = Store(tmp_path / "whole" / "klantsync.db")
    _fill_past_one_transaction(whole, tmp_path / "whole")
    one = _commits(whole)
    expected = retention.sweep_now(whole, config, KEYS, NOW)
    assert one == ["COMMIT"]

    monkeypatch.setattr(retention, "BATCH_ROWS", 4)
    _fill_past_one_transaction(store, tmp_path / "shared")
    commits = _commits(store)
    report = retention.sweep_now(store, config, KEYS, NOW)
    entries = [e.data for e in audit.entries(store) if e.kind == audit.RETENTION_PURGED]
    assert len(commits) >= len(entries) > 1  # an entry each that purged something
    assert all(0 < sum(counts.values()) <= 4 for counts in entries)
    assert report.counts == expected.counts == _purged_by_entries(store)
    assert report.errors == expected.errors == []
    assert _held_rows(store) == _held_rows(whole)
    assert audit.verify(store).ok
    assert (tmp_path / "shared/out/old/operator-notes.txt").exists()
    assert not (tmp_path / "shared/out/old/access.json").exists()


async def test_another_writer_gets_turns_between_a_sweep_s_transactions(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon sweeps on its loop: a sweep that never let go of it held up every
    webhook, acknowledgement and request until it had purged everything. Between two of
    its transactions the loop's other tasks run, and the store takes their writes then (a
    second connection here, waiting for no lock)."""
    monkeypatch.setattr(retention, "BATCH_ROWS", 4)
    _fill_past_one_transaction(store, tmp_path)
    commits = _commits(store)
    sweeping = asyncio.ensure_future(retention.sweep(store, config, KEYS, NOW))
    written_after: list[int] = []
    with contextlib.closing(sqlite3.connect(store.path, timeout=0, isolation_level=None)) as other:
        while not sweeping.done():
            if commits:
                other.execute("BEGIN IMMEDIATE")
                other.execute(
                    "INSERT INTO webhook_deliveries(system, delivery_id, received_at) "
                    "VALUES ('writer', ?, ?)",
                    (f"between-{len(written_after)}", _ago(0)),
                )
                other.execute("COMMIT")
                written_after.append(len(commits))
            await asyncio.sleep(0)
    report = sweeping.result()
    assert report.errors == [] and report.webhook_ids == 10
    assert written_after and written_after[0] < len(commits)
    held = store.db.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE system='writer'")
    assert held.fetchone()[0] == len(written_after)


@pytest.mark.parametrize("cut_short", ["cancelled", "failed"])
async def test_a_sweep_cut_short_after_its_first_transaction_leaves_a_store_the_next_finishes(
    store: Store,
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cut_short: str,
) -> None:
    """A sweep cut short between two transactions (the daemon stopping) or in the middle
    of one (a full disk; a kill) keeps what it committed, each transaction's purges and
    the entry counting them: nothing is gone that the trail does not count, and the trail
    verifies. The next sweep purges the rest, and the two purged what one would have."""
    from tests.conftest import disk_full_error

    monkeypatch.setattr(retention, "BATCH_ROWS", 4)
    _fill_past_one_transaction(store, tmp_path)
    due = await retention.sweep(store, config, None, NOW, dry_run=True)
    real = audit.append
    if cut_short == "failed":

        def full(store_: Store, kind: str, *args: Any, **kwargs: Any) -> int:
            if kind == audit.RETENTION_PURGED and _purged_by_entries(store_)["dead_letters"]:
                raise disk_full_error()  # the second transaction's entry
            return real(store_, kind, *args, **kwargs)

        monkeypatch.setattr(audit, "append", full)
        with pytest.raises(sqlite3.OperationalError):
            await retention.sweep(store, config, KEYS, NOW)
    else:
        commits = _commits(store)
        sweeping = asyncio.ensure_future(retention.sweep(store, config, KEYS, NOW))
        store.db.set_trace_callback(
            lambda sql: sweeping.cancel() if sql == "COMMIT" and not commits else None
        )
        with pytest.raises(asyncio.CancelledError):
            await sweeping
    store.db.set_trace_callback(None)
    monkeypatch.setattr(audit, "append", real)
    first = _purged_by_entries(store)
    assert first["dead_letters"] == 4 and sum(first.values()) == 4  # the first transaction
    assert audit.verify(store).ok
    left = await retention.sweep(store, config, None, NOW, dry_run=True)
    assert {k: first[k] + left.counts[k] for k in first} == due.counts  # gone is counted

    rest = await retention.sweep(store, config, KEYS, NOW)
    assert rest.errors == []
    assert {k: first[k] + rest.counts[k] for k in first} == due.counts
    assert _purged_by_entries(store) == due.counts
    assert (await retention.sweep(store, config, None, NOW, dry_run=True)).total == 0
    assert audit.verify(store).ok


async def test_dry_run_counts_and_changes_nothing(
    store: Store, config: Config, tmp_path: Path
) -> None:
    """A dry run reports the same counts as a real run and deletes nothing."""
    _fill(store, tmp_path)
    before = store.counts()
    report = await retention.sweep(store, config, KEYS, NOW, dry_run=True)
    assert (report.dead_letters, report.manifests, report.bundles, report.audit_entries) == (
        1,
        1,
        1,
        3,
    )
    assert (report.jobs, report.webhook_ids, report.erased_records) == (2, 1, 1)
    assert store.counts() == before
    assert (tmp_path / "out/old/access.json").exists()


async def test_nothing_expired_means_no_purge_entry(store: Store, config: Config) -> None:
    """A sweep with nothing to delete leaves the audit log as it was."""
    audit.append(store, "sync.run", {})
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.total == 0
    assert [e.kind for e in audit.entries(store)] == ["sync.run"]


async def test_audit_prefix_ends_at_the_first_young_entry(store: Store, config: Config) -> None:
    """An old entry after a younger one (a clock step back) is kept, so only a prefix goes."""
    audit.append_many(store, [("a", {}, None)], ts=_ago(3000))
    audit.append_many(store, [("b", {}, None)], ts=_ago(5))
    audit.append_many(store, [("c", {}, None)], ts=_ago(3000))
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.audit_entries == 1
    assert [e.kind for e in audit.entries(store)][:2] == ["b", "c"]
    assert audit.verify(store).ok


async def test_tampered_audit_prefix_is_not_purged(store: Store, config: Config) -> None:
    """Retention refuses to purge audit entries that fail verification, and says so."""
    audit.append_many(store, [("a", {"n": n}, None) for n in range(3)], ts=_ago(3000))
    store.db.execute("UPDATE audit SET kind='edited' WHERE seq=2")
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.audit_entries == 0
    assert report.errors and "entry 2" in report.errors[0]
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3


async def test_a_prefix_deleted_by_hand_through_a_purge_s_anchor_entry_fails_verify(
    store: Store, config: Config
) -> None:
    """After a purge the chain reads: the young entries, `audit.anchored`,
    `retention.purged`. Everything up to and including the `audit.anchored` entry deleted by
    hand (the young entries with it) and the anchor row pointed at that entry's stored hash
    (no hash recomputed) verified, the `retention.purged` entry left first in the chain
    taken for a purge by a version that recorded no anchor entries."""
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3)], ts=_ago(2600))
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3, 6)], ts=_ago(10))
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.audit_entries == 3 and audit.verify(store).ok
    rows = list(audit.entries(store))
    anchored = [e for e in rows if e.kind == audit.AUDIT_ANCHORED][-1]
    assert rows[-1].kind == audit.RETENTION_PURGED  # the only entry after the anchor entry
    with store.transaction() as db:
        db.execute("DELETE FROM audit WHERE seq <= ?", (anchored.seq,))
        db.execute(
            "UPDATE audit_chain SET anchor_seq=?, anchor_hash=? WHERE id=1",
            (anchored.seq, anchored.hash),
        )
    result = audit.verify(store)
    assert not result.ok and result.first_bad == anchored.seq
    assert "no purge is recorded" in result.problem


@pytest.mark.parametrize("keyed", [False, True], ids=["from-before-macs", "keyed"])
async def test_a_prefix_deleted_by_hand_is_not_purged_out_of_sight(
    store: Store, config: Config, keyed: bool
) -> None:
    """The oldest entries deleted by hand and the anchor moved (no hash recomputed) is
    tampering `audit verify` reports. The sweep verified the prefix it was about to purge,
    but that check skipped the anchor: the sweep purged on, recorded an anchor of its own,
    and the chain verified as intact again. It refuses now, naming the entry."""
    if keyed:
        audit.use_keys(store, KEYS)
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(6)], ts=_ago(3000))
    audit.append_many(store, [("sync.run", {"n": 6}, None)], ts=_ago(10))
    third = store.db.execute("SELECT hash FROM audit WHERE seq=3").fetchone()[0]
    store.db.execute("DELETE FROM audit WHERE seq <= 3")
    store.db.execute("UPDATE audit_chain SET anchor_seq=3, anchor_hash=? WHERE id=1", (third,))
    assert "no purge" in audit.verify(store).problem
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.audit_entries == 0
    assert report.errors and "entry 3" in report.errors[0] and "no purge" in report.errors[0]
    assert store.db.execute("SELECT MIN(seq) FROM audit").fetchone()[0] == 4
    assert not audit.verify(store).ok


async def test_a_head_set_back_by_hand_is_not_purged_past(store: Store, config: Config) -> None:
    """The newest entries deleted and the head row set back to the last one kept: the
    head's MAC does not hold, and the sweep does not purge a chain that does not verify."""
    audit.use_keys(store, KEYS)
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3)], ts=_ago(3000))
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3, 6)], ts=_ago(10))
    store.db.execute("DELETE FROM audit WHERE seq > 4")
    store.db.execute(
        "UPDATE audit_chain SET head_seq=4, head_hash=(SELECT hash FROM audit WHERE seq=4)"
    )
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.audit_entries == 0 and report.errors and "entry 5" in report.errors[0]


async def test_a_dry_run_verifies_the_audit_prefix_as_the_real_run_does(
    store: Store, config: Config
) -> None:
    """With an old entry edited the real run purges no audit entry and says why (exit 1);
    the dry run said it would purge them all, with no error."""
    audit.append_many(store, [("sync.run", {"n": n}, None) for n in range(3)], ts=_ago(2600))
    audit.append_many(store, [("sync.run", {"n": 3}, None)], ts=_ago(10))
    store.db.execute("""UPDATE audit SET data='{"n":99}' WHERE seq=2""")
    dry = await retention.sweep(store, config, None, NOW, dry_run=True)
    real = await retention.sweep(store, config, KEYS, NOW)
    assert real.audit_entries == 0 and real.errors
    assert (dry.audit_entries, dry.errors) == (real.audit_entries, real.errors)


async def test_a_dry_run_counts_a_bundle_recorded_under_two_ids_once(
    store: Store, config: Config, tmp_path: Path
) -> None:
    """A bundle recorded under two of the person's ids (a row each) is one bundle: the real
    run deletes it and reports 1; the dry run, counting rows, reported 2."""
    folder = tmp_path / "out/bundle"
    folder.mkdir(parents=True)
    (folder / "data.json").write_text("{}")
    retention.record_bundle(store, KEYS, folder, subject_ids=["sid-a", "sid-b"])
    store.db.execute("UPDATE bundles SET created_at=?", (_ago(40),))
    dry = await retention.sweep(store, config, None, NOW, dry_run=True)
    real = await retention.sweep(store, config, KEYS, NOW)
    assert real.bundles == 1 and not folder.exists()
    assert dry.bundles == real.bundles


async def test_an_access_bundle_folder_named_after_the_person_is_not_in_the_store(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, tmp_path: Path
) -> None:
    """The bundle's path is sealed; the sweep still finds and deletes the bundle."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    out = tmp_path / f"inzage-{CANARY_NAME}"
    async with open_rt() as rt:
        await rt.engine.sync()
        view = await DsrService(rt).access(CANARY_EMAIL, out)
        assert view.status == "completed" and (out / "data.json").exists()
        rt.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        held = b"".join(
            p.read_bytes() for p in rt.config.store_path.parent.glob("*.db*") if p.is_file()
        )
        assert CANARY_NAME.encode() not in held
        report = await retention.sweep(
            rt.store, rt.config, rt.keyring, NOW + dt.timedelta(days=400)
        )
        assert report.bundles == 1 and not out.exists()


def test_a_bundle_recorded_before_paths_were_sealed_is_still_swept(
    config: Config, tmp_path: Path
) -> None:
    """Schema 10 keeps an older row's clear path; the sweep deletes that bundle as before."""
    store = Store(config.store_path)
    folder = tmp_path / "old-bundle"
    folder.mkdir()
    (folder / "data.json").write_text("{}")
    store.db.execute(
        "INSERT INTO bundles(path, files, created_at) VALUES (?, ?, ?)",
        (str(folder), json.dumps(["data.json"]), _ago(40)),
    )
    assert retention.sweep_now(store, config, KEYS, NOW).bundles == 1
    assert not folder.exists()
    store.close()


def test_single_file_bundle_is_deleted(store: Store, config: Config, tmp_path: Path) -> None:
    """A bundle written as one file (a zip) is deleted, its folder left alone."""
    archive = tmp_path / "exports/bundle.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"PK")
    bundle_id = retention.record_bundle(store, KEYS, archive)
    store.db.execute("UPDATE bundles SET created_at=? WHERE id=?", (_ago(40), bundle_id))
    assert retention.sweep_now(store, config, KEYS, NOW).bundles == 1
    assert not archive.exists() and archive.parent.is_dir()


def test_a_bundle_written_again_to_the_same_place_has_one_record(
    store: Store, tmp_path: Path
) -> None:
    """The access request retried after the process died between writing its bundle and
    finishing: the bundle written again replaces its record (two before); another
    bundle's record stays."""
    retention.record_bundle(store, KEYS, tmp_path / "other", ["data.json"])
    retention.record_bundle(store, KEYS, tmp_path / "bundle", ["data.json"])
    retention.record_bundle(store, KEYS, tmp_path / "." / "bundle", ["report.en.md"])
    rows = store.db.execute("SELECT path, files FROM bundles ORDER BY id").fetchall()
    held = sorted((KEYS.open(path, BUNDLE_PATH_CONTEXT).decode(), files) for path, files in rows)
    assert held == [
        (str((tmp_path / "bundle").resolve()), '["report.en.md"]'),
        (str((tmp_path / "other").resolve()), '["data.json"]'),
    ]


def test_retention_command_reports_json(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klantsync retention run --dry-run --json` prints the counts and cut-offs, exit 0."""
    store = Store(config.store_path)
    open_keyring(store, config)  # the store is bound to its key before the fake payload goes in
    _dead_letter(store, "2000-01-01T00:00:00+00:00")
    store.close()
    assert main(["-c", str(config_path), "retention", "run", "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is True and data["dead_letters"] == 1
    assert set(data["cutoffs"]) == {
        "dead_letters",
        "manifests",
        "bundles",
        "audit",
        "jobs",
        "webhook_ids",
        "runs",
        "replaced_stores",
    }
    assert main(["-c", str(config_path), "retention", "run"]) == 0
    assert "purged 1 dead letters" in capsys.readouterr().out


def test_retention_run_records_the_config_whose_periods_it_purges_by_and_a_dry_run_none(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retention run` (from cron, the daemon stopped) deletes by this config's periods:
    ``config.loaded`` records it, as `sync` records its own. A dry run only counts."""
    store = Store(config.store_path)
    open_keyring(store, config)
    store.close()

    def loaded() -> list[str]:
        store = Store(config.store_path)
        try:
            return [e.data["sha256"] for e in audit.entries(store) if e.kind == audit.CONFIG_LOADED]
        finally:
            store.close()

    assert main(["-c", str(config_path), "retention", "run", "--dry-run"]) == 0
    assert loaded() == []
    assert main(["-c", str(config_path), "retention", "run"]) == 0
    assert loaded() == [audit.config_digest(config)["sha256"]]
    capsys.readouterr()


def test_retention_run_says_every_kind_it_purged_held_writes_too(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retention run` (the operator's words, from cron too) named every kind it purged
    but the held writes of a former address: a sweep that deleted one printed "purged 0"
    for everything, as if it had done nothing. Words and --json name every kind the report
    counts."""
    store = Store(config.store_path)
    open_keyring(store, config)
    _queued(store, "2000-01-01T00:00:00+00:00", "s-held-old", HELD)
    store.close()
    assert main(["-c", str(config_path), "retention", "run", "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["held_writes"] == 1
    counted = {k for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert counted == set(retention.PURGED_KINDS)
    assert main(["-c", str(config_path), "retention", "run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "purged 0 dead letters, 1 held writes from a former address," in out
    assert all(words in out for words in retention.PURGED_KINDS.values())


def test_the_first_purge_of_a_chain_from_before_the_macs_keys_it_whole_and_it_verifies(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store upgraded from before the chain's MACs, with `retention run` (from cron) the
    first command that binds the keys: the purge adopts the chain whole, head and anchor,
    as the first keyed append does. Keying the anchor alone left the head without a MAC,
    and `audit verify` then reported tampering on a chain nobody touched."""
    store = Store(config.store_path)
    open_keyring(store, config)  # the store has its keyset
    store.close()
    unkeyed = Store(config.store_path)  # a process without the keys: the chain stays unkeyed
    now = dt.datetime.now(dt.UTC)
    old, young = now - dt.timedelta(days=3000), now - dt.timedelta(days=1)
    audit.append_many(unkeyed, [("sync.run", {"n": n}, None) for n in range(3)], ts=old.isoformat())
    audit.append_many(unkeyed, [("sync.run", {"n": 3}, None)], ts=young.isoformat())
    assert audit.chain_state(unkeyed).head_mac is None and audit.verify(unkeyed).ok
    unkeyed.close()

    assert main(["-c", str(config_path), "retention", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["audit_entries"] == 3
    code = main(["-c", str(config_path), "audit", "verify", "--json"])
    verified = json.loads(capsys.readouterr().out)
    assert code == 0 and verified["mac"] == audit.MAC_CHECKED, verified
    store = Store(config.store_path)
    try:
        kinds = [e.kind for e in audit.entries(store)]
    finally:
        store.close()
    # The run records its config first (the chain adopted there), then purges.
    assert kinds[:4] == [
        audit.SYNC_RUN,
        audit.AUDIT_KEYED,
        audit.CONFIG_LOADED,
        audit.AUDIT_ANCHORED,
    ]


def test_a_dry_run_needs_no_key_and_leaves_the_store_unbound(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counting writes nothing: the store is not bound to a master key by a dry run."""
    Store(config.store_path).close()
    assert main(["-c", str(config_path), "retention", "run", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    store = Store(config.store_path)
    try:
        assert store.db.execute("SELECT COUNT(*) FROM keyset").fetchone()[0] == 0
    finally:
        store.close()


def test_retention_run_on_a_missing_store_creates_none(
    config_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store.path with no store yet (a typo, a fresh deployment): the dry run says there is
    nothing to purge and the real run refuses (exit 1), as `backup` does; neither makes a
    store (nor its folder), bound to the key in use, for the next command to take as real."""
    store_path = config.store_path
    assert not store_path.parent.exists()
    argv = ["-c", str(config_path), "retention", "run"]
    assert main([*argv, "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["store_exists"] is False and data["dry_run"] is True and data["cutoffs"]
    assert main(argv) == 1
    assert "no store yet" in capsys.readouterr().err
    assert not store_path.parent.exists()


def test_a_bundle_that_cannot_be_deleted_is_kept_for_the_next_sweep_and_said_by_its_id(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose files cannot go (a permission, a read-only disk) stays recorded, so the
    next sweep tries again; the report names it by id, never by its path, which may carry a
    person's name. One whose sealed path no longer opens is said so and kept as well."""
    folder = tmp_path / f"inzage-{CANARY_NAME}"
    stuck = _bundle(store, folder, _ago(40))
    foreign = retention.record_bundle(store, Keyring(bytes(32)), tmp_path / "elsewhere")
    store.db.execute("UPDATE bundles SET created_at=? WHERE id=?", (_ago(40), foreign))

    def refuse(root: Path, files: list[str]) -> None:
        raise PermissionError(13, "Permission denied", str(root))

    with monkeypatch.context() as patched:
        patched.setattr(retention_bundles, "_delete_bundle", refuse)
        report = retention.sweep_now(store, config, KEYS, NOW)
    assert report.bundles == 0
    assert sorted(report.errors) == sorted(
        [
            f"bundle {stuck}: Permission denied",
            f"bundle {foreign}: its path does not open under the store's keys",
        ]
    )
    assert CANARY_NAME not in json.dumps(report.errors)
    assert store.db.execute("SELECT COUNT(*) FROM bundles").fetchone() == (2,)
    assert retention.sweep_now(store, config, KEYS, NOW).bundles == 1  # the stuck one, now
    assert not folder.exists()


def _run(store: Store, flow: str, status: str, started_at: str) -> int:
    cursor = store.db.execute(
        "INSERT INTO runs(flow, started_at, finished_at, status, summary) VALUES (?,?,?,?,'{}')",
        (flow, started_at, started_at, status),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def test_the_run_history_is_purged_but_each_flow_s_latest_run_and_success_stay(
    store: Store, config: Config
) -> None:
    """The flows' run history was never purged (a flow "every 1m": half a million rows a
    year). Runs older than runs_days go, except each flow's latest run and latest success,
    which status and the readiness probe read, however old."""
    old, young = _ago(91), _ago(1)
    success = _run(store, "a", "ok", _ago(200))  # a's latest success, long ago
    for _ in range(5):
        _run(store, "a", "failed", old)
    latest_failed = _run(store, "a", "failed", _ago(100))
    _run(store, "b", "ok", old)
    kept_young = _run(store, "b", "ok", young)
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.runs == 6
    left = [row[0] for row in store.db.execute("SELECT id FROM runs ORDER BY id")]
    assert left == [success, latest_failed, kept_young]
    assert store.last_success("a") == _ago(200)


def test_a_flow_s_last_success_is_read_by_key_however_long_the_history(store: Store) -> None:
    """The readiness probe asks for each flow's last success every few seconds; through the
    (flow, id) index it read every run the flow ever had."""
    from tests.conftest import sqlite_steps

    with store.transaction():
        for n in range(20_000):
            _run(store, "a", "ok" if n % 2 else "failed", _ago(1))
    steps, found = sqlite_steps(store, lambda: store.last_success("a"))
    assert found == _ago(1) and steps < 2


@pytest.mark.parametrize("asked_under", ["subject-asked-under", "subject-known-to-systems"])
def test_a_bundle_recorded_under_each_of_a_person_s_ids_goes_with_an_erasure_under_any(
    store: Store, tmp_path: Path, asked_under: str
) -> None:
    """Access records the bundle under every id the person is known by; each record replaced
    the one before, so only the last id kept one, and an erasure under another id completed
    leaving data.json (their data in clear) on disk."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "data.json").write_text("{}")
    ids = ["subject-asked-under", "subject-known-to-systems"]
    retention.record_bundle(store, KEYS, bundle, ["data.json"], subject_ids=ids)
    held = [r[0] for r in store.db.execute("SELECT subject_id FROM bundles ORDER BY id")]
    assert held == ids
    errors: list[str] = []
    assert retention.delete_bundles_of(store, KEYS, [asked_under], errors) == 1
    assert not (bundle / "data.json").exists() and errors == []
    # Every id's record goes with the files: none is left for a sweep to trip over.
    assert store.db.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 0


async def test_the_daemon_s_sweep_says_what_it_could_not_purge(
    open_rt: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """`retention run` prints what a sweep left (exit 1); the daemon's sweep, every six hours,
    dropped it: a tampered audit prefix or an undeletable bundle went unsaid for good."""
    from connector.daemon import Daemon

    async with open_rt() as rt:
        audit.append_many(rt.store, [("a", {"n": n}, None) for n in range(3)], ts=_ago(3000))
        rt.store.db.execute("UPDATE audit SET kind='edited' WHERE seq=2")
        with caplog.at_level("WARNING"):
            await Daemon(rt).retention_sweep()
    (left,) = [r for r in caplog.records if r.getMessage() == "retention sweep left something"]
    assert "entry 2" in left.__dict__["error"]


async def test_a_store_a_restore_replaced_keeps_only_its_audit_trail_after_its_period(
    store: Store, config: Config
) -> None:
    """A restore keeps the store it replaced beside the new one: everything the store held,
    sealed, out of every erasure's reach; nothing deleted it. After replaced_stores_days all
    but its audit trail goes (the entries between the backup and the restore are there
    only), and the file once the trail is past audit_days too."""
    folder, name = store.path.parent, store.path.name

    def replaced(suffix: str, audit_at: str | None) -> Path:
        path = folder / f"{name}.replaced-{suffix}"
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")  # a klantsync store's
            db.execute("CREATE TABLE outbox (payload BLOB)")
            db.execute("INSERT INTO outbox VALUES (x'00')")
            db.execute("CREATE TABLE audit (seq INTEGER, ts TEXT, kind TEXT)")
            if audit_at is not None:
                db.execute("INSERT INTO audit VALUES (1, ?, 'sync.run')", (audit_at,))
        return path

    old = replaced("20260415T080000Z", _ago(47))  # 47 days before NOW, its trail too
    again = replaced("20260415T080000Z-2", None)  # no audit trail to keep
    recent = replaced("20260520T080000Z", _ago(12))  # 12 days before NOW
    unrelated = folder / f"{name}.replaced-by-hand"
    unrelated.write_bytes(b"kept")

    dry = await retention.sweep(store, config, None, NOW, dry_run=True)
    assert dry.replaced_stores == 2 and again.exists()
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.replaced_stores == 2 and report.errors == []
    assert not again.exists() and recent.exists() and unrelated.exists()
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone() == (1,)
    with sqlite3.connect(recent) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)
    (*_, entry) = audit.entries(store)
    assert entry.kind == audit.RETENTION_PURGED and entry.data["replaced_stores"] == 2
    # Emptied, it is left alone until its trail is past audit_days; then it goes.
    assert (await retention.sweep(store, config, KEYS, NOW)).replaced_stores == 0
    seven_years_on = NOW + dt.timedelta(days=config.retention.audit_days)
    assert (await retention.sweep(store, config, KEYS, seven_years_on)).replaced_stores == 2
    assert not old.exists() and not recent.exists()


async def test_a_damaged_store_a_restore_replaced_is_deleted_after_its_period(
    store: Store, config: Config
) -> None:
    """A restore replaces a damaged store too, and keeps it beside the new one. Every sweep
    after replaced_stores_days then failed on its damaged page and reported it, and all it
    held stayed: it can be neither emptied nor kept apart from its trail, so it goes whole,
    its -wal and -shm with it. One still within its period is left alone."""
    folder, name = store.path.parent, store.path.name
    torn = folder / f"{name}.replaced-20260415T080000Z"
    replaced = Store(torn)
    audit.append_many(replaced, [(audit.SYNC_RUN, {}, None)], ts=_ago(1))  # a trail to keep
    replaced.close()
    damaged_store(torn)  # and a page of garbage that emptying it meets
    torn.with_name(torn.name + "-wal").write_bytes(b"")
    headless = folder / f"{name}.replaced-20260415T080000Z-2"
    headless.write_bytes(b"\xff" * 8192)  # not even an SQLite header left
    recent = damaged_store(folder / f"{name}.replaced-20260520T080000Z")

    dry = await retention.sweep(store, config, None, NOW, dry_run=True)
    assert dry.replaced_stores == 2 and torn.exists() and headless.exists()
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.replaced_stores == 2 and report.errors == []
    assert sorted(p.name for p in folder.glob(f"{name}.replaced-*")) == [recent.name]


def test_an_erasure_of_more_ids_than_a_statement_may_carry_deletes_their_bundles(
    tmp_path: Path,
) -> None:
    """:func:`retention.delete_bundles_of` asks in slices within SQLite's variables limit."""
    store = Store(tmp_path / "k.db")
    store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "data.json").write_text("{}")
    ids = [f"{n:032x}" for n in range(1_500)]
    retention.record_bundle(store, KEYS, bundle, ["data.json"], subject_ids=[ids[1_200]])
    errors: list[str] = []
    assert retention.delete_bundles_of(store, KEYS, ids, errors) == 1
    assert not errors and not (bundle / "data.json").exists()


def _replaced_store(store: Store, suffix: str, audit_at: list[str]) -> Path:
    """A store a restore replaced (``<store>.replaced-<suffix>``), a real one: a queued
    payload, and an audit trail with an entry at each of ``audit_at``."""
    path = store.path.with_name(f"{store.path.name}.replaced-{suffix}")
    replaced = Store(path)
    (number,) = replaced.subject_numbers(["s"], create=True).values()
    replaced.db.execute(
        "INSERT INTO outbox(system, subject_no, flow, payload, payload_hash, enqueued_at) "
        "VALUES ('crm', ?, 'f', x'00', 'h', ?)",
        (number, audit_at[-1]),
    )
    for n, ts in enumerate(audit_at):
        audit.append_many(replaced, [(audit.SYNC_RUN, {"n": n}, None)], ts=ts)
    replaced.close()
    return path


def _queued_in(path: Path) -> int | None:
    """How many payloads the store at ``path`` holds queued; None when it is gone."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.mark.parametrize(
    ("trail_days", "after"), [(47, 0), (3000, None)], ids=["emptied", "deleted-whole"]
)
async def test_a_replaced_store_is_emptied_or_deleted_only_once_the_entry_counting_it_is_written(
    store: Store,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    trail_days: int,
    after: int | None,
) -> None:
    """A sweep's purges commit with the retention.purged entry counting them: nothing is gone
    that the trail does not show. A replaced store was emptied (or deleted) ahead of that entry:
    when the entry could not be written (a full disk, the process killed there) the purges
    in the store rolled back, the replaced store stayed emptied or gone, and the next sweep,
    finding nothing left there, recorded it nowhere. It waits for the entry now."""
    from tests.conftest import disk_full_error

    replaced = _replaced_store(store, "20260415T080000Z", [_ago(trail_days)])
    real = audit.append

    def full(store_: Store, kind: str, *args: Any, **kwargs: Any) -> int:
        if kind == audit.RETENTION_PURGED:
            raise disk_full_error()
        return real(store_, kind, *args, **kwargs)

    monkeypatch.setattr(audit, "append", full)
    with pytest.raises(sqlite3.OperationalError):
        await retention.sweep(store, config, KEYS, NOW)
    assert _queued_in(replaced) == 1  # as it was
    monkeypatch.setattr(audit, "append", real)
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.replaced_stores == 1 and report.errors == []
    assert _queued_in(replaced) == after
    recorded = [
        e.data["replaced_stores"] for e in audit.entries(store) if e.kind == audit.RETENTION_PURGED
    ]
    assert recorded == [1]


async def test_a_replaced_store_s_audit_entries_past_audit_days_go_and_its_trail_verifies(
    store: Store, config: Config
) -> None:
    """[retention] audit_days is how long audit entries are kept. A replaced store kept its
    whole trail until its newest entry was past audit_days: an entry already past them when
    the store was replaced was kept up to audit_days more. Its entries past audit_days go
    now as the store's own do, anchored, so the trail it keeps still verifies; the entries
    that purge adds do not keep the file past its own newest entry."""
    replaced = _replaced_store(store, "20260415T080000Z", [_ago(3000), _ago(47)])
    report = await retention.sweep(store, config, KEYS, NOW)
    assert report.replaced_stores == 1 and report.errors == []
    assert _queued_in(replaced) == 0
    kept = Store(replaced)
    try:
        audit.use_keys(kept, KEYS)  # its own keys: derived from the master key, as here
        assert [e.data for e in audit.entries(kept) if e.kind == audit.SYNC_RUN] == [{"n": 1}]
        assert audit.verify(kept).ok
    finally:
        kept.close()
    assert not replaced.with_name(replaced.name + "-wal").exists()  # one file, as emptied
    assert (await retention.sweep(store, config, KEYS, NOW)).replaced_stores == 0
    # Its own newest entry past audit_days, the file goes.
    later = NOW + dt.timedelta(days=config.retention.audit_days - 46)
    assert (await retention.sweep(store, config, KEYS, later)).replaced_stores == 1
    assert not replaced.exists()


def test_an_emptied_replaced_store_keeps_its_keys_and_its_trail_verifies_under_them(
    config_path: Path, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweep deleted a replaced store's keyset with the rest (wrapped keys, no personal
    data). A store whose master key was ever rotated keeps its chain's MACs under keys of
    its own, which only that keyset holds: `audit verify` at the emptied store then took
    its intact trail for one moved without the store's key. The keyset stays now."""
    from connector.crypto import master_fingerprint, wrap_data_keys
    from connector.state import utcnow

    main_store = Store(config.store_path)
    path = config.store_path.with_name(f"{config.store_path.name}.replaced-20260415T080000Z")
    rotated = Keyring(keys=KEYS.keys.with_new_outbox_key())  # as `keys rotate` leaves them
    replaced = Store(path)
    replaced.db.execute(
        "INSERT INTO keyset(id, wrapped, master_fingerprint, created_at) VALUES (1, ?, ?, ?)",
        (
            wrap_data_keys(config.master_key, rotated.keys),
            master_fingerprint(config.master_key),
            utcnow(),
        ),
    )
    audit.use_keys(replaced, rotated)
    now = dt.datetime.now(dt.UTC)
    audit.append_many(replaced, [(audit.SYNC_RUN, {}, None)], ts=_stamp_of(now, 47))
    _dead_letter(replaced, _stamp_of(now, 47))
    replaced.close()
    at_replaced = tmp_path / "at-replaced.toml"  # a config at the replaced store, to verify it
    at_replaced.write_text(
        config_path.read_text().replace('path = "state/klantsync.db"', f'path = "{path}"')
    )

    report = retention.sweep_now(main_store, config, KEYS, now)
    main_store.close()
    assert report.replaced_stores == 1 and report.errors == []
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM keyset").fetchone() == (1,)
    code = main(["-c", str(at_replaced), "audit", "verify", "--json"])
    verified = json.loads(capsys.readouterr().out)
    assert code == 0 and verified["mac"] == audit.MAC_CHECKED, verified


def _stamp_of(now: dt.datetime, days_before: float) -> str:
    return (now - dt.timedelta(days=days_before)).isoformat(timespec="seconds")


def _files_holding(folder: Path, content: bytes) -> list[str]:
    return [p.name for p in sorted(folder.iterdir()) if p.is_file() and content in p.read_bytes()]


def _sealed_dead_letter(store: Store) -> bytes:
    """A dead letter past its period whose payload (standing for a refused record, sealed)
    reached the store file, as the daemon's background checkpoints copy the log back, with
    the sync's own writes ahead of it in the log."""
    for n in range(50):
        store.start_run(f"flow-{n}")
    sealed = bytes(range(7, 55))
    store.db.execute(
        "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at) "
        "VALUES ('crm', 's', 'f', ?, '400 invalid', ?)",
        (sealed, _ago(31)),
    )
    store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return sealed


def test_a_sweep_clears_the_write_ahead_log_of_the_payloads_it_purged(
    store: Store, config: Config
) -> None:
    """The store zeroes the pages a delete frees, but the write-ahead log is a file of the
    store too: in the daemon, whose connection stays open for months, the frame that wrote
    a dead letter stayed in the -wal after the sweep deleted it (a checkpoint restarts the
    log from its start, it does not clear it), its sealed payload there past its period."""
    sealed = _sealed_dead_letter(store)
    assert retention.sweep_now(store, config, KEYS, NOW).dead_letters == 1
    store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the daemon's, after the sweep
    assert _files_holding(store.path.parent, sealed) == []


def test_a_log_a_reader_keeps_from_being_cleared_is_said_and_cleared_at_the_next_sweep(
    store: Store, config: Config
) -> None:
    """Another process reading the store (a command beside the daemon) keeps its log from
    being cleared: the sweep does not wait for it long on the daemon's loop, says so, and
    the next sweep clears it, though it purges nothing itself."""
    sealed = _sealed_dead_letter(store)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM runs").fetchone()
        report = retention.sweep_now(store, config, KEYS, NOW)
        assert report.dead_letters == 1
        assert ["write-ahead log" in error for error in report.errors] == [True]
        reader.execute("ROLLBACK")
    again = retention.sweep_now(store, config, KEYS, NOW)
    assert again.total == 0 and again.errors == []
    assert _files_holding(store.path.parent, sealed) == []
