"""Private folders for looks at the store: the ones a killed process left are deleted."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from connector import aside
from connector.aside import aside_folder, sweep_left_behind
from connector.runtime import private_copy


def _gone_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _left(tmp: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir(mode=0o700)
    (folder / "klantsync.db").write_bytes(b"a copy of the store, sealed")
    return folder


def test_a_look_at_the_store_deletes_the_private_copy_a_killed_look_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look (`status`, a dry run) killed with its private copy of the store in the
    temporary folder left it there for good: sealed, but holding the outbox and dead
    letters of people erased since, which no erasure reaches. The next look deletes it,
    and leaves a copy a running process still looks at, and what is not its own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    killed = _left(tmp, f"klantsync-dry-run-{_gone_pid()}-k1ll3d")
    running = _left(tmp, f"klantsync-dry-run-{os.getppid()}-runn1ng")
    unnamed = _left(tmp, "klantsync-dry-run-0ld3r")  # an earlier version's: no process id
    other = _left(tmp, "something-else")
    store = tmp_path / "state" / "klantsync.db"
    store.parent.mkdir()
    with closing(sqlite3.connect(store)) as db:
        db.execute("CREATE TABLE t(x)")
    with private_copy(store) as copy:
        assert copy.is_file() and copy.parent.parent == tmp
        ours = copy.parent.name
    assert not killed.exists()
    assert ours.startswith(f"klantsync-dry-run-{os.getpid()}-")  # told apart the same way
    assert running.exists() and unnamed.exists() and other.exists()
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        p.name for p in (running, unnamed, other)
    )


def test_a_copy_a_live_process_holds_is_kept_though_its_process_id_is_none_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look in a container that shares the temporary folder with the host (or another
    container) names its folder with its process id there, which no process has in the
    host's PID namespace: a look on the host took it for a killed one's and deleted the
    copy the live look was reading. The folder its process still holds stays."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    elsewhere = _left(tmp, f"klantsync-dry-run-{_gone_pid()}-c0nta1n3r")
    held = os.open(elsewhere, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the look in the container holds its own
        with aside_folder() as ours:
            assert Path(ours).parent == tmp
        assert elsewhere.exists() and (elsewhere / "klantsync.db").exists()
    finally:
        os.close(held)
    assert sweep_left_behind() == 1  # its process gone, the lock with it
    assert not elsewhere.exists()


def test_a_folder_in_use_is_held_from_the_moment_a_sweep_could_find_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep by a process that cannot see the look's process (another PID namespace)
    finds the folder only under its final name, and by then the look holds it: it stays
    while the look runs, and goes when it ends."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with aside_folder() as ours:
        assert Path(ours).name.startswith(f"klantsync-dry-run-{os.getpid()}-")
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(aside, "_alive", lambda pid: False)
            assert sweep_left_behind() == 0
        assert Path(ours).is_dir()
    assert not Path(ours).exists()
    assert list(tmp.iterdir()) == []
