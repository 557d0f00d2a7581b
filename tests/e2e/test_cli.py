"""The commands end to end, over real loopback TLS against the sandboxes."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.cli import main
from connector.demo import run_demo, write_config
from connector.engine import Engine
from connector.sandboxkit import serve_tls


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


def test_status_shows_what_waits_for_each_system(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """With the CRM refusing the token the sync queues everyone; `status` says how many wait,
    and where."""
    config, _, crm = served
    crm.faults.fail_status, crm.faults.fail_next = 401, 1_000  # fatal: no retries, no waits
    assert main(["-c", str(config), "sync", "--json"]) == 1
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    status = _json(capsys)
    assert isinstance(status, dict)
    assert status["queued"] == {"crm": 120} and status["counts"]["outbox"] == 120
    assert main(["-c", str(config), "status"]) == 0
    assert "queued 120 (crm 120)" in capsys.readouterr().out
    crm.faults.fail_next = 0
    assert main(["-c", str(config), "sync", "--json"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "status", "--json"]) == 0
    assert _json(capsys)["queued"] == {}
    assert crm.contact_count() == 120


def test_dry_run_and_resync(
    served: tuple[Path, WooCommerceSandbox, HubSpotSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run sends nothing; a manual full resync of the shop then delivers everyone."""
    config, _, crm = served
    assert main(["-c", str(config), "sync", "--dry-run", "--json"]) == 0
    assert _json(capsys)[0]["destinations"]["crm"]["queued"] == 120
    assert crm.contact_count() == 0
    assert main(["-c", str(config), "resync", "--system", "shop", "--full", "--json"]) == 0
    capsys.readouterr()
    assert crm.contact_count() == 120


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


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo syncs to three systems, erases, answers access and writes the register."""
    assert main(["demo", "--customers", "60", "--dir", str(tmp_path), "--json"]) == 0
    result = _json(capsys)
    assert isinstance(result, dict)
    first = result["first_sync"]["destinations"]
    assert first["crm"]["created"] == 60 and first["deals"]["created"] == 60
    assert first["news"]["gated"] == 30  # only customers who opted in reach the newsletter
    assert result["second_sync"]["destinations"]["crm"]["queued"] == 0
    # Three phone numbers and one e-mail address changed: four updates, nobody added.
    assert result["after_changes"]["destinations"]["crm"]["updated"] == 4
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


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`keygen` prints 32 random bytes in urlsafe base64, different each time."""
    from connector.crypto import decode_master_key

    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(decode_master_key(first)) == 32 and first != second


def test_missing_config_flag_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A command that needs a config but got none exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["sync"])
    assert info.value.code == 2


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
    out = StringIO()
    print_report(Console(file=out, width=400), report)
    crm, news = (line for line in out.getvalue().splitlines() if "->" in line)
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
        if words[:3] == ["klantsync", "-c", "CONFIG"] and words[3] in ("keys", "dsr", "audit"):
            sub = commands.choices[words[3]]
            actions = next(a for a in sub._actions if a.choices)
            assert words[4] in actions.choices, line
