"""Compare the engine of two checkouts, run at the same time so the machine's drift falls on
both alike.

    python -m benchmarks.ab_engine BEFORE AFTER [--pairs 2] [--customers 100000]

``BEFORE`` and ``AFTER`` are folders holding a checkout each (``git worktree add``). Each
pair runs ``bench_sync engine --one-cpu`` for both at once, one on CPU 0 and one on CPU 1
(each with its own sandbox on its CPU), then again with the CPUs swapped: the two CPUs of
a machine differ by a few percent, which the swap cancels. The figure compared is the
connector's CPU for the same customers, summed over the two runs of a pair, for the first
sync and for the unchanged re-sync after it (HISTORY.md,
"Pages taken together": the ratio to the sandbox's CPU moves when a change alters how the
connector calls the sandbox). Needs two CPUs. Exit status 0; the figures are for reading.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _start(tree: Path, cpu: int, customers: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "benchmarks.bench_sync", "engine"]
    command += ["--one-cpu", str(cpu), "--customers", str(customers), "--json"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(  # noqa: S603 - our own module, fixed args
        command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def _figures(run: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = run.communicate()
    if run.returncode not in (0, 1):  # 1: a figure missed its target, still a run
        raise SystemExit(f"a run failed (exit {run.returncode})")
    return {f["name"]: float(f["value"]) for f in json.loads(out)}


#: The figures compared: a first sync's connector CPU, and an unchanged re-sync's after it.
COMPARED = ("connector CPU", "unchanged re-sync: connector CPU")


def _both(first: Path, second: Path, customers: int) -> tuple[list[float], list[float]]:
    """The :data:`COMPARED` figures of ``first`` on CPU 0 and ``second`` on CPU 1, run at
    once."""
    runs = [_start(first, 0, customers), _start(second, 1, customers)]
    one, two = (_figures(run) for run in runs)
    return [one[name] for name in COMPARED], [two[name] for name in COMPARED]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("needs two CPUs")
    for tree in (args.before, args.after):
        if not (tree / "benchmarks" / "bench_sync.py").is_file():
            parser.error(f"{tree}: no checkout of klantsync there")
    print(f"{'pair':>4}  {'sync':<9}  {'before s':>9}  {'after s':>9}  {'after / before':>14}")
    for pair in range(1, args.pairs + 1):
        before0, after1 = _both(args.before, args.after, args.customers)
        after0, before1 = _both(args.after, args.before, args.customers)
        for n, label in enumerate(("first", "unchanged")):
            before, after = before0[n] + before1[n], after0[n] + after1[n]
            print(f"{pair:>4}  {label:<9}  {before:>9.2f}  {after:>9.2f}  {after / before:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
