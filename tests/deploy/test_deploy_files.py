"""The deployment files keep the promises the README makes about them."""

from __future__ import annotations

import configparser
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "klantsync.service")
    return parser


def test_systemd_unit_runs_the_daemon_sandboxed_as_its_own_user() -> None:
    """The unit runs `klantsync run` as a dedicated user with strict sandboxing."""
    service = _unit()["Service"]
    assert service["ExecStart"].endswith(" run")
    assert service["User"] == "klantsync"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 10  # the daemon exits within 10 s of SIGTERM
    assert service["CapabilityBoundingSet"] == ""


def test_container_image_is_slim_and_non_root() -> None:
    """The image builds from a slim base and runs as an unprivileged user."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"
    assert 'CMD ["run"]' in text and "STOPSIGNAL SIGTERM" in text
