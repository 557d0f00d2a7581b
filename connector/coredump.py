"""No core dump of a klantsync process.

A process that crashes (a C extension's segfault, an abort, a system call the service's
sandbox refuses) is written to disk as a core dump by default: systemd-coredump keeps it for
days, a container's host keeps it wherever its ``core_pattern`` says. klantsync's memory holds
the master key, the keys derived from it and, opened, the people it is working on: a core
dump is a clear copy of all of them outside the store. So every command forbids its own.
"""

from __future__ import annotations

import resource

__all__ = ["forbid_core_dumps"]


def forbid_core_dumps() -> bool:
    """Set this process's core size limit to 0, soft and hard; False where it cannot be.

    The hard limit too: nothing in klantsync needs a dump, and a library cannot raise it
    again. A limit the platform refuses to change leaves the process as it was (the
    systemd unit sets ``LimitCORE=0`` as well).
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        return False
    return True
