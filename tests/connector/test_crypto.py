"""Keys: subject ids and payload hashes are standard HMAC-SHA256, however they are computed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from connector.crypto import (
    CLOAKED_ID_PREFIX,
    DecryptionError,
    Keyring,
    _derive,
    _Hmac,
    decode_master_key,
)


@pytest.mark.parametrize("key_length", [0, 16, 32, 64, 65, 200])
def test_precomputed_hmac_is_rfc_2104_hmac(key_length: int) -> None:
    """The padded-key shortcut gives hmac.new's digest for short, block-sized and long keys."""
    key = bytes(range(256))[:key_length]
    for message in (b"", b"a", b"x" * 64, b"klant@example.nl" * 40):
        assert _Hmac(key).hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_subject_ids_and_payload_hashes_are_keyed_hmacs() -> None:
    """A subject id and a payload hash are HMAC-SHA256 under their derived keys, truncated."""
    master = bytes(range(32))
    keyring = Keyring(master)
    email = "jan@example.nl"
    subject_key = _derive(master, "subject")
    assert (
        keyring.subject_id(email)
        == hmac.new(subject_key, email.encode(), hashlib.sha256).hexdigest()[:32]
    )
    payload = {"b": 1, "a": "x"}
    message = b"crm\0" + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    payload_key = _derive(master, "payload")
    assert (
        keyring.payload_hash("crm", payload)
        == hmac.new(payload_key, message, hashlib.sha256).hexdigest()[:32]
    )


def test_data_keys_wrapped_open_only_under_their_master_key() -> None:
    """The keyset round-trips under its master key and does not open under another."""
    from connector.crypto import DataKeys, DecryptionError, unwrap_data_keys, wrap_data_keys

    master, other = bytes(range(32)), bytes(32)
    keys = DataKeys.derive(master).with_new_outbox_key()
    blob = wrap_data_keys(master, keys)
    assert unwrap_data_keys(master, blob) == keys
    assert keys.outbox not in blob and keys.subject not in blob
    with pytest.raises(DecryptionError):
        unwrap_data_keys(other, blob)
    assert Keyring(keys=keys).subject_id("a@b.nl") == Keyring(master).subject_id("a@b.nl")
    with pytest.raises(TypeError):
        Keyring()
    with pytest.raises(TypeError):
        Keyring(master, keys=keys)


def test_a_cloaked_id_is_keyed_stable_reversible_and_bound_to_its_system() -> None:
    """Mailchimp's member id (the MD5 of the e-mail) is kept in a form only the keys open."""
    keyring = Keyring(bytes(range(32)))
    member = hashlib.md5(b"jan@example.nl").hexdigest()  # noqa: S324 - Mailchimp's own scheme
    cloaked = keyring.cloak_id("news", member)
    assert cloaked.startswith(CLOAKED_ID_PREFIX) and member not in cloaked
    assert keyring.cloak_id("news", member) == cloaked  # the same id, found by value
    assert keyring.uncloak_id("news", cloaked) == member
    assert keyring.uncloak_id("news", member) == member  # stored before cloaking
    assert Keyring(bytes(range(1, 33))).cloak_id("news", member) != cloaked
    with pytest.raises(DecryptionError):
        keyring.uncloak_id("other", cloaked)
    with pytest.raises(DecryptionError):
        keyring.uncloak_id("news", cloaked[:-2] + "AA")


#: 32 bytes whose urlsafe base64 holds both "-" and "_", and so "+" and "/" in the standard one.
_KEY_BYTES = bytes.fromhex(
    "fbff bffe 0001 02fb effe 0304 05fb ff00 fbef bf06 0708 fbfe ff09 0a0b 0c0d 0e0f"
)


@pytest.mark.parametrize(
    "text",
    [
        base64.urlsafe_b64encode(_KEY_BYTES).decode(),  # as `keygen` prints it
        base64.urlsafe_b64encode(_KEY_BYTES).decode().rstrip("="),  # the "=" left off
        base64.urlsafe_b64encode(_KEY_BYTES).decode() + "\n",  # a key file's last line
        base64.b64encode(_KEY_BYTES).decode(),  # `openssl rand -base64 32` makes them so
        # The last character's spare bits set: no encoder writes it, yet it is these bytes.
        base64.urlsafe_b64encode(_KEY_BYTES).decode()[:42] + "9=",  # "8" is 111100, "9" 111101
    ],
    ids=["keygen", "unpadded", "line-break", "standard-alphabet", "spare-bits-set"],
)
def test_a_master_key_is_32_bytes_in_base64_with_or_without_its_closing_equals_sign(
    text: str,
) -> None:
    """The keys that loaded before, well formed, still load, and as the same 32 bytes; a
    key without its "=" is the same key, not "not urlsafe base64"."""
    assert decode_master_key(text) == _KEY_BYTES


_KEY = base64.urlsafe_b64encode(_KEY_BYTES).decode()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (_KEY + "junk", "goes on after an ="),
        (_KEY + "=junk", "goes on after an ="),
        (_KEY.rstrip("=") + "junk", "47 characters"),
        (_KEY[:20] + "!!" + _KEY[20:], "base64 does not use"),
        (_KEY[:20] + " " + _KEY[20:], "a space or a line break"),
        (_KEY[:20] + "é" + _KEY[21:], "base64 does not use"),
        (_KEY + "=", "more than one ="),
        (_KEY[:20] + "+" + _KEY[21:], "mixes"),
        (base64.urlsafe_b64encode(b"x" * 16).decode(), "22 characters"),
        (base64.urlsafe_b64encode(b"x" * 33).decode(), "44 characters"),
        ("", "empty"),
    ],
    ids=[
        "junk-after",
        "junk-after-equals",
        "junk-unpadded",
        "stray-characters",
        "space-inside",
        "non-ascii",
        "double-equals",
        "mixed-alphabets",
        "16-bytes",
        "33-bytes",
        "empty",
    ],
)
def test_a_malformed_master_key_is_refused_saying_what_a_key_is_without_quoting_it(
    text: str, why: str
) -> None:
    """Base64 decoders pass over junk and stop at the first "=": a key with text pasted
    after it, or a character changed, loaded as some key. Each is refused, saying what is
    wrong, what a key looks like and how to make one; never the text given."""
    with pytest.raises(ValueError, match="malformed") as caught:
        decode_master_key(text)
    message = str(caught.value)
    assert why in message and "klantsync keygen" in message and "43" in message
    for fragment in (text[:8], text[20:28], text[-8:]):
        assert not fragment.strip() or fragment not in message
