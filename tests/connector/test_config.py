"""Config loading: every mistake exits 2 with the file, the key and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.cli import main
from connector.config import load_config, parse_schedule
from connector.demo import REPO_MAPPINGS
from connector.errors import ConfigError
from tests.conftest import example_config, write_config


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


def test_unknown_field_in_mapping_names_mapping_file(tmp_path: Path, env: dict[str, str]) -> None:
    """A mapping naming a field outside the canonical vocabulary fails with its file and key."""
    mapping = tmp_path / "crm.toml"
    mapping.write_text(
        '[fields.email]\npath = "email"\npurpose = "x"\n'
        '[fields.shoe_size]\npath = "shoe"\npurpose = "y"\n'
    )
    error = _load_error(write_config(tmp_path, crm_mapping=mapping))
    assert error.file == str(mapping) and error.key == "fields.shoe_size"


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


def test_bad_schedule_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """A schedule that is neither an interval nor cron is refused at load."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"every 15m"', '"sometimes"'))
    assert _load_error(path).key == "flows[0].schedule"


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


def test_config_example_names_every_option_of_every_table() -> None:
    """Each key of each config model, adapters' included, appears in config.example.toml as
    ``key =`` or as a ``[... .key]`` table (commented out where it has no example value)."""
    import re
    import typing

    from pydantic import BaseModel

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

    text = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
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
    missing: list[str] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            key = info.alias or name
            if not re.search(rf"(^|[\s#{{,]){re.escape(key)} =|\.{re.escape(key)}\]", text, re.M):
                missing.append(f"{model.__name__}.{key}")
            for arg in (info.annotation, *typing.get_args(info.annotation)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for root in roots:
        walk(root)
    assert missing == []


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
