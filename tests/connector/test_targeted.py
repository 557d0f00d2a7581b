"""Targeted syncs: people fetched from their source by id or e-mail, then run through its flows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from connector.targeted import sync_subject, sync_subjects
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    VirtualTime,
    write_config,
)

CRM_TO_SHOP = """
[[flows]]
name = "crm-to-shop"
source = "crm"
destinations = ["shop"]
schedule = "every 15m"
"""


@pytest.fixture
def config_path(tmp_path: Path, env: dict[str, str]) -> Path:
    """The shared test config plus a flow with the CRM as its source."""
    return write_config(tmp_path, extra=CRM_TO_SHOP)


@pytest.mark.parametrize("archived", [False, True], ids=["live", "archived"])
async def test_a_contact_archived_at_the_source_does_not_sync(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    archived: bool,
) -> None:
    """A live contact fetched from HubSpot reaches the shop; one in HubSpot's recycle bin, which
    find reports as held, is no person to sync (a pull would not list it either)."""
    contact_id = crm.add_person("binned@example.com", "Archie", "Ved")
    contact = crm.store.live(contact_id)
    assert contact is not None
    if archived:
        crm.store.archive(contact)
    async with open_rt() as rt:
        (report,) = await sync_subject(
            rt, "crm", external_id=contact_id, email="binned@example.com"
        )
    assert report.pulled == (0 if archived else 1)
    assert shop.holds("binned@example.com") is not archived


async def test_a_hubspot_webhook_sync_reads_no_more_of_the_contact_than_a_pull_does(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """HubSpot as a flow's source: a pull reads the configured ``properties``; the targeted
    sync a ``contact.propertyChange`` webhook causes used ``find``, the access lookup, which
    reads every property the portal defines (a date of birth, notes): personal data no flow
    sends, read for nothing. It reads what a pull reads (``find_people``)."""
    contact_id = crm.add_person(
        "dora@example.com", "Dora", "Bee", date_of_birth="1980-02-03", hs_content="private"
    )
    async with open_rt() as rt:
        pulled = {r.flow: r for r in await rt.engine.sync()}["crm-to-shop"]
        (targeted,) = await sync_subject(rt, "crm", external_id=contact_id)
    assert "date_of_birth" not in pulled.withheld_fields  # the pull never read it
    assert targeted.pulled == 1
    assert "date_of_birth" not in targeted.withheld_fields, dict(targeted.withheld_fields)
    assert targeted.withheld_fields == pulled.withheld_fields


async def test_two_deliveries_of_one_customer_under_two_addresses_make_one_contact(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A customer registers as jan@gmial.com and corrects it a minute later: two deliveries,
    run as one targeted sync. Taken from the deliveries as they came, both addresses were
    written, two contacts for one customer; each is now fetched by its id, and found once,
    under the address the shop has."""
    customer = shop.add_person("jan@gmial.com", "Jan", "Jansen", "06 12345678")
    shop.touch("jan@gmial.com", email="jan@gmail.com")
    await sync_subjects(rt, "shop", [(customer, "jan@gmial.com"), (customer, "jan@gmail.com")])
    assert crm.holds("jan@gmail.com") and crm.contact_count() == 1


async def test_a_webhook_about_someone_the_pull_leaves_out_by_role_does_not_sync_them(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    """role = "customer" leaves a shop manager out of the pull; WooCommerce sends
    customer.updated for any user, and the targeted sync found them by e-mail (any role)
    and sent them to the CRM after all."""
    path = write_config(tmp_path, shop_extra='role = "customer"')
    async with open_rt(path) as rt:
        shop.add_person("klant@voorbeeld.nl", "Karel", "Klant")
        shop.add_person("beheer@voorbeeld.nl", "Wim", "Beheer", role="shop_manager")
        await rt.engine.sync()
        assert crm.holds("klant@voorbeeld.nl") and not crm.holds("beheer@voorbeeld.nl")
        await sync_subjects(rt, "shop", [(None, "beheer@voorbeeld.nl")])
        assert not crm.holds("beheer@voorbeeld.nl")
        shop.touch("klant@voorbeeld.nl", first_name="Karl")
        await sync_subjects(rt, "shop", [(None, "klant@voorbeeld.nl")])
    assert crm.record_for("klant@voorbeeld.nl")["properties"]["firstname"] == "Karl"


async def test_a_targeted_sync_of_one_customer_reads_no_orders_nor_order_notes(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A webhook about a customer fetches them from the shop. It used ``find``, the access
    and erasure lookup, which also pages through the customer's orders, searches orders by
    the address and reads each order's notes (3 + N calls), then threw the orders away:
    free-text notes about the person read for nothing, and a burst of deliveries a crawl
    of the order history. The customer record alone is read, as a pull reads it."""
    shop.seed_synthetic(3, seed=51)
    customer = shop.store.get(2)
    assert customer is not None
    for n in range(5):
        order_id = shop.add_order(customer["id"])
        shop.add_order_note(order_id, f"klant belde over levering {n}")
    shop.touch(customer["email"], first_name="Gewijzigd")
    shop.log.clear()
    (report,) = await sync_subject(
        rt, "shop", external_id=str(customer["id"]), email=customer["email"]
    )
    assert report.pulled == 1
    read = [e.path for e in shop.log.entries]
    assert read and not [p for p in read if "/orders" in p], read
    assert crm.holds(customer["email"])


async def test_a_sign_up_under_an_address_another_customer_left_moves_him_first(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """Bert moves to a new address in the shop and Anna signs up under his former one.
    WooCommerce delivers in no promised order (and never again after a failure): Anna's
    ``customer.created`` runs before Bert's ``customer.updated``. Fetched alone, her record
    was taken for Bert's: her name written onto his CRM contact, his subject given her shop
    record. The record the shop's identity holds under the address (Bert's) is fetched
    beside hers, and he moves first, as a pull moves him."""
    shop.add_person("bert@voorbeeld.nl", "Bert", "Bakker", "06 11111111")
    async with open_rt() as rt:
        await rt.engine.sync()
        bert_contact = crm.record_for("bert@voorbeeld.nl")
        assert bert_contact is not None
        shop.touch("bert@voorbeeld.nl", email="bert.nieuw@voorbeeld.nl")
        anna = shop.add_person("bert@voorbeeld.nl", "Anna", "Appel", "06 22222222")
        (report,) = await sync_subject(rt, "shop", external_id=anna, email="bert@voorbeeld.nl")
    assert report.moved == 1
    bert = crm.store.live(bert_contact["id"])
    assert bert is not None
    assert bert.properties.get("firstname") == "Bert"
    assert bert.properties.get("email") == "bert.nieuw@voorbeeld.nl"
    anna_contact = crm.record_for("bert@voorbeeld.nl")
    assert anna_contact is not None and anna_contact["id"] != bert_contact["id"]
    assert anna_contact["properties"]["firstname"] == "Anna"
    assert crm.contact_count() == 2


async def test_a_sign_up_under_the_address_of_a_customer_deleted_since_is_synced_as_before(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """Where the record the shop's identity holds under the address is gone from the shop
    (Bert deleted, Anna signed up under his address), the one lookup of it finds nobody, and
    Anna syncs as she did before: there is no move to see."""
    bert = shop.add_person("bert@voorbeeld.nl", "Bert", "Bakker", "06 11111111")
    async with open_rt() as rt:
        await rt.engine.sync()
        shop.store.delete(int(bert))
        anna = shop.add_person("bert@voorbeeld.nl", "Anna", "Appel", "06 22222222")
        shop.log.clear()
        (report,) = await sync_subject(rt, "shop", external_id=anna, email="bert@voorbeeld.nl")
    assert (report.pulled, report.moved) == (1, 0)
    looked_up = [e.status for e in shop.log.entries if e.path.endswith(f"/customers/{bert}")]
    assert looked_up == [404]
    contact = crm.record_for("bert@voorbeeld.nl")
    assert contact is not None and contact["properties"]["firstname"] == "Anna"


class _InFlight(httpx.AsyncBaseTransport):
    """Wraps a transport and remembers the most calls it had in flight at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.now = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            for _ in range(5):  # the vendor takes a moment: the others get their turn
                await asyncio.sleep(0)
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1


async def test_a_batch_of_webhook_deliveries_keeps_to_the_shop_s_max_concurrency(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> None:
    """``max_concurrency`` is the calls in flight at once (config.example.toml), which an
    operator whose WordPress host chokes sets to 1. A batch of deliveries looked its people
    up eight at a time whatever the setting; it keeps to it."""
    shop.seed_synthetic(10, seed=3)
    emails = [str(shop.store.get(n)["email"]) for n in range(1, 11)]  # type: ignore[index]
    path = write_config(tmp_path, shop_extra="max_concurrency = 1")
    counted = _InFlight(httpx.ASGITransport(app=shop.app()))
    transports = {"shop": counted, "crm": httpx.ASGITransport(app=crm.app())}
    time = VirtualTime()
    async with open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock) as rt:
        (report,) = await sync_subjects(rt, "shop", [(None, email) for email in emails])
    assert counted.peak == 1, f"{counted.peak} calls in flight to a shop set to 1"
    assert report.pulled == 10


async def test_a_targeted_sync_records_its_run_and_the_erased_person_it_held_back(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A targeted sync (``resync --email``, every webhook change the daemon takes) runs
    people through the flow as a pulled page does, suppression list and minimisation
    included, and is recorded as a run is (``sync.run``, marked ``targeted``). An erased
    customer the shop brought back (a backup restored) and a webhook then named is held
    back: the trail says so, not only the report."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    await rt.engine.sync()
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed" and not shop.holds(CANARY_EMAIL)
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)  # the backup restored
    before = [e.seq for e in audit.entries(rt.store) if e.kind == audit.SYNC_RUN]
    (report,) = await sync_subject(rt, "shop", email=CANARY_EMAIL)
    assert report.suppressed == 1 and not crm.holds(CANARY_EMAIL)
    runs = [e for e in audit.entries(rt.store) if e.kind == audit.SYNC_RUN][len(before) :]
    assert [(r.data["flow"], r.data["suppressed"], r.data["targeted"]) for r in runs] == [
        ("shop-to-crm", 1, True)
    ]
    assert runs[0].subject_id is None and CANARY_EMAIL not in str(runs[0].data)
