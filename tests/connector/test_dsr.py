"""Data subject requests: erasure everywhere, resumption, suppression, deadlines, CLI."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.adapter import ErasureResult, Subject
from connector.dsr import (
    NO_LONGER_CONFIGURED,
    DsrError,
    DsrService,
    DsrUsageError,
    RequestView,
    summary,
)
from connector.dsr_input import checked_phone
from connector.dsr_kinds import KindRunner
from connector.errors import RetryableError
from connector.loop import run as run_loop
from connector.readmit import readmit
from connector.receipts import canonical
from connector.runtime import Runtime, open_runtime
from connector.state import PER_SYSTEM_TABLES, RESEND
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    CANARY_PHONE_E164,
    ENV,
    REPO_MAPPINGS,
    RuntimeFactory,
    VirtualTime,
    write_config,
)

HOOK_SECRET = "hubspot-app-secret"
OTHER_EMAIL = "otto.ander@voorbeeld.nl"
GDPR_DELETE = "POST /crm/v3/objects/contacts/gdpr-delete"


class Crash(Exception):
    """Simulated process death in the middle of the fan-out."""


@pytest.fixture
def config_path(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared test config plus a HubSpot webhook secret."""
    monkeypatch.setenv("T_HS_HOOK", HOOK_SECRET)
    return write_config(tmp_path, crm_extra='webhooks = { secret = "env:T_HS_HOOK" }')


def seed(shop: WooCommerceSandbox) -> str:
    """The canary customer with an order, and a second customer; return the canary's shop id."""
    shop_id = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    shop.add_order(shop_id)
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111", city="Delft")
    return shop_id


async def seeded(shop: WooCommerceSandbox, rt: Runtime) -> str:
    """Seed the shop and sync it to the CRM, so both systems and the identity map know them."""
    shop_id = seed(shop)
    (report,) = await rt.engine.sync()
    assert not report.failed
    return shop_id


def without_crm(config_path: Path) -> None:
    """Take the CRM (and so its flow) out of the config: the store still knows the person
    was sent there."""
    head, _, _ = config_path.read_text().partition("[systems.crm]")
    config_path.write_text(head)


def receipt_of(service: DsrService, request_id: str) -> dict[str, Any]:
    text = service.receipt(request_id)
    assert text is not None
    body: dict[str, Any] = json.loads(text)["receipt"]
    return body


async def test_erasure_uses_gdpr_delete_and_nothing_is_restorable(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """HubSpot is erased with gdpr-delete only; no archived copy remains; the shop forgets too."""
    shop_id = await seeded(shop, rt)
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed"
    assert {s.system: s.status for s in view.systems} == {
        "crm": "verified_absent",
        "shop": "verified_absent",
    }
    assert GDPR_DELETE in crm.endpoints_used
    assert not any(e.startswith("DELETE") or "batch/archive" in e for e in crm.endpoints_used)
    assert not crm.holds(CANARY_EMAIL) and not crm.restorable(CANARY_EMAIL)
    assert not shop.holds(CANARY_EMAIL)
    assert all(CANARY_NAME not in json.dumps(o) for o in shop.orders_for(0))
    assert shop.orders_for(shop_id) == []
    assert crm.holds(OTHER_EMAIL) and shop.holds(OTHER_EMAIL)


async def test_an_erasure_under_an_address_changed_since_the_last_sync_reaches_the_former_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The customer changed their address in the shop and asked to be erased before the
    next sync: the CRM holds them under the former address, which the shop's record id
    names in the identity map. That contact is erased too, and both addresses suppressed."""
    await seeded(shop, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    view = await DsrService(rt).erase(new_address)
    assert view.status == "completed"
    assert {s.system: s.status for s in view.systems} == {
        "crm": "verified_absent",
        "shop": "verified_absent",
    }
    assert not crm.holds(CANARY_EMAIL) and not crm.restorable(CANARY_EMAIL)
    assert not shop.holds(new_address)
    sids = [rt.keyring.subject_id(a) for a in (CANARY_EMAIL, new_address)]
    assert rt.store.suppressed(sids) == set(sids)
    assert crm.holds(OTHER_EMAIL)


async def test_a_backup_that_brings_an_erased_record_back_under_an_address_never_synced_stays_out(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """An erasure suppresses the person's record in the shop by its own id: a restored
    backup holding that record under an address the connector never saw (changed, and
    erased, before any sync) brings nobody back into the CRM."""
    shop_id = seed(shop)
    backup = shop.record_for(CANARY_EMAIL)
    assert backup is not None
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    view = await DsrService(rt).erase(new_address)
    assert view.status == "completed" and not shop.holds(new_address)
    shop.store.save(backup)  # the backup, from before the change: same id, former address
    assert shop.holds(CANARY_EMAIL) and str(backup["id"]) == shop_id
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1
    assert not crm.holds(CANARY_EMAIL) and crm.holds(OTHER_EMAIL)


def archive_in_crm(crm: HubSpotSandbox, email: str) -> str:
    """Archive the synced contact, as a HubSpot user's restorable "delete" does; its id."""
    contact = crm.store.live(email, "email")
    assert contact is not None
    crm.store.archive(contact)
    assert not crm.holds(email) and crm.restorable(email)
    return str(contact.id)


async def test_erasure_deletes_a_contact_archived_in_hubspot_for_good(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A contact in HubSpot's recycle bin is held: it is gdpr-deleted (by its id) and the CRM is
    verified absent; the recycle bin cannot bring it back."""
    await seeded(shop, rt)
    archive_in_crm(crm, CANARY_EMAIL)
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    assert view.system("crm").status == "verified_absent"
    assert not crm.restorable(CANARY_EMAIL) and not crm.restore(CANARY_EMAIL)
    assert not crm.holds(CANARY_EMAIL) and crm.is_blocklisted(CANARY_EMAIL)
    assert not any(e.startswith("DELETE") or "batch/archive" in e for e in crm.endpoints_used)
    (crm_receipt,) = [s for s in receipt_of(service, view.id)["systems"] if s["system"] == "crm"]
    assert crm_receipt["status"] == "verified_absent"
    assert crm_receipt["found"] is True and crm_receipt["reversible"] is False
    assert crm.holds(OTHER_EMAIL)


async def test_erasure_stays_open_while_hubspot_keeps_an_archived_contact(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If gdpr-delete left an archived contact in place, the verification sees it: the CRM step
    fails as still present, and no receipt says the erasure is complete."""
    await seeded(shop, rt)
    archive_in_crm(crm, CANARY_EMAIL)
    purge = crm.store.purge
    monkeypatch.setattr(crm.store, "purge", lambda c: None if c.archived else purge(c))
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.is_open
    assert view.system("crm").status == "failed"
    assert "still present" in (view.system("crm").detail or "")
    assert service.receipt(view.id) is None
    assert crm.restorable(CANARY_EMAIL)


async def test_an_erasure_hubspot_refuses_for_a_missing_write_scope_stays_open_naming_it(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A private app granted only crm.objects.contacts.read finds the contact, and its
    gdpr-delete is answered 403: the CRM's part fails saying which scope to grant (never the
    person), no receipt says done, and the contact is still there."""
    await seeded(shop, rt)
    crm.scopes = {"crm.objects.contacts.read", "crm.schemas.contacts.read"}
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    step = view.system("crm")
    assert view.is_open and step.status == "failed"
    assert "403" in (step.detail or "") and "crm.objects.contacts.write" in (step.detail or "")
    assert CANARY_EMAIL not in (step.detail or "")
    assert service.receipt(view.id) is None
    assert crm.holds(CANARY_EMAIL)


async def test_an_erasure_with_a_phone_stops_a_backup_holding_another_address_and_that_phone(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The phone's suppression entry is checked on sync as the e-mail's is."""
    await seeded(shop, rt)
    view = await DsrService(rt).erase(CANARY_EMAIL, phone=CANARY_PHONE)
    assert view.status == "completed"
    shop.add_person("anna.prive@voorbeeld.nl", "Anna", "Klant", CANARY_PHONE)  # a backup
    (report,) = await rt.engine.sync(full=True)
    assert report.suppressed == 1
    assert not crm.holds("anna.prive@voorbeeld.nl") and crm.holds(OTHER_EMAIL)


async def test_an_erasure_given_no_phone_suppresses_the_number_the_shop_holds_for_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Asked by e-mail only (the CLI without --phone, a CRM's webhook), the erasure reads
    the person's number from the shop's record at its snapshot and suppresses it, keyed
    and in E.164 as a sync reads it: a restored backup holding them under another address
    but that number stays out. Only the keyed hash is kept; the number is in no audit entry
    and no log line."""
    await seeded(shop, rt)
    caplog.set_level(logging.DEBUG)
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed"
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    assert rt.store.suppressed([phone]) == {phone}
    (entry,) = [e for e in audit.entries(rt.store) if e.kind == "dsr.phones_held"]
    assert entry.data["subject_ids"] == [phone]
    trail = json.dumps([e.data for e in audit.entries(rt.store)])
    for clear in (CANARY_PHONE, CANARY_PHONE_E164, "687654321"):
        assert clear not in trail and clear not in caplog.text
    # The other customer's number stays off the list.
    assert not rt.store.suppressed([rt.keyring.subject_id("+31611111111")])
    shop.add_person("anna.prive@voorbeeld.nl", "Anna", "Klant", CANARY_PHONE)  # a backup
    (report,) = await rt.engine.sync(full=True)
    assert report.suppressed == 1
    assert not crm.holds("anna.prive@voorbeeld.nl") and crm.holds(OTHER_EMAIL)
    # Readmitted by their address, the number goes with it: back with it, they are sent.
    assert phone in readmit(rt, CANARY_EMAIL, "signed up again").subject_ids
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    await rt.engine.sync(full=True)
    assert crm.holds(CANARY_EMAIL)


async def test_readmission_keeps_a_held_number_another_persons_erasure_asks_for(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The canary is erased with no phone: the shop's number is suppressed as held by that
    erasure. A housemate sharing the number is erased next with it as ``--phone``.
    Readmitting the canary must not lift the number: the housemate's erasure still asks
    for it (a restored backup holding them under another address but that number)."""
    await seeded(shop, rt)
    service = DsrService(rt)
    assert (await service.erase(CANARY_EMAIL)).status == "completed"
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    assert rt.store.suppressed([phone]) == {phone}
    assert (await service.erase(OTHER_EMAIL, phone=CANARY_PHONE)).status == "completed"
    assert phone not in readmit(rt, CANARY_EMAIL, "signed up again").subject_ids
    assert rt.store.suppressed([phone]) == {phone}


async def test_readmission_under_the_address_an_erasure_was_widened_to_lifts_its_held_number(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The customer moved in the shop (a sync carried it) and was erased under the former
    address: the erasure reached and suppressed the current one, and the number the shop
    held. Readmitted under the current address, the one they sign up with again, the
    number that erasure read goes with it: back with it, they are sent."""
    await seeded(shop, rt)
    current = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=current)
    (report,) = await rt.engine.sync()
    assert not report.failed and crm.holds(current)
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    assert not crm.holds(current) and not shop.holds(current)
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    new_sid = rt.keyring.subject_id(current)
    assert rt.store.suppressed([phone, new_sid]) == {phone, new_sid}
    assert phone in readmit(rt, current, "signed up again").subject_ids
    assert rt.store.suppressed([phone]) == set()
    shop.add_person(current, CANARY_NAME, "Klant", CANARY_PHONE)
    await rt.engine.sync(full=True)
    assert crm.holds(current)


async def test_an_erasure_reads_a_phone_without_country_code_as_the_shop_does(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory, tmp_path: Path
) -> None:
    """A Belgian shop: "0470 12 34 56" is +32 470 12 34 56 in its records and in the CRM, and
    that is the number the erasure suppresses. Read as Dutch, +31 470 12 34 56 was suppressed
    (someone else's, if anyone's) and a backup under another address with the person's
    number came back."""
    mapping = tmp_path / "woocommerce.toml"
    text = (REPO_MAPPINGS / "woocommerce.toml").read_text()
    mapping.write_text(text.replace('default_region = "NL"', 'default_region = "BE"', 1))
    belgian = "0470 12 34 56"
    async with open_rt(write_config(tmp_path, shop_mapping=mapping)) as rt:
        shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", belgian)
        shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0471 11 11 11")
        await rt.engine.sync()
        contact = crm.record_for(CANARY_EMAIL)
        assert contact is not None and contact["properties"]["phone"] == "+32470123456"
        view = await DsrService(rt).erase(CANARY_EMAIL, phone=belgian)
        assert view.status == "completed"
        assert rt.store.suppressed([rt.keyring.subject_id("+32470123456")])
        shop.add_person("anna.prive@voorbeeld.nl", "Anna", "Klant", belgian)  # a backup
        (report,) = await rt.engine.sync(full=True)
        assert report.suppressed == 1 and not crm.holds("anna.prive@voorbeeld.nl")


def test_a_phone_without_country_code_is_refused_where_the_shops_read_it_differently() -> None:
    """Two shops, one Dutch and one Belgian: which number was meant cannot be known."""
    assert checked_phone("06 87654321", ["NL"]) == "+31687654321"
    assert checked_phone("+32 470 12 34 56", ["NL", "BE"]) == "+32470123456"
    with pytest.raises(DsrUsageError, match="country code"):
        checked_phone("0470 12 34 56", ["NL", "BE"])
    with pytest.raises(DsrUsageError, match="not a phone number"):
        checked_phone("not a number", ["NL"])


@pytest.mark.parametrize("how", ["retry", "retry_open"])
async def test_shop_down_leaves_it_failed_until_retry_and_sync_does_not_recreate(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, how: str
) -> None:
    """With the shop offline the CRM is erased, the shop stays open, sync cannot bring them back."""
    await seeded(shop, rt)
    service = DsrService(rt)
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    assert view.is_open
    assert view.system("crm").status == "verified_absent"
    assert view.system("shop").status == "failed"
    assert service.receipt(view.id) is None
    shop.faults.down = False
    # The shop still holds the person; a full sync must not re-create them in the CRM.
    shop.touch(CANARY_EMAIL, first_name="Changed")
    (report,) = await rt.engine.sync(full=True)
    assert report.suppressed == 1
    assert not crm.holds(CANARY_EMAIL) and crm.holds(OTHER_EMAIL)
    if how == "retry":
        view = await service.retry(view.id)
    else:
        assert await service.retry_open() == 1
        found = service.get(view.id)
        assert found is not None
        view = found
    assert view.status == "completed"
    assert not shop.holds(CANARY_EMAIL)
    systems = {s["system"]: s for s in receipt_of(service, view.id)["systems"]}
    assert set(systems) == {"crm", "shop"}
    assert systems["shop"]["status"] == "verified_absent" and systems["shop"]["attempts"] == 2
    assert systems["crm"]["endpoint"] == GDPR_DELETE and systems["crm"]["reversible"] is False


async def test_shop_account_with_a_staff_role_is_left_for_a_person_with_what_to_do(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """WooCommerce refuses to delete a shop manager over its API: the shop's step fails saying
    so (role named, no personal data), orders are already blank; deleted by hand, a retry ends it.
    """
    shop_id = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, role="shop_manager")
    shop.add_order(shop_id)
    (report,) = await rt.engine.sync()
    assert not report.failed
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.is_open and view.system("crm").status == "verified_absent"
    failed = view.system("shop")
    assert failed.status == "failed" and failed.detail is not None
    assert "woocommerce_rest_cannot_delete" in failed.detail
    assert "'shop_manager'" in failed.detail and "delete the user in WordPress" in failed.detail
    assert CANARY_EMAIL not in failed.detail and CANARY_NAME not in failed.detail
    assert all(CANARY_NAME not in json.dumps(o) for o in shop.orders_for(0))
    assert shop.holds(CANARY_EMAIL)  # the account itself: for a person to delete
    shop.touch(CANARY_EMAIL, role="customer")  # or deleted in WordPress: either finishes it
    view = await service.retry(view.id)
    assert view.status == "completed" and not shop.holds(CANARY_EMAIL)


async def test_a_failed_erasure_step_s_entry_names_the_route_not_the_shop_s_customer_id(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop's refusal to delete a shop manager is recorded in the step's ``dsr.system``
    entry as ``DELETE .../customers/{id}``: the customer's number, tied there to the person's
    keyed id for ``audit_days``, would outlive the identity rows the erasure deleted."""
    shop.seed_synthetic(6, seed=7)
    shop_id = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, role="shop_manager")
    (report,) = await rt.engine.sync()
    assert not report.failed
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.system("shop").status == "failed"
    failed = [
        e.data
        for e in audit.entries(rt.store)
        if e.kind == "dsr.system" and e.data["status"] == "failed"
    ]
    assert failed and "/customers/{id}" in failed[0]["detail"]
    assert re.search(rf"/customers/{shop_id}\b", json.dumps(failed)) is None, failed


async def test_same_erasure_twice_is_one_request_with_one_receipt(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Asking again while an erasure is open resumes it instead of opening a second one."""
    await seeded(shop, rt)
    service = DsrService(rt)
    shop.faults.down = True
    first = await service.erase(CANARY_EMAIL)
    second = await service.erase(CANARY_EMAIL.upper())
    assert first.id == second.id
    shop.faults.down = False
    third = await service.erase(CANARY_EMAIL)
    assert third.id == first.id and third.status == "completed"
    assert [v.id for v in service.list()] == [first.id]
    receipt = receipt_of(service, first.id)
    assert sorted(s["system"] for s in receipt["systems"]) == ["crm", "shop"]


async def test_erasure_interrupted_mid_fan_out_resumes_to_one_clean_receipt(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Callable[..., Any]
) -> None:
    """A crash right after the shop deleted (status unrecorded) resumes after a restart."""
    async with open_rt() as rt:
        await seeded(shop, rt)
        shop_adapter = rt.systems["shop"].adapter
        original = shop_adapter.erase

        async def erase_then_die(subject: Subject) -> ErasureResult:
            await original(subject)
            raise Crash("killed mid fan-out")

        shop_adapter.erase = erase_then_die
        with pytest.raises(Crash):
            await DsrService(rt).erase(CANARY_EMAIL)
        (view,) = DsrService(rt).list(open_only=True)
        assert view.system("shop").status == "in_progress"
    assert not shop.holds(CANARY_EMAIL)
    async with open_rt() as rt:  # a restart: new process, same store
        service = DsrService(rt)
        resumed = await service.retry(view.id)
        assert resumed.status == "completed"
        entries = receipt_of(service, view.id)["systems"]
        shop_entry = next(s for s in entries if s["system"] == "shop")
        # The resumed call found nothing left; the receipt still says the shop held and erased.
        assert shop_entry["status"] == "verified_absent"
        assert shop_entry["attempts"] == 2
        assert len(service.list()) == 1
        assert audit.verify(rt.store).ok
    assert not crm.holds(CANARY_EMAIL)


class Stopped(BaseException):
    """An interrupt or a stopping process: not an ``Exception``, not a system's answer."""


async def test_an_erasure_stopped_while_asking_the_systems_stops_as_it_was_stopped(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Stopped while the systems were asked what they hold, the erasure goes up as the
    interruption itself, not as an internal assertion about the systems' answers."""
    await seeded(shop, rt)

    async def stopped(_subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        raise Stopped

    rt.systems["crm"].adapter.find_records = stopped  # type: ignore[attr-defined]
    with pytest.raises(Stopped):
        await DsrService(rt).erase(CANARY_EMAIL)


async def test_after_erasure_the_store_holds_no_clear_personal_data(
    shop: WooCommerceSandbox,
    rt: Runtime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the database nor its WAL holds the e-mail, name or phone; suppression is a hash."""
    caplog.set_level(logging.DEBUG, logger="klantsync")
    await seeded(shop, rt)
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    (number,) = rt.store.subject_numbers([sid]).values()
    service = DsrService(rt)
    await service.access(CANARY_EMAIL, tmp_path / "bundle")
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL, phone=CANARY_PHONE)
    shop.faults.down = False
    view = await service.retry(view.id)
    assert view.status == "completed"
    suppression = rt.store.db.execute("SELECT subject_id, kind FROM suppression").fetchall()
    assert (sid, "erasure") in suppression
    assert (rt.keyring.subject_id(CANARY_PHONE_E164), "erasure") in suppression
    assert all(re.fullmatch(r"[0-9a-f]{32}", row[0]) for row in suppression)
    for table, key in [
        *((table, ("subject_no", number)) for table in PER_SYSTEM_TABLES),
        *((table, ("subject_id", sid)) for table in ("subjects", "dead_letters")),
    ]:
        count = rt.store.db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE {key[0]}=?",  # noqa: S608 - fixed names
            (key[1],),
        ).fetchone()[0]
        assert count == 0, table
    assert rt.store.db.execute("SELECT manifest FROM dsr_requests").fetchall() == [(None,)] * 2
    db_path = rt.store.path
    raw = db_path.read_bytes()
    wal = Path(f"{db_path}-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    for secret in (CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, CANARY_PHONE_E164):
        assert secret.encode() not in raw, secret
        assert secret.lower().encode() not in raw, secret
    rt.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert CANARY_EMAIL.encode() not in db_path.read_bytes()
    for entry in audit.entries(rt.store):
        assert CANARY_EMAIL not in json.dumps(entry.data) and CANARY_NAME not in str(entry.data)
    for secret in (CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, CANARY_PHONE_E164):
        assert secret not in caplog.text


async def test_an_erasure_truncates_the_log_that_still_held_the_person_s_sealed_payload(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The store zeroes the pages a delete frees, but the write-ahead log keeps the frames
    that wrote the row: the person's sealed payload, which the store's keys still open,
    stayed on disk after their erasure (the daemon's connection, open for months, only runs
    passive checkpoints, which never truncate the log). The erasure truncates it."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    crm.faults.down = True  # the payload stays queued, sealed, in the outbox
    await rt.engine.sync()
    crm.faults.down = False
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    (number,) = rt.store.subject_numbers([sid]).values()
    (sealed,) = rt.store.db.execute(
        "SELECT payload FROM outbox WHERE subject_no=?", (number,)
    ).fetchone()
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed"
    assert rt.store.db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    rt.store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # what the daemon's checkpointer does
    on_disk = rt.store.path.read_bytes()
    wal = Path(f"{rt.store.path}-wal")
    on_disk += wal.read_bytes() if wal.exists() else b""
    assert bytes(sealed)[:48] not in on_disk


async def test_connector_traces_are_deleted_and_audit_has_ids_only(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Identity rows and hashes go; the audit log records each step under the subject id."""
    await seeded(shop, rt)
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    assert rt.store.external_id("crm", sid) and rt.store.external_id("shop", sid)
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert rt.store.external_id("crm", sid) is None and rt.store.external_id("shop", sid) is None
    kinds = [e.kind for e in audit.entries(rt.store) if e.data.get("request") == view.id]
    for kind in ("dsr.received", "dsr.suppressed", "dsr.manifest", "dsr.traces_deleted"):
        assert kind in kinds
    assert kinds[-1] == "dsr.completed"
    assert {e.subject_id for e in audit.entries(rt.store) if e.kind.startswith("dsr.")} == {sid}


async def test_subject_still_present_after_erasure_raises_an_alert(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """If verification still finds the person, the system is failed 'still present' and audited."""
    await seeded(shop, rt)

    async def pretend(subject: Subject) -> ErasureResult:
        return ErasureResult(found=True, mode="hard_delete", reversible=False, endpoint="POST x")

    rt.systems["crm"].adapter.erase = pretend
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.is_open
    assert view.system("crm").status == "failed"
    assert view.system("crm").detail == "still present after erasure"
    assert any(e.kind == "dsr.alert" for e in audit.entries(rt.store))
    assert crm.holds(CANARY_EMAIL)


async def test_asynchronous_erasure_waits_for_verification(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A vendor that erases later leaves 'pending_verification' until a retry finds it gone."""
    await seeded(shop, rt)
    adapter = rt.systems["crm"].adapter
    real_erase = adapter.erase

    async def queued(subject: Subject) -> ErasureResult:
        return ErasureResult(
            found=True, mode="async_hard_delete", reversible=False, endpoint="POST q", pending=True
        )

    adapter.erase = queued
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.system("crm").status == "pending_verification"
    await real_erase(Subject(email=CANARY_EMAIL))  # the vendor's own purge runs later
    view = await service.retry(view.id)
    assert view.status == "completed" and view.system("crm").status == "verified_absent"


async def test_a_pending_erasure_whose_verifying_read_failed_stays_pending_and_is_not_asked_again(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The vendor holds the erasure pending and the read that checks it fails (a maintenance
    page): the part stays pending, saying the read failed, and the retry 15 minutes later
    reads again without asking the vendor to erase again (that is once a day). The part used
    to turn "failed", and every retry asked the vendor again."""
    await seeded(shop, rt)
    adapter: Any = rt.systems["crm"].adapter
    real_find = adapter.find_records
    asked: list[Subject] = []
    reads = {"n": 0}

    async def queued(subject: Subject) -> ErasureResult:
        asked.append(subject)
        return ErasureResult(
            found=True, mode="async_hard_delete", reversible=False, endpoint="POST q", pending=True
        )

    async def find(subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        reads["n"] += 1
        if reads["n"] == 2:  # the verifying read after the erasure
            raise RetryableError("crm", "GET", "/crm/v3/objects/contacts/search", 503, "down")
        found: list[dict[str, Any]] = await real_find(subject, orders=orders)
        return found

    adapter.erase = queued
    adapter.find_records = find
    moment = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    clock = {"now": moment}
    service = DsrService(rt, now=lambda: clock["now"])
    view = await service.erase(CANARY_EMAIL)
    step = view.system("crm")
    assert view.is_open and len(asked) == 1
    assert step.status == "pending_verification" and "verifying read failed" in (step.detail or "")
    clock["now"] = moment + dt.timedelta(minutes=15)  # the daemon's next retry
    view = await service.retry(view.id)
    assert len(asked) == 1 and view.system("crm").status == "pending_verification"
    clock["now"] = moment + dt.timedelta(days=1)
    view = await service.retry(view.id)
    assert len(asked) == 2  # asked again once a day: one cancelled meanwhile is queued again


async def test_deadline_is_one_calendar_month_and_extends_by_two_at_most(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """31 January gets the end of 28 February; extensions add calendar months from receipt,
    two in total, with a reason."""
    seed(shop)
    moment = dt.datetime(2026, 1, 31, 9, 0, tzinfo=dt.UTC)
    service = DsrService(rt, now=lambda: moment)
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    assert view.deadline == "2026-02-28T22:59:59+00:00"
    with pytest.raises(DsrUsageError, match="reason"):
        service.extend(view.id, 1, "  ")
    extended = service.extend(view.id, 1, f"complex request, asked by {CANARY_EMAIL} on 2026-02-02")
    # The end of 31 March in the Netherlands, in summer time since 29 March: 21:59:59 UTC.
    assert extended.deadline == "2026-03-31T21:59:59+00:00"
    # The address is masked; the date the operator wrote is kept.
    assert extended.extension_reason == "complex request, asked by <email> on 2026-02-02"
    with pytest.raises(DsrUsageError, match="at most 2 months"):
        service.extend(view.id, 2, "more")
    assert service.extend(view.id, 1, "still more").deadline == "2026-04-30T21:59:59+00:00"
    with pytest.raises(DsrUsageError):
        service.extend("nope", 1, "x")


@pytest.mark.parametrize(
    ("received", "deadline"),
    [
        # 00:30 on 1 March in the Netherlands: due 1 April (Dutch time), not 28 March.
        ("2026-02-28T23:30:00+00:00", "2026-04-01T21:59:59+00:00"),
        # 00:30 on 31 March: due 30 April, not 1 May.
        ("2026-03-30T22:30:00+00:00", "2026-04-30T21:59:59+00:00"),
    ],
)
async def test_a_deadline_month_counts_from_the_dutch_date_of_receipt(
    shop: WooCommerceSandbox, rt: Runtime, received: str, deadline: str
) -> None:
    """The month was counted on the UTC date: a request that came at 00:30 on 1 March in
    the Netherlands was due on 28 March, three days short."""
    seed(shop)
    moment = dt.datetime.fromisoformat(received)
    shop.faults.down = True
    view = await DsrService(rt, now=lambda: moment).erase(CANARY_EMAIL)
    assert view.deadline == deadline


@pytest.mark.parametrize(
    ("received", "deadline"),
    [
        # 10:00 on 31 January in the Netherlands: 28 February has no 31st, its end counts.
        ("2026-01-31T09:00:00+00:00", "2026-02-28T22:59:59+00:00"),
        # 29 February in a leap year: the end of 29 March, in summer time since that night.
        ("2028-02-29T11:00:00+00:00", "2028-03-29T21:59:59+00:00"),
        # 23:30 on 31 March in the Netherlands (21:30 UTC): the end of 30 April there.
        ("2026-03-31T21:30:00+00:00", "2026-04-30T21:59:59+00:00"),
        # Received in summer time, due in winter time: the end of the Dutch day all the same.
        ("2026-09-25T08:00:00+00:00", "2026-10-25T22:59:59+00:00"),
    ],
)
async def test_a_deadline_ends_with_the_last_hour_of_its_dutch_day(
    shop: WooCommerceSandbox, rt: Runtime, received: str, deadline: str
) -> None:
    """EU Regulation 1182/71 art. 3(2)(c): a period in months ends with the expiry of the
    last hour of the day with the same date (or the month's last day). The deadline was the
    hour of receipt on that day: a request received at 10:00 on 31 January and completed at
    15:00 on 28 February was listed overdue from 10:00 and completed late, on its due date."""
    seed(shop)
    moment = dt.datetime.fromisoformat(received)
    clock = {"now": moment}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    assert view.deadline == deadline
    due = dt.datetime.fromisoformat(deadline)
    clock["now"] = due - dt.timedelta(hours=8)  # later in the day than it was received
    assert service.list(overdue=True) == []
    shop.faults.down = False
    done = await service.retry(view.id)
    assert done.status == "completed" and not done.completed_late
    assert done.completed_date == view.deadline_date


def test_a_deadline_is_counted_on_a_host_without_zone_files(tmp_path: Path) -> None:
    """A deadline is counted on the Dutch calendar. Windows and slim images have no
    /usr/share/zoneinfo: without the zone as a package, opening any request failed there."""
    code = (
        "import datetime as dt\n"
        "from connector.dsr_views import add_months\n"
        "print(add_months(dt.datetime(2026, 1, 31, 10, tzinfo=dt.UTC), 1).isoformat())\n"
    )
    # No system zone files to look in: only the installed tzdata package can answer.
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path / "no-zoneinfo")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2026-02-28T22:59:59+00:00"


async def test_an_extension_is_refused_once_a_month_since_receipt_has_passed(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Art. 12(3): the person is told of an extension within one month of receipt. Only the
    current deadline was checked, so a request extended on day 10 could be extended again
    on day 41."""
    seed(shop)
    received = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    at = [received]
    service = DsrService(rt, now=lambda: at[0])
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    at[0] = received + dt.timedelta(days=10)
    service.extend(view.id, 1, "complex request")
    at[0] = received + dt.timedelta(days=41)
    with pytest.raises(DsrUsageError, match="within one month of receipt"):
        service.extend(view.id, 1, "more")


async def test_two_extensions_at_once_move_the_deadline_once_and_are_recorded_once(
    shop: WooCommerceSandbox, rt: Runtime, config_path: Path
) -> None:
    """`dsr extend` read the request (the months used so far, the reason so far) before its
    write: two extensions of two months at once (an operator, and the admin API in the
    daemon) both passed the Art. 12(3) check, the trail recorded four months of extension
    where the deadline moved two, and the first reason was written over. Looked at in the
    write transaction, the other extension waits, and is then refused."""
    import dataclasses

    from connector.config import load_config
    from connector.keyset import open_keyring
    from connector.state import Store

    seed(shop)
    shop.faults.down = True
    view = await DsrService(rt).erase(CANARY_EMAIL)
    config = load_config(config_path)
    other = Store(config.store_path)  # the other process's own connection
    audit.use_keys(other, open_keyring(other, config))
    other.db.execute("PRAGMA busy_timeout=0")  # it does not wait: its try comes in between
    tries: list[str] = []

    def other_extends() -> None:
        service = DsrService(dataclasses.replace(rt, store=other))
        try:
            service.extend(view.id, 2, "complex request, other operator")
            tries.append("extended")
        except DsrUsageError:
            tries.append("refused")
        except sqlite3.OperationalError:
            tries.append("locked out")

    def now() -> dt.datetime:
        if not tries:
            other_extends()  # between this extension's look at the request and its write
        return dt.datetime.now(dt.UTC)

    try:
        DsrService(rt, now=now).extend(view.id, 2, "complex request")
        other_extends()  # tried again once this one is done
    finally:
        other.close()
    assert tries == ["locked out", "refused"]
    extended = [e.data["months"] for e in audit.entries(rt.store) if e.kind == "dsr.extended"]
    assert extended == [2]
    after = DsrService(rt).get(view.id)
    assert after is not None and after.extension_reason == "complex request"


async def test_an_extension_the_audit_trail_cannot_record_is_not_made(
    shop: WooCommerceSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails as the extension's audit entry is written: the deadline stays as it
    was. Written apart, a deadline moved with no entry to account for it."""
    from tests.conftest import disk_full_error

    seed(shop)
    service = DsrService(rt)
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    real = audit.append

    def full(store: Any, kind: str, *args: Any, **kwargs: Any) -> int:
        if kind == "dsr.extended":
            raise disk_full_error()
        return real(store, kind, *args, **kwargs)

    monkeypatch.setattr(audit, "append", full)
    with pytest.raises(sqlite3.OperationalError):
        service.extend(view.id, 1, "complex request")
    after = service.get(view.id)
    assert after is not None and after.deadline == view.deadline
    assert after.extension_reason is None


async def test_a_deadline_extends_only_before_it_passes(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Art. 12(3): the person is told of an extension within the time; an overdue one stays."""
    seed(shop)
    clock = {"now": dt.datetime(2026, 1, 31, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    clock["now"] = dt.datetime(2026, 4, 15, 9, 0, tzinfo=dt.UTC)  # six weeks overdue
    with pytest.raises(DsrUsageError, match="within one month of receipt"):
        service.extend(view.id, 2, "complex")
    late = service.get(view.id)
    assert late is not None and late.overdue and late.deadline == "2026-02-28T22:59:59+00:00"
    clock["now"] = dt.datetime(2026, 2, 27, 9, 0, tzinfo=dt.UTC)
    service.extend(view.id, 2, "complex")
    with pytest.raises(DsrUsageError, match="already extended by 2 months"):
        service.extend(view.id, 1, "more")


async def test_a_30_day_deadline_cannot_be_extended_once_it_has_passed(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """A Shopify compliance request is due in 30 days, a day before the calendar month is
    up: overdue at 20:00 on 31 March, it is not extended after the fact (which moved its
    deadline to 1 June and took it off `dsr list --overdue`)."""
    seed(shop)
    received = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
    clock = {"now": received}
    service = DsrService(
        rt, now=lambda: clock["now"], received_at=received, due_within=dt.timedelta(days=30)
    )
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    assert view.deadline == "2026-03-31T10:00:00+00:00"
    clock["now"] = dt.datetime(2026, 3, 31, 20, 0, tzinfo=dt.UTC)
    (late,) = service.list(overdue=True)
    assert late.id == view.id
    with pytest.raises(DsrUsageError, match="past its deadline"):
        service.extend(view.id, 2, "complex request")
    (still,) = service.list(overdue=True)
    assert still.deadline == view.deadline and still.extension_reason is None


@pytest.mark.parametrize("kind", ["erase", "access"])
async def test_a_shopify_request_is_not_extended_past_its_30_days(
    shop: WooCommerceSandbox, rt: Runtime, kind: str
) -> None:
    """A customers/redact (customers/data_request) on 5 April is due by 5 May, a calendar
    month as Shopify's 30 days: extended in April it was due by 5 June or July, past what
    Shopify allows, and a later extension counted from the day gap. It is refused, saying
    why, and the deadline stays."""
    seed(shop)
    came = dt.datetime(2026, 4, 5, 10, 0, tzinfo=dt.UTC)
    clock = {"now": came}
    shopify = DsrService(
        rt, now=lambda: clock["now"], received_at=came, due_within=dt.timedelta(days=30)
    )
    shop.faults.down = True
    ask = shopify.erase if kind == "erase" else shopify.access
    view = await ask(CANARY_EMAIL, source="webhook:shop")
    clock["now"] = dt.datetime(2026, 4, 12, 9, 0, tzinfo=dt.UTC)
    later = DsrService(rt, now=lambda: clock["now"])
    with pytest.raises(DsrUsageError, match="within 30 days"):
        later.extend(view.id, 1, "complex request")
    still = later.get(view.id)
    assert still is not None and still.deadline == view.deadline
    assert still.extension_reason is None
    assert not [e for e in audit.entries(rt.store) if e.kind == "dsr.extended"]


async def test_an_open_request_a_shopify_one_joined_is_not_extended_past_its_30_days(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """The person's erasure asked on 2 March (due by 2 April) is open when the shop's
    customers/redact comes on 10 March (due by 9 April): the earlier deadline stays, and the
    request now answers Shopify too, so an extension on 20 March (to 2 May or June) is
    refused as for a request Shopify opened."""
    seed(shop)
    clock = {"now": dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    came = dt.datetime(2026, 3, 10, 14, 0, tzinfo=dt.UTC)
    clock["now"] = came
    shopify = DsrService(
        rt, now=lambda: clock["now"], received_at=came, due_within=dt.timedelta(days=30)
    )
    joined = await shopify.erase(CANARY_EMAIL, source="webhook:shop")
    assert joined.id == view.id and joined.deadline == view.deadline
    clock["now"] = dt.datetime(2026, 3, 20, 9, 0, tzinfo=dt.UTC)
    with pytest.raises(DsrUsageError, match="within 30 days"):
        service.extend(view.id, 1, "complex request")
    assert service.get(view.id).deadline == view.deadline  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["erase", "access"])
async def test_a_shopify_request_joining_an_open_one_brings_its_deadline_forward(
    shop: WooCommerceSandbox, rt: Runtime, kind: str
) -> None:
    """The person's erasure (or access request), asked by e-mail on 2 March and extended by
    two months, is still open when the shop's customers/redact (customers/data_request)
    comes on 10 March. Shopify wants it answered within 30 days of its webhook: the open
    request takes that deadline, the extension notwithstanding, and the audit trail says
    so. A request asked later with a later deadline of its own leaves it as it is."""
    seed(shop)
    clock = {"now": dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await (service.erase if kind == "erase" else service.access)(CANARY_EMAIL)
    extended = service.extend(view.id, 2, "complex request")
    came = dt.datetime(2026, 3, 10, 14, 0, tzinfo=dt.UTC)
    clock["now"] = came
    shopify = DsrService(
        rt, now=lambda: clock["now"], received_at=came, due_within=dt.timedelta(days=30)
    )
    ask = shopify.erase if kind == "erase" else shopify.access
    joined = await ask(CANARY_EMAIL, source="webhook:shop")
    assert joined.id == view.id and joined.deadline == "2026-04-09T14:00:00+00:00"
    moved = [e.data for e in audit.entries(rt.store) if e.kind == "dsr.deadline_brought_forward"]
    assert moved == [
        {
            "request": view.id,
            "kind": kind,
            "deadline": "2026-04-09T14:00:00+00:00",
            "was": extended.deadline,
            "source": "webhook:shop",
            "due_within_days": 30,
        }
    ]
    clock["now"] = dt.datetime(2026, 3, 12, 9, 0, tzinfo=dt.UTC)
    again = await (service.erase if kind == "erase" else service.access)(CANARY_EMAIL)
    assert again.id == view.id and again.deadline == "2026-04-09T14:00:00+00:00"


@pytest.mark.parametrize("kind", ["erase", "access"])
async def test_a_shopify_request_joining_an_open_one_in_february_still_brings_it_forward(
    shop: WooCommerceSandbox, rt: Runtime, kind: str
) -> None:
    """The person's request, asked by e-mail on 20 January and extended by two months, is
    still open when the shop's webhook comes on 5 February. A month from then is 28 days,
    fewer than Shopify's 30, yet Shopify still gave days of its own: the open request takes
    the earlier deadline, the extension notwithstanding, and is marked as one Shopify asked
    for, so it cannot be extended past that again."""
    seed(shop)
    clock = {"now": dt.datetime(2027, 1, 20, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await (service.erase if kind == "erase" else service.access)(CANARY_EMAIL)
    extended = service.extend(view.id, 2, "complex request")
    came = dt.datetime(2027, 2, 5, 14, 0, tzinfo=dt.UTC)
    clock["now"] = came
    shopify = DsrService(
        rt, now=lambda: clock["now"], received_at=came, due_within=dt.timedelta(days=30)
    )
    ask = shopify.erase if kind == "erase" else shopify.access
    joined = await ask(CANARY_EMAIL, source="webhook:shop")
    assert joined.id == view.id
    assert joined.deadline == "2027-03-05T22:59:59+00:00" < extended.deadline
    moved = [e.data for e in audit.entries(rt.store) if e.kind == "dsr.deadline_brought_forward"]
    assert [(m["was"], m["due_within_days"]) for m in moved] == [(extended.deadline, 30)]
    with pytest.raises(DsrUsageError, match="within 30 days"):
        service.extend(view.id, 1, "complex request")


@pytest.mark.parametrize("kind", ["erase", "access"])
async def test_a_request_asked_again_by_the_operator_keeps_its_extended_deadline(
    shop: WooCommerceSandbox, rt: Runtime, kind: str
) -> None:
    """The person's request, asked on 2 March and extended by two months (the person told
    so), is asked again with `dsr erase` (`dsr access`) on 10 March while still open: the
    repeat gives no fewer days than GDPR's month, so the extension the controller granted
    stands, and no deadline is recorded as brought forward."""
    seed(shop)
    clock = {"now": dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await (service.erase if kind == "erase" else service.access)(CANARY_EMAIL)
    extended = service.extend(view.id, 2, "complex request")
    clock["now"] = dt.datetime(2026, 3, 10, 14, 0, tzinfo=dt.UTC)
    again = await (service.erase if kind == "erase" else service.access)(CANARY_EMAIL)
    assert again.id == view.id and again.deadline == extended.deadline
    kinds = {e.kind for e in audit.entries(rt.store)}
    assert "dsr.deadline_brought_forward" not in kinds


async def test_request_is_flagged_seven_days_before_its_deadline(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Eight days left is fine, seven is flagged, past the deadline is overdue; summary counts."""
    seed(shop)
    clock = {"now": dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    assert (view.days_left, view.flagged) == (31, False)
    clock["now"] = dt.datetime(2026, 5, 24, 12, 0, tzinfo=dt.UTC)
    assert service.get(view.id).flagged is False  # type: ignore[union-attr]
    clock["now"] = dt.datetime(2026, 5, 25, 21, 59, 59, tzinfo=dt.UTC)  # due at the end of 1 June
    flagged = service.get(view.id)
    assert flagged is not None and flagged.flagged and flagged.days_left == 7
    assert service.list(overdue=True) == []
    clock["now"] = dt.datetime(2026, 6, 2, 12, 0, tzinfo=dt.UTC)
    (late,) = service.list(overdue=True)
    assert late.overdue and late.days_left < 0
    counts = summary(rt.store, now=clock["now"])
    assert (counts["open"], counts["overdue"], counts["flagged"]) == (1, 1, 1)
    assert counts["requests"][0]["waiting_on"] == ["shop"]


async def test_requests_survive_a_restart_and_resume(
    shop: WooCommerceSandbox, open_rt: Callable[..., Any]
) -> None:
    """An open request is still there, with its statuses, after the process restarts."""
    seed(shop)
    shop.faults.down = True
    async with open_rt() as rt:
        view = await DsrService(rt).erase(CANARY_EMAIL)
    shop.faults.down = False
    async with open_rt() as rt:
        service = DsrService(rt)
        (found,) = service.list(open_only=True)
        assert found.id == view.id and found.system("shop").status == "failed"
        assert await service.retry_open() == 1
        assert service.list(open_only=True) == []
    assert not shop.holds(CANARY_EMAIL)


async def test_request_views_never_hold_an_email(shop: WooCommerceSandbox, rt: Runtime) -> None:
    """The views and summaries the CLI and admin API print carry ids and statuses only."""
    await seeded(shop, rt)
    service = DsrService(rt)
    await service.erase(CANARY_EMAIL)
    text = json.dumps([v.as_dict() for v in service.list()]) + json.dumps(summary(rt.store))
    assert CANARY_EMAIL not in text and "@" not in text


# -- rectification -----------------------------------------------------------------------------


async def _correction_left_open(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, fields: dict[str, str]
) -> tuple[DsrService, RequestView]:
    """A correction asked while the CRM was down (left open), the CRM back up since."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    first = await service.rectify(CANARY_EMAIL, fields)
    crm.faults.down = False
    return service, first


async def test_rectify_pushes_mapped_fields_to_every_system_that_receives_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A corrected city reaches both systems, and the next sync carries the shop's new value."""
    await seeded(shop, rt)
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    delivered = rt.store.page_hashes(["crm"], [sid])[1]
    assert delivered["crm"]
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"city": "Amersfoort", "postcode": "3811 aa"})
    assert view.status == "completed"
    crm_record = crm.record_for(CANARY_EMAIL)
    shop_record = shop.record_for(CANARY_EMAIL)
    assert crm_record is not None and crm_record["properties"]["city"] == "Amersfoort"
    assert shop_record is not None and shop_record["billing"]["city"] == "Amersfoort"
    assert shop_record["billing"]["postcode"] == "3811 AA"
    # The shop was corrected, so its next sync sends the person again, whatever the shop
    # holds then (a source that was not corrected keeps its hashes: see
    # test_a_correction_stands_when_the_source_cannot_be_written).
    assert rt.store.page_hashes(["crm"], [sid])[1] == {
        "crm": {sid: f"{RESEND}:{delivered['crm'][sid]}"}
    }
    receipt = receipt_of(service, view.id)
    systems = {s["system"]: s for s in receipt["systems"]}
    assert systems["crm"]["fields"] == ["city"]
    assert systems["shop"]["fields"] == ["city", "postcode"]
    # Both are written: no word of a source klantsync only reads (there is none).
    assert receipt["connector"] == {}
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].queued == 1
    crm_record = crm.record_for(CANARY_EMAIL)
    assert crm_record is not None and crm_record["properties"]["city"] == "Amersfoort"


async def test_rectify_refuses_unknown_fields_and_erased_subjects(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """An unknown canonical field is named in the error; an erased subject cannot be rectified."""
    await seeded(shop, rt)
    service = DsrService(rt)
    with pytest.raises(DsrUsageError, match="favourite_colour"):
        await service.rectify(CANARY_EMAIL, {"favourite_colour": "blue"})
    with pytest.raises(DsrUsageError, match="e-mail"):
        await service.rectify(CANARY_EMAIL, {"email": "new@example.nl"})
    with pytest.raises(DsrUsageError, match="phone"):
        await service.rectify(CANARY_EMAIL, {"phone": "not a number"})
    await service.erase(CANARY_EMAIL)
    with pytest.raises(DsrError, match="erased"):
        await service.rectify(CANARY_EMAIL, {"city": "Zeist"})


@pytest.mark.parametrize(
    "given",
    [
        f"Canary Klant <{CANARY_EMAIL}>",  # pasted from a mail client's "To:" line
        f"<{CANARY_EMAIL}>",
        CANARY_EMAIL.replace("@", " @"),
        CANARY_EMAIL.replace("@", "@\u00a0"),  # a no-break space a web page copied
        f"{CANARY_EMAIL}, {OTHER_EMAIL}",
        f"{CANARY_EMAIL}@{OTHER_EMAIL}",
    ],
)
async def test_a_request_under_what_is_no_address_is_refused_before_anything_is_recorded(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, given: str
) -> None:
    """An address with blanks or characters no unquoted address holds (a name and angle
    brackets pasted with it, two addresses at once) is nobody's: taken as given, its erasure
    found no one, completed with every system `not_held` and a signed receipt, while the
    person stayed in both systems. It is refused (exit 2), as the admin API refuses it."""
    await seeded(shop, rt)
    service = DsrService(rt)
    with pytest.raises(DsrUsageError, match="not an e-mail address"):
        await service.erase(given)
    with pytest.raises(DsrUsageError, match="not an e-mail address"):
        await service.access(given)
    with pytest.raises(DsrUsageError, match="not an e-mail address"):
        await service.rectify(given, {"city": "Zeist"})
    assert service.list() == []  # nothing opened, nobody suppressed
    assert shop.holds(CANARY_EMAIL) and crm.holds(CANARY_EMAIL)


async def test_rectify_refuses_a_field_no_system_is_written(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """`dsr rectify --set date_of_birth=...`: a canonical field no mapping sends. It was
    accepted and "completed" with a signed receipt, every system skipped, nothing corrected
    anywhere; it is refused up front (exit 2), naming the field, as an unknown one is."""
    await seeded(shop, rt)
    service = DsrService(rt)
    with pytest.raises(DsrUsageError, match="date_of_birth: no configured system is written"):
        await service.rectify(CANARY_EMAIL, {"date_of_birth": "1990-01-01"})
    with pytest.raises(DsrUsageError, match="date_of_birth"):
        await service.rectify(CANARY_EMAIL, {"city": "Zeist", "date_of_birth": "1990-01-01"})
    assert service.list() == []  # nothing opened


async def test_rectify_does_not_create_the_person_where_they_are_not_held(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A system that does not hold the subject is 'not_held', never written to."""
    seed(shop)  # in the shop only: no sync to the CRM
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert view.system("crm").status == "not_held"
    assert view.system("shop").status == "done"
    assert not crm.holds(CANARY_EMAIL)


async def test_rectify_leaves_a_contact_archived_in_hubspot_alone(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A contact held only in HubSpot's recycle bin is skipped, saying why; no new one is made."""
    await seeded(shop, rt)
    archived_id = archive_in_crm(crm, CANARY_EMAIL)
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert view.system("crm").status == "skipped"
    assert "archived" in (view.system("crm").detail or "")
    assert view.system("shop").status == "done"
    assert not crm.holds(CANARY_EMAIL)
    contact = crm.store.archived(archived_id)
    assert contact is not None and contact.properties["city"] == "Utrecht"


async def test_access_reports_a_contact_archived_in_hubspot(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An archived contact is still held: the access bundle shows it, marked archived."""
    await seeded(shop, rt)
    archived_id = archive_in_crm(crm, CANARY_EMAIL)
    view = await DsrService(rt).access(CANARY_EMAIL, tmp_path / "bundle")
    assert view.system("crm").status == "done"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    (record,) = data["systems"]["crm"]["records"]
    assert (record["id"], record["archived"]) == (archived_id, True)
    assert record["properties"]["email"] == CANARY_EMAIL


async def test_access_under_an_address_changed_since_the_last_sync_shows_the_former_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The customer changed their address in the shop and asked what is held before the next
    sync: the CRM's contact, under the former address, is in the bundle (Art. 15 is about
    the person, not the address they wrote from)."""
    await seeded(shop, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    view = await DsrService(rt).access(new_address, tmp_path / "bundle")
    assert view.status == "completed" and view.system("crm").status == "done"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    (record,) = data["systems"]["crm"]["records"]
    assert record["properties"]["email"] == CANARY_EMAIL


async def test_rectify_under_an_address_changed_since_the_last_sync_corrects_the_former_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CRM holds the customer under the address they had at the last sync; a correction
    asked under the new one reaches that contact (it said "not held" before)."""
    await seeded(shop, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    view = await DsrService(rt).rectify(new_address, {"city": "Zeist"})
    assert view.status == "completed"
    assert view.system("crm").status == "done"
    contact = crm.record_for(new_address) or crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["city"] == "Zeist"


async def test_a_second_correction_while_the_first_is_open_is_one_request_and_the_last_word(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A correction left open (the CRM was down) and a second one of the same field: one
    request, carrying both, and the value asked last is what every system holds. Two
    requests, before: the first, retried after the second completed, put its value back."""
    service, first = await _correction_left_open(
        shop, crm, rt, {"city": "Zeist", "company": "Bakkerij"}
    )
    assert first.is_open and first.system("crm").status == "failed"
    second = await service.rectify(CANARY_EMAIL, {"city": "Utrecht"})
    assert second.id == first.id and second.status == "completed"
    assert await service.retry_open() == 0
    assert [v.id for v in service.list()] == [first.id]
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None
    assert (contact["properties"]["city"], contact["properties"]["company"]) == (
        "Utrecht",
        "Bakkerij",
    )
    customer = shop.record_for(CANARY_EMAIL)
    assert customer is not None and customer["billing"]["city"] == "Utrecht"
    kinds = [e.kind for e in audit.entries(rt.store) if e.data.get("request") == first.id]
    assert "dsr.amended" in kinds


@pytest.mark.parametrize("synced_between", [False, True])
async def test_a_correction_asked_under_a_new_address_joins_the_one_open_under_the_former(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, synced_between: bool
) -> None:
    """A correction left open (the CRM was down); the customer changes their address in the
    shop (synced or not), then asks for another correction under the new one. One request,
    the last word, under the new address: two, before, and the first, retried last, put its
    older name back (the fan-out model found it)."""
    service, first = await _correction_left_open(shop, crm, rt, {"first_name": "Bram"})
    assert first.is_open
    moved = "anna.nieuw@voorbeeld.nl"
    shop.touch(CANARY_EMAIL, email=moved)
    if synced_between:
        await rt.engine.sync()
    second = await service.rectify(moved, {"first_name": "Anna"})
    assert second.id == first.id and second.status == "completed"
    assert await service.retry_open() == 0
    await rt.engine.sync()
    assert [v.id for v in service.list()] == [first.id]
    contact = crm.record_for(moved)
    assert contact is not None and contact["properties"]["firstname"] == "Anna"
    assert not crm.holds(CANARY_EMAIL)
    customer = shop.record_for(moved)
    assert customer is not None and customer["first_name"] == "Anna"


async def test_a_change_back_in_the_shop_after_a_correction_reaches_every_system(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Synced under one name, corrected to Bram (shop and CRM), then changed back to the
    first name in the shop before the next sync: that sync sends it. It used to find the
    payload's hash the one last sent and send nothing, so the CRM kept Bram (the fan-out
    model found it). Left alone after a correction, the person is sent once more, then not."""
    await seeded(shop, rt)
    assert (await DsrService(rt).rectify(CANARY_EMAIL, {"first_name": "Bram"})).status == (
        "completed"
    )
    shop.touch(CANARY_EMAIL, first_name=CANARY_NAME)  # back to what it was
    await rt.engine.sync()
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["firstname"] == CANARY_NAME
    assert (await DsrService(rt).rectify(CANARY_EMAIL, {"first_name": "Bram"})).status == (
        "completed"
    )
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].queued == 1
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].queued == 0
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["firstname"] == "Bram"


async def test_a_correction_retried_after_a_later_change_in_the_shop_leaves_that_change(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A correction reaches the shop while the CRM is down; the customer then changes the
    same field in the shop, and the sync carries it to the CRM. The correction, retried
    later, leaves the CRM's newer value (its step says why): it used to write its older one
    over it (the fan-out model found it). A field not changed since is still corrected."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    view = await service.rectify(CANARY_EMAIL, {"first_name": "Bram", "city": "Zeist"})
    crm.faults.down = False
    assert view.is_open and view.system("shop").status == "done"
    shop.touch(CANARY_EMAIL, first_name="Daan")
    await rt.engine.sync()
    view = await service.retry(view.id)
    assert view.status == "completed"
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None
    assert (contact["properties"]["firstname"], contact["properties"]["city"]) == ("Daan", "Zeist")


async def test_a_correction_retried_for_the_shop_leaves_the_customer_s_later_change_there(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The mirror of the test above, with the shop down instead of the CRM. The correction
    (first name "Bram") reaches the CRM; the customer then changes their first name in the
    shop ("Daan"), and the sync carries it to the CRM. The retry leaves the shop's newer
    value (its step says why): it used to write the older "Bram" over it, and the resend
    it set up carried "Bram" back to the CRM, undoing the customer's change everywhere."""
    await seeded(shop, rt)
    service = DsrService(rt)
    shop.faults.down = True
    view = await service.rectify(CANARY_EMAIL, {"first_name": "Bram", "city": "Zeist"})
    shop.faults.down = False
    assert view.is_open and view.system("crm").status == "done"
    shop.touch(CANARY_EMAIL, first_name="Daan")
    await rt.engine.sync()
    view = await service.retry(view.id)
    assert view.status == "completed"
    step = view.system("shop")
    assert step.status == "done" and "first_name" in (step.detail or "")
    await rt.engine.sync()
    customer = shop.record_for(CANARY_EMAIL)
    contact = crm.record_for(CANARY_EMAIL)
    assert customer is not None and contact is not None
    assert (customer["first_name"], customer["billing"]["city"]) == ("Daan", "Zeist")
    assert (contact["properties"]["firstname"], contact["properties"]["city"]) == ("Daan", "Zeist")


async def test_a_correction_retried_for_the_shop_reaches_it_after_a_sync_put_the_old_value_back(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop down for the correction (first name "Bram"), which reached the CRM; the
    customer then changed their phone in the shop, and that sync carried the shop's first
    name, the one from before the correction, back to the CRM. That is no later change of
    the first name: the retry corrects the shop, and the next sync the CRM again."""
    await seeded(shop, rt)
    service = DsrService(rt)
    shop.faults.down = True
    view = await service.rectify(CANARY_EMAIL, {"first_name": "Bram"})
    shop.faults.down = False
    assert view.is_open and view.system("crm").status == "done"
    shop.touch(CANARY_EMAIL, billing__phone="0612121212")
    await rt.engine.sync()
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["firstname"] == CANARY_NAME
    view = await service.retry(view.id)
    assert view.status == "completed" and view.system("shop").status == "done"
    await rt.engine.sync()
    customer = shop.record_for(CANARY_EMAIL)
    contact = crm.record_for(CANARY_EMAIL)
    assert customer is not None and customer["first_name"] == "Bram"
    assert contact is not None and contact["properties"]["firstname"] == "Bram"


async def test_a_correction_step_names_the_field_it_left_to_a_later_change_in_the_shop(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Of the two fields corrected, one changed in the shop since: the CRM's step is done
    and names the field it left (its name, never a value). It used to say nothing, as if
    both were corrected."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    view = await service.rectify(CANARY_EMAIL, {"first_name": "Bram", "city": "Zeist"})
    crm.faults.down = False
    assert view.is_open and view.system("shop").status == "done"
    shop.touch(CANARY_EMAIL, first_name="Daan")
    await rt.engine.sync()
    view = await service.retry(view.id)
    assert view.status == "completed"
    step = view.system("crm")
    assert step.status == "done" and step.detail is not None
    assert "first_name" in step.detail and "city" not in step.detail
    assert "Daan" not in step.detail and "Bram" not in step.detail
    (entry,) = [s for s in receipt_of(service, view.id)["systems"] if s["system"] == "crm"]
    assert entry["fields"] == ["city"] and entry["left_to_source"] == ["first_name"]


async def test_the_same_correction_asked_again_is_one_request_sent_everywhere_again(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Asked again as it was (an operator running a command that died once more), the open
    correction goes on as one request, and every system is asked again: the shop, settled
    by the first asking, had its value changed back meanwhile (the fan-out model found a
    shop left with the old name when only the unsettled systems were asked)."""
    service, first = await _correction_left_open(shop, crm, rt, {"city": "Zeist"})
    assert first.system("shop").status == "done"
    shop.touch(CANARY_EMAIL, billing__city="Amersfoort")  # changed back in the shop
    again = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert again.id == first.id and again.status == "completed"
    assert [v.id for v in service.list()] == [first.id]
    customer = shop.record_for(CANARY_EMAIL)
    assert customer is not None and customer["billing"]["city"] == "Zeist"


async def _asked_again_during_the_crm_update(
    service: DsrService, rt: Runtime, ask: Callable[[], Awaitable[Any]]
) -> list[Any]:
    """Make the CRM's next update run ``ask`` first, as a second asking arriving while a
    retry talks to the CRM; what ``ask`` gave (a task or a value) is in the list returned."""
    adapter = rt.systems["crm"].adapter
    real_update = adapter.update
    asked: list[Any] = []

    async def update(records: Any) -> Any:
        if not asked:
            asked.append(await ask())
        return await real_update(records)

    adapter.update = update  # type: ignore[method-assign]
    return asked


async def test_a_correction_asked_while_the_open_one_is_retried_is_not_dropped(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A correction is open (the CRM was down); while its retry talks to the CRM, another is
    asked (the company). It waits for the retry, which completes the request with the values
    before: the company gets a request of its own, and reaches every system."""
    service, first = await _correction_left_open(shop, crm, rt, {"city": "Zeist"})
    assert first.is_open

    async def ask_while_running() -> asyncio.Task[RequestView]:
        task = asyncio.create_task(service.rectify(CANARY_EMAIL, {"company": "Bakkerij"}))
        lock, _ = service._locks[first.id]
        while not getattr(lock, "_waiters", None):  # until it waits for this retry
            await asyncio.sleep(0)
        return task

    asked = await _asked_again_during_the_crm_update(service, rt, ask_while_running)
    assert (await service.retry(first.id)).status == "completed"
    second = await asked[0]
    assert second.id != first.id and second.status == "completed"
    contact, customer = crm.record_for(CANARY_EMAIL), shop.record_for(CANARY_EMAIL)
    assert contact is not None and customer is not None
    assert contact["properties"]["company"] == customer["billing"]["company"] == "Bakkerij"
    assert contact["properties"]["city"] == customer["billing"]["city"] == "Zeist"


async def test_a_correction_amended_by_another_process_mid_run_is_not_settled_by_that_run(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CLI beside the daemon: no lock is shared, and the amendment lands while the
    daemon's retry talks to the CRM with the values before. That run's outcome settles
    nothing and completes nothing; the next run writes the amended values everywhere."""
    service, first = await _correction_left_open(shop, crm, rt, {"city": "Zeist"})

    async def amend_from_elsewhere() -> bool:
        with rt.store.transaction():  # as DsrService.rectify does, in another process
            return service._amend(first.id, {"company": "Bakkerij"}, "cli", CANARY_EMAIL)

    asked = await _asked_again_during_the_crm_update(service, rt, amend_from_elsewhere)
    view = await service.retry(first.id)
    assert view.is_open and view.system("crm").status == "pending"
    assert len(asked) == 1
    view = await service.retry(first.id)
    assert view.status == "completed"
    contact, customer = crm.record_for(CANARY_EMAIL), shop.record_for(CANARY_EMAIL)
    assert contact is not None and customer is not None
    assert contact["properties"]["company"] == customer["billing"]["company"] == "Bakkerij"


async def test_rectify_creates_no_shop_account_for_someone_with_guest_orders_only(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop holds only guest orders billed to the e-mail: no customer account is created
    to hold the correction, and the step says there is no account to correct."""
    shop.add_order(0, billing={"email": CANARY_EMAIL, "first_name": "Gast", "city": "Delft"})
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert view.status == "completed"
    step = view.system("shop")
    assert step.status == "not_held" and step.detail is not None and "guest" in step.detail
    assert not shop.holds(CANARY_EMAIL)
    assert not crm.holds(CANARY_EMAIL)


# -- the command line --------------------------------------------------------------------------


def test_cli_erase_receipt_and_verification(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """erase exits 0; receipt prints a file verify-receipt accepts; one changed byte fails it."""
    seed(shop)
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 0 and CANARY_EMAIL not in out
    request_id = json.loads(out)["id"]
    code, receipt, _ = cli("receipt", request_id, capsys=capsys)
    assert code == 0
    path = tmp_path / "receipt.json"
    path.write_text(receipt)
    code, out, _ = cli("public-key", capsys=capsys)
    assert code == 0 and out.startswith("-----BEGIN PUBLIC KEY-----")
    pem = tmp_path / "key.pem"
    pem.write_text(out)
    assert cli("verify-receipt", str(path), capsys=capsys)[0] == 0
    assert cli("verify-receipt", str(path), "--public-key", str(pem), capsys=capsys)[0] == 0
    # A key that is none is the command's mistake (2), not a verdict on the receipt (1).
    (tmp_path / "not-a-key.pem").write_text("not a key")
    bad_key = ("verify-receipt", str(path), "--public-key", str(tmp_path / "not-a-key.pem"))
    code, _, err = cli(*bad_key, capsys=capsys)
    assert code == 2 and "--public-key: the public key is not a valid PEM public key" in err
    edited = bytearray(path.read_bytes())
    position = edited.index(b"verified_absent")
    edited[position] = ord("V")
    path.write_bytes(bytes(edited))
    code, out, _ = cli("verify-receipt", str(path), capsys=capsys)
    assert code == 1 and "invalid" in out


def test_a_dsr_command_records_the_config_it_carries_a_request_out_under(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    config_path: Path,
) -> None:
    """``config.loaded`` says a config came into use; an erasure is carried out under the
    config ``dsr erase`` loaded (its mappings say what each system holds), so it is recorded
    before the request's entries, as ``sync`` and ``run`` record theirs. A look (``dsr
    list``) puts no config to use, and records none."""
    from connector.config import load_config
    from connector.state import Store

    def in_use() -> list[tuple[str, str | None]]:
        store = Store(load_config(config_path).store_path)
        try:
            return [(e.kind, e.data.get("sha256")) for e in audit.entries(store)]
        finally:
            store.close()

    seed(shop)
    assert cli("erase", "--email", OTHER_EMAIL, "--json", capsys=capsys)[0] == 0
    first = audit.config_digest(load_config(config_path))["sha256"]
    assert in_use()[0] == (audit.CONFIG_LOADED, first)
    config_path.write_text(
        config_path.read_text().replace("retry_attempts = 8", "retry_attempts = 5")
    )
    now = audit.config_digest(load_config(config_path))["sha256"]
    assert cli("list", "--json", capsys=capsys)[0] == 0
    assert [sha for kind, sha in in_use() if kind == audit.CONFIG_LOADED] == [first]
    assert cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)[0] == 0
    kinds = in_use()
    second = [i for i, (kind, _) in enumerate(kinds) if kind == "dsr.received"][1]
    assert [sha for kind, sha in kinds[:second] if kind == audit.CONFIG_LOADED] == [first, now]


def test_cli_erase_reads_the_address_and_phone_from_standard_input_given_as_dash(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rt: Runtime,
) -> None:
    """`--email -` (or `--phone -`) reads the value from standard input, one line: as an
    argument it is in every local user's `ps` for the whole fan-out, and in the shell's
    history."""
    seed(shop)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"  {CANARY_EMAIL}\n"))
    code, out, err = cli("erase", "--email", "-", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["status"] == "completed", err
    assert not shop.holds(CANARY_EMAIL)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{CANARY_PHONE}\n"))
    code, out, err = cli("erase", "--email", OTHER_EMAIL, "--phone", "-", capsys=capsys)
    assert code == 0, err
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    assert rt.store.suppressed([phone]) == {phone}


def test_cli_rectify_reads_the_corrected_values_from_standard_input_given_as_set_dash(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--set -` reads FIELD=VALUE lines from standard input, beside those given as
    arguments: a corrected name or street is the person's as much as the address, and as
    an argument it sat in every local user's `ps`."""
    seed(shop)
    monkeypatch.setattr(sys, "stdin", io.StringIO("city=Amersfoort\n\n"))
    code, out, err = cli(
        "rectify", "--email", CANARY_EMAIL, "--set", "-", "--set", "postcode=3811 aa",
        "--json", capsys=capsys,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["status"] == "completed", err
    record = shop.record_for(CANARY_EMAIL)
    assert record is not None
    assert (record["billing"]["city"], record["billing"]["postcode"]) == ("Amersfoort", "3811 AA")


@pytest.mark.parametrize(
    ("given", "words", "said"),
    [
        ("\n", ["dsr", "erase", "--email", "-"], "--email -: standard input gave nothing"),
        (
            f"{CANARY_EMAIL}\n{OTHER_EMAIL}\n",
            ["dsr", "access", "--email", "-", "--out", "b"],
            "2 lines",
        ),
        (CANARY_EMAIL, ["dsr", "erase", "--email", "-", "--phone", "-"], "only one of them"),
        ("", ["resync", "--system", "shop", "--email", "-"], "gave nothing"),
        (
            "city=Delft",
            ["dsr", "rectify", "--email", "-", "--set", "-"],
            "--email - and --set -: standard input gives only one of them",
        ),
        ("\n", ["dsr", "rectify", "--email", OTHER_EMAIL, "--set", "-"], "--set -: standard"),
    ],
    ids=["empty", "two-lines", "both", "resync", "address-and-values", "no-values"],
)
def test_cli_refuses_standard_input_that_gives_no_single_value(
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    given: str,
    words: list[str],
    said: str,
) -> None:
    """An empty input or two addresses is bad usage (exit 2), before anything is asked of
    a system: the second address would otherwise be passed over in silence. What was read
    is not echoed."""
    from connector.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(given))
    with pytest.raises(SystemExit) as info:
        main(["-c", str(config_path), *words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert said in err and CANARY_EMAIL not in err and OTHER_EMAIL not in err


def test_cli_receipt_file_hashes_to_the_audit_entry_that_vouches_for_it(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`dsr receipt ID > r.json` writes the signed bytes and no newline after them, so
    `sha256sum r.json` is the `receipt_sha256` of the request's `dsr.completed` entry."""
    seed(shop)
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 0
    request_id = json.loads(out)["id"]
    code, receipt, _ = cli("receipt", request_id, capsys=capsys)
    assert code == 0
    path = tmp_path / "r.json"
    path.write_text(receipt)  # as `dsr receipt ID > r.json` writes it

    async def vouched() -> str:
        async with open_rt() as runtime:
            (entry,) = [
                e
                for e in audit.entries(runtime.store)
                if e.kind == "dsr.completed" and e.data["request"] == request_id
            ]
            return str(entry.data["receipt_sha256"])

    assert hashlib.sha256(path.read_bytes()).hexdigest() == run_loop(vouched())


def test_cli_verify_receipt_json_names_the_request_it_vouches_for(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`dsr verify-receipt --json` names the request a valid receipt is for, as the text
    does, and which of the store's keys signed it, with when it was made; an invalid one
    names none (nothing vouches for what it says)."""
    seed(shop)
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 0
    request_id = json.loads(out)["id"]
    code, receipt, _ = cli("receipt", request_id, capsys=capsys)
    path = tmp_path / "receipt.json"
    path.write_text(receipt)
    key = json.loads(receipt)["key_id"]
    code, text, _ = cli("verify-receipt", str(path), capsys=capsys)
    assert code == 0 and request_id in text
    assert f"signed with the key in use, {key} (made " in " ".join(text.split())
    code, out, _ = cli("verify-receipt", str(path), "--json", capsys=capsys)
    assert code == 0
    said = json.loads(out)
    signed_with = said.pop("signed_with")
    assert said == {"valid": True, "problem": "", "request_id": request_id}
    assert signed_with["key_id"] == key and signed_with["key"] == "current"
    assert signed_with["retired_at"] is None
    assert dt.datetime.fromisoformat(signed_with["made_at"]).tzinfo is not None
    path.write_text(receipt.replace("verified_absent", "Verified_absent", 1))
    code, out, _ = cli("verify-receipt", str(path), "--json", capsys=capsys)
    assert code == 1 and json.loads(out)["request_id"] is None


def _made_store(directory: Path) -> None:
    """The store of the config in ``directory``, made as a first sync makes it: `dsr
    public-key` makes none where there is none yet."""
    from connector.state import Store

    Store(directory / "state" / "klantsync.db").close()


def test_cli_public_key_json(
    cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`dsr public-key --json` holds the PEM, and every key the store signed with, the one
    in use first, each with when it was made and retired; with --out it says where the PEM
    went."""
    _made_store(tmp_path)
    code, out, _ = cli("public-key", capsys=capsys)
    assert code == 0
    code, as_json, _ = cli("public-key", "--json", capsys=capsys)
    said = json.loads(as_json)
    assert code == 0 and said["public_key"] == out
    (only,) = said["public_keys"]
    assert only["public_key"] == out and only["retired_at"] is None and only["made_at"]
    assert cli("rotate-key", capsys=capsys)[0] == 0
    code, as_json, _ = cli("public-key", "--json", capsys=capsys)
    current, former = json.loads(as_json)["public_keys"]
    assert current["retired_at"] is None and current["public_key"] != out
    assert former == only | {"retired_at": former["retired_at"]} and former["retired_at"]
    code, out, _ = cli("public-key", capsys=capsys)
    target = tmp_path / "receipts.pem"
    code, note, _ = cli("public-key", "--out", str(target), "--json", capsys=capsys)
    assert code == 0 and json.loads(note) == {"written": str(target), "format": "pem"}
    assert target.read_text() == out


def test_cli_exit_codes_for_open_requests_and_bad_usage(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An erasure left open exits 1 until retried; unknown fields and ids exit 2 naming them."""
    seed(shop)
    shop.faults.down = True
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 1
    request_id = json.loads(out)["id"]
    assert cli("receipt", request_id, capsys=capsys)[0] == 1
    code, out, _ = cli("list", "--open", capsys=capsys)
    assert code == 0 and request_id in out and CANARY_EMAIL not in out
    shop.faults.down = False
    assert cli("retry", request_id, capsys=capsys)[0] == 0
    code, out, _ = cli("show", request_id, capsys=capsys)
    # Each system's tries, counted in words: the shop was down at the first.
    assert code == 0 and "crm: not_held (1 attempt)" in out
    assert "shop: verified_absent (2 attempts)" in out
    code, _, err = cli("rectify", "--email", CANARY_EMAIL, "--set", "shoe_size=44", capsys=capsys)
    assert code == 2 and "shoe_size" in err
    code, _, err = cli("retry", "er-20260101-00000000", capsys=capsys)
    assert code == 2 and "no request 'er-20260101-00000000'" in err
    code, _, _ = cli("extend", request_id, "--months", "1", "--reason", "x", capsys=capsys)
    assert code == 2


def test_cli_receipt_json_of_an_open_request_answers_a_documented_error_kind(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dsr receipt ID --json` for a request still open exits 1 with one of the error kinds
    README lists (`error`), the request's status beside it: `"open"` as the kind was one a
    script handling the documented kinds could not know."""
    seed(shop)
    shop.faults.down = True  # the erasure stays open
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 1
    request_id = json.loads(out)["id"]
    code, out, _ = cli("receipt", request_id, "--json", capsys=capsys)
    answer = json.loads(out)
    assert code == 1 and answer["error"] == "error" and answer["status"] == "open"
    assert "still open" in answer["message"] and CANARY_EMAIL not in out


def test_cli_exempt_closes_a_system_s_part_and_says_so(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dsr exempt` with the shop down: the request completes with the shop exempt (exit 0,
    the reason shown); a system the request lacks, or a settled one, exits 2 naming it."""
    seed(shop)
    shop.faults.down = True
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 1
    request_id = json.loads(out)["id"]
    code, out, err = cli("receipt", request_id, capsys=capsys)
    # On stderr: `dsr receipt ID > receipt.json` would hand the person this sentence.
    assert (code, out) == (1, "") and "still open: no receipt yet" in err
    code, _, err = cli("exempt", request_id, "--system", "deals", "--reason", "r", capsys=capsys)
    assert code == 2 and "has no system of that name; it has crm, shop" in err
    reason = "orders kept seven years (fiscal retention)"
    code, out, _ = cli("exempt", request_id, "--system", "shop", "--reason", reason, capsys=capsys)
    assert code == 0 and "shop: exempt" in out and reason in out and "completed" in out
    code, out, _ = cli("show", request_id, "--json", capsys=capsys)
    shown = {name: s["status"] for name, s in json.loads(out)["systems"].items()}
    assert code == 0 and shown == {"shop": "exempt", "crm": "not_held"}  # never synced
    code, _, err = cli("exempt", request_id, "--system", "crm", "--reason", "r", capsys=capsys)
    assert code == 2 and "completed" in err


def test_cli_actions_that_call_no_system_run_without_the_systems_credentials(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """deploy/klantsync.service gives the systems' credentials to the daemon alone; the
    operator runs commands without them. The dsr actions that read or write the store only
    (`list`, `show`, `receipt`, `verify-receipt`, `public-key`, `extend`, `exempt`,
    `readmit`, `rotate-key`) each resolved every credential first and exited 2
    ("environment variable ... is not set"): no listing the open requests, no receipt for
    the person, no public key for the regulator. Those that call the systems still name
    the credential missing, as bad configuration, before asking any system."""
    seed(shop)
    shop.faults.down = True  # the erasure stays open
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 1
    request_id = json.loads(out)["id"]
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for action in (
        ["list"],
        ["list", "--open"],
        ["show", request_id],
        ["public-key"],
        ["extend", request_id, "--months", "1", "--reason", "busy"],
        ["exempt", request_id, "--system", "shop", "--reason", "kept for the books"],
    ):
        code, out, err = cli(*action, capsys=capsys)
        assert code == 0, (action, err)
    code, receipt, err = cli("receipt", request_id, capsys=capsys)
    assert code == 0, err
    (tmp_path / "receipt.json").write_text(receipt)
    assert cli("verify-receipt", str(tmp_path / "receipt.json"), capsys=capsys)[0] == 0
    assert cli("rotate-key", capsys=capsys)[0] == 0
    code, _, err = cli("readmit", "--email", CANARY_EMAIL, "--reason", "signed up", capsys=capsys)
    assert code == 0, err
    for action in (
        ["erase", "--email", OTHER_EMAIL],
        ["access", "--email", OTHER_EMAIL, "--out", str(tmp_path / "bundle")],
        ["rectify", "--email", OTHER_EMAIL, "--set", "city=Delft"],
        ["retry", "--all"],
    ):
        code, _, err = cli(*action, capsys=capsys)
        assert code == 2 and "systems.shop.credentials.consumer_key" in err, (action, err)
        assert "T_WC_KEY is not set" in err
    assert not (tmp_path / "bundle").exists()


def test_cli_list_shows_the_deadline_on_the_dutch_calendar(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A request that came at 00:30 on 1 March in the Netherlands (23:30 UTC on 28 February)
    is due by the end of 1 April there: `dsr list` and `dsr show` print 1 April, the date on
    the calendar the deadline is counted on, not a month from the UTC date."""
    seed(shop)
    received = dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC)  # 00:30 on 1 March, Amsterdam

    async def opened() -> str:
        async with open_rt() as runtime:
            shop.faults.down = True
            view = await DsrService(runtime, now=lambda: received).erase(CANARY_EMAIL)
            shop.faults.down = False
            assert view.deadline == "2026-04-01T21:59:59+00:00"
            return view.id

    request_id = run_loop(opened())
    for argv in (("list",), ("show", request_id)):
        code, out, _ = cli(*argv, capsys=capsys)
        assert code == 0 and request_id in out
        assert "deadline 2026-04-01" in out, out


def test_cli_list_says_when_a_request_was_completed_and_whether_after_its_deadline(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A completed request was listed with the days "left" to a deadline long passed
    ("-330 days left"), as an overdue one reads, and with no word of when it was completed,
    which is what shows it was answered in time: `dsr list` and `dsr show` give the Dutch
    date it was completed, and say so where that was after its deadline."""
    seed(shop)
    received = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # due 5 February

    async def completed(email: str, at: dt.datetime) -> str:
        async with open_rt() as runtime:
            shop.faults.down = True
            view = await DsrService(runtime, now=lambda: received).erase(email)
            shop.faults.down = False
            view = await DsrService(runtime, now=lambda: at).retry(view.id)
            assert view.status == "completed"
            return view.id

    # 23:30 UTC on 19 January is 00:30 on 20 January in the Netherlands.
    in_time = run_loop(completed(CANARY_EMAIL, dt.datetime(2026, 1, 19, 23, 30, tzinfo=dt.UTC)))
    late = run_loop(completed(OTHER_EMAIL, dt.datetime(2026, 2, 10, 9, 0, tzinfo=dt.UTC)))
    code, out, _ = cli("list", capsys=capsys)
    assert code == 0 and "days left" not in out, out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "deadline 2026-02-05, completed 2026-01-20" in lines[in_time]
    assert "late" not in lines[in_time]
    assert "deadline 2026-02-05, completed 2026-02-10 late" in lines[late]
    code, out, _ = cli("show", late, capsys=capsys)
    assert code == 0 and "completed 2026-02-10 late" in out and "days left" not in out


async def test_status_counts_an_overdue_request_apart_from_those_due_within_7_days(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One erasure, overdue for two months: `status` says "1 overdue, 0 due within 7 days"
    (it counted the overdue one again as one still due), and prints its deadline's Dutch
    date as `dsr list` does; `--json` keeps `flagged` and adds `due_soon`."""
    from connector.cli import main

    seed(shop)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
    async with open_rt() as rt:
        shop.faults.down = True
        view = await DsrService(rt, now=lambda: long_ago).erase(CANARY_EMAIL)
        assert view.is_open
    assert main(["-c", str(config_path), "status"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "data subject requests" in x)
    assert "1 open, 1 overdue, 0 due within 7 days" in line, line
    assert f"(deadline {view.deadline_date})" in out and view.deadline not in out, out
    assert main(["-c", str(config_path), "status", "--json"]) == 0
    requests = json.loads(capsys.readouterr().out)["requests"]
    assert (requests["overdue"], requests["flagged"], requests["due_soon"]) == (1, 1, 0)
    assert requests["requests"][0]["deadline"] == view.deadline


def test_cli_retry_all_and_the_usage_mistakes_of_dsr_commands(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`retry --all` says what progressed and exits 1 while any stays open; each mistake
    exits 2 saying what is wrong, and a --set without '=' is not echoed (it may be a value)."""
    seed(shop)
    shop.faults.down = True
    assert cli("erase", "--email", CANARY_EMAIL, capsys=capsys)[0] == 1
    code, out, _ = cli("retry", "--all", "--json", capsys=capsys)
    assert code == 1 and json.loads(out) == {"progressed": 0, "open": 1}
    shop.faults.down = False
    code, out, _ = cli("retry", "--all", capsys=capsys)
    assert code == 0 and "1 request progressed; 0 still open" in out
    code, out, _ = cli("list", capsys=capsys)
    assert code == 0 and "completed" in out and CANARY_EMAIL not in out
    mistakes = [
        (("show", "er-20260101-00000000"), "no request 'er-20260101-00000000'"),
        (("retry",), "--all for every open request"),
        (("rectify", "--email", CANARY_EMAIL, "--set", CANARY_NAME), "has no '='"),
        (("verify-receipt", str(tmp_path / "gone.json")), "cannot read"),
        (("erase", "--email", OTHER_EMAIL, "--phone", "12"), "--phone is not a phone"),
    ]
    for argv, said in mistakes:
        code, out, err = cli(*argv, capsys=capsys)
        assert code == 2 and said in err, argv
        assert CANARY_NAME not in out + err
    code, out, _ = cli("show", "er-20260101-00000000", "--json", capsys=capsys)
    answer = json.loads(out)
    assert code == 2 and answer == {
        "error": "usage",
        "message": "no request 'er-20260101-00000000'",
    }


@pytest.mark.parametrize(
    "action",
    [
        ["show"],
        ["retry"],
        ["receipt"],
        ["extend", "--months", "1", "--reason", "busy"],
        ["exempt", "--system", "shop", "--reason", "kept for the books"],
    ],
    ids=lambda action: action[0],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_an_address_given_where_a_request_id_belongs_is_not_repeated(
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    action: list[str],
    as_json: bool,
) -> None:
    """Looking a person's request up by their address (`dsr show jan@...`) is refused, as
    any id no request has: the refusal quoted it back ("no request 'jan@...'") onto stderr,
    the journal, or into the JSON answer a script keeps. Errors carry no e-mail address: one
    that is not of a request id's form is not repeated, and the form is said instead."""
    argv = [action[0], CANARY_EMAIL, *action[1:], *(["--json"] if as_json else [])]
    code, out, err = cli(*argv, capsys=capsys)
    assert code == 2
    assert CANARY_EMAIL not in out + err
    said = json.loads(out)["message"] if as_json else err
    assert "not a request id" in said and "er-20260105-0a1b2c3d" in said


def test_cli_a_refused_action_says_why_on_one_line_of_stderr(
    cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A `dsr` usage error is one line on stderr however long it is, as every other
    command's: broken at the width of a terminal (80 columns where stderr is a journal or
    a file), a script's `grep` or a log line held only part of it."""
    code, out, err = cli("show", "not-an-id", capsys=capsys)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: that is not a request id") and len(line) > 80
    assert "as dsr list shows them" in line


def test_cli_access_says_the_bundle_is_the_only_clear_copy(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """access writes the bundle and tells the operator it is the only clear copy."""
    seed(shop)
    out_dir = tmp_path / "bundle"
    code, out, _ = cli("access", "--email", CANARY_EMAIL, "--out", str(out_dir), capsys=capsys)
    assert code == 0
    assert "only place klantsync writes personal data in clear" in " ".join(out.split())
    assert (out_dir / "data.json").is_file()


def test_cli_access_json_says_where_the_bundle_was_written(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`dsr access --json` says where the bundle was written and that it is the only clear
    copy, as the text does."""
    seed(shop)
    out_dir = tmp_path / "bundle"
    code, out, _ = cli(
        "access", "--email", OTHER_EMAIL, "--out", str(out_dir), "--json", capsys=capsys
    )
    assert code == 0 and (out_dir / "data.json").is_file()
    shown = json.loads(out)
    assert shown["bundle"] == str(out_dir)
    assert "only place klantsync writes personal data in clear" in shown["notice"]


def test_cli_access_claims_no_bundle_where_none_was_written(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A completed access request need not leave a bundle (none is written for someone
    whose erasure completed meanwhile): the CLI then names no bundle, in JSON or text."""
    seed(shop)
    real_access = DsrService.access

    async def access_that_writes_no_bundle(self: DsrService, email: str, out: Path) -> Any:
        view = await real_access(self, email, out)
        shutil.rmtree(out)  # as a run that found the person's erasure completed leaves it
        return view

    monkeypatch.setattr(DsrService, "access", access_that_writes_no_bundle)
    out_dir = tmp_path / "bundle"
    code, out, _ = cli(
        "access", "--email", OTHER_EMAIL, "--out", str(out_dir), "--json", capsys=capsys
    )
    assert code == 0 and "bundle" not in json.loads(out)
    code, out, _ = cli("access", "--email", OTHER_EMAIL, "--out", str(out_dir), capsys=capsys)
    assert code == 0 and "bundle written" not in out


def test_cli_access_claims_no_bundle_an_earlier_request_left_in_the_folder(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An earlier request's bundle is in the folder, and this request completes without
    writing one (the person's erasure completed meanwhile): the data.json there is not
    this run's, so the CLI names no bundle, in JSON or text."""
    seed(shop)
    out_dir = tmp_path / "bundle"
    code, out, _ = cli("access", "--email", CANARY_EMAIL, "--out", str(out_dir), capsys=capsys)
    assert code == 0 and "bundle written" in out
    earlier = (out_dir / "data.json").read_bytes()

    def no_bundle(self: KindRunner, *args: Any) -> list[Path]:
        return []  # as a run that found the person's erasure completed writes none

    monkeypatch.setattr(KindRunner, "_write_bundle", no_bundle)
    code, out, _ = cli(
        "access", "--email", OTHER_EMAIL, "--out", str(out_dir), "--json", capsys=capsys
    )
    assert code == 0 and json.loads(out)["status"] == "completed"
    assert "bundle" not in json.loads(out)
    code, out, _ = cli("access", "--email", OTHER_EMAIL, "--out", str(out_dir), capsys=capsys)
    assert code == 0 and "bundle written" not in out
    assert (out_dir / "data.json").read_bytes() == earlier


def test_key_file_is_sealed_and_private(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    config_path: Path,
) -> None:
    """The signing key lives next to the store, named after it, mode 0600, and is not a
    readable PEM."""
    _made_store(config_path.parent)
    assert cli("public-key", capsys=capsys)[0] == 0
    key = config_path.parent / "state" / "klantsync.db.receipt-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in key.read_bytes()
    with sqlite3.connect(config_path.parent / "state" / "klantsync.db") as db:
        assert db.execute("SELECT COUNT(*) FROM dsr_requests").fetchone()[0] == 0


async def test_a_receipt_signed_with_a_retired_key_after_its_retirement_is_refused(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Whoever took a copy of the signing key `dsr rotate-key` retired could sign new, false
    receipts with it. One that says it was completed after the key's retirement is refused,
    saying why; the receipts the key signed before still verify. Alike with this store's
    keys, with the listing a third party checks receipts with offline (`dsr public-key
    --all`), with the key's bare PEM as it was printed before its retirement, and for a
    key an earlier version retired (no time in its file: the audit trail's keys.rotated)."""
    shop.add_person("before.rotation@example.nl", "Before", "Rotation")
    # From the wall clock: the audit trail's entries are stamped with it.
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = {"now": start}
    service = DsrService(rt, now=lambda: clock["now"])
    first = await service.erase("before.rotation@example.nl")
    genuine = (service.receipt(first.id) or "").encode()
    stolen = service.signer.private_key
    bare = service.public_key_pem().encode()
    clock["now"] = start + dt.timedelta(days=1)
    old_id, _ = service.rotate_receipt_key()
    body = {
        **json.loads(genuine)["receipt"],
        "request_id": "er-20260304-0a1b2c3d",
        "completed_at": (start + dt.timedelta(days=2)).isoformat(),
    }
    forged = canonical(
        {
            "algorithm": "Ed25519",
            "key_id": old_id,
            "receipt": body,
            "signature": base64.b64encode(stolen.sign(canonical(body))).decode(),
        }
    )
    listing = service.public_key_listing().encode()
    for given in (None, listing, bare):
        refused = service.verify_receipt(forged, given)
        retired = (start + dt.timedelta(days=1)).isoformat()
        assert not refused.ok and f"retired at {retired}" in refused.problem
        assert service.verify_receipt(genuine, given).ok
    kept = service.signer.retired_dir / f"{old_id}.pem"
    kept.write_bytes(bare)  # as an earlier version kept it
    assert not DsrService(rt).verify_receipt(forged).ok
    assert DsrService(rt).verify_receipt(genuine).ok


def test_cli_public_key_all_lists_every_key_with_when_it_was_retired(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`dsr public-key --all` lists every key the store signed with, a retired one with the
    moment it was retired, the one in use last; a receipt its retired key signed before
    then verifies offline with that listing (`verify-receipt --public-key`)."""
    seed(shop)
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    request_id = json.loads(out)["id"]
    code, receipt, _ = cli("receipt", request_id, capsys=capsys)
    (tmp_path / "r.json").write_text(receipt)
    assert cli("rotate-key", capsys=capsys)[0] == 0
    code, current, _ = cli("public-key", capsys=capsys)
    code, out, _ = cli("public-key", "--all", "--json", capsys=capsys)
    assert code == 0
    (retired, in_use) = json.loads(out)["public_keys"]
    assert retired["key_id"] == json.loads(receipt)["key_id"] and retired["retired_at"]
    assert in_use["retired_at"] is None and in_use["public_key"] == current
    target = tmp_path / "keys.pem"
    assert cli("public-key", "--all", "--out", str(target), capsys=capsys)[0] == 0
    text = target.read_text()
    assert text.count("BEGIN PUBLIC KEY") == 2 and text.endswith(current)
    assert f"Retired-At: {retired['retired_at']}" in text
    code, out, _ = cli(
        "verify-receipt", str(tmp_path / "r.json"), "--public-key", str(target), capsys=capsys
    )
    assert code == 0 and "valid" in out


async def test_rotating_the_receipt_key_keeps_old_receipts_verifiable(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """After a rotation new receipts use the new key, old ones still verify, and it is audited."""
    shop.add_person("before.rotation@example.nl", "Before", "Rotation")
    shop.add_person("after.rotation@example.nl", "After", "Rotation")
    service = DsrService(rt)
    first = await service.erase("before.rotation@example.nl")
    old_receipt = service.receipt(first.id)
    assert old_receipt is not None
    old_id, new_id = service.rotate_receipt_key()
    assert old_id != new_id
    second = await service.erase("after.rotation@example.nl")
    new_receipt = service.receipt(second.id)
    assert new_receipt is not None
    assert json.loads(new_receipt)["key_id"] == new_id
    assert json.loads(old_receipt)["key_id"] == old_id
    assert service.verify_receipt(old_receipt.encode()).ok
    assert service.verify_receipt(new_receipt.encode()).ok
    tampered = old_receipt.replace('"kind":"erase"', '"kind":"erasE"')
    assert not service.verify_receipt(tampered.encode()).ok
    rotations = [e for e in audit.entries(rt.store) if e.kind == audit.KEY_ROTATED]
    assert [e.data for e in rotations] == [{"key": "receipt-signing", "old": old_id, "new": new_id}]


def test_readmit_takes_someone_erased_off_the_list_and_the_next_sync_sends_them(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    config_path: Path,
) -> None:
    """Erased, then signed up again in the shop of their own accord: kept out until an
    operator readmits them, with a reason in the audit trail; then sent. Refused for an
    address not on the list, without a reason, and while the erasure is still open."""
    seed(shop)
    shop.faults.down = True
    code, out, _ = cli(
        "erase", "--email", CANARY_EMAIL, "--phone", CANARY_PHONE, "--json", capsys=capsys
    )
    assert code == 1  # open: the shop was down
    shop.faults.down = False
    mistakes = [
        (("readmit", "--email", CANARY_EMAIL, "--reason", "signed up again"), "still open"),
        (("readmit", "--email", OTHER_EMAIL, "--reason", "x"), "not on the suppression list"),
        (("readmit", "--email", CANARY_EMAIL, "--reason", "  "), "needs a reason"),
    ]
    for argv, said in mistakes:
        code, _, err = cli(*argv, capsys=capsys)
        assert code == 2 and said in err, argv
    assert cli("retry", "--all", capsys=capsys)[0] == 0
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)  # a new sign-up
    code, out, _ = cli(
        "readmit",
        "--email",
        CANARY_EMAIL,
        "--phone",
        CANARY_PHONE,
        "--reason",
        "signed up again with a new consent",
        "--json",
        capsys=capsys,
    )
    assert code == 0 and len(json.loads(out)["readmitted"]) == 2
    assert CANARY_EMAIL not in out

    async def synced() -> None:
        async with open_runtime(
            config_path,
            transports={
                "shop": httpx.ASGITransport(app=shop.app()),
                "crm": httpx.ASGITransport(app=crm.app()),
            },
        ) as rt:
            (report,) = await rt.engine.sync()
            assert report.suppressed == 0
            (entry,) = [e for e in audit.entries(rt.store) if e.kind == "dsr.readmitted"]
            assert entry.data["reason"] == "signed up again with a new consent"

    run_loop(synced())
    assert crm.holds(CANARY_EMAIL)


async def test_readmit_is_refused_for_a_former_address_an_open_erasure_suppressed(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Erased under their new address, the person's former one is suppressed by the same
    request; while that request is open (the CRM is down), readmitting the former address
    would undo it half-way."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email="nieuw.adres@voorbeeld-canary.nl")
    crm.faults.down = True
    view = await DsrService(rt).erase("nieuw.adres@voorbeeld-canary.nl")
    assert view.is_open
    former = rt.keyring.subject_id(CANARY_EMAIL)
    assert rt.store.suppressed([former]) == {former}
    with pytest.raises(
        DsrUsageError, match=f"erasure of this person \\({view.id}\\) is still open"
    ):
        readmit(rt, CANARY_EMAIL, "signed up again")
    crm.faults.down = False
    assert (await DsrService(rt).retry(view.id)).status == "completed"
    # The erasure covered the former address: the number it read from the shop goes with
    # it; the new address stays suppressed.
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    assert readmit(rt, CANARY_EMAIL, "signed up again").subject_ids == [former, phone]
    new_sid = rt.keyring.subject_id("nieuw.adres@voorbeeld-canary.nl")
    assert rt.store.suppressed([new_sid]) == {new_sid}


async def test_a_phone_given_when_an_open_erasure_is_asked_again_is_suppressed(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Asked by e-mail (the shop down: left open), then again with the phone number: the
    same request goes on, and the number is suppressed too, so a backup holding the person
    under another address and that number stays out."""
    seed(shop)
    shop.faults.down = True
    service = DsrService(rt)
    first = await service.erase(CANARY_EMAIL)
    assert first.is_open
    shop.faults.down = False
    again = await service.erase(CANARY_EMAIL, phone=CANARY_PHONE)
    assert again.id == first.id and again.status == "completed"
    phone = rt.keyring.subject_id(CANARY_PHONE_E164)
    assert rt.store.suppressed([phone]) == {phone}
    (entry,) = [e for e in audit.entries(rt.store) if e.kind == "dsr.asked_again"]
    assert entry.data["subject_ids"] == [phone]
    shop.add_person("ander.adres@voorbeeld.nl", CANARY_NAME, "Klant", CANARY_PHONE)
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1 and not crm.holds("ander.adres@voorbeeld.nl")


async def test_an_erasure_deletes_the_access_bundles_written_for_the_person(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Shopify's customers/data_request, then customers/redact (or a copy asked for, then
    an erasure): the bundles written for them, in the store's folder or an --out, hold their
    data in clear. The erasure deletes them with the rest; another person's stays."""
    await seeded(shop, rt)  # the canary and OTHER_EMAIL
    service = DsrService(rt)
    assert (await service.access(CANARY_EMAIL, source="webhook:shop")).status == "completed"
    assert (await service.access(CANARY_EMAIL, tmp_path / "out")).status == "completed"
    other = await service.access(OTHER_EMAIL)
    erased = await service.erase(CANARY_EMAIL, source="webhook:shop")
    assert erased.status == "completed"
    state_dir = rt.config.store_path.parent
    clear = [
        path
        for folder in (state_dir, tmp_path / "out")
        for path in folder.rglob("*")
        if path.is_file() and CANARY_EMAIL.encode() in path.read_bytes()
    ]
    assert clear == []
    assert (state_dir / "access" / other.id / "data.json").is_file()
    assert rt.store.db.execute("SELECT COUNT(*) FROM bundles").fetchone() == (1,)
    (entry,) = [e for e in audit.entries(rt.store) if e.kind == "dsr.traces_deleted"]
    assert entry.data["rows"]["bundles"] == 2


async def test_the_person_s_access_and_erasure_retried_together_leave_no_bundle_behind(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The person asked for a copy, then to be erased; the CRM was down for both. The
    daemon's retry of open requests ran both at once: the access read the CRM before the
    erasure deleted the contact and wrote its bundle after the erasure's clean-up, and the
    receipt blamed the erasure for a bundle it never tried to delete. The person's requests
    now run one after the other, in the order asked."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    bundle = tmp_path / "bundle"
    access = await service.access(CANARY_EMAIL, bundle)
    erasure = await service.erase(CANARY_EMAIL)
    assert access.is_open and erasure.is_open
    crm.faults.down = False
    assert await service.retry_open() == 2
    done = service.get(erasure.id)
    assert done is not None and done.status == "completed"
    assert not crm.holds(CANARY_EMAIL)
    files = sorted(bundle.glob("*")) if bundle.exists() else []
    left = [p.name for p in files if CANARY_NAME in p.read_text(encoding="utf-8")]
    connector = receipt_of(service, erasure.id)["connector"]
    assert left == [], f"after the completed erasure, {left} hold the person in clear"
    assert "access bundles written for the person" in connector["deleted"]
    assert "could not delete" not in connector["kept"]


async def test_an_erasure_waits_for_a_system_taken_out_of_the_config_to_be_exempted(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> None:
    """crm2 was down when the erasure ran; the operator then took it out of the config. It
    may still hold the person: the request stays open, saying why, until crm2 is configured
    again or its part exempted with the reason, which the receipt then names."""
    crm2 = HubSpotSandbox(rate_limit=None)
    second = (
        f'\n[systems.crm2]\nadapter = "hubspot"\nbase_url = "https://crm2.test"\n'
        f'mapping = "{REPO_MAPPINGS / "hubspot.toml"}"\n'
        'credentials = { token = "env:T_HS_TOKEN" }\n'
    )

    def runtime(path: Path) -> Any:
        apps = {"shop": shop.app(), "crm": crm.app(), "crm2": crm2.app()}
        time = VirtualTime()
        return open_runtime(
            path,
            transports={name: httpx.ASGITransport(app=app) for name, app in apps.items()},
            sleep=time.sleep,
            clock=time.clock,
        )

    seed(shop)
    path = write_config(tmp_path, crm_extra=second)
    crm2.faults.down = True
    async with runtime(path) as rt:
        view = await DsrService(rt).erase(CANARY_EMAIL)
        assert view.is_open and view.system("crm2").status == "failed"
    write_config(tmp_path)  # crm2 taken out of the config
    async with runtime(path) as rt:
        service = DsrService(rt)
        view = await service.retry(view.id)
        assert view.is_open and view.system("crm2").status == "failed"
        assert view.system("crm2").detail == NO_LONGER_CONFIGURED
        view = service.exempt(view.id, "crm2", "switched off for good on 2026-11-01")
        assert view.status == "completed"
        receipt = receipt_of(service, view.id)
    named = {s["system"]: (s["adapter"], s["status"]) for s in receipt["systems"]}
    assert named["crm2"] == ("no longer configured", "exempt")


async def test_a_correction_waits_for_a_recipient_taken_out_of_the_config_to_be_exempted(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory, config_path: Path
) -> None:
    """Art. 19: a correction is passed on to each recipient the data was disclosed to. The
    CRM, taken out of the config, still holds the old city: the correction stays open for
    it, saying why, as an erasure does, until it is configured again or its part exempted,
    which the receipt then names. It used to complete with a receipt of the shop alone."""
    async with open_rt() as rt:
        await seeded(shop, rt)
    without_crm(config_path)
    async with open_rt() as rt:
        service = DsrService(rt)
        view = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
        assert view.is_open and view.system("shop").status == "done"
        assert view.system("crm").status == "pending"
        assert view.system("crm").detail == NO_LONGER_CONFIGURED
        view = service.exempt(view.id, "crm", "switched off for good; its data goes next week")
        assert view.status == "completed"
        receipt = receipt_of(service, view.id)
    named = {s["system"]: (s["adapter"], s["status"]) for s in receipt["systems"]}
    assert named["crm"] == ("no longer configured", "exempt")
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["city"] == "Utrecht"  # not asked


async def test_a_correction_reaches_a_recipient_configured_again(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory, config_path: Path
) -> None:
    """The CRM taken out of the config by mistake and put back: the correction left open for
    it reaches it on the next retry."""
    async with open_rt() as rt:
        await seeded(shop, rt)
    full = config_path.read_text()
    without_crm(config_path)
    async with open_rt() as rt:
        view = await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
        assert view.is_open
    config_path.write_text(full)
    async with open_rt() as rt:
        view = await DsrService(rt).retry(view.id)
    assert view.status == "completed" and view.system("crm").status == "done"
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["city"] == "Zeist"


async def test_an_erased_person_stays_out_when_the_source_mapping_keeps_capitals(
    tmp_path: Path, shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory
) -> None:
    """A custom mapping that only trims the e-mail: "Jan.Jansen@Example.NL" was a subject
    of its own, not the one the erasure suppressed, and was sent again when they signed up
    again. Subjects are known by the normalised address, whatever the mapping does."""
    text = (REPO_MAPPINGS / "woocommerce.toml").read_text()
    old = '[fields.email]\npath = "email"\ntransform = ["trim", "lower"]'
    assert old in text
    mapping = tmp_path / "woocommerce.toml"
    mapping.write_text(text.replace(old, '[fields.email]\npath = "email"\ntransform = ["trim"]'))
    shop.add_person("Jan.Jansen@Example.NL", "Jan", "Jansen")
    async with open_rt(write_config(tmp_path, shop_mapping=mapping)) as rt:
        (first,) = await rt.engine.sync()
        assert first.destinations["crm"].created == 1
        assert (await DsrService(rt).erase("Jan.Jansen@Example.NL")).status == "completed"
        shop.add_person("Jan.Jansen@Example.NL", "Jan", "Jansen")  # signed up again
        (again,) = await rt.engine.sync(full=True)
    assert again.suppressed == 1 and again.destinations["crm"].queued == 0
    assert not crm.holds("jan.jansen@example.nl")


async def test_an_erasure_the_shop_must_partly_keep_is_exempted_there_and_completes(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop's part stays open (its owner cancelled it: orders are kept for the tax
    office); the operator exempts it with the reason. It is asked nothing more, the request
    completes, and the signed receipt names the shop as exempt with the reason (redacted)."""
    await seeded(shop, rt)
    calls: list[str] = []

    async def cancelled_by_the_owner(subject: Subject) -> ErasureResult:
        calls.append("erase")
        return ErasureResult(
            found=True, mode="async_hard_delete", reversible=False, endpoint="POST q", pending=True
        )

    rt.systems["shop"].adapter.erase = cancelled_by_the_owner
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.system("shop").status == "pending_verification"
    assert view.system("crm").status == "verified_absent" and view.is_open
    with pytest.raises(DsrUsageError, match="reason"):
        service.exempt(view.id, "shop", "   ")
    with pytest.raises(DsrUsageError, match="verified_absent"):
        service.exempt(view.id, "crm", "no reason to")
    with pytest.raises(DsrUsageError, match="no system of that name"):
        service.exempt(view.id, "nope", "x")
    reason = f"orders kept 7 years for the tax office (AWR 52), asked by {CANARY_EMAIL}"
    view = service.exempt(view.id, "shop", reason)
    assert view.status == "completed"
    assert view.system("shop").status == "exempt"
    await service.retry_open()
    assert calls == ["erase"]  # not asked again
    receipt = json.loads(service.receipt(view.id) or "")
    (shop_part,) = [s for s in receipt["receipt"]["systems"] if s["system"] == "shop"]
    assert shop_part["status"] == "exempt"
    assert shop_part["detail"] == (
        "exempt: orders kept 7 years for the tax office (AWR 52), asked by <email>"
    )
    assert service.verify_receipt((service.receipt(view.id) or "").encode()).ok
    entries = [e for e in audit.entries(rt.store) if e.kind == "dsr.exempted"]
    assert [e.data["system"] for e in entries] == ["shop"]
    assert CANARY_EMAIL not in json.dumps([e.data for e in entries])
    with pytest.raises(DsrUsageError, match="completed"):
        service.exempt(view.id, "crm", "too late")


async def test_an_exemption_made_while_a_retry_talks_to_the_system_stands(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The operator exempts the shop (from the CLI, beside the daemon) while the daemon's
    retry is waiting for the shop's answer: the retry's outcome does not undo it."""
    await seeded(shop, rt)
    shop.faults.down = True
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.system("shop").status == "failed"
    shop.faults.down = False
    adapter = rt.systems["shop"].adapter
    real = adapter.erase

    async def meanwhile(subject: Subject) -> ErasureResult:
        service.exempt(view.id, "shop", "kept for a legal claim")
        return await real(subject)

    adapter.erase = meanwhile
    view = await service.retry(view.id)
    assert view.system("shop").status == "exempt" and view.status == "completed"
    # The exemption completed it; the retry, finishing after, left it so: one receipt.
    completed = [e for e in audit.entries(rt.store) if e.kind == "dsr.completed"]
    assert len(completed) == 1


async def test_a_retry_under_way_erases_nothing_in_a_system_exempted_meanwhile(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The operator exempts the shop (its records are needed for a legal claim, Art.
    17(3)(e)) from the CLI while the daemon's retry reads the CRM for its snapshot. The
    retry had fixed the systems it would erase before it read; it now reads the part's
    status again just before each erasure call, and the shop's customer stays."""
    await seeded(shop, rt)
    shop.faults.down = True
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.system("shop").status == "failed" and view.system("crm").status == "failed"
    shop.faults.down = False
    crm.faults.down = False
    adapter: Any = rt.systems["crm"].adapter
    real_find = adapter.find_records
    exempted: list[str] = []

    async def find_while_the_operator_exempts_the_shop(
        subject: Subject, *, orders: bool = False
    ) -> Any:
        if not exempted:
            service.exempt(view.id, "shop", "records needed for a pending legal claim")
            exempted.append("shop")
        return await real_find(subject, orders=orders)

    adapter.find_records = find_while_the_operator_exempts_the_shop
    view = await service.retry(view.id)
    assert exempted == ["shop"]
    assert view.system("shop").status == "exempt"
    assert shop.holds(CANARY_EMAIL), "the exempted shop's customer was deleted all the same"
    assert view.status == "completed" and not crm.holds(CANARY_EMAIL)


async def test_an_erasure_retry_asks_a_system_exempted_from_it_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop's part is exempted while the CRM is still down; the next retry, for the
    CRM, does not ask the shop for the person's current address (README: "The system is
    asked nothing more")."""
    await seeded(shop, rt)
    shop.faults.down = True
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.is_open
    service.exempt(view.id, "shop", "records needed for a pending legal claim")
    shop.faults.down = False
    crm.faults.down = False
    shop.log.clear()
    view = await service.retry(view.id)
    assert view.system("shop").status == "exempt" and view.status == "completed"
    asked = [f"{e.method} {e.path}" for e in shop.log.entries]
    assert asked == [], f"the exempted shop was asked: {asked}"


async def test_a_later_erasure_holds_a_part_an_earlier_one_exempted_until_the_operator_decides(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The person's first erasure exempted the CRM (records needed for a legal claim). Their
    request that comes later (Shopify's delayed customers/redact, a second e-mail) erases
    the shop as before, but neither asks nor erases the CRM on its own: that part stays
    pending, flagged with the request that exempted it and why (redacted, as it was
    stored), through every retry, until the operator exempts it again."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    first = await service.erase(CANARY_EMAIL)
    reason = f"records needed for a pending legal claim (Art. 17(3)(e)); ask {CANARY_EMAIL}"
    assert service.exempt(first.id, "crm", reason).status == "completed"
    crm.faults.down = False
    assert crm.holds(CANARY_EMAIL)
    crm.log.clear()
    second = await service.erase(CANARY_EMAIL)
    assert second.id != first.id and second.is_open
    assert second.system("shop").status in ("not_held", "verified_absent")
    held = second.system("crm")
    assert held.status == "pending" and held.detail is not None
    assert first.id in held.detail and "pending legal claim" in held.detail
    assert CANARY_EMAIL not in held.detail and "<email>" in held.detail
    (flagged,) = summary(rt.store)["requests"]
    assert flagged["waiting_on"] == ["crm"] and flagged["on_hold"] == {"crm": held.detail}
    again = await service.retry(second.id)
    assert again.system("crm").status == "pending" and again.is_open
    asked = [f"{e.method} {e.path}" for e in crm.log.entries]
    assert asked == [], f"the CRM was asked: {asked}"
    assert crm.holds(CANARY_EMAIL)
    done = service.exempt(second.id, "crm", "the claim is still pending")
    assert done.status == "completed" and done.system("crm").status == "exempt"
    assert crm.holds(CANARY_EMAIL)


def test_cli_release_lets_a_later_erasure_reach_a_part_on_hold(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    config_path: Path,
) -> None:
    """`dsr show` and `status` say why a part is on hold; `dsr release ID --system S` lets
    the erasure reach it (the claim is settled), and the next retry erases the person there.
    A part not on hold is not released (exit 2)."""
    from connector.cli import main

    seed(shop)
    crm.add_person(CANARY_EMAIL, CANARY_NAME)
    crm.faults.down = True
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    first = json.loads(out)["id"]
    code, _, _ = cli("exempt", first, "--system", "crm", "--reason", "legal claim", capsys=capsys)
    assert code == 0
    crm.faults.down = False
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 1
    second = json.loads(out)["id"]
    code, out, _ = cli("show", second, capsys=capsys)
    assert f"crm: pending (0 attempts): on hold: {first} exempted it (legal claim)" in out
    assert main(["-c", str(config_path), "status"]) == 0
    assert f"crm: on hold: {first} exempted it (legal claim)" in capsys.readouterr().out
    code, _, err = cli("release", second, "--system", "shop", capsys=capsys)
    assert code == 2 and "not on hold" in err
    code, out, _ = cli("release", second, "--system", "crm", capsys=capsys)
    assert code == 0 and "crm: pending (0 attempts)" in out and "on hold" not in out
    assert crm.holds(CANARY_EMAIL)
    code, out, _ = cli("retry", second, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["systems"]["crm"]["status"] == "verified_absent"
    assert not crm.holds(CANARY_EMAIL)


async def test_a_correction_retry_asks_a_source_exempted_from_it_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A corrected phone without a country code, with both systems down; the shop's part
    is exempted. The retry neither looks in the shop for the person's other addresses nor
    for their country: the CRM's number is read in the country the CRM holds."""
    await seeded(shop, rt)
    shop.faults.down = True
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"phone": "06 87654321"})
    assert view.system("shop").status == "failed" and view.system("crm").status == "failed"
    service.exempt(view.id, "shop", "the shop is being closed down")
    shop.faults.down = False
    crm.faults.down = False
    shop.log.clear()
    view = await service.retry(view.id)
    assert view.status == "completed", view
    asked = [f"{e.method} {e.path}" for e in shop.log.entries]
    assert asked == [], f"the exempted shop was asked: {asked}"
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["phone"] == "+31687654321"


async def test_a_correction_under_way_writes_nothing_to_a_system_exempted_meanwhile(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CRM's part of a correction is exempted while the retry reads the CRM's record:
    the correction is not written there (the part's status is read again before the
    write), and its status stays the exemption's."""
    await seeded(shop, rt)
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"phone": "+31611112222"})
    assert view.system("crm").status == "failed"
    crm.faults.down = False
    adapter: Any = rt.systems["crm"].adapter
    real_find = adapter.find_records
    exempted: list[str] = []

    async def find_while_the_operator_exempts_the_crm(
        subject: Subject, *, orders: bool = False
    ) -> Any:
        if not exempted:
            service.exempt(view.id, "crm", "the CRM's record is evidence in a dispute")
            exempted.append("crm")
        return await real_find(subject, orders=orders)

    adapter.find_records = find_while_the_operator_exempts_the_crm
    crm.log.clear()
    view = await service.retry(view.id)
    assert exempted == ["crm"]
    assert view.system("crm").status == "exempt"
    writes = [e for e in crm.log.entries if e.method != "GET" and "read" not in e.path]
    assert writes == [], f"the exempted CRM was written: {writes}"
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"].get("phone") != "+31611112222"


async def test_an_access_request_reads_nothing_of_a_system_exempted_from_it(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The shop is exempted (down, its records kept for the tax office). The next run
    writes the bundle saying the shop was not consulted, and asks the shop nothing: not
    the person's record, their orders or the orders' notes, nor their current address."""
    await seeded(shop, rt)
    shop.faults.down = True
    service = DsrService(rt)
    view = await service.access(CANARY_EMAIL, tmp_path / "bundle")
    assert view.is_open and view.system("shop").status == "failed"
    service.exempt(view.id, "shop", "orders kept for the tax office")
    shop.faults.down = False
    shop.log.clear()
    view = await service.retry(view.id)
    assert view.status == "completed"
    report = (tmp_path / "bundle" / "report.en.md").read_text()
    assert "was not consulted for this request" in report
    asked = [f"{e.method} {e.path}" for e in shop.log.entries]
    assert asked == [], f"the exempted shop was asked: {asked}"


async def test_an_access_request_leaves_an_exempted_system_out(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A CRM down for good is exempted from an access request: the bundle is written from
    the other systems and says which one was left out."""
    await seeded(shop, rt)
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.access(CANARY_EMAIL, out_dir=tmp_path / "bundle")
    assert view.is_open and view.system("crm").status == "failed"
    view = service.exempt(view.id, "crm", "the CRM was switched off")
    assert view.is_open  # the bundle is written by the next run
    view = await service.retry(view.id)
    assert view.status == "completed", view
    (data,) = (tmp_path / "bundle").rglob("data.json")
    document = json.loads(data.read_text())
    assert document["connector"]["exempt_systems"] == ["crm"]
    assert "crm" not in document.get("systems", {})


async def test_an_erasure_leaves_no_payload_of_the_person_in_the_engine_s_memory(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Payloads just queued are kept in clear for their delivery; a delivery stopped by a
    fatal answer (a 401: a token rotated) left them there, and the person's erasure, which
    deleted their outbox rows, did not reach that copy: their e-mail and fields stayed in
    the daemon's memory until newer payloads pushed them out."""
    shop.seed_synthetic(300, seed=3)
    seed(shop)
    crm.faults.fail_next, crm.faults.fail_status = 1, 401
    (report,) = await rt.engine.sync()
    assert report.failed
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    held = [e for _, _, e in rt.engine._fresh.values() if e.get("email") == CANARY_EMAIL]
    assert held == []
    # Nor the number read for them, kept to read each number once.
    from connector.transforms import _e164_by_parser

    assert _e164_by_parser.cache_info().currsize == 0


async def test_retries_while_a_system_is_down_add_no_manifest_entry(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Each retry of an erasure the CRM was down for appended a `dsr.manifest` entry for a
    snapshot that was never taken (the daemon retries every 15 minutes: 96 a day, kept for
    years); each failed attempt has its own entry already."""
    await seeded(shop, rt)
    crm.faults.down = True
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.is_open

    def entries(kind: str) -> int:
        return sum(1 for e in audit.entries(rt.store) if e.kind == kind)

    first = entries("dsr.manifest")
    for _ in range(5):
        await service.retry(view.id)
    assert entries("dsr.manifest") == first
    crm.faults.down = False
    assert (await service.retry(view.id)).status == "completed"
    assert entries("dsr.manifest") == first + 1  # the CRM's snapshot, once taken


async def test_an_erasure_of_someone_whose_orders_are_kept_by_law_completes(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, tmp_path: Path, env: dict[str, str]
) -> None:
    """anonymise_orders = false is how a shop keeps its orders for tax law. The account went,
    and the check that nothing is left found the kept orders: "still present after erasure",
    a dsr.alert, on every retry, past the deadline."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(path) as rt:
        shop_id = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
        order_id = shop.add_order(shop_id)
        (report,) = await rt.engine.sync()
        assert not report.failed
        view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed" and not shop.holds(CANARY_EMAIL)
    assert view.system("shop").status == "verified_absent"
    order = shop.order(order_id)
    assert order is not None and order["billing"]["email"] == CANARY_EMAIL


async def test_a_corrected_name_is_corrected_on_the_shop_s_billing_address_too(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """WooCommerce keeps the name on the account and on the billing address, which invoices,
    order e-mails and the next checkout use; a correction wrote the account's alone."""
    shop.add_person(CANARY_EMAIL, "Zwanete", "Klant", CANARY_PHONE)
    (report,) = await rt.engine.sync()
    assert not report.failed
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"first_name": CANARY_NAME})
    assert view.status == "completed"
    record = shop.record_for(CANARY_EMAIL)
    assert record is not None
    assert record["first_name"] == record["billing"]["first_name"] == CANARY_NAME
    assert record["billing"]["last_name"] == "Klant"


async def test_a_source_purge_of_more_customers_than_a_statement_may_carry_forgets_them(
    rt: Runtime, tmp_path: Path
) -> None:
    """``shop/redact`` for a shop whose customers outnumber SQLite's variables per statement
    (32,766 in its own builds; lowered here so the test stays small): the purge forgets
    them and deletes their access bundles, instead of failing on "too many SQL variables"
    (and, in the daemon, blocking every later job behind its retries)."""
    from connector.adapter import WebhookEvent
    from connector.retention import record_bundle

    rt.store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    ids = [f"{n:032x}" for n in range(1_500)]
    with rt.store.transaction() as db:
        numbers = rt.store.subject_numbers(ids, create=True)
        db.executemany(
            "INSERT INTO identities(system, subject_no, external_id) VALUES ('shop', ?, ?)",
            [(number, str(number)) for number in numbers.values()],
        )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "data.json").write_text("{}")
    record_bundle(rt.store, rt.keyring, bundle, ["data.json"], subject_ids=[ids[-1]])
    await DsrService(rt).handle_event("shop", WebhookEvent(kind="purge_all", delivery_id="r-1"))
    (left,) = rt.store.db.execute("SELECT COUNT(*) FROM identities WHERE system='shop'").fetchone()
    assert left == 0
    assert not (bundle / "data.json").exists()
    assert rt.store.db.execute("SELECT COUNT(*) FROM bundles").fetchone() == (0,)


async def test_a_source_purge_finishes_the_shop_s_queued_syncs_and_keeps_its_customers_requests(
    rt: Runtime,
) -> None:
    """``shop/redact``: the shop's webhook changes and deletions and its resyncs, queued and
    not run yet, hold its customers' addresses, phones and ids (sealed) and would run
    against a shop that is gone. The purge finishes them unrun and drops what they hold. A
    customer's own request queued from that shop (``customers/redact``, ``customers/
    data_request``) is still owed to them and stays; so do other systems' jobs and
    requests asked for through the admin API."""
    from connector import jobs
    from connector.adapter import WebhookEvent

    def webhook(event: str, system: str = "shop") -> int:
        params = {
            "system": system,
            "event": event,
            "delivery_id": f"{system}-{event}",
            "external_id": "41",
            "email": CANARY_EMAIL,
            "phone": "06 12345678",
        }
        return jobs.enqueue(rt.store, rt.keyring, "webhook", params)

    change, deletion = webhook("changed"), webhook("deleted")
    resync = jobs.enqueue(rt.store, rt.keyring, "resync", {"system": "shop", "email": CANARY_EMAIL})
    full = jobs.enqueue(rt.store, rt.keyring, "resync", {"system": "shop", "full": True})
    erase, access = webhook("erase"), webhook("access")
    elsewhere = webhook("changed", system="crm")
    admin = jobs.enqueue(rt.store, rt.keyring, "dsr", {"kind": "access", "email": CANARY_EMAIL})

    await DsrService(rt).handle_event("shop", WebhookEvent(kind="purge_all", delivery_id="r-1"))

    def state(job_id: int) -> tuple[str, bool]:
        status, params = rt.store.db.execute(
            "SELECT status, params IS NOT NULL FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        return status, bool(params)

    assert {state(job) for job in (change, deletion, resync, full)} == {("done", False)}
    assert {state(job) for job in (erase, access, elsewhere, admin)} == {("queued", True)}
    skipped = jobs.get(rt.store, change)
    assert skipped is not None and skipped.result == {"skipped": "the source was purged"}
    (entry,) = rt.store.db.execute(
        "SELECT data FROM audit WHERE kind='dsr.purge_source'"
    ).fetchone()
    assert json.loads(entry)["jobs"] == 4


async def test_a_purged_shop_that_refuses_klantsync_is_exempt_from_its_customers_later_requests(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop uninstalled the app (its token revoked), then sent ``shop/redact``; its
    ``customers/data_request`` and ``customers/redact`` still waiting are carried out in the
    other systems. The shop itself refused every call, and its part failed at every retry
    until an operator exempted it. Once the shop is purged, a part it refuses is exempt,
    saying why (not "not held": nobody looked); a refusal with no purge still fails."""
    from connector.adapter import WebhookEvent

    await seeded(shop, rt)
    shop.faults.fail_status, shop.faults.fail_next = 401, 10**6
    service = DsrService(rt)
    access = await service.access(CANARY_EMAIL, source="webhook:shop")
    assert access.failed_systems == ["shop"]  # a credential to fix, until the purge says why

    await service.handle_event("shop", WebhookEvent(kind="purge_all", delivery_id="r-1"))
    access = await service.retry(access.id)
    bundle = rt.config.store_path.parent / "access" / access.id / "data.json"
    (listed,) = json.loads(bundle.read_text())["exempt_systems"]
    assert listed["system"] == "shop" and "shop/redact" in listed["reason"]
    erased = await service.erase(CANARY_EMAIL, source="webhook:shop")

    for view in (access, erased):
        assert view.status == "completed"
        parts = {s.system: s for s in view.systems}
        assert parts["shop"].status == "exempt"
        assert "shop/redact" in (parts["shop"].detail or "")
    assert {s.system: s.status for s in erased.systems}["crm"] == "verified_absent"


async def test_an_erasure_leaves_no_queued_sync_holding_the_person_s_address(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Queued webhook changes and resyncs of one address hold the person's e-mail (sealed)
    until the daemon runs them, for as long as it is stopped. An erasure finishes them
    unrun and drops what they hold; a queued request of the person's own, and other
    people's jobs, stay."""
    from connector import jobs

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    await rt.engine.sync()

    def webhook(event: str, email: str) -> int:
        params = {"system": "shop", "event": event, "delivery_id": event + email, "email": email}
        return jobs.enqueue(rt.store, rt.keyring, "webhook", params)

    change = webhook("changed", CANARY_EMAIL.upper())
    request = webhook("erase", CANARY_EMAIL)
    other = webhook("changed", "iemand.anders@voorbeeld.nl")
    resync = jobs.enqueue(rt.store, rt.keyring, "resync", {"system": "shop", "email": CANARY_EMAIL})
    await DsrService(rt).erase(CANARY_EMAIL)

    def state(job_id: int) -> tuple[str, bool]:
        status, params = rt.store.db.execute(
            "SELECT status, params IS NOT NULL FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        return status, bool(params)

    assert state(change) == state(resync) == ("done", False)
    assert state(request) == state(other) == ("queued", True)


async def test_an_erasure_finishes_a_queued_change_of_the_person_s_shop_record_under_a_new_address(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """The customer changed their address in the shop (its webhook queued while the daemon
    is stopped), then asked erasure under the address the systems know: the queued change
    holds the new address and phone, and is known by the shop record's id. It is finished
    unrun too."""
    from connector import jobs

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321")
    await rt.engine.sync()
    record_id = shop.store.by_email(CANARY_EMAIL)
    moved = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=moved)
    params = {
        "system": "shop",
        "event": "changed",
        "delivery_id": "d-1",
        "external_id": str(record_id),
        "email": moved,
        "phone": "06 87654321",
    }
    job = jobs.enqueue(rt.store, rt.keyring, "webhook", params)
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    status, held = rt.store.db.execute(
        "SELECT status, params IS NOT NULL FROM jobs WHERE id=?", (job,)
    ).fetchone()
    assert (status, bool(held)) == ("done", False)


def test_cli_shows_the_hour_of_a_deadline_that_ends_before_its_day_does(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    cli: Callable[..., tuple[int, str, str]],
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A month's deadline ends with its Dutch day, but Shopify's 30 days end at the moment
    it asked (and a request an earlier version opened, at the hour it came). `dsr list`,
    `dsr show` and `status` printed the date alone, read as due by the end of that day,
    while the request was listed overdue from that hour: they print its Dutch time too."""
    from connector.cli import main

    seed(shop)
    received = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)  # 10:00 in the Netherlands

    async def opened() -> tuple[str, str]:
        async with open_rt() as runtime:
            shop.faults.down = True
            shopify = DsrService(runtime, now=lambda: received, due_within=dt.timedelta(days=30))
            thirty = await shopify.erase(CANARY_EMAIL)
            month = await DsrService(runtime, now=lambda: received).access(OTHER_EMAIL)
            shop.faults.down = False
            assert thirty.deadline == "2026-02-14T09:00:00+00:00"
            assert month.deadline == "2026-02-15T22:59:59+00:00"
            return thirty.id, month.id

    thirty_id, month_id = run_loop(opened())
    code, out, _ = cli("list", capsys=capsys)
    assert code == 0
    (thirty_line,) = [line for line in out.splitlines() if thirty_id in line]
    (month_line,) = [line for line in out.splitlines() if month_id in line]
    assert "deadline 2026-02-14 10:00 (" in thirty_line, out
    assert "deadline 2026-02-15 (" in month_line, out
    code, out, _ = cli("show", thirty_id, capsys=capsys)
    assert code == 0 and "deadline 2026-02-14 10:00 (" in out, out
    assert main(["-c", str(config_path), "status"]) in (0, 1)
    out = capsys.readouterr().out
    assert "(deadline 2026-02-14 10:00)" in out and "(deadline 2026-02-15)" in out, out
