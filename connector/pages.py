"""Reading a source ahead of the engine, without ever taking pages out of order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from connector.adapter import Page

__all__ = ["READ_AHEAD_PAGES", "READ_AHEAD_TURNS", "TAKEN_TOGETHER", "ReadAhead"]

#: Turns of the event loop the reader gets after the engine takes pages, so the next
#: request is on the wire before the engine's work on them starts.
READ_AHEAD_TURNS = 4

#: Pages read and waiting for the engine, at most (their raw records are held in memory).
READ_AHEAD_PAGES = 4

#: Records of pages already read that the engine takes as one page, at most.
TAKEN_TOGETHER = 500


class ReadAhead:
    """A pull's pages, read by a task of their own while the engine takes what was read.

    Taking a page (mapping, hashing, sealing, the commit) does not wait on anything, so
    without this the source sat idle while the engine worked and the engine sat idle while
    the source answered. Now the reader asks for the next page as soon as it has one, up to
    :data:`READ_AHEAD_PAGES` ahead.

    Pages that have arrived by the time the engine asks are taken together, as one page
    holding their records in order and the last one's cursor (up to :data:`TAKEN_TOGETHER`
    records): one transaction and one commit for them instead of one each. A commit
    writes every database page the transaction touched to the write-ahead log, and the
    subjects' index is keyed on random ids, so a commit costs about a log page per new
    subject however few the records; four or five pages in one commit write about half as
    many log pages in all (benchmarks/HISTORY.md, "Pages taken together").

    Taken together is the same as taken one by one: the records come in the order read,
    the last occurrence of a subject wins as it would across pages, and the cursor moves
    only past pages that were taken. A source that answers slower than the engine works
    has one page waiting at a time, and its pages are taken as they come.

    A failed request surfaces when the engine asks for the page it would have been, after
    every page read before it was taken.
    """

    def __init__(self, pages: AsyncIterator[Page]) -> None:
        self._pages = pages
        self._read: asyncio.Queue[Page | BaseException | None] = asyncio.Queue(
            maxsize=READ_AHEAD_PAGES
        )
        #: What ended the pull (``None``: the last page, or an error) once taken off the
        #: queue behind pages taken together before it; given at the next :meth:`next`.
        self._end: list[BaseException | None] = []
        self._reader: asyncio.Task[None] | None = None
        #: Whether the engine has taken the page the source marked last.
        self._last_taken = False

    async def _read_all(self) -> None:
        try:
            async for page in self._pages:
                await self._read.put(page)
                if page.complete:
                    # Nothing is asked for after the last page; the engine's next ask
                    # lets the source's iterator end (see :meth:`next`).
                    return
        except Exception as exc:  # handed to the engine when it asks for that page
            await self._read.put(exc)
            return
        await self._read.put(None)

    async def next(self) -> Page | None:
        """The next page, or ``None`` when the pull has ended (pages read meanwhile are
        taken together, see the class)."""
        if self._end:
            return self._ended(self._end[0])
        if self._last_taken:
            # Asked again after the last page: the source's iterator runs to its end (no
            # request follows a last page), as a pull taken page by page would.
            try:
                return await anext(self._pages)
            except StopAsyncIteration:
                self._end.append(None)
                return None
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all())
        item = await self._first()
        if not isinstance(item, Page):
            self._end.append(item)
            return self._ended(item)
        pages = [item]
        count = len(item.records)
        while not pages[-1].complete and count < TAKEN_TOGETHER and not self._read.empty():
            following = self._read.get_nowait()
            if not isinstance(following, Page):
                self._end.append(following)  # after the pages before it are taken
                break
            pages.append(following)
            count += len(following.records)
        if pages[-1].complete:
            self._last_taken = True
        elif not self._end:
            # Let the reader put its next request on the wire before the engine's work.
            for _ in range(READ_AHEAD_TURNS):
                await asyncio.sleep(0)
        return _together(pages)

    async def _first(self) -> Page | BaseException | None:
        """The first thing read and not yet taken, waiting for it if need be."""
        if not self._read.empty():
            return self._read.get_nowait()
        assert self._reader is not None
        waiting = asyncio.ensure_future(self._read.get())
        try:
            await asyncio.wait([waiting, self._reader], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting.done() and not waiting.cancelled():
            return waiting.result()
        if not self._read.empty():
            return self._read.get_nowait()
        # The reader ended without saying how (cancelled from outside): so does the pull.
        if self._reader.cancelled():
            return asyncio.CancelledError("the source's reader was cancelled")
        return self._reader.exception() or RuntimeError("the source's reader stopped")

    @staticmethod
    def _ended(end: BaseException | None) -> None:
        if end is not None:
            raise end
        return None

    async def close(self) -> None:
        """Stop reading (a request nobody will take is cancelled), and close the source's
        page iterator."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([reader])
            if not reader.cancelled():
                reader.exception()  # retrieved, so asyncio does not report it as lost
        aclose = getattr(self._pages, "aclose", None)
        if aclose is not None:
            await aclose()


def _together(pages: list[Page]) -> Page:
    """``pages``, read one after another, as one page."""
    if len(pages) == 1:
        return pages[0]
    last = pages[-1]
    return Page(
        records=[record for page in pages for record in page.records],
        cursor=last.cursor,
        complete=last.complete,
        total=next((page.total for page in reversed(pages) if page.total is not None), None),
    )
