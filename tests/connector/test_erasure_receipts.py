"""Erasure receipts say what happened.

Checked before signed, every system the person was sent to named, nothing claimed deleted
that is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.adapter import ErasureResult, Subject
from connector.demo import REPO_MAPPINGS
from connector.dsr import NO_LONGER_CONFIGURED, DsrService
from connector.runtime import Runtime, open_runtime
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    RuntimeFactory,
    VirtualTime,
    write_config,
)


class Crash(Exception):
    """Simulated process death."""


def receipt_of(service: DsrService, request_id: str) -> dict[str, Any]:
    text = service.receipt(request_id)
    assert text is not None
    body: dict[str, Any] = json.loads(text)["receipt"]
    return body


async def _seeded(shop: WooCommerceSandbox, rt: Runtime) -> str:
    shop_id = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    shop.add_order(shop_id)
    (report,) = await rt.engine.sync()
    assert not report.failed
    return shop_id


async def test_a_crash_between_erase_and_its_verification_never_yields_an_unverified_receipt(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Any
) -> None:
    """The process dies after the CRM answered the erasure and before the verifying read.
    The part was recorded ``done`` (a final status) before the verification, so the retry
    never verifies it and signs a receipt for a contact the CRM still holds."""
    async with open_rt() as rt:
        await _seeded(shop, rt)
        adapter = rt.systems["crm"].adapter
        erased = False

        async def accepted_not_yet_purged(subject: Subject) -> ErasureResult:
            # The vendor accepted the request (204) and has not purged yet.
            nonlocal erased
            erased = True
            return ErasureResult(
                found=True, mode="hard_delete", reversible=False, endpoint="POST gdpr-delete"
            )

        original_find = adapter.find_records

        async def find(subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
            if erased:
                raise Crash("killed before the verifying read")
            found: list[dict[str, Any]] = await original_find(subject, orders=orders)
            return found

        adapter.erase = accepted_not_yet_purged
        adapter.find_records = find
        with pytest.raises(Crash):
            await DsrService(rt).erase(CANARY_EMAIL)
        (view,) = DsrService(rt).list(open_only=True)
    assert crm.holds(CANARY_EMAIL)
    async with open_rt() as rt:  # restart: same store, the real adapter
        service = DsrService(rt)
        resumed = await service.retry(view.id)
        crm_entry = next(s for s in resumed.systems if s.system == "crm")
        assert resumed.status != "completed" or crm_entry.status == "verified_absent", (
            f"request {resumed.status}, crm part {crm_entry.status!r} though the CRM still "
            f"holds the person: {crm.holds(CANARY_EMAIL)}"
        )


def _two_crm_config(directory: Path, *, with_second: bool) -> Path:
    """The shared test config, plus (or without) a second HubSpot portal ``crm2``."""
    path = write_config(directory)
    text = path.read_text()
    if with_second:
        text = text.replace('destinations = ["crm"]', 'destinations = ["crm", "crm2"]')
        text += f"""
[systems.crm2]
adapter = "hubspot"
base_url = "https://crm2.test"
mapping = "{REPO_MAPPINGS / "hubspot.toml"}"
credentials = {{ token = "env:T_HS_TOKEN" }}
"""
    path.write_text(text)
    return path


async def test_a_system_taken_out_of_the_config_before_the_erasure_is_not_left_off_its_receipt(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> None:
    """The person was synced to a second CRM portal, which was then taken out of the config
    (the agency stopped syncing to it; the portal and the contact stay). Their erasure
    completes with a receipt naming only the shop and the first CRM, deletes the identity
    rows that showed the person was sent to ``crm2``, and the contact stays there. README:
    a system taken out of the config "may still hold the person, and a receipt that left it
    out would look whole" (connector/dsr.py _note_unconfigured)."""
    crm2 = HubSpotSandbox(rate_limit=None)

    def runtime(path: Path) -> Any:
        transports = {
            "shop": httpx.ASGITransport(app=shop.app()),
            "crm": httpx.ASGITransport(app=crm.app()),
            "crm2": httpx.ASGITransport(app=crm2.app()),
        }
        time = VirtualTime()
        return open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock)

    async with runtime(_two_crm_config(tmp_path, with_second=True)) as rt:
        await _seeded(shop, rt)
    assert crm2.holds(CANARY_EMAIL)
    async with runtime(_two_crm_config(tmp_path, with_second=False)) as rt:
        service = DsrService(rt)
        # The store knows the person was sent to crm2 (its identity row is still there).
        assert "crm2" in service.identities(rt.keyring.subject_id(CANARY_EMAIL))
        view = await service.erase(CANARY_EMAIL)
        named = sorted(s.system for s in view.systems)
        assert view.status != "completed" or "crm2" in named, (
            f"erasure {view.status} with a receipt naming only {named}; crm2 still holds the "
            f"person: {crm2.holds(CANARY_EMAIL)}"
        )


async def test_a_receipt_does_not_say_the_access_bundle_was_deleted_when_it_was_not(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person asked for access (a bundle in clear in --out), then for erasure. The bundle
    cannot be deleted at the erasure (its folder is read-only, on a share gone read-only):
    KindRunner._erase logs it and leaves it to the sweep weeks later, yet the signed receipt
    lists "access bundles written for the person" under what the connector deleted, and says
    it keeps only the suppression entry and keyed-hash audit entries."""
    await _seeded(shop, rt)
    out = tmp_path / "bundle"
    service = DsrService(rt)
    access = await service.access(CANARY_EMAIL, out)
    assert access.status == "completed"
    assert (out / "data.json").exists()

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("connector.retention_bundles._delete_bundle", refused)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    connector_part = receipt_of(service, view.id)["connector"]
    still_there = (out / "data.json").exists()
    assert still_there  # the refusal reached the deletion: else the test proves nothing
    claims_deleted = "access bundles written for the person" in connector_part["deleted"]
    assert not (still_there and claims_deleted), (
        f"bundle still on disk ({still_there}) but the receipt says deleted: "
        f"{connector_part['deleted']}; kept: {connector_part['kept']!r}"
    )


async def test_an_erasure_receipt_names_the_keyed_record_ids_it_keeps(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Each run of an erasure keeps the system ids it erases as keyed hashes for
    `webhook_ids_days` (to know HubSpot's echo). The receipt, which tells the person what
    klantsync kept of them, named only the suppression and audit entries."""
    await _seeded(shop, rt)
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    (kept_rows,) = rt.store.db.execute(
        "SELECT COUNT(*) FROM erased_records WHERE request_id=?", (view.id,)
    ).fetchone()
    assert kept_rows == 2  # the shop customer and the CRM contact, keyed
    kept = receipt_of(service, view.id)["connector"]["kept"]
    days = rt.config.retention.webhook_ids_days
    assert f"ids of the 2 system records erased (no id in clear), for {days} days" in kept
    assert kept.startswith("suppression entry") and kept.endswith(
        "audit entries (keyed hash ids only)"
    )


async def test_a_crm_s_receipt_counts_the_support_tickets_gdpr_delete_leaves(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The person's support tickets are in their access copy and stay in HubSpot after
    gdpr-delete, associated with nobody; the signed receipt counted the deal named after
    them and said nothing of the tickets. It counts both, by number, never by content."""
    await _seeded(shop, rt)
    contact = crm.store.live(CANARY_EMAIL, "email")
    assert contact is not None
    crm.add_associated(str(contact.id), "deals", dealname=f"{CANARY_NAME} - keuken")
    ticket = crm.add_associated(str(contact.id), "tickets", subject="Levering te laat")
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "crm")
    assert entry["status"] == "verified_absent", (entry["status"], entry["detail"])
    assert entry["note"].endswith(
        "left in HubSpot, associated with the contact (the business's records, which "
        "gdpr-delete leaves): 1 deal, 1 ticket"
    ), entry["note"]
    assert crm.store.objects.get("tickets", ticket) is not None
    said = json.dumps(entry)
    assert "Levering" not in said and CANARY_NAME not in said and ticket not in said


async def test_a_bundle_written_during_the_fan_out_goes_with_the_erasure_s_last_step(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    open_rt: RuntimeFactory,
    tmp_path: Path,
) -> None:
    """Another process (the CLI beside the daemon) writes the person's access bundle while
    the erasure waits for the CRM's answer, after the erasure deleted the traces: the
    bundle outlived the completed erasure, whose receipt named it as one it could not
    delete. The erasure deletes the person's bundles again as its last step."""
    await _seeded(shop, rt)
    out = tmp_path / "bundle"
    adapter: Any = rt.systems["crm"].adapter
    real_erase = adapter.erase
    written: list[str] = []

    async def erase_while_another_process_writes_a_copy(subject: Subject) -> ErasureResult:
        if not written:
            async with open_rt() as other:
                access = await DsrService(other).access(CANARY_EMAIL, out)
            written.append(access.status)
        result: ErasureResult = await real_erase(subject)
        return result

    adapter.erase = erase_while_another_process_writes_a_copy
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert written == ["completed"] and view.status == "completed"
    assert not (out / "data.json").exists()
    connector_part = receipt_of(service, view.id)["connector"]
    assert "access bundles written for the person" in connector_part["deleted"]
    assert "could not delete" not in connector_part["kept"]


async def test_a_receipt_names_kept_a_bundle_written_under_a_former_address(
    shop: WooCommerceSandbox, rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle written for the person (access), who then changed their address in the shop
    and asked to be erased under the new one; the bundle cannot be deleted now. It is
    recorded under the former address's id, which the erasure covers: the receipt names it
    kept. It used to count only the new address's bundles and list the bundle as deleted."""
    await _seeded(shop, rt)
    service = DsrService(rt)
    out = tmp_path / "bundle"
    assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("connector.retention_bundles._delete_bundle", refused)
    view = await service.erase(new_address)
    assert view.status == "completed"
    assert (out / "data.json").is_file()
    connector_part = receipt_of(service, view.id)["connector"]
    assert "access bundles written for the person" not in connector_part["deleted"]
    assert "1 access bundle the erasure could not delete" in connector_part["kept"]


async def test_a_receipt_does_not_claim_a_hard_delete_where_the_shop_deleted_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> None:
    """anonymise_orders off (orders kept for tax law) and the person has only guest orders:
    WooCommerceAdapter.erase deletes nothing (it only lists the orders, ``GET /orders``),
    yet reports ``mode="hard_delete"``, and the signed receipt says the shop part was a
    hard delete, irreversible, verified absent, while the orders keep name, address, phone."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    shop.add_order(
        0,
        billing={"email": CANARY_EMAIL, "first_name": CANARY_NAME, "phone": CANARY_PHONE},
    )
    transports = {
        "shop": httpx.ASGITransport(app=shop.app()),
        "crm": httpx.ASGITransport(app=crm.app()),
    }
    time = VirtualTime()
    async with open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock) as rt:
        service = DsrService(rt)
        view = await service.erase(CANARY_EMAIL)
        assert view.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    assert any(CANARY_NAME in json.dumps(o) for o in shop.orders_for(0))  # kept, as configured
    assert entry["mode"] != "hard_delete", (
        f"receipt: mode={entry['mode']!r} endpoint={entry['endpoint']!r} "
        f"status={entry['status']!r} note={entry['note']!r}"
    )


async def test_a_shop_s_receipt_counts_the_person_s_reviews_anonymised_and_verifies_none_left(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The person's product reviews (WordPress comments with their name and e-mail) stayed
    in the shop after their erasure, which the receipt certified absent. They are
    anonymised, the text kept; the shop's part is verified absent, its note counting them
    and saying the IP address stays, naming neither the person nor what they wrote."""
    await _seeded(shop, rt)
    reviews = [
        shop.add_review(CANARY_EMAIL, "Heerlijke koffie", reviewer=CANARY_NAME, rating=5),
        shop.add_review(CANARY_EMAIL, "Wacht op moderatie", reviewer=CANARY_NAME, status="hold"),
    ]
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    assert entry["status"] == "verified_absent", (entry["status"], entry["detail"])
    assert "2 reviews anonymised" in entry["note"] and "IP address" in entry["note"]
    said = json.dumps(entry)
    assert CANARY_EMAIL not in said and CANARY_NAME not in said and "koffie" not in said
    for review_id in reviews:
        review = shop.review(review_id)
        assert review is not None and CANARY_NAME not in json.dumps(review)
        assert review["reviewer_email"] == "deleted@site.invalid"
    first = shop.review(reviews[0])
    assert first is not None and first["content"] == "Heerlijke koffie"


async def test_a_receipt_names_exempt_not_absent_a_shop_that_kept_everything(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, tmp_path: Path, env: dict[str, str]
) -> None:
    """Orders kept for tax law (anonymise_orders = false) and a person with guest orders
    only: the shop deletes nothing and keeps the orders in clear. Its part is exempt, with
    the adapter's note saying why, not "verified_absent": absence is certified only from an
    answer that says so."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(path) as runtime:
        order_id = shop.add_order(0, billing={"email": CANARY_EMAIL, "first_name": CANARY_NAME})
        service = DsrService(runtime)
        view = await service.erase(CANARY_EMAIL)
        assert view.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    order = shop.order(order_id)
    assert order is not None and order["billing"]["email"] == CANARY_EMAIL  # kept, in clear
    assert entry["mode"] == "kept" and entry["status"] == "exempt"
    assert "tax law" in entry["detail"] and CANARY_EMAIL not in entry["detail"]


async def test_a_shop_s_verified_erasure_records_why_it_kept_the_orders_as_a_reason_code(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, tmp_path: Path, env: dict[str, str]
) -> None:
    """Orders kept for tax law: the account went and the part is verified absent, the only
    sign of the kept orders a free-text note (which may hold ids), so the person's report
    said "deleted". The verification records the codes of what it passed over as kept on
    purpose, and the receipt carries them; the exempt part of one with guest orders alone
    carries them too."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(path) as runtime:
        await _seeded(shop, runtime)
        guest = "gast.klant@voorbeeld-canary.nl"
        shop.add_order(0, billing={"email": guest, "first_name": CANARY_NAME})
        service = DsrService(runtime)
        views = [await service.erase(CANARY_EMAIL), await service.erase(guest)]
        entries = [
            next(s for s in receipt_of(service, v.id)["systems"] if s["system"] == "shop")
            for v in views
        ]
    deleted, kept = entries
    assert deleted["status"] == "verified_absent" and deleted["mode"] == "hard_delete"
    assert deleted["retained"] == ["tax_records"]
    assert kept["status"] == "exempt" and kept["retained"] == ["tax_records"]


async def test_an_erasure_that_keeps_nothing_on_purpose_records_no_reason_code(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Orders anonymised (the default): nothing is kept on purpose, and no part says so."""
    await _seeded(shop, rt)
    service = DsrService(rt)
    view = await service.erase(CANARY_EMAIL)
    assert view.status == "completed"
    for entry in receipt_of(service, view.id)["systems"]:
        assert entry["status"] == "verified_absent" and "retained" not in entry


FORMER_EMAIL = "vorig.adres@voorbeeld-canary.nl"


async def test_a_shop_that_deleted_an_account_under_another_address_is_verified_not_exempt(
    shop: WooCommerceSandbox,
    open_rt: RuntimeFactory,
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Orders kept for tax law: the address asked with has guest orders only (kept), and an
    address a payload was queued under holds the person's account, which is deleted. The
    part was named exempt, "kept on purpose", by the first answer that found something,
    and the receipt said nothing was deleted. Exempt is only for a system that deleted
    nothing of the person; this one is verified absent, its note naming what is kept."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    account = shop.add_person(FORMER_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    shop.add_order(account)
    shop.add_order(0, billing={"email": CANARY_EMAIL, "first_name": CANARY_NAME})
    monkeypatch.setattr(
        "connector.dsr_kinds.KindRunner._queued_addresses",
        lambda _self, _ids, _email: {"shop": [FORMER_EMAIL]},
    )
    async with open_rt(path) as runtime:
        service = DsrService(runtime)
        view = await service.erase(CANARY_EMAIL)
        assert view.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    assert shop.store.by_email(FORMER_EMAIL) is None  # the account went
    assert entry["status"] == "verified_absent" and entry["mode"] == "hard_delete"
    assert "1 guest order kept" in entry["note"] and CANARY_EMAIL not in entry["note"]


async def test_a_shop_that_deleted_the_account_before_a_crash_is_verified_not_exempt(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: RuntimeFactory,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    """Orders kept for tax law. The process dies after the shop deleted the account and
    before the part's status was written; the retry finds only the orders, now a guest's,
    and the shop answers "kept". The part was named exempt, as if nothing had been deleted:
    the account the snapshot found is gone, so it is verified absent."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(path) as rt:
        await _seeded(shop, rt)
        adapter = rt.systems["shop"].adapter
        original_erase = adapter.erase

        async def erase_then_die(subject: Subject) -> ErasureResult:
            await original_erase(subject)
            raise Crash("killed before the status was written")

        adapter.erase = erase_then_die
        with pytest.raises(Crash):
            await DsrService(rt).erase(CANARY_EMAIL)
        (view,) = DsrService(rt).list(open_only=True)
    assert shop.store.by_email(CANARY_EMAIL) is None
    async with open_rt(path) as rt:  # restart: same store, the real adapter
        service = DsrService(rt)
        resumed = await service.retry(view.id)
        assert resumed.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    assert entry["status"] == "verified_absent", (entry["status"], entry["detail"])
    assert CANARY_EMAIL not in entry["detail"]


@pytest.mark.parametrize(
    ("system", "done"),
    [
        ("crm", "permanently deleted; e-mail added to HubSpot's blocklist"),
        ("shop", "customer deleted; any orders of theirs anonymised"),
    ],
)
async def test_a_receipt_after_a_crash_that_lost_the_erasure_s_answer_says_what_was_done(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: RuntimeFactory, system: str, done: str
) -> None:
    """The process dies after the system answered the erasure and before its outcome was
    recorded. The retry finds nobody left, and the receipt carried that call's answer:
    HubSpot's "no contact of this person found: nothing deleted, nothing sent" (the contact
    was gdpr-deleted and the address is on the blocklist), the shop's "no customer or order
    with personal data". The request's snapshot found the person there: the receipt says
    what the erasure did, as without the crash, and how that is known."""
    async with open_rt() as rt:
        await _seeded(shop, rt)
        adapter = rt.systems[system].adapter
        original_erase = adapter.erase

        async def erase_then_die(subject: Subject) -> ErasureResult:
            await original_erase(subject)
            raise Crash("killed before the outcome was written")

        adapter.erase = erase_then_die
        with pytest.raises(Crash):
            await DsrService(rt).erase(CANARY_EMAIL)
        (view,) = DsrService(rt).list(open_only=True)
    async with open_rt() as rt:  # restart: same store, the real adapter
        service = DsrService(rt)
        resumed = await service.retry(view.id)
        assert resumed.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == system)
    assert (entry["status"], entry["found"]) == ("verified_absent", True)
    assert entry["note"].startswith(done), entry["note"]
    assert entry["note"].endswith("deleted by an earlier attempt of this request, whose "
                                  "outcome was not recorded")  # fmt: skip
    assert "nothing" not in entry["note"]
    assert CANARY_EMAIL not in json.dumps(entry)
    assert crm.is_blocklisted(CANARY_EMAIL) and not shop.holds(CANARY_EMAIL)


async def test_a_system_taken_out_of_the_config_found_under_a_former_address_is_on_the_receipt(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> None:
    """The person was synced to a second CRM portal, taken out of the config since, and then
    changed their address in the shop and asked to be erased under the new one. The
    erasure finds the former address through the shop's record and learns the person was
    sent to ``crm2`` there: that system gets a part of its own, waiting until it is
    configured again or exempted, as one known when the request opened does. The receipt
    used to name the shop and the first CRM alone, and the identity rows that showed the
    person was sent to ``crm2`` went with the erasure's traces."""
    crm2 = HubSpotSandbox(rate_limit=None)

    def runtime(path: Path) -> Any:
        transports = {
            "shop": httpx.ASGITransport(app=shop.app()),
            "crm": httpx.ASGITransport(app=crm.app()),
            "crm2": httpx.ASGITransport(app=crm2.app()),
        }
        time = VirtualTime()
        return open_runtime(path, transports=transports, sleep=time.sleep, clock=time.clock)

    async with runtime(_two_crm_config(tmp_path, with_second=True)) as rt:
        await _seeded(shop, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    async with runtime(_two_crm_config(tmp_path, with_second=False)) as rt:
        service = DsrService(rt)
        view = await service.erase(new_address)
        assert not crm.holds(CANARY_EMAIL) and crm2.holds(CANARY_EMAIL)
        assert view.is_open, "completed with a receipt that leaves out crm2, which holds them"
        assert view.system("crm2").status == "pending"
        assert view.system("crm2").detail == NO_LONGER_CONFIGURED
        view = service.exempt(view.id, "crm2", "portal closed by the client on 2026-11-01")
        assert view.status == "completed"
        receipt = receipt_of(service, view.id)
    named = {s["system"]: (s["adapter"], s["status"]) for s in receipt["systems"]}
    assert named["crm2"] == ("no longer configured", "exempt")


async def test_a_receipt_claims_no_deletion_where_the_shop_s_account_was_left_as_another_s(
    shop: WooCommerceSandbox, open_rt: RuntimeFactory, config_path: Path
) -> None:
    """The flow to the CRM is gone (the CRM taken out of the config), and the customer then
    changed their address in the shop and asked to be erased under the new one. No source
    is read to learn their former address, so the shop's account under the address asked
    with is one the identity map knows as another subject's: the erasure leaves it and its
    order, and the note names it by id. The snapshot counted that account's order as the
    person's all the same, and the signed receipt said the customer had been deleted, by
    an earlier attempt of the request, while both were still in the shop."""
    async with open_rt() as rt:
        shop_id = await _seeded(shop, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    shop.touch(CANARY_EMAIL, email=new_address)
    head, _, _ = config_path.read_text().partition("[systems.crm]")
    config_path.write_text(head)
    async with open_rt() as rt:
        service = DsrService(rt)
        view = await service.erase(new_address)
        assert view.status == "completed"
        entry = next(s for s in receipt_of(service, view.id)["systems"] if s["system"] == "shop")
    assert shop.holds(new_address) and shop.orders_for(shop_id)  # left, as another's
    assert (entry["status"], entry["found"]) == ("not_held", False), entry
    assert "deleted" not in entry["note"], entry["note"]
    assert entry["note"].endswith(
        "left 1 record found under the address that the connector knows as another "
        f"person's (ids {shop_id})"
    )


async def test_an_extended_request_s_receipt_gives_the_reason_for_its_later_deadline(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    """Art. 12(3): a deadline extended by up to two months, the person told why. The
    receipt gave the extended deadline, three months after receipt where the law gives
    one, with no word that it was extended nor why: the signed proof of an answer in time
    leant on an audit trail it does not carry. It names the reason, as the request holds
    it (redacted)."""
    await _seeded(shop, rt)
    service = DsrService(rt)
    shop.faults.down = True
    view = await service.erase(CANARY_EMAIL)
    service.extend(view.id, 2, f"many systems; asked by {CANARY_EMAIL}")
    shop.faults.down = False
    view = await service.retry(view.id)
    assert view.status == "completed"
    receipt = receipt_of(service, view.id)
    assert receipt["deadline"] == view.deadline
    assert receipt["extension_reason"] == "many systems; asked by <email>"
