"""Access bundles on disk: recorded when written, deleted by an erasure or by the retention
sweep (:mod:`connector.retention`) once past ``access_bundles_days``.

A bundle's row holds its path sealed (an operator may name a folder after the person), the
files it wrote there (only those are ever deleted) and whose it is, one row per id of the
person.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from connector.crypto import BUNDLE_PATH_CONTEXT, DecryptionError, Keyring
from connector.state import Store, rows_in, utcnow

__all__ = [
    "BundlePurge",
    "bundles_in",
    "count_bundles_of",
    "delete_bundles_of",
    "delete_bundles_of_customers",
    "record_bundle",
]


def record_bundle(
    store: Store,
    keyring: Keyring,
    path: Path,
    files: Sequence[str] | None = None,
    *,
    subject_ids: Sequence[str] = (),
) -> int:
    """Record an access bundle just written at ``path`` (a file or a folder); return its id.

    ``subject_ids`` are the ids of the person whose data it holds, one row each: their
    erasure, under any of them, deletes it (:func:`delete_bundles_of`).

    ``files`` are the bundle's files under ``path``, as written; without them, the files
    present now. The sweep deletes exactly those (then any folder they leave empty): a bundle
    written into a folder that also holds other things, even ``--out .``, never costs the
    operator anything but the bundle. The path is sealed: an operator may name a folder after
    the person.
    """
    root = path.resolve()
    if files is not None:
        listed = list(files)
    elif root.is_dir():
        listed = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        listed = [""]  # the path itself is the bundle
    sealed = keyring.seal(str(root).encode(), BUNDLE_PATH_CONTEXT)
    with store.transaction() as db:
        # A bundle written again where one was recorded (the request retried after the
        # process died between the two) replaces that record: one bundle, one row, kept
        # from now. Paths are sealed with a fresh nonce each, so they are compared opened;
        # the table holds only bundles still within their retention.
        _forget_rows_at(store, keyring, str(root))
        now, names = utcnow(), json.dumps(listed)
        ids = []
        whose: Sequence[str | None] = subject_ids or [None]
        for subject_id in whose:
            cur = db.execute(
                "INSERT INTO bundles(path, files, created_at, subject_id) VALUES (?,?,?,?)",
                (sealed, names, now, subject_id),
            )
            assert cur.lastrowid is not None
            ids.append(cur.lastrowid)
    return ids[0]


def _forget_rows_at(store: Store, keyring: Keyring, where: str) -> None:
    """Delete every bundle row whose path opens to ``where`` (one per id of the person)."""
    for bundle_id, stored in store.db.execute("SELECT id, path FROM bundles").fetchall():
        if _opened_path(keyring, stored) == where:
            store.db.execute("DELETE FROM bundles WHERE id=?", (bundle_id,))


def _opened_path(keyring: Keyring, path: bytes | str) -> str | None:
    """A bundle row's path (one from before schema 10 is in clear); None if it does not open."""
    if isinstance(path, str):
        return path
    try:
        return keyring.open(path, BUNDLE_PATH_CONTEXT).decode()
    except DecryptionError:
        return None


@dataclass
class BundlePurge:
    """The access bundles past their period, their files and then their rows."""

    keyring: Keyring
    cutoff: str
    errors: list[str]
    kind: str = "bundles"
    after: int = 0
    done: bool = False

    def take(self, store: Store, room: int) -> tuple[int, int]:
        rows = store.db.execute(
            "SELECT id, path, files FROM bundles WHERE created_at < ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (self.cutoff, self.after, room),
        ).fetchall()
        self.done = len(rows) < room
        if rows:
            self.after = int(rows[-1][0])  # one that failed is not tried again this sweep
        return _delete_rows(store, self.keyring, rows, self.errors), len(rows)


def delete_bundles_of(
    store: Store, keyring: Keyring, subject_ids: Sequence[str], errors: list[str]
) -> int:
    """Delete the access bundles written for any of ``subject_ids`` (an erasure); how many.

    A bundle that cannot be deleted now (its folder unwritable) keeps its record, is named
    in ``errors`` by id, and the sweep deletes it when due.
    """
    return _delete_rows(store, keyring, _bundle_rows_of(store, keyring, subject_ids), errors)


def count_bundles_of(store: Store, keyring: Keyring, subject_ids: Sequence[str]) -> int:
    """How many access bundles written for any of ``subject_ids`` are still recorded: those
    an erasure could not delete. One bundle counts once, however many of the person's ids
    it is recorded under."""
    return bundles_in(_bundle_rows_of(store, keyring, subject_ids), keyring)


def bundles_in(rows: Sequence[tuple[int, bytes | str, str]], keyring: Keyring | None) -> int:
    """How many bundles ``rows`` are: a bundle has a row for each id of the person.

    Told apart by their opened paths; without keys (a dry run), or where a path does not
    open, by the sealed path as stored: :func:`record_bundle` seals it once for all of a
    bundle's rows, with a fresh nonce each time, so one sealed value is one bundle.
    """

    def bundle(path: bytes | str) -> bytes | str:
        return (None if keyring is None else _opened_path(keyring, path)) or path

    return len({bundle(path) for _, path, _ in rows})


def _bundle_rows_of(
    store: Store, keyring: Keyring, subject_ids: Sequence[str]
) -> list[tuple[int, bytes | str, str]]:
    """The bundle rows recorded for any of ``subject_ids``, by id, then the unowned ones
    whose data.json names one of them."""
    wanted = set(subject_ids)
    if not wanted:
        return []
    rows: list[tuple[int, bytes | str, str]] = rows_in(
        store.db, "SELECT id, path, files FROM bundles WHERE subject_id IN (?...)", sorted(wanted)
    )
    rows.sort(key=lambda row: row[0])
    rows += _unowned_bundles_of(store, keyring, wanted.__contains__)
    return rows


def delete_bundles_of_customers(
    store: Store, keyring: Keyring, system: str, not_of: Sequence[str], errors: list[str]
) -> int:
    """Delete the access bundles of the people ``system`` holds a record for (as the
    identity map knows), less those one of ``not_of`` holds too; how many.

    Found by a join, not a list of the customers' ids: a shop of half a million customers
    is more ids than one statement may carry, and more than memory should hold.
    """
    others = ",".join("?" * len(not_of)) or "NULL"
    on = "ON i.subject_no = s.subject_no"
    customer = (
        f"EXISTS (SELECT 1 FROM subjects s CROSS JOIN identities i {on} "  # noqa: S608
        "WHERE s.subject_id = {sid} AND i.system = ? AND NOT EXISTS (SELECT 1 FROM identities o "
        f"WHERE o.subject_no = s.subject_no AND o.system IN ({others})))"
    )
    rows = store.db.execute(
        "SELECT b.id, b.path, b.files FROM bundles b WHERE "  # noqa: S608 - marks only
        + customer.format(sid="b.subject_id")
        + " ORDER BY b.id",
        (system, *not_of),
    ).fetchall()

    def is_customer(subject_id: str) -> bool:
        query = "SELECT " + customer.format(sid="?")
        return bool(store.db.execute(query, (subject_id, system, *not_of)).fetchone()[0])

    rows += _unowned_bundles_of(store, keyring, is_customer)
    return _delete_rows(store, keyring, rows, errors)


def _unowned_bundles_of(
    store: Store, keyring: Keyring, wanted: Callable[[str], bool]
) -> list[tuple[int, bytes | str, str]]:
    """Bundles recorded before they said whose they are (store schema 14) whose own
    data.json names a subject ``wanted`` says yes to. Until retention purges them, an
    erasure asked after the upgrade would otherwise leave them in clear."""
    found = []
    for bundle_id, path, files in store.db.execute(
        "SELECT id, path, files FROM bundles WHERE subject_id IS NULL ORDER BY id"
    ).fetchall():
        where = _opened_path(keyring, path)
        names = json.loads(files)
        if where is None or "data.json" not in names:
            continue
        try:
            data = json.loads((Path(where) / "data.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # gone, or not a bundle's data.json: nobody's to say
        subject_id = data.get("subject_id") if isinstance(data, dict) else None
        if isinstance(subject_id, str) and wanted(subject_id):
            found.append((bundle_id, path, files))
    return found


def _delete_rows(
    store: Store, keyring: Keyring, rows: Sequence[tuple[int, bytes | str, str]], errors: list[str]
) -> int:
    """Delete these bundles' files, then their rows; how many. Failures go to ``errors``."""
    purged = 0
    gone: set[str] = set()
    for bundle_id, path, files in rows:
        where = _opened_path(keyring, path)
        if where is None:
            errors.append(f"bundle {bundle_id}: its path does not open under the store's keys")
            continue
        if where in gone:
            continue  # another id's row of a bundle deleted just now
        try:
            _delete_bundle(Path(where), json.loads(files))
        except OSError as exc:
            # The error names the bundle's id, not its path: an operator may have put a
            # person's name in an --out folder name.
            errors.append(f"bundle {bundle_id}: {exc.strerror or type(exc).__name__}")
            continue
        # Its rows go too (one per id of the person): a path is only useful while there is
        # something to delete.
        _forget_rows_at(store, keyring, where)
        gone.add(where)
        purged += 1
    return purged


def _delete_bundle(root: Path, files: list[str]) -> None:
    if files == [""]:
        root.unlink(missing_ok=True)
        return
    folders = {root}
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            continue  # only ever what record_bundle listed under the root
        target = root / name
        target.unlink(missing_ok=True)
        # What a process killed while writing the file left under a temporary name
        # (connector/privatefile.py): the same content, half written.
        for partial in target.parent.glob(f".{glob.escape(target.name)}.*"):
            partial.unlink(missing_ok=True)
        parent = target.parent
        while parent != root:
            folders.add(parent)
            parent = parent.parent
    # Folders the bundle's files leave empty go too, deepest first; anything else stays.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
