"""The locks beside a store: one sync at a time, and who holds it said to whoever is refused."""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from connector import lock
from connector.errors import StoreError, StorePathError
from connector.lock import (
    DaemonLock,
    daemon_running,
    keys_alone,
    lock_path,
    sharing_keys,
    sync_lock_path,
    sync_running,
    syncing,
)
from connector.state import Store


def test_a_second_sync_is_refused_naming_the_one_that_runs(tmp_path: Path) -> None:
    """While a sync holds the lock another is refused, told who has it (pid) and to wait;
    once it ends the lock is free again."""
    store = tmp_path / "klantsync.db"
    with syncing(store, "sync"):
        assert sync_running(store)
        with pytest.raises(StoreError) as caught, syncing(store, "resync"):
            pass
        assert str(caught.value) == (
            f"{store}: another klantsync sync (pid {os.getpid()}) is syncing this store; run "
            "this again once it has finished (two syncs at once would pull and deliver the "
            "same records twice)"
        )
    assert not sync_running(store)
    with syncing(store, "sync"):
        pass


def test_a_sync_beside_the_daemon_is_told_to_hand_it_over_with_resync(tmp_path: Path) -> None:
    """The daemon holds the lock for its life; a sync is refused naming it and `resync`."""
    store = tmp_path / "klantsync.db"
    with syncing(store, "daemon"), pytest.raises(StoreError) as caught, syncing(store, "sync"):
        pass
    assert str(caught.value) == (
        f"{store}: the klantsync daemon (pid {os.getpid()}) runs on this store and syncs it; "
        "use `klantsync resync --system S` (or `--email E`), which hands the sync to it"
    )


def test_asking_whether_a_sync_runs_creates_nothing(tmp_path: Path) -> None:
    """`status` asks; a store folder without lock files keeps none."""
    store = tmp_path / "klantsync.db"
    assert not sync_running(store)
    assert not sync_lock_path(store).exists()
    assert list(tmp_path.iterdir()) == []


def _store_and_alias(tmp_path: Path) -> tuple[Path, Path]:
    """A store file and a second path to that same file (a symlink in another folder), as
    two configs (or a config and an operator's command line) may name one store."""
    (tmp_path / "data").mkdir()
    (tmp_path / "current").mkdir()
    store = tmp_path / "data" / "klantsync.db"
    store.write_bytes(b"")
    alias = tmp_path / "current" / "klantsync.db"
    alias.symlink_to(store)
    return store, alias


def test_a_second_daemon_reaching_the_store_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The daemon's lock lies beside the store file itself: a config naming the store through
    a symlink got a lock file of its own, a second daemon started, and a `resync` beside the
    daemon believed none ran and synced inline."""
    store, alias = _store_and_alias(tmp_path)
    with DaemonLock(store):
        assert daemon_running(alias)
        with pytest.raises(StoreError), DaemonLock(alias):
            pass


def test_a_sync_reaching_the_daemon_s_store_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The sync lock too: a `sync` whose config named the daemon's store through a symlink
    ran beside it, both pulling the same pages and delivering the same records."""
    store, alias = _store_and_alias(tmp_path)
    with syncing(store, "daemon"), pytest.raises(StoreError), syncing(alias, "sync"):
        pass


def test_a_store_not_made_yet_in_a_symlinked_folder_has_the_locks_of_its_real_folder(
    tmp_path: Path,
) -> None:
    """Before the store exists (the first start) its locks are those of its real folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "current").symlink_to(tmp_path / "data")
    store, alias = tmp_path / "data" / "klantsync.db", tmp_path / "current" / "klantsync.db"
    real = tmp_path.resolve() / "data" / "klantsync.db.daemon.lock"
    assert lock_path(alias) == lock_path(store) == real
    with syncing(alias, "daemon"):
        assert sync_running(store)
    assert not store.exists()


def _unreadable_to_this_user(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """``paths`` refuse to be opened for reading, as a daemon's lock files (0600) do for
    another user (the tests run as whoever they run as, root included)."""
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) in paths and flags == os.O_RDONLY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="the kernel's list of locks")
def test_a_lock_file_of_another_user_is_looked_up_in_the_kernel_s_list_of_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` or `resync` run as another user than the daemon may not open its lock files:
    asking whether a daemon or a sync runs crashed with a PermissionError. The kernel's
    list of locks answers instead."""
    store = tmp_path / "klantsync.db"
    with DaemonLock(store), syncing(store, "daemon"):
        _unreadable_to_this_user(monkeypatch, lock_path(store), sync_lock_path(store))
        assert daemon_running(store) and sync_running(store)
    assert not daemon_running(store) and not sync_running(store)


def test_a_lock_file_of_another_user_is_taken_as_held_where_no_list_of_locks_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the kernel's list (another system than Linux, a /proc hidden), the lock is
    held by the other user's process, pid unknown: a resync hands its work to the daemon
    rather than start a sync beside it."""
    store = tmp_path / "klantsync.db"
    with DaemonLock(store):
        pass  # the lock file stays, as a daemon leaves it
    monkeypatch.setattr(lock, "_KERNEL_LOCKS", tmp_path / "no-such-list")
    _unreadable_to_this_user(monkeypatch, lock_path(store))
    assert daemon_running(store)


def test_locks_on_a_path_that_cannot_hold_a_store_are_store_path_errors(tmp_path: Path) -> None:
    """Every lock beside a store whose folder cannot be made says so (StorePathError, exit 2),
    not with a traceback from mkdir."""
    (tmp_path / "state").write_text("a file")
    store = tmp_path / "state" / "klantsync.db"
    with pytest.raises(StorePathError), syncing(store, "sync"):
        pass
    with pytest.raises(StorePathError), sharing_keys(store):
        pass
    with pytest.raises(StorePathError), DaemonLock(store):
        pass


def _lock_files_refused(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every lock file refused for writing with ``code`` (simulated at ``os.open``: as root,
    chmod cannot)."""
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.EROFS, "the store's folder is on a read-only file system"),
        (errno.EACCES, "the store's folder is not writable by this user"),
    ],
)
def test_a_store_whose_lock_files_may_not_be_written_is_a_store_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, said: str
) -> None:
    """A failing disk the kernel remounted read-only (ext4 errors=remount-ro), or a store
    whose files are another user's: the store and its lock files are there, and none can be
    written. That was said as "cannot create its lock file ... point store.path elsewhere"
    (exit 2, bad configuration): a config change for a failing disk. It is a store failure
    (exit 1) saying what is wrong; a path where no store is stays the configuration's."""
    store = tmp_path / "klantsync.db"
    with sharing_keys(store):
        Store(store).close()  # a store, and a lock file beside it
    _lock_files_refused(monkeypatch, code)
    for taking in (lambda: syncing(store, "sync"), lambda: sharing_keys(store)):
        with pytest.raises(StoreError) as caught, taking():
            pass
        assert not isinstance(caught.value, StorePathError)
        assert str(caught.value).startswith(f"{store}: {said}")
    with pytest.raises(StorePathError), DaemonLock(tmp_path / "none-yet" / "klantsync.db"):
        pass


def test_a_sync_starting_while_another_process_looks_at_the_lock_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` asks whether a sync runs by taking a shared lock for a moment; a sync that
    starts in that moment tries again instead of being refused."""
    import fcntl

    store = tmp_path / "klantsync.db"
    with syncing(store, "sync"):
        pass  # the lock file exists, nobody holds it
    looker = os.open(sync_lock_path(store), os.O_RDONLY)
    fcntl.flock(looker, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the look, in progress
    pauses: list[float] = []

    def look_ends(seconds: float) -> None:
        pauses.append(seconds)
        os.close(looker)

    monkeypatch.setattr("connector.lock.time.sleep", look_ends)
    with syncing(store, "sync"):
        assert sync_running(store)
    assert len(pauses) == 1


async def test_a_keyed_lock_takes_turns_and_keeps_no_entry_once_free() -> None:
    """One holder per key at a time; the entry goes when the last holder or waiter leaves.
    The daemon kept one lock per data subject request it ever ran, for its whole life."""
    import asyncio

    from connector.lock import KeyedLocks, one_at_a_time

    locks: KeyedLocks = {}
    order: list[str] = []

    async def hold(name: str, key: str) -> None:
        async with one_at_a_time(locks, key):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(hold("a", "r1"), hold("b", "r1"), hold("c", "r2"))
    assert order.index("a out") < order.index("b in")  # the same key: in turn
    assert locks == {}
    for n in range(50):
        async with one_at_a_time(locks, f"er-{n}"):
            pass
    assert locks == {}


@contextmanager
def _failing_rather_than_hanging(seconds: int = 3) -> Iterator[None]:
    """A lock the block waits for for real (a blocking call, no pause this test drives)
    fails the test after ``seconds`` instead of hanging the run."""

    def hung(_signum: int, _frame: Any) -> None:
        raise AssertionError(f"still waiting for the lock after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _rotation_ending_after(
    monkeypatch: pytest.MonkeyPatch, store: Path, seconds: float
) -> list[float]:
    """A key rotation holding the store's keys alone, as `keys rotate` does, that ends once
    a waiting command has paused ``seconds`` (pauses not slept: each is recorded)."""
    rotation = ExitStack()
    rotation.enter_context(keys_alone(store))
    pauses: list[float] = []

    def pause(length: float) -> None:
        pauses.append(length)
        if sum(pauses) >= seconds:
            rotation.close()

    monkeypatch.setattr("connector.lock.time.sleep", pause)
    return pauses


def test_a_command_waiting_behind_a_key_rotation_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A command that works with the store's keys waits while a master key rotation (or a
    restore) holds them. It waited without a word: behind a rotation that was stuck or
    slow, an operator saw it hang. After two seconds it says, once, what it waits for and
    which lock file is held; it goes on waiting, and runs once the rotation has ended."""
    store = tmp_path / "klantsync.db"
    pauses = _rotation_ending_after(monkeypatch, store, 10)
    caplog.set_level(logging.WARNING)
    with _failing_rather_than_hanging(), sharing_keys(store):
        ran = True
    assert ran and sum(pauses) >= 10
    said = [r for r in caplog.records if r.name.endswith("lock")]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert "key rotation" in said[0].getMessage()
    assert said[0].lock_file == str(tmp_path / "klantsync.db.keys.lock")


def test_a_command_waiting_briefly_behind_a_key_rotation_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation takes seconds: a command that waited less than two for it says nothing."""
    store = tmp_path / "klantsync.db"
    pauses = _rotation_ending_after(monkeypatch, store, 1)
    caplog.set_level(logging.DEBUG)
    with _failing_rather_than_hanging(), sharing_keys(store):
        pass
    assert pauses and [r for r in caplog.records if r.name.endswith("lock")] == []
