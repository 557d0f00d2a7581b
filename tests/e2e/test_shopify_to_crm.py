"""Shopify as the only source of a HubSpot CRM: what a deployment without a source klantsync
writes to does with data subject requests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.shopify.sandbox import ShopifySandbox
from connector.adapter import Page
from connector.demo import REPO_MAPPINGS
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from tests.conftest import MASTER_KEY, VirtualTime

SECRET = "shopify-app-secret"


def _config(
    directory: Path,
    shopify: ShopifySandbox,
    crm: HubSpotSandbox,
    shopify_mapping: Path | None = None,
) -> Path:
    """Shopify (source, with its webhook secret) -> HubSpot."""
    (directory / "master.key").write_text(MASTER_KEY)
    (directory / "master.key").chmod(0o600)
    (directory / "token").write_text(shopify.access_token)
    (directory / "hook").write_text(SECRET)
    (directory / "crm").write_text(crm.credentials()["token"])
    path = directory / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"
[sync]
retry_base_seconds = 0

[systems.shopify]
adapter = "shopify"
base_url = "https://{shopify.shop_domain}"
mapping = "{shopify_mapping or REPO_MAPPINGS / "shopify.toml"}"
credentials = {{ access_token = "file:token" }}
webhooks = {{ secret = "file:hook" }}

[systems.crm]
adapter = "hubspot"
base_url = "https://crm.test"
mapping = "{REPO_MAPPINGS / "hubspot.toml"}"
credentials = {{ token = "file:crm" }}

[[flows]]
name = "shopify"
source = "shopify"
destinations = ["crm"]
"""
    )
    return path


class World:
    def __init__(self) -> None:
        self.shopify = ShopifySandbox()
        self.crm = HubSpotSandbox(rate_limit=None)

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        return {
            "shopify": httpx.ASGITransport(app=self.shopify.app()),
            "crm": httpx.ASGITransport(app=self.crm.app()),
        }


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    async with open_runtime(
        _config(tmp_path, world.shopify, world.crm),
        transports=world.transports(),
        sleep=clock.sleep,
        clock=clock.clock,
    ) as runtime:
        yield runtime


def _crm_phone(crm: HubSpotSandbox, email: str) -> object:
    record = crm.record_for(email)
    assert record is not None
    return record["properties"].get("phone")


async def test_a_correction_retried_after_the_person_changed_it_in_shopify_leaves_it(
    world: World, rt: Runtime
) -> None:
    """A correction of the phone reaches HubSpot late (HubSpot refused it, down for it
    alone); meanwhile the customer changed the number in Shopify, and a sync carried it to
    HubSpot. Shopify is never written and the correction reached no system, so nothing told
    the customer's change from the value the correction replaces: the retry wrote the older
    corrected number over it, and it stayed (the next sync sends nothing: HubSpot was last
    sent what Shopify holds). Shopify's values when the correction first ran are noted, and
    one it holds now that is neither is the customer's since (README: "the newer value
    stays")."""
    email = "anna@example.nl"
    world.shopify.add_person(email, "Anna", "Jansen", "+31612345678")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.crm.faults.fail_status, world.crm.faults.fail_next = 503, 10_000
    service = DsrService(rt)
    view = await service.rectify(email, {"phone": "+31611111111"})
    assert view.status == "open" and view.system("crm").status == "failed"
    world.crm.faults.fail_next = 0
    world.shopify.touch(email, phone="+31622222222")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert _crm_phone(world.crm, email) == "+31622222222"
    step = (await service.retry(view.id)).system("crm")
    assert step.status == "skipped" and "changed in the source since" in (step.detail or "")
    await rt.engine.sync("shopify")
    assert _crm_phone(world.crm, email) == "+31622222222"


async def test_a_customer_read_again_on_pages_taken_together_is_moved_not_doubled(
    world: World, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shopify lists customers by ``updatedAt``: one who changes their address while the
    pull reads on is listed again at its end. Read faster than the engine takes them, the
    pages are taken together, both readings in one: the customer is moved to the new
    address, as taken one by one, not written under the old one as well (a contact of an
    address nobody holds any more, which an erasure under the new one would not reach)."""
    for n in range(6):
        world.shopify.add_person(
            f"klant{n}@example.nl", f"Klant{n}", "Jansen", updated_at=f"2026-01-01T00:00:0{n}Z"
        )
    adapter: Any = rt.engine.systems["shopify"].adapter
    adapter.limits = dataclasses.replace(adapter.limits, page_size=2)
    pull = adapter.pull

    async def read_before_taken(cursor: str | None) -> AsyncIterator[Page]:
        # The source answers faster than the engine works: every page waits at once.
        pages = []
        async for page in pull(cursor):
            pages.append(page)
            if len(pages) == 1 and world.shopify.holds("klant0@example.nl"):
                world.shopify.touch("klant0@example.nl", email="nieuw0@example.nl")
        for page in pages:
            yield page

    taken: list[int] = []
    take = rt.engine.taker.take

    async def counted(*args: Any, **kwargs: Any) -> None:
        taken.append(len(args[3].records))
        await take(*args, **kwargs)

    monkeypatch.setattr(adapter, "pull", read_before_taken)
    monkeypatch.setattr(rt.engine.taker, "take", counted)
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert taken == [7]  # four pages, the customer twice, in one take
    assert report.moved == 0 and report.destinations["crm"].queued == 6
    assert world.crm.holds("nieuw0@example.nl")
    assert not world.crm.holds("klant0@example.nl")
    assert world.crm.contact_count() == 6
    (report,) = await rt.engine.sync("shopify")
    assert report.destinations["crm"].queued == 0


class Crash(Exception):
    """The process killed at a checkpoint."""


async def test_killed_after_pages_taken_together_a_rerun_sends_everyone_once(
    world: World, tmp_path: Path
) -> None:
    """Twelve pages of customers, read faster than the engine takes them, so several are
    taken together; killed once the second take is queued, a re-run resumes after what was
    taken: every customer reaches HubSpot, and nobody is written twice."""
    for n in range(24):
        world.shopify.add_person(
            f"klant{n}@example.nl", f"Klant{n}", "Jansen", updated_at=f"2026-01-01T00:{n:02}:00Z"
        )
    config = _config(tmp_path, world.shopify, world.crm)
    queued = 0

    def checkpoint(name: str) -> None:
        nonlocal queued
        queued += name == "queued"
        if queued == 2:
            raise Crash(name)

    async def read_before_taken(pull: Any, cursor: str | None) -> AsyncIterator[Page]:
        pages = [page async for page in pull(cursor)]
        for page in pages:
            yield page

    def opened(**kwargs: Any) -> Any:
        clock = VirtualTime()
        return open_runtime(
            config, transports=world.transports(), sleep=clock.sleep, clock=clock.clock, **kwargs
        )

    def paged(rt: Runtime) -> None:
        adapter: Any = rt.engine.systems["shopify"].adapter
        adapter.limits = dataclasses.replace(adapter.limits, page_size=2)
        pull = adapter.pull
        adapter.pull = lambda cursor: read_before_taken(pull, cursor)

    with pytest.raises(Crash):
        async with opened(checkpoint=checkpoint) as rt:
            paged(rt)
            await rt.engine.sync("shopify")
    assert 0 < world.crm.contact_count() < 24
    async with opened() as rt:
        paged(rt)
        (report,) = await rt.engine.sync("shopify")
        assert report.complete and not report.failed, report.errors
        assert report.pulled < 24  # resumed after what was taken
        assert rt.store.outbox_count() == 0
    assert world.crm.contact_count() == 24
    assert all(world.crm.holds(f"klant{n}@example.nl") for n in range(24))
    world.crm.log.clear()
    async with opened() as rt:
        (report,) = await rt.engine.sync("shopify")
        assert report.destinations["crm"].queued == 0
    assert world.crm.log.writes() == []
