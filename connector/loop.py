"""Which event loop runs klantsync: uvloop's where it is installed, asyncio's otherwise.

Every command that runs a coroutine (``sync``, ``run``, ``demo``, requests, the sandboxes'
servers) starts its loop here, and the test suite runs on the same loop, so what is tested is
what runs.

Why uvloop: during a fan-out the event loop is the connector's one core, and a destination
that takes one call per record and a few connections at once (Mailchimp: ten) is paced by
how soon the loop reads each answer. asyncio's own loop, its socket transports and its TLS
layer are Python; uvloop's are compiled (libuv), which took the loop's own share of each
call from ~1 ms to a fraction of that here. It has no Windows build; there, and wherever it
is missing, asyncio's loop runs everything the same way, only slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LOOP_NAME", "new_event_loop", "run"]

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows, or installed without it
    uvloop = None  # type: ignore[assignment]

#: ``"uvloop"`` or ``"asyncio"``: what :func:`new_event_loop` makes.
LOOP_NAME = "uvloop" if uvloop is not None else "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind klantsync runs on."""
    if uvloop is not None:
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop from :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
