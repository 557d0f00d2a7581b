"""Reading a source one page ahead of the engine, without ever taking pages out of order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from connector.adapter import Page

__all__ = ["READ_AHEAD_TURNS", "ReadAhead"]

#: Turns of the event loop a read-ahead request gets before the engine takes a page.
READ_AHEAD_TURNS = 4


class ReadAhead:
    """A pull's pages, the next one already requested while the engine takes this one.

    Taking a page (mapping, hashing, sealing, the commit) does not wait on anything, so
    without this the source sat idle while the engine worked and the engine sat idle while
    the source answered. Now the request for page N+1 is on its way before page N is taken.
    Pages are still taken one by one and in order, and a failed request surfaces when its
    page is asked for, as before; the cursor only ever moves with a page that was taken.
    """

    def __init__(self, pages: AsyncIterator[Page]) -> None:
        self._pages = pages
        self._next: asyncio.Task[Page | None] | None = None

    async def _fetch(self) -> Page | None:
        try:
            return await anext(self._pages)
        except StopAsyncIteration:
            return None

    async def next(self) -> Page | None:
        """The next page, or ``None`` when the pull has ended."""
        task = self._next or asyncio.create_task(self._fetch())
        self._next = None
        page = await task
        if page is not None and not page.complete:
            self._next = asyncio.create_task(self._fetch())
            # Give the request a few turns of the loop to reach the wire (the client takes
            # its connection and writes the request before it first waits for the answer).
            for _ in range(READ_AHEAD_TURNS):
                await asyncio.sleep(0)
        return page

    async def close(self) -> None:
        """Cancel a request nobody will take, and close the source's page iterator."""
        task, self._next = self._next, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not report it as lost
        aclose = getattr(self._pages, "aclose", None)
        if aclose is not None:
            await aclose()
