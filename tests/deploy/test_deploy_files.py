"""The deployment files keep the promises the README makes about them."""

from __future__ import annotations

import asyncio
import configparser
import fnmatch
import os
import re
import shutil
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.daemon import Daemon
from connector.devtls import DevCA
from connector.sandboxkit import free_port
from tests.conftest import write_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
README = REPO / "README.md"


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


def test_systemd_unit_gives_the_listeners_descriptors_for_a_flood_of_connections() -> None:
    """At systemd's default soft limit of 1024, about 17 new connections a second held for
    the 60 s a request may take to arrive leave the daemon no descriptor for its vendors."""
    unit = (DEPLOY / "klantsync.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("LimitNOFILE=")]
    assert int(line.split("=", 1)[1]) >= 65536


def test_systemd_unit_leaves_no_core_dump_of_the_daemon_s_memory() -> None:
    """A crash of the daemon (a C extension's segfault, a system call the filter refused,
    which kills with SIGSYS) was kept by systemd-coredump: the master key and the people it
    was working on, in clear, on disk for days. The unit allows no core file, and a call the
    filter refuses fails with an error instead of killing the daemon."""
    service = _unit()["Service"]
    assert service.get("LimitCORE") == "0"
    assert service.get("SystemCallErrorNumber") == "EPERM"


def test_systemd_unit_closes_the_state_directory_to_other_local_users() -> None:
    """systemd makes a StateDirectory 0755 unless told (UMask= does not apply to it): any
    local user could list the store's folder, where the README puts access bundles, whose
    folder an operator may name after the person. The container's state folder is 700 too."""
    service = _unit()["Service"]
    assert service["StateDirectory"] == "klantsync/%i"
    assert service.get("StateDirectoryMode") == "0700"
    assert re.search(r"chmod 700 /\S+/state\b", _run_instructions())


def test_container_image_is_slim_and_non_root() -> None:
    """The image builds from a slim base and runs as an unprivileged user."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"
    assert 'CMD ["run"]' in text and "STOPSIGNAL SIGTERM" in text


def test_systemd_unit_does_not_restart_a_daemon_stopped_by_bad_configuration() -> None:
    """Exit 2 is bad configuration (a secret missing from secrets.env, a store.path no store
    can be at): `Restart=on-failure` restarted the daemon every 5 s forever, each time to
    find the same. The unit stays failed, the message in the journal."""
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert "2" in service["RestartPreventExitStatus"].split()


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _run_instructions() -> str:
    """The Dockerfile's comment lines before its first FROM: how to build and run it."""
    text = _dockerfile()
    head = text[: text.index("\nFROM ")]
    return "\n".join(line.lstrip("# ") for line in head.splitlines() if line.startswith("#"))


def test_the_image_s_user_has_a_fixed_uid_the_run_instructions_give_the_state_folder_to() -> None:
    """The image's daemon runs as its own user and creates the store, its lock files and
    the receipt key in /state, which the run instructions bind-mount from a host folder. A
    bind mount keeps the host folder's owner (root, for one made with mkdir or by Docker),
    and the user was made with `useradd --system` with no fixed uid: the daemon could not
    create its store (exit 2, restarted in a loop), and the operator could not know which
    uid to give the folder to. The run instructions also pass the config's env: secrets."""
    text = _dockerfile().replace("\\\n", " ")
    header = _run_instructions().replace("\\\n", " ")
    sources = re.findall(r"-v\s+(\S+):/state\b", header)
    assert sources and all(source.startswith("/") for source in sources), header
    (useradd,) = [ln for ln in text.splitlines() if "useradd" in ln and "klantsync" in ln]
    uid = re.search(r"--uid\s+(\d+)", useradd)
    gid = re.search(r"groupadd[^&]*--gid\s+(\d+)", text)
    assert uid and gid, useradd
    assert f"{uid[1]}:{gid[1]}" in re.findall(r"chown\s+(\S+)\s+" + re.escape(sources[0]), header)
    assert re.search(r"docker run [^\n]*--env-file \S+", header), header


def test_the_run_instructions_give_the_container_a_read_only_root_and_no_privileges() -> None:
    """The systemd unit lets the daemon write its state directory alone, with no
    capabilities and no privileges to gain; the container ran with a writable root (what
    the daemon or anyone in it wrote there stayed in the container's layer, outside the
    state volume and its retention) and Docker's default capabilities. The daemon needs
    neither: /state and a /tmp in memory are all it writes."""
    header = _run_instructions().replace("\\\n", " ")
    (run,) = re.findall(r"docker run [^\n]*--env-file [^\n]*", header)
    assert "--read-only" in run.split(), run
    assert re.search(r"--tmpfs[ =]/tmp\b", run), run
    assert re.search(r"--cap-drop[ =]ALL\b", run), run
    assert re.search(r"--security-opt[ =]no-new-privileges\b", run), run


def _installed_as_the_image_installs(site: Path) -> None:
    """Lay out in ``site`` what `pip install .` in the Dockerfile's build stage puts in
    site-packages: of the folders that stage copies, the packages pyproject.toml's
    `packages.find` includes (namespace packages too, as setuptools finds them from
    pyproject.toml), each with its modules and the package data declared for it."""
    build = _dockerfile().split("\nFROM ")[1]
    copied = [
        word for line in re.findall(r"^COPY (.+)$", build, re.M) for word in line.split()[:-1]
    ]
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    include: list[str] = setuptools["packages"]["find"]["include"]
    data: dict[str, list[str]] = setuptools.get("package-data", {})
    for top in (REPO / name for name in copied):
        folders = [top, *(p for p in top.rglob("*") if p.is_dir())] if top.is_dir() else []
        for folder in folders:
            package = ".".join(folder.relative_to(REPO).parts)
            if "__pycache__" in package or not any(
                fnmatch.fnmatchcase(package, i) for i in include
            ):
                continue
            into = site / folder.relative_to(REPO)
            into.mkdir(parents=True, exist_ok=True)
            for pattern in ["*.py", *data.get(package, []), *data.get("*", [])]:
                for file in folder.glob(pattern):
                    shutil.copy(file, into / file.name)


def test_an_installed_klantsync_finds_the_mappings_it_ships(tmp_path: Path) -> None:
    """The image installs klantsync with `pip install .` (not editable): connector/ lands in
    site-packages. `klantsync demo` writes its config with the shipped mappings
    (connector.demo.REPO_MAPPINGS, mappings/ beside connector/), which the wheel did not
    carry: the image copied them elsewhere, where nothing looked, and `docker run klantsync
    demo` exited 2 (mapping not found). The wheel carries them beside connector/."""
    site = tmp_path / "site-packages"
    _installed_as_the_image_installs(site)
    assert (site / "connector" / "demo.py").is_file()
    found = subprocess.run(
        [
            sys.executable,
            "-I",  # neither the checkout (the working folder) nor PYTHONPATH on sys.path
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from connector.demo import REPO_MAPPINGS; print(REPO_MAPPINGS)",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    looked_in = Path(found)
    assert looked_in.is_relative_to(site), looked_in
    shipped = sorted(p.name for p in (REPO / "mappings").glob("*.toml"))
    assert shipped and sorted(p.name for p in looked_in.glob("*.toml")) == shipped


def _service_lines(name: str) -> list[str]:
    """Every value of ``name`` in the unit's [Service] section, as written (configparser
    keeps only the last of a setting given more than once, as LoadCredential= is)."""
    unit = (DEPLOY / "klantsync.service").read_text()
    service = unit[unit.index("[Service]") : unit.index("[Install]")]
    return [line.split("=", 1)[1] for line in service.splitlines() if line.startswith(f"{name}=")]


def _operator_helpers() -> tuple[str, str]:
    """The README's ``ks`` and ``kss`` shell functions, continuation lines joined."""
    readme = README.read_text().replace("\\\n", " ")
    (ks,) = set(re.findall(r"^ks\(\) \{.*?\}$", readme, re.M | re.S))
    (kss,) = re.findall(r"^kss\(\) \{.*?\}$", readme, re.M | re.S)
    return ks, kss


def test_systemd_unit_gives_the_daemon_its_secrets_as_credentials_not_its_environment() -> None:
    """The unit put every secret in the daemon's environment (EnvironmentFile=): any process
    of the service's user read it in /proc/<pid>/environ while the daemon ran, and whatever
    it started inherited it. The master key (the state directory's key file, where keygen
    and the rotation write it) and each file of a root-only folder are systemd credentials;
    the environment file is optional, kept for configs that name env: secrets."""
    service = _unit()["Service"]
    loaded = dict(line.split(":", 1) for line in _service_lines("LoadCredential"))
    state = f"/var/lib/{service['StateDirectory']}"
    assert loaded.get("master.key") == f"{state}/master.key", loaded
    assert loaded.get("secrets") == "/etc/klantsync/%i/secrets", loaded
    (environment,) = _service_lines("EnvironmentFile")
    assert environment.startswith("-"), environment
    # A credential file missing fails the start with 243/CREDENTIALS: found as it was 5 s
    # later, so not restarted in a loop.
    assert {"2", "243"} <= set(service["RestartPreventExitStatus"].split())
    # The names the README and the example config give are the ones the unit loads: the
    # key's, and a file of the folder's (systemd names those <ID>_<file>).
    shown = re.findall(
        r"\"credential:([a-z][A-Za-z0-9_.@-]*)\"",  # as written in TOML, not NAME
        README.read_text() + (REPO / "config.example.toml").read_text(),
    )
    assert "master.key" in shown
    assert all(name == "master.key" or name.startswith("secrets_") for name in shown), shown
    header = (DEPLOY / "klantsync.service").read_text().split("[Unit]")[0]
    assert '"credential:master.key"' in header, header


def test_the_operator_s_commands_read_the_secrets_the_unit_gives_the_daemon() -> None:
    """README: the operator runs the commands that call the systems (`dsr erase`, `sync`...)
    with the credentials and the environment file the unit gives the daemon, read by
    systemd as root (on no command line), as the service's user (`kss`); `ks`, for the
    commands that need the master key only, reads the key file the unit loads. Given only
    the environment file, `kss` ran without the credentials the config names."""
    unit = _unit()["Service"]
    ks, kss = _operator_helpers()
    for credential in _service_lines("LoadCredential"):
        assert f"--property=LoadCredential={credential.replace('%i', '<client>')} " in kss, kss
    (environment,) = _service_lines("EnvironmentFile")
    assert f"--property=EnvironmentFile={environment.replace('%i', '<client>')} " in kss, kss
    assert f"--uid={unit['User']}" in kss and "--pipe" in kss, kss
    master = dict(line.split(":", 1) for line in _service_lines("LoadCredential"))["master.key"]
    folder = master.replace("%i", "<client>").rsplit("/", 1)[0]
    assert f"sudo -u {unit['User']} env CREDENTIALS_DIRECTORY={folder} " in ks, ks


def test_the_upgrade_note_names_every_file_the_unit_will_not_start_without() -> None:
    """The unit's LoadCredential= lines fail its start (243/CREDENTIALS) when a file is
    missing, whatever the config's keys.source says. The README told an operator replacing
    an earlier unit that a config of env: secrets "only wants the folder made": a deployment
    whose master key was env:KLANTSYNC_MASTER_KEY, or a file of another name, did not
    start after the upgrade. The note names each file the unit loads."""
    readme = " ".join(README.read_text().split())
    start = readme.index("Before a unit installed by an earlier version")
    note = readme[start : readme.index("`env:` secrets still come from", start)]
    for credential in _service_lines("LoadCredential"):
        source = credential.split(":", 1)[1].replace("%i", "<client>")
        assert f"`{source}`" in note, (source, note)
    assert "env:KLANTSYNC_MASTER_KEY" in note, note


def test_a_command_run_as_ks_runs_it_reads_the_master_key_credential_from_the_state_folder(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config naming the unit's credentials, run by hand with CREDENTIALS_DIRECTORY at
    the state folder (`ks`): a command that calls no system reads the master key there,
    the systems' credentials left unread; without the variable it exits 2 naming
    keys.source and the file."""
    from connector.cli import main

    path = write_config(tmp_path)  # its master.key in tmp_path, as in the state directory
    text = path.read_text().replace('"file:master.key"', '"credential:master.key"')
    path.write_text(text.replace('"env:T_HS_TOKEN"', '"credential:secrets_crm.token"'))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert main(["-c", str(path), "status", "--json"]) == 0
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert main(["-c", str(path), "status", "--json"]) == 2


def _key_rotation_procedure() -> tuple[str, list[str]]:
    """README, "Replacing the master key": the procedure's shell block, and its lines
    without their comments."""
    readme = README.read_text()
    opening = readme.index("```sh", readme.index("Replacing the master key"))
    block = readme[opening : readme.index("```\n", opening + 5)]
    return block, [line.split("#", 1)[0].rstrip() for line in block.splitlines()]


def test_the_key_rotation_procedure_keeps_the_old_key_if_the_rotation_fails() -> None:
    """README, "Replacing the master key": the new key file is moved over the old one only
    once `keys rotate` succeeded. A rotation refused (the daemon did not stop, a backup has
    the store open) leaves the store under the old key, and that key must stay."""
    block, lines = _key_rotation_procedure()
    rotate = next(i for i, line in enumerate(lines) if "keys rotate" in line)
    move = next(i for i, line in enumerate(lines) if " mv " in line and "master.key" in line)
    assert rotate < move
    between = "\n".join(lines[rotate : move + 1])
    assert "set -e" in block or "&&" in between or "|| exit" in between, between


def test_the_key_rotation_procedure_run_again_never_makes_a_new_key_over_one_left() -> None:
    """A rotation killed past its commit leaves the store under `master.key.new`, not yet
    moved: the procedure run again must not write a fresh key over that file (the only copy
    of the key the store is then under), so `keygen` writes it only where there is none."""
    _block, lines = _key_rotation_procedure()
    (keygen,) = [line for line in lines if "keygen" in line]
    assert "master.key.new" in keygen and re.search(r"set -C|set -o noclobber", keygen), keygen


def test_the_key_rotation_procedure_keeps_the_old_key_for_the_backups_taken_before() -> None:
    """A backup taken before a rotation opens with the old key only, and moving the new key
    file over it deleted the only copy on the host. Once rotated, and before that move, the
    procedure keeps it as a retired key file of its own (a name no later rotation writes
    over); the README then says how a backup from before is restored with it, the rotation
    made again after, so the old key opens the live store no more."""
    block, lines = _key_rotation_procedure()
    rotate = next(i for i, line in enumerate(lines) if "keys rotate" in line)
    move = next(
        i for i, line in enumerate(lines) if re.search(r" mv master\.key\.new master", line)
    )
    (keep,) = [i for i, line in enumerate(lines) if "master.key.retired-" in line]
    assert rotate < keep < move and re.search(r"\b(cp|ln)\b.* master\.key ", lines[keep])
    assert "$(date +%Y%m%d-%H%M%S)" in lines[keep]  # two rotations a day keep two keys
    assert all(line.endswith("&&") for line in lines[rotate:move]), block
    readme = README.read_text()
    after = readme.index("```\n", readme.index(block) + len(block) - 3)
    opening = readme.index("```sh", after)
    restore = readme[opening : readme.index("```\n", opening + 5)]
    steps = [
        restore.index("master.key.retired-"),
        restore.index("restore --from"),
        restore.index("keys rotate --to"),
        restore.index("mv master.key.new master.key"),
    ]
    assert steps == sorted(steps), restore


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
