"""Who a request is about: the person under a former address, and not whoever took it over."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.dsr import DsrService
from connector.runtime import Runtime
from tests.conftest import CANARY_EMAIL, CANARY_NAME
from tests.connector.test_dsr import seeded

MOVED = "nieuw.adres@voorbeeld-canary.nl"


async def _moved_and_address_taken_over(shop: WooCommerceSandbox, rt: Runtime) -> None:
    """A moved to a new address (synced); B then signed up in the shop under the address A
    gave up, and asks before the next sync."""
    await seeded(shop, rt)
    shop.touch(CANARY_EMAIL, email=MOVED)
    await rt.engine.sync()
    shop.add_person(CANARY_EMAIL, "Bea", "Buur", "0622222222", city="Delft")


async def test_access_by_a_new_customer_under_an_address_given_up_shows_nobody_else(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime, tmp_path: Path
) -> None:
    """The address led to the person who had it while the store held nothing under it: B's
    bundle held A's CRM contact (A's name, new address and phone). The shop holds the
    address for a customer the store has not met: it is B's now."""
    await _moved_and_address_taken_over(shop, rt)
    view = await DsrService(rt).access(CANARY_EMAIL, tmp_path / "bundle")
    assert view.status == "completed"
    data = json.loads((tmp_path / "bundle" / "data.json").read_text())
    text = json.dumps(data["systems"])
    assert MOVED not in text and CANARY_NAME not in text
    assert "Bea" in text  # B's own record, from the shop


async def test_a_correction_by_a_new_customer_under_an_address_given_up_leaves_others_alone(
    shop: WooCommerceSandbox, crm: HubSpotSandbox, rt: Runtime
) -> None:
    """B's correction was written onto A's CRM contact, with B's address."""
    await _moved_and_address_taken_over(shop, rt)
    await DsrService(rt).rectify(CANARY_EMAIL, {"city": "Zeist"})
    contact = crm.record_for(MOVED)
    assert contact is not None and contact["properties"]["firstname"] == CANARY_NAME
    assert (contact["properties"]["email"], contact["properties"]["city"]) == (MOVED, "Utrecht")
