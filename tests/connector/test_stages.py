"""A backup and a restore say each step as it starts, and ``dsr retry --all`` how many of the
open requests it has tried; a terminal shows it, nobody else."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.backup import take_backup
from connector.cli import main
from connector.dsr import DsrService
from connector.restore import restore_backup
from connector.stages import counted, shown, uncounted, unseen
from tests.conftest import CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, RuntimeFactory

OTHER_EMAIL = "otto.ander@voorbeeld.nl"

BACKUP_STEPS = [
    "verifying the audit trail",
    "copying the store",
    "checking the copy",
    "hashing the copy",
]
RESTORE_STEPS = [
    "checking the backup",
    "copying the backup",
    "opening the copy",
    "verifying its audit trail",
    "taking over what happened since",
    "putting it in place",
]


async def test_a_backup_and_a_restore_say_each_step_in_order(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, tmp_path: Path
) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    out = tmp_path / "nightly.db"
    said: list[str] = []
    async with open_rt() as rt:
        await rt.engine.sync()
        take_backup(rt.config, out, step=said.append)
        config = rt.config
    assert said == BACKUP_STEPS
    said.clear()
    restore_backup(config, out, step=said.append)
    assert said == RESTORE_STEPS
    assert not any(CANARY_EMAIL in text or CANARY_NAME in text for text in said)


def _terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, force_interactive=True, width=100), screen


def test_a_terminal_is_shown_the_step_and_the_display_goes_at_the_end() -> None:
    console, screen = _terminal()
    with shown(console, "restore") as step:
        step("copying the backup")
    drawn = screen.getvalue()
    assert "restore: copying the backup" in drawn
    # Transient: the last thing written moves the cursor back over the display and
    # clears it, so the command's report starts on a clean line.
    assert drawn.endswith("\x1b[1A\x1b[2K")  # up one line, erase it


async def test_a_retry_of_every_open_request_counts_each_as_it_ends(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory
) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111")
    async with open_rt() as rt:
        await rt.engine.sync()
        service = DsrService(rt)
        crm.faults.down = True
        assert (await service.erase(CANARY_EMAIL)).is_open
        assert (await service.erase(OTHER_EMAIL)).is_open
        crm.faults.down = False
        said: list[tuple[int, int]] = []
        assert await service.retry_open(counts=lambda done, total: said.append((done, total))) == 2
    assert said == [(0, 2), (1, 2), (2, 2)]


def test_a_terminal_is_shown_how_many_are_done_of_how_many() -> None:
    console, screen = _terminal()
    with counted(console, "dsr retry: open requests") as count:
        count(0, 3)
        count(2, 3)
    drawn = screen.getvalue()
    assert "dsr retry: open requests" in drawn and "2/3" in drawn
    assert drawn.endswith("\x1b[1A\x1b[2K")


@pytest.mark.parametrize("interactive", [False, True])
def test_a_pipe_or_a_json_reader_is_shown_nothing(interactive: bool) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=interactive, force_interactive=interactive)
    with shown(console, "backup", show=not interactive) as step:
        assert step is unseen
        step("copying the store")
    with counted(console, "dsr retry", show=not interactive) as count:
        assert count is uncounted
        count(1, 2)
    assert screen.getvalue() == ""


async def test_backup_json_holds_the_report_alone(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the CLI, a `--json` reader gets one JSON document: no step text in it."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    async with open_rt() as rt:
        await rt.engine.sync()
    capsys.readouterr()
    out = tmp_path / "copy.db"
    assert main(["-c", str(config_path), "backup", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed)["sha256"]
    assert "copying" not in printed
