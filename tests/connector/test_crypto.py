"""Keys: subject ids and payload hashes are standard HMAC-SHA256, however they are computed."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from connector.crypto import CLOAKED_ID_PREFIX, DecryptionError, Keyring, _derive, _Hmac


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
