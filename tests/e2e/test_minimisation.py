"""What leaves the process, system by system: only the fields each mapping sends.

Every path that writes to a system is driven against the sandboxes (a first sync, a change,
a move with a write kept from the former address, a withdrawal and a renewal of consent, a
correction, an erasure), and what each sandbox received is held against that system's own
allow-list, in its own vocabulary: nothing unmapped, nothing mapped for another system.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.dsr import DsrService
from connector.runtime import Runtime, open_runtime
from connector.sandboxkit import REDACTED_QUERY_KEYS, RequestLog
from tests.conftest import VirtualTime
from tests.e2e.test_multi_system import World, write_config

EMAIL = "mia.minimaal@voorbeeld.nl"
MOVED = "mia.verhuisd@voorbeeld.nl"
OPT_IN = [{"key": "marketing_opt_in", "value": "yes"}]
OPT_OUT = [{"key": "marketing_opt_in", "value": "no"}]

#: What each destination may be sent, as its sandbox names what a write carried: the paths
#: its mapping sends, in the vendor's shape (Pipedrive's e-mail and phone lists, its one
#: ``name``; Mailchimp's status, which the mapping's consent markers and a new member's
#: status are).
ALLOWED = {
    "crm": {"email", "firstname", "lastname", "phone", "company", "city", "country"},
    "news": {"email_address", "merge_fields.FNAME", "merge_fields.LNAME", "status"}
    | {"status_if_new"},
    "deals": {"name", "emails", "phones"},
}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def rt(world: World, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = VirtualTime()
    async with open_runtime(
        write_config(tmp_path, world),
        transports=world.transports(),
        sleep=clock.sleep,
        clock=clock.clock,
    ) as runtime:
        yield runtime


def _logs(world: World) -> dict[str, RequestLog]:
    return {"crm": world.crm.log, "news": world.news.log, "deals": world.deals.log}


def _written(log: RequestLog) -> set[str]:
    """The field names every write ``log`` holds carried."""
    names: set[str] = set()
    for entry in log.writes():
        names |= entry.property_names
    return names


def _personal_queries(log: RequestLog) -> list[str]:
    """The writes whose query string carried something personal (an address, a name)."""
    return [e.path for e in log.writes() if REDACTED_QUERY_KEYS & set(e.query)]


def _add_customer(world: World) -> None:
    """A customer the shop holds more of than any system receives."""
    world.shop.add_person(
        EMAIL,
        "Mia",
        "Minimaal",
        "0612345678",
        country="NL",
        city="Utrecht",
        company="Minimaal BV",
        address_1="Kerkstraat 1",
        postcode="3511 AB",
        date_of_birth="1990-01-01",
        meta_data=OPT_IN,
    )


async def test_every_sync_path_sends_each_system_only_what_its_mapping_sends(
    world: World, rt: Runtime
) -> None:
    """A first sync (the CRM and Pipedrive down, so the move below sends the write kept
    from the former address first), a change of address and name, a withdrawal and a
    renewal of consent: no system is sent a field another system's mapping names, or one no
    mapping does (the address, postcode, date of birth); no write carries any of the
    person in its query string."""
    _add_customer(world)
    world.crm.faults.fail_next = world.deals.faults.fail_next = 10_000
    await rt.engine.sync("shop")
    world.crm.faults.fail_next = world.deals.faults.fail_next = 0
    world.shop.touch(EMAIL, email=MOVED, first_name="Mieke")
    (moved,) = await rt.engine.sync("shop")
    assert moved.moved == 1 and not moved.errors, moved.errors
    world.shop.touch(MOVED, meta_data=OPT_OUT)
    await rt.engine.sync("shop")
    world.shop.touch(MOVED, meta_data=OPT_IN, last_name="Minimaal-Vos")
    (renewed,) = await rt.engine.sync("shop")
    assert not renewed.failed, renewed.errors
    assert world.news.confirmations_to(MOVED) > 0  # the renewal did go
    for name, log in _logs(world).items():
        assert log.writes(), name
        assert _written(log) <= ALLOWED[name], name
        assert _personal_queries(log) == [], name
    # A system is never sent the consent as data, nor what only the source needs.
    assert not {"marketing_consent", "customer_since"} & set().union(
        *(_written(log) for log in _logs(world).values())
    )


async def test_a_correction_sends_each_system_the_corrected_field_alone(
    world: World, rt: Runtime
) -> None:
    """A corrected last name: each system is sent that field as it holds it, and what it
    tells the person by (HubSpot's e-mail, the shop's id and e-mail), never the rest of the
    record; a system whose mapping has no such field is sent nothing."""
    _add_customer(world)
    await rt.engine.sync("shop")
    for log in (*_logs(world).values(), world.shop.log):
        log.clear()
    view = await DsrService(rt).rectify(EMAIL, {"last_name": "Goed"})
    assert view.status == "completed", [(s.system, s.status) for s in view.systems]
    assert _written(world.crm.log) == {"email", "lastname"}
    assert _written(world.news.log) == {"merge_fields.LNAME"}
    assert _written(world.deals.log) == {"name"}
    assert _written(world.shop.log) == {"id", "email", "last_name", "billing.last_name"}
    for log in (world.crm.log, world.news.log, world.deals.log):
        log.clear()
    view = await DsrService(rt).rectify(EMAIL, {"city": "Delft"})
    assert view.status == "completed", [(s.system, s.status) for s in view.systems]
    assert _written(world.crm.log) == {"email", "city"}
    assert world.news.log.writes() == [] and world.deals.log.writes() == []


async def test_an_erasure_sends_no_field_of_the_person(world: World, rt: Runtime) -> None:
    """An erasure deletes by id or address: no system is sent a value of the person's to
    write, and none of them in a query string."""
    _add_customer(world)
    await rt.engine.sync("shop")
    for log in _logs(world).values():
        log.clear()
    view = await DsrService(rt).erase(EMAIL)
    assert view.status == "completed", [(s.system, s.status) for s in view.systems]
    for name, log in _logs(world).items():
        assert log.writes(), name
        assert not _written(log) & ALLOWED[name], name
        assert _personal_queries(log) == [], name
