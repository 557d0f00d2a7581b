"""Which step of a long command runs now, or how far it is, told to the operator at a
terminal.

A restore of a store of a million customers takes a minute or more (the backup checked,
copied, migrated, its audit trail verified, what happened since taken over), a backup of one
a fifth of that; either printed nothing until it was done, and an operator could not tell
a command at work from one that hung. The work says each step as it starts (a
:data:`Steps`); on an interactive terminal a spinner shows it with the time so far, and it
goes when the command ends, leaving the command's own report. Work made of many like items
(``dsr retry --all``: every open request, each asking its systems again) says instead how
many are done of how many (a :data:`Counts`), shown as a bar. A pipe, a log or a ``--json``
reader gets nothing: what it reads is the report.

Only fixed texts and counts of the work's items are shown, never a path or an address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console

__all__ = ["Counts", "Steps", "counted", "shown", "uncounted", "unseen"]

#: Told the step that starts now, in a few words ("copying the store").
Steps = Callable[[str], None]

#: Told how many of the work's items are done, and how many there are in all.
Counts = Callable[[int, int], None]


def unseen(step: str) -> None:
    """Nobody to tell: work called without a terminal (tests, the daemon, scripts)."""


def uncounted(done: int, total: int) -> None:
    """Nobody to tell how far the work is (as :func:`unseen`)."""


def _on_terminal(console: Console, show: bool) -> bool:
    return show and console.is_terminal and console.is_interactive


@contextlib.contextmanager
def shown(console: Console, command: str, *, show: bool = True) -> Iterator[Steps]:
    """A :data:`Steps` that shows ``command``'s current step on ``console`` while the block
    runs, if it is an interactive terminal and ``show`` (not ``--json``); else :func:`unseen`.

    As the sync's progress bar (:func:`connector.cli_sync.progress_bar`), the display is
    transient, so what stays on the terminal is the command's report alone.
    """
    if not _on_terminal(console, show):
        yield unseen
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as display:
        task = display.add_task(f"{command}: starting", total=None)

        def step(text: str) -> None:
            display.update(task, description=f"{command}: {text}")

        yield step


@contextlib.contextmanager
def counted(console: Console, command: str, *, show: bool = True) -> Iterator[Counts]:
    """A :data:`Counts` that shows how far ``command`` is as a bar (done of all, the time so
    far) while the block runs, as :func:`shown` shows a step; else :func:`uncounted`."""
    if not _on_terminal(console, show):
        yield uncounted
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as display:
        task = display.add_task(command, total=None)

        def count(done: int, total: int) -> None:
            display.update(task, completed=done, total=total)

        yield count
