"""Secret references: ``credential:NAME``, a systemd credential the unit loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError
from connector.secrets import resolve_secret
from tests.conftest import write_config

#: Stands for a secret in these tests: never to be seen in a message.
SECRET = "pat-geheim-0123456789"


def _credentials(tmp_path: Path, **files: str | bytes) -> Path:
    """A credentials folder as systemd makes one for a unit: a file per credential."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    for name, content in files.items():
        target = folder / name.replace("__", ".")
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return folder


def _resolve(reference: str, env: dict[str, str], *, sent: bool = True) -> str:
    return resolve_secret(
        reference,
        file="klantsync.toml",
        key="systems.crm.credentials.token",
        base_dir=Path("/nonexistent"),
        env=env,
        sent=sent,
    )


def test_a_credential_reference_reads_the_file_of_that_name_in_the_credentials_folder(
    tmp_path: Path,
) -> None:
    """systemd puts what `LoadCredential=NAME:PATH` names at $CREDENTIALS_DIRECTORY/NAME, a
    folder it chooses as the unit starts; a `file:` path could not name it. The value is
    read as a secret file's is: its closing line break is no part of it."""
    folder = _credentials(tmp_path, secrets_crm__token=SECRET + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(folder)}
    assert _resolve("credential:secrets_crm.token", env) == SECRET
    assert _resolve("credential: secrets_crm.token ", env) == SECRET


def test_a_credential_reference_outside_a_unit_that_loads_it_names_the_file_and_key(
    tmp_path: Path,
) -> None:
    """Run by hand (sudo -u, a shell, cron), no CREDENTIALS_DIRECTORY is set: the error
    says what is missing and how to run the command, naming the file and key."""
    for env in ({}, {"CREDENTIALS_DIRECTORY": "  "}):
        with pytest.raises(ConfigError) as caught:
            _resolve("credential:master.key", env)
        error = caught.value
        assert error.file == "klantsync.toml" and error.key == "systems.crm.credentials.token"
        assert "credential master.key" in error.problem
        assert "CREDENTIALS_DIRECTORY is not set" in error.problem
        assert "LoadCredential=" in error.problem
    with pytest.raises(ConfigError, match="not an absolute path"):
        _resolve("credential:master.key", {"CREDENTIALS_DIRECTORY": "credentials"})


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("credential:", "names no credential"),
        ("credential:  ", "names no credential"),
        ("credential:absent", "credential absent not found in CREDENTIALS_DIRECTORY"),
        ("credential:empty", "credential empty is empty"),
        ("credential:latin1", "credential latin1 is not UTF-8 text"),
        ("credential:huge", "credential huge is longer than any secret"),
        ("credential:pipe", "credential pipe is not a regular file"),
        ("credential:folder", "credential folder unreadable (Is a directory)"),
        ("credential:two.lines", "credential two.lines holds a character other than"),
        ("credential:../master.key", "not a credential's name"),
        ("credential:..", "not a credential's name"),
        ("credential:a:b", "not a credential's name"),
    ],
)
def test_a_credential_that_points_at_nothing_usable_names_the_key_never_the_value(
    tmp_path: Path, reference: str, problem: str
) -> None:
    """As for a `file:` secret: missing, empty, not text, a pipe, a folder, a device-sized
    file or one of two lines are refused at load, exit 2 naming the key; no name reaches
    a file outside the credentials folder."""
    folder = _credentials(
        tmp_path,
        empty="  \n",
        latin1="pât-geheim-\xff".encode("latin-1"),
        huge="geheim" * 20_000,
        two__lines="geheim\nsecond-line\n",
    )
    os.mkfifo(folder / "pipe")
    (folder / "folder").mkdir()
    (tmp_path / "master.key").write_text("geheim-master")
    with pytest.raises(ConfigError) as caught:
        _resolve(reference, {"CREDENTIALS_DIRECTORY": str(folder)})
    assert caught.value.key == "systems.crm.credentials.token"
    assert problem in caught.value.problem, caught.value.problem
    assert "geheim" not in str(caught.value) and "0xff" not in str(caught.value)


@pytest.mark.parametrize(
    "token",
    [
        "shpat_" + "a1b2c3d4e5f60718" * 2,  # Shopify's Admin API token: a valid file name
        "cs_" + "3f9a1c2b7d" * 4,  # WooCommerce's consumer secret
        "0123456789abcdef0123456789abcdef-us21",  # a Mailchimp API key
        "pat-na1-9f8e7d6c-1a2b-3c4d-5e6f-0a1b2c3d4e5f",  # a HubSpot private-app token
        "q3X/9kLmT2vB8nR+wE1yZ4cH7uJ0pS6aD5fG=",  # openssl rand -base64: no name at all
    ],
)
@pytest.mark.parametrize("folder_set", [True, False])
def test_a_token_pasted_where_a_credential_s_name_belongs_is_not_echoed(
    tmp_path: Path, token: str, folder_set: bool
) -> None:
    """A token is a valid credential name too: "credential shpat_... not found" would print
    the secret, in check --json and the service's log."""
    env = {"CREDENTIALS_DIRECTORY": str(_credentials(tmp_path))} if folder_set else {}
    with pytest.raises(ConfigError) as caught:
        _resolve(f"credential:{token}", env)
    said = caught.value.problem
    assert "not shown: a secret pasted in?" in said or "not a credential's name" in said
    assert token not in str(caught.value)
    assert "a1b2c3d4" not in str(caught.value) and "9f8e7d6c" not in str(caught.value)


def test_a_webhook_secret_from_a_credential_may_be_any_text(tmp_path: Path) -> None:
    """A webhook secret only keys a signature: its credential is taken as the text it is."""
    folder = _credentials(tmp_path, hook="geheim met spaties en €\n")
    env = {"CREDENTIALS_DIRECTORY": str(folder)}
    assert _resolve("credential:hook", env, sent=False) == "geheim met spaties en €"


def test_a_config_of_credentials_loads_the_master_key_and_the_systems_secrets_from_them(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit loads the master key and every secret as credentials: the config names
    them as such, and the daemon's environment holds none."""
    path = write_config(tmp_path)
    master = (tmp_path / "master.key").read_text()
    folder = _credentials(tmp_path, master__key=master, secrets_crm__token=SECRET)
    text = path.read_text().replace('"file:master.key"', '"credential:master.key"')
    path.write_text(text.replace('"env:T_HS_TOKEN"', '"credential:secrets_crm.token"'))
    (tmp_path / "master.key").unlink()  # read from the credential, nowhere else
    monkeypatch.delenv("T_HS_TOKEN")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    config = load_config(path)
    assert config.systems["crm"].credentials["token"].get_secret_value() == SECRET
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "keys.source" and caught.value.file == str(path)
    assert "CREDENTIALS_DIRECTORY is not set" in caught.value.problem


def test_a_reference_of_no_known_kind_lists_the_credential_kind_too(tmp_path: Path) -> None:
    """The message saying what a secret reference is names every kind there is."""
    with pytest.raises(ConfigError) as caught:
        _resolve("vault:crm/token", {})
    assert '"credential:NAME"' in caught.value.problem
    assert '"env:NAME"' in caught.value.problem and '"file:PATH"' in caught.value.problem


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        (" env:T_HS_TOKEN", "begins with a blank"),
        ("\tfile:token", "begins with a blank"),
        ("ENV:T_HS_TOKEN", 'writes "env:" in capitals'),
        ("File:token", 'writes "file:" in capitals'),
        (" Credential:crm.token", 'begins with a blank and writes "credential:" in capitals'),
    ],
)
def test_a_reference_with_a_blank_in_front_or_in_capitals_says_so(
    reference: str, problem: str
) -> None:
    """A reference of a known kind with a blank in front, or its kind in capitals, was said
    to be no reference ("secrets are never written in the config"), while it read as the
    one meant: said as what is wrong, never quoted."""
    with pytest.raises(ConfigError) as caught:
        _resolve(reference, {"T_HS_TOKEN": SECRET})
    assert problem in caught.value.problem, caught.value.problem
    assert "never written in the config" not in caught.value.problem
    assert reference.strip() not in caught.value.problem
