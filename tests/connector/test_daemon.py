"""The daemon in-process: webhooks, admin API, readiness, metrics, jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.executors.base import run_coroutine_job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import SecretStr

import adapters.woocommerce.adapter as woocommerce_adapter
import connector
from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit, jobs
from connector.admin import MAX_ADMIN_BODY_BYTES, build_admin_app
from connector.config import parse_schedule
from connector.daemon import (
    READY_STARTING,
    READY_SUCCEEDED,
    STORE_DAMAGED,
    STORE_GONE,
    UNREADY_FAILING,
    UNREADY_NO_STORE,
    UNREADY_NOT_RUN,
    UNREADY_STOPPING,
    UNREADY_WORKER_ENDED,
    Daemon,
    _trigger,
    first_review,
    missed_cron_time,
)
from connector.dsr_views import RequestView
from connector.errors import ConfigError, KlantsyncError
from connector.httpapp import build_public_app
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    CANARY_PHONE_E164,
    write_config,
)

ADMIN_TOKEN = "admin-token-for-tests"
#: A JSON body cut short after an e-mail address (the parser stops at its end).
TRUNCATED_JSON = f'{{"kind": "erase", "email": "{CANARY_EMAIL}"'.encode()
WC_SECRET = "wc-webhook-secret"
HS_SECRET = "hubspot-app-secret"


class Clock:
    """Wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def daemon_config(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("T_ADMIN", ADMIN_TOKEN)
    monkeypatch.setenv("T_WC_HOOK", WC_SECRET)
    return write_config(
        tmp_path,
        extra='[daemon]\nadmin_token = "env:T_ADMIN"',
        shop_extra='webhooks = { secret = "env:T_WC_HOOK" }',
    )


@pytest.fixture
async def daemon(open_rt: Callable[..., Any], daemon_config: Path) -> AsyncIterator[Daemon]:
    async with open_rt(daemon_config) as rt:
        yield Daemon(rt, clock=Clock())


class _FullDisk:
    """Stands in for the store's connection: every statement fails as on a full disk."""

    in_transaction = False

    def execute(self, *_args: Any, **_kwargs: Any) -> Any:
        from tests.conftest import disk_full_error

        raise disk_full_error()


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://daemon")


async def _drain(daemon: Daemon) -> list[jobs.Job]:
    """Run every queued job now (what the worker loop does), return them."""
    done = []
    while (job := jobs.claim_next(daemon.rt.store, daemon.rt.keyring)) is not None:
        result = await daemon.jobs.run_job(job)
        jobs.finish(daemon.rt.store, job.id, "done", result)
        done.append(job)
    return done


async def test_signed_webhook_syncs_the_changed_customer(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """A signed customer.updated delivery queues a job that updates that customer in the CRM."""
    shop.seed_synthetic(5, seed=31)
    await daemon.rt.engine.sync()
    customer = shop.store.get(2)
    assert customer is not None
    shop.touch(customer["email"], first_name="Webhooked")
    body = json.dumps(shop.record_for(customer["email"])).encode()
    async with _client(build_public_app(daemon)) as client:
        response = await client.post(
            "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
        )
    assert response.status_code == 200 and response.json()["queued"] == 1
    crm.log.clear()
    (job,) = await _drain(daemon)
    assert job.kind == "webhook"
    record = crm.record_for(customer["email"])
    assert record is not None and record["properties"]["firstname"] == "Webhooked"
    assert sum(e.records for e in crm.log.writes()) == 1


async def test_a_shop_synced_by_two_roles_sends_its_customers_and_subscribers_alone(
    open_rt: Callable[..., Any],
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """role = ["customer", "subscriber"]: a first sync over pages holding customers,
    subscribers and staff (a page of staff alone among them) sends the first two kinds,
    each once; a second sends nothing; a webhook about an administrator sends nobody, one
    about a subscriber sends the change."""
    monkeypatch.setattr(woocommerce_adapter, "PAGE_SIZE", 3)
    monkeypatch.setenv("T_WC_HOOK", WC_SECRET)
    roles = ["customer", "administrator", "subscriber", "shop_manager", "administrator"]
    roles += ["administrator", "subscriber", "customer", "administrator", "customer"]
    for n, role in enumerate(roles):
        shop.add_person(f"{role}{n}@voorbeeld.nl", f"Naam{n}", "Achternaam", role=role)
    kept = ("customer", "subscriber")
    synced = {f"{role}{n}@voorbeeld.nl" for n, role in enumerate(roles) if role in kept}
    path = write_config(
        tmp_path,
        shop_extra='role = ["customer", "subscriber"]\nwebhooks = { secret = "env:T_WC_HOOK" }',
    )
    async with open_rt(path) as rt:
        daemon = Daemon(rt, clock=Clock())
        (first,) = await rt.engine.sync()
        assert first.complete and first.pulled == len(synced)
        # Over pages of three (the shop's scan, not a lookup by e-mail): in one page of
        # everyone there would be no page of staff alone to pass over.
        scan = [e for e in shop.log.entries if "offset" in e.query]
        assert {e.query["per_page"] for e in scan} == {"3"}
        assert "3" in {e.query["offset"] for e in scan}  # ids 4 to 6: staff alone
        assert all(crm.holds(email) for email in synced)
        assert crm.contact_count() == len(synced)
        assert sum(e.records for e in crm.log.writes()) == len(synced)
        crm.log.clear()
        (again,) = await rt.engine.sync()
        assert crm.log.writes() == [] and again.destinations["crm"].unchanged == len(synced)
        admin = "administrator1@voorbeeld.nl"
        shop.touch(admin, first_name="Beheerder")
        shop.touch("subscriber2@voorbeeld.nl", first_name="Abonnee")
        async with _client(build_public_app(daemon)) as client:
            for email in (admin, "subscriber2@voorbeeld.nl"):
                body = json.dumps(shop.record_for(email)).encode()
                headers = shop.sign_webhook(body, WC_SECRET)
                response = await client.post("/webhooks/shop", content=body, headers=headers)
                assert response.status_code == 200
        await _drain(daemon)
    assert not crm.holds(admin)
    record = crm.record_for("subscriber2@voorbeeld.nl")
    assert record is not None and record["properties"]["firstname"] == "Abonnee"
    assert sum(e.records for e in crm.log.writes()) == 1


async def test_behind_a_proxy_signatures_are_checked_against_the_public_url(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    crm: HubSpotSandbox,
) -> None:
    """HubSpot signs the URL it called: with ``public_url`` set, that URL (path and query
    as received) is what the signature is checked against, not the listener's own."""
    public = "https://klantsync.example.nl"
    monkeypatch.setenv("T_HS_HOOK", "hs-app-secret")
    path = write_config(
        tmp_path,
        extra=f'[daemon]\npublic_url = "{public}"',
        crm_extra='webhooks = { secret = "env:T_HS_HOOK" }',
    )
    clock = Clock()
    now_ms = int(clock.now * 1000)
    target = "/webhooks/crm?portal=1"
    async with open_rt(path) as rt:
        daemon = Daemon(rt, clock=clock)
        async with _client(build_public_app(daemon)) as client:
            outcomes = []
            for signed_for in (public + target, "http://daemon" + target):
                body, headers = crm.signed_privacy_deletion(
                    "hs-app-secret", signed_for, 4321, now_ms
                )
                response = await client.post(target, content=body, headers=headers)
                outcomes.append(response.status_code)
    assert outcomes == [200, 401]


async def test_readyz_is_503_for_a_store_whose_tables_cannot_be_read(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's store check, SELECT 1, reads no page of the file: a store whose pages
    cannot be read (a damaged page, a failing disk) passed it, and the flows' reads after
    it failed the probe itself, a bare 500. The reads are now part of the check: 503."""
    import sqlite3

    def unreadable(_flow: str) -> str | None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(daemon.rt.store, "last_success", unreadable)
    async with _client(build_public_app(daemon)) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == "DatabaseError"


@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_readyz_is_not_ready_once_the_store_file_is_gone_from_its_path(
    daemon: Daemon, how: str
) -> None:
    """A store file removed (or moved away, or replaced) under the running daemon is not
    reachable: the daemon writes cursors, suppression entries and audit entries into a file
    that is gone when it stops, while every command beside it (`dsr erase`, `status`,
    `backup`) opens another store at the path. The probe ran `SELECT 1` on the open
    connection, which still answers, and said the store was ok."""
    path = daemon.rt.config.store_path
    assert path.exists()
    if how == "removed":
        path.unlink()
    else:
        other = path.with_name("other.db")
        other.write_bytes(path.read_bytes())
        other.replace(path)
    async with _client(build_public_app(daemon)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["store"] == STORE_GONE
    assert str(path) not in answer.text


async def test_readyz_is_503_while_the_store_refuses_writes_and_ready_once_it_takes_one(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A store that refuses every write (a full disk, a read-only file, a lock held) still
    answers the probe's reads: /readyz said ready while every delivery was answered 503.
    After a refused write it writes once itself, and is ready again once that succeeds."""
    body = json.dumps({"id": 3, "email": "someone@example.nl"}).encode()
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_public_app(daemon)) as client:
        before = await client.get("/readyz")
        daemon.rt.store.db.execute("PRAGMA query_only=1")  # the store may not be written
        hook = await client.post(
            "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
        )
        async with _client(build_admin_app(daemon)) as admin:
            resync = await admin.post("/admin/resync", headers=auth, json={"system": "shop"})
        refusing = await client.get("/readyz")
        daemon.rt.store.db.execute("PRAGMA query_only=0")  # writable again
        after = await client.get("/readyz")
    assert before.status_code == 200, before.json()  # a fresh daemon: ready
    assert (hook.status_code, resync.status_code) == (503, 503)  # deliveries are refused
    assert refusing.status_code == 503, refusing.json()
    assert refusing.json()["checks"]["store"] == "OperationalError"
    assert refusing.json()["checks"]["flow:shop-to-crm"]["reason"] == UNREADY_NO_STORE
    assert after.status_code == 200, after.json()


async def test_readyz_is_503_once_the_job_worker_finds_the_store_refusing_writes(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """The job worker meeting a store that refuses writes (the claim of a queued resync, a
    privacy webhook's erasure) counts for readiness as a delivery's or an admin call's
    failure: /readyz proves the store takes a write, and is 503 until it does. It said
    ready while the worker retried every 30 s; and the failure is logged once."""
    caplog.set_level(logging.ERROR, logger="klantsync")
    assert daemon.readiness()[0]  # a fresh daemon is ready
    daemon.jobs.queue("resync", {"system": "shop"})
    daemon.rt.store.db.execute("PRAGMA query_only=1")  # the store refuses writes
    worker = asyncio.ensure_future(daemon.jobs.run())
    try:
        for _ in range(500):
            if caplog.records:
                break
            await asyncio.sleep(0)  # a turn of the loop, no time passes
        ready, checks = daemon.readiness()
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(worker, 5)
        daemon.rt.store.db.execute("PRAGMA query_only=0")
    (failed,) = [r for r in caplog.records if r.getMessage() == "store failed"]
    assert getattr(failed, "during", None) == "job worker"
    assert not ready and checks["store"] == "OperationalError", checks
    daemon.stopping.clear()  # set above only to end the worker: a stopping daemon is not ready
    assert daemon.readiness()[0]  # writable again: ready once the probe's write succeeds


async def test_readyz_stays_503_for_a_damaged_store_whose_probe_write_passes(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """A torn page of the jobs table refuses every admin call (503, "store failed"). The
    probe's write after a failure, a rewrite of the schema version on page 1, which is
    intact, was taken for "the store takes writes again": /readyz answered 200 at once,
    while every call needing the damaged table still failed. The probe checks the pages."""
    async with open_rt(daemon_config):
        pass  # a store made and used
    path = daemon_config.parent / "state" / "klantsync.db"
    with closing(sqlite3.connect(path)) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='jobs'").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as file:  # a torn page
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with open_rt(daemon_config) as rt:
        daemon = Daemon(rt, clock=Clock())
        async with _client(build_admin_app(daemon)) as admin:
            refused = await admin.post("/admin/resync", headers=auth, json={"system": "shop"})
            first, checks = daemon.readiness()
            second, _ = daemon.readiness()
            again = await admin.post("/admin/resync", headers=auth, json={"system": "shop"})
    assert (refused.status_code, again.status_code) == (503, 503)  # damaged, and still
    assert not first and not second, checks
    assert checks["store"] == STORE_DAMAGED


async def test_readyz_stays_503_while_the_store_still_cannot_grow(daemon: Daemon) -> None:
    """A full disk (the store cannot grow by a page) refuses an admin call 503 and stays
    full. The probe rewrote the schema version on page 1, which needs no new page, and
    /readyz answered 200 while the next admin call was refused again. Its write now needs
    a page the store must grow by."""
    (pages,) = daemon.rt.store.db.execute("PRAGMA page_count").fetchone()
    daemon.rt.store.db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"system": "shop", "email": "a@example.nl"}
    async with _client(build_admin_app(daemon)) as admin:
        statuses = []
        for _ in range(200):  # until what the store had free is used up
            statuses.append(
                (await admin.post("/admin/resync", headers=auth, json=body)).status_code
            )
            if statuses[-1] == 503:
                break
        assert statuses[-1] == 503, statuses
        ready, checks = daemon.readiness()
        again = await admin.post("/admin/resync", headers=auth, json=body)
        daemon.rt.store.db.execute(f"PRAGMA max_page_count={pages + 1000}")  # space freed
        mended, _ = daemon.readiness()
    assert again.status_code == 503  # still full
    assert not ready and checks["store"] == "OperationalError", checks
    assert mended


async def test_a_webhook_or_admin_call_the_store_fails_under_is_503_try_again_later(
    daemon: Daemon,
    shop: WooCommerceSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk while a delivery or an admin call is queued: 503 with Retry-After (the
    vendor delivers again; nothing was queued), the log says what to do. Both were a bare
    500 with a traceback."""

    body = json.dumps({"id": 3, "email": "someone@example.nl"}).encode()
    caplog.set_level(logging.ERROR, logger="klantsync")
    with monkeypatch.context() as patched:
        patched.setattr(daemon.rt.store, "db", _FullDisk())
        async with _client(build_public_app(daemon)) as client:
            hook = await client.post(
                "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
            )
        async with _client(build_admin_app(daemon)) as client:
            admin = await client.post(
                "/admin/resync",
                json={"system": "shop"},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
    assert (hook.status_code, admin.status_code) == (503, 503)
    assert hook.headers["retry-after"] == admin.headers["retry-after"] == "60"
    assert hook.json() == {"error": "store unavailable; try again later"}
    failed = [r for r in caplog.records if r.getMessage() == "store failed"]
    assert [getattr(r, "during", None) for r in failed] == ["webhook", "admin POST /admin/resync"]
    assert all("the disk holding the store is full" in getattr(r, "error", "") for r in failed)
    # What is true for each, not what a sync leaves ("the next sync resumes...").
    hook_said, admin_said = (getattr(r, "error", "") for r in failed)
    assert "answered 503 and nothing of it was kept, so the vendor delivers it again" in hook_said
    assert "answered 503 and changed nothing: free space and call again" in admin_said
    assert not any("next sync" in getattr(r, "error", "") for r in failed)


async def _until_waiting(task: asyncio.Task[Any]) -> None:
    """Turns of the loop, enough for ``task`` to reach its first wait."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_webhook_waiting_for_another_process_s_lock_holds_no_probe_and_loses_nothing(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the store's write lock (an operator's sqlite3 shell, a
    backup): a delivery waits for it without holding the event loop, so /healthz and
    /readyz answer meanwhile, and it is queued once the lock is free. One the lock outlasts
    the bound is answered 503 with Retry-After, nothing of it kept, and taken when the
    vendor delivers it again. The delivery waited inside SQLite's busy timeout (5 s), on
    the loop: every request and probe waited with it, and the vendor gave up first."""
    from connector import httpapp

    shop.seed_synthetic(2, seed=34)
    first, second = (json.dumps(shop.store.get(n)).encode() for n in (1, 2))
    with closing(sqlite3.connect(daemon.rt.store.path)) as other:
        async with _client(build_public_app(daemon)) as client:
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(
                client.post(
                    "/webhooks/shop", content=first, headers=shop.sign_webhook(first, WC_SECRET)
                )
            )
            await _until_waiting(waiting)
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            assert not waiting.done()  # still waiting for the lock; the probes did not
            assert health.status_code == 200 and ready.json()["checks"]["store"] == "ok"
            other.rollback()
            taken = await waiting
            assert taken.status_code == 200 and taken.json()["queued"] == 1

            monkeypatch.setattr(httpapp, "WEBHOOK_STORE_WAIT_SECONDS", 0.05)
            headers = shop.sign_webhook(second, WC_SECRET)
            other.execute("BEGIN IMMEDIATE")
            refused = await client.post("/webhooks/shop", content=second, headers=headers)
            other.rollback()
            again = await client.post("/webhooks/shop", content=second, headers=headers)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
    assert again.status_code == 200 and again.json() == {
        "queued": 1,
        "duplicates": 0,
        "ignored": 0,
    }
    assert len(await _drain(daemon)) == 2


async def test_an_admin_call_waiting_for_another_process_s_lock_holds_no_probe(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure or a resync asked through the admin API while another process holds the
    store's write lock waits for it off the event loop: /healthz answers meanwhile, the
    erasure is recorded (and queued) once the lock is free, and a lock that outlasts the
    bound is a 503 with Retry-After that recorded nothing."""
    from connector import jobworker
    from connector.dsr import DsrService

    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with closing(sqlite3.connect(daemon.rt.store.path)) as other:
        async with (
            _client(build_admin_app(daemon)) as admin,
            _client(build_public_app(daemon)) as public,
        ):
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(
                admin.post(
                    "/admin/dsr", headers=auth, json={"kind": "erase", "email": CANARY_EMAIL}
                )
            )
            await _until_waiting(waiting)
            health = await public.get("/healthz")
            assert not waiting.done() and health.status_code == 200
            other.rollback()
            erasure = await waiting

            monkeypatch.setattr(jobworker, "QUEUE_WAIT_SECONDS", 0.05)
            other.execute("BEGIN IMMEDIATE")
            resync = await admin.post("/admin/resync", headers=auth, json={"system": "shop"})
            other.rollback()
    assert erasure.status_code == 202, erasure.text
    assert [view.kind for view in DsrService(daemon.rt).list()] == ["erase"]
    assert resync.status_code == 503 and resync.headers["retry-after"] == "60"
    assert [job.kind for job in jobs.recent(daemon.rt.store)] == ["dsr"]
    assert audit.latest(daemon.rt.store, audit.SYNC_MANUAL) is None


async def test_the_job_worker_waiting_for_another_process_s_lock_holds_no_probe(
    daemon: Daemon, shop: WooCommerceSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A resync waits in the queue while another process holds the store's write lock: the
    job worker's claim waits for it off the event loop, /healthz and /readyz answer
    meanwhile (the store is not failing: it is busy), and the resync runs once the lock is
    free, once. The claim waited on the loop inside SQLite's busy timeout (5 s), holding
    every probe, and then said the store failed, making /readyz 503."""
    caplog.set_level(logging.ERROR, logger="klantsync")
    shop.seed_synthetic(2, seed=35)
    job_id = daemon.jobs.queue("resync", {"system": "shop"})
    with closing(sqlite3.connect(daemon.rt.store.path)) as other:
        async with _client(build_public_app(daemon)) as client:
            other.execute("BEGIN IMMEDIATE")
            worker = asyncio.create_task(daemon.jobs.run())
            await _until_waiting(worker)
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            waited = getattr(jobs.get(daemon.rt.store, job_id), "status", None)
            other.rollback()
            while getattr(jobs.get(daemon.rt.store, job_id), "status", None) != "done":
                await asyncio.sleep(0)
            daemon.stopping.set()
            await asyncio.wait_for(worker, 30)
    assert health.status_code == 200 and ready.status_code == 200, ready.text
    assert ready.json()["checks"]["store"] == "ok" and waited == "queued"
    assert [r.getMessage() for r in caplog.records] == []
    assert daemon.rt.store.db.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


async def test_the_retention_sweep_waiting_for_another_process_s_lock_holds_no_probe(
    daemon: Daemon,
) -> None:
    """The scheduled retention sweep, with something past its period to purge, while
    another process holds the store's write lock: it waits for the lock off the event loop,
    /healthz and /readyz answering meanwhile, and purges once the lock is free, once: one
    ``retention.purged`` entry counting it. Each of its transactions waited inside SQLite's
    busy timeout (5 s) on the loop, every probe and webhook with it."""
    store = daemon.rt.store
    for n in range(3):
        store.db.execute(
            "INSERT INTO webhook_deliveries(system, delivery_id, received_at) "
            "VALUES ('shop', ?, '2001-01-01T00:00:00+00:00')",
            (f"old-{n}",),
        )
    with closing(sqlite3.connect(store.path)) as other:
        async with _client(build_public_app(daemon)) as public:
            other.execute("BEGIN IMMEDIATE")
            sweeping = asyncio.create_task(daemon.retention_sweep())
            await _until_waiting(sweeping)
            health = await public.get("/healthz")
            ready = await public.get("/readyz")
            assert not sweeping.done()  # still waiting for the lock; the probes did not
            assert health.status_code == 200 and ready.json()["checks"]["store"] == "ok"
            other.rollback()
            await sweeping
    purges = store.db.execute(
        "SELECT data FROM audit WHERE kind=?", (audit.RETENTION_PURGED,)
    ).fetchall()
    assert [json.loads(data)["webhook_ids"] for (data,) in purges] == [3]
    (left,) = store.db.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()
    assert left == 0


async def test_the_daily_review_waiting_for_another_process_s_lock_holds_no_probe(
    daemon: Daemon,
) -> None:
    """The daily compliance review while another process holds the store's write lock
    waits for it off the event loop before it records the check, /healthz answering
    meanwhile, and records it once the lock is free, once. It waited inside SQLite's busy
    timeout on the loop."""
    with closing(sqlite3.connect(daemon.rt.store.path)) as other:
        async with _client(build_public_app(daemon)) as public:
            other.execute("BEGIN IMMEDIATE")
            reviewing = asyncio.create_task(daemon.compliance_review())
            await _until_waiting(reviewing)
            health = await public.get("/healthz")
            assert not reviewing.done() and health.status_code == 200
            other.rollback()
            await reviewing
    (checks,) = daemon.rt.store.db.execute(
        "SELECT COUNT(*) FROM audit WHERE kind=?", (audit.CHECK_RESULT,)
    ).fetchone()
    assert checks == 1


async def test_bad_signature_is_401_and_queues_nothing(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A delivery whose signature does not match gets 401 and no job."""
    body = b'{"id": 1, "email": "x@example.nl"}'
    headers = shop.sign_webhook(body, "some-other-secret")
    async with _client(build_public_app(daemon)) as client:
        response = await client.post("/webhooks/shop", content=body, headers=headers)
    assert response.status_code == 401
    assert jobs.claim_next(daemon.rt.store, daemon.rt.keyring) is None


async def test_replayed_delivery_is_ignored(daemon: Daemon, shop: WooCommerceSandbox) -> None:
    """The same delivery id twice queues one job; the replay is counted as a duplicate."""
    shop.seed_synthetic(2, seed=32)
    body = json.dumps(shop.store.get(1)).encode()
    headers = shop.sign_webhook(body, WC_SECRET)
    async with _client(build_public_app(daemon)) as client:
        first = await client.post("/webhooks/shop", content=body, headers=headers)
        second = await client.post("/webhooks/shop", content=body, headers=headers)
    assert first.json()["queued"] == 1
    assert second.status_code == 200 and second.json() == {
        "queued": 0,
        "duplicates": 1,
        "ignored": 0,
    }


async def test_an_old_delivery_sent_again_under_a_new_id_writes_no_old_data_back(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """WooCommerce's signature covers the body, not the delivery id header: a signed
    delivery seen once (a proxy's log) could be sent again under another id. It was taken
    as new and its body written as it was, so the customer's old name overwrote the newer
    one everywhere. The replay key is now the body's hash, and a changed customer is
    fetched from the shop, never taken from the delivery."""
    shop.seed_synthetic(3, seed=41)
    await daemon.rt.engine.sync()
    customer = shop.store.get(2)
    assert customer is not None
    email = customer["email"]
    shop.touch(email, first_name="Oldname")
    old_body = json.dumps(shop.record_for(email)).encode()
    old_headers = shop.sign_webhook(old_body, WC_SECRET, second=1_800_000_000)
    async with _client(build_public_app(daemon)) as client:
        assert (await client.post("/webhooks/shop", content=old_body, headers=old_headers)).json()[
            "queued"
        ] == 1
        await _drain(daemon)
        shop.touch(email, first_name="Newname")
        new_body = json.dumps(shop.record_for(email)).encode()
        new_headers = shop.sign_webhook(new_body, WC_SECRET, second=1_800_000_100)
        await client.post("/webhooks/shop", content=new_body, headers=new_headers)
        await _drain(daemon)
        assert crm.record_for(email)["properties"]["firstname"] == "Newname"
        relabelled = {**old_headers, "X-WC-Webhook-Delivery-ID": "0" * 32}
        replay = await client.post("/webhooks/shop", content=old_body, headers=relabelled)
        assert replay.json() == {"queued": 0, "duplicates": 1, "ignored": 0}
        # A delivery overtaken by a later change (a vendor's retry, or out of order) is
        # queued, and finds the shop's current record.
        newer = {**new_headers, "X-WC-Webhook-Delivery-ID": "1" * 32}
        late = old_body.replace(b"Oldname", b"Oldname ")
        assert late != old_body
        await client.post(
            "/webhooks/shop", content=late, headers={**newer, **shop.sign_webhook(late, WC_SECRET)}
        )
        await _drain(daemon)
    assert crm.record_for(email)["properties"]["firstname"] == "Newname"


async def test_a_delivery_the_store_failed_to_queue_is_queued_when_delivered_again(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk filled after the delivery's id was noted and before its job was queued:
    503, and the vendor's next delivery of it is queued, not dropped as a duplicate. The
    id was kept apart from the job, so the retry was 'a duplicate' and the change (or a
    Shopify customers/redact) was lost."""
    from tests.conftest import disk_full_error

    shop.seed_synthetic(2, seed=33)
    body = json.dumps(shop.store.get(1)).encode()
    headers = shop.sign_webhook(body, WC_SECRET)

    def full(*_args: Any, **_kwargs: Any) -> int:
        raise disk_full_error()

    async with _client(build_public_app(daemon)) as client:
        with monkeypatch.context() as patched:
            patched.setattr(jobs, "enqueue", full)
            failed = await client.post("/webhooks/shop", content=body, headers=headers)
        again = await client.post("/webhooks/shop", content=body, headers=headers)
    assert failed.status_code == 503
    assert again.status_code == 200 and again.json()["queued"] == 1
    assert len(await _drain(daemon)) == 1


async def test_a_signed_body_nested_too_deep_to_read_is_acknowledged_and_the_next_is_taken(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A signed delivery nested deeper than the JSON parser goes (within the body's cap)
    made the parser raise RecursionError: answered 500, which WooCommerce delivers again
    until it disables the webhook. It is acknowledged as a body that is not JSON, nothing
    is queued, and a delivery after it is taken as ever."""
    shop.seed_synthetic(1, seed=36)
    good = json.dumps(shop.store.get(1)).encode()
    async with _client(build_public_app(daemon)) as client:
        answers = [
            await client.post(
                "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
            )
            for body in (b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"}" * 100_000)
        ]
        after = await client.post(
            "/webhooks/shop", content=good, headers=shop.sign_webhook(good, WC_SECRET)
        )
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"queued": 0, "duplicates": 0, "ignored": 1})
    ] * 2
    assert after.status_code == 200 and after.json()["queued"] == 1
    assert [job.kind for job in await _drain(daemon)] == ["webhook"]


async def test_oversized_body_and_unknown_system(daemon: Daemon) -> None:
    """Bodies past the cap get 413 unread; a system without webhooks gets 404."""
    async with _client(build_public_app(daemon)) as client:
        big = await client.post("/webhooks/shop", content=b"x" * 1_100_000)
        unknown = await client.post("/webhooks/crm", content=b"[]")
    assert big.status_code == 413 and unknown.status_code == 404


async def test_a_compressed_delivery_is_refused_415_naming_the_coding_not_401_as_forged(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """The listener does not decompress a body (nor would it know whether the vendor signed
    it compressed or not). A delivery sent gzipped failed its signature: 401 and a
    ``webhook.rejected`` "signature invalid or stale" entry, which sent the operator after
    the secret. It is refused 415 before its body is read, with ``Accept-Encoding:
    identity`` (RFC 9110 15.5.16), and nothing is queued; an uncompressed one is taken, also
    where a coding that packs nothing is named (a charset, by a client's mistake)."""
    import gzip

    shop.seed_synthetic(1, seed=35)
    body = json.dumps(shop.store.get(1)).encode()
    signed = shop.sign_webhook(body, WC_SECRET)
    async with _client(build_public_app(daemon)) as client:
        answers = [
            await client.post(
                "/webhooks/shop",
                content=body if coding in ("identity", "UTF-8") else gzip.compress(body),
                headers={**signed, "content-encoding": coding},
            )
            for coding in ("gzip", "GZip", "identity, br", "identity", "UTF-8")
        ]
    assert [a.status_code for a in answers] == [415, 415, 415, 200, 200]
    assert {a.headers.get("accept-encoding") for a in answers[:3]} == {"identity"}
    assert [a.json()["queued"] for a in answers[3:]] == [1, 0]  # the second, a replay
    assert not [e for e in audit.entries(daemon.rt.store) if e.kind == "webhook.rejected"]


async def test_a_delivery_its_sender_gives_up_on_mid_body_is_counted_not_an_internal_error(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A vendor that hung up part-way through a delivery's body (its own timeout, a line
    that dropped) made the app raise: logged as "Exception in ASGI application" at error
    level, as a bug is. Nothing of it was taken, so nothing is queued; it is counted as
    incomplete, and the vendor delivers it again."""
    shop.seed_synthetic(1, seed=34)
    body = json.dumps(shop.store.get(1)).encode()
    headers = {**shop.sign_webhook(body, WC_SECRET), "content-length": str(len(body))}
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/shop",
        "raw_path": b"/webhooks/shop",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("daemon", 80),
        "client": ("127.0.0.1", 50000),
    }
    arriving = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return arriving.pop(0)

    async def send(_message: dict[str, Any]) -> None:
        pass

    app = build_public_app(daemon)
    await app(scope, receive, send)
    assert jobs.claim_next(daemon.rt.store, daemon.rt.keyring) is None
    async with _client(app) as client:
        text = (await client.get("/metrics")).text
    assert 'klantsync_webhooks_total{outcome="incomplete",system="shop"} 1.0' in text


async def test_a_delivery_signed_with_the_previous_secret_is_taken_while_it_is_configured(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The webhook secret rotated: the new one is ``secret``, the old one
    ``previous_secret`` until the shop signs with the new one. A delivery signed with either
    is taken; one signed with neither is refused 401 and recorded, as before. Once
    ``previous_secret`` is removed, the old one verifies nothing. Neither is logged."""
    old, new = "oud-webhook-geheim", "nieuw-webhook-geheim"
    monkeypatch.setenv("T_WC_HOOK", new)
    (tmp_path / "old_hook").write_text(old)
    (tmp_path / "old_hook").chmod(0o600)
    rotating = 'webhooks = { secret = "env:T_WC_HOOK", previous_secret = "file:old_hook" }'
    body = json.dumps({"id": 9, "email": CANARY_EMAIL}).encode()
    caplog.set_level(logging.DEBUG)

    async def answers(path: Path) -> tuple[list[int], list[dict[str, Any]]]:
        async with open_rt(path) as rt, _client(build_public_app(Daemon(rt, clock=Clock()))) as c:
            codes = []
            for secret in (old, new, "geraden-geheim"):
                headers = shop.sign_webhook(body, secret)
                answer = await c.post("/webhooks/shop", content=body, headers=headers)
                codes.append(answer.status_code)
            rejected = [e.data for e in audit.entries(rt.store) if e.kind == "webhook.rejected"]
        return codes, rejected

    refused = [{"system": "shop", "reason": "signature invalid or stale"}]
    rotation = write_config(tmp_path, shop_extra=rotating)
    assert await answers(rotation) == ([200, 200, 401], refused)
    after = write_config(tmp_path, shop_extra='webhooks = { secret = "env:T_WC_HOOK" }')
    assert await answers(after) == ([401, 200, 401], refused * 2)
    assert old not in caplog.text and new not in caplog.text


async def test_a_delivery_to_no_webhook_endpoint_is_recorded_once_a_minute_at_most(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """A delivery to a name that is no configured system, or to a system that takes no
    webhooks, was answered 404 and left nothing in the trail: probing, or a vendor posting
    to the wrong URL, went unseen. It leaves ``webhook.rejected`` with the reason, as a
    refused signature does, at most one a minute per system and reason. Every name that is
    no configured system is recorded as "unknown", as one: the name comes from the URL of an
    unauthenticated request (an e-mail address, say), and a new name per request would
    otherwise write an entry per request."""
    clock = Clock()
    async with (
        open_rt(daemon_config) as rt,
        _client(build_public_app(Daemon(rt, clock=clock))) as c,
    ):

        async def refused(name: str) -> list[dict[str, Any]]:
            assert (await c.post(f"/webhooks/{name}", content=b"[]")).status_code == 404
            return [e.data for e in audit.entries(rt.store) if e.kind == "webhook.rejected"]

        unknown = {"system": "unknown", "reason": "unknown system"}
        assert await refused(CANARY_EMAIL) == [unknown]
        for name in ("nosuch", CANARY_NAME, "x" * 5000):
            clock.now += 10
            assert await refused(name) == [unknown]
        no_hooks = {"system": "crm", "reason": "no webhooks configured"}
        assert await refused("crm") == [unknown, no_hooks]
        clock.now += 30
        assert (await refused("nosuch"))[2:] == [{**unknown, "unrecorded": 3}]
        trail = json.dumps([vars(e) for e in audit.entries(rt.store)])
    assert CANARY_EMAIL not in trail and CANARY_NAME not in trail and "xxxx" not in trail


async def test_405_names_only_the_methods_a_webhook_endpoint_takes(daemon: Daemon) -> None:
    """A PUT to `/webhooks/shop` was answered 405 with `Allow: GET, HEAD, POST`, while a GET
    or HEAD there is itself refused (only a vendor that checks its URL with a GET, Mailchimp,
    is answered one). The Allow header of a 405 lists what the resource takes (RFC 9110
    15.5.6): told GET is allowed, a client got another 405."""
    async with _client(build_public_app(daemon)) as client:
        answers = [
            await client.request(method, "/webhooks/shop", content=b"{}")
            for method in ("PUT", "GET", "HEAD", "DELETE")
        ]
    assert [(a.status_code, a.headers["allow"]) for a in answers] == [(405, "POST")] * 4


async def test_no_path_is_redirected_to_another_behind_the_proxy(daemon: Daemon) -> None:
    """Behind the TLS-terminating proxy the listener sees http: "/webhooks/shop/?secret=..."
    was answered 307 to http://<host>/webhooks/shop?secret=..., sending the vendor (and the
    body, re-sent on a 307) to plain http. A path that is not served is a 404."""
    async with _client(build_public_app(daemon)) as client:
        slash = await client.post("/webhooks/shop/?secret=s3cr3t", content=b'{"id": 1}')
        health = await client.get("/healthz/")
    admin = build_admin_app(daemon)
    async with _client(admin) as client:
        status = await client.get(
            "/admin/status/", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    for response in (slash, health, status):
        assert response.status_code == 404 and "location" not in response.headers


async def test_a_hubspot_timestamp_no_clock_gives_is_refused_not_an_internal_error(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unauthenticated input: a timestamp header of 5000 digits passed isdecimal() and made
    int() raise, a 500 and an error in the log for anyone who sent it."""
    monkeypatch.setenv("T_HS_HOOK", "hs-app-secret")
    path = write_config(tmp_path, crm_extra='webhooks = { secret = "env:T_HS_HOOK" }')
    async with open_rt(path) as rt, _client(build_public_app(Daemon(rt, clock=Clock()))) as c:
        response = await c.post(
            "/webhooks/crm",
            content=b"[]",
            headers={
                "x-hubspot-signature-v3": "AAAA",
                "x-hubspot-request-timestamp": "1" * 5000,
            },
        )
    assert response.status_code == 401


async def test_a_delivery_refused_for_its_method_is_counted_as_every_other_refusal(
    daemon: Daemon,
) -> None:
    """Every other answer of a webhook endpoint (401, 404, 413, 415, an incomplete body) is
    counted in klantsync_webhooks; a 405 was not, so a vendor (or a Mailchimp URL check)
    sent to the wrong system's endpoint, or a flood of GETs, showed nowhere."""
    async with _client(build_public_app(daemon)) as client:
        for method in ("GET", "PUT"):
            await client.request(method, "/webhooks/shop", content=b"{}")
        await client.get(f"/webhooks/{CANARY_EMAIL}")
        text = (await client.get("/metrics")).text
    assert 'klantsync_webhooks_total{outcome="405",system="shop"} 2.0' in text
    assert 'klantsync_webhooks_total{outcome="405",system="unknown"} 1.0' in text
    assert CANARY_EMAIL not in text


async def test_webhook_metrics_label_only_configured_systems(daemon: Daemon) -> None:
    """A delivery to a name that is no configured system counts under "unknown": the name from
    the URL (here an e-mail address) never becomes a label in /metrics."""
    async with _client(build_public_app(daemon)) as client:
        for _ in range(2):
            await client.post(f"/webhooks/{CANARY_EMAIL}", content=b"[]")
        await client.post(f"/webhooks/{CANARY_NAME}", content=b"x" * 1_100_000)
        await client.post("/webhooks/crm", content=b"[]")
        text = (await client.get("/metrics")).text
    assert CANARY_EMAIL not in text and CANARY_NAME not in text and "@" not in text
    assert 'klantsync_webhooks_total{outcome="404",system="unknown"} 2.0' in text
    assert 'klantsync_webhooks_total{outcome="too_large",system="unknown"} 1.0' in text
    assert 'klantsync_webhooks_total{outcome="404",system="crm"} 1.0' in text


async def test_woocommerce_ping_gets_200(daemon: Daemon) -> None:
    """WooCommerce's unsigned form-encoded ping is acknowledged so the webhook activates."""
    async with _client(build_public_app(daemon)) as client:
        response = await client.post(
            "/webhooks/shop",
            content=b"webhook_id=12",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200 and response.json()["queued"] == 0


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {ADMIN_TOKEN}"])
async def test_admin_api_refuses_without_the_token(daemon: Daemon, header: str | None) -> None:
    """No token, a wrong token or another scheme: 401 on every admin route."""
    headers = {"authorization": header} if header else {}
    async with _client(build_admin_app(daemon)) as client:
        for method, path in (("GET", "/admin/status"), ("POST", "/admin/resync")):
            response = await client.request(method, path, headers=headers, json={"system": "shop"})
            assert response.status_code == 401


async def test_an_empty_admin_token_opens_nothing(daemon: Daemon) -> None:
    """A config refuses a blank token; one set empty in code still lets nobody in, not even
    a caller who sends an empty one."""
    object.__setattr__(daemon.rt.config.daemon, "admin_token", SecretStr(""))  # frozen model
    async with _client(build_admin_app(daemon)) as client:
        for header in ("Bearer ", "Bearer", ""):
            response = await client.get("/admin/status", headers={"authorization": header})
            assert response.status_code == 401
            assert response.json()["detail"] == "admin API disabled: no admin_token"


async def test_the_admin_api_refuses_before_reading_a_body(daemon: Daemon) -> None:
    """FastAPI reads and parses a body before its dependencies run: the token check was
    one, so any caller who reached the port had its whole body taken in (8 MiB here)
    before the 401. The token is now checked first, and a body read only up to 64 KiB."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 8 * MAX_ADMIN_BODY_BYTES * 16:
            sent += 65536
            yield b" " * 65536

    async with _client(build_admin_app(daemon)) as client:
        refused = await client.post(
            "/admin/dsr", content=body(), headers={"content-type": "application/json"}
        )
        assert refused.status_code == 401 and sent <= 65536
        assert refused.headers["www-authenticate"] == "Bearer"
        sent = 0
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
        large = await client.post("/admin/dsr", content=body(), headers=auth)
        assert large.status_code == 413 and sent <= 2 * MAX_ADMIN_BODY_BYTES
        declared = await client.post(
            "/admin/dsr", content=b"{}", headers={**auth, "content-length": "9999999"}
        )
        assert declared.status_code == 413
        # A body within bounds is read whole and reaches the route.
        ok = await client.post("/admin/resync", json={"system": "shop"}, headers=auth)
        assert ok.status_code == 202
        assert (await client.get("/admin/openapi.json")).status_code == 200  # no token


async def _erasure_left_open(daemon: Daemon, shop: WooCommerceSandbox) -> RequestView:
    """An erasure of the canary customer left open: the shop is down when it runs."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    shop.faults.down = True
    return await DsrService(daemon.rt).erase(CANARY_EMAIL)


async def test_an_admin_refusal_does_not_answer_back_what_was_sent(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A request's exemption naming a system it does not have was answered 409 with that
    name quoted, whatever it held (an e-mail address here), into proxies' logs."""
    view = await _erasure_left_open(daemon, shop)
    assert view.is_open
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        response = await client.post(
            f"/admin/dsr/{view.id}/exempt",
            headers=auth,
            json={"system": CANARY_EMAIL, "reason": "kept by law"},
        )
    assert response.status_code == 409
    assert CANARY_EMAIL not in response.text and "has no system of that name" in response.text


async def test_admin_resync_runs_and_status_shows_it(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """With the token a resync is queued (202), runs, and status lists the finished job."""
    shop.seed_synthetic(25, seed=33)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        queued = await client.post("/admin/resync", headers=auth, json={"system": "shop"})
        assert queued.status_code == 202
        await _drain(daemon)
        status = (await client.get("/admin/status", headers=auth)).json()
        job = (await client.get(f"/admin/jobs/{queued.json()['job_id']}", headers=auth)).json()
        missing = await client.post("/admin/resync", headers=auth, json={"system": "nope"})
    assert crm.contact_count() == 25
    assert job["status"] == "done"
    assert status["jobs"][0]["id"] == queued.json()["job_id"]
    assert status["flows"]["shop-to-crm"]["last_status"] == "ok"
    assert status["keys"]["bound"] and status["keys"]["keys_source_matches"]
    assert missing.status_code == 404


async def test_a_resync_of_one_address_that_could_not_be_delivered_says_it_failed(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """Run inline, `resync --system shop --email E` exits 1 when the person could not be
    delivered (the CRM down); handed to the daemon, the job says so too, as a resync of the
    whole system does (`"failed": true`), not "done" with nothing written and no more."""
    email = "resync.klant@voorbeeld.nl"
    shop.add_person(email, "Resync", "Klant")
    crm.faults.down = True
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        queued = await client.post(
            "/admin/resync", headers=auth, json={"system": "shop", "email": email}
        )
        assert queued.status_code == 202
        job = jobs.claim_next(daemon.rt.store, daemon.rt.keyring)
        assert job is not None and job.id == queued.json()["job_id"]
        await daemon.jobs._run_one(job)
        shown = (await client.get(f"/admin/jobs/{job.id}", headers=auth)).json()
    assert daemon.rt.store.outbox_count() >= 1  # the person was not delivered
    assert (shown["status"], shown["result"]) == ("done", {"written": 0, "failed": True})


async def test_a_resync_entry_says_whose_records_and_who_asked(
    daemon: Daemon, daemon_config: Path
) -> None:
    """``sync.manual`` names the person a resync of one address is for (their keyed id) and
    where it was asked (``cli``, ``admin``), as a data subject request's entries do: a
    resync of one person and of the whole shop, or one queued by ``klantsync resync`` and
    one through the admin API, left the same entry. Each entry is written with its job."""
    import argparse

    from connector.cli_sync import _enqueue_resync_shared
    from connector.config import load_config

    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        for body in ({"system": "shop", "email": CANARY_EMAIL.upper()}, {"system": "shop"}):
            assert (await client.post("/admin/resync", headers=auth, json=body)).status_code == 202
    args = argparse.Namespace(system="shop", full=True, email=CANARY_EMAIL)
    _enqueue_resync_shared(load_config(daemon_config), args)
    entries = [e for e in audit.entries(daemon.rt.store) if e.kind == audit.SYNC_MANUAL]
    person = daemon.rt.keyring.subject_id(CANARY_EMAIL)
    assert [(e.subject_id, e.data) for e in entries] == [
        (person, {"system": "shop", "full": False, "source": "admin"}),
        (None, {"system": "shop", "full": False, "source": "admin"}),
        (person, {"system": "shop", "full": True, "source": "cli"}),
    ]
    queued = daemon.rt.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert queued == len(entries)
    assert CANARY_EMAIL not in json.dumps([e.data for e in entries])


async def test_admin_extends_a_request_and_exempts_a_system_s_part(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """An erasure left open with the shop down: the admin API extends its deadline and
    exempts the shop's part, as the CLI does; a request it does not have is 404, a decision
    its state refuses 409 with why."""
    view = await _erasure_left_open(daemon, shop)
    assert view.is_open
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"/admin/dsr/{view.id}"
    async with _client(build_admin_app(daemon)) as client:
        extended = await client.post(
            f"{base}/extend", headers=auth, json={"months": 1, "reason": "many systems"}
        )
        exempted = await client.post(
            f"{base}/exempt", headers=auth, json={"system": "shop", "reason": "kept by law"}
        )
        again = await client.post(
            f"{base}/exempt", headers=auth, json={"system": "shop", "reason": "kept by law"}
        )
        missing = await client.post(
            "/admin/dsr/er-nope/exempt", headers=auth, json={"system": "shop", "reason": "x"}
        )
    assert extended.status_code == 200 and extended.json()["extension_reason"] == "many systems"
    assert exempted.status_code == 200 and exempted.json()["status"] == "completed"
    assert exempted.json()["systems"]["shop"]["status"] == "exempt"
    assert again.status_code == 409 and "completed" in again.json()["detail"]
    assert missing.status_code == 404


async def test_admin_releases_a_part_an_earlier_exemption_holds_as_the_cli_does(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A later erasure holds the shop's part an earlier one exempted; the admin API had
    `exempt` but no way to let the erasure reach the shop. It releases the part as `dsr
    release` does: 409 for a part not on hold, 404 for no such request."""
    from connector.dsr import DsrService

    first = await _erasure_left_open(daemon, shop)
    DsrService(daemon.rt).exempt(first.id, "shop", "legal claim")
    shop.faults.down = False
    second = await DsrService(daemon.rt).erase(CANARY_EMAIL)
    assert second.is_open and "on hold" in second.as_dict()["systems"]["shop"]["detail"]
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"/admin/dsr/{second.id}/release"
    async with _client(build_admin_app(daemon)) as client:
        released = await client.post(base, headers=auth, json={"system": "shop"})
        again = await client.post(base, headers=auth, json={"system": "shop"})
        missing = await client.post(
            "/admin/dsr/er-nope/release", headers=auth, json={"system": "shop"}
        )
    assert released.status_code == 200, released.text
    shop_part = released.json()["systems"]["shop"]
    assert shop_part["status"] == "pending" and "on hold" not in (shop_part["detail"] or "")
    assert again.status_code == 409 and "not on hold" in again.json()["detail"]
    assert missing.status_code == 404
    assert shop.holds(CANARY_EMAIL), "released, not yet run: the next retry erases there"


async def _decided_once_the_lock_is_free(
    daemon: Daemon, path: str, body: dict[str, Any]
) -> httpx.Response:
    """An operator's decision asked through the admin API while another process holds the
    store's write lock: it waits, /healthz answers meanwhile, and it is made once the lock
    is free (its answer)."""
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with closing(sqlite3.connect(daemon.rt.store.path)) as other:
        async with (
            _client(build_admin_app(daemon)) as admin,
            _client(build_public_app(daemon)) as public,
        ):
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(admin.post(path, headers=auth, json=body))
            await _until_waiting(waiting)
            health = await public.get("/healthz")
            assert not waiting.done() and health.status_code == 200
            other.rollback()
            return await waiting


async def test_admin_decisions_waiting_for_another_process_s_lock_hold_no_probe(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """An extension, an exemption (which completes the request) and a release asked while
    another process holds the store's write lock wait for it off the event loop, /healthz
    answering meanwhile, and each is made once the lock is free, once: one entry each in
    the trail, one receipt. They waited inside SQLite's busy timeout on the loop, every
    probe and webhook with them."""
    from connector.dsr import DsrService

    first = await _erasure_left_open(daemon, shop)
    base = f"/admin/dsr/{first.id}"
    body = {"months": 1, "reason": "many systems"}
    extended = await _decided_once_the_lock_is_free(daemon, f"{base}/extend", body)
    body = {"system": "shop", "reason": "legal claim"}
    exempted = await _decided_once_the_lock_is_free(daemon, f"{base}/exempt", body)
    shop.faults.down = False
    second = await DsrService(daemon.rt).erase(CANARY_EMAIL)
    path = f"/admin/dsr/{second.id}/release"
    released = await _decided_once_the_lock_is_free(daemon, path, {"system": "shop"})
    assert extended.status_code == 200 and extended.json()["extension_reason"] == "many systems"
    assert exempted.status_code == 200 and exempted.json()["status"] == "completed"
    assert released.status_code == 200, released.text
    assert released.json()["systems"]["shop"]["status"] == "pending"
    kinds = [e.kind for e in audit.entries(daemon.rt.store)]
    assert [kinds.count(k) for k in ("dsr.extended", "dsr.exempted", "dsr.released")] == [1] * 3
    completed = [e for e in audit.entries(daemon.rt.store) if e.kind == "dsr.completed"]
    assert [e.data["request"] for e in completed] == [first.id]


async def test_an_exemption_refused_by_the_lock_at_its_completion_is_made_again_whole(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock refused the completion an exemption brings, and the exemption was made
    again (as the daemon makes a write the lock refused): it had committed the part exempt
    before, so made again it was refused as settled already (409), and the request stayed
    open with every part settled. The exemption and its completion are one transaction."""
    from connector.dsr import DsrService
    from connector.storeturn import write_in_turn

    view = await _erasure_left_open(daemon, shop)
    service = DsrService(daemon.rt)
    completing = service._complete_if_done
    refusals = [1]

    def refused_once(row: Any) -> None:
        if refusals:
            refusals.pop()
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # another process's lock
            raise busy
        completing(row)

    monkeypatch.setattr(service, "_complete_if_done", refused_once)
    exempted = await write_in_turn(
        daemon.rt.store, lambda: service.exempt(view.id, "shop", "legal claim"), within=5
    )
    assert exempted.status == "completed" and refusals == []
    kinds = [e.kind for e in audit.entries(daemon.rt.store)]
    assert (kinds.count("dsr.exempted"), kinds.count("dsr.completed")) == (1, 1)


async def test_a_blank_reason_is_refused_as_a_bad_field_not_as_the_request_s_state(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """An extension or exemption whose reason is only blanks was answered 409, which says
    the request's state refuses it, naming the CLI's `--reason`. What is wrong is the field:
    422 naming `reason`, and the request is left as it was."""
    view = await _erasure_left_open(daemon, shop)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"/admin/dsr/{view.id}"
    async with _client(build_admin_app(daemon)) as client:
        extended = await client.post(
            f"{base}/extend", headers=auth, json={"months": 1, "reason": " \n\t "}
        )
        exempted = await client.post(
            f"{base}/exempt", headers=auth, json={"system": "shop", "reason": "   "}
        )
    for answer in (extended, exempted):
        assert answer.status_code == 422, answer.text
        assert [(e["loc"], e["type"]) for e in answer.json()["detail"]] == [
            (["body", "reason"], "reason_blank")
        ]
        assert "--reason" not in answer.text
    from connector.dsr import DsrService

    after = DsrService(daemon.rt).get(view.id)
    assert after is not None and after.is_open and after.extension_reason is None
    assert after.system("shop").status != "exempt"


def _synchronous_in_effect(statements: list[str], upto: int) -> str:
    """The ``PRAGMA synchronous`` level in effect at statement ``upto`` of a trace (the store
    opens with NORMAL)."""
    level = "NORMAL"
    for text in statements[:upto]:
        found = re.search(r"PRAGMA\s+synchronous\s*=\s*(\w+)", text, re.I)
        if found:
            level = found.group(1).upper()
    return level


async def test_a_request_asked_through_the_admin_api_is_on_disk_before_its_202(
    daemon: Daemon,
) -> None:
    """`POST /admin/dsr` answers 202 to an operator who will not ask again, as a vendor's
    data subject request is answered 200: the job was committed under synchronous=NORMAL,
    which a power cut after the 202 loses (the person never erased, and nobody knows). It
    is synced to disk (FULL) before the answer, as the webhook's request is."""
    statements: list[str] = []
    daemon.rt.store.db.set_trace_callback(statements.append)
    try:
        async with _client(build_admin_app(daemon)) as client:
            answer = await client.post(
                "/admin/dsr",
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                json={"kind": "erase", "email": CANARY_EMAIL},
            )
    finally:
        daemon.rt.store.db.set_trace_callback(None)
    assert answer.status_code == 202
    commit = next(
        i
        for i, text in enumerate(statements)
        if text.strip().upper() == "COMMIT" and any("INSERT INTO jobs" in s for s in statements[:i])
    )
    assert _synchronous_in_effect(statements, commit) in ("FULL", "EXTRA")
    assert _synchronous_in_effect(statements, len(statements)) == "NORMAL"  # and back after


async def test_an_erasure_asked_through_the_admin_api_stops_every_sync_before_its_job_runs(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The admin API's erasure was recorded, and the person suppressed, only once the job
    worker reached its job; a scheduled run before that (jobs ahead of it, a long resync)
    sent the person on. It is recorded at the 202, as `dsr erase` records it before its
    fan-out: the run sends them nothing, and the job carries out that one request."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    async with _client(build_admin_app(daemon)) as client:
        answer = await client.post(
            "/admin/dsr",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"kind": "erase", "email": CANARY_EMAIL},
        )
    assert answer.status_code == 202
    report = await daemon.run_flow("shop-to-crm")  # the scheduled run, before the job
    assert report is not None and report.suppressed == 1
    assert crm.record_for(CANARY_EMAIL) is None
    (job,) = await _drain(daemon)
    assert job.id == answer.json()["job_id"] and job.params is not None
    assert CANARY_EMAIL not in json.dumps(job.params)  # the request's manifest holds it
    (request,) = DsrService(daemon.rt).list()
    assert request.status == "completed" and request.source == "admin"
    assert not shop.holds(CANARY_EMAIL)


def _put_requests(daemon: Daemon, rows: list[tuple[str, str, str, str]]) -> None:
    """Requests as (id, received_at, deadline, status), each of two systems."""
    with daemon.rt.store.transaction() as db:
        db.executemany(
            "INSERT INTO dsr_requests(id, kind, subject_id, received_at, deadline, status, "
            "source) VALUES (?,'erase',?,?,?,?,'cli')",
            [(rid, f"{n:032x}", got, due, state) for n, (rid, got, due, state) in enumerate(rows)],
        )
        db.executemany(
            "INSERT INTO dsr_systems(request_id, system, status, updated_at) VALUES (?,?,?,?)",
            [(rid, name, "pending", got) for rid, got, _, _ in rows for name in ("crm", "shop")],
        )


def _pages_of(answer: httpx.Response) -> str | None:
    """The next page's path and query from an answer's ``Link`` header, if any."""
    found = re.fullmatch(r'<([^>]+)>; rel="next"', answer.headers.get("link", ""))
    return None if found is None else found.group(1)


async def test_the_request_listing_pages_list_each_request_once_whatever_is_added_between(
    daemon: Daemon,
) -> None:
    """`GET /admin/dsr?limit=N` lists N requests, oldest first, and names the next page in a
    `Link` header (relative: behind a proxy the listener's own scheme is not the caller's);
    followed to the end, every request is listed once, requests received at the same second
    included, and one added between pages repeats none and pushes none off. Without
    `limit` the answer is the whole listing, as before. The listing was always whole: about
    0.2 s at 6,000 requests, growing with them, on the daemon's event loop."""
    from connector.dsr import DsrService

    same = "2026-11-01T09:00:00+00:00"
    rows = [(f"er-20261101-{n:08x}", same, "2026-12-01T23:59:59+00:00", "open") for n in range(5)]
    rows += [
        (
            f"er-2026110{day}-0000000{day}",
            f"2026-11-0{day}T10:00:00+00:00",
            f"2026-12-0{day}T23:59:59+00:00",
            "completed",
        )
        for day in range(2, 6)
    ]
    _put_requests(daemon, rows)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        whole = await client.get("/admin/dsr", headers=auth)
        as_before = [view.as_dict() for view in DsrService(daemon.rt, now=daemon.now).list()]
        seen: list[str] = []
        pages: list[int] = []
        following: str | None = "/admin/dsr?limit=3"
        while following is not None:
            answer = await client.get(following, headers=auth)
            assert answer.status_code == 200, answer.text
            pages.append(len(answer.json()))
            seen += [request["id"] for request in answer.json()]
            if len(pages) == 1:
                # Between pages: one received later (listed at the end) and one received
                # earlier (a job queued before it ran), which the pages already passed.
                _put_requests(
                    daemon,
                    [
                        (
                            "er-20261106-00000006",
                            "2026-11-06T10:00:00+00:00",
                            "2026-12-06T23:59:59+00:00",
                            "open",
                        ),
                        (
                            "er-20261031-00000031",
                            "2026-10-31T10:00:00+00:00",
                            "2026-11-30T23:59:59+00:00",
                            "open",
                        ),
                    ],
                )
            following = _pages_of(answer)
            assert following is None or following.startswith("/admin/dsr?")
    ordered = sorted(rows, key=lambda row: (row[1], row[0]))
    assert whole.status_code == 200 and "link" not in whole.headers
    assert [request["id"] for request in whole.json()] == [row[0] for row in ordered]
    assert whole.json() == as_before
    assert seen == [row[0] for row in ordered] + ["er-20261106-00000006"]
    assert pages == [3, 3, 3, 1]


async def test_the_request_listing_pages_keep_their_filters_and_list_the_overdue_ones(
    daemon: Daemon,
) -> None:
    """`overdue=true` lists the open requests past their deadline on the daemon's clock, as
    `dsr list --overdue` does, and the next page of a filtered listing keeps its filter. The
    admin API had only `open_only`: a monitor read every open request to find the late."""
    now = dt.datetime.fromtimestamp(daemon.clock(), dt.UTC)
    due = [(now + dt.timedelta(days=days)).isoformat(timespec="seconds") for days in (-2, -1, 3)]
    got = (now - dt.timedelta(days=30)).isoformat(timespec="seconds")
    _put_requests(
        daemon,
        [
            ("er-a", got, due[0], "open"),
            ("er-b", got, due[0], "completed"),
            ("er-c", got, due[1], "open"),
            ("er-d", got, due[2], "open"),
            ("er-e", got, due[1], "open"),
        ],
    )
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        first = await client.get("/admin/dsr?overdue=true&limit=2", headers=auth)
        following = _pages_of(first)
        assert following is not None
        second = await client.get(following, headers=auth)
        opened = await client.get("/admin/dsr?open_only=true", headers=auth)
    assert [r["id"] for r in first.json()] == ["er-a", "er-c"]
    assert [r["id"] for r in second.json()] == ["er-e"] and _pages_of(second) is None
    assert all(r["overdue"] and r["status"] == "open" for r in first.json() + second.json())
    assert [r["id"] for r in opened.json()] == ["er-a", "er-c", "er-d", "er-e"]


async def test_admin_status_counts_the_requests_days_left_on_the_daemon_s_clock(
    daemon: Daemon,
) -> None:
    """`GET /admin/status` gives each open request's days left, flag and overdue mark by the
    daemon's clock, as the request listing, the gauges and the daily review do; it counted
    them by the host's clock alone, so the answers of one daemon disagreed."""
    now = dt.datetime.fromtimestamp(daemon.clock(), dt.UTC)
    got = (now - dt.timedelta(days=30)).isoformat(timespec="seconds")
    due = [(now + dt.timedelta(days=days)).isoformat(timespec="seconds") for days in (-2, 3)]
    _put_requests(daemon, [("er-late", got, due[0], "open"), ("er-soon", got, due[1], "open")])
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        status = (await client.get("/admin/status", headers=auth)).json()
        listed = (await client.get("/admin/dsr?open_only=true", headers=auth)).json()
    requests = {r["id"]: r for r in status["requests"]["requests"]}
    assert requests["er-late"]["days_left"] == -2 and requests["er-late"]["overdue"]
    assert requests["er-soon"]["days_left"] == 3 and requests["er-soon"]["flagged"]
    assert not requests["er-soon"]["overdue"]
    assert (status["requests"]["overdue"], status["requests"]["due_soon"]) == (1, 1)
    assert {r["id"]: r["overdue"] for r in listed} == {"er-late": True, "er-soon": False}


async def test_a_page_past_the_most_or_after_no_request_is_refused_naming_the_parameter(
    daemon: Daemon,
) -> None:
    """A `limit` of 0 or past 1,000, or an `after` naming no request, is answered 422 naming
    the parameter, never repeating what was sent; they were ignored, and the whole listing
    sent (after a typo in the cursor, the same first page again and again)."""
    _put_requests(
        daemon, [("er-a", "2026-11-01T09:00:00+00:00", "2026-12-01T23:59:59+00:00", "open")]
    )
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(build_admin_app(daemon)) as client:
        answers = {
            query: await client.get(f"/admin/dsr?{query}", headers=auth)
            for query in ("limit=0", "limit=1001", "limit=many", "after=er-nothing", "after=")
        }
        most = await client.get("/admin/dsr?limit=1000", headers=auth)
    expected = {
        "limit=0": ("limit", "greater_than_equal"),
        "limit=1001": ("limit", "less_than_equal"),
        "limit=many": ("limit", "int_parsing"),
        "after=er-nothing": ("after", "after_unknown"),
        "after=": ("after", "string_too_short"),
    }
    for query, (name, kind) in expected.items():
        answer = answers[query]
        assert answer.status_code == 422, (query, answer.text)
        (error,) = answer.json()["detail"]
        assert (error["loc"], error["type"]) == (["query", name], kind), query
        assert "er-nothing" not in answer.text and "many" not in answer.text
    assert most.status_code == 200 and [r["id"] for r in most.json()] == ["er-a"]


async def _admin_get_held_mid_read(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, path: str
) -> tuple[bool, httpx.Response, httpx.Response, httpx.Response]:
    """GET ``path`` on the admin API with its read stopped mid-way (at a request's view),
    and ask /healthz and /readyz meanwhile: (whether the GET had ended by then, health,
    ready, the GET's answer once let go)."""
    import threading

    from connector import dsr_views

    reading, release = threading.Event(), threading.Event()
    build = dsr_views.make_view

    def slow(*args: Any, **kwargs: Any) -> RequestView:
        reading.set()
        # Bounded: on the loop it would hold the test for this long, then let it fail.
        release.wait(timeout=5)
        return build(*args, **kwargs)

    monkeypatch.setattr(dsr_views, "make_view", slow)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        _client(build_admin_app(daemon)) as admin,
        _client(build_public_app(daemon)) as public,
    ):
        answer = asyncio.create_task(admin.get(path, headers=auth))
        await _until_waiting(answer)
        health = await public.get("/healthz")
        ready = await public.get("/readyz")
        held = answer.done()
        assert await asyncio.to_thread(reading.wait, 5)
        release.set()
        return held, health, ready, await answer


async def test_listing_the_requests_holds_no_probe(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing is read and built on a thread with a read connection of its own: while a
    long one is built, /healthz and /readyz answer. It was built on the event loop, about
    0.2 s at 6,000 requests and growing with them, every webhook and probe waiting."""
    _put_requests(
        daemon, [("er-a", "2026-11-01T09:00:00+00:00", "2026-12-01T23:59:59+00:00", "open")]
    )
    held, health, ready, listed = await _admin_get_held_mid_read(daemon, monkeypatch, "/admin/dsr")
    assert not held, "the listing held the event loop"
    assert health.status_code == 200 and ready.json()["checks"]["store"] == "ok"
    assert listed.status_code == 200 and [r["id"] for r in listed.json()] == ["er-a"]


async def test_status_is_read_off_the_loop_holds_no_probe_and_says_what_it_said(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status is read on a thread with a read connection of its own: while a long one is
    read, /healthz and /readyz answer, and the answer is the one the store's own reads give,
    key for key. Its exact counts were read on the event loop, about 0.25 s at a million
    people, every webhook and probe waiting."""
    from connector.dsr_views import summary
    from connector.keyset import key_facts

    _put_requests(
        daemon, [("er-a", "2026-11-01T09:00:00+00:00", "2099-12-01T23:59:59+00:00", "open")]
    )
    store = daemon.rt.store
    store.finish_run(store.start_run("shop-to-crm"), "ok", "{}")
    daemon.queue("resync", {"system": "shop", "full": False})
    held, health, ready, shown = await _admin_get_held_mid_read(
        daemon, monkeypatch, "/admin/status"
    )
    assert not held, "status held the event loop"
    assert health.status_code == 200 and ready.json()["checks"]["store"] == "ok"
    assert shown.status_code == 200 and shown.headers["content-type"] == "application/json"
    is_ready, checks = daemon.readiness()
    runs = store.last_runs()
    said = {
        "ready": is_ready,
        "checks": checks,
        "flows": {
            flow.name: {
                "running": False,
                "last_status": runs[flow.name][2] if flow.name in runs else "never run",
                "last_finished": runs[flow.name][1] if flow.name in runs else None,
                "last_success": store.last_success(flow.name),
            }
            for flow in daemon.rt.config.flows
        },
        "counts": store.counts(),
        "jobs": [job.as_dict() for job in jobs.recent(store)],
        "keys": key_facts(store, daemon.rt.config),
        "requests": summary(store, now=daemon.now()),
    }
    assert list(shown.json()) == list(said) and shown.json() == json.loads(json.dumps(said))
    assert said["requests"]["open"] == 1 and said["jobs"] and said["counts"]["jobs"] == 1
    assert said["flows"]["shop-to-crm"]["last_status"] == "ok"


def _hubspot_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, source: bool) -> Path:
    """The shared config with a HubSpot webhook secret; ``source``: HubSpot is also a flow's
    source (a flow from it to the shop)."""
    monkeypatch.setenv("T_HS_HOOK", HS_SECRET)
    path = write_config(tmp_path, crm_extra='webhooks = { secret = "env:T_HS_HOOK" }')
    if source:
        path.write_text(
            path.read_text()
            + '\n[[flows]]\nname = "crm-to-shop"\nsource = "crm"\ndestinations = ["shop"]\n'
            'schedule = "every 15m"\n'
        )
    return path


async def _privacy_deletion(
    daemon: Daemon, crm: HubSpotSandbox, contact_id: str, secret: str = HS_SECRET
) -> Any:
    """HubSpot's contact.privacyDeletion of ``contact_id``, posted to the daemon; its answer."""
    body, headers = crm.signed_privacy_deletion(
        secret, "http://daemon/webhooks/crm", contact_id, int(daemon.clock() * 1000)
    )
    async with _client(build_public_app(daemon)) as client:
        return await client.post("/webhooks/crm", content=body, headers=headers)


async def test_a_hubspot_privacy_deletion_answered_keeps_the_person_out_of_syncs_before_its_job(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """HubSpot deletes a contact for GDPR and posts contact.privacyDeletion (its id only).
    The erasure was recorded, and the person suppressed, only when the job worker reached
    the job: a scheduled run before that created the contact again from the shop. It is
    recorded with the delivery, by the person the identity map knows the id under, before
    the 200 (no vendor asked); the job then carries out that one request."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    async with open_rt(_hubspot_hooks(tmp_path, monkeypatch, source=False)) as rt:
        daemon = Daemon(rt, clock=Clock())
        (report,) = await rt.engine.sync()
        assert not report.failed
        contact = crm.record_for(CANARY_EMAIL)
        assert contact is not None
        crm.store.purge(crm.store.contacts[int(contact["id"])])
        response = await _privacy_deletion(daemon, crm, contact["id"])
        assert response.status_code == 200 and response.json()["queued"] == 1
        # The customer edits their profile; the flow's schedule comes before the job.
        shop.touch(CANARY_EMAIL, first_name="Nogmaals")
        (report,) = await rt.engine.sync()
        assert report.suppressed == 1 and not crm.holds(CANARY_EMAIL)
        (job,) = await _drain(daemon)
        assert job.params is not None and CANARY_EMAIL not in json.dumps(job.params)
        (request,) = DsrService(rt).list()
        assert request.status == "completed" and request.source == "webhook:crm"
        assert not shop.holds(CANARY_EMAIL)


async def test_a_webhook_erasure_the_retries_carried_out_before_its_job_opens_nothing_more(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """The erasure recorded as HubSpot's privacy deletion came is open, so the daemon's
    retries may carry it out before the worker reaches its job. The job then finds it done:
    it opens no second request, and logs nothing as matching nobody (the person's identity
    rows are gone by then)."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    async with open_rt(_hubspot_hooks(tmp_path, monkeypatch, source=False)) as rt:
        daemon = Daemon(rt, clock=Clock())
        await rt.engine.sync()
        contact = crm.record_for(CANARY_EMAIL)
        assert contact is not None
        crm.store.purge(crm.store.contacts[int(contact["id"])])
        assert (await _privacy_deletion(daemon, crm, contact["id"])).status_code == 200
        (request,) = DsrService(rt).list()
        assert await DsrService(rt).retry_open() == 1  # the daemon's retry, first
        (job,) = await _drain(daemon)
        done = jobs.get(rt.store, job.id)
        assert done is not None and done.result == {"request": request.id}
        assert [v.id for v in DsrService(rt).list()] == [request.id]
        assert not [e for e in audit.entries(rt.store) if e.kind == "dsr.unmatched"]
        assert not shop.holds(CANARY_EMAIL)


async def test_a_privacy_deletion_for_an_id_nobody_knows_opens_nothing(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """A genuine contact.privacyDeletion for an id neither HubSpot nor the identity map
    knows is taken (200) and its job audits it as unmatched: no request is opened, nobody
    is suppressed or erased on a guess."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    async with open_rt(_hubspot_hooks(tmp_path, monkeypatch, source=False)) as rt:
        daemon = Daemon(rt, clock=Clock())
        await rt.engine.sync()
        response = await _privacy_deletion(daemon, crm, "999999")
        assert response.status_code == 200 and response.json()["queued"] == 1
        (job,) = await _drain(daemon)
        done = jobs.get(rt.store, job.id)
        assert done is not None and done.result == {"request": None}
        assert DsrService(rt).list() == []
        assert "dsr.unmatched" in [e.kind for e in audit.entries(rt.store)]
        assert rt.store.suppressed([rt.keyring.subject_id(CANARY_EMAIL)]) == set()
        assert shop.holds(CANARY_EMAIL) and crm.holds(CANARY_EMAIL)


async def test_a_privacy_deletion_refused_for_its_signature_is_recorded_once_a_minute_at_most(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
) -> None:
    """A person's erasure request whose signature does not verify (the app secret rotated
    at HubSpot, not in the config) is answered 401 and leaves ``webhook.rejected`` in the
    trail. Forged deliveries cost nothing to send: within a minute of an entry, refusals are
    counted, and the next entry says how many went unrecorded."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    async with open_rt(_hubspot_hooks(tmp_path, monkeypatch, source=False)) as rt:
        clock = Clock()
        daemon = Daemon(rt, clock=clock)
        await rt.engine.sync()
        contact = crm.record_for(CANARY_EMAIL)
        assert contact is not None

        async def refused() -> list[dict[str, Any]]:
            response = await _privacy_deletion(daemon, crm, contact["id"], "a-rotated-secret")
            assert response.status_code == 401
            return [e.data for e in audit.entries(rt.store) if e.kind == "webhook.rejected"]

        signature = {"system": "crm", "reason": "signature invalid or stale"}
        assert await refused() == [signature]
        for _ in range(3):
            clock.now += 10
            assert len(await refused()) == 1
        clock.now += 30
        assert (await refused())[1:] == [{**signature, "unrecorded": 3}]
        assert crm.holds(CANARY_EMAIL) and jobs.claim_next(rt.store, rt.keyring) is None
        # Nothing is recorded for a refused delivery: no request, nobody suppressed.
        assert DsrService(rt).list() == []
        assert rt.store.suppressed([rt.keyring.subject_id(CANARY_EMAIL)]) == set()


@pytest.mark.parametrize("source", [True, False], ids=["crm-a-source", "crm-a-destination"])
async def test_hubspot_s_report_of_klantsync_s_own_erasure_opens_no_second_request(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    source: bool,
) -> None:
    """klantsync erases a person; its gdpr-delete makes HubSpot post contact.privacyDeletion
    for the contact. That is the echo of klantsync's own erasure, not a request of the
    person's: where HubSpot is a flow's source it opened a second erasure (a second
    deadline, fan-out and receipt), and where it is only a destination it was logged as a
    webhook matching nobody, for every erasure. It is audited under the erasure, and
    nothing is queued."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    async with open_rt(_hubspot_hooks(tmp_path, monkeypatch, source=source)) as rt:
        daemon = Daemon(rt, clock=Clock())
        await rt.engine.sync("shop-to-crm")
        contact = crm.record_for(CANARY_EMAIL)
        assert contact is not None
        first = await DsrService(rt).erase(CANARY_EMAIL)
        assert first.status == "completed"
        response = await _privacy_deletion(daemon, crm, contact["id"])
        assert response.status_code == 200
        assert (response.json()["queued"], response.json()["ignored"]) == (0, 1)
        assert await _drain(daemon) == []
        requests = DsrService(rt).list()
        entries = [e for e in audit.entries(rt.store) if e.kind.startswith("dsr.")]
    assert [(r.id, r.source) for r in requests] == [(first.id, "cli")]
    assert "dsr.unmatched" not in [e.kind for e in entries]
    (echo,) = [e for e in entries if e.kind == "dsr.echo"]
    assert echo.data == {"request": first.id, "kind": "erase", "system": "crm"}


@pytest.mark.parametrize(
    ("method", "path", "request_args", "expected"),
    [
        ("POST", "/admin/resync", {"json": {"email": CANARY_EMAIL}}, ("body", "system", "missing")),
        (
            "POST",
            "/admin/dsr",
            {
                "json": {
                    "kind": "erase",
                    "email": CANARY_EMAIL,
                    "phone": CANARY_PHONE_E164,
                    "name": CANARY_NAME,
                }
            },
            ("body", "phone", "extra_forbidden"),
        ),
        (
            "POST",
            "/admin/dsr",
            {"json": {"kind": f"erase {CANARY_NAME}", "email": CANARY_EMAIL}},
            ("body", "kind", "literal_error"),
        ),
        (
            "POST",
            "/admin/dsr",
            {"json": {"kind": "erase", "email": CANARY_EMAIL, CANARY_EMAIL: CANARY_NAME}},
            ("body", "<key>", "extra_forbidden"),
        ),
        (
            "POST",
            "/admin/resync",
            {"json": {"system": CANARY_NAME * 10, "full": CANARY_EMAIL}},
            ("body", "system", "string_too_long"),
        ),
        (
            "POST",
            "/admin/dsr",
            {
                "content": TRUNCATED_JSON,
                "headers": {"content-type": "application/json"},
            },
            ("body", len(TRUNCATED_JSON), "json_invalid"),
        ),
        ("GET", f"/admin/dsr?open_only={CANARY_EMAIL}", {}, ("query", "open_only", "bool_parsing")),
        (
            "POST",
            "/admin/dsr",
            {"json": {"kind": "erase", "email": f"{CANARY_NAME} {CANARY_PHONE_E164}"}},
            ("body", "email", "email_invalid"),
        ),
        (
            "POST",
            "/admin/resync",
            {"json": {"system": "shop", "email": CANARY_EMAIL.replace(".nl", "")}},
            ("body", "email", "email_invalid"),
        ),
    ],
)
async def test_admin_validation_errors_never_echo_what_was_sent(
    daemon: Daemon,
    method: str,
    path: str,
    request_args: dict[str, Any],
    expected: tuple[str, str | int | None, str],
) -> None:
    """A refused request gets 422 naming each field's location, error type and message; the
    values sent (an e-mail, a phone, a name, even an e-mail sent as a key) are not repeated.
    An address that is no address is refused so too, as the schema's 422 says: it was a
    bare text under ``detail``, naming no field, where scripts read a list."""
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    headers = {**auth, **request_args.pop("headers", {})}
    async with _client(build_admin_app(daemon)) as client:
        response = await client.request(method, path, headers=headers, **request_args)
    assert response.status_code == 422
    for canary in (CANARY_EMAIL, CANARY_PHONE_E164, CANARY_NAME, "@"):
        assert canary not in response.text
    detail = response.json()["detail"]
    assert all(set(error) == {"loc", "type", "msg"} and error["msg"] for error in detail)
    where, name, kind = expected
    loc = [where] if name is None else [where, name]
    assert any(error["loc"] == loc and error["type"] == kind for error in detail), detail
    assert jobs.claim_next(daemon.rt.store, daemon.rt.keyring) is None


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8", None]
)
async def test_an_admin_body_that_is_not_declared_json_is_answered_415_not_a_wrong_422(
    daemon: Daemon, content_type: str | None
) -> None:
    """`curl -d '{"system": "shop"}'` sends the JSON as application/x-www-form-urlencoded.
    The admin API answered 422 "Input should be a valid dictionary or object", telling the
    operator a JSON object is not one; what is wrong is the media type (415, RFC 9110
    15.5.16), which the answer names now. Nothing sent is repeated, nothing is queued."""
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    typed = {"content-type": content_type} if content_type else {}
    body = json.dumps({"kind": "erase", "email": CANARY_EMAIL}).encode()
    async with _client(build_admin_app(daemon)) as client:
        answer = await client.post("/admin/dsr", content=body, headers={**auth, **typed})
        suffixed = await client.post(
            "/admin/resync",
            json={"system": "shop"},
            headers={**auth, "content-type": "application/merge-patch+json"},
        )
    assert answer.status_code == 415, (answer.status_code, answer.text)
    assert "application/json" in answer.json()["detail"]
    assert answer.headers["accept-post"] == "application/json"
    assert CANARY_EMAIL not in answer.text and "@" not in answer.text
    assert suffixed.status_code == 202  # a +json type is JSON
    (job,) = await _drain(daemon)
    assert job.kind == "resync"


async def test_openapi_schema_is_served(daemon: Daemon) -> None:
    """The admin API publishes its OpenAPI schema with every route."""
    async with _client(build_admin_app(daemon)) as client:
        schema = (await client.get("/admin/openapi.json")).json()
    assert {"/admin/resync", "/admin/status", "/admin/dsr", "/admin/dsr/{request_id}"} <= set(
        schema["paths"]
    )


#: The design's HTTP surface, the public contract: stable paths (README extends it).
DESIGN_HTTP = """
- `POST /webhooks/<system name>`: inbound deliveries for that configured system (e.g.
  `/webhooks/shop`); signature checked with that system's vendor scheme.
- `GET /healthz`, `GET /readyz`, `GET /metrics` on `listen`.
- On `admin_listen`, with `Authorization: Bearer <token>`: `POST /admin/resync`
  (`{"system": "...", "email": "...", "full": false}`), `GET /admin/status`,
  `POST /admin/dsr` (`{"kind": "erase"|"access", "email": "..."}`), `GET /admin/dsr[/ID]`,
  and the OpenAPI schema at `/admin/openapi.json`.
"""


def _http_paths_named(text: str) -> set[tuple[str, str]]:
    """Each (method, path) of the daemon's that ``text`` names (not the vendors' API paths
    it also names), ``ID`` and ``<system>`` as a request's, an optional part (``[/ID]``)
    both ways, a query left out."""
    found = set()
    for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[^\s`,)]*)", text):
        if not path.startswith(("/webhooks/", "/healthz", "/readyz", "/metrics", "/admin/")):
            continue
        path = re.sub(r"\[\?.*$", "", path).replace("<system name>", "shop")
        for written in (re.sub(r"\[(.*?)\]", r"\1", path), re.sub(r"\[.*?\]", "", path)):
            found.add((method, written.replace("<system>", "shop").replace("ID", "er-1")))
    if "/admin/openapi.json" in text:
        found.add(("GET", "/admin/openapi.json"))
    return found


def _readme_text() -> str:
    return " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())


@pytest.mark.parametrize("doc", ["README", "DESIGN"])
async def test_every_http_path_the_docs_name_is_served_with_the_method_they_name(
    daemon: Daemon, doc: str
) -> None:
    """Each path of the daemon's the README (and the design's contract) names, with its
    method, is a route of the listener it is named on, the admin API's on `admin_listen`;
    and a body shown for an admin call holds only fields that call takes."""
    from starlette.routing import Match

    text = _readme_text() if doc == "README" else " ".join(DESIGN_HTTP.split())
    public, admin = build_public_app(daemon), build_admin_app(daemon)
    named = _http_paths_named(text)
    assert {("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/admin/dsr")} <= named, named

    def routed(method: str, path: str) -> bool:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        app = admin if path.startswith("/admin/") else public
        return any(route.matches(scope)[0] is Match.FULL for route in app.routes)

    assert [named_path for named_path in sorted(named) if not routed(*named_path)] == []
    schema = admin.openapi()
    bodies = re.findall(r"`POST (/admin/[\w/]+)` \(`(\{.*?\})`\)", text)
    assert bodies
    for path, body in bodies:
        post = schema["paths"][path.replace("/ID/", "/{request_id}/")]["post"]
        model = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        takes = set(schema["components"]["schemas"][model.rsplit("/", 1)[1]]["properties"])
        shown = set(re.findall(r'(?:\{|,\s*)"(\w+)"', body))
        assert shown and shown <= takes, (path, shown, takes)
    async with _client(public) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code in (200, 503), path
    async with _client(admin) as client:
        assert (await client.get("/admin/openapi.json")).status_code == 200


async def test_readyz_turns_unready_when_a_flow_is_stale(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """Ready after a successful run; unready once twice the interval passes without one."""
    clock = daemon.clock
    assert isinstance(clock, Clock)
    shop.seed_synthetic(3, seed=34)
    await daemon.run_flow("shop-to-crm")
    last = daemon.rt.store.last_success("shop-to-crm")
    assert last is not None
    import datetime as dt

    clock.now = dt.datetime.fromisoformat(last).timestamp() + 60
    async with _client(build_public_app(daemon)) as client:
        assert (await client.get("/readyz")).status_code == 200
        clock.now += 2 * 900
        stale = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert stale.status_code == 503
    assert stale.json()["checks"]["flow:shop-to-crm"]["ok"] is False


async def test_readyz_fresh_daemon_is_ready_until_twice_the_interval_passes_without_a_run(
    daemon: Daemon,
) -> None:
    """A daemon whose flows have not run yet is ready (start-up does not flap), for a while."""
    clock = daemon.clock
    assert isinstance(clock, Clock)
    async with _client(build_public_app(daemon)) as client:
        starting = await client.get("/readyz")
        clock.now += 2 * 900 + 1
        late = await client.get("/readyz")
    assert starting.status_code == 200
    assert starting.json()["checks"]["flow:shop-to-crm"]["reason"] == READY_STARTING
    assert late.status_code == 503
    assert late.json()["checks"]["flow:shop-to-crm"]["reason"] == UNREADY_NOT_RUN


async def test_readyz_unready_at_once_when_every_run_since_start_failed(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow that never succeeded and failed every run since start is 503 straight away,
    naming the flow with a fixed reason; its first success makes it ready again."""
    clock = daemon.clock
    assert isinstance(clock, Clock)
    shop.seed_synthetic(3, seed=37)
    shop.faults.down = True
    report = await daemon.run_flow("shop-to-crm")
    assert report is not None and report.errors  # the source is down: the run failed
    async with _client(build_public_app(daemon)) as client:
        # Well within twice the interval of the start: the clock alone would still say ready.
        clock.now += 60
        failing = await client.get("/readyz")

        async def refused(*_args: Any, **_kwargs: Any) -> Any:
            raise KlantsyncError("shop: GET /wp-json/wc/v3/customers 503")

        # A run that raises instead of reporting counts as a failed run too.
        with monkeypatch.context() as patch:
            patch.setattr(daemon.rt.engine, "sync", refused)
            with pytest.raises(KlantsyncError):
                await daemon.run_flow("shop-to-crm")
        raised = await client.get("/readyz")
        shop.faults.down = False
        assert (await daemon.run_flow("shop-to-crm")) is not None
        last = daemon.rt.store.last_success("shop-to-crm")
        assert last is not None
        clock.now = dt.datetime.fromisoformat(last).timestamp() + 60
        recovered = await client.get("/readyz")
    assert failing.status_code == 503
    check = failing.json()["checks"]["flow:shop-to-crm"]
    assert check["ok"] is False and check["reason"] == UNREADY_FAILING
    assert check["last_success"] is None and check["failed_since_start"] == 1
    # Only fixed texts, names and numbers: no error message (paths, statuses) in the body.
    assert "wp-json" not in failing.text and "@" not in failing.text
    assert raised.status_code == 503
    assert raised.json()["checks"]["flow:shop-to-crm"]["failed_since_start"] == 2
    assert "wp-json" not in raised.text
    assert recovered.status_code == 200
    assert recovered.json()["checks"]["flow:shop-to-crm"]["reason"] == READY_SUCCEEDED


async def test_readyz_says_each_flow_as_it_is_when_only_the_job_worker_has_ended(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """The job worker's end makes the daemon not ready, and says so; it says nothing of the
    store or of the flows. Each flow was reported "unknown: the store did not answer", with
    no last success, while the store answered and the flow had just succeeded: the operator
    was sent after the disk instead of restarting the daemon."""
    clock = daemon.clock
    assert isinstance(clock, Clock)
    shop.seed_synthetic(3, seed=39)
    await daemon.run_flow("shop-to-crm")
    last = daemon.rt.store.last_success("shop-to-crm")
    assert last is not None
    clock.now = dt.datetime.fromisoformat(last).timestamp() + 60

    async def dies() -> None:
        raise KeyError("worker")

    worker = asyncio.ensure_future(dies())
    await asyncio.wait([worker])
    daemon._worker_ended(worker)
    async with _client(build_public_app(daemon)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks["store"] == "ok"
    assert checks["job_worker"] == f"{UNREADY_WORKER_ENDED} (KeyError)"
    flow = checks["flow:shop-to-crm"]
    assert flow["reason"] == READY_SUCCEEDED and flow["ok"] is True
    assert flow["last_success"] == dt.datetime.fromisoformat(last).timestamp()


async def test_readyz_is_503_while_the_daemon_stops_and_healthz_still_alive(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """Once a stop is asked for, no flow run or job starts any more (what is queued waits
    for the next start), while the listeners stay up for the in-flight batch (up to 8 s):
    /readyz said ready all that time, so a probe or a balancer kept sending work to a
    daemon that was ending. It is 503 saying so; the flows and the store are said as they
    are, and /healthz still answers alive."""
    clock = daemon.clock
    assert isinstance(clock, Clock)
    shop.seed_synthetic(3, seed=40)
    await daemon.run_flow("shop-to-crm")
    last = daemon.rt.store.last_success("shop-to-crm")
    assert last is not None
    clock.now = dt.datetime.fromisoformat(last).timestamp() + 60
    async with _client(build_public_app(daemon)) as client:
        running = await client.get("/readyz")
        daemon.stop()
        stopping = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert running.status_code == 200 and "daemon" not in running.json()["checks"]
    assert stopping.status_code == 503
    checks = stopping.json()["checks"]
    assert checks["daemon"] == UNREADY_STOPPING
    assert checks["store"] == "ok"
    assert checks["flow:shop-to-crm"]["reason"] == READY_SUCCEEDED
    assert alive.status_code == 200


async def test_metrics_count_records_and_requests(daemon: Daemon, shop: WooCommerceSandbox) -> None:
    """After a run, /metrics exposes pulled, written and withheld counts and latencies."""
    shop.seed_synthetic(7, seed=35)
    await daemon.run_flow("shop-to-crm")
    async with _client(build_public_app(daemon)) as client:
        text = (await client.get("/metrics")).text
    assert 'klantsync_records_pulled_total{system="shop"} 7.0' in text
    assert 'klantsync_records_written_total{system="crm"} 7.0' in text
    assert "klantsync_fields_withheld_total" in text
    assert 'klantsync_http_request_seconds_count{system="crm"}' in text
    # When the master key was set, for an alert on its age (the store was bound on open).
    since = [line for line in text.splitlines() if line.startswith("klantsync_master_key_since")]
    assert len(since) == 1 and float(since[0].split()[1]) > 1.7e9
    assert f'klantsync_build_info{{version="{connector.__version__}"}} 1.0' in text
    assert "@" not in text


async def test_a_started_daemon_s_counters_read_0_before_their_first_event(
    daemon: Daemon,
) -> None:
    """Every counter series the config makes known is there at 0 from the start: one that
    first appears at 1 (the first failed run, dead letter, 429 or refused webhook after a
    restart) has no earlier sample, so Prometheus's increase() and rate() read no change
    and an alert on them missed that first event."""
    async with _client(build_public_app(daemon)) as client:
        text = (await client.get("/metrics")).text
    for series in (
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="failed"} 0.0',
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="ok"} 0.0',
        'klantsync_records_pulled_total{system="shop"} 0.0',
        'klantsync_records_suppressed_total{system="shop"} 0.0',
        'klantsync_records_dead_lettered_total{system="crm"} 0.0',
        'klantsync_records_written_total{system="crm"} 0.0',
        'klantsync_records_emptied_total{system="crm"} 0.0',
        'klantsync_http_rate_limited_total{system="crm"} 0.0',
        'klantsync_http_rate_limited_total{system="shop"} 0.0',
        'klantsync_webhooks_total{outcome="401",system="shop"} 0.0',
        'klantsync_webhooks_total{outcome="503",system="shop"} 0.0',
        'klantsync_webhooks_total{outcome="404",system="unknown"} 0.0',
    ):
        assert series in text, series
    # A source is not written to, nor a destination pulled from: no series says so.
    assert 'klantsync_records_pulled_total{system="crm"}' not in text
    assert 'klantsync_records_dead_lettered_total{system="shop"}' not in text


@pytest.mark.parametrize("status", [429, 477])
async def test_every_answer_read_as_slow_down_counts_as_rate_limited(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox, status: int
) -> None:
    """klantsync_http_rate_limited counts what the client holds back for, not only a 429:
    HubSpot's 477 (as its 423, Mailchimp's bare 403, Shopify's THROTTLED answered 200)
    held every call back for up to an hour while the counter an alert reads stayed 0."""
    shop.seed_synthetic(2, seed=38)
    crm.faults.fail_status, crm.faults.fail_next = status, 1
    await daemon.run_flow("shop-to-crm")
    text = daemon.metrics.render().decode()
    assert _metric_lines(text, "klantsync_http_rate_limited_total") == [
        'klantsync_http_rate_limited_total{system="shop"} 0.0',
        'klantsync_http_rate_limited_total{system="crm"} 1.0',
    ]
    assert daemon.rt.systems["crm"].client.stats.rate_limited == 1


async def test_a_restarted_daemon_s_metrics_say_when_each_flow_last_succeeded(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """The last-success gauge is read from the store at start: after a restart, a flow that
    keeps failing shows how long ago it last succeeded, instead of no series at all (which
    an alert on the gauge's age takes for "fine")."""
    shop.seed_synthetic(2, seed=37)
    await daemon.run_flow("shop-to-crm")
    last = daemon.rt.store.last_success("shop-to-crm")
    assert last is not None
    restarted = Daemon(daemon.rt, clock=Clock())
    async with _client(build_public_app(restarted)) as client:
        text = (await client.get("/metrics")).text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("klantsync_flow_last_success")]
    assert float(line.split()[1]) == dt.datetime.fromisoformat(last).timestamp()


async def test_a_flow_never_runs_twice_at_once(daemon: Daemon, shop: WooCommerceSandbox) -> None:
    """A second run of a flow that is running is skipped, not started; a run that finds
    only a targeted sync of a few people holding the flow waits for it, then runs."""
    shop.seed_synthetic(3, seed=36)
    real_sync = daemon.rt.engine.sync
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await real_sync(*args, **kwargs)

    daemon.rt.engine.sync = held  # type: ignore[method-assign]
    first = asyncio.create_task(daemon.run_flow("shop-to-crm"))
    await entered.wait()
    assert await daemon.run_flow("shop-to-crm") is None  # a run is under way
    daemon.rt.engine.sync = real_sync  # type: ignore[method-assign]
    release.set()
    assert await first is not None
    lock = daemon.flow_locks["shop-to-crm"]
    await lock.acquire()  # as a webhook's targeted sync holds it
    waiting = asyncio.create_task(daemon.run_flow("shop-to-crm"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    lock.release()
    assert await waiting is not None


async def test_accepted_connections_have_nagle_off(tmp_path: Path) -> None:
    """A listener socket made by hand still gives connections TCP_NODELAY (no 40 ms stalls)."""
    import socket

    from connector.httpapp import bind_listener

    sock = bind_listener(str(tmp_path / "klantsync.toml"), "daemon.listen", "127.0.0.1", 0)
    accepted: list[int] = []

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        port = sock.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(20):
            if accepted:
                break
            await asyncio.sleep(0)
        writer.close()
    assert accepted == [1]


class _Seen(logging.Handler):
    """Records the daemon logs (setup_logging elsewhere in a run may stop propagation)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: dict[str, object] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.messages[record.getMessage()] = getattr(record, "age_days", None)


async def test_the_review_names_keys_due_for_rotation(daemon: Daemon) -> None:
    """A year after the master key was set (or last rotated) and the receipt signing key made,
    the daily review says so, naming the command; before that it does not. A rotation resets
    the master key's age."""
    from connector.dsr import DsrService
    from connector.keyset import key_facts

    master_due = "master key due for rotation (klantsync keys rotate)"
    receipt_due = "receipt signing key due for rotation (klantsync dsr rotate-key)"
    DsrService(daemon.rt).public_key_pem()  # the receipt signing key is made on first use
    assert isinstance(daemon.clock, Clock)
    made = key_facts(daemon.rt.store, daemon.rt.config)["created_at"]
    assert isinstance(made, str)
    seen = _Seen()
    logger = logging.getLogger("klantsync.daemon")
    logger.addHandler(seen)
    try:
        daemon.clock.now = dt.datetime.fromisoformat(made).timestamp() + 300 * 86400
        await daemon.compliance_review()
        assert master_due not in seen.messages and receipt_due not in seen.messages
        daemon.clock.now += 100 * 86400
        await daemon.compliance_review()
        assert seen.messages[master_due] == 400 and receipt_due in seen.messages
        seen.messages.clear()
        daemon.rt.store.db.execute(
            "UPDATE keyset SET rotated_at=?",
            (dt.datetime.fromtimestamp(daemon.clock.now - 86400, dt.UTC).isoformat(),),
        )
        await daemon.compliance_review()
        assert master_due not in seen.messages and receipt_due in seen.messages
    finally:
        logger.removeHandler(seen)


async def test_the_last_backup_is_a_gauge_and_the_review_asks_for_one(
    daemon: Daemon, tmp_path: Path
) -> None:
    """`/metrics` shows when the store was last backed up (0 before any), for an alert on
    its age; the daily review warns while there is none, or none in the last week
    (Art. 32(1)(c)), and not after one."""
    from connector.backup import take_backup

    backup_due = "no recent backup of the store (klantsync backup --out FILE)"

    async def gauge() -> float:
        daemon.refresh_gauges()
        async with _client(build_public_app(daemon)) as client:
            text = (await client.get("/metrics")).text
        (line,) = [x for x in text.splitlines() if x.startswith("klantsync_last_backup_timestamp")]
        return float(line.split()[1])

    seen = _Seen()
    logger = logging.getLogger("klantsync.daemon")
    logger.addHandler(seen)
    try:
        assert await gauge() == 0.0
        await daemon.compliance_review()
        assert backup_due in seen.messages
        take_backup(daemon.rt.config, tmp_path / "nightly.db")
        taken = await gauge()
        assert taken > 1.7e9
        assert isinstance(daemon.clock, Clock)
        daemon.clock.now = taken + 86400
        seen.messages.clear()
        await daemon.compliance_review()
        assert backup_due not in seen.messages
        daemon.clock.now = taken + 8 * 86400
        await daemon.compliance_review()
        assert backup_due in seen.messages
    finally:
        logger.removeHandler(seen)


def _listen_on_free_ports(config: Path) -> None:
    """Listeners on free loopback ports, for a test that runs :meth:`Daemon.serve`."""
    from connector.sandboxkit import free_port

    config.write_text(
        config.read_text().replace(
            "[daemon]\n",
            f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'admin_listen = "127.0.0.1:{free_port()}"\n',
        )
    )


async def test_a_request_head_past_its_limit_is_refused_as_it_arrives(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """uvicorn's httptools parser sets no limit on a request's head: one header of 1 MiB
    was buffered whole and the request served. Past 64 KiB the listener now answers 431 and
    closes the connection; an ordinary request on it is served as before."""
    from connector.httpapp import MAX_HEAD_BYTES, build_servers

    _listen_on_free_ports(daemon_config)
    async with open_rt(daemon_config) as rt:
        (public, sock), (_admin, admin_sock) = build_servers(Daemon(rt, clock=Clock()))
        admin_sock.close()
        port = sock.getsockname()[1]
        task = asyncio.ensure_future(public.serve(sockets=[sock]))
        try:
            while not public.started:
                await asyncio.sleep(0)

            class Caller(asyncio.Protocol):
                def __init__(self) -> None:
                    self.answer = bytearray()
                    self.closed = asyncio.Event()

                def data_received(self, data: bytes) -> None:
                    self.answer += data

                def connection_lost(self, exc: Exception | None) -> None:
                    self.closed.set()

            async def ask(filler: int) -> bytes:
                loop = asyncio.get_running_loop()
                transport, caller = await loop.create_connection(Caller, "127.0.0.1", port)
                transport.write(b"GET /healthz HTTP/1.1\r\nHost: daemon\r\nX-Filler: ")
                for _ in range(filler // 65536):
                    if transport.is_closing():
                        break  # refused: the server closed the connection
                    transport.write(b"a" * 65536)
                    await asyncio.sleep(0)
                if not transport.is_closing():
                    transport.write(b"\r\nConnection: close\r\n\r\n")
                await asyncio.wait_for(caller.closed.wait(), 20)
                return bytes(caller.answer)

            assert (await ask(0)).startswith(b"HTTP/1.1 200")
            assert (await ask(16 * MAX_HEAD_BYTES)).startswith(b"HTTP/1.1 431")
        finally:
            public.should_exit = True
            await asyncio.wait_for(task, 20)


class _Transport:
    """Enough of an asyncio transport for uvicorn's protocol: what it writes is kept."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        peers = {"sockname": ("127.0.0.1", 8787), "peername": ("127.0.0.1", 50000)}
        return peers.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


class _Timer:
    """A timer :class:`_Timers` set, run only when the test says its time has come."""

    def __init__(self, delay: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.delay, self.callback, self.args = delay, callback, args
        self.stopped = False

    def cancel(self) -> None:
        self.stopped = True


class _Timers:
    """The running loop, but the timers set on it wait until the test says time has passed
    (:meth:`advance`): no test waits for real."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pending: list[_Timer] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> _Timer:
        timer = _Timer(delay, callback, args)
        self.pending.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Run every timer not cancelled that is due within ``seconds`` of being set."""
        due = [timer for timer in self.pending if timer.delay <= seconds]
        self.pending = [timer for timer in self.pending if timer.delay > seconds]
        for timer in due:
            if not timer.stopped:
                timer.callback(*timer.args)


async def _answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request's body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _listener_protocol(
    served: list[str], loop: Any = None, app: Any = None
) -> tuple[Any, _Transport]:
    """The listeners' bounded protocol on a connection whose reads the test makes."""
    import uvicorn
    from uvicorn.server import ServerState

    from connector.httpapp import _bounded_protocol

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        served.append(scope["path"])
        if app is not None:
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(serve, lifespan="off", log_config=None)
    config.load()
    protocol = _bounded_protocol()(
        config=config,
        server_state=ServerState(),
        app_state={},
        _loop=loop or asyncio.get_running_loop(),
    )
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


@pytest.mark.parametrize("reads", [1, 2])
async def test_a_head_past_its_limit_is_refused_however_it_is_read(reads: int) -> None:
    """A head that ended within a read was never judged: 192 KiB arriving in one read (the
    loop reads up to 256 KiB) was served, and so was a kept-alive connection's second
    request whose head came in two reads. Each is 431 now; the first request is served."""
    from connector.httpapp import MAX_HEAD_BYTES

    served: list[str] = []
    protocol, transport = _listener_protocol(served)
    protocol.data_received(b"GET /first HTTP/1.1\r\nHost: d\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert served == ["/first"]
    answered = len(transport.written)
    filler = b"a" * (3 * MAX_HEAD_BYTES)
    head = b"GET /second HTTP/1.1\r\nHost: d\r\nX-Filler: " + filler + b"\r\n\r\n"
    cut = len(head) // reads
    for part in (head[:cut], head[cut:]) if reads == 2 else (head,):
        protocol.data_received(part)
    for _ in range(5):
        await asyncio.sleep(0)
    assert bytes(transport.written[answered:]).startswith(b"HTTP/1.1 431"), served
    assert served == ["/first"] and transport.closed


async def test_a_request_that_does_not_arrive_within_its_time_is_refused_and_cut_off() -> None:
    """uvicorn waits for ever for a request's head and body, and for the first request of a
    connection that sends nothing: a caller that opened connections and sent a byte now and
    then held each open for good, until the daemon, out of file descriptors, took no
    vendor's delivery (nor opened a connection to a vendor). A request must now be all in
    within REQUEST_READ_SECONDS of its first byte (the first of a connection, of its
    opening): one that is not is answered 408 and its connection closed, and a connection
    that sent nothing is closed. A request that arrives in time is served as before."""
    from connector.httpapp import REQUEST_READ_SECONDS

    post = b"POST /webhooks/shop HTTP/1.1\r\nHost: d\r\nContent-Length: 10\r\n\r\n"
    cases = {
        "silent": b"",
        "head": post[:30],
        "body": post + b"12345",
        "whole": post + b"1234567890",
    }
    outcomes = {}
    for case, arrived in cases.items():
        timers = _Timers()
        served: list[str] = []
        protocol, transport = _listener_protocol(served, loop=timers, app=_answer_ok)
        for part in (arrived[:20], arrived[20:]) if arrived else ():
            protocol.data_received(part)
            for _ in range(5):
                await asyncio.sleep(0)
        answered = bytes(transport.written)
        timers.advance(REQUEST_READ_SECONDS - 1)  # time enough for a vendor's request
        left_open = not transport.closed
        timers.advance(REQUEST_READ_SECONDS)
        for _ in range(5):
            await asyncio.sleep(0)
        late = bytes(transport.written[len(answered) :])
        outcomes[case] = (answered[:12], left_open, late[:12], transport.closed)
        protocol.connection_lost(None)
    assert outcomes == {
        "silent": (b"", True, b"", True),
        "head": (b"", True, b"HTTP/1.1 408", True),
        "body": (b"", True, b"HTTP/1.1 408", True),
        # Answered; closed later as any kept-alive connection is, after its idle seconds.
        "whole": (b"HTTP/1.1 200", False, b"", True),
    }


async def test_the_listeners_leave_logging_to_klantsync(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """uvicorn's own logging set-up, turned off: it gave its loggers handlers that print a
    request's error with its traceback, past the redaction (connector/logs.py)."""
    from connector.httpapp import build_servers

    _listen_on_free_ports(daemon_config)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    for name in names:
        logging.getLogger(name).handlers.clear()
    async with open_rt(daemon_config) as rt:
        servers = build_servers(Daemon(rt, clock=Clock()))
        for _server, sock in servers:
            sock.close()
    assert len(servers) == 2
    assert [logging.getLogger(name).handlers for name in names] == [[], [], []]


async def test_the_listeners_leave_sigterm_and_sigint_to_the_daemon(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """uvicorn catches both signals while it serves: the listeners began to close at the
    signal, before the in-flight batch had finished, and raised it again as they ended."""
    import signal

    from connector.httpapp import build_servers

    _listen_on_free_ports(daemon_config)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    async with open_rt(daemon_config) as rt:
        servers = build_servers(Daemon(rt, clock=Clock()))
        try:
            for server, _sock in servers:
                with server.capture_signals():
                    during = {sig: signal.getsignal(sig) for sig in before}
                    assert during == before
        finally:
            for _server, sock in servers:
                sock.close()


@contextmanager
def _hearing(handler: logging.Handler) -> Iterator[None]:
    """``handler`` on the root logger and on ``klantsync`` for the block: ``klantsync``
    propagates to the root or not as the logging set-up left it."""
    for name in ("", "klantsync"):
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in ("", "klantsync"):
            logging.getLogger(name).removeHandler(handler)


class _Errors(logging.Handler):
    """Records ERROR and worse from any logger (apscheduler's propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_readyz_is_not_ready_once_the_job_worker_s_task_has_died(
    open_rt: Callable[..., Any], daemon_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job worker's task ended by an error it does not catch: nothing ran the queue any
    more while webhooks and admin calls filled it, and /readyz stayed 200. It is 503 now,
    saying why, and the end is logged once, by the error's type alone (its text may hold
    what a job carried)."""
    _listen_on_free_ports(daemon_config)
    daemon_config.write_text(  # no flow run at start: readiness is the worker's alone
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "0 3 * * *"')
    )
    die = asyncio.Event()
    died = asyncio.Event()

    async def run_until_it_dies() -> None:
        await die.wait()
        died.set()
        raise KeyError(CANARY_EMAIL)

    errors = _Errors()
    logging.getLogger().addHandler(errors)
    try:
        async with open_rt(daemon_config) as rt:
            daemon = Daemon(rt, clock=Clock())
            monkeypatch.setattr(daemon.jobs, "run", run_until_it_dies)
            serving = asyncio.ensure_future(daemon.serve(install_signals=False))
            async with _client(build_public_app(daemon)) as client:
                for _ in range(500):
                    await asyncio.sleep(0)
                    if "job_worker" in daemon.readiness()[1]:
                        break
                alive = await client.get("/readyz")
                die.set()
                await asyncio.wait_for(died.wait(), 5)
                for _ in range(5):
                    await asyncio.sleep(0)  # the task's end reaches its callbacks
                dead = await client.get("/readyz")
                again = await client.get("/readyz")
            daemon.stop()
            await asyncio.wait_for(serving, 15)
    finally:
        logging.getLogger().removeHandler(errors)
    assert alive.status_code == 200, alive.json()
    assert alive.json()["checks"]["job_worker"] == "ok"
    assert dead.status_code == 503 and again.status_code == 503
    assert dead.json()["checks"]["job_worker"] == f"{UNREADY_WORKER_ENDED} (KeyError)"
    ended = [r for r in errors.records if r.getMessage() == "job worker ended"]
    assert len(ended) == 1
    assert getattr(ended[0], "error", None) == "KeyError"
    for record in errors.records:
        assert CANARY_EMAIL not in record.getMessage()
        assert CANARY_EMAIL not in str(getattr(record, "error", ""))
        assert record.exc_info is None


async def test_stopping_mid_run_logs_no_error(
    open_rt: Callable[..., Any],
    daemon_config: Path,
    shop: WooCommerceSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop while a scheduled flow run is in flight lets it finish and logs no error
    (apscheduler logged the cancelled job's CancelledError with a traceback)."""
    _listen_on_free_ports(daemon_config)
    shop.seed_synthetic(3, seed=38)
    errors = _Errors()
    with _hearing(errors):
        async with open_rt(daemon_config) as rt:
            daemon = Daemon(rt, clock=Clock())
            in_flight = asyncio.Event()
            sync = rt.engine.sync

            async def held_sync(*args: Any, **kwargs: Any) -> Any:
                # The run is in flight when the stop comes, and ends only after it.
                in_flight.set()
                await daemon.stopping.wait()
                return await sync(*args, **kwargs)

            monkeypatch.setattr(rt.engine, "sync", held_sync)
            serving = asyncio.ensure_future(daemon.serve(install_signals=False))
            await asyncio.wait_for(in_flight.wait(), 10)
            daemon.stop()
            await asyncio.wait_for(serving, 10)
            assert rt.store.last_runs()["shop-to-crm"][2] in ("ok", "failed", "interrupted")
    assert [r.getMessage() for r in errors.records] == []


class _Warned(logging.Handler):
    """Records WARNING and worse from any logger, each once (see :func:`_hearing`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(seen is record for seen in self.records):
            self.records.append(record)


async def test_a_run_that_outlasts_its_schedule_is_said_once_and_each_skipped_time_counted(
    open_rt: Callable[..., Any],
    daemon_config: Path,
    shop: WooCommerceSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow's time comes twice while its run still goes on: neither starts a second
    run, each is counted, and the daemon says so once, in its own words. apscheduler
    warned at each time instead, naming the job and its next time, so a schedule tighter
    than a first sync took filled the log with warnings that each read as new."""
    _listen_on_free_ports(daemon_config)
    shop.seed_synthetic(3, seed=39)
    said = _Warned()
    with _hearing(said):
        async with open_rt(daemon_config) as rt:
            daemon = Daemon(rt, clock=Clock())
            in_flight, release = asyncio.Event(), asyncio.Event()
            runs = 0
            sync = rt.engine.sync

            async def held_sync(*args: Any, **kwargs: Any) -> Any:
                nonlocal runs
                runs += 1
                in_flight.set()
                await release.wait()
                return await sync(*args, **kwargs)

            def skipped() -> float | None:
                return daemon.metrics.registry.get_sample_value(
                    "klantsync_flow_runs_skipped_total", {"flow": "shop-to-crm"}
                )

            monkeypatch.setattr(rt.engine, "sync", held_sync)
            serving = asyncio.ensure_future(daemon.serve(install_signals=False))
            try:
                await asyncio.wait_for(in_flight.wait(), 10)
                counted = [skipped()]
                for times in (1, 2):
                    job = daemon.scheduler.get_job("flow:shop-to-crm")
                    job.modify(next_run_time=dt.datetime.now(dt.UTC))  # due, the run going on
                    for _ in range(200):
                        await asyncio.sleep(0)
                        if skipped() == times:
                            break
                    counted.append(skipped())
            finally:
                release.set()
                daemon.stop()
                await asyncio.wait_for(serving, 10)
    assert counted == [0, 1, 2] and runs == 1
    # apscheduler's own warning ("... skipped: maximum number of running instances") too.
    told = [r for r in said.records if "skipped" in r.getMessage()]
    assert [(r.name, r.getMessage(), getattr(r, "flow", None)) for r in told] == [
        (
            "klantsync.daemon",
            "a run outlasts its schedule: the times due while it runs are skipped",
            "shop-to-crm",
        )
    ]


async def test_a_starting_daemon_closes_out_runs_a_stopped_process_left_running(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """`klantsync run` holds the sync lock, so at start a run still marked running is one
    that was interrupted: recorded so, and audited."""
    from connector import audit

    _listen_on_free_ports(daemon_config)
    async with open_rt(daemon_config) as rt:
        left = rt.store.start_run("shop-to-crm")
        daemon = Daemon(rt, clock=Clock())
        daemon.stop()  # stops as soon as it has started
        await asyncio.wait_for(daemon.serve(install_signals=False), 10)
        row = rt.store.db.execute("SELECT status FROM runs WHERE id=?", (left,)).fetchone()
        started = [e for e in audit.entries(rt.store) if e.kind == "daemon.started"]
    assert row == ("interrupted",)
    assert started[-1].data["interrupted_runs"] == 1


async def test_a_wall_clock_set_back_under_the_daemon_moves_its_scheduled_runs_back_with_it(
    open_rt: Callable[..., Any], daemon_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock set back an hour while 30 s pass: the request retries, the sweep and the
    review come after as much real time as they would have (they came an hour late, as the
    scheduler goes by the wall clock), the nightly flow keeps its own time, and the step is
    logged once. A clock set forward, or one step looked at again, moves nothing."""
    _listen_on_free_ports(daemon_config)
    daemon_config.write_text(  # on a cron: no flow run at start, and its time stays
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "0 3 * * *"')
    )
    wall, steady = Clock(), Clock()
    async with open_rt(daemon_config) as rt:
        daemon = Daemon(rt, clock=wall, monotonic=steady)
        serving = asyncio.ensure_future(daemon.serve(install_signals=False))
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        for _ in range(500):
            await asyncio.sleep(0)
            jobs_now = daemon.scheduler.get_jobs() if daemon.scheduler is not None else []
            if jobs_now and all(job.next_run_time > later for job in jobs_now):
                break  # the runs at start came due, and each job has its next time
        before = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
        wall.now -= 3600
        steady.now += 30
        daemon.check_clock()
        after = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
        wall.now += 7200
        steady.now += 30
        daemon.check_clock()
        steady.now += 30
        wall.now += 30
        daemon.check_clock()
        again = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
        daemon.stop()
        await asyncio.wait_for(serving, 15)
    step = dt.timedelta(seconds=3630)
    for job in ("housekeeping", "retention", "compliance"):
        assert after[job] == before[job] - step, job
    assert after["flow:shop-to-crm"] == before["flow:shop-to-crm"]
    assert again == after
    said = [r for r in caplog.records if r.getMessage().startswith("wall clock set back")]
    assert len(said) == 1
    assert (getattr(said[0], "seconds", None), getattr(said[0], "jobs", None)) == (3630, 3)


@pytest.fixture
async def watched(daemon: Daemon) -> AsyncIterator[tuple[Daemon, Clock, Clock]]:
    """The daemon with a paused scheduler holding one 15-minute job, and its clocks watched
    as :meth:`Daemon.serve` watches them: the wall clock and the monotonic one."""
    from connector.clockstep import ClockWatch

    scheduler = AsyncIOScheduler(timezone=dt.UTC)
    scheduler.start(paused=True)  # the job gets its time; it never runs
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    scheduler.add_job(_nothing, "interval", minutes=15, id="every", next_run_time=soon)
    wall, steady = Clock(), Clock()
    daemon.scheduler = scheduler
    daemon._clock_watch = ClockWatch(wall, steady)
    yield daemon, wall, steady
    scheduler.shutdown(wait=False)


async def _nothing() -> None:
    """A scheduled job that is never run."""


async def test_small_steps_back_of_the_wall_clock_add_up_and_move_the_runs_back_together(
    watched: tuple[Daemon, Clock, Clock],
) -> None:
    """The clock stepped back 40 s at two looks 30 s apart: the first alone is within the
    minute left alone, the two together are not, and the run moves back by both. Each
    judged alone, the runs drifted later with every such step, without bound."""
    daemon, wall, steady = watched
    before = daemon.scheduler.get_job("every").next_run_time
    for _ in range(2):
        wall.now -= 10
        steady.now += 30
        daemon.check_clock()
    after = daemon.scheduler.get_job("every").next_run_time
    assert before - after == dt.timedelta(seconds=80)


async def test_a_failed_look_at_the_clocks_is_logged_and_the_next_look_still_comes(
    watched: tuple[Daemon, Clock, Clock],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Moving the runs fails once (the error's text holds an address): the watch says so,
    by the error's type only, and the next step back is still followed. Before, the first
    failure ended the watch's task unseen, and no later step moved anything."""
    import connector.scheduling as scheduling

    daemon, wall, steady = watched
    calls: list[float] = []
    real_reschedule = scheduling.reschedule

    def reschedule(scheduler: Any, step: float) -> int:
        calls.append(step)
        if len(calls) == 1:
            raise RuntimeError("jan@example.nl")
        return real_reschedule(scheduler, step)

    # Where the clock watch looks them up (connector/scheduling.py).
    monkeypatch.setattr(scheduling, "WATCH_SECONDS", 0)
    monkeypatch.setattr(scheduling, "reschedule", reschedule)
    watch = asyncio.ensure_future(daemon._watch_clock())
    for _ in range(2):
        wall.now -= 3600
        steady.now += 30
        for _ in range(20):
            await asyncio.sleep(0)
    daemon.stop()
    await asyncio.wait_for(watch, 5)
    assert calls == [3630.0, 3630.0]
    failed = [r for r in caplog.records if r.getMessage() == "clock watch failed"]
    assert [getattr(r, "error", None) for r in failed] == ["RuntimeError"]
    assert "jan@example.nl" not in caplog.text


async def test_scheduled_work_the_store_fails_under_or_a_flow_that_fails_ends_in_a_log_line(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What the scheduler runs never raises into apscheduler (which logs a traceback): a
    full disk is logged as such, and a flow run that fails is a warning with its error."""
    from tests.conftest import disk_full_error

    async def housekeeping() -> None:
        raise disk_full_error()

    async def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise KlantsyncError("shop: GET /wp-json/wc/v3/customers 503")

    caplog.set_level(logging.WARNING, logger="klantsync")
    await daemon._scheduled(housekeeping, "housekeeping")
    monkeypatch.setattr(daemon.rt.engine, "sync", refused)
    await daemon._scheduled_flow("shop-to-crm")
    said = [
        (r.getMessage(), getattr(r, "during", None) or getattr(r, "flow", None))
        for r in caplog.records
    ]
    assert said == [("store failed", "housekeeping"), ("flow run failed", "shop-to-crm")]
    assert "the disk holding the store is full" in getattr(caplog.records[0], "error", "")
    assert "next sync" not in getattr(caplog.records[0], "error", "")
    assert daemon.runs_since_start["shop-to-crm"].failed == 1


async def test_a_store_that_does_not_answer_is_said_by_the_probes_not_failed_by_them(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot be read (a failing disk): /readyz answers 503 saying so, and
    /metrics still serves its counters. Both failed with a 500 themselves."""

    with monkeypatch.context() as patched:
        patched.setattr(daemon.rt.store, "db", _FullDisk())
        async with _client(build_public_app(daemon)) as client:
            ready = await client.get("/readyz")
            metrics = await client.get("/metrics")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["store"] == "OperationalError"
    assert checks["flow:shop-to-crm"]["ok"] is False
    assert checks["flow:shop-to-crm"]["reason"] == UNREADY_NO_STORE
    assert metrics.status_code == 200 and "klantsync_" in metrics.text


async def _work_jobs_until(daemon: Daemon, done: asyncio.Event) -> None:
    """Run the daemon's job worker until ``done`` is set, then stop it as SIGTERM does."""
    worker = asyncio.create_task(daemon.jobs.run())
    await asyncio.wait_for(done.wait(), timeout=30)
    daemon.stop()
    daemon.jobs.wake.set()
    await asyncio.wait_for(worker, timeout=30)


async def test_the_job_worker_outlives_a_full_disk_and_runs_the_jobs_after(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store failing under a job (a full disk) is logged with what to do; the job goes
    back to the queue and the worker runs it and the next one once the store works again."""
    from connector import jobworker
    from tests.conftest import disk_full_error

    monkeypatch.setattr(jobworker, "STORE_RETRY_SECONDS", 0)
    store, keyring = daemon.rt.store, daemon.rt.keyring
    first = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    second = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    ran: list[int] = []
    both_done = asyncio.Event()

    async def run_job(job: jobs.Job) -> dict[str, Any]:
        ran.append(job.id)
        if len(ran) == 1:
            raise disk_full_error()
        if len(ran) == 3:
            both_done.set()
        return {}

    monkeypatch.setattr(daemon.jobs, "run_job", run_job)
    caplog.set_level(logging.ERROR, logger="klantsync")
    await _work_jobs_until(daemon, both_done)
    assert ran == [first, first, second]
    assert [getattr(jobs.get(store, n), "status", None) for n in (first, second)] == [
        "done",
        "done",
    ]
    (failed,) = [r for r in caplog.records if r.getMessage() == "store failed"]
    assert "the disk holding the store is full" in getattr(failed, "error", "")
    assert "the job stays queued and runs once the store takes writes again" in failed.error
    assert "next sync" not in failed.error


async def test_a_job_that_meets_a_bug_fails_alone_and_the_worker_goes_on(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in one job marks that job failed (its type, not its text,
    which may hold the data) and the next job runs."""
    store, keyring = daemon.rt.store, daemon.rt.keyring
    first = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    second = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    ran: list[int] = []
    second_done = asyncio.Event()

    async def run_job(job: jobs.Job) -> dict[str, Any]:
        ran.append(job.id)
        if job.id == first:
            raise KeyError(CANARY_EMAIL)
        second_done.set()
        return {}

    monkeypatch.setattr(daemon.jobs, "run_job", run_job)
    caplog.set_level(logging.ERROR, logger="klantsync")
    await _work_jobs_until(daemon, second_done)
    failed, done = jobs.get(store, first), jobs.get(store, second)
    assert failed is not None and failed.status == "failed"
    assert failed.result == {"error": "internal error: KeyError"}
    assert done is not None and done.status == "done"
    assert ran == [first, second]
    assert CANARY_EMAIL not in caplog.text
    (logged,) = [r for r in caplog.records if r.getMessage() == "job failed with an internal error"]
    assert getattr(logged, "error", None) == "KeyError" and logged.exc_info is None


def _constraint_error() -> sqlite3.IntegrityError:
    """The error SQLite raises for a constraint violated (a bug, not the store failing),
    raised for real, with its error code."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    try:
        db.execute("INSERT INTO t VALUES (1), (1)")
    except sqlite3.IntegrityError as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("the primary key took a duplicate")


class _Misused:
    """Stands in for the store's connection: every statement violates a constraint."""

    in_transaction = False

    def execute(self, *_args: Any, **_kwargs: Any) -> Any:
        raise _constraint_error()


async def test_a_job_meeting_a_bug_sqlite_reports_fails_alone_and_the_next_job_runs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A constraint violated is the bug storefile.failure() calls it, not the store failing:
    the job fails alone and the next runs. Taken for a store failure, it went back to the
    head of the queue and ran again every 30 s for ever, and no job behind it ever ran."""
    from connector import jobworker

    monkeypatch.setattr(jobworker, "STORE_RETRY_SECONDS", 0)
    store, keyring = daemon.rt.store, daemon.rt.keyring
    first = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    second = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    ran: list[int] = []
    enough = asyncio.Event()

    async def run_job(job: jobs.Job) -> dict[str, Any]:
        ran.append(job.id)
        if job.id == second or len(ran) >= 5:
            enough.set()
        if job.id == first:
            raise _constraint_error()
        return {}

    monkeypatch.setattr(daemon.jobs, "run_job", run_job)
    caplog.set_level(logging.ERROR, logger="klantsync")
    await _work_jobs_until(daemon, enough)
    failed = jobs.get(store, first)
    assert ran == [first, second], f"jobs run, in order: {ran}"
    assert failed is not None and failed.status == "failed"
    assert failed.result == {"error": "internal error: IntegrityError"}
    assert [r.getMessage() for r in caplog.records] == ["job failed with an internal error"]


async def test_a_bug_sqlite_reports_is_no_store_failure_for_webhooks_admin_calls_or_scheduled_work(
    daemon: Daemon,
    shop: WooCommerceSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery or an admin call meeting a constraint violated is a 500, as any bug: a 503
    asked the vendor to deliver again, and every delivery met it again until WooCommerce
    (after five failures) disabled the webhook. Scheduled work meeting one ends as any bug
    does. None is logged as the store failing, nor makes /readyz doubt the store."""

    async def housekeeping() -> None:
        raise _constraint_error()

    body = json.dumps({"id": 3, "email": "someone@example.nl"}).encode()
    caplog.set_level(logging.ERROR, logger="klantsync")
    with monkeypatch.context() as patched:
        patched.setattr(daemon.rt.store, "db", _Misused())
        transport = httpx.ASGITransport(app=build_public_app(daemon), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            hook = await client.post(
                "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
            )
        transport = httpx.ASGITransport(app=build_admin_app(daemon), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            admin = await client.post(
                "/admin/resync",
                json={"system": "shop"},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
    with pytest.raises(sqlite3.IntegrityError):
        await daemon._scheduled(housekeeping, "housekeeping")
    assert (hook.status_code, admin.status_code) == (500, 500)
    assert [r for r in caplog.records if r.getMessage() == "store failed"] == []
    ready, checks = daemon.readiness()
    assert checks["store"] == "ok", (ready, checks)


async def test_a_resync_asked_while_the_flow_runs_waits_for_that_run_then_runs(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """`POST /admin/resync` while the scheduled run holds the flow: the job waits for it
    and then runs the resync as asked, not ends "done" having run nothing."""
    shop.seed_synthetic(3, seed=41)
    lock = daemon.flow_locks["shop-to-crm"]
    await lock.acquire()  # the scheduled run of shop-to-crm is under way
    async with _client(build_admin_app(daemon)) as client:
        queued = await client.post(
            "/admin/resync",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"system": "shop", "full": True},
        )
    assert queued.status_code == 202
    job = jobs.claim_next(daemon.rt.store, daemon.rt.keyring)
    assert job is not None
    task = asyncio.ensure_future(daemon.jobs._run_one(job))
    for _ in range(50):  # turns of the loop while the scheduled run goes on
        await asyncio.sleep(0)
    assert not task.done() and crm.contact_count() == 0
    lock.release()  # the scheduled run ends
    await asyncio.wait_for(task, timeout=30)
    finished = jobs.get(daemon.rt.store, job.id)
    assert finished is not None and finished.status == "done"
    assert finished.result == {"flows": ["shop-to-crm"], "failed": False}
    assert crm.contact_count() == 3


async def test_a_resync_of_one_address_a_stop_comes_before_is_queued_again_not_done(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """`resync --email E` handed to the daemon waits for the scheduled run; the daemon stops
    before that run ends. As a resync of the whole system, it is queued again for the next
    start: it ran while the engine refused to deliver, and ended "done" with nothing
    delivered, so the person's write waited for the flow's next scheduled run."""
    shop.seed_synthetic(3, seed=17)
    email = shop.store.get(2)["email"]  # type: ignore[index]
    store, keyring = daemon.rt.store, daemon.rt.keyring
    job_id = jobs.enqueue(store, keyring, "resync", {"system": "shop", "email": email})
    job = jobs.claim_next(store, keyring)
    assert job is not None and job.id == job_id
    lock = daemon.flow_locks["shop-to-crm"]
    await lock.acquire()  # the scheduled run of the flow is under way
    task = asyncio.ensure_future(daemon.jobs._run_one(job))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    daemon.stop()  # SIGTERM, as serve() handles it
    daemon.rt.engine.request_stop()
    lock.release()  # the scheduled run ends
    await asyncio.wait_for(task, timeout=30)
    finished = jobs.get(store, job_id)
    assert finished is not None
    assert crm.contact_count() == 0
    assert (finished.status, finished.result) == ("queued", None)


async def test_a_webhook_change_whose_sync_ran_to_its_end_stays_failed_when_a_stop_comes(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """SIGTERM as the batch of a webhook change is answered, the CRM refusing the record (a
    dead letter): the sync ran to its end. Taken for one the stop cut short, the job was
    queued again; at the next start the refused payload was not offered again and the job
    ended "done" saying it had not failed. It ends done, failed, as flow runs tell the two
    apart (``cut_short``)."""
    shop.seed_synthetic(2, seed=5)
    bad = shop.add_person("bad address@example.nl", "Bad", "Address", "")
    store, keyring = daemon.rt.store, daemon.rt.keyring
    job_id = jobs.enqueue(
        store,
        keyring,
        "webhook",
        {"system": "shop", "event": "changed", "external_id": bad, "delivery_id": "d1"},
    )
    dest: Any = daemon.rt.systems["crm"].adapter
    real_upsert = dest.upsert

    async def answered_then_stopped(records: Any) -> Any:
        answer = await real_upsert(records)
        daemon.stop()  # SIGTERM, as serve() handles it, as the batch is answered
        daemon.rt.engine.request_stop()
        return answer

    dest.upsert = answered_then_stopped
    job = jobs.claim_next(store, keyring)
    assert job is not None and job.id == job_id
    await daemon.jobs._run_change_batch(job)
    assert len(store.dead_letters()) == 1  # the CRM refused the record: the sync ran
    finished = jobs.get(store, job_id)
    assert finished is not None
    assert (finished.status, (finished.result or {}).get("failed")) == ("done", True)


async def test_a_targeted_sync_cancelled_waiting_for_a_flow_leaves_no_flow_held(
    open_rt: Callable[..., Any], tmp_path: Path, env: dict[str, str]
) -> None:
    """A targeted sync takes the locks of every flow of its source, one after the other.
    Cancelled while it waited for the second, it kept the first: every later run of that
    flow waited for it."""
    path = write_config(tmp_path)
    path.write_text(
        path.read_text()
        + '\n[[flows]]\nname = "shop-to-crm-too"\nsource = "shop"\ndestinations = ["crm"]\n'
    )
    async with open_rt(path) as rt:
        daemon = Daemon(rt, clock=Clock())
        second = daemon.flow_locks["shop-to-crm-too"]
        await second.acquire()  # a run of the second flow is under way
        task = asyncio.ensure_future(daemon.sync_subjects("shop", [(None, CANARY_EMAIL)]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        second.release()
        assert not daemon.flow_locks["shop-to-crm"].locked()


async def test_request_retries_the_store_refuses_say_store_failed_and_the_daemon_is_not_ready(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """The 15-minute retries of open data subject requests, the store refusing writes: each
    was logged "retry crashed" with the bare type, no "store failed" line said what it meant,
    and /readyz said the store was ok while every retry of an erasure was refused."""
    from connector.dsr import DsrService

    caplog.set_level(logging.INFO, logger="klantsync")
    # An erasure asked for through the admin API: open, its fan-out left to the retries.
    await DsrService(daemon.rt).queue_erase(CANARY_EMAIL, source="admin")
    daemon.rt.store.db.execute("PRAGMA query_only=1")  # the store refuses writes
    try:
        await daemon._scheduled(daemon.housekeeping, "housekeeping")
        ready, checks = daemon.readiness()
    finally:
        daemon.rt.store.db.execute("PRAGMA query_only=0")
    said = [r.getMessage() for r in caplog.records]
    assert "store failed" in said and "retry crashed" not in said, said
    assert not ready and checks["store"] != "ok", checks


async def test_request_retries_waiting_their_turn_do_not_start_after_the_stop(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the retries of open requests run: a request still waiting for its turn
    started its erasure all the same, to be cut off by the stop's grace with its vendors
    half asked. As the job worker, the retries start nothing after the stop."""
    from connector.dsr import DsrService

    init, retry = DsrService.__init__, DsrService.retry

    def one_at_once(self: DsrService, rt: Any, **kwargs: Any) -> None:
        init(self, rt, **{**kwargs, "concurrency": 1})

    started: list[bool] = []

    async def noting_retry(self: DsrService, request_id: str) -> Any:
        started.append(daemon.stopping.is_set())
        if len(started) == 1:
            daemon.stop()  # SIGTERM, as serve() handles it, while the first request runs
            daemon.rt.engine.request_stop()
        return await retry(self, request_id)

    for email in (CANARY_EMAIL, "second@example.nl"):
        await DsrService(daemon.rt).queue_erase(email, source="admin")
    monkeypatch.setattr(DsrService, "__init__", one_at_once)
    monkeypatch.setattr(DsrService, "retry", noting_retry)
    await daemon._scheduled(daemon.housekeeping, "housekeeping")
    assert started == [False]
    assert len(DsrService(daemon.rt).list(open_only=True)) == 1  # for the next start


def _metric_lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


async def test_a_flow_run_the_store_fails_under_counts_as_a_failed_run(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that raised (a full disk) is a failed run for /metrics as for /readyz."""
    from tests.conftest import disk_full_error

    async def full(*_args: Any, **_kwargs: Any) -> Any:
        raise disk_full_error()

    monkeypatch.setattr(daemon.rt.engine, "sync", full)
    await daemon._scheduled_flow("shop-to-crm")  # logged as "store failed", not raised
    assert daemon.runs_since_start["shop-to-crm"].failed == 1
    text = daemon.metrics.render().decode()
    assert _metric_lines(text, "klantsync_flow_runs_total") == [
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="ok"} 0.0',
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="failed"} 1.0',
    ]


async def test_a_webhook_s_sync_of_one_person_is_no_successful_run_of_the_flow(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """The shop's API was down for the flow's run, which failed. A delivery's customer is
    synced after it came back: its record counts as written, but /metrics must not show
    the flow succeeding, or an alert on its last success never fires."""
    shop.seed_synthetic(3, seed=52)
    shop.faults.down = True
    report = await daemon.run_flow("shop-to-crm")
    assert report is not None and report.failed
    shop.faults.down = False
    customer = shop.store.get(2)
    assert customer is not None
    body = json.dumps(shop.record_for(customer["email"])).encode()
    async with _client(build_public_app(daemon)) as client:
        hook = await client.post(
            "/webhooks/shop", content=body, headers=shop.sign_webhook(body, WC_SECRET)
        )
        assert hook.status_code == 200 and hook.json()["queued"] == 1
    job = jobs.claim_next(daemon.rt.store, daemon.rt.keyring)
    assert job is not None
    await daemon.jobs._run_one(job)
    assert crm.contact_count() == 1
    text = daemon.metrics.render().decode()
    assert _metric_lines(text, "klantsync_flow_last_success_timestamp") == []
    assert _metric_lines(text, "klantsync_flow_runs_total") == [
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="ok"} 0.0',
        'klantsync_flow_runs_total{flow="shop-to-crm",outcome="failed"} 1.0',
    ]
    assert 'klantsync_records_written_total{system="crm"} 1.0' in text


async def test_two_customers_a_bulk_edit_changes_within_a_second_are_both_queued(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """WooCommerce's deliveries of one webhook within a second share their delivery id: the
    second customer is another change, not a replay. The replay is still refused."""
    shop.seed_synthetic(3, seed=61)
    answers = []
    async with _client(build_public_app(daemon)) as client:
        for customer_id in (1, 2, 2):
            customer = shop.store.get(customer_id)
            assert customer is not None
            body = json.dumps(shop.record_for(customer["email"])).encode()
            headers = shop.sign_webhook(body, WC_SECRET, webhook_id=12, second=1_800_000_000)
            answers.append(
                (await client.post("/webhooks/shop", content=body, headers=headers)).json()
            )
    assert answers == [
        {"queued": 1, "duplicates": 0, "ignored": 0},
        {"queued": 1, "duplicates": 0, "ignored": 0},
        {"queued": 0, "duplicates": 1, "ignored": 0},
    ]


async def _start_and_stop(rt: Any, ran: list[str]) -> None:
    """Serve until the start-up housekeeping ran (the scheduler's first pass), then stop."""
    daemon = Daemon(rt, clock=Clock())
    housekept = asyncio.Event()

    async def sync(flow: str | None = None, **_kwargs: Any) -> Any:
        ran.append(f"flow:{flow}")
        raise KlantsyncError("not a real run")  # logged as a failed run; enough here

    async def housekeeping() -> None:
        housekept.set()

    rt.engine.sync = sync
    daemon.housekeeping = housekeeping  # type: ignore[method-assign]
    serving = asyncio.ensure_future(daemon.serve(install_signals=False))
    await asyncio.wait_for(housekept.wait(), 10)
    for _ in range(20):
        await asyncio.sleep(0)
    daemon.stop()
    await asyncio.wait_for(serving, 15)


async def test_a_nightly_cron_flow_runs_at_its_time_not_when_the_daemon_starts(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """``schedule = "0 3 * * *"``: the flow runs at 03:00 (UTC), not whenever the daemon
    is (re)started."""
    _listen_on_free_ports(daemon_config)
    daemon_config.write_text(
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "0 3 * * *"')
    )
    ran: list[str] = []
    async with open_rt(daemon_config) as rt:
        await _start_and_stop(rt, ran)
    assert ran == []


async def test_a_restart_resumes_a_cron_flow_s_run_a_stop_cut_short(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """A nightly flow whose run a stop cut short (a deploy at 03:05; the grace ran out, or
    kill -9): the restarted daemon records it as interrupted and runs the flow at once, then
    at its times. Left to 03:00 the next night, so were the rest of the pull and every
    payload the run left queued (a weekly cron's: a week)."""
    _listen_on_free_ports(daemon_config)
    daemon_config.write_text(
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "0 3 * * *"')
    )
    ran: list[str] = []
    async with open_rt(daemon_config) as rt:
        rt.store.start_run("shop-to-crm")  # the run a stopped daemon left unfinished
        await _start_and_stop(rt, ran)
        (_, _, status, _) = rt.store.last_runs()["shop-to-crm"]
    assert status == "interrupted"
    assert ran == ["flow:shop-to-crm"]


def _last_run_started(rt: Any, when: dt.datetime) -> None:
    """A finished run of shop-to-crm in the store, started at ``when``."""
    run_id = rt.store.start_run("shop-to-crm")
    rt.store.finish_run(run_id, "ok", "{}")
    stamp = when.isoformat(timespec="seconds")
    rt.store.db.execute(
        "UPDATE runs SET started_at=?, finished_at=? WHERE id=?", (stamp, stamp, run_id)
    )


@pytest.mark.parametrize(
    ("last_run_ago", "runs_at_start"),
    [(dt.timedelta(days=3), True), (dt.timedelta(0), False)],
    ids=["times-passed-while-stopped", "ran-since-its-latest-time"],
)
async def test_a_cron_flow_whose_time_passed_while_stopped_runs_once_at_start(
    open_rt: Callable[..., Any],
    daemon_config: Path,
    last_run_ago: dt.timedelta,
    runs_at_start: bool,
) -> None:
    """A host down across the nightly 02:30 (three nights here): the started daemon runs the
    flow once, at once, then at its times; left to the next 02:30, the days it was down
    were never synced. A flow whose latest time came before its last run started missed
    nothing and waits for its time."""
    _listen_on_free_ports(daemon_config)
    daemon_config.write_text(
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "30 2 * * *"')
    )
    ran: list[str] = []
    async with open_rt(daemon_config) as rt:
        _last_run_started(rt, dt.datetime.now(dt.UTC) - last_run_ago)
        await _start_and_stop(rt, ran)
    assert ran == (["flow:shop-to-crm"] if runs_at_start else [])


def test_a_cron_time_is_missed_only_after_the_last_run_started() -> None:
    """The rule the start applies: a cron time after the latest run's start and already
    past; the run the scheduler started at the time itself (recorded in whole seconds)
    is that time's; a flow that never ran, or runs at an interval, has missed none."""
    nightly = parse_schedule("30 2 * * *")
    ran = "2026-01-05T02:30:00+00:00"
    at = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
    assert not missed_cron_time(nightly, ran, at)
    assert not missed_cron_time(nightly, ran, at.replace(day=6, hour=2, minute=29))
    assert missed_cron_time(nightly, ran, at.replace(day=6, hour=2, minute=30))
    assert missed_cron_time(nightly, ran, at.replace(day=9))
    assert not missed_cron_time(nightly, None, at.replace(day=9))
    assert not missed_cron_time(parse_schedule("every 1h"), ran, at.replace(day=9))


async def test_a_run_that_ran_to_the_end_and_failed_stays_failed_when_a_stop_comes(
    daemon: Daemon,
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that pulled everything and failed on its own account (a record the CRM
    refused: a dead letter) stays a failed run when a stop comes as it ends: taken for one
    the stop cut short, it was recorded ``interrupted``, `klantsync status` said it would
    resume, and a cron flow ran again at the next start with nothing left to do."""
    shop.seed_synthetic(3, seed=5)
    shop.add_person("bad address@example.nl", "Bad", "Address", "")
    sync = daemon.rt.engine.sync

    async def stop_arrives_as_the_run_ends(*args: Any, **kwargs: Any) -> Any:
        reports = await sync(*args, **kwargs)
        daemon.stop()  # SIGTERM, as serve() handles it, while the run wound up
        daemon.rt.engine.request_stop()
        return reports

    monkeypatch.setattr(daemon.rt.engine, "sync", stop_arrives_as_the_run_ends)
    report = await daemon.run_flow("shop-to-crm")
    assert report is not None and report.complete and report.failed
    assert report.destinations["crm"].dead_lettered == 1
    assert not any("stopped" in e for e in report.errors), report.errors
    assert daemon.rt.store.last_runs()["shop-to-crm"][2] == "failed"


async def test_a_run_the_stop_cuts_short_is_recorded_interrupted_for_the_next_start(
    daemon: Daemon, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a run pulls: the in-flight batch finishes and the run ends there. It is
    recorded as interrupted, not failed, so the next start resumes it, as it does one a
    kill -9 left: for a flow on a cron, the rest waited for its next time."""
    shop.seed_synthetic(3, seed=23)
    sync = daemon.rt.engine.sync

    async def stopped_while_pulling(*args: Any, **kwargs: Any) -> Any:
        daemon.stop()  # SIGTERM, as serve() handles it
        daemon.rt.engine.request_stop()
        return await sync(*args, **kwargs)

    monkeypatch.setattr(daemon.rt.engine, "sync", stopped_while_pulling)
    report = await daemon.run_flow("shop-to-crm")
    assert report is not None and report.failed
    assert daemon.rt.store.last_runs()["shop-to-crm"][2] == "interrupted"
    assert daemon.rt.store.interrupted_flows() == {"shop-to-crm"}


async def test_a_stop_during_the_deliveries_after_the_pull_is_recorded_interrupted(
    daemon: Daemon, shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    """SIGTERM once the pull reached its end, while the deliveries drain the outbox: the
    delivery stops taking batches and the report says rows were left queued, so the run is
    recorded interrupted (the next start resumes it, a cron flow's included) and
    ``last_success`` does not move. Unsaid, the run was recorded ``ok``, a success, and a
    nightly flow's rows waited for the next night."""
    shop.seed_synthetic(700, seed=11)
    source: Any = daemon.rt.systems["shop"].adapter
    dest: Any = daemon.rt.systems["crm"].adapter
    real_pull, real_upsert = source.pull, dest.upsert
    pulled = asyncio.Event()
    stopped = False

    async def pull(cursor: Any) -> Any:
        async for page in real_pull(cursor):
            yield page
        pulled.set()

    async def upsert(records: Any) -> Any:
        nonlocal stopped
        if not stopped:
            await pulled.wait()  # the pull has reached its end
            for _ in range(50):
                await asyncio.sleep(0)
            stopped = True
            daemon.stop()  # SIGTERM, as serve() handles it
            daemon.rt.engine.request_stop()
        return await real_upsert(records)

    source.pull, dest.upsert = pull, upsert
    report = await asyncio.wait_for(daemon.run_flow("shop-to-crm"), 60)
    assert report is not None and report.complete and report.failed
    assert report.destinations["crm"].left_queued > 0  # the stop left deliveries queued
    assert daemon.rt.store.last_runs()["shop-to-crm"][2] == "interrupted"
    assert daemon.rt.store.interrupted_flows() == {"shop-to-crm"}
    assert daemon.rt.store.last_success("shop-to-crm") is None


async def test_a_daily_review_due_while_a_sync_held_the_loop_for_two_seconds_still_runs(
    open_rt: Callable[..., Any], daemon_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop is the connector's one core: a sync's batch can hold it a few seconds.
    The daily review whose time came meanwhile must run when the loop is free, not be
    dropped until the next day (apscheduler's default grace is one second)."""
    _listen_on_free_ports(daemon_config)
    started: list[AsyncIOScheduler] = []
    start = AsyncIOScheduler.start

    def recording_start(self: AsyncIOScheduler, *args: Any, **kwargs: Any) -> None:
        started.append(self)
        start(self, *args, **kwargs)

    monkeypatch.setattr(AsyncIOScheduler, "start", recording_start)
    reviews: list[str] = []
    async with open_rt(daemon_config) as rt:
        daemon = Daemon(rt, clock=Clock())

        async def review() -> None:
            reviews.append("review")

        daemon.compliance_review = review  # type: ignore[method-assign]
        serving = asyncio.ensure_future(daemon.serve(install_signals=False))
        while not started:
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        reviews.clear()  # the one at start
        job = started[0].get_job("compliance")
        due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
        await run_coroutine_job(job, "default", [due], "apscheduler.executors.default")
        daemon.stop()
        await asyncio.wait_for(serving, 15)
    assert reviews == ["review"]


def _fires(text: str, start: dt.datetime, n: int) -> list[str]:
    trigger = _trigger(parse_schedule(text))
    out, prev, now = [], None, start
    for _ in range(n):
        nxt = trigger.get_next_fire_time(prev, now)
        out.append(nxt.strftime("%A"))
        prev, now = nxt, nxt + dt.timedelta(seconds=1)
    return out


def test_a_sunday_cron_runs_on_sunday() -> None:
    # crontab(5): day of week 0 is Sunday. 2026-01-01 is a Thursday.
    assert _fires("0 3 * * 0", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 1) == ["Sunday"]


def test_a_cron_with_a_day_of_month_and_of_week_runs_on_either() -> None:
    """crontab(5): both day fields given, a day matching either runs. "0 3 1 * 1" ran only
    on a Monday that was the 1st (next: 1 June), and "0 0 29 2 1" was refused as never
    running."""
    trigger = _trigger(parse_schedule("0 3 1 * 1"))
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)  # a Thursday, after 03:00
    first = trigger.get_next_fire_time(None, start)
    assert first == dt.datetime(2026, 1, 5, 3, 0, tzinfo=dt.UTC)  # Monday 5 January
    later = trigger.get_next_fire_time(None, dt.datetime(2026, 1, 27, 4, 0, tzinfo=dt.UTC))
    assert later == dt.datetime(2026, 2, 1, 3, 0, tzinfo=dt.UTC)  # the 1st, a Sunday
    assert parse_schedule("0 0 29 2 1").cron == "0 0 29 2 1"  # Mondays in February, and 29th


def test_a_weekday_cron_runs_monday_to_friday() -> None:
    # "1-5" in crontab is Monday to Friday.
    days = _fires("0 9 * * 1-5", dt.datetime(2026, 1, 4, tzinfo=dt.UTC), 5)  # a Sunday
    assert days == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


@pytest.mark.parametrize(
    ("now", "ready"),
    [
        ("2026-11-28T12:00:00+00:00", True),  # Saturday: nothing due since Friday 17:45
        ("2026-11-30T09:10:00+00:00", True),  # Monday: one run due since (09:00)
        ("2026-11-30T09:16:00+00:00", False),  # two due since (09:00, 09:15), neither ran
    ],
)
async def test_readyz_counts_a_cron_flow_by_its_own_times(
    open_rt: Callable[..., Any],
    daemon_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    now: str,
    ready: bool,
) -> None:
    """ "*/15 9-17 * * 1-5" runs on weekdays in office hours: after Friday's last run the
    flow is ready all weekend, and unready once two runs came due without a success.
    Twice the gap between its first two runs (30 minutes) read it as overdue every night."""
    daemon_config.write_text(
        daemon_config.read_text().replace(
            'schedule = "every 15m"', 'schedule = "*/15 9-17 * * 1-5"'
        )
    )
    async with open_rt(daemon_config) as rt:
        daemon = Daemon(rt, clock=Clock())
        monkeypatch.setattr(rt.store, "last_success", lambda _f: "2026-11-27T17:45:00+00:00")
        daemon.clock.now = dt.datetime.fromisoformat(now).timestamp()  # type: ignore[attr-defined]
        ok, checks = daemon.readiness()
    assert (ok, checks["flow:shop-to-crm"]["ok"]) == (ready, ready)


async def test_readyz_takes_a_cron_with_crontab_s_sunday_7(
    open_rt: Callable[..., Any], daemon_config: Path
) -> None:
    """Crontab's other Sunday (7), which the config accepts, answers /readyz (not a 500)."""
    daemon_config.write_text(
        daemon_config.read_text().replace('schedule = "every 15m"', 'schedule = "0 3 * * 7"')
    )
    async with open_rt(daemon_config) as rt:
        ok, checks = Daemon(rt, clock=Clock()).readiness()
    assert ok and checks["flow:shop-to-crm"]["reason"] == READY_STARTING


async def test_a_daemon_restarted_within_a_day_does_not_review_again(daemon: Daemon) -> None:
    """The daily review runs at a start only when none ran in the last day or the config
    changed since the last one; a daemon restarted a few times a day repeated its warnings
    and its `check.result` entry at each start."""
    store = daemon.rt.store
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert first_review(store, now) == now  # never reviewed
    await daemon.compliance_review()
    (_, reviewed) = audit.latest(store, audit.CHECK_RESULT) or (0, now)
    assert first_review(store, now) == reviewed + dt.timedelta(days=1)
    assert first_review(store, reviewed + dt.timedelta(days=2)) == reviewed + dt.timedelta(days=2)
    # A config that came into use after the review: its gaps may be new.
    audit.append(store, audit.CONFIG_LOADED, {"sha256": "0" * 64})
    assert first_review(store, now) == now


async def test_a_breach_clock_still_running_is_a_gauge_a_review_warning_and_in_status(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """An incident past its 72 hours showed only in `incident list`; overdue data subject
    requests are a gauge, a warning and a status line. Now an open incident is too."""
    from connector import incidents
    from connector.cli import main

    now = dt.datetime.now(dt.UTC)
    assert isinstance(daemon.clock, Clock)
    daemon.clock.now = now.timestamp()  # the daemon's clock and `status`'s agree
    config = daemon.rt.config
    store = daemon.rt.store
    late = incidents.open_incident(
        store, config, "laptop lost", aware_at=now - dt.timedelta(hours=80), now=now
    )
    fresh = incidents.open_incident(store, config, "mail to wrong customer", now=now)
    closed = incidents.open_incident(store, config, "resolved", now=now)
    incidents.close_incident(store, closed.id, "reported", now=now)

    daemon.refresh_gauges()
    async with _client(build_public_app(daemon)) as client:
        text = (await client.get("/metrics")).text
    assert "klantsync_incidents_open 2.0" in text
    assert "klantsync_incidents_overdue 1.0" in text
    # By the daemon's clock, as the requests' gauges: once the fresh one's 72 hours are out,
    # both are overdue.
    daemon.clock.now = (now + dt.timedelta(hours=73)).timestamp()
    daemon.refresh_gauges()
    async with _client(build_public_app(daemon)) as client:
        assert "klantsync_incidents_overdue 2.0" in (await client.get("/metrics")).text
    daemon.clock.now = now.timestamp()

    warned: list[int] = []

    class Incidents(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "breach incident open":
                warned.append(record.__dict__["incident"])

    seen = Incidents(logging.WARNING)
    logger = logging.getLogger("klantsync.daemon")
    logger.addHandler(seen)
    try:
        await daemon.compliance_review()
    finally:
        logger.removeHandler(seen)
    assert warned == [late.id, fresh.id]

    assert main(["-c", str(config.path), "status", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["incidents"]
    assert (listed["open"], listed["overdue"]) == (2, 1)
    assert [i["id"] for i in listed["incidents"]] == [late.id, fresh.id]
    assert listed["incidents"][0]["status"] == "overdue"
    assert "laptop" not in json.dumps(listed)  # the summary is the operator's free text
    assert main(["-c", str(config.path), "status"]) == 0
    said = capsys.readouterr().out
    assert "breach incidents: 2 open, 1 past their 72 hours" in said
    assert f"incident {late.id}: overdue by 8h" in said


METRICS_TOKEN = "metrics-token-for-tests"


@pytest.mark.parametrize("metrics_token", [None, METRICS_TOKEN])
async def test_metrics_beyond_loopback_are_served_only_for_the_metrics_token(
    open_rt: Callable[..., Any],
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    metrics_token: str | None,
) -> None:
    """With `tls_cert` and `tls_key` the public listener may face the internet (vendors
    deliver to it), and `/metrics` told anyone who found the host of a breach open past its
    72 hours, overdue requests, no backup, the master key's age and the processors used.
    Beyond loopback it is served only for `daemon.metrics_token` as a bearer token (the
    admin token does not do: a scraper may read, never erase); without one, to nobody."""
    from connector.devtls import DevCA
    from connector.incidents import open_incident

    pair = DevCA(tmp_path / "ca").issue("klantsync", hosts=("klantsync.voorbeeld.nl",))
    monkeypatch.setenv("T_ADMIN", ADMIN_TOKEN)
    monkeypatch.setenv("T_METRICS", METRICS_TOKEN)
    token_line = 'metrics_token = "env:T_METRICS"\n' if metrics_token else ""
    path = write_config(
        tmp_path,
        extra=(
            f'[daemon]\nlisten = "0.0.0.0:8787"\nadmin_token = "env:T_ADMIN"\n{token_line}'
            f'tls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"'
        ),
    )
    async with open_rt(path) as rt:
        daemon = Daemon(rt, clock=Clock())
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
        open_incident(rt.store, rt.config, "laptop lost", aware_at=long_ago, now=long_ago)
        outsider = httpx.ASGITransport(app=build_public_app(daemon), client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=outsider, base_url="https://daemon") as client:
            anyone = await client.get("/metrics")
            admin = await client.get("/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            scraper = await client.get(
                "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
            )
    for refused in (anyone, admin):
        assert refused.status_code == (401 if metrics_token else 403)
        assert "klantsync_" not in refused.text
    if metrics_token:
        assert anyone.headers["www-authenticate"] == "Bearer"
        assert scraper.status_code == 200
        assert "klantsync_incidents_overdue 1.0" in scraper.text
    else:
        assert scraper.status_code == 403 and "daemon.metrics_token" in scraper.text


async def test_a_daemon_whose_user_cannot_read_its_tls_key_does_not_start_without_listeners(
    open_rt: Callable[..., Any],
    daemon_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TLS key that cannot be read passes the config load (an operator's CLI command may
    run as another user), but the daemon's own user must read it: left root:root 0600, the
    daemon said "started" while both listeners died inside it. It refuses to start."""
    from connector.devtls import DevCA

    pair = DevCA(tmp_path / "ca").issue("localhost")
    text = daemon_config.read_text().replace(
        "[daemon]\n",
        f'[daemon]\ntls_cert = "{pair.cert_path}"\ntls_key = "{pair.key_path}"\n',
    )
    daemon_config.write_text(text)
    _listen_on_free_ports(daemon_config)
    real = ssl.SSLContext.load_cert_chain

    def unreadable_key(
        self: ssl.SSLContext, certfile: Any, keyfile: Any = None, *a: Any, **kw: Any
    ) -> Any:
        if keyfile is not None and Path(keyfile) == Path(pair.key_path):
            raise PermissionError(13, "Permission denied", str(keyfile))
        return real(self, certfile, keyfile, *a, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", unreadable_key)
    try:
        async with open_rt(daemon_config) as rt:
            daemon = Daemon(rt, clock=Clock())
            spawned: list[asyncio.Task[Any]] = []
            spawn = daemon._spawn

            def recorded(coro: Any) -> asyncio.Task[Any]:
                task = spawn(coro)
                spawned.append(task)
                return task

            daemon._spawn = recorded  # type: ignore[method-assign]
            serving = asyncio.ensure_future(daemon.serve(install_signals=False))
            for _ in range(500):
                await asyncio.sleep(0)
                if serving.done():
                    break
            if serving.done():
                with pytest.raises(ConfigError):
                    serving.result()
                return
            started = [e for e in audit.entries(rt.store) if e.kind == "daemon.started"]
            dead = [t for t in spawned if t.done() and t.exception() is not None]
            errors = [type(t.exception()).__name__ for t in dead]
            daemon.stop()
            await asyncio.wait_for(serving, 10)
    except ConfigError:
        return  # refused at load: as good
    pytest.fail(
        f"the daemon started ({len(started)} daemon.started entry) with a TLS key its user "
        f"cannot read; its listener tasks ended with {errors}: no webhooks, no health "
        "endpoint, no admin API"
    )


async def test_the_outbox_gauge_counts_what_waits_to_be_sent_not_held_writes(
    daemon: Daemon,
) -> None:
    """`klantsync_outbox_queued` is "payloads waiting": a row held with a write from a former
    address waits for nothing (it is kept for an erasure to read, and never sent), as
    `status` already counts it. Counted, an alert on a queue that never drains fired for
    good."""
    from connector.state import HELD, QueuedPayload

    store = daemon.rt.store
    payloads = [QueuedPayload("crm", f"{n:032x}", b"sealed", f"hash-{n}") for n in (1, 2)]
    store.enqueue_page("shop-to-crm", "shop", payloads, [], None, move_cursor=False)
    with store.transaction() as db:
        db.execute(
            "UPDATE outbox SET former=payload, payload_hash=? WHERE subject_no="
            "(SELECT subject_no FROM subjects WHERE subject_id=?)",
            (HELD, f"{1:032x}"),
        )

    async def gauge() -> float:
        daemon.refresh_gauges()
        async with _client(build_public_app(daemon)) as client:
            text = (await client.get("/metrics")).text
        (line,) = [x for x in text.splitlines() if x.startswith("klantsync_outbox_queued ")]
        return float(line.split()[1])

    assert store.outbox_counts() == {"crm": 1}
    assert await gauge() == 1.0


async def test_the_job_gauges_count_queued_and_running_jobs_by_kind(daemon: Daemon) -> None:
    """`klantsync_jobs{kind, state}`: jobs waiting and running, for an alert on a worker that
    is stuck (running stays, queued grows) or a flood of deliveries. Finished jobs are not
    counted; every kind and state is there (0 once drained), a kind this version does not
    know is `other`, and nothing of a job's parameters is."""
    store, keyring = daemon.rt.store, daemon.rt.keyring
    change = {"system": "shop", "event": "changed", "email": CANARY_EMAIL}
    first = jobs.enqueue(store, keyring, "webhook", change)
    jobs.enqueue(store, keyring, "webhook", change)
    jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    jobs.enqueue(store, keyring, "from-a-newer-version", {})
    finished = jobs.enqueue(store, keyring, "dsr", {"kind": "access", "email": CANARY_EMAIL})
    jobs.finish(store, finished, "done", {})
    claimed = jobs.claim_next(store, keyring)
    assert claimed is not None and claimed.id == first

    async def gauges() -> dict[str, float]:
        daemon.refresh_gauges()
        async with _client(build_public_app(daemon)) as client:
            text = (await client.get("/metrics")).text
        assert "@" not in text
        return {
            line.split()[0]: float(line.split()[1])
            for line in _metric_lines(text, "klantsync_jobs{")
        }

    def series(kind: str, state: str) -> str:
        return f'klantsync_jobs{{kind="{kind}",state="{state}"}}'

    expected = {
        series(kind, state): 0.0
        for kind in ("resync", "webhook", "dsr", "other")
        for state in ("queued", "running")
    }
    assert await gauges() == {
        **expected,
        series("webhook", "running"): 1.0,
        series("webhook", "queued"): 1.0,
        series("resync", "queued"): 1.0,
        series("other", "queued"): 1.0,
    }
    with store.transaction() as db:
        db.execute("UPDATE jobs SET status='done' WHERE status IN ('queued', 'running')")
    assert await gauges() == expected


class _Said(logging.Handler):
    """Records the daemon's warnings with their extras."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def said(self, message: str) -> dict[str, Any] | None:
        found = [r.__dict__ for r in self.records if r.getMessage() == message]
        return found[-1] if found else None


async def test_the_review_warns_of_requests_due_within_a_week_and_overdue_and_a_gauge_counts_them(
    daemon: Daemon, shop: WooCommerceSandbox
) -> None:
    """A request's deadline (one month, Art. 12(3)) was a gauge only once past: an alert
    could fire only too late. Open requests due within 7 days are now a gauge by kind
    (every kind there, 0 if none), and the daily review warns of them and of the overdue
    ones, by count and request id, never by address."""
    from connector.dsr import DsrService

    assert isinstance(daemon.clock, Clock)
    now = dt.datetime.fromtimestamp(daemon.clock.now, dt.UTC)
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    shop.faults.down = True  # every request stays open

    def received(days_ago: int) -> DsrService:
        return DsrService(daemon.rt, now=lambda: now - dt.timedelta(days=days_ago))

    due = await received(26).erase(CANARY_EMAIL)
    late = await received(40).access("te.laat@voorbeeld.test")
    later = await received(1).access("nog.tijd@voorbeeld.test")
    assert due.is_open and late.is_open and later.is_open

    daemon.refresh_gauges()
    async with _client(build_public_app(daemon)) as client:
        text = (await client.get("/metrics")).text
    assert "@" not in text
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in _metric_lines(text, "klantsync_dsr_due_soon{")
    }
    assert gauges == {
        'klantsync_dsr_due_soon{kind="erase"}': 1.0,
        'klantsync_dsr_due_soon{kind="access"}': 0.0,
        'klantsync_dsr_due_soon{kind="rectify"}': 0.0,
        'klantsync_dsr_due_soon{kind="other"}': 0.0,
    }
    assert "klantsync_dsr_overdue 1.0" in text and "klantsync_dsr_open 3.0" in text

    said = _Said()
    logger = logging.getLogger("klantsync.daemon")
    logger.addHandler(said)
    try:
        await daemon.compliance_review()
    finally:
        logger.removeHandler(said)
    soon = said.said("data subject requests due within 7 days")
    overdue = said.said("data subject requests overdue")
    assert soon is not None and (soon["count"], soon["requests"]) == (1, [due.id])
    assert overdue is not None and (overdue["count"], overdue["requests"]) == (1, [late.id])
    assert "@" not in repr([r.__dict__ for r in said.records])


async def test_the_job_gauges_say_how_long_the_oldest_queued_job_waits_and_the_running_one_runs(
    daemon: Daemon,
) -> None:
    """A worker stuck on a hanging call showed only as "running stays 1 while queued grows".
    `/metrics` now says how long the oldest queued job has waited and the running one run,
    in seconds (0 when there is none), for an alert such as "nothing taken for 15 minutes"."""
    store, keyring = daemon.rt.store, daemon.rt.keyring
    assert isinstance(daemon.clock, Clock)

    def ago(seconds: float) -> str:
        return dt.datetime.fromtimestamp(daemon.clock.now - seconds, dt.UTC).isoformat(
            timespec="seconds"
        )

    async def ages() -> tuple[float, float]:
        daemon.refresh_gauges()
        async with _client(build_public_app(daemon)) as client:
            text = (await client.get("/metrics")).text
        (queued,) = _metric_lines(text, "klantsync_jobs_oldest_queued_seconds ")
        (running,) = _metric_lines(text, "klantsync_jobs_longest_running_seconds ")
        return float(queued.split()[1]), float(running.split()[1])

    assert await ages() == (0.0, 0.0)
    change = {"system": "shop", "event": "changed", "email": CANARY_EMAIL}
    hung = jobs.enqueue(store, keyring, "webhook", change)
    waiting = jobs.enqueue(store, keyring, "webhook", change)
    newer = jobs.enqueue(store, keyring, "resync", {"system": "shop"})
    claimed = jobs.claim_next(store, keyring)
    assert claimed is not None and claimed.id == hung
    with store.transaction() as db:
        db.execute(
            "UPDATE jobs SET created_at=?, started_at=? WHERE id=?", (ago(1500), ago(1400), hung)
        )
        db.execute("UPDATE jobs SET created_at=? WHERE id=?", (ago(1200), waiting))
        db.execute("UPDATE jobs SET created_at=? WHERE id=?", (ago(60), newer))
    assert await ages() == (1200.0, 1400.0)
    with store.transaction() as db:
        db.execute("UPDATE jobs SET status='done' WHERE status IN ('queued', 'running')")
    assert await ages() == (0.0, 0.0)
