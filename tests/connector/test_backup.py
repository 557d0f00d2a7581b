"""Backups of the store, taken while it is in use."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, backup
from connector.backup import take_backup
from connector.cli import main
from connector.config import load_config
from connector.crypto import BUNDLE_PATH_CONTEXT
from connector.demo import REPO_MAPPINGS
from connector.devtls import DevCA
from connector.errors import StoreError
from connector.keyset import open_keyring
from connector.lock import (
    DaemonLock,
    daemon_running,
    lock_files,
    lock_path,
    sync_lock_path,
    sync_running,
    syncing,
)
from connector.receipts import ReceiptSigner, receipt_key_path, retired_keys_dir
from connector.runtime import Runtime
from connector.state import Store
from connector.storefile import read_only
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    CANARY_PHONE_E164,
    disk_full_error,
    sqlite_steps,
)
from tests.store_versions import store_at

OTHER_EMAIL = "otto.ander@voorbeeld.nl"


def seed(shop: WooCommerceSandbox) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111", city="Delft")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(read_only(path)) as db:
        return db.execute(query).fetchall()


async def test_a_backup_taken_while_the_store_is_in_use_holds_all_it_committed(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Taken beside an open runtime whose last transactions sit in the WAL: the copy holds
    them, is one file readable by its owner only, is intact, holds nothing in clear, and
    its SHA-256 is in the store's audit trail."""
    seed(shop)
    await rt.engine.sync()
    assert Path(f"{rt.store.path}-wal").stat().st_size > 0  # not all in the main file yet
    out = tmp_path / "backups" / "nightly.db"
    facts = take_backup(rt.config, out)
    live = rt.store.db.execute("SELECT COUNT(*) FROM subjects").fetchone()
    assert rows(out, "SELECT COUNT(*) FROM subjects") == [live] and live[0] == 2
    assert rows(out, "PRAGMA integrity_check") == [("ok",)]
    assert not Path(f"{out}-wal").exists() and out.stat().st_mode & 0o777 == 0o600
    assert not list(out.parent.glob(".*partial*"))
    content = out.read_bytes()
    for canary in (CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, CANARY_PHONE_E164):
        assert canary.encode() not in content
    assert facts.sha256 == sha256(out) and facts.bytes == len(content)
    (entry,) = [e for e in audit.entries(rt.store) if e.kind == backup.STORE_BACKUP]
    assert entry.data["sha256"] == facts.sha256
    assert entry.data["audit_seq"] == facts.audit_seq == entry.seq - 1
    assert audit.verify(rt.store).ok


def test_an_access_bundle_path_an_older_store_kept_in_clear_is_sealed_before_its_backup(
    config_path: Path, tmp_path: Path
) -> None:
    """A store from before schema 10 kept an access bundle's path in clear (an --out folder
    may be named after the person), and migration 10 copied it as it was: the first backup
    after the upgrade carried the name. The backup seals it first, in the store too (and
    its log, which held it, is truncated); the path still opens for the sweep."""
    store_path = load_config(config_path).store_path
    folder = f"/srv/inzage/{CANARY_NAME}"
    db = store_at(store_path, 9)
    db.execute(
        "INSERT INTO bundles(path, files, created_at) VALUES (?, ?, ?)",
        (folder, json.dumps(["data.json"]), "2026-11-20T10:00:00+00:00"),
    )
    db.close()
    out = tmp_path / "backups" / "store.db"
    assert main(["-c", str(config_path), "backup", "--out", str(out)]) == 0
    assert CANARY_NAME.encode() not in out.read_bytes()
    for name in (store_path.name, f"{store_path.name}-wal"):
        held = store_path.with_name(name)
        assert not held.exists() or CANARY_NAME.encode() not in held.read_bytes(), name
    store = Store(store_path)
    try:
        (sealed,) = store.db.execute("SELECT path FROM bundles").fetchone()
        keyring = open_keyring(store, load_config(config_path))
        assert keyring.open(sealed, BUNDLE_PATH_CONTEXT).decode() == folder
    finally:
        store.close()


def test_backup_usage_mistakes_exit_2(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder, or the store itself, as --out; a backup before there is any store (exit 1)."""
    store_path = load_config(config_path).store_path
    assert main(["-c", str(config_path), "backup", "--out", str(tmp_path / "b.db")]) == 1
    assert "no store yet" in capsys.readouterr().err
    assert not store_path.exists()
    Store(store_path).close()
    folder = tmp_path / "folder"
    folder.mkdir()
    for out, said in ((folder, "is a directory"), (store_path, "the store itself")):
        assert main(["-c", str(config_path), "backup", "--out", str(out), "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and said in answer["message"]


def test_a_backup_whose_disk_is_full_names_the_backup_not_the_store(
    config_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`backup --out /mnt/backups/x.db` with the backups' disk full: SQLite's full disk comes
    from the copy's connection, and was said as the store's ("the disk holding the store is
    full ... free space and run again"): the operator freed space on the store's disk, which
    was never full, and the backups went on failing. It names the backup and its disk."""
    Store(load_config(config_path).store_path).close()
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    connect = sqlite3.connect

    def on_a_full_backup_disk(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(target, *args, **kwargs)
        if isinstance(target, Path) and target.parent == out_dir:
            db.execute("PRAGMA max_page_count=3")  # the backups' disk is full
        return db

    monkeypatch.setattr(sqlite3, "connect", on_a_full_backup_disk)
    capsys.readouterr()
    out = out_dir / "b.db"
    assert main(["-c", str(config_path), "backup", "--json", "--out", str(out)]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "store"
    assert answer["message"].startswith(
        f"{out}: the backup could not be written: its disk is full (SQLite: database or disk "
        "is full); the store is as it was: free space there (or name another --out)"
    )
    assert list(out_dir.iterdir()) == []  # no part of it left behind


def test_a_backup_of_a_store_on_a_full_disk_is_kept_and_said_not_recorded(
    config_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The store's disk full, the backups' not: the copy was written whole, then recording
    it in the audit trail failed, and the command said only that the store's disk was full
    ("the next sync resumes..."), as if there were no backup. The copy is kept and named,
    with the entry the trail lacks (exit 1)."""
    store_path = load_config(config_path).store_path
    Store(store_path).close()
    entries = rows(store_path, "SELECT count(*) FROM audit")

    def on_the_store_s_full_disk(*args: Any, **kwargs: Any) -> int:
        raise disk_full_error()

    monkeypatch.setattr(audit, "append", on_the_store_s_full_disk)
    capsys.readouterr()
    out = tmp_path / "backups" / "b.db"
    assert main(["-c", str(config_path), "backup", "--json", "--out", str(out)]) == 1
    facts = json.loads(capsys.readouterr().out)
    assert facts["path"] == str(out) and facts["sha256"] == sha256(out)
    assert facts["recorded"] is False
    assert facts["record_problem"].startswith(f"{store_path}: the disk holding the store is full")
    assert (
        "the backup is whole and kept, only its entry in the audit trail is missing"
        in (facts["record_problem"])
    )
    assert "next sync" not in facts["record_problem"]
    assert rows(out, "PRAGMA integrity_check") == [("ok",)]
    assert rows(store_path, "SELECT count(*) FROM audit") == entries
    assert main(["-c", str(config_path), "backup", "--out", str(out)]) == 1
    said = " ".join(capsys.readouterr().out.split())
    assert f"backup written: {out}" in said
    assert "the backup is whole, but the store could not record it in its audit trail" in said


def test_backup_refuses_to_write_over_the_master_key_and_the_other_key_files(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming the master key file keys.source names (directly or through a link),
    another file: secret, or the store's receipt signing key file is refused (exit 2): the
    backup written over the master key would have left nothing able to open the store or
    the backup."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        keyring = open_keyring(store, config)
        ReceiptSigner.for_store(config.store_path, keyring).public_key_pem()
    finally:
        store.close()
    secret = config_path.parent / "secrets" / "admin"
    secret.parent.mkdir()
    secret.write_text("admin-token-for-tests")
    config_path.write_text(
        config_path.read_text() + '\n[daemon]\nadmin_token = "file:secrets/admin"\n'
    )
    link = tmp_path / "link-to-key"
    link.symlink_to(config_path.parent / "master.key")
    key_files = [
        config_path.parent / "master.key",
        link,
        secret,
        receipt_key_path(config.store_path),
    ]
    before = {path: path.read_bytes() for path in key_files}
    for out in key_files:
        assert main(["-c", str(config_path), "backup", "--out", str(out), "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and "name another file" in answer["message"]
        assert "admin-token" not in answer["message"]
    assert {path: path.read_bytes() for path in key_files} == before
    assert link.is_symlink()


def test_backup_refuses_to_write_over_a_master_key_read_as_a_systemd_credential(
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """keys.source = "credential:master.key", run as the README's ks runs a command (the
    credentials folder is the state directory, where the unit loads the key file from):
    --out naming that file wrote the backup over the master key, which only a file: key
    was kept from, and left nothing able to open the store or any backup."""
    key = config_path.parent / "master.key"
    config_path.write_text(
        config_path.read_text().replace('"file:master.key"', '"credential:master.key"')
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(config_path.parent))
    _keyed_store(config_path)
    before = key.read_bytes()
    assert main(["-c", str(config_path), "backup", "--out", str(key), "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "usage" and "keys.source" in answer["message"], answer
    assert "name another file" in answer["message"]
    assert key.read_bytes() == before


def test_backup_refuses_to_write_over_the_daemon_s_tls_key_and_certificate(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming daemon.tls_key or daemon.tls_cert is refused (exit 2) and leaves it as
    it was: a backup written over the key left the daemon unable to listen (its config no
    longer loaded)."""
    pair = DevCA(tmp_path / "ca").issue("klantsync", hosts=("klantsync.voorbeeld.nl",))
    config_path.write_text(
        config_path.read_text()
        + f'\n[daemon]\ntls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"\n'
    )
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        open_keyring(store, config)
    finally:
        store.close()
    tls_files = [Path(pair.key_path), Path(pair.cert_path)]
    before = {path: path.read_bytes() for path in tls_files}
    for out, key in zip(tls_files, ("daemon.tls_key", "daemon.tls_cert"), strict=True):
        assert main(["-c", str(config_path), "backup", "--out", str(out), "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and key in answer["message"]
    assert {path: path.read_bytes() for path in tls_files} == before


def _keyed_store(config_path: Path) -> Path:
    """The store of ``config_path``, made and bound to its master key; its path."""
    config = load_config(config_path)
    store = Store(config.store_path)
    try:
        open_keyring(store, config)
    finally:
        store.close()
    return config.store_path


def test_a_symlink_loop_as_out_or_as_store_path_is_said_not_an_internal_error(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A symlink loop named as --out (or --from) is bad usage, and one as store.path bad
    configuration (exit 2): following either to compare it with the store's files was an
    internal error."""
    store_path = load_config(config_path).store_path
    Store(store_path).close()
    loop = tmp_path / "loop.db"
    loop.symlink_to(loop.name)
    for command in (["backup", "--out", str(loop)], ["restore", "--from", str(loop)]):
        assert main(["-c", str(config_path), *command, "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and "a symlink loop" in answer["message"]
    looped = config_path.read_text().replace('"state/klantsync.db"', f'"{loop}"')
    config_path.write_text(looped)
    assert main(["-c", str(config_path), "backup", "--out", str(tmp_path / "b.db"), "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "config" and answer["key"] == "store.path"
    assert "a symlink loop" in answer["message"]


def test_backup_refuses_to_write_over_the_sync_lock_the_daemon_holds(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming the store's sync lock file is refused (exit 2) and the daemon keeps its
    lock: the backup renamed over it left the daemon locking a file nobody opens, `status`
    reading "no sync" and a `sync` beside the daemon let in."""
    store_path = _keyed_store(config_path)
    with syncing(store_path, "daemon"):  # as `klantsync run` holds it for its life
        out = str(sync_lock_path(store_path))
        assert main(["-c", str(config_path), "backup", "--out", out, "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and "lock file" in answer["message"]
        assert sync_running(store_path)
        with pytest.raises(StoreError), syncing(store_path, "sync"):
            pass


def test_backup_refuses_to_write_over_the_daemon_lock_and_the_keys_lock(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming the daemon's lock file (or the keys' lock) is refused (exit 2): written
    over, a running daemon no longer showed as running, `resync` ran inline beside it, and a
    second `klantsync run` started."""
    store_path = _keyed_store(config_path)
    with DaemonLock(store_path):
        for out in (lock_path(store_path), *lock_files(store_path)):
            assert main(["-c", str(config_path), "backup", "--out", str(out)]) == 2
            assert "lock file" in capsys.readouterr().err
        assert daemon_running(store_path)
        with pytest.raises(StoreError), DaemonLock(store_path):
            pass


def test_out_naming_the_retired_receipt_keys_folder_is_refused_before_it_exists(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`register --out` (the guard `backup`, `incident open` and `dsr public-key` share)
    naming `<store>.receipt-keys`, which the first `dsr rotate-key` makes, or a file in it,
    is refused (exit 2): a file there made every later rotation an internal error, and the
    signing key could no longer be replaced after a leak."""
    store_path = _keyed_store(config_path)
    folder = retired_keys_dir(receipt_key_path(store_path))
    assert not folder.exists()
    for out in (folder, folder / "0123456789abcdef.pem"):
        assert main(["-c", str(config_path), "register", "--out", str(out), "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and "retired receipt keys" in answer["message"]
    assert not folder.exists()
    assert main(["-c", str(config_path), "dsr", "rotate-key", "--json"]) == 0


def test_backup_refuses_to_write_over_a_store_a_restore_replaced(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a store a restore replaced (``<store>.replaced-<time>``, its -wal, the
    wrapping a rotation stages beside it) or the signing key file a restore set aside is
    refused (exit 2) and the file left as it is: the audit entries between the backup and
    the restore are in that store only, and a backup written over it lost them. A name of
    that form not taken yet is refused too: the retention sweep takes a file so named for a
    replaced store, and empties it. Restoring from a replaced store (undoing a restore)
    still reads it."""
    store_path = _keyed_store(config_path)
    base = ["-c", str(config_path)]
    first = tmp_path / "first.db"
    assert main([*base, "backup", "--out", str(first)]) == 0
    assert main([*base, "restore", "--from", str(first)]) == 0
    capsys.readouterr()
    (replaced,) = store_path.parent.glob(f"{store_path.name}.replaced-*")
    before = sha256(replaced)
    key_aside = receipt_key_path(store_path).with_name(
        f"{receipt_key_path(store_path).name}.replaced-20260101T000000Z"
    )
    for out in (
        replaced,
        replaced.with_name(f"{replaced.name}-wal"),
        replaced.with_name(f"{replaced.name}.rotating"),
        store_path.with_name(f"{store_path.name}.replaced-20990101T000000Z"),
        key_aside,
    ):
        assert main([*base, "backup", "--out", str(out), "--json"]) == 2, out
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "usage" and "a restore replaced" in answer["message"]
    assert sha256(replaced) == before
    assert sorted(p.name for p in store_path.parent.glob("*.replaced-*")) == [replaced.name]
    assert main([*base, "restore", "--from", str(replaced)]) == 0


def test_the_last_backup_is_found_without_reading_the_audit_trail(tmp_path: Path) -> None:
    """`status`, `/metrics` and the daily review ask for the last backup and restore; on a
    long trail with neither, the index by kind (schema 13) answers at once, where a look
    from the newest entry back read every entry."""
    store = Store(tmp_path / "s.db")
    try:
        audit.append_many(store, [(audit.SYNC_RUN, {"n": n}, None) for n in range(20_000)])
        thousands, found = sqlite_steps(store, lambda: backup.last_backup(store))
        assert found == {"backup": None, "restore": None}
        assert thousands <= 1
    finally:
        store.close()


async def test_a_backup_after_a_rotation_stopped_before_its_key_file_rename_carries_the_key(
    shop: WooCommerceSandbox,
    open_rt: Any,
    tmp_path: Path,
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keys rotate` stopped after its commit, before the receipt signing key file (sealed
    anew, staged beside it) was renamed into place. The backup copied the key file as it
    was on disk, sealed under keys the store no longer has: restored after a lost disk, it
    did not open, a new key was made, and the receipts signed before no longer verified."""
    from connector.crypto import decode_master_key, generate_master_key
    from connector.dsr import DsrService
    from connector.keyset import rotate_master_key
    from connector.receipts import ReceiptSigner
    from connector.restore import restore_backup

    class Killed(BaseException):
        pass

    seed(shop)
    async with open_rt() as rt:
        await rt.engine.sync()
        service = DsrService(rt)
        receipt = service.receipt((await service.erase(OTHER_EMAIL)).id)
        assert receipt is not None
        public = service.public_key_pem()
        config = rt.config

    def killed(_self: ReceiptSigner) -> None:
        raise Killed

    new_key = generate_master_key()
    with monkeypatch.context() as patch:
        patch.setattr(ReceiptSigner, "finish_reseal", killed)
        store = Store(config.store_path)
        try:
            with pytest.raises(Killed):
                rotate_master_key(store, config, decode_master_key(new_key))
        finally:
            store.close()
    (config_path.parent / "master.key").write_text(new_key)  # keys.source, as README says
    config = load_config(config_path)
    take_backup(config, tmp_path / "nightly.db")
    for name in config.store_path.parent.iterdir():  # the disk is lost
        if name.is_file():
            name.unlink()
    restore_backup(config, tmp_path / "nightly.db")
    async with open_rt() as rt:
        service = DsrService(rt)
        assert service.public_key_pem() == public
        assert service.verify_receipt(receipt.encode()).ok


async def test_a_receipt_key_brought_back_by_a_restore_keeps_its_age(
    shop: WooCommerceSandbox, open_rt: Any, tmp_path: Path
) -> None:
    """The daily review asks for a new receipt signing key once it is a year old, reading
    the key file's mtime. A backup kept the key's bytes only: restored after a lost disk, a
    400-day-old key looked a day old, and the reminder stayed silent for another year."""
    import os
    import time

    from connector.dsr import DsrService
    from connector.receipts import receipt_key_path
    from connector.restore import restore_backup

    seed(shop)
    async with open_rt() as rt:
        DsrService(rt).public_key_pem()  # the key is made on first use
        config = rt.config
    key_file = receipt_key_path(config.store_path)
    made = int(time.time() - 400 * 86400)
    os.utime(key_file, (made, made))
    take_backup(config, tmp_path / "nightly.db")
    for name in config.store_path.parent.iterdir():  # the disk is lost
        if name.is_file():
            name.unlink()
    assert restore_backup(config, tmp_path / "nightly.db").receipt_key == "from the backup"
    assert int(key_file.stat().st_mtime) == made


async def test_a_backup_from_before_key_ages_were_kept_still_restores_its_key(
    shop: WooCommerceSandbox, open_rt: Any, tmp_path: Path
) -> None:
    """Backups taken before the files table had mtime_ns bring the key back all the same."""
    from connector.dsr import DsrService
    from connector.restore import restore_backup

    seed(shop)
    async with open_rt() as rt:
        public = DsrService(rt).public_key_pem()
        config = rt.config
    out = tmp_path / "older.db"
    take_backup(config, out)
    with closing(sqlite3.connect(out)) as db:
        db.execute(f"ALTER TABLE {backup.FILES_TABLE} DROP COLUMN mtime_ns")
        db.commit()
    for name in config.store_path.parent.iterdir():
        if name.is_file():
            name.unlink()
    assert restore_backup(config, out).receipt_key == "from the backup"
    async with open_rt() as rt:
        assert DsrService(rt).public_key_pem() == public


async def test_a_backup_does_not_write_through_a_symlink_planted_at_its_partial_name(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The copy is written first to ".<name>.partial-<pid>" beside --out, a name anyone who
    may write to the backup folder can guess: a symlink planted there was followed, and the
    file it pointed at (the master key, say) overwritten with the store's copy."""
    import os

    shop.add_person("an@example.com", "An", "Klant", "+31612345678")
    await rt.engine.sync()
    victim = tmp_path / "victim.key"
    victim.write_text("precious key material\n")
    folder = tmp_path / "shared-backups"
    folder.mkdir()
    out = folder / "nightly.db"
    (folder / f".{out.name}.partial-{os.getpid()}").symlink_to(victim)
    take_backup(rt.config, out)
    assert victim.read_text() == "precious key material\n"
    assert out.is_file() and not out.is_symlink()


def test_backup_refuses_to_write_over_the_config_its_mappings_and_ca_bundles(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming the config file, a mapping it loads or a system's ca_bundle is refused
    (exit 2) and leaves it as it was: written over, the config no longer loaded."""
    ca = DevCA(tmp_path / "ca")
    mapping = tmp_path / "crm.toml"
    mapping.write_text((REPO_MAPPINGS / "hubspot.toml").read_text())
    text = config_path.read_text().replace(
        f'mapping = "{REPO_MAPPINGS / "hubspot.toml"}"', f'mapping = "{mapping}"'
    )
    config_path.write_text(
        text.replace(
            'base_url = "https://crm.test"',
            f'base_url = "https://crm.test"\nca_bundle = "{ca.ca_path}"',
            1,
        )
    )
    config = load_config(config_path)
    assert config.systems["crm"].mapping == mapping and config.systems["crm"].ca_bundle
    store = Store(config.store_path)
    try:
        open_keyring(store, config)
    finally:
        store.close()
    files = [config_path, mapping, Path(ca.ca_path)]
    before = {path: path.read_bytes() for path in files}
    for out, words in zip(
        files, ("the config file", "systems.crm.mapping", "systems.crm.ca_bundle"), strict=True
    ):
        assert main(["-c", str(config_path), "backup", "--out", str(out), "--json"]) == 2
        assert words in json.loads(capsys.readouterr().out)["message"]
    assert {path: path.read_bytes() for path in files} == before


async def test_a_backup_of_a_store_whose_audit_trail_does_not_verify_says_so_and_exits_1(
    shop: WooCommerceSandbox,
    open_rt: Any,
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`restore` refuses a backup whose trail does not verify: `backup` verifies it as it
    copies, writes the backup all the same, names the entry, and exits 1, so a daily timer
    fails from the day the trail broke, not on the day the backup is needed."""
    seed(shop)
    async with open_rt() as rt:
        await rt.engine.sync()
        store_path = rt.config.store_path
    good = tmp_path / "good.db"
    assert main(["-c", str(config_path), "backup", "--out", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["audit_verifies"] is True
    with closing(sqlite3.connect(store_path)) as db:
        db.execute("UPDATE audit SET data = data || ' ' WHERE seq = 1")
        db.commit()
    broken = tmp_path / "broken.db"
    assert main(["-c", str(config_path), "backup", "--out", str(broken), "--json"]) == 1
    facts = json.loads(capsys.readouterr().out)
    assert facts["audit_verifies"] is False and facts["audit_problem"].startswith("entry 1:")
    assert broken.exists()
    assert main(["-c", str(config_path), "backup", "--out", str(broken)]) == 1
    said = capsys.readouterr().out
    assert "audit trail does not verify (entry 1:" in said and "refuses this backup" in said
    entries = rows(store_path, "SELECT data FROM audit WHERE kind = 'store.backup' ORDER BY seq")
    assert [json.loads(data)["audit_verifies"] for (data,) in entries] == [True, False, False]


@pytest.mark.parametrize("next_name", ["nightly.db", "tomorrow.db"])
async def test_a_backup_killed_while_copying_leaves_no_copy_once_the_next_one_is_taken(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path, next_name: str
) -> None:
    """A backup killed while it writes its copy (a cron job's timeout, a kill -9) leaves it
    under the hidden ".<name>.partial-<pid>" beside --out, the store as of that moment with
    every erasure's traces since: the next backup into that folder, under the same name or
    the next day's, deletes it, which nothing did (each killed backup left one more,
    unseen, kept for good). A file of another program's named alike is left."""
    seed(shop)
    await rt.engine.sync()
    out = tmp_path / "backups" / "nightly.db"
    repo = Path(__file__).resolve().parents[2]
    killer = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(repo)!r})
        import connector.backup as backup
        from connector.config import load_config
        real = backup._copy
        def killed_after_the_copy(*args, **kwargs):
            real(*args, **kwargs)
            os._exit(137)  # killed with the copy written, before it took its name
        backup._copy = killed_after_the_copy
        backup.take_backup(load_config(Path({str(rt.config.path)!r})), Path({str(out)!r}))
        """
    )
    run = subprocess.run([sys.executable, "-c", killer], capture_output=True, env=os.environ)
    assert run.returncode == 137, run.stderr.decode()
    (left,) = out.parent.iterdir()  # the copy, under its partial name alone
    assert left.name.startswith(f".{out.name}.partial-")
    dead = left.name.rsplit("-", 1)[1]
    other = out.parent / f".notes.txt.partial-{dead}"  # not a database: not a copy of ours
    other.write_text("someone else's\n")
    take_backup(rt.config, out.with_name(next_name))
    assert not left.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([other.name, next_name])


async def test_a_backup_killed_before_its_copy_was_one_file_leaves_no_log_beside_it(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The copy takes the store's write-ahead logging with its pages, so what a backup
    writes into it after them (the receipt signing key file) goes to a "-wal" beside it
    until the copy is made one file. Killed in between, the next backup deleted the copy
    and left its "-wal" (the sealed signing key in it) and "-shm" there for good."""
    seed(shop)
    await rt.engine.sync()
    out = tmp_path / "backups" / "nightly.db"
    repo = Path(__file__).resolve().parents[2]
    killer = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(repo)!r})
        import connector.backup as backup
        from connector.config import load_config
        real = backup._receipt_files
        def killed_while_written(*args, **kwargs):
            yield from real(*args, **kwargs)
            os._exit(137)  # killed with the key file written into the copy's log
        backup._receipt_files = killed_while_written
        backup.take_backup(load_config(Path({str(rt.config.path)!r})), Path({str(out)!r}))
        """
    )
    run = subprocess.run([sys.executable, "-c", killer], capture_output=True, env=os.environ)
    assert run.returncode == 137, run.stderr.decode()
    left = sorted(p.name for p in out.parent.iterdir())
    assert any(name.endswith("-wal") for name in left), left
    take_backup(rt.config, out)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
