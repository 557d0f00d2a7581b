"""Signed receipts: Ed25519 over canonical JSON, with a signing key kept sealed by the store.

A receipt is one line of canonical JSON (sorted keys, compact separators, ASCII only)::

    {"algorithm":"Ed25519","key_id":"...","receipt":{...},"signature":"<base64>"}

The signature covers the canonical JSON of the ``receipt`` object. Verification also
insists that the file *is* canonical (one optional trailing newline allowed): otherwise a byte
changed in insignificant whitespace would still verify, and "one changed byte fails" is the
property an auditor can check by hand.

The private key is generated on first use and written next to the store, sealed with the
:class:`~connector.crypto.Keyring` (so it is as safe as the outbox and needs no extra secret),
file mode 0600. The public key is exported as PEM for anyone who must check receipts.
"""

from __future__ import annotations

import base64
import binascii
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

__all__ = [
    "KEY_FILE",
    "ReceiptSigner",
    "Verification",
    "canonical",
    "document_key_id",
    "key_id",
    "load_public_key",
    "verify_receipt",
]

#: File name of the sealed signing key, in the store's folder.
KEY_FILE = "receipt-signing.key"
ALGORITHM = "Ed25519"


def canonical(value: Any) -> bytes:
    """The one byte form that is signed: sorted keys, no spaces, ASCII escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key (SHA-256 of its raw bytes, 16 hex digits)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class ReceiptSigner:
    """Signs receipts with the deployment's Ed25519 key, creating the key on first use.

    Args:
        key_path: where the sealed key lives (``<store dir>/receipt-signing.key``).
        keyring: seals and opens the key file.
    """

    def __init__(self, key_path: Path, keyring: Keyring) -> None:
        self.key_path = key_path
        self._keyring = keyring
        self._private: Ed25519PrivateKey | None = None

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
        return self.key_path.parent / "receipt-keys"

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key this deployment has signed with, by key id (current included)."""
        keys: dict[str, Ed25519PublicKey] = {}
        if self.retired_dir.is_dir():
            for path in sorted(self.retired_dir.glob("*.pem")):
                public = load_public_key(path.read_bytes())
                keys[key_id(public)] = public
        current = self.public_key
        keys[key_id(current)] = current
        return keys

    def rotate(self) -> tuple[str, str]:
        """Retire the signing key for a new one; return ``(old key id, new key id)``.

        The old key's *public* half is kept (receipts it signed must stay verifiable); its
        private half is gone once the new sealed key file replaces it.
        """
        old = self.public_key
        old_id = key_id(old)
        self.retired_dir.mkdir(parents=True, exist_ok=True)
        (self.retired_dir / f"{old_id}.pem").write_bytes(
            old.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        staging = self.key_path.with_suffix(".new")
        _write_sealed(staging, self._keyring, raw)
        os.replace(staging, self.key_path)  # atomic: never a moment without a key file
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
        """
        self._settle_staged()
        if not self.key_path.exists():
            return False
        raw = self._keyring.open(self.key_path.read_bytes(), RECEIPT_KEY_CONTEXT)
        _write_sealed(self.staged_path, keyring, raw)
        # The same signing key, sealed anew: its age (the daemon's rotation reminder reads the
        # file's mtime) stays the key's own.
        made = self.key_path.stat()
        os.utime(self.staged_path, ns=(made.st_atime_ns, made.st_mtime_ns))
        return True

    def finish_reseal(self) -> None:
        """The store's new keys are committed: the staged key file becomes the key file."""
        os.replace(self.staged_path, self.key_path)

    def _settle_staged(self) -> None:
        staged = self.staged_path
        if not staged.exists():
            return
        try:
            self._keyring.open(staged.read_bytes(), RECEIPT_KEY_CONTEXT)
        except DecryptionError:
            staged.unlink(missing_ok=True)  # that rotation never committed: the key file holds
        else:
            os.replace(staged, self.key_path)  # it committed, and stopped before the rename

    def _load_or_create(self) -> Ed25519PrivateKey:
        self._settle_staged()
        if not self.key_path.exists():
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # O_EXCL: two processes starting at once must not each write their own key.
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self._keyring.seal(raw, RECEIPT_KEY_CONTEXT))
                return key
        try:
            raw = self._keyring.open(self.key_path.read_bytes(), RECEIPT_KEY_CONTEXT)
            return Ed25519PrivateKey.from_private_bytes(raw)
        except (DecryptionError, ValueError) as exc:
            raise ReceiptError(
                f"{self.key_path}: the receipt signing key does not open with this master key"
            ) from exc


def _write_sealed(path: Path, keyring: Keyring, raw: bytes) -> None:
    """``raw`` sealed under ``keyring`` into ``path`` (0600, on disk before it is renamed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keyring.seal(raw, RECEIPT_KEY_CONTEXT))
        handle.flush()
        os.fsync(handle.fileno())


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
