"""The job worker on its own: what it runs for each kind of job, in what order, and how a
job's failure is recorded. Flows and targeted syncs go to a recording runner; the daemon's
tests (test_daemon.py) run the same worker against the sandboxes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import jobs
from connector.engine import FlowReport
from connector.errors import KlantsyncError
from connector.jobworker import JobWorker, SubjectsSynced
from connector.reports import DestinationReport
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL


class Runner:
    """Records the syncs the worker asks for, in order; fails them with ``fail`` if set."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None
        self.undelivered = False  # the targeted syncs' reports say they failed
        self.cut_short = False  # ... and a stop left them unfinished (deliveries queued)
        self.stopping = False  # runs nothing, as the daemon's when it stops
        self.fail_for: dict[str, Exception] = {}  # one system's targeted syncs raise this
        self.on_sync: Callable[[], None] | None = None  # called as a targeted sync runs
        self.hold: asyncio.Event | None = None  # targeted syncs wait for it (a system hangs)
        self.flow_report: Callable[[str], FlowReport] | None = None  # a flow run's report

    async def run_flow(
        self, flow_name: str, *, full: bool = False, wait: bool = False
    ) -> FlowReport | None:
        self.calls.append(("flow", flow_name, full, wait))
        if self.stopping:
            return None
        return self.flow_report(flow_name) if self.flow_report else FlowReport(flow_name, "shop")

    async def sync_subjects(
        self,
        system: str,
        subjects: list[tuple[str | None, str | None]],
        *,
        full: bool = False,
    ) -> SubjectsSynced | None:
        call = ("subjects", system, list(subjects))
        self.calls.append((*call, "full") if full else call)
        if self.on_sync is not None:
            self.on_sync()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        if system in self.fail_for:
            raise self.fail_for[system]
        if self.stopping:
            return None
        if self.undelivered:
            return SubjectsSynced(written=0, failed=True, cut_short=self.cut_short)
        return SubjectsSynced(written=len(subjects), failed=False, cut_short=False)


@pytest.fixture
async def rt(open_rt: Callable[..., Any]) -> AsyncIterator[Runtime]:
    async with open_rt() as runtime:
        yield runtime


@pytest.fixture
def runner() -> Runner:
    return Runner()


@pytest.fixture
def worker(rt: Runtime, runner: Runner) -> JobWorker:
    return JobWorker(rt, runner, asyncio.Event())


def _change(
    external_id: str, record: dict[str, Any] | None = None, *, system: str = "shop"
) -> dict[str, Any]:
    params: dict[str, Any] = {"system": system, "event": "changed", "external_id": external_id}
    if record is not None:  # as queued before the source was always asked
        params["record"] = record
    return params


async def _work_until_done(worker: JobWorker, ids: list[int]) -> list[jobs.Job]:
    """Run the worker until every job in ``ids`` has finished; stop it; the jobs."""
    store = worker.rt.store

    def waiting() -> bool:
        return any(
            getattr(jobs.get(store, i), "status", None) in ("queued", "running") for i in ids
        )

    async def finished() -> None:
        while waiting():
            await asyncio.sleep(0)  # a turn of the loop for the worker, no waiting on time

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(finished(), timeout=30)
    worker.stopping.set()
    await asyncio.wait_for(task, timeout=30)
    found = [jobs.get(store, i) for i in ids]
    assert all(job is not None for job in found)
    return [job for job in found if job is not None]


async def test_changes_waiting_together_run_as_one_sync_per_system(
    worker: JobWorker, runner: Runner
) -> None:
    """Three deliveries for the shop: one targeted sync, which asks the shop for each
    person's current record. A delivery queued with its record by an earlier release is
    fetched too: a delivery replayed, or overtaken by a later change, must not write an
    older record back."""
    record = {"id": 7, "email": "carried@example.nl"}
    ids = [worker.queue("webhook", p) for p in (_change("5"), _change("6"), _change("7", record))]
    done = await _work_until_done(worker, ids)
    assert runner.calls == [("subjects", "shop", [("5", None), ("6", None), ("7", None)])]
    assert [(job.status, job.result) for job in done] == [
        ("done", {"batch": 3, "written": 3, "failed": False})
    ] * 3


async def test_a_change_that_came_after_an_erasure_request_waits_for_the_erasure(
    worker: JobWorker, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """change, erasure, change: the second change is not batched with the first, ahead of
    the erasure, but runs after it, as it came."""
    run_job = worker.run_job

    async def recording(job: jobs.Job) -> dict[str, Any]:
        event = (job.params or {}).get("event")
        runner.calls.append(("job", event))
        if event == "erase":
            return {"request": None}  # the erasure itself is the DSR tests' business
        return await run_job(job)

    monkeypatch.setattr(worker, "run_job", recording)
    erase = {"system": "shop", "event": "erase", "delivery_id": "d-1", "email": CANARY_EMAIL}
    ids = [worker.queue("webhook", p) for p in (_change("5"), erase, _change("6"))]
    done = await _work_until_done(worker, ids)
    assert runner.calls == [
        ("subjects", "shop", [("5", None)]),
        ("job", "erase"),
        ("subjects", "shop", [("6", None)]),
    ]
    assert [job.status for job in done] == ["done", "done", "done"]


async def test_a_change_that_came_after_an_admin_erasure_waits_for_it(
    worker: JobWorker, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an erasure asked for through the admin API (a job of another kind):
    the batch of changes ends before it."""
    run_job = worker.run_job

    async def recording(job: jobs.Job) -> dict[str, Any]:
        if job.kind == "dsr":
            runner.calls.append(("job", "dsr"))
            return {"request": None}
        return await run_job(job)

    monkeypatch.setattr(worker, "run_job", recording)
    ids = [
        worker.queue("webhook", _change("5")),
        worker.queue("dsr", {"kind": "erase", "email": CANARY_EMAIL}),  # POST /admin/dsr
        worker.queue("webhook", _change("6")),
    ]
    await _work_until_done(worker, ids)
    assert runner.calls == [
        ("subjects", "shop", [("5", None)]),
        ("job", "dsr"),
        ("subjects", "shop", [("6", None)]),
    ]


async def test_a_change_claimed_behind_its_shop_s_purge_is_not_synced_after_it(
    worker: JobWorker, runner: Runner
) -> None:
    """change, shop/redact, change, another system's change: the jobs after the purge are
    claimed with the first change's batch. The purge finishes the shop's change unrun (the
    shop is gone); the other system's change runs."""
    purge = {"system": "shop", "event": "purge_all", "delivery_id": "r-1"}
    ids = [
        worker.queue("webhook", p)
        for p in (_change("5"), purge, _change("6"), _change("7", system="crm"))
    ]
    done = await _work_until_done(worker, ids)
    assert runner.calls == [
        ("subjects", "shop", [("5", None)]),
        ("subjects", "crm", [("7", None)]),
    ]
    assert [job.status for job in done] == ["done"] * 4
    assert done[2].result == {"skipped": "the source was purged"}


async def test_a_batch_that_fails_marks_each_of_its_jobs_with_the_reason(
    worker: JobWorker, runner: Runner
) -> None:
    runner.fail = KlantsyncError("shop: unreachable (connect timeout)")
    ids = [worker.queue("webhook", _change(n)) for n in ("5", "6")]
    done = await _work_until_done(worker, ids)
    assert [(job.status, job.result) for job in done] == [
        ("failed", {"error": "shop: unreachable (connect timeout)"})
    ] * 2


async def test_a_batch_whose_people_were_not_delivered_says_it_failed(
    worker: JobWorker, runner: Runner
) -> None:
    """A destination down: the sync ran (done) but delivered nothing, and the jobs say so."""
    runner.undelivered = True
    ids = [worker.queue("webhook", _change(n)) for n in ("5", "6")]
    done = await _work_until_done(worker, ids)
    assert [(job.status, job.result) for job in done] == [
        ("done", {"batch": 2, "written": 0, "failed": True})
    ] * 2


async def test_a_batch_that_meets_a_bug_says_its_type_only(
    worker: JobWorker, runner: Runner
) -> None:
    """The exception's text may hold the data (here an e-mail): only its type is kept."""
    runner.fail = KeyError(CANARY_EMAIL)
    ids = [worker.queue("webhook", _change(n)) for n in ("5", "6")]
    done = await _work_until_done(worker, ids)
    assert [(job.status, job.result) for job in done] == [
        ("failed", {"error": "internal error: KeyError"})
    ] * 2


NO_FLOW_READS_CRM = (
    "no flow of the running daemon reads crm (a config edited since the daemon started "
    "takes effect when it restarts)"
)


async def test_a_batch_that_meets_a_bug_sqlite_reports_fails_and_is_not_run_again(
    worker: JobWorker, runner: Runner
) -> None:
    """A constraint violated is a bug, not the store failing: taken for a store failure, the
    batch went back to the queue and met it again every 30 s, the jobs behind it held."""
    runner.fail = sqlite3.IntegrityError("UNIQUE constraint failed: jobs.id")
    ids = [worker.queue("webhook", _change(n)) for n in ("5", "6")]
    done = await _work_until_done(worker, ids)
    assert [(job.status, job.result) for job in done] == [
        ("failed", {"error": "internal error: IntegrityError"})
    ] * 2
    assert len(runner.calls) == 1


async def test_a_resync_runs_the_systems_flows_or_syncs_one_address(
    worker: JobWorker, runner: Runner
) -> None:
    ids = [
        worker.queue("resync", {"system": "shop", "full": True}),
        worker.queue("resync", {"system": "shop", "email": CANARY_EMAIL, "full": True}),
        worker.queue("resync", {"system": "crm"}),  # the source of no flow: it fails, saying so
    ]
    done = await _work_until_done(worker, ids)
    assert runner.calls == [
        ("flow", "shop-to-crm", True, True),  # waits for a run under way, then runs
        ("subjects", "shop", [(None, CANARY_EMAIL)], "full"),  # refused ones offered again
    ]
    assert [job.result for job in done] == [
        {"flows": ["shop-to-crm"], "failed": False},
        {"written": 1, "failed": False},
        {"error": NO_FLOW_READS_CRM},
    ]
    assert done[2].status == "failed"


async def test_a_resync_the_daemon_stops_before_stays_queued_for_its_next_start(
    worker: JobWorker, runner: Runner
) -> None:
    """Not run is neither done (it ran nothing) nor failed (nothing went wrong)."""
    runner.stopping = True
    job_id = worker.queue("resync", {"system": "shop", "full": True})
    job = jobs.claim_next(worker.rt.store, worker.rt.keyring)
    assert job is not None and job.id == job_id
    await worker._run_one(job)
    again = jobs.get(worker.rt.store, job_id)
    assert again is not None and (again.status, again.result) == ("queued", None)


async def test_a_resync_of_one_address_the_daemon_stops_before_stays_queued_for_its_next_start(
    worker: JobWorker, runner: Runner
) -> None:
    """As for a whole system: ended "done" having delivered nothing, it never ran again."""
    runner.stopping = True
    job_id = worker.queue("resync", {"system": "shop", "email": CANARY_EMAIL})
    job = jobs.claim_next(worker.rt.store, worker.rt.keyring)
    assert job is not None and job.id == job_id
    await worker._run_one(job)
    again = jobs.get(worker.rt.store, job_id)
    assert again is not None and (again.status, again.result) == ("queued", None)


async def test_a_resync_of_one_address_a_stop_cuts_short_stays_queued_for_its_next_start(
    worker: JobWorker, runner: Runner
) -> None:
    """The stop came while it ran: the engine left its delivery queued (the report failed)."""
    runner.undelivered = runner.cut_short = True
    job_id = worker.queue("resync", {"system": "shop", "email": CANARY_EMAIL})
    job = jobs.claim_next(worker.rt.store, worker.rt.keyring)
    assert job is not None
    worker.stopping.set()
    await worker._run_one(job)
    again = jobs.get(worker.rt.store, job_id)
    assert again is not None and (again.status, again.result) == ("queued", None)


async def test_a_resync_a_stop_cuts_short_in_its_deliveries_stays_queued_for_its_next_start(
    worker: JobWorker, runner: Runner
) -> None:
    """SIGTERM as the resync's pull took its last page: the pull is complete, but the
    deliveries of its last pages are left queued. That is a run cut short, as the daemon
    judges it (it records the run interrupted): the resync is queued again, where it ended
    "done", failed, never run again (the rest of a --full pass's retries with it)."""

    def cut_in_delivery(flow: str) -> FlowReport:
        worker.stopping.set()
        report = FlowReport(flow, "shop", complete=True, pulled=250)
        report.errors.append("stopped before the pull finished; resumes next run")
        report.destinations["crm"] = DestinationReport(queued=250, created=100, left_queued=150)
        return report

    runner.flow_report = cut_in_delivery
    job_id = worker.queue("resync", {"system": "shop", "full": True})
    job = jobs.claim_next(worker.rt.store, worker.rt.keyring)
    assert job is not None and job.id == job_id
    await worker._run_one(job)
    again = jobs.get(worker.rt.store, job_id)
    assert again is not None and (again.status, again.result) == ("queued", None)


async def test_changes_the_daemon_stops_before_stay_queued_and_so_do_the_jobs_after_them(
    worker: JobWorker, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes, then an erasure: none runs, and all are queued for the next start in the
    order they came (the erasure run now would be overtaken by the changes before it)."""
    ran: list[str] = []

    async def recording(job: jobs.Job) -> dict[str, Any]:
        ran.append(job.kind)
        return {}

    monkeypatch.setattr(worker, "run_job", recording)
    runner.stopping = True
    ids = [
        worker.queue("webhook", _change("5")),
        worker.queue("webhook", _change("6")),
        worker.queue("dsr", {"kind": "erase", "email": CANARY_EMAIL}),
    ]
    first = jobs.claim_next(worker.rt.store, worker.rt.keyring)
    assert first is not None
    await worker._run_change_batch(first)
    assert ran == []
    found = [jobs.get(worker.rt.store, i) for i in ids]
    assert [(getattr(j, "status", None), getattr(j, "result", 0)) for j in found] == [
        ("queued", None)
    ] * 3


async def test_a_stop_during_a_batch_of_changes_leaves_the_jobs_claimed_behind_it_queued(
    worker: JobWorker, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a batch of changes syncs: the batch finishes, and an erasure claimed
    behind it is not started but queued again for the next start. Started, it was cut off
    by the stop's grace, left running with its vendors half asked."""
    ran: list[Any] = []
    run_job = worker.run_job

    async def recording(job: jobs.Job) -> dict[str, Any]:
        event = (job.params or {}).get("event")
        if event != "changed":
            ran.append(event)
            return {"request": None}
        return await run_job(job)

    monkeypatch.setattr(worker, "run_job", recording)
    runner.on_sync = worker.stopping.set  # SIGTERM arrives while the batch syncs
    erase = {"system": "shop", "event": "erase", "delivery_id": "d-1", "email": CANARY_EMAIL}
    ids = [
        worker.queue("webhook", _change("5")),
        worker.queue("webhook", erase),
        worker.queue("webhook", _change("6")),
    ]
    await asyncio.wait_for(worker.run(), 30)
    found = [jobs.get(worker.rt.store, i) for i in ids]
    assert ran == []
    assert [(getattr(j, "status", None), getattr(j, "result", 0)) for j in found] == [
        ("done", {"batch": 1, "written": 1, "failed": False}),  # the in-flight batch finished
        ("queued", None),
        ("queued", None),
    ]


async def test_one_system_down_fails_only_its_own_changes_in_a_batch(
    worker: JobWorker, runner: Runner
) -> None:
    """Changes of two source systems waiting together: each system's sync is asked for, and
    each system's jobs end as its own sync ended. One try around both failed the second
    shop's change with the first shop's error, its sync never asked for."""
    runner.fail_for["shop"] = KlantsyncError("shop: unreachable (connect timeout)")
    ids = [
        worker.queue("webhook", _change("5")),
        worker.queue("webhook", _change("901", system="shopify")),
        worker.queue("webhook", _change("6")),
    ]
    done = await _work_until_done(worker, ids)
    assert runner.calls == [
        ("subjects", "shop", [("5", None), ("6", None)]),
        ("subjects", "shopify", [("901", None)]),
    ]
    assert [(job.status, job.result) for job in done] == [
        ("failed", {"error": "shop: unreachable (connect timeout)"}),
        ("done", {"batch": 1, "written": 1, "failed": False}),
        ("failed", {"error": "shop: unreachable (connect timeout)"}),
    ]


async def test_a_job_whose_params_do_not_open_fails_alone_and_the_next_one_runs(
    worker: JobWorker, runner: Runner
) -> None:
    """A damaged page, a store from another key: the job can never run. Had claiming it
    raised, the worker would have ended, and every job after it waited for ever."""
    store = worker.rt.store
    damaged = worker.queue("webhook", _change("5"))
    (sealed,) = store.db.execute("SELECT params FROM jobs WHERE id=?", (damaged,)).fetchone()
    flipped = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 0x01])
    store.db.execute("UPDATE jobs SET params=? WHERE id=?", (flipped, damaged))
    later = [worker.queue("webhook", _change("6")), worker.queue("resync", {"system": "crm"})]
    batched = worker.queue("webhook", _change("7"))
    store.db.execute("UPDATE jobs SET params=? WHERE id=?", (flipped, batched))
    done = await _work_until_done(worker, [damaged, *later, batched])
    assert [(job.status, job.result) for job in done] == [
        ("failed", {"error": jobs.UNREADABLE}),
        ("done", {"batch": 1, "written": 1, "failed": False}),
        ("failed", {"error": NO_FLOW_READS_CRM}),
        ("failed", {"error": jobs.UNREADABLE}),
    ]
    assert runner.calls == [("subjects", "shop", [("6", None)])]


async def test_a_job_of_a_kind_it_does_not_know_fails_saying_so(worker: JobWorker) -> None:
    """Queued by a newer version, say: failed, not done."""
    (done,) = await _work_until_done(worker, [worker.queue("defragment", {})])
    assert (done.status, done.result) == ("failed", {"error": "unknown job kind defragment"})


@pytest.mark.parametrize("kind", ["dsr", "webhook"])
async def test_a_queued_request_counts_from_when_it_came_not_from_when_it_ran(
    rt: Runtime, worker: JobWorker, shop: WooCommerceSandbox, kind: str
) -> None:
    """POST /admin/dsr and a privacy webhook queue a job and answer at once. The request
    was stamped received when the worker ran it (here three days later: the daemon was
    stopped), and its one-month deadline moved back by the wait."""
    import datetime as dt

    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, "Klant", "Test")
    shop.faults.down = True  # the request stays open; only its dates matter
    if kind == "dsr":
        params: dict[str, Any] = {"kind": "erase", "email": CANARY_EMAIL}
    else:
        params = {"system": "shop", "event": "erase", "delivery_id": "d-1", "email": CANARY_EMAIL}
    job_id = worker.queue(kind, params)
    came = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat(timespec="seconds")
    rt.store.db.execute("UPDATE jobs SET created_at=? WHERE id=?", (came, job_id))
    (done,) = await _work_until_done(worker, [job_id])
    assert done.status == "done", done.result
    (view,) = DsrService(rt).list()
    assert view.received_at == came


async def test_an_access_job_run_again_after_a_crash_writes_one_bundle(
    rt: Runtime, worker: JobWorker, shop: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin access request ran to completion (bundle written, receipt stored) and the
    daemon died before the job was marked done. Put back in the queue at the next start,
    the job opened a second request and wrote a second copy of the person's data in clear.
    It now finds the request it opened (same kind, subject and moment it came)."""
    from connector.dsr import DsrService

    class Killed(BaseException):
        pass

    def killed(*_args: Any, **_kwargs: Any) -> None:
        raise Killed

    shop.add_person(CANARY_EMAIL, "Klant", "Test")
    await rt.engine.sync()
    worker.queue("dsr", {"kind": "access", "email": CANARY_EMAIL})
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None
    with monkeypatch.context() as patch:
        patch.setattr(jobs, "finish", killed)
        with pytest.raises(Killed):
            await worker._run_one(job)
    assert jobs.requeue_running(rt.store) == 1  # the next start
    again = jobs.claim_next(rt.store, rt.keyring)
    assert again is not None
    await worker._run_one(again)
    views = [v for v in DsrService(rt).list() if v.kind == "access"]
    bundles = rt.store.db.execute("SELECT COUNT(*) FROM bundles").fetchone()[0]
    folders = list((rt.config.store_path.parent / "access").iterdir())
    assert (len(views), bundles, len(folders)) == (1, 1, 1)
    assert jobs.get(rt.store, again.id).status == "done"  # type: ignore[union-attr]


async def test_an_access_job_queued_before_the_person_s_erasure_writes_no_bundle_after_it(
    rt: Runtime, worker: JobWorker, shop: WooCommerceSandbox
) -> None:
    """POST /admin/dsr access is queued an hour before the worker gets to it, and meanwhile
    the person's erasure completes. The request counts from when it came; it took every
    erasure completed since for one "in the second before it" and wrote a bundle after the
    erasure (every system holding nothing), which its receipt vouched for. It writes none,
    and its receipt says why."""
    import datetime as dt
    import json

    from connector.dsr import DsrService

    shop_id = shop.add_person(CANARY_EMAIL, "Klant", "Test", "0687654321")
    shop.add_order(shop_id)
    await rt.engine.sync()
    job_id = worker.queue("dsr", {"kind": "access", "email": CANARY_EMAIL}, durable=True)
    came = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(timespec="seconds")
    rt.store.db.execute("UPDATE jobs SET created_at=? WHERE id=?", (came, job_id))
    erasure = await DsrService(rt).erase(CANARY_EMAIL)
    assert erasure.status == "completed"
    job = jobs.claim_next(rt.store, rt.keyring)
    assert job is not None and job.id == job_id
    await worker._run_one(job)
    (access,) = [v for v in DsrService(rt).list() if v.kind == "access"]
    assert access.received_at == came and access.status == "completed"
    assert not (rt.config.store_path.parent / "access" / access.id).exists()
    receipt = json.loads(DsrService(rt).receipt(access.id) or "{}")["receipt"]["connector"]
    assert receipt["bundle_files"] == [] and erasure.id in receipt["note"]


async def test_a_job_the_daemon_ends_while_running_at_every_start_is_failed_at_the_fifth(
    worker: JobWorker, runner: Runner
) -> None:
    """A job that kills the daemon (or outlasts the stop's grace) is left running at each
    start. Queued again for ever, it was claimed first at every start and nothing after it
    ran: each start counts it, and the one after its fifth fails it, saying why, and its
    sealed parameters go with it. The job worker's requeue after a store failure is the
    store's trouble, not the job's, and is not counted."""
    store = worker.rt.store
    poison = worker.queue("dsr", {"kind": "access", "email": CANARY_EMAIL})
    after = worker.queue("webhook", _change("5"))
    for start in range(1, jobs.MAX_CUT_OFF + 1):
        job = jobs.claim_next(store, worker.rt.keyring)
        assert job is not None and job.id == poison  # claimed first, then the daemon dies
        if start == 1:  # a store failure under it first: tried again, uncounted
            assert jobs.requeue_running(store) == 1
            job = jobs.claim_next(store, worker.rt.keyring)
            assert job is not None and job.id == poison
        requeued, failed = jobs.requeue_cut_off(store)  # the next start
        if start < jobs.MAX_CUT_OFF:
            assert (requeued, failed) == (1, [])
    assert (requeued, failed) == (0, [poison])
    found = jobs.get(store, poison)
    assert found is not None and (found.status, found.result) == ("failed", {"error": jobs.CUT_OFF})
    (params,) = store.db.execute("SELECT params FROM jobs WHERE id=?", (poison,)).fetchone()
    assert params is None
    done = await _work_until_done(worker, [after])  # the job behind it runs at last
    assert done[0].status == "done"


async def test_a_request_queued_behind_changes_a_daemon_ends_at_every_start_is_not_failed_unrun(
    worker: JobWorker, runner: Runner
) -> None:
    """A Shopify data request queued behind a change whose sync hangs (the CRM does not
    answer), and the daemon ended while it syncs at five starts running (the stop's grace
    ran out, or it was killed): the change ran each time, and is failed at the fifth; the
    request never started, and stays queued. Claimed with the change's batch, it was counted
    with it and failed unrun: an access request, recorded only when its job runs, lost."""
    store = worker.rt.store
    syncing = asyncio.Event()
    runner.on_sync = syncing.set
    runner.hold = asyncio.Event()  # never set: the sync hangs until the daemon ends
    access = {"system": "shopify", "event": "access", "delivery_id": "q-1"}
    change = worker.queue("webhook", _change("5"))
    request = worker.queue("webhook", access | {"email": CANARY_EMAIL})
    for _ in range(jobs.MAX_CUT_OFF):
        syncing.clear()
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(syncing.wait(), 30)
        task.cancel()  # the daemon ends with the sync in flight
        with contextlib.suppress(asyncio.CancelledError):
            await task
        jobs.requeue_cut_off(store)  # the next start
    ran, waiting = jobs.get(store, change), jobs.get(store, request)
    assert ran is not None and (ran.status, ran.result) == ("failed", {"error": jobs.CUT_OFF})
    assert waiting is not None and (waiting.status, waiting.result) == ("queued", None)


async def test_a_job_the_store_failed_under_is_not_counted_when_the_daemon_stops_meanwhile(
    worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under a job: the worker rests before it tries again, and the operator
    restarts the daemon meanwhile. The job did not run on, so it is not one a daemon ended
    while running it: queued again as it was, uncounted. Left claimed, each such restart
    counted it, and the fifth failed it unrun."""
    from tests.conftest import disk_full_error

    failed = asyncio.Event()

    def store_failed(_exc: sqlite3.Error, _during: str) -> None:
        failed.set()

    async def full_disk(_job: jobs.Job) -> dict[str, Any]:
        raise disk_full_error()

    worker.store_failed = store_failed
    monkeypatch.setattr(worker, "run_job", full_disk)
    job_id = worker.queue("resync", {"system": "shop"})
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(failed.wait(), 30)
    worker.stopping.set()  # SIGTERM during the rest
    await asyncio.wait_for(task, 30)
    assert jobs.requeue_cut_off(worker.rt.store) == (0, [])  # the next start
    found = jobs.get(worker.rt.store, job_id)
    assert found is not None and (found.status, found.result) == ("queued", None)


async def test_two_erasures_from_two_sources_in_one_second_are_one_asked_twice(
    rt: Runtime, worker: JobWorker, shop: WooCommerceSandbox
) -> None:
    """A job run again finds the request it opened by kind, subject and the second it came;
    two webhooks from two systems in the same second (the CRM's with the e-mail, the
    shop's with a phone too) were taken for one, and the second's phone was never
    suppressed. The source tells them apart: the second asks the first again."""
    from connector.dsr import DsrService

    shop.add_person(CANARY_EMAIL, "Klant", "Test")
    shop.faults.down = True  # the request stays open
    phone = "+31612345678"
    first = worker.queue(
        "webhook", {"system": "crm", "event": "erase", "delivery_id": "a", "email": CANARY_EMAIL}
    )
    second = worker.queue(
        "webhook",
        {"system": "shop", "event": "erase", "delivery_id": "b", "email": CANARY_EMAIL}
        | {"phone": phone},
    )
    came = "2026-11-30T10:00:00+00:00"
    rt.store.db.execute("UPDATE jobs SET created_at=? WHERE id IN (?, ?)", (came, first, second))
    done = await _work_until_done(worker, [first, second])
    assert [job.status for job in done] == ["done", "done"], [job.result for job in done]
    assert len(DsrService(rt).list()) == 1
    assert rt.store.suppressed([rt.keyring.subject_id(phone)])


async def test_an_idle_worker_takes_no_write_lock_while_another_process_writes(
    worker: JobWorker, rt: Runtime
) -> None:
    """With no job queued, the worker's look at the queue (once a second) took the store's
    write lock all the same: another process writing for longer than the lock wait (an
    operator's sqlite3 shell, a command beside the daemon) made the idle worker wait on the
    event loop, every webhook, probe and admin call with it, and then say "store failed",
    making /readyz 503 with nothing queued. It looks first, and locks only to claim a job."""
    failures: list[str] = []
    worker.store_failed = lambda _exc, during: failures.append(during)
    (waits,) = rt.store.db.execute("PRAGMA busy_timeout").fetchone()
    rt.store.db.execute("PRAGMA busy_timeout=0")  # refused at once where it would wait
    other = sqlite3.connect(rt.store.path)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = asyncio.create_task(worker.run())
        for _ in range(20):
            await asyncio.sleep(0)  # turns of the loop: the worker looks at the queue
        worker.stopping.set()
        await asyncio.wait_for(task, 30)
        other.rollback()
        assert failures == []
        job_id = worker.queue("resync", {"system": "shop"})
        claimed = jobs.claim_next(rt.store, rt.keyring)  # a queued job is claimed as before
        assert claimed is not None and claimed.id == job_id
    finally:
        other.close()
        rt.store.db.execute(f"PRAGMA busy_timeout={int(waits)}")


@contextlib.contextmanager
def _no_lock_wait(rt: Runtime) -> Iterator[None]:
    """The store's busy timeout off: a write that would wait for another process's lock
    inside SQLite, on the event loop, is refused at once instead (and the worker says the
    store failed), where the test would otherwise wait out the timeout."""
    (waits,) = rt.store.db.execute("PRAGMA busy_timeout").fetchone()
    rt.store.db.execute("PRAGMA busy_timeout=0")
    try:
        yield
    finally:
        rt.store.db.execute(f"PRAGMA busy_timeout={int(waits)}")


async def _turns() -> None:
    """Turns of the loop, enough for the worker to reach its next wait."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_job_queued_while_another_process_holds_the_lock_is_claimed_once_it_is_free(
    worker: JobWorker, runner: Runner, rt: Runtime
) -> None:
    """Another process holds the store's write lock (an operator's sqlite3 shell) while a job
    waits: the worker's claim waits for it off the event loop, and claims and runs the job
    once the lock is free, once. The claim waited inside SQLite's busy timeout on the loop
    (every webhook and probe with it) and then said the store failed, resting 30 s."""
    failures: list[str] = []
    worker.store_failed = lambda _exc, during: failures.append(during)
    job_id = worker.queue("resync", {"system": "shop"})
    with _no_lock_wait(rt), contextlib.closing(sqlite3.connect(rt.store.path)) as other:
        other.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(worker.run())
        await _turns()
        assert failures == [] and runner.calls == []
        assert getattr(jobs.get(rt.store, job_id), "status", None) == "queued"
        other.rollback()
        while getattr(jobs.get(rt.store, job_id), "status", None) != "done":
            await asyncio.sleep(0)
        worker.stopping.set()
        await asyncio.wait_for(task, 30)
    assert failures == [] and runner.calls == [("flow", "shop-to-crm", False, True)]


async def test_a_job_that_ends_while_another_process_holds_the_lock_is_recorded_once_it_is_free(
    worker: JobWorker, runner: Runner, rt: Runtime
) -> None:
    """A batch of changes ends while another process holds the write lock: how it ended is
    recorded once the lock is free, waited for off the event loop, and the changes are not
    synced again. The record waited on the loop and then counted as the store failing, so
    the batch went back to the queue and was synced twice."""
    failures: list[str] = []
    worker.store_failed = lambda _exc, during: failures.append(during)
    ids = [worker.queue("webhook", _change(n)) for n in ("5", "6")]
    with _no_lock_wait(rt), contextlib.closing(sqlite3.connect(rt.store.path)) as other:
        runner.on_sync = lambda: other.execute("BEGIN IMMEDIATE")  # taken as the sync runs
        task = asyncio.create_task(worker.run())
        while not runner.calls:
            await asyncio.sleep(0)
        await _turns()
        assert failures == []
        assert [getattr(jobs.get(rt.store, i), "status", None) for i in ids] == ["running"] * 2
        runner.on_sync = None
        other.rollback()
        while any(getattr(jobs.get(rt.store, i), "status", None) != "done" for i in ids):
            await asyncio.sleep(0)
        worker.stopping.set()
        await asyncio.wait_for(task, 30)
    assert failures == [] and runner.calls == [("subjects", "shop", [("5", None), ("6", None)])]


async def test_a_job_the_stop_s_grace_cuts_is_queued_again_not_counted_toward_failing_it(
    worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure asked through the admin API still running when the daemon stops (it does
    not look at the stop) is cancelled when the stop's grace runs out. Left running, each
    such stop counted as the daemon ending while it ran, and the start after the fifth
    failed it, never carried out. A stop is no failure of the job: it is queued again,
    uncounted, at each."""
    started = asyncio.Event()

    async def hangs(_job: jobs.Job) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # a vendor slow to answer, past the grace
        return {}

    monkeypatch.setattr(worker, "run_job", hangs)
    job_id = worker.queue("dsr", {"kind": "access", "email": CANARY_EMAIL})
    for _ in range(jobs.MAX_CUT_OFF + 1):
        started.clear()
        worker.stopping.clear()
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 30)
        worker.stopping.set()
        task.cancel()  # what the daemon does when the grace runs out
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert jobs.requeue_cut_off(worker.rt.store) == (0, [])  # the next start
    found = jobs.get(worker.rt.store, job_id)
    assert found is not None and found.status == "queued"
