"""Compliance gaps: `check` names each missing agreement, purpose, basis and safeguard."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from connector import compliance
from connector.cli import main
from connector.compliance import Gap, check_compliance
from connector.config import load_config
from tests.conftest import example_config, write_config

BEFORE_REVIEWS = dt.date(2026, 6, 1)  # the example's agreements are reviewed in 2027


def _gaps(path: Path, on: dt.date = BEFORE_REVIEWS) -> list[Gap]:
    return check_compliance(load_config(path), on)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_example_config_has_no_gaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped example records everything the checks look for."""
    assert _gaps(example_config(tmp_path, monkeypatch)) == []


def test_check_passes_for_the_example_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klantsync check` exits 0 on the example config and reports no gaps."""
    path = example_config(tmp_path, monkeypatch)
    monkeypatch.setattr(compliance, "today", lambda: BEFORE_REVIEWS)
    assert main(["-c", str(path), "check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["compliance_gaps"] == []


def test_system_without_a_processor_block_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination with no [systems.crm.processor] is reported with that key."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    start = text.index("[systems.crm.processor]")
    path.write_text(text[:start] + text[text.index("[systems.news]") :])
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("no-agreement", "systems.crm.processor")
    assert gap.file == str(path)


def test_empty_agreement_reference_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source whose processor has no agreement reference is reported with that key."""
    path = example_config(tmp_path, monkeypatch)
    _edit(path, 'agreement_reference = "VWO-2026-014"', 'agreement_reference = ""')
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("no-agreement", "systems.shop.processor.agreement_reference")


def test_an_independent_controller_needs_no_processing_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 28's agreement is for processors: a recipient that is a controller of its own
    was a gap until a made-up reference was written down. A joint controller still is."""
    path = example_config(tmp_path, monkeypatch)
    _edit(path, 'agreement_reference = "VWO-2026-014"', 'agreement_reference = ""')
    text = path.read_text()
    shop = text.index("[systems.shop.processor]")
    as_controller = text[shop:].replace('role = "processor"', 'role = "controller"', 1)
    path.write_text(text[:shop] + as_controller)
    assert _gaps(path) == []
    # Recorded with its contact details, which a joint controller needs too (Art. 30(1)(a)).
    _edit(
        path, 'role = "controller"', 'role = "joint-controller"\ncontact = "privacy@host.example"'
    )
    (gap,) = _gaps(path)
    assert gap.key == "systems.shop.processor.agreement_reference"


def test_passed_review_date_is_a_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agreement whose review date has passed is reported; the day itself still passes."""
    path = example_config(tmp_path, monkeypatch)
    assert _gaps(path, dt.date(2027, 1, 15)) == []
    (gap,) = _gaps(path, dt.date(2027, 1, 16))
    assert (gap.code, gap.key) == (
        "agreement-review-passed",
        "systems.shop.processor.agreement_review",
    )
    assert "2027-01-15" in gap.message


def test_field_without_a_purpose_is_a_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped field with an empty purpose is reported with the mapping file and field key."""
    config = load_config(example_config(tmp_path, monkeypatch))
    mapping = config.mappings["crm"]
    # Mapping loading refuses this; the check must not rely on that.
    mapping.fields["phone"] = dataclasses.replace(mapping.fields["phone"], purpose="")
    (gap,) = check_compliance(config, BEFORE_REVIEWS)
    assert (gap.code, gap.file, gap.key) == (
        "field-no-purpose",
        str(mapping.path),
        "fields.phone.purpose",
    )


def test_transfer_outside_the_eea_without_mechanism_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor in the US with no transfer mechanism is reported; with one it is not."""
    path = example_config(tmp_path, monkeypatch)
    _edit(path, 'country = "IE"', 'country = "US"\ntransfer_mechanism = "EU-US DPF"')
    assert _gaps(path) == []
    _edit(path, 'transfer_mechanism = "EU-US DPF"', 'transfer_mechanism = ""')
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == (
        "transfer-no-mechanism",
        "systems.crm.processor.transfer_mechanism",
    )


def test_flow_without_legal_basis_or_retention_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow missing its legal basis and retention gets one gap for each key."""
    path = example_config(tmp_path, monkeypatch)
    _edit(path, 'legal_basis = "contract"', "")
    _edit(path, 'retention = "Until 2 years after the last order"', "")
    assert {(g.code, g.key) for g in _gaps(path)} == {
        ("flow-no-legal-basis", "flows[0].privacy.legal_basis"),
        ("flow-no-retention", "flows[0].privacy.retention"),
    }


def test_blank_purposes_and_a_blank_controller_name_are_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template's placeholders left blank (``purposes = [""]``, ``name = ""``) record no
    purpose and no controller, as a blank retention records no period: the register showed
    them empty while `check` passed."""
    path = example_config(tmp_path, monkeypatch)
    _edit(
        path,
        'purposes = ["Customer relationship management", "Customer service", "Newsletter"]',
        'purposes = ["", "  "]',
    )
    _edit(path, 'name = "Voorbeeld Webwinkel B.V."', 'name = " "')
    assert {(g.code, g.key) for g in _gaps(path)} == {
        ("no-controller", "controller.name"),
        ("flow-no-purpose", "flows[0].privacy.purposes"),
    }


def test_missing_controller_is_a_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config without [controller] is reported with that key."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    start = text.index("[controller]")
    path.write_text(text[:start] + text[text.index("[privacy]") :])
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("no-controller", "controller")


def test_a_system_in_no_flow_still_needs_an_agreement(config_path: Path) -> None:
    """Data subject requests reach every configured system (a correction's values, an
    erasure), and the register lists each: a system in no flow processes personal data
    too. Its gaps (no agreement, a transfer without a safeguard) went unreported."""
    config = load_config(config_path)
    assert compliance.systems_in_use(config) == ["shop", "crm"]
    idle = dataclasses.replace(config, flows=[])
    assert compliance.systems_in_use(idle) == ["shop", "crm"]
    keys = {g.key for g in check_compliance(idle, BEFORE_REVIEWS)}
    assert {"systems.shop.processor", "systems.crm.processor"} <= keys


def test_check_lists_every_gap_and_exits_1(
    config_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config with no accountability records exits 1 and lists each gap by key."""
    monkeypatch.setattr(compliance, "today", lambda: BEFORE_REVIEWS)
    assert main(["-c", str(config_path), "check"]) == 1
    out = capsys.readouterr().out
    for key in (
        "controller",
        "systems.shop.processor",
        "systems.crm.processor",
        "flows[0].privacy.purposes",
        "flows[0].privacy.legal_basis",
        "flows[0].privacy.retention",
    ):
        assert f": {key}: " in out
    assert "compliance gaps (6)" in out


def test_invalid_config_still_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    """Compliance gaps never mask a configuration error: that stays exit 2."""
    path = write_config(tmp_path, crm_extra='base_ulr = "https://x.test"')
    assert main(["-c", str(path), "check"]) == 2


def test_agreements_due_for_review_are_listed_before_they_lapse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review date within 30 days is due (not yet a gap); one further away is not."""
    from connector.compliance import reviews_due

    config = load_config(example_config(tmp_path, monkeypatch))
    shop_review = config.systems["shop"].processor.agreement_review  # type: ignore[union-attr]
    assert shop_review is not None
    before = shop_review - dt.timedelta(days=10)
    assert ("shop", shop_review) in reviews_due(config, on=before)
    assert reviews_due(config, on=shop_review - dt.timedelta(days=60)) == []


def test_an_onward_transfer_outside_the_eea_without_mechanism_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sub-processor taking HubSpot's data to the US with no safeguard recorded is
    reported by its own key; one in Germany needs none."""
    path = example_config(tmp_path, monkeypatch)
    mechanism = ', mechanism = "EU-US Data Privacy Framework; SCCs 2021/914 module 3"'
    _edit(path, f'recipient = "HubSpot, Inc."{mechanism}', 'recipient = "HubSpot, Inc."')
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == (
        "onward-transfer-no-mechanism",
        "systems.crm.processor.onward_transfers[0].mechanism",
    )
    assert "US" in gap.message and gap.file == str(path)


def test_a_processor_passing_data_on_to_countries_not_recorded_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 30(1)(e) names the third countries: a processor in Ireland naming only a
    transfer_mechanism (the form from before onward_transfers, which still loads) passes
    the data on to countries `check` asks for."""
    path = example_config(tmp_path, monkeypatch)
    text = path.read_text()
    start = text.index('onward_transfers = [\n  { country = "US", recipient = "HubSpot')
    end = text.index("]\n", start) + 2
    path.write_text(text[:start] + 'transfer_mechanism = "SCCs"\n' + text[end:])
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("onward-no-country", "systems.crm.processor.onward_transfers")


def test_a_controller_without_contact_details_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Art. 30(1)(a) records the controller's name and contact details: a [controller] with
    only a name left the register's address, contact and e-mail "not recorded" while
    `check` passed; any one of them is a way to reach the controller."""
    path = example_config(tmp_path, monkeypatch)
    _edit(path, 'address = "Voorbeeldstraat 1, 3511 AA Utrecht"\n', 'address = " "\n')
    _edit(path, 'contact = "Privacy contact, Voorbeeld Webwinkel"\n', "")
    _edit(path, 'email = "privacy@voorbeeld-webwinkel.example"\n', "")
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("controller-no-contact", "controller.email")
    assert gap.file == str(path)
    monkeypatch.setattr(compliance, "today", lambda: BEFORE_REVIEWS)
    assert main(["-c", str(path), "check", "--json"]) == 1
    (reported,) = json.loads(capsys.readouterr().out)["compliance_gaps"]
    assert reported["key"] == "controller.email"
    _edit(path, 'address = " "\n', 'address = "Voorbeeldstraat 1, 3511 AA Utrecht"\n')
    assert _gaps(path) == []


def test_no_categories_of_data_subjects_is_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Art. 30(1)(c) describes the categories of data subjects: ``data_subjects = []`` (or
    only blanks) left the register's list "not recorded" while `check` passed."""
    path = example_config(tmp_path, monkeypatch)
    listed = 'data_subjects = ["customers", "newsletter subscribers"]'
    _edit(path, listed, "data_subjects = []")
    (gap,) = _gaps(path)
    assert (gap.code, gap.key) == ("no-data-subjects", "privacy.data_subjects")
    assert gap.file == str(path)
    _edit(path, "data_subjects = []", 'data_subjects = ["", " "]')
    assert [g.key for g in _gaps(path)] == ["privacy.data_subjects"]
