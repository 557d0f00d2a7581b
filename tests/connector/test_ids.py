"""The identity map's forms of ids: cloaked for systems whose ids are made from personal data."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from connector.crypto import CLOAKED_ID_PREFIX, Keyring, decode_master_key, generate_master_key
from connector.ids import SystemIds
from connector.state import Store
from tests.conftest import sqlite_steps
from tests.store_versions import store_at


def _ids(keyring: Keyring) -> SystemIds:
    systems: Any = {
        "news": SimpleNamespace(adapter=SimpleNamespace(personal_ids=True)),
        "crm": SimpleNamespace(adapter=SimpleNamespace(personal_ids=False)),
    }
    return SystemIds(keyring, systems)


def _identity(store: Store, system: str, number: int, external_id: str) -> None:
    store.db.execute(
        "INSERT INTO identities(system, subject_no, external_id) VALUES (?,?,?)",
        (system, number, external_id),
    )


def test_ids_kept_as_they_were_are_cloaked_on_open_and_nothing_else_is_read(
    tmp_path: Path,
) -> None:
    """Ids an older store kept in the clear, sorting before and after the cloaked ones, are
    cloaked; once every id is cloaked, opening reads no more of them however many there are."""
    keyring = Keyring(decode_master_key(generate_master_key()))
    ids = _ids(keyring)
    store = Store(tmp_path / "store.db")
    with store.transaction():
        for number in range(1, 20_001):
            _identity(store, "news", number, keyring.cloak_id("news", f"{number:032x}"))
            _identity(store, "crm", number, str(number))  # a counter, kept as is
        _identity(store, "news", 20_001, "0" * 32)  # sorts before the cloaked ones
        _identity(store, "news", 20_002, "z" * 32)  # and after them
    assert ids.cloak_stored(store) == 2
    kept = dict(
        store.db.execute("SELECT subject_no, external_id FROM identities WHERE system='news'")
    )
    assert all(value.startswith(CLOAKED_ID_PREFIX) for value in kept.values())
    assert ids.from_store("news", kept[20_001]) == "0" * 32
    assert ids.from_store("news", kept[20_002]) == "z" * 32
    assert store.db.execute(
        "SELECT external_id FROM identities WHERE system='crm' AND subject_no=7"
    ).fetchone() == ("7",)
    steps, cloaked = sqlite_steps(store, lambda: ids.cloak_stored(store))
    assert cloaked == 0
    assert steps < 5  # thousands of steps: testing each of the 20,000 ids took a hundred
    store.close()


def test_member_ids_an_older_store_kept_in_clear_are_not_left_in_its_files_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """Mailchimp names a member by the MD5 of their address. Opening a store from before
    schema 8 copies the identity map through the write-ahead log, and the open then cloaks
    the ids; a passive checkpoint (the daemon's) never truncates the log, and secure_delete
    zeroes only the main file's freed pages: every member id stayed readable in the -wal
    for as long as the daemon ran. The upgrade and the cloaking truncate it."""
    path = tmp_path / "klantsync.db"
    db = store_at(path, 7)
    members = [
        hashlib.md5(f"klant{i}@voorbeeld.nl".encode()).hexdigest()  # noqa: S324 (Mailchimp's)
        for i in range(200)
    ]
    for i, member in enumerate(members):
        db.execute("INSERT INTO identities VALUES ('news', ?, ?)", (f"{i:032x}", member))
    db.close()

    store = Store(path)  # the daemon starting on the upgraded klantsync
    try:
        keyring = Keyring(decode_master_key(generate_master_key()))
        assert _ids(keyring).cloak_stored(store) == 200  # as open_runtime does
        store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the daemon's checkpointer
        files = [p for p in tmp_path.iterdir() if p.name.startswith(path.name)]
        held = {p.name: sum(p.read_bytes().count(m.encode()) for m in members) for p in files}
    finally:
        store.close()
    assert not any(held.values()), held


def test_ids_cloaked_at_open_are_not_left_as_they_were_in_the_log(tmp_path: Path) -> None:
    """A store at the current schema whose ids an earlier version kept as they were, still
    in its log: the log is truncated once they are cloaked, not left holding them."""
    path = tmp_path / "klantsync.db"
    member = hashlib.md5(b"klant@voorbeeld.nl").hexdigest()  # noqa: S324 (Mailchimp's)
    store = Store(path)
    try:
        _identity(store, "news", 1, member)  # as the earlier version wrote it
        assert member.encode() in path.with_name(path.name + "-wal").read_bytes()
        assert _ids(Keyring(decode_master_key(generate_master_key()))).cloak_stored(store) == 1
        assert member.encode() not in path.with_name(path.name + "-wal").read_bytes()
    finally:
        store.close()
