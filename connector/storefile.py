"""What can be a store and what cannot: the store file judged before and while it is used.

A store path that cannot hold a store (a folder, a folder that cannot be made) is the
configuration's to fix (StorePathError, exit 2 naming ``store.path``); a file there that is
not a klantsync store, or is damaged, is refused with what to do (StoreError, exit 1), and
another application's database is left exactly as it was. Messages are made from SQLite's
error codes and the store's own table names, never from what rows hold.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import functools
import glob
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from connector.errors import StoreError, StoreFullError, StorePathError
from connector.schema import MIGRATIONS, statements

__all__ = [
    "COMPANIONS",
    "copy_failure",
    "drop_orphaned_log",
    "failure",
    "failure_text",
    "foreign",
    "make_store_file",
    "make_store_folder",
    "on_full_disk",
    "read_only",
    "refuse_foreign",
    "replaced_stores",
    "store_exists",
    "store_path_problem",
    "unusable",
]

#: A store's companion files, which belong to the main file they sit beside: its
#: write-ahead log and that log's index.
COMPANIONS = ("-wal", "-shm")


#: What to do about a store.path that cannot hold a store; ends every such message.
_PATH_FIX = "point store.path at a file in a folder klantsync can create and write"


def store_path_problem(path: Path) -> str | None:
    """Why no store can be made at ``path``, found without creating anything.

    ``None`` when one can, and when a file is already there: what it holds is judged when it
    is opened. For ``check`` and ``status``, which say so without creating the store.
    """
    try:
        if _looped(path):
            return f"cannot be reached (a symlink loop); {_PATH_FIX}"
        if path.is_dir():
            return f"is a folder, not a file; {_PATH_FIX}"
        if path.exists():
            return None
        if path.is_symlink():
            # A symlink to a file not there yet: the store is made where it points
            # (make_store_file), in a folder that must be there.
            real = Path(os.path.realpath(path))
            if not real.parent.is_dir():
                return f"is a symlink to {real}, in a folder that is not there; {_PATH_FIX}"
        folder = path.parent
        while not folder.exists():  # also False below a regular file: walk up to it
            if folder.is_symlink():  # nothing can be made below it (mkdir does not follow)
                return f"{folder} is a symlink to a folder that is not there; {_PATH_FIX}"
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is a file, not a folder, so the store cannot go there; {_PATH_FIX}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"klantsync may not create files in {folder} (permission denied); {_PATH_FIX}"
    except OSError as exc:
        return f"cannot be reached ({exc.strerror}); {_PATH_FIX}"
    return None


def _looped(path: Path) -> bool:
    """Whether ``path`` is a symlink loop or leads through one (which ``exists()`` and
    ``is_dir()`` answer as a file not there yet)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def store_exists(path: Path) -> bool:
    """Whether there is a store (a file) at ``path``; StorePathError if none could ever be.

    For the commands that only read the store, or change one that must exist already: where
    there is none yet they say so and make none (an empty store bound to the key in use, at
    a mistaken path, looked like the real one to whoever ran them next).
    """
    problem = store_path_problem(path)
    if problem is not None:
        raise StorePathError(path, problem)
    return path.exists()


def make_store_folder(path: Path) -> None:
    """Create the store's folder if it is missing; StorePathError if no store can be there."""
    try:
        if path.is_dir():
            raise StorePathError(path, f"is a folder, not a file; {_PATH_FIX}")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorePathError(
            path,
            store_path_problem(path) or f"its folder cannot be made ({exc.strerror}); {_PATH_FIX}",
        ) from exc


def make_store_file(path: Path) -> bool:
    """Make a new store file at ``path``, owner-only, SQLite's header already in it; whether
    this made it (``False``: a file is there already, or the folder takes no new file, which
    opening then says).

    Never an empty file: an empty file at a store's path is a store truncated to nothing,
    which opening refuses (:func:`refuse_foreign`). Made in place, the file stayed empty
    until SQLite first wrote to it: a creation that failed before then (a full disk) left a
    file refused from then on, and another process opening the store meanwhile (a daemon
    starting beside the first ``dsr erase``) refused it. So it is made aside, in the same
    folder, and linked into place whole. A symlink to a file not there yet is followed:
    the store is made where it points.

    Raises:
        StoreError: the header could not be written (a full disk: :func:`failure`).
    """
    place = path
    if os.path.lexists(path):
        # Judged before anything is written: the header written aside needs room on the
        # disk, and a store already there (on a disk now full) must still open to be read.
        if not path.is_symlink() or os.path.exists(path):
            return False
        # A symlink to a file not there yet: the store is made where it points, as a
        # plain path's would be. Left to SQLite, which follows it, it was an empty file.
        place = Path(os.path.realpath(path))
        if os.path.lexists(place):
            return False  # a symlink loop: opening says what is wrong
    try:
        fd, name = tempfile.mkstemp(prefix=f".{place.name}.", suffix=".new", dir=place.parent)
    except OSError:
        return False
    os.close(fd)
    aside = Path(name)
    try:
        with closing(sqlite3.connect(aside)) as db:
            db.execute("PRAGMA journal_mode=WAL")  # writes the header, in the store's mode
        with open(aside, "rb") as made:
            os.fsync(made.fileno())  # a power cut must not leave the link to an empty file
        return _placed_new(aside, place)
    except sqlite3.Error as exc:
        raise unusable(path, exc) from exc
    except OSError as exc:
        raise StoreError(f"{path}: the store cannot be made ({exc.strerror})") from exc
    finally:
        for leftover in (aside, *_log_files(aside)):
            leftover.unlink(missing_ok=True)


def _placed_new(aside: Path, path: Path) -> bool:
    """:func:`_placed`, a log another store left at ``path`` deleted first.

    A log found where no store is yet is another store's (:func:`drop_orphaned_log`), but
    one process may find it while another, which found it too, has put its store in place
    and has its first commits in a log of its own there. So the log goes under an exclusive
    ``flock`` on the folder, held for a link and waited for. Where no log lies, none is
    taken (a log appears only beside a store, and one being deleted is seen until it is
    gone): a look at a store in a folder of its own (:mod:`connector.aside`) holds that
    folder's lock already. A folder that cannot be locked keeps the log: deleting another process's
    loses what it committed.
    """
    if not any(os.path.lexists(log) for log in _log_files(path)):
        return _placed(aside, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a folder this user may write in but not list
        return _placed(aside, path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock
            return _placed(aside, path)
        if os.path.lexists(path):
            return False  # another process made the store meanwhile: theirs is used
        drop_orphaned_log(path)
        return _placed(aside, path)
    finally:
        os.close(fd)


def _log_files(store_path: Path) -> list[Path]:
    """The store's companion files (:data:`COMPANIONS`): ``<store>-wal`` and ``<store>-shm``."""
    return [store_path.with_name(store_path.name + suffix) for suffix in COMPANIONS]


def drop_orphaned_log(store_path: Path) -> None:
    """Delete the -wal and -shm a store no longer beside them left (a lost, deleted or moved
    file; a killed daemon leaves its log). SQLite does not tell whose a log is: left there,
    the first open of a store put at ``store_path`` (made new, or a restored backup) laid
    the lost store's last pages over its own. Without its store nothing reads that log; the
    caller makes sure no other process is putting a store there meanwhile."""
    for log in _log_files(store_path):
        log.unlink(missing_ok=True)


def _placed(aside: Path, path: Path) -> bool:
    """Put the file ``aside`` at ``path`` unless a file is there; whether it was put."""
    try:
        os.link(aside, path)
    except FileExistsError:
        return False  # another process made the store meanwhile: theirs is used
    except OSError:
        # A file system without hard links: written in place, the header at once.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as made:
                made.write(aside.read_bytes())
                made.flush()
                os.fsync(made.fileno())
        except OSError:
            path.unlink(missing_ok=True)  # this one's own, made empty
            raise
    return True


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the SQLite file at ``path``, which is never created.

    Opened through a file URI made from the resolved path, each character escaped: a path
    written into ``file:...?mode=ro`` as it is reads a ``#``, ``?`` or ``%`` in a folder's
    name as the URI's fragment, query or an escape, and opens another file (or creates an
    empty one) in place of the store.
    """
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def failure(path: Path, exc: sqlite3.Error) -> StoreError | None:
    """The StoreError an SQLite error means when the store or its disk is at fault, else ``None``.

    A bad file, a full disk, a failing disk, no permission to write, a lock held too long:
    each is said with what to do, from SQLite's error code (never its message, never what
    the rows hold). ``None`` leaves the error to be reported as the bug it then is.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF  # extended codes keep the primary below
    if primary == sqlite3.SQLITE_NOTADB:
        return StoreError(
            f"{path}: not a klantsync store: the file is not an SQLite database (or is damaged "
            "past opening); point store.path at the klantsync store, or restore the store "
            "from a backup"
        )
    if primary == sqlite3.SQLITE_CORRUPT:
        return StoreError(
            f"{path}: the store is damaged (SQLite: database disk image is malformed); stop "
            "every klantsync on it and restore it from a backup"
        )
    writing = primary == sqlite3.SQLITE_IOERR and code not in _READING
    if primary == sqlite3.SQLITE_FULL or (writing and _no_room(path)):
        # SQLite says a full disk as an I/O error where it grows its -shm or -wal rather than
        # the store (a store closed last, its -shm made anew): "check the disk" sent the
        # operator looking for a failing disk, not for space.
        said = "database or disk is full" if primary == sqlite3.SQLITE_FULL else "disk I/O error"
        return StoreFullError(path, said)
    if primary == sqlite3.SQLITE_IOERR:
        return StoreError(
            f"{path}: the store could not be read or written (SQLite: disk I/O error); any "
            "write in progress was rolled back: check the disk and its file system, then run "
            "again"
        )
    if primary == sqlite3.SQLITE_READONLY:
        return StoreError(
            f"{path}: the store cannot be written (SQLite: attempt to write a readonly "
            "database); give the user klantsync runs as write access to the store, its "
            "folder and its -wal and -shm files"
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{path}: another process held the store's write lock for too long (SQLite: "
            "database is locked); run again, and if it keeps happening look for a klantsync "
            "process that is stuck"
        )
    return None


#: Free space on the store's disk below which an I/O error is taken for a full disk: the
#: most SQLite asks for at once where it says no room as an I/O error (the -shm's 32 KiB
#: regions, a -wal frame), with a margin.
NO_ROOM_BYTES = 1 << 20


def _no_room(path: Path) -> bool:
    """Whether the disk holding ``path`` is (all but) full; not when that cannot be told."""
    try:
        disk = os.statvfs(path.parent)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
    return disk.f_bavail * disk.f_frsize < NO_ROOM_BYTES


#: SQLite's I/O errors met reading a file: copying the store, the store's (it is read).
_READING = frozenset({sqlite3.SQLITE_IOERR_READ, sqlite3.SQLITE_IOERR_SHORT_READ})


def copy_failure(copy: Path, exc: sqlite3.Error, what: str, elsewhere: str) -> StoreError | None:
    """The StoreError an SQLite error met copying the store (SQLite's backup into a file of
    its own) means when the copy is at fault, else ``None``: the store's, :func:`failure`.

    The store is only read while it is copied: a full disk, a file that may not be written
    or made, and an I/O error in writing are the copy's. Said as the store's, they sent the
    operator to free space on the store's disk, which was never full, while every backup
    went on failing.

    Args:
        copy: the file written (as the operator named it).
        what: the copy, in a few words (``the backup``).
        elsewhere: how to write it somewhere else instead (``name another --out``).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        cause, fix = "its disk is full (SQLite: database or disk is full)", "free space there"
    elif primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        cause = "it may not be made or written there (no permission, or a read-only disk)"
        fix = "give the user klantsync runs as write access there"
    elif primary == sqlite3.SQLITE_IOERR and code not in _READING:
        cause, fix = "its disk failed to write it (SQLite: disk I/O error)", "check that disk"
    else:
        return None
    return StoreError(
        f"{copy}: {what} could not be written: {cause}; the store is as it was: {fix} "
        f"(or {elsewhere}) and run again"
    )


def failure_text(path: Path, exc: sqlite3.Error, next_step: str | None = None) -> str:
    """What to log for an SQLite error met while running: :func:`failure`'s message (a full
    disk's saying ``next_step``, what the work it stopped left), or SQLite's error name (a
    code, never the message, which may quote values)."""
    found = failure(path, exc)
    if isinstance(found, StoreFullError) and next_step is not None:
        found = found.then(next_step)
    return str(found) if found else f"SQLite {getattr(exc, 'sqlite_errorname', type(exc).__name__)}"


@contextmanager
def on_full_disk(path: Path, next_step: str) -> Iterator[None]:
    """A full store disk met in the block said with ``next_step``: what the work under way
    left and how to go on (:meth:`StoreFullError.then`); other errors pass as they are.

    Raises:
        StoreFullError: the store's disk filled up, as an SQLite error or said already.
    """
    try:
        yield
    except StoreFullError as exc:
        raise exc.then(next_step) from exc.__cause__
    except sqlite3.Error as exc:
        found = failure(path, exc)
        if isinstance(found, StoreFullError):
            raise found.then(next_step) from exc
        raise


def unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    """What an SQLite error on opening the store at ``path`` means, as a StoreError."""
    found = failure(path, exc)
    if found is not None:
        return found
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_CANTOPEN:
        return StorePathError(path, f"cannot be opened or created; {_PATH_FIX}")
    return StoreError(f"{path}: cannot open the store ({exc})")


#: How a restore names the store it replaced: ``<store>.replaced-20260601T120000Z`` (with
#: ``-2``... when taken), its -wal and -shm beside it under the same name.
_REPLACED = re.compile(r"\.replaced-(\d{8}T\d{6}Z)(?:-\d+)?")


def replaced_stores(store_path: Path) -> list[tuple[Path, dt.datetime]]:
    """The stores restores replaced, kept beside the store at ``store_path``, each with when
    it was replaced (from its name); their -wal and -shm, and other names, left out."""
    found = []
    prefix = store_path.name
    for path in sorted(store_path.parent.glob(f"{glob.escape(prefix)}.replaced-*")):
        named = _REPLACED.fullmatch(path.name[len(prefix) :])
        if named is not None and not _same_file(path, store_path):
            when = dt.datetime.strptime(named.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            found.append((path, when))
    return found


def _same_file(path: Path, store_path: Path) -> bool:
    """Whether ``path`` is the store itself under another name: a restore killed between
    linking the store aside and renaming the backup's copy over it leaves that link. It is
    no replaced store: emptied or resealed through it, the store itself lost its rows (its
    suppression list among them) or was written through a second -wal."""
    try:
        return os.path.samefile(path, store_path)
    except OSError:  # no store (a lost disk), or the name went meanwhile
        return False


def foreign(db: sqlite3.Connection) -> bool:
    """Whether an SQLite database is surely not a klantsync store: tables of its own and no
    klantsync schema, or a klantsync schema version and none of its tables.

    A damaged store is not foreign (it holds some of its tables); nor is an empty file, or
    one from a newer klantsync. sqlite3.Error when even its list of tables cannot be read.
    """
    version, tables = _version_and_tables(db)
    if version == 0:
        return bool(tables)
    if version > len(MIGRATIONS):
        return False
    return not _tables_at(version) & tables


def refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """StoreError unless the file is a new store (SQLite's header alone) or holds the tables
    its schema version says.

    Migrating another application's database would add klantsync's tables to it (or
    fail half-way on a name both use), and a file that claims a schema without its
    tables would fail later on the first table it lacks, mid-command. An empty file is a
    store truncated to nothing (a full disk under a copy, a torn file system): taken for a
    new store and migrated in place, it came back with an empty suppression list, and
    everyone erased came back with the next sync. klantsync never makes one
    (:func:`make_store_file`).
    """
    version, tables = _version_and_tables(db)
    if version == 0:
        if not tables and _empty(path):
            raise StoreError(
                f"{path}: the store is empty: damaged or truncated (a file of 0 bytes); stop "
                "every klantsync on it and restore it from a backup"
            )
        if tables:
            raise StoreError(
                f"{path}: not a klantsync store: an SQLite database with tables of "
                "its own and no klantsync schema; point store.path at the klantsync store, "
                "or at a file that does not exist yet"
            )
        return
    if version > len(MIGRATIONS):
        return  # migrate() refuses it, saying to upgrade
    expected = _tables_at(version)
    missing = sorted(expected - tables)
    if missing == sorted(expected):
        raise StoreError(
            f"{path}: not a klantsync store: it says schema {version} but holds none "
            "of its tables; point store.path at the klantsync store, or restore the store "
            "from a backup"
        )
    if missing:
        raise StoreError(
            f"{path}: the store is damaged: schema {version} without its tables "
            f"{', '.join(missing)}; restore it from a backup"
        )


def _empty(path: Path) -> bool:
    """Whether the file at ``path`` holds nothing (0 bytes); not when it cannot be read."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _version_and_tables(db: sqlite3.Connection) -> tuple[int, frozenset[str]]:
    """The schema version and the tables, as of one moment (one read transaction).

    Read apart, another process creating the store in between (a daemon starting while
    ``dsr erase`` runs on a fresh deployment) made it look like version 0 with tables of
    its own: another application's database.
    """
    if db.in_transaction:
        return _user_version(db), _tables(db)
    db.execute("BEGIN")
    try:
        tables = _tables(db)
        return _user_version(db), tables
    finally:
        if db.in_transaction:  # a read only: nothing to roll back
            db.execute("COMMIT")


def _user_version(db: sqlite3.Connection) -> int:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version)


def _tables(db: sqlite3.Connection) -> frozenset[str]:
    """The tables of a database, SQLite's own (``sqlite_sequence``...) left out."""
    rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'")
    return frozenset(name for (name,) in rows if not name.startswith("sqlite_"))


@functools.cache
def _tables_at(version: int) -> frozenset[str]:
    """The tables a store at schema ``version`` holds: its migrations, run in memory."""
    db = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[:version]:
            for statement in statements(script):
                db.execute(statement)
        return _tables(db)
    finally:
        db.close()
