"""Access requests (Art. 15): nobody else's data or requests, and every fact Art. 15 asks for."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.access import BUNDLE_FILES, Art15Facts, _sections, art15_facts, write_bundle
from connector.config import load_config
from connector.dsr import DsrService
from connector.dsr_kinds import _Tenure
from connector.model import CATEGORIES
from connector.register import build_register
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL, CANARY_NAME, example_config, write_config
from tests.connector.test_dsr import seeded

MOVED = "nieuw.adres@voorbeeld-canary.nl"


def _bundle_text(directory: Path) -> str:
    return "\n".join((directory / n).read_text(encoding="utf-8") for n in BUNDLE_FILES)


def _section(lang: str, facts: Art15Facts, heading_words: tuple[str, ...]) -> str:
    """The text of the report section whose heading holds one of ``heading_words``."""
    for heading, lines in _sections(lang, facts):
        if any(word in heading for word in heading_words):
            return " ".join(lines)
    raise AssertionError(f"no section {heading_words} in the {lang} report")


def _config(tmp_path: Path, *, shop_extra: str = "", tail: str = "") -> Path:
    path = write_config(tmp_path)
    text = path.read_text()
    if shop_extra:
        text = text.replace(
            "credentials = { consumer_key", f"{shop_extra}\ncredentials = {{ consumer_key"
        )
    path.write_text(text + tail)
    return path


US_CRM = """
[systems.crm.processor]
legal_name = "HubSpot Inc."
country = "US"
transfer_mechanism = "EU-US Data Privacy Framework; SCCs"
"""


async def test_access_report_states_the_transfer_outside_the_eea_and_its_safeguard(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Any, tmp_path: Path
) -> None:
    """Art. 15(2): the CRM processes in the US under the DPF/SCCs (the config says so, the
    register and `check` use it); the person's bundle says nothing of the transfer."""
    cfg = _config(tmp_path, tail=US_CRM)
    async with open_rt(cfg) as rt:
        shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321", city="Utrecht")
        await rt.engine.sync()
        out = tmp_path / "bundle"
        assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    for name in ("report.en.md", "report.nl.md", "report.en.html", "report.nl.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert "Data Privacy Framework" in text, f"{name} does not state the transfer safeguard"
    art15 = json.loads((out / "data.json").read_text())["art15"]
    assert "Data Privacy Framework" in json.dumps(art15), "data.json art15 has no transfers"


async def test_access_report_states_whether_there_is_automated_decision_making(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Art. 15(1)(h): the existence (or absence) of automated decision-making, profiling
    included, is one of the facts a person is to be told; neither report mentions it."""
    await seeded(shop, rt)
    out = tmp_path / "bundle"
    await DsrService(rt).access(CANARY_EMAIL, out)
    en = (out / "report.en.md").read_text(encoding="utf-8").lower()
    nl = (out / "report.nl.md").read_text(encoding="utf-8").lower()
    assert "automated decision" in en, "English report is silent on automated decision-making"
    assert "geautomatiseerde besluitvorming" in nl, "Dutch report is silent on it too"


async def test_access_by_the_new_holder_of_a_given_up_address_shows_not_the_former_holders_order(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A (with an order) moved to a new address; B signed up under the one A gave up and was
    synced. B's bundle holds A's order: A's name, city, phone and IP address."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    await rt.engine.sync()
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    systems = json.loads((out / "data.json").read_text())["systems"]
    assert "Bea" in json.dumps(systems)
    text = _bundle_text(out)
    assert CANARY_NAME not in text, "B's access bundle holds A's order (A's name)"
    assert "198.51.100.7" not in text, "B's access bundle holds A's order IP address"


@pytest.mark.parametrize("synced", [False, True], ids=["not_synced_yet", "synced"])
async def test_access_by_the_new_holder_of_an_address_lists_not_the_former_holders_requests(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path, synced: bool
) -> None:
    """A asked for a correction under the address, then moved; B took the address over
    (before the next sync, or synced since). The requests made under the address before
    A's move are A's: B's copy lists its own request, not A's correction (its id, kind,
    times)."""
    await seeded(shop, rt)
    service = DsrService(rt)
    a_request = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    if synced:
        await rt.engine.sync()
    out = tmp_path / "bundle"
    view = await service.access(CANARY_EMAIL, out)
    assert view.status == "completed"
    data = json.loads((out / "data.json").read_text())
    assert "Bea" in json.dumps(data["systems"])
    listed = [r["id"] for r in data["connector"]["requests"]]
    assert view.id in listed
    assert a_request.id not in listed, f"A's request {a_request.id} is in B's bundle: {listed}"


async def test_access_by_the_new_holder_of_an_address_lists_not_a_former_holder_moved_on_since(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A asked for a correction under the address, moved, and moved on again to a third
    address; B then took the first one over and was synced. A's move away from it is
    recorded under the address A went to then, not A's current one: B's copy still lists
    A's correction and its audit entries."""
    await seeded(shop, rt)
    service = DsrService(rt)
    a_request = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.touch(MOVED, email="derde.adres@voorbeeld-canary.nl")
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    await rt.engine.sync()
    out = tmp_path / "bundle"
    view = await service.access(CANARY_EMAIL, out)
    assert view.status == "completed"
    connector = json.loads((out / "data.json").read_text())["connector"]
    listed = [r["id"] for r in connector["requests"]]
    assert a_request.id not in listed, f"A's request is in B's bundle: {listed}"
    assert listed == [view.id]
    entries = {e["data"].get("request") for e in connector["audit_trail"]}
    assert a_request.id not in entries, f"A's audit entries are in B's bundle: {entries}"


@pytest.mark.parametrize("synced", [False, True], ids=["not_synced_yet", "synced"])
async def test_access_under_a_new_address_lists_not_the_requests_of_who_took_the_former_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path, synced: bool
) -> None:
    """A asked for a correction, then moved; B took the address A left (before the next
    sync, or synced since) and asked for a copy under it. A's copy, asked under the new
    address, lists A's correction and its audit entries, and neither B's request nor its
    entries (B's request id, times, what it did)."""
    await seeded(shop, rt)
    service = DsrService(rt)
    a_request = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    if synced:
        await rt.engine.sync()
    b_request = await service.access(CANARY_EMAIL, tmp_path / "b")
    assert b_request.status == "completed"
    out = tmp_path / "a"
    assert (await service.access(MOVED, out)).status == "completed"
    connector = json.loads((out / "data.json").read_text())["connector"]
    listed = [r["id"] for r in connector["requests"]]
    assert a_request.id in listed, f"A's own correction is not in A's bundle: {listed}"
    assert b_request.id not in listed, f"B's request is in A's bundle: {listed}"
    entries = {e["data"].get("request") for e in connector["audit_trail"]}
    assert a_request.id in entries
    assert b_request.id not in entries, f"B's audit entries are in A's bundle: {entries}"


def test_a_request_whose_audit_entries_were_purged_is_listed_only_where_it_can_be_placed() -> None:
    """Request rows are kept for good, the trail for ``audit_days``. A request whose
    entries were purged is older than every entry kept: under an address nobody else held
    it is the person's; under one someone left before them (that move kept or purged) it
    may be the leaver's; under one the person left, theirs while their move is still in the
    trail, and unplaceable once that is purged too."""
    assert _Tenure().covers(None)
    assert not _Tenure(after=40).covers(None)
    assert not _Tenure(after=0).covers(None)
    assert _Tenure(until=40).covers(None)
    assert not _Tenure(until=0).covers(None)
    assert [_Tenure(after=40).covers(seq) for seq in (39, 40, 41)] == [False, False, True]
    assert [_Tenure(until=40).covers(seq) for seq in (39, 40, 41)] == [True, True, False]


@pytest.mark.parametrize("synced", [False, True], ids=["not_synced_yet", "synced"])
async def test_access_by_the_new_holder_of_an_address_lists_not_the_former_holders_audit_entries(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path, synced: bool
) -> None:
    """A asked for a correction under the address, then moved; B took the address over
    (before the next sync, or synced since). The audit entries under the address from
    before A's move are A's: B's copy lists its own request's, none of A's."""
    await seeded(shop, rt)
    service = DsrService(rt)
    a_request = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    if synced:
        await rt.engine.sync()
    out = tmp_path / "bundle"
    view = await service.access(CANARY_EMAIL, out)
    assert view.status == "completed"
    listed = json.loads((out / "data.json").read_text())["connector"]["audit_trail"]
    requests = {e["data"].get("request") for e in listed}
    assert view.id in requests
    assert a_request.id not in requests, f"A's entries are in B's bundle: {listed}"
    assert not any(e["kind"] == "sync.subject_moved" for e in listed)


async def test_access_under_a_new_address_lists_the_audit_entries_under_the_former_one(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A asked for a correction under the address, then moved: the entries under the
    former address are A's too, listed in the copy asked for under the new one."""
    await seeded(shop, rt)
    service = DsrService(rt)
    a_request = await service.rectify(CANARY_EMAIL, {"city": "Zeist"})
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    out = tmp_path / "bundle"
    assert (await service.access(MOVED, out)).status == "completed"
    listed = json.loads((out / "data.json").read_text())["connector"]["audit_trail"]
    former = rt.keyring.subject_id(CANARY_EMAIL)
    assert {e["subject_id"] for e in listed} == {former, rt.keyring.subject_id(MOVED)}
    assert a_request.id in {e["data"].get("request") for e in listed}
    (moved,) = [e for e in listed if e["kind"] == "sync.subject_moved"]
    assert moved["data"]["from"] == former


async def test_access_by_the_new_holder_of_an_address_shows_not_the_former_holders_queued_data(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A's change waits in the outbox under the address (the CRM was down); A then moved and
    B took the address over, neither synced yet. What the store holds sealed under the
    address is A's: B's bundle does not open it for B."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, billing={"city": "Zeist"})
    crm.faults.down = True
    await rt.engine.sync()
    crm.faults.down = False
    assert rt.store.counts()["outbox"] == 1
    shop.touch(CANARY_EMAIL, email=MOVED)
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text())
    assert "Bea" in json.dumps(data["systems"])
    assert CANARY_NAME not in json.dumps(data["connector"])
    assert "Zeist" not in _bundle_text(out), "B's bundle holds A's queued data"


async def test_dutch_report_explains_a_retained_order_in_dutch(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, open_rt: Any, tmp_path: Path
) -> None:
    """Orders kept for tax law (anonymise_orders off) are labelled in the Dutch report with
    the adapter's English note naming an internal config key, and the retention section
    does not say how long they are kept."""
    cfg = _config(tmp_path, shop_extra="anonymise_orders = false")
    async with open_rt(cfg) as rt:
        customer = shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", "06 87654321")
        shop.add_order(customer)
        await rt.engine.sync()
        out = tmp_path / "bundle"
        assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    nl = (out / "report.nl.md").read_text(encoding="utf-8")
    assert "| Soort gegeven | order |" in nl  # the order is there
    assert "kept with their billing data" not in nl, "Dutch report: English 'retained' note"
    assert "anonymise" not in nl, "Dutch report names the internal setting anonymise_orders"


def test_an_access_report_does_not_rule_out_a_transfer_where_the_processor_s_country_is_unknown(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Mailchimp's processor without a ``country`` (the model's NL default is no statement):
    the report tells the person where it is not recorded, in both languages, instead of
    "none of the recipients processes your data outside the EEA"."""
    path = example_config(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace('country = "US"\n', ""))
    facts = art15_facts(load_config(path))
    assert facts.transfers_unknown == ["news"]
    for lang, words in (
        ("en", "Where news processes your data is not recorded"),
        ("nl", "Waar news uw gegevens verwerkt, is in dit overzicht niet vastgelegd"),
    ):
        text = " ".join(next(v for k, v in _sections(lang, facts) if "EE" in k))
        assert words in text
        assert "None of the recipients" not in text and "Geen van de ontvangers" not in text


def test_a_record_in_a_vendor_s_bin_is_explained_in_each_language() -> None:
    """A person Pipedrive holds in its 30-day bin (``retained: deleted_purged_later``) is
    shown as deleted and restorable until its purge, in the report's own language."""
    from connector.access import _rows

    record = {"id": 5, "retained": "deleted_purged_later", "purged_after": "2025-07-15T10:00:00Z"}
    en = dict(_rows("en", record))
    nl = dict(_rows("nl", record))
    assert "restore it until" in en["kept on purpose"]
    assert "herstellen" in nl["bewust bewaard"]
    assert nl["purged_after"] == "2025-07-15T10:00:00Z"


def test_access_report_states_the_onward_transfer_the_register_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HubSpot Ireland (IE) passes the data on to HubSpot, Inc. in the US (its
    ``onward_transfers``): the register lists that onward transfer, and the person's report
    states it too, by the same rule (it used to look at the processor's country only, and
    said nothing of it), naming where the data goes and who receives it."""
    config = load_config(example_config(tmp_path, monkeypatch))
    facts = art15_facts(config)
    registered = {t["system"] for t in build_register(config, "en")["transfers"]}
    assert {system for system, *_ in facts.transfers} == registered
    assert "crm" in registered
    words = {
        "en": "in Ireland and passes it on to HubSpot, Inc. in the United States; safeguard: "
        "EU-US Data Privacy Framework; SCCs 2021/914 module 3",
        "nl": "in Ierland en geeft ze door aan HubSpot, Inc. in de Verenigde Staten; "
        "waarborg: EU-US Data Privacy Framework; SCCs 2021/914 module 3",
    }
    for lang, heading in (("en", ("EEA",)), ("nl", ("EER",))):
        assert words[lang] in _section(lang, facts, heading)


def test_access_report_names_the_sub_processors_among_the_recipients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 15(1)(c): the sub-processors each processor names (the register lists them) are
    recipients too, HubSpot, Inc. in the US among them; the report named the systems and
    their processors only."""
    facts = art15_facts(load_config(example_config(tmp_path, monkeypatch)))
    assert json.dumps(facts.as_dict()).count("HubSpot, Inc. (US)") == 1
    for lang, heading in (("en", ("Recipients",)), ("nl", ("Ontvangers",))):
        text = _section(lang, facts, heading)
        assert "HubSpot, Inc. (US)" in text and "Voorbeeld Datacenter B.V." in text, text


def test_a_recipient_named_only_in_an_onward_transfer_is_listed_among_the_recipients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 15(1)(c): HubSpot Ireland passes the data on to HubSpot, Inc.; where the config
    names HubSpot, Inc. in ``onward_transfers`` but not among ``sub_processors``, the report
    told of it under transfers only, and its recipients section did not name it."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    text = text.replace('sub_processors = ["HubSpot, Inc. (US)", ', "sub_processors = [")
    path.write_text(text)
    facts = art15_facts(load_config(path))
    assert "HubSpot, Inc. (US)" not in json.dumps(facts.as_dict())
    for lang, heading in (("en", ("Recipients",)), ("nl", ("Ontvangers",))):
        section = _section(lang, facts, heading)
        assert "HubSpot, Inc." in section and "Amazon Web Services EMEA SARL" in section
        assert section.count("Amazon Web Services EMEA SARL") == 1, section


def test_a_recipient_whose_name_begins_a_sub_processor_s_is_listed_among_the_recipients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 15(1)(c): an onward transfer to "Google" is not one to "Google Cloud EMEA Ltd
    (IE)", another company among the sub-processors; a recipient whose name began one already
    listed was taken for it and left out, and the person was not told of it."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    text = text.replace(
        'sub_processors = ["HubSpot, Inc. (US)", ',
        'sub_processors = ["Google Cloud EMEA Ltd (IE)", "HubSpot, Inc. (US)", ',
    )
    text = text.replace(
        '  { country = "DE", recipient = "Amazon',
        '  { country = "US", recipient = "Google", mechanism = "SCCs 2021/914 module 3" },\n'
        '  { country = "DE", recipient = "Amazon',
    )
    path.write_text(text)
    facts = art15_facts(load_config(path))
    assert "Google" in facts.sub_processors["crm"]
    assert "Google" in facts.as_dict()["recipients"][1]["sub_processors"]
    for lang, heading in (("en", ("Recipients",)), ("nl", ("Ontvangers",))):
        section = _section(lang, facts, heading)
        assert "Google Cloud EMEA Ltd (IE), HubSpot, Inc. (US)" in section, section
        assert "Amazon Web Services EMEA SARL, Google" in section, section


@pytest.mark.parametrize(
    ("sub_processor", "recipient"),
    [
        ("HubSpot, Inc. (US)", "HubSpot, Inc."),  # the country a note in the list alone
        ("HubSpot, Inc.", "HubSpot, Inc. (US)"),  # the note on the transfer's side
        ("HubSpot,  Inc.  (US)", "hubspot, inc."),  # spacing and case
    ],
)
def test_a_recipient_is_not_repeated_for_its_name_with_a_country_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sub_processor: str, recipient: str
) -> None:
    """A sub-processor and an onward transfer's recipient that differ only in case, spacing
    or a trailing note in brackets are one company, listed once; the note on the transfer's
    side, or spaced otherwise, the report named HubSpot, Inc. twice among the recipients."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    text = text.replace(
        'sub_processors = ["HubSpot, Inc. (US)", ', f'sub_processors = ["{sub_processor}", '
    )
    text = text.replace('recipient = "HubSpot, Inc.",', f'recipient = "{recipient}",')
    path.write_text(text)
    facts = art15_facts(load_config(path))
    assert facts.sub_processors["crm"] == [sub_processor, "Amazon Web Services EMEA SARL"]
    for lang, heading in (("en", ("Recipients",)), ("nl", ("Ontvangers",))):
        section = _section(lang, facts, heading)
        assert " ".join(section.split()).casefold().count("hubspot, inc.") == 1, section


def test_access_report_states_how_long_klantsync_keeps_its_own_data_about_the_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 15(1)(d): the periods of ``[retention]`` (the audit trail keyed by the person's
    pseudonym, their access bundle, dead letters) and the identity map kept until erasure,
    as the register states them. The report gave the flows' statements and pointed at the
    register, a document the person does not have."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    text = text.replace("audit_days = 2555", "audit_days = 3653")
    text = text.replace("access_bundles_days = 30", "access_bundles_days = 14")
    path.write_text(text)
    facts = art15_facts(load_config(path))
    for lang, heading, words in (
        ("en", ("Retention",), ("Audit log: 3653 days", "(Art. 15): 14 days", "until the")),
        ("nl", ("Bewaartermijn",), ("Auditlogboek: 3653 dagen", "15): 14 dagen", "tot het")),
    ):
        retention = _section(lang, facts, heading)
        for said in words:
            assert said in retention, f"{lang}: {said!r} missing: {retention}"
        assert "verwerkingsregister" not in retention and "processing register" not in retention


async def test_access_report_categories_cover_the_order_data_the_copy_shows(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The copy shows the person's shop order (what was bought, its total, the payment
    method, the IP address and browser it was placed from); the categories came from the
    mappings' canonical fields only, and none covered orders or online identifiers."""
    await seeded(shop, rt)
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    orders = [r for r in data["systems"]["shop"]["records"] if r.get("type") == "order"]
    assert orders and orders[0]["customer_ip_address"]  # the copy holds them
    assert {"orders", "online"} <= set(data["art15"]["categories"])
    en = (out / "report.en.md").read_text(encoding="utf-8")
    nl = (out / "report.nl.md").read_text(encoding="utf-8")
    en_categories = en.split("### Categories of personal data")[1].split("###")[0]
    nl_categories = nl.split("### Categorieën van persoonsgegevens")[1].split("###")[0]
    for key in ("orders", "online"):
        assert CATEGORIES[key][0] in en_categories.replace("\\", "")
        assert CATEGORIES[key][1] in nl_categories.replace("\\", "")


async def test_the_access_copy_holds_the_person_s_shop_reviews_and_its_categories_name_them(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The person's product reviews in the shop (what they wrote, the rating, the product)
    were in no copy. The shop's part lists them, one held for moderation too, and the
    categories name product reviews; another's review is not in it."""
    await seeded(shop, rt)
    theirs = [
        shop.add_review(CANARY_EMAIL, "Heerlijke koffie", reviewer=CANARY_NAME, rating=5),
        shop.add_review(CANARY_EMAIL, "Wacht op moderatie", status="hold", rating=2),
    ]
    shop.add_review("otto.ander@voorbeeld.nl", "Niet mijn smaak", reviewer="Otto", rating=1)
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    listed = [r for r in data["systems"]["shop"]["records"] if r.get("type") == "review"]
    assert sorted(r["product_review"]["id"] for r in listed) == theirs
    assert {r["product_review"]["rating"] for r in listed} == {5, 2}
    assert "reviews" in data["art15"]["categories"]
    en = (out / "report.en.md").read_text(encoding="utf-8")
    nl = (out / "report.nl.md").read_text(encoding="utf-8")
    assert "Heerlijke koffie" in en and "Niet mijn smaak" not in en
    assert CATEGORIES["reviews"][0] in en.replace("\\", "")
    assert CATEGORIES["reviews"][1] in nl.replace("\\", "")


def test_every_category_an_adapter_s_copy_holds_is_one_the_reports_can_name() -> None:
    """A kind of system's ``copy_categories`` are keys of the vocabulary's categories."""
    from adapters.registry import REGISTRY
    from connector.config import adapter_copy_categories

    for kind in REGISTRY:
        assert adapter_copy_categories(kind) <= set(CATEGORIES), kind


def _reports(tmp_path: Path, facts: Art15Facts) -> dict[str, str]:
    """The four reports of an empty bundle written from ``facts``, by file name."""
    out = tmp_path / "bundle"
    write_bundle(
        out,
        request_id="acc-20240601-abcd1234",
        subject_id="s" * 16,
        generated_at="2024-06-01T10:00:00+00:00",
        systems={"shop": ("woocommerce", []), "crm": ("hubspot", [])},
        connector={"subject_id": "s" * 16},
        facts=facts,
    )
    return {name: (out / name).read_text(encoding="utf-8") for name in BUNDLE_FILES}


def test_access_report_names_the_agency_running_the_connector_among_the_recipients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 15(1)(c): the agency that runs the connector handles every record it moves; the
    register lists it as a recipient ("operator of the connector"), the report did not."""
    config = load_config(example_config(tmp_path, monkeypatch))
    agency = config.privacy.agency
    assert agency and build_register(config, "en")["operator"]["legal_name"] == agency
    facts = art15_facts(config)
    assert _section("en", facts, ("Recipients",)).endswith(f"{agency} (Operator of the connector)")
    assert _section("nl", facts, ("Ontvangers",)).endswith(f"{agency} (Beheerder van de connector)")
    for name, text in _reports(tmp_path, facts).items():
        assert agency in text, f"{name} omits the agency"
    assert facts.as_dict()["operator"] == {"legal_name": agency, "role": "processor"}


def test_access_report_without_an_agency_names_no_operator(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A controller that runs the connector itself records no [privacy] agency."""
    facts = art15_facts(load_config(_config(tmp_path)))
    assert facts.operator == "" and facts.as_dict()["operator"] is None
    assert "connector" not in _section("en", facts, ("Recipients",))


def test_dutch_access_report_names_flows_in_dutch(env: dict[str, str], tmp_path: Path) -> None:
    """The source line said "flow" in the Dutch report; the register calls them koppelingen."""
    facts = art15_facts(load_config(_config(tmp_path)))
    nl = _section("nl", facts, ("Bron",))
    assert "koppeling shop-to-crm" in nl and "flow" not in nl, nl
    assert "flow shop-to-crm" in _section("en", facts, ("Source",))


def test_access_report_names_the_transfer_country_as_the_register_does(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The report gave the processor's country as its code ("US") in both languages; the
    register names it, in each language, with the article a sentence gives it ("in
    Verenigde Staten" read as a foreigner's Dutch)."""
    facts = art15_facts(load_config(_config(tmp_path, tail=US_CRM)))
    assert "in de Verenigde Staten;" in _section("nl", facts, ("EER",))
    assert "in the United States;" in _section("en", facts, ("EEA",))
    assert facts.as_dict()["transfers"][0]["country"] == "US"  # data.json keeps the code


def test_access_report_says_a_transfer_safeguard_is_missing_as_the_register_does(
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A transfer to the US with no safeguard recorded: the register says MISSING
    (ONTBREEKT); the report said "safeguard: -"."""
    tail = US_CRM.replace('transfer_mechanism = "EU-US Data Privacy Framework; SCCs"\n', "")
    facts = art15_facts(load_config(_config(tmp_path, tail=tail)))
    assert facts.transfers and not facts.transfers[0][3]
    assert "waarborg: ONTBREEKT" in _section("nl", facts, ("EER",))
    assert "safeguard: MISSING" in _section("en", facts, ("EEA",))


def test_access_report_names_an_onward_transfer_s_country_and_its_missing_safeguard(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A processor in Ireland whose sub-processor takes the data to India with no safeguard
    recorded: the report names India and says the safeguard is MISSING (ONTBREEKT), as the
    register does; data.json keeps the codes of both countries."""
    tail = (
        '\n[systems.crm.processor]\nlegal_name = "CRM Ireland Ltd"\ncountry = "IE"\n'
        'onward_transfers = [{ country = "IN" }]\n'
    )
    facts = art15_facts(load_config(_config(tmp_path, tail=tail)))
    assert "in Ierland en geeft ze door aan een subverwerker in India; waarborg: ONTBREEKT" in (
        _section("nl", facts, ("EER",))
    )
    assert "passes it on to a sub-processor in India; safeguard: MISSING" in (
        _section("en", facts, ("EEA",))
    )
    (row,) = facts.as_dict()["transfers"]
    assert (row["country"], row["processor_country"], row["safeguard"]) == ("IN", "IE", "")


#: The rights line on withdrawing consent, as each report begins it.
WITHDRAW = {
    "en": "Withdrawal of consent (Art. 7(3))",
    "nl": "Uw toestemming intrekken (art. 7 lid 3)",
}


def _says_withdrawal(tmp_path: Path, facts: Art15Facts) -> dict[str, bool]:
    """Per report and section (and data.json's ``rests_on_consent``), whether it tells the
    person they may withdraw their consent."""
    said = {
        f"rights.{lang}": WITHDRAW[lang] in _section(lang, facts, ("rights", "rechten"))
        for lang in ("en", "nl")
    }
    for name, text in _reports(tmp_path, facts).items():
        if name == "data.json":
            said[name] = json.loads(text)["art15"]["rests_on_consent"]
        else:
            lang = name.split(".")[1]
            said[name] = WITHDRAW[lang] in html.unescape(text.replace("\\", ""))
    return said


def test_the_rights_include_withdrawing_consent_where_a_destination_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 7(3), 13(2)(c): the newsletter is sent only people who consented to marketing
    (its mapping's ``requires_consent``), so that disclosure rests on consent, as the
    register says; the rights listed never told the person they may withdraw it at any
    time, and data.json did not say any processing rested on consent."""
    config = load_config(example_config(tmp_path, monkeypatch))
    assert config.mappings["news"].requires_consent
    said = _says_withdrawal(tmp_path, art15_facts(config))
    assert all(said.values()), said
    en = _section("en", art15_facts(config), ("rights",))
    assert "at any time" in en and "does not affect the lawfulness" in en


@pytest.mark.parametrize(
    ("tail", "rests"),
    [
        ("", False),  # a flow that states no basis, to a CRM that asks no consent
        ('\n[flows.privacy]\nlegal_basis = "contract"\n', False),
        ('\n[flows.privacy]\nlegal_basis = "consent"\n', True),
    ],
)
def test_the_rights_include_withdrawing_consent_only_where_a_flow_rests_on_it(
    env: dict[str, str], tmp_path: Path, tail: str, rests: bool
) -> None:
    """A flow whose ``legal_basis`` is consent rests on it for every destination: the
    withdrawal line is in both languages' rights and ``rests_on_consent`` is true. Where
    nothing rests on consent the line would promise a right the person has no use for: it
    is left out, and the key is false, not missing."""
    config = load_config(_config(tmp_path, tail=tail))
    assert not any(m.requires_consent for m in config.mappings.values())
    said = _says_withdrawal(tmp_path, art15_facts(config))
    assert said == dict.fromkeys(said, rests), said
    assert "rests_on_consent" in art15_facts(config).as_dict()
