"""What ``klantsync demo`` says happened is what the sandboxes hold afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

_CUSTOMERS = 6


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo run once on a few customers: its result, what it printed, its sandboxes."""
    from connector import demo

    captured: dict[str, Any] = {}
    real_sandboxes, real_story = demo.sandboxes, demo._story

    @contextlib.contextmanager
    def spy_sandboxes(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_sandboxes(*args, **kwargs) as got:
            captured["boxes"] = got[0]
            yield got

    async def spy_story(*args: Any, **kwargs: Any) -> dict[str, Any]:
        captured["result"] = result = await real_story(*args, **kwargs)
        return result

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, highlight=False, soft_wrap=True, width=200)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "sandboxes", spy_sandboxes)
        mp.setattr(demo, "_story", spy_story)
        directory = tmp_path_factory.mktemp("demo")
        captured["dir"] = directory
        captured["rc"] = demo.run_demo(
            console, directory=directory, customers=_CUSTOMERS, as_json=False
        )
    captured["text"] = out.getvalue()
    yield captured


def _erased_email() -> str:
    from adapters.woocommerce.sandbox import WooCommerceSandbox

    shop = WooCommerceSandbox()
    shop.seed_synthetic(_CUSTOMERS, seed=7)  # as the demo seeds it; customer 1 is erased
    customer = shop.store.get(1)
    assert customer is not None
    return str(customer["email"])


def test_the_demo_says_pipedrive_can_restore_what_it_deleted_for_30_days(
    demo_run: dict[str, Any],
) -> None:
    """Pipedrive keeps a deleted person restorable for 30 days: the demo says so, in its
    JSON and on screen, beside "verified_absent"."""
    assert demo_run["rc"] == 0
    assert demo_run["boxes"]["deals"].restorable(_erased_email())
    erasure = demo_run["result"]["erasure"]
    assert erasure["reversible"]["deals"] is True and erasure["reversible"]["crm"] is False
    assert "purged by the vendor after 30 days" in erasure["notes"]["deals"]
    (line,) = [ln for ln in demo_run["text"].splitlines() if ln.strip().startswith("deals:")]
    assert "after 30 days" in line and "can restore it until then" in line


def test_the_demo_records_the_config_it_ran_under_before_its_first_sync(
    demo_run: dict[str, Any],
) -> None:
    """`sync`, `run` and the `dsr` commands record the config they run under
    (``config.loaded``) before what they do; the demo's trail started at its first
    ``sync.batch``, its transfers under no recorded config."""
    assert demo_run["rc"] == 0
    (store,) = [p for p in Path(demo_run["dir"]).rglob("*.db") if "backup" not in p.parts]
    with contextlib.closing(sqlite3.connect(store)) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM audit ORDER BY seq")]
    assert "config.loaded" in kinds and "sync.batch" in kinds
    assert kinds.index("config.loaded") < kinds.index("sync.batch")


def test_the_demo_anonymises_an_order_and_deletes_its_note_as_readme_says(
    demo_run: dict[str, Any],
) -> None:
    """README, demo step 4: "WooCommerce orders anonymised (their notes deleted)"."""
    receipt = json.loads(Path(demo_run["result"]["erasure"]["receipt_file"]).read_text())
    (shop,) = [s for s in receipt["receipt"]["systems"] if s["system"] == "shop"]
    anonymised = re.search(r"(\d+) orders? anonymised", shop["note"])
    notes = re.search(r"(\d+) order notes? deleted", shop["note"])
    assert anonymised is not None and int(anonymised.group(1)) >= 1, shop["note"]
    assert notes is not None and int(notes.group(1)) >= 1, shop["note"]
    box = demo_run["boxes"]["shop"]
    assert all(not box.notes_of(order_id) for order_id in box.store.orders)


def test_the_demo_asks_the_shop_for_neither_username_nor_avatar_url(
    demo_run: dict[str, Any],
) -> None:
    """``username`` (made of the name) and ``avatar_url`` (a Gravatar URL holding the
    unkeyed MD5 of the e-mail address) are personal data no mapping reads: the shop is not
    asked for them, no system receives them, and the demo says what the shop was asked for."""
    first = demo_run["result"]["first_sync"]
    asked = first["asked_fields"]
    assert "email" in asked and "billing" in asked
    assert not {"username", "avatar_url", "shipping", "customer_note"} & set(asked)
    assert "username" not in first["withheld_fields"]
    received = {f for fields in demo_run["result"]["received"].values() for f in fields}
    assert "username" not in received and "avatar_url" not in received
    assert "asked shop only for: billing, date_created, email" in demo_run["text"]


def test_the_demo_empties_in_the_crms_a_phone_number_removed_in_the_shop(
    demo_run: dict[str, Any],
) -> None:
    """Step 3: the fourth customer removes their number in the shop; HubSpot holds it empty
    and Pipedrive holds no number for them, and the report says so."""
    assert demo_run["rc"] == 0
    boxes = demo_run["boxes"]
    email = boxes["shop"].store.get(4)["email"]
    contact = boxes["crm"].record_for(email)
    assert contact is not None and contact["properties"]["phone"] in ("", None)
    changes = demo_run["result"]["after_changes"]["destinations"]
    assert changes["crm"]["emptied"] == 1 and changes["deals"]["emptied"] == 1
    assert "1 queued with fields to empty" in demo_run["text"]
