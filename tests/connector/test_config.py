"""Config loading: every mistake exits 2 with the file, the key and what is wrong."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
import typing
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from adapters.woocommerce import WooCommerceSettings
from connector.cli import main
from connector.config import load_config, parse_schedule
from connector.demo import REPO_MAPPINGS
from connector.errors import ConfigError
from tests.conftest import example_config, write_config
from tests.strategies import every_key_takes_any_value


def _load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_example_config_shape_loads(config_path: Path) -> None:
    """A well-formed config loads with its systems, mappings and flows."""
    config = load_config(config_path)
    assert set(config.systems) == {"shop", "crm"}
    assert config.flows[0].destinations == ["crm"]
    assert "email" in config.mappings["crm"].outbound_fields


def test_typo_in_top_level_key_names_key_and_file(tmp_path: Path, env: dict[str, str]) -> None:
    """A typo'd top-level table is refused, naming the key and the file."""
    path = write_config(tmp_path, extra="[stor]\npath = 'x.db'")
    error = _load_error(path)
    assert error.key == "stor" and error.file == str(path)


def test_typo_in_system_key_exits_2_naming_key_and_file(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` on a config with a misspelt system key exits 2 and names key and file."""
    path = write_config(tmp_path, crm_extra='base_ulr = "https://x.test"')
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "systems.crm.base_ulr" in err and str(path) in err and "unknown key" in err


def test_http_url_refused_at_load(tmp_path: Path, env: dict[str, str]) -> None:
    """A plain http:// URL to a remote host is refused: TLS is required."""
    error = _load_error(write_config(tmp_path, crm_url="http://api.hubapi.com"))
    assert error.key == "systems.crm.base_url" and "https" in error.problem


def test_http_loopback_needs_the_development_switch(tmp_path: Path, env: dict[str, str]) -> None:
    """http:// to loopback is refused by default and allowed only with the explicit switch."""
    error = _load_error(write_config(tmp_path, crm_url="http://127.0.0.1:9999"))
    assert "allow_insecure_loopback" in error.problem
    ok = write_config(
        tmp_path,
        crm_url="http://127.0.0.1:9999",
        extra="[development]\nallow_insecure_loopback = true",
    )
    assert load_config(ok).systems["crm"].base_url == "http://127.0.0.1:9999"


def test_a_woocommerce_shop_over_http_is_refused_even_with_the_development_switch(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """WooCommerce takes the key and secret over https only (over http it wants OAuth 1.0a,
    which klantsync does not send): a loopback http:// shop, which the development switch
    lets through, is refused at load, saying why, rather than at every call with a 401."""
    path = write_config(
        tmp_path,
        shop_url="http://127.0.0.1:9999",
        extra="[development]\nallow_insecure_loopback = true",
    )
    error = _load_error(path)
    assert error.key == "systems.shop.base_url"
    assert "https://" in error.problem and "OAuth 1.0a" in error.problem
    without_switch = _load_error(write_config(tmp_path, shop_url="http://127.0.0.1:9999"))
    assert "allow_insecure_loopback" in without_switch.problem  # the TLS policy speaks first


def test_missing_secret_names_variable_not_value(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential whose environment variable is unset is named; no secret is printed."""
    monkeypatch.delenv("T_HS_TOKEN")
    error = _load_error(write_config(tmp_path))
    assert error.key == "systems.crm.credentials.token"
    assert "T_HS_TOKEN" in str(error)


def test_literal_secret_in_config_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """A secret written into the file itself is refused and not echoed."""
    path = write_config(tmp_path)
    text = path.read_text().replace('token = "env:T_HS_TOKEN"', 'token = "pat-na1-literal"')
    path.write_text(text)
    error = _load_error(path)
    assert error.key == "systems.crm.credentials.token"
    assert "pat-na1-literal" not in str(error)


def test_unknown_adapter_lists_known_ones(tmp_path: Path, env: dict[str, str]) -> None:
    """An unknown adapter kind is named with the known ones."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('adapter = "hubspot"', 'adapter = "hubspt"'))
    error = _load_error(path)
    assert error.key == "systems.crm.adapter" and "hubspot" in error.problem


@pytest.mark.parametrize("written", ["5", '["hubspot"]', '{ kind = "hubspot" }'])
def test_an_adapter_that_is_no_name_is_called_so_not_missing(
    tmp_path: Path, env: dict[str, str], written: str
) -> None:
    """``adapter = 5`` (or a list, or a table) was refused as "required key is missing",
    sending the operator to add a key that is there."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('adapter = "hubspot"', f"adapter = {written}"))
    error = _load_error(path)
    assert error.key == "systems.crm.adapter"
    assert "missing" not in error.problem and "hubspot" in error.problem


def test_unknown_field_in_mapping_names_mapping_file(tmp_path: Path, env: dict[str, str]) -> None:
    """A mapping naming a field outside the canonical vocabulary fails with its file and key."""
    mapping = tmp_path / "crm.toml"
    mapping.write_text(
        '[fields.email]\npath = "email"\npurpose = "x"\n'
        '[fields.shoe_size]\npath = "shoe"\npurpose = "y"\n'
    )
    error = _load_error(write_config(tmp_path, crm_mapping=mapping))
    assert error.file == str(mapping) and error.key == "fields.shoe_size"


def test_every_problem_of_a_mapping_file_is_told_at_once_naming_the_config_key_that_chose_it(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mapping's problems were rewrapped one: `check` told the first, and the next only
    once that was fixed. Each is told, naming the mapping file, its key and the config key
    that chose the file, beside the config's own problems."""
    mapping = tmp_path / "crm.toml"
    mapping.write_text(
        '[fields.email]\npath = "email"\n'
        '[fields.shoe_size]\npath = "shoe"\npurpose = "y"\n'
        '[fields.phone]\npath = "phone"\npurpose = "z"\ntransform = "shout"\n'
    )
    path = write_config(tmp_path, crm_mapping=mapping, extra='[logging]\nlevel = "LOUD"\n')
    error = _load_error(path)
    every = [error, *error.also]
    assert [(e.file, e.key) for e in every] == [
        (str(path), "logging.level"),
        (str(mapping), "fields.email.purpose"),
        (str(mapping), "fields.shoe_size"),
        (str(mapping), "fields.phone.transform"),
    ]
    assert all("systems.crm.mapping" in e.problem for e in every[1:])

    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert [(p["file"], p["key"]) for p in answer["problems"]] == [(e.file, e.key) for e in every]
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "4 problems" in err and err.count("systems.crm.mapping") >= 3


def test_mapped_field_without_purpose_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """Every mapped field must state its purpose."""
    mapping = tmp_path / "crm.toml"
    mapping.write_text('[fields.email]\npath = "email"\n')
    error = _load_error(write_config(tmp_path, crm_mapping=mapping))
    assert error.key == "fields.email.purpose"


def test_bad_master_key_is_explained(tmp_path: Path, env: dict[str, str]) -> None:
    """A master key of the wrong length is refused with a hint, without echoing it."""
    path = write_config(tmp_path)
    (tmp_path / "master.key").write_text("c2hvcnQ=")
    error = _load_error(path)
    assert error.key == "keys.source" and "keygen" in error.problem


def test_flow_to_unknown_system_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """A flow naming a system that does not exist is refused."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('destinations = ["crm"]', 'destinations = ["crn"]'))
    error = _load_error(path)
    assert error.key == "flows[0].destinations"


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist exits 2 naming it."""
    assert main(["-c", str(tmp_path / "nope.toml"), "status"]) == 2
    assert "nope.toml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"), [("every 15m", 900.0), ("every 2h", 7200.0), ("*/15 * * * *", 900.0)]
)
def test_schedules_parse(text: str, seconds: float) -> None:
    """Interval and cron schedules both parse and know their nominal period."""
    assert parse_schedule(text).nominal_seconds == seconds


@pytest.mark.parametrize(
    ("weekday", "days"),
    [
        ("7-7", "sun"),  # Sunday to Sunday (read as 0-7 it was every day)
        ("7/2", "sun"),  # "N/step" runs from N to 7, the last day: Sunday alone
        ("1/2", "sun,mon,wed,fri"),  # Monday, Wednesday, Friday and Sunday (7)
        ("5-7", "sun,fri,sat"),
        ("0-7", "sun,mon,tue,wed,thu,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
    ],
)
def test_cron_days_of_the_week_are_read_as_crontab_reads_them(weekday: str, days: str) -> None:
    """7 is Sunday as 0 is, at either end of a range and before a step."""
    from connector.config import _weekday_names

    assert _weekday_names(weekday) == days
    if days == "sun":  # a weekly job runs weekly
        assert parse_schedule(f"0 3 * * {weekday}").nominal_seconds == 7 * 86400


def test_bad_schedule_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """A schedule that is neither an interval nor cron is refused at load."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"every 15m"', '"sometimes"'))
    assert _load_error(path).key == "flows[0].schedule"


@pytest.mark.parametrize("schedule", ["0 9 * * 1-", "0 9 * * mon-", "0 9 * * 1-/2", "0 9 * * 1/"])
def test_a_day_of_the_week_range_without_its_end_is_refused_at_load(
    tmp_path: Path, env: dict[str, str], schedule: str
) -> None:
    """Crontab refuses "1-" in every field, and so do the minute and hour fields here; read
    as Monday alone, "1-5" with its 5 lost ran a weekday flow once a week."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"every 15m"', f'"{schedule}"'))
    error = _load_error(path)
    assert error.key == "flows[0].schedule" and "day-of-week" in error.problem


@pytest.mark.parametrize("value", ["inf", "+inf", "nan"])
@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("sync", "retry_base_seconds = {}", "sync.retry_base_seconds"),
        ("sync", "retry_max_seconds = {}", "sync.retry_max_seconds"),
        ("crm", "timeout_seconds = {}", "systems.crm.timeout_seconds"),
        ("crm", "rate_limit = {{ requests = 10, per_seconds = {} }}", "systems.crm.rate_limit"),
    ],
)
def test_a_duration_that_is_no_finite_number_is_refused_at_load(
    tmp_path: Path, env: dict[str, str], table: str, line: str, key: str, value: str
) -> None:
    """TOML has inf and nan. A timeout of inf is no timeout: a call to a system that never
    answers held the sync forever; an infinite retry wait never retried."""
    setting = line.format(value)
    if table == "sync":
        path = write_config(tmp_path)
        text = path.read_text().replace("retry_base_seconds = 0\n", "")
        path.write_text(text.replace("[sync]", f"[sync]\n{setting}"))
    else:
        path = write_config(tmp_path, crm_extra=setting)
    error = _load_error(path)
    assert error.key.startswith(key) and "finite" in error.problem, error


@pytest.mark.parametrize(
    ("table", "line", "key", "words"),
    [
        ("sync", "retry_base_seconds = 1e300", "sync.retry_base_seconds", "an hour"),
        ("sync", "retry_max_seconds = 1e308", "sync.retry_max_seconds", "a day"),
        ("crm", "timeout_seconds = 1e300", "systems.crm.timeout_seconds", "an hour"),
        ("crm", "deadline_seconds = 1e300", "systems.crm.deadline_seconds", "4 hours"),
        ("crm", "search_lag_seconds = 1000000000", "systems.crm.search_lag_seconds", "a day"),
        (
            "crm",
            "rate_limit = { requests = 10, per_seconds = 1e300 }",
            "systems.crm.rate_limit.per_seconds",
            "a day",
        ),
    ],
    ids=["retry-base", "retry-max", "timeout", "deadline", "search-lag", "rate-window"],
)
def test_a_duration_of_absurd_magnitude_is_refused_at_load_saying_its_bound(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    table: str,
    line: str,
    key: str,
    words: str,
) -> None:
    """inf was refused and 1e300 loaded: a timeout of 1e300 seconds is no timeout either, a
    retry wait of 1e308 never retries, a rate window of 1e300 seconds lets its first few
    calls through and then none, a HubSpot search lag of 10**9 seconds kept the cursor
    decades back. Each is refused past a bound said in words, exit 2."""
    if table == "sync":
        path = write_config(tmp_path)
        text = path.read_text().replace("retry_base_seconds = 0\n", "")
        path.write_text(text.replace("[sync]", f"[sync]\n{line}"))
    else:
        path = write_config(tmp_path, crm_extra=line)
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), key), error
    assert f"seconds ({words})" in error.problem and "at most" in error.problem, error
    assert "1e" not in error.problem
    assert main(["-c", str(path), "check"]) == 2
    assert key in capsys.readouterr().err


def test_a_duration_at_its_bound_still_loads(tmp_path: Path, env: dict[str, str]) -> None:
    line = "timeout_seconds = 3600\ndeadline_seconds = 14400\nsearch_lag_seconds = 86400\n"
    line += "rate_limit = { requests = 1, per_seconds = 86400 }"
    path = write_config(tmp_path, crm_extra=line)
    text = path.read_text().replace("retry_base_seconds = 0\n", "retry_base_seconds = 3600\n")
    path.write_text(text.replace("[sync]", "[sync]\nretry_max_seconds = 86400"))
    config = load_config(path)
    assert config.sync.retry_max_seconds == 86400
    assert config.systems["crm"].deadline_seconds == 14400
    assert config.systems["crm"].search_lag_seconds == 86400


def test_a_mapping_for_another_kind_of_system_is_refused_naming_both_kinds(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A WooCommerce shop given the HubSpot mapping loaded and passed `check`, and read
    every customer at paths a WooCommerce customer does not have."""
    error = _load_error(write_config(tmp_path, shop_mapping=REPO_MAPPINGS / "hubspot.toml"))
    assert error.key == "systems.shop.mapping" and error.file.endswith("klantsync.toml")
    assert "'hubspot'" in error.problem and "'woocommerce'" in error.problem


def test_a_mapping_that_names_no_kind_of_system_is_not_judged(
    tmp_path: Path, env: dict[str, str]
) -> None:
    own = tmp_path / "shop.toml"
    text = (REPO_MAPPINGS / "woocommerce.toml").read_text()
    assert 'system = "woocommerce"\n' in text
    own.write_text(text.replace('system = "woocommerce"\n', ""))
    assert load_config(write_config(tmp_path, shop_mapping=own)).mappings["shop"].system is None


def test_config_example_loads_as_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.toml documents every option and loads once its secrets exist."""
    config = load_config(example_config(tmp_path, monkeypatch))
    assert config.controller is not None and config.controller.kvk
    assert all(s.processor is not None for s in config.systems.values())
    assert all(f.privacy is not None and f.privacy.legal_basis for f in config.flows)
    assert {s.adapter for s in config.systems.values()} >= {
        "woocommerce",
        "hubspot",
        "mailchimp",
        "pipedrive",
    }


def _example_with_every_option_set(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config.example.toml with every option it shows commented out set as shown (tables and
    ``key = value`` lines, a value's continuation lines included), its placeholders filled
    in, the daemon's TLS pair made and every secret it names set."""
    from connector.devtls import DevCA

    path = example_config(directory, monkeypatch)
    lines: list[str] = []
    unclosed = 0  # brackets a value set from a comment leaves open: it goes on below
    for line in path.read_text().splitlines():
        shown = re.match(r"^# ?(\[[\w.]+\]|[a-z_]+ = .*)$", line)
        if unclosed and line.startswith("#"):
            line = line[1:]
        elif shown:
            line, unclosed = shown[1], 0
        else:
            unclosed = 0
        value = line.split("#", 1)[0]
        unclosed += value.count("[") - value.count("]") if "=" in line or unclosed else 0
        lines.append(line)
    pair = DevCA(directory / "tls").issue("klantsync", hosts=("klantsync.example.nl",))
    text = "\n".join(lines).replace("<store>", "voorbeeld")
    text = text.replace('"/etc/klantsync/tls/cert.pem"', f'"{pair.cert_path}"')
    path.write_text(text.replace('"/etc/klantsync/tls/key.pem"', f'"{pair.key_path}"') + "\n")
    for name in set(re.findall(r'"env:([A-Z0-9_]+)"', text)):
        monkeypatch.setenv(name, f"secret-{name.lower()}")
    monkeypatch.setenv("KLANTSYNC_DEALS_HOOK_AUTH", "user:password")  # as its comment says
    return path


def test_every_option_config_example_shows_commented_out_loads_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.example.toml documents the options it does not set as commented-out lines
    (the daemon's tokens and TLS, webhook secrets, a Shopify shop): each of them, set as
    shown, is a key the config takes, with a value it accepts."""
    config = load_config(_example_with_every_option_set(tmp_path, monkeypatch))
    assert config.daemon.admin_token is not None and config.daemon.metrics_token is not None
    assert config.daemon.tls_cert is not None and config.daemon.public_url
    assert config.systems["webshop"].adapter == "shopify"
    assert all(system.webhooks is not None for system in config.systems.values())
    shop = config.systems["shop"]
    assert shop.webhooks is not None and shop.webhooks.previous_secret is not None
    assert shop.rate_limit is not None and shop.max_concurrency == 4


@pytest.mark.parametrize("written", ["EU", "Estonia", "EST", "UK"])
def test_a_country_that_is_no_iso_code_is_refused_not_registered_as_a_transfer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    written: str,
) -> None:
    """A processor's `country` is an ISO 3166-1 alpha-2 code, on which the register decides
    whether the data leaves the EEA: "EU", "Estonia" or the alpha-3 "EST" for an Estonian
    processor was registered as a transfer to a third country with its safeguard missing.
    It is refused at load naming the file and the key (exit 2); a code in lower case is
    still read as the code."""
    path = example_config(tmp_path, monkeypatch)
    original = path.read_text()
    path.write_text(original.replace('country = "EE"', f'country = "{written}"'))
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), "systems.deals.processor.country")
    assert "ISO 3166-1 alpha-2" in error.problem
    assert main(["-c", str(path), "check"]) == 2
    assert "systems.deals.processor.country" in capsys.readouterr().err
    path.write_text(original.replace('country = "EE"', 'country = "ee"'))
    processor = load_config(path).systems["deals"].processor
    assert processor is not None and processor.country == "EE"


@pytest.mark.parametrize("written", ["EU", "USA", "United States"])
def test_an_onward_transfer_country_that_is_no_iso_code_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    written: str,
) -> None:
    """Where a processor's sub-processors take the data is an ISO 3166-1 alpha-2 code too,
    refused at load naming the file and the entry's key (exit 2); "us" is read as "US"."""
    path = example_config(tmp_path, monkeypatch)
    original = path.read_text()
    entry = '{ country = "US", recipient = "HubSpot, Inc."'
    path.write_text(original.replace(entry, entry.replace('"US"', f'"{written}"')))
    error = _load_error(path)
    key = "systems.crm.processor.onward_transfers[0].country"
    assert (error.file, error.key) == (str(path), key)
    assert "ISO 3166-1 alpha-2" in error.problem
    assert main(["-c", str(path), "check"]) == 2
    assert key in capsys.readouterr().err
    path.write_text(original.replace(entry, entry.replace('"US"', '"us"')))
    crm = load_config(path).systems["crm"].processor
    assert crm is not None and crm.onward_transfers[0].country == "US"


def test_an_onward_transfer_with_an_unknown_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt key in an onward_transfers entry ("mechanisms") is named, not ignored:
    the safeguard it held would otherwise be reported missing with no clue why."""
    path = example_config(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace('mechanism = "EU-US', 'mechanisms = "EU-US', 1))
    error = _load_error(path)
    assert error.key.startswith("systems.crm.processor.onward_transfers[0].mechanisms")


EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def _every_option() -> list[tuple[str, str, FieldInfo]]:
    """(model name, key, field) for each key of each config model, adapters' included, and
    of the tables inside them."""
    from adapters.registry import REGISTRY
    from connector.config import (
        DaemonSettings,
        DevelopmentSettings,
        FlowSettings,
        KeySettings,
        LoggingSettings,
        StoreSettings,
        SyncSettings,
    )
    from connector.privacy import ControllerSettings, PrivacySettings, RetentionSettings

    roots: list[type[BaseModel]] = [
        StoreSettings,
        KeySettings,
        DevelopmentSettings,
        SyncSettings,
        LoggingSettings,
        DaemonSettings,
        ControllerSettings,
        PrivacySettings,
        RetentionSettings,
        FlowSettings,
        *(spec.settings_model for spec in REGISTRY.values()),
    ]
    seen: set[type[BaseModel]] = set()
    found: list[tuple[str, str, FieldInfo]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            found.append((model.__name__, info.alias or name, info))
            for arg in (info.annotation, *typing.get_args(info.annotation)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for root in roots:
        walk(root)
    return found


def test_config_example_names_every_option_of_every_table() -> None:
    """Each key of each config model, adapters' included, appears in config.example.toml as
    ``key =`` or as a ``[... .key]`` table (commented out where it has no example value)."""
    text = EXAMPLE.read_text()
    missing = [
        f"{model}.{key}"
        for model, key, _ in _every_option()
        if not re.search(rf"(^|[\s#{{,]){re.escape(key)} =|\.{re.escape(key)}\]", text, re.M)
    ]
    assert missing == []


def _example_values(text: str, key: str) -> list[tuple[object, str]]:
    """Each value config.example.toml gives ``key`` at the start of a line (commented out or
    not; a value running over commented lines joined), with the comment that goes with it:
    the line's own and the comment-only lines below it."""
    lines = text.splitlines()
    found: list[tuple[object, str]] = []
    for index, line in enumerate(lines):
        match = re.match(rf"[#\s]*{re.escape(key)} = (.*)$", line)
        if match is None:
            continue
        written, _, comment = match.group(1).partition("  #")
        value: object = None
        for more in [None, *lines[index + 1 : index + 4]]:
            if more is not None:
                written += " " + more.lstrip("# ").partition("  #")[0]
                comment += " " + more.partition("  #")[2]
            with contextlib.suppress(tomllib.TOMLDecodeError):
                value = tomllib.loads(f"v = {written}")["v"]
                break
        for below in lines[index + 1 :]:
            if not re.match(r"\s+#", below):  # an indented comment goes on the one above
                break
            comment += " " + below.strip().lstrip("# ")
        found.append((value, comment))
    return found


def test_config_example_states_every_option_s_default() -> None:
    """config.example.toml says it documents every option "with its default where it has
    one": each key with a default is written with that value, or its comment says what the
    default is (the value shown is another, as a flow's cron schedule)."""
    text = EXAMPLE.read_text()
    wrong: list[str] = []
    for model, key, info in _every_option():
        default = info.get_default(call_default_factory=True)
        if info.is_required() or default in (None, "", [], {}):
            continue
        if isinstance(default, Path):
            default = str(default)
        given = _example_values(text, key)
        shown = json.dumps(default)  # as TOML writes it: "every 15m", ["customers"], true
        if not any(
            value == default or ("default" in comment and shown in comment)
            for value, comment in given
        ):
            wrong.append(f"{model}.{key} (default {shown})")
    assert wrong == []


def _said_of(text: str, key: str) -> str:
    """Every comment config.example.toml gives ``key``: those of each line that sets it
    (commented out or not, in an inline table or not) and of the indented comment lines
    below it, and that of the line of the table it is in (a bound said once for the whole
    table, as ``[retention]``'s)."""
    lines = text.splitlines()
    said: list[str] = []
    for index, line in enumerate(lines):
        # Inline tables too: rate_limit = { requests = 10, per_seconds = 1 }.
        if not re.search(rf"(^|[\s#{{,]){re.escape(key)} = ", line):
            continue
        said.append(line.partition("  #")[2])
        for below in lines[index + 1 :]:
            # Indented comments go on the line above; in a commented-out block, "#   #".
            if not re.match(r"#?\s+#", below):
                break
            said.append(below)
        table = next(
            (above for above in reversed(lines[:index]) if re.match(r"#?\s*\[", above)), ""
        )
        said.append(table.partition("  #")[2])
    return " ".join(said)


def test_config_example_states_every_option_s_upper_bound() -> None:
    """config.example.toml says it documents every option: where a model caps a number (a
    retry count, a window, a period in days), the example states the cap, so a value past
    it is not first met as a refusal at load. ``retry_attempts`` (at most 20) and Shopify's
    ``overlap_seconds`` (at most a week) were given with no bound."""
    text = EXAMPLE.read_text()
    unstated: list[str] = []
    for model, key, info in _every_option():
        caps = [m.le for m in info.metadata if isinstance(m, annotated_types.Le)]
        for cap in caps:
            written = f"{cap:g}" if isinstance(cap, float) else str(cap)
            if not re.search(rf"(?<![0-9]){re.escape(written)}(?![0-9])", _said_of(text, key)):
                unstated.append(f"{model}.{key} (at most {written})")
    assert unstated == []


def test_flow_from_a_system_that_cannot_pull_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A destination-only system named as a flow's source fails at load, not at run time."""
    path = write_config(tmp_path)
    text = (
        path.read_text()
        .replace('source = "shop"', 'source = "news"')
        .replace('destinations = ["crm"]', 'destinations = ["crm"]')
    )
    text = text.replace(
        "[[flows]]",
        '[systems.news]\nadapter = "mailchimp"\nbase_url = "https://us21.api.mailchimp.test/3.0"\n'
        f'mapping = "{REPO_MAPPINGS / "mailchimp.toml"}"\nlist_ids = ["a1b2c3d4e5"]\n'
        'credentials = { api_key = "env:T_HS_TOKEN" }\n\n[[flows]]',
    )
    path.write_text(text)
    error = _load_error(path)
    assert error.key == "flows[0].source" and "cannot pull" in error.problem


def test_a_mailchimp_key_of_another_data_centre_exits_2_naming_the_key(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key made at data centre us21 for a base URL at us6: refused at load naming the
    system's credentials and both data centres, not first seen as a sync's 401."""
    monkeypatch.setenv("T_MC_KEY", "0123456789abcdef0123456789abcdef-us21")
    path = write_config(tmp_path)
    text = path.read_text().replace(
        "[[flows]]",
        '[systems.news]\nadapter = "mailchimp"\nbase_url = "https://us6.api.mailchimp.com/3.0"\n'
        f'mapping = "{REPO_MAPPINGS / "mailchimp.toml"}"\nlist_ids = ["a1b2c3d4e5"]\n'
        'credentials = { api_key = "env:T_MC_KEY" }\n\n[[flows]]',
    )
    path.write_text(text)
    error = _load_error(path)
    assert error.key.startswith("systems.news.credentials")
    assert "data centre us21" in error.problem and "base_url for us6" in error.problem
    assert "0123456789abcdef" not in error.problem


def test_flow_from_a_source_whose_mapping_reads_no_email_is_refused(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """People are known by their e-mail: a source whose mapping only writes it
    (``direction = "out"``) would find every customer "without a usable e-mail" and sync
    nobody, in silence. `check` exits 2 naming the flow's source and the mapping."""
    text = (REPO_MAPPINGS / "woocommerce.toml").read_text()
    old = 'transform = ["trim", "lower"]\n'
    shop_mapping = tmp_path / "shop.toml"
    shop_mapping.write_text(text.replace(old, old + 'direction = "out"\n', 1))
    path = write_config(tmp_path, shop_mapping=shop_mapping)
    error = _load_error(path)
    assert error.key == "flows[0].source" and "does not read the e-mail" in error.problem
    assert str(shop_mapping) in error.problem
    assert main(["-c", str(path), "check", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["key"] == "flows[0].source"


def test_ca_bundle_that_is_not_pem_exits_2_at_check(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A ca_bundle that exists but holds no PEM certificate fails `check` with exit 2, naming
    the key and the bundle, instead of passing and breaking the first sync."""
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "systems.crm.ca_bundle" in err and str(tmp_path / "ca.pem") in err
    assert str(path) in err and "PEM" in err and "Traceback" not in err


def _ca_pem(common_name: str, *, days_from: float, days_to: float) -> bytes:
    """A self-signed CA certificate valid from ``days_from`` to ``days_to`` days from now."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days_from))
        .not_valid_after(now + dt.timedelta(days=days_to))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _day_from_now(days: float) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).date().isoformat()


@pytest.mark.parametrize(
    ("spans", "words", "day"),
    [
        ([(-400, -30), (-200, -10)], "every certificate in it has expired, the last on", -10),
        ([(5, 400)], "no certificate in it is valid before", 5),
        ([(-400, -30), (5, 400)], "the next is valid from", 5),
    ],
    ids=["all-expired", "not-yet-valid", "expired-and-not-yet-valid"],
)
def test_a_ca_bundle_holding_no_certificate_valid_now_fails_check_naming_key_and_date(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    spans: list[tuple[float, float]],
    words: str,
    day: float,
) -> None:
    """A private CA's certificate that has expired loaded as any other: `check` passed and
    every call to the system then failed its TLS check. Offline, `check` exits 2 naming the
    file, systems.<name>.ca_bundle and the date, not the certificate's subject."""
    bundle = b"".join(
        _ca_pem(f"Jan Jansen CA {i}", days_from=a, days_to=b) for i, (a, b) in enumerate(spans)
    )
    (tmp_path / "ca.pem").write_bytes(bundle)
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert (answer["error"], answer["file"], answer["key"]) == (
        "config",
        str(path),
        "systems.crm.ca_bundle",
    )
    assert f"{words} {_day_from_now(day)}" in answer["message"], answer["message"]
    assert "Jan Jansen" not in answer["message"]
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "systems.crm.ca_bundle" in err and str(path) in err and "Traceback" not in err


def test_a_ca_bundle_with_a_certificate_expiring_within_30_days_is_a_warning(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate that expires within 30 days is said, with its date, while there is time
    to renew it; an expired one beside a valid one, and one that lasts, say nothing."""
    soon = _ca_pem("Jan Jansen CA", days_from=-300, days_to=10)
    lasting = _ca_pem("Lasting CA", days_from=-1, days_to=400)
    expired = _ca_pem("Old CA", days_from=-400, days_to=-1)
    (tmp_path / "ca.pem").write_bytes(soon + lasting)
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    assert main(["-c", str(path), "check", "--json"]) != 2  # 1: the gaps of the test config
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert warning.startswith("systems.crm.ca_bundle: ")
    assert "1 of its 2 certificates expires within 30 days" in warning
    assert _day_from_now(10) in warning and "Jan Jansen" not in warning
    (tmp_path / "ca.pem").write_bytes(expired + lasting)
    assert main(["-c", str(path), "check", "--json"]) != 2
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    # Nor does the sandbox's CA, made afresh at each start, which the example config trusts.
    from connector.devtls import DevCA

    path.write_text(path.read_text().replace('"ca.pem"', f'"{DevCA(tmp_path / "dev").ca_path}"'))
    assert main(["-c", str(path), "check", "--json"]) != 2
    assert json.loads(capsys.readouterr().out)["warnings"] == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n",
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "blank", "a-key-alone"],
)
def test_an_empty_ca_bundle_or_one_without_a_certificate_exits_2_at_check(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    (tmp_path / "ca.pem").write_bytes(content)
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert (answer["file"], answer["key"]) == (str(path), "systems.crm.ca_bundle")
    assert "holds no usable PEM certificate" in answer["message"]


def test_a_ca_bundle_that_cannot_be_read_exits_2_at_check(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bundle the user may not read (made so here: the tests may run as root, whom no file
    mode stops) is said so, naming the key."""
    import ssl

    def refused(self: ssl.SSLContext, cafile: str | None = None, **_: object) -> None:
        raise PermissionError(13, "Permission denied", cafile)

    (tmp_path / "ca.pem").write_bytes(_ca_pem("A CA", days_from=-1, days_to=400))
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", refused)
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert (answer["file"], answer["key"]) == (str(path), "systems.crm.ca_bundle")
    assert "cannot be read (Permission denied)" in answer["message"]


def test_ca_bundle_spoilt_after_load_is_the_same_config_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A bundle replaced by junk after the config loaded (a daemon runs for months) gives the
    config error naming systems.X.ca_bundle when the clients are built, not an SSLError."""
    import shutil

    import certifi

    from connector.systems import open_systems

    shutil.copy(certifi.where(), tmp_path / "ca.pem")
    path = write_config(tmp_path, crm_extra='ca_bundle = "ca.pem"')
    config = load_config(path)
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        open_systems(config)
    assert info.value.file == str(path) and info.value.key == "systems.crm.ca_bundle"
    assert str(tmp_path / "ca.pem") in info.value.problem


def test_a_system_s_call_deadline_is_set_beside_its_timeout(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """``deadline_seconds`` bounds a whole call, as ``timeout_seconds`` bounds each wait for
    a byte; by default it is four times the timeout, and it must be more than zero."""
    from connector.systems import open_systems

    path = write_config(tmp_path, crm_extra="timeout_seconds = 10.0\ndeadline_seconds = 25.0")
    systems = open_systems(load_config(path))
    assert systems["crm"].client.deadline == 25.0
    assert systems["shop"].client.deadline == 4 * 30.0
    error = _load_error(write_config(tmp_path, crm_extra="deadline_seconds = 0"))
    assert error.key == "systems.crm.deadline_seconds"


def test_a_call_deadline_shorter_than_its_timeout_is_refused(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A deadline below the call's own timeout cut every slow wait short, so the timeout
    meant nothing: refused at load (exit 2, naming the file and the key); one equal to it
    loads."""
    path = write_config(tmp_path, crm_extra="timeout_seconds = 30\ndeadline_seconds = 10")
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), "systems.crm.deadline_seconds")
    assert "shorter than timeout_seconds" in error.problem
    assert main(["-c", str(path), "check"]) == 2
    assert "systems.crm.deadline_seconds" in capsys.readouterr().err
    path = write_config(tmp_path, crm_extra="timeout_seconds = 30\ndeadline_seconds = 30")
    assert load_config(path).systems["crm"].deadline_seconds == 30


@pytest.mark.parametrize(
    ("extra", "crm_extra", "key"),
    [
        ("", 'timeout_seconds = "30"', "systems.crm.timeout_seconds"),
        (
            '[development]\nallow_insecure_loopback = "no"',
            "",
            "development.allow_insecure_loopback",
        ),
        (
            "",
            'processor = { legal_name = "Verwerker B.V.", agreement_signed = "2026-01-15" }',
            "systems.crm.processor.agreement_signed",
        ),
        (
            "",
            'rate_limit = { requests = "190", per_seconds = 10 }',
            "systems.crm.rate_limit.requests",
        ),
    ],
    ids=["quoted-number", "quoted-boolean", "quoted-date", "nested"],
)
def test_a_value_of_another_toml_type_is_refused_not_guessed_at(
    tmp_path: Path, env: dict[str, str], extra: str, crm_extra: str, key: str
) -> None:
    """The config's keys are typed: a quoted number, boolean or date loaded by pydantic's
    guess (`"no"` was false, `"yes"` true). Refused naming the file and the key; an integer
    where seconds are asked is still a number."""
    path = write_config(tmp_path, extra=extra, crm_extra=crm_extra)
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), key), error
    path = write_config(tmp_path, crm_extra="timeout_seconds = 30")
    assert load_config(path).systems["crm"].timeout_seconds == 30.0


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ('"Customers"', "must be"),
        ("[]", "empty list of roles lists nobody"),
        ('["customer", "Customers"]', "item 2 of the list is not a role"),
        ('["customer", "all"]', '"all" stands alone'),
        ("3", "must be"),
    ],
    ids=["no-role-name", "empty-list", "no-role-name-in-a-list", "all-in-a-list", "number"],
)
def test_a_woocommerce_role_that_is_none_or_a_list_of_none_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], role: str, words: str
) -> None:
    """role takes "all", one role name (a plugin's too) or a list of them: what is no role
    name (WordPress's are lower-case), an empty list (which would sync nobody) and "all"
    among roles are refused naming the file and the key, the value written not repeated.
    (A role name the shop may lack, "customers", is check's warning: tests/e2e/test_cli.py.)"""
    path = write_config(tmp_path, shop_extra=f"role = {role}")
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), "systems.shop.role"), error
    assert words in error.problem and "Customers" not in error.problem
    assert "literal" not in str(error) and "tuple" not in str(error)


def test_a_woocommerce_shop_takes_a_list_of_roles(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_config(tmp_path, shop_extra='role = ["customer", "subscriber"]')
    shop = load_config(path).systems["shop"]
    assert isinstance(shop, WooCommerceSettings) and shop.role == ("customer", "subscriber")


@pytest.mark.parametrize(
    ("crm_extra", "key", "words"),
    [
        ('processor = "Verwerker B.V."', "systems.crm.processor", "must be a table"),
        ("rate_limit = 190", "systems.crm.rate_limit", "must be a table"),
        ("ca_bundle = true", "systems.crm.ca_bundle", "must be a path"),
    ],
    ids=["value-for-table", "number-for-table", "boolean-for-path"],
)
def test_a_value_of_the_wrong_shape_is_named_in_the_config_s_own_words(
    tmp_path: Path, env: dict[str, str], crm_extra: str, key: str, words: str
) -> None:
    """A single value where a table belongs, or a boolean where a path does, was refused in
    pydantic's words, naming Python's classes ("a valid dictionary or instance of
    ProcessorSettings", "not a valid path for <class 'pathlib.Path'>"): said in TOML's terms."""
    error = _load_error(write_config(tmp_path, crm_extra=crm_extra))
    assert error.key == key and words in error.problem
    assert "instance of" not in error.problem and "<class" not in error.problem


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("retry_attempts = 8", 'retry_attempts = "8"', "sync.retry_attempts", "whole number"),
        ("retry_attempts = 8", "retry_attempts = 0", "sync.retry_attempts", "at least 1"),
        ("retry_attempts = 8", "retry_attempts = 99", "sync.retry_attempts", "at most 20"),
        (
            "[sync]",
            '[development]\nallow_insecure_loopback = "no"\n[sync]',
            "development.allow_insecure_loopback",
            "true or false, without quotes",
        ),
        (
            "[sync]",
            "[retention]\naudit_days = 99999999\n[sync]",
            "retention.audit_days",
            "at most 36500",
        ),
        ('destinations = ["crm"]', "destinations = []", "flows[0].destinations", "empty"),
        ('destinations = ["crm"]', 'destinations = "crm"', "flows[0].destinations", "brackets"),
        ('name = "shop-to-crm"', 'name = "Shop to CRM"', "flows[0].name", "lower-case"),
        ('name = "shop-to-crm"', "name = 5", "flows[0].name", "text in quotes"),
    ],
    ids=[
        "quoted-number",
        "below-its-least",
        "beyond-its-most",
        "quoted-boolean",
        "huge-number",
        "empty-list",
        "one-item-without-its-list",
        "flow-name-no-name",
        "number-for-text",
    ],
)
def test_a_value_of_the_wrong_type_or_out_of_range_is_told_in_words_not_pydantic_s(
    tmp_path: Path, env: dict[str, str], old: str, new: str, key: str, words: str
) -> None:
    """pydantic's own messages ("Input should be a valid integer" of a quoted 8, "String
    should match pattern '^[a-z0-9][a-z0-9_-]*$'", "List should have at least 1 item after
    validation, not 0") told an operator editing TOML little of what to write instead: each
    is said as what the key takes, naming the file and the key, the value not repeated."""
    path = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), key), error
    assert words in error.problem, error
    assert "should" not in error.problem and "Input" not in error.problem, error
    assert "Shop to CRM" not in error.problem


@pytest.mark.parametrize(
    ("processor", "words"),
    [
        ('agreement_signed = "2026-01-15"', "date, written as TOML writes one"),
        ('role = "verwerker"', "one of 'processor'"),
    ],
    ids=["quoted-date", "unknown-choice"],
)
def test_a_processor_key_of_the_wrong_type_is_told_in_words_not_pydantic_s(
    tmp_path: Path, env: dict[str, str], processor: str, words: str
) -> None:
    """A date in quotes was "Input should be a valid date", of what reads as a valid date."""
    path = write_config(tmp_path, crm_extra=f'processor = {{ legal_name = "H", {processor} }}')
    error = _load_error(path)
    assert error.key.startswith("systems.crm.processor.") and words in error.problem, error
    assert "Input should" not in error.problem


def test_an_item_of_an_array_is_named_by_its_place_as_a_flow_is(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The second purpose of the first flow, refused, was named
    ``flows[0].privacy.purposes.1``: a key "1" under purposes, which the file has not."""
    path = write_config(tmp_path, crm_extra='properties = ["email", 5]')
    path.write_text(path.read_text() + '\n[flows.privacy]\npurposes = ["Service", 5]\n')
    assert _load_error(path).key == "systems.crm.properties[1]"
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[flows.privacy]\npurposes = ["Service", 5]\n')
    assert _load_error(path).key == "flows[0].privacy.purposes[1]"


@pytest.mark.parametrize("stray", ["\\t", "\u00a0", " "], ids=["tab", "nbsp", "space"])
def test_base_url_with_a_pasted_invisible_character_exits_2(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], stray: str
) -> None:
    """A tab or a no-break space pasted into the URL: refused at load (exit 2 naming the
    key), not a crash with "internal error: InvalidURL" when a sync first calls it."""
    path = write_config(tmp_path, crm_url=f"https://crm.test{stray}/api")
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "systems.crm.base_url" in err and "invisible character" in err


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_base_url_with_an_invalid_port_exits_2(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], port: str
) -> None:
    """A base_url whose port is out of range or not a number is a config error on the key."""
    path = write_config(tmp_path, crm_url=f"https://127.0.0.1:{port}")
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "systems.crm.base_url" in err and "invalid port" in err and "Traceback" not in err


def test_config_path_that_is_a_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-c DIR` names the directory and says a file is needed."""
    assert main(["-c", str(tmp_path), "check"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "is a directory" in err


def test_config_that_is_not_utf8_exits_2(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A config saved in Latin-1 is named, with what is wrong, instead of a decode traceback."""
    path = write_config(tmp_path)
    path.write_bytes(path.read_bytes() + "# café\n".encode("latin-1"))
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "UTF-8" in err


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("pipe", "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        ("huge", "is longer than any config (over 1 MiB)"),
    ],
)
def test_a_config_file_that_is_a_pipe_a_device_or_huge_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, problem: str
) -> None:
    """`-c` naming a named pipe held the command for good, waiting for a writer; a device
    or a file far longer than a config (a log, a disk image) was read whole into memory.
    Refused as the files the config names are, naming the file."""
    os.mkfifo(tmp_path / "pipe")
    with (tmp_path / "huge").open("wb") as huge:
        huge.truncate(64 << 20)  # sparse: takes no room on the test's disk
    target = name if name.startswith("/") else str(tmp_path / name)
    assert main(["-c", target, "check"]) == 2
    err = capsys.readouterr().err
    assert f"{target}: config file {problem}" in err, err


def test_a_config_and_a_mapping_saved_with_a_byte_order_mark_load(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """An editor's byte-order mark in front (Windows Notepad writes one) is no part of the
    text, as in a secret file: it was refused as "not valid TOML (Invalid statement (at line
    1, column 1))", pointing at a line that reads as it should."""
    bom = "\ufeff".encode()
    mapping = tmp_path / "crm.toml"
    mapping.write_bytes(bom + (REPO_MAPPINGS / "hubspot.toml").read_bytes())
    path = write_config(tmp_path, crm_mapping=mapping)
    path.write_bytes(bom + path.read_bytes())
    config = load_config(path)
    assert config.store_path == tmp_path / "state" / "klantsync.db"
    assert config.mappings["crm"].fields["email"].path == "email"


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("every 99999999999999999999d", "at most a year"),
        ("every 367d", "at most a year"),
        ("0 0 31 2 *", "never runs"),
    ],
)
def test_schedule_the_daemon_cannot_run_is_refused_at_load(
    tmp_path: Path, env: dict[str, str], schedule: str, words: str
) -> None:
    """An interval beyond a year (it overflowed the scheduler) and a cron that never fires
    (it broke /readyz) are refused on flows[N].schedule."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"every 15m"', f'"{schedule}"'))
    error = _load_error(path)
    assert error.key == "flows[0].schedule" and words in error.problem


def test_rare_but_real_schedules_still_load() -> None:
    """A cron firing only on leap days, and an interval of a year, are still accepted."""
    assert parse_schedule("0 0 29 2 *").nominal_seconds > 365 * 86400
    assert parse_schedule("every 365d").nominal_seconds == 365 * 86400


def test_a_schedule_that_never_fires_has_no_deadline() -> None:
    """A cron Schedule built without parse_schedule that never fires is never overdue."""
    from connector.config import Schedule

    assert Schedule("0 0 31 2 *", cron="0 0 31 2 *").nominal_seconds == float("inf")


def test_markup_in_a_key_is_printed_as_text(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A top-level key that looks like rich markup is printed as written, not interpreted."""
    path = write_config(tmp_path)
    path.write_text('"[/x]" = 1\n' + path.read_text())
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "[/x]: unknown key" in err and "MarkupError" not in err


def test_flows_that_is_not_an_array_names_the_table_syntax(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`flows = 5` says to write [[flows]]; the brackets survive printing."""
    path = write_config(tmp_path)
    text = path.read_text().split("[[flows]]")[0]
    path.write_text("flows = 5\n" + text)
    assert main(["-c", str(path), "check"]) == 2
    assert "must be an array of tables ([[flows]])" in capsys.readouterr().err


def _without_flows(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    path.write_text(path.read_text().split("[[flows]]")[0])
    return path


def test_check_warns_when_no_flow_is_configured(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A config without flows is valid (it still serves data subject requests) but `check`
    says nothing will sync."""
    path = _without_flows(tmp_path)
    main(["-c", str(path), "check"])
    assert "warning: no flow is configured" in capsys.readouterr().out
    main(["-c", str(path), "check", "--json"])
    assert "no flow is configured" in json.loads(capsys.readouterr().out)["warnings"][0]


def test_sync_without_flows_says_so_in_one_line(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`sync` with no flow configured exits 0 and says there was nothing to sync."""
    path = _without_flows(tmp_path)
    assert main(["-c", str(path), "sync"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"nothing to sync: {path} configures no flow (add a [[flows]] table)"
    ]
    assert main(["-c", str(path), "sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


_FLOW_DESTINATIONS = 'destinations = ["crm"]'
_CRM_TOKEN = 'credentials = { token = "env:T_HS_TOKEN" }'


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('"every 15m"', '"every 0m"', "flows[0].schedule", "interval must be positive"),
        ("[sync]", '[logging]\nlevel = "LOUD"\n[sync]', "logging.level", "must be DEBUG"),
        ("[sync]", '[logging]\nformat = "xml"\n[sync]', "logging.format", '"json"'),
        ("[sync]", '[daemon]\nlisten = "127.0.0.1"\n[sync]', "daemon.listen", '"host:port"'),
        ("[sync]", '[daemon]\nlisten = ":8787"\n[sync]', "daemon.listen", "must name a host"),
        ("[sync]", '[daemon]\nlisten = "0.0.0.0:8787"\n[sync]', "daemon.listen", "without TLS"),
        ("[sync]", '[daemon]\ntls_cert = "c.pem"\n[sync]', "daemon.tls_cert", "go together"),
        (
            "[sync]",
            '[daemon]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n[sync]',
            "daemon.tls_cert",
            "c.pem not found",
        ),
        (
            "[sync]",
            '[daemon]\npublic_url = "http://klantsync.example.nl"\n[sync]',
            "daemon.public_url",
            "only https://",
        ),
        ('[store]\npath = "state/klantsync.db"', 'store = "x.db"', "store", "must be a table"),
        ("[systems.crm]", "[systems.CRM]", "systems.CRM", "lower-case letters"),
        ('adapter = "hubspot"\n', "", "systems.crm.adapter", "required key is missing"),
        (_CRM_TOKEN, 'credentials = "env:T"', "systems.crm.credentials", "secret references"),
        (_CRM_TOKEN, "credentials = { }", "systems.crm.credentials.token", "is missing"),
        (_CRM_TOKEN, f'{_CRM_TOKEN}\nca_bundle = "no.pem"', "systems.crm.ca_bundle", "not found"),
        ('source = "shop"', 'source = "shopp"', "flows[0].source", "no system named 'shopp'"),
        (_FLOW_DESTINATIONS, 'destinations = ["shop"]', "flows[0].destinations", "its source"),
        (_FLOW_DESTINATIONS, 'destinations = ["crm", "crm"]', "flows[0].destinations", "twice"),
        (
            'schedule = "every 15m"',
            'schedule = "every 15m"\n\n[[flows]]\nname = "shop-to-crm"\nsource = "shop"\n'
            'destinations = ["crm"]\nschedule = "every 1h"',
            "flows[1].name",
            "duplicate flow name",
        ),
    ],
)
def test_each_mistake_names_the_file_the_key_and_what_is_wrong(
    tmp_path: Path, env: dict[str, str], old: str, new: str, key: str, problem: str
) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), key)
    assert problem in error.problem


@pytest.mark.parametrize("key", ["listen", "admin_listen"])
@pytest.mark.parametrize(
    ("address", "words"),
    [
        (" 127.0.0.1:8787", "a blank before or after"),
        ("127.0.0.1:8787 ", "a blank before or after"),
        ("127.0.0.1: 8787", "a blank or an invisible character"),
        ("127.0.0.1\\u00a0:8787", "a blank or an invisible character"),
        ("http://127.0.0.1:8787", "is a URL"),
        ("127.0.0.256:8787", "not an IPv4 address"),
        ("local$host:8787", "not a host name"),
        ("shop..example:8787", "not a host name"),
        ("1:2:3:4:5:6:7:8:9:8787", "IPv6 address goes in brackets"),
        ("[127.0.0.1]:8787", "not an IPv6 address"),
    ],
    ids=[
        "blank-before",
        "blank-after",
        "blank-inside",
        "no-break-space",
        "url",
        "no-ipv4",
        "no-name",
        "empty-label",
        "ipv6-bare",
        "ipv4-in-brackets",
    ],
)
def test_a_listen_address_that_is_none_is_told_as_what_it_is_not_as_beyond_loopback(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    key: str,
    address: str,
    words: str,
) -> None:
    """listen = " 127.0.0.1:8787" (a blank pasted with it) was refused as "listens beyond
    loopback without TLS": the operator was sent to set up TLS, for a blank. An address
    with a blank, a URL or a host that is no host is now said to be that, naming the key."""
    other = "8788" if key == "listen" else "8787"
    daemon = f'[daemon]\n{key} = "{address}"\n'
    daemon += f'{"admin_listen" if key == "listen" else "listen"} = "127.0.0.1:{other}"\n'
    path = write_config(tmp_path, extra=daemon)
    error = _load_error(path)
    assert (error.file, error.key) == (str(path), f"daemon.{key}"), error
    assert words in error.problem and "beyond loopback" not in error.problem, error
    assert main(["-c", str(path), "check"]) == 2
    assert f"daemon.{key}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:8787",
        "localhost:8787",
        "[::1]:8787",
        "[::ffff:127.0.0.1]:8787",
        "klantsync-1.internal:8787",
        "0.0.0.0:8787",
        # Without brackets, as configs written before brackets were asked for have it: the
        # last colon is the port's, as the listeners always read it.
        "::1:8787",
        ":::8787",
    ],
)
def test_a_listen_address_of_any_host_form_still_loads(
    tmp_path: Path, env: dict[str, str], address: str
) -> None:
    from connector.devtls import DevCA

    pair = DevCA(tmp_path / "ca").issue("daemon")
    daemon = f'[daemon]\nlisten = "{address}"\nadmin_listen = "127.0.0.1:8788"\n'
    daemon += f'tls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"\n'
    assert load_config(write_config(tmp_path, extra=daemon)).daemon.listen == address


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://shop..example.nl", "not a host name"),
        ("https://shop$.example.nl", "not a host name"),
        ("https://-shop.example.nl", "not a host name"),
        ("https://10.0.0.300", "not an IPv4 address"),
    ],
    ids=["empty-label", "dollar", "leading-hyphen", "no-ipv4"],
)
def test_a_base_url_whose_host_is_no_host_is_refused_at_load(
    tmp_path: Path, env: dict[str, str], url: str, words: str
) -> None:
    """A base URL's host with an empty part or a character no host has passed `check`, and
    failed at the first call of a sync."""
    error = _load_error(write_config(tmp_path, crm_url=url))
    assert error.key == "systems.crm.base_url" and words in error.problem, error
    assert url not in error.problem


@pytest.mark.parametrize(
    "url", ["crm.test", "crm.test:8443", "127.0.0.1:8443", "crm.test/api", "https:/crm.test"]
)
def test_a_base_url_without_its_scheme_says_so(
    tmp_path: Path, env: dict[str, str], url: str
) -> None:
    """A base URL written without "https://" in front was said to have "no host", the one
    part of it that was there: said as what is missing instead, naming the key."""
    error = _load_error(write_config(tmp_path, crm_url=url))
    assert error.key == "systems.crm.base_url", error
    assert 'does not begin with "https://"' in error.problem and "no host" not in error.problem
    assert url not in error.problem


def test_a_config_without_systems_says_so(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("[systems.shop]")])
    error = _load_error(path)
    assert (error.key, error.problem) == ("systems", "no systems configured")


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("env:", "env: reference names no variable"),
        ("env:T_NOT_SET_ANYWHERE", "environment variable T_NOT_SET_ANYWHERE is not set"),
        ("env:T_BLANK", "environment variable T_BLANK is empty"),
        ("file:secrets/none", "not found"),
        ("file:secrets/empty", "is empty"),
        ("file:secrets", "unreadable (Is a directory)"),
        ("file:secrets/latin1", "is not UTF-8 text"),
        # A named pipe nobody writes to held every command (the daemon's start included) at
        # the config load for good; a device such as /dev/zero, or a file far longer than
        # any secret (a log, an archive), was read whole into memory.
        ("file:secrets/pipe", "is not a regular file"),
        ("file:/dev/zero", "is not a regular file"),
        ("file:secrets/huge", "is longer than any secret"),
    ],
)
def test_a_secret_reference_that_points_at_nothing_usable_names_the_key_never_the_value(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    reference: str,
    problem: str,
) -> None:
    monkeypatch.setenv("T_BLANK", "  ")  # an env file's "T_BLANK= ": no secret at all
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "empty").write_text("  \n")
    (secrets / "latin1").write_bytes("pât-geheim-\xff".encode("latin-1"))
    os.mkfifo(secrets / "pipe")
    (secrets / "huge").write_text("geheim" * 20_000)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"env:T_HS_TOKEN"', f'"{reference}"'))
    error = _load_error(path)
    assert error.key == "systems.crm.credentials.token" and problem in error.problem
    assert "geheim" not in str(error) and "0xff" not in str(error)


def _naming(tmp_path: Path, key: str, target: str) -> Path:
    """A config whose ``key`` names ``target`` (the daemon's TLS pair: its other file a
    regular one, so the key under test is the one refused)."""
    if key == "systems.crm.mapping":
        return write_config(tmp_path, crm_mapping=Path(target))
    if key == "systems.crm.ca_bundle":
        return write_config(tmp_path, crm_extra=f'ca_bundle = "{target}"')
    (tmp_path / "other.pem").write_text("looked at only after both are found fit")
    cert, tls_key = (target, "other.pem") if key == "daemon.tls_cert" else ("other.pem", target)
    return write_config(tmp_path, extra=f'[daemon]\ntls_cert = "{cert}"\ntls_key = "{tls_key}"\n')


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("systems.crm.ca_bundle", "CA bundle"),
        ("systems.crm.mapping", "mapping"),
        ("daemon.tls_cert", "TLS certificate or key"),
        ("daemon.tls_key", "TLS certificate or key"),
    ],
)
@pytest.mark.parametrize(
    ("name", "problem"),
    [("pipe", "is not a regular file"), ("/dev/zero", "is not a regular file"), ("huge", "")],
)
def test_a_file_the_config_names_that_is_a_pipe_a_device_or_huge_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], key: str, kind: str, name: str, problem: str
) -> None:
    """As for a file: secret: a named pipe was said to be "not found" where it is (or, read,
    would hold the config load for good); a device or a file far longer than its kind was
    read whole into memory by OpenSSL or the TOML parser. Refused without being opened,
    naming the key and the file."""
    os.mkfifo(tmp_path / "pipe")
    with (tmp_path / "huge").open("wb") as huge:
        huge.truncate(64 << 20)  # sparse: takes no room on the test's disk
    target = name if name.startswith("/") else str(tmp_path / name)
    error = _load_error(_naming(tmp_path, key, target))
    assert error.key == key and target in error.problem, error
    assert (problem or f"is longer than any {kind}") in error.problem, error


def test_a_config_loaded_for_a_command_that_calls_no_system_resolves_a_secret_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`secrets=False` (status, backup, keys...): the systems' secrets are not read at load,
    so a token the operator's environment lacks stops nothing; one used after all is read
    then, refused as at load (file and key), and never shown. The master key is read."""
    path = write_config(tmp_path, crm_extra='webhooks = { secret = "file:hook" }')
    for name in ("T_WC_KEY", "T_WC_SECRET", "T_HS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(path, secrets=False)
    assert config.systems["crm"].webhooks is not None  # configured, as the register says
    with pytest.raises(ConfigError) as caught:
        config.systems["crm"].credential("token")
    assert (caught.value.file, caught.value.key) == (str(path), "systems.crm.credentials.token")
    assert "T_HS_TOKEN is not set" in caught.value.problem
    monkeypatch.setenv("T_HS_TOKEN", "pat-geheim")
    assert config.systems["crm"].credential("token") == "pat-geheim"
    assert "pat-geheim" not in repr(config) and "pat-geheim" not in str(config)
    monkeypatch.delenv("T_HS_TOKEN")
    assert _load_error(path).key == "systems.shop.credentials.consumer_key"  # read at load
    (tmp_path / "master.key").unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(path, secrets=False)
    assert caught.value.key == "keys.source"


def test_any_value_under_any_key_of_the_example_is_loaded_or_named_as_a_mistake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever value a key of config.example.toml is given (another type, an empty table,
    a list), loading ends in a config or in a ConfigError: never another exception, which
    the CLI would report as a bug."""
    path = example_config(tmp_path, monkeypatch)
    original = path.read_text()

    def load(changed: Path) -> None:
        with contextlib.suppress(ConfigError):
            load_config(changed)

    try:
        every_key_takes_any_value(original, path, load, examples=150)
    finally:
        path.write_text(original)


# -- secrets, URLs and files that load but cannot be used ------------------------------------


@pytest.mark.parametrize(
    "content",
    ["pat-na1-abc\nX-Injected: yes\n", "\u2019pat-na1-abc\u2019", "pat-na1\tabc"],
    ids=["second-line", "typographic-quotes", "tab"],
)
def test_a_secret_that_is_not_one_line_of_ascii_is_refused_naming_its_key(
    tmp_path: Path, env: dict[str, str], content: str
) -> None:
    """A token travels in an HTTP header: a second line in its file was written into every
    request as a header of its own, and a typographic quote failed the first call as an
    internal error quoting the character and its place in the secret."""
    (tmp_path / "token").write_text(content)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"env:T_HS_TOKEN"', '"file:token"'))
    error = _load_error(path)
    assert error.key == "systems.crm.credentials.token"
    assert "abc" not in str(error) and "\u2019" not in str(error)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('source = "file:master.key"', 'source = "file:master\\u0000.key"', "keys.source"),
        ('"env:T_HS_TOKEN"', '"file:to\\u0000ken"', "systems.crm.credentials.token"),
        ('mapping = "', 'mapping = "\\u0000', "systems.shop.mapping"),
        ('path = "state/', 'path = "state\\u0000/', "store.path"),
        ('adapter = "hubspot"', 'adapter = "hubspot"\nca_bundle = "c\\u0000a.pem"', "ca_bundle"),
        ("[sync]", '[daemon]\ntls_cert = "c\\u0000.pem"\ntls_key = "k.pem"\n[sync]', "tls_cert"),
    ],
    ids=["secret-file", "credential-file", "mapping", "store", "ca-bundle", "tls-cert"],
)
def test_a_nul_character_in_a_configured_path_exits_2_naming_the_key(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    key: str,
) -> None:
    """TOML allows "\\u0000" in a string, and opening a path holding one raises ValueError
    ("embedded null byte"): `check` ended as an internal error (exit 1) naming no key."""
    path = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and key in err and "NUL" in err and "\x00" not in err


def test_a_config_file_name_with_a_nul_character_is_a_config_error(tmp_path: Path) -> None:
    """Named so by a caller (no command line carries one), it is no file: said escaped."""
    error = _load_error(tmp_path / "klant\x00sync.toml")
    assert "NUL" in error.problem and "\x00" not in error.file


def test_a_secret_with_a_character_no_header_carries_exits_2_not_an_internal_error(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "token").write_text("\u2019pat-na1-abc\u2019")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"env:T_HS_TOKEN"', '"file:token"'))
    assert main(["-c", str(path), "check", "--online"]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "systems.crm.credentials.token" in err


def test_a_secret_file_s_byte_order_mark_is_not_part_of_the_secret(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Windows Notepad saves UTF-8 with a byte-order mark in front; it is no part of a token."""
    (tmp_path / "token").write_bytes("\ufeffpat-na1-abc\r\n".encode())
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"env:T_HS_TOKEN"', '"file:token"'))
    token = load_config(path).systems["crm"].credentials["token"]
    assert token.get_secret_value() == "pat-na1-abc"


@pytest.mark.parametrize(
    "url",
    ["https://crm.test/?portalId=123", "https://crm.test/api#v3", "https://crm.test/?"],
    ids=["query", "fragment", "empty-query"],
)
def test_a_base_url_with_a_query_or_a_fragment_is_refused(
    tmp_path: Path, env: dict[str, str], url: str
) -> None:
    """Each call's path goes after the base URL: behind "?portalId=123" it became part of the
    query, and every call went to the root ("/?portalId=123/crm/v3/...")."""
    error = _load_error(write_config(tmp_path, crm_url=url))
    assert error.key == "systems.crm.base_url" and "query" in error.problem


def test_a_tls_pair_the_listeners_cannot_serve_fails_check(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Checked for existence only, a pair that is not PEM let the daemon say "started" while
    both listeners died inside it: no webhooks, no /healthz, no admin API."""
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    path = write_config(tmp_path, extra='[daemon]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    error = _load_error(path)
    assert error.key == "daemon.tls_cert" and "cannot be served" in error.problem


@pytest.mark.parametrize(
    ("listen", "admin_listen", "collide"),
    [
        ("127.0.0.1:8787", "127.0.0.1:8787", True),
        ("localhost:8787", "127.0.0.1:8787", True),
        ("0.0.0.0:8787", "127.0.0.1:8787", True),  # the wildcard takes every IPv4 address
        ("[::]:8787", "127.0.0.1:8787", True),  # and :: every address, IPv4 too
        ("127.0.0.1:8787", "[::1]:8787", False),
        ("0.0.0.0:8787", "127.0.0.1:8788", False),
    ],
)
def test_listeners_that_would_bind_one_port_twice_fail_check(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    listen: str,
    admin_listen: str,
    collide: bool,
) -> None:
    """`run` binds `listen`, then `admin_listen`: one address and port for both (or a
    wildcard beside an address it stands for) made it exit 2 "Address already in use",
    after `check` had said the config was valid."""
    from connector.devtls import DevCA

    pair = DevCA(tmp_path / "ca").issue("daemon")
    daemon = f'[daemon]\nlisten = "{listen}"\nadmin_listen = "{admin_listen}"\n'
    daemon += f'tls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"\n'
    path = write_config(tmp_path, extra=daemon)
    code = main(["-c", str(path), "check", "--json"])
    answer = json.loads(capsys.readouterr().out)
    if not collide:
        assert code != 2 and "error" not in answer
        return
    assert code == 2
    assert (answer["error"], answer["file"], answer["key"]) == (
        "config",
        str(path),
        "daemon.admin_listen",
    )
    assert "a port of its own" in answer["message"]


def test_a_tls_pair_of_a_certificate_and_another_s_key_fails_check(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from connector.devtls import DevCA

    ca = DevCA(tmp_path / "ca")
    one, other = ca.issue("one"), ca.issue("other")
    extra = f'[daemon]\ntls_cert = "{one.cert_path}"\ntls_key = "{other.key_path}"\n'
    assert _load_error(write_config(tmp_path, extra=extra)).key == "daemon.tls_cert"
    extra = f'[daemon]\ntls_cert = "{one.cert_path}"\ntls_key = "{one.key_path}"\n'
    assert load_config(write_config(tmp_path, extra=extra)).daemon.tls_cert == one.cert_path


@pytest.mark.parametrize(
    ("crm_extra", "extra", "key"),
    [
        ('ca_bundle = "certs"', "", "systems.crm.ca_bundle"),
        ("", '[daemon]\ntls_cert = "certs"\ntls_key = "certs"\n', "daemon.tls_cert"),
    ],
    ids=["ca-bundle", "tls-cert"],
)
def test_a_folder_where_a_file_belongs_is_called_a_folder_not_missing(
    tmp_path: Path, env: dict[str, str], crm_extra: str, extra: str, key: str
) -> None:
    """ca_bundle = /etc/ssl/certs (a folder of certificates) said "not found", sending the
    operator looking for a path that exists."""
    (tmp_path / "certs").mkdir()
    error = _load_error(write_config(tmp_path, crm_extra=crm_extra, extra=extra))
    assert error.key == key
    assert "is a folder" in error.problem and "not found" not in error.problem


@pytest.mark.parametrize("folder", [False, True], ids=["missing", "a-folder"])
def test_a_mapping_file_that_is_not_there_is_named_by_the_config_key_that_names_it(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], folder: bool
) -> None:
    """A mapping path with a typo in it is the config's mistake, as a ca_bundle's is: `check
    --json` gave the file that is not there as "file" and no key, so a script (or an editor
    jumping to the key) had nothing in the config to point at."""
    mapping = tmp_path / "mappings" / "hubspot.toml"
    if folder:
        mapping.mkdir(parents=True)
    path = write_config(tmp_path, crm_mapping=mapping)
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert (answer["file"], answer["key"]) == (str(path), "systems.crm.mapping")
    assert str(mapping) in answer["message"]
    assert ("is a folder" if folder else "not found") in answer["message"]


def test_a_retention_period_of_for_ever_is_refused_by_check(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """audit_days = 999999 passed check, then every retention sweep failed with "internal
    error: OverflowError", in the daemon without a word, and nothing was purged again."""
    path = write_config(tmp_path, extra="[retention]\naudit_days = 999999\n")
    assert main(["-c", str(path), "retention", "run", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "retention.audit_days" in err
    path = write_config(tmp_path, extra="[retention]\naudit_days = 36500\n")
    assert load_config(path).retention.audit_days == 36500


@pytest.mark.parametrize(
    ("key", "least"),
    [("audit_days", 365), ("webhook_ids_days", 3), ("dead_letters_days", 1)],
)
def test_a_retention_period_below_its_least_is_refused(
    tmp_path: Path, env: dict[str, str], key: str, least: int
) -> None:
    """The audit trail is kept a year at least, the delivery ids three days (vendors retry
    a delivery for two: a shorter keep took a retry for a new delivery), and nothing for
    no days: one day fewer than each is refused, naming the key."""
    error = _load_error(write_config(tmp_path, extra=f"[retention]\n{key} = {least - 1}\n"))
    assert error.key == f"retention.{key}" and f"at least {least}" in error.problem
    path = write_config(tmp_path, extra=f"[retention]\n{key} = {least}\n")
    assert getattr(load_config(path).retention, key) == least


def test_check_warns_of_a_consent_gate_its_source_never_opens(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The destination takes only people with marketing consent; the source's mapping reads
    no marketing_consent, so the flow sends nobody there, not even a withdrawal, without a
    single error."""
    shop_text = (REPO_MAPPINGS / "woocommerce.toml").read_text()
    shop_mapping = tmp_path / "shop.toml"
    shop_mapping.write_text(shop_text[: shop_text.index("[fields.marketing_consent]")])
    crm_mapping = tmp_path / "crm.toml"
    crm_mapping.write_text(
        (REPO_MAPPINGS / "hubspot.toml")
        .read_text()
        .replace('default_region = "NL"', 'default_region = "NL"\nrequires_consent = "marketing"')
    )
    path = write_config(tmp_path, shop_mapping=shop_mapping, crm_mapping=crm_mapping)
    main(["-c", str(path), "check", "--json"])
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert "marketing_consent" in warning and "nobody will be sent to crm" in warning
    assert "nor a withdrawal of consent" in warning
    # Read by the source, the gate opens for those who consent: no warning.
    path = write_config(tmp_path, crm_mapping=crm_mapping)
    main(["-c", str(path), "check", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_check_warns_of_flows_that_write_to_each_other(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """shop -> crm beside crm -> shop passed check without a word: each write one flow
    makes is read back by the other as a change, and a value the round trip does not give
    back as it was replaces the one it came from."""
    path = write_config(tmp_path)
    path.write_text(
        path.read_text()
        + '\n[[flows]]\nname = "crm-to-shop"\nsource = "crm"\ndestinations = ["shop"]\n'
    )
    main(["-c", str(path), "check", "--json"])  # the new flow's privacy facts are gaps (1)
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert warning.startswith("flows crm-to-shop and shop-to-crm form a loop (crm and shop")


def test_check_warns_of_a_system_two_sources_write_to(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two flows from two sources into one system keep one delivered state per person
    there: where the sources differ, each run of each flow writes the person again."""
    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace(
            "[[flows]]",
            '[systems.shop2]\nadapter = "woocommerce"\nbase_url = "https://shop2.test"\n'
            f'mapping = "{REPO_MAPPINGS / "woocommerce.toml"}"\n'
            'credentials = { consumer_key = "env:T_WC_KEY", consumer_secret = "env:T_WC_SECRET" }\n'
            '\n[[flows]]\nname = "shop2-to-crm"\nsource = "shop2"\ndestinations = ["crm"]\n'
            "\n[[flows]]",
        )
    )
    main(["-c", str(path), "check", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert [w for w in warnings if w.startswith("crm is written by flows")] == [
        "crm is written by flows shop-to-crm (from shop) and shop2-to-crm (from shop2): "
        "where their sources disagree about a person, or one holds a field the other lacks, "
        "each run of each flow writes the person again, the last one winning"
    ]


def test_check_json_gives_a_config_error_s_file_and_key_apart(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Compliance gaps carry "file" and "key"; a config error gave only the message, which a
    script had to split on ": " (and a path may hold one)."""
    path = write_config(tmp_path, crm_extra='base_ulr = "https://x.test"')
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "config"
    assert (answer["file"], answer["key"]) == (str(path), "systems.crm.base_ulr")


def test_an_unknown_credential_name_is_refused_naming_what_the_adapter_takes(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A typo beside the real name ("tokn") was resolved, its secret read, and never used."""
    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace(
            'token = "env:T_HS_TOKEN"', 'token = "env:T_HS_TOKEN", tokn = "env:T_HS_TOKEN"'
        )
    )
    error = _load_error(path)
    assert error.key == "systems.crm.credentials.tokn" and "takes token" in error.problem


def test_a_secret_pasted_after_env_is_not_echoed(tmp_path: Path, env: dict[str, str]) -> None:
    """ "environment variable pat-na1-9f8e... is not set" printed the token itself."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"env:T_HS_TOKEN"', '"env:pat-na1-9f8e7d6c"'))
    error = _load_error(path)
    assert error.key == "systems.crm.credentials.token"
    assert "9f8e7d6c" not in str(error) and "not a variable name" in error.problem


@pytest.mark.parametrize(
    "secret",
    [
        "q3X/9kLmT2vB8nR+wE1yZ4cH7uJ0pS6aD5fG=",  # openssl rand -base64: a "/" in it
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrbGFudCJ9.c2lnbmF0dXJlLXBhcnQ",  # a JWT, dotted
    ],
)
def test_a_secret_with_a_slash_or_a_dot_pasted_after_file_is_not_echoed(
    tmp_path: Path, secret: str
) -> None:
    from connector.secrets import resolve_secret

    with pytest.raises(ConfigError) as caught:
        resolve_secret(
            f"file:{secret}", file="k.toml", key="systems.news.webhooks.secret", base_dir=tmp_path
        )
    assert secret not in str(caught.value)
    # A path to a file that is missing is still named: it is what the operator must fix.
    (tmp_path / "secrets").mkdir()
    with pytest.raises(ConfigError, match="secrets/shop_key not found"):
        resolve_secret("file:secrets/shop_key", file="k.toml", key="k", base_dir=tmp_path)


def test_a_secret_file_under_a_tilde_says_the_tilde_is_not_expanded(tmp_path: Path) -> None:
    """``file:~/secrets/token`` is no home folder (no shell reads the config): its folder,
    "~" beside the config, is missing, so the path was hidden as a secret pasted in, and
    the operator was told nothing they could act on."""
    from connector.secrets import resolve_secret

    with pytest.raises(ConfigError) as caught:
        resolve_secret("file:~/secrets/token", file="k.toml", key="keys.source", base_dir=tmp_path)
    assert "~/secrets/token" in caught.value.problem and "not expanded" in caught.value.problem
    assert "pasted" not in caught.value.problem


@pytest.mark.parametrize(
    "token",
    [
        "cs_" + "3f9a1c2b7d" * 4,  # WooCommerce's consumer secret: a valid variable name
        "shpat_" + "a1b2c3d4e5f60718" * 2,  # Shopify's Admin API token
        "f3" + "9a1c2b7d0e" * 3 + "12345678",  # a Pipedrive token starting with a letter
    ],
)
@pytest.mark.parametrize("scheme", ["env", "file"])
def test_a_token_pasted_where_a_name_belongs_is_not_echoed(
    tmp_path: Path, token: str, scheme: str
) -> None:
    """Real tokens are valid variable names too: "environment variable cs_3f9a... is not
    set" printed the secret, in check --json and the service's log."""
    from connector.secrets import resolve_secret

    with pytest.raises(ConfigError) as caught:
        resolve_secret(
            f"{scheme}:{token}",
            file="klantsync.toml",
            key="systems.shop.credentials.consumer_secret",
            base_dir=tmp_path,
            env={},
        )
    assert token not in str(caught.value) and "not shown" in str(caught.value)
    # A name as variables are named is shown: it is what the operator must set.
    with pytest.raises(ConfigError, match="KLANTSYNC_SHOP_SECRET is not set"):
        resolve_secret("env:KLANTSYNC_SHOP_SECRET", file="f", key="k", base_dir=tmp_path, env={})


def test_check_warns_of_a_secret_file_other_users_may_read(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The master key opens every sealed record in the store; nothing looked at its mode."""
    path = write_config(tmp_path)
    main(["-c", str(path), "check", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    (tmp_path / "master.key").chmod(0o640)  # root:klantsync 0640: the service's group reads it
    main(["-c", str(path), "check", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    (tmp_path / "master.key").chmod(0o644)
    main(["-c", str(path), "check", "--json"])
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert warning.startswith("keys.source: secret file") and "mode 644" in warning
    assert "chmod o-rwx" in warning


def test_check_warns_of_a_credential_file_other_users_may_read(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """keys.source = "credential:master.key" run as the README's ks runs it: the credential
    is the state directory's master.key, and a mode that lets every user read it is told as
    for a file: key."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"file:master.key"', '"credential:master.key"'))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "master.key").chmod(0o644)
    main(["-c", str(path), "check", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    (warning,) = [w for w in warnings if w.startswith("keys.source")]
    assert "mode 644" in warning and "chmod o-rwx" in warning


def test_check_given_credentials_warns_of_a_secret_still_taken_from_the_environment(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run where systemd gives credentials (the unit, the README's kss), an env: secret is
    one the daemon reads from its environment, which any process of its user reads and
    whatever it starts inherits: `check` says so, by key, where the unit offers better.
    Elsewhere (a laptop, the sandboxes, a container) env: is as good as any and not told."""
    path = write_config(tmp_path)
    main(["-c", str(path), "check", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    main(["-c", str(path), "check", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert sorted(w.split(":", 1)[0] for w in warnings) == [
        "systems.crm.credentials.token",
        "systems.shop.credentials.consumer_key",
        "systems.shop.credentials.consumer_secret",
    ], warnings
    assert all("credential:secrets_" in w and "T_HS_TOKEN" not in w for w in warnings)


def test_check_warns_of_a_listener_beyond_loopback_without_a_metrics_token(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Beyond loopback `/metrics` is refused (403) until `daemon.metrics_token` is set: a
    scrape set up without it found nothing, and `check` said nothing of why."""
    from connector.devtls import DevCA

    pair = DevCA(tmp_path / "ca").issue("daemon")
    daemon = f'[daemon]\nlisten = "0.0.0.0:8787"\ntls_cert = "{pair.cert_path}"\n'
    daemon += f'tls_key = "{pair.key_path}"\n'
    main(["-c", str(write_config(tmp_path, extra=daemon)), "check", "--json"])
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert "daemon.metrics_token" in warning and "403" in warning
    (tmp_path / "metrics.token").write_text("scrape-token-0123456789\n")
    (tmp_path / "metrics.token").chmod(0o600)
    daemon += 'metrics_token = "file:metrics.token"\n'
    main(["-c", str(write_config(tmp_path, extra=daemon)), "check", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_a_metrics_token_that_is_the_admin_token_is_refused_never_shown(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """/metrics wants a token of its own: the scraper's configuration holds it, and the
    admin token erases and resyncs. One token for both (one variable, or two holding the
    same value) was taken, and the admin token opened /metrics after all."""
    token = "one-token-for-both-0123456789"
    monkeypatch.setenv("T_ADMIN", token)
    monkeypatch.setenv("T_METRICS", token)
    daemon = '[daemon]\nadmin_token = "env:T_ADMIN"\nmetrics_token = "env:{}"\n'
    for variable in ("T_ADMIN", "T_METRICS"):
        path = write_config(tmp_path, extra=daemon.format(variable))
        assert main(["-c", str(path), "check", "--json"]) == 2
        answer = json.loads(capsys.readouterr().out)
        assert answer["key"] == "daemon.metrics_token" and "admin_token" in answer["message"]
        assert token not in answer["message"]
    monkeypatch.setenv("T_METRICS", "scrape-token-0123456789")
    config = load_config(write_config(tmp_path, extra=daemon.format("T_METRICS")))
    assert config.daemon.metrics_token is not None


def test_a_webhook_secret_is_any_text_the_vendor_took(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WooCommerce webhook secret is what the shop admin typed, signed over as UTF-8; it
    never travels in a header. Held to printable ASCII like a token, one an earlier version
    verified with stopped the config from loading."""
    monkeypatch.setenv("T_WC_HOOK", "Geheim€wachtwoord ñ")
    path = write_config(tmp_path, shop_extra='webhooks = { secret = "env:T_WC_HOOK" }')
    hooks = load_config(path).systems["shop"].webhooks
    assert hooks is not None and hooks.secret.get_secret_value() == "Geheim€wachtwoord ñ"


def test_a_previous_webhook_secret_is_a_secret_reference_like_the_secret(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``previous_secret`` (the secret replaced, while the vendor still signs with it) is
    read from ``env:`` or ``file:`` as ``secret`` is, refused naming its own key when it
    cannot be read, and its file is one of the config's secret files (``check`` and
    ``backup`` look after those)."""
    from connector.config import secret_files

    monkeypatch.setenv("T_WC_HOOK", "nieuw-geheim")
    hooks = 'webhooks = { secret = "env:T_WC_HOOK", previous_secret = "file:old_hook" }'
    path = write_config(tmp_path, shop_extra=hooks)
    error = _load_error(path)
    assert error.key == "systems.shop.webhooks.previous_secret"
    (tmp_path / "old_hook").write_text("oud-geheim\n")
    loaded = load_config(path).systems["shop"].webhooks
    assert loaded is not None and loaded.secrets() == ["nieuw-geheim", "oud-geheim"]
    assert ("systems.shop.webhooks.previous_secret", tmp_path / "old_hook") in secret_files(path)


def _with_pipedrive_webhook(path: Path, reference: str) -> Path:
    """The example config with a webhook secret for its Pipedrive system (``deals``)."""
    text = path.read_text()
    at = text.index("[systems.deals.processor]")
    table = f'[systems.deals.webhooks]\nsecret = "{reference}"\n\n'
    path.write_text(text[:at] + table + text[at:])
    return path


@pytest.mark.parametrize("scheme", ["env", "file"])
@pytest.mark.parametrize(
    "secret", ["the-webhooks-http-auth-password", ":the-password", "the-user:"]
)
def test_a_pipedrive_webhook_secret_that_is_no_user_password_pair_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scheme: str,
    secret: str,
) -> None:
    """Pipedrive signs nothing: its deliveries carry the webhook's HTTP auth user and password
    as Basic credentials, so the secret is "user:password". Any other never verifies: every
    delivery was answered 401 until Pipedrive turned the webhook off, and ``check`` said
    nothing. The resolved secret is refused (exit 2), naming file, key and form, not it."""
    path = example_config(tmp_path, monkeypatch)
    if scheme == "env":
        monkeypatch.setenv("PD_HOOK", secret)
        reference = "env:PD_HOOK"
    else:
        (tmp_path / "pd_hook").write_text(secret + "\n")
        (tmp_path / "pd_hook").chmod(0o600)
        reference = "file:pd_hook"
    _with_pipedrive_webhook(path, reference)
    assert main(["-c", str(path), "check", "--json"]) == 2
    said = capsys.readouterr()
    error = json.loads(said.out)
    assert (error["file"], error["key"]) == (str(path), "systems.deals.webhooks.secret")
    assert '"user:password"' in error["message"]
    assert "HTTP auth user and password" in error["message"]
    assert secret not in said.out + said.err


def test_a_pipedrive_webhook_secret_of_user_and_password_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pair loads as given (a password may hold a colon: Basic splits at the first)."""
    path = example_config(tmp_path, monkeypatch)
    monkeypatch.setenv("PD_HOOK", "klantsync:pass:word")
    hooks = load_config(_with_pipedrive_webhook(path, "env:PD_HOOK")).systems["deals"].webhooks
    assert hooks is not None and hooks.secret.get_secret_value() == "klantsync:pass:word"


def test_a_previous_pipedrive_webhook_secret_that_is_no_pair_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret being rotated is held to the same form: one that is no user:password
    pair never verifies a delivery either."""
    path = _with_pipedrive_webhook(example_config(tmp_path, monkeypatch), "env:PD_HOOK")
    text = path.read_text().replace(
        'secret = "env:PD_HOOK"\n', 'secret = "env:PD_HOOK"\nprevious_secret = "env:PD_OLD"\n'
    )
    path.write_text(text)
    monkeypatch.setenv("PD_HOOK", "klantsync:nieuw")
    monkeypatch.setenv("PD_OLD", "alleen-een-wachtwoord")
    error = _load_error(path)
    assert error.key == "systems.deals.webhooks.previous_secret"
    assert "alleen-een-wachtwoord" not in str(error)
    monkeypatch.setenv("PD_OLD", "klantsync:oud")
    hooks = load_config(path).systems["deals"].webhooks
    assert hooks is not None and hooks.secrets() == ["klantsync:nieuw", "klantsync:oud"]


@pytest.mark.parametrize(
    "url", ["postgresql://klantsync@db.internal:5432/klantsync", "sqlite:///var/k.db"]
)
def test_a_database_url_as_the_store_path_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """The store is an SQLite file: a URL in ``store.path`` is refused with exit 2, instead
    of becoming a local file in a folder named "postgresql:" (one store per replica)."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('path = "state/klantsync.db"', f'path = "{url}"'))
    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "store.path" in err and "is a URL" in err and str(path) in err
    assert not any(p.name.endswith(":") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "written", ["file:state/klantsync.db", "env:KLANTSYNC_STORE", "sqlite:state/klantsync.db"]
)
def test_a_store_path_written_as_a_reference_or_uri_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], written: str
) -> None:
    """``file:...`` (the form keys.source takes), ``env:...`` and SQLite's URI form are no
    paths: taken as one, the store was made in a folder named "file:state" beside the
    config, where backup, status and monitoring of state/klantsync.db saw no store."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('path = "state/klantsync.db"', f'path = "{written}"'))
    error = _load_error(path)
    assert error.key == "store.path" and "plain path" in error.problem
    assert not any(":" in p.name for p in tmp_path.iterdir())


def test_a_store_path_under_a_tilde_is_refused_saying_the_tilde_is_not_expanded(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """No shell reads the config: "~/klantsync.db" became a store in a folder named "~"
    beside the config, made silently, and seen by nothing that looked at the real one."""
    path = write_config(tmp_path)
    text = path.read_text().replace('path = "state/klantsync.db"', 'path = "~/klantsync.db"')
    path.write_text(text)
    error = _load_error(path)
    assert error.key == "store.path" and "not expanded" in error.problem
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("written", ["/", "state/", "var/state/"])
def test_a_store_path_naming_a_folder_by_its_form_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], written: str
) -> None:
    """A store.path ending in / names a folder, not the store file: "/" was an internal
    error in `sync` and `backup`, and "state/" became a store file named "state"."""
    path = write_config(tmp_path)
    text = path.read_text().replace('path = "state/klantsync.db"', f'path = "{written}"')
    path.write_text(text)
    error = _load_error(path)
    assert error.key == "store.path" and "names a folder" in error.problem
    for command in (["sync"], ["backup", "--out", str(tmp_path / "b.db")]):
        assert main(["-c", str(path), *command]) == 2
        assert "store.path" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_a_store_path_on_a_windows_drive_is_no_reference() -> None:
    """One letter before the colon is a drive (C:/...), not a scheme."""
    from connector.config import StoreSettings

    assert StoreSettings.model_validate({"path": "C:/klantsync/k.db"}).path.name == "k.db"


def test_every_problem_of_a_config_is_told_at_once_naming_each_key(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the first problem was told: an operator with three mistakes ran `check` three
    times to learn of them. Each is told now, the first as before (file and key under
    --json), the others beside it; a flow naming a system whose own table is wrong is not
    told of as well ("no system named" would send the operator to the wrong line)."""
    path = write_config(
        tmp_path,
        extra='[logging]\nlevel = "LOUD"\n',
        crm_extra='timeout_seconds = "30"',
    )
    path.write_text(path.read_text().replace("retry_attempts = 8", "retry_attempts = 0"))
    error = _load_error(path)
    keys = [error.key, *(other.key for other in error.also)]
    assert keys == ["sync.retry_attempts", "logging.level", "systems.crm.timeout_seconds"]
    assert all(other.file == str(path) for other in error.also)

    assert main(["-c", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and all(key in err for key in keys)
    assert "no system named" not in err and "flows[0]" not in err

    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert (answer["error"], answer["key"]) == ("config", "sync.retry_attempts")
    assert [problem["key"] for problem in answer["problems"]] == keys
    assert all(problem["file"] == str(path) for problem in answer["problems"])


def test_a_config_error_under_json_lists_its_one_problem_as_it_lists_several(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A script reads `problems` whether one or several are found."""
    path = write_config(tmp_path, crm_extra='base_ulr = "https://x.test"')
    assert main(["-c", str(path), "check", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert [problem["key"] for problem in answer["problems"]] == ["systems.crm.base_ulr"]


def test_two_mistakes_in_one_table_are_both_told(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_config(tmp_path)
    text = path.read_text().replace("retry_base_seconds = 0", "retry_base_seconds = -1")
    path.write_text(text.replace("retry_attempts = 8", "retry_attempts = 0"))
    error = _load_error(path)
    keys = [error.key, *(other.key for other in error.also)]
    assert keys == ["sync.retry_attempts", "sync.retry_base_seconds"]
