"""`check`: the config, mappings, TLS settings (a ``ca_bundle`` in date too) and master key
validated, compliance gaps listed, and with `--online` each system asked whether it answers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from rich.console import Console
from rich.markup import escape

from connector import compliance
from connector.cliargs import EXIT_FAILED, EXIT_OK, tell
from connector.config import Config, load_config, secret_files, secret_references
from connector.errors import ConfigError, KlantsyncError, StorePathError
from connector.flowgraph import meeting_warnings
from connector.http import redact_url
from connector.listen import listener_is_loopback
from connector.mapping import SystemMapping
from connector.model import CONSENT_FIELDS
from connector.runtime import looked_at
from connector.state import Store
from connector.storefile import store_path_problem

__all__ = ["check"]


def _check_master_key(config: Config) -> dict[str, Any]:
    """Whether the master key opens the store (ConfigError if not); a missing store is new.

    A store that opening would migrate is checked as a private copy (said on stderr): the
    first check after installing a new version, with the older daemon still running on the
    store, upgraded it in place, and that daemon refused it at its next start.
    """
    from connector.crypto import master_fingerprint
    from connector.keyset import check_master_key, check_master_key_for_new_store

    facts: dict[str, Any] = {"fingerprint": master_fingerprint(config.master_key)}
    # Checked without creating anything: a check makes no store.
    problem = store_path_problem(config.store_path)
    if problem is not None:
        raise StorePathError(config.store_path, problem)
    if not config.store_path.exists():
        # A new store is bound to the master key checked against what lies beside it already.
        check_master_key_for_new_store(config)
        facts["store"] = "not created yet"
        return facts
    with looked_at(config, tell, keyed=False, looking="check") as looked:
        store = Store(looked.store_path)
        try:
            bound = check_master_key(store, looked)
        finally:
            store.close()
    facts["store"] = "opens" if bound else "opens (not yet bound)"
    return facts


async def check(config_path: Path, args: argparse.Namespace, console: Console) -> int:
    config = load_config(config_path)
    bundle_warnings = _ca_bundles_in_date(config)
    summary: dict[str, Any] = {
        "config": str(config_path),
        "store": str(config.store_path),
        "systems": {
            name: {
                "adapter": s.adapter,
                "url": redact_url(s.base_url),
                "mapping": str(s.mapping),
                "fields_sent": _fields_sent(config, name),
                "private_ca": s.ca_bundle is not None,
            }
            for name, s in config.systems.items()
        },
        "flows": {
            f.name: {"source": f.source, "destinations": f.destinations} for f in config.flows
        },
        "online": {},
        # Worth knowing, not a failure: a config of systems only serves erasure and access.
        "warnings": (
            []
            if config.flows
            else ["no flow is configured ([[flows]]): sync and the daemon will move nobody"]
        ),
    }
    summary["warnings"] += bundle_warnings
    summary["warnings"] += _consent_nobody_gives(config)
    summary["warnings"] += meeting_warnings(config.flows)
    summary["warnings"] += _secret_files_others_read(config_path)
    summary["warnings"] += _environment_secrets_beside_credentials(config_path)
    summary["warnings"] += _metrics_refused_beyond_loopback(config)
    summary["warnings"] += _signed_urls_unknown(config)
    summary["warnings"] += _webhook_port_wordpress_refuses(config)
    summary["warnings"] += [
        f"systems.{name}.{warning}"
        for name, system in config.systems.items()
        for warning in system.check_warnings()
    ]
    summary["master_key"] = _check_master_key(config)
    gaps = compliance.check_compliance(config)
    summary["compliance_gaps"] = [gap.as_dict() for gap in gaps]
    failed = bool(gaps)
    if args.online:
        from connector.adapter import Subject
        from connector.systems import open_systems

        # Only the systems: a check opens no store, so it creates none and binds no keys.
        systems = open_systems(config)
        try:
            for name, system in systems.items():
                try:
                    await system.adapter.find(Subject(email="klantsync-check@example.invalid"))
                    await _settings_checked(system.adapter, system.mapping)
                    summary["online"][name] = "ok"
                    summary["warnings"] += await _fields_ignored(name, system.adapter)
                except KlantsyncError as exc:
                    summary["online"][name] = str(exc)
                    failed = True
                # Whether or not the calls succeeded: what their answers told is as true.
                summary["warnings"] += _noticed(system.adapter)
        finally:
            await systems.aclose()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_check(console, config_path, config, summary, gaps)
    return EXIT_FAILED if failed else EXIT_OK


async def _settings_checked(adapter: object, mapping: SystemMapping) -> None:
    """Have the adapter check its settings and its mapping against the live system, where it
    can (what a ``find`` cannot tell, such as a Mailchimp audience the account lacks, or a
    HubSpot contact property the portal lacks or lets no integration write); a
    KlantsyncError says what does not match."""
    check_settings = getattr(adapter, "check_settings", None)
    if check_settings is not None:
        await check_settings()
    check_mapping = getattr(adapter, "check_mapping", None)
    if check_mapping is not None:
        await check_mapping(mapping)


async def _fields_ignored(name: str, adapter: object) -> list[str]:
    """A warning for a source that ignores being asked for fewer fields (WooCommerce's
    ``_fields``): minimisation at the source does not happen there."""
    honoured = getattr(adapter, "fields_honoured", None)
    if honoured is None or await honoured() is not False:
        return []
    return [
        f"{name} ignores _fields: it sends whole customers, so fields no mapping reads leave "
        "it (they are dropped and counted, never sent on); update WordPress (4.9.8 or "
        "later) or the plugin that removes it"
    ]


def _noticed(adapter: object) -> list[str]:
    """What the adapter's calls found for the operator to act on (``online_warnings``,
    where it has it): Shopify answering from another API version than the configured one,
    which its adapter only logged, so neither the report nor a script reading it said so."""
    noticed = getattr(adapter, "online_warnings", None)
    return [] if noticed is None else list(noticed())


def _print_check(
    console: Console,
    config_path: Path,
    config: Config,
    summary: dict[str, Any],
    gaps: Sequence[compliance.Gap],
) -> None:
    # Names, URLs and paths come from the config and messages from vendors' errors: printed
    # as text, never read as rich markup.
    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'s' if n != 1 else ''}"

    unreachable = [name for name, result in summary["online"].items() if result != "ok"]
    problems = [count(len(gaps), "compliance gap")] if gaps else []
    if unreachable:
        problems.append(f"{count(len(unreachable), 'system')} failed the online check")
    if problems:
        # The headline must not read "ok" when the command exits 1 for what follows.
        where = escape(str(config_path))
        console.print(f"[yellow]config valid[/], but {' and '.join(problems)} (below): {where}")
    else:
        reached = "; every system answered" if summary["online"] else ""
        console.print(f"[green]ok[/]: {escape(str(config_path))} is valid{escape(reached)}")
    key = summary["master_key"]
    line(f"  master key {key['fingerprint']}: store {key['store']}")
    for name, info in summary["systems"].items():
        line(f"  system {name}: {info['adapter']} at {info['url']}; {_sends(config, name, info)}")
    for name, info in summary["flows"].items():
        line(f"  flow {name}: {info['source']} -> {', '.join(info['destinations'])}")
    for warning in summary["warnings"]:
        console.print(f"  [yellow]warning[/]: {escape(warning)}")
    for name, result in summary["online"].items():
        # A remote error already starts with the system's name; the line names it once.
        line(f"  online {name}: {result.removeprefix(f'{name}: ')}")
    if gaps:
        console.print(f"[red]compliance gaps[/] ({len(gaps)}):")
    for gap in gaps:
        line(f"  gap: {gap}")


#: How soon before a ``ca_bundle``'s certificate expires ``check`` says so.
CA_EXPIRY_WARNING = dt.timedelta(days=30)


def _ca_bundles_in_date(config: Config, now: dt.datetime | None = None) -> list[str]:
    """A warning per system whose ``ca_bundle`` holds a certificate that expires within
    :data:`CA_EXPIRY_WARNING`; a ConfigError (exit 2) where no certificate in it is valid
    now: TLS verification then refuses every call to that system, and the first sync would
    be the first to say so.

    Only dates are told, never a certificate's subject. A certificate OpenSSL loaded (the
    config load checked the bundle) that ``cryptography`` cannot read is passed over: its
    dates are unknown here.
    """
    now = now or dt.datetime.now(dt.UTC)
    problems: list[ConfigError] = []
    warned: list[str] = []
    for name, system in config.systems.items():
        if system.ca_bundle is None:
            continue
        certificates = _certificates(system.ca_bundle)
        if not certificates:
            continue
        key, where = f"systems.{name}.ca_bundle", f"CA bundle {system.ca_bundle}"
        expired = [c.not_valid_after_utc for c in certificates if c.not_valid_after_utc < now]
        early = [c.not_valid_before_utc for c in certificates if c.not_valid_before_utc > now]
        ends = [
            c.not_valid_after_utc
            for c in certificates
            if c.not_valid_before_utc <= now <= c.not_valid_after_utc
        ]
        if not ends:
            if not early:
                said = f"every certificate in it has expired, the last on {_day(max(expired))}"
            elif not expired:
                said = f"no certificate in it is valid before {_day(min(early))}"
            else:
                said = (
                    f"no certificate in it is valid now: the last expired on "
                    f"{_day(max(expired))}, the next is valid from {_day(min(early))}"
                )
            problem = (
                f"{where}: {said} (UTC), so every call to {name} fails its certificate "
                "check; put the CA's current certificate in the bundle"
            )
            problems.append(ConfigError(str(config.path), key, problem))
            continue
        soon = sorted(end for end in ends if end - now < CA_EXPIRY_WARNING)
        if not soon:
            continue
        if len(certificates) == 1:
            which = "its certificate expires"
        elif len(soon) == 1:
            which = f"1 of its {len(certificates)} certificates expires"
        else:
            which = f"{len(soon)} of its {len(certificates)} certificates expire"
        warned.append(
            f"{key}: {where}: {which} within {CA_EXPIRY_WARNING.days} days, on "
            f"{_day(soon[0])} (UTC): calls to a server whose certificate chains to it fail "
            "from then; put the CA's renewed certificate in the bundle"
        )
    if problems:
        problems[0].also = tuple(problems[1:])
        raise problems[0]
    return warned


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def _certificates(bundle: Path) -> list[x509.Certificate]:
    """The certificates of a PEM bundle that ``cryptography`` reads, each on its own: read
    whole (``load_pem_x509_certificates``), one it refuses hid the dates of all the others.
    Public root bundles hold some it warns of (a serial number that is not positive), which
    say nothing of their dates."""
    try:
        data = bundle.read_bytes()
    except OSError:
        return []  # the config load said what is wrong with it
    found = []
    for block in _PEM_CERTIFICATE.findall(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                found.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return found


def _day(moment: dt.datetime) -> str:
    return moment.date().isoformat()


def _secret_files_others_read(config_path: Path) -> list[str]:
    """A warning for each secret file (``file:``, or a ``credential:``'s where the command
    was given credentials: the master key, a credential, a webhook secret, the admin token)
    that every user may read: the master key opens every sealed record in the store, and a
    token is the system's whole account."""
    warnings = []
    for key, path in secret_files(config_path):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue  # loading the config said what is wrong with it
        if mode & 0o007:
            # Others, not the group: root:klantsync 0640 is how a service user reads a secret
            # in a folder root owns, and "chmod 600" would lock the service out.
            warnings.append(
                f"{key}: secret file {path} may be read by every user (mode {mode:o}); "
                "chmod o-rwx it (600, or 640 with the service's group)"
            )
    return warnings


def _environment_secrets_beside_credentials(config_path: Path) -> list[str]:
    """A warning for each ``env:`` secret where the command was given systemd credentials
    (as the unit and the README's kss give them): the daemon then takes that secret from
    its environment, which any process of its user reads while it runs and whatever it
    starts inherits, where a credential of its own keeps it out."""
    if not os.environ.get("CREDENTIALS_DIRECTORY", "").strip():
        return []  # no unit loads credentials: env: is as good as the alternatives here
    return [
        f"{key}: an env: secret, in the daemon's environment (any process of its user reads "
        "it there); this command was given systemd credentials: put it in "
        "/etc/klantsync/<client>/secrets/ and name it credential:secrets_<file>"
        for key, ref in secret_references(config_path)
        if isinstance(ref, str) and ref.startswith("env:")
    ]


def _metrics_refused_beyond_loopback(config: Config) -> list[str]:
    """A warning where the daemon listens beyond loopback without ``daemon.metrics_token``:
    it then answers ``/metrics`` 403 (connector/httpapp.py), so a scrape set up without the
    token finds nothing, and nothing else would say why."""
    settings = config.daemon
    if settings.metrics_token is not None or listener_is_loopback(settings.listen):
        return []
    return [
        f"daemon.listen {settings.listen} is beyond loopback and daemon.metrics_token is "
        "not set: /metrics is refused there (403) until it is"
    ]


#: Adapters whose webhook signature covers the URL the vendor called (HubSpot's v3), not
#: only the body.
_SIGNS_THE_URL = frozenset({"hubspot"})


def _signed_urls_unknown(config: Config) -> list[str]:
    """A warning per system whose webhooks sign the https URL the vendor called, where the
    daemon serves plain HTTP (behind a TLS-terminating proxy) and ``daemon.public_url`` is
    not set: the URL the daemon sees (http://127.0.0.1:...) is then not the one signed, and
    every delivery is refused as badly signed, with nothing else saying why."""
    settings = config.daemon
    if settings.public_url is not None or settings.tls_cert is not None:
        return []
    return [
        f"systems.{name}.webhooks: {system.adapter} signs the https URL it calls, and the "
        "daemon serves plain HTTP: behind a TLS proxy, set daemon.public_url to the URL "
        "registered with it, or every delivery fails its signature"
        for name, system in config.systems.items()
        if system.adapter in _SIGNS_THE_URL and system.webhooks is not None
    ]


#: Adapters whose vendor posts webhooks with WordPress's HTTP API (``wp_safe_remote_request``),
#: which refuses a URL on any port but these (``http_allowed_safe_ports``) unless the site
#: itself is served on that host and port.
_WORDPRESS_DELIVERS = frozenset({"woocommerce"})
_WORDPRESS_SAFE_PORTS = (80, 443, 8080)


def _webhook_port_wordpress_refuses(config: Config) -> list[str]:
    """A warning per WooCommerce system with webhooks where the URL the shop would call
    has a port WordPress does not deliver to: ``daemon.public_url``'s, or, with the daemon
    terminating TLS itself and no ``public_url``, ``daemon.listen``'s.

    WooCommerce answers the saving of such a webhook "Delivery URL cannot be reached: A
    valid URL was not provided", and a webhook saved before fails each delivery until it
    is disabled: nothing names the port. Behind a proxy with no ``public_url`` the port the
    shop calls is not known here, and nothing is said.
    """
    settings = config.daemon
    if settings.public_url is not None:
        where, parts = "daemon.public_url", urlsplit(settings.public_url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return []  # refused at load
    elif settings.tls_cert is not None:
        where, port = "daemon.listen", int(settings.listen.rpartition(":")[2])
    else:
        return []
    if port in _WORDPRESS_SAFE_PORTS:
        return []
    return [
        f"systems.{name}.webhooks: WooCommerce (WordPress) delivers webhooks to ports 80, "
        f"443 and 8080 alone, and {where} makes it port {port}: the shop refuses the "
        "delivery URL (unless the shop itself is served on that port); serve the daemon on "
        "443 or 8080, or behind a proxy on 443 with daemon.public_url set to that URL"
        for name, system in config.systems.items()
        if system.adapter in _WORDPRESS_DELIVERS and system.webhooks is not None
    ]


def _consent_nobody_gives(config: Config) -> list[str]:
    """A warning for each destination whose consent gate its flow's source never opens.

    A mapping with ``requires_consent`` sends only people who gave that consent, and the
    consent is read from the source: a source mapping that reads no such field lets nobody
    through that flow, and tells of nobody's withdrawal either, so the flow sends the
    destination nothing at all, ever, without a single error (another flow's source may
    still say who consents).
    """
    warnings = []
    for flow in config.flows:
        source = config.mappings[flow.source]
        for name in flow.destinations:
            purpose = config.mappings[name].requires_consent
            if purpose is None or source.reads_consent(purpose):
                continue
            warnings.append(
                f"flow {flow.name}: {name} takes only people with {purpose} consent "
                f"(requires_consent), but {flow.source}'s mapping reads no "
                f"{CONSENT_FIELDS[purpose]}: nobody will be sent to {name} by this flow, "
                f"neither their data nor a withdrawal of consent"
            )
    return warnings


def _fields_sent(config: Config, name: str) -> list[str]:
    """What the system receives: a flow's destination the e-mail with every write, whatever
    its field's direction says (as the register lists it); any other system the fields a
    correction may write there."""
    mapping = config.mappings[name]
    if any(name in flow.destinations for flow in config.flows):
        return [f.canonical for f in mapping.sent_fields()]
    return mapping.outbound_fields


def _sends(config: Config, name: str, info: dict[str, Any]) -> str:
    """What the system is sent; a system no flow delivers to is a source only."""
    if info["fields_sent"]:
        return f"sends {', '.join(info['fields_sent'])}"
    if any(name in flow.destinations for flow in config.flows):
        return "sends nothing (its mapping allows no field)"
    return "sends nothing (source only)"
