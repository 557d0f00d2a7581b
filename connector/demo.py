"""``klantsync demo`` and ``klantsync sandbox``: the product end to end on this machine.

The demo starts four sandboxes over real HTTPS on loopback, with a CA it generates: a
WooCommerce shop, a HubSpot CRM (rate-limited like the Professional tier), a Mailchimp
newsletter sender and a Pipedrive CRM. It seeds synthetic customers that carry fields which
must never flow (date of birth, IP address, customer note), writes a config like
``config.example.toml`` pointing at them, and runs the real connector:

1. a sync, and what each system received and what was withheld;
2. a second sync that sends nothing; changes that send exactly the people changed, a
   phone number removed in the shop emptied in the CRMs;
3. an erasure carried to every system, with its signed receipt;
4. an access request answered with a portable bundle and reports in Dutch and English;
5. the processing register generated from the running config.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

from rich.console import Console
from rich.markup import escape

from connector import audit
from connector.crypto import generate_master_key
from connector.engine import FlowReport, Progress
from connector.lock import syncing
from connector.loop import run as run_loop
from connector.privatefile import create_private, write_private
from connector.runtime import Runtime, open_runtime
from connector.sandboxkit import serve_tls
from connector.wording import counted

__all__ = [
    "REPO_MAPPINGS",
    "SANDBOX_PORTS",
    "base_urls",
    "run_demo",
    "run_sandboxes",
    "write_config",
]

_P = ParamSpec("_P")

#: The mappings shipped with klantsync (the demo and the example config use them as they are):
#: mappings/ beside connector/, in a checkout (an editable install included) and in an
#: installed klantsync alike, where the wheel carries them as the package ``mappings``'s data
#: (pyproject.toml) beside the package ``connector``.
REPO_MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"

#: Ports ``klantsync sandbox`` serves on, the ones ``config.example.toml`` names.
SANDBOX_PORTS = {"shop": 8443, "crm": 8444, "news": 8445, "deals": 8446}

#: Per sandbox: adapter kind, mapping file, the path its API lives under, extra config lines.
SYSTEMS: dict[str, tuple[str, str, str, str]] = {
    "shop": ("woocommerce", "woocommerce.toml", "", ""),
    "crm": ("hubspot", "hubspot.toml", "", "rate_limit = { requests = 190, per_seconds = 10 }"),
    "news": ("mailchimp", "mailchimp.toml", "/3.0", 'list_ids = ["a1b2c3d4e5"]'),
    "deals": ("pipedrive", "pipedrive.toml", "/api/v2", 'plan = "growth"'),
}

#: Per sandbox: who would process the data for real, for the register and checks.
PROCESSORS: dict[str, str] = {
    "shop": 'legal_name = "Demo Hosting B.V."\nagreement_reference = "VWO-2026-001"\n'
    'country = "NL"',
    "crm": 'legal_name = "HubSpot Ireland Limited"\nagreement_reference = "HubSpot DPA"\n'
    'country = "IE"\nonward_transfers = [{ country = "US", recipient = "HubSpot, Inc.", '
    'mechanism = "EU-US Data Privacy Framework; SCCs 2021/914 module 3" }]',
    "news": 'legal_name = "The Rocket Science Group LLC (Mailchimp)"\n'
    'agreement_reference = "Intuit Mailchimp DPA"\ncountry = "US"\n'
    'transfer_mechanism = "EU-US Data Privacy Framework; SCCs"\n'
    'onward_transfers = [{ country = "US", recipient = "Intuit Inc.", '
    'mechanism = "EU-US Data Privacy Framework; SCCs 2021/914 module 3" }]',
    "deals": 'legal_name = "Pipedrive OÜ"\nagreement_reference = "Pipedrive DPA"\ncountry = "EE"',
}

_ACCOUNTABILITY = """
[controller]
name = "Demo Webwinkel B.V."
address = "Voorbeeldstraat 1, 3511 AA Utrecht"
kvk = "12345678"
contact = "Privacy contact"
email = "privacy@demo-webwinkel.example"

[privacy]
data_subjects = ["customers", "newsletter subscribers"]
agency = "Demo Digital Agency B.V."
"""


def base_urls(urls: dict[str, str]) -> dict[str, str]:
    """Each sandbox's ``base_url`` as a config gives it: its server's URL with the path its
    API lives under (Mailchimp's ``/3.0``, Pipedrive's ``/api/v2``; the server's root is a
    404 to those adapters)."""
    return {name: url + SYSTEMS[name][2] for name, url in urls.items()}


def write_config(
    directory: Path,
    urls: dict[str, str],
    ca_path: Path,
    credentials: dict[str, dict[str, str]],
    *,
    mappings: Path = REPO_MAPPINGS,
) -> Path:
    """Write a working config, master key and secret files for the given sandbox URLs.

    Systems are those of ``urls`` (any of shop, crm, news, deals); the one flow reads the shop
    and writes to every other system given.
    """
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for system, creds in credentials.items():
        for name, value in creds.items():
            # Owner-only from the start: written 0644 and narrowed after, a kill in between
            # would leave a credential every local user can read.
            write_private(secrets / f"{system}_{name}", (value + "\n").encode())
    # Kept if there is one: a store beside it is sealed under it.
    create_private(directory / "master.key", (generate_master_key() + "\n").encode())

    def refs(system: str) -> str:
        inner = ", ".join(f'{n} = "file:secrets/{system}_{n}"' for n in credentials[system])
        return "{ " + inner + " }"

    blocks = []
    for name, base_url in base_urls(urls).items():
        kind, mapping, _, extra = SYSTEMS[name]
        blocks.append(
            f'[systems.{name}]\nadapter = "{kind}"\nbase_url = "{base_url}"\n'
            f'ca_bundle = "{ca_path}"\nmapping = "{mappings / mapping}"\n'
            f"credentials = {refs(name)}\n{extra}\n"
            f"[systems.{name}.processor]\n{PROCESSORS[name]}\nagreement_signed = 2026-01-15\n"
            "agreement_review = 2099-01-15\n"
        )
    destinations = json.dumps([name for name in urls if name != "shop"])
    flow_name = "shop-to-crm" if destinations == '["crm"]' else "shop-to-all"
    text = (
        "# Written by klantsync for its sandboxes; see config.example.toml for every option.\n"
        '[store]\npath = "klantsync.db"\n\n[keys]\nsource = "file:master.key"\n'
        + _ACCOUNTABILITY
        + "\n"
        + "\n".join(blocks)
        + f'\n[[flows]]\nname = "{flow_name}"\nsource = "shop"\ndestinations = {destinations}\n'
        'schedule = "every 15m"\n\n[flows.privacy]\n'
        'purposes = ["Customer relationship management", "Newsletter", "Sales follow-up"]\n'
        'legal_basis = "contract"\nretention = "Until 2 years after the last order"\n'
    )
    config = directory / "klantsync.toml"
    config.write_text(text)
    return config


@contextlib.contextmanager
def sandboxes(
    directory: Path,
    customers: int,
    ports: dict[str, int] | None = None,
    names: tuple[str, ...] = ("shop", "crm", "news", "deals"),
) -> Iterator[tuple[dict[str, Any], Path, dict[str, str]]]:
    """Start the named sandboxes over loopback TLS; yield them, the CA path and their URLs."""
    from adapters.hubspot.sandbox import HubSpotSandbox
    from adapters.mailchimp.sandbox import MailchimpSandbox
    from adapters.pipedrive.sandbox import PipedriveSandbox
    from adapters.woocommerce.sandbox import WooCommerceSandbox
    from connector.ratelimit import RateLimit

    factories: dict[str, Callable[[], Any]] = {
        "shop": WooCommerceSandbox,
        "crm": lambda: HubSpotSandbox(rate_limit=RateLimit(190, 10)),
        "news": lambda: MailchimpSandbox(list_ids=("a1b2c3d4e5",)),
        "deals": PipedriveSandbox,
    }
    boxes: dict[str, Any] = {name: factories[name]() for name in names}
    shop = boxes["shop"]
    shop.seed_synthetic(customers, seed=7)
    # The first customers have placed an order, the first one's with a note from the shop:
    # the erasure in step 4 anonymises the order and deletes its note, the access request
    # in step 5 shows the order.
    for customer_id in range(1, min(customers, 5) + 1):
        order_id = shop.add_order(customer_id)
        if customer_id == 1:
            shop.add_order_note(order_id, "Klant belde: pakket bij de buren afgeven")
    apps = {name: box.app() for name, box in boxes.items()}
    with serve_tls(apps, directory / "tls", ports=ports) as (ca, served):
        assert ca is not None
        yield boxes, ca.ca_path, {name: app.url for name, app in served.items()}


def run_demo(console: Console, *, directory: Path | None, customers: int, as_json: bool) -> int:
    """Run the demo; return the exit status."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="klantsync-demo-") as tmp:
            return _demo(console, Path(tmp), customers, as_json)
    directory.mkdir(parents=True, exist_ok=True)
    # Absolute: the config it writes names files in it, and a config's relative paths are
    # read from the config's own folder.
    return _demo(console, directory.resolve(), customers, as_json)


def _demo(console: Console, directory: Path, customers: int, as_json: bool) -> int:
    say = (lambda *_a, **_k: None) if as_json else console.print
    with sandboxes(directory, customers) as (boxes, ca_path, urls):
        config = write_config(
            directory, urls, ca_path, {name: box.credentials() for name, box in boxes.items()}
        )
        say(f"[bold]klantsync demo[/] in {escape(str(directory))}")
        say(f"  WooCommerce shop     {urls['shop']}")
        say(f"  HubSpot CRM          {urls['crm']}   (190 requests / 10 s)")
        say(f"  Mailchimp newsletter {urls['news']}   (marketing consent required)")
        say(f"  Pipedrive CRM        {urls['deals']}   (person search 10 requests / 2 s)")
        where = f"local CA ({ca_path}); config {config}"
        say(f"  all over HTTPS with a {escape(where)}\n")
        shop = boxes["shop"]
        sample = shop.store.get(1) or {}
        say(f"Seeded {customers} synthetic customers. Each shop record has these fields:")
        say("  " + ", ".join(sorted(_leaf_names(sample))) + "\n")
        result = run_loop(_story(config, boxes, directory, _Teller(None if as_json else console)))
    if as_json:
        print(json.dumps(result, indent=2))
    failed = any(result[k]["failed"] for k in ("first_sync", "second_sync", "after_changes"))
    erased = result["erasure"]["status"] == "completed" and result["erasure"]["receipt_verified"]
    return 1 if failed or not erased or result["sync_after_erasure"]["recreated"] else 0


class _Teller:
    """Tells each step of the demo as it happens: its heading as it starts, its outcome as
    it ends, and a progress bar while it syncs (on a terminal).

    The first sync alone takes about fifteen seconds for 300 customers (Pipedrive has no
    batch write, and its Growth plan allows 40 calls per 2 s: one call per new person), so a
    terminal that showed nothing until the end would look stuck. With
    ``--json`` there is no console: the one JSON document comes at the end, alone.
    """

    def __init__(self, console: Console | None) -> None:
        self.console = console

    def heading(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def outcome(
        self, tell: Callable[Concatenate[Console, _P], None], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        if self.console is not None:
            tell(self.console, *args, **kwargs)

    def progress(self) -> contextlib.AbstractContextManager[Progress | None]:
        if self.console is None:
            return contextlib.nullcontext()
        from connector.cli_sync import progress_bar

        return progress_bar(self.console)


async def _story(
    config: Path, boxes: dict[str, Any], directory: Path, teller: _Teller
) -> dict[str, Any]:
    from connector.dsr import DsrService
    from connector.register import build_register
    from connector.register_render import render

    shop = boxes["shop"]
    async with open_runtime(config) as rt, _syncing(rt):
        flow = rt.config.flows[0].name
        teller.heading("[bold]1. First sync[/]")
        with teller.progress() as bar:
            (first,) = await rt.engine.sync(flow, progress=bar)
        received = {
            name: sorted(boxes[name].log.property_names()) for name in boxes if name != "shop"
        }
        teller.outcome(_tell_first_sync, first.as_dict(), received)

        teller.heading("[bold]2. Second sync, nothing changed[/]")
        with teller.progress() as bar:
            (second,) = await rt.engine.sync(flow, progress=bar)
        teller.outcome(_tell_sync, second.as_dict())
        counts_before = {name: _count(boxes[name]) for name in boxes if name != "shop"}

        teller.heading(
            "\n[bold]3. Three customers change their phone number, one removes it, one "
            "changes their e-mail address[/]"
        )
        emails = [shop.store.get(i)["email"] for i in range(1, 6)]
        for index, email in enumerate(emails[:3]):
            shop.touch(email, billing={"phone": f"06 9000 00{index:02d}"})
        # One removes their number in the shop: emptied where the sync wrote it.
        shop.touch(emails[3], billing={"phone": ""})
        # One customer changes their e-mail address: the same person, updated in place.
        shop.touch(emails[4], email=f"nieuw.{emails[4]}")
        with teller.progress() as bar:
            (third,) = await rt.engine.sync(flow, progress=bar)
        counts_after = {name: _count(boxes[name]) for name in boxes if name != "shop"}
        teller.outcome(_tell_changes, third.as_dict(), counts_before, counts_after)

        teller.heading("\n[bold]4. A customer asks to be forgotten[/]")
        service = DsrService(rt)
        erased = await service.erase(emails[0])
        receipt = service.receipt(erased.id) or ""
        verified = service.verify_receipt(receipt.encode()).ok if receipt else False
        held_after = {name: boxes[name].holds(emails[0]) for name in boxes}
        # What each system did, as the signed receipt states it: "verified absent" at
        # Pipedrive is a deletion the vendor can still undo for 30 days.
        parts = json.loads(receipt)["receipt"]["systems"] if receipt else []
        erasure = {
            "request": erased.id,
            "status": erased.status,
            "systems": {name: s["status"] for name, s in erased.as_dict()["systems"].items()},
            "notes": {p["system"]: p.get("note") or "" for p in parts},
            "reversible": {p["system"]: bool(p.get("reversible")) for p in parts},
            "still_held": held_after,
            "receipt_verified": verified,
            "receipt_file": _write(directory / f"receipt-{erased.id}.json", receipt),
        }
        # The shop restores last night's backup, which still holds the erased customer: the
        # next sync must stop them at the suppression list instead of re-creating them.
        shop.add_person(emails[0], "Restored", "FromBackup", "0612345678")
        with teller.progress() as bar:
            (after,) = await rt.engine.sync(flow, full=True, progress=bar)
        after_erasure = {
            "suppressed": after.suppressed,
            "recreated": any(boxes[n].holds(emails[0]) for n in boxes if n != "shop"),
        }
        teller.outcome(_tell_erasure, erasure, after_erasure)

        teller.heading("\n[bold]5. Another customer asks what we hold[/]")
        bundle_dir = directory / "access-bundle"
        access = await service.access(emails[3], bundle_dir)
        answered = {
            "request": access.id,
            "status": access.status,
            "bundle": sorted(p.name for p in bundle_dir.iterdir()) if bundle_dir.exists() else [],
        }
        teller.outcome(_tell_access, answered)

        teller.heading(
            "\n[bold]6. The processing register (verwerkingsregister), from the running config[/]"
        )
        register_file = directory / "verwerkingsregister.md"
        register_file.write_text(render(build_register(rt.config, "nl"), "md"))
        audit_entries = rt.store.counts()["audit"]
        teller.outcome(_tell_register, str(register_file), audit_entries, str(directory))
        return {
            "directory": str(directory),
            "first_sync": first.as_dict(),
            "received": received,
            "contacts": counts_before,
            "second_sync": second.as_dict(),
            "after_changes": third.as_dict(),
            "contacts_after_changes": counts_after,
            "erasure": erasure,
            "sync_after_erasure": after_erasure,
            "access": answered,
            "register": str(register_file),
            "audit_entries": audit_entries,
        }


@contextlib.asynccontextmanager
async def _syncing(rt: Runtime) -> AsyncIterator[None]:
    """The store's sync lock for the demo's syncs: `demo --dir DIR` run twice at once, or
    beside a `sync` on DIR's config, shares one store."""
    with syncing(rt.config.store_path, "demo"):
        rt.store.close_interrupted_runs()
        # Its syncs and requests run under this config, as `sync`, `run` and `dsr` do:
        # recorded first, so the trail's transfers follow the config they were made under.
        audit.record_config(rt.store, rt.config)
        yield


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _count(box: Any) -> int:
    for attr in ("contact_count", "member_count", "person_count"):
        if hasattr(box, attr):
            return int(getattr(box, attr)())
    store = getattr(box, "store", None)
    return len(getattr(store, "members", {}) or {}) if store is not None else -1


def _tell_sync(console: Console, report: dict[str, Any]) -> None:
    from connector.cli_sync import print_report

    print_report(console, _Report(report))


def _tell_first_sync(
    console: Console, report: dict[str, Any], received: dict[str, list[str]]
) -> None:
    _tell_sync(console, report)
    for name, fields in received.items():
        console.print(f"  {name} received only: {', '.join(fields)}")
    console.print(
        "  Date of birth, IP address, notes and whatever else no mapping names stayed in the "
        "shop; Mailchimp got only customers who opted in to the newsletter.\n"
    )


def _tell_changes(
    console: Console, report: dict[str, Any], before: dict[str, int], after: dict[str, int]
) -> None:
    _tell_sync(console, report)
    console.print(
        "  records per system before and after: "
        + ", ".join(f"{n} {before[n]} -> {after[n]}" for n in before)
        + " (the new address updated the existing records; no duplicates)"
    )


def _tell_erasure(console: Console, erasure: dict[str, Any], after: dict[str, Any]) -> None:
    say = console.print
    for name, status in erasure["systems"].items():
        note = erasure["notes"].get(name, "")
        undo = " (the vendor can restore it until then)" if erasure["reversible"].get(name) else ""
        say(f"  {name}: {status}" + (f": {escape(note)}{undo}" if note else ""))
    say(
        f"  request {erasure['request']}: {erasure['status']}; signed receipt "
        f"{'verified' if erasure['receipt_verified'] else 'NOT verified'} "
        f"({escape(erasure['receipt_file'])})"
    )
    stopped = counted(after["suppressed"], "erased person", "erased people")
    say(
        f"  the shop then restores a backup that still holds them: the next sync stopped "
        f"{stopped} at the suppression list; re-created "
        f"anywhere: {'yes' if after['recreated'] else 'no'}"
    )


def _tell_access(console: Console, access: dict[str, Any]) -> None:
    console.print(
        f"  request {access['request']}: {access['status']}; bundle: {', '.join(access['bundle'])}"
    )


def _tell_register(console: Console, register: str, audit_entries: int, directory: str) -> None:
    console.print(f"  {escape(register)}")
    console.print(
        f"\n{audit_entries} hash-chained audit entries recorded. Files in "
        f"{escape(directory)} (deleted on exit unless --dir was given)."
    )


class _Report(FlowReport):
    """A FlowReport rebuilt from its dict, for printing."""

    def __init__(self, data: dict[str, Any]) -> None:
        from collections import Counter

        from connector.engine import DestinationReport

        super().__init__(data["flow"], data["source"], dry_run=data["dry_run"])
        self.pulled = data["pulled"]
        self.invalid = data["invalid"]
        self.suppressed = data["suppressed"]
        self.moved = data.get("moved", 0)
        self.withheld_fields = Counter(data["withheld_fields"])
        self.unreadable_values = Counter(data.get("unreadable_values", {}))
        self.asked_fields = data.get("asked_fields")
        self.errors = list(data["errors"])
        for name, dest in data["destinations"].items():
            fields = {k: v for k, v in dest.items() if k in DestinationReport.__dataclass_fields__}
            self.destinations[name] = DestinationReport(**fields)


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


def run_sandboxes(
    console: Console, directory: Path, customers: int, *, as_json: bool = False
) -> int:
    """Serve the sandboxes on fixed ports until interrupted (for ``config.example.toml``).

    Prints the environment variables ``config.example.toml`` reads the sandboxes' credentials
    from (as ``export`` lines, or with ``as_json`` one JSON object holding them, the URLs and
    the CA), then serves until Ctrl-C. The credentials are the sandboxes' own, made up at start.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with sandboxes(directory, customers, ports=SANDBOX_PORTS) as (boxes, ca_path, served):
        urls = base_urls(served)  # as config.example.toml's base_url gives them
        env = {
            f"KLANTSYNC_{system.upper()}_{name.upper()}": value
            for system, box in boxes.items()
            for name, value in box.credentials().items()
        }
        if as_json:
            announce = {"urls": urls, "ca": str(ca_path), "env": env, "customers": customers}
            # Flushed: the process goes on serving, and a reader wants the object now.
            print(json.dumps(announce, indent=2), flush=True)
        else:
            for name, value in env.items():
                console.print(f"export {name}={value}", markup=False)
            listing = "  ".join(f"{name} {url}" for name, url in urls.items())
            console.print(f"# {listing}  CA {ca_path}", markup=False)
            console.print("# sandboxes running; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
