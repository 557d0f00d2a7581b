"""A customer's e-mail address changes at the shop: one person, one contact, one erasure."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.cli_sync import print_report
from connector.dsr import DsrService
from connector.engine import WAITS_FOR_LEAVER
from connector.moves import (
    Move,
    apply_moves,
    find_moves,
    in_rings,
    not_landed,
    page_ids,
    vacated_by,
)
from connector.runtime import Runtime
from connector.state import PER_SYSTEM_TABLES, QueuedPayload, Store
from tests.conftest import REPO_MAPPINGS, write_config

OLD = "anna.oud@example.nl"
NEW = "anna.nieuw@example.nl"


def _contact_id(crm: HubSpotSandbox, email: str) -> int | None:
    contact = crm.store.live(email, "email")
    return None if contact is None else contact.id


async def _anna_moves(shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime) -> int | None:
    """Anna is synced under OLD, changes her address to NEW, and is synced again.

    Returns:
        The id of the CRM contact made for her under OLD.
    """
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    await rt.engine.sync()
    contact_id = _contact_id(crm, OLD)
    shop.touch(OLD, email=NEW)
    await rt.engine.sync()
    return contact_id


async def test_an_address_change_updates_the_contact_instead_of_adding_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The contact keeps its id and gets the new address; the old address is gone."""
    shop.seed_synthetic(30, seed=4)
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    await rt.engine.sync()
    contact_id = _contact_id(crm, OLD)
    assert contact_id is not None and crm.contact_count() == 31
    old_sid = rt.keyring.subject_id(OLD)
    (old_number,) = rt.store.subject_numbers([old_sid]).values()

    shop.touch(OLD, email=NEW, first_name="Anne")
    (report,) = await rt.engine.sync()

    assert report.moved == 1 and not report.failed
    assert crm.contact_count() == 31
    assert _contact_id(crm, OLD) is None
    assert _contact_id(crm, NEW) == contact_id
    contact = crm.store.live(str(contact_id))
    assert contact is not None and contact.properties["firstname"] == "Anne"
    # The move is audited with pseudonymous ids only.
    entries = [e for e in rt.store.db.execute("SELECT kind, data FROM audit")]
    moved = [data for kind, data in entries if kind == "sync.subject_moved"]
    assert len(moved) == 1 and OLD not in moved[0] and NEW not in moved[0]
    # Nothing is left under the old subject id, not even its number.
    assert rt.store.subject_numbers([old_sid]) == {}
    assert rt.store.counts()["subjects"] == 31
    for table in PER_SYSTEM_TABLES:
        (count,) = rt.store.db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE subject_no=?",  # noqa: S608 - fixed names
            (old_number,),
        ).fetchone()
        assert count == 0, table

    (again,) = await rt.engine.sync()
    assert again.moved == 0 and again.destinations["crm"].queued == 0


def _summary(report: Any) -> str:
    """The line ``sync`` prints about those who changed their address."""
    console = Console(record=True, width=400)
    print_report(console, report)
    (line,) = [t for t in console.export_text().splitlines() if "changed their e-mail" in t]
    return line


async def test_the_summary_says_only_what_became_of_the_movers_records(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A dry run updated nothing, and a move HubSpot refused (the new address on another
    contact: CONFLICT, a dead letter) left the contact as it was: neither summary says
    "their existing records were updated". A move that landed says they were."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    crm.add_person(NEW, "Other", "Person")
    await rt.engine.sync()
    shop.touch(OLD, email=NEW)
    crm.log.clear()

    (dry,) = await rt.engine.sync(dry_run=True)
    assert dry.moved == 1 and crm.log.writes() == []
    assert "were updated" not in _summary(dry)
    assert "a sync writes their change to the records" in _summary(dry)

    (refused,) = await rt.engine.sync()
    assert refused.destinations["crm"].dead_lettered == 1 and crm.record_for(OLD) is not None
    assert "were updated" not in _summary(refused)
    assert "what was refused or left queued (above) has not reached them" in _summary(refused)

    stray = crm.store.live(NEW, "email")
    assert stray is not None
    crm.store.archive(stray)
    shop.touch(NEW, email=BERT)
    (landed,) = await rt.engine.sync()
    assert not landed.failed and landed.moved == 1 and crm.record_for(BERT) is not None
    assert "their records were updated where they were sent, not duplicated" in _summary(landed)


async def test_an_address_change_while_the_old_address_is_still_queued_adds_no_second_contact(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CRM failed the first sync past its retries, so the old address stayed queued; the
    customer then changed it. The next sync's delivery sends the queued row while its pull
    moves the subject: the move waits for that write to land and carries its contact id to
    the new address, so the new address updates that contact instead of adding a second."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    crm.faults.fail_next = 8  # the test config's retry_attempts: the batch stays queued
    (cut,) = await rt.engine.sync()
    assert cut.destinations["crm"].retry_later == 1 and crm.contact_count() == 0
    shop.touch(OLD, email=NEW)
    (report,) = await rt.engine.sync()
    assert not report.failed, report.errors
    assert crm.contact_count() == 1 and crm.holds(NEW) and not crm.holds(OLD)
    (again,) = await rt.engine.sync()
    assert again.destinations["crm"].queued == 0 and crm.contact_count() == 1


class Crash(Exception):
    """Simulated process death at a checkpoint."""


def crash_at(point: str) -> Callable[[str], None]:
    def checkpoint(name: str) -> None:
        if name == point:
            raise Crash(name)

    return checkpoint


async def test_an_address_change_after_a_write_whose_answer_was_lost_adds_no_second_contact(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """The write under the old address landed and the process died before its answer was
    committed: the row stayed queued and the CRM's id was never learned. The customer then
    changed her address, and the next sync met a CRM that did not answer. The move keeps the
    old address's write to go first: it lands on the same contact, its answer gives the id,
    and the new address updates that contact instead of adding a second one."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    with pytest.raises(Crash):
        async with open_rt(checkpoint=crash_at("delivered")) as rt:
            await rt.engine.sync()
    contact_id = _contact_id(crm, OLD)
    assert crm.contact_count() == 1 and contact_id is not None

    shop.touch(OLD, email=NEW)
    crm.faults.fail_next = 10_000  # the CRM is unreachable for the next run
    async with open_rt() as rt:
        (down,) = await rt.engine.sync()
        assert down.moved == 1 and down.destinations["crm"].left_queued == 1
    crm.faults.fail_next = 0
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert not report.failed, report.errors
        (again,) = await rt.engine.sync()
        assert again.destinations["crm"].queued == 0
        assert rt.store.outbox_count() == 0
    assert crm.contact_count() == 1, "a second contact for the same person"
    assert _contact_id(crm, NEW) == contact_id and not crm.holds(OLD)


@pytest.fixture
def gated_config(tmp_path: Path, env: dict[str, str]) -> Path:
    """The test config with the CRM gated on marketing consent (as Mailchimp is shipped)."""
    text = (REPO_MAPPINGS / "hubspot.toml").read_text()
    gated = text.replace(
        'default_region = "NL"', 'default_region = "NL"\nrequires_consent = "marketing"'
    )
    assert gated != text
    mapping = tmp_path / "hubspot-gated.toml"
    mapping.write_text(gated)
    return write_config(tmp_path, crm_mapping=mapping)


async def test_a_write_kept_from_a_former_address_is_held_unsent_without_the_consent_it_needed(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    gated_config: Path,
) -> None:
    """Anna (consent given) is queued for a consent-gated system that is down: nothing of
    her reaches it. She changes her address and withdraws her consent in one edit. The move
    keeps her queued write to go first, but the page sends her nothing there: the row is
    held, so neither that write nor the payload from before the move makes a record of
    someone who withdrew the consent it needs. (The CRM stays down through the run that
    makes the move, so the queued write cannot land before it.) Consenting again, she is
    queued into the held row, and its write goes first: one contact, under her address."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678", marketing_opt_in="yes")
    crm.faults.fail_next = 10_000  # down: the write never lands
    async with open_rt(gated_config) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["crm"].queued == 1
    assert crm.contact_count() == 0

    shop.touch(OLD, email=NEW, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    async with open_rt(gated_config) as rt:
        (report,) = await rt.engine.sync()  # still down: the move is made, nothing lands
        assert report.moved == 1 and report.destinations["crm"].gated == 1
        assert rt.store.outbox_counts() == {} and rt.store.outbox_count() == 1
    crm.faults.fail_next = 0
    async with open_rt(gated_config) as rt:
        await rt.engine.sync()
        await rt.engine.sync(full=True)
    assert crm.contact_count() == 0, "a record sent for someone without the consent it needs"

    shop.touch(NEW, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    async with open_rt(gated_config) as rt:
        await rt.engine.sync()
        assert rt.store.outbox_count() == 0
    assert crm.contact_count() == 1 and crm.holds(NEW) and not crm.holds(OLD)


async def test_erasure_reaches_what_a_landed_former_write_made_though_consent_was_withdrawn(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    gated_config: Path,
) -> None:
    """Anna (consent given) is written to a consent-gated CRM; the write lands and the
    process dies before the answer is committed: the CRM holds her under OLD, with no id
    known for her. She moves to NEW and withdraws her consent in one edit (the CRM down
    through the run that makes the move). The page sends her nothing there, and the row
    that keeps the OLD write is held, not dropped: her erasure under NEW reads OLD from it
    and erases the contact made under it. Dropped, the erasure knew OLD only as an HMAC and
    left the contact, while the receipt said she was erased."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678", marketing_opt_in="yes")
    with pytest.raises(Crash):
        async with open_rt(gated_config, checkpoint=crash_at("delivered")) as rt:
            await rt.engine.sync()
    assert crm.holds(OLD)
    shop.touch(OLD, email=NEW, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    crm.faults.fail_next = 10_000  # down through the run that makes the move
    async with open_rt(gated_config) as rt:
        (report,) = await rt.engine.sync()
        assert report.moved == 1 and report.destinations["crm"].gated == 1
    crm.faults.fail_next = 0
    async with open_rt(gated_config) as rt:
        view = await DsrService(rt).erase(NEW)
        assert view.status == "completed"
        assert rt.store.outbox_count() == 0
    assert not crm.holds(OLD), "the erasure left the contact made under her former address"


async def test_a_sync_before_a_queued_erasure_runs_leaves_it_the_former_address(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """An erasure taken from a webhook is queued (her suppression recorded) and run by a job
    later; a scheduled sync may come between. Her row keeps a write from OLD that landed
    with its answer lost (the CRM holds her under OLD, no id known). The sync sends her
    nothing, and holds the row rather than dropping it: the erasure reads OLD from it, as
    it reads every address a queued write carried, and erases the contact under it."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    with pytest.raises(Crash):
        async with open_rt(checkpoint=crash_at("delivered")) as rt:
            await rt.engine.sync()
    assert crm.holds(OLD)
    shop.touch(OLD, email=NEW)
    crm.faults.fail_next = 10_000
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert report.moved == 1 and rt.store.outbox_count() == 1
    crm.faults.fail_next = 0
    async with open_rt() as rt:
        service = DsrService(rt)
        queued = await service.queue_erase(NEW, source="webhook")
        await rt.engine.sync()  # the scheduled sync, before the erasure's job
        assert crm.contact_count() == 1  # nothing sent for her meanwhile
        view = await service.retry(queued.id)
        assert view.status == "completed"
        assert rt.store.outbox_count() == 0
    assert not crm.holds(OLD), "the erasure left the contact made under her former address"


async def test_a_write_kept_from_a_former_address_outlives_a_rename_of_its_flow(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any], config_path: Path
) -> None:
    """Her row keeps a write from OLD that landed with its answer lost (the CRM holds her
    under OLD, no id known), and the flow that queued it is then renamed. The renamed
    flow's run drops what the old name queued, but holds that row rather than dropping it:
    the renamed flow queues her into it, the kept write goes first and finds the contact,
    and the new address updates it. Dropped, she was written anew under NEW: a second
    contact, and the one under OLD, which nothing knew of any more, was left for good."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    with pytest.raises(Crash):
        async with open_rt(checkpoint=crash_at("delivered")) as rt:
            await rt.engine.sync()
    assert crm.holds(OLD)
    shop.touch(OLD, email=NEW)
    crm.faults.fail_next = 10_000
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert report.moved == 1 and rt.store.outbox_count() == 1
    crm.faults.fail_next = 0
    config_path.write_text(
        config_path.read_text().replace('name = "shop-to-crm"', 'name = "webshop-to-crm"')
    )
    async with open_rt() as rt:
        (renamed,) = await rt.engine.sync()
        assert renamed.flow == "webshop-to-crm" and not renamed.failed, renamed.errors
        assert rt.store.outbox_count() == 0
    assert crm.contact_count() == 1 and crm.holds(NEW) and not crm.holds(OLD)


async def test_a_write_queued_under_a_consent_withdrawn_since_is_not_delivered(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    gated_config: Path,
) -> None:
    """Anna (consent given) is queued for a consent-gated system that is down. She then
    withdraws her consent, without moving, and a run reads that while the system is still
    down. It has no withdrawal to send, so the page sends her nothing there, and the write
    queued under the consent she gave goes too: delivered once the system was back, it made
    a record of someone known to no longer give the consent it needs."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678", marketing_opt_in="yes")
    crm.faults.fail_next = 10_000
    async with open_rt(gated_config) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["crm"].queued == 1
    shop.touch(OLD, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    async with open_rt(gated_config) as rt:
        (report,) = await rt.engine.sync()  # still down
        assert report.destinations["crm"].gated == 1
        assert rt.store.outbox_count() == 0
    crm.faults.fail_next = 0
    async with open_rt(gated_config) as rt:
        await rt.engine.sync()
    assert crm.contact_count() == 0, "sent after the consent it needed was withdrawn"


async def test_erasing_the_new_address_reaches_the_contact_made_under_the_old_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """After a move, an erasure asked for with the current address finds the person."""
    contact_id = await _anna_moves(shop, crm, rt)

    view = await DsrService(rt).erase(NEW)

    assert view.status == "completed"
    assert crm.store.live(str(contact_id)) is None
    assert crm.contact_count() == 0


async def test_erasing_under_the_new_address_also_stops_a_backup_with_the_old_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Both ids are suppressed: a restored backup holding the old address re-creates nobody."""
    await _anna_moves(shop, crm, rt)
    view = await DsrService(rt).erase(NEW)
    assert view.status == "completed"
    assert rt.store.suppressed([rt.keyring.subject_id(OLD), rt.keyring.subject_id(NEW)]) == {
        rt.keyring.subject_id(OLD),
        rt.keyring.subject_id(NEW),
    }
    (aliases,) = rt.store.db.execute("SELECT COUNT(*) FROM subject_aliases").fetchone()
    assert aliases == 0  # the connector's own trace of the link is gone with the rest

    shop.add_person(OLD, "Anna", "de Vries", "0612345678")  # last month's backup restored
    (after,) = await rt.engine.sync(full=True)
    assert after.suppressed == 1
    assert crm.contact_count() == 0


async def test_erasing_under_the_old_address_reaches_the_person_now_under_the_new_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Someone who asks with the address they used to have is still found and erased."""
    contact_id = await _anna_moves(shop, crm, rt)

    view = await DsrService(rt).erase(OLD)

    assert view.status == "completed"
    assert crm.store.live(str(contact_id)) is None and crm.contact_count() == 0
    assert not shop.holds(NEW)


async def test_access_under_the_old_address_reports_the_person_now_under_the_new_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An access request finds the person where an erasure under that address would."""
    contact_id = await _anna_moves(shop, crm, rt)

    view = await DsrService(rt).access(OLD, tmp_path / "bundle")

    assert view.status == "completed"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    crm_records = data["systems"]["crm"]["records"]
    assert [r["id"] for r in crm_records] == [str(contact_id)]
    assert [r["email"] for r in data["systems"]["shop"]["records"]] == [NEW]
    (current,) = data["connector"]["same_person"]
    assert current["subject_id"] == rt.keyring.subject_id(NEW)
    assert set(current["identities"]) == {"shop", "crm"}


def _guest_order_under_new(shop: WooCommerceSandbox) -> int:
    """Anna, moved, checks out once without logging in: a guest order billed to NEW."""
    billing = {"email": NEW, "first_name": "Anna", "last_name": "de Vries", "city": "Gouda"}
    return shop.add_order(0, billing=billing)


async def test_access_under_the_old_address_shows_guest_orders_under_the_new_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Asked under OLD, the shop finds her account by its id; her guest order billed to
    the address she has now is hers too, as an access under NEW shows it."""
    await _anna_moves(shop, crm, rt)
    guest = _guest_order_under_new(shop)
    service = DsrService(rt)

    assert (await service.access(OLD, tmp_path / "old")).status == "completed"

    data = json.loads((tmp_path / "old" / "data.json").read_text())
    records = data["systems"]["shop"]["records"]
    assert [r["email"] for r in records if r.get("type") != "order"] == [NEW]
    assert [r["id"] for r in records if r.get("type") == "order"] == [guest]


async def test_a_guest_order_of_an_address_s_former_holder_is_not_in_the_new_holder_s_copy(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Bert checked out once as a guest under NEW, then made an account with it, and later
    moved to BERT. A day on, Anna signs up under NEW and checks out as a guest. Her copy
    holds her guest order and not his (his name, his city, what he bought): found by the
    address, it is nobody's by id, and it was placed before her account was made."""
    now = [dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)]
    shop.rules.now = lambda: now[0]
    billing = {"email": NEW, "first_name": "Bert", "last_name": "Jansen", "city": "Gouda"}
    his = shop.add_order(0, billing=billing)
    shop.add_person(NEW, "Bert", "Jansen", "0622222222")
    await rt.engine.sync()
    shop.touch(NEW, email=BERT)
    (moved,) = await rt.engine.sync()
    assert moved.moved == 1
    now[0] += dt.timedelta(days=1)
    shop.add_person(NEW, "Anna", "de Vries", "0611111111")
    await rt.engine.sync()
    now[0] += dt.timedelta(hours=1)
    hers = shop.add_order(0, billing={**billing, "first_name": "Anna", "city": "Delft"})

    view = await DsrService(rt).access(NEW, tmp_path / "anna")

    assert view.status == "completed"
    data = json.loads((tmp_path / "anna" / "data.json").read_text())
    orders = [r["id"] for r in data["systems"]["shop"]["records"] if r.get("type") == "order"]
    assert orders == [hers] and his not in orders


async def test_erasing_under_the_old_address_anonymises_guest_orders_under_the_new_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The erasure reads the shop as the access does: the guest order billed to her
    current address is anonymised with her account."""
    await _anna_moves(shop, crm, rt)
    guest = _guest_order_under_new(shop)

    view = await DsrService(rt).erase(OLD)

    assert view.status == "completed"
    assert not shop.holds(NEW)
    order = shop.order(guest)
    assert order is not None and order["billing"]["email"] == ""


async def test_who_takes_an_address_its_holder_left_in_the_same_sync_is_moved_to_it(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Bert leaves NEW and Anna takes it, both before one sync (her record read first): two
    moves, as across two syncs. NEW holds Bert's rows when the page is read, but they are
    his, and the page moves him away from it; Anna's own contact gets NEW (after Bert's
    contact gave it up), not a second contact beside it."""
    shop.add_person(OLD, "Anna", "de Vries")
    shop.add_person(NEW, "Bert", "Jansen")
    await rt.engine.sync()
    anna_contact, bert_contact = _contact_id(crm, OLD), _contact_id(crm, NEW)
    shop.touch(NEW, email=BERT)
    shop.touch(OLD, email=NEW)  # Anna takes the address Bert just left

    (report,) = await rt.engine.sync()

    assert report.moved == 2 and not report.failed
    assert _contact_id(crm, BERT) == bert_contact
    assert _contact_id(crm, NEW) == anna_contact
    assert crm.contact_count() == 2


async def test_a_chain_of_address_changes_in_one_page_moves_both_people(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Anna moves OLD -> NEW and Bert, then, takes her former address (BERT -> OLD), both
    before one sync (the leaver's record read first). Both are moves: refused, Bert got a
    second contact under OLD, and his own kept BERT and his old data."""
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    shop.add_person(BERT, "Bert", "Jansen", "0622222222")
    await rt.engine.sync()
    anna_contact, bert_contact = _contact_id(crm, OLD), _contact_id(crm, BERT)
    shop.touch(OLD, email=NEW)
    shop.touch(BERT, email=OLD)

    (report,) = await rt.engine.sync()
    (again,) = await rt.engine.sync()

    assert not report.failed and not again.failed, (report.errors, again.errors)
    assert report.moved == 2
    assert _contact_id(crm, NEW) == anna_contact
    assert _contact_id(crm, OLD) == bert_contact
    assert crm.contact_count() == 2


async def test_a_contact_deleted_in_hubspot_is_written_again_by_email(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """An id HubSpot no longer has (merged, deleted there) falls back to upsert by e-mail."""
    shop.add_person(OLD, "Anna", "de Vries")
    await rt.engine.sync()
    contact_id = _contact_id(crm, OLD)
    assert contact_id is not None
    crm.store.archive(crm.store.live(str(contact_id)))  # type: ignore[arg-type]
    shop.touch(OLD, first_name="Anne")
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 1 and not report.failed
    assert _contact_id(crm, OLD) not in (None, contact_id)


async def test_a_move_carries_the_rows_of_a_system_since_removed_into_the_erasure(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Anna was sent to a newsletter system later taken out of the config (its identity
    row stays: an erasure must still give it a part), then changes her address. The move
    carried only the configured systems' rows: her old id kept that row and so "held rows",
    and her erasure under the new address had no part for the system, left the old address
    unsuppressed (a backup with it brought her back) and the row in place."""
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    await rt.engine.sync()
    old_sid = rt.keyring.subject_id(OLD)
    with rt.store.transaction() as db:
        (number,) = rt.store.subject_numbers([old_sid]).values()
        db.execute("INSERT INTO identities VALUES ('old-news', ?, 'member-77')", (number,))
    shop.touch(OLD, email=NEW)
    (report,) = await rt.engine.sync()
    assert report.moved == 1
    assert rt.store.external_id("old-news", rt.keyring.subject_id(NEW)) == "member-77"

    view = await DsrService(rt).erase(NEW)

    assert "old-news" in {s.system for s in view.systems}
    assert rt.store.suppressed([old_sid]) == {old_sid}
    (left,) = rt.store.db.execute(
        "SELECT COUNT(*) FROM identities WHERE system='old-news'"
    ).fetchone()
    assert left == 0


async def test_no_move_when_the_new_address_is_known_to_a_system_since_removed(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Rows under the new id in a system no longer configured still make it someone known."""
    shop.add_person(OLD, "Anna", "de Vries")
    await rt.engine.sync()
    with rt.store.transaction() as db:
        new_sid = rt.keyring.subject_id(NEW)
        (number,) = rt.store.subject_numbers([new_sid], create=True).values()
        db.execute("INSERT INTO identities VALUES ('old-crm', ?, '77')", (number,))
    shop.touch(OLD, email=NEW)
    (report,) = await rt.engine.sync()
    assert report.moved == 0
    assert rt.store.external_id("old-crm", new_sid) == "77"


async def _anna_takes_berts_old_address(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Bert moves from NEW to bert.elders; then Anna, a different customer, takes NEW."""
    shop.add_person(OLD, "Anna", "de Vries")
    shop.add_person(NEW, "Bert", "Jansen")
    await rt.engine.sync()
    shop.touch(NEW, email=BERT)
    await rt.engine.sync()  # Bert moves: NEW is now his former address
    shop.touch(OLD, email=NEW)
    await rt.engine.sync()  # Anna takes NEW: it holds her rows now


BERT = "bert.elders@example.nl"


async def test_an_address_someone_else_took_over_does_not_reach_its_former_owner(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """NEW was Bert's before he moved; now it is Anna's. Her erasure under NEW erases her and
    leaves Bert alone: not erased, not suppressed, still synced."""
    await _anna_takes_berts_old_address(shop, crm, rt)
    bert_contact = _contact_id(crm, BERT)
    assert bert_contact is not None

    view = await DsrService(rt).erase(NEW)

    assert view.status == "completed"
    assert _contact_id(crm, NEW) is None  # Anna's contact under NEW is gone
    assert _contact_id(crm, BERT) == bert_contact
    assert rt.store.suppressed([rt.keyring.subject_id(BERT)]) == set()
    shop.touch(BERT, first_name="Bertus")
    (report,) = await rt.engine.sync()
    assert report.suppressed == 0 and report.destinations["crm"].updated == 1
    contact = crm.store.live(str(bert_contact))
    assert contact is not None and contact.properties["firstname"] == "Bertus"


async def test_the_former_owner_of_an_address_taken_over_is_erased_without_the_new_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Bert's erasure reaches his former address only while nobody holds it: NEW is Anna's
    now, so it is neither erased nor suppressed for him."""
    await _anna_takes_berts_old_address(shop, crm, rt)
    anna_contact = _contact_id(crm, NEW)
    assert anna_contact is not None

    view = await DsrService(rt).erase(BERT)

    assert view.status == "completed"
    assert _contact_id(crm, BERT) is None
    assert _contact_id(crm, NEW) == anna_contact
    assert rt.store.suppressed([rt.keyring.subject_id(NEW)]) == set()


DIRK = "dirk.de.boer@example.nl"


async def test_an_erasure_under_an_address_two_people_left_reaches_only_its_last_holder(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Anna moves OLD -> NEW; Dirk signs up under OLD, and later moves OLD -> DIRK. Dirk
    asks to be erased under OLD, the address he had: he is erased, and Anna is neither
    suppressed nor stopped from being synced. Both moves left an alias of OLD, and the
    erasure followed both: it suppressed Anna and deleted her identity rows, though her
    contact and shop account stayed, and she was never synced again."""
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    await rt.engine.sync()
    shop.touch(OLD, email=NEW)
    await rt.engine.sync()
    shop.add_person(OLD, "Dirk", "de Boer", "0633333333")
    await rt.engine.sync()
    shop.touch(OLD, email=DIRK)
    (moved,) = await rt.engine.sync()
    assert moved.moved == 1
    anna = rt.keyring.subject_id(NEW)

    view = await DsrService(rt).erase(OLD)

    assert view.status == "completed"
    assert not crm.holds(DIRK) and crm.holds(NEW)
    assert rt.store.suppressed([anna]) == set()
    shop.touch(NEW, first_name="Annie")
    (after,) = await rt.engine.sync()
    assert after.suppressed == 0
    contact = crm.store.live(NEW, "email")
    assert contact is not None and contact.properties["firstname"] == "Annie"


def test_a_move_from_an_address_leaves_it_an_alias_of_its_last_holder_only(
    tmp_path: Path,
) -> None:
    """a moved to b, then someone took a over and moved from it to c: a is c's former
    address now, not b's."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", [], [("a", "1")], None)
    apply_moves(store, [Move("shop", "a", "b")])
    store.enqueue_page("f", "shop", [], [("a", "2")], None)
    apply_moves(store, [Move("shop", "a", "c")])
    assert vacated_by(store, ["a"]) == {"a": {"c"}}


def test_a_move_that_drops_another_flow_s_queued_write_sends_that_flow_to_read_in_full(
    tmp_path: Path,
) -> None:
    """Flows `web` (Shopify), `deals` (Pipedrive) and `mail` (the shop) each queued a write
    of Anna under her old address, for a system that has her id; the shop's page moves her.
    `web` and `deals` read sources where her address may not have changed, and their
    cursors are past the writes that go: each reads in full next. `mail` and the mover read
    the shop, which offers her again under the new address. A held row keeps no write of
    its flow's (`held`'s), and marks nothing."""
    store = Store(tmp_path / "s.db")
    for flow, source, system in (
        ("web", "shopify", "crm"),
        ("deals", "pipedrive", "pd"),
        ("mail", "shop", "news"),
        ("held", "woo", "mc"),
    ):
        payload = QueuedPayload(system, "old", b"x", f"h-{flow}")
        store.enqueue_page(flow, source, [payload], [], "c1", shape=flow)
        # The system's id for her: the rows are dropped, not kept as a former address's.
        store.enqueue_page(flow, system, [], [("old", "id")], None, move_cursor=False)
    store.enqueue_page("f", "shop", [], [("old", "1")], "c1", shape="f")
    store.db.execute("UPDATE outbox SET payload_hash='held', former=payload WHERE system='mc'")
    apply_moves(store, [Move("shop", "old", "new")])
    assert store.outbox_count() == 0
    marked = {f: store.reread_mark(f, s) for f, s in (("web", "shopify"), ("deals", "pipedrive"))}
    assert None not in marked.values() and len(set(marked.values())) == 1
    assert store.reread_mark("mail", "shop") is None and store.reread_mark("f", "shop") is None
    assert store.reread_mark("held", "woo") is None


def test_a_move_keeps_one_dead_letter_per_system(tmp_path: Path) -> None:
    """The old id's refusals go to the new id; where the new id has its own, that one stays."""
    store = Store(tmp_path / "s.db")
    for system, subject, digest in (
        ("crm", "old", "h-old"),
        ("mail", "old", "m-old"),
        ("crm", "new", "h-new"),
    ):
        store.enqueue_page("f", "shop", [QueuedPayload(system, subject, b"x", digest)], [], None)
        (row,) = [r for r in store.outbox_batch(system, 0, 10) if r.subject_id == subject]
        store.dead_letter([(row, "VALIDATION_ERROR")])
    apply_moves(store, [Move("shop", "old", "new")])
    assert store.rejected_hashes(["crm", "mail"], ["old", "new"]) == {
        "crm": {"new": "h-new"},
        "mail": {"new": "m-old"},
    }
    assert len(store.dead_letters()) == 2


def test_an_opt_out_at_a_system_moves_with_the_person_and_goes_with_their_erasure(
    tmp_path: Path,
) -> None:
    """Who unsubscribed at a system stays so under their new address, and when they did;
    their erasure deletes the record of both (an HMAC id, but theirs)."""
    from connector.dsr_store import DsrStore

    store = Store(tmp_path / "s.db")
    store.subject_numbers(["old"], create=True)
    store.opt_out("news", "old")
    store.opt_out("news", "new")  # already there under the new id too: one row stays
    assert store.latest_consent_event("news", "old", "2025-01-24T15:30:00+00:00")
    apply_moves(store, [Move("shop", "old", "new")])
    assert store.opted_out("news", ["old", "new"]) == {"new"}
    # An older event of the person's, delivered late, is known for older under the new id.
    assert not store.latest_consent_event("news", "new", "2025-01-24T15:20:00+00:00")
    counts = DsrStore(store).delete_traces(["new"])
    assert counts["opt_outs"] == 1 and store.opted_out("news", ["new"]) == set()
    assert counts["consent_events"] == 1


async def test_two_people_each_under_the_other_s_former_address_are_written(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Anna moves OLD -> a temporary address, Bert moves BERT -> OLD, Anna moves on to BERT,
    each in its own sync. Aliases are kept for good, so each is now under an address the
    other left; with a change of each queued in the same batch, each waited on the other's
    queued row, and neither was ever written. A ring of people waiting on each other is
    not held."""
    temporary = "anna.tijdelijk@example.nl"
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    shop.add_person(BERT, "Bert", "Jansen", "0622222222")
    await rt.engine.sync()
    shop.touch(OLD, email=temporary)
    (first,) = await rt.engine.sync()
    shop.touch(BERT, email=OLD)
    (second,) = await rt.engine.sync()
    shop.touch(temporary, email=BERT)
    (third,) = await rt.engine.sync()
    assert (first.moved, second.moved, third.moved) == (1, 1, 1)
    shop.touch(BERT, billing={"phone": "0633333333"})  # Anna
    shop.touch(OLD, billing={"phone": "0644444444"})  # Bert

    (report,) = await rt.engine.sync()

    assert report.destinations["crm"].retry_later == 0, report.destinations["crm"].deferred
    assert report.destinations["crm"].updated == 2
    for email, phone in ((BERT, "+31633333333"), (OLD, "+31644444444")):
        contact = crm.store.live(email, "email")
        assert contact is not None and contact.properties.get("phone") == phone


REFUSED = "bert elders@example.nl"  # an address the CRM refuses (a typo in an import)


async def test_who_takes_an_address_whose_leaver_was_refused_waits_until_his_change_lands(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Bert leaves NEW for an address the CRM refuses (a dead letter: his contact keeps NEW)
    and Anna takes NEW in the same sync. Written then, Anna's upsert by e-mail found Bert's
    contact, wrote her data onto it and made it hers as well as his (her erasure would
    delete Bert's record). Her write stays queued, with a reason that names no one, until
    Bert's change of address lands (his address fixed in the shop); then her own contact
    gets NEW, and the two are two people in the identity map."""
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    bert_shop_id = shop.add_person(NEW, "Bert", "Jansen", "0622222222")
    await rt.engine.sync()
    bert, anna_contact = crm.record_for(NEW), _contact_id(crm, OLD)
    assert bert is not None and anna_contact is not None
    record = shop.store.get(int(bert_shop_id))
    assert record is not None
    record["email"] = REFUSED  # as an import would, past the shop's own validation
    shop.store.save(record, previous_email=NEW)
    shop.touch(OLD, email=NEW)
    anna, bert_sid = (rt.keyring.subject_id(email) for email in (NEW, REFUSED))

    for _ in range(2):  # held run after run while his refusal stands
        (report,) = await rt.engine.sync()
        crm_report = report.destinations["crm"]
        assert crm_report.retry_later == 1 and crm_report.deferred == WAITS_FOR_LEAVER
        held = crm.store.live(str(bert["id"]))
        assert held is not None and held.properties["firstname"] == "Bert"
        assert rt.store.external_ids("crm", [anna]) == {anna: str(anna_contact)}
    assert report.moved == 0 and crm.contact_count() == 2
    assert "@" not in crm_report.deferred

    shop.touch(REFUSED, email=BERT)  # the shop owner fixes Bert's address
    (fixed,) = await rt.engine.sync()
    # Anna's row, left from before, may be tried before the page queues Bert's change.
    (report,) = await rt.engine.sync()

    assert fixed.moved == 1 and rt.store.dead_letters() == []
    assert not report.failed and report.destinations["crm"].left_queued == 0
    moved = crm.store.live(str(bert["id"]))
    assert moved is not None and moved.properties["email"] == BERT
    assert moved.properties["firstname"] == "Bert"
    ids = rt.store.external_ids("crm", [anna, rt.keyring.subject_id(BERT), bert_sid])
    assert ids[anna] != ids[rt.keyring.subject_id(BERT)] == str(bert["id"])
    mine = crm.store.live(NEW, "email")
    assert mine is not None and mine.properties["firstname"] == "Anna"
    assert mine.id == anna_contact and crm.contact_count() == 2


def test_only_people_in_a_ring_of_unlanded_address_changes_are_let_through(
    tmp_path: Path,
) -> None:
    """x is under the address y left, y under z's, z under x's, none landed (each has a row
    queued): a ring, found through y and z though only x is asked about. w, under x's former
    address, waits on the ring without being part of it, and v's leaver has landed."""
    store = Store(tmp_path / "s.db")
    for holder, former in (("y", "x"), ("z", "y"), ("x", "z"), ("x", "w"), ("u", "v")):
        store.db.execute(
            "INSERT INTO subject_aliases(subject_id, alias) VALUES (?,?)", (holder, former)
        )
    queued = [QueuedPayload("crm", sid, b"x", "h") for sid in ("x", "y", "z", "w", "v")]
    store.enqueue_page("f", "shop", queued, [], None)
    waiting = not_landed(store, "crm", vacated_by(store, ["x", "w", "v"]))
    assert waiting == {"x": {"y"}, "w": {"x"}}
    assert in_rings(store, "crm", waiting) == {"x"}


async def test_a_refused_move_undone_at_the_shop_holds_back_nobody_who_takes_the_address(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Anna moves to an address HubSpot has on another contact (CONFLICT, a dead letter) and
    back. Her contact never held that address, and holds what the shop holds again; once
    the stray contact is merged away, Bert signs up under the address. His write is not
    held "until the change of address of whoever had the address before lands": there is
    nothing of Anna's left to land (her dead letter went with the sync that found her
    unchanged), and no `--full` sync would ever have sent her again."""
    shop.add_person(OLD, "Anna", "de Vries", "0612345678")
    crm.add_person(BERT, "Other", "Person")
    await rt.engine.sync()
    shop.touch(OLD, email=BERT)
    (refused,) = await rt.engine.sync()
    assert refused.destinations["crm"].dead_lettered == 1
    shop.touch(BERT, email=OLD)
    await rt.engine.sync()
    stray = crm.store.live(BERT, "email")
    assert stray is not None
    crm.store.archive(stray)
    shop.add_person(BERT, "Bert", "Elders", "0687654321")

    (report,) = await rt.engine.sync()

    assert not report.failed and report.destinations["crm"].deferred != WAITS_FOR_LEAVER
    bert = crm.record_for(BERT)
    assert bert is not None and bert["properties"]["firstname"] == "Bert"
    anna = crm.record_for(OLD)
    assert anna is not None and anna["properties"]["firstname"] == "Anna"


async def test_who_takes_the_address_of_a_customer_deleted_in_the_shop_is_not_written_onto_his(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Bert is deleted in the shop (not erased: his contact, with his history, stays); Anna
    then takes his address. Her shop id says she is the person known under OLD: she is
    moved, and Bert's ids are set apart under his shop record, not given to her. Taken
    for his, she was written by his contact id onto his contact, and her own kept OLD."""
    bert = shop.add_person(BERT, "Bert", "Jansen", "0622222222")
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    await rt.engine.sync()
    anna_contact, bert_contact = _contact_id(crm, OLD), _contact_id(crm, BERT)
    assert anna_contact is not None and bert_contact is not None
    shop.store.delete(int(bert))
    shop.touch(OLD, email=BERT, first_name="Anne")

    (report,) = await rt.engine.sync()

    contact = crm.store.live(str(bert_contact))
    assert contact is not None and contact.properties["firstname"] == "Bert"
    assert report.moved == 1
    # HubSpot refuses her contact the address his holds: a dead letter, nothing merged.
    assert report.destinations["crm"].dead_lettered == 1
    anna = rt.keyring.subject_id(BERT)
    assert rt.store.external_ids("crm", [anna]) == {anna: str(anna_contact)}
    assert rt.store.external_ids("shop", [anna]) == {anna: "2"}
    (apart,) = rt.store.subjects_for_external("crm", str(bert_contact))
    assert rt.store.external_ids("shop", [apart]) == {apart: bert}
    assert [e.kind for e in audit.entries(rt.store) if e.subject_id == apart] == [
        "sync.subject_set_apart"
    ]


def test_a_page_record_under_an_address_the_source_still_shows_under_another_is_withheld(
    tmp_path: Path,
) -> None:
    """The identity map ties the address to record 1; the page has record 2 under it. With
    record 1 read from the source still under the address, record 2 is left out of the page
    (written, it went under record 1's person's ids); with record 1 gone from the source,
    its person is set apart and the address is free."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", [QueuedPayload("crm", "b", b"x", "h")], [("b", "1")], None)
    pulled: dict[str, str | None] = {"b": "2"}
    ids = page_ids(store, "shop", pulled)
    assert ids.held == {"b": "1"} and ids.elsewhere(pulled) == {"b": "1"}

    still = find_moves(store, "shop", pulled, ids)
    gone = find_moves(store, "shop", pulled, ids, {"1": "apart"})

    assert still.moves == [] and still.withheld == {"b"}
    assert gone.moves == [Move("shop", "b", "apart", set_apart=True)] and not gone.withheld


def test_a_page_s_subject_numbers_are_read_once_for_its_plan_and_its_hashes(
    tmp_path: Path,
) -> None:
    """The identity map's read of a page gives each subject's number (none for a newcomer);
    given them, the page's hashes ask the subjects table for nobody again, and read what
    they read asking for themselves. A plan that moves someone passes no numbers on."""
    store = Store(tmp_path / "s.db")
    store.enqueue_page("f", "shop", [QueuedPayload("crm", "a", b"x", "ha")], [("a", "1")], None)
    pulled: dict[str, str | None] = {"a": "1", "n": "2"}

    ids = page_ids(store, "shop", pulled)
    plan = find_moves(store, "shop", pulled, ids)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    given = store.page_hashes(["crm"], ["a", "n"], plan.numbers)
    store.db.set_trace_callback(None)

    assert ids.numbers == {"a": 1, "n": None} and plan.numbers == ids.numbers
    assert statements and not [s for s in statements if "FROM subjects" in s]
    assert given == store.page_hashes(["crm"], ["a", "n"])
    assert given[0] == {"crm": {"a": "ha"}}
    moved: dict[str, str | None] = {"m": "1"}  # record 1's address changed: a -> m
    moving = find_moves(store, "shop", moved, page_ids(store, "shop", moved))
    assert moving.moves == [Move("shop", "a", "m")] and moving.numbers == {}


async def _taker_read_a_page_before_the_leaver(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> tuple[int, int]:
    """Anna (shop id 1, under OLD) and Bert (id 102, under NEW: a page further, WooCommerce
    pages holding 100) are synced. Bert moves NEW -> BERT, then Anna OLD -> NEW, and two
    syncs follow. The pull reads Anna's page first. Returns Anna's and Bert's contact ids."""
    shop.add_person(OLD, "Anna", "de Vries", "0611111111")
    shop.seed_synthetic(100, seed=3)
    shop.add_person(NEW, "Bert", "Jansen", "0622222222")
    await rt.engine.sync()
    anna_contact, bert_contact = _contact_id(crm, OLD), _contact_id(crm, NEW)
    assert anna_contact is not None and bert_contact is not None
    shop.touch(NEW, email=BERT)
    shop.touch(OLD, email=NEW)
    (report,) = await rt.engine.sync()
    assert report.moved == 2 and not report.failed, report.errors
    await rt.engine.sync()
    return anna_contact, bert_contact


async def test_who_takes_an_address_before_its_leaver_is_read_is_not_written_onto_his_contact(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Page 1 reads Anna under NEW while the identity map still has Bert there. Taken for
    him, her data went by his contact id onto his contact and her shop id replaced his, so
    page 2 missed his move: he got a second contact, and hers kept OLD. His record is read
    with her page, so both moves are made, his first."""
    anna_contact, bert_contact = await _taker_read_a_page_before_the_leaver(shop, crm, rt)

    bert = crm.store.live(str(bert_contact))
    assert bert is not None and bert.properties["firstname"] == "Bert"
    assert bert.properties["email"] == BERT
    anna = crm.store.live(str(anna_contact))
    assert anna is not None and anna.properties["email"] == NEW
    assert crm.contact_count() == 102


async def test_the_leavers_erasure_reaches_his_contact_when_the_taker_was_read_first(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The same pull; Bert asks to be erased under the address he has now: his contact (with
    the deal sales attached to it) goes. It was left, and deleted later by Anna's erasure."""
    anna_contact, bert_contact = await _taker_read_a_page_before_the_leaver(shop, crm, rt)
    crm.add_associated(str(bert_contact), "deals", dealname="Two bikes")

    view = await DsrService(rt).erase(BERT)

    assert view.status == "completed"
    assert crm.store.live(str(bert_contact)) is None
    assert crm.store.live(str(anna_contact)) is not None
