"""Reading a source ahead of the engine (connector/pages.py): order, taking pages read
meanwhile together, the bound on what is read ahead, errors and the end of a pull."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from connector.adapter import Page
from connector.pages import READ_AHEAD_PAGES, TAKEN_TOGETHER, ReadAhead


def _page(number: int, size: int = 100, *, complete: bool = False) -> Page:
    return Page(
        records=[{"id": number * 1000 + n} for n in range(size)],
        cursor=None if complete else f"after-{number}",
        complete=complete,
        total=42,
    )


async def _turns(count: int = 50) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_read_ahead_requests_the_next_page_and_closes_what_is_left() -> None:
    """The next page is requested before this one is taken; closing cancels it, ends the pull."""
    requested: list[int] = []
    closed = asyncio.Event()
    gate = asyncio.Event()

    async def pages() -> AsyncIterator[Page]:
        try:
            for number in range(3):
                requested.append(number)
                if number == 1:
                    await gate.wait()  # page 1 is slow to arrive; nobody waits for it
                yield Page(records=[{"id": number}], cursor=str(number))
        finally:
            closed.set()

    ahead = ReadAhead(pages())
    first = await ahead.next()
    assert first is not None and first.cursor == "0"
    assert requested == [0, 1]  # page 1 asked for before page 0 was taken
    await ahead.close()
    assert closed.is_set() and requested == [0, 1]


async def test_read_ahead_stops_after_the_complete_page() -> None:
    """No request follows the page the source marks complete; the end reads as None."""
    calls = 0

    async def pages() -> AsyncIterator[Page]:
        nonlocal calls
        calls += 1
        yield Page(records=[], cursor=None, complete=True)
        calls += 1  # pragma: no cover - must not run

    ahead = ReadAhead(pages())
    page = await ahead.next()
    assert page is not None and page.complete
    await ahead.close()
    assert calls == 1


async def test_pages_read_while_the_engine_worked_are_taken_together_in_order() -> None:
    """Three pages arrived while the engine took the first: the next ask gives them as one
    page, their records in the order read, the last one's cursor and total."""

    gate = asyncio.Event()

    async def pages() -> AsyncIterator[Page]:
        yield _page(0)
        await gate.wait()
        for number in range(1, 4):
            yield _page(number)
        yield _page(4, 30, complete=True)

    ahead = ReadAhead(pages())
    first = await ahead.next()
    assert first is not None and first.cursor == "after-0" and len(first.records) == 100
    gate.set()
    await _turns()  # the engine works on page 0; pages 1 to 4 arrive
    together = await ahead.next()
    assert together is not None
    assert [r["id"] for r in together.records] == [
        *(1000 + n for n in range(100)),
        *(2000 + n for n in range(100)),
        *(3000 + n for n in range(100)),
        *(4000 + n for n in range(30)),
    ]
    assert together.complete and together.cursor is None and together.total == 42
    assert await ahead.next() is None
    await ahead.close()


async def test_no_more_than_so_many_records_are_taken_together() -> None:
    """Pages waiting beyond :data:`TAKEN_TOGETHER` records stay for the next ask, whose
    cursor is where the first ask's pages end."""

    async def pages() -> AsyncIterator[Page]:
        for number in range(12):
            yield _page(number, complete=number == 11)

    ahead = ReadAhead(pages())
    taken: list[Page] = []
    while (page := await ahead.next()) is not None:
        taken.append(page)
        await _turns()
    await ahead.close()
    assert all(len(page.records) <= TAKEN_TOGETHER for page in taken)
    assert len(taken) < 12  # some were taken together
    ids = [r["id"] for page in taken for r in page.records]
    assert ids == [number * 1000 + n for number in range(12) for n in range(100)]
    # Each cursor is that of the last page it covers.
    ends = [page.records[-1]["id"] // 1000 for page in taken]
    assert [page.cursor for page in taken[:-1]] == [f"after-{end}" for end in ends[:-1]]
    assert taken[-1].complete


async def test_no_more_than_so_many_pages_are_read_ahead() -> None:
    """An engine that takes nothing (its destinations are behind) holds the reader at
    :data:`READ_AHEAD_PAGES` pages read, and one more in hand."""
    requested: list[int] = []

    async def pages() -> AsyncIterator[Page]:
        for number in range(50):
            requested.append(number)
            yield _page(number)

    ahead = ReadAhead(pages())
    first = await ahead.next()
    assert first is not None
    await _turns(200)
    taken = len(first.records) // 100
    assert len(requested) == taken + READ_AHEAD_PAGES + 1
    await ahead.close()


async def test_a_failed_request_surfaces_after_the_pages_read_before_it() -> None:
    """Page 2's request failed while pages 0 and 1 waited: both are taken, and the error is
    raised when the engine asks for page 2 (the cursor moves past page 1 only)."""

    async def pages() -> AsyncIterator[Page]:
        yield _page(0)
        yield _page(1)
        raise ConnectionError("the shop went away")

    ahead = ReadAhead(pages())
    taken = await ahead.next()
    assert taken is not None
    if taken.cursor == "after-0":  # page 1 not read yet when asked
        await _turns()
        taken = await ahead.next()
        assert taken is not None
    assert taken.cursor == "after-1"
    with pytest.raises(ConnectionError, match="went away"):
        await ahead.next()
    with pytest.raises(ConnectionError):
        await ahead.next()  # and again, for whoever asks again
    await ahead.close()


async def test_asked_after_the_last_page_the_source_s_iterator_runs_to_its_end() -> None:
    """What a source does after its last page (nothing asked of the vendor) runs when the
    engine asks again, as it did page by page; the end reads as None."""
    ended = asyncio.Event()

    async def pages() -> AsyncIterator[Page]:
        yield _page(0, complete=True)
        ended.set()

    ahead = ReadAhead(pages())
    page = await ahead.next()
    assert page is not None and page.complete and not ended.is_set()
    assert await ahead.next() is None
    assert ended.is_set()
    assert await ahead.next() is None
    await ahead.close()


async def test_a_reader_cancelled_from_outside_ends_the_pull_instead_of_hanging() -> None:
    """Nothing waits for ever on a reader that stopped without saying why."""
    gate = asyncio.Event()

    async def pages() -> AsyncIterator[Page]:
        yield _page(0)
        await gate.wait()
        yield _page(1)  # pragma: no cover - never reached

    ahead = ReadAhead(pages())
    await ahead.next()
    await _turns()
    assert ahead._reader is not None
    ahead._reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(ahead.next(), 5)
    await ahead.close()
