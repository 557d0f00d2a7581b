"""`dsr rectify --set FIELD=`: a correction that empties a field ("remove my phone number")."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.adapter import OutboundRecord, UpsertResult
from connector.crypto import outbox_context
from connector.dsr import DsrService, DsrUsageError
from connector.dsr_input import checked_fields
from connector.runtime import Runtime, open_runtime
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    CANARY_PHONE_E164,
    MASTER_KEY,
    REPO_MAPPINGS,
    VirtualTime,
)

OTHER_EMAIL = "otto.ander@voorbeeld.nl"
OTHER_PHONE_E164 = "+31611111111"


async def _seeded(shop: WooCommerceSandbox, rt: Runtime) -> None:
    """The canary customer, with a phone, and another customer, synced to the CRM."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    shop.add_person(OTHER_EMAIL, "Otto", "Ander", "0611111111", city="Delft")
    (report,) = await rt.engine.sync()
    assert not report.failed, report.errors


def _crm(crm: HubSpotSandbox, email: str = CANARY_EMAIL) -> dict[str, Any]:
    record = crm.record_for(email)
    assert record is not None
    properties: dict[str, Any] = record["properties"]
    return properties


def _billing(shop: WooCommerceSandbox, email: str = CANARY_EMAIL) -> dict[str, Any]:
    record = shop.record_for(email)
    assert record is not None
    billing: dict[str, Any] = record["billing"]
    return billing


def _steps(service: DsrService, request_id: str) -> dict[str, dict[str, Any]]:
    text = service.receipt(request_id)
    assert text is not None
    assert CANARY_PHONE_E164 not in text and CANARY_NAME not in text
    return {s["system"]: s for s in json.loads(text)["receipt"]["systems"]}


async def test_an_empty_value_empties_the_phone_in_hubspot_and_woocommerce(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """`--set phone=`: the number goes from the contact and from the shop's billing
    address; the other customer keeps theirs, and the receipt and audit trail name the
    field emptied, never a value."""
    await _seeded(shop, rt)
    assert _crm(crm)["phone"] == CANARY_PHONE_E164
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"phone": ""})
    assert view.status == "completed", view
    assert _crm(crm)["phone"] == ""
    assert _billing(shop)["phone"] == ""
    assert _crm(crm, OTHER_EMAIL)["phone"] == OTHER_PHONE_E164
    assert _billing(shop)["city"] == "Utrecht" and _crm(crm)["firstname"] == CANARY_NAME
    steps = _steps(service, view.id)
    for name in ("crm", "shop"):
        assert steps[name]["status"] == "done"
        assert (steps[name]["fields"], steps[name]["emptied"]) == (["phone"], ["phone"])
    (received,) = [e for e in audit.entries(rt.store) if e.kind == "dsr.received"]
    assert (received.data["fields"], received.data["emptied"]) == (["phone"], ["phone"])
    # The next sync (the shop holds the correction now) puts no number back.
    (report,) = await rt.engine.sync()
    assert not report.failed, report.errors
    assert _crm(crm)["phone"] == ""


async def test_a_correction_sets_some_fields_and_empties_others_in_one_write(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    await _seeded(shop, rt)
    crm.log.clear()
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"city": "Zeist", "phone": "   "})
    assert view.status == "completed", view
    assert (_crm(crm)["city"], _crm(crm)["phone"]) == ("Zeist", "")
    assert (_billing(shop)["city"], _billing(shop)["phone"]) == ("Zeist", "")
    writes = [e for e in crm.log.writes() if e.path.endswith("/batch/update")]
    assert len(writes) == 1 and {"city", "phone"} <= writes[0].property_names
    steps = _steps(service, view.id)
    assert (steps["crm"]["fields"], steps["crm"]["emptied"]) == (["city", "phone"], ["phone"])


async def test_an_emptied_country_gives_no_home_country_to_a_phone_set_with_it(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The country emptied, a phone without a country code given with it is read as the
    mappings read one (their default region), not in a country the correction removed."""
    await _seeded(shop, rt)
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"country": "", "phone": "0612312312"})
    assert view.status == "completed", view
    assert (_crm(crm)["country"], _crm(crm)["phone"]) == ("", "+31612312312")
    assert _billing(shop)["country"] == ""


async def test_a_payload_queued_with_the_old_phone_does_not_bring_it_back(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CRM was down at a sync: a payload with the person's phone waits for it. The
    correction that empties the phone takes it out of that payload and names it to empty;
    its delivery carries the other change and writes no number."""
    await _seeded(shop, rt)
    shop.touch(CANARY_EMAIL, first_name="Zwaan")
    crm.faults.down = True
    await rt.engine.sync()
    crm.faults.down = False
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"phone": ""})
    assert view.status == "completed", view
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    (number,) = rt.store.subject_numbers([sid]).values()
    (sealed,) = rt.store.db.execute(
        "SELECT payload FROM outbox WHERE system='crm' AND subject_no=?", (number,)
    ).fetchone()
    envelope = rt.keyring.open_json(sealed, outbox_context("crm"))
    assert "phone" not in envelope["fields"] and envelope["fields"]["firstname"] == "Zwaan"
    assert envelope["clear"] == ["phone"]
    sent: list[OutboundRecord] = []
    adapter: Any = rt.systems["crm"].adapter
    real_upsert = adapter.upsert

    async def upsert(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        sent.extend(records)
        result: list[UpsertResult] = await real_upsert(records)
        return result

    adapter.upsert = upsert
    (report,) = await rt.engine.sync()
    assert not report.failed, report.errors
    ours = [r for r in sent if r.email == CANARY_EMAIL]
    assert ours and ours[0].clear == frozenset({"phone"})
    assert not any(r.fields.get("phone") for r in ours)
    assert (_crm(crm)["firstname"], _crm(crm)["phone"]) == ("Zwaan", "")


async def test_a_set_field_leaves_the_clear_of_a_queued_payload(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop's phone was removed and the sync queued its emptying while the CRM was
    down; the person then gives a new number: the payload writes it instead."""
    await _seeded(shop, rt)
    shop.touch(CANARY_EMAIL, billing__phone="")
    crm.faults.down = True
    await rt.engine.sync()
    crm.faults.down = False
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"phone": "0612312312"})
    assert view.status == "completed", view
    (sealed,) = rt.store.db.execute("SELECT payload FROM outbox WHERE system='crm'").fetchone()
    envelope = rt.keyring.open_json(sealed, outbox_context("crm"))
    assert envelope["fields"]["phone"] == "+31612312312" and "clear" not in envelope
    await rt.engine.sync()
    assert _crm(crm)["phone"] == "+31612312312"


async def test_a_consent_is_not_emptied_by_a_correction(
    shop: WooCommerceSandbox, rt: Runtime
) -> None:
    await _seeded(shop, rt)
    with pytest.raises(DsrUsageError, match="withdrawn at the source, in shop"):
        await DsrService(rt).rectify(CANARY_EMAIL, {"marketing_consent": ""})
    # The e-mail is still refused as before, empty or not.
    with pytest.raises(DsrUsageError, match="identifies the subject"):
        await DsrService(rt).rectify(CANARY_EMAIL, {"email": ""})


def test_checked_fields_keeps_an_empty_value_empty(rt: Runtime) -> None:
    """Blanks alone are an empty value, checked against no system's conversion (which
    refused it as not valid for each)."""
    assert checked_fields(rt.config.mappings, {"phone": " ", "city": "Zeist"}) == {
        "phone": "",
        "city": "Zeist",
    }
    with pytest.raises(DsrUsageError, match="no configured system is written"):
        checked_fields(rt.config.mappings, {"date_of_birth": ""})


# -- the command line ------------------------------------------------------------------------


def test_cli_rectify_set_phone_empty_empties_it(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    code, out, err = cli(
        "rectify", "--email", CANARY_EMAIL, "--set", "phone=", "--json", capsys=capsys
    )
    assert code == 0 and json.loads(out)["status"] == "completed", err
    assert _billing(shop)["phone"] == "" and _billing(shop)["city"] == "Utrecht"


def test_cli_refuses_to_empty_a_consent_saying_where_it_is_withdrawn(
    shop: WooCommerceSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    code, _, err = cli(
        "rectify", "--email", CANARY_EMAIL, "--set", "marketing_consent=", capsys=capsys
    )
    assert code == 2
    assert "marketing_consent" in err and "withdrawn at the source" in err and "shop" in err
    assert CANARY_EMAIL not in err


def test_cli_help_says_an_empty_value_empties_the_field(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    from connector.cli import main

    with pytest.raises(SystemExit):
        main(["-c", str(config_path), "dsr", "rectify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "`--set phone=`) empties the field" in out


# -- Pipedrive -------------------------------------------------------------------------------


def _shop_config(tmp_path: Path, systems: str, destinations: Sequence[str]) -> Path:
    """A config of the shop feeding the ``systems`` blocks given, in one flow."""
    (tmp_path / "master.key").write_text(MASTER_KEY)
    (tmp_path / "master.key").chmod(0o600)
    path = tmp_path / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "state/klantsync.db"
[keys]
source = "file:master.key"
[sync]
retry_base_seconds = 0

[systems.shop]
adapter = "woocommerce"
base_url = "https://shop.test"
mapping = "{REPO_MAPPINGS / "woocommerce.toml"}"
credentials = {{ consumer_key = "env:T_WC_KEY", consumer_secret = "env:T_WC_SECRET" }}
{systems}
[[flows]]
name = "shop"
source = "shop"
destinations = {json.dumps(list(destinations))}
"""
    )
    return path


@contextlib.asynccontextmanager
async def _runtime(path: Path, apps: dict[str, Any]) -> AsyncIterator[Runtime]:
    """The config at ``path`` opened against the sandboxes' ``apps``, on virtual time."""
    transports = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}
    time = VirtualTime()
    async with open_runtime(
        path, transports=transports, sleep=time.sleep, clock=time.clock
    ) as runtime:
        yield runtime


@pytest.fixture
async def with_pipedrive(
    shop: WooCommerceSandbox, tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[tuple[Runtime, PipedriveSandbox]]:
    """The shop feeding Pipedrive alone."""
    deals = PipedriveSandbox(rate_limit=None, search_rate_limit=None)
    (tmp_path / "deals.token").write_text(deals.credentials()["api_token"])
    deals_block = f"""
[systems.deals]
adapter = "pipedrive"
base_url = "https://klant.pipedrive.test/api/v2"
mapping = "{REPO_MAPPINGS / "pipedrive.toml"}"
credentials = {{ api_token = "file:deals.token" }}
"""
    path = _shop_config(tmp_path, deals_block, ["deals"])
    async with _runtime(path, {"shop": shop.app(), "deals": deals.app()}) as runtime:
        yield runtime, deals


async def test_an_empty_value_removes_the_connector_s_phone_entry_in_pipedrive(
    shop: WooCommerceSandbox, with_pipedrive: tuple[Runtime, PipedriveSandbox]
) -> None:
    rt, deals = with_pipedrive
    await _seeded(shop, rt)
    person = deals.record_for(CANARY_EMAIL)
    assert person is not None
    assert [p["value"] for p in person["phones"]] == [CANARY_PHONE_E164]
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"phone": ""})
    assert view.status == "completed", view
    assert view.system("deals").status == "done"
    person = deals.record_for(CANARY_EMAIL)
    assert person is not None
    assert CANARY_PHONE_E164 not in [p.get("value") for p in person.get("phones") or []]
    assert person["name"] == f"{CANARY_NAME} Klant"
    other = deals.record_for(OTHER_EMAIL)
    assert other is not None and [p["value"] for p in other["phones"]] == [OTHER_PHONE_E164]


# -- a field a system cannot hold empty ------------------------------------------------------

LIST = "a1b2c3d4e5"


@pytest.fixture
async def with_mailchimp(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[tuple[Runtime, MailchimpSandbox]]:
    """The shop feeding HubSpot and a Mailchimp audience."""
    news = MailchimpSandbox(list_ids=(LIST,))
    (tmp_path / "news.key").write_text(news.credentials()["api_key"])
    blocks = f"""
[systems.crm]
adapter = "hubspot"
base_url = "https://crm.test"
mapping = "{REPO_MAPPINGS / "hubspot.toml"}"
credentials = {{ token = "env:T_HS_TOKEN" }}

[systems.news]
adapter = "mailchimp"
base_url = "https://us21.api.mailchimp.test/3.0"
mapping = "{REPO_MAPPINGS / "mailchimp.toml"}"
list_ids = ["{LIST}"]
credentials = {{ api_key = "file:news.key" }}
"""
    path = _shop_config(tmp_path, blocks, ["crm", "news"])
    apps = {"shop": shop.app(), "crm": crm.app(), "news": news.app()}
    async with _runtime(path, apps) as runtime:
        yield runtime, news


async def test_a_field_a_system_cannot_hold_empty_is_said_kept_there_and_emptied_elsewhere(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    with_mailchimp: tuple[Runtime, MailchimpSandbox],
) -> None:
    """The audience's owner made the first name required: Mailchimp keeps it (an audience
    cannot hold it empty), and empties the last name. The receipt's step says so, by name
    alone: `kept` for the first name there and `emptied` for the last name, where the shop
    and HubSpot empty both; its detail (what `dsr show` prints) says it in words. The
    request completes."""
    rt, news = with_mailchimp
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, marketing_opt_in="yes")
    (report,) = await rt.engine.sync()
    assert not report.failed, report.errors
    assert news.holds(CANARY_EMAIL)
    news.require_merge_field(LIST, "FNAME")
    service = DsrService(rt)
    view = await service.rectify(CANARY_EMAIL, {"first_name": "", "last_name": ""})
    assert view.status == "completed", view
    member = news.member(LIST, CANARY_EMAIL)
    assert member is not None
    assert (member["merge_fields"]["FNAME"], member["merge_fields"]["LNAME"]) == (CANARY_NAME, "")
    assert (_crm(crm)["firstname"], _crm(crm)["lastname"]) == ("", "")
    steps = _steps(service, view.id)
    both = ["first_name", "last_name"]
    for name in ("crm", "shop"):
        assert steps[name]["status"] == "done"
        assert (steps[name]["emptied"], "kept" in steps[name]) == (both, False)
    assert steps["news"]["status"] == "done"
    assert (steps["news"]["emptied"], steps["news"]["kept"]) == (["last_name"], ["first_name"])
    said = "kept first_name as held, not emptied: the system cannot hold it empty"
    assert said in steps["news"]["detail"]
    shown_view = service.get(view.id)
    assert shown_view is not None
    shown = shown_view.system("news")
    assert shown.detail is not None and said in shown.detail
