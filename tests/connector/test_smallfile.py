"""Files the configuration names, judged before they are read (connector/smallfile.py)."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.smallfile import UnfitFileError, read_small


def _looked_at_as_a_regular_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Every look at ``path`` by its name sees the small regular file it was a moment
    before: as a deploy tool or another user may swap it between a look and an open."""
    real = os.stat

    def stat_by_name(target: object, *args: object, **kwargs: object) -> os.stat_result:
        found = real(target, *args, **kwargs)  # type: ignore[arg-type]
        if isinstance(target, (str, Path)) and Path(target) == path:
            fields = list(found)
            fields[stat.ST_MODE], fields[stat.ST_SIZE] = stat.S_IFREG | 0o600, 20
            return os.stat_result(fields)
        return found

    monkeypatch.setattr(os, "stat", stat_by_name)


@pytest.fixture
def held_open_fails() -> Iterator[None]:
    """An open or a read held for good fails the test instead of hanging the suite (a
    watchdog: no test waits on it unless the code under test is wrong)."""

    def held(*_args: object) -> None:
        raise TimeoutError("held by a file that never answers")

    previous = signal.signal(signal.SIGALRM, held)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("swapped_for", ["device", "pipe"])
@pytest.mark.usefixtures("held_open_fails")
def test_a_file_swapped_after_a_look_by_its_name_is_judged_by_what_was_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped_for: str
) -> None:
    """Judged by its name and then opened, a secret file swapped in between for a device
    was read as it was (/dev/null: an empty secret), and for a pipe with no writer held
    the open, and every command's start, for good. What was opened is what is judged."""
    path = tmp_path / "token"
    if swapped_for == "device":
        path.symlink_to(os.devnull)
    else:
        os.mkfifo(path)
    _looked_at_as_a_regular_file(monkeypatch, path)
    with pytest.raises(UnfitFileError, match="not a regular file"):
        read_small(path, "secret", 65_536)


def test_a_small_regular_file_is_read_whole_and_a_folder_is_no_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"geheim\n")
    assert read_small(tmp_path / "token", "secret", 64) == b"geheim\n"
    with pytest.raises(UnfitFileError, match="longer than any secret"):
        read_small(tmp_path / "token", "secret", 4)
    with pytest.raises(IsADirectoryError):
        read_small(tmp_path, "secret", 64)
    with pytest.raises(FileNotFoundError):
        read_small(tmp_path / "missing", "secret", 64)
