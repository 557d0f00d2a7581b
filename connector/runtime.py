"""Opening what a command needs: config, store, keys, systems, engine, in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.config import Config, load_config
from connector.crypto import Keyring
from connector.engine import Checkpoint, Engine
from connector.state import Store
from connector.systems import Systems, open_systems

__all__ = ["Runtime", "open_runtime"]


@dataclass
class Runtime:
    """Everything a command works with; built by :func:`open_runtime`."""

    config: Config
    store: Store
    keyring: Keyring
    systems: Systems
    engine: Engine


@asynccontextmanager
async def open_runtime(
    config: Config | Path,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Callable[[], float] | None = None,
    checkpoint: Checkpoint | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Runtime]:
    """Load (if given a path) the config, open the store and systems; close them after."""
    if isinstance(config, Path):
        config = load_config(config, env=env)
    store = Store(config.store_path)
    keyring = Keyring(config.master_key)
    systems = open_systems(config, transports=transports, sleep=sleep, clock=clock)
    engine = Engine(config, store, keyring, systems, checkpoint=checkpoint)
    try:
        yield Runtime(config, store, keyring, systems, engine)
    finally:
        await systems.aclose()
        store.close()
