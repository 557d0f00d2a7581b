"""Configs that change between runs, and flows that share systems, end to end.

A mapping that allows less, a destination taken out of a flow, a flow removed, two flows
feeding one system side by side: what was queued goes only where the config sends it now,
once, and a run that fails says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.shopify.sandbox import ShopifySandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.daemon import Daemon
from connector.demo import REPO_MAPPINGS
from connector.dsr import DsrService
from connector.runtime import open_runtime
from connector.targeted import sync_subjects
from tests.conftest import MASTER_KEY, FakeClock, VirtualTime

LIST = "a1b2c3d4e5"


class World:
    def __init__(self) -> None:
        self.shop = WooCommerceSandbox()
        self.shop2 = WooCommerceSandbox()
        self.crm = HubSpotSandbox(rate_limit=None)
        self.news = MailchimpSandbox(list_ids=(LIST,))
        self.deals = PipedriveSandbox(rate_limit=None, search_rate_limit=None)
        self.wall = FakeClock(1_790_000_000.0)
        self.shopify = ShopifySandbox(wall_clock=self.wall)

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        return {
            name: httpx.ASGITransport(app=getattr(self, name).app())
            for name in ("shop", "shop2", "crm", "news", "deals", "shopify")
        }


def write_config(
    directory: Path, world: World, flows: str, *, mappings: dict[str, Path] | None = None
) -> Path:
    mappings = mappings or {}
    (directory / "master.key").write_text(MASTER_KEY)
    secrets = directory / "secrets"
    secrets.mkdir(exist_ok=True)
    values = {
        "sk": world.shop.credentials()["consumer_key"],
        "ss": world.shop.credentials()["consumer_secret"],
        "sk2": world.shop2.credentials()["consumer_key"],
        "ss2": world.shop2.credentials()["consumer_secret"],
        "crm": world.crm.credentials()["token"],
        "news": world.news.credentials()["api_key"],
        "deals": world.deals.credentials()["api_token"],
        "shopify": world.shopify.credentials()["access_token"],
    }
    for name, value in values.items():
        (secrets / name).write_text(value)

    def mapping(system: str, kind: str) -> Path:
        return mappings.get(system, REPO_MAPPINGS / f"{kind}.toml")

    path = directory / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"
[sync]
retry_base_seconds = 0
retry_attempts = 2

[systems.shop]
adapter = "woocommerce"
base_url = "https://shop.test"
mapping = "{mapping("shop", "woocommerce")}"
credentials = {{ consumer_key = "file:secrets/sk", consumer_secret = "file:secrets/ss" }}

[systems.shop2]
adapter = "woocommerce"
base_url = "https://shop2.test"
mapping = "{mapping("shop2", "woocommerce")}"
credentials = {{ consumer_key = "file:secrets/sk2", consumer_secret = "file:secrets/ss2" }}

[systems.crm]
adapter = "hubspot"
base_url = "https://crm.test"
mapping = "{mapping("crm", "hubspot")}"
credentials = {{ token = "file:secrets/crm" }}

[systems.news]
adapter = "mailchimp"
base_url = "https://us21.api.mailchimp.test/3.0"
mapping = "{mapping("news", "mailchimp")}"
list_ids = ["{LIST}"]
credentials = {{ api_key = "file:secrets/news" }}

[systems.deals]
adapter = "pipedrive"
base_url = "https://klant.pipedrive.test/api/v2"
mapping = "{mapping("deals", "pipedrive")}"
credentials = {{ api_token = "file:secrets/deals" }}

[systems.shopify]
adapter = "shopify"
base_url = "https://klant.myshopify.test"
mapping = "{mapping("shopify", "shopify")}"
credentials = {{ access_token = "file:secrets/shopify" }}

{flows}
"""
    )
    return path


def opener(world: World) -> Callable[[Path], Any]:
    def open_(path: Path) -> Any:
        clock = VirtualTime()
        return open_runtime(
            path, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
        )

    return open_


@pytest.fixture
def world() -> World:
    return World()


def _emails(shop: WooCommerceSandbox, count: int) -> list[str]:
    return [shop.store.get(i)["email"] for i in range(1, count + 1)]


ONE_FLOW = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm"]
"""


async def test_field_removed_from_mapping_is_not_sent_from_queued_rows(
    world: World, tmp_path: Path
) -> None:
    """The operator takes `phone` out of HubSpot's allow-list while payloads queued under the
    old mapping wait (HubSpot was down). The next sync must not send the phone: only
    fields named in a mapping flow to a system (DESIGN principle 2)."""
    world.shop.seed_synthetic(3, seed=5)
    path = write_config(tmp_path, world, ONE_FLOW)
    world.crm.faults.down = True
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_count() == 3
    world.crm.faults.down = False
    world.crm.log.clear()
    no_phone = tmp_path / "hubspot-no-phone.toml"
    text = (REPO_MAPPINGS / "hubspot.toml").read_text()
    head, _, rest = text.partition("[fields.phone]")
    rest = rest[rest.index("[fields.company]") :]
    no_phone.write_text(head + rest)
    path = write_config(tmp_path, world, ONE_FLOW, mappings={"crm": no_phone})
    async with opener(world)(path) as rt:
        await rt.engine.sync()
    assert world.crm.contact_count() == 3
    sent = [sorted(e.property_names) for e in world.crm.log.writes()]
    assert all("phone" not in names for names in sent), sent


DEALS_FROM_BOTH_SHOPS = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm", "deals"]

[[flows]]
name = "shop2"
source = "shop2"
destinations = ["deals"]
"""

TWO_SHOPS_DEALS_FROM_SHOP2_ONLY = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm"]

[[flows]]
name = "shop2"
source = "shop2"
destinations = ["deals"]
"""


async def test_destination_taken_out_of_a_flow_gets_none_of_its_queued_rows(
    world: World, tmp_path: Path
) -> None:
    """Pipedrive is taken out of flow `shop` (its customers are no longer to go there) while
    that flow's payloads for Pipedrive wait (Pipedrive was down). Pipedrive still receives
    `shop2`'s customers. A run of `shop2` must not deliver `shop`'s queued customers to
    Pipedrive: no configured flow sends them there any more."""
    world.shop.add_person("alleen.shop@example.nl", "Anna", "Winkel", "0612345678")
    world.shop2.add_person("alleen.shop2@example.nl", "Bert", "Tweede", "0612345679")
    path = write_config(tmp_path, world, DEALS_FROM_BOTH_SHOPS)
    world.deals.faults.down = True
    async with opener(world)(path) as rt:
        await rt.engine.sync("shop")
        assert rt.store.outbox_counts() == {"deals": 1}
    world.deals.faults.down = False
    path = write_config(tmp_path, world, TWO_SHOPS_DEALS_FROM_SHOP2_ONLY)
    async with opener(world)(path) as rt:
        await rt.engine.sync()
    assert world.deals.holds("alleen.shop2@example.nl")
    assert not world.deals.holds("alleen.shop@example.nl")


BOTH_SHOPS_TO_CRM_AND_DEALS = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm", "deals"]
schedule = "every 15m"

[[flows]]
name = "shop2"
source = "shop2"
destinations = ["crm", "deals"]
schedule = "every 15m"
"""


async def test_two_flows_into_one_destination_running_together_send_each_record_once(
    world: World, tmp_path: Path
) -> None:
    """The daemon runs each flow under its own lock, so two flows feeding the same systems
    run side by side (both "every 15m" run at its start). Each record queued must still be
    written once: deliveries duplicate nothing (README, How it keeps data safe)."""
    import asyncio

    from connector.daemon import Daemon

    world.shop.seed_synthetic(150, seed=31)
    world.shop2.seed_synthetic(150, seed=32)
    path = write_config(tmp_path, world, BOTH_SHOPS_TO_CRM_AND_DEALS)
    async with opener(world)(path) as rt:
        daemon = Daemon(rt)
        await asyncio.gather(daemon.run_flow("shop"), daemon.run_flow("shop2"))
    people = {e for e in _emails(world.shop, 150)} | {e for e in _emails(world.shop2, 150)}
    written = sum(
        e.records
        for e in world.crm.log.entries
        if e.path.endswith(("/batch/upsert", "/batch/update")) and e.status < 300
    )
    creates = world.deals.log.count("POST", "/api/v2/persons")
    assert (written, creates, world.deals.person_count()) == (len(people),) * 3


class _HeldWrite(httpx.AsyncBaseTransport):
    """A transport that holds the first POST to a path ending in ``path_end`` until
    released: a write on its way (the rate limiter, the network)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path_end: str) -> None:
        self.inner = inner
        self.path_end = path_end
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.held = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.held and request.method == "POST" and request.url.path.endswith(self.path_end):
            self.held = True
            self.entered.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)


SPLIT_FLOWS = """
[[flows]]
name = "to-crm"
source = "shop"
destinations = ["crm"]

[[flows]]
name = "to-deals"
source = "shop"
destinations = ["deals"]
"""


async def test_a_move_made_by_one_flow_waits_for_another_flow_s_write_in_flight(
    world: World, tmp_path: Path
) -> None:
    """Two flows read one shop and the daemon runs them side by side. Anna's first HubSpot
    write (flow to-crm) is on its way when flow to-deals reads that she changed her address
    and moves her. The move waits for that write to land, though to-deals does not send to
    HubSpot: its acknowledgement records HubSpot's id under her old subject, which the move
    carries to the new one. Moved first, the answer was acknowledged under the emptied old
    subject, the next run of to-crm made a second contact under her new address, and her
    erasure left the one under the old (her name, her phone)."""
    world.shop.add_person("oud@example.nl", "Anna", "Verhuis", "0612345678")
    path = write_config(tmp_path, world, SPLIT_FLOWS)
    transports = world.transports()
    held = _HeldWrite(transports["crm"], "/batch/upsert")
    transports["crm"] = held
    clock = VirtualTime()
    async with open_runtime(
        path, transports=transports, sleep=clock.sleep, clock=clock.clock
    ) as rt:
        daemon = Daemon(rt)
        to_crm = asyncio.ensure_future(daemon.run_flow("to-crm"))
        await asyncio.wait_for(held.entered.wait(), timeout=30)
        world.shop.touch("oud@example.nl", email="nieuw@example.nl")
        to_deals = asyncio.ensure_future(daemon.run_flow("to-deals"))
        for _ in range(10_000):
            if rt.engine.in_flight.waiting:
                break
            assert not to_deals.done(), "the move did not wait for the write in flight"
            await asyncio.sleep(0)
        else:
            raise AssertionError("the move never waited for the write in flight")
        held.release.set()
        moved = await to_deals
        assert moved is not None and moved.moved == 1
        await to_crm
        again = await daemon.run_flow("to-crm")
        assert again is not None and not again.failed, again.errors
        assert world.crm.contact_count() == 1 and world.crm.holds("nieuw@example.nl")
        erased = await DsrService(rt).erase("nieuw@example.nl")
        assert erased.status == "completed"
    assert world.crm.contact_count() == 0 and not world.crm.holds("oud@example.nl")


async def test_two_flows_that_read_the_same_move_make_it_once(world: World, tmp_path: Path) -> None:
    """Two flows read one shop and the daemon runs them side by side. Bert moved from bert@
    to a new address and Anna signed up under bert@; a write of Bert's from an earlier run
    is on its way to HubSpot. Both flows read the page, plan Bert's move and wait for his
    write to land. The first makes the move and queues Anna under bert@; the second plans
    its moves again after the wait and finds none left. Made again from the plan read
    before, it carried what is under bert@ now (Anna's) to Bert's id, and the run failed on
    the identity map."""
    bert, bert_new = "bert@voorbeeld-canary.nl", "bert.nieuw@voorbeeld-canary.nl"
    world.shop.add_person(bert, "Bert", "Klant", "0612345678")
    path = write_config(tmp_path, world, SPLIT_FLOWS)
    transports = world.transports()
    # Bert's queued write goes by his HubSpot id: a batch update.
    held = _HeldWrite(transports["crm"], "/batch/update")
    held.held = True  # not yet
    transports["crm"] = held
    clock = VirtualTime()
    async with open_runtime(
        path, transports=transports, sleep=clock.sleep, clock=clock.clock
    ) as rt:
        daemon = Daemon(rt)
        await daemon.run_flow("to-crm")
        await daemon.run_flow("to-deals")
        assert world.crm.holds(bert) and world.deals.holds(bert)
        # A change of Bert's that HubSpot did not take (down): queued for the next run.
        world.shop.touch(bert, first_name="Bertus")
        world.crm.faults.down = True
        await daemon.run_flow("to-crm")
        world.crm.faults.down = False
        assert rt.store.outbox_counts() == {"crm": 1}
        # Bert moves; Anna signs up under his former address.
        world.shop.touch(bert, email=bert_new)
        world.shop.add_person(bert, "Anna", "Nieuw", "0687654321")
        held.held = False  # the next write to HubSpot (Bert's queued one) is held on its way
        to_crm = asyncio.ensure_future(daemon.run_flow("to-crm"))
        await held.entered.wait()
        to_deals = asyncio.ensure_future(daemon.run_flow("to-deals"))
        for _ in range(10_000):
            if rt.engine.in_flight.waiting >= 2:
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the two flows' moves never both waited")
        held.release.set()
        done = await asyncio.gather(to_crm, to_deals, return_exceptions=True)
        errors = [r for r in done if isinstance(r, BaseException)]
        assert not errors, [type(e).__name__ + ": " + str(e) for e in errors]
        for flow in ("to-crm", "to-deals"):
            again = await daemon.run_flow(flow)
            assert again is not None and not again.failed, again.errors
    assert world.crm.contact_count() == 2 and world.deals.person_count() == 2
    crm_bert = world.crm.record_for(bert_new)
    crm_anna = world.crm.record_for(bert)
    assert crm_bert is not None and crm_bert["properties"]["firstname"] == "Bertus"
    assert crm_anna is not None and crm_anna["properties"]["firstname"] == "Anna"


THREE_DESTINATIONS = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm", "news", "deals"]
"""


async def test_status_says_why_a_run_failed_when_one_destination_was_down(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pipedrive is down for a whole run while HubSpot and Mailchimp take everyone: the run
    failed (its records are left queued). `status --json` shows the flow failed with that
    run's errors (README: `last_errors`, the system, the call and the vendor's category), so
    the operator can tell which system to look at."""
    import json

    from connector.cli import main

    world.shop.seed_synthetic(10, seed=41)
    path = write_config(tmp_path, world, THREE_DESTINATIONS)
    world.deals.faults.down = True
    async with opener(world)(path) as rt:
        (report,) = await rt.engine.sync()
    assert report.failed and report.destinations["deals"].left_queued == 10
    capsys.readouterr()
    assert main(["-c", str(path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    flow = status["flows"]["shop"]
    assert flow["last_status"] == "failed"
    assert status["queued"] == {"deals": 10}
    assert any("deals" in error for error in flow["last_errors"]), flow


async def test_rows_queued_for_a_destination_no_flow_names_any_more_do_not_stay_for_ever(
    world: World, tmp_path: Path
) -> None:
    """Pipedrive is taken out of the only flow that fed it while 3 payloads for it wait
    (it was down). No run ever reads them again: the sealed customer records stay in the
    outbox for good (no retention rule covers them) and `status` shows them queued for
    ever. They should be dropped (no flow sends them) rather than kept indefinitely."""
    world.shop.seed_synthetic(3, seed=71)
    path = write_config(tmp_path, world, THREE_DESTINATIONS)
    world.deals.faults.down = True
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {"deals": 3}
    world.deals.faults.down = False
    path = write_config(tmp_path, world, THREE_DESTINATIONS.replace(', "deals"]', "]"))
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
        left = rt.store.outbox_counts()
    assert world.deals.person_count() == 0
    assert left == {}, left


def _shopify_flow(destinations: str) -> str:
    return f"""
[[flows]]
name = "webshop"
source = "shopify"
destinations = {destinations}
"""


async def test_destination_added_to_an_incremental_flow_receives_every_customer(
    world: World, tmp_path: Path
) -> None:
    """A Shopify flow feeds HubSpot; the client then adds Pipedrive to that flow. Shopify is
    read incrementally (changes since the cursor), so the next syncs pull nobody unchanged
    and Pipedrive never receives the existing customers, though the flow now names it."""
    emails = [f"klant{n}@example.nl" for n in range(5)]
    for n, email in enumerate(emails):
        world.shopify.add_person(email, f"Klant{n}", "Bestaand")
    path = write_config(tmp_path, world, _shopify_flow('["crm"]'))
    async with opener(world)(path) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["crm"].written == 5
        world.wall.advance(24 * 3600)  # a day later a new customer signs up
        world.shopify.add_person("nieuw@example.nl", "Nieuw", "Later")
        (second,) = await rt.engine.sync()
        assert second.destinations["crm"].written == 1
    world.wall.advance(24 * 3600)
    path = write_config(tmp_path, world, _shopify_flow('["crm", "deals"]'))
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
    assert world.deals.holds("nieuw@example.nl")
    held = [email for email in emails if world.deals.holds(email)]
    assert held == emails


async def test_dry_run_reports_the_queued_records_a_real_sync_sends(
    world: World, tmp_path: Path
) -> None:
    """HubSpot was down at the last sync: 5 payloads wait. `sync --dry-run` is how an
    operator asks what a sync would send now; the real sync then sends those 5. The dry run
    says it would send nothing and leaves nothing queued ("would send 0 ... left queued 0")."""
    world.shop.seed_synthetic(5, seed=51)
    path = write_config(tmp_path, world, ONE_FLOW)
    world.crm.faults.down = True
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_count() == 5
    world.crm.faults.down = False
    async with opener(world)(path) as rt:
        (dry,) = await rt.engine.sync(dry_run=True)
        (real,) = await rt.engine.sync()
    assert real.destinations["crm"].written == 5 == world.crm.contact_count()
    would = dry.destinations["crm"]
    assert would.left_queued == 5, dry.as_dict()["destinations"]


NEWS_FLOW = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm", "news"]
"""


async def test_dry_run_foresees_the_unsubscribe_of_someone_who_moved_and_withdrew(
    world: World, tmp_path: Path
) -> None:
    """A subscriber changes their address in the shop and withdraws their newsletter consent.
    The real sync moves them and unsubscribes the member (README: "under the address they had
    then"); the dry run, which never looks for moves, takes them for someone new and says
    nothing would go to Mailchimp (gated), nor that anyone moved."""
    world.shop.seed_synthetic(1, seed=61)  # customer 1 opted in
    (old,) = _emails(world.shop, 1)
    path = write_config(tmp_path, world, NEWS_FLOW)
    async with opener(world)(path) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["news"].written == 1
    new = "nieuw.adres@example.nl"
    world.shop.touch(old, email=new, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    async with opener(world)(path) as rt:
        (dry,) = await rt.engine.sync(dry_run=True)
        (real,) = await rt.engine.sync()
    assert real.moved == 1 and real.destinations["news"].withdrawn == 1
    assert real.destinations["news"].written == 1
    news = dry.destinations["news"]
    assert (dry.moved, news.withdrawn, news.queued) == (1, 1, 1), dry.as_dict()


TWO_SHOPS_TO_CRM = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm"]

[[flows]]
name = "shop2"
source = "shop2"
destinations = ["crm"]
"""


async def test_a_dry_run_of_two_flows_into_one_system_foresees_each_write_once(
    world: World, tmp_path: Path
) -> None:
    """Two shops hold Anna with the same data, and both feed HubSpot. The sync writes her
    once (flow `shop2` finds what `shop` queued and sends nothing), and so the dry run
    says: it keeps in memory what its earlier flows would have queued. Blind to them, it
    foresaw a write from each flow, and a change detection that did not hold."""
    for shop in (world.shop, world.shop2):
        shop.add_person("anna@example.nl", "Anna", "Winkel", "0612345678", city="Utrecht")
    path = write_config(tmp_path, world, TWO_SHOPS_TO_CRM)
    async with opener(world)(path) as rt:
        dry = await rt.engine.sync(dry_run=True)
        real = await rt.engine.sync()
    sent = {r.flow: r.destinations["crm"].queued for r in real}
    foreseen = {r.flow: r.destinations["crm"].queued for r in dry}
    assert sent == {"shop": 1, "shop2": 0}
    assert foreseen == sent
    assert world.crm.contact_count() == 1


SHOPIFY_TO_CRM_AND_DEALS = """
[[flows]]
name = "shopify"
source = "shopify"
destinations = ["crm", "deals"]
"""


async def test_a_change_queued_for_a_destination_taken_out_for_a_while_is_not_lost(
    tmp_path: Path,
) -> None:
    """Pipedrive is down; the operator takes it out of the flow for the outage and puts it
    back once it is up again. The run without it drops the change queued for it; put back,
    the flow's shape differs from its cursor's, the source is read in full, and Pipedrive
    gets the change (Shopify's incremental cursor had long passed it)."""
    world = World()
    world.shopify.add_person("anna.winkel@example.nl", "Anna", "Winkel", "0612345678")
    path = write_config(tmp_path, world, SHOPIFY_TO_CRM_AND_DEALS)
    open_ = opener(world)
    async with open_(path) as rt:
        (report,) = await rt.engine.sync()
        assert not report.failed, report.errors
    assert world.deals.record_for("anna.winkel@example.nl")["first_name"] == "Anna"

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.deals.faults.down = True
    async with open_(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {"deals": 1}

    # The outage lasts: Pipedrive is taken out of the flow meanwhile; others change.
    without = write_config(tmp_path, world, SHOPIFY_TO_CRM_AND_DEALS.replace(', "deals"]', "]"))
    world.wall.advance(3600)
    world.shopify.add_person("bert.later@example.nl", "Bert", "Later", "0612345679")
    async with open_(without) as rt:
        await rt.engine.sync()

    # Pipedrive is back, and back in the flow.
    world.deals.faults.down = False
    world.wall.advance(3600)
    path = write_config(tmp_path, world, SHOPIFY_TO_CRM_AND_DEALS)
    async with open_(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
    person = world.deals.record_for("anna.winkel@example.nl")
    assert person is not None and person["first_name"] == "Annemarie", person


WEBSHOP_AND_SHOP = """
[[flows]]
name = "webshop"
source = "shopify"
destinations = ["crm"]

[[flows]]
name = "shop"
source = "shop"
destinations = ["deals"]
"""

SHOP_ONLY = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["deals"]
"""


async def test_a_change_queued_by_a_flow_taken_out_for_a_while_is_not_lost(
    world: World, tmp_path: Path
) -> None:
    """HubSpot is down while flow `webshop` (Shopify -> HubSpot) queues Anna's change of
    name; Shopify's incremental cursor moves past it. The operator takes the flow out of
    the config for the outage (the other flow keeps running) and puts it back as it was.
    The run without it drops what it queued, and its cursor with it: put back, the flow
    reads Shopify in full and HubSpot gets the change. (Its cursor kept, the flow had the
    same shape as before and resumed past the change.)"""
    world.shopify.add_person("anna.winkel@example.nl", "Anna", "Winkel", "0612345678")
    world.shop.add_person("bert@example.nl", "Bert", "Winkel", "0612345679")
    open_ = opener(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP)
    async with open_(path) as rt:
        reports = await rt.engine.sync()
        assert not any(r.failed for r in reports)
    assert world.crm.record_for("anna.winkel@example.nl") is not None

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.wall.advance(3600)  # an hour later another customer signs up
    world.shopify.add_person("carla@example.nl", "Carla", "Later", "0612345670")
    world.crm.faults.down = True
    async with open_(path) as rt:
        await rt.engine.sync("webshop")
        assert rt.store.outbox_counts() == {"crm": 2}

    # The outage lasts: the flow is taken out of the config meanwhile.
    without = write_config(tmp_path, world, SHOP_ONLY)
    world.wall.advance(3600)
    async with open_(without) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {}
        assert rt.store.get_cursor("webshop", "shopify") is None

    # HubSpot is back, and the flow is put back as it was.
    world.crm.faults.down = False
    world.wall.advance(3600)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP)
    async with open_(path) as rt:
        (webshop, _) = await rt.engine.sync()
        assert webshop.destinations["crm"].queued == 2
        await rt.engine.sync()
    contact = world.crm.record_for("anna.winkel@example.nl")
    assert contact is not None
    assert contact["properties"]["firstname"] == "Annemarie", contact["properties"]
    assert world.crm.holds("carla@example.nl")


_PHONE_SECTION = """[fields.phone]
path = "phone"
transform = ["phone"]
purpose = "Customer service: call back about orders"
"""


async def test_a_mapping_edited_before_a_running_daemon_s_first_run_still_reads_in_full(
    tmp_path: Path,
) -> None:
    """The shape was worked out from the mapping files on disk at a flow's first run, not
    when the process loaded them: a mapping edited after a daemon started (to restart it
    later) was recorded as the shape its next run sent under, and after the restart the
    customers the cursor had passed never got the new field."""
    world = World()
    full = (REPO_MAPPINGS / "hubspot.toml").read_text()
    assert _PHONE_SECTION in full
    mapping = tmp_path / "crm.toml"
    mapping.write_text(full.replace(_PHONE_SECTION, ""))
    flows = '\n[[flows]]\nname = "webshop"\nsource = "shopify"\ndestinations = ["crm"]\n'
    path = write_config(tmp_path, world, flows, mappings={"crm": mapping})
    emails = [f"klant{n}@example.nl" for n in range(3)]
    for n, email in enumerate(emails):
        world.shopify.add_person(email, f"Klant{n}", "Bestaand", f"+3161234567{n}")
    async with opener(world)(path) as rt:  # the daemon starts: the mapping has no phone
        mapping.write_text(full)  # the operator adds phone, to restart the daemon later
        (first,) = await rt.engine.sync()  # the nightly run, before the restart
        assert first.destinations["crm"].written == 3
        world.wall.advance(24 * 3600)
        world.shopify.add_person("nieuw@example.nl", "Nieuw", "Later")
        (second,) = await rt.engine.sync()  # the next night's run: one new customer
        assert second.destinations["crm"].written == 1
    assert "phone" not in (world.crm.record_for(emails[0]) or {}).get("properties", {})
    world.wall.advance(24 * 3600)
    async with opener(world)(path) as rt:  # restarted: phone is in the mapping now
        await rt.engine.sync()
    phones = {
        email: (world.crm.record_for(email) or {}).get("properties", {}).get("phone")
        for email in emails
    }
    assert all(phones.values()), (
        f"the mapping gained phone, but the cursor was recorded under the edited file's shape "
        f"by a run that still used the mapping loaded before: phones in the CRM {phones}"
    )


async def test_a_dry_run_foresees_what_a_renamed_flow_s_queued_rows_become(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Any, config_path: Path
) -> None:
    """Payloads wait under a flow's old name (the CRM was down); the flow is renamed. The
    real run drops those rows first and queues the people anew; the dry run counted them as
    waiting already (unchanged) and said nothing would go."""
    from tests.connector.test_backup import seed

    seed(shop)
    renamed = config_path.read_text()
    config_path.write_text(renamed.replace('name = "shop-to-crm"', 'name = "legacy"'))
    crm.faults.down = True
    async with open_rt() as rt:
        await rt.engine.sync()
        assert rt.store.outbox_count("crm") == 2
    crm.faults.down = False
    config_path.write_text(renamed)
    async with open_rt() as rt:
        (dry,) = await rt.engine.sync(dry_run=True)
        (real,) = await rt.engine.sync()
    assert real.destinations["crm"].queued == 2
    assert (dry.destinations["crm"].queued, dry.destinations["crm"].left_queued) == (2, 0)


async def test_a_dead_letter_of_a_renamed_flow_goes_once_the_system_holds_what_the_source_does(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Any, config_path: Path
) -> None:
    """Anna's change of address is refused by HubSpot (another contact has the address) in
    a run of flow `shop-to-crm`. The operator then renames the flow, and Anna's change is
    undone at the shop. The renamed flow's sync finds HubSpot holding what the shop holds,
    and clears the letter: nobody else is left to judge a letter of a flow that no longer
    sends there. Kept, `status` listed it until retention, and it held back whoever took
    over the address it named."""
    shop.add_person("anna@example.nl", "Anna", "Jansen", "0612345678")
    crm.add_person("taken@example.nl", "Other", "Person")
    async with open_rt() as rt:
        await rt.engine.sync()
        shop.touch("anna@example.nl", email="taken@example.nl")
        (refused,) = await rt.engine.sync()
        assert refused.destinations["crm"].dead_lettered == 1
    shop.touch("taken@example.nl", email="anna@example.nl")  # back as it was
    renamed = config_path.read_text().replace('name = "shop-to-crm"', 'name = "webshop-to-crm"')
    config_path.write_text(renamed)
    async with open_rt() as rt:
        (undone,) = await rt.engine.sync(full=True)
        assert undone.flow == "webshop-to-crm"
        assert undone.destinations["crm"].unchanged == 1
        assert rt.store.dead_letters() == []


NEWS_FLOW = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["news"]
"""

CONSENT_NO = [{"key": "marketing_opt_in", "value": "no"}]
CONSENT_YES = [{"key": "marketing_opt_in", "value": "yes"}]


def _mailchimp_without(tmp_path: Path, *lines: str) -> Path:
    """Mailchimp's mapping less ``lines`` (its ``withdrawn``, its ``consent_renewed``)."""
    text = (REPO_MAPPINGS / "mailchimp.toml").read_text()
    for line in lines:
        assert line in text
        text = text.replace(line, "")
    path = tmp_path / "mailchimp-less.toml"
    path.write_text(text)
    return path


WITHDRAWN_LINE = 'withdrawn = { status = "unsubscribed" }'
RENEWED_LINE = 'consent_renewed = { status = "pending" }'


async def test_a_queued_withdrawal_is_not_sent_as_a_subscribe_once_the_mapping_has_no_withdrawn(
    world: World, tmp_path: Path
) -> None:
    """A customer opts in while Mailchimp is down (their subscribe waits), then opts out (the
    waiting row becomes their withdrawal). The operator then takes ``withdrawn`` out of the
    mapping. Filtered to what the mapping allows now, the withdrawal lost its marker, and
    the bare address went as an ordinary write: Mailchimp added the person who withdrew
    their consent as a subscribed member. A withdrawal goes as one or not at all."""
    world.shop.seed_synthetic(4, seed=62)
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    path = write_config(tmp_path, world, NEWS_FLOW)
    world.news.faults.down = True
    async with opener(world)(path) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["news"].retry_later >= 1
        world.shop.touch(email, meta_data=CONSENT_NO)
        (second,) = await rt.engine.sync()
        assert second.destinations["news"].withdrawn == 1
    world.news.faults.down = False
    less = _mailchimp_without(tmp_path, WITHDRAWN_LINE, RENEWED_LINE)
    path = write_config(tmp_path, world, NEWS_FLOW, mappings={"news": less})
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts().get("news", 0) == 0
    assert world.news.member(LIST, email) is None


async def test_a_queued_renewal_whose_marker_was_taken_out_goes_plain_and_says_so(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Withdrawn, then consenting again while Mailchimp is down: the renewal waits. The
    operator takes ``withdrawn`` and ``consent_renewed`` out of the mapping; the waiting row
    goes as the mapping sends now, a plain write that asks nobody to confirm, and the log
    says what it went without."""
    world.shop.seed_synthetic(4, seed=62)
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    path = write_config(tmp_path, world, NEWS_FLOW)
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        world.shop.touch(email, meta_data=CONSENT_NO)
        await rt.engine.sync()
        assert world.news.member(LIST, email)["status"] == "unsubscribed"  # type: ignore[index]
        world.shop.touch(email, meta_data=CONSENT_YES)
        world.news.faults.down = True
        (renewed,) = await rt.engine.sync()
        assert renewed.destinations["news"].retry_later == 1
    world.news.faults.down = False
    less = _mailchimp_without(tmp_path, WITHDRAWN_LINE, RENEWED_LINE)
    path = write_config(tmp_path, world, NEWS_FLOW, mappings={"news": less})
    caplog.set_level(logging.WARNING, logger="klantsync")
    async with opener(world)(path) as rt:
        await rt.engine.sync()
    assert world.news.member(LIST, email)["status"] == "unsubscribed"  # type: ignore[index]
    assert world.news.confirmations_to(email) == 0
    (said,) = [
        r for r in caplog.records if r.getMessage().startswith("queued payload sent without")
    ]
    assert getattr(said, "dropped", None) == ["status"]


SHOP_AND_CRM_TO_NEWS = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["deals", "news"]

[[flows]]
name = "deals"
source = "deals"
destinations = ["news"]
"""


async def test_a_flow_whose_source_records_no_consent_does_not_unsubscribe_who_opted_in(
    world: World, tmp_path: Path
) -> None:
    """The shop feeds Pipedrive and the newsletter (Anna opted in at the shop); Pipedrive,
    a source too, also feeds the newsletter, and its mapping reads no consent at all. Flow
    `deals` cannot tell who withdrew it, so it sends them nothing there: Anna stays
    subscribed, and is never asked to confirm. (Its missing consent read as a withdrawal,
    each run of `deals` unsubscribed her and the next run of `shop` renewed her, and
    Mailchimp e-mailed her a request to confirm on every sync.) Opting out at the shop,
    which records it, still unsubscribes her, and `deals` does not bring her back."""
    world.shop.add_person("anna@example.nl", "Anna", "Winkel", "0612345678", meta_data=CONSENT_YES)
    path = write_config(tmp_path, world, SHOP_AND_CRM_TO_NEWS)
    for _ in range(3):
        async with opener(world)(path) as rt:
            _, deals = await rt.engine.sync()
            assert deals.destinations["news"].withdrawn == 0
            assert deals.destinations["news"].queued == 0
    member = world.news.member(LIST, "anna@example.nl")
    assert member is not None and member["status"] == "subscribed"
    assert world.news.confirmations_to("anna@example.nl") == 0

    world.shop.touch("anna@example.nl", meta_data=CONSENT_NO)
    for _ in range(2):
        async with opener(world)(path) as rt:
            await rt.engine.sync()
    member = world.news.member(LIST, "anna@example.nl")
    assert member is not None and member["status"] == "unsubscribed"
    assert world.news.confirmations_to("anna@example.nl") == 0


async def test_a_destination_added_after_an_erasure_is_not_sent_the_erased_person(
    world: World, tmp_path: Path
) -> None:
    """A Shopify flow feeds HubSpot; one customer is erased, and Shopify's part is exempted
    (its owner keeps the customer for a legal claim), so the shop still holds them. The
    client then adds Pipedrive to the flow, which catches up with every existing customer:
    every one but the erased person, whom the suppression list keeps out of it."""
    erased = "weg@example.nl"
    others = [f"klant{n}@example.nl" for n in range(3)]
    for n, email in enumerate([erased, *others]):
        world.shopify.add_person(email, f"Klant{n}", "Bestaand")
    path = write_config(tmp_path, world, _shopify_flow('["crm"]'))
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        service = DsrService(rt)
        view = await service.erase(erased)
        view = service.exempt(view.id, "shopify", "kept for a legal claim")
        assert view.status == "completed", view.as_dict()
    assert world.shopify.holds(erased) and not world.crm.holds(erased)
    world.wall.advance(24 * 3600)
    path = write_config(tmp_path, world, _shopify_flow('["crm", "deals"]'))
    async with opener(world)(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
    assert [email for email in others if world.deals.holds(email)] == others
    assert not world.deals.holds(erased) and not world.crm.holds(erased)


WEBSHOP_AND_SHOP_TO_CRM = """
[[flows]]
name = "webshop"
source = "shopify"
destinations = ["crm"]

[[flows]]
name = "shop"
source = "shop"
destinations = ["crm"]
"""

WEBSHOP_TO_CRM = """
[[flows]]
name = "webshop"
source = "shopify"
destinations = ["crm"]
"""


def _anna_in_both_shops(world: World) -> None:
    """Anna buys in both shops; the WooCommerce shop has no first name for her (a guest
    checkout's account), so its writes never set hers in HubSpot."""
    world.shopify.add_person("anna.winkel@example.nl", "Anna", "Winkel", "0612345678")
    world.shop.add_person("anna.winkel@example.nl", "", "Winkel", "0612345678", city="Utrecht")


def _first_name_in_crm(world: World) -> str:
    contact = world.crm.record_for("anna.winkel@example.nl")
    assert contact is not None
    return str(contact["properties"].get("firstname"))


async def test_a_change_queued_by_one_flow_is_not_lost_when_another_flow_queues_the_person(
    world: World, tmp_path: Path
) -> None:
    """Flows `webshop` (Shopify) and `shop` (WooCommerce) both feed HubSpot. HubSpot is down
    while `webshop` queues Anna's change of name; `shop` then queues her too, and its write
    takes the place of the one waiting (one row per person and system). Once HubSpot is
    back, `shop`'s write goes, and Shopify's incremental cursor had passed the change: the
    next runs of `webshop` read nobody changed, and HubSpot kept her old name for good."""
    _anna_in_both_shops(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    open_ = opener(world)
    async with open_(path) as rt:
        reports = await rt.engine.sync()
        assert not any(r.failed for r in reports)
    assert _first_name_in_crm(world) == "Anna"

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.wall.advance(3600)  # an hour later another customer signs up
    world.shopify.add_person("carla@example.nl", "Carla", "Later", "0612345670")
    world.crm.faults.down = True
    async with open_(path) as rt:
        webshop, shop = await rt.engine.sync()
        assert (webshop.destinations["crm"].queued, shop.destinations["crm"].queued) == (2, 1)
        assert rt.store.outbox_counts(flow="shop") == {"crm": 1}
        assert rt.store.outbox_counts(flow="webshop") == {"crm": 1}  # Carla

    world.crm.faults.down = False
    world.wall.advance(3600)
    async with open_(path) as rt:
        await rt.engine.sync()
        (webshop, _) = await rt.engine.sync()
        assert rt.store.outbox_counts() == {}
    assert _first_name_in_crm(world) == "Annemarie"
    # Read in full once: the flow's next run resumes from its cursor again.
    assert webshop.destinations["crm"].queued == 0


async def test_a_change_whose_row_a_removed_flow_took_over_still_reaches_the_system(
    world: World, tmp_path: Path
) -> None:
    """HubSpot is down while `webshop` queues Anna's change of name, and `shop`'s write of
    her takes the row's place. The operator then takes flow `shop` out of the config: the
    next run drops what it queued (no flow sends it any more), Anna's change with it, and
    Shopify's cursor had passed the change, so HubSpot never got it."""
    _anna_in_both_shops(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    open_ = opener(world)
    async with open_(path) as rt:
        reports = await rt.engine.sync()
        assert not any(r.failed for r in reports)

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.wall.advance(3600)  # an hour later another customer signs up
    world.shopify.add_person("carla@example.nl", "Carla", "Later", "0612345670")
    world.crm.faults.down = True
    async with open_(path) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts(flow="shop") == {"crm": 1}

    world.crm.faults.down = False
    world.wall.advance(3600)
    without = write_config(tmp_path, world, WEBSHOP_TO_CRM)
    async with open_(without) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {}
    assert _first_name_in_crm(world) == "Annemarie"


SHOP_TO_CRM = """
[[flows]]
name = "shop"
source = "shop"
destinations = ["crm"]
"""


async def test_a_change_of_a_flow_taken_out_whose_rows_another_flow_took_is_not_lost(
    world: World, tmp_path: Path
) -> None:
    """HubSpot is down while `webshop` queues Anna's change of name (and Carla, who signed
    up after). The operator takes `webshop` out of the config for the outage; before any
    run drops its rows, a resync of both customers from the WooCommerce shop takes their
    rows' places. No row of `webshop` is left, so the run that drops a removed flow's rows
    kept its cursor; put back as it was, it resumed past the change, and HubSpot never got
    Anna's new name."""
    _anna_in_both_shops(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    open_ = opener(world)
    async with open_(path) as rt:
        reports = await rt.engine.sync()
        assert not any(r.failed for r in reports)

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.wall.advance(3600)
    world.shopify.add_person("carla@example.nl", "Carla", "Later", "0612345670")
    world.shop.add_person("carla@example.nl", "", "Later", "0612345670")
    world.crm.faults.down = True
    async with open_(path) as rt:
        await rt.engine.sync("webshop")
        assert rt.store.outbox_counts(flow="webshop") == {"crm": 2}

    without = write_config(tmp_path, world, SHOP_TO_CRM)
    async with open_(without) as rt:
        people = [(None, "anna.winkel@example.nl"), (None, "carla@example.nl")]
        await sync_subjects(rt, "shop", people)
        assert rt.store.outbox_counts(flow="shop") == {"crm": 2}
    world.crm.faults.down = False
    world.wall.advance(3600)
    async with open_(without) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {}

    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    async with open_(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
    assert _first_name_in_crm(world) == "Annemarie"


async def test_status_says_which_flow_reads_its_source_in_full_at_its_next_run(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """HubSpot is down while `webshop` queues Anna's change of name and `shop`'s write of
    her takes the row: `webshop`'s next run reads all of Shopify, with no change the
    operator made. `status` says so, and why (`reads_in_full_next` in `--json`; null for a
    flow that resumes from its cursor), until a read in full has ended."""
    import json

    from connector.cli import main

    _anna_in_both_shops(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    open_ = opener(world)
    async with open_(path) as rt:
        await rt.engine.sync()
    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.crm.faults.down = True
    async with open_(path) as rt:
        await rt.engine.sync()

    def flows() -> dict[str, Any]:
        capsys.readouterr()
        assert main(["-c", str(path), "status", "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out)["flows"])

    marked = flows()
    assert "another flow's write" in marked["webshop"]["reads_in_full_next"]
    assert marked["shop"]["reads_in_full_next"] is None
    assert main(["-c", str(path), "status"]) == 0
    said = capsys.readouterr().out
    assert "reads its source in full at its next run: another flow's write" in said

    world.crm.faults.down = False
    async with open_(path) as rt:
        await rt.engine.sync("webshop")
    assert flows()["webshop"]["reads_in_full_next"] is None


async def test_a_change_queued_by_one_flow_is_not_lost_when_another_flow_moves_the_person(
    world: World, tmp_path: Path
) -> None:
    """HubSpot is down while `webshop` queues Anna's change of name; `shop` then reads that
    she changed her address in the WooCommerce shop and moves her, which drops what waits
    for her under the old address (HubSpot has her id: the move's page queues her current
    data). That was `webshop`'s change, and Shopify, where her address did not change, never
    offers her again: the next runs of `webshop` read nobody changed, and HubSpot kept her
    old name for good."""
    _anna_in_both_shops(world)
    path = write_config(tmp_path, world, WEBSHOP_AND_SHOP_TO_CRM)
    open_ = opener(world)
    async with open_(path) as rt:
        reports = await rt.engine.sync()
        assert not any(r.failed for r in reports)
    contact = world.crm.record_for("anna.winkel@example.nl")
    assert contact is not None

    world.wall.advance(60)
    world.shopify.touch("anna.winkel@example.nl", firstName="Annemarie")
    world.wall.advance(3600)  # an hour later another customer signs up
    world.shopify.add_person("carla@example.nl", "Carla", "Later", "0612345670")
    world.shop.touch("anna.winkel@example.nl", email="anna.nieuw@example.nl")
    world.crm.faults.down = True
    async with open_(path) as rt:
        webshop, shop = await rt.engine.sync()
        assert webshop.destinations["crm"].queued == 2 and shop.moved == 1
        assert rt.store.outbox_counts(flow="webshop") == {"crm": 1}  # Carla

    world.crm.faults.down = False
    world.wall.advance(3600)
    async with open_(path) as rt:
        await rt.engine.sync()
        await rt.engine.sync()
        assert rt.store.outbox_counts() == {}
    assert world.crm.contact_count() == 2  # Anna and Carla
    now = world.crm.record_for("anna.nieuw@example.nl")
    assert now is not None and now["id"] == contact["id"]
    assert now["properties"]["firstname"] == "Annemarie"
