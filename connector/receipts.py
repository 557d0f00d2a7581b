"""Signed receipts: Ed25519 over canonical JSON, with a signing key kept sealed by the store.

A receipt is one line of canonical JSON (sorted keys, compact separators, ASCII only)::

    {"algorithm":"Ed25519","key_id":"...","receipt":{...},"signature":"<base64>"}

The signature covers the canonical JSON of the ``receipt`` object. Verification also
insists that the file *is* canonical (one optional trailing newline allowed): otherwise a byte
changed in insignificant whitespace would still verify, and "one changed byte fails" is the
property an auditor can check by hand.

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
import hashlib
import json
import os
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
from connector.privatefile import create_private, write_private

__all__ = [
    "LEGACY_KEY_FILE",
    "NOT_THIS_STORES_KEY",
    "ReceiptSigner",
    "Verification",
    "canonical",
    "document_key_id",
    "key_id",
    "load_public_key",
    "receipt_key_path",
    "retired_keys_dir",
    "verify_receipt",
]

#: What a store's sealed signing key file is named: the store's file name, then this.
KEY_FILE_SUFFIX = ".receipt-signing.key"
#: The key file every store in a folder shared before each had its own; read, never written.
LEGACY_KEY_FILE = "receipt-signing.key"
ALGORITHM = "Ed25519"


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


class ReceiptSigner:
    """Signs receipts with the store's Ed25519 key, creating the key on first use.

    Args:
        key_path: where the sealed key lives (:func:`receipt_key_path` of the store).
        keyring: seals and opens the key file.
        adopt: a key file to take a copy of while ``key_path`` does not exist, if it opens
            with ``keyring`` (the shared file of earlier versions; see :meth:`for_store`).
    """

    def __init__(self, key_path: Path, keyring: Keyring, *, adopt: Path | None = None) -> None:
        self.key_path = key_path
        self._keyring = keyring
        self._adopt = adopt
        self._private: Ed25519PrivateKey | None = None

    @classmethod
    def for_store(cls, store_path: Path, keyring: Keyring) -> ReceiptSigner:
        """The signer of the store at ``store_path``, under the store's ``keyring``.

        A store that has no key file of its own yet takes a copy of the folder's shared
        ``receipt-signing.key`` (and the public halves of the keys it retired) if that opens
        with the store's keys: it is the key the store signed with until now. The shared file
        is left where it is, since another store in the folder may have signed with it too.
        One that does not open is another store's, and this store makes a key of its own.
        """
        return cls(receipt_key_path(store_path), keyring, adopt=store_path.parent / LEGACY_KEY_FILE)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        if self._private is None:
            self._private = self._load_or_create()
        return self._private

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
        # First: loading the key may adopt the shared file, and its retired keys with it.
        current = self.public_key
        keys: dict[str, Ed25519PublicKey] = {}
        if self.retired_dir.is_dir():
            for path in sorted(self.retired_dir.glob("*.pem")):
                public = load_public_key(path.read_bytes())
                keys[key_id(public)] = public
        keys[key_id(current)] = current
        return keys

    def rotate(self) -> tuple[str, str]:
        """Retire the signing key for a new one; return ``(old key id, new key id)``.

        The old key's *public* half is kept (receipts it signed must stay verifiable); its
        private half is gone once the new sealed key file replaces it.
        """
        old = self.public_key
        old_id = key_id(old)
        # Whole or not at all: a torn file here failed every receipt check that followed.
        write_private(
            self.retired_dir / f"{old_id}.pem",
            old.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # Renamed into place: never a moment without a key file.
        write_private(self.key_path, self._keyring.seal(raw, RECEIPT_KEY_CONTEXT))
        self._private = key
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


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_receipt`: ``ok``, and what is wrong when it is not."""

    ok: bool
    problem: str = ""
    receipt: dict[str, Any] | None = None


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


def verify_receipt(data: bytes, public: Ed25519PublicKey) -> Verification:
    """Check a receipt file's bytes against ``public``; never raises on bad input."""
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
    return Verification(True, receipt=receipt)
