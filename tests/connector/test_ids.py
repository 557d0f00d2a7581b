"""The identity map's forms of ids: cloaked for systems whose ids are made from personal data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from connector.crypto import CLOAKED_ID_PREFIX, Keyring, decode_master_key, generate_master_key
from connector.ids import SystemIds
from connector.state import Store
from tests.conftest import sqlite_steps


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
