"""Flows that meet: a shop and a CRM each the other's source (README, Known limits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from tests.conftest import VirtualTime, write_config

BACK = '\n[[flows]]\nname = "crm-to-shop"\nsource = "crm"\ndestinations = ["shop"]\n'


def _crm_writes(crm: HubSpotSandbox) -> int:
    return sum(
        e.records
        for e in crm.log.entries
        if e.path.endswith(("/batch/upsert", "/batch/update")) and e.status < 300
    )


def _shop_writes(shop: WooCommerceSandbox) -> int:
    return sum(1 for e in shop.log.entries if e.method in ("POST", "PUT", "PATCH"))


@pytest.fixture
async def loop(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[Runtime]:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + BACK)
    transports = {
        "shop": httpx.ASGITransport(app=shop.app()),
        "crm": httpx.ASGITransport(app=crm.app()),
    }
    time = VirtualTime()
    async with open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock) as rt:
        yield rt


async def test_a_change_goes_round_a_loop_once_and_then_rests(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, loop: Runtime
) -> None:
    """The CRM flow reads its own write back as a change and writes the shop once; the
    value the shop then reads is the one the CRM was given, so nothing is written again."""
    shop.add_person("anne@example.nl", "Anne", "de Vries", "0612345678")
    await loop.engine.sync()  # the shop's customer to the CRM, and written back once
    await loop.engine.sync()
    crm_before, shop_before = _crm_writes(crm), _shop_writes(shop)
    reports = await loop.engine.sync()
    assert (_crm_writes(crm), _shop_writes(shop)) == (crm_before, shop_before)
    assert all(d.queued == 0 for r in reports for d in r.destinations.values())


async def test_an_erased_person_does_not_come_back_round_a_loop(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, loop: Runtime
) -> None:
    """The suppression list stops her on the second hop as on the first."""
    shop.add_person("anne@example.nl", "Anne", "de Vries", "0612345678")
    await loop.engine.sync()
    view = await DsrService(loop).erase("anne@example.nl")
    assert view.status == "completed"
    # The CRM restores a backup still holding her: its flow back carries her to no shop.
    crm.add_person("anne@example.nl", "Anne", "de Vries", "+31612345678")
    await loop.engine.sync()
    await loop.engine.sync()
    assert shop.record_for("anne@example.nl") is None
