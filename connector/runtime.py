"""Opening what a command needs: config, store, keys, systems, engine, in one place."""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.aside import aside_folder
from connector.config import Config, load_config
from connector.crypto import Keyring
from connector.engine import Checkpoint, Engine
from connector.errors import ConfigError, StoreError
from connector.keyset import key_check_files, open_keyring
from connector.lock import sharing_keys
from connector.schema import MIGRATIONS
from connector.state import Store
from connector.storefile import copy_failure, refuse_foreign
from connector.systems import Systems, open_systems

__all__ = [
    "Runtime",
    "looked_at",
    "open_runtime",
    "private_copy",
    "schema_of",
    "settle_heap",
    "writes_at_open",
]

_settled = False

#: Net new objects that trigger a collection of the youngest generation once settled.
YOUNG_COLLECTION = 2_000


def settle_heap() -> None:
    """Take what start-up built out of the garbage collector's way (``gc.freeze``), once.

    A full collection walks every long-lived object, and start-up leaves a few hundred
    thousand that live as long as the process (modules, phone-number metadata, config,
    mappings). During a sync a full collection ran every few seconds and held the event loop
    20-70 ms each time, with every vendor call and webhook waiting; frozen, those objects are
    skipped and a full collection takes a fraction of that. For the long-running commands
    (``sync``, ``daemon``), called once their runtime is open.

    The youngest generation is then collected after :data:`YOUNG_COLLECTION` net new
    objects instead of 700: a page being read holds more than 700 (a hundred parsed records,
    their people and payloads), so at 700 each page was scanned live, and promoted, several
    times over. Measured with ``gc.callbacks`` over a first sync of 50,000 customers: 461
    collections and 2.93 us a record at 700, 23 and 0.22 us at 2,000. Higher saves no more
    and costs memory: what reference cycles hold waits longer for its collection, and the
    connector's peak grew from 73 to 76 MB at 2,000, to 91 MB at 5,000
    and to 107 MB at 10,000 (100,000 customers). The older generations keep their rhythm.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, oldest)


@dataclass
class Runtime:
    """Everything a command works with; built by :func:`open_runtime`."""

    config: Config
    store: Store
    keyring: Keyring
    systems: Systems
    engine: Engine


@asynccontextmanager
async def open_runtime(
    config: Config | Path,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Callable[[], float] | None = None,
    checkpoint: Checkpoint | None = None,
    env: Mapping[str, str] | None = None,
    dry_run: bool = False,
    calls_systems: bool = True,
) -> AsyncIterator[Runtime]:
    """Load (if given a path) the config, open the store and systems; close them after.

    ``calls_systems``: False for a command that calls no system (``dsr list``, ``dsr
    exempt``...), run without the systems' credentials: its systems refuse every call
    (:func:`~connector.systems.open_systems`).

    ``dry_run``: for a run that writes nothing; what opening would tidy in passing (ids an
    older store kept uncloaked) is left for the next real run. A store that needs writes
    before it can be used at all is looked at as a copy (:func:`writes_at_open`).
    """
    if isinstance(config, Path):
        config = load_config(config, env=env)
    # Shared with every other command; a master key rotation waits for all to finish.
    with sharing_keys(config.store_path):
        async with _opened(
            config, transports, sleep, clock, checkpoint, dry_run, calls_systems
        ) as runtime:
            yield runtime


def writes_at_open(store_path: Path, *, keyed: bool = True) -> str | None:
    """What opening the store at ``store_path`` for a command would write to it first, in a
    few words: a migration; for a command that opens it with its keys (``keyed``), also
    its keys to bind (an older store's first open with a master key) or access bundle paths
    an earlier klantsync kept in clear to seal. ``None``: nothing, or a file this cannot
    read as a store (opening it says what is wrong, and writes nothing to it).

    Read on a connection of its own, which writes nothing.
    """
    try:
        with closing(_existing(store_path)) as db:
            # A file opening refuses (not a store, or one without its tables) is left to be
            # opened where it is, and refused naming it; a copy was refused naming the copy.
            refuse_foreign(db, store_path)
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if 0 < version < len(MIGRATIONS):
                return f"it is at schema {version}, which opening migrates to {len(MIGRATIONS)}"
            if version != len(MIGRATIONS) or not keyed:
                return None
            if not db.execute("SELECT 1 FROM keyset").fetchone():
                return "its keys are not bound to a master key yet, which opening does"
            if db.execute("SELECT 1 FROM bundles WHERE typeof(path) = 'text' LIMIT 1").fetchone():
                return "it keeps access bundle paths in clear, which opening seals"
    except (sqlite3.Error, StoreError):
        return None
    return None


@contextmanager
def looked_at(
    config: Config,
    tell: Callable[[str], None],
    *,
    keyed: bool = True,
    looking: str = "dry run",
) -> Iterator[Config]:
    """The config a look at the store (a dry run, ``check``, ``status``...) opens it under,
    so that looking writes nothing to it.

    ``config`` itself; or, where opening would write to the store first
    (:func:`writes_at_open`; ``keyed`` as there), ``config`` naming a private copy of it
    (:func:`private_copy`), opened as the store would be and deleted after the block, with
    ``tell`` given one line saying so (``looking``: what looks, as the line names it).
    Opened as it is, an older store was migrated by a look (a `check` after installing the
    new version, before restarting the daemon), and the older daemon still running on it
    refused it at its next start ("newer than this klantsync supports").
    """
    why = writes_at_open(config.store_path, keyed=keyed)
    if why is None:
        yield config
        return
    tell(f"{looking} on a private copy of the store, left as it is: {why}")
    # Taken sharing the keys: a master key rotation does not reseal the store under the copy.
    with sharing_keys(config.store_path), private_copy(config.store_path) as copy:
        try:
            yield dataclasses.replace(config, store_path=copy)
        except ConfigError as exc:
            raise _of_the_store(exc, copy, config.store_path) from None


def _of_the_store(exc: ConfigError, copy: Path, store_path: Path) -> ConfigError:
    """``exc``, raised looking at the private ``copy``, said of the store at ``store_path``.

    A master key the store refuses was said not to be the one the copy is kept under, or
    the copy's receipt signing key file not to open: files deleted with their folder by the
    time the operator reads it, and not the ones to fix. The copy and the key files beside
    it lie in a folder of their own, named after the store's files: that folder reads as the
    store's.
    """
    aside, beside = str(copy.parent), str(store_path.parent)
    return ConfigError(exc.file.replace(aside, beside), exc.key, exc.problem.replace(aside, beside))


@contextmanager
def private_copy(store_path: Path) -> Iterator[Path]:
    """A copy of the store at ``store_path``, in a folder only this user can read, deleted
    with the folder after the block (the store holds nothing in clear, and neither does
    the copy). SQLite's backup: a consistent copy while a sync or the daemon writes.

    The files beside the store that its master key is checked against are copied beside
    it (:func:`connector.keyset.key_check_files`, sealed key files): without them, the copy
    of a store that has nothing sealed left opened with a master key the store refuses.
    """
    with aside_folder() as aside:
        copy = Path(aside) / store_path.name
        for key_file in key_check_files(store_path):
            with suppress(FileNotFoundError):
                shutil.copyfile(key_file, copy.with_name(key_file.name))
        with closing(_existing(store_path)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            try:
                with closing(sqlite3.connect(copy)) as to:
                    db.backup(to)
            except sqlite3.Error as exc:
                # The temporary folder's failure (a full /tmp), not the store's.
                found = copy_failure(
                    copy, exc, "a private copy of the store", "point TMPDIR at another folder"
                )
                if found is None:
                    raise
                raise found from exc
        yield copy


def schema_of(store_path: Path) -> int:
    """The schema version of the store at ``store_path`` as it is: a look at a private copy
    (:func:`looked_at`) reads the copy's, migrated."""
    with closing(_existing(store_path)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version)


def _existing(path: Path) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path``, which is never created (a URI made from
    the resolved path, each character escaped: see :func:`connector.storefile.read_only`).
    Not read-only: closed, the last connection to a store takes its -wal and -shm files
    away, as a read-only one cannot."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)


@asynccontextmanager
async def _opened(
    config: Config,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None,
    sleep: Callable[[float], Awaitable[None]] | None,
    clock: Callable[[], float] | None,
    checkpoint: Checkpoint | None,
    dry_run: bool = False,
    calls: bool = True,
) -> AsyncIterator[Runtime]:
    store = Store(config.store_path)
    try:
        # A command that syncs commits often; its WAL is copied back off the event loop.
        store.checkpoint_in_background()
        keyring = open_keyring(store, config)
        systems = open_systems(config, transports=transports, sleep=sleep, clock=clock, calls=calls)
    except BaseException:
        store.close()
        raise
    engine = Engine(config, store, keyring, systems, checkpoint=checkpoint)
    if not dry_run:
        # Ids an older store kept as the system gave them. (A dry run sends nothing, and a
        # stored id not cloaked yet is read as it is: SystemIds.from_store.)
        engine.ids.cloak_stored(store)
    try:
        yield Runtime(config, store, keyring, systems, engine)
    finally:
        try:
            await systems.aclose()
        finally:
            store.close()
