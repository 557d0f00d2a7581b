"""Access reports' plain labels for Shopify, Mailchimp and Pipedrive, read from what each
adapter's ``find`` returns of its sandbox, and the mapping's labels where no table knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.access import Art15Facts, write_bundle
from connector.access_labels import CopyLabels, SystemLabels
from connector.adapter import Subject
from tests.adapters import test_mailchimp as tm
from tests.adapters import test_pipedrive as tp
from tests.adapters import test_shopify as ts
from tests.conftest import FakeClock, VirtualTime

EMAIL = "anna.jansen@voorbeeld.nl"


def _reports(tmp_path: Path, kind: str, records: list[dict[str, Any]], copy: Any) -> list[str]:
    """The Dutch and English Markdown reports of ``records``, labelled by ``copy``."""
    facts = Art15Facts(
        purposes={}, categories=[], recipients=[("sys", kind, "")], retention=[],
        sources=[], controller={},
    )  # fmt: skip
    out = tmp_path / "bundle"
    write_bundle(
        out,
        request_id="r1",
        subject_id="s1",
        generated_at="2026-01-01T00:00:00+00:00",
        systems={"sys": (kind, records)},
        connector={},
        facts=facts,
        labels={"sys": SystemLabels(copy)},
    )
    # Markdown's escapes dropped, so a row reads as the person sees it.
    return [
        (out / f"report.{lang}.md").read_text(encoding="utf-8").replace("\\", "")
        for lang in ("nl", "en")
    ]


async def test_a_shopify_copy_heads_the_customer_and_orders_and_labels_its_address_book(
    tmp_path: Path,
) -> None:
    """The customer's address book (``addresses``), an order address's ``name``, the
    newsletter consent and the amount spent reached the reports as Shopify's keys."""
    sandbox = ts.ShopifySandbox(
        clock=FakeClock(), wall_clock=FakeClock(ts.T0), shop_domain=ts.SHOP_DOMAIN
    )
    sandbox.add_person(
        EMAIL, "Anna", "Jansen", "+31612345678", address1="Straat 1", city="Utrecht",
        zip="3511AA", country_code="NL", note="Vaste klant", tags=["vip"], locale="nl",
    )  # fmt: skip
    sandbox.add_order(EMAIL, note="Graag aanbellen", items=("Mok", "Bord"))
    shop = ts.make_harness(sandbox, FakeClock(), FakeClock(ts.T0))
    records = await shop.adapter.find(Subject(email=EMAIL))
    await shop.client.aclose()
    nl, en = _reports(tmp_path, "shopify", records, shop.adapter.copy_labels)
    assert "Klantaccount in de webshop (Shopify)" in nl and "Bestelling 1001" in nl
    assert "Customer account in the webshop (Shopify)" in en and "Order 1001" in en
    assert "| Adresboek, adres 1: straat en huisnummer | Straat 1 |" in nl
    assert "| Address book, address 1: city | Utrecht |" in en
    assert "| Factuuradres: naam | Anna Jansen |" in nl and "Delivery address: name" in en
    assert "Toestemming nieuwsbrief" in nl and "Spent in the shop" in en
    assert "Bestelregel 2: product" in nl and "Notitie van de winkel" in nl
    for text in (nl, en):
        for key in ("addresses.0.", "Address.name", "emailMarketingConsent", "amountSpent"):
            assert f"| {key}" not in text and f".{key}" not in text, key


async def test_a_mailchimp_copy_heads_each_audience_and_labels_its_activity_feed(
    tmp_path: Path,
) -> None:
    """The adapter reads the member's ``activity-feed``, whose events carry
    ``activity_type``, ``created_at_timestamp`` and ``campaign_title``; the table named the
    older ``activity`` endpoint's ``action``, ``timestamp`` and ``title``, so no event was
    labelled. The member's full name and source were unlabelled too; a note is labelled
    without its author, a staff member the copy leaves out."""
    sandbox = tm.MailchimpSandbox()
    sandbox.add_person(EMAIL, "Anna", "Jansen", "+31612345678")
    sandbox.add_person(EMAIL, "Anna", "Jansen", list_id=sandbox.list_ids[1])
    sandbox.add_note(EMAIL, "Belde over haar abonnement")
    sandbox.add_activity(EMAIL, "open", campaign_title="Nieuwsbrief maart")
    news = tm.make_harness(sandbox)
    records = await news.adapter.find(Subject(email=EMAIL))
    await news.client.aclose()
    nl, en = _reports(tmp_path, "mailchimp", records, news.adapter.copy_labels)
    for list_id in sandbox.list_ids:
        assert f"Nieuwsbriefabonnement (Mailchimp, lijst {list_id})" in nl
        assert f"Newsletter subscription (Mailchimp, list {list_id})" in en
    assert "| Activiteit 1: wat | open |" in nl and "| Activity 1: e-mail | Nieuwsbrief" in en
    assert "Activiteit 1: wanneer" in nl and "| Notitie 1: tekst | Belde over" in nl
    assert "geschreven door" not in nl and "written by" not in en
    assert "| Naam | Anna Jansen |" in nl and "Signed up through" in en
    for text in (nl, en):
        for key in ("activity.0.", "notes.0.created_by", "full_name", "source"):
            assert f"| {key}" not in text, key


async def test_a_mailchimp_member_s_status_says_what_it_means_for_the_person(
    tmp_path: Path,
) -> None:
    """A member Mailchimp cleaned (its e-mails bounced) read "Subscription status: cleaned",
    a code the person cannot read; each status now says what it means, in both languages."""
    sandbox = tm.MailchimpSandbox()
    sandbox.add_person(EMAIL, "Anna", "Jansen", status="cleaned")
    sandbox.add_person(EMAIL, "Anna", "Jansen", list_id=sandbox.list_ids[1], status="unsubscribed")
    news = tm.make_harness(sandbox)
    records = await news.adapter.find(Subject(email=EMAIL))
    await news.client.aclose()
    nl, en = _reports(tmp_path, "mailchimp", records, news.adapter.copy_labels)
    assert "| Subscription status | cleaned: e-mails to this address bounced" in en
    assert "| Status van het abonnement | cleaned: e-mails aan dit adres kwamen niet aan" in nl
    assert "| Subscription status | unsubscribed: you are unsubscribed" in en
    assert "| Status van het abonnement | unsubscribed: u bent afgemeld" in nl


async def test_a_pipedrive_copy_labels_the_person_s_deals_activities_and_notes(
    tmp_path: Path,
) -> None:
    """The person's flat ``phone`` (beside its labelled ``email``), and when its notes,
    deals and activities were made or changed, reached the reports as Pipedrive's keys."""
    sandbox = tp.PipedriveSandbox()
    person = sandbox.add_person(EMAIL, "Anna", "Jansen", "+31612345678")
    sandbox.add_note(person, "Belt graag 's ochtends")
    sandbox.add_deal(person, "Grote bestelling", value=100)
    sandbox.add_activity(person, "Terugbellen", due_date="2026-01-02")
    deals = tp.make_harness(sandbox, VirtualTime(), tp.WallClock())
    records = await deals.adapter.find(Subject(email=EMAIL))
    await deals.client.aclose()
    nl, en = _reports(tmp_path, "pipedrive", records, deals.adapter.copy_labels)
    assert "Contactpersoon in Pipedrive" in nl and "Contact person in Pipedrive" in en
    assert "| Telefoonnummer | +31612345678 |" in nl and "| Phone number | +31612345678 |" in en
    assert "| Deal 1: titel | Grote bestelling |" in nl and "Deal 1: created" in en
    assert "| Activity 1: subject | Terugbellen |" in en and "Activiteit 1: gedaan" in nl
    assert "Notitie 1: laatst gewijzigd" in nl and "| Note 1: text |" in en
    for text in (nl, en):
        for key in ("phone", "notes.0.update_time", "deals.0.add_time", "activities.0.done"):
            assert f"| {key} |" not in text, key


def test_a_mapped_field_no_table_knows_takes_the_mapping_s_label_on_the_person_only(
    tmp_path: Path,
) -> None:
    """A custom field the mapping reads (here a merge field ``MMERGE7`` mapped to the
    canonical city) reads as the canonical field's label on a person's record, not on an
    order, whose key of the same name holds something else; an unknown key stays as given."""

    def kind_of(record: dict[str, Any]) -> tuple[str, str]:
        return ("order", "7") if record.get("type") == "order" else ("subscription", "L1")

    copy = CopyLabels(vendor="Mailchimp", kind_of=kind_of)
    labels = SystemLabels(copy, {"merge_fields.MMERGE7": "city"})
    person = {"merge_fields": {"MMERGE7": "Utrecht"}, "other": "x"}
    order = {"type": "order", "merge_fields": {"MMERGE7": "Utrecht"}}
    assert labels.label("nl", person, "merge_fields.MMERGE7") == "Plaats"
    assert labels.label("en", person, "merge_fields.MMERGE7") == "City"
    assert labels.label("en", order, "merge_fields.MMERGE7") == "merge_fields.MMERGE7"
    assert labels.label("en", person, "other") == "other"
