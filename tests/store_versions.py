"""A store as the klantsync before the latest migration left it, for tests of upgrades.

One place says what undoes the latest migration, so a new migration changes this file (every
test that starts from the version before fails, saying so, until it does) rather than each
of those tests.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from connector.schema import MIGRATIONS

__all__ = ["UNDO_LATEST", "as_the_version_before"]

#: The migration the statements undo (its number, as ``PRAGMA user_version`` counts), and them.
UNDO_LATEST: tuple[int, tuple[str, ...]] = (
    23,
    ("DROP TABLE store_identity",),
)


def as_the_version_before(store_path: Path) -> None:
    """Undo the latest migration of the store at ``store_path``, as if never applied."""
    version, statements = UNDO_LATEST
    assert version == len(MIGRATIONS), (
        f"migration {len(MIGRATIONS)} is the latest now: say in tests/store_versions.py "
        "what undoes it"
    )
    with closing(sqlite3.connect(store_path)) as db:
        for statement in statements:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={version - 1}")
        db.commit()
