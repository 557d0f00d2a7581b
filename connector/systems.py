"""Builds each configured system's client and adapter from the config and the registry.

The only place where settings, the registry entry, :class:`~connector.http.SystemClient` and
the adapter meet. Tests and the demo pass ``transports`` to route a system to an in-process
sandbox instead of the network.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from connector.adapter import Adapter, AdapterSpec, ClientConfig, Limits
from connector.config import Config
from connector.errors import ConfigError
from connector.http import RetryPolicy, SystemClient, ca_bundle_problem
from connector.mapping import SystemMapping
from connector.ratelimit import RateLimit
from connector.settings import SystemSettings

__all__ = ["System", "Systems", "open_systems"]


@dataclass
class System:
    """One configured system, ready to use."""

    name: str
    settings: SystemSettings
    spec: AdapterSpec
    adapter: Adapter
    client: SystemClient
    mapping: SystemMapping
    limits: Limits


class Systems(dict[str, System]):
    """Every configured system by name; close with ``await systems.aclose()``."""

    async def aclose(self) -> None:
        for system in self.values():
            with contextlib.suppress(Exception):
                await system.client.aclose()


class _NoCalls(httpx.AsyncBaseTransport):
    """The transport of a system opened for a command that calls none (``dsr list``,
    ``dsr exempt``...): it is given none of the system's credentials, which the operator
    running such a command is not given either, and refuses a call, should one be made."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"{self.name}: opened for a command that calls no system")


def _limits(spec: AdapterSpec, settings: SystemSettings) -> Limits:
    limits = spec.limits(settings)
    rate = dict(limits.rate)
    if settings.rate_limit is not None:
        rate["default"] = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    concurrency = settings.max_concurrency or limits.max_concurrency
    return Limits(
        batch_size=limits.batch_size,
        page_size=limits.page_size,
        rate=rate,
        max_concurrency=concurrency,
    )


def open_systems(
    config: Config,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Callable[[], float] | None = None,
    registry: Mapping[str, AdapterSpec] | None = None,
    calls: bool = True,
) -> Systems:
    """Build every system of ``config``.

    Args:
        transports: per system name, a transport replacing the network (tests).
        sleep: replaces ``asyncio.sleep`` in retries and pacing (tests pass a no-op).
        clock: replaces ``time.monotonic`` in pacing (tests pass one their sleep advances).
        calls: False for a command that calls no system, only reads their settings and
            mappings: its systems hold no credentials (a config loaded without its secrets
            keeps them unresolved) and refuse every call.
    """
    if registry is None:
        from adapters.registry import REGISTRY

        registry = REGISTRY
    systems = Systems()
    for name, settings in config.systems.items():
        spec = registry[settings.adapter]
        limits = _limits(spec, settings)
        # The adapter's client config holds the credentials: resolved only to make calls.
        client_config = spec.client_config(settings) if calls else ClientConfig()
        transport = (transports or {}).get(name) if calls else _NoCalls(name)
        retry = RetryPolicy(
            attempts=config.sync.retry_attempts,
            base_seconds=config.sync.retry_base_seconds,
            max_seconds=config.sync.retry_max_seconds,
        )
        if sleep is not None:
            retry.sleep = sleep
        try:
            client = SystemClient(
                name,
                settings.base_url,
                auth=client_config.auth,
                headers=client_config.headers,
                ca_bundle=settings.ca_bundle,
                limits=limits.rate,
                wait_hint=client_config.wait_hint,
                rate_limited=client_config.rate_limited,
                budget_spent=client_config.budget_spent,
                error_titles=client_config.error_titles,
                retry=retry,
                timeout=settings.timeout_seconds,
                deadline=settings.deadline_seconds,
                transport=transport,
                max_connections=max(limits.max_concurrency, 1) + 2,
                clock=clock,
            )
        except (ssl.SSLError, OSError) as exc:
            if settings.ca_bundle is None:
                raise
            # Config loading checked the bundle, but a daemon runs for months and the file
            # can be replaced under it: the same error as at load, not an ssl traceback.
            raise ConfigError(
                str(config.path),
                f"systems.{name}.ca_bundle",
                ca_bundle_problem(settings.ca_bundle, exc) or "CA bundle cannot be loaded",
            ) from None
        adapter = spec.factory(client, settings)
        # Minimisation at the source: what no mapping reads is not asked for at all.
        ask_only_for_paths = getattr(adapter, "ask_only_for_paths", None)
        ask_only_for = getattr(adapter, "ask_only_for", None)
        if ask_only_for_paths is not None:
            ask_only_for_paths(config.mappings[name].source_paths())
        elif ask_only_for is not None:
            ask_only_for(config.mappings[name].source_fields())
        systems[name] = System(
            name=name,
            settings=settings,
            spec=spec,
            adapter=adapter,
            client=client,
            mapping=config.mappings[name],
            limits=limits,
        )
    return systems
