"""The engine: minimisation, change detection, crash safety, rate limits, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.adapter import Page
from connector.cli import main
from connector.cli_sync import print_report
from connector.demo import REPO_MAPPINGS
from connector.errors import RecordError, RetryableError
from connector.mapping import load_mapping
from connector.pages import READ_AHEAD_PAGES, TAKEN_TOGETHER
from connector.ratelimit import RateLimit
from connector.runtime import Runtime
from connector.targeted import sync_subjects
from tests.conftest import FakeClock, write_config

HUBSPOT_ALLOWED = {
    load_mapping(REPO_MAPPINGS / "hubspot.toml").fields[name].path
    for name in load_mapping(REPO_MAPPINGS / "hubspot.toml").outbound_fields
}

#: What a pull asks the shop for: what the shipped mapping reads, and no more.
SHOP_ASKED = ["billing", "date_created", "email", "first_name", "id", "last_name", "meta_data"]


def _upserted(crm: HubSpotSandbox) -> int:
    """Records written (batch upsert by e-mail, batch update by id), as the sandbox saw them."""
    return sum(
        e.records
        for e in crm.log.entries
        if e.path.endswith(("/batch/upsert", "/batch/update")) and e.status < 300
    )


def _emails(shop: WooCommerceSandbox, count: int) -> list[str]:
    emails = []
    for customer_id in range(1, count + 1):
        record = shop.store.get(customer_id)
        assert record is not None
        emails.append(record["email"])
    return emails


async def test_only_mapped_fields_reach_the_crm(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Date of birth, notes, IP addresses and other unmapped fields never reach HubSpot."""
    shop.seed_synthetic(250, seed=1)
    shop.add_person(
        "extra@example.nl",
        "Ed",
        "Extra",
        "0612345678",
        meta_data=[{"key": "date_of_birth", "value": "1970-01-01"}],
        customer_note="secret note",
    )
    (report,) = await rt.engine.sync()
    assert report.pulled == 251
    assert crm.contact_count() == 251
    received = crm.log.property_names()
    assert received <= HUBSPOT_ALLOWED
    assert {"email", "firstname", "lastname", "phone"} <= received
    assert "date_of_birth" not in received
    # Meta data is asked for (it holds the consent), and what else it holds is dropped.
    assert report.withheld_fields["meta_data.date_of_birth"] >= 1
    # The rest of a customer is not even asked for: it never leaves the shop.
    assert report.asked_fields == SHOP_ASKED
    assert "customer_note" not in report.withheld_fields
    assert not report.failed


async def test_a_shop_that_sends_whole_records_has_the_unmapped_fields_dropped_and_counted(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A shop that ignores ``_fields`` (WordPress before 4.9.8, a plugin) sends every field:
    the mapping drops what it does not read, and counts it."""
    shop.honours_fields = False
    shop.seed_synthetic(20, seed=1)
    shop.add_person("extra@example.nl", "Ed", "Extra", customer_note="secret note")
    (report,) = await rt.engine.sync()
    assert report.pulled == 21 and crm.contact_count() == 21
    assert crm.log.property_names() <= HUBSPOT_ALLOWED
    assert report.withheld_fields["customer_note"] >= 1
    assert report.withheld_fields["username"] == 21
    assert report.withheld_fields["shipping.address_1"] == 20  # the synthetic ones
    assert not report.failed
    # The report does not claim the unread fields stayed in the shop: they came.
    assert {"username", "avatar_url", "shipping.address_1"} <= set(report.unasked_arrived)
    console = Console(record=True, width=400)
    print_report(console, report)
    text = console.export_text()
    assert "never left" not in text and "it does not honour _fields" in text


async def test_the_report_says_the_fields_a_shop_was_not_asked_for_never_left_it(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    shop.seed_synthetic(3, seed=1)
    (report,) = await rt.engine.sync()
    assert report.unasked_arrived == []
    console = Console(record=True, width=400)
    print_report(console, report)
    text = console.export_text()
    assert "asked shop only for: billing, date_created, email" in text
    assert "(its other fields never left it)" in text


async def test_the_report_counts_the_values_a_mapping_could_not_read(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A phone number that is none was dropped without a word, and the CRM kept the number
    it had: the report says how many values of which field were not sent (counts only)."""
    shop.seed_synthetic(3, seed=1)
    shop.add_person("ed@example.nl", "Ed", "Extra", "call me after five", country="NL")
    shop.add_person("bo@example.nl", "Bo", "Baker", "12", country="NL")
    (report,) = await rt.engine.sync()
    assert report.unreadable_values == {"phone": 2}
    assert report.as_dict()["unreadable_values"] == {"phone": 2}
    assert crm.contact_count() == 5 and not report.failed
    console = Console(record=True, width=400)
    print_report(console, report)
    text = console.export_text()
    assert "phone: 2 values not readable, not sent" in text
    assert "call me" not in text


async def test_second_sync_writes_nothing_and_three_changes_send_three(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Unchanged records cause no write; changing three customers sends exactly three."""
    shop.seed_synthetic(300, seed=2)
    await rt.engine.sync()
    assert _upserted(crm) == 300
    crm.log.clear()
    (second,) = await rt.engine.sync()
    assert crm.log.writes() == []
    assert second.destinations["crm"].unchanged == 300
    for index, email in enumerate(_emails(shop, 3)):
        shop.touch(email, first_name=f"Changed{index}")
    crm.log.clear()
    (third,) = await rt.engine.sync()
    assert _upserted(crm) == 3
    assert third.destinations["crm"].updated == 3


async def test_acknowledgements_ride_in_the_next_pages_transaction(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A first sync commits about once per page, not once per page and once per batch, and
    every delivery is acknowledged by its end: nothing stays queued, nothing is sent twice."""
    shop.seed_synthetic(1000, seed=12)
    commits = 0

    def trace(statement: str) -> None:
        nonlocal commits
        commits += statement.strip().upper() == "COMMIT"

    rt.store.db.set_trace_callback(trace)
    try:
        (report,) = await rt.engine.sync()
    finally:
        rt.store.db.set_trace_callback(None)
    pages = batches = 10  # 1,000 customers, 100 a page and 100 a batch
    assert report.destinations["crm"].created == 1000
    # One per page, the run's start and finish, the last acknowledgements: not one per batch.
    assert commits < pages + batches
    assert rt.store.outbox_count() == 0
    crm.log.clear()
    (again,) = await rt.engine.sync()
    assert crm.log.writes() == [] and again.destinations["crm"].unchanged == 1000


async def test_ingested_records_leave_the_flows_cursor_alone(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A webhook's records are queued and delivered; the pull's cursor is not theirs to set.

    A pull of the same flow may move the cursor while they are taken; an ingest that wrote
    back the cursor it had read would move it backwards.
    """
    shop.seed_synthetic(5, seed=4)
    records = [shop.store.get(n) for n in range(1, 6)]
    rt.store.set_cursor("shop-to-crm", "shop", "cursor-of-the-pull")
    monkeypatch.setattr(type(rt.store), "get_cursor", lambda *_args: "stale-cursor")
    report = await rt.engine.ingest("shop-to-crm", [r for r in records if r is not None])
    assert report.destinations["crm"].created == 5 == crm.contact_count()
    (cursor,) = rt.store.db.execute(
        "SELECT cursor FROM cursors WHERE flow='shop-to-crm' AND system='shop'"
    ).fetchone()
    assert cursor == "cursor-of-the-pull"


async def test_change_in_unmapped_field_sends_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A change only in a field the CRM never receives does not cause a write."""
    shop.seed_synthetic(20, seed=3)
    await rt.engine.sync()
    crm.log.clear()
    shop.touch(_emails(shop, 1)[0], customer_note="changed note")
    await rt.engine.sync()
    assert crm.log.writes() == []


async def test_dry_run_queues_and_sends_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A dry run reports what would be sent but writes neither outbox nor CRM."""
    shop.seed_synthetic(30, seed=4)
    (report,) = await rt.engine.sync(dry_run=True)
    assert report.destinations["crm"].queued == 30
    assert crm.contact_count() == 0 and rt.store.outbox_count() == 0
    assert rt.store.get_cursor("shop-to-crm", "shop") is None


async def test_a_dry_runs_runtime_leaves_stored_ids_as_they_are(
    open_rt: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a runtime cloaks the ids an older store kept as the system gave them (a
    write); a dry run's leaves that to the next real run (it sends nothing, and reads an
    id not cloaked yet as it is)."""
    from connector.ids import SystemIds

    cloaked: list[bool] = []
    monkeypatch.setattr(SystemIds, "cloak_stored", lambda _self, _store: cloaked.append(True))
    async with open_rt(dry_run=True):
        assert cloaked == []
    async with open_rt():
        assert cloaked == [True]


class Crash(Exception):
    """Simulated process death at a checkpoint."""


@pytest.mark.parametrize("point", ["pulled", "queued", "delivered", "acked"])
@pytest.mark.parametrize("after", [1, 3])
async def test_crash_at_any_step_loses_nothing_and_duplicates_nothing(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    point: str,
    after: int,
) -> None:
    """Killed between pull, queue, deliver and ack, a re-run delivers everyone exactly once."""
    shop.seed_synthetic(1200, seed=5)  # 12 pages: taken in 3 or more, up to 500 records each
    hits = {"n": 0}

    def checkpoint(name: str) -> None:
        if name == point:
            hits["n"] += 1
            if hits["n"] == after:
                raise Crash(name)

    with pytest.raises(Crash):
        async with open_rt(checkpoint=checkpoint) as rt:
            await rt.engine.sync()
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert not report.failed
        if not report.complete:
            (report,) = await rt.engine.sync()
        assert rt.store.outbox_count() == 0
    assert crm.contact_count() == 1200
    emails = [crm.record_for(e) for e in _emails(shop, 1200)]
    assert all(emails)
    async with open_rt() as rt:
        crm.log.clear()
        await rt.engine.sync()
        assert crm.log.writes() == []


async def test_429_storm_and_intermittent_5xx_complete_with_nothing_lost(
    shop: WooCommerceSandbox, open_rt: Callable[..., Any], tmp_path: Path
) -> None:
    """Under a tight rate limit and every 4th call failing, the sync still delivers everyone."""
    shop.seed_synthetic(600, seed=6)
    clock = FakeClock()
    storm = HubSpotSandbox(rate_limit=RateLimit(2, 10), clock=clock)
    storm.faults.fail_every = 4

    # Every rejected call moves the fake clock on, so the window frees without real sleeping.
    original = storm.admit

    def admit(bucket: str = "default") -> Any:
        clock.advance(2.0)
        return original(bucket)

    storm.admit = admit  # type: ignore[method-assign]
    shop.faults.fail_every = 5
    import httpx

    from connector.runtime import open_runtime
    from tests.conftest import VirtualTime, write_config

    path = write_config(tmp_path)
    transports = {
        "shop": httpx.ASGITransport(app=shop.app()),
        "crm": httpx.ASGITransport(app=storm.app()),
    }
    time = VirtualTime()
    async with open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock) as rt:
        (report,) = await rt.engine.sync()
        while rt.store.outbox_count():
            (report,) = await rt.engine.sync()
    assert storm.rejected_429 > 0
    assert storm.contact_count() == 600
    assert report.destinations["crm"].dead_lettered == 0


async def test_rejected_record_goes_to_dead_letters_without_personal_data(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A record the CRM rejects is dead-lettered with a category; the rest are delivered."""
    shop.seed_synthetic(10, seed=8)
    shop.add_person("bad address@example.nl", "Bad", "Address", "")
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].dead_lettered == 1
    assert crm.contact_count() == 10
    (dead,) = rt.store.dead_letters()
    assert "@" not in dead.reason and "bad address" not in dead.reason
    assert report.failed


async def test_a_rejected_record_is_not_sent_again_until_it_changes_or_a_full_sync(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The same refused payload is not re-sent (nor re-dead-lettered) on every sync."""
    bad = shop.add_person("bad address@example.nl", "Bad", "Address", "")
    shop.add_person("good@example.nl", "Good", "Person", "")
    await rt.engine.sync()
    assert len(rt.store.dead_letters()) == 1
    crm.log.clear()

    (second,) = await rt.engine.sync()
    assert second.destinations["crm"].still_rejected == 1
    assert crm.log.writes() == [] and len(rt.store.dead_letters()) == 1

    record = shop.store.get(int(bad))
    assert record is not None
    record["first_name"] = "Changed"  # as an import would, past the shop's own validation
    (third,) = await rt.engine.sync()
    assert third.destinations["crm"].dead_lettered == 1  # changed: offered (and refused) again
    (dead,) = rt.store.dead_letters()  # the same record: its one dead letter, refused twice
    assert dead.refusals == 2

    (full,) = await rt.engine.sync(full=True)
    assert full.destinations["crm"].still_rejected == 0
    assert full.destinations["crm"].dead_lettered == 1  # --full retries what was refused


async def test_a_resync_of_one_person_with_full_offers_their_refused_record_again(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """`resync --system shop --email E --full`: what the CRM refused is offered again, as a
    --full sync offers it (the operator fixed the cause at the vendor); without --full not."""
    from connector.targeted import sync_subject

    shop.add_person("piet.pieters@example.nl", "Piet", "Pieters", "0612345678")
    crm.faults.fail_status, crm.faults.fail_next = 400, 1  # a validation rule at the vendor
    await rt.engine.sync()
    assert len(rt.store.dead_letters()) == 1 and not crm.holds("piet.pieters@example.nl")
    (plain,) = await sync_subject(rt, "shop", email="piet.pieters@example.nl")
    assert plain.destinations["crm"].still_rejected == 1
    (full,) = await sync_subject(rt, "shop", email="piet.pieters@example.nl", full=True)
    assert full.destinations["crm"].still_rejected == 0
    assert crm.holds("piet.pieters@example.nl") and rt.store.dead_letters() == []


async def test_a_batch_hubspot_refuses_for_one_record_dead_letters_that_record_alone(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    """One input names a property the portal lacks (one customer's date of birth, mapped to
    a custom property not created yet): that record alone becomes a dead letter. HubSpot
    fails that input alone in a batch whose inputs carry trace ids, as klantsync's do (a
    207); a batch refused whole is raised, and the engine sends one by one to find the
    record (tests/adapters/test_hubspot.py covers both answers)."""
    shop_map = tmp_path / "woocommerce.toml"
    shop_map.write_text(
        (REPO_MAPPINGS / "woocommerce.toml").read_text()
        + '\n[fields.date_of_birth]\npath = "meta_data.date_of_birth"\ntransform = ["date"]\n'
        'purpose = "Birthday greeting"\ndirection = "in"\n'
    )
    crm_map = tmp_path / "hubspot.toml"
    crm_map.write_text(
        (REPO_MAPPINGS / "hubspot.toml").read_text()
        + '\n[fields.date_of_birth]\npath = "klant_geboortedatum"\ntransform = ["date"]\n'
        'purpose = "Birthday greeting"\n'
    )
    config = write_config(tmp_path, shop_mapping=shop_map, crm_mapping=crm_map)
    for n in range(5):
        shop.add_person(f"klant{n}@example.nl", f"Klant{n}", "Test")
    shop.add_person("jarig@example.nl", "Jarig", "Test", date_of_birth="1980-05-17")
    async with open_rt(config) as rt:
        await rt.engine.sync()
        letters = rt.store.dead_letters("crm")
    assert crm.contact_count() == 5
    assert len(letters) == 1


async def test_a_record_refused_on_every_full_sync_keeps_one_dead_letter(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused again and again, a record has one dead letter: first and last refusal, a count;
    and its unchanged payload is still not offered on a normal sync."""
    times = iter(["2026-03-01T09:00:00+00:00", "2026-03-02T09:00:00+00:00"])
    shop.add_person("bad address@example.nl", "Bad", "Address", "")
    shop.add_person("good@example.nl", "Good", "Person", "")
    monkeypatch.setattr("connector.store_dead_letters.utcnow", lambda: "2026-03-01T09:00:00+00:00")
    await rt.engine.sync()
    for _ in range(2):
        monkeypatch.setattr(
            "connector.store_dead_letters.utcnow", lambda: next(times, "2026-03-03T09:00:00+00:00")
        )
        (full,) = await rt.engine.sync(full=True)
        assert full.destinations["crm"].dead_lettered == 1
    (dead,) = rt.store.dead_letters()
    assert dead.refusals == 3
    assert dead.first_refused_at == "2026-03-01T09:00:00+00:00"
    assert dead.created_at > dead.first_refused_at  # the latest refusal's time
    assert dead.reason and "@" not in dead.reason and "bad address" not in dead.reason
    assert rt.store.counts()["dead_letters"] == 1

    crm.log.clear()
    (normal,) = await rt.engine.sync()
    assert normal.destinations["crm"].still_rejected == 1
    assert crm.log.writes() == []
    assert rt.store.dead_letters()[0].refusals == 3


async def test_a_record_delivered_after_a_fix_at_the_source_leaves_no_dead_letter(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once the shop fixes a refused record and the CRM takes it, its dead letter is gone
    and `status` lists none."""
    bad = shop.add_person("bad address@example.nl", "Bad", "Address", "")
    shop.add_person("good@example.nl", "Good", "Person", "")
    await rt.engine.sync()
    await rt.engine.sync(full=True)
    assert len(rt.store.dead_letters()) == 1

    record = shop.store.get(int(bad))
    assert record is not None
    record["email"] = "bad.address@example.nl"  # corrected in the shop
    (fixed,) = await rt.engine.sync()
    assert fixed.destinations["crm"].dead_lettered == 0 and not fixed.failed
    assert crm.holds("bad.address@example.nl")
    assert rt.store.dead_letters() == []
    assert rt.store.rejected_hashes(["crm"], [rt.keyring.subject_id("bad.address@example.nl")]) == {
        "crm": {}
    }

    capsys.readouterr()
    assert main(["-c", str(config_path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["dead_letters"] == [] and status["counts"]["dead_letters"] == 0


@pytest.mark.parametrize("full", [False, True], ids=["sync", "full sync"])
async def test_a_dead_letter_goes_once_the_system_holds_what_the_source_says_again(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
    full: bool,
) -> None:
    """Anna's change of address is refused (HubSpot has the address on another contact:
    CONFLICT) and then undone at the shop: her contact holds what the shop holds, nothing is
    refused any more, and the next sync (a --full one too) finds her unchanged and clears
    the letter. Kept, `status` listed it until retention, and it held back whoever took over
    the address it named (connector/moves.py)."""
    shop.add_person("anna@example.nl", "Anna", "Jansen", "0612345678")
    crm.add_person("taken@example.nl", "Other", "Person")
    await rt.engine.sync()
    shop.touch("anna@example.nl", email="taken@example.nl")
    (refused,) = await rt.engine.sync()
    assert refused.destinations["crm"].dead_lettered == 1 and len(rt.store.dead_letters()) == 1
    shop.touch("taken@example.nl", email="anna@example.nl")  # back as it was
    crm.log.clear()

    (undone,) = await rt.engine.sync(full=full)

    assert undone.destinations["crm"].unchanged == 1 and crm.log.writes() == []
    contact = crm.record_for("anna@example.nl")
    assert contact is not None and contact["properties"]["firstname"] == "Anna"
    assert rt.store.dead_letters() == []
    capsys.readouterr()
    assert main(["-c", str(config_path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dead_letters"] == []


async def test_records_refused_by_the_vendor_and_delivered_by_a_full_sync_leave_no_dead_letters(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Records the CRM refused (a fault on its side: the batch, then each one alone),
    delivered by `sync --full` once fixed: their dead letters go with the delivery."""
    shop.seed_synthetic(5, seed=3)
    crm.faults.fail_status, crm.faults.fail_next = 400, 6
    (refused,) = await rt.engine.sync()
    assert refused.destinations["crm"].dead_lettered == 5 and len(rt.store.dead_letters()) == 5
    (full,) = await rt.engine.sync(full=True)
    assert full.destinations["crm"].dead_lettered == 0 and crm.contact_count() == 5
    assert rt.store.dead_letters() == []


async def test_fatal_auth_error_stops_delivery_and_keeps_the_queue(
    shop: WooCommerceSandbox,
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    open_rt: Callable[..., Any],
    crm: HubSpotSandbox,
) -> None:
    """A wrong CRM token stops delivery; everything stays queued for the next run."""
    shop.seed_synthetic(1200, seed=9)  # more than delivery reads before it stops
    monkeypatch.setenv("T_HS_TOKEN", "wrong-token")
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert report.failed
        assert any("401" in error for error in report.errors)
        assert rt.store.outbox_count() == 1200
        # The report says what the outbox holds, not only the batches delivery had read.
        assert report.destinations["crm"].retry_later < 1200
        assert report.destinations["crm"].left_queued == 1200
        assert report.as_dict()["destinations"]["crm"]["left_queued"] == 1200
        # The next run, token still wrong: nothing new queued, all of it still waiting.
        (again,) = await rt.engine.sync()
        assert again.destinations["crm"].queued == 0
        assert again.destinations["crm"].left_queued == 1200
    monkeypatch.setenv("T_HS_TOKEN", "pat-sandbox")
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert rt.store.outbox_count() == 0
    assert crm.contact_count() == 1200


async def test_records_left_queued_say_why(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A destination that keeps failing (the connection drops): the run fails and says how."""
    shop.seed_synthetic(5, seed=11)
    crm.faults.down = True
    (report,) = await rt.engine.sync()
    crm_report = report.destinations["crm"]
    assert report.failed and crm_report.retry_later == 5
    assert crm_report.deferred == "RetryableError ReadError"
    assert report.as_dict()["destinations"]["crm"]["deferred"] == crm_report.deferred


async def test_a_destination_that_is_down_is_tried_for_a_few_batches_not_the_whole_backlog(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Every call to the CRM drops: after a few whole batches deferred in a row (each after
    all its retries) the run leaves the rest queued for the next run, instead of spending
    every batch's retries on a system known to be down (a backlog of half a million
    customers was 5,000 batches). Nothing is lost: the next run delivers everyone."""
    from connector.engine import DOWN_AFTER

    shop.seed_synthetic(1_500, seed=14)
    crm.faults.down = True
    (report,) = await rt.engine.sync()
    crm_report = report.destinations["crm"]
    batches = crm_report.requests
    in_flight = rt.systems["crm"].limits.max_concurrency
    assert batches <= DOWN_AFTER + in_flight < 15  # 15 batches were queued
    assert report.failed and any("deferred for the rest of this run" in e for e in report.errors)
    assert crm_report.left_queued == 1_500 and rt.store.outbox_count() == 1_500
    # One person's webhook (a targeted sync) costs no more than a few batches either.
    record = shop.store.get(1)
    assert record is not None
    calls = crm.faults._calls
    await sync_subjects(rt, "shop", [(str(record["id"]), record["email"])])
    assert crm.faults._calls - calls <= (calls / batches) * (DOWN_AFTER + in_flight)
    crm.faults.down = False
    (again,) = await rt.engine.sync()
    assert not again.failed and crm.contact_count() == 1_500
    assert rt.store.outbox_count() == 0


async def test_one_batch_the_vendor_keeps_failing_does_not_stop_the_others(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A batch every try of which fails (the vendor chokes on something in it) is deferred;
    the batches after it land. Only several in a row mean the system is down."""
    shop.seed_synthetic(500, seed=15)
    rt.systems["crm"].limits = dataclasses.replace(rt.systems["crm"].limits, max_concurrency=1)
    batch = [0]
    real = rt.systems["crm"].adapter.upsert

    async def first_batch_fails(records: Any) -> Any:
        batch[0] += 1
        if batch[0] == 1:
            raise RetryableError("crm", "POST", "/crm/v3/objects/contacts/batch/upsert", 500)
        return await real(records)

    rt.systems["crm"].adapter.upsert = first_batch_fails  # type: ignore[method-assign]
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].retry_later == 100
    assert crm.contact_count() == 400
    assert not any("deferred for the rest" in e for e in report.errors)


def _batch_calls(crm: HubSpotSandbox) -> int:
    return sum(1 for e in crm.log.entries if e.path.endswith(("/batch/upsert", "/batch/update")))


async def test_a_refused_batch_sent_one_by_one_stops_at_the_first_401(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """HubSpot refuses a batch as a whole (400), so the engine sends its records one by one
    to find the culprit; the token is revoked meanwhile. The first single call's 401 stops
    delivery, and no other record is sent into it (a hundred 401s for a full batch)."""
    for n in range(5):
        shop.add_person(f"klant{n}@voorbeeld-canary.nl", f"Klant{n}", "Test")
    statuses = iter([400])
    crm.faults.next_fault = lambda: next(statuses, 401)  # type: ignore[method-assign]
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].fatal
    assert rt.store.outbox_count() == 5  # nothing lost
    assert _batch_calls(crm) == 2  # the batch, then one record


async def test_a_refused_batch_sent_one_by_one_while_the_vendor_is_down_is_deferred(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The same split, with HubSpot down (503) right after refusing the batch: the first
    record spends the retry budget, and the others wait in the outbox unsent instead of
    each spending it again (800 calls for a batch of 100)."""
    for n in range(5):
        shop.add_person(f"klant{n}@voorbeeld-canary.nl", f"Klant{n}", "Test")
    statuses = iter([400])
    crm.faults.next_fault = lambda: next(statuses, 503)  # type: ignore[method-assign]
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].retry_later == 5
    assert rt.store.outbox_count() == 5
    attempts = 8  # [sync] retry_attempts in tests.conftest.write_config
    assert _batch_calls(crm) == 1 + attempts


async def test_a_record_the_vendor_chokes_on_does_not_hold_back_the_rest_of_a_split_batch(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A batch refused whole (one record invalid) is sent one by one; another record makes
    the vendor answer 500 on every try. That record is deferred, the ones after it are
    delivered and the invalid one dead-lettered: the same batch formed again next run must
    not stop at the same place for ever."""
    chokes, refused = "stik@voorbeeld-canary.nl", "fout@voorbeeld-canary.nl"
    for email in ("eerst@voorbeeld-canary.nl", chokes, "daarna@voorbeeld-canary.nl", refused):
        shop.add_person(email, "Klant", "Test")
    real = rt.systems["crm"].adapter.upsert
    path = "/crm/v3/objects/contacts/batch/upsert"

    async def upsert(records: Any) -> Any:
        emails = [r.email for r in records]
        if refused in emails:  # validated before anything is written
            raise RecordError("crm", "POST", path, 400, "VALIDATION_ERROR")
        if chokes in emails:
            raise RetryableError("crm", "POST", path, 500)
        return await real(records)

    rt.systems["crm"].adapter.upsert = upsert  # type: ignore[method-assign]
    (report,) = await rt.engine.sync()
    assert crm.holds("eerst@voorbeeld-canary.nl") and crm.holds("daarna@voorbeeld-canary.nl")
    assert report.destinations["crm"].dead_lettered == 1
    assert report.destinations["crm"].retry_later == 1
    assert not any("deferred for the rest" in e for e in report.errors)


async def test_batches_the_vendor_keeps_failing_do_not_stop_the_batches_behind_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Three batches in a row each holding a record the vendor answers 500 for are no
    outage (the system answers; something in them fails it): the batches behind them are
    delivered. Only calls that cannot reach the system (no answer, 502/503/504, a 429 past
    its retries) count toward leaving the rest for the next run."""
    rt.systems["crm"].limits = dataclasses.replace(rt.systems["crm"].limits, max_concurrency=1)
    size = rt.systems["crm"].limits.batch_size
    chokers = {f"stik{n}@voorbeeld-canary.nl" for n in range(3)}
    for n in range(3):  # one in each of the first three batches
        shop.add_person(f"stik{n}@voorbeeld-canary.nl", "Stik", f"Klant{n}")
        for m in range(size - 1):
            shop.add_person(f"k{n}-{m}@voorbeeld-canary.nl", "Klant", f"K{n}x{m}")
    shop.add_person("later@voorbeeld-canary.nl", "Later", "Klant")
    real = rt.systems["crm"].adapter.upsert

    async def upsert(records: Any) -> Any:
        if chokers & {r.email for r in records}:
            raise RetryableError("crm", "POST", "/crm/v3/objects/contacts/batch/upsert", 500)
        return await real(records)

    rt.systems["crm"].adapter.upsert = upsert  # type: ignore[method-assign]
    (report,) = await rt.engine.sync()
    assert crm.holds("later@voorbeeld-canary.nl")
    assert not any("deferred for the rest" in e for e in report.errors)


async def test_erased_subject_is_not_sent(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A suppressed subject stops at the suppression check and reaches no destination."""
    shop.seed_synthetic(5, seed=10)
    email = _emails(shop, 1)[0]
    rt.store.suppress([rt.keyring.subject_id(email)], "erasure", None)
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1
    assert crm.record_for(email) is None and crm.contact_count() == 4


async def test_a_queued_record_of_someone_erased_since_is_dropped_not_sent(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Queued while the CRM was down, then the person was put on the suppression list (by
    another process, which had not deleted the queued row yet): the delivery drops it."""
    shop.seed_synthetic(5, seed=12)
    crm.faults.down = True
    (down,) = await rt.engine.sync()
    assert down.destinations["crm"].retry_later == 5 and rt.store.outbox_count() == 5
    email = _emails(shop, 1)[0]
    rt.store.suppress([rt.keyring.subject_id(email)], "erasure", None)
    crm.faults.down = False
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].suppressed_at_delivery == 1
    assert crm.record_for(email) is None and crm.contact_count() == 4
    assert rt.store.outbox_count() == 0 and rt.store.dead_letters() == []


async def test_a_queued_payload_that_no_longer_opens_is_set_aside_and_sent_again_fresh(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A queued row whose sealed payload does not open (damaged on disk, say) is a dead
    letter that says why, and the shop's current data for the person is queued again and
    delivered (which clears the dead letter): nobody is left out until their data changes."""
    shop.seed_synthetic(3, seed=13)
    crm.faults.down = True
    async with open_rt() as rt:
        await rt.engine.sync()
        assert rt.store.outbox_count() == 3
        with rt.store.transaction() as db:
            db.execute(
                "UPDATE outbox SET payload=? WHERE id=(SELECT MIN(id) FROM outbox)", (b"\0" * 60,)
            )
    crm.faults.down = False
    caplog.set_level(logging.WARNING, logger="klantsync")
    async with open_rt() as rt:  # a new process: nothing of the queued rows in memory
        # The pull and the deliveries run side by side: the fresh copy goes in this sync or
        # the next, as the two meet.
        reports = [await rt.engine.sync(), await rt.engine.sync()]
        assert sum(r.destinations["crm"].dead_lettered for (r,) in reports) == 1
        assert crm.contact_count() == 3 and rt.store.dead_letters() == []
        assert rt.store.outbox_count() == 0
    (set_aside,) = [
        r for r in caplog.records if r.getMessage().startswith("queued payload does not open")
    ]
    assert (
        getattr(set_aside, "reason", None) == "undecryptable: damaged, or sealed under another key"
    )


async def test_pull_waits_while_every_destination_has_plenty_queued(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """With the CRM stalled, the pull stops a few batches ahead instead of queueing everyone."""
    import asyncio

    shop.seed_synthetic(4000, seed=14)
    gate = asyncio.Event()
    adapter = rt.systems["crm"].adapter
    real_upsert = adapter.upsert

    async def stalled(records: Any) -> Any:
        await gate.wait()
        return await real_upsert(records)

    adapter.upsert = stalled  # type: ignore[method-assign]
    run = asyncio.create_task(rt.engine.sync())
    for _ in range(500):
        await asyncio.sleep(0)
    pages = shop.log.count("GET", "/wp-json/wc/v3/customers")
    # High water 1,600 records: taken up to 500 at a time, that is at most 21 pages queued,
    # plus the pages read ahead and the one asked for (of 40).
    assert 0 < pages <= 21 + READ_AHEAD_PAGES + 1
    assert rt.store.outbox_count() < 1600 + TAKEN_TOGETHER
    gate.set()
    (report,) = await run
    assert not report.failed and report.pulled == 4000
    assert crm.contact_count() == 4000


async def test_a_run_the_store_failed_under_is_recorded_failed_not_running(
    shop: WooCommerceSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the store refused once (a full disk for a moment) raised out of the engine
    before its run was finished in the store: the row stayed "running", and `status` said
    the flow was running while nothing ran, until the daemon restarted."""
    import sqlite3

    shop.seed_synthetic(3, seed=5)
    enqueue = rt.store.enqueue_page
    failures = [sqlite3.OperationalError("database or disk is full")]

    def enqueue_once_failing(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(rt.store, "enqueue_page", enqueue_once_failing)
    with pytest.raises(sqlite3.OperationalError):
        await rt.engine.sync()
    (_started, finished, status, summary) = rt.store.last_runs()["shop-to-crm"]
    assert (status, finished is not None) == ("failed", True)
    assert summary is not None and "stopped on an error" in summary
    (report,) = await rt.engine.sync()  # the next run goes on as usual
    assert not report.failed and rt.store.last_runs()["shop-to-crm"][2] == "ok"


async def test_a_crashed_delivery_stops_the_others_before_the_run_ends(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    tmp_path: Path,
    env: dict[str, str],
    open_rt: Callable[..., Any],
) -> None:
    """One destination's delivery crashed (a bug): the run raised at once and the other
    destination's delivery went on, a task nobody awaited, after the run had failed and its
    flow was free again; the next run sent the same rows a second time. The others now stop
    taking batches, settle those under way, and only then does the run raise."""
    path = write_config(tmp_path)
    text = path.read_text()
    block = text[text.index("[systems.crm]") : text.index("[[flows]]")]
    second = block.replace("[systems.crm]", "[systems.crm2]")
    text = text.replace("[[flows]]", second + "\n[[flows]]")
    path.write_text(text.replace('destinations = ["crm"]', 'destinations = ["crm", "crm2"]'))
    shop.seed_synthetic(600, seed=3)  # more than a delivery has under way
    crm2 = HubSpotSandbox(rate_limit=None)
    async with open_rt(path, transports={"crm2": httpx.ASGITransport(app=crm2.app())}) as rt:
        gate = asyncio.Event()
        real, real2 = rt.systems["crm"].adapter.upsert, rt.systems["crm2"].adapter.upsert

        async def late(records: Any) -> Any:
            await gate.wait()  # the CRM answers after the other destination crashed
            return await real(records)

        async def bug(records: Any) -> Any:
            raise RuntimeError("a bug in crm2's delivery")

        rt.systems["crm"].adapter.upsert = late
        rt.systems["crm2"].adapter.upsert = bug
        before = asyncio.all_tasks()
        run = asyncio.ensure_future(rt.engine.sync())
        for _ in range(200):
            await asyncio.sleep(0)
        assert not run.done()  # waiting for the CRM's batch under way
        gate.set()
        with pytest.raises(RuntimeError):
            await run
        assert not [t for t in asyncio.all_tasks() - before if not t.done()]
        assert rt.store.last_runs()["shop-to-crm"][2] == "failed"
        rt.systems["crm"].adapter.upsert = real
        rt.systems["crm2"].adapter.upsert = real2
        written_before = crm.contact_count()
        assert 0 < written_before < 600  # it stopped taking batches
        await rt.engine.sync("shop-to-crm")
    assert crm.contact_count() == 600
    assert sum(e.records for e in crm.log.writes()) == 600  # nothing sent twice
    assert crm2.contact_count() == 600
    assert sum(e.records for e in crm2.log.writes()) == 600


def test_a_batch_every_member_of_which_got_a_500_does_not_reset_an_outage_count() -> None:
    """For adapters that answer member by member, a batch all failed by a 500 is a system
    that answered: it neither counts toward an outage nor resets the count."""
    from connector.adapter import UpsertResult
    from connector.upserts import DOWN_AFTER, Outage

    down = [UpsertResult("1", "failed", reason="503", retryable=True, unreachable=True)]
    server_error = [UpsertResult("2", "failed", reason="500", retryable=True)]
    outage = Outage()
    for _ in range(DOWN_AFTER - 1):
        outage.observe(None, down)
    outage.observe(None, server_error)
    assert not outage.down
    outage.observe(None, down)
    assert outage.down
    outage.observe(None, [UpsertResult("3", "created")])
    assert outage.in_a_row == 0


@pytest.mark.parametrize("apart", [False, True], ids=["one page", "two pages"])
async def test_two_records_under_one_address_go_as_on_pages_of_their_own(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, apart: bool
) -> None:
    """A source that keeps two records under one address (Pipedrive's persons): the first
    is written and the second held back and said, whether the two come on one page or on
    two. On one page the second silently replaced the first, so which person a system got
    depended on how the source's pages fell, and pages read meanwhile fall together."""
    shop.seed_synthetic(3, seed=21)
    first, second, third = (shop.store.get(n) for n in (1, 2, 3))
    assert first is not None and second is not None and third is not None
    twin = {**second, "email": first["email"]}  # the second record, under the first's address
    source: Any = rt.systems["shop"].adapter

    async def pull(cursor: Any) -> Any:
        if apart:
            yield Page(records=[first], cursor="1")
            yield Page(records=[twin, third], cursor=None, complete=True)
        else:
            yield Page(records=[first, twin, third], cursor=None, complete=True)

    source.pull = pull
    (report,) = await rt.engine.sync()
    contact = crm.record_for(first["email"])
    assert contact is not None
    assert contact["properties"]["firstname"] == first["first_name"]
    assert crm.contact_count() == 2  # the first and the third; the twin held back
    assert any("1 record not written" in error for error in report.errors)
