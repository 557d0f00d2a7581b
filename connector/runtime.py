"""Opening what a command needs: config, store, keys, systems, engine, in one place."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.config import Config, load_config
from connector.crypto import Keyring
from connector.engine import Checkpoint, Engine
from connector.keyset import open_keyring
from connector.lock import sharing_keys
from connector.state import Store
from connector.systems import Systems, open_systems

__all__ = ["Runtime", "open_runtime", "settle_heap"]

_settled = False


def settle_heap() -> None:
    """Take what start-up built out of the garbage collector's way (``gc.freeze``), once.

    A full collection walks every long-lived object, and start-up leaves a few hundred
    thousand that live as long as the process (modules, phone-number metadata, config,
    mappings). During a sync a full collection ran every few seconds and held the event loop
    20-70 ms each time, with every vendor call and webhook waiting; frozen, those objects are
    skipped and a full collection takes a fraction of that. For the long-running commands
    (``sync``, ``daemon``), called once their runtime is open.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


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
    # Shared with every other command; a master key rotation waits for all to finish.
    with sharing_keys(config.store_path):
        async with _opened(config, transports, sleep, clock, checkpoint) as runtime:
            yield runtime


@asynccontextmanager
async def _opened(
    config: Config,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None,
    sleep: Callable[[float], Awaitable[None]] | None,
    clock: Callable[[], float] | None,
    checkpoint: Checkpoint | None,
) -> AsyncIterator[Runtime]:
    store = Store(config.store_path)
    try:
        # A command that syncs commits often; its WAL is copied back off the event loop.
        store.checkpoint_in_background()
        keyring = open_keyring(store, config)
        systems = open_systems(config, transports=transports, sleep=sleep, clock=clock)
    except BaseException:
        store.close()
        raise
    engine = Engine(config, store, keyring, systems, checkpoint=checkpoint)
    engine.ids.cloak_stored(store)  # ids an older store kept as the system gave them
    try:
        yield Runtime(config, store, keyring, systems, engine)
    finally:
        try:
            await systems.aclose()
        finally:
            store.close()
