"""Who a request is about: the person under a former address, and not whoever took it over."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.dsr import DsrService
from connector.model import earlier_email_forms, normalise_email
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL, CANARY_NAME
from tests.connector.test_dsr import OTHER_EMAIL, seeded

MOVED = "nieuw.adres@voorbeeld-canary.nl"


async def _moved_and_address_taken_over(shop: WooCommerceSandbox, rt: Runtime) -> None:
    """A moved to a new address (synced); B then signed up in the shop under the address A
    gave up, and asks before the next sync."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")


async def test_access_by_a_new_customer_under_an_address_given_up_shows_nobody_else(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The address led to the person who had it while the store held nothing under it: B's
    bundle held A's CRM contact (A's name, new address and phone). The shop holds the
    address for a customer the store has not met: it is B's now."""
    await _moved_and_address_taken_over(shop, rt)
    view = await DsrService(rt).access(CANARY_EMAIL, tmp_path / "bundle")
    assert view.status == "completed"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    text = json.dumps(data["systems"])
    assert MOVED not in text and CANARY_NAME not in text
    assert "Bea" in text  # B's own record, from the shop


async def test_a_correction_by_a_new_customer_under_an_address_given_up_leaves_others_alone(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """B's correction was written onto A's CRM contact, with B's address."""
    await _moved_and_address_taken_over(shop, rt)
    await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    contact = crm.record_for(MOVED)
    assert contact is not None and contact["properties"]["firstname"] == CANARY_NAME
    assert (contact["properties"]["email"], contact["properties"]["city"]) == (MOVED, "Utrecht")


async def test_requests_under_an_address_given_up_leave_it_in_no_memory_of_the_service(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Who holds an address in a source was kept, the address in clear with that customer's
    id, in the service's memory after a correction or an erasure looked (only an access
    request took it out again): the daemon kept every such address for its life. What a
    request's run reads is kept for that run alone."""
    await _moved_and_address_taken_over(shop, rt)
    service = DsrService(rt)
    assert (await service.rectify(CANARY_EMAIL, {"city": "Zeist"})).status == "completed"
    assert (await service.erase(CANARY_EMAIL)).status == "completed"
    assert CANARY_EMAIL not in repr(vars(service.kinds))


async def test_access_under_a_new_address_lists_the_requests_made_under_the_former(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The bundle lists the requests the connector keeps about the person; a correction
    asked under their former address was left out of one asked under the new."""
    await seeded(shop, rt)
    service = DsrService(rt)
    earlier = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert earlier.status == "completed"
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    assert (await service.access(MOVED, tmp_path / "bundle")).status == "completed"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    assert earlier.id in [r["id"] for r in data["connector"]["requests"]]


async def test_an_erasure_under_the_former_address_deletes_a_bundle_asked_under_the_new(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The person changed their address in the shop and asked for access under the new one
    before a sync; the bundle was recorded under that address alone, and their erasure,
    asked under the one the systems know, left it on disk."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email=MOVED)
    bundle = tmp_path / "bundle"
    assert (await DsrService(rt).access(MOVED, bundle)).status == "completed"
    assert CANARY_NAME in (bundle / "data.json").read_text()
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    assert not (bundle / "data.json").exists()


async def test_a_correction_under_a_former_address_keeps_the_current_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The person moved (synced everywhere) and asked under the former address, as README
    allows: the city was corrected, and the shop's and the CRM's address set back to the
    former one, which the next sync then moved them back from."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    assert crm.holds(MOVED) and not crm.holds(CANARY_EMAIL)
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    assert (view.system("crm").status, view.system("shop").status) == ("done", "done")
    contact, customer = crm.record_for(MOVED), shop.record_for(MOVED)
    assert contact is not None and customer is not None
    assert contact["properties"]["city"] == customer["billing"]["city"] == "Zeist"
    assert contact["properties"]["email"] == customer["email"] == MOVED


async def test_a_corrected_phone_without_a_country_code_is_one_of_the_person_s_country(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A Belgian customer corrects their number to "0470 12 34 56": a sync reads it as
    +32 470 12 34 56, the correction wrote +31 470 12 34 56 (someone else's Dutch number) to
    every system. It is read in the person's country, the one corrected with it first."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "+32 470 00 00 00", country="BE")
    await rt.engine.sync()
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["country"] == "BE"
    service = DsrService(rt)
    assert (await service.rectify(CANARY_EMAIL, {"phone": "0470 12 34 56"})).status == ("completed")
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["phone"] == "+32470123456"
    # Moved to Germany and corrected together: the number is a German one.
    await service.rectify(CANARY_EMAIL, {"country": "DE", "phone": "030 1234567"})
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["phone"] == "+49301234567"


async def test_an_erasure_by_a_new_customer_under_an_address_given_up_erases_only_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The new customer under the address A gave up asks to be erased before the next
    sync: the address led to A, who was erased everywhere and suppressed for good."""
    await _moved_and_address_taken_over(shop, rt)
    view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed"
    assert crm.record_for(MOVED) is not None and shop.holds(MOVED)  # A is still there
    assert not rt.store.suppressed([rt.keyring.subject_id(MOVED)])
    assert not shop.holds(CANARY_EMAIL)  # B, who asked, is gone from the shop


async def test_an_erasure_asks_no_source_unless_an_alias_leads_somewhere(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Whether an address was taken over is asked of the sources only when the address
    leads to someone else: every erasure asked each source (a call with its timeout and
    retries) before its suppression entry was written."""
    await seeded(shop, rt)
    adapter = rt.systems["shop"].adapter
    real = adapter.find_records
    suppressed_then: list[bool] = []

    async def find(subject: Any, *, orders: bool = False) -> Any:
        suppressed_then.append(bool(rt.store.suppressed([rt.keyring.subject_id(CANARY_EMAIL)])))
        return await real(subject, orders=orders)

    adapter.find_records = find
    assert (await DsrService(rt).erase(CANARY_EMAIL)).status == "completed"
    assert suppressed_then and all(suppressed_then)


async def test_a_retried_correction_of_a_foreign_phone_is_not_taken_as_superseded(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """HubSpot down at a Belgian's phone correction; the shop took +32 470 99 88 77 and
    nothing changed since. The retry reads the correction in the person's country, sees the
    shop still holds it, and writes it to HubSpot (it was called "changed in the source
    since", and HubSpot kept the old number)."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "+32 470 12 34 56", country="BE")
    await rt.engine.sync()
    service = DsrService(rt)
    crm.faults.down = True
    first = await service.rectify(CANARY_EMAIL, {"phone": "0470 99 88 77"})
    crm.faults.down = False
    assert first.system("shop").status == "done"
    view = await service.retry(first.id)
    assert view.system("crm").status == "done", view.system("crm").detail
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["phone"] == "+32470998877"


async def test_a_retried_phone_correction_asks_the_shop_each_question_once(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The retry of a phone correction HubSpot was down for asks the shop whether the
    person changed the number there since and in which country they live: one read of the
    customer for both within the run (and one by the address alone, the look for a former
    address). Each question used to read the customer again."""
    await seeded(shop, rt)
    service = DsrService(rt)
    crm.faults.down = True
    first = await service.rectify(CANARY_EMAIL, {"phone": "0612312312"})
    assert first.system("crm").status == "failed"
    crm.faults.down = False
    shop.log.clear()
    view = await service.retry(first.id)
    assert view.status == "completed", view
    reads = [e for e in shop.log.entries if e.method == "GET" and "/customers" in e.path]
    assert len(reads) == 2, [(e.path, sorted(e.query)) for e in reads]


async def test_an_erasure_typed_in_nfc_reaches_the_customer_held_in_nfd(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """ "é" composed or as "e" and an accent is one mailbox: the shop's NFD address and the
    erasure's NFC one are one subject, so the erasure finds and deletes the person."""
    nfc = "josé.garcía@voorbeeld-canary.es"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    shop.add_person(nfd, "José", "García", "06 12345678")
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 1
    view = await DsrService(rt).erase(nfc)
    assert view.status == "completed"
    assert not crm.holds(nfd) and not shop.holds(nfd)


async def test_someone_erased_under_the_former_form_of_an_accented_address_stays_out(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """An erasure made before addresses were read in NFC suppressed the subject id of the
    address as typed (lower-cased only); a restored backup holding the person under it is
    still stopped at the suppression list."""
    nfd = unicodedata.normalize("NFD", "josé.garcía@voorbeeld-canary.es")
    rt.store.suppress([rt.keyring.subject_id(nfd.lower())], "erasure", None)
    shop.add_person(nfd, "José", "García", "06 12345678")
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1
    assert not crm.holds(nfd)


def _known_under(rt: Runtime, form: str) -> bool:
    """Whether the store holds anyone (an identity, a delivery) under this form's id."""
    return rt.store.holds_rows(rt.keyring.subject_id(form))


def _lowered_only(email: str) -> str:
    """How an address was identified before it was read in NFC."""
    return email.strip().lower()


async def test_an_erasure_reaches_a_person_synced_before_addresses_were_read_in_nfc(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before addresses were read in NFC knows a customer with a decomposed
    address under that form's subject id. An erasure asked now (read in NFC) finds them
    through it, whichever form it is typed in."""
    nfd = unicodedata.normalize("NFD", "josé.garcía@voorbeeld-canary.es")
    shop.add_person(nfd, "José", "García", "06 12345678")
    with monkeypatch.context() as before:
        before.setattr("connector.pagetake.normalise_email", _lowered_only)
        before.setattr("connector.moveplan.normalise_email", _lowered_only)
        (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 1 and crm.holds(nfd)
    # What the older release left: the customer known under the decomposed form alone, so
    # the erasure below has only the way through that form to find them.
    assert _known_under(rt, _lowered_only(nfd))
    assert not _known_under(rt, normalise_email(nfd))
    view = await DsrService(rt).erase(unicodedata.normalize("NFC", nfd))
    assert view.status == "completed"
    assert not crm.holds(nfd) and not shop.holds(nfd)


async def test_someone_erased_under_an_earlier_form_of_their_address_can_be_readmitted(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """Suppressed under the address as it was identified before NFC, they are still stopped
    by every sync, and `dsr readmit` lifts that entry (it said "not on the list")."""
    from connector.readmit import readmit

    nfd = unicodedata.normalize("NFD", "josé.garcía@voorbeeld-canary.es")
    rt.store.suppress([rt.keyring.subject_id(nfd.lower())], "erasure", None)
    shop.add_person(nfd, "José", "García", "06 12345678")
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1
    readmit(rt, nfd, "signed up again of their own accord")
    (report,) = await rt.engine.sync()
    assert report.suppressed == 0 and crm.holds(nfd)


IDN_UNICODE = "jan@bücher-canary.de"
IDN_PUNYCODE = "jan@xn--bcher-canary-dlb.de"


def test_an_address_is_one_subject_with_its_domain_in_unicode_or_in_punycode() -> None:
    """One mailbox, one form: the domain in punycode (as browsers send an e-mail field), so
    an ASCII address keeps the form it always had; the local part stays as typed, in NFC;
    a domain that is no valid domain name is kept as it is, and reading it does not fail."""
    for typed in (IDN_PUNYCODE, "JAN@BÜCHER-CANARY.DE", unicodedata.normalize("NFD", IDN_UNICODE)):
        assert normalise_email(typed) == IDN_PUNYCODE
    assert normalise_email(" Jan@Example.NL ") == "jan@example.nl"
    assert normalise_email("josé@example.nl") == "josé@example.nl"
    assert normalise_email("jan@\U0001f600.de") == "jan@\U0001f600.de"
    # Known before under the Unicode form, whichever form is given now.
    assert IDN_UNICODE in earlier_email_forms(IDN_PUNYCODE)
    assert IDN_UNICODE in earlier_email_forms(IDN_UNICODE)
    assert earlier_email_forms("jan@example.nl") == []


@pytest.mark.parametrize(
    ("held", "typed"), [(IDN_PUNYCODE, IDN_UNICODE), (IDN_UNICODE, IDN_PUNYCODE)]
)
async def test_an_erasure_reaches_the_customer_whatever_form_the_domain_is_typed_in(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, held: str, typed: str
) -> None:
    """A domain in Unicode or in punycode is one mailbox: the shop's address and the
    erasure's are one subject in either form, so the erasure finds and deletes the person."""
    shop.add_person(held, "Jan", "Jansen", "06 12345678")
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 1
    view = await DsrService(rt).erase(typed)
    assert view.status == "completed"
    assert not crm.holds(held) and not shop.holds(held)


@pytest.mark.parametrize("held", [IDN_UNICODE, IDN_PUNYCODE])
async def test_someone_erased_under_the_unicode_form_of_a_domain_stays_out(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, held: str
) -> None:
    """An erasure made before domains were read in punycode suppressed the subject id of the
    address with its domain in Unicode; a restored backup holding the person under it, or
    under the punycode form, is still stopped at the suppression list."""
    rt.store.suppress([rt.keyring.subject_id(IDN_UNICODE)], "erasure", None)
    shop.add_person(held, "Jan", "Jansen", "06 12345678")
    (report,) = await rt.engine.sync()
    assert report.suppressed == 1
    assert not crm.holds(held)


def _domain_as_given(email: str) -> str:
    """How an address was identified before its domain was read in punycode."""
    return unicodedata.normalize("NFC", email.strip().lower())


async def test_an_erasure_reaches_a_person_synced_before_domains_were_read_in_punycode(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before domains were read in punycode knows a customer with a Unicode
    domain under that form's subject id. A sync now is no second person (nothing written
    again), and an erasure typed in either form finds them."""
    shop.add_person(IDN_UNICODE, "Jan", "Jansen", "06 12345678")
    with monkeypatch.context() as before:
        before.setattr("connector.pagetake.normalise_email", _domain_as_given)
        before.setattr("connector.moveplan.normalise_email", _domain_as_given)
        (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 1 and crm.holds(IDN_UNICODE)
    # What the older release left: the customer known under the Unicode domain alone, so
    # the sync and the erasure below have only the way through that form to find them.
    assert _known_under(rt, IDN_UNICODE)
    assert not _known_under(rt, IDN_PUNYCODE)
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].written == 0 and crm.contact_count() == 1
    view = await DsrService(rt).erase(IDN_PUNYCODE)
    assert view.status == "completed"
    assert not crm.holds(IDN_UNICODE) and not shop.holds(IDN_UNICODE)


@pytest.mark.parametrize(
    "pasted",
    [
        f"{CANARY_EMAIL}\u200b",  # zero-width space, from a web page or a chat
        f"\ufeff{CANARY_EMAIL}",  # byte order mark, from a file or a spreadsheet cell
        f"\u2060{CANARY_EMAIL} ",  # word joiner
        CANARY_EMAIL.replace("@", "\u00ad@"),  # soft hyphen, from a word processor
    ],
)
async def test_an_erasure_pasted_with_an_invisible_character_reaches_the_customer(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, pasted: str
) -> None:
    """An address copied from the customer's e-mail or a ticket can carry a character that
    shows as nothing. It was part of the subject: the erasure was another person's, found
    nobody, and reported every system clear while the customer stayed in each of them."""
    await seeded(shop, rt)
    assert normalise_email(pasted) == CANARY_EMAIL
    view = await DsrService(rt).erase(pasted)
    assert view.status == "completed"
    assert not crm.holds(CANARY_EMAIL) and not shop.holds(CANARY_EMAIL)


async def test_a_corrected_country_keeps_the_meaning_of_a_number_the_shop_holds_without_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The shop holds a Dutch customer's number as typed, "06 12345678" (a sync reads it in
    their country: +31 6 12345678). They correct their country to Belgium alone: the shop
    was written BE beside the number as it was, and the next sync read it as a Belgian
    number, +32 6 12345678 (someone else's, or none), and sent that to every CRM over the
    right one. The number the shop holds goes with the country, in full, so it means what
    it meant; the receipt's step names it."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 12345678", country="NL")
    await rt.engine.sync()
    view = await DsrService(rt).rectify(CANARY_EMAIL, {"country": "BE"})
    assert view.status == "completed"
    record = shop.record_for(CANARY_EMAIL)
    assert record is not None and record["billing"]["country"] == "BE"
    assert record["billing"]["phone"] == "+31612345678"
    await rt.engine.sync()
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None and contact["properties"]["phone"] == "+31612345678"
    assert contact["properties"]["country"] == "BE"
    receipt = json.loads(DsrService(rt).receipt(view.id))["receipt"]
    (step,) = [s for s in receipt["systems"] if s["system"] == "shop"]
    assert step["fields"] == ["country"] and step["written_in_full"] == ["phone"]


async def test_access_leaves_out_another_s_record_found_under_an_address_a_payload_carried(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A payload queued for the person carried an address at which the systems hold a
    record the identity map knows as another subject's (Otto's, synced as himself). The
    erasure spares it (its ``spare``); the access copy read it in whole, Otto's name, phone
    and city in the person's bundle."""
    await seeded(shop, rt)
    monkeypatch.setattr(
        "connector.dsr_kinds.KindRunner._queued_addresses",
        lambda _self, _ids, _email: {"shop": [OTHER_EMAIL], "crm": [OTHER_EMAIL]},
    )
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    held = json.dumps(data["systems"])
    assert CANARY_NAME in held  # the person's own records are there
    assert OTHER_EMAIL not in held and "Otto" not in held, "another subject's record"
    for name in ("report.en.md", "report.nl.md", "report.en.html", "report.nl.html"):
        assert "Otto" not in (out / name).read_text(encoding="utf-8"), name
