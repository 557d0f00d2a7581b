"""A customer whose e-mail address is removed in the shop: unsubscribed, once, nothing else."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector import audit
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from connector.state import WITHDRAWAL
from tests.conftest import VirtualTime
from tests.e2e.test_multi_system import LISTS, World, write_config

EMAIL = "alleen.telefoon@example.nl"


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    async with open_runtime(
        write_config(tmp_path, world),
        transports=world.transports(),
        sleep=clock.sleep,
        clock=clock.clock,
    ) as runtime:
        yield runtime


def _statuses(world: World, email: str) -> list[str | None]:
    return [(world.news.member(list_id, email) or {}).get("status") for list_id in LISTS]


async def _subscribed_then_address_removed(world: World, rt: Runtime) -> str:
    """A subscribed Shopify customer, synced; then the shop removes their address (and
    with it their e-mail consent). Returns their GraphQL id."""
    customer = world.shopify.add_person(
        EMAIL, "Alleen", "Telefoon", "+31612345678", marketing_state="SUBSCRIBED"
    )
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert _statuses(world, EMAIL) == ["subscribed", "subscribed"]
    world.shopify.touch(customer, email="")
    world.news.log.clear()
    world.crm.log.clear()
    world.deals.log.clear()
    return customer


async def test_a_subscriber_whose_address_is_removed_is_unsubscribed_once(
    world: World, rt: Runtime
) -> None:
    """The record comes without an address, yet the identity map knows whose it is: the
    Mailchimp member is unsubscribed on every audience, reported as any withdrawal; a
    re-sync sends nothing more."""
    await _subscribed_then_address_removed(world, rt)
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert report.invalid == 1
    news = report.destinations["news"]
    assert (news.withdrawn, news.queued, news.written) == (1, 1, 1)
    assert _statuses(world, EMAIL) == ["unsubscribed", "unsubscribed"]
    sid = rt.keyring.subject_id(EMAIL)
    (delivered,) = rt.store.db.execute(
        "SELECT d.payload_hash FROM delivered d JOIN subjects s USING (subject_no) "
        "WHERE d.system='news' AND s.subject_id=?",
        (sid,),
    ).fetchone()
    assert delivered.startswith(WITHDRAWAL)
    batches = [e for e in audit.entries(rt.store) if e.kind == "sync.batch"]
    assert batches[-1].data["system"] == "news" and batches[-1].data["upserted"] == 1
    world.news.log.clear()
    (again,) = await rt.engine.sync("shopify", full=True)
    assert not again.failed, again.errors
    assert world.news.log.writes() == []
    news = again.destinations["news"]
    assert (news.withdrawn, news.queued, news.unchanged) == (1, 0, 1)


async def test_a_system_that_needs_no_consent_keeps_what_it_has(world: World, rt: Runtime) -> None:
    """HubSpot and Pipedrive are sent nothing for the record without an address: they keep
    the customer as last written, as for a customer deleted in the shop."""
    await _subscribed_then_address_removed(world, rt)
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert world.crm.log.writes() == [] and world.deals.log.writes() == []
    assert world.crm.holds(EMAIL) and world.deals.holds(EMAIL)
    for name in ("crm", "deals"):
        assert report.destinations[name].queued == 0


async def test_a_system_that_takes_no_withdrawal_by_id_alone_is_sent_none(
    world: World, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consent-gated system whose adapter cannot withdraw by the system's id alone
    (HubSpot refuses a write without an address) is sent nothing for the record without
    an address: sent, it became a dead letter (MISSING_EMAIL) at every sync."""
    assert not getattr(rt.systems["crm"].adapter, "withdraws_by_id", False)
    monkeypatch.setattr(rt.systems["news"].adapter, "withdraws_by_id", False, raising=False)
    await _subscribed_then_address_removed(world, rt)
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert report.destinations["news"].queued == 0
    assert world.news.log.writes() == []
    assert rt.store.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone() == (0,)


async def test_a_customer_never_sent_to_mailchimp_is_sent_nothing(
    world: World, rt: Runtime
) -> None:
    """One who never consented has no member to unsubscribe: nothing goes anywhere."""
    customer = world.shopify.add_person(EMAIL, "Nooit", "Ingeschreven", "+31612345678")
    await rt.engine.sync("shopify")
    assert world.news.member(LISTS[0], EMAIL) is None
    world.shopify.touch(customer, email="")
    world.news.log.clear()
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert world.news.log.writes() == []
    assert report.destinations["news"].queued == 0
    assert report.destinations["news"].withdrawn == 0


async def test_a_dry_run_foresees_the_withdrawal(world: World, rt: Runtime) -> None:
    """The dry run says the withdrawal would be sent, and sends nothing."""
    await _subscribed_then_address_removed(world, rt)
    (report,) = await rt.engine.sync("shopify", dry_run=True)
    news = report.destinations["news"]
    assert (news.withdrawn, news.queued) == (1, 1)
    assert world.news.log.writes() == []
    assert _statuses(world, EMAIL) == ["subscribed", "subscribed"]


async def test_the_same_address_given_back_asks_to_confirm(world: World, rt: Runtime) -> None:
    """The address comes back with consent: the member unsubscribed by the withdrawal is
    asked to confirm, as after any withdrawal."""
    customer = await _subscribed_then_address_removed(world, rt)
    await rt.engine.sync("shopify")
    world.shopify.touch(customer, email=EMAIL, emailMarketingConsent__marketingState="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert _statuses(world, EMAIL) == ["pending", "pending"]
    assert world.news.confirmations_to(EMAIL) == len(LISTS)


async def test_another_address_given_asks_it_to_confirm_beside_the_unsubscribed_member(
    world: World, rt: Runtime
) -> None:
    """Another address comes back with consent: the person is moved, but Mailchimp changes a
    subscribed member's address alone, so their unsubscribed member stays under the former
    address and the new one is asked to confirm; an erasure under it reaches both."""
    customer = await _subscribed_then_address_removed(world, rt)
    await rt.engine.sync("shopify")
    new_address = "weer.bereikbaar@example.nl"
    world.shopify.touch(
        customer, email=new_address, emailMarketingConsent__marketingState="SUBSCRIBED"
    )
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert report.moved == 1
    assert _statuses(world, new_address) == ["pending", "pending"]
    assert _statuses(world, EMAIL) == ["unsubscribed", "unsubscribed"]
    assert world.news.confirmations_to(new_address) == len(LISTS)
    assert world.crm.holds(new_address) and not world.crm.holds(EMAIL)
    view = await DsrService(rt).erase(new_address)
    assert view.system("news").status == "verified_absent"
    assert _statuses(world, EMAIL) == [None, None]
    assert _statuses(world, new_address) == [None, None]


async def test_an_erasure_after_the_address_was_removed_reaches_every_system(
    world: World, rt: Runtime
) -> None:
    """Erased under the address they had, the unsubscribed member is deleted too."""
    await _subscribed_then_address_removed(world, rt)
    await rt.engine.sync("shopify")
    view = await DsrService(rt).erase(EMAIL)
    for name in ("news", "crm", "deals"):
        assert view.system(name).status == "verified_absent", name
    assert _statuses(world, EMAIL) == [None, None]


async def test_a_woocommerce_customer_left_without_an_address_is_unsubscribed(
    world: World, rt: Runtime
) -> None:
    """The same from WooCommerce, whose database holds what an import or a plugin wrote
    (an e-mail emptied): the member is unsubscribed, once."""
    customer_id = world.shop.add_person(
        EMAIL, "Leeg", "Adres", meta_data=[{"key": "marketing_opt_in", "value": "yes"}]
    )
    await rt.engine.sync("shop")
    assert _statuses(world, EMAIL) == ["subscribed", "subscribed"]
    held = world.shop.store.get(int(customer_id))
    assert held is not None
    emptied = copy.deepcopy(held)
    emptied["email"] = ""
    emptied["billing"]["email"] = ""
    world.shop.store.save(emptied, previous_email=EMAIL)
    world.news.log.clear()
    (report,) = await rt.engine.sync("shop", full=True)
    assert not report.failed, report.errors
    assert (report.invalid, report.destinations["news"].withdrawn) == (1, 1)
    assert _statuses(world, EMAIL) == ["unsubscribed", "unsubscribed"]
    world.news.log.clear()
    await rt.engine.sync("shop", full=True)
    assert world.news.log.writes() == []


async def test_a_write_queued_before_the_address_was_removed_leaves_nobody_subscribed(
    world: World, rt: Runtime
) -> None:
    """Mailchimp was down when the customer was first queued for it, so no member id was
    known when the address was removed: the withdrawal takes the queued write's place, and
    whether that write landed first or not, nobody stays subscribed."""
    world.news.faults.fail_next = 10_000
    customer = world.shopify.add_person(EMAIL, "Nog", "Niet", marketing_state="SUBSCRIBED")
    await rt.engine.sync("shopify")
    assert rt.store.outbox_count("news") == 1
    world.news.faults.fail_next = 0
    world.shopify.touch(customer, email="")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert "subscribed" not in _statuses(world, EMAIL)
    assert rt.store.outbox_count("news") == 0
    world.news.log.clear()
    (again,) = await rt.engine.sync("shopify", full=True)
    assert not again.failed, again.errors
    assert world.news.log.writes() == []


async def test_whoever_takes_over_the_removed_address_keeps_their_subscription(
    world: World, rt: Runtime
) -> None:
    """Bert's address is removed and a new customer, Anna, signs up with it before the next
    sync: the member under it is hers now (her write lands on it, as any newcomer's), and
    Bert's withdrawal does not unsubscribe it, then or at a later sync."""
    bert = world.shopify.add_person(EMAIL, "Bert", "Eerst", marketing_state="SUBSCRIBED")
    await rt.engine.sync("shopify")
    world.shopify.touch(bert, email="")
    world.shopify.add_person(EMAIL, "Anna", "Later", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert _statuses(world, EMAIL) == ["subscribed", "subscribed"]
    (again,) = await rt.engine.sync("shopify", full=True)
    assert not again.failed, again.errors
    assert _statuses(world, EMAIL) == ["subscribed", "subscribed"]
    assert again.destinations["news"].withdrawn == 0
