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
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    # Imported where a display is drawn: most commands (and the daemon) never draw one, and
    # rich's progress module is not theirs to load at start-up.
    from rich.progress import Progress, ProgressColumn

__all__ = ["Counts", "Steps", "counted", "on_terminal", "shown", "uncounted", "unseen"]

#: Told the step that starts now, in a few words ("copying the store").
Steps = Callable[[str], None]

#: Told how many of the work's items are done, and how many there are in all.
Counts = Callable[[int, int], None]


def unseen(step: str) -> None:
    """Nobody to tell: work called without a terminal (tests, the daemon, scripts)."""


def uncounted(done: int, total: int) -> None:
    """Nobody to tell how far the work is (as :func:`unseen`)."""


def on_terminal(console: Console, show: bool = True) -> bool:
    """Whether a live display may be drawn on ``console``: an interactive terminal, and
    ``show`` (not ``--json``). A console rich takes for a terminal only because the
    environment asks for colour (``FORCE_COLOR``) is not interactive (the CLI's console says
    so): colour there, but nothing redrawn into a file."""
    return show and console.is_terminal and console.is_interactive


@contextlib.contextmanager
def _display(console: Console, *columns: ProgressColumn) -> Iterator[Progress]:
    """A transient live display of ``columns``: gone when the block ends, so what stays on
    the terminal is the command's report alone."""
    from rich.progress import Progress, TimeElapsedColumn

    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as display:
        yield display


@contextlib.contextmanager
def shown(console: Console, command: str, *, show: bool = True) -> Iterator[Steps]:
    """A :data:`Steps` that shows ``command``'s current step on ``console`` with the time so
    far while the block runs, where :func:`on_terminal`; else :func:`unseen`."""
    if not on_terminal(console, show):
        yield unseen
        return
    from rich.progress import SpinnerColumn, TextColumn

    with _display(console, SpinnerColumn(), TextColumn("{task.description}")) as display:
        task = display.add_task(f"{command}: starting", total=None)

        def step(text: str) -> None:
            display.update(task, description=f"{command}: {text}")

        yield step


@contextlib.contextmanager
def counted(console: Console, command: str, *, show: bool = True) -> Iterator[Counts]:
    """A :data:`Counts` that shows how far ``command`` is as a bar (done of all, the time so
    far) while the block runs, where :func:`on_terminal`; else :func:`uncounted`."""
    if not on_terminal(console, show):
        yield uncounted
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with _display(console, *columns) as display:
        task = display.add_task(command, total=None)

        def count(done: int, total: int) -> None:
            display.update(task, completed=done, total=total)

        yield count
