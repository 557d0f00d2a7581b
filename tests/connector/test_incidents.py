"""The breach clock: 72 hours from awareness, a pre-filled draft, time left, overdue, closed."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector import audit, incidents
from connector.cli import main
from connector.config import Config, load_config
from connector.state import Store
from tests.connector.test_register import example_config

NOW = dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    return load_config(example_config(tmp_path, monkeypatch))


@pytest.fixture
def store(config: Config) -> Store:
    store = Store(config.store_path)
    rows = [("shop", n, str(n)) for n in range(5)]  # (system, subject_no, external_id)
    rows += [("crm", n, f"c{n}") for n in range(3)]
    store.db.executemany("INSERT INTO identities VALUES (?,?,?)", rows)
    return store


def test_open_starts_a_72_hour_clock_from_awareness(store: Store, config: Config) -> None:
    """The deadline is 72 hours after the moment of awareness, not of recording."""
    aware = NOW - dt.timedelta(hours=10)
    incident = incidents.open_incident(store, config, "backup exposed", aware_at=aware, now=NOW)
    assert incident.deadline == (aware + dt.timedelta(hours=72)).isoformat()
    assert incident.opened_at == NOW.isoformat()
    assert incident.status(NOW) == "open"
    assert incidents.time_left_text(incident, NOW) == "62h 00m left"


def test_scope_counts_the_subjects_known_in_each_system(store: Store, config: Config) -> None:
    """Per system the categories it holds and the subjects the connector knows there."""
    incident = incidents.open_incident(store, config, "x", now=NOW)
    assert incident.scope["systems"]["shop"]["subjects"] == 5
    assert incident.scope["systems"]["crm"]["subjects"] == 3
    assert incident.scope["total"] == 5
    assert "address" in incident.scope["systems"]["shop"]["categories"]
    only_crm = incidents.open_incident(store, config, "y", systems=["crm"], now=NOW)
    assert list(only_crm.scope["systems"]) == ["crm"] and only_crm.scope["total"] == 3


@pytest.mark.parametrize(
    ("lang", "phrases"),
    [
        (
            "nl",
            ["Autoriteit Persoonsgegevens", "Uiterste meldtijd", "Adresgegevens", "ten hoogste 5"],
        ),
        ("en", ["Autoriteit Persoonsgegevens", "Notify by", "Address data", "at most 5"]),
    ],
)
def test_draft_is_prefilled_from_config_and_store(
    store: Store, config: Config, lang: str, phrases: list[str]
) -> None:
    """The draft names the controller, the systems, processors, categories, counts and deadline."""
    incident = incidents.open_incident(store, config, "Backup bucket was public", now=NOW)
    draft = incidents.notification_draft(incident, config, lang).replace("\\", "")
    assert config.controller is not None
    for expected in [
        *phrases,
        config.controller.name,
        config.controller.kvk,
        "Backup bucket was public",
        "HubSpot Ireland Limited",
        "| crm |",
        incident.deadline,
    ]:
        assert expected in draft


@pytest.mark.parametrize(("lang", "stated"), [("en", "Audit log: 2555 days"), ("nl", "2555 dagen")])
def test_the_draft_states_the_retention_periods_and_whose_measures_it_lists(
    store: Store, config: Config, lang: str, stated: str
) -> None:
    """The register's retention measure points at "the retention periods above", which the
    draft never stated; and the measures listed under "were the data encrypted?" are the
    connector's, whichever system was breached."""
    incident = incidents.open_incident(store, config, "Laptop stolen", now=NOW)
    draft = incidents.notification_draft(incident, config, lang)
    assert "periods above" not in draft and "bewaartermijnen hierboven" not in draft
    security = draft.split("## 6")[1].split("## 7")[0]
    assert stated in security
    assert ("connector's own" if lang == "en" else "connector zelf") in security


@pytest.mark.parametrize(
    ("lang", "claimed", "said"),
    [
        ("en", "Netherlands", "country of processing not recorded"),
        ("nl", "Nederland", "land van verwerking niet vastgelegd"),
    ],
)
def test_the_draft_names_no_country_of_processing_the_config_does_not_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, claimed: str, said: str
) -> None:
    """A processor whose `country` is left out holds the model's default (NL), which is no
    statement of where the data is (the register lists it as unknown, `check` as gap
    no-country): the draft for the regulator says it is not recorded, not "Netherlands"."""
    path = example_config(tmp_path, monkeypatch)
    # Pipedrive OÜ (system "deals"): its country = "EE" is the only such line.
    path.write_text(path.read_text().replace('country = "EE"\n', ""))
    config = load_config(path)
    assert "country" not in config.systems["deals"].processor.model_fields_set
    store = Store(config.store_path)
    try:
        incident = incidents.open_incident(store, config, "Laptop lost", now=NOW)
        draft = incidents.notification_draft(incident, config, lang).replace("\\", "")
    finally:
        store.close()
    (row,) = [line for line in draft.splitlines() if line.startswith("| deals |")]
    assert "Pipedrive OÜ" in row and said in row and claimed not in row


@pytest.mark.parametrize(
    ("lang", "heading", "due", "conditional"),
    [
        ("en", "## 10. Reasons for the delay", "state why", "Only if the notification"),
        ("nl", "## 10. Redenen voor de vertraging", "vermeld waarom", "Alleen als de melding"),
    ],
)
def test_a_draft_past_the_72_hours_asks_for_the_reasons_of_the_delay(
    store: Store, config: Config, lang: str, heading: str, due: str, conditional: str
) -> None:
    """Art. 33(1): a notification not made within 72 hours "shall be accompanied by reasons
    for the delay". An incident recorded 80 hours after awareness is late from the start;
    one recorded in time is asked for them once its 72 hours have passed, and before that
    only in case it is notified after its deadline."""
    late = incidents.open_incident(
        store, config, "Backup bucket was public", aware_at=NOW - dt.timedelta(hours=80), now=NOW
    )
    draft = incidents.notification_draft(late, config, lang).replace("\\", "")
    assert heading in draft
    assert due in draft.split(heading)[1] and conditional not in draft
    in_time = incidents.open_incident(store, config, "Laptop lost", now=NOW)
    draft = incidents.notification_draft(in_time, config, lang, NOW).replace("\\", "")
    assert heading in draft and conditional in draft and due not in draft
    assert in_time.deadline in draft.split(heading)[1]
    later = NOW + dt.timedelta(hours=75)
    draft = incidents.notification_draft(in_time, config, lang, later).replace("\\", "")
    assert due in draft.split(heading)[1] and conditional not in draft


def test_overdue_and_closed(store: Store, config: Config) -> None:
    """Past the deadline an open incident is overdue; a closed one is closed, with its note."""
    incident = incidents.open_incident(store, config, "x", now=NOW)
    later = NOW + dt.timedelta(hours=75)
    assert incident.status(later) == "overdue"
    assert incidents.time_left_text(incident, later) == "overdue by 3h 00m"
    closed = incidents.close_incident(store, incident.id, "notified AP, ref 123", now=later)
    assert closed.status(later) == "closed" and closed.close_note == "notified AP, ref 123"
    with pytest.raises(ValueError, match="already closed"):
        incidents.close_incident(store, incident.id, "again", now=later)
    kinds = [(e.kind, e.data.get("overdue")) for e in audit.entries(store)]
    assert kinds == [(audit.INCIDENT_OPENED, None), (audit.INCIDENT_CLOSED, True)]


def test_an_incident_closed_by_two_commands_at_once_is_closed_and_recorded_once(
    store: Store, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`incident close` looked for "already closed" before its write: a second close in
    between (two operators, or the command run again) passed the look too, wrote its note
    and time over the first's, and both appended ``incident.closed``. Looked at in the
    write's transaction, the other close waits for it, and is then refused."""
    incident = incidents.open_incident(store, config, "laptop lost", now=NOW)
    other = Store(config.store_path)
    other.db.execute("PRAGMA busy_timeout=0")  # it does not wait: its try comes in between
    real = incidents.utc_now
    tries: list[str] = []

    def other_close() -> None:
        try:
            incidents.close_incident(other, incident.id, "closed by the other operator")
            tries.append("closed")
        except ValueError:
            tries.append("refused")
        except sqlite3.OperationalError:
            tries.append("locked out")

    def now() -> dt.datetime:
        if not tries:
            other_close()  # between this close's look and its write
        return real()

    monkeypatch.setattr(incidents, "utc_now", now)
    try:
        incidents.close_incident(store, incident.id, "closed by me")
        other_close()  # tried again once this close is done
    finally:
        other.close()
    assert tries == ["locked out", "refused"]
    closed = incidents.get_incident(store, incident.id)
    assert closed is not None and closed.close_note == "closed by me"
    assert [e.kind for e in audit.entries(store)].count(audit.INCIDENT_CLOSED) == 1


def test_audit_entries_hold_the_clock_not_the_summary(store: Store, config: Config) -> None:
    """The operator's free text stays in the incident table, out of the audit log."""
    incidents.open_incident(store, config, "unique-summary-words", now=NOW)
    assert "unique-summary-words" not in json.dumps([e.data for e in audit.entries(store)])


def test_the_summary_and_the_closing_note_are_kept_with_contact_details_masked(
    store: Store, config: Config
) -> None:
    """The store (and every backup of it) holds nothing in clear; an operator's account of a
    breach naming a person's e-mail address and phone number was kept as typed. What a
    breach is about (a key, a token, a password) is kept as typed."""
    summary = "Export mailed to jan.jansen@example.nl by mistake, he called from +31612345678"
    incident = incidents.open_incident(store, config, summary, now=NOW)
    incidents.close_incident(
        store, incident.id, "Asked jan.jansen@example.nl to delete it", now=NOW
    )
    note = "The API key leaked; password reset"
    second = incidents.open_incident(store, config, note, now=NOW)
    rows = store.db.execute("SELECT summary, close_note FROM incidents ORDER BY id").fetchall()
    assert rows == [
        (
            "Export mailed to <email> by mistake, he called from <phone>",
            "Asked <email> to delete it",
        ),
        (note, None),
    ]
    assert second.summary == note


def test_awareness_in_the_future_is_refused(store: Store, config: Config) -> None:
    """A clock cannot start in the future."""
    with pytest.raises(ValueError, match="future"):
        incidents.open_incident(store, config, "x", aware_at=NOW + dt.timedelta(hours=1), now=NOW)


def test_incident_commands_open_list_show_close(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """open prints a draft, list shows time left (exit 1 when overdue), show and close work."""
    path = str(config.path)
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    assert main(["-c", path, "incident", "open", "--summary", "lost laptop", "--json"]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["status"] == "open" and opened["seconds_left"] == 72 * 3600
    assert "Voorbeeld Webwinkel B.V." in opened["draft"]
    assert main(["-c", path, "incident", "list"]) == 0
    assert "72h 00m left" in capsys.readouterr().out
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW + dt.timedelta(hours=73))
    assert main(["-c", path, "incident", "list", "--json"]) == 1
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "overdue" and listed["seconds_left"] == -3600
    assert main(["-c", path, "incident", "show", str(opened["id"]), "--lang", "en"]) == 0
    assert "Notify by" in capsys.readouterr().out
    assert main(["-c", path, "incident", "close", str(opened["id"]), "--note", "done"]) == 0
    assert main(["-c", path, "incident", "show", "99"]) == 2


def test_incident_usage_errors_go_to_standard_error(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown incident or a bad --aware-since is reported on stderr, as every command's
    errors are, leaving stdout empty; --json keeps the error object on stdout."""
    path = str(config.path)
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    assert main(["-c", path, "incident", "show", "99"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no incident 99" in err
    args = ["incident", "open", "--summary", "x", "--aware-since", "gisteren"]
    assert main(["-c", path, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--aware-since must be an ISO 8601 date-time" in err
    # Empty (a script's unset variable): refused too, not read as now.
    assert main(["-c", path, "incident", "open", "--summary", "x", "--aware-since", ""]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--aware-since must be an ISO 8601 date-time" in err
    assert main(["-c", path, "incident", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [], "a refused open recorded an incident"
    assert main(["-c", path, "incident", "show", "99", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "usage"


def test_an_aware_since_without_an_offset_is_the_machine_s_local_time(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dutch operator types the time on their clock: 10:00 in summer is 08:00 UTC, and the
    72 hours run from then (read as UTC, they ran two hours late). An offset given is kept."""
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    try:
        monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
        path = str(config.path)
        for typed, deadline in (
            ("2026-06-01T10:00", "2026-06-04T08:00:00+00:00"),
            ("2026-06-01T09:00+00:00", "2026-06-04T09:00:00+00:00"),
        ):
            args = ["incident", "open", "--summary", "x", "--aware-since", typed, "--json"]
            assert main(["-c", path, *args]) == 0
            assert json.loads(capsys.readouterr().out)["deadline"] == deadline
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_incident_commands_but_open_create_no_store(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no store yet, list, show and close have nothing to read and make none
    (a store at a mistaken path looked like the real one); open records the breach, in a
    store made for it, as sync and dsr make theirs."""
    path = str(config.path)
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    assert main(["-c", path, "incident", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["-c", path, "incident", "show", "1"]) == 2
    assert main(["-c", path, "incident", "close", "1", "--note", "done"]) == 2
    assert "no incident 1" in capsys.readouterr().err
    assert not config.store_path.exists()
    assert main(["-c", path, "incident", "open", "--summary", "laptop lost", "--json"]) == 0
    assert config.store_path.exists()


@pytest.mark.parametrize(
    "argv",
    [["incident", "open", "--summary", "laptop lost"], ["retention", "run", "--dry-run"]],
)
def test_incident_and_retention_write_with_the_store_held_shared(
    config: Config, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """As every command that writes to the store: a restore, which takes the store alone,
    waits for them and they for it. Without the lock a breach recorded while a restore ran
    went into the store being set aside, and its 72-hour clock was lost."""
    from contextlib import contextmanager

    from connector import cli_accountability

    Store(config.store_path).close()  # where there is none, a dry run opens none to hold
    held: list[str] = []

    @contextmanager
    def recording(store_path: Path) -> Iterator[None]:
        held.append(f"held {store_path.name}")
        yield
        held.append("released")

    monkeypatch.setattr(cli_accountability, "sharing_keys", recording)
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    real_store = cli_accountability.Store

    def store_inside(path: Path) -> Store:
        assert held == [f"held {path.name}"], "the store was opened without the lock"
        return real_store(path)

    monkeypatch.setattr(cli_accountability, "Store", store_inside)
    assert main(["-c", str(config.path), *argv]) == 0
    assert held == [f"held {config.store_path.name}", "released"]


def test_open_help_warns_against_personal_data(capsys: pytest.CaptureFixture[str]) -> None:
    """The --summary help tells the operator not to put personal data in it."""
    with pytest.raises(SystemExit) as info:
        main(["incident", "open", "--help"])
    assert info.value.code == 0
    assert "do NOT put personal data" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "export", "--since", "0001-01-01T00:00+01:00"],
        ["incident", "open", "--summary", "x", "--aware-since", "0001-01-01T00:00+01:00"],
        ["incident", "show", "99999999999999999999"],
        ["incident", "close", "99999999999999999999", "--note", "x"],
    ],
    ids=["since-year-1", "aware-since-year-1", "show-huge-id", "close-huge-id"],
)
def test_a_date_or_an_id_out_of_range_is_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """These ended as "internal error: OverflowError" with exit 1, which a script reads as
    "finished with failures"; a bad argument is exit 2 with words."""
    config = load_config(example_config(tmp_path, monkeypatch))
    audit.append(Store(config.store_path), "sync.run", {})  # a store exists
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    try:
        code = main(["-c", str(config.path), *argv])
    except SystemExit as exc:  # argparse refuses an argument by exiting
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "internal error" not in err, f"exit {code}: {err.strip()}"


def test_the_draft_gives_the_closing_time_in_dutch_time_as_every_other(
    store: Store, config: Config
) -> None:
    """Awareness, recording and the deadline showed the Dutch time beside UTC; the closing
    time was UTC alone."""
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Amsterdam")
    incident = incidents.open_incident(store, config, "Laptop lost", now=NOW)
    closed = incidents.close_incident(
        store,
        incident.id,
        "Sleutel ingetrokken",
        now=dt.datetime(2026, 6, 2, 23, 15, tzinfo=dt.UTC),
    )
    draft = incidents.notification_draft(closed, config, "nl", NOW)
    (line,) = [line for line in draft.splitlines() if "Gesloten op" in line]
    assert "2026-06-02T23:15:00+00:00 (2026-06-03 01:15 Europe/Amsterdam)" in line, line


def test_the_draft_lists_the_order_and_ip_data_a_breached_shop_holds(
    store: Store, config: Config
) -> None:
    """Art. 33(3)(a): the categories of personal data concerned. The shop holds its orders
    and payments and the IP address each order was placed from (the access report names
    them, adapter_copy_categories); the draft listed its mapped fields' categories only."""
    incident = incidents.open_incident(
        store, config, "Shop database leaked", systems=["shop"], now=NOW
    )
    assert {"orders", "online"} <= set(incident.scope["systems"]["shop"]["categories"])
    draft = incidents.notification_draft(incident, config, "nl", NOW).replace("\\", "")
    (row,) = [line for line in draft.splitlines() if line.startswith("| shop |")]
    assert "Bestellingen en betalingen" in row and "IP-adres" in row, row


def test_at_a_terminal_that_is_not_utf8_a_breach_is_recorded_once_with_its_draft_shown(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At an ASCII terminal `incident open` recorded the breach, then ended as an internal
    error (exit 1) printing the draft ("Categorieën"), so it looked unrecorded; and `incident
    list` ended so too (exit 1, as for an overdue breach) over a summary with an "é" in it.
    Their output is UTF-8, as the draft `--out` writes."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    path = str(config.path)
    assert main(["-c", path, "incident", "open", "--summary", "laptop lost in the café"]) == 0
    assert main(["-c", path, "incident", "list"]) == 0
    sys.stdout.flush()
    shown = raw.getvalue().decode("utf-8")
    assert "Categorieën persoonsgegevens" in shown
    assert "#1 open" in shown and "laptop lost in the café" in shown


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["open", "--summary", "laptop van Zo\udceb gestolen"], "summary"),
        (["close", "1", "--note", "AP gemeld, caf\udce9 gesloten"], "closing note"),
    ],
    ids=["open", "close"],
)
def test_a_summary_or_note_typed_in_another_encoding_is_refused_saying_so(
    config: Config,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    option: str,
) -> None:
    """A Latin-1 terminal on a UTF-8 host hands over bytes that are no text ("Zoë" arrives
    as "Zo" and a lone byte): the store refused them with the codec's words ("can't encode
    character '\\udceb' ... surrogates not allowed"), which say nothing of what to do. It
    is refused naming the text and the likely cause, and nothing is recorded."""
    path = str(config.path)
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    assert main(["-c", path, "incident", "open", "--summary", "laptop lost", "--json"]) == 0
    capsys.readouterr()
    assert main(["-c", path, "incident", *argv]) == 2
    err = capsys.readouterr().err
    assert f"the {option} is not UTF-8 text" in err and "encoding" in err, err
    assert "surrogates" not in err
    store = Store(config.store_path)
    try:
        (only,) = incidents.list_incidents(store)
    finally:
        store.close()
    assert only.summary == "laptop lost" and only.closed_at is None


@pytest.mark.parametrize(
    ("lang", "role", "said"),
    [
        ("en", "joint-controller", "Joint controller"),
        ("nl", "joint-controller", "Gezamenlijk verwerkingsverantwoordelijke"),
        ("en", "controller", "Independent controller"),
        ("nl", "controller", "Zelfstandig verwerkingsverantwoordelijke"),
    ],
)
def test_the_draft_does_not_call_a_controller_among_the_systems_a_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, role: str, said: str
) -> None:
    """The register labels a system run by a joint (Art. 26) or an independent controller as
    such, no processor (Art. 28); the draft for the regulator listed it under "Processor" as
    one. It says the role; a processor's row stays as it was."""
    path = example_config(tmp_path, monkeypatch)
    marker = 'legal_name = "HubSpot Ireland Limited"\nrole = "processor"'
    assert marker in path.read_text()
    path.write_text(path.read_text().replace(marker, marker.replace('"processor"', f'"{role}"')))
    config = load_config(path)
    store = Store(config.store_path)
    try:
        incident = incidents.open_incident(store, config, "Laptop lost", now=NOW)
        draft = incidents.notification_draft(incident, config, lang, NOW).replace("\\", "")
    finally:
        store.close()
    rows = {line.split(" | ")[0]: line for line in draft.splitlines() if line.startswith("| ")}
    assert "HubSpot Ireland Limited" in rows["| crm"] and said in rows["| crm"], rows["| crm"]
    assert "controller" not in rows["| deals"] and "verantwoordelijke" not in rows["| deals"]


def test_a_system_named_twice_is_recorded_once(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--system crm --system crm` recorded the breach as concerning "crm, crm", in the
    incident, its audit entry and every listing of it (`status`, the daily review)."""
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    args = ["incident", "open", "--summary", "x", "--system", "crm", "--system", "shop"]
    assert main(["-c", str(config.path), *args, "--system", "crm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["systems"] == ["crm", "shop"]
    store = Store(config.store_path)
    try:
        (entry,) = [e for e in audit.entries(store) if e.kind == audit.INCIDENT_OPENED]
        assert entry.data["systems"] == ["crm", "shop"]
        assert incidents.open_summary(store, NOW)["incidents"][0]["systems"] == ["crm", "shop"]
    finally:
        store.close()


def test_open_with_out_and_json_says_where_the_draft_was_written(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `register --out F --json` does: a script learns where the draft went."""
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    out = config.path.parent / "incident.txt"
    args = ["incident", "open", "--summary", "x", "--out", str(out), "--json"]
    assert main(["-c", str(config.path), *args]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["written"] == str(out) and out.read_text() == answer["draft"]


def test_the_console_gives_the_deadline_and_closing_time_in_dutch_time_too(
    config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """open, list, show and close printed the deadline and closing time in UTC alone, while
    the draft beside them gives the Dutch time too: an operator reading "09:30" on the
    console took it for their own clock and notified an hour or two late."""
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Amsterdam")
    monkeypatch.setattr(incidents, "utc_now", lambda: NOW)
    path = str(config.path)
    deadline = "2026-06-04T09:30:00+00:00 (2026-06-04 11:30 Europe/Amsterdam)"
    for args in (
        ["incident", "open", "--summary", "Laptop lost", "--out", str(config.path.parent / "d")],
        ["incident", "list"],
        ["incident", "show", "1"],
    ):
        assert main(["-c", path, *args]) == 0
        (line,) = [
            line
            for line in capsys.readouterr().out.splitlines()
            if "deadline" in line or "Persoonsgegevens by" in line
        ]
        assert deadline in " ".join(line.split()), (args, line)
    monkeypatch.setattr(
        incidents, "utc_now", lambda: dt.datetime(2026, 6, 2, 23, 15, tzinfo=dt.UTC)
    )
    assert main(["-c", path, "incident", "close", "1", "--note", "Sleutel ingetrokken"]) == 0
    closed = "2026-06-02T23:15:00+00:00 (2026-06-03 01:15 Europe/Amsterdam)"
    assert closed in " ".join(capsys.readouterr().out.split())


def test_the_72_hours_are_elapsed_hours_when_awareness_is_given_in_a_zone_with_summer_time(
    store: Store, config: Config
) -> None:
    """Art. 33(1)'s 72 hours run on the clock, not the calendar: an awareness given in
    Europe/Amsterdam just before the clocks go back (25 October 2026) ends 72 hours later in
    UTC, not at the same wall-clock time three days on (73 hours)."""
    from zoneinfo import ZoneInfo

    aware = dt.datetime(2026, 10, 24, 10, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    incident = incidents.open_incident(
        store, config, "laptop lost", aware_at=aware, now=aware + dt.timedelta(hours=1)
    )
    assert incident.aware_at == "2026-10-24T08:00:00+00:00"
    assert incident.deadline == "2026-10-27T08:00:00+00:00"
