"""The WooCommerce adapter against its sandbox, in process (no network, no real sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

import adapters.woocommerce.adapter as woocommerce_module
import adapters.woocommerce.sandbox as sandbox_module
from adapters.woocommerce import SPEC, WooCommerceAdapter, WooCommerceSandbox, WooCommerceSettings
from adapters.woocommerce.adapter import _refused_delete, retry_after, woocommerce_client_config
from adapters.woocommerce.payloads import ANONYMOUS_ORDER, code_only, valid_email
from adapters.woocommerce.shapes import wc_datetime
from adapters.woocommerce.store import ShopStore
from adapters.woocommerce.synthetic import _EPOCH, synthetic_customer
from adapters.woocommerce.webhooks import webhook_signature
from connector.adapter import Adapter, OutboundRecord, Page, Subject, WebhookRequest, body_key
from connector.demo import REPO_MAPPINGS
from connector.errors import FatalRemoteError, RecordError, RetryableError
from connector.http import RetryPolicy, SystemClient
from connector.mapping import load_mapping
from connector.others import LEFT_OUT
from connector.ratelimit import RateLimit
from connector.settings import RateLimitSettings
from tests.conftest import FakeClock

BASE_URL = "https://shop.test"
API = "/wp-json/wc/v3"
SECRET = "wc-webhook-secret"


@dataclass
class Harness:
    """A sandbox, the adapter wired to it, and what the client slept."""

    sandbox: WooCommerceSandbox
    adapter: WooCommerceAdapter
    client: SystemClient
    sleeps: list[float] = field(default_factory=list)


def settings(**overrides: object) -> WooCommerceSettings:
    values: dict[str, object] = {
        "adapter": "woocommerce",
        "base_url": BASE_URL,
        "mapping": Path("mappings/woocommerce.toml"),
        "credentials": {"consumer_key": "ck_sandbox", "consumer_secret": "cs_sandbox"},
    }
    values.update(overrides)
    return WooCommerceSettings.model_validate(values)


async def make_harness(
    sandbox: WooCommerceSandbox,
    *,
    key: str = "ck_sandbox",
    secret: str = "cs_sandbox",  # noqa: S107 - the sandbox's well-known fake secret
    attempts: int = 4,
    config: WooCommerceSettings | None = None,
    clock: FakeClock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Harness:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if clock is not None:
            clock.now += seconds

    client = SystemClient(
        system="shop",
        base_url=BASE_URL,
        auth=(key, secret),
        transport=transport or httpx.ASGITransport(app=sandbox.app()),
        wait_hint=retry_after,
        retry=RetryPolicy(attempts=attempts, base_seconds=0, sleep=fake_sleep),
    )
    adapter = WooCommerceAdapter(client, config or settings())
    return Harness(sandbox, adapter, client, sleeps)


class Answers(httpx.AsyncBaseTransport):
    """The sandbox's transport, keeping each answer's JSON by its request's method and path."""

    def __init__(self, sandbox: WooCommerceSandbox) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app())
        self.answers: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        self.answers.append((request.method, request.url.path, json.loads(content or b"null")))
        return httpx.Response(response.status_code, headers=response.headers, content=content)


@pytest.fixture
def sandbox() -> WooCommerceSandbox:
    return WooCommerceSandbox()


@pytest.fixture
async def harness(sandbox: WooCommerceSandbox) -> AsyncIterator[Harness]:
    built = await make_harness(sandbox)
    yield built
    await built.client.aclose()


async def raw_client(sandbox: WooCommerceSandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        auth=("ck_sandbox", "cs_sandbox"),
    )


async def collect(adapter: WooCommerceAdapter, cursor: str | None) -> list[Page]:
    return [page async for page in adapter.pull(cursor)]


def record(
    ref: str, email: str, external_id: str | None = None, **fields: object
) -> OutboundRecord:
    return OutboundRecord(ref=ref, email=email, external_id=external_id, fields=fields)


# -- contract and configuration ------------------------------------------------------------


def test_adapter_meets_the_protocol_and_spec_wires_it(harness: Harness) -> None:
    """The adapter satisfies the Adapter protocol and the spec's parts fit together."""
    assert isinstance(harness.adapter, Adapter)
    assert SPEC.kind == harness.adapter.kind == "woocommerce"
    assert SPEC.settings_model is WooCommerceSettings
    assert SPEC.sandbox().credentials() == {
        "consumer_key": "ck_sandbox",
        "consumer_secret": "cs_sandbox",
    }


def test_limits_and_client_config_follow_settings() -> None:
    """Batch and page are 100; a rate limit exists only when configured; auth is basic."""
    plain = SPEC.limits(settings())
    assert (plain.batch_size, plain.page_size, plain.rate, plain.max_concurrency) == (
        100,
        100,
        {},
        4,
    )
    limited = SPEC.limits(
        settings(rate_limit=RateLimitSettings(requests=5, per_seconds=1), max_concurrency=2)
    )
    assert limited.rate == {"default": RateLimit(5, 1)} and limited.max_concurrency == 2
    config = woocommerce_client_config(settings())
    assert config.auth == ("ck_sandbox", "cs_sandbox") and config.wait_hint is retry_after
    assert settings().role == "all" and settings().anonymise_orders is True


def test_settings_take_a_role_a_plugin_adds_and_refuse_what_is_no_role_name() -> None:
    """wc/v3 lists any role the site registered, so a plugin's role is taken by name; what
    WordPress could never name a role is a configuration error."""
    assert settings(role="wholesale_customer").role == "wholesale_customer"
    assert settings(role=["customer", "b2b-klant"]).role == ("customer", "b2b-klant")
    for wrong in ("Customer", "klant zakelijk", ""):
        with pytest.raises(ValueError, match="role name"):
            settings(role=wrong)


@pytest.mark.parametrize(
    ("role", "said"),
    [
        ([], "empty list"),
        (["customer", "Customers"], "item 2 of the list is not a role"),
        (["all", "customer"], "item 1 of the list is not a role"),
        (7, "must be"),
    ],
    ids=["empty", "typo", "all-in-a-list", "number"],
)
def test_settings_refuse_a_list_of_roles_that_lists_nobody_or_names_no_role(
    role: object, said: str
) -> None:
    """An empty list would pull nobody; a typo or "all" among roles is a mistake."""
    with pytest.raises(ValueError, match=said):
        settings(role=role)


def test_settings_take_several_roles_and_one_listed_alone_as_that_role() -> None:
    assert settings(role=["customer", "subscriber", "customer"]).role == ("customer", "subscriber")
    assert settings(role=["subscriber"]).role == "subscriber"
    assert settings(role="shop_manager").role == "shop_manager"


def test_retry_after_reads_seconds_or_an_http_date() -> None:
    """Retry-After seconds become the wait hint, and so does an HTTP-date (a host's WAF may
    send either), read against the answer's ``Date``; one already past is no wait; nothing
    gives None."""
    assert retry_after(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    dated = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:29:00 GMT",
    }
    assert retry_after(httpx.Response(429, headers=dated)) == 60.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(httpx.Response(429, headers={"Retry-After": past})) == 0.0
    assert retry_after(httpx.Response(429)) is None


# -- pull ----------------------------------------------------------------------------------


async def test_pull_pages_end_and_cursor_resumes_after_the_page(harness: Harness) -> None:
    """250 customers come in three pages, the last complete; a cursor resumes after its page.

    Each page after the first starts two customers early (REREAD): those were delivered,
    and are known by their ids and dropped."""
    harness.sandbox.seed_synthetic(250, seed=1)
    pages = await collect(harness.adapter, None)
    assert [len(p.records) for p in pages] == [100, 98, 52]
    assert [p.complete for p in pages] == [False, False, True]
    assert pages[-1].cursor is None and all(p.cursor for p in pages[:-1])
    ids = [r["id"] for p in pages for r in p.records]
    assert ids == list(range(1, 251))
    resumed = await collect(harness.adapter, pages[0].cursor)
    assert resumed[0].records[0]["id"] == 101
    assert [len(p.records) for p in resumed] == [98, 52]
    listed = [e for e in harness.sandbox.log.entries if e.path == f"{API}/customers"]
    assert [e.query["offset"] for e in listed[:3]] == ["0", "98", "196"]
    assert {e.query["orderby"] for e in listed} == {"id"}
    assert {e.query["per_page"] for e in listed} == {"100"}
    assert {e.query["role"] for e in listed} == {"all"}


async def test_a_pull_asks_the_shop_only_for_what_the_mapping_reads(harness: Harness) -> None:
    """Told the fields its mapping reads, a pull asks for them and the id with ``_fields``,
    and the customers come without the rest (username, avatar, shipping, links)."""
    harness.sandbox.seed_synthetic(3, seed=1)
    harness.adapter.ask_only_for(frozenset({"email", "billing", "meta_data"}))
    (page,) = await collect(harness.adapter, None)
    assert [sorted(r) for r in page.records] == [["billing", "email", "id", "meta_data"]] * 3
    (listed,) = [e for e in harness.sandbox.log.entries if e.path == f"{API}/customers"]
    assert listed.query["_fields"] == "billing,email,id,meta_data"


async def test_a_pull_not_told_what_to_ask_for_reads_whole_customers(harness: Harness) -> None:
    harness.sandbox.seed_synthetic(1, seed=1)
    (page,) = await collect(harness.adapter, None)
    assert {"username", "avatar_url", "shipping", "_links"} <= set(page.records[0])
    (listed,) = [e for e in harness.sandbox.log.entries if e.path == f"{API}/customers"]
    assert "_fields" not in listed.query


@pytest.mark.parametrize(
    "params",
    [
        {"_fields": "id email"},
        {"_fields": "id,,email "},
        [("_fields[]", "id"), ("_fields[]", "email")],
    ],
    ids=["spaces", "commas", "array"],
)
async def test_the_sandbox_reads_a_fields_list_as_wordpress_s_wp_parse_list_does(
    sandbox: WooCommerceSandbox, params: Any
) -> None:
    """``_fields`` is split on commas and spaces alike, or given as ``_fields[]``."""
    sandbox.add_person("anna@voorbeeld.nl", "Anna", "Jansen")
    async with await raw_client(sandbox) as client:
        (item,) = (await client.get(f"{API}/customers", params=params)).json()
    assert sorted(item) == ["email", "id"]


async def test_whether_the_shop_honours_fields_is_told_by_one_customer(
    harness: Harness,
) -> None:
    assert await harness.adapter.fields_honoured() is None  # nobody to tell by
    harness.sandbox.add_person("anna@voorbeeld.nl", "Anna", "Jansen")
    assert await harness.adapter.fields_honoured() is True
    harness.sandbox.honours_fields = False
    assert await harness.adapter.fields_honoured() is False


async def test_a_targeted_sync_and_a_write_s_lookup_ask_for_no_more_than_they_read(
    harness: Harness,
) -> None:
    """A targeted sync (a webhook, ``resync --email``) reads what a pull asks for and the
    role :meth:`pull_includes` reads, by e-mail and by the identity map's id alike; a
    write's lookup of who holds an address asks for the id and the address it compares
    alone. Access (``find``) still
    reads the whole customer."""
    harness.sandbox.seed_synthetic(2, seed=1)
    first = harness.sandbox.store.get(1)
    assert first is not None
    harness.adapter.ask_only_for(frozenset({"email", "billing"}))
    (person,) = await harness.adapter.find_people(Subject(email=first["email"]))
    assert sorted(person) == ["billing", "email", "id", "role"]
    (by_id,) = await harness.adapter.find_people(Subject(email="moved@example.nl", external_id="2"))
    assert sorted(by_id) == ["billing", "email", "id", "role"]
    await harness.adapter.upsert([record("r1", first["email"], first_name="Anna")])
    (whole, *_orders) = await harness.adapter.find(Subject(email=first["email"]))
    assert {"username", "shipping"} <= set(whole)
    gets = [e for e in harness.sandbox.log.entries if e.method == "GET"]
    people = "billing,email,id,role"
    # By e-mail; by e-mail (nobody) then by id; the write's lookup; access, whole.
    assert [(e.path, e.query.get("_fields")) for e in gets[:5]] == [
        (f"{API}/customers", people),
        (f"{API}/customers", people),
        (f"{API}/customers/2", people),
        (f"{API}/customers", "email,id"),
        (f"{API}/customers", None),
    ]


async def test_the_sandbox_cuts_answers_by_fields_as_wordpress_does(
    sandbox: WooCommerceSandbox,
) -> None:
    """Nested keys keep part of an object (WordPress 5.3 on); an object asked for whole
    wins over its parts; a list cut by a name keeps nothing (PHP's array_intersect_key);
    spaces around names are trimmed; a single customer is cut like a list's items."""
    sandbox.seed_synthetic(1, seed=1)
    async with await raw_client(sandbox) as client:
        listed = await client.get(
            f"{API}/customers", params={"_fields": " id, billing.phone,billing.city ,meta_data.key"}
        )
        whole = await client.get(f"{API}/customers/1", params={"_fields": "billing.city,billing"})
        plain = await client.get(f"{API}/customers/1")
    (item,) = listed.json()
    assert sorted(item) == ["billing", "id", "meta_data"]
    assert sorted(item["billing"]) == ["city", "phone"] and item["meta_data"] == []
    assert sorted(whole.json()) == ["billing"]
    assert whole.json()["billing"] == plain.json()["billing"]
    assert "_links" in plain.json()


async def test_pull_reads_every_customer_when_a_deletion_moves_them_up(harness: Harness) -> None:
    """A customer deleted in a page already read moves every later one up a place. The
    next page still starts with the first customer not delivered (it passed over 101
    before), and nothing delivered comes again."""
    harness.sandbox.seed_synthetic(250, seed=1)
    first = await anext(harness.adapter.pull(None))
    harness.sandbox.store.delete(5)
    rest = await collect(harness.adapter, first.cursor)
    ids = [r["id"] for p in rest for r in p.records]
    assert ids == list(range(101, 251))
    assert rest[-1].complete


async def test_pull_reads_every_customer_when_many_are_deleted_during_the_scan(
    harness: Harness,
) -> None:
    """More deleted between two pages than the pages overlap: X-WP-Total dropped by as
    many, and the page is read again from that far back."""
    harness.sandbox.seed_synthetic(250, seed=1)
    pull = harness.adapter.pull(None)
    first = await anext(pull)
    for customer_id in range(10, 20):
        harness.sandbox.store.delete(customer_id)
    rest = [page async for page in pull]
    ids = [r["id"] for p in [first, *rest] for r in p.records]
    assert ids == list(range(1, 251))  # the deleted ones were in the first page, delivered
    assert rest[-1].complete
    listed = [e for e in harness.sandbox.log.entries if e.path == f"{API}/customers"]
    assert [e.query["offset"] for e in listed[:3]] == ["0", "98", "88"]  # read again from 88


def _staff_and_customers(sandbox: WooCommerceSandbox) -> dict[str, list[int]]:
    """Customers, subscribers and staff, a run of staff filling a page of three whole."""
    roles = [
        *("customer", "administrator", "subscriber"),
        *("shop_manager", "administrator", "editor"),
        *("administrator", "subscriber", "customer"),
        *("customer", "subscriber", "shop_manager"),
        "customer",
    ]
    held: dict[str, list[int]] = {}
    for n, role in enumerate(roles):
        customer_id = sandbox.add_person(f"user{n}@voorbeeld.nl", f"U{n}", role=role)
        held.setdefault(role, []).append(int(customer_id))
    return held


async def test_a_pull_of_several_roles_lists_all_users_and_keeps_those_roles_alone(
    sandbox: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wc/v3 lists one role per call, or all: several roles are listed as all, with the role
    asked for, and the others left out. A page of staff alone is neither the last page nor
    read again; a cursor resumes where its page ended, passing over and repeating nobody."""
    monkeypatch.setattr(woocommerce_module, "PAGE_SIZE", 3)
    held = _staff_and_customers(sandbox)
    wanted = sorted(held["customer"] + held["subscriber"])
    harness = await make_harness(sandbox, config=settings(role=["customer", "subscriber"]))
    harness.adapter.ask_only_for(frozenset({"email", "billing"}))
    pages = await collect(harness.adapter, None)
    assert [r["id"] for p in pages for r in p.records] == wanted
    assert {r["role"] for p in pages for r in p.records} == {"customer", "subscriber"}
    assert [p.complete for p in pages] == [False] * (len(pages) - 1) + [True]
    assert [len(p.records) for p in pages][1] == 0  # the page of staff, and the scan went on
    listed = [e for e in sandbox.log.entries if e.path == f"{API}/customers"]
    assert {e.query["role"] for e in listed} == {"all"}
    assert {e.query["_fields"] for e in listed} == {"billing,email,id,role"}
    for n, page in enumerate(pages[:-1]):
        resumed = await collect(harness.adapter, page.cursor)
        after = [r["id"] for p in pages[n + 1 :] for r in p.records]
        assert [r["id"] for p in resumed for r in p.records] == after
    await harness.client.aclose()


async def test_a_pull_of_several_roles_keeps_up_with_deletions_as_a_pull_of_all_does(
    sandbox: WooCommerceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff deleted in a page already read move the rest up, as customers do: the scan
    reads back as far, and passes over no customer after them."""
    monkeypatch.setattr(woocommerce_module, "PAGE_SIZE", 3)
    held = _staff_and_customers(sandbox)
    harness = await make_harness(sandbox, config=settings(role=["customer", "subscriber"]))
    pull = harness.adapter.pull(None)
    first = await anext(pull)
    for staff in held["administrator"][:1] + held["shop_manager"][:1]:
        sandbox.store.delete(staff)
    rest = [page async for page in pull]
    ids = [r["id"] for p in [first, *rest] for r in p.records]
    assert ids == sorted(held["customer"] + held["subscriber"])
    # Read in pages of three, the deletions falling between two of them: in one page of
    # everyone the deletions would come after the whole scan and prove nothing.
    assert not first.complete and rest
    listed = [e for e in sandbox.log.entries if e.path == f"{API}/customers"]
    assert {e.query["per_page"] for e in listed} == {"3"}
    # The page after them went back past the usual overlap (offset 1) to the list's
    # start, as far as X-WP-Total dropped by the two deleted.
    assert [e.query["offset"] for e in listed][:3] == ["0", "1", "0"]
    await harness.client.aclose()


async def test_pull_includes_those_of_the_roles_listed_alone(sandbox: WooCommerceSandbox) -> None:
    """What a targeted sync and a webhook go by: the roles listed, not staff."""
    harness = await make_harness(sandbox, config=settings(role=["customer", "subscriber"]))
    includes = harness.adapter.pull_includes
    assert includes({"role": "customer"}) and includes({"role": "subscriber"})
    assert not includes({"role": "administrator"}) and not includes({"role": "shop_manager"})
    assert not includes({"id": 3})
    await harness.client.aclose()


async def test_pull_of_an_empty_shop_is_one_complete_page(harness: Harness) -> None:
    """An empty shop yields a single empty page marked complete."""
    pages = await collect(harness.adapter, None)
    assert pages == [Page(records=[], cursor=None, complete=True)]


async def test_pull_stops_when_the_shop_ignores_the_page_parameter() -> None:
    """A shop that serves the same page again makes the pull fail instead of looping."""

    def same_page(request: httpx.Request) -> httpx.Response:
        body = [{"id": i, "email": f"x{i}@example.com"} for i in range(1, 101)]
        return httpx.Response(200, json=body, headers={"X-WP-TotalPages": "9"})

    async with SystemClient(
        system="shop", base_url=BASE_URL, transport=httpx.MockTransport(same_page)
    ) as client:
        adapter = WooCommerceAdapter(client, settings())
        with pytest.raises(FatalRemoteError, match="page repeated"):
            await collect(adapter, None)


async def test_a_shop_answering_a_page_that_is_not_json_is_a_retryable_error() -> None:
    """WordPress in maintenance mode answers 200 with an HTML page, and a plugin's PHP
    notice can come before the JSON: the pull and an erasure's lookups say so as a retryable
    error naming the path, and an erasure never reads such an answer as "nobody held"."""

    def maintenance(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html><h1>Briefly unavailable</h1></html>")

    def not_a_list(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": "rest_no_route"})

    async with SystemClient(
        system="shop", base_url=BASE_URL, transport=httpx.MockTransport(maintenance)
    ) as client:
        adapter = WooCommerceAdapter(client, settings())
        with pytest.raises(RetryableError, match="customers -> 200 \\(not JSON\\)"):
            await collect(adapter, None)
        with pytest.raises(RetryableError, match="not JSON"):
            await adapter.erase(Subject(email="someone@example.nl"))
    async with SystemClient(
        system="shop", base_url=BASE_URL, transport=httpx.MockTransport(not_a_list)
    ) as client:
        adapter = WooCommerceAdapter(client, settings())
        with pytest.raises(FatalRemoteError, match="not a list"):
            await adapter.find(Subject(email="someone@example.nl"))


async def test_synthetic_million_is_seeded_fast_and_pages_right(harness: Harness) -> None:
    """A million generated customers page with the right ids at the start and near the end."""
    harness.sandbox.seed_synthetic(1_000_000, seed=3)
    async with await raw_client(harness.sandbox) as http:
        params = {"orderby": "id", "order": "asc", "per_page": 100, "role": "all"}
        first = await http.get(f"{API}/customers", params={**params, "page": 1})
        late = await http.get(f"{API}/customers", params={**params, "page": 9_999})
    assert first.headers["X-WP-Total"] == "1000000"
    assert first.headers["X-WP-TotalPages"] == "10000"
    assert [c["id"] for c in first.json()] == list(range(1, 101))
    assert [c["id"] for c in late.json()] == list(range(999_801, 999_901))
    assert 'rel="next"' in late.headers["Link"] and 'rel="prev"' in late.headers["Link"]
    # A cursor of an earlier version names the page; it resumes where that page begins.
    last = await collect(harness.adapter, json.dumps({"page": 10_000, "after": 999_900}))
    assert last[-1].complete
    assert [r["id"] for p in last for r in p.records] == list(range(999_901, 1_000_001))
    assert harness.sandbox.store.block is not None and not harness.sandbox.store.block.overrides


async def test_synthetic_customers_carry_fields_that_must_not_flow(
    sandbox: WooCommerceSandbox,
) -> None:
    """Generated customers hold a date of birth, an IP address, a note, NL phones and country."""
    sandbox.seed_synthetic(10, seed=0)
    customer = sandbox.store.get(4)
    assert customer is not None
    meta = {m["key"]: m["value"] for m in customer["meta_data"]}
    assert {"date_of_birth", "ip_address"} <= set(meta)
    assert "customer_note" in customer
    assert customer["billing"]["phone"].startswith("06 ")
    assert customer["billing"]["country"] == "NL"
    assert sandbox.holds(customer["email"]) and sandbox.record_for(customer["email"]) == customer
    assert WooCommerceSandbox().store is not sandbox.store
    again = WooCommerceSandbox()
    again.seed_synthetic(10, seed=0)
    assert again.store.get(4) == customer


async def test_the_sandbox_writes_meta_data_as_woocommerce_does_repeated_keys_and_all(
    sandbox: WooCommerceSandbox,
) -> None:
    """A customer's meta data is a list in which a key may repeat (plugins add entries so).
    WooCommerce writes an entry given by key alone over the first entry with that key and
    deletes the others with it, adds one given with an id it does not hold, and deletes one
    given a null value (WC_Data::update_meta_data, then save). The mapping reads the first
    entry with a key, as WooCommerce's get_meta does."""
    mapping = load_mapping(REPO_MAPPINGS / "woocommerce.toml")
    opt_in = [{"key": "marketing_opt_in", "value": v} for v in ("no", "yes")]
    customer_id = sandbox.add_person(
        "an@example.com", meta_data=[*opt_in, {"key": "vip", "value": "1"}]
    )
    before = sandbox.record_for("an@example.com")
    assert before is not None
    assert [(m["key"], m["value"]) for m in before["meta_data"]][:2] == [
        ("marketing_opt_in", "no"),
        ("marketing_opt_in", "yes"),
    ]
    assert mapping.inbound(before)["marketing_consent"] is False
    written = [
        {"key": "marketing_opt_in", "value": "yes"},
        {"id": 99_999, "key": "source", "value": "beurs"},
        {"key": "vip", "value": None},
    ]
    async with await raw_client(sandbox) as client:
        answer = await client.post(
            f"{API}/customers/batch",
            json={"update": [{"id": int(customer_id), "meta_data": written}]},
        )
    assert answer.status_code == 200
    after = sandbox.record_for("an@example.com")
    assert after is not None
    assert [(m["key"], m["value"]) for m in after["meta_data"]] == [
        ("marketing_opt_in", "yes"),
        ("source", "beurs"),
    ]
    assert after["meta_data"][0]["id"] == before["meta_data"][0]["id"]
    assert mapping.inbound(after)["marketing_consent"] is True


async def test_the_sandbox_empties_a_customer_s_field_sent_empty_and_keeps_one_sent_null(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce sets a customer's name and address keys that PHP's ``isset`` finds in the
    request (``update_customer_meta_fields``): "" empties one, and a null, which isset passes
    over, leaves it as it was (unlike an order's update, where a null empties)."""
    customer_id = sandbox.add_person("null@example.com", "Nel", "Null", phone="0644444444")
    update = {
        "id": int(customer_id),
        "last_name": None,
        "first_name": "",
        "billing": {"phone": None, "city": ""},
    }
    async with await raw_client(sandbox) as client:
        answer = await client.post(f"{API}/customers/batch", json={"update": [update]})
    assert answer.status_code == 200 and answer.json()["update"][0]["id"] == int(customer_id)
    customer = sandbox.record_for("null@example.com")
    assert customer is not None
    assert customer["last_name"] == "Null" and customer["first_name"] == ""
    assert customer["billing"]["phone"] == "0644444444" and customer["billing"]["city"] == ""


async def test_sandbox_rejects_per_page_over_100(sandbox: WooCommerceSandbox) -> None:
    """per_page above 100 is a 400 rest_invalid_param, as WordPress validates it."""
    async with await raw_client(sandbox) as http:
        response = await http.get(f"{API}/customers", params={"per_page": 101})
        zero = await http.get(f"{API}/customers", params={"page": 0})
    assert response.status_code == 400 and response.json()["code"] == "rest_invalid_param"
    assert zero.status_code == 400


# -- upsert --------------------------------------------------------------------------------


async def test_upsert_creates_then_updates_without_duplicates(harness: Harness) -> None:
    """Upserting the same e-mail twice creates once, then updates the same customer."""
    first = await harness.adapter.upsert(
        [record("r1", "nieuw@example.com", first_name="Nina", **{"billing.phone": "06 11112222"})]
    )
    assert first[0].outcome == "created" and first[0].external_id
    second = await harness.adapter.upsert(
        [record("r1", "nieuw@example.com", first_name="Nienke", **{"billing.country": "NL"})]
    )
    assert second[0].outcome == "updated" and second[0].external_id == first[0].external_id
    stored = harness.sandbox.record_for("nieuw@example.com")
    assert stored is not None
    assert stored["first_name"] == "Nienke" and stored["billing"]["phone"] == "06 11112222"
    assert stored["billing"]["country"] == "NL"
    assert len(harness.sandbox.store.customers) == 1
    names = harness.sandbox.log.property_names()
    # The name goes to the billing address too (the copy invoices and checkout use).
    expected = {"email", "first_name", "billing.first_name", "billing.phone", "billing.country"}
    assert expected | {"id"} == names


async def test_upsert_with_external_id_updates_without_lookup(harness: Harness) -> None:
    """A known external id is updated directly, with no e-mail lookup."""
    customer_id = harness.sandbox.add_person("bekend@example.com", "Bo", "Bekend")
    harness.sandbox.log.clear()
    (result,) = await harness.adapter.upsert(
        [record("r", "bekend@example.com", customer_id, last_name="Anders")]
    )
    assert result.outcome == "updated" and result.external_id == customer_id
    assert [e.method for e in harness.sandbox.log.entries] == ["POST"]


async def test_an_update_leaves_a_customer_known_as_another_subject_s(
    harness: Harness,
) -> None:
    """Found by e-mail, a customer the connector knows as another subject's (``spare``) is
    not written: the correction holds nothing of the person's there."""
    customer_id = harness.sandbox.add_person("ander@example.com", "Bo", "Eigen")
    fix = record("r", "ander@example.com", last_name="Anders")._replace(
        spare=frozenset({customer_id})
    )
    (result,) = await harness.adapter.update([fix])
    assert result.outcome == "not_held"
    held = harness.sandbox.record_for("ander@example.com")
    assert held is not None and held["last_name"] == "Eigen"


async def test_an_update_of_a_customer_stored_with_capitals_is_not_refused(
    harness: Harness,
) -> None:
    """WooCommerce refuses an update whose e-mail exists and is not byte for byte the
    customer's own (update_item: email_exists, then !==): the connector's lower-cased
    address against a stored "Jan.Jansen@Example.com" was refused at every sync. The item
    goes again without the e-mail, which is theirs already; a raw update still is refused."""
    customer_id = harness.sandbox.add_person("Jan.Jansen@Example.com", "Jan", "Jansen")
    async with await raw_client(harness.sandbox) as client:
        response = await client.put(
            f"{API}/customers/{customer_id}", json={"email": "jan.jansen@example.com"}
        )
    assert response.json()["code"] == "woocommerce_rest_customer_invalid_email"
    # As a sync sends it: the mapped e-mail among the fields (mappings/woocommerce.toml).
    sent = record("r", "jan.jansen@example.com", customer_id, last_name="Anders")
    sent = sent._replace(fields={**sent.fields, "email": "jan.jansen@example.com"})
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated" and result.external_id == customer_id
    stored = harness.sandbox.store.get(int(customer_id))
    assert stored is not None and stored["last_name"] == "Anders"
    assert stored["email"] == "Jan.Jansen@Example.com"


async def test_a_refused_e_mail_is_checked_against_the_customer_s_id_and_e_mail_alone(
    harness: Harness,
) -> None:
    """The check of an update refused for its e-mail (the customer stored with capitals)
    asks the shop for each customer's id and e-mail (``_fields``), the one field it reads:
    a whole customer carries the shipping address, the username, the Gravatar hash and the
    meta data plugins keep (a date of birth)."""
    customer_id = harness.sandbox.add_person(
        "Jan.Jansen@Example.com",
        "Jan",
        "Jansen",
        meta_data=[{"key": "date_of_birth", "value": "1970-01-01"}],
    )
    sent = record("r", "jan.jansen@example.com", customer_id, **{"billing.city": "Urk"})
    sent = sent._replace(fields={**sent.fields, "email": "jan.jansen@example.com"})
    (result,) = await harness.adapter.update([sent])
    assert result.outcome == "updated"
    listed = [
        e.query
        for e in harness.sandbox.log.entries
        if e.method == "GET" and e.path.endswith("/customers")
    ]
    assert listed and all(query.get("_fields") == "id,email" for query in listed)


async def test_upsert_with_stale_external_id_falls_back_to_email(harness: Harness) -> None:
    """An external id the shop no longer knows is looked up by e-mail and written anyway."""
    (result,) = await harness.adapter.upsert(
        [record("r", "weg@example.com", "987654", first_name="Wim")]
    )
    assert result.outcome == "created"
    assert harness.sandbox.holds("weg@example.com")


async def test_upsert_failure_is_reported_with_code_only(harness: Harness) -> None:
    """A rejected record fails with the vendor's code and no e-mail; the others succeed."""
    results = await harness.adapter.upsert(
        [
            record("bad", "jan.bad@example..com", first_name="Jan"),
            record("good", "goed@example.com", first_name="Goed"),
        ]
    )
    bad, good = results
    assert bad.outcome == "failed" and bad.reason == "customer_invalid_email"
    assert not bad.retryable
    assert "@" not in bad.reason and "jan" not in bad.reason
    assert good.outcome == "created"


async def test_a_create_refused_for_want_of_a_password_says_so(harness: Harness) -> None:
    """A shop set not to generate passwords for new accounts (WooCommerce's Accounts
    setting) refuses a customer created without one: registration-error-missing-password,
    WordPress's own code, which the record's failure keeps (the dead letter said only
    "rejected"). An update of a customer the shop holds is written as before."""
    harness.sandbox.rules.generates_passwords = False
    known = harness.sandbox.add_person("bekend@example.com", "Bekend")
    new, held = await harness.adapter.upsert(
        [
            record("new", "nieuw@example.com", first_name="Nieuw"),
            record("held", "bekend@example.com", known, first_name="Anders"),
        ]
    )
    assert (new.outcome, new.reason) == ("failed", "registration-error-missing-password")
    assert not new.retryable and not harness.sandbox.holds("nieuw@example.com")
    assert held.outcome == "updated"


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("customer_invalid_email", "customer_invalid_email"),
        ("registration-error-email-exists", "registration-error-email-exists"),
        ("registration-error-missing-password", "registration-error-missing-password"),
        ("0612345678", "rejected"),
        ("jan.jansen", "rejected"),
        ("jan-willem", "rejected"),
        ("Jan Jansen is not valid", "rejected"),
    ],
)
def test_a_batch_item_error_keeps_its_code_only_when_it_is_one(code: str, kept: str) -> None:
    """A code that could be someone's data (a number, a name, a sentence) is not kept."""
    assert code_only({"code": code, "message": "x"}) == kept


async def test_upsert_splits_past_100_and_the_shop_refuses_101(harness: Harness) -> None:
    """150 records go out as two batches; the sandbox answers 413 to 101 items in one."""
    records = [record(f"r{i}", f"klant{i}@example.com", first_name="K") for i in range(150)]
    results = await harness.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created"] * 150
    batches = [e for e in harness.sandbox.log.entries if e.path == f"{API}/customers/batch"]
    assert [e.records for e in batches] == [100, 50]
    async with await raw_client(harness.sandbox) as http:
        response = await http.post(
            f"{API}/customers/batch",
            json={"create": [{"email": f"x{i}@example.com"} for i in range(101)]},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "woocommerce_rest_request_entity_too_large"


# -- failures and retries ------------------------------------------------------------------


async def test_wrong_credentials_are_fatal(sandbox: WooCommerceSandbox) -> None:
    """A wrong consumer secret is a FatalRemoteError whose text holds no secret."""
    sandbox.seed_synthetic(3)
    built = await make_harness(sandbox, secret="cs_wrong")
    async with built.client:
        with pytest.raises(FatalRemoteError) as caught:
            await collect(built.adapter, None)
    assert caught.value.status == 401 and "cs_wrong" not in str(caught.value)
    assert built.sleeps == []


async def test_a_revoked_key_stops_the_lookups_of_the_batch_not_only_the_batch(
    sandbox: WooCommerceSandbox,
) -> None:
    """The shop owner regenerated the key. ``upsert`` looks each new record's e-mail up,
    several at once: the first 401 ends them all. No lookup starts after it and none runs
    on after the batch has failed (one 401 per record, unowned by any run)."""
    built = await make_harness(sandbox, secret="cs_revoked")
    records = [record(str(n), f"klant{n}@example.nl", first_name=f"Klant{n}") for n in range(40)]
    async with built.client:
        with pytest.raises(FatalRemoteError):
            await built.adapter.upsert(records)
        for _ in range(500):  # the daemon's loop runs on after the failed batch
            await asyncio.sleep(0)
    refused = sum(1 for e in sandbox.log.entries if e.status == 401)
    assert refused <= built.adapter.limits.max_concurrency, f"{refused} calls answered 401"


async def test_missing_credentials_get_woocommerce_401(sandbox: WooCommerceSandbox) -> None:
    """Without auth the shop answers 401 woocommerce_rest_cannot_view."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()), base_url=BASE_URL
    ) as http:
        response = await http.get(f"{API}/customers")
    assert response.status_code == 401
    assert response.json()["code"] == "woocommerce_rest_cannot_view"


class DropsAuthorization(httpx.AsyncBaseTransport):
    """A server in front of the shop that drops the Authorization header (Apache running PHP
    as CGI or FastCGI does, unless told to pass it on)."""

    def __init__(self, sandbox: WooCommerceSandbox) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        del request.headers["Authorization"]
        return await self.inner.handle_async_request(request)


async def test_a_shop_that_never_sees_the_key_is_told_from_a_wrong_secret(
    sandbox: WooCommerceSandbox,
) -> None:
    """Behind a server that drops the Authorization header WooCommerce takes every call as
    anonymous: 401 woocommerce_rest_cannot_view, where a wrong secret is 401
    woocommerce_rest_authentication_error. The error says the shop took the calls as
    anonymous and where to look, so nobody replaces a key that is right; it holds neither
    key nor secret."""
    sandbox.add_person("an@example.com", "An", "Jansen")
    built = await make_harness(sandbox, transport=DropsAuthorization(sandbox))
    async with built.client:
        with pytest.raises(FatalRemoteError) as unseen:
            await collect(built.adapter, None)
        with pytest.raises(FatalRemoteError) as erasing:
            await built.adapter.erase(Subject(email="an@example.com"))
    wrong = await make_harness(sandbox, secret="cs_wrong")
    async with wrong.client:
        with pytest.raises(FatalRemoteError) as refused:
            await collect(wrong.adapter, None)
    for caught in (unseen, erasing):
        text = str(caught.value)
        assert caught.value.status == 401 and "woocommerce_rest_cannot_view" in text
        assert "as anonymous" in text and "Authorization header" in text
        assert "ck_sandbox" not in text and "cs_sandbox" not in text
    assert refused.value.status == 401 and "as anonymous" not in str(refused.value)
    assert sandbox.holds("an@example.com")


async def test_a_key_the_shop_does_not_know_is_answered_as_no_key_at_all(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce looks a consumer key up and, finding none, returns without an error
    (perform_basic_authentication): the call goes on as anonymous, 401
    woocommerce_rest_cannot_view, as without credentials. Only a known key with the wrong
    secret is 401 woocommerce_rest_authentication_error "Consumer secret is invalid."."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()), base_url=BASE_URL
    ) as http:
        unknown = await http.get(f"{API}/customers", auth=("ck_revoked", "cs_sandbox"))
        no_secret = await http.get(f"{API}/customers", auth=("ck_sandbox", ""))
        wrong = await http.get(f"{API}/customers", auth=("ck_sandbox", "cs_wrong"))
    for response in (unknown, no_secret):
        assert response.status_code == 401
        assert response.json()["code"] == "woocommerce_rest_cannot_view"
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "woocommerce_rest_authentication_error"
    assert wrong.json()["message"] == "Consumer secret is invalid."


async def test_the_query_pair_is_read_before_the_basic_header(
    sandbox: WooCommerceSandbox,
) -> None:
    """Over HTTPS WooCommerce reads ``consumer_key`` and ``consumer_secret`` from the query
    first, where both are given, and the Basic header only otherwise."""
    sandbox.add_person("a@example.nl", "A", "B")
    pair = {"consumer_key": "ck_sandbox", "consumer_secret": "cs_sandbox", "role": "all"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()), base_url=BASE_URL
    ) as http:
        both = await http.get(f"{API}/customers", params=pair, auth=("ck_sandbox", "cs_wrong"))
        half = await http.get(
            f"{API}/customers",
            params={"consumer_key": "ck_other", "role": "all"},
            auth=("ck_sandbox", "cs_sandbox"),
        )
    assert both.status_code == 200 and len(both.json()) == 1
    assert half.status_code == 200 and len(half.json()) == 1


async def test_an_unknown_key_is_named_as_a_cause_of_an_anonymous_answer(
    sandbox: WooCommerceSandbox,
) -> None:
    """A revoked or mistyped consumer key is answered as no key at all: the error names it
    as a cause beside a dropped Authorization header, not the header alone (an operator
    then looked in Apache for a key that was revoked). It holds neither key nor secret."""
    sandbox.add_person("an@example.com", "An", "Jansen")
    built = await make_harness(sandbox, key="ck_revoked")
    async with built.client:
        with pytest.raises(FatalRemoteError) as caught:
            await collect(built.adapter, None)
    text = str(caught.value)
    assert caught.value.status == 401 and "woocommerce_rest_cannot_view" in text
    assert "does not know the key" in text and "revoked" in text
    assert "ck_revoked" not in text and "cs_sandbox" not in text


async def test_basic_auth_over_plain_http_is_refused_as_woocommerce_refuses_it(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce reads the key and secret only over HTTPS; over http it wants OAuth 1.0a
    [docs], so a Basic header (or the query pair) authenticates nobody: 401, as for a
    caller without credentials."""
    sandbox.add_person("a@example.nl", "A", "B")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url="http://127.0.0.1:8080",
        auth=("ck_sandbox", "cs_sandbox"),
    ) as http:
        basic = await http.get(f"{API}/customers", params={"role": "all"})
        pair = await http.get(
            f"{API}/customers",
            params={"consumer_key": "ck_sandbox", "consumer_secret": "cs_sandbox"},
            auth=None,
        )
    for response in (basic, pair):
        assert response.status_code == 401
        assert response.json()["code"] == "woocommerce_rest_cannot_view"


async def test_server_errors_then_success_are_retried(harness: Harness) -> None:
    """Two 503s and then an answer: the pull succeeds after two retries."""
    harness.sandbox.seed_synthetic(5)
    harness.sandbox.faults.fail_next = 2
    pages = await collect(harness.adapter, None)
    assert len(pages[0].records) == 5 and harness.client.stats.retries == 2


async def test_connection_reset_is_retried(harness: Harness) -> None:
    """A dropped connection is retried and the write still happens once."""
    harness.sandbox.faults.reset_next = 1
    (result,) = await harness.adapter.upsert([record("r", "reset@example.com")])
    assert result.outcome == "created" and harness.client.stats.retries == 1


async def test_persistent_server_errors_surface_as_retryable(harness: Harness) -> None:
    """When retries run out on 5xx, the error is retryable so the work stays queued."""
    harness.sandbox.faults.fail_next = 10
    with pytest.raises(RetryableError):
        await collect(harness.adapter, None)


async def test_host_rate_limit_429_waits_as_told() -> None:
    """A host's 429 with Retry-After is waited out (on a fake clock) and the call succeeds."""
    clock = FakeClock()
    sandbox = WooCommerceSandbox(rate_limit=RateLimit(1, 10), clock=clock)
    sandbox.seed_synthetic(3)
    built = await make_harness(sandbox, clock=clock)
    async with built.client:
        await collect(built.adapter, None)
        await collect(built.adapter, None)
    rejected = [e for e in sandbox.log.entries if e.status == 429]
    assert len(rejected) == 1 and built.client.stats.rate_limited == 1
    assert built.sleeps and built.sleeps[0] >= 10


# -- find and erase ------------------------------------------------------------------------


def seed_subject(sandbox: WooCommerceSandbox) -> tuple[str, list[int], int]:
    """A customer with two orders, a guest order on the same e-mail and a stranger's order."""
    customer_id = sandbox.add_person(
        "an@example.com", "An", "Jansen", "06 12345678", city="Utrecht", customer_note="bel mij"
    )
    own = [sandbox.add_order(customer_id), sandbox.add_order(customer_id, customer_note="snel")]
    guest = sandbox.add_order(0, billing={"email": "AN@example.com", "first_name": "An"})
    stranger = sandbox.add_order(0, billing={"email": "jan@example.com", "first_name": "Jan"})
    return customer_id, [*own, guest], stranger


async def test_find_returns_the_customer_and_their_orders(harness: Harness) -> None:
    """find gives the customer plus own and guest orders, never a near-match's order."""
    customer_id, orders, stranger = seed_subject(harness.sandbox)
    found = await harness.adapter.find(Subject(email="an@example.com"))
    assert found[0]["id"] == int(customer_id)
    assert [o["id"] for o in found[1:]] == orders
    assert all(o["type"] == "order" for o in found[1:])
    assert stranger not in [o["id"] for o in found[1:]]


async def test_find_leaves_out_other_addresses_the_notes_quote(harness: Harness) -> None:
    """Art. 15(4): an order note, the customer's note at checkout and an account's note can
    quote someone else's address ("geef af bij piet@..."): it reads as left out. The
    person's own addresses (the one asked for, an order's billing one, in any case) and the
    words around stay."""
    sandbox = harness.sandbox
    written = "An (AN@Example.com) vraagt: geef af bij piet@buren.example."
    kept = f"An (AN@Example.com) vraagt: geef af bij {LEFT_OUT}."
    customer_id = sandbox.add_person("an@example.com", "An", "Jansen", customer_note=written)
    order = sandbox.add_order(customer_id, customer_note=written)
    billed = "Stuur de factuur naar An@Werk.example, niet naar piet@buren.example."
    guest = sandbox.add_order(
        0, billing={"email": "an@werk.example", "first_name": "An"}, customer_note=billed
    )
    for order_id, text in ((order, written), (guest, billed)):
        sandbox.add_order_note(order_id, text)
        sandbox.add_order_note(order_id, text, customer_note=True)
    customer, listed = await harness.adapter.find(Subject(email="an@example.com"))
    (guest_order,) = await harness.adapter.find(Subject(email="an@werk.example"))
    assert "buren.example" not in json.dumps([customer, listed, guest_order])
    assert customer["customer_note"] == kept
    assert (listed["id"], guest_order["id"]) == (order, guest)
    assert listed["customer_note"] == kept
    assert [n["note"] for n in listed["notes"]] == [kept, kept]
    left = f"Stuur de factuur naar An@Werk.example, niet naar {LEFT_OUT}."
    assert guest_order["customer_note"] == left
    assert [n["note"] for n in guest_order["notes"]] == [left, left]
    assert {n["customer_note"] for n in guest_order["notes"]} == {False, True}


async def test_find_keeps_an_order_note_and_its_text_but_not_the_staff_member_who_wrote_it(
    harness: Harness,
) -> None:
    """A note a shop employee added names them (``author``: their display name), as
    Pipedrive's names its staff author: another person, whom the person's copy leaves out,
    as Pipedrive's does. That the note exists, its text, when it was written and whether it
    was sent to the customer stay."""
    sandbox = harness.sandbox
    customer_id = sandbox.add_person("an@example.com", "An", "Jansen")
    order = sandbox.add_order(customer_id)
    sandbox.add_order_note(order, "Klant belde over de levering", author="Mieke Medewerker")
    sandbox.add_order_note(order, "Uw bestelling is onderweg", customer_note=True)
    _, listed = await harness.adapter.find(Subject(email="an@example.com"))
    assert "Mieke" not in json.dumps(listed)
    assert sorted(n["note"] for n in listed["notes"]) == [
        "Klant belde over de levering",
        "Uw bestelling is onderweg",
    ]
    for note in listed["notes"]:
        assert set(note) == {"id", "date_created", "note", "customer_note"}, note


async def test_an_erasure_s_read_takes_orders_by_whose_they_are_alone_and_a_correction_s_none(
    harness: Harness,
) -> None:
    """``find_records`` finds whom ``find`` finds, but an order only by its id, the account
    that placed it and its billing e-mail (what was bought, its addresses and the staff's
    notes stay in the shop), and for a correction no order at all."""
    harness.adapter.ask_only_for(load_mapping(REPO_MAPPINGS / "woocommerce.toml").source_fields())
    customer_id, orders, _ = seed_subject(harness.sandbox)
    harness.sandbox.add_order_note(orders[0], "klant klaagde over bezorger")
    harness.sandbox.log.clear()
    subject = Subject(email="an@example.com")
    customer, *listed = await harness.adapter.find_records(subject, orders=True)
    assert customer["id"] == int(customer_id) and "username" not in customer
    assert [o["id"] for o in listed] == orders
    for order in listed:
        assert set(order) == {"type", "id", "customer_id", "billing"}, order
        assert set(order["billing"]) == {"email"}
    assert not [e.path for e in harness.sandbox.log.entries if e.path.endswith("/notes")]
    harness.sandbox.log.clear()
    (alone,) = await harness.adapter.find_records(subject, orders=False)
    assert alone["id"] == int(customer_id)
    assert not [e.path for e in harness.sandbox.log.entries if "/orders" in e.path]


async def test_find_takes_no_guest_order_billed_to_an_address_that_only_folds_the_same(
    harness: Harness,
) -> None:
    """The shop's database may fold 'ß' to 'ss' in a search; 'strasse@' and 'straße@' are
    two subjects, so an erasure of the one must not anonymise the other's guest orders."""
    harness.sandbox.add_order(billing={"email": "strasse@example.de", "first_name": "Other"})
    assert await harness.adapter.find(Subject(email="straße@example.de")) == []
    (order,) = await harness.adapter.find(Subject(email="Strasse@example.de"))
    assert order["type"] == "order"


async def test_find_uses_the_external_id_when_the_email_changed(harness: Harness) -> None:
    """A customer whose shop e-mail changed is still found by the known external id."""
    customer_id = harness.sandbox.add_person("oud@example.com", "Olga")
    harness.sandbox.touch("oud@example.com", email="nieuw.adres@example.com")
    found = await harness.adapter.find(Subject(email="oud@example.com", external_id=customer_id))
    assert [r["id"] for r in found] == [int(customer_id)]
    assert await harness.adapter.find(Subject(email="niemand@example.com")) == []


@pytest.mark.parametrize(
    "email",
    [
        "jürgen@example.de",
        "info@müller.de",
        "an jansen@example.nl",
        "a@b.c",  # under six characters
        "jan@shop-.nl",  # a domain label ending with a hyphen
        "jan@-shop.nl",  # or starting with one
    ],
)
async def test_an_address_wordpress_refuses_is_held_by_no_customer_not_a_failure(
    harness: Harness, email: str
) -> None:
    """WordPress checks the `email` filter with is_email (400 rest_invalid_param for an
    accent, a space, a short address, a label with a hyphen at an end), and no account can
    hold such an address: find and erase say nobody is held under it, without asking, and
    the identity map's id still finds the customer."""
    async with await raw_client(harness.sandbox) as client:
        response = await client.get(f"{API}/customers", params={"email": email, "role": "all"})
    assert (response.status_code, response.json()["code"]) == (400, "rest_invalid_param")
    assert await harness.adapter.find(Subject(email=email)) == []
    assert not (await harness.adapter.erase(Subject(email=email))).found
    customer_id = harness.sandbox.add_person("olga@example.com", "Olga")
    found = await harness.adapter.find(Subject(email=email, external_id=customer_id))
    assert [r["id"] for r in found] == [int(customer_id)]


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        ("jan@shop.nl", True),
        ("a.b-c+d@sub.shop-1.example", True),
        ("a@b.nl", True),  # six characters: the shortest it takes
        ("a@b.c", False),  # five
        ("jan@shop-.nl", False),
        ("jan@-shop.nl", False),
        ("jan@shop", False),  # one label
        ("jan@shop..nl", False),
        ("jan@.shop.nl", False),
        ("jan@shop.nl.", False),
        ("@shop.nl", False),
        ("jan@an@shop.nl", False),
        ("jan()@shop.nl", False),
        ("jan@shop_1.nl", False),
        ("jan@müller.de", False),
    ],
)
def test_valid_email_follows_wordpress_is_email(address: str, accepted: bool) -> None:
    """The rules of WordPress's is_email, which the `email` filter and an account's
    address are checked with: the sandbox refuses as WordPress does, and the adapter reads
    "nobody" for an address no account can hold."""
    assert valid_email(address) is accepted


async def test_erase_anonymises_orders_then_deletes_with_force(harness: Harness) -> None:
    """Orders are blanked, then the customer is deleted with force=true; a rerun finds none."""
    customer_id, orders, stranger = seed_subject(harness.sandbox)
    harness.sandbox.log.clear()
    result = await harness.adapter.erase(Subject(email="an@example.com"))
    assert result.found and result.mode == "hard_delete" and not result.reversible
    assert result.vendor_status == 200
    # The route as a template: the customer id is the person's record in the shop, and the
    # endpoint goes into the signed receipt, which holds no personal data.
    assert result.endpoint == f"DELETE {API}/customers/{{id}}?force=true"
    assert "3 orders anonymised" in result.note
    writes = harness.sandbox.log.writes()
    assert [(e.method, e.path) for e in writes] == [
        *(("PUT", f"{API}/orders/{o}") for o in orders),
        ("DELETE", f"{API}/customers/{customer_id}"),
    ]
    assert writes[-1].query["force"] == "true"
    assert {"billing.email", "billing.phone", "shipping.address_1", "customer_note"} <= (
        harness.sandbox.log.property_names()
    )
    assert not harness.sandbox.holds("an@example.com")
    assert not harness.sandbox.restorable("an@example.com")
    for order_id in orders:
        order = harness.sandbox.order(order_id)
        assert order is not None and order["customer_id"] == 0
        assert not any(order["billing"].values()) and not any(order["shipping"].values())
        assert order["customer_note"] == ""
    untouched = harness.sandbox.order(stranger)
    assert untouched is not None and untouched["billing"]["email"] == "jan@example.com"
    again = await harness.adapter.erase(Subject(email="an@example.com", external_id=customer_id))
    assert not again.found


async def test_an_erasure_keeps_the_taxes_and_total_of_an_order_charged_in_another_country(
    harness: Harness,
) -> None:
    """A German customer's paid order was charged Germany's 19% VAT (OSS). WooCommerce works
    an order's taxes out again whenever an update carries an address, where the address then
    puts it: blanked to no country, the shop's base country, at the Dutch 21%, and the kept
    record of the sale changed its amounts. The erasure keeps the country and state of
    both addresses, so the order keeps its tax and total; the rest of them is blanked, and
    the note on the receipt says what is kept."""
    address = {"address_1": "Hauptstr. 1", "postcode": "10115", "city": "Berlin"}
    address |= {"state": "DE-BE", "country": "DE"}
    customer_id = harness.sandbox.add_person(
        "anna@example.de", "Anna", "Schmidt", "030 1234567", **address
    )
    order_id = harness.sandbox.add_order(customer_id, shipping={"first_name": "Anna", **address})
    placed = harness.sandbox.order(order_id)
    assert placed is not None and (placed["total_tax"], placed["total"]) == ("7.84", "49.12")
    result = await harness.adapter.erase(Subject(email="anna@example.de"))
    assert "1 order anonymised" in result.note and "country and state are kept" in result.note
    order = harness.sandbox.order(order_id)
    assert order is not None
    assert (order["total_tax"], order["total"]) == (placed["total_tax"], placed["total"])
    assert order["tax_lines"] == placed["tax_lines"]
    for part in ("billing", "shipping"):
        kept = {key: order[part][key] for key in ("country", "state")}
        assert kept == {"country": "DE", "state": "DE-BE"}
        assert not any(v for k, v in order[part].items() if k not in kept)


#: What an erasure asks of each order it blanks: whose it is, and what the blanking clears.
BLANKED_ORDER_FIELDS = {
    "id",
    "customer_id",
    "customer_note",
    *(f"billing.{key}" for key in ANONYMOUS_ORDER["billing"]),
    *(f"shipping.{key}" for key in ANONYMOUS_ORDER["shipping"]),
}


async def test_an_erasure_asks_for_whose_each_order_is_and_what_it_blanks_alone(
    harness: Harness,
) -> None:
    """The orders an erasure blanks are read with ``_fields``: their id, the account that
    placed them, their billing and shipping addresses and the customer's note (what tells one
    blanked already), not what was bought, its total, or the IP address and browser it was
    placed from. The orders are blanked and counted as before."""
    _, orders, stranger = seed_subject(harness.sandbox)
    harness.sandbox.log.clear()
    result = await harness.adapter.erase(Subject(email="an@example.com"))
    assert "3 orders anonymised" in result.note
    reads = [e for e in harness.sandbox.log.entries if e.path == f"{API}/orders"]
    assert reads and all(e.method == "GET" for e in reads)
    assert all(set(e.query["_fields"].split(",")) == BLANKED_ORDER_FIELDS for e in reads)
    for order_id in orders:
        order = harness.sandbox.order(order_id)
        assert order is not None and not any(order["billing"].values())
    untouched = harness.sandbox.order(stranger)
    assert untouched is not None and untouched["billing"]["email"] == "jan@example.com"
    assert not harness.sandbox.holds("an@example.com")


async def test_an_erasure_reads_of_each_customer_its_id_address_and_role_alone(
    sandbox: WooCommerceSandbox,
) -> None:
    """The accounts an erasure deletes are read with ``_fields``: their id (what it
    deletes), their address (which finds guest orders billed to it under an address they
    moved to) and their role (what a refused deletion names), not the username, shipping
    address or plugins' meta data. Asked under a former address and the identity map's
    id, both reads ask so, and the erasure goes as before."""
    customer_id = sandbox.add_person("nu@example.com", "An", "Jansen", date_of_birth="1990-01-01")
    guest = sandbox.add_order(0, billing={"email": "nu@example.com", "first_name": "An"})
    built = await make_harness(sandbox)
    async with built.client:
        result = await built.adapter.erase(
            Subject(email="oud@example.com", external_id=customer_id)
        )
    assert result.found and "1 order anonymised" in result.note
    reads = [e for e in sandbox.log.entries if e.path.startswith(f"{API}/customers")]
    assert [(e.method, e.path) for e in reads] == [
        ("GET", f"{API}/customers"),
        ("GET", f"{API}/customers/{customer_id}"),
        ("DELETE", f"{API}/customers/{customer_id}"),
    ]
    asked = [set(e.query.get("_fields", "").split(",")) for e in reads[:2]]
    assert asked == [{"id", "email", "role"}] * 2
    order = sandbox.order(guest)
    assert order is not None and not any(order["billing"].values())
    assert not sandbox.holds("nu@example.com")


async def test_an_erasure_s_blanking_of_an_order_is_answered_with_its_id_alone(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce answers an order's update with the whole order: what was bought, the IP
    address and browser it was placed from. The erasure reads nothing of it but the status,
    so each blanking asks (``_fields``) for the id alone and is answered so; the receipt
    says what it said before."""
    _, orders, _ = seed_subject(sandbox)
    sandbox.add_order_note(orders[0], "belde over de levering")
    answers = Answers(sandbox)
    built = await make_harness(sandbox, transport=answers)
    async with built.client:
        result = await built.adapter.erase(Subject(email="an@example.com"))
    puts = [e for e in sandbox.log.entries if e.method == "PUT"]
    assert [e.path for e in puts] == [f"{API}/orders/{o}" for o in orders]
    assert all(e.query.get("_fields") == "id" for e in puts)
    blanked = [answer for method, _, answer in answers.answers if method == "PUT"]
    assert blanked == [{"id": o} for o in orders]
    assert result.note == (
        "customer deleted; 3 orders anonymised; 1 order note deleted; order IP address and "
        "user agent are read-only over wc/v3 and remain; order country and state are kept, as "
        "the taxes charged go by them; 0 reviews anonymised (none under their addresses or from "
        "their account)"
    )
    assert (result.mode, result.vendor_status) == ("hard_delete", 200)
    for order_id in orders:
        order = sandbox.order(order_id)
        assert order is not None and not any(order["billing"].values())


async def test_the_sandbox_cuts_the_answers_to_writes_by_fields_but_not_its_errors(
    sandbox: WooCommerceSandbox,
) -> None:
    """WordPress filters every REST answer by ``_fields``, a write's as a read's; an error
    answer it leaves whole (rest_filter_response_fields), so its code stays readable."""
    customer_id = sandbox.add_person("an@example.com", "An", "Jansen")
    order_id = sandbox.add_order(customer_id)
    cut = {"_fields": "id,billing.city"}
    async with await raw_client(sandbox) as client:
        order = await client.put(f"{API}/orders/{order_id}", params=cut, json={"customer_note": ""})
        customer = await client.put(
            f"{API}/customers/{customer_id}", params=cut, json={"first_name": "Anne"}
        )
        created = await client.post(
            f"{API}/customers", params={"_fields": "id"}, json={"email": "nieuw@example.com"}
        )
        gone = await client.put(f"{API}/orders/999", params=cut, json={"customer_note": ""})
    assert order.json() == {"id": order_id, "billing": {"city": ""}}
    assert sorted(customer.json()) == ["billing", "id"]
    assert created.status_code == 201 and sorted(created.json()) == ["id"]
    assert (
        gone.status_code == 400
        and code_only(gone.json()) == "woocommerce_rest_shop_order_invalid_id"
    )


async def test_the_sandbox_takes_an_order_s_billing_e_mail_as_an_address_or_null_alone(
    sandbox: WooCommerceSandbox,
) -> None:
    """WordPress checks an order's update against the order schema before WooCommerce runs:
    the billing e-mail is an address or null (which clears it), every other address part a
    string. An empty e-mail, or a null inside an address, is refused with 400
    rest_invalid_param naming ``billing``, and the order is left as it was; an argument
    that is null itself is skipped, by WordPress and by WooCommerce, and changes nothing."""
    order_id = sandbox.add_order(
        0, billing={"email": "an@example.com", "first_name": "An"}, customer_note="bel aan"
    )
    path = f"{API}/orders/{order_id}"
    async with await raw_client(sandbox) as client:
        empty = await client.put(path, json={"billing": {"email": "", "first_name": ""}})
        no_name = await client.put(path, json={"billing": {"first_name": None}})
        skipped = await client.put(path, json={"billing": None, "customer_note": None})
        kept = sandbox.order(order_id)
        cleared = await client.put(path, json={"billing": {"email": None, "first_name": ""}})
    for refused in (empty, no_name):
        assert refused.status_code == 400
        assert code_only(refused.json()) == "rest_invalid_param"
        assert list(refused.json()["data"]["params"]) == ["billing"]
    assert skipped.status_code == 200
    assert kept is not None and kept["billing"]["email"] == "an@example.com"
    assert kept["billing"]["first_name"] == "An" and kept["customer_note"] == "bel aan"
    assert cleared.status_code == 200
    order = sandbox.order(order_id)
    assert order is not None and order["billing"]["email"] == order["billing"]["first_name"] == ""


async def test_the_sandbox_taxes_an_order_again_where_an_update_of_its_addresses_puts_it(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce works an order's taxes and total out again whenever an update carries an
    address, at the order's tax location then: the shipping country, else the billing
    country, else the shop's base (NL). A note or status alone leaves them as they were."""
    order_id = sandbox.add_order(0, billing={"email": "anna@example.de", "country": "DE"})
    path = f"{API}/orders/{order_id}"

    def charged() -> tuple[str, str, list[float]]:
        order = sandbox.order(order_id)
        assert order is not None
        rates = [line["rate_percent"] for line in order["tax_lines"]]
        return order["total_tax"], order["total"], rates

    placed = charged()
    async with await raw_client(sandbox) as client:
        await client.put(path, json={"customer_note": "", "status": "completed"})
        noted = charged()
        await client.put(path, json={"shipping": {"country": "BE"}})
        shipped_to_belgium = charged()
        await client.put(path, json={"shipping": {"country": ""}})
        billed_in_germany = charged()
        await client.put(path, json={"billing": {"country": ""}})
        nowhere = charged()
    assert placed == noted == billed_in_germany == ("7.84", "49.12", [19.0])
    assert shipped_to_belgium == nowhere == ("8.67", "49.95", [21.0])


async def test_an_erasure_that_keeps_orders_reads_whose_they_are_alone(
    sandbox: WooCommerceSandbox,
) -> None:
    """With anonymise_orders off, a guest's orders are only counted: read by whose they
    are alone (id, account, billing e-mail)."""
    sandbox.add_order(0, billing={"email": "gast@example.com", "first_name": "Gast"})
    built = await make_harness(sandbox, config=settings(anonymise_orders=False))
    async with built.client:
        result = await built.adapter.erase(Subject(email="gast@example.com"))
    assert result.found and "1 guest order kept" in result.note
    reads = [e for e in sandbox.log.entries if e.path == f"{API}/orders"]
    assert reads and all(e.query["_fields"] == "id,customer_id,billing.email" for e in reads)


async def test_erase_of_a_staff_account_says_it_needs_a_person(harness: Harness) -> None:
    """A shop manager's orders are blanked; the account's 403 names the role and the way out."""
    customer_id = harness.sandbox.add_person("baas@example.com", "Bo", role="shop_manager")
    order = harness.sandbox.add_order(customer_id)
    with pytest.raises(RecordError) as caught:
        await harness.adapter.erase(Subject(email="baas@example.com"))
    text = str(caught.value)
    assert "403" in text and "'shop_manager'" in text and "delete the user in WordPress" in text
    assert "baas" not in text
    blank = harness.sandbox.order(order)
    assert blank is not None and not any(blank["billing"].values())


@pytest.mark.parametrize(
    ("code", "role", "error"),
    [
        ("woocommerce_rest_cannot_delete", "administrator", RecordError),
        # A customer refused: the key may not delete (read-only); that is the config's fault.
        ("woocommerce_rest_cannot_delete", "customer", FatalRemoteError),
        ("woocommerce_rest_forbidden", "shop_manager", FatalRemoteError),
    ],
)
def test_a_refused_delete_is_the_role_only_when_woocommerce_says_so_for_such_a_role(
    code: str, role: str, error: type[Exception]
) -> None:
    response = httpx.Response(403, json={"code": code, "message": "Sorry", "data": {}})
    refused = _refused_delete("shop", "/wp-json/wc/v3/customers/7", response, {"role": role})
    assert type(refused) is error


async def test_erase_without_order_anonymisation_keeps_orders(sandbox: WooCommerceSandbox) -> None:
    """With anonymise_orders off only the customer is deleted, and the note says so."""
    _, orders, _ = seed_subject(sandbox)
    built = await make_harness(sandbox, config=settings(anonymise_orders=False))
    async with built.client:
        result = await built.adapter.erase(Subject(email="an@example.com"))
    assert result.found and "anonymise_orders is off" in result.note
    assert sandbox.log.count("PUT", f"{API}/orders") == 0
    kept = sandbox.order(orders[0])
    assert kept is not None and kept["billing"]["email"] == "an@example.com"
    assert not sandbox.holds("an@example.com")


async def test_erase_of_a_guest_anonymises_their_orders(harness: Harness) -> None:
    """Someone with only guest orders gets those orders anonymised (mode anonymise)."""
    order_id = harness.sandbox.add_order(0, billing={"email": "gast@example.com"})
    result = await harness.adapter.erase(Subject(email="gast@example.com"))
    assert result.found and result.mode == "anonymise"
    order = harness.sandbox.order(order_id)
    assert order is not None and order["billing"]["email"] == ""
    assert not (await harness.adapter.erase(Subject(email="gast@example.com"))).found


def pia_moved_and_quinn_took_her_address(sandbox: WooCommerceSandbox) -> tuple[str, str]:
    """Pia's account (with an order) moved to a new address; Quinn, another subject the
    identity map knows, then opened an account under Pia's former one and ordered."""
    pia = sandbox.add_person("pia@example.nl", "Pia", "Peters", city="Utrecht")
    sandbox.add_order(pia, customer_note="Bij de buren afgeven")
    sandbox.touch("pia@example.nl", email="pia.nieuw@example.nl")
    quinn = sandbox.add_person("pia@example.nl", "Quinn", "Quist", city="Zwolle")
    sandbox.add_order(quinn, customer_note="Quinns bestelling")
    return pia, quinn


async def test_erasure_reaches_the_account_known_by_id_when_the_address_finds_another_subjects(
    harness: Harness,
) -> None:
    """Asked under Pia's former address with her shop id, the address now finds Quinn's
    account (another subject's: spare). The id is read beside the address, not only when
    the address finds nobody: Pia's account is deleted, Quinn's stays."""
    pia, quinn = pia_moved_and_quinn_took_her_address(harness.sandbox)
    subject = Subject(email="pia@example.nl", external_id=pia, spare=frozenset({quinn}))
    result = await harness.adapter.erase(subject)
    assert result.found and result.endpoint == f"DELETE {API}/customers/{{id}}?force=true"
    assert not harness.sandbox.holds("pia.nieuw@example.nl")
    assert harness.sandbox.holds("pia@example.nl")  # Quinn's account


async def test_access_copy_holds_the_account_known_by_id_when_the_address_finds_another_subjects(
    harness: Harness,
) -> None:
    """find (the access copy, and the read verifying an erasure) gives Pia's account and
    order, and nothing of Quinn's: a receipt could otherwise certify "verified absent"
    while her account remained."""
    pia, quinn = pia_moved_and_quinn_took_her_address(harness.sandbox)
    subject = Subject(email="pia@example.nl", external_id=pia, spare=frozenset({quinn}))
    found = await harness.adapter.find(subject)
    assert [r["id"] for r in found if r.get("type") != "order"] == [int(pia)]
    assert [o["customer_note"] for o in found if o.get("type") == "order"] == [
        "Bij de buren afgeven"
    ]


async def test_erasure_leaves_the_orders_of_another_subjects_account_alone(
    harness: Harness,
) -> None:
    """Quinn's order is billed to the address the erasure was asked under, but placed by
    Quinn's account, another subject's: found by the address, it is not Pia's, as access
    reads it (connector.adapter.placed_by_another), and keeps its name and note."""
    pia, quinn = pia_moved_and_quinn_took_her_address(harness.sandbox)
    subject = Subject(email="pia@example.nl", external_id=pia, spare=frozenset({quinn}))
    await harness.adapter.erase(subject)
    (order,) = harness.sandbox.orders_for(quinn)
    assert (order["customer_note"], order["billing"]["first_name"]) == (
        "Quinns bestelling",
        "Quinn",
    )
    (own,) = [o for o in harness.sandbox.orders_for(0) if o["customer_note"] == ""]
    assert not any(own["billing"].values())  # Pia's, blanked and detached from her account


async def test_erasure_leaves_an_order_another_account_placed_under_the_address_alone(
    harness: Harness,
) -> None:
    """Jan, who has an account of his own, ordered with An's address as billing e-mail: the
    order is his (README: "An order placed by another customer under the address is not
    the person's"). An's erasure deletes her account and blanks her order, not his; her
    access copy leaves it out the same way."""
    an = harness.sandbox.add_person("an@example.com", "An", "Jansen", city="Utrecht")
    own = harness.sandbox.add_order(an)
    guest = harness.sandbox.add_order(0, billing={"email": "an@example.com", "first_name": "An"})
    jan = harness.sandbox.add_person("jan@example.com", "Jan", "Smit", city="Zwolle")
    jans = harness.sandbox.add_order(
        jan,
        billing={"email": "an@example.com", "first_name": "Jan", "last_name": "Smit"},
        customer_note="Jans bestelling",
    )
    held = await harness.adapter.find(Subject(email="an@example.com", external_id=an))
    assert [r["id"] for r in held if r.get("type") == "order"] == [own, guest]
    result = await harness.adapter.erase(Subject(email="an@example.com", external_id=an))
    assert result.found and "2 orders anonymised" in result.note
    assert not harness.sandbox.holds("an@example.com")
    order = harness.sandbox.order(jans)
    assert order is not None
    assert (order["customer_note"], order["billing"]["first_name"]) == ("Jans bestelling", "Jan")


async def test_sandbox_refuses_delete_without_force(sandbox: WooCommerceSandbox) -> None:
    """DELETE without force=true is 501 woocommerce_rest_trash_not_supported. A user that
    does not exist is 404 wc_user_invalid_id, whatever the call (the route's permission
    check looks the user up first), except a batch's update, which WooCommerce runs without
    that check: 400 woocommerce_rest_invalid_id there."""
    customer_id = sandbox.add_person("blijf@example.com")
    async with await raw_client(sandbox) as http:
        soft = await http.delete(f"{API}/customers/{customer_id}")
        unknown = [
            await http.delete(f"{API}/customers/999", params={"force": "true"}),
            await http.delete(f"{API}/customers/999"),
            await http.get(f"{API}/customers/999"),
            await http.put(f"{API}/customers/999", json={"first_name": "An"}),
        ]
        batch = await http.post(
            f"{API}/customers/batch", json={"update": [{"id": 999, "first_name": "An"}]}
        )
    assert soft.status_code == 501
    assert soft.json()["code"] == "woocommerce_rest_trash_not_supported"
    assert [(r.status_code, r.json()["code"]) for r in unknown] == [(404, "wc_user_invalid_id")] * 4
    (refused,) = batch.json()["update"]
    assert refused["error"]["code"] == "woocommerce_rest_invalid_id"
    assert refused["error"]["data"]["status"] == 400
    assert sandbox.holds("blijf@example.com")


async def test_sandbox_takes_force_as_wordpress_takes_a_boolean(
    sandbox: WooCommerceSandbox,
) -> None:
    """WordPress checks a ``boolean`` argument before the route runs: "true", "false", "1"
    or "0" in any case; anything else ("yes") is 400 rest_invalid_param and nothing is
    deleted. The fake took ``force=yes`` for true and deleted the customer for good, and
    refused ``force=TRUE`` on an order note (501), which WordPress takes."""
    customer_id = sandbox.add_person("blijf@example.com")
    order_id = sandbox.add_order(customer_id)
    note_id = sandbox.add_order_note(order_id, "Gebeld over de levering")
    async with await raw_client(sandbox) as http:
        refused = await http.delete(f"{API}/customers/{customer_id}", params={"force": "yes"})
        note = await http.delete(
            f"{API}/orders/{order_id}/notes/{note_id}", params={"force": "TRUE"}
        )
        kept = await http.delete(f"{API}/customers/{customer_id}", params={"force": "0"})
    assert (refused.status_code, refused.json()["code"]) == (400, "rest_invalid_param")
    assert refused.json()["data"]["params"] == {"force": "force is not of type boolean."}
    assert sandbox.holds("blijf@example.com")
    assert note.status_code == 200 and sandbox.notes_of(order_id) == []
    assert (kept.status_code, kept.json()["code"]) == (501, "woocommerce_rest_trash_not_supported")


async def test_an_account_deleted_while_the_erasure_runs_is_gone_not_a_failure(
    sandbox: WooCommerceSandbox,
) -> None:
    """The shop owner deleting the account between the erasure's lookup and its deletion
    (or a deletion whose answer was lost, sent again) gets 404 wc_user_invalid_id from
    WooCommerce: the account is gone, as the erasure wanted, and the erasure says so
    instead of failing."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant")
    sandbox.add_order(customer_id)
    built = await make_harness(sandbox)
    listed = built.adapter._orders_for

    async def listed_then_deleted(*args: Any) -> list[dict[str, Any]]:
        orders = await listed(*args)
        sandbox.store.delete(int(customer_id))
        return orders

    built.adapter._orders_for = listed_then_deleted  # type: ignore[method-assign]
    async with built.client:
        result = await built.adapter.erase(Subject(email="an@example.com"))
    assert (result.found, result.mode, result.vendor_status) == (True, "hard_delete", 404)
    assert result.note.startswith("customer already gone; 1 order anonymised")


async def test_sandbox_log_holds_no_personal_data(harness: Harness) -> None:
    """Looked-up e-mails and written values never reach the sandbox's request log."""
    seed_subject(harness.sandbox)
    await harness.adapter.upsert([record("r", "an@example.com", **{"billing.phone": "06 999"})])
    await harness.adapter.find(Subject(email="an@example.com"))
    await harness.adapter.erase(Subject(email="an@example.com"))
    text = repr(harness.sandbox.log.entries)
    assert "an@example.com" not in text.lower() and "06 999" not in text
    assert "cs_sandbox" not in text


# -- webhooks ------------------------------------------------------------------------------


def delivery(
    sandbox: WooCommerceSandbox,
    payload: object,
    topic: str,
    secret: str = SECRET,
    second: int | None = None,
) -> WebhookRequest:
    body = json.dumps(payload).encode()
    signed = sandbox.sign_webhook(body, secret, topic=topic, second=second)
    headers = {k.lower(): v for k, v in signed.items()}
    return WebhookRequest("POST", "https://klantsync.example.nl/webhooks/shop", headers, body)


def test_webhook_signature_valid_invalid_and_tampered(
    harness: Harness, sandbox: WooCommerceSandbox
) -> None:
    """A genuine delivery verifies; a wrong secret or a changed body does not."""
    good = delivery(sandbox, {"id": 7, "email": "an@example.com"}, "customer.updated")
    assert good.headers["x-wc-webhook-signature"] == webhook_signature(good.body, SECRET)
    assert harness.adapter.verify_webhook(good, SECRET, now=0.0)
    assert not harness.adapter.verify_webhook(good, "other-secret", now=0.0)
    tampered = WebhookRequest(good.method, good.url, good.headers, good.body.replace(b"7", b"8"))
    assert not harness.adapter.verify_webhook(tampered, SECRET, now=0.0)
    unsigned = WebhookRequest(good.method, good.url, {"content-type": "application/json"}, b"{}")
    assert not harness.adapter.verify_webhook(unsigned, SECRET, now=0.0)


def test_webhook_signature_matches_a_value_computed_apart_from_this_code(
    harness: Harness,
) -> None:
    """The sandbox signs with the adapter's own definition, so the test above would pass
    with any scheme both shared. This value was computed apart from it, as WooCommerce's
    generate_signature does: ``base64(HMAC-SHA256(body, secret))`` (``openssl dgst -sha256
    -hmac wc-webhook-secret -binary | base64``)."""
    body = b'{"id":7,"email":"an@example.com"}'
    expected = "zwae04ew/61KCAuFTjIp44/OFpmUGPJxSH4FWpcEmmE="
    assert webhook_signature(body, "wc-webhook-secret") == expected
    headers = {"content-type": "application/json", "x-wc-webhook-signature": expected}
    signed = WebhookRequest("POST", "https://k.example.nl/webhooks/shop", headers, body)
    assert harness.adapter.verify_webhook(signed, "wc-webhook-secret", now=0.0)


def test_unsigned_ping_is_accepted_and_yields_no_events(harness: Harness) -> None:
    """WooCommerce's unsigned form ping verifies (so the hook activates) and means nothing;
    the same body with an empty signature, or sent as anything but a form, does not."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    ping = WebhookRequest("POST", "https://k.example.nl/webhooks/shop", form, b"webhook_id=12")
    assert harness.adapter.verify_webhook(ping, SECRET, now=0.0)
    assert harness.adapter.parse_webhook(ping) == []
    forged = WebhookRequest(
        ping.method, ping.url, {**form, "x-wc-webhook-signature": "x"}, ping.body
    )
    assert not harness.adapter.verify_webhook(forged, SECRET, now=0.0)
    other = WebhookRequest(ping.method, ping.url, form, b"webhook_id=12&email=a%40b.nl")
    assert not harness.adapter.verify_webhook(other, SECRET, now=0.0)
    blank = WebhookRequest(ping.method, ping.url, {**form, "x-wc-webhook-signature": ""}, ping.body)
    assert not harness.adapter.verify_webhook(blank, SECRET, now=0.0)
    as_json = WebhookRequest(ping.method, ping.url, {"content-type": "application/json"}, ping.body)
    assert not harness.adapter.verify_webhook(as_json, SECRET, now=0.0)


def test_webhook_signature_is_over_the_raw_body(harness: Harness) -> None:
    """The signature covers the body byte for byte, its trailing newline included."""
    body = b'{"id": 7}\n'
    url = "https://k.example.nl/webhooks/shop"
    signed = {"x-wc-webhook-signature": webhook_signature(body, SECRET)}
    assert harness.adapter.verify_webhook(WebhookRequest("POST", url, signed, body), SECRET, 0.0)
    stripped = {"x-wc-webhook-signature": webhook_signature(body.strip(), SECRET)}
    assert not harness.adapter.verify_webhook(
        WebhookRequest("POST", url, stripped, body), SECRET, 0.0
    )


def test_two_customers_changed_within_a_second_are_two_deliveries(
    harness: Harness, sandbox: WooCommerceSandbox
) -> None:
    """WooCommerce gives every delivery of a webhook within a second one delivery id (a bulk
    edit's customers come with the same one): the second must not pass for a replay of the
    first. A replay, the same delivery again, still does."""
    now = 1_800_000_000
    first = delivery(sandbox, {"id": 7, "email": "an@example.com"}, "customer.updated", second=now)
    second = delivery(sandbox, {"id": 8, "email": "bo@example.com"}, "customer.updated", second=now)
    assert first.headers["x-wc-webhook-delivery-id"] == second.headers["x-wc-webhook-delivery-id"]
    (one,) = harness.adapter.parse_webhook(first)
    (other,) = harness.adapter.parse_webhook(second)
    (replayed,) = harness.adapter.parse_webhook(first)
    assert one.delivery_id != other.delivery_id
    assert replayed.delivery_id == one.delivery_id


def test_parse_customer_and_order_events(harness: Harness, sandbox: WooCommerceSandbox) -> None:
    """customer.updated is a change, customer.deleted a deletion, an order its customer's
    change: an account's by id alone, a guest's by the billing e-mail."""
    updated = delivery(sandbox, {"id": 7, "email": "an@example.com"}, "customer.updated")
    (event,) = harness.adapter.parse_webhook(updated)
    assert (event.kind, event.external_id, event.email) == ("changed", "7", "an@example.com")
    # The replay key is the body's: the delivery id header is not signed.
    assert event.delivery_id == body_key(updated.body)
    relabelled = WebhookRequest(
        updated.method,
        updated.url,
        {**updated.headers, "x-wc-webhook-delivery-id": "0" * 32},
        updated.body,
    )
    (again,) = harness.adapter.parse_webhook(relabelled)
    assert again.delivery_id == event.delivery_id
    (deleted,) = harness.adapter.parse_webhook(delivery(sandbox, {"id": 7}, "customer.deleted"))
    assert (deleted.kind, deleted.external_id, deleted.email) == ("deleted", "7", None)
    order = {"id": 1001, "customer_id": 7, "billing": {"email": "an@example.com"}}
    (changed,) = harness.adapter.parse_webhook(delivery(sandbox, order, "order.created"))
    assert (changed.kind, changed.external_id, changed.email) == ("changed", "7", None)
    guest = {"id": 1002, "customer_id": 0, "billing": {"email": "gast@example.com"}}
    (guest_event,) = harness.adapter.parse_webhook(delivery(sandbox, guest, "order.updated"))
    assert guest_event.external_id is None and guest_event.email == "gast@example.com"
    (product,) = harness.adapter.parse_webhook(delivery(sandbox, {"id": 5}, "product.updated"))
    assert product.kind == "ignored"


async def test_an_order_webhook_refreshes_the_account_that_placed_it_not_its_billing_address_s(
    harness: Harness, sandbox: WooCommerceSandbox
) -> None:
    """Jan's order billed to An's address: the delivery names Jan's account, and the
    targeted sync it starts fetches Jan, not An (the billing e-mail was looked up first)."""
    sandbox.add_person("an@example.com", "An", "Jansen")
    jan = sandbox.add_person("jan@example.com", "Jan", "Smit")
    order = {"id": 1001, "customer_id": int(jan), "billing": {"email": "an@example.com"}}
    (event,) = harness.adapter.parse_webhook(delivery(sandbox, order, "order.updated"))
    # As connector.targeted asks the source for the person a delivery names.
    subject = Subject(email=event.email or "", external_id=event.external_id)
    fetched = await harness.adapter.find_people(subject)
    assert [c["email"] for c in fetched] == ["jan@example.com"]


async def test_erase_by_id_alone_touches_no_stranger_orders(harness: Harness) -> None:
    """Without an e-mail the customer's own orders are anonymised, and the guest orders
    billed to the address their account holds; never a stranger's, nor one billed to no
    address (an empty search would list every order of the shop)."""
    customer_id, orders, stranger = seed_subject(harness.sandbox)
    blank = harness.sandbox.add_order(0, billing={"email": ""})
    result = await harness.adapter.erase(Subject(email="", external_id=customer_id))
    assert result.found and "3 orders anonymised" in result.note
    guest = harness.sandbox.order(orders[-1])
    assert guest is not None and guest["billing"]["email"] == ""
    other = harness.sandbox.order(stranger)
    assert other is not None and other["billing"]["email"] == "jan@example.com"
    assert harness.sandbox.log.count("PUT", f"{API}/orders/{blank}") == 0
    assert not harness.sandbox.holds("an@example.com")


def test_a_change_within_the_same_second_is_stamped_a_second_later_in_any_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WooCommerce's ``date_modified_gmt`` has no offset: the bump past the stamp before read
    it as the machine's local time, so on a host in Amsterdam a change in the same second
    was stamped an hour earlier, before the change it followed."""
    import time

    from adapters.woocommerce.rest import ShopRules

    rules = ShopRules(ShopStore(), lambda: dt.datetime(2026, 1, 15, 10, 0, tzinfo=dt.UTC))
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    try:
        assert rules.stamp("2026-01-15T10:00:00") == "2026-01-15T10:00:01"
        assert rules.stamp("2026-01-15T09:59:59") == "2026-01-15T10:00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_synthetic_dates_are_the_registration_clock() -> None:
    """A generated customer registered 7 minutes after the one before, from 2019-01-01 09:00."""
    for index in (1, 2, 205, 206, 100_000, 1_000_000):
        customer = synthetic_customer(index, index, seed=7)
        expected = wc_datetime(_EPOCH + dt.timedelta(minutes=7 * index))
        assert customer["date_created"] == customer["date_modified_gmt"] == expected


def test_synthetic_customers_are_fixed_by_seed_and_index_and_spread_over_the_lists() -> None:
    """The same (seed, index) gives the same customer; the draws cover every option."""
    assert synthetic_customer(9, 9, seed=7) == synthetic_customer(9, 9, seed=7)
    assert synthetic_customer(9, 9, seed=7) != synthetic_customer(9, 9, seed=8)
    customers = [synthetic_customer(i, i, seed=7) for i in range(1, 2001)]
    firsts = {c["first_name"] for c in customers}
    cities = {c["billing"]["city"] for c in customers}
    assert len(firsts) == 20 and len(cities) == 10
    for customer in customers:
        phone = customer["billing"]["phone"]
        assert phone.startswith("06 ") and len(phone) == 11 and phone[3:].isdigit()
        digits, letters = customer["billing"]["postcode"].split(" ")
        assert 1000 <= int(digits) <= 9999 and len(letters) == 2 and letters.isalpha()
    paying = sum(c["is_paying_customer"] for c in customers) / len(customers)
    assert 0.55 < paying < 0.65


async def test_erasing_a_guest_whose_orders_are_kept_says_they_stay(
    sandbox: WooCommerceSandbox,
) -> None:
    """With anonymise_orders off a guest's orders keep their billing data; the result (what
    the receipt says) claimed "no customer or order with personal data for this subject"."""
    sandbox.add_order(0, billing={"email": "gast@example.com", "first_name": "Gast"})
    built = await make_harness(sandbox, config=settings(anonymise_orders=False))
    async with built.client:
        result = await built.adapter.erase(Subject(email="gast@example.com"))
        (order,) = await built.adapter.find(Subject(email="gast@example.com"))
    assert result.found and "1 guest order kept" in result.note
    assert order["retained"] == "tax_records"


async def test_an_order_deleted_while_the_erasure_runs_does_not_fail_it(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce answers an update of an order it no longer has with 400
    woocommerce_rest_shop_order_invalid_id, not 404: an order the shop owner deleted while
    the erasure ran made the whole erasure fail."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant")
    first, second = sandbox.add_order(customer_id), sandbox.add_order(customer_id)
    built = await make_harness(sandbox)
    listed = built.adapter._orders_for

    async def listed_then_deleted(*args: Any) -> list[dict[str, Any]]:
        orders = await listed(*args)
        del sandbox.store.orders[first]
        return orders

    built.adapter._orders_for = listed_then_deleted  # type: ignore[method-assign]
    async with built.client:
        result = await built.adapter.erase(Subject(email="an@example.com"))
    assert result.found and "1 order anonymised" in result.note
    order = sandbox.order(second)
    assert order is not None and order["billing"]["email"] == ""


async def test_the_scan_passes_over_nobody_when_signups_balance_deletions(
    sandbox: WooCommerceSandbox,
) -> None:
    """Three customers deleted in the part already read while three sign up: X-WP-Total did
    not drop, the next page started only two early, and a customer moved up unseen, though
    the page's first id (past the highest delivered) showed the gap."""
    for n in range(250):
        sandbox.add_person(f"klant{n}@voorbeeld.nl", f"Klant{n}")
    everyone = set(sandbox.store.customers)
    built = await make_harness(sandbox)
    delivered: list[int] = []
    async with built.client:
        pages = built.adapter.pull(None)
        first = await anext(pages)
        delivered += [r["id"] for r in first.records]
        for gone in (10, 20, 30):
            sandbox.store.delete(gone)
            everyone.discard(gone)
        for n in range(3):
            sandbox.add_person(f"nieuw{n}@voorbeeld.nl", f"Nieuw{n}")
        async for page in pages:
            delivered += [r["id"] for r in page.records]
    assert sorted(everyone - set(delivered)) == []
    assert len(delivered) == len(set(delivered))  # nobody twice either


async def test_an_erasure_deletes_the_order_notes_and_access_shows_them(
    sandbox: WooCommerceSandbox,
) -> None:
    """The note on the receipt said order notes are read-only over wc/v3 and remain; wc/v3
    lists and deletes them (/orders/{id}/notes), and WooCommerce's own eraser deletes them
    all. Access now shows each order's notes, and an erasure deletes them."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant")
    order_id = sandbox.add_order(customer_id)
    sandbox.add_order_note(order_id, "Klant belde: pakket bij de buren (nr. 12) afgeven")
    sandbox.add_order_note(order_id, "Bedankt voor uw bestelling", customer_note=True)
    built = await make_harness(sandbox)
    async with built.client:
        held = await built.adapter.find(Subject(email="an@example.com"))
        result = await built.adapter.erase(Subject(email="an@example.com"))
    (order,) = [r for r in held if r.get("type") == "order"]
    assert sorted(n["note"] for n in order["notes"]) == [
        "Bedankt voor uw bestelling",
        "Klant belde: pakket bij de buren (nr. 12) afgeven",
    ]
    assert sandbox.notes_of(order_id) == []
    assert "2 order notes deleted" in result.note and "notes are read-only" not in result.note


async def test_notes_left_by_an_erasure_that_stopped_go_with_the_retry(
    sandbox: WooCommerceSandbox,
) -> None:
    """Blanked, then stopped before its notes went: the retry skips the blanked order but
    deletes its notes."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant")
    order_id = sandbox.add_order(customer_id)
    sandbox.add_order_note(order_id, "Klant belde")
    built = await make_harness(sandbox)
    async with built.client:
        await built.adapter.client.request("PUT", f"{API}/orders/{order_id}", json=ANONYMOUS_ORDER)
        result = await built.adapter.erase(Subject(email="an@example.com"))
    assert sandbox.notes_of(order_id) == []
    assert "every note on them deleted, 1 at this attempt" in result.note


#: The parts of an address an erasure blanks, written out as a shop holds them once blanked.
BLANK_ADDRESS = dict.fromkeys(
    ("first_name", "last_name", "company", "address_1", "address_2", "city", "postcode", "phone"),
    "",
)


@pytest.mark.parametrize(
    "left",
    [{"country": "DE", "state": "DE-BE"}, {"country": "", "state": ""}],
    ids=["country and state kept", "blanked whole by earlier versions"],
)
async def test_an_order_blank_but_for_its_country_and_state_is_found_anonymised(
    sandbox: WooCommerceSandbox, left: dict[str, str]
) -> None:
    """An erasure leaves an order its country and state (what its taxes go by); earlier
    versions emptied them too. Either way the order holds nothing of the person: a retry
    finds it anonymised, counts it as found so and does not write it again (each write has
    WooCommerce work the order's taxes out again)."""
    customer_id = sandbox.add_person(
        "anna@example.de", "Anna", "Schmidt", country="DE", state="DE-BE"
    )
    order_id = sandbox.add_order(customer_id)
    blank = {**BLANK_ADDRESS, **left}
    built = await make_harness(sandbox)
    async with built.client:
        await built.client.request(
            "PUT",
            f"{API}/orders/{order_id}",
            json={"billing": {**blank, "email": None}, "shipping": blank, "customer_note": ""},
        )
        sandbox.log.clear()
        result = await built.adapter.erase(Subject(email="anna@example.de"))
    assert "1 order anonymised (1 of them found so already)" in result.note
    writes = [(e.method, e.path) for e in sandbox.log.writes()]
    assert writes == [("DELETE", f"{API}/customers/{customer_id}")]


async def test_a_retry_counts_the_orders_an_earlier_attempt_anonymised(
    sandbox: WooCommerceSandbox,
) -> None:
    """The erasure blanks the orders and deletes their notes, then the account. When the
    account's deletion failed (a 503 through the retries), the retry found both orders
    blank and counted neither: the receipt said "0 orders anonymised; 0 order notes
    deleted" of the person's two, both blanked by this request. Orders found blank count,
    said as found so, and the notes are not said to be none."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant")
    orders = [sandbox.add_order(customer_id), sandbox.add_order(customer_id)]
    for order_id in orders:
        sandbox.add_order_note(order_id, "Klant belde: pakket bij de buren afgeven")

    async def unavailable(_customer: Any) -> int:
        raise RetryableError("shop", "DELETE", f"{API}/customers/{{id}}", 503)

    built = await make_harness(sandbox)
    async with built.client:
        built.adapter._delete_customer = unavailable  # type: ignore[method-assign]
        with pytest.raises(RetryableError):
            await built.adapter.erase(Subject(email="an@example.com"))
        del built.adapter._delete_customer
        assert all(sandbox.notes_of(order_id) == [] for order_id in orders)
        result = await built.adapter.erase(Subject(email="an@example.com", external_id=customer_id))
    assert not sandbox.holds("an@example.com")
    assert result.note.startswith(
        "customer deleted; 2 orders anonymised (2 of them found so already); every note on "
        "them deleted, 0 at this attempt"
    )


async def test_the_sandbox_lists_trashed_orders_only_under_status_trash() -> None:
    """wc/v3 takes `status=trash` (its enum is any, trash and the order statuses), and
    `status=any`, the default, leaves trashed orders out."""
    sandbox = WooCommerceSandbox()
    binned = sandbox.add_order(0, billing={"email": "gast@example.com"}, status="trash")
    kept = sandbox.add_order(0, billing={"email": "gast@example.com"})
    async with await raw_client(sandbox) as client:
        trash = await client.get(f"{API}/orders", params={"status": "trash"})
        every = await client.get(f"{API}/orders", params={"status": "any"})
        default = await client.get(f"{API}/orders")
    assert trash.status_code == 200, trash.text
    assert [o["id"] for o in trash.json()] == [binned]
    assert [o["id"] for o in every.json()] == [o["id"] for o in default.json()] == [kept]


async def test_an_erasure_blanks_the_subject_s_orders_in_the_trash_and_access_shows_them(
    sandbox: WooCommerceSandbox,
) -> None:
    """A trashed order (the shop owner's bin, WooCommerce's own clean-up of failed and
    cancelled orders) keeps its billing data and can be restored; wc/v3 lists it only
    under `status=trash`. Access shows it, and an erasure blanks it like the others."""
    customer_id = sandbox.add_person("an@example.com", "An", "Klant", phone="0612345678")
    kept = sandbox.add_order(customer_id)
    trashed = sandbox.add_order(customer_id, status="trash")
    guest = sandbox.add_order(0, billing={"email": "an@example.com"}, status="trash")
    built = await make_harness(sandbox)
    async with built.client:
        held = await built.adapter.find(Subject(email="an@example.com"))
        result = await built.adapter.erase(Subject(email="an@example.com"))
    assert [r["id"] for r in held if r.get("type") == "order"] == [kept, trashed, guest]
    assert result.found and "3 orders anonymised" in result.note
    for order_id in (kept, trashed, guest):
        order = sandbox.order(order_id)
        assert order is not None and order["billing"]["email"] == ""
        assert order["billing"]["phone"] == "" and not any(order["shipping"].values())


# -- product reviews -----------------------------------------------------------------------


async def test_the_sandbox_lists_reviews_by_status_and_reviewer_e_mail_as_wc_v3_does() -> None:
    """wc/v3's review list gives approved reviews unless `status` says otherwise; its `all`
    is held and approved ones (WP_Comment_Query), spam and the trash only by name.
    `reviewer_email` is checked with is_email (400 rest_invalid_param) and matched without
    case, as the database compares. A review shows neither the IP address nor the browser
    it was written from, and the log never holds the address looked up."""
    sandbox = WooCommerceSandbox()
    approved = sandbox.add_review("An@Example.com", "Lekker sterk.\nAanrader!", rating=4)
    held = sandbox.add_review("an@example.com", "Nog niet geproefd", status="hold")
    spam = sandbox.add_review("an@example.com", "Koop hier", status="spam")
    binned = sandbox.add_review("an@example.com", "Te bitter", status="trash")
    other = sandbox.add_review("jan@example.com", "Prima", reviewer="Jan")
    async with await raw_client(sandbox) as client:

        async def ids(**params: str) -> list[int]:
            answer = await client.get(f"{API}/products/reviews", params=params)
            assert answer.status_code == 200, answer.text
            return [r["id"] for r in answer.json()]

        assert await ids() == [other, approved]  # newest first
        assert await ids(reviewer_email="an@example.com") == [approved]
        assert await ids(reviewer_email="an@example.com", status="all") == [held, approved]
        assert await ids(reviewer_email="an@example.com", status="spam") == [spam]
        assert await ids(reviewer_email="an@example.com", status="trash") == [binned]
        refused = [
            await client.get(f"{API}/products/reviews", params=params)
            for params in ({"reviewer_email": "jürgen@example.de"}, {"status": "any"})
        ]
        shown = await client.get(f"{API}/products/reviews/{approved}")
        unknown = await client.get(f"{API}/products/reviews/999")
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(400, "rest_invalid_param")] * 2
    review = shown.json()
    assert set(review) == {
        "id", "date_created", "date_created_gmt", "product_id", "product_name",
        "product_permalink", "status", "reviewer", "reviewer_email", "review", "rating",
        "verified", "reviewer_avatar_urls", "_links",
    }  # fmt: skip
    assert review["review"] == "<p>Lekker sterk.<br />\nAanrader!</p>\n"  # wpautop, view
    assert (review["product_id"], review["rating"], review["status"]) == (93, 4, "approved")
    assert "198.51.100.7" not in shown.text and "Mozilla" not in shown.text
    assert (unknown.status_code, unknown.json()["code"]) == (
        404,
        "woocommerce_rest_review_invalid_id",
    )
    assert "example.com" not in repr(sandbox.log.entries).lower()


async def test_the_sandbox_updates_and_deletes_reviews_as_wc_v3_does() -> None:
    """An update's e-mail is checked with is_email ("" too: 400 rest_invalid_param, nothing
    changed); what is sent is written, the text, rating, IP address and browser kept, and
    the answer is in the `edit` context. A deletion without `force` moves the review to the
    trash (WordPress keeps one), name, e-mail and all, and a second one is 410; with `force`
    it is gone, the answer holding it as it was."""
    sandbox = WooCommerceSandbox()
    review_id = sandbox.add_review("an@example.com", "Lekker sterk", reviewer="An", rating=4)
    path = f"{API}/products/reviews/{review_id}"
    async with await raw_client(sandbox) as client:
        refused = [
            await client.put(path, json={"reviewer_email": ""}),
            await client.put(path, json={"reviewer_email": "an"}),
            await client.put(path, json={"rating": "vijf"}),
        ]
        missing = await client.put(f"{API}/products/reviews/999", json={"reviewer": "X"})
        changed = await client.put(path, json={"reviewer": "Anonymous", "reviewer_email": "a@b.nl"})
        stored = sandbox.review(review_id)
        trashed = await client.delete(path)
        twice = await client.delete(path)
        deleted = await client.delete(path, params={"force": "true"})
        gone = await client.get(path)
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(400, "rest_invalid_param")] * 3
    assert (missing.status_code, missing.json()["code"]) == (
        404,
        "woocommerce_rest_review_invalid_id",
    )
    assert changed.status_code == 200, changed.text
    answer = changed.json()
    assert (answer["reviewer"], answer["reviewer_email"]) == ("Anonymous", "a@b.nl")
    assert (answer["review"], answer["rating"]) == ("Lekker sterk", 4)  # the edit context
    assert stored is not None and (stored["author_ip"], stored["agent"]) == (
        "198.51.100.7",
        "Mozilla/5.0",
    )
    assert trashed.status_code == 200 and trashed.json()["status"] == "trash"
    assert (twice.status_code, twice.json()["code"]) == (410, "woocommerce_rest_already_trashed")
    assert deleted.json()["deleted"] is True and deleted.json()["previous"]["id"] == review_id
    assert gone.status_code == 404 and sandbox.review(review_id) is None


async def test_the_sandbox_lists_reviews_by_the_reviewer_s_account_as_wc_v3_does() -> None:
    """wc/v3's `reviewer` is a list of user ids (WP_Comment_Query's `author__in`, each id
    through absint): it lists the reviews written from those accounts, whatever address
    they name, in the status asked for. A guest's review has user id 0, so `reviewer=0`
    lists guests' reviews. A value that is not an integer is refused as WordPress refuses
    one, naming its place in the list (400 rest_invalid_param)."""
    sandbox = WooCommerceSandbox()
    customer_id = sandbox.add_person("an@example.com", "An")
    account = int(customer_id)
    old = sandbox.add_review("an.oud@example.com", "Lekker sterk", user_id=account)
    held = sandbox.add_review("an@example.com", "Nog niet geproefd", user_id=account, status="hold")
    spam = sandbox.add_review("an@example.com", "Koop hier", user_id=account, status="spam")
    guest = sandbox.add_review("an.oud@example.com", "Prima")
    async with await raw_client(sandbox) as client:

        async def ids(**params: str) -> list[int]:
            answer = await client.get(f"{API}/products/reviews", params=params)
            assert answer.status_code == 200, answer.text
            return [r["id"] for r in answer.json()]

        assert await ids(reviewer=customer_id, status="all") == [held, old]
        assert await ids(reviewer=customer_id, status="spam") == [spam]
        assert await ids(reviewer=f"-{customer_id}", status="all") == [held, old]  # absint
        assert await ids(reviewer="0") == [guest]
        refused = [
            await client.get(f"{API}/products/reviews", params={"reviewer": value})
            for value in ("an", f"{customer_id},1.5")
        ]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(400, "rest_invalid_param")] * 2
    assert [r.json()["data"]["params"]["reviewer"] for r in refused] == [
        "reviewer[0] is not of type integer.",
        "reviewer[1] is not of type integer.",
    ]


def seed_reviewer(sandbox: WooCommerceSandbox) -> tuple[str, list[int], list[int]]:
    """A customer with four reviews (held, approved, marked spam, in the trash), one of them
    under their address in capitals; and two of others: under an address a database's
    collation folds to theirs ("ß" as "ss", written by an import), and under one holding
    theirs."""
    customer_id = sandbox.add_person("strasse@example.de", "Sven", "Strasse")
    theirs = [
        sandbox.add_review("strasse@example.de", "Lekker sterk", reviewer="Sven", rating=4),
        sandbox.add_review("Strasse@Example.de", "Nog niet geproefd", status="hold"),
        sandbox.add_review("strasse@example.de", "Te bitter", rating=1, status="spam"),
        sandbox.add_review("strasse@example.de", "Vergissing", status="trash"),
    ]
    others = [
        sandbox.add_review("straße@example.de", "Sehr gut", reviewer="Sabine", rating=5),
        sandbox.add_review("jan.strasse@example.de", "Prima", reviewer="Jan", rating=3),
    ]
    return customer_id, theirs, others


async def test_an_erasure_anonymises_the_person_s_reviews_and_leaves_another_s_alone(
    harness: Harness,
) -> None:
    """Product reviews are WordPress comments holding the reviewer's name and e-mail, which
    an erasure left in the shop. Each of the person's, held, approved, marked spam or in the
    trash, is anonymised before the account goes, as WordPress's own eraser does: reviewer
    "Anonymous", the e-mail WordPress gives an erased one, the text and rating kept. The
    reviews are read by id, e-mail and account link alone, the answers to the updates hold
    the id alone, and the note counts them and says the IP address stays. Another's review
    under an address the shop's filter folds to theirs, or one holding theirs, is left
    alone."""
    customer_id, theirs, others = seed_reviewer(harness.sandbox)
    before = {i: harness.sandbox.review(i) for i in (*theirs, *others)}
    harness.sandbox.log.clear()
    result = await harness.adapter.erase(Subject(email="strasse@example.de"))
    assert (result.found, result.mode) == (True, "hard_delete")
    assert "; 4 reviews anonymised; review text and rating are kept; the reviewer's IP" in (
        result.note
    )
    for review_id in theirs:
        review, was = harness.sandbox.review(review_id), before[review_id]
        assert review is not None and was is not None
        assert (review["reviewer"], review["reviewer_email"]) == (
            "Anonymous",
            "deleted@site.invalid",
        )
        kept = ("content", "rating", "status", "product_id", "author_ip")
        assert {k: review[k] for k in kept} == {k: was[k] for k in kept}
    assert all(harness.sandbox.review(i) == before[i] for i in others)
    reads = [e for e in harness.sandbox.log.entries if e.path == f"{API}/products/reviews"]
    assert {e.query["status"] for e in reads} == {"all", "spam", "trash"}
    assert all(e.query["_fields"] == "id,reviewer_email,_links.reviewer" for e in reads)
    writes = [(e.method, e.path) for e in harness.sandbox.log.writes()]
    assert writes == [
        *(("PUT", f"{API}/products/reviews/{i}") for i in theirs),
        ("DELETE", f"{API}/customers/{customer_id}"),
    ]
    puts = [e for e in harness.sandbox.log.entries if e.method == "PUT"]
    assert all(e.query["_fields"] == "id" for e in puts)
    assert "strasse@" not in repr(harness.sandbox.log.entries).lower()


async def test_a_second_erasure_finds_no_review_of_the_person_left(harness: Harness) -> None:
    """After an erasure no review is found under the person's address: the verifying read
    (``find_records``) finds none, and a second erasure, of an account's holder or of a
    guest reviewer, finds nothing to do and writes nothing."""
    seed_reviewer(harness.sandbox)
    guest = harness.sandbox.add_review("gast@example.com", "Snelle levering", rating=5)
    first = await harness.adapter.erase(Subject(email="gast@example.com"))
    assert (first.found, first.mode, first.endpoint) == (
        True,
        "anonymise",
        f"PUT {API}/products/reviews/{{id}}",
    )
    assert first.note.startswith("no customer account; 1 review anonymised; review text")
    await harness.adapter.erase(Subject(email="strasse@example.de"))
    harness.sandbox.log.clear()
    for email in ("gast@example.com", "strasse@example.de"):
        assert await harness.adapter.find_records(Subject(email=email), orders=True) == []
        again = await harness.adapter.erase(Subject(email=email))
        assert not again.found
        assert again.note == "no customer, order or review with personal data for this subject"
    assert harness.sandbox.log.writes() == []
    review = harness.sandbox.review(guest)
    assert review is not None and review["content"] == "Snelle levering"


async def test_the_access_copy_lists_the_person_s_reviews(harness: Harness) -> None:
    """The access copy lists each of the person's product reviews, held, approved, marked
    spam or in the trash: the product, the rating, what they wrote, when, and its status,
    as the shop gives it. Another's, under an address the shop's filter folds to theirs, is
    not in it. The copy's categories name them."""
    customer_id, theirs, _ = seed_reviewer(harness.sandbox)
    found = await harness.adapter.find(Subject(email="strasse@example.de"))
    assert found[0]["id"] == int(customer_id)
    listed = [r for r in found if r.get("type") == "review"]
    assert [r["product_review"]["id"] for r in listed] == theirs
    first = listed[0]["product_review"]
    assert (first["product_id"], first["rating"], first["status"]) == (93, 4, "approved")
    assert first["review"] == "<p>Lekker sterk</p>\n" and first["date_created"]
    assert [r["product_review"]["status"] for r in listed] == ["approved", "hold", "spam", "trash"]
    assert "reviews" in WooCommerceAdapter.copy_categories


async def test_the_access_copy_leaves_out_other_addresses_a_review_quotes(
    harness: Harness,
) -> None:
    """Art. 15(4): what the person wrote in a product review can quote someone else's
    address ("een cadeau voor piet@..."): it reads as left out, as in an order's notes. The
    person's own addresses (the one asked for, the one the review was written under from
    their account before they changed it, in any case) and the words around stay."""
    sandbox = harness.sandbox
    customer_id = sandbox.add_person("an@example.com", "An", "Jansen")
    sandbox.add_review(
        "an@example.com", "Cadeau voor piet@buren.example; AN@Example.com wil er ook een."
    )
    sandbox.add_review(
        "an.oud@example.com",
        "An.Oud@Example.com raadt hem aan, net als kees@buren.example.",
        user_id=customer_id,
    )
    found = await harness.adapter.find(Subject(email="an@example.com"))
    reviews = [r["product_review"]["review"] for r in found if r.get("type") == "review"]
    assert "buren.example" not in json.dumps(found)
    assert reviews == [
        f"<p>Cadeau voor {LEFT_OUT}; AN@Example.com wil er ook een.</p>\n",
        f"<p>An.Oud@Example.com raadt hem aan, net als {LEFT_OUT}.</p>\n",
    ]


def seed_moved_reviewer(sandbox: WooCommerceSandbox) -> tuple[str, dict[str, int]]:
    """A customer who reviewed from their account, then changed their address (WordPress
    leaves the review as it was written: under the old address, with the account's user
    id); another customer's review; and a guest's under the same old address."""
    customer_id = sandbox.add_person("lies.oud@example.com", "Lies", "Bakker")
    other_id = sandbox.add_person("piet@example.com", "Piet")
    reviews = {
        "theirs": sandbox.add_review(
            "lies.oud@example.com", "Lekker sterk", reviewer="Lies", user_id=customer_id
        ),
        "theirs_spam": sandbox.add_review(
            "lies.oud@example.com", "Koop hier", user_id=customer_id, status="spam"
        ),
        "another_s": sandbox.add_review("piet@example.com", "Prima", user_id=other_id),
        "guest": sandbox.add_review("lies.oud@example.com", "Snelle levering", reviewer="Gast"),
    }
    sandbox.touch("lies.oud@example.com", email="lies@example.com")
    return customer_id, reviews


async def test_the_access_copy_lists_a_review_written_from_the_account_under_a_former_address(
    harness: Harness,
) -> None:
    """A review written from the person's account keeps the address they had then. Their
    account, found by its current address, names them by its user id: the access copy
    lists that review too, once. Another customer's review is not in it, nor a guest's
    under the old address, which no account of theirs names."""
    customer_id, reviews = seed_moved_reviewer(harness.sandbox)
    found = await harness.adapter.find(Subject(email="lies@example.com"))
    assert found[0]["id"] == int(customer_id)
    listed = [r["product_review"] for r in found if r.get("type") == "review"]
    assert [r["id"] for r in listed] == [reviews["theirs"], reviews["theirs_spam"]]
    assert listed[0]["reviewer_email"] == "lies.oud@example.com"
    reads = [e for e in harness.sandbox.log.entries if e.path == f"{API}/products/reviews"]
    assert {e.query["status"] for e in reads if "reviewer" in e.query} == {"all", "spam", "trash"}
    assert {e.query["reviewer"] for e in reads if "reviewer" in e.query} == {customer_id}


async def test_an_erasure_anonymises_a_review_written_from_the_account_under_a_former_address(
    harness: Harness,
) -> None:
    """The person's reviews written from their account under an address they no longer
    have are anonymised with those under their current one; another customer's review and
    a guest's under the old address (user id 0: never matched by an account) stay as they
    were. After the erasure the shop still links the anonymised reviews to the deleted
    account's id (the REST API cannot clear it), so the verifying read passes them over,
    and a second erasure finds nothing to do."""
    customer_id, reviews = seed_moved_reviewer(harness.sandbox)
    before = {name: harness.sandbox.review(i) for name, i in reviews.items()}
    subject = Subject(email="lies@example.com", external_id=customer_id)
    result = await harness.adapter.erase(subject)
    assert (result.found, result.mode) == (True, "hard_delete")
    assert "; 2 reviews anonymised; review text and rating are kept" in result.note
    for name in ("theirs", "theirs_spam"):
        review = harness.sandbox.review(reviews[name])
        assert review is not None
        assert (review["reviewer"], review["reviewer_email"]) == (
            "Anonymous",
            "deleted@site.invalid",
        )
        assert review["user_id"] == int(customer_id)  # WordPress keeps the link
    for name in ("another_s", "guest"):
        assert harness.sandbox.review(reviews[name]) == before[name]
    harness.sandbox.log.clear()
    assert await harness.adapter.find_records(subject, orders=True) == []
    again = await harness.adapter.erase(subject)
    assert not again.found
    assert harness.sandbox.log.writes() == []
    assert "lies" not in repr(harness.sandbox.log.entries).lower()


class RefusedReviews(httpx.AsyncBaseTransport):
    """The sandbox's transport, where every review listing is answered 401 (a key whose
    read access to reviews was taken away), counting how many reached the shop."""

    def __init__(self, sandbox: WooCommerceSandbox) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app())
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == f"{API}/products/reviews":
            self.refused += 1
            body = {"code": "woocommerce_rest_cannot_view", "data": {"status": 401}}
            return httpx.Response(401, json=body)
        return await self.inner.handle_async_request(request)


async def test_a_refused_review_listing_stops_the_person_s_other_review_listings(
    sandbox: WooCommerceSandbox,
) -> None:
    """A person's review listings (per address and per account, each in three statuses) are
    asked several at once, no more than the shop's concurrency: the first 401 ends them all.
    None starts after it, and none runs on after the access request has failed."""
    customer_id, _ = seed_moved_reviewer(sandbox)
    transport = RefusedReviews(sandbox)
    built = await make_harness(sandbox, transport=transport)
    subject = Subject(email="lies.oud@example.com", external_id=customer_id)
    async with built.client:
        with pytest.raises(FatalRemoteError):
            await built.adapter.find(subject)
        for _ in range(500):  # the daemon's loop runs on after the failed request
            await asyncio.sleep(0)
    assert transport.refused <= built.adapter.limits.max_concurrency, transport.refused


def bert_reviewed_under_the_address_anna_has_now(
    sandbox: WooCommerceSandbox,
) -> tuple[str, dict[str, int]]:
    """Bert reviewed from his account under an address he gave up since; Anna opened an
    account under it, and reviewed from hers. A guest's review under the address (user id
    0: no account names its writer) is there too. Anna's account id and the reviews."""
    bert = sandbox.add_person("gedeeld@example.com", "Bert", "Bos")
    reviews = {
        "bert_s": sandbox.add_review(
            "gedeeld@example.com", "Te zoet", reviewer="Bert", user_id=bert, rating=2
        ),
    }
    sandbox.touch("gedeeld@example.com", email="bert@example.com")
    anna = sandbox.add_person("gedeeld@example.com", "Anna", "Aalders")
    reviews["anna_s"] = sandbox.add_review(
        "gedeeld@example.com", "Lekker sterk", reviewer="Anna", user_id=anna
    )
    reviews["guest"] = sandbox.add_review("gedeeld@example.com", "Snel", reviewer="Gast")
    return anna, reviews


async def test_the_access_copy_leaves_out_a_review_another_account_wrote_under_the_address(
    harness: Harness,
) -> None:
    """Bert's review is under the address Anna has now, but the shop links it to Bert's
    account (``_links.reviewer``): found by the address, it is not Anna's, as an order
    another customer placed under it is not (connector.adapter.placed_by_another). Her copy
    lists her own review and the guest's under the address, as before, and not his."""
    anna, reviews = bert_reviewed_under_the_address_anna_has_now(harness.sandbox)
    found = await harness.adapter.find(Subject(email="gedeeld@example.com"))
    assert [r["id"] for r in found if r.get("type") is None] == [int(anna)]
    listed = [r["product_review"] for r in found if r.get("type") == "review"]
    assert [r["id"] for r in listed] == [reviews["anna_s"], reviews["guest"]]
    assert "reviewer" not in listed[1]["_links"]  # the guest's: no account


async def test_an_erasure_leaves_a_review_another_account_wrote_under_the_address_alone(
    harness: Harness,
) -> None:
    """Anna's erasure anonymises her own review and the guest's under her address, as
    before, and leaves Bert's, written from his account under the address she has now, as
    it was: it is his. The erasure asks each review for its reviewer link beside its id and
    e-mail (not its text or name), and the check after it does not count his review as
    left behind: a second erasure finds nothing to do."""
    anna, reviews = bert_reviewed_under_the_address_anna_has_now(harness.sandbox)
    bert_s = harness.sandbox.review(reviews["bert_s"])
    subject = Subject(email="gedeeld@example.com", external_id=anna)
    harness.sandbox.log.clear()
    result = await harness.adapter.erase(subject)
    assert (result.found, result.mode) == (True, "hard_delete")
    assert "; 2 reviews anonymised; review text and rating are kept" in result.note
    for name in ("anna_s", "guest"):
        review = harness.sandbox.review(reviews[name])
        assert review is not None
        assert (review["reviewer"], review["reviewer_email"]) == (
            "Anonymous",
            "deleted@site.invalid",
        )
    assert harness.sandbox.review(reviews["bert_s"]) == bert_s
    reads = [e for e in harness.sandbox.log.entries if e.path == f"{API}/products/reviews"]
    assert {e.query["_fields"] for e in reads} == {"id,reviewer_email,_links.reviewer"}
    harness.sandbox.log.clear()
    assert await harness.adapter.find_records(subject, orders=True) == []
    again = await harness.adapter.erase(subject)
    assert not again.found
    assert harness.sandbox.log.writes() == []
    assert "gedeeld@" not in repr(harness.sandbox.log.entries).lower()


async def test_a_guest_whose_orders_are_kept_has_their_reviews_anonymised_all_the_same(
    sandbox: WooCommerceSandbox,
) -> None:
    """Orders are kept for tax law (anonymise_orders off); a review is no tax record. The
    guest's review is anonymised, so the shop changed something: the result is an
    anonymisation, not "kept", and its note says both, the orders kept and the review
    anonymised."""
    order_id = sandbox.add_order(0, billing={"email": "gast@example.com", "first_name": "Gast"})
    review_id = sandbox.add_review("gast@example.com", "Top", reviewer="Gast")
    built = await make_harness(sandbox, config=settings(anonymise_orders=False))
    async with built.client:
        result = await built.adapter.erase(Subject(email="gast@example.com"))
    assert (result.found, result.mode) == (True, "anonymise")
    assert result.note.startswith(
        "no customer account; 1 guest order kept with their billing data (anonymise_orders "
        "is off: kept for tax law); 1 review anonymised"
    )
    order, review = sandbox.order(order_id), sandbox.review(review_id)
    assert order is not None and order["billing"]["email"] == "gast@example.com"
    assert review is not None and review["reviewer"] == "Anonymous"


async def test_a_review_of_a_product_in_the_trash_is_in_no_status_the_review_list_gives(
    harness: Harness,
) -> None:
    """A product moved to the trash takes its reviews along (``wp_trash_post_comments``:
    each, spam and trashed ones too, marked ``post-trashed``), a status the list's ``status``
    enum does not hold (400 ``rest_invalid_param``). The review is shown by its id alone,
    which nothing lists, so neither the access copy nor an erasure reaches it: a known
    limit. A review of another product under the person's address is reached as before."""
    sandbox = harness.sandbox
    binned_product = sandbox.add_review("an@example.com", "Te bitter", product_id=94)
    spam_on_it = sandbox.add_review("an@example.com", "Koop hier", product_id=94, status="spam")
    kept = sandbox.add_review("an@example.com", "Lekker sterk")
    sandbox.trash_product(94)
    reviews = f"{API}/products/reviews"
    async with await raw_client(sandbox) as client:
        listed = [
            [r["id"] for r in (await client.get(reviews, params={"status": status})).json()]
            for status in ("approved", "all", "hold", "spam", "trash")
        ]
        refused = await client.get(reviews, params={"status": "post-trashed"})
        shown = await client.get(f"{reviews}/{binned_product}")
    assert listed == [[kept], [kept], [], [], []]
    assert (refused.status_code, refused.json()["code"]) == (400, "rest_invalid_param")
    assert shown.status_code == 200 and shown.json()["status"] == "post-trashed"
    copy = await harness.adapter.find(Subject(email="an@example.com"))
    assert [r["product_review"]["id"] for r in copy if r.get("type") == "review"] == [kept]
    result = await harness.adapter.erase(Subject(email="an@example.com"))
    assert "1 review anonymised" in result.note
    for review_id in (binned_product, spam_on_it):
        left = sandbox.review(review_id)
        assert left is not None and left["reviewer_email"] == "an@example.com"


@pytest.fixture
def churning_shop(monkeypatch: pytest.MonkeyPatch) -> WooCommerceSandbox:
    """250 customers and a shop that changes while a pull runs: before each customers list
    after the first, the two lowest ids are deleted (a spam clean-up, erasures) and one new
    customer signs up."""
    sandbox = WooCommerceSandbox()
    for n in range(250):
        sandbox.add_person(f"klant{n}@voorbeeld.nl", f"Klant{n}")
    calls = {"n": 0}
    listed = sandbox_module.list_customers

    def churning(store: ShopStore, request: Request) -> Any:
        calls["n"] += 1
        if calls["n"] > 1 and "email" not in request.query_params:
            for gone in sorted(store.customers)[:2]:
                store.delete(gone)
            sandbox.add_person(f"nieuw{calls['n']}@voorbeeld.nl", "Nieuw")
        return listed(store, request)

    monkeypatch.setattr(sandbox_module, "list_customers", churning)
    return sandbox


async def test_the_scan_passes_over_nobody_while_accounts_are_deleted_and_others_sign_up(
    churning_shop: WooCommerceSandbox,
) -> None:
    """X-WP-Total drops by one a read while the list moves up by two: the reads back by the
    drop ran out with the page start moved back but the page the one read from further on,
    the check for a page starting past the highest id delivered had no reads left, and
    the customers between were never delivered, the scan marked complete all the same."""
    sandbox = churning_shop
    before = set(sandbox.store.customers)
    built = await make_harness(sandbox)
    async with built.client:
        pages = await collect(built.adapter, None)
    delivered = [r["id"] for p in pages for r in p.records]
    assert pages[-1].complete
    assert sorted(before & set(sandbox.store.customers) - set(delivered)) == []
    assert len(delivered) == len(set(delivered))  # nobody twice either


async def test_a_read_only_key_reads_and_is_refused_every_write(
    sandbox: WooCommerceSandbox,
) -> None:
    """WooCommerce checks the key's permissions before the route runs
    (WC_REST_Authentication::check_permissions): a key made with Read permissions lists
    customers, and a write is 401 woocommerce_rest_authentication_error "The API key
    provided does not have write permissions.", the code a wrong secret gets; nothing
    changes."""
    sandbox.add_person("a@example.nl", "A", "B")
    sandbox.key_permissions = "read"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        auth=("ck_sandbox", "cs_sandbox"),
    ) as http:
        listed = await http.get(f"{API}/customers", params={"role": "all"})
        created = await http.post(f"{API}/customers/batch", json={"create": [{"email": "n@x.nl"}]})
    assert listed.status_code == 200 and len(listed.json()) == 1
    assert created.status_code == 401
    assert created.json()["code"] == "woocommerce_rest_authentication_error"
    assert created.json()["message"] == "The API key provided does not have write permissions."
    assert not sandbox.holds("n@x.nl")


async def test_the_online_check_names_a_key_that_may_not_write(
    sandbox: WooCommerceSandbox,
) -> None:
    """A Read key passes every read a ``find`` makes; ``check_settings`` sends an empty
    batch (which changes nothing) and fails saying the key may not write, with neither key
    nor secret in the text. A Read/Write key passes it, and nobody is created."""
    sandbox.add_person("a@example.nl", "A", "B")
    built = await make_harness(sandbox)
    async with built.client:
        await built.adapter.check_settings()
        sandbox.key_permissions = "read"
        await built.adapter.find(Subject(email="a@example.nl"))
        with pytest.raises(FatalRemoteError) as caught:
            await built.adapter.check_settings()
    text = str(caught.value)
    assert caught.value.status == 401 and "may not write" in text and "Read/Write" in text
    assert "ck_sandbox" not in text and "cs_sandbox" not in text
    assert [c["email"] for c in sandbox.store.customers.values()] == ["a@example.nl"]


async def test_the_sandbox_reads_a_star_at_the_start_of_the_e_mail_filter_as_wordpress_does(
    sandbox: WooCommerceSandbox,
) -> None:
    """WP_User_Query takes a "*" at the start of the search as a wildcard (a LIKE, any
    case): ``email=*bob@example.nl`` lists every address ending so; without one the filter
    is an exact match."""
    sandbox.add_person("jimbob@example.nl")
    sandbox.add_person("Bob@Example.nl")
    sandbox.add_person("bob@example.com")
    async with await raw_client(sandbox) as client:
        wild = await client.get(
            f"{API}/customers", params={"email": "*bob@example.nl", "role": "all"}
        )
        exact = await client.get(
            f"{API}/customers", params={"email": "bob@example.nl", "role": "all"}
        )
    assert sorted(c["email"] for c in wild.json()) == ["Bob@Example.nl", "jimbob@example.nl"]
    assert [c["email"] for c in exact.json()] == ["Bob@Example.nl"]


async def test_an_address_starting_with_a_star_erases_and_finds_only_its_own_account(
    harness: Harness,
) -> None:
    """An address may begin with "*", which WordPress's e-mail filter reads as a wildcard:
    the lookup lists jimbob@ for *bob@. The first hit was taken for the person's account and
    deleted by their erasure; only the account holding the address itself is theirs."""
    stranger = harness.sandbox.add_person("jimbob@example.nl")
    nobody = await harness.adapter.erase(Subject(email="*bob@example.nl"))
    assert not nobody.found
    assert harness.sandbox.holds("jimbob@example.nl")
    assert await harness.adapter.find(Subject(email="*bob@example.nl")) == []
    own = harness.sandbox.add_person("*bob@example.nl")
    (found, *_orders) = await harness.adapter.find(Subject(email="*bob@example.nl"))
    assert str(found["id"]) == own
    erased = await harness.adapter.erase(Subject(email="*bob@example.nl"))
    assert erased.found
    assert not harness.sandbox.holds("*bob@example.nl")
    assert harness.sandbox.holds("jimbob@example.nl")
    assert harness.sandbox.store.get(int(stranger)) is not None


async def test_the_online_check_names_a_configured_role_the_shop_does_not_know(
    sandbox: WooCommerceSandbox,
) -> None:
    """A role name is taken at load whatever it is; ``check --online`` asks the shop about
    each one not WordPress's own and names the one it answers 400 ``rest_invalid_param``
    (a typo, or a plugin's role whose plugin is off). A role the shop registered passes."""
    sandbox.store.plugin_roles.append("wholesale_customer")
    built = await make_harness(sandbox, config=settings(role=["customer", "wholesale_customer"]))
    async with built.client:
        await built.adapter.check_settings()
    built = await make_harness(sandbox, config=settings(role=["customer", "wholesale_custmer"]))
    async with built.client:
        with pytest.raises(FatalRemoteError) as caught:
            await built.adapter.check_settings()
    assert caught.value.status == 400 and "'wholesale_custmer'" in str(caught.value)
