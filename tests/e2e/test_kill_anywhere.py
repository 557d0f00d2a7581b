"""Killed at any point, and started again: nothing lost, nothing twice, every erasure finished.

The process is "killed" at one moment of a run, chosen in turn from every moment it has:
before or after each commit (or write outside a transaction) of the store, and right after each
call a vendor carried out, before the connector read the answer (the vendor did it; the
connector never learns). From that moment nothing more reaches the store or any vendor, as
with ``kill -9``: every later statement and call raises :class:`Killed`, which is not an
``Exception``, so no handler of the connector's can record a failure a dead process could not
have recorded. Then the run starts again on the same store and the same sandboxes, and what
the vendors hold must be exactly what an uninterrupted run would have left.

Other tests keep the process alive and fail one call (:func:`_every_call`): each call in turn
is carried out by the vendor and its answer lost on the way back, as a connection reset does
(a create sent again blindly makes a second record), or refused with a 400 or a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import adapters.woocommerce.adapter as woocommerce_adapter
import connector.store_base
from connector import audit, jobs
from connector.adapter import WebhookRequest
from connector.config import Config, load_config
from connector.crypto import BUNDLE_PATH_CONTEXT
from connector.daemon import Daemon
from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from connector.webhooks import receive
from tests.conftest import VirtualTime
from tests.e2e.test_multi_system import SHOPIFY_SECRET, World, write_config

CUSTOMERS = 7  # with a page of 3, each re-reading the last two of the one before: five pages
_DURABLE = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class Killed(BaseException):
    """The process died here (not an ``Exception``: nothing in the connector handles it)."""


class Death:
    """Counts the moments of a run and kills it at one of them.

    ``at=None`` only counts, to learn how many moments a run has. A moment is a point where
    dying leaves a different world: before a commit or a write outside a transaction (what
    was done since the last one is lost), right after one (it holds), and right after a
    vendor carried out a call.
    """

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.moments = 0
        self.dead = False

    def moment(self) -> None:
        if self.dead:
            raise Killed("already dead")
        self.moments += 1
        if self.moments == self.at:
            self.dead = True
            raise Killed(f"killed at moment {self.at}")


def _connection_class(death: Death) -> type[sqlite3.Connection]:
    class Mortal(sqlite3.Connection):
        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            return self._run(sql, lambda: super(Mortal, self).execute(sql, parameters))

        def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
            return self._run(sql, lambda: super(Mortal, self).executemany(sql, parameters))

        def _run(self, sql: str, statement: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
            word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if word == "ROLLBACK":
                return statement()  # what reopening the file after a kill does anyway
            if death.dead:
                raise Killed("already dead")
            durable = word == "COMMIT" or (word in _DURABLE and not self.in_transaction)
            if not durable:
                return statement()
            death.moment()  # before
            cursor = statement()
            death.moment()  # after
            return cursor

    return Mortal


class _SqliteWith:
    """``sqlite3`` as the store sees it, with connections that can die."""

    def __init__(self, death: Death) -> None:
        self._factory = _connection_class(death)

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)

    def connect(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        return sqlite3.connect(*args, factory=self._factory, **kwargs)


class _MortalTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, death: Death) -> None:
        self.inner = inner
        self.death = death

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.death.dead:
            raise Killed("already dead")
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.death.moment()  # the vendor did it; the answer is lost with the process
        return response


@asynccontextmanager
async def _process(
    world: World, config: Config, monkeypatch: pytest.MonkeyPatch, death: Death | None
) -> AsyncIterator[Runtime]:
    """One process's life on the shared store and sandboxes; ``death`` may cut it short."""
    transports: dict[str, httpx.AsyncBaseTransport] = dict(world.transports())
    with monkeypatch.context() as patch:
        if death is not None:
            patch.setattr(connector.store_base, "sqlite3", _SqliteWith(death))
            transports = {n: _MortalTransport(t, death) for n, t in transports.items()}
        time = VirtualTime()
        async with open_runtime(
            config, transports=transports, sleep=time.sleep, clock=time.clock
        ) as rt:
            # A patch that missed the store's connection would leave its commits unkillable.
            assert death is None or type(rt.store.db).__name__ == "Mortal"
            yield rt


async def _every_death(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[World, Runtime], Awaitable[None]],
    work: Callable[[World, Runtime], Awaitable[None]],
    recover: Callable[[World, Runtime], Awaitable[None]],
    check: Callable[[World, Runtime, int], None],
) -> int:
    """Run ``work`` once to count its moments, then once killed at each, recovering after.

    ``before`` sets the scene (in a process that does not die); ``check`` judges the world
    after ``recover`` ran in a new process. Returns how many moments there were.
    """
    monkeypatch.setattr(woocommerce_adapter, "PAGE_SIZE", 3)
    count = Death()
    moments = -1
    at = runs = 0
    while moments < 0 or at < moments:
        at += 1
        runs += 1
        case = tmp_path / f"run-{runs}"
        case.mkdir()
        world = World()
        world.shop.seed_synthetic(CUSTOMERS, seed=91)
        config = load_config(write_config(case, world))  # once: each process reads it alike
        async with _process(world, config, monkeypatch, None) as rt:
            await before(world, rt)
        death = count if moments < 0 else Death(at)
        try:
            async with _process(world, config, monkeypatch, death) as rt:
                await work(world, rt)
        except BaseException:
            # Once dead, whatever the run raises on its way out is the death's doing.
            if not death.dead:
                raise
        else:
            if moments < 0:
                moments = count.moments  # the counting run: every moment lived through
                at = 0
                continue
            pytest.fail(f"a run to be killed at moment {at} of {moments} was not")
        async with _process(world, config, monkeypatch, None) as rt:
            await recover(world, rt)
            check(world, rt, at)
    return moments


def _vouched_for(rt: Runtime, at: int) -> None:
    """The audit chain is whole, and holds each completed request's receipt hash once."""
    assert audit.verify(rt.store).ok, at
    service = DsrService(rt)
    hashes = [
        e.data["receipt_sha256"] for e in audit.entries(rt.store) if e.kind == "dsr.completed"
    ]
    for view in service.list():
        receipt = service.receipt(view.id)
        assert receipt is not None, at
        digest = hashlib.sha256(receipt.encode()).hexdigest()
        assert hashes.count(digest) == 1, (at, view.id)


def _emails(world: World) -> list[str]:
    return [world.shop.store.get(i)["email"] for i in range(1, CUSTOMERS + 1)]


def _consenting(world: World) -> list[str]:
    # seed_synthetic opts every other customer in to marketing (odd ids).
    return [e for i, e in enumerate(_emails(world), start=1) if i % 2]


async def _nothing(_world: World, _rt: Runtime) -> None:
    return None


async def _sync(_world: World, rt: Runtime) -> None:
    await rt.engine.sync("shop")


async def _sync_until_complete(_world: World, rt: Runtime) -> None:
    for _ in range(3):
        (report,) = await rt.engine.sync("shop")
        assert not report.failed, report.errors
        if report.complete and not report.errors:
            return
    pytest.fail("three syncs after a restart did not complete")


async def _erased_then_synced(world: World, rt: Runtime, email: str) -> None:
    """The recovery after an erasure beside a sync: the erasure asked again if the killed
    run did not complete it, then syncs until one runs to its end."""
    service = DsrService(rt)
    if not any(v.status == "completed" for v in service.list()):
        view = await service.erase(email)
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]
    await _sync_until_complete(world, rt)


def _scanned_in_pages(world: World, at: int) -> None:
    """The shop's customers were read in pages of three, several of them: in one page a
    run has no moment between two pages to be cut at, nor a cursor to resume from."""
    scan = [e for e in world.shop.log.entries if "offset" in e.query]
    assert {e.query["per_page"] for e in scan} == {"3"}, at
    assert len({e.query["offset"] for e in scan}) >= 3, at


def _each_once(world: World, rt: Runtime, at: int) -> None:
    emails = _emails(world)
    for email in emails:
        assert world.crm.holds(email), (at, "crm")
        assert len(world.deals.store.with_email(email)) == 1, (at, "deals: one person each")
    assert world.crm.contact_count() == CUSTOMERS, at
    assert world.deals.person_count() == CUSTOMERS, at
    assert {e for e in emails if world.news.holds(e)} == set(_consenting(world)), at
    assert rt.store.outbox_count() == 0, at


async def test_a_sync_killed_at_any_moment_and_run_again_leaves_each_customer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync to HubSpot, Mailchimp and Pipedrive, killed at every moment it has in
    turn: the next run leaves each customer in each system once, and a run after that has
    nothing to write."""

    async def recover(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        for sandbox in (world.crm, world.news, world.deals):
            sandbox.log.clear()
        (again,) = await rt.engine.sync("shop")
        assert not again.failed
        assert [s.log.writes() for s in (world.crm, world.news, world.deals)] == [[], [], []]

    def check(world: World, rt: Runtime, at: int) -> None:
        _scanned_in_pages(world, at)
        _each_once(world, rt, at)

    moments = await _every_death(tmp_path, monkeypatch, _nothing, _sync, recover, check)
    assert moments > 20  # the run was cut at every commit and every call, not at a few


async def test_a_changed_customers_sync_killed_at_any_moment_sends_the_change_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a complete sync three customers change: one their name, one their address, one
    withdraws their newsletter consent. The sync that carries it, killed anywhere, leaves
    the change in every system, no second person under either address, and the one who
    withdrew unsubscribed."""
    addresses: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        renamed, moved, withdrawn = _emails(world)[:3]  # the third opted in (odd id)
        world.shop.touch(renamed, first_name="Veranderd")
        world.shop.touch(moved, email="nieuw.adres@voorbeeld.nl")
        world.shop.touch(withdrawn, meta_data=[{"key": "marketing_opt_in", "value": "no"}])
        addresses.update(renamed=renamed, moved=moved, withdrawn=withdrawn)

    def check(world: World, rt: Runtime, at: int) -> None:
        emails = _emails(world)
        for email in emails:
            assert len(world.deals.store.with_email(email)) == 1, (at, "deals: one each")
        assert all(world.crm.holds(e) for e in emails), at
        assert world.crm.contact_count() == world.deals.person_count() == CUSTOMERS, at
        assert rt.store.outbox_count() == 0, at
        renamed = world.crm.record_for(addresses["renamed"])
        assert renamed is not None and renamed["properties"]["firstname"] == "Veranderd", at
        assert not world.crm.holds(addresses["moved"]), at
        assert not world.deals.holds(addresses["moved"]), at
        member = world.news.record_for(addresses["withdrawn"])
        assert member is not None and member["status"] == "unsubscribed", at

    moments = await _every_death(tmp_path, monkeypatch, before, _sync, _sync_until_complete, check)
    assert moments > 10


async def test_a_rectification_killed_at_any_moment_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correction of a name over the shop, HubSpot, Mailchimp and Pipedrive, killed at
    each of its moments and run again: one request, completed, every system corrected."""
    asked: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        asked["email"] = _consenting(world)[0]  # in all four systems

    async def rectify(_world: World, rt: Runtime) -> None:
        await DsrService(rt).rectify(asked["email"], {"first_name": "Gecorrigeerd"})

    async def recover(_world: World, rt: Runtime) -> None:
        service = DsrService(rt)
        if any(v.status == "completed" for v in service.list()):
            return
        view = await service.rectify(asked["email"], {"first_name": "Gecorrigeerd"})
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(world: World, rt: Runtime, at: int) -> None:
        email = asked["email"]
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        shop, crm = world.shop.record_for(email), world.crm.record_for(email)
        news, deals = world.news.record_for(email), world.deals.record_for(email)
        assert shop is not None and shop["first_name"] == "Gecorrigeerd", at
        assert crm is not None and crm["properties"]["firstname"] == "Gecorrigeerd", at
        assert news is not None and news["merge_fields"]["FNAME"] == "Gecorrigeerd", at
        assert deals is not None and deals["first_name"] == "Gecorrigeerd", at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, rectify, recover, check)
    assert moments > 10


async def test_an_erasure_killed_at_any_moment_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure over the shop, HubSpot, Mailchimp and Pipedrive, killed at each of its
    moments: asked again (or retried) after the restart, it is one request, completed, with
    the person in no system, everyone else untouched, and the audit chain whole."""
    erased: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        erased["email"] = _consenting(world)[0]  # in all four systems
        erased["others"] = " ".join(e for e in _emails(world) if e != erased["email"])

    async def erase(_world: World, rt: Runtime) -> None:
        await DsrService(rt).erase(erased["email"])

    async def recover(_world: World, rt: Runtime) -> None:
        # The operator whose `dsr erase` died looks at `dsr list`: a request completed
        # before the death is done with. Otherwise they run the command again, and the
        # request the dead process recorded, if it got that far, goes on where it was.
        service = DsrService(rt)
        if any(v.status == "completed" for v in service.list()):
            return
        view = await service.erase(erased["email"])
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(world: World, rt: Runtime, at: int) -> None:
        email = erased["email"]
        for name in ("shop", "crm", "news", "deals"):
            assert not getattr(world, name).holds(email), (at, name)
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        others = erased["others"].split()
        assert all(world.crm.holds(e) and world.deals.holds(e) for e in others), at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, erase, recover, check)
    assert moments > 10


async def test_an_access_request_killed_at_any_moment_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An access request over the four systems, killed at each of its moments and asked
    again: one request, completed, and one bundle holding every system's records."""
    asked: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        asked["email"] = _consenting(world)[0]  # in all four systems
        asked["out"] = str(rt.config.store_path.parent / "bundle")

    async def access(_world: World, rt: Runtime) -> None:
        await DsrService(rt).access(asked["email"], Path(asked["out"]))

    async def recover(_world: World, rt: Runtime) -> None:
        service = DsrService(rt)
        if any(v.status == "completed" for v in service.list()):
            return
        view = await service.access(asked["email"], Path(asked["out"]))
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(_world: World, rt: Runtime, at: int) -> None:
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        data = json.loads((Path(asked["out"]) / "data.json").read_text())
        for name in ("shop", "crm", "news", "deals"):
            assert data["systems"][name]["records"], (at, name)
        # The bundle is recorded, so the retention sweep deletes it when its time comes.
        ((sealed,),) = rt.store.db.execute("SELECT path FROM bundles").fetchall()
        opened = rt.keyring.open(sealed, BUNDLE_PATH_CONTEXT).decode()
        assert opened == str(Path(asked["out"]).resolve()), at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, access, recover, check)
    assert moments > 10


async def test_the_daemons_webhooks_killed_at_any_moment_are_all_carried_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Shopify deliveries to the daemon: a customer's change and a customers/redact of
    another. Killed at each moment of taking them (noting each delivery and queueing its
    job) and carrying them out, the daemon is started again as it starts (jobs left running
    go back to the queue) and Shopify delivers both again, as it does for any delivery not
    answered 200: each is carried out, once."""
    people = {"changed": "veranderd@voorbeeld.nl", "erased": "vergeet.mij@voorbeeld.nl"}
    deliveries: list[WebhookRequest] = []

    async def before(world: World, rt: Runtime) -> None:
        for email in people.values():
            world.shopify.add_person(email, "Klant", "Shopify", marketing_state="SUBSCRIBED")
        (report,) = await rt.engine.sync("shopify")
        assert not report.failed, report.errors
        world.shopify.touch(people["changed"], firstName="Veranderd")
        changed = world.shopify.record_for(people["changed"])
        assert changed is not None
        number = int(changed["legacyResourceId"])
        redact = world.shopify.compliance_payload("customers/redact", people["erased"])
        deliveries.clear()
        for topic, payload in (
            ("customers/update", {"id": number, "email": people["changed"]}),
            ("customers/redact", redact),
        ):
            body, headers = world.shopify.signed_webhook(topic, payload, SHOPIFY_SECRET)
            lowered = {k.lower(): v for k, v in headers.items()}
            url = "https://connector.test/webhooks/shopify"
            deliveries.append(WebhookRequest("POST", url, lowered, body))

    async def work(_world: World, rt: Runtime) -> None:
        for request in deliveries:
            assert receive(rt, "shopify", request, time.time()).status == 200
        await _run_jobs(Daemon(rt))

    async def recover(world: World, rt: Runtime) -> None:
        jobs.requeue_running(rt.store)  # what a daemon does when it starts
        for request in deliveries:
            assert receive(rt, "shopify", request, time.time()).status == 200
        await _run_jobs(Daemon(rt))
        world.shopify.process_erasures()  # Shopify erases in its own time; then verified
        await DsrService(rt).retry_open()

    def check(world: World, rt: Runtime, at: int) -> None:
        statuses = [r[0] for r in rt.store.db.execute("SELECT status FROM jobs")]
        assert statuses == ["done", "done"], (at, statuses)
        for name in ("shopify", "crm", "news", "deals"):
            assert not getattr(world, name).holds(people["erased"]), (at, name)
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        contact = world.crm.record_for(people["changed"])
        assert contact is not None and contact["properties"]["firstname"] == "Veranderd", at
        assert len(world.deals.store.with_email(people["changed"])) == 1, at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, work, recover, check)
    assert moments > 10


async def _run_jobs(daemon: Daemon) -> None:
    """Run the daemon's job worker until nothing is queued or running, then stop it."""
    store = daemon.rt.store

    def waiting() -> bool:
        row = store.db.execute(
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') LIMIT 1"
        ).fetchone()
        return row is not None

    worker = asyncio.create_task(daemon.jobs.run())
    try:
        while waiting() and not worker.done():
            await asyncio.sleep(0)  # a turn of the loop for the worker; no waiting on time
    finally:
        daemon.stopping.set()
        daemon.jobs.wake.set()
    await worker


async def test_an_erasure_during_a_sync_killed_at_any_moment_keeps_the_person_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync and an erasure of one of its customers, at once, killed at each moment
    of the two: after the restart (the erasure asked again, syncs run to the end) the person
    is in no system, everyone else is in each once, and the request is one, completed."""
    erased: dict[str, str] = {}

    async def before(world: World, _rt: Runtime) -> None:
        erased["email"] = _consenting(world)[1]
        erased["others"] = " ".join(e for e in _emails(world) if e != erased["email"])

    async def both(_world: World, rt: Runtime) -> None:
        await asyncio.gather(rt.engine.sync("shop"), DsrService(rt).erase(erased["email"]))

    async def recover(world: World, rt: Runtime) -> None:
        await _erased_then_synced(world, rt, erased["email"])

    def check(world: World, rt: Runtime, at: int) -> None:
        for name in ("shop", "crm", "news", "deals"):
            assert not getattr(world, name).holds(erased["email"]), (at, name)
        others = erased["others"].split()
        for email in others:
            assert world.crm.holds(email), (at, "crm")
            assert len(world.deals.store.with_email(email)) == 1, (at, "deals")
        assert world.crm.contact_count() == world.deals.person_count() == len(others), at
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        assert rt.store.outbox_count() == 0, at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, both, recover, check)
    assert moments > 20


async def _shopify_customers(world: World, rt: Runtime, emails: list[str], synced: int) -> None:
    """``synced`` of ``emails`` as Shopify customers synced once, the rest new since, and
    the first renamed since."""
    for email in emails[:synced]:
        world.shopify.add_person(email, "Klant", "Shopify", marketing_state="SUBSCRIBED")
    (report,) = await rt.engine.sync("shopify")
    assert not report.failed, report.errors
    for email in emails[synced:]:
        world.shopify.add_person(email, "Nieuw", "Shopify", marketing_state="SUBSCRIBED")
    world.shopify.touch(emails[0], firstName="Veranderd")


async def test_a_shopify_sync_killed_at_any_moment_leaves_each_customer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Shopify flow (an incremental pull by updatedAt), killed at each moment of a sync
    that carries two new customers and a change to one synced before: the next run leaves
    each in HubSpot and Pipedrive once, the change included, and the run after writes
    nothing."""
    emails = [f"shopify.klant{n}@voorbeeld.nl" for n in range(1, 6)]

    async def before(world: World, rt: Runtime) -> None:
        await _shopify_customers(world, rt, emails, synced=3)

    async def recover(world: World, rt: Runtime) -> None:
        for _ in range(3):
            (report,) = await rt.engine.sync("shopify")
            assert not report.failed, report.errors
            if report.complete and not report.errors:
                break
        for sandbox in (world.crm, world.news, world.deals):
            sandbox.log.clear()
        (again,) = await rt.engine.sync("shopify")
        assert not again.failed
        assert [s.log.writes() for s in (world.crm, world.news, world.deals)] == [[], [], []]

    def check(world: World, rt: Runtime, at: int) -> None:
        for email in emails:
            assert world.crm.holds(email) and world.news.holds(email), (at, email)
            assert len(world.deals.store.with_email(email)) == 1, (at, email)
        changed = world.crm.record_for(emails[0])
        assert changed is not None and changed["properties"]["firstname"] == "Veranderd", at
        assert world.crm.contact_count() == len(emails), at
        assert rt.store.outbox_count() == 0, at

    async def sync(_world: World, rt: Runtime) -> None:
        await rt.engine.sync("shopify")

    moments = await _every_death(tmp_path, monkeypatch, before, sync, recover, check)
    assert moments > 10


async def test_a_scheduled_run_beside_a_webhook_killed_at_any_moment_sends_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's scheduled Shopify run and a customers/update delivery for a customer it
    is also carrying, at once, killed at each moment of the two: after the restart each
    customer is in each destination once, with the change."""
    emails = [f"tegelijk{n}@voorbeeld.nl" for n in range(1, 5)]
    deliveries: list[WebhookRequest] = []

    async def before(world: World, rt: Runtime) -> None:
        await _shopify_customers(world, rt, emails, synced=2)
        changed = world.shopify.record_for(emails[0])
        assert changed is not None
        payload = {"id": int(changed["legacyResourceId"]), "email": emails[0]}
        body, headers = world.shopify.signed_webhook("customers/update", payload, SHOPIFY_SECRET)
        lowered = {k.lower(): v for k, v in headers.items()}
        deliveries[:] = [
            WebhookRequest("POST", "https://connector.test/webhooks/shopify", lowered, body)
        ]

    async def work(_world: World, rt: Runtime) -> None:
        daemon = Daemon(rt)
        assert receive(rt, "shopify", deliveries[0], time.time()).status == 200
        await asyncio.gather(daemon.run_flow("shopify"), _run_jobs(daemon))

    async def recover(world: World, rt: Runtime) -> None:
        jobs.requeue_running(rt.store)
        assert receive(rt, "shopify", deliveries[0], time.time()).status == 200
        await _run_jobs(Daemon(rt))
        daemon = Daemon(rt)  # the worker's stopped with its daemon: scheduled runs on a new one
        for _ in range(3):
            report = await daemon.run_flow("shopify")
            assert report is not None and not report.failed, report and report.errors
            if report.complete and not report.errors:
                break

    def check(world: World, rt: Runtime, at: int) -> None:
        for email in emails:
            assert world.crm.holds(email) and world.news.holds(email), (at, email)
            assert len(world.deals.store.with_email(email)) == 1, (at, email)
        assert world.crm.contact_count() == len(emails), at
        changed = world.crm.record_for(emails[0])
        assert changed is not None and changed["properties"]["firstname"] == "Veranderd", at
        assert rt.store.outbox_count() == 0, at
        statuses = {r[0] for r in rt.store.db.execute("SELECT status FROM jobs")}
        assert statuses == {"done"}, (at, statuses)

    moments = await _every_death(tmp_path, monkeypatch, before, work, recover, check)
    assert moments > 10


class _OneCallFails(httpx.AsyncBaseTransport):
    """The ``at``-th call fails: refused with ``status`` (not carried out), or, with no
    status, carried out by the vendor and its answer lost on the way back (a connection
    reset). The process lives, and goes on as it does after any such failure."""

    def __init__(self, inner: httpx.AsyncBaseTransport, calls: list[int], status: int | None):
        self.inner, self.calls, self.status = inner, calls, status
        self.at: int | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[0] += 1
        if self.calls[0] != self.at:
            return await self.inner.handle_async_request(request)
        if self.status is not None:
            return httpx.Response(self.status, json={"message": "refused"})
        response = await self.inner.handle_async_request(request)
        await response.aread()
        raise httpx.ReadError("connection reset after the vendor answered")


async def _every_call(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int | None,
    before: Callable[[World, Runtime], Awaitable[None]],
    work: Callable[[World, Runtime], Awaitable[None]],
    check: Callable[[World, Runtime, int], None],
    recover: Callable[[World, Runtime], Awaitable[None]] = _nothing,
) -> int:
    """As :func:`_every_death`, but the process lives: each call of ``work`` in turn fails
    (see :class:`_OneCallFails`; ``before`` runs with none failing). Then the fault is lifted,
    ``recover`` runs and ``check`` judges. Returns how many calls ``work`` makes."""
    monkeypatch.setattr(woocommerce_adapter, "PAGE_SIZE", 3)
    at, total = 0, None
    while total is None or at < total:
        at += 1
        world = World()
        world.shop.seed_synthetic(CUSTOMERS, seed=91)
        case = tmp_path / f"call-{at}-of-{total}"
        case.mkdir()
        calls = [0]
        transports = {n: _OneCallFails(t, calls, status) for n, t in world.transports().items()}
        time_ = VirtualTime()
        config = load_config(write_config(case, world))
        async with open_runtime(
            config, transports=dict(transports), sleep=time_.sleep, clock=time_.clock
        ) as rt:
            await before(world, rt)
            calls[0] = 0
            for transport in transports.values():
                transport.at = None if total is None else at
            await work(world, rt)
            made = calls[0]
            for transport in transports.values():
                transport.at = None
            await recover(world, rt)
            check(world, rt, at)
        if total is None:
            total, at = made, 0
    assert total is not None
    return total


async def test_a_first_sync_whose_any_one_answer_is_lost_still_writes_each_customer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of a first sync to HubSpot, Mailchimp and Pipedrive in turn is carried out
    by the vendor and its answer lost (the process lives and retries): each customer is
    still in each system once. A retried create is where a duplicate would come from."""

    def check(world: World, rt: Runtime, at: int) -> None:
        _scanned_in_pages(world, at)
        _each_once(world, rt, at)

    calls = await _every_call(tmp_path, monkeypatch, None, _nothing, _sync_until_complete, check)
    assert calls > 20


async def test_an_erasure_whose_any_one_answer_is_lost_completes_when_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of an erasure over the four systems in turn loses its answer: the request
    completes (at once, or when retried as the daemon does), the person in no system."""
    erased: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        erased["email"] = _consenting(world)[0]

    async def erase(_world: World, rt: Runtime) -> None:
        service = DsrService(rt)
        view = await service.erase(erased["email"])
        if view.is_open:
            view = await service.retry(view.id)
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(world: World, rt: Runtime, at: int) -> None:
        for name in ("shop", "crm", "news", "deals"):
            assert not getattr(world, name).holds(erased["email"]), (at, name)
        _vouched_for(rt, at)

    assert await _every_call(tmp_path, monkeypatch, None, before, erase, check) > 10


async def test_a_correction_whose_any_one_answer_is_lost_completes_when_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of a correction over the four systems in turn loses its answer: the
    request completes (at once, or retried), every system corrected, nobody added."""
    asked: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        asked["email"] = _consenting(world)[0]

    async def rectify(_world: World, rt: Runtime) -> None:
        service = DsrService(rt)
        view = await service.rectify(asked["email"], {"first_name": "Gecorrigeerd"})
        if view.is_open:
            view = await service.retry(view.id)
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(world: World, rt: Runtime, at: int) -> None:
        email = asked["email"]
        crm, deals = world.crm.record_for(email), world.deals.record_for(email)
        assert crm is not None and crm["properties"]["firstname"] == "Gecorrigeerd", at
        assert deals is not None and deals["first_name"] == "Gecorrigeerd", at
        assert len(world.deals.store.with_email(email)) == 1, at
        assert world.crm.contact_count() == CUSTOMERS, at

    assert await _every_call(tmp_path, monkeypatch, None, before, rectify, check) > 10


@pytest.mark.parametrize("status", [400, 500])
async def test_a_first_sync_with_any_one_call_refused_is_made_whole_by_the_next_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """Each call of a first sync in turn is refused (a 400 for what was sent, or a 500):
    the run ends without an internal error, and the next run, and a full one for what a
    system refused for good, leave each customer in each system once."""

    async def sync(_world: World, rt: Runtime) -> None:
        await rt.engine.sync("shop")  # may fail; must not crash

    async def recover(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        (full,) = await rt.engine.sync("shop", full=True)
        assert not full.failed, full.errors

    def check(world: World, rt: Runtime, at: int) -> None:
        _each_once(world, rt, at)
        assert not rt.store.dead_letters(), at

    total = await _every_call(tmp_path, monkeypatch, status, _nothing, sync, check, recover)
    assert total > 20


async def test_an_erasure_under_a_former_address_during_the_move_keeps_the_person_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A synced customer changes their address in the shop; the sync that carries the move
    and their erasure under the address they had run at once, killed at each moment of the
    two: after the restart the person is in no system under either address, and everyone
    else is in each once."""
    person: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        old = _consenting(world)[1]
        person.update(old=old, new="verhuisd.en.vergeten@voorbeeld.nl")
        person["others"] = " ".join(e for e in _emails(world) if e != old)
        world.shop.touch(old, email=person["new"])

    async def both(_world: World, rt: Runtime) -> None:
        await asyncio.gather(rt.engine.sync("shop"), DsrService(rt).erase(person["old"]))

    async def recover(world: World, rt: Runtime) -> None:
        await _erased_then_synced(world, rt, person["old"])

    def check(world: World, rt: Runtime, at: int) -> None:
        for name in ("shop", "crm", "news", "deals"):
            for address in (person["old"], person["new"]):
                assert not getattr(world, name).holds(address), (at, name, address)
        others = person["others"].split()
        for email in others:
            assert world.crm.holds(email), (at, "crm")
            assert len(world.deals.store.with_email(email)) == 1, (at, "deals")
        assert world.crm.contact_count() == world.deals.person_count() == len(others), at
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, both, recover, check)
    assert moments > 20


async def test_a_shopify_sync_whose_any_one_answer_is_lost_writes_each_customer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Shopify flow, each call of a sync carrying new customers and a change losing its
    answer in turn: each customer is in HubSpot, Mailchimp and Pipedrive once."""
    emails = [f"shopify.kwijt{n}@voorbeeld.nl" for n in range(1, 5)]

    async def before(world: World, rt: Runtime) -> None:
        await _shopify_customers(world, rt, emails, synced=2)

    async def sync(_world: World, rt: Runtime) -> None:
        for _ in range(3):
            (report,) = await rt.engine.sync("shopify")
            if report.complete and not report.errors and not report.failed:
                return
        pytest.fail("three Shopify syncs did not complete")

    def check(world: World, rt: Runtime, at: int) -> None:
        for email in emails:
            assert world.crm.holds(email) and world.news.holds(email), (at, email)
            assert len(world.deals.store.with_email(email)) == 1, (at, email)
        changed = world.crm.record_for(emails[0])
        assert changed is not None and changed["properties"]["firstname"] == "Veranderd", at
        assert rt.store.outbox_count() == 0, at

    assert await _every_call(tmp_path, monkeypatch, None, before, sync, check) > 10


async def test_an_access_request_whose_any_one_answer_is_lost_completes_with_one_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of an access request over the four systems in turn loses its answer: the
    request completes (at once or retried), one bundle with every system's records."""
    asked: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        asked["email"] = _consenting(world)[0]
        asked["out"] = str(rt.config.store_path.parent / "bundle")

    async def access(_world: World, rt: Runtime) -> None:
        service = DsrService(rt)
        view = await service.access(asked["email"], Path(asked["out"]))
        if view.is_open:
            view = await service.retry(view.id)
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(_world: World, rt: Runtime, at: int) -> None:
        data = json.loads((Path(asked["out"]) / "data.json").read_text())
        for name in ("shop", "crm", "news", "deals"):
            assert data["systems"][name]["records"], (at, name)
        assert rt.store.db.execute("SELECT COUNT(*) FROM bundles").fetchone() == (1,), at
        _vouched_for(rt, at)

    assert await _every_call(tmp_path, monkeypatch, None, before, access, check) > 5


@pytest.mark.parametrize("status", [400, 500])
async def test_an_erasure_with_any_one_call_refused_completes_when_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """Each call of an erasure over the four systems in turn is refused (400 or 500): the
    request never claims the person is gone while they are not, and retried (as the
    daemon does) it completes with the person in no system."""
    erased: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        erased["email"] = _consenting(world)[0]

    async def erase(world: World, rt: Runtime) -> None:
        view = await DsrService(rt).erase(erased["email"])
        erased["request"] = view.id
        if view.status == "completed":
            held = [n for n in ("crm", "news", "deals") if getattr(world, n).holds(erased["email"])]
            assert held == []

    async def retry(_world: World, rt: Runtime) -> None:
        view = await DsrService(rt).retry(erased["request"])
        assert view.status == "completed", [(s.system, s.status) for s in view.systems]

    def check(world: World, rt: Runtime, at: int) -> None:
        for name in ("shop", "crm", "news", "deals"):
            assert not getattr(world, name).holds(erased["email"]), (at, name)
        _vouched_for(rt, at)

    total = await _every_call(tmp_path, monkeypatch, status, before, erase, check, retry)
    assert total > 10


async def test_the_retry_of_an_open_erasure_killed_at_any_moment_finishes_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure left open by a Pipedrive outage; the daemon's retry of open requests,
    killed at each of its moments, and run again: completed, the person in no system."""
    erased: dict[str, str] = {}

    async def before(world: World, rt: Runtime) -> None:
        await _sync_until_complete(world, rt)
        erased["email"] = _consenting(world)[0]
        world.deals.faults.down = True
        try:
            view = await DsrService(rt).erase(erased["email"])
        finally:
            world.deals.faults.down = False
        assert view.is_open

    async def retry(_world: World, rt: Runtime) -> None:
        await DsrService(rt).retry_open()

    def check(world: World, rt: Runtime, at: int) -> None:
        for name in ("shop", "crm", "news", "deals"):
            assert not getattr(world, name).holds(erased["email"]), (at, name)
        views = DsrService(rt).list()
        assert len(views) == 1 and views[0].status == "completed", at
        _vouched_for(rt, at)

    moments = await _every_death(tmp_path, monkeypatch, before, retry, retry, check)
    assert moments > 5
