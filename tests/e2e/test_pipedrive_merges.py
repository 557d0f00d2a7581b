"""A shop feeding Pipedrive, where a salesperson merges persons: the merge webhook is learned."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.pipedrive import basic_authorization
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, jobs
from connector.adapter import WebhookRequest
from connector.daemon import Daemon
from connector.demo import REPO_MAPPINGS
from connector.dsr import DsrService
from connector.merges import (
    ANOTHER_S,
    MERGE_LEARNED,
    MERGE_NOT_LEARNED,
    MERGE_READS,
    NOT_LIVE,
    NOT_THEIR_ADDRESS,
    UNREAD,
)
from connector.model import normalise_email
from connector.runtime import Runtime, open_runtime
from connector.webhooks import receive
from tests.conftest import MASTER_KEY, VirtualTime

HOOK_SECRET = "klantsync:hook-password"
URL = "https://connector.test/webhooks/deals"


class World:
    """A shop and a Pipedrive company, in-process."""

    def __init__(self) -> None:
        self.shop = WooCommerceSandbox()
        self.deals = PipedriveSandbox(rate_limit=None, search_rate_limit=None)


def write_config(directory: Path, world: World) -> Path:
    (directory / "master.key").write_text(MASTER_KEY)
    secrets = directory / "secrets"
    secrets.mkdir()
    values = {
        "sk": world.shop.credentials()["consumer_key"],
        "ss": world.shop.credentials()["consumer_secret"],
        "deals": world.deals.credentials()["api_token"],
        "deals_hook": HOOK_SECRET,
    }
    for name, value in values.items():
        (secrets / name).write_text(value)
    path = directory / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"
[sync]
retry_base_seconds = 0

[systems.shop]
adapter = "woocommerce"
base_url = "https://shop.test"
mapping = "{REPO_MAPPINGS / "woocommerce.toml"}"
credentials = {{ consumer_key = "file:secrets/sk", consumer_secret = "file:secrets/ss" }}

[systems.deals]
adapter = "pipedrive"
base_url = "https://klant.pipedrive.test/api/v2"
mapping = "{REPO_MAPPINGS / "pipedrive.toml"}"
credentials = {{ api_token = "file:secrets/deals" }}
webhooks = {{ secret = "file:secrets/deals_hook" }}

[[flows]]
name = "shop"
source = "shop"
destinations = ["deals"]
"""
    )
    return path


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "shop": httpx.ASGITransport(app=world.shop.app()),
        "deals": httpx.ASGITransport(app=world.deals.app()),
    }
    async with open_runtime(
        write_config(tmp_path, world), transports=transports, sleep=clock.sleep, clock=clock.clock
    ) as runtime:
        yield runtime


async def _synced(world: World, rt: Runtime, email: str, first: str) -> str:
    """The customer's Pipedrive id, once a sync has written them there."""
    world.shop.add_person(email, first, "Klant")
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    known = rt.store.external_id("deals", _sid(rt, email))
    assert known is not None
    return known


def _sid(rt: Runtime, email: str) -> str:
    return rt.keyring.subject_id(normalise_email(email))


async def _delivered(world: World, rt: Runtime, merged_id: str, kept_id: str) -> None:
    """Pipedrive's two v2 deliveries of the merge, received and their jobs run."""
    headers = {
        "content-type": "application/json",
        "authorization": basic_authorization(HOOK_SECRET),
    }
    for body in world.deals.merge_deliveries(merged_id, kept_id):
        outcome = receive(rt, "deals", WebhookRequest("POST", URL, headers, body), time.time())
        assert outcome.status == 200
    daemon = Daemon(rt)
    while (job := jobs.claim_next(rt.store, rt.keyring)) is not None:
        await daemon.jobs.run_job(job)


def _entries(rt: Runtime, kind: str) -> list[dict[str, object]]:
    return [dict(entry.data) for entry in audit.entries(rt.store) if entry.kind == kind]


async def test_a_merge_teaches_the_person_kept_so_a_sync_updates_it_and_an_erasure_deletes_it(
    world: World, rt: Runtime
) -> None:
    """A salesperson merges the customer's person into theirs (a work address primary, the
    customer's a second one). The delete Pipedrive sends names the person kept: klantsync
    reads it, finds the customer's address on it and knows the customer by it. The next
    sync updates it instead of adding a person, and an erasure deletes it as theirs, not
    leaving it as a housemate's."""
    email = "klant@example.nl"
    former = await _synced(world, rt, email, "Anna")
    kept = world.deals.add_person("werk@bedrijf.example", "Anna", "Werk")
    world.deals.merge(former, kept)
    await _delivered(world, rt, former, kept)
    assert rt.store.external_id("deals", _sid(rt, email)) == kept
    assert _entries(rt, MERGE_LEARNED) == [{"system": "deals", "from": former, "to": kept}]
    world.shop.touch(email, last_name="Later")
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    assert world.deals.person_count() == 1
    record = world.deals.record_for(email)
    assert record is not None and str(record["id"]) == kept and record["last_name"] == "Later"
    assert [(e["value"], e["primary"]) for e in record["emails"]] == [
        (email, True),
        ("werk@bedrijf.example", False),
    ]
    view = await DsrService(rt).erase(email)
    assert view.status == "completed", [(s.system, s.status, s.detail) for s in view.systems]
    assert world.deals.person_count() == 0
    assert not world.deals.holds(email) and not world.deals.holds("werk@bedrijf.example")


async def test_a_merge_into_another_customer_s_person_makes_neither_the_other_s(
    world: World, rt: Runtime
) -> None:
    """Two customers' persons merged: the kept one holds both addresses, but the identity map
    knows it as the other customer's. The one merged away is left as before (its next sync
    adds a person of its own), and the audit says why, by ids."""
    one = await _synced(world, rt, "een@example.nl", "Een")
    two = await _synced(world, rt, "twee@example.nl", "Twee")
    world.deals.merge(two, one)
    await _delivered(world, rt, two, one)
    assert rt.store.external_id("deals", _sid(rt, "twee@example.nl")) == two
    assert rt.store.external_id("deals", _sid(rt, "een@example.nl")) == one
    assert _entries(rt, MERGE_LEARNED) == []
    assert _entries(rt, MERGE_NOT_LEARNED) == [
        {"system": "deals", "from": two, "to": one, "why": ANOTHER_S}
    ]


async def test_a_merge_naming_a_person_without_the_customer_s_address_is_not_followed(
    world: World, rt: Runtime
) -> None:
    """The kept person is read, not taken on the delivery's word: one that does not hold the
    customer's address (an unsigned delivery names whatever it likes) teaches nothing."""
    email = "klant@example.nl"
    former = await _synced(world, rt, email, "Anna")
    stranger = world.deals.add_person("iemand@anders.example", "Iemand", "Anders")
    await _delivered(world, rt, former, stranger)
    assert rt.store.external_id("deals", _sid(rt, email)) == former
    assert _entries(rt, MERGE_NOT_LEARNED) == [
        {"system": "deals", "from": former, "to": stranger, "why": NOT_THEIR_ADDRESS}
    ]


async def _merge_jobs_run(world: World, rt: Runtime, merged_id: str, kept_id: str) -> list[str]:
    """The merge's deliveries received; each job run as the worker runs it. Returns how
    each ``merged`` job ended, in the order they ran."""
    headers = {
        "content-type": "application/json",
        "authorization": basic_authorization(HOOK_SECRET),
    }
    for body in world.deals.merge_deliveries(merged_id, kept_id):
        outcome = receive(rt, "deals", WebhookRequest("POST", URL, headers, body), time.time())
        assert outcome.status == 200
    daemon = Daemon(rt)
    ran: list[str] = []
    while (job := jobs.claim_next(rt.store, rt.keyring)) is not None:
        await daemon.jobs._run_one(job)
        finished = jobs.get(rt.store, job.id)
        assert finished is not None
        if (job.params or {}).get("event") == "merged":
            ran.append(finished.status)
    return ran


async def test_a_merge_whose_kept_person_cannot_be_read_for_now_is_read_again_by_a_later_job(
    world: World, rt: Runtime
) -> None:
    """Pipedrive answers 503 past the client's retries when the kept person is read: the job
    queues another that reads it again, and that one learns the merge."""
    email = "klant@example.nl"
    former = await _synced(world, rt, email, "Anna")
    kept = world.deals.add_person("werk@bedrijf.example", "Anna", "Werk")
    world.deals.merge(former, kept)
    attempts = rt.systems["deals"].client.retry.attempts
    world.deals.faults.fail_next = attempts
    assert await _merge_jobs_run(world, rt, former, kept) == ["done", "done"]
    assert rt.store.external_id("deals", _sid(rt, email)) == kept
    assert _entries(rt, MERGE_LEARNED) == [{"system": "deals", "from": former, "to": kept}]
    assert _entries(rt, MERGE_NOT_LEARNED) == []


async def test_a_merge_whose_kept_person_stays_unreadable_is_left_not_learned_after_a_bound(
    world: World, rt: Runtime
) -> None:
    """A Pipedrive down through every read: the merge is read again a bounded number of
    times, then its job fails and the audit says, by ids, that it was not learned."""
    email = "klant@example.nl"
    former = await _synced(world, rt, email, "Anna")
    kept = world.deals.add_person("werk@bedrijf.example", "Anna", "Werk")
    world.deals.merge(former, kept)
    world.deals.faults.fail_next = 10_000
    ran = await _merge_jobs_run(world, rt, former, kept)
    assert ran == ["done"] * (MERGE_READS - 1) + ["failed"]
    assert rt.store.external_id("deals", _sid(rt, email)) == former
    assert _entries(rt, MERGE_NOT_LEARNED) == [
        {"system": "deals", "from": former, "to": kept, "why": UNREAD}
    ]


async def test_a_merge_whose_kept_person_is_gone_is_recorded_as_not_learned(
    world: World, rt: Runtime
) -> None:
    """A 404 for the kept person is not worth another read: not learned, said by ids."""
    email = "klant@example.nl"
    former = await _synced(world, rt, email, "Anna")
    kept = world.deals.add_person("werk@bedrijf.example", "Anna", "Werk")
    world.deals.merge(former, kept)
    world.deals.faults.fail_status, world.deals.faults.fail_next = 404, 1
    assert await _merge_jobs_run(world, rt, former, kept) == ["done"]
    assert rt.store.external_id("deals", _sid(rt, email)) == former
    assert _entries(rt, MERGE_NOT_LEARNED) == [
        {"system": "deals", "from": former, "to": kept, "why": NOT_LIVE}
    ]
