"""The deployment files keep the promises the README makes about them."""

from __future__ import annotations

import asyncio
import configparser
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from connector.daemon import Daemon
from connector.devtls import DevCA
from connector.sandboxkit import free_port
from tests.conftest import write_config

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
    # The daemon exits within about 12 s of SIGTERM (the in-flight batch, then the listeners).
    assert int(service["TimeoutStopSec"]) > 12
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


def _healthcheck_command() -> str:
    """The shell-form command of the Dockerfile's HEALTHCHECK."""
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    return line.split(" CMD ", 1)[1]


async def _run_healthcheck(config: Path) -> tuple[int | None, str]:
    """The image's HEALTHCHECK, run by a shell with ``config`` as the mounted one."""
    command = _healthcheck_command().replace("/config/klantsync.toml", str(config))
    bindir = os.path.dirname(sys.executable)  # where the klantsync script is installed
    child_env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        env=child_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, (out + err).decode(errors="replace")


async def test_the_image_healthcheck_asks_the_tls_listener_the_image_requires(
    open_rt: Callable[..., Any], tmp_path: Path, env: dict[str, str]
) -> None:
    """To publish its port the container listens beyond loopback, which the daemon allows
    only with daemon.tls_cert/tls_key: its listener speaks TLS, with a certificate naming
    the public host. The HEALTHCHECK asked http://127.0.0.1:8787/healthz in clear, so the
    container was reported unhealthy for as long as it ran well; `klantsync health` asks
    where the config says, trusting the daemon's own certificate."""
    ca = DevCA(tmp_path / "ca")
    pair = ca.issue("klantsync", hosts=("klantsync.voorbeeld.nl",))  # the public name only
    port, admin = free_port(), free_port()
    config = write_config(
        tmp_path,
        extra=(
            f'[daemon]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
            f'tls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"\n'
        ),
    )
    async with open_rt(config) as rt:
        daemon = Daemon(rt)
        serving = asyncio.ensure_future(daemon.serve(install_signals=False))
        try:
            trust = ssl.create_default_context(cafile=str(ca.ca_path))
            trust.check_hostname = False  # asked on loopback, as the HEALTHCHECK asks
            async with httpx.AsyncClient(verify=trust) as client:
                alive = await client.get(f"https://127.0.0.1:{port}/healthz", timeout=30)
            code, said = await _run_healthcheck(config)
        finally:
            daemon.stop()
            await asyncio.wait_for(serving, 30)
    assert alive.status_code == 200  # the daemon serves /healthz over TLS
    assert code == 0, said
    stopped, said_after = await _run_healthcheck(config)
    assert stopped == 1 and f"https://127.0.0.1:{port}/healthz" in said_after


async def test_health_refuses_a_listener_serving_another_certificate(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The daemon's own certificate is the trust anchor: something else on the port, with a
    certificate of its own, is not taken for the daemon."""
    from connector.cli_health import probe
    from connector.config import load_config
    from connector.sandboxkit import serve_tls

    ca = DevCA(tmp_path / "ca")
    ours = ca.issue("klantsync", hosts=("klantsync.voorbeeld.nl",))
    with serve_tls({"other": _ok_app()}, tmp_path / "other") as (_other_ca, apps):
        port = apps["other"].port
        config = write_config(
            tmp_path,
            extra=(
                f'[daemon]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{free_port()}"\n'
                f'tls_cert = "{ours.cert_path}"\ntls_key = "{ours.key_path}"\n'
            ),
        )
        found = await asyncio.to_thread(probe, load_config(config), "/healthz")
    assert found.status is None and found.error is not None and found.error.startswith("TLS")


async def test_health_pins_the_daemon_s_own_certificate_not_its_chain_s_issuer(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """daemon.tls_cert is normally the full chain the listener serves (the daemon's own
    certificate, then its issuer's). A server with another certificate from the same issuer
    (for a public CA's intermediate: anyone's) is not taken for the daemon; the daemon
    serving that full chain is."""
    from connector.cli_health import probe
    from connector.config import load_config
    from connector.devtls import ServerCert
    from connector.sandboxkit import serve_tls

    ca = DevCA(tmp_path / "ca")  # stands in for the issuing (intermediate) CA
    ours = ca.issue("klantsync", hosts=("klantsync.voorbeeld.nl",))
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_bytes(ours.cert_path.read_bytes() + ca.ca_path.read_bytes())
    found = {}
    for name, served in (("other", None), ("daemon", ServerCert(fullchain, ours.key_path))):
        with serve_tls({name: _ok_app()}, tmp_path / name, cert=served, ca=ca) as (_ca, apps):
            config = write_config(
                tmp_path,
                extra=(
                    f'[daemon]\nlisten = "127.0.0.1:{apps[name].port}"\n'
                    f'admin_listen = "127.0.0.1:{free_port()}"\n'
                    f'tls_cert = "{fullchain}"\ntls_key = "{ours.key_path}"\n'
                ),
            )
            found[name] = await asyncio.to_thread(probe, load_config(config), "/healthz")
    assert found["other"].status is None, found
    assert (found["other"].error or "").startswith("TLS"), found
    assert found["daemon"].ok, found


def _ok_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/healthz", ok)])
