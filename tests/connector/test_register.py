"""The Art. 30 register: built from the running config, in nl and en, as md, html and json."""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.cli import main
from connector.config import Config, load_config
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.register import build_register, country_in_text
from connector.register_render import render
from tests.conftest import example_config


def _text(config: Config, lang: str, fmt: str) -> str:
    """The rendered register, unescaped so assertions read plain words."""
    out = render(build_register(config, lang), fmt)
    if fmt == "html":
        return html.unescape(out)
    if fmt == "md":
        return out.replace("\\", "")
    return json.dumps(json.loads(out), ensure_ascii=False)


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_register_of_the_example_config_lists_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Every system, category sent to it, purpose, retention and processor appears."""
    config = load_config(example_config(tmp_path, monkeypatch))
    text = _text(config, lang, fmt)
    assert config.controller is not None
    assert config.controller.name in text and config.controller.kvk in text
    for name, settings in config.systems.items():
        assert name in text
        assert settings.processor is not None
        assert settings.processor.legal_name in text
        assert settings.processor.agreement_reference in text
        for sub in settings.processor.sub_processors:
            assert sub in text
    index = 1 if lang == "nl" else 0
    for name in config.mappings["crm"].outbound_fields:
        field = CANONICAL_FIELDS[name]
        assert CATEGORIES[field.category][index] in text
        assert (field.label_nl if lang == "nl" else field.label_en) in text
        assert config.mappings["crm"].fields[name].purpose in text
    for flow in config.flows:
        assert flow.privacy is not None
        for purpose in flow.privacy.purposes:
            assert purpose in text
        assert flow.privacy.retention in text
    for subjects in config.privacy.data_subjects:
        assert subjects in text
    if fmt != "json":  # JSON carries data and labels of data; headings are the renderers'
        heading = "Categorieën persoonsgegevens" if lang == "nl" else "Categories of personal data"
        assert heading in text


def test_dutch_register_uses_the_terms_of_a_verwerkingsregister(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dutch headings are the ones Dutch controllers use."""
    text = _text(load_config(example_config(tmp_path, monkeypatch)), "nl", "html")
    for heading in (
        "Naam en contactgegevens verwerkingsverantwoordelijke",
        "Doeleinden van de verwerking",
        "Categorieën betrokkenen",
        "Categorieën persoonsgegevens",
        "Categorieën ontvangers",
        "Doorgifte naar derde landen",
        "Bewaartermijnen",
        "Beveiligingsmaatregelen",
        "Verwerkersovereenkomst",
        "Uitvoering van een overeenkomst",
    ):
        assert heading in text


def test_adding_a_field_to_a_mapping_adds_it_to_the_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new [fields.job_title] in the HubSpot mapping shows up with no other change."""
    path = example_config(tmp_path, monkeypatch)
    before = build_register(load_config(path), "en")
    crm_fields = [
        f["name"] for g in before["personal_data"]["received"][0]["categories"] for f in g["fields"]
    ]
    assert "job_title" not in crm_fields
    with (tmp_path / "mappings/hubspot.toml").open("a") as mapping:
        mapping.write(
            '\n[fields.job_title]\npath = "jobtitle"\npurpose = "B2B account management"\n'
        )
    config = load_config(path)
    after = build_register(config, "en")
    (crm,) = [r for r in after["personal_data"]["received"] if r["system"] == "crm"]
    professional = next(g for g in crm["categories"] if g["category"] == "professional")
    assert {"name": "job_title", "label": "Job title", "purpose": "B2B account management"} in (
        professional["fields"]
    )
    assert "Functie" in _text(config, "nl", "md")
    assert "B2B account management" in _text(config, "en", "html")


def test_only_outbound_fields_are_listed_as_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field the CRM mapping only reads (direction "in") is not listed as disclosed to it."""
    path = example_config(tmp_path, monkeypatch)
    mapping = tmp_path / "mappings/hubspot.toml"
    mapping.write_text(
        mapping.read_text().replace('path = "company"\n', 'path = "company"\ndirection = "in"\n')
    )
    reg = build_register(load_config(path), "en")
    received = {r["system"]: r for r in reg["personal_data"]["received"]}
    names = {f["name"] for g in received["crm"]["categories"] for f in g["fields"]}
    assert "company" not in names and "email" in names
    assert [s["system"] for s in reg["personal_data"]["provided"]] == ["shop"]


def test_the_email_is_listed_as_sent_whatever_its_direction_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write carries the e-mail (how each system is told who the record is), so a
    destination mapping that reads it only ("in") still discloses it: listed all the same,
    and counted in the minimisation measure."""
    path = example_config(tmp_path, monkeypatch)
    mapping = tmp_path / "mappings/hubspot.toml"
    text = mapping.read_text()
    assert text.count('path = "email"\n') == 1
    mapping.write_text(text.replace('path = "email"\n', 'path = "email"\ndirection = "in"\n'))
    reg = build_register(load_config(path), "en")
    received = {r["system"]: r for r in reg["personal_data"]["received"]}
    names = {f["name"] for g in received["crm"]["categories"] for f in g["fields"]}
    assert "email" in names


def test_check_lists_the_email_a_destination_is_sent_as_the_register_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` listed a destination's outbound fields: with its e-mail field read only
    ("in"), it said the CRM is not sent the e-mail, which every write carries."""
    path = example_config(tmp_path, monkeypatch)
    mapping = tmp_path / "mappings/hubspot.toml"
    mapping.write_text(
        mapping.read_text().replace('path = "email"\n', 'path = "email"\ndirection = "in"\n')
    )
    main(["-c", str(path), "check", "--json"])
    sent = json.loads(capsys.readouterr().out)["systems"]["crm"]["fields_sent"]
    assert "email" in sent


def test_a_system_sent_withdrawals_says_what_it_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newsletter receives only people who consented, and also learns who withdrew:
    their e-mail with the mapping's withdrawal (status = unsubscribed). The register used
    to say only the first."""
    config = load_config(example_config(tmp_path, monkeypatch))
    reg = build_register(config, "en")
    received = {r["system"]: r for r in reg["personal_data"]["received"]}
    assert received["news"]["withdrawn"] == {"status": "unsubscribed"}
    assert received["crm"]["withdrawn"] == {}
    assert "sent only their e-mail address with the withdrawal (status = unsubscribed)" in (
        _text(config, "en", "md")
    )
    assert "met de intrekking (status = unsubscribed)" in _text(config, "nl", "html")


def test_a_system_in_no_flow_is_listed_with_what_requests_send_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A system no flow names still receives what data subject requests carry (a
    correction's values, an erasure), so it holds personal data: the register lists what
    its mapping allows, and says it gets no sync. It used to list flows' destinations only."""
    path = example_config(tmp_path, monkeypatch)
    path.write_text(
        path.read_text().replace(
            'destinations = ["crm", "news", "deals"]', 'destinations = ["crm", "news"]'
        )
    )
    config = load_config(path)
    reg = build_register(config, "en")
    received = {r["system"]: r for r in reg["personal_data"]["received"]}
    assert received["deals"]["in_no_flow"] and not received["crm"]["in_no_flow"]
    names = {f["name"] for g in received["deals"]["categories"] for f in g["fields"]}
    assert "email" in names
    assert "This system is sent no sync" in _text(config, "en", "md")
    assert "krijgt geen synchronisatie" in _text(config, "nl", "html")


def test_a_system_klantsync_never_writes_in_no_flow_is_said_to_get_erasures_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Shopify shop in no flow gets no correction (klantsync never writes to Shopify):
    the register says it gets erasures only, and lists nothing as disclosed to it."""
    monkeypatch.setenv("KLANTSYNC_SHOPIFY_TOKEN", "shpat-register-test")
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    for line in (
        "[systems.webshop]",
        'adapter = "shopify"',
        'base_url = "https://<store>.myshopify.com"',
        'mapping = "mappings/shopify.toml"',
        'credentials = { access_token = "env:KLANTSYNC_SHOPIFY_TOKEN" }',
    ):
        text = text.replace(f"# {line}", line.replace("<store>", "klant"), 1)
    path.write_text(text)
    config = load_config(path)
    received = {r["system"]: r for r in build_register(config, "en")["personal_data"]["received"]}
    assert received["webshop"]["in_no_flow"] and not received["webshop"]["written"]
    en, nl = _text(config, "en", "md"), _text(config, "nl", "md")
    assert "This system is sent no sync and no corrections" in en
    assert "krijgt geen synchronisatie en geen correcties" in nl
    section = en[en.index("Disclosed to webshop") :]
    assert section.index("erasures are carried to it") < section.index("##")
    assert "| " not in section[: section.index("##")]  # no table of fields sent to it


def test_a_withdrawal_marker_is_written_as_the_mapping_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A boolean marker is ``true`` as in TOML, not Python's ``True``."""
    mapping = tmp_path / "news.toml"
    repo_mapping = Path(__file__).resolve().parents[2] / "mappings" / "mailchimp.toml"
    mapping.write_text(
        repo_mapping.read_text().replace(
            'withdrawn = { status = "unsubscribed" }',
            'withdrawn = { status = "unsubscribed", opted_out = true }',
        )
    )
    path = example_config(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace('"mappings/mailchimp.toml"', f'"{mapping}"'))
    received = {
        r["system"]: r for r in build_register(load_config(path), "en")["personal_data"]["received"]
    }
    assert received["news"]["withdrawn"] == {"status": "unsubscribed", "opted_out": "true"}


def test_the_register_claims_no_permanent_deletion_a_system_does_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The register said erasures are carried out "at every system with permanent deletion",
    while Pipedrive marks a person deleted and purges them after 30 days, and the erasure's
    own receipt says so (reversible); it now says each system deletes as it can."""
    config = load_config(example_config(tmp_path, monkeypatch))
    assert "permanent deletion" not in _text(config, "en", "md")
    assert "definitieve verwijdering" not in _text(config, "nl", "md")
    assert "the signed receipt says which for each system" in _text(config, "en", "html")


def test_config_values_are_escaped_in_html_and_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller name with markup neither injects HTML nor breaks a Markdown table."""
    path = example_config(tmp_path, monkeypatch)
    path.write_text(
        path.read_text().replace(
            'name = "Voorbeeld Webwinkel B.V."', 'name = "<script>x</script> & Zn | B.V."'
        )
    )
    config = load_config(path)
    page = render(build_register(config, "nl"), "html")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt; &amp; Zn" in page
    assert "@media print" in page
    markdown = render(build_register(config, "nl"), "md")
    rows = [line for line in markdown.splitlines() if "script" in line]
    assert rows
    for row in rows:  # two cells each: the name's own pipe is escaped
        assert row.count("|") - row.count("\\|") == 3


def test_transfer_outside_the_eea_is_listed_with_its_safeguard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor in the US appears under transfers with its mechanism and country name."""
    path = example_config(tmp_path, monkeypatch)
    us = 'country = "US"\ntransfer_mechanism = "EU-US Data Privacy Framework"'
    path.write_text(path.read_text().replace('country = "IE"', us))
    reg = build_register(load_config(path), "nl")
    transfer = {t["system"]: t for t in reg["transfers"] if not t["onward"]}["crm"]
    assert transfer["country"] == "US"
    assert transfer["country_name"] == "Verenigde Staten"
    assert transfer["mechanism"].startswith("EU-US Data Privacy Framework")
    assert transfer["onward"] is False


def test_a_processor_in_kosovo_is_registered_as_a_transfer_named_kosovo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XK is user-assigned in ISO 3166-1 (pycountry lacks it): refused, a processor there
    could not be registered at all; named by its code, the register said "XK"."""
    path = example_config(tmp_path, monkeypatch)
    xk = 'country = "xk"\ntransfer_mechanism = "SCCs"'
    path.write_text(path.read_text().replace('country = "IE"', xk))
    for lang in ("nl", "en"):
        reg = build_register(load_config(path), lang)
        transfer = {t["system"]: t for t in reg["transfers"] if not t["onward"]}["crm"]
        assert (transfer["country"], transfer["country_name"]) == ("XK", "Kosovo")
        assert transfer["mechanism"].startswith("SCCs")


def test_security_measures_follow_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Private CA, admin token and loopback listener are stated only when configured."""
    path = example_config(tmp_path, monkeypatch)
    codes = {m["code"]: m["text"] for m in build_register(load_config(path), "en")["security"]}
    assert {"tls", "encryption", "pseudonymisation", "audit-log", "minimisation"} <= set(codes)
    assert "shop, crm" in codes["private-ca"]
    assert "No admin API token" in codes["admin-api"]
    monkeypatch.setenv("KLANTSYNC_ADMIN_TOKEN", "t0ken")
    text = path.read_text()
    text = text.replace(
        '# admin_token = "env:KLANTSYNC_ADMIN_TOKEN"', 'admin_token = "env:KLANTSYNC_ADMIN_TOKEN"'
    )
    text = text.replace('ca_bundle = "var/sandbox/tls/ca.pem"', "")
    path.write_text(
        text.replace("allow_insecure_loopback = false", "allow_insecure_loopback = true")
    )
    codes = {m["code"]: m["text"] for m in build_register(load_config(path), "en")["security"]}
    assert "private-ca" not in codes
    assert "bearer token" in codes["admin-api"] and "this machine only" in codes["admin-api"]
    assert "insecure-loopback" in codes
    assert "t0ken" not in json.dumps(codes)


def test_processor_record_names_the_agency_and_the_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Art. 30(2) record names the agency, the controller and the flows it runs."""
    reg = build_register(load_config(example_config(tmp_path, monkeypatch)), "en")
    record: dict[str, Any] = reg["processor_record"]
    assert record["processor"] == "Voorbeeld Digital Agency B.V."
    assert record["controller"] == "Voorbeeld Webwinkel B.V."
    assert any("shop-to-crm" in a for a in record["activities"])


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_the_processor_record_names_the_controller_s_data_protection_officer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Art. 30(2)(a) asks the processor's record for the contact details of each controller
    it acts for and of its data protection officer; the agency's record named the controller
    and its e-mail, not the DPO the config gives. It names the DPO now, where there is one."""
    path = example_config(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace('dpo = ""', 'dpo = "fg@voorbeeld.example"'))
    config = load_config(path)
    assert build_register(config, lang)["processor_record"]["controller_dpo"] == (
        "fg@voorbeeld.example"
    )
    text = _text(config, lang, fmt)
    heading = "30(2)" if lang == "en" else "30 lid 2"
    record = text[text.index('"processor_record"' if fmt == "json" else heading) :]
    assert "fg@voorbeeld.example" in record
    if fmt != "json":
        label = "van de verwerkingsverantwoordelijke" if lang == "nl" else "DPO) of the controller"
        assert label in record
    (tmp_path / "none").mkdir()
    without = _text(load_config(example_config(tmp_path / "none", monkeypatch)), lang, fmt)
    assert "DPO) of the controller" not in without and "FG) van de" not in without


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_register_json_with_another_format_on_standard_output_is_refused_not_ignored(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    """`register --format html --json` printed JSON, the --format given dropped without a
    word: a script piping it into a page got JSON. On standard output the two contradict
    each other, so it is bad usage (exit 2) naming both, answered as JSON; with `--out` the
    file holds --format and --json tells what was written, as before."""
    path = example_config(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(["-c", str(path), "register", "--format", fmt, "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "usage" and "--format" in answer["message"]
    assert "--json" in answer["message"]
    out = tmp_path / f"register.{fmt}"
    assert main(["-c", str(path), "register", "--format", fmt, "--json", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == fmt
    assert main(["-c", str(path), "register", "--format", "json", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lang"] == "nl"


def test_register_command_writes_each_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klantsync register` writes html to --out and json to stdout, exit 0."""
    path = example_config(tmp_path, monkeypatch)
    out = tmp_path / "register.html"
    args = ["-c", str(path), "register", "--lang", "en", "--format", "html", "--out", str(out)]
    assert main(args) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["-c", str(path), "register", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["lang"] == "nl" and {r["system"] for r in data["recipients"]} == {
        "shop",
        "crm",
        "news",
        "deals",
    }


def test_register_states_the_retention_of_everything_the_connector_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each [retention] setting is a line of the register, with the configured days."""
    from connector.privacy import RetentionSettings

    config = load_config(example_config(tmp_path, monkeypatch))
    listed = {
        row["item"]: row["days"]
        for row in build_register(config, "en")["retention"]["connector"]
        if row["days"] is not None
    }
    assert set(listed) == set(RetentionSettings.model_fields)
    assert listed == {key: getattr(config.retention, key) for key in listed}


def test_register_to_a_file_with_json_says_where_in_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`register --out F --json` prints where it wrote, in which format and language; the
    file holds --format (JSON when only --json is given, as before)."""
    path = example_config(tmp_path, monkeypatch)
    out = tmp_path / "register.md"
    args = ["-c", str(path), "register", "--lang", "en", "--format", "md", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    note = json.loads(capsys.readouterr().out)
    assert note == {"written": str(out), "format": "md", "lang": "en"}
    assert out.read_text().startswith("# ")
    as_json = tmp_path / "register.json"
    assert main(["-c", str(path), "register", "--out", str(as_json), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "json"
    assert json.loads(as_json.read_text())["lang"] == "nl"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any = None) -> Config:
    path = example_config(tmp_path, monkeypatch)
    if edit is not None:
        path.write_text(edit(path.read_text()))
    return load_config(path)


def _measures(config: Config, lang: str) -> dict[str, str]:
    return {m["code"]: m["text"] for m in build_register(config, lang)["security"]}


def test_the_register_says_what_an_emptied_field_becomes_and_which_a_mapping_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 5(1)(d): a field the source empties is emptied where the flow wrote it; a field
    a destination's mapping keeps when emptied is named, in either language."""
    config = _config(tmp_path, monkeypatch)
    assert "emptied in each system" in _measures(config, "en")["accuracy"]
    assert "Kept by" not in _measures(config, "en")["accuracy"]
    hubspot = tmp_path / "mappings" / "hubspot.toml"
    text = hubspot.read_text()
    assert 'path = "company"\n' in text
    hubspot.write_text(
        text.replace('path = "company"\n', 'path = "company"\nkeep_when_emptied = true\n')
    )
    config = load_config(config.path)
    assert _measures(config, "en")["accuracy"].endswith("Kept by their mappings: crm.company.")
    assert "Behouden door hun mapping: crm.company." in _measures(config, "nl")["accuracy"]


def test_a_system_reached_over_plain_http_is_not_said_to_use_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the development switch on and the CRM at http://127.0.0.1, the register names
    the CRM as the exception to TLS, and does not say its certificates are verified."""

    def edit(text: str) -> str:
        text = text.replace("allow_insecure_loopback = false", "allow_insecure_loopback = true")
        return text.replace(
            'base_url = "https://127.0.0.1:8444"', 'base_url = "http://127.0.0.1:8444"'
        )

    config = _config(tmp_path, monkeypatch, edit)
    assert config.systems["crm"].base_url.startswith("http://")
    en, nl = _measures(config, "en"), _measures(config, "nl")
    assert "Every connection to the systems uses TLS" not in en["tls"]
    assert "EXCEPT to crm" in en["tls"] and "BEHALVE met crm" in nl["tls"]
    assert "Alle verbindingen met de systemen gebruiken TLS" not in nl["tls"]
    assert "crm" not in en["private-ca"] and "shop" in en["private-ca"]


def test_a_system_reached_over_http_written_in_capitals_is_not_said_to_use_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config reads the scheme in any case; so does the register."""

    def edit(text: str) -> str:
        text = text.replace("allow_insecure_loopback = false", "allow_insecure_loopback = true")
        return text.replace(
            'base_url = "https://127.0.0.1:8444"', 'base_url = "HTTP://127.0.0.1:8444"'
        )

    en = _measures(_config(tmp_path, monkeypatch, edit), "en")
    assert "EXCEPT to crm" in en["tls"]


def _without_processor(system: str, following: str) -> Any:
    def edit(text: str) -> str:
        pattern = rf"\[systems\.{system}\.processor\].*?(?=\n\[systems\.{following}\])"
        return re.sub(pattern, "", text, flags=re.S)

    return edit


def test_where_processors_are_unknown_no_transfer_is_ruled_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no processor recorded for HubSpot and Mailchimp the register does not say that
    nothing leaves the EEA: it says where they process is not recorded."""
    crm, news = _without_processor("crm", "news"), _without_processor("news", "deals")
    config = _config(tmp_path, monkeypatch, lambda text: news(crm(text)))
    assert config.systems["news"].processor is None and config.systems["crm"].processor is None
    en = _text(config, "en", "md")
    nl = _text(config, "nl", "html")
    assert "No personal data is processed outside the European Economic Area" not in en
    assert "Where crm, news process the data is not recorded" in en
    assert "Er worden geen persoonsgegevens buiten de Europese Economische Ruimte" not in nl
    assert build_register(config, "en")["transfers_unknown"] == ["crm", "news"]


def test_a_processor_whose_country_is_left_out_is_a_gap_not_the_netherlands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor block without ``country`` is not registered as processing in NL (the
    model's default): the register says it is not recorded and check lists a gap."""
    from connector.compliance import check_compliance

    config = _config(tmp_path, monkeypatch, lambda text: text.replace('country = "US"\n', ""))
    reg = build_register(config, "en")
    assert reg["transfers_unknown"] == ["news"]
    (news,) = [r for r in reg["recipients"] if r["system"] == "news"]
    assert news["processor"]["country"] is None
    gaps = [g for g in check_compliance(config) if g.code == "no-country"]
    assert [g.key for g in gaps] == ["systems.news.processor.country"]


def test_an_independent_controller_is_not_said_to_lack_a_processing_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipient with role = "controller" signs no Art. 28 agreement (check asks none):
    the register says it is not required, instead of MISSING."""
    from connector.compliance import check_compliance

    def edit(text: str) -> str:
        return text.replace(
            'legal_name = "Pipedrive OÜ"\nagreement_reference = "Pipedrive Data Processing '
            'Addendum"',
            'legal_name = "Pipedrive OÜ"\nrole = "controller"\nagreement_reference = ""',
        )

    config = _config(tmp_path, monkeypatch, edit)
    processor = config.systems["deals"].processor
    assert processor is not None and processor.role == "controller"
    assert not [g for g in check_compliance(config) if "deals" in g.key]
    for lang, missing, required in (
        ("en", "MISSING", "not required (independent controller)"),
        ("nl", "ONTBREEKT", "niet vereist (zelfstandig verwerkingsverantwoordelijke)"),
    ):
        md = _text(config, lang, "md")
        start = md.index("### ", md.index("deals (pipedrive)") - 20)
        section = md[start : md.index("\n## ", start)]
        assert missing not in section and required in section


def test_the_register_names_the_access_bundles_as_the_readable_copy_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Access bundles are written in clear and kept for ``access_bundles_days``: the
    pseudonymisation measure names them and their period, in both languages."""
    edit = lambda text: text.replace("access_bundles_days = 30", "access_bundles_days = 12")  # noqa: E731
    config = _config(tmp_path, monkeypatch, edit)
    assert config.retention.access_bundles_days == 12
    en = _measures(config, "en")["pseudonymisation"]
    nl = _measures(config, "nl")["pseudonymisation"]
    assert "except the access bundles (Art. 15)" in en and "after 12 days" in en
    assert "behalve de inzagebundels (art. 15)" in nl and "na 12 dagen" in nl


def test_config_text_cannot_make_headings_rules_or_lists_in_the_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Config text at the start of a list item or a paragraph ("# x", "---", "1. x") is
    escaped: rendered, the register has one top heading, no rule and no ordered list."""
    from markdown_it import MarkdownIt

    def edit(text: str) -> str:
        return text.replace(
            'data_subjects = ["customers", "newsletter subscribers"]',
            'data_subjects = ["customers", "# Geen verwerkingen", "---", "1. eerst", "+ plus"]',
        )

    config = _config(tmp_path, monkeypatch, edit)
    page = (
        MarkdownIt("commonmark").enable("table").render(render(build_register(config, "nl"), "md"))
    )
    assert page.count("<h1>") == 1
    assert "<hr" not in page and "<ol" not in page
    assert "<li># Geen verwerkingen</li>" in page and "<li>---</li>" in page
    assert "<li>1. eerst</li>" in page and "<li>+ plus</li>" in page


def test_the_register_says_an_unsubscribe_at_the_system_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store keeps who unsubscribed at a consent-gated system (an opt-out, under their
    pseudonym) and acts on it, when the system's webhook tells it: the register says so, in
    both languages."""
    monkeypatch.setenv("KLANTSYNC_NEWS_HOOK_SECRET", "x")

    def edit(text: str) -> str:
        hooks = '# [systems.news.webhooks]\n# secret = "env:KLANTSYNC_NEWS_HOOK_SECRET"'
        assert hooks in text
        return text.replace(hooks, hooks.replace("# ", ""))

    config = _config(tmp_path, monkeypatch, edit)
    assert config.systems["news"].webhooks is not None
    en, nl = _text(config, "en", "md"), _text(config, "nl", "html")
    assert "Someone who unsubscribes at the system itself" in en
    assert "Wie zich bij het systeem zelf afmeldt" in nl
    assert "not configured" not in en and "niet ingesteld" not in nl


async def test_the_register_does_not_claim_a_mailchimp_unsubscribe_stops_the_sync_when_it_cannot(
    tmp_path: Path,
) -> None:
    """Without Mailchimp's webhook ([systems.<name>.webhooks]) klantsync never hears of an
    unsubscribe made with the newsletter's own link: the member's next change in the shop
    is written to them. The register says that limit instead of claiming they are sent
    nothing more there but the withdrawal."""
    from adapters.mailchimp.payloads import subscriber_hash
    from tests.e2e.test_flow_changes import LIST, World, opener, write_config

    world = World()
    flows = '[[flows]]\nname = "news"\nsource = "shop"\ndestinations = ["news"]\n'
    path = write_config(tmp_path, world, flows + 'schedule = "every 15m"\n')
    email = "anna.devries@voorbeeld.nl"
    world.shop.add_person(email, "Anna", "de Vries", "0612345678", marketing_opt_in="yes")
    async with opener(world)(path) as rt:
        assert rt.config.systems["news"].webhooks is None
        await rt.engine.sync()
        member = world.news.store.audience(LIST).members[subscriber_hash(email)]
        member.status = "unsubscribed"  # the newsletter's own link; no webhook tells of it
        world.shop.touch(email, first_name="Annie")
        await rt.engine.sync()
        en, nl = _text(rt.config, "en", "md"), _text(rt.config, "nl", "md")
    assert member.merge_fields.get("FNAME") == "Annie"  # what the register must not deny
    assert "is sent nothing more there but the withdrawal" not in en
    assert "krijgt daar niets meer dan de intrekking" not in nl
    assert "reaches the connector only through that system's webhooks" in en
    assert "[systems.news.webhooks]" in en and "[systems.news.webhooks]" in nl
    assert "Only people who consented to marketing are sent to this system." in en


def test_the_register_gives_consent_as_the_basis_of_a_consent_gated_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's one flow (basis "contract") feeds HubSpot, Pipedrive and the
    consent-gated Mailchimp newsletter: the newsletter is sent only people who consented,
    so the register states consent (Art. 6(1)(a)) for it and the flow's basis for the rest,
    in both languages and in JSON."""
    config = load_config(example_config(tmp_path, monkeypatch))
    assert config.mappings["news"].requires_consent == "marketing"
    flow = config.flows[0]
    assert flow.privacy is not None and flow.privacy.legal_basis == "contract"
    (processing,) = build_register(config, "en")["processing"]
    assert [(g["legal_basis"], g["destinations"]) for g in processing["legal_bases"]] == [
        ("contract", ["crm", "deals"]),
        ("consent", ["news"]),
    ]
    assert processing["legal_bases"][1]["consents"] == {"news": "marketing"}
    en, nl = _text(config, "en", "md"), _text(config, "nl", "html")
    assert "Performance of a contract (Art. 6(1)(b) GDPR): crm, deals" in en
    assert "Consent (Art. 6(1)(a) GDPR): news (consent to marketing)" in en
    assert "Uitvoering van een overeenkomst (art. 6 lid 1 sub b AVG): crm, deals" in nl
    assert "Toestemming (art. 6 lid 1 sub a AVG): news (toestemming voor marketing)" in nl


def test_a_flow_of_consent_states_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow whose own basis is consent is one basis for every destination, not two."""
    edit = lambda text: text.replace('legal_basis = "contract"', 'legal_basis = "consent"')  # noqa: E731
    config = _config(tmp_path, monkeypatch, edit)
    (processing,) = build_register(config, "en")["processing"]
    assert [g["destinations"] for g in processing["legal_bases"]] == [["crm", "news", "deals"]]
    en = _text(config, "en", "md")
    assert "Consent (Art. 6(1)(a) GDPR): crm, news (consent to marketing), deals" in en


def test_the_register_states_how_long_the_identity_map_and_suppression_list_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity map, opt-outs, suppression list and request records have no [retention]
    period and the sweep deletes none of them (connector/retention.py): the register lists
    them with until when and why they are kept, and no longer says that all the connector's
    own data is deleted after the periods above."""
    config = load_config(example_config(tmp_path, monkeypatch))
    for lang in ("en", "nl"):
        rows = {r["item"]: r for r in build_register(config, lang)["retention"]["connector"]}
        for item in ("identity_map", "opt_outs", "suppression", "requests"):
            assert rows[item]["days"] is None and rows[item]["until"] and rows[item]["why"]
    en = {r["item"]: r for r in build_register(config, "en")["retention"]["connector"]}
    assert en["identity_map"]["until"] == "Until the person's erasure"
    assert "until the person is readmitted" in en["suppression"]["until"]
    md, nl = _text(config, "en", "md"), _text(config, "nl", "html")
    assert "Identity map" in md and "Suppression list" in md
    assert "Identiteitenkoppeling" in nl and "Blokkadelijst" in nl
    assert "deletes its own data automatically after the retention periods above" not in md
    assert "verwijdert zijn eigen gegevens automatisch na de bewaartermijnen hierboven" not in nl
    assert "until the person's erasure or readmission" in _measures(config, "en")["retention"]


def test_the_register_lists_the_breach_incidents_it_keeps_with_no_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records of breach incidents (`klantsync incident`) are kept with no [retention]
    period, and the sweep deletes none: the register, which lists whatever has no period,
    did not name them."""
    config = load_config(example_config(tmp_path, monkeypatch))
    for lang, words in (("en", "personal data breaches"), ("nl", "inbreuken")):
        rows = {r["item"]: r for r in build_register(config, lang)["retention"]["connector"]}
        incidents = rows["incidents"]
        assert incidents["days"] is None and words in incidents["label"] and incidents["why"]
    assert "personal data breaches" in _text(config, "en", "md")


@pytest.mark.parametrize(
    ("lang", "processor", "joint", "arrangement"),
    [
        ("en", "Processor", "Joint controller", "Arrangement between joint controllers"),
        (
            "nl",
            "Verwerker",
            "Gezamenlijk verwerkingsverantwoordelijke",
            "Regeling tussen gezamenlijk verwerkingsverantwoordelijken",
        ),
    ],
)
def test_the_register_does_not_call_a_joint_controller_a_processor(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lang: str,
    processor: str,
    joint: str,
    arrangement: str,
) -> None:
    """A recipient whose role is "joint-controller" (Art. 26) is no processor (Art. 28): it
    is labelled a joint controller, and its agreement the arrangement between them."""
    marker = 'legal_name = "HubSpot Ireland Limited"\nrole = "processor"'

    def edit(text: str) -> str:
        assert marker in text
        return text.replace(marker, marker.replace('"processor"', '"joint-controller"'))

    md = _text(_config(tmp_path, monkeypatch, edit), lang, "md")
    assert f"| {processor} | HubSpot Ireland Limited |" not in md
    assert f"| {joint} | HubSpot Ireland Limited |" in md
    section = md[md.index("HubSpot Ireland Limited |") :]
    assert section.index(arrangement) < section.index("\n### ")


def test_the_register_names_the_writes_held_from_a_former_address_it_keeps_and_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention sweep deletes writes held from a customer's former address (sealed
    payloads of a person's data) on dead_letters_days, as it does dead letters: the
    register's list of the connector's own data names them beside that period."""
    from connector.retention import PURGED_KINDS

    assert "held_writes" in PURGED_KINDS
    config = load_config(example_config(tmp_path, monkeypatch))
    for lang, words in (("en", "former address"), ("nl", "eerder adres")):
        rows = {r["item"]: r for r in build_register(config, lang)["retention"]["connector"]}
        swept = rows["dead_letters_days"]
        assert words in swept["label"] and swept["days"] == config.retention.dead_letters_days
    draft_measure = _measures_stated(config)
    assert "former address" in draft_measure and "30 days" in draft_measure


def _measures_stated(config: Config) -> str:
    """The retention measure as a text with no periods above it states it (the breach draft)."""
    from connector.register import security_measures

    found = security_measures(config, "en", periods_above=False)
    return next(m["text"] for m in found if m["code"] == "retention")


@pytest.mark.parametrize(
    ("lang", "heading", "operator"),
    [
        ("en", "## Categories of recipients", "### Operator of the connector"),
        ("nl", "## Categorieën ontvangers", "### Beheerder van de connector"),
    ],
)
def test_the_controller_s_record_lists_the_agency_running_the_connector_as_a_recipient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, heading: str, operator: str
) -> None:
    """Art. 30(1)(d): the recipients include processors (Art. 4(9)). The agency that runs
    the connector ([privacy] agency) handles every customer record it moves, as the
    register's own Art. 30(2) part says: the controller's record lists it among the
    recipients, with its contact; with no agency recorded, none is listed."""
    path = example_config(tmp_path, monkeypatch)
    config = load_config(path)
    agency = config.privacy.agency
    assert agency == "Voorbeeld Digital Agency B.V."
    reg = build_register(config, lang)
    assert reg["operator"]["legal_name"] == agency and reg["operator"]["role"] == "processor"
    md = _text(config, lang, "md")
    start = md.index(heading)
    section = md[start : md.index("\n## ", start + 1)]
    assert operator in section and agency in section
    assert config.privacy.agency_contact in section
    assert agency in _text(config, lang, "html")
    path.write_text(path.read_text().replace(f'agency = "{agency}"', 'agency = ""'))
    bare = load_config(path)
    assert build_register(bare, lang)["operator"] is None
    assert operator not in _text(bare, lang, "md")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("Jan ~~Jansen~~", "Jan ~~Jansen~~"),
        ("~~~", "~~~"),
        ("*sterk* _schuin_ `code` [x](y) <b> a|b", "*sterk* _schuin_ `code` [x](y) &lt;b&gt; a|b"),
    ],
)
def test_markdown_escape_keeps_every_special_character_as_written(value: str, shown: str) -> None:
    """``~`` was escaped at the start of a value only: ``~~x~~`` further on was struck
    through in any GFM viewer."""
    from markdown_it import MarkdownIt

    from connector.register_render import md_escape

    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    assert md.render(md_escape(value)) == f"<p>{shown}</p>\n"


def test_markdown_escape_makes_no_link_of_a_bare_address() -> None:
    """GFM makes a link of "https://..." and "www.x" in plain text: a vendor's value is to be
    shown, not followed. An escaped ":" or "." reads the same and starts no link."""
    from markdown_it import MarkdownIt

    from connector.register_render import md_escape

    escaped = md_escape("zie https://voorbeeld.example/x of (www.voorbeeld.example), info.www.nl")
    assert "https\\://" in escaped and "(www\\.voorbeeld" in escaped
    assert "info.www.nl" in escaped.replace("\\", "")
    rendered = MarkdownIt("commonmark").render(escaped)
    assert "https://voorbeeld.example/x" in rendered and "www.voorbeeld.example" in rendered


def test_the_register_gives_when_it_was_generated_in_dutch_time_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generation time was a raw UTC stamp; the documents give Dutch time beside it."""
    import datetime as dt

    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Amsterdam")
    config = _config(tmp_path, monkeypatch)
    reg = build_register(config, "nl", dt.datetime(2024, 12, 31, 23, 30, tzinfo=dt.UTC))
    assert reg["generated_at"] == "2024-12-31T23:30:00+00:00"  # the JSON keeps the stamp
    for fmt in ("md", "html"):
        text = render(reg, fmt).replace("\\", "")
        assert "2024-12-31T23:30:00+00:00 (2025-01-01 00:30 Europe/Amsterdam)" in text, fmt


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_the_register_on_standard_output_is_utf8_as_its_page_declares_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """`register --format html > register.html` under a Latin-1 locale wrote Latin-1 into a
    page that declares UTF-8 (its "Categorieën" unreadable in a browser), and under an ASCII
    one ended as an internal error. On standard output it is UTF-8, as `--out` writes it."""
    path = example_config(tmp_path, monkeypatch)
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding))
    assert main(["-c", str(path), "register", "--format", "html"]) == 0
    sys.stdout.flush()
    page = raw.getvalue().decode("utf-8")
    assert '<meta charset="utf-8">' in page and "Categorieën persoonsgegevens" in page


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_the_register_names_every_category_the_access_report_says_the_systems_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """The access report and the breach notification name what the systems' own records
    hold beside the mapped fields (a shop's orders and the IP address each was placed from,
    a CRM's notes, a newsletter's activity), which klantsync reads into an access copy; the
    register listed the mapped fields alone, so the record of processing named fewer
    categories of personal data than the documents it stands behind."""
    from connector.access import art15_facts

    config = load_config(example_config(tmp_path, monkeypatch))
    data = build_register(config, lang)["personal_data"]
    listed = {
        group["category"]
        for entry in data["received"] + data["provided"]
        for group in entry["categories"] + entry["held_beside"]
    }
    assert listed == set(art15_facts(config).categories)
    shop = {e["system"]: e for e in data["provided"]}["shop"]
    assert {c["category"] for c in shop["held_beside"]} >= {"orders", "online", "reviews"}
    text = _text(config, lang, fmt)
    index = 1 if lang == "nl" else 0
    for category in ("orders", "online", "notes", "activity", "reviews"):
        assert CATEGORIES[category][index] in text
    if fmt != "json":
        said = "leest ze wel in het inzageoverzicht" if lang == "nl" else "into the access copy"
        assert said in text


@pytest.mark.parametrize(
    ("code", "lang", "said"),
    [
        ("US", "nl", "de Verenigde Staten"),
        ("GB", "nl", "het Verenigd Koninkrijk"),
        ("PH", "en", "the Philippines"),
        ("CH", "nl", "Zwitserland"),
        ("GM", "nl", "Gambia"),
        ("GM", "en", "the Gambia"),
        ("ZZ", "en", "ZZ"),
    ],
)
def test_a_country_in_a_sentence_takes_the_article_its_language_gives_it(
    code: str, lang: str, said: str
) -> None:
    """Dutch and English put an article before some countries' names in a sentence
    ("in de Verenigde Staten"); a code nobody knows stays bare."""
    assert country_in_text(code, lang) == said


def _crm_onward(replacement: str) -> Any:
    """An edit of the example putting ``replacement`` in place of HubSpot's onward_transfers."""

    def edit(text: str) -> str:
        start = text.index("[systems.crm.processor]")
        end = text.index("[systems.news]")
        block = re.sub(r"onward_transfers = \[.*?\n\]\n", replacement, text[start:end], flags=re.S)
        assert block != text[start:end]
        return text[:start] + block + text[end:]

    return edit


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_the_register_names_each_third_country_sub_processors_take_the_data_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Art. 30(1)(e): HubSpot Ireland passes the data on to HubSpot, Inc. in the US. The
    register showed "Ireland (onward transfer by sub-processors)", naming no third country;
    it names the United States, who receives the data there and the safeguard, and leaves
    out the sub-processor in Germany (no transfer: it stays in the EEA)."""
    config = load_config(example_config(tmp_path, monkeypatch))
    rows = [t for t in build_register(config, lang)["transfers"] if t["system"] == "crm"]
    assert [(t["country"], t["onward"], t["recipient"]) for t in rows] == [
        ("US", True, "HubSpot, Inc.")
    ]
    assert rows[0]["mechanism"] == "EU-US Data Privacy Framework; SCCs 2021/914 module 3"
    text = _text(config, lang, fmt)
    if fmt != "json":
        us = "Verenigde Staten (doorgifte aan" if lang == "nl" else "United States (onward"
        assert f"{us}" in text and "HubSpot, Inc.)" in text
        assert "Ierland (doorgifte" not in text and "Ireland (onward" not in text


def test_an_onward_transfer_without_a_safeguard_is_registered_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An onward transfer outside the EEA with no mechanism: its safeguard is MISSING
    (ONTBREEKT), as a direct transfer's is; the processor's own transfer_mechanism is not
    taken for it."""
    onward = 'transfer_mechanism = "SCCs"\nonward_transfers = [{ country = "IN" }]\n'
    config = _config(tmp_path, monkeypatch, _crm_onward(onward))
    (row,) = [t for t in build_register(config, "en")["transfers"] if t["system"] == "crm"]
    assert (row["country"], row["mechanism"], row["recipient"]) == ("IN", "", "")
    assert "India (onward transfer by sub-processors) | MISSING" in _text(config, "en", "md")
    assert "India (doorgifte door subverwerkers) | ONTBREEKT" in _text(config, "nl", "md")


@pytest.mark.parametrize("onward", ['[{ country = "DE" }]', "[]"])
def test_onward_transfers_within_the_eea_are_no_transfer_to_a_third_country(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onward: str
) -> None:
    """A processor in Ireland whose sub-processors keep the data in the EEA (or who records
    none, ``[]``) transfers nothing: nothing is listed for it, nor counted unknown."""
    config = _config(tmp_path, monkeypatch, _crm_onward(f"onward_transfers = {onward}\n"))
    reg = build_register(config, "en")
    assert "crm" not in {t["system"] for t in reg["transfers"]}
    assert "crm" not in reg["transfers_unknown"]


def test_a_processor_naming_a_safeguard_but_no_countries_has_its_third_countries_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form from before ``onward_transfers`` (a processor in the EEA naming only a
    transfer_mechanism) still loads and is still listed as an onward transfer, now saying
    the third countries are missing rather than giving Ireland as if that were one."""
    legacy = 'transfer_mechanism = "SCCs for transfers to HubSpot, Inc."\n'
    config = _config(tmp_path, monkeypatch, _crm_onward(legacy))
    (row,) = [t for t in build_register(config, "en")["transfers"] if t["system"] == "crm"]
    assert (row["country"], row["onward"], row["country_named"]) == ("IE", True, False)
    assert "third countries: MISSING (onward_transfers)" in _text(config, "en", "md")
    assert "derde landen: ONTBREEKT (onward_transfers)" in _text(config, "nl", "html")


def test_the_demo_registers_where_the_crm_s_and_newsletter_s_sub_processors_take_the_data(
    tmp_path: Path,
) -> None:
    """The demo's config records the onward transfers as the example does: its register
    names the United States for HubSpot Ireland, not Ireland, and `check` finds no gap."""
    import certifi

    from adapters.hubspot.sandbox import HubSpotSandbox
    from adapters.mailchimp.sandbox import MailchimpSandbox
    from adapters.woocommerce.sandbox import WooCommerceSandbox
    from connector.compliance import check_compliance
    from connector.demo import write_config

    sandboxes = {"shop": WooCommerceSandbox(), "crm": HubSpotSandbox(), "news": MailchimpSandbox()}
    urls = {name: f"https://127.0.0.1:{9440 + i}" for i, name in enumerate(sandboxes)}
    credentials = {name: sandbox.credentials() for name, sandbox in sandboxes.items()}
    config = load_config(write_config(tmp_path, urls, Path(certifi.where()), credentials))
    rows = {(t["system"], t["country"], t["onward"]) for t in build_register(config)["transfers"]}
    assert rows == {("crm", "US", True), ("news", "US", False), ("news", "US", True)}
    assert [g for g in check_compliance(config) if "transfer" in g.code or "onward" in g.code] == []


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_the_registers_name_the_agency_s_officer_and_the_representatives_in_the_union(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Art. 30(2)(a) asks the processor's record for its own data protection officer and,
    where there is one, the controller's or the processor's representative (Art. 27), and
    Art. 30(1)(a) the controller's representative: the config had no key for any of them,
    so no register could name them (a key added was refused as unknown)."""
    path = example_config(tmp_path, monkeypatch)
    text = (
        path.read_text()
        .replace("# representative = ", 'representative = "Rep EU B.V."  #', 1)
        .replace("# agency_dpo = ", 'agency_dpo = "fg@agency.example"  #', 1)
        .replace("# agency_representative = ", 'agency_representative = "Agency Rep SARL"  #', 1)
    )
    path.write_text(text)
    config = load_config(path)
    record = build_register(config, lang)["processor_record"]
    assert record["dpo"] == "fg@agency.example"
    assert record["representative"] == "Agency Rep SARL"
    assert record["controller_representative"] == "Rep EU B.V."
    rendered = _text(config, lang, fmt)
    heading = "30(2)" if lang == "en" else "30 lid 2"
    split = rendered.index('"processor_record"' if fmt == "json" else heading)
    controller_s, processor_s = rendered[:split], rendered[split:]
    assert "Rep EU B.V." in controller_s
    for named in ("fg@agency.example", "Agency Rep SARL", "Rep EU B.V."):
        assert named in processor_s
    if fmt != "json":
        assert ("van de verwerker" if lang == "nl" else "(DPO) of the processor") in processor_s
        label = "Vertegenwoordiger" if lang == "nl" else "Representative"
        assert label in controller_s and label in processor_s
    (tmp_path / "none").mkdir()
    without = _text(load_config(example_config(tmp_path / "none", monkeypatch)), lang, fmt)
    assert "Representative" not in without and "Vertegenwoordiger" not in without


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_with_no_admin_token_the_register_says_the_admin_api_refuses_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str
) -> None:
    """Without ``admin_token`` the daemon's admin API answers every call 401 ("admin API
    disabled"). Among the security measures, "no admin API token is configured" alone reads
    as an API open without one; the register says it is off."""
    config = load_config(example_config(tmp_path, monkeypatch))
    assert config.daemon.admin_token is None
    codes = {m["code"]: m["text"] for m in build_register(config, lang)["security"]}
    said = "staat uit en weigert elke aanroep" if lang == "nl" else "is off and refuses every call"
    assert said in codes["admin-api"]


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_a_recipient_named_only_in_an_onward_transfer_is_among_the_register_s_sub_processors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Art. 30(1)(d): HubSpot Ireland passes the data on to HubSpot, Inc.; where the config
    names HubSpot, Inc. in ``onward_transfers`` but not among ``sub_processors``, the
    register's sub-processors row left it out (the access report already named it). A name
    listed with its country, "HubSpot, Inc. (US)", is not repeated for "HubSpot, Inc."."""
    heading = {"nl": "Subverwerkers", "en": "Sub-processors"}[lang]
    after = {"nl": "Beveiliging volgens", "en": "Security as stated"}[lang]

    def row(text: str) -> str:
        if fmt == "json":
            (crm,) = [r for r in json.loads(text)["recipients"] if r["system"] == "crm"]
            return ", ".join(crm["processor"]["sub_processors"])
        flat = " ".join(re.sub(r"<[^>]+>", " ", text).replace("|", " ").split())
        (cell,) = [
            part.split(after)[0].strip()
            for part in flat.split(f"{heading} ")[1:]
            if "Amazon Web Services EMEA SARL" in part.split(after)[0]
        ]
        return cell

    both = _config(tmp_path, monkeypatch)
    as_listed = row(_text(both, lang, fmt))
    assert "HubSpot, Inc. (US)" in as_listed and "Amazon Web Services EMEA SARL" in as_listed
    assert as_listed.count("HubSpot") == 1, as_listed

    def drop(text: str) -> str:
        edited = text.replace('sub_processors = ["HubSpot, Inc. (US)", ', "sub_processors = [")
        assert edited != text
        return edited

    (tmp_path / "b").mkdir()
    onward_only = row(_text(_config(tmp_path / "b", monkeypatch, drop), lang, fmt))
    assert "HubSpot, Inc." in onward_only and "(US)" not in onward_only, onward_only
    assert onward_only.count("Amazon Web Services EMEA SARL") == 1, onward_only


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
@pytest.mark.parametrize("lang", ["nl", "en"])
def test_the_register_names_a_joint_controller_with_its_contact_details_beside_the_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, fmt: str
) -> None:
    """Art. 30(1)(a): the name and contact details of the controller and of a joint
    controller. A system held by a joint controller was named among the recipients only,
    with no way to reach it; its ``contact`` is now recorded and named in the controller's
    part, and `check` asks for it where it is missing."""
    from connector.compliance import check_compliance

    marker = 'legal_name = "HubSpot Ireland Limited"\nrole = "processor"'

    def edit(text: str) -> str:
        assert marker in text
        joint = marker.replace('"processor"', '"joint-controller"')
        return text.replace(marker, joint + '\ncontact = "dpo@hubspot-joint.example"')

    config = _config(tmp_path, monkeypatch, edit)
    reg = build_register(config, lang)
    assert reg["joint_controllers"] == [
        {
            "system": "crm",
            "legal_name": "HubSpot Ireland Limited",
            "contact": "dpo@hubspot-joint.example",
        }
    ]
    text = _text(config, lang, fmt)
    if fmt != "json":
        heading = "Naam en contactgegevens" if lang == "nl" else "Name and contact details"
        part = text[text.index(heading) : text.index(TEXT_PURPOSES[lang])]
        assert "HubSpot Ireland Limited" in part and "dpo@hubspot-joint.example" in part
    assert check_compliance(config, dt.date(2026, 6, 1)) == []

    (tmp_path / "without").mkdir()
    without = _config(
        tmp_path / "without",
        monkeypatch,
        lambda t: t.replace(marker, marker.replace('"processor"', '"joint-controller"')),
    )
    gaps = check_compliance(without, dt.date(2026, 6, 1))
    assert [(g.code, g.key) for g in gaps] == [
        ("joint-controller-no-contact", "systems.crm.processor.contact")
    ]
    assert build_register(without, lang)["joint_controllers"][0]["contact"] == ""


TEXT_PURPOSES = {"nl": "Doeleinden van de verwerking", "en": "Purposes of the processing"}
