"""An erasure that arrives while a sync's write for the same person is on its way.

The sync checked the suppression list before the erasure was recorded; its batch then waits in
the rate limiter or on the network. Whatever order things land in, the person must end up gone
from the CRM, and a receipt must not say "verified absent" while the write can still land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.adapter import OutboundRecord, Page, UpsertResult
from connector.crypto import manifest_context
from connector.dsr import DsrService, RequestView
from connector.dsr_store import DsrStore
from connector.errors import RetryableError
from connector.inflight import InFlight
from connector.runtime import Runtime
from connector.transforms import _e164_by_parser
from tests.conftest import CANARY_EMAIL, RuntimeFactory


def _hold_upserts(rt: Runtime) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the CRM's next upsert wait (past the suppression check) until released."""
    adapter: Any = rt.systems["crm"].adapter
    real = adapter.upsert
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        entered.set()
        await release.wait()
        adapter.upsert = real
        result: list[UpsertResult] = await real(records)
        return result

    adapter.upsert = held
    return entered, release


async def _changed_and_syncing(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> tuple[asyncio.Task[Any], asyncio.Event]:
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
    await rt.engine.sync()
    assert crm.holds(CANARY_EMAIL)
    shop.touch(CANARY_EMAIL, first_name="Changed")
    entered, release = _hold_upserts(rt)
    sync = asyncio.create_task(rt.engine.sync())
    await entered.wait()  # the batch has passed the suppression check
    return sync, release


async def _until_the_erasure_waits(rt: Runtime, erasure: asyncio.Task[Any]) -> None:
    """Let the erasure run until it waits on the write in flight (it must not finish)."""
    for _ in range(10_000):
        if rt.engine.in_flight.waiting:
            return
        assert not erasure.done(), "the erasure did not wait for the write in flight"
        await asyncio.sleep(0)
    raise AssertionError("the erasure never waited for the write in flight")


async def test_an_erasure_waits_for_a_write_in_flight_and_deletes_what_it_wrote(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    sync, release = await _changed_and_syncing(rt, shop, crm)
    erasure = asyncio.create_task(DsrService(rt).erase(CANARY_EMAIL))
    await _until_the_erasure_waits(rt, erasure)
    # The erasure has recorded its suppression entry and waits for the write to land.
    assert rt.store.suppressed([rt.keyring.subject_id(CANARY_EMAIL)])
    release.set()
    view = await erasure
    await sync
    assert view.status == "completed"
    assert view.system("crm").status == "verified_absent"
    assert not crm.holds(CANARY_EMAIL)
    assert rt.store.outbox_counts() == {}
    # The write's acknowledgement, committed after the erasure, brought back no trace.
    assert rt.store.subject_numbers([rt.keyring.subject_id(CANARY_EMAIL)]) == {}
    for table in ("identities", "delivered"):
        assert rt.store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)  # noqa: S608


async def test_a_write_that_lands_after_another_process_erased_the_person_is_erased_again(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    async with open_rt() as rt:
        sync, release = await _changed_and_syncing(rt, shop, crm)
        # A second runtime on the same store stands for another process (a CLI command
        # beside the daemon): it cannot see this one's writes in flight.
        async with open_rt() as other:
            view = await DsrService(other).erase(CANARY_EMAIL)
        assert view.system("crm").status == "verified_absent"
        release.set()
        (report,) = await sync
        assert not crm.holds(CANARY_EMAIL)
        assert report.destinations["crm"].suppressed_at_delivery == 1
        assert rt.store.outbox_counts() == {}
        entries = [e for e in audit.entries(rt.store) if e.kind == audit.SYNC_ERASED_ON_ARRIVAL]
        assert [(e.subject_id, e.data) for e in entries] == [
            (rt.keyring.subject_id(CANARY_EMAIL), {"system": "crm", "erased": True, "found": True})
        ]


async def test_an_erasure_that_waited_for_a_first_write_says_the_crm_held_the_person(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A new customer's first write to HubSpot is on its way when her erasure arrives. The
    erasure looks in HubSpot (nothing yet) and waits for the write, which makes the
    contact; the sync, finding her suppressed, gdpr-deletes it as it lands. The erasure's
    own call then finds nothing: its part is verified absent, with a note saying the record
    klantsync's write made was erased on arrival and what HubSpot keeps (the blocklist),
    not that HubSpot held nothing of her (README: a write on its way "is let land and then
    deleted with the rest")."""
    shop.add_person(CANARY_EMAIL, "Anna", "Klant")
    entered, release = _hold_upserts(rt)
    sync = asyncio.create_task(rt.engine.sync())
    await entered.wait()
    erasure = asyncio.create_task(DsrService(rt).erase(CANARY_EMAIL))
    await _until_the_erasure_waits(rt, erasure)
    assert not crm.holds(CANARY_EMAIL)  # the snapshot found nothing
    release.set()
    view = await erasure
    await sync
    assert not crm.holds(CANARY_EMAIL) and crm.is_blocklisted(CANARY_EMAIL)
    assert view.status == "completed"
    assert view.system("crm").status == "verified_absent"
    (part,) = [s for s in DsrStore(rt.store).systems(view.id) if s.system == "crm"]
    assert part.result["found"] is True
    assert "blocklist" in part.result["note"] and "sync.erased_on_arrival" in part.result["note"]


async def test_an_erasure_on_arrival_before_the_person_s_erasure_is_not_counted_for_it(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """Only a record the sync erased while this erasure was open counts: one erased on
    arrival for an erasure of the person before (from another process) says nothing of
    what the system held when they asked again."""
    async with open_rt() as rt:
        sync, release = await _changed_and_syncing(rt, shop, crm)
        async with open_rt() as other:
            first = await DsrService(other).erase(CANARY_EMAIL)
        release.set()
        await sync
        db = DsrStore(rt.store)
        ids = [rt.keyring.subject_id(CANARY_EMAIL)]
        assert db.erased_on_arrival(first.id, ids[0], "crm", ids)
        # A later request of theirs: received after the sync erased the record.
        audit.append(rt.store, "dsr.received", {"request": "er-later", "kind": "erase"}, ids[0])
        assert not db.erased_on_arrival("er-later", ids[0], "crm", ids)
        assert not db.erased_on_arrival(first.id, ids[0], "shop", ids)


async def test_in_flight_writes_are_counted_per_system_and_subject() -> None:
    flights = InFlight()
    with flights.writing("crm", ["a", "b"]), flights.writing("crm", ["a"]):
        assert flights.busy("crm", ["a"])
        assert not flights.busy("news", ["a"])
        assert not flights.busy("crm", ["c"])
    assert not flights.busy("crm", ["a", "b"])
    await flights.landed("crm", ["a"])  # nothing in flight: returns at once


async def test_a_refused_write_for_a_person_erased_meanwhile_leaves_no_dead_letter(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A dead letter keeps the sealed record: for someone just erased it must not be written."""
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
    await rt.engine.sync()
    shop.touch(CANARY_EMAIL, first_name="Changed")
    adapter: Any = rt.systems["crm"].adapter
    real = adapter.upsert
    entered, release = asyncio.Event(), asyncio.Event()

    async def refused(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        entered.set()
        await release.wait()
        adapter.upsert = real
        return [UpsertResult(r.ref, "failed", reason="INVALID_EMAIL") for r in records]

    adapter.upsert = refused
    sync = asyncio.create_task(rt.engine.sync())
    await entered.wait()
    erasure = asyncio.create_task(DsrService(rt).erase(CANARY_EMAIL))
    await _until_the_erasure_waits(rt, erasure)
    release.set()
    view = await erasure
    await sync
    assert view.status == "completed"
    assert rt.store.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 0
    assert rt.store.outbox_counts() == {}


async def test_a_late_write_that_cannot_be_erased_again_fails_the_run_and_is_audited(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """Nothing is left to retry from (the erasure deleted the row): the run says so."""
    async with open_rt() as rt:
        sync, release = await _changed_and_syncing(rt, shop, crm)
        async with open_rt() as other:
            await DsrService(other).erase(CANARY_EMAIL)
        adapter: Any = rt.systems["crm"].adapter

        async def down(subject: Any) -> Any:
            raise RetryableError("crm", "POST", "/gdpr-delete", 503, "")

        adapter.erase = down
        release.set()
        (report,) = await sync
        assert report.destinations["crm"].not_erased == 1 and report.failed
        assert rt.store.outbox_counts() == {}
        kinds = [e.data for e in audit.entries(rt.store) if e.kind == audit.SYNC_ERASED_ON_ARRIVAL]
        assert kinds == [{"system": "crm", "erased": False}]


async def test_a_page_read_while_an_erasure_suppresses_its_person_does_not_queue_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory
) -> None:
    """The erasure suppresses the person's shop record after the page checked the list and
    before it was queued (here: at the 'pulled' checkpoint, between the two). The page asks
    again before queueing: nothing is queued for them, under this address or any."""
    shop.seed_synthetic(3, seed=71)
    record = shop.store.get(2)
    assert record is not None
    state: dict[str, Any] = {}

    def checkpoint(name: str) -> None:
        if name == "pulled" and "rt" in state:
            rt = state["rt"]
            key = rt.engine.ids.record_key("shop", "2")
            rt.store.suppress([key], "erasure", "er-test")

    async with open_rt(checkpoint=checkpoint) as rt:
        state["rt"] = rt
        (report,) = await rt.engine.sync()
    assert report.suppressed == 1 and report.destinations["crm"].queued == 2
    assert not crm.holds(record["email"]) and crm.contact_count() == 2


async def _first_delivery_answer_lost(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A new customer's first delivery reaches HubSpot and its answer is lost: the contact
    exists, its id unknown to the connector, the payload still queued."""
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
    adapter: Any = rt.systems["crm"].adapter
    real = adapter.upsert

    async def answer_lost(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        adapter.upsert = real
        await real(records)
        raise RetryableError("crm", "POST", "/crm/v3/objects/contacts/batch/upsert", None, "reset")

    adapter.upsert = answer_lost
    await rt.engine.sync()
    assert crm.holds(CANARY_EMAIL) and rt.store.outbox_counts() == {"crm": 1}


async def test_an_erasure_reaches_the_address_a_delivery_with_a_lost_answer_went_under(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A new customer's first delivery reaches HubSpot but its answer is lost: the contact
    exists, its id unknown to the connector, the payload still queued. The customer then
    changes their address in the shop and asks, under the new one, to be erased before the
    next sync. Only the queued payload knew the former address, and the contact under it
    stayed in HubSpot after a completed erasure (the fan-out model found it in Mailchimp)."""
    await _first_delivery_answer_lost(rt, shop, crm)
    moved = "anna.nieuw@voorbeeld.nl"
    shop.touch(CANARY_EMAIL, email=moved)
    view = await DsrService(rt).erase(moved)
    assert view.status == "completed" and view.system("crm").status == "verified_absent"
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(moved)
    assert "dsr.queued_addresses" in [e.kind for e in audit.entries(rt.store)]
    await rt.engine.sync()  # nothing left queued brings them back
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(moved)


async def test_an_access_request_finds_what_a_delivery_with_a_lost_answer_made(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path
) -> None:
    """As above, but the customer asks what is held: the contact made under the former
    address, which only the queued payload knew, is in the bundle. It was left out, and the
    answer to an access request was short of a record (the fan-out model found it)."""
    await _first_delivery_answer_lost(rt, shop, crm)
    shop.touch(CANARY_EMAIL, email="anna.nieuw@voorbeeld.nl")
    view = await DsrService(rt).access("anna.nieuw@voorbeeld.nl", tmp_path / "bundle")
    assert view.status == "completed"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    assert len(data["systems"]["crm"]["records"]) == 1


async def test_a_refusal_settled_after_an_erasure_from_another_process_leaves_nothing(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A refusal read back before the erasure, written after it (another process cannot wait
    for this one's writes): no dead letter lands with the erased person's sealed record."""
    async with open_rt() as daemon:
        shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
        await daemon.engine.sync()
        shop.touch(CANARY_EMAIL, first_name="Changed")

        adapter: Any = daemon.systems["crm"].adapter
        real_upsert = adapter.upsert

        async def refused(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
            adapter.upsert = real_upsert
            return [UpsertResult(r.ref, "failed", reason="INVALID_EMAIL") for r in records]

        adapter.upsert = refused
        late: Any = daemon.engine.batches.late
        real_erase_late = late.settle
        views: list[Any] = []

        async def then_cli_erases(*args: Any, **kwargs: Any) -> Any:
            # The list has just been read again (nobody on it yet); before the batch's
            # outcome is written, the CLI beside the daemon erases the person.
            results = await real_erase_late(*args, **kwargs)
            if not views:
                async with open_rt() as cli:
                    views.append(await DsrService(cli).erase(CANARY_EMAIL))
            return results

        late.settle = then_cli_erases
        await daemon.engine.sync()

        (view,) = views
        assert view.status == "completed"
        receipt = DsrService(daemon).receipt(view.id) or ""
        assert "dead letters" in receipt  # the receipt says they were deleted
        sid = daemon.keyring.subject_id(CANARY_EMAIL)
        left = daemon.store.db.execute(
            "SELECT system, reason, length(payload) FROM dead_letters WHERE subject_id=?", (sid,)
        ).fetchall()
        assert left == [], (
            f"the erased person's sealed record is kept as a dead letter after their erasure "
            f"{view.id} completed: {left}"
        )


async def _retry_held_at_the_shop(
    rt: Runtime, request_id: str
) -> tuple[asyncio.Task[RequestView], asyncio.Event]:
    """Start a retry of ``request_id`` on ``rt`` (another process) and hold it at its first
    call to the shop, after it read the request; set the event to let it go on."""
    shop_adapter: Any = rt.systems["shop"].adapter
    real_find = shop_adapter.find_records
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_find(subject: Any, *, orders: bool = False) -> Any:
        shop_adapter.find_records = real_find
        entered.set()
        await release.wait()
        return await real_find(subject, orders=orders)

    shop_adapter.find_records = held_find
    run = asyncio.create_task(DsrService(rt).retry(request_id))
    await entered.wait()
    return run, release


async def test_a_retry_from_another_process_does_not_undo_what_this_one_noted(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The CLI's `dsr retry` has read the request; the daemon's retry meanwhile notes the
    address a queued payload carried and deletes its outbox row (the CRM is down). The
    CLI's run used to write its older manifest back over that note: the next retry then
    erased under the new address only, and the receipt said the CRM held nobody while the
    contact made under the queued address was still there. Now the CLI's run stops before
    writing and runs again from what is there."""
    async with open_rt() as daemon, open_rt() as cli:
        await _first_delivery_answer_lost(daemon, shop, crm)
        shop.touch(CANARY_EMAIL, email="anna.nieuw@voorbeeld.nl")
        view = await DsrService(daemon).queue_erase("anna.nieuw@voorbeeld.nl")

        # The CLI's `dsr retry ID` starts first: it has read the request and its manifest
        # and is asking the shop for the address's record (its former-address look).
        cli_run, release = await _retry_held_at_the_shop(cli, view.id)

        # Meanwhile the daemon's retry runs the request through; the CRM is down, so its part
        # stays open. Before deleting the outbox row it noted the address the payload carried.
        crm.faults.down = True
        mid = await DsrService(daemon).retry(view.id)
        assert mid.is_open and mid.system("crm").status == "failed"
        assert "dsr.queued_addresses" in [e.kind for e in audit.entries(daemon.store)]
        assert daemon.store.outbox_counts() == {}

        # The CLI's run goes on with the manifest it read before, and writes it back.
        release.set()
        assert (await cli_run).is_open  # stopped, ran again from what the daemon left

        # The CRM is back; the next retry (the daemon's) settles its part.
        crm.faults.down = False
        done = await DsrService(daemon).retry(view.id)
        assert done.status == "completed"
        assert not crm.holds(CANARY_EMAIL), (
            f"erasure {done.id} completed with crm {done.system('crm').status!r}, but the "
            "contact made under the address the queued payload carried is still in the CRM"
        )


async def test_a_retry_from_another_process_writes_no_manifest_into_a_completed_erasure(
    open_rt: RuntimeFactory, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The CLI's run of the request has read it (open) and waits on the shop; the daemon's
    run completes it meanwhile, destroying the sealed manifest (e-mail, phone, every
    system's ids) as its receipt says. The CLI's run then writes its copy back."""
    async with open_rt() as daemon, open_rt() as cli:
        shop.add_person(CANARY_EMAIL, "Anna", "Klant", "0612345678")
        await daemon.engine.sync()
        view = await DsrService(daemon).queue_erase(CANARY_EMAIL)

        cli_run, release = await _retry_held_at_the_shop(cli, view.id)

        done = await DsrService(daemon).retry(view.id)
        assert done.status == "completed"
        receipt = json.loads(DsrService(daemon).receipt(view.id) or "{}")
        assert "erasure manifest" in receipt["receipt"]["connector"]["deleted"]
        (manifest,) = daemon.store.db.execute(
            "SELECT manifest FROM dsr_requests WHERE id=?", (view.id,)
        ).fetchone()
        assert manifest is None  # destroyed on completion, as the receipt says

        release.set()
        assert (await cli_run).status == "completed"
        (manifest,) = daemon.store.db.execute(
            "SELECT manifest FROM dsr_requests WHERE id=?", (view.id,)
        ).fetchone()
        assert manifest is None, (
            "the completed erasure holds a sealed manifest again (the person's e-mail and "
            f"ids), though its signed receipt says it was deleted: "
            f"{daemon.keyring.open_json(manifest, manifest_context(view.id))!r}"
        )


def _read_ahead_of_the_engine(rt: Runtime, email: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the engine at its first page while the source is read on ahead of it.

    Returns ``read`` (set once the page holding ``email`` is read, and waits in the
    read-ahead, not yet taken) and ``release`` (lets the engine take its pages)."""
    adapter: Any = rt.systems["shop"].adapter
    pull, take = adapter.pull, rt.engine.taker.take
    read, release = asyncio.Event(), asyncio.Event()

    async def watched(cursor: str | None) -> AsyncIterator[Page]:
        async with contextlib.aclosing(pull(cursor)) as pages:
            async for page in pages:
                if any(record.get("email") == email for record in page.records):
                    read.set()
                yield page

    async def held(*args: Any, **kwargs: Any) -> None:
        await release.wait()
        await take(*args, **kwargs)

    adapter.pull = watched
    rt.engine.taker.take = held  # type: ignore[method-assign]
    return read, release


def _number_kept(text: str) -> bool:
    """Whether the phone parser's cache holds ``text`` (as read for a Dutch shop)."""
    before = _e164_by_parser.cache_info().hits
    _e164_by_parser(text, "NL")
    kept = _e164_by_parser.cache_info().hits > before
    _e164_by_parser.cache_clear()
    return kept


#: A number only the full parser reads (with its country code): kept in its cache.
PARSED_PHONE = "+31 6 8765 4321"


async def test_an_erasure_of_someone_on_a_page_read_ahead_keeps_them_out(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The person's record waits in a page read ahead of the engine while their erasure runs
    to completion (receipt and all): the page, taken afterwards, queues nothing for them,
    this run or the next, and leaves nothing of theirs in the daemon's memory."""
    shop.seed_synthetic(250, seed=5)
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", PARSED_PHONE)  # on the third page
    await rt.engine.sync()
    assert crm.holds(CANARY_EMAIL)
    read, release = _read_ahead_of_the_engine(rt, CANARY_EMAIL)
    sync = asyncio.create_task(rt.engine.sync(full=True))
    await read.wait()
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed" and not crm.holds(CANARY_EMAIL)
    assert not sync.done()
    release.set()
    (report,) = await sync
    assert not report.failed and report.pulled == 251
    assert not crm.holds(CANARY_EMAIL)
    assert rt.store.subject_numbers([rt.keyring.subject_id(CANARY_EMAIL)]) == {}
    held = [e for _, _, e in rt.engine._fresh.values() if e.get("email") == CANARY_EMAIL]
    assert held == []
    assert not _number_kept(PARSED_PHONE), "the erased person's number outlived the run"
    await rt.engine.sync(full=True)
    assert not crm.holds(CANARY_EMAIL) and crm.contact_count() == 250


async def test_an_erasure_under_a_former_address_keeps_out_the_new_one_read_ahead(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The person changed their address at the shop and is erased under the former one
    while the shop's record under the new one waits in a page read ahead: neither address
    reaches the CRM, this run or the next."""
    shop.seed_synthetic(250, seed=6)
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", PARSED_PHONE)
    await rt.engine.sync()
    assert crm.holds(CANARY_EMAIL)
    new = "anna.nieuw@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new)
    read, release = _read_ahead_of_the_engine(rt, new)
    sync = asyncio.create_task(rt.engine.sync(full=True))
    await read.wait()
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed", view
    assert not sync.done()
    release.set()
    (report,) = await sync
    assert not report.failed and report.suppressed <= 1
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(new)
    assert rt.store.subject_numbers([rt.keyring.subject_id(new)]) == {}
    assert not _number_kept(PARSED_PHONE), "the erased person's number outlived the run"
    await rt.engine.sync(full=True)
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(new)
    assert crm.contact_count() == 250


async def test_an_erasure_under_a_former_address_keeps_out_the_new_one_taken_while_it_runs(
    rt: Runtime, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """As above, but the page read ahead is taken while the erasure runs: after it
    suppressed the former address, before it came to the shop's record (it asks the shop
    first). The record, known under the erased address, is the erased person's: taken as
    someone new, it was written to the CRM under the new address, which the erasure (asked
    with the former one) never reached, and its receipt said the CRM held nobody."""
    shop.seed_synthetic(250, seed=6)
    shop.add_person(CANARY_EMAIL, "Anna", "Klant", PARSED_PHONE)
    await rt.engine.sync()
    new = "anna.nieuw@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new)
    read, release = _read_ahead_of_the_engine(rt, new)
    taken = asyncio.Event()
    take = rt.engine.taker.take

    async def noted(*args: Any, **kwargs: Any) -> None:
        await take(*args, **kwargs)
        if any(record.get("email") == new for record in args[3].records):
            taken.set()

    rt.engine.taker.take = noted  # type: ignore[method-assign]
    adapter: Any = rt.systems["shop"].adapter
    find_records = adapter.find_records

    async def asked(*args: Any, **kwargs: Any) -> Any:
        if not release.is_set():  # the erasure's first question to the shop
            release.set()
            await taken.wait()
        return await find_records(*args, **kwargs)

    adapter.find_records = asked
    sync = asyncio.create_task(rt.engine.sync(full=True))
    await read.wait()
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert release.is_set() and taken.is_set()
    (report,) = await sync
    assert view.status == "completed" and view.system("crm").status == "verified_absent"
    assert report.suppressed == 1 and report.destinations["crm"].queued == 0
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(new)
    await rt.engine.sync(full=True)
    assert not crm.holds(CANARY_EMAIL) and not crm.holds(new)
    assert crm.contact_count() == 250
