"""The configuration file: pydantic models, secret references, clear errors.

``load_config(path)`` reads the TOML, resolves ``env:``/``file:``/``credential:`` secret
references (only the master key's for a command that calls no system, see ``secrets``),
validates every table against its model (unknown keys are errors), applies the TLS policy to
every URL, checks flows against systems and adapters' capabilities, and loads each system's
mapping. Any problem raises :class:`~connector.errors.ConfigError` naming the file, the dotted
key and what is wrong; the CLI turns that into exit status 2. Relative paths are relative to the
config file's folder.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator

from connector.adapter import AdapterSpec
from connector.configfile import Problems, pydantic_error, read_toml
from connector.crypto import decode_master_key
from connector.errors import ConfigError
from connector.http import ca_bundle_problem, check_url, server_pair_problem
from connector.listen import listen_problem, listener_is_loopback, listeners_overlap
from connector.mapping import SystemMapping, load_mapping
from connector.privacy import ControllerSettings, FlowPrivacy, PrivacySettings, RetentionSettings
from connector.secrets import DeferredSecret, credential_file, resolve_secret
from connector.settings import DAY, HOUR, ConfigPath, StrictModel, SystemSettings
from connector.smallfile import unfit

__all__ = [
    "Config",
    "DaemonSettings",
    "FlowSettings",
    "Schedule",
    "load_config",
    "parse_schedule",
    "secret_files",
    "secret_references",
]

_TOP_KEYS = {
    "store",
    "keys",
    "development",
    "systems",
    "flows",
    "daemon",
    "sync",
    "logging",
    "controller",
    "privacy",
    "retention",
}

#: The secret references a system's ``webhooks`` table holds: the secret deliveries are
#: verified with, and the one it replaced, taken too while the vendor still signs with it.
WEBHOOK_SECRETS = ("secret", "previous_secret")


@dataclass(frozen=True)
class Schedule:
    """A flow's schedule: a fixed interval or a cron expression."""

    text: str
    interval_seconds: float | None = None
    cron: str | None = None

    def allowed_since(self, since: float) -> float:
        """Seconds after ``since`` (a success, or the daemon's start) within which a flow is
        ready: until two runs came due after it and neither succeeded.

        An interval's is twice the interval. A cron's is counted on its own times: twice the
        gap between its first two runs read "*/15 9-17 * * 1-5" as due every 15 minutes at
        night and at weekends too, and /readyz said unready every night.
        """
        if self.interval_seconds is not None:
            return 2 * self.interval_seconds
        trigger = cron_trigger(self.cron or "* * * * *")
        start = dt.datetime.fromtimestamp(since, dt.UTC) + dt.timedelta(microseconds=1)
        first = trigger.get_next_fire_time(None, start)
        second = (
            trigger.get_next_fire_time(first, first + dt.timedelta(seconds=1))
            if first is not None
            else None
        )
        if second is None:
            return math.inf  # a flow that never runs again is never overdue
        return float((second - start).total_seconds())

    @property
    def nominal_seconds(self) -> float:
        """Typical seconds between runs (the gap between a cron's first two runs)."""
        if self.interval_seconds is not None:
            return self.interval_seconds
        trigger = cron_trigger(self.cron or "* * * * *")
        first = trigger.get_next_fire_time(None, dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
        second = (
            trigger.get_next_fire_time(first, first + dt.timedelta(seconds=1))
            if first is not None
            else None
        )
        if first is None or second is None:
            # parse_schedule refuses such a cron; a Schedule built by hand must still not
            # turn /readyz into a 500: a flow that never runs is never overdue.
            return math.inf
        return float((second - first).total_seconds())


_EVERY = re.compile(r"^every\s+(\d+)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest interval. Far beyond it the scheduler's date arithmetic overflows (an
#: OverflowError when the daemon starts), and no flow needs to wait longer than a year.
MAX_INTERVAL_SECONDS = 366 * 86400
#: A cron must fire within this window (four years and a day: long enough for a leap day).
CRON_HORIZON = dt.timedelta(days=4 * 366)


def parse_schedule(text: str) -> Schedule:
    """``"every 15m"`` or a five-field cron expression; raises ``ValueError`` if neither.

    An interval longer than a year, or a cron that matches no time within four years
    (``"0 0 31 2 *"``, the 31st of February), is refused: either would pass a check and then
    break the daemon.
    """
    text = text.strip()
    match = _EVERY.match(text)
    if match:
        seconds = int(match.group(1)) * _UNIT[match.group(2)]
        if seconds <= 0:
            raise ValueError("interval must be positive")
        if seconds > MAX_INTERVAL_SECONDS:
            raise ValueError("interval must be at most a year (every 366d)")
        return Schedule(text, interval_seconds=float(seconds))
    if len(text.split()) == 5:
        trigger = cron_trigger(text)  # ValueError when malformed
        start = dt.datetime.now(dt.UTC)
        fires = trigger.get_next_fire_time(None, start)
        if fires is None or fires - start > CRON_HORIZON:
            raise ValueError("cron expression matches no time within four years; it never runs")
        return Schedule(text, cron=text)
    raise ValueError('must be "every <n>s|m|h|d" or a five-field cron expression')


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(text: str) -> Any:
    """An APScheduler trigger for a five-field cron expression, days numbered as crontab's.

    APScheduler's ``from_crontab`` keeps its own numbering of the day-of-week field (0 is
    Monday), where crontab's 0 and 7 are Sunday: "0 3 * * 0" ran on Mondays and
    "0 9 * * 1-5" from Tuesday to Saturday. The field is rewritten as day names first. A
    day of the month and a day of the week both given match as crontab matches them:
    either one.
    """
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, weekday = text.split()
    days = _weekday_names(weekday)

    def trigger(day_field: str, weekday_field: str) -> Any:
        return CronTrigger.from_crontab(
            f"{minute} {hour} {day_field} {month} {weekday_field}", timezone="UTC"
        )

    if not day.startswith("*") and not weekday.startswith("*"):
        # crontab(5): with both day fields restricted, a time matching either runs
        # ("0 3 1 * 1": the 1st of the month and every Monday). APScheduler asks for both.
        return OrTrigger([trigger(day, "*"), trigger("*", days)])
    return trigger(day, days)


def _weekday_names(field: str) -> str:
    """A crontab day-of-week field (numbers 0-7, names, ranges, steps, lists) as names."""
    if field == "*":
        return field
    days: list[int] = []
    for part in field.lower().split(","):
        spec, slash, step_text = part.partition("/")
        if slash and not step_text.isdecimal():
            raise ValueError(f"day-of-week step must be a whole number: {part!r}")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step must be positive: {part!r}")
        if spec == "*":
            first, last = 0, 6
        else:
            # Numbered 0 to 7 as crontab numbers them (7 is Sunday again, "5-7" Friday to
            # Sunday, "7-7" Sunday alone), and named only then: a 7 read as 0 at once would
            # make "7-7" 0 to 7, every day. "N/step" runs from N to the last day, 7, as
            # crontab reads it: "1/2" is Monday, Wednesday, Friday and Sunday, "7/2" Sunday.
            low, dash, high = spec.partition("-")
            if dash and not high:
                # Crontab refuses "1-" as the minute and hour fields do here; read as
                # Monday alone, "1-5" with its 5 lost ran once a week and passed `check`.
                raise ValueError(f"day-of-week range has no end: {part!r}")
            first = _weekday(low)
            last = _weekday(high) if high else (7 if step_text else first)
            if last < first:
                raise ValueError(f"day-of-week range runs backwards: {part!r}")
        days += [day % 7 for day in range(first, last + 1, step)]
    return ",".join(_DAY_NAMES[day] for day in sorted(set(days)))


def _weekday(text: str) -> int:
    """A day of the week as crontab numbers it, 0 to 7 (both Sunday); a name as 0 to 6."""
    text = text.strip()
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    if text.isdecimal() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"unknown day of the week {text!r}")


class StoreSettings(StrictModel):
    """``[store]``: where the state lives."""

    path: ConfigPath = Path("var/klantsync.db")

    @field_validator("path", mode="before")
    @classmethod
    def _a_file(cls, value: Any) -> Any:
        # The store is an SQLite file. A database URL (postgresql://...) read as a path
        # became a local file in a folder named "postgresql:", one per replica, silently;
        # so did a reference written as keys.source is ("file:state/k.db", "env:NAME") and
        # SQLite's own URI form ("sqlite:..."). One letter before the colon is a drive.
        if not isinstance(value, str):
            return value
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            raise ValueError(
                "is a URL; the store is an SQLite file on this machine: give its path "
                '(e.g. "var/klantsync.db")'
            )
        if value.startswith("~"):
            # No shell reads the config: "~/k.db" was a store in a folder named "~" beside
            # the config, where backup, status and monitoring of the real one saw none.
            raise ValueError(
                "starts with ~, which is not expanded to a home folder: give the path from /, "
                "or relative to the config file's folder"
            )
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):", value)
        if scheme:
            raise ValueError(
                f'starts with "{scheme.group(1)}:" as a reference or URI does; store.path is '
                'a plain path to the SQLite file on this machine (e.g. "var/klantsync.db")'
            )
        if value.endswith("/"):
            # Read as a path, "state/" lost its slash and became a store file named
            # "state"; "/" named no file at all.
            raise ValueError(
                "ends with /, so it names a folder: give the store file's path in it (e.g. "
                '"var/klantsync.db")'
            )
        return value


class KeySettings(StrictModel):
    """``[keys]``: the master key reference (``env:NAME``, ``file:PATH`` or ``credential:NAME``)."""

    source: str


class DevelopmentSettings(StrictModel):
    """``[development]``: switches that must stay off in production."""

    allow_insecure_loopback: bool = False


class SyncSettings(StrictModel):
    """``[sync]``: delivery tuning."""

    retry_attempts: int = Field(default=6, ge=1, le=20)
    retry_base_seconds: float = Field(default=0.5, ge=0, le=HOUR)
    retry_max_seconds: float = Field(default=30.0, gt=0, le=DAY)


class LoggingSettings(StrictModel):
    """``[logging]``: level and format (``auto``: readable on a terminal, JSON otherwise)."""

    level: str = "INFO"
    format: str = "auto"

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in {"auto", "json", "console"}:
            raise ValueError('must be "auto", "json" or "console"')
        return value


class FlowSettings(StrictModel):
    """``[[flows]]``: one source feeding one or more destinations on a schedule."""

    name: str
    source: str
    destinations: list[str] = Field(min_length=1)
    schedule: str = "every 15m"
    privacy: FlowPrivacy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # Said as system names' rule is; the pattern itself, in pydantic's words, was a
        # regular expression to decipher.
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
            raise ValueError(
                "flow names use lower-case letters, digits, - and _, beginning with a letter "
                'or digit (e.g. "shop-to-crm")'
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)


class DaemonSettings(StrictModel):
    """``[daemon]``: the service's listeners, the admin token and the metrics token.

    Listeners bind loopback by default, behind a TLS-terminating proxy. To listen on another
    address the daemon must terminate TLS itself (``tls_cert`` and ``tls_key``).
    """

    listen: str = "127.0.0.1:8787"
    admin_listen: str = "127.0.0.1:8788"
    admin_token: SecretStr | None = None
    #: The bearer token ``/metrics`` asks for; without it, the metrics are served on a
    #: loopback listener only (see :mod:`connector.httpapp`).
    metrics_token: SecretStr | None = None
    public_url: str | None = None  # the https URL vendors call (they sign it), behind a proxy
    tls_cert: ConfigPath | None = None
    tls_key: ConfigPath | None = None

    @field_validator("listen", "admin_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        # Checked before whether it is loopback: " 127.0.0.1:8787" was refused as listening
        # beyond loopback without TLS, sending the operator to set up TLS for a blank.
        problem = listen_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration."""

    path: Path
    store_path: Path
    master_key: bytes
    development: DevelopmentSettings
    sync: SyncSettings
    logging: LoggingSettings
    systems: dict[str, SystemSettings]
    mappings: dict[str, SystemMapping]
    flows: list[FlowSettings]
    daemon: DaemonSettings
    controller: ControllerSettings | None = None
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def base_dir(self) -> Path:
        """What relative paths in the config are relative to: the folder of the file itself,
        a symlink followed (as :func:`load_config` reads them), not the folder of a link."""
        return self.path.resolve().parent

    def flow(self, name: str) -> FlowSettings:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise ConfigError(str(self.path), "flows", f"no flow named {name!r}")


def secret_files(path: Path, env: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """Each secret file the config at ``path`` names (the master key, a credential, a
    webhook secret, the admin and metrics tokens): its key in the config, and the file, a
    ``file:`` path read as :func:`load_config` reads it, or a ``credential:`` one's in the
    credentials folder ``env`` gives (:func:`connector.secrets.credential_file`). For
    ``check`` (who may read them) and ``backup`` (never to be written over)."""
    base = path.resolve().parent
    found: list[tuple[str, Path]] = []
    for key, ref in secret_references(path):
        if not isinstance(ref, str):
            continue
        if ref.startswith("file:"):
            found.append((key, _resolve_path(base, Path(ref[5:].strip()))))
        elif (credential := credential_file(ref, env)) is not None:
            found.append((key, credential))
    return found


def secret_references(path: Path) -> list[tuple[str, Any]]:
    """Each secret reference the config at ``path`` holds, by its key, as written (the
    master key's, the systems' credentials and webhook secrets, the daemon's tokens)."""
    data = read_toml(path, "config file")
    keys, daemon = data.get("keys"), data.get("daemon")
    references: list[tuple[str, Any]] = [
        ("keys.source", keys.get("source") if isinstance(keys, dict) else None),
        ("daemon.admin_token", daemon.get("admin_token") if isinstance(daemon, dict) else None),
        (
            "daemon.metrics_token",
            daemon.get("metrics_token") if isinstance(daemon, dict) else None,
        ),
    ]
    systems = data.get("systems")
    for name, system in (systems if isinstance(systems, dict) else {}).items():
        if not isinstance(system, dict):
            continue
        credentials = system.get("credentials")
        for cred, ref in (credentials if isinstance(credentials, dict) else {}).items():
            references.append((f"systems.{name}.credentials.{cred}", ref))
        hooks = system.get("webhooks")
        if isinstance(hooks, dict):
            for secret in WEBHOOK_SECRETS:
                references.append((f"systems.{name}.webhooks.{secret}", hooks.get(secret)))
    return [(key, ref) for key, ref in references if ref is not None]


def _table(data: Mapping[str, Any], key: str, file: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(file, key, "must be a table")
    return dict(value)


def _resolve_path(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else base / value


def load_config(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    registry: Mapping[str, AdapterSpec] | None = None,
    secrets: bool = True,
) -> Config:
    """Load and validate ``path``; raise :class:`ConfigError` if anything is wrong.

    Every problem found is told at once: the error raised is the first, and its ``also``
    holds the others (one per table, system or flow), so an operator fixes them in one go
    rather than one ``check`` at a time. A flow naming a system that is itself wrong is
    checked no further, as what it would say follows from that system's problem.

    ``secrets``: resolve the systems' credentials and webhook secrets and the daemon's tokens
    now, as a command that uses them wants (one missing is an error before it starts).
    False, for a command that calls no system: each is kept as its reference and resolved
    when first used (:class:`~connector.secrets.DeferredSecret`), so the command runs
    without the secrets only the daemon is given. The master key is resolved either way.
    """
    if registry is None:
        from adapters.registry import REGISTRY

        registry = REGISTRY
    file = str(path)
    data = read_toml(path, "config file")  # first: it says what is wrong with the name too
    base = path.resolve().parent
    problems = Problems()
    for key in data:
        if key not in _TOP_KEYS:
            problems.add(
                ConfigError(file, key, f"unknown key; expected one of {sorted(_TOP_KEYS)}")
            )

    def model(cls: type[StrictModel], key: str, raw: Mapping[str, Any]) -> Any:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise pydantic_error(file, key, exc) from None

    def table(cls: type[StrictModel], key: str) -> Any:
        return problems.attempt(lambda: model(cls, key, _table(data, key, file)))

    store: StoreSettings | None = table(StoreSettings, "store")
    # The other checks go on with the switch off: what they say of an http:// URL is true
    # until the switch is given as it should be.
    development: DevelopmentSettings = (
        table(DevelopmentSettings, "development") or DevelopmentSettings()
    )
    sync: SyncSettings | None = table(SyncSettings, "sync")
    logging_settings: LoggingSettings | None = table(LoggingSettings, "logging")

    def master() -> bytes:
        keys: KeySettings = model(KeySettings, "keys", _table(data, "keys", file))
        text = resolve_secret(keys.source, file=file, key="keys.source", base_dir=base, env=env)
        try:
            return decode_master_key(text)
        except ValueError as exc:
            raise ConfigError(file, "keys.source", f"master key {exc}") from None

    master_key = problems.attempt(master)

    def daemon_settings() -> DaemonSettings:
        daemon_raw = _table(data, "daemon", file)
        for token in ("admin_token", "metrics_token"):
            if token in daemon_raw:
                daemon_raw[token] = _secret(
                    daemon_raw[token],
                    file=file,
                    key=f"daemon.{token}",
                    base=base,
                    env=env,
                    now=secrets,
                )
        daemon: DaemonSettings = model(DaemonSettings, "daemon", daemon_raw)
        return _check_daemon(daemon, file, base, development)

    daemon = problems.attempt(daemon_settings)
    controller: ControllerSettings | None = (
        table(ControllerSettings, "controller") if "controller" in data else None
    )
    privacy: PrivacySettings | None = table(PrivacySettings, "privacy")
    retention: RetentionSettings | None = table(RetentionSettings, "retention")

    systems_raw = problems.attempt(lambda: _table(data, "systems", file))
    if systems_raw == {}:
        problems.add(ConfigError(file, "systems", "no systems configured"))
    systems: dict[str, SystemSettings] = {}
    mappings: dict[str, SystemMapping] = {}
    for name, raw in (systems_raw or {}).items():

        def system(name: str = name, raw: Any = raw) -> tuple[SystemSettings, SystemMapping]:
            settings = _load_system(name, raw, file, base, registry, development, env, secrets)
            try:
                mapping = load_mapping(settings.mapping)
            except ConfigError as exc:
                raise _in_mapping(exc, name, file) from None
            _check_mapping_kind(name, settings, mapping, file)
            return settings, mapping

        loaded = problems.attempt(system)
        if loaded is not None:
            systems[name], mappings[name] = loaded

    flows_raw = data.get("flows", [])
    if not isinstance(flows_raw, list):
        problems.add(ConfigError(file, "flows", "must be an array of tables ([[flows]])"))
        flows_raw = []
    flows: list[FlowSettings] = []
    for index, raw in enumerate(flows_raw):
        key = f"flows[{index}]"
        flow: FlowSettings | None = problems.attempt(partial(model, FlowSettings, key, raw))
        if flow is None:
            continue
        named = [flow.source, *flow.destinations]
        if any(n in (systems_raw or {}) and n not in systems for n in named):
            continue  # a system of its own problem, told above
        whole = partial(_check_flow_whole, flow, index, file, systems, registry, mappings)
        if problems.attempt(whole) is None:
            continue
        if any(f.name == flow.name for f in flows):
            problems.add(
                ConfigError(file, f"flows[{index}].name", f"duplicate flow name {flow.name!r}")
            )
            continue
        flows.append(flow)

    problems.raise_any()
    assert store is not None and sync is not None and logging_settings is not None
    assert master_key is not None and daemon is not None
    assert privacy is not None and retention is not None
    return Config(
        path=path,
        store_path=_resolve_path(base, store.path),
        master_key=master_key,
        development=development,
        sync=sync,
        logging=logging_settings,
        systems=systems,
        mappings=mappings,
        flows=flows,
        daemon=daemon,
        controller=controller,
        privacy=privacy,
        retention=retention,
    )


def _check_flow_whole(
    flow: FlowSettings,
    index: int,
    file: str,
    systems: Mapping[str, SystemSettings],
    registry: Mapping[str, AdapterSpec],
    mappings: Mapping[str, SystemMapping],
) -> bool:
    """A flow checked against the systems it names; True, or a ConfigError."""
    _check_flow(flow, index, file, systems, registry)
    _check_source_reads_email(flow, index, file, mappings)
    return True


def _load_system(
    name: str,
    raw: Any,
    file: str,
    base: Path,
    registry: Mapping[str, AdapterSpec],
    development: DevelopmentSettings,
    env: Mapping[str, str] | None,
    secrets: bool,
) -> SystemSettings:
    key = f"systems.{name}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ConfigError(file, key, "system names use lower-case letters, digits, - and _")
    if not isinstance(raw, dict):
        raise ConfigError(file, key, "must be a table")
    raw = dict(raw)
    kind = raw.get("adapter")
    if kind is None:
        raise ConfigError(file, f"{key}.adapter", "required key is missing")
    if not isinstance(kind, str):
        # There, as a number, a list or a table: "missing" sent the operator to add it.
        raise ConfigError(
            file,
            f"{key}.adapter",
            f'must be the name of an adapter in quotes, one of {sorted(registry)} (e.g. "hubspot")',
        )
    spec = registry.get(kind)
    if spec is None:
        raise ConfigError(
            file, f"{key}.adapter", f"unknown adapter {kind!r}; known: {sorted(registry)}"
        )
    credentials = raw.get("credentials", {})
    if not isinstance(credentials, dict):
        raise ConfigError(file, f"{key}.credentials", "must be a table of secret references")
    takes = spec.settings_model.required_credentials
    for cred in credentials:
        if cred not in takes:
            # A typo ("tokn" beside "token") is refused like any other unknown key; kept, it
            # was resolved (its secret read) and never used.
            raise ConfigError(
                file,
                f"{key}.credentials.{cred}",
                f"unknown credential; the {kind} adapter takes {', '.join(takes)}",
            )
    raw["credentials"] = {
        cred: _secret(
            ref, file=file, key=f"{key}.credentials.{cred}", base=base, env=env, now=secrets
        )
        for cred, ref in credentials.items()
    }
    webhooks = raw.get("webhooks")
    if isinstance(webhooks, dict):
        raw["webhooks"] = dict(webhooks)
        # The one replaced too, while the vendor still signs with it (a rotation).
        for name in WEBHOOK_SECRETS:
            if name in webhooks:
                raw["webhooks"][name] = _secret(
                    webhooks[name],
                    file=file,
                    key=f"{key}.webhooks.{name}",
                    base=base,
                    env=env,
                    now=secrets,
                    sent=False,  # it keys a signature; a shop admin may have typed any text
                )
    try:
        settings = spec.settings_model.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error(file, key, exc) from None
    for cred in spec.settings_model.required_credentials:
        if cred not in settings.credentials:
            raise ConfigError(file, f"{key}.credentials.{cred}", "required credential is missing")
    _check_deadline(settings, file, key)
    problem = check_url(
        settings.base_url, allow_insecure_loopback=development.allow_insecure_loopback
    )
    if problem:
        raise ConfigError(file, f"{key}.base_url", f"URL {problem}")
    if settings.https_only and urlsplit(settings.base_url).scheme == "http":
        # Passed the TLS policy on loopback with the development switch, and still no
        # call could get through: refused now, not with a 401 at every call of a sync.
        raise ConfigError(file, f"{key}.base_url", f"URL uses http://; {settings.https_only}")
    mapping = _resolve_path(base, settings.mapping)
    # The config's key is what to fix, as for a ca_bundle: reported by the mapping's
    # loader, the error named a file that is not there, and no key at all.
    _readable_file(mapping, file, f"{key}.mapping", "mapping file", "mapping", MAX_MAPPING_BYTES)
    updates: dict[str, Any] = {"mapping": mapping}
    if settings.ca_bundle is not None:
        ca = _resolve_path(base, settings.ca_bundle)
        _readable_file(ca, file, f"{key}.ca_bundle", "CA bundle", "CA bundle", MAX_CA_BUNDLE_BYTES)
        # Loaded now, so a file that is not a PEM bundle fails `check`, not the first sync.
        problem = ca_bundle_problem(ca)
        if problem:
            raise ConfigError(file, f"{key}.ca_bundle", problem)
        updates["ca_bundle"] = ca
    return settings.model_copy(update=updates)


def _secret(
    reference: object,
    *,
    file: str,
    key: str,
    base: Path,
    env: Mapping[str, str] | None,
    now: bool,
    sent: bool = True,
) -> str | SecretStr:
    """The secret ``reference`` points at, resolved ``now`` or when it is first used."""

    def resolve() -> str:
        return resolve_secret(reference, file=file, key=key, base_dir=base, env=env, sent=sent)

    return resolve() if now else DeferredSecret(resolve)


def _check_deadline(settings: SystemSettings, file: str, key: str) -> None:
    """Refuse a call's deadline shorter than its own timeout.

    The deadline bounds the whole call and the timeout each wait within it: below the
    timeout, the deadline cut every slow wait short and ``timeout_seconds`` meant nothing.
    """
    deadline, timeout = settings.deadline_seconds, settings.timeout_seconds
    if deadline is not None and deadline < timeout:
        raise ConfigError(
            file,
            f"{key}.deadline_seconds",
            f"{deadline:g} is shorter than timeout_seconds ({timeout:g}): the deadline bounds "
            "the whole call, each of whose waits the timeout bounds; give at least "
            "timeout_seconds, or leave it out for four times timeout_seconds",
        )


def _check_mapping_kind(
    name: str, settings: SystemSettings, mapping: SystemMapping, file: str
) -> None:
    """Refuse a mapping written for another kind of system than the one that uses it, or
    one holding what that kind of system cannot be asked for.

    A WooCommerce shop given mappings/hubspot.toml loaded and passed `check`: its paths name
    no place in a WooCommerce customer, so every record read "without a usable e-mail" and
    every write went to fields the shop does not have. The file's ``system`` key says which
    kind it is for; a mapping without one is not judged by it. The system's own rule for its
    mappings (:meth:`SystemSettings.check_mapping`) is applied here too: left to the
    adapter, a Shopify path no GraphQL field can have passed `check` and failed every sync.
    """
    if mapping.system is not None and mapping.system != settings.adapter:
        raise ConfigError(
            file,
            f"systems.{name}.mapping",
            f"{mapping.path} is a mapping for {mapping.system!r} (its system key), and "
            f"systems.{name} is a {settings.adapter!r} system; name a {settings.adapter} "
            f"mapping (such as mappings/{settings.adapter}.toml)",
        )
    try:
        settings.check_mapping(mapping)
    except ConfigError as exc:
        raise _in_mapping(exc, name, file) from None


def _in_mapping(exc: ConfigError, name: str, file: str) -> ConfigError:
    """A mapping's error, its own file and key first; which config line chose that file is
    what someone editing the config needs next. Each of its other problems (``also``) is
    said so too, and kept: rewrapped alone, a mapping with three mistakes told one."""

    def said(one: ConfigError) -> ConfigError:
        chosen = f"(the mapping named by systems.{name}.mapping in {file})"
        return ConfigError(one.file, one.key, f"{one.problem} {chosen}")

    first = said(exc)
    first.also = tuple(said(other) for other in exc.also)
    return first


def _check_daemon(
    daemon: DaemonSettings, file: str, base: Path, development: DevelopmentSettings
) -> DaemonSettings:
    has_tls = daemon.tls_cert is not None and daemon.tls_key is not None
    if (daemon.tls_cert is None) != (daemon.tls_key is None):
        raise ConfigError(file, "daemon.tls_cert", "tls_cert and tls_key go together")
    for key, listen in (
        ("daemon.listen", daemon.listen),
        ("daemon.admin_listen", daemon.admin_listen),
    ):
        if not listener_is_loopback(listen) and not has_tls:
            raise ConfigError(
                file,
                key,
                "listens beyond loopback without TLS; set daemon.tls_cert and daemon.tls_key, "
                "or listen on 127.0.0.1 behind a TLS-terminating proxy",
            )
    if listeners_overlap(daemon.listen, daemon.admin_listen):
        # The daemon binds daemon.listen first: `run` failed on the admin listener with
        # "Address already in use", after `check` had said the config was valid.
        raise ConfigError(
            file,
            "daemon.admin_listen",
            f"{daemon.admin_listen} takes the port daemon.listen ({daemon.listen}) listens on; "
            "give the admin API a port of its own (by default 127.0.0.1:8788)",
        )
    if _one_token(daemon.admin_token, daemon.metrics_token):
        # Prometheus's scrape config holds the metrics token; with the admin token there,
        # whoever reads that config could erase and resync, and the admin token opened
        # /metrics, which it must not.
        raise ConfigError(
            file,
            "daemon.metrics_token",
            "is the admin token (daemon.admin_token); /metrics takes a token of its own, as "
            "a scraper may read the metrics but never use the admin API: give it another",
        )
    if daemon.public_url is not None:
        problem = check_url(
            daemon.public_url, allow_insecure_loopback=development.allow_insecure_loopback
        )
        if problem:
            raise ConfigError(file, "daemon.public_url", f"URL {problem}")
    for key, path in (("daemon.tls_cert", daemon.tls_cert), ("daemon.tls_key", daemon.tls_key)):
        if path is not None:
            tls_file = _resolve_path(base, path)
            _readable_file(
                tls_file, file, key, "file", "TLS certificate or key", MAX_TLS_FILE_BYTES
            )
    if not has_tls:
        return daemon
    assert daemon.tls_cert is not None and daemon.tls_key is not None
    cert, key_file = _resolve_path(base, daemon.tls_cert), _resolve_path(base, daemon.tls_key)
    # Loaded now: a pair the listeners cannot serve failed only inside them, after "daemon
    # started", leaving no webhooks, no health endpoint and no admin API.
    problem = server_pair_problem(cert, key_file)
    if problem:
        raise ConfigError(file, "daemon.tls_cert", problem)
    return daemon.model_copy(update={"tls_cert": cert, "tls_key": key_file})


def _one_token(admin: SecretStr | None, metrics: SecretStr | None) -> bool:
    """Whether the admin and metrics tokens are one secret. Told only once both are resolved:
    a command that serves neither leaves them unread (:class:`DeferredSecret`), and the
    daemon and ``check`` read them at load."""
    if admin is None or metrics is None:
        return False
    if isinstance(admin, DeferredSecret) or isinstance(metrics, DeferredSecret):
        return False
    return admin.get_secret_value() == metrics.get_secret_value()


#: The most bytes a file the config names is read for, by kind: far above any real one (a
#: mapping is a few KiB; the whole public CA list about 200 KiB; a certificate chain and its
#: key a few KiB), far below what would strain the memory of a small server.
MAX_MAPPING_BYTES = 1 << 20
MAX_CA_BUNDLE_BYTES = 8 << 20
MAX_TLS_FILE_BYTES = 1 << 20


def _readable_file(path: Path, file: str, key: str, what: str, noun: str, limit: int) -> None:
    """ConfigError naming ``key`` unless ``path`` is a regular file of at most ``limit``
    bytes (:func:`connector.smallfile.unfit`): a pipe, a device or a huge file named there
    held the config load for good, or was read whole into memory, by whatever reads it
    (OpenSSL, the TOML parser)."""
    if path.is_dir() or not path.exists():
        raise ConfigError(file, key, f"{what} {_missing_file(path)}")
    try:
        problem = unfit(path, noun, limit)
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror})"
    if problem is not None:
        raise ConfigError(file, key, f"{what} {path} {problem}")


def _missing_file(path: Path) -> str:
    """What is wrong with ``path``, which is no file: missing, or a folder."""
    if path.is_dir():
        return f"{path} is a folder; give the file itself"
    return f"{path} not found"


def _check_flow(
    flow: FlowSettings,
    index: int,
    file: str,
    systems: Mapping[str, SystemSettings],
    registry: Mapping[str, AdapterSpec],
) -> None:
    key = f"flows[{index}]"
    if flow.source not in systems:
        raise ConfigError(file, f"{key}.source", f"no system named {flow.source!r}")
    for dest in flow.destinations:
        if dest not in systems:
            raise ConfigError(file, f"{key}.destinations", f"no system named {dest!r}")
        if dest == flow.source:
            raise ConfigError(file, f"{key}.destinations", "a flow cannot write to its source")
    if len(set(flow.destinations)) != len(flow.destinations):
        raise ConfigError(file, f"{key}.destinations", "a destination is listed twice")
    source_kind = systems[flow.source].adapter
    if "pull" not in _capabilities(registry, source_kind):
        raise ConfigError(
            file, f"{key}.source", f"a {source_kind} system cannot be a source (it cannot pull)"
        )
    for dest in flow.destinations:
        kind = systems[dest].adapter
        if "upsert" not in _capabilities(registry, kind):
            raise ConfigError(
                file,
                f"{key}.destinations",
                f"{dest!r} ({kind}) cannot be a destination (it cannot write records)",
            )


def _check_source_reads_email(
    flow: FlowSettings, index: int, file: str, mappings: Mapping[str, SystemMapping]
) -> None:
    """Refuse a flow whose source's mapping does not read the e-mail.

    People are known by their e-mail: a source read without it yields nobody but records
    "without a usable e-mail", every run: the flow moves no one, as little as one from a
    system that cannot pull. (A destination-only mapping may well write the e-mail alone.)
    """
    mapping = mappings[flow.source]
    if not mapping.fields["email"].inbound:
        raise ConfigError(
            file,
            f"flows[{index}].source",
            f"{flow.source}'s mapping ({mapping.path}) does not read the e-mail "
            '(fields.email has direction = "out"), and the people a source holds are known '
            'by it; make it "both" or "in"',
        )


def _capabilities(registry: Mapping[str, AdapterSpec], kind: str) -> frozenset[str]:
    """What a kind of system can do, read from its adapter class without building one."""
    found = getattr(registry[kind].factory, "capabilities", None)
    return frozenset(found) if found is not None else frozenset({"pull", "upsert"})


def adapter_capabilities(kind: str) -> frozenset[str]:
    """What a kind of system can do (``pull``, ``upsert``, ``update``, ...), by its adapter."""
    from adapters.registry import REGISTRY

    return _capabilities(REGISTRY, kind)


def adapter_copy_categories(kind: str) -> frozenset[str]:
    """The categories of personal data (keys of :data:`connector.model.CATEGORIES`) a kind of
    system's access copy holds beyond the fields its mapping names (orders, notes, activity),
    by its adapter's ``copy_categories``: the report states what the copy shows."""
    from adapters.registry import REGISTRY

    return frozenset(getattr(REGISTRY[kind].factory, "copy_categories", ()))
