"""The deployment files keep the promises the README makes about them."""

from __future__ import annotations

import configparser
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
README = Path(__file__).resolve().parents[2] / "README.md"


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


def test_the_key_rotation_procedure_keeps_the_old_key_if_the_rotation_fails() -> None:
    """README, "Replacing the master key": the new key file is moved over the old one only
    once `keys rotate` succeeded. A rotation refused (the daemon did not stop, a backup has
    the store open) leaves the store under the old key, and that key must stay."""
    readme = README.read_text()
    opening = readme.index("```sh", readme.index("Replacing the master key"))
    block = readme[opening : readme.index("```\n", opening + 5)]
    lines = [line.split("#", 1)[0].rstrip() for line in block.splitlines()]
    rotate = next(i for i, line in enumerate(lines) if "keys rotate" in line)
    move = next(i for i, line in enumerate(lines) if " mv " in line and "master.key" in line)
    assert rotate < move
    between = "\n".join(lines[rotate : move + 1])
    assert "set -e" in block or "&&" in between or "|| exit" in between, between
