"""Access requests: the bundle's content, both languages, Art. 15(1) facts, escaping, isolation."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.access import BUNDLE_FILES, art15_facts
from connector.config import load_config
from connector.crypto import BUNDLE_PATH_CONTEXT
from connector.dsr import NO_LONGER_CONFIGURED, DsrError, DsrService, DsrUsageError
from connector.runtime import Runtime, open_runtime
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE_E164,
    RuntimeFactory,
    VirtualTime,
    example_config,
)
from tests.connector.test_dsr import archive_in_crm, without_crm

OTHER_EMAIL = "otto.ander@voorbeeld.nl"
OTHER_NAME = "Ottokarander"
OTHER_PHONE = "+31611112222"


async def seed_both(shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime) -> None:
    """The canary and a second person in the shop (with orders), synced to the CRM."""
    canary = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321", city="Utrecht")
    shop.add_order(canary)
    other = shop.add_person(OTHER_EMAIL, OTHER_NAME, "Ander", OTHER_PHONE, city="Delft")
    shop.add_order(other)
    await rt.engine.sync()
    # A value only the CRM holds, so the bundle shows what the CRM itself has.
    crm.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", company="Canarybedrijf")


def read_all(directory: Path) -> str:
    return "\n".join((directory / name).read_text(encoding="utf-8") for name in BUNDLE_FILES)


async def test_bundle_holds_both_systems_data_and_nothing_of_another_subject(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """data.json has one key per system with the seeded values; the other person is absent."""
    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    view = await DsrService(rt).access(CANARY_EMAIL, out)
    assert view.status == "completed"
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert set(data["systems"]) == {"crm", "shop"}
    shop_text = json.dumps(data["systems"]["shop"])
    crm_text = json.dumps(data["systems"]["crm"])
    for value in (CANARY_EMAIL, CANARY_NAME, "Utrecht"):
        assert value in shop_text and value in crm_text
    assert "Canarybedrijf" in crm_text
    assert any(r.get("type") == "order" for r in data["systems"]["shop"]["records"])
    everything = read_all(out)
    for value in (OTHER_EMAIL, OTHER_NAME, OTHER_PHONE, "Delft"):
        assert value not in everything, value
    sid = rt.keyring.subject_id(CANARY_EMAIL)
    assert data["subject_id"] == sid
    assert set(data["connector"]["identities"]) == {"crm", "shop"}
    assert data["connector"]["requests"][0]["id"] == view.id
    assert CANARY_PHONE_E164 in shop_text or "87654321" in shop_text


async def test_reports_in_both_languages_state_the_art15_facts(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Dutch and English reports name purposes, categories, recipients, retention and rights."""
    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    await DsrService(rt).access(CANARY_EMAIL, out)
    en = (out / "report.en.md").read_text(encoding="utf-8")
    nl = (out / "report.nl.md").read_text(encoding="utf-8")
    pages = [(out / f"report.{lang}.html").read_text(encoding="utf-8") for lang in ("en", "nl")]
    for text in (en, nl, *pages):
        assert "Autoriteit Persoonsgegevens" in text
        assert "Customer service: call back about orders" in text  # a mapping's purpose
        assert "crm (hubspot" in text and "shop (woocommerce" in text  # recipients, source
        assert CANARY_NAME in text
    assert "only place where klantsync writes your personal data in clear" in en
    assert "enige plek waar klantsync uw persoonsgegevens onversleuteld" in nl
    assert "Contact details" in en and "Contactgegevens" in nl
    assert "As long as needed for the purposes" in en and "Zolang nodig" in nl
    for right in ("Rectification", "Erasure", "Restriction", "Objection"):
        assert right in en
    for right in ("Rectificatie", "Wissing", "Beperking", "Bezwaar"):
        assert right in nl
    assert '<html lang="nl">' in (out / "report.nl.html").read_text()


async def test_html_and_markdown_escape_what_systems_hold(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A name holding markup is shown as text in HTML and cannot break a Markdown table."""
    shop.add_person(CANARY_EMAIL, "<script>alert(1)</script>", "A|B", "")
    out = tmp_path / "bundle"
    await DsrService(rt).access(CANARY_EMAIL, out)
    page = (out / "report.en.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    markdown = (out / "report.en.md").read_text()
    assert "<script>" not in markdown and "A\\|B" in markdown


async def test_access_with_a_system_down_writes_nothing_until_retried(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An incomplete bundle is never written; the retry writes the whole one."""
    await seed_both(shop, crm, rt)
    crm.faults.down = True
    out = tmp_path / "bundle"
    service = DsrService(rt)
    view = await service.access(CANARY_EMAIL, out)
    assert view.is_open and view.system("crm").status == "failed"
    assert not (out / "data.json").exists()
    crm.faults.down = False
    view = await service.retry(view.id)
    assert view.status == "completed" and (out / "data.json").exists()
    assert (out / "data.json").stat().st_mode & 0o777 == 0o600
    ((sealed,),) = rt.store.db.execute("SELECT path FROM bundles").fetchall()
    assert rt.keyring.open(sealed, BUNDLE_PATH_CONTEXT) == str(out.resolve()).encode()


async def test_a_bundle_closes_its_own_folder_and_leaves_a_shared_one_s_mode(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A folder of its own is made 0700; an operator's folder that holds other things
    (`--out .`) keeps its mode, the bundle's files being 0600 either way."""
    await seed_both(shop, crm, rt)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "notes.txt").write_text("the operator's own")
    service = DsrService(rt)
    assert (await service.access(CANARY_EMAIL, shared)).status == "completed"
    assert (await service.access(OTHER_EMAIL, tmp_path / "own")).status == "completed"
    assert shared.stat().st_mode & 0o777 == 0o755
    assert (shared / "data.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "own").stat().st_mode & 0o777 == 0o700


async def test_a_bundle_replaces_a_file_or_a_symlink_at_its_names(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A `data.json` already in the --out folder (an earlier export made readable to hand
    over) kept its 0644, the person's data then in it; a `report.en.html` there that was a
    symlink was followed, the data written into the file it led to. Each bundle file is
    now written under a temporary name and renamed over what was there."""
    await seed_both(shop, crm, rt)
    shared = tmp_path / "exports"
    shared.mkdir()
    earlier = shared / "data.json"
    earlier.write_text("{}")
    earlier.chmod(0o644)
    published = tmp_path / "www" / "index.html"
    published.parent.mkdir()
    published.write_text("<p>public page</p>")
    (shared / "report.en.html").symlink_to(published)
    assert (await DsrService(rt).access(CANARY_EMAIL, shared)).status == "completed"
    assert CANARY_EMAIL in earlier.read_text()
    assert earlier.stat().st_mode & 0o777 == 0o600
    assert CANARY_EMAIL not in published.read_text()
    report = shared / "report.en.html"
    assert not report.is_symlink() and report.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in shared.iterdir()) == sorted(BUNDLE_FILES)  # no temporaries


async def test_a_relative_out_folder_is_where_a_later_retry_writes_the_bundle(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dsr access --out bundle` in the operator's folder, the CRM down: the retry that
    writes the bundle runs elsewhere (the daemon, `dsr retry` from another shell), and
    writes it where the operator asked, not under its own working folder."""
    await seed_both(shop, crm, rt)
    operator, elsewhere = tmp_path / "operator", tmp_path / "daemon"
    operator.mkdir()
    elsewhere.mkdir()
    crm.faults.down = True
    monkeypatch.chdir(operator)
    service = DsrService(rt)
    view = await service.access(CANARY_EMAIL, Path("bundle"))
    assert view.is_open
    crm.faults.down = False
    monkeypatch.chdir(elsewhere)
    assert (await service.retry(view.id)).status == "completed"
    assert (operator / "bundle" / "data.json").is_file()
    assert list(elsewhere.iterdir()) == []


async def test_access_asked_again_while_open_resumes_it_and_writes_one_bundle(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Asked again to the same folder while the request is open (an operator running a
    command that died once more): the open request goes on, one request, one bundle. To
    another folder it is a request of its own."""
    await seed_both(shop, crm, rt)
    crm.faults.down = True
    out = tmp_path / "bundle"
    service = DsrService(rt)
    first = await service.access(CANARY_EMAIL, out)
    assert first.is_open
    crm.faults.down = False
    again = await service.access(CANARY_EMAIL, tmp_path / "." / "bundle")
    assert again.id == first.id and again.status == "completed"
    assert [v.id for v in service.list()] == [first.id]
    elsewhere = await service.access(CANARY_EMAIL, tmp_path / "other")
    assert elsewhere.id != first.id and elsewhere.status == "completed"


async def test_retention_is_read_from_flows_when_the_config_states_it(rt: Runtime) -> None:
    """A flow with a retention statement replaces the generic one for that flow."""
    flow = SimpleNamespace(name="shop-to-crm", source="shop", retention="2 years after last order")
    config = dataclasses.replace(rt.config, flows=[flow])
    facts = art15_facts(config)
    assert facts.retention == [("shop-to-crm", "2 years after last order")]
    assert facts.sources == [("shop-to-crm", "shop", "woocommerce")]
    assert {"contact", "identity", "address"} <= set(facts.categories)
    assert [name for name, _, _ in facts.recipients] == ["shop", "crm"]


async def test_an_out_folder_that_cannot_be_made_is_refused_before_any_system_is_asked(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A path under a regular file: a usage error, no request opened, no call made."""
    await seed_both(shop, crm, rt)
    (tmp_path / "a-file").write_text("x")
    calls = len(crm.log.entries)
    with pytest.raises(DsrUsageError, match="--out"):
        await DsrService(rt).access(CANARY_EMAIL, tmp_path / "a-file" / "bundle")
    assert DsrService(rt).list() == [] and len(crm.log.entries) == calls


async def test_a_bundle_that_cannot_be_written_does_not_stop_other_requests_retries(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """retry --all goes on past a request that fails, and says which one stays open."""
    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    out = tmp_path / "bundle"
    crm.faults.down = True
    access = await service.access(CANARY_EMAIL, out)
    erasure = await service.erase(OTHER_EMAIL)
    assert access.is_open and erasure.is_open
    out.rmdir()
    out.write_text("now a file")  # the bundle's folder can no longer be made
    crm.faults.down = False
    assert await service.retry_open() == 1
    assert service.get(erasure.id).status == "completed"  # type: ignore[union-attr]
    assert service.get(access.id).is_open  # type: ignore[union-attr]
    with pytest.raises(DsrError, match="cannot be written"):
        await service.retry(access.id)


async def test_a_bundle_a_killed_run_left_half_written_goes_with_the_erasure(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An access run died after writing its bundle's first file, before the bundle was
    recorded: the person's erasure then completed and left the file, their data in clear.
    The bundle is now recorded before a file is written; the erasure deletes what is there,
    a file caught half written under its temporary name too."""
    import connector.access as access_module

    class Killed(BaseException):
        pass

    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    real = access_module.write_private
    written: list[str] = []

    def dies_at_the_second_file(path: Path, data: bytes, **kwargs: object) -> None:
        if written:
            (path.parent / f".{path.name}.abc123").write_bytes(data[:10])  # caught mid-write
            raise Killed
        written.append(path.name)
        real(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(access_module, "write_private", dies_at_the_second_file)
        with pytest.raises(Killed):
            await DsrService(rt).access(CANARY_EMAIL, out)
    assert CANARY_EMAIL in (out / "data.json").read_text()
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    assert not out.exists() or list(out.iterdir()) == []


async def test_an_access_run_the_person_s_erasure_completed_under_writes_no_bundle(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    open_rt: RuntimeFactory,
    tmp_path: Path,
) -> None:
    """The person's erasure, run by another process, completes while their access request
    reads the systems: what the access read of the shop is what the erasure deleted. The
    access writes no bundle (it would hold that in clear after the erasure's receipt said
    it was gone); it completes, and its receipt says why."""
    await seed_both(shop, crm, rt)
    adapter: Any = rt.systems["crm"].adapter
    real_find = adapter.find
    erased: list[str] = []

    async def find_while_another_process_erases(subject: Any) -> Any:
        if not erased:
            async with open_rt() as other:
                erasure = await DsrService(other).erase(CANARY_EMAIL)
            erased.append(erasure.status)
        return await real_find(subject)

    adapter.find = find_while_another_process_erases
    out = tmp_path / "bundle"
    service = DsrService(rt)
    view = await service.access(CANARY_EMAIL, out)
    assert erased == ["completed"] and view.status == "completed"
    assert not out.exists() or list(out.iterdir()) == []
    receipt = json.loads(service.receipt(view.id) or "")["receipt"]["connector"]
    assert receipt["bundle_files"] == [] and "no access bundle was written" in receipt["note"]


async def test_an_access_asked_in_the_second_an_earlier_erasure_completed_writes_its_bundle(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Times are kept to the second: an erasure completed before the access request was
    received, in the same second, is no erasure "while the request was open". The person,
    erased, signed up again and readmitted, gets their bundle."""
    import datetime as dt

    from connector.readmit import readmit

    await seed_both(shop, crm, rt)
    moment = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)
    service = DsrService(rt, now=lambda: moment)
    assert (await service.erase(CANARY_EMAIL)).status == "completed"
    readmit(rt, CANARY_EMAIL, "signed up again")
    shop.add_person(CANARY_EMAIL, "Zwanette", "Klant")
    await rt.engine.sync(full=True)
    view = await service.access(CANARY_EMAIL, tmp_path / "bundle")
    assert view.status == "completed"
    assert (tmp_path / "bundle" / "data.json").is_file()


async def test_an_erasure_deletes_a_bundle_recorded_before_bundles_said_whose(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Store schema 14 records whose a bundle is; rows from before it have no subject, and
    an erasure asked after the upgrade left such a bundle in clear while its receipt said
    the person's bundles were deleted. The bundle's own data.json names its subject."""
    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    assert (await service.access(CANARY_EMAIL, tmp_path / "canary")).status == "completed"
    assert (await service.access(OTHER_EMAIL, tmp_path / "other")).status == "completed"
    rt.store.db.execute("UPDATE bundles SET subject_id=NULL")  # as migration 14 left them
    assert (await service.erase(CANARY_EMAIL)).status == "completed"
    assert not (tmp_path / "canary").exists()
    assert (tmp_path / "other" / "data.json").exists()  # somebody else's: kept


async def test_the_bundle_tells_the_person_why_an_exempted_system_was_not_read(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """`dsr exempt` takes a reason the person is told (Art. 12(4)); for an access request
    the bundle is what they get. data.json carries the reason, and each report says under
    the data per system, in its language, that the system was not read and why: listed
    among the recipients with nothing said, the CRM passed for one holding nothing."""
    await seed_both(shop, crm, rt)
    crm.faults.down = True
    service = DsrService(rt)
    out = tmp_path / "bundle"
    view = await service.access(CANARY_EMAIL, out)
    reason = "Legal hold: the CRM is sealed for a court case <zaak|12>"
    service.exempt(view.id, "crm", reason)
    view = await service.retry(view.id)
    assert view.status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert data["exempt_systems"] == [{"system": "crm", "reason": reason}]
    assert "crm" not in data["systems"]
    en, nl = ((out / f"report.{lang}.md").read_text(encoding="utf-8") for lang in ("en", "nl"))
    assert "was not consulted for this request" in en and "niet geraadpleegd" in nl
    for text in (en, nl):
        assert "### crm (hubspot)" in text
        assert "court case \\<zaak\\|12\\>" in text  # escaped as other text is
    for lang in ("en", "nl"):
        page = (out / f"report.{lang}.html").read_text(encoding="utf-8")
        assert "<h3>crm (hubspot)</h3>" in page
        assert "court case &lt;zaak|12&gt;" in page and "<zaak" not in page


async def test_an_access_request_waits_for_a_recipient_taken_out_of_the_config_then_names_it(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: RuntimeFactory,
    config_path: Path,
    tmp_path: Path,
) -> None:
    """The person was synced to the CRM, which was then taken out of the config. Their copy
    would leave out a recipient that may still hold them: the request stays open, saying
    why, and writes nothing, as an erasure waits. Exempted with a reason, the bundle names
    the CRM as not read and why. It used to complete as if the shop were the only system."""
    async with open_rt() as rt:
        await seed_both(shop, crm, rt)
    without_crm(config_path)
    out = tmp_path / "bundle"
    async with open_rt() as rt:
        service = DsrService(rt)
        view = await service.access(CANARY_EMAIL, out)
        assert view.is_open and view.system("crm").detail == NO_LONGER_CONFIGURED
        assert view.system("shop").status == "pending"  # not read meanwhile
        assert not (out / "data.json").exists()
        reason = "switched off for good; the CRM's data was deleted with the account"
        service.exempt(view.id, "crm", reason)
        view = await service.retry(view.id)
    assert view.status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert data["exempt_systems"] == [{"system": "crm", "reason": reason}]
    en = (out / "report.en.md").read_text(encoding="utf-8")
    assert "### crm\n" in en and "was not consulted for this request" in en


async def test_an_access_request_waits_for_a_system_it_read_before_it_left_the_config(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: RuntimeFactory,
    config_path: Path,
    tmp_path: Path,
) -> None:
    """The first attempt read the CRM (its part done) while the shop was down; the CRM was
    then taken out of the config. Records are not kept between attempts, so the retry wrote
    a bundle from the shop alone, with a signed receipt saying the CRM was read: the copy
    passed for whole without what the CRM holds. The CRM's part is pending again, saying
    why, until it is configured again or exempted; then the bundle says it was not read."""
    async with open_rt() as rt:
        await seed_both(shop, crm, rt)
        shop.faults.down = True
        out = tmp_path / "bundle"
        view = await DsrService(rt).access(CANARY_EMAIL, out)
        assert view.is_open and view.system("crm").status == "done"
    without_crm(config_path)
    shop.faults.down = False
    async with open_rt() as rt:
        service = DsrService(rt)
        view = await service.retry(view.id)
        assert view.is_open and not (out / "data.json").exists()
        crm_part = view.system("crm")
        assert (crm_part.status, crm_part.detail) == ("pending", NO_LONGER_CONFIGURED)
        reason = "switched off for good; the CRM's data was deleted with the account"
        service.exempt(view.id, "crm", reason)
        view = await service.retry(view.id)
        receipt = json.loads(service.receipt(view.id) or "{}")["receipt"]
    assert view.status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert data["exempt_systems"] == [{"system": "crm", "reason": reason}]
    said = {s["system"]: s for s in receipt["systems"]}
    assert said["crm"]["status"] == "exempt" and "records" not in said["crm"]


def _refusing_the_schema(app: Any) -> Any:
    """HubSpot behind a private app without the schema scope: the property definitions
    answer 403 (MISSING_SCOPES), every contact route as before."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/crm/v3/properties/contacts":
            body = {
                "status": "error",
                "message": "missing scopes",
                "category": "MISSING_SCOPES",
                "correlationId": "00000000-0000-0000-0000-000000000000",
            }
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            return
        await app(scope, receive, send)

    return wrapped


async def test_a_hubspot_copy_of_the_configured_properties_only_says_it_is_partial(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    config_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the schema scope HubSpot refuses the property list and the copy holds the
    configured properties only (not the contact's lifecycle stage): the contact's record
    says so, the reports say it in their language, and a warning names the scope, not the
    person, as Shopify's ordersNotRead does for orders."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321")
    crm.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", lifecyclestage="salesqualifiedlead")
    clock = VirtualTime()
    transports = {
        "shop": httpx.ASGITransport(app=shop.app()),
        "crm": httpx.ASGITransport(app=_refusing_the_schema(crm.app())),
    }
    caplog.set_level(logging.WARNING)
    async with open_runtime(
        config_path, transports=transports, sleep=clock.sleep, clock=clock.clock
    ) as rt:
        out = tmp_path / "bundle"
        view = await DsrService(rt).access(CANARY_EMAIL, out)
    assert view.status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    (contact,) = data["systems"]["crm"]["records"]
    assert contact["properties"]["firstname"] == CANARY_NAME
    assert "lifecyclestage" not in contact["properties"]
    assert contact["propertiesNotRead"] == {"reason": "crm.schemas.contacts.read"}
    en, nl = ((out / f"report.{lang}.md").read_text(encoding="utf-8") for lang in ("en", "nl"))
    assert "this copy is partial" in en and "dit overzicht is onvolledig" in nl
    (warning,) = [r for r in caplog.records if "crm.schemas.contacts.read" in r.getMessage()]
    said = json.dumps(warning.__dict__, default=str)
    assert CANARY_EMAIL not in said and CANARY_NAME not in said


async def test_a_hubspot_contact_in_the_recycle_bin_is_explained_in_each_report_s_language(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A contact a HubSpot user deleted sits in the recycle bin, restorable for 90 days:
    the reports said only "archived: yes" ("ja"), where Pipedrive's bin is explained.
    data.json keeps HubSpot's ``archived: true``."""
    await seed_both(shop, crm, rt)
    archive_in_crm(crm, CANARY_EMAIL)
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    (contact,) = json.loads((out / "data.json").read_text())["systems"]["crm"]["records"]
    assert contact["archived"] is True
    for lang, words in (
        ("en", "in HubSpot's recycle bin: deleted there, but HubSpot can restore it within 90"),
        ("nl", "in de prullenbak van HubSpot: daar verwijderd, maar HubSpot kan het binnen 90"),
    ):
        for name in (f"report.{lang}.md", f"report.{lang}.html"):
            text = " ".join((out / name).read_text(encoding="utf-8").replace("\\", "").split())
            assert words in text.replace("&#x27;", "'"), name


def test_a_mailchimp_copy_cut_short_says_so_in_each_report_s_language(tmp_path: Path) -> None:
    """Mailchimp's activity is read up to a bound; a member with more carries
    ``activityNotRead``. Its reason was an English sentence the reports passed on as it
    was, so the Dutch report told the person in English. It is a code now, said in each
    report's language, as Shopify's and HubSpot's are."""
    from adapters.mailchimp.adapter import ACTIVITY_UNREAD, ACTIVITY_UNREAD_REASON
    from connector.access import Art15Facts, write_bundle

    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("news", "mailchimp", "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    member = {
        "email_address": "reader1@example.com",
        "status": "subscribed",
        "activity": [{"activity_type": "open", "created_at_timestamp": "2026-01-01T00:00:00Z"}],
        ACTIVITY_UNREAD: {"reason": ACTIVITY_UNREAD_REASON, "eventsListed": 10000},
    }
    write_bundle(
        tmp_path / "bundle",
        request_id="r1",
        subject_id="s1",
        generated_at="2026-11-30T00:00:00+00:00",
        systems={"news": ("mailchimp", [member])},
        connector={},
        facts=facts,
    )
    nl = (tmp_path / "bundle" / "report.nl.md").read_text(encoding="utf-8")
    en = (tmp_path / "bundle" / "report.en.md").read_text(encoding="utf-8")
    assert "Mailchimp kan oudere activiteit" in nl and "may hold older" not in nl
    assert "Mailchimp may hold older activity" in en
    assert ACTIVITY_UNREAD_REASON not in nl + en  # the code is said, not shown


def test_a_pipedrive_list_cut_short_says_so_in_each_report_s_language(tmp_path: Path) -> None:
    """Pipedrive's notes, deals and activities of a person are read up to a bound; a list
    with more carries ``notesNotRead`` (``dealsNotRead``, ``activitiesNotRead``), its reason
    a code said in each report's language."""
    from adapters.pipedrive.linked import CUT_REASON
    from connector.access import Art15Facts, write_bundle

    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("deals", "pipedrive", "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    person = {
        "id": 7,
        "notes": [{"id": 1, "person_id": 7, "content": "Belt graag 's ochtends"}],
        "notesNotRead": {"reason": CUT_REASON, "listed": 5000},
    }
    write_bundle(
        tmp_path / "bundle",
        request_id="r1",
        subject_id="s1",
        generated_at="2026-11-30T00:00:00+00:00",
        systems={"deals": ("pipedrive", [person])},
        connector={},
        facts=facts,
    )
    nl = (tmp_path / "bundle" / "report.nl.md").read_text(encoding="utf-8")
    en = (tmp_path / "bundle" / "report.en.md").read_text(encoding="utf-8")
    assert "Pipedrive bewaart hiervan meer" in nl and "Pipedrive holds more" in en
    assert CUT_REASON not in nl + en


def test_a_pipedrive_list_of_leads_cut_short_says_so_in_each_report_s_language(
    tmp_path: Path,
) -> None:
    """A person's leads are read to the same bound as their deals; ``leadsNotRead`` is said
    in each report's language, not shown as its code."""
    from adapters.pipedrive.linked import CUT_REASON
    from connector.access import Art15Facts, write_bundle

    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("deals", "pipedrive", "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    person = {
        "id": 7,
        "leads": [{"id": "0000-lead", "person_id": 7, "title": "Offerte badkamer"}],
        "leadsNotRead": {"reason": CUT_REASON, "listed": 10000},
    }
    write_bundle(
        tmp_path / "bundle",
        request_id="r1",
        subject_id="s1",
        generated_at="2026-11-30T00:00:00+00:00",
        systems={"deals": ("pipedrive", [person])},
        connector={},
        facts=facts,
    )
    nl = (tmp_path / "bundle" / "report.nl.md").read_text(encoding="utf-8")
    en = (tmp_path / "bundle" / "report.en.md").read_text(encoding="utf-8")
    assert "Pipedrive bewaart hiervan meer" in nl and "Pipedrive holds more" in en
    assert CUT_REASON not in nl + en


def test_a_hubspot_copy_of_some_associations_says_so_in_each_report_s_language(
    tmp_path: Path,
) -> None:
    """HubSpot's copy holds the records associated with the contact and its address's
    subscription statuses; where a scope kept some out, or a kind was cut at its bound, the
    contact's record says so by code, and each report says it in its own language."""
    from adapters.hubspot._related import (
        ASSOCIATIONS_UNREAD,
        ASSOCIATIONS_UNREAD_REASON,
        SUBSCRIPTIONS_UNREAD,
        SUBSCRIPTIONS_UNREAD_REASON,
    )
    from connector.access import Art15Facts, write_bundle

    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("crm", "hubspot", "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    contact = {
        "id": "501",
        "properties": {"email": "person@example.com"},
        "associations": {"notes": [{"id": "9001", "properties": {"hs_note_body": "Belde"}}]},
        ASSOCIATIONS_UNREAD: {"reason": ASSOCIATIONS_UNREAD_REASON, "unread": "deals"},
        SUBSCRIPTIONS_UNREAD: {"reason": SUBSCRIPTIONS_UNREAD_REASON},
    }
    write_bundle(
        tmp_path / "bundle",
        request_id="r1",
        subject_id="s1",
        generated_at="2026-11-30T00:00:00+00:00",
        systems={"crm": ("hubspot", [contact])},
        connector={},
        facts=facts,
    )
    nl = (tmp_path / "bundle" / "report.nl.md").read_text(encoding="utf-8")
    en = (tmp_path / "bundle" / "report.en.md").read_text(encoding="utf-8")
    assert "Belde" in nl and "Belde" in en
    assert "HubSpot may hold more records linked to your contact" in en
    assert "HubSpot kan meer aan uw contact gekoppelde gegevens bewaren" in nl
    assert "did not let klantsync read your e-mail subscriptions" in en
    assert "uw e-mailabonnementen en de rechtsgrond van elk niet" in nl
    assert ASSOCIATIONS_UNREAD_REASON not in nl + en  # the code is said, not shown


def _written(tmp_path: Path, records: list[dict[str, Any]], connector: Any = None) -> Path:
    """A bundle holding ``records`` of a WooCommerce shop, with no Art. 15 facts to speak of."""
    from connector.access import Art15Facts, write_bundle

    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("shop", "woocommerce", "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    out = tmp_path / "bundle"
    write_bundle(
        out,
        request_id="r1",
        subject_id="s1",
        generated_at="2024-06-01T22:30:00+00:00",
        systems={"shop": ("woocommerce", records)},
        connector=connector or {},
        facts=facts,
    )
    return out


def test_a_yes_or_no_is_said_in_words_in_each_report_s_language(tmp_path: Path) -> None:
    """A WooCommerce customer's ``is_paying_customer: false`` reached the reports as
    Python's ``False``; data.json keeps JSON's ``false``."""
    out = _written(tmp_path, [{"id": 7, "is_paying_customer": False, "verified": True}])
    for lang, no, yes in (("nl", "nee", "ja"), ("en", "no", "yes")):
        for name in (f"report.{lang}.md", f"report.{lang}.html"):
            text = (out / name).read_text(encoding="utf-8").replace("\\", "")
            assert "False" not in text and "True" not in text, name
            rows = {line for line in text.splitlines() if "is_paying_customer" in line}
            assert rows and all(f"{no} |" in r or f">{no}<" in r for r in rows), rows
            assert f"{yes} |" in text or f">{yes}<" in text, name
    record = json.loads((out / "data.json").read_text())["systems"]["shop"]["records"][0]
    assert record["is_paying_customer"] is False and record["verified"] is True


def test_markdown_report_shows_a_value_with_tildes_as_written_not_struck_through(
    tmp_path: Path,
) -> None:
    """Markdown escaped ``~`` only at the start of a value: ``Jan ~~Jansen~~`` (a name, a
    note) rendered in a GFM viewer as 'Jan' and a struck-through 'Jansen'."""
    from markdown_it import MarkdownIt

    out = _written(tmp_path, [{"id": 7, "first_name": "Jan ~~Jansen~~"}])
    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    for name in ("report.en.md", "report.nl.md"):
        rendered = md.render((out / name).read_text(encoding="utf-8"))
        (row,) = [line for line in rendered.splitlines() if "Jan" in line]
        assert "<s>" not in row and "~~Jansen~~" in row, (name, row)


def test_reports_give_their_times_in_dutch_time_beside_utc(tmp_path: Path) -> None:
    """When the report was written and when each request was received and completed were
    raw UTC stamps; the person and the controller keep Dutch time (as the breach draft and
    the register give it). data.json keeps the stamps."""
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Amsterdam")
    request = {"received_at": "2024-06-01T22:00:00+00:00", "completed_at": None}
    out = _written(tmp_path, [], {"requests": [request], "code": "2024-06-01"})
    for name in ("report.nl.md", "report.en.md", "report.nl.html", "report.en.html"):
        text = (out / name).read_text(encoding="utf-8").replace("\\", "")
        assert "2024-06-01T22:30:00+00:00 (2024-06-02 00:30 Europe/Amsterdam)" in text, name
        assert "2024-06-01T22:00:00+00:00 (2024-06-02 00:00 Europe/Amsterdam)" in text, name
        assert "code: 2024-06-01\n" in text or "code: 2024-06-01<" in text, name  # no time
    data = json.loads((out / "data.json").read_text())
    assert data["generated_at"] == "2024-06-01T22:30:00+00:00"
    assert data["connector"]["requests"] == [request]


async def test_the_copy_shows_the_data_klantsync_holds_sealed_for_delivery_or_refused(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A payload waiting for a system that is down, and one a system refused, are the
    person's data the connector holds (sealed, Art. 15(3)): the copy shows what they say,
    not only when they were queued, in data.json and in each report."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321", city="Utrecht")
    crm.faults.down = True
    await rt.engine.sync()
    crm.faults.down = False
    service = DsrService(rt)
    queued_out = tmp_path / "queued"
    await service.access(CANARY_EMAIL, queued_out)
    data = json.loads((queued_out / "data.json").read_text(encoding="utf-8"))
    assert data["systems"]["crm"]["records"] == []  # the CRM holds nothing yet
    (queued,) = data["connector"]["sealed_data"]["queued"]
    assert queued["system"] == "crm" and queued["data"]["email"] == CANARY_EMAIL
    assert "Utrecht" in json.dumps(queued["data"])
    for lang in ("nl", "en"):
        report = (queued_out / f"report.{lang}.md").read_text(encoding="utf-8")
        mine = report.split("## ", 4)[-1]  # what klantsync itself keeps, and after
        assert "Utrecht" in mine, lang

    (row,) = rt.store.outbox_batch("crm", 0, 10)
    rt.store.dead_letter([(row, "VALIDATION_ERROR")])
    refused_out = tmp_path / "refused"
    await service.access(CANARY_EMAIL, refused_out)
    data = json.loads((refused_out / "data.json").read_text(encoding="utf-8"))
    (refused,) = data["connector"]["sealed_data"]["refused"]
    assert refused["system"] == "crm" and refused["data"]["email"] == CANARY_EMAIL
    assert "sealed_data" not in data["connector"] or not data["connector"]["sealed_data"].get(
        "queued"
    )


async def test_the_copy_lists_the_audit_entries_about_the_person_and_none_about_another(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Audit entries name the person by id (their requests, a resync of them): data about
    the processing of them, which the copy left out. Listed with their kind, time and data
    as stored, in data.json and in a section of each report; another person's are not."""
    from connector import audit

    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    mine = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    theirs = await service.rectify(OTHER_EMAIL, {"city": "Gouda"})
    sid, other = rt.keyring.subject_id(CANARY_EMAIL), rt.keyring.subject_id(OTHER_EMAIL)
    audit.record_resync(rt.store, "crm", full=False, source="cli", subject_id=sid)
    audit.record_resync(rt.store, "crm", full=True, source="admin", subject_id=other)
    out = tmp_path / "bundle"
    view = await service.access(CANARY_EMAIL, out)
    listed = json.loads((out / "data.json").read_text())["connector"]["audit_trail"]
    assert {e["subject_id"] for e in listed} == {sid}
    kinds = [(e["kind"], e["data"].get("request")) for e in listed]
    assert ("dsr.received", mine.id) in kinds and ("dsr.received", view.id) in kinds
    assert all(request != theirs.id for _, request in kinds)
    (resync,) = [e for e in listed if e["kind"] == "sync.manual"]
    assert resync["data"] == {"system": "crm", "full": False, "source": "cli"} and resync["at"]
    for lang, heading in (
        ("en", "What klantsync's audit trail records about you"),
        ("nl", "Wat het auditlogboek van klantsync over u vastlegt"),
    ):
        for name in (f"report.{lang}.md", f"report.{lang}.html"):
            text = (out / name).read_text(encoding="utf-8").replace("\\", "")
            section = text.replace("&#x27;", "'").split(heading, 1)[1]
            assert mine.id in section and "sync.manual" in section, name
            assert "sync.manual (full: " in section and "source: cli; system: crm" in section
            assert theirs.id not in text and other not in text, name


def test_a_deadline_in_the_audit_trail_is_given_in_dutch_time_beside_utc(tmp_path: Path) -> None:
    """The audit trail section gave a request's deadline as the raw UTC stamp: one due at
    00:30 on 1 January in the Netherlands read as due on 31 December. Its times now carry
    the Dutch time beside them, as the entry's own time does; data.json keeps the stamp."""
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Amsterdam")
    entry = {
        "at": "2024-12-01T23:30:00+00:00",
        "kind": "dsr.received",
        "subject_id": "s1",
        "data": {"deadline": "2024-12-31T23:30:00+00:00", "request": "ac-1", "count": 2024},
    }
    out = _written(tmp_path, [], {"audit_trail": [entry]})
    for name in ("report.nl.md", "report.en.md", "report.nl.html", "report.en.html"):
        text = (out / name).read_text(encoding="utf-8").replace("\\", "")
        shown = "deadline: 2024-12-31T23:30:00+00:00 (2025-01-01 00:30 Europe/Amsterdam)"
        assert shown in text, name
        assert "request: ac-1; count: 2024)" in text, name  # no time made up of a number
    listed = json.loads((out / "data.json").read_text())["connector"]["audit_trail"]
    assert listed[0]["data"]["deadline"] == "2024-12-31T23:30:00+00:00"


def test_the_controller_s_data_protection_officer_is_named_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "who is responsible" section listed the controller's name, address, contact and
    data protection officer as bare lines: a DPO given read as one more contact of the
    controller. The DPO's line now says it is the DPO, in each language."""
    from connector.access import write_bundle

    path = example_config(tmp_path, monkeypatch)
    path.write_text(
        path.read_text().replace('dpo = ""', 'dpo = "Mr. A. de Vries, fg@voorbeeld.example"')
    )
    out = tmp_path / "bundle"
    write_bundle(
        out,
        request_id="r1",
        subject_id="s1",
        generated_at="2024-06-01T22:30:00+00:00",
        systems={},
        connector={},
        facts=art15_facts(load_config(path)),
    )
    for lang, label in (
        ("en", "Data protection officer (DPO): Mr. A. de Vries"),
        ("nl", "Functionaris gegevensbescherming (FG): Mr. A. de Vries"),
    ):
        for name in (f"report.{lang}.md", f"report.{lang}.html"):
            text = (out / name).read_text(encoding="utf-8").replace("\\", "")
            assert label in text, name


async def test_the_report_says_what_each_record_is_and_labels_known_fields_in_plain_words(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Art. 12(1): records were headed "Record 1", "Record 2" and fields were the vendors'
    keys (billing.phone, properties.firstname); a person could not tell an order from
    their account. Each record now says what it is and where, known keys read in the
    report's language, unknown keys stay as given, and data.json keeps the vendors' keys."""
    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    await DsrService(rt).access(CANARY_EMAIL, out)
    nl = (out / "report.nl.md").read_text(encoding="utf-8").replace("\\", "")
    en = (out / "report.en.md").read_text(encoding="utf-8").replace("\\", "")
    page = (out / "report.nl.html").read_text(encoding="utf-8")
    for text in (nl, page):
        assert "Klantaccount in de webshop (WooCommerce)" in text
        assert "Bestelling " in text and "Contact in HubSpot" in text
        assert "Factuuradres: telefoonnummer" in text and "Voornaam" in text
    assert "Customer account in the webshop (WooCommerce)" in en and "Order " in en
    assert "Billing address: phone number" in en and "First name" in en
    for text in (nl, en):
        assert "Record 1" not in text
        assert "| billing.phone |" not in text and "| properties.firstname |" not in text
        # A key no table knows is shown as the shop gives it: nothing is left out.
        assert "| line_items.0.product_id |" in text
        assert CANARY_NAME in text and "Utrecht" in text
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    account = next(r for r in data["systems"]["shop"]["records"] if "type" not in r)
    assert account["billing"]["city"] == "Utrecht" and "first_name" in account
    (contact,) = data["systems"]["crm"]["records"]
    assert contact["properties"]["firstname"] == CANARY_NAME
