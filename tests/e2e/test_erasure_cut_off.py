"""An erasure cut off between two of one system's calls, then retried: the receipt counts
what the request deleted, not only the retry's share.

The first process dies right before a chosen call reaches the vendor (as ``kill -9`` does:
nothing more reaches the store or any vendor), after the calls before it were carried out.
A new process on the same store and sandboxes retries the request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from tests.conftest import VirtualTime
from tests.e2e.test_multi_system import LISTS, World, write_config

EMAIL = "cut.off@example.nl"


class Killed(BaseException):
    """The process died here (not an ``Exception``: nothing in the connector handles it)."""


class _DyingTransport(httpx.AsyncBaseTransport):
    """Carries out calls until the ``nth`` one ``dies_at`` picks, and dies instead of it."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, dies_at: Callable[[httpx.Request], bool], nth: int
    ) -> None:
        self.inner = inner
        self.dies_at = dies_at
        self.left = nth

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.dies_at(request):
            self.left -= 1
            if self.left == 0:
                raise Killed(f"killed before {request.method} {request.url.path}")
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def _process(
    world: World, config: Path, dying: dict[str, _DyingTransport] | None = None
) -> AsyncIterator[Runtime]:
    transports: dict[str, httpx.AsyncBaseTransport] = {**world.transports(), **(dying or {})}
    clock = VirtualTime()
    async with open_runtime(
        config, transports=transports, sleep=clock.sleep, clock=clock.clock
    ) as rt:
        yield rt


async def _erased_after_a_cut(
    world: World, tmp_path: Path, system: str, dies_at: Callable[[httpx.Request], bool], nth: int
) -> dict[str, str]:
    """Erase :data:`EMAIL`, killed before the ``nth`` call of ``system`` that ``dies_at``
    picks; retried in a new process, completed. ``system``'s entry on the receipt."""
    config = write_config(tmp_path, world)
    inner = world.transports()[system]
    with pytest.raises(Killed):
        dying = {system: _DyingTransport(inner, dies_at, nth)}
        async with _process(world, config, dying) as rt:
            await DsrService(rt).erase(EMAIL)
    async with _process(world, config) as rt:
        service = DsrService(rt)
        (view,) = service.list(open_only=True)
        done = await service.retry(view.id)
        assert done.status == "completed", [(s.system, s.status) for s in done.systems]
        text = service.receipt(view.id)
    assert text is not None and EMAIL not in text
    systems = json.loads(text)["receipt"]["systems"]
    entry: dict[str, str] = next(s for s in systems if s["system"] == system)
    return entry


async def test_a_mailchimp_erasure_cut_off_between_audiences_counts_both_on_its_receipt(
    tmp_path: Path,
) -> None:
    """The member is on two audiences; the process dies after deleting it on the first and
    before the second. The retry deletes it on the second, and its receipt said
    "permanently deleted on 1 audience" of a member the request deleted on two."""
    world = World()
    for list_id in LISTS:
        world.news.add_person(EMAIL, "Cut", "Off", list_id=list_id)
    assert all(world.news.member(list_id, EMAIL) for list_id in LISTS)

    def deletion(request: httpx.Request) -> bool:
        return request.url.path.endswith("/actions/delete-permanent")

    entry = await _erased_after_a_cut(world, tmp_path, "news", deletion, 2)
    assert not world.news.holds(EMAIL)
    assert entry["status"] == "verified_absent", entry
    assert entry["note"].startswith(
        "permanently deleted on 1 audience by this attempt, and gone already from 1 more "
        "the request found it on before its first attempt;"
    ), entry["note"]


async def test_a_shop_erasure_cut_off_between_two_reviews_counts_both_on_its_receipt(
    tmp_path: Path,
) -> None:
    """The customer wrote two product reviews; the process dies after anonymising the first
    and before the second. The retry no longer finds the first under the person, and its
    receipt said "1 reviews anonymised" of the two the request anonymised."""
    world = World()
    world.shop.add_person(EMAIL, "Cut", "Off")
    for text in ("Heerlijke koffie", "Snel geleverd"):
        world.shop.add_review(EMAIL, text, reviewer="Cut Off")

    def anonymising(request: httpx.Request) -> bool:
        return request.method == "PUT" and "/products/reviews/" in request.url.path

    entry = await _erased_after_a_cut(world, tmp_path, "shop", anonymising, 2)
    assert not world.shop.holds(EMAIL)
    assert entry["status"] == "verified_absent", entry
    assert (
        "1 review anonymised by this attempt, and 1 more review the request found before "
        "its first attempt no longer under the person;"
    ) in entry["note"], entry["note"]
