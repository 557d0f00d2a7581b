"""Keys and the cryptography built on them.

One master key (32 random bytes, urlsafe base64, from ``keys.source``) is the root. A store
starts with data keys derived from it with HKDF under their own labels, so the keys of
different purposes are independent and one secret is all an operator backs up:

- ``subject``: HMAC-SHA256 key for subject ids (pseudonymous ids of normalised e-mails/phones);
- ``payload``: HMAC key for delivered-payload hashes (a plain hash of a payload holding an
  e-mail could be reversed by guessing e-mails; a keyed one cannot);
- ``outbox``: AES-256-GCM key for payloads at rest (outbox, dead letters, manifests, jobs,
  the receipt signing key).

The store keeps those data keys wrapped by the master key (:mod:`connector.keyset`): envelope
encryption, so the master key can be replaced without changing a subject id, and a store
refuses a master key that is not its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from connector import jsonutil

__all__ = [
    "BUNDLE_PATH_CONTEXT",
    "CLOAKED_ID_PREFIX",
    "JOB_CONTEXT",
    "RECEIPT_KEY_CONTEXT",
    "DataKeys",
    "DecryptionError",
    "Keyring",
    "decode_master_key",
    "generate_master_key",
    "manifest_context",
    "master_fingerprint",
    "outbox_context",
    "unwrap_data_keys",
    "wrap_data_keys",
]

NONCE_BYTES = 12
_WRAP_CONTEXT = b"klantsync/keyset/v1"


class DecryptionError(Exception):
    """A sealed blob did not decrypt: wrong key, tampered, or sealed for another context."""


def generate_master_key() -> str:
    """A new master key: urlsafe base64 text of 32 random bytes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


#: A master key as ``klantsync keygen`` prints it: 32 bytes in urlsafe base64, 43 characters
#: and a closing "=" that may be left off. The 43rd carries two bits past the 32nd byte, which
#: an encoder leaves at zero: it is one of these 16. The standard alphabet ("+" and "/" for
#: "-" and "_") is taken too, not mixed with it: ``openssl rand -base64 32`` makes keys so,
#: and stores bound to one must keep opening.
#: 43 characters of one base64 alphabet and an optional "=". The last character's low bits
#: carry no key bits: a form no encoder makes (a last character changed by hand) decodes to
#: the same 32 bytes, and is that key; refused, it locked a store out over nothing.
_MASTER_KEY = re.compile(r"[A-Za-z0-9_-]{43}=?|[A-Za-z0-9+/]{43}=?")
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/")
_WHAT_A_KEY_IS = (
    "a master key is 32 random bytes in urlsafe base64, 43 letters, digits, - and _ and a "
    "closing =, as `klantsync keygen` prints it: make one with it"
)


def decode_master_key(text: str) -> bytes:
    """Decode and check a master key; raises ``ValueError`` saying what is wrong (not the key).

    Strict: a lenient base64 decoder passes over what is not base64 and stops at the first
    "=", so a value that is no key (a second key appended to the file, text pasted after it,
    stray characters in it) loaded as one, unsaid. The closing "=" is the encoding's, not
    the key's: a key without it (trimmed by a tool, or as other tools print them) is the same.
    """
    key = text.strip()  # a key file's closing line break (resolve_secret strips it too)
    if _MASTER_KEY.fullmatch(key) is None:
        raise ValueError(f"is malformed ({_what_is_wrong(key)}): {_WHAT_A_KEY_IS}")
    return base64.urlsafe_b64decode(key.rstrip("=") + "=")


def _what_is_wrong(key: str) -> str:
    """Why ``key`` is no master key, in words that quote none of it."""
    body = key.rstrip("=")
    if not key:
        return "it is empty"
    if any(char.isspace() for char in key):
        return "it holds a space or a line break"
    if "=" in body:
        return "it goes on after an ="
    if not set(body) <= _ALPHABET:
        return "it holds a character base64 does not use"
    if len(body) != 43:
        return f"it is {len(body)} characters long, not counting a closing ="
    if len(key) - len(body) > 1:
        return "it ends in more than one ="
    return "it mixes - and _ with + and /"


class _Hmac:
    """HMAC-SHA256 under one fixed key, with the key's two padded blocks hashed once.

    RFC 2104: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)). Hashing the padded key blocks
    once and copying those states per message gives the same digest as ``hmac.new`` at under
    half the cost, which matters where a sync computes two per record.
    """

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def _derive(master: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"klantsync/{label}".encode()
    ).derive(master)


# What each sealed blob is bound to (AES-GCM associated data): a blob moved to another place
# does not open there. Named once here, for the modules that seal and for key rotation.


def outbox_context(system: str) -> str:
    """A queued payload (and its dead letter) for one destination system."""
    return f"outbox:{system}"


def manifest_context(request_id: str) -> str:
    """A data subject request's manifest (e-mail, phone, every system's ids)."""
    return f"dsr-manifest:{request_id}"


#: Marks a system id the store keeps cloaked (:meth:`Keyring.cloak_id`).
CLOAKED_ID_PREFIX = "k1."
#: A queued job's parameters (connector/jobs.py).
JOB_CONTEXT = "job"
#: The receipt signing key file (connector/receipts.py).
RECEIPT_KEY_CONTEXT = "receipt-signing-key"
#: Where an access bundle was written (connector/retention.py).
BUNDLE_PATH_CONTEXT = "access-bundle-path"


def master_fingerprint(master: bytes) -> str:
    """16 hex digits that tell master keys apart in messages and the audit log (not the key)."""
    return hashlib.sha256(_derive(master, "fingerprint")).hexdigest()[:16]


class DataKeys(NamedTuple):
    """The keys the data is kept under; what the store holds wrapped by the master key."""

    subject: bytes
    payload: bytes
    outbox: bytes

    @classmethod
    def derive(cls, master: bytes) -> DataKeys:
        """A store's first data keys: derived from its master key (as before there was a keyset)."""
        return cls(
            _derive(master, "subject"), _derive(master, "payload"), _derive(master, "outbox")
        )

    def with_new_outbox_key(self) -> DataKeys:
        """The same ids and hashes, a fresh random key for what is sealed at rest."""
        return self._replace(outbox=secrets.token_bytes(32))


def wrap_data_keys(master: bytes, keys: DataKeys) -> bytes:
    """``keys`` sealed (AES-256-GCM) under a key-encryption key derived from ``master``."""
    plain = jsonutil.dumps(
        {name: base64.b64encode(value).decode() for name, value in keys._asdict().items()}
    )
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(_derive(master, "keyset")).encrypt(nonce, plain, _WRAP_CONTEXT)


def unwrap_data_keys(master: bytes, blob: bytes) -> DataKeys:
    """What :func:`wrap_data_keys` sealed; :class:`DecryptionError` under another master key."""
    kek = AESGCM(_derive(master, "keyset"))
    try:
        plain = kek.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _WRAP_CONTEXT)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("the data keys do not open with this master key") from exc
    fields = jsonutil.loads(plain)
    return DataKeys(**{name: base64.b64decode(fields[name]) for name in DataKeys._fields})


class Keyring:
    """The data keys and the operations that use them.

    ``Keyring(master)`` holds the keys derived from ``master``: a new store's keys, and what
    a test needs. A command gets the store's own keys from :func:`connector.keyset.open_keyring`.
    """

    def __init__(self, master: bytes | None = None, *, keys: DataKeys | None = None) -> None:
        if keys is None:
            if master is None:
                raise TypeError("Keyring needs a master key or data keys")
            keys = DataKeys.derive(master)
        elif master is not None:
            raise TypeError("Keyring takes a master key or data keys, not both")
        self.keys = keys
        self._subject_hmac = _Hmac(self.keys.subject)
        self._payload_hmac = _Hmac(self.keys.payload)
        self._aead = AESGCM(self.keys.outbox)
        # From the subject key, which a master key rotation keeps: a cloaked id stays the
        # same for as long as the subject ids do (it is looked up by value, as they are).
        self._siv = AESSIV(
            HKDF(
                algorithm=hashes.SHA256(), length=64, salt=None, info=b"klantsync/system-id"
            ).derive(self.keys.subject)
        )
        # From the key of what is kept sealed, which a master key rotation renews: a master
        # key that leaked stops vouching for the audit chain once it is rotated away
        # (the rotation carries the chain's MACs over, connector/audit.py).
        self._audit_hmac = _Hmac(_derive(self.keys.outbox, "audit-chain"))

    def cloak_id(self, system: str, value: str) -> str:
        """A system's id as the store keeps it when the id is made from personal data.

        Mailchimp names a member by the MD5 of their e-mail: kept as it is, anyone holding
        the store could test an address against it. Cloaked, it is keyed (AES-SIV), still
        the same for the same id (so it can be looked up), and :meth:`uncloak_id` gives it
        back for calls to the system.
        """
        sealed = self._siv.encrypt(value.encode(), [system.encode()])
        return CLOAKED_ID_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def uncloak_id(self, system: str, value: str) -> str:
        """The id :meth:`cloak_id` cloaked; an id without the prefix is returned as it is."""
        if not value.startswith(CLOAKED_ID_PREFIX):
            return value
        text = value[len(CLOAKED_ID_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return self._siv.decrypt(raw, [system.encode()]).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("cloaked id did not verify") from exc

    def audit_mac(self, message: bytes) -> str:
        """HMAC-SHA256 (hex) of ``message`` under the audit chain's key: what the chain's head
        and anchor carry, so that whoever can write the store but has not the key cannot
        move them unseen."""
        return self._audit_hmac.hexdigest(message)

    def subject_id(self, normalised: str) -> str:
        """Pseudonymous id of a normalised e-mail or E.164 phone (128-bit keyed HMAC, hex)."""
        return self._subject_hmac.hexdigest(normalised.encode())[:32]

    def payload_hash(self, system: str, payload: Any) -> str:
        """Keyed hash of what a system was sent, for change detection."""
        # Canonical: sorted keys, no spaces, UTF-8; values JSON has no type for are hashed
        # as their str(). The same payload always hashes the same.
        data = jsonutil.dumps(payload, sort_keys=True, default=str)
        return self._payload_hmac.hexdigest(system.encode() + b"\0" + data)[:32]

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """AES-GCM encrypt; ``context`` (e.g. ``outbox:crm``) is bound as associated data."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        """Decrypt what :meth:`seal` produced under the same context."""
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("sealed data did not verify") from exc

    def seal_json(self, value: Any, context: str) -> bytes:
        """:meth:`seal` for JSON-serialisable values."""
        return self.seal(jsonutil.dumps(value), context)

    def open_json(self, blob: bytes, context: str) -> Any:
        """:meth:`open` for values sealed with :meth:`seal_json`."""
        return jsonutil.loads(self.open(blob, context))
