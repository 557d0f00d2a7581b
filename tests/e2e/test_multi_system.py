"""Two shops feeding HubSpot, Mailchimp and Pipedrive: consent, mirrored erasure, suppression."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot import _store as hubspot_store
from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.mailchimp.payloads import subscriber_hash
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.shopify.sandbox import ShopifySandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, jobs
from connector.adapter import ErasureResult, Subject, WebhookEvent, WebhookRequest
from connector.crypto import CLOAKED_ID_PREFIX
from connector.daemon import Daemon
from connector.demo import REPO_MAPPINGS
from connector.dsr import DsrService, RequestView
from connector.runtime import Runtime, open_runtime
from connector.state import WITHDRAWAL
from connector.targeted import sync_subjects
from connector.webhooks import receive
from tests.conftest import MASTER_KEY, VirtualTime

SHOPIFY_SECRET = "shopify-app-secret"
LISTS = ("a1b2c3d4e5", "f6e5d4c3b2")
DESTINATIONS = '["crm", "news", "deals"]'


class World:
    """Five sandboxes, in-process."""

    def __init__(self) -> None:
        self.shop = WooCommerceSandbox()
        self.shop2 = WooCommerceSandbox()  # a second shop, where a test configures one
        self.shopify = ShopifySandbox()
        self.crm = HubSpotSandbox(rate_limit=None, search_rate_limit=None)
        self.news = MailchimpSandbox(list_ids=LISTS)
        self.deals = PipedriveSandbox(rate_limit=None, search_rate_limit=None)

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        return {
            name: httpx.ASGITransport(app=getattr(self, name).app())
            for name in ("shop", "shop2", "shopify", "crm", "news", "deals")
        }


def write_config(directory: Path, world: World) -> Path:
    (directory / "master.key").write_text(MASTER_KEY)
    secrets = directory / "secrets"
    secrets.mkdir()
    values = {
        "sk": world.shop.credentials()["consumer_key"],
        "ss": world.shop.credentials()["consumer_secret"],
        "shopify": world.shopify.credentials()["access_token"],
        "shopify_hook": SHOPIFY_SECRET,
        "crm": world.crm.credentials()["token"],
        "news": world.news.credentials()["api_key"],
        "deals": world.deals.credentials()["api_token"],
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

[systems.shopify]
adapter = "shopify"
base_url = "https://klant.myshopify.test"
mapping = "{REPO_MAPPINGS / "shopify.toml"}"
credentials = {{ access_token = "file:secrets/shopify" }}
webhooks = {{ secret = "file:secrets/shopify_hook" }}

[systems.crm]
adapter = "hubspot"
base_url = "https://crm.test"
mapping = "{REPO_MAPPINGS / "hubspot.toml"}"
credentials = {{ token = "file:secrets/crm" }}

[systems.news]
adapter = "mailchimp"
base_url = "https://us21.api.mailchimp.test/3.0"
mapping = "{REPO_MAPPINGS / "mailchimp.toml"}"
list_ids = {list(LISTS)}
credentials = {{ api_key = "file:secrets/news" }}

[systems.deals]
adapter = "pipedrive"
base_url = "https://klant.pipedrive.test/api/v2"
mapping = "{REPO_MAPPINGS / "pipedrive.toml"}"
credentials = {{ api_token = "file:secrets/deals" }}

[[flows]]
name = "shop"
source = "shop"
destinations = {DESTINATIONS}

[[flows]]
name = "shopify"
source = "shopify"
destinations = {DESTINATIONS}
""".replace("'", '"')
    )
    return path


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


def _emails(shop: WooCommerceSandbox, count: int) -> list[str]:
    return [shop.store.get(i)["email"] for i in range(1, count + 1)]


async def test_only_consenting_customers_reach_mailchimp(world: World, rt: Runtime) -> None:
    """Everyone reaches HubSpot and Pipedrive; Mailchimp only those who opted in."""
    world.shop.seed_synthetic(20, seed=61)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    assert world.crm.contact_count() == 20
    emails = _emails(world.shop, 20)
    opted_in = [e for i, e in enumerate(emails, start=1) if i % 2]
    assert all(world.deals.holds(e) for e in emails)
    assert all(world.news.holds(e) for e in opted_in)
    assert not any(world.news.holds(e) for e in emails if e not in opted_in)
    assert report.destinations["news"].gated == 10
    # Mailchimp does not say which members were new: written, neither created nor updated.
    news = report.destinations["news"]
    assert (news.created, news.updated, news.upserted, news.written) == (0, 0, 10, 10)
    assert report.destinations["crm"].created == 20 and report.destinations["crm"].upserted == 0
    assert world.news.log.property_names() <= {
        "email_address",
        "status",
        "status_if_new",
        "merge_fields.FNAME",
        "merge_fields.LNAME",
    }


async def test_mailchimp_member_ids_are_kept_cloaked(world: World, rt: Runtime) -> None:
    """Mailchimp names a member by the MD5 of their e-mail; the store keeps it keyed, and one
    an older store kept as it was is cloaked on the next open, with delivery unchanged."""
    world.shop.seed_synthetic(4, seed=62)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    email = _emails(world.shop, 1)[0]
    member = subscriber_hash(email)
    stored = rt.store.db.execute(
        "SELECT external_id FROM identities WHERE system='news'"
    ).fetchall()
    assert len(stored) == 2 and all(row[0].startswith(CLOAKED_ID_PREFIX) for row in stored)
    rt.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    held = b"".join(
        p.read_bytes() for p in rt.config.store_path.parent.glob("*.db*") if p.is_file()
    )
    assert member.encode() not in held
    # What an older version kept: the MD5 itself. The next open cloaks it.
    rt.store.db.execute(
        "UPDATE identities SET external_id=? WHERE system='news' AND external_id=?",
        (member, rt.keyring.cloak_id("news", member)),
    )
    assert rt.engine.ids.cloak_stored(rt.store) == 1
    assert rt.store.db.execute(
        "SELECT COUNT(*) FROM identities WHERE external_id=?", (member,)
    ).fetchone() == (0,)
    world.shop.touch(email, first_name="Anders")
    (again,) = await rt.engine.sync("shop")
    assert again.destinations["news"].written == 1 and world.news.holds(email)
    # The person's access bundle shows them their Mailchimp id, not the store's form of it.
    view = await DsrService(rt).access(email, rt.config.store_path.parent / "bundle")
    data = json.loads((rt.config.store_path.parent / "bundle" / "data.json").read_text())
    assert view.status == "completed"
    assert data["connector"]["identities"]["news"] == member


async def test_access_bundle_shows_the_notes_mailchimp_holds_about_the_member(
    world: World, rt: Runtime
) -> None:
    """A Mailchimp member's notes (free text the client's staff wrote about the person) are
    personal data the recipient holds: the access bundle shows them with the member, in
    data.json and the reports. An erasure deletes them with the member, and its check that
    nothing is left is not misled by them."""
    world.shop.seed_synthetic(4, seed=62)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    email = _emails(world.shop, 1)[0]  # customer 1 opted in: on both audiences
    note = "Belde boos over bezorging; wil geen acties meer per post"
    world.news.add_note(email, note, list_id=LISTS[1])
    bundle = rt.config.store_path.parent / "bundle"
    view = await DsrService(rt).access(email, bundle)
    assert view.status == "completed"
    data = json.loads((bundle / "data.json").read_text())
    members = {m["list_id"]: m for m in data["systems"]["news"]["records"]}
    assert [n["note"] for n in members[LISTS[1]]["notes"]] == [note]
    assert members[LISTS[0]]["notes"] == []
    # And the activity Mailchimp recorded of the member: the sync's sign-up, here.
    assert [e["activity_type"] for e in members[LISTS[0]]["activity"]] == ["signup"]
    assert note in (bundle / "report.en.md").read_text(encoding="utf-8")
    # One notes call per member found on an audience, none where the person is not.
    notes_path = f"/3.0/lists/{LISTS[1]}/members/{subscriber_hash(email)}/notes"
    assert world.news.log.count("GET", notes_path) == 1
    erased = await DsrService(rt).erase(email)
    assert erased.system("news").status == "verified_absent"
    world.news.add_person(email, list_id=LISTS[1])  # back by the audience's own form
    assert world.news.store.notes(LISTS[1], subscriber_hash(email), 10, 0) == ([], 0)


async def test_withdrawn_consent_unsubscribes_on_the_next_sync(world: World, rt: Runtime) -> None:
    """A customer who withdraws consent is unsubscribed in Mailchimp, and never re-added."""
    world.shop.seed_synthetic(4, seed=62)
    await rt.engine.sync("shop")
    email = world.shop.store.get(1)["email"]
    assert world.news.member(LISTS[0], email)["status"] == "subscribed"  # type: ignore[index]
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]
    world.news.log.clear()
    await rt.engine.sync("shop")
    assert world.news.log.writes() == []


async def _sent_then_opted_out(world: World, rt: Runtime) -> str:
    """A customer subscribed by a sync who then withdraws consent, synced again: Mailchimp
    has them unsubscribed. Returns their address."""
    world.shop.seed_synthetic(4, seed=62)
    await rt.engine.sync("shop")
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    await rt.engine.sync("shop")
    return email


async def test_consent_given_again_asks_the_member_to_confirm_once(
    world: World, rt: Runtime
) -> None:
    """A customer unsubscribed for a withdrawn consent opts in again: Mailchimp is asked to
    have them confirm (it lets nobody else re-subscribe them), once; their confirmation
    subscribes them, and later syncs keep it so."""
    email = await _sent_then_opted_out(world, rt)
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    (report,) = await rt.engine.sync("shop")
    assert not report.failed and report.destinations["news"].queued == 1, report.errors
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "pending"  # type: ignore[index]
    assert world.news.confirmations_to(email) == len(LISTS)
    world.news.log.clear()
    await rt.engine.sync("shop")
    assert world.news.log.writes() == []  # not asked again on every sync
    for list_id in LISTS:
        world.news.confirm(list_id, email)
    world.shop.touch(email, first_name="Hernoemd")
    await rt.engine.sync("shop")
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("subscribed", "Hernoemd")
    assert world.news.confirmations_to(email) == len(LISTS)
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]


async def test_a_correction_after_consent_is_given_again_leaves_the_renewal_to_be_sent(
    world: World, rt: Runtime
) -> None:
    """Consent withdrawn and given again, then a correction before the next sync. The
    correction reached the shop, which marks what each system last got to be sent again;
    the mark hid that the last was a withdrawal, and the next sync sent the fields without
    asking to confirm: the member stayed unsubscribed (the fan-out model found it)."""
    email = await _sent_then_opted_out(world, rt)
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    view = await DsrService(rt).rectify(email, {"first_name": "Hersteld"})
    assert view.status == "completed"
    await rt.engine.sync("shop")
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("pending", "Hersteld")


async def test_consent_given_again_under_a_new_address_asks_the_new_address_to_confirm(
    world: World, rt: Runtime
) -> None:
    """Unsubscribed under the former address, the customer moves and opts in again before
    the next sync. Mailchimp changes a subscribed member's address alone, so the unsubscribed
    member stays where it is and the new address is asked to confirm; an erasure under the
    new address reaches both members."""
    email = await _sent_then_opted_out(world, rt)
    new_address = "weer.aangemeld@voorbeeld.nl"
    world.shop.touch(email, email=new_address)
    world.shop.touch(new_address, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    (report,) = await rt.engine.sync("shop")
    assert report.moved == 1 and not report.errors, report.errors
    assert report.destinations["news"].dead_lettered == 0
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "unsubscribed"  # type: ignore[index]
        assert world.news.member(list_id, new_address)["status"] == "pending"  # type: ignore[index]
    assert world.news.confirmations_to(new_address) == len(LISTS)
    view = await DsrService(rt).erase(new_address)
    assert view.system("news").status == "verified_absent"
    for list_id in LISTS:
        assert world.news.member(list_id, email) is None
        assert world.news.member(list_id, new_address) is None


async def test_a_withdrawal_delivered_before_withdrawals_were_marked_still_counts(
    world: World, rt: Runtime
) -> None:
    """A store from before withdrawals were marked holds a withdrawal's bare hash: it is
    not sent again, and opting in again still sends the renewal."""
    email = await _sent_then_opted_out(world, rt)
    sid = rt.keyring.subject_id(email)
    (marked,) = rt.store.page_hashes(["news"], [sid])[1]["news"].values()
    assert marked.startswith(WITHDRAWAL)
    with rt.store.transaction() as db:
        db.execute(
            "UPDATE delivered SET payload_hash = ? WHERE payload_hash = ?",
            (marked.removeprefix(WITHDRAWAL), marked),
        )
    world.news.log.clear()
    await rt.engine.sync("shop")
    assert world.news.log.writes() == []
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] == "pending"  # type: ignore[index]


async def test_a_renewal_waiting_in_the_outbox_stays_a_renewal_when_the_data_changes(
    world: World, rt: Runtime
) -> None:
    """Consent given again while Mailchimp is down: the renewal waits in the outbox. The
    customer then changes their first name before it is delivered. Compared with the
    waiting renewal and not with the withdrawal Mailchimp holds, the newer payload went as
    a plain write, which left the unsubscribed member unsubscribed: the consent given again
    never reached the newsletter."""
    email = await _sent_then_opted_out(world, rt)
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    world.news.faults.down = True
    (first,) = await rt.engine.sync("shop")
    assert (first.destinations["news"].queued, first.destinations["news"].retry_later) == (1, 1)
    world.shop.touch(email, first_name="Anders")
    (second,) = await rt.engine.sync("shop")
    assert second.destinations["news"].queued == 1
    world.news.faults.down = False
    await rt.engine.sync("shop")
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("pending", "Anders")
    assert world.news.confirmations_to(email) == len(LISTS)


async def test_a_name_removed_while_unsubscribed_is_emptied_when_consent_is_given_again(
    world: World, rt: Runtime
) -> None:
    """The withdrawal sent nothing but the status, so Mailchimp kept the member's names;
    recorded as the last write, it made the renewal empty nothing, and a last name removed
    in the shop meanwhile stayed on the member for good."""
    email = await _sent_then_opted_out(world, rt)
    world.shop.touch(email, last_name="")
    await rt.engine.sync("shop")
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    (report,) = await rt.engine.sync("shop")
    assert report.destinations["news"].emptied == 1
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None and member["status"] == "pending"
        assert member["merge_fields"].get("LNAME", "") == ""
        assert member["merge_fields"]["FNAME"]


async def _renewed_confirmed_then_unsubscribed_at_mailchimp(world: World, rt: Runtime) -> str:
    """Withdrawn, consenting again (asked once to confirm), confirmed; then unsubscribed
    through the newsletter's own link, which klantsync does not hear of (no webhook)."""
    email = await _sent_then_opted_out(world, rt)
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    await rt.engine.sync("shop")
    assert world.news.confirmations_to(email) == len(LISTS)
    for list_id in LISTS:
        world.news.confirm(list_id, email)
        world.news.store.audience(list_id).members[subscriber_hash(email)].status = "unsubscribed"
    return email


async def test_a_correction_of_a_field_mailchimp_does_not_receive_sends_it_nothing(
    world: World, rt: Runtime
) -> None:
    """A phone correction (Mailchimp is sent no phone) marked every system to be sent
    again; the next sync sent Mailchimp the renewal it had had, and Mailchimp set the
    member pending and e-mailed them a confirmation, for a change of phone number. Only the
    systems sent a corrected field are sent the person again."""
    email = await _renewed_confirmed_then_unsubscribed_at_mailchimp(world, rt)
    view = await DsrService(rt).rectify(email, {"phone": "+31 6 11112222"})
    assert view.status == "completed"
    world.news.log.clear()
    (report,) = await rt.engine.sync("shop")
    assert world.news.log.writes() == []
    assert report.destinations["news"].queued == 0
    assert report.destinations["crm"].queued == 1  # the CRM is sent the phone: it goes again
    assert world.news.confirmations_to(email) == len(LISTS)
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]


async def test_a_correction_the_shop_then_undoes_asks_no_member_to_confirm_again(
    world: World, rt: Runtime
) -> None:
    """A correction of the first name reaches Mailchimp and the shop, and the customer puts
    the old name back in the shop. The next sync sends it (the correction's mark), but as a
    plain write: sent as the renewal Mailchimp had had, it asked the member to confirm
    their subscription again, for a change of name (README: they are asked once)."""
    email = await _renewed_confirmed_then_unsubscribed_at_mailchimp(world, rt)
    (before,) = {world.news.member(list_id, email)["merge_fields"]["FNAME"] for list_id in LISTS}  # type: ignore[index]
    view = await DsrService(rt).rectify(email, {"first_name": "Hersteld"})
    assert view.status == "completed"
    assert world.news.member(LISTS[0], email)["merge_fields"]["FNAME"] == "Hersteld"  # type: ignore[index]
    world.shop.touch(email, first_name=before)
    await rt.engine.sync("shop")
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("unsubscribed", before)
    assert world.news.confirmations_to(email) == len(LISTS)


async def test_a_shopify_erasure_its_owner_cancels_is_exempted_and_asked_for_no_more(
    world: World, rt: Runtime
) -> None:
    """The shop's owner cancels a pending Shopify erasure (orders kept for the tax office).
    A retry would ask Shopify again, undoing the owner's decision; exempted with the
    reason, the request completes and nothing asks Shopify again."""
    email = "houd.mij@example.nl"
    world.shopify.add_person(email, "Houd", "Mij", marketing_state="SUBSCRIBED")
    await rt.engine.sync("shopify")
    service = DsrService(rt)
    view = await service.erase(email)
    assert view.system("shopify").status == "pending_verification"
    world.shopify.cancel_erasure(email)
    reason = "orders kept seven years for the tax office (Art. 17(3)(b))"
    view = service.exempt(view.id, "shopify", reason)
    assert view.status == "completed" and view.system("shopify").status == "exempt"
    assert await service.retry_open() == 0
    assert not world.shopify.pending_erasure(email) and world.shopify.holds(email)
    assert not world.crm.holds(email) and not world.deals.holds(email)


@pytest.mark.parametrize("state", ["UNSUBSCRIBED", "NOT_SUBSCRIBED", "PENDING", "INVALID"])
async def test_a_shopify_marketing_state_other_than_subscribed_unsubscribes_the_member(
    world: World, rt: Runtime, state: str
) -> None:
    """mappings/shopify.toml reads only SUBSCRIBED as consent; the states `bool` does not
    know leave it unset, which counts as none: a member sent before is unsubscribed."""
    email = "van.staat@example.nl"
    world.shopify.add_person(email, "Van", "Staat", marketing_state="SUBSCRIBED")
    await rt.engine.sync("shopify")
    assert world.news.member(LISTS[0], email)["status"] == "subscribed"  # type: ignore[index]
    world.shopify.touch(email, emailMarketingConsent__marketingState=state)
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]


async def test_consent_withdrawn_with_a_new_address_unsubscribes_the_member_under_the_former(
    world: World, rt: Runtime
) -> None:
    """A subscribed customer changes their address and opts out before the next sync: the
    Mailchimp member, still under the former address, is unsubscribed (it stayed subscribed:
    the unsubscribe went to the new address's member, which does not exist)."""
    world.shop.seed_synthetic(4, seed=63)
    await rt.engine.sync("shop")
    email = world.shop.store.get(1)["email"]  # type: ignore[index]
    assert world.news.member(LISTS[0], email)["status"] == "subscribed"  # type: ignore[index]
    new_address = "nieuw.adres@voorbeeld.nl"
    world.shop.touch(email, email=new_address)
    world.shop.touch(new_address, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "unsubscribed"  # type: ignore[index]
        assert world.news.member(list_id, new_address) is None


async def test_signed_customers_redact_erases_everywhere_with_one_receipt(
    world: World, rt: Runtime
) -> None:
    """Shopify's customers/redact erases in HubSpot, Mailchimp (each audience) and Pipedrive."""
    email = "redact.me@example.nl"
    world.shopify.add_person(email, "Redact", "Me", "+31612345678", marketing_state="SUBSCRIBED")
    world.shopify.add_person("stays@example.nl", "Stays", "Here", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.news.add_person(email, "Redact", "Me", list_id=LISTS[1])  # also on a second audience
    assert world.crm.record_for(email) and world.deals.holds(email) and world.news.holds(email)

    payload = world.shopify.compliance_payload("customers/redact", email)
    body, headers = world.shopify.signed_compliance_webhook(
        "customers/redact", payload, SHOPIFY_SECRET
    )
    forged = dict(
        headers, **{"X-Shopify-Hmac-Sha256": "AAAA" + headers["X-Shopify-Hmac-Sha256"][4:]}
    )
    request = WebhookRequest("POST", "https://connector.test/webhooks/shopify", forged, body)
    lowered = {k.lower(): v for k, v in forged.items()}
    assert (
        receive(
            rt, "shopify", WebhookRequest("POST", request.url, lowered, body), time.time()
        ).status
        == 401
    )
    assert jobs.claim_next(rt.store, rt.keyring) is None

    lowered = {k.lower(): v for k, v in headers.items()}
    # Received on 1 March: a calendar month is 31 days, Shopify gives 30; the earlier counts.
    # The request is recorded as it comes (its suppression entries with it), dated then.
    march = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()
    outcome = receive(rt, "shopify", WebhookRequest("POST", request.url, lowered, body), march)
    assert outcome.status == 200 and len(outcome.queued) == 1
    assert rt.store.suppressed([rt.keyring.subject_id(email)])
    # Shopify retries a delivery it thinks failed, under the same X-Shopify-Webhook-Id.
    replay = receive(rt, "shopify", WebhookRequest("POST", request.url, lowered, body), time.time())
    assert replay.status == 200 and replay.queued == [] and replay.duplicates == 1
    # The id header is not signed: the same body under another id is a replay all the same
    # (it opened a second request before, and an access request's second bundle).
    relabelled = {**lowered, "x-shopify-webhook-id": "11111111-2222-3333-4444-555555555555"}
    again = receive(
        rt, "shopify", WebhookRequest("POST", request.url, relabelled, body), time.time()
    )
    assert again.queued == [] and again.duplicates == 1
    daemon = Daemon(rt)
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    result = await daemon.jobs.run_job(job)
    view = DsrService(rt).get(result["request"])
    assert view is not None
    assert (view.received_at, view.deadline) == (
        "2026-03-01T10:00:00+00:00",
        "2026-03-31T10:00:00+00:00",
    )
    # The phone Shopify sent travels with the queued job: it is suppressed as well.
    assert rt.store.suppressed([rt.keyring.subject_id("+31612345678")])
    statuses = {name: s["status"] for name, s in view.as_dict()["systems"].items()}
    assert statuses["crm"] == statuses["deals"] == statuses["news"] == "verified_absent"
    assert statuses["shopify"] in ("pending_verification", "verified_absent")
    assert not world.crm.holds(email) and not world.crm.restorable(email)
    assert not world.news.holds(email) and not world.news.restorable(email)
    assert all(world.news.is_forgotten(list_id, email) for list_id in LISTS)
    assert not world.deals.holds(email)
    assert world.crm.record_for("stays@example.nl") is not None
    # Shopify erases asynchronously; once it has, the retry verifies it and signs one receipt.
    world.shopify.process_erasures()
    done = await DsrService(rt).retry(view.id)
    assert done.status == "completed"
    receipt = DsrService(rt).receipt(view.id)
    assert receipt is not None
    outcomes = {s["system"]: s for s in json.loads(receipt)["receipt"]["systems"]}
    assert {"crm", "news", "deals", "shopify"} <= set(outcomes)
    assert outcomes["news"]["endpoint"].endswith("/actions/delete-permanent")
    assert "30 days" in outcomes["deals"]["note"]
    assert email not in receipt


def _delivered_again(world: World, topic: str, email: str, first_try: str | None) -> WebhookRequest:
    """Shopify's delivery of ``topic`` for ``email``, sent again after one failed: its
    ``X-Shopify-Triggered-At`` says ``first_try`` (left out for ``None``)."""
    payload = world.shopify.compliance_payload(topic, email)
    body, headers = world.shopify.signed_compliance_webhook(topic, payload, SHOPIFY_SECRET)
    lowered = {k.lower(): v for k, v in headers.items() if k.lower() != "x-shopify-triggered-at"}
    if first_try is not None:
        lowered["x-shopify-triggered-at"] = first_try
    return WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)


@pytest.mark.parametrize("topic", ["customers/redact", "customers/data_request"])
async def test_a_shopify_request_delivered_again_counts_its_30_days_from_the_first_try(
    world: World, rt: Runtime, topic: str
) -> None:
    """Shopify sends a failed delivery again (8 times over 4 hours), marking the first try
    in X-Shopify-Triggered-At. The request counted from the delivery that got through, and
    was due up to four hours after Shopify's own 30 days ran out. It counts from the first
    try, as recorded at the delivery (an erasure) and as the job opens it (a data request)."""
    email = "redact.me@example.nl"
    world.shopify.add_person(email, "Redact", "Me", "+31612345678")
    first_try = dt.datetime(2026, 3, 1, 7, 0, 0, 877000, tzinfo=dt.UTC)
    request = _delivered_again(world, topic, email, "2026-03-01T07:00:00.877041743Z")
    redelivered = (first_try + dt.timedelta(hours=3)).timestamp()
    outcome = receive(rt, "shopify", request, redelivered)
    assert outcome.status == 200 and len(outcome.queued) == 1
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    await Daemon(rt).jobs.run_job(job)
    (view,) = DsrService(rt).list()
    assert (view.received_at, view.deadline) == (
        "2026-03-01T07:00:00+00:00",
        "2026-03-31T07:00:00+00:00",
    )


@pytest.mark.parametrize(
    "first_try",
    [
        None,
        "2026-03-01T11:00:00Z",  # after the delivery: no first try
        "2026-02-26T09:59:59Z",  # more than 3 days before it: no redelivery's mark
        "2026-03-01T07:00:00",  # no offset: any zone's 07:00
        "yesterday",
    ],
)
async def test_a_shopify_first_try_mark_outside_its_bounds_counts_from_the_delivery(
    world: World, rt: Runtime, first_try: str | None
) -> None:
    """X-Shopify-Triggered-At is not signed: taken only as a moment with its offset, no
    later than the delivery and at most 3 days before it. Otherwise the request counts
    from the delivery, as before."""
    email = "redact.me@example.nl"
    world.shopify.add_person(email, "Redact", "Me", "+31612345678")
    request = _delivered_again(world, "customers/redact", email, first_try)
    delivered = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC).timestamp()
    assert receive(rt, "shopify", request, delivered).status == 200
    (view,) = DsrService(rt).list()
    assert (view.received_at, view.deadline) == (
        "2026-03-01T10:00:00+00:00",
        "2026-03-31T10:00:00+00:00",
    )


async def test_a_customers_redact_answered_keeps_the_customer_out_of_syncs_before_its_job(
    world: World, rt: Runtime
) -> None:
    """Shopify sends customers/redact once and is answered 200 with the job queued. The
    erasure was recorded, and the customer suppressed, only when the worker reached the job:
    a scheduled run before it (or a sync while the daemon was stopped) sent their latest
    change to every system. It is recorded with the delivery, so that run sends nothing."""
    email = "redact.me@example.nl"
    world.shopify.add_person(email, "Redact", "Me", "+31612345678", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    payload = world.shopify.compliance_payload("customers/redact", email)
    body, headers = world.shopify.signed_compliance_webhook(
        "customers/redact", payload, SHOPIFY_SECRET
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    request = WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)
    outcome = receive(rt, "shopify", request, time.time())
    assert outcome.status == 200 and len(outcome.queued) == 1
    world.shopify.touch(email, firstName="Nogmaals")  # before the job runs
    (report,) = await rt.engine.sync("shopify")
    assert report.suppressed == 1
    contact = world.crm.record_for(email)
    assert contact is not None and contact["properties"]["firstname"] == "Redact"
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    result = await Daemon(rt).jobs.run_job(job)
    (view,) = DsrService(rt).list()
    assert view.id == result["request"] and view.source == "webhook:shopify"
    assert not world.crm.holds(email) and not world.deals.holds(email)


async def _compliance_request(world: World, rt: Runtime, topic: str, email: str) -> RequestView:
    """Shopify's signed ``topic`` for ``email``, taken as the daemon takes it (verified and
    queued, then its job run); the request it opened or went on as."""
    payload = world.shopify.compliance_payload(topic, email)
    body, headers = world.shopify.signed_compliance_webhook(topic, payload, SHOPIFY_SECRET)
    lowered = {k.lower(): v for k, v in headers.items()}
    request = WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)
    assert len(receive(rt, "shopify", request, time.time()).queued) == 1
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    result = await Daemon(rt).jobs.run_job(job)
    view = DsrService(rt).get(result["request"])
    assert view is not None
    return view


async def test_customers_redact_under_a_new_address_reaches_records_under_the_old_one(
    world: World, rt: Runtime, tmp_path: Path
) -> None:
    """Shopify sends the address the customer has now; the systems hold the one last synced.

    The request also carries the customer's id, which the identity map knows: an access
    request reads, and an erasure deletes, the records made under the former address.
    """
    old, new = "oud.adres@example.nl", "nieuw.adres@example.nl"
    world.shopify.add_person(old, "Olga", "Oud", "+31612345678", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.shopify.touch(old, email=new)  # changed in Shopify, no sync since
    service = DsrService(rt)

    access = await _compliance_request(world, rt, "customers/data_request", new)
    assert access.status == "completed"
    bundle = rt.config.store_path.parent / "access" / access.id
    data = json.loads((bundle / "data.json").read_text())
    assert {n: len(data["systems"][n]["records"]) >= 1 for n in ("crm", "deals", "news")} == {
        "crm": True,
        "deals": True,
        "news": True,
    }

    erasure = await _compliance_request(world, rt, "customers/redact", new)
    world.shopify.process_erasures()
    done = await service.retry(erasure.id)
    assert done.status == "completed"
    assert {s.system: s.status for s in done.systems if s.system in ("crm", "deals", "news")} == {
        "crm": "verified_absent",
        "deals": "verified_absent",
        "news": "verified_absent",
    }
    assert not world.crm.holds(old) and not world.deals.holds(old) and not world.news.holds(old)
    # The phone Shopify sends with the request is suppressed too.
    assert rt.store.suppressed([rt.keyring.subject_id("+31612345678")])


async def test_an_erasure_asked_again_under_the_former_address_goes_on_as_the_open_one(
    world: World, rt: Runtime
) -> None:
    """The person moved from A to B in the shop (synced: the identity map links A to B).
    Their erasure, asked under B, waits for HubSpot (down). Asked again under A, the
    address the CRM knows them by, it goes on as the open one: one request, one receipt
    (a second was opened, looked for by the address asked with only)."""
    world.shop.seed_synthetic(2, seed=63)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed
    former = world.shop.store.get(1)["email"]  # type: ignore[index]
    new = "nieuw.adres@voorbeeld.nl"
    world.shop.touch(former, email=new)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed
    service = DsrService(rt)
    world.crm.faults.down = True
    first = await service.erase(new)
    assert first.status == "open"
    second = await service.erase(former)
    assert second.id == first.id
    assert [v.id for v in service.list(open_only=True)] == [first.id]


async def test_customers_redact_with_a_new_address_goes_on_as_the_open_erasure_under_the_old(
    world: World, rt: Runtime
) -> None:
    """The customer's erasure under their former address waits for HubSpot (down); they
    changed their address in Shopify meanwhile, and its customers/redact carries the new
    one with their customer id. The open erasure deleted the identity rows that tied the
    id to them; the record's suppression entry still names it, and the redact goes on as
    that request instead of opening a second for the same person."""
    old, new = "oud.adres@example.nl", "nieuw.adres@example.nl"
    world.shopify.add_person(old, "Olga", "Oud")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    service = DsrService(rt)
    world.crm.faults.down = True
    first = await service.erase(old)
    assert first.status == "open"
    world.shopify.touch(old, email=new)  # changed in Shopify while the erasure is open
    second = await _compliance_request(world, rt, "customers/redact", new)
    assert second.id == first.id
    assert [v.id for v in service.list(open_only=True)] == [first.id]
    # What it adds (the new address) is suppressed too.
    assert rt.store.suppressed([rt.keyring.subject_id(new)])


async def test_a_correction_stands_when_the_source_cannot_be_written(
    world: World, rt: Runtime
) -> None:
    """Shopify is only read: its step says to correct it there, and syncs do not undo it."""
    email = "recht@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", "+31612345678", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors

    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})

    assert view.status == "completed"
    step = view.system("shopify")
    assert step.status == "skipped" and "correct them in this system too" in (step.detail or "")
    assert world.crm.record_for(email)["properties"]["lastname"] == "Goed"
    (again,) = await rt.engine.sync("shopify", full=True)
    assert not again.failed, again.errors
    assert world.crm.record_for(email)["properties"]["lastname"] == "Goed"


async def test_erased_subject_never_comes_back_from_either_shop(world: World, rt: Runtime) -> None:
    """After an erasure, full syncs from WooCommerce and Shopify re-create them nowhere."""
    email = "both.shops@example.nl"
    world.shop.add_person(
        email,
        "Both",
        "Shops",
        "0612345678",
        meta_data=[{"key": "marketing_opt_in", "value": "yes"}],
    )
    world.shopify.add_person(email, "Both", "Shops", marketing_state="SUBSCRIBED")
    await rt.engine.sync("shop")
    await rt.engine.sync("shopify")
    view = await DsrService(rt).erase(email)
    assert view.status in ("completed", "open")
    # Both shops still hold the person (Shopify erases later; the shop's copy is ours to
    # erase but suppose it was restored from a backup): a full sync must not resurrect them.
    world.shop.add_person(
        email,
        "Both",
        "Shops",
        "0612345678",
        meta_data=[{"key": "marketing_opt_in", "value": "yes"}],
    )
    for flow in ("shop", "shopify"):
        (report,) = await rt.engine.sync(flow, full=True)
        assert report.suppressed >= 1
    assert not world.crm.holds(email)
    assert not world.news.holds(email)
    assert not world.deals.holds(email)


def _crm_phone(world: World, email: str) -> Any:
    record = world.crm.record_for(email)
    assert record is not None
    return record["properties"].get("phone")


def _deals_phones(world: World, email: str) -> list[str]:
    record = world.deals.record_for(email)
    assert record is not None
    return [phone["value"] for phone in record["phones"] if phone["value"]]


async def test_a_phone_removed_at_one_shop_is_emptied_though_the_other_shop_wrote_since(
    world: World, rt: Runtime
) -> None:
    """Only the WooCommerce shop ever held her phone number; the Shopify shop, which has
    none, writes her to the CRM after it on every run (the shops differ: a city at one
    only). Once she removes it at WooCommerce, no source holds it: it goes from the CRM
    and Pipedrive, while the Shopify shop's write alone still empties nothing."""
    email = "both.shops@example.nl"
    world.shop.add_person(email, "Anne", "de Vries", "0612345678", city="Utrecht")
    world.shopify.add_person(email, "Anne", "de Vries")
    await rt.engine.sync()
    await rt.engine.sync()
    assert _crm_phone(world, email) == "+31612345678"
    assert _deals_phones(world, email) == ["+31612345678"]
    world.shop.touch(email, billing__phone="")
    await rt.engine.sync()
    assert _crm_phone(world, email) in ("", None)
    assert _deals_phones(world, email) == []


async def test_a_phone_removed_at_one_shop_is_emptied_once_both_shops_agree(
    world: World, rt: Runtime
) -> None:
    """As above, the shops holding the same data once she removes it: the WooCommerce
    shop's payload is then the one the Shopify shop delivered last, and is still sent,
    with the phone number to empty; after that, neither shop writes her again."""
    email = "both.shops@example.nl"
    world.shop.add_person(email, "Anne", "de Vries", "0612345678")
    world.shopify.add_person(email, "Anne", "de Vries")
    await rt.engine.sync()
    assert _crm_phone(world, email) == "+31612345678"
    world.shop.touch(email, billing__phone="")
    reports = await rt.engine.sync()
    assert _crm_phone(world, email) in ("", None)
    assert _deals_phones(world, email) == []
    assert reports[0].destinations["crm"].emptied == 1
    reports = await rt.engine.sync()
    assert all(r.destinations[d].queued == 0 for r in reports for d in ("crm", "deals"))


@pytest.fixture
async def rt3(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    """The world's runtime with a second WooCommerce shop feeding the same systems: three
    flows writing one person to the CRM and Pipedrive, in turn."""
    config = write_config(tmp_path, world)
    (tmp_path / "secrets" / "sk2").write_text(world.shop2.credentials()["consumer_key"])
    (tmp_path / "secrets" / "ss2").write_text(world.shop2.credentials()["consumer_secret"])
    config.write_text(
        config.read_text()
        + f"""
[systems.shop2]
adapter = "woocommerce"
base_url = "https://shop2.test"
mapping = "{REPO_MAPPINGS / "woocommerce.toml"}"
credentials = {{ consumer_key = "file:secrets/sk2", consumer_secret = "file:secrets/ss2" }}

[[flows]]
name = "shop2"
source = "shop2"
destinations = {DESTINATIONS}
"""
    )
    clock = VirtualTime()
    async with open_runtime(
        config, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
    ) as runtime:
        yield runtime


async def test_a_phone_removed_at_one_of_three_shops_is_emptied_though_both_others_wrote_since(
    world: World, rt3: Runtime
) -> None:
    """Three shops, each writing Anne to the CRM in turn (they differ: a city at two, not
    the same one). Only the first ever held her phone number; the two others, which have
    none, wrote her after it on every run. Once she removes it there, no source holds it:
    it goes from the CRM and Pipedrive. (With only the last other flow's field set kept, the
    first shop's was gone by the third shop's write, and the number stayed for good.)"""
    email = "three.shops@example.nl"
    world.shop.add_person(email, "Anne", "de Vries", "0612345678", city="Utrecht")
    world.shopify.add_person(email, "Anne", "de Vries")
    world.shop2.add_person(email, "Anne", "de Vries", city="Amersfoort")
    await rt3.engine.sync()
    await rt3.engine.sync()
    assert _crm_phone(world, email) == "+31612345678"
    assert _deals_phones(world, email) == ["+31612345678"]
    world.shop.touch(email, billing__phone="")
    reports = await rt3.engine.sync()
    assert [r.destinations["crm"].emptied for r in reports] == [1, 0, 0]
    assert _crm_phone(world, email) in ("", None)
    assert _deals_phones(world, email) == []


async def test_a_phone_one_of_three_shops_gave_after_another_is_not_emptied_by_that_other(
    world: World, rt3: Runtime
) -> None:
    """The first and the second shop both hold a phone number for Anne, the third none;
    each writes her in turn, so the CRM holds the second shop's. Once she removes hers at
    the first shop, the second's number stays: it was written after the first's, and the
    second shop still gives it. Removed there too, it goes."""
    email = "three.shops@example.nl"
    world.shop.add_person(email, "Anne", "de Vries", "0612345678", city="Utrecht")
    world.shopify.add_person(email, "Anne", "de Vries", "+31687654321")
    world.shop2.add_person(email, "Anne", "de Vries", city="Amersfoort")
    await rt3.engine.sync()
    await rt3.engine.sync()
    assert _crm_phone(world, email) == "+31687654321"
    world.shop.touch(email, billing__phone="")
    reports = await rt3.engine.sync()
    assert [r.destinations["crm"].emptied for r in reports] == [0, 0, 0]
    assert _crm_phone(world, email) == "+31687654321"
    assert _deals_phones(world, email) == ["+31687654321"]
    world.shopify.touch(email, phone="")
    reports = await rt3.engine.sync()
    assert [r.destinations["crm"].emptied for r in reports] == [0, 1, 0]
    assert _crm_phone(world, email) in ("", None)
    assert _deals_phones(world, email) == []


async def test_shop_redact_forgets_what_the_connector_holds_for_that_shop(
    world: World, rt: Runtime
) -> None:
    """shop/redact drops the shop's identity rows and cursor, and the access bundles written
    for its customers (their data in clear: "delete all of that shop's customer data");
    other sources keep theirs."""
    world.shopify.add_person("one@example.nl", "One", "Customer")
    world.shop.seed_synthetic(3, seed=63)
    await rt.engine.sync("shopify")
    await rt.engine.sync("shop")
    service = DsrService(rt)
    assert (await service.access("one@example.nl")).status == "completed"
    other = world.shop.store.get(1)["email"]  # type: ignore[index]
    assert (await service.access(other)).status == "completed"
    bundles = rt.config.store_path.parent / "access"
    assert len(list(bundles.iterdir())) == 2
    body, headers = world.shopify.signed_compliance_webhook(
        "shop/redact", world.shopify.compliance_payload("shop/redact"), SHOPIFY_SECRET
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    outcome = receive(
        rt, "shopify", WebhookRequest("POST", "https://c.test/x", lowered, body), time.time()
    )
    assert outcome.status == 200
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    await Daemon(rt).jobs.run_job(job)
    count = lambda system: rt.store.db.execute(  # noqa: E731
        "SELECT COUNT(*) FROM identities WHERE system=?", (system,)
    ).fetchone()[0]
    assert count("shopify") == 0 and count("shop") == 3
    assert rt.store.get_cursor("shopify", "shopify") is None
    (left,) = bundles.iterdir()  # the other shop's customer's bundle stays
    assert other in (left / "data.json").read_text()


async def test_shop_redact_keeps_the_bundle_of_one_who_is_the_other_shop_s_customer_too(
    world: World, rt: Runtime
) -> None:
    """shop/redact forgets that shop's customer data; a person who is a customer of the
    other shop too keeps the bundle that answered their request (it covers that shop)."""
    world.shop.seed_synthetic(2, seed=73)
    email = world.shop.store.get(1)["email"]  # type: ignore[index]
    world.shopify.add_person(email, "Both", "Shops")
    await rt.engine.sync("shop")
    await rt.engine.sync("shopify")
    service = DsrService(rt)
    out = rt.config.store_path.parent / "bundle-both"
    assert (await service.access(email, out)).status == "completed"
    await service.handle_event("shopify", WebhookEvent(kind="purge_all", delivery_id="d-1"))
    assert (out / "data.json").exists()
    kinds = [row[0] for row in rt.store.db.execute("SELECT kind FROM audit")]
    assert "dsr.purge_source" in kinds


async def test_an_address_change_moves_the_person_in_every_destination(
    world: World, rt: Runtime
) -> None:
    """HubSpot, Mailchimp (each audience it is on) and Pipedrive change the address in place."""
    world.shop.seed_synthetic(6, seed=63)
    await rt.engine.sync("shop")
    old = world.shop.store.get(1)["email"]  # customer 1 opted in: on Mailchimp as well
    world.news.add_person(old, "Second", "Audience", list_id=LISTS[1])
    new = "verhuisd.adres@example.nl"
    counts = (world.crm.contact_count(), world.deals.person_count())
    crm_id = world.crm.record_for(old)["id"]  # type: ignore[index]
    world.shop.touch(old, email=new)

    (report,) = await rt.engine.sync("shop")

    assert report.moved == 1 and not report.failed, report.errors
    assert (world.crm.contact_count(), world.deals.person_count()) == counts
    assert world.crm.record_for(new)["id"] == crm_id  # type: ignore[index]
    assert not world.crm.record_for(old)
    assert world.deals.holds(new) and not world.deals.holds(old)
    assert world.news.member(LISTS[0], new)["status"] == "subscribed"  # type: ignore[index]
    assert world.news.member(LISTS[0], old) is None
    # On the second audience too, where someone added the person by hand.
    assert world.news.member(LISTS[1], new) is not None
    assert world.news.member(LISTS[1], old) is None
    (again,) = await rt.engine.sync("shop")
    assert again.moved == 0 and all(d.queued == 0 for d in again.destinations.values())


async def test_a_member_written_on_one_audience_only_moves_with_the_address(
    world: World, rt: Runtime
) -> None:
    """A new subscriber's write reaches the second audience but not the first (it answers
    503 until the retries run out), so the record waits for the next sync. The customer then
    changes their address, and the next sync fails the same way. In the end the member on
    the second audience is moved, and the first has them under the new address: one member
    each. The connector used to learn
    the member's id only from a write that reached every audience, so it did not know this
    one, and added a second member beside it (the fan-out model found it)."""
    old, new = "anna.klant@voorbeeld.nl", "anna.nieuw@voorbeeld.nl"
    world.shop.add_person(
        old, "Anna", "Klant", meta_data=[{"key": "marketing_opt_in", "value": "yes"}]
    )
    world.news.faults.fail_next, world.news.faults.fail_status = 6, 503
    (report,) = await rt.engine.sync("shop")
    world.news.faults.fail_next = 0
    assert report.destinations["news"].retry_later == 1
    assert world.news.member(LISTS[0], old) is None and world.news.member(LISTS[1], old)
    world.shop.touch(old, email=new)
    world.news.faults.fail_next = 6  # the queued write goes out first, and fails as before
    (report,) = await rt.engine.sync("shop")
    world.news.faults.fail_next = 0
    assert report.moved == 1
    await rt.engine.sync("shop")
    for list_id in LISTS:
        assert world.news.member(list_id, old) is None, list_id
        assert world.news.member(list_id, new)["status"] == "subscribed"  # type: ignore[index]


ANNA_OUD, ANNA_NIEUW, BERT_ELDERS = (
    "anna.oud@example.nl",
    "anna.nieuw@example.nl",
    "bert.elders@example.nl",
)


async def _anna_takes_the_address_bert_leaves_in_the_same_sync(world: World, rt: Runtime) -> str:
    """Anna and Bert are synced; Bert leaves ANNA_NIEUW for BERT_ELDERS and Anna takes it,
    both before the next sync; then Anna changes her name. Returns Bert's Pipedrive id."""
    world.shop.add_person(
        ANNA_OUD,
        "Anna",
        "de Vries",
        "0611111111",
        meta_data=[{"key": "marketing_opt_in", "value": "yes"}],
    )
    world.shop.add_person(ANNA_NIEUW, "Bert", "Jansen", "0622222222")
    await rt.engine.sync("shop")
    bert = world.deals.record_for(ANNA_NIEUW)
    assert bert is not None
    world.shop.touch(ANNA_NIEUW, email=BERT_ELDERS)
    world.shop.touch(ANNA_OUD, email=ANNA_NIEUW)
    (report,) = await rt.engine.sync("shop")
    # Both moves are made, Bert's first (test_moves.py): Anna keeps her own records, and
    # her write, by the address in Pipedrive, must not find Bert's person under it.
    assert report.moved == 2 and not report.failed, report.errors
    assert world.crm.holds(ANNA_NIEUW)
    world.shop.touch(ANNA_NIEUW, first_name="Annabel")
    await rt.engine.sync("shop")
    return str(bert["id"])


async def test_taking_over_an_address_vacated_in_the_same_sync_leaves_the_leaver_s_person_alone(
    world: World, rt: Runtime
) -> None:
    """Pipedrive looks Anna up by e-mail: written before Bert's change of address landed, her
    write found Bert's person under it, and the identity map made it hers (her next change
    overwrote it). Bert's write lands first now, and Anna has a person of her own."""
    bert_id = await _anna_takes_the_address_bert_leaves_in_the_same_sync(world, rt)
    held = world.deals.record_for(BERT_ELDERS)
    assert held is not None and str(held["id"]) == bert_id
    assert held["first_name"] == "Bert"
    anna = world.deals.record_for(ANNA_NIEUW)
    assert anna is not None and str(anna["id"]) != bert_id
    assert anna["first_name"] == "Annabel"


async def test_erasure_of_who_took_over_an_address_vacated_in_the_same_sync_keeps_the_leaver(
    world: World, rt: Runtime
) -> None:
    """Anna (under the address Bert left) is erased: Bert's records stay, in Pipedrive too."""
    await _anna_takes_the_address_bert_leaves_in_the_same_sync(world, rt)
    view = await DsrService(rt).erase(ANNA_NIEUW)
    assert view.status == "completed"
    assert world.crm.holds(BERT_ELDERS)
    assert world.deals.holds(BERT_ELDERS)
    assert not world.deals.holds(ANNA_NIEUW)


# -- rectification: corrects what is held, subscribes nobody -----------------------------------


def _news_receipt(rt: Runtime, request_id: str) -> dict[str, Any]:
    """The Mailchimp system's entry on a completed request's receipt."""
    text = DsrService(rt).receipt(request_id)
    assert text is not None
    systems = {s["system"]: s for s in json.loads(text)["receipt"]["systems"]}
    entry: dict[str, Any] = systems["news"]
    return entry


async def test_rectification_leaves_an_archived_member_archived_and_says_so(
    world: World, rt: Runtime
) -> None:
    """Archived on audience A: still archived with the old name, nobody added to audience B,
    and the request's step and receipt say the member was left alone, and why. The correction
    reads the member as archived (Mailchimp's status "archived"), as it reads a HubSpot
    contact in the recycle bin: held only archived, it is skipped there and then, not taken
    for the person and sent to the update (which read it again to leave it alone)."""
    email = "archief@example.nl"
    world.news.add_person(email, "Ria", "Fout", list_id=LISTS[0], status="archived")
    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})
    assert view.status == "completed"
    a = world.news.member(LISTS[0], email)
    assert a is not None and (a["status"], a["merge_fields"]["LNAME"]) == ("archived", "Fout")
    assert world.news.member(LISTS[1], email) is None
    assert not world.news.holds(email)
    step = view.system("news")
    assert step.status == "skipped" and step.detail is not None
    assert step.detail.startswith("held only archived (restorable) in the system")
    receipt = _news_receipt(rt, view.id)
    assert (receipt["status"], receipt["detail"]) == ("skipped", step.detail)
    assert "endpoint" not in receipt  # no update was asked for
    # The update's own read of each member's status is not made: the member is not live.
    assert not [e for e in world.news.log.entries if e.query.get("fields") == "id,status"]
    assert world.news.log.writes() == []


async def test_rectification_adds_nobody_to_an_audience_they_are_not_on(
    world: World, rt: Runtime
) -> None:
    """Subscribed on audience A only: A's member is corrected, audience B stays without them."""
    email = "eenlijst@example.nl"
    world.news.add_person(email, "Ria", "Fout", list_id=LISTS[0])
    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})
    assert view.status == "completed" and view.system("news").status == "done"
    a = world.news.member(LISTS[0], email)
    assert a is not None and (a["status"], a["merge_fields"]["LNAME"]) == ("subscribed", "Goed")
    assert world.news.member(LISTS[1], email) is None
    assert world.news.log.count("PUT", "/3.0/lists") == 0


async def test_rectification_of_a_subscribed_member_corrects_it_on_every_audience(
    world: World, rt: Runtime
) -> None:
    """The ordinary case: a synced, subscribed member is corrected wherever they are, their
    status untouched, and the receipt names the update and the field."""
    email = "gewoon@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.news.add_person(email, "Jan", "Fout", list_id=LISTS[1], status="unsubscribed")
    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})
    assert view.status == "completed" and view.system("news").status == "done"
    statuses = {}
    for list_id in LISTS:
        member = world.news.member(list_id, email)
        assert member is not None and member["merge_fields"]["LNAME"] == "Goed"
        statuses[list_id] = member["status"]
    assert statuses == {LISTS[0]: "subscribed", LISTS[1]: "unsubscribed"}
    receipt = _news_receipt(rt, view.id)
    assert (receipt["endpoint"], receipt["outcome"], receipt["fields"]) == (
        "update",
        "updated",
        ["last_name"],
    )


async def test_mailchimp_s_check_of_the_webhook_url_by_get_is_answered(
    world: World, tmp_path: Path
) -> None:
    """Mailchimp checks a webhook's URL with a GET when it is saved, and does not save one
    that is not answered 200: with the secret in the URL it is; without, 401. Other
    vendors' endpoints take POST only (405)."""
    from connector.httpapp import build_public_app

    path = write_config(tmp_path, world)
    _with_news_hook(path)
    clock = VirtualTime()
    async with open_runtime(path, transports=world.transports(), sleep=clock.sleep) as rt:
        app = build_public_app(Daemon(rt))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://c.test") as http:
            checked = await http.get("/webhooks/news", params={"secret": "mc-url-secret"})
            forged = await http.get("/webhooks/news", params={"secret": "guess"})
            other = await http.get("/webhooks/shopify")
    assert (checked.status_code, checked.json()["queued"]) == (200, 0)
    assert forged.status_code == 401
    assert (other.status_code, other.headers["allow"]) == (405, "POST")


WITHDRAWN = "afgemeld@example.nl"


async def _withdrawn_then_back_through_the_form(world: World, rt: Runtime) -> None:
    """Subscribed by a sync, opted out in the shop (unsubscribed in Mailchimp, once), then
    back through the audience's own signup form, by their own hand."""
    world.shop.add_person(
        WITHDRAWN, "Eerst", "Klant", meta_data=[{"key": "marketing_opt_in", "value": "yes"}]
    )
    await rt.engine.sync("shop")
    world.shop.touch(WITHDRAWN, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], WITHDRAWN)["status"] == "unsubscribed"  # type: ignore[index]
    world.news.store.audience(LISTS[0]).members[subscriber_hash(WITHDRAWN)].status = "subscribed"


async def test_a_payload_queued_before_a_correction_does_not_undo_it(
    world: World, rt: Runtime
) -> None:
    """A source klantsync only reads (Shopify) keeps its old values, and syncs leave the
    correction alone until the person changes there. A payload queued before the correction
    (the CRM was down at that sync) carried the old last name, and the next sync, with
    nothing changed in Shopify, delivered it over the correction. The correction is now
    written into what waits, and the change it carried still arrives."""
    email = "recht@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", "+31612345678", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.shopify.touch(email, phone="+31612345679")  # a change the CRM has not had yet
    world.crm.faults.down = True
    await rt.engine.sync("shopify")
    world.crm.faults.down = False
    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})
    assert view.system("crm").status == "done"
    await rt.engine.sync("shopify")  # nothing changed in Shopify since the correction
    contact = world.crm.record_for(email)
    assert contact is not None
    assert (contact["properties"]["lastname"], contact["properties"]["phone"]) == (
        "Goed",
        "+31612345679",
    )


async def test_a_first_write_queued_before_a_correction_takes_it(world: World, rt: Runtime) -> None:
    """The CRM was down at the sync that first found the person: their first write waits
    in the outbox, and the CRM holds no contact of them yet. A correction then asked found
    nobody there ("held no record"), left the waiting payload as it was, and its delivery
    made the contact with the old last name, which Shopify (only read) never sends again.
    What waits for a system is corrected whether or not the system holds the person yet."""
    email = "eerst.wachtend@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", "+31612345678", marketing_state="SUBSCRIBED")
    world.crm.faults.down = True
    await rt.engine.sync("shopify")  # the person's first write waits for the CRM
    world.crm.faults.down = False
    assert world.crm.record_for(email) is None
    view = await DsrService(rt).rectify(email, {"last_name": "Goed"})
    assert view.system("crm").status == "not_held"
    (report,) = await rt.engine.sync("shopify")  # nothing changed in Shopify since
    assert not report.failed, report.errors
    contact = world.crm.record_for(email)
    assert contact is not None and contact["properties"]["lastname"] == "Goed"


async def test_a_correction_retried_leaves_a_change_made_after_it_was_asked(
    world: World, rt: Runtime
) -> None:
    """The CRM was down for a correction; the person then changed their last name in
    Shopify, and that sync's payload waited for the CRM. The correction's retry wrote its
    older value into that payload, and the person's own later change never arrived. Only
    what was queued before the correction was asked takes it; and the retry, finding the
    change carried to the systems the correction reached, leaves it to the sync."""
    email = "later@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", "+31612345678", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    world.crm.faults.down = True
    service = DsrService(rt)
    view = await service.rectify(email, {"last_name": "Goed"})
    assert view.system("crm").status not in ("done", "skipped")
    world.shopify.touch(email, lastName="Nieuw")
    await rt.engine.sync("shopify")  # queued for the CRM, still down
    world.crm.faults.down = False
    step = (await service.retry(view.id)).system("crm")
    assert step.status == "skipped" and "changed in the source since" in (step.detail or "")
    await rt.engine.sync("shopify")  # delivers what waits
    contact = world.crm.record_for(email)
    assert contact is not None and contact["properties"]["lastname"] == "Nieuw"


async def test_a_correction_receipt_names_the_source_klantsync_only_reads(
    world: World, rt: Runtime
) -> None:
    """Shopify is read only: a correction leaves its values, and the receipt says so,
    naming it (the note is not given where no such source is configured)."""
    email = "alleen.gelezen@example.nl"
    world.shopify.add_person(email, "Jan", "Fout", "+31612345678")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    service = DsrService(rt)
    view = await service.rectify(email, {"last_name": "Goed"})
    assert view.status == "completed" and view.system("shopify").status == "skipped"
    text = service.receipt(view.id)
    assert text is not None
    assert "(shopify) keeps its values" in json.loads(text)["receipt"]["connector"]["note"]


async def _moves_and_stays_subscribed(world: World, rt: Runtime) -> None:
    """The withdrawn member changes their address in the shop: the next sync moves them,
    and sends no withdrawal again (they subscribed anew through the form)."""
    world.shop.touch(WITHDRAWN, email="verhuisd@example.nl")
    world.news.log.clear()
    (report,) = await rt.engine.sync("shop")
    assert report.moved == 1
    assert world.news.member(LISTS[0], WITHDRAWN)["status"] == "subscribed", [  # type: ignore[index]
        (e.method, e.path) for e in world.news.log.writes()
    ]


async def test_a_correction_does_not_send_a_withdrawal_again(world: World, rt: Runtime) -> None:
    """Opted out in the shop: unsubscribed in Mailchimp, once. Back through the audience's
    own form later (their consent to Mailchimp, left alone). A correction of their name,
    which marks what each system got to be sent again, must not send the withdrawal again:
    it unsubscribed them from what they had just subscribed to."""
    await _withdrawn_then_back_through_the_form(world, rt)
    view = await DsrService(rt).rectify(WITHDRAWN, {"first_name": "Hersteld"})
    assert view.status == "completed", [(s.system, s.status) for s in view.systems]
    world.news.log.clear()
    (report,) = await rt.engine.sync("shop")
    assert report.destinations["news"].queued == 0, [
        (e.method, e.path) for e in world.news.log.writes()
    ]
    assert world.news.member(LISTS[0], WITHDRAWN)["status"] == "subscribed"  # type: ignore[index]


async def test_an_address_change_does_not_send_a_withdrawal_again(
    world: World, rt: Runtime
) -> None:
    """The same after an address change in the shop: the withdrawal went under the former
    address, and the moved person's looked changed, and went again."""
    await _withdrawn_then_back_through_the_form(world, rt)
    await _moves_and_stays_subscribed(world, rt)


async def test_a_withdrawal_an_earlier_version_recorded_is_not_sent_again_after_a_move(
    world: World, rt: Runtime
) -> None:
    """A withdrawal delivered before withdrawals were marked is stored as its bare hash,
    which holds the address it went under: after an address change it no longer matched,
    was sent again, and unsubscribed a member who had subscribed anew through the form.
    The first sync that recognises it under the address it went to now marks it."""
    await _withdrawn_then_back_through_the_form(world, rt)
    sid = rt.keyring.subject_id(WITHDRAWN)
    (marked,) = rt.store.page_hashes(["news"], [sid])[1]["news"].values()
    with rt.store.transaction() as db:  # as an earlier version left it
        db.execute(
            "UPDATE delivered SET payload_hash = ? WHERE payload_hash = ?",
            (marked.removeprefix(WITHDRAWAL), marked),
        )
    world.news.log.clear()
    await rt.engine.sync("shop")
    assert world.news.log.writes() == []  # nothing sent: the hash is marked, no more
    assert rt.store.page_hashes(["news"], [sid])[1]["news"][sid] == marked
    await _moves_and_stays_subscribed(world, rt)


async def test_a_housemate_s_erasure_by_phone_does_not_stop_the_other_s_withdrawal(
    world: World, rt: Runtime
) -> None:
    """Mother and daughter give the shop the household's phone; both subscribe. The mother
    is erased with the phone (dsr erase --phone, a Shopify redact carrying it). The
    daughter, known to the connector under her own address, then opts out: she is
    unsubscribed. The phone's entry stopped her at every sync, her withdrawal included.
    Someone new with the number is still stopped (it may be the mother under another
    address, from a restored backup)."""
    phone = "0612345678"

    def opt_in(value: str) -> list[dict[str, str]]:
        return [{"key": "marketing_opt_in", "value": value}]

    world.shop.add_person("moeder@example.nl", "Moeder", "Huis", phone, meta_data=opt_in("yes"))
    world.shop.add_person("dochter@example.nl", "Dochter", "Huis", phone, meta_data=opt_in("yes"))
    await rt.engine.sync("shop")
    view = await DsrService(rt).erase("moeder@example.nl", phone=phone)
    assert view.status == "completed"
    world.shop.touch("dochter@example.nl", meta_data=opt_in("no"))
    world.shop.add_person("mam.nieuw@example.nl", "Moeder", "Huis", phone)  # new, same number
    (report,) = await rt.engine.sync("shop")
    member = world.news.member(LISTS[0], "dochter@example.nl")
    assert member is not None and member["status"] == "unsubscribed"
    assert report.suppressed == 1 and not world.crm.holds("mam.nieuw@example.nl")


ANNA = "anna@gezin-devries.nl"
BERT = "bert@werk-devries.nl"


async def _anna_s_address_on_bert_s_person(world: World, rt: Runtime) -> int:
    """Anna and Bert are shop customers, synced: the identity map knows Bert's Pipedrive
    person under Bert. A sales rep then adds Anna's address to Bert's person as a second
    e-mail (the household's). Returns the id of Bert's person."""
    world.shop.add_person(ANNA, "Anna", "de Vries", "0612345678")
    world.shop.add_person(BERT, "Bertus", "Jansenius", "0687654321")
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    bert = world.deals.record_for(BERT)
    assert bert is not None
    person = world.deals.store.persons[int(bert["id"])]
    person.values["emails"] = [
        {"value": BERT, "primary": True, "label": "work"},
        {"value": ANNA, "primary": False, "label": "home"},
    ]
    return int(bert["id"])


async def test_a_record_known_as_a_housemate_s_is_not_in_the_person_s_bundle(
    world: World, rt: Runtime, tmp_path: Path
) -> None:
    """Pipedrive finds Bert's person by Anna's address too; the identity map knows it as
    Bert's, so Anna's copy holds her own person and not his."""
    await _anna_s_address_on_bert_s_person(world, rt)
    out = tmp_path / "bundle"
    view = await DsrService(rt).access(ANNA, out)
    assert view.status == "completed"
    held = json.dumps(json.loads((out / "data.json").read_text())["systems"]["deals"])
    assert "Anna" in held
    assert "Jansenius" not in held and BERT not in held


async def test_a_record_known_as_a_housemate_s_is_left_by_the_person_s_erasure(
    world: World, rt: Runtime
) -> None:
    """Anna's erasure deletes her Pipedrive person and leaves Bert's, found by her address
    too (beside his own primary one); the receipt says a record was left, by its id only."""
    bert_id = await _anna_s_address_on_bert_s_person(world, rt)
    anna = world.deals.record_for(ANNA)
    assert anna is not None
    view = await DsrService(rt).erase(ANNA)
    assert view.status == "completed"
    assert world.deals.store.persons[int(anna["id"])].deleted_at is not None
    assert world.deals.store.persons[bert_id].deleted_at is None and world.deals.holds(BERT)
    text = DsrService(rt).receipt(view.id)
    assert text is not None
    systems = {s["system"]: s for s in json.loads(text)["receipt"]["systems"]}
    assert systems["deals"]["status"] == "verified_absent"
    assert (
        "left 1 person found under the address but holding it only beside another primary "
        f"e-mail, as syncs leave them (ids {bert_id})" in systems["deals"]["note"]
    )
    assert BERT not in text and "Jansenius" not in text


async def test_a_record_known_as_a_housemate_s_is_not_corrected_with_the_person(
    world: World, rt: Runtime
) -> None:
    """Pipedrive finds Bert's person by Anna's address too, and its update wrote Anna's
    correction over Bert's name and phone. The identity map knows that person as Bert's:
    Anna's own is corrected, Bert's is left, and her step says so by its id alone."""
    bert_id = await _anna_s_address_on_bert_s_person(world, rt)
    anna = world.deals.record_for(ANNA)
    assert anna is not None
    view = await DsrService(rt).rectify(ANNA, {"last_name": "Smit", "phone": "0611122233"})
    assert view.status == "completed"
    corrected = world.deals.store.persons[int(anna["id"])].to_json()
    assert corrected["last_name"] == "Smit"
    bert = world.deals.store.persons[bert_id].to_json()
    assert bert["last_name"] == "Jansenius" and "Smit" not in json.dumps(bert)
    assert "0611122233" not in json.dumps(bert) and "611122233" not in json.dumps(bert)
    text = DsrService(rt).receipt(view.id)
    assert text is not None
    systems = {s["system"]: s for s in json.loads(text)["receipt"]["systems"]}
    assert systems["deals"]["status"] == "done"
    assert (
        "left 1 person found under the address but holding it only beside another primary "
        f"e-mail, as syncs leave them (ids {bert_id})" in systems["deals"]["detail"]
    )
    assert BERT not in text and "Jansenius" not in text and ANNA not in text


async def test_a_shopify_erasure_cancelled_while_pending_is_asked_for_again_the_next_day(
    world: World, rt: Runtime
) -> None:
    """Shopify holds an erasure for ten days, and its owner can cancel it meanwhile: the
    customer is then still there, and only a new request erases them. A retry asks Shopify
    again once a day (at every 15-minute retry it would be a thousand requests); a part
    cancelled on purpose is closed with dsr exempt instead."""
    clock = {"now": dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    world.shopify.add_person("annuleer.mij@example.nl", "Annu", "Leer")
    await rt.engine.sync("shopify")
    view = await service.erase("annuleer.mij@example.nl")
    assert view.system("shopify").status == "pending_verification"
    world.shopify.cancel_erasure("annuleer.mij@example.nl")  # in Shopify's admin
    clock["now"] += dt.timedelta(hours=1)
    await service.retry(view.id)
    assert not world.shopify.pending_erasure("annuleer.mij@example.nl")  # not yet a day
    clock["now"] += dt.timedelta(days=1)
    view = await service.retry(view.id)
    assert world.shopify.pending_erasure("annuleer.mij@example.nl")  # asked again
    assert view.system("shopify").status == "pending_verification"


class Crash(Exception):
    """The process dying where it is raised."""


@pytest.mark.parametrize(
    ("system", "done", "reversible"),
    [
        ("deals", "deleted, purged by the vendor after 30 days; ", True),
        ("news", "permanently deleted on every audience it was on; Mailchimp refuses", False),
    ],
)
async def test_a_receipt_after_a_crash_that_lost_the_erasure_s_answer_says_what_the_vendor_keeps(
    world: World, tmp_path: Path, system: str, done: str, reversible: bool
) -> None:
    """The process dies after Pipedrive answered ``DELETE /persons/{id}`` (or Mailchimp
    ``delete-permanent``), before the outcome was recorded. The retry finds nobody live and
    the receipt said "no person held for this subject", though this request deleted them
    and Pipedrive can restore them for 30 days (Mailchimp refuses the address from then
    on). It says what the erasure did, as without the crash."""
    email = "jan.jansen@voorbeeld.nl"
    config = write_config(tmp_path, world)
    clock = VirtualTime()
    opted_in = [{"key": "marketing_opt_in", "value": "yes"}]
    world.shop.add_person(email, "Jan", "Jansen", "0612345678", meta_data=opted_in)
    async with open_runtime(
        config, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
    ) as rt:
        (report,) = await rt.engine.sync("shop")
        assert not report.failed and world.news.holds(email)
        adapter = rt.systems[system].adapter
        original_erase = adapter.erase

        async def erase_then_die(subject: Subject) -> ErasureResult:
            await original_erase(subject)
            raise Crash("killed before the outcome was written")

        adapter.erase = erase_then_die  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await DsrService(rt).erase(email)
        (view,) = DsrService(rt).list(open_only=True)
    assert world.deals.restorable(email) or system != "deals"
    async with open_runtime(
        config, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
    ) as rt:
        service = DsrService(rt)
        completed = await service.retry(view.id)
        assert completed.status == "completed", completed
        text = service.receipt(view.id)
    assert text is not None
    entry = {s["system"]: s for s in json.loads(text)["receipt"]["systems"]}[system]
    assert (entry["status"], entry["found"]) == ("verified_absent", True)
    assert entry["reversible"] is reversible
    assert entry["note"].startswith(done), entry["note"]
    assert "deleted by an earlier attempt of this request" in entry["note"]


async def test_a_crash_in_a_retry_s_verifying_read_does_not_ask_shopify_to_erase_again(
    world: World, rt: Runtime
) -> None:
    """A retry of a pending Shopify erasure only reads. A process that dies in that read
    leaves the part pending verification: the next retry, half an hour after the first
    request, reads again and does not queue a second erasure (it was marked in progress,
    and the next retry asked Shopify to erase again at once)."""
    clock = {"now": dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)}
    service = DsrService(rt, now=lambda: clock["now"])
    email = "wacht.even@example.nl"
    world.shopify.add_person(email, "Wacht", "Even")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed
    view = await service.erase(email)
    assert view.system("shopify").status == "pending_verification"
    adapter: Any = rt.systems["shopify"].adapter
    real_find, real_erase = adapter.find_records, adapter.erase
    asked: list[Subject] = []

    async def dying_find(subject: Subject, *, orders: bool = False) -> list[dict[str, Any]]:
        raise Crash("killed during the verifying read")

    async def counting_erase(subject: Subject) -> ErasureResult:
        asked.append(subject)
        return await real_erase(subject)

    adapter.erase = counting_erase  # type: ignore[method-assign]
    clock["now"] += dt.timedelta(minutes=15)
    adapter.find_records = dying_find
    with pytest.raises(Crash):
        await service.retry(view.id)
    adapter.find_records = real_find
    crashed = service.get(view.id)
    assert crashed is not None and crashed.system("shopify").status == "pending_verification"
    clock["now"] += dt.timedelta(minutes=15)
    view = await service.retry(view.id)
    assert view.system("shopify").status == "pending_verification"
    assert asked == []
    clock["now"] += dt.timedelta(days=1)
    await service.retry(view.id)
    assert len(asked) == 1  # once a day, as ever


async def test_a_corrected_phone_reaches_pipedrive_in_the_person_s_own_country(
    world: World, rt: Runtime
) -> None:
    """Pipedrive's persons keep no country: a Belgian's corrected "0470 99 88 77" goes
    there as a sync sends it, +32 (the shop's country for them), not +31 read in the
    default region, someone else's Dutch number."""
    email = "lotte@voorbeeld-canary.be"
    world.shop.add_person(email, "Lotte", "Peeters", "+32 470 12 34 56", country="BE")
    await rt.engine.sync("shop")
    view = await DsrService(rt).rectify(email, {"phone": "0470 99 88 77"})
    assert view.system("deals").status == "done"
    crm = world.crm.record_for(email)
    assert crm is not None and crm["properties"]["phone"] == "+32470998877"
    person = world.deals.record_for(email)
    assert person is not None
    assert [p["value"] for p in person["phones"] if p["primary"]] == ["+32470998877"]
    # Corrected with a country: read in that one everywhere, Pipedrive included.
    await DsrService(rt).rectify(email, {"country": "DE", "phone": "030 1234567"})
    person = world.deals.record_for(email)
    assert person is not None
    assert [p["value"] for p in person["phones"] if p["primary"]] == ["+49301234567"]


async def test_a_customers_redact_naming_nobody_is_recorded_as_unmatched(
    world: World, rt: Runtime
) -> None:
    """A customers/redact whose body names neither a customer nor an address (it could not
    be read) was answered 200; its job then failed on "no e-mail", and nothing in the audit
    trail said a request came. It is recorded as unmatched."""
    body, headers = world.shopify.signed_compliance_webhook(
        "customers/redact", {"shop_id": 954_889, "customer": None}, SHOPIFY_SECRET
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    request = WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)
    assert len(receive(rt, "shopify", request, time.time()).queued) == 1
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    await Daemon(rt).jobs.run_job(job)
    unmatched = [e for e in audit.entries(rt.store) if e.kind == "dsr.unmatched"]
    assert [e.data for e in unmatched] == [{"system": "shopify", "kind": "erase"}]


async def _redact_unsynced(world: World, rt: Runtime, phone: str | None) -> tuple[str, str]:
    """A phone-only Shopify customer (Shopify keeps customers with no e-mail; people are
    known by e-mail here, so no sync took them), then Shopify's customers/redact for them,
    carrying ``phone``, run as the daemon runs it. Their customer id and the request's."""
    gid = world.shopify.add_person(None, "Piet", "Telefoon", "+31612345678")
    (report,) = await rt.engine.sync("shopify")
    assert report.invalid == 1
    number = int(gid.rsplit("/", 1)[1])
    payload = {
        "shop_id": 954_889,
        "shop_domain": world.shopify.shop_domain,
        "customer": {"id": number, "email": None, "phone": phone},
        "orders_to_redact": [],
    }
    body, headers = world.shopify.signed_compliance_webhook(
        "customers/redact", payload, SHOPIFY_SECRET
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    request = WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)
    assert len(receive(rt, "shopify", request, time.time()).queued) == 1
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    result = await Daemon(rt).jobs.run_job(job)
    view = DsrService(rt).get(result["request"])
    assert view is not None and view.system("shopify").status == "pending_verification"
    assert number in world.shopify.store.pending_erasures  # the shop's part erases there
    kinds = [e.kind for e in audit.entries(rt.store)]
    assert "dsr.received" in kinds and "dsr.unmatched" not in kinds
    trail = json.dumps([e.data for e in audit.entries(rt.store)])
    assert "612345678" not in trail and "Telefoon" not in trail
    return gid, view.id


async def _comes_back(world: World, rt: Runtime, gid: str) -> None:
    """The same person signs up again with their number and an e-mail, and their old
    customer record is given an e-mail too; a sync sends neither anywhere."""
    world.shopify.add_person("piet@example.nl", "Piet", "Telefoon", "06 12345678")
    world.shopify.touch(gid, email="piet.oud@example.nl")
    await rt.engine.sync("shopify")
    for email in ("piet@example.nl", "piet.oud@example.nl"):
        assert not world.crm.holds(email) and not world.deals.holds(email)


async def test_a_phone_only_customers_redact_keeps_them_out_by_their_number(
    world: World, rt: Runtime
) -> None:
    """A customers/redact for a customer with a phone and no e-mail, whom no sync took,
    matched no subject: it was audited as unmatched and nothing else, so neither the number
    Shopify sent nor the shop's record was suppressed, and the person signing up again was
    synced. It opens an erasure keyed by the number, which also holds the record."""
    gid, _ = await _redact_unsynced(world, rt, "+31612345678")
    keys = [rt.keyring.subject_id("+31612345678"), rt.engine.ids.record_key("shopify", gid)]
    assert rt.store.suppressed(keys) == set(keys)
    await _comes_back(world, rt, gid)


async def test_a_redact_naming_only_an_unsynced_customer_keeps_their_record_out(
    world: World, rt: Runtime
) -> None:
    """The same redact without the number (a body that leaves it out): the erasure is keyed
    by the shop's record, and the number the shop holds for it is suppressed as an erasure
    given no phone suppresses the shop's."""
    gid, _ = await _redact_unsynced(world, rt, None)
    keys = [rt.engine.ids.record_key("shopify", gid), rt.keyring.subject_id("+31612345678")]
    assert rt.store.suppressed(keys) == set(keys)
    await _comes_back(world, rt, gid)


async def test_a_compliance_request_is_synced_to_disk_before_it_is_acknowledged(
    world: World, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shopify sends a customers/redact once: the transaction that queues it is synced to
    disk (synchronous FULL) before the 200, so a power cut right after cannot lose it. A
    change is caught up by the next run and is not paid an fsync."""
    levels: list[tuple[str, int]] = []
    real_enqueue = jobs.enqueue

    def watching(store: Any, keyring: Any, kind: str, params: dict[str, Any]) -> int:
        levels.append((params["event"], store.db.execute("PRAGMA synchronous").fetchone()[0]))
        return real_enqueue(store, keyring, kind, params)

    monkeypatch.setattr(jobs, "enqueue", watching)
    world.shopify.add_person("a@voorbeeld-canary.nl", "A", "B")
    url = "https://connector.test/webhooks/shopify"
    redact = world.shopify.compliance_payload("customers/redact", "a@voorbeeld-canary.nl")
    for topic, payload in (
        ("customers/redact", redact),
        ("customers/update", {"id": 7, "email": "a@voorbeeld-canary.nl"}),
    ):
        body, headers = world.shopify.signed_webhook(topic, payload, SHOPIFY_SECRET)
        lowered = {k.lower(): v for k, v in headers.items()}
        receive(rt, "shopify", WebhookRequest("POST", url, lowered, body), time.time())
    assert levels == [("erase", 2), ("changed", 1)]  # 2 = FULL, 1 = NORMAL
    assert rt.store.db.execute("PRAGMA synchronous").fetchone()[0] == 1


async def test_a_withdrawal_and_a_correction_pass_a_merge_field_made_required_since(
    world: World, rt: Runtime
) -> None:
    """The audience's owner made a merge field required after the member was written.
    Mailchimp checks the whole member on a write unless told to skip it, so the withdrawal
    (a status only) became a dead letter and the person stayed subscribed; a correction of
    their name was refused the same way. Both say skip_merge_validation."""
    world.shop.seed_synthetic(8, seed=63)
    await rt.engine.sync("shop")
    subscribed = [
        c["email"]
        for c in (world.shop.store.get(n) for n in range(1, 9))
        if c is not None and world.news.member(LISTS[0], c["email"]) is not None
    ]
    email, corrected = subscribed[:2]
    for list_id in LISTS:
        world.news.require_merge_field(list_id, "COMPANY")
    view = await DsrService(rt).rectify(corrected, {"last_name": "Hersteld"})
    assert view.system("news").status == "done"
    member = world.news.member(LISTS[0], corrected)
    assert member is not None and member["merge_fields"]["LNAME"] == "Hersteld"
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    (report,) = await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]
    # A whole member written without the check is refused, as Mailchimp does: the corrected
    # person, sent again by this sync, lacks the field.
    assert report.destinations["news"].dead_lettered == 1


async def test_a_name_change_in_the_shop_leaves_who_unsubscribed_at_mailchimp_archived(
    world: World, rt: Runtime
) -> None:
    """With config.example.toml's default (no Mailchimp webhook, so klantsync never hears
    of the unsubscribe): a reader subscribed by a sync unsubscribes at Mailchimp and is
    archived; a name change in the shop is not written to the archived member, which stays
    archived on every audience."""
    world.shop.seed_synthetic(4, seed=62)
    (first,) = await rt.engine.sync("shop")
    assert not first.failed, first.errors
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    for list_id in LISTS:
        world.news.store.get(list_id, subscriber_hash(email)).status = "unsubscribed"
        world.news.store.archive(list_id, subscriber_hash(email))  # the marketer's clean-up
    world.shop.touch(email, first_name="Gecorrigeerd")
    world.news.log.clear()
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    statuses = {(world.news.member(list_id, email) or {}).get("status") for list_id in LISTS}
    assert statuses == {"archived"}
    assert world.news.log.writes() == []


async def test_an_unsubscribe_at_mailchimp_is_not_undone_by_a_later_sync(
    world: World, tmp_path: Path
) -> None:
    """The reader unsubscribes through the newsletter's own link; Mailchimp tells the
    connector. The marketer archives unsubscribed contacts (they count toward the bill); the
    customer then corrects their name in the shop, whose consent still says yes. The sync
    must not subscribe them again (a PUT re-adds an archived member as new): it sends their
    withdrawal, once, and nothing more, until they subscribe at Mailchimp again."""
    path = write_config(tmp_path, world)
    _with_news_hook(path)
    url = "https://c.test/webhooks/news?secret=mc-url-secret"
    form = {"content-type": "application/x-www-form-urlencoded"}
    clock = VirtualTime()
    async with open_runtime(path, transports=world.transports(), sleep=clock.sleep) as rt:
        world.shop.seed_synthetic(6, seed=64)
        await rt.engine.sync("shop")
        email = next(
            c["email"]
            for c in (world.shop.store.get(n) for n in range(1, 7))
            if c is not None and world.news.member(LISTS[0], c["email"]) is not None
        )
        for list_id in LISTS:
            member = world.news.store.get(list_id, subscriber_hash(email))
            if member is not None:
                member.status = "unsubscribed"
            delivery = world.news.webhook_delivery("unsubscribe", email, list_id=list_id)
            outcome = receive(rt, "news", WebhookRequest("POST", url, form, delivery), time.time())
            assert outcome.status == 200 and outcome.queued == []
        for list_id in LISTS:
            if world.news.member(list_id, email) is not None:
                world.news.store.archive(list_id, subscriber_hash(email))
        world.shop.touch(email, first_name="Gecorrigeerd")
        world.news.log.clear()
        (report,) = await rt.engine.sync("shop")
        statuses = {
            list_id: (world.news.member(list_id, email) or {}).get("status") for list_id in LISTS
        }
        assert "subscribed" not in statuses.values() and "pending" not in statuses.values()
        assert report.destinations["news"].withdrawn == 1
        world.news.log.clear()
        await rt.engine.sync("shop")
        assert world.news.log.writes() == []
        # Subscribed again at Mailchimp: the shop's data reaches the member again.
        delivery = world.news.webhook_delivery("subscribe", email, list_id=LISTS[0])
        receive(rt, "news", WebhookRequest("POST", url, form, delivery), time.time())
        assert rt.store.opted_out("news", [rt.keyring.subject_id(email)]) == set()
        kinds = [e.kind for e in audit.entries(rt.store)]
        assert "consent.opted_out" in kinds and "consent.opted_in" in kinds


def _with_news_hook(path: Path) -> None:
    """Give the config's Mailchimp its webhook secret (the URL's ``secret=mc-url-secret``)."""
    (path.parent / "secrets" / "news_hook").write_text("mc-url-secret")
    path.write_text(
        path.read_text().replace(
            'credentials = { api_key = "file:secrets/news" }',
            'credentials = { api_key = "file:secrets/news" }\n'
            'webhooks = { secret = "file:secrets/news_hook" }',
        )
    )


def news_config(tmp_path: Path, world: World, *, extra: str = "") -> Path:
    """The config with Mailchimp alone as the shop's destination, its webhook secret set."""
    path = write_config(tmp_path, world)
    _with_news_hook(path)
    text = path.read_text().replace('["crm", "news", "deals"]', '["news"]')
    path.write_text(text.replace("retry_base_seconds = 0", "retry_base_seconds = 0\n" + extra))
    return path


async def test_mailchimp_that_is_down_is_tried_for_a_few_batches_not_the_whole_backlog(
    world: World, tmp_path: Path
) -> None:
    """Mailchimp's adapter writes member by member and answers a system that is down with
    every result failed, not an error raised: those count toward an outage too, so the run
    leaves the rest queued after a few batches instead of trying the whole backlog."""
    from connector.engine import DOWN_AFTER

    clock = VirtualTime()
    path = news_config(tmp_path, world, extra="retry_attempts = 1")
    async with open_runtime(
        path, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
    ) as rt:
        world.shop.seed_synthetic(2_000, seed=14)
        world.news.faults.down = True
        (report,) = await rt.engine.sync("shop")
        news = report.destinations["news"]
        in_flight = rt.systems["news"].limits.max_concurrency
        assert news.queued > (DOWN_AFTER + in_flight) * rt.systems["news"].limits.batch_size
        assert any("deferred for the rest of this run" in e for e in report.errors)
        assert news.requests <= DOWN_AFTER + in_flight


async def test_a_mailchimp_overload_403_storm_leaves_the_backlog_queued_as_a_429_storm_does(
    world: World, tmp_path: Path
) -> None:
    """Under heavy load Mailchimp answers a bare 403, its rate limit as a 429 is: past its
    retries it counts toward an outage too. Judged by its status alone, it did not, and
    every batch of the backlog spent its retries on an account refusing all work."""
    from connector.engine import DOWN_AFTER

    clock = VirtualTime()
    path = news_config(tmp_path, world, extra="retry_attempts = 1")
    async with open_runtime(
        path, transports=world.transports(), sleep=clock.sleep, clock=clock.clock
    ) as rt:
        world.shop.seed_synthetic(2_000, seed=14)
        world.news.faults.fail_status = 403
        world.news.faults.fail_next = 10**9
        (report,) = await rt.engine.sync("shop")
        news = report.destinations["news"]
        in_flight = rt.systems["news"].limits.max_concurrency
        assert news.left_queued == news.queued  # nothing lost
        assert any("deferred for the rest of this run" in e for e in report.errors)
        assert news.requests <= DOWN_AFTER + in_flight


@pytest.fixture
async def news_rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    async with open_runtime(
        news_config(tmp_path, world),
        transports=world.transports(),
        sleep=clock.sleep,
        clock=clock.clock,
    ) as runtime:
        yield runtime


def _hook(
    rt: Runtime, world: World, event: str, email: str, list_id: str, fired_at: str = ""
) -> Any:
    body = world.news.webhook_delivery(event, email, list_id=list_id)
    if fired_at:  # when it happened at Mailchimp: the sandbox's deliveries say 15:30
        body = body.replace(b"15%3A30%3A00", fired_at.replace(":", "%3A").encode())
    url = "https://c.test/webhooks/news?secret=mc-url-secret"
    form = {"content-type": "application/x-www-form-urlencoded"}
    return receive(rt, "news", WebhookRequest("POST", url, form, body), time.time())


async def _subscribed_by_a_sync(world: World, rt: Runtime) -> str:
    world.shop.seed_synthetic(4, seed=62)
    await rt.engine.sync("shop")
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "subscribed"  # type: ignore[index]
    return email


def _unsubscribed_at_mailchimp(rt: Runtime, world: World, email: str) -> None:
    for list_id in LISTS:
        world.news.store.get(list_id, subscriber_hash(email)).status = "unsubscribed"
        assert _hook(rt, world, "unsubscribe", email, list_id).status == 200


async def test_a_subscribe_on_an_audience_klantsync_does_not_write_lifts_no_opt_out(
    world: World, news_rt: Runtime
) -> None:
    """A subscribe to another newsletter of the account (an audience not in list_ids)
    says nothing of the ones klantsync writes: the opt-out stays."""
    email = await _subscribed_by_a_sync(world, news_rt)
    _unsubscribed_at_mailchimp(news_rt, world, email)
    world.news.store.archive(LISTS[0], subscriber_hash(email))
    assert _hook(news_rt, world, "subscribe", email, "0th3rl1st0").ignored == 1
    world.shop.touch(email, first_name="Gecorrigeerd")
    await news_rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] != "subscribed"  # type: ignore[index]


async def test_an_unsubscribe_before_the_first_sync_is_kept(world: World, news_rt: Runtime) -> None:
    """A member from before klantsync unsubscribes before the first sync reaches them, and
    is archived: the first sync must not add them back (the opt-out is kept by keyed id)."""
    world.shop.seed_synthetic(4, seed=62)
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    for list_id in LISTS:
        world.news.add_person(email, "Oud", "Lid", list_id=list_id, status="unsubscribed")
        assert _hook(news_rt, world, "unsubscribe", email, list_id).status == 200
        world.news.store.archive(list_id, subscriber_hash(email))
    await news_rt.engine.sync("shop")
    statuses = {
        list_id: (world.news.member(list_id, email) or {}).get("status") for list_id in LISTS
    }
    assert "subscribed" not in statuses.values() and "pending" not in statuses.values()


async def test_the_echo_of_the_connector_s_own_withdrawal_blocks_no_renewal(
    world: World, news_rt: Runtime
) -> None:
    """Mailchimp's webhook reports changes made through the API too: the unsubscribe the
    sync itself sent for a withdrawal in the shop is no choice of the person's at
    Mailchimp. Consenting again in the shop still asks them to confirm (pending)."""
    email = await _subscribed_by_a_sync(world, news_rt)
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
    await news_rt.engine.sync("shop")
    for list_id in LISTS:
        _hook(news_rt, world, "unsubscribe", email, list_id)
    assert news_rt.store.opted_out("news", [news_rt.keyring.subject_id(email)]) == set()
    world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
    await news_rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] == "pending"  # type: ignore[index]


def _echo_during_the_second_audience(app: Any, echo: Any) -> Any:
    """Mailchimp posts its webhook for the first audience's unsubscribe while the adapter is
    still writing the second: the echo arrives before the batch is acknowledged."""

    async def wrapped(scope: Any, receive_: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "PATCH"
            and f"/lists/{LISTS[1]}/members/" in scope["path"]
        ):
            echo()
        await app(scope, receive_, send)

    return wrapped


async def test_the_echo_of_the_connector_s_own_withdrawal_during_its_batch_blocks_no_renewal(
    world: World, tmp_path: Path
) -> None:
    """klantsync unsubscribes a reader who withdrew consent in the shop, one audience after
    the other; Mailchimp reports the first audience's unsubscribe while the second is being
    written, before the batch is acknowledged. The withdrawal on its way is klantsync's own
    too: the echo is no opt-out, and consenting again still asks them to confirm."""
    echoes: list[Any] = [lambda: None]
    transports = world.transports()
    transports["news"] = httpx.ASGITransport(
        app=_echo_during_the_second_audience(world.news.app(), lambda: echoes[-1]())
    )
    clock = VirtualTime()
    path = news_config(tmp_path, world)
    async with open_runtime(path, transports=transports, sleep=clock.sleep) as rt:
        email = await _subscribed_by_a_sync(world, rt)

        heard: list[int] = []

        def echo() -> None:
            if world.news.member(LISTS[0], email)["status"] == "unsubscribed":  # type: ignore[index]
                heard.append(_hook(rt, world, "unsubscribe", email, LISTS[0]).status)

        echoes.append(echo)
        world.shop.touch(email, meta_data=CONSENT_NO)
        await rt.engine.sync("shop")
        echoes.append(lambda: None)
        assert heard == [200]
        assert world.news.member(LISTS[1], email)["status"] == "unsubscribed"  # type: ignore[index]
        assert rt.store.opted_out("news", [rt.keyring.subject_id(email)]) == set()
        assert "consent.opted_out" not in [e.kind for e in audit.entries(rt.store)]
        world.shop.touch(email, meta_data=[{"key": "marketing_opt_in", "value": "yes"}])
        await rt.engine.sync("shop")
        assert world.news.member(LISTS[0], email)["status"] == "pending"  # type: ignore[index]


async def test_an_unsubscribe_a_first_sync_finds_without_the_webhook_is_an_opt_out(
    world: World, rt: Runtime
) -> None:
    """A member from before klantsync unsubscribed from the second audience at Mailchimp,
    and no webhook told klantsync. The first sync learns it from that audience's answer:
    the reader, whom it had just added to the first audience, is withdrawn there too, and
    the opt-out is recorded and audited as the webhook's would be. The next change in the
    shop sends only the withdrawal."""
    world.shop.seed_synthetic(4, seed=62)
    email: str = world.shop.store.get(1)["email"]  # type: ignore[index]
    world.news.add_person(email, "Oud", "Lid", list_id=LISTS[1], status="unsubscribed")
    (first,) = await rt.engine.sync("shop")
    assert not first.failed, first.errors
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "unsubscribed"  # type: ignore[index]
    subject = rt.keyring.subject_id(email)
    assert rt.store.opted_out("news", [subject]) == {subject}
    opted = [e for e in audit.entries(rt.store) if e.kind == "consent.opted_out"]
    assert [(e.subject_id, e.data) for e in opted] == [(subject, {"system": "news"})]
    world.shop.touch(email, first_name="Gewijzigd")
    world.news.log.clear()
    (later,) = await rt.engine.sync("shop")
    assert later.destinations["news"].withdrawn == 1
    member = f"/members/{subscriber_hash(email)}"
    writes = [e.method for e in world.news.log.writes() if e.path.endswith(member)]
    assert writes and all(method == "PATCH" for method in writes)


async def test_an_opt_out_is_in_the_access_report_and_a_dry_run_reads_it_after_a_move(
    world: World, news_rt: Runtime, tmp_path: Path
) -> None:
    """The access bundle says where the person opted out; a dry run after they moved
    foresees what the sync does (nothing: the withdrawal was sent)."""
    email = await _subscribed_by_a_sync(world, news_rt)
    _unsubscribed_at_mailchimp(news_rt, world, email)
    world.shop.touch(email, first_name="Een")
    (sent,) = await news_rt.engine.sync("shop")
    assert sent.destinations["news"].withdrawn == 1
    view = await DsrService(news_rt).access(email, tmp_path / "bundle")
    assert view.status == "completed"
    connector = json.loads((tmp_path / "bundle" / "data.json").read_text())["connector"]
    assert list(connector["opted_out_at"]) == ["news"]
    world.shop.touch(email, email="verhuisd.lezer@voorbeeld-canary.nl")
    (dry,) = await news_rt.engine.sync("shop", dry_run=True)
    (real,) = await news_rt.engine.sync("shop")
    foreseen = (dry.destinations["news"].queued, dry.destinations["news"].withdrawn)
    assert foreseen == (real.destinations["news"].queued, real.destinations["news"].withdrawn)


async def test_a_restore_takes_the_opt_outs_as_the_replaced_store_has_them(
    world: World, tmp_path: Path
) -> None:
    """Opted out, backed up, then subscribed again at Mailchimp: the restore does not bring
    the opt-out back (the next sync would unsubscribe a subscription the person made)."""
    from connector.backup import take_backup
    from connector.restore import restore_backup

    path = news_config(tmp_path, world)
    out = tmp_path / "b.db"
    clock = VirtualTime()
    async with open_runtime(path, transports=world.transports(), sleep=clock.sleep) as rt:
        email = await _subscribed_by_a_sync(world, rt)
        _unsubscribed_at_mailchimp(rt, world, email)
        take_backup(rt.config, out)
        for list_id in LISTS:
            world.news.store.get(list_id, subscriber_hash(email)).status = "subscribed"
            _hook(rt, world, "subscribe", email, list_id)
        subject = rt.keyring.subject_id(email)
        config = rt.config
    restore_backup(config, out)
    async with open_rt_of(path, world) as rt:
        assert rt.store.opted_out("news", [subject]) == set()


async def test_a_subscribe_at_mailchimp_after_a_restore_answers_the_withdrawal_it_found_queued(
    world: World, tmp_path: Path
) -> None:
    """Withdrawn in the shop while Mailchimp was down, then the store restored from a backup
    from before: the withdrawal that waited is to be sent again by the next sync (it may
    not have landed). Before that sync, the person subscribes through the audience's own
    form: their choice is the later one, and the withdrawal is not sent over it."""
    from connector.backup import take_backup
    from connector.restore import restore_backup

    path = news_config(tmp_path, world)
    out = tmp_path / "b.db"
    async with open_rt_of(path, world) as rt:
        email = await _subscribed_by_a_sync(world, rt)
        take_backup(rt.config, out)
        world.shop.touch(email, meta_data=CONSENT_NO)
        world.news.faults.down = True
        (withdrawn,) = await rt.engine.sync("shop")
        world.news.faults.down = False
        assert withdrawn.destinations["news"].retry_later == 1
        config = rt.config
    restore_backup(config, out)
    async with open_rt_of(path, world) as rt:
        for list_id in LISTS:
            _hook(rt, world, "subscribe", email, list_id)
        world.news.log.clear()
        await rt.engine.sync("shop")
        assert world.news.log.writes() == []
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "subscribed"  # type: ignore[index]


def open_rt_of(path: Path, world: World) -> Any:
    clock = VirtualTime()
    return open_runtime(path, transports=world.transports(), sleep=clock.sleep)


def _person_sets(world: World, email: str, status: str) -> None:
    for list_id in LISTS:
        world.news.store.get(list_id, subscriber_hash(email)).status = status


CONSENT_NO = [{"key": "marketing_opt_in", "value": "no"}]


async def test_an_own_unsubscribe_after_subscribing_again_is_not_taken_for_an_echo(
    world: World, news_rt: Runtime
) -> None:
    """Withdrawn in the shop (klantsync unsubscribed them; Mailchimp's report of that is no
    choice of theirs), the person subscribes again through the form, then unsubscribes
    through the newsletter's link: that one is theirs, and is kept."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    world.shop.touch(email, meta_data=CONSENT_NO)
    await rt.engine.sync("shop")
    for list_id in LISTS:  # the echo of klantsync's withdrawal
        _hook(rt, world, "unsubscribe", email, list_id)
    subject = rt.keyring.subject_id(email)
    assert rt.store.opted_out("news", [subject]) == set()
    _person_sets(world, email, "subscribed")
    for list_id in LISTS:
        _hook(rt, world, "subscribe", email, list_id)
    _person_sets(world, email, "unsubscribed")
    for list_id in LISTS:
        world.news.log.clear()  # another delivery, not a replay of the first
        body = world.news.webhook_delivery("unsubscribe", email, list_id=list_id)
        body = body.replace(b"15%3A30", b"16%3A45")
        url = "https://c.test/webhooks/news?secret=mc-url-secret"
        form = {"content-type": "application/x-www-form-urlencoded"}
        receive(rt, "news", WebhookRequest("POST", url, form, body), time.time())
    assert rt.store.opted_out("news", [subject]) == {subject}


async def test_a_subscribe_answers_a_withdrawal_whose_acknowledgement_was_still_waiting(
    world: World, news_rt: Runtime
) -> None:
    """Withdrawn in the shop, the person is unsubscribed by a run whose acknowledgement of
    that write waits for its next write (the next page). They subscribe again through the
    audience's form, then unsubscribe through the newsletter's link: that one is theirs.
    The waiting acknowledgement is committed before the subscribe marks the withdrawal
    answered: committed after, it put the withdrawal back as the last thing delivered, and
    the person's own unsubscribe was taken for its echo."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    world.shop.touch(email, meta_data=CONSENT_NO)
    adapter: Any = rt.systems["shop"].adapter
    real = adapter.pull
    release = asyncio.Event()

    async def pull(cursor: str | None) -> Any:  # the person's page, then the rest later
        adapter.pull = real
        pages = [page async for page in real(cursor)]
        records = [r for page in pages for r in page.records]
        first = [r for r in records if r["email"] == email]
        rest = [r for r in records if r["email"] != email]
        yield dataclasses.replace(pages[-1], records=first, cursor=None, complete=False)
        await release.wait()
        yield dataclasses.replace(pages[-1], records=rest)

    adapter.pull = pull
    sid = rt.keyring.subject_id(email)
    sync = asyncio.create_task(rt.engine.sync("shop"))
    for _ in range(10_000):  # the withdrawal lands; its acknowledgement waits
        if world.news.member(LISTS[0], email)["status"] == "unsubscribed":  # type: ignore[index]
            break
        await asyncio.sleep(0)
    for _ in range(200):
        await asyncio.sleep(0)
    assert rt.store.withdrawal_queued("news", sid)  # not acknowledged yet
    _person_sets(world, email, "subscribed")
    for list_id in LISTS:
        _hook(rt, world, "subscribe", email, list_id)
    release.set()
    await sync
    _person_sets(world, email, "unsubscribed")
    for list_id in LISTS:
        _hook(rt, world, "unsubscribe", email, list_id, "16:45:00")
    assert rt.store.opted_out("news", [sid]) == {sid}


async def test_an_unsubscribe_delivered_after_the_later_subscribe_does_not_undo_it(
    world: World, news_rt: Runtime
) -> None:
    """A member unsubscribes at Mailchimp (15:30) and subscribes again (15:35). The 15:30
    delivery met the daemon while its store failed (503, README: "vendors deliver again")
    and comes again after the 15:35 one. Both say when they fired (``fired_at``): the older
    is ignored, and the next sync leaves subscribed the member who subscribed last. Taken in
    the order they came, the member was held opted out and unsubscribed."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    _person_sets(world, email, "subscribed")  # what Mailchimp holds: the 15:35 subscribe
    for list_id in LISTS:
        assert _hook(rt, world, "subscribe", email, list_id, "15:35:00").status == 200
    for list_id in LISTS:
        outcome = _hook(rt, world, "unsubscribe", email, list_id, "15:30:00")
        assert outcome.status == 200 and outcome.ignored == 1
    sid = rt.keyring.subject_id(email)
    assert rt.store.opted_out("news", [sid]) == set()
    world.shop.touch(email, first_name="Anders")
    await rt.engine.sync("shop")
    for list_id in LISTS:
        assert world.news.member(list_id, email)["status"] == "subscribed"  # type: ignore[index]
    # A newer unsubscribe is theirs, and kept.
    _person_sets(world, email, "unsubscribed")
    for list_id in LISTS:
        _hook(rt, world, "unsubscribe", email, list_id, "15:40:00")
    assert rt.store.opted_out("news", [sid]) == {sid}


async def test_an_unsubscribe_reported_for_an_erased_person_is_not_recorded(
    world: World, news_rt: Runtime
) -> None:
    """Mailchimp reports the unsubscribe of a member deleted by the person's erasure (or one
    that fired before it, delivered late): nothing is recorded under their id, which the
    erasure cleared of every trace but the suppression entry."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    erased = await DsrService(rt).erase(email)
    assert erased.status == "completed"
    for list_id in LISTS:
        assert _hook(rt, world, "unsubscribe", email, list_id).ignored == 1
    sid = rt.keyring.subject_id(email)
    assert rt.store.opted_out("news", [sid]) == set()
    for table in ("opt_outs", "consent_events"):
        where = f"SELECT COUNT(*) FROM {table} WHERE subject_id=?"  # noqa: S608
        assert rt.store.db.execute(where, (sid,)).fetchone() == (0,)


async def test_a_write_queued_before_an_unsubscribe_is_not_delivered(
    world: World, news_rt: Runtime
) -> None:
    """A change queued while Mailchimp was unreachable; the person then unsubscribed at
    Mailchimp and was archived. The queued PUT (which would re-add them) is not sent: only
    their withdrawal goes."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    world.shop.touch(email, first_name="Gewijzigd")
    world.news.faults.down = True
    (queued,) = await rt.engine.sync("shop")
    assert queued.destinations["news"].retry_later == 1
    world.news.faults.down = False
    _person_sets(world, email, "unsubscribed")
    for list_id in LISTS:
        _hook(rt, world, "unsubscribe", email, list_id)
        world.news.store.archive(list_id, subscriber_hash(email))
    world.news.log.clear()
    await rt.engine.sync("shop")
    member = f"/members/{subscriber_hash(email)}"
    writes = [e.method for e in world.news.log.writes() if e.path.endswith(member)]
    assert writes and all(method == "PATCH" for method in writes)
    statuses = {(world.news.member(list_id, email) or {}).get("status") for list_id in LISTS}
    assert "subscribed" not in statuses


async def test_the_echo_of_a_withdrawal_sent_after_a_move_is_not_taken_for_an_opt_out(
    world: World, news_rt: Runtime
) -> None:
    """Moved and withdrawn before the next sync: klantsync unsubscribes the member under the
    former address, and Mailchimp reports it under that address; the report is known for
    klantsync's own under the person's current id."""
    rt = news_rt
    email = await _subscribed_by_a_sync(world, rt)
    new_address = "nieuw.adres@voorbeeld-canary.nl"
    world.shop.touch(email, email=new_address)
    world.shop.touch(new_address, meta_data=CONSENT_NO)
    await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]
    for list_id in LISTS:
        _hook(rt, world, "unsubscribe", email, list_id)
    ids = [rt.keyring.subject_id(email), rt.keyring.subject_id(new_address)]
    assert rt.store.opted_out("news", ids) == set()


BERT_OUD, BERT_NIEUW = "bert.oud@example.nl", "bert.nieuw@example.nl"
OPTED_IN = [{"key": "marketing_opt_in", "value": "yes"}]


async def _bert_moved(world: World, rt: Runtime) -> None:
    """Bert (opted in, subscribed) leaves BERT_OUD for BERT_NIEUW."""
    world.shop.add_person(BERT_OUD, "Bert", "Jansen", "0622222222", meta_data=OPTED_IN)
    await rt.engine.sync("shop")
    world.shop.touch(BERT_OUD, email=BERT_NIEUW)
    (moved,) = await rt.engine.sync("shop")
    assert moved.moved == 1, moved.errors


async def test_an_unsubscribe_under_an_address_someone_took_over_is_theirs_not_the_leaver_s(
    world: World, news_rt: Runtime
) -> None:
    """Anna signs up with the address Bert left, opts in, and unsubscribes through the
    newsletter's link: the opt-out is hers, whose address it is now, and so is her later
    subscribe. Mapped through the alias to whoever once left the address, it was Bert's
    (who never unsubscribed, and from then on was sent only withdrawals) and Anna's member
    was the next sync's to subscribe again."""
    rt = news_rt
    await _bert_moved(world, rt)
    world.shop.add_person(BERT_OUD, "Anna", "de Vries", "0611111111", meta_data=OPTED_IN)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    assert world.news.member(LISTS[0], BERT_OUD)["status"] == "subscribed"  # type: ignore[index]
    anna, bert = rt.keyring.subject_id(BERT_OUD), rt.keyring.subject_id(BERT_NIEUW)

    assert _hook(rt, world, "unsubscribe", BERT_OUD, LISTS[0]).status == 200
    assert rt.store.opted_out("news", [anna, bert]) == {anna}
    # Bert corrects his name in the shop (his consent still yes): his member stays
    # subscribed, and carries the correction.
    world.shop.touch(BERT_NIEUW, first_name="Bertus")
    await rt.engine.sync("shop")
    assert world.news.member(LISTS[0], BERT_NIEUW)["status"] == "subscribed"  # type: ignore[index]
    # Anna subscribes again herself: her opt-out is lifted.
    assert _hook(rt, world, "subscribe", BERT_OUD, LISTS[0]).status == 200
    assert rt.store.opted_out("news", [anna, bert]) == set()


async def test_an_unsubscribe_under_an_address_nobody_has_now_is_the_leaver_s(
    world: World, news_rt: Runtime
) -> None:
    """Bert moved and nobody took his former address: Mailchimp's member under it is still
    his, and its unsubscribe is recorded under the id he has now."""
    rt = news_rt
    await _bert_moved(world, rt)
    assert _hook(rt, world, "unsubscribe", BERT_OUD, LISTS[0]).status == 200
    anna, bert = rt.keyring.subject_id(BERT_OUD), rt.keyring.subject_id(BERT_NIEUW)
    assert rt.store.opted_out("news", [anna, bert]) == {bert}


async def _refused_on_the_second_audience(world: World, rt: Runtime, email: str) -> None:
    """Anna opts in; the second audience requires a merge field the mapping does not send
    (the owner's form setting), so Mailchimp refuses her there and takes her on the first:
    the record is a dead letter, and the member on the first audience is subscribed."""
    world.shop.add_person(email, "Anna", "Jansen", meta_data=OPTED_IN)
    world.news.require_merge_field(LISTS[1], "PHONE")
    (report,) = await rt.engine.sync("shop")
    assert report.destinations["news"].dead_lettered == 1
    assert world.news.member(LISTS[0], email)["status"] == "subscribed"  # type: ignore[index]
    assert world.news.member(LISTS[1], email) is None


async def test_an_opt_out_unsubscribes_the_member_a_write_refused_elsewhere_made(
    world: World, news_rt: Runtime
) -> None:
    """A write refused on one audience and taken on another is a dead letter with nothing
    delivered; the member it made is the person's all the same. Their withdrawal of
    consent reaches it: gated as someone never sent anything there, they stayed
    subscribed, and kept getting the newsletter they opted out of."""
    email = "anna@voorbeeld.nl"
    await _refused_on_the_second_audience(world, news_rt, email)
    world.shop.touch(email, meta_data=CONSENT_NO)
    (report,) = await news_rt.engine.sync("shop")
    assert report.destinations["news"].withdrawn == 1, report.errors
    assert world.news.member(LISTS[0], email)["status"] == "unsubscribed"  # type: ignore[index]
    assert world.news.member(LISTS[1], email) is None  # a withdrawal adds nobody


async def test_an_erasure_after_a_move_reaches_the_member_a_write_refused_elsewhere_made(
    world: World, news_rt: Runtime
) -> None:
    """The member id the first audience answered is kept with the refusal, as a retried
    write's is. Dropped, the write after a change of address added a second member instead
    of moving the first, and an erasure under the new address completed with the member
    under the former one still subscribed."""
    old, new = "anna@voorbeeld.nl", "anna.nieuw@voorbeeld.nl"
    await _refused_on_the_second_audience(world, news_rt, old)
    sid = news_rt.keyring.subject_id(old)
    assert news_rt.store.external_id("news", sid) is not None
    world.shop.touch(old, email=new)
    await news_rt.engine.sync("shop")
    assert world.news.member(LISTS[0], old) is None  # moved, not added beside it
    view = await DsrService(news_rt).erase(new)
    assert view.status == "completed"
    left = [list_id for list_id in LISTS for a in (old, new) if world.news.member(list_id, a)]
    assert left == []


def _domain_as_given(email: str) -> str:
    """How an address was identified before its domain was read in punycode."""
    return unicodedata.normalize("NFC", email.strip().lower())


async def test_a_customer_synced_before_domains_were_read_in_punycode_is_one_person(
    world: World, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before domains were read in punycode knows a customer whose domain the
    shop holds in Unicode under that form's subject id. The next sync writes nothing again
    and leaves the newsletter member subscribed; the erasure, typed in punycode, reaches
    every system."""
    email = "jan@bücher-canary.de"
    world.shop.add_person(email, "Jan", "Jansen", "06 12345678", marketing_opt_in="yes")
    with monkeypatch.context() as before:
        before.setattr("connector.pagetake.normalise_email", _domain_as_given)
        before.setattr("connector.moveplan.normalise_email", _domain_as_given)
        (first,) = await rt.engine.sync("shop")
    assert not first.failed, first.errors
    assert world.crm.holds(email) and world.news.holds(email) and world.deals.holds(email)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    assert all(d.written == 0 for d in report.destinations.values()), report.as_dict()
    assert (world.crm.contact_count(), world.news.member_count()) == (1, len(LISTS))
    members = [world.news.member(list_id, email) for list_id in LISTS]
    assert all(m is not None and m["status"] == "subscribed" for m in members)
    view = await DsrService(rt).erase("jan@xn--bcher-canary-dlb.de")
    assert view.status == "completed", view
    assert not world.crm.holds(email) and not world.news.holds(email)
    assert not world.deals.holds(email) and not world.shop.holds(email)


# -- minimisation: each path reads what it needs -----------------------------------------------


def _calls(sandbox: Any) -> list[str]:
    return [f"{e.method} {e.path}" for e in sandbox.log.entries]


async def _synced_with_the_shop_s_orders(world: World, rt: Runtime) -> str:
    """One opted-in customer synced to HubSpot, Mailchimp and Pipedrive, with an order and
    a note on it in the shop, and every sandbox's log cleared; their address."""
    world.shop.seed_synthetic(1, seed=61)  # customer 1 opted in (odd ids do)
    (report,) = await rt.engine.sync("shop")
    assert not report.failed, report.errors
    email = str(world.shop.store.get(1)["email"])
    assert world.crm.holds(email) and world.news.holds(email) and world.deals.holds(email)
    order = world.shop.add_order(1, billing={"email": email})
    world.shop.add_order_note(order, "klant klaagde over bezorger")
    return email


def _clear_logs(world: World) -> None:
    for name in ("shop", "shopify", "crm", "news", "deals"):
        getattr(world, name).log.clear()


async def test_a_correction_reads_no_orders_nor_what_the_crms_keep_beside_the_person(
    world: World, rt: Runtime
) -> None:
    """A correction needs each system's record of the person (ids, whether it is live, the
    mapped fields), not its access copy: no shop order or note on it (read three times
    over), no HubSpot property list, associated note or subscription, no Pipedrive note,
    deal or activity."""
    email = await _synced_with_the_shop_s_orders(world, rt)
    contact = world.crm.record_for(email)
    assert contact is not None
    world.crm.add_associated(str(contact["id"]), "notes", hs_note_body="belde boos over factuur")
    _clear_logs(world)
    view = await DsrService(rt).rectify(email, {"city": "Utrecht"})
    assert view.status == "completed", view
    assert world.crm.record_for(email)["properties"]["city"] == "Utrecht"  # type: ignore[index]
    assert world.shop.record_for(email)["billing"]["city"] == "Utrecht"  # type: ignore[index]
    beyond = [call for call in _calls(world.shop) if "/orders" in call] + [
        call
        for call in _calls(world.crm) + _calls(world.deals)
        if "/associations/" in call
        or "communication-preferences" in call
        or call == "GET /crm/v3/properties/contacts"
        or call in ("GET /api/v1/notes", "GET /api/v2/deals", "GET /api/v2/activities")
    ]
    assert beyond == [], beyond


async def test_a_correction_of_a_first_name_reads_no_newsletter_activity_or_notes(
    world: World, rt: Runtime
) -> None:
    """Correcting a first name at Mailchimp is a read of the member's status and a PATCH of
    FNAME: not its activity feed (every open and click) nor the staff's notes on it."""
    email = await _synced_with_the_shop_s_orders(world, rt)
    world.news.add_activity(email, "open", campaign_id="c1")
    world.news.add_note(email, "klaagt vaak")
    _clear_logs(world)
    view = await DsrService(rt).rectify(email, {"first_name": "Pieternel"})
    assert view.status == "completed", view
    assert world.news.member(LISTS[0], email)["merge_fields"]["FNAME"] == "Pieternel"  # type: ignore[index]
    beyond = [c for c in _calls(world.news) if c.endswith(("/activity-feed", "/notes"))]
    assert beyond == [], beyond


async def test_an_erasure_reads_no_newsletter_activity_nor_order_notes_to_delete_them(
    world: World, rt: Runtime
) -> None:
    """The erasure's snapshot keeps each system's ids and whether it holds the person, and
    its check reads whether anyone is left: neither needs the member's activity or the
    staff's notes, which ``delete-permanent`` deletes unread, nor an order's notes, which
    the shop's erasure reads only to delete them. The receipts say what they said."""
    email = await _synced_with_the_shop_s_orders(world, rt)
    world.news.add_activity(email, "click", campaign_id="c1", url="https://x.example/")
    world.news.add_note(email, "klaagt vaak")
    _clear_logs(world)
    view = await DsrService(rt).erase(email)
    assert view.status == "completed", view
    assert not world.news.holds(email) and not world.shop.holds(email)
    member = subscriber_hash(email)
    beyond = [
        call
        for call in _calls(world.news)
        if call.startswith("GET") and member in call and call.endswith(("/activity-feed", "/notes"))
    ]
    assert beyond == [], beyond
    # The order's notes are read once, by the erasure that deletes them.
    notes = [c for c in _calls(world.shop) if c.startswith("GET") and c.endswith("/notes")]
    assert len(notes) == 1, notes
    order_reads = [
        e.query.get("_fields")
        for e in world.shop.log.entries
        if e.method == "GET" and e.path.endswith("/orders")
    ]
    assert "id,customer_id,billing.email" in order_reads


def _with_crm_flow(config: Path) -> Path:
    """The shared config with a flow from HubSpot to Pipedrive: HubSpot as a source."""
    config.write_text(
        config.read_text() + '\n[[flows]]\nname = "crm"\nsource = "crm"\ndestinations = ["deals"]\n'
    )
    return config


@pytest.fixture
async def crm_rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    async with open_runtime(
        _with_crm_flow(write_config(tmp_path, world)),
        transports=world.transports(),
        sleep=clock.sleep,
        clock=clock.clock,
    ) as runtime:
        yield runtime


def _contact_with_an_address(crm: HubSpotSandbox) -> str:
    return crm.add_person(
        "lotte@example.nl", "Lotte", "Visser", "0612345678", address="Dorpsstraat 1", zip="1234 AB"
    )


async def test_a_pull_from_hubspot_asks_only_for_the_properties_its_mapping_reads(
    world: World, crm_rt: Runtime
) -> None:
    """What no mapping reads is not asked for (connector/systems.py): HubSpot as a source
    is asked for the configured properties mappings/hubspot.toml reads, not the street
    address and postcode it does not, which used to arrive and be counted withheld."""
    mapping = crm_rt.systems["crm"].mapping
    read = {f.path for f in mapping.fields.values() if f.inbound} | set(mapping.ignore)
    _contact_with_an_address(world.crm)
    (report,) = await crm_rt.engine.sync("crm")
    assert not report.failed, report.errors
    asked = {
        name
        for e in world.crm.log.entries
        if e.method == "GET" and e.path == "/crm/v3/objects/contacts"
        for name in e.query.get("properties", "").split(",")
        if name
    }
    assert asked and asked <= read, sorted(asked - read)
    assert report.asked_fields is not None and set(report.asked_fields) == asked
    assert not {"address", "zip"} & set(report.withheld_fields)


async def test_a_flow_from_hubspot_reads_only_the_contacts_changed_since_its_last_run(
    world: World, crm_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HubSpot as a flow's source lists its contacts once; the next runs search for what
    changed since (README, Known limits: a CRM as a flow's source). A run with nothing
    changed lists none and sends nothing; a contact changed in HubSpot reaches Pipedrive;
    a run cut short (HubSpot gone after its first page) loses none of the changes."""
    emails = [f"klant{n}@example.nl" for n in range(150)]
    # Each contact made in a millisecond of its own, a second ago. Made as fast as the
    # machine goes, a hundred could share the latest one, which a search starts at and reads
    # again at every run (by id when a page is all of it): the calls below were then more.
    first_ms = time.time_ns() // 1_000_000 - 1_000
    made = iter(range(first_ms, first_ms + len(emails)))

    def own_millisecond() -> str:
        seconds, millis = divmod(next(made), 1000)
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=millis * 1000)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    with monkeypatch.context() as patch:
        patch.setattr(hubspot_store, "_now_iso", own_millisecond)
        ids = [world.crm.add_person(email, "Klant", f"K{n}") for n, email in enumerate(emails)]
    (first,) = await crm_rt.engine.sync("crm")
    assert not first.failed and first.complete, first.errors
    assert all(world.deals.holds(email) for email in emails)
    world.crm.log.entries.clear()
    (quiet,) = await crm_rt.engine.sync("crm")
    assert not quiet.failed and quiet.complete, quiet.errors
    assert [e.method for e in world.crm.log.entries] == ["POST"]  # one search, no list
    assert quiet.pulled < len(emails)
    contact = world.crm.store.live(ids[7])
    assert contact is not None
    world.crm.store.update(contact, {"firstname": "Karin"})
    (changed,) = await crm_rt.engine.sync("crm")
    assert not changed.failed, changed.errors
    held = world.deals.record_for(emails[7])
    assert held is not None and held["first_name"] == "Karin"
    for contact_id in ids:
        contact = world.crm.store.live(contact_id)
        assert contact is not None
        world.crm.store.update(contact, {"lastname": "Nieuw"})
    # HubSpot refuses every second call from now: the run stops after its first page.
    world.crm.faults._calls, world.crm.faults.fail_every = 0, 2
    world.crm.faults.fail_status = 400
    (cut,) = await crm_rt.engine.sync("crm")
    assert not cut.complete and cut.pulled == 100
    world.crm.faults.fail_every = 0
    (resumed,) = await crm_rt.engine.sync("crm")
    assert resumed.complete and not resumed.failed, resumed.errors
    held_now = [world.deals.record_for(email) for email in emails]
    assert all(person and person["last_name"] == "Nieuw" for person in held_now)


async def test_a_targeted_sync_from_hubspot_reads_only_the_properties_its_mapping_reads(
    world: World, crm_rt: Runtime
) -> None:
    """A webhook's (or ``resync --email``'s) sync of one contact reads it as a pull does:
    the street address and postcode no flow sends anywhere stay in HubSpot."""
    contact_id = _contact_with_an_address(world.crm)
    (report,) = await sync_subjects(crm_rt, "crm", [(contact_id, None)])
    assert not report.failed, report.errors
    assert report.pulled == 1
    assert not {"address", "zip"} & set(report.withheld_fields)
