"""The adapter contract, run over every registered (adapter, sandbox) pair.

Every kind in the registry must appear here (a test checks that), so a new system cannot be
added without passing the same suite: pages end and the cursor only moves forward, upsert is
idempotent, update changes only what is held and never creates anyone, erasure is idempotent
and permanent (or says honestly that it is not), and no personal data reaches the sandbox's
request log or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from adapters.registry import REGISTRY
from connector.adapter import (
    Adapter,
    OutboundRecord,
    SandboxLike,
    Subject,
    WebhookRequest,
    read_records,
)
from connector.errors import FatalRemoteError, KlantsyncError
from connector.http import RetryPolicy, SystemClient
from connector.systems import _limits
from tests.conftest import VirtualTime
from tests.strategies import JSON

#: Per kind: the base URL its sandbox serves under, and settings beyond the common ones.
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "woocommerce": ("https://shop.test", {}),
    "hubspot": ("https://crm.test", {}),
    "mailchimp": ("https://us21.api.mailchimp.test/3.0", {"list_ids": ["a1b2c3d4e5"]}),
    "pipedrive": ("https://klant.pipedrive.test/api/v2", {}),
    "shopify": ("https://klant.myshopify.test", {}),
}

CANARY = "contract.canary+privacy@voorbeeld-contract.nl"


@dataclass
class Pair:
    kind: str
    sandbox: SandboxLike
    adapter: Adapter
    client: SystemClient


def test_every_registered_kind_is_in_the_contract_suite() -> None:
    """A kind added to the registry without a row here fails this test."""
    assert set(REGISTRY) <= set(KINDS)


def _wired(
    kind: str,
    transport: httpx.AsyncBaseTransport,
    credentials: dict[str, str],
    time: VirtualTime | None = None,
) -> tuple[SystemClient, Adapter]:
    """A client and the adapter of ``kind`` over ``transport``, configured as the connector
    would. With ``time``, the vendor's rate limits apply and retries wait on it; without,
    one attempt per call and no limits (a mock answers at once)."""
    spec = REGISTRY[kind]
    base_url, extra = KINDS[kind]
    settings = spec.settings_model.model_validate(
        {
            "adapter": kind,
            "base_url": base_url,
            "mapping": "unused.toml",
            "credentials": credentials,
            **extra,
        }
    )
    config = spec.client_config(settings)
    client = SystemClient(
        kind,
        base_url,
        auth=config.auth,
        headers=config.headers,
        limits=_limits(spec, settings).rate if time else None,
        wait_hint=config.wait_hint,
        error_titles=config.error_titles,
        retry=(
            RetryPolicy(attempts=4, base_seconds=0, sleep=time.sleep)
            if time
            else RetryPolicy(attempts=1, base_seconds=0)
        ),
        transport=transport,
        clock=time.clock if time else None,
    )
    return client, spec.factory(client, settings)


@pytest.fixture(params=sorted(REGISTRY))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    kind: str = request.param
    sandbox = REGISTRY[kind].sandbox()
    client, adapter = _wired(
        kind, httpx.ASGITransport(app=sandbox.app()), sandbox.credentials(), VirtualTime()
    )
    async with client:
        yield Pair(kind, sandbox, adapter, client)


def _record(index: int, email: str | None = None) -> OutboundRecord:
    email = email or f"contract{index}@example.nl"
    fields = {
        "email": email,
        "email_address": email,
        "firstname": "Contract",
        "lastname": f"Person{index}",
        "first_name": "Contract",
        "last_name": f"Person{index}",
        "merge_fields.FNAME": "Contract",
        "merge_fields.LNAME": f"Person{index}",
    }
    return OutboundRecord(ref=f"r{index}", email=email, external_id=None, fields=fields)


def _fields_for(pair: Pair, record: OutboundRecord) -> OutboundRecord:
    """Keep only the field names this kind's shipped mapping sends."""
    from connector.demo import REPO_MAPPINGS
    from connector.mapping import load_mapping

    mapping = load_mapping(REPO_MAPPINGS / f"{pair.kind}.toml")
    allowed = {mapping.fields[name].path for name in mapping.outbound_fields}
    fields = {k: v for k, v in record.fields.items() if k in allowed}
    return OutboundRecord(record.ref, record.email, record.external_id, fields)


async def test_pull_pages_end_and_the_cursor_moves_forward(pair: Pair) -> None:
    """Pulling ends with a complete page; resuming from any cursor never repeats a page."""
    if "pull" not in pair.adapter.capabilities:
        pytest.skip(f"{pair.kind} is a destination only")
    for index in range(7):
        pair.sandbox.add_person(f"pull{index}@example.nl", "Pull", f"P{index}")
    pages = [page async for page in pair.adapter.pull(None)]
    assert pages and pages[-1].complete
    assert all(not page.complete for page in pages[:-1])
    assert sum(len(page.records) for page in pages) >= 7
    cursors = [page.cursor for page in pages[:-1]]
    assert len(set(cursors)) == len(cursors)  # never the same resume point twice


async def test_upsert_is_idempotent(pair: Pair) -> None:
    """Writing the same people twice leaves one record each, the second time an update.

    (A system that does not say whether a write was new answers ``upserted`` both times.)
    """
    if "upsert" not in pair.adapter.capabilities:
        pytest.skip(f"{pair.kind} is a source only")
    records = [_fields_for(pair, _record(i)) for i in range(3)]
    first = await pair.adapter.upsert(records)
    second = await pair.adapter.upsert(records)
    assert [r.outcome for r in first] != ["failed"] * 3
    assert all(r.outcome in ("updated", "upserted") for r in second), second
    assert ("upserted" in {r.outcome for r in first}) == ("upserted" in {r.outcome for r in second})
    for record in records:
        assert pair.sandbox.holds(record.email)


async def test_update_changes_only_what_is_held_and_creates_nobody(pair: Pair) -> None:
    """update of someone the system does not hold is ``not_held`` and creates nothing; of
    someone it holds, it corrects the field (the rectification verb)."""
    if "update" not in pair.adapter.capabilities:
        assert "upsert" not in pair.adapter.capabilities  # every destination can be rectified
        pytest.skip(f"{pair.kind} is a source only")
    record = _fields_for(pair, _record(5))
    (absent,) = await pair.adapter.update([record])
    assert absent.outcome == "not_held" and absent.note, absent
    assert not pair.sandbox.holds(record.email)
    assert not pair.sandbox.restorable(record.email)
    pair.sandbox.add_person(record.email, "Contract", "Wrong")
    fixed = record._replace(
        fields={k: str(v).replace("Person5", "Fixed") for k, v in record.fields.items()}
    )
    for _ in range(2):  # idempotent: the second call finds the record corrected already
        (result,) = await pair.adapter.update([fixed])
        assert result.outcome == "updated", result
    held = pair.sandbox.record_for(record.email)
    assert held is not None and "Fixed" in repr(held)


@pytest.mark.parametrize("orders", [False, True])
async def test_an_erasure_s_or_a_correction_s_read_finds_whom_find_finds(
    pair: Pair, orders: bool
) -> None:
    """``read_records`` (an erasure's snapshot and check, a correction's read) finds the
    person records ``find`` finds, with the mapped fields, and nothing of the person that
    only an access copy holds."""
    from connector.demo import REPO_MAPPINGS
    from connector.mapping import load_mapping

    mapping = load_mapping(REPO_MAPPINGS / f"{pair.kind}.toml")
    pair.sandbox.add_person(CANARY, "Canary", "Contract", "0612345678")
    subject = Subject(email=CANARY)
    copy = await pair.adapter.find(subject)
    read = await read_records(pair.adapter, subject, orders=orders)
    people = [mapping.record_id(r) for r in copy if r.get("type") != "order"]
    assert people and [mapping.record_id(r) for r in read] == people
    assert [mapping.inbound(r).email for r in read] == [CANARY]
    copy_only = {"notes", "activity", "associations", "subscriptions", "deals", "activities"}
    assert not copy_only & {key for record in read for key in record}


async def test_erasure_is_permanent_idempotent_and_honest(pair: Pair) -> None:
    """Erasure removes the person (or says it is pending/reversible), and a rerun finds none."""
    if "erase" not in pair.adapter.capabilities:
        pytest.skip(f"{pair.kind} cannot erase")
    pair.sandbox.add_person(CANARY, "Canary", "Contract", "0612345678")
    result = await pair.adapter.erase(Subject(email=CANARY))
    assert result.found
    assert result.endpoint and result.mode
    if result.pending:
        return  # asynchronous erasure: verification is scheduled for later, as the mode says
    assert not pair.sandbox.holds(CANARY)
    assert pair.sandbox.restorable(CANARY) == result.reversible
    again = await pair.adapter.erase(Subject(email=CANARY))
    assert not again.found


async def test_no_personal_data_in_the_request_log_or_errors(pair: Pair) -> None:
    """Writes, corrections and lookups of a canary leave its e-mail in no logged query, path or
    error."""
    if "upsert" in pair.adapter.capabilities:
        await pair.adapter.upsert([_fields_for(pair, _record(9, CANARY))])
    if "update" in pair.adapter.capabilities:
        await pair.adapter.update([_fields_for(pair, _record(9, CANARY))])
    await pair.adapter.find(Subject(email=CANARY))
    for entry in pair.sandbox.log.entries:  # type: ignore[attr-defined]
        assert CANARY not in entry.path and CANARY not in str(entry.query)
    pair.client._client.headers["authorization"] = "Bearer wrong"
    for key in list(pair.client._client.headers):
        if key.lower() in ("x-api-token", "x-shopify-access-token"):
            pair.client._client.headers[key] = "wrong"
    pair.client._client.auth = httpx.BasicAuth("wrong", "wrong")
    with pytest.raises(FatalRemoteError) as info:
        await pair.adapter.find(Subject(email=CANARY))
    assert CANARY not in str(info.value) and "wrong" not in str(info.value)


# -- what a stranger may send --------------------------------------------------------------------

#: Keys the webhook parsers look at, so generated bodies reach past the first check.
_KEYS = st.sampled_from(
    [
        "id",
        "email",
        "customer",
        "customer_id",
        "billing",
        "phone",
        "type",
        "data",
        "event",
        "meta",
        "current",
        "previous",
        "objectId",
        "subscriptionType",
        "shop_id",
        "orders_to_redact",
        "admin_graphql_api_id",
        "fired_at",
        "action",
        "entity",
        "list_id",
        "data_request",
    ]
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(_KEYS, JSON, max_size=6).map(lambda value: json.dumps(value).encode()),
    st.lists(st.dictionaries(_KEYS, JSON, max_size=6), max_size=3).map(
        lambda value: json.dumps(value).encode()
    ),
    st.dictionaries(
        st.sampled_from(["type", "data[email]", "data[id]", "fired_at"]), st.text(max_size=20)
    ).map(lambda form: urlencode(form).encode()),
)
_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "x-wc-webhook-topic",
            "x-shopify-topic",
            "x-wc-webhook-delivery-id",
            "x-shopify-webhook-id",
            "content-type",
            "x-wc-webhook-signature",
            "x-shopify-hmac-sha256",
            "authorization",
            "x-hubspot-signature-v3",
            "x-hubspot-request-timestamp",
        ]
    ),
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "customer.created",
                "customer.updated",
                "customer.deleted",
                "order.updated",
                "customers/redact",
                "customers/data_request",
                "shop/redact",
                "customers/update",
                "application/json",
                "application/x-www-form-urlencoded",
                # Digits str.isdigit() takes and int() does not (a timestamp, an id).
                "\u00b2",
                "1700000000\u00b9",
            ]
        ),
    ),
    max_size=5,
)


async def test_a_webhook_parser_never_fails_on_what_a_stranger_sends(pair: Pair) -> None:
    """Verification turns a stranger away; parsing a signed but odd delivery (a vendor's
    change of format, a field of another type) must still end in events or none, never in
    an exception that fails the delivery over and over."""
    if "webhooks" not in pair.adapter.capabilities:
        pytest.skip(f"{pair.kind} takes no webhooks")

    @settings_(
        max_examples=150,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(body=_BODIES, headers=_HEADERS)
    def parses(body: bytes, headers: dict[str, str]) -> None:
        request = WebhookRequest(
            method="POST", url="https://klantsync.example.nl/webhooks/x", headers=headers, body=body
        )
        assert pair.adapter.verify_webhook(request, "secret", 1_800_000_000.0) in (True, False)
        events = pair.adapter.parse_webhook(request)
        assert isinstance(events, list)

    parses()


#: A body a parser could not read to its end: nested deeper than Python's recursion goes.
_TOO_DEEP = (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("topic", ["customer.updated", "customers/redact", "customers/update"])
async def test_a_webhook_body_nested_too_deep_to_read_is_read_as_no_json(
    pair: Pair, topic: str
) -> None:
    """A signed body nested deeper than the JSON parser goes made it raise RecursionError,
    which is no ValueError: the delivery was answered 500, and delivered again and again.
    It is read as a body that is not JSON (events or none, as each adapter says)."""
    if "webhooks" not in pair.adapter.capabilities:
        pytest.skip(f"{pair.kind} takes no webhooks")
    headers = {"x-wc-webhook-topic": topic, "x-shopify-topic": topic}
    for body in _TOO_DEEP:
        request = WebhookRequest(
            method="POST", url="https://klantsync.example.nl/webhooks/x", headers=headers, body=body
        )
        not_json = WebhookRequest(method="POST", url=request.url, headers=headers, body=b"not json")
        kinds = [event.kind for event in pair.adapter.parse_webhook(request)]
        assert kinds == [event.kind for event in pair.adapter.parse_webhook(not_json)]


_STATUSES = st.sampled_from([200, 200, 200, 201, 204, 207, 400, 404, 409, 422])
#: JSON of any shape, and what a proxy or a CMS in maintenance mode answers instead.
_ANSWER_BODIES = JSON.map(lambda value: json.dumps(value).encode()) | st.sampled_from(
    [b"", b"<html><h1>Briefly unavailable for scheduled maintenance</h1></html>", b"null", b"{"]
)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
async def test_any_answer_a_vendor_gives_is_a_result_or_a_classified_error(kind: str) -> None:
    """Whatever a vendor answers (a field of another type, an object where a list was, a
    status its documentation does not list), every call ends in a result or in one of the
    error tree's errors, which the engine knows what to do with; never a TypeError or a
    KeyError, which would stop the sync as a bug."""
    credentials = REGISTRY[kind].sandbox().credentials()
    records = [_record(1), _record(2)]
    subject = Subject(email="contract1@example.nl", external_id="12")

    @settings_(
        max_examples=60,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(answers=st.lists(st.tuples(_STATUSES, _ANSWER_BODIES), min_size=1, max_size=6))
    def answers_anything(answers: list[tuple[int, bytes]]) -> None:
        calls = iter(answers * 50)

        def answer(request: httpx.Request) -> httpx.Response:
            status, body = next(calls)
            return httpx.Response(status, content=body)

        async def every_call() -> None:
            client, adapter = _wired(kind, httpx.MockTransport(answer), credentials)
            async with client:
                for call in _calls(adapter, records, subject):
                    with contextlib.suppress(KlantsyncError):
                        await call

        asyncio.run(every_call())

    await asyncio.to_thread(answers_anything)


def _calls(adapter: Adapter, records: list[OutboundRecord], subject: Subject) -> list[Any]:
    async def pull() -> None:
        async for _page in adapter.pull(None):
            pass

    calls: list[Any] = []
    if "pull" in adapter.capabilities:
        calls.append(pull())
    if "upsert" in adapter.capabilities:
        calls.append(adapter.upsert(records))
    if "update" in adapter.capabilities:
        calls.append(adapter.update(records))
    calls += [
        adapter.find(subject),
        read_records(adapter, subject, orders=True),
        adapter.erase(subject),
    ]
    return calls


@pytest.mark.parametrize("kind", sorted(REGISTRY))
@pytest.mark.parametrize("garbage", [b"<html>maintenance</html>", b"{}", b"[]", b""])
async def test_find_never_reports_nobody_held_from_an_answer_it_could_not_read(
    kind: str, garbage: bytes
) -> None:
    """An erasure's verification reads each system again and certifies "absent" from what
    it finds (``read_records``, as its snapshot; an access copy reads ``find``): an answer
    it cannot read (a maintenance page, an empty object) must be an error, never an empty
    list, or the receipt would certify what nobody checked."""
    client, adapter = _wired(
        kind,
        httpx.MockTransport(lambda _request: httpx.Response(200, content=garbage)),
        REGISTRY[kind].sandbox().credentials(),
    )
    subject = Subject(email="contract1@example.nl", external_id="12")
    async with client:
        with pytest.raises(KlantsyncError):
            await adapter.find(subject)
        with pytest.raises(KlantsyncError):
            await read_records(adapter, subject, orders=True)
