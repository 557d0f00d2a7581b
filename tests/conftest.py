"""Shared fixtures: sandboxes in-process, a config pointing at them, a runtime, canaries."""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.cli import CONFIG_VARIABLE
from connector.demo import REPO_MAPPINGS
from connector.loop import new_event_loop
from connector.runtime import Runtime, open_runtime
from connector.state import Store

T = TypeVar("T")

MASTER_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()

#: Values seeded by privacy tests; none may ever appear in logs, errors or the store file.
CANARY_EMAIL = "canary.klant+gdpr@voorbeeld-canary.nl"
CANARY_PHONE = "06 87654321"
CANARY_PHONE_E164 = "+31687654321"
CANARY_NAME = "Zwanettecanary"
CANARY_TOKEN = "pat-canary-token-5f1e2d3c"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async tests run on the loop the commands run on (:mod:`connector.loop`)."""
    return {"klantsync": new_event_loop}


def sqlite_steps(store: Store, work: Callable[[], Any]) -> tuple[int, Any]:
    """SQLite virtual machine steps (in thousands) that ``work()`` takes, and its result.

    A count of steps, unlike a time, says whether a query reads by key or reads everything,
    on any machine.
    """
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    store.db.set_progress_handler(count, 1000)
    try:
        result = work()
    finally:
        store.db.set_progress_handler(None, 0)
    return steps, result


def disk_full_error() -> sqlite3.OperationalError:
    """The error SQLite raises when the disk is full, raised for real: a database held to
    a few pages (``max_page_count``) runs out of room as a full disk does."""
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA max_page_count=3")
    db.execute("CREATE TABLE t (x BLOB)")
    try:
        for _ in range(100):
            db.execute("INSERT INTO t VALUES (zeroblob(4096))")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("max_page_count did not fill the database")


def damaged_store(path: Path) -> Path:
    """A store that opens but whose run history is a page of garbage (a torn write, a bad
    disk): SQLite finds out when it reads that page."""
    store = Store(path)
    for n in range(300):
        store.start_run(f"flow-{n}")
    (root,) = store.db.execute("SELECT rootpage FROM sqlite_master WHERE name='runs'").fetchone()
    (page_size,) = store.db.execute("PRAGMA page_size").fetchone()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    return path


async def no_sleep(_seconds: float) -> None:
    """Retries and pacing in tests never wait for real."""


class VirtualTime:
    """A clock and a sleep that moves it: pacing is exercised without waiting for real."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class SimulatedTime:
    """Virtual time for concurrent callers: ``sleep`` waits until the clock reaches its
    deadline, and the clock moves to the earliest deadline only once every task is waiting
    (so a caller that sleeps does not move time under the others' feet)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._order += 1
        heapq.heappush(self._waiting, (self.now + max(0.0, seconds), self._order, future))
        await future

    async def run(self, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        while not task.done():
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
                if task.done():
                    break
            if not task.done() and self._waiting:
                deadline, _, future = heapq.heappop(self._waiting)
                self.now = max(self.now, deadline)
                future.set_result(None)
        return task.result()


class FakeClock:
    """A clock that only moves when a test (or a fake sleep) moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_config(
    directory: Path,
    *,
    extra: str = "",
    crm_extra: str = "",
    shop_extra: str = "",
    shop_url: str = "https://shop.test",
    crm_url: str = "https://crm.test",
    shop_mapping: Path | None = None,
    crm_mapping: Path | None = None,
) -> Path:
    """A config for the in-process sandboxes; secrets come from env (see ``ENV``)."""
    (directory / "master.key").write_text(MASTER_KEY)
    (directory / "master.key").chmod(0o600)  # as an operator keeps it (check warns otherwise)
    path = directory / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "state/klantsync.db"

[keys]
source = "file:master.key"

[sync]
retry_attempts = 8
retry_base_seconds = 0

{extra}

[systems.shop]
adapter = "woocommerce"
base_url = "{shop_url}"
mapping = "{shop_mapping or REPO_MAPPINGS / "woocommerce.toml"}"
credentials = {{ consumer_key = "env:T_WC_KEY", consumer_secret = "env:T_WC_SECRET" }}
{shop_extra}

[systems.crm]
adapter = "hubspot"
base_url = "{crm_url}"
mapping = "{crm_mapping or REPO_MAPPINGS / "hubspot.toml"}"
credentials = {{ token = "env:T_HS_TOKEN" }}
{crm_extra}

[[flows]]
name = "shop-to-crm"
source = "shop"
destinations = ["crm"]
schedule = "every 15m"
"""
    )
    return path


ENV = {"T_WC_KEY": "ck_sandbox", "T_WC_SECRET": "cs_sandbox", "T_HS_TOKEN": "pat-sandbox"}


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Any:
    """Commands set up logging (connector/logs.py) on the root and ``klantsync`` loggers,
    writing to the stderr of the moment; each test leaves those loggers as it found them."""
    loggers = [logging.getLogger(), logging.getLogger("klantsync")]
    before = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in before:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(autouse=True, scope="session")
def _core_limit_as_it_was() -> Iterator[None]:
    """Commands run in the test process leave its core size limit as it was. ``main`` sets
    the hard limit to 0 for good, as a klantsync process must: run in-process, it did so for
    the whole test worker, and the test of it, which needs a limit to lower, was skipped in
    every worker that had run a command first. That test runs klantsync in a process of its
    own (tests/e2e/test_privacy.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("connector.cli.forbid_core_dumps", lambda: False)
        yield


@pytest.fixture(autouse=True)
def _lock_retries_without_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused store lock is tried again a few times, a hundredth of a second apart, in
    case the holder was only looking; tests that are refused on purpose need not wait."""
    monkeypatch.setattr("connector.lock._PAUSE_SECONDS", 0.0)


#: Hosts a test may connect to: the loopback servers tests start themselves.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test never reaches past loopback. A system a test's config names without a
    sandbox behind it went out to resolve its host (``crm.test``): the sync waited out
    the resolver and the test passed on a delivery that never landed. Every connection the
    product makes goes through :class:`connector.h1.H1Transport`; one to any other host
    fails the test (the product, which would retry a refused connection, is told so too).
    """
    from connector.h1 import H1Transport

    reached: list[str] = []
    connect = H1Transport._connect

    async def loopback_only(
        self: H1Transport,
        origin: tuple[bytes, bytes, int],
        timeout: float | None,
        ends: float | None,
        request: httpx.Request,
    ) -> Any:
        host = origin[1].decode("ascii")
        if host not in LOOPBACK_HOSTS:
            reached.append(host)
            raise httpx.ConnectError(f"tests do not reach {host}", request=request)
        return await connect(self, origin, timeout, ends, request)

    monkeypatch.setattr(H1Transport, "_connect", loopback_only)
    yield
    assert not reached, f"the test reached for hosts past loopback: {sorted(set(reached))}"


@pytest.fixture(autouse=True, scope="session")
def _no_config_from_the_environment() -> Iterator[None]:
    """A KLANTSYNC_CONFIG exported in the shell that runs the tests names no test's config:
    each test gives its own with -c, or none where it means none."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CONFIG_VARIABLE, raising=False)
        yield


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return dict(ENV)


@pytest.fixture
def shop() -> WooCommerceSandbox:
    return WooCommerceSandbox()


@pytest.fixture
def crm() -> HubSpotSandbox:
    return HubSpotSandbox(rate_limit=None)


@pytest.fixture
def config_path(tmp_path: Path, env: dict[str, str]) -> Path:
    return write_config(tmp_path)


RuntimeFactory = Callable[..., Any]


@pytest.fixture
def open_rt(shop: WooCommerceSandbox, crm: HubSpotSandbox, config_path: Path) -> Callable[..., Any]:
    """``async with open_rt() as rt``: a runtime wired to the in-process sandboxes."""

    def factory(
        path: Path | None = None,
        *,
        transports: dict[str, httpx.AsyncBaseTransport] | None = None,
        **kwargs: Any,
    ) -> Any:
        # A test's own systems (a second CRM, say) get theirs from ``transports``: none of
        # them may go to the network.
        transports = {
            "shop": httpx.ASGITransport(app=shop.app()),
            "crm": httpx.ASGITransport(app=crm.app()),
            **(transports or {}),
        }
        time = VirtualTime()
        return open_runtime(
            path or config_path, transports=transports, sleep=time.sleep, clock=time.clock, **kwargs
        )

    return factory


@pytest.fixture
async def rt(open_rt: Callable[..., Any]) -> AsyncIterator[Runtime]:
    async with open_rt() as runtime:
        yield runtime


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, open_rt: Callable[..., Any], config_path: Path
) -> Callable[..., tuple[int, str, str]]:
    """Run ``klantsync -c CONFIG dsr ...`` against the in-process sandboxes."""
    from connector import cli_dsr
    from connector.cli import main

    monkeypatch.setattr(cli_dsr, "open_runtime", lambda config, **kw: open_rt(config, **kw))

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = main(["-c", str(config_path), "dsr", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


REPO = Path(__file__).resolve().parents[1]


def example_config(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config.example.toml and its mappings copied into ``directory``, loadable as shipped.

    Every ``env:NAME`` the example references (outside comments) is set, so a system added to
    the example needs no change here.
    """
    import re
    import shutil

    from connector.crypto import generate_master_key

    text = (REPO / "config.example.toml").read_text()
    shutil.copy(REPO / "config.example.toml", directory / "config.toml")
    shutil.copytree(REPO / "mappings", directory / "mappings")
    (directory / "var/sandbox/tls").mkdir(parents=True)
    # Any PEM bundle will do (config loading reads it); certifi's is at hand, offline.
    import certifi

    shutil.copy(certifi.where(), directory / "var/sandbox/tls/ca.pem")
    (directory / "var/master.key").write_text(generate_master_key())
    (directory / "var/master.key").chmod(0o600)
    live = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    for name in re.findall(r'"env:([A-Z0-9_]+)"', live):
        monkeypatch.setenv(name, "x")
    return directory / "config.toml"


@contextmanager
def modes_before_chmod(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Under the usual umask (022), the mode each file had when ``Path.chmod`` narrowed it,
    by name: a file written under the umask and narrowed after was readable by others for
    that moment (and for good after a kill in between); one made owner-only is never
    narrowed, and is not here."""
    before: dict[str, int] = {}
    real_chmod = Path.chmod

    def spy(self: Path, mode: int, *args: Any, **kwargs: Any) -> None:
        if self.exists():
            before[self.name] = self.stat().st_mode & 0o777
        real_chmod(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "chmod", spy)
    previous = os.umask(0o022)
    try:
        yield before
    finally:
        os.umask(previous)
