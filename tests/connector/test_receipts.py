"""Receipts: Ed25519 signatures over canonical JSON, the sealed key, tamper detection."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.crypto import Keyring
from connector.errors import ReceiptError
from connector.receipts import (
    LEGACY_KEY_FILE,
    LOCK_FILE,
    ReceiptSigner,
    canonical,
    key_id,
    listed_keys_in,
    load_public_key,
    retire_replaced,
    verify_receipt,
)

RECEIPT = {
    "version": 1,
    "request_id": "er-20260105-0a1b2c3d",
    "kind": "erase",
    "subject_id": "0123456789abcdef0123456789abcdef",
    "systems": [
        {"system": "crm", "status": "verified_absent", "endpoint": "POST /gdpr-delete"},
        {"system": "shop", "status": "verified_absent", "reversible": False, "note": "ok é"},
    ],
}


@pytest.fixture
def signer(tmp_path: Path) -> ReceiptSigner:
    return ReceiptSigner(tmp_path / "receipt-signing.key", Keyring(bytes(range(32))))


def test_signed_receipt_verifies_with_the_public_key(signer: ReceiptSigner) -> None:
    """A fresh receipt verifies, as signed and with the trailing newline `print` adds."""
    text = signer.sign(RECEIPT)
    public = load_public_key(signer.public_key_pem().encode())
    for data in (text.encode(), text.encode() + b"\n"):
        result = verify_receipt(data, public)
        assert result.ok, result.problem
        assert result.receipt == RECEIPT


def test_every_single_changed_byte_fails_verification(signer: ReceiptSigner) -> None:
    """Changing any one byte anywhere in the receipt (content, keys, signature) is detected."""
    data = signer.sign(RECEIPT).encode()
    public = signer.public_key
    for position in range(len(data)):
        for flip in (0x01, 0x20):
            edited = bytearray(data)
            edited[position] ^= flip
            assert not verify_receipt(bytes(edited), public).ok, (position, flip)


def test_pretty_printed_copy_is_refused(signer: ReceiptSigner) -> None:
    """Re-indenting a receipt changes its bytes, so it no longer counts as the signed document."""
    document = json.loads(signer.sign(RECEIPT))
    result = verify_receipt(json.dumps(document, indent=2).encode(), signer.public_key)
    assert not result.ok and "canonical" in result.problem


def test_receipt_signed_by_another_key_fails(signer: ReceiptSigner, tmp_path: Path) -> None:
    """A receipt checked against another deployment's key does not verify."""
    other = ReceiptSigner(tmp_path / "other.key", Keyring(bytes(32)))
    result = verify_receipt(signer.sign(RECEIPT).encode(), other.public_key)
    assert not result.ok and "another key" in result.problem


def test_a_receipt_completed_after_its_key_was_retired_is_refused(signer: ReceiptSigner) -> None:
    """A retired key signs nothing new: a receipt it signed that says it was completed
    after the retirement is refused, saying why; one completed before (or in the very
    second) still verifies. So is one that gives no completion time at all."""
    retired = "2026-03-03T09:00:00+00:00"
    for completed, ok in (
        ("2026-03-03T08:59:59+00:00", True),
        (retired, True),
        ("2026-03-03T10:00:01+01:00", False),
        ("2026-03-04T09:00:00+00:00", False),
        (None, False),
    ):
        body = {**RECEIPT, "completed_at": completed} if completed else RECEIPT
        result = verify_receipt(signer.sign(body).encode(), signer.public_key, retired_at=retired)
        assert result.ok is ok, (completed, result.problem)
        if not ok:
            assert f"retired at {retired}" in result.problem and signer_id(signer) in result.problem
    assert verify_receipt(
        signer.sign({**RECEIPT, "completed_at": "2030-01-01"}).encode(), signer.public_key
    ).ok


def test_a_retired_key_is_kept_with_when_it_was_retired(signer: ReceiptSigner) -> None:
    """`rotate` keeps the retired key's public half with a Retired-At line before the PEM
    (explanatory text PEM readers skip): the file is what a third party needs to apply the
    rule, and it travels with backups. The key in use is listed last, with no such line."""
    old = signer_id(signer)
    signer.rotate("2026-03-03T09:00:00+00:00")
    kept = signer.retired_dir / f"{old}.pem"
    assert kept.read_text().startswith(f"Key-Id: {old}\nRetired-At: 2026-03-03T09:00:00+00:00\n")
    assert {p.name for p in signer.retired_dir.glob("*.pem")} == {
        kept.name,
        f"{signer_id(signer)}.pem",
    }
    assert key_id(load_public_key(kept.read_bytes())) == old
    listed = signer.listed_keys()
    assert [(k.key_id, k.retired_at) for k in listed] == [
        (old, "2026-03-03T09:00:00+00:00"),
        (signer_id(signer), None),
    ]
    again = listed_keys_in("".join(k.pem() for k in listed).encode())
    assert [(k.key_id, k.retired_at) for k in again] == [(k.key_id, k.retired_at) for k in listed]


def test_a_signer_signs_with_the_key_another_process_rotated_to(
    signer: ReceiptSigner,
) -> None:
    """The daemon's signer loaded the key before `dsr rotate-key` ran in another process:
    it signs with the new key from then on, not the retired one it held, whose receipts
    completed after the retirement would be refused."""
    daemon = ReceiptSigner(signer.key_path, Keyring(bytes(range(32))))
    daemon.sign(RECEIPT)
    _, new = signer.rotate()
    assert json.loads(daemon.sign(RECEIPT))["key_id"] == new


def test_key_is_created_once_sealed_and_private(signer: ReceiptSigner) -> None:
    """The key file is 0600, holds no clear key, and a second signer loads the same key."""
    pem = signer.public_key_pem()
    assert signer.key_path.stat().st_mode & 0o777 == 0o600
    raw = signer.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert raw not in signer.key_path.read_bytes()
    again = ReceiptSigner(signer.key_path, Keyring(bytes(range(32))))
    assert again.public_key_pem() == pem


def test_key_sealed_with_another_master_key_is_a_clear_error(signer: ReceiptSigner) -> None:
    """Opening the key with another store's keys raises ReceiptError naming the file and
    saying what to do."""
    signer.public_key_pem()
    wrong = ReceiptSigner(signer.key_path, Keyring(bytes(32)))
    with pytest.raises(ReceiptError, match=r"receipt-signing\.key") as caught:
        wrong.public_key_pem()
    assert "not this store's" in str(caught.value) and "move this one aside" in str(caught.value)


def test_each_store_in_a_folder_has_a_key_file_of_its_own(tmp_path: Path) -> None:
    """Stores side by side, even under the same keys, sign with keys of their own, kept in
    files named after each store; a rotation of one leaves the other's history alone."""
    keyring = Keyring(bytes(range(32)))
    first = ReceiptSigner.for_store(tmp_path / "klantsync.db", keyring)
    second = ReceiptSigner.for_store(tmp_path / "test.db", keyring)
    assert first.public_key_pem() != second.public_key_pem()
    assert first.key_path == tmp_path / "klantsync.db.receipt-signing.key"
    assert second.key_path == tmp_path / "test.db.receipt-signing.key"
    assert first.staged_path.name == "klantsync.db.receipt-signing.key.rotating"
    first.rotate()
    assert len(first.public_keys()) == 2 and len(second.public_keys()) == 1
    assert first.retired_dir == tmp_path / "klantsync.db.receipt-keys"
    assert not (tmp_path / LEGACY_KEY_FILE).exists()


def test_a_key_file_is_made_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some filesystems refuse os.link; the key is then created exclusively in place."""

    def no_links(_src: object, _dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("connector.privatefile.os.link", no_links)
    keyring = Keyring(bytes(range(32)))
    signer = ReceiptSigner.for_store(tmp_path / "klantsync.db", keyring)
    pem = signer.public_key_pem()
    assert signer.key_path.stat().st_mode & 0o777 == 0o600
    assert ReceiptSigner.for_store(tmp_path / "klantsync.db", keyring).public_key_pem() == pem
    assert {p.name for p in tmp_path.iterdir()} == {signer.key_path.name, signer.retired_dir.name}


def signer_id(signer: ReceiptSigner) -> str:
    return key_id(signer.public_key)


def test_a_rotation_that_dies_writing_the_retired_key_leaves_receipts_verifiable(
    signer: ReceiptSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dsr rotate-key` killed while writing the retired key's public half (written in
    place, it was left torn) made every receipt check fail from then on, the current key's
    included: a file is now complete on disk before it takes its name."""
    document = signer.sign({"request_id": "er-1"})

    class Killed(BaseException):
        pass

    def torn(fd: int, data: bytes, path: object, mtime_ns: int | None = None) -> None:
        with open(fd, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr("connector.privatefile.fill", torn)
        with pytest.raises(Killed):
            signer.rotate()
    keys = signer.public_keys()  # every key, the retired ones read from their files
    assert all(
        verify_receipt(document.encode(), key).ok is (k == signer_id(signer))
        for k, key in keys.items()
    )
    leftovers = [p.name for p in signer.key_path.parent.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_a_shared_key_file_that_is_another_stores_is_left_alone(tmp_path: Path) -> None:
    """The shared file of earlier versions that does not open with a store's keys is another
    store's: the store makes its own key and the file stays as it was, for its owner."""
    shared = ReceiptSigner(tmp_path / LEGACY_KEY_FILE, Keyring(bytes(32)))
    theirs = shared.public_key_pem()
    sealed = shared.key_path.read_bytes()
    ours = ReceiptSigner.for_store(tmp_path / "klantsync.db", Keyring(bytes(range(32))))
    assert ours.public_key_pem() != theirs
    assert shared.key_path.read_bytes() == sealed
    owner = ReceiptSigner.for_store(tmp_path / "theirs.db", Keyring(bytes(32)))
    assert owner.public_key_pem() == theirs  # adopted by the store whose keys open it


def test_a_master_key_rotation_an_earlier_version_left_half_done_is_settled_on_adoption(
    tmp_path: Path,
) -> None:
    """An earlier version's rotation committed, then stopped before renaming the staged
    ``receipt-signing.key.rotating``: the store, now under its new keys, adopts the staged
    copy (and removes it: only its keys open it), leaving the shared file as it was."""
    old, new = Keyring(bytes(range(32))), Keyring(bytes(32))
    shared = ReceiptSigner(tmp_path / LEGACY_KEY_FILE, old)
    public = shared.public_key_pem()
    assert shared.stage_reseal(new)
    sealed = shared.key_path.read_bytes()
    ours = ReceiptSigner.for_store(tmp_path / "klantsync.db", new)
    assert ours.public_key_pem() == public
    assert not shared.staged_path.exists()
    assert shared.key_path.read_bytes() == sealed
    assert ReceiptSigner(ours.key_path, new).public_key_pem() == public


def test_non_ed25519_public_key_is_refused() -> None:
    """verify-receipt --public-key with an EC key or garbage fails with a clear error."""
    ec_pem = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ReceiptError, match="Ed25519"):
        load_public_key(ec_pem)
    with pytest.raises(ReceiptError, match="PEM"):
        load_public_key(b"not a key")


def test_canonical_json_is_sorted_compact_ascii() -> None:
    """The signed form has sorted keys, no spaces and escapes non-ASCII characters."""
    assert canonical({"b": 1, "a": "é"}) == b'{"a":"\\u00e9","b":1}'


def test_the_key_in_use_is_kept_in_clear_with_when_it_was_made_before_it_signs(
    signer: ReceiptSigner,
) -> None:
    """The public half of the key in use is in the folder of known keys, with a Made-At
    line, before the first receipt is signed: a restore that cannot open the sealed key file
    finds it there. Retired, it keeps when it was made, and the new key is kept as made at
    the rotation."""
    signer.sign(RECEIPT)
    first = signer_id(signer)
    (mine,) = listed_keys_in((signer.retired_dir / f"{first}.pem").read_bytes())
    assert mine.retired_at is None and mine.made_at is not None
    assert signer.listed_keys()[-1].made_at == mine.made_at
    signer.rotate("2026-03-03T09:00:00+00:00")
    retired, current = signer.listed_keys()
    assert (retired.key_id, retired.made_at) == (first, mine.made_at)
    assert retired.retired_at == "2026-03-03T09:00:00+00:00"
    assert current.key_id == signer_id(signer) and current.retired_at is None
    assert current.made_at == "2026-03-03T09:00:00+00:00"


def test_a_key_a_restore_replaced_is_retired_at_the_restore_and_no_other(
    signer: ReceiptSigner, tmp_path: Path
) -> None:
    """`retire_replaced` retires each key kept as in use but the one the restored store
    signs with; a key already retired keeps its moment, and one kept by an earlier version
    (no Made-At: not known to have been in use) is left for the audit trail to date."""
    signer.sign(RECEIPT)
    replaced = signer_id(signer)
    signer.rotate("2026-03-03T09:00:00+00:00")
    in_use = signer_id(signer)
    other = ReceiptSigner(tmp_path / "other.key", Keyring(bytes(range(32))))
    earlier = signer.retired_dir / f"{signer_id(other)}.pem"
    earlier.write_text(other.public_key_pem())
    # The store is put back with a key the folder holds as retired: the replaced key, in use
    # until the restore, is the one retired by it.
    assert retire_replaced(signer.retired_dir, replaced, "2026-04-01T10:00:00+00:00") == [in_use]
    kept = {
        k.key_id: k
        for k in listed_keys_in(
            b"".join(p.read_bytes() for p in sorted(signer.retired_dir.glob("*.pem")))
        )
    }
    assert kept[in_use].retired_at == "2026-04-01T10:00:00+00:00"
    assert kept[in_use].made_at == "2026-03-03T09:00:00+00:00"
    assert kept[replaced].retired_at == "2026-03-03T09:00:00+00:00"
    assert kept[signer_id(other)].retired_at is None


def test_a_key_a_killed_rotation_retired_is_replaced_at_its_next_load_and_keeps_its_moment(
    signer: ReceiptSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dsr rotate-key` killed after writing the old key's retired file and before the new
    key was in place left the retired key signing on: the next load makes a new key at once
    (said to ``on_rotate``, to be audited), and the old key keeps its Retired-At, which a
    later rotation does not move either."""
    before = signer.sign({**RECEIPT, "completed_at": "2026-03-03T08:00:00+00:00"})
    old = signer_id(signer)

    class Killed(BaseException):
        pass

    def killed() -> None:
        raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(Ed25519PrivateKey, "generate", killed)
        signer.rotate("2026-03-03T09:00:00+00:00")
    told: list[tuple[str, str]] = []
    again = ReceiptSigner(
        signer.key_path, Keyring(bytes(range(32))), on_rotate=lambda o, n: told.append((o, n))
    )
    new = json.loads(again.sign(RECEIPT))["key_id"]
    assert new != old and told == [(old, new)]
    again.rotate()
    kept = {k.key_id: k for k in again.listed_keys()}
    assert kept[old].retired_at == "2026-03-03T09:00:00+00:00"
    assert verify_receipt(before.encode(), kept[old].public, retired_at=kept[old].retired_at).ok


def test_the_key_loads_where_the_lock_of_its_folder_may_only_be_read(
    signer: ReceiptSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock file of the kept keys' folder was opened for writing: one made first by
    root (a `dsr public-key` run as root), or on a folder remounted read-only, failed every
    other signer's load, and the daemon's receipts with it."""
    pem = signer.public_key_pem()  # makes the key, the folder and its lock file
    assert (signer.retired_dir / "lock").exists()
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if Path(path).name == "lock" and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    again = ReceiptSigner(signer.key_path, Keyring(bytes(range(32))))
    assert again.public_key_pem() == pem


def test_a_signer_waiting_for_another_process_s_hold_on_the_keys_says_so_once(
    signer: ReceiptSigner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Loading the key waits while another process holds the kept keys' lock (a load or a
    `dsr rotate-key`, a few file writes). It waited in a blocking call without a word, for
    ever behind a process stopped while holding it: an operator saw `dsr erase` hang, and
    not why. It now says once, after two seconds, what it waits for and which lock file is
    held, goes on waiting, and loads the key once the holder lets go."""
    signer.retired_dir.mkdir(parents=True, exist_ok=True)
    lock = signer.retired_dir / LOCK_FILE
    other = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)  # another process's hold
    fcntl.flock(other, fcntl.LOCK_EX)
    pauses: list[float] = []

    def pause(length: float) -> None:
        pauses.append(length)
        if sum(pauses) >= 10:
            os.close(other)  # the holder finishes

    def hung(_signum: int, _frame: Any) -> None:
        raise AssertionError("still waiting for the lock in a blocking call")

    monkeypatch.setattr("connector.lock.time.sleep", pause)
    caplog.set_level(logging.WARNING)
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(3)
    try:
        pem = signer.public_key_pem()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and sum(pauses) >= 10
    said = [r for r in caplog.records if "receipt signing keys" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert "rotate-key" in said[0].getMessage()
    assert said[0].lock_file == str(lock)
