"""A store as the klantsync before the latest migration left it, for tests of upgrades.

One place says what undoes the latest migration, so a new migration changes this file (every
test that starts from the version before fails, saying so, until it does) rather than each
of those tests. A test that starts from before a given migration (store ids) undoes the ones
after it too, from :data:`UNDO`.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from connector.schema import MIGRATIONS, statements

__all__ = ["UNDO", "UNDO_LATEST", "add_people", "as_the_version_before", "as_version", "store_at"]

#: What undoes each migration a test starts from before (its number, as ``PRAGMA
#: user_version`` counts).
UNDO: dict[int, tuple[str, ...]] = {
    23: ("DROP TABLE store_identity",),
    24: ("DROP TABLE erased_records",),
    25: ("DROP TABLE consent_events",),
    26: ("DROP INDEX audit_subject",),
    27: (
        "ALTER TABLE delivered DROP COLUMN sent",
        "ALTER TABLE outbox DROP COLUMN sent",
        "DROP TABLE field_sets",
    ),
    28: ("DROP INDEX outbox_held",),
    29: ("DROP INDEX dead_letters_refused",),
    30: ("ALTER TABLE delivered DROP COLUMN sent_before",),
    31: (
        "DROP TRIGGER delivered_sent_earlier",
        "ALTER TABLE delivered DROP COLUMN sent_earlier",
    ),
}

#: The migration the statements undo, and them.
UNDO_LATEST: tuple[int, tuple[str, ...]] = (31, UNDO[31])


def as_the_version_before(store_path: Path) -> None:
    """Undo the latest migration of the store at ``store_path``, as if never applied."""
    version, _statements = UNDO_LATEST
    assert version == len(MIGRATIONS), (
        f"migration {len(MIGRATIONS)} is the latest now: say in tests/store_versions.py "
        "what undoes it"
    )
    as_version(store_path, version - 1)


def as_version(store_path: Path, version: int) -> None:
    """Undo every migration of the store at ``store_path`` after ``version``, latest first."""
    with closing(sqlite3.connect(store_path)) as db:
        for undone in range(len(MIGRATIONS), version, -1):
            for statement in UNDO[undone]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version={version}")
        db.commit()


def store_at(path: Path, version: int) -> sqlite3.Connection:
    """A store as the klantsync of schema ``version`` made it (WAL mode, its migrations run),
    returned open (each statement committed) for the caller to add rows to and close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for script in MIGRATIONS[:version]:
        for statement in statements(script):
            db.execute(statement)
    db.execute(f"PRAGMA user_version={version}")
    return db


def add_people(db: sqlite3.Connection, n: int, *, numbered: bool) -> None:
    """``n`` people known to a system ``crm``, keyed as the store's schema keys them: by
    subject id before schema 8, by subject number from then on."""
    for i in range(n):
        subject_id = f"{i:032x}"
        key: object = subject_id
        if numbered:
            db.execute(
                "INSERT INTO subjects(subject_no, subject_id) VALUES (?,?)", (i + 1, subject_id)
            )
            key = i + 1
        db.execute("INSERT INTO identities VALUES ('crm', ?, ?)", (key, str(1000 + i)))
        db.execute(
            "INSERT INTO delivered VALUES ('crm', ?, ?, '2026-11-01T00:00:00+00:00')",
            (key, f"{i:064x}"),
        )
