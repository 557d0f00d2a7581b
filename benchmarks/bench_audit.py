"""Audit chain benchmark (issue 5): verify a million entries in seconds, not minutes.

Usage::

    python -m benchmarks.bench_audit              # 1,000,000 entries
    python -m benchmarks.bench_audit --entries 50000

Fills a fresh store with entries shaped like the engine's ``sync.batch`` entries (through
:func:`connector.audit.append_many`, one ``executemany`` per 50,000 so the chain is built the
way the connector builds it), then times :func:`connector.audit.verify` over all of them. Prints
the figures; the exit status is 1 if verification fails or exceeds the target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from connector import audit
from connector.state import Store

__all__ = ["TARGET_SECONDS_PER_MILLION", "main"]

#: "Seconds, not minutes": the verify target for one million entries, scaled linearly.
TARGET_SECONDS_PER_MILLION = 30.0
_CHUNK = 50_000


def _entries(n: int) -> Iterator[tuple[str, Mapping[str, Any], str | None]]:
    for i in range(n):
        yield (
            audit.SYNC_BATCH,
            {
                "flow": "shop-to-crm",
                "system": "crm",
                "created": i % 100,
                "updated": 100 - i % 100,
                "failed": 0,
                "fields": ["city", "company", "country", "email", "first_name", "last_name"],
            },
            None,
        )


def main(n: int = 1_000_000, directory: Path | None = None) -> dict[str, float]:
    """Insert ``n`` entries, verify them, print and return the figures (seconds, rates)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store((directory or Path(tmp)) / "bench-audit.db")
        try:
            started = time.perf_counter()
            source = _entries(n)
            remaining = n
            while remaining:
                take = min(_CHUNK, remaining)
                audit.append_many(store, (next(source) for _ in range(take)))
                remaining -= take
            insert_s = time.perf_counter() - started
            started = time.perf_counter()
            result = audit.verify(store)
            verify_s = time.perf_counter() - started
        finally:
            store.close()
    target = TARGET_SECONDS_PER_MILLION * max(n, 1) / 1_000_000
    whole = result.ok and result.checked == n
    ok = whole and verify_s <= target
    print(f"audit entries:   {n:,}")
    print(f"insert:          {insert_s:8.2f} s  ({n / max(insert_s, 1e-9):,.0f} entries/s)")
    print(
        f"verify:          {verify_s:8.2f} s  ({n / max(verify_s, 1e-9):,.0f} entries/s)"
        f"  target <= {target:.2f} s  {'PASS' if ok else 'FAIL'}"
    )
    if not result.ok:
        print(f"chain broken at entry {result.first_bad}: {result.problem}")
    return {
        "entries": float(n),
        "insert_seconds": insert_s,
        "verify_seconds": verify_s,
        "verified": float(result.checked),
        # Apart from the time target: what a run too small to time well still shows.
        "chain_ok": float(whole),
        "ok": float(ok),
    }


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    return 0 if main(args.entries)["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(_cli())
