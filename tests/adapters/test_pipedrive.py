"""The Pipedrive adapter against its sandbox, in process (no network, no real sleeping)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import formatdate
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from adapters.pipedrive import (
    ERASURE_ENDPOINT,
    ERASURE_NOTE,
    SPEC,
    PipedriveAdapter,
    PipedriveSandbox,
    PipedriveSettings,
    basic_authorization,
    client_config,
    is_cloudflare_block,
    pipedrive_limits,
    wait_hint,
)
from adapters.pipedrive._store import encode_position, rfc3339
from adapters.pipedrive.adapter import IN_THE_BIN_NOTE
from adapters.pipedrive.directory import FIRST_LISTING_AFTER, FRESH_SECONDS
from adapters.pipedrive.payloads import IN_THE_BIN, decode_cursor
from adapters.pipedrive.sandbox import DAILY_WRITES, TOKEN_COST
from adapters.pipedrive.settings import BLOCKED_WAIT_SECONDS, DAILY_WAIT_SECONDS, budget_spent
from connector.adapter import (
    RETAINED,
    Adapter,
    OutboundRecord,
    Subject,
    UpsertResult,
    WebhookRequest,
)
from connector.engine import source_people
from connector.errors import FatalRemoteError, RetryableError
from connector.http import RetryPolicy, SystemClient
from connector.mapping import load_mapping
from connector.model import Person, is_archived
from connector.others import LEFT_OUT
from connector.ratelimit import RateLimit
from connector.settings import RateLimitSettings
from connector.systems import System
from tests.adapters.front import Decision, FrontPage
from tests.conftest import CANARY_EMAIL, CANARY_NAME, VirtualTime

BASE_URL = "https://klant.pipedrive.test/api/v2"
PERSONS = "/api/v2/persons"
TOKEN = "pipedrive-sandbox-token"
HOOK_SECRET = "klantsync:hook-password"
HOOK_URL = "https://klantsync.example.nl/webhooks/crm"
DAY = 86_400


class WallClock:
    """Epoch seconds for the sandbox's add, update and deletion times; moved by hand."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A sandbox, the adapter wired to it, its client, and the virtual clocks."""

    sandbox: PipedriveSandbox
    adapter: PipedriveAdapter
    client: SystemClient
    time: VirtualTime
    wall: WallClock


def make_settings(token: str = TOKEN, **overrides: Any) -> PipedriveSettings:
    values: dict[str, Any] = {"base_url": BASE_URL, **overrides}
    return PipedriveSettings(
        adapter="pipedrive",
        mapping=Path("mappings/pipedrive.toml"),
        credentials={"api_token": SecretStr(token)},
        **values,
    )


def make_harness(
    sandbox: PipedriveSandbox,
    time: VirtualTime,
    wall: WallClock,
    *,
    token: str = TOKEN,
    attempts: int = 4,
    paced: bool = True,
    front: Callable[[Any], Any] | None = None,
) -> Harness:
    """``front``, if given, wraps the sandbox's app (a proxy or a maintenance page before it)."""
    settings = make_settings(token)
    config = client_config(settings)
    limits = pipedrive_limits(settings)
    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        headers=config.headers,
        wait_hint=config.wait_hint,
        rate_limited=config.rate_limited,
        budget_spent=config.budget_spent,
        limits=limits.rate if paced else None,
        transport=httpx.ASGITransport(app=front(sandbox.app()) if front else sandbox.app()),
        retry=RetryPolicy(attempts=attempts, base_seconds=0, sleep=time.sleep),
        max_connections=limits.max_concurrency + 2,
        clock=time.clock,
    )
    return Harness(sandbox, PipedriveAdapter(client, settings), client, time, wall)


@pytest.fixture
def time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def sandbox(time: VirtualTime, wall: WallClock) -> PipedriveSandbox:
    return PipedriveSandbox(clock=time.clock, wall_clock=wall)


@pytest.fixture
async def pd(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> AsyncIterator[Harness]:
    harness = make_harness(sandbox, time, wall)
    yield harness
    await harness.client.aclose()


@pytest.fixture
async def raw(sandbox: PipedriveSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client on the sandbox, for calls the adapter never makes."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        yield client


def person(n: int, external_id: str | None = None, **fields: Any) -> OutboundRecord:
    values: dict[str, Any] = {
        "email": f"person{n}@example.com",
        "first_name": f"First{n}",
        "last_name": "Test",
    }
    values.update(fields)
    return OutboundRecord(
        ref=f"ref-{n}", email=str(values["email"]), external_id=external_id, fields=values
    )


# -- settings, limits, spec -------------------------------------------------------------------


def test_limits_follow_plan_and_rate_limit_override() -> None:
    """The burst per 2 s follows the plan unless overridden; search is 10 per 2 s; pages 500."""
    bursts = {
        plan: pipedrive_limits(make_settings(plan=plan)).rate["default"]
        for plan in ("lite", "growth", "premium", "ultimate")
    }
    assert bursts == {
        "lite": RateLimit(20, 2),
        "growth": RateLimit(40, 2),
        "premium": RateLimit(100, 2),
        "ultimate": RateLimit(120, 2),
    }
    limits = pipedrive_limits(
        make_settings(rate_limit=RateLimitSettings(requests=5, per_seconds=1))
    )
    assert limits.rate["default"] == RateLimit(5, 1)
    assert limits.rate["search"] == RateLimit(10, 2)
    assert (limits.page_size, limits.max_concurrency) == (500, 4)
    assert 1 <= limits.batch_size <= 20


@pytest.mark.parametrize(
    "base_url",
    [
        "https://klant.pipedrive.com",
        "https://klant.pipedrive.com/api/v1",
        "https://api.pipedrive.com/v1",
        "https://api.pipedrive.com/api/v2/persons",
    ],
    ids=["company-url", "api-v1", "old-v1-root", "path-past-the-api-root"],
)
def test_settings_refuse_a_pipedrive_base_url_that_is_not_its_api_v2_root(base_url: str) -> None:
    """The adapter speaks API v2 under the configured root. At API v1's root every read
    came back in v1's shape (``email``, not ``emails``; paged by ``start``, so a pull
    ended "complete" after its first page and the other persons were never read), and
    access copies looked for notes under ``/api/v1/v1``; at the company's own URL every
    call met the web app. Refused at load, naming the root to write."""
    with pytest.raises(ValidationError) as refused:
        make_settings(base_url=base_url)
    assert "/api/v2" in str(refused.value)


def test_settings_take_pipedrive_s_api_v2_root_and_any_other_host() -> None:
    """The root as Pipedrive writes it, at its API host or the company's, with or without
    its closing slash; another host (the sandbox, a proxy) is the operator's to choose."""
    for base_url in (
        "https://api.pipedrive.com/api/v2",
        "https://klant.pipedrive.com/api/v2/",
        "https://Klant.Pipedrive.com/api/v2",
        "https://127.0.0.1:8446/api/v2",
        "https://proxy.example.nl/pipedrive",
    ):
        assert make_settings(base_url=base_url).base_url == base_url


def test_spec_and_adapter_meet_the_contract(pd: Harness) -> None:
    """SPEC wires the Pipedrive pieces together and the adapter meets the Adapter protocol."""
    assert SPEC.kind == "pipedrive" == pd.adapter.kind
    assert SPEC.settings_model is PipedriveSettings
    assert isinstance(pd.adapter, Adapter)
    assert client_config(make_settings()).headers == {"x-api-token": TOKEN}
    assert SPEC.sandbox().credentials() == {"api_token": TOKEN}
    assert PipedriveSettings.required_credentials == ("api_token",)


# -- upsert -----------------------------------------------------------------------------------


async def test_upsert_creates_then_updates_without_duplicates(pd: Harness) -> None:
    """Creates via search + POST, then updates found by search, then by external id; no dupes."""
    first = await pd.adapter.upsert([person(1), person(2, phone="+31612345678")])
    assert [r.outcome for r in first] == ["created", "created"]
    assert pd.sandbox.person_count() == 2
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 2

    pd.sandbox.endpoints_used.clear()
    second = await pd.adapter.upsert([person(1, first_name="Eerste"), person(2)])
    assert [r.outcome for r in second] == ["updated", "updated"]
    assert [r.external_id for r in second] == [r.external_id for r in first]
    # Each person is read before its update: the phones and e-mails others added stay.
    assert sorted(pd.sandbox.endpoints_used) == sorted(
        [f"GET {PERSONS}/search", f"GET {PERSONS}/{{id}}", f"PATCH {PERSONS}/{{id}}"] * 2
    )

    renamed = pd.sandbox.record_for("person1@example.com")
    assert renamed is not None and renamed["name"] == "Eerste Test"

    pd.sandbox.endpoints_used.clear()
    third = await pd.adapter.upsert([person(1, first[0].external_id, last_name="Derde")])
    assert [(r.outcome, r.external_id) for r in third] == [("updated", first[0].external_id)]
    assert pd.sandbox.endpoints_used == [f"GET {PERSONS}/{{id}}", f"PATCH {PERSONS}/{{id}}"]
    assert pd.sandbox.person_count() == 2

    record = pd.sandbox.record_for("person1@example.com")
    assert record is not None
    assert (record["name"], record["last_name"]) == ("First1 Derde", "Derde")
    assert record["emails"] == [{"value": "person1@example.com", "primary": True, "label": "work"}]
    two = pd.sandbox.record_for("person2@example.com")
    assert two is not None and two["phones"][0]["value"] == "+31612345678"


async def test_one_email_twice_in_a_batch_is_one_person(pd: Harness) -> None:
    """Records sharing an e-mail run in order, the second by the first's id: no duplicate."""
    records = [person(1, last_name="Een"), person(2), person(1, last_name="Twee")]
    results = await pd.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "created", "updated"]
    assert results[0].external_id == results[2].external_id
    assert pd.sandbox.person_count() == 2
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 2
    record = pd.sandbox.record_for("person1@example.com")
    assert record is not None and record["last_name"] == "Twee"


async def test_addresses_equal_only_case_folded_are_two_subjects_and_two_persons(
    pd: Harness,
) -> None:
    """klantsync tells subjects apart by ``normalise_email`` (lower-case, NFC), under which
    "straße@" and "strasse@" are two people (case-folded they are one): each gets a person
    of their own, and neither's name lands on the other's."""
    records = [
        OutboundRecord(
            "r1",
            "straße@example.de",
            None,
            {"email": "straße@example.de", "first_name": "Anna", "last_name": "Groß"},
        ),
        OutboundRecord(
            "r2",
            "strasse@example.de",
            None,
            {"email": "strasse@example.de", "first_name": "Bert", "last_name": "Strasse"},
        ),
    ]
    results = await pd.adapter.upsert(records)
    assert [r.outcome for r in results] == ["created", "created"], results
    assert results[0].external_id != results[1].external_id
    first = pd.sandbox.record_for("straße@example.de")
    assert first is not None and first["first_name"] == "Anna"


def test_lookups_tell_addresses_apart_as_subjects_are() -> None:
    """A search hit, the listing and a person's e-mail list match an address as subjects
    are told apart: "strasse@" does not find, nor keep as its own, "straße@"'s entry."""
    from adapters.pipedrive.directory import Directory
    from adapters.pipedrive.payloads import other_entries_kept, search_hits

    hit = {"data": {"items": [{"item": {"id": 7, "emails": ["Straße@Example.de"]}}]}}
    assert search_hits(hit, "strasse@example.de") == []
    assert search_hits(hit, "straße@example.de") == [7]
    directory = Directory(clock=lambda: 0.0)
    directory.load([{"id": 7, "emails": [{"value": "straße@example.de"}]}], pages=1)
    assert directory.ids("strasse@example.de") == []
    assert directory.ids("Straße@Example.DE") == [7]
    listed = [{"value": "straße@example.de", "primary": True, "label": "work"}]
    written = other_entries_kept(listed, "strasse@example.de", label="work")
    assert [e["value"] for e in written] == ["strasse@example.de"]


async def test_sandbox_records_what_pipedrive_received(pd: Harness) -> None:
    """The log holds the person fields written (name, emails, phones), no values."""
    await pd.adapter.upsert([person(1, phone="+31612345678")])
    assert pd.sandbox.log.property_names() == {"name", "emails", "phones"}
    logged = repr(pd.sandbox.log.entries)
    assert "person1@example.com" not in logged and "+31612345678" not in logged


async def test_create_without_names_uses_the_local_part(pd: Harness) -> None:
    """Pipedrive requires a name: without first or last name the e-mail's local part is used."""
    record = OutboundRecord("r", "nameless@example.com", None, {"email": "nameless@example.com"})
    (result,) = await pd.adapter.upsert([record])
    assert result.outcome == "created"
    stored = pd.sandbox.record_for("nameless@example.com")
    assert stored is not None and stored["name"] == "nameless"


#: The body fields of v2 ``AddPersonRequest`` / ``UpdatePersonRequest`` in Pipedrive's own SDK
#: (pipedrive/client-nodejs, src/versions/v2/models/add-person-request.ts and
#: update-person-request.ts): no ``first_name`` or ``last_name``.
V2_PERSON_WRITE_FIELDS = frozenset(
    {
        "name",
        "owner_id",
        "org_id",
        "add_time",
        "update_time",
        "emails",
        "phones",
        "visible_to",
        "label_ids",
        "marketing_status",
        "custom_fields",
    }
)


async def test_person_writes_carry_only_the_fields_of_v2_person_requests(pd: Harness) -> None:
    """v2 person requests have ``name`` and no ``first_name``/``last_name``: the name parts
    the mapping maps are sent as ``name`` only, on create and update, and a read shows them
    split from it again."""
    record = OutboundRecord(
        "ref-1",
        "piet@example.nl",
        None,
        {"email": "piet@example.nl", "first_name": "Piet", "last_name": "Puk"},
    )
    (created,) = await pd.adapter.upsert([record])
    (updated,) = await pd.adapter.upsert([record])
    assert (created.outcome, updated.outcome) == ("created", "updated")
    sent = pd.sandbox.log.property_names()
    assert sent <= V2_PERSON_WRITE_FIELDS, sorted(sent - V2_PERSON_WRITE_FIELDS)
    stored = pd.sandbox.record_for("piet@example.nl")
    assert stored is not None
    assert (stored["name"], stored["first_name"], stored["last_name"]) == (
        "Piet Puk",
        "Piet",
        "Puk",
    )


async def test_sandbox_refuses_name_parts_in_a_person_write(
    raw: httpx.AsyncClient, sandbox: PipedriveSandbox
) -> None:
    """As v2's request models have no name parts, a write carrying one is refused (400)."""
    person_id = sandbox.add_person("deel@example.nl", "Deel", "Naam")
    refused = await raw.patch(f"/persons/{person_id}", json={"first_name": "Ander"})
    created = await raw.post("/persons", json={"name": "Nieuw", "last_name": "Achter"})
    assert (refused.status_code, created.status_code) == (400, 400)
    assert sandbox.store.persons[int(person_id)].to_json()["first_name"] == "Deel"


async def test_a_field_mapped_to_a_custom_field_reaches_the_person(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock, tmp_path: Path
) -> None:
    """v2 keeps custom fields under ``custom_fields``, keyed by each field's 40-character
    hash. A mapping path ``custom_fields.<hash>`` comes dotted ("dotted for nested") and was
    sent flat, a field no person has: the write was refused and the record a dead letter.
    It is sent nested; a later write of another custom field keeps this one."""
    key = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
    text = Path("mappings/pipedrive.toml").read_text(encoding="utf-8")
    text += f'\n[fields.city]\npath = "custom_fields.{key}"\ntransform = ["trim"]\n'
    text += 'purpose = "Sales: the branch nearest the customer"\n'
    mapping_file = tmp_path / "pipedrive.toml"
    mapping_file.write_text(text, encoding="utf-8")
    mapping = load_mapping(mapping_file)
    kees = Person(email="kees@example.nl", first_name="Kees", last_name="Klant", city="Utrecht")
    harness = make_harness(sandbox, time, wall)
    try:
        (result,) = await harness.adapter.upsert(
            [OutboundRecord("ref-kees", "kees@example.nl", None, mapping.outbound(kees))]
        )
        other = {"email": "kees@example.nl", f"custom_fields.{'f' * 40}": "ja"}
        (again,) = await harness.adapter.upsert(
            [OutboundRecord("ref-kees", "kees@example.nl", result.external_id, other)]
        )
    finally:
        await harness.client.aclose()
    assert (result.outcome, again.outcome) == ("created", "updated"), result.reason
    stored = sandbox.record_for("kees@example.nl")
    assert stored is not None and stored["custom_fields"] == {key: "Utrecht", "f" * 40: "ja"}


async def test_stale_external_id_falls_back_to_search(pd: Harness) -> None:
    """An id of a person deleted in Pipedrive (404) is looked up by e-mail and recreated."""
    (created,) = await pd.adapter.upsert([person(1)])
    assert created.external_id is not None
    await pd.adapter.erase(Subject(email="person1@example.com"))
    (again,) = await pd.adapter.upsert([person(1, created.external_id)])
    assert again.outcome == "created"
    assert again.external_id != created.external_id
    assert pd.sandbox.holds("person1@example.com")


# -- lookups: a search each, or one listing of everyone ------------------------------------


async def _upsert_in_batches(pd: Harness, numbers: range, size: int = 10) -> list[Any]:
    results: list[Any] = []
    for start in range(numbers.start, numbers.stop, size):
        results += await pd.adapter.upsert([person(n) for n in range(start, start + size)])
    return results


async def test_a_first_sync_lists_everyone_once_instead_of_searching_each(pd: Harness) -> None:
    """Past 20 lookups in a minute, one listing answers the rest: held persons are updated."""
    held = {n: pd.sandbox.add_person(f"person{n}@example.com") for n in range(0, 60, 3)}
    results = await _upsert_in_batches(pd, range(60))
    # The first batch's 10 lookups were searched; the second batch reached 20 and listed.
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 10
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}") == 1
    for n, result in enumerate(results):
        if n in held:
            assert (result.outcome, result.external_id) == ("updated", held[n])
        else:
            assert result.outcome == "created"
    assert pd.sandbox.person_count() == 60


async def test_a_few_new_records_are_searched_without_a_listing(pd: Harness) -> None:
    """A handful of lookups is cheaper searched than a listing of a large company."""
    for n in range(200):
        pd.sandbox.add_person(f"someone{n}@example.com")
    await pd.adapter.upsert([person(n) for n in range(5)])
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 5
    assert f"GET {PERSONS}" not in pd.sandbox.endpoints_used


async def test_a_listing_is_not_worth_it_again_until_lookups_outnumber_its_pages(
    pd: Harness,
) -> None:
    """After a listing of 3 pages, the next is made only once 6 lookups come in a minute."""
    for n in range(1200):
        pd.wall.now += n % 2  # two a second: no second holds half a page
        pd.sandbox.add_person(f"someone{n}@example.com")
    await _upsert_in_batches(pd, range(20))
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}") == 3  # 1,210 persons, 500 a page
    assert pd.adapter.directory.addresses == 1220
    pd.time.now += FRESH_SECONDS
    pd.sandbox.endpoints_used.clear()
    await pd.adapter.upsert([person(n) for n in range(100, 105)])
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 5
    assert pd.adapter.directory.addresses == 0  # a stale listing leaves memory
    await pd.adapter.upsert([person(n) for n in range(105, 107)])
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}") == 3
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 5


async def test_a_person_deleted_since_the_listing_is_searched_for_and_created_again(
    pd: Harness,
) -> None:
    """The listing's id answers 404: the e-mail is searched, and the person created anew."""
    results = await _upsert_in_batches(pd, range(30))
    assert pd.adapter.directory.fresh
    gone = results[25].external_id
    await pd.client.request("DELETE", f"/persons/{gone}")  # someone deletes them in Pipedrive
    pd.sandbox.endpoints_used.clear()
    (again,) = await pd.adapter.upsert([person(25)])
    assert again.outcome == "created" and again.external_id != gone
    assert pd.sandbox.endpoints_used == [
        f"GET {PERSONS}/{{id}}",
        f"GET {PERSONS}/search",
        f"POST {PERSONS}",
    ]
    assert pd.sandbox.person_count() == 30


async def test_what_the_adapter_creates_or_erases_is_kept_in_the_listing(pd: Harness) -> None:
    """A person created after the listing is updated, not created twice; an erased one is not
    patched by the listing's stale id."""
    await _upsert_in_batches(pd, range(30))
    (late,) = await pd.adapter.upsert([person(99)])
    (again,) = await pd.adapter.upsert([person(99, last_name="Later")])
    assert (again.outcome, again.external_id) == ("updated", late.external_id)
    await pd.adapter.erase(Subject(email="person5@example.com"))
    assert pd.adapter.directory.ids("person5@example.com") == []
    assert pd.sandbox.person_count() == 30


async def test_an_erased_person_leaves_the_listing_under_every_address_it_holds_them(
    pd: Harness,
) -> None:
    """The erasure forgot the subject's address alone. A customer who changed theirs at
    the shop is erased under the new one and their Pipedrive id, while the listing holds
    their person under the address Pipedrive still had: it kept that address, and answered
    it with the deleted person's id, in the daemon's memory until the next listing."""
    results = await _upsert_in_batches(pd, range(30))
    directory = pd.adapter.directory
    assert directory.fresh
    five = int(results[5].external_id or 0)
    subject = Subject(email="new5@example.com", external_id=str(five))
    result = await pd.adapter.erase(subject)
    assert result.found and not pd.sandbox.holds("person5@example.com")
    held = vars(directory)
    assert "person5@" not in repr(held)
    assert five not in held["_emails_of"]
    assert not [ids for ids in held["_by_email"].values() if five in ids]
    assert five not in (directory.ids("person5@example.com") or [])
    assert directory.ids("person6@example.com") == [int(results[6].external_id or 0)]


async def test_a_create_whose_2xx_answer_could_not_be_read_is_not_made_twice(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """``POST /persons`` has no key to match a repeat by. Its 2xx answer replaced by a page
    (a proxy's, a truncated body) is an answer lost: the person Pipedrive made is looked up
    and written to, so the listing lookups are answered from holds them, and the record's
    next write (a webhook's targeted sync within the listing's minute) finds them."""
    posts = 0

    def first_create_answer_lost(scope: dict[str, Any]) -> Decision:
        nonlocal posts
        if (scope["method"], scope["path"]) == ("POST", PERSONS):
            posts += 1
            return "after" if posts == 1 else None
        return None

    harness = make_harness(
        sandbox, time, wall, front=lambda app: FrontPage(app, first_create_answer_lost)
    )
    records = [person(n) for n in range(FIRST_LISTING_AFTER)]  # a listing answers lookups
    try:
        results = await harness.adapter.upsert(records)
        # The lost one: found and written to, not left for a retry answered from the listing.
        (lost,) = [n for n, r in enumerate(results) if r.outcome != "created"]
        assert harness.adapter.directory.fresh
        (again,) = await harness.adapter.upsert([records[lost]])
    finally:
        await harness.client.aclose()
    assert results[lost].outcome == "updated" and results[lost].external_id is not None
    assert (again.outcome, again.external_id) == ("updated", results[lost].external_id)
    assert len(sandbox.store.with_email(records[lost].email)) == 1
    assert sandbox.person_count() == FIRST_LISTING_AFTER


#: Seconds the sandbox's search index trails its writes in the lost-create tests.
LAG = 30


def losing_a_create(
    how: str, *, carried_out: bool = True, meanwhile: Callable[[], None] | None = None
) -> Callable[[Any], Any]:
    """A front losing the answer to the first ``POST /persons``: ``"page"`` (a 2xx that
    cannot be read), ``"reset"`` (the connection dropped) or ``"502"`` (a gateway's), the
    create carried out by Pipedrive or not. ``meanwhile`` runs once it was carried out,
    before the answer is lost (others' changes in Pipedrive meanwhile)."""
    lost = False

    def wrap(app: Any) -> Any:
        async def front(scope: Any, receive: Any, send: Any) -> None:
            nonlocal lost
            if (
                lost
                or scope["type"] != "http"
                or (scope["method"], scope["path"])
                != (
                    "POST",
                    PERSONS,
                )
            ):
                await app(scope, receive, send)
                return
            lost = True
            if carried_out:

                async def swallow(_message: Any) -> None:
                    return None

                await app(scope, receive, swallow)
                if meanwhile is not None:
                    meanwhile()
            status, body = (502, b"<html>Bad gateway</html>") if how == "502" else (200, b"<p>")
            head = [(b"content-type", b"text/html")]
            await send({"type": "http.response.start", "status": status, "headers": head})
            if how == "reset":
                raise httpx.ReadError("connection reset")
            await send({"type": "http.response.body", "body": body})

        return front

    return wrap


def canary_record() -> OutboundRecord:
    fields = {"email": CANARY_EMAIL, "first_name": CANARY_NAME, "last_name": "Test"}
    return OutboundRecord("ref-canary", CANARY_EMAIL, None, fields)


def said_nothing_of_the_address(
    caplog: pytest.LogCaptureFixture, results: list[UpsertResult], sandbox: PipedriveSandbox
) -> None:
    """No log line, per-record reason or note, nor logged query or path holds the e-mail."""
    for entry in caplog.records:
        assert CANARY_EMAIL not in entry.getMessage() and CANARY_EMAIL not in repr(vars(entry))
    for result in results:
        assert CANARY_EMAIL not in f"{result.reason} {result.note}"
    for call in sandbox.log.entries:
        assert CANARY_EMAIL not in call.path and CANARY_EMAIL not in str(call.query)


@pytest.mark.parametrize("how", ["page", "reset", "502"])
async def test_a_create_whose_answer_is_lost_while_the_search_lags_is_made_once(
    how: str,
    time: VirtualTime,
    wall: WallClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A create whose answer is lost was looked for with a search, which Pipedrive's index
    answers without the person made a moment ago: the record waited, and its next try
    (the search lagging still) made the customer a second time. The persons changed since
    just before the create are listed instead (the list reads Pipedrive's own data): the
    one whose primary e-mail it is is the person made, written to, and the next try
    writes to them too."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, search_lag=LAG, send_date=True)
    for n in range(5):
        sandbox.add_person(f"other{n}@example.com")  # others, changed in the same second
    harness = make_harness(sandbox, time, wall, front=losing_a_create(how))
    record = canary_record()
    with caplog.at_level(logging.DEBUG):
        try:
            results = await harness.adapter.upsert([record])
            wall.now += 1
            time.now += 1
            # The next try, the search lagging still, with the id the first one learned (as
            # the engine's identity map passes it on), if it learned one.
            again = record._replace(external_id=results[0].external_id)
            results += await harness.adapter.upsert([again])
        finally:
            await harness.client.aclose()
    held = sandbox.store.with_email(CANARY_EMAIL)
    assert len(held) == 1
    assert held[0].to_json()["first_name"] == CANARY_NAME
    assert [(r.outcome, r.external_id) for r in results] == [("updated", str(held[0].id))] * 2
    assert harness.adapter.directory.lost_at(CANARY_EMAIL) is None
    said_nothing_of_the_address(caplog, results, sandbox)


@pytest.mark.parametrize("how", ["page", "reset"])
async def test_a_lost_create_that_never_reached_pipedrive_is_made_once_on_the_next_try(
    how: str,
    time: VirtualTime,
    wall: WallClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The create never reached Pipedrive (a front end answered it, the connection dropped
    before it was sent on): the persons changed since hold nobody under the address, the
    record waits, and its next try creates the customer, once, the search lagging or not."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, search_lag=LAG, send_date=True)
    harness = make_harness(sandbox, time, wall, front=losing_a_create(how, carried_out=False))
    record = canary_record()
    with caplog.at_level(logging.DEBUG):
        try:
            results = await harness.adapter.upsert([record])
            assert results[0].outcome == "failed" and results[0].retryable
            assert not sandbox.holds(CANARY_EMAIL)
            time.now += 1
            results += await harness.adapter.upsert([record])
        finally:
            await harness.client.aclose()
    assert results[1].outcome == "created"
    assert len(sandbox.store.with_email(CANARY_EMAIL)) == 1
    said_nothing_of_the_address(caplog, results, sandbox)


async def test_a_lost_create_among_more_changes_than_it_lists_is_not_made_again_blindly(
    time: VirtualTime, wall: WallClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A mass change in Pipedrive around the lost create: more persons changed in the
    window than the pages it lists (the newest page, and the first page from just before
    the create) hold, and the person made is on neither. The search, lagging, misses them
    too: the record waits, and so does its next try, instead of creating the customer a
    second time; once the search has caught up it finds them."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, search_lag=LAG, send_date=True)
    for n in range(600):
        sandbox.add_person(f"before{n}@example.com")  # just before the create, that second

    def mass_change_after() -> None:
        for n in range(600):
            sandbox.add_person(f"after{n}@example.com")

    harness = make_harness(
        sandbox, time, wall, front=losing_a_create("reset", meanwhile=mass_change_after)
    )
    record = canary_record()
    with caplog.at_level(logging.DEBUG):
        try:
            results = await harness.adapter.upsert([record])
            assert results[0].outcome == "failed" and results[0].retryable
            assert sandbox.endpoints_used.count(f"GET {PERSONS}") <= 2  # bounded
            wall.now += 1
            time.now += 1
            results += await harness.adapter.upsert([record])  # the search lagging still
            assert len(sandbox.store.with_email(CANARY_EMAIL)) == 1
            assert results[1].outcome == "failed" and results[1].retryable
            wall.now += LAG
            time.now += LAG
            results += await harness.adapter.upsert([record])
        finally:
            await harness.client.aclose()
    (held,) = sandbox.store.with_email(CANARY_EMAIL)
    assert (results[2].outcome, results[2].external_id) == ("updated", str(held.id))
    assert sandbox.person_count() == 1201
    said_nothing_of_the_address(caplog, results, sandbox)


async def test_a_person_whose_read_cannot_be_read_is_neither_written_over_nor_made_again(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """A write reads the person first, to keep what a salesperson added. That read answered
    200 with a front end's page was taken for a person holding nothing: the PATCH replaced
    the office number and dropped the last name the sync did not carry, and a record found
    by e-mail was taken for nobody's and created a second time. The record fails
    retryably instead, and Pipedrive is left as it was."""
    reads_are_pages = False

    def person_read_is_a_page(scope: dict[str, Any]) -> Decision:
        method, path = scope["method"], scope["path"]
        one_person = path.startswith(f"{PERSONS}/") and path.rpartition("/")[2].isdecimal()
        return "page" if reads_are_pages and method == "GET" and one_person else None

    harness = make_harness(
        sandbox, time, wall, front=lambda app: FrontPage(app, person_read_is_a_page)
    )
    try:
        full, created, held = await _jan_created(harness)
        held.values["phones"] = [*held.values["phones"], {"value": "+31201234567"}]
        before = held.to_json()
        reads_are_pages = True
        by_id = OutboundRecord("r", full["email"], created.external_id, {**full, "last_name": ""})
        by_email = OutboundRecord("r", full["email"], None, full)
        results = [(await harness.adapter.upsert([record]))[0] for record in (by_id, by_email)]
    finally:
        await harness.client.aclose()
    assert all(r.outcome == "failed" and r.retryable for r in results), results
    assert sandbox.store.persons[int(str(created.external_id))].to_json() == before
    assert sandbox.person_count() == 1


async def test_a_listing_that_fails_leaves_the_batch_to_searches(pd: Harness) -> None:
    """Five 503s on the listing: no failure, the records are searched and written."""
    await pd.adapter.upsert([person(n) for n in range(10)])
    pd.sandbox.faults.fail_next = 4  # every attempt of the listing
    results = await pd.adapter.upsert([person(n) for n in range(10, 20)])
    assert all(r.outcome == "created" for r in results)
    assert not pd.adapter.directory.fresh
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == 20
    assert pd.sandbox.person_count() == 20


async def test_an_update_searches_even_with_a_fresh_listing(pd: Harness) -> None:
    """Rectification changes only a person found for certain: it asks the search."""
    await _upsert_in_batches(pd, range(30))
    pd.sandbox.endpoints_used.clear()
    (result,) = await pd.adapter.update([person(3, last_name="Juist")])
    assert result.outcome == "updated"
    assert pd.sandbox.endpoints_used[0] == f"GET {PERSONS}/search"


async def test_an_update_leaves_a_person_known_as_another_subject_s(pd: Harness) -> None:
    """Two persons hold the address (a housemate's got it as a second e-mail); the one the
    connector knows as another subject's (``spare``) keeps its values."""
    email = "gedeeld@example.com"
    own = pd.sandbox.add_person(email, "Anna", "Fout")
    other = pd.sandbox.add_person(email, "Bert", "Eigen")
    fix = OutboundRecord("r", email, own, {"email": email, "last_name": "Goed"}, frozenset({other}))
    (result,) = await pd.adapter.update([fix])
    assert (result.outcome, result.external_id) == ("updated", own)
    assert pd.sandbox.store.persons[int(own)].to_json()["last_name"] == "Goed"
    assert pd.sandbox.store.persons[int(other)].to_json()["last_name"] == "Eigen"


async def test_a_sync_writes_to_the_person_whose_primary_email_it_is_not_a_housemate_s(
    pd: Harness,
) -> None:
    """Bert's person holds anna@ as a second e-mail, Anna's own as its primary one. A first
    sync of Anna (no Pipedrive id known) wrote to the oldest person holding the address:
    Bert's, renamed to Anna, given her phone, and its id learned as hers (her later erasure
    deleted it). Only a person whose primary e-mail the address is is the customer's."""
    bert = pd.sandbox.add_person(
        "bert@buren.nl",
        "Bert",
        "Buur",
        "+31611111111",
        emails=[
            {"value": "bert@buren.nl", "primary": True, "label": "work"},
            {"value": "anna@buren.nl", "primary": False, "label": "home"},
        ],
    )
    anna = pd.sandbox.add_person("anna@buren.nl", "Anna", "Ander")
    fields = {"email": "anna@buren.nl", "first_name": "Anna", "last_name": "Ander"}
    record = OutboundRecord("ref-anna", "anna@buren.nl", None, {**fields, "phone": "+31622222222"})
    (result,) = await pd.adapter.upsert([record])
    kept = pd.sandbox.store.persons[int(bert)].to_json()
    assert (kept["name"], [p["value"] for p in kept["phones"]]) == ("Bert Buur", ["+31611111111"])
    assert (result.outcome, result.external_id) == ("updated", anna)


async def test_a_sync_creates_the_customer_where_only_a_housemate_s_person_holds_the_address(
    pd: Harness,
) -> None:
    """Nobody holds the address as their primary e-mail, a housemate's person only beside
    their own: the customer gets a person of their own, found by a listing too."""
    bert = pd.sandbox.add_person(
        "bert@buren.nl",
        "Bert",
        "Buur",
        emails=[
            {"value": "bert@buren.nl", "primary": True, "label": "work"},
            {"value": "anna@buren.nl", "primary": False, "label": "home"},
        ],
    )
    anna = OutboundRecord(
        "ref-anna", "anna@buren.nl", None, {"email": "anna@buren.nl", "first_name": "Anna"}
    )
    records = [anna, *(person(n) for n in range(FIRST_LISTING_AFTER - 1))]
    results = await pd.adapter.upsert(records)  # enough lookups for a listing
    assert pd.adapter.directory.fresh
    assert results[0].outcome == "created" and results[0].external_id != bert
    assert pd.sandbox.store.persons[int(bert)].to_json()["name"] == "Bert Buur"
    (again,) = await pd.adapter.upsert([anna])  # answered from the listing
    assert (again.outcome, again.external_id) == ("updated", results[0].external_id)
    assert pd.sandbox.store.persons[int(bert)].to_json()["name"] == "Bert Buur"


def test_the_listing_answers_with_the_persons_whose_primary_email_it_is() -> None:
    """A person holding an address beside their own primary one is not its holder."""
    from adapters.pipedrive.directory import Directory

    directory = Directory(clock=lambda: 0.0)
    directory.load(
        [
            {
                "id": 1,
                "emails": [
                    {"value": "bert@x.nl", "primary": True},
                    {"value": "anna@x.nl", "primary": False},
                ],
            },
            {"id": 2, "emails": [{"value": "anna@x.nl", "primary": True}]},
        ],
        pages=1,
    )
    assert directory.ids("anna@x.nl") == [2]
    assert directory.ids("bert@x.nl") == [1]


async def test_a_record_without_an_email_is_never_searched_for(pd: Harness) -> None:
    """Known only by an id Pipedrive no longer has, a record is not looked up by no address."""
    (created,) = await pd.adapter.upsert([person(1)])
    await pd.client.request("DELETE", f"/persons/{created.external_id}")
    pd.sandbox.endpoints_used.clear()
    record = OutboundRecord("r", "", created.external_id, {"first_name": "Anoniem"})
    await pd.adapter.upsert([record])
    assert f"GET {PERSONS}/search" not in pd.sandbox.endpoints_used


async def test_per_record_failure_has_a_reason_without_personal_data(pd: Harness) -> None:
    """A field Pipedrive refuses fails only that record, with status and category, no e-mail."""
    bad = person(2, date_of_birth="1990-01-01")
    results = await pd.adapter.upsert([person(1), bad, person(3)])
    assert [r.outcome for r in results] == ["created", "failed", "created"]
    failed = results[1]
    assert (failed.ref, failed.reason, failed.retryable) == ("ref-2", "400 validation", False)
    assert "@" not in failed.reason and "1990" not in failed.reason
    assert not pd.sandbox.holds("person2@example.com")


async def test_an_update_of_one_name_part_keeps_the_other_in_the_name(pd: Harness) -> None:
    """A corrected last name alone makes "Jan Goed", not "Goed" (name is both parts)."""
    email = "jan.fout@example.com"
    full = {"email": email, "first_name": "Jan", "last_name": "Fout"}
    (created,) = await pd.adapter.upsert([OutboundRecord("r", email, None, full)])
    fix = {"email": email, "last_name": "Goed"}
    (updated,) = await pd.adapter.update([OutboundRecord("r", email, created.external_id, fix)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert (stored["name"], stored["first_name"], stored["last_name"]) == (
        "Jan Goed",
        "Jan",
        "Goed",
    )


async def test_a_sync_without_a_last_name_keeps_the_last_name_held(pd: Harness) -> None:
    """The shop holds only a first name; a salesperson filled in the last name in Pipedrive.
    A later sync (the phone changed) sent ``name`` as the first name alone, and the last
    name was gone: a field the source does not hold is not emptied at the destination."""
    email = "jan@example.com"
    first = {"email": email, "first_name": "Jan"}
    (created,) = await pd.adapter.upsert([OutboundRecord("r", email, None, first)])
    assert created.outcome == "created" and created.external_id is not None
    pd.sandbox.store.persons[int(created.external_id)].values["name"] = "Jan Jansen"
    again = {**first, "phone": "+31612345678"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, again)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["name"] == "Jan Jansen"
    # The first name changed at the source: the last name held stays beside it.
    (renamed,) = await pd.adapter.upsert(
        [OutboundRecord("r", email, created.external_id, {**again, "first_name": "Johan"})]
    )
    assert renamed.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["name"] == "Johan Jansen"


async def test_a_name_written_from_one_part_is_not_doubled_by_the_next_sync(
    pd: Harness,
) -> None:
    """Written from a last name alone, ``name`` is "Vos", which Pipedrive shows as the
    first name: kept as the other part, it came back "Vos Vos". A first name of several
    words keeps what follows it, whatever Pipedrive's own split of the name."""
    email = "vos@example.com"
    only_last = {"email": email, "last_name": "Vos"}
    (created,) = await pd.adapter.upsert([OutboundRecord("r", email, None, only_last)])
    assert created.external_id is not None
    again = {**only_last, "phone": "+31612345678"}
    await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, again)])
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["name"] == "Vos"
    pd.sandbox.store.persons[int(created.external_id)].values["name"] = "Anna Maria Vos"
    first = {"email": email, "first_name": "Anna Maria", "phone": "+31687654321"}
    await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, first)])
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["name"] == "Anna Maria Vos"


async def test_an_update_leaves_the_email_list_and_other_phones_alone(pd: Harness) -> None:
    """A correction changes what it carries: an address a salesperson added stays."""
    email = "jan@example.com"
    full = {"email": email, "first_name": "Jan", "last_name": "Jansen"}
    (created,) = await pd.adapter.upsert([OutboundRecord("r", email, None, full)])
    assert created.external_id is not None
    person = pd.sandbox.store.persons[int(created.external_id)]
    extra = {"value": "jan.werk@example.com", "primary": False, "label": "work"}
    person.values["emails"] = [*person.values["emails"], extra]
    fix = {"email": email, "phone": "+31612345678"}
    (updated,) = await pd.adapter.update([OutboundRecord("r", email, created.external_id, fix)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [e["value"] for e in stored["emails"]] == [email, "jan.werk@example.com"]
    assert [p["value"] for p in stored["phones"]] == ["+31612345678"]
    # A phone a salesperson added stays when the primary one is corrected.
    person = pd.sandbox.store.persons[int(created.external_id)]
    person.values["phones"] = [*person.values["phones"], {"value": "+31201234567"}]
    fix = {"email": email, "phone": "+31687654321"}
    (again,) = await pd.adapter.update([OutboundRecord("r", email, created.external_id, fix)])
    assert again.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    phones = [(p["value"], bool(p.get("primary"))) for p in stored["phones"]]
    assert phones == [("+31687654321", True), ("+31201234567", False)]


async def _jan_created(pd: Harness) -> tuple[dict[str, str], UpsertResult, Any]:
    """Jan, created by a sync with his mobile number: his fields, the result, his person."""
    full = {
        "email": "jan@example.com",
        "first_name": "Jan",
        "last_name": "Jansen",
        "phone": "+31612345678",
    }
    (created,) = await pd.adapter.upsert([OutboundRecord("r", full["email"], None, full)])
    assert created.external_id is not None
    return full, created, pd.sandbox.store.persons[int(created.external_id)]


async def test_a_sync_keeps_the_phones_and_addresses_a_salesperson_added(pd: Harness) -> None:
    """A sync's update sent the phone and e-mail as one-entry lists, which replace the
    person's: a first name fixed in the shop wiped the office number and work address a
    salesperson had added. The connector's own entry is the primary one; the rest stay,
    and an address changed at the source replaces only the primary."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["emails"] = [
        *person.values["emails"],
        {"value": "jan.werk@example.com", "primary": False, "label": "work"},
    ]
    person.values["phones"] = [*person.values["phones"], {"value": "+31201234567"}]
    fixed = {**full, "first_name": "Johan"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, fixed)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["first_name"] == "Johan"
    assert [e["value"] for e in stored["emails"]] == [email, "jan.werk@example.com"]
    assert [p["value"] for p in stored["phones"]] == ["+31612345678", "+31201234567"]
    moved = {**fixed, "email": "johan@example.com"}
    (again,) = await pd.adapter.upsert(
        [OutboundRecord("r", "johan@example.com", created.external_id, moved)]
    )
    assert again.outcome == "updated"
    stored = pd.sandbox.record_for("johan@example.com")
    assert stored is not None
    assert [(e["value"], bool(e.get("primary"))) for e in stored["emails"]] == [
        ("johan@example.com", True),
        ("jan.werk@example.com", False),
    ]


async def test_a_sync_keeps_a_number_a_salesperson_made_primary(pd: Harness) -> None:
    """A salesperson added the office number and made it the primary one; a sync that
    changed only the first name dropped it (every primary entry was taken for the
    connector's). The connector's number being in the list already, the list stays."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["phones"] = [
        {"value": "+31201234567", "primary": True, "label": "work"},
        {"value": "+31612345678", "primary": False, "label": "mobile"},
    ]
    fixed = {**full, "first_name": "Johan"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, fixed)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
        ("+31201234567", True),
        ("+31612345678", False),
    ]


async def test_a_number_changed_at_the_source_replaces_the_former_one_not_the_office_number(
    pd: Harness,
) -> None:
    """A salesperson made the office number primary; then the customer's number changed in
    the shop. The primary entry was taken for the connector's and replaced: the office
    number was lost, and the number the customer gave up stayed. The entry replaced is the
    one the connector last wrote; the office number stays, beside the new primary one."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["phones"] = [
        {"value": "+31201234567", "primary": True, "label": "work"},
        {"value": "+31612345678", "primary": False, "label": "mobile"},
    ]
    changed = {**full, "phone": "+31687654321"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, changed)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
        ("+31687654321", True),
        ("+31201234567", False),
    ]


async def test_a_new_number_a_salesperson_had_added_becomes_the_primary_one(
    pd: Harness,
) -> None:
    """The customer's new number, which a salesperson had added as a second number, stayed
    second (the list holding it was sent back as it was), and the number the customer gave
    up stayed primary. Changed at the source, it replaces the primary entry, as a number
    not yet listed does."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["phones"] = [
        *person.values["phones"],
        {"value": "+31687654321", "primary": False, "label": "mobile"},
    ]
    changed = {**full, "phone": "+31687654321"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, changed)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [("+31687654321", True)]


async def _anna_moved(pd: Harness, former: str) -> str:
    """Anna, created under ``former``; a salesperson adds her new address beside it, then
    the shop's change of address reaches Pipedrive. Her person's id."""
    fields = {"first_name": "Anna", "last_name": "Vos"}
    (anna,) = await pd.adapter.upsert(
        [OutboundRecord("r", former, None, {"email": former, **fields})]
    )
    assert anna.external_id is not None
    person = pd.sandbox.store.persons[int(anna.external_id)]
    person.values["emails"] = [
        *person.values["emails"],
        {"value": "anna@new.example", "primary": False, "label": "home"},
    ]
    moved = {"email": "anna@new.example", **fields}
    (result,) = await pd.adapter.upsert(
        [OutboundRecord("r", "anna@new.example", anna.external_id, moved)]
    )
    assert result.outcome == "updated"
    return anna.external_id


async def test_a_new_address_a_salesperson_had_added_becomes_the_primary_one(
    pd: Harness,
) -> None:
    """The same for the e-mail: the address the customer gave up stayed primary."""
    anna = await _anna_moved(pd, "anna@old.example")
    stored = pd.sandbox.store.persons[int(anna)].to_json()
    assert [(e["value"], e["primary"]) for e in stored["emails"]] == [("anna@new.example", True)]


async def test_a_newcomer_under_an_address_given_up_is_not_written_onto_the_mover(
    pd: Harness,
) -> None:
    """With the address she left still her person's primary one, the next customer to take
    it up (new to the connector, found by e-mail) was written onto her person: renamed
    after him, and his identity her person's id (his erasure deleted her)."""
    anna = await _anna_moved(pd, "shared@old.example")
    fields = {"email": "shared@old.example", "first_name": "Bert", "last_name": "Baas"}
    (bert,) = await pd.adapter.upsert([OutboundRecord("r", fields["email"], None, fields)])
    assert bert.outcome == "created" and bert.external_id != anna
    assert pd.sandbox.store.persons[int(anna)].to_json()["name"] == "Anna Vos"


async def test_a_listed_number_not_known_as_sent_becomes_primary_and_the_rest_stay(
    pd: Harness, sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """What the connector last wrote is known for the adapter's life. Restarted, it cannot
    tell a number changed at the source from one a salesperson moved down the list: its own
    becomes the primary entry, and every other stays beside it, so nothing typed in
    Pipedrive is lost and an address given up no longer finds the person. Once it has
    written the number, a salesperson's reordering stays."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    reordered = [
        {"value": "+31201234567", "primary": True, "label": "work"},
        {"value": "+31612345678", "primary": False, "label": "mobile"},
    ]
    person.values["phones"] = [dict(entry) for entry in reordered]
    restarted = make_harness(sandbox, time, wall)
    try:
        fixed = {**full, "first_name": "Johan"}
        (updated,) = await restarted.adapter.upsert(
            [OutboundRecord("r", email, created.external_id, fixed)]
        )
        assert updated.outcome == "updated"
        stored = pd.sandbox.record_for(email)
        assert stored is not None
        assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
            ("+31612345678", True),
            ("+31201234567", False),
        ]
        person.values["phones"] = [dict(entry) for entry in reordered]
        again = {**fixed, "last_name": "Jans"}
        (second,) = await restarted.adapter.upsert(
            [OutboundRecord("r", email, created.external_id, again)]
        )
    finally:
        await restarted.client.aclose()
    assert second.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None and stored["phones"] == reordered


async def _restarted_write(
    sandbox: PipedriveSandbox,
    time: VirtualTime,
    wall: WallClock,
    record: OutboundRecord,
    *,
    correcting: bool = False,
) -> UpsertResult:
    """``record`` written by an adapter started afresh (after a restart, or a ``dsr
    rectify`` beside the daemon): it knows nothing of what was written before."""
    restarted = make_harness(sandbox, time, wall)
    try:
        write = restarted.adapter.update if correcting else restarted.adapter.upsert
        (result,) = await write([record])
    finally:
        await restarted.client.aclose()
    return result


async def test_a_number_changed_before_a_first_write_since_a_restart_replaces_no_other(
    pd: Harness, sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """Restarted, the adapter took the primary entry for its own and replaced it: an office
    number a salesperson had made primary was lost. With several numbers and none known as
    its own, the customer's new number becomes the primary entry beside them all; a sole
    number is taken for its own (the flow's last write gave one) and replaced."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["phones"] = [
        {"value": "+31201234567", "primary": True, "label": "work"},
        {"value": "+31612345678", "primary": False, "label": "mobile"},
    ]
    changed = OutboundRecord("r", email, created.external_id, {**full, "phone": "+31687654321"})
    assert (await _restarted_write(sandbox, time, wall, changed)).outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
        ("+31687654321", True),
        ("+31201234567", False),
        ("+31612345678", False),
    ]
    person.values["phones"] = [{"value": "+31612345678", "primary": True, "label": "mobile"}]
    assert (await _restarted_write(sandbox, time, wall, changed)).outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [("+31687654321", True)]


async def test_a_number_changed_after_its_own_entry_left_the_list_replaces_no_other(
    pd: Harness,
) -> None:
    """A salesperson took the connector's number out of the list and made the office number
    primary beside a home number; the list holds none of the connector's entries. The
    primary entry was taken for its own and replaced by the customer's new number; now the
    new one is added, primary, beside both."""
    email = "jan@example.com"
    full, created, person = await _jan_created(pd)
    person.values["phones"] = [
        {"value": "+31201234567", "primary": True, "label": "work"},
        {"value": "+31301234567", "primary": False, "label": "home"},
    ]
    changed = {**full, "phone": "+31687654321"}
    (updated,) = await pd.adapter.upsert([OutboundRecord("r", email, created.external_id, changed)])
    assert updated.outcome == "updated"
    stored = pd.sandbox.record_for(email)
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
        ("+31687654321", True),
        ("+31201234567", False),
        ("+31301234567", False),
    ]


async def test_record_without_email_or_id_fails_locally(pd: Harness) -> None:
    """A record with neither e-mail nor id fails without a call."""
    (result,) = await pd.adapter.upsert([OutboundRecord("r", "", None, {"first_name": "X"})])
    assert (result.outcome, result.reason) == ("failed", "missing_email")
    assert pd.sandbox.endpoints_used == []


# -- errors, retries, rate limits -------------------------------------------------------------


async def test_wrong_token_is_fatal(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """A 401 raises FatalRemoteError without the token, retries nothing and stops the batch."""
    harness = make_harness(sandbox, time, wall, token="wrong-token-123")
    async with harness.client:
        with pytest.raises(FatalRemoteError) as caught:
            await harness.adapter.upsert([person(n) for n in range(10)])
    assert caught.value.status == 401
    assert len(sandbox.log.entries) <= 4  # the calls already under way; the rest never start
    assert "wrong-token-123" not in str(caught.value)
    assert harness.client.stats.retries == 0
    assert sandbox.person_count() == 0


async def test_sandbox_auth_error_body(raw: httpx.AsyncClient) -> None:
    """Without the token the sandbox answers Pipedrive's 401 body."""
    response = await raw.get("/persons", headers={"x-api-token": ""})
    assert response.status_code == 401
    body = response.json()
    assert (body["success"], body["error"], body["errorCode"]) == (
        False,
        "unauthorized access",
        401,
    )


async def test_server_errors_and_resets_are_retried(pd: Harness) -> None:
    """Two 503s and a dropped connection are retried, and each write lands exactly once."""
    pd.sandbox.faults.fail_next = 2
    (result,) = await pd.adapter.upsert([person(1)])
    assert result.outcome == "created"
    pd.sandbox.faults.reset_next = 1
    (result,) = await pd.adapter.upsert([person(1)])
    assert result.outcome == "updated"
    assert pd.client.stats.server_errors == 2
    assert pd.client.stats.transport_errors == 1
    assert pd.sandbox.person_count() == 1


async def test_retries_running_out_fail_the_record_retryably(pd: Harness) -> None:
    """A system that stays down fails the record as retryable, with the status as reason."""
    pd.sandbox.faults.fail_next = 10
    (result,) = await pd.adapter.upsert([person(1)])
    assert (result.outcome, result.reason, result.retryable) == ("failed", "503 server_error", True)
    assert pd.client.stats.requests == 4


async def test_limiter_keeps_a_burst_of_upserts_inside_the_window(pd: Harness) -> None:
    """100 upserts on Growth (40/2 s) draw no 429: the client paces itself."""
    results = await pd.adapter.upsert([person(n) for n in range(100)])
    assert all(r.outcome == "created" for r in results)
    assert pd.sandbox.rejected_429 == 0
    assert pd.sandbox.person_count() == 100
    # One listing and 100 creates at 40 per 2 s cannot take less than 4 s of (virtual) time.
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}") == 1
    assert pd.time.slept >= 4


async def test_searches_keep_to_their_own_limit(pd: Harness) -> None:
    """19 lookups (too few to list everyone) are 19 searches at 10 per 2 s, no 429."""
    results = await pd.adapter.upsert([person(n) for n in range(FIRST_LISTING_AFTER - 1)])
    assert all(r.outcome == "created" for r in results)
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") == FIRST_LISTING_AFTER - 1
    assert pd.sandbox.rejected_429 == 0
    assert pd.time.slept >= 2


async def test_without_the_limiter_429s_happen_and_are_waited_out(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """Unpaced, the same burst draws 429s; x-ratelimit-reset is waited out and all land."""
    harness = make_harness(sandbox, time, wall, paced=False, attempts=8)
    async with harness.client:
        results = await harness.adapter.upsert([person(n) for n in range(100)])
    assert all(r.outcome == "created" for r in results)
    assert sandbox.rejected_429 > 0
    assert harness.client.stats.rate_limited == sandbox.rejected_429
    assert sandbox.blocked_403 == 0
    assert sandbox.person_count() == 100


async def test_sandbox_burst_limit_headers_and_429(time: VirtualTime) -> None:
    """Every response carries x-ratelimit-*; past the window a 429 whose reset wait_hint reads."""
    sandbox = PipedriveSandbox(rate_limit=RateLimit(3, 2), clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        answers = [await client.get("/persons") for _ in range(3)]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
        assert all(a.headers["x-ratelimit-limit"] == "3" for a in answers)
        limited = await client.get("/persons")
        assert limited.status_code == 429
        assert limited.json()["success"] is False
        assert limited.headers["x-ratelimit-reset"] == "2"
        assert wait_hint(limited) == 2.0
        assert sandbox.rejected_429 == 1
        time.now += 2
        assert (await client.get("/persons")).status_code == 200


async def test_search_limit_is_separate(time: VirtualTime) -> None:
    """Search has its own 10 per 2 s window; plain calls still pass when search is spent."""
    sandbox = PipedriveSandbox(clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        params = {"term": "a@b.nl", "fields": "email", "exact_match": "true"}
        statuses = [(await client.get("/persons/search", params=params)).status_code]
        statuses += [
            (await client.get("/persons/search", params=params)).status_code for _ in range(10)
        ]
        assert statuses == [200] * 10 + [429]
        assert (await client.get("/persons")).headers["x-ratelimit-remaining"] == "39"


async def test_the_sandbox_s_search_lags_behind_writes_and_the_lists_do_not(
    sandbox: PipedriveSandbox, raw: httpx.AsyncClient, wall: WallClock
) -> None:
    """With ``search_lag``, a person created or changed within that many seconds is not
    found by a search (Pipedrive's index trails its writes), while the list shows them at
    once; once the lag has passed, the search finds them."""
    params = {"term": "laat@voorbeeld.nl", "fields": "email", "exact_match": "true"}

    async def searched() -> list[int]:
        body = (await raw.get("/persons/search", params=params)).json()
        return [hit["item"]["id"] for hit in body["data"]["items"]]

    async def listed() -> list[int]:
        return [p["id"] for p in (await raw.get("/persons")).json()["data"]]

    sandbox.search_lag = 5
    made = int(sandbox.add_person("laat@voorbeeld.nl", "Laat"))
    assert (await searched(), await listed()) == ([], [made])
    wall.now += 4
    assert await searched() == []
    wall.now += 1
    assert await searched() == [made]
    patched = await raw.patch(f"/persons/{made}", json={"name": "Later"})
    assert patched.status_code == 200
    assert (await searched(), await listed()) == ([], [made])  # changed: out of the index
    wall.now += 5
    assert await searched() == [made]
    sandbox.search_lag = 0  # the default: found at once
    sandbox.add_person("laat@voorbeeld.nl", "Nog een")
    assert len(await searched()) == 2


async def test_the_sandbox_dates_its_answers_by_its_wall_clock_when_asked(
    time: VirtualTime, wall: WallClock
) -> None:
    """``send_date``: every answer carries a ``Date`` of the clock ``update_time`` is in, an
    injected 5xx too; by default none does."""
    for send_date in (False, True):
        sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, send_date=send_date)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app()),
            base_url=BASE_URL,
            headers={"x-api-token": TOKEN},
        ) as client:
            listed = await client.get("/persons")
            sandbox.faults.fail_next = 1
            failed = await client.get("/persons")
        dates = [r.headers.get("date") for r in (listed, failed)]
        assert failed.status_code == 503
        assert dates == ([formatdate(wall.now, usegmt=True)] * 2 if send_date else [None] * 2)


async def test_the_sandbox_s_search_takes_up_to_500_hits_a_page_as_pipedrive_does(
    sandbox: PipedriveSandbox, raw: httpx.AsyncClient
) -> None:
    """v2 ``searchPersons``: "If not provided, 100 items will be returned. Please note that
    a maximum value of 500 is allowed." The sandbox refused any limit above 100 with a 400,
    so a client asking for the documented 500 failed against it and not against Pipedrive."""
    for n in range(150):
        sandbox.add_person("shared@example.com", "Dup", f"N{n}")
    params = {"term": "shared@example.com", "fields": "email", "exact_match": "true"}
    page = await raw.get("/persons/search", params={**params, "limit": 500})
    assert page.status_code == 200
    assert len(page.json()["data"]["items"]) == 150
    assert page.json()["additional_data"]["next_cursor"] is None
    default = await raw.get("/persons/search", params=params)
    assert len(default.json()["data"]["items"]) == 100
    assert (await raw.get("/persons/search", params={**params, "limit": 501})).status_code == 400


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-reset": "2"}, 2.0),
        ({"x-ratelimit-reset": "1", "x-daily-requests-left": "0"}, DAILY_WAIT_SECONDS),
        ({"x-ratelimit-reset": "1", "x-daily-requests-left": "5000"}, 1.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"}, 2.0),
        ({"x-ratelimit-remaining": "39", "x-ratelimit-reset": "0"}, DAILY_WAIT_SECONDS),
        ({"retry-after": "7"}, 7.0),
        (
            {
                "date": "Fri, 01 Mar 2024 12:00:00 GMT",
                "retry-after": "Fri, 01 Mar 2024 12:00:30 GMT",
            },
            30.0,
        ),
        ({"x-ratelimit-reset": "soon"}, None),
        ({}, None),
    ],
)
def test_wait_hint_reads_reset_and_daily_budget(
    headers: dict[str, str], expected: float | None
) -> None:
    """wait_hint follows x-ratelimit-reset, waits long when the daily budget is spent, and
    survives junk."""
    response = httpx.Response(429, content=b"<html>busy</html>", headers=headers)
    assert wait_hint(response) == expected


async def test_a_ratelimit_reset_of_0_still_spreads_the_retries_by_the_backoff() -> None:
    """``x-ratelimit-reset`` is whole seconds until the 2 s window frees, so a full window
    often says 0 (the sandbox's injected 429 too). Taken as the whole wait, every retry of a
    call went out in the same instant: six 429s in a burst, which is what earns Cloudflare's
    403 block. A wait of 0 waits the policy's backoff."""
    time = VirtualTime()
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.now)
        return httpx.Response(
            429,
            headers={"x-ratelimit-reset": "0", "x-ratelimit-remaining": "0"},
            json={"success": False},
        )

    client = SystemClient(
        "crm",
        "https://crm.test",
        wait_hint=wait_hint,
        limits={"default": RateLimit(40, 2)},
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        with pytest.raises(RetryableError):
            await client.request("GET", "/persons/1")
    assert len(calls) == 6
    gaps = [later - earlier for earlier, later in pairwise(calls)]
    assert all(gap >= 0.25 for gap in gaps), f"retries sent without backoff: {calls}"


async def test_a_spent_daily_budget_stops_the_calls_before_cloudflare_blocks_them(
    time: VirtualTime, wall: WallClock
) -> None:
    """Once a 429 says the daily budget is spent, every call is a 429 until midnight, and a
    client that keeps calling gets Cloudflare's 403 page. One call finds out; the batch's
    other records are not sent (they stay queued, retryable), and after the pause one call
    looks again."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, daily_budget=0)
    harness = make_harness(sandbox, time, wall)
    try:
        results = await harness.adapter.upsert([person(n) for n in range(10)])
        assert all(r.outcome == "failed" and r.retryable for r in results)
        assert (sandbox.rejected_429, sandbox.blocked_403) == (1, 0)
        time.now += DAILY_WAIT_SECONDS
        (again,) = await harness.adapter.upsert([person(1)])
        assert again.retryable and (sandbox.rejected_429, sandbox.blocked_403) == (2, 0)
    finally:
        await harness.client.aclose()


async def test_a_cloudflare_block_holds_every_call_back_instead_of_knocking_again(
    time: VirtualTime, wall: WallClock
) -> None:
    """Cloudflare's 403 page is what a token that kept sending after 429s gets: each call
    sent into it (a batch of ten made forty, each record's calls retried) prolongs it. One
    call meets it; the batch's records are not sent (they stay queued, retryable), and after
    the pause one call looks again."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, block_after=0)
    harness = make_harness(sandbox, time, wall)
    try:
        results = await harness.adapter.upsert([person(n) for n in range(10)])
        assert all(r.outcome == "failed" and r.retryable for r in results)
        assert sandbox.blocked_403 == 1
        time.now += BLOCKED_WAIT_SECONDS
        (again,) = await harness.adapter.upsert([person(1)])
        assert again.retryable and sandbox.blocked_403 == 2
    finally:
        await harness.client.aclose()


async def test_a_spent_daily_budget_is_a_429_whose_burst_window_has_room(
    time: VirtualTime,
) -> None:
    """Pipedrive documents no header of the token budget: once it is spent every call is a
    429, and the burst headers, on every answer, still show room in the 2 s window. The
    sandbox said so in ``x-daily-requests-left``, which Pipedrive defines as the POST/PUT
    requests left today, so the adapter learned to wait on a header real Pipedrive never
    sets for the budget, and read the real budget's 429 as a burst one, retried in seconds."""
    sandbox = PipedriveSandbox(daily_budget=2 * TOKEN_COST["list"], clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        assert [(await client.get("/persons")).status_code for _ in range(2)] == [200, 200]
        spent = await client.get("/persons")
    assert spent.status_code == 429
    assert int(spent.headers["x-ratelimit-remaining"]) > 0
    assert spent.headers["x-daily-requests-left"] == str(DAILY_WRITES)
    assert wait_hint(spent) == DAILY_WAIT_SECONDS
    assert budget_spent(spent) == DAILY_WAIT_SECONDS


async def test_a_burst_429_is_no_spent_budget(time: VirtualTime) -> None:
    """A 429 of the 2 s window itself says no room left, and is retried after its reset,
    not held back as a spent budget; an injected 429 reads the same."""
    sandbox = PipedriveSandbox(rate_limit=RateLimit(2, 2), clock=time.clock)
    sandbox.faults.fail_next, sandbox.faults.fail_status = 1, 429
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        injected = await client.get("/persons/1")
        statuses = [(await client.get("/persons")).status_code for _ in range(3)]
        refused = await client.get("/persons")
    assert injected.status_code == 429 and injected.headers["x-ratelimit-remaining"] == "0"
    assert budget_spent(injected) is None
    assert statuses[-1] == 429 and refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert budget_spent(refused) is None


async def test_x_daily_requests_left_counts_the_day_s_writes_as_pipedrive_defines_it(
    time: VirtualTime, wall: WallClock
) -> None:
    """``x-daily-requests-left``: "how many requests you can still make to POST/PUT
    endpoints during the ongoing day (calculated in UTC)". The sandbox counted its token
    budget down in it, reads included, so a client could not tell a spent budget apart
    the way it must against Pipedrive."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, daily_budget=100_000)
    person_id = sandbox.add_person("x@example.nl", "X", "Y")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as raw:
        read = await raw.get(f"/persons/{person_id}")
        listed = await raw.get("/persons")
        patched = await raw.patch(f"/persons/{person_id}", json={"name": "X Z"})
        created = await raw.post("/persons", json={"name": "Nieuw"})
        wall.now += DAY + 60  # past the next midnight UTC
        next_day = await raw.get("/persons")
    left = [r.headers["x-daily-requests-left"] for r in (read, listed, patched, created)]
    assert left == [str(DAILY_WRITES)] * 2 + [str(DAILY_WRITES - 1), str(DAILY_WRITES - 2)]
    assert next_day.headers["x-daily-requests-left"] == str(DAILY_WRITES)


async def test_the_sandbox_s_daily_budget_comes_back_after_midnight(
    time: VirtualTime, wall: WallClock
) -> None:
    """The daily budget "resets at midnight in the server's time zone" (vendor-apis.md E'):
    the sandbox's, once spent, never came back, so a client's wait-and-look-again after a
    spent budget could never be seen to recover against it."""
    sandbox = PipedriveSandbox(
        clock=time.clock,
        wall_clock=wall,
        daily_budget=2 * TOKEN_COST["list"],
        rate_limit=None,
        search_rate_limit=None,
        block_after=None,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as raw:
        assert [(await raw.get("/persons")).status_code for _ in range(3)] == [200, 200, 429]
        wall.now += DAY + 60  # past the next midnight, whatever the time of day
        again = await raw.get("/persons")
    assert again.status_code == 200
    assert sandbox.daily_left == TOKEN_COST["list"]


async def test_the_sandbox_s_daily_budget_charges_a_search_more_than_a_single_read(
    time: VirtualTime, wall: WallClock
) -> None:
    """The daily budget is in tokens, charged by endpoint ("get single 2, list 20, update
    10, delete 6, ... search 40"; v2 cheaper). Every call counted one, so the saving of
    listing instead of searching (directory.py) could not be seen against the sandbox."""
    sandbox = PipedriveSandbox(
        clock=time.clock,
        wall_clock=wall,
        daily_budget=10_000,
        rate_limit=None,
        search_rate_limit=None,
        block_after=None,
    )
    person_id = sandbox.add_person("x@example.nl", "X", "Y")
    params = {"term": "x@example.nl", "fields": "email", "exact_match": "true"}
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/persons/{person_id}", None),
        ("PATCH", f"/persons/{person_id}", {"name": "X Z"}),
        ("GET", "/persons", None),
        ("GET", "/persons/search", None),
    ]
    costs: list[int] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as raw:
        for method, path, body in calls:
            before = sandbox.daily_left or 0
            query = params if path.endswith("/search") else None
            response = await raw.request(method, path, params=query, json=body)
            assert response.status_code == 200
            costs.append(before - (sandbox.daily_left or 0))
    read, write, listing, search = costs
    assert 0 < read < write < listing < search, costs


async def test_hammering_through_429s_gets_the_cloudflare_page(time: VirtualTime) -> None:
    """A client ignoring 429s gets a 403 HTML page, which is_cloudflare_block recognises."""
    sandbox = PipedriveSandbox(rate_limit=RateLimit(1, 2), block_after=3, clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        statuses = [(await client.get("/persons")).status_code for _ in range(4)]
        blocked = await client.get("/persons")
    assert statuses == [200, 429, 429, 429]
    assert blocked.status_code == 403
    assert is_cloudflare_block(blocked)
    assert sandbox.blocked_403 == 1
    own_403 = httpx.Response(403, json={"success": False, "error": "forbidden"})
    assert not is_cloudflare_block(own_403)


async def test_the_sandbox_s_cloudflare_block_lifts_once_the_client_stays_away(
    time: VirtualTime,
) -> None:
    """Cloudflare blocks a client that kept sending through 429s for a while, not for
    good: the sandbox's block never lifted, so a client that stays away after it (for
    ``BLOCKED_WAIT_SECONDS``) and then looks again could never be seen to recover against
    it, and a demo's sandbox answered nothing but the block page until restarted."""
    sandbox = PipedriveSandbox(rate_limit=RateLimit(1, 2), block_after=3, clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app()),
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
    ) as client:
        statuses = [(await client.get("/persons")).status_code for _ in range(5)]
        time.now += 1
        knocked = await client.get("/persons")
        time.now += BLOCKED_WAIT_SECONDS
        looked = await client.get("/persons")
    assert statuses == [200, 429, 429, 429, 403]
    assert is_cloudflare_block(knocked)
    assert looked.status_code == 200
    assert sandbox.blocked_403 == 2


# -- pull -------------------------------------------------------------------------------------


async def test_pull_pages_end_and_the_watermark_moves_forward(pd: Harness) -> None:
    """Pull pages by 500 to a complete end; a later pull reads only what changed since."""
    for n in range(1_200):
        pd.sandbox.add_person(f"p{n}@example.com", f"P{n}")
    pages = [page async for page in pd.adapter.pull(None)]
    # One second holds them all: after the first page it is listed on its own, twice (the
    # second listing finds nobody new), then asked past it, where nobody is.
    assert [len(p.records) for p in pages] == [500, 500, 200, 0]
    assert [p.complete for p in pages] == [False, False, False, True]
    assert len({r["id"] for p in pages for r in p.records}) == 1_200
    assert [e.path for e in pd.sandbox.log.entries].count(PERSONS) == 1 + 3 + 3 + 1
    assert pages[0].records[0]["email"] == "p0@example.com"
    first_mark = decode_cursor(pages[-1].cursor).since
    assert first_mark == "2025-06-15T15:06:40Z"

    # Resumed from the first page's cursor, the pull asks again from the newest second read
    # (every person here shares it), not by next_cursor: that second is read again whole.
    asked_before = len(pd.sandbox.log.entries)
    resumed = [page async for page in pd.adapter.pull(pages[0].cursor)]
    assert [len(p.records) for p in resumed] == [500, 500, 200, 0]
    assert "cursor" not in pd.sandbox.log.entries[asked_before].query

    pd.wall.now += 3_600
    changed = pd.sandbox.store.persons[7]
    pd.sandbox.store.update(changed, {"name": "Changed"}, int(pd.wall.now))
    later = [page async for page in pd.adapter.pull(pages[-1].cursor)]
    ids = [r["id"] for p in later for r in p.records]
    # The boundary second is read again (harmless); the changed person comes last.
    assert len(ids) == 1_200 and ids[-1] == 7
    second_mark = decode_cursor(later[-1].cursor).since
    assert second_mark == "2025-06-15T16:06:40Z" and second_mark > first_mark

    pd.wall.now += 60
    quiet = [page async for page in pd.adapter.pull(later[-1].cursor)]
    assert [r["id"] for p in quiet for r in p.records] == [7]
    assert decode_cursor(quiet[-1].cursor).since == second_mark
    assert "updated_since" in pd.sandbox.log.entries[-1].query


async def test_pull_of_an_empty_company_is_one_complete_page(pd: Harness) -> None:
    """No persons: one empty, complete page without a cursor."""
    pages = [page async for page in pd.adapter.pull(None)]
    assert [(len(p.records), p.cursor, p.complete) for p in pages] == [(0, None, True)]


async def test_pull_does_not_read_a_200_html_page_as_the_end_of_the_persons(
    sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """A list page answered 200 with a front end's HTML page has no next cursor, but is no
    last page: the pull fails retryable instead of ending "complete" with nobody read."""
    sandbox.add_person("held@example.com", "Held", "Person")

    def list_is_a_page(scope: dict[str, Any]) -> Decision:
        return "page" if (scope["method"], scope["path"]) == ("GET", PERSONS) else None

    harness = make_harness(sandbox, time, wall, front=lambda app: FrontPage(app, list_is_a_page))
    pages = []
    async with harness.client:
        with pytest.raises(RetryableError):
            async for page in harness.adapter.pull(None):
                pages.append(page)
    assert pages == []


async def test_pull_refuses_a_cursor_it_has_seen() -> None:
    """A server that hands back the same next_cursor is stopped as a paging loop."""

    def always_same(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"success": True, "data": [], "additional_data": {"next_cursor": "abc"}}
        )

    client = SystemClient(
        system="crm",
        base_url=BASE_URL,
        transport=httpx.MockTransport(always_same),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    adapter = PipedriveAdapter(client, make_settings())
    pages = []
    async with client:
        with pytest.raises(FatalRemoteError) as caught:
            async for page in adapter.pull(None):
                pages.append(page)
    assert pages == []  # pages that hold nobody are not handed over
    assert caught.value.detail == "PAGING_LOOP"


def _seed_a_second_apart(sandbox: PipedriveSandbox, wall: WallClock, count: int) -> list[str]:
    """``count`` persons, each updated a second after the one before."""
    ids = []
    for n in range(count):
        wall.now += 1
        ids.append(sandbox.add_person(f"p{n}@example.com", f"P{n}"))
    return ids


async def test_a_person_updated_while_a_pull_pages_by_position_leaves_nobody_unread(
    time: VirtualTime, wall: WallClock
) -> None:
    """Where next_cursor is a position, a person of the first page updated before the second
    is read shifts the first person of the second page back onto the first: that neighbour
    is read by this pull or the next all the same, not passed by the watermark for good."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=True)
    ids = _seed_a_second_apart(sandbox, wall, 600)
    neighbour = int(ids[500])  # the first of the second page
    harness = make_harness(sandbox, time, wall)
    read: list[int] = []
    async with harness.client:
        pages = harness.adapter.pull(None)
        first = await anext(pages)
        read += [r["id"] for r in first.records]
        assert neighbour not in read and int(ids[3]) in read
        wall.now += 60
        sandbox.store.update(sandbox.store.persons[int(ids[3])], {"name": "Moved"}, int(wall.now))
        rest = [page async for page in pages]
        read += [r["id"] for p in rest for r in p.records]
        next_run = [page async for page in harness.adapter.pull(rest[-1].cursor)]
        read += [r["id"] for p in next_run for r in p.records]
    assert neighbour in read
    assert set(read) == {int(i) for i in ids}


@pytest.mark.parametrize("stored_by", ["an earlier version", "this one"])
async def test_a_pull_resumed_inside_a_listing_by_position_leaves_nobody_unread(
    time: VirtualTime, wall: WallClock, stored_by: str
) -> None:
    """A pull stopped after a page and resumed from its cursor asks from the newest second
    read, not by the stored next_cursor: were that a position, a person of the pages read
    updated meanwhile shifted the next page's first person onto them, passed over for good.
    The cursor an earlier version stored mid-pull (next_cursor alone) is taken up the same."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=True)
    if stored_by == "an earlier version":
        ids = _seed_a_second_apart(sandbox, wall, 600)
        high = rfc3339(sandbox.store.persons[int(ids[499])].update_time)
        cursor = json.dumps({"page": encode_position([500]), "high": high})
    else:
        # 100 a second apart, then 700 in one second: the first page ends with 400 of that
        # second, more than half, so the pull follows next_cursor from it.
        ids = _seed_a_second_apart(sandbox, wall, 100)
        wall.now += 1
        ids += [sandbox.add_person(f"mass{n}@example.com", f"M{n}") for n in range(700)]
        harness = make_harness(sandbox, time, wall)
        async with harness.client:
            pages = harness.adapter.pull(None)
            first = await anext(pages)
            await pages.aclose()
        assert first.cursor is not None
        assert decode_cursor(first.cursor).since == rfc3339(
            sandbox.store.persons[int(ids[-1])].update_time
        )
        cursor = first.cursor
    neighbour = int(ids[500])  # the first of the second page
    wall.now += 60
    sandbox.store.update(sandbox.store.persons[int(ids[3])], {"name": "Moved"}, int(wall.now))
    harness = make_harness(sandbox, time, wall)
    async with harness.client:
        rest = [page async for page in harness.adapter.pull(cursor)]
        next_run = [page async for page in harness.adapter.pull(rest[-1].cursor)]
    read = {r["id"] for p in [*rest, *next_run] for r in p.records}
    assert neighbour in read
    assert read >= {int(i) for i in ids[500:]}


def _seed_a_crowded_second(sandbox: PipedriveSandbox, wall: WallClock, count: int) -> list[str]:
    """100 persons a second apart, then ``count`` in the one second after: more than half a
    page there, so the pull walks that second page by page rather than by time."""
    ids = _seed_a_second_apart(sandbox, wall, 100)
    wall.now += 1
    return ids + [sandbox.add_person(f"mass{n}@example.com", f"M{n}") for n in range(count)]


async def test_a_person_changed_while_a_pull_walks_a_crowded_second_leaves_nobody_unread(
    time: VirtualTime, wall: WallClock
) -> None:
    """Where next_cursor is a position, a person of a second holding more than half a page,
    read and then changed while the pull pages through that second, shifts the person after
    the page read back onto it: the pull lists that second again and reads them, and its
    watermark moves past the second only then."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=True)
    ids = _seed_a_crowded_second(sandbox, wall, 1_200)
    harness = make_harness(sandbox, time, wall)
    read: list[int] = []
    async with harness.client:
        pages = harness.adapter.pull(None)
        # Two pages in, the pull is paging through the crowded second by next_cursor.
        for _ in range(2):
            read += [r["id"] for r in (await anext(pages)).records]
        assert int(ids[100]) in read and int(ids[-1]) not in read
        wall.now += 60
        sandbox.store.update(sandbox.store.persons[int(ids[100])], {"name": "Moved"}, int(wall.now))
        rest = [page async for page in pages]
        read += [r["id"] for p in rest for r in p.records]
    assert {int(i) for i in ids} - set(read) == set()
    assert read.count(int(ids[100])) == 2  # read, then read changed
    assert len(read) == len(ids) + 1
    assert decode_cursor(rest[-1].cursor).since == rfc3339(int(wall.now))


async def test_a_crowded_second_changing_all_through_a_pull_is_left_to_the_next_run(
    time: VirtualTime, wall: WallClock
) -> None:
    """A second holding more than half a page, one of whose persons changes before every
    listing: its listings again are bounded, so the pull ends, with its cursor at that
    second, not past it; the next run, quiet, reads every person of it the pull left unread."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=True)
    ids = _seed_a_crowded_second(sandbox, wall, 700)
    mass_second = rfc3339(sandbox.store.persons[int(ids[100])].update_time)
    churning = True

    def change_one(app: Any) -> Any:
        async def front(scope: Any, receive: Any, send: Any) -> None:
            if churning and scope["type"] == "http" and scope["path"] == PERSONS:
                still = [
                    p for p in sandbox.store.persons.values() if p.update_time == int(wall.now)
                ]
                wall.now += 1
                sandbox.store.update(min(still, key=lambda p: p.id), {"name": "M"}, int(wall.now))
                wall.now -= 1
            await app(scope, receive, send)

        return front

    harness = make_harness(sandbox, time, wall, front=change_one)
    async with harness.client:
        pages = [page async for page in harness.adapter.pull(None)]
        listed = sum(1 for e in sandbox.log.entries if e.path == PERSONS)
        assert pages[-1].complete and pages[-1].cursor is not None
        assert decode_cursor(pages[-1].cursor).since == mass_second
        assert listed == 1 + 4 * 2 + 1  # the first page, 4 passes of 2 pages, the rest
        churning = False
        next_run = [page async for page in harness.adapter.pull(pages[-1].cursor)]
    read = {r["id"] for p in [*pages, *next_run] for r in p.records}
    assert {int(i) for i in ids} - read == set()


async def test_a_person_changed_in_a_crowded_second_still_under_way_is_read_by_the_next_run(
    time: VirtualTime, wall: WallClock
) -> None:
    """A mass change still under way: the second read on its own is the one Pipedrive is in
    (its ``Date``). Someone changed in it after the listings that agreed is in neither, and
    the pull read on past it (a change the second after): the cursor stayed at that second,
    and the next run, the second over, reads them."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=True)
    ids = _seed_a_crowded_second(sandbox, wall, 700)
    mass = int(wall.now)
    after_it = rfc3339(mass + 1)
    late = sandbox.store.persons[int(ids[0])]
    changed = False

    def dated(app: Any) -> Any:
        async def front(scope: Any, receive: Any, send: Any) -> None:
            nonlocal changed
            query = scope.get("query_string", b"").decode()
            if (
                not changed
                and scope["type"] == "http"
                and scope["path"] == PERSONS
                and "updated_until" not in query
                and httpx.QueryParams(query).get("updated_since") == after_it
            ):
                changed = True  # in the mass second still, then someone the second after
                sandbox.store.update(late, {"name": "Late"}, mass)
                wall.now = mass + 1
                sandbox.store.update(sandbox.store.persons[int(ids[1])], {"name": "N"}, mass + 1)

            async def dated_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    date = formatdate(wall.now, usegmt=True).encode()
                    message = {**message, "headers": [*message["headers"], (b"date", date)]}
                await send(message)

            await app(scope, receive, dated_send)

        return front

    harness = make_harness(sandbox, time, wall, front=dated)
    async with harness.client:
        pages = [page async for page in harness.adapter.pull(None)]
        assert changed
        wall.now += 60
        next_run = [page async for page in harness.adapter.pull(pages[-1].cursor)]
    names = [r.get("name") for p in [*pages, *next_run] for r in p.records if r["id"] == late.id]
    assert "Late" in names


async def test_a_pull_by_update_time_reads_each_person_once(pd: Harness) -> None:
    """Each page after the first is asked for from the newest second read, that second
    included: the persons of it read already are passed over, not handed over twice."""
    _seed_a_second_apart(pd.sandbox, pd.wall, 1_100)
    pages = [page async for page in pd.adapter.pull(None)]
    ids = [r["id"] for p in pages for r in p.records]
    assert [len(p.records) for p in pages] == [500, 499, 101]
    assert len(ids) == len(set(ids)) == 1_100
    asked = [e.query for e in pd.sandbox.log.entries if e.path == PERSONS]
    assert ["updated_since" in q for q in asked] == [False, True, True]
    assert not any("cursor" in q for q in asked)


async def test_the_sandbox_s_offset_cursors_shift_a_person_onto_the_page_read(
    time: VirtualTime, wall: WallClock
) -> None:
    """offset_cursors makes next_cursor a position: a person of the first page updated
    before the second is asked for moves the second page's first person onto the first;
    by default (keyset) the second page starts after the last person read wherever they are."""
    for offset_cursors, skipped in ((True, True), (False, False)):
        sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, offset_cursors=offset_cursors)
        ids = _seed_a_second_apart(sandbox, wall, 4)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app()),
            base_url=BASE_URL,
            headers={"x-api-token": TOKEN},
        ) as client:
            params = {"limit": 2, "sort_by": "update_time", "sort_direction": "asc"}
            first = (await client.get("/persons", params=params)).json()
            wall.now += 60
            sandbox.store.update(sandbox.store.persons[int(ids[0])], {"name": "M"}, int(wall.now))
            cursor = first["additional_data"]["next_cursor"]
            second = (await client.get("/persons", params={**params, "cursor": cursor})).json()
        assert [p["id"] for p in first["data"]] == [int(ids[0]), int(ids[1])]
        expected = [int(ids[3]), int(ids[0])] if skipped else [int(ids[2]), int(ids[3])]
        assert [p["id"] for p in second["data"]] == expected


async def test_a_search_that_pages_in_a_loop_is_no_answer_that_nobody_is_left() -> None:
    """The search's paging stopped at a cursor seen before and returned what it had read:
    an erasure's check could conclude from a partial answer that nobody was left."""

    def always_same(request: httpx.Request) -> httpx.Response:
        body = {"success": True, "data": {"items": []}, "additional_data": {"next_cursor": "c"}}
        return httpx.Response(200, json=body)

    client = SystemClient(
        system="deals",
        base_url=BASE_URL,
        transport=httpx.MockTransport(always_same),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    adapter = PipedriveAdapter(client, make_settings())
    async with client:
        with pytest.raises(FatalRemoteError) as caught:
            await adapter.find(Subject(email="an@example.com"))
    assert caught.value.detail == "PAGING_LOOP"


async def test_sandbox_refuses_a_page_over_500(raw: httpx.AsyncClient) -> None:
    """limit=501 is a 400, as Pipedrive allows at most 500 a page."""
    response = await raw.get("/persons", params={"limit": 501})
    assert response.status_code == 400
    assert response.json()["success"] is False


# -- find and erase ---------------------------------------------------------------------------


async def test_find_by_id_and_by_email(pd: Harness) -> None:
    """find returns the live persons for a subject by id and by exact e-mail, in full."""
    first = pd.sandbox.add_person("find@example.com", "Fay", "Found", "+31612345678")
    second = pd.sandbox.add_person("find@example.com", "Fay", "Twice")
    pd.sandbox.add_person("find@example.co", "Not", "Me")
    found = await pd.adapter.find(Subject(email="find@example.com"))
    assert [str(p["id"]) for p in found] == [first, second]
    assert found[0]["phone"] == "+31612345678" and found[0]["email"] == "find@example.com"
    by_id = await pd.adapter.find(Subject(email="moved@example.com", external_id=first))
    assert [str(p["id"]) for p in by_id] == [first]
    assert await pd.adapter.find(Subject(email="nobody@example.com", external_id="9999")) == []
    assert "find@example.com" not in repr(pd.sandbox.log.entries)


async def test_a_targeted_sync_reads_the_person_alone_not_what_is_kept_beside_them(
    pd: Harness,
) -> None:
    """A targeted sync from Pipedrive (a webhook, ``resync --email``) read its persons with
    ``find``, the access lookup, which also reads the notes staff wrote about each, their
    deals, activities and label names: personal data no flow sends, read for nothing. It
    reads the persons alone, as a pull lists them (``find_people``)."""
    vip = pd.sandbox.add_label("VIP")
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen", label_ids=[vip])
    pd.sandbox.add_note(jan, "Wil alleen 's ochtends gebeld worden")
    pd.sandbox.add_deal(jan, "Nieuwe keuken")
    pd.sandbox.add_activity(jan, "Terugbellen over offerte")
    (pulled,) = [r for page in [p async for p in pd.adapter.pull(None)] for r in page.records]
    source = System(
        name="crm",
        settings=pd.adapter.settings,
        spec=SPEC,
        adapter=pd.adapter,
        client=pd.client,
        mapping=load_mapping(Path("mappings/pipedrive.toml")),
        limits=pd.adapter.limits,
    )
    pd.sandbox.endpoints_used.clear()
    by_id = await source_people(source, Subject(email="", external_id=jan))
    by_email = await source_people(source, Subject(email="jan@example.nl"))
    assert by_id == by_email == [pulled]
    beside = ("/notes", "/deals", "/activities", "/personFields", "/leads", "/leads/archived")
    read = pd.sandbox.endpoints_used
    assert read and not [e for e in read if e.endswith(beside)], read


def mock_adapter(answer: Callable[[httpx.Request], httpx.Response]) -> PipedriveAdapter:
    """The adapter on a client whose every call ``answer`` answers (one attempt each)."""
    client = SystemClient(
        system="deals",
        base_url=BASE_URL,
        headers={"x-api-token": TOKEN},
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    return PipedriveAdapter(client, make_settings())


def found_jan(request: httpx.Request, **person: Any) -> httpx.Response | None:
    """Pipedrive's answer to a search for jan@example.nl and a read of his person (id 7)."""
    path = request.url.path
    if path.endswith("/persons/search"):
        items = [{"result_score": 1.0, "item": {"id": 7, "emails": ["jan@example.nl"]}}]
        body = {"success": True, "data": {"items": items}, "additional_data": {}}
        return httpx.Response(200, json=body)
    if path.endswith("/persons/7"):
        emails = [{"value": "jan@example.nl", "primary": True, "label": "work"}]
        data = {"id": 7, "name": "Jan Jansen", "emails": emails, "phones": [], **person}
        return httpx.Response(200, json={"success": True, "data": data})
    return None


def not_found() -> httpx.Response:
    body = {"success": False, "error": "not found", "data": None, "additional_data": None}
    return httpx.Response(404, json=body)


def empty_list() -> httpx.Response:
    """Pipedrive's answer to a list (notes, deals, leads, activities) holding nothing."""
    empty = {"pagination": {"more_items_in_collection": False}, "next_cursor": None}
    return httpx.Response(200, json={"success": True, "data": [], "additional_data": empty})


async def test_the_access_copy_holds_the_notes_staff_wrote_about_the_person() -> None:
    """README: records come with the notes staff wrote about the person. Pipedrive keeps
    notes on a person (API v1 ``GET /notes?person_id=``, beside the v2 root), typically the
    most personal text it holds; the copy read only the person record."""
    note = "Belde boos over retour; zegt dat hij ziek thuis zit"
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/api/v1/notes" and request.url.params["person_id"] == "7":
            data = [{"id": 1, "person_id": 7, "content": note}]
            pagination = {"start": 0, "limit": 500, "more_items_in_collection": False}
            body = {"success": True, "data": data, "additional_data": {"pagination": pagination}}
            return httpx.Response(200, json=body)
        return found_jan(request, notes_count=1) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl"))
    assert [n["content"] for n in found["notes"]] == [note], calls
    assert "notesNotRead" not in found


async def test_the_access_copy_names_the_labels_pipedrive_put_on_the_person() -> None:
    """v2 ``GET /persons/{id}`` gives ``label_ids`` only: the copy held bare numbers the
    person cannot read. The names come from the options of the person field ``label_ids``
    (``GET /personFields``), read once; the ids stay."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/personFields"):
            options = [{"id": 5, "label": "Wanbetaler"}, {"id": 6, "label": "VIP"}]
            fields = [{"field_code": "label_ids", "field_name": "Labels", "options": options}]
            body = {"success": True, "data": fields, "additional_data": {"next_cursor": None}}
            return httpx.Response(200, json=body)
        return found_jan(request, label_ids=[5]) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl", external_id="7"))
    assert (found["label_ids"], found["labels"]) == ([5], [{"id": 5, "label": "Wanbetaler"}])
    assert calls.count("GET /api/v2/personFields") == 1


async def test_the_access_copy_holds_the_notes_deals_activities_and_labels_of_the_person(
    pd: Harness,
) -> None:
    """Against the sandbox: each person found comes with what Pipedrive keeps beside them,
    and nothing of someone else's."""
    vip = pd.sandbox.add_label("VIP")
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen", label_ids=[vip])
    other = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    pd.sandbox.add_note(jan, "Wil alleen 's ochtends gebeld worden")
    pd.sandbox.add_note(other, "Niet van Jan")
    pd.sandbox.add_deal(jan, "Nieuwe keuken")
    pd.sandbox.add_activity(jan, "Terugbellen over offerte")
    pd.sandbox.add_activity(other, "Niet van Jan")
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    assert [n["content"] for n in found["notes"]] == ["Wil alleen 's ochtends gebeld worden"]
    assert [d["title"] for d in found["deals"]] == ["Nieuwe keuken"]
    assert [a["subject"] for a in found["activities"]] == ["Terugbellen over offerte"]
    assert found["labels"] == [{"id": vip, "label": "VIP"}]
    assert "Niet van Jan" not in json.dumps(found)


async def test_the_access_copy_holds_no_staff_member_s_or_other_attendee_s_address_or_name(
    pd: Harness,
) -> None:
    """Pipedrive names a note's author (``user``: a staff member's e-mail and name) and an
    activity's attendees (each with their e-mail and name: the customer's partner invited to
    the same meeting, the salesperson organising it). The copy is the customer's data: it
    keeps the note's text and the activity, and their own attendance, not the others'."""
    from adapters.pipedrive.sandbox import STAFF_USER

    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_person("els@example.nl", "Els", "Jansen-Bos")
    pd.sandbox.add_note(jan, "Wil alleen 's ochtends gebeld worden")
    pd.sandbox.add_activity(jan, "Keukenontwerp bespreken", attendees=["els@example.nl"])
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    (note,) = found["notes"]
    (activity,) = found["activities"]
    assert note["content"] == "Wil alleen 's ochtends gebeld worden"
    assert activity["subject"] == "Keukenontwerp bespreken"
    assert [a["email"] for a in activity["attendees"]] == ["jan@example.nl"]
    copy = json.dumps(found)
    for other in ("els@example.nl", "Jansen-Bos", STAFF_USER["email"], STAFF_USER["name"]):
        assert other not in copy


async def test_the_access_copy_leaves_out_other_addresses_a_note_or_activity_quotes(
    pd: Harness,
) -> None:
    """Art. 15(4): what staff write can quote someone else's address ("partner
    els@... belde ook"): in a note's text, an activity's subject, notes and public
    description it reads as left out. The person's own addresses (the one asked for and
    another the person holds, in any case) and the words around stay."""
    jan = pd.sandbox.add_person(
        "jan@example.nl",
        "Jan",
        "Jansen",
        emails=[
            {"value": "jan@example.nl", "primary": True, "label": "work"},
            {"value": "jan@thuis.example", "primary": False, "label": "home"},
        ],
    )
    written = "Jan (JAN@Example.nl, Jan@Thuis.example) belde; partner els@bos.example ook."
    kept = f"Jan (JAN@Example.nl, Jan@Thuis.example) belde; partner {LEFT_OUT} ook."
    pd.sandbox.add_note(jan, f"<p>{written}</p>")
    pd.sandbox.add_activity(jan, written, note=written, public_description=written)
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    (note,) = found["notes"]
    (activity,) = found["activities"]
    assert "bos.example" not in json.dumps(found)
    assert note["content"] == f"<p>{kept}</p>"
    assert activity["subject"] == activity["note"] == activity["public_description"] == kept
    assert [e["value"] for e in found["emails"]] == ["jan@example.nl", "jan@thuis.example"]


async def test_the_access_copy_leaves_out_other_addresses_a_deal_s_title_or_lost_reason_quotes(
    pd: Harness,
) -> None:
    """Art. 15(4): staff name a deal, and say why it was lost, in words of their own
    ("Offerte via els@..."; "koopt bij concurrent, zegt els@..."): an address of someone
    else there reads as left out, as in a note. The person's own address and the words
    around stay."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_deal(
        jan,
        "Keuken Jan@Example.nl, offerte via els@bos.example",
        status="lost",
        lost_reason="Koopt bij de concurrent, zegt els@bos.example",
    )
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    (deal,) = found["deals"]
    assert "bos.example" not in json.dumps(found)
    assert deal["title"] == f"Keuken Jan@Example.nl, offerte via {LEFT_OUT}"
    assert deal["lost_reason"] == f"Koopt bij de concurrent, zegt {LEFT_OUT}"


async def test_an_access_copy_of_more_notes_than_it_reads_says_so(pd: Harness) -> None:
    """The copy is bounded (10 pages of 500 a list); a person with more says how many it
    lists, so a partial list never passes for the whole."""
    from adapters.pipedrive.linked import CUT_REASON, MAX_PAGES, PAGE_SIZE

    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    for n in range(MAX_PAGES * PAGE_SIZE + 1):
        pd.sandbox.add_note(jan, f"notitie {n}")
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    listed = MAX_PAGES * PAGE_SIZE
    assert len(found["notes"]) == listed
    assert found["notesNotRead"] == {"reason": CUT_REASON, "listed": listed}
    assert "dealsNotRead" not in found and found["deals"] == []


async def test_the_access_copy_holds_the_person_s_leads_archived_ones_too(pd: Harness) -> None:
    """Art. 15: a lead (a potential deal in the Leads Inbox) names the person, what they
    asked for and its value; the copy read none. Pipedrive lists a person's leads with API
    v1 ``GET /leads?person_id=``, which since July 2025 leaves archived ones out: those
    come from ``GET /leads/archived``, and the copy holds both. Another person's lead is
    not among them."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    other = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    lead = pd.sandbox.add_lead(jan, "Offerte badkamer", value={"amount": 9000, "currency": "EUR"})
    old = pd.sandbox.add_lead(jan, "Aanvraag vorig jaar", is_archived=True)
    pd.sandbox.add_lead(other, "Niet van Jan")
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    assert [(item["id"], item["title"]) for item in found["leads"]] == [
        (lead, "Offerte badkamer"),
        (old, "Aanvraag vorig jaar"),
    ]
    assert found["leads"][0]["value"] == {"amount": 9000, "currency": "EUR"}
    assert [item["is_archived"] for item in found["leads"]] == [False, True]
    assert "leadsNotRead" not in found and "Niet van Jan" not in json.dumps(found)
    used = pd.sandbox.endpoints_used
    assert used.count("GET /api/v1/leads") == used.count("GET /api/v1/leads/archived") == 1


async def test_the_access_copy_leaves_out_other_addresses_a_lead_s_title_quotes(
    pd: Harness,
) -> None:
    """Art. 15(4): staff name a lead in words of their own ("Badkamer, tip van
    els@..."): an address of someone else there reads as left out, as in a deal's title.
    The person's own address and the words around stay."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_lead(jan, "Badkamer Jan@Example.nl, tip van els@bos.example")
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    (lead,) = found["leads"]
    assert "bos.example" not in json.dumps(found)
    assert lead["title"] == f"Badkamer Jan@Example.nl, tip van {LEFT_OUT}"


async def test_the_access_copy_pages_the_leads_as_pipedrive_s_v1_list_answers() -> None:
    """Against answers by hand: the v1 leads list pages by ``start`` and says
    ``more_items_in_collection`` in ``additional_data`` itself (Pipedrive's SDK model of
    it), with no ``next_start``: the next page starts after the items given. A lead of
    someone else that a list hands back anyway (a filter Pipedrive ignored) is left out."""
    asked: list[tuple[str, str, str]] = []

    def lead(n: int, person_id: int = 7) -> dict[str, Any]:
        return {"id": f"00000000-0000-4000-8000-{n:012d}", "title": f"lead {n}",
                "person_id": person_id, "is_archived": False}  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path in ("/api/v1/leads", "/api/v1/leads/archived"):
            asked.append((path, params["person_id"], params["start"]))
            if path.endswith("/archived"):
                data, more = [], False
            elif params["start"] == "0":
                data, more = [lead(1), lead(2, person_id=8)], True
            else:
                data, more = [lead(3)], False
            paging = {"start": int(params["start"]), "limit": 500, "more_items_in_collection": more}
            return httpx.Response(
                200, json={"success": True, "data": data, "additional_data": paging}
            )
        if path.endswith(("/notes", "/deals", "/activities")):
            return empty_list()
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl"))
    assert [item["title"] for item in found["leads"]] == ["lead 1", "lead 3"]
    assert asked == [
        ("/api/v1/leads", "7", "0"),
        ("/api/v1/leads", "7", "2"),
        ("/api/v1/leads/archived", "7", "0"),
    ]
    assert "leadsNotRead" not in found


async def test_a_lead_archived_between_the_two_lists_is_in_the_copy_once_as_archived() -> None:
    """Against answers by hand: a lead both lists give (archived between the two calls) is
    listed once, as archived, as a deal is; the archived list's word is the later one, even
    where its answer lacks ``is_archived``."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in ("/api/v1/leads", "/api/v1/leads/archived"):
            lead = {"id": "00000000-0000-4000-8000-000000000001", "title": "badkamer",
                    "person_id": 7}  # fmt: skip
            if not path.endswith("/archived"):
                lead["is_archived"] = False
            paging = {"start": 0, "limit": 500, "more_items_in_collection": False}
            return httpx.Response(
                200, json={"success": True, "data": [lead], "additional_data": paging}
            )
        if path.endswith(("/notes", "/deals", "/deals/archived", "/activities")):
            return empty_list()
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl"))
    assert [(item["title"], item["is_archived"]) for item in found["leads"]] == [("badkamer", True)]


async def test_an_access_copy_of_more_leads_than_it_reads_says_so() -> None:
    """Leads are read to the same bound as deals (10 pages of 500 a list); a person with
    more says how many the copy lists (``leadsNotRead``), so a partial list never passes
    for the whole."""
    from adapters.pipedrive.linked import CUT_REASON, MAX_PAGES, PAGE_SIZE

    def answer(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/api/v1/leads":
            start = int(params["start"])
            data = [
                {"id": f"lead-{start + n}", "title": "lead", "person_id": 7}
                for n in range(int(params["limit"]))
            ]
            paging = {"start": start, "limit": PAGE_SIZE, "more_items_in_collection": True}
            return httpx.Response(
                200, json={"success": True, "data": data, "additional_data": paging}
            )
        if path.endswith(("/notes", "/deals", "/activities", "/leads/archived")):
            return empty_list()
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl"))
    listed = MAX_PAGES * PAGE_SIZE
    assert len(found["leads"]) == listed
    assert found["leadsNotRead"] == {"reason": CUT_REASON, "listed": listed}


async def test_sandbox_lists_archived_leads_only_at_leads_archived(
    pd: Harness, raw: httpx.AsyncClient
) -> None:
    """As Pipedrive since July 2025: ``GET /v1/leads`` returns leads not archived (the
    ``archived_status`` it once took is no longer documented, and the sandbox heeds it
    not), ``GET /v1/leads/archived`` the archived ones; both page by ``start``."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_lead(jan, "Open")
    pd.sandbox.add_lead(jan, "Gearchiveerd", is_archived=True)
    root = "https://klant.pipedrive.test/api/v1"
    live = await raw.get(f"{root}/leads", params={"person_id": jan, "archived_status": "all"})
    archived = await raw.get(f"{root}/leads/archived", params={"person_id": jan})
    assert [item["title"] for item in live.json()["data"]] == ["Open"]
    assert [item["title"] for item in archived.json()["data"]] == ["Gearchiveerd"]
    assert live.json()["additional_data"] == {
        "start": 0,
        "limit": 100,
        "more_items_in_collection": False,
    }


async def test_an_access_report_names_a_lead_s_fields_in_plain_words(pd: Harness) -> None:
    """The report reads a lead in the person's words ("Lead 1: titel"), not Pipedrive's
    keys (``leads.0.title``)."""
    from connector.access_labels import SystemLabels

    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_lead(jan, "Offerte badkamer", value={"amount": 9000, "currency": "EUR"})
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    labels = SystemLabels(pd.adapter.copy_labels)
    assert labels.label("nl", found, "leads.0.title") == "Lead 1: titel"
    assert labels.label("en", found, "leads.0.value.amount") == "Lead 1: value"
    assert labels.label("nl", found, "leads.0.is_archived") == "Lead 1: gearchiveerd"
    assert labels.label("en", found, "leads.0.add_time") == "Lead 1: created"


async def test_the_access_copy_holds_the_person_s_deals_archived_ones_too(pd: Harness) -> None:
    """Art. 15: since July 2025 Pipedrive's ``GET /api/v2/deals`` leaves archived deals out,
    and lists them at ``GET /api/v2/deals/archived`` (the same ``person_id`` filter): the
    copy read the first alone, and a deal archived last year named the person unseen. It
    holds both, the archived ones marked so (``is_archived``), as archived leads are; a
    deal archived between the two calls is listed once, another person's not at all."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    other = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    deal = pd.sandbox.add_deal(jan, "Nieuwe keuken")
    old = pd.sandbox.add_deal(jan, "Badkamer 2024", is_archived=True)
    pd.sandbox.add_deal(other, "Niet van Jan", is_archived=True)
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    assert [(item["id"], item["title"]) for item in found["deals"]] == [
        (deal, "Nieuwe keuken"),
        (old, "Badkamer 2024"),
    ]
    assert [item["is_archived"] for item in found["deals"]] == [False, True]
    assert "dealsNotRead" not in found and "Niet van Jan" not in json.dumps(found)
    used = pd.sandbox.endpoints_used
    assert used.count("GET /api/v2/deals") == used.count("GET /api/v2/deals/archived") == 1


async def test_the_access_copy_marks_a_deal_from_the_archived_list_archived() -> None:
    """Against answers by hand: a deal the archived list gives is marked archived in the
    copy even where Pipedrive's answer lacks ``is_archived``; one given by both lists (archived
    between the two calls) is listed once, as archived; one naming someone else (a filter
    Pipedrive ignored) is left out."""
    asked: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path in ("/api/v2/deals", "/api/v2/deals/archived"):
            asked.append((path, params["person_id"]))
            if path.endswith("/archived"):
                data = [{"id": 2, "title": "verhuisd", "person_id": 7},
                        {"id": 3, "title": "van Piet", "person_id": 8}]  # fmt: skip
            else:
                data = [{"id": 1, "title": "open", "person_id": 7, "is_archived": False},
                        {"id": 2, "title": "verhuisd", "person_id": 7}]  # fmt: skip
            body = {"success": True, "data": data, "additional_data": {"next_cursor": None}}
            return httpx.Response(200, json=body)
        if path.endswith(("/notes", "/activities", "/leads", "/leads/archived")):
            return empty_list()
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        (found,) = await adapter.find(Subject(email="jan@example.nl"))
    assert [(d["id"], d["is_archived"]) for d in found["deals"]] == [(1, False), (2, True)]
    assert asked == [("/api/v2/deals", "7"), ("/api/v2/deals/archived", "7")]


async def test_sandbox_lists_archived_deals_only_at_deals_archived(
    pd: Harness, raw: httpx.AsyncClient
) -> None:
    """As Pipedrive since July 2025: ``GET /v2/deals`` returns deals not archived,
    ``GET /v2/deals/archived`` the archived ones, each filtered by ``person_id`` and paged
    by ``cursor``, each deal with ``is_archived`` and ``archive_time``."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_deal(jan, "Open")
    pd.sandbox.add_deal(jan, "Gearchiveerd 1", is_archived=True)
    pd.sandbox.add_deal(jan, "Gearchiveerd 2", is_archived=True)
    live = await raw.get("/deals", params={"person_id": jan})
    first = await raw.get("/deals/archived", params={"person_id": jan, "limit": 1})
    cursor = first.json()["additional_data"]["next_cursor"]
    second = await raw.get("/deals/archived", params={"person_id": jan, "cursor": cursor})
    assert [item["title"] for item in live.json()["data"]] == ["Open"]
    assert [item["title"] for item in first.json()["data"]] == ["Gearchiveerd 1"]
    assert [item["title"] for item in second.json()["data"]] == ["Gearchiveerd 2"]
    assert second.json()["additional_data"]["next_cursor"] is None
    (open_deal,) = live.json()["data"]
    (archived,) = first.json()["data"]
    assert open_deal["is_archived"] is False and open_deal["archive_time"] is None
    assert archived["is_archived"] is True and archived["archive_time"]


async def test_an_access_report_says_a_deal_was_archived_in_plain_words(pd: Harness) -> None:
    """The report reads whether a deal is archived, and since when, in the person's words
    ("Deal 1: gearchiveerd"), as it reads a lead's."""
    from connector.access_labels import SystemLabels

    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_deal(jan, "Badkamer 2024", is_archived=True)
    (found,) = await pd.adapter.find(Subject(email="jan@example.nl"))
    labels = SystemLabels(pd.adapter.copy_labels)
    assert labels.label("nl", found, "deals.0.is_archived") == "Deal 1: gearchiveerd"
    assert labels.label("en", found, "deals.0.is_archived") == "Deal 1: archived"
    assert labels.label("nl", found, "deals.0.archive_time") == "Deal 1: gearchiveerd op"
    assert labels.label("en", found, "deals.0.archive_time") == "Deal 1: archived on"


async def test_a_person_in_the_30_day_bin_is_found_held_and_erased_reversibly(
    time: VirtualTime, wall: WallClock
) -> None:
    """Where ``GET /persons/{id}`` shows a person deleted in Pipedrive (``is_deleted``,
    restorable for 30 days), they are still held: access shows them, marked as in the bin
    and when it is purged, and an erasure reports them found and restorable until then,
    as a deletion it makes itself, not "no person held"."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, show_deleted=True)
    person_id = sandbox.add_person("ann@example.nl", "Ann", "Smit")
    sandbox.store.delete(sandbox.store.persons[int(person_id)], int(wall()))  # in Pipedrive
    harness = make_harness(sandbox, time, wall)
    try:
        subject = Subject(email="ann@example.nl", external_id=person_id)
        found = await harness.adapter.find(subject)
        result = await harness.adapter.erase(subject)
    finally:
        await harness.client.aclose()
    assert [str(r["id"]) for r in found] == [person_id], "access omits the person in the bin"
    assert is_archived(found[0]) and found[0][RETAINED] == IN_THE_BIN
    assert found[0]["purged_after"] == rfc3339(int(wall()) + 30 * DAY)
    assert (result.found, result.mode, result.reversible) == (True, "delete_purged_later", True)
    assert result.note == IN_THE_BIN_NOTE and "purged by the vendor 30 days after" in result.note
    assert not any(e.startswith("DELETE") for e in sandbox.endpoints_used)
    assert sandbox.restorable("ann@example.nl")


async def test_what_an_erasure_leaves_in_the_bin_is_passed_over_by_its_check(
    time: VirtualTime, wall: WallClock
) -> None:
    """Where Pipedrive shows deleted persons, the one an erasure deleted is still found, in
    the bin: marked retained (deleting is all v2 can do, and the receipt says it is purged
    later), so the erasure's check that nothing is left does not raise an alert for it."""
    sandbox = PipedriveSandbox(clock=time.clock, wall_clock=wall, show_deleted=True)
    person_id = sandbox.add_person("bo@example.nl", "Bo", "Smit")
    harness = make_harness(sandbox, time, wall)
    try:
        subject = Subject(email="bo@example.nl", external_id=person_id)
        first = await harness.adapter.erase(subject)
        left = await harness.adapter.find(subject)
        second = await harness.adapter.erase(subject)
    finally:
        await harness.client.aclose()
    assert (first.found, first.vendor_status) == (True, 200)
    assert [str(r["id"]) for r in left] == [person_id]
    assert all(RETAINED in record and is_archived(record) for record in left)
    assert (second.found, second.reversible) == (True, True)
    assert sandbox.endpoints_used.count(f"DELETE {PERSONS}/{{id}}") == 1


async def test_erase_uses_delete_and_says_purged_after_30_days(pd: Harness) -> None:
    """Erasure is DELETE /persons/{id}, reported as purged later and reversible: Pipedrive
    "Marks a person as deleted. After 30 days, the person will be permanently deleted."
    (v2 deletePerson), so the receipt's note promises no purge *within* 30 days."""
    pd.sandbox.add_person("erase.me@example.com", "Erase", "Me", "+31612345678")
    result = await pd.adapter.erase(Subject(email="erase.me@example.com"))
    assert result.found
    assert (result.mode, result.reversible, result.vendor_status) == (
        "delete_purged_later",
        True,
        200,
    )
    assert result.endpoint == ERASURE_ENDPOINT == "DELETE /api/v2/persons/{id}"
    assert result.note == ERASURE_NOTE == "deleted, purged by the vendor after 30 days"
    assert "within" not in result.note
    assert f"DELETE {PERSONS}/{{id}}" in pd.sandbox.endpoints_used
    assert not pd.sandbox.holds("erase.me@example.com")
    assert await pd.adapter.find(Subject(email="erase.me@example.com")) == []
    assert "erase.me@example.com" not in repr(pd.sandbox.log.entries)


async def test_erased_person_is_restorable_for_30_days_then_purged(pd: Harness) -> None:
    """Within 30 days the vendor can restore the person; a purge after 30 days removes it."""
    pd.sandbox.add_person("gone@example.com", "Gone", "Soon")
    await pd.adapter.erase(Subject(email="gone@example.com"))
    assert pd.sandbox.restorable("gone@example.com")
    pd.wall.now += 29 * DAY
    assert pd.sandbox.purge() == 0
    assert pd.sandbox.restorable("gone@example.com")
    pd.wall.now += DAY
    assert pd.sandbox.purge() == 1
    assert not pd.sandbox.restorable("gone@example.com")
    assert not pd.sandbox.restore("gone@example.com")
    assert not pd.sandbox.holds("gone@example.com")


async def test_sandbox_restore_brings_an_erased_person_back(pd: Harness) -> None:
    """Pipedrive's deletion is soft for 30 days: the sandbox can restore it, as the vendor can."""
    pd.sandbox.add_person("back@example.com", "Back", "Again")
    await pd.adapter.erase(Subject(email="back@example.com"))
    assert pd.sandbox.restore("back@example.com")
    assert pd.sandbox.holds("back@example.com")


async def test_erase_twice_reports_not_found_the_second_time(pd: Harness) -> None:
    """Erasure is idempotent: the second call deletes nothing and reports found=False."""
    pd.sandbox.add_person("twice@example.com", "Two", "Times")
    first = await pd.adapter.erase(Subject(email="twice@example.com"))
    pd.sandbox.endpoints_used.clear()
    second = await pd.adapter.erase(Subject(email="twice@example.com"))
    assert (first.found, second.found) == (True, False)
    assert second.mode == "delete_purged_later"
    assert not any(e.startswith("DELETE") for e in pd.sandbox.endpoints_used)


async def test_erase_deletes_every_person_sharing_the_email(pd: Harness) -> None:
    """Pipedrive allows duplicate persons per e-mail; erasure deletes each of them and the id's."""
    pd.sandbox.add_person("dup@example.com", "Dup", "One")
    pd.sandbox.add_person("dup@example.com", "Dup", "Two")
    moved = pd.sandbox.add_person("changed@example.com", "Dup", "Moved")
    result = await pd.adapter.erase(Subject(email="dup@example.com", external_id=moved))
    assert result.found
    assert pd.sandbox.endpoints_used.count(f"DELETE {PERSONS}/{{id}}") == 3
    assert pd.sandbox.person_count() == 0


async def test_an_erasure_deletes_the_notes_about_the_person_and_names_what_it_leaves(
    pd: Harness,
) -> None:
    """Staff notes, deals and activities name the person (``person_id``); the erasure
    deleted the person only, and the receipt said "deleted, purged by the vendor after 30
    days", naming none of what stayed. A note about the person alone is theirs and goes
    (API v1 ``DELETE /notes/{id}``); deals, activities and a note also on a deal are the
    business's records and stay, named on the receipt by kind and count, never content."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    piet = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    deal = pd.sandbox.add_deal(jan, "Jan Jansen - keukenrenovatie")
    pd.sandbox.add_note(jan, "Jan Jansen: wanbetaler, belt boos over factuur")
    on_deal = pd.sandbox.add_note(jan, "Offerte keuken verstuurd", deal_id=deal)
    pd.sandbox.add_activity(jan, "Terugbellen Jan Jansen")
    pd.sandbox.add_note(piet, "Niet van Jan")
    result = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    store = pd.sandbox.store
    assert [n["id"] for n in store.linked_of("notes", int(jan))] == [on_deal]
    assert len(store.linked_of("deals", int(jan))) == 1
    assert len(store.linked_of("activities", int(jan))) == 1
    assert [n["content"] for n in store.linked_of("notes", int(piet))] == ["Niet van Jan"]
    assert result.note == (
        f"{ERASURE_NOTE}; 1 note about the person alone deleted; left in Pipedrive, linked "
        "to the person (the business's records, which klantsync does not delete): 1 deal, "
        "1 activity, 1 note also on a deal, organisation, lead or project"
    )
    assert pd.sandbox.endpoints_used.count("DELETE /api/v1/notes/{id}") == 1
    again = await pd.adapter.erase(Subject(email="jan@example.nl"))
    assert again.note == "no person held for this subject"  # nothing read of who is gone


async def test_an_erasure_counts_the_person_s_leads_it_leaves_archived_ones_too(
    pd: Harness,
) -> None:
    """A lead names the person as a deal does, and their access copy holds it; the erasure
    counted deals, activities and notes and left leads uncounted, so the receipt
    understated what stays. Leads, live (``GET /api/v1/leads``) and archived (``GET
    /api/v1/leads/archived``), are counted as deals are and kept, the business's records
    as deals are. Counts only: no title, no id; another person's lead is not counted."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    piet = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    pd.sandbox.add_deal(jan, "Jan Jansen - keuken")
    leads = [
        pd.sandbox.add_lead(jan, "Offerte dakkapel"),
        pd.sandbox.add_lead(jan, "Aanvraag vorig jaar", is_archived=True),
    ]
    pd.sandbox.add_lead(piet, "Niet van Jan")
    result = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    store = pd.sandbox.store
    assert [lead["id"] for lead in store.linked_of("leads", int(jan))] == leads
    assert result.note == (
        f"{ERASURE_NOTE}; left in Pipedrive, linked to the person (the business's records, "
        "which klantsync does not delete): 1 deal, 2 leads"
    )
    assert "dakkapel" not in result.note and leads[0] not in result.note
    used = pd.sandbox.endpoints_used
    assert used.count("GET /api/v1/leads") == used.count("GET /api/v1/leads/archived") == 1


async def test_an_erasure_says_it_did_not_count_leads_past_what_it_reads() -> None:
    """Leads are counted to the same bound as deals (10 pages of 500 a list): a person with
    more says the rest was not read, rather than passing the count for the whole."""
    from adapters.pipedrive.linked import MAX_PAGES, PAGE_SIZE

    def answer(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/api/v1/leads/archived":
            start = int(params["start"])
            data = [{"id": f"lead-{start + n}", "person_id": 7} for n in range(PAGE_SIZE)]
            paging = {"start": start, "limit": PAGE_SIZE, "more_items_in_collection": True}
            return httpx.Response(
                200, json={"success": True, "data": data, "additional_data": paging}
            )
        if request.method == "GET" and path.endswith(
            ("/notes", "/deals", "/deals/archived", "/activities", "/leads")
        ):
            return empty_list()
        if request.method == "DELETE" and path.endswith("/persons/7"):
            return httpx.Response(200, json={"success": True, "data": {"id": 7}})
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        result = await adapter.erase(Subject(email="jan@example.nl"))
    listed = MAX_PAGES * PAGE_SIZE
    assert f"{listed} leads" in result.note
    assert result.note.endswith(f"; leads beyond the first {listed} not read, left as they are")


async def test_an_erasure_counts_the_person_s_archived_deals_it_leaves(pd: Harness) -> None:
    """Since July 2025 ``GET /api/v2/deals`` leaves archived deals out: the erasure counted
    the open deal alone and the receipt passed over the archived one, which still names
    the person. Deals from ``GET /api/v2/deals/archived`` are counted with the others (and
    kept); another person's archived deal is not counted."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    piet = pd.sandbox.add_person("piet@example.nl", "Piet", "Puk")
    pd.sandbox.add_deal(jan, "Jan Jansen - keuken")
    pd.sandbox.add_deal(jan, "Jan Jansen - badkamer 2024", is_archived=True)
    pd.sandbox.add_deal(piet, "Niet van Jan", is_archived=True)
    result = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    assert len(pd.sandbox.store.linked_of("deals", int(jan))) == 2
    assert result.note == (
        f"{ERASURE_NOTE}; left in Pipedrive, linked to the person (the business's records, "
        "which klantsync does not delete): 2 deals"
    )
    used = pd.sandbox.endpoints_used
    assert used.count("GET /api/v2/deals") == used.count("GET /api/v2/deals/archived") == 1


async def test_an_erasure_refused_the_leads_list_says_leads_not_counted_and_deletes_the_person(
    pd: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An API user whose permission set leaves leads out is answered 403 by ``GET
    /api/v1/leads``: the erasure failed on the count, was retried, never deleted the person,
    and the deadline passed. The person is deleted, the note says leads were not counted
    rather than passing for a person with none, and a warning names the kind and the
    missing permission, never the person."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_deal(jan, "Jan Jansen - keuken")
    pd.sandbox.add_lead(jan, "Offerte dakkapel")
    pd.sandbox.refused.add("GET /api/v1/leads")
    with caplog.at_level("WARNING", logger="klantsync.pipedrive"):
        result = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    assert result.found and pd.sandbox.store.live(int(jan)) is None
    assert result.note == (
        f"{ERASURE_NOTE}; left in Pipedrive, linked to the person (the business's records, "
        "which klantsync does not delete): 1 deal; leads not counted (Pipedrive would not "
        "list them)"
    )
    assert len(pd.sandbox.store.linked_of("leads", int(jan))) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "leads" in warned[0] and "permission" in warned[0]
    assert "jan" not in warned[0].lower() and jan not in warned[0]


async def test_an_erasure_refused_the_deals_lists_says_deals_not_counted_and_deletes_the_person(
    pd: Harness,
) -> None:
    """As for leads: ``GET /api/v2/deals/archived`` refused (403) leaves the deals
    uncounted, said on the receipt, and the person is deleted all the same; leads and
    activities are still counted."""
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    pd.sandbox.add_deal(jan, "Jan Jansen - keuken")
    pd.sandbox.add_lead(jan, "Offerte dakkapel")
    pd.sandbox.add_activity(jan, "Terugbellen Jan Jansen")
    pd.sandbox.refused.add("GET /api/v2/deals/archived")
    result = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    assert result.found and pd.sandbox.store.live(int(jan)) is None
    assert result.note == (
        f"{ERASURE_NOTE}; left in Pipedrive, linked to the person (the business's records, "
        "which klantsync does not delete): 1 lead, 1 activity; deals not counted (Pipedrive "
        "would not list them)"
    )
    pd.sandbox.refused.update({"GET /api/v2/deals", "GET /api/v2/activities"})
    ria = pd.sandbox.add_person("ria@example.nl", "Ria", "Smit")
    both = await pd.adapter.erase(Subject(email="ria@example.nl", external_id=ria))
    assert pd.sandbox.store.live(int(ria)) is None
    assert both.note == (
        f"{ERASURE_NOTE}; deals and activities not counted (Pipedrive would not list them)"
    )


@pytest.mark.parametrize("status", [401, 503])
async def test_an_erasure_whose_count_fails_otherwise_than_refused_fails_and_keeps_the_person(
    status: int,
) -> None:
    """Only a 403 (a permission the API user lacks) leaves a kind uncounted: a 401 (the
    token is bad, the delete would fail too) and a 5xx (the count comes on the retry) fail
    the erasure as before, and nothing is deleted."""
    deleted: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/leads":
            return httpx.Response(status, json={"success": False, "error": "x", "data": None})
        if request.method == "GET" and path.endswith(
            ("/notes", "/deals", "/deals/archived", "/activities", "/leads/archived")
        ):
            return empty_list()
        if request.method == "DELETE":
            deleted.append(path)
            return httpx.Response(200, json={"success": True, "data": {"id": 7}})
        return found_jan(request) or not_found()

    adapter = mock_adapter(answer)
    async with adapter.client:
        with pytest.raises(FatalRemoteError if status == 401 else RetryableError):
            await adapter.erase(Subject(email="jan@example.nl"))
    assert deleted == []


def bert_holding(sandbox: PipedriveSandbox, address: str) -> str:
    """Bert's person: his own primary e-mail, and ``address`` beside it (a partner's, who
    pays his invoices)."""
    return sandbox.add_person(
        "bert@elders.nl",
        "Bert",
        "Bakker",
        emails=[
            {"value": "bert@elders.nl", "primary": True, "label": "work"},
            {"value": address, "primary": False, "label": "home"},
        ],
    )


async def test_an_erasure_leaves_a_person_holding_the_address_beside_their_own_primary_one(
    pd: Harness,
) -> None:
    """The sync gives Jan a person of his own and leaves Bert's, which holds Jan's address
    only beside Bert's primary one. The erasure took every exact search hit as Jan's and
    deleted Bert's person (with the identity map's id known or not). It follows the sync's
    rule; the note names what it left by id."""
    bert = bert_holding(pd.sandbox, "jan@example.nl")
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    known = await pd.adapter.erase(Subject(email="jan@example.nl", external_id=jan))
    assert pd.sandbox.store.live(int(bert)) is not None
    assert pd.sandbox.store.live(int(jan)) is None
    assert known.found and known.note.endswith(f"(ids {bert})")
    unknown = await pd.adapter.erase(Subject(email="jan@example.nl"))
    assert not unknown.found and pd.sandbox.store.live(int(bert)) is not None


async def test_an_access_copy_leaves_out_a_person_holding_the_address_beside_their_own_one(
    pd: Harness,
) -> None:
    """Jan's access copy showed Bert's person (his name, his notes), found by Jan's address
    beside Bert's own primary one: not Jan's, by the rule the sync writes by."""
    bert = bert_holding(pd.sandbox, "jan@example.nl")
    pd.sandbox.add_note(bert, "Bert betaalt altijd te laat")
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Jansen")
    found = await pd.adapter.find(Subject(email="jan@example.nl"))
    assert [str(p["id"]) for p in found] == [jan]
    assert "Bert" not in json.dumps(found)


async def test_a_correction_leaves_a_person_holding_the_address_beside_their_own_primary_one(
    pd: Harness,
) -> None:
    """Corrected with Jan, Bert's person (Jan's address beside Bert's primary one) took
    Jan's corrected name."""
    bert = bert_holding(pd.sandbox, "jan@example.nl")
    jan = pd.sandbox.add_person("jan@example.nl", "Jan", "Fout")
    fix = OutboundRecord("r", "jan@example.nl", jan, {"last_name": "Goed"})
    (result,) = await pd.adapter.update([fix])
    assert (result.outcome, result.external_id) == ("updated", jan)
    assert pd.sandbox.store.persons[int(jan)].to_json()["last_name"] == "Goed"
    assert pd.sandbox.store.persons[int(bert)].to_json()["name"] == "Bert Bakker"


async def test_sandbox_deleted_person_answers_404(
    raw: httpx.AsyncClient, sandbox: PipedriveSandbox
) -> None:
    """A person marked deleted is 404 to GET, PATCH and DELETE, and missing from lists."""
    person_id = sandbox.add_person("soft@example.com", "Soft", "Delete")
    deleted = await raw.delete(f"/persons/{person_id}")
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "data": {"id": int(person_id)}}
    assert (await raw.get(f"/persons/{person_id}")).status_code == 404
    assert (await raw.patch(f"/persons/{person_id}", json={"name": "X"})).status_code == 404
    assert (await raw.delete(f"/persons/{person_id}")).status_code == 404
    assert (await raw.get("/persons")).json()["data"] == []


# -- webhooks ---------------------------------------------------------------------------------


def hook(body: Any, authorization: str | None = None) -> WebhookRequest:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return WebhookRequest(method="POST", url=HOOK_URL, headers=headers, body=raw_body)


def v2_event(action: str, entity: str = "person", **meta: Any) -> dict[str, Any]:
    return {
        "meta": {"action": action, "entity": entity, "entity_id": "42", "version": "2.0", **meta},
        "data": {
            "id": 42,
            "emails": [{"value": "hook@example.com", "primary": True, "label": "work"}],
        },
        "previous": None,
    }


def test_webhook_with_the_configured_basic_credentials_verifies(pd: Harness) -> None:
    """A delivery carrying Basic base64(user:password) of the configured secret verifies."""
    authorization = "Basic " + base64.b64encode(HOOK_SECRET.encode()).decode()
    assert basic_authorization(HOOK_SECRET) == authorization
    assert pd.adapter.verify_webhook(hook(v2_event("change"), authorization), HOOK_SECRET, 0)
    lower = "basic " + authorization.split(" ", 1)[1]
    assert pd.adapter.verify_webhook(hook(v2_event("change"), lower), HOOK_SECRET, 0)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        basic_authorization("klantsync:wrong-password"),
        basic_authorization("other-user:hook-password"),
        basic_authorization(HOOK_SECRET + "-and-more"),
        "Bearer " + base64.b64encode(HOOK_SECRET.encode()).decode(),
        "Basic not*base64",
        "Basic ",
    ],
    ids=[
        "missing",
        "empty",
        "wrong-password",
        "wrong-user",
        "longer",
        "bearer",
        "garbage",
        "blank",
    ],
)
def test_webhook_without_the_right_credentials_is_refused(
    pd: Harness, authorization: str | None
) -> None:
    """Missing, wrong or malformed credentials never verify."""
    assert not pd.adapter.verify_webhook(hook(v2_event("change"), authorization), HOOK_SECRET, 0)


def test_webhook_secret_without_a_colon_never_verifies(pd: Harness) -> None:
    """A secret that is not a user:password pair is a misconfiguration and opens nothing."""
    request = hook(v2_event("change"), basic_authorization("password-only"))
    assert not pd.adapter.verify_webhook(request, "password-only", 0)


def test_parse_person_events(pd: Harness) -> None:
    """create/change become changed (id and e-mail), delete becomes deleted (id only)."""
    (created,) = pd.adapter.parse_webhook(hook(v2_event("create", id="evt-1")))
    assert (created.kind, created.delivery_id, created.external_id, created.email) == (
        "changed",
        "evt-1",
        "42",
        "hook@example.com",
    )
    (changed,) = pd.adapter.parse_webhook(hook(v2_event("change", id="evt-2")))
    assert (changed.kind, changed.external_id) == ("changed", "42")
    (deleted,) = pd.adapter.parse_webhook(hook(v2_event("delete", id="evt-3")))
    assert (deleted.kind, deleted.delivery_id, deleted.external_id, deleted.email) == (
        "deleted",
        "evt-3",
        "42",
        None,
    )


def test_parse_without_event_id_uses_the_body_hash(pd: Harness) -> None:
    """Without meta.id the delivery id is the body's hash, the same for an exact replay."""
    body = json.dumps(v2_event("change")).encode()
    (one,) = pd.adapter.parse_webhook(hook(body))
    (two,) = pd.adapter.parse_webhook(hook(body))
    assert one.delivery_id.startswith("sha256:") and one.delivery_id == two.delivery_id


@pytest.mark.parametrize(
    "body",
    [
        v2_event("change", entity="deal", id="evt-9"),
        v2_event("merge", id="evt-10"),
        {"meta": {"action": "updated", "object": "person", "id": 42}, "current": {}},
        b"not json",
        [1, 2],
    ],
    ids=["deal", "unknown-action", "v1-payload", "not-json", "not-an-object"],
)
def test_parse_ignores_what_is_not_a_v2_person_event(pd: Harness, body: Any) -> None:
    """Other entities, unknown actions, v1 payloads and junk become one ignored event."""
    events = pd.adapter.parse_webhook(hook(body))
    assert [e.kind for e in events] == ["ignored"]
    assert events[0].delivery_id


async def test_an_address_changed_by_the_adapter_is_not_answered_by_the_listing(
    pd: Harness,
) -> None:
    """Customer 5 moves to a new address (PATCH by id); a new customer then signs up under
    the freed old address. A search would find nobody there and create them; the fresh
    listing still maps the old address to customer 5's person, which gets overwritten."""
    results = await _upsert_in_batches(pd, range(30))
    assert pd.adapter.directory.fresh
    five = results[5].external_id
    (moved,) = await pd.adapter.upsert([person(5, external_id=five, email="new5@example.com")])
    assert (moved.outcome, moved.external_id) == ("updated", five)
    # A different customer now uses person5@example.com (no Pipedrive id known yet).
    (newcomer,) = await pd.adapter.upsert([person(5, first_name="Someone", last_name="Else")])
    assert newcomer.outcome == "created"
    assert newcomer.external_id != five
    kept = pd.sandbox.store.persons[int(five)].to_json()
    assert kept["first_name"] == "First5"
    assert [e["value"] for e in kept["emails"]] == ["new5@example.com"]


async def test_find_follows_search_next_cursor_past_100_hits(pd: Harness) -> None:
    """101 persons share one e-mail: find (access, erasure) must return all of them."""
    ids = {pd.sandbox.add_person("shared@example.com", "Dup", f"N{n}") for n in range(101)}
    found = await pd.adapter.find(Subject(email="shared@example.com"))
    assert {str(p["id"]) for p in found} == ids
    # The search answered additional_data.next_cursor; the adapter never asked for page 2.
    assert pd.sandbox.endpoints_used.count(f"GET {PERSONS}/search") >= 2


async def test_a_correction_reaches_every_person_holding_the_email(pd: Harness) -> None:
    """Pipedrive lets several persons share an e-mail; find and erase take them all as the
    subject's. A correction patched the oldest only and said "updated": the other kept the
    wrong number behind a receipt saying it was corrected."""
    email = "jan@example.nl"
    pd.sandbox.add_person(email, "Jan", "Jansen", "+31612345678")
    pd.sandbox.add_person(email, "Jan", "Jansen", "+31612345678")
    fix = OutboundRecord("req-1", email, None, {"email": email, "phone": "+31687654321"})
    (result,) = await pd.adapter.update([fix])
    assert result.outcome == "updated"
    after = await pd.adapter.find(Subject(email=email))
    assert sorted(str(p["phone"]) for p in after) == ["+31687654321", "+31687654321"]


async def test_a_sync_does_not_write_into_a_person_marked_deleted() -> None:
    """Whether v2 answers a person marked deleted (restorable for 30 days) with 404 or with
    ``is_deleted: true`` is unverified; find reads both as gone. The sync's write by the
    known id patched such a person and said "updated": the customer stayed in the recycle
    bin. It looks the e-mail up and creates the person again instead."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if path.endswith("/persons/5") and request.method in ("GET", "PATCH"):
            data = {"id": 5, "is_deleted": True, "emails": [], "phones": []}
            return httpx.Response(200, json={"success": True, "data": data})
        if path.endswith("/persons/search"):
            body = {"success": True, "data": {"items": []}, "additional_data": {}}
            return httpx.Response(200, json=body)
        if path.endswith("/persons") and request.method == "POST":
            return httpx.Response(200, json={"success": True, "data": {"id": 6}})
        return httpx.Response(404, json={"success": False, "error": "not found"})

    client = SystemClient(
        system="deals",
        base_url=BASE_URL,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(attempts=1, base_seconds=0),
    )
    async with client:
        adapter = PipedriveAdapter(client, make_settings())
        record = OutboundRecord("ref-1", "jan@example.nl", "5", {"email": "jan@example.nl"})
        (result,) = await adapter.upsert([record])
        (fix,) = await adapter.update([record._replace(ref="ref-2")])
    assert "PATCH /api/v2/persons/5" not in calls, calls
    assert (result.outcome, result.external_id) == ("created", "6")
    assert fix.outcome == "not_held"


def test_an_erased_address_leaves_both_indexes_of_the_listing() -> None:
    """The listing keeps addresses by person too: forgetting an erased address from one
    index only left it in the daemon's memory until the listing expired."""
    from adapters.pipedrive.directory import Directory

    directory = Directory(clock=lambda: 0.0)
    directory.load(
        [
            {"id": 1, "emails": [{"value": "Weg@Voorbeeld-canary.nl"}, {"value": "b@x.nl"}]},
            {"id": 2, "emails": [{"value": "c@x.nl"}]},
        ],
        pages=1,
    )
    directory.forget("weg@voorbeeld-canary.nl")
    assert directory.ids("weg@voorbeeld-canary.nl") == []
    assert "voorbeeld-canary" not in repr(vars(directory))
    assert directory.ids("c@x.nl") == [2]


# -- emptying what the source holds empty (OutboundRecord.clear) -------------------------------

BRANCH = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
CHANNEL = "f" * 40
OFFICE = {"value": "+31201234567", "primary": False, "label": "work"}


async def _jan_with_office_number(pd: Harness) -> tuple[dict[str, str], str]:
    """Jan, synced with his mobile number and two custom fields; a salesperson then added
    the office number. His fields as synced, and his person's id."""
    full, created, person = await _jan_created(pd)
    extra = {f"custom_fields.{BRANCH}": "Utrecht", f"custom_fields.{CHANNEL}": "webshop"}
    (again,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], created.external_id, {**full, **extra})]
    )
    assert again.outcome == "updated" and created.external_id is not None
    person.values["phones"] = [*person.values["phones"], dict(OFFICE)]
    return {**full, **extra}, created.external_id


async def test_a_phone_and_custom_field_removed_at_the_source_are_emptied_the_rest_kept(
    pd: Harness,
) -> None:
    """A number the customer removed in the shop stayed in Pipedrive for ever: only fields
    with a value were sent. Emptied, the connector's entry leaves the phone list (the
    office number a salesperson added stays) and a custom field reads null; the fields the
    write carries change, and nothing it does not name is emptied. A number the customer
    gives again later is added beside the office number, not put in its place."""
    full, jan = await _jan_with_office_number(pd)
    fields = {"email": full["email"], "first_name": "Johan", "last_name": "Jansen"}
    emptied = frozenset({"phone", f"custom_fields.{BRANCH}"})
    (result,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], jan, fields, clear=emptied)]
    )
    assert result.outcome == "updated", result.reason
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None
    assert [p["value"] for p in stored["phones"]] == [OFFICE["value"]]
    assert stored["custom_fields"] == {BRANCH: None, CHANNEL: "webshop"}
    assert (stored["name"], [e["value"] for e in stored["emails"]]) == (
        "Johan Jansen",
        [full["email"]],
    )
    back = {**fields, "phone": "+31687654321"}
    (again,) = await pd.adapter.upsert([OutboundRecord("r", full["email"], jan, back)])
    assert again.outcome == "updated"
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None
    assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
        ("+31687654321", True),
        (OFFICE["value"], False),
    ]


async def test_a_phone_emptied_after_a_restart_removes_a_sole_number_and_keeps_several(
    pd: Harness, sandbox: PipedriveSandbox, time: VirtualTime, wall: WallClock
) -> None:
    """Restarted, the adapter took the primary entry for its own and removed it: an office
    number a salesperson had made primary was lost, and the customer's number stayed. With
    several numbers and none known as its own, none is removed, by a sync or a correction,
    and the result names the phone kept, so no receipt says it was emptied. A sole number
    is taken for its own (the flow's last write gave one) and removed."""
    full, jan = await _jan_with_office_number(pd)
    person = pd.sandbox.store.persons[int(jan)]
    held = [{**OFFICE, "primary": True}, {"value": full["phone"], "primary": False}]
    person.values["phones"] = [dict(entry) for entry in held]
    fields = {"email": full["email"], "first_name": "Johan"}
    record = OutboundRecord("r", full["email"], jan, fields, clear=frozenset({"phone"}))
    for correcting in (False, True):
        result = await _restarted_write(sandbox, time, wall, record, correcting=correcting)
        assert (result.outcome, result.kept) == ("updated", frozenset({"phone"}))
        stored = pd.sandbox.record_for(full["email"])
        assert stored is not None
        assert [(p["value"], p["primary"]) for p in stored["phones"]] == [
            (OFFICE["value"], True),
            (full["phone"], False),
        ]
    person.values["phones"] = [{"value": full["phone"], "primary": True}]
    result = await _restarted_write(sandbox, time, wall, record)
    assert (result.outcome, result.kept) == ("updated", frozenset())
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and stored["phones"] == []


async def test_a_name_part_removed_at_the_source_leaves_the_other_as_the_name(
    pd: Harness,
) -> None:
    """Pipedrive keeps the name whole: a last name emptied is a name of the first name
    alone, whether the write carries the first name or not."""
    full, jan = await _jan_with_office_number(pd)
    first = {"email": full["email"], "first_name": "Jan"}
    (result,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], jan, first, clear=frozenset({"last_name"}))]
    )
    assert result.outcome == "updated", result.reason
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and (stored["name"], stored["last_name"]) == ("Jan", None)
    pd.sandbox.store.persons[int(jan)].values["name"] = "Jan Jansen"
    bare = {"email": full["email"], "phone": full["phone"]}
    (again,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], jan, bare, clear=frozenset({"last_name"}))]
    )
    assert again.outcome == "updated", again.reason
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and stored["name"] == "Jan"


async def test_a_name_pipedrive_cannot_hold_empty_stays_and_the_write_succeeds(
    pd: Harness,
) -> None:
    """Both name parts emptied would be an empty ``name``, which Pipedrive refuses (400),
    and with it the whole write. The name stays as it is; what else the write empties or
    carries lands, and a name the adapter does not know how to empty is passed over."""
    full, jan = await _jan_with_office_number(pd)
    fields = {"email": full["email"], f"custom_fields.{CHANNEL}": "winkel"}
    emptied = frozenset({"first_name", "last_name", "phone", "date_of_birth"})
    (result,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], jan, fields, clear=emptied)]
    )
    assert result.outcome == "updated", result.reason
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and stored["name"] == "Jan Jansen"
    assert [p["value"] for p in stored["phones"]] == [OFFICE["value"]]
    assert stored["custom_fields"] == {BRANCH: "Utrecht", CHANNEL: "winkel"}


async def test_a_name_pipedrive_cannot_hold_empty_is_reported_kept_and_an_emptied_one_not(
    pd: Harness,
) -> None:
    """The result's ``kept`` names what of ``clear`` the write left: the whole name (both
    parts emptied), a part of a custom field and a name it does not know how to empty; the
    phone and the custom field it emptied are not named. A correction emptying one name
    part alone empties it; a person the write creates had nothing to keep."""
    full, jan = await _jan_with_office_number(pd)
    fields = {"email": full["email"], f"custom_fields.{CHANNEL}": "winkel"}
    emptied = frozenset(
        {
            "first_name",
            "last_name",
            "phone",
            "date_of_birth",
            f"custom_fields.{BRANCH}",
            f"custom_fields.{CHANNEL}.currency",
        }
    )
    (result,) = await pd.adapter.upsert(
        [OutboundRecord("r", full["email"], jan, fields, clear=emptied)]
    )
    assert result.outcome == "updated", result.reason
    assert result.kept == {
        "first_name",
        "last_name",
        "date_of_birth",
        f"custom_fields.{CHANNEL}.currency",
    }
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and stored["custom_fields"] == {BRANCH: None, CHANNEL: "winkel"}
    fix = {"email": full["email"]}
    (fixed,) = await pd.adapter.update(
        [OutboundRecord("req-1", full["email"], jan, fix, clear=frozenset({"last_name"}))]
    )
    assert (fixed.outcome, fixed.kept) == ("updated", frozenset())
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None and stored["name"] == "Jan"
    new = {"email": "nieuw@example.com", "first_name": "Nina"}
    (created,) = await pd.adapter.upsert(
        [OutboundRecord("n", new["email"], None, new, clear=emptied)]
    )
    assert (created.outcome, created.kept) == ("created", frozenset())


async def test_a_person_created_with_fields_to_empty_is_created(pd: Harness) -> None:
    """A person the write creates holds nothing to empty: created as the fields say."""
    email = "nieuw@example.com"
    fields = {"email": email, "first_name": "Nina", "last_name": "Nieuw"}
    emptied = frozenset({"phone", f"custom_fields.{BRANCH}"})
    (result,) = await pd.adapter.upsert([OutboundRecord("r", email, None, fields, clear=emptied)])
    assert result.outcome == "created", result.reason
    stored = pd.sandbox.record_for(email)
    assert stored is not None and (stored["name"], stored["phones"]) == ("Nina Nieuw", [])


async def test_a_correction_empties_the_phone_it_names_and_keeps_the_office_number(
    pd: Harness,
) -> None:
    """``update`` builds its write as a sync does: a correction that empties the phone
    takes the connector's number out and leaves the salesperson's."""
    full, jan = await _jan_with_office_number(pd)
    fix = {"email": full["email"]}
    (result,) = await pd.adapter.update(
        [OutboundRecord("req-1", full["email"], jan, fix, clear=frozenset({"phone"}))]
    )
    assert result.outcome == "updated", result.reason
    stored = pd.sandbox.record_for(full["email"])
    assert stored is not None
    assert [p["value"] for p in stored["phones"]] == [OFFICE["value"]]
    assert stored["name"] == "Jan Jansen"


async def test_the_sandbox_reads_a_custom_field_written_empty_as_null(
    raw: httpx.AsyncClient, sandbox: PipedriveSandbox
) -> None:
    """Pipedrive empties a custom field written ``null`` or ``""``; a read shows it null."""
    person_id = sandbox.add_person("leeg@example.nl", "Leeg", custom_fields={BRANCH: "Utrecht"})
    answer = await raw.patch(f"/persons/{person_id}", json={"custom_fields": {BRANCH: ""}})
    assert answer.status_code == 200
    assert answer.json()["data"]["custom_fields"] == {BRANCH: None}


# -- merges -----------------------------------------------------------------------------------


def test_a_delete_naming_the_person_merged_into_is_a_merge_of_both_ids(pd: Harness) -> None:
    """Webhooks v2 tell a merge by a delete of the person merged away whose meta carries
    merged_to_id (a string): a merged event with both ids, and nothing of the person."""
    (merged,) = pd.adapter.parse_webhook(hook(v2_event("delete", id="evt-4", merged_to_id="77")))
    assert (merged.kind, merged.delivery_id, merged.external_id, merged.merged_into) == (
        "merged",
        "evt-4",
        "42",
        "77",
    )
    assert merged.email is None


@pytest.mark.parametrize("merged_to_id", [None, "", "0", "42", True, "seventy"])
def test_a_delete_without_a_person_merged_into_stays_a_deletion(
    pd: Harness, merged_to_id: Any
) -> None:
    """A plain deletion (no id, an empty or null one, the deleted person's own) is deleted."""
    (event,) = pd.adapter.parse_webhook(hook(v2_event("delete", merged_to_id=merged_to_id)))
    assert (event.kind, event.external_id, event.merged_into) == ("deleted", "42", None)


async def test_the_sandbox_merges_a_person_into_the_one_kept_as_pipedrive_does(
    pd: Harness, raw: httpx.AsyncClient
) -> None:
    """v1 PUT /persons/{id}/merge keeps merge_with_id: its values win, the merged person's
    fill what it lacks, the e-mail lists are joined (its own primary), what named the merged
    person names it, and the merged person is gone as a deleted one is."""
    gone = pd.sandbox.add_person("klant@example.com", "Klant", "", "0611111111")
    kept = pd.sandbox.add_person("werk@example.com", "Werk", "Naam")
    pd.sandbox.add_note(gone, "Belde over offerte")
    v1 = "https://klant.pipedrive.test/api/v1"
    answer = await raw.put(f"{v1}/persons/{gone}/merge", json={"merge_with_id": int(kept)})
    assert answer.status_code == 200 and answer.json()["data"]["id"] == int(kept)
    record = pd.sandbox.record_for("klant@example.com")
    assert record is not None and record["id"] == int(kept) and record["name"] == "Werk Naam"
    assert [(e["value"], e["primary"]) for e in record["emails"]] == [
        ("werk@example.com", True),
        ("klant@example.com", False),
    ]
    assert [p["value"] for p in record["phones"]] == ["0611111111"]
    assert [n["person_id"] for n in pd.sandbox.store.linked["notes"]] == [int(kept)]
    assert (await raw.get(f"/persons/{gone}")).status_code == 404
    again = await raw.put(f"{v1}/persons/{kept}/merge", json={"merge_with_id": int(kept)})
    assert again.status_code == 400


async def test_the_sandbox_s_merge_deliveries_are_read_as_pipedrive_sends_them(
    pd: Harness,
) -> None:
    """The two v2 deliveries of a merge: a merged event for the person gone, a change of the
    person kept."""
    gone = pd.sandbox.add_person("klant@example.com")
    kept = pd.sandbox.add_person("werk@example.com")
    pd.sandbox.merge(gone, kept)
    events = [pd.adapter.parse_webhook(hook(b))[0] for b in pd.sandbox.merge_deliveries(gone, kept)]
    assert [(e.kind, e.external_id, e.merged_into) for e in events] == [
        ("merged", gone, kept),
        ("changed", kept, None),
    ]


async def test_held_addresses_are_every_email_of_the_live_person_primary_first(
    pd: Harness,
) -> None:
    """What a merge is checked by: each address the kept person holds, the primary one
    first; nothing for a person gone or an id that is none."""
    gone = pd.sandbox.add_person("klant@example.com")
    kept = pd.sandbox.add_person("werk@example.com")
    pd.sandbox.merge(gone, kept)
    assert await pd.adapter.held_addresses(kept) == ["werk@example.com", "klant@example.com"]
    assert await pd.adapter.held_addresses(gone) is None
    assert await pd.adapter.held_addresses("not-an-id") is None
