"""The event loop klantsync runs on (connector/loop.py), and that the suite runs on it too."""

from __future__ import annotations

import asyncio

from connector import loop


async def test_async_tests_run_on_the_commands_loop() -> None:
    made = loop.new_event_loop()
    try:
        assert type(asyncio.get_running_loop()) is type(made)
    finally:
        made.close()


def test_run_returns_the_coroutines_result_on_that_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = loop.run(which())
    assert module.startswith("uvloop" if loop.LOOP_NAME == "uvloop" else "asyncio")
