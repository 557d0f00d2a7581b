"""The WooCommerce adapter emptying what the source no longer holds (``OutboundRecord.clear``),
against its sandbox, in process. Beside ``test_woocommerce.py``, whose helpers it uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.woocommerce import WooCommerceSandbox
from connector.adapter import OutboundRecord, Subject
from tests.adapters.test_woocommerce import Harness, make_harness, record


@pytest.fixture
def sandbox() -> WooCommerceSandbox:
    return WooCommerceSandbox()


@pytest.fixture
async def harness(sandbox: WooCommerceSandbox) -> AsyncIterator[Harness]:
    built = await make_harness(sandbox)
    yield built
    await built.client.aclose()


def emptying(written: OutboundRecord, *names: str) -> OutboundRecord:
    """``written`` with ``names`` to empty."""
    return written._replace(clear=frozenset(names))


def held(harness: Harness, email: str) -> dict[str, Any]:
    customer = harness.sandbox.record_for(email)
    assert customer is not None
    return customer


async def test_an_upsert_empties_the_fields_named_writes_the_others_and_leaves_the_orders(
    harness: Harness,
) -> None:
    """A customer's phone and company the source no longer holds are emptied (WooCommerce sets
    the "" it is sent), beside the fields written; nothing else of theirs is emptied, and
    their order keeps the phone it was placed with (an order's billing is its own copy)."""
    shop = harness.sandbox
    customer_id = shop.add_person(
        "leeg@example.com",
        "Lotte",
        "Leeg",
        phone="0612345678",
        company="Leeg BV",
        city="Utrecht",
        postcode="3511 AA",
        address_1="Oudegracht 1",
    )
    order_id = shop.add_order(customer_id)
    sent = emptying(
        record("r", "leeg@example.com", customer_id, first_name="Lot", **{"billing.city": "Urk"}),
        "billing.phone",
        "billing.company",
    )
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated" and result.external_id == customer_id
    (read,) = await harness.adapter.find_people(Subject(email="leeg@example.com"))
    billing = read["billing"]
    assert billing["phone"] == billing["company"] == ""
    assert read["first_name"] == billing["first_name"] == "Lot" and billing["city"] == "Urk"
    assert read["last_name"] == billing["last_name"] == "Leeg"
    assert billing["postcode"] == "3511 AA" and billing["address_1"] == "Oudegracht 1"
    assert billing["email"] == "leeg@example.com"
    order = shop.order(order_id)
    assert order is not None
    assert order["billing"]["phone"] == "0612345678" and order["billing"]["company"] == "Leeg BV"


async def test_emptying_a_name_empties_its_billing_copy_too(harness: Harness) -> None:
    """The account's last name is kept twice, and writing it writes both: emptying it
    empties both, so invoices and the next checkout do not keep it either."""
    customer_id = harness.sandbox.add_person("naam@example.com", "Nora", "Naam")
    sent = emptying(record("r", "naam@example.com", customer_id, first_name="Nora"), "last_name")
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated"
    customer = held(harness, "naam@example.com")
    assert customer["last_name"] == customer["billing"]["last_name"] == ""
    assert customer["first_name"] == customer["billing"]["first_name"] == "Nora"


async def test_a_meta_data_entry_is_emptied_by_deleting_it(harness: Harness) -> None:
    """A meta data entry to empty is written with a null value, which WooCommerce's save
    deletes; the other entries stay."""
    customer_id = harness.sandbox.add_person(
        "meta@example.com", "Mo", meta_data=[{"key": "vip", "value": "1"}], date_of_birth="1970"
    )
    sent = emptying(record("r", "meta@example.com", customer_id, first_name="Mo"), "meta_data.vip")
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated"
    meta = held(harness, "meta@example.com")["meta_data"]
    assert [(m["key"], m["value"]) for m in meta] == [("date_of_birth", "1970")]


async def test_what_the_shop_cannot_hold_empty_is_left_and_the_write_succeeds(
    harness: Harness,
) -> None:
    """The e-mail addresses (the account's, and the billing one order mails go to), the
    username (not editable) and names the adapter does not know are never sent to be
    emptied: they stay as they were, the write succeeds, and what can be emptied is."""
    customer_id = harness.sandbox.add_person("vast@example.com", "Vera", "Vast", phone="0611111111")
    harness.sandbox.log.clear()
    sent = emptying(
        record("r", "vast@example.com", customer_id, first_name="Vera"),
        "email",
        "billing.email",
        "username",
        "role",
        "billing.vat_id",
        "meta_data.",
        "billing.phone",
    )
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated" and not result.reason
    customer = held(harness, "vast@example.com")
    assert customer["email"] == customer["billing"]["email"] == "vast@example.com"
    assert customer["username"] == "vast" and customer["role"] == "customer"
    assert customer["billing"]["phone"] == ""
    names = harness.sandbox.log.property_names()
    assert names == {"id", "first_name", "billing.first_name", "billing.phone"}


async def test_what_the_shop_cannot_hold_empty_is_reported_kept_and_what_it_emptied_not(
    harness: Harness,
) -> None:
    """The result's ``kept`` names the names of ``clear`` left as they were (the e-mail
    addresses, names the adapter does not know); the phone emptied is not named, nor the
    billing copy of a name the write gives a value. A correction says the same, and a
    customer the write creates had nothing to keep."""
    customer_id = harness.sandbox.add_person("vast@example.com", "Vera", "Vast", phone="0611111111")
    names = ("email", "billing.email", "username", "billing.phone", "billing.first_name")
    sent = emptying(record("r", "vast@example.com", customer_id, first_name="Vera"), *names)
    (result,) = await harness.adapter.upsert([sent])
    assert result.outcome == "updated"
    assert result.kept == {"email", "billing.email", "username"}
    assert held(harness, "vast@example.com")["billing"]["phone"] == ""
    fix = emptying(record("f", "vast@example.com", customer_id), "billing.email", "billing.city")
    (fixed,) = await harness.adapter.update([fix])
    assert (fixed.outcome, fixed.kept) == ("updated", {"billing.email"})
    new = emptying(record("n", "nieuw@example.com", first_name="Nina"), *names)
    (created,) = await harness.adapter.upsert([new])
    assert (created.outcome, created.kept) == ("created", frozenset())


class Sent(httpx.AsyncBaseTransport):
    """The sandbox's transport, keeping the JSON body of each batch call."""

    def __init__(self, sandbox: WooCommerceSandbox) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app())
        self.batches: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/customers/batch"):
            self.batches.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)


async def test_a_created_customer_is_sent_nothing_to_empty(sandbox: WooCommerceSandbox) -> None:
    """A batch that creates one customer and updates another: the created one is created
    with the fields written and no field sent empty; the held one is emptied."""
    old_id = sandbox.add_person("oud@example.com", "Olaf", phone="0622222222")
    sent = Sent(sandbox)
    harness = await make_harness(sandbox, transport=sent)
    new = emptying(record("n", "nieuw@example.com", first_name="Nina"), "billing.phone")
    old = emptying(record("o", "oud@example.com", old_id, first_name="Olaf"), "billing.phone")
    try:
        created, updated = await harness.adapter.upsert([new, old])
    finally:
        await harness.client.aclose()
    assert created.outcome == "created" and updated.outcome == "updated"
    assert held(harness, "nieuw@example.com")["first_name"] == "Nina"
    assert held(harness, "oud@example.com")["billing"]["phone"] == ""
    (batch,) = sent.batches
    (create,) = batch["create"]
    assert create == {
        "email": "nieuw@example.com",
        "first_name": "Nina",
        "billing": {"first_name": "Nina"},
    }


async def test_a_correction_empties_the_fields_named_and_creates_nobody(harness: Harness) -> None:
    """``update`` empties as ``upsert`` does in a customer the shop holds, and someone it does
    not hold stays not held: nobody is created to have a field emptied."""
    customer_id = harness.sandbox.add_person(
        "fix@example.com", "Femke", "Fix", phone="0633333333", city="Delft"
    )
    held_one = emptying(
        record("h", "fix@example.com", customer_id, last_name="Fiks"), "billing.city"
    )
    absent = emptying(record("a", "niemand@example.com", first_name="Niemand"), "billing.city")
    corrected, not_held = await harness.adapter.update([held_one, absent])
    assert corrected.outcome == "updated" and not_held.outcome == "not_held"
    customer = held(harness, "fix@example.com")
    assert customer["billing"]["city"] == "" and customer["last_name"] == "Fiks"
    assert customer["billing"]["phone"] == "0633333333"
    assert not harness.sandbox.holds("niemand@example.com")
