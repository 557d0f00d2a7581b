"""The Mailchimp adapter against its sandbox, in process (no network, no real sleeping)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from starlette.responses import JSONResponse

from adapters.mailchimp import (
    SPEC,
    MailchimpAdapter,
    MailchimpSandbox,
    MailchimpSettings,
    client_config,
    mailchimp_limits,
    subscriber_hash,
    wait_hint,
)
from adapters.mailchimp.payloads import problem_body
from adapters.mailchimp.settings import is_overloaded
from connector.adapter import Adapter, OutboundRecord, Subject, WebhookRequest
from connector.demo import REPO_MAPPINGS
from connector.errors import ConfigError, FatalRemoteError
from connector.http import RetryPolicy, SystemClient
from connector.mapping import load_mapping
from connector.model import Person, is_archived
from connector.others import LEFT_OUT
from tests.adapters.front import Decision, FrontPage

T = TypeVar("T")

BASE_URL = "https://us21.api.mailchimp.test/3.0"
LIST_A = "a1b2c3d4e5"
LIST_B = "f6e5d4c3b2"
API_KEY = "0123456789abcdef0123456789abcdef-us21"
SECRET = "mc-hook-secret"
HOOK_URL = "https://klantsync.example.nl/webhooks/newsletter"
MEMBER = "/3.0/lists/{list_id}/members/{subscriber_hash}"
DELETE_PERMANENT = f"POST {MEMBER}/actions/delete-permanent"


async def no_sleep(_seconds: float) -> None:
    """Retry waits never pass for real."""


@dataclass
class Harness:
    """A sandbox, the adapter wired to it, and its client."""

    sandbox: MailchimpSandbox
    adapter: MailchimpAdapter
    client: SystemClient


def make_settings(api_key: str = API_KEY, **overrides: Any) -> MailchimpSettings:
    values: dict[str, Any] = {
        "adapter": "mailchimp",
        "base_url": BASE_URL,
        "mapping": Path("mappings/mailchimp.toml"),
        "credentials": {"api_key": SecretStr(api_key)},
        "list_ids": [LIST_A, LIST_B],
    }
    values.update(overrides)
    return MailchimpSettings.model_validate(values)


def make_harness(
    sandbox: MailchimpSandbox,
    *,
    api_key: str = API_KEY,
    attempts: int = 4,
    front: Callable[[Any], Any] | None = None,
    **overrides: Any,
) -> Harness:
    """``front``, if given, wraps the sandbox's app (a proxy or a maintenance page before it)."""
    settings = make_settings(api_key, **overrides)
    config = client_config(settings)
    client = SystemClient(
        system="newsletter",
        base_url=BASE_URL,
        auth=config.auth,
        wait_hint=config.wait_hint,
        error_titles=config.error_titles,
        rate_limited=config.rate_limited,
        transport=httpx.ASGITransport(app=front(sandbox.app()) if front else sandbox.app()),
        retry=RetryPolicy(attempts=attempts, base_seconds=0, sleep=no_sleep),
    )
    return Harness(sandbox, MailchimpAdapter(client, settings), client)


@pytest.fixture
def sandbox() -> MailchimpSandbox:
    return MailchimpSandbox()


@pytest.fixture
async def mc(sandbox: MailchimpSandbox) -> AsyncIterator[Harness]:
    harness = make_harness(sandbox)
    yield harness
    await harness.client.aclose()


@pytest.fixture
async def raw(sandbox: MailchimpSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client on the sandbox, for calls the adapter never makes."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        auth=("anyone", API_KEY),
    ) as client:
        yield client


def person(n: int, **fields: Any) -> OutboundRecord:
    email = f"reader{n}@example.com"
    values: dict[str, Any] = {
        "email_address": email,
        "merge_fields.FNAME": f"First{n}",
        "merge_fields.LNAME": "Reader",
    }
    values.update(fields)
    return OutboundRecord(ref=f"ref-{n}", email=email, external_id=None, fields=values)


def hook(body: bytes, url: str = f"{HOOK_URL}?secret={SECRET}") -> WebhookRequest:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return WebhookRequest(method="POST", url=url, headers=headers, body=body)


# -- settings, limits, spec, mapping --------------------------------------------------------


def test_limits_client_config_and_wait_hint() -> None:
    """50 per upsert, 1000 per page, 10 connections; basic auth with the key; no 429 hint."""
    limits = mailchimp_limits(make_settings())
    assert (limits.batch_size, limits.page_size, limits.max_concurrency) == (50, 1000, 10)
    assert limits.rate == {}
    assert mailchimp_limits(make_settings(max_connections=4)).max_concurrency == 4
    assert client_config(make_settings()).auth == ("klantsync", API_KEY)
    assert wait_hint(httpx.Response(429, json={"title": "Too Many Requests"})) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_connections": 11},
        {"max_concurrency": 11},
        {"list_ids": []},
        {"list_ids": [LIST_A, LIST_A]},
        {"list_ids": ["../lists"]},
        {"status_if_new": "unsubscribed"},
        {"base_url": "https://us21.api.mailchimp.com"},
        {"base_url": "https://us21.api.mailchimp.com/3.0/lists"},
        {"base_url": "https://api.mailchimp.com/3.0"},
    ],
    ids=[
        "over-10-connections",
        "over-10-in-flight",
        "no-list",
        "duplicate-list",
        "path-in-list-id",
        "bad-status",
        "no-api-version",
        "path-past-the-api-root",
        "no-data-centre",
    ],
)
def test_settings_refuse_what_mailchimp_cannot_take(overrides: dict[str, Any]) -> None:
    """More than 10 connections, no or repeated or unsafe list ids, odd statuses, and a
    Mailchimp base URL that is not the API's root at a data centre fail (without "/3.0"
    every call is answered 404, which check --online took for audiences that do not
    exist)."""
    with pytest.raises(ValidationError):
        make_settings(**overrides)


def test_a_key_for_another_data_centre_than_the_base_url_s_is_refused_naming_both() -> None:
    """A key works at its own data centre alone: at another, every call was refused 401
    "API Key Invalid", first seen by a sync as a refused key. The message names the data
    centres (the key's end after its "-"), never the rest of the key."""
    with pytest.raises(ValidationError) as refused:
        make_settings(base_url="https://us6.api.mailchimp.com/3.0")
    message = str(refused.value)
    assert "data centre us21" in message and "base_url for us6" in message
    assert API_KEY.partition("-")[0] not in message
    assert make_settings(base_url="https://US21.api.mailchimp.com/3.0/")  # its own: taken
    # Another host (the sandbox, a proxy) and a key without a data centre are not judged.
    assert make_settings(base_url="https://127.0.0.1:8445/3.0")
    assert make_settings("0123456789abcdef", base_url="https://us6.api.mailchimp.com/3.0")


def test_settings_take_mailchimp_s_api_root_at_any_data_centre() -> None:
    """The root as Mailchimp's documentation writes it, with or without its closing slash;
    a base URL at another host (the sandbox, a proxy) is the operator's to choose."""
    for base_url in (
        "https://us21.api.mailchimp.com/3.0",
        "https://us21.api.mailchimp.com/3.0/",
        "https://127.0.0.1:8445/3.0",
    ):
        assert make_settings(base_url=base_url).base_url == base_url


def test_spec_and_adapter_meet_the_contract(mc: Harness) -> None:
    """SPEC wires the Mailchimp pieces; the adapter meets the protocol and claims no pull."""
    assert SPEC.kind == "mailchimp" == mc.adapter.kind == MailchimpSandbox.kind
    assert SPEC.settings_model is MailchimpSettings
    assert isinstance(mc.adapter, Adapter)
    assert mc.adapter.capabilities == {
        "upsert",
        "update",
        "find",
        "erase",
        "webhooks",
        "webhook_url_check",
    }
    assert SPEC.sandbox().credentials() == {"api_key": API_KEY}


async def test_pull_is_refused_with_a_clear_fatal_error(mc: Harness) -> None:
    """Mailchimp is a destination only: pulling fails at once, before any call."""
    with pytest.raises(FatalRemoteError, match="pull not supported"):
        async for _page in mc.adapter.pull(None):
            pass
    assert mc.sandbox.endpoints_used == []


def test_mapping_sends_only_email_and_name_and_only_with_consent() -> None:
    """The mapping gates on marketing consent and sends no phone or consent field."""
    mapping = load_mapping(REPO_MAPPINGS / "mailchimp.toml")
    assert mapping.requires_consent == "marketing"
    someone = Person(
        email="a@example.com",
        first_name="Ann",
        last_name="Dekker",
        phone="+31612345678",
        marketing_consent=True,
    )
    assert mapping.outbound(someone) == {
        "email_address": "a@example.com",
        "merge_fields.FNAME": "Ann",
        "merge_fields.LNAME": "Dekker",
    }
    assert mapping.admits(someone)
    assert not mapping.admits(Person(email="b@example.com", marketing_consent=False))


# -- upsert -----------------------------------------------------------------------------------


async def test_upsert_writes_then_updates_the_same_member_on_every_list(mc: Harness) -> None:
    """A second upsert updates the same member (same hash) on both lists and adds nobody.
    A first write is one PUT a member and audience; one to a member the connector wrote
    before (it holds the member id) reads the member's status first (see the archived
    member's test)."""
    first = await mc.adapter.upsert([person(1), person(2)])
    assert [(r.ref, r.outcome) for r in first] == [("ref-1", "upserted"), ("ref-2", "upserted")]
    assert first[0].external_id == subscriber_hash("reader1@example.com")
    assert sorted(mc.sandbox.endpoints_used) == [f"PUT {MEMBER}"] * 4
    renamed = person(1, **{"merge_fields.FNAME": "Renamed"})._replace(
        external_id=first[0].external_id
    )
    second = await mc.adapter.upsert([renamed])
    assert second[0].external_id == first[0].external_id
    for list_id in (LIST_A, LIST_B):
        member = mc.sandbox.member(list_id, "reader1@example.com")
        assert member is not None
        assert member["status"] == "subscribed"
        assert member["merge_fields"]["FNAME"] == "Renamed"
        assert len(mc.sandbox.store.audience(list_id).members) == 2
    assert sorted(mc.sandbox.endpoints_used) == [f"GET {MEMBER}"] * 2 + [f"PUT {MEMBER}"] * 6


async def test_a_new_address_moves_the_known_member_or_is_refused_if_taken(mc: Harness) -> None:
    """Known under another address: PATCH moves the member; an address in use is refused."""
    (first,) = await mc.adapter.upsert([person(1)])
    await mc.adapter.upsert([person(2)])
    moved = person(3)._replace(ref="ref-1", external_id=first.external_id)
    (result,) = await mc.adapter.upsert([moved])
    assert result.outcome == "upserted" and result.external_id == subscriber_hash(moved.email)
    for list_id in (LIST_A, LIST_B):
        assert mc.sandbox.member(list_id, "reader1@example.com") is None
        assert mc.sandbox.member(list_id, "reader3@example.com") is not None
        assert len(mc.sandbox.store.audience(list_id).members) == 2
    taken = person(2)._replace(ref="ref-3", external_id=result.external_id)
    (refused,) = await mc.adapter.upsert([taken])
    assert refused.outcome == "failed" and refused.reason == "Member Exists"
    assert not refused.retryable


async def test_mapped_record_reaches_mailchimp_with_only_mapped_field_names(mc: Harness) -> None:
    """What the mapping emits is what Mailchimp receives; the log holds names, no e-mails."""
    mapping = load_mapping(REPO_MAPPINGS / "mailchimp.toml")
    fields = mapping.outbound(
        Person(email="mapped@example.com", first_name="Map", phone="+31612345678")
    )
    record = OutboundRecord("ref-m", "mapped@example.com", None, fields)
    (result,) = await mc.adapter.upsert([record])
    assert result.outcome == "upserted"
    assert mc.sandbox.log.property_names() == {
        "email_address",
        "status_if_new",
        "merge_fields.FNAME",
    }
    assert "mapped@example.com" not in repr(mc.sandbox.log.entries)


async def test_double_opt_in_adds_new_members_as_pending_only(sandbox: MailchimpSandbox) -> None:
    """With status_if_new = pending a new member is pending; an existing one keeps its status."""
    sandbox.add_person("reader1@example.com", "Known", "Reader")
    harness = make_harness(sandbox, status_if_new="pending", list_ids=[LIST_A])
    await harness.adapter.upsert([person(1), person(2)])
    assert (sandbox.member(LIST_A, "reader1@example.com") or {})["status"] == "subscribed"
    assert (sandbox.member(LIST_A, "reader2@example.com") or {})["status"] == "pending"
    await harness.client.aclose()


@pytest.mark.parametrize("status_if_new", ["subscribed", "pending"])
async def test_a_consenting_reader_held_as_transactional_gets_the_status_of_a_new_member(
    sandbox: MailchimpSandbox, status_if_new: str
) -> None:
    """A customer the store's own Mailchimp integration added without a newsletter opt-in
    is a transactional member, sent no campaign; a write without a status leaves that
    status as it is (status_if_new reaches new members only). Once the shop records their
    consent, they get what a new member gets, subscribed or asked to confirm, as if
    Mailchimp had not held them, on the audience that held them and on the other; an
    unsubscribed member stays unsubscribed."""
    sandbox.add_person("reader1@example.com", "Old", status="transactional", list_id=LIST_A)
    sandbox.add_person("reader2@example.com", "Old", status="unsubscribed", list_id=LIST_A)
    harness = make_harness(sandbox, status_if_new=status_if_new)
    try:
        results = await harness.adapter.upsert([person(1), person(2)])
    finally:
        await harness.client.aclose()
    assert [r.outcome for r in results] == ["upserted", "upserted"]
    for list_id in (LIST_A, LIST_B):
        member = sandbox.member(list_id, "reader1@example.com")
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == (status_if_new, "First1")
    assert (sandbox.member(LIST_A, "reader2@example.com") or {})["status"] == "unsubscribed"


async def test_sync_never_resubscribes_someone_who_unsubscribed(mc: Harness) -> None:
    """An upsert without status updates names but leaves an unsubscribed member unsubscribed."""
    mc.sandbox.add_person("reader1@example.com", "Old", status="unsubscribed")
    (result,) = await mc.adapter.upsert([person(1)])
    assert result.outcome == "upserted"
    member = mc.sandbox.member(LIST_A, "reader1@example.com")
    assert member is not None and member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "First1"


async def test_a_sync_leaves_an_archived_member_archived_and_unchanged(
    sandbox: MailchimpSandbox,
) -> None:
    """The reader unsubscribed through the newsletter's own link and the marketer archived
    them; the shop, whose consent still says yes, then sends a changed name. Written for
    the first time (no member id known), the member gets a PUT with status_if_new alone,
    which leaves it archived (reported, UNVERIFIED) and is reported left archived; known
    by its member id, it is read first and, archived, sent nothing at all. On an audience
    where it is live it is written."""
    harness = make_harness(sandbox, list_ids=[LIST_A, LIST_B])
    try:
        member_hash = sandbox.add_person("reader1@example.com", "Old", status="unsubscribed")
        sandbox.store.archive(LIST_A, member_hash)
        (result,) = await harness.adapter.upsert([person(1)])
        assert result.outcome == "upserted" and "left archived" in result.note
        assert "1 audience" in result.note
        a = sandbox.member(LIST_A, "reader1@example.com")
        assert a is not None and (a["status"], a["merge_fields"]["FNAME"]) == ("archived", "Old")
        b = sandbox.member(LIST_B, "reader1@example.com")
        assert b is not None and b["status"] == "subscribed"
        sandbox.store.archive(LIST_B, member_hash)
        sandbox.log.clear()
        # Known by its member id now: read, and, archived everywhere, sent nothing at all.
        known = person(1, **{"merge_fields.FNAME": "New"})._replace(external_id=member_hash)
        (skipped,) = await harness.adapter.upsert([known])
        assert skipped.outcome == "skipped" and "2 audience" in skipped.note
        assert [e.method for e in sandbox.log.entries] == ["GET", "GET"]
        assert not sandbox.holds("reader1@example.com")
    finally:
        await harness.client.aclose()


async def test_a_move_leaves_the_member_archived_under_the_former_address(
    mc: Harness,
) -> None:
    """Known under X1, archived there; the person moves to X2 in the shop. The archived
    member is neither moved (a PATCH of an archived member is undocumented) nor doubled by
    a new subscribed member under X2."""
    (first,) = await mc.adapter.upsert([person(1)])
    for list_id in (LIST_A, LIST_B):
        mc.sandbox.store.archive(list_id, subscriber_hash("reader1@example.com"))
    moved = person(2)._replace(ref="ref-1", external_id=first.external_id)
    (result,) = await mc.adapter.upsert([moved])
    assert result.outcome == "skipped"
    for list_id in (LIST_A, LIST_B):
        assert (mc.sandbox.member(list_id, "reader1@example.com") or {})["status"] == "archived"
        assert mc.sandbox.member(list_id, "reader2@example.com") is None


@pytest.mark.parametrize("unsubscribed_on", [LIST_A, LIST_B])
async def test_a_first_write_withdraws_from_every_audience_who_unsubscribed_on_one(
    mc: Harness, unsubscribed_on: str
) -> None:
    """README: the system is one purpose, and an unsubscribe from one of its audiences
    withdraws them from all it writes. The reader unsubscribed from one audience at
    Mailchimp before klantsync wrote them; the shop says they consent. The first write (no
    member id, so nothing is read first) learns it from that audience's answer: no other
    audience is left subscribing them (one written before is sent the withdrawal, one after
    gets it instead of status_if_new), and the result says they opted out at the system."""
    record = person(7)
    mc.sandbox.add_person(
        record.email, "First7", "Reader", status="unsubscribed", list_id=unsubscribed_on
    )
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.opted_out) == ("upserted", True)
    assert result.external_id == subscriber_hash(record.email)
    assert "withdrawn from every audience" in result.note and "@" not in result.note
    for list_id in (LIST_A, LIST_B):
        member = mc.sandbox.member(list_id, record.email)
        assert member is None or member["status"] == "unsubscribed"
    assert mc.sandbox.confirmations_to(record.email) == 0


async def test_a_first_write_whose_withdrawal_failed_is_sent_again_as_a_first_write(
    sandbox: MailchimpSandbox,
) -> None:
    """Unsubscribed on the second audience, subscribed on the first by the same write, whose
    withdrawal there is answered by a proxy's page: the record is retryable and names no
    member id, so the retry is a first write again, finds the unsubscribe again, and
    withdraws them from the first audience."""
    sandbox.add_person("reader7@example.com", status="unsubscribed", list_id=LIST_B)
    fronted = make_harness(sandbox, front=lambda app: FrontPage(app, _page_for("PATCH")))
    try:
        (failed,) = await fronted.adapter.upsert([person(7)])
    finally:
        await fronted.client.aclose()
    assert (failed.outcome, failed.retryable, failed.external_id) == ("failed", True, None)
    assert (sandbox.member(LIST_A, "reader7@example.com") or {})["status"] == "subscribed"
    harness = make_harness(sandbox)
    try:
        (again,) = await harness.adapter.upsert([person(7)])
    finally:
        await harness.client.aclose()
    assert (again.outcome, again.opted_out) == ("upserted", True)
    for list_id in (LIST_A, LIST_B):
        assert (sandbox.member(list_id, "reader7@example.com") or {})["status"] == "unsubscribed"


async def test_a_write_to_a_member_it_knows_takes_no_unsubscribe_for_an_opt_out(
    mc: Harness,
) -> None:
    """A member klantsync wrote before may be unsubscribed by its own withdrawal: a write
    that finds it so (a mapping without consent_renewed) is no opt-out at the system."""
    (first,) = await mc.adapter.upsert([person(1)])
    await mc.adapter.upsert(
        [person(1, status="unsubscribed")._replace(external_id=first.external_id)]
    )
    (again,) = await mc.adapter.upsert([person(1)._replace(external_id=first.external_id)])
    assert (again.outcome, again.opted_out) == ("upserted", False)


async def held_until(sandbox: MailchimpSandbox, ready: Callable[[], bool], work: Awaitable[T]) -> T:
    """``work`` with the sandbox's answers held until ``ready()``, then let go.

    Calls that are let in wait for their answers while the others arrive, so how many
    overlap is fixed by the test, not by how fast a busy machine sends them (a latency could
    be outlasted). Bounded in turns of the loop, not in time.
    """
    sandbox.faults.hold = asyncio.Event()
    task = asyncio.ensure_future(work)
    for _ in range(100_000):
        if ready() or task.done():
            break
        await asyncio.sleep(0)
    sandbox.faults.hold.set()
    return await task


async def test_sixty_records_never_exceed_ten_connections(sandbox: MailchimpSandbox) -> None:
    """120 writes fan out to exactly 10 in flight, never more, and none is refused."""
    harness = make_harness(sandbox)
    results = await held_until(
        sandbox,
        lambda: sandbox.in_flight >= 10,
        harness.adapter.upsert([person(n) for n in range(60)]),
    )
    assert [r.outcome for r in results] == ["upserted"] * 60
    assert sandbox.max_in_flight_seen == 10
    assert sandbox.rejected_429 == 0
    assert sandbox.log.count("PUT", "/3.0/lists/") == 120
    await harness.client.aclose()


async def test_concurrent_upsert_calls_share_the_ten_connections(sandbox: MailchimpSandbox) -> None:
    """Batches the engine delivers at once still stay within the account's 10 connections."""
    harness = make_harness(sandbox)
    batches = [[person(n) for n in range(start, start + 20)] for start in (0, 20, 40)]
    calls = asyncio.gather(*(harness.adapter.upsert(batch) for batch in batches))
    await held_until(sandbox, lambda: sandbox.in_flight >= 10, calls)
    assert sandbox.max_in_flight_seen == 10
    assert sandbox.rejected_429 == 0
    await harness.client.aclose()


async def test_sandbox_refuses_connections_over_the_limit(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient
) -> None:
    """Fifteen simultaneous calls: five get Mailchimp's 429, so the limit check has teeth."""
    calls = asyncio.gather(*(raw.get(f"/lists/{LIST_A}/members") for _ in range(15)))
    responses = await held_until(sandbox, lambda: sandbox.rejected_429 >= 5, calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 5
    assert sandbox.rejected_429 == 5 and sandbox.max_in_flight_seen > 10
    body = next(r for r in responses if r.status_code == 429).json()
    assert (body["title"], body["status"]) == ("Too Many Requests", 429)
    assert set(body) >= {"type", "title", "status", "detail", "instance"}


async def test_429_from_an_account_shared_with_others_is_retryable() -> None:
    """When the account has fewer free connections than configured, 429s come back retryable."""
    sandbox = MailchimpSandbox(max_connections=4)
    harness = make_harness(sandbox, attempts=1, list_ids=[LIST_A])
    results = await held_until(
        sandbox,
        lambda: sandbox.rejected_429 >= 6,
        harness.adapter.upsert([person(n) for n in range(10)]),
    )
    failed = [r for r in results if r.outcome == "failed"]
    assert sandbox.rejected_429 == 6 and len(failed) == 6
    assert all(r.retryable and r.reason == "Too Many Requests" for r in failed)
    assert harness.client.stats.rate_limited == 6
    await harness.client.aclose()


async def test_withdrawn_consent_unsubscribes_on_every_list(mc: Harness) -> None:
    """A record with status unsubscribed PATCHes only the status; names stay as they were."""
    for list_id in (LIST_A, LIST_B):
        mc.sandbox.add_person("reader1@example.com", "Kept", list_id=list_id)
    (result,) = await mc.adapter.upsert([person(1, status="unsubscribed")])
    assert result.outcome == "upserted" and not result.reason
    for list_id in (LIST_A, LIST_B):
        member = mc.sandbox.member(list_id, "reader1@example.com")
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("unsubscribed", "Kept")
    assert set(mc.sandbox.endpoints_used) == {f"PATCH {MEMBER}"}
    assert mc.sandbox.log.property_names() == {"status"}


async def test_withdrawal_never_adds_anyone(mc: Harness) -> None:
    """Unsubscribing someone Mailchimp does not hold adds no member anywhere."""
    (result,) = await mc.adapter.upsert([person(1, status="unsubscribed")])
    assert result.outcome == "upserted"
    assert mc.sandbox.member(LIST_A, "reader1@example.com") is None
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is None


async def test_a_withdrawal_without_an_address_unsubscribes_the_member_by_its_id(
    mc: Harness,
) -> None:
    """The shop removed the person's address: the withdrawal comes with none, and the member
    klantsync holds the id of is unsubscribed by that id on every list; with no id either,
    nobody is reached and nothing is added."""
    for list_id in (LIST_A, LIST_B):
        written = mc.sandbox.add_person("reader1@example.com", "Kept", list_id=list_id)
    withdrawal = person(1, status="unsubscribed")._replace(email="", external_id=written)
    (result,) = await mc.adapter.upsert([withdrawal])
    assert result.outcome == "upserted" and result.external_id == written
    for list_id in (LIST_A, LIST_B):
        member = mc.sandbox.member(list_id, "reader1@example.com")
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("unsubscribed", "Kept")
    mc.sandbox.log.clear()
    (nobody,) = await mc.adapter.upsert([withdrawal._replace(external_id=None)])
    assert nobody.outcome == "skipped" and "@" not in nobody.note
    assert mc.sandbox.log.writes() == []


async def test_a_withdrawal_unsubscribes_the_member_written_under_the_former_address_too(
    sandbox: MailchimpSandbox,
) -> None:
    """Subscribed by a sync under X1, signed up through the audience's form under X2, then
    moved to X2 in the shop (the move refused: "Member Exists"), so the member klantsync
    wrote stays under X1, the id it holds. Their withdrawal unsubscribes both members, not
    only the first that answers; a member known as another subject's is left alone."""
    harness = make_harness(sandbox, list_ids=[LIST_A])
    try:
        written = sandbox.add_person("reader0@example.com", "Klant", list_id=LIST_A)
        sandbox.add_person("reader1@example.com", "Form", list_id=LIST_A)
        withdrawal = person(1, status="unsubscribed")._replace(external_id=written)
        (result,) = await harness.adapter.upsert([withdrawal])
        assert result.outcome == "upserted"
        assert result.external_id == subscriber_hash("reader1@example.com")
        statuses = {
            email: (sandbox.member(LIST_A, email) or {}).get("status")
            for email in ("reader0@example.com", "reader1@example.com")
        }
        assert statuses == {
            "reader0@example.com": "unsubscribed",
            "reader1@example.com": "unsubscribed",
        }
        housemate = sandbox.add_person("reader2@example.com", "Huisgenoot", list_id=LIST_A)
        spare = person(3, status="unsubscribed")._replace(
            external_id=housemate, spare=frozenset({housemate})
        )
        (left,) = await harness.adapter.upsert([spare])
        assert left.outcome == "upserted"
        assert (sandbox.member(LIST_A, "reader2@example.com") or {})["status"] == "subscribed"
    finally:
        await harness.client.aclose()


async def test_consent_given_again_asks_an_unsubscribed_member_to_confirm(mc: Harness) -> None:
    """A renewal (status pending) sets an unsubscribed member pending, which has Mailchimp
    e-mail a confirmation, on every audience; the names are brought up to date."""
    for list_id in (LIST_A, LIST_B):
        mc.sandbox.add_person("reader1@example.com", "Old", list_id=list_id, status="unsubscribed")
    (result,) = await mc.adapter.upsert([person(1, status="pending")])
    assert result.outcome == "upserted" and not result.reason
    for list_id in (LIST_A, LIST_B):
        member = mc.sandbox.member(list_id, "reader1@example.com")
        assert member is not None
        assert (member["status"], member["merge_fields"]["FNAME"]) == ("pending", "First1")
    assert mc.sandbox.confirmations_to("reader1@example.com") == 2  # one per audience


async def test_a_renewal_leaves_a_member_who_is_subscribed_again_as_they_are(
    mc: Harness,
) -> None:
    """Someone who re-subscribed through the form meanwhile is not sent back to confirm; one
    Mailchimp no longer holds is added pending, to confirm."""
    mc.sandbox.add_person("reader1@example.com", "Old", list_id=LIST_A)
    (result,) = await mc.adapter.upsert([person(1, status="pending")])
    assert result.outcome == "upserted"
    kept = mc.sandbox.member(LIST_A, "reader1@example.com")
    added = mc.sandbox.member(LIST_B, "reader1@example.com")
    assert kept is not None and (kept["status"], kept["merge_fields"]["FNAME"]) == (
        "subscribed",
        "First1",
    )
    assert added is not None and added["status"] == "pending"
    assert mc.sandbox.confirmations_to("reader1@example.com") == 1  # LIST_B's alone


async def test_a_renewal_under_a_new_address_of_an_unsubscribed_member_asks_the_new_one(
    mc: Harness,
) -> None:
    """The unsubscribed member is under the former address the connector knows. Mailchimp
    changes a subscribed member's address alone, so no move is tried: the new address is
    asked to confirm (nobody is subscribed who does not), the former member stays
    unsubscribed, and the person stays known by its id, so an erasure reaches both."""
    old = "reader0@example.com"
    for list_id in (LIST_A, LIST_B):
        known = mc.sandbox.add_person(old, "Old", list_id=list_id, status="unsubscribed")
    record = person(1, status="pending")
    record = OutboundRecord(record.ref, record.email, known, record.fields)
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.external_id) == ("upserted", known)
    for list_id in (LIST_A, LIST_B):
        assert (mc.sandbox.member(list_id, old) or {}).get("status") == "unsubscribed"
        assert (mc.sandbox.member(list_id, record.email) or {}).get("status") == "pending"
    assert mc.sandbox.confirmations_to(record.email) == 2
    assert mc.sandbox.confirmations_to(old) == 0
    await mc.adapter.erase(Subject(email=record.email, external_id=result.external_id))
    for list_id in (LIST_A, LIST_B):
        assert mc.sandbox.member(list_id, old) is None
        assert mc.sandbox.member(list_id, record.email) is None


async def test_a_write_to_an_address_signed_up_again_leaves_the_unsubscribed_member_beside_it(
    mc: Harness,
) -> None:
    """The person signed up again under their new address through the audience's form: the
    write goes to that member, status kept, instead of a move Mailchimp refuses of the
    unsubscribed member under the former address, which stays as it is."""
    old = "reader0@example.com"
    known = mc.sandbox.add_person(old, "Old", list_id=LIST_A, status="unsubscribed")
    mc.sandbox.add_person("reader1@example.com", "Self", list_id=LIST_A)
    record = person(1)._replace(external_id=known)
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.external_id) == ("upserted", known)
    assert (mc.sandbox.member(LIST_A, old) or {}).get("status") == "unsubscribed"
    again = mc.sandbox.member(LIST_A, "reader1@example.com") or {}
    assert (again.get("status"), again.get("merge_fields", {}).get("FNAME")) == (
        "subscribed",
        "First1",
    )
    cleaned = mc.sandbox.add_person("reader2@example.com", "Old", list_id=LIST_A, status="cleaned")
    (refused,) = await mc.adapter.upsert([person(3)._replace(external_id=cleaned)])
    assert refused.reason == "Invalid Resource: email_address"  # nothing under the new one


async def test_a_write_beside_an_unsubscribed_member_keeps_its_id_when_the_new_one_is_signed_up(
    mc: Harness,
) -> None:
    """The store's own Mailchimp integration added the person's new address as a
    transactional member while the one under the former address is unsubscribed: the write
    goes to the new member and gives it the status of a new member, and the connector goes
    on knowing the person by the former member's id, so that their erasure still reaches
    the member under the former address as well as the new one."""
    old = "reader0@example.com"
    known = mc.sandbox.add_person(old, "Old", list_id=LIST_A, status="unsubscribed")
    mc.sandbox.add_person("reader1@example.com", "Shop", list_id=LIST_A, status="transactional")
    record = person(1)._replace(external_id=known)
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.external_id) == ("upserted", known)
    assert (mc.sandbox.member(LIST_A, "reader1@example.com") or {}).get("status") == "subscribed"
    assert (mc.sandbox.member(LIST_A, old) or {}).get("status") == "unsubscribed"
    erased = await mc.adapter.erase(Subject(email=record.email, external_id=result.external_id))
    assert erased.found
    for list_id in (LIST_A, LIST_B):
        assert mc.sandbox.member(list_id, old) is None
        assert mc.sandbox.member(list_id, "reader1@example.com") is None


async def test_a_refused_move_keeps_the_former_member_s_id_when_another_audience_takes_the_write(
    mc: Harness,
) -> None:
    """The bounced member under the former address is on one audience alone: there its move
    is refused, the other adds the new address. The failure still names the former member's
    id, which the connector then knows the person by: the new id in its place left the
    member under the former address out of reach of an erasure under the new one."""
    old = "reader0@example.com"
    known = mc.sandbox.add_person(old, "Old", list_id=LIST_A, status="cleaned")
    record = person(1)._replace(external_id=known)
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.retryable) == ("failed", False)
    assert result.reason == "Invalid Resource: email_address"
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is not None
    assert result.external_id == known
    erased = await mc.adapter.erase(Subject(email=record.email, external_id=result.external_id))
    assert erased.found
    for list_id in (LIST_A, LIST_B):
        assert mc.sandbox.member(list_id, old) is None
        assert mc.sandbox.member(list_id, "reader1@example.com") is None


async def test_resubscribing_an_unsubscribed_member_fails_with_the_title(mc: Harness) -> None:
    """An explicit status subscribed for an unsubscribed member is refused, not retried."""
    mc.sandbox.add_person("reader1@example.com", status="unsubscribed")
    (result,) = await mc.adapter.upsert([person(1, status="subscribed")])
    assert (result.outcome, result.reason, result.retryable) == (
        "failed",
        "Member In Compliance State",
        False,
    )


async def test_forgotten_address_cannot_be_re_added_and_reason_is_title_only(
    mc: Harness,
) -> None:
    """After erasure a write fails with Mailchimp's title only: no e-mail, no detail."""
    await mc.adapter.upsert([person(1)])
    await mc.adapter.erase(Subject(email="reader1@example.com"))
    (result,) = await mc.adapter.upsert([person(1)])
    assert (result.outcome, result.retryable) == ("failed", False)
    assert result.reason == "Forgotten Email Not Subscribed"
    assert "@" not in result.reason and "reader1" not in result.reason
    assert not mc.sandbox.holds("reader1@example.com")


async def test_a_refused_record_s_reason_names_the_fields_mailchimp_refused(
    mc: Harness,
) -> None:
    """Mailchimp's "Invalid Resource" alone did not tell a merge field the audience's owner
    made required (every new member refused until it is filled or made optional) from one
    customer's invalid address: the reason adds the fields Mailchimp names in ``errors[]``,
    never its detail or messages, which echo what was sent."""
    mc.sandbox.require_merge_field(LIST_B, "COMPANY")
    (required,) = await mc.adapter.upsert([person(1)])
    assert (required.outcome, required.retryable) == ("failed", False)
    assert required.reason == "Invalid Resource: COMPANY"
    invalid = OutboundRecord("ref-x", "reader@localhost", None, {})
    (refused,) = await mc.adapter.upsert([invalid])
    assert (refused.outcome, refused.reason) == ("failed", "Invalid Resource: email_address")
    assert "@" not in required.reason + refused.reason and "reader" not in refused.reason


async def test_a_refused_move_s_reason_names_the_address_mailchimp_spells_with_a_space(
    sandbox: MailchimpSandbox,
) -> None:
    """Mailchimp refuses to change the address of a member that is not subscribed as
    "Invalid Resource", its errors[] naming the field "email address" (with a space): the
    reason names it as the address field, not as a bare "Invalid Resource"."""

    def refuse_moves(app: Any) -> Any:
        async def front(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "PATCH":
                message = (
                    'This member\'s status is "cleaned." You can only update email addresses '
                    'for members with a status of "subscribed."'
                )
                body = problem_body(
                    400,
                    "Invalid Resource",
                    "The resource submitted could not be validated. For field-specific "
                    "details, see the 'errors' array.",
                    [{"field": "email address", "message": message}],
                )
                await JSONResponse(body, status_code=400)(scope, receive, send)
                return
            await app(scope, receive, send)

        return front

    harness = make_harness(sandbox, front=refuse_moves, list_ids=[LIST_A])
    known = sandbox.add_person("reader0@example.com", "Old", status="cleaned")
    record = person(1)._replace(external_id=known)
    (result,) = await harness.adapter.upsert([record])
    await harness.client.aclose()
    assert (result.outcome, result.retryable) == ("failed", False)
    assert result.reason == "Invalid Resource: email_address"
    assert sandbox.member(LIST_A, "reader1@example.com") is None


async def test_a_write_mailchimp_refuses_while_it_pauses_the_address_s_signups_is_sent_later(
    mc: Harness,
) -> None:
    """Mailchimp refuses for a while to sign up an address that has signed up to a lot of
    lists very recently (400 "Invalid Resource", the address in its detail). That is no
    refusal for good: the record stays queued (not an outage), named so without the
    address, and lands once the pause is over, instead of being dead-lettered as an
    address Mailchimp will not take."""
    mc.sandbox.pause_signups("reader1@example.com")
    (paused,) = await mc.adapter.upsert([person(1)])
    assert (paused.outcome, paused.retryable, paused.unreachable) == ("failed", True, False)
    assert paused.reason == "Invalid Resource: SIGNUPS_PAUSED"
    assert not mc.sandbox.holds("reader1@example.com")
    mc.sandbox.pause_signups("reader1@example.com", paused=False)
    (again,) = await mc.adapter.upsert([person(1)])
    assert again.outcome == "upserted" and mc.sandbox.holds("reader1@example.com")


async def test_record_without_an_email_fails_locally(mc: Harness) -> None:
    """A record without an address is refused before any call."""
    (result,) = await mc.adapter.upsert([OutboundRecord("ref-x", "", None, {})])
    assert (result.outcome, result.reason) == ("failed", "MISSING_EMAIL")
    assert mc.sandbox.endpoints_used == []


async def test_wrong_api_key_is_fatal_and_names_no_person(sandbox: MailchimpSandbox) -> None:
    """A bad key stops the batch with a 401 whose message holds neither key nor hash."""
    harness = make_harness(sandbox, api_key="wrong-us21")
    with pytest.raises(FatalRemoteError) as caught:
        await harness.adapter.upsert([person(1), person(2)])
    assert (caught.value.status, caught.value.detail) == (401, "API Key Invalid")
    message = str(caught.value)
    assert "{subscriber_hash}" in message
    assert subscriber_hash("reader1@example.com") not in message
    assert subscriber_hash("reader2@example.com") not in message
    assert "wrong" not in message
    await harness.client.aclose()


async def test_missing_auth_gets_mailchimp_problem_body(sandbox: MailchimpSandbox) -> None:
    """Without credentials the sandbox answers 401 in Mailchimp's RFC 7807-style shape."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()), base_url=BASE_URL
    ) as client:
        response = await client.get(f"/lists/{LIST_A}/members")
    body = response.json()
    assert response.status_code == 401
    assert (body["title"], body["status"]) == ("API Key Missing", 401)
    assert body["type"].startswith("https://mailchimp.com/developer/")


async def test_erase_reaches_an_archived_member_on_an_audience_it_does_not_write_to() -> None:
    """delete-permanent works per audience, and an archived member can be re-added: one on
    an audience klantsync does not write to (a search does not show archived members) must
    be deleted too. The erasure looks on every audience of the account (GET /lists)."""
    other = "c9c8c7c6c5"
    sandbox = MailchimpSandbox(list_ids=(LIST_A, LIST_B, other))
    harness = make_harness(sandbox)
    try:
        sandbox.add_person("old.reader@example.com", "Old", "Reader", list_id=other)
        sandbox.store.archive(other, subscriber_hash("old.reader@example.com"))
        sandbox.add_person("old.reader@example.com", "Old", "Reader", list_id=LIST_A)
        result = await harness.adapter.erase(Subject(email="old.reader@example.com"))
    finally:
        await harness.client.aclose()
    assert result.found and result.note is not None and "2 audiences" in result.note
    assert not sandbox.holds("old.reader@example.com")
    assert not sandbox.restorable("old.reader@example.com")


async def test_server_errors_and_resets_are_retried(mc: Harness) -> None:
    """503s and a dropped connection are retried until the writes land."""
    mc.sandbox.faults.fail_next = 2
    mc.sandbox.faults.reset_next = 1
    (result,) = await mc.adapter.upsert([person(1)])
    assert result.outcome == "upserted"
    assert mc.client.stats.server_errors == 2
    assert mc.client.stats.transport_errors == 1
    assert mc.sandbox.holds("reader1@example.com")


async def test_a_bare_403_under_heavy_load_is_waited_out_not_fatal(mc: Harness) -> None:
    """Mailchimp may answer a bare 403 under heavy load: a "slow down", retried like a 429,
    not a refusal that stops every write to the audience for the run."""
    mc.sandbox.faults.fail_status = 403
    mc.sandbox.faults.fail_next = 2
    (result,) = await mc.adapter.upsert([person(1)])
    assert result.outcome == "upserted"
    assert mc.client.stats.rate_limited == 2
    assert mc.sandbox.holds("reader1@example.com")


async def test_a_403_that_says_why_is_still_fatal(mc: Harness) -> None:
    """Its own 403s are problem documents (a disabled account): no use retrying those."""
    disabled = httpx.Response(
        403,
        json={"title": "User Disabled", "status": 403},
        headers={"content-type": "application/problem+json"},
    )
    assert not is_overloaded(disabled)
    assert is_overloaded(httpx.Response(403, content=b""))
    assert is_overloaded(httpx.Response(403, html="<html>Forbidden</html>"))
    assert not is_overloaded(httpx.Response(401, content=b""))


async def test_retries_running_out_leave_the_record_retryable(mc: Harness) -> None:
    """A Mailchimp that stays down yields a retryable failure, not a dead letter."""
    mc.sandbox.faults.fail_next = 100
    (result,) = await mc.adapter.upsert([person(1)])
    assert (result.outcome, result.retryable) == ("failed", True)
    assert result.reason == "Internal Server Error"


async def test_a_2xx_that_is_not_a_member_leaves_the_record_to_be_sent_again(
    sandbox: MailchimpSandbox,
) -> None:
    """A front end answering the PUT with a 200 HTML page (maintenance, a captive proxy)
    wrote nothing: its fate is unknown, so the record is retryable, never taken as written
    (the engine would record it delivered and never send it again)."""
    harness = make_harness(sandbox, front=lambda app: FrontPage(app, _page_for("PUT")))
    try:
        (result,) = await harness.adapter.upsert([person(1)])
    finally:
        await harness.client.aclose()
    assert not sandbox.holds("reader1@example.com")
    assert (result.outcome, result.retryable) == ("failed", True)


async def test_a_withdrawal_answered_by_a_page_not_a_member_is_sent_again(
    sandbox: MailchimpSandbox,
) -> None:
    """The same page in answer to the PATCH that unsubscribes someone who withdrew consent:
    the withdrawal is retryable, not done, or the member would stay subscribed for good."""
    member_id = sandbox.add_person("reader1@example.com", "First1", "Reader")
    harness = make_harness(sandbox, front=lambda app: FrontPage(app, _page_for("PATCH")))
    record = OutboundRecord("ref-1", "reader1@example.com", member_id, {"status": "unsubscribed"})
    try:
        (result,) = await harness.adapter.upsert([record])
    finally:
        await harness.client.aclose()
    member = sandbox.store.audiences[LIST_A].members[member_id]
    assert member.status == "subscribed"  # the withdrawal never reached Mailchimp
    assert (result.outcome, result.retryable) == ("failed", True)


def _page_for(method: str) -> Callable[[dict[str, Any]], Decision]:
    return lambda scope: "page" if scope["method"] == method else None


# -- update (rectification) ------------------------------------------------------------------


def corrected(n: int, **fields: Any) -> OutboundRecord:
    """``person(n)`` with a corrected last name, as a rectification sends it."""
    return person(n, **{"merge_fields.LNAME": "Corrected", **fields})


async def test_update_corrects_a_member_and_adds_nobody_to_another_list(mc: Harness) -> None:
    """On list A only: A's member is PATCHed and stays subscribed; list B gets nobody."""
    mc.sandbox.add_person("reader1@example.com", "First1", "Wrong", list_id=LIST_A)
    (result,) = await mc.adapter.update([corrected(1)])
    assert (result.outcome, result.note) == ("updated", "")
    assert result.external_id == subscriber_hash("reader1@example.com")
    member = mc.sandbox.member(LIST_A, "reader1@example.com")
    assert member is not None
    assert (member["status"], member["merge_fields"]["LNAME"]) == ("subscribed", "Corrected")
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is None
    assert set(mc.sandbox.endpoints_used) == {f"GET {MEMBER}", f"PATCH {MEMBER}"}
    # Fields only: no status, no status_if_new, no address (see update_body).
    assert mc.sandbox.log.property_names() == {"merge_fields.FNAME", "merge_fields.LNAME"}


async def test_update_reads_only_the_member_s_id_and_status_before_its_patch(
    mc: Harness,
) -> None:
    """The read before a correction's ``PATCH`` asks ``fields=id,status``, as a sync's write
    does: the whole member holds the IP addresses it signed up and confirmed from, its
    location, stats, tags and every merge field, which the check has no use for."""
    email = "reader1@example.com"
    mc.sandbox.add_person(email, "First1", "Wrong", ADDRESS="Kerkpad 2, Urk", list_id=LIST_A)
    (result,) = await mc.adapter.update([corrected(1)])
    assert result.outcome == "updated"
    member = f"/members/{subscriber_hash(email)}"
    reads = [e for e in mc.sandbox.log.entries if e.method == "GET" and e.path.endswith(member)]
    assert reads and all(e.query.get("fields") == "id,status" for e in reads)


async def test_update_leaves_an_archived_member_archived_and_unchanged(mc: Harness) -> None:
    """An archived member is read, never written: it stays archived with its old fields, and
    the result says it was skipped and why."""
    member_hash = mc.sandbox.add_person("reader1@example.com", "First1", "Wrong")
    mc.sandbox.store.archive(LIST_A, member_hash)
    (result,) = await mc.adapter.update([corrected(1)])
    assert result.outcome == "skipped"
    assert "archived" in result.note and "1 audience" in result.note
    member = mc.sandbox.member(LIST_A, "reader1@example.com")
    assert member is not None
    assert (member["status"], member["merge_fields"]["LNAME"]) == ("archived", "Wrong")
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is None
    assert mc.sandbox.log.writes() == []
    assert not mc.sandbox.holds("reader1@example.com")


async def test_update_leaves_a_member_known_as_another_subject_s(mc: Harness) -> None:
    """A member the connector knows as another subject's (``spare``) is read, never
    written: nothing of the person's is held then."""
    member_hash = mc.sandbox.add_person("reader1@example.com", "First1", "Wrong")
    (result,) = await mc.adapter.update([corrected(1)._replace(spare=frozenset({member_hash}))])
    assert result.outcome == "not_held"
    member = mc.sandbox.member(LIST_A, "reader1@example.com")
    assert member is not None and member["merge_fields"]["LNAME"] == "Wrong"
    assert f"PATCH {MEMBER}" not in mc.sandbox.endpoints_used


async def test_update_corrects_the_live_member_and_skips_the_archived_one(mc: Harness) -> None:
    """Archived on A, subscribed on B: B is corrected, A is left alone, and the note says so."""
    member_hash = mc.sandbox.add_person("reader1@example.com", "First1", "Wrong", list_id=LIST_A)
    mc.sandbox.store.archive(LIST_A, member_hash)
    mc.sandbox.add_person("reader1@example.com", "First1", "Wrong", list_id=LIST_B)
    (result,) = await mc.adapter.update([corrected(1)])
    assert result.outcome == "updated" and "archived" in result.note
    a = mc.sandbox.member(LIST_A, "reader1@example.com")
    b = mc.sandbox.member(LIST_B, "reader1@example.com")
    assert a is not None and (a["status"], a["merge_fields"]["LNAME"]) == ("archived", "Wrong")
    assert b is not None and (b["status"], b["merge_fields"]["LNAME"]) == (
        "subscribed",
        "Corrected",
    )


async def test_update_never_sends_a_status_even_when_the_record_has_one(mc: Harness) -> None:
    """An unsubscribed member is corrected and stays unsubscribed, whatever status the record
    carries: a correction is not a subscription."""
    mc.sandbox.add_person("reader1@example.com", "First1", "Wrong", status="unsubscribed")
    (result,) = await mc.adapter.update([corrected(1, status="subscribed")])
    assert result.outcome == "updated"
    member = mc.sandbox.member(LIST_A, "reader1@example.com")
    assert member is not None
    assert (member["status"], member["merge_fields"]["LNAME"]) == ("unsubscribed", "Corrected")
    assert "status" not in mc.sandbox.log.property_names()


async def test_update_of_someone_on_no_list_is_not_held_and_writes_nothing(mc: Harness) -> None:
    """Nobody to correct: ``not_held``, and no member is added anywhere."""
    (result,) = await mc.adapter.update([corrected(1)])
    assert result.outcome == "not_held" and result.note
    assert mc.sandbox.member(LIST_A, "reader1@example.com") is None
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is None
    assert mc.sandbox.log.writes() == []


async def test_update_reaches_the_member_known_under_its_old_address(mc: Harness) -> None:
    """A member whose address changed in Mailchimp is corrected by the id the connector holds,
    as ``find`` finds it; nobody is added under the address the connector knows."""
    mc.sandbox.add_person("renamed@example.com", "First1", "Wrong", list_id=LIST_A)
    record = corrected(1)._replace(external_id=subscriber_hash("renamed@example.com"))
    (result,) = await mc.adapter.update([record])
    assert result.outcome == "updated"
    member = mc.sandbox.member(LIST_A, "renamed@example.com")
    assert member is not None and member["merge_fields"]["LNAME"] == "Corrected"
    assert member["email_address"] == "renamed@example.com"
    assert mc.sandbox.member(LIST_A, "reader1@example.com") is None


async def test_update_failures_are_reported_like_upserts(mc: Harness) -> None:
    """A Mailchimp that stays down leaves the correction retryable; a bad key is fatal."""
    mc.sandbox.add_person("reader1@example.com", "First1", "Wrong")
    mc.sandbox.faults.fail_next = 100
    (result,) = await mc.adapter.update([corrected(1)])
    assert (result.outcome, result.retryable) == ("failed", True)
    mc.sandbox.faults.fail_next = 0
    harness = make_harness(mc.sandbox, api_key="wrong-us21")
    with pytest.raises(FatalRemoteError):
        await harness.adapter.update([corrected(1)])
    await harness.client.aclose()


# -- emptying fields --------------------------------------------------------------------------

MERGE_FIELDS = "GET /3.0/lists/{list_id}/merge-fields"
PHONE = "+31612345678"


def held_fields(sandbox: MailchimpSandbox, list_id: str, n: int = 1) -> dict[str, Any]:
    member = sandbox.member(list_id, f"reader{n}@example.com")
    assert member is not None
    fields: dict[str, Any] = member["merge_fields"]
    return fields


def emptying(n: int, *names: str, **fields: Any) -> OutboundRecord:
    """``person(n)`` as the connector writes it again, emptying ``names``."""
    email = f"reader{n}@example.com"
    return person(n, **fields)._replace(external_id=subscriber_hash(email), clear=frozenset(names))


async def test_upsert_empties_the_named_merge_fields_on_every_audience_and_nothing_else(
    mc: Harness,
) -> None:
    """A phone removed at the source is written as Mailchimp empties a field (``""``) on each
    audience, beside the fields written; the birthday it does not name is kept, and a name
    that is no merge field of the audience is passed over. The audiences' definitions are
    read once each, and a write emptying nothing reads none."""
    written = {"merge_fields.PHONE": PHONE, "merge_fields.BIRTHDAY": "03/14"}
    await mc.adapter.upsert([person(1, **written), person(2, **written)])
    assert MERGE_FIELDS not in mc.sandbox.endpoints_used
    odd = ("merge_fields.NOPE", "merge_fields.ADDRESS.city", "status", "tags")
    again = [
        emptying(n, "merge_fields.PHONE", *odd, **{"merge_fields.FNAME": "Renamed"}) for n in (1, 2)
    ]
    results = await mc.adapter.upsert(again)
    assert [r.outcome for r in results] == ["upserted", "upserted"]
    for list_id in (LIST_A, LIST_B):
        for n in (1, 2):
            assert held_fields(mc.sandbox, list_id, n) == {
                "FNAME": "Renamed",
                "LNAME": "Reader",
                "PHONE": "",
                "BIRTHDAY": "03/14",
            }
        member = mc.sandbox.member(list_id, "reader1@example.com")
        assert member is not None and member["status"] == "subscribed"
    assert mc.sandbox.endpoints_used.count(MERGE_FIELDS) == 2
    assert PHONE not in repr(mc.sandbox.log.entries)


async def test_upsert_leaves_a_merge_field_the_audience_requires_and_the_write_succeeds(
    mc: Harness,
) -> None:
    """Required on audience A, the birthday is left as it is there and emptied on B; the rest
    of the record is written on both, and nothing is refused."""
    written = {"merge_fields.PHONE": PHONE, "merge_fields.BIRTHDAY": "03/14"}
    await mc.adapter.upsert([person(1, **written)])
    mc.sandbox.require_merge_field(LIST_A, "BIRTHDAY")
    renamed = {"merge_fields.LNAME": "Renamed"}
    record = emptying(1, "merge_fields.PHONE", "merge_fields.BIRTHDAY", **renamed)
    (result,) = await mc.adapter.upsert([record])
    assert (result.outcome, result.reason) == ("upserted", "")
    a, b = held_fields(mc.sandbox, LIST_A), held_fields(mc.sandbox, LIST_B)
    assert (a["PHONE"], a["BIRTHDAY"], a["LNAME"]) == ("", "03/14", "Renamed")
    assert (b["PHONE"], b["BIRTHDAY"], b["LNAME"]) == ("", "", "Renamed")


async def test_a_field_made_required_since_the_definitions_were_read_is_left_and_written_around(
    mc: Harness,
) -> None:
    """The audience's owner makes the birthday required after the adapter read the
    definitions: the write Mailchimp refuses for it is sent again without emptying it, so
    the record is written and the field kept; the definitions are then read anew."""
    written = {"merge_fields.PHONE": PHONE, "merge_fields.BIRTHDAY": "03/14"}
    await mc.adapter.upsert([person(1, **written), person(2, **written)])
    await mc.adapter.upsert([emptying(1, "merge_fields.PHONE")])
    mc.sandbox.require_merge_field(LIST_A, "BIRTHDAY")
    (result,) = await mc.adapter.upsert([emptying(2, "merge_fields.BIRTHDAY")])
    assert (result.outcome, result.reason) == ("upserted", "")
    assert held_fields(mc.sandbox, LIST_A, 1)["PHONE"] == ""
    assert held_fields(mc.sandbox, LIST_A, 2)["BIRTHDAY"] == "03/14"
    assert held_fields(mc.sandbox, LIST_B, 2)["BIRTHDAY"] == ""
    await mc.adapter.upsert([emptying(2, "merge_fields.BIRTHDAY")])
    assert mc.sandbox.endpoints_used.count(MERGE_FIELDS) == 3


async def test_a_write_that_creates_the_member_on_one_audience_and_empties_on_another_succeeds(
    mc: Harness,
) -> None:
    """Held on A with a phone, absent from B: the write empties the phone on A and adds the
    member to B, where there was nothing to empty."""
    mc.sandbox.add_person("reader1@example.com", "First1", "Reader", PHONE, list_id=LIST_A)
    (result,) = await mc.adapter.upsert([emptying(1, "merge_fields.PHONE")])
    assert result.outcome == "upserted"
    assert held_fields(mc.sandbox, LIST_A)["PHONE"] == ""
    created = mc.sandbox.member(LIST_B, "reader1@example.com")
    assert created is not None and created["status"] == "subscribed"
    assert created["merge_fields"]["FNAME"] == "First1"
    assert created["merge_fields"].get("PHONE", "") == ""


async def test_update_empties_the_named_merge_fields_but_never_one_the_audience_requires(
    mc: Harness,
) -> None:
    """A correction empties the phone; the birthday, required on the audience, is kept,
    although the correction's ``PATCH`` skips Mailchimp's check of required fields; the
    address it does not name is kept too."""
    mc.sandbox.add_person(
        "reader1@example.com", "First1", "Wrong", PHONE, BIRTHDAY="03/14", ADDRESS="Kerkpad 2"
    )
    mc.sandbox.require_merge_field(LIST_A, "BIRTHDAY")
    record = corrected(1)._replace(clear=frozenset({"merge_fields.PHONE", "merge_fields.BIRTHDAY"}))
    (result,) = await mc.adapter.update([record])
    assert (result.outcome, result.reason) == ("updated", "")
    assert held_fields(mc.sandbox, LIST_A) == {
        "FNAME": "First1",
        "LNAME": "Corrected",
        "PHONE": "",
        "BIRTHDAY": "03/14",
        "ADDRESS": "Kerkpad 2",
    }
    assert mc.sandbox.member(LIST_B, "reader1@example.com") is None


async def test_a_field_an_audience_cannot_hold_empty_is_reported_kept_and_an_emptied_one_not(
    mc: Harness,
) -> None:
    """The result's ``kept`` names what the write left: the birthday audience A requires
    (kept there, though emptied on B), a line of an address field and a name that is no
    merge field; the phone, emptied on both, is not named, nor the last name written. A
    correction says the same, and a member the write adds had nothing to keep."""
    written = {"merge_fields.PHONE": PHONE, "merge_fields.BIRTHDAY": "03/14"}
    await mc.adapter.upsert([person(1, **written)])
    mc.sandbox.require_merge_field(LIST_A, "BIRTHDAY")
    names = ("merge_fields.PHONE", "merge_fields.ADDRESS.city", "tags", "merge_fields.BIRTHDAY")
    record = emptying(1, *names, "merge_fields.LNAME", **{"merge_fields.LNAME": "Renamed"})
    (result,) = await mc.adapter.upsert([record])
    kept = {"merge_fields.BIRTHDAY", "merge_fields.ADDRESS.city", "tags"}
    assert (result.outcome, result.kept) == ("upserted", kept)
    assert held_fields(mc.sandbox, LIST_A)["PHONE"] == held_fields(mc.sandbox, LIST_B)["BIRTHDAY"]
    assert held_fields(mc.sandbox, LIST_B)["BIRTHDAY"] == ""
    birthday = {"merge_fields.BIRTHDAY": "01/01"}
    (added,) = await mc.adapter.upsert([emptying(2, *names[:3], **birthday)])
    assert (added.outcome, added.kept) == ("upserted", frozenset())
    (fixed,) = await mc.adapter.update([corrected(1)._replace(clear=frozenset(names))])
    assert (fixed.outcome, fixed.kept) == ("updated", kept)
    assert held_fields(mc.sandbox, LIST_A)["BIRTHDAY"] == "03/14"


# -- erase and find ---------------------------------------------------------------------------


async def test_erase_deletes_permanently_on_every_audience_and_never_archives(
    sandbox: MailchimpSandbox,
) -> None:
    """A member on a configured and an unconfigured list is deleted for good on both."""
    harness = make_harness(sandbox, list_ids=[LIST_A])
    sandbox.add_person("erase.me@example.com", "Erase", "Me", list_id=LIST_A)
    sandbox.add_person("erase.me@example.com", "Erase", "Me", list_id=LIST_B)
    result = await harness.adapter.erase(Subject(email="Erase.Me@example.com"))
    assert result.found
    assert (result.mode, result.reversible, result.vendor_status) == ("hard_delete", False, 204)
    assert result.endpoint == (
        "POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent"
    )
    assert result.note.startswith("permanently deleted on 2 audiences")
    assert sandbox.endpoints_used.count(DELETE_PERMANENT) == 2
    assert not any(e.startswith("DELETE ") for e in sandbox.endpoints_used)
    assert not sandbox.holds("erase.me@example.com")
    assert not sandbox.restorable("erase.me@example.com")
    assert sandbox.is_forgotten(LIST_A, "erase.me@example.com")
    assert sandbox.is_forgotten(LIST_B, "erase.me@example.com")
    assert "erase.me@example.com" not in repr(sandbox.log.entries).lower()
    await harness.client.aclose()


async def test_sandbox_delete_only_archives_and_a_put_with_a_status_restores(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient
) -> None:
    """DELETE is a soft delete: the member is archived, unlike erase. A PUT carrying only
    status_if_new leaves it archived (as reported, UNVERIFIED); one with a status re-adds it,
    in the compliance state it was archived in: an unsubscribed one is not subscribed."""
    path = f"/lists/{LIST_A}/members/{sandbox.add_person('soft@example.com', 'Soft')}"
    response = await raw.delete(path)
    assert response.status_code == 204
    assert not sandbox.holds("soft@example.com")
    assert sandbox.restorable("soft@example.com")
    body = {"email_address": "soft@example.com", "status_if_new": "subscribed"}
    response = await raw.put(path, json=body)
    assert response.status_code == 200 and response.json()["status"] == "archived"
    assert not sandbox.holds("soft@example.com")
    response = await raw.put(path, json={**body, "status": "subscribed"})
    assert response.status_code == 200
    assert sandbox.holds("soft@example.com")
    gone = (
        f"/lists/{LIST_A}/members/{sandbox.add_person('gone@example.com', status='unsubscribed')}"
    )
    assert (await raw.delete(gone)).status_code == 204
    body = {"email_address": "gone@example.com", "status": "subscribed"}
    refused = await raw.put(gone, json=body)
    assert (refused.status_code, refused.json()["title"]) == (400, "Member In Compliance State")


async def test_sandbox_re_add_refused_for_its_compliance_state_leaves_the_member_archived(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient
) -> None:
    """A PUT Mailchimp refuses ("Member In Compliance State") changes nothing: the member
    archived while unsubscribed stays archived, out of searches and member lists."""
    email = "archived.reader@example.com"
    sandbox.add_person(email, "Arch", "Ived", status="unsubscribed")
    member = f"/lists/{LIST_A}/members/{subscriber_hash(email)}"
    assert (await raw.delete(member)).status_code == 204
    refused = await raw.put(member, json={"email_address": email, "status": "subscribed"})
    assert (refused.status_code, refused.json()["title"]) == (400, "Member In Compliance State")
    assert (await raw.get(member)).json()["status"] == "archived"
    assert not sandbox.holds(email)


async def test_sandbox_patch_refused_for_its_status_leaves_the_member_s_address(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient
) -> None:
    """A PATCH carrying a new address and a status Mailchimp refuses changes nothing: the
    member is not moved to the new address before the status is refused."""
    old, new = "old.address@example.com", "new.address@example.com"
    sandbox.add_person(old, "Oud", "Adres", status="unsubscribed")
    member = f"/lists/{LIST_A}/members/{subscriber_hash(old)}"
    refused = await raw.patch(member, json={"email_address": new, "status": "subscribed"})
    assert (refused.status_code, refused.json()["title"]) == (400, "Member In Compliance State")
    assert (sandbox.member(LIST_A, old) or {})["status"] == "unsubscribed"
    assert sandbox.member(LIST_A, new) is None


@pytest.mark.parametrize("status", ["unsubscribed", "cleaned", "pending", "transactional"])
async def test_sandbox_moves_only_a_subscribed_member_s_address(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient, status: str
) -> None:
    """Mailchimp changes the address of a subscribed member alone: a PATCH of another's is
    refused as "Invalid Resource", its errors[] naming "email address", and changes nothing."""
    old, new = "old.address@example.com", "new.address@example.com"
    sandbox.add_person(old, "Oud", "Adres", status=status)
    member = f"/lists/{LIST_A}/members/{subscriber_hash(old)}"
    refused = await raw.patch(member, json={"email_address": new, "merge_fields": {"FNAME": "N"}})
    body = refused.json()
    assert (refused.status_code, body["title"]) == (400, "Invalid Resource")
    assert [error["field"] for error in body["errors"]] == ["email address"]
    held = sandbox.member(LIST_A, old) or {}
    assert (held.get("status"), held.get("merge_fields", {}).get("FNAME")) == (status, "Oud")
    assert sandbox.member(LIST_A, new) is None
    sandbox.add_person("moved@example.com", "Ok")
    subscribed = f"/lists/{LIST_A}/members/{subscriber_hash('moved@example.com')}"
    moved = await raw.patch(subscribed, json={"email_address": "moved.on@example.com"})
    assert moved.status_code == 200 and sandbox.member(LIST_A, "moved.on@example.com")


async def test_erase_reaches_an_archived_member_search_does_not_show(mc: Harness) -> None:
    """An archived member on a configured list is found by hash and deleted for good."""
    member_hash = mc.sandbox.add_person("archived@example.com")
    mc.sandbox.store.archive(LIST_A, member_hash)
    result = await mc.adapter.erase(Subject(email="archived@example.com"))
    assert result.found
    assert not mc.sandbox.restorable("archived@example.com")
    assert mc.sandbox.is_forgotten(LIST_A, "archived@example.com")


async def test_erase_twice_reports_not_found_the_second_time(mc: Harness) -> None:
    """Erasure is idempotent: the second call succeeds and says nobody was there."""
    mc.sandbox.add_person("twice@example.com", "Two")
    first = await mc.adapter.erase(Subject(email="twice@example.com"))
    second = await mc.adapter.erase(Subject(email="twice@example.com"))
    assert (first.found, second.found) == (True, False)
    assert (second.mode, second.reversible) == ("hard_delete", False)
    assert mc.sandbox.endpoints_used.count(DELETE_PERMANENT) == 1


async def test_an_archived_member_is_found_marked_archived_as_the_connector_reads_it(
    mc: Harness,
) -> None:
    """Mailchimp answers an archived member (what ``DELETE`` leaves) with ``status``
    "archived". Found by access, an erasure or a correction, it is marked archived as the
    connector reads a record in a recycle bin (``is_archived``): held, but not live, so a
    correction neither takes its values for the person's nor writes to it. The member
    subscribed on the other audience is live."""
    email = "archief@example.com"
    member_hash = mc.sandbox.add_person(email, "Ria", "Oud", list_id=LIST_A)
    mc.sandbox.store.archive(LIST_A, member_hash)
    mc.sandbox.add_person(email, "Ria", "Fout", list_id=LIST_B)
    mc.adapter.ask_only_for_paths(load_mapping(REPO_MAPPINGS / "mailchimp.toml").source_paths())
    for found in (
        await mc.adapter.find(Subject(email=email)),
        await mc.adapter.find_records(Subject(email=email)),
    ):
        by_list = {m["list_id"]: m for m in found}
        assert by_list[LIST_A]["status"] == "archived" and is_archived(by_list[LIST_A])
        assert by_list[LIST_B]["status"] == "subscribed" and not is_archived(by_list[LIST_B])


async def test_find_returns_each_member_record_or_nothing(mc: Harness) -> None:
    """find returns the member on each list it is on; an unknown address yields nothing."""
    mc.sandbox.add_person("found@example.com", "Fo", list_id=LIST_A)
    mc.sandbox.add_person("found@example.com", "Fo", list_id=LIST_B)
    members = await mc.adapter.find(Subject(email="found@example.com"))
    assert sorted(m["list_id"] for m in members) == [LIST_A, LIST_B]
    assert {m["id"] for m in members} == {subscriber_hash("found@example.com")}
    assert await mc.adapter.find(Subject(email="nobody@example.com")) == []
    searches = [e for e in mc.sandbox.log.entries if e.path == "/3.0/search-members"]
    assert searches and all(e.query["query"] == "<redacted>" for e in searches)


async def test_find_returns_each_member_with_every_note_held_about_it(mc: Harness) -> None:
    """Each member found, archived ones too, carries its notes, every page of them; the notes
    are read once a page per member, and never for an audience the person is not on."""
    email = "noted@example.com"
    mc.sandbox.add_person(email, "No", list_id=LIST_A)
    mc.sandbox.add_person(email, "No", list_id=LIST_B, status="archived")
    for n in range(1001):  # more than one page of 1000
        mc.sandbox.add_note(email, f"note {n}", list_id=LIST_B)
    members = {m["list_id"]: m for m in await mc.adapter.find(Subject(email=email))}
    assert members[LIST_A]["notes"] == []
    notes = members[LIST_B]["notes"]
    assert [n["note"] for n in notes] == [f"note {n}" for n in range(1001)]
    assert notes[0]["email_id"] == subscriber_hash(email) and notes[0]["list_id"] == LIST_B
    assert mc.sandbox.endpoints_used.count(f"GET {MEMBER}/notes") == 3
    mc.sandbox.endpoints_used.clear()
    assert await mc.adapter.find(Subject(email="nobody@example.com")) == []
    assert f"GET {MEMBER}/notes" not in mc.sandbox.endpoints_used


async def test_find_leaves_out_other_addresses_a_note_quotes(mc: Harness) -> None:
    """Art. 15(4): a note staff wrote can quote someone else's address ("meldde zich aan
    voor zus sanne@..."): it reads as left out. The person's own address (in any case) and
    the words around stay."""
    email = "noted@example.com"
    mc.sandbox.add_person(email, "No")
    mc.sandbox.add_note(email, "Noted@Example.COM meldde ook zus sanne+nb@zus.example aan.")
    (member,) = await mc.adapter.find(Subject(email=email))
    assert "zus.example" not in json.dumps(member)
    (note,) = member["notes"]
    assert note["note"] == f"Noted@Example.COM meldde ook zus {LEFT_OUT} aan."
    assert member["email_address"] == email


async def test_find_keeps_a_note_and_its_text_but_not_the_staff_member_who_wrote_it(
    mc: Harness,
) -> None:
    """Mailchimp names a note's author (``created_by``: the account user's name), as
    Pipedrive names its staff author: another person, whom the person's copy leaves out, as
    Pipedrive's does. That the note exists, its text and when it was written stay."""
    email = "noted@example.com"
    mc.sandbox.add_person(email, "No")
    mc.sandbox.add_note(email, "Belde over haar abonnement", created_by="Mieke Medewerker")
    (member,) = await mc.adapter.find(Subject(email=email))
    assert "Mieke" not in json.dumps(member)
    (note,) = member["notes"]
    assert note["note"] == "Belde over haar abonnement"
    assert "created_by" not in note and note["created_at"]


async def test_access_reads_the_member_activity_mailchimp_holds(
    mc: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailchimp keeps each member's events (sends, opens, clicks, bounces, unsubscribes):
    tracking it holds about the person, which find (access) returns with the member, the
    newest first, from activity-feed paged while its pages come full (it says no total).
    Past a bound of pages the member says the rest was not read."""
    (written,) = await mc.adapter.upsert([person(1)])  # recorded by Mailchimp: a sign-up
    mc.sandbox.add_activity("reader1@example.com", "sent", campaign_id="c1")
    mc.sandbox.add_activity("reader1@example.com", "open", campaign_id="c1")
    await mc.adapter.upsert([person(1, status="unsubscribed")])
    members = {m["list_id"]: m for m in await mc.adapter.find(Subject(email="reader1@example.com"))}
    assert members[LIST_A]["id"] == written.external_id
    assert [e["activity_type"] for e in members[LIST_A]["activity"]] == [
        "unsub",
        "open",
        "sent",
        "signup",
    ]
    assert [e["activity_type"] for e in members[LIST_B]["activity"]] == ["unsub", "signup"]
    assert "activityNotRead" not in members[LIST_A]
    assert mc.sandbox.endpoints_used.count(f"GET {MEMBER}/activity-feed") == 2

    monkeypatch.setattr("adapters.mailchimp._members.ACTIVITY_PAGES", 2)
    email = "busy@example.com"
    mc.sandbox.add_person(email, "Busy", list_id=LIST_A)
    for n in range(2001):  # more than two pages of 1000
        mc.sandbox.add_activity(email, "open", list_id=LIST_A, campaign_id=f"c{n}")
    mc.sandbox.endpoints_used.clear()
    (busy,) = await mc.adapter.find(Subject(email=email))
    assert [e["campaign_id"] for e in busy["activity"][:2]] == ["c2000", "c1999"]
    assert len(busy["activity"]) == 2000 and busy["activityNotRead"] == {
        "reason": "activity_feed_cut",
        "eventsListed": 2000,
    }
    assert mc.sandbox.endpoints_used.count(f"GET {MEMBER}/activity-feed") == 2


async def test_access_of_a_member_gone_meanwhile_has_no_activity(sandbox: MailchimpSandbox) -> None:
    """A member deleted between being found and its activity being read (404) has no
    activity: not an error."""

    def front(app: Any) -> Any:
        async def gone_first(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].endswith("/activity-feed"):
                sandbox.store.delete_permanent(LIST_A, subscriber_hash("gone@example.com"))
            await app(scope, receive, send)

        return gone_first

    harness = make_harness(sandbox, list_ids=[LIST_A], front=front)
    try:
        sandbox.add_person("gone@example.com", "Gone", list_id=LIST_A)
        (member,) = await harness.adapter.find(Subject(email="gone@example.com"))
        assert member["activity"] == [] and "activityNotRead" not in member
    finally:
        await harness.client.aclose()


async def test_erase_deletes_the_member_s_notes_with_it(mc: Harness) -> None:
    """delete-permanent takes the member's notes with it: nothing is left to find, and they
    do not come back with the person re-subscribing through the audience's own form."""
    email = "noted@example.com"
    mc.sandbox.add_person(email, "No")
    mc.sandbox.add_note(email, "asked about a refund")
    result = await mc.adapter.erase(Subject(email=email))
    assert result.found
    assert f"GET {MEMBER}/notes" not in mc.sandbox.endpoints_used
    assert await mc.adapter.find(Subject(email=email)) == []
    mc.sandbox.add_person(email, "No")
    (member,) = await mc.adapter.find(Subject(email=email))
    assert member["notes"] == []


#: What an erasure's or a correction's read asks of a member under the repository's mapping:
#: where it is, whom and whether archived, and the fields the mapping reads.
RECORD_PATHS = {
    "id",
    "list_id",
    "email_address",
    "status",
    "merge_fields.FNAME",
    "merge_fields.LNAME",
}


def asked_paths(entry: Any) -> set[str]:
    """The paths a logged read asked for (``fields``), from the member's root."""
    prefix = "exact_matches.members."
    return {p.removeprefix(prefix) for p in entry.query.get("fields", "").split(",") if p}


async def test_an_erasure_s_and_a_correction_s_read_asks_only_for_the_mapped_paths(
    mc: Harness,
) -> None:
    """``find_records`` (an erasure's snapshot and check, a correction's read) asks the
    search and each audience (``fields``) for the paths the mapping reads, and what tells
    the members apart, alone: the merge fields no mapping reads (a postal address), the IP
    addresses a member signed up from, its language and tags stay in Mailchimp. The members
    still read as the mapping reads them. An access copy reads whole members."""
    mc.adapter.ask_only_for_paths(load_mapping(REPO_MAPPINGS / "mailchimp.toml").source_paths())
    email = "reader1@example.com"
    mc.sandbox.add_person(email, "Ann", "Dekker", ADDRESS="Kerkpad 2, Urk", list_id=LIST_A)
    mc.sandbox.add_person(email, "Ann", "Dekker", list_id=LIST_B, status="archived")
    found = await mc.adapter.find_records(Subject(email=email))
    assert sorted((m["list_id"], m["status"]) for m in found) == [
        (LIST_A, "subscribed"),
        (LIST_B, "archived"),
    ]
    for member in found:
        # An archived member comes marked so, as the connector reads a recycle bin.
        marked = {"archived"} if member["status"] == "archived" else set()
        assert set(member) == {"id", "list_id", "email_address", "status", "merge_fields", *marked}
        assert member["merge_fields"] == {"FNAME": "Ann", "LNAME": "Dekker"}
    mapping = load_mapping(REPO_MAPPINGS / "mailchimp.toml")
    person = mapping.inbound(found[0])
    assert (person["email"], person["first_name"]) == (email, "Ann")
    reads = [e for e in mc.sandbox.log.entries if e.method == "GET" and "/lists/" in e.path]
    reads += [e for e in mc.sandbox.log.entries if e.path == "/3.0/search-members"]
    member_reads = [e for e in reads if e.path.endswith(subscriber_hash(email))]
    assert member_reads and len(reads) == len(member_reads) + 1
    assert all(asked_paths(e) == RECORD_PATHS for e in reads)
    mc.sandbox.log.clear()
    whole = {m["list_id"]: m for m in await mc.adapter.find(Subject(email=email))}
    assert whole[LIST_A]["merge_fields"]["ADDRESS"] == "Kerkpad 2, Urk"
    assert all("ip_signup" in m for m in whole.values())


async def test_an_erasure_reads_where_each_member_is_and_nothing_it_holds(mc: Harness) -> None:
    """``delete-permanent`` needs each member's audience and id: an erasure asks for those
    (and the address and status, as every such read does) alone, not its merge fields."""
    email = "erase.me@example.com"
    mc.sandbox.add_person(email, "Erase", "Me", ADDRESS="Kerkpad 2, Urk")
    result = await mc.adapter.erase(Subject(email=email))
    assert result.found and mc.sandbox.is_forgotten(LIST_A, email)
    reads = [e for e in mc.sandbox.log.entries if e.method == "GET" and "members" in e.path]
    reads += [e for e in mc.sandbox.log.entries if e.path == "/3.0/search-members"]
    assert reads
    assert all(asked_paths(e) == {"id", "list_id", "email_address", "status"} for e in reads)


async def test_the_sandbox_answers_only_the_fields_asked_for(
    sandbox: MailchimpSandbox, raw: httpx.AsyncClient
) -> None:
    """As Mailchimp does, ``fields`` names dotted paths from the answer's root, a list's items
    cut alike; a whole object asked for wins over its parts. A search asked for its exact
    matches alone leaves out the members whose address merely contains the query."""
    member_hash = sandbox.add_person("an@example.com", "An", "Dekker", ADDRESS="Kerkpad 2")
    sandbox.add_person("jan@example.com", "Jan")
    member = f"/lists/{LIST_A}/members/{member_hash}"
    one = await raw.get(member, params={"fields": "id, merge_fields.FNAME,nothing.here"})
    assert one.json() == {"id": member_hash, "merge_fields": {"FNAME": "An"}}
    whole = await raw.get(member, params={"fields": "merge_fields.FNAME,merge_fields"})
    assert whole.json()["merge_fields"]["ADDRESS"] == "Kerkpad 2"
    listed = await raw.get(f"/lists/{LIST_A}/members", params={"fields": "members.email_address"})
    assert listed.json() == {
        "members": [{"email_address": "an@example.com"}, {"email_address": "jan@example.com"}]
    }
    query = {"query": "an@example.com", "fields": "exact_matches.members.id"}
    searched = await raw.get("/search-members", params=query)
    assert searched.json() == {"exact_matches": {"members": [{"id": member_hash}]}}
    unasked = await raw.get("/search-members", params={"query": "an@example.com"})
    assert unasked.json()["full_search"]["members"]


def test_a_mapping_path_with_a_comma_is_refused(tmp_path: Path) -> None:
    """Members are read with the mapping's paths, parted by commas in ``fields``: a path
    holding one would be asked for as two, and its field never read."""
    text = (REPO_MAPPINGS / "mailchimp.toml").read_text()
    (tmp_path / "mailchimp.toml").write_text(
        text.replace('path = "merge_fields.LNAME"', 'path = "merge_fields.LNAME,FNAME"')
    )
    mapping = load_mapping(tmp_path / "mailchimp.toml")
    with pytest.raises(ConfigError) as refused:
        make_settings().check_mapping(mapping)
    assert (refused.value.file, refused.value.key) == (
        str(tmp_path / "mailchimp.toml"),
        "fields.last_name.path",
    )
    make_settings().check_mapping(load_mapping(REPO_MAPPINGS / "mailchimp.toml"))


# -- webhooks ---------------------------------------------------------------------------------


def test_webhook_secret_in_the_url_is_checked(mc: Harness, sandbox: MailchimpSandbox) -> None:
    """Only a URL carrying exactly the configured secret is accepted."""
    body = sandbox.webhook_delivery("unsubscribe", "reader1@example.com")
    verify = mc.adapter.verify_webhook
    assert verify(hook(body, sandbox.webhook_url(HOOK_URL, SECRET)), SECRET, 0)
    assert not verify(hook(body, f"{HOOK_URL}?secret=guess"), SECRET, 0)
    assert not verify(hook(body, HOOK_URL), SECRET, 0)
    assert not verify(hook(body, f"{HOOK_URL}?secret={SECRET}&secret=x"), SECRET, 0)
    assert not verify(hook(body, f"{HOOK_URL}?secret="), "", 0)


def test_a_secret_with_a_plus_or_a_slash_verifies_as_registered(mc: Harness) -> None:
    """`openssl rand -base64` gives "+" and "/". Mailchimp calls the URL as registered, but
    the query was form-decoded, "+" read as a space: such a secret never matched, Mailchimp's
    URL check got 401 and the webhook could not be saved."""
    secret = "Zq8+Hk/3wT9+aa=="
    verify = mc.adapter.verify_webhook
    assert verify(WebhookRequest("GET", f"{HOOK_URL}?secret={secret}", {}, b""), secret, 0)
    encoded = f"{HOOK_URL}?secret=Zq8%2BHk%2F3wT9%2Baa%3D%3D"  # registered percent-encoded
    assert verify(WebhookRequest("GET", encoded, {}, b""), secret, 0)
    spaced = f"{HOOK_URL}?secret=Zq8 Hk/3wT9 aa=="
    assert not verify(WebhookRequest("GET", spaced, {}, b""), secret, 0)


def test_parse_person_events_and_ignore_the_rest(mc: Harness, sandbox: MailchimpSandbox) -> None:
    """Audience events about a person become changed events, an unsubscribe and a
    subscribe the person's own choice at Mailchimp; campaigns and pings do not."""
    for event, kind in (
        ("subscribe", "opted_in"),
        ("unsubscribe", "opted_out"),
        ("profile", "changed"),
        ("cleaned", "changed"),
    ):
        (parsed,) = mc.adapter.parse_webhook(hook(sandbox.webhook_delivery(event, "a@example.com")))
        assert (parsed.kind, parsed.email) == (kind, "a@example.com")
        assert parsed.external_id == subscriber_hash("a@example.com")
        assert parsed.delivery_id.startswith("sha256:")
    moved = sandbox.webhook_delivery("upemail", "old@example.com", new_email="new@example.com")
    (parsed,) = mc.adapter.parse_webhook(hook(moved))
    assert (parsed.kind, parsed.email) == ("changed", "new@example.com")
    campaign = hook(b"type=campaign&fired_at=2025-01-24+15%3A30%3A00&data%5Bid%5D=c1")
    assert [e.kind for e in mc.adapter.parse_webhook(campaign)] == ["ignored"]
    assert mc.adapter.parse_webhook(hook(b"")) == []


def test_a_delivery_says_when_its_event_fired(mc: Harness, sandbox: MailchimpSandbox) -> None:
    """``fired_at`` is when the event happened at Mailchimp (ISO 8601): a delivery retried
    after a newer one of the member's is known for the older. Without one that reads as a
    time, none is given (the event is taken in the order it came)."""
    body = sandbox.webhook_delivery("unsubscribe", "a@example.com")
    (parsed,) = mc.adapter.parse_webhook(hook(body))
    assert parsed.occurred_at == "2025-01-24T15:30:00+00:00"
    for fired in (b"", b"gisteren"):
        odd = body.replace(b"2025-01-24+15%3A30%3A00", fired)
        (parsed,) = mc.adapter.parse_webhook(hook(odd))
        assert parsed.kind == "opted_out" and parsed.occurred_at is None


def test_same_delivery_has_the_same_id_and_another_does_not(
    mc: Harness, sandbox: MailchimpSandbox
) -> None:
    """The delivery id is the body's hash, so a retried delivery is spotted as a replay."""
    body = sandbox.webhook_delivery("profile", "a@example.com")
    first = mc.adapter.parse_webhook(hook(body))[0].delivery_id
    again = mc.adapter.parse_webhook(hook(body))[0].delivery_id
    other = mc.adapter.parse_webhook(hook(sandbox.webhook_delivery("profile", "b@example.com")))
    assert first == again != other[0].delivery_id
