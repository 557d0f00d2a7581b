"""The access copy says which of the person's fields klantsync last sent each system, and
when (Art. 15(1)(c)): by the field set the store keeps of the last delivery (migration 27),
in canonical names, never a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.dsr import DsrService
from connector.runtime import Runtime
from connector.state import WITHDRAWAL
from tests.conftest import CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, CANARY_PHONE_E164

HEADINGS = {
    "en": "What klantsync last sent each system about you",
    "nl": "Wat klantsync elk systeem het laatst over u stuurde",
}
PHONE_LABELS = ("Phone number", "Telefoonnummer")


def _sections(out: Path) -> dict[str, str]:
    """The new section of each report, by file name: from its heading to the next one."""
    found = {}
    for lang, heading in HEADINGS.items():
        for name, end in ((f"report.{lang}.md", "\n## "), (f"report.{lang}.html", "<h2>")):
            text = (out / name).read_text(encoding="utf-8").replace("\\", "")
            assert heading in text, name
            found[name] = text.split(heading, 1)[1].split(end, 1)[0]
    return found


def _sent(out: Path) -> dict[str, Any]:
    sent: dict[str, Any] = json.loads((out / "data.json").read_text(encoding="utf-8"))[
        "sent_by_klantsync"
    ]
    return sent


def _delivered_at(rt: Runtime, system: str) -> str:
    ((at,),) = rt.store.db.execute(
        "SELECT delivered_at FROM delivered WHERE system=?", (system,)
    ).fetchall()
    return str(at)


async def test_the_copy_lists_the_fields_the_crm_was_last_sent_and_not_one_emptied_since(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """Synced with a phone number, the copy lists the phone among what HubSpot was sent;
    once the person removed it in the shop and the next sync emptied it there, the next
    copy lists the fields of that write, without the phone, and when it was delivered."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    await rt.engine.sync()
    service = DsrService(rt)
    before = tmp_path / "before"
    assert (await service.access(CANARY_EMAIL, before)).status == "completed"
    assert "phone" in _sent(before)["crm"]["fields"]

    shop.touch(CANARY_EMAIL, billing__phone="")
    await rt.engine.sync()
    out = tmp_path / "after"
    assert (await service.access(CANARY_EMAIL, out)).status == "completed"
    sent = _sent(out)
    assert set(sent) == {"crm"}  # the shop is only read from
    crm_sent = sent["crm"]
    assert crm_sent["fields_recorded"] is True and crm_sent["consent_withdrawn"] is False
    assert {"email", "first_name", "last_name", "city"} <= set(crm_sent["fields"])
    assert "phone" not in crm_sent["fields"]
    assert crm_sent["last_sent"] == _delivered_at(rt, "crm")
    for name, section in _sections(out).items():
        label = "Voornaam" if ".nl." in name else "First name"
        assert "crm (hubspot)" in section and label in section, name
        assert all(phone not in section for phone in PHONE_LABELS), name
        assert crm_sent["last_sent"] in section, name
    for name, section in _sections(before).items():
        assert any(phone in section for phone in PHONE_LABELS), name


async def test_a_delivery_from_before_field_sets_were_kept_says_they_are_not_recorded(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A row delivered before the store kept field sets has none: the copy does not guess
    which the write held, it says so and gives what the mapping may have sent."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    await rt.engine.sync()
    rt.store.db.execute("UPDATE delivered SET sent=NULL")
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    crm_sent = _sent(out)["crm"]
    assert crm_sent["fields_recorded"] is False and crm_sent["fields"] is None
    mapping = rt.systems["crm"].mapping
    assert set(crm_sent["may_have_been_sent"]) == {f.canonical for f in mapping.sent_fields()}
    assert "phone" in crm_sent["may_have_been_sent"]
    for name, section in _sections(out).items():
        wording = "niet vastgelegd" if ".nl." in name else "not recorded"
        assert wording in section, name
        assert "verstuurd kunnen zijn" in section or "may have been sent" in section, name


async def test_the_section_names_fields_and_never_holds_a_value(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The person's e-mail, name, phone and city are in the systems' records in the copy,
    never in what it says klantsync sent: names of fields only."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    await rt.engine.sync()
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    sent_text = json.dumps(_sent(out))
    assert "email" in sent_text and "phone" in sent_text
    values = (CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, CANARY_PHONE_E164, "87654321", "Utrecht")
    for where, text in {"data.json": sent_text, **_sections(out)}.items():
        for value in values:
            assert value not in text, (where, value)
    assert CANARY_NAME in json.dumps(json.loads((out / "data.json").read_text())["systems"])


async def test_a_withdrawal_last_sent_is_said_with_the_fields_of_the_write_before_it(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """A withdrawal of consent keeps the field set of the write before it: the copy says the
    last thing sent was the withdrawal (unsubscribed), and which fields came before."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    await rt.engine.sync()
    rt.store.db.execute("UPDATE delivered SET payload_hash=? || payload_hash", (WITHDRAWAL,))
    out = tmp_path / "bundle"
    assert (await DsrService(rt).access(CANARY_EMAIL, out)).status == "completed"
    crm_sent = _sent(out)["crm"]
    assert crm_sent["consent_withdrawn"] is True and "phone" in crm_sent["fields"]
    for name, section in _sections(out).items():
        assert ("afgemeld" if ".nl." in name else "unsubscribed") in section, name


def test_paths_map_back_to_canonical_names_and_the_latest_write_of_the_person_s_ids_counts(
    rt: Runtime,
) -> None:
    """Under a former address and the current one, the latest delivery per system counts; a
    path the mapping no longer knows is given as is, as are a removed system's paths."""
    from connector.access import sent_by_klantsync

    mappings = {"crm": rt.systems["crm"].mapping}
    sent = sent_by_klantsync(
        [
            ("crm", "2024-06-02T10:00:00+00:00", False, frozenset({"email", "lifecyclestage"})),
            ("crm", "2024-06-01T10:00:00+00:00", False, frozenset({"email", "phone"})),
            ("gone", "2024-05-01T10:00:00+00:00", False, None),
            ("old", "2024-05-01T10:00:00+00:00", False, frozenset({"FNAME"})),
        ],
        mappings,
    )
    assert sent["crm"]["fields"] == ["email", "lifecyclestage"]
    assert sent["crm"]["last_sent"] == "2024-06-02T10:00:00+00:00"
    assert sent["gone"] == {
        "fields": None,
        "fields_recorded": False,
        "may_have_been_sent": [],
        "last_sent": "2024-05-01T10:00:00+00:00",
        "consent_withdrawn": False,
    }
    assert sent["old"]["fields"] == ["FNAME"]
