"""The store's data keys, kept wrapped by the master key; and replacing the master key.

A store's data keys (subject ids, payload hashes, sealing at rest: :class:`DataKeys`) start as
keys derived from the master key, which is what every store was written under before this
table existed. The first open that has the master key writes them to ``keyset``, sealed under
a key-encryption key derived from it. From then on the master key only unlocks them, which
gives two things:

- **A store refuses a master key that is not its own.** With another key every customer
  would look new (duplicates in every system), and, worse, no erased person would match the
  suppression list any more: a restored shop backup would bring them back. A wrong
  ``keys.source`` is now an error naming that key, before anything is read or sent.
- **The master key can be replaced** (:func:`rotate_master_key`) after it leaked, or because
  policy says so: the data keys are wrapped again under the new one, and everything sealed at
  rest (outbox, dead letters, request manifests, jobs, the receipt signing key) is sealed
  again under a fresh random key, in one transaction. The subject-id and payload-hash keys
  stay: subject ids are HMACs of addresses the store never holds in clear, so they cannot be
  recomputed, and the suppression list must go on matching the people it stops. They are a
  store's first keys, derived from its first master key: that key goes on computing them
  after any rotation (:attr:`Rotation.kept_derived_from_old_key`; ``keys rotate`` says so).
"""

from __future__ import annotations

import glob
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from connector import audit
from connector.config import Config
from connector.crypto import (
    BUNDLE_PATH_CONTEXT,
    JOB_CONTEXT,
    RECEIPT_KEY_CONTEXT,
    DataKeys,
    DecryptionError,
    Keyring,
    manifest_context,
    master_fingerprint,
    outbox_context,
    unwrap_data_keys,
    wrap_data_keys,
)
from connector.errors import ConfigError, KlantsyncError
from connector.privatefile import write_private
from connector.receipts import (
    LEGACY_KEY_FILE,
    NOT_THIS_STORES_KEY,
    ReceiptSigner,
    receipt_key_path,
)
from connector.state import Store, utcnow
from connector.storefile import replaced_stores

__all__ = [
    "KEPT_KEYS",
    "SEALED_COLUMNS",
    "Rotation",
    "RotationFinished",
    "check_master_key",
    "check_master_key_for_new_store",
    "finish_rotation",
    "key_check_files",
    "key_facts",
    "key_facts_in",
    "open_keyring",
    "receipt_key_opens",
    "rotate_master_key",
    "seal_clear_bundle_paths",
    "settle_replaced_stores",
    "store_keyring",
]


class _Sealed(NamedTuple):
    """A column of sealed blobs: its table, the row key, and what each blob is bound to."""

    name: str
    table: str
    column: str
    key: str
    #: The column the context is made from (``key`` when it is the row's own id).
    by: str
    context: Callable[[str], str]


#: Every column that holds blobs sealed with the data keys (its BLOB values: bundle rows from
#: before schema 10 hold their path as clear text). ``tests/connector/test_keyset.py``
#: checks this list against the schema's BLOB columns, so a new one cannot be forgotten here.
SEALED_COLUMNS = (
    _Sealed("outbox", "outbox", "payload", "id", "system", outbox_context),
    _Sealed("outbox former writes", "outbox", "former", "id", "system", outbox_context),
    _Sealed("dead letters", "dead_letters", "payload", "id", "system", outbox_context),
    _Sealed("request manifests", "dsr_requests", "manifest", "id", "id", manifest_context),
    _Sealed("jobs", "jobs", "params", "id", "id", lambda _id: JOB_CONTEXT),
    _Sealed("access bundle paths", "bundles", "path", "id", "id", lambda _id: BUNDLE_PATH_CONTEXT),
)

#: BLOB columns that hold no sealed data: the keyset itself (sealed under the master key).
#: ``dsr_requests.payload`` is part of the request schema but nothing writes it.
NOT_SEALED_WITH_DATA_KEYS = {("keyset", "wrapped"), ("dsr_requests", "payload")}

_CHUNK = 500

#: The data keys a rotation keeps, and what each computes. Subject ids are HMACs of addresses
#: the store never holds, so a new subject key would lose every person, and every erased one
#: would slip past the suppression list: they cannot be renewed. ``keys rotate`` says so.
KEPT_KEYS = {
    "subject": "the subject ids of e-mail addresses and phone numbers, as the identity map, the "
    "suppression list, the audit trail and the logs hold them, and the system ids cloaked "
    "under it, such as Mailchimp's member ids",
    "payload": "the hashes of what each system was last sent",
}


def open_keyring(store: Store, config: Config) -> Keyring:
    """The store's keyring under ``config``'s master key; binds a store that has no keyset yet.

    A store with no receipt signing key file of its own takes a copy of the folder's shared
    one of earlier versions if that opens with the store's keys (:class:`ReceiptSigner`),
    access bundle paths an older store kept in clear are sealed (:func:`seal_clear_bundle_paths`),
    and what a rotation cut short after its commit still owed the stores a restore replaced is
    put in (:func:`settle_replaced_stores`).

    Raises:
        ConfigError: on ``keys.source``, when the master key does not open the store's keys,
            or (binding an older store) does not open what the store holds sealed.
    """
    bound = _bound_keyring(store, config)
    if bound is not None:
        # Now, not at the first receipt: once every store in a folder has been opened, the
        # shared key file of earlier versions may go (README, "Upgrading").
        ReceiptSigner.for_store(config.store_path, bound).adopt_shared()
        seal_clear_bundle_paths(store, bound)
        # Only the key in use opens a staged wrapping now: the retired one is not known here.
        settle_replaced_stores(config.store_path, config.master_key)
        return bound
    keyring = _unbound_keyring(store, config)
    with store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO keyset(id, wrapped, master_fingerprint, created_at) "
            "VALUES (1, ?, ?, ?)",
            (
                wrap_data_keys(config.master_key, keyring.keys),
                master_fingerprint(config.master_key),
                utcnow(),
            ),
        )
    # Two processes may bind at once; whichever wrote first, the row opens with this key.
    return open_keyring(store, config)


def seal_clear_bundle_paths(store: Store, keyring: Keyring) -> int:
    """Seal the access bundle paths a store from before schema 10 kept in clear; how many.

    Migration 10 copied them as they were, and an operator may have named an ``--out``
    folder after the person: left so, every backup carried the name in clear. Run on every
    keyed open, as ids are cloaked (:meth:`connector.ids.SystemIds.cloak_stored`): a read of
    the bundles table (only bundles within their retention) once none is left. The store's
    log, which still holds them, is truncated after (:meth:`Store.truncate_log`). A path
    another process changed meanwhile is left to it.
    """
    rows = store.db.execute("SELECT id, path FROM bundles WHERE typeof(path) = 'text'").fetchall()
    if not rows:
        return 0
    with store.transaction() as db:
        sealed = db.executemany(
            "UPDATE bundles SET path=? WHERE id=? AND path=?",
            [
                (keyring.seal(path.encode(), BUNDLE_PATH_CONTEXT), bundle_id, path)
                for bundle_id, path in rows
            ],
        ).rowcount
    store.truncate_log()
    return sealed


def key_facts(store: Store, config: Config) -> dict[str, object]:
    """For ``status``: the fingerprint the store's keys are wrapped under, when they were made
    and last rotated, and whether ``keys.source`` is that key (read only; no key is shown)."""
    return key_facts_in(store.db, config)


def key_facts_in(db: sqlite3.Connection, config: Config) -> dict[str, object]:
    """:func:`key_facts` on any connection to the store (a reader's own, off the event loop)."""
    row = db.execute(
        "SELECT master_fingerprint, created_at, rotated_at FROM keyset WHERE id=1"
    ).fetchone()
    if row is None:
        return {"bound": False}
    return {
        "bound": True,
        "master_fingerprint": row[0],
        "created_at": row[1],
        "rotated_at": row[2],
        "keys_source_matches": row[0] == master_fingerprint(config.master_key),
    }


def check_master_key(store: Store, config: Config) -> bool:
    """What :func:`open_keyring` checks, without binding: True if the store is bound already.

    Raises:
        ConfigError: as :func:`open_keyring`.
    """
    if _bound_keyring(store, config) is not None:
        return True
    _unbound_keyring(store, config)
    return False


def check_master_key_for_new_store(config: Config) -> None:
    """What :func:`open_keyring` checks when it binds a store not made yet at
    ``config.store_path``, without making it: the store's receipt signing key file, where one
    is beside that path already, must open with the master key.

    A store deleted to start afresh under a new master key leaves its key file behind; the
    first command that makes the store then refuses the key (:func:`_unbound_keyring`), and
    ``check``, which makes no store, said the key was fine.

    Raises:
        ConfigError: on ``keys.source``, as :func:`open_keyring` would.
    """
    key_file = receipt_key_path(config.store_path)
    if _opens_receipt_key(key_file, Keyring(config.master_key)) is False:
        raise ConfigError(
            str(config.path),
            "keys.source",
            f"there is no store at {config.store_path} yet, but its receipt signing key file "
            f"{key_file} is there and does not open with this master key, so the first "
            "command that makes the store refuses it; keys.source must name the key that "
            "file was written with (if this is the right key, that file is another store's: "
            "move it aside)",
        )


def store_keyring(store: Store, config: Config) -> Keyring:
    """The store's keyring under ``config``'s master key, read only (:func:`open_keyring`
    without binding a store or adopting a key file; ConfigError as it raises)."""
    return _bound_keyring(store, config) or Keyring(config.master_key)


def receipt_key_opens(store: Store, config: Config, content: bytes | None = None) -> bool | None:
    """Whether the receipt signing key file beside ``config``'s store (or ``content``, a key
    file's bytes) opens with ``store``'s keys; None when there is no such file. For a
    restore: which signing key file is the restored store's?"""
    keyring = store_keyring(store, config)
    if content is None:
        return _opens_receipt_key(receipt_key_path(config.store_path), keyring)
    try:
        keyring.open(content, RECEIPT_KEY_CONTEXT)
    except DecryptionError:
        return False
    return True


def _bound_keyring(store: Store, config: Config) -> Keyring | None:
    """The keyring the store's keyset holds, or None if it has none yet."""
    row = store.db.execute("SELECT wrapped, master_fingerprint FROM keyset WHERE id=1").fetchone()
    if row is None:
        return None
    try:
        keyring = Keyring(keys=unwrap_data_keys(config.master_key, row[0]))
    except DecryptionError:
        raise ConfigError(
            str(config.path),
            "keys.source",
            f"this master key (fingerprint {master_fingerprint(config.master_key)}) is not "
            f"the one {store.path} is kept under (fingerprint {row[1]}); if the key was "
            "rotated, point keys.source at the new one",
        ) from None
    audit.use_keys(store, keyring)  # the audit chain's head and anchor are keyed with them
    return keyring


def _unbound_keyring(store: Store, config: Config) -> Keyring:
    """The keys derived from the master key, if what the store holds sealed opens with them.

    A store from before the keyset was written under some master key; the first one it sees
    is bound for good, so it had better be that one. Subject ids cannot be checked (their
    addresses are not held), but a store in use nearly always holds some sealed blob, or at
    least a receipt signing key file (its own, or the folder's shared one of earlier versions).
    """
    keyring = Keyring(config.master_key)
    sealed = _opens_what_is_sealed(store, keyring)
    key_file = receipt_key_path(config.store_path)
    receipt_key = _opens_receipt_key(key_file, keyring)
    if sealed is False:
        raise ConfigError(
            str(config.path),
            "keys.source",
            f"{store.path} holds data sealed under another master key; keys.source must name "
            "the key this store was written with",
        )
    if receipt_key is False and sealed:
        # The master key opens the store's data, so it is the store's: the key file is not.
        raise ConfigError(str(key_file), "", NOT_THIS_STORES_KEY)
    if receipt_key is False:
        raise ConfigError(
            str(config.path),
            "keys.source",
            f"{store.path} holds nothing sealed but its receipt signing key file {key_file}, "
            "which does not open with this master key; keys.source must name the key this "
            "store was written with (if it does, that key file is another store's: move it "
            "aside)",
        )
    if sealed is None and receipt_key is None and _in_use(store):
        # A store in use with nothing sealed left (outbox drained, manifests purged) and no
        # key file of its own yet: the folder's shared key file of earlier versions is the
        # only evidence left. A new store has nothing to lose and ignores it (it may be
        # another store's); once bound, open_keyring adopts it if it is this store's.
        shared = store.path.parent / LEGACY_KEY_FILE
        if _opens_receipt_key(shared, keyring) is False:
            raise ConfigError(
                str(config.path),
                "keys.source",
                f"{store.path} holds nothing sealed but the folder's shared receipt signing "
                f"key file {shared} does not open with this master key; keys.source must name "
                "the key this store was written with (if it does, that file is another store's "
                "in this folder: once that store has been opened by this version, which takes "
                "its own copy, move the shared file aside)",
            )
    audit.use_keys(store, keyring)  # the keys this store is bound to at its first open
    return keyring


def key_check_files(store_path: Path) -> tuple[Path, Path]:
    """The files beside the store at ``store_path`` that binding its keys checks the master
    key against (:func:`_unbound_keyring`): its receipt signing key file, and the folder's
    shared one of earlier versions."""
    return receipt_key_path(store_path), store_path.parent / LEGACY_KEY_FILE


def _in_use(store: Store) -> bool:
    """Whether the store holds anything a wrong master key would cost: people, erasures."""
    return any(
        store.db.execute(f"SELECT EXISTS(SELECT 1 FROM {table})").fetchone()[0]  # noqa: S608
        for table in ("subjects", "suppression", "dsr_requests")
    )


def _opens_what_is_sealed(store: Store, keyring: Keyring) -> bool | None:
    """Whether one blob of each sealed column opens with ``keyring``; None if there is none."""
    found = False
    for sealed in SEALED_COLUMNS:
        row = store.db.execute(
            f"SELECT {sealed.by}, {sealed.column} FROM {sealed.table} "  # noqa: S608 (constants)
            f"WHERE typeof({sealed.column}) = 'blob' LIMIT 1"
        ).fetchone()
        if row is not None:
            found = True
            try:
                keyring.open(row[1], sealed.context(str(row[0])))
            except DecryptionError:
                return False
    return found or None


def _opens_receipt_key(key_file: Path, keyring: Keyring) -> bool | None:
    """Whether the store's receipt signing key file opens with ``keyring``; None if absent."""
    try:
        keyring.open(key_file.read_bytes(), RECEIPT_KEY_CONTEXT)
    except FileNotFoundError:
        return None
    except DecryptionError:
        return False
    return True


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_master_key` did (fingerprints and counts; never a key)."""

    old_fingerprint: str
    new_fingerprint: str
    #: Blobs sealed again under the new key, by column name (see ``SEALED_COLUMNS``).
    resealed: dict[str, int]
    #: Blobs that did not open under the old key either: left as they were.
    unreadable: dict[str, int]
    #: Whether the receipt signing key file was sealed again (there is none before a receipt).
    receipt_key: bool
    #: The folder's shared receipt key file of earlier versions, when it still opens under the
    #: old key: it holds the store's signing key as it was, for whoever has that key.
    shared_receipt_key: Path | None = None
    #: Stores a restore replaced (kept beside the store): their keys wrapped anew under the
    #: new master key, and those whose data the old key still opens (to be deleted; one that
    #: could not be written is tried again at the next open).
    replaced_resealed: tuple[Path, ...] = ()
    replaced_left: tuple[Path, ...] = ()
    #: Whether the keys kept (:data:`KEPT_KEYS`) are the ones derived from the old master key
    #: itself (a store's first keys are): then that key alone computes them, no copy needed.
    kept_derived_from_old_key: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "renewed": ["the wrapping of the data keys", "the key of what is kept sealed"],
            "not_renewed": _not_renewed(self.kept_derived_from_old_key, self.receipt_key),
            "replaced_stores_resealed": [str(path) for path in self.replaced_resealed],
            "replaced_stores_left": [str(path) for path in self.replaced_left],
            "old_fingerprint": self.old_fingerprint,
            "new_fingerprint": self.new_fingerprint,
            "resealed": dict(self.resealed),
            "unreadable": dict(self.unreadable),
            "receipt_key_resealed": self.receipt_key,
            "shared_receipt_key_file": (
                None if self.shared_receipt_key is None else str(self.shared_receipt_key)
            ),
        }


def _not_renewed(kept_derived_from_old_key: bool, receipt_key: bool) -> list[dict[str, object]]:
    """The keys a rotation keeps (:data:`KEPT_KEYS`, and the receipt signing key if there is
    one), as ``--json`` lists them."""
    kept: list[dict[str, object]] = [
        {"key": name, "computes": what, "derived_from_old_master_key": kept_derived_from_old_key}
        for name, what in KEPT_KEYS.items()
    ]
    if receipt_key:
        # The same signing key, sealed anew: an earlier copy of its key file (a backup)
        # still opens under the old master key.
        kept.append(
            {
                "key": "receipt-signing",
                "computes": "signatures of erasure receipts",
                "renew_with": "klantsync dsr rotate-key",
            }
        )
    return kept


@dataclass(frozen=True)
class RotationFinished:
    """What :func:`finish_rotation` did for a rotation cut short past its commit."""

    new_fingerprint: str
    #: Whether the receipt key file sealed under the new keys was still staged, and put in.
    receipt_key_settled: bool
    #: Whether the store has a receipt signing key file (the rotation sealed it anew).
    receipt_key: bool
    replaced_resealed: tuple[Path, ...]
    replaced_left: tuple[Path, ...]
    #: As :attr:`Rotation.kept_derived_from_old_key`, the old key being the one
    #: ``keys.source`` still names.
    kept_derived_from_old_key: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "already_rotated": True,
            "new_fingerprint": self.new_fingerprint,
            "receipt_key_settled": self.receipt_key_settled,
            "replaced_stores_resealed": [str(path) for path in self.replaced_resealed],
            "replaced_stores_left": [str(path) for path in self.replaced_left],
            "not_renewed": _not_renewed(self.kept_derived_from_old_key, self.receipt_key),
        }


def finish_rotation(store: Store, config: Config, new_master: bytes) -> RotationFinished | None:
    """Finish a rotation to ``new_master`` that committed and was cut short before
    ``keys.source`` was pointed at the new key; None if the store is not under ``new_master``.

    The README's recipe is run again after a kill, ``keys.source`` still naming the old key:
    refused as a wrong key, the rerun failed and the new key was never moved into place.
    The store's keyset, which opens under one master key only, tells such a rerun apart
    from a rotation still to make (and from a wrong key, which :func:`open_keyring` refuses).
    What the rotation left is what the next open under the new key does: the receipt key
    file and the replaced stores' keys staged under it are put in.
    """
    row = store.db.execute("SELECT wrapped FROM keyset WHERE id=1").fetchone()
    if row is None:
        return None
    try:
        unwrap_data_keys(new_master, row[0])
    except DecryptionError:
        return None
    # Before open_keyring, which settles them too and would leave nothing to name.
    replaced_resealed, replaced_left = settle_replaced_stores(config.store_path, new_master)
    keyring = open_keyring(store, replace(config, master_key=new_master))
    signer = ReceiptSigner.for_store(config.store_path, keyring)
    staged = signer.staged_path.exists()
    signer.settle()
    first = DataKeys.derive(config.master_key)
    return RotationFinished(
        master_fingerprint(new_master),
        receipt_key_settled=staged and not signer.staged_path.exists(),
        receipt_key=signer.exists(),
        replaced_resealed=replaced_resealed,
        replaced_left=replaced_left,
        kept_derived_from_old_key=(first.subject, first.payload)
        == (keyring.keys.subject, keyring.keys.payload),
    )


def rotate_master_key(store: Store, config: Config, new_master: bytes) -> Rotation:
    """Put the store under ``new_master``: data keys wrapped again, sealed data sealed again.

    One transaction, synced to disk: a crash leaves the store under the old key or the new
    one, never half. The store's receipt signing key file is written sealed under the new keys
    beside the old file first and renamed over it after the commit (:class:`ReceiptSigner`
    settles a crash in between); so are the keys of the stores a restore replaced
    (:func:`_stage_replaced_stores`; the next open under the new key settles them). The
    folder's shared key file of earlier versions is left as it is (other stores may use it);
    :attr:`Rotation.shared_receipt_key` says when it holds this store's key.
    Nothing else may have the store open: a process that opened it before holds the old keys
    (the CLI takes :func:`connector.lock.keys_alone`; every runtime shares it).

    Raises:
        ConfigError: ``new_master`` is the key in use, or the current one does not open the
            store (as :func:`open_keyring`).
    """
    old = open_keyring(store, config)
    if new_master == config.master_key:
        raise ConfigError(str(config.path), "keys.source", "the new master key is the one in use")
    new = Keyring(keys=old.keys.with_new_outbox_key())
    old_fp, new_fp = master_fingerprint(config.master_key), master_fingerprint(new_master)
    signer = ReceiptSigner.for_store(config.store_path, old)
    resealed: dict[str, int] = {}
    unreadable: dict[str, int] = {}
    staged = signer.stage_reseal(new)
    replaced_staged: tuple[Path, ...] = ()
    try:
        replaced_staged, replaced_unread = _stage_replaced_stores(config, new_master)
        # Synced before it returns: the key file is renamed next, and the operator moves the
        # new key over the old one once told it is done; a power cut must not then undo it.
        with store.durable_transaction() as db:
            for sealed in SEALED_COLUMNS:
                resealed[sealed.name], left = _reseal(db, sealed, old, new)
                if left:
                    unreadable[sealed.name] = left
            db.execute(
                "UPDATE keyset SET wrapped=?, master_fingerprint=?, rotated_at=? WHERE id=1",
                (wrap_data_keys(new_master, new.keys), new_fp, utcnow()),
            )
            audit.append(
                store,
                audit.KEY_ROTATED,
                {"key": "master", "old": old_fp, "new": new_fp, "resealed": dict(resealed)},
            )
            # The chain's MACs are made with a key derived from the one renewed here.
            audit.rekey(store, new)
    except BaseException:
        if staged:
            signer.staged_path.unlink(missing_ok=True)
        for path in replaced_staged:
            _staged_wrapping(path).unlink(missing_ok=True)
        raise
    if staged:
        signer.finish_reseal()
    shared = config.store_path.parent / LEGACY_KEY_FILE
    replaced_resealed, replaced_unwritten = settle_replaced_stores(config.store_path, new_master)
    first = DataKeys.derive(config.master_key)
    return Rotation(
        old_fp,
        new_fp,
        resealed,
        unreadable,
        receipt_key=staged,
        shared_receipt_key=shared if _opens_receipt_key(shared, old) else None,
        replaced_resealed=replaced_resealed,
        replaced_left=replaced_unread + replaced_unwritten,
        kept_derived_from_old_key=(first.subject, first.payload)
        == (old.keys.subject, old.keys.payload),
    )


#: Beside a store a restore replaced, its keys wrapped under the new master key while a
#: rotation commits (:func:`settle_replaced_stores` puts them in).
_STAGED = ".rotating"


def _staged_wrapping(replaced: Path) -> Path:
    return replaced.with_name(replaced.name + _STAGED)


def _stage_replaced_stores(
    config: Config, new_master: bytes
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Stage the keys of each store a restore replaced, wrapped under ``new_master``, beside
    it; the stores staged, and those left.

    Such a store holds all the store held, sealed, for ``replaced_stores_days``; left under
    the old master key, a key rotated because it leaked would still open that full copy.
    Staged before the rotation commits and put in after, by the rotation or, were it cut
    short in between, by the next open under the new key (:func:`settle_replaced_stores`):
    the old key, needed to unwrap them, is not known after. One whose keys the old key does
    not open is not its to protect (another key's, or emptied by the sweep to its audit
    trail). One that still seals with the key the old master key derives is sealed again
    under a fresh key first (:func:`_renew_replaced_seal`). One it cannot wrap anew (a store
    from before the keyset, sealed with keys derived from the old key itself; one that
    cannot be read) is returned second, to be named: deleting it is the way left.
    """
    staged: list[Path] = []
    left: list[Path] = []
    derived = DataKeys.derive(config.master_key)
    for path, _when in replaced_stores(config.store_path):
        try:
            with closing(_existing(path)) as db:
                keys = _replaced_keys(db, config.master_key)
            if keys is not None and keys.outbox == derived.outbox:
                # A store never rotated seals with its first key, which the old master key
                # computes on its own: wrapped anew, that key would still open the copy.
                keys = _renew_replaced_seal(path, config.master_key, keys)
            if keys is not None:
                write_private(_staged_wrapping(path), wrap_data_keys(new_master, keys))
                staged.append(path)
        except (_OldKeyStillOpens, KlantsyncError, sqlite3.Error, OSError):
            left.append(path)
    return tuple(staged), tuple(left)


def _renew_replaced_seal(path: Path, old_master: bytes, keys: DataKeys) -> DataKeys:
    """Seal again under a fresh key what the replaced store at ``path`` holds sealed under
    ``keys``, in one transaction of its own; its renewed keys.

    They stay wrapped under ``old_master`` here: a rotation that then fails, or is cut
    short before its commit, leaves the copy open to the key still in use; the wrapping
    under the new key is staged as for any replaced store. Its audit chain's MACs are
    carried over to the fresh key they are made with, so its trail still verifies.
    """
    old, new = Keyring(keys=keys), Keyring(keys=keys.with_new_outbox_key())
    with closing(_existing(path)) as db:
        # Put back after: a Store opens it in WAL mode, and the sweep leaves an emptied one
        # one file, with no -wal beside it.
        mode = str(db.execute("PRAGMA journal_mode").fetchone()[0])
    replaced = Store(path)
    try:
        audit.use_keys(replaced, old)
        with replaced.durable_transaction() as db:
            for sealed in SEALED_COLUMNS:
                _reseal(db, sealed, old, new)
            _put_wrapping(db, wrap_data_keys(old_master, new.keys), master_fingerprint(old_master))
            audit.rekey(replaced, new)
        replaced.db.execute(f"PRAGMA journal_mode={mode}")
    finally:
        replaced.close()
    return new.keys


def settle_replaced_stores(
    store_path: Path, master_key: bytes
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Put the keys a rotation staged into the stores a restore replaced; those it put in,
    and those it could not (staged still: tried again at the next open).

    A staged wrapping that ``master_key`` (the store's, as it is opened) does not open is of
    a rotation that never committed: the replaced store is under this key already, as the
    store is. Only while no rotation runs (as :meth:`ReceiptSigner.settle`).
    """
    resealed: list[Path] = []
    left: list[Path] = []
    pattern = f"{glob.escape(store_path.name)}.replaced-*{_STAGED}"
    for staged in sorted(store_path.parent.glob(pattern)):
        replaced = staged.with_name(staged.name.removesuffix(_STAGED))
        try:
            wrapped = staged.read_bytes()
            unwrap_data_keys(master_key, wrapped)
        except FileNotFoundError:
            continue  # another process settled it meanwhile
        except DecryptionError:
            staged.unlink(missing_ok=True)
            continue
        if replaced.exists():
            try:
                with closing(_existing(replaced)) as db:
                    _put_wrapping(db, wrapped, master_fingerprint(master_key))
            except (sqlite3.Error, OSError):
                left.append(replaced)
                continue
            resealed.append(replaced)
        staged.unlink(missing_ok=True)  # or deleted by the sweep meanwhile: nothing owed
    return tuple(resealed), tuple(left)


def _existing(path: Path) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path``, never created (a replaced store the
    sweep deleted meanwhile is not made again, empty)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    return db


class _OldKeyStillOpens(Exception):
    """A replaced store whose sealed data the old master key opens without its keyset."""


def _replaced_keys(db: sqlite3.Connection, old_master: bytes) -> DataKeys | None:
    """One replaced store's keys, if ``old_master`` wraps them (None: none of its to wrap).

    Raises:
        _OldKeyStillOpens: it has no keyset, yet holds data sealed under the old key.
    """
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    row = None
    if "keyset" in tables:
        row = db.execute("SELECT wrapped FROM keyset WHERE id=1").fetchone()
    if row is None:
        if any(
            db.execute(
                f"SELECT 1 FROM {sealed.table} "  # noqa: S608 (constants)
                f"WHERE typeof({sealed.column}) = 'blob' LIMIT 1"
            ).fetchone()
            for sealed in SEALED_COLUMNS
            if sealed.table in tables
        ):
            raise _OldKeyStillOpens
        return None
    try:
        return unwrap_data_keys(old_master, row[0])
    except DecryptionError:
        return None  # not under the old key: nothing of its to protect here


def _put_wrapping(db: sqlite3.Connection, wrapped: bytes, fingerprint: str) -> None:
    """Put a replaced store's keys, wrapped anew, over their old wrapping."""
    # The old wrapping is overwritten in place, not left in the page's free space.
    db.execute("PRAGMA secure_delete=ON")
    db.execute(
        "UPDATE keyset SET wrapped=?, master_fingerprint=? WHERE id=1", (wrapped, fingerprint)
    )


def _reseal(db: sqlite3.Connection, sealed: _Sealed, old: Keyring, new: Keyring) -> tuple[int, int]:
    """Seal one column's blobs again, in key order a chunk at a time (memory stays flat)."""
    done = unreadable = 0
    select = (
        f"SELECT {sealed.key}, {sealed.by}, {sealed.column} FROM {sealed.table} "  # noqa: S608
        f"WHERE typeof({sealed.column}) = 'blob' {{after}} ORDER BY {sealed.key} LIMIT {_CHUNK}"
    )
    first, after = select.format(after=""), select.format(after=f"AND {sealed.key} > ?")
    update = f"UPDATE {sealed.table} SET {sealed.column}=? WHERE {sealed.key}=?"  # noqa: S608
    rows = db.execute(first).fetchall()
    while rows:
        changes = []
        for key, by, blob in rows:
            context = sealed.context(str(by))
            try:
                plain = old.open(blob, context)
            except DecryptionError:
                unreadable += 1  # it did not open before either: left as it is
                continue
            changes.append((new.seal(plain, context), key))
        db.executemany(update, changes)
        done += len(changes)
        # By key, past the chunk's last: an index seek, not a scan per chunk.
        rows = db.execute(after, (rows[-1][0],)).fetchall()
    return done, unreadable
