"""The HubSpot adapter against its sandbox, in process (no network, no real sleeping)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.hubspot import (
    SPEC,
    HubSpotAdapter,
    HubSpotSandbox,
    HubSpotSettings,
    client_config,
    hubspot_limits,
    sign_v3,
    wait_hint,
)
from adapters.hubspot.adapter import ERASURE_NOTE
from adapters.hubspot.sandbox import MIGRATION_RETRY_AFTER
from adapters.hubspot.settings import DAILY_WAIT_SECONDS
from connector.adapter import Adapter, OutboundRecord, Subject, WebhookRequest
from connector.demo import REPO_MAPPINGS
from connector.errors import ConfigError, FatalRemoteError, RecordError, RetryableError
from connector.http import RetryPolicy, SystemClient
from connector.mapping import SystemMapping, load_mapping
from connector.others import LEFT_OUT
from connector.ratelimit import RateLimit
from connector.settings import RateLimitSettings
from tests.adapters.front import Decision, FrontPage
from tests.conftest import CANARY_EMAIL, FakeClock

BASE_URL = "https://api.hubapi.test"
CONTACTS = "/crm/v3/objects/contacts"
TOKEN = "pat-sandbox"
SECRET = "app-secret"
HOOK_URL = "https://klantsync.example.nl/webhooks/crm"


@dataclass
class Harness:
    """A sandbox, the adapter wired to it, and what the client slept."""

    sandbox: HubSpotSandbox
    adapter: HubSpotAdapter
    client: SystemClient
    clock: FakeClock
    sleeps: list[float] = field(default_factory=list)


def make_settings(token: str = TOKEN, **overrides: Any) -> HubSpotSettings:
    return HubSpotSettings(
        adapter="hubspot",
        base_url=BASE_URL,
        mapping=Path("mappings/hubspot.toml"),
        credentials={"token": SecretStr(token)},
        **overrides,
    )


def make_harness(
    sandbox: HubSpotSandbox,
    clock: FakeClock,
    *,
    token: str = TOKEN,
    attempts: int = 4,
    front: Callable[[Any], Any] | None = None,
) -> Harness:
    """``front``, if given, wraps the sandbox's app (a proxy or a maintenance page before it)."""
    settings = make_settings(token)
    config = client_config(settings)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        # Retry waits move the fake clock, so the sandbox's rate window frees as it would.
        sleeps.append(seconds)
        clock.advance(seconds)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        headers=config.headers,
        wait_hint=config.wait_hint,
        rate_limited=config.rate_limited,
        budget_spent=config.budget_spent,
        transport=httpx.ASGITransport(app=front(sandbox.app()) if front else sandbox.app()),
        retry=RetryPolicy(attempts=attempts, base_seconds=0, sleep=fake_sleep),
        clock=clock,
    )
    return Harness(sandbox, HubSpotAdapter(client, settings), client, clock, sleeps)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> HubSpotSandbox:
    return HubSpotSandbox(clock=clock)


@pytest.fixture
async def hub(sandbox: HubSpotSandbox, clock: FakeClock) -> AsyncIterator[Harness]:
    harness = make_harness(sandbox, clock)
    yield harness
    await harness.client.aclose()


@pytest.fixture
async def raw(sandbox: HubSpotSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client on the sandbox, for calls the adapter never makes."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


def person(n: int, **fields: Any) -> OutboundRecord:
    values = {"email": f"person{n}@example.com", "firstname": f"First{n}", "lastname": "Test"}
    values.update(fields)
    return OutboundRecord(
        ref=f"ref-{n}", email=str(values["email"]), external_id=None, fields=values
    )


# -- settings, limits, spec -------------------------------------------------------------------


def test_limits_follow_tier_and_rate_limit_override() -> None:
    """The burst limit follows the tier unless a rate_limit table overrides it; search is 4/s."""
    assert hubspot_limits(make_settings(tier="free")).rate["default"] == RateLimit(100, 10)
    assert hubspot_limits(make_settings(tier="api_add_on")).rate["default"] == RateLimit(250, 10)
    limits = hubspot_limits(make_settings(rate_limit=RateLimitSettings(requests=50, per_seconds=5)))
    assert limits.rate["default"] == RateLimit(50, 5)
    assert limits.rate["search"] == RateLimit(4, 1)
    assert (limits.batch_size, limits.page_size, limits.max_concurrency) == (100, 100, 4)


def test_spec_and_adapter_meet_the_contract(hub: Harness) -> None:
    """SPEC wires the HubSpot pieces together and the adapter meets the Adapter protocol."""
    assert SPEC.kind == "hubspot" == hub.adapter.kind
    assert SPEC.settings_model is HubSpotSettings
    assert isinstance(hub.adapter, Adapter)
    assert client_config(make_settings()).headers == {"Authorization": f"Bearer {TOKEN}"}
    assert SPEC.sandbox().credentials() == {"token": TOKEN}


# -- upsert -----------------------------------------------------------------------------------


async def test_upsert_creates_then_updates_by_email(hub: Harness) -> None:
    """A second upsert of the same e-mails updates the same contacts and creates none."""
    first = await hub.adapter.upsert([person(1), person(2), person(3)])
    assert [r.outcome for r in first] == ["created"] * 3
    assert [r.ref for r in first] == ["ref-1", "ref-2", "ref-3"]
    assert hub.sandbox.contact_count() == 3

    second = await hub.adapter.upsert([person(1, city="Utrecht"), person(2), person(3)])
    assert [r.outcome for r in second] == ["updated"] * 3
    assert [r.external_id for r in second] == [r.external_id for r in first]
    assert hub.sandbox.contact_count() == 3
    record = hub.sandbox.record_for("person1@example.com")
    assert record is not None and record["properties"]["city"] == "Utrecht"
    assert record["id"] == first[0].external_id


async def test_update_by_email_leaves_a_contact_known_as_another_subject_s(hub: Harness) -> None:
    """Written by e-mail, a correction lands on whoever holds the address: one the connector
    knows as another subject's (``spare``) is left as it is, and nothing is held."""
    (created,) = await hub.adapter.upsert([person(1)])
    assert created.external_id is not None
    fix = person(1, lastname="Corrected")._replace(spare=frozenset({created.external_id}))
    (result,) = await hub.adapter.update([fix])
    assert result.outcome == "not_held"
    record = hub.sandbox.record_for("person1@example.com")
    assert record is not None and record["properties"]["lastname"] == "Test"


async def test_upsert_sends_every_value_as_a_string(hub: Harness) -> None:
    """None becomes "" (clearing the value) and numbers and booleans become text."""
    await hub.adapter.upsert([person(1, zip=3511, company=None, website=True)])
    record = hub.sandbox.record_for("person1@example.com")
    assert record is not None
    assert record["properties"]["zip"] == "3511"
    assert record["properties"]["company"] == ""
    assert record["properties"]["website"] == "true"


def emptying(record: OutboundRecord, external_id: str | None, *names: str) -> OutboundRecord:
    """``record`` again, by ``external_id`` where given, with ``names`` to empty."""
    return record._replace(external_id=external_id, clear=frozenset(names))


async def test_upsert_empties_the_properties_named_in_clear_and_nothing_else(hub: Harness) -> None:
    """A phone number removed at the source is emptied in HubSpot (sent ``""``, which a read
    then answers), by e-mail and by the contact's id alike; the other fields sent are
    written, and a property neither sent nor named is kept. A write naming nothing to empty
    asks HubSpot for nothing more than before."""
    given = {"phone": "0612345678", "city": "Delft", "company": "Acme"}
    first = await hub.adapter.upsert([person(1, **given), person(2, **given)])
    assert hub.sandbox.log.count("GET", "/crm/v3/properties/contacts") == 0
    results = await hub.adapter.upsert(
        [
            emptying(person(1, firstname="Anna"), None, "phone"),
            emptying(person(2, firstname="Bert"), first[1].external_id, "phone", "city"),
        ]
    )
    assert [r.outcome for r in results] == ["updated", "updated"]
    one = hub.sandbox.record_for("person1@example.com")
    two = hub.sandbox.record_for("person2@example.com")
    assert one is not None and two is not None
    assert one["properties"]["phone"] == "" and two["properties"]["phone"] == ""
    assert (one["properties"]["firstname"], two["properties"]["firstname"]) == ("Anna", "Bert")
    assert (one["properties"]["city"], two["properties"]["city"]) == ("Delft", "")
    assert one["properties"]["company"] == two["properties"]["company"] == "Acme"


async def test_a_name_hubspot_cannot_hold_empty_is_left_and_the_write_succeeds(
    hub: Harness,
) -> None:
    """HubSpot refuses a write of a property it sets itself (``createdate``) or one the portal
    does not define, an empty value's too, and fails the record for it: such names in
    ``clear`` are not sent, and the rest of the write is made."""
    await hub.adapter.upsert([person(1, phone="0612345678")])
    before = hub.sandbox.record_for("person1@example.com")
    assert before is not None
    names = ("phone", "createdate", "hs_object_id", "favourite_colour", "address.street")
    (result,) = await hub.adapter.upsert([emptying(person(1, lastname="Later"), None, *names)])
    assert (result.outcome, result.reason) == ("updated", "")
    after = hub.sandbox.record_for("person1@example.com")
    assert after is not None
    assert (after["properties"]["phone"], after["properties"]["lastname"]) == ("", "Later")
    assert after["properties"]["createdate"] == before["properties"]["createdate"]
    assert after["id"] == before["id"]
    assert hub.sandbox.log.property_names() == {"email", "firstname", "lastname", "phone"}


async def test_a_name_hubspot_cannot_hold_empty_is_reported_kept_and_an_emptied_one_not(
    hub: Harness,
) -> None:
    """The result's ``kept`` names the names of ``clear`` left as they are: a property HubSpot
    sets itself, one the portal does not define, the e-mail; the phone emptied is not named,
    nor a name the write gives a value. A contact the write creates held nothing to keep."""
    (first,) = await hub.adapter.upsert([person(1, phone="0612345678", city="Delft")])
    names = ("phone", "createdate", "favourite_colour", "email", "lastname")
    record = person(1, lastname="Later")
    unaddressed = record._replace(fields={k: v for k, v in record.fields.items() if k != "email"})
    (result, created) = await hub.adapter.upsert(
        [emptying(unaddressed, None, *names), emptying(person(2), None, *names)]
    )
    assert (result.outcome, created.outcome) == ("updated", "created")
    assert result.kept == {"createdate", "favourite_colour", "email"}
    assert created.kept == frozenset()
    (fixed,) = await hub.adapter.update(
        [emptying(person(1), first.external_id, "city", "hs_object_id")]
    )
    assert (fixed.outcome, fixed.kept) == ("updated", {"hs_object_id"})
    held = hub.sandbox.record_for("person1@example.com")
    assert held is not None and (held["properties"]["phone"], held["properties"]["city"]) == (
        "",
        "",
    )


async def test_without_the_schema_scope_only_configured_properties_are_emptied(
    clock: FakeClock,
) -> None:
    """Without the scope to read the portal's definitions, the configured ``properties``
    alone are emptied (less those HubSpot sets itself): a name beyond them may be one the
    portal lacks, which would fail the record's whole write."""
    sandbox = HubSpotSandbox(
        clock=clock,
        extra_properties=("klantnummer",),
        scopes=("crm.objects.contacts.read", "crm.objects.contacts.write"),
    )
    harness = make_harness(sandbox, clock)
    try:
        await harness.adapter.upsert([person(1, phone="0612345678", klantnummer="K1")])
        record = emptying(person(1), None, "phone", "klantnummer", "lastmodifieddate")
        (result,) = await harness.adapter.upsert([record])
    finally:
        await harness.client.aclose()
    assert result.outcome == "updated"
    held = sandbox.record_for("person1@example.com")
    assert held is not None
    assert (held["properties"]["phone"], held["properties"]["klantnummer"]) == ("", "K1")


async def test_a_batch_creating_one_contact_and_emptying_another_s_phone_does_both(
    hub: Harness,
) -> None:
    """A contact the write creates needs nothing emptied: the name in ``clear`` costs it
    nothing, and the contact beside it in the batch is emptied."""
    await hub.adapter.upsert([person(1, phone="0612345678")])
    results = await hub.adapter.upsert(
        [emptying(person(1), None, "phone"), emptying(person(2), None, "phone")]
    )
    assert [r.outcome for r in results] == ["updated", "created"]
    for email in ("person1@example.com", "person2@example.com"):
        record = hub.sandbox.record_for(email)
        assert record is not None and not record["properties"]["phone"], email
    assert hub.sandbox.contact_count() == 2


async def test_update_empties_the_properties_named_in_clear(hub: Harness) -> None:
    """A correction empties as a sync does, by e-mail and by id, and creates nobody."""
    given = {"phone": "0612345678", "city": "Delft"}
    first = await hub.adapter.upsert([person(1, **given), person(2, **given)])
    results = await hub.adapter.update(
        [
            emptying(person(1), None, "phone", "createdate"),
            emptying(person(2), first[1].external_id, "city"),
            emptying(person(3), None, "phone"),
        ]
    )
    assert [r.outcome for r in results] == ["updated", "updated", "not_held"]
    one = hub.sandbox.record_for("person1@example.com")
    two = hub.sandbox.record_for("person2@example.com")
    assert one is not None and two is not None
    assert (one["properties"]["phone"], one["properties"]["city"]) == ("", "Delft")
    assert (two["properties"]["phone"], two["properties"]["city"]) == ("0612345678", "")
    assert hub.sandbox.contact_count() == 2


async def test_sandbox_leaves_a_property_sent_null_as_it_was(raw: httpx.AsyncClient) -> None:
    """HubSpot answers a null with success and keeps the value; ``""`` empties it."""
    inputs = [{"id": "a@example.com", "idProperty": "email", "properties": {"phone": "06123"}}]
    await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    inputs[0]["properties"] = {"phone": None, "city": None}
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 200
    read = await raw.get(f"{CONTACTS}/a@example.com?idProperty=email&properties=phone,city")
    assert read.json()["properties"] == {"phone": "06123", "city": None}
    inputs[0]["properties"] = {"phone": ""}
    await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    read = await raw.get(f"{CONTACTS}/a@example.com?idProperty=email&properties=phone")
    assert read.json()["properties"] == {"phone": ""}


async def test_sandbox_records_every_property_name_written(hub: Harness) -> None:
    """The request log holds the property names a write carried, and no values or e-mails."""
    await hub.adapter.upsert([person(1, date_of_birth="1990-01-01")])
    assert hub.sandbox.log.property_names() == {"email", "firstname", "lastname", "date_of_birth"}
    assert "person1@example.com" not in repr(hub.sandbox.log.entries)
    assert "1990-01-01" not in repr(hub.sandbox.log.entries)


async def test_partial_failure_fails_only_the_bad_record(hub: Harness) -> None:
    """A 207 fails exactly the invalid input, with the category and HubSpot's code for the
    value as reason, and no e-mail."""
    bad_email = "not an address@example.com"
    records = [person(1), person(2, email=bad_email), person(3)]
    results = await hub.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "failed", "created"]
    failed = results[1]
    assert failed.ref == "ref-2"
    assert failed.reason == "VALIDATION_ERROR: INVALID_EMAIL"
    assert not failed.retryable
    assert bad_email not in failed.reason and "@" not in failed.reason
    assert [e.status for e in hub.sandbox.log.entries] == [207]
    assert hub.sandbox.contact_count() == 2


async def test_sandbox_fails_whole_batch_without_trace_ids(raw: httpx.AsyncClient) -> None:
    """Without an objectWriteTraceId on every input, an invalid e-mail refuses the whole batch."""
    inputs = [
        {"id": "ok@example.com", "idProperty": "email", "properties": {}},
        {"id": "no-at-sign", "idProperty": "email", "properties": {}},
    ]
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


async def test_sandbox_refuses_more_than_100_inputs(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox
) -> None:
    """A batch of 101 inputs is a 400 VALIDATION_ERROR and writes nothing."""
    inputs = [
        {"id": f"p{n}@example.com", "idProperty": "email", "properties": {}} for n in range(101)
    ]
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error"
    assert sandbox.contact_count() == 0


async def test_upsert_splits_into_batches_of_100(hub: Harness) -> None:
    """150 records go out as batches of at most 100 and all land."""
    results = await hub.adapter.upsert([person(n) for n in range(150)])
    assert all(r.outcome == "created" for r in results)
    assert [e.records for e in hub.sandbox.log.entries] == [100, 50]
    assert hub.sandbox.contact_count() == 150


async def test_duplicate_emails_in_one_call_go_in_separate_batches(hub: Harness) -> None:
    """Two records for one e-mail are written in order, in two calls (HubSpot refuses dupes)."""
    records = [person(1, city="Delft"), person(2), person(1, email="person1@example.com")]
    records[2] = OutboundRecord("ref-1b", "person1@example.com", None, {"city": "Gouda"})
    results = await hub.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "created", "updated"]
    assert len(hub.sandbox.log.entries) == 2
    record = hub.sandbox.record_for("person1@example.com")
    assert record is not None and record["properties"]["city"] == "Gouda"


@pytest.mark.parametrize(
    ("action", "first", "second"),
    [
        ("update", {"id": "A@example.com", "idProperty": "email"}, {"id": "a@example.com"}),
        ("upsert", {"id": "a@example.com", "idProperty": "email"}, {"id": "A@example.com "}),
    ],
)
async def test_sandbox_refuses_a_batch_naming_one_contact_twice_and_names_it(
    raw: httpx.AsyncClient,
    sandbox: HubSpotSandbox,
    action: str,
    first: dict[str, str],
    second: dict[str, str],
) -> None:
    """A batch naming one contact twice (an e-mail in another case too) is refused whole with
    HubSpot's 400, which names the id in its message and in ``context.ids``."""
    sandbox.add_person("a@example.com", "Ann")
    inputs = [
        {**first, "properties": {"lastname": "One"}},
        {**second, "idProperty": "email", "properties": {"lastname": "Two"}},
    ]
    response = await raw.post(f"{CONTACTS}/batch/{action}", json={"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert (body["category"], body["context"]) == ("VALIDATION_ERROR", {"ids": ["a@example.com"]})
    assert body["message"].startswith("Duplicate IDs found in batch input: [a@example.com]")
    record = sandbox.record_for("a@example.com")
    assert record is not None and record["properties"]["lastname"] == ""


async def test_unknown_property_fails_only_the_record_that_names_it(hub: Harness) -> None:
    """With a trace id on every input, HubSpot answers a property the portal lacks per input
    in its 207 (PROPERTY_DOESNT_EXIST, as its error-handling guide shows): that record fails,
    without retry, saying so, and the others of the batch are written in the same call."""
    records = [person(1), person(2, favourite_colour="blue"), person(3)]
    results = await hub.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "failed", "created"]
    reason = "VALIDATION_ERROR: PROPERTY_DOESNT_EXIST"
    assert (results[1].reason, results[1].retryable) == (reason, False)
    assert [e.status for e in hub.sandbox.log.entries] == [207]
    assert hub.sandbox.contact_count() == 2


async def test_sandbox_refuses_an_untraced_batch_naming_an_unknown_property(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox
) -> None:
    """Without trace ids a property the portal lacks refuses the whole batch, naming it."""
    inputs = [
        {"id": "a@example.com", "idProperty": "email", "properties": {}},
        {"id": "b@example.com", "idProperty": "email", "properties": {"favourite_colour": "x"}},
    ]
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert sandbox.contact_count() == 0


async def test_a_batch_refused_whole_is_raised_and_a_record_alone_fails(hub: Harness) -> None:
    """A batch HubSpot refuses as a whole (a 400) is raised, so the engine sends its records
    one by one to find the culprit; a record sent alone and refused fails, without retry."""
    hub.sandbox.faults.fail_status = 400
    hub.sandbox.faults.fail_next = 2
    with pytest.raises(RecordError):
        await hub.adapter.upsert([person(1), person(2)])
    (alone,) = await hub.adapter.upsert([person(2)])
    assert (alone.outcome, alone.reason, alone.retryable) == ("failed", "VALIDATION_ERROR", False)
    assert hub.sandbox.contact_count() == 0


async def test_a_value_no_option_of_its_enumeration_fails_only_the_record_that_gives_it(
    hub: Harness,
) -> None:
    """HubSpot refuses a value an enumeration does not offer among its options' internal
    values (``INVALID_OPTION``), a label or a multiple checkbox's unknown part included: with
    a trace id on every input that record fails, without retry, and the others are written.
    An option, several of a multiple checkbox, and ``""`` (which empties) are taken."""
    records = [
        person(1, lifecyclestage="customer"),
        person(2, lifecyclestage="Customer"),
        person(3, hs_legal_basis="Not applicable;Freely given consent from contact"),
        person(4, hs_legal_basis="Not applicable;maybe"),
        person(5, lifecyclestage=""),
    ]
    results = await hub.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "failed", "created", "failed", "created"]
    reason = "VALIDATION_ERROR: INVALID_OPTION"
    assert {(r.reason, r.retryable) for r in results if r.outcome == "failed"} == {(reason, False)}
    assert [e.status for e in hub.sandbox.log.entries] == [207]
    assert not hub.sandbox.holds("person2@example.com")


async def test_sandbox_refuses_an_untraced_write_of_a_value_no_option_offers(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox
) -> None:
    """Without trace ids, and for a single contact, a value an enumeration does not offer
    refuses the whole request, naming the property and HubSpot's code."""
    inputs = [
        {"id": "a@example.com", "idProperty": "email", "properties": {}},
        {"id": "b@example.com", "idProperty": "email", "properties": {"lifecyclestage": "vip"}},
    ]
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "INVALID_OPTION"
    assert body["errors"][0]["context"] == {"propertyName": ["lifecyclestage"]}
    created = await raw.post(
        CONTACTS, json={"properties": {"email": "c@example.com", "lifecyclestage": "vip"}}
    )
    assert created.status_code == 400
    assert sandbox.contact_count() == 0


async def test_read_only_property_is_refused(raw: httpx.AsyncClient) -> None:
    """Writing a property HubSpot sets itself (hs_object_id) is a 400 like an unknown one."""
    inputs = [{"id": "a@example.com", "idProperty": "email", "properties": {"hs_object_id": "9"}}]
    response = await raw.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "READ_ONLY_VALUE"


# -- errors, retries, rate limits -------------------------------------------------------------


async def test_wrong_token_is_fatal(sandbox: HubSpotSandbox, clock: FakeClock) -> None:
    """A 401 raises FatalRemoteError naming the category, never the token."""
    harness = make_harness(sandbox, clock, token="pat-wrong")
    async with harness.client:
        with pytest.raises(FatalRemoteError) as caught:
            await harness.adapter.upsert([person(1)])
    assert caught.value.status == 401
    assert caught.value.detail == "INVALID_AUTHENTICATION"
    assert "pat-wrong" not in str(caught.value)
    assert harness.sleeps == []


async def test_missing_token_gets_hubspot_auth_body(raw: httpx.AsyncClient) -> None:
    """Without a bearer token the sandbox answers HubSpot's 401 error body."""
    response = await raw.get(CONTACTS, headers={"Authorization": ""})
    assert response.status_code == 401
    body = response.json()
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert body["status"] == "error" and body["correlationId"]


READ_SCOPE = "crm.objects.contacts.read"
WRITE_SCOPE = "crm.objects.contacts.write"

_CONTACT_WRITES = [
    (
        f"{CONTACTS}/batch/upsert",
        {"inputs": [{"id": "new@example.nl", "idProperty": "email", "properties": {}}]},
    ),
    (
        f"{CONTACTS}/batch/update",
        {"inputs": [{"id": "held@example.nl", "idProperty": "email", "properties": {}}]},
    ),
    (f"{CONTACTS}/gdpr-delete", {"objectId": "held@example.nl", "idProperty": "email"}),
]


@pytest.mark.parametrize(("path", "body"), _CONTACT_WRITES)
async def test_sandbox_refuses_a_contact_write_without_the_write_scope(
    sandbox: HubSpotSandbox, raw: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    """A token granted only crm.objects.contacts.read is refused every contact write with
    HubSpot's 403 MISSING_SCOPES [spec: the write scope], and nothing happens."""
    sandbox.scopes = {READ_SCOPE}
    sandbox.add_person("held@example.nl", "Held", "Person")
    response = await raw.post(path, json=body)
    assert response.status_code == 403, response.text[:200]
    assert response.json()["category"] == "MISSING_SCOPES"
    assert sandbox.holds("held@example.nl") and not sandbox.holds("new@example.nl")


async def test_sandbox_refuses_contact_reads_without_the_read_scope(
    sandbox: HubSpotSandbox, raw: httpx.AsyncClient
) -> None:
    """A token without crm.objects.contacts.read (a legacy app's leftovers, a typo'd grant)
    may neither list contacts (a pull) nor read one by e-mail (find, erase): 403."""
    sandbox.scopes = set()
    sandbox.add_person("held@example.nl", "Held", "Person")
    listed = await raw.get(CONTACTS, params={"limit": 100})
    looked_up = await raw.post(
        f"{CONTACTS}/batch/read",
        json={"idProperty": "email", "inputs": [{"id": "held@example.nl"}]},
    )
    assert (listed.status_code, looked_up.status_code) == (403, 403)
    assert looked_up.json()["category"] == "MISSING_SCOPES"


async def test_a_pull_without_the_read_scope_fails_naming_the_scope(hub: Harness) -> None:
    """The 403 is fatal and says which scope to grant, not only "MISSING_SCOPES"."""
    hub.sandbox.scopes = set()
    with pytest.raises(FatalRemoteError) as caught:
        async for _ in hub.adapter.pull(None):
            pass
    assert caught.value.status == 403
    assert caught.value.detail == f"MISSING_SCOPES: grant the private app {READ_SCOPE}"
    assert hub.sleeps == []


async def test_an_upsert_with_a_read_only_token_fails_naming_the_write_scope(
    hub: Harness,
) -> None:
    hub.sandbox.scopes = {READ_SCOPE}
    with pytest.raises(FatalRemoteError) as caught:
        await hub.adapter.upsert([person(1)])
    assert caught.value.status == 403 and WRITE_SCOPE in caught.value.detail
    assert "person1@example.com" not in str(caught.value)
    assert hub.sandbox.contact_count() == 0


async def test_an_erasure_with_a_read_only_token_fails_naming_the_write_scope(
    hub: Harness,
) -> None:
    """The lookup reads the contact, gdpr-delete is refused: the erasure raises (no result
    that could pass for done), names the scope and not the person, and the contact stays."""
    hub.sandbox.add_person(CANARY_EMAIL, "Canary", "Person")
    hub.sandbox.scopes = {READ_SCOPE}
    with pytest.raises(FatalRemoteError) as caught:
        await hub.adapter.erase(Subject(email=CANARY_EMAIL))
    assert caught.value.status == 403
    assert caught.value.detail == f"MISSING_SCOPES: grant the private app {WRITE_SCOPE}"
    assert CANARY_EMAIL not in str(caught.value) and caught.value.path.endswith("/gdpr-delete")
    assert hub.sandbox.holds(CANARY_EMAIL) and not hub.sandbox.is_blocklisted(CANARY_EMAIL)


async def test_burst_limit_answers_hubspot_429(clock: FakeClock) -> None:
    """Past the rolling window the sandbox answers HubSpot's 429; wait_hint reads policyName."""
    sandbox = HubSpotSandbox(rate_limit=RateLimit(3, 10), clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        remaining = [
            (await client.get(CONTACTS)).headers["X-HubSpot-RateLimit-Remaining"] for _ in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        limited = await client.get(CONTACTS)
        assert limited.status_code == 429
        body = limited.json()
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["errorType"] == "RATE_LIMIT"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert limited.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert limited.headers["X-HubSpot-RateLimit-Max"] == "3"
        assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert wait_hint(limited) == 10.0
        assert sandbox.rejected_429 == 1
        clock.advance(10)
        assert (await client.get(CONTACTS)).status_code == 200


async def test_search_limit_is_separate_and_headerless(clock: FakeClock) -> None:
    """Search has its own 4/s window, answering the 'secondly' 429 without rate headers."""
    sandbox = HubSpotSandbox(rate_limit=RateLimit(100, 10), clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for _ in range(4):
            ok = await client.post(f"{CONTACTS}/search", json={})
            assert ok.status_code == 200
            assert "X-HubSpot-RateLimit-Remaining" not in ok.headers
        limited = await client.post(f"{CONTACTS}/search", json={})
        assert limited.status_code == 429
        assert limited.json()["message"] == "You have reached your secondly limit."
        assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in limited.headers)
        assert wait_hint(limited) == 1.0
        assert (await client.get(CONTACTS)).headers["X-HubSpot-RateLimit-Remaining"] == "99"


async def test_a_spent_daily_limit_stops_the_calls_until_one_looks_again(hub: Harness) -> None:
    """HubSpot's DAILY 429 holds until midnight in the portal's time zone, and it wants error
    answers under 5% of a day's calls: one call finds out, the records stay retryable, no
    call goes out for a while, then one looks again."""
    hub.sandbox.daily_left = 0
    with pytest.raises(RetryableError):  # the engine leaves the batch queued
        await hub.adapter.upsert([person(1), person(2)])
    assert hub.sandbox.rejected_429 == 1
    with pytest.raises(RetryableError):
        await hub.adapter.upsert([person(3)])
    assert hub.sandbox.rejected_429 == 1  # nothing sent while the limit is known spent
    hub.clock.advance(DAILY_WAIT_SECONDS)
    hub.sandbox.daily_left = None  # midnight passed
    (again,) = await hub.adapter.upsert([person(3)])
    assert again.outcome == "created"


async def test_a_migration_in_progress_keeps_the_records_and_every_call_back_for_its_wait(
    hub: Harness,
) -> None:
    """HubSpot's 477 (the account moving between data-hosting locations) refuses no record:
    the write fails as retryable, so the engine keeps it queued, not dead-lettered, and no
    call goes out until HubSpot's Retry-After has passed (an hour at most, then one looks)."""
    hub.sandbox.faults.fail_status = 477
    hub.sandbox.faults.fail_next = 1
    with pytest.raises(RetryableError) as caught:
        await hub.adapter.upsert([person(1)])
    assert caught.value.status == 477
    assert caught.value.wait_seconds == MIGRATION_RETRY_AFTER
    with pytest.raises(RetryableError):
        await hub.adapter.upsert([person(2), person(3)])
    assert hub.client.stats.requests == 1  # held back: nothing sent into the migration
    hub.clock.advance(MIGRATION_RETRY_AFTER)
    results = await hub.adapter.upsert([person(1), person(2)])
    assert [r.outcome for r in results] == ["created", "created"]


async def test_a_locked_portal_is_asked_again_no_sooner_than_its_lock_lasts(
    hub: Harness,
) -> None:
    """HubSpot's 423 says its lock lasts 2 seconds and asks for at least that between calls:
    the write is retried after 2 s, not at once into the lock, and lands."""
    hub.sandbox.faults.fail_status = 423
    hub.sandbox.faults.fail_next = 1
    (result,) = await hub.adapter.upsert([person(1)])
    assert result.outcome == "created"
    assert len(hub.sleeps) == 1 and hub.sleeps[0] >= 2.0
    assert hub.client.stats.requests == 2


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"policyName": "TEN_SECONDLY_ROLLING"}, {}, 10.0),
        (
            {"policyName": "TEN_SECONDLY_ROLLING"},
            {"X-HubSpot-RateLimit-Interval-Milliseconds": "2000"},
            2.0,
        ),
        (
            {"policyName": "DAILY", "message": "You have reached your daily limit."},
            {},
            DAILY_WAIT_SECONDS,
        ),
        ({"message": "You have reached your secondly limit."}, {}, 1.0),
        (None, {}, None),
        (None, {"X-HubSpot-RateLimit-Interval-Milliseconds": "nonsense"}, None),
    ],
)
def test_wait_hint_reads_policy_and_tolerates_junk(
    body: dict[str, str] | None, headers: dict[str, str], expected: float | None
) -> None:
    """wait_hint follows policyName and the interval header, and survives non-JSON bodies."""
    content = json.dumps(body).encode() if body is not None else b"<html>busy</html>"
    response = httpx.Response(429, content=content, headers=headers)
    assert wait_hint(response) == expected


async def test_client_retries_a_429_then_succeeds(clock: FakeClock) -> None:
    """A 429 is retried after the hinted window (on the fake clock) and the write lands."""
    sandbox = HubSpotSandbox(rate_limit=RateLimit(2, 10), clock=clock)
    harness = make_harness(sandbox, clock)
    async with harness.client:
        for n in range(3):
            (result,) = await harness.adapter.upsert([person(n)])
            assert result.outcome == "created"
    assert sandbox.rejected_429 == 1
    assert harness.client.stats.rate_limited == 1
    assert len(harness.sleeps) == 1 and harness.sleeps[0] >= 10.0
    assert sandbox.contact_count() == 3


async def test_server_errors_and_resets_are_retried(hub: Harness) -> None:
    """Two 503s and a dropped connection are retried, and the upsert still lands once."""
    hub.sandbox.faults.fail_next = 2
    (result,) = await hub.adapter.upsert([person(1)])
    assert result.outcome == "created"
    hub.sandbox.faults.reset_next = 1
    (result,) = await hub.adapter.upsert([person(1)])
    assert result.outcome == "updated"
    assert hub.client.stats.server_errors == 2
    assert hub.client.stats.transport_errors == 1
    assert hub.sandbox.contact_count() == 1


async def test_retries_run_out_into_retryable_error(hub: Harness) -> None:
    """A system that stays down ends in RetryableError after the policy's attempts."""
    hub.sandbox.faults.fail_next = 10
    with pytest.raises(RetryableError) as caught:
        await hub.adapter.upsert([person(1)])
    assert caught.value.status == 503
    assert hub.client.stats.requests == 4


# -- erase ------------------------------------------------------------------------------------


async def test_erase_uses_gdpr_delete_and_leaves_nothing_restorable(hub: Harness) -> None:
    """Erasure calls gdpr-delete only; the contact is gone, not restorable, and blocklisted."""
    hub.sandbox.add_person("erase.me@example.com", "Erase", "Me", "+31612345678")
    result = await hub.adapter.erase(Subject(email="erase.me@example.com"))
    assert result.found
    assert (result.mode, result.reversible, result.vendor_status) == ("hard_delete", False, 204)
    assert result.endpoint == "POST /crm/v3/objects/contacts/gdpr-delete"
    assert "blocklist" in result.note
    deletes = [e for e in hub.sandbox.endpoints_used if "archive" in e or e.startswith("DELETE")]
    assert deletes == []
    assert "POST /crm/v3/objects/contacts/gdpr-delete" in hub.sandbox.endpoints_used
    assert not hub.sandbox.holds("erase.me@example.com")
    assert not hub.sandbox.restorable("erase.me@example.com")
    assert not hub.sandbox.restore("erase.me@example.com")
    assert hub.sandbox.is_blocklisted("erase.me@example.com")
    assert "erase.me@example.com" not in repr(hub.sandbox.log.entries)


@pytest.mark.parametrize("archive", ["delete", "batch_archive"], ids=["DELETE", "batch-archive"])
async def test_sandbox_archive_routes_are_restorable(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox, archive: str
) -> None:
    """DELETE and batch/archive only archive: the contact can be restored, unlike gdpr-delete."""
    contact_id = sandbox.add_person("soft@example.com", "Soft", "Delete")
    if archive == "delete":
        response = await raw.delete(f"{CONTACTS}/{contact_id}")
    else:
        response = await raw.post(
            f"{CONTACTS}/batch/archive", json={"inputs": [{"id": contact_id}]}
        )
    assert response.status_code == 204
    assert not sandbox.holds("soft@example.com")
    assert sandbox.restorable("soft@example.com")
    assert sandbox.restore("soft@example.com")
    assert sandbox.holds("soft@example.com")


async def test_erase_twice_reports_not_found_the_second_time(hub: Harness) -> None:
    """Erasure is idempotent: the second call finds nobody, sends nothing, says found=False."""
    hub.sandbox.add_person("twice@example.com", "Two", "Times")
    first = await hub.adapter.erase(Subject(email="twice@example.com"))
    sent = hub.sandbox.endpoints_used.count(f"POST {CONTACTS}/gdpr-delete")
    second = await hub.adapter.erase(Subject(email="twice@example.com"))
    assert (first.found, second.found) == (True, False)
    assert hub.sandbox.endpoints_used.count(f"POST {CONTACTS}/gdpr-delete") == sent
    assert second.vendor_status is None and "blocklist" not in second.note
    assert hub.sandbox.contact_count() == 0


async def test_erasing_someone_hubspot_never_held_sends_it_nothing(hub: Harness) -> None:
    """No contact live, archived or under the identity map's id: HubSpot holds nothing of the
    person. gdpr-delete by e-mail would blocklist the address ("if the email is not found, it
    is still added to a blocklist"), leaving personal data at a processor that had none, so
    nothing is sent and the note says so."""
    subject = Subject(email="never.there@example.com", external_id="99999")
    result = await hub.adapter.erase(subject)
    assert not result.found and result.vendor_status is None
    assert not hub.sandbox.is_blocklisted("never.there@example.com")
    assert not any("gdpr-delete" in e for e in hub.sandbox.endpoints_used)
    assert "blocklist" not in result.note and "nothing" in result.note


async def test_erasure_that_sends_no_email_claims_no_blocklist(hub: Harness) -> None:
    """The live contact under the address is another subject's (``spare``): it is left and no
    gdpr-delete by e-mail is sent, so the note (signed into the receipt) claims no blocklist;
    with nothing else held it claims no deletion either. The person's own archived contact
    under the address is deleted by id, and the note says that alone."""
    other = hub.sandbox.add_person("shared@example.com", "House", "Mate")
    subject = Subject(email="shared@example.com", spare=frozenset({other}))
    result = await hub.adapter.erase(subject)
    assert not result.found and "blocklist" not in result.note
    assert not any("gdpr-delete" in e for e in hub.sandbox.endpoints_used)
    assert not hub.sandbox.is_blocklisted("shared@example.com")
    own = archive(hub.sandbox, "moved.in@example.com")
    mate = hub.sandbox.add_person("moved.in@example.com", "House", "Mate")
    result = await hub.adapter.erase(Subject(email="moved.in@example.com", spare=frozenset({mate})))
    assert result.found and result.note == "permanently deleted by contact id"
    assert hub.sandbox.store.archived(own) is None and hub.sandbox.holds("moved.in@example.com")


async def test_erase_finds_a_contact_by_id_when_its_email_changed(hub: Harness) -> None:
    """A contact whose e-mail changed in HubSpot is erased by its id, and the old e-mail blocked."""
    contact_id = hub.sandbox.add_person("old@example.com", "Moved", "Away")
    contact = hub.sandbox.store.live(contact_id)
    assert contact is not None
    hub.sandbox.store.update(contact, {"email": "new@example.com"})
    result = await hub.adapter.erase(Subject(email="old@example.com", external_id=contact_id))
    assert result.found
    assert not hub.sandbox.holds("new@example.com")
    assert not hub.sandbox.restorable("new@example.com")
    assert hub.sandbox.is_blocklisted("old@example.com")


def merged_away(hub: Harness, external_id: str) -> str:
    """A salesperson merges the connector's contact into one of theirs (a work address,
    another phone, a note): the id of the new record HubSpot merges both into."""
    work = hub.sandbox.add_person("person1.work@example.com", "", "Werk", "0201234567")
    hub.sandbox.add_associated(work, "notes", hs_note_body="Belde over offerte")
    survivor = hub.sandbox.merge(primary_id=work, merged_id=external_id)
    assert survivor not in (work, external_id) and not hub.sandbox.holds("person1@example.com")
    return survivor


async def test_a_write_by_a_merged_away_id_updates_the_contact_it_was_merged_into(
    hub: Harness,
) -> None:
    """HubSpot answers a read by the id of a contact merged away with the record it became;
    a write by that id is not said to follow it, and an upsert by the address would make a
    second contact (HubSpot lets one be created with a merged address). A sync and a
    correction by the id the connector knows update the merged record instead, and their
    result names its id, so the identity map learns it: nobody is created."""
    (first,) = await hub.adapter.upsert([person(1, phone="0611111111")])
    assert first.external_id is not None
    survivor = merged_away(hub, first.external_id)
    known = person(1, lastname="Later")._replace(external_id=first.external_id)
    (synced,) = await hub.adapter.upsert([known])
    assert (synced.outcome, synced.external_id) == ("updated", survivor)
    fixed = known._replace(fields={"email": "person1@example.com", "firstname": "Anna"})
    (corrected,) = await hub.adapter.update([fixed])
    assert (corrected.outcome, corrected.external_id) == ("updated", survivor)
    assert hub.sandbox.contact_count() == 1
    record = hub.sandbox.record_for("person1@example.com")
    assert record is not None and record["id"] == survivor
    assert (record["properties"]["firstname"], record["properties"]["lastname"]) == (
        "Anna",
        "Later",
    )


async def test_access_and_erasure_by_a_merged_away_id_reach_the_contact_it_was_merged_into(
    hub: Harness,
) -> None:
    """An access copy and an erasure asked under the address and the id the connector knows
    find the merged record (a read by the former id answers with it) and erase it for good,
    what was associated with either contact's engagements included."""
    (first,) = await hub.adapter.upsert([person(1, phone="0611111111")])
    assert first.external_id is not None
    survivor = merged_away(hub, first.external_id)
    subject = Subject(email="person1@example.com", external_id=first.external_id)
    (copy,) = await hub.adapter.find(subject)
    assert copy["id"] == survivor
    assert copy["properties"]["hs_additional_emails"] == "person1@example.com"
    (note,) = copy["associations"]["notes"]
    assert note["properties"]["hs_note_body"] == "Belde over offerte"
    result = await hub.adapter.erase(subject)
    assert result.found
    assert hub.sandbox.contact_count() == 0
    assert hub.sandbox.store.objects.get("notes", note["id"]) is None
    assert await hub.adapter.find(subject) == []


async def test_blocklisted_email_can_come_back_through_the_api(hub: Harness) -> None:
    """As HubSpot documents, an upsert re-creates an erased e-mail; the sandbox counts it."""
    hub.sandbox.add_person("person1@example.com")
    await hub.adapter.erase(Subject(email="person1@example.com"))
    (result,) = await hub.adapter.upsert([person(1)])
    assert result.outcome == "created"
    assert hub.sandbox.store.blocklist_recreations == 1


# -- archived contacts (HubSpot's recycle bin) -------------------------------------------------


def archive(sandbox: HubSpotSandbox, email: str) -> str:
    """Seed a contact and archive it, as a HubSpot user's restorable "delete" does; its id."""
    contact_id = sandbox.add_person(email, "Archie", "Ved", "+31612345678", city="Gouda")
    contact = sandbox.store.live(contact_id)
    assert contact is not None
    sandbox.store.archive(contact)
    assert not sandbox.holds(email) and sandbox.restorable(email)
    return contact_id


@pytest.mark.parametrize(
    "known", ["email_and_id", "email_only", "id_only"], ids=["e-mail+id", "e-mail", "id"]
)
async def test_erase_deletes_an_archived_contact_for_good(hub: Harness, known: str) -> None:
    """An archived contact is found and gdpr-deleted by id: nothing is left to restore."""
    contact_id = archive(hub.sandbox, "binned@example.com")
    subject = Subject(
        email="" if known == "id_only" else "binned@example.com",
        external_id=None if known == "email_only" else contact_id,
    )
    result = await hub.adapter.erase(subject)
    assert result.found and result.vendor_status == 204 and not result.reversible
    assert not hub.sandbox.restorable("binned@example.com")
    assert not hub.sandbox.restore("binned@example.com")
    assert not hub.sandbox.holds("binned@example.com")
    assert hub.sandbox.is_blocklisted("binned@example.com")
    assert not any(e.startswith("DELETE") or "archive" in e for e in hub.sandbox.endpoints_used)
    assert await hub.adapter.find(subject) == []
    assert not (await hub.adapter.erase(subject)).found
    assert "binned@example.com" not in repr(hub.sandbox.log.entries)


async def test_erase_reaches_a_live_and_every_archived_contact_of_an_email(hub: Harness) -> None:
    """Archived, created again, archived again, created again: one erasure removes all three."""
    first = archive(hub.sandbox, "again@example.com")
    second = archive(hub.sandbox, "again@example.com")
    live = hub.sandbox.add_person("again@example.com", "Live", "Again")
    assert len({first, second, live}) == 3
    result = await hub.adapter.erase(Subject(email="again@example.com", external_id=first))
    assert result.found and result.vendor_status == 204
    assert hub.sandbox.store.contacts == {}
    assert not hub.sandbox.restorable("again@example.com")
    assert not hub.sandbox.holds("again@example.com")


async def test_find_reports_an_archived_contact_live_one_first(hub: Harness) -> None:
    """find returns an archived contact, marked so, by e-mail and by id, after a live one."""
    archived_id = archive(hub.sandbox, "binned@example.com")
    (by_email,) = await hub.adapter.find(Subject(email="binned@example.com"))
    assert (by_email["id"], by_email["archived"]) == (archived_id, True)
    assert by_email["properties"]["city"] == "Gouda"
    (by_id,) = await hub.adapter.find(Subject(email="", external_id=archived_id))
    assert by_id["id"] == archived_id
    live_id = hub.sandbox.add_person("binned@example.com", "New", "Live")
    both = await hub.adapter.find(Subject(email="binned@example.com", external_id=archived_id))
    assert [(r["id"], r["archived"]) for r in both] == [(live_id, False), (archived_id, True)]
    assert "binned@example.com" not in repr(hub.sandbox.log.entries)


async def test_upsert_leaves_an_archived_contact_in_the_recycle_bin(hub: Harness) -> None:
    """A sync write for a known but archived id creates a live contact, as before; the archived
    one is neither restored nor changed."""
    archived_id = archive(hub.sandbox, "person1@example.com")
    record = person(1)._replace(external_id=archived_id)
    (result,) = await hub.adapter.upsert([record])
    assert result.outcome == "created" and result.external_id != archived_id
    contact = hub.sandbox.store.archived(archived_id)
    assert contact is not None and contact.properties["firstname"] == "Archie"


@pytest.mark.parametrize("known", ["id", "e-mail"])
async def test_a_correction_of_an_archived_contact_says_it_was_left_archived_and_unchanged(
    hub: Harness, known: str
) -> None:
    """An archived contact is held (restorable for 90 days; ``find`` reports it), and the API
    changes none in the recycle bin. The correction's result, which the receipt shows, says
    it was left archived and unchanged (as Mailchimp's archived member's does), not that
    HubSpot holds no contact; nobody is created or restored."""
    contact_id = archive(hub.sandbox, "binned@example.com")
    held = await hub.adapter.find(Subject(email="binned@example.com", external_id=contact_id))
    assert [c["id"] for c in held] == [contact_id]
    external_id = contact_id if known == "id" else None
    fix = OutboundRecord("ref-fix", "binned@example.com", external_id, {"lastname": "Right"})
    (result,) = await hub.adapter.update([fix])
    assert result.outcome == "skipped" and "archived and unchanged" in result.note
    contact = hub.sandbox.store.archived(contact_id)
    assert contact is not None and contact.properties["lastname"] == "Ved"
    assert not hub.sandbox.holds("binned@example.com")
    (other,) = await hub.adapter.update([fix._replace(spare=frozenset({contact_id}))])
    assert other.outcome == "not_held"


# -- find and pull ----------------------------------------------------------------------------


async def test_find_returns_the_contact_or_nothing(hub: Harness) -> None:
    """find returns the live contact with the configured properties, or an empty list."""
    contact_id = hub.sandbox.add_person("found@example.com", "Fay", "Found", city="Leiden")
    (found,) = await hub.adapter.find(Subject(email="found@example.com"))
    assert found["id"] == contact_id
    assert found["properties"]["city"] == "Leiden"
    assert found["properties"]["email"] == "found@example.com"
    assert await hub.adapter.find(Subject(email="nobody@example.com")) == []
    assert await hub.adapter.find(Subject(email="nobody@example.com", external_id="99999")) == []
    by_id = await hub.adapter.find(Subject(email="nobody@example.com", external_id=contact_id))
    assert [r["id"] for r in by_id] == [contact_id]
    assert "found@example.com" not in repr(hub.sandbox.log.entries)


async def test_find_by_id_in_a_portal_of_hundreds_of_properties(clock: FakeClock) -> None:
    """A real portal defines hundreds of contact properties, and find reads them all (an
    access request shows what is held). Named in a GET's query string they passed the
    length a URL may have (414): the contact known by id only was never found."""
    names = [f"custom_property_number_{n:03d}" for n in range(400)]
    sandbox = HubSpotSandbox(clock=clock, rate_limit=None, extra_properties=names)
    harness = make_harness(sandbox, clock)
    try:
        contact_id = sandbox.add_person("renamed@example.com", "Rena", "Med")
        archived_id = archive(sandbox, "binned@example.com")
        found = await harness.adapter.find(Subject(email="", external_id=contact_id))
        binned = await harness.adapter.find(Subject(email="", external_id=archived_id))
    finally:
        await harness.client.aclose()
    assert [r["id"] for r in found] == [contact_id] and [r["id"] for r in binned] == [archived_id]
    assert set(names) <= set(found[0]["properties"])
    assert all(entry.status != 414 for entry in sandbox.log.entries)


async def test_pull_pages_to_the_end_with_a_forward_cursor(hub: Harness) -> None:
    """Pull yields pages of at most 100, cursors that only move forward, and a complete end."""
    for n in range(250):
        hub.sandbox.add_person(f"p{n}@example.com", f"P{n}")
    pages = [page async for page in hub.adapter.pull(None)]
    assert [len(p.records) for p in pages] == [100, 100, 50]
    assert [p.complete for p in pages] == [False, False, True]
    cursors = [json.loads(p.cursor or "{}") for p in pages]
    afters = [int(c["list"]) for c in cursors[:-1]]
    assert afters == sorted(afters) and len(set(afters)) == 2
    assert "list" not in cursors[-1] and cursors[-1]["since"] == max(modified(hub.sandbox))
    ids = [r["id"] for p in pages for r in p.records]
    assert len(set(ids)) == 250
    assert set(pages[0].records[0]["properties"]) == set(make_settings().properties)

    resumed = [page async for page in hub.adapter.pull(pages[0].cursor)]
    assert [r["id"] for p in resumed for r in p.records] == ids[100:]


#: A moment well before the sandbox's clock, from which tests stamp modifications.
EPOCH_MS = 1_700_000_000_000


def stamp(sandbox: HubSpotSandbox, contact_id: str, millis: int) -> None:
    """Set a contact's ``lastmodifieddate``, as HubSpot writes it, to ``millis``."""
    contact = sandbox.store.live(contact_id)
    assert contact is not None
    moment = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
    contact.properties["lastmodifieddate"] = moment.replace("+00:00", "Z")


def modified(sandbox: HubSpotSandbox) -> list[int]:
    """Every live contact's ``lastmodifieddate`` in epoch milliseconds."""
    return [
        int(datetime.fromisoformat(c.properties["lastmodifieddate"]).timestamp() * 1000 + 0.5)
        for c in sandbox.store.contacts.values()
        if not c.archived
    ]


def seed(sandbox: HubSpotSandbox, count: int, start: int, prefix: str = "p") -> list[str]:
    """``count`` contacts modified one a millisecond from ``start``."""
    ids = [sandbox.add_person(f"{prefix}{n}@example.com", f"P{n}") for n in range(count)]
    for n, contact_id in enumerate(ids):
        stamp(sandbox, contact_id, start + n)
    return ids


def calls(sandbox: HubSpotSandbox) -> list[str]:
    return [f"{e.method} {e.path}" for e in sandbox.log.entries]


async def read_all(adapter: HubSpotAdapter, cursor: str | None) -> tuple[list[str], str | None]:
    """The ids a whole pull reads, and its last cursor."""
    pages = [page async for page in adapter.pull(cursor)]
    assert pages[-1].complete
    return [str(r["id"]) for p in pages for r in p.records], pages[-1].cursor


async def test_a_pull_after_the_first_searches_for_changes_and_lists_no_contact(
    hub: Harness,
) -> None:
    """The first pull lists every contact; the next, with nothing changed, lists none and
    reads none but those at its cursor's millisecond (README, Known limits: a CRM as a
    flow's source): a portal of 50,000 contacts no longer spends 500 calls a run."""
    seed(hub.sandbox, 250, EPOCH_MS)
    first, cursor = await read_all(hub.adapter, None)
    assert len(set(first)) == 250
    hub.sandbox.log.entries.clear()
    again, cursor = await read_all(hub.adapter, cursor)
    assert calls(hub.sandbox) == [f"POST {CONTACTS}/search"]
    assert len(again) <= 1
    assert json.loads(cursor or "{}") == {"since": EPOCH_MS + 249}


async def test_a_pull_after_the_first_reads_the_contacts_changed_since(hub: Harness) -> None:
    """A contact changed (and one created) after a pull is read by the next, the others not."""
    ids = seed(hub.sandbox, 120, EPOCH_MS)
    _, cursor = await read_all(hub.adapter, None)
    stamp(hub.sandbox, ids[5], EPOCH_MS + 5_000)
    (new,) = seed(hub.sandbox, 1, EPOCH_MS + 6_000, prefix="new")
    hub.sandbox.log.entries.clear()
    read, cursor = await read_all(hub.adapter, cursor)
    assert set(read) - {ids[-1]} == {ids[5], new}
    assert all(call == f"POST {CONTACTS}/search" for call in calls(hub.sandbox))
    assert json.loads(cursor or "{}") == {"since": EPOCH_MS + 6_000}


async def test_more_changed_contacts_than_one_search_answers_are_all_read(clock: FakeClock) -> None:
    """HubSpot answers one search with 10,000 contacts at most (here 150): 420 changed
    contacts are all read, each once, and no search pages past the cap (a 400)."""
    sandbox = HubSpotSandbox(clock=clock, search_cap=150)
    harness = make_harness(sandbox, clock)
    async with harness.client:
        ids = seed(sandbox, 10, EPOCH_MS)
        _, cursor = await read_all(harness.adapter, None)
        changed = seed(sandbox, 420, EPOCH_MS + 10_000, prefix="changed")
        read, _ = await read_all(harness.adapter, cursor)
    # The contact at the cursor's millisecond is read again (a change in that same
    # millisecond after the read would otherwise be skipped).
    assert sorted(read) == sorted([ids[-1], *changed])
    assert all(entry.status != 400 for entry in sandbox.log.entries)


async def test_contacts_sharing_a_millisecond_at_a_page_boundary_are_all_read(
    hub: Harness,
) -> None:
    """HubSpot writes a batch of 100 within one millisecond: 250 contacts changed in one
    millisecond (more than a page holds), and those around it, are all read; none is
    skipped at a page's edge, and none of the millisecond's is read twice."""
    _, cursor = await read_all(hub.adapter, None)
    before = seed(hub.sandbox, 30, EPOCH_MS, prefix="before")
    same = [hub.sandbox.add_person(f"same{n}@example.com", "Same") for n in range(250)]
    for contact_id in same:
        stamp(hub.sandbox, contact_id, EPOCH_MS + 1_000)
    after = seed(hub.sandbox, 30, EPOCH_MS + 2_000, prefix="after")
    read, cursor = await read_all(hub.adapter, json.dumps({"since": EPOCH_MS}))
    assert set(read) == set(before + same + after)
    assert sorted(r for r in read if r in same) == sorted(same)
    assert json.loads(cursor or "{}") == {"since": EPOCH_MS + 2_029}


async def test_a_pull_cut_short_resumes_from_its_last_queued_page_losing_nothing(
    hub: Harness,
) -> None:
    """A run that stops after its second page (a crash) and one that resumes from that
    page's cursor read every changed contact between them, those changed meanwhile too."""
    _, cursor = await read_all(hub.adapter, json.dumps({"since": EPOCH_MS}))
    changed = seed(hub.sandbox, 350, EPOCH_MS + 1_000)
    for contact_id in changed[100:200]:  # written in one batch: one millisecond
        stamp(hub.sandbox, contact_id, EPOCH_MS + 1_150)
    first: list[str] = []
    resume = cursor
    async for page in hub.adapter.pull(cursor):
        first += [str(r["id"]) for r in page.records]
        resume = page.cursor
        if len(first) >= 200:
            break  # the crash: what came after this page was never queued
    stamp(hub.sandbox, changed[0], EPOCH_MS + 9_000)  # changed while nothing ran
    rest, _ = await read_all(hub.adapter, resume)
    assert set(first) | set(rest) == set(changed)
    assert changed[0] in rest


async def test_a_change_search_shows_late_is_read_by_the_next_pull(hub: Harness) -> None:
    """HubSpot shows a change in search seconds after it, not always in order: a change made
    before another but shown after the pull read the other is read by the next pull, not
    skipped for good because the cursor had passed its time."""
    _, cursor = await read_all(hub.adapter, None)
    late = hub.sandbox.add_person("late@example.com", "Late")
    shown = hub.sandbox.add_person("shown@example.com", "Shown")
    now_ms = max(modified(hub.sandbox))
    stamp(hub.sandbox, late, now_ms - 2)
    stamp(hub.sandbox, shown, now_ms)
    hub.sandbox.show_in_search_late(late)
    read, cursor = await read_all(hub.adapter, json.dumps({"since": now_ms - 10_000}))
    assert read == [shown]
    hub.sandbox.show_in_search()
    read, _ = await read_all(hub.adapter, cursor)
    assert late in read


async def test_a_pull_s_cursor_keeps_no_further_behind_than_the_search_lag(hub: Harness) -> None:
    """Changes older than the search lag when the pull began are not read again: the cursor
    moves to the latest of them, and never back before where the pull began."""
    ids = seed(hub.sandbox, 3, EPOCH_MS)
    read, cursor = await read_all(hub.adapter, json.dumps({"since": EPOCH_MS}))
    assert read == ids
    assert json.loads(cursor or "{}") == {"since": EPOCH_MS + 2}
    recent = hub.sandbox.add_person("recent@example.com", "Recent")
    (now_ms,) = [m for m in modified(hub.sandbox) if m > EPOCH_MS + 2]
    read, cursor = await read_all(hub.adapter, cursor)
    assert read == [ids[-1], recent]
    assert EPOCH_MS + 2 <= json.loads(cursor or "{}")["since"] < now_ms


async def test_pull_reads_no_archived_contact_and_no_contact_merged_away(hub: Harness) -> None:
    """A pull lists live contacts alone: a deletion or a merge in HubSpot is not told to a
    flow's destinations (README, Known limits: a CRM as a flow's source)."""
    kept = hub.sandbox.add_person("kept@example.com", "Kept")
    gone = hub.sandbox.add_person("gone@example.com", "Gone")
    binned = hub.sandbox.add_person("binned@example.com", "Binned")
    hub.sandbox.merge(kept, gone)
    contact = hub.sandbox.store.live(binned)
    assert contact is not None
    hub.sandbox.store.archive(contact)
    pages = [page async for page in hub.adapter.pull(None)]
    assert [r["properties"]["email"] for p in pages for r in p.records] == ["kept@example.com"]


async def test_pull_of_an_empty_portal_is_one_complete_page(hub: Harness) -> None:
    """An empty portal yields one empty, complete page."""
    pages = [page async for page in hub.adapter.pull(None)]
    assert [(len(p.records), p.cursor, p.complete) for p in pages] == [(0, None, True)]


async def test_pull_does_not_read_a_200_html_page_as_the_end_of_the_contacts(
    sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """The second page answered 200 with a front end's HTML page: no ``paging`` in it, but
    not the last page either. The pull fails retryable; it never ends "complete" with 100
    of 150 contacts read (and the cursor starting over, the rest hidden for good)."""
    for n in range(150):
        sandbox.add_person(f"p{n}@example.com", f"P{n}")
    lists = 0

    def second_list_is_a_page(scope: dict[str, Any]) -> Decision:
        nonlocal lists
        if (scope["method"], scope["path"]) == ("GET", CONTACTS):
            lists += 1
            return "page" if lists == 2 else None
        return None

    harness = make_harness(sandbox, clock, front=lambda app: FrontPage(app, second_list_is_a_page))
    pages = []
    async with harness.client:
        with pytest.raises(RetryableError):
            async for page in harness.adapter.pull(None):
                pages.append(page)
    assert [(len(p.records), p.complete) for p in pages] == [(100, False)]


async def test_pull_refuses_an_after_token_it_has_seen() -> None:
    """A server that hands back the same after token is stopped as a paging loop."""

    def always_same(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [], "paging": {"next": {"after": "7"}}})

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(always_same),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    adapter = HubSpotAdapter(client, make_settings())
    pages = []
    async with client:
        with pytest.raises(FatalRemoteError) as caught:
            async for page in adapter.pull(None):
                pages.append(page)
    assert len(pages) == 1
    assert caught.value.detail == "PAGING_LOOP"


async def test_a_multi_status_answer_is_read_per_record_without_echoing_input() -> None:
    """HubSpot's 207, as it may come: a result matched by e-mail where it carries no trace
    id, an error whose "category" is really a message quoting the input (said as
    BATCH_ERROR, never quoted), a 5xx error (retried), an input neither confirmed nor refused
    (retried); a record without an e-mail never leaves."""
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        body = {
            "status": "COMPLETE",
            "results": [
                {"id": "101", "new": True, "objectWriteTraceId": "ref-1", "properties": {}},
                {"id": "102", "new": False, "properties": {"email": "PERSON2@example.com"}},
            ],
            "numErrors": 2,
            "errors": [
                {
                    "status": "error",
                    "category": f"Property values were not valid: {CANARY_EMAIL}",
                    "context": {"objectWriteTraceId": ["ref-3"]},
                },
                {
                    "status": "503",
                    "category": "SERVICE_UNAVAILABLE",
                    "context": {"objectWriteTraceId": "ref-4"},
                },
            ],
        }
        return httpx.Response(207, json=body)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    adapter = HubSpotAdapter(client, make_settings())
    records = [person(n) for n in range(1, 6)]
    records.append(OutboundRecord(ref="ref-6", email="", external_id=None, fields={}))
    async with client:
        results = await adapter.upsert(records)
    assert [(r.ref, r.outcome, r.external_id, r.reason, r.retryable) for r in results] == [
        ("ref-1", "created", "101", "", False),
        ("ref-2", "updated", "102", "", False),
        ("ref-3", "failed", None, "BATCH_ERROR", False),
        ("ref-4", "failed", None, "SERVICE_UNAVAILABLE", True),
        ("ref-5", "failed", None, "NO_RESULT", True),
        ("ref-6", "failed", None, "MISSING_EMAIL", False),
    ]
    assert len(sent) == 1 and len(sent[0]["inputs"]) == 5


async def test_a_contact_a_207_names_unfound_by_its_id_alone_is_written_by_e_mail() -> None:
    """HubSpot names the contacts a ``batch/update`` found no live one for by the ids they
    were sent with (``context.ids``, OBJECT_NOT_FOUND), where its 207 may carry no trace id.
    Such a contact (deleted or archived in HubSpot meanwhile) is written by e-mail like any
    the connector has no id for, not retried by the same id for good as an input "neither
    confirmed nor refused"."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path.rsplit("/", 1)[-1])
        sent = json.loads(request.content)
        body: dict[str, Any] = {"status": "COMPLETE", "results": []}
        if request.url.path.endswith("/batch/update"):
            body["results"] = [{"id": "7", "objectWriteTraceId": "ref-2", "properties": {}}]
            body["numErrors"] = 1
            body["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects, they may be deleted or not "
                    "exist. Check that ids are valid.",
                    "context": {"ids": ["4242"]},
                }
            ]
            return httpx.Response(207, json=body)
        if request.url.path.endswith("/batch/upsert"):
            (item,) = sent["inputs"]
            assert item["id"] == "person1@example.com"
            result = {"id": "8", "new": True, "objectWriteTraceId": item["objectWriteTraceId"]}
            body["results"] = [{**result, "properties": {}}]
            return httpx.Response(200, json=body)
        body["numErrors"] = 1  # batch/read by id: nothing live under 4242, no merged record
        body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                           "context": {"ids": ["4242"]}}]  # fmt: skip
        return httpx.Response(207, json=body)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    records = [person(1)._replace(external_id="4242"), person(2)._replace(external_id="7")]
    async with client:
        results = await HubSpotAdapter(client, make_settings()).upsert(records)
    assert [(r.outcome, r.external_id, r.reason) for r in results] == [
        ("created", "8", ""),
        ("updated", "7", ""),
    ]
    assert calls == ["update", "read", "upsert"]


async def test_an_update_a_merged_away_id_left_unanswered_reaches_the_merged_record() -> None:
    """HubSpot may answer a ``batch/update`` by the id of a contact merged away with a 200 that
    leaves it out of its results, no error said. A read by that id answers the record the
    merge made: the record is written there. One whose id still reads as itself stays
    unanswered (retried), and neither is written by e-mail."""
    updates: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        body: dict[str, Any] = {"status": "COMPLETE", "results": []}
        if request.url.path.endswith("/batch/update"):
            updates.append([item["id"] for item in inputs])
            body["results"] = [
                {"id": item["id"], "objectWriteTraceId": item["objectWriteTraceId"]}
                for item in inputs
                if item["id"] == "9"
            ]
        elif request.url.path.endswith("/batch/read"):
            (item,) = inputs
            now = "9" if item["id"] == "4242" else item["id"]
            body["results"] = [{"id": now, "archived": False, "properties": {}}]
        else:
            raise AssertionError(f"unexpected {request.url.path}")
        return httpx.Response(200, json=body)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    records = [person(1)._replace(external_id="4242"), person(2)._replace(external_id="77")]
    async with client:
        results = await HubSpotAdapter(client, make_settings()).upsert(records)
    assert [(r.outcome, r.external_id, r.reason, r.retryable) for r in results] == [
        ("updated", "9", "", False),
        ("failed", None, "NO_RESULT", True),
    ]
    assert updates == [["4242", "77"], ["9"]]


async def test_sandbox_answers_an_update_naming_a_missing_contact_with_a_207_naming_its_id(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox
) -> None:
    """A ``batch/update`` naming an id HubSpot holds no live contact under writes the others
    and names it by that id in a 207 (OBJECT_NOT_FOUND, ``context.ids``), trace ids or not:
    a missing record does not refuse the whole batch."""
    held = sandbox.add_person("held@example.com", "Held")
    inputs = [
        {"id": held, "properties": {"lastname": "Kept"}},
        {"id": "999999", "properties": {"lastname": "Nobody"}},
    ]
    response = await raw.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    (error,) = response.json()["errors"]
    assert (error["category"], error["context"]) == ("OBJECT_NOT_FOUND", {"ids": ["999999"]})
    record = sandbox.record_for("held@example.com")
    assert record is not None and record["properties"]["lastname"] == "Kept"
    traced = [{**item, "objectWriteTraceId": f"t{n}"} for n, item in enumerate(inputs)]
    response = await raw.post(f"{CONTACTS}/batch/update", json={"inputs": traced})
    (error,) = response.json()["errors"]
    assert error["context"] == {"objectWriteTraceId": ["t1"], "ids": ["999999"]}


async def test_a_207_category_that_is_no_code_is_not_kept_as_a_record_s_reason() -> None:
    """Per-record reasons go to dead letters and ``status``. A 207 error's "category" is kept
    by the client's one rule for categories (a machine code with an underscore and no digits,
    a declared title or a reason phrase): one that echoes a phone number or a lone name is
    said as ``BATCH_ERROR``; a code and a reason phrase (``LOCKED``, retried) stay."""
    categories = ["0687654321", "Zwanettecanary", "OBJECT_NOT_FOUND", "LOCKED"]

    def answer(request: httpx.Request) -> httpx.Response:
        errors = [
            {"status": "error", "category": category,
             "context": {"objectWriteTraceId": [f"ref-{n}"]}}
            for n, category in enumerate(categories, start=1)
        ]  # fmt: skip
        body = {"status": "COMPLETE", "results": [], "numErrors": 4, "errors": errors}
        return httpx.Response(207, json=body)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    async with client:
        results = await HubSpotAdapter(client, make_settings()).upsert(
            [person(n) for n in range(1, 5)]
        )
    assert [(r.outcome, r.reason, r.retryable) for r in results] == [
        ("failed", "BATCH_ERROR", False),
        ("failed", "BATCH_ERROR", False),
        ("failed", "OBJECT_NOT_FOUND", False),
        ("failed", "LOCKED", True),
    ]


async def test_a_refused_record_s_reason_names_hubspot_s_codes_and_no_value() -> None:
    """A VALIDATION_ERROR said alone left the operator unable to tell a property the portal
    lacks (every record refused: fix the mapping or the portal) from one bad value. The
    reason adds HubSpot's codes, from the error's details and from the problems its message
    lists, and nothing else of the message, which quotes what was sent."""
    problems = [
        {"isValid": False, "message": f"Email address {CANARY_EMAIL} is invalid",
         "error": "INVALID_EMAIL", "name": "email"},
        {"isValid": False, "message": "0687654321", "error": CANARY_EMAIL, "name": "phone"},
    ]  # fmt: skip
    errors = [
        {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": f"Property values were not valid: {json.dumps(problems)} (2 problems)",
            "errors": [{"message": "0687654321 is no number", "code": "INVALID_INTEGER"}],
            "context": {"objectWriteTraceId": ["ref-1"]},
        },
        {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": f"Property values were not valid: [{CANARY_EMAIL}",
            "context": {"objectWriteTraceId": ["ref-2"]},
        },
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"status": "COMPLETE", "results": [], "numErrors": 2, "errors": errors}
        return httpx.Response(207, json=body)

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    async with client:
        results = await HubSpotAdapter(client, make_settings()).upsert([person(1), person(2)])
    assert [(r.outcome, r.reason, r.retryable) for r in results] == [
        ("failed", "VALIDATION_ERROR: INVALID_EMAIL, INVALID_INTEGER", False),
        ("failed", "VALIDATION_ERROR", False),
    ]


# -- search (sandbox) -------------------------------------------------------------------------


async def test_sandbox_search_filters_by_email_and_enforces_filter_limits(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """Search finds by email EQ (case-insensitive) and refuses more than 5 filter groups."""
    sandbox.add_person("seek@example.com", "Seek")
    sandbox.add_person("other@example.com", "Other")
    flt = {"propertyName": "email", "operator": "EQ", "value": "SEEK@example.com"}
    found = await raw.post(f"{CONTACTS}/search", json={"filterGroups": [{"filters": [flt]}]})
    assert found.status_code == 200
    assert [r["properties"]["firstname"] for r in found.json()["results"]] == ["Seek"]
    clock.advance(1)  # a fresh second for the search window
    too_many = await raw.post(f"{CONTACTS}/search", json={"filterGroups": [{"filters": [flt]}] * 6})
    assert too_many.status_code == 400
    assert too_many.json()["category"] == "VALIDATION_ERROR"


async def test_sandbox_search_refuses_a_query_over_3000_characters(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """A search's ``query`` is limited to 3000 characters [spec]: one that long is searched,
    one longer is a 400, not a search that finds nothing."""
    sandbox.add_person("seek@example.com", "Seek")
    at_limit = await raw.post(f"{CONTACTS}/search", json={"query": "s" * 3000})
    assert at_limit.status_code == 200 and at_limit.json()["results"] == []
    clock.advance(1)  # a fresh second for the search window
    over = await raw.post(f"{CONTACTS}/search", json={"query": "s" * 3001})
    assert over.status_code == 400
    assert over.json()["category"] == "VALIDATION_ERROR"


async def test_sandbox_reads_archived_contacts_only_with_the_query_flag(
    raw: httpx.AsyncClient, sandbox: HubSpotSandbox
) -> None:
    """As the spec has it, ``archived=true`` (a query flag, also on batch/read) reads archived
    contacts only; without it they are not found; search never shows them."""
    contact_id = archive(sandbox, "flag@example.com")
    assert (await raw.get(f"{CONTACTS}/{contact_id}")).status_code == 404
    got = await raw.get(f"{CONTACTS}/{contact_id}", params={"archived": "true"})
    assert got.status_code == 200 and got.json()["archived"] is True
    body = {"idProperty": "email", "inputs": [{"id": "flag@example.com"}]}
    in_body = await raw.post(f"{CONTACTS}/batch/read", json={**body, "archived": True})
    assert in_body.status_code == 207 and in_body.json()["results"] == []
    flagged = await raw.post(f"{CONTACTS}/batch/read", params={"archived": "true"}, json=body)
    assert [r["id"] for r in flagged.json()["results"]] == [contact_id]
    flt = {"propertyName": "email", "operator": "EQ", "value": "flag@example.com"}
    found = await raw.post(f"{CONTACTS}/search", json={"filterGroups": [{"filters": [flt]}]})
    assert found.json()["total"] == 0


# -- check --online: the mapping against the portal's contact properties ----------------------

SCHEMA_PATH = "/crm/v3/properties/contacts"


def hubspot_mapping(tmp_path: Path, top: str = "", fields: str = "") -> SystemMapping:
    """mappings/hubspot.toml with ``top`` keys before its own and ``fields`` tables after."""
    path = tmp_path / "hubspot.toml"
    path.write_text(top + (REPO_MAPPINGS / "hubspot.toml").read_text() + fields)
    return load_mapping(path)


async def test_check_mapping_names_each_property_the_portal_lacks_or_lets_no_one_write(
    hub: Harness, tmp_path: Path
) -> None:
    """A mapping naming a property the portal does not define (a typo), or writing one HubSpot
    sets itself, passed `check --online`; the first sync then dead-lettered every customer
    sent. The check reads the portal's property list and fails naming each such property
    with the mapping key naming it; read only (direction "in"), HubSpot's own is fine."""
    await hub.adapter.check_mapping(load_mapping(REPO_MAPPINGS / "hubspot.toml"))
    assert hub.sandbox.log.count("GET", SCHEMA_PATH) == 1
    wrong = hubspot_mapping(
        tmp_path,
        fields=(
            '\n[fields.date_of_birth]\npath = "geboortedatum"\npurpose = "Verjaardagskaart"\n'
            '\n[fields.customer_since]\npath = "createdate"\npurpose = "Klanthistorie"\n'
            '\n[fields.job_title]\npath = "jobtitle"\npurpose = "Zakelijke klanten"\n'
        ),
    )
    with pytest.raises(ConfigError) as caught:
        await hub.adapter.check_mapping(wrong)
    assert caught.value.file == str(tmp_path / "hubspot.toml")
    assert caught.value.problem == (
        "HubSpot defines no contact property geboortedatum (fields.date_of_birth.path): "
        "create it in HubSpot or correct the mapping; HubSpot lets no integration write "
        'createdate (fields.customer_since.path): read it only (direction = "in") or take it '
        "out of the mapping (HubSpot refuses each write naming one: a dead letter per record)"
    )
    (tmp_path / "hubspot.toml").unlink()
    read_only = hubspot_mapping(
        tmp_path,
        fields='\n[fields.customer_since]\npath = "createdate"\npurpose = "Klanthistorie"\n'
        'direction = "in"\n',
    )
    await hub.adapter.check_mapping(read_only)
    assert hub.adapter.online_warnings() == []
    # Read only and missing: no write is refused, the pulls find nothing there.
    (tmp_path / "hubspot.toml").unlink()
    unread = hubspot_mapping(
        tmp_path,
        fields='\n[fields.customer_since]\npath = "klant_sinds"\npurpose = "Klanthistorie"\n'
        'direction = "in"\n',
    )
    with pytest.raises(ConfigError) as caught:
        await hub.adapter.check_mapping(unread)
    assert caught.value.problem == (
        "HubSpot defines no contact property klant_sinds (fields.customer_since.path): "
        "create it in HubSpot or correct the mapping"
    )


async def test_check_mapping_warns_of_each_configured_property_the_portal_lacks(
    hub: Harness, tmp_path: Path
) -> None:
    """The system's ``properties`` (what pulls and webhooks' syncs may read, and what an
    access copy holds where the schema may not be read) are held against the portal's too:
    one it does not define (a typo) is read nowhere, which HubSpot answers without a word,
    so ``check --online`` warns naming it and the key. One the mapping names is the
    mapping's error already, and is not said twice; HubSpot's own (``hs_object_id``) pass."""
    configured = ["email", "firstname", "zipcode", "hs_object_id", "klantnummer", "geboortedatum"]
    adapter = HubSpotAdapter(hub.client, make_settings(properties=configured))
    await adapter.check_mapping(load_mapping(REPO_MAPPINGS / "hubspot.toml"))
    assert adapter.online_warnings() == [
        "crm: systems.crm.properties names zipcode, klantnummer, geboortedatum, which HubSpot "
        "defines no contact property for: nothing is read there; create them in HubSpot or "
        "correct the setting"
    ]
    birthday = hubspot_mapping(
        tmp_path,
        fields='\n[fields.date_of_birth]\npath = "geboortedatum"\npurpose = "Verjaardagskaart"\n'
        'direction = "in"\n',
    )
    with pytest.raises(ConfigError, match="geboortedatum"):
        await adapter.check_mapping(birthday)
    assert adapter.online_warnings() == [
        "crm: systems.crm.properties names zipcode, klantnummer, which HubSpot defines no "
        "contact property for: nothing is read there; create them in HubSpot or correct the "
        "setting"
    ]
    await hub.adapter.check_mapping(load_mapping(REPO_MAPPINGS / "hubspot.toml"))
    assert hub.adapter.online_warnings() == []


async def test_check_mapping_refused_the_property_list_names_the_scope_to_grant(
    hub: Harness,
) -> None:
    """Reading the property definitions takes the schema scope, which a private app set up
    for contacts alone lacks: the check fails saying which scope to grant, not with a bare
    403 (nor as if every mapped property were missing)."""
    hub.sandbox.scopes = {READ_SCOPE, "crm.objects.contacts.write"}
    with pytest.raises(FatalRemoteError) as caught:
        await hub.adapter.check_mapping(load_mapping(REPO_MAPPINGS / "hubspot.toml"))
    assert caught.value.status == 403
    assert str(caught.value) == (
        "crm: GET /crm/v3/properties/contacts -> 403 "
        "(MISSING_SCOPES: grant the private app crm.schemas.contacts.read)"
    )


async def test_check_mapping_warns_of_a_value_it_sets_that_an_enumeration_does_not_offer(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A value the mapping sets itself (``withdrawn``, ``consent_renewed``) goes to an
    enumeration property as one of its options' internal values, or HubSpot refuses the
    write. The portal lists each enumeration's options; one not among them is a warning
    naming the mapping key and the property, not the value. A multiple checkbox takes
    several options, separated by semicolons."""
    sandbox = HubSpotSandbox(
        clock=clock, rate_limit=None, enumerations={"nieuwsbrief": ("aangemeld", "afgemeld")}
    )
    harness = make_harness(sandbox, clock)
    mapping = hubspot_mapping(
        tmp_path,
        top=(
            'requires_consent = "marketing"\n'
            'withdrawn = { nieuwsbrief = "uitgeschreven", lifecyclestage = "other" }\n'
            'consent_renewed = { nieuwsbrief = "aangemeld", hs_legal_basis = '
            '"Freely given consent from contact;Not applicable" }\n'
        ),
    )
    try:
        listed = await harness.client.request("GET", SCHEMA_PATH)
        await harness.adapter.check_mapping(mapping)
    finally:
        await harness.client.aclose()
    definitions = {item["name"]: item for item in listed.json()["results"]}
    assert definitions["nieuwsbrief"]["type"] == "enumeration"
    assert [o["value"] for o in definitions["nieuwsbrief"]["options"]] == ["aangemeld", "afgemeld"]
    assert definitions["firstname"]["options"] == []
    assert harness.adapter.online_warnings() == [
        "crm: withdrawn.nieuwsbrief sets the property nieuwsbrief to a value that is not one "
        "of its options in HubSpot, which refuses that write: use an option's internal value, "
        "or add the option in HubSpot"
    ]


# -- webhooks ---------------------------------------------------------------------------------


def hook_request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(method="POST", url=HOOK_URL, headers=headers, body=body)


NOW_MS = 1_700_000_000_000


def test_webhook_v3_signature_is_accepted(hub: Harness) -> None:
    """A genuine v3-signed delivery verifies within the five-minute window."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1234, NOW_MS)
    assert hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000 + 60)
    assert headers["x-hubspot-signature-v3"] == sign_v3(SECRET, "POST", HOOK_URL, body, NOW_MS)


def test_webhook_v3_signature_matches_a_value_computed_apart_from_this_code(
    hub: Harness,
) -> None:
    """The sandbox signs with the adapter's own definition, so the test above would pass
    with any scheme both shared. This value was computed apart from it, as HubSpot's
    "Validating requests" (v3) does: ``base64(HMAC-SHA256(method + uri + body +
    timestamp, client secret))`` (``openssl dgst -sha256 -hmac hubspot-client-secret
    -binary | base64`` of that text)."""
    uri = "https://k.example.nl/webhooks/crm"
    body = b'[{"eventId":1,"subscriptionType":"contact.creation","objectId":7}]'
    expected = "apDDhuRxMDCfY1awWiMBiPX2mh1OYWjpZ1kxi3a3Gh4="
    assert sign_v3("hubspot-client-secret", "POST", uri, body, NOW_MS) == expected
    headers = {
        "content-type": "application/json",
        "x-hubspot-signature-v3": expected,
        "x-hubspot-request-timestamp": str(NOW_MS),
    }
    request = WebhookRequest("POST", uri, headers, body)
    assert hub.adapter.verify_webhook(request, "hubspot-client-secret", NOW_MS / 1000 + 60)


def test_webhook_with_tampered_body_is_rejected(hub: Harness) -> None:
    """Changing one byte of the body breaks the signature."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1234, NOW_MS)
    tampered = body.replace(b"1234", b"1235")
    assert not hub.adapter.verify_webhook(hook_request(tampered, headers), SECRET, NOW_MS / 1000)


def test_webhook_with_wrong_secret_is_rejected(hub: Harness) -> None:
    """A delivery signed with another secret does not verify."""
    body, headers = hub.sandbox.signed_privacy_deletion("other-secret", HOOK_URL, 1, NOW_MS)
    assert not hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000)


def test_webhook_signed_for_another_url_is_rejected(hub: Harness) -> None:
    """The URL is part of the signed text, so a delivery replayed to another URL fails."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL + "x", 1, NOW_MS)
    assert not hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000)


@pytest.mark.parametrize("offset_s", [301, -301], ids=["stale", "future"])
def test_webhook_outside_five_minutes_is_rejected(hub: Harness, offset_s: int) -> None:
    """A correctly signed delivery older (or newer) than five minutes is refused."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1, NOW_MS)
    assert hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000 + 299)
    assert not hub.adapter.verify_webhook(
        hook_request(body, headers), SECRET, NOW_MS / 1000 + offset_s
    )


@pytest.mark.parametrize("offset_s", [300, -300], ids=["oldest", "newest"])
def test_webhook_exactly_five_minutes_off_is_accepted(hub: Harness, offset_s: int) -> None:
    """The window is the SDK's: a timestamp five minutes off to the millisecond is in it."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1, NOW_MS)
    assert hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000 + offset_s)


@pytest.mark.parametrize("timestamp", ["", "17e11", "-1", " 1700000000000", "9" * 5000])
def test_webhook_with_a_timestamp_that_is_no_count_of_milliseconds_is_rejected(
    hub: Harness, timestamp: str
) -> None:
    """A timestamp that is not digits alone, or too long for any time, is refused without
    raising, even when the signature covers it: nobody's delivery is answered with a 500."""
    body, _ = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1, NOW_MS)
    headers = {
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature-v3": sign_v3(SECRET, "POST", HOOK_URL, body, timestamp),
    }
    assert not hub.adapter.verify_webhook(hook_request(body, headers), SECRET, NOW_MS / 1000)


def test_webhook_signature_covers_the_method(hub: Harness) -> None:
    """A delivery signed for a POST does not verify as another method's request."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1, NOW_MS)
    request = WebhookRequest(method="PUT", url=HOOK_URL, headers=headers, body=body)
    assert not hub.adapter.verify_webhook(request, SECRET, NOW_MS / 1000)


def test_v3_signature_decodes_the_uri_as_hubspot_specifies(hub: Harness) -> None:
    """HubSpot decodes ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`` in the URI before
    signing: a webhook URL whose query holds ``%40`` verifies (it never did, every genuine
    delivery a 401). One signed over the URI as received (the official SDK's reading)
    verifies still; another URI does not."""
    received = f"{HOOK_URL}?owner=privacy%40example.nl&tag=a%2Cb%2c%20c"
    decoded = f"{HOOK_URL}?owner=privacy@example.nl&tag=a,b,%20c"
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, received, 1, NOW_MS)
    assert headers["x-hubspot-signature-v3"] == sign_v3(SECRET, "POST", decoded, body, NOW_MS)
    signed_raw = {
        **headers,
        "x-hubspot-signature-v3": sign_v3(SECRET, "POST", received, body, NOW_MS),
    }

    def verifies(url: str, with_headers: dict[str, str]) -> bool:
        request = WebhookRequest(method="POST", url=url, headers=with_headers, body=body)
        return hub.adapter.verify_webhook(request, SECRET, NOW_MS / 1000)

    assert verifies(received, headers)
    assert verifies(received, signed_raw)
    assert not verifies(f"{HOOK_URL}?owner=other%40example.nl&tag=a%2Cb%2c%20c", headers)


def test_webhook_without_signature_headers_is_rejected(hub: Harness) -> None:
    """A delivery missing the signature or timestamp header never verifies."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 1, NOW_MS)
    for missing in ("x-hubspot-signature-v3", "x-hubspot-request-timestamp"):
        partial = {k: v for k, v in headers.items() if k != missing}
        assert not hub.adapter.verify_webhook(hook_request(body, partial), SECRET, NOW_MS / 1000)


def test_parse_privacy_deletion_and_contact_events(hub: Harness) -> None:
    """privacyDeletion becomes an erase event; creation/change/deletion map; others are dropped."""
    body, headers = hub.sandbox.signed_privacy_deletion(SECRET, HOOK_URL, 4321, NOW_MS)
    (event,) = hub.adapter.parse_webhook(hook_request(body, headers))
    assert (event.kind, event.external_id) == ("erase", "4321")
    # Kept beyond the erasure it asks for: no contact id in it readable.
    assert event.delivery_id.startswith("event:") and "4321" not in event.delivery_id

    mixed = [
        {"eventId": 1, "subscriptionType": "contact.creation", "objectId": 11},
        {"eventId": 2, "subscriptionType": "contact.propertyChange", "objectId": 12},
        {"eventId": 3, "subscriptionType": "contact.deletion", "objectId": 13},
        {"eventId": 4, "subscriptionType": "company.creation", "objectId": 14},
    ]
    events = hub.adapter.parse_webhook(hook_request(json.dumps(mixed).encode(), {}))
    assert [(e.kind, e.external_id) for e in events] == [
        ("changed", "11"),
        ("changed", "12"),
        ("deleted", "13"),
    ]
    assert len({e.delivery_id for e in events}) == 3
    assert hub.adapter.parse_webhook(hook_request(b"not json", {})) == []


def test_events_sharing_an_event_id_are_told_apart_and_a_retry_is_not(hub: Harness) -> None:
    """HubSpot's ``eventId`` "is not guaranteed to be unique": two privacy deletions of two
    contacts sharing one must both be taken (the second was dropped as a replay, an
    erasure request lost after HubSpot had its 200). A retry of an event is the same event
    but for its ``attemptNumber``, and is still known as one."""

    def event(object_id: int, subscription: int, occurred: int, attempt: int = 0) -> dict:
        return {
            "eventId": 7001,
            "subscriptionId": subscription,
            "portalId": 62515,
            "occurredAt": occurred,
            "subscriptionType": "contact.privacyDeletion",
            "attemptNumber": attempt,
            "objectId": object_id,
        }

    deliveries = [
        [event(101, 11, NOW_MS), event(202, 12, NOW_MS + 5)],
        [event(101, 11, NOW_MS, attempt=1)],
    ]
    first, second = (
        hub.adapter.parse_webhook(hook_request(json.dumps(d).encode(), {})) for d in deliveries
    )
    assert len({e.delivery_id for e in first}) == 2
    assert second[0].delivery_id == first[0].delivery_id


async def test_erase_by_id_alone_sends_no_empty_email(hub: Harness) -> None:
    """A subject known only by its HubSpot id is erased by id; no e-mail call is attempted."""
    contact_id = hub.sandbox.add_person("only.id@example.com", "Id", "Only")
    result = await hub.adapter.erase(Subject(email="", external_id=contact_id))
    assert result.found and result.vendor_status == 204
    assert not hub.sandbox.holds("only.id@example.com")


async def test_find_returns_every_property_the_portal_holds(hub: Harness) -> None:
    """An access request sees properties no mapping names (set in HubSpot by hand), too."""
    hub.sandbox.add_person("full.view@example.com", "Full", "View", jobtitle="Inkoper")
    (contact,) = await hub.adapter.find(Subject(email="full.view@example.com"))
    assert contact["properties"]["jobtitle"] == "Inkoper"
    assert contact["properties"]["firstname"] == "Full"
    # The schema is read once per adapter, not once per lookup.
    await hub.adapter.find(Subject(email="full.view@example.com"))
    assert hub.sandbox.log.count("GET", "/crm/v3/properties/contacts") == 1


async def test_sandbox_lists_hubspots_own_contact_properties_and_the_copy_holds_them(
    hub: Harness,
) -> None:
    """HubSpot's property list holds the properties it sets itself (``createdate``,
    ``lastmodifieddate``, ``hs_object_id``), read-only (``modificationMetadata.readOnlyValue``
    true): an access copy made against the sandbox holds when the person was first recorded,
    as one made against HubSpot does. A write naming one is still refused."""
    response = await hub.client.request("GET", "/crm/v3/properties/contacts")
    listed = {item["name"]: item for item in response.json()["results"]}
    for name in ("createdate", "lastmodifieddate", "hs_object_id"):
        assert listed[name]["modificationMetadata"]["readOnlyValue"] is True, name
    assert listed["firstname"]["modificationMetadata"]["readOnlyValue"] is False
    hub.sandbox.add_person("dated@example.com", "Dated", "Person")
    (contact,) = await hub.adapter.find(Subject(email="dated@example.com"))
    assert contact["properties"]["createdate"] and contact["properties"]["hs_object_id"]
    (written,) = await hub.adapter.upsert([person(1, createdate="2020-01-01")])
    assert written.outcome == "failed"


async def test_an_access_copy_reads_the_property_list_again_once_it_is_an_hour_old(
    hub: Harness, clock: FakeClock
) -> None:
    """The daemon keeps one adapter for months. A property an admin defines after the first
    copy ("klachtnotitie") and fills for the person is in the copies made once the list read
    is an hour old, not missing from every later copy that still claims to be whole."""
    hub.sandbox.add_person("early@example.com", "Early", "Bird")
    await hub.adapter.find(Subject(email="early@example.com"))
    hub.sandbox.store.known = hub.sandbox.store.known | {"klachtnotitie"}
    hub.sandbox.add_person("late@example.com", "Late", "Comer", klachtnotitie="boos")
    clock.advance(3599)
    (within,) = await hub.adapter.find(Subject(email="late@example.com"))
    assert "klachtnotitie" not in within["properties"]  # the list read a moment ago
    clock.advance(1)
    (contact,) = await hub.adapter.find(Subject(email="late@example.com"))
    assert contact["properties"].get("klachtnotitie") == "boos"
    assert "propertiesNotRead" not in contact
    assert hub.sandbox.log.count("GET", "/crm/v3/properties/contacts") == 2


async def test_a_refused_property_list_is_asked_for_again_once_it_is_an_hour_old(
    sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """Without the schema scope the copy holds the configured properties and says so. Once
    the scope is granted, the copies made after the refusal is an hour old hold every
    property, and no longer say they are partial."""
    refusing = [True]

    def front(app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if refusing[0] and scope["path"] == "/crm/v3/properties/contacts":
                body = json.dumps({"status": "error", "category": "MISSING_SCOPES"}).encode()
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return wrapped

    harness = make_harness(sandbox, clock, front=front)
    sandbox.add_person("scoped@example.com", "Sco", "Ped", jobtitle="Inkoper")
    try:
        (partial,) = await harness.adapter.find(Subject(email="scoped@example.com"))
        refusing[0] = False
        clock.advance(1800)
        (still,) = await harness.adapter.find(Subject(email="scoped@example.com"))
        clock.advance(1800)
        (whole,) = await harness.adapter.find(Subject(email="scoped@example.com"))
    finally:
        await harness.client.aclose()
    for copy in (partial, still):
        assert copy["propertiesNotRead"] == {"reason": "crm.schemas.contacts.read"}
        assert "jobtitle" not in copy["properties"]
    assert "propertiesNotRead" not in whole and whole["properties"]["jobtitle"] == "Inkoper"


# -- access copies: what HubSpot keeps beside a contact's own properties ---------------------


async def test_an_access_copy_holds_the_records_associated_with_the_contact(
    hub: Harness,
) -> None:
    """Art. 15: HubSpot keeps notes, calls, e-mails, meetings, tasks, deals and companies
    associated with a contact (the reference's access recipe: "plus associations"); a note a
    salesperson wrote about the person is their personal data. The copy lists them with every
    property their kind defines; another contact's note is not among them, and an archived
    contact's records come with it."""
    contact_id = hub.sandbox.add_person("noted@example.com", "Noah", "Noted")
    note = hub.sandbox.add_associated(contact_id, "notes", hs_note_body="Belde over klacht")
    hub.sandbox.add_associated(contact_id, "calls", hs_call_title="Terugbelverzoek")
    deal = hub.sandbox.add_associated(contact_id, "deals", dealname="Keukenrenovatie")
    other = hub.sandbox.add_person("other@example.com", "Otto", "Other")
    hub.sandbox.add_associated(other, "notes", hs_note_body="Iemand anders")
    (contact,) = await hub.adapter.find(Subject(email="noted@example.com"))
    related = contact["associations"]
    assert sorted(related) == ["calls", "deals", "notes"]
    assert [(n["id"], n["properties"]["hs_note_body"]) for n in related["notes"]] == [
        (note, "Belde over klacht")
    ]
    assert related["calls"][0]["properties"]["hs_call_title"] == "Terugbelverzoek"
    assert related["deals"][0]["id"] == deal and related["deals"][0]["properties"]["amount"] is None
    assert "associationsNotRead" not in contact and "Iemand anders" not in json.dumps(contact)
    binned = archive(hub.sandbox, "binned@example.com")
    hub.sandbox.add_associated(binned, "tasks", hs_task_subject="Offerte sturen")
    (archived,) = await hub.adapter.find(Subject(email="binned@example.com"))
    assert archived["associations"]["tasks"][0]["properties"]["hs_task_subject"] == "Offerte sturen"
    # Eight kinds (engagements, deals, companies, tickets) listed for each contact.
    assert hub.sandbox.log.count("GET", "/crm/v4/objects/contacts/") == 16


async def test_an_access_copy_leaves_out_an_e_mail_s_other_senders_and_recipients(
    hub: Harness,
) -> None:
    """Art. 15(4): an e-mail to the person is theirs (its subject and text), but a
    colleague in cc and someone in bcc, whom the person never saw, are not; nor is the
    salesperson who sent it. The copy keeps the person's own entries in the headers and the
    recipient properties, and leaves out every other address and name."""
    contact_id = hub.sandbox.add_person("mila@example.com", "Mila", "Mail")
    headers = {
        "from": {"email": "verkoop@winkel.example", "firstName": "Vera", "lastName": "Verkoop"},
        "to": [{"email": "Mila Mail <Mila@example.com>", "firstName": "Mila", "lastName": "Mail"}],
        "cc": [{"email": "cees@elders.example", "firstName": "Cees", "lastName": "Collega"}],
        "bcc": [{"email": "bea@blind.example", "firstName": "Bea", "lastName": "Blindkopie"}],
    }
    hub.sandbox.add_associated(
        contact_id,
        "emails",
        hs_email_subject="Uw offerte",
        hs_email_text="Hierbij de offerte voor de keuken.",
        hs_email_headers=json.dumps(headers),
        hs_email_from_email="verkoop@winkel.example",
        hs_email_from_firstname="Vera",
        hs_email_from_lastname="Verkoop",
        hs_email_to_email="cees@elders.example;mila@example.com",
        hs_email_to_firstname="Cees;Mila",
        hs_email_to_lastname="Collega;Mail",
        hs_email_cc_email="cees@elders.example",
        hs_email_cc_firstname="Cees",
        hs_email_cc_lastname="Collega",
        hs_email_bcc_email="bea@blind.example",
        hs_email_bcc_firstname="Bea",
        hs_email_bcc_lastname="Blindkopie",
    )
    (contact,) = await hub.adapter.find(Subject(email="mila@example.com"))
    (email,) = contact["associations"]["emails"]
    held = email["properties"]
    copy = json.dumps(contact)
    for other in ("verkoop@winkel", "Vera", "Verkoop", "cees@", "Cees", "Collega"):
        assert other not in copy
    for other in ("bea@", "Bea", "Blindkopie"):
        assert other not in copy
    assert held["hs_email_subject"] == "Uw offerte"
    assert held["hs_email_text"] == "Hierbij de offerte voor de keuken."
    assert json.loads(held["hs_email_headers"]) == {"to": [headers["to"][0]], "cc": [], "bcc": []}
    assert held["hs_email_to_email"] == "mila@example.com"
    assert (held["hs_email_to_firstname"], held["hs_email_to_lastname"]) == ("Mila", "Mail")
    # Left out as HubSpot serves an unset property: the record still lists every one.
    for role in ("from", "cc", "bcc"):
        for part in ("email", "firstname", "lastname"):
            assert held[f"hs_email_{role}_{part}"] is None


async def test_an_access_copy_leaves_out_the_addresses_an_e_mail_s_text_quotes(
    hub: Harness,
) -> None:
    """Art. 15(4): a reply quotes who wrote before ("Cees <cees@...> schreef:"), a forward a
    whole header block: those addresses are other people's, in the subject, the text and
    the HTML alike. The person's own address (in any case) and the words around stay."""
    contact_id = hub.sandbox.add_person("mila@example.com", "Mila", "Mail")
    hub.sandbox.add_associated(
        contact_id,
        "emails",
        hs_email_subject="Fwd: vraag van bea@blind.example",
        hs_email_text=(
            "Graag gedaan, Mila.\n\nOp 3 maart schreef Cees <cees@elders.example>:\n"
            "> Zie ook Mila@Example.com en verkoop+nl@winkel.example."
        ),
        hs_email_html=(
            '<p>Van: <a href="mailto:cees@elders.example">Cees</a> '
            "&lt;cees@elders.example&gt;<br>Aan: mila@example.com</p>"
        ),
    )
    (contact,) = await hub.adapter.find(Subject(email="mila@example.com"))
    (email,) = contact["associations"]["emails"]
    held = email["properties"]
    copy = json.dumps(contact)
    for other in ("bea@", "cees@", "verkoop+nl@", "elders.example", "winkel.example"):
        assert other not in copy
    assert held["hs_email_subject"] == f"Fwd: vraag van {LEFT_OUT}"
    assert held["hs_email_text"] == (
        f"Graag gedaan, Mila.\n\nOp 3 maart schreef Cees <{LEFT_OUT}>:\n"
        f"> Zie ook Mila@Example.com en {LEFT_OUT}."
    )
    assert held["hs_email_html"] == (
        f'<p>Van: <a href="mailto:{LEFT_OUT}">Cees</a> '
        f"&lt;{LEFT_OUT}&gt;<br>Aan: mila@example.com</p>"
    )


async def test_an_access_copy_leaves_out_the_addresses_staff_quote_in_notes_calls_meetings_tasks(
    hub: Harness,
) -> None:
    """Art. 15(4): what staff write about a person can quote someone else's address ("her
    partner cees@... called too"): in a note, a call, a meeting (its internal notes too) and
    a task it reads as left out. The person's own addresses (the one asked for and one the
    contact holds besides, in any case) and the words around stay."""
    contact_id = hub.sandbox.add_person(
        "mila@example.com", "Mila", "Mail", hs_additional_emails="mila@werk.example"
    )
    written = "Mila (MILA@Example.com, Mila@Werk.example) belde; partner cees@elders.example ook."
    kept = f"Mila (MILA@Example.com, Mila@Werk.example) belde; partner {LEFT_OUT} ook."
    texts = {
        "notes": ("hs_note_body",),
        "calls": ("hs_call_title", "hs_call_body"),
        "meetings": ("hs_meeting_title", "hs_meeting_body", "hs_internal_meeting_notes"),
        "tasks": ("hs_task_subject", "hs_task_body"),
    }
    for kind, names in texts.items():
        hub.sandbox.add_associated(contact_id, kind, **dict.fromkeys(names, written))
    (contact,) = await hub.adapter.find(Subject(email="mila@example.com"))
    assert "elders.example" not in json.dumps(contact)
    for kind, names in texts.items():
        (record,) = contact["associations"][kind]
        for name in names:
            assert record["properties"][name] == kept, (kind, name)
    assert contact["properties"]["hs_additional_emails"] == "mila@werk.example"


async def test_an_access_copy_leaves_out_the_addresses_a_deal_or_company_s_text_quotes(
    hub: Harness,
) -> None:
    """Art. 15(4): staff name a deal and describe it, and describe a company, in words of
    their own ("Keuken, via cees@..."): an address of someone else there reads as left out,
    as in a note. The person's own address and the words around stay."""
    contact_id = hub.sandbox.add_person("mila@example.com", "Mila", "Mail")
    written = "Keuken voor Mila@Example.com, aangebracht door cees@elders.example"
    kept = f"Keuken voor Mila@Example.com, aangebracht door {LEFT_OUT}"
    hub.sandbox.add_associated(contact_id, "deals", dealname=written, description=written)
    hub.sandbox.add_associated(contact_id, "companies", name="Bouwbedrijf", description=written)
    (contact,) = await hub.adapter.find(Subject(email="mila@example.com"))
    (deal,) = contact["associations"]["deals"]
    (company,) = contact["associations"]["companies"]
    assert "elders.example" not in json.dumps(contact)
    assert deal["properties"]["dealname"] == deal["properties"]["description"] == kept
    assert company["properties"]["description"] == kept
    assert company["properties"]["name"] == "Bouwbedrijf"


async def test_an_access_copy_holds_the_support_tickets_associated_with_the_contact(
    hub: Harness,
) -> None:
    """Art. 15: a support ticket the person raised (its subject, what they wrote, where it
    stands) is theirs, associated with their contact as a deal is; the copy read no
    tickets. They are listed (v4 associations) and read (v3 batch read) as deals are, with
    every property the kind defines; another contact's ticket is not among them."""
    contact_id = hub.sandbox.add_person("tia@example.com", "Tia", "Ticket")
    ticket = hub.sandbox.add_associated(
        contact_id,
        "tickets",
        subject="Lekkende kraan na montage",
        content="De kraan lekt sinds de montage van vorige week.",
        hs_pipeline_stage="1",
    )
    other = hub.sandbox.add_person("other@example.com", "Otto", "Other")
    hub.sandbox.add_associated(other, "tickets", subject="Iemand anders")
    (contact,) = await hub.adapter.find(Subject(email="tia@example.com"))
    (held,) = contact["associations"]["tickets"]
    assert held["id"] == ticket
    assert held["properties"]["subject"] == "Lekkende kraan na montage"
    assert held["properties"]["content"] == "De kraan lekt sinds de montage van vorige week."
    assert held["properties"]["hs_pipeline_stage"] == "1"
    assert held["properties"]["createdate"]
    assert "associationsNotRead" not in contact and "Iemand anders" not in json.dumps(contact)
    listed = f"/crm/v4/objects/contacts/{contact_id}/associations/tickets"
    assert hub.sandbox.log.count("GET", listed) == 1
    assert hub.sandbox.log.count("POST", "/crm/v3/objects/tickets/batch/read") == 1


async def test_an_access_copy_leaves_out_the_addresses_a_ticket_s_subject_or_content_quotes(
    hub: Harness,
) -> None:
    """Art. 15(4): a ticket's subject and text quote whom the person or staff wrote about
    ("mijn buurman cees@... heeft hetzelfde"): an address of someone else there reads as
    left out, as in a deal's name. The person's own address and the words around stay."""
    contact_id = hub.sandbox.add_person("mila@example.com", "Mila", "Mail")
    written = "Vraag van Mila@Example.com, buurman cees@elders.example heeft hetzelfde"
    kept = f"Vraag van Mila@Example.com, buurman {LEFT_OUT} heeft hetzelfde"
    hub.sandbox.add_associated(contact_id, "tickets", subject=written, content=written)
    (contact,) = await hub.adapter.find(Subject(email="mila@example.com"))
    (ticket,) = contact["associations"]["tickets"]
    assert "elders.example" not in json.dumps(contact)
    assert ticket["properties"]["subject"] == ticket["properties"]["content"] == kept


async def test_an_access_copy_without_the_tickets_scope_says_so_and_names_the_scope(
    sandbox: HubSpotSandbox, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A private app without the ``tickets`` scope: HubSpot refuses the tickets' calls
    (403). The copy is made with the rest and says tickets were not read; a warning names
    the scope to grant (and never the contact)."""
    sandbox.scopes = {"crm.schemas.contacts.read", "crm.objects.contacts.read",
                      "crm.objects.deals.read", "crm.objects.companies.read",
                      "crm.schemas.deals.read", "crm.schemas.companies.read",
                      "communication_preferences.read"}  # fmt: skip
    contact_id = sandbox.add_person("scoped@example.com", "Sco", "Ped")
    sandbox.add_associated(contact_id, "deals", dealname="Verbouwing")
    sandbox.add_associated(contact_id, "tickets", subject="Klacht over levering")
    harness = make_harness(sandbox, clock)
    try:
        with caplog.at_level("WARNING"):
            (contact,) = await harness.adapter.find(Subject(email="scoped@example.com"))
    finally:
        await harness.client.aclose()
    assert contact["associations"]["deals"][0]["properties"]["dealname"] == "Verbouwing"
    assert "tickets" not in contact["associations"]
    assert contact["associationsNotRead"] == {
        "reason": "associations_partial",
        "unread": "tickets",
    }
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("tickets" in m and "scope" in m for m in warned), warned
    assert not any("scoped@example.com" in m or contact_id in m for m in warned)


async def test_an_access_report_names_a_ticket_s_fields_in_plain_words(hub: Harness) -> None:
    """The report reads a ticket in the person's words ("Supportticket 1: onderwerp"), not
    HubSpot's keys (``associations.tickets.0.properties.subject``)."""
    from connector.access_labels import SystemLabels

    contact_id = hub.sandbox.add_person("tia@example.com", "Tia", "Ticket")
    hub.sandbox.add_associated(contact_id, "tickets", subject="Lekkende kraan", content="Lekt")
    (contact,) = await hub.adapter.find(Subject(email="tia@example.com"))
    labels = SystemLabels(hub.adapter.copy_labels)
    path = "associations.tickets.0.properties."
    assert labels.label("nl", contact, path + "subject") == "Supportticket 1: onderwerp"
    assert labels.label("en", contact, path + "subject") == "Support ticket 1: subject"
    assert labels.label("en", contact, path + "content") == "Support ticket 1: what was written"
    assert labels.label("nl", contact, path + "hs_pipeline_stage") == (
        "Supportticket 1: fase (code)"
    )
    assert labels.label("en", contact, path + "createdate") == "Support ticket 1: created"


async def test_an_access_copy_holds_the_address_s_subscription_statuses(hub: Harness) -> None:
    """HubSpot keeps, per e-mail subscription type, whether the address is subscribed and on
    what legal basis (communication preferences; in the reference's access recipe). The copy
    holds them, read once per address (with the first contact holding it); the request log
    names the route, never the address in its path."""
    hub.sandbox.add_person("reader@example.com", "Rea", "Der")
    archive(hub.sandbox, "reader@example.com")
    hub.sandbox.add_person("reader@example.com", "Rea", "Der")
    hub.sandbox.subscribe("reader@example.com", "Nieuwsbrief", legal_basis="CONSENT_WITH_NOTICE")
    hub.sandbox.subscribe("reader@example.com", "Acties", status="NOT_SUBSCRIBED")
    live, binned = await hub.adapter.find(Subject(email="reader@example.com"))
    assert binned["archived"] and "subscriptions" not in binned
    statuses = {s["name"]: s for s in live["subscriptions"]}
    assert statuses["Nieuwsbrief"]["status"] == "SUBSCRIBED"
    assert statuses["Nieuwsbrief"]["legalBasis"] == "CONSENT_WITH_NOTICE"
    assert statuses["Acties"]["status"] == "NOT_SUBSCRIBED"
    assert "subscriptionsNotRead" not in live
    assert "reader@example.com" not in repr(hub.sandbox.log.entries)
    template = "/communication-preferences/v3/status/email/{emailAddress}"
    assert hub.sandbox.log.count("GET", template) == 1


def _portal(seen: list[httpx.Request]) -> httpx.MockTransport:
    """A HubSpot portal (by hand, not the sandbox) holding contact 501 with a note associated
    to it and one e-mail subscription status."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.startswith("/communication-preferences/v3/status/email/"):
            status = {
                "id": "77",
                "name": "Nieuwsbrief-77",
                "status": "SUBSCRIBED",
                "sourceOfStatus": "SUBSCRIPTION_STATUS",
                "legalBasis": "CONSENT_WITH_NOTICE",
            }
            body = {"recipient": "person@example.com", "subscriptionStatuses": [status]}
            return httpx.Response(200, json=body)
        if path.startswith("/crm/v4/objects/contacts/501/associations/"):
            link = {
                "toObjectId": 9001,
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 202}],
            }
            return httpx.Response(200, json={"results": [link] if path.endswith("/notes") else []})
        if path.startswith("/crm/v3/properties/"):
            names = ["hs_note_body", "hs_object_id"] if path.endswith("/notes") else ["email"]
            return httpx.Response(200, json={"results": [{"name": n} for n in names]})
        if path == "/crm/v3/objects/notes/batch/read":
            asked = json.loads(request.content)
            assert asked["inputs"] == [{"id": "9001"}] and "hs_note_body" in asked["properties"]
            note = {
                "id": "9001",
                "properties": {"hs_note_body": "Belde", "hs_object_id": "9001"},
                "archived": False,
            }
            return httpx.Response(200, json={"status": "COMPLETE", "results": [note]})
        if path == f"{CONTACTS}/batch/read":
            archived = request.url.params.get("archived") == "true"
            contact = {
                "id": "501",
                "properties": {"email": "person@example.com"},
                "archived": False,
            }
            return httpx.Response(
                200, json={"status": "COMPLETE", "results": [] if archived else [contact]}
            )
        return httpx.Response(
            404, json={"status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"}
        )

    return httpx.MockTransport(answer)  # fmt: skip


async def test_an_access_copy_asks_for_associations_and_subscription_statuses() -> None:
    """Against a portal answering as HubSpot documents: the v4 association lists, a v3 batch
    read of the associated ids with the kind's properties, and the address's statuses."""
    seen: list[httpx.Request] = []
    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=_portal(seen),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    async with client:
        (contact,) = await HubSpotAdapter(client, make_settings()).find(
            Subject(email="person@example.com")
        )
    asked = {f"{r.method} {r.url.path}" for r in seen}
    assert "GET /crm/v4/objects/contacts/501/associations/notes" in asked
    assert "GET /crm/v4/objects/contacts/501/associations/companies" in asked
    assert "GET /communication-preferences/v3/status/email/person@example.com" in asked
    assert contact["associations"]["notes"][0]["properties"]["hs_note_body"] == "Belde"
    assert contact["subscriptions"][0]["name"] == "Nieuwsbrief-77"


async def test_an_access_copy_says_what_a_missing_scope_kept_out(
    sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """A private app without the scope for deals, for companies' property definitions or for
    subscription statuses: HubSpot answers those calls 403. The copy is still made, with what
    was served, and says what was not: deals (and tickets, whose scope it lacks too)
    unread, companies with their main properties only, subscriptions not read
    (``subscriptionsNotRead``, as ``propertiesNotRead``)."""
    sandbox.scopes = {"crm.schemas.contacts.read", "crm.objects.contacts.read",
                      "crm.objects.companies.read"}  # fmt: skip
    sandbox.store.objects.known = {
        **sandbox.store.objects.known,
        "companies": sandbox.store.objects.known["companies"] | {"klantnummer"},
    }
    contact_id = sandbox.add_person("scoped@example.com", "Sco", "Ped")
    sandbox.add_associated(contact_id, "notes", hs_note_body="Gesprek")
    sandbox.add_associated(contact_id, "deals", dealname="Verbouwing")
    sandbox.add_associated(contact_id, "companies", name="Bouwbedrijf", klantnummer="K-12")
    sandbox.subscribe("scoped@example.com", "Nieuwsbrief")
    harness = make_harness(sandbox, clock)
    try:
        (contact,) = await harness.adapter.find(Subject(email="scoped@example.com"))
    finally:
        await harness.client.aclose()
    assert contact["associations"]["notes"][0]["properties"]["hs_note_body"] == "Gesprek"
    company = contact["associations"]["companies"][0]["properties"]
    assert company["name"] == "Bouwbedrijf" and "klantnummer" not in company
    assert "deals" not in contact["associations"] and "subscriptions" not in contact
    assert contact["associationsNotRead"] == {
        "reason": "associations_partial",
        "unread": "deals, tickets",
        "mainPropertiesOnly": "companies",
    }
    assert contact["subscriptionsNotRead"] == {"reason": "communication_preferences.read"}
    refused = [e for e in sandbox.log.entries if e.status == 403]
    assert len(refused) == 4


async def test_an_access_copy_lists_at_most_500_records_of_a_kind_and_says_it_is_cut(
    hub: Harness,
) -> None:
    """A bound on one copy's calls: at most 500 records of a kind, the first HubSpot lists;
    a contact with more says which kind was cut, and how many of it are listed."""
    hub.sandbox.set_rate_limit("default", None)
    contact_id = hub.sandbox.add_person("busy@example.com", "Bu", "Sy")
    for n in range(501):
        hub.sandbox.add_associated(contact_id, "emails", hs_email_subject=f"Bericht {n}")
    (contact,) = await hub.adapter.find(Subject(email="busy@example.com"))
    emails = contact["associations"]["emails"]
    assert len(emails) == 500 and emails[0]["properties"]["hs_email_subject"] == "Bericht 0"
    assert contact["associationsNotRead"] == {
        "reason": "associations_partial",
        "cut": "emails",
        "listedPerKind": "500",
    }
    assert hub.sandbox.log.count("POST", "/crm/v3/objects/emails/batch/read") == 5


async def test_a_failed_subscription_read_names_the_route_not_the_address() -> None:
    """The statuses are read by address, in the path: an error raised for that call names
    the route's template, so no message or log holds the e-mail."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/communication-preferences/"):
            return httpx.Response(503, json={"status": "error", "category": "INTERNAL_ERROR"})
        if path == f"{CONTACTS}/batch/read" and not request.url.params.get("archived"):
            contact = {"id": "7", "properties": {"email": CANARY_EMAIL}, "archived": False}
            return httpx.Response(200, json={"results": [contact]})
        return httpx.Response(200, json={"results": []})

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    async with client:
        with pytest.raises(RetryableError) as caught:
            await HubSpotAdapter(client, make_settings()).find(Subject(email=CANARY_EMAIL))
    assert CANARY_EMAIL not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.path == "/communication-preferences/v3/status/email/{emailAddress}"


async def test_erasure_takes_the_contacts_engagements_and_statuses_with_it(hub: Harness) -> None:
    """gdpr-delete "permanently deletes a contact and all associated content": the sandbox
    takes its notes (one another contact shares stays) and its address's statuses; deals
    stay, the business's, no longer linked to the person."""
    contact_id = hub.sandbox.add_person("gone@example.com", "Go", "Ne")
    mate = hub.sandbox.add_person("mate@example.com", "Ma", "Te")
    own = hub.sandbox.add_associated(contact_id, "notes", hs_note_body="Alleen van hem")
    shared = hub.sandbox.store.objects.add("notes", [int(contact_id), int(mate)], {}).id
    deal = hub.sandbox.add_associated(contact_id, "deals", dealname="Project")
    hub.sandbox.subscribe("gone@example.com", "Nieuwsbrief")
    result = await hub.adapter.erase(Subject(email="gone@example.com"))
    assert result.found
    objects = hub.sandbox.store.objects
    assert objects.get("notes", own) is None and objects.get("notes", str(shared)) is not None
    assert objects.get("deals", deal) is not None and objects.statuses("gone@example.com") == []
    assert await hub.adapter.find(Subject(email="gone@example.com")) == []


async def test_gdpr_delete_names_the_deals_and_companies_it_leaves_on_the_receipt(
    hub: Harness,
) -> None:
    """gdpr-delete takes the contact and its engagements; the deal named after the person
    and their company stay, associated with nobody, while the receipt said only
    "permanently deleted; e-mail added to HubSpot's blocklist". Counted before the delete,
    they are named by kind and count, never by content or id."""
    contact_id = hub.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    deal = hub.sandbox.add_associated(contact_id, "deals", dealname="Jan Jansen - keuken")
    company = hub.sandbox.add_associated(contact_id, "companies", name="Klusbedrijf Jansen")
    hub.sandbox.add_associated(contact_id, "notes", hs_note_body="Belt boos over factuur")
    result = await hub.adapter.erase(Subject(email="jan@example.nl"))
    objects = hub.sandbox.store.objects
    assert objects.get("deals", deal) is not None and objects.get("companies", company)
    assert result.note == (
        f"{ERASURE_NOTE}; left in HubSpot, associated with the contact (the business's "
        "records, which gdpr-delete leaves): 1 deal, 1 company"
    )


async def test_an_erasure_without_the_scope_for_deals_says_they_were_not_counted(
    sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """A private app that may not read deals cannot count them: the note says so rather
    than passing for a portal with none left."""
    sandbox.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write",
                      "crm.objects.companies.read", "tickets"}  # fmt: skip
    contact_id = sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    sandbox.add_associated(contact_id, "deals", dealname="Jan Jansen - keuken")
    harness = make_harness(sandbox, clock)
    try:
        result = await harness.adapter.erase(Subject(email="jan@example.nl"))
    finally:
        await harness.client.aclose()
    assert result.found and result.note.endswith(
        "; deals not counted (HubSpot would not list them)"
    )


async def test_gdpr_delete_names_the_support_tickets_it_leaves_on_the_receipt(
    hub: Harness,
) -> None:
    """A support ticket the person raised is in their access copy, and gdpr-delete is not
    known to take it (its "associated content" names no tickets): it stays, associated with
    nobody, while the receipt counted deals and companies alone. Tickets are counted before
    the delete as deals are, a ticket of another contact not among them, by count only."""
    contact_id = hub.sandbox.add_person("tia@example.com", "Tia", "Ticket")
    hub.sandbox.add_associated(contact_id, "deals", dealname="Tia - badkamer")
    tickets = [
        hub.sandbox.add_associated(contact_id, "tickets", subject="Lekkende kraan"),
        hub.sandbox.add_associated(contact_id, "tickets", subject="Factuur klopt niet"),
    ]
    other = hub.sandbox.add_person("other@example.com", "Otto", "Other")
    hub.sandbox.add_associated(other, "tickets", subject="Iemand anders")
    result = await hub.adapter.erase(Subject(email="tia@example.com"))
    objects = hub.sandbox.store.objects
    assert all(objects.get("tickets", ticket) is not None for ticket in tickets)
    assert result.note == (
        f"{ERASURE_NOTE}; left in HubSpot, associated with the contact (the business's "
        "records, which gdpr-delete leaves): 1 deal, 2 tickets"
    )
    assert "Lekkende kraan" not in result.note and tickets[0] not in result.note
    listed = f"/crm/v4/objects/contacts/{contact_id}/associations/tickets"
    assert hub.sandbox.log.count("GET", listed) == 1


async def test_an_erasure_without_the_tickets_scope_says_tickets_were_not_counted(
    sandbox: HubSpotSandbox, clock: FakeClock
) -> None:
    """A private app without the ``tickets`` scope cannot list a contact's tickets: the
    note says they were not counted rather than passing for a contact with none left, and
    the erasure goes through."""
    sandbox.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write",
                      "crm.objects.deals.read", "crm.objects.companies.read"}  # fmt: skip
    contact_id = sandbox.add_person("tia@example.com", "Tia", "Ticket")
    ticket = sandbox.add_associated(contact_id, "tickets", subject="Lekkende kraan")
    harness = make_harness(sandbox, clock)
    try:
        result = await harness.adapter.erase(Subject(email="tia@example.com"))
    finally:
        await harness.client.aclose()
    assert result.found and not sandbox.holds("tia@example.com")
    assert sandbox.store.objects.get("tickets", ticket) is not None
    assert result.note == f"{ERASURE_NOTE}; tickets not counted (HubSpot would not list them)"


async def test_find_people_reads_the_configured_properties_of_the_live_contact_alone(
    hub: Harness,
) -> None:
    """A targeted sync (a webhook, ``resync --email``) reads a contact as a pull does: the
    configured properties, not every one the portal defines (``find``, for access copies,
    read a date of birth no flow sends), by id or by e-mail, and nobody from the recycle bin."""
    contact_id = hub.sandbox.add_person(
        "dora@example.com", "Dora", "Bee", date_of_birth="1980-02-03", jobtitle="Inkoper"
    )
    configured = set(hub.adapter.settings.properties)
    by_id = await hub.adapter.find_people(Subject(email="", external_id=contact_id))
    by_email = await hub.adapter.find_people(Subject(email="dora@example.com"))
    for found in (by_id, by_email):
        assert [r["id"] for r in found] == [contact_id]
        assert found[0]["properties"]["firstname"] == "Dora"
        assert set(found[0]["properties"]) <= configured, set(found[0]["properties"]) - configured
    assert hub.sandbox.log.count("GET", "/crm/v3/properties/contacts") == 0
    # An id HubSpot no longer holds live (merged away) is looked up by e-mail.
    moved = await hub.adapter.find_people(Subject(email="dora@example.com", external_id="99999"))
    assert [r["id"] for r in moved] == [contact_id]
    archived_id = archive(hub.sandbox, "binned@example.com")
    assert await hub.adapter.find_people(Subject(email="binned@example.com")) == []
    assert await hub.adapter.find_people(Subject(email="", external_id=archived_id)) == []
    assert "dora@example.com" not in repr(hub.sandbox.log.entries)


async def test_told_its_mapping_s_paths_pulls_and_targeted_reads_ask_for_those_alone(
    hub: Harness,
) -> None:
    """Given the paths its mapping reads (``ask_only_for_paths``), a pull and a targeted
    sync's read ask for the configured properties among them (and the e-mail) alone: the
    street address and postcode, which mappings/hubspot.toml does not read, stay in HubSpot
    where they were asked for and counted withheld. The id is the contact's own, no property."""
    mapping = load_mapping(REPO_MAPPINGS / "hubspot.toml")
    hub.adapter.ask_only_for_paths(mapping.source_paths())
    read = {f.path for f in mapping.fields.values() if f.inbound}
    assert hub.adapter.asked_fields == read
    contact_id = hub.sandbox.add_person(
        "lotte@example.nl", "Lotte", "Visser", "0612345678", address="Dorpsstraat 1", zip="1234 AB"
    )
    (page,) = [page async for page in hub.adapter.pull(None)]
    (found,) = await hub.adapter.find_people(Subject(email="", external_id=contact_id))
    for record in (page.records[0], found):
        assert set(record["properties"]) <= read, set(record["properties"]) - read
    (listed,) = [e for e in hub.sandbox.log.entries if e.method == "GET" and e.path == CONTACTS]
    assert set(listed.query["properties"].split(",")) == read
    # An access copy still reads every property the portal defines.
    (copy,) = await hub.adapter.find(Subject(email="lotte@example.nl"))
    assert copy["properties"]["address"] == "Dorpsstraat 1"


def test_sandbox_stamps_are_hubspots_form_and_follow_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One text per millisecond (a batch shares it), in UTC with a Z, as HubSpot writes it."""
    from adapters.hubspot import _store

    now = [1_764_400_000_123_456_789]
    monkeypatch.setattr(_store.time, "time_ns", lambda: now[0])
    assert _store._now_iso() == "2025-11-29T07:06:40.123Z"
    now[0] += 400_000  # same millisecond
    assert _store._now_iso() == "2025-11-29T07:06:40.123Z"
    now[0] += 1_000_000
    assert _store._now_iso() == "2025-11-29T07:06:40.124Z"
