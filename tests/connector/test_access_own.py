"""Access reports say in plain words what klantsync itself keeps about the person: an
erasure and its suppression entry, an unsubscribe kept, or that it holds nothing at all."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.access_own import own_lines
from connector.dsr import DsrService
from connector.register_render import local_time
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL, CANARY_NAME, RuntimeFactory, write_config
from tests.connector.test_access import read_all, seed_both

NOBODY = "niemand.bekend@voorbeeld.nl"


def reports(out: Path) -> dict[str, str]:
    """The four reports by file name, Markdown's escapes dropped (as the person reads it)."""
    return {
        f"{lang}.{ext}": (out / f"report.{lang}.{ext}")
        .read_text(encoding="utf-8")
        .replace("\\", "")
        for lang in ("en", "nl")
        for ext in ("md", "html")
    }


async def test_the_report_of_someone_erased_says_when_from_where_what_is_kept_and_how_back(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Erased, the person's report showed "suppression.kind: erasure" and ids: nothing said
    they were erased, when (with the Dutch time), from which systems, that a keyed hash of
    their address is kept (not the address) so they are not added again, until when, and
    how they can be added again. Each report says so now, with nothing of theirs in clear."""
    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    erasure = await service.erase(CANARY_EMAIL)
    assert erasure.status == "completed"
    out = tmp_path / "bundle"
    assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    entry = data["connector"]["suppression"]
    assert entry["request_id"] == erasure.id and entry["request_status"] == "completed"
    assert set(entry["systems"]) == {"crm", "shop"}
    when = local_time(entry["completed_at"])
    assert "Europe/Amsterdam" in when
    text = reports(out)
    for name in ("en.md", "en.html"):
        assert f"You were erased on {when}: at your request ({erasure.id})" in text[name]
        assert "crm (hubspot): deleted; shop (woocommerce): deleted" in text[name]
        assert "keeps no copy of your e-mail address. It keeps a keyed hash of it" in text[name]
        assert "it has no end date" in text[name]
        assert "To be added again" in text[name]
        assert "None of the connected systems holds data about you" in text[name]
    for name in ("nl.md", "nl.html"):
        assert f"U bent gewist op {when}: op uw verzoek ({erasure.id})" in text[name]
        assert "crm (hubspot): verwijderd; shop (woocommerce): verwijderd" in text[name]
        assert "bewaart geen kopie van uw e-mailadres" in text[name]
        assert "Weer toegelaten worden" in text[name]
    everything = read_all(out)
    for value in (CANARY_EMAIL, CANARY_NAME):
        assert value not in everything


async def test_the_report_of_an_erasure_still_under_way_says_so_and_what_is_left(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An erasure a system was down for is not told as done: the report says it is under
    way, and which system's part is not done yet."""
    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    crm.faults.down = True
    erasure = await service.erase(CANARY_EMAIL)
    assert erasure.is_open
    crm.faults.down = False
    out = tmp_path / "bundle"
    assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    text = reports(out)
    assert "You asked to be erased on " in text["en.md"]
    assert f"({erasure.id}); the erasure is still under way" in text["en.md"]
    assert "crm (hubspot): not done yet" in text["en.md"]
    assert "crm (hubspot): nog niet gedaan" in text["nl.md"]
    assert "You were erased" not in text["en.md"]


async def test_the_report_of_someone_unsubscribed_at_a_system_says_what_is_kept_and_why(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An unsubscribe at a system, kept so no sync subscribes the person again, showed as
    "opted_out_at.crm: <time>" alone; the report says what it is, why and until when."""
    await seed_both(shop, crm, rt)
    rt.store.opt_out("crm", rt.keyring.subject_id(CANARY_EMAIL))
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    when = local_time(data["connector"]["opted_out_at"]["crm"])
    text = reports(out)
    for name in ("en.md", "en.html"):
        assert f"You unsubscribed at crm (hubspot) on {when}." in text[name]
        assert "so that no sync subscribes you there again" in text[name]
    assert f"U meldde zich af bij crm (hubspot) op {when}." in text["nl.md"]
    assert "suppression list" not in text["en.md"]  # not erased: none of that is said


async def test_the_report_of_someone_klantsync_holds_nothing_about_says_so_plainly(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A person no system holds got a heading per system over "holds no data" and a list of
    ids under what klantsync keeps; the report says once that nothing is held, and that
    klantsync keeps nothing of theirs but this request's record."""
    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(NOBODY, out)).status == "completed"
    text = reports(out)
    for name in ("en.md", "en.html"):
        assert (
            "None of the connected systems holds data about you: shop (woocommerce), "
            "crm (hubspot)." in text[name]
        )
        assert "This system holds no data about you" not in text[name]
        assert "klantsync holds nothing about you" in text[name]
    assert "Geen van de gekoppelde systemen heeft gegevens over u" in text["nl.md"]
    assert "klantsync heeft niets over u" in text["nl.html"]


async def test_a_person_held_somewhere_is_not_told_klantsync_holds_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The plain "nothing" is said only when it is true: a synced person is shown per system."""
    await seed_both(shop, crm, rt)
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    text = reports(out)
    assert "holds nothing about you" not in text["en.md"]
    assert "None of the connected systems" not in text["en.md"]
    assert "### shop (woocommerce)" in text["en.md"]


async def test_the_report_of_an_erasure_under_way_does_not_deny_the_copy_it_still_keeps(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """An open erasure keeps the address it erases, sealed in its request, until it
    completes (a retry needs it): the report written meanwhile said "klantsync keeps no
    copy of your e-mail address", in both languages. It says the copy is kept encrypted
    until the erasure is done; once done, that it keeps none."""
    await seed_both(shop, crm, rt)
    service = DsrService(rt)
    crm.faults.down = True
    erasure = await service.erase(CANARY_EMAIL)
    assert erasure.is_open
    crm.faults.down = False
    out = tmp_path / "open"
    assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    text = reports(out)
    for name in ("en.md", "en.html"):
        assert "keeps no copy" not in text[name]
        assert "Until the erasure is done, klantsync keeps your e-mail address" in text[name]
        assert "encrypted with the request" in text[name]
        assert "It keeps a keyed hash of it" in text[name]
    for name in ("nl.md", "nl.html"):
        assert "bewaart geen kopie" not in text[name]
        assert "bewaart klantsync uw e-mailadres" in text[name]
    assert (await service.retry(erasure.id)).status == "completed"
    done = tmp_path / "done"
    assert (await service.access(CANARY_EMAIL, done)).status == "completed"
    text = reports(done)
    assert "keeps no copy of your e-mail address. It keeps a keyed hash of it" in text["en.md"]
    assert "Until the erasure is done" not in text["en.md"]
    assert "bewaart geen kopie van uw e-mailadres. Het bewaart er een" in text["nl.md"]


async def test_the_report_of_an_erasure_that_kept_the_orders_says_so_and_why(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: RuntimeFactory,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    """Orders kept for tax law (anonymise_orders off): the account went and the orders
    stayed, yet the report told the person "shop (woocommerce): deleted", the kept orders
    only in a note it cannot show. It says the orders were kept and why, in English and
    Dutch, with no id and nothing of the note."""
    path = write_config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(path) as runtime:
        await seed_both(shop, crm, runtime)
        service = DsrService(runtime)
        erasure = await service.erase(CANARY_EMAIL)
        assert erasure.status == "completed"
        out = tmp_path / "bundle"
        assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    shop_part = data["connector"]["suppression"]["systems"]["shop"]
    assert shop_part == {
        "status": "verified_absent",
        "reversible": False,
        "retained": ["tax_records"],
    }
    text = reports(out)
    for name in ("en.md", "en.html"):
        assert (
            "crm (hubspot): deleted; shop (woocommerce): deleted; your orders kept, with "
            "their billing data, because the law requires the shop to keep its invoices "
            "for seven years" in text[name]
        )
    for name in ("nl.md", "nl.html"):
        assert (
            "shop (woocommerce): verwijderd; uw bestellingen bewaard, met de "
            "factuurgegevens, omdat de wet de winkel verplicht zijn facturen zeven jaar te "
            "bewaren" in text[name]
        )
    erasure_line = next(line for line in text["en.md"].splitlines() if "You were erased" in line)
    assert "anonymise_orders" not in erasure_line and "tax law" not in erasure_line  # no note


def test_an_erasure_s_kept_codes_are_said_by_their_reason_and_an_older_one_as_it_was() -> None:
    """The sentence of an erasure per system, from its status, ``reversible`` and the codes
    of what it kept on purpose: a kept reason said in its words (once each), a system that
    deleted nothing and kept its orders said so rather than "kept or left out", a code with
    no text of its own said as something kept (the code itself is not shown), one the
    outcome says already (a bin) adds nothing, and an erasure recorded before the codes
    reads as it always did."""
    entry = {
        "request_id": "req-1",
        "request_status": "completed",
        "completed_at": "2025-03-01T10:00:00+00:00",
        "systems": {
            "shop": {
                "status": "verified_absent",
                "reversible": False,
                "retained": ["tax_records", "tax_records"],
            },
            "guest": {"status": "exempt", "reversible": False, "retained": ["tax_records"]},
            "odd": {"status": "verified_absent", "reversible": False, "retained": ["x_codex"]},
            "bin": {
                "status": "verified_absent",
                "reversible": True,
                "retained": ["deleted_purged_later"],
            },
            "old": {"status": "verified_absent", "reversible": False},
            "left": {"status": "exempt", "reversible": False},
        },
    }
    kinds = {"shop": "woocommerce", "guest": "woocommerce"}
    (en, *_) = own_lines("en", {"suppression": entry}, kinds)
    (nl, *_) = own_lines("nl", {"suppression": entry}, kinds)
    reason = (
        "your orders kept, with their billing data, because the law requires the shop to "
        "keep its invoices for seven years (in the Netherlands)"
    )
    assert f"shop (woocommerce): deleted; {reason}." in en
    assert en.count(reason) == 2
    assert f"guest (woocommerce): nothing deleted; {reason}; " in en
    assert "odd: deleted; some records kept on purpose (the erasure's receipt says why" in en
    assert "x_codex" not in en and "x_codex" not in nl
    assert "bin: deleted (the system can still restore it for a while" in en
    assert (
        "bin: deleted (the system can still restore it for a while before it deletes it "
        "for good; the erasure's receipt says how long); " in en
    )
    assert "old: deleted; " in en
    assert "left: not erased: kept on purpose or left out of the erasure" in en
    assert "shop (woocommerce): verwijderd; uw bestellingen bewaard" in nl
    assert "guest (woocommerce): niets verwijderd; uw bestellingen bewaard" in nl
    assert "old: verwijderd; " in nl
