"""Shopify as the only source of a HubSpot CRM: what a deployment without a source klantsync
writes to does with data subject requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.shopify.sandbox import ShopifySandbox
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
