"""A restore against the four systems: what happened after the backup is not undone.

The backup knows the sync's state as it was; the world moved on. A customer subscribed to the
newsletter since, who then opts out, is unsubscribed; an erasure left open for a system that
was down is still retried and finished; a customer who moved since is one person, under the
new address, in the restored store as in the systems. A change an incremental source
(Shopify) offered once, queued when the backup was taken, still reaches the system. (Jobs,
incidents and webhook ids taken over: tests/connector/test_restore.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from connector.backup import take_backup
from connector.config import Config, load_config
from connector.dsr import DsrService
from connector.engine import flow_shape, reads_in_full
from connector.restore import restore_backup
from connector.runtime import Runtime, open_runtime
from tests.conftest import VirtualTime
from tests.e2e import test_shopify_to_crm as shopify_crm
from tests.e2e.test_multi_system import LISTS, World, write_config


def _opt_in(consent: bool) -> list[dict[str, str]]:
    return [{"key": "marketing_opt_in", "value": "yes" if consent else "no"}]


def _runtime(world: World | shopify_crm.World, config: Config) -> Callable[[], Any]:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        time = VirtualTime()
        async with open_runtime(
            config, transports=world.transports(), sleep=time.sleep, clock=time.clock
        ) as rt:
            yield rt

    return opened


async def test_what_happened_after_the_backup_is_carried_into_the_restored_store(
    tmp_path: Path,
) -> None:
    world = World()
    config = load_config(write_config(tmp_path, world))
    runtime = _runtime(world, config)
    anna, bram = "anna@voorbeeld.nl", "bram@voorbeeld.nl"
    world.shop.add_person(anna, "Anna", "Klant", meta_data=_opt_in(False))
    world.shop.add_person(bram, "Bram", "Klant", meta_data=_opt_in(True))
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shop")
        take_backup(config, backup)
        # After the backup: Anna opts in and is subscribed; Bram asks to be erased while
        # Pipedrive is down, so his request stays open for it.
        world.shop.touch(anna, meta_data=_opt_in(True))
        await rt.engine.sync("shop")
        assert world.news.member(LISTS[0], anna)["status"] == "subscribed"  # type: ignore[index]
        world.deals.faults.down = True
        erasure = await DsrService(rt).erase(bram)
        world.deals.faults.down = False
        assert erasure.is_open and world.deals.holds(bram)
    facts = restore_backup(config, backup)
    assert facts.carried["people"] >= 1 and facts.carried["requests"] == 1
    async with runtime() as rt:
        # Anna opts out: she is unsubscribed. The backup alone did not know she was ever
        # sent to Mailchimp, and a withdrawal goes only where someone was sent.
        world.shop.touch(anna, meta_data=_opt_in(False))
        await rt.engine.sync("shop")
        assert world.news.member(LISTS[0], anna)["status"] == "unsubscribed"  # type: ignore[index]
        # Bram's open erasure is still there, and finished when retried.
        service = DsrService(rt)
        assert [v.id for v in service.list(open_only=True)] == [erasure.id]
        assert await service.retry_open() == 1
        assert not world.deals.holds(bram) and not world.crm.holds(bram)
        assert service.get(erasure.id).status == "completed"


async def test_a_move_since_the_backup_is_made_in_the_restored_store_too(
    tmp_path: Path,
) -> None:
    """Anna changes her address after the backup and the sync moves her (the newsletter
    member's address changed; HubSpot, down, still has the first). After the restore the
    store holds her under the new address, as the replaced one did: the next sync updates
    her HubSpot contact, not a second one beside it, and after one more move an erasure
    finds the member under the second address. The backup's rows under the first address
    used to stay: the sync made a second contact, the erasure missed that member (the
    fan-out model found both)."""
    world = World()
    config = load_config(write_config(tmp_path, world))
    runtime = _runtime(world, config)
    anna, second, third = "anna@voorbeeld.nl", "anna.twee@voorbeeld.nl", "anna.drie@voorbeeld.nl"
    world.shop.add_person(anna, "Anna", "Klant", meta_data=_opt_in(True))
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shop")
        take_backup(config, backup)
        world.shop.touch(anna, email=second)
        world.crm.faults.fail_next = 20  # HubSpot is down for that sync: the move waits
        (report,) = await rt.engine.sync("shop")
        world.crm.faults.fail_next = 0
        assert report.moved == 1 and rt.store.outbox_counts() == {"crm": 1}
        assert world.news.member(LISTS[0], second) is not None
    facts = restore_backup(config, backup)
    assert facts.carried["moves"] == 1
    async with runtime() as rt:
        await rt.engine.sync("shop")
        assert world.crm.contact_count() == 1 and world.crm.holds(second)
        world.shop.touch(second, email=third)
        view = await DsrService(rt).erase(third)
        assert view.status == "completed"
    addresses = (anna, second, third)
    assert all(world.news.member(lst, a) is None for lst in LISTS for a in addresses)
    assert not any(world.crm.holds(a) or world.deals.holds(a) for a in addresses)


async def _moved_and_her_address_taken_then_restored(
    tmp_path: Path,
) -> tuple[World, Callable[[], Any], str]:
    """Anna is synced and backed up; she moves to a new address (synced); Bert signs up under
    her former one (synced); the backup is restored and a sync runs. Returns Anna's
    Pipedrive person's id."""
    world = World()
    config = load_config(write_config(tmp_path, world))
    runtime = _runtime(world, config)
    anna, new = "anna@voorbeeld.nl", "anna.nieuw@voorbeeld.nl"
    world.shop.add_person(anna, "Anna", "Klant", "0611111111", meta_data=_opt_in(True))
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shop")
        take_backup(config, backup)
        world.shop.touch(anna, email=new)
        await rt.engine.sync("shop")
        world.shop.add_person(anna, "Bert", "Nieuw", "0622222222")
        await rt.engine.sync("shop")
    facts = restore_backup(config, backup)
    assert facts.carried["moves"] == 1
    async with runtime() as rt:
        (report,) = await rt.engine.sync("shop")
        assert not report.failed, report.errors
    return world, runtime, world.deals.record_for(new)["id"]  # type: ignore[index]


async def test_a_move_since_the_backup_is_made_when_someone_took_the_former_address(
    tmp_path: Path,
) -> None:
    """The move was left out because the replaced store held rows under Anna's former
    address (Bert's), and the backup's rows under it, Anna's system ids, became Bert's: his
    next change was written onto Anna's Pipedrive person. Her ids go with her now, and Bert
    keeps his own."""
    world, runtime, anna_person = await _moved_and_her_address_taken_then_restored(tmp_path)
    world.shop.touch("anna@voorbeeld.nl", first_name="Bertus")
    async with runtime() as rt:
        await rt.engine.sync("shop")
    held = world.deals.record_for("anna.nieuw@voorbeeld.nl")
    assert held is not None and held["id"] == anna_person and held["first_name"] == "Anna"
    bert = world.deals.record_for("anna@voorbeeld.nl")
    assert bert is not None and bert["id"] != anna_person and bert["first_name"] == "Bertus"


async def test_after_that_restore_the_newcomer_s_erasure_leaves_the_mover_s_records(
    tmp_path: Path,
) -> None:
    """Bert, under Anna's former address, is erased: Anna's HubSpot contact and Pipedrive
    person, which the restored store used to file under Bert, stay."""
    world, runtime, _ = await _moved_and_her_address_taken_then_restored(tmp_path)
    async with runtime() as rt:
        view = await DsrService(rt).erase("anna@voorbeeld.nl")
        assert view.status == "completed"
    assert world.crm.holds("anna.nieuw@voorbeeld.nl")
    assert world.deals.holds("anna.nieuw@voorbeeld.nl")
    assert not world.crm.holds("anna@voorbeeld.nl")
    assert not world.deals.holds("anna@voorbeeld.nl")


async def test_a_member_written_by_a_sync_cut_short_before_a_restore_is_unsubscribed(
    tmp_path: Path,
) -> None:
    """Anna signs up with consent after the backup; the sync that sends her is cut short
    when Mailchimp fails on the first audience after writing... nothing there, then takes
    her on the second: the payload stays queued. The backup is restored (the outbox is
    emptied), and Anna opts out. She was left subscribed on the second audience: the
    restored store knew nothing was sent, and a withdrawal goes only where something was
    (the fan-out model found it). Now the queued payload counts as perhaps sent."""
    world = World()
    config = load_config(write_config(tmp_path, world))
    runtime = _runtime(world, config)
    anna = "anna@voorbeeld.nl"
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shop")
        take_backup(config, backup)
        world.shop.add_person(anna, "Anna", "Klant", meta_data=_opt_in(True))
        world.news.faults.fail_next = rt.systems["news"].client.retry.attempts
        await rt.engine.sync("shop")
        world.news.faults.fail_next = 0
        assert world.news.member(LISTS[0], anna) is None
        assert world.news.member(LISTS[1], anna)["status"] == "subscribed"  # type: ignore[index]
        assert rt.store.outbox_counts().get("news") == 1
    facts = restore_backup(config, backup)
    assert facts.carried["delivered_since"] >= 1
    world.shop.touch(anna, meta_data=_opt_in(False))
    async with runtime() as rt:
        (report,) = await rt.engine.sync("shop")
        assert not report.errors, report.errors
    assert world.news.member(LISTS[0], anna) is None  # a withdrawal adds nobody
    assert world.news.member(LISTS[1], anna)["status"] == "unsubscribed"  # type: ignore[index]


async def test_a_withdrawal_still_queued_when_a_backup_is_restored_is_sent_after_it(
    tmp_path: Path,
) -> None:
    """Bram is subscribed, the store backed up; he then withdraws his consent while
    Mailchimp is down, and the withdrawal waits in the outbox. The restore empties the
    outbox, and what was on its way is sent again by the next sync: the withdrawal too. Its
    mark read as a correction's (a withdrawal that went), it was never sent, and Bram stayed
    subscribed for good."""
    world = World()
    config = load_config(write_config(tmp_path, world))
    runtime = _runtime(world, config)
    bram = "bram@voorbeeld.nl"
    world.shop.add_person(bram, "Bram", "Klant", meta_data=_opt_in(True))
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shop")
        assert world.news.member(LISTS[0], bram)["status"] == "subscribed"  # type: ignore[index]
        take_backup(config, backup)
        world.shop.touch(bram, meta_data=_opt_in(False))
        world.news.faults.down = True
        (withdrawn,) = await rt.engine.sync("shop")
        world.news.faults.down = False
        assert withdrawn.destinations["news"].withdrawn == 1
        assert withdrawn.destinations["news"].retry_later == 1
    restore_backup(config, backup)
    async with runtime() as rt:
        (report,) = await rt.engine.sync("shop")
        assert not report.errors, report.errors
        world.news.log.clear()
        await rt.engine.sync("shop")
        assert world.news.log.writes() == []  # sent once, not on every sync
    for list_id in LISTS:
        assert world.news.member(list_id, bram)["status"] == "unsubscribed"  # type: ignore[index]


@pytest.mark.parametrize("replaced", ["readable", "lost"])
async def test_a_change_of_an_incremental_source_queued_in_the_backup_reaches_the_system(
    tmp_path: Path, replaced: str
) -> None:
    """Anna's new phone number is read from Shopify while HubSpot is down and queued; Bram
    signs up well after, and the pull's cursor is past Anna's change, overlap and all. The
    store is backed up then, and restored later (over the store, or over nothing: the disk
    was lost). The restore empties the outbox, and the backup's cursor never offered her
    change again: HubSpot kept the old number for good. Each flow's next run now reads its
    source in full, and the change gets there."""
    world = shopify_crm.World()
    wall = [1_790_000_000.0]
    world.shopify.wall_clock = lambda: wall[0]
    config = load_config(shopify_crm._config(tmp_path, world.shopify, world.crm))
    runtime = _runtime(world, config)
    anna, bram = "anna@voorbeeld.nl", "bram@voorbeeld.nl"
    world.shopify.add_person(anna, "Anna", "Klant", "+31612345678")
    backup = tmp_path / "backup.db"
    async with runtime() as rt:
        await rt.engine.sync("shopify")
        wall[0] += 1
        world.shopify.touch(anna, phone="+31687654321")
        world.crm.faults.down = True
        (queued,) = await rt.engine.sync("shopify")
        assert queued.destinations["crm"].retry_later == 1
        wall[0] += 3600  # well past the pull's overlap
        world.shopify.add_person(bram, "Bram", "Klant", "+31611111111")
        await rt.engine.sync("shopify")
        assert rt.store.outbox_count("crm") == 2
        take_backup(config, backup)
    world.crm.faults.down = False
    if replaced == "lost":
        for name in config.store_path.parent.glob(config.store_path.name + "*"):
            name.unlink()
    facts = restore_backup(config, backup)
    assert facts.outbox_dropped == 2
    (flow,) = config.flows
    async with runtime() as rt:
        why = reads_in_full(rt.store, flow, flow_shape(config, flow))  # as `status` says
        (report,) = await rt.engine.sync("shopify")
        assert not report.errors, report.errors
        assert reads_in_full(rt.store, flow, flow_shape(config, flow)) is None
    assert shopify_crm._crm_phone(world.crm, bram) == "+31611111111"
    assert shopify_crm._crm_phone(world.crm, anna) == "+31687654321"
    assert facts.reads_in_full_next == ["shopify"]
    assert why is not None and why.startswith("a backup was restored")
