"""Targeted syncs: people fetched from their source by id or e-mail, then run through its flows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.targeted import sync_subject
from tests.conftest import write_config

CRM_TO_SHOP = """
[[flows]]
name = "crm-to-shop"
source = "crm"
destinations = ["shop"]
schedule = "every 15m"
"""


@pytest.fixture
def config_path(tmp_path: Path, env: dict[str, str]) -> Path:
    """The shared test config plus a flow with the CRM as its source."""
    return write_config(tmp_path, extra=CRM_TO_SHOP)


@pytest.mark.parametrize("archived", [False, True], ids=["live", "archived"])
async def test_a_contact_archived_at_the_source_does_not_sync(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    archived: bool,
) -> None:
    """A live contact fetched from HubSpot reaches the shop; one in HubSpot's recycle bin, which
    find reports as held, is no person to sync (a pull would not list it either)."""
    contact_id = crm.add_person("binned@example.com", "Archie", "Ved")
    contact = crm.store.live(contact_id)
    assert contact is not None
    if archived:
        crm.store.archive(contact)
    async with open_rt() as rt:
        (report,) = await sync_subject(
            rt, "crm", external_id=contact_id, email="binned@example.com"
        )
    assert report.pulled == (0 if archived else 1)
    assert shop.holds("binned@example.com") is not archived
