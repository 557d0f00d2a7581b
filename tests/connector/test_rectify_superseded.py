"""A correction still open when the person asks to be erased: superseded by the erasure."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.adapter import WebhookEvent
from connector.dsr import DsrService, RequestView
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL, CANARY_NAME, CANARY_PHONE

#: When the correction is asked; the erasure comes two days later.
ASKED = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ERASED = ASKED + dt.timedelta(days=2)

#: HubSpot's calls that write a contact (a correction's update, a sync's upsert or create).
CRM_WRITES = (
    "POST /crm/v3/objects/contacts/batch/update",
    "POST /crm/v3/objects/contacts/batch/upsert",
    "POST /crm/v3/objects/contacts/batch/create",
    "POST /crm/v3/objects/contacts",
    "PATCH /crm/v3/objects/contacts/{contactId}",
)


def _writes(calls: Sequence[str]) -> list[str]:
    return [call for call in calls if call in CRM_WRITES]


async def _correction_left_open(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> RequestView:
    """The person synced to the CRM, then a correction asked while the CRM was down: its
    CRM part failed (retried later), the shop's done. The CRM is up again since."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    (report,) = await rt.engine.sync()
    assert not report.failed and crm.holds(CANARY_EMAIL)
    crm.faults.down = True
    correction = await DsrService(rt, now=lambda: ASKED).rectify(CANARY_EMAIL, {"city": "Zeist"})
    crm.faults.down = False
    assert correction.is_open and correction.system("crm").status == "failed"
    return correction


def _receipt(service: DsrService, request_id: str) -> dict[str, Any]:
    text = service.receipt(request_id)
    assert text is not None
    assert service.verify_receipt(text.encode()).ok
    body: dict[str, Any] = json.loads(text)["receipt"]
    return body


def _superseded_entries(rt: Runtime, request_id: str) -> list[audit.AuditEntry]:
    return [
        e
        for e in audit.entries(rt.store)
        if e.kind == "dsr.superseded" and e.data.get("request") == request_id
    ]


async def test_an_open_correction_is_superseded_when_the_person_asks_to_be_erased(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """A correction left open for the CRM, then the person's erasure, then the daemon's
    retries: the correction's part for the CRM is closed as superseded by the erasure, and
    nothing of it is written there after the erasure came. Before, the retries ran the older
    request first and updated the contact with the corrected city after the person had
    asked to be erased (and its receipt said done)."""
    correction = await _correction_left_open(shop, crm, rt)
    service = DsrService(rt, now=lambda: ERASED)
    since = len(crm.endpoints_used)
    erasure = await service.queue_erase(CANARY_EMAIL)
    # Completed in the transaction that recorded the erasure: no deadline left to count.
    closed = service.get(correction.id)
    assert closed is not None and closed.status == "completed"
    await service.retry_open()
    assert _writes(crm.endpoints_used[since:]) == []
    assert not crm.holds(CANARY_EMAIL)
    done = service.get(correction.id)
    assert done is not None and done.status == "completed"
    assert done.system("shop").status == "done"  # written before the erasure: as it was
    part = done.system("crm")
    assert part.status == "superseded" and part.detail is not None
    assert erasure.id in part.detail and "@" not in part.detail
    receipt = _receipt(service, correction.id)
    assert receipt["superseded_by"] == erasure.id
    steps = {s["system"]: s for s in receipt["systems"]}
    assert steps["crm"]["status"] == "superseded"
    assert steps["crm"]["superseded_by"] == erasure.id
    (entry,) = _superseded_entries(rt, correction.id)
    assert entry.data["superseded_by"] == erasure.id and entry.data["systems"] == ["crm"]
    assert entry.subject_id == correction.subject_id
    text = json.dumps(entry.data)
    assert CANARY_EMAIL not in text and CANARY_NAME not in text and "Zeist" not in text
    finished = service.get(erasure.id)
    assert finished is not None and finished.status == "completed"


async def test_an_erasure_recorded_as_its_webhook_comes_supersedes_the_open_correction(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The erasure recorded as a vendor's webhook comes (erase_on_receipt, before its job
    runs) closes the open correction too: a retry of the correction in between writes
    nothing."""
    correction = await _correction_left_open(shop, crm, rt)
    service = DsrService(rt, now=lambda: ERASED)
    contact = crm.record_for(CANARY_EMAIL)
    assert contact is not None
    event = WebhookEvent(kind="erase", delivery_id="d-1", external_id=str(contact["id"]))
    with rt.store.transaction():
        erasure = service.erase_on_receipt("crm", event)
    assert erasure is not None
    since = len(crm.endpoints_used)
    await service.retry(correction.id)
    assert _writes(crm.endpoints_used[since:]) == []
    done = service.get(correction.id)
    assert done is not None and done.status == "completed"
    assert done.system("crm").status == "superseded"
    assert _receipt(service, correction.id)["superseded_by"] == erasure.id


async def test_a_correction_run_under_way_when_the_erasure_comes_writes_nothing_after_it(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The correction's retry is waiting for the sync's writes to the CRM to land when the
    person's erasure is recorded (another caller, the admin API or a webhook): its run
    stops there, and the CRM is not updated. Before, it went on and wrote the corrected
    city to the contact the erasure was about to delete."""
    correction = await _correction_left_open(shop, crm, rt)
    other = DsrService(rt, now=lambda: ERASED)
    in_flight = rt.engine.in_flight
    landed = in_flight.landed
    recorded: list[RequestView] = []

    async def erasure_comes(system: str, subjects: Sequence[str]) -> None:
        await landed(system, subjects)
        if system == "crm" and not recorded:
            recorded.append(await other.queue_erase(CANARY_EMAIL))

    monkeypatch.setattr(in_flight, "landed", erasure_comes)
    service = DsrService(rt, now=lambda: ASKED)
    since = len(crm.endpoints_used)
    view = await service.retry(correction.id)
    assert recorded, "the erasure came while the correction's run was under way"
    assert _writes(crm.endpoints_used[since:]) == []
    assert view.status == "completed" and view.system("crm").status == "superseded"
    assert _receipt(service, correction.id)["superseded_by"] == recorded[0].id
    # The person's erasure then goes on as ever.
    monkeypatch.undo()
    erased = await other.retry(recorded[0].id)
    assert erased.status == "completed" and not crm.holds(CANARY_EMAIL)


async def test_a_retry_of_a_correction_of_an_erased_person_writes_nothing(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A correction whose person's erasure was recorded without closing it (by an earlier
    version of klantsync) is closed by its next retry, which writes nothing."""
    correction = await _correction_left_open(shop, crm, rt)
    service = DsrService(rt, now=lambda: ERASED)
    with monkeypatch.context() as patched:
        patched.setattr(DsrService, "supersede_corrections", lambda *_a: None, raising=False)
        erasure = await service.queue_erase(CANARY_EMAIL)
    still = service.get(correction.id)
    assert still is not None and still.is_open
    since = len(crm.endpoints_used)
    view = await service.retry(correction.id)
    assert _writes(crm.endpoints_used[since:]) == []
    assert view.status == "completed" and view.system("crm").status == "superseded"
    assert _receipt(service, correction.id)["superseded_by"] == erasure.id
    assert len(_superseded_entries(rt, correction.id)) == 1


async def test_an_open_access_request_is_not_superseded_by_the_erasure(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The person asked for a copy and a correction, both left open, then to be erased:
    the correction is superseded, the access request is not (they may want both)."""
    correction = await _correction_left_open(shop, crm, rt)
    crm.faults.down = True
    access = await DsrService(rt, now=lambda: ASKED).access(CANARY_EMAIL, tmp_path / "copy")
    crm.faults.down = False
    assert access.is_open
    await DsrService(rt, now=lambda: ERASED).queue_erase(CANARY_EMAIL)
    service = DsrService(rt)
    copy = service.get(access.id)
    assert copy is not None and copy.is_open
    assert all(part.status != "superseded" for part in copy.systems)
    assert _superseded_entries(rt, access.id) == []
    closed = service.get(correction.id)
    assert closed is not None and closed.system("crm").status == "superseded"


def test_dsr_show_and_list_say_a_part_was_superseded(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    cli: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dsr show` and `dsr list --json` show the superseded part, naming the erasure."""
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE, city="Utrecht")
    crm.add_person(CANARY_EMAIL, CANARY_NAME, "Klant")
    crm.faults.down = True
    code, out, _ = cli(
        "rectify", "--email", CANARY_EMAIL, "--set", "city=Zeist", "--json", capsys=capsys
    )
    crm.faults.down = False
    correction = json.loads(out)["id"]
    assert code == 1 and json.loads(out)["status"] == "open"
    code, out, _ = cli("erase", "--email", CANARY_EMAIL, "--json", capsys=capsys)
    assert code == 0
    erasure = json.loads(out)["id"]
    code, out, _ = cli("show", correction, capsys=capsys)
    assert code == 0 and "crm: superseded" in out and erasure in out
    assert CANARY_EMAIL not in out
    code, out, _ = cli("list", "--json", capsys=capsys)
    listed = {r["id"]: r for r in json.loads(out)}
    assert listed[correction]["status"] == "completed"
    assert listed[correction]["systems"]["crm"]["status"] == "superseded"
