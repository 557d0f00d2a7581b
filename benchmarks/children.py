"""Child processes a benchmark starts go when it goes, even when it is killed outright.

A benchmark stopped with SIGTERM or Ctrl-C stops its children itself (each one's ``finally``
or signal handler). One killed with SIGKILL (a CI runner's timeout, an operator's ``kill -9``,
the kernel's out-of-memory killer) runs no code at all: its sandbox server or daemon lived
on, held its loopback ports and a CPU, and the next run's figures were read beside it.

Linux can send a process a signal when its parent dies (``PR_SET_PDEATHSIG``). Setting it
between ``fork`` and ``exec`` from Python needs ``preexec_fn``, which is not safe in a
process with threads (the soak's log reader is one); util-linux's ``setpriv`` sets it and
then runs the command in its own place, so the child keeps its pid, its CPU affinity and
its signal handlers, and gets SIGTERM (a clean stop) when the benchmark dies.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

__all__ = ["dies_with_parent"]

#: The signal a child gets when the benchmark dies: the one every child here stops cleanly on.
PARENT_DEATH_SIGNAL = "TERM"


def dies_with_parent(command: Sequence[str]) -> list[str]:
    """``command``, run so that it gets SIGTERM when the process starting it dies.

    Where there is no such signal (not Linux) or no ``setpriv`` to set it, ``command`` as it
    is: the benchmark runs as before, and only an outright kill leaves the child behind.
    The child must be started from the thread that outlives it (the main thread, here): the
    signal follows the thread that started it, not the process. A benchmark killed in the
    few milliseconds between starting the child and setpriv setting the signal still leaves
    it behind (setpriv cannot look whether its parent went meanwhile); every benchmark waits
    longer than that for its child to get ready.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        return list(command)
    return [setpriv, f"--pdeathsig={PARENT_DEATH_SIGNAL}", "--", *command]
