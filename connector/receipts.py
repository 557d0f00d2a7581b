"""Signed receipts: Ed25519 over canonical JSON, with a signing key kept sealed by the store.

A receipt is one line of canonical JSON (sorted keys, compact separators, ASCII only)::

    {"algorithm":"Ed25519","key_id":"...","receipt":{...},"signature":"<base64>"}

The signature covers the canonical JSON of the ``receipt`` object. Verification also
insists that the file *is* canonical (one optional trailing newline allowed): otherwise a byte
changed in insignificant whitespace would still verify, and "one changed byte fails" is the
property an auditor can check by hand.

A key ``dsr rotate-key`` retired signs nothing after its retirement: its public half is kept
(receipts it signed before still verify) with the moment it was retired, on a ``Retired-At``
line before the PEM (RFC 7468 explanatory text, which PEM readers skip), and a receipt it
signed whose ``completed_at`` is later is refused. Whoever took a copy of the retired private
key could otherwise sign new, false receipts with it. The public-key listing (``dsr
public-key --all``) carries those lines, so a third party checking offline applies the rule.

The key in use has its public half kept there too, from its first use and before it signs
anything, with the moment it was made on a ``Made-At`` line: public keys are no secret, and
this copy is readable without the store's keys. A restore that puts another key in place (the
one beside the store is sealed under keys the restored store does not have) cannot open the
replaced key, but finds its public half here and retires it at the restore
(:func:`retire_replaced`), so the receipts it signed still verify.

The private key is generated on first use and written beside the store, named after it
(``var/klantsync.db`` signs with ``var/klantsync.db.receipt-signing.key``), sealed with the
:class:`~connector.crypto.Keyring` (so it is as safe as the outbox and needs no extra secret),
file mode 0600. The public key is exported as PEM for anyone who must check receipts.

Each store has a key of its own: two stores in one folder (two clients, or a test store beside
a live one) must not sign for each other, and a key sealed under one store's keys does not
open with another's. Before that, every store in a folder used one ``receipt-signing.key``;
a store that has no key file of its own yet takes a copy of that one if it opens with the
store's keys (:meth:`ReceiptSigner.for_store`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from connector.crypto import RECEIPT_KEY_CONTEXT, DecryptionError, Keyring
from connector.errors import ReceiptError
from connector.lock import wait_for_lock
from connector.privatefile import create_private, write_private

__all__ = [
    "LEGACY_KEY_FILE",
    "NOT_THIS_STORES_KEY",
    "ListedKey",
    "ReceiptSigner",
    "Verification",
    "canonical",
    "document_key_id",
    "key_id",
    "listed_keys_in",
    "load_public_key",
    "receipt_key_path",
    "retire_replaced",
    "retired_keys_dir",
    "verify_receipt",
    "verify_with_listing",
]

#: What a store's sealed signing key file is named: the store's file name, then this.
KEY_FILE_SUFFIX = ".receipt-signing.key"
#: The key file every store in a folder shared before each had its own; read, never written.
LEGACY_KEY_FILE = "receipt-signing.key"
ALGORITHM = "Ed25519"
#: The explanatory line before a retired key's PEM that says when it was retired.
RETIRED_AT = "Retired-At: "
#: The one before it that names the key (for the reader; the key itself is what counts).
KEY_ID = "Key-Id: "
#: The explanatory line that says when the key was made (first used, for keys made before
#: this line was kept).
MADE_AT = "Made-At: "
#: The file in :func:`retired_keys_dir` whose lock a rotation and a load of the key hold.
LOCK_FILE = "lock"
#: What a command waiting for that lock says: who holds it and that the wait goes on.
RECEIPT_KEYS_HELD = (
    "waiting for the receipt signing keys: another klantsync process is loading or rotating "
    "them (dsr rotate-key); this goes on once it has finished"
)


def receipt_key_path(store_path: Path) -> Path:
    """The sealed signing key file of the store at ``store_path`` (beside it, named after it)."""
    return store_path.with_name(store_path.name + KEY_FILE_SUFFIX)


#: What to say (and do) when a store's key file does not open with the store's keys.
NOT_THIS_STORES_KEY = (
    "this receipt signing key file does not open with the store's keys, so it is not this "
    "store's (copied from another store, or restored from another backup): put back the "
    "store's own file from the backup taken with the store; if it is lost, move this one "
    "aside and a new key is made on first use (receipts signed before then verify only "
    "with the old public key, if you kept it: dsr verify-receipt --public-key)"
)


def retired_keys_dir(key_path: Path) -> Path:
    """Where the public halves of ``key_path``'s retired keys are kept, named after it.

    ``klantsync.db.receipt-signing.key`` keeps them in ``klantsync.db.receipt-keys``, and the
    shared ``receipt-signing.key`` in ``receipt-keys``, where klantsync always kept them.
    """
    head = key_path.name.removesuffix("signing.key")
    if head == key_path.name:  # named otherwise (tests): still a folder of its own
        return key_path.with_name(key_path.name + ".retired")
    return key_path.with_name(head + "keys")


def canonical(value: Any) -> bytes:
    """The one byte form that is signed: sorted keys, no spaces, ASCII escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key (SHA-256 of its raw bytes, 16 hex digits)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class ListedKey:
    """A public key receipts were signed with, and when it was retired (``None``: the key
    in use, or one retired by a version that did not keep the moment)."""

    public: Ed25519PublicKey
    retired_at: str | None = None
    #: When it was made, if its file keeps it (keys made before it was kept: their first use
    #: by a version that keeps it).
    made_at: str | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def pem(self) -> str:
        """The key as PEM, a retired one's preceded by its ``Key-Id``, ``Retired-At`` and
        (when known) ``Made-At``."""
        if self.retired_at is None:
            return self._bare()
        return self.record()

    def record(self) -> str:
        """The key as its file in :func:`retired_keys_dir` keeps it: PEM after its
        ``Key-Id``, its ``Retired-At`` if retired and its ``Made-At`` if known."""
        lines = [f"{KEY_ID}{self.key_id}\n"]
        if self.retired_at is not None:
            lines.append(f"{RETIRED_AT}{self.retired_at}\n")
        if self.made_at is not None:
            lines.append(f"{MADE_AT}{self.made_at}\n")
        return "".join(lines) + self._bare()

    def _bare(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def listed_keys_in(pem: bytes) -> list[ListedKey]:
    """Every public key in a PEM text (one key, a retired key's file, or the listing of
    ``dsr public-key --all``), each with the ``Retired-At`` of the lines before it.

    Raises:
        ReceiptError: no key in it, a key that is not an Ed25519 one, or a ``Retired-At``
            that is no moment with its offset.
    """
    found: list[ListedKey] = []
    retired_at: str | None = None
    made_at: str | None = None
    block: list[str] | None = None
    for line in pem.decode("ascii", errors="replace").splitlines():
        if block is not None:
            block.append(line)
            if line.startswith("-----END"):
                key = load_public_key("\n".join(block).encode())
                found.append(ListedKey(key, retired_at, made_at))
                block, retired_at, made_at = None, None, None
        elif line.startswith("-----BEGIN"):
            block = [line]
        elif line.startswith(RETIRED_AT):
            retired_at = _moment_text(line.removeprefix(RETIRED_AT).strip())
        elif line.startswith(MADE_AT):
            # Said for the reader; a text that is no moment is left out, never refused.
            text = line.removeprefix(MADE_AT).strip()
            made_at = text if _moment(text) is not None else None
    if not found:
        raise ReceiptError("the public key is not a valid PEM public key")
    return found


def _moment_text(text: str) -> str:
    """``text`` if it is an ISO 8601 moment with its offset, as ``Retired-At`` gives one."""
    moment = _moment(text)
    if moment is None:
        raise ReceiptError("a Retired-At line is not a moment with its UTC offset")
    return text


def _moment(text: object) -> dt.datetime | None:
    """An ISO 8601 moment with its offset, or ``None`` for anything else."""
    try:
        moment = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class ReceiptSigner:
    """Signs receipts with the store's Ed25519 key, creating the key on first use.

    Args:
        key_path: where the sealed key lives (:func:`receipt_key_path` of the store).
        keyring: seals and opens the key file.
        adopt: a key file to take a copy of while ``key_path`` does not exist, if it opens
            with ``keyring`` (the shared file of earlier versions; see :meth:`for_store`).
        on_rotate: told ``(old key id, new key id)`` when a load finds the key in use
            retired and replaces it (:meth:`_load_or_create`), to audit it as a rotation.
    """

    def __init__(
        self,
        key_path: Path,
        keyring: Keyring,
        *,
        adopt: Path | None = None,
        on_rotate: Callable[[str, str], None] | None = None,
    ) -> None:
        self.key_path = key_path
        self._keyring = keyring
        self._adopt = adopt
        self._on_rotate = on_rotate
        #: Whether this signer holds the folder's lock (:meth:`_keys_alone`) now.
        self._holding = False
        self._private: Ed25519PrivateKey | None = None
        #: The key file the key held was read from (:meth:`_file_identity`).
        self._loaded: tuple[int, int] | None = None

    @classmethod
    def for_store(
        cls,
        store_path: Path,
        keyring: Keyring,
        *,
        on_rotate: Callable[[str, str], None] | None = None,
    ) -> ReceiptSigner:
        """The signer of the store at ``store_path``, under the store's ``keyring``.

        A store that has no key file of its own yet takes a copy of the folder's shared
        ``receipt-signing.key`` (and the public halves of the keys it retired) if that opens
        with the store's keys: it is the key the store signed with until now. The shared file
        is left where it is, since another store in the folder may have signed with it too.
        One that does not open is another store's, and this store makes a key of its own.
        """
        legacy = store_path.parent / LEGACY_KEY_FILE
        return cls(receipt_key_path(store_path), keyring, adopt=legacy, on_rotate=on_rotate)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        # Read again when the key file is another since it was read: a `dsr rotate-key` in
        # another process (the CLI beside the daemon) retired the key held here, and a
        # receipt signed with it after that would be refused.
        found = self._file_identity()
        if self._private is None or (found is not None and found != self._loaded):
            # The file as it was before the read (one replaced meanwhile is read again next
            # time), or as the read made it (a rotation at the load says the new one).
            self._loaded = found
            self._private = self._load_or_create()
            self._loaded = self._loaded or self._file_identity()
        return self._private

    def _file_identity(self) -> tuple[int, int] | None:
        """The key file as told apart from one put in its place (renamed into place: a new
        inode), ``None`` while there is none."""
        try:
            found = self.key_path.stat()
        except OSError:
            return None
        return (found.st_ino, found.st_mtime_ns)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def exists(self) -> bool:
        """Whether the key file has been created yet."""
        return self.key_path.is_file()

    def public_key_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), for ``klantsync dsr public-key``."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, receipt: dict[str, Any]) -> str:
        """The signed receipt document, as its canonical JSON text (one line)."""
        signature = self.private_key.sign(canonical(receipt))
        document = {
            "algorithm": ALGORITHM,
            "key_id": key_id(self.public_key),
            "receipt": receipt,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
        return canonical(document).decode("ascii")

    @property
    def retired_dir(self) -> Path:
        """Where the public halves of retired keys are kept, so old receipts still verify."""
        return retired_keys_dir(self.key_path)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key this store has signed with, by key id (current included)."""
        return {listed.key_id: listed.public for listed in self.listed_keys()}

    def listed_keys(self) -> list[ListedKey]:
        """Every public key this store has signed with: the retired ones, each with when it
        was retired as its file keeps it, oldest first, and the one in use last."""
        # First: loading the key may adopt the shared file, and its retired keys with it.
        current = self.public_key
        retired = _known_keys(self.retired_dir)
        # The key in use is retired by no file (the load replaced one found retired; a
        # rotation in another process may have retired it since).
        mine = retired.pop(key_id(current), None)
        made_at = None if mine is None else mine.made_at
        return [*sorted(retired.values(), key=_when), ListedKey(current, made_at=made_at)]

    def rotate(self, retired_at: str | None = None) -> tuple[str, str]:
        """Retire the signing key for a new one; return ``(old key id, new key id)``.

        The old key's *public* half is kept, with ``retired_at`` (default: now), so receipts
        it signed before stay verifiable and none it signs later is; its private half is
        gone once the new sealed key file replaces it.

        Under the folder's lock (:meth:`_keys_alone`): a load in another process never finds
        the old key retired and the new one not yet in place.
        """
        with self._keys_alone():
            old = self.private_key
            return self._rotate(old, retired_at or _now())

    def _rotate(self, key_in_use: Ed25519PrivateKey, when: str) -> tuple[str, str]:
        """:meth:`rotate` of ``key_in_use``, with the folder's lock held."""
        old = key_in_use.public_key()
        old_id = key_id(old)
        kept = _known_keys(self.retired_dir).get(old_id)
        made_at = None if kept is None else kept.made_at
        retired_at = when
        if kept is not None and kept.retired_at is not None:
            # Retired already (a rotation killed before its new key was in place, or a
            # restore that brought it back): its retirement never moves later, or whatever
            # a copy of it signed since would pass.
            retired_at = min(when, kept.retired_at, key=dt.datetime.fromisoformat)
        # Whole or not at all: a torn file here failed every receipt check that followed.
        write_private(
            self.retired_dir / f"{old_id}.pem",
            ListedKey(old, retired_at, made_at).record().encode(),
        )
        key = Ed25519PrivateKey.generate()
        # Known before it signs anything (see the module).
        self._remember(key.public_key(), when)
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # Renamed into place: never a moment without a key file.
        write_private(self.key_path, self._keyring.seal(raw, RECEIPT_KEY_CONTEXT))
        self._private = key
        self._loaded = self._file_identity()
        return old_id, key_id(key.public_key())

    @property
    def staged_path(self) -> Path:
        """The key file sealed under new data keys, while a master key rotation commits."""
        return self.key_path.with_name(self.key_path.name + ".rotating")

    def stage_reseal(self, keyring: Keyring) -> bool:
        """Write the signing key sealed under ``keyring`` to :attr:`staged_path`.

        Returns False when there is no key yet. The rotation renames the staged file over the
        key file once the store's new keys are committed (:func:`finish_reseal`); a crash in
        between is settled on the next load, by which key the staged file opens with.

        Raises:
            ReceiptError: the key file does not open with the store's keys (another store's),
                naming the file and what to do.
        """
        self._settle_staged()
        # Adopted first, so the store's own copy is what is sealed again under the new keys.
        self.adopt_shared()
        if not self.key_path.exists():
            return False
        try:
            raw = self._keyring.open(self.key_path.read_bytes(), RECEIPT_KEY_CONTEXT)
        except DecryptionError:
            # Refused before anything is rotated: sealed anew under the new keys, the file
            # would still not be this store's, and the operator would not learn which it is.
            raise ReceiptError(f"{self.key_path}: {NOT_THIS_STORES_KEY}") from None
        # The same signing key, sealed anew: its age (the daemon's rotation reminder reads the
        # file's mtime) stays the key's own.
        made = self.key_path.stat()
        # Known in clear before it is sealed under keys a restore of an older backup lacks
        # (a key an earlier version made may not be yet).
        self._remember(
            Ed25519PrivateKey.from_private_bytes(raw).public_key(),
            dt.datetime.fromtimestamp(made.st_mtime, dt.UTC).isoformat(timespec="seconds"),
        )
        write_private(
            self.staged_path,
            keyring.seal(raw, RECEIPT_KEY_CONTEXT),
            mtime_ns=made.st_mtime_ns,
        )
        return True

    def finish_reseal(self) -> None:
        """The store's new keys are committed: the staged key file becomes the key file."""
        os.replace(self.staged_path, self.key_path)

    def settle(self) -> None:
        """Put in place what a master key rotation that stopped short left staged, and adopt
        the shared key file of earlier versions: the key file on disk is then the one the
        store's keys open (a backup copies it as it is on disk). Only while no rotation
        runs: under :func:`connector.lock.sharing_keys`."""
        self._settle_staged()
        self.adopt_shared()

    def _settle_staged(self) -> None:
        staged = self.staged_path
        try:
            sealed = staged.read_bytes()
        except FileNotFoundError:
            return  # none, or another process settled it meanwhile
        try:
            self._keyring.open(sealed, RECEIPT_KEY_CONTEXT)
        except DecryptionError:
            staged.unlink(missing_ok=True)  # that rotation never committed: the key file holds
        else:
            # It committed, and stopped before the rename (another process may just have).
            with contextlib.suppress(FileNotFoundError):
                os.replace(staged, self.key_path)

    def adopt_shared(self) -> None:
        """Copy the shared key file of earlier versions as this store's, if it is its key.

        Done on first use of the key, and by :func:`connector.keyset.open_keyring` on every
        open, so a store that only syncs has its copy too before the shared file is deleted.
        Nothing to do (one ``stat``) once the store has a key file of its own.
        """
        if self._adopt is None or self.key_path.exists():
            return
        # A master key rotation by an earlier version that committed and stopped before its
        # rename left the store's key staged beside the shared file, under the store's keys.
        staged = self._adopt.with_name(self._adopt.name + ".rotating")
        for source in (staged, self._adopt):
            try:
                sealed = source.read_bytes()
                made = source.stat()
                self._keyring.open(sealed, RECEIPT_KEY_CONTEXT)
            except (FileNotFoundError, DecryptionError):
                continue  # absent, or another store's: this store makes its own key
            break
        else:
            return
        # The retired keys first: were the key file copied and the history not, a crash in
        # between would leave old receipts unverifiable with nothing left to adopt them again.
        history = retired_keys_dir(self._adopt)
        for pem in sorted(history.glob("*.pem")) if history.is_dir() else []:
            copy = self.retired_dir / pem.name
            if not copy.exists():
                write_private(copy, pem.read_bytes())
        # The same key keeps its age: the daemon's rotation reminder reads the file's mtime.
        create_private(self.key_path, sealed, mtime_ns=made.st_mtime_ns)
        if source == staged:
            staged.unlink(missing_ok=True)  # opens with this store's keys only: nobody else's

    def _load_or_create(self) -> Ed25519PrivateKey:
        """The key to sign with, made or read, once what the folder of kept keys says of it
        is settled (under its lock: a rotation in another process is never seen half-way).

        A key kept as in use (a ``Made-At`` and no ``Retired-At``) that is not this one was
        replaced by a restore stopped before it retired it: retired now, it verifies what it
        signed until then and nothing later. A key in use that is kept as retired (a restore
        of an older backup brought it back, or a rotation stopped before its new key was in
        place) signs nothing again: a new key replaces it at once, its retirement left as
        it was, and ``on_rotate`` is told, as a ``dsr rotate-key`` is audited.
        """
        with self._keys_alone():
            key = self._read_or_create()
            # Before it signs anything: a restore that cannot open the key file finds it here.
            made = dt.datetime.fromtimestamp(self.key_path.stat().st_mtime, dt.UTC)
            self._remember(key.public_key(), made.isoformat(timespec="seconds"))
            in_use = key_id(key.public_key())
            now = _now()
            retire_replaced(self.retired_dir, in_use, now)
            kept = _known_keys(self.retired_dir).get(in_use)
            if kept is None or kept.retired_at is None:
                return key
            old, new = self._rotate(key, now)
            if self._on_rotate is not None:
                self._on_rotate(old, new)
            assert self._private is not None  # set by the rotation
            return self._private

    @contextlib.contextmanager
    def _keys_alone(self) -> Iterator[None]:
        """The folder of kept keys to this signer alone (a lock file in it), waiting for
        another process's rotation or load to finish (a few file writes), and saying so if
        it lasts (a process stopped while it held them). Held already by this signer:
        nothing more (a rotation loads the key it retires)."""
        if self._holding:
            yield
            return
        self.retired_dir.mkdir(parents=True, exist_ok=True)
        # Opened for reading: flock needs no more, and a lock file root made first (a
        # `dsr public-key` run as root) or a folder remounted read-only then stops no
        # other user's signer. It holds nothing, so anyone may read it.
        path = self.retired_dir / LOCK_FILE
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            wait_for_lock(fd, path, exclusive=True, held=RECEIPT_KEYS_HELD)
            self._holding = True
            try:
                yield
            finally:
                self._holding = False
        finally:
            os.close(fd)  # closing the descriptor releases its lock

    def _remember(self, public: Ed25519PublicKey, made_at: str) -> None:
        """Keep ``public`` in :attr:`retired_dir`, made at ``made_at``, unless it is there
        (retired by a rotation that stopped before putting its new key in place, too)."""
        path = self.retired_dir / f"{key_id(public)}.pem"
        if not path.exists():
            write_private(path, ListedKey(public, made_at=made_at).record().encode())

    def _read_or_create(self) -> Ed25519PrivateKey:
        self._settle_staged()
        self.adopt_shared()
        if not self.key_path.exists():
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            if create_private(self.key_path, self._keyring.seal(raw, RECEIPT_KEY_CONTEXT)):
                return key
        try:
            raw = self._keyring.open(self.key_path.read_bytes(), RECEIPT_KEY_CONTEXT)
            return Ed25519PrivateKey.from_private_bytes(raw)
        except (DecryptionError, ValueError) as exc:
            raise ReceiptError(f"{self.key_path}: {NOT_THIS_STORES_KEY}") from exc


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _known_keys(folder: Path) -> dict[str, ListedKey]:
    """The public keys kept in ``folder`` (:func:`retired_keys_dir`), by key id."""
    known: dict[str, ListedKey] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.pem")):
            listed = listed_keys_in(path.read_bytes())[0]
            known[listed.key_id] = listed
    return known


def retire_replaced(folder: Path, in_use: str | None, retired_at: str) -> list[str]:
    """Retire at ``retired_at`` each key kept in ``folder`` as in use (a ``Made-At`` and no
    ``Retired-At``) other than ``in_use``: a restore put another key in place of it. Returns
    their key ids.

    Its private half may still be about (kept sealed beside the store, or in an older
    backup): retired, it verifies what it signed until then, and nothing dated later.
    """
    retired: list[str] = []
    for found_id, listed in _known_keys(folder).items():
        if found_id == in_use or listed.retired_at is not None or listed.made_at is None:
            continue
        write_private(
            folder / f"{found_id}.pem",
            ListedKey(listed.public, retired_at, listed.made_at).record().encode(),
        )
        retired.append(found_id)
    return retired


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_receipt`: ``ok``, and what is wrong when it is not."""

    ok: bool
    problem: str = ""
    receipt: dict[str, Any] | None = None
    #: Which of the store's keys verified it: "current" or "former" ("" when not checked
    #: against the store's own keys), with when that key was made and retired, if known.
    signer: str = ""
    made_at: str | None = None
    retired_at: str | None = None


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Read a PEM public key; raise :class:`ReceiptError` if it is not an Ed25519 key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ReceiptError("the public key is not a valid PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ReceiptError("the public key is not an Ed25519 key")
    return key


def document_key_id(data: bytes) -> str | None:
    """The ``key_id`` a receipt says it was signed with, if it says one."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    found = document.get("key_id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


def _when(listed: ListedKey) -> dt.datetime:
    """When ``listed`` was retired, for ordering (a moment not known sorts first)."""
    return _moment(listed.retired_at) or dt.datetime.min.replace(tzinfo=dt.UTC)


def verify_receipt(
    data: bytes, public: Ed25519PublicKey, *, retired_at: str | None = None
) -> Verification:
    """Check a receipt file's bytes against ``public``, retired at ``retired_at`` if it
    was; never raises on bad input."""
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        document = json.loads(body)
    except ValueError:
        return Verification(False, "not valid JSON")
    if not isinstance(document, dict) or set(document) != {
        "algorithm",
        "key_id",
        "receipt",
        "signature",
    }:
        return Verification(False, "not a klantsync receipt")
    if canonical(document) != body:
        return Verification(False, "not in canonical form (edited after signing)")
    if document["algorithm"] != ALGORITHM:
        return Verification(False, f"unsupported algorithm {document['algorithm']!r}")
    if document["key_id"] != key_id(public):
        return Verification(False, "signed with another key")
    receipt = document["receipt"]
    try:
        text = str(document["signature"])
        signature = base64.b64decode(text, validate=True)
        # Unused low bits of the last base64 digit would let two texts decode alike.
        if base64.b64encode(signature).decode("ascii") != text:
            raise ValueError("non-canonical base64")
        public.verify(signature, canonical(receipt))
    except (InvalidSignature, binascii.Error, ValueError):
        return Verification(False, "signature does not match the content")
    if not isinstance(receipt, dict):
        return Verification(False, "not a klantsync receipt")
    if retired_at is not None:
        problem = _after_retirement(receipt, document["key_id"], retired_at)
        if problem:
            return Verification(False, problem)
    return Verification(True, receipt=receipt)


def verify_with_listing(
    data: bytes, pem: bytes, ours: Mapping[str, ListedKey] | None = None
) -> Verification:
    """Check a receipt against a given public key, or a listing of them (``dsr public-key
    --all``): the one the receipt's ``key_id`` names, else the first, held to the earlier of
    the retirement the listing says and the one ``ours`` (the deployment's keys) knows.

    Needs no store: a third party checks a receipt with the listing alone.

    Raises:
        ReceiptError: ``pem`` holds no Ed25519 public key.
    """
    wanted = document_key_id(data) or ""
    given = listed_keys_in(pem)
    chosen = next((k for k in given if k.key_id == wanted), given[0])
    known = (ours or {}).get(chosen.key_id)
    moments = [m for m in (chosen.retired_at, known and known.retired_at) if m]
    earliest = min(moments, key=dt.datetime.fromisoformat) if moments else None
    return verify_receipt(data, chosen.public, retired_at=earliest)


def _after_retirement(receipt: dict[str, Any], key: str, retired_at: str) -> str:
    """Why a receipt signed by ``key``, retired at ``retired_at``, is refused; "" if it
    was completed by then (to the second: receipts and retirements are kept to it).

    A retired key signs nothing new. Its private half is gone from the store, but a copy
    may be about (an old backup, a stolen disk): a receipt it signed that says it was
    completed after its retirement is one made with such a copy.
    """
    retired = _moment(retired_at)
    completed = _moment(receipt.get("completed_at"))
    if retired is None:
        return f"signed with key {key}, whose Retired-At ({retired_at}) is no moment"
    if completed is None:
        return (
            f"signed with key {key}, retired at {retired_at}, and it gives no completed_at "
            "to show it was signed before then"
        )
    if completed > retired:
        return (
            f"completed at {receipt['completed_at']}, but signed with key {key}, retired at "
            f"{retired_at}: a retired key signs nothing after its retirement (this one may "
            "have been copied)"
        )
    return ""
