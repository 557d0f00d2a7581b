"""Cursors and run history: where each flow's pull resumes, and what each run did.

A cursor may carry a mark (:data:`REREAD`) in place of its shape: its flow's next run reads
its source in full. A restore marks every cursor (:data:`RESTORED`).

Also the reads ``status`` shows (latest runs, table counts), on any connection to the store.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Mapping

from connector.store_base import StoreBase, utcnow

__all__ = ["REREAD", "RESTORED", "RunStore", "latest_runs", "latest_success", "table_counts"]

#: Marks a cursor's shape (migration 17) when another flow's write took the place of a row its
#: flow had queued and not yet delivered: the outbox keeps one row per person and system, so
#: that flow's change never reached the system, and its cursor had passed it (an incremental
#: source, Shopify, never offered it again). No shape is the mark, so the cursor is not used
#: and the next run reads the source in full; change detection then queues again what the
#: system lacks. The mark is ``reread:<token>``, a random token of each write that took a
#: row (not its outbox id: an emptied outbox hands out its ids again once the store is
#: opened anew): a run clears only the mark it started under, never one set while it read
#: (:meth:`RunStore.reread_done`).
REREAD = "reread:"

#: The :data:`REREAD` mark a restore sets on every cursor of the store it puts back
#: (connector/restore.py), ``reread:restored:<token>``: the restore empties the outbox, and
#: the backup's cursor of an incremental source is past the records whose payloads it held.
#: Its own prefix only tells ``status`` why the flow reads in full; it is a mark as any other.
RESTORED = f"{REREAD}restored:"


class RunStore(StoreBase):
    """Each flow's cursors and its runs."""

    # -- cursors -----------------------------------------------------------------------------

    def get_cursor(self, flow: str, system: str, shape: str | None = None) -> str | None:
        """The flow's cursor on ``system``; ``None`` when there is none, or when it was set
        under another ``shape`` than the one given (see migration 17)."""
        row = self.db.execute(
            "SELECT cursor, shape FROM cursors WHERE flow=? AND system=?", (flow, system)
        ).fetchone()
        if row is None:
            return None
        if shape is not None and row[1] is not None and row[1] != shape:
            return None
        return None if row[0] is None else str(row[0])

    def set_cursor(
        self, flow: str, system: str, cursor: str | None, shape: str | None = None
    ) -> None:
        """Set the flow's cursor on ``system``, under ``shape`` (kept when ``None``).

        A :data:`REREAD` mark stays: a page of the run under way may have passed the person
        whose write was taken (connector/engine.py clears it once a full read ends).
        """
        self.db.execute(
            "INSERT INTO cursors(flow, system, cursor, updated_at, shape) "
            "VALUES (?1,?2,?3,?4,?5) "
            "ON CONFLICT(flow, system) DO UPDATE SET cursor=excluded.cursor, "
            "updated_at=excluded.updated_at, shape=CASE WHEN cursors.shape LIKE ?6 "
            "THEN cursors.shape ELSE COALESCE(excluded.shape, cursors.shape) END",
            (flow, system, cursor, utcnow(), shape, f"{REREAD}%"),
        )

    def reread_mark(self, flow: str, system: str) -> str | None:
        """The flow's :data:`REREAD` mark on ``system``; ``None`` when it has none."""
        row = self.db.execute(
            "SELECT shape FROM cursors WHERE flow=? AND system=?", (flow, system)
        ).fetchone()
        if row is None or row[0] is None or not str(row[0]).startswith(REREAD):
            return None
        return str(row[0])

    def mark_reread(
        self,
        flows: Iterable[str],
        sources: Mapping[str, str] | None = None,
        *,
        kind: str = REREAD,
    ) -> None:
        """Mark every cursor of ``flows`` with a new mark of ``kind`` (:data:`REREAD`, or
        :data:`RESTORED`): each reads its source in full at its next run.

        A flow of ``sources`` (flow -> its source, the config's) with no cursor yet is given
        one that holds the mark alone: it reads in full at its next run anyway, but a first
        pull under way may be past the write taken (a page that found it queued already,
        and commits the flow's first cursor after), and its next run then resumed from there.
        """
        flows = list(flows)
        sources = sources or {}
        mark = f"{kind}{uuid.uuid4().hex}"
        self.db.executemany(
            "UPDATE cursors SET shape=? WHERE flow=?", [(mark, flow) for flow in flows]
        )
        self.db.executemany(
            "INSERT INTO cursors(flow, system, cursor, updated_at, shape) "
            "SELECT ?1, ?2, NULL, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM cursors WHERE flow=?1)",
            [(flow, sources[flow], utcnow(), mark) for flow in flows if flow in sources],
        )

    def mark_every_cursor(self, kind: str = REREAD) -> list[str]:
        """Mark every cursor in the store (:meth:`mark_reread`), those of flows the config
        no longer names too; return the flows marked, sorted."""
        flows = sorted(str(f) for (f,) in self.db.execute("SELECT DISTINCT flow FROM cursors"))
        self.mark_reread(flows, kind=kind)
        return flows

    def reread_done(self, flow: str, system: str, mark: str, shape: str) -> None:
        """A full read that started under ``mark`` queued what it covers: the cursor is the
        flow's, under ``shape``, again. A mark set since (another write taken while it read,
        perhaps of someone it had read already) stays, for the next run."""
        self.db.execute(
            "UPDATE cursors SET shape=? WHERE flow=? AND system=? AND shape=?",
            (shape, flow, system, mark),
        )

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, flow: str) -> int:
        cur = self.db.execute(
            "INSERT INTO runs(flow, started_at, status) VALUES (?,?,?)", (flow, utcnow(), "running")
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_run(self, run_id: int, status: str, summary: str) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at=?, status=?, summary=? WHERE id=?",
            (utcnow(), status, summary, run_id),
        )

    def close_interrupted_runs(self) -> int:
        """Mark every run still ``running`` as ``interrupted``; return how many there were.

        Only for a process that holds the store's sync lock (:func:`connector.lock.syncing`)
        and has started no run yet: then no run is in progress, and one the store still
        calls running was cut short (``kill -9``, a power cut). When it stopped is unknown,
        so ``finished_at`` stays empty.
        """
        cursor = self.db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        return cursor.rowcount

    def interrupt_run(self, run_id: int) -> None:
        """Record a finished run as ``interrupted``: the process's stop cut it short (its
        pull stopped before the end, deliveries left queued), and the next start resumes it
        as it does a run a ``kill -9`` left (:meth:`close_interrupted_runs`)."""
        self.db.execute("UPDATE runs SET status='interrupted' WHERE id=?", (run_id,))

    def interrupted_flows(self) -> set[str]:
        """The flows whose latest run is ``interrupted``: cut short, not yet run again."""
        return {flow for flow, run in self.last_runs().items() if run[2] == "interrupted"}

    def last_runs(self) -> dict[str, tuple[str, str | None, str, str | None]]:
        """Per flow: (started_at, finished_at, status, summary) of its latest run."""
        return latest_runs(self.db)

    def last_success(self, flow: str) -> str | None:
        return latest_success(self.db, flow)

    def counts(self) -> dict[str, int]:
        """Row counts of the main tables, for status output (:func:`table_counts`)."""
        return table_counts(self.db)


# The reads ``status`` shows, on any connection to the store: the store's own, or a reader's
# of its own (the admin API reads them on a thread, off the event loop: connector.admin_reads).


def latest_runs(db: sqlite3.Connection) -> dict[str, tuple[str, str | None, str, str | None]]:
    """Per flow: (started_at, finished_at, status, summary) of its latest run."""
    # Each flow's latest found by seeks on (flow, id), one flow to the next: GROUP BY
    # flow walked the whole index, every run of years of runs every 15 minutes.
    rows = db.execute(
        "WITH RECURSIVE f(flow) AS (SELECT MIN(flow) FROM runs "
        "UNION ALL SELECT (SELECT MIN(flow) FROM runs WHERE flow > f.flow) "
        "FROM f WHERE f.flow IS NOT NULL) "
        "SELECT r.flow, r.started_at, r.finished_at, r.status, r.summary FROM f "
        "JOIN runs r ON r.id = (SELECT MAX(id) FROM runs WHERE flow = f.flow)"
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def latest_success(db: sqlite3.Connection, flow: str) -> str | None:
    """When ``flow`` last finished a run without failure (``None``: never)."""
    row = db.execute(
        "SELECT MAX(finished_at) FROM runs WHERE flow=? AND status='ok'", (flow,)
    ).fetchone()
    return None if row is None else row[0]


def table_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the main tables, for status output.

    ``subjects`` is the people the store knows (one number each), ``identities`` their
    ids in the systems (one row per person and system). Each is exact. ``audit`` is
    counted from the seqs of the oldest and the newest entry kept (two seeks, not a
    walk of millions of entries): a chain's seqs run without a gap from its start to its
    head, which ``audit verify`` checks.
    """
    out: dict[str, int] = {}
    for table in (
        "subjects",
        "identities",
        "delivered",
        "outbox",
        "dead_letters",
        "suppression",
        "dsr_requests",
        "jobs",
    ):
        out[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
    # Two subqueries: MIN and MAX in one SELECT read every row.
    (entries,) = db.execute(
        "SELECT COALESCE((SELECT MAX(seq) FROM audit) - (SELECT MIN(seq) FROM audit) + 1, 0)"
    ).fetchone()
    out["audit"] = int(entries)
    return out
