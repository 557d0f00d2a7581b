"""The sync's write transactions run on the store writer's thread (connector/storewriter.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import audit
from connector.errors import StoreError
from connector.state import QueuedPayload, Store
from connector.storewriter import StoreWriter


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "s.db")
    yield opened
    opened.close()


@pytest.fixture
def writer(store: Store) -> Iterator[StoreWriter]:
    """A writer on ``store``'s file; tests close it themselves to see everything committed."""
    opened = StoreWriter(store.path)
    yield opened
    opened.close()  # idempotent


async def test_work_runs_on_the_writer_thread_in_order_and_its_result_comes_back(
    store: Store, writer: StoreWriter
) -> None:
    seen: list[tuple[int, str]] = []

    def queue(n: int) -> Callable[[Store], list[int]]:
        def work(own: Store) -> list[int]:
            assert own is not store  # a connection of its own
            seen.append((n, threading.current_thread().name))
            payload = QueuedPayload("crm", f"subject-{n}", b"sealed", f"hash-{n}")
            return own.enqueue_page("f", "shop", [payload], [], f"cursor-{n}")

        return work

    ids = [await writer.run(queue(n)) for n in range(3)]
    writer.close()
    assert [n for n, _ in seen] == [0, 1, 2]
    assert all(name.startswith("klantsync-writer") for _, name in seen)
    assert threading.current_thread().name not in {name for _, name in seen}
    # Committed: the caller's own connection sees every row and the last cursor.
    assert [r.id for r in store.outbox_batch("crm", 0, 10)] == [i for (i,) in ids]
    assert store.get_cursor("f", "shop") == "cursor-2"


async def test_an_exception_in_the_work_is_raised_to_the_caller_and_rolls_back(
    store: Store, writer: StoreWriter
) -> None:
    def fails(own: Store) -> None:
        with own.transaction():
            own.set_cursor("f", "shop", "never")
            raise ValueError("disk said no")

    with pytest.raises(ValueError, match="disk said no"):
        await writer.run(fails)
    # The writer goes on after a failed unit.
    await writer.run(lambda own: own.set_cursor("f", "shop", "after"))
    writer.close()
    assert store.get_cursor("f", "shop") == "after"
    with pytest.raises(RuntimeError, match="closed"):
        await writer.run(lambda own: None)


async def test_writes_from_both_connections_land_and_the_audit_chain_holds(
    store: Store, writer: StoreWriter
) -> None:
    """The loop's connection and the writer's take turns at SQLite's lock; one chain results."""
    for n in range(20):
        audit.append(store, "loop.side", {"n": n})
        await writer.run(lambda own, n=n: audit.append(own, "writer.side", {"n": n}))
    writer.close()
    assert audit.verify(store).ok
    kinds = [e.kind for e in audit.entries(store)]
    assert kinds.count("loop.side") == 20 == kinds.count("writer.side")


async def test_a_sync_queues_and_acknowledges_on_the_writer_thread(
    open_rt: Callable[..., Any],
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page commit and each batch's acknowledgement leave the event loop's thread."""
    threads: dict[str, set[str]] = {"enqueue_page": set(), "acknowledge": set()}
    for name in threads:
        original = getattr(Store, name)

        def spy(
            self: Store, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any
        ) -> Any:
            threads[_name].add(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Store, name, spy)
    shop.seed_synthetic(250)
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        assert rt.store.outbox_count() == 0
        writer_thread = rt.engine._writer
    assert writer_thread is not None and writer_thread._closed  # closed with the runtime
    assert report.destinations["crm"].created == 250 == crm.contact_count()
    loop_thread = threading.current_thread().name
    for name, seen in threads.items():
        assert seen and all(t.startswith("klantsync-writer") for t in seen), (name, seen)
        assert loop_thread not in seen


def test_a_store_the_writer_cannot_open_fails_at_once_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not a database, just some bytes " * 100)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(StoreError, match="not a klantsync store: the file is not an SQLite"):
        StoreWriter(tmp_path / "not-a-db")
    after = {t.name for t in threading.enumerate()}
    assert not {name for name in after - before if name.startswith("klantsync-writer")}
