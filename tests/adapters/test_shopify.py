"""The Shopify adapter against its sandbox, in process (no network, no real sleeping)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from adapters.shopify import SPEC, ShopifyAdapter, ShopifySandbox, ShopifySettings
from adapters.shopify.adapter import ORDERS_UNREAD, decode_cursor
from adapters.shopify.documents import SEARCH_MOST_PAGES, SEARCH_PAGE_SIZE
from adapters.shopify.sandbox import AUTH_ERROR
from adapters.shopify.settings import (
    DEFAULT_API_VERSION,
    client_config,
    serving_version,
    throttle_wait,
    wait_hint,
)
from adapters.shopify.webhooks import parse_delivery, webhook_signature
from connector.adapter import Adapter, OutboundRecord, Page, Subject, WebhookRequest, body_key
from connector.cli import main
from connector.config import load_config
from connector.errors import (
    ConfigError,
    FatalRemoteError,
    RateLimitedError,
    RecordError,
    RemoteError,
    RetryableError,
)
from connector.http import RetryPolicy, SystemClient
from connector.mapping import load_mapping
from connector.others import LEFT_OUT
from connector.systems import open_systems
from tests.conftest import MASTER_KEY, FakeClock, SimulatedTime

SHOP_DOMAIN = "klantsync-test.myshopify.com"
BASE_URL = f"https://{SHOP_DOMAIN}"
GRAPHQL = f"/admin/api/{DEFAULT_API_VERSION}/graphql.json"
TOKEN = "shpat_sandbox"
SECRET = "shopify-app-secret"
HOOK_URL = "https://klantsync.example.nl/webhooks/shop"
MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "shopify.toml"
T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC).timestamp()


@dataclass
class Harness:
    """A sandbox, the adapter wired to it, its clocks, and what the client slept."""

    sandbox: ShopifySandbox
    adapter: ShopifyAdapter
    client: SystemClient
    clock: FakeClock
    wall: FakeClock
    sleeps: list[float] = field(default_factory=list)


def make_settings(token: str = TOKEN, **overrides: Any) -> ShopifySettings:
    return ShopifySettings(
        adapter="shopify",
        base_url=BASE_URL,
        mapping=MAPPING,
        credentials={"access_token": SecretStr(token)},
        **overrides,
    )


def make_harness(
    sandbox: ShopifySandbox,
    clock: FakeClock,
    wall: FakeClock,
    *,
    token: str = TOKEN,
    attempts: int = 4,
    advance_on_sleep: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: Any,
) -> Harness:
    config = make_settings(token, **settings)
    client_side = client_config(config)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        # Retry waits move the sandbox's clock, so its cost bucket refills as it would.
        sleeps.append(seconds)
        if advance_on_sleep:
            clock.advance(seconds)

    client = SystemClient(
        system="shop",
        base_url=BASE_URL,
        headers=client_side.headers,
        wait_hint=client_side.wait_hint,
        transport=transport or httpx.ASGITransport(app=sandbox.app()),
        retry=RetryPolicy(attempts=attempts, base_seconds=0, sleep=fake_sleep),
        clock=clock,
    )
    return Harness(sandbox, ShopifyAdapter(client, config), client, clock, wall, sleeps)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sandbox(clock: FakeClock, wall: FakeClock) -> ShopifySandbox:
    return ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)


@pytest.fixture
async def shop(
    sandbox: ShopifySandbox, clock: FakeClock, wall: FakeClock
) -> AsyncIterator[Harness]:
    harness = make_harness(sandbox, clock, wall)
    yield harness
    await harness.client.aclose()


@pytest.fixture
async def raw(sandbox: ShopifySandbox) -> AsyncIterator[Callable[..., Any]]:
    """Send one GraphQL call the adapter never makes; return (status, body)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"X-Shopify-Access-Token": TOKEN},
    ) as http:

        async def call(query: str, variables: dict[str, Any] | None = None) -> Any:
            response = await http.post(GRAPHQL, json={"query": query, "variables": variables})
            return response.status_code, response.json()

        yield call


async def collect(adapter: ShopifyAdapter, cursor: str | None) -> list[Page]:
    return [page async for page in adapter.pull(cursor)]


def seed(sandbox: ShopifySandbox, wall: FakeClock, n: int, step: float = 60.0) -> list[str]:
    """``n`` customers created ``step`` seconds apart; their e-mails."""
    emails = []
    for i in range(n):
        email = f"klant{i}@example.com"
        sandbox.add_person(email, "Klant", f"Nummer{i}", "+31612345678", city="Utrecht")
        emails.append(email)
        wall.advance(step)
    return emails


def emails_of(pages: list[Page]) -> list[str]:
    return [str(r["email"]) for p in pages for r in p.records]


# -- contract and configuration ------------------------------------------------------------


def test_adapter_meets_the_protocol_and_spec_wires_it(shop: Harness) -> None:
    """The adapter satisfies the protocol, the spec fits together, and upsert is not claimed."""
    assert isinstance(shop.adapter, Adapter)
    assert SPEC.kind == shop.adapter.kind == "shopify"
    assert SPEC.settings_model is ShopifySettings and SPEC.factory is ShopifyAdapter
    assert SPEC.sandbox().credentials() == {"access_token": TOKEN}
    assert shop.adapter.capabilities == frozenset({"pull", "find", "erase", "webhooks"})


def test_settings_limits_and_client_config() -> None:
    """Defaults, the 250 page cap, the version form, cost-based limits and the token header."""
    settings = make_settings()
    assert (settings.api_version, settings.plan, settings.overlap_seconds) == (
        DEFAULT_API_VERSION,
        "standard",
        300,
    )
    assert ShopifySettings.required_credentials == ("access_token",)
    limits = SPEC.limits(settings)
    assert (limits.batch_size, limits.page_size, limits.rate, limits.max_concurrency) == (
        1,
        100,
        {},
        2,
    )
    assert SPEC.limits(make_settings(page_size=250, max_concurrency=1)).page_size == 250
    with pytest.raises(ValueError, match="page_size"):
        make_settings(page_size=251)
    with pytest.raises(ValueError, match="api_version"):
        make_settings(api_version="2025-1")
    config = SPEC.client_config(settings)
    assert config.headers == {"X-Shopify-Access-Token": TOKEN} and config.wait_hint is wait_hint


def test_the_shipped_api_version_is_one_shopify_still_serves() -> None:
    """The default (and config.example.toml's) api_version was 2025-01, which Shopify stopped
    serving in January 2026: every call of a default deployment was answered by whatever
    version was oldest then. On this release's date the default is served as itself, and is
    for most of the 12 months Shopify promises (a fixed date: the test does not age)."""
    released = datetime(2026, 11, 30, tzinfo=UTC)
    assert ShopifySettings.model_fields["api_version"].default == DEFAULT_API_VERSION
    example = (MAPPING.parents[1] / "config.example.toml").read_text(encoding="utf-8")
    assert f'# api_version = "{DEFAULT_API_VERSION}"' in example
    assert serving_version(DEFAULT_API_VERSION, released) == DEFAULT_API_VERSION
    assert serving_version(DEFAULT_API_VERSION, released + timedelta(days=300)) == (
        DEFAULT_API_VERSION
    )


@pytest.mark.parametrize(
    ("version", "on", "served"),
    [
        ("2025-01", datetime(2025, 12, 31, 23, tzinfo=UTC), "2025-01"),
        ("2025-01", datetime(2026, 1, 1, tzinfo=UTC), "2025-04"),
        ("2025-01", datetime(2026, 11, 30, tzinfo=UTC), "2026-01"),
        ("2025-10", datetime(2026, 9, 30, tzinfo=UTC), "2025-10"),
        ("2025-10", datetime(2026, 10, 1, tzinfo=UTC), "2026-01"),
        ("2026-02", datetime(2026, 11, 30, tzinfo=UTC), "2026-01"),  # no such release
        ("unstable", datetime(2026, 11, 30, tzinfo=UTC), "unstable"),
    ],
)
def test_a_retired_api_version_falls_forward_to_the_oldest_supported(
    version: str, on: datetime, served: str
) -> None:
    assert serving_version(version, on) == served


async def test_upsert_is_refused_before_anything_is_sent(shop: Harness) -> None:
    """Shopify is a source here: upsert fails fatally and the store sees no call."""
    record = OutboundRecord(ref="r", email="a@example.com", external_id=None, fields={})
    with pytest.raises(FatalRemoteError, match="UPSERT_NOT_SUPPORTED"):
        await shop.adapter.upsert([record])
    assert shop.sandbox.log.entries == []


# -- pull ----------------------------------------------------------------------------------


async def test_pull_pages_end_and_the_cursor_only_moves_forward(
    sandbox: ShopifySandbox, clock: FakeClock, wall: FakeClock
) -> None:
    """Five customers come as 2/2/1, the last complete; a page cursor resumes after its page."""
    emails = seed(sandbox, wall, 5)
    harness = make_harness(sandbox, clock, wall, page_size=2)
    async with harness.client:
        pages = await collect(harness.adapter, None)
        assert [len(p.records) for p in pages] == [2, 2, 1]
        assert [p.complete for p in pages] == [False, False, True]
        assert emails_of(pages) == emails
        assert all(p.cursor for p in pages)
        resumed = await collect(harness.adapter, pages[0].cursor)
        assert emails_of(resumed) == emails[2:]
        final = decode_cursor(pages[-1].cursor)
        assert final.after is None and final.since == "2025-03-04T08:59:00Z"
        again = await collect(harness.adapter, pages[-1].cursor)
        assert decode_cursor(again[-1].cursor).since == final.since
    assert set(sandbox.operations) == {"query customers"}


async def test_overlap_rereads_the_boundary_and_an_idle_pull_returns_only_it(
    shop: Harness,
) -> None:
    """After a pull, the next reads only records within overlap_seconds of the newest seen."""
    seed(shop.sandbox, shop.wall, 4, step=3_600)  # updatedAt 09:00, 10:00, 11:00, 12:00
    shop.wall.now -= 3_600 - 120  # the next change lands at 12:02
    shop.sandbox.touch("klant2@example.com", note="belt terug")
    first = await collect(shop.adapter, None)
    assert len(emails_of(first)) == 4
    assert emails_of(first)[-1] == "klant2@example.com"  # sorted by updatedAt
    cursor = decode_cursor(first[-1].cursor)
    assert cursor.since == "2025-03-04T11:57:00Z"  # 12:02 minus 300 s
    idle = await collect(shop.adapter, first[-1].cursor)
    # Only the overlap comes again: 12:00 and 12:02 lie within 300 s of 12:02.
    assert emails_of(idle) == ["klant3@example.com", "klant2@example.com"]
    assert decode_cursor(idle[-1].cursor).since == cursor.since
    shop.wall.now = datetime(2025, 3, 4, 14, 0, tzinfo=UTC).timestamp()
    shop.sandbox.touch("klant0@example.com", firstName="Karin")
    changed = await collect(shop.adapter, idle[-1].cursor)
    assert emails_of(changed) == [
        "klant3@example.com",
        "klant2@example.com",
        "klant0@example.com",
    ]
    assert decode_cursor(changed[-1].cursor).since == "2025-03-04T13:55:00Z"


async def test_a_date_granular_filter_only_adds_rereads(clock: FakeClock, wall: FakeClock) -> None:
    """With Shopify comparing dates only, the idle pull re-reads that day but misses nothing."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, date_granular=True)
    seed(sandbox, wall, 3, step=3_600)
    harness = make_harness(sandbox, clock, wall)
    async with harness.client:
        first = await collect(harness.adapter, None)
        idle = await collect(harness.adapter, first[-1].cursor)
        assert len(emails_of(idle)) == 3  # the whole day again: duplicates, which hash away
        wall.now = datetime(2025, 3, 5, 8, 0, tzinfo=UTC).timestamp()
        sandbox.touch("klant1@example.com", lastName="Nieuw")
        later = await collect(harness.adapter, idle[-1].cursor)
    assert "klant1@example.com" in emails_of(later)
    assert decode_cursor(later[-1].cursor).since == "2025-03-05T07:55:00Z"


async def test_an_unreadable_cursor_starts_a_full_pull(shop: Harness) -> None:
    """A cursor that is not ours reads everything again rather than skipping anyone."""
    seed(shop.sandbox, shop.wall, 3)
    pages = await collect(shop.adapter, "not json")
    assert len(emails_of(pages)) == 3
    assert decode_cursor('{"since": "yesterday"}').since is None


async def test_pull_stops_when_shopify_repeats_a_page_cursor(shop: Harness) -> None:
    """A store that hands back the same endCursor again makes the pull fail, not loop."""

    def same_page(request: httpx.Request) -> httpx.Response:
        node = {"id": "gid://shopify/Customer/1", "email": "x@example.com", "updatedAt": None}
        page = {"nodes": [node], "pageInfo": {"hasNextPage": True, "endCursor": "abc"}}
        return httpx.Response(200, json={"data": {"customers": page}})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(same_page)
    )
    async with harness.client:
        with pytest.raises(FatalRemoteError, match="PAGING_LOOP"):
            await collect(harness.adapter, None)


async def test_a_page_with_more_to_come_but_no_cursor_fails_the_pull_rather_than_end_it(
    shop: Harness,
) -> None:
    """A page that says there is more but gives no endCursor cannot be followed. Taken as the
    last page, the pull ended there and moved its bound to the newest change it had seen, so
    every customer on the pages after it, changed earlier, was never read, then or later."""

    def cut_short(request: httpx.Request) -> httpx.Response:
        node = {"id": "gid://shopify/Customer/1", "email": "x@example.com", "updatedAt": None}
        page = {"nodes": [node], "pageInfo": {"hasNextPage": True, "endCursor": None}}
        return httpx.Response(200, json={"data": {"customers": page}})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(cut_short)
    )
    async with harness.client:
        pages: list[Page] = []
        with pytest.raises(FatalRemoteError, match="NO_END_CURSOR"):
            async for page in harness.adapter.pull(None):
                pages.append(page)
    assert not any(p.complete for p in pages)


async def test_pulled_nodes_map_and_unmapped_fields_are_withheld(shop: Harness) -> None:
    """Mapped fields become canonical; only SUBSCRIBED is consent; the rest never flows."""
    an_id = shop.sandbox.add_person(
        "An@Example.com",
        " an ",
        "de vries",
        "06 12345678",
        address1="Oudegracht 1",
        zip="3511ab",
        city="Utrecht",
        country_code="NL",
        company="Koffie BV",
        address_phone="+31301234567",
        marketing_state="SUBSCRIBED",
        note="klaagt vaak",
        tags=["vip"],
    )
    for state in ("NOT_SUBSCRIBED", "PENDING", "UNSUBSCRIBED", "REDACTED", "INVALID"):
        shop.sandbox.add_person(f"{state.lower()}@example.com", marketing_state=state)
    mapping = load_mapping(MAPPING)
    assert mapping.outbound_fields == []  # nothing is ever written to Shopify
    withheld: Counter[str] = Counter()
    records = [r for p in await collect(shop.adapter, None) for r in p.records]
    people = [mapping.inbound(r, withheld) for r in records]
    an = people[0]
    assert mapping.record_id(records[0]) == an_id
    assert an.email == "an@example.com" and an["first_name"] == "An"
    assert an["phone"] == "+31612345678" and an["postcode"] == "3511 AB"
    assert (an["country"], an["company"], an["customer_since"]) == ("NL", "Koffie BV", "2025-03-04")
    assert an["marketing_consent"] is True and an.has_consent("marketing")
    assert not any(p.has_consent("marketing") for p in people[1:])
    assert {"note", "defaultAddress.phone", "emailMarketingConsent.consentUpdatedAt"} <= set(
        withheld
    )
    assert not any("tags" in p or "note" in p for p in people)
    assert "id" not in withheld and "updatedAt" not in withheld


def _mapping_with(tmp_path: Path, fields: dict[str, str]) -> Path:
    """The shipped Shopify mapping with ``fields`` (canonical name -> path) added."""
    added = "".join(
        f'\n[fields.{name}]\npath = "{path}"\npurpose = "Order fulfilment"\ndirection = "in"\n'
        for name, path in fields.items()
    )
    mapping = tmp_path / "shopify.toml"
    mapping.write_text(MAPPING.read_text() + added)
    return mapping


def _config_reading(tmp_path: Path, mapping: Path) -> Path:
    """A config with this store alone, read with ``mapping``."""
    (tmp_path / "master.key").write_text(MASTER_KEY)
    (tmp_path / "master.key").chmod(0o600)
    (tmp_path / "token").write_text(TOKEN)
    path = tmp_path / "klantsync.toml"
    path.write_text(
        f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"

[systems.shopify]
adapter = "shopify"
base_url = "{BASE_URL}"
mapping = "{mapping}"
credentials = {{ access_token = "file:token" }}
"""
    )
    return path


async def test_a_field_added_to_the_shopify_mapping_is_read_by_the_next_pull(
    sandbox: ShopifySandbox, tmp_path: Path
) -> None:
    """README: after a field is added to a mapping, the next run reads the source in full
    once, so Shopify offers the new field. The pull asked for a fixed selection, so a field
    mapped to a path outside it (`state` from `defaultAddress.province`) loaded without a
    word and never arrived. Reads now ask for what the mapping reads, and no more: the staff
    note and tags, which no mapping reads, stay in Shopify, while access still shows them."""
    email = "noord@example.nl"
    sandbox.add_person(email, "Noor", "Holland", city="Haarlem", note="belt vaak", tags=["vip"])
    sandbox.touch(email, **{"defaultAddress.province": "Noord-Holland"})
    mapping = _mapping_with(tmp_path, {"state": "defaultAddress.province"})
    config = load_config(_config_reading(tmp_path, mapping))
    systems = open_systems(config, transports={"shopify": httpx.ASGITransport(app=sandbox.app())})
    system = systems["shopify"]
    try:
        assert isinstance(system.adapter, ShopifyAdapter)
        (record,) = [r for p in await collect(system.adapter, None) for r in p.records]
        (person,) = await system.adapter.find_people(Subject(email=email))
        held = await system.adapter.find(Subject(email=email))
    finally:
        await system.client.aclose()
    withheld: Counter[str] = Counter()
    assert system.mapping.inbound(record, withheld).get("state") == "Noord-Holland"
    assert not withheld  # Shopify answers the selection asked, and nothing beside it
    read = {"id", "email", "updatedAt", "firstName", "lastName", "phone", "createdAt"}
    read |= {"defaultAddress", "emailMarketingConsent"}
    assert set(record) == set(person) == read == system.adapter.asked_fields
    assert set(record["defaultAddress"]) == {
        "address1", "address2", "city", "zip", "countryCodeV2", "company", "province",
    }  # fmt: skip
    assert set(record["emailMarketingConsent"]) == {"marketingState"}
    (customer,) = [r for r in held if r.get("type") != "order"]
    assert customer["note"] == "belt vaak" and customer["tags"] == ["vip"]
    assert customer["defaultAddress"]["province"] == "Noord-Holland"
    assert customer["addresses"][0]["city"] == "Haarlem"


def test_a_shopify_mapping_path_that_can_name_no_field_is_refused_when_the_config_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path part that is no GraphQL field name could not be asked for. Refused by the
    adapter alone, when a sync opened the systems, it passed `check` (which is there to
    catch bad configuration before a sync, and opens no system) and a sync refused it
    only after making the store. Now the config load refuses it, by the adapter's own rule:
    `check` and `sync` alike exit 2 naming the mapping file and the key, and make no store."""
    mapping = _mapping_with(tmp_path, {"state": "defaultAddress.province-code"})
    config = _config_reading(tmp_path, mapping)
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert refused.value.file == str(mapping) and refused.value.key == "fields.state.path"
    for command in ("check", "sync"):
        assert main(["-c", str(config), command, "--json"]) == 2, command
        answer = json.loads(capsys.readouterr().out)
        assert answer["error"] == "config", command
        assert (answer["file"], answer["key"]) == (str(mapping), "fields.state.path")
    assert not (tmp_path / "klantsync.db").exists()
    settings = make_settings().model_copy(update={"mapping": mapping})
    adapter = ShopifyAdapter(SystemClient(system="shop", base_url=BASE_URL), settings)
    with pytest.raises(ConfigError) as told:
        adapter.ask_only_for_paths({"defaultAddress.province-code": "fields.state.path"})
    assert (told.value.file, told.value.key) == (str(mapping), "fields.state.path")


async def test_a_page_of_a_wide_selection_stays_within_shopifys_cost_ceiling(
    clock: FakeClock, wall: FakeClock
) -> None:
    """Each object a mapping reads costs a point a customer: at 250 a page, a mapping
    reading two more (what they spent, their SMS consent) asked 1253 points, and Shopify
    refuses any query over 1000, every pull. The page is cut to what fits."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)
    emails = seed(sandbox, wall, 3)
    harness = make_harness(sandbox, clock, wall, page_size=250)
    paths = load_mapping(MAPPING).source_paths()
    paths |= {"amountSpent.amount": "fields.spent.path"}
    paths |= {"smsMarketingConsent.marketingState": "fields.sms.path"}
    harness.adapter.ask_only_for_paths(paths)
    try:
        pages = await collect(harness.adapter, None)
    finally:
        await harness.client.aclose()
    assert emails_of(pages) == emails
    cost = harness.adapter.last_cost
    assert cost is not None and 0 < cost["requestedQueryCost"] <= 1000


# -- throttling ----------------------------------------------------------------------------


async def test_throttled_200_waits_what_the_cost_says_then_succeeds(shop: Harness) -> None:
    """A THROTTLED answer (HTTP 200) is retried after (requested - available) / restoreRate,
    and told as a rate limit to whoever counts them (the daemon's metrics)."""
    seed(shop.sandbox, shop.wall, 3)
    bucket = shop.sandbox.bucket
    assert bucket.take(bucket.available() - 100)  # leave 100 points; a page asks for 303
    told: list[str] = []
    shop.client.rate_limit_observer = told.append
    pages = await collect(shop.adapter, None)
    assert len(emails_of(pages)) == 3
    assert shop.sandbox.throttled == 1 and shop.client.stats.rate_limited == 1
    assert told == [shop.client.system]
    assert len(shop.sleeps) == 1 and 2.03 <= shop.sleeps[0] <= 2.03 + 0.25
    assert shop.adapter.last_cost is not None
    assert shop.adapter.last_cost["requestedQueryCost"] == 303


async def test_throttled_429_is_waited_out_by_the_client(clock: FakeClock, wall: FakeClock) -> None:
    """Where Shopify throttles with 429, the client's wait hint reads the same cost figures."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, throttle_status=429)
    seed(sandbox, wall, 2)
    assert sandbox.bucket.take(sandbox.bucket.available() - 2)
    harness = make_harness(sandbox, clock, wall)
    async with harness.client:
        pages = await collect(harness.adapter, None)
    assert len(emails_of(pages)) == 2
    assert [e.status for e in sandbox.log.entries] == [429, 200]
    assert len(harness.sleeps) == 1 and 3.01 <= harness.sleeps[0] <= 3.26  # (303 - 2) / 100


async def test_an_injected_429_is_shopifys_throttled_answer_with_the_cost_figures(
    sandbox: ShopifySandbox, raw: Callable[..., Any]
) -> None:
    """A 429 storm (an injected fault) answers as Shopify throttles [doc]: THROTTLED with
    ``extensions.cost`` (the query's requested cost, the bucket emptied), not a bare
    ``{"errors": "Too Many Requests"}`` that no client reads as Shopify's throttle."""
    sandbox.add_person("a@example.nl", "A", "B")
    sandbox.faults.fail_status, sandbox.faults.fail_next = 429, 1
    status, body = await raw("{ customers(first: 1) { nodes { id } } }")
    assert status == 429
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 3 and cost["actualQueryCost"] is None
    assert cost["throttleStatus"]["currentlyAvailable"] == 0
    assert {"maximumAvailable", "restoreRate"} <= set(cost["throttleStatus"])
    assert sandbox.throttled == 1


async def test_an_injected_429_storm_is_waited_out_by_its_cost_figures(shop: Harness) -> None:
    """The client reads an injected 429 as Shopify's throttle: it waits what the figures
    say (the query's cost at the restore rate) and the pull goes on."""
    seed(shop.sandbox, shop.wall, 3)
    shop.sandbox.faults.fail_status, shop.sandbox.faults.fail_next = 429, 1
    pages = await collect(shop.adapter, None)
    assert len(emails_of(pages)) == 3
    assert [e.status for e in shop.sandbox.log.entries] == [429, 200]
    assert shop.client.stats.rate_limited == 1
    assert len(shop.sleeps) == 1 and 3.03 <= shop.sleeps[0] <= 3.03 + 0.25  # 303 / 100


async def test_a_throttled_answer_holds_back_the_stores_other_calls_until_the_bucket_refills() -> (
    None
):
    """THROTTLED (HTTP 200) says the app's cost bucket is empty, for every call of the
    store, not only the one it answered: the other call in flight waits until the bucket
    holds what the throttled query asked for, rather than be sent into it and be throttled
    too. A is answered THROTTLED at 1000, 300 points short at 100 a second; B, started once
    that answer is in, is not sent before 1003."""
    time = SimulatedTime()
    sent: list[tuple[str, float]] = []
    answered_throttled = asyncio.Event()
    throttled = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {
            "cost": {
                "requestedQueryCost": 300,
                "actualQueryCost": None,
                "throttleStatus": {
                    "maximumAvailable": 1000.0,
                    "currentlyAvailable": 0,
                    "restoreRate": 100.0,
                },
            }
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((json.loads(request.content)["variables"]["query"], time.now))
        if len(sent) == 1:
            answered_throttled.set()
            return httpx.Response(200, json=throttled)
        return httpx.Response(200, json={"data": {"customers": {"nodes": []}}})

    client = SystemClient(
        system="shop",
        base_url=BASE_URL,
        headers=client_config(make_settings()).headers,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=4, base_seconds=0, sleep=time.sleep),
        clock=time.clock,
    )
    adapter = ShopifyAdapter(client, make_settings())

    async def once_a_is_throttled() -> list[dict[str, Any]]:
        await answered_throttled.wait()
        return await adapter.find_people(Subject(email="b@example.nl"))

    async with client:
        first = adapter.find_people(Subject(email="a@example.nl"))
        await time.run(asyncio.gather(first, once_a_is_throttled()))
    b_sent = [at for query, at in sent if "b@example.nl" in query]
    assert b_sent and all(at >= 1003.0 for at in b_sent), f"B sent into the empty bucket: {sent}"
    assert [query for query, _ in sent].count('email:"a@example.nl"') == 2


async def test_throttling_that_never_clears_surfaces_as_rate_limited(shop: Harness) -> None:
    """If the bucket never refills, the pull gives up with a retryable RateLimitedError."""
    harness = make_harness(shop.sandbox, shop.clock, shop.wall, advance_on_sleep=False)
    assert shop.sandbox.bucket.take(shop.sandbox.bucket.available())
    async with harness.client:
        with pytest.raises(RateLimitedError) as caught:
            await collect(harness.adapter, None)
    assert caught.value.detail == "THROTTLED" and caught.value.wait_seconds == 3.03
    assert shop.sandbox.throttled == 4  # four attempts in all


def test_throttle_wait_and_wait_hint_read_the_cost_figures() -> None:
    """The wait is computed from cost; without figures a 429 falls back to Retry-After."""
    body = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {
            "cost": {
                "requestedQueryCost": 752,
                "actualQueryCost": None,
                "throttleStatus": {
                    "maximumAvailable": 2000.0,
                    "currentlyAvailable": 393,
                    "restoreRate": 100.0,
                },
            }
        },
    }
    assert throttle_wait(body) == 3.59
    assert wait_hint(httpx.Response(429, json=body)) == 3.59
    assert throttle_wait({"errors": []}) is None
    assert wait_hint(httpx.Response(429, headers={"Retry-After": "2.0"})) == 2.0
    assert wait_hint(httpx.Response(429, text="slow down")) is None


def test_a_throttled_answer_without_the_buckets_figures_waits_by_the_plans_restore_rate() -> None:
    """A THROTTLED answer that says what the query asked for but not what the bucket holds
    is waited out as if the bucket were empty, at the configured plan's restore rate (what
    ``plan`` is for): the wait was left to the client's short backoff, which sent the
    query back before the bucket could hold it."""
    body = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {"cost": {"requestedQueryCost": 752, "actualQueryCost": None}},
    }
    assert throttle_wait(body, 100.0) == 7.52
    assert throttle_wait(body, 1000.0) == 0.752
    assert throttle_wait(body) is None  # no rate known: the client's own backoff


# -- failures ------------------------------------------------------------------------------


async def test_a_wrong_token_is_fatal_and_never_echoed(shop: Harness) -> None:
    """A wrong access token is a 401 FatalRemoteError whose text holds no token; no retries."""
    harness = make_harness(shop.sandbox, shop.clock, shop.wall, token="shpat_wrong_canary")
    async with harness.client:
        with pytest.raises(FatalRemoteError) as caught:
            await collect(harness.adapter, None)
    assert caught.value.status == 401 and "canary" not in str(caught.value)
    assert harness.sleeps == []


async def test_the_sandbox_answers_shopifys_401_body() -> None:
    """Without a token the store answers 401 with Shopify's own error text."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ShopifySandbox().app()), base_url=BASE_URL
    ) as http:
        response = await http.post(
            GRAPHQL, json={"query": "{ customers(first: 1) { nodes { id } } }"}
        )
    assert response.status_code == 401 and response.json() == {"errors": AUTH_ERROR}


async def test_server_errors_and_resets_are_retried(shop: Harness) -> None:
    """Two 503s and a dropped connection are retried and the pull still completes."""
    seed(shop.sandbox, shop.wall, 2)
    shop.sandbox.faults.reset_next = 1
    shop.sandbox.faults.fail_next = 2
    pages = await collect(shop.adapter, None)
    assert len(emails_of(pages)) == 2 and shop.client.stats.retries == 3


async def test_persistent_server_errors_stay_retryable(shop: Harness) -> None:
    """When retries run out on 5xx the error is retryable, so the work stays queued."""
    shop.sandbox.faults.fail_next = 10
    with pytest.raises(RetryableError):
        await collect(shop.adapter, None)


async def test_graphql_errors_are_fatal_with_the_code_only(shop: Harness) -> None:
    """A GraphQL error becomes FatalRemoteError with its code; the message never surfaces."""

    def refused(request: httpx.Request) -> httpx.Response:
        error = {
            "message": "Access denied for jan@example.com",
            "extensions": {"code": "ACCESS_DENIED"},
        }
        return httpx.Response(200, json={"errors": [error], "data": {"customers": None}})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(refused)
    )
    async with harness.client:
        with pytest.raises(FatalRemoteError) as caught:
            await harness.adapter.find(Subject(email="jan@example.com"))
    # The scope named is the call's own (a search needs read_customers), never the message's.
    assert caught.value.detail == "ACCESS_DENIED: grant the app read_customers"
    assert "jan" not in str(caught.value) and "Access denied" not in str(caught.value)


@pytest.mark.parametrize("echoed", ["Jansen", "JANSEN", "0612345678", "31612345678"])
@pytest.mark.parametrize("where", ["errors", "userErrors"])
async def test_a_code_that_is_a_name_or_a_number_is_not_kept(
    shop: Harness, echoed: str, where: str
) -> None:
    """Only what has a code's form is kept of an error's ``code``: a lone word (a name) or
    digits (a phone number) in its place are someone's data, and the error says the
    generic code instead, as the client's rule has every other vendor's error do."""
    customer = {"id": "gid://shopify/Customer/9", "email": "an@example.com"}

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        if where == "errors":
            error = {"message": "refused", "extensions": {"code": echoed}}
            return httpx.Response(200, json={"errors": [error], "data": None})
        if "customerRequestDataErasure" in query:
            payload = {"customerId": None, "userErrors": [{"field": None, "code": echoed}]}
            return httpx.Response(200, json={"data": {"customerRequestDataErasure": payload}})
        return httpx.Response(200, json={"data": {"customers": {"nodes": [customer]}}})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(answer)
    )
    async with harness.client:
        with pytest.raises(RemoteError) as caught:
            await harness.adapter.erase(Subject(email="an@example.com"))
    assert echoed not in str(caught.value) and echoed.lower() not in str(caught.value).lower()
    assert caught.value.detail == ("GRAPHQL_ERROR" if where == "errors" else "USER_ERROR")


@pytest.mark.parametrize("code", ["ACCESS_DENIED", "undefinedField", "INVALID", "TAKEN"])
async def test_shopify_s_own_codes_are_kept(shop: Harness, code: str) -> None:
    """Shopify's codes keep their place in the error: upper snake case, GraphQL's
    camel-case validation codes (``undefinedField`` names a mapping's wrong path) and its
    one-word user error codes."""

    def answer(request: httpx.Request) -> httpx.Response:
        error = {"message": "refused", "extensions": {"code": code}}
        return httpx.Response(200, json={"errors": [error], "data": None})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(answer)
    )
    async with harness.client:
        with pytest.raises(FatalRemoteError) as caught:
            await harness.adapter.erase(Subject(email="an@example.com"))
    assert caught.value.detail.startswith(code)


async def test_the_sandbox_refuses_what_shopify_refuses(raw: Callable[..., Any]) -> None:
    """Unknown fields, pages over 250, over-costly queries and bad syntax are GraphQL errors."""
    status, body = await raw("{ customers(first: 1) { nodes { id dateOfBirth } } }")
    assert status == 200 and body["errors"][0]["extensions"]["code"] == "undefinedField"
    _, body = await raw("{ customers(first: 251) { nodes { id } } }")
    assert "250" in body["errors"][0]["message"]
    costly = "{ customers(first: 100) { nodes { orders(first: 50) { nodes { id } } } } }"
    _, body = await raw(costly)
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    _, body = await raw("{ customers(first: 1) { nodes { ...F } } }")
    assert "Parse error" in body["errors"][0]["message"]
    _, body = await raw("query Q($id: ID!) { customer(id: $id) { id } }", {})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"


CUSTOMER_ONE = "gid://shopify/Customer/7100000000001"


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        # A required argument left out: the field cannot run.
        ("{ customer { id } }", {}, "missingRequiredArguments"),
        ("{ order { id } }", {}, "missingRequiredArguments"),
        (
            "mutation { customerRequestDataErasure { customerId userErrors { code } } }",
            {},
            "missingRequiredArguments",
        ),
        # A variable declared and never used.
        (
            "query Q($id: ID!, $after: String) { customer(id: $id) { id } }",
            {"id": CUSTOMER_ONE},
            "variableNotUsed",
        ),
        # A variable of another type than its argument's, or nullable where it may not be.
        (
            "query Q($id: String!) { customer(id: $id) { id } }",
            {"id": CUSTOMER_ONE},
            "variableMismatch",
        ),
        ("query Q($id: ID) { customer(id: $id) { id } }", {"id": CUSTOMER_ONE}, "variableMismatch"),
        (
            "query Q($n: String) { customers(first: $n) { nodes { id } } }",
            {"n": "5"},
            "variableMismatch",
        ),
        # A literal of another type: an enum written as a string, a number as a string.
        (
            '{ customers(first: 1, sortKey: "UPDATED_AT") { nodes { id } } }',
            {},
            "argumentLiteralsIncompatible",
        ),
        ('{ customers(first: "1") { nodes { id } } }', {}, "argumentLiteralsIncompatible"),
    ],
)
async def test_the_sandbox_refuses_an_operation_shopify_would_not_run(
    raw: Callable[..., Any], sandbox: ShopifySandbox, query: str, variables: Any, code: str
) -> None:
    """Shopify validates a document against its schema before it runs any of it: a missing
    required argument, a variable declared and not used, or one (or a literal) of another
    type than its argument's is refused with HTTP 200 and the rule's code. The sandbox ran
    such documents (or failed with a 500), so an adapter document with such a fault passed
    every test and failed against every store."""
    sandbox.add_person("an@example.com", "An")
    status, body = await raw(query, variables)
    assert status == 200 and "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == [code]
    assert sandbox.operations == []  # refused before it ran


@pytest.mark.parametrize(
    "sort_key", ["ID", "UPDATED_AT", "CREATED_AT", "RELEVANCE", "NAME", "LOCATION"]
)
async def test_the_sandbox_pages_customers_by_every_customer_sort_key(
    raw: Callable[..., Any], sandbox: ShopifySandbox, sort_key: str
) -> None:
    """``CustomerSortKeys`` holds ``NAME`` and ``LOCATION`` beside ``ID``, ``UPDATED_AT``,
    ``CREATED_AT`` and ``RELEVANCE`` [doc]: a query sorted by any of them runs and pages
    through every customer once. The sandbox refused ``NAME`` and ``LOCATION`` as invalid
    values, an error Shopify never gives."""
    ids = {sandbox.add_person(f"k{i}@example.com", name) for i, name in enumerate("CAB")}
    query = (
        "query Q($after: String) { customers(first: 2, after: $after, sortKey: "
        + sort_key
        + ") { nodes { id } pageInfo { hasNextPage endCursor } } }"
    )
    seen: list[str] = []
    after = None
    for _ in range(3):
        status, body = await raw(query, {"after": after})
        assert status == 200 and "errors" not in body
        page = body["data"]["customers"]
        seen += [node["id"] for node in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(ids)


async def test_the_sandbox_sorts_customers_by_name(
    raw: Callable[..., Any], sandbox: ShopifySandbox
) -> None:
    """``sortKey: NAME`` orders customers by their name, not by when they came."""
    for i, name in enumerate(["Cor", "Anna", "Bert"]):
        sandbox.add_person(f"k{i}@example.com", name)
    status, body = await raw("{ customers(first: 5, sortKey: NAME) { nodes { firstName } } }")
    assert status == 200
    assert [n["firstName"] for n in body["data"]["customers"]["nodes"]] == ["Anna", "Bert", "Cor"]


async def test_the_sandbox_answers_a_bad_escape_in_a_string_with_a_parse_error(
    raw: Callable[..., Any],
) -> None:
    """A ``\\u`` escape without four hex digits is a syntax error, not a crash (500)."""
    status, body = await raw('{ customers(first: 1, query: "\\uZZZZ") { nodes { id } } }')
    assert status == 200 and "Parse error" in body["errors"][0]["message"]


async def test_every_document_the_adapter_sends_passes_the_sandboxs_checks(
    shop: Harness,
) -> None:
    """The adapter's own documents hold none of the faults above (each is run once)."""
    shop.sandbox.add_person("an@example.com", "An", city="Utrecht")
    shop.sandbox.add_order("an@example.com")
    async with shop.client:
        await collect(shop.adapter, None)
        await shop.adapter.find(Subject(email="an@example.com"))
        await shop.adapter.find_people(Subject(email="an@example.com"))
        result = await shop.adapter.erase(Subject(email="an@example.com"))
    assert result.pending


# -- find ----------------------------------------------------------------------------------


def seed_subject(sandbox: ShopifySandbox) -> tuple[str, list[str]]:
    """An with two orders, and Jan (a near match by e-mail) with one."""
    an = sandbox.add_person("an@example.com", "An", "Jansen", "+31612345678", city="Utrecht")
    orders = [
        sandbox.add_order("an@example.com", total="12.50", items=("Mok", "Thee")),
        sandbox.add_order("an@example.com", total="7.00", items=("Koffie",)),
    ]
    sandbox.add_person("jan@example.com", "Jan")
    sandbox.add_order("jan@example.com")
    return an, orders


async def test_find_returns_the_customer_and_their_orders(shop: Harness) -> None:
    """find gives An's customer node and her orders with totals and items, not Jan's."""
    an, orders = seed_subject(shop.sandbox)
    found = await shop.adapter.find(Subject(email="AN@example.com"))
    assert found[0]["id"] == an and found[0]["email"] == "an@example.com"
    assert [r["id"] for r in found[1:]] == orders
    assert all(r["type"] == "order" and r["customerId"] == an for r in found[1:])
    first = found[1]
    assert first["totalPriceSet"]["shopMoney"] == {"amount": "12.50", "currencyCode": "EUR"}
    assert [i["title"] for i in first["lineItems"]["nodes"]] == ["Mok", "Thee"]
    assert first["name"].startswith("#") and first["createdAt"]


async def test_find_takes_no_customer_whose_address_differs_but_folds_the_same(
    shop: Harness,
) -> None:
    """'strasse@' and 'straße@' are two subjects; a search may fold them together, and
    the match kept is exact as subjects are told apart."""
    shop.sandbox.add_person("strasse@example.de", "Other", "Person")
    assert await shop.adapter.find(Subject(email="straße@example.de")) == []
    (found, *_) = await shop.adapter.find(Subject(email="STRASSE@example.de"))
    assert found["email"] == "strasse@example.de"


async def test_find_lists_every_line_item_of_a_long_order(shop: Harness) -> None:
    """An access request's copy of an order of 60 items listed the first 50 (one page of
    line items) and said nothing of the rest; the next pages are read too."""
    shop.sandbox.add_person("an@example.com", "An", "Jansen")
    shop.sandbox.add_order("an@example.com", items=tuple(f"Artikel {i}" for i in range(320)))
    found = await shop.adapter.find(Subject(email="an@example.com"))
    (order,) = [r for r in found if r.get("type") == "order"]
    titles = [item["title"] for item in order["lineItems"]["nodes"]]
    assert titles == [f"Artikel {i}" for i in range(320)]
    assert order["lineItems"]["pageInfo"] == {"hasNextPage": False}
    assert shop.sandbox.operations.count("query order") == 2  # 50, then 250 and 20 more


async def test_find_by_id_when_the_email_changed_and_orders_page(shop: Harness) -> None:
    """A known id finds a customer whose e-mail changed; twelve orders come in two pages."""
    customer_id = shop.sandbox.add_person("oud@example.com", "Olga")
    for _ in range(12):
        shop.sandbox.add_order("oud@example.com")
    shop.sandbox.touch("oud@example.com", email="nieuw@example.com")
    subject = Subject(email="oud@example.com", external_id=customer_id)
    found = await shop.adapter.find(subject)
    assert found[0]["id"] == customer_id and len(found) == 13
    assert shop.sandbox.operations.count("query customer") == 3  # one lookup, two order pages
    numeric = Subject(email="oud@example.com", external_id=customer_id.rsplit("/", 1)[1])
    assert (await shop.adapter.find(numeric))[0]["id"] == customer_id
    assert await shop.adapter.find(Subject(email="niemand@example.com", external_id="x")) == []


def _moved_customer_and_anothers(sandbox: ShopifySandbox) -> tuple[str, str]:
    """Pia's own customer (her address changed in Shopify since) and Quinn's, who now has
    the address Pia had."""
    pia = sandbox.add_person("pia@example.nl", "Pia", "de Vries", address1="Dorpsstraat 1")
    sandbox.add_order("pia@example.nl", note="Bij de buren afgeven")
    sandbox.touch("pia@example.nl", email="pia.nieuw@example.nl")
    quinn = sandbox.add_person("pia@example.nl", "Quinn", "Bakker")
    return pia, quinn


def _customer_and_a_second_under_the_old_address(sandbox: ShopifySandbox) -> tuple[str, str]:
    """Rik's account (id known to the connector, with his order and delivery address),
    whose address he changed in Shopify, and a second customer a later checkout under his
    old address made."""
    rik = sandbox.add_person("rik@example.nl", "Rik", "Smit", address1="Laan 5")
    sandbox.add_order("rik@example.nl", note="Achterom")
    sandbox.touch("rik@example.nl", email="rik.smit@example.nl")
    second = sandbox.add_person("rik@example.nl", "Rik", "Smit")
    return rik, second


async def test_find_reads_the_customer_known_by_id_when_the_email_finds_another_subjects(
    shop: Harness,
) -> None:
    """Asked by Pia's old address and her Shopify id, the address now finds Quinn's
    customer (another subject's: spare). The lookup by id was made only when the search
    found nobody, so find (the verifying read too) said Shopify held nothing of Pia's."""
    pia, quinn = _moved_customer_and_anothers(shop.sandbox)
    subject = Subject(email="pia@example.nl", external_id=pia, spare=frozenset({quinn}))
    found = await shop.adapter.find(subject)
    assert [r["id"] for r in found if r.get("type") != "order"] == [pia]
    assert [r["note"] for r in found if r.get("type") == "order"] == ["Bij de buren afgeven"]


async def test_erasure_reaches_the_customer_known_by_id_when_the_email_finds_another_subjects(
    shop: Harness,
) -> None:
    """The same erasure found nobody and its receipt said not held while Shopify kept Pia's
    data: her own customer is asked for by id, Quinn's is left alone."""
    pia, quinn = _moved_customer_and_anothers(shop.sandbox)
    subject = Subject(email="pia@example.nl", external_id=pia, spare=frozenset({quinn}))
    result = await shop.adapter.erase(subject)
    assert result.found and result.pending
    assert shop.sandbox.pending_erasure("pia.nieuw@example.nl")
    assert not shop.sandbox.pending_erasure("pia@example.nl")


async def test_access_copy_holds_the_customer_known_by_id_beside_the_one_found_by_email(
    shop: Harness,
) -> None:
    """The access copy for Rik's old address held only the second customer: the account
    the identity map names, with his order history, was never read because the search
    found someone."""
    rik, second = _customer_and_a_second_under_the_old_address(shop.sandbox)
    found = await shop.adapter.find(Subject(email="rik@example.nl", external_id=rik))
    assert {r["id"] for r in found if r.get("type") != "order"} == {rik, second}
    assert any(r.get("type") == "order" and r["note"] == "Achterom" for r in found)


async def test_erasure_asks_for_the_customer_known_by_id_beside_the_one_found_by_email(
    shop: Harness,
) -> None:
    """Only the second customer was queued; Rik's account was asked for only once Shopify
    had carried out the first erasure (10 days to 6 months on) and a verifying read fell
    back on the id, past the month. Both are asked for at once."""
    rik, _ = _customer_and_a_second_under_the_old_address(shop.sandbox)
    result = await shop.adapter.erase(Subject(email="rik@example.nl", external_id=rik))
    assert result.found and result.pending
    assert shop.sandbox.pending_erasure("rik@example.nl")
    assert shop.sandbox.pending_erasure("rik.smit@example.nl")


async def test_the_customer_known_by_id_is_not_read_again_when_the_search_found_them(
    shop: Harness,
) -> None:
    """The identity map's id costs no read of its own when the search found its customer:
    the search (ids and e-mails), that customer read whole, one page of their orders."""
    an, orders = seed_subject(shop.sandbox)
    found = await shop.adapter.find(Subject(email="an@example.com", external_id=an))
    assert [r["id"] for r in found] == [an, *orders]
    assert shop.sandbox.operations == ["query customers", "query customer", "query customer"]


async def test_access_copy_lists_every_address_shopify_keeps_for_the_customer(
    shop: Harness,
) -> None:
    """Shopify keeps an address book per customer; the mapping syncs the default address
    only, and find read only that one too, so a second address (a work address, a parcel
    point) never reached the access copy."""
    shop.sandbox.add_person(
        "anna@example.nl", "Anna", "Jansen", "+31612345678",
        address1="Hoofdstraat 1", city="Utrecht", zip="3511AA", country_code="NL",
    )  # fmt: skip
    customer = shop.sandbox.store.by_email("anna@example.nl")
    assert customer is not None
    work = copy.deepcopy(customer["defaultAddress"])
    work.update(id="gid://shopify/MailingAddress/42", address1="Kantoorlaan 99", city="Zeist")
    customer["addresses"].append(work)
    (found,) = await shop.adapter.find(Subject(email="anna@example.nl"))
    assert [a["address1"] for a in found["addresses"]] == ["Hoofdstraat 1", "Kantoorlaan 99"]
    assert found["defaultAddress"]["address1"] == "Hoofdstraat 1"
    (pulled,) = [r for p in await collect(shop.adapter, None) for r in p.records]
    assert "addresses" not in pulled  # the sync reads what the mapping needs


async def test_a_changed_default_address_is_changed_in_the_customers_address_book(
    shop: Harness,
) -> None:
    """Shopify's default address is one of the customer's addresses, so a change of it is a
    change of that entry in the book. The sandbox changed the default alone: an access copy
    then listed the former address as the only one the shop keeps, and the current one
    nowhere in the book. A default taken away leaves the book (the next becomes default);
    one given to a customer without an address joins it."""
    shop.sandbox.add_person(
        "anna@example.nl", "Anna", "Jansen",
        address1="Hoofdstraat 1", city="Utrecht", zip="3511AA", country_code="NL",
    )  # fmt: skip
    customer = shop.sandbox.store.by_email("anna@example.nl")
    assert customer is not None
    work = copy.deepcopy(customer["defaultAddress"])
    work.update(id="gid://shopify/MailingAddress/42", address1="Kantoorlaan 99", city="Zeist")
    customer["addresses"].append(work)
    moved = {"defaultAddress.address1": "Rue Neuve 2", "defaultAddress.countryCodeV2": "BE"}
    shop.sandbox.touch("anna@example.nl", **moved)
    (found,) = await shop.adapter.find(Subject(email="anna@example.nl"))
    assert [a["address1"] for a in found["addresses"]] == ["Rue Neuve 2", "Kantoorlaan 99"]
    held = shop.sandbox.record_for("anna@example.nl")
    assert held is not None
    assert held["addresses"][0] == held["defaultAddress"]
    assert held["defaultAddress"]["country"] == "Belgium"
    shop.sandbox.touch("anna@example.nl", defaultAddress=None)
    (found,) = await shop.adapter.find(Subject(email="anna@example.nl"))
    assert [a["address1"] for a in found["addresses"]] == ["Kantoorlaan 99"]
    assert found["defaultAddress"]["address1"] == "Kantoorlaan 99"
    shop.sandbox.add_person("bob@example.nl", "Bob", "Bakker")
    shop.sandbox.touch("bob@example.nl", defaultAddress__city="Zeist")
    (found,) = await shop.adapter.find(Subject(email="bob@example.nl"))
    assert [a["city"] for a in found["addresses"]] == ["Zeist"]


async def test_customers_without_an_e_mail_are_kept_as_shopify_keeps_them(shop: Harness) -> None:
    """Shopify keeps customers known by their phone alone, with ``email`` null and no e-mail
    consent at all ("If the customer doesn't have an email address, then this property is
    null"). The sandbox could seed one such customer only by hand, with an e-mail consent
    beside no address, and a second not at all. Given an address, a customer has not
    subscribed with it; the address taken away, the consent goes with it."""
    first = shop.sandbox.add_person(None, "Piet", "Telefoon", "+31612345678")
    second = shop.sandbox.add_person("", "Kees", "Telefoon", "+31612345679")
    pulled = {r["id"]: r for p in await collect(shop.adapter, None) for r in p.records}
    for gid in (first, second):
        assert pulled[gid]["email"] is None
        assert pulled[gid]["emailMarketingConsent"] is None
    payload = shop.sandbox.compliance_payload("customers/redact", first)
    assert payload["customer"]["email"] is None and payload["customer"]["phone"]
    shop.sandbox.touch(first, email="piet@example.nl")
    (found,) = await shop.adapter.find(Subject(email="piet@example.nl"))
    assert found["emailMarketingConsent"]["marketingState"] == "NOT_SUBSCRIBED"
    shop.sandbox.touch("piet@example.nl", email=None)
    held = shop.sandbox.store.customer(first)
    assert held is not None and held["email"] is None and held["emailMarketingConsent"] is None


async def test_access_copy_holds_the_sms_marketing_consent_shopify_keeps(shop: Harness) -> None:
    """Shopify keeps a consent record for SMS marketing beside the e-mail one (state, level,
    when and where it was collected). The access copy read the e-mail consent only, so the
    person was never told they are on record as subscribed to SMS marketing; nor their
    language and what they spent. A sync reads none of it."""
    sms = {
        "marketingState": "SUBSCRIBED",
        "marketingOptInLevel": "SINGLE_OPT_IN",
        "consentUpdatedAt": "2025-02-01T10:00:00Z",
        "consentCollectedFrom": "SHOPIFY",
    }
    shop.sandbox.add_person(
        "sara@example.nl", "Sara", "Visser", "+31612345678", smsMarketingConsent=sms
    )
    (found,) = await shop.adapter.find(Subject(email="sara@example.nl"))
    assert found["smsMarketingConsent"] == sms
    assert found["locale"] == "nl"
    assert found["amountSpent"] == {"amount": "0.0", "currencyCode": "EUR"}
    (pulled,) = [r for p in await collect(shop.adapter, None) for r in p.records]
    (person,) = await shop.adapter.find_people(Subject(email="sara@example.nl"))
    for synced in (pulled, person):
        assert not {"smsMarketingConsent", "locale", "amountSpent"} & set(synced)


async def test_access_copy_holds_the_email_marketing_opt_in_level(shop: Harness) -> None:
    """Shopify's e-mail consent record says how the consent was given (single or confirmed
    opt-in) beside its state and date. The access copy read the state and the date only,
    so the person was not shown whether they confirmed their subscription, which the SMS
    consent beside it does show. A sync reads no more than the mapping's state."""
    consent = {
        "marketingState": "SUBSCRIBED",
        "marketingOptInLevel": "CONFIRMED_OPT_IN",
        "consentUpdatedAt": "2025-02-01T10:00:00Z",
    }
    shop.sandbox.add_person("eva@example.nl", "Eva", "Smit", emailMarketingConsent=consent)
    (found,) = await shop.adapter.find(Subject(email="eva@example.nl"))
    assert found["emailMarketingConsent"] == consent
    (pulled,) = [r for p in await collect(shop.adapter, None) for r in p.records]
    assert "marketingOptInLevel" not in pulled["emailMarketingConsent"]


async def test_a_change_of_e_mail_consent_is_dated_when_it_was_made(shop: Harness) -> None:
    """Shopify dates the e-mail consent record when its state changes. The sandbox kept the
    date of the first opt-in, so an access copy showed the person's opt-out, and their
    opt-in after it, as given the day they first subscribed."""
    shop.sandbox.add_person("eva@example.nl", "Eva", "Smit", marketing_state="SUBSCRIBED")
    for state in ("UNSUBSCRIBED", "SUBSCRIBED"):
        shop.wall.advance(86_400)
        shop.sandbox.touch("eva@example.nl", emailMarketingConsent__marketingState=state)
        (found,) = await shop.adapter.find(Subject(email="eva@example.nl"))
        consent = found["emailMarketingConsent"]
        assert consent["marketingState"] == state
        assert consent["consentUpdatedAt"] == shop.sandbox.now() == found["updatedAt"]
    assert consent["marketingOptInLevel"] == "SINGLE_OPT_IN"
    shop.wall.advance(86_400)
    shop.sandbox.touch("eva@example.nl", firstName="Eefje")
    (found,) = await shop.adapter.find(Subject(email="eva@example.nl"))
    assert found["emailMarketingConsent"] == consent  # another change leaves it as it was


async def test_access_copy_of_an_order_holds_its_note_and_addresses(shop: Harness) -> None:
    """What the customer wrote at checkout and where the order was billed and sent are the
    person's data Shopify holds (WooCommerce's find returns whole orders for that reason);
    the order's name, date, total and items alone left them out."""
    shop.sandbox.add_person("anna@example.nl", "Anna", "Jansen", address1="Hoofdstraat 1")
    order_id = shop.sandbox.add_order("anna@example.nl", note="Graag afgeven bij nummer 3")
    order = shop.sandbox.store.order(order_id)
    assert order is not None
    order["shippingAddress"] = {**order["shippingAddress"], "address1": "Cadeaustraat 7"}
    found = await shop.adapter.find(Subject(email="anna@example.nl"))
    (held,) = [r for r in found if r.get("type") == "order"]
    assert held["note"] == "Graag afgeven bij nummer 3"
    assert held["shippingAddress"]["address1"] == "Cadeaustraat 7"
    assert held["billingAddress"]["address1"] == "Hoofdstraat 1"
    assert held["email"] == "anna@example.nl"


async def test_access_copy_leaves_out_other_addresses_the_notes_tags_and_attributes_quote(
    shop: Harness,
) -> None:
    """Art. 15(4): the staff's note and tags on a customer, an order's note and the details
    given with it at checkout (``customAttributes``, REST's ``note_attributes``: a gift
    message) can quote someone else's address ("ook naar bep@..."): it reads as left out.
    The person's own addresses (the one asked for, the order's e-mail, in any case) and the
    words around stay."""
    shop.sandbox.add_person(
        "anna@example.nl",
        "Anna",
        "Jansen",
        note="Anna@Example.nl belt namens buurvrouw bep@buren.example",
        tags=["vip", "via bep@buren.example"],
    )
    order_id = shop.sandbox.add_order(
        "anna@example.nl",
        note="Bevestiging ook naar bep@buren.example, factuur naar Anna@Werk.example",
        attributes={"Cadeaubericht": "Voor Bep (bep@buren.example)", "Bezorging": "achterom"},
    )
    order = shop.sandbox.store.order(order_id)
    assert order is not None
    order["email"] = "anna@werk.example"  # given at checkout, beside the account's
    found = await shop.adapter.find(Subject(email="anna@example.nl"))
    assert "buren.example" not in json.dumps(found)
    customer, held = found
    assert customer["note"] == f"Anna@Example.nl belt namens buurvrouw {LEFT_OUT}"
    assert customer["tags"] == ["vip", f"via {LEFT_OUT}"]
    assert held["note"] == f"Bevestiging ook naar {LEFT_OUT}, factuur naar Anna@Werk.example"
    assert held["customAttributes"] == [
        {"key": "Cadeaubericht", "value": f"Voor Bep ({LEFT_OUT})"},
        {"key": "Bezorging", "value": "achterom"},
    ]


def age(sandbox: ShopifySandbox, order_id: str, days: int) -> None:
    """Make the order ``days`` older than the sandbox's wall clock."""
    order = sandbox.store.order(order_id)
    assert order is not None
    moment = datetime.fromtimestamp(sandbox.wall_clock(), UTC) - timedelta(days=days)
    order["createdAt"] = order["updatedAt"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("read_all_orders", [False, True])
async def test_sandbox_serves_orders_older_than_60_days_only_with_read_all_orders(
    clock: FakeClock, wall: FakeClock, read_all_orders: bool
) -> None:
    """Shopify: "Only the last 60 days' worth of orders from a store are accessible from
    the Order object by default"; older ones need read_all_orders. The sandbox served every
    order to any token, so an access copy looked whole in every test."""
    sandbox = ShopifySandbox(
        clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN, read_all_orders=read_all_orders
    )
    customer_id = sandbox.add_person("anna@example.nl", "Anna")
    old_id = sandbox.add_order("anna@example.nl", total="99.00")
    age(sandbox, old_id, 120)
    recent_id = sandbox.add_order("anna@example.nl", total="5.00")
    query = (
        '{ customer(id: "' + customer_id + '") { numberOfOrders orders(first: 10) '
        "{ nodes { id } } } }"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"X-Shopify-Access-Token": TOKEN},
    ) as http:
        customer = (await http.post(GRAPHQL, json={"query": query})).json()["data"]["customer"]
        lookup = '{ order(id: "' + old_id + '") { id } }'
        direct = (await http.post(GRAPHQL, json={"query": lookup})).json()["data"]["order"]
    ids = [n["id"] for n in customer["orders"]["nodes"]]
    assert customer["numberOfOrders"] == "2"  # counted whatever the token may read
    assert ids == ([old_id, recent_id] if read_all_orders else [recent_id])
    assert (direct is not None) is read_all_orders


async def test_access_copy_says_when_shopify_served_only_the_recent_orders(
    shop: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Without read_all_orders Shopify serves the last 60 days of orders and says nothing:
    the copy must not pass a partial order history for the whole. The customer's record
    says how many orders were not served and why; the log names the scope, not the person."""
    shop.sandbox.add_person("anna@example.nl", "Anna", "Jansen")
    for days in (400, 90):
        age(shop.sandbox, shop.sandbox.add_order("anna@example.nl"), days)
    shop.sandbox.add_order("anna@example.nl")
    caplog.set_level(logging.WARNING)
    found = await shop.adapter.find(Subject(email="anna@example.nl"))
    customer, orders = found[0], [r for r in found if r.get("type") == "order"]
    assert len(orders) == 1
    assert customer[ORDERS_UNREAD]["count"] == 2
    assert "read_all_orders" in customer[ORDERS_UNREAD]["reason"]
    (warning,) = [r for r in caplog.records if "read_all_orders" in r.getMessage()]
    assert "anna" not in json.dumps(warning.__dict__, default=str)
    whole = ShopifySandbox(shop_domain=SHOP_DOMAIN, read_all_orders=True)
    whole.add_person("anna@example.nl", "Anna")
    age(whole, whole.add_order("anna@example.nl"), 400)
    harness = make_harness(whole, shop.clock, shop.wall)
    try:
        (customer, _order) = await harness.adapter.find(Subject(email="anna@example.nl"))
    finally:
        await harness.client.aclose()
    assert ORDERS_UNREAD not in customer


# -- API version ---------------------------------------------------------------------------


async def test_sandbox_falls_forward_from_a_retired_api_version_as_shopify_does(
    clock: FakeClock,
) -> None:
    """A call naming a retired version is answered by the oldest supported one, and
    X-Shopify-API-Version names the version that answered. The sandbox answered any version
    as itself, forever, so no test could see what a pinned, expired version does."""
    wall = FakeClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp())
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)
    served = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"X-Shopify-Access-Token": TOKEN},
    ) as http:
        for version in ("2025-01", "2026-01", DEFAULT_API_VERSION):
            response = await http.post(
                f"/admin/api/{version}/graphql.json",
                json={"query": "{ customers(first: 1) { nodes { id } } }"},
            )
            served[version] = response.headers["x-shopify-api-version"]
    assert served == {"2025-01": "2026-01", "2026-01": "2026-01", DEFAULT_API_VERSION: "2026-10"}


async def test_a_call_served_by_another_api_version_is_noticed(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A pinned version Shopify retired is served by another, a schema nobody tested; the
    adapter never read X-Shopify-API-Version, so a pull served by 2026-01 instead of the
    configured 2025-01 passed without a word. Now the first such answer is a warning naming
    the system and both versions: once, not on every call."""
    wall = FakeClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp())
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)
    seed(sandbox, wall, 3)
    caplog.set_level(logging.WARNING)
    told: dict[str, list[logging.LogRecord]] = {}
    for version in ("2025-01", DEFAULT_API_VERSION):
        caplog.clear()
        harness = make_harness(sandbox, clock, wall, api_version=version, page_size=1)
        try:
            assert len(emails_of(await collect(harness.adapter, None))) == 3  # three calls
        finally:
            await harness.client.aclose()
        told[version] = [r for r in caplog.records if "API version" in r.getMessage()]
    (warning,) = told["2025-01"]
    assert "2026-01" in warning.getMessage() and "2025-01" in warning.getMessage()
    assert (warning.system, warning.configured, warning.served) == (  # type: ignore[attr-defined]
        "shop",
        "2025-01",
        "2026-01",
    )
    assert told[DEFAULT_API_VERSION] == []  # the configured version answered


def test_check_online_reports_an_api_version_shopify_no_longer_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: an answer from another API version than the configured one is a warning
    naming both, which `check --online` prints. The adapter only logged it: the report said
    `"online": {"shop": "ok"}` with nothing in `warnings`, where the same online check puts
    WooCommerce's `_fields` warning, so a script reading it saw nothing to fix."""
    from connector.sandboxkit import serve_tls

    (tmp_path / "master.key").write_text(MASTER_KEY)
    (tmp_path / "master.key").chmod(0o600)
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    shop = ShopifySandbox(shop_domain=SHOP_DOMAIN)
    with serve_tls({"shop": shop.app()}, tmp_path / "tls") as (ca, apps):
        assert ca is not None
        config = tmp_path / "klantsync.toml"
        config.write_text(
            f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"
[systems.shop]
adapter = "shopify"
base_url = "{apps["shop"].url}"
ca_bundle = "{ca.ca_path}"
api_version = "2020-01"
shop_domain = "{SHOP_DOMAIN}"
mapping = "{MAPPING}"
credentials = {{ access_token = "file:token" }}
"""
        )
        main(["-c", str(config), "check", "--online", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["online"] == {"shop": "ok"}
    (warning,) = [w for w in report["warnings"] if "API version" in w]
    assert warning.startswith("shop: Shopify answered with API version ")
    assert "not the configured 2020-01" in warning


# -- erase ---------------------------------------------------------------------------------


async def test_erase_queues_shopifys_erasure_and_never_deletes(shop: Harness) -> None:
    """Erasure uses customerRequestDataErasure only, is pending, and ends with no customer."""
    an, orders = seed_subject(shop.sandbox)
    result = await shop.adapter.erase(Subject(email="an@example.com"))
    assert result.found and result.pending and not result.reversible
    assert result.mode == "async_hard_delete" and result.vendor_status == 200
    assert result.endpoint == f"POST {GRAPHQL} customerRequestDataErasure"
    assert "waiting period" in result.note and "customerCancelDataErasure" in result.note
    mutations = [op for op in shop.sandbox.operations if op.startswith("mutation")]
    assert mutations == ["mutation customerRequestDataErasure"]
    assert shop.sandbox.holds("an@example.com") and shop.sandbox.pending_erasure("an@example.com")
    assert shop.sandbox.process_erasures() == 1
    assert not shop.sandbox.holds("an@example.com")
    assert not shop.sandbox.restorable("an@example.com")
    assert await shop.adapter.find(Subject(email="an@example.com", external_id=an)) == []
    kept = [o for o in shop.sandbox.store.orders.values() if o["id"] in orders]
    assert len(kept) == 2 and all(o["email"] is None and o["_customer"] is None for o in kept)
    assert shop.sandbox.holds("jan@example.com")
    assert not any("customerDelete" in op for op in shop.sandbox.operations)


async def test_an_erasure_finds_the_customer_behind_a_page_of_customers_sharing_their_words(
    clock: FakeClock, wall: FakeClock
) -> None:
    """Where email: matches an address's words, twelve customers whose addresses hold every
    word of jan@x.nl come before Jan's own: the lookup reads every page of the search, so
    the erasure finds Jan, asks for Jan's erasure and no one else's."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, token_search=True)
    lookalikes = [f"jan@x.nl.evil{n}" for n in range(12)] + ["x.jan@nl.example"]
    for email in lookalikes:
        sandbox.add_person(email, "Ander", "Iemand")
    sandbox.add_person("piet@x.nl", "Piet", "Buur")
    sandbox.add_person("jan@x.nl", "Jan", "Echt")
    harness = make_harness(sandbox, clock, wall)
    async with harness.client:
        (found,) = await harness.adapter.find(Subject(email="Jan@X.nl"))
        result = await harness.adapter.erase(Subject(email="jan@x.nl"))
    assert found["email"] == "jan@x.nl"
    assert result.found and result.pending
    assert sandbox.pending_erasure("jan@x.nl")
    assert sandbox.process_erasures() == 1
    assert not sandbox.holds("jan@x.nl")
    assert all(sandbox.holds(email) for email in [*lookalikes, "piet@x.nl"])


async def test_access_reads_only_the_ids_and_e_mails_of_customers_sharing_the_words(
    clock: FakeClock, wall: FakeClock
) -> None:
    """Where email: matches an address's words, the search's hits are other people's
    customers: the lookup pages through their ids and e-mails alone and reads the whole
    record (note, addresses, spending) of the exact match only."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, token_search=True)
    for n in range(12):
        sandbox.add_person(f"jan@x.nl.evil{n}", "Ander", "Iemand", note="Buurman", city="Ede")
    sandbox.add_person("jan@x.nl", "Jan", "Echt", note="Eigen", city="Utrecht")
    recording = _Recording(httpx.ASGITransport(app=sandbox.app()))
    harness = make_harness(sandbox, clock, wall, transport=recording)
    async with harness.client:
        (found,) = [
            r for r in await harness.adapter.find(Subject(email="jan@x.nl")) if "type" not in r
        ]
    assert found["email"] == "jan@x.nl" and found["note"] == "Eigen"
    searches = [d for d in recording.documents if "customers(" in d]
    assert len(searches) == 2  # 13 hits, 10 a page
    for document in searches:
        for kept in ("firstName", "note", "addresses", "defaultAddress", "amountSpent"):
            assert kept not in document
    assert "Ander" not in repr(recording.answers) and "Buurman" not in repr(recording.answers)


async def test_a_search_past_its_last_page_read_fails_instead_of_finding_nobody(
    clock: FakeClock, wall: FakeClock
) -> None:
    """More customers matching an address's words than the lookup reads: the erasure fails,
    naming why, rather than report nobody found while the customer may be on a page unread."""
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, token_search=True)
    for n in range(SEARCH_MOST_PAGES * SEARCH_PAGE_SIZE):
        sandbox.add_person(f"jan@x.nl.evil{n}", "Ander", "Iemand")
    sandbox.add_person("jan@x.nl", "Jan", "Echt")
    harness = make_harness(sandbox, clock, wall)
    async with harness.client:
        with pytest.raises(RecordError) as caught:
            await harness.adapter.erase(Subject(email="jan@x.nl"))
    assert caught.value.detail == "SEARCH_TOO_BROAD"
    assert "jan" not in str(caught.value)
    assert not any(op.startswith("mutation") for op in sandbox.operations)
    assert not sandbox.pending_erasure("jan@x.nl")


async def test_the_sandbox_s_email_search_matches_whole_addresses_or_their_words(
    raw: Callable[..., Any], sandbox: ShopifySandbox
) -> None:
    """email: finds the whole address alone by default; with token_search every address
    holding each of its words."""
    for email in ("jan@x.nl", "jan@x.nl.evil", "x.jan@nl.example", "piet@x.nl"):
        sandbox.add_person(email, "Iemand")
    query = "query($q: String!) { customers(first: 10, query: $q) { nodes { email } } }"

    async def emails() -> list[str]:
        status, body = await raw(query, {"q": 'email:"jan@x.nl"'})
        assert status == 200
        return [node["email"] for node in body["data"]["customers"]["nodes"]]

    assert await emails() == ["jan@x.nl"]
    sandbox.store.token_search = True
    assert await emails() == ["jan@x.nl", "jan@x.nl.evil", "x.jan@nl.example"]


class _Recording(httpx.AsyncBaseTransport):
    """The sandbox's transport, keeping the GraphQL document of every call."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.documents: list[str] = []
        self.answers: list[Any] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.documents.append(json.loads(request.content)["query"])
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        self.answers.append(json.loads(content))
        return httpx.Response(response.status_code, headers=response.headers, content=content)


async def test_erase_reads_no_more_of_the_customer_than_their_id_and_e_mail(
    sandbox: ShopifySandbox, clock: FakeClock, wall: FakeClock
) -> None:
    """The erasure request names a customer by id; finding them read everything the shop
    keeps on them besides (the staff's note, tags, every address, what they spent), as an
    access copy does, only to ask for all of it to be erased. It reads their id and e-mail
    alone, also for the customer the identity map names."""
    sandbox.add_person(
        "anna@example.nl", "Anna", "Jansen", "+31612345678",
        address1="Hoofdstraat 1", city="Utrecht", note="Belt vaak", tags=["vip"],
    )  # fmt: skip
    moved = sandbox.add_person("oud@example.nl", "Anna", "Jansen")
    recording = _Recording(httpx.ASGITransport(app=sandbox.app()))
    harness = make_harness(sandbox, clock, wall, transport=recording)
    try:
        result = await harness.adapter.erase(Subject(email="anna@example.nl", external_id=moved))
    finally:
        await harness.client.aclose()
    assert result.found and len(sandbox.store.pending_erasures) == 2
    reads = [d for d in recording.documents if d.lstrip().startswith("query")]
    assert len(reads) == 2  # the search, and the customer the identity map names
    for document in reads:
        for kept in ("firstName", "phone", "note", "tags", "addresses", "defaultAddress"):
            assert kept not in document


async def test_erase_twice_is_pending_then_not_found(shop: Harness) -> None:
    """Asked again while Shopify holds the request it is still found and pending; after, not."""
    seed_subject(shop.sandbox)
    await shop.adapter.erase(Subject(email="an@example.com"))
    again = await shop.adapter.erase(Subject(email="an@example.com"))
    assert again.found and again.pending
    shop.sandbox.process_erasures()
    after = await shop.adapter.erase(Subject(email="an@example.com"))
    assert not after.found and not after.pending
    mutations = [op for op in shop.sandbox.operations if op.startswith("mutation")]
    assert mutations == ["mutation customerRequestDataErasure"] * 2


async def test_erase_of_nobody_sends_no_mutation(shop: Harness) -> None:
    """A subject Shopify does not hold is not found and no erasure is requested."""
    result = await shop.adapter.erase(Subject(email="niemand@example.com"))
    assert not result.found and not result.pending and result.mode == "async_hard_delete"
    assert shop.sandbox.operations == ["query customers"]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("DOES_NOT_EXIST", "not found"),
        ("FAILED_TO_REQUEST", RetryableError),
        ("INVALID", RecordError),
    ],
)
async def test_erase_user_errors_by_code(shop: Harness, code: str, outcome: Any) -> None:
    """DOES_NOT_EXIST means gone meanwhile; FAILED_TO_REQUEST is retryable; others reject."""
    customer = {"id": "gid://shopify/Customer/9", "email": "an@example.com"}

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        if "customerRequestDataErasure" in query:
            error = {"field": ["customerId"], "message": "an@example.com: nope", "code": code}
            payload = {"customerId": None, "userErrors": [error]}
            return httpx.Response(200, json={"data": {"customerRequestDataErasure": payload}})
        return httpx.Response(200, json={"data": {"customers": {"nodes": [customer]}}})

    harness = make_harness(
        shop.sandbox, shop.clock, shop.wall, transport=httpx.MockTransport(answer)
    )
    async with harness.client:
        if outcome == "not found":
            assert not (await harness.adapter.erase(Subject(email="an@example.com"))).found
            return
        with pytest.raises(outcome) as caught:
            await harness.adapter.erase(Subject(email="an@example.com"))
    assert caught.value.detail == code and "an@" not in str(caught.value)


async def test_sandbox_cancel_and_delete_behave_like_shopify(
    shop: Harness, raw: Callable[..., Any]
) -> None:
    """A pending erasure can be cancelled; customerDelete refuses a customer with orders."""
    an, _ = seed_subject(shop.sandbox)
    await shop.adapter.erase(Subject(email="an@example.com"))
    cancel = (
        "mutation C($id: ID!) "
        "{ customerCancelDataErasure(customerId: $id) { customerId userErrors { code } } }"
    )
    _, body = await raw(cancel, {"id": an})
    assert body["data"]["customerCancelDataErasure"] == {"customerId": an, "userErrors": []}
    assert shop.sandbox.process_erasures() == 0 and shop.sandbox.holds("an@example.com")
    _, body = await raw(cancel, {"id": an})
    assert body["data"]["customerCancelDataErasure"]["userErrors"] == [{"code": "NOT_BEING_ERASED"}]
    delete = (
        "mutation D($id: ID!) "
        "{ customerDelete(input: {id: $id}) { deletedCustomerId userErrors { message } } }"
    )
    _, body = await raw(delete, {"id": an})
    assert body["data"]["customerDelete"]["deletedCustomerId"] is None
    assert shop.sandbox.holds("an@example.com")
    assert body["extensions"]["cost"]["requestedQueryCost"] == 11  # mutation 10, errors list 1


async def test_the_sandbox_log_holds_no_personal_data(shop: Harness) -> None:
    """E-mails looked up or erased and the token never reach the sandbox's request log."""
    seed_subject(shop.sandbox)
    await shop.adapter.find(Subject(email="an@example.com"))
    await shop.adapter.erase(Subject(email="an@example.com"))
    text = repr(shop.sandbox.log.entries)
    assert "an@example.com" not in text and TOKEN not in text
    assert {"first", "query", "customerId"} <= shop.sandbox.log.property_names()


# -- webhooks ------------------------------------------------------------------------------


def delivery(sandbox: ShopifySandbox, topic: str, payload: dict[str, Any]) -> WebhookRequest:
    body, headers = sandbox.signed_webhook(topic, payload, SECRET)
    return WebhookRequest("POST", HOOK_URL, {k.lower(): v for k, v in headers.items()}, body)


def test_webhook_hmac_valid_invalid_and_tampered(shop: Harness) -> None:
    """A genuine delivery verifies; a wrong secret, a changed body or no header do not."""
    good = delivery(shop.sandbox, "customers/update", {"id": 7, "email": "an@example.com"})
    assert good.headers["x-shopify-hmac-sha256"] == webhook_signature(good.body, SECRET)
    assert shop.adapter.verify_webhook(good, SECRET, now=0.0)
    assert not shop.adapter.verify_webhook(good, "other-secret", now=0.0)
    tampered = WebhookRequest(good.method, good.url, good.headers, good.body.replace(b"7", b"8"))
    assert not shop.adapter.verify_webhook(tampered, SECRET, now=0.0)
    unsigned = {k: v for k, v in good.headers.items() if k != "x-shopify-hmac-sha256"}
    assert not shop.adapter.verify_webhook(
        WebhookRequest("POST", HOOK_URL, unsigned, good.body), SECRET, 0.0
    )
    assert set(good.headers) >= {
        "x-shopify-topic",
        "x-shopify-shop-domain",
        "x-shopify-webhook-id",
        "x-shopify-api-version",
        "x-shopify-triggered-at",
    }


def test_webhook_hmac_matches_a_value_computed_apart_from_this_code(shop: Harness) -> None:
    """The sandbox signs with the adapter's own definition, so the test above would pass
    with any scheme both shared. This value was computed apart from it, as Shopify does:
    ``base64(HMAC-SHA256(raw body, secret))`` (``openssl dgst -sha256 -hmac
    shopify-webhook-secret -binary | base64``)."""
    body = b'{"shop_id":7,"shop_domain":"k.myshopify.com"}'
    expected = "BncXx88Pl2Q8vWjtXQuQLqxoRhqI0jzAxba6CKvYcAg="
    assert webhook_signature(body, "shopify-webhook-secret") == expected
    headers = {"content-type": "application/json", "x-shopify-hmac-sha256": expected}
    signed = WebhookRequest("POST", HOOK_URL, headers, body)
    assert shop.adapter.verify_webhook(signed, "shopify-webhook-secret", now=0.0)


def test_webhook_hmac_is_over_the_raw_body_and_never_an_empty_secret(shop: Harness) -> None:
    """The signature covers the body byte for byte, its trailing newline included; and a
    secret left empty verifies nothing, though anyone can sign with an empty key."""
    body = b'{"id": 7}\n'
    headers = {"x-shopify-hmac-sha256": webhook_signature(body, SECRET)}
    assert shop.adapter.verify_webhook(WebhookRequest("POST", HOOK_URL, headers, body), SECRET, 0.0)
    stripped = {"x-shopify-hmac-sha256": webhook_signature(body.strip(), SECRET)}
    assert not shop.adapter.verify_webhook(
        WebhookRequest("POST", HOOK_URL, stripped, body), SECRET, 0.0
    )
    unkeyed = {"x-shopify-hmac-sha256": webhook_signature(body, "")}
    assert not shop.adapter.verify_webhook(WebhookRequest("POST", HOOK_URL, unkeyed, body), "", 0.0)


def test_parse_compliance_topics(shop: Harness) -> None:
    """customers/redact -> erase, customers/data_request -> access, shop/redact -> purge_all."""
    an, _ = seed_subject(shop.sandbox)
    number = int(an.rsplit("/", 1)[1])
    redact = shop.sandbox.compliance_payload("customers/redact", "an@example.com")
    assert redact["customer"]["id"] == number and len(redact["orders_to_redact"]) == 2
    body, headers = shop.sandbox.signed_compliance_webhook("customers/redact", redact, SECRET)
    request = WebhookRequest("POST", HOOK_URL, {k.lower(): v for k, v in headers.items()}, body)
    assert shop.adapter.verify_webhook(request, SECRET, now=0.0)
    (erase,) = shop.adapter.parse_webhook(request)
    assert (erase.kind, erase.external_id, erase.email) == ("erase", an, "an@example.com")
    assert erase.delivery_id == body_key(body)  # only shop/redact's body repeats
    data = shop.sandbox.compliance_payload("customers/data_request", "an@example.com")
    (access,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/data_request", data))
    assert (access.kind, access.external_id, access.email) == ("access", an, "an@example.com")
    assert "data_request" in data and "orders_requested" in data
    purge = shop.sandbox.compliance_payload("shop/redact")
    assert set(purge) == {"shop_id", "shop_domain"}
    (purge_all,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "shop/redact", purge))
    assert (purge_all.kind, purge_all.external_id, purge_all.email) == ("purge_all", None, None)
    with pytest.raises(ValueError, match="compliance"):
        shop.sandbox.signed_compliance_webhook("customers/update", {}, SECRET)


@pytest.mark.parametrize("topic", ["shop/redact", "customers/redact", "customers/update"])
def test_a_delivery_about_another_store_of_the_app_is_ignored(shop: Harness, topic: str) -> None:
    """One app's secret signs every store's deliveries to one URL: another store's
    shop/redact verified and made the connector forget all it held for this one."""

    def signed(sandbox: ShopifySandbox) -> WebhookRequest:
        if topic == "customers/update":
            return delivery(sandbox, topic, {"id": 42, "email": "an@example.com"})
        payload: dict[str, Any] = {"shop_id": 954_889, "shop_domain": sandbox.shop_domain}
        if topic == "customers/redact":
            payload["customer"] = {"id": 42, "email": "an@example.com", "phone": None}
            payload["orders_to_redact"] = []
        body, headers = sandbox.signed_compliance_webhook(topic, payload, SECRET)
        return WebhookRequest("POST", HOOK_URL, {k.lower(): v for k, v in headers.items()}, body)

    other = signed(ShopifySandbox(shop_domain="another-store.myshopify.com"))
    assert shop.adapter.verify_webhook(other, SECRET, now=0.0)
    assert [e.kind for e in shop.adapter.parse_webhook(other)] == ["ignored"]
    # This store's own, named in its body or (for a customer topic) its header, is taken;
    # so is any store's where base_url names none (a proxy, a sandbox host).
    assert shop.adapter.parse_webhook(signed(shop.sandbox))[0].kind != "ignored"
    proxied = ShopifyAdapter(
        shop.client,
        ShopifySettings(
            adapter="shopify",
            base_url="https://shop.proxy.example",
            mapping=MAPPING,
            credentials={"access_token": SecretStr(TOKEN)},
        ),
    )
    assert proxied.parse_webhook(other)[0].kind != "ignored"


def test_parse_customer_topics_and_fallbacks(shop: Harness) -> None:
    """create/update -> changed, delete -> deleted, others ignored; no id header -> body hash."""
    update = {
        "id": 42,
        "email": "an@example.com",
        "admin_graphql_api_id": "gid://shopify/Customer/42",
    }
    (changed,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/update", update))
    assert (changed.kind, changed.external_id, changed.email) == (
        "changed",
        "gid://shopify/Customer/42",
        "an@example.com",
    )
    (created,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/create", {"id": 43}))
    assert (created.kind, created.external_id) == ("changed", "gid://shopify/Customer/43")
    (deleted,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/delete", {"id": 43}))
    assert (deleted.kind, deleted.external_id, deleted.email) == (
        "deleted",
        "gid://shopify/Customer/43",
        None,
    )
    (other,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "products/update", {"id": 1}))
    assert other.kind == "ignored"
    bare = delivery(
        shop.sandbox, "customers/redact", {"customer": {"id": 5}, "orders_to_redact": []}
    )
    headers = {k: v for k, v in bare.headers.items() if k != "x-shopify-webhook-id"}
    (event,) = shop.adapter.parse_webhook(WebhookRequest("POST", HOOK_URL, headers, bare.body))
    assert event.delivery_id.startswith("sha256:") and event.kind == "erase"
    unreadable = WebhookRequest("POST", HOOK_URL, headers, b"not json")
    (blind,) = shop.adapter.parse_webhook(unreadable)
    assert (blind.kind, blind.external_id, blind.email) == ("erase", None, None)


def test_a_second_shop_redact_is_not_a_replay_of_the_first_but_a_retry_is(
    shop: Harness,
) -> None:
    """shop/redact's body is ``{shop_id, shop_domain}``, the same bytes every time: keyed on
    the body's hash, a store that reinstalled the app and uninstalled it again within
    ``webhook_ids_days`` had its second request to delete its data dropped as a replay.
    Each delivery has its own ``X-Shopify-Webhook-Id``, which a retry repeats."""
    payload = shop.sandbox.compliance_payload("shop/redact")
    first, second = (
        shop.sandbox.signed_compliance_webhook("shop/redact", payload, SECRET) for _ in range(2)
    )
    assert first[0] == second[0]  # byte-identical bodies

    def key(body: bytes, headers: dict[str, str]) -> str:
        request = WebhookRequest("POST", HOOK_URL, {k.lower(): v for k, v in headers.items()}, body)
        assert shop.adapter.verify_webhook(request, SECRET, now=0.0)
        (event,) = shop.adapter.parse_webhook(request)
        assert event.kind == "purge_all"
        return event.delivery_id

    assert key(*first) != key(*second)
    assert key(*first) == key(*first)  # Shopify's retry of a delivery: the same id


def test_a_customer_delivery_resent_as_shop_redact_is_not_taken_as_a_purge(
    shop: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither X-Shopify-Topic nor X-Shopify-Webhook-Id is signed: a captured
    customers/update (signed over its body only) resent as shop/redact under a fresh id
    verified, was keyed on that id, and was queued as a purge of everything held for the
    store, which never asked. Only a body shaped as Shopify's shop/redact is taken."""
    update = {
        "id": 7001,
        "admin_graphql_api_id": "gid://shopify/Customer/7001",
        "email": "an@example.com",
    }
    genuine = delivery(shop.sandbox, "customers/update", update)
    (first,) = shop.adapter.parse_webhook(genuine)
    assert first.kind == "changed"
    caplog.set_level(logging.WARNING)
    # The captured body itself, and a customers/redact's (which names its store too).
    redact = {"shop_id": 954_889, "shop_domain": SHOP_DOMAIN, "customer": {"id": 7001}}
    for body in (genuine.body, json.dumps(redact).encode()):
        headers = {
            **genuine.headers,
            "x-shopify-topic": "shop/redact",
            "x-shopify-hmac-sha256": webhook_signature(body, SECRET),
            "x-shopify-webhook-id": "00000000-0000-4000-8000-000000000001",
        }
        resent = WebhookRequest("POST", HOOK_URL, headers, body)
        assert shop.adapter.verify_webhook(resent, SECRET, now=0.0)
        assert [e.kind for e in shop.adapter.parse_webhook(resent)] == ["ignored"]
    assert caplog.records and "an@example.com" not in caplog.text
    # Shopify's own, with a key it may add one day that names no one, is still taken.
    payload = {**shop.sandbox.compliance_payload("shop/redact"), "shop_name": "Klant"}
    (purge,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "shop/redact", payload))
    assert purge.kind == "purge_all"


def test_a_captured_data_request_resent_as_customers_redact_is_not_an_erasure(
    shop: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The topic header is not signed. A captured customers/data_request body (it carries
    ``data_request`` and ``orders_requested``, never ``orders_to_redact``) resent under
    ``X-Shopify-Topic: customers/redact`` once its replay key had expired
    (webhook_ids_days) turned an access request into an irreversible erasure of the
    customer in every system. A person topic's body is taken only when shaped as its own;
    Shopify's own deliveries of both still are."""
    shop.sandbox.add_person("an@example.com", "An", "Jansen")
    shop.sandbox.add_order("an@example.com")
    data = shop.sandbox.compliance_payload("customers/data_request", "an@example.com")
    redact = shop.sandbox.compliance_payload("customers/redact", "an@example.com")
    (access,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/data_request", data))
    (erase,) = shop.adapter.parse_webhook(delivery(shop.sandbox, "customers/redact", redact))
    assert (access.kind, erase.kind) == ("access", "erase")
    caplog.set_level(logging.WARNING)
    for topic, captured in (("customers/redact", data), ("customers/data_request", redact)):
        resent = delivery(shop.sandbox, topic, captured)
        assert shop.adapter.verify_webhook(resent, SECRET, now=0.0)
        assert [e.kind for e in shop.adapter.parse_webhook(resent)] == ["ignored"]
    # Nor does an order's body, which names its customer too, pass for an erasure.
    order = {"id": 820982911946154508, "customer": {"id": 7001, "email": "an@example.com"}}
    assert [e.kind for e in parse_delivery(delivery(shop.sandbox, "customers/redact", order))] == [
        "ignored"
    ]
    assert caplog.records and "an@example.com" not in caplog.text
    # A genuine erasure sent without its (empty) order list is still an erasure.
    bare = {k: v for k, v in redact.items() if k != "orders_to_redact"}
    assert [e.kind for e in parse_delivery(delivery(shop.sandbox, "customers/redact", bare))] == [
        "erase"
    ]


def test_an_email_marketing_consent_webhook_is_a_change_to_sync(shop: Harness) -> None:
    """Since API 2025-01 Shopify sends consent changes on their own topic,
    customers_email_marketing_consent/update ({customer_id, email_address,
    email_marketing_consent}), no longer in customers/update. It was answered "ignored": a
    customer who unsubscribed in the shop stayed subscribed in Mailchimp until a scheduled
    pull happened to read them again."""
    payload = {
        "customer_id": 7100000000001,
        "email_address": "anna@example.nl",
        "email_marketing_consent": {
            "state": "unsubscribed",
            "opt_in_level": "single_opt_in",
            "consent_updated_at": "2025-03-04T09:00:00Z",
        },
    }
    topic = "customers_email_marketing_consent/update"
    (event,) = shop.adapter.parse_webhook(delivery(shop.sandbox, topic, payload))
    assert (event.kind, event.external_id, event.email) == (
        "changed",
        "gid://shopify/Customer/7100000000001",
        "anna@example.nl",
    )
    (nobody,) = shop.adapter.parse_webhook(delivery(shop.sandbox, topic, {"email_address": "x"}))
    assert nobody.kind == "ignored"


@pytest.mark.parametrize(
    "written",
    ["https://Klant-Shop.myshopify.com", "klant-shop.myshopify.com/", "klant-shop"],
)
def test_a_shop_domain_written_as_a_url_or_a_handle_names_the_store(written: str) -> None:
    """Compared as written, a shop_domain written as a URL (as base_url is, beside it), with
    a slash, or as the handle, matched no delivery: the store's own customers/redact were
    ignored without a trace. Each is read as the host it names; what names none is refused."""
    settings = make_settings(shop_domain=written)
    assert settings.own_domain() == "klant-shop.myshopify.com"
    sandbox = ShopifySandbox(shop_domain="klant-shop.myshopify.com")
    payload = {
        "shop_id": 1,
        "shop_domain": "klant-shop.myshopify.com",
        "customer": {"id": 42, "email": "an@example.com", "phone": None},
        "orders_to_redact": [],
    }
    body, headers = sandbox.signed_compliance_webhook("customers/redact", payload, SECRET)
    request = WebhookRequest("POST", HOOK_URL, {k.lower(): v for k, v in headers.items()}, body)
    assert [e.kind for e in parse_delivery(request, settings.own_domain())] == ["erase"]


def test_a_shop_domain_that_names_no_shopify_store_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"myshopify\.com"):
        make_settings(shop_domain="winkel.example.nl")


async def test_find_people_reads_no_more_than_a_pull_lists() -> None:
    """A targeted sync (a webhook, resync --email) reads the person as a pull does: not
    their whole address book, which access and erasure read (find) and no flow syncs."""
    clock, wall = FakeClock(), FakeClock(1_741_078_800.0)
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)
    sandbox.add_person(
        "anna@example.nl", "Anna", "Jansen", "+31612345678",
        address1="Hoofdstraat 1", city="Utrecht", zip="3511AA", country_code="NL",
    )  # fmt: skip
    customer = sandbox.store.by_email("anna@example.nl")
    assert customer is not None
    work = dict(customer["defaultAddress"], id="gid://shopify/MailingAddress/42")
    work.update(address1="Kantoorlaan 99", city="Zeist")
    customer["addresses"].append(work)
    harness = make_harness(sandbox, clock, wall)
    try:
        (pulled,) = [r for p in await collect(harness.adapter, None) for r in p.records]
        (person,) = await harness.adapter.find_people(Subject(email="anna@example.nl"))
        (held,) = [
            r
            for r in await harness.adapter.find(Subject(email="anna@example.nl"))
            if r.get("type") != "order"
        ]
    finally:
        await harness.client.aclose()
    assert set(person) == set(pulled)
    assert "addresses" in held  # access still shows the address book


async def test_the_report_says_in_its_own_language_that_shopify_left_orders_out(
    config_path: Path, tmp_path: Path
) -> None:
    """The copy's note of orders Shopify did not serve is said in the report's language,
    as why a record is kept is ("bewust bewaard")."""
    from connector.access import art15_facts, write_bundle
    from connector.config import load_config

    clock, wall = FakeClock(), FakeClock(1_741_078_800.0)
    sandbox = ShopifySandbox(clock=clock, wall_clock=wall, shop_domain=SHOP_DOMAIN)
    sandbox.add_person("anna@example.nl", "Anna", "Jansen")
    age(sandbox, sandbox.add_order("anna@example.nl"), 400)
    sandbox.add_order("anna@example.nl")
    harness = make_harness(sandbox, clock, wall)
    try:
        records = await harness.adapter.find(Subject(email="anna@example.nl"))
    finally:
        await harness.client.aclose()
    assert records[0]["ordersNotRead"]["count"] == 1
    out = tmp_path / "bundle"
    write_bundle(
        out,
        request_id="r1",
        subject_id="s1",
        generated_at="2025-03-04T09:00:00Z",
        systems={"shop": ("shopify", records)},
        connector={},
        facts=art15_facts(load_config(config_path)),
    )
    dutch = (out / "report.nl.md").read_text(encoding="utf-8")
    english = (out / "report.en.md").read_text(encoding="utf-8")
    assert "Shopify telt meer bestellingen" in dutch and "Shopify counts more" not in dutch
    assert "Shopify counts more orders" in english


# -- access scopes ---------------------------------------------------------------------------


def scoped(shop: Harness, *scopes: str) -> Harness:
    """The adapter against the harness's store, its token granted ``scopes`` alone."""
    shop.sandbox.scopes = frozenset(scopes)
    return shop


def refused_naming(caught: pytest.ExceptionInfo[FatalRemoteError], scope: str) -> None:
    """The refusal is fatal, says which scope to grant, and holds nobody's data."""
    assert caught.value.detail == f"ACCESS_DENIED: grant the app {scope}"
    assert str(caught.value) == (
        f"shop: POST {GRAPHQL} -> 200 (ACCESS_DENIED: grant the app {scope})"
    )


async def test_a_pull_refused_for_read_customers_names_the_scope(shop: Harness) -> None:
    """An app without read_customers is refused the customers page (ACCESS_DENIED): the
    sync's error said that code alone, so the operator could not tell what to grant."""
    seed(shop.sandbox, shop.wall, 2)
    scoped(shop, "read_orders")
    with pytest.raises(FatalRemoteError) as caught:
        await collect(shop.adapter, None)
    refused_naming(caught, "read_customers")
    assert not isinstance(caught.value, RetryableError)


async def test_a_search_refused_for_read_customers_names_the_scope(shop: Harness) -> None:
    """Looking a person up by e-mail (an access copy, an erasure, ``check --online``) without
    read_customers names the scope, and never the address searched for."""
    shop.sandbox.add_person("anna@example.nl", "Anna")
    scoped(shop, "read_orders", "write_customer_data_erasure")
    for call in (shop.adapter.find, shop.adapter.find_people, shop.adapter.erase):
        with pytest.raises(FatalRemoteError) as caught:
            await call(Subject(email="anna@example.nl"))
        refused_naming(caught, "read_customers")
        assert "anna" not in str(caught.value)


async def test_orders_for_an_access_copy_refused_for_read_orders_name_the_scope(
    shop: Harness,
) -> None:
    """An app that reads customers but not orders finds the person and is refused their
    orders: the access copy fails naming read_orders (not passing the customer alone off as
    all the shop holds)."""
    shop.sandbox.add_person("anna@example.nl", "Anna")
    shop.sandbox.add_order("anna@example.nl")
    scoped(shop, "read_customers")
    with pytest.raises(FatalRemoteError) as caught:
        await shop.adapter.find(Subject(email="anna@example.nl"))
    refused_naming(caught, "read_orders")
    scoped(shop, "read_customers", "read_orders")
    found = await shop.adapter.find(Subject(email="anna@example.nl"))
    assert [r.get("type") for r in found] == [None, "order"]


async def test_an_erasure_request_refused_for_its_scope_names_it(shop: Harness) -> None:
    """An app that reads customers but may not request their erasure finds the person and
    is refused customerRequestDataErasure: the erasure fails naming
    write_customer_data_erasure, and nothing is queued at Shopify."""
    shop.sandbox.add_person("anna@example.nl", "Anna")
    scoped(shop, "read_customers", "read_orders", "read_customer_data_erasure")
    with pytest.raises(FatalRemoteError) as caught:
        await shop.adapter.erase(Subject(email="anna@example.nl"))
    refused_naming(caught, "write_customer_data_erasure")
    assert not shop.sandbox.pending_erasure("anna@example.nl")
    assert "mutation customerRequestDataErasure" not in shop.sandbox.operations
    scoped(shop, "read_customers", "write_customer_data_erasure")  # the write grants the read
    assert (await shop.adapter.erase(Subject(email="anna@example.nl"))).pending


async def test_the_sandbox_answers_access_denied_as_shopify_does(
    sandbox: ShopifySandbox, raw: Callable[..., Any]
) -> None:
    """A field outside the token's scopes is answered ACCESS_DENIED inside an HTTP 200,
    naming the scope in its message and ``requiredAccess``, its root field null; a token
    with every scope (the default) is served."""
    customer_id = sandbox.add_person("anna@example.nl", "Anna")
    query = '{ customer(id: "' + customer_id + '") { id orders(first: 5) { nodes { id } } } }'
    status, body = await raw(query)
    assert status == 200 and body["data"]["customer"]["id"] == customer_id
    sandbox.scopes = frozenset({"read_customers"})
    status, body = await raw(query)
    (error,) = body["errors"]
    assert status == 200 and body["data"] == {"customer": None}
    assert error["path"] == ["customer", "orders"]
    assert error["message"] == (
        "Access denied for orders field. Required access: `read_orders` access scope."
    )
    assert error["extensions"]["code"] == "ACCESS_DENIED"
    assert error["extensions"]["requiredAccess"] == "`read_orders` access scope."
    sandbox.scopes = frozenset({"write_orders"})  # a write scope grants its read one
    _, body = await raw('{ order(id: "gid://shopify/Order/1") { id } }')
    assert "errors" not in body


def test_check_online_names_the_scope_a_token_without_read_customers_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --online` looks a person up in the shop: an app without read_customers fails
    it (exit 1) naming that scope, where it said ACCESS_DENIED alone."""
    from connector.sandboxkit import serve_tls

    (tmp_path / "master.key").write_text(MASTER_KEY)
    (tmp_path / "master.key").chmod(0o600)
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    shop = ShopifySandbox(shop_domain=SHOP_DOMAIN, scopes={"read_orders"})
    with serve_tls({"shop": shop.app()}, tmp_path / "tls") as (ca, apps):
        assert ca is not None
        config = tmp_path / "klantsync.toml"
        config.write_text(
            f"""
[store]
path = "klantsync.db"
[keys]
source = "file:master.key"
[systems.shop]
adapter = "shopify"
base_url = "{apps["shop"].url}"
ca_bundle = "{ca.ca_path}"
shop_domain = "{SHOP_DOMAIN}"
mapping = "{MAPPING}"
credentials = {{ access_token = "file:token" }}
"""
        )
        assert main(["-c", str(config), "check", "--online", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["online"]["shop"] == (
        f"shop: POST {GRAPHQL} -> 200 (ACCESS_DENIED: grant the app read_customers)"
    )
