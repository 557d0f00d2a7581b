"""``klantsync demo`` and ``klantsync sandbox``: the product end to end on this machine.

The demo starts the WooCommerce and HubSpot sandboxes over real HTTPS on loopback (with a CA it
generates), seeds synthetic customers that carry fields which must never flow (date of birth,
IP address, customer note), writes a config like ``config.example.toml`` pointing at them, and
runs the real engine: a sync, a report of what arrived and what was withheld, and a second sync
that sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from connector.crypto import generate_master_key
from connector.engine import FlowReport
from connector.runtime import open_runtime
from connector.sandboxkit import serve_tls

__all__ = ["REPO_MAPPINGS", "run_demo", "run_sandboxes", "write_config"]

#: The mappings shipped with klantsync (the demo and the example config use them as they are).
REPO_MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"

SANDBOX_PORTS = {"shop": 8443, "crm": 8444}


def write_config(
    directory: Path,
    urls: dict[str, str],
    ca_path: Path,
    credentials: dict[str, dict[str, str]],
    *,
    mappings: Path = REPO_MAPPINGS,
) -> Path:
    """Write a working config, master key and secret files for the given sandbox URLs."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for system, creds in credentials.items():
        for name, value in creds.items():
            path = secrets / f"{system}_{name}"
            path.write_text(value + "\n")
            path.chmod(0o600)
    key = directory / "master.key"
    if not key.exists():
        key.write_text(generate_master_key() + "\n")
        key.chmod(0o600)

    def refs(system: str) -> str:
        inner = ", ".join(f'{n} = "file:secrets/{system}_{n}"' for n in credentials[system])
        return "{ " + inner + " }"

    text = f"""# Written by klantsync for its sandboxes; see config.example.toml for every option.
[store]
path = "klantsync.db"

[keys]
source = "file:master.key"

[systems.shop]
adapter = "woocommerce"
base_url = "{urls["shop"]}"
ca_bundle = "{ca_path}"
mapping = "{mappings / "woocommerce.toml"}"
credentials = {refs("shop")}

[systems.crm]
adapter = "hubspot"
base_url = "{urls["crm"]}"
ca_bundle = "{ca_path}"
mapping = "{mappings / "hubspot.toml"}"
rate_limit = {{ requests = 190, per_seconds = 10 }}
credentials = {refs("crm")}

[[flows]]
name = "shop-to-crm"
source = "shop"
destinations = ["crm"]
schedule = "every 15m"
"""
    config = directory / "klantsync.toml"
    config.write_text(text)
    return config


@contextmanager
def _sandboxes(
    directory: Path, customers: int, ports: dict[str, int] | None = None
) -> Iterator[tuple[Any, Any, Path, dict[str, str]]]:
    from adapters.hubspot.sandbox import HubSpotSandbox
    from adapters.woocommerce.sandbox import WooCommerceSandbox
    from connector.ratelimit import RateLimit

    shop = WooCommerceSandbox()
    crm = HubSpotSandbox(rate_limit=RateLimit(190, 10))
    shop.seed_synthetic(customers, seed=7)
    with serve_tls({"shop": shop.app(), "crm": crm.app()}, directory / "tls", ports=ports) as (
        ca,
        served,
    ):
        assert ca is not None
        yield shop, crm, ca.ca_path, {name: app.url for name, app in served.items()}


def run_demo(console: Console, *, directory: Path | None, customers: int, as_json: bool) -> int:
    """Run the demo; return the exit status."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="klantsync-demo-") as tmp:
            return _demo(console, Path(tmp), customers, as_json)
    directory.mkdir(parents=True, exist_ok=True)
    return _demo(console, directory, customers, as_json)


def _demo(console: Console, directory: Path, customers: int, as_json: bool) -> int:
    say = (lambda *_a, **_k: None) if as_json else console.print
    with _sandboxes(directory, customers) as (shop, crm, ca_path, urls):
        say(f"[bold]klantsync demo[/] in {directory}")
        say(f"  WooCommerce sandbox: {urls['shop']}  (HTTPS, certificate from a local CA)")
        say(f"  HubSpot sandbox:     {urls['crm']}  (190 requests / 10 s, like the Pro tier)")
        say(f"  CA certificate:      {ca_path}")
        config = write_config(
            directory,
            urls,
            ca_path,
            {"shop": shop.credentials(), "crm": crm.credentials()},
        )
        say(f"  config:              {config}\n")
        sample = shop.record_for(_first_email(shop)) or {}
        shop_fields = sorted(_leaf_names(sample))
        say(f"Seeded {customers} synthetic customers in the shop. Each record has these fields:")
        say("  " + ", ".join(shop_fields) + "\n")

        first, second, third = asyncio.run(_demo_syncs(config, shop))
        received = sorted(crm.log.property_names())
        result = {
            "directory": str(directory),
            "first_sync": first.as_dict(),
            "second_sync": second.as_dict(),
            "after_three_changes": third.as_dict(),
            "crm_received_properties": received,
            "crm_contacts": crm.contact_count(),
        }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        from connector.cli import print_report

        say("[bold]1. First sync[/]")
        print_report(console, first)
        say(
            f"\nThe CRM now holds {result['crm_contacts']} contacts and received only these "
            f"properties:\n  {', '.join(received)}"
        )
        say(
            "Everything else the shop holds (date of birth, IP address, notes, addresses the CRM "
            "mapping does not name) stayed behind.\n"
        )
        say("[bold]2. Second sync, nothing changed[/]")
        print_report(console, second)
        say("\n[bold]3. Three customers change their phone number in the shop[/]")
        print_report(console, third)
        say("\nDone. Try `klantsync sandbox` and `klantsync -c config.example.toml sync` next.")
    failed = first.failed or second.failed or third.failed
    return 1 if failed else 0


async def _demo_syncs(config: Path, shop: Any) -> tuple[FlowReport, FlowReport, FlowReport]:
    async with open_runtime(config) as rt:
        (first,) = await rt.engine.sync("shop-to-crm")
        (second,) = await rt.engine.sync("shop-to-crm")
        for index, email in enumerate(_emails(shop, 3)):
            shop.touch(email, billing={"phone": f"06 9000 00{index:02d}"})
        (third,) = await rt.engine.sync("shop-to-crm")
    return first, second, third


def _emails(shop: Any, count: int) -> list[str]:
    emails: list[str] = []
    customer_id = 1
    while len(emails) < count:
        record = shop.store.get(customer_id) if hasattr(shop.store, "get") else None
        if record and record.get("email"):
            emails.append(record["email"])
        customer_id += 1
        if customer_id > 10_000:
            break
    return emails


def _first_email(shop: Any) -> str:
    emails = _emails(shop, 1)
    return emails[0] if emails else ""


def _leaf_names(record: dict[str, Any], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for key, value in record.items():
        if key == "_links":
            continue
        if isinstance(value, dict):
            names |= _leaf_names(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and "key" in value[0]:
            names |= {f"{prefix}{key}.{item['key']}" for item in value}
        else:
            names.add(f"{prefix}{key}")
    return names


def run_sandboxes(console: Console, directory: Path, customers: int) -> int:
    """Serve both sandboxes on fixed ports until interrupted (for ``config.example.toml``)."""
    directory.mkdir(parents=True, exist_ok=True)
    with _sandboxes(directory, customers, ports=SANDBOX_PORTS) as (shop, crm, ca_path, urls):
        for system, creds in (("shop", shop.credentials()), ("crm", crm.credentials())):
            for name, value in creds.items():
                console.print(f"export KLANTSYNC_{system.upper()}_{name.upper()}={value}")
        console.print(f"# shop {urls['shop']}  crm {urls['crm']}  CA {ca_path}")
        console.print("# sandboxes running; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
