"""The daemon doing several things at once: flows, webhook jobs, resyncs and requests.

A correction beside a write on its way (or read into a batch that waits for a connection, or
answered and not yet acknowledged), a copy in clear beside a row sealed anew, a
scheduled run beside a webhook's sync of one person, a resync a stop cut short or that the
running daemon cannot run, an erasure queued by a system taken out since.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import jobs
from connector.adapter import OutboundRecord, UpsertResult
from connector.daemon import Daemon
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from tests.conftest import CANARY_EMAIL, VirtualTime
from tests.connector.test_daemon import daemon, daemon_config  # noqa: F401 (fixtures)
from tests.e2e.test_multi_system import World
from tests.e2e.test_multi_system import write_config as write_world_config

#: The person corrected in the tests below: a Shopify customer, synced to the CRM.
EMAIL = "recht@example.nl"


def _shopify_world(tmp_path: Path) -> tuple[World, Callable[[], Any]]:
    """The systems, with the person in Shopify, and an opener of runtimes on them."""
    world = World()
    config = write_world_config(tmp_path, world)
    world.shopify.add_person(EMAIL, "Jan", "Fout", "+31612345678", marketing_state="SUBSCRIBED")

    def runtime() -> Any:
        clock = VirtualTime()
        return open_runtime(
            config, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
        )

    return world, runtime


async def _synced_then_changed(service: Any, world: World) -> None:
    """The person synced, then changed in Shopify (a change the CRM has not had yet)."""
    (report,) = await service.engine.sync("shopify")
    assert not report.failed, report.errors
    world.shopify.touch(EMAIL, phone="+31612345679")


def _hold_crm_upserts(rt: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """The CRM's next upsert waits (the batch is on its way: the rate limiter, the network)."""
    adapter: Any = rt.systems["crm"].adapter
    real = adapter.upsert
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        adapter.upsert = real
        entered.set()
        await release.wait()
        result: list[UpsertResult] = await real(records)
        return result

    adapter.upsert = held
    return entered, release


async def test_a_correction_made_while_a_sync_s_older_write_is_on_its_way_stands(
    tmp_path: Path,
) -> None:
    """The daemon's sync has a payload for the person on its way to the CRM (queued before
    the correction, with the old last name) when a correction comes in through the daemon.
    It waits for that write to land: landing after it, the older write overwrote the
    correction, and with a source klantsync only reads (Shopify) nothing sent it again."""
    world, runtime = _shopify_world(tmp_path)
    email = EMAIL
    async with runtime() as service:
        await _synced_then_changed(service, world)
        entered, release = _hold_crm_upserts(service)
        sync = asyncio.create_task(service.engine.sync("shopify"))
        await asyncio.wait_for(entered.wait(), 10)
        correction = asyncio.create_task(DsrService(service).rectify(email, {"last_name": "Goed"}))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not correction.done()  # waiting for the write on its way
        release.set()
        await sync
        view = await correction
        assert view.system("crm").status == "done"
        await service.engine.sync("shopify")  # nothing changed in Shopify since
    contact = world.crm.record_for(email)
    assert contact is not None and contact["properties"]["lastname"] == "Goed"


async def test_a_correction_beside_the_daemon_is_not_undone_by_its_copy_in_clear(
    tmp_path: Path,
) -> None:
    """The daemon's sync queued a payload for the person (carrying the old last name) and
    keeps it in clear in memory (Engine._fresh) until its delivery worker gets to the row
    (a backlog: a rate-limited CRM). `dsr rectify` beside it writes the correction into the
    queued row, as README promises ("a payload queued before the correction ... takes
    it"); the daemon then delivers its copy in clear, the old name, over the correction.
    A Shopify source is never written, so nothing sends the correction again."""
    world, runtime = _shopify_world(tmp_path)
    email = EMAIL
    async with runtime() as service, runtime() as cli:
        await _synced_then_changed(service, world)
        waiting, go = asyncio.Event(), asyncio.Event()
        # The CRM's delivery worker is busy elsewhere (its slots taken by earlier batches
        # waiting on the rate limit): it reads the row only after the correction.
        engine: Any = service.engine
        real_deliver = engine.delivery.drain

        async def late_deliver(flow: Any, dest: Any, *args: Any) -> Any:
            if dest.name == "crm":
                waiting.set()
                await go.wait()
            return await real_deliver(flow, dest, *args)

        engine.delivery.drain = late_deliver
        sync = asyncio.create_task(service.engine.sync("shopify"))
        await asyncio.wait_for(waiting.wait(), 10)
        for _ in range(200):  # the pull queues the page meanwhile
            await asyncio.sleep(0)
        assert service.store.outbox_counts(flow="shopify").get("crm") == 1
        view = await DsrService(cli).rectify(email, {"last_name": "Goed"})
        assert view.system("crm").status == "done"
        go.set()
        await sync
        engine.delivery.drain = real_deliver
        await service.engine.sync("shopify")  # nothing changed in Shopify since
    contact = world.crm.record_for(email)
    assert contact is not None
    assert contact["properties"]["lastname"] == "Goed", (
        f"correction {view.id} completed (crm: done) and rewrote the queued payload, but "
        f"the daemon delivered its copy in clear: the CRM holds lastname "
        f"{contact['properties']['lastname']!r}"
    )


# -- the daemon: scheduled runs beside the job worker ----------------------------------------


def _hold_shop_finds(rt: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """The shop's next lookup of one customer's records (a webhook's targeted sync) waits."""
    adapter: Any = rt.systems["shop"].adapter
    real = adapter.find_people
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(subject: Any) -> Any:
        adapter.find_people = real
        entered.set()
        await release.wait()
        return await real(subject)

    adapter.find_people = held
    return entered, release


async def test_a_scheduled_run_due_while_a_webhook_syncs_one_person_is_not_dropped(
    daemon: Daemon,  # noqa: F811
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """A webhook's targeted sync of one customer holds the flow's lock. The flow's
    scheduled run that comes due meanwhile is skipped as "already running", as if a run of
    the flow were doing its work; but the targeted sync pulls nobody else and moves no
    cursor. The run is simply lost until the next time: for a nightly cron flow a whole
    day, and a shop sending webhooks all day (an import) can starve it for good."""
    shop.seed_synthetic(3, seed=71)
    customer = shop.store.get(2)
    assert customer is not None
    store, keyring = daemon.rt.store, daemon.rt.keyring
    jobs.enqueue(
        store,
        keyring,
        "webhook",
        {
            "system": "shop",
            "event": "changed",
            "delivery_id": "d-1",
            "external_id": str(customer["id"]),
            "email": customer["email"],
        },
    )
    job = jobs.claim_next(store, keyring)
    assert job is not None
    entered, release = _hold_shop_finds(daemon.rt)
    webhook = asyncio.create_task(daemon.jobs._run_one(job))
    await asyncio.wait_for(entered.wait(), 10)
    # The scheduler fires the flow's run now (what apscheduler calls at its time).
    scheduled = asyncio.create_task(daemon._scheduled_flow("shop-to-crm"))
    for _ in range(20):
        await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(webhook, scheduled), 30)
    assert jobs.get(store, job.id).status == "done"  # type: ignore[union-attr]
    runs = store.last_runs()
    assert "shop-to-crm" in runs and crm.contact_count() == 3, (
        f"the scheduled run was skipped while a one-person webhook sync held the flow: "
        f"runs recorded {runs}, CRM holds {crm.contact_count()} of 3 customers"
    )


async def test_a_resync_the_daemon_cannot_run_is_not_reported_done(
    daemon: Daemon,  # noqa: F811
) -> None:
    """`klantsync resync --system S` checks S against the config file and hands the job to
    the daemon; the daemon runs the config it was started with (S added since and not
    restarted yet; or the flow taken out while the job waited for the next start). The job
    then ends "done", having run no flow at all: the operator polling `GET /admin/jobs/ID`
    or reading `status` is told the resync happened."""
    store, keyring = daemon.rt.store, daemon.rt.keyring
    whole = jobs.enqueue(store, keyring, "resync", {"system": "newshop", "full": True})
    one = jobs.enqueue(
        store, keyring, "resync", {"system": "newshop", "full": False, "email": "a@example.nl"}
    )
    for _ in range(2):
        job = jobs.claim_next(store, keyring)
        assert job is not None
        await daemon.jobs._run_one(job)
    found = [jobs.get(store, n) for n in (whole, one)]
    assert [(j.status, j.result) for j in found if j is not None] == [
        ("failed", found[0].result if found[0] else None),
        ("failed", found[1].result if found[1] else None),
    ], "a resync of a system no flow of the running daemon reads ended 'done' having run nothing"


async def test_a_resync_a_stop_cuts_short_is_queued_again_not_done(
    daemon: Daemon,  # noqa: F811
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """`resync --system shop --full` handed to the daemon; SIGTERM (a deploy) comes after
    its first page. The run stops ("resumes next run"), but the job is marked done: the
    next start does not run it again, so the rest of the shop never gets the --full pass
    asked for (records refused for good on the later pages are not offered again), while
    `GET /admin/jobs/ID` says done. README: a resync the daemon stops before it ran is
    queued again for its next start; one stopped half-way is no more done than that."""
    shop.seed_synthetic(250, seed=81)
    store, keyring = daemon.rt.store, daemon.rt.keyring
    job_id = jobs.enqueue(store, keyring, "resync", {"system": "shop", "full": True})
    job = jobs.claim_next(store, keyring)
    assert job is not None and job.id == job_id
    adapter: Any = daemon.rt.systems["shop"].adapter
    real_pull = adapter.pull

    async def pull_then_sigterm(cursor: Any) -> Any:
        pages = 0
        async for page in real_pull(cursor):
            yield page
            pages += 1
            if pages == 1:
                daemon.stop()  # what SIGTERM does, then serve():
                daemon.rt.engine.request_stop()

    adapter.pull = pull_then_sigterm
    await asyncio.wait_for(daemon.jobs._run_one(job), 30)
    finished = jobs.get(store, job_id)
    assert finished is not None
    assert crm.contact_count() < 250  # the stop did cut the resync short
    assert finished.status == "queued", (
        f"a --full resync stopped after its first page by SIGTERM is {finished.status!r} "
        f"({finished.result}), with {crm.contact_count()} of 250 customers synced; the next "
        "start will not run it again"
    )


async def test_an_erasure_beside_the_daemon_leaves_no_copy_in_clear_in_its_memory(
    open_rt: Any, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The CRM refused the daemon's token (401: delivery stops), so the run queued the
    changed customers and keeps each payload in clear in memory (Engine._fresh) for a
    delivery that never read it. The person's erasure, asked with `dsr erase` beside the
    daemon, deletes their outbox rows; the daemon's copy in clear (e-mail, name, phone) is
    never read again and stays in its memory until 4096 newer payloads push it out (months
    in a quiet shop). Engine.forget exists for exactly this, but only an erasure in the
    daemon's own process calls it."""
    shop.seed_synthetic(150, seed=91)
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
    async with open_rt() as service, open_rt() as cli:
        crm.faults.fail_status, crm.faults.fail_next = 401, 10_000
        (report,) = await service.engine.sync()
        assert report.destinations["crm"].fatal
        crm.faults.fail_next = 0  # the token is fixed
        view = await DsrService(cli).erase(CANARY_EMAIL)
        assert view.status == "completed"  # nothing for the daemon to retry
        assert service.store.outbox_counts().get("crm", 0) == 150  # the person's row went
        (again,) = await service.engine.sync()  # what waits is delivered
        assert not again.destinations["crm"].fatal
        kept = [
            envelope
            for _sid, _digest, envelope in service.engine._fresh.values()
            if envelope.get("email") == CANARY_EMAIL
        ]
    assert not kept, (
        f"erasure {view.id} completed and deleted the person's queued rows, but the daemon "
        f"still holds their payload in clear in memory: fields {sorted(kept[0]['fields'])}"
    )


async def test_an_erasure_queued_by_a_system_taken_out_of_the_config_is_not_dropped(
    daemon: Daemon,  # noqa: F811
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """A Shopify `customers/redact` delivery (e-mail and customer id) was queued; before
    the worker ran it the Shopify system was taken out of the config (the client closed
    that shop) and the daemon restarted. The job fails for good ("no system of that name")
    and no erasure is opened for the e-mail it carries: the person stays in the CRM, no
    suppression entry, nothing in `dsr list` with a deadline. A request is the person's,
    not the shop's: README keeps a request open for a system taken out of the config."""
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
    await daemon.rt.engine.sync()
    assert crm.holds(CANARY_EMAIL)
    store, keyring = daemon.rt.store, daemon.rt.keyring
    job_id = jobs.enqueue(
        store,
        keyring,
        "webhook",
        {
            "system": "shopify",  # configured when the delivery was queued
            "event": "erase",
            "delivery_id": "redact-1",
            "external_id": "gid://shopify/Customer/7",
            "email": CANARY_EMAIL,
            "phone": None,
            "due_within_days": 30,
        },
    )
    job = jobs.claim_next(store, keyring)
    assert job is not None
    await daemon.jobs._run_one(job)
    finished = jobs.get(store, job_id)
    requests = DsrService(daemon.rt).list()
    assert [r.kind for r in requests] == ["erase"], (
        f"the queued erasure request ended {finished.status if finished else None!r} "
        f"({finished.result if finished else None}) and opened no request: the person is "
        f"still in the CRM: {crm.holds(CANARY_EMAIL)}"
    )


async def test_a_correction_is_not_undone_by_a_batch_that_starts_while_it_looks_up(
    tmp_path: Path,
) -> None:
    """A correction waited only for writes in flight when it asked: a delivery batch that
    took the person's queued row (old last name) while the correction looked the person up
    landed after the correction's update and undid it. The queued row takes the correction
    first now, and the correction waits for a batch that took the row before that."""
    world, runtime = _shopify_world(tmp_path)
    email = EMAIL
    async with runtime() as service:
        await _synced_then_changed(service, world)
        engine: Any = service.engine
        crm: Any = service.systems["crm"].adapter

        # The CRM's delivery worker is busy elsewhere: it takes the row a little later.
        deliver_waits, deliver_go = asyncio.Event(), asyncio.Event()
        real_deliver = engine.delivery.drain

        async def late_deliver(flow: Any, dest: Any, *args: Any) -> Any:
            if dest.name == "crm":
                deliver_waits.set()
                await deliver_go.wait()
            return await real_deliver(flow, dest, *args)

        engine.delivery.drain = late_deliver
        # The correction's lookup in the CRM takes a moment (the network)...
        past_wait = {"crm": False}
        real_landed = engine.in_flight.landed

        async def landed(system: str, ids: Sequence[str]) -> None:
            await real_landed(system, ids)
            if system in past_wait:
                past_wait[system] = True

        engine.in_flight.landed = landed
        find_entered, find_go = asyncio.Event(), asyncio.Event()
        real_find = crm.find_records

        async def slow_find(subject: Any, *, orders: bool = False) -> Any:
            if past_wait["crm"] and not find_entered.is_set():
                find_entered.set()
                await find_go.wait()
            return await real_find(subject, orders=orders)

        crm.find_records = slow_find
        # ... and the batch's upsert too.
        upsert_entered, upsert_go = asyncio.Event(), asyncio.Event()
        real_upsert = crm.upsert

        async def slow_upsert(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
            upsert_entered.set()
            await upsert_go.wait()
            result: list[UpsertResult] = await real_upsert(records)
            return result

        crm.upsert = slow_upsert

        sync = asyncio.create_task(service.engine.sync("shopify"))
        await asyncio.wait_for(deliver_waits.wait(), 10)
        for _ in range(200):  # the pull queues the page meanwhile
            await asyncio.sleep(0)
        assert service.store.outbox_counts(flow="shopify").get("crm") == 1
        correction = asyncio.create_task(DsrService(service).rectify(email, {"last_name": "Goed"}))
        await asyncio.wait_for(find_entered.wait(), 10)  # nothing was in flight: it went on
        deliver_go.set()  # the delivery worker takes the queued row (old last name)
        await asyncio.wait_for(upsert_entered.wait(), 10)
        find_go.set()
        for _ in range(50):
            await asyncio.sleep(0)
        assert not correction.done()  # waiting for the batch that took the old row
        upsert_go.set()
        view = await asyncio.wait_for(correction, 10)
        assert view.system("crm").status == "done"
        await asyncio.wait_for(sync, 10)
        engine.delivery.drain = real_deliver
        crm.find, crm.upsert = real_find, real_upsert
        engine.in_flight.landed = real_landed
        await service.engine.sync("shopify")  # nothing changed in Shopify since
    contact = world.crm.record_for(email)
    assert contact is not None
    assert contact["properties"]["lastname"] == "Goed", (
        f"correction {view.id} is done for crm, but a batch of the same process that took "
        f"the person's older queued row while the correction looked them up landed after "
        f"it: the CRM holds lastname {contact['properties']['lastname']!r}"
    )


#: A second customer, whose batch goes first in the tests below.
OTHER = "ander@voorbeeld-canary.nl"
ANNA = "anna@voorbeeld-canary.nl"


async def _spin(turns: int = 200) -> None:
    """Let every ready task run until it blocks (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def _gate_first_upsert(rt: Runtime) -> tuple[asyncio.Event, asyncio.Event, list[list[str]]]:
    """The CRM's first upsert call waits until released; later calls go straight through.
    Returns (entered, release, the e-mails of each call in order)."""
    adapter: Any = rt.systems["crm"].adapter
    real = adapter.upsert
    entered, release = asyncio.Event(), asyncio.Event()
    calls: list[list[str]] = []

    async def upsert(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        calls.append([r.email for r in records])
        if len(calls) == 1:
            entered.set()
            await release.wait()
        result: list[UpsertResult] = await real(records)
        return result

    adapter.upsert = upsert
    return entered, release, calls


async def test_a_correction_reaches_a_batch_that_read_the_row_and_waits_for_a_connection(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A run has read Anna's queued row into its next batch, which waits for a free
    connection behind a batch in flight. A correction of her name seals her row anew and
    waits for her writes in flight: none yet, so it writes the correction and is done. The
    waiting batch sends her row as it is now, the correction in it: sent as read, the old
    name landed over the correction, and its acknowledgement took the corrected row out of
    the outbox (README: "What waits in the outbox takes the correction first")."""
    rt.systems["crm"].limits = dataclasses.replace(
        rt.systems["crm"].limits, max_concurrency=1, batch_size=1
    )
    shop.add_person(OTHER, "Ander", "Klant")
    shop.add_person(ANNA, "Anna", "Klant")
    await rt.engine.sync()
    assert crm.record_for(ANNA) is not None
    shop.touch(OTHER, first_name="Anders")
    shop.touch(ANNA, first_name="Annie")
    entered, release, calls = _gate_first_upsert(rt)
    sync = asyncio.create_task(rt.engine.sync())
    await entered.wait()  # OTHER's batch is in flight; Anna's is read and waits for a slot
    await _spin()
    assert calls == [[OTHER]]
    view = await DsrService(rt).rectify(ANNA, {"first_name": "Johanna"})
    assert view.system("crm").status == "done"
    release.set()
    await sync
    assert calls == [[OTHER], [ANNA]]
    crm_anna = crm.record_for(ANNA)
    assert crm_anna is not None and crm_anna["properties"]["firstname"] == "Johanna"


def _pull_in_two(rt: Runtime, first: str) -> tuple[asyncio.Event, asyncio.Event]:
    """The shop's next pull yields the record of ``first`` as a page of its own, then waits
    until released before the page with the rest. Returns (waiting, release)."""
    adapter: Any = rt.systems["shop"].adapter
    real = adapter.pull
    waiting, release = asyncio.Event(), asyncio.Event()

    async def pull(cursor: str | None) -> Any:
        adapter.pull = real
        pages = [page async for page in real(cursor)]
        records = [r for page in pages for r in page.records]
        mine = [r for r in records if r["email"] == first]
        rest = [r for r in records if r["email"] != first]
        yield dataclasses.replace(pages[-1], records=mine, cursor=None, complete=False)
        waiting.set()
        await release.wait()
        yield dataclasses.replace(pages[-1], records=rest)

    adapter.pull = pull
    return waiting, release


async def test_a_correction_s_mark_to_send_again_outlives_an_acknowledgement_committed_late(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A run delivers Anna's changed name (Annie); its acknowledgement waits for the run's
    next write (the next page). Meanwhile her correction (Johanna) reaches the shop and the
    CRM, and marks her to be sent again on the next sync (README: "a change back to the
    former values there reaches every system sent a corrected field"). The write counts as
    in flight until its acknowledgement is committed, so the correction has it committed
    before the mark: committed after, it wrote the hash of Annie over the mark, and her
    change back to Annie in the shop looked like no change (the CRM kept Johanna)."""
    shop.add_person(ANNA, "Anna", "Klant")
    shop.add_person(OTHER, "Ander", "Klant")
    await rt.engine.sync()
    shop.touch(ANNA, first_name="Annie")
    waiting, release = _pull_in_two(rt, ANNA)
    sync = asyncio.create_task(rt.engine.sync())
    await waiting.wait()
    for _ in range(10_000):  # Anna's write lands; its acknowledgement waits for the next page
        crm_anna = crm.record_for(ANNA)
        if crm_anna is not None and crm_anna["properties"]["firstname"] == "Annie":
            break
        await asyncio.sleep(0)
    await _spin()
    assert rt.store.outbox_counts() == {"crm": 1}  # not acknowledged yet
    view = await DsrService(rt).rectify(ANNA, {"first_name": "Johanna"})
    assert view.status == "completed"
    assert view.system("crm").status == "done" and view.system("shop").status == "done"
    release.set()
    await sync
    shop.touch(ANNA, first_name="Annie")  # back to the value before the correction
    await rt.engine.sync()
    crm_anna = crm.record_for(ANNA)
    assert crm_anna is not None
    assert crm_anna["properties"]["firstname"] == "Annie"
