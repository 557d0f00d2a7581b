"""The WAL is copied back off the event loop, and start-up objects are frozen once."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector import runtime
from connector.state import AUTOCHECKPOINT_PAGES, BACKGROUND_BOUND_PAGES, QueuedPayload, Store


def _fill(store: Store, pages: int) -> None:
    for n in range(pages):
        payloads = [
            QueuedPayload("crm", f"{n:04d}{i:060x}", os.urandom(300), f"h{i}") for i in range(50)
        ]
        store.enqueue_page("f", "shop", payloads, [], f"c{n}")


def test_commits_leave_the_copying_to_the_background_checkpointer(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTOCHECKPOINT_PAGES
    checkpointer = store.checkpoint_in_background()
    assert store.checkpoint_in_background() is checkpointer  # one per store
    # Commits alone no longer copy the log back: only a far bound remains.
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKGROUND_BOUND_PAGES
    _fill(store, 20)
    frames, copied = checkpointer.checkpoint()
    assert frames > 0 and copied == frames  # nothing held back: all of it is in the database
    store.close()
    assert not checkpointer._thread.is_alive()
    # What was committed is all there after reopening.
    again = Store(tmp_path / "s.db")
    assert again.outbox_count("crm") == 20 * 50
    again.close()


def test_the_thread_checkpoints_on_its_own(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    checkpointer = store.checkpoint_in_background()
    _fill(store, 5)
    checkpointer.ran.clear()
    assert checkpointer.ran.wait(timeout=30)  # returns as soon as the thread has run one
    store.close()
    assert checkpointer.runs >= 1
    assert not (tmp_path / "s.db-wal").exists()  # closing the last connection folded it in


async def test_a_runtime_checkpoints_in_the_background_until_it_closes(
    open_rt: Callable[..., Any], shop: WooCommerceSandbox, crm: HubSpotSandbox
) -> None:
    shop.seed_synthetic(250)
    async with open_rt() as rt:
        checkpointer = rt.store.checkpoint_in_background()
        assert checkpointer._thread.is_alive()
        (report,) = await rt.engine.sync()
        checkpointer.checkpoint()
    assert not checkpointer._thread.is_alive()
    assert report.destinations["crm"].created == 250 == crm.contact_count()


def test_a_truncation_a_reader_holds_back_is_done_by_the_background_checkpointer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncation of the log (after an upgrade, ids cloaked) needs every reader of the
    store on the latest rows: one elsewhere holds it back. The log says so, and the
    checkpointer's next look once the reader is done truncates it."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.db.execute("INSERT INTO identities VALUES ('news', 1, 'in-the-clear')")
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM identities").fetchone()  # a snapshot held
    store.db.execute("UPDATE identities SET external_id='cloaked' WHERE subject_no=1")
    caplog.set_level(logging.INFO)

    assert not store.truncate_log()
    assert "truncated at the next chance" in caplog.text
    wal = path.with_name(path.name + "-wal")
    assert b"in-the-clear" in wal.read_bytes()
    checkpointer = store.checkpoint_in_background()
    reader.rollback()
    reader.close()
    for _ in range(100):  # each look tries again; a look set before the reader ended may fail
        if not checkpointer.truncate_pending:
            break
        checkpointer.ran.clear()
        assert checkpointer.ran.wait(timeout=30)
    assert not checkpointer.truncate_pending
    assert wal.stat().st_size == 0
    assert "write-ahead log is truncated" in caplog.text
    store.close()  # with nothing left to say at close
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1


def test_a_truncation_is_never_held_back_by_this_process_s_own_checkpointer(
    tmp_path: Path,
) -> None:
    """An erasure truncates the log at once (its payloads must not stay readable there). A
    passive checkpoint the store's own background thread was running at that moment made
    the truncation busy, and the log kept the erased rows until the thread's next look."""
    store = Store(tmp_path / "s.db")
    checkpointer = store.checkpoint_in_background()
    checkpointer.interval = 0  # looks one after another, as under a writer it falls behind
    try:
        for n in range(200):
            store.db.execute("INSERT INTO identities VALUES ('news', ?, 'x')", (n,))
            assert store.truncate_log(), f"attempt {n} was held back"
    finally:
        store.close()


def test_settle_heap_freezes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runtime, "_settled", False)
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(f"threshold {t[0]}"))
    runtime.settle_heap()
    runtime.settle_heap()
    assert calls == ["collect", "freeze", f"threshold {runtime.YOUNG_COLLECTION}"]
