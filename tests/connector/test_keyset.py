"""The store's keys: kept under one master key, refused under another, and replaceable."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, jobs, retention
from connector.backup import take_backup
from connector.cli import main
from connector.config import load_config
from connector.crypto import (
    BUNDLE_PATH_CONTEXT,
    JOB_CONTEXT,
    RECEIPT_KEY_CONTEXT,
    DecryptionError,
    Keyring,
    decode_master_key,
    generate_master_key,
    manifest_context,
    master_fingerprint,
    outbox_context,
    unwrap_data_keys,
    wrap_data_keys,
)
from connector.dsr import DsrService
from connector.errors import ConfigError
from connector.keyset import (
    NOT_SEALED_WITH_DATA_KEYS,
    SEALED_COLUMNS,
    open_keyring,
    rotate_master_key,
    store_keyring,
)
from connector.lock import sharing_keys
from connector.receipts import ReceiptSigner, receipt_key_path
from connector.restore import restore_backup
from connector.state import Store
from tests.conftest import CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, MASTER_KEY, write_config
from tests.store_versions import as_the_version_before

OTHER_EMAIL = "otto.ander@voorbeeld.nl"


def seed(shop: WooCommerceSandbox, count: int = 3) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    for n in range(count - 1):
        shop.add_person(f"klant{n}@voorbeeld.nl", "Klant", f"Nummer{n}", f"06 1234{n:04d}")


def use_key(config_path: Path, key: str) -> None:
    """Point the test config's ``keys.source`` (``file:master.key``) at ``key``."""
    (config_path.parent / "master.key").write_text(key)


def store_of(config_path: Path) -> Store:
    return Store(load_config(config_path).store_path)


def bound_store(config_path: Path) -> Path:
    """The config's store, made and bound to its master key, with a receipt signing key file
    of its own; its path."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        ReceiptSigner.for_store(config.store_path, keyring).public_key_pem()
    finally:
        store.close()
    return config.store_path


def keyset_fingerprint(store_path: Path) -> str:
    """The master key fingerprint a store file's keyset says it is kept under."""
    with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as db:
        return str(db.execute("SELECT master_fingerprint FROM keyset WHERE id=1").fetchone()[0])


async def test_a_store_refuses_a_master_key_that_is_not_its_own(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    config_path: Path,
) -> None:
    """Another key would make everyone look new and no erased person match the suppression
    list; the store is refused before anything is pulled or sent, naming the file and key."""
    seed(shop)
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert report.destinations["crm"].created == 3
    wrong = generate_master_key()
    use_key(config_path, wrong)
    calls = len(shop.log.entries) + len(crm.log.entries)
    with pytest.raises(ConfigError) as caught:
        async with open_rt():
            pass  # pragma: no cover - never reached
    message = str(caught.value)
    assert str(config_path) in message and "keys.source" in message
    assert master_fingerprint(decode_master_key(wrong)) in message
    assert master_fingerprint(decode_master_key(MASTER_KEY)) in message
    assert wrong not in message and MASTER_KEY not in message
    assert len(shop.log.entries) + len(crm.log.entries) == calls

    # The command line says the same, with exit status 2.
    assert main(["-c", str(config_path), "keys", "show"]) == 2
    use_key(config_path, MASTER_KEY)
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert not report.failed and report.destinations["crm"].created == 0


def test_check_says_whether_the_master_key_opens_the_store(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` before the first sync, with the store's key, and with another key (exit 2).
    (The test config has compliance gaps, so a good `check` exits 1 here, not 0.)"""
    assert main(["-c", str(config_path), "check", "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)["master_key"]
    assert checked == {
        "fingerprint": master_fingerprint(bytes(range(32))),
        "store": "not created yet",
    }
    store = store_of(config_path)
    try:
        open_keyring(store, load_config(config_path))
    finally:
        store.close()
    assert main(["-c", str(config_path), "check", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["master_key"]["store"] == "opens"
    use_key(config_path, generate_master_key())
    assert main(["-c", str(config_path), "check"]) == 2
    assert "keys.source" in capsys.readouterr().err
    # `status` needs no key: it says the store's keys are not under the configured one.
    assert main(["-c", str(config_path), "status", "--json"]) == 0
    keys = json.loads(capsys.readouterr().out)["keys"]
    assert keys["bound"] and not keys["keys_source_matches"]
    assert keys["master_fingerprint"] == master_fingerprint(bytes(range(32)))
    assert main(["-c", str(config_path), "status"]) == 0
    assert "NOT the key in keys.source" in capsys.readouterr().out
    use_key(config_path, MASTER_KEY)
    assert main(["-c", str(config_path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"]["keys_source_matches"]


def test_check_refuses_a_master_key_the_key_file_beside_a_store_not_made_yet_does_not_open(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store deleted to start afresh under a new master key, its receipt signing key file
    left beside it: the first command that makes the store refuses that key (exit 2, naming
    keys.source), so `check` does too, and makes no store; the key the file was written
    with passes."""
    store_path = bound_store(config_path)
    for leftover in (
        store_path,
        *(store_path.with_name(store_path.name + s) for s in ("-wal", "-shm")),
    ):
        leftover.unlink(missing_ok=True)
    use_key(config_path, generate_master_key())
    new_store = store_of(config_path)
    try:
        with pytest.raises(ConfigError) as refused:
            open_keyring(new_store, load_config(config_path))  # what a sync meets
    finally:
        new_store.close()
    assert refused.value.key == "keys.source"
    store_path.unlink()

    assert main(["-c", str(config_path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "config" and answer["key"] == "keys.source"
    assert str(receipt_key_path(store_path)) in answer["message"]
    assert not store_path.exists()
    use_key(config_path, MASTER_KEY)
    assert main(["-c", str(config_path), "check", "--json"]) == 1  # the test config's gaps
    assert json.loads(capsys.readouterr().out)["master_key"]["store"] == "not created yet"


def test_check_of_an_older_store_under_another_key_names_the_store_not_its_private_copy(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first `check` after an upgrade looks at a private copy of the store an earlier
    klantsync left; a master key that store refuses was said not to be the one
    "/tmp/klantsync-dry-run-.../klantsync.db" is kept under: a file deleted by the time the
    operator read it, and not the one store.path names."""
    store_path = bound_store(config_path)
    as_the_version_before(store_path)
    use_key(config_path, generate_master_key())
    assert main(["-c", str(config_path), "check", "--json"]) == 2
    out = capsys.readouterr()
    assert "check on a private copy" in out.err
    answer = json.loads(out.out)
    assert (answer["file"], answer["key"]) == (str(config_path), "keys.source")
    assert f"not the one {store_path} is kept under" in answer["message"]
    assert "klantsync-dry-run" not in answer["message"]


def test_an_older_store_is_bound_to_the_key_its_data_was_sealed_with(
    config_path: Path, tmp_path: Path
) -> None:
    """A store from before the keyset holds sealed rows: a key they do not open under is
    refused (binding it would lose them); the right key is bound, derived keys unchanged."""
    store = store_of(config_path)
    try:
        old = Keyring(decode_master_key(MASTER_KEY))
        jobs.enqueue(store, old, "resync", {"system": "shop", "email": CANARY_EMAIL})
        use_key(config_path, generate_master_key())
        with pytest.raises(ConfigError, match="sealed under another master key"):
            open_keyring(store, load_config(config_path))
        assert store.db.execute("SELECT COUNT(*) FROM keyset").fetchone()[0] == 0

        use_key(config_path, MASTER_KEY)
        bound = open_keyring(store, load_config(config_path))
        assert bound.keys == old.keys  # what the data was written under
        assert bound.subject_id(CANARY_EMAIL) == old.subject_id(CANARY_EMAIL)
        assert store.db.execute("SELECT COUNT(*) FROM keyset").fetchone()[0] == 1
    finally:
        store.close()


def test_access_bundle_paths_an_older_store_kept_in_clear_are_sealed_at_its_keyed_open(
    config_path: Path,
) -> None:
    """Bundle rows from before schema 10 hold their path as clear text, which no later
    write sealed: every command that opens the store with its keys seals them (a rotation
    then seals them again under the new key with the rest)."""
    store = store_of(config_path)
    try:
        store.db.execute(
            "INSERT INTO bundles(path, files, created_at) VALUES (?, '[]', '2026-11-20')",
            (f"/srv/inzage/{CANARY_NAME}",),
        )
        keyring = open_keyring(store, load_config(config_path))
        (sealed,) = store.db.execute("SELECT path FROM bundles").fetchone()
        assert isinstance(sealed, bytes)
        assert keyring.open(sealed, BUNDLE_PATH_CONTEXT) == f"/srv/inzage/{CANARY_NAME}".encode()
    finally:
        store.close()


def test_every_blob_column_is_known_to_the_rotation(config_path: Path) -> None:
    """A sealed column the rotation did not know would stop opening after a rotation."""
    store = store_of(config_path)
    try:
        tables = [
            r[0]
            for r in store.db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        blobs = {
            (table, column[1])
            for table in tables
            for column in store.db.execute(f"PRAGMA table_info({table})")
            if column[2].upper() == "BLOB"
        }
    finally:
        store.close()
    known = {(s.table, s.column) for s in SEALED_COLUMNS}
    assert blobs == known | NOT_SEALED_WITH_DATA_KEYS
    assert not known & NOT_SEALED_WITH_DATA_KEYS


async def test_rotation_seals_everything_again_and_the_sync_goes_on_under_the_new_key(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    config_path: Path,
) -> None:
    """Queued payloads, a dead letter, a request's manifest, a job and the receipt key are
    sealed again; after it the old key opens nothing, the new one everything; subject ids
    and the suppression list are unchanged, so the queued customers arrive and an erased one
    stays out."""
    seed(shop, 4)
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111", city="Delft")
    async with open_rt() as rt:
        await rt.engine.sync()
        view = await DsrService(rt).erase(OTHER_EMAIL)  # a receipt key and a suppressed id
        assert view.status == "completed"
        suppressed = rt.keyring.subject_id(OTHER_EMAIL)
        shop.touch(CANARY_EMAIL, first_name="Anders")
        shop.add_person("nieuw@voorbeeld.nl", "Nieuw", "Klant", "0622222222")
        crm.faults.down = True  # both wait in the outbox
        (report,) = await rt.engine.sync()
        assert report.destinations["crm"].retry_later == 2
        jobs.enqueue(rt.store, rt.keyring, "resync", {"system": "shop", "email": CANARY_EMAIL})
        rt.store.db.execute(
            "INSERT INTO dead_letters(system, subject_id, flow, payload, reason, created_at) "
            "VALUES ('crm', 'x', 'shop-to-crm', ?, 'refused', '2026-01-01')",
            (rt.keyring.seal_json({"email": "dl@voorbeeld.nl"}, outbox_context("crm")),),
        )
        rt.store.db.execute(
            "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, "
            "source, manifest) VALUES ('r-open', 'erase', 'y', '2026-01-01', '2026-02-01', "
            "'open', 'cli', ?)",
            (rt.keyring.seal_json({"email": "m@voorbeeld.nl"}, manifest_context("r-open")),),
        )
        bundle = config_path.parent / "bundle-Otto-Ander"
        bundle.mkdir()
        (bundle / "data.json").write_text("{}")
        retention.record_bundle(rt.store, rt.keyring, bundle, ["data.json"])
        old_keyring = rt.keyring
        public_before = DsrService(rt).public_key_pem()
        # While this runtime is open (it holds the keys) the rotation is refused.
        (config_path.parent / "new.key").write_text(generate_master_key())
        assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 1
    key_file = receipt_key_path(load_config(config_path).store_path)
    os.utime(key_file, (1_700_000_000, 1_700_000_000))  # a key made long ago
    before = _blobs(config_path)

    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key", "--json"]) == 0

    after = _blobs(config_path)
    tables = {table for table, _ in after}
    assert tables == {"outbox", "dead_letters", "dsr_requests", "jobs", "bundles"}
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    for blob, context in after.values():
        with pytest.raises(DecryptionError):
            old_keyring.open(blob, context)
    # The old key no longer opens the store; the new one does, with every id unchanged.
    assert main(["-c", str(config_path), "keys", "show"]) == 2
    use_key(config_path, new_key)
    async with open_rt() as rt:
        assert rt.keyring.subject_id(OTHER_EMAIL) == suppressed
        assert rt.keyring.keys.subject == old_keyring.keys.subject
        assert rt.keyring.keys.outbox != old_keyring.keys.outbox
        for blob, context in after.values():
            rt.keyring.open(blob, context)  # every one opens under the new keys
        manifest = rt.store.db.execute(
            "SELECT manifest FROM dsr_requests WHERE id='r-open'"
        ).fetchone()[0]
        assert rt.keyring.open_json(manifest, manifest_context("r-open")) == {
            "email": "m@voorbeeld.nl"
        }
        job = jobs.claim_next(rt.store, rt.keyring)
        assert job is not None and job.params == {"system": "shop", "email": CANARY_EMAIL}
        assert DsrService(rt).public_key_pem() == public_before  # the same signing key
        assert key_file.stat().st_mtime == 1_700_000_000  # and as old as it was
        crm.faults.down = False
        crm.log.clear()
        shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111")  # a backup restored
        (report,) = await rt.engine.sync(full=True)
        assert not report.failed
        assert report.suppressed == 1 and not crm.holds(OTHER_EMAIL)
        assert crm.holds("nieuw@voorbeeld.nl")
        assert rt.store.outbox_count() == 0
        # The access bundle's sealed path opens under the new keys: the sweep deletes it.
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
        assert (await retention.sweep(rt.store, rt.config, rt.keyring, later)).bundles == 1
        assert not bundle.exists()
    store = store_of(config_path)
    try:
        rotated = [e.data for e in audit.entries(store) if e.kind == audit.KEY_ROTATED]
        assert audit.verify(store).ok
    finally:
        store.close()
    assert rotated[-1]["key"] == "master"
    assert rotated[-1]["old"] == master_fingerprint(decode_master_key(MASTER_KEY))
    assert rotated[-1]["new"] == master_fingerprint(decode_master_key(new_key))
    assert rotated[-1]["resealed"] == {
        "outbox": 2,
        "outbox former writes": 0,
        "dead letters": 1,
        "request manifests": 1,
        "jobs": 1,
        "access bundle paths": 1,
    }
    text = json.dumps(rotated)
    keys = [base64.b64encode(k).decode() for k in (*old_keyring.keys, *rt.keyring.keys)]
    for secret in (MASTER_KEY, new_key, *keys):
        assert secret not in text


def _blobs(config_path: Path) -> dict[tuple[str, str], tuple[bytes, str]]:
    """Every sealed blob in the store and what it is bound to, by (table, row key)."""
    return _blobs_in(load_config(config_path).store_path)


def _blobs_in(store_path: Path) -> dict[tuple[str, str], tuple[bytes, str]]:
    """:func:`_blobs` of the store file at ``store_path``."""
    db = sqlite3.connect(store_path)
    try:
        found: dict[tuple[str, str], tuple[bytes, str]] = {}
        for sealed in SEALED_COLUMNS:
            for key, by, blob in db.execute(
                f"SELECT {sealed.key}, {sealed.by}, {sealed.column} FROM {sealed.table} "  # noqa: S608
                f"WHERE {sealed.column} IS NOT NULL"
            ):
                found[(sealed.table, str(key))] = (blob, sealed.context(str(by)))
        return found
    finally:
        db.close()


def test_rotation_that_fails_leaves_the_store_and_the_receipt_key_under_the_old_key(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction: a failure part-way leaves every blob, the keyset and the receipt key
    file as they were, and no staged key file behind."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        jobs.enqueue(store, keyring, "resync", {"system": "shop"})
        signer = ReceiptSigner.for_store(config.store_path, keyring)
        public = signer.public_key_pem()
        key_file = signer.key_path.read_bytes()
        blobs = _blobs(config_path)

        def broken(*_args: Any) -> tuple[int, int]:
            raise RuntimeError("disk full")

        monkeypatch.setattr("connector.keyset._reseal", broken)
        with pytest.raises(RuntimeError):
            rotate_master_key(store, config, decode_master_key(generate_master_key()))
        assert _blobs(config_path) == blobs
        assert signer.key_path.read_bytes() == key_file and not signer.staged_path.exists()
        assert open_keyring(store, config).keys == keyring.keys
        assert ReceiptSigner(signer.key_path, keyring).public_key_pem() == public
    finally:
        store.close()


def test_a_crash_between_the_commit_and_the_key_file_rename_is_settled_on_the_next_load(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is under the new key, the receipt key file still sealed under the old one
    and the new copy staged beside it: loading with the new keys takes the staged copy."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        signer = ReceiptSigner.for_store(config.store_path, keyring)
        public = signer.public_key_pem()
        # The staged copy is the store's own too: a rotation of one store leaves another's be.
        assert signer.staged_path.name == "klantsync.db.receipt-signing.key.rotating"

        def crash(_self: ReceiptSigner) -> None:
            raise SystemExit("killed")

        monkeypatch.setattr(ReceiptSigner, "finish_reseal", crash)
        new_key = generate_master_key()
        with pytest.raises(SystemExit):
            rotate_master_key(store, config, decode_master_key(new_key))
        assert signer.staged_path.exists()
        use_key(config_path, new_key)
        new = open_keyring(store, load_config(config_path))
        assert ReceiptSigner(signer.key_path, new).public_key_pem() == public
        assert not signer.staged_path.exists()
    finally:
        store.close()


def test_rotate_refuses_the_key_in_use_a_bad_key_and_a_running_daemon(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each refusal names what is wrong and changes nothing."""
    bound_store(config_path)
    (config_path.parent / "same.key").write_text(MASTER_KEY)
    (config_path.parent / "short.key").write_text(base64.urlsafe_b64encode(b"x" * 16).decode())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:same.key"]) == 2
    assert "names the master key in use" in capsys.readouterr().err
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:short.key"]) == 2
    assert "--to" in capsys.readouterr().err
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "env:KS_UNSET_KEY"]) == 2
    assert "KS_UNSET_KEY" in capsys.readouterr().err
    (config_path.parent / "new.key").write_text(generate_master_key())
    with sharing_keys(load_config(config_path).store_path):  # a sync or the daemon, running
        assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 1
    assert "has this store open" in capsys.readouterr().err
    assert main(["-c", str(config_path), "keys", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["master_fingerprint"] == master_fingerprint(decode_master_key(MASTER_KEY))
    assert shown["rotated_at"] is None


def test_sealed_contexts_are_the_ones_the_modules_seal_with() -> None:
    """The rotation opens each column under the context its writer sealed it with."""
    keyring = Keyring(bytes(range(32)))
    by_table = {s.table: s for s in SEALED_COLUMNS}
    assert by_table["outbox"].context("crm") == outbox_context("crm") == "outbox:crm"
    assert by_table["dead_letters"].context("crm") == outbox_context("crm")
    assert by_table["dsr_requests"].context("r1") == manifest_context("r1")
    assert by_table["jobs"].context("7") == JOB_CONTEXT
    blob = keyring.seal_json({"a": 1}, JOB_CONTEXT)
    assert keyring.open_json(blob, by_table["jobs"].context("1")) == {"a": 1}


def test_rotation_reseals_a_backlog_larger_than_one_chunk(config_path: Path) -> None:
    """A destination down for a day leaves a backlog: every row is sealed again, chunk by
    chunk, none skipped or done twice."""
    from connector.state import QueuedPayload

    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        rows = 1_234  # more than two chunks of 500
        store.enqueue_page(
            "shop-to-crm",
            "shop",
            [
                QueuedPayload(
                    "crm", f"s{n:05d}", keyring.seal_json({"n": n}, outbox_context("crm")), "h"
                )
                for n in range(rows)
            ],
            [],
            None,
        )
        new_key = generate_master_key()
        rotation = rotate_master_key(store, config, decode_master_key(new_key))
        assert rotation.resealed["outbox"] == rows and not rotation.unreadable
        use_key(config_path, new_key)
        new = open_keyring(store, load_config(config_path))
        opened = [
            new.open_json(blob, outbox_context("crm"))["n"]
            for (blob,) in store.db.execute("SELECT payload FROM outbox ORDER BY id")
        ]
        assert opened == list(range(rows))
    finally:
        store.close()


def beside(config_path: Path, name: str, key: str) -> Path:
    """A second config whose store ``state/<name>.db`` shares the first one's folder, kept
    under ``key``."""
    (config_path.parent / f"{name}.key").write_text(key)
    text = config_path.read_text().replace('"state/klantsync.db"', f'"state/{name}.db"')
    path = config_path.with_name(f"{name}.toml")
    path.write_text(text.replace('"file:master.key"', f'"file:{name}.key"'))
    return path


async def test_two_stores_in_one_folder_each_sign_with_a_key_of_their_own(
    shop: WooCommerceSandbox, open_rt: Callable[..., Any], config_path: Path
) -> None:
    """Two clients' stores (or a test store beside a live one) under different master keys in
    one folder: both open, each signs with its own key, and neither verifies the other's
    receipts as its own."""
    other = beside(config_path, "other", generate_master_key())
    seed(shop)
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111")
    async with open_rt() as rt:
        first = DsrService(rt)
        receipt_a = first.receipt((await first.erase(CANARY_EMAIL)).id)
        pem_a = first.public_key_pem()
    async with open_rt(other) as rt:
        second = DsrService(rt)
        receipt_b = second.receipt((await second.erase(OTHER_EMAIL)).id)
        pem_b = second.public_key_pem()
        assert receipt_a is not None and receipt_b is not None
        assert second.verify_receipt(receipt_b.encode()).ok
        assert not second.verify_receipt(receipt_a.encode()).ok
    assert pem_a != pem_b
    async with open_rt() as rt:
        first = DsrService(rt)
        assert first.public_key_pem() == pem_a  # the second store left the first one's key be
        assert first.verify_receipt(receipt_a.encode()).ok
        assert not first.verify_receipt(receipt_b.encode()).ok
    state = config_path.parent / "state"
    assert (state / "klantsync.db.receipt-signing.key").is_file()
    assert (state / "other.db.receipt-signing.key").is_file()
    assert not (state / "receipt-signing.key").exists()


def test_a_new_store_beside_one_whose_master_key_was_rotated_opens(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rotated store's receipt key is sealed under its fresh keys; a store made beside it
    afterwards (even under the first store's old master key) opens and makes its own key.
    (`dsr public-key` makes no store: each is made first, as a first sync makes it.)"""
    Store(load_config(config_path).store_path).close()
    assert main(["-c", str(config_path), "dsr", "public-key"]) == 0
    pem = capsys.readouterr().out
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 0
    use_key(config_path, new_key)
    capsys.readouterr()
    other = beside(config_path, "other", MASTER_KEY)
    Store(load_config(other).store_path).close()
    assert main(["-c", str(other), "dsr", "public-key"]) == 0, capsys.readouterr().err
    other_pem = capsys.readouterr().out
    assert other_pem.startswith("-----BEGIN PUBLIC KEY-----") and other_pem != pem
    assert main(["-c", str(config_path), "dsr", "public-key"]) == 0
    assert capsys.readouterr().out == pem


def test_a_store_in_use_with_only_the_shared_key_file_sealed_refuses_another_key(
    config_path: Path,
) -> None:
    """An older store whose outbox drained and manifests were purged holds nothing sealed
    but the folder's shared receipt key of earlier versions; that file still tells its
    master key from another, which would make every erased person new again."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        right = Keyring(decode_master_key(MASTER_KEY))
        ReceiptSigner(config.store_path.parent / "receipt-signing.key", right).public_key_pem()
        store.suppress([right.subject_id(CANARY_EMAIL)], "erasure", "r-1")  # an erased person
        use_key(config_path, generate_master_key())
        with pytest.raises(ConfigError, match="shared receipt signing key file"):
            open_keyring(store, load_config(config_path))
        assert store.db.execute("SELECT COUNT(*) FROM keyset").fetchone()[0] == 0
        use_key(config_path, MASTER_KEY)
        bound = open_keyring(store, load_config(config_path))
        assert bound.subject_id(CANARY_EMAIL) == right.subject_id(CANARY_EMAIL)
    finally:
        store.close()


async def test_an_installation_with_the_shared_key_file_keeps_its_signing_key(
    shop: WooCommerceSandbox, open_rt: Callable[..., Any], config_path: Path
) -> None:
    """Before each store had its own key file, a folder's stores used ``receipt-signing.key``
    and ``receipt-keys/``. The first use after the upgrade takes both as the store's own:
    the same public key, receipts signed before (and before a receipt key rotation) still
    verify, and the key keeps its age. The shared files stay: another store may use them."""
    seed(shop)
    state = config_path.parent / "state"
    async with open_rt() as rt:
        # What an earlier klantsync left: the shared key file and a retired key's public half.
        shared = ReceiptSigner(state / "receipt-signing.key", rt.keyring)
        # Completed before the rotation: a retired key verifies nothing completed after it.
        done = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        before_rotation = shared.sign({"request_id": "er-old-1", "completed_at": done})
        shared.rotate()
        before_upgrade = shared.sign({"request_id": "er-old-2", "completed_at": done})
        pem = shared.public_key_pem()
        os.utime(shared.key_path, (1_700_000_000, 1_700_000_000))

        service = DsrService(rt)
        assert service.public_key_pem() == pem
        assert service.verify_receipt(before_rotation.encode()).ok
        assert service.verify_receipt(before_upgrade.encode()).ok
        receipt = service.receipt((await service.erase(CANARY_EMAIL)).id)
        assert receipt is not None
        assert json.loads(receipt)["key_id"] == json.loads(before_upgrade)["key_id"]
    own = state / "klantsync.db.receipt-signing.key"
    assert own.stat().st_mtime == 1_700_000_000  # the key's age, for the rotation reminder
    assert own.stat().st_mode & 0o777 == 0o600
    # The key it retired, and the one in use, kept in clear from its first use here.
    assert len(list((state / "klantsync.db.receipt-keys").glob("*.pem"))) == 2
    assert (state / "receipt-signing.key").is_file() and (state / "receipt-keys").is_dir()
    async with open_rt() as rt:
        service = DsrService(rt)
        assert service.verify_receipt(before_rotation.encode()).ok
        service.rotate_receipt_key()  # the store's own file from now on
        assert service.verify_receipt(before_upgrade.encode()).ok
    assert ReceiptSigner(state / "receipt-signing.key", rt.keyring).public_key_pem() == pem


def test_a_receipt_key_file_that_is_not_the_stores_is_named_with_what_to_do(
    config_path: Path,
) -> None:
    """A store from before the keyset whose sealed data opens with keys.source but whose
    receipt key file does not: the error names that file and what to do, not keys.source."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        jobs.enqueue(store, keyring, "resync", {"system": "shop"})
        store.db.execute("DELETE FROM keyset")  # as a store from before schema 9
        key_file = config.store_path.with_name("klantsync.db.receipt-signing.key")
        ReceiptSigner(key_file, Keyring(bytes(32))).public_key_pem()  # another store's key
        with pytest.raises(ConfigError) as caught:
            open_keyring(store, config)
        assert caught.value.file == str(key_file) and caught.value.key == ""
        assert "aside" in caught.value.problem
        key_file.unlink()
        assert open_keyring(store, config).keys == keyring.keys
    finally:
        store.close()


def test_a_master_key_rotation_says_when_the_shared_key_file_still_holds_the_stores_key(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store's adopted copy is sealed again under the new key; the shared file it came
    from is left for the stores that may still use it, and the rotation says it holds this
    store's key under the old master key (which may have leaked)."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        shared = ReceiptSigner(
            config.store_path.parent / "receipt-signing.key", open_keyring(store, config)
        )
        public = shared.public_key_pem()
        sealed = shared.key_path.read_bytes()
    finally:
        store.close()
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key", "--json"]) == 0
    rotation = json.loads(capsys.readouterr().out)
    assert rotation["receipt_key_resealed"]
    assert rotation["shared_receipt_key_file"] == str(shared.key_path)
    assert shared.key_path.read_bytes() == sealed
    use_key(config_path, new_key)
    assert main(["-c", str(config_path), "dsr", "public-key"]) == 0
    assert capsys.readouterr().out == public
    # A second rotation finds the shared file under a key the store no longer has: no word.
    (config_path.parent / "newer.key").write_text(generate_master_key())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:newer.key"]) == 0
    assert "shared" not in capsys.readouterr().out


def test_keys_rotate_says_what_it_cannot_renew_and_what_the_old_key_still_gives(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Subject ids are HMACs of addresses the store does not hold: a rotation keeps the
    subject and payload keys, which a store's first master key derives on its own, and the
    receipt signing key. `keys rotate` says so, text and --json, and that `dsr rotate-key`
    replaces the signing key; what it says of the retired key is so."""
    bound_store(config_path)  # bound by this version, with a receipt signing key file
    first_key, new_key = MASTER_KEY, generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["renewed"] == ["the wrapping of the data keys", "the key of what is kept sealed"]
    kept = {k["key"]: k for k in said["not_renewed"]}
    assert list(kept) == ["subject", "payload", "receipt-signing"]
    assert kept["subject"]["derived_from_old_master_key"] is True
    assert "Mailchimp's member ids" in kept["subject"]["computes"]
    assert kept["receipt-signing"]["renew_with"] == "klantsync dsr rotate-key"
    # As said: the retired key alone computes the live store's ids and opens its cloaked ids.
    use_key(config_path, new_key)
    store = store_of(config_path)
    try:
        live = open_keyring(store, load_config(config_path))
    finally:
        store.close()
    retired = Keyring(decode_master_key(first_key))
    assert retired.subject_id(OTHER_EMAIL) == live.subject_id(OTHER_EMAIL)
    member = "0123456789abcdef0123456789abcdef"
    assert retired.uncloak_id("news", live.cloak_id("news", member)) == member
    # A second rotation: the kept keys come from the first key, not the one retired now.
    (config_path.parent / "newer.key").write_text(generate_master_key())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:newer.key"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "not renewed: the subject key, for the subject ids" in text
    assert "derived from an earlier master key" in text
    assert "test guessed e-mail addresses" in text
    assert "not renewed: the receipt signing key" in text
    assert "klantsync dsr rotate-key" in text


def test_opening_a_store_takes_its_copy_of_the_shared_key_file(config_path: Path) -> None:
    """A store that only syncs (never signs) takes its copy on open too, so "every store
    opened by this version" is all it takes before the shared file may be deleted."""
    config = load_config(config_path)
    state = config.store_path.parent
    store = Store(config.store_path)
    try:
        shared = ReceiptSigner(state / "receipt-signing.key", open_keyring(store, config))
        public = shared.public_key_pem()
    finally:
        store.close()
    assert main(["-c", str(config_path), "keys", "show"]) == 0
    shared.key_path.unlink()
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
    finally:
        store.close()
    assert ReceiptSigner(state / "klantsync.db.receipt-signing.key", keyring).public_key_pem() == (
        public
    )


def test_rotation_refuses_a_receipt_key_file_that_is_not_the_stores_by_name(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A receipt signing key file beside the store that does not open with its keys (copied
    from another store, damaged on disk): the rotation names the file and what to do, as
    every other command does, and rotates nothing."""
    store_path = bound_store(config_path)
    key_file = receipt_key_path(store_path)
    key_file.write_bytes(Keyring(os.urandom(32)).seal(os.urandom(32), RECEIPT_KEY_CONTEXT))
    (config_path.parent / "new.key").write_text(generate_master_key())
    code = main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"])
    err = capsys.readouterr().err
    assert code == 1
    assert "internal error" not in err and str(key_file) in err and "aside" in err
    assert keyset_fingerprint(store_path) == master_fingerprint(decode_master_key(MASTER_KEY))
    assert not key_file.with_name(key_file.name + ".rotating").exists()
    key_file.unlink()  # moved aside, as it says: a new key is made on first use
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 0


async def test_rotation_puts_a_store_a_restore_replaced_under_the_new_key_too(
    shop: WooCommerceSandbox,
    open_rt: Callable[..., Any],
    tmp_path: Path,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore keeps the store it replaced beside it (``klantsync.db.replaced-<time>``),
    holding all the store held, sealed. A rotation (the old key may have leaked) wraps its
    keys under the new master key too, so the old key opens that copy no more either."""
    seed(shop)
    out = tmp_path / "b.db"
    async with open_rt() as rt:
        await rt.engine.sync()
        take_backup(rt.config, out)
        config = rt.config
        keys = rt.keyring.keys
    replaced_path = restore_backup(config, out).replaced_path
    assert replaced_path is not None
    replaced = Path(replaced_path)
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["replaced_stores_resealed"] == [str(replaced)]
    assert said["replaced_stores_left"] == []
    with closing(sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)) as db:
        (wrapped,) = db.execute("SELECT wrapped FROM keyset WHERE id=1").fetchone()
    with pytest.raises(DecryptionError):
        unwrap_data_keys(decode_master_key(MASTER_KEY), wrapped)
    # Its ids' keys kept; what it holds sealed is sealed anew (see the test after this one).
    opened = unwrap_data_keys(decode_master_key(new_key), wrapped)
    assert (opened.subject, opened.payload) == (keys.subject, keys.payload)
    assert keyset_fingerprint(replaced) == master_fingerprint(decode_master_key(new_key))
    # One it cannot wrap anew (kept under keys derived from the old key itself) is named.
    with closing(sqlite3.connect(replaced)) as db:
        db.execute("DELETE FROM keyset")
        db.execute(
            "INSERT INTO jobs(kind, params, status, created_at) VALUES ('resync', ?, 'done', '')",
            (Keyring(decode_master_key(new_key)).seal(b"{}", JOB_CONTEXT),),
        )
        db.commit()
    use_key(config_path, new_key)
    (config_path.parent / "newer.key").write_text(generate_master_key())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:newer.key"]) == 0
    assert f"{replaced} (the store a restore replaced)" in " ".join(capsys.readouterr().out.split())


async def test_what_a_store_a_restore_replaced_holds_sealed_opens_no_more_with_the_old_key(
    shop: WooCommerceSandbox,
    open_rt: Callable[..., Any],
    tmp_path: Path,
    config_path: Path,
) -> None:
    """A store's first keys are derived from its master key, so the old key computes the key
    of what a replaced store that was never rotated holds sealed on its own: its keys wrapped
    anew, that copy still opened with the old key alone. The rotation seals it again under a
    fresh key, as it does the store; its audit trail still verifies under its own keys."""
    seed(shop)
    out = tmp_path / "b.db"
    async with open_rt() as rt:
        await rt.engine.sync()
        take_backup(rt.config, out)
        jobs.enqueue(rt.store, rt.keyring, "resync", {"system": "shop", "email": CANARY_EMAIL})
        config = rt.config
    replaced_path = restore_backup(config, out).replaced_path
    assert replaced_path is not None
    replaced = Path(replaced_path)
    old_key = Keyring(decode_master_key(MASTER_KEY))
    before = _blobs_in(replaced)
    assert before and all(old_key.open(blob, context) for blob, context in before.values())
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 0

    after = _blobs_in(replaced)
    assert set(after) == set(before)
    on_disk = replaced.read_bytes()
    for row, (blob, context) in after.items():
        with pytest.raises(DecryptionError):
            old_key.open(blob, context)
        assert before[row][0] not in on_disk
    use_key(config_path, new_key)
    store = Store(replaced)
    try:
        keyring = store_keyring(store, load_config(config_path))
        assert keyring.keys.subject == old_key.keys.subject
        for blob, context in after.values():
            keyring.open(blob, context)
        audit.use_keys(store, keyring)
        verified = audit.verify(store)
        assert verified.ok and verified.mac == audit.MAC_CHECKED
    finally:
        store.close()


def test_replaced_stores_owed_the_new_key_by_a_rotation_cut_short_get_it_at_the_next_open(
    config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation killed after its commit (the store under the new key) and before the
    stores a restore replaced are written under it too would leave those full sealed copies
    under the old key, which may have leaked, with nothing left that knows that key. Their
    new wrapping is staged before the commit: the next open under the new key puts it in.
    One staged by a rotation that never committed is dropped, the store as it was."""
    store_path = bound_store(config_path)
    config = load_config(config_path)
    store = Store(store_path)
    try:
        keyring = open_keyring(store, config)
        jobs.enqueue(store, keyring, "resync", {"system": "shop", "email": OTHER_EMAIL})
    finally:
        store.close()
    take_backup(config, tmp_path / "b.db")
    replaced_path = restore_backup(config, tmp_path / "b.db").replaced_path
    assert replaced_path is not None
    replaced = Path(replaced_path)
    staged = replaced.with_name(replaced.name + ".rotating")
    old_fingerprint = keyset_fingerprint(replaced)

    # Killed before the commit: the staged wrapping (under a key never put in use) goes.
    staged.write_bytes(wrap_data_keys(decode_master_key(generate_master_key()), keyring.keys))
    assert main(["-c", str(config_path), "keys", "show"]) == 0
    assert not staged.exists() and keyset_fingerprint(replaced) == old_fingerprint

    def killed(_self: ReceiptSigner) -> None:
        raise SystemExit("killed")

    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    with monkeypatch.context() as patch:
        patch.setattr(ReceiptSigner, "finish_reseal", killed)
        with pytest.raises(SystemExit):
            main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"])
    assert keyset_fingerprint(replaced) == old_fingerprint  # still owed
    assert staged.stat().st_mode & 0o777 == 0o600
    use_key(config_path, new_key)  # the store committed: the operator points at the new key
    assert main(["-c", str(config_path), "keys", "show"]) == 0
    assert not staged.exists()
    assert keyset_fingerprint(replaced) == master_fingerprint(decode_master_key(new_key))
    with closing(sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)) as db:
        (wrapped,) = db.execute("SELECT wrapped FROM keyset WHERE id=1").fetchone()
    with pytest.raises(DecryptionError):
        unwrap_data_keys(decode_master_key(MASTER_KEY), wrapped)
    opened = unwrap_data_keys(decode_master_key(new_key), wrapped)
    assert (opened.subject, opened.payload) == (keyring.keys.subject, keyring.keys.payload)


def test_keys_rotate_run_again_after_a_rotation_cut_short_past_its_commit_finishes_it(
    config_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's recipe run again after `keys rotate` was killed past its commit (before
    the `mv`): the store is under the --to key already. It finishes what was left (the
    receipt key file and the replaced stores staged under the new key), says so, and exits
    0 so the `mv` follows; a store under neither key is refused, naming keys.source."""
    store_path = bound_store(config_path)
    config = load_config(config_path)
    take_backup(config, tmp_path / "b.db")
    replaced_path = restore_backup(config, tmp_path / "b.db").replaced_path
    assert replaced_path is not None
    key_file = receipt_key_path(store_path)
    staged = key_file.with_name(key_file.name + ".rotating")

    def killed(_self: ReceiptSigner) -> None:
        raise SystemExit("killed")

    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    rotate = ["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]
    with monkeypatch.context() as patch:
        patch.setattr(ReceiptSigner, "finish_reseal", killed)
        with pytest.raises(SystemExit):
            main(rotate)
    capsys.readouterr()
    new_fingerprint = master_fingerprint(decode_master_key(new_key))
    assert keyset_fingerprint(store_path) == new_fingerprint and staged.exists()

    assert main([*rotate, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["already_rotated"] is True and said["new_fingerprint"] == new_fingerprint
    assert said["receipt_key_settled"] is True and said["keys_source"] == "file:new.key"
    assert said["replaced_stores_resealed"] == [replaced_path]
    assert [kept["key"] for kept in said["not_renewed"]][:2] == ["subject", "payload"]
    assert not staged.exists() and keyset_fingerprint(Path(replaced_path)) == new_fingerprint
    assert main(rotate) == 0  # and again, in words: nothing left, the same advice
    text = " ".join(capsys.readouterr().out.split())
    assert "already under the new master key" in text and "now set keys.source" in text
    assert new_key not in text and MASTER_KEY not in text
    use_key(config_path, new_key)  # the recipe's `mv`
    store = store_of(config_path)
    try:
        keyring = open_keyring(store, load_config(config_path))
        assert ReceiptSigner(key_file, keyring).public_key_pem()
    finally:
        store.close()

    # Under neither the configured key nor the --to key: refused as before, nothing done.
    use_key(config_path, MASTER_KEY)
    (config_path.parent / "other.key").write_text(generate_master_key())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:other.key"]) == 2
    assert "point keys.source at the new one" in capsys.readouterr().err
    assert keyset_fingerprint(store_path) == new_fingerprint


def test_the_old_key_kept_after_a_rotation_restores_a_backup_from_before_and_opens_no_more(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README, "Replacing the master key": `keys rotate` says to keep the old key for the
    backups taken before, which open with it only. Kept, it restores such a backup; the
    rotation made again to the key in use, it opens nothing in the store or in the stores
    the restore and the rotations replaced (their keys, what they hold sealed)."""
    store_path = bound_store(config_path)
    store = store_of(config_path)
    try:
        jobs.enqueue(
            store, open_keyring(store, load_config(config_path)), "resync", {"system": "shop"}
        )
    finally:
        store.close()
    backup = tmp_path / "before.db"
    assert main(["-c", str(config_path), "backup", "--out", str(backup)]) == 0
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    capsys.readouterr()
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "backups taken before this rotation open with the old key only" in said
    assert "retired key file" in said and "Replacing the master key" in said
    use_key(config_path, new_key)  # the old key kept as master.key.retired-<time>
    assert main(["-c", str(config_path), "restore", "--from", str(backup)]) == 2
    use_key(config_path, MASTER_KEY)  # the retired key, for the restore
    assert main(["-c", str(config_path), "restore", "--from", str(backup)]) == 0
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 0
    use_key(config_path, new_key)
    assert main(["-c", str(config_path), "keys", "show"]) == 0

    retired = decode_master_key(MASTER_KEY)
    derived = Keyring(retired)
    replaced = sorted(store_path.parent.glob(f"{store_path.name}.replaced-*"))
    assert replaced
    for path in [store_path, *replaced]:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (wrapped,) = db.execute("SELECT wrapped FROM keyset WHERE id=1").fetchone()
            blobs = [blob for (blob,) in db.execute("SELECT params FROM jobs")]
        with pytest.raises(DecryptionError):
            unwrap_data_keys(retired, wrapped)
        for blob in blobs:
            with pytest.raises(DecryptionError):
                derived.open(blob, JOB_CONTEXT)
    with pytest.raises(DecryptionError):
        derived.open(receipt_key_path(store_path).read_bytes(), RECEIPT_KEY_CONTEXT)


def test_keys_rotate_and_show_with_no_store_at_store_path_make_none(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store.path that names no store (a wrong path, a config copied from elsewhere):
    `keys rotate` refuses, as `backup` does, rather than make an empty store there, bind it
    to the old key and say "rotated" (the key then moved over the old one would open the
    real store no more); `keys show` says there is none yet. Neither makes a file."""
    store_path = load_config(config_path).store_path
    (config_path.parent / "new.key").write_text(generate_master_key())
    assert main(["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]) == 1
    assert "there is no store yet" in capsys.readouterr().err
    assert main(["-c", str(config_path), "keys", "show"]) == 0
    assert "no store at" in capsys.readouterr().out
    assert main(["-c", str(config_path), "keys", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["store_exists"] is False and shown["master_fingerprint"] is None
    assert not store_path.parent.exists()


def test_keys_rotate_reads_a_relative_to_from_where_keys_source_is_read(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`--to file:PATH` is relative to the config file as keys.source is, and the command
    says to set keys.source to that same text: with the config reached through a symlink
    (a config-management checkout linked into /etc) both are read beside the real file."""
    real = tmp_path / "checkout"
    real.mkdir()
    config = write_config(real)
    (real / "new.key").write_text(generate_master_key())
    etc = tmp_path / "etc"
    etc.mkdir()
    linked = etc / "klantsync.toml"
    linked.symlink_to(config)
    bound_store(linked)
    assert main(["-c", str(linked), "keys", "rotate", "--to", "file:new.key", "--json"]) == 0
    use_key(config, (real / "new.key").read_text())
    assert main(["-c", str(linked), "keys", "show"]) == 0


def _mortal_files(death: Any) -> Callable[[Any], Any]:
    """A file call that is a moment before and after it, and raises once the process died."""

    def mortal(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            death.moment()
            result = real(*args, **kwargs)
            death.moment()
            return result

        return call

    return mortal


def test_keys_rotate_killed_at_any_step_is_finished_by_the_readme_s_recipe_run_again(
    config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys rotate` killed (as `kill -9`: nothing runs after, no clean-up) before or after
    each commit and each file written, renamed or deleted, in turn. The README's recovery:
    run the recipe again (keys.source still the old key), which exits 0, then the `mv`.
    Afterwards every command opens the store under the new key, what it holds sealed and its
    receipt signing key open, no staged file is left, the store a restore replaced is under
    the new key too, and a backup taken before still restores with the old key."""
    import connector.store_base
    from tests.e2e.test_kill_anywhere import Death, Killed, _SqliteWith

    store_path = bound_store(config_path)
    config = load_config(config_path)
    store = Store(store_path)
    try:
        keyring = open_keyring(store, config)
        jobs.enqueue(store, keyring, "resync", {"system": "shop", "email": OTHER_EMAIL})
    finally:
        store.close()
    before = tmp_path / "before.db"
    take_backup(config, before)
    assert restore_backup(config, before).replaced_path is not None  # a replaced store too
    new_key = generate_master_key()
    (config_path.parent / "new.key").write_text(new_key)
    new_fingerprint = master_fingerprint(decode_master_key(new_key))
    folders = [config_path.parent, store_path.parent]
    pristine = {
        path: path.read_bytes() for folder in folders for path in folder.iterdir() if path.is_file()
    }
    rotate = ["-c", str(config_path), "keys", "rotate", "--to", "file:new.key"]
    moments = -1
    at = 0
    while moments < 0 or at < moments:
        at += 1
        for folder in folders:
            for path in folder.iterdir():
                if path.is_file():
                    path.unlink()
        for path, content in pristine.items():
            path.write_bytes(content)
        death = Death() if moments < 0 else Death(at)
        mortal = _mortal_files(death)
        try:
            with monkeypatch.context() as patch:
                patch.setattr(connector.store_base, "sqlite3", _SqliteWith(death))
                patch.setattr(connector.keyset, "sqlite3", _SqliteWith(death))
                for name in ("replace", "link", "unlink", "rename"):
                    patch.setattr(os, name, mortal(getattr(os, name)))
                code = main(rotate)
        except (Killed, SystemExit):
            if not death.dead:
                raise
        else:
            if moments < 0:
                assert code == 0
                moments, at = death.moments, 0
                continue
            assert death.dead, f"a rotation to be killed at moment {at} of {moments} was not"
        assert main(rotate) == 0, at  # the recipe run again, keys.source the old key
        use_key(config_path, new_key)  # its `mv`
        assert main(["-c", str(config_path), "keys", "show"]) == 0, at
        store = store_of(config_path)
        try:
            keyring = open_keyring(store, load_config(config_path))
            blobs = [blob for (blob,) in store.db.execute("SELECT params FROM jobs")]
            assert blobs, at
            for blob in blobs:
                keyring.open(blob, JOB_CONTEXT)
            assert ReceiptSigner.for_store(store_path, keyring).exists(), at
            assert ReceiptSigner.for_store(store_path, keyring).public_key_pem(), at
            assert audit.verify(store).ok, at
        finally:
            store.close()
        assert not list(store_path.parent.glob("*.rotating")), at
        for replaced in store_path.parent.glob(f"{store_path.name}.replaced-*"):
            if not replaced.name.endswith(("-wal", "-shm")):
                assert keyset_fingerprint(replaced) == new_fingerprint, (at, replaced)
        use_key(config_path, MASTER_KEY)  # the retired key, for a backup from before
        assert main(["-c", str(config_path), "restore", "--from", str(before)]) == 0, at
    assert moments > 10, moments
