"""A store in use, from every schema version, upgraded by opening it: every row keeps its meaning.

Each version's store is made by that version's migrations (tests/store_versions.py) and given a
few rows in every table it has, in the shape that version wrote them: identities and hashes by
subject id before schema 8, several dead letters per record before 11, bundle paths in clear
before 10, an audit chain without MACs before 21. Opened by this klantsync (migrated, its keys
bound as the first command binds them), the store's own reads must find the same people, ids,
hashes, queued and refused payloads that still open, requests with receipts that verify, the
suppression list, opt-outs, jobs, cursors and an audit chain that verifies.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

import connector.state as state
import connector.store_base as store_base
from connector import audit, jobs, lineage
from connector.config import Config, load_config
from connector.crypto import (
    BUNDLE_PATH_CONTEXT,
    JOB_CONTEXT,
    DataKeys,
    Keyring,
    decode_master_key,
    manifest_context,
    master_fingerprint,
    outbox_context,
    wrap_data_keys,
)
from connector.dsr_store import DsrStore
from connector.incidents import list_incidents
from connector.keyset import open_keyring
from connector.receipts import ReceiptSigner, verify_receipt
from connector.schema import MIGRATIONS
from connector.state import Store
from tests.conftest import ENV, MASTER_KEY, write_config
from tests.store_versions import store_at

LATEST = len(MIGRATIONS)
MASTER = decode_master_key(MASTER_KEY)
#: The keys every store here was written under: derived from the master key, as a store's
#: first keys are (and as every store before schema 9 kept them).
KEYS = Keyring(keys=DataKeys.derive(MASTER))

FLOW = "shop-to-crm"
A = "a" * 32  # in the shop and the CRM: delivered, and a newer write queued
B = "b" * 32  # in the CRM, refused there twice
E = "e" * 32  # erased: on the suppression list, their request completed with a receipt
OLD = "d" * 32  # A's id under the address A had before moving (schema 6 on)

T0 = "2026-01-01T00:00:00+00:00"
T1 = "2026-01-02T00:00:00+00:00"
T2 = "2026-01-03T00:00:00+00:00"
T3 = "2026-01-04T00:00:00+00:00"

QUEUED = b'{"email":"queued"}'
FORMER = b'{"email":"former"}'
REFUSED_FIRST = b'{"email":"refused-1"}'
REFUSED = b'{"email":"refused-2"}'
MANIFEST = {"email_id": A, "systems": {"crm": "901"}}
JOB_PARAMS = {"system": "crm", "full": False}
BUNDLE = "/srv/inzage/request-7"
RECORD_KEY = "f" * 64


@dataclass(frozen=True)
class Written:
    """What the older klantsync left that is not fixed here: its receipt and its store id;
    and how many rows each of its tables held."""

    receipt: str
    store_id: str | None
    counts: dict[str, int]


def _config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path), env=ENV)


def _audit_rows(version: int) -> list[tuple[int, str, str, str | None, str, str, str]]:
    """Three entries chained from the genesis, as any version wrote them."""
    rows = []
    prev = audit.GENESIS
    for seq, (kind, subject, data) in enumerate(
        [
            (audit.SYNC_RUN, None, {"flow": FLOW, "sent": 2}),
            ("dsr.erase", E, {"request": "r-erase", "version": version}),
            (audit.SYNC_BATCH, A, {"system": "crm", "fields": ["email"]}),
        ],
        start=1,
    ):
        payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
        digest = audit._digest(prev, seq, T1, kind, subject, payload)
        rows.append((seq, T1, kind, subject, payload, prev, digest))
        prev = digest
    return rows


def _fill(db: sqlite3.Connection, version: int, signer: ReceiptSigner) -> Written:
    """A few rows in every table a store of ``version`` has, as that version wrote them."""
    numbered = version >= 8
    key = {A: 1, B: 2} if numbered else {A: A, B: B}
    person = "subject_no" if numbered else "subject_id"  # the per-system tables' key
    if numbered:
        db.executemany(
            "INSERT INTO subjects(subject_no, subject_id) VALUES (?,?)", [(1, A), (2, B)]
        )
    db.execute(
        "INSERT INTO cursors(flow, system, cursor, updated_at) VALUES (?, 'shop', 'cursor-7', ?)",
        (FLOW, T2),
    )
    db.executemany(
        "INSERT INTO identities VALUES (?,?,?)",
        [("shop", key[A], "101"), ("crm", key[A], "901"), ("crm", key[B], "902")],
    )
    db.executemany(
        f"INSERT INTO delivered(system, {person}, payload_hash, delivered_at) "  # noqa: S608
        "VALUES (?,?,?,?)",
        [("crm", key[A], "h-a", T1), ("crm", key[B], "h-b-0", T0)],
    )
    db.execute(
        f"INSERT INTO outbox(id, system, {person}, flow, payload, payload_hash, "  # noqa: S608
        "enqueued_at, attempts) VALUES (5, 'crm', ?, ?, ?, ?, ?, 2)",
        (key[A], FLOW, KEYS.seal(QUEUED, outbox_context("crm")), "h-a-queued", T2),
    )
    if version >= 19:
        db.execute(
            "UPDATE outbox SET former=? WHERE id=5", (KEYS.seal(FORMER, outbox_context("crm")),)
        )
    if version >= 27:
        db.execute(
            "INSERT INTO field_sets(id, flow, names) VALUES (1, ?, 'email,firstname')", (FLOW,)
        )
        db.execute("UPDATE outbox SET sent=1")
        db.execute("UPDATE delivered SET sent=1 WHERE system='crm'")
    # B refused twice: a row per refusal before schema 11, one row counting them from then on.
    letter = "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at"
    refusals = [
        (REFUSED_FIRST, "h-b-1", "VALIDATION_ERROR", T1),
        (REFUSED, "h-b-2", "CONFLICT", T2),
    ]
    if version < 11:
        hashed = version >= 5
        db.executemany(
            letter
            + (", payload_hash" if hashed else "")
            + ") VALUES ('crm',?,?,?,?,?"
            + (",?" if hashed else "")
            + ")",
            [
                (B, FLOW, KEYS.seal(payload, outbox_context("crm")), reason, at)
                + ((payload_hash,) if hashed else ())
                for payload, payload_hash, reason, at in refusals
            ],
        )
    else:
        db.execute(
            letter + ", payload_hash, first_refused_at, refusals) "
            "VALUES ('crm',?,?,?,'CONFLICT',?,'h-b-2',?,2)",
            (B, FLOW, KEYS.seal(REFUSED, outbox_context("crm")), T2, T1),
        )
    db.execute("INSERT INTO suppression VALUES (?, 'erasure', 'r-erase', ?)", (E, T3))
    db.execute(
        "INSERT INTO runs(id, flow, started_at, finished_at, status, summary) "
        "VALUES (1, ?, ?, ?, 'ok', '{}')",
        (FLOW, T1, T2),
    )
    rows = _audit_rows(version)
    db.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", rows)
    receipt = signer.sign({"request_id": "r-erase", "completed_at": T3, "systems": ["crm"]})
    if version >= 2:
        db.execute(
            "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, "
            "source, receipt, completed_at) VALUES ('r-erase','erase',?,?,?,'completed','cli',?,?)",
            (E, T1, T3, receipt, T3),
        )
        db.execute(
            "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, "
            "source, manifest) VALUES ('r-access','access',?,?,?,'open','cli',?)",
            (A, T2, T3, KEYS.seal_json(MANIFEST, manifest_context("r-access"))),
        )
        db.executemany(
            "INSERT INTO dsr_systems(request_id, system, status, attempts, result, updated_at) "
            "VALUES (?,?,?,?,?,?)",
            [
                ("r-erase", "crm", "done", 1, json.dumps({"reversible": False}), T3),
                ("r-erase", "shop", "done", 2, json.dumps({"reversible": True}), T3),
                ("r-access", "crm", "pending", 0, "{}", T2),
            ],
        )
    if version >= 3:
        db.execute(
            "INSERT INTO jobs(id, kind, params, status, created_at) "
            "VALUES (1, 'resync', ?, 'queued', ?)",
            (KEYS.seal_json(JOB_PARAMS, JOB_CONTEXT), T2),
        )
        db.execute(
            "INSERT INTO jobs(id, kind, params, status, created_at, started_at, finished_at, "
            "result) VALUES (2,'sync',NULL,'done',?,?,?,?)",
            (T1, T1, T2, json.dumps({"sent": 3})),
        )
        db.execute("INSERT INTO webhook_deliveries VALUES ('shop', 'delivery-1', ?)", (T2,))
    if version >= 4:
        db.execute(
            "UPDATE audit_chain SET head_seq=?, head_hash=? WHERE id=1", (rows[-1][0], rows[-1][6])
        )
        path: object = KEYS.seal(BUNDLE.encode(), BUNDLE_PATH_CONTEXT) if version >= 10 else BUNDLE
        db.execute(
            "INSERT INTO bundles(id, path, files, created_at) VALUES (1,?,?,?)",
            (path, json.dumps(["data.json"]), T2),
        )
        db.execute(
            "INSERT INTO incidents(summary, aware_at, opened_at, deadline, systems, scope) "
            "VALUES ('laptop lost', ?, ?, ?, '[\"crm\"]', '{\"total\": 2}')",
            (T1, T1, "2026-01-05T00:00:00+00:00"),
        )
    if version >= 6:
        db.execute("INSERT INTO subject_aliases VALUES (?, ?)", (A, OLD))
    if version >= 9:
        db.execute(
            "INSERT INTO keyset(id, wrapped, master_fingerprint, created_at) VALUES (1,?,?,?)",
            (wrap_data_keys(MASTER, KEYS.keys), master_fingerprint(MASTER), T0),
        )
    if version >= 14:
        db.execute("UPDATE bundles SET subject_id=?", (A,))
    if version >= 17:
        db.execute("UPDATE cursors SET shape='shape-1'")
    if version >= 18:
        db.execute("INSERT INTO opt_outs VALUES ('mail', ?, ?)", (A, T2))
    if version >= 20:
        db.execute("UPDATE subject_numbers_given SET n=2")
    if version >= 21:
        # A chain written with the keys from the start (a genesis of its own), MACs on both ends.
        genesis = "1" * 64
        rows = []
        prev = genesis
        for seq, ts, kind, subject, data, _prev, _digest in _audit_rows(version):
            digest = audit._digest(prev, seq, ts, kind, subject, data)
            rows.append((seq, ts, kind, subject, data, prev, digest))
            prev = digest
        db.execute("DELETE FROM audit")
        db.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", rows)
        db.execute(
            "UPDATE audit_chain SET anchor_hash=?, head_hash=?, head_mac=?, anchor_mac=? "
            "WHERE id=1",
            (
                genesis,
                prev,
                audit._mac(KEYS, "head", 3, prev),
                audit._mac(KEYS, "anchor", 0, genesis),
            ),
        )
    if version >= 22:
        db.execute("UPDATE jobs SET cut_off=1 WHERE id=1")
    if version >= 24:
        db.execute("INSERT INTO erased_records VALUES (?, 'r-erase', ?)", (RECORD_KEY, T3))
    if version >= 25:
        db.execute("INSERT INTO consent_events VALUES ('mail', ?, ?)", (A, T2))
    return Written(receipt, lineage.store_id(db), _counts(db))


def _counts(db: sqlite3.Connection) -> dict[str, int]:
    tables = [
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        if not name.startswith("sqlite_")
    ]
    return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def _older_store(tmp_path: Path, version: int) -> tuple[Config, Written]:
    config = _config(tmp_path)
    db = store_at(config.store_path, version)
    try:
        written = _fill(db, version, ReceiptSigner.for_store(config.store_path, KEYS))
    finally:
        db.close()
    # A table a later migration adds starts empty here until _fill gives it rows in the
    # shape that migration makes (the lease is only ever a probe's, deleted as it is written).
    empty = {table for table, rows in written.counts.items() if rows == 0} - {"leases"}
    assert not empty, f"give {sorted(empty)} rows in _fill, as schema {version} writes them"
    return config, written


def _check_every_row(store: Store, config: Config, version: int, written: Written) -> None:
    """The rows ``_fill`` wrote, read back through the store's own reads after the upgrade."""
    assert store.schema_version == LATEST
    # No row lost in any table the older store had, but B's refusals, folded into one.
    folded = {"dead_letters": 1} if version < 11 else {}
    after = _counts(store.db)
    assert {t: after[t] for t in written.counts} == {**written.counts, **folded}
    keyring = open_keyring(store, config)  # binds an older store's keys, seals clear paths
    # The identity map and what each system was last sent.
    assert store.external_ids("crm", [A, B, E]) == {A: "901", B: "902"}
    assert store.external_ids("shop", [A]) == {A: "101"}
    assert store.subject_for_external("crm", "902") == B
    queued, delivered, sent = store.page_hashes(["crm"], [A, B, E])
    assert queued == {"crm": {A: "h-a-queued"}}
    assert delivered == {"crm": {A: "h-a", B: "h-b-0"}}
    assert sent.queued == ({"crm": {A: 1}} if version >= 27 else {"crm": {}})
    assert sent.delivered == ({"crm": {A: 1, B: 1}} if version >= 27 else {"crm": {}})
    if version >= 27:
        assert store.field_names(1) == (FLOW, frozenset({"email", "firstname"}))
    # The queued write, under its own id, still opening.
    (row,) = store.outbox_batch("crm", 0, 10)
    assert (row.id, row.subject_id, row.flow, row.attempts) == (5, A, FLOW, 2)
    assert keyring.open(row.payload, outbox_context("crm")) == QUEUED
    if version >= 19:
        assert row.former is not None
        assert keyring.open(row.former, outbox_context("crm")) == FORMER
    # B's refusals: one dead letter, the latest, counted; its payload still opens.
    letters = [
        (d.system, d.subject_id, d.reason, d.created_at, d.first_refused_at, d.refusals)
        for d in store.dead_letters()
    ]
    assert letters == [("crm", B, "CONFLICT", T2, T1, 2)]
    hashes = {B: "h-b-2"} if version >= 5 else {}
    assert store.rejected_hashes(["crm"], [A, B]) == {"crm": hashes}
    dsr = DsrStore(store)
    (refused,) = [h for h in dsr.sealed_holdings(B) if h[0] == "refused"]
    assert keyring.open(refused[3], outbox_context("crm")) == REFUSED
    # The suppression list, and the erasure that put E on it.
    assert store.suppressed([A, B, E]) == {E}
    entry = dsr.suppression(E)
    assert entry is not None and entry["request_id"] == "r-erase"
    signer = ReceiptSigner.for_store(config.store_path, keyring)
    if version >= 2:
        assert entry["request_status"] == "completed"
        assert entry["systems"] == {
            "crm": {"status": "done", "reversible": False},
            "shop": {"status": "done", "reversible": True},
        }
        erased = dsr.get("r-erase")
        assert erased is not None and erased.receipt == written.receipt
        assert verify_receipt(erased.receipt.encode(), signer.public_key).ok
        access = dsr.get("r-access")
        assert access is not None and access.manifest is not None
        assert keyring.open_json(access.manifest, manifest_context("r-access")) == MANIFEST
        assert [(s.system, s.status) for s in dsr.systems("r-access")] == [("crm", "pending")]
    # Cursors: one set under a shape is used under that shape only; one from before, as it is.
    assert store.get_cursor(FLOW, "shop", "shape-1") == "cursor-7"
    assert store.get_cursor(FLOW, "shop", "shape-2") == (None if version >= 17 else "cursor-7")
    assert store.last_success(FLOW) == T2
    # Jobs: the queued one's params open; the finished one keeps its result.
    if version >= 3:
        done = jobs.get(store, 2)
        assert done is not None and (done.status, done.result) == ("done", {"sent": 3})
        claimed = jobs.claim_next(store, keyring)
        assert claimed is not None and (claimed.id, claimed.params) == (1, JOB_PARAMS)
        with pytest.raises(sqlite3.IntegrityError):  # the replay guard still knows it
            store.db.execute("INSERT INTO webhook_deliveries VALUES ('shop', 'delivery-1', 'x')")
    if version >= 4:
        (incident,) = list_incidents(store)
        assert (incident.summary, incident.systems, incident.scope) == (
            "laptop lost",
            ["crm"],
            {"total": 2},
        )
        ((path,),) = store.db.execute("SELECT path FROM bundles").fetchall()
        assert isinstance(path, bytes)  # sealed, whatever the version kept
        assert keyring.open(path, BUNDLE_PATH_CONTEXT).decode() == BUNDLE
    if version >= 6:
        assert store.current_subject(OLD) == A
    if version >= 18:
        assert store.opted_out("mail", [A, B]) == {A}
    if version >= 24:
        assert dsr.erased_record(RECORD_KEY, T0) == "r-erase"
    if version >= 25:  # an unsubscribe older than the one recorded is not taken
        assert not store.latest_consent_event("mail", A, T1)
    # The audit chain verifies (and is keyed, if it was not yet); the entry about E is found.
    result = audit.verify(store)
    assert result.ok, result
    assert result.mac == (audit.MAC_CHECKED if version >= 21 else audit.MAC_ADOPTED)
    assert [e.kind for e in audit.entries(store) if e.subject_id == E] == ["dsr.erase"]
    # The store's id: kept where it had one, made where it had none.
    found = lineage.store_id(store.db)
    assert found is not None
    if written.store_id is not None:
        assert found == written.store_id
    # A newcomer is numbered above everyone the store holds.
    store.enqueue_page(FLOW, "shop", [state.QueuedPayload("crm", "n" * 32, b"x", "h")], [], None)
    assert store.subject_numbers(["n" * 32])["n" * 32] > 2


@pytest.mark.parametrize("version", range(1, LATEST + 1))
def test_a_store_in_use_from_any_earlier_schema_keeps_every_row_s_meaning(
    tmp_path: Path, version: int
) -> None:
    """Opened by this klantsync, a store of any schema reads back every row it held."""
    config, written = _older_store(tmp_path, version)
    store = Store(config.store_path)
    try:
        _check_every_row(store, config, version, written)
    finally:
        store.close()


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


@pytest.mark.parametrize("version", range(1, LATEST))
def test_an_upgrade_failing_after_its_first_step_leaves_the_store_as_it_was_then_upgrades_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Whatever step it fails after (the first of those the store lacks), the upgrade leaves
    every table and row as the older klantsync left them, at its schema; opened again, the
    store is upgraded whole and reads back every row."""
    config, written = _older_store(tmp_path, version)
    before = _dump(config.store_path)
    real = store_base.statements

    def killed(*_args: object) -> list[str]:
        raise RuntimeError("killed after one step")

    def failing_after_the_first_step(script: str) -> list[str]:
        if version + 1 < LATEST and script is MIGRATIONS[version + 1]:
            killed()
        return real(script)

    monkeypatch.setattr(store_base, "statements", failing_after_the_first_step)
    if version + 1 == LATEST:  # one step only: fail once it ran, before the commit
        monkeypatch.setattr(Store, "_refuse_broken_references", killed)
    with pytest.raises(RuntimeError, match="killed"):
        Store(config.store_path)
    assert _dump(config.store_path) == before
    monkeypatch.undo()
    store = Store(config.store_path)
    try:
        _check_every_row(store, config, version, written)
    finally:
        store.close()
