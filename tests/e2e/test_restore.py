"""A restore against the four systems: what happened after the backup is not undone.

The backup knows the sync's state as it was; the world moved on. A customer subscribed to the
newsletter since, who then opts out, is unsubscribed; an erasure left open for a system that
was down is still retried and finished; a privacy webhook's job queued since still runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from connector.backup import take_backup
from connector.config import Config, load_config
from connector.dsr import DsrService
from connector.restore import restore_backup
from connector.runtime import Runtime, open_runtime
from tests.conftest import VirtualTime
from tests.e2e.test_multi_system import LISTS, World, write_config


def _opt_in(consent: bool) -> list[dict[str, str]]:
    return [{"key": "marketing_opt_in", "value": "yes" if consent else "no"}]


def _runtime(world: World, config: Config) -> Callable[[], Any]:
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
