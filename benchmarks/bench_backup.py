"""Backup and restore of a large store: how long each takes, and the restore's carry-over.

Usage::

    python -m benchmarks.bench_backup                 # 200,000 customers in three systems
    python -m benchmarks.bench_backup --customers 20000

Fills a store the way syncs leave one (a number, an identity and a delivered hash per customer
and system, through the store's own tables), takes a backup, then lets the store move on: a
tenth more customers sent since, a hundred erasures. It restores the backup over it, so the
carry-over compares the two stores in full. Prints the figures; no target is named for them,
so the exit status is 0 unless the restore lost something it must keep.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from connector.backup import take_backup
from connector.config import Config, load_config
from connector.crypto import generate_master_key
from connector.keyset import open_keyring
from connector.restore import restore_backup
from connector.state import Store, utcnow

__all__ = ["main"]

SYSTEMS = ("shop", "crm", "news")


def _config(directory: Path) -> Config:
    (directory / "master.key").write_text(generate_master_key())
    (directory / "token").write_text("pat-bench\n")
    path = directory / "klantsync.toml"
    path.write_text(
        """
[store]
path = "klantsync.db"

[keys]
source = "file:master.key"

[systems.crm]
adapter = "hubspot"
base_url = "https://crm.invalid"
mapping = "%s"
credentials = { token = "file:token" }
"""
        % (Path(__file__).resolve().parent.parent / "mappings" / "hubspot.toml")
    )
    return load_config(path)


def _subject(n: int) -> str:
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=16).hexdigest()


def _fill(store: Store, first: int, count: int) -> None:
    """``count`` customers from number ``first``, each sent to every system."""
    now = utcnow()
    with store.transaction() as db:
        for start in range(first, first + count, 10_000):
            ids = [_subject(n) for n in range(start, min(start + 10_000, first + count))]
            numbers = store.subject_numbers(ids, create=True)
            for system in SYSTEMS:
                db.executemany(
                    "INSERT INTO identities(system, subject_no, external_id) VALUES (?,?,?)",
                    [(system, numbers[sid], f"{system}-{sid[:12]}") for sid in ids],
                )
                db.executemany(
                    "INSERT INTO delivered(system, subject_no, payload_hash, delivered_at) "
                    "VALUES (?,?,?,?)",
                    [(system, numbers[sid], sid, now) for sid in ids],
                )


def main(customers: int = 200_000, *, directory: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="klantsync-bench-backup-") as scratch:
        workdir = directory or Path(scratch)
        config = _config(workdir)
        store = Store(config.store_path)
        try:
            open_keyring(store, config)
            _fill(store, 0, customers)
        finally:
            store.close()
        out = workdir / "backup.db"
        started = time.perf_counter()
        backup = take_backup(config, out)
        backup_s = time.perf_counter() - started
        # The world moves on: a tenth more customers sent since, a hundred of the first ones
        # erased.
        since = max(1, customers // 10)
        erased = [_subject(n) for n in range(min(100, customers))]
        store = Store(config.store_path)
        try:
            _fill(store, customers, since)
            with store.transaction():
                store.suppress(erased, "erasure", None)
        finally:
            store.close()
        started = time.perf_counter()
        facts = restore_backup(config, out)
        restore_s = time.perf_counter() - started
        store = Store(config.store_path)
        try:
            (known,) = store.db.execute("SELECT COUNT(*) FROM subjects").fetchone()
            kept_out = len(store.suppressed(erased))
        finally:
            store.close()
    return {
        "customers": float(customers),
        "store_mb": backup.bytes / 1e6,
        "backup_seconds": backup_s,
        "restore_seconds": restore_s,
        "people_carried": float(facts.carried["people"]),
        "erasures_carried": float(facts.carried["suppression"]),
        "customers_known_after": float(known),
        "erased_kept_out": float(kept_out),
        "expected_known_after": float(customers + since - len(erased)),
    }


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args(argv)
    figures = main(args.customers)
    print(f"customers                 {figures['customers']:>12,.0f}")
    print(f"store (backup file)       {figures['store_mb']:>12,.1f} MB")
    print(f"backup                    {figures['backup_seconds']:>12,.2f} s")
    print(f"restore with carry-over   {figures['restore_seconds']:>12,.2f} s")
    print(f"people sent since, kept   {figures['people_carried']:>12,.0f}")
    print(f"erasures since, kept      {figures['erasures_carried']:>12,.0f}")
    print(f"customers known after     {figures['customers_known_after']:>12,.0f}")
    whole = (
        figures["erased_kept_out"] == figures["erasures_carried"]
        and figures["customers_known_after"] == figures["expected_known_after"]
    )
    print("nothing lost" if whole else "LOST: the restore did not keep what it must")
    return 0 if whole else 1


if __name__ == "__main__":
    raise SystemExit(run())
