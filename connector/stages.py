"""Which step of a long command runs now, told to the operator at a terminal.

A restore of a store of a million customers takes a minute or more (the backup checked,
copied, migrated, its audit trail verified, what happened since taken over), a backup of one
a quarter of that; either printed nothing until it was done, and an operator could not tell
a command at work from one that hung. The work says each step as it starts (a
:data:`Steps`); on an interactive terminal a spinner shows it with the time so far, and it
goes when the command ends, leaving the command's own report. A pipe, a log or a ``--json``
reader gets nothing: what it reads is the report.

Only fixed texts are shown, never a path, an address or a count of anyone's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console

__all__ = ["Steps", "shown", "unseen"]

#: Told the step that starts now, in a few words ("copying the store").
Steps = Callable[[str], None]


def unseen(step: str) -> None:
    """Nobody to tell: work called without a terminal (tests, the daemon, scripts)."""


@contextlib.contextmanager
def shown(console: Console, command: str, *, show: bool = True) -> Iterator[Steps]:
    """A :data:`Steps` that shows ``command``'s current step on ``console`` while the block
    runs, if it is an interactive terminal and ``show`` (not ``--json``); else :func:`unseen`.

    As the sync's progress bar (:func:`connector.cli_sync.progress_bar`), the display is
    transient, so what stays on the terminal is the command's report alone.
    """
    if not (show and console.is_terminal and console.is_interactive):
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
