"""A field the source no longer holds is emptied where the flow wrote it (connector/emptying.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.adapter import OutboundRecord, UpsertResult
from connector.cli_sync import print_report
from connector.emptying import Emptying
from connector.mapping import load_mapping
from connector.metrics import Metrics
from connector.model import Person
from connector.runtime import Runtime
from connector.state import Ack, Store

EMAIL = "ed.canary.klant@example.nl"


def _crm_phone(crm: HubSpotSandbox, email: str = EMAIL) -> Any:
    record = crm.record_for(email)
    assert record is not None
    return record["properties"].get("phone")


def _written(crm: HubSpotSandbox) -> list[frozenset[str]]:
    """The property names of each batch write the CRM was sent."""
    return [
        entry.property_names
        for entry in crm.log.entries
        if entry.path.endswith(("/batch/upsert", "/batch/update"))
    ]


class _System:
    """What emptying reads of a system: its name and mapping."""

    def __init__(self, name: str, file: Path) -> None:
        self.name = name
        self.mapping = load_mapping(file)


async def _synced_then_phone_removed(shop: WooCommerceSandbox, rt: Runtime) -> None:
    """Ed synced with his phone number, which he then removes in the shop."""
    shop.add_person(EMAIL, "Ed", "Bos", "0612345678", country="NL")
    await rt.engine.sync()
    shop.touch(EMAIL, billing__phone="")


async def test_a_phone_removed_in_the_shop_is_emptied_in_the_crm_and_the_rest_kept(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    shop.add_person(EMAIL, "Ed", "Bos", "0612345678", country="NL", city="Utrecht")
    await rt.engine.sync()
    assert _crm_phone(crm) == "+31612345678"
    shop.touch(EMAIL, billing__phone="", first_name="Eddie")
    crm.log.clear()
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].emptied == 1
    assert report.as_dict()["destinations"]["crm"]["emptied"] == 1
    console = Console(record=True, width=400)
    print_report(console, report)
    assert "1 queued with fields to empty" in console.export_text()
    metrics = Metrics()
    metrics.observe_flow(report, 0.0)
    scraped = generate_latest(metrics.registry).decode()
    assert 'klantsync_records_emptied_total{system="crm"} 1.0' in scraped
    record = crm.record_for(EMAIL)
    assert record is not None
    assert record["properties"]["phone"] in ("", None)
    assert record["properties"]["firstname"] == "Eddie"
    assert record["properties"]["city"] == "Utrecht"
    # Once emptied, nothing more is sent: the next sync finds the person unchanged.
    crm.log.clear()
    (again,) = await rt.engine.sync()
    assert again.destinations["crm"].unchanged == 1 and _written(crm) == []


async def test_a_phone_the_shop_gives_that_cannot_be_read_is_not_emptied(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    shop.add_person(EMAIL, "Ed", "Bos", "0612345678", country="NL")
    await rt.engine.sync()
    shop.touch(EMAIL, billing__phone="call me after five", first_name="Eddie")
    crm.log.clear()
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].emptied == 0
    assert [("phone" in names) for names in _written(crm)] == [False]
    assert _crm_phone(crm) == "+31612345678"


async def test_a_phone_removed_after_the_shop_gave_one_that_cannot_be_read_is_emptied(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """The CRM keeps the number the flow gave while the shop holds one that cannot be read;
    removed in the shop after that, it is emptied as any other, and only then."""
    shop.add_person(EMAIL, "Ed", "Bos", "0612345678", country="NL")
    await rt.engine.sync()
    shop.touch(EMAIL, billing__phone="call me after five", first_name="Eddie")
    await rt.engine.sync()
    (unread,) = await rt.engine.sync()
    assert unread.destinations["crm"].unchanged == 1
    assert _crm_phone(crm) == "+31612345678"
    shop.touch(EMAIL, billing__phone="")
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].emptied == 1
    assert _crm_phone(crm) in ("", None)
    crm.log.clear()
    (again,) = await rt.engine.sync()
    assert again.destinations["crm"].unchanged == 1 and _written(crm) == []


async def test_a_change_of_another_field_empties_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    shop.add_person(EMAIL, "Ed", "Bos", "0612345678", country="NL")
    shop.add_person("an@example.nl", "An", "Smit", "", country="NL")
    await rt.engine.sync()
    crm.add_person("an@example.nl", phone="+31201234567")  # a salesperson's entry
    shop.touch(EMAIL, first_name="Eddie")
    shop.touch("an@example.nl", first_name="Anna")
    crm.log.clear()
    (report,) = await rt.engine.sync()
    assert report.destinations["crm"].emptied == 0
    assert _crm_phone(crm) == "+31612345678"
    assert _crm_phone(crm, "an@example.nl") == "+31201234567"


async def test_a_dry_run_counts_what_it_would_empty_and_sends_nothing(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    await _synced_then_phone_removed(shop, rt)
    crm.log.clear()
    (dry,) = await rt.engine.sync(dry_run=True)
    assert dry.destinations["crm"].emptied == 1 and _written(crm) == []
    console = Console(record=True, width=400)
    print_report(console, dry)
    assert "1 would be sent with fields to empty" in console.export_text()
    assert _crm_phone(crm) == "+31612345678"


async def test_a_field_to_empty_waits_in_the_outbox_through_a_failed_delivery(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """What to empty is sealed with the queued write: a delivery the CRM refuses for now
    (it is down), delivered by the next run, still empties the field."""
    await _synced_then_phone_removed(shop, rt)
    crm.faults.down = True
    (report,) = await rt.engine.sync()
    assert rt.store.outbox_count("crm") == 1
    assert _crm_phone(crm) == "+31612345678"
    # The report says the write was queued to empty the field, not that it was emptied.
    console = Console(record=True, width=400)
    print_report(console, report)
    assert "1 queued with fields to empty" in console.export_text()
    assert "emptied" not in console.export_text()
    crm.faults.down = False
    await rt.engine.sync()
    assert rt.store.outbox_count("crm") == 0
    assert _crm_phone(crm) in ("", None)


async def test_the_audit_entry_names_the_fields_emptied_and_no_value(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    await _synced_then_phone_removed(shop, rt)
    await rt.engine.sync()
    rows = rt.store.db.execute(
        "SELECT data FROM audit WHERE kind='sync.batch' ORDER BY seq DESC LIMIT 1"
    ).fetchall()
    (detail,) = rows[0]
    assert '"emptied":["phone"]' in str(detail).replace(" ", "")
    assert "0612345678" not in str(detail) and "canary" not in str(detail)


def test_what_another_flow_wrote_or_a_store_of_before_kept_is_not_emptied(tmp_path: Path) -> None:
    """Two shops feeding one CRM: a write of one empties nothing the other gave a value.
    A row without a field set (kept before migration 27, or carried over by a restore)
    empties nothing either."""
    store = Store(tmp_path / "s.db")
    emptying = Emptying(store)
    mappings = Path(__file__).resolve().parents[2] / "mappings"

    shop, crm = (
        _System("shop", mappings / "woocommerce.toml"),
        _System("crm", mappings / "hubspot.toml"),
    )
    person = Person(email=EMAIL, first_name="Ed")
    fields = {"email": EMAIL, "firstname": "Ed"}
    given = emptying.number("shop-to-crm", {"email": 1, "firstname": 1, "phone": 1})
    other = emptying.number("webshop-2", {"email": 1, "firstname": 1, "phone": 1})

    def empty(earlier: tuple[int | None, int | None]) -> frozenset[str]:
        return emptying.plan("shop-to-crm", shop, crm, person, fields, earlier).empty  # type: ignore[arg-type]

    assert empty((None, given)) == {"phone"}
    assert empty((given, None)) == {"phone"}
    assert empty((None, other)) == frozenset()
    assert empty((None, None)) == frozenset()
    # A value the shop gave that could not be read is not empty at the shop.
    person.unread = frozenset({"phone"})
    assert empty((None, given)) == frozenset()
    # A field set made by another process is read from the store.
    assert Emptying(Store(tmp_path / "s.db")).plan(
        "shop-to-crm",
        shop,  # type: ignore[arg-type]
        crm,  # type: ignore[arg-type]
        Person(email=EMAIL),
        fields,
        (given, None),
    ).empty == {"phone"}


def test_each_of_many_flows_empties_what_it_gave_last_and_no_later_flow_gave(
    tmp_path: Path,
) -> None:
    """Shops feeding one CRM write Ed in turn, acknowledged as deliveries are: each flow's
    last field set is kept, whichever flows wrote since (migration 31), so the one that
    gave the phone number last empties it once its source no longer holds it, and one
    that gave it before another flow did empties nothing."""
    store = Store(tmp_path / "s.db")
    emptying = Emptying(store)
    mappings = Path(__file__).resolve().parents[2] / "mappings"
    shop, crm = (
        _System("shop", mappings / "woocommerce.toml"),
        _System("crm", mappings / "hubspot.toml"),
    )
    subject = "s" * 64
    person = Person(email=EMAIL, first_name="Ed")
    fields = {"email": EMAIL, "firstname": "Ed"}
    writes = iter(range(1000))

    def write(flow: str, *names: str) -> None:
        sent = emptying.number(flow, ["email", "firstname", *names])
        store.acknowledge("crm", [Ack(next(writes), subject, None, f"h{flow}{names}", sent=sent)])

    def empty(flow: str) -> frozenset[str]:
        _, _, sent = store.page_hashes(["crm"], [subject])
        earlier = (
            sent.queued["crm"].get(subject),
            sent.delivered["crm"].get(subject),
            sent.before["crm"].get(subject),
            *sent.earlier["crm"].get(subject, ()),
        )
        return emptying.plan(flow, shop, crm, person, fields, earlier).empty  # type: ignore[arg-type]

    def kept() -> int:
        (older,) = store.db.execute("SELECT sent_earlier FROM delivered").fetchone()
        return 0 if older is None else len(json.loads(older))

    write("a", "phone")
    write("b")
    write("c")
    assert (empty("a"), empty("b"), empty("c")) == ({"phone"}, frozenset(), frozenset())
    write("c")  # the same flow again moves nothing on
    write("b", "phone")  # the number there is b's now
    assert (empty("a"), empty("b"), empty("c")) == (frozenset(), {"phone"}, frozenset())
    write("d")
    write("a")
    assert (empty("a"), empty("b"), empty("c"), empty("d")) == (
        frozenset(),
        {"phone"},
        frozenset(),
        frozenset(),
    )
    assert kept() == 2  # a and d the last two; c and b before them, one set each
    write("c", "phone")
    write("a")
    write("b")
    assert (empty("a"), empty("b"), empty("c"), empty("d")) == (
        frozenset(),
        frozenset(),
        {"phone"},
        frozenset(),
    )
    # Two flows in turn keep no list at all.
    store.db.execute("UPDATE delivered SET sent_before=NULL, sent_earlier=NULL")
    for flow in ("a", "b", "a", "b", "a"):
        write(flow)
    assert kept() == 0


def test_a_field_the_destination_keeps_when_emptied_is_not_emptied(tmp_path: Path) -> None:
    """``keep_when_emptied = true`` in the destination's mapping: its users keep the field up
    to date too, and a shop that holds none for the person does not wipe theirs."""
    mappings = Path(__file__).resolve().parents[2] / "mappings"
    text = (mappings / "hubspot.toml").read_text()
    assert 'path = "phone"\n' in text
    kept = tmp_path / "hubspot.toml"
    kept.write_text(text.replace('path = "phone"\n', 'path = "phone"\nkeep_when_emptied = true\n'))

    shop = _System("shop", mappings / "woocommerce.toml")
    emptying = Emptying(Store(tmp_path / "s.db"))
    given = emptying.number("f", {"email": 1, "firstname": 1, "phone": 1})
    fields = {"email": EMAIL}
    for crm, expected in (
        (_System("crm", mappings / "hubspot.toml"), {"firstname", "phone"}),
        (_System("crm2", kept), {"firstname"}),
    ):
        plan = emptying.plan(
            "f",
            shop,  # type: ignore[arg-type]
            crm,  # type: ignore[arg-type]
            Person(email=EMAIL),
            fields,
            (None, given),
        )
        assert plan.empty == expected


async def test_the_audit_entry_names_no_field_the_system_kept(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field the system says it could not hold empty (``UpsertResult.kept``) is not
    recorded as emptied."""
    adapter = rt.systems["crm"].adapter
    upsert = adapter.upsert

    async def keeping(records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        results = await upsert(records)
        return [r._replace(kept=rec.clear) for r, rec in zip(results, records, strict=True)]

    monkeypatch.setattr(adapter, "upsert", keeping)
    await _synced_then_phone_removed(shop, rt)
    await rt.engine.sync()
    (detail,) = rt.store.db.execute(
        "SELECT data FROM audit WHERE kind='sync.batch' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    assert "emptied" not in str(detail)
