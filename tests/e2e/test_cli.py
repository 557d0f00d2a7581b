"""The commands end to end, over real loopback TLS against the sandboxes."""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import connector
from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.mailchimp.sandbox import MailchimpSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.cli import CONFIG_VARIABLE, _parser, main
from connector.config import load_config
from connector.crypto import RECEIPT_KEY_CONTEXT, Keyring, decode_master_key, generate_master_key
from connector.demo import REPO_MAPPINGS, run_demo, write_config
from connector.engine import Engine
from connector.receipts import LEGACY_KEY_FILE
from connector.sandboxkit import serve_tls
from connector.schema import MIGRATIONS
from connector.state import Store
from tests.conftest import CANARY_EMAIL, CANARY_PHONE_E164, ENV, example_config, modes_before_chmod
from tests.conftest import write_config as write_test_config
from tests.store_versions import add_people, as_the_version_before, store_at


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, WooCommerceSandbox, HubSpotSandbox]]:
    shop = WooCommerceSandbox()
    crm = HubSpotSandbox(rate_limit=None)
    shop.seed_synthetic(120, seed=21)
    with serve_tls({"shop": shop.app(), "crm": crm.app()}, tmp_path / "tls") as (ca, apps):
        assert ca is not None
        config = write_config(
            tmp_path,
            {name: app.url for name, app in apps.items()},
            ca.ca_path,
            {"shop": shop.credentials(), "crm": crm.credentials()},
        )
        yield config, shop, crm


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_sync_status_audit_over_tls(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """`sync --json` moves everyone over TLS; `status` and `audit verify` report on it."""
    config, _, crm = served
    assert main(["-c", str(config), "sync", "--json"]) == 0
    (report,) = _json(capsys)  # type: ignore[misc]
    assert report["pulled"] == 120 and report["destinations"]["crm"]["created"] == 120
    assert crm.contact_count() == 120
    assert main(["-c", str(config), "status", "--json"]) == 0
    status = _json(capsys)
    assert isinstance(status, dict)
    assert status["flows"]["shop-to-crm"]["last_status"] == "ok"
    assert status["counts"]["outbox"] == 0
    # 120 people, each known by the shop's id and the CRM's.
    assert status["counts"]["subjects"] == 120 and status["counts"]["identities"] == 240
    assert main(["-c", str(config), "status"]) == 0
    assert "known subjects 120 (240 system ids)" in capsys.readouterr().out
    assert main(["-c", str(config), "audit", "verify", "--json"]) == 0
    assert _json(capsys)["ok"] is True


def test_status_json_before_the_first_sync_has_the_keys_it_has_after(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` answers with the same keys before the first sync (each empty: no
    count, no request, no backup) as after: a monitoring script reading `counts.outbox` or
    `requests.overdue` on a new deployment failed on a missing key. No store is made."""
    config, _, _ = served
    store_path = load_config(config).store_path

    def shape(value: object) -> object:
        if isinstance(value, dict):
            return {key: shape(each) for key, each in value.items() if key != "flows"}
        return type(value).__name__ if isinstance(value, list) else None

    assert main(["-c", str(config), "status", "--json"]) == 0
    before = _json(capsys)
    assert not store_path.exists()
    assert main(["-c", str(config), "sync", "--json"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    after = _json(capsys)
    assert isinstance(before, dict) and isinstance(after, dict)
    assert before["store_exists"] is False and after["store_exists"] is True
    assert before["flows"] == {"shop-to-crm": {"last_status": "never run"}}
    assert before["counts"] == dict.fromkeys(after["counts"], 0)
    assert before["queued"] == {} and before["dead_letters"] == []
    assert before["requests"]["overdue"] == 0 and before["requests"]["requests"] == []
    assert before["last_backup"] == {"backup": None, "restore": None}
    assert before["schema_version"] is None and before["keys"] == {"bound": False}
    assert shape(before) == shape({**after, "keys": {"bound": False}})


def test_status_shows_what_waits_for_each_system(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """With the CRM refusing the token the sync queues everyone; `status` says how many wait,
    and where, and why the run failed (the run's errors, stored with it)."""
    config, _, crm = served
    crm.faults.fail_status, crm.faults.fail_next = 401, 1_000  # fatal: no retries, no waits
    assert main(["-c", str(config), "sync", "--json"]) == 1
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    status = _json(capsys)
    assert isinstance(status, dict)
    assert status["queued"] == {"crm": 120} and status["counts"]["outbox"] == 120
    (why,) = status["flows"]["shop-to-crm"]["last_errors"]
    assert why.startswith("delivery to crm stopped") and "-> 401" in why
    assert main(["-c", str(config), "status"]) == 0
    text = capsys.readouterr().out
    assert "queued 120 (crm 120)" in text
    assert "failed (last success never): delivery to crm stopped" in text
    crm.faults.fail_next = 0
    assert main(["-c", str(config), "sync", "--json"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    assert _json(capsys)["queued"] == {}
    assert crm.contact_count() == 120


def test_dry_run_and_resync(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run sends nothing and writes nothing: before the first sync it leaves no store
    behind, and on a store it adds no audit entry (a config only looked at has not taken
    effect). A manual full resync of the shop then delivers everyone."""
    config, _, crm = served
    store_path = load_config(config).store_path
    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 0
    assert _json(capsys)[0]["destinations"]["crm"]["queued"] == 120
    assert crm.contact_count() == 0 and not store_path.exists()
    assert main(["-c", str(config), "resync", "--system", "shop", "--full", "--json"]) == 0
    capsys.readouterr()
    assert crm.contact_count() == 120
    with closing(sqlite3.connect(store_path)) as db:
        manual = db.execute(
            "SELECT subject_id, data FROM audit WHERE kind='sync.manual'"
        ).fetchall()
    # The whole shop (no person's id), asked on the command line.
    assert [(sid, json.loads(data)) for sid, data in manual] == [
        (None, {"system": "shop", "full": True, "source": "cli"})
    ]

    def audit_entries() -> int:
        with closing(sqlite3.connect(store_path)) as db:
            return int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    before = audit_entries()
    text = config.read_text()
    assert 'schedule = "every 15m"' in text
    config.write_text(text.replace('schedule = "every 15m"', 'schedule = "every 30m"', 1))
    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 0
    assert _json(capsys)[0]["destinations"]["crm"]["unchanged"] == 120
    assert audit_entries() == before


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "left", ["at the schema before", "with no keys bound", "with bundle paths in clear"]
)
def test_a_dry_run_writes_nothing_to_a_store_opening_would_change(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    left: str,
) -> None:
    """README: a dry run writes nothing and takes no lock. A store the previous klantsync
    left (one schema behind), the natural first look after an upgrade, was migrated by it:
    the older daemon still running on it was refused the store at its next start ("newer
    than this klantsync supports"). A store made before any keys were bound had them bound.
    The dry run now looks at a private copy, says so, and leaves nothing of it behind."""
    import tempfile

    config, _, crm = served
    store_path = load_config(config).store_path
    if left == "with no keys bound":
        Store(store_path).close()  # the current schema, no keyset
        version, keys, expected = len(MIGRATIONS), 0, {"queued": 120, "unchanged": 0}
    elif left == "with bundle paths in clear":
        assert main(["-c", str(config), "sync", "--json"]) == 0
        with closing(sqlite3.connect(store_path)) as db, db:  # as before schema 10
            db.execute(
                "INSERT INTO bundles(path, files, created_at) VALUES ('/srv/inzage/x', '[]', 't')"
            )
        version, keys, expected = len(MIGRATIONS), 1, {"queued": 0, "unchanged": 120}
    else:
        assert main(["-c", str(config), "sync", "--json"]) == 0
        as_the_version_before(store_path)
        version, keys, expected = len(MIGRATIONS) - 1, 1, {"queued": 0, "unchanged": 120}
    before = _sha256(store_path)
    crm.log.clear()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    capsys.readouterr()

    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 0

    out = capsys.readouterr()
    (report,) = json.loads(out.out)
    assert report["dry_run"] and crm.log.writes() == []
    crm_report = report["destinations"]["crm"]
    assert {key: crm_report[key] for key in expected} == expected  # read as a sync reads it
    assert "dry run on a private copy of the store" in out.err
    assert _sha256(store_path) == before
    with closing(sqlite3.connect(store_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (version,)
        assert db.execute("SELECT COUNT(*) FROM keyset").fetchone() == (keys,)
    assert list((tmp_path / "temp").iterdir()) == []  # the copy went with its folder
    assert not list(store_path.parent.glob(store_path.name + "-*"))


def test_a_dry_run_on_an_older_store_refuses_the_master_key_the_sync_refuses(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store from before schema 9 (no keys bound) with nothing sealed left is checked
    against the folder's shared receipt signing key file of earlier versions. The dry run's
    private copy sat in a folder without it, so the dry run took a master key the sync
    refuses, and reported every customer as new (to be created again: duplicates). The copy
    has the key files beside it that the store has."""
    config, _, crm = served
    store_path = load_config(config).store_path
    db = store_at(store_path, 8)  # an earlier klantsync's store, in use
    add_people(db, 20, numbered=True)
    db.close()
    written_with = decode_master_key(generate_master_key())  # not the key keys.source names
    shared = store_path.parent / LEGACY_KEY_FILE
    shared.write_bytes(Keyring(written_with).seal(b"signing key", RECEIPT_KEY_CONTEXT))

    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 2
    out = capsys.readouterr()
    assert "dry run on a private copy" in out.err
    assert json.loads(out.out)["error"] == "config" and "keys.source" in out.out
    with closing(sqlite3.connect(store_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (8,)  # the dry run looked
    assert main(["-c", str(config), "sync"]) == 2  # as the sync refuses it
    assert "keys.source" in capsys.readouterr().err
    assert crm.log.writes() == []


def test_retention_dry_run_leaves_an_older_store_at_its_schema(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run is a look: opening an older store migrated it, and the older daemon still
    running on it was refused it at its next start ("newer than this klantsync supports").
    `retention run --dry-run` looks at a private copy, as `sync --dry-run` does."""
    config = write_test_config(tmp_path)
    store_path = load_config(config).store_path
    Store(store_path).close()
    as_the_version_before(store_path)
    before = _sha256(store_path)
    assert main(["-c", str(config), "retention", "run", "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["dry_run"] is True
    assert "dry run on a private copy of the store" in out.err
    assert _sha256(store_path) == before
    with closing(sqlite3.connect(store_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) - 1,)


def test_retention_dry_run_on_a_private_copy_counts_the_stores_a_restore_replaced(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The private copy sits in a folder of its own: the stores a restore replaced are
    beside the store, and the dry run counts those the real run purges (it looked beside
    the copy and counted none)."""
    config = write_test_config(tmp_path)
    store_path = load_config(config).store_path
    Store(store_path).close()
    as_the_version_before(store_path)
    replaced = store_path.with_name(f"{store_path.name}.replaced-20200415T080000Z")
    with closing(sqlite3.connect(replaced)) as db:
        db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        db.execute("CREATE TABLE outbox (payload BLOB)")
        db.execute("INSERT INTO outbox VALUES (x'00')")
        db.commit()
    assert main(["-c", str(config), "retention", "run", "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    assert "dry run on a private copy of the store" in out.err
    assert json.loads(out.out)["replaced_stores"] == 1
    assert replaced.exists()


def test_a_look_whose_private_copy_fills_the_temporary_folder_names_the_copy_not_the_store(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`status` on a store an earlier klantsync left looks at a private copy in the
    temporary folder. With that folder's disk full, SQLite's full disk was said as the
    store's ("the disk holding the store is full"), whose disk had room. It names the copy,
    and where else it can go."""
    import tempfile

    config = write_test_config(tmp_path)
    store_path = load_config(config).store_path
    assert main(["-c", str(config), "incident", "open", "--summary", "a laptop lost"]) == 0
    as_the_version_before(store_path)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    connect = sqlite3.connect

    def on_a_full_temporary_disk(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(target, *args, **kwargs)
        if isinstance(target, Path) and temp in target.parents:
            db.execute("PRAGMA max_page_count=3")
        return db

    monkeypatch.setattr(sqlite3, "connect", on_a_full_temporary_disk)
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "store", answer
    assert "a private copy of the store could not be written: its disk is full" in answer["message"]
    assert "point TMPDIR at another folder" in answer["message"]
    assert not answer["message"].startswith(str(store_path))
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["check"],
        ["status"],
        ["keys", "show"],
        ["audit", "export"],
        ["audit", "verify"],
        ["incident", "list"],
    ],
    ids=" ".join,
)
def test_a_command_that_only_looks_leaves_an_older_store_at_its_schema(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`check` validates; run after installing a new version (the natural first step of an
    upgrade, before restarting the daemon), it migrated the store the older daemon still
    runs on, in place and for good: rolled back, that daemon refused the store ("newer than
    this klantsync supports"). So did `status`, `keys show`, `audit export`, `audit verify`
    and `incident list`. Each looks at a private copy, as the dry runs do, and says so on
    stderr."""
    config = write_test_config(tmp_path)
    store_path = load_config(config).store_path
    assert main(["-c", str(config), "incident", "open", "--summary", "a laptop lost"]) == 0
    as_the_version_before(store_path)  # the store as the previous klantsync left it
    before = _sha256(store_path)
    capsys.readouterr()

    code = main(["-c", str(config), *command] + ([] if command[0] == "audit" else ["--json"]))

    out = capsys.readouterr()
    assert code in (0, 1), out  # check: 1 for the compliance gaps of this minimal config
    assert f"{' '.join(command)} on a private copy of the store" in out.err
    assert _sha256(store_path) == before
    with closing(sqlite3.connect(store_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) - 1,)
    if command == ["audit", "verify"]:
        said = " ".join(out.out.split())
        assert code == 0 and "ok: audit chain intact" in said, said  # its MACs checked
        assert "keyed now" not in said
        return
    if command[0] == "audit":
        kinds = [json.loads(line)["kind"] for line in out.out.splitlines()]
        assert "incident.opened" in kinds, kinds
        # Its entry would be a write to the store: the export says it is not recorded.
        assert "the export is not recorded in the audit trail" in out.err
        return
    answer = json.loads(out.out)
    if command == ["check"]:
        assert answer["master_key"]["store"] == "opens"
    elif command == ["status"]:
        assert answer["schema_version"] == len(MIGRATIONS) - 1  # the store's, not the copy's
        assert answer["incidents"]["open"] == 1 and answer["keys"]["keys_source_matches"]
    elif command == ["keys", "show"]:
        assert answer["store_exists"] and answer["master_fingerprint"]
    else:
        assert [incident["summary"] for incident in answer] == ["a laptop lost"]


def test_a_dry_run_on_a_store_opening_leaves_as_it_is_looks_at_the_store_itself(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """No copy where none is needed: a store at the current schema with its keys bound."""
    config, _, _ = served
    assert main(["-c", str(config), "sync", "--json"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["destinations"]["crm"]["unchanged"] == 120
    assert "private copy" not in out.err


def test_check_online_reaches_every_system(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --online` calls each system over TLS and reports it reachable."""
    config, _, _ = served
    code = main(["-c", str(config), "check", "--online", "--json"])
    summary = _json(capsys)
    assert isinstance(summary, dict)
    assert summary["online"] == {"shop": "ok", "crm": "ok"}
    assert code in (0, 1)  # 1 only for compliance gaps of this minimal config


def test_check_online_warns_of_a_shop_that_ignores_fields(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """A shop that sends whole customers whatever ``_fields`` says: minimisation at the
    source does not happen there, and `check --online` says so (a shop that honours it
    gets no warning)."""
    config, shop, _ = served

    def warnings() -> list[str]:
        main(["-c", str(config), "check", "--online", "--json"])
        summary = _json(capsys)
        assert isinstance(summary, dict)
        return [w for w in summary["warnings"] if "_fields" in w]

    assert warnings() == []
    shop.honours_fields = False
    (warning,) = warnings()
    assert warning.startswith("shop ignores _fields: it sends whole customers")


def test_check_online_names_a_shop_key_that_may_not_write(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """A WooCommerce key made with Read permissions answers every read `check --online`
    made, and the first erasure was refused: the check now fails naming it (exit 1)."""
    config, shop, _ = served
    shop.key_permissions = "read"
    assert main(["-c", str(config), "check", "--online", "--json"]) == 1
    online = _json(capsys)["online"]  # type: ignore[index]
    assert online["crm"] == "ok"
    assert "may not write" in online["shop"] and "Read/Write" in online["shop"]


def test_check_online_names_a_configured_audience_mailchimp_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list_ids`` names the audiences every write goes to; one the account does not have
    (a typo, an audience deleted) fails every write with a fatal 404. A ``find`` takes that
    404 for "no such member", so `check --online` reads each configured audience and fails
    naming the one missing (an audience id, no person's data)."""
    shop, news = WooCommerceSandbox(), MailchimpSandbox()
    with serve_tls({"shop": shop.app(), "news": news.app()}, tmp_path / "tls") as (ca, apps):
        assert ca is not None
        config = write_config(
            tmp_path,
            {name: app.url for name, app in apps.items()},
            ca.ca_path,
            {"shop": shop.credentials(), "news": news.credentials()},
        )
        main(["-c", str(config), "check", "--online", "--json"])
        assert _json(capsys)["online"] == {"shop": "ok", "news": "ok"}  # type: ignore[index]
        text = config.read_text()
        assert 'list_ids = ["a1b2c3d4e5"]' in text
        config.write_text(text.replace('["a1b2c3d4e5"]', '["a1b2c3d4e5", "a1b2c3d4e6"]'))
        assert main(["-c", str(config), "check", "--online", "--json"]) == 1
        online = _json(capsys)["online"]  # type: ignore[index]
        assert online["shop"] == "ok"
        assert "/lists/{id} -> 404" in online["news"]
        assert "no such audience 'a1b2c3d4e6': check list_ids" in online["news"]


def test_check_online_names_a_mapped_hubspot_property_the_portal_lacks(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A HubSpot mapping naming a contact property the portal does not define passed `check
    --online`, and the first sync dead-lettered every customer sent. The online check reads
    the portal's property list and fails naming the property and the mapping key (exit 1);
    `check` without `--online` calls no system. A token without the schema scope fails it
    naming the scope to grant."""
    config, _, crm = served
    mapping = tmp_path / "hubspot.toml"
    original = (REPO_MAPPINGS / "hubspot.toml").read_text()
    mapping.write_text(original.replace('path = "company"', 'path = "bedrijfsnaam"'))
    text = config.read_text()
    assert str(REPO_MAPPINGS / "hubspot.toml") in text
    config.write_text(text.replace(str(REPO_MAPPINGS / "hubspot.toml"), str(mapping)))
    main(["-c", str(config), "check", "--json"])
    assert _json(capsys)["online"] == {}  # type: ignore[index]
    assert crm.endpoints_used == []
    assert main(["-c", str(config), "check", "--online", "--json"]) == 1
    online = _json(capsys)["online"]  # type: ignore[index]
    assert online["shop"] == "ok"
    assert online["crm"].startswith(
        f"{mapping}: HubSpot defines no contact property bedrijfsnaam (fields.company.path): "
    )
    assert "firstname" not in online["crm"]
    assert main(["-c", str(config), "check", "--online"]) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "online crm" in line]
    assert "bedrijfsnaam (fields.company.path)" in line
    crm.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write"}
    assert main(["-c", str(config), "check", "--online", "--json"]) == 1
    assert _json(capsys)["online"]["crm"] == (  # type: ignore[index]
        "crm: GET /crm/v3/properties/contacts -> 403 "
        "(MISSING_SCOPES: grant the private app crm.schemas.contacts.read)"
    )


def test_unreachable_system_fails_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sync against a dead port finishes with exit 1 and a clear error, nothing queued lost."""
    from connector.devtls import DevCA

    ca = DevCA(tmp_path / "tls")
    config = write_config(
        tmp_path,
        {"shop": "https://127.0.0.1:9", "crm": "https://127.0.0.1:9"},
        ca.ca_path,
        {"shop": {"consumer_key": "k", "consumer_secret": "s"}, "crm": {"token": "t"}},
    )
    text = config.read_text().replace("[[flows]]", "[sync]\nretry_attempts = 1\n\n[[flows]]")
    config.write_text(text)
    assert main(["-c", str(config), "sync", "--json"]) == 1
    (report,) = _json(capsys)  # type: ignore[misc]
    assert report["errors"] and "shop" in report["errors"][0]


def test_demo_runs_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo syncs to three systems, erases, answers access and writes the register.

    Its --dir given relative to the working folder, as one types it: the CA's path went
    into the config as typed and was then read relative to the config's folder (exit 2)."""
    # Few customers: Pipedrive's sandbox allows 10 person searches per 2 s, as Pipedrive does,
    # and each new person is looked up once before it is created.
    customers = 16
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--customers", str(customers), "--dir", "demo", "--json"]) == 0
    result = _json(capsys)
    assert isinstance(result, dict)
    first = result["first_sync"]["destinations"]
    assert first["crm"]["created"] == customers and first["deals"]["created"] == customers
    # Only customers who opted in reach the newsletter.
    assert first["news"]["gated"] == customers // 2
    assert result["second_sync"]["destinations"]["crm"]["queued"] == 0
    # Three phone numbers changed, one removed, one e-mail address changed: five updates,
    # nobody added, and one record with a field emptied.
    assert result["after_changes"]["destinations"]["crm"]["updated"] == 5
    assert result["after_changes"]["destinations"]["crm"]["emptied"] == 1
    assert result["after_changes"]["moved"] == 1
    assert result["contacts_after_changes"] == result["contacts"]
    assert "meta_data.date_of_birth" in result["first_sync"]["withheld_fields"]
    assert set(result["received"]["crm"]) <= {
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "city",
        "country",
    }
    erasure = result["erasure"]
    assert erasure["status"] == "completed" and erasure["receipt_verified"]
    assert not any(erasure["still_held"].values())
    assert result["sync_after_erasure"] == {"suppressed": 1, "recreated": False}
    assert "data.json" in result["access"]["bundle"]
    register = Path(result["register"]).read_text()
    assert register.startswith("# Verwerkingsregister")
    assert all(name in register for name in ("HubSpot", "Mailchimp", "Pipedrive"))
    assert "ONTBREEKT" not in register  # nothing missing: processors, basis and retention set


#: The demo's step headings, in the order it tells them.
DEMO_STEPS = (
    "1. First sync",
    "2. Second sync, nothing changed",
    "3. Three customers change their phone number",
    "4. A customer asks to be forgotten",
    "5. Another customer asks what we hold",
    "6. The processing register",
)


class _Recorded(io.StringIO):
    """A console's output, each write logged in order among the engine's sync events."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.events = events

    def write(self, text: str) -> int:
        self.events.append(("out", text))
        return super().write(text)


def _record_syncs(monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str]]) -> None:
    """Log each engine sync's start and end among the writes (and whether it had a bar)."""
    real = Engine.sync

    async def sync(self: Engine, *args: Any, **kwargs: Any) -> Any:
        events.append(("sync", "start" if kwargs.get("progress") is None else "start with bar"))
        try:
            return await real(self, *args, **kwargs)
        finally:
            events.append(("sync", "end"))

    monkeypatch.setattr(Engine, "sync", sync)


def _console(out: io.StringIO, *, terminal: bool) -> Console:
    """A console like the one the CLI prints with, on a terminal or not."""
    return Console(file=out, force_terminal=terminal, highlight=False, soft_wrap=True, width=160)


def _first(events: list[tuple[str, str]], kind: str, text: str, after: int = 0) -> int:
    return next(i for i, (k, t) in enumerate(events) if i >= after and k == kind and text in t)


def test_demo_on_a_terminal_tells_each_step_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal each step's heading comes out before its work, in order, and every
    sync shows a progress bar; the report follows its step, not the whole run."""
    events: list[tuple[str, str]] = []
    _record_syncs(monkeypatch, events)
    console = _console(_Recorded(events), terminal=True)
    assert run_demo(console, directory=tmp_path, customers=6, as_json=False) == 0
    headings = [_first(events, "out", step) for step in DEMO_STEPS]
    assert headings == sorted(headings)
    syncs = [i for i, (kind, what) in enumerate(events) if kind == "sync" and what != "end"]
    # Steps 1 to 4 each sync once (4: the restored backup), after their heading and before
    # the next one; steps 5 and 6 do not sync.
    assert len(syncs) == 4
    for step, sync in enumerate(syncs):
        assert headings[step] < sync < headings[step + 1]
    assert all(events[i][1] == "start with bar" for i in syncs)
    # The bar was drawn while the first sync ran, between step 1's heading and step 2's.
    bar = _first(events, "out", "shop-to-all: -> deals", after=headings[0])
    assert bar < _first(events, "sync", "end", after=syncs[0]) < headings[1]
    # Step 1's report is out before step 2 starts.
    assert _first(events, "out", "crm received only", after=headings[0]) < headings[1]
    assert _first(events, "out", "hash-chained audit entries") > headings[5]


def test_demo_json_on_a_terminal_is_one_document_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --json, even on a terminal, the console gets nothing (no headings, no bar) and
    stdout is exactly one JSON document."""
    events: list[tuple[str, str]] = []
    _record_syncs(monkeypatch, events)
    console = _console(_Recorded(events), terminal=True)
    assert run_demo(console, directory=tmp_path, customers=6, as_json=True) == 0
    assert [kind for kind, _ in events] == ["sync", "sync"] * 4
    assert all(what in ("start", "end") for _, what in events)  # no bar: no progress given
    result = json.loads(capsys.readouterr().out)  # one document: trailing text would raise
    assert result["first_sync"]["destinations"]["deals"]["created"] == 6


def test_demo_piped_prints_the_steps_without_a_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When stdout is not a terminal, the demo prints its report and nothing else: no bar,
    no control codes."""
    events: list[tuple[str, str]] = []
    _record_syncs(monkeypatch, events)
    out = _Recorded(events)
    console = _console(out, terminal=False)
    assert run_demo(console, directory=tmp_path, customers=6, as_json=False) == 0
    text = out.getvalue()
    assert [text.index(step) for step in DEMO_STEPS] == sorted(text.index(s) for s in DEMO_STEPS)
    assert not re.search(r"shop-to-all: (pull\b|-> )", text)  # the bar's task names
    assert "\x1b" not in text
    assert all(what in ("start", "end") for kind, what in events if kind == "sync")


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_sync_piped_draws_no_bar_where_the_environment_asks_for_colour(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
) -> None:
    """rich takes FORCE_COLOR=1 (set by many CI runners) or TTY_COMPATIBLE=1 for a
    terminal: `sync > report.txt` then held the bar's every frame, cursor codes and all,
    before the report. Colour may be asked for that way; a bar is for a terminal alone."""
    config, _, crm = served
    events: list[tuple[str, str]] = []
    _record_syncs(monkeypatch, events)
    monkeypatch.setenv(variable, "1")
    assert main(["-c", str(config), "sync"]) == 0
    out = capsys.readouterr().out
    assert crm.contact_count() == 120
    assert events == [("sync", "start"), ("sync", "end")]  # no progress given: no bar
    assert not re.search(r"shop-to-crm: (pull\b|-> )", out)  # the bar's task names
    assert "\x1b[?25l" not in out and "\r" not in out  # no cursor hidden, no line redrawn
    assert "pulled 120 from shop" in out


def test_demo_writes_its_master_key_and_credential_files_owner_only_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`demo` and `sandbox` keep a master key and the sandboxes' credentials as `file:`
    secrets. Written under the usual umask (0644) and narrowed to 0600 after, every local
    user could read the master key for that moment, and for good after a kill in between:
    each is owner-only from the start."""
    with modes_before_chmod(monkeypatch) as before_chmod:
        write_config(
            tmp_path,
            {"shop": "https://127.0.0.1:1", "crm": "https://127.0.0.1:2"},
            tmp_path / "ca.pem",
            {
                "shop": {"consumer_key": "ck_x", "consumer_secret": "cs_x"},
                "crm": {"token": "pat-x"},
            },
        )
    written = [tmp_path / "master.key", *sorted((tmp_path / "secrets").iterdir())]
    assert len(written) == 4
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in written)
    widened = {name: oct(mode) for name, mode in before_chmod.items() if mode & 0o077}
    assert widened == {}, f"readable by others before the chmod: {widened}"


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`keygen` prints 32 random bytes in urlsafe base64, different each time."""
    from connector.crypto import decode_master_key

    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(decode_master_key(first)) == 32 and first != second


def test_the_config_may_be_named_by_the_environment(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With KLANTSYNC_CONFIG set, a command needs no -c; a -c given is read instead."""
    config, _, _ = served
    monkeypatch.setenv(CONFIG_VARIABLE, str(config))
    assert main(["status", "--json"]) == 0
    assert "shop-to-crm" in _json(capsys)["flows"]  # type: ignore[index]
    elsewhere = tmp_path / "elsewhere.toml"
    assert main(["-c", str(elsewhere), "status", "--json"]) == 2
    assert _json(capsys)["file"] == str(elsewhere)  # type: ignore[index]


def test_a_command_without_a_config_says_both_ways_to_name_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty KLANTSYNC_CONFIG is none; the usage error names -c and the variable."""
    monkeypatch.setenv(CONFIG_VARIABLE, "")
    with pytest.raises(SystemExit) as info:
        main(["status"])
    assert info.value.code == 2
    assert f"status needs -c CONFIG (or {CONFIG_VARIABLE} set to its path)" in (
        capsys.readouterr().err
    )


def test_version_says_the_version_pip_installed(capsys: pytest.CaptureFixture[str]) -> None:
    """`klantsync --version` exits 0 saying the version, the one the package was installed
    as (pyproject reads it from connector.__version__: the two cannot drift apart)."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"klantsync {importlib.metadata.version('klantsync')}\n"
    assert importlib.metadata.version("klantsync") == connector.__version__


def test_missing_config_flag_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A command that needs a config but got none exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["sync"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    "words",
    [
        ["status", "--json", "-c", "{config}"],
        ["status", "--config", "{config}", "--json"],
        ["-c", "elsewhere.toml", "status", "--json", "--config", "{config}"],
    ],
)
def test_the_config_may_follow_the_command(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox],
    capsys: pytest.CaptureFixture[str],
    words: list[str],
) -> None:
    """`klantsync status -c FILE` works as `klantsync -c FILE status` does (argparse refused
    it); given on both sides, the one after the command is the one read."""
    config, _, _ = served
    assert main([word.format(config=config) for word in words]) == 0
    status = _json(capsys)
    assert isinstance(status, dict) and "shop-to-crm" in status["flows"]


@pytest.mark.parametrize(
    ("words", "named"),
    [
        (["-c", "before.toml", "check"], "before.toml"),
        (["check", "--config", "after.toml"], "after.toml"),
        (["dsr", "list", "-c", "after.toml"], "after.toml"),
        (["-c", "before.toml", "dsr", "list"], "before.toml"),
        (["retention", "run", "--dry-run", "-c", "after.toml"], "after.toml"),
        (["keys", "show", "--config", "after.toml"], "after.toml"),
    ],
)
def test_every_command_and_action_reads_the_config_given_before_or_after_it(
    words: list[str], named: str
) -> None:
    """Each command, and each action of a command that has them, takes ``-c`` after its own
    name; one given only before the command is not lost to the action's copy of the option."""
    assert _parser().parse_args(words).config == Path(named)


def test_status_shows_open_requests_and_days_left(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """An erasure still waiting on a system appears in `status` with its days left."""
    config, shop, _ = served
    # The shop will be offline: its calls are retried without waiting (tests do not sleep).
    assert "[sync]" not in config.read_text()
    config.write_text(config.read_text() + "\n[sync]\nretry_base_seconds = 0\n")
    assert main(["-c", str(config), "sync", "--json"]) == 0
    capsys.readouterr()
    email = shop.store.get(3)["email"]
    shop.faults.down = True
    assert main(["-c", str(config), "dsr", "erase", "--email", email, "--json"]) == 1
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    requests = _json(capsys)["requests"]
    assert requests["open"] == 1
    (request,) = requests["requests"]
    assert request["days_left"] >= 28 and request["waiting_on"] == ["shop"]
    assert main(["-c", str(config), "status"]) == 0
    text = capsys.readouterr().out
    assert "1 open" in text and "days left" in text and email not in text


def test_report_says_what_was_written_where_the_system_does_not_say_which_was_new() -> None:
    """A destination that answers created and updated alike shows one written count."""
    from io import StringIO

    from rich.console import Console

    from connector.cli import print_report
    from connector.reports import DestinationReport, FlowReport

    report = FlowReport("shop-to-all", "shop", pulled=4)
    report.destinations["crm"] = DestinationReport(queued=4, created=3, updated=1)
    report.destinations["news"] = DestinationReport(queued=2, upserted=2)
    report.destinations["deals"] = DestinationReport(
        queued=1, retry_later=1, deferred="403", left_queued=1
    )
    out = StringIO()
    print_report(Console(file=out, width=400), report)
    crm, news, deals = (line for line in out.getvalue().splitlines() if "->" in line)
    assert "left queued 1 (last: 403)" in deals
    assert "created 3, updated 1, unchanged" in crm and "written" not in crm
    assert "queued 2, written 2 (news does not say which were new), unchanged" in news
    assert "created" not in news
    assert report.as_dict()["destinations"]["news"]["upserted"] == 2
    assert report.as_dict()["destinations"]["news"]["written"] == 2


def test_every_command_the_readme_lists_is_one_the_cli_knows() -> None:
    """The README's command list is what users copy: each line names a real command (and
    sub-action), and every command the CLI has is listed."""
    import re

    from connector.cli import _parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    listed = {
        match.group(1)
        for line in block.splitlines()
        if (match := re.match(r"klantsync (?:-c CONFIG )?([a-z]+)", line.strip()))
    }
    parser = _parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert listed == set(commands.choices)
    for line in block.splitlines():
        words = line.split()
        if words[:3] == ["klantsync", "-c", "CONFIG"] and words[3] in (
            "keys",
            "dsr",
            "audit",
            "incident",
            "retention",
        ):
            sub = commands.choices[words[3]]
            actions = next(a for a in sub._actions if a.choices)
            assert words[4] in actions.choices, line


#: The design's command list, the public contract: never renamed or dropped (README extends it).
DESIGN_COMMANDS = """
klantsync demo                         sandboxes + sync + erasure + access + register, end to end
klantsync keygen                       print a new master key (urlsafe base64 of 32 random bytes)
klantsync -c CONFIG check [--online]   validate config, mappings, TLS, processor agreements
klantsync -c CONFIG sync [--flow F] [--full] [--dry-run]
klantsync -c CONFIG resync --system S [--email E]    manual resync, queued if the daemon runs
klantsync -c CONFIG run                the daemon: scheduler + webhooks + admin API + metrics
klantsync -c CONFIG dsr erase  --email E
klantsync -c CONFIG dsr access --email E --out DIR
klantsync -c CONFIG dsr list | show ID | retry ID
klantsync -c CONFIG register [--lang nl|en] [--format md|html|json] [--out FILE]
klantsync -c CONFIG audit verify | export
klantsync -c CONFIG status [--json]
klantsync -c CONFIG sandbox            run the sandboxes alone, to try things by hand
"""


def _readme_commands() -> str:
    """The code block under the README's "## Commands"."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme.split("## Commands", 1)[1].split("```", 2)[1]


def _sub_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _usage_parts(
    block: str, top: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Each part of each line of a command list, with the parser of ``top`` it is written
    for: a command's, or the action's after a bar (``dsr list [--open] | show ID``), and the
    line."""
    commands = _sub_actions(top)
    for line in filter(None, (raw.strip() for raw in block.splitlines())):
        usage = re.split(r"\s{3,}", line)[0]  # what follows three spaces describes it
        words = usage.split()[1:]
        if words[:2] == ["-c", "CONFIG"]:
            words = words[2:]
        if words[0].startswith("--"):  # an option of klantsync itself (--version)
            yield words[0], top, line
            continue
        assert words[0] in commands, line
        command = commands[words[0]]
        # `audit verify | export` is one parser with a positional choice instead of actions.
        positional = [a for a in command._actions if a.choices and not a.option_strings]
        for index, part in enumerate(" ".join(words[1:]).split(" | ")):
            parser = command
            if actions := _sub_actions(command):
                name = part.split()[0]
                assert name in actions, line
                parser = actions[name]
            elif positional:
                assert part.split()[0] in positional[0].choices, line  # type: ignore[operator]
            elif index:
                raise AssertionError(f"{line}: {words[0]} has no actions")
            yield part, parser, line


@pytest.mark.parametrize(
    ("block", "least"), [(_readme_commands(), 30), (DESIGN_COMMANDS, 9)], ids=["README", "DESIGN"]
)
def test_every_option_the_readme_lists_is_one_the_command_takes(block: str, least: int) -> None:
    """Each --option on a line of the README's command list (and of the design's, the
    public contract) is accepted by the parser of the command (or sub-action) it is written
    after: what users copy works."""
    checked = 0
    for part, parser, line in _usage_parts(block, _parser()):
        for option in re.findall(r"--[a-z][a-z-]*", part):
            assert option in _options(parser), f"{line}: {option}"
            checked += 1
    assert checked >= least  # the list does name the options


def test_the_readme_lists_every_action_and_option_of_every_command() -> None:
    """The README's command list is where an operator learns what a command takes: each
    action and option the CLI has is on it (``--json`` and ``-c``, which every command
    takes, are said once below it). `restore --over-a-new-store` was in the CLI alone."""
    top = _parser()
    listed: dict[argparse.ArgumentParser, set[str]] = {}
    for part, parser, _line in _usage_parts(_readme_commands(), top):
        listed.setdefault(parser, set()).update(re.findall(r"--[a-z][a-z-]*", part))
    everywhere = {"-h", "--help", "-c", "--config", "--json"}
    missing = []
    for name, command in _sub_actions(top).items():
        for label, parser in [(name, command), *_sub_actions(command).items()]:
            if parser is not command and not _sub_actions(parser) and parser not in listed:
                missing.append(f"{name} {label}")
            shown = listed.get(parser, set()) | listed.get(command, set())
            missing += [f"{parser.prog} {o}" for o in sorted(_options(parser) - everywhere - shown)]
    assert not missing, missing


def test_every_command_and_action_takes_json_and_says_what_it_does() -> None:
    """DESIGN.md: every command that reports takes `--json` for machines. Each command and
    each action of one (`dsr erase`, `keys show`...) takes it, and has a --help that says
    what it does."""
    import argparse

    from connector.cli import _parser

    def leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not found:
            yield parser
        for action in found:
            for child in dict(action.choices).values():
                yield from leaves(child)

    commands = list(leaves(_parser()))
    assert len(commands) >= 30  # 13 commands, 20 actions of keys, dsr, retention, incident
    for command in commands:
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert "--json" in flags, command.prog
        assert (command.description or "").strip(), command.prog


def test_readme_layout_names_every_module_of_connector() -> None:
    """The Layout section names each module of connector/, so the next one has a place."""
    import re

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    section = layout.split("adapters/", 1)[0]
    named = set(re.findall(r"[a-z_0-9]+", section))
    modules = {path.stem for path in (root / "connector").glob("*.py")} - {"__init__"}
    assert modules - named == set()


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    """A valid config whose systems are a closed local port: for what needs no answer."""
    from connector.devtls import DevCA

    ca = DevCA(tmp_path / "tls")
    config = write_config(
        tmp_path,
        {"shop": "https://127.0.0.1:9", "crm": "https://127.0.0.1:9"},
        ca.ca_path,
        {"shop": {"consumer_key": "k", "consumer_secret": "s"}, "crm": {"token": "t"}},
    )
    # One attempt: the online check fails at once instead of backing off.
    config.write_text(config.read_text() + "\n[sync]\nretry_attempts = 1\n")
    return config


def _store_of(config: Path) -> Path:
    from connector.config import load_config

    return load_config(config).store_path


def test_status_json_lists_every_dead_letter_and_the_text_the_latest(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README says `status` lists the dead letters: a script reading `dead_letters`
    from --json gets every one, not the latest 20; the text shows those and says so."""
    from connector.state import QueuedPayload, Store

    store = Store(_store_of(offline))
    try:
        for n in range(25):
            subject = f"subject-{n:02d}"
            store.enqueue_page(
                "shop-to-crm", "shop", [QueuedPayload("crm", subject, b"s", f"h{n}")], [], None
            )
            (row,) = [r for r in store.outbox_batch("crm", 0, 100) if r.subject_id == subject]
            store.dead_letter([(row, "VALIDATION_ERROR")])
    finally:
        store.close()
    assert main(["-c", str(offline), "status", "--json"]) == 0
    data = _json(capsys)
    assert isinstance(data, dict)
    assert data["counts"]["dead_letters"] == len(data["dead_letters"]) == 25
    assert main(["-c", str(offline), "status"]) == 0
    text = capsys.readouterr().out
    assert "the latest 20 dead letters of 25 (status --json lists every one)" in text
    assert text.count("dead letter #") == 20


def test_status_counts_as_queued_only_what_waits_to_be_sent(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row held with a write from a former address is never sent (it is kept for an
    erasure to read): `status` says "queued 1 (crm 1)", as its --json `queued` and the
    outbox gauge count, not "queued 2 (crm 1)", a total its own breakdown contradicts."""
    from connector.state import HELD, QueuedPayload, Store

    store = Store(_store_of(offline))
    try:
        payloads = [QueuedPayload("crm", f"{n:032x}", b"sealed", f"hash-{n}") for n in (1, 2)]
        store.enqueue_page("shop-to-crm", "shop", payloads, [], None, move_cursor=False)
        with store.transaction() as db:
            db.execute(
                "UPDATE outbox SET former=payload, payload_hash=? WHERE subject_no="
                "(SELECT subject_no FROM subjects WHERE subject_id=?)",
                (HELD, f"{1:032x}"),
            )
    finally:
        store.close()
    assert main(["-c", str(offline), "status", "--json"]) == 0
    assert _json(capsys)["queued"] == {"crm": 1}  # type: ignore[index]
    assert main(["-c", str(offline), "status"]) == 0
    assert "queued 1 (crm 1), dead letters 0" in capsys.readouterr().out


def test_resync_handed_to_a_running_daemon_is_checked_first(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a daemon on the store, an unknown system or one no flow reads from exits 2 with
    the message an inline resync gives, and nothing is queued; a real source is queued."""
    from connector import jobs
    from connector.lock import DaemonLock
    from connector.state import Store

    store_path = _store_of(offline)
    with DaemonLock(store_path):  # what `klantsync run` holds while it runs
        assert main(["-c", str(offline), "resync", "--system", "nope"]) == 2
        assert "--system: no system named 'nope' (systems: " in capsys.readouterr().err
        assert main(["-c", str(offline), "resync", "--system", "crm"]) == 2
        assert "--system: no flow has 'crm' as its source" in capsys.readouterr().err
        # Not an address: bad usage, as for `dsr` (it ran a sync of nobody and exited 0).
        bad = ["resync", "--system", "shop", "--email", "notanemail"]
        assert main(["-c", str(offline), *bad]) == 2
        assert "not an e-mail address" in capsys.readouterr().err
        assert not store_path.exists()
        assert main(["-c", str(offline), "resync", "--system", "shop", "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
    assert answer["queued"] is True
    store = Store(store_path)
    try:
        assert [job.id for job in jobs.recent(store)] == [answer["job_id"]]
    finally:
        store.close()


def test_a_bad_email_given_to_resync_is_answered_as_usage_as_dsr_answers_it(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: under --json an error is one object, `config` (with the config's `file` and
    `key`) for bad configuration. `resync --email` refused an address by dsr's own check but
    answered `{"error": "config", "file": "--email", "key": ""}`, where `dsr erase --email`
    answers `usage`: a script sending config errors to whoever keeps the config file was
    told to look for a file named "--email"."""
    answers = []
    for command in (["dsr", "erase"], ["resync", "--system", "shop"]):
        argv = ["-c", str(offline), *command, "--email", "jan.jansen@example", "--json"]
        assert main(argv) == 2, command
        answers.append(json.loads(capsys.readouterr().out))
    erase, resync = answers
    assert resync == erase == {"error": "usage", "message": "--email is not an e-mail address"}


def test_a_bad_option_value_a_command_finds_is_answered_as_usage_not_as_config(
    offline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: under --json a bad option value is answered as `usage`; `config`, with its
    `file` and `key`, is for the config file. An option a command itself refused (`--out` a
    folder or the store, `--since` no date, `--to` the key in use, `--dir` an earlier demo's)
    was answered `{"error": "config", "file": "--since", ...}` or `"file": "command line"`,
    and a flow or system the config does not have (`--flow`, `resync --system`) as
    `"key": "flows"`: a script sending config errors to whoever keeps the config file looked
    for a file by that name. Exit 2 still, and stderr as before."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    earlier_demo = tmp_path / "earlier-demo"
    earlier_demo.mkdir()
    (earlier_demo / "klantsync.db").write_bytes(b"")
    Store(_store_of(offline)).close()  # a store to rotate, so --to is what is refused
    refused = {
        "--out": ["register", "--out", str(folder)],
        "--since": ["audit", "export", "--since", "yesterday"],
        "--to": ["keys", "rotate", "--to", f"file:{offline.parent / 'master.key'}"],
        "--dir": ["demo", "--dir", str(earlier_demo)],
        "--flow": ["sync", "--flow", "shop-to-crn"],
        "--system": ["resync", "--system", "nope"],
    }
    for option, command in refused.items():
        assert main(["-c", str(offline), *command, "--json"]) == 2, command
        answer = _json(capsys)
        assert isinstance(answer, dict)
        assert answer["error"] == "usage", answer
        assert answer["message"].startswith(f"{option}: "), answer
        assert "file" not in answer and "command line" not in answer["message"]
        assert main(["-c", str(offline), *command]) == 2, command
        assert capsys.readouterr().err.startswith(f"error: {option}: "), command


def test_sync_of_an_unknown_flow_exits_2_and_leaves_no_store(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped ``--flow`` is bad usage, found before the store opens: no store is made,
    no master key bound to one, no config recorded as having taken effect. An empty name is
    no flow either (it ran every flow)."""
    store_path = _store_of(offline)
    for command in (["sync"], ["sync", "--dry-run"]):
        assert main(["-c", str(offline), *command, "--flow", "shop-to-crn"]) == 2
        assert "--flow: no flow named 'shop-to-crn' (flows: " in capsys.readouterr().err
    assert main(["-c", str(offline), "sync", "--flow", ""]) == 2
    assert "--flow: no flow named ''" in capsys.readouterr().err
    assert not store_path.exists()
    assert not list(store_path.parent.glob(store_path.name + "*"))


def test_config_errors_keep_the_keys_in_square_brackets(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message naming a table such as [development] prints it, not as (lost) markup."""
    text = offline.read_text().replace("https://127.0.0.1:9", "http://127.0.0.1:9")
    offline.write_text(text)
    assert main(["-c", str(offline), "check"]) == 2
    err = capsys.readouterr().err
    assert "set allow_insecure_loopback = true in [development] to permit this" in err


def test_report_lines_print_bracketed_text_as_text() -> None:
    """Errors and names in a flow report are text: brackets in them survive."""
    from io import StringIO

    from rich.console import Console

    from connector.cli import print_report
    from connector.reports import FlowReport

    report = FlowReport("shop[nl]", "shop", pulled=1)
    report.errors.append("crm: POST /contacts/[batch] -> 500")
    out = StringIO()
    print_report(Console(file=out, width=400), report)
    assert "shop[nl]" in out.getvalue() and "/contacts/[batch]" in out.getvalue()


@pytest.mark.parametrize("command", [("audit", "export"), ("status",), ("keys", "show")])
def test_output_to_a_closed_pipe_stops_quietly_with_141(
    offline: Path, command: tuple[str, ...]
) -> None:
    """`audit export | head`: when the reader goes away the command stops without a
    traceback and exits 141 (128 + SIGPIPE), as Unix tools stopped by SIGPIPE do. So do
    commands that print through rich (`status`, `keys show`), which rich itself ended with
    exit 1, the code of a command that finished with failures."""
    import os
    import subprocess
    import sys

    from connector import audit
    from connector.state import Store

    store = Store(_store_of(offline))
    try:
        for n in range(3):
            audit.append(store, "test.event", {"n": n})
    finally:
        store.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "connector", "-c", str(offline), *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


def test_keygen_json_holds_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`keygen --json` prints {"key": ...}: the key is what the command is for."""
    from connector.crypto import decode_master_key

    assert main(["keygen", "--json"]) == 0
    assert len(decode_master_key(_json(capsys)["key"])) == 32  # type: ignore[index]


def test_run_json_logs_json_lines_whatever_the_config_says(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --json` logs JSON lines on stderr even when [logging] asks for readable lines."""
    import logging

    from connector import cli

    offline.write_text(offline.read_text() + '\n[logging]\nformat = "console"\n')
    monkeypatch.setattr(cli, "_run_daemon", lambda _path: 0)
    root = logging.getLogger("klantsync")

    def rendered() -> str:
        record = logging.LogRecord("klantsync.test", logging.INFO, "", 0, "started", None, None)
        formatter = root.handlers[0].formatter
        assert formatter is not None
        return formatter.format(record)

    handlers = root.handlers[:]
    try:
        assert main(["-c", str(offline), "run"]) == 0
        with pytest.raises(ValueError):
            json.loads(rendered())
        assert main(["-c", str(offline), "run", "--json"]) == 0
        assert json.loads(rendered())["event"] == "started"
    finally:
        root.handlers[:] = handlers


def test_sandbox_json_prints_one_object_instead_of_export_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sandbox --json` prints the URLs, CA path and credential variables as one object."""
    import contextlib
    import types

    from connector import demo

    class Box:
        def credentials(self) -> dict[str, str]:
            return {"token": "sandbox-token"}

    @contextlib.contextmanager
    def fake_sandboxes(
        directory: Path, customers: int, ports: Any = None
    ) -> Iterator[tuple[dict[str, Any], Path, dict[str, str]]]:
        yield {"crm": Box()}, directory / "ca.pem", {"crm": "https://127.0.0.1:8444"}

    class Interrupted:
        def wait(self) -> None:
            raise KeyboardInterrupt  # Ctrl-C at once: the test does not serve

    monkeypatch.setattr(demo, "sandboxes", fake_sandboxes)
    monkeypatch.setattr(demo, "threading", types.SimpleNamespace(Event=Interrupted))
    assert main(["sandbox", "--dir", str(tmp_path), "--json"]) == 0
    assert _json(capsys) == {
        "urls": {"crm": "https://127.0.0.1:8444"},
        "ca": str(tmp_path / "ca.pem"),
        "env": {"KLANTSYNC_CRM_TOKEN": "sandbox-token"},
        "customers": 50,
    }
    assert main(["sandbox", "--dir", str(tmp_path)]) == 0
    assert "export KLANTSYNC_CRM_TOKEN=sandbox-token" in capsys.readouterr().out
    # Without --dir the CA goes where the -c config trusts it: var/sandbox beside the file.
    config = tmp_path / "elsewhere" / "config.example.toml"
    assert main(["-c", str(config), "sandbox", "--json"]) == 0
    assert _json(capsys)["ca"] == str(config.parent / "var" / "sandbox" / "ca.pem")


def test_sandbox_prints_each_base_url_with_its_api_path_as_the_config_gives_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailchimp's and Pipedrive's URLs carry the path their API lives under, as
    config.example.toml's base_url has them: without it, copied into a config, every call
    was a 404."""
    import contextlib
    import types

    from connector import demo

    served = {
        "shop": "https://127.0.0.1:8443",
        "crm": "https://127.0.0.1:8444",
        "news": "https://127.0.0.1:8445",
        "deals": "https://127.0.0.1:8446",
    }

    @contextlib.contextmanager
    def fake_sandboxes(
        directory: Path, customers: int, ports: Any = None
    ) -> Iterator[tuple[dict[str, Any], Path, dict[str, str]]]:
        yield {}, directory / "ca.pem", served

    class Interrupted:
        def wait(self) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(demo, "sandboxes", fake_sandboxes)
    monkeypatch.setattr(demo, "threading", types.SimpleNamespace(Event=Interrupted))
    example = (REPO / "config.example.toml").read_text()
    assert main(["sandbox", "--dir", str(tmp_path), "--json"]) == 0
    urls = _json(capsys)["urls"]
    assert urls["news"] == "https://127.0.0.1:8445/3.0"
    assert urls["deals"] == "https://127.0.0.1:8446/api/v2"
    assert urls["shop"] == served["shop"] and urls["crm"] == served["crm"]
    for url in urls.values():
        assert f'base_url = "{url}"' in example
    assert main(["sandbox", "--dir", str(tmp_path)]) == 0
    assert "news https://127.0.0.1:8445/3.0" in capsys.readouterr().out


def test_sandbox_puts_its_ca_where_a_symlinked_config_trusts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths in a config are read from the real file's folder, a symlink followed
    (a config-management checkout linked into /etc): `sandbox` without --dir puts the CA
    there too, where the config's ca_bundle = "var/sandbox/tls/ca.pem" looks for it."""
    import contextlib
    import types

    from connector import demo

    @contextlib.contextmanager
    def fake_sandboxes(
        directory: Path, customers: int, ports: Any = None
    ) -> Iterator[tuple[dict[str, Any], Path, dict[str, str]]]:
        yield {}, directory / "tls" / "ca.pem", {}

    class Interrupted:
        def wait(self) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(demo, "sandboxes", fake_sandboxes)
    monkeypatch.setattr(demo, "threading", types.SimpleNamespace(Event=Interrupted))
    real = tmp_path / "checkout" / "klantsync.toml"
    real.parent.mkdir()
    real.write_text("")
    linked = tmp_path / "etc" / "klantsync.toml"
    linked.parent.mkdir()
    linked.symlink_to(real)
    assert main(["-c", str(linked), "sandbox", "--json"]) == 0
    ca = Path(str(_json(capsys)["ca"]))  # type: ignore[index]
    assert ca.resolve() == (real.parent / "var" / "sandbox" / "tls" / "ca.pem").resolve()


def test_check_says_what_each_system_is_sent_and_leads_with_the_gaps(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source-only Shopify is said to be sent nothing; with compliance gaps the first line
    does not say all is well, and the command exits 1."""
    from connector.demo import REPO_MAPPINGS

    (offline.parent / "secrets" / "shopify").write_text("shpat-test")
    offline.write_text(
        offline.read_text()
        + f"""
[systems.shopify]
adapter = "shopify"
base_url = "https://klant.myshopify.test"
mapping = "{REPO_MAPPINGS / "shopify.toml"}"
credentials = {{ access_token = "file:secrets/shopify" }}

[[flows]]
name = "shopify-to-crm"
source = "shopify"
destinations = ["crm"]
"""
    )
    assert main(["-c", str(offline), "check"]) == 1  # Shopify has no processor agreement
    out = capsys.readouterr().out
    first, *rest = out.splitlines()
    assert not first.startswith("ok") and "compliance gap" in first
    assert any(line.strip().startswith("gap:") for line in rest)
    (shopify,) = [line for line in rest if line.strip().startswith("system shopify:")]
    assert shopify.endswith("sends nothing (source only)")


def test_check_online_names_each_failing_system_once(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --online` against a closed port: each line names its system once, exit 1."""
    assert main(["-c", str(offline), "check", "--online"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("config valid, but 2 systems failed the online check")
    (shop,) = [line for line in out.splitlines() if "online shop" in line]
    assert shop.strip().startswith("online shop: GET /") and "shop: shop:" not in shop


def test_commands_that_read_the_store_create_none(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status`, `audit verify` and `check --online` before any sync say there is no store
    yet, exit as documented, and leave no store file behind."""
    store_path = _store_of(offline)
    assert main(["-c", str(offline), "status"]) == 0
    assert "not created yet (nothing synced yet" in capsys.readouterr().out
    assert main(["-c", str(offline), "status", "--json"]) == 0
    status = _json(capsys)
    assert isinstance(status, dict)
    assert status["store_exists"] is False
    assert status["flows"] == {"shop-to-crm": {"last_status": "never run"}}
    assert main(["-c", str(offline), "audit", "verify"]) == 0
    assert "no audit entries to verify" in capsys.readouterr().out
    assert main(["-c", str(offline), "audit", "verify", "--json"]) == 0
    verified = _json(capsys)
    assert verified["store_exists"] is False and verified["checked"] == 0  # type: ignore[index]
    assert main(["-c", str(offline), "audit", "export"]) == 0
    exported = capsys.readouterr()
    assert exported.out == ""  # JSON Lines stay clean; said on stderr, not in silence
    assert "no audit entries to export" in exported.err
    assert main(["-c", str(offline), "check", "--online", "--json"]) == 1  # port 9 is closed
    assert _json(capsys)["master_key"]["store"] == "not created yet"  # type: ignore[index]
    assert not store_path.exists()
    assert not list(store_path.parent.glob(store_path.name + "*"))


def test_dsr_actions_that_record_no_new_request_create_no_store(
    offline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the first sync or request, the `dsr` actions but erase, access and rectify say
    there is no store yet and leave none behind. A store made by `dsr list` after a lost
    disk was "another store" to the backup, which `restore` then refused; one made by `dsr
    retry --all` from a timer at a mistaken store.path said "0 still open" every night."""
    from connector.crypto import Keyring
    from connector.receipts import ReceiptSigner

    store_path = _store_of(offline)
    signer = ReceiptSigner(tmp_path / "elsewhere.key", Keyring(bytes(range(32))))
    receipt = tmp_path / "receipt.json"
    receipt.write_text(signer.sign({"request_id": "er-20260105-0a1b2c3d"}))
    public = tmp_path / "public.pem"
    public.write_text(signer.public_key_pem())
    rid = "er-20260105-0a1b2c3d"
    assert main(["-c", str(offline), "dsr", "list"]) == 0
    assert "no requests (no store at" in capsys.readouterr().out
    assert main(["-c", str(offline), "dsr", "list", "--open", "--json"]) == 0
    assert _json(capsys) == []
    # A third party's check needs no store: the key given is all it reads.
    command = ["dsr", "verify-receipt", str(receipt), "--public-key", str(public), "--json"]
    assert main(["-c", str(offline), *command]) == 0
    assert _json(capsys) == {"valid": True, "problem": "", "request_id": rid}
    for action, code, said in (
        (["show", rid], 2, f"no request '{rid}' (no store at "),
        (["receipt", rid], 2, f"no request '{rid}' (no store at "),
        (["retry", rid], 2, f"no request '{rid}' (no store at "),
        (["extend", rid, "--months", "1", "--reason", "r"], 2, "(no store at "),
        (["exempt", rid, "--system", "crm", "--reason", "r"], 2, "(no store at "),
        (["release", rid, "--system", "crm"], 2, "(no store at "),
        (["readmit", "--email", "a@example.com", "--reason", "r"], 2, "nothing to readmit"),
        (["verify-receipt", str(receipt)], 2, "--public-key"),
        (["retry", "--all"], 1, "there is no store yet"),
        (["rotate-key"], 1, "there is no store yet"),
        (["public-key"], 1, "there is no store yet"),
        (["public-key", "--all", "--out", str(tmp_path / "keys.pem")], 1, "no store yet"),
    ):
        assert main(["-c", str(offline), "dsr", *action]) == code, action
        assert said in capsys.readouterr().err, action
        assert main(["-c", str(offline), "dsr", *action, "--json"]) == code, action
        answer = _json(capsys)
        assert isinstance(answer, dict) and said in answer["message"], action
        assert answer["error"] == ("usage" if code == 2 else "store"), action
    assert not (tmp_path / "keys.pem").exists()
    assert not store_path.exists()
    assert not list(store_path.parent.glob(store_path.name + "*"))


def test_a_request_refused_as_bad_usage_makes_no_store(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An erasure, access or correction whose address, number or field is refused (exit 2)
    is refused before the store is opened, as a mistyped `sync --flow` is: no store is made
    and bound to the key in use for a request that was never recorded."""
    store_path = _store_of(offline)
    for action, said in (
        (["erase", "--email", "not-an-address"], "--email is not an e-mail address"),
        (["erase", "--email", "a@example.com", "--phone", "xyz"], "--phone is not a phone"),
        (["access", "--email", "nobody", "--out", "bundle"], "--email is not an e-mail"),
        (["rectify", "--email", "a@example.com", "--set", "frist_name=A"], "unknown field"),
        (["rectify", "--email", "a@example.com"], "nothing to rectify"),
    ):
        assert main(["-c", str(offline), "dsr", *action]) == 2, action
        assert said in capsys.readouterr().err, action
        assert main(["-c", str(offline), "dsr", *action, "--json"]) == 2, action
        answer = _json(capsys)
        assert isinstance(answer, dict) and said in answer["message"], action
    assert not store_path.exists()
    assert not list(store_path.parent.glob(store_path.name + "*"))


def test_help_texts_say_what_the_commands_do() -> None:
    """The --help of demo, check, resync and sync --full matches what they do."""
    from connector.cli import _parser

    parser = _parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    choices = commands.choices

    def described(name: str) -> str:
        return " ".join((choices[name].description or "").split())

    assert "erasure + access + register" in described("demo")
    assert "compliance gaps" in described("check") and "exit 1" in described("check")
    assert "daemon" in described("resync")
    (full,) = [a for a in choices["sync"]._actions if a.dest == "full"]
    assert "refused before" in (full.help or "")


def _store_at(config: Path, path: str) -> Path:
    """Point the config's store.path at ``path`` (relative to the config)."""
    text = config.read_text()
    assert 'path = "klantsync.db"' in text
    config.write_text(text.replace('path = "klantsync.db"', f'path = "{path}"'))
    return config.parent / path


STORE_COMMANDS = [
    ["status"],
    ["sync"],
    ["sync", "--dry-run"],  # not compared with a throw-away store, as if there were none yet
    ["resync", "--system", "shop"],
    ["check"],
    ["audit", "verify"],
    ["dsr", "list"],
    ["keys", "show"],
]


@pytest.mark.parametrize("blocker", ["a file where its folder goes", "a folder"])
def test_a_store_path_that_cannot_hold_a_store_exits_2_naming_store_path(
    offline: Path, capsys: pytest.CaptureFixture[str], blocker: str
) -> None:
    """Every command that needs the store, `check` included, exits 2 naming the config file,
    store.path and what to do, with no traceback, when no store can be at store.path."""
    if blocker == "a folder":
        store = _store_at(offline, "state")
        store.mkdir()
        problem = "is a folder, not a file"
    else:
        (offline.parent / "state").write_text("not a folder")
        store = _store_at(offline, "state/klantsync.db")
        problem = f"{offline.parent / 'state'} is a file, not a folder"
    for command in STORE_COMMANDS:
        assert main(["-c", str(offline), *command]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"error: {offline}: store.path: {store}: {problem}"), (command, err)
        assert "point store.path at a file in a folder klantsync can create" in err
    assert main(["-c", str(offline), "status", "--json"]) == 2
    assert _json(capsys)["error"] == "config"  # type: ignore[index]


def _not_a_store(path: Path, kind: str) -> None:
    import sqlite3

    from tests.conftest import damaged_store

    if kind == "damaged":
        damaged_store(path)
        return
    if kind == "not SQLite":
        path.write_text("klantsync? no: a text file\n" * 50)
        return
    db = sqlite3.connect(path)
    if kind == "foreign":
        db.execute("CREATE TABLE cursors (x)")
    else:  # a schema version and nothing else
        db.execute("PRAGMA user_version=9")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        (
            "damaged",
            "the store is damaged (SQLite: database disk image is malformed); stop "
            "every klantsync on it and restore it from a backup",
        ),
        ("not SQLite", "not a klantsync store: the file is not an SQLite database"),
        ("foreign", "not a klantsync store: an SQLite database with tables of its own"),
        ("schema alone", "not a klantsync store: it says schema 9 but holds none of its tables"),
    ],
)
def test_a_store_file_that_is_damaged_or_not_a_store_exits_1_saying_so(
    offline: Path, capsys: pytest.CaptureFixture[str], kind: str, said: str
) -> None:
    """`status` and `sync` on a damaged or foreign store file exit 1 with a message naming
    the file and what to do, and no traceback (SQLite's own error escaped before)."""
    store = _store_of(offline)
    _not_a_store(store, kind)
    for command in (["status"], ["sync"]):
        assert main(["-c", str(offline), *command]) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"error: {store}: {said}"), (command, err)
        assert "Traceback" not in err
    assert main(["-c", str(offline), "status", "--json"]) == 1
    refused: Any = _json(capsys)
    assert refused["error"] == "store" and refused["message"].startswith(f"{store}: {said}")


def test_a_store_file_emptied_to_zero_bytes_is_refused_by_every_command_and_left_as_it_was(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store truncated to nothing was taken for a new store: `status` (the safe first
    look, which "creates none") migrated it in place and called it healthy, and every
    command after found an empty suppression list and audit trail. Each exits 1 saying the
    store is empty, and the file stays as it was for whoever restores it."""
    assert main(["-c", str(offline), "incident", "open", "--json", "--summary", "lost laptop"]) == 0
    store = _store_of(offline)
    store.write_bytes(b"")
    capsys.readouterr()
    for command in (["status"], ["audit", "verify"], ["sync"], ["dsr", "list"]):
        assert main(["-c", str(offline), *command]) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"error: {store}: the store is empty: damaged or truncated"), err
        assert store.stat().st_size == 0, command


def test_a_store_on_a_file_system_gone_read_only_exits_1_as_a_store_failure(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing disk remounted read-only by the kernel: the store and its lock files are
    there, and none can be written. Every command but `status` exited 2 saying the store's
    lock file "cannot be created" and to point store.path elsewhere: a config change for a
    failing disk. It is a store failure, exit 1, saying so. (Simulated at os.open: as root,
    chmod cannot.)"""
    import errno
    import os

    assert main(["-c", str(offline), "incident", "open", "--json", "--summary", "lost laptop"]) == 0
    store = _store_of(offline)
    real_open = os.open

    def read_only_file_system(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_file_system)
    capsys.readouterr()
    assert main(["-c", str(offline), "dsr", "list", "--json"]) == 1
    answer: Any = _json(capsys)
    assert answer["error"] == "store", answer
    assert answer["message"].startswith(
        f"{store}: the store's folder is on a read-only file system"
    )


def _fake_sync(seen: list[bool], store: Path) -> Any:
    """An Engine.sync that records whether the sync lock is held while it runs, and syncs
    nothing (the systems are a closed port)."""
    from connector.lock import sync_running

    async def sync(_engine: Engine, *_args: Any, **_kwargs: Any) -> list[Any]:
        seen.append(sync_running(store))
        return []

    return sync


def test_sync_holds_the_sync_lock_and_a_second_one_is_refused(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync` and an inline `resync` hold the store's sync lock while they run; with another
    sync or the daemon holding it they exit 1 saying who (pid) and what to do instead."""
    import os

    from connector.lock import sync_running, syncing

    store = _store_of(offline)
    seen: list[bool] = []
    monkeypatch.setattr(Engine, "sync", _fake_sync(seen, store))
    assert main(["-c", str(offline), "sync"]) == 0
    assert main(["-c", str(offline), "resync", "--system", "shop"]) == 0
    assert seen == [True, True]
    assert not sync_running(store)
    with syncing(store, "sync"):
        for command in (["sync"], ["resync", "--system", "shop"]):
            assert main(["-c", str(offline), *command]) == 1
            assert (
                f"error: {store}: another klantsync sync (pid {os.getpid()}) is syncing this "
                "store; run this again once it has finished"
            ) in capsys.readouterr().err
    with syncing(store, "daemon"):
        assert main(["-c", str(offline), "sync", "--json"]) == 1
        refused = _json(capsys)
    assert refused == {
        "error": "store",
        "message": f"{store}: the klantsync daemon (pid {os.getpid()}) runs on this store and "
        "syncs it; use `klantsync resync --system S` (or `--email E`), which hands the sync "
        "to it",
    }
    assert seen == [True, True]


def test_status_shows_a_run_nobody_holds_as_interrupted_and_the_next_sync_closes_it(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run recorded as running while no process holds the sync lock was interrupted
    (kill -9 mid-sync): `status` says so; the next sync records it as interrupted."""
    from connector.lock import syncing
    from connector.state import Store

    store_path = _store_of(offline)
    store = Store(store_path)
    try:
        run_id = store.start_run("shop-to-crm")  # what a killed sync leaves behind
    finally:
        store.close()

    def last_status() -> str:
        assert main(["-c", str(offline), "status", "--json"]) == 0
        status: Any = _json(capsys)
        return str(status["flows"]["shop-to-crm"]["last_status"])

    assert last_status() == "interrupted"
    assert main(["-c", str(offline), "status"]) == 0
    assert "flow shop-to-crm: interrupted (last success never); its process stopped" in (
        capsys.readouterr().out
    )
    with syncing(store_path, "sync"):  # a sync holds the lock: its run is in progress
        assert last_status() == "running"
    monkeypatch.setattr(Engine, "sync", _fake_sync([], store_path))
    assert main(["-c", str(offline), "sync"]) == 0
    with syncing(store_path, "sync"):
        assert last_status() == "interrupted"  # recorded so, lock or not
    store = Store(store_path)
    try:
        row = store.db.execute("SELECT status, finished_at FROM runs WHERE id=?", (run_id,))
        assert row.fetchone() == ("interrupted", None)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["demo", "--customers", "0"], "0 is not a whole number of at least 5"),
        (["demo", "--customers", "-5"], "-5 is not a whole number of at least 5"),
        (["demo", "--customers", "many"], "not a whole number of at least 5 ("),
        (["sandbox", "--customers", "-1"], "-1 is not a whole number of 0 or more"),
        (["-c", "x.toml", "dsr", "extend", "ER-1", "--months", "0", "--reason", "r"], "positive"),
        (["-c", "x.toml", "incident", "show", "-3"], "-3 is not a positive whole number"),
    ],
)
def test_integer_options_out_of_range_are_usage_errors(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A count or an id out of range is refused by the parser with exit 2 and a message on
    the option, before any command runs (demo --customers 0 was a TypeError)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and words in err and "Traceback" not in err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_address_given_where_a_number_belongs_is_not_repeated(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incident show jan@...` (an incident looked up by the person it concerns) is refused
    by the parser, which quoted the value back onto stderr and into the JSON answer. Errors
    carry no e-mail address or phone number: what is not a number is not repeated, and
    int()'s reading of "+31 6..." as one is not taken."""
    for value in ("jan.jansen@example.nl", "+31612345678"):
        with pytest.raises(SystemExit) as info:
            main(["-c", "x.toml", "incident", "show", value, *(["--json"] if as_json else [])])
        assert info.value.code == 2
        out, err = capsys.readouterr()
        assert value not in out + err
        assert "not a positive whole number, written in digits" in err
        if as_json:
            assert json.loads(out)["error"] == "usage"


@pytest.mark.parametrize(
    "argv",
    [
        ["dsr", "extend", "ER-1", "--months", "0", "--reason", "r", "--json"],
        ["incident", "show", "one", "--json"],
        ["dsr", "list", "--json", "--bogus"],
        ["incident", "show", "one", "--js"],  # argparse takes the abbreviation for --json
    ],
    ids=["months-0", "id-not-a-number", "unknown-option", "abbreviated"],
)
def test_a_bad_option_value_under_json_is_answered_as_json_on_stdout(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A script reading `... --json` finds the usage error argparse refuses on stdout, as
    the commands' own usage errors are answered there; stderr keeps argparse's text."""
    with pytest.raises(SystemExit) as info:
        main(["-c", "x.toml", *argv])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["error"] == "usage" and answer["message"].startswith("klantsync")
    assert "error: " in err and "usage: klantsync" in err


@pytest.mark.parametrize(
    "words",
    [
        # The address given twice, once without --email: "unrecognized arguments: <it>".
        ["--email", "x@example.nl", CANARY_EMAIL],
        # A phone typed with its spaces, unquoted: "+31" is --phone's, the rest unrecognized.
        ["--email", "x@example.nl", "--phone", "+31", "6", "8765", "4321"],
    ],
    ids=["address", "phone"],
)
def test_a_usage_error_masks_the_address_or_phone_it_quotes(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse quotes the words it could not place; on stderr and in the --json answer
    (which scripts log) a person's address or phone among them is masked, as log lines
    mask them."""
    with pytest.raises(SystemExit) as info:
        main(["-c", "x.toml", "dsr", "erase", "--json", *words])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["error"] == "usage" and "unrecognized arguments: word " in answer["message"]
    for text in (answer["message"], err):
        assert CANARY_EMAIL.split("@")[0] not in text and "8765" not in text, text
    assert CANARY_PHONE_E164.endswith("87654321")  # the number those words are


#: A master key typed on the command line by mistake (`keygen`'s output pasted in).
_TYPED_KEY = "Ap_6g-GDKczW7_WW6klxB44LxHKrOE_OENOaLPuEzlE="


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["keys", "rotate", "--to", "file:x", _TYPED_KEY], "unrecognized arguments: word 7 ("),
        (["keys", "rotate", "--to", "file:x", _TYPED_KEY[:43]], "unrecognized arguments: word 7"),
        (
            ["keys", "rotate", "--bogus=" + _TYPED_KEY, "--to", "file:x", "Jansen"],
            "unrecognized arguments: --bogus=<value>, word 8 (",
        ),
        ([_TYPED_KEY, "keys", "show"], "argument COMMAND: invalid choice ("),
        (["keys", _TYPED_KEY], "argument ACTION: invalid choice ("),
        (["register", "--lang", _TYPED_KEY], "argument --lang: invalid choice ("),
        (["keys", "show", "--json=" + _TYPED_KEY], "argument --json: takes no value ("),
        (["dsr", "list", "--o=" + _TYPED_KEY], "ambiguous option: --o=<value> could match"),
    ],
    ids=[
        "key",
        "unpadded-key",
        "option-and-word",
        "command",
        "action",
        "choice",
        "flag-value",
        "ambiguous-option",
    ],
)
def test_a_usage_error_names_the_word_or_option_it_refuses_without_repeating_what_was_given(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key typed as a stray argument (or a name, or any word) is not echoed by the usage
    error, on stderr or in the --json answer scripts log: it names the option, or the word's
    place on the command line, and still says what was wrong."""
    with pytest.raises(SystemExit) as info:
        main(["-c", "x.toml", *argv, "--json"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    message = json.loads(out)["message"]
    for text in (message, err):
        assert said in text and "usage: klantsync" not in message, text
        assert _TYPED_KEY[:20] not in text and _TYPED_KEY[-20:] not in text, text
        assert "Jansen" not in text, text


def test_a_bad_option_value_without_json_prints_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only --json asks for the answer on stdout; "--json" after "--" is no option."""
    for argv in (["incident", "show", "one"], ["incident", "show", "--", "--json"]):
        with pytest.raises(SystemExit) as info:
            main(["-c", "x.toml", *argv])
        assert info.value.code == 2
        assert capsys.readouterr().out == ""


def test_register_out_to_a_directory_exits_2(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`register --out DIR` names the directory and suggests a file in it; nothing written."""
    folder = offline.parent / "reports"
    folder.mkdir()
    assert main(["-c", str(offline), "register", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a directory" in err and str(folder / "verwerkingsregister.md") in err
    assert list(folder.iterdir()) == []


OUT_COMMANDS = {
    "register": ["register"],
    "incident-open": ["incident", "open", "--summary", "laptop lost"],
    "dsr-public-key": ["dsr", "public-key"],
}


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
@pytest.mark.parametrize(
    "target", ["master.key", "klantsync.toml", "klantsync.db", "klantsync.db-wal", "link"]
)
def test_an_out_file_the_deployment_needs_is_refused_and_left_as_it_is(
    offline: Path, capsys: pytest.CaptureFixture[str], command: str, target: str
) -> None:
    """`--out` naming the master key, the config, the store or its -wal (directly or
    through a link) is refused as `backup --out` refuses it (exit 2): a register written
    over the master key left a store nobody can open. `incident open` records nothing."""
    Store(_store_of(offline)).close()  # the store is made, as a first sync makes it
    assert main(["-c", str(offline), "dsr", "public-key"]) == 0  # with its receipt key
    out = offline.parent / target
    if target == "link":
        out.symlink_to(offline.parent / "master.key")
    # The -wal is there while the store is open (a daemon running); closed, it is not.
    before = out.read_bytes() if out.exists() else None
    capsys.readouterr()
    assert main(["-c", str(offline), *OUT_COMMANDS[command], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "name another file" in err, err
    assert (out.read_bytes() if out.exists() else None) == before
    if command == "incident-open":
        assert main(["-c", str(offline), "incident", "list", "--json"]) == 0
        assert _json(capsys) == []


def test_incident_draft_to_a_directory_records_no_incident(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incident open --out DIR` is refused before the incident is recorded."""
    args = ["-c", str(offline), "incident"]
    assert main([*args, "open", "--summary", "laptop lost", "--out", str(offline.parent)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main([*args, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def _raise_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("lookup failed for jan.jansen@example.nl\nsecond line")

    monkeypatch.setattr("connector.cli_status.status", broken)


def test_unexpected_exception_is_one_redacted_line_and_exit_1(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in a command prints its type and redacted text on one line, a hint how to see
    the traceback, and exits 1: no traceback, no e-mail address."""
    monkeypatch.delenv("KLANTSYNC_DEBUG", raising=False)
    _raise_inside(monkeypatch)
    assert main(["-c", str(offline), "status"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert (
        lines[0] == "klantsync: internal error: RuntimeError: lookup failed for <email> second line"
    )
    assert "KLANTSYNC_DEBUG=1" in lines[1] and len(lines) == 2
    assert "Traceback" not in err and "jan.jansen" not in err
    # With --json the answer is on stdout too, as for every other error.
    assert main(["-c", str(offline), "status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "error": "internal",
        "message": "RuntimeError: lookup failed for <email> second line",
    }


def test_a_dir_option_that_cannot_be_a_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """demo and sandbox --dir naming a file: exit 2 naming the option, not an internal error."""
    (tmp_path / "a-file").write_text("x")
    for command in (["demo"], ["sandbox"]):
        assert main([*command, "--dir", str(tmp_path / "a-file")]) == 2
        err = capsys.readouterr().err
        assert "--dir" in err and "a file is in the way" in err and "internal" not in err


def test_incident_open_with_an_out_that_cannot_be_written_records_nothing(
    offline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The draft's file is checked before the incident (and its 72-hour clock) is recorded."""
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "draft.txt"
    assert main(["-c", str(offline), "incident", "open", "--summary", "s", "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["-c", str(offline), "incident", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_unexpected_exception_shows_the_traceback_with_klantsync_debug(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With KLANTSYNC_DEBUG=1 the traceback is printed too (for a developer reproducing it)."""
    monkeypatch.setenv("KLANTSYNC_DEBUG", "1")
    _raise_inside(monkeypatch)
    assert main(["-c", str(offline), "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "klantsync: internal error" in err


def test_the_traceback_klantsync_debug_shows_is_redacted(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The traceback asked for is redacted as the log handler's is: the exception's text and
    that of the one it was raised from (a lookup's key, a URL's ?email=) hold an address,
    and stderr goes to a journal or a CI log."""
    monkeypatch.setenv("KLANTSYNC_DEBUG", "1")

    def broken(*_args: Any, **_kwargs: Any) -> int:
        try:
            raise KeyError(CANARY_EMAIL)
        except KeyError as exc:
            raise RuntimeError(f"no identity row for {CANARY_EMAIL}") from exc

    monkeypatch.setattr("connector.cli_status.status", broken)
    assert main(["-c", str(offline), "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: '<email>'" in err
    assert "internal error: RuntimeError: no identity row for <email>" in err
    assert CANARY_EMAIL.split("@")[0] not in err


def test_interrupt_still_exits_130(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C is not an internal error: it stays exit 130."""

    def interrupted(*_args: Any, **_kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("connector.cli_status.status", interrupted)
    assert main(["-c", str(offline), "status"]) == 130
    assert "internal error" not in capsys.readouterr().err


def test_any_command_interrupted_under_json_answers_json_on_stdout(
    offline: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A script reading a command's --json (not only a sync's) reads one answer when the
    command is stopped with Ctrl-C, as for every other way it ends, not an empty document."""

    def interrupted(*_args: Any, **_kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("connector.cli_status.status", interrupted)
    assert main(["-c", str(offline), "status", "--json"]) == 130
    out = capsys.readouterr()
    assert json.loads(out.out) == {"error": "interrupted", "message": "interrupted"}
    assert "interrupted" in out.err


def test_a_sync_interrupted_says_the_next_one_continues_and_answers_json_on_stdout(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-sync: exit 130 and a line saying what it queued is kept and the next sync
    goes on from there. Under --json the answer is JSON on stdout, as for every other way a
    sync ends: a script read an empty document."""

    async def sync(_engine: Engine, *_args: Any, **_kwargs: Any) -> list[Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "sync", sync)
    assert main(["-c", str(offline), "sync"]) == 130
    out = capsys.readouterr()
    assert out.out == ""
    assert "interrupted" in out.err and "the next sync continues where it stopped" in out.err
    assert main(["-c", str(offline), "sync", "--json"]) == 130
    out = capsys.readouterr()
    answer = json.loads(out.out)
    assert answer["error"] == "interrupted"
    assert "the next sync continues where it stopped" in answer["message"]
    assert main(["-c", str(offline), "sync", "--dry-run", "--json"]) == 130
    assert json.loads(capsys.readouterr().out) == {"error": "interrupted", "message": "interrupted"}


def test_a_full_disk_mid_sync_exits_1_saying_what_to_do_not_as_a_bug(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's "database or disk is full" during a sync is the store's trouble, said so with
    what to do (exit 1), not an internal error."""
    from tests.conftest import disk_full_error

    async def sync(_engine: Engine, *_args: Any, **_kwargs: Any) -> list[Any]:
        raise disk_full_error()

    monkeypatch.setattr(Engine, "sync", sync)
    assert main(["-c", str(offline), "sync"]) == 1
    err = capsys.readouterr().err
    store = _store_of(offline)
    assert err.startswith(f"error: {store}: the disk holding the store is full"), err
    assert "(the next sync resumes after the last page it queued)" in err
    assert "internal error" not in err
    assert main(["-c", str(offline), "sync", "--json"]) == 1
    assert _json(capsys)["error"] == "store"  # type: ignore[index]


@pytest.mark.parametrize(
    ("where", "what", "words", "said"),
    [
        ("cli_status", "status", ["status"], "it only reads the store, and changed nothing"),
        ("cli_status", "audit_chain", ["audit", "verify"], "nothing was changed"),
        ("cli_backup", "run", ["backup", "--out", "{dir}/b.db"], "no backup was written"),
        ("cli_backup", "run", ["restore", "--from", "{dir}/b.db"], "leaves the store as it was"),
        ("cli_keys", "run", ["keys", "show"], "it only reads the store"),
        ("cli_keys", "run", ["keys", "rotate", "--to", "env:K"], "under the master key it had"),
        ("cli_accountability", "run", ["retention", "run"], "what it deleted before is deleted"),
        ("cli_accountability", "run", ["incident", "list"], "it only reads the store"),
        (
            "cli_accountability",
            "run",
            ["incident", "open", "--summary", "lost laptop"],
            "the incident was not recorded",
        ),
        (
            "DsrService",
            "queue_erase",
            ["dsr", "erase", "--email", "a@example.nl"],
            "this erasure was not recorded and no system was asked to erase anything",
        ),
        (
            "DsrService",
            "access",
            ["dsr", "access", "--email", "a@example.nl", "--out", "{dir}/access"],
            "if dsr list --open shows the request, dsr retry ID finishes it",
        ),
        ("DsrService", "get", ["dsr", "show", "1"], "it only reads the store"),
    ],
)
def test_a_full_disk_says_what_the_command_it_stopped_left_not_what_a_sync_leaves(
    offline: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    what: str,
    words: list[str],
    said: str,
) -> None:
    """Every command's full disk ended "(the next sync resumes after the last page it
    queued)": wrong for an erasure, a backup or a restore, meaningless for `status`. Each
    says what is true for it, exit 1 as before."""
    import connector.cli_accountability
    import connector.cli_backup
    import connector.cli_keys
    import connector.cli_status
    import connector.dsr
    from tests.conftest import disk_full_error

    def on_a_full_disk(*_args: Any, **_kwargs: Any) -> Any:
        raise disk_full_error()

    owner = {
        "cli_status": connector.cli_status,
        "cli_backup": connector.cli_backup,
        "cli_keys": connector.cli_keys,
        "cli_accountability": connector.cli_accountability,
        "DsrService": connector.dsr.DsrService,
    }[where]
    monkeypatch.setattr(owner, what, on_a_full_disk)
    monkeypatch.setenv("K", generate_master_key())
    Store(_store_of(offline)).close()
    argv = ["-c", str(offline), *(w.replace("{dir}", str(tmp_path)) for w in words)]
    assert main(argv) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "the disk holding the store is full" in err, err
    assert said in err and "next sync" not in err, err


def test_a_full_disk_in_an_erasure_s_fan_out_names_the_request_and_dsr_retry(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the erasure is recorded (the person on the suppression list), a full disk in its
    fan-out says so, with the `dsr retry ID` that finishes it, not "the next sync"."""
    from connector.dsr import DsrService
    from tests.conftest import disk_full_error

    async def on_a_full_disk(*_args: Any, **_kwargs: Any) -> Any:
        raise disk_full_error()

    monkeypatch.setattr(DsrService, "retry", on_a_full_disk)
    assert main(["-c", str(offline), "dsr", "erase", "--email", "a@example.nl"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert main(["-c", str(offline), "dsr", "list", "--open", "--json"]) == 0
    (request,) = json.loads(capsys.readouterr().out)
    assert f"free space, then dsr retry {request['id']} finishes it" in err, err
    assert "the person is on the suppression list" in err and "next sync" not in err, err


def test_demo_refuses_a_dir_holding_an_earlier_demo_s_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --dir D` run again in D would use the old store and key against freshly seeded
    sandboxes (customers "unchanged", an erasure finding nobody) and call that the demo:
    refused, exit 2, naming --dir."""
    (tmp_path / "klantsync.db").write_bytes(b"")
    assert main(["demo", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--dir" in err and "holds an earlier demo's store" in err


def test_a_sandbox_port_in_use_is_said_at_once_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klantsync sandbox` with one of its ports taken (a sandbox left running) waited 20 s,
    then printed uvicorn's tracebacks and called it an internal error. The ports are bound
    before anything starts: the port in use is named, at once."""
    import socket

    from connector.errors import ConfigError

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        shop = WooCommerceSandbox()
        refused = pytest.raises(ConfigError, match=f"shop port: cannot listen on 127.0.0.1:{taken}")
        with refused, serve_tls({"shop": shop.app()}, tmp_path / "tls", ports={"shop": taken}):
            pass
    finally:
        holder.close()
    with serve_tls({"shop": WooCommerceSandbox().app()}, tmp_path / "tls2") as (_, apps):
        assert apps["shop"].url.startswith("https://127.0.0.1:")  # a free port still serves


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["audit", "verify", "--since", "2026-01-01"], "--since: applies to export only"),
        (["dsr", "retry", "er-20260101-00000000", "--all"], "a request id or --all, not both"),
    ],
)
def test_options_a_command_would_ignore_are_refused(
    offline: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    """`audit verify --since` verified the whole chain and said so as if it had verified
    the part asked for; `dsr retry ID --all` retried every open request, not ID. Both are
    usage errors (exit 2) now."""
    assert main(["-c", str(offline), *argv]) == 2
    assert words in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[2]


def _run_with_reader_gone(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run klantsync with a standard output whose reader has already gone (`... | head`
    that exited): every write to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "connector", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, **ENV, "PYTHONPATH": str(REPO)},
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "command",
    [
        ["sync", "--flow", "no-such-flow", "--json"],  # ConfigError, printed as JSON on stdout
        ["backup", "--out", "b.db", "--json"],  # StoreError (no store yet), printed as JSON
    ],
    ids=["config-error", "store-error"],
)
def test_an_error_reported_as_json_to_a_reader_that_went_away_exits_141(
    tmp_path: Path, command: list[str]
) -> None:
    """README: exit 141 "when the reader of standard output went away (`... | head`), as for
    any Unix tool", and a failure never dumps a traceback: an error's JSON answer too."""
    config = write_test_config(tmp_path)
    done = _run_with_reader_gone(["-c", str(config), *command], tmp_path)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    assert done.returncode == 141, (done.returncode, stderr)


def test_backup_with_a_store_path_no_store_can_be_at_is_bad_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: a store.path where no store can be (a file in the way of its folder) is bad
    configuration: every command that uses the store exits 2 naming the config file and
    `store.path`; `backup` too, not "there is no store yet"."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = write_test_config(tmp_path)
    config.write_text(config.read_text().replace("state/klantsync.db", "afile/klantsync.db"))
    (tmp_path / "afile").write_text("a file where the store's folder should be")
    code = main(["-c", str(config), "backup", "--out", str(tmp_path / "b.db")])
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "store.path" in err and str(config) in err, err


def test_commands_that_call_no_system_run_without_the_vendor_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README runs `backup`, `keys rotate` and `restore` as the service user
    (`ks() { sudo -u klantsync klantsync -c CONFIG "$@"; }`), while deploy/klantsync.service
    gives the vendor tokens to the daemon alone. A command that calls no vendor needs none:
    each refused to run (exit 2) for a token missing from the operator's environment. One
    that calls a vendor still names the missing one, as bad configuration."""
    config = write_test_config(tmp_path)  # credentials env:T_WC_KEY ...; none set here
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    Store(load_config(config, secrets=False).store_path).close()
    for command in (
        ["status"],
        ["keys", "show"],
        ["audit", "verify"],
        ["backup", "--out", str(tmp_path / "backup.db")],
        ["incident", "list"],
        ["dsr", "list", "--open"],
        ["dsr", "public-key"],
    ):
        code = main(["-c", str(config), *command, "--json"])
        answer = _json(capsys)
        assert code == 0 and "error" not in answer, (command, code, answer)
    for command in (
        ["sync"],
        ["check"],
        ["resync", "--system", "shop"],
        ["dsr", "erase", "--email", "iemand@voorbeeld.nl"],
    ):
        assert main(["-c", str(config), *command, "--json"]) == 2
        refused = _json(capsys)
        assert isinstance(refused, dict)
        assert refused["error"] == "config"
        assert refused["key"] == "systems.shop.credentials.consumer_key", refused


@pytest.mark.parametrize(
    ("daemon", "warned"),
    [
        ("", True),  # plain HTTP on loopback: behind a proxy, the URL seen is not the one signed
        ('[daemon]\npublic_url = "https://klantsync.voorbeeld.nl"', False),
    ],
)
def test_check_warns_when_hubspot_s_signed_url_is_not_the_one_the_daemon_sees(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    daemon: str,
    warned: bool,
) -> None:
    """HubSpot signs the https URL it called. A daemon on plain HTTP behind a TLS proxy sees
    http://127.0.0.1:...; without daemon.public_url every delivery failed its signature and
    nothing said why. `check` names the system and the key to set."""
    secret = tmp_path / "hook"
    secret.write_text("client-secret-of-the-app")
    secret.chmod(0o600)
    config = write_test_config(
        tmp_path, extra=daemon, crm_extra=f'[systems.crm.webhooks]\nsecret = "file:{secret}"'
    )
    main(["-c", str(config), "check", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    said = [w for w in warnings if w.startswith("systems.crm.webhooks:")]
    assert bool(said) is warned
    if warned:
        assert "daemon.public_url" in said[0]


@pytest.mark.parametrize(
    ("daemon", "warned"),
    [
        ('public_url = "https://klantsync.voorbeeld.nl:8787"', "daemon.public_url"),
        ('public_url = "https://klantsync.voorbeeld.nl"', None),
        ('public_url = "https://klantsync.voorbeeld.nl:8080"', None),
        ('listen = "0.0.0.0:8787"\n{tls}', "daemon.listen"),
        ('listen = "0.0.0.0:443"\n{tls}', None),
        ("", None),  # behind a proxy: the port the shop calls is not known here
    ],
)
def test_check_warns_when_woocommerce_would_be_given_a_webhook_port_wordpress_refuses(
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    daemon: str,
    warned: str | None,
) -> None:
    """WordPress posts a webhook only to ports 80, 443 and 8080 (wp_safe_remote_request):
    a daemon facing the shop on 8787 had its delivery URL refused when the webhook was
    saved ("A valid URL was not provided"), and every delivery of one saved before failed
    until WooCommerce disabled it, with nothing naming the port. `check` says so, naming
    the key that gives the port."""
    from connector.devtls import DevCA

    pair = DevCA(tmp_path / "ca").issue("klantsync", hosts=("klantsync.voorbeeld.nl",))
    tls = f'tls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"'
    secret = tmp_path / "hook"
    secret.write_text("webhook-secret-of-the-shop")
    secret.chmod(0o600)
    config = write_test_config(
        tmp_path,
        extra="[daemon]\n" + daemon.format(tls=tls),
        shop_extra=f'[systems.shop.webhooks]\nsecret = "file:{secret}"',
    )
    main(["-c", str(config), "check", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    said = [w for w in warnings if w.startswith("systems.shop.webhooks:")]
    if warned is None:
        assert said == []
    else:
        (warning,) = said
        assert warned in warning and "8787" in warning and "443" in warning


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_command_prints_a_name_beyond_ascii_in_utf8_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """A config in a folder named "klant-café": `check` under an ASCII locale ended as an
    internal error when it printed the path, and under Latin-1 printed it in Latin-1."""
    folder = tmp_path / "klant-café"
    folder.mkdir()
    path = example_config(folder, monkeypatch)
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding))
    assert main(["-c", str(path), "check"]) == 0
    sys.stdout.flush()
    assert f"{folder}" in raw.getvalue().decode("utf-8")


@pytest.mark.parametrize(
    ("role", "warned"),
    [('"customer"', False), ('["customer", "subscriber"]', False), ('"customers"', True)],
)
def test_check_warns_of_a_shop_role_wordpress_does_not_have_built_in(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], role: str, warned: bool
) -> None:
    """Any role name is taken (a plugin adds its own), so a typo ("customers") is no longer
    refused at load: a sync of one role met it as a bare 400, of several as nobody listed.
    `check` says so naming the key and the role, and loads the config (check --online asks
    the shop; this config's exit 1 is its compliance gaps)."""
    config = write_test_config(tmp_path, shop_extra=f"role = {role}")
    assert main(["-c", str(config), "check", "--json"]) != 2
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    said = [w for w in warnings if w.startswith("systems.shop.role:")]
    assert bool(said) is warned
    if warned:
        assert "'customers'" in said[0] and "check --online" in said[0]
